"""Compiled plane transforms for the plane codecs (``_floatplane``, ``_codecs``' byte planes).

Each function here is a ``_jit.kernel``: compiled by numba on first use when it is installed, and
otherwise never called. Each has a numpy twin that is the codec's reference code and produces the
same bytes (``_floatplane.compress`` / ``decompress_into``, ``_codecs.split_planes``); tests
compare the two on adversarial inputs. The kernels only remove numpy's passes over memory:

- floatplane encode: the numpy path copies the tensor into channel-major order, then derives the
  exponent, sign and mantissa streams from that copy in one pass each, then packs the signs. The
  kernel reads the tensor once, in tiles of ``tt`` tokens x all channels (the tile stays in L1, so
  the transposing read costs no more than a sequential one) and writes every stream of every
  channel directly at its place in the pre-compression buffer P.
- floatplane decode: per P block, the numpy path unpacks signs, repeats anchors and flips per
  element, builds the values in four passes and scatters them; the kernel checks the block
  (R-7.17) and writes each element once into the raw tensor.
- byte planes: one pass that splits all planes, instead of one strided pass per plane (joining
  stays numpy: the planes arrive one after the other, so each is one strided copy either way).

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
              w: int, anchors: np.ndarray, flips: np.ndarray, p: np.ndarray,
              side: int) -> None:  # pragma: no cover
    """Write P's blocks (spec 7.3.1, everything after the side data) into ``p``."""
    n = a_n * d_n * t_n
    emask = (1 << e_bits) - 1
    top = m_bits - 8 * (k - 1)
    tmask = (1 << top) - 1
    bstride = BLOCK * (1 + k) + BLOCK // 8
    for b0 in range(0, n, BLOCK):  # the sign bits are OR-ed in below
        nb = min(BLOCK, n - b0)
        off = side + (b0 // BLOCK) * bstride + nb
        p[off:off + (nb + 7) // 8] = 0
    # Tile: tt tokens x all channels of one [T, D] slice (about 16 KiB of input).
    tt = max(8, min(256, 8192 // max(d_n, 1)))
    for a in range(a_n):
        for t0 in range(0, t_n, tt):
            t1 = min(t_n, t0 + tt)
            for d in range(d_n):
                c = a * d_n + d
                an = np.int64(anchors[c])
                fl = np.int64(flips[c])
                t = t0
                while t < t1:  # a run of this channel's tokens inside one block
                    i = c * t_n + t
                    b0 = (i // BLOCK) * BLOCK
                    nb = min(BLOCK, n - b0)
                    lo = i - b0
                    run = min(t1 - t, nb - lo)
                    off = side + (b0 // BLOCK) * bstride
                    zo = off + lo
                    so = off + nb
                    mo = off + nb + (nb + 7) // 8 + lo
                    src = (a * t_n + t) * d_n + d
                    # Local views: LLVM keeps their bases in registers (measured 2x faster
                    # than indexing p and x with computed offsets).
                    xs = x[src:src + run * d_n:d_n]
                    zs = p[zo:zo + run]
                    for r in range(run):
                        zs[r] = ((np.int64(xs[r]) >> m_bits) - an) & emask
                    for j in range(k):
                        ms = p[mo + j * nb:mo + j * nb + run]
                        mask = tmask if j == k - 1 else 0xFF
                        for r in range(run):
                            ms[r] = (np.int64(xs[r]) >> (8 * j)) & mask
                    # The signs, one packed byte at a time (OR: a byte may be shared with the
                    # neighbouring channel's run); a per-element read-modify-write of the same
                    # byte would chain every element on the previous one's store.
                    q, end = lo, lo + run
                    while q < end:
                        if q & 7 == 0 and q + 8 <= end:  # a whole byte: unrolled
                            r = q - lo
                            hs = w - 1
                            p[so + (q >> 3)] = (
                                (((np.int64(xs[r]) >> hs) ^ fl) & 1)
                                | (((np.int64(xs[r + 1]) >> hs) ^ fl) & 1) << 1
                                | (((np.int64(xs[r + 2]) >> hs) ^ fl) & 1) << 2
                                | (((np.int64(xs[r + 3]) >> hs) ^ fl) & 1) << 3
                                | (((np.int64(xs[r + 4]) >> hs) ^ fl) & 1) << 4
                                | (((np.int64(xs[r + 5]) >> hs) ^ fl) & 1) << 5
                                | (((np.int64(xs[r + 6]) >> hs) ^ fl) & 1) << 6
                                | (((np.int64(xs[r + 7]) >> hs) ^ fl) & 1) << 7)
                            q += 8
                            continue
                        hi = min(end, (q | 7) + 1)
                        acc = np.int64(0)
                        for qq in range(q, hi):
                            acc |= (((np.int64(xs[qq - lo]) >> (w - 1)) ^ fl) & 1) << (qq & 7)
                        p[so + (q >> 3)] |= acc
                        q = hi
                    t += run


@kernel
def fp_decode_block(blk: np.ndarray, i0: int, nb: int, a_n: int, d_n: int, t_n: int, k: int,
                    m_bits: int, e_bits: int, w: int, anchors: np.ndarray, flips: np.ndarray,
                    out: np.ndarray, write: bool) -> int:  # pragma: no cover
    """Check one P block (R-7.17) and, with ``write``, rebuild its elements into ``out`` (the
    raw tensor, flat). Returns 0, or the first failed check in the numpy twin's order:
    1 exponent symbol out of range, 2 sign padding bits, 3 bits above the mantissa."""
    sb = (nb + 7) // 8
    emask = (1 << e_bits) - 1
    top = m_bits - 8 * (k - 1)
    if e_bits < 8:
        acc = 0
        for r in range(nb):
            acc |= blk[r]
        if acc >> e_bits:
            return 1
    if nb & 7 and (np.int64(blk[nb + sb - 1]) >> (nb & 7)):
        return 2
    if top < 8:
        acc = 0
        last = nb + sb + (k - 1) * nb
        for r in range(nb):
            acc |= blk[last + r]
        if acc >> top:
            return 3
    if not write:
        return 0
    mo = nb + sb
    c0, c1 = i0 // t_n, (i0 + nb - 1) // t_n  # the channels this block touches
    # Tiles of tt tokens x the block's channels: a tile's writes (tt rows of the raw tensor)
    # stay in L1 until they are complete, instead of one cache line per element.
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
            an = np.int64(anchors[c])
            fl = np.int64(flips[c])
            lo = c * t_n + ta - i0  # position in the block
            run = tb - ta
            dst = (a * t_n + ta) * d_n + d
            os_ = out[dst:dst + run * d_n:d_n]
            zs = blk[lo:lo + run]
            m0 = blk[mo + lo:mo + lo + run]
            m1 = blk[mo + nb + lo:mo + nb + lo + run] if k > 1 else m0
            m2 = blk[mo + 2 * nb + lo:mo + 2 * nb + lo + run] if k > 2 else m0
            sg = blk[nb:nb + sb]
            hs = w - 1
            for r in range(run):
                q = lo + r
                v = ((((np.int64(sg[q >> 3]) >> (q & 7)) ^ fl) & 1) << hs
                     | ((np.int64(zs[r]) + an) & emask) << m_bits | np.int64(m0[r]))
                if k > 1:
                    v |= np.int64(m1[r]) << 8
                if k > 2:
                    v |= np.int64(m2[r]) << 16
                os_[r] = v
    return 0


@kernel
def split_planes(src: np.ndarray, k: int, out: np.ndarray) -> None:  # pragma: no cover
    """Plane j of ``out`` holds byte j of every k-byte element of ``src`` (both uint8): one pass
    over ``src`` in chunks that stay in L1, where numpy makes k strided passes."""
    n = len(src) // k
    step = 4096
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        for j in range(k):
            dst = out[j * n + i0:j * n + i1]
            col = src[i0 * k + j:i1 * k:k]
            for r in range(i1 - i0):
                dst[r] = col[r]
