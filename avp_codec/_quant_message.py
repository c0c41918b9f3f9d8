"""Message-level quantization (spec section 12); the public face is avp_codec.quant.

quantize_message replaces each KEY / VALUE tensor by its QUANT_SCALE (and QUANT_ZERO_POINT)
tensors followed by the quantized tensor, so a streaming receiver always has a tensor's
parameters before its codes, plus an unquantized tile for a recent window. dequantize_message
applies the normative arithmetic of spec 12.2 and joins a layer's tiles again.

Pure numpy + ml_dtypes; torch is never imported.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from . import _codecs, _parallel, _quant_fast
from . import _quant_core as core
from ._dtypes import PACKED
from ._quant_settings import QuantPolicy, QuantSetting
from ._registry import (
    DTYPE_BITS,
    FLOAT_PARAM_DTYPES,
    LAYOUT_INFO,
    QUANT_ROLES,
    Codec,
    Dtype,
    ErrorCode,
    MetaKey,
    QuantScheme,
    Role,
)
from .errors import AvpError
from .model import Entry, Message, Quant, Tensor

_KV_ROLES = (Role.KEY, Role.VALUE)
# Range shrink ratios tried by QuantSetting.clip_search (finer near 1, where 4-8 bit settings
# land; 2-bit groups often prefer 0.6-0.8).
_POOL_MIN = 8 << 20  # dequantized bytes from which one shared output allocation pays
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)


def _name(d: Dtype) -> str:
    return Dtype(d).name.lower()


def quant_axis(setting: QuantSetting, tensor: Tensor) -> int:
    """The descriptor's quant_axis for a setting: the layout's token axis, or the last axis."""
    if setting.axis == "channels":
        return len(tensor.shape) - 1
    ax = LAYOUT_INFO[tensor.layout].token_axis
    if ax is None:
        raise AvpError(ErrorCode.QUANT_PARAMS, f"{tensor.layout.name} has no token axis")
    return ax


def quantize_array(
    arr: np.ndarray, setting: QuantSetting, axis: int, *, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(codes, scale, zero point or None) for one array; codes are unpacked integers or fp8."""
    if setting.scheme == QuantScheme.SCALED_FLOAT:
        r = core.quantize_scaled_float(
            arr, _name(setting.dtype), axis, setting.group_size,
            param_dtype=_name(setting.param_dtype),
        )
    else:
        r = core.quantize_affine(
            arr, _name(setting.dtype), axis, setting.group_size,
            zero_point=setting.zero_point, param_dtype=_name(setting.param_dtype),
            clip_ratios=CLIP_RATIOS if setting.clip_search else (1.0,), threads=threads,
        )
    return r.codes, r.scale, r.zero_point


def _tensor(arr: np.ndarray, role: Role, codec: Codec, **kw: Any) -> Tensor:
    """Tensor.from_array with `codec`, or RAW when compressing does not make it smaller (zstd
    adds a frame header, and a tiny or noisy tile may not shrink)."""
    raw = Tensor.from_array(arr, role, **kw)
    if codec == Codec.RAW:
        return raw
    packed = Tensor.from_array(arr, role, codec=codec, **kw)
    return packed if packed.stored_length < raw.stored_length else raw


def _quantize_tile(
    t: Tensor, arr: np.ndarray, token_offset: int, setting: QuantSetting, first: int
) -> list[Tensor]:
    """[scale, (zero point,) codes] for one tile; `first` is the scale tensor's final index."""
    axis = quant_axis(setting, t)
    nibbles = setting.dtype in (Dtype.INT4, Dtype.UINT4) and not setting.clip_search and (
        setting.scheme == QuantScheme.AFFINE)
    if nibbles:  # codes packed as they are made (no unpacked array)
        packed, scale, zp = core.quantize_affine_packed(
            arr, _name(setting.dtype), axis, setting.group_size,
            zero_point=setting.zero_point, param_dtype=_name(setting.param_dtype), threads=1)
    else:
        codes, scale, zp = quantize_array(arr, setting, axis, threads=1)
    # Parameters are 16/32-bit floats: byte planes split their exponent bytes out for zstd.
    pcodec = Codec.BYTEPLANE_ZSTD if setting.compress else Codec.RAW
    out = [_tensor(scale, Role.QUANT_SCALE, pcodec, ordinal=t.layer)]
    if zp is not None:
        out.append(_tensor(zp, Role.QUANT_ZERO_POINT, pcodec, ordinal=t.layer))
    q = Quant(
        setting.scheme, axis, setting.group_size, first,
        first + 1 if zp is not None else None, t.dtype,
    )
    codec = Codec.ZSTD if setting.compress else Codec.RAW
    if nibbles:
        out.append(_packed_tensor(packed.data, arr.shape, t.role, codec,
                                  setting.dtype, layer=t.layer, layout=t.layout,
                                  token_offset=token_offset, quant=q))
    elif setting.dtype in (Dtype.INT4, Dtype.UINT4):  # codes are in range: pack them directly
        out.append(_packed_tensor(_quant_fast.pack4(codes), codes.shape, t.role, codec,
                                  setting.dtype, layer=t.layer, layout=t.layout,
                                  token_offset=token_offset, quant=q))
    else:
        out.append(_tensor(codes, t.role, codec, ordinal=t.layer, layout=t.layout,
                           token_offset=token_offset, dtype=setting.dtype, quant=q))
    return out


def _packed_tensor(packed: bytes | memoryview, shape: tuple[int, ...], role: Role, codec: Codec,
                   dtype: Dtype, **kw: Any) -> Tensor:
    """Like _tensor, from codes already packed."""
    raw = Tensor.from_bytes(packed, role, dtype, shape, **kw)
    if codec == Codec.RAW:
        return raw
    stored = _codecs.compress(packed, codec, dtype, shape)
    if len(stored) >= len(packed):
        return raw
    t = Tensor(role, dtype, shape, stored, codec=codec, raw_length=len(packed), **kw)
    t._raw = memoryview(packed)
    return t


def segments(t: Tensor, setting: QuantSetting, token_count: int
             ) -> tuple[int, list[tuple[int, int, bool]]]:
    """(token axis, [(start, stop, quantized)]): how one tile splits into tiles of its own.

    Tokens among the layer's first `sink_tokens` (attention sinks: few tokens that draw much of
    every query's attention) and its last `recent_window` tokens stay at full precision; the
    tokens between are quantized. Positions are relative to the tile; empty parts are dropped.
    """
    ax = LAYOUT_INFO[t.layout].token_axis
    if ax is None:
        raise AvpError(ErrorCode.QUANT_PARAMS, f"{t.role.name} tensor without a token axis")
    n = t.shape[ax]
    lo = min(max(setting.sink_tokens - t.token_offset, 0), n)
    hi = max(lo, min(max(token_count - setting.recent_window - t.token_offset, 0), n))
    parts = [(0, lo, False), (lo, hi, True), (hi, n, False)]
    return ax, [p for p in parts if p[1] > p[0]]


def _quantize_kv(t: Tensor, setting: QuantSetting, token_count: int, first: int) -> list[Tensor]:
    """Quantize one KEY/VALUE tile; sink and recent-window tokens become unquantized tiles."""
    if t.dtype not in FLOAT_PARAM_DTYPES:
        raise AvpError(ErrorCode.QUANT_PARAMS, f"cannot quantize a {_name(t.dtype)} tensor")
    ax, parts = segments(t, setting, token_count)
    arr = t.array()
    out: list[Tensor] = []
    for start, stop, quantized in parts:
        part = arr if stop - start == arr.shape[ax] else np.take(
            arr, np.arange(start, stop), axis=ax)
        if quantized:
            out += _quantize_tile(t, part, t.token_offset + start, setting, first + len(out))
        elif setting.compress and t.codec == Codec.RAW:
            out.append(_tensor(part, t.role, Codec.BYTEPLANE_ZSTD, ordinal=t.layer,
                               layout=t.layout, token_offset=t.token_offset + start))
        else:
            out.append(Tensor.from_array(
                part, t.role, ordinal=t.layer, layout=t.layout, codec=t.codec,
                token_offset=t.token_offset + start,
            ))
    return out


def _with_entry(entries: list[Entry], key: MetaKey, text: str | None) -> list[Entry]:
    """Entries with `key` replaced by a new value (or removed), kept in canonical key order."""
    kept = [dataclasses.replace(e) for e in entries if e.key != int(key)]
    if text is not None:
        kept.append(Entry.of(key, text))
    return sorted(kept, key=lambda e: e.key)


def quantize_message(msg: Message, policy: QuantPolicy, *,
                     threads: int | None = None) -> Message:
    """A copy of a KV_CACHE-style message with its KEY / VALUE tensors quantized per `policy`
    and the policy recorded in QUANT_POLICY. Other tensors are carried over unchanged.

    The input must not already be quantized (its parameter tensors would need re-indexing and
    quantizing codes again only loses more): dequantize it first.

    >>> import numpy as np, avp_codec as avp
    >>> from avp_codec import quant
    >>> k = np.linspace(-1, 1, 2 * 32 * 64, dtype=np.float16).reshape(1, 2, 32, 64)
    >>> msg = quant.quantize_message(avp.kv_cache_from_arrays(bytes(32), [k], [k]),
    ...                              quant.preset("int8"))
    >>> [str(t.role) for t in msg.tensors][:3], str(msg.tensors[2].dtype)
    (['QUANT_SCALE', 'QUANT_ZERO_POINT', 'KEY'], 'UINT8')
    """
    if any(t.quant is not None or t.role in QUANT_ROLES for t in msg.tensors):
        raise AvpError(ErrorCode.QUANT_PARAMS, "message is already quantized; dequantize first")
    # Each tensor's output count is known in advance (its tiles, and 2 or 3 tensors per
    # quantized tile), so its references are too: tensors are quantized on threads.
    jobs: list[tuple[Tensor, QuantSetting | None, int, int]] = []
    count = 0
    for t in msg.tensors:
        setting = None
        if t.layer is not None and t.role in _KV_ROLES:
            if not 0 <= t.layer < len(msg.layers):
                raise AvpError(ErrorCode.BAD_REFERENCE, f"layer {t.layer} is not in the table")
            layer = msg.layers[t.layer]
            ls = policy.for_layer(layer.index)
            setting = ls.key if t.role == Role.KEY else ls.value
        tokens = 0 if t.layer is None else msg.layers[t.layer].token_count
        jobs.append((t, setting, tokens, count))
        if setting is None:
            count += 1
        else:
            if t.dtype not in FLOAT_PARAM_DTYPES:
                raise AvpError(ErrorCode.QUANT_PARAMS,
                               f"cannot quantize a {_name(t.dtype)} tensor")
            count += sum(3 if q and setting.zero_point else 2 if q else 1
                         for _, _, q in segments(t, setting, tokens)[1])

    def run(j: int) -> list[Tensor]:
        t, setting, tokens, first = jobs[j]
        return [t] if setting is None else _quantize_kv(t, setting, tokens, first)

    parts = _quant_fast.map_dynamic(run, [t.raw_length for t, _, _, _ in jobs],
                                    _parallel.resolve(threads))
    out = [x for part in parts for x in part]
    assert len(out) == count
    return Message(
        msg.kind,
        _with_entry(msg.entries, MetaKey.QUANT_POLICY, policy.to_json()),
        [dataclasses.replace(layer) for layer in msg.layers],
        out,
    )


def _param_array(msg: Message, ref: int | None, role: Role, want: tuple[int, ...], path: str
                 ) -> np.ndarray | None:
    """A parameter tensor's values as float32, after the checks of R-12.3 to R-12.5 and R-12.6
    (decode() did the structural ones; a message built in memory may not have been validated)."""
    if ref is None:
        return None
    if not 0 <= ref < len(msg.tensors):
        raise AvpError(ErrorCode.QUANT_PARAMS, f"reference {ref} out of range", path=path)
    p = msg.tensors[ref]
    if p.role != role or p.dtype not in FLOAT_PARAM_DTYPES or p.shape != want:
        raise AvpError(ErrorCode.QUANT_PARAMS,
                       f"tensor {ref} is not a {role.name} of shape {list(want)}", path=path)
    values = np.asarray(p.array(), dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise AvpError(ErrorCode.QUANT_PARAMS, "non-finite quantization parameter (R-12.6)",
                       path=path)
    return values


def dequantize_tensor(msg: Message, index: int, *, threads: int | None = None) -> np.ndarray:
    """The dequantized values of tensor `index` of `msg`, bit-exact per spec 12.2, as an array of
    its dequant_dtype (a non-quantized tensor comes back as its own array)."""
    return _dequantize_tensor(msg, index, threads, None)


def _dequantize_tensor(msg: Message, index: int, threads: int | None,
                       pool: _OutPool | None) -> np.ndarray:
    t = msg.tensors[index]
    q = t.quant
    if q is None:
        return t.array()
    path = f"tensor[{index}]"
    if not 0 <= q.axis < len(t.shape) or q.dequant_dtype not in FLOAT_PARAM_DTYPES:
        raise AvpError(ErrorCode.QUANT_PARAMS, "bad quant_axis or dequant_dtype", path=path)
    want = core.param_shape(t.shape, q.axis, q.group_size)
    scale = _param_array(msg, q.scale_tensor, Role.QUANT_SCALE, want, path + ".scale_tensor")
    if scale is None:
        raise AvpError(ErrorCode.QUANT_PARAMS, "quantized tensor without scale", path=path)
    zp = _param_array(msg, q.zero_point_tensor, Role.QUANT_ZERO_POINT, want,
                      path + ".zero_point_tensor")
    if q.scheme == QuantScheme.SCALED_FLOAT and zp is not None:
        raise AvpError(ErrorCode.QUANT_PARAMS, "SCALED_FLOAT has no zero point", path=path)
    out = None if pool is None else pool.take(t.shape, q.dequant_dtype)
    if t.dtype in PACKED:  # widened straight from the packed bytes, segment by segment
        shape_only = np.broadcast_to(np.zeros((), np.uint8), t.shape)
        return core.dequantize(shape_only, scale, zp, q.axis, q.group_size,
                               _name(q.dequant_dtype), packed=(t.raw_bytes(), _name(t.dtype)),
                               threads=threads, out=out)
    return core.dequantize(t.values(), scale, zp, q.axis, q.group_size, _name(q.dequant_dtype),
                           threads=threads, out=out)


class _OutPool:
    """One allocation for every dequantized tensor of a message, handed out in order.

    Fresh memory costs a page fault per 4 KiB page on first write, which for a KV-cache costs
    about as much as the arithmetic; one large array is mapped in huge pages (numpy advises
    them for large arrays) and faults a few hundred times instead of tens of thousands. The
    total is what the separate arrays would take (each piece 64-byte aligned).

    The pages are faulted in here, in order, on one thread (one byte per 4 KiB touched): when
    the dequantize kernels on two threads first-write a fresh mapping at once, their huge-page
    faults contend and some fall back to small pages (measured: 90-140 faults instead of 57,
    and up to 100 ms of system time instead of 12-24, for a 117 MB output)."""

    def __init__(self, sizes: list[int]) -> None:
        self.buf = np.empty(sum(-(-n // 64) * 64 for n in sizes), np.uint8)
        self.buf[::4096] = 0
        self.pos = 0

    def take(self, shape: tuple[int, ...], dtype: Dtype) -> np.ndarray:
        np_dtype = core.FLOAT_DTYPES[_name(dtype)]
        n = math.prod(shape) * np_dtype.itemsize
        piece = self.buf[self.pos:self.pos + n]
        self.pos += -(-n // 64) * 64
        return piece.view(np_dtype).reshape(shape)


def _merge_tiles(tensors: list[Tensor]) -> list[Tensor]:
    """Join the token tiles of each (layer, role) into one tensor when they agree on dtype and
    layout, so an importer that expects one tensor per layer and role can take the result."""
    groups: dict[tuple[int, Role], list[int]] = {}
    for i, t in enumerate(tensors):
        ax = LAYOUT_INFO[t.layout].token_axis
        if t.layer is not None and ax is not None and t.role in _KV_ROLES:
            groups.setdefault((t.layer, t.role), []).append(i)
    replace: dict[int, Tensor | None] = {}
    for idx in groups.values():
        tiles = sorted((tensors[i] for i in idx), key=lambda t: t.token_offset)
        first = tiles[0]
        if len(tiles) < 2 or any(
            t.dtype != first.dtype or t.layout != first.layout for t in tiles
        ):
            continue
        ax = LAYOUT_INFO[first.layout].token_axis
        joined = np.concatenate([t.array() for t in tiles], axis=ax)
        replace[idx[0]] = Tensor.from_array(
            joined, first.role, ordinal=first.layer, layout=first.layout,
            token_offset=first.token_offset,
        )
        for i in idx[1:]:
            replace[i] = None
    out = []
    for i, t in enumerate(tensors):
        r = replace.get(i, t)
        if r is not None:
            out.append(r)
    return out


def dequantize_message(msg: Message, *, merge_tiles: bool = True,
                       threads: int | None = None) -> Message:
    """A copy of `msg` with every quantized tensor replaced by its dequantized float tensor, the
    QUANT_SCALE / QUANT_ZERO_POINT tensors and the QUANT_POLICY entry removed, and (by default)
    each layer's KEY / VALUE tiles joined into one tensor.

    >>> import numpy as np, avp_codec as avp
    >>> from avp_codec import quant
    >>> k = np.linspace(-1, 1, 2 * 32 * 64, dtype=np.float16).reshape(1, 2, 32, 64)
    >>> wire = avp.encode(quant.quantize_message(avp.kv_cache_from_arrays(bytes(32), [k], [k]),
    ...                                          quant.preset("int8")))
    >>> back = quant.dequantize_message(avp.decode(wire))
    >>> [str(t.role) for t in back.tensors], back.tensors[0].dtype
    (['KEY', 'VALUE'], <Dtype.FLOAT16: 2>)
    >>> bool(np.abs(back.tensors[0].array().astype(np.float32) - k).max() < 0.01)
    True
    """
    out: list[Tensor] = []
    sizes = [math.prod(t.shape) * DTYPE_BITS[t.quant.dequant_dtype] // 8
             for t in msg.tensors if t.quant is not None and t.role not in QUANT_ROLES
             and t.quant.dequant_dtype in FLOAT_PARAM_DTYPES]
    pool = _OutPool(sizes) if sum(sizes) >= _POOL_MIN else None
    for i, t in enumerate(msg.tensors):
        if t.role in QUANT_ROLES:
            continue
        if t.quant is None:
            out.append(t)
            continue
        values = _dequantize_tensor(msg, i, threads, pool)
        out.append(Tensor.from_array(
            values, t.role, ordinal=t.layer, layout=t.layout, token_offset=t.token_offset,
        ))
    if merge_tiles:
        out = _merge_tiles(out)
    return Message(
        msg.kind,
        _with_entry(msg.entries, MetaKey.QUANT_POLICY, None),
        [dataclasses.replace(layer) for layer in msg.layers],
        out,
    )

