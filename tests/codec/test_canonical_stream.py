"""The streamed canonical JSON writer (iter_canonical_json / write_canonical_json): the same text
as ``json.dumps(to_canonical_json(msg))``, in bounded memory; and ``raw_sha256`` without keeping
inflated bytes, refusing exactly what decompression refuses."""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zstandard

import avp_codec as avp
from avp_codec import _codecs, _raw_digest
from avp_codec import canonical_json as cj

ROOT = Path(__file__).resolve().parents[2]
VECTORS = sorted((ROOT / "conformance" / "vectors").rglob("*.avp"))
PRIVATE_KEY = 0x8001  # an unregistered, non-critical key: kept as is


def reference_text(msg: avp.Message) -> str:
    return json.dumps(avp.to_canonical_json(msg), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)


def decodable() -> list[avp.Message]:
    out = []
    for p in VECTORS:
        try:
            out.append(avp.decode(p.read_bytes()))
        except avp.AvpError:
            continue
    return out


def test_streamed_text_is_json_dumps_of_the_document_for_every_vector(
        monkeypatch: pytest.MonkeyPatch) -> None:
    msgs = decodable()
    assert len(msgs) > 150  # the valid and acceptable vectors
    for chunk in (cj.CHUNK, 2, 5):  # small chunks: every value is cut into slices
        monkeypatch.setattr(cj, "CHUNK", chunk)
        for m in msgs:
            want = reference_text(m)
            parts = list(avp.iter_canonical_json(m))
            assert "".join(parts) == want
            assert avp.dumps_canonical_json(m) == want
            out = io.StringIO()
            assert avp.write_canonical_json(m, out) == len(want)
            assert out.getvalue() == want


def _odd_values() -> avp.Message:
    return avp.Message(avp.Kind.TEXT, [
        avp.Entry.of(avp.MetaKey.TEXT, 'é\u2028"\\\n\x01\U0001f600' * 3000),
        avp.Entry(PRIVATE_KEY, avp.ValueType.U32_LIST, tuple(range(0, 1 << 32, 4099)), False),
        avp.Entry(PRIVATE_KEY + 1, avp.ValueType.BYTES, bytes(range(256)) * 600, False),
        avp.Entry(PRIVATE_KEY + 2, 99, b"\x00\xff" * 70000, False),  # unknown value type
        avp.Entry(PRIVATE_KEY + 3, avp.ValueType.F64, -math.inf, False),
        avp.Entry(PRIVATE_KEY + 4, avp.ValueType.F64, math.nan, False),
        avp.Entry(PRIVATE_KEY + 5, avp.ValueType.F64, -0.0, False),
        avp.Entry(PRIVATE_KEY + 6, avp.ValueType.U64, (1 << 64) - 1, False),
        avp.Entry(PRIVATE_KEY + 7, avp.ValueType.U32_LIST, (), False),
        avp.Entry(PRIVATE_KEY + 8, avp.ValueType.UTF8, "", False),
    ])


DEFAULT_CHUNK = cj.CHUNK


@pytest.mark.parametrize("chunk", [DEFAULT_CHUNK, 2, 3, 1000])
def test_long_values_are_sliced_without_changing_the_text(
        monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    m = _odd_values()
    monkeypatch.setattr(cj, "CHUNK", chunk)
    want = reference_text(m)
    parts = list(avp.iter_canonical_json(m))
    assert "".join(parts) == want
    if chunk == DEFAULT_CHUNK:
        assert len(parts) > 10 and max(map(len, parts)) < 4 * chunk
    back = avp.from_canonical_json(want, max_values=1 << 22)
    assert avp.encode(back) == avp.encode(m)


def test_non_messages_are_type_errors() -> None:
    for call in (avp.dumps_canonical_json, avp.to_canonical_json,
                 avp.iter_canonical_json,  # at the call, before any iteration
                 lambda x: avp.write_canonical_json(x, io.StringIO())):
        with pytest.raises(TypeError, match="avp_codec.Message"):
            call({"kind": "TEXT"})


# ------------------------------------------------------------------ tensors: hashed, not kept


def _kv(codec: avp.Codec, dtype: type = np.float32, tokens: int = 96) -> avp.Message:
    rng = np.random.default_rng(7)
    a = rng.standard_normal((1, 2, tokens, 8)).astype(dtype)
    ts = [avp.Tensor.from_array(a, role, ordinal=0, layout=avp.Layout.BHTD, codec=codec)
          for role in (avp.Role.KEY, avp.Role.VALUE)]
    return avp.kv_cache_message(model_id=b"\x01" * 32, context_length=tokens, layers=[
        avp.Layer(index=0, kind=avp.LayerKind.FULL_ATTENTION, token_start=0,
                  token_count=tokens)], tensors=ts)


@pytest.mark.parametrize("codec", [avp.Codec.RAW, avp.Codec.ZSTD, avp.Codec.BYTEPLANE_ZSTD,
                                   avp.Codec.FLOATPLANE_ZSTD])
@pytest.mark.parametrize("streamed", [False, True])
def test_tensor_digests_keep_no_inflated_bytes(monkeypatch: pytest.MonkeyPatch,
                                                codec: avp.Codec, streamed: bool) -> None:
    if streamed:  # every plane-coded tensor through the per-plane readers
        monkeypatch.setattr(_raw_digest, "BUFFER_MAX", 0)
        monkeypatch.setattr(_raw_digest, "CHUNK", 64)
    wire = avp.encode(_kv(codec))
    m = avp.decode(wire)
    fresh = avp.IndexedReader(wire)
    lazy = avp.Message(m.kind, m.entries, m.layers,
                       [avp.Tensor(t.role, t.dtype, t.shape, bytes(t.stored), layer=t.layer,
                                   codec=t.codec, layout=t.layout, raw_length=t.raw_length)
                        for t in m.tensors])
    text = avp.dumps_canonical_json(lazy)
    assert text == avp.dumps_canonical_json(m) == reference_text(lazy)
    for t in lazy.tensors:  # nothing was cached on the tensors
        assert (t._raw is None) == (codec != avp.Codec.RAW)
    doc = json.loads(text)
    for i, t in enumerate(m.tensors):
        assert doc["tensors"][i]["raw_sha256"] == hashlib.sha256(t.raw_bytes()).hexdigest()
        assert fresh.tensor(i).raw_bytes() == t.raw_bytes()
    stored = b"".join(bytes(t.stored) for t in m.tensors)
    back = avp.from_canonical_json(text, stored)
    assert all(t._raw is None for t in back.tensors) or codec == avp.Codec.RAW
    assert avp.encode(back) == wire


def _frames(codec: avp.Codec) -> dict[str, bytes]:
    """Faulty frames for a float32 tensor of 4096 raw bytes: each must be refused by the
    streamed digest with the code ``_codecs.decompress`` gives it."""
    raw = np.arange(1024, dtype=np.float32).tobytes()
    body = raw if codec == avp.Codec.ZSTD else _codecs.split_planes(raw, 4)
    good = zstandard.ZstdCompressor(level=3).compress(body)
    no_size = zstandard.ZstdCompressor(level=3, write_content_size=False)
    return {
        "good": good,
        "short": no_size.compress(body[:-1]),
        "long": no_size.compress(body + b"\x00"),
        "wrong declared size": zstandard.ZstdCompressor().compress(body[:-4]),
        "trailing byte": good + b"\x00",
        "truncated": good[:-3],
        "not zstd": b"\x00" * 16,
        "corrupt block": good[:12] + bytes(b ^ 0x5A for b in good[12:]),
    }


@pytest.mark.parametrize("codec", [avp.Codec.ZSTD, avp.Codec.BYTEPLANE_ZSTD])
def test_streamed_digest_refuses_what_decompress_refuses(monkeypatch: pytest.MonkeyPatch,
                                                         codec: avp.Codec) -> None:
    monkeypatch.setattr(_raw_digest, "BUFFER_MAX", 0)
    monkeypatch.setattr(_raw_digest, "CHUNK", 256)
    monkeypatch.setattr(_raw_digest, "_READER_OVERHEAD", 0)
    for name, frame in _frames(codec).items():
        t = avp.Tensor(avp.Role.KEY, avp.Dtype.FLOAT32, (1, 1, 128, 8), frame, layer=0,
                       codec=codec, layout=avp.Layout.BHTD, raw_length=4096)
        try:
            want: object = hashlib.sha256(_codecs.decompress(
                t.stored, codec, 4096, t.dtype, t.shape, "p")).hexdigest()
        except avp.AvpError as e:
            want = (e.code, e.path)
        try:
            got: object = _raw_digest.raw_sha256(t, "p")
        except avp.AvpError as e:
            got = (e.code, e.path)
        assert got == want, name
        assert t._raw is None
    assert isinstance(want, tuple)  # the last frame (corrupt) is refused


# ------------------------------------------------------------------ memory, in a subprocess

_CHILD = textwrap.dedent("""
    import io, json, struct, sys
    import avp_codec as avp

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024

    def rle_frame(total):  # RLE blocks of 128 KiB, no content size, window 128 KiB
        out = bytearray(b"\\x28\\xb5\\x2f\\xfd" + bytes([0x00, 7 << 3]))
        left = total
        while left:
            n = min(128 << 10, left)
            left -= n
            out += struct.pack("<I", (0 if left else 1) | (1 << 1) | (n << 3))[:3] + b"\\x07"
        return bytes(out)

    class Sink:  # a file that keeps nothing
        n = 0
        def write(self, s):
            self.n += len(s)

    def measure(fn):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss0 = status("VmRSS")
        fn()
        return status("VmHWM") - rss0

    case, size = sys.argv[1], int(sys.argv[2])
    # A hard guard besides the measured peak: a regression fails here instead of swapping.
    import resource
    limit = status("VmSize") + (640 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if case == "metadata":
        values = tuple(range(1 << 20, (1 << 20) + size // 4))
        m = avp.Message(avp.Kind.TEXT, [avp.Entry.of(avp.MetaKey.TEXT, "x"),
                                        avp.Entry(0x8001, avp.ValueType.U32_LIST, values, False)])
    else:
        codec = avp.Codec[case]
        frame = rle_frame(size)
        tokens = size // (2 * 8 * 4)
        m = avp.kv_cache_message(model_id=b"\\x01" * 32, context_length=tokens, layers=[
            avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, tokens)], tensors=[
            avp.Tensor(role, avp.Dtype.FLOAT32, (1, 2, tokens, 8), frame, layer=0,
                       codec=codec, layout=avp.Layout.BHTD, raw_length=size)
            for role in (avp.Role.KEY, avp.Role.VALUE)])
    sink = Sink()
    out = {"write": measure(lambda: avp.write_canonical_json(m, sink)), "chars": sink.n}
    if case != "metadata":
        text = avp.dumps_canonical_json(m)
        stored = b"".join(bytes(t.stored) for t in m.tensors)
        out["from"] = measure(lambda: avp.from_canonical_json(text, stored))
        out["cached"] = [t._raw is not None for t in m.tensors]
    print(json.dumps(out))
""")


def _child(case: str, size: int) -> dict[str, int]:
    r = subprocess.run([sys.executable, "-c", _CHILD, case, str(size)], capture_output=True,
                       text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    out: dict[str, int] = json.loads(r.stdout)
    return out


MIB = 1 << 20
needs_proc = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                                reason="peak RSS is read from Linux /proc")


@needs_proc
@pytest.mark.parametrize("codec", ["ZSTD", "BYTEPLANE_ZSTD"])
def test_a_bomb_is_described_and_read_back_in_bounded_memory(codec: str) -> None:
    """2 x 96 MiB of raw bytes from ~3 KB of frames: writing the canonical JSON and verifying
    it (from_canonical_json) each peak far below one tensor's raw bytes (they used to keep
    every tensor's inflated bytes: 192 MiB, twice)."""
    out = _child(codec, 96 * MIB)
    assert out["write"] < 16 * MIB, out
    assert out["from"] < 16 * MIB, out
    assert out["cached"] == [False, False]


@needs_proc
def test_a_large_metadata_list_is_written_in_bounded_memory() -> None:
    """A 16 MiB u32 list (4M values): the document form costs a list of 4M pointers plus
    32 MB of text; the streamed writer holds one chunk."""
    out = _child("metadata", 16 * MIB)
    assert out["chars"] > 32 * MIB
    assert out["write"] < 8 * MIB, out


def test_the_struct_format_of_u32_lists_is_little_endian() -> None:
    """encode/decode of u32 lists moved to one struct call: pin the byte order."""
    m = avp.Message(avp.Kind.TEXT, [avp.Entry.of(avp.MetaKey.TEXT, "x"), avp.Entry(
        PRIVATE_KEY, avp.ValueType.U32_LIST, (1, 0xFFFFFFFF, 0x01020304), False)])
    wire = avp.encode(m)
    assert struct.pack("<3I", 1, 0xFFFFFFFF, 0x01020304) in wire
    assert avp.decode(wire).entries[1].value == (1, 0xFFFFFFFF, 0x01020304)
    for bad in ((1 << 32,), (-1,), (1.0,), (True,)):
        with pytest.raises(avp.AvpError) as e:
            avp.encode(avp.Message(avp.Kind.TEXT, [avp.Entry.of(avp.MetaKey.TEXT, "x"),
                                                   avp.Entry(PRIVATE_KEY,
                                                             avp.ValueType.U32_LIST, bad,
                                                             False)]))
        assert e.value.code is avp.ErrorCode.INVALID_VALUE
