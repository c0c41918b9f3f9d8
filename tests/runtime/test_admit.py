"""A received KV_CACHE is checked against the receiving model before it is installed (admit.py).

Every message here carries the receiver's own MODEL_ID and is a valid AVP message (the codec
accepts it), so only the runtime's own checks stand between it and Transformers. Before these
checks, `import_` accepted each of them and `generate` then crashed inside Transformers
(`RuntimeError: Sizes of tensors must match ...`) or silently generated from garbage (raw int8,
NaN). Tiny random models: the checks are structural.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from avp_runtime import admit
from avp_runtime.connector import Connector, Context
from transformers import DeepseekV3Config, Gemma3TextConfig, LlamaConfig, MambaConfig

import avp_codec as avp
from avp_codec import quant

E = avp.ErrorCode
R = avp.Role
K = avp.MetaKey
SMALL = {"hidden_size": 64, "intermediate_size": 128, "vocab_size": 128}
PROMPT = list(range(3, 13))  # 10 tokens


def _llama(**kw: Any) -> LlamaConfig:
    return LlamaConfig(**SMALL, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=256, **kw)


@pytest.fixture(scope="module")
def llama() -> Connector:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return Connector(AutoModelForCausalLM.from_config(_llama()).eval(), None, name="tiny-llama")


@pytest.fixture(scope="module")
def wire(llama: Connector) -> bytes:
    return llama.export_bytes(llama.prefill(PROMPT))


def _rebuild(wire: bytes, *, tensors: Callable[[avp.Tensor], avp.Tensor | None] | None = None,
             entries: dict[avp.MetaKey, Any] | None = None, layers: list[avp.Layer] | None = None,
             extra: list[avp.Tensor] | None = None) -> bytes:
    """The message of `wire` with tensors mapped (None drops one), entries replaced, layers
    replaced or message-level tensors added: what a buggy or hostile sender could send."""
    msg = avp.decode(wire)
    ts = [t for t in (tensors(t) if tensors else t for t in msg.tensors) if t is not None]
    if extra:
        n = sum(t.layer is None for t in ts)
        ts = ts[:n] + extra + ts[n:]
    es = list(msg.entries)
    for key, value in (entries or {}).items():
        es = [e for e in es if e.key != key] + [avp.Entry.of(key, value)]
    es.sort(key=lambda e: e.key)
    return avp.encode(avp.Message(msg.kind, es, layers if layers is not None else msg.layers, ts))


def _kv(fn: Callable[[torch.Tensor, avp.Tensor], Any]) -> Callable[[avp.Tensor], avp.Tensor]:
    def f(t: avp.Tensor) -> avp.Tensor:
        if t.role not in (R.KEY, R.VALUE):
            return t
        new = fn(torch.from_numpy(t.array().copy()), t)
        return avp.Tensor.from_array(new, t.role, ordinal=t.layer, layout=t.layout)
    return f


def _refused(c: Connector, data: bytes, code: avp.ErrorCode, **kw: Any) -> avp.AvpError:
    with pytest.raises(avp.AvpError) as ei:
        ctx = c.import_(data, **kw)
        c.generate([5], context=ctx, max_new_tokens=2)  # only reached if import_ let it through
    assert ei.value.code == code, ei.value
    return ei.value


# ---------------------------------------------------------------- shapes against the model


@pytest.mark.parametrize(("what", "fn"), [
    ("kv heads", lambda a, t: torch.zeros(1, 3, a.shape[2], 16)),
    ("head_dim", lambda a, t: torch.zeros(1, 2, a.shape[2], 8)),
    ("value head_dim only", lambda a, t: torch.zeros(1, 2, a.shape[2], 8)
     if t.role == R.VALUE else a),
])
def test_kv_of_another_shape_is_a_model_mismatch(llama: Connector, wire: bytes, what: str,
                                                 fn: Any) -> None:
    err = _refused(llama, _rebuild(wire, tensors=_kv(fn)), E.MODEL_MISMATCH)
    assert "heads of" in err.detail and err.path.startswith("tensors["), what


def test_k_and_v_head_dims_are_checked_as_a_pair(tiny: Callable[..., Connector]) -> None:
    c = tiny(DeepseekV3Config(
        **SMALL, moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16,
        qk_rope_head_dim=8, v_head_dim=12, n_routed_experts=4, num_experts_per_tok=2,
        first_k_dense_replace=1, n_group=1, topk_group=1))
    good = c.export_bytes(c.prefill(PROMPT))
    kv = c.spec.layers[0].kv  # what this Transformers caches for MLA: K and V sizes differ
    assert kv[R.KEY][1] != kv[R.VALUE][1]
    c.import_(good)

    # K and V swapped: each shape exists in the model, the pair does not.
    def swap(t: avp.Tensor) -> avp.Tensor:
        role = R.VALUE if t.role == R.KEY else R.KEY if t.role == R.VALUE else t.role
        return avp.Tensor.from_array(t.array(), role, ordinal=t.layer, layout=t.layout)

    msg = avp.decode(good)
    ts = [swap(t) for t in msg.tensors]
    # Canonical order is KEY before VALUE within a layer.
    ts = ts[:2] + [x for i in range(2, len(ts), 2) for x in (ts[i + 1], ts[i])]
    bad = avp.encode(avp.Message(msg.kind, msg.entries, msg.layers, ts))
    _refused(c, bad, E.MODEL_MISMATCH)


def test_recurrent_states_of_another_shape_or_count(tiny: Callable[..., Connector]) -> None:
    c = tiny(MambaConfig(hidden_size=64, num_hidden_layers=2, vocab_size=128, state_size=8))
    good = c.export_bytes(c.prefill(PROMPT))

    def wider(t: avp.Tensor) -> avp.Tensor:
        if t.role != R.SSM_STATE:
            return t
        a = np.zeros((*t.shape[:-1], t.shape[-1] + 1), np.float32)
        return avp.Tensor.from_array(a, t.role, ordinal=t.layer)

    _refused(c, _rebuild(good, tensors=wider), E.MODEL_MISMATCH)
    without_conv = _rebuild(good, tensors=lambda t: None if t.role == R.CONV_STATE else t)
    _refused(c, without_conv, E.KIND_CONSTRAINT)


# ---------------------------------------------------------------- layer table


def test_a_layer_the_model_does_not_have_is_refused(llama: Connector, wire: bytes) -> None:
    msg = avp.decode(wire)
    layers = [*msg.layers, avp.Layer(2, avp.LayerKind.FULL_ATTENTION, 0, 10)]
    extra = [avp.Tensor.from_array(np.zeros((1, 2, 10, 16), np.float32), r, ordinal=2,
                                   layout=avp.Layout.BHTD) for r in (R.KEY, R.VALUE)]
    bad = avp.encode(avp.Message(msg.kind, msg.entries, layers, [*msg.tensors, *extra]))
    err = _refused(llama, bad, E.KIND_CONSTRAINT)
    assert err.path == "layers[2]"


def test_a_sliding_layer_without_the_tokens_it_attends_to(
        tiny: Callable[..., Connector]) -> None:
    c = tiny(Gemma3TextConfig(**SMALL, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=1, head_dim=16, sliding_window=8,
                              layer_types=["sliding_attention", "full_attention"]))
    good = avp.decode(c.export_bytes(c.prefill(PROMPT)))
    assert good.layers[0].token_count == 7  # window 8: the last 7 tokens
    layers = [avp.Layer(0, avp.LayerKind.SLIDING_WINDOW, 7, 3, 8), good.layers[1]]

    def short(t: avp.Tensor) -> avp.Tensor:
        if t.layer != 0 or t.role not in (R.KEY, R.VALUE):
            return t
        return avp.Tensor.from_array(t.array()[:, :, -3:].copy(), t.role, ordinal=0,
                                     layout=t.layout)

    bad = avp.encode(avp.Message(good.kind, good.entries, layers,
                                 [short(t) for t in good.tensors]))
    err = _refused(c, bad, E.KIND_CONSTRAINT)
    assert err.path == "layers[0]" and "needs the last 7 tokens" in err.detail


# ---------------------------------------------------------------- dtypes and values


def test_raw_int8_kv_is_refused_and_quantized_int8_accepted(llama: Connector,
                                                            wire: bytes) -> None:
    raw_int8 = _rebuild(wire, tensors=_kv(lambda a, t: (a * 10).to(torch.int8)))
    err = _refused(llama, raw_int8, E.UNSUPPORTED_CAPABILITY)
    assert "INT8" in err.detail
    quantized = avp.encode(quant.quantize_message(avp.decode(wire), quant.preset("int8")))
    ctx = llama.import_(quantized)
    assert ctx.cache.layers[0].keys.dtype == torch.float32
    assert len(llama.generate([5], context=ctx, max_new_tokens=2).token_ids) == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_kv_is_refused_unless_allowed(llama: Connector, wire: bytes,
                                                 bad: float) -> None:
    def poison(a: torch.Tensor, t: avp.Tensor) -> torch.Tensor:
        if t.layer == 1 and t.role == R.VALUE:
            a[0, 1, 3, 5] = bad
        return a

    data = _rebuild(wire, tensors=_kv(poison))
    err = _refused(llama, data, E.INVALID_VALUE)
    assert err.path == "layers[1].VALUE"
    ctx = llama.import_(data, allow_non_finite=True)
    assert not bool(torch.isfinite(ctx.cache.layers[1].values).all())


def test_finite_check_reads_permuted_views_in_bounded_slices() -> None:
    x = torch.zeros(1, 3, 5000, 400).permute(0, 2, 1, 3)  # 6M elements, not contiguous
    admit.check_finite(x, "p")
    x[0, 4999, 2, 399] = float("nan")
    with pytest.raises(avp.AvpError) as ei:
        admit.check_finite(x, "p")
    assert ei.value.code == E.INVALID_VALUE


# ---------------------------------------------------------------- batch and sizes


def test_batch_two_is_refused_by_default_and_never_crashes_generate(llama: Connector) -> None:
    ctx2 = llama.prefill(torch.tensor([PROMPT, PROMPT[::-1]]))
    data = llama.export_bytes(ctx2)
    err = _refused(llama, data, E.UNSUPPORTED_CAPABILITY)
    assert "batch 2" in err.detail
    both = llama.import_(data, max_batch=2)
    assert both.batch_size == 2
    # Each row continues like the sender's context; one row of ids continues both rows.
    ref = llama.continue_logits(ctx2, [5, 6])
    assert torch.equal(llama.continue_logits(both, [5, 6]), ref)
    with pytest.raises(avp.AvpError) as ei:
        llama.generate([5], context=both)
    assert ei.value.code == E.UNSUPPORTED_CAPABILITY


def test_context_length_is_bounded_before_any_allocation(llama: Connector, wire: bytes) -> None:
    # 2^40 positions with empty tensors: a valid message that asks for nothing up front, yet
    # defaulting TOKEN_IDS and POSITIONS used to ask the allocator for 2^40 x 8 bytes twice.
    n = 1 << 40
    layers = [avp.Layer(i, avp.LayerKind.FULL_ATTENTION, 0, n) for i in range(2)]
    ts = [avp.Tensor.from_array(np.zeros((1, 2, n, 0), np.float32), r, ordinal=i,
                                layout=avp.Layout.BHTD)
          for i in range(2) for r in (R.KEY, R.VALUE)]
    msg = avp.kv_cache_message(llama.model_id, n, layers, ts)
    err = _refused(llama, avp.encode(msg), E.UNSUPPORTED_CAPABILITY)
    assert err.path == "entries.CONTEXT_LENGTH" and "256" in err.detail
    # The bound is the model's maximum (256 here) unless the caller lowers it.
    _refused(llama, wire, E.UNSUPPORTED_CAPABILITY, max_context=5)


def test_token_ids_outside_the_vocabulary(llama: Connector, wire: bytes) -> None:
    def ids(t: avp.Tensor) -> avp.Tensor:
        if t.role != R.TOKEN_IDS:
            return t
        a = t.array().copy()
        a[0, 4] = 128  # vocabulary 128: ids 0..127, -1 marks a latent step
        return avp.Tensor.from_array(a, R.TOKEN_IDS, layout=avp.Layout.BT)

    _refused(llama, _rebuild(wire, tensors=ids), E.INVALID_VALUE)


def test_latent_kv_is_not_a_cache_this_runtime_holds(llama: Connector, wire: bytes) -> None:
    msg = avp.decode(wire)
    ts = [t for t in msg.tensors if t.layer != 0]
    n = sum(t.layer is None for t in ts)
    latent = avp.Tensor.from_array(np.zeros((1, 10, 24), np.float32), R.LATENT_KV, ordinal=0,
                                   layout=avp.Layout.BTD)
    bad = avp.encode(avp.Message(msg.kind, msg.entries, msg.layers, [*ts[:n], latent, *ts[n:]]))
    _refused(llama, bad, E.UNSUPPORTED_CAPABILITY)


# ---------------------------------------------------------------- POSITIONS / ATTENTION_MASK


def _context_at(c: Connector, ids: list[int], positions: list[int],
                mask: list[int] | None = None) -> Context:
    """What a sender holds after running `ids` at `positions` (with padding where mask is 0)."""
    pos = torch.tensor([positions])
    m = None if mask is None else torch.tensor([mask])
    cache = c._new_cache()
    # One pass over all tokens with the full mask and explicit positions, as Transformers would.
    kw: dict[str, Any] = {c._cache_kw: cache, "use_cache": True, "position_ids": pos,
                          "attention_mask": m if m is not None else torch.ones_like(pos)}
    with torch.inference_mode():
        c.model(input_ids=torch.tensor([ids]), **kw)
    return Context(cache, torch.tensor([ids]), pos, len(ids), c.model_id, attention_mask=m)


def test_shifted_positions_are_honoured(llama: Connector) -> None:
    sender = _context_at(llama, PROMPT, [100 + i for i in range(10)])
    data = llama.export_bytes(sender)
    back = llama.import_(data)
    assert back.positions[0].tolist() == list(range(100, 110))
    got = llama.continue_logits(back, [5, 6])
    # The sender continues at positions 110, 111: the same computation, bit for bit.
    assert torch.equal(got, llama.continue_logits(sender, [5, 6]))
    # RoPE sees relative positions only, so it is also the unshifted continuation (to rounding).
    plain = llama.continue_logits(llama.prefill(PROMPT), [5, 6])
    torch.testing.assert_close(got, plain, atol=1e-4, rtol=1e-4)
    assert len(llama.generate([5], context=back, max_new_tokens=3).token_ids) == 3
    # Re-exported, the positions travel on.
    assert avp.decode(llama.export_bytes(back)).tensors[1].array()[0, -1] == 109


@pytest.mark.parametrize(("positions", "code"), [
    ([0, 1, 2, 3, 4, 9, 6, 7, 8, 5], E.UNSUPPORTED_CAPABILITY),  # not consecutive
    ([250 + i for i in range(10)], E.UNSUPPORTED_CAPABILITY),  # beyond the model's 256
    ([-3 + i for i in range(10)], E.INVALID_VALUE),
])
def test_positions_the_model_cannot_continue_from(llama: Connector, wire: bytes,
                                                  positions: list[int],
                                                  code: avp.ErrorCode) -> None:
    def pos(t: avp.Tensor) -> avp.Tensor:
        if t.role != R.POSITIONS:
            return t
        return avp.Tensor.from_array(np.array([positions], np.int64), R.POSITIONS,
                                     layout=avp.Layout.BT)

    _refused(llama, _rebuild(wire, tensors=pos), code)


def test_a_padding_mask_is_honoured_by_attention_models(llama: Connector) -> None:
    pad = [0] * 5
    mask = [0] * 5 + [1] * 10
    sender = _context_at(llama, pad + PROMPT, [0] * 5 + list(range(10)), mask)
    back = llama.import_(llama.export_bytes(sender))
    assert back.attention_mask is not None and back.attention_mask[0].tolist() == mask
    got = llama.continue_logits(back, [5, 6])
    assert torch.equal(got, llama.continue_logits(sender, [5, 6]))
    # Padding masked out: the same as the context without it (to rounding).
    plain = llama.continue_logits(llama.prefill(PROMPT), [5, 6])
    torch.testing.assert_close(got, plain, atol=1e-4, rtol=1e-4)
    g = llama.generate([5], context=back, max_new_tokens=3)
    assert g.token_ids == llama.generate([5], context=llama.prefill(PROMPT),
                                         max_new_tokens=3).token_ids
    # Thinking on extends the mask and the positions.
    more = llama.think([7, 8], steps=1, context=back)
    assert more.attention_mask is not None and more.attention_mask.shape == (1, 18)
    assert more.positions[0, -3:].tolist() == [10, 11, 12]


def _with_mask(wire: bytes, mask: list[int]) -> bytes:
    m = avp.Tensor.from_array(np.array([mask], np.uint8), R.ATTENTION_MASK, layout=avp.Layout.BT)
    return _rebuild(wire, extra=[m])


def test_padding_in_a_recurrent_model_is_refused(tiny: Callable[..., Connector]) -> None:
    c = tiny(MambaConfig(hidden_size=64, num_hidden_layers=2, vocab_size=128, state_size=8))
    good = c.export_bytes(c.prefill(PROMPT))
    c.import_(_with_mask(good, [1] * 10))  # an all-ones mask is no padding
    err = _refused(c, _with_mask(good, [0] * 5 + [1] * 5), E.UNSUPPORTED_CAPABILITY)
    assert "recurrent" in err.detail


def test_mask_values_other_than_0_and_1(llama: Connector, wire: bytes) -> None:
    try:
        data = _with_mask(wire, [1] * 9 + [2])
    except avp.AvpError as e:  # the encoder may already refuse what forbids producers
        assert e.code == E.INVALID_VALUE
        return
    _refused(llama, data, E.INVALID_VALUE)


# ---------------------------------------------------------------- continuing a context


def test_generate_refuses_what_would_crash_the_model(llama: Connector, wire: bytes,
                                                     tiny: Callable[..., Connector]) -> None:
    ctx = llama.import_(wire)
    for prompt, code in [([128], E.INVALID_VALUE), ([-1], E.INVALID_VALUE),
                         (list(range(5)) * 50, E.UNSUPPORTED_CAPABILITY)]:
        with pytest.raises(avp.AvpError) as ei:
            llama.generate(prompt, context=ctx, max_new_tokens=2)
        assert ei.value.code == code
    other = tiny(_llama(), seed=1)
    with pytest.raises(avp.AvpError) as ei:
        other.generate([5], context=ctx)
    assert ei.value.code == E.MODEL_MISMATCH
    # Generation stops at the model's maximum position instead of running past it.
    long_ctx = llama.prefill(list(range(3, 100)) * 2 + list(range(3, 55)))
    assert long_ctx.context_length == 246
    g = llama.generate([5], context=long_ctx, max_new_tokens=50, stop_ids=set())
    assert len(g.token_ids) == 256 - 247 + 1


# ---------------------------------------------------------------- bounded reading


def test_nothing_beyond_the_model_is_inflated(llama: Connector) -> None:
    """CONTEXT_LENGTH fits, but 4096 heads cannot be this model's: the tensor limit derived from
    the model (admit.read_kv) refuses the first one from its descriptor, before zstd runs."""
    import tracemalloc

    n, heads = 10, 4096
    layers = [avp.Layer(i, avp.LayerKind.FULL_ATTENTION, 0, n) for i in range(2)]
    ts = [avp.Tensor.from_array(np.zeros((1, heads, n, 16), np.float32), r, ordinal=i,
                                layout=avp.Layout.BHTD, codec=avp.Codec.ZSTD)
          for i in range(2) for r in (R.KEY, R.VALUE)]
    data = avp.encode(avp.kv_cache_message(llama.model_id, n, layers, ts))
    assert len(data) < 4 * 4096  # 10 MiB of float32 zeros, compressed
    tracemalloc.start()
    try:
        err = _refused(llama, data, E.LIMIT_TENSOR)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # not one tensor's 2.5 MiB
    assert err.path.startswith("tensors") or "raw_length" in str(err)
    # A decoded Message is checked the same way (from its descriptors: MODEL_MISMATCH).
    _refused(llama, avp.decode(data), E.MODEL_MISMATCH)
