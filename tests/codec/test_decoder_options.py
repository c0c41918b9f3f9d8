"""The incremental Decoder's receiver options (spec 7.3 "Verification without the output",
11.2 "descriptor" events): ``keep_raw=False`` verifies compressed tensors without keeping (or
allocating) their output and reaches the same verdict as a decoder that keeps it;
``descriptors=True`` reports each tensor's descriptor before its data is read; a failed decoder
keeps none of the bytes it was refusing."""

from __future__ import annotations

import gc
import json
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard

import avp_codec as avp

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "conformance" / "vectors"
MIB = 1 << 20
E = avp.ErrorCode


def _events(data: bytes, piece: int | None = None, **opts: Any) -> list[Any]:
    dec = avp.Decoder(**opts)
    for i in range(0, len(data), piece or max(1, len(data))):
        dec.feed(data[i:i + (piece or len(data))])
    dec.end_of_input()
    out = []
    while (ev := dec.next_event()) is not avp.END_OF_STREAM:
        assert ev is not avp.NEED_DATA
        out.append(ev)
    return out


def _outcome(data: bytes, **opts: Any) -> str:
    try:
        _events(data, **opts)
    except avp.AvpError as e:
        return e.code.name
    return "ok"


def _message(codec: avp.Codec, dtype: Any = np.float16) -> avp.Message:
    rng = np.random.default_rng(7)
    k = [rng.standard_normal((1, 2, 96, 16)).astype(dtype) for _ in range(2)]
    msg = avp.kv_cache_from_arrays(bytes(32), k, [x * 2 for x in k])
    return avp.compress_message(msg, codec)


def _rle_frame(n: int, *, size: bool) -> bytes:
    """Zero bytes in RLE blocks of 128 KiB; Frame_Content_Size written or not; window 128 KiB."""
    out = bytearray(b"\x28\xb5\x2f\xfd")
    out += bytes([0xC0, 0x38]) + struct.pack("<Q", n) if size else bytes([0x00, 7 << 3])
    left = n
    while left:
        step = min(128 << 10, left)
        left -= step
        out += struct.pack("<I", (1 if not left else 0) | (1 << 1) | (step << 3))[:3] + b"\0"
    return bytes(out)


def _kv_frames(frame: bytes, raw_length: int, dtype: avp.Dtype = avp.Dtype.FLOAT16,
               codec: avp.Codec = avp.Codec.ZSTD) -> bytes:
    bits = {avp.Dtype.FLOAT16: 16, avp.Dtype.FLOAT32: 32}[dtype]
    elems = raw_length * 8 // bits
    shape = (1, 1, elems // 16, 16)
    ts = [avp.Tensor(role, dtype, shape, frame, layer=0, codec=codec, layout=avp.Layout.BHTD,
                     raw_length=raw_length)
          for role in (avp.Role.KEY, avp.Role.VALUE)]
    return avp.encode(avp.Message(
        avp.Kind.KV_CACHE, [avp.Entry.of(avp.MetaKey.MODEL_ID, bytes(32)),
                            avp.Entry.of(avp.MetaKey.CONTEXT_LENGTH, shape[2])],
        [avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, shape[2])], ts))


@pytest.mark.parametrize("codec", [avp.Codec.ZSTD, avp.Codec.BYTEPLANE_ZSTD,
                                   avp.Codec.FLOATPLANE_ZSTD])
def test_keep_raw_false_keeps_stored_bytes_and_inflates_on_demand(codec: avp.Codec) -> None:
    msg = _message(codec)
    data = avp.encode(msg)
    kept = [ev.tensor for ev in _events(data, 1000) if isinstance(ev, avp.TensorEvent)]
    lazy = [ev.tensor for ev in _events(data, 1000, keep_raw=False)
            if isinstance(ev, avp.TensorEvent)]
    assert len(lazy) == len(msg.tensors) == 4
    for a, b in zip(kept, lazy, strict=True):
        assert b.codec == codec and b._raw is None  # verified, nothing kept
        assert bytes(b.stored) == bytes(a.stored)
        assert np.array_equal(b.array(), a.array())  # inflated again when asked for


def test_keep_raw_false_verifies_a_bomb_in_bounded_memory() -> None:
    """Two zstd tensors of 256 MiB each, with and without Frame_Content_Size: verified through
    a 1 MiB scratch buffer (traced peak a few MiB), where keeping them costs 512 MiB."""
    n = 256 * MIB
    lim = avp.Limits(max_tensor_bytes=1 << 30)
    for size in (True, False):
        data = _kv_frames(_rle_frame(n, size=size), n)
        tracemalloc.start()
        try:
            evs = _events(data, 64 * 1024, keep_raw=False, limits=lim)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert [type(e).__name__ for e in evs] == ["HeaderEvent", "TensorEvent",
                                                   "TensorEvent", "EndEvent"]
        assert peak < 4 * MIB, peak


@pytest.mark.parametrize("case", [
    ("short", 4 * MIB - (128 << 10), False, "DECOMPRESSED_SIZE"),
    ("long", 4 * MIB + (128 << 10), False, "DECOMPRESSED_SIZE"),
    ("declared other size", 4 * MIB + 8, True, "DECOMPRESSED_SIZE"),
])
def test_keep_raw_false_refuses_what_decompress_refuses(case: tuple[str, int, bool, str]) -> None:
    _, n, size, code = case
    data = _kv_frames(_rle_frame(n, size=size), 4 * MIB)
    assert _outcome(data) == _outcome(data, keep_raw=False) == code


def test_keep_raw_false_refuses_windows_above_8_mib() -> None:
    """R-7.13 lets a decoder refuse a Window_Size above 8 MiB: the verifying decoder does (its
    memory would otherwise follow the window), the keeping one accepts it."""
    raw = np.arange(16 * MIB, dtype=np.uint16).tobytes()
    params = zstandard.ZstdCompressionParameters(window_log=24, write_content_size=True)
    data = _kv_frames(zstandard.ZstdCompressor(compression_params=params).compress(raw),
                      len(raw))
    assert _outcome(data) == "ok"
    with pytest.raises(avp.AvpError, match="window") as e:
        _events(data, keep_raw=False)
    assert e.value.code == E.DECOMPRESSION_FAILED and e.value.path == "tensor[0].data"


def _vector_cases() -> list[dict[str, Any]]:
    doc = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
    return [c for c in doc["cases"] if not c.get("context")]


def test_keep_raw_false_agrees_with_the_conformance_vectors() -> None:
    """Every vector without a special context: the same outcome (valid, or the same code) with
    and without keeping the output, and with descriptor events on. They include every frame
    fault of R-7.13 in its order, R-7.17's floatplane faults, the packed padding of a zstd
    tensor (R-7.14 on the raw bytes) and windows of 8 MiB (accepted) and 128 MiB."""
    cases = _vector_cases()
    assert len(cases) > 300
    ids = {c["id"] for c in cases}
    assert {"7.2/packed-tail-after-zstd", "7.3/zstd-window-8mib", "7.3/zstd-window-128mib",
            "7.3.1/floatplane-mantissa-high-bit", "7.3/zstd-two-faults-size-and-content",
            "7.3/zstd-no-content-size-more-blocks"} <= ids
    for c in cases:
        data = (VECTORS / c["file"]).read_bytes()
        want = _outcome(data)
        assert _outcome(data, keep_raw=False, descriptors=True) == want, c["id"]


def test_descriptor_events_come_before_the_data() -> None:
    msg = _message(avp.Codec.ZSTD)
    data = avp.encode(msg)
    dec = avp.Decoder(descriptors=True)
    index = avp.IndexedReader(data).index
    section, data_at, _ = index[0]
    dec.feed(data[:data_at])  # up to the first tensor's data, not one byte of it
    assert isinstance(dec.next_event(), avp.HeaderEvent)
    ev = dec.next_event()
    assert isinstance(ev, avp.DescriptorEvent) and ev.index == 0
    t = ev.tensor
    assert (t.role, t.layer, t.codec, t.shape) == (avp.Role.KEY, 0, avp.Codec.ZSTD,
                                                   (1, 2, 96, 16))
    assert t.raw_length == 2 * 96 * 16 * 2 and t.stored_length > 0 and len(t.stored) == 0
    assert dec.next_event() is avp.NEED_DATA
    dec.feed(data[data_at:])
    dec.end_of_input()
    ev2 = dec.next_event()
    assert isinstance(ev2, avp.TensorEvent) and ev2.index == 0 and ev2.tensor is t
    kinds = [type(e).__name__ for e in iter(dec.next_event, avp.END_OF_STREAM)]
    assert kinds == ["DescriptorEvent", "TensorEvent"] * 3 + ["EndEvent"]
    assert section < data_at


def test_options_hold_for_every_message_of_a_stream() -> None:
    one = avp.encode(_message(avp.Codec.ZSTD))
    evs = _events(one + one, 777, stream=True, keep_raw=False, descriptors=True)
    assert sum(isinstance(e, avp.DescriptorEvent) for e in evs) == 8
    assert all(e.tensor._raw is None for e in evs if isinstance(e, avp.TensorEvent))


@pytest.mark.parametrize("name", ["keep_raw", "descriptors"])
def test_options_are_bools(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        avp.Decoder(**{name: 1})


def test_a_failed_decoder_keeps_nothing_of_what_it_refused() -> None:
    """A 15 MiB QUANT_POLICY over the value limit: once refused, neither the decoder nor the
    error it keeps holds the HEADER or the text decoded from it (no collection needed)."""
    wire = _with_policy("[" + ",".join(["[]"] * (5 * MIB)) + "]")
    gc.collect()
    gc.disable()
    try:
        tracemalloc.start()
        dec = avp.Decoder(limits=avp.Limits(max_header_bytes=32 * MIB))
        for i in range(0, len(wire), MIB):
            dec.feed(wire[i:i + MIB])
        with pytest.raises(avp.AvpError) as e:
            dec.next_event()
        assert e.value.code == E.INVALID_VALUE
        del e
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert held < 2 * MIB, held
        with pytest.raises(avp.AvpError):  # still refuses, as before
            dec.next_event()
    finally:
        gc.enable()


def _with_policy(policy: str) -> bytes:
    """A KV_CACHE carrying ``policy`` as its QUANT_POLICY, written by the hostile corpus's
    independent writer (the encoder would refuse it)."""
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "hostile"))
    import hostile_wire as w

    return w.kv_with_policy(policy)


def test_a_large_policy_over_the_limits_is_refused_before_it_is_text() -> None:
    """A 15 MiB QUANT_POLICY of empty arrays: refused from its UTF-8 bytes with the code,
    message, path and offset that checking the decoded text gives, at a traced peak of about
    two copies of it (its HEADER and one skeleton), where the text and its skeletons cost
    four. Invalid UTF-8 and a byte order mark keep their own, earlier, refusals."""
    policy = "[" + ",".join(["[]"] * (5 * MIB)) + "]"
    wire = _with_policy(policy)
    tracemalloc.start()
    try:
        with pytest.raises(avp.AvpError) as e:
            avp.decode(wire, limits=avp.Limits(max_header_bytes=32 * MIB))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (e.value.code, e.value.path) == (E.INVALID_VALUE, "entries[2]")
    assert "QUANT_POLICY: not strict JSON: more than 65536 values" in str(e.value)
    assert peak < 2.5 * len(wire), peak
    deep = "[" * 100 + "]" * 100
    got = []
    for text in (deep, deep + " " * 70000):  # checked as text; as bytes (64 KiB and more)
        with pytest.raises(avp.AvpError) as e2:
            avp.decode(_with_policy(text))
        got.append((e2.value.code, e2.value.path, e2.value.offset, e2.value.detail))
    assert got[0] == got[1] and got[0][3] == "QUANT_POLICY: not strict JSON: nested deeper than 64"
    for text, why in (("\ufeff" + policy[:200000], "byte order mark"),
                      (policy[:200000] + "\udcff", "UTF-8")):
        bad = _with_policy_bytes(text.encode("utf-8", "surrogateescape"))
        with pytest.raises(avp.AvpError, match=why) as e3:
            avp.decode(bad)
        assert (e3.value.code, e3.value.path) == (E.INVALID_VALUE, "entries[2].value")


def _with_policy_bytes(raw: bytes) -> bytes:
    """``_with_policy`` for a value that is not (valid) text: the marker is replaced in place
    (one length field and the HEADER's CRC recomputed by the corpus's writer)."""
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "hostile"))
    import hostile_wire as w

    return w.kv_with_policy(raw)  # type: ignore[arg-type]
