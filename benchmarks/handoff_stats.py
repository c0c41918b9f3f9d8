"""The statistics of benchmarks/handoff_bench.py: paired per-repetition ratios, a distribution-
free interval for their median, and the met/missed verdicts of issue 18 point 4.

Pure (no model, no clock), so CI checks it on small recorded reports (tests/quality).

Why paired ratios. On a shared 2-core machine the load changes from second to second, so two
codecs measured minutes apart differ by more than the 10% the target allows. Each repetition
therefore runs every codec once at a rate, in a shuffled order, within a few seconds; a
comparison of auto with codec C is the ratio of their two times *in the same repetition*, and
the reported number is the median of those per-repetition ratios with its 95% interval.

Why "like with like". When auto chooses codec X it runs exactly X's job (the choice itself
costs microseconds). If X is raw, "auto <= raw" compares two runs of one job and is a coin flip
decided by noise, whatever the repetitions; the same holds for "auto within 10% of the best"
when X is the best. So each verdict is met by the direct paired ratio (auto / raw <= 1,
auto / best <= 1.10) or, reading like with like, when the decision is right by X's own runs in
the same repetitions (X / raw <= 1, exactly 1 when X is raw; X / best <= 1.10) and auto is not
measurably slower than X (the interval of the paired auto / X reaches 1). The report prints
every ratio with its interval and says which reading decided each verdict.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

CONF = 0.95
WITHIN = 1.10  # auto within 10% of the best codec its floor admits


def median_ci(xs: Sequence[float], conf: float = CONF) -> tuple[float, float, float]:
    """(low, high, coverage): the distribution-free interval for the median of `xs` from its
    order statistics x(k) and x(n+1-k), with the largest k whose two tails each hold at most
    (1 - conf) / 2 of a Binomial(n, 1/2). Too few samples for `conf`: (min, max) and the
    coverage that has (0 for one sample)."""
    s = sorted(xs)
    n = len(s)
    if n == 0:
        raise ValueError("no samples")

    def below(k: int) -> float:  # P(Binomial(n, 1/2) < k)
        return float(sum(math.comb(n, i) for i in range(k)) / 2 ** n)

    k = 1
    while k + 1 <= (n + 1) // 2 and below(k + 1) <= (1 - conf) / 2:
        k += 1
    return s[k - 1], s[n - k], 1 - 2 * below(k)


def paired(runs: Sequence[dict[str, Any]], rate: str, a: str, b: str) -> list[float]:
    """seconds(a) / seconds(b) in each repetition at `rate` where both ran (a repetition that
    ran a codec more than once compares the medians of its runs)."""
    by: dict[Any, dict[str, list[float]]] = {}
    for r in runs:
        if r["rate"] == rate:
            by.setdefault(r.get("rep", 0), {}).setdefault(r["codec"], []).append(r["seconds"])
    return [statistics.median(t[a]) / statistics.median(t[b]) for _, t in sorted(by.items())
            if a in t and b in t]


def ratio(runs: Sequence[dict[str, Any]], rate: str, a: str, b: str) -> dict[str, float]:
    xs = paired(runs, rate, a, b)
    lo, hi, cov = median_ci(xs)
    return {"median": round(statistics.median(xs), 4), "lo": round(lo, 4), "hi": round(hi, 4),
            "coverage": round(cov, 3), "n": len(xs)}


def summarize(report: dict[str, Any], codecs_order: Sequence[str],
              admits: Callable[[dict[str, Any], str | float], bool]) -> dict[str, Any]:
    """Median seconds per (rate, codec), the paired ratios and the verdicts per rate and auto
    floor. `admits(profile, floor)` says whether a floor admits a codec."""
    runs = report["runs"]
    ran = {r["rate"] for r in runs}  # in the order the links were set (the runs are shuffled)
    rates = [r for r in report["measured_link_bps"] if r in ran]
    rates += sorted(ran - set(rates))
    seen = {r["codec"] for r in runs}
    codecs = [c for c in codecs_order if c in seen] + sorted(seen - set(codecs_order))
    med = {rate: {c: float(statistics.median([r["seconds"] for r in runs
                                              if r["rate"] == rate and r["codec"] == c]))
                  for c in codecs} for rate in rates}
    profiles = report["profiles"]
    targets = []
    for rate in rates:
        m = med[rate]
        for a, floor in (("auto", "lossless"), ("auto95", report["config"]["auto_floor_pct"])):
            if a not in m:
                continue
            admitted = [c for c in codecs if not c.startswith("auto") and admits(
                profiles[c], floor)]
            best = min(admitted, key=lambda c: m[c])
            chose = report["auto_choices"][rate][a]
            vs_best = ratio(runs, rate, a, best)
            vs_raw = ratio(runs, rate, a, "raw")
            chose_vs_raw = ratio(runs, rate, chose, "raw")
            chose_vs_best = ratio(runs, rate, chose, best)
            overhead = ratio(runs, rate, a, chose)
            same = overhead["lo"] <= 1.0  # auto not measurably slower than its own choice
            direct_best = vs_best["median"] <= WITHIN
            like_best = chose_vs_best["median"] <= WITHIN and same
            direct = vs_raw["median"] <= 1.0
            like = chose_vs_raw["median"] <= 1.0 and same
            targets.append({
                "rate": rate, "auto": a, "floor": floor, "chose": chose,
                "seconds": round(m[a], 3), "best_codec": best, "best_seconds": round(m[best], 3),
                "raw_seconds": round(m["raw"], 3),
                "vs_best": vs_best, "vs_raw": vs_raw, "chose_vs_raw": chose_vs_raw,
                "chose_vs_best": chose_vs_best, "auto_vs_chose": overhead,
                "within_10pct_of_best": direct_best or like_best,
                "best_verdict_by": "paired auto/best" if direct_best else
                ("like with like: chosen codec's own runs vs best, auto vs its choice"
                 if like_best else "paired auto/best (and like with like also missed)"),
                "not_slower_than_raw": direct or like,
                "raw_verdict_by": "paired auto/raw" if direct else
                ("like with like: chosen codec's own runs vs raw, auto vs its choice"
                 if like else "paired auto/raw (and like with like also missed)"),
                "choice_is_measured_best": (chose_vs_best["median"] <= WITHIN
                                            and chose_vs_raw["median"] <= 1.0),
            })
    lossless_ok = all(r["imported_digest"] == report["expected_digest"] for r in runs
                      if r["codec"] in ("raw", "zstd", "floatplane_zstd", "auto")
                      or (r["codec"] == "auto95" and r.get("chose") in
                          ("raw", "zstd", "floatplane_zstd")))
    return {"median_seconds": med, "targets": targets, "lossless_bit_exact": lossless_ok}


def fmt(r: dict[str, float]) -> str:
    """`median [lo, hi]` of a paired ratio."""
    return f"{r['median']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"
