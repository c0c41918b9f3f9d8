"""TENSOR sections: descriptor (7.1), data placement (5) and the data checks (7.4, 7.8, 7.12).

The descriptor's byte layout (length, reserved bytes, tensor_index, registered codes, the
quantization fields on their own) is read here in the decoder's order, with its offsets and
paths. Every rule that relates fields, tensors, layers and the kind (sizes, roles and layouts,
token ranges, quantization references, R-10.x, tiling) is the codec's own ``TensorChecker``,
fed the same ``Tensor`` the decoder builds, so the walker and ``avp_codec.decode`` cannot
disagree on them. After the first tensor the checker refuses, the walker keeps checking each
later tensor on its own (the checker's standalone mode, as a random-access read does) instead
of stopping.
"""

from __future__ import annotations

import struct

import crc32c
import zstandard

import avp_codec as avp
from avp_codec import _dtypes, _validate
from avp_codec.model import Tensor

from . import _spec as S
from ._ctx import Ctx
from ._model import SpanKind, TensorInfo
from ._walk_header import HeaderState

_CHUNK = 1 << 20  # data is CRC'd and decompressed in pieces of this size
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DTYPES = {int(m): m for m in avp.Dtype}
_CODECS = {int(m): m for m in avp.Codec}
_ROLES = {int(m): m for m in avp.Role}
_LAYOUTS = {int(m): m for m in avp.Layout}
_SCHEMES = {int(m): m for m in avp.QuantScheme}
# The fixed 64 bytes of a descriptor (spec 7.1) in one unpack, and its fields for the byte map.
_FIXED = struct.Struct("<IIHBBBBBBIIIB3sQQQI4s")
_FIELDS = ((0, 4, "tensor_index"), (4, 4, "layer"), (8, 2, "role"), (10, 1, "dtype"),
           (11, 1, "codec"), (12, 1, "rank"), (13, 1, "layout"), (14, 1, "quant_scheme"),
           (15, 1, "quant_axis"), (16, 4, "group_size"), (20, 4, "scale_tensor"),
           (24, 4, "zero_point_tensor"), (28, 1, "dequant_dtype"), (29, 3, "reserved"),
           (32, 8, "token_offset"), (40, 8, "raw_length"), (48, 8, "stored_length"),
           (56, 4, "data_crc"), (60, 4, "reserved2"))
assert _FIXED.size == S.DESCRIPTOR_FIXED
_SHAPES = [struct.Struct(f"<{r}Q") for r in range(256)]


class Checker:
    """The codec's TensorChecker for one message, and what to do once it has refused."""

    def __init__(self, st: HeaderState) -> None:
        self.st = st
        self.full: _validate.TensorChecker | None = None
        if st.kind is not None and st.layers is not None:
            self.full = _validate.TensorChecker(st.kind, st.layers, st.context_length)
        self.broken = False

    def check(self, ctx: Ctx, t: Tensor, ordinal: int, off: int) -> None:
        st = self.st
        if st.kind is None or st.layers is None:
            return
        checker = self.full
        if self.broken or checker is None:
            checker = _validate.TensorChecker(st.kind, st.layers, st.context_length,
                                              standalone_index=ordinal)
        try:
            checker.check(t, off)
        except avp.AvpError as exc:
            ctx.error(exc)
            self.broken = True

    def finish(self, ctx: Ctx, off: int) -> None:
        if self.full is None or self.broken:
            return
        try:
            self.full.finish(off)
        except avp.AvpError as exc:
            ctx.error(exc)


def tensor_descriptor(ctx: Ctx, checker: Checker, ordinal: int, start: int, b0: int,
                      b1: int) -> TensorInfo | None:
    sec = f"tensor[{ordinal}]"
    length = b1 - b0
    if length < S.DESCRIPTOR_FIXED:
        ctx.issue("HEADER_LAYOUT", b0, sec, "R-7.1",
                  f"descriptor is {length} bytes, the fixed part alone is 64")
        ctx.span(b0, length, f"{sec}.descriptor", sec, "7.1", SpanKind.UNPARSED)
        return None

    (tensor_index, layer, role, dtype, codec, rank, layout, qs, qa, gs, st, zt, dq, r1, tok, raw,
     stored, crc, r2) = _FIXED.unpack_from(ctx.buf, b0)
    dims = min(rank, (length - S.DESCRIPTOR_FIXED) // 8)
    shape: tuple[int, ...] = _SHAPES[dims].unpack_from(ctx.buf, b0 + 64)
    if ctx.sink is not None:  # one span per field, in offset order (--map / --hex / --explain)
        values = (tensor_index, layer, role, dtype, codec, rank, layout, qs, qa, gs, st, zt, dq,
                  r1, tok, raw, stored, crc, r2)
        for (off, size, name), value in zip(_FIELDS, values, strict=True):
            ctx.span(b0 + off, size, f"{sec}.{name}", sec, "7.1", SpanKind.FIELD, value)
        for k, d in enumerate(shape):
            ctx.span(b0 + 64 + 8 * k, 8, f"{sec}.shape[{k}]", sec, "7.1", SpanKind.FIELD, d)
        if length > S.DESCRIPTOR_FIXED + 8 * dims:
            rest = b0 + S.DESCRIPTOR_FIXED + 8 * dims
            ctx.span(rest, b1 - rest, f"{sec}.excess", sec, "7.1", SpanKind.UNPARSED)
    t = TensorInfo(ordinal, start, tensor_index, layer, role, dtype, codec, rank, layout, qs, qa,
                   gs, st, zt, dq, tok, raw, stored, crc, shape)
    ctx.walk.tensors.append(t)
    # Step T of spec 9.2, in the decoder's order: layout of the descriptor itself, registered
    # codes, the quantization fields, then the codec's rules.
    if r1 != b"\0\0\0" or r2 != b"\0\0\0\0":
        ctx.issue("RESERVED_NONZERO", b0 + 29, sec, "R-1.2",
                  "reserved descriptor bytes are not zero")
    if length != S.DESCRIPTOR_FIXED + 8 * rank:
        ctx.issue("HEADER_LAYOUT", b0, sec, "R-7.1",
                  f"descriptor is {length} bytes, rank {rank} needs {64 + 8 * rank}")
    if tensor_index != ordinal:
        ctx.issue("TENSOR_INDEX", b0, f"{sec}.tensor_index", "7.1",
                  f"tensor_index {tensor_index} in tensor number {ordinal}")
    registered = True
    for code, table, off, what, err in (
            (dtype, _DTYPES, 10, "dtype", "UNKNOWN_DTYPE"),
            (codec, _CODECS, 11, "codec", "UNKNOWN_CODEC"),
            (role, _ROLES, 8, "role", "UNKNOWN_ROLE"),
            (layout, _LAYOUTS, 13, "layout", "UNKNOWN_LAYOUT")):
        if code not in table:
            ctx.issue(err, b0 + off, f"{sec}.{what}", "R-7.5", f"unregistered {what} {code}")
            registered = False
    quant, quant_ok = _quant_fields(ctx, t, b0)
    if registered and quant_ok and len(shape) == rank:
        tensor = Tensor._pending(_ROLES[role], _DTYPES[dtype], shape,
                                 None if layer == S.NO_REF else layer, _CODECS[codec],
                                 _LAYOUTS[layout], tok, quant, raw, stored, crc)
        checker.check(ctx, tensor, ordinal, b0)
    return t


def _quant_fields(ctx: Ctx, t: TensorInfo, b0: int) -> tuple[avp.Quant | None, bool]:
    """The descriptor's quantization fields on their own (the decoder's three checks), then the
    codec's Quant for them: (quant or None, whether they are usable)."""
    sec = f"tensor[{t.ordinal}]"
    if t.quant_scheme == 0:
        if (t.scale_tensor, t.zero_point_tensor) != (S.NO_REF, S.NO_REF) or (
                t.quant_axis or t.group_size or t.dequant_dtype):
            ctx.issue("QUANT_PARAMS", b0 + 14, f"{sec}.quant_scheme", "R-12.1",
                      "quantization fields set on an unquantized tensor")
            return None, False
        return None, True
    if t.quant_scheme not in _SCHEMES:
        ctx.issue("QUANT_PARAMS", b0 + 14, f"{sec}.quant_scheme", "R-12.1",
                  f"unregistered quant scheme {t.quant_scheme}")
        return None, False
    if t.dequant_dtype not in _DTYPES:
        ctx.issue("QUANT_PARAMS", b0 + 28, f"{sec}.dequant_dtype", "R-12.1",
                  f"unregistered dequant_dtype {t.dequant_dtype}")
        return None, False
    ref = (None if t.scale_tensor == S.NO_REF else t.scale_tensor,
           None if t.zero_point_tensor == S.NO_REF else t.zero_point_tensor)
    return avp.Quant(_SCHEMES[t.quant_scheme], t.quant_axis, t.group_size, ref[0], ref[1],
                     _DTYPES[t.dequant_dtype]), True


def tensor_data(ctx: Ctx, t: TensorInfo, pos: int) -> int | None:
    """Place the tensor's data after its section (steps T.15 - T.19); returns the next
    section's offset, or None when the input ends first."""
    sec = f"tensor[{t.ordinal}]"
    data = pos + S.pad64(pos)
    end = data + t.stored_length
    nxt = end + S.pad8(t.stored_length)
    t.data_offset = data
    table = ctx.walk.tensors
    if nxt > S.U64_MAX:  # T.15: only reachable with raised limits
        ctx.issue("LENGTH_OVERFLOW", t.section_offset, f"{sec}.stored_length", "R-1.1",
                  f"the data would end at {nxt}, past 2^64 - 1")
    if nxt > ctx.n:
        ctx.issue("TRUNCATED", pos, "", "5",
                  f"{sec}: {t.stored_length} data bytes (+ padding) run past the end of the input")
        ctx.padding(pos, min(data, ctx.n) - pos, f"{sec}.pad64", sec, "5", sec)
        if data < ctx.n:
            ctx.span(data, ctx.n - data, f"{sec}.data", sec, "5", SpanKind.DATA)
        t.crc_status = "missing"
        table.update(t.ordinal, data_offset=data, crc_status="missing")
        return None
    before = len(ctx.walk.issues) + ctx.walk.issues_dropped
    ctx.padding(pos, data - pos, f"{sec}.pad64", sec, "5", sec)
    ctx.span(data, t.stored_length, f"{sec}.data", sec, "5", SpanKind.DATA)
    if ctx.verify_data:
        _check_crc(ctx, t)
    ctx.padding(end, nxt - end, f"{sec}.pad8", sec, "5", sec)
    if ctx.verify_data:
        _check_codec(ctx, t)
    t.end_offset = nxt
    # data_ok: present, its frame and padding good (the CRC is separate: crc_status), so
    # diff can still compare the values of a tensor whose only fault is its checksum
    added = len(ctx.walk.issues) + ctx.walk.issues_dropped - before
    t.data_ok = ctx.verify_data and added == (1 if t.crc_status == "BAD" else 0)
    table.update(t.ordinal, data_offset=data, end_offset=nxt, crc_status=t.crc_status,
                 data_ok=t.data_ok)
    return nxt


def _check_crc(ctx: Ctx, t: TensorInfo) -> None:
    data = ctx.buf[t.data_offset:t.data_offset + t.stored_length]
    crc = 0
    for i in range(0, len(data), _CHUNK):
        crc = crc32c.crc32c(data[i:i + _CHUNK], crc)
    t.crc_status = "ok" if crc == t.data_crc else "BAD"
    if crc != t.data_crc:
        ctx.issue("DATA_CHECKSUM", t.data_offset, f"tensor[{t.ordinal}].data", "R-7.4",
                  f"data_crc is {t.data_crc:08x}, the stored bytes give {crc:08x}")


def _check_codec(ctx: Ctx, t: TensorInfo) -> None:
    """Step T.19: the zstd frame, then the zero tail of packed sub-byte dtypes (R-7.12)."""
    data = ctx.buf[t.data_offset:t.data_offset + t.stored_length]
    dtype = _DTYPES.get(t.dtype)
    if t.codec in (1, 2):
        last = _check_frame(ctx, t, data)
        if last is None:
            return
        tail: bytes | memoryview = bytes(last)
    elif t.codec == 0:
        tail = data
    elif t.codec in _CODECS and dtype is not None and len(t.shape) == t.rank:
        _check_by_codec(ctx, t, data, dtype)  # floatplane_zstd: float dtypes only, no tail
        return
    else:
        return
    if dtype is None or dtype not in _dtypes.PACKED or len(t.shape) != t.rank:
        return
    if not _dtypes.packed_tail_ok(tail, dtype, _elements(t.shape)):
        ctx.issue("NONZERO_PADDING", t.data_offset + t.stored_length - 1,
                  f"tensor[{t.ordinal}].data", "R-7.12",
                  "unused high bits of the last packed byte are not zero")


def _check_by_codec(ctx: Ctx, t: TensorInfo, data: memoryview, dtype: avp.Dtype) -> None:
    """A codec whose stream rules only its decoder can check (floatplane_zstd, R-7.16: its
    streams are not bytes a walker can check in passing): the codec's own decompress, whose
    error becomes the issue at the decoder's offset. It holds the tensor's raw bytes
    (raw_length) while it runs; tools/README.md, "Memory", says so."""
    from avp_codec import _codecs

    if _codecs.dtype_error(_CODECS[t.codec], dtype):
        return  # CODEC_DTYPE, already reported by the codec's checker
    try:
        _codecs.decompress(data, _CODECS[t.codec], t.raw_length, dtype, tuple(t.shape),
                           f"tensor[{t.ordinal}].data")
    except avp.AvpError as exc:
        ctx.issue(exc.code.name, t.data_offset, exc.path, "R-7.16"
                  if exc.code == avp.ErrorCode.DECOMPRESSION_FAILED else "R-7.13", exc.detail)


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def frame_end(data: memoryview) -> int | None:
    """Length of the zstd frame at data[0] by walking its block headers (RFC 8878 3.1.1), or
    None when the bytes cannot be one frame.  Nothing is decompressed."""
    if len(data) < 6:
        return None
    try:
        pos = zstandard.frame_header_size(bytes(data[:18]))
    except zstandard.ZstdError:
        return None
    while True:
        if pos + 3 > len(data):
            return None
        head = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        kind, size = (head >> 1) & 3, head >> 3
        if kind == 3:
            return None
        pos += 3 + (1 if kind == 1 else size)
        if head & 1:
            break
    pos += 4 if data[4] & 0x04 else 0  # content checksum
    return pos if pos <= len(data) else None


def _check_frame(ctx: Ctx, t: TensorInfo, data: memoryview) -> bytes | None:
    """R-7.8 / R-7.13: exactly one zstd frame producing raw_length bytes, checked in the order
    of the codec's decompress. Decompressed in reads of at most 1 MiB, keeping nothing but the
    last byte, and stopped as soon as the output passes raw_length (a decompression bomb costs
    one read). Returns the last raw byte (empty for an empty tensor) when good."""
    path = f"tensor[{t.ordinal}].data"

    def failed(why: str) -> None:
        ctx.issue("DECOMPRESSION_FAILED", t.data_offset, path, "R-7.13", why)

    if len(data) < 6 or bytes(data[:4]) != _ZSTD_MAGIC:
        failed("stored bytes do not start with a zstd frame")
        return None
    end = frame_end(data)
    if end is None:
        failed("stored bytes are not one complete zstd frame")
        return None
    if end != len(data):
        failed(f"{len(data) - end} bytes follow the zstd frame")
        return None
    try:
        params = zstandard.get_frame_parameters(bytes(data[:18]))
    except zstandard.ZstdError as exc:  # e.g. reserved bits set in the frame header descriptor
        failed(f"the zstd frame header is invalid: {exc}")
        return None
    if params.dict_id:
        failed(f"the frame needs dictionary {params.dict_id}")
        return None
    if params.content_size not in (zstandard.CONTENTSIZE_UNKNOWN, t.raw_length):
        ctx.issue("DECOMPRESSED_SIZE", t.data_offset, path, "R-7.13",
                  f"frame declares {params.content_size} bytes, raw_length is {t.raw_length}")
        return None
    total, last = 0, b""
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False)
        while total <= t.raw_length:
            out = reader.read(min(_CHUNK, t.raw_length + 1 - total))
            if not out:
                break
            total += len(out)
            last = out[-1:]
    except zstandard.ZstdError as exc:
        failed(f"stored bytes are not a valid zstd frame: {exc}")
        return None
    if total != t.raw_length:
        got = f"more than {t.raw_length}" if total > t.raw_length else str(total)
        ctx.issue("DECOMPRESSED_SIZE", t.data_offset, path, "R-7.8",
                  f"frame decompresses to {got} bytes, raw_length is {t.raw_length}")
        return None
    # For byteplane_zstd the last decompressed byte is not the last raw byte, but the codec
    # only carries 16/32/64-bit dtypes, which have no packed tail to check.
    return last
