"""The adaptive preset of the benches (benchmarks/adaptive_preset.py): the recorded sensitivity
covers its menus, the selected policy round-trips through the wire with per-channel (token-axis)
key groups, and the recent window shrinks on contexts too short for it (no model needed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import ml_dtypes
import numpy as np
import pytest

import avp_codec as avp
from avp_codec import quant

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


ap = _load("adaptive_preset")
LAYERS = 30  # SmolLM2-135M, the model the recorded sensitivity belongs to


def _message(tokens: int, layers: int = LAYERS) -> avp.Message:
    rng = np.random.default_rng(tokens)
    shape = (1, 3, tokens, 64)
    offs = rng.standard_normal(64) * 4  # keys: per-channel offsets, as real keys have
    ks = [(rng.standard_normal(shape) + offs).astype(ml_dtypes.bfloat16) for _ in range(layers)]
    vs = [rng.standard_normal(shape).astype(ml_dtypes.bfloat16) for _ in range(layers)]
    return avp.kv_cache_from_arrays(b"\7" * 32, ks, vs,
                                    token_ids=np.arange(tokens, dtype=np.int32)[None])


def test_recorded_sensitivity_covers_every_menu_and_layer() -> None:
    rec = json.loads(ap.SENS_FILE.read_text())
    for menu in ap.MENUS.values():
        ks, vs = ap.averaged(menu)
        assert len(ks) == len(vs) == LAYERS
        assert all(len(r) == len(menu) for r in ks)
        assert all(len(r) == len(ap.VALUE_OPTIONS) for r in vs)
        assert all(r[0] == 0.0 for r in ks)  # bf16 costs nothing
    for role, opts in (("key", ap.KEY_OPTIONS_2), ("value", ap.VALUE_OPTIONS)):
        for n, o in opts.items():
            if o is not None:  # measured with the settings the menu has now
                assert rec["settings"][role][n] == o.to_json()


def _windows(policy: quant.QuantPolicy) -> set[int]:
    return {s.recent_window for ls in policy.layers.values() for s in (ls.key, ls.value)
            if s is not None}


def test_selected_policy_meets_its_budget_and_round_trips() -> None:
    msg = _message(300)
    policy = ap.selected_policy(msg)
    assert _windows(policy) == {ap.SELECTED["window"]}
    q = quant.quantize_message(msg, policy)
    assert quant.message_kv_bytes(msg) / quant.message_kv_bytes(q) >= ap.SELECTED["budget"]
    keys = [s.key for s in policy.layers.values() if s.key is not None]
    assert keys and all(k.axis == "tokens" for k in keys)  # per-channel keys (KIVI)
    out = quant.dequantize_message(avp.decode(avp.encode(q)))
    for a, b in zip(msg.tensors, out.tensors, strict=True):
        assert a.shape == b.shape and a.role == b.role
        if a.role in (avp.Role.KEY, avp.Role.VALUE):
            x = np.asarray(a.array(), dtype=np.float32)
            y = np.asarray(b.array(), dtype=np.float32)
            w = ap.SELECTED["window"]
            if w:  # the recent window comes back bit-identical
                assert np.array_equal(x[:, :, -w:], y[:, :, -w:])
            assert np.abs(x - y).mean() < 0.5 * np.abs(x).mean()


def test_window_halves_on_a_short_context_until_the_budget_fits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ap.SELECTED, "window", 16)
    monkeypatch.setitem(ap.SELECTED, "menu", 2)
    short = _message(50)
    policy = ap.selected_policy(short)
    (w,) = _windows(policy)
    assert w < 16
    q = quant.quantize_message(short, policy)
    assert quant.message_kv_bytes(short) / quant.message_kv_bytes(q) >= ap.SELECTED["budget"]
    # Nothing fits 20x on 50 tokens, window or not: the error names the reachable ratio.
    with pytest.raises(ValueError, match="out of reach"):
        ap.selected_policy(short, 20.0)


def test_a_menu_that_cannot_reach_the_budget_falls_back_to_the_larger_menu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ap.SELECTED, "window", 0)
    monkeypatch.setitem(ap.SELECTED, "menu", 1)
    short = _message(50)
    with pytest.raises(ValueError, match="out of reach"):
        ap.role_policy(short, 5.6, menu=1)  # menu 1's smallest options: about 5.5x here
    policy = ap.selected_policy(short, 5.6)
    k2g64 = ap.KEY_OPTIONS_2["K2g64c"]
    assert any(ls.key == k2g64 for ls in policy.layers.values())
    q = quant.quantize_message(short, policy)
    assert quant.message_kv_bytes(short) / quant.message_kv_bytes(q) >= 5.6
