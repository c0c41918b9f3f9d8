"""Array-level quantization and the normative, bit-exact dequantization of spec section 12.

This module knows numpy arrays and dtype names, nothing about messages. Dequantization follows
the spec literally: every element's code, zero point and scale are widened to binary32 (exact for
every stored dtype the spec allows), then `(q - z) * s` or `q * s` is evaluated as separate IEEE
binary32 operations (numpy evaluates each ufunc on its own, so nothing is fused into an FMA), and
the binary32 result is rounded to the dequant dtype with round-to-nearest-even. NaN results are
written as the dequant dtype's canonical quiet NaN so that even NaN bit patterns agree between
implementations.

Quantization (the producer side) is not normative: any q, s, z a producer picks decode the same
way everywhere. The algorithm here is the reference producer's, described in spec section 12.4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt

from . import _parallel, _quant_fast, _quant_kernels
from ._quant_dequant import Codes, dequantize_into

F32 = np.float32

# Stored-element properties of the integer dtypes: (bits, signed).
INT_DTYPES: dict[str, tuple[int, bool]] = {
    "int8": (8, True),
    "uint8": (8, False),
    "int4": (4, True),
    "uint4": (4, False),
    "uint2": (2, False),
}
# fp8 dtypes and their largest finite magnitude.
FP8_DTYPES: dict[str, tuple[np.dtype[Any], float]] = {
    "float8_e4m3fn": (np.dtype(ml_dtypes.float8_e4m3fn), 448.0),
    "float8_e5m2": (np.dtype(ml_dtypes.float8_e5m2), 57344.0),
}
# Dtypes that scales, zero points and dequantized results may have.
FLOAT_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
# Canonical quiet NaN bit patterns, by dequant dtype (spec 12.2).
_CANONICAL_NAN = {"float32": 0x7FC00000, "float16": 0x7E00, "bfloat16": 0x7FC0}
_BITS_VIEW = {"float32": np.uint32, "float16": np.uint16, "bfloat16": np.uint16}
_U1, _U16, _HALF = np.uint32(1), np.uint32(16), np.uint32(0x7FFF)
# Smallest normal and largest finite magnitude of the 16-bit parameter dtypes.
_NORMAL_RANGE = {"float16": (2.0**-14, 65504.0),
                 "bfloat16": (2.0**-126, float(np.finfo(ml_dtypes.bfloat16).max))}


def num_groups(dim: int, group_size: int) -> int:
    """Groups along an axis of length `dim`: exactly 1 for group_size 0 (the whole axis, even
    an empty one), else ceil(dim / group_size) (spec 12.1)."""
    if group_size == 0:
        return 1
    return -(-dim // group_size)


def param_shape(shape: tuple[int, ...], axis: int, group_size: int) -> tuple[int, ...]:
    """Shape of the scale / zero-point tensor of a quantized tensor (spec 12.1)."""
    dims = list(shape)
    dims[axis] = num_groups(shape[axis], group_size)
    return tuple(dims)


def _effective_group(dim: int, group_size: int) -> int:
    # A group longer than the axis is the whole axis (one group): never pad to group_size.
    return dim if group_size == 0 or group_size > dim else group_size


def expand(params: npt.NDArray[np.float32], axis: int, group_size: int, dim: int) -> np.ndarray:
    """Broadcast per-group parameters to one value per element along `axis`."""
    g = _effective_group(dim, group_size)
    if dim == 0:
        return np.take(params, np.arange(0), axis=axis)
    if g == 1:
        return params
    full = np.repeat(params, g, axis=axis)
    if full.shape[axis] != dim:  # the last group is shorter than group_size
        full = np.take(full, np.arange(dim), axis=axis)
    return full


def _grouped(x: npt.NDArray[np.float32], axis: int, group_size: int) -> np.ndarray:
    """View `x` with `axis` split into (groups, group_size); the tail is padded with edge values
    (a copy of the last element), which never changes a group's min, max or absolute max."""
    dim = x.shape[axis]
    g = _effective_group(dim, group_size)
    n = num_groups(dim, group_size)
    pad = n * g - dim
    if pad:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, pad)
        x = np.pad(x, widths, mode="edge")
    return x.reshape(x.shape[:axis] + (n, g) + x.shape[axis + 1 :])


def _to_param_dtype(values: npt.NDArray[np.float64], name: str) -> tuple[np.ndarray, str]:
    """Round parameters to the requested dtype; fall back to float32 when that dtype cannot hold
    them faithfully (overflow, or a relative error above 2^-8 from underflow into subnormals)."""
    if name != "float32":
        if values.size:
            # Inside the dtype's normal range rounding errs by less than 2^-8 relative (half
            # an ulp of bfloat16's 8-bit significand; 2^-11 for float16) and nothing
            # overflows: the test below would pass, so skip it.
            a = np.abs(values)
            low, high = _NORMAL_RANGE[name]
            if a.min() >= low and a.max() <= high:
                return values.astype(FLOAT_DTYPES[name]), name
        cast = values.astype(FLOAT_DTYPES[name])
        back = cast.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(back - values) / np.maximum(np.abs(values), np.finfo(np.float64).tiny)
        if np.all(np.isfinite(back)) and not np.any(rel > 2.0**-8):
            return cast, name
    return values.astype(np.float32), "float32"


@dataclass
class QuantizedArray:
    """Result of quantizing one array: integer (unpacked) or fp8 codes plus parameters."""

    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None


def _empty(
    xf: np.ndarray, axis: int, group_size: int, param_dtype: str, signed: bool, zero_point: bool
) -> QuantizedArray:
    """An empty tensor still has a parameter tensor of the spec's shape (possibly non-empty:
    group_size 0 gives one group): scale 1, zero point 0."""
    shape = param_shape(xf.shape, axis, group_size)
    scale = np.ones(shape, dtype=FLOAT_DTYPES[param_dtype])
    zp = np.zeros(shape, dtype=FLOAT_DTYPES[param_dtype]) if zero_point else None
    return QuantizedArray(xf.astype(np.int8 if signed else np.uint8), scale, zp)


def _affine_params(
    lo: np.ndarray, hi: np.ndarray, qmin: int, qmax: int, zero_point: bool, param_dtype: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rounded (scale, zero point) per group for the range [lo, hi] (spec 12.4). Without a
    zero point, hi is the group's absolute maximum and the codes are [qmin, qmax] symmetric."""
    if not zero_point:
        s = np.where(hi > 0, hi / qmax, 1.0)
        return _to_param_dtype(s, param_dtype)[0], None
    s = (hi - lo) / (qmax - qmin)
    # A constant group has no range: choose s = |value| so that one code hits it exactly.
    s = np.where(s > 0, s, np.where(lo != 0, np.abs(lo), 1.0))
    scale, used = _to_param_dtype(s, param_dtype)
    zp, _ = _to_param_dtype(qmin - lo / scale.astype(np.float64), used)
    if zp.dtype != scale.dtype:  # the zero point fell back to float32; keep the pair alike
        scale = scale.astype(np.float32)
    return scale, zp


def _affine_codes(
    xf: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int, group_size: int,
    qmin: int, qmax: int,
) -> np.ndarray:
    """Codes from the *stored* (rounded) parameters, so that their rounding costs no more than
    the clipping it may cause at a group's ends."""
    y = xf / expand(scale.astype(F32), axis, group_size, xf.shape[axis])
    if zp is not None:
        y += expand(zp.astype(F32), axis, group_size, xf.shape[axis])
    codes: np.ndarray = np.clip(np.rint(y), qmin, qmax)
    return codes


def quantize_affine(
    x: np.ndarray,
    dtype: str,
    axis: int,
    group_size: int,
    *,
    zero_point: bool,
    param_dtype: str = "float16",
    clip_ratios: tuple[float, ...] = (1.0,),
    threads: int | None = 1,
) -> QuantizedArray:
    """Reference AFFINE producer (spec 12.4): min/max per group with a zero point, absolute max
    per group without one.

    With several `clip_ratios`, each group's range is shrunk by every ratio in turn and the one
    with the smallest squared error is kept: at 2-4 bits, clipping a few extreme values buys a
    finer step for all the others (the usual MSE-optimal range search)."""
    bits, signed = INT_DTYPES[dtype]
    x = np.asarray(x)
    if signed:
        qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        qmin, qmax = 0, (1 << bits) - 1
    if not zero_point:
        # Symmetric: signed codes use [-qmax, qmax] so that zero is exact and the range is
        # balanced; unsigned without a zero point suits non-negative data only.
        qmin = -qmax if signed else 0
    if x.size == 0:
        return _empty(x.astype(F32), axis, group_size, param_dtype, signed, zero_point)
    if len(clip_ratios) == 1 and clip_ratios[0] == 1.0:  # the common case, segmented
        codes, scale, zp = _quant_fast.quantize_affine(
            x, axis, group_size, qmin, qmax, zero_point,
            lambda lo, hi: _affine_params(lo, hi, qmin, qmax, zero_point, param_dtype),
            np.dtype(np.int8 if signed else np.uint8), threads)
        pshape = param_shape(x.shape, axis, group_size)
        return QuantizedArray(codes, scale.reshape(pshape),
                              None if zp is None else zp.reshape(pshape))
    xf = x.astype(F32)
    if not np.all(np.isfinite(xf)):
        raise ValueError("cannot quantize non-finite values")
    grouped = _grouped(xf, axis, group_size)
    if zero_point:
        lo = grouped.min(axis=axis + 1).astype(np.float64)
        hi = grouped.max(axis=axis + 1).astype(np.float64)
    else:
        hi = np.abs(grouped).max(axis=axis + 1).astype(np.float64)
        lo = -hi
    best_lo, best_hi = lo, hi
    if len(clip_ratios) > 1:
        # Shrink towards the group's midpoint (0 for the symmetric case, where lo = -hi).
        mid = (lo + hi) / 2
        best_err = None
        for r in clip_ratios:
            lo_r, hi_r = mid - (mid - lo) * r, mid + (hi - mid) * r
            scale, zp = _affine_params(lo_r, hi_r, qmin, qmax, zero_point, param_dtype)
            q = _affine_codes(xf, scale, zp, axis, group_size, qmin, qmax)
            if zp is not None:
                q -= expand(zp.astype(F32), axis, group_size, xf.shape[axis])
            q *= expand(scale.astype(F32), axis, group_size, xf.shape[axis])
            q -= xf
            err = (_grouped(q, axis, group_size) ** 2).sum(axis=axis + 1)
            if best_err is None:
                best_err, best_lo, best_hi = err, lo_r, hi_r
                continue
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_lo = np.where(better, lo_r, best_lo)
            best_hi = np.where(better, hi_r, best_hi)
    scale, zp = _affine_params(best_lo, best_hi, qmin, qmax, zero_point, param_dtype)
    codes = _affine_codes(xf, scale, zp, axis, group_size, qmin, qmax)
    return QuantizedArray(codes.astype(np.int8 if signed else np.uint8), scale, zp)


def quantize_affine_packed(
    x: np.ndarray, dtype: str, axis: int, group_size: int, *, zero_point: bool,
    param_dtype: str = "float16", threads: int | None = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``quantize_affine`` without clip search for int4 / uint4, the codes packed two to a
    byte (spec 7.2, as ``_quant_fast.pack4``) as they are made: (packed bytes as a flat uint8
    array, scale, zero point)."""
    bits, signed = INT_DTYPES[dtype]
    if bits != 4:
        raise ValueError("only int4 / uint4 codes are packed here")
    x = np.asarray(x)
    if x.size == 0:
        r = quantize_affine(x, dtype, axis, group_size, zero_point=zero_point,
                            param_dtype=param_dtype)
        return np.zeros(0, np.uint8), r.scale, r.zero_point
    qmax = 7 if signed else 15
    qmin = (-8 if zero_point else -7) if signed else 0
    codes, scale, zp = _quant_fast.quantize_affine(
        x, axis, group_size, qmin, qmax, zero_point,
        lambda lo, hi: _affine_params(lo, hi, qmin, qmax, zero_point, param_dtype),
        np.dtype(np.int8 if signed else np.uint8), threads, pack=True)
    pshape = param_shape(x.shape, axis, group_size)
    return codes, scale.reshape(pshape), None if zp is None else zp.reshape(pshape)


def quantize_scaled_float(
    x: np.ndarray, dtype: str, axis: int, group_size: int, *, param_dtype: str = "float16"
) -> QuantizedArray:
    """Reference SCALED_FLOAT producer: per group, s = absmax / largest finite fp8 value, codes
    are x / s rounded to fp8 with round-to-nearest-even, saturated (never NaN or infinity)."""
    np_fp8, fmax = FP8_DTYPES[dtype]
    xf = np.asarray(x).astype(F32)
    if not np.all(np.isfinite(xf)):
        raise ValueError("cannot quantize non-finite values")
    if xf.size == 0:
        empty = _empty(xf, axis, group_size, param_dtype, True, False)
        return QuantizedArray(xf.astype(np_fp8), empty.scale, None)
    amax = np.abs(_grouped(xf, axis, group_size)).max(axis=axis + 1).astype(np.float64)
    s = np.where(amax > 0, amax / fmax, 1.0)
    scale, _ = _to_param_dtype(s, param_dtype)
    y = xf / expand(scale.astype(F32), axis, group_size, xf.shape[axis])
    codes = np.clip(y, -fmax, fmax).astype(np_fp8)
    return QuantizedArray(codes, scale, None)


def _finish(r: npt.NDArray[np.float32], out_dtype: str) -> np.ndarray:
    """Round binary32 results to the dequant dtype (RNE) and canonicalise NaNs (spec 12.2)."""
    nan = np.isnan(r)
    if out_dtype == "bfloat16":
        # RNE on the bit pattern (exact for every non-NaN value, infinities and overflow
        # included; NaNs are overwritten below): faster than ml_dtypes' element loop.
        b = r.view(np.uint32)
        t = b >> 16
        t &= 1
        t += 0x7FFF
        t += b
        t >>= 16
        out = t.astype(np.uint16).view(FLOAT_DTYPES[out_dtype])
    else:
        out = r.astype(FLOAT_DTYPES[out_dtype])
    if nan.any():
        bits = out.view(_BITS_VIEW[out_dtype])
        bits[nan] = _CANONICAL_NAN[out_dtype]
    return out


def _finish_into(r: npt.NDArray[np.float32], dst: np.ndarray) -> None:
    """``dst[...] = _finish(r, dst's dtype)`` for results known to hold no NaN (integer codes
    with finite parameters: (q - z) * s is then finite or an infinity), without temporaries:
    bfloat16 by the same round-to-nearest-even on the bit pattern, written straight into
    ``dst``; float16 and float32 by numpy's own (RNE) cast. ``r`` is scratch and is reused."""
    if dst.dtype == FLOAT_DTYPES["bfloat16"]:
        b = r.view(np.uint32)
        t = np.right_shift(b, _U16)
        t &= _U1
        t += _HALF
        b += t
        b >>= _U16
        np.copyto(dst.view(np.uint16), b, casting="unsafe")
    else:
        np.copyto(dst, r, casting="same_kind")


def dequantize(
    codes: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None,
    axis: int,
    group_size: int,
    out_dtype: str,
    *,
    packed: tuple[bytes | memoryview, str] | None = None,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Normative dequantization: AFFINE when `codes` are integers, SCALED_FLOAT for fp8 codes.

    `codes` are unpacked (one array element per tensor element); `scale` and `zero_point` have
    the parameter shape. Every value is widened to binary32 exactly, then combined with one IEEE
    binary32 operation at a time. With `packed` = (bytes, "int4" | "uint4" | "uint2"), `codes`
    only gives the shape (any array of it, e.g. a broadcast zero) and the codes are widened
    straight from the packed bytes. Cost and memory are linear in the element count, whatever
    the group size (see _quant_dequant). ``out``, when given, is the result array (the codes'
    shape, ``out_dtype``), written in place.
    """
    if out is None:
        out = np.empty(codes.shape, dtype=FLOAT_DTYPES[out_dtype])
    elif out.shape != codes.shape or out.dtype != FLOAT_DTYPES[out_dtype]:
        raise ValueError("out does not have the codes' shape and the dequant dtype")
    if packed is not None:
        src = Codes(packed=packed[0], packed_dtype=packed[1])
    else:
        src = Codes(values=np.ascontiguousarray(codes))
    s32 = np.asarray(scale).astype(F32)
    z32 = None if zero_point is None else np.asarray(zero_point).astype(F32)
    # Integer codes with finite parameters give no NaN: the results go straight into ``out``.
    nan_free = (packed is not None or codes.dtype.kind in "iu") and bool(
        np.isfinite(s32).all()) and (z32 is None or bool(np.isfinite(z32).all()))
    try:
        if nan_free and out_dtype != "float16" and _dequant_compiled(
                out, codes, packed, s32, z32, axis, group_size, threads):
            return out
    except _quant_kernels.KernelFailure:
        pass  # numba could not compile or run the kernel: the numpy twin rewrites all of out
    return dequantize_into(out, src, s32, z32, axis, group_size,
                           lambda r: _finish(r, out_dtype), threads,
                           finish_into=_finish_into if nan_free else None)


_KINDS = {"int4": 1, "uint4": 2, "uint2": 3}


def _dequant_compiled(out: np.ndarray, codes: np.ndarray,
                      packed: tuple[bytes | memoryview, str] | None, s32: np.ndarray,
                      z32: np.ndarray | None, axis: int, group_size: int,
                      threads: int | None) -> bool:
    """The compiled twin of ``dequantize_into`` + ``_finish_into`` (NaN-free results, bfloat16
    or binary32 output): False, having done nothing, when the kernels are unavailable."""
    kern = _quant_kernels.get(_quant_kernels.affine_dequant)
    if kern is None:
        return False
    shape = out.shape
    dim = shape[axis]
    p = int(np.prod(shape[:axis], dtype=np.int64))
    q = int(np.prod(shape[axis + 1:], dtype=np.int64))
    if dim == 0 or p == 0 or q == 0:
        return True
    g = dim if group_size == 0 or group_size > dim else group_size
    if packed is not None:
        src = np.frombuffer(packed[0], np.uint8)
        kind = _KINDS[packed[1]]
    else:
        src = np.ascontiguousarray(codes).reshape(-1)
        kind = 0
    bf16 = out.dtype == FLOAT_DTYPES["bfloat16"]
    dst = out.reshape(-1).view(np.uint16 if bf16 else F32)
    sf = np.ascontiguousarray(s32).reshape(-1)
    zf = sf if z32 is None else np.ascontiguousarray(z32).reshape(-1)
    units = _quant_kernels.units(p, dim, q, g, _quant_fast.UNIT)
    weights = [4 * (u[1] - u[0]) * (u[3] - u[2]) * g * q for u in units]
    _quant_fast.map_dynamic(lambda j: _quant_kernels.call(kern, src, kind, dim, q, g,
                                                          *units[j], sf, zf, z32 is not None,
                                                          bf16, dst),
                            weights, _parallel.resolve(threads))
    return True
