"""Compiled AFFINE quantize / dequantize kernels (numba, through ``_jit``), one work unit each.

Each kernel is the compiled twin of numpy code in ``_quant_fast`` / ``_quant_dequant`` and
produces the same bytes (tests/quant/test_quant_kernels.py checks it on adversarial inputs):

- ``group_keys``: per group, the minimum and maximum (or the absolute maximum) of the input as
  order keys, integers that sort like the values (``_quant_fast._bf16_keys``, widened to int32
  for binary32 input). Integer min / max vectorise where float min / max, with their NaN rules,
  do not; the caller turns the keys back into binary32 and rejects non-finite ranges exactly as
  the numpy path does (NaNs sort past the infinities, so they reach the group's max or min).
- ``affine_codes``: ``rint(x / s + z)`` (clipped to [qmin, qmax] when the caller could not
  prove clipping changes nothing), every operation in binary32, written as int8 / uint8 codes.
- ``affine_dequant``: ``(float32(q) - z) * s`` or ``float32(q) * s`` in binary32, the codes
  read from int8 / uint8 arrays or from packed int4 / uint4 / uint2 bytes (element 2i in the low
  nibble, element 4i in the lowest crumb, spec 7.2), rounded to bfloat16 with the same
  round-to-nearest-even on the bit pattern as ``_quant_core._finish_into``, or stored as
  binary32. Only for NaN-free results (integer codes, finite parameters), like ``_finish_into``.

The tensor is viewed as ``[P, dim, Q]`` around the quantized axis, its parameters as
``[P, G, Q]``; one group of one ``p`` is then a contiguous run of ``gl * Q`` elements. A work
unit is the range of groups ``[g0, g1)`` of the rows ``[p0, p1)`` (``g0 = 0, g1 = G`` when it
spans several rows): units never share a group, so threads write disjoint outputs and the result
does not depend on how units are spread. Bit casts between binary32 and its bits use the
numpy scalar ``view``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _jit

CHUNK = 4096  # codes widened per scratch pass (16 KiB of binary32: stays in L1)



@_jit.kernel
def group_keys(x: np.ndarray, dim: int, q: int, g: int, p0: int, p1: int, g0: int, g1: int,
               zero_point: bool, mask: int, lo: np.ndarray, hi: np.ndarray) -> None:
    """lo / hi ([P * G * Q] int32) of the groups of a unit; x is the input's bits as a flat
    int16 (bfloat16) or int32 (binary32) array; mask 0x7FFF or 0x7FFFFFFF (magnitude bits)."""
    n_groups = (dim + g - 1) // g
    m = np.int32(mask)
    for p in range(p0, p1):
        for gi in range(g0, g1):
            d0 = gi * g
            gl = min(dim, d0 + g) - d0
            base = (p * dim + d0) * q
            ob = (p * n_groups + gi) * q
            if q == 1:
                mx = np.int32(-2147483648)
                mn = np.int32(2147483647)
                xs = x[base:base + gl]  # a slice: indices known non-negative (see affine_codes)
                if zero_point:
                    for i in range(gl):
                        s = np.int32(xs[i])
                        k = s ^ ((s >> np.int32(31)) & m)
                        mn = min(mn, k)
                        mx = max(mx, k)
                    lo[ob] = mn
                else:
                    for i in range(gl):
                        k = np.int32(xs[i]) & m
                        mx = max(mx, k)
                hi[ob] = mx
                continue
            los = lo[ob:ob + q]
            his = hi[ob:ob + q]
            his[:] = np.int32(-2147483648)
            los[:] = np.int32(2147483647)
            for r in range(gl):
                xs = x[base + r * q:base + r * q + q]
                if zero_point:
                    for c in range(q):
                        s = np.int32(xs[c])
                        k = s ^ ((s >> np.int32(31)) & m)
                        los[c] = min(los[c], k)
                        his[c] = max(his[c], k)
                else:
                    for c in range(q):
                        k = np.int32(xs[c]) & m
                        his[c] = max(his[c], k)


@_jit.kernel
def affine_codes(x: np.ndarray, bf16: bool, dim: int, q: int, g: int, p0: int, p1: int,
                 g0: int, g1: int, s32: np.ndarray, z32: np.ndarray, has_z: bool, qmin: float,
                 qmax: float, clip: bool, nibbles: bool, work: np.ndarray,
                 out: np.ndarray) -> None:
    """Codes of a unit into ``out``: flat int8 / uint8, one per element, or (``nibbles``) the
    int4 / uint4 packing of spec 7.2 (element 2i in the low nibble), read-modify-write at the
    unit's ends, so units may run on threads only when they start at even elements. x is the
    flat input: its bits as uint16 (bfloat16) or binary32 values; s32 / z32 are the stored
    parameters as flat binary32 [P * G * Q] (z32 ignored without a zero point); ``work`` is a
    scratch of CHUNK codes of out's dtype (used when packing)."""
    n_groups = (dim + g - 1) // g
    lo = np.float32(qmin)
    hi = np.float32(qmax)
    for p in range(p0, p1):
        for gi in range(g0, g1):
            d0 = gi * g
            gl = min(dim, d0 + g) - d0
            base = (p * dim + d0) * q
            ob = (p * n_groups + gi) * q
            # A group is one contiguous run with one parameter (q == 1), or gl rows of q
            # elements with a parameter per column.
            rows = 1 if q == 1 else gl
            rowlen = gl if q == 1 else q
            for r in range(rows):
                for c0 in range(0, rowlen, CHUNK):
                    n = min(CHUNK, rowlen - c0)
                    src = base + r * rowlen + c0
                    # Slices, so that indices are known non-negative (numba's wraparound
                    # checks on computed indices keep loops from vectorising).
                    xs = x[src:src + n]
                    dst = work[:n] if nibbles else out[src:src + n]
                    if q == 1:
                        sv = s32[ob]
                        zv = z32[ob] if has_z else np.float32(0)
                        for j in range(n):
                            if bf16:  # its bits are the high half of the binary32 (exact)
                                v = np.uint32(np.uint32(xs[j]) << np.uint32(16)).view(
                                    np.float32)
                            else:
                                v = np.float32(xs[j])
                            v = v / sv
                            if has_z:
                                v = v + zv
                            v = np.rint(v)
                            if clip:
                                v = min(max(v, lo), hi)
                            dst[j] = np.int32(v)
                    else:
                        ss = s32[ob + c0:ob + c0 + n]
                        zs = z32[ob + c0:ob + c0 + n] if has_z else ss
                        for j in range(n):
                            if bf16:
                                v = np.uint32(np.uint32(xs[j]) << np.uint32(16)).view(
                                    np.float32)
                            else:
                                v = np.float32(xs[j])
                            v = v / ss[j]
                            if has_z:
                                v = v + zs[j]
                            v = np.rint(v)
                            if clip:
                                v = min(max(v, lo), hi)
                            dst[j] = np.int32(v)
                    if nibbles:
                        j0 = src & 1
                        if j0:  # element src is the high nibble of a byte begun before
                            k = src >> 1
                            out[k] = (out[k] & 15) | ((np.int32(dst[0]) & 15) << 4)
                        pairs = (n - j0) >> 1
                        ob_ = (src + j0) >> 1
                        os_ = out[ob_:ob_ + pairs]
                        ds = dst[j0:j0 + 2 * pairs]
                        for i in range(pairs):
                            os_[i] = (np.int32(ds[2 * i]) & 15) | (
                                (np.int32(ds[2 * i + 1]) & 15) << 4)
                        if j0 + 2 * pairs < n:  # the low nibble of a byte finished later
                            k = (src + n - 1) >> 1
                            out[k] = (out[k] & 240) | (np.int32(dst[n - 1]) & 15)


@_jit.kernel
def affine_dequant(codes: np.ndarray, kind: int, dim: int, q: int, g: int, p0: int, p1: int,
                   g0: int, g1: int, s32: np.ndarray, z32: np.ndarray, has_z: bool,
                   bf16: bool, out: np.ndarray) -> None:
    """Dequantize a unit into ``out`` (flat: uint16 bits of bfloat16, or binary32). ``kind``:
    0 codes one per element (int8 / uint8 array), 1 packed int4, 2 packed uint4, 3 packed
    uint2 (``codes`` the packed bytes). Codes are first widened into a small binary32 scratch
    run (packed bytes one byte at a time, so the loops vectorise), then combined."""
    n_groups = (dim + g - 1) // g
    scratch = np.empty(CHUNK + 8, np.float32)
    for p in range(p0, p1):
        for gi in range(g0, g1):
            d0 = gi * g
            gl = min(dim, d0 + g) - d0
            base = (p * dim + d0) * q
            ob = (p * n_groups + gi) * q
            # A group is one contiguous run with one parameter (q == 1), or gl rows of q
            # elements with a parameter per column.
            rows = 1 if q == 1 else gl
            rowlen = gl if q == 1 else q
            for r in range(rows):
                for c0 in range(0, rowlen, CHUNK):
                    n = min(CHUNK, rowlen - c0)
                    src = base + r * rowlen + c0
                    # scratch[lead:lead + n] are the codes of elements src .. src + n - 1
                    lead = 0
                    if kind == 0:
                        cs = codes[src:src + n]
                        for j in range(n):
                            scratch[j] = np.float32(cs[j])
                    elif kind == 3:
                        lead = src & 3
                        bs = codes[src >> 2:(src + n + 3) >> 2]
                        for i in range(bs.size):
                            b = np.int32(bs[i])
                            scratch[4 * i] = np.float32(b & 3)
                            scratch[4 * i + 1] = np.float32((b >> 2) & 3)
                            scratch[4 * i + 2] = np.float32((b >> 4) & 3)
                            scratch[4 * i + 3] = np.float32((b >> 6) & 3)
                    else:
                        lead = src & 1
                        bs = codes[src >> 1:(src + n + 1) >> 1]
                        if kind == 1:  # two's complement nibbles: (n ^ 8) - 8
                            for i in range(bs.size):
                                b = np.int32(bs[i])
                                scratch[2 * i] = np.float32(((b & 15) ^ 8) - 8)
                                scratch[2 * i + 1] = np.float32(((b >> 4) ^ 8) - 8)
                        else:
                            for i in range(bs.size):
                                b = np.int32(bs[i])
                                scratch[2 * i] = np.float32(b & 15)
                                scratch[2 * i + 1] = np.float32(b >> 4)
                    cv = scratch[lead:lead + n]
                    os_ = out[src:src + n]  # slices: indices known non-negative
                    if q == 1:
                        sv = s32[ob]
                        zv = z32[ob]
                        for j in range(n):
                            v = (cv[j] - zv) * sv if has_z else cv[j] * sv
                            if bf16:  # round to nearest even on the bits, as _finish_into
                                w = np.float32(v)  # one definition: numba views only those
                                b = w.view(np.uint32)
                                os_[j] = np.uint16((b + np.uint32(0x7FFF)
                                                    + ((b >> np.uint32(16)) & np.uint32(1)))
                                                   >> np.uint32(16))
                            else:
                                os_[j] = v
                    else:
                        ss = s32[ob + c0:ob + c0 + n]
                        zs = z32[ob + c0:ob + c0 + n] if has_z else ss
                        for j in range(n):
                            v = (cv[j] - zs[j]) * ss[j] if has_z else cv[j] * ss[j]
                            if bf16:
                                w = np.float32(v)
                                b = w.view(np.uint32)
                                os_[j] = np.uint16((b + np.uint32(0x7FFF)
                                                    + ((b >> np.uint32(16)) & np.uint32(1)))
                                                   >> np.uint32(16))
                            else:
                                os_[j] = v


class KernelFailure(Exception):
    """A compiled kernel could not be made or run (no cache location, a broken llvmlite, a
    numba error): the caller falls back to the numpy twin, which gives the same bytes."""


def get(k: _jit.Kernel) -> Any:
    """``k.get()``, or None when the kernels are off or numba fails to set the kernel up
    (``cache=True`` raises when it finds nowhere to write its cache)."""
    try:
        return k.get()
    except Exception:  # noqa: BLE001 - any failure to set up means: use the numpy twin
        return None


def call(fn: Any, *args: Any) -> None:
    """fn(*args), numba's own errors (compiling a new signature) raised as KernelFailure."""
    try:
        fn(*args)
    except Exception as e:
        nb = _jit._load_numba()
        if nb is not None and isinstance(e, nb.core.errors.NumbaError):
            raise KernelFailure(str(e)) from e
        raise


def units(p: int, dim: int, q: int, g: int, target: int) -> list[tuple[int, int, int, int]]:
    """(p0, p1, g0, g1) work units of about ``target`` elements, whole groups each."""
    n_groups = -(-dim // g)
    row = dim * q
    if p == 0 or row == 0:
        return []
    if row <= target:
        step = max(1, target // row)
        return [(p0, min(p, p0 + step), 0, n_groups) for p0 in range(0, p, step)]
    per = max(1, target // (g * q))
    return [(p0, p0 + 1, g0, min(n_groups, g0 + per))
            for p0 in range(p) for g0 in range(0, n_groups, per)]
