"""One trigger per registry error code: each case builds an input with exactly one fault and
checks the code (never the message text). ``test_every_code_has_a_trigger`` fails when a code of
the registry has no case here.

Inputs are crafted with a tiny independent assembler (``assemble``) that lays out sections per
spec 3-8 from raw bodies, so faults the encoder refuses to produce can still be written.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import crc32c
import numpy as np
import pytest
import zstandard

import avp_codec as avp
from avp_codec import (
    AvpError,
    Codec,
    Dtype,
    Entry,
    ErrorCode,
    Layer,
    LayerKind,
    Layout,
    Limits,
    MetaKey,
    Role,
    Tensor,
)

MAGIC = b"\x89AVP\r\n\x1a\n"
NOREF = 0xFFFFFFFF


# -- an independent assembler -----------------------------------------------------------------
def sec(type_: int, body: bytes, flags: int = 0) -> bytes:
    head = struct.pack("<IIQ", type_, flags, len(body))
    crc = crc32c.crc32c(head + body)
    raw = head + body + struct.pack("<I", crc)
    return raw + bytes(-len(raw) % 8)


def entry(key: int, vtype: int, value: bytes, flags: int) -> bytes:
    return struct.pack("<HBBI", key, flags, vtype, len(value)) + value + bytes(-len(value) % 8)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def header(kind: int, entries: list[bytes], layers: list[bytes], tensor_count: int,
           flags: int = 0) -> bytes:
    return (struct.pack("<HHIII", kind, flags, len(entries), len(layers), tensor_count)
            + b"".join(entries) + b"".join(layers))


def layer(index: int, kind: int, start: int, count: int, window: int = 0) -> bytes:
    return struct.pack("<IB3xIIQQ", index, kind, window, 0, start, count)


def desc(i: int, layer_: int, role: int, dtype: int, shape: tuple[int, ...], data: bytes, *,
         codec: int = 0, layout: int = 0, raw_length: int | None = None, token_offset: int = 0,
         quant: tuple[int, int, int, int, int, int] = (0, 0, 0, NOREF, NOREF, 0),
         rank: int | None = None) -> bytes:
    n = int(np.prod(shape)) if shape else 1
    bits = {1: 32, 2: 16, 3: 16, 4: 8, 5: 8, 6: 8, 7: 8, 8: 4, 9: 4, 10: 2, 11: 32, 12: 64}
    raw = (n * bits.get(dtype, 8) + 7) // 8 if raw_length is None else raw_length
    qs, qa, gs, st, zt, dq = quant
    fixed = struct.pack("<IIHBBBBBBIIIB3xQQQII", i, layer_, role, dtype, codec,
                        len(shape) if rank is None else rank, layout, qs, qa, gs, st, zt, dq,
                        token_offset, raw, len(data), crc32c.crc32c(data), 0)
    return fixed + b"".join(u64(d) for d in shape)


def assemble(head_body: bytes, tensors: list[tuple[bytes, bytes]], *, tag: bytes = b"",
             major: int = 1, extra_sections: bytes = b"") -> bytes:
    out = bytearray(MAGIC + struct.pack("<HHI", major, 0, 0))
    out += sec(1, head_body) + extra_sections
    index = []
    for d, data in tensors:
        at = len(out)
        out += sec(2, d)
        out += bytes(-len(out) % 64)
        index.append((at, len(out), len(data)))
        out += data + bytes(-len(data) % 8)
    idx_at = len(out)
    body = u64(len(tensors)) + b"".join(struct.pack("<QQQ", *e) for e in index) + tag
    out += sec(3, body)
    out += u64(idx_at) + b"\x89AVPEND\n"
    return bytes(out)


MID = entry(1, 5, bytes(32), 1)
CTX4 = entry(5, 1, u64(4), 1)


def kv(tensors: list[tuple[bytes, bytes]] | None = None, *, entries: list[bytes] | None = None,
       layers: list[bytes] | None = None, count: int | None = None) -> bytes:
    """A KV_CACHE with one full-attention layer of 4 tokens and K/V float16 [1,1,4,2]."""
    data = np.arange(8, dtype=np.float16).tobytes()
    if tensors is None:
        tensors = [(desc(0, 0, 1, 2, (1, 1, 4, 2), data, layout=1), data),
                   (desc(1, 0, 2, 2, (1, 1, 4, 2), data, layout=1), data)]
    hb = header(1, [MID, CTX4] if entries is None else entries,
                [layer(0, 1, 0, 4)] if layers is None else layers,
                len(tensors) if count is None else count)
    return assemble(hb, tensors)


def text(entries: list[bytes] | None = None, layers: list[bytes] | None = None,
         kind: int = 3, flags: int = 0) -> bytes:
    e = [entry(32, 4, b"hi", 1)] if entries is None else entries
    return assemble(header(kind, e, layers or [], 0, flags=flags), [])


def refix(buf: bytearray) -> bytes:
    """Recompute every section CRC after a patch (so the patch is the only fault)."""
    pos = 16
    while pos + 16 <= len(buf) - 16:
        t, _, n = struct.unpack_from("<IIQ", buf, pos)
        struct.pack_into("<I", buf, pos + 16 + n, crc32c.crc32c(bytes(buf[pos:pos + 16 + n])))
        end = pos + 20 + n + (-(20 + n) % 8)
        if t == 2:
            stored = struct.unpack_from("<Q", buf, pos + 16 + 48)[0]
            end += -end % 64
            end += stored + (-stored % 8)
        pos = end
        if t == 3:
            break
    return bytes(buf)


def patch(buf: bytes, off: int, fmt: str, value: object, fix: bool = True) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, off, value)
    return refix(b) if fix else bytes(b)


def locate(buf: bytes) -> dict[str, list[int]]:
    """Offsets of the sections of a message (by type name) and tensor data."""
    out: dict[str, list[int]] = {"header": [], "tensor": [], "data": [], "index": []}
    pos = 16
    while True:
        t, _, n = struct.unpack_from("<IIQ", buf, pos)
        out[{1: "header", 2: "tensor", 3: "index"}[t]].append(pos)
        end = pos + 20 + n + (-(20 + n) % 8)
        if t == 2:
            end += -end % 64
            out["data"].append(end)
            stored = struct.unpack_from("<Q", buf, pos + 16 + 48)[0]
            end += stored + (-stored % 8)
        if t == 3:
            return out
        pos = end


VALID_KV = kv()
T0 = locate(VALID_KV)["tensor"][0] + 16  # first descriptor body
IDX = locate(VALID_KV)["index"][0] + 16


def test_assembler_output_is_valid() -> None:
    m = avp.decode(VALID_KV)
    assert m.kind == avp.Kind.KV_CACHE and len(m.tensors) == 2
    assert avp.encode(m) == VALID_KV  # the independent assembler and the encoder agree
    assert avp.decode(text()).get(MetaKey.TEXT) == "hi"


# -- the cases ------------------------------------------------------------------------------
def decode_with(limits: Limits) -> Callable[[bytes], object]:
    return lambda b: avp.decode(b, limits=limits)


def _incremental(limits: Limits) -> Callable[[bytes], object]:
    def run(b: bytes) -> object:
        d = avp.Decoder(limits=limits)
        d.feed(b)
        while not isinstance(d.next_event(), avp.EndEvent):
            pass
        return None
    return run


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


F16 = np.arange(8, dtype=np.float16).tobytes()


def _kv_with(d0: bytes, data0: bytes, *, extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    return kv([(d0, data0), (desc(1, 0, 2, 2, (1, 1, 4, 2), F16, layout=1), F16)]
              + (extra or []))


CASES: list[tuple[ErrorCode, str, Callable[[], bytes], Callable[[bytes], object]]] = []


def case(code: ErrorCode, name: str, *, via: Callable[[bytes], object] = avp.decode
         ) -> Callable[[Callable[[], bytes]], Callable[[], bytes]]:
    def reg(fn: Callable[[], bytes]) -> Callable[[], bytes]:
        CASES.append((code, name, fn, via))
        return fn
    return reg


case(ErrorCode.BAD_MAGIC, "magic")(lambda: b"\x89AVQ" + VALID_KV[4:])
case(ErrorCode.BAD_MAGIC, "text_mode_crlf")(lambda: VALID_KV.replace(b"\r\n", b"\n", 1))
case(ErrorCode.UNSUPPORTED_VERSION, "major_2")(lambda: patch(VALID_KV, 8, "<H", 2, False))
case(ErrorCode.TRUNCATED, "last_byte")(lambda: VALID_KV[:-1])
case(ErrorCode.TRUNCATED, "inside_tensor_data")(lambda: VALID_KV[:locate(VALID_KV)["data"][0]])
case(ErrorCode.TRAILING_BYTES, "one_byte")(lambda: VALID_KV + b"\0")
case(ErrorCode.RESERVED_NONZERO, "preamble")(lambda: patch(VALID_KV, 12, "<I", 1, False))
case(ErrorCode.RESERVED_NONZERO, "header_flags")(lambda: text(flags=1))
case(ErrorCode.RESERVED_NONZERO, "descriptor")(lambda: patch(VALID_KV, T0 + 60, "<I", 1))
case(ErrorCode.RESERVED_NONZERO, "entry_flag_bit")(
    lambda: text([entry(32, 4, b"hi", 3)]))
case(ErrorCode.RESERVED_NONZERO, "skippable_flag_on_known_section")(
    lambda: patch(VALID_KV, 16 + 4, "<I", 1))
case(ErrorCode.NONZERO_PADDING, "entry_padding")(
    lambda: text([struct.pack("<HBBI", 32, 1, 4, 2) + b"hi\x01" + bytes(5)]))
case(ErrorCode.NONZERO_PADDING, "before_data")(
    lambda: patch(VALID_KV, locate(VALID_KV)["data"][0] - 1, "<B", 1, False))
case(ErrorCode.NONZERO_PADDING, "packed_tail_bits")(lambda: kv(
    [(desc(0, 0, 1, 8, (1, 1, 3, 1), b"\x21\x03", layout=1), b"\x21\x03"),
     (desc(1, 0, 2, 8, (1, 1, 3, 1), b"\x21\xf3", layout=1), b"\x21\xf3")],
    entries=[MID, entry(5, 1, u64(3), 1)], layers=[layer(0, 1, 0, 3)]))
case(ErrorCode.SECTION_ORDER, "tensor_after_header_says_none")(lambda: kv(count=0))
case(ErrorCode.UNKNOWN_CRITICAL, "metadata_key")(
    lambda: text([entry(32, 4, b"hi", 1), entry(999, 1, u64(1), 1)]))
case(ErrorCode.UNKNOWN_CRITICAL, "section_type")(lambda: assemble(
    header(3, [entry(32, 4, b"hi", 1)], [], 0), [], extra_sections=sec(77, b"x" * 8)))
case(ErrorCode.LENGTH_OVERFLOW, "shape_product")(lambda: _kv_with(
    desc(0, 0, 1, 2, (1, 1 << 62, 8, 2), F16, layout=1, raw_length=16), F16))
case(ErrorCode.LENGTH_OVERFLOW, "layer_token_range")(
    lambda: kv(layers=[layer(0, 3, (1 << 64) - 2, 4)]))
case(ErrorCode.HEADER_LAYOUT, "descriptor_rank_vs_length")(lambda: _kv_with(
    desc(0, 0, 1, 2, (1, 1, 4, 2), F16, layout=1, rank=3), F16))
case(ErrorCode.HEADER_LAYOUT, "header_layer_bytes")(
    lambda: assemble(header(3, [entry(32, 4, b"hi", 1)], [], 0) + bytes(8), []))
case(ErrorCode.BAD_TRAILER, "end_magic")(lambda: VALID_KV[:-1] + b"\x0b")
case(ErrorCode.BAD_TRAILER, "index_offset")(
    lambda: patch(VALID_KV, len(VALID_KV) - 16, "<Q", IDX - 16 + 8, False))
case(ErrorCode.INDEX_MISMATCH, "section_offset")(lambda: patch(VALID_KV, IDX + 8, "<Q", 17))
case(ErrorCode.INDEX_MISMATCH, "tensor_count")(lambda: patch(VALID_KV, IDX, "<Q", 3))
case(ErrorCode.MISALIGNED, "data_offset")(
    lambda: patch(VALID_KV, IDX + 16, "<Q", locate(VALID_KV)["data"][0] + 8))
case(ErrorCode.SECTION_CHECKSUM, "header_byte")(lambda: patch(VALID_KV, 16 + 16 + 30, "<B",
                                                              1, False))
case(ErrorCode.DATA_CHECKSUM, "data_byte")(
    lambda: patch(VALID_KV, locate(VALID_KV)["data"][1], "<B", 0x55, False))
case(ErrorCode.UNKNOWN_KIND, "kind_99")(lambda: text(kind=99))
case(ErrorCode.NON_CANONICAL, "entries_unsorted")(lambda: kv(entries=[CTX4, MID]))
case(ErrorCode.NON_CANONICAL, "nan_payload")(lambda: assemble(header(2, [
    MID, entry(16, 1, u64(2), 1), entry(22, 3, u64(0x7FF8000000000001), 0)], [], 0), []))
case(ErrorCode.NON_CANONICAL, "layer_tensors_out_of_order")(lambda: kv([
    (desc(0, 1, 1, 2, (1, 1, 4, 2), F16, layout=1), F16),
    (desc(1, 0, 1, 2, (1, 1, 4, 2), F16, layout=1), F16)],
    layers=[layer(0, 1, 0, 4), layer(1, 1, 0, 4)]))
case(ErrorCode.ENTRY_TYPE, "context_length_as_i64")(lambda: kv(entries=[MID,
                                                                  entry(5, 2, u64(4), 1)]))
case(ErrorCode.ENTRY_TYPE, "model_id_not_critical")(
    lambda: kv(entries=[entry(1, 5, bytes(32), 0), CTX4]))
case(ErrorCode.INVALID_VALUE, "model_id_31_bytes")(
    lambda: kv(entries=[entry(1, 5, bytes(31), 1), CTX4]))
case(ErrorCode.INVALID_VALUE, "bad_utf8")(lambda: text([entry(32, 4, b"\xff\xfe", 1)]))
case(ErrorCode.INVALID_VALUE, "window_on_full_layer")(
    lambda: kv(layers=[layer(0, 1, 0, 4, window=8)]))
case(ErrorCode.MISSING_ENTRY, "kv_without_context_length")(lambda: kv(entries=[MID]))
case(ErrorCode.ENTRY_NOT_ALLOWED, "text_with_context_length")(
    lambda: text([CTX4, entry(32, 4, b"hi", 1)]))
case(ErrorCode.KIND_CONSTRAINT, "text_with_layer")(lambda: text(layers=[layer(0, 1, 0, 1)]))
case(ErrorCode.KIND_CONSTRAINT, "full_layer_not_ending_at_context")(
    lambda: kv(layers=[layer(0, 1, 0, 3)]))
case(ErrorCode.UNKNOWN_DTYPE, "dtype_99")(lambda: patch(VALID_KV, T0 + 10, "<B", 99))
case(ErrorCode.UNKNOWN_CODEC, "codec_9")(lambda: patch(VALID_KV, T0 + 11, "<B", 9))
case(ErrorCode.UNKNOWN_ROLE, "role_7")(lambda: patch(VALID_KV, T0 + 8, "<H", 7))
case(ErrorCode.UNKNOWN_LAYOUT, "layout_9")(lambda: patch(VALID_KV, T0 + 13, "<B", 9))
case(ErrorCode.SIZE_MISMATCH, "raw_length")(lambda: patch(VALID_KV, T0 + 40, "<Q", 15))
case(ErrorCode.TENSOR_INDEX, "index_5")(lambda: patch(VALID_KV, T0, "<I", 5))
case(ErrorCode.BAD_REFERENCE, "layer_5")(lambda: patch(VALID_KV, T0 + 4, "<I", 5))
case(ErrorCode.ROLE_SHAPE, "hidden_state_in_layer")(
    lambda: patch(VALID_KV, T0 + 8, "<H", int(Role.HIDDEN_STATE)))
case(ErrorCode.ROLE_SHAPE, "key_with_btd")(lambda: patch(VALID_KV, T0 + 13, "<B", 3))
case(ErrorCode.TOKEN_RANGE, "gap")(lambda: _kv_with(
    desc(0, 0, 1, 2, (1, 1, 3, 2), F16[:12], layout=1, token_offset=1), F16[:12]))
case(ErrorCode.TOKEN_RANGE, "sliding_window_overfull")(
    lambda: kv(layers=[layer(0, 2, 0, 4, window=2)]))
case(ErrorCode.CODEC_DTYPE, "byteplane_int8")(lambda: kv([
    (desc(0, 0, 1, 6, (1, 1, 4, 2), _zstd(bytes(8)), layout=1, codec=2), _zstd(bytes(8))),
    (desc(1, 0, 2, 2, (1, 1, 4, 2), F16, layout=1), F16)]))
case(ErrorCode.DECOMPRESSION_FAILED, "garbage_frame")(lambda: _kv_with(
    desc(0, 0, 1, 2, (1, 1, 4, 2), b"notzstd!", layout=1, codec=1), b"notzstd!"))
case(ErrorCode.DECOMPRESSION_FAILED, "trailing_after_frame")(lambda: _kv_with(
    desc(0, 0, 1, 2, (1, 1, 4, 2), _zstd(F16) + b"x", layout=1, codec=1), _zstd(F16) + b"x"))
case(ErrorCode.DECOMPRESSED_SIZE, "short_frame")(lambda: _kv_with(
    desc(0, 0, 1, 2, (1, 1, 4, 2), _zstd(F16[:8]), layout=1, codec=1), _zstd(F16[:8])))
case(ErrorCode.DECOMPRESSED_SIZE, "bomb_without_content_size")(lambda: _kv_with(
    desc(0, 0, 1, 2, (1, 1, 4, 2), zstandard.ZstdCompressor(write_content_size=False).compress(
        bytes(1 << 24)), layout=1, codec=1),
    zstandard.ZstdCompressor(write_content_size=False).compress(bytes(1 << 24))))
case(ErrorCode.QUANT_PARAMS, "fields_without_scheme")(lambda: patch(VALID_KV, T0 + 15, "<B", 1))
case(ErrorCode.QUANT_PARAMS, "missing_scale")(lambda: _kv_with(desc(
    0, 0, 1, 6, (1, 1, 4, 2), bytes(8), layout=1, quant=(1, 3, 0, NOREF, NOREF, 1)), bytes(8)))


def _dict_frame() -> bytes:
    """A zstd frame that names a (trained) dictionary: R-7.13 refuses it."""
    import random
    rnd = random.Random(1)
    samples = [bytes(rnd.choice(b"abcdefghij") for _ in range(200)) for _ in range(400)]
    d = zstandard.train_dictionary(2048, samples)
    return zstandard.ZstdCompressor(dict_data=d).compress(F16)


def _ctx(n: int) -> bytes:
    return entry(5, 1, u64(n), 1)


HID = [MID, entry(16, 1, u64(1), 1)]
PROJ = [MID, entry(16, 1, u64(2), 1), entry(17, 1, u64(1), 1), entry(19, 5, bytes(32), 1),
        entry(20, 5, bytes(32), 1), entry(21, 1, u64(5), 1)]


def hidden(entries: list[bytes], shapes: list[tuple[int, int, int]]) -> bytes:
    ts = [(desc(i, NOREF, 16, 2, sh, bytes(2 * int(np.prod(sh))), layout=3),
           bytes(2 * int(np.prod(sh)))) for i, sh in enumerate(shapes)]
    return assemble(header(2, entries, [], len(ts)), ts)


case(ErrorCode.DECOMPRESSION_FAILED, "dictionary_frame")(lambda: _kv_with(
    desc(0, 0, 1, 2, (1, 1, 4, 2), _dict_frame(), layout=1, codec=1), _dict_frame()))
case(ErrorCode.DECOMPRESSION_FAILED, "two_frames")(lambda: _kv_with(
    desc(0, 0, 1, 2, (1, 1, 4, 2), _zstd(F16) * 2, layout=1, codec=1), _zstd(F16) * 2))
case(ErrorCode.TOKEN_RANGE, "empty_chunk_in_nonempty_layer")(lambda: kv([
    (desc(0, 0, 1, 2, (1, 1, 4, 2), F16, layout=1), F16),
    (desc(1, 0, 1, 2, (1, 1, 0, 2), b"", layout=1, token_offset=4), b""),
    (desc(2, 0, 2, 2, (1, 1, 4, 2), F16, layout=1), F16)]))
case(ErrorCode.TOKEN_RANGE, "chunks_of_different_layouts")(lambda: kv([
    (desc(0, 0, 1, 2, (1, 1, 2, 2), F16[:8], layout=1), F16[:8]),
    (desc(1, 0, 1, 2, (1, 2, 1, 2), F16[:8], layout=2, token_offset=2), F16[:8]),
    (desc(2, 0, 2, 2, (1, 1, 4, 2), F16, layout=1), F16)]))
case(ErrorCode.KIND_CONSTRAINT, "positions_not_context_long")(lambda: kv([
    (desc(0, NOREF, 18, 11, (1, 3), bytes(12), layout=4), bytes(12)),
    (desc(1, 0, 1, 2, (1, 1, 4, 2), F16, layout=1), F16),
    (desc(2, 0, 2, 2, (1, 1, 4, 2), F16, layout=1), F16)]))
case(ErrorCode.KIND_CONSTRAINT, "hidden_states_disagree")(
    lambda: hidden(HID, [(1, 2, 4), (1, 1, 3)]))
case(ErrorCode.MISSING_ENTRY, "projection_without_shared_vocab")(
    lambda: hidden(PROJ[:-1], [(1, 2, 4)]))
case(ErrorCode.ENTRY_NOT_ALLOWED, "proj_key_on_same_model_state")(
    lambda: hidden(HID + [entry(21, 1, u64(5), 1)], [(1, 2, 4)]))
case(ErrorCode.KIND_CONSTRAINT, "kv_layer_without_tensors")(lambda: kv(
    layers=[layer(0, 1, 0, 4), layer(1, 1, 0, 4)]))
case(ErrorCode.ROLE_SHAPE, "batch_sizes_disagree")(lambda: kv([
    (desc(0, 0, 1, 2, (1, 1, 4, 2), F16, layout=1), F16),
    (desc(1, 0, 2, 2, (2, 1, 4, 1), F16, layout=1), F16)]))
case(ErrorCode.TRAILING_BYTES, "after_a_valid_message_only")(lambda: VALID_KV + b"\x89AVP")


def test_valid_projection_and_empty_layer_accepted() -> None:
    assert avp.decode(hidden(PROJ, [(1, 2, 4), (1, 3, 4)])).get(MetaKey.PROJ_SHARED_VOCAB) == 5
    empty = kv([(desc(0, 0, 1, 2, (1, 1, 0, 2), b"", layout=1), b""),
                (desc(1, 0, 2, 2, (1, 1, 0, 2), b"", layout=1), b"")],
               entries=[MID, _ctx(0)], layers=[layer(0, 1, 0, 0)])
    assert avp.decode(empty).tensors[0].shape == (1, 1, 0, 2)


def limit_case(code: ErrorCode, name: str, limits: Limits, *, incremental: bool = False) -> None:
    """A valid message that breaks one lowered limit."""
    via = _incremental(limits) if incremental else decode_with(limits)
    CASES.append((code, name, lambda: VALID_KV, via))


limit_case(ErrorCode.LIMIT_MESSAGE, "max_message", Limits(max_message_bytes=100))
limit_case(ErrorCode.LIMIT_HEADER, "max_header", Limits(max_header_bytes=32))
limit_case(ErrorCode.LIMIT_ENTRIES, "max_entries", Limits(max_entries=1))
limit_case(ErrorCode.LIMIT_LAYERS, "max_layers", Limits(max_layers=0))
limit_case(ErrorCode.LIMIT_TENSORS, "max_tensors", Limits(max_tensors=1))
limit_case(ErrorCode.LIMIT_RANK, "max_rank", Limits(max_rank=3))
limit_case(ErrorCode.LIMIT_TENSOR, "max_tensor", Limits(max_tensor_bytes=15))
limit_case(ErrorCode.LIMIT_BUFFER, "max_buffer", Limits(max_buffer_bytes=64), incremental=True)
limit_case(ErrorCode.LIMIT_MESSAGE, "incremental_max_message", Limits(max_message_bytes=64),
           incremental=True)
case(ErrorCode.LIMIT_TENSOR, "huge_declared_raw_length")(
    lambda: patch(VALID_KV, T0 + 40, "<Q", 1 << 40))

@pytest.mark.parametrize("code,name,make,via", CASES,
                         ids=[f"{c.name}-{n}" for c, n, _, _ in CASES])
def test_decoder_rejects(code: ErrorCode, name: str, make: Callable[[], bytes],
                         via: Callable[[bytes], object]) -> None:
    data = make()
    with pytest.raises(AvpError) as ei:
        via(data)
    assert ei.value.code == code, str(ei.value)
    if via is avp.decode:  # the incremental decoder agrees on the code (one-fault inputs)
        d = avp.Decoder()
        with pytest.raises(AvpError) as ei2:
            for i in range(0, len(data), 7):
                d.feed(data[i:i + 7])
                while d.next_event() is not avp.NEED_DATA:
                    pass
            d.end_of_input()
            while True:
                d.next_event()
        assert ei2.value.code == code, str(ei2.value)


# -- authentication (spec 15) -----------------------------------------------------------------
def _authed() -> bytes:
    return avp.encode(avp.text_message("hi"), auth_key=(b"k1", b"secret"))


AUTH_CASES: list[tuple[ErrorCode, str, Callable[[], object]]] = [
    (ErrorCode.AUTH_REQUIRED, "no_key_id",
     lambda: avp.decode(avp.encode(avp.text_message("hi")), keys={b"k1": b"secret"},
                        require_auth=True)),
    (ErrorCode.UNKNOWN_KEY, "key_not_held",
     lambda: avp.decode(_authed(), keys={b"other": b"x"}, require_auth=True)),
    (ErrorCode.AUTH_FAILED, "wrong_key",
     lambda: avp.decode(_authed(), keys={b"k1": b"not the secret"})),
    (ErrorCode.AUTH_FAILED, "tampered_tag",
     lambda: avp.decode(patch(_authed(), len(_authed()) - 16 - 8 - 4, "<B", 0),
                        keys={b"k1": b"secret"})),
]

# -- handshake helpers (spec 10.4, 14.3) ------------------------------------------------------
_MID_A, _MID_B = b"A" * 32, b"B" * 32


def _kv_for(mid: bytes) -> avp.Message:
    k = np.zeros((1, 1, 2, 2), np.float16)
    return avp.kv_cache_from_arrays(mid, [k], [k])


HANDSHAKE_CASES: list[tuple[ErrorCode, str, Callable[[], object]]] = [
    (ErrorCode.MODEL_MISMATCH, "kv_for_other_model",
     lambda: avp.check_model_id(avp.decode(avp.encode(_kv_for(_MID_B))), _MID_A)),
    (ErrorCode.NO_COMMON_VERSION, "major_1_vs_2",
     lambda: avp.resolve_mode(avp.hello_message("a", versions=[0x10000]),
                              avp.hello_message("b", versions=[0x20000]))),
    (ErrorCode.NEGOTIATION_MISMATCH, "accept_claims_kv",
     lambda: avp.check_accept(avp.hello_message("a", model_id=_MID_A),
                              avp.accept_message("b", avp.Mode.KV_CACHE, model_id=_MID_B))),
    (ErrorCode.UNSUPPORTED_CAPABILITY, "dtype_not_offered",
     lambda: avp.check_capabilities(_kv_for(_MID_A), avp.hello_message(
         "b", dtypes=[Dtype.FLOAT32]))),
    (ErrorCode.UNSUPPORTED_CAPABILITY, "too_large",
     lambda: avp.check_capabilities(_kv_for(_MID_A), avp.hello_message(
         "b", max_message_bytes=100), encoded_length=101)),
]

# -- the encoder refuses what the decoder would refuse -----------------------------------------
ENCODER_CASES: list[tuple[ErrorCode, str, Callable[[], object]]] = [
    (ErrorCode.MISSING_ENTRY, "kv_without_model_id",
     lambda: avp.encode(avp.Message(avp.Kind.KV_CACHE, [Entry.of(MetaKey.CONTEXT_LENGTH, 1)],
                                    [Layer(0, LayerKind.FULL_ATTENTION, 0, 1)]))),
    (ErrorCode.NON_CANONICAL, "duplicate_key",
     lambda: avp.encode(avp.text_message("a", extra=[Entry.of(MetaKey.TEXT, "b")]))),
    (ErrorCode.INVALID_VALUE, "u64_negative",
     lambda: avp.encode(avp.error_message(1, extra=[Entry(1000, avp.ValueType.U64, -1,
                                                          False)]))),
    (ErrorCode.CODEC_DTYPE, "byteplane_int8",
     lambda: Tensor.from_array(np.zeros(4, np.int8), Role.CONV_STATE,
                               codec=Codec.BYTEPLANE_ZSTD)),
    (ErrorCode.TOKEN_RANGE, "tiling_gap", lambda: avp.encode(avp.kv_cache_message(
        _MID_A, 4, [Layer(0, LayerKind.FULL_ATTENTION, 0, 4)],
        [Tensor.from_array(np.zeros((1, 1, 3, 2), np.float16), Role.KEY, ordinal=0,
                           layout=Layout.BHTD)]))),
    (ErrorCode.UNKNOWN_DTYPE, "float64_array",
     lambda: Tensor.from_array(np.zeros(2), Role.CONV_STATE)),
]


@pytest.mark.parametrize("code,name,run", AUTH_CASES + HANDSHAKE_CASES + ENCODER_CASES,
                         ids=[f"{c.name}-{n}" for c, n, _ in
                              AUTH_CASES + HANDSHAKE_CASES + ENCODER_CASES])
def test_api_rejects(code: ErrorCode, name: str, run: Callable[[], object]) -> None:
    with pytest.raises(AvpError) as ei:
        run()
    assert ei.value.code == code, str(ei.value)


def test_every_code_has_a_trigger() -> None:
    triggered = {c for c, *_ in CASES} | {c for c, *_ in AUTH_CASES + HANDSHAKE_CASES}
    missing = sorted(c.name for c in ErrorCode if c not in triggered)
    assert not missing, f"error codes without a trigger test: {missing}"


def test_errors_carry_offset_and_path() -> None:
    bad = patch(VALID_KV, T0 + 10, "<B", 99)
    with pytest.raises(AvpError) as ei:
        avp.decode(bad)
    assert ei.value.offset == T0 + 10 and ei.value.path == "tensor[0].dtype"
