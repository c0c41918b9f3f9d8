"""The paged-cache mapping of the vLLM connector, without vLLM: a Python stand-in for the CPU
backend's ``vec`` cache-write kernel (keys transposed in the block, then values) is probed, and
gather/scatter round-trip through the probed maps."""

from __future__ import annotations

import pytest
import torch
from avp_engines import _paged

from avp_codec import AvpError


def _write(k: torch.Tensor, v: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor,
           slots: torch.Tensor, k_pos: torch.Tensor) -> None:
    """Scatter k[i, h, d] to the key region of slot i at k_pos[slot % bs, d]; values plain."""
    nb, h, bs, d = kc.shape
    flat = kc.reshape(nb, h, bs * d)  # a view: the key half of each region is contiguous
    b, s = slots // bs, slots % bs
    heads = torch.arange(h)
    flat[b[:, None, None], heads[None, :, None], k_pos[s][:, None, :]] = k
    vc[b[:, None], heads[None, :], s[:, None]] = v


def vec_write(k: torch.Tensor, v: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor,
              slots: torch.Tensor) -> None:
    """What csrc/cpu's vec kernel does: key [D][bs] (transposed), value [bs][D], per head."""
    bs, d = kc.shape[2], kc.shape[3]
    _write(k, v, kc, vc, slots, torch.arange(d)[None, :] * bs + torch.arange(bs)[:, None])


def amx_like_write(k: torch.Tensor, v: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor,
                   slots: torch.Tensor) -> None:
    """Another interior: pairs of key dims packed per slot (VNNI-like), values plain."""
    bs, d = kc.shape[2], kc.shape[3]
    j = torch.arange(d)[None, :]
    _write(k, v, kc, vc, slots, (j // 2) * bs * 2 + torch.arange(bs)[:, None] * 2 + j % 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_probe_finds_the_vec_interior(dtype: torch.dtype) -> None:
    got = _paged.probe(vec_write, 32, 64, dtype)
    want = _paged.vec_layout(32, 64)
    assert torch.equal(got.k_index, want.k_index) and torch.equal(got.v_index, want.v_index)


@pytest.mark.parametrize("write", [vec_write, amx_like_write], ids=["vec", "vnni-like"])
def test_gather_scatter_round_trip_matches_the_kernel(write: object) -> None:
    bs, d, h, nb = 32, 16, 3, 6
    layout = _paged.probe(write, bs, d, torch.float32)  # type: ignore[arg-type]
    n = 70
    k = torch.randn(n, h, d)
    v = torch.randn(n, h, d)
    blocks = [4, 1, 5]
    slots = torch.tensor([blocks[t // bs] * bs + t % bs for t in range(n)])
    layer = torch.zeros(nb, h, bs, 2 * d)
    kc, vc = _paged.halves(layer)
    write(k, v, kc, vc, slots)  # type: ignore[operator]
    gk, gv = _paged.gather(layer, layout, blocks, 0, n)
    assert torch.equal(gk, k.permute(1, 0, 2)) and torch.equal(gv, v.permute(1, 0, 2))
    fresh = torch.zeros_like(layer)
    _paged.scatter(fresh, layout, blocks, 0, k.permute(1, 0, 2), v.permute(1, 0, 2))
    assert torch.equal(fresh, layer)
    part = torch.zeros_like(layer)  # a load that starts after locally computed blocks
    _paged.scatter(part, layout, blocks, 32, k.permute(1, 0, 2)[:, 32:], v.permute(1, 0, 2)[:, 32:])
    pk, _ = _paged.gather(part, layout, blocks, 32, n)
    assert torch.equal(pk, k.permute(1, 0, 2)[:, 32:])


def test_refusals() -> None:
    def collide(k: torch.Tensor, v: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor,
                slots: torch.Tensor) -> None:
        kc[0, 0, 0] = k[0, 0]  # everything into one slot: not a one-to-one map
        vc[0, 0, 0] = v[0, 0]

    with pytest.raises(AvpError):
        _paged.probe(collide, 32, 16, torch.float32)
    layout = _paged.vec_layout(32, 16)
    with pytest.raises(AvpError):
        _paged.gather(torch.zeros(2, 1, 16, 32), layout, [0], 0, 4)  # wrong block size
    with pytest.raises(AvpError):
        _paged.gather(torch.zeros(2, 1, 32, 32), layout, [0], 0, 40)  # beyond the blocks
    with pytest.raises(AvpError):
        _paged.scatter(torch.zeros(2, 2, 32, 32), layout, [0], 0, torch.zeros(3, 4, 16),
                       torch.zeros(3, 4, 16))  # wrong head count
