"""The agreement-vs-size curve of benchmarks/adaptive_search.py (pure: no model, no torch).

    python benchmarks/adaptive_curve.py     # fidelity_adaptive_curve.{md,json,png} from the runs

Input: fidelity_adaptive_<set>.json as adaptive_search.py writes it ({"per_prompt": {prompt id:
{"context_tokens", "rows": {policy: {"wire_bytes", "bf16_bytes", "agree", "tokens", "kl_sum"}}}}}).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_PCT = 95.0
TARGET_RATIO = 5.0


def curve(rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per policy, pooled over the prompts: size ratio (bf16 bytes / wire bytes, summed),
    top-1 agreement, KL per token and the per-prompt agreements. Only policies scored on every
    prompt are kept, so all rows cover the same tokens."""
    prompts = rec["per_prompt"]
    if not prompts:
        return {}
    names = set.intersection(*(set(p["rows"]) for p in prompts.values()))
    first = next(iter(prompts.values()))["rows"]
    out: dict[str, dict[str, Any]] = {}
    for name in [n for n in first if n in names]:  # keep the run's order
        rows = [p["rows"][name] for p in prompts.values()]
        agree, tokens = sum(r["agree"] for r in rows), sum(r["tokens"] for r in rows)
        out[name] = {
            "size_ratio": round(sum(r["bf16_bytes"] for r in rows)
                                / sum(r["wire_bytes"] for r in rows), 3),
            "min_prompt_ratio": round(min(r["bf16_bytes"] / r["wire_bytes"] for r in rows), 3),
            "agree": agree, "tokens": tokens,
            "top1_pct": round(100 * agree / tokens, 2),
            "kl_per_token": float(f"{sum(r['kl_sum'] for r in rows) / tokens:.3g}"),
            "per_prompt": {pid: p["rows"][name]["agree"] for pid, p in prompts.items()},
        }
    return out


def select(tune: dict[str, dict[str, Any]], min_ratio: float = TARGET_RATIO) -> str | None:
    """The protocol's choice: the best tuning-set agreement among policies whose tuning-set
    size is >= min_ratio (ties: the smaller message); None when no policy reaches the size."""
    ok = [(r["top1_pct"], r["size_ratio"], n) for n, r in tune.items()
          if r["size_ratio"] >= min_ratio]
    return max(ok)[2] if ok else None


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson 95% interval of k/n (tokens treated as independent: a lower bound on the width)."""
    if n == 0:
        return (0.0, 1.0)
    p, d = k / n, 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, mid - half), min(1.0, mid + half))


DEV_SETS = ("tune", "heldout1", "heldout2")
FINAL_SET = "heldout3"
PREVIOUS = "role-adaptive (5 tune prompts) 5x"  # round 1's selection
REFERENCES = ("int4_fine (preset)", PREVIOUS)


RULE = ("among the policies scored on every development set (tune, heldout1, heldout2) whose "
        "size is >= 5x on each of them, the best top-1 agreement pooled over all development "
        "tokens; ties: the larger smallest-set size ratio")


def select_dev(dev: dict[str, dict[str, dict[str, Any]]],
               min_ratio: float = TARGET_RATIO) -> str | None:
    """Round 2's rule (RULE), fixed in code before the round-2 policies were scored; None when
    no policy qualifies."""
    curves = list(dev.values())
    if not curves:
        return None
    names = [n for n in curves[0] if all(n in c for c in curves[1:])]
    ok = []
    for n in names:
        if all(c[n]["size_ratio"] >= min_ratio for c in curves):
            agree = sum(c[n]["agree"] for c in curves)
            tokens = sum(c[n]["tokens"] for c in curves)
            ok.append((agree / tokens, min(c[n]["size_ratio"] for c in curves), n))
    return max(ok)[2] if ok else None


def report(dev: dict[str, dict[str, dict[str, Any]]],
           final: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The selection on the development sets and its verdict on the final held-out set."""
    chosen = select_dev(dev)
    met = chosen is not None and chosen in final and final[chosen]["top1_pct"] >= TARGET_PCT \
        and final[chosen]["size_ratio"] >= TARGET_RATIO
    return {"target": f">= {TARGET_PCT:g}% top-1 at >= {TARGET_RATIO:g}x on held-out prompts",
            "rule": RULE,
            "selected_on_development_sets": chosen, "met": met,
            "development": dev, "pooled_development": pooled(*dev.values()),
            "final_set": FINAL_SET, "final": final}


def _cell(r: dict[str, Any] | None) -> str:
    return f"{r['size_ratio']:.2f}x {r['top1_pct']:.2f}%" if r else "-"


def _wcell(agree: int, tokens: int) -> str:
    lo, hi = wilson(agree, tokens)
    return f"{100 * agree / tokens:.2f}% ({agree}/{tokens}; {100 * lo:.1f}-{100 * hi:.1f})"


def markdown(rep: dict[str, Any], prompts: dict[str, int]) -> str:
    dev, final, sel = rep["development"], rep["final"], rep["selected_on_development_sets"]
    pooled_dev = rep["pooled_development"]
    lines = [
        "# Adaptive quantization: agreement vs size (issue 18 point 5), round 2",
        "",
        "Development sets (all looked at before round 2): "
        + ", ".join(f"{s} ({prompts.get(s, 0)} prompts)" for s in dev)
        + f". Final held-out set: {FINAL_SET} ({prompts.get(FINAL_SET, 0)} prompts of "
        "fidelity_heldout3_prompts.json, written and committed before any round-2 policy was "
        "scored, scored once). 64 teacher-forced tokens per prompt (tune: 64 as well). "
        "Generated by benchmarks/adaptive_search.py + adaptive_curve.py; SmolLM2-135M, bf16 KV.",
        "",
        f"Selection rule (fixed in code before the round-2 policies were scored): {rep['rule']}.",
        "",
        "| policy | " + " | ".join(dev) + " | pooled development top-1 (Wilson 95%) |",
        "|---|" + "---|" * len(dev) + "---|",
    ]
    order = sorted(pooled_dev, key=lambda n: (min(c[n]["size_ratio"] for c in dev.values()), n))
    for n in order:
        mark = " **(selected)**" if n == sel else ""
        p = pooled_dev[n]
        lines.append(f"| {n}{mark} | " + " | ".join(_cell(c.get(n)) for c in dev.values())
                     + f" | {_wcell(p['agree'], p['tokens'])} |")
    lines += ["", f"## Final held-out set ({FINAL_SET}), scored once", "",
              "| policy | size | top-1 (Wilson 95%) | KL / token |", "|---|---|---|---|"]
    for n, r in sorted(final.items(), key=lambda kv: kv[1]["size_ratio"]):
        mark = " **(selected)**" if n == sel else ""
        lines.append(f"| {n}{mark} | {r['size_ratio']:.2f}x | {_wcell(r['agree'], r['tokens'])}"
                     f" | {r['kl_per_token']:.3g} |")
    verdict = "**met**" if rep["met"] else "**not met**"
    got = (f" ({final[sel]['top1_pct']:.2f}% at {final[sel]['size_ratio']:.2f}x on {FINAL_SET})"
           if sel in final else f" (not scored on {FINAL_SET} yet)")
    lines += ["", f"Target {rep['target']}: selected on the development sets: {sel}; "
              f"{verdict}{got}."]
    if sel in final:
        lo, hi = wilson(final[sel]["agree"], final[sel]["tokens"])
        if lo < TARGET_PCT / 100 <= hi:
            lines += ["", f"The Wilson 95% interval ({100 * lo:.1f}-{100 * hi:.1f}%) straddles "
                      f"{TARGET_PCT:g}%: " + ("the point estimate meets the target, but these "
                      "tokens cannot exclude a true rate a little under it" if rep["met"] else
                      "the point estimate misses, but these tokens cannot exclude a true rate "
                      "at or above the target") + " (tokens of one prompt are not independent, "
                      "so the true interval is wider still)."]
    return "\n".join(lines) + "\n"


def pooled(*curves: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Top-1 agreement of the policies every curve has, pooled over all their tokens."""
    names = [n for n in curves[0] if all(n in c for c in curves[1:])]
    out = {}
    for n in names:
        agree, tokens = sum(c[n]["agree"] for c in curves), sum(c[n]["tokens"] for c in curves)
        lo, hi = wilson(agree, tokens)
        out[n] = {"agree": agree, "tokens": tokens, "top1_pct": round(100 * agree / tokens, 2),
                  "wilson95_pct": [round(100 * lo, 1), round(100 * hi, 1)]}
    return out


def plot(rep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    families: dict[str, list[tuple[float, float, float, float]]] = {}
    for name, r in rep["development"]["heldout2"].items():
        fam = name.rsplit(" ", 1)[0].rstrip(",") if name.endswith("x") else name
        lo, hi = wilson(r["agree"], r["tokens"])
        p = r["top1_pct"]
        families.setdefault(fam, []).append((r["size_ratio"], p, p - 100 * lo, 100 * hi - p))
    for fam, pts in families.items():
        pts.sort()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [[p[2] for p in pts], [p[3] for p in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=2, lw=1, label=fam)
    ax.axhline(TARGET_PCT, color="grey", lw=0.6, ls="--")
    ax.axvline(TARGET_RATIO, color="grey", lw=0.6, ls="--")
    for name, r in rep["final"].items():
        lo, hi = wilson(r["agree"], r["tokens"])
        p = r["top1_pct"]
        ax.errorbar([r["size_ratio"]], [p], yerr=[[p - 100 * lo], [100 * hi - p]], marker="*",
                    ms=11, capsize=3, lw=1.5, ls="none", label=f"{FINAL_SET}: {name}")
    ax.set_xlabel("size reduction vs bf16 (x); lines: development set heldout2, stars: "
                  f"final set {FINAL_SET}")
    ax.set_ylabel("teacher-forced top-1 agreement (%), Wilson 95%")
    ax.set_title("Adaptive KV quantization, SmolLM2-135M (issue 18.5, round 2)", fontsize=10)
    ax.legend(fontsize=6.5, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _load(s: str) -> dict[str, Any]:
    path = RESULTS / f"fidelity_adaptive_{s}.json"
    return json.loads(path.read_text()) if path.exists() else {"per_prompt": {}}


def main() -> int:
    recs = {s: _load(s) for s in (*DEV_SETS, FINAL_SET)}
    rep = report({s: curve(recs[s]) for s in DEV_SETS}, curve(recs[FINAL_SET]))
    prompts = {s: len(r["per_prompt"]) for s, r in recs.items()}
    rep["prompts"] = prompts
    md = markdown(rep, prompts)
    (RESULTS / "fidelity_adaptive_curve.json").write_text(json.dumps(rep, indent=1) + "\n")
    (RESULTS / "fidelity_adaptive_curve.md").write_text(md)
    plot(rep, RESULTS / "fidelity_adaptive_curve.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
