"""Work spread over threads for the encoder, the verifying decoder and the codecs.

The heavy steps (memcpy through numpy, CRC32C, zstd, numpy arithmetic) release the GIL, so
plain threads run them on every core the process may use. Work is split into contiguous shares
of about equal bytes, one per thread (the calling thread takes one itself), and the results
come back in the original order: nothing a caller sees depends on the number of threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import crc32c
import numpy as np

from . import _copy_kernels

T = TypeVar("T")
MIN_PARALLEL_BYTES = 4 << 20  # below this, thread hand-offs cost more than they save
COPY_CHUNK = 1 << 18  # copy+CRC granularity: source and copy (512 KiB) stay in L2 for the CRC
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool when needed."""
    global _pool, _pool_size, _lock
    _pool, _pool_size, _lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def default_threads() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError("threads must be a positive integer or None")
    return threads


def _get_pool(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            _pool = ThreadPoolExecutor(max(n, 2), thread_name_prefix="avp")
            _pool_size = max(n, 2)
        return _pool


def shares(weights: Sequence[int], n: int) -> list[range]:
    """Split indices 0..len-1 into at most n contiguous ranges of about equal total weight."""
    total = sum(weights)
    out: list[range] = []
    start, acc = 0, 0
    for i, w in enumerate(weights):
        acc += w
        if len(out) < n - 1 and acc >= total * (len(out) + 1) / n:
            out.append(range(start, i + 1))
            start = i + 1
    if start < len(weights):
        out.append(range(start, len(weights)))
    return out


def map_ordered(fn: Callable[[int], T], weights: Sequence[int], threads: int) -> list[T]:
    """[fn(i) for i in range(len(weights))], on up to ``threads`` threads when it pays."""
    n = len(weights)
    if threads <= 1 or n < 2 or sum(weights) < MIN_PARALLEL_BYTES:
        return [fn(i) for i in range(n)]
    parts = shares(weights, threads)
    if len(parts) < 2:
        return [fn(i) for i in range(n)]
    pool = _get_pool(len(parts) - 1)

    def run(r: range) -> list[T]:
        return [fn(i) for i in r]

    futures = [pool.submit(run, r) for r in parts[1:]]
    results = run(parts[0])
    for f in futures:
        results += f.result()
    return results


def copy_crc(dst: np.ndarray, src: memoryview, crc: int = 0) -> int:
    """Copy ``src`` into ``dst`` (a uint8 array of the same length) and return the CRC32C of
    ``src`` continued from ``crc``: the compiled one-pass kernel (``_copy_kernels``) for large
    copies where it is available, else the numpy twin (same bytes, same CRC)."""
    s = np.frombuffer(src, np.uint8)
    if len(s) >= _copy_kernels.MIN_BYTES:
        fn = _copy_kernels.get()
        if fn is not None:
            result: int = fn(dst, s, crc)
            return result
    return copy_crc_numpy(dst, src, crc)


def copy_crc_numpy(dst: np.ndarray, src: memoryview, crc: int = 0) -> int:
    """The numpy twin of the kernel: copy chunk by chunk, computing the CRC32C of each chunk
    just before copying it: the CRC pulls the chunk into cache, and the copy then reads it from
    there (measured faster than copying first and checking the copy, whose stores compete with
    the next chunk's loads)."""
    s = np.frombuffer(src, np.uint8)
    for off in range(0, len(s), COPY_CHUNK):
        crc = crc32c.crc32c(src[off:off + COPY_CHUNK], crc)
        np.copyto(dst[off:off + COPY_CHUNK], s[off:off + COPY_CHUNK])
    return crc
