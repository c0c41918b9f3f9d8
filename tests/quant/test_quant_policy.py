"""The layer-adaptive policy (spec 12.3): size prediction, budget, and where the bits go."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import avp_codec as avp
from avp_codec import quant
from avp_codec.quant import LayerSetting, QuantSetting

D = avp.Dtype


def _msg(layers: int = 6, tokens: int = 50) -> avp.Message:
    rng = np.random.default_rng(3)
    ks = [rng.standard_normal((1, 2, tokens, 16)).astype(ml_dtypes.bfloat16)
          for _ in range(layers)]
    return avp.kv_cache_from_arrays(b"\0" * 32, ks, [k.copy() for k in ks])


CANDIDATES = [
    LayerSetting(QuantSetting(D.UINT8, "tokens", 16), QuantSetting(D.UINT8, "channels", 16)),
    LayerSetting(QuantSetting(D.UINT4, "tokens", 16), QuantSetting(D.UINT4, "channels", 16)),
    LayerSetting(QuantSetting(D.UINT2, "tokens", 16, recent_window=8),
                 QuantSetting(D.UINT2, "channels", 16, recent_window=8)),
]
# Compressed sizes depend on the data: the prediction compresses, so it is still exact.
COMPRESSED = LayerSetting(QuantSetting(D.UINT4, "tokens", 8, sink_tokens=1, compress=True),
                          QuantSetting(D.UINT2, "channels", 16, compress=True))


@pytest.mark.parametrize("cand", [*CANDIDATES, COMPRESSED])
def test_predicted_bytes_equal_actual(cand: LayerSetting) -> None:
    msg = _msg()
    policy = quant.QuantPolicy(cand)
    q = quant.quantize_message(msg, policy)
    assert quant.policy_kv_bytes(msg, policy) == quant.message_kv_bytes(q)


@pytest.mark.parametrize("budget", [1.8, 2.2, 2.5])
def test_policy_meets_budget_and_protects_sensitive_layers(budget: float) -> None:
    msg = _msg()
    # Layer 1 hates low precision; the others barely care.
    sens = [[0.0, 0.01, 0.02] for _ in range(6)]
    sens[1] = [0.0, 5.0, 50.0]
    policy = quant.choose_policy(msg, CANDIDATES, sens, budget)
    q = quant.quantize_message(msg, policy)
    assert quant.message_kv_bytes(msg) / quant.message_kv_bytes(q) >= budget
    picks = [CANDIDATES.index(policy.for_layer(i)) for i in range(6)]
    assert picks[1] == min(picks)  # the sensitive layer keeps the most bits
    assert policy.method == "sensitivity" and policy.budget_ratio == budget
    # Recorded in the message, and the message is valid on the wire.
    assert avp.decode(avp.encode(q)).get(avp.MetaKey.QUANT_POLICY) == policy.to_json()


def test_slack_is_spent_on_upgrades() -> None:
    """A loose budget leaves every layer on the best candidate."""
    msg = _msg()
    sens = [[0.0, 1.0, 2.0] for _ in range(6)]
    policy = quant.choose_policy(msg, CANDIDATES, sens, 1.2)
    assert all(policy.for_layer(i) == CANDIDATES[0] for i in range(6))


def test_unreachable_budget_raises() -> None:
    with pytest.raises(ValueError, match="out of reach"):
        quant.choose_policy(_msg(), CANDIDATES, [[0.0, 0.0, 0.0]] * 6, 50.0)


def test_measure_sensitivity_quantizes_one_layer_at_a_time() -> None:
    msg = _msg(layers=3)
    calls: list[list[int]] = []

    def evaluate(m: avp.Message) -> float:
        layers = sorted({t.layer for t in m.tensors if t.quant is not None})
        calls.append(layers)  # type: ignore[arg-type]
        bits = {D.UINT8: 8, D.UINT4: 4, D.UINT2: 2}
        return sum(1.0 / bits[t.dtype] for t in m.tensors if t.quant is not None)

    sens = quant.measure_sensitivity(msg, CANDIDATES, evaluate)
    assert calls == [[0], [0], [0], [1], [1], [1], [2], [2], [2]]
    assert len(sens) == 3 and all(row[0] < row[1] < row[2] for row in sens)
