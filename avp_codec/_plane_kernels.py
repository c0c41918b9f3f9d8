"""Compiled plane transforms for ``floatplane_zstd`` (``_floatplane``).

Each function here is a ``_jit.kernel``: compiled by numba on first use when it is installed, and
otherwise never called. Each has a numpy twin that is the codec's reference code and produces the
same bytes (``_floatplane._streams_numpy`` / ``decompress_into``'s numpy loop); tests
compare the two on adversarial inputs. The kernels only remove numpy's passes over memory:

- encode: the numpy path copies the whole tensor into channel-major order, derives the
  exponent, sign and mantissa streams from that copy in one pass each, then packs the signs.
  The kernel works one P block at a time: a tiled transposing copy of the block's elements
  into a block-sized scratch (tiles of 64 tokens x the block's channels, so the rows read stay
  in L1), then contiguous loops the compiler vectorises write the streams into a reused block
  buffer, which zstd reads while it is still in cache. No tensor-sized temporary.
- decode: per P block, the numpy path unpacks signs, repeats anchors and flips per element,
  builds the values in several passes and scatters them; the kernel checks the block (R-7.17),
  builds the values in the coded order in contiguous loops, then writes them with the same
  tiled transposing copy into the raw tensor.
- byte planes (``byteplane_zstd``) stay numpy: a compiled one-pass split measured slower than
  numpy's k strided gathers, and joining is one strided copy per plane either way.

Kernels are single-threaded and release the GIL (``_jit``); callers run tensors in parallel on
``_parallel``'s pool.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

BLOCK = 1 << 16  # floatplane_zstd's block (spec 7.3.1); _floatplane.BLOCK is the same constant


@kernel
def fp_params(x: np.ndarray, a_n: int, d_n: int, t_n: int, m_bits: int, e_bits: int, w: int,
              step: int, anchors: np.ndarray, flips: np.ndarray) -> None:  # pragma: no cover
    """The reference encoder's anchors (the first most frequent exponent) and flips (majority
    sign) per channel over every ``step``-th token: ``_floatplane.choose_params``'s twin."""
    size = 1 << e_bits
    emask = size - 1
    counts = np.zeros((d_n, size), np.int32)
    sc = np.zeros(d_n, np.int64)
    ts = (t_n + step - 1) // step
    for a in range(a_n):
        counts[:, :] = 0
        sc[:] = 0
        for t in range(0, t_n, step):
            row = (a * t_n + t) * d_n
            for d in range(d_n):
                v = np.int64(x[row + d])
                counts[d, (v >> m_bits) & emask] += 1
                sc[d] += v >> (w - 1)
        for d in range(d_n):
            best, arg = -1, 0
            for e in range(size):
                if counts[d, e] > best:
                    best, arg = counts[d, e], e
            anchors[a * d_n + d] = arg
            flips[a * d_n + d] = 1 if sc[d] * 2 > ts else 0


@kernel
def fp_encode(x: np.ndarray, a_n: int, d_n: int, t_n: int, k: int, m_bits: int, e_bits: int,
              w: int, anchors: np.ndarray, flips: np.ndarray, p: np.ndarray, start: int,
              stop: int, tmp: np.ndarray) -> None:  # pragma: no cover
    """Write P's blocks for the elements ``start..stop`` of the coded order (block-aligned)
    into ``p`` from its offset 0, block by block through ``tmp`` (BLOCK elements of x's
    dtype)."""
    n = a_n * d_n * t_n
    emask = (1 << e_bits) - 1
    top = m_bits - 8 * (k - 1)
    hs = w - 1
    off = 0
    tt = 64
    for i0 in range(start, min(n, stop), BLOCK):
        nb = min(BLOCK, n - i0)
        sb = (nb + 7) // 8
        c0, c1 = i0 // t_n, (i0 + nb - 1) // t_n  # the channels this block touches
        # Phase 1: the transposing gather into tmp (coded order), in tiles of tt tokens x the
        # block's channels so that the rows read stay in L1.
        t_lo = i0 - c0 * t_n
        t_hi = i0 + nb - c1 * t_n
        for t0 in range(t_lo if c0 == c1 else 0, t_hi if c0 == c1 else t_n, tt):
            for c in range(c0, c1 + 1):
                ta = max(t0, t_lo) if c == c0 else t0
                tb = min(t0 + tt, t_hi) if c == c1 else min(t0 + tt, t_n)
                if ta >= tb:
                    continue
                a, d = c // d_n, c % d_n
                lo = c * t_n + ta - i0
                src = (a * t_n + ta) * d_n + d
                xs = x[src:src + (tb - ta) * d_n:d_n]
                ts = tmp[lo:lo + tb - ta]
                for r in range(tb - ta):
                    ts[r] = xs[r]
        # Phase 2, contiguous loops (vectorised): exponent and mantissa streams per channel
        # run, then the channel's flip applied to the sign bit in tmp.
        lo = 0
        for c in range(c0, c1 + 1):
            run = min(nb - lo, (c + 1) * t_n - (i0 + lo))
            an = np.int64(anchors[c])
            ts = tmp[lo:lo + run]
            zs = p[off + lo:off + lo + run]
            for r in range(run):
                zs[r] = ((np.int64(ts[r]) >> m_bits) - an) & emask
            for j in range(k):
                mask = ((1 << top) - 1) if j == k - 1 else 0xFF
                mo = off + nb + sb + j * nb + lo
                ms = p[mo:mo + run]
                for r in range(run):
                    ms[r] = (np.int64(ts[r]) >> (8 * j)) & mask
            if flips[c]:
                for r in range(run):
                    ts[r] ^= np.int64(1) << hs
            lo += run
        so = off + nb
        for b in range(nb >> 3):
            acc = np.int64(0)
            for i in range(8):
                acc |= ((np.int64(tmp[8 * b + i]) >> hs) & 1) << i
            p[so + b] = acc
        if nb & 7:
            acc = np.int64(0)
            for q in range(nb & ~7, nb):
                acc |= ((np.int64(tmp[q]) >> hs) & 1) << (q & 7)
            p[so + (nb >> 3)] = acc
        off += nb * (1 + k) + sb


@kernel
def fp_decode_block(blk: np.ndarray, i0: int, nb: int, a_n: int, d_n: int, t_n: int, k: int,
                    m_bits: int, e_bits: int, w: int, anchors: np.ndarray, flips: np.ndarray,
                    out: np.ndarray, write: bool, tmp: np.ndarray) -> int:  # pragma: no cover
    """Check one P block (R-7.17) and, with ``write``, rebuild its elements into ``out`` (the
    raw tensor, flat), through ``tmp`` (at least ``nb`` elements of out's dtype). Returns 0, or
    the first failed check in the numpy twin's order: 1 exponent symbol out of range, 2 sign
    padding bits, 3 bits above the mantissa."""
    sb = (nb + 7) // 8
    emask = (1 << e_bits) - 1
    top = m_bits - 8 * (k - 1)
    if e_bits < 8:
        acc = np.int64(0)
        for r in range(nb):
            acc |= blk[r]
        if acc >> e_bits:
            return 1
    if nb & 7 and (np.int64(blk[nb + sb - 1]) >> (nb & 7)):
        return 2
    if top < 8:
        acc = np.int64(0)
        last = nb + sb + (k - 1) * nb
        for r in range(nb):
            acc |= blk[last + r]
        if acc >> top:
            return 3
    if not write:
        return 0
    mo = nb + sb
    hs = w - 1
    # Phase 1, in the coded order (contiguous loops the compiler vectorises): the values
    # without their signs, channel run by channel run.
    c0, c1 = i0 // t_n, (i0 + nb - 1) // t_n  # the channels this block touches
    lo = 0
    for c in range(c0, c1 + 1):
        run = min(nb - lo, (c + 1) * t_n - (i0 + lo))
        an = np.int64(anchors[c])
        zs, ts = blk[lo:lo + run], tmp[lo:lo + run]
        m0 = blk[mo + lo:mo + lo + run]
        for r in range(run):
            ts[r] = ((np.int64(zs[r]) + an) & emask) << m_bits | np.int64(m0[r])
        for j in range(1, k):
            mj = blk[mo + j * nb + lo:mo + j * nb + lo + run]
            for r in range(run):
                ts[r] |= np.int64(mj[r]) << (8 * j)
        lo += run
    # The sign bits, eight per packed byte, then each channel's flip.
    for b in range(nb >> 3):
        byte = np.int64(blk[nb + b])
        for i in range(8):
            tmp[8 * b + i] |= ((byte >> i) & 1) << hs
    for q in range(nb & ~7, nb):
        tmp[q] |= ((np.int64(blk[nb + (q >> 3)]) >> (q & 7)) & 1) << hs
    lo = 0
    for c in range(c0, c1 + 1):
        run = min(nb - lo, (c + 1) * t_n - (i0 + lo))
        if flips[c]:
            ts = tmp[lo:lo + run]
            for r in range(run):
                ts[r] ^= np.int64(1) << hs
        lo += run
    # Phase 2: the transposing copy into out, in tiles of tt tokens x the block's channels so
    # that a tile's rows of out stay in L1 until they are complete.
    # When the block's channels share one head (the usual case), write token by token: each
    # token's run of channels is contiguous in out, read with a stride from tmp (in L2).
    a0, a1 = c0 // d_n, c1 // d_n
    if a0 == a1 and c0 < c1:
        d0 = c0 % d_n
        nch = c1 - c0 + 1
        t_lo = i0 - c0 * t_n
        t_hi = i0 + nb - c1 * t_n
        for t in range(t_n):
            cs = 0 if t >= t_lo else 1  # channel c0 starts at token t_lo in this block
            ce = nch if t < t_hi else nch - 1  # channel c1 ends before token t_hi
            if cs >= ce:
                continue
            dst = (a0 * t_n + t) * d_n + d0
            src = t - t_lo
            for ci in range(cs, ce):
                out[dst + ci] = tmp[src + ci * t_n]
        return 0
    tt = 64
    t_lo = i0 - c0 * t_n  # the first channel starts here, the last ends before t_hi
    t_hi = i0 + nb - c1 * t_n
    for t0 in range(t_lo if c0 == c1 else 0, t_hi if c0 == c1 else t_n, tt):
        for c in range(c0, c1 + 1):
            ta = max(t0, t_lo) if c == c0 else t0
            tb = min(t0 + tt, t_hi) if c == c1 else min(t0 + tt, t_n)
            if ta >= tb:
                continue
            a, d = c // d_n, c % d_n
            lo = c * t_n + ta - i0  # position in the block
            run = tb - ta
            dst = (a * t_n + ta) * d_n + d
            os_ = out[dst:dst + run * d_n:d_n]
            ts = tmp[lo:lo + run]
            for r in range(run):
                os_[r] = ts[r]
    return 0
