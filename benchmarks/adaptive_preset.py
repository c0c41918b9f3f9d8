"""The role-adaptive quantization policy of issue 18 point 5 (no torch, no model): per layer one
key option and one value option, chosen by avp_codec.quant.choose_role_policy from the
sensitivity measured on the tuning prompts (fidelity_role_sensitivity.json), optionally with a
bf16 recent window on every quantized tile.

benchmarks/adaptive_search.py measures the sensitivity and scores the policy families;
fidelity_bench.adaptive_policy (the "adaptive" codec of the fidelity, quality and handoff
benches) builds the selected one with `role_policy`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import avp_codec as avp
from avp_codec import quant
from avp_codec.quant import QuantPolicy, QuantSetting

RESULTS = Path(__file__).resolve().parent / "results"
SENS_FILE = RESULTS / "fidelity_role_sensitivity.json"
D = avp.Dtype
# choose_role_policy budgets KEY/VALUE data and parameter bytes; descriptors, padding and
# TOKEN_IDS add 1-2% on the wire (the same margin as fidelity_bench.WIRE_MARGIN).
WIRE_MARGIN = 1.02


def _k(dtype: D, group: int, clip: bool = False, window: int = 0) -> QuantSetting:
    # Keys per channel (groups of tokens, KIVI): outlier channels get their own scales.
    return QuantSetting(dtype, "tokens", group, True, sink_tokens=1, compress=True,
                        clip_search=clip, recent_window=window)


def _v(dtype: D, group: int, clip: bool = False, window: int = 0) -> QuantSetting:
    return QuantSetting(dtype, "channels", group, True, sink_tokens=1, compress=True,
                        clip_search=clip, recent_window=window)


# Options per role, most to least precise. None = left bf16 (its sensitivity is 0 by
# construction: measure_role_sensitivity evaluates the unchanged message).
KEY_OPTIONS: dict[str, QuantSetting | None] = {
    "bf16": None,
    "K8g64": _k(D.UINT8, 64),
    "K4g32": _k(D.UINT4, 32),
    "K4g64": _k(D.UINT4, 64),
    "K4g128": _k(D.UINT4, 128),
    "K2g32c": _k(D.UINT2, 32, clip=True),
}
# Menu 2 adds coarser 2-bit keys (one scale per 64 tokens): on short contexts (the quality
# bench's ~50 tokens) menu 1's smallest options give only 5.02x, below a 5x budget with its
# wire margin.
KEY_OPTIONS_2: dict[str, QuantSetting | None] = {
    **KEY_OPTIONS,
    "K2g64c": _k(D.UINT2, 64, clip=True),
}
VALUE_OPTIONS: dict[str, QuantSetting | None] = {
    "bf16": None,
    "V4g32": _v(D.UINT4, 32),
    "V4g64": _v(D.UINT4, 64),
    # V4g128 would equal V4g64 (head_dim 64). No clip search for values: on a tuning prompt it
    # raised 2-bit values' KL (K4g128/V2g64 0.075 -> 0.109 with clip) and compressed worse; it
    # helps 2-bit keys (K2g32/V4g64 0.252 -> 0.152).
    "V2g32": _v(D.UINT2, 32),
    "V2g64": _v(D.UINT2, 64),
}
MENUS = {1: KEY_OPTIONS, 2: KEY_OPTIONS_2}

# The selected policy (issue 18.5; see results/fidelity_adaptive_curve.md): menu, recent window
# and budget: "role-adaptive menu 2, recent window 8, 5x", chosen by round 2's rule
# (adaptive_curve.select_dev) on the development sets only (round 1 chose menu 1, no window).
SELECTED = {"menu": 2, "window": 8, "budget": 5.0}


def with_window(s: QuantSetting | None, window: int) -> QuantSetting | None:
    if s is None:
        return None
    return QuantSetting(**{**s.__dict__, "recent_window": window})


def averaged(keys: dict[str, QuantSetting | None] = KEY_OPTIONS
             ) -> tuple[list[list[float]], list[list[float]]]:
    """[layer][option] sensitivity (mean KL per token over the tuning prompts) of `keys` and
    VALUE_OPTIONS in their order; an unquantized option (None) is 0."""
    rows = list(json.loads(SENS_FILE.read_text())["per_prompt"].values())

    def mean(role: str, opts: dict[str, QuantSetting | None]) -> list[list[float]]:
        cols = [np.zeros(len(rows[0]["key"]["K4g32"])) if o is None else
                np.mean([np.asarray(r[role][n], dtype=np.float64) for r in rows], axis=0)
                for n, o in opts.items()]
        return [[float(c[i]) for c in cols] for i in range(len(cols[0]))]

    return mean("key", keys), mean("value", VALUE_OPTIONS)


def role_policy(msg: avp.Message, budget: float, window: int = 0,
                pin: dict[int, tuple[str, str]] | None = None,
                keys: list[str] | None = None, menu: int = 1) -> QuantPolicy:
    """choose_role_policy over key menu `menu` and the value options (optionally a recent
    window on every quantized option, some layers pinned to given options, or a subset of key
    options)."""
    opts = MENUS[menu]
    ks, vs = averaged(opts)
    kn = keys or list(opts)
    kidx = [list(opts).index(n) for n in kn]
    kopts = [with_window(opts[n], window) for n in kn]
    vopts = [with_window(o, window) for o in VALUE_OPTIONS.values()]
    ksens = [[row[j] for j in kidx] for row in ks]
    vsens = [list(row) for row in vs]
    for layer, (kname, vname) in (pin or {}).items():
        # A pinned layer: every other option is made prohibitively sensitive.
        ksens[layer] = [0.0 if n == kname else 1e9 for n in kn]
        vsens[layer] = [0.0 if n == vname else 1e9 for n in VALUE_OPTIONS]
    return quant.choose_role_policy(msg, kopts, vopts, ksens, vsens, budget * WIRE_MARGIN)


def _reachable(msg: avp.Message, budget: float, window: int, menu: int) -> bool:
    """Whether the smallest (2-bit) options of `menu` with `window` fit the budget: a quick
    check with 2 x 2 options per layer before choose_role_policy sizes all of them."""
    from avp_codec import _quant_policy as qp

    smallest = 0
    for i in range(len(msg.layers)):
        for role, opts in ((avp.Role.KEY, MENUS[menu]), (avp.Role.VALUE, VALUE_OPTIONS)):
            two_bit = [with_window(o, window) for o in opts.values()
                       if o is not None and o.bits == 2]
            smallest += min(qp.role_bytes(msg, i, role, o) for o in two_bit)
    return smallest <= quant.message_kv_bytes(msg) / (budget * WIRE_MARGIN)


def selected_policy(msg: avp.Message, budget: float | None = None) -> QuantPolicy:
    """The selected role-adaptive policy for `msg` at `budget` x (default SELECTED's).

    The recent window is a token count, so on a short context it can take a share of the
    message that no budget allows (16 of ~50 tokens is a third): the window is then halved
    until the budget is reachable (16, 8, 4, 2, 1, 0). If even no window reaches it, the next
    larger key menu (a superset) is tried the same way. On the development and held-out
    prompts (1000-1600 tokens) the selected window and menu always fit. ValueError when
    nothing reaches the budget.
    """
    b = SELECTED["budget"] if budget is None else budget
    last: ValueError | None = None
    for menu in [m for m in sorted(MENUS) if m >= SELECTED["menu"]]:
        window = SELECTED["window"]
        while True:
            if _reachable(msg, b, window, menu):
                try:
                    return role_policy(msg, b, window=window, menu=menu)
                except ValueError as e:
                    last = e
            if window == 0:
                break
            window //= 2
    if last is not None:
        raise last
    return role_policy(msg, b, menu=max(MENUS))  # raises: names the smallest reachable ratio


def description() -> dict[str, object]:
    """What defines the selected policy (for a report's config and its fingerprint)."""
    return {"method": "role-adaptive (avp_codec.quant.choose_role_policy)",
            "key_options": list(MENUS[SELECTED["menu"]]), "value_options": list(VALUE_OPTIONS),
            "recent_window": SELECTED["window"], "budget_ratio": SELECTED["budget"],
            "wire_margin": WIRE_MARGIN, "sensitivity_from": SENS_FILE.name,
            "key_menu": SELECTED["menu"],
            "short_context_rule": "window halved, then the next key menu, until the budget is "
                                  "reachable"}
