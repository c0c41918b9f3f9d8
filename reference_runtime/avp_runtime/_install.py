"""Installing a received KV_CACHE into a Transformers cache (`Connector.import_`).

Nothing is installed before admit.py has checked the message against the model: the kind, the
MODEL_ID, CONTEXT_LENGTH and batch bounds, the layer table and every tensor's role, dtype and
shape come first, from the descriptors alone; only then are tensors dequantized, converted and
checked for non-finite values, and the cache built.
"""

from __future__ import annotations

from typing import Any

import torch

import avp_codec as avp
from avp_codec import quant

from . import admit, cache_io


def install(c: Any, msg: avp.Message, *, device: torch.device | str | None,
            dtype: torch.dtype | None, max_batch: int, max_context: int | None,
            allow_non_finite: bool) -> Any:
    """The Context `c.import_` returns (see its docstring)."""
    from .connector import LATENT_TOKEN, Context

    ok = admit.check_kv_message(msg, c.spec, max_batch=max_batch, max_context=max_context,
                                model_id=c.model_id)
    if any(t.quant is not None for t in msg.tensors):
        msg = quant.dequantize_message(msg)  # also joins token tiles of one layer and role
    length, batch = ok.context_length, ok.batch
    dev = torch.device(device) if device is not None else c.device
    want = dtype if dtype is not None else c.model.dtype
    states = [
        cache_io.LayerState(d.index, avp.LayerKind(d.kind), d.token_start, d.token_count,
                            d.window)
        for d in msg.layers
    ]
    tiles: dict[tuple[int, avp.Role], list[avp.Tensor]] = {}
    for t in msg.tensors:
        if t.layer is not None:
            tiles.setdefault((t.layer, avp.Role(t.role)), []).append(t)
    for (ordinal, role), group in tiles.items():
        x = cache_io.join_tiles(group, dev)
        if x.dtype != want:
            x = x.to(want)
        if not allow_non_finite:
            admit.check_finite(x, f"layers[{states[ordinal].index}].{role.name}")
        states[ordinal].tensors.append((role, x))
    cache = cache_io.build_cache(c.model.config, states, length)
    token_ids = ok.token_ids
    if token_ids is None:
        token_ids = torch.full((batch, length), LATENT_TOKEN, dtype=torch.long)
    positions = ok.positions
    if positions is None:
        positions = torch.arange(length, dtype=torch.long).expand(batch, length)
    steps = msg.get(avp.MetaKey.CREATED_BY_STEPS)
    n_steps = steps if isinstance(steps, int) else 0
    mask = ok.attention_mask
    if mask is not None and bool(mask.all()):
        mask = None  # all real tokens: the plain continuation path
    return Context(cache, token_ids, positions, length, c.model_id, n_steps,
                   attention_mask=mask)


