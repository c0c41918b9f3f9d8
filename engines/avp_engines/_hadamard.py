"""llama.cpp's attention rotation of quantized caches (llama-kv-cache.cpp, llama-graph.cpp).

When a context's K (V) cache type is quantized and the head size is a multiple of 64, llama.cpp
multiplies each head's keys (values), after RoPE and in GGUF dimension order, by an orthonormal
Walsh-Hadamard matrix before storing them, and rotates queries (the attention output) to match,
so that quantization sees evened-out values. The cached numbers are therefore H.k, not k. H is
symmetric and its own inverse, so undoing it is applying it again. Keys use the largest power of
two (at least 64) that divides the head size, values always 64. LLAMA_ATTN_ROT_DISABLE=1 in the
engine's environment turns the rotation off; the converters then need hadamard=False.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from . import _ggml


@cache
def matrix(n: int) -> np.ndarray:
    """The normalised n x n Sylvester-Hadamard matrix (n a power of two), float64."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    out: np.ndarray = h / np.sqrt(n)
    return out


def size(head_dim: int, key: bool) -> int:
    if not key:
        return 64
    n = 64
    while head_dim % (n * 2) == 0:
        n *= 2
    return n


def applies(t: _ggml.GgmlType, head_dim: int, explicit: bool | None) -> bool:
    """Whether llama.cpp rotates a cache of type `t` (its rule unless stated explicitly)."""
    if explicit is not None:
        return explicit
    return t.block_elems > 1 and head_dim % 64 == 0


def rotate(x: np.ndarray, key: bool) -> np.ndarray:
    """H applied to every run of size(head_dim) along the last axis (float32 result)."""
    hd = int(x.shape[-1])
    n = size(hd, key)
    y = x.astype(np.float64).reshape(x.shape[:-1] + (hd // n, n)) @ matrix(n)
    out: np.ndarray = y.reshape(x.shape).astype(np.float32)
    return out
