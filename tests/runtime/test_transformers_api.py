"""The runtime follows the installed Transformers' cache API from what `forward` accepts.

Transformers has renamed the cache keyword twice (`cache_params` for Mamba-style models,
`past_key_values`, then `cache` in 5.2x). The connector picks the keyword from the signature and,
after its first forward pass, checks that the cache it handed in is the one that was filled. A
model that takes the cache under some other name fails at once with UNSUPPORTED_CAPABILITY naming
the model class, the installed Transformers version and the keyword tried.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
import transformers
from avp_runtime import connector as conn
from avp_runtime.connector import CACHE_KEYWORDS, Connector, cache_keyword
from transformers import LlamaConfig, LlamaForCausalLM

import avp_codec as avp

SMALL = {"hidden_size": 64, "intermediate_size": 128, "vocab_size": 128}


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(**SMALL, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).eval()


def test_the_installed_transformers_keyword_is_found() -> None:
    model = _llama()
    params = inspect.signature(model.forward).parameters
    kw = cache_keyword(model)
    assert kw in params and kw in CACHE_KEYWORDS
    # The newest name wins when a signature offers several.
    assert kw == next(k for k in CACHE_KEYWORDS if k in params)


def test_a_prefill_fills_the_cache_with_the_installed_transformers() -> None:
    c = Connector(_llama(), None, name="tiny-llama")
    ctx = c.prefill(list(range(3, 10)))
    assert ctx.context_length == 7
    assert ctx.nbytes() == 2 * 2 * (2 * 7 * 16) * 4  # layers x (K, V) x heads*tokens*dim x f32


class _Renamed(torch.nn.Module):
    """A model whose forward takes the cache under a name the runtime does not know.

    Like every Transformers model its forward ends in **kwargs, so a wrong keyword would be
    swallowed silently; the connector must refuse it up front instead.
    """

    def __init__(self, inner: LlamaForCausalLM) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids: Any = None, kv_state: Any = None, **kwargs: Any) -> Any:
        return self.inner(input_ids=input_ids, **kwargs)


class _Ignoring(torch.nn.Module):
    """A model that accepts `cache=` but builds and returns a cache of its own (an API change)."""

    def __init__(self, inner: LlamaForCausalLM) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(
        self, input_ids: Any = None, inputs_embeds: Any = None, cache: Any = None, **kwargs: Any
    ) -> Any:
        for name in CACHE_KEYWORDS:
            kwargs.pop(name, None)
        kwargs.pop("attention_mask", None)
        kwargs.pop("position_ids", None)
        return self.inner(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)


def test_an_unknown_cache_keyword_is_refused_naming_class_and_version() -> None:
    with pytest.raises(avp.AvpError) as err:
        Connector(_Renamed(_llama()), None)
    e = err.value
    assert e.code is avp.ErrorCode.UNSUPPORTED_CAPABILITY
    assert "_Renamed" in str(e) and transformers.__version__ in str(e)


def test_a_cache_left_empty_fails_at_the_first_forward_pass() -> None:
    c = Connector(_Ignoring(_llama()), None)
    with pytest.raises(avp.AvpError) as err:
        c.prefill([3, 4, 5, 6])
    e = err.value
    assert e.code is avp.ErrorCode.UNSUPPORTED_CAPABILITY
    msg = str(e)
    assert "_Ignoring" in msg and transformers.__version__ in msg and "`cache=`" in msg
    assert "layer 0" not in msg


def test_a_forward_without_a_returned_cache_is_judged_by_the_cache_itself() -> None:
    from transformers.cache_utils import DynamicCache

    model = _llama()
    empty = DynamicCache(config=model.config)

    class NoCacheOut:
        logits = None

    with pytest.raises(avp.AvpError):
        conn._check_cache_filled(model, "cache", empty, NoCacheOut())
    filled = DynamicCache(config=model.config)
    k = torch.zeros(1, 2, 3, 16)
    filled.update(k, k, 0)
    conn._check_cache_filled(model, "cache", filled, NoCacheOut())
