"""Coverage-guided fuzz target for the runtime's receiving side (issue 14).

    python fuzz/run.py runtime -max_total_time=300 .fuzz-corpus/runtime

`runtime`: every input (as given and CRC-repaired, avp_fuzz.variants) goes to what an agent does
with a received payload, on a tiny random Llama built from a fixed config and seed (tiny_peer.py:
2 layers, 1 KV head of 16, a 256-token vocabulary, 512 positions), so a run takes milliseconds:

- `Connector.import_` (batch up to 2), then `generate` one token from the context (batch 1) or
  `continue_logits` (batch 2);
- `projection.receive` and `projection.generate_after`.

The only exception allowed out of them is avp_codec.AvpError; an imported context must also be
consistent (ids, positions and mask of `[batch, context_length]`, finite K/V).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import avp_codec as avp

_STATE: dict[str, Any] = {}


class Finding(AssertionError):
    """An oracle failed."""


def receiver() -> Any:
    if "c" not in _STATE:
        import torch
        from avp_runtime.connector import Connector
        from avp_runtime.tiny_peer import tiny_incompatible

        torch.set_num_threads(1)
        model, tok = tiny_incompatible()
        c = Connector(model, tok, name="fuzz-tiny")
        c.spec  # probe once, outside the measured inputs  # noqa: B018
        _STATE["c"] = c
    return _STATE["c"]


def seeds() -> dict[str, bytes]:
    """Messages this receiver accepts, and near misses: the mutator starts from its formats."""
    import torch
    from avp_runtime import projection as proj

    from avp_codec import quant

    c = receiver()
    ids = list(range(2, 14))
    ctx = c.prefill(ids)
    out = {
        "kv": c.export_bytes(ctx),
        "kv_latent": c.export_bytes(c.think(ids[:6], steps=2)),
        "kv_batch2": c.export_bytes(c.prefill(torch.tensor([ids, ids[::-1]]))),
        "kv_bf16_zstd": c.export_bytes(ctx, dtype=torch.bfloat16, codec=avp.Codec.ZSTD),
        "kv_byteplane": c.export_bytes(ctx, codec=avp.Codec.BYTEPLANE_ZSTD),
    }
    msg = avp.decode(out["kv"])
    for name in ("int8", "int4"):
        out[f"kv_{name}"] = avp.encode(quant.quantize_message(msg, quant.preset(name)))
    mask = avp.Tensor.from_array(np.array([[0] * 4 + [1] * 8], np.uint8),
                                 avp.Role.ATTENTION_MASK, layout=avp.Layout.BT)
    out["kv_mask"] = avp.encode(avp.Message(msg.kind, msg.entries, msg.layers,
                                            [*msg.tensors[:2], mask, *msg.tensors[2:]]))
    table = proj.ProjectionTable(torch.arange(4), torch.arange(4), torch.randn(4, 32),
                                 b"s" * 32, c.tokenizer_id, c.model_id)
    pm = proj.projection_message(torch.randn(1, 2, 32), table, source_model_id=b"s" * 32,
                                 context_ids=[5, 6, 7])
    out["projection"] = avp.encode(pm)
    out["text"] = avp.encode(avp.text_message("hello"))
    return out


def _check_context(ctx: Any) -> None:
    import torch

    shape = (ctx.batch_size, ctx.context_length)
    if tuple(ctx.token_ids.shape) != shape or tuple(ctx.positions.shape) != shape:
        raise Finding(f"ids {tuple(ctx.token_ids.shape)} / positions "
                      f"{tuple(ctx.positions.shape)} for a context of {shape}")
    if ctx.attention_mask is not None and tuple(ctx.attention_mask.shape) != shape:
        raise Finding("mask of another shape than the context")
    for layer in ctx.cache.layers:
        for x in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if x is not None and not bool(torch.isfinite(x).all()):
                raise Finding("a non-finite value was installed")


def target_runtime(data: bytes) -> None:
    import avp_fuzz  # fuzz/avp_fuzz.py: variants() repairs the checksums
    from avp_runtime import projection as proj

    c = receiver()
    for buf in avp_fuzz.variants(data):
        try:
            ctx = c.import_(buf, max_batch=2)
        except avp.AvpError:
            pass
        else:
            _check_context(ctx)
            try:
                if ctx.batch_size == 1:
                    c.generate([1], context=ctx, max_new_tokens=1, stop_ids=set())
                else:
                    c.continue_logits(ctx, [1])
            except avp.AvpError as e:  # a full context may have no room left: only that
                if e.code != avp.ErrorCode.UNSUPPORTED_CAPABILITY:
                    raise
        try:
            got = proj.receive(buf, c, new_tokens=1)
        except avp.AvpError:
            continue
        proj.generate_after(c, got, max_new_tokens=1)


TARGETS: dict[str, Callable[[bytes], None]] = {"runtime": target_runtime}
