"""Caches whose layers are not all alike round-trip through AVP exactly.

* the real Gemma-3-270M: 15 sliding-window layers (window 512) that hold only the last 511 tokens
  and 3 full-attention layers that hold the whole > 512-token context;
* tiny random models for the other layer kinds Transformers has: Mistral (all layers sliding),
  Qwen2 (full + sliding mix), DeepSeek-V3 (MLA: K and V head dims differ), Mamba (recurrent
  conv + SSM state), LFM2 (conv layers mixed with attention layers), Gemma-3 shape in small.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from avp_runtime import cache_io
from avp_runtime.connector import Connector
from transformers import (
    DeepseekV3Config,
    Gemma3TextConfig,
    Lfm2Config,
    LlamaConfig,
    MambaConfig,
    MistralConfig,
    Qwen2Config,
)
from transformers.cache_utils import Cache, LinearAttentionAndFullAttentionLayer

import avp_codec as avp

SMALL = {"hidden_size": 64, "intermediate_size": 128, "vocab_size": 128}

TINY_CONFIGS: dict[str, Callable[[], Any]] = {
    "mistral-sliding": lambda: MistralConfig(
        **SMALL, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        sliding_window=8),
    "qwen2-full-and-sliding": lambda: Qwen2Config(
        **SMALL, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        use_sliding_window=True, sliding_window=8, max_window_layers=1),
    "deepseek-v3-mla": lambda: DeepseekV3Config(
        **SMALL, moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16,
        qk_rope_head_dim=8, v_head_dim=12, n_routed_experts=4, num_experts_per_tok=2,
        first_k_dense_replace=1, n_group=1, topk_group=1),
    "mamba-recurrent": lambda: MambaConfig(
        hidden_size=64, num_hidden_layers=2, vocab_size=128, state_size=8),
    "lfm2-conv-and-attention": lambda: Lfm2Config(
        **SMALL, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        layer_types=["conv", "full_attention", "conv"]),
    "gemma3-small": lambda: Gemma3TextConfig(
        **SMALL, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
        head_dim=16, sliding_window=8, layer_types=["sliding_attention"] * 2 + ["full_attention"]),
}

EXPECTED_KINDS = {
    "mistral-sliding": ["SLIDING_WINDOW"] * 2,
    "qwen2-full-and-sliding": ["FULL_ATTENTION", "SLIDING_WINDOW", "SLIDING_WINDOW"],
    "deepseek-v3-mla": ["FULL_ATTENTION"] * 2,
    "mamba-recurrent": ["RECURRENT"] * 2,
    "lfm2-conv-and-attention": ["RECURRENT", "FULL_ATTENTION", "RECURRENT"],
    "gemma3-small": ["SLIDING_WINDOW", "SLIDING_WINDOW", "FULL_ATTENTION"],
}

PROMPT = list(range(3, 23))  # 20 tokens: more than the tiny windows hold
SUFFIX = [5, 6, 7]


def _round_trip(c: Connector, ctx: Any) -> tuple[bytes, Any]:
    wire = c.export_bytes(ctx)
    return wire, c.import_(wire)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_tiny_layer_kinds_round_trip_exactly(name: str, tiny: Callable[..., Connector]) -> None:
    c = tiny(TINY_CONFIGS[name]())
    ctx = c.think(PROMPT, steps=2)
    wire, back = _round_trip(c, ctx)
    msg = avp.decode(wire)
    assert [layer.kind.name for layer in msg.layers] == EXPECTED_KINDS[name]
    for layer in msg.layers:
        assert layer.token_start + layer.token_count == ctx.context_length == 22
        if layer.kind == avp.LayerKind.SLIDING_WINDOW:
            # Transformers keeps window - 1 tokens: the next query sees them plus itself.
            assert (layer.window, layer.token_count) == (8, 7)
    assert torch.equal(c.continue_logits(ctx, SUFFIX), c.continue_logits(back, SUFFIX))
    assert c.generate([9], context=ctx, max_new_tokens=6).token_ids == \
        c.generate([9], context=back, max_new_tokens=6).token_ids
    # Neither context changed by being used (recurrent states are updated in place by
    # Transformers; forks clone them).
    assert c.export_bytes(ctx) == wire
    assert c.export_bytes(back) == wire


def test_k_and_v_head_dims_may_differ(tiny: Callable[..., Connector]) -> None:
    c = tiny(TINY_CONFIGS["deepseek-v3-mla"]())
    msg = avp.decode(c.export_bytes(c.prefill(PROMPT)))
    k, v = msg.tensors[2], msg.tensors[3]
    assert (k.role, v.role) == (avp.Role.KEY, avp.Role.VALUE)
    assert k.shape[-1] != v.shape[-1]


def _tiny_llama(tiny: Callable[..., Connector]) -> Connector:
    return tiny(LlamaConfig(**SMALL, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2))


def test_a_subset_of_layers_cannot_be_continued(tiny: Callable[..., Connector]) -> None:
    c = _tiny_llama(tiny)
    ctx = c.prefill(PROMPT)
    full = avp.decode(c.export_bytes(ctx))
    keep = [t for t in full.tensors if t.layer is None or t.layer == 0]
    subset = avp.kv_cache_message(c.model_id, ctx.context_length, full.layers[:1], keep)
    with pytest.raises(avp.AvpError) as ei:
        c.import_(avp.encode(subset))
    assert ei.value.code == avp.ErrorCode.KIND_CONSTRAINT
    assert ei.value.path == "layers[1]"


def test_a_layer_kind_the_model_does_not_have_is_refused(tiny: Callable[..., Connector]) -> None:
    c = tiny(TINY_CONFIGS["gemma3-small"]())
    ctx = c.prefill(PROMPT)
    states = list(cache_io.layer_states(ctx.cache, ctx.context_length))
    # Claim the full-attention layer is sliding: the model's layer 2 is not.
    states[2].kind, states[2].window = avp.LayerKind.SLIDING_WINDOW, 8
    states[2].token_start, states[2].token_count = 0, ctx.context_length
    with pytest.raises(avp.AvpError) as ei:
        cache_io.build_cache(c.model.config, states, ctx.context_length)
    assert ei.value.code == avp.ErrorCode.KIND_CONSTRAINT and ei.value.path == "layers[2]"


def test_hybrid_attention_and_recurrent_layers_are_refused_at_export() -> None:
    layer = LinearAttentionAndFullAttentionLayer()
    layer.update(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))
    with pytest.raises(ValueError, match="hybrid"):
        list(cache_io.layer_states(Cache(layers=[layer]), 2))


@pytest.mark.slow
def test_gemma3_sliding_layers_hold_fewer_tokens(gemma: Connector) -> None:
    text = " ".join(f"Fact {i}: the number {i} squared is {i * i}." for i in range(34))
    ids = gemma.encode_prompt(text, chat=False)
    assert 512 < len(ids) < 640
    ctx = gemma.prefill(ids)  # latent steps are covered on SmolLM2 and tiny Gemma-3
    length = ctx.context_length
    wire = gemma.export_bytes(ctx)
    msg = avp.decode(wire)
    kinds = [layer.kind for layer in msg.layers]
    assert kinds.count(avp.LayerKind.SLIDING_WINDOW) == 15
    assert kinds.count(avp.LayerKind.FULL_ATTENTION) == 3
    for layer in msg.layers:
        if layer.kind == avp.LayerKind.SLIDING_WINDOW:
            assert (layer.window, layer.token_count) == (512, 511)
            assert layer.token_start == length - 511
        else:
            assert (layer.token_start, layer.token_count) == (0, length)
    kv_sizes = {t.shape for t in msg.tensors[2:]}
    assert kv_sizes == {(1, 1, 511, 256), (1, 1, length, 256)}
    back = gemma.import_(wire)
    suffix = gemma.encode_prompt(" Fact 34: the number 34 squared is", chat=False)
    assert torch.equal(gemma.continue_logits(ctx, suffix), gemma.continue_logits(back, suffix))
    a = gemma.generate(suffix, context=ctx, max_new_tokens=5)
    b = gemma.generate(suffix, context=back, max_new_tokens=5)
    assert a.token_ids == b.token_ids
    assert a.text[:2].isdigit()  # the model continues the pattern with a number
