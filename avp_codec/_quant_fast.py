"""The reference AFFINE producer (spec 12.4), in cache-sized segments on threads.

Same arithmetic as ``_quant_core.quantize_affine`` without clip search, so the same codes and
parameters: per group, min and max (or the absolute max without a zero point) in binary32, the
parameters in binary64 rounded to the parameter dtype (float32 for the whole tensor when that
dtype cannot hold them, decided once all groups are known), then codes ``rint(x / s + z)``
clipped, in binary32. Two passes over the input, each segment by segment (see
``_quant_dequant._segments``) on a thread pool: group statistics, then codes. Group reductions
run as elementwise minimum / maximum over halves of the group (numpy reduces a short inner axis
an order of magnitude slower than it combines two arrays), and nothing is ever repeated out to
one parameter per element.

When numba is installed (and ``AVP_KERNELS`` is not ``numpy``), both passes run as the compiled
kernels of ``_quant_kernels`` instead, on work units of whole groups taken by the threads from a
shared counter (``map_dynamic``); the parameter step between them is this module's, shared. The
bytes are the same either way (tests/quant/test_quant_kernels.py). Tensors whose stored scale
rounds to zero or whose zero point is not finite take the numpy codes pass (their NaN codes are
whatever numpy's cast gives).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import ml_dtypes
import numpy as np

from . import _parallel, _quant_kernels
from ._quant_dequant import _segments

F32 = np.float32
_BF16 = np.dtype(ml_dtypes.bfloat16)
T = TypeVar("T")
UNIT = 1 << 16  # elements per compiled work unit (about; whole groups)


def _widen(x: np.ndarray) -> np.ndarray:
    """binary32 copy of a float segment; bfloat16 by a shift of its bits (exact, 3x faster)."""
    if x.dtype == _BF16:
        out = np.left_shift(x.view(np.uint16), 16, dtype=np.uint32)
        return out.view(F32)
    return x.astype(F32)


def _fold(x: np.ndarray, op: np.ufunc) -> np.ndarray:
    """op-reduce axis -2 of x ([..., g, q]) by halving: elementwise over the rest."""
    g = x.shape[-2]
    if g == 1:
        return x[..., 0, :]
    if x.shape[-1] > 1:  # the group axis is not innermost: numpy reduces it fast itself
        r: np.ndarray = op.reduce(x, axis=-2)
        return r
    m = x
    while g > 1:
        h = g // 2
        n = op(m[..., :h, :], m[..., h:2 * h, :])
        if g % 2:
            op(n[..., :1, :], m[..., 2 * h:, :], out=n[..., :1, :])
        m, g = n, h
    return m[..., 0, :]


def _views(xf: np.ndarray, d0: int, d1: int, g: int) -> list[tuple[np.ndarray, int]]:
    """(view [p, groups, g', q], first group) pieces of a [p, d1-d0, q] segment."""
    p, dd, q = xf.shape
    g0 = d0 // g
    if (d1 - 1) // g == g0:
        return [(xf.reshape(p, 1, dd, q), g0)]
    full = dd // g
    out = [(xf[:, :full * g].reshape(p, full, g, q), g0)]
    if full * g < dd:
        out.append((xf[:, full * g:].reshape(p, 1, dd - full * g, q), g0 + full))
    return out


def _bf16_keys(x: np.ndarray, absolute: bool) -> np.ndarray:
    """int16 keys of a bfloat16 segment that order like the values (NaNs past the infinities):
    the bits with the magnitude bits of negatives flipped, or the magnitude alone (``absolute``).
    Group min / max then run on 2-byte integers, with no widening; signed zeros may come back
    as either sign, which no parameter depends on (s and z use hi - lo and -lo)."""
    s = x.view(np.int16)
    if absolute:
        return np.bitwise_and(s, 0x7FFF)
    k = np.right_shift(s, 15)
    k &= 0x7FFF
    k ^= s
    return k


def _keys_to_f32(k: np.ndarray) -> np.ndarray:
    """binary32 values of int16 keys (the key map is its own inverse)."""
    s = np.right_shift(k, 15)
    s &= 0x7FFF
    s ^= k
    wide: np.ndarray = np.left_shift(s.view(np.uint16), 16, dtype=np.uint32)
    return wide.view(F32)


def _bf16_stats(seg: np.ndarray, d0: int, d1: int, g: int, zero_point: bool
                ) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
    """(first group, max, min or None) of a bfloat16 [p, d, q] segment, per group, as keys."""
    keys = _bf16_keys(seg, not zero_point)
    out: list[tuple[int, np.ndarray, np.ndarray | None]] = []
    for v, first in _views(keys, d0, d1, g):
        p, groups, gg, q = v.shape
        if q == 1 and gg > 1:
            # Groups along the innermost axis: numpy reduces a short contiguous axis slowly, so
            # the segment is transposed once and reduced along its outer axis.
            t = np.ascontiguousarray(v.reshape(p * groups, gg).T)
            hi = np.maximum.reduce(t, axis=0).reshape(p, groups, 1)
            lo = np.minimum.reduce(t, axis=0).reshape(p, groups, 1) if zero_point else None
        else:
            hi = np.maximum.reduce(v, axis=2)
            lo = np.minimum.reduce(v, axis=2) if zero_point else None
        out.append((first, hi, lo))
    return out


def _no_clip(hi: np.ndarray, lo: np.ndarray | None, s32: np.ndarray, z32: np.ndarray | None,
             qmin: int, qmax: int) -> bool:
    """Whether clipping the codes to [qmin, qmax] can change none of them: x / s + z and its
    rounding are monotone in x for s > 0, so the codes of a group lie between those of its
    minimum and maximum, computed here with the same binary32 operations."""
    if not bool(np.all(s32 > 0)):
        return False
    with np.errstate(all="ignore"):
        top = hi / s32
        bottom = (lo if lo is not None else -hi) / s32
        if z32 is not None:
            top += z32
            bottom += z32
        return bool(np.all(np.rint(top) <= qmax) and np.all(np.rint(bottom) >= qmin))


def quantize_affine(x: np.ndarray, axis: int, group_size: int, qmin: int, qmax: int,
                    zero_point: bool, make_params: object, out_dtype: np.dtype[Any],
                    threads: int | None = None, pack: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(codes, scale, zero point) of a non-empty float array; ``make_params(lo, hi)`` turns the
    binary64 group ranges into the stored (scale, zero point). ``pack``: int4 / uint4 codes
    come back packed (``pack4``'s bytes as a flat uint8 array)."""
    shape = x.shape
    dim = shape[axis]
    p = int(np.prod(shape[:axis], dtype=np.int64))
    q = int(np.prod(shape[axis + 1:], dtype=np.int64))
    g = dim if group_size == 0 or group_size > dim else group_size
    n = _parallel.resolve(threads)
    x3 = np.ascontiguousarray(x).reshape(p, dim, q)
    fast = _fast_inputs(x3)
    if fast is not None:
        try:
            return _quantize_compiled(fast, shape, p, dim, q, g, qmin, qmax, zero_point,
                                      make_params, out_dtype, n, pack)
        except _quant_kernels.KernelFailure:
            pass  # numba could not compile or run a kernel: the numpy twin, same bytes
    hi, lo = _stats_numpy(x3, p, dim, q, g, zero_point, n)
    codes, scale, zp = _finish_codes(x3, shape, p, dim, q, g, qmin, qmax, zero_point,
                                     make_params, out_dtype, n, hi, lo)
    return (np.frombuffer(pack4(codes), np.uint8) if pack else codes), scale, zp


def map_dynamic(fn: Callable[[int], T], weights: Sequence[int], threads: int) -> list[T]:
    """[fn(i) for i in range(len(weights))] like ``_parallel.map_ordered``, but the threads
    take items one at a time from a shared counter instead of a fixed share each: on a shared
    machine, a thread left waiting for a core leaves its work to the others instead of holding
    up the result. Results come back in order and must not depend on which thread ran them
    (the kernels write disjoint outputs); at most ``threads`` threads, the caller's included."""
    n = len(weights)
    if threads <= 1 or n < 2 or sum(weights) < _parallel.MIN_PARALLEL_BYTES:
        return [fn(i) for i in range(n)]
    results: list[Any] = [None] * n
    counter = itertools.count()  # next() on a count is atomic under the GIL

    def work() -> None:
        for i in counter:
            if i >= n:
                return
            results[i] = fn(i)

    helpers = min(threads, n) - 1
    pool = _parallel._get_pool(helpers)
    futures = [pool.submit(work) for _ in range(helpers)]
    work()
    for f in futures:
        # A helper still queued (the pool busy, e.g. with this caller's own job) is not waited
        # for: the counter is spent, so it would find nothing to do.
        if not f.cancel():
            f.result()
    return results


def _params(hi: np.ndarray, lo: np.ndarray, zero_point: bool, make_params: object
            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """(scale, zero point, their binary32 values) from the binary32 group ranges, rejecting
    non-finite ranges (shared by both paths)."""
    if not (np.isfinite(hi).all() and (not zero_point or np.isfinite(lo).all())):
        raise ValueError("cannot quantize non-finite values")
    hi64 = hi.astype(np.float64)
    lo64 = lo.astype(np.float64) if zero_point else -hi64
    scale, zp = make_params(lo64, hi64)  # type: ignore[operator]
    s32 = scale.astype(F32)
    z32 = None if zp is None else zp.astype(F32)
    return scale, zp, s32, z32


def _stats_numpy(x3: np.ndarray, p: int, dim: int, q: int, g: int, zero_point: bool, n: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) binary32 group ranges [p, groups, q] (lo unused without a zero point)."""
    groups = -(-dim // g)
    segs = list(_segments(p, dim, q, g))
    weights = [(s[1] - s[0]) * (s[3] - s[2]) * q for s in segs]
    bf16 = x3.dtype == _BF16
    # bfloat16 ranges are gathered as int16 keys (see _bf16_keys) and widened once at the end.
    if bf16:
        lo = np.full((p, groups, q), np.iinfo(np.int16).max, np.int16)
        hi = np.full((p, groups, q), np.iinfo(np.int16).min, np.int16)
    else:
        lo = np.full((p, groups, q), np.inf, F32)
        hi = np.full((p, groups, q), -np.inf, F32)

    def stats(j: int) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
        p0, p1, d0, d1 = segs[j]
        if bf16:
            return _bf16_stats(x3[p0:p1, d0:d1], d0, d1, g, zero_point)
        xf = _widen(x3[p0:p1, d0:d1])
        if not zero_point:
            np.abs(xf, out=xf)
        return [(first, _fold(v, np.maximum), _fold(v, np.minimum) if zero_point else None)
                for v, first in _views(xf, d0, d1, g)]

    # A segment may hold part of a group only (a group longer than a segment): partial results
    # are combined here, in order, on this thread (min / max propagate NaN, as they must).
    for (p0, p1, _, _), parts in zip(segs, _parallel.map_ordered(stats, weights, n),
                                     strict=True):
        for first, h, low in parts:
            sl = (slice(p0, p1), slice(first, first + h.shape[1]))
            np.maximum(hi[sl], h, out=hi[sl])
            if low is not None:
                np.minimum(lo[sl], low, out=lo[sl])
    if bf16:
        hi, lo = _keys_to_f32(hi), _keys_to_f32(lo)
    return hi, lo


def _finish_codes(x3: np.ndarray, shape: tuple[int, ...], p: int, dim: int, q: int, g: int,
                  qmin: int, qmax: int, zero_point: bool, make_params: object,
                  out_dtype: np.dtype[Any], n: int, hi: np.ndarray, lo: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The numpy codes pass, from the group ranges."""
    scale, zp, s32, z32 = _params(hi, lo, zero_point, make_params)
    segs = list(_segments(p, dim, q, g))
    weights = [(s[1] - s[0]) * (s[3] - s[2]) * q for s in segs]
    codes = np.empty((p, dim, q), out_dtype)
    clip = not _no_clip(hi, lo if zero_point else None, s32, z32, qmin, qmax)
    # Groups along the innermost axis (q == 1): a parameter broadcast over a short inner axis
    # is slow in numpy, so whole groups get their parameters repeated out for the segment.
    inner = q == 1 and g > 1

    def params(a: np.ndarray, p0: int, p1: int, first: int, v: np.ndarray) -> np.ndarray:
        k = v.shape[1]
        if inner and v.shape[2] == g:
            return np.repeat(a[p0:p1, first:first + k], g, axis=1).reshape(v.shape)
        return a[p0:p1, first:first + k, None]

    def encode(j: int) -> None:
        p0, p1, d0, d1 = segs[j]
        xf = _widen(x3[p0:p1, d0:d1])
        for v, first in _views(xf, d0, d1, g):
            np.divide(v, params(s32, p0, p1, first, v), out=v)
            if z32 is not None:
                np.add(v, params(z32, p0, p1, first, v), out=v)
        np.rint(xf, out=xf)
        if clip:
            np.clip(xf, qmin, qmax, out=xf)
        np.copyto(codes[p0:p1, d0:d1], xf, casting="unsafe")

    _parallel.map_ordered(encode, weights, n)
    return codes.reshape(shape), scale, zp


def _fast_inputs(x3: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """(int bits for the keys, uint bits for the codes, shift, magnitude mask) when the
    compiled kernels will run, else None. float16 is widened to binary32 once (exact)."""
    if _quant_kernels.get(_quant_kernels.group_keys) is None:
        return None
    flat = x3.reshape(-1)
    if x3.dtype == _BF16:
        return flat.view(np.int16), flat.view(np.uint16), 16, 0x7FFF
    if x3.dtype != F32:
        flat = flat.astype(F32)
    return flat.view(np.int32), flat.view(np.uint32), 0, 0x7FFFFFFF


def _quantize_compiled(fast: tuple[np.ndarray, np.ndarray, int, int], shape: tuple[int, ...],
                       p: int, dim: int, q: int, g: int, qmin: int, qmax: int,
                       zero_point: bool, make_params: object, out_dtype: np.dtype[Any], n: int,
                       nibbles: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The two passes of the numpy path through the compiled kernels, unit by unit on the
    pool: group ranges as order keys, then (after the same parameter step) the codes."""
    keys, ubits, shift, mask = fast
    xin = ubits if shift else ubits.view(F32)
    groups = -(-dim // g)
    units = _quant_kernels.units(p, dim, q, g, UNIT)
    weights = [(u[1] - u[0]) * (u[3] - u[2]) * g * q for u in units]
    lo_k = np.empty(p * groups * q, np.int32)
    hi_k = np.empty(p * groups * q, np.int32)
    stats = _quant_kernels.get(_quant_kernels.group_keys)
    enc = _quant_kernels.get(_quant_kernels.affine_codes)
    if stats is None or enc is None:
        raise _quant_kernels.KernelFailure("kernel unavailable")
    map_dynamic(lambda j: _quant_kernels.call(stats, keys, dim, q, g, *units[j], zero_point,
                                              mask, lo_k, hi_k), weights, n)
    if shift:  # bfloat16 keys: the int16 key map, inverted as in the numpy path
        hi = _keys_to_f32(hi_k.astype(np.int16)).reshape(p, groups, q)
        lo = _keys_to_f32(lo_k.astype(np.int16)).reshape(p, groups, q)
    else:
        hi = _keys32_to_f32(hi_k).reshape(p, groups, q)
        lo = _keys32_to_f32(lo_k).reshape(p, groups, q)
    scale, zp, s32, z32 = _params(hi, lo, zero_point, make_params)
    if not (np.all(s32 > 0) and np.isfinite(s32).all()
            and (z32 is None or np.isfinite(z32).all())):
        # A scale rounded to zero (ranges near the smallest subnormal) or a non-finite zero
        # point make NaN codes, whose integer conversion the numpy path leaves to the C cast:
        # such tensors take the numpy codes pass so the bytes stay the same.
        codes, scale, zp = _finish_codes(ubits.view(_BF16 if shift else F32).reshape(
            p, dim, q), shape, p, dim, q, g, qmin, qmax, zero_point, make_params, out_dtype,
            n, hi, lo)
        return (np.frombuffer(pack4(codes), np.uint8) if nibbles else codes), scale, zp
    clip = not _no_clip(hi, lo if zero_point else None, s32, z32, qmin, qmax)
    total = p * dim * q
    if nibbles:  # int4 / uint4 codes packed as they are made: no unpacked array
        codes = np.empty((total + 1) // 2, np.uint8)
        codes[-1:] = 0  # the pad nibble of an odd count is zero
        # Units share a byte where one starts at an odd element: then they run in order.
        if any(((u[0] * dim + u[2] * g) * q) % 2 for u in units):
            n = 1
    else:
        codes = np.empty(total, out_dtype)
    sf = s32.reshape(-1)
    zf = sf if z32 is None else z32.reshape(-1)

    def run(j: int) -> None:
        # The scratch has the output's dtype (numba types both branches alike): packed codes
        # go through uint8, where a negative int4 code wraps to its two's complement nibble.
        work = np.empty(_quant_kernels.CHUNK, np.uint8) if nibbles else codes[:0]
        _quant_kernels.call(enc, xin, shift != 0, dim, q, g, *units[j], sf, zf,
                            z32 is not None, float(qmin), float(qmax), clip, nibbles, work,
                            codes)

    map_dynamic(run, weights, n)
    return (codes if nibbles else codes.reshape(shape)), scale, zp


def _keys32_to_f32(k: np.ndarray) -> np.ndarray:
    """binary32 values of int32 order keys (the key map is its own inverse)."""
    s = np.right_shift(k, 31)
    s &= 0x7FFFFFFF
    s ^= k
    out: np.ndarray = s.view(F32)
    return out


def pack4(codes: np.ndarray) -> memoryview:
    """int4/uint4 codes (one per element, in range) packed two to a byte, element 2i in the
    low nibble (spec 7.2), without the range checks of the general packer. Each pair of codes
    is one little-endian 16-bit word, low code in the low byte: masking both nibbles and
    folding the high one down packs a pair in three operations on contiguous words."""
    u = codes.reshape(-1).view(np.uint8)
    if u.size % 2:
        u = np.concatenate([u, np.zeros(1, np.uint8)])
    m = np.bitwise_and(np.ascontiguousarray(u).view("<u2"), np.uint16(0x0F0F))
    m |= m >> np.uint16(4)
    return memoryview(m.astype(np.uint8))
