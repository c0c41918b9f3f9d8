"""TENSOR sections: descriptor (7.1), data placement (5), quantization (12), and the checks that
need every tensor (token tiling 7.7, KV_CACHE consistency 10.4, quant references 12)."""

from __future__ import annotations

import crc32c
import zstandard

from . import _spec as S
from ._ctx import Ctx
from ._model import SpanKind, TensorInfo

_CHUNK = 1 << 20  # data is CRC'd in pieces of this size
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def tensor_descriptor(ctx: Ctx, ordinal: int, start: int, b0: int, b1: int) -> TensorInfo | None:
    sec = f"tensor[{ordinal}]"
    length = b1 - b0
    if length < S.DESCRIPTOR_FIXED:
        ctx.issue("HEADER_LAYOUT", start + 8, f"{sec}.section.length", "R-7.1",
                  f"descriptor is {length} bytes, the fixed part alone is 64")
        ctx.span(b0, length, f"{sec}.descriptor", sec, "7.1", SpanKind.UNPARSED)
        return None

    def f(off: int, size: int, name: str) -> int:
        return ctx.field(b0 + off, size, f"{sec}.{name}", sec, "7.1")

    tensor_index, layer, role = f(0, 4, "tensor_index"), f(4, 4, "layer"), f(8, 2, "role")
    dtype, codec, rank, layout = f(10, 1, "dtype"), f(11, 1, "codec"), f(12, 1, "rank"), f(
        13, 1, "layout")
    qs, qa, gs = f(14, 1, "quant_scheme"), f(15, 1, "quant_axis"), f(16, 4, "group_size")
    st, zt, dq = f(20, 4, "scale_tensor"), f(24, 4, "zero_point_tensor"), f(28, 1,
                                                                            "dequant_dtype")
    ctx.span(b0 + 29, 3, f"{sec}.reserved", sec, "7.1", SpanKind.FIELD,
             bytes(ctx.buf[b0 + 29:b0 + 32]))
    tok, raw, stored = f(32, 8, "token_offset"), f(40, 8, "raw_length"), f(48, 8,
                                                                          "stored_length")
    crc = f(56, 4, "data_crc")
    ctx.span(b0 + 60, 4, f"{sec}.reserved2", sec, "7.1", SpanKind.FIELD,
             bytes(ctx.buf[b0 + 60:b0 + 64]))
    dims = min(rank, (length - S.DESCRIPTOR_FIXED) // 8)
    shape = tuple(f(64 + 8 * k, 8, f"shape[{k}]") for k in range(dims))
    t = TensorInfo(ordinal, start, tensor_index, layer, role, dtype, codec, rank, layout, qs, qa,
                   gs, st, zt, dq, tok, raw, stored, crc, shape)
    # The checks run in the order of spec 9.2 (steps T.1 - T.14), so the first issue is the
    # code a conforming decoder reports.  The limits (step S.5) were checked with the frame.
    for off, size, name in ((29, 3, "reserved"), (60, 4, "reserved2")):
        if any(ctx.buf[b0 + off:b0 + off + size]):
            ctx.issue("RESERVED_NONZERO", b0 + off, f"{sec}.{name}", "R-1.2",
                      "reserved descriptor bytes are not zero")
    if length != S.DESCRIPTOR_FIXED + 8 * rank:
        ctx.issue("HEADER_LAYOUT", start + 8, f"{sec}.section.length", "R-7.1",
                  f"descriptor is {length} bytes, rank {rank} needs {64 + 8 * rank}")
    if tensor_index != ordinal:
        ctx.issue("TENSOR_INDEX", b0, f"{sec}.tensor_index", "7.1",
                  f"tensor_index {tensor_index} in tensor number {ordinal}")
    _registered(ctx, t, b0)
    _quant_fields(ctx, t, b0)
    w = ctx.walk
    if t.layer != S.NO_REF and t.layer >= (w.layer_count or 0):
        ctx.issue("BAD_REFERENCE", b0 + 4, f"{sec}.layer",
                  "R-7.6", f"layer {t.layer} but the layer table has {w.layer_count or 0} entries")
    _size(ctx, t, b0)
    dt = S.DTYPES.get(t.dtype)
    if t.codec == 2 and dt is not None and dt.bits not in (16, 32, 64):
        ctx.issue("CODEC_DTYPE", b0 + 11, f"{sec}.codec", "R-7.9",
                  f"byteplane_zstd needs a 16/32/64-bit dtype, {dt.name} has {dt.bits} bits")
    if t.codec == 3 and dt is not None and dt.name not in ("float32", "float16", "bfloat16"):
        ctx.issue("CODEC_DTYPE", b0 + 11, f"{sec}.codec", "R-7.16",
                  f"floatplane_zstd needs float32, float16 or bfloat16, not {dt.name}")
    _placement(ctx, t, b0)
    _quant(ctx, t, b0)
    _tokens(ctx, t, b0)
    _kind_roles(ctx, t)
    ctx.walk.tensors.append(t)
    return t


def _tokens(ctx: Ctx, t: TensorInfo, b0: int) -> None:
    """Step T.13: token_offset of non-token tensors, ranges past the layer, R-7.10."""
    sec = f"tensor[{t.ordinal}]"
    info = S.ROLES.get(t.role)
    axis = S.LAYOUT_TOKEN_AXIS.get(t.layout)
    if info is None:
        return
    layers = ctx.walk.layers
    if not info.tokens or axis is None or t.layer == S.NO_REF or t.layer >= len(layers):
        if t.token_offset != 0:
            ctx.issue("TOKEN_RANGE", b0 + 32, f"{sec}.token_offset", "R-7.7",
                      f"{info.name} tensors carry no token axis here; token_offset must be 0, "
                      f"is {t.token_offset}")
        return
    if len(t.shape) <= axis:
        return  # a rank problem, already reported as ROLE_SHAPE
    held = layers[t.layer].token_count
    n = t.shape[axis]
    if t.token_offset + n > S.U64_MAX:
        ctx.issue("LENGTH_OVERFLOW", b0 + 32, f"{sec}.token_offset", "R-7.7",
                  "token_offset + token count overflows u64")
    elif t.token_offset + n > held:
        ctx.issue("TOKEN_RANGE", b0 + 32, f"{sec}.token_offset", "R-7.7",
                  f"tokens [{t.token_offset}, {t.token_offset + n}) run past the layer's "
                  f"token_count {held}")
    elif held and n == 0:
        ctx.issue("TOKEN_RANGE", b0 + 64 + 8 * axis, f"{sec}.shape[{axis}]", "R-7.10",
                  "a token tensor of a non-empty layer has a token axis of length 0")


def _kind_roles(ctx: Ctx, t: TensorInfo) -> None:
    """The roles a message kind carries, and R-10.3 (section 10)."""
    w = ctx.walk
    sec = f"tensor[{t.ordinal}]"
    info = S.KINDS.get(w.kind if w.kind is not None else -1)
    if info is None or t.role not in S.ROLES:
        return
    if t.role not in info.tensor_roles:
        ctx.issue("KIND_CONSTRAINT", t.section_offset, f"{sec}.role", "10",
                  f"{S.KIND_NAMES[w.kind or 0]} messages carry no {S.role_name(t.role)} tensor")
        return
    if (w.kind == S.KIND_KV_CACHE and t.role in S.CONTEXT_ROLES
            and any(p.role == t.role for p in w.tensors)):
        ctx.issue("KIND_CONSTRAINT", t.section_offset, f"{sec}.role", "R-10.14",
                  f"a KV_CACHE message carries at most one {S.role_name(t.role)} tensor")
    ce = w.entry(S.KEY_CONTEXT_LENGTH)
    if (w.kind == S.KIND_KV_CACHE and t.role in S.CONTEXT_ROLES and ce is not None
            and isinstance(ce.value, int) and (len(t.shape) != 2 or t.shape[1] != ce.value)):
        ctx.issue("KIND_CONSTRAINT", t.section_offset, f"{sec}.shape",
                  "R-10.3" if t.role == S.ROLE_TOKEN_IDS else "R-10.6",
                  f"{S.role_name(t.role)} must be [batch, CONTEXT_LENGTH={ce.value}], is "
                  f"{list(t.shape)}")
    if w.kind == S.KIND_HIDDEN_STATE:
        _hidden_consistency(ctx, t)


def _hidden_consistency(ctx: Ctx, t: TensorInfo) -> None:
    """R-10.10: HIDDEN_STATE tensors agree on batch and hidden size, the TOKEN_IDS on batch;
    at most one TOKEN_IDS (R-10.14)."""
    sec = f"tensor[{t.ordinal}]"
    earlier = [p for p in ctx.walk.tensors if p.role == t.role]
    if t.role == S.ROLE_TOKEN_IDS and earlier:
        ctx.issue("KIND_CONSTRAINT", t.section_offset, f"{sec}.role", "R-10.14",
                  "a HIDDEN_STATE message carries at most one TOKEN_IDS tensor")
    pair = (S.ROLE_HIDDEN_STATE, S.ROLE_TOKEN_IDS)
    other = next((p for p in ctx.walk.tensors if p.role in pair and p.role != t.role
                  and p.shape), None)
    if t.role in pair and t.shape and other is not None and other.shape[0] != t.shape[0]:
        ctx.issue("KIND_CONSTRAINT", t.section_offset, f"{sec}.shape[0]", "R-10.10",
                  f"batch {t.shape[0]} differs from tensor {other.ordinal}'s {other.shape[0]}")
    if t.role == S.ROLE_HIDDEN_STATE and earlier and len(t.shape) == 3:
        first = earlier[0]
        if len(first.shape) == 3 and (first.shape[0], first.shape[2]) != (t.shape[0],
                                                                           t.shape[2]):
            ctx.issue("KIND_CONSTRAINT", t.section_offset, f"{sec}.shape", "R-10.10",
                      f"HIDDEN_STATE shape {list(t.shape)} disagrees with tensor "
                      f"{first.ordinal}'s {list(first.shape)} on batch or hidden size")


def _registered(ctx: Ctx, t: TensorInfo, b0: int) -> None:
    sec = f"tensor[{t.ordinal}]"
    for code, table, off, what, err in (
            (t.dtype, S.DTYPES, 10, "dtype", "UNKNOWN_DTYPE"),
            (t.codec, S.CODEC_NAMES, 11, "codec", "UNKNOWN_CODEC"),
            (t.role, S.ROLES, 8, "role", "UNKNOWN_ROLE"),
            (t.layout, S.LAYOUT_NAMES, 13, "layout", "UNKNOWN_LAYOUT")):
        if code not in table:
            ctx.issue(err, b0 + off, f"{sec}.{what}", "R-7.5", f"unregistered {what} {code}")


def _placement(ctx: Ctx, t: TensorInfo, b0: int) -> None:
    """The role's layout / rank / level / dtype / layer kind, then canonical tensor order."""
    w = ctx.walk
    sec = f"tensor[{t.ordinal}]"
    info = S.ROLES.get(t.role)
    why = None
    if info is None or t.layout not in S.LAYOUT_NAMES:
        pass
    elif t.layout not in info.layouts:
        why = f"{info.name} does not allow layout {S.LAYOUT_NAMES[t.layout]}"
    elif info.rank is not None and t.rank != info.rank:
        why = f"{info.name} needs rank {info.rank}, has {t.rank}"
    elif not (info.message_level if t.layer == S.NO_REF else info.layer_level):
        why = (f"{info.name} is not allowed "
               f"{'at message level' if t.layer == S.NO_REF else 'on a layer'}")
    elif t.role in S.ROLE_DTYPES and t.dtype in S.DTYPES and t.dtype not in S.ROLE_DTYPES[t.role]:
        why = f"{info.name} does not allow dtype {S.dtype_name(t.dtype)}"
    elif t.layer < len(w.layers) and t.role not in (S.ROLE_QUANT_SCALE, S.ROLE_QUANT_ZERO_POINT):
        lk = w.layers[t.layer].layer_kind
        recurrent_role = t.role in S.RECURRENT_ROLES
        if lk in S.LAYER_KIND_NAMES and (lk == 3) != recurrent_role:
            why = f"{info.name} does not fit a {S.LAYER_KIND_NAMES[lk]} layer"
    if why:
        ctx.issue("ROLE_SHAPE", b0 + 8, f"{sec}.role", "R-7.5", why)
    if w.tensors:
        prev = w.tensors[-1].layer
        if prev != S.NO_REF and (t.layer == S.NO_REF or t.layer < prev):
            ctx.issue("NON_CANONICAL", b0 + 4, f"{sec}.layer", "R-7.6",
                      "tensors must be message-level first, then in non-decreasing layer order")


def _size(ctx: Ctx, t: TensorInfo, b0: int) -> None:
    sec = f"tensor[{t.ordinal}]"
    dt = S.DTYPES.get(t.dtype)
    if dt is None or len(t.shape) != t.rank:
        return
    elements = 1
    for d in t.shape:
        elements *= d
    if elements > S.U64_MAX or elements * dt.bits > S.U64_MAX * 8:
        ctx.issue("LENGTH_OVERFLOW", b0 + 64, f"{sec}.shape", "R-7.2",
                  "the element count of the shape overflows u64")
        return
    want = (elements * dt.bits + 7) // 8
    if t.raw_length != want:
        ctx.issue("SIZE_MISMATCH", b0 + 40, f"{sec}.raw_length", "R-7.2",
                  f"raw_length {t.raw_length}, shape {list(t.shape)} of {dt.name} is {want}")
    if t.codec == 0 and t.stored_length != t.raw_length:
        ctx.issue("SIZE_MISMATCH", b0 + 48, f"{sec}.stored_length", "R-7.3",
                  f"raw tensor with stored_length {t.stored_length} != raw_length "
                  f"{t.raw_length}")


def _quant_fields(ctx: Ctx, t: TensorInfo, b0: int) -> None:
    """The descriptor's quant fields on their own (scheme NONE means all of them are unset)."""
    sec = f"tensor[{t.ordinal}]"
    if t.quant_scheme == 0:
        if (t.scale_tensor, t.zero_point_tensor) != (S.NO_REF, S.NO_REF) or (
                t.quant_axis or t.group_size or t.dequant_dtype):
            ctx.issue("QUANT_PARAMS", b0 + 14, f"{sec}.quant_scheme", "R-12.1",
                      "unquantized tensor with quantization fields set")
    elif t.quant_scheme not in S.QUANT_NAMES:
        ctx.issue("QUANT_PARAMS", b0 + 14, f"{sec}.quant_scheme", "R-12.1",
                  f"unregistered quant scheme {t.quant_scheme}")
    elif t.dequant_dtype not in S.DTYPES:
        ctx.issue("QUANT_PARAMS", b0 + 28, f"{sec}.dequant_dtype", "R-12.1",
                  f"unregistered dequant_dtype {t.dequant_dtype}")


def _quant(ctx: Ctx, t: TensorInfo, b0: int) -> None:
    sec = f"tensor[{t.ordinal}]"

    def bad(off: int, name: str, why: str) -> None:
        ctx.issue("QUANT_PARAMS", b0 + off, f"{sec}.{name}", "R-12.1", why)

    if t.quant_scheme not in (1, 2) or t.dequant_dtype not in S.DTYPES:
        return  # unquantized, or already reported by _quant_fields
    if t.role in S.UNQUANTIZED_ROLES:
        bad(14, "quant_scheme", f"{S.role_name(t.role)} tensors are never quantized (R-12.3)")
        return
    allowed = S.AFFINE_DTYPES if t.quant_scheme == 1 else S.SCALED_FLOAT_DTYPES
    if t.dtype not in allowed:
        bad(10, "dtype", f"{S.QUANT_NAMES[t.quant_scheme]} cannot store {S.dtype_name(t.dtype)}")
    if t.dequant_dtype not in S.FLOAT_PARAM_DTYPES:
        bad(28, "dequant_dtype", f"dequant_dtype {S.dtype_name(t.dequant_dtype)} is not "
            "float32/16/bfloat16")
    if not t.quant_axis < len(t.shape):
        bad(15, "quant_axis", f"quant_axis {t.quant_axis} is not an axis of shape "
            f"{list(t.shape)}")
        return
    want = list(t.shape)
    dim = want[t.quant_axis]
    want[t.quant_axis] = 1 if t.group_size == 0 else -(-dim // t.group_size)
    if t.scale_tensor == S.NO_REF:
        bad(20, "scale_tensor", "a quantized tensor needs a scale tensor")
    for ref, off, name, role in ((t.scale_tensor, 20, "scale_tensor", S.ROLE_QUANT_SCALE),
                                 (t.zero_point_tensor, 24, "zero_point_tensor",
                                  S.ROLE_QUANT_ZERO_POINT)):
        if ref == S.NO_REF:
            continue
        if role == S.ROLE_QUANT_ZERO_POINT and t.quant_scheme == 2:
            bad(off, name, "SCALED_FLOAT takes no zero point")
            continue
        if ref >= t.ordinal:
            bad(off, name, f"{name} {ref} is not an earlier tensor")
            continue
        p = ctx.walk.tensors[ref]
        if p.role != role or p.layer != t.layer:
            bad(off, name, f"{name} {ref} must be a {S.role_name(role)} tensor of the same "
                "layer")
        elif p.quant_scheme != 0:
            bad(off, name, f"{name} {ref} is itself quantized")
        elif p.dtype not in S.FLOAT_PARAM_DTYPES or list(p.shape) != want:
            bad(off, name, f"{name} {ref} must be float32/16/bfloat16 of shape {want}; is "
                f"{S.dtype_name(p.dtype)} {list(p.shape)}")
        elif ref in ctx.quant_refs:
            bad(off, name, f"{name} {ref} is already used by tensor {ctx.quant_refs[ref]}")
        else:
            ctx.quant_refs[ref] = t.ordinal


def tensor_data(ctx: Ctx, t: TensorInfo, pos: int) -> int | None:
    """Place the tensor's data after its section (steps T.15 - T.19); returns the next
    section's offset, or None when the input ends first."""
    sec = f"tensor[{t.ordinal}]"
    data = pos + S.pad64(pos)
    end = data + t.stored_length
    nxt = end + S.pad8(t.stored_length)
    t.data_offset = data
    if nxt > S.U64_MAX:  # T.15: an end past 2^64 - 1 is LENGTH_OVERFLOW (review item 19)
        ctx.issue("LENGTH_OVERFLOW", t.section_offset + 16 + 48, f"{sec}.stored_length",
                  "R-1.1", f"the data would end at {nxt}, past 2^64 - 1")
    if nxt > ctx.n:  # (always so after an overflow: the spans below cover what is there)
        ctx.issue("TRUNCATED", data, f"{sec}.data", "5",
                  f"{t.stored_length} data bytes (+ padding) run past the end of the input")
        ctx.padding(pos, min(data, ctx.n) - pos, f"{sec}.pad64", sec, "5")
        if data < ctx.n:
            ctx.span(data, ctx.n - data, f"{sec}.data", sec, "5", SpanKind.DATA)
        t.crc_status = "missing"
        return None
    ctx.padding(pos, data - pos, f"{sec}.pad64", sec, "5")
    ctx.span(data, t.stored_length, f"{sec}.data", sec, "5", SpanKind.DATA)
    if ctx.verify_data:
        _check_crc(ctx, t)
    ctx.padding(end, nxt - end, f"{sec}.pad8", sec, "5")
    if ctx.verify_data:
        _check_codec(ctx, t)
    t.end_offset = nxt
    return nxt


def _check_crc(ctx: Ctx, t: TensorInfo) -> None:
    sec = f"tensor[{t.ordinal}]"
    data = ctx.buf[t.data_offset:t.data_offset + t.stored_length]
    crc = 0
    for i in range(0, len(data), _CHUNK):
        crc = crc32c.crc32c(data[i:i + _CHUNK], crc)
    t.crc_status = "ok" if crc == t.data_crc else "BAD"
    if crc != t.data_crc:
        ctx.issue("DATA_CHECKSUM", t.section_offset + 16 + 56, f"{sec}.data_crc", "R-7.4",
                  f"data_crc is {t.data_crc:08x}, the stored bytes give {crc:08x}")


def _check_codec(ctx: Ctx, t: TensorInfo) -> None:
    """Step T.19: the zstd frame, then the zero tail of packed sub-byte dtypes (R-7.12)."""
    sec = f"tensor[{t.ordinal}]"
    data = ctx.buf[t.data_offset:t.data_offset + t.stored_length]
    last: int | None = data[-1] if t.codec == 0 and len(data) else None
    if t.codec in (1, 2):
        last = _check_frame(ctx, t, data)
    elif t.codec == 3:
        _check_floatplane(ctx, t, data)
    dt = S.DTYPES.get(t.dtype)
    if last is not None and dt is not None and dt.bits < 8:
        used = (_elements(t.shape) * dt.bits) % 8
        if used and last >> used:
            ctx.issue("NONZERO_PADDING", t.data_offset + t.stored_length - 1, f"{sec}.data",
                      "R-7.12", "unused high bits of the last packed byte are not zero")


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _frame_end(data: memoryview) -> int | None:
    """Length of the zstd frame at data[0] by walking its block headers (RFC 8878 3.1.1), or
    None when the bytes cannot be one frame.  Nothing is decompressed."""
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


def _check_frame(ctx: Ctx, t: TensorInfo, data: memoryview) -> int | None:
    """R-7.8 / R-7.13: exactly one zstd frame producing raw_length bytes.  Decompressed in reads
    of at most 1 MiB, keeping nothing but the last byte, and stopped as soon as the output
    passes raw_length (a decompression bomb costs one read).  Returns the last byte when good."""
    sec = f"tensor[{t.ordinal}]"

    def failed(why: str) -> None:
        ctx.issue("DECOMPRESSION_FAILED", t.data_offset, f"{sec}.data", "R-7.13", why)

    if bytes(data[:4]) != _ZSTD_MAGIC:
        failed("stored bytes do not start with a zstd frame")
        return None
    end = _frame_end(data)
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
        ctx.issue("DECOMPRESSED_SIZE", t.data_offset, f"{sec}.data", "R-7.13",
                  f"frame declares {params.content_size} bytes, raw_length is {t.raw_length}")
        return None
    total, last = 0, None
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False)
        while total <= t.raw_length:
            out = reader.read(min(_CHUNK, t.raw_length + 1 - total))
            if not out:
                break
            total += len(out)
            last = out[-1]
    except zstandard.ZstdError as exc:
        failed(f"stored bytes are not a valid zstd frame: {exc}")
        return None
    if total != t.raw_length:
        got = f"more than {t.raw_length}" if total > t.raw_length else str(total)
        ctx.issue("DECOMPRESSED_SIZE", t.data_offset, f"{sec}.data", "R-7.8",
                  f"frame decompresses to {got} bytes, raw_length is {t.raw_length}")
        return None
    # For byteplane_zstd the last decompressed byte is not the last raw byte, but the codec
    # only carries 16/32/64-bit dtypes, which have no packed tail to check.
    return last if t.codec == 1 else None


def _check_floatplane(ctx: Ctx, t: TensorInfo, data: memoryview) -> None:
    """floatplane_zstd (spec 7.3.1): the codec's own decoder checks the frame and R-7.17 (its
    streams are not byte planes a walker could check in passing); its error becomes the issue."""
    import avp_codec as avp
    from avp_codec import _codecs

    dt = S.DTYPES.get(t.dtype)
    if dt is None or dt.name not in ("float32", "float16", "bfloat16"):
        return  # CODEC_DTYPE was reported with the descriptor
    try:
        _codecs.decompress(data, avp.Codec.FLOATPLANE_ZSTD, t.raw_length,
                           avp.Dtype[dt.name.upper()], tuple(t.shape))
    except avp.AvpError as exc:
        ctx.issue(exc.code.name, t.data_offset, f"tensor[{t.ordinal}].data",
                  "R-7.17" if exc.code == avp.ErrorCode.DECOMPRESSION_FAILED else "R-7.13",
                  exc.detail)


def cross_checks(ctx: Ctx) -> None:
    """Checks that need every tensor: run once the message is complete."""
    w = ctx.walk
    _tiling(ctx)
    for t in w.tensors:
        if t.role in (S.ROLE_QUANT_SCALE, S.ROLE_QUANT_ZERO_POINT) and \
                t.ordinal not in ctx.quant_refs:
            ctx.issue("QUANT_PARAMS", t.section_offset, f"tensor[{t.ordinal}].role", "R-12.1",
                      f"{S.role_name(t.role)} tensor is referenced by no tensor")
    if w.kind == S.KIND_KV_CACHE:
        batches = {t.shape[0] for t in w.tensors
                   if t.layout in S.LAYOUT_NAMES and t.layout != 0 and t.shape}
        if len(batches) > 1:
            ctx.issue("ROLE_SHAPE", w.header_offset, "tensors", "R-10.1",
                      f"tensors disagree on batch size: {sorted(batches)}")
        have = {t.layer for t in w.tensors
                if t.role not in (S.ROLE_QUANT_SCALE, S.ROLE_QUANT_ZERO_POINT)}
        for j in range(len(w.layers)):
            if j not in have:
                ctx.issue("KIND_CONSTRAINT", w.layers[j].offset, f"layer[{j}]", "10",
                          "a KV_CACHE layer carries no tensor")
    if w.kind == S.KIND_HIDDEN_STATE and not any(t.role == S.ROLE_HIDDEN_STATE
                                                 for t in w.tensors):
        ctx.issue("KIND_CONSTRAINT", w.header_offset, "tensors", "10",
                  "a HIDDEN_STATE message needs a HIDDEN_STATE tensor")


def _tiling(ctx: Ctx) -> None:
    w = ctx.walk
    groups: dict[tuple[int, int], list[TensorInfo]] = {}
    for t in w.tensors:
        info = S.ROLES.get(t.role)
        if info is None or not info.tokens or t.layer >= len(w.layers):
            continue
        axis = S.LAYOUT_TOKEN_AXIS.get(t.layout)
        if axis is None or len(t.shape) != t.rank or axis >= t.rank:
            continue  # ROLE_SHAPE was already reported for a layout the rank cannot have
        groups.setdefault((t.layer, t.role), []).append(t)
    for (layer, role), ts in groups.items():  # dicts keep first-appearance order (F.1)
        want = w.layers[layer].token_count
        ts.sort(key=lambda t: t.token_offset)
        at = 0
        rest = None
        for t in ts:
            axis = S.LAYOUT_TOKEN_AXIS[t.layout] or 0
            p = f"tensor[{t.ordinal}]"
            if t.token_offset != at:
                what = "gap" if t.token_offset > at else "overlap"
                ctx.issue("TOKEN_RANGE", t.section_offset, f"{p}.token_offset", "R-7.7",
                          f"{what} in the {S.role_name(role)} tokens of layer[{layer}] at "
                          f"token {min(at, t.token_offset)}")
            others = (t.layout, t.shape[:axis] + t.shape[axis + 1:])
            if rest is not None and others != rest:
                ctx.issue("TOKEN_RANGE", t.section_offset, f"{p}.shape", "R-7.7",
                          "tensors of one (layer, role) disagree on a non-token dimension")
            rest = others
            at = max(at, t.token_offset + t.shape[axis])
        if at != want:
            ctx.issue("TOKEN_RANGE", ts[-1].section_offset, f"layer[{layer}]", "R-7.7",
                      f"{S.role_name(role)} tensors of layer[{layer}] cover {at} tokens, the "
                      f"layer holds {want}")
