"""Fidelity smoke test on a tiny random Llama: a quantized cache, sent over the wire and
dequantized, still drives the model; fewer bits cost more KL, int8 costs almost nothing.
(The real-model numbers come from benchmarks/fidelity_bench.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import avp_codec as avp
from avp_codec import quant

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from avp_runtime.connector import cache_keyword, returned_cache  # noqa: E402


@pytest.fixture(scope="module")
def tiny() -> Iterator[Any]:
    # One thread: on a busy 2-core machine torch's spinning OpenMP workers starve each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    yield transformers.LlamaForCausalLM(cfg).eval()
    torch.set_num_threads(threads)


def _message(model: Any, ids: list[int]) -> avp.Message:
    with torch.no_grad():
        cache = returned_cache(model(torch.tensor([ids]), use_cache=True))
    ks, vs = [], []
    for layer in cache.layers:
        for src, dst in ((layer.keys, ks), (layer.values, vs)):
            dst.append(src.to(torch.bfloat16).view(torch.int16).numpy().view(ml_dtypes.bfloat16))
    return avp.kv_cache_from_arrays(b"\0" * 32, ks, vs)


def _logprobs(model: Any, msg: avp.Message, inputs: list[int]) -> Any:
    cache = transformers.DynamicCache(config=model.config)
    by_layer: dict[int, dict[avp.Role, Any]] = {}
    for t in msg.tensors:
        by_layer.setdefault(t.layer, {})[t.role] = torch.from_numpy(  # type: ignore[arg-type]
            np.asarray(t.array(), dtype=np.float32).copy())
    for i in range(len(msg.layers)):
        cache.update(by_layer[i][avp.Role.KEY], by_layer[i][avp.Role.VALUE], i)
    with torch.no_grad():
        out = model(torch.tensor([inputs]), use_cache=True, **{cache_keyword(model): cache})
    return torch.log_softmax(out.logits[0].float(), dim=-1)


def test_fewer_bits_cost_more_kl(tiny: Any) -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 96, size=48).tolist()
    inputs = rng.integers(0, 96, size=8).tolist()
    base = _message(tiny, ids)
    ref = _logprobs(tiny, base, inputs)
    kl = {}
    for name in ("int8", "int4", "int2"):
        wire = avp.encode(quant.quantize_message(base, quant.preset(name)))
        got = _logprobs(tiny, quant.dequantize_message(avp.decode(wire)), inputs)
        kl[name] = float((ref.exp() * (ref - got)).sum(-1).mean())
        if name == "int8":
            assert bool((ref.argmax(-1) == got.argmax(-1)).all())
    assert kl["int8"] < 1e-3
    assert kl["int8"] < kl["int4"] < kl["int2"]
