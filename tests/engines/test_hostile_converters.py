"""The converters are hostile edges: every malformed llama.cpp state or LMCache body raises
AvpError with a stable code (never another exception, a hang or an allocation the input did not
pay for)."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc

import numpy as np
import pytest
from avp_engines import _ggml as G
from avp_engines import _llama_blob as B
from avp_engines import llama, lmcache
from avp_engines._lmcache_wire import encode_frame

import avp_codec as avp
from avp_codec import AvpError, ErrorCode

from ._synth import blob, state

MID = bytes(range(32))
MODEL = llama.LlamaModel(3, "llama")
E = ErrorCode


def _convert(data: bytes, **kw: object) -> None:
    llama.state_to_message(data, MID, MODEL, **kw)  # type: ignore[arg-type]


SMALL = [blob(G.F16, G.F16, n=2, head_dim=32, layers=2),
         blob(G.Q8_0, G.Q4_0, n=2, head_dim=32, layers=1),
         blob(G.F32, G.F16, v_trans=True, n=2, head_dim=32, layers=1),
         blob(G.F16, G.F16, n=2, head_dim=32, layers=1, form="file")]


@pytest.mark.parametrize("data", SMALL, ids=["f16", "q8q4", "vtrans", "file"])
def test_every_truncation_is_refused(data: bytes) -> None:
    for cut in range(len(data)):
        with pytest.raises(AvpError) as e:
            _convert(data[:cut])
        assert e.value.code in (E.TRUNCATED, E.BAD_MAGIC, E.INVALID_VALUE, E.KIND_CONSTRAINT,
                                E.SIZE_MISMATCH, E.UNKNOWN_DTYPE, E.UNSUPPORTED_CAPABILITY), cut


@pytest.mark.parametrize("data", SMALL, ids=["f16", "q8q4", "vtrans", "file"])
def test_random_mutations_never_crash(data: bytes) -> None:
    rng = np.random.default_rng(7)
    buf = np.frombuffer(data, np.uint8)
    for _ in range(400):
        m = buf.copy()
        for i in rng.integers(0, len(m), size=int(rng.integers(1, 4))):
            m[i] = rng.integers(0, 256)
        try:
            msg = llama.state_to_message(m.tobytes(), MID, MODEL)
            avp.encode(msg)  # what comes out is a valid message
        except AvpError:
            pass


def _head(n_stream: int = 1, cells: int = 1) -> bytes:
    return struct.pack("<IiII", B.IO_MAGIC, 0, n_stream, cells)


CELL = struct.pack("<iIi", 0, 1, 0)


@pytest.mark.parametrize("data,code", [
    (b"", E.TRUNCATED),
    (struct.pack("<Ii", B.IO_MAGIC, 0), E.TRUNCATED),
    (_head(0), E.INVALID_VALUE),
    (_head(5000), E.INVALID_VALUE),
    (struct.pack("<IiII", B.IO_MAGIC, 0, 1, 0), E.KIND_CONSTRAINT),  # no cells at all
    (_head(1, 0xFFFFFFFF), E.TRUNCATED),  # absurd cell count
    (_head() + struct.pack("<iIi", 0, 2, 0), E.UNSUPPORTED_CAPABILITY),  # shared cell
    (_head() + struct.pack("<iIi", -5, 1, 0), E.INVALID_VALUE),
    (_head() + CELL + struct.pack("<II", 2, 1), E.INVALID_VALUE),  # v_trans 2
    (_head() + CELL + struct.pack("<II", 0, 0), E.KIND_CONSTRAINT),  # no layers
    (_head() + CELL + struct.pack("<II", 0, 70000), E.LIMIT_LAYERS),
    (_head() + CELL + struct.pack("<II", 0, 60000), E.TRUNCATED),  # more layers than bytes
    (_head() + CELL + struct.pack("<II", 0, 1) + struct.pack("<iQ", 99, 2), E.UNKNOWN_DTYPE),
    (_head() + CELL + struct.pack("<II", 0, 1) + struct.pack("<iQ", 3, 20),
     E.UNSUPPORTED_CAPABILITY),  # q4_1
    (_head() + CELL + struct.pack("<II", 0, 1) + struct.pack("<iQ", 8, 35), E.SIZE_MISMATCH),
    (_head() + CELL + struct.pack("<II", 0, 1) + struct.pack("<iQ", 1, 2**63), E.TRUNCATED),
    (_head() + CELL + struct.pack("<II", 1, 1) + struct.pack("<iQ", 1, 2) + b"\0\0"
     + struct.pack("<iII", 8, 34, 1), E.INVALID_VALUE),  # transposed quantized V
    (_head() + CELL + struct.pack("<II", 1, 1) + struct.pack("<iQ", 1, 2) + b"\0\0"
     + struct.pack("<iII", 1, 4, 1), E.SIZE_MISMATCH),
    (_head() + CELL + struct.pack("<II", 1, 1) + struct.pack("<iQ", 1, 2) + b"\0\0"
     + struct.pack("<iII", 1, 2, 0xFFFFFFFF), E.TRUNCATED),
    (struct.pack("<III", B.GGSQ_MAGIC, 2, 0), E.UNSUPPORTED_VERSION),
    (struct.pack("<III", B.GGSQ_MAGIC, 3, 0xFFFFFFFF), E.TRUNCATED),
])
def test_crafted_states(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(AvpError) as e:
        _convert(data)
    assert e.value.code == code


def test_named_refusals() -> None:
    good = blob(G.F16, G.F16, n=2, head_dim=32, layers=1)
    with pytest.raises(AvpError) as e:
        _convert(good + b"\0")
    assert e.value.code == E.TRAILING_BYTES and "two caches" in str(e.value)
    with pytest.raises(AvpError) as e:
        _convert(good, form="file")
    assert e.value.code == E.BAD_MAGIC
    with pytest.raises(AvpError) as e:  # positions 0 and 5: a gap
        _convert(B.build(state(G.F16, G.F16, n=2, head_dim=32, layers=1, positions=[0, 5])))
    assert e.value.code == E.UNSUPPORTED_CAPABILITY
    with pytest.raises(AvpError) as e:  # 2 x 32 elements do not split into 3 heads
        _convert(blob(G.F16, G.F16, n=2, heads=2, head_dim=32, layers=1))
    assert e.value.code == E.SIZE_MISMATCH
    with pytest.raises(AvpError) as e:
        llama.state_to_message(good, MID, MODEL, token_ids=[1, 2, 3])
    assert e.value.code == E.KIND_CONSTRAINT
    with pytest.raises(AvpError) as e:
        llama.state_to_message(blob(G.F16, G.F16), MID, llama.LlamaModel(3, "unknown-arch"))
    assert e.value.code == E.UNSUPPORTED_CAPABILITY
    # several sequences in one state, cells in two streams
    st = state(G.F16, G.F16, n=2, head_dim=32, layers=1, positions=[0, 1])
    st.n_stream = 2
    two = B.build(st)
    i = two.index(struct.pack("<I", 0), 12)  # the empty stream 1 follows stream 0's data
    assert i > 0
    one = B.build(state(G.F16, G.F16, n=2, head_dim=32, layers=1, positions=[0, 1]))
    doubled = struct.pack("<IiI", B.IO_MAGIC, 0, 2) + one[12:] + one[12:]
    with pytest.raises(AvpError) as e:
        llama.state_to_message(doubled, MID, llama.LlamaModel(2, "llama"))
    assert e.value.code == E.UNSUPPORTED_CAPABILITY


def test_absurd_counts_cost_no_memory() -> None:
    cases = [_head(1, 0xFFFFFFFF), _head() + CELL + struct.pack("<II", 0, 60000),
             _head() + CELL + struct.pack("<II", 0, 1) + struct.pack("<iQ", 1, 2**62),
             struct.pack("<III", B.GGSQ_MAGIC, 3, 0xFFFFFFFF)]
    tracemalloc.start()
    try:
        for c in cases:
            with pytest.raises(AvpError):
                _convert(c)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# ---------------------------------------------------------------- LMCache


def _kv(t: int = 8, layers: int = 2, d: int = 6) -> lmcache.LMCacheKV:
    x = np.arange(2 * layers * t * d, dtype=np.float32).reshape(2, layers, t, d).astype(np.float16)
    return lmcache.LMCacheKV("m", list(range(1, t + 1)), x, 4)


STORE = lmcache.encode_store(_kv())
RETRIEVE = lmcache.encode_retrieve(_kv(), world_size=2)


@pytest.mark.parametrize("body,parse", [(STORE, lmcache.parse_store),
                                        (RETRIEVE, lmcache.parse_retrieve)],
                         ids=["store", "retrieve"])
def test_lmcache_truncations_and_mutations(body: bytes, parse: object) -> None:
    for cut in range(len(body)):
        with pytest.raises(AvpError):
            parse(body[:cut])  # type: ignore[operator]
    rng = np.random.default_rng(3)
    buf = np.frombuffer(body, np.uint8)
    for _ in range(400):
        m = buf.copy()
        m[int(rng.integers(0, len(m)))] = rng.integers(0, 256)
        try:
            kv = parse(m.tobytes())  # type: ignore[operator]
            lmcache.to_message(kv, MID, 2)
        except AvpError:
            pass


def _store(manifest: dict[str, object], *chunks: tuple[int, bytes]) -> bytes:
    body = encode_frame("store_manifest", fields=manifest)
    return body + b"".join(encode_frame("store_chunk", p, {"chunk_index": i}) for i, p in chunks)


GOOD_M = {"model_name": "m", "tokens": [1, 2, 3, 4], "cache_salt": "", "shape": [2, 1, 4, 2],
          "dtype": "torch.float16"}
CHUNK = bytes(2 * 1 * 4 * 2 * 2)


@pytest.mark.parametrize("body,code", [
    (struct.pack("!IQ", 2**21, 0), E.LIMIT_HEADER),
    (struct.pack("!IQ", 2, 2**40) + b"{}", E.LIMIT_TENSOR),
    (struct.pack("!IQ", 4, 0) + b"[1]x", E.INVALID_VALUE),
    (struct.pack("!IQ", 2, 0) + b"\xff\xfe", E.INVALID_VALUE),
    (encode_frame("store_manifest", fields={"x": float("nan")}), E.INVALID_VALUE),
    (struct.pack("!IQ", 40, 0) + b'{"version":1,"version":1,"type":"x"}    ', E.INVALID_VALUE),
    (struct.pack("!IQ", 5000, 0) + b"[" * 5000, E.INVALID_VALUE),  # deep nesting
    (encode_frame("store_chunk", b"", {"chunk_index": 0}), E.SECTION_ORDER),
    (_store({**GOOD_M, "dtype": "torch.int3"}), E.UNKNOWN_DTYPE),
    (_store({**GOOD_M, "shape": [3, 1, 4, 2]}), E.INVALID_VALUE),
    (_store({**GOOD_M, "shape": [2, 1, 4]}), E.INVALID_VALUE),
    (_store({**GOOD_M, "shape": [2, True, 4, 2]}), E.INVALID_VALUE),
    (_store({**GOOD_M, "shape": [2, 2**40, 2**40, 2]}), E.LIMIT_TENSOR),
    (_store({**GOOD_M, "tokens": [1]}), E.KIND_CONSTRAINT),
    (_store(GOOD_M), E.SIZE_MISMATCH),  # no chunks
    (_store(GOOD_M, (0, CHUNK), (0, CHUNK)), E.BAD_REFERENCE),
    (_store(GOOD_M, (1, CHUNK)), E.BAD_REFERENCE),
    (_store(GOOD_M, (0, CHUNK[:-2])), E.SIZE_MISMATCH),
    (_store(GOOD_M, (0, CHUNK)) + encode_frame("retrieve_shard", b"", {"chunk_index": 0,
                                                                      "worker_id": 0}),
     E.SECTION_ORDER),
])
def test_crafted_lmcache_bodies(body: bytes, code: ErrorCode) -> None:
    with pytest.raises(AvpError) as e:
        lmcache.parse_store(body)
    assert e.value.code == code


def test_lmcache_version_and_payload_length_checks() -> None:
    hb = b'{"version":2,"type":"store_manifest","payload_length":0}'
    with pytest.raises(AvpError) as e:
        lmcache.parse_store(struct.pack("!IQ", len(hb), 0) + hb)
    assert e.value.code == E.UNSUPPORTED_VERSION
    hb = b'{"version":1,"type":"store_manifest","payload_length":3}'
    with pytest.raises(AvpError) as e:
        lmcache.parse_store(struct.pack("!IQ", len(hb), 0) + hb)
    assert e.value.code == E.SIZE_MISMATCH
    hb = b'{"version":1,"type":"teleport","payload_length":0}'
    with pytest.raises(AvpError) as e:
        lmcache.parse_store(struct.pack("!IQ", len(hb), 0) + hb)
    assert e.value.code == E.INVALID_VALUE


def test_lmcache_retrieve_refusals() -> None:
    kv = _kv()
    miss = encode_frame("retrieve_manifest", fields={
        "model_name": "m", "total_tokens": 8, "total_chunks": 2, "hit_tokens": 0,
        "hit_chunks": 0, "chunk_size": 4, "world_size": 1, "shape": [0, 0, 0, 0],
        "shard_shape": [0, 0, 0, 0], "dtype": "torch.float16"})
    with pytest.raises(AvpError) as e:
        lmcache.parse_retrieve(miss)
    assert e.value.code == E.KIND_CONSTRAINT
    body = lmcache.encode_retrieve(kv, world_size=2)
    assert body.count(b"retrieve_shard") == 4  # 2 chunks x 2 workers
    # drop the last shard frame: a missing shard
    last = body.rindex(b'{"version":1,"type":"retrieve_shard"') - 12
    with pytest.raises(AvpError) as e:
        lmcache.parse_retrieve(body[:last])
    assert e.value.code == E.TOKEN_RANGE
    with pytest.raises(AvpError) as e:
        lmcache.parse_retrieve(STORE)
    assert e.value.code == E.SECTION_ORDER


def test_lmcache_bytes_payload_mutations_never_crash() -> None:
    src = _kv()
    body = lmcache.encode_bytes_payload(src, world_size=2)
    rng = np.random.default_rng(11)
    buf = np.frombuffer(body, np.uint8)
    for cut in range(0, len(body), 7):
        with pytest.raises(AvpError):
            lmcache.parse_bytes_payload(body[:cut], model_name="m", tokens=list(range(8)),
                                        num_layers=2, hidden=6, dtype="torch.float16",
                                        chunk_size=4, world_size=2)
    for _ in range(400):
        m = buf.copy()
        m[int(rng.integers(0, len(m)))] = rng.integers(0, 256)
        with contextlib.suppress(AvpError):
            lmcache.parse_bytes_payload(m.tobytes(), model_name="m", tokens=list(range(8)),
                                        num_layers=2, hidden=6, dtype="torch.float16",
                                        chunk_size=4, world_size=2)
