"""A paged KV layer <-> per-layer [heads, tokens, head_dim] K and V, for any block interior.

vLLM's CPU attention backend keeps each layer as ``[num_blocks, kv_heads, block_size,
2 * head_dim]``, and inside each (block, head) region of ``2 * block_size * head_dim`` elements
the arrangement is the kernel's business: with the ``vec`` ISA the keys are stored transposed
(``[head_dim][block_size]``) and the values as ``[block_size][head_dim]``; other ISAs (AMX, NEON,
...) may pack differently. Rather than assume one, `probe` asks the engine's own cache-write
kernel where it puts each (slot, dim) of K and V: it writes small integer codes through it into a
scratch block, reads back where each landed, and records the two index maps. Gathering and
scattering then go through those maps, so whatever the kernel does is what the connector reads
and writes. A kernel whose placement is not a one-to-one map of the region is refused.

Codes are written in base-64 digits over a few passes, so every code is an integer that
float16 and bfloat16 hold exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from avp_codec import AvpError, ErrorCode

# write(key [n, 1, D], value [n, 1, D], key_cache, value_cache, slot_mapping [n]) through the
# engine's kernel; key_cache / value_cache are the halves the backend itself slices.
CacheWrite = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                      None]
_BASE = 64


@dataclass(frozen=True)
class PagedLayout:
    """Where slot s, dim d of K (of V) lives inside one (block, head) region."""

    block_size: int
    head_dim: int
    k_index: torch.Tensor  # int64 [block_size, head_dim]
    v_index: torch.Tensor  # int64 [block_size, head_dim]
    name: str = "probed"


def halves(kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The key and value caches the CPU backend slices from a layer (cpu_attn.py does the same:
    view as [blocks, heads, 2 * block_size, head_dim] and chunk dim 2)."""
    nb, h, bs, two_d = kv.shape
    k, v = kv.view(nb, h, 2 * bs, two_d // 2).chunk(2, dim=2)
    return k, v


def probe(write: CacheWrite, block_size: int, head_dim: int, dtype: torch.dtype) -> PagedLayout:
    """Discover the block interior of `write`'s kernel (see the module doc)."""
    region = 2 * block_size * head_dim
    ids = torch.arange(block_size * head_dim, dtype=torch.int64).reshape(block_size, 1, head_dim)
    passes = 1
    while _BASE ** passes < block_size * head_dim:
        passes += 1
    k_code = torch.zeros(region, dtype=torch.int64)
    v_code = torch.zeros(region, dtype=torch.int64)
    k_seen = torch.zeros(region, dtype=torch.bool)
    v_seen = torch.zeros(region, dtype=torch.bool)
    slots = torch.arange(block_size, dtype=torch.int64)
    for p in range(passes):
        digit = (ids // _BASE ** p) % _BASE + 1  # 1..64: exact in float16 and bfloat16
        kv = torch.zeros(1, 1, block_size, 2 * head_dim, dtype=dtype)
        kc, vc = halves(kv)
        write(digit.to(dtype), (-digit).to(dtype), kc, vc, slots)
        flat = kv.reshape(-1).to(torch.float32).round().to(torch.int64)
        pos, neg = flat > 0, flat < 0
        if p == 0:
            k_seen, v_seen = pos, neg
        elif not (torch.equal(k_seen, pos) and torch.equal(v_seen, neg)):
            raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                           "the cache kernel places elements differently from pass to pass")
        k_code += torch.where(pos, flat - 1, 0) * _BASE ** p
        v_code += torch.where(neg, -flat - 1, 0) * _BASE ** p
    return PagedLayout(block_size, head_dim, _invert(k_code, k_seen, "key"),
                       _invert(v_code, v_seen, "value"))


def _invert(code: torch.Tensor, seen: torch.Tensor, what: str) -> torch.Tensor:
    n = code.numel() // 2
    where = torch.nonzero(seen).reshape(-1)
    got = code[where]
    if where.numel() != n or not torch.equal(torch.sort(got).values, torch.arange(n)):
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                       f"the cache kernel does not place each {what} element in a slot of its "
                       "own; this block interior cannot be mapped")
    index = torch.empty(n, dtype=torch.int64)
    index[got] = where
    return index


def vec_layout(block_size: int, head_dim: int) -> PagedLayout:
    """The interior vLLM's ``vec`` ISA kernel uses (K transposed, then V), for tests and docs."""
    s = torch.arange(block_size).reshape(-1, 1)
    d = torch.arange(head_dim).reshape(1, -1)
    k = d * block_size + s
    v = block_size * head_dim + s * head_dim + d
    return PagedLayout(block_size, head_dim, k.reshape(-1), v.reshape(-1), "vec")


def _regions(layer: torch.Tensor, layout: PagedLayout) -> torch.Tensor:
    nb, h, bs, two_d = layer.shape
    if bs != layout.block_size or two_d != 2 * layout.head_dim:
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                       f"layer of shape {tuple(layer.shape)} is not [blocks, heads, "
                       f"{layout.block_size}, {2 * layout.head_dim}]")
    if layer.stride(3) != 1 or layer.stride(2) != two_d:
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY, "block interiors are not contiguous")
    return layer.view(nb, h, bs * two_d)


def _index(layout: PagedLayout, block_ids: Sequence[int], start: int, stop: int, heads: int,
           which: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    bs = layout.block_size
    if start < 0 or stop < start or (stop + bs - 1) // bs > len(block_ids):
        raise AvpError(ErrorCode.TOKEN_RANGE, f"tokens [{start}, {stop}) do not fit "
                       f"{len(block_ids)} blocks of {bs}")
    t = torch.arange(start, stop)
    blocks = torch.as_tensor(list(block_ids), dtype=torch.int64)[t // bs]
    cols = which.reshape(bs, layout.head_dim)[t % bs]  # [n, D]
    return blocks[:, None, None], torch.arange(heads)[None, :, None], cols[:, None, :]


def gather(layer: torch.Tensor, layout: PagedLayout, block_ids: Sequence[int], start: int,
           stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of tokens [start, stop) as [heads, n, head_dim] (copies)."""
    r = _regions(layer, layout)
    h = layer.shape[1]
    k = r[_index(layout, block_ids, start, stop, h, layout.k_index)]
    v = r[_index(layout, block_ids, start, stop, h, layout.v_index)]
    return k.permute(1, 0, 2), v.permute(1, 0, 2)


def scatter(layer: torch.Tensor, layout: PagedLayout, block_ids: Sequence[int], start: int,
            k: torch.Tensor, v: torch.Tensor) -> None:
    """Write K and V ([heads, n, head_dim]) of tokens [start, start + n) into the layer."""
    r = _regions(layer, layout)
    h, n, d = k.shape
    if h != layer.shape[1] or d != layout.head_dim or v.shape != k.shape:
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                       f"K/V of shape {tuple(k.shape)} / {tuple(v.shape)} for a cache of "
                       f"{layer.shape[1]} heads of {layout.head_dim}")
    r[_index(layout, block_ids, start, start + n, h, layout.k_index)] = \
        k.permute(1, 0, 2).to(layer.dtype)
    r[_index(layout, block_ids, start, start + n, h, layout.v_index)] = \
        v.permute(1, 0, 2).to(layer.dtype)
