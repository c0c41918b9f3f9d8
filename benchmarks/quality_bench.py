"""Task-level quality of every AVP handoff on the default model (issue 18 point 6).

    nice python benchmarks/quality_bench.py            # all 301 items; resumes where it stopped
    python benchmarks/quality_bench.py --limit 9 --out /tmp/q   # a smoke run
    python benchmarks/quality_bench.py --summarize     # only rebuild the tables and the plot
    nice python benchmarks/quality_bench.py --rescore-adaptive  # only the adaptive row, again

The items (benchmarks/quality_tasks.py: fact recall from the document, fact recall from the
model's own knowledge, short reasoning) are answered by exact match after a cloze. Agent A
(SmolLM2-135M-Instruct) reads the document and question; the answer comes from:

* direct       SmolLM2 reads everything itself and answers (the ceiling of every handoff);
* text         A's own answer ("The capital of Peru is Lima.") goes as an AVP TEXT message to B,
               a second SmolLM2 that reads that text where A read the document, then the question;
* kv <codec>   A's KV-cache of the document and question is exported (Connector.export), coded,
               encoded, decoded and imported by B (Connector.import_), which appends the end of
               the turn and the cloze: raw fp32 (the model's dtype, exact), raw bf16, the best
               lossless codec on bf16, int8, int4, int4_fine and the adaptive policy (5x budget);
* latent       A thinks LATENT_STEPS LatentMAS latent steps after the question; that cache goes
               raw over the wire and B answers from it;
* gemma *      Gemma-3-270M answers from the question and a hint after "Hint:": SmolLM2's hidden
               states at its answer positions projected into Gemma's input space (avp_runtime.
               projection, sent as a HIDDEN_STATE message), the same answer as text, or nothing.

Accuracy has a Wilson 95% interval; each handoff's difference to raw fp32 KV a paired bootstrap
95% interval (same items resampled). A lossy codec more than 1 point below raw KV is flagged.
Results are appended per item to quality_items.jsonl, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import quality_tasks as qt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LATENT_STEPS = 4
ADAPTIVE_BUDGET = 5.0
LOSSY_DROP_POINTS = 1.0  # the README names a lossy codec that loses more than this vs raw KV
ROWS = {
    "direct": "direct (SmolLM2 reads everything)",
    "text": "text handoff (A's answer as TEXT)",
    "kv_fp32": "KV raw fp32",
    "kv_bf16": "KV raw bf16",
    "kv_lossless": "KV lossless",
    "kv_int8": "KV int8",
    "kv_int4": "KV int4 (g64)",
    "kv_int4_fine": "KV int4_fine",
    "kv_adaptive": f"KV adaptive ({ADAPTIVE_BUDGET:g}x)",
    "latent": f"latent ({LATENT_STEPS} steps), KV raw",
    "gemma_projected": "Gemma-3: projected hint",
    "gemma_text": "Gemma-3: text hint",
    "gemma_none": "Gemma-3: no hint",
}
LOSSY = ("kv_int8", "kv_int4", "kv_int4_fine", "kv_adaptive")
BASELINE = "kv_fp32"


# -- statistics (pure; tested in tests/quality) -------------------------------------------------
def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (95% by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, mid - half), min(1.0, mid + half))


def paired_bootstrap(a: list[bool], b: list[bool], reps: int = 10000,
                     seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(a) - mean(b) over items resampled with replacement."""
    n = len(a)
    if n == 0 or n != len(b):
        raise ValueError("need two equally long, non-empty lists")
    diff = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    r = random.Random(seed)
    means = sorted(sum(diff[r.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return (means[int(0.025 * reps)], means[int(0.975 * reps) - 1])


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-row accuracy with intervals, differences to raw KV, per-kind accuracy."""
    rows: dict[str, Any] = {}
    base = [r["rows"][BASELINE]["correct"] for r in records]
    kinds = sorted({r["kind"] for r in records})
    for key, label in ROWS.items():
        got = [r["rows"][key]["correct"] for r in records]
        k, n = sum(got), len(got)
        lo, hi = wilson(k, n)
        row: dict[str, Any] = {
            "label": label, "correct": k, "items": n,
            "accuracy_pct": round(100 * k / n, 2),
            "wilson95_pct": [round(100 * lo, 2), round(100 * hi, 2)],
            "mean_gold_logprob": round(
                sum(r["rows"][key]["logprob"] for r in records) / n, 4),
            "by_kind_pct": {
                kind: round(100 * sum(r["rows"][key]["correct"] for r in records
                                      if r["kind"] == kind)
                            / sum(1 for r in records if r["kind"] == kind), 1)
                for kind in kinds},
        }
        sizes = [r["rows"][key].get("bytes") for r in records]
        if all(s is not None for s in sizes):
            row["mean_bytes"] = round(sum(sizes) / n)  # type: ignore[arg-type]
        if key != BASELINE:
            d = 100 * (k - sum(base)) / n
            blo, bhi = paired_bootstrap(got, base)
            row["vs_raw_kv_pts"] = round(d, 2)
            row["vs_raw_kv_bootstrap95_pts"] = [round(100 * blo, 2), round(100 * bhi, 2)]
            row["disagree_with_raw_kv"] = sum(x != y for x, y in zip(got, base, strict=True))
        if key in LOSSY:
            row["lossy_drop_over_1pt"] = row["vs_raw_kv_pts"] < -LOSSY_DROP_POINTS
        rows[key] = row
    return {"items": len(records), "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    cfg, s = report["config"], report["summary"]
    lines = [
        "# Task-level quality of AVP handoffs",
        "",
        f"{s['items']} of {cfg.get('task_items', s['items'])} template items "
        "(benchmarks/quality_tasks.py; a prefix is balanced: round-robin over the templates), "
        "exact match after a cloze; "
        f"sender and receiver {cfg['model']}, projection target {cfg['gemma']}; "
        f"{cfg['machine']}. Generated by benchmarks/quality_bench.py.",
        "",
        "| handoff | accuracy | Wilson 95% | vs raw KV (points) | paired bootstrap 95% | "
        "mean bytes | flag |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in s["rows"].items():
        lo, hi = r["wilson95_pct"]
        vs = "" if key == BASELINE else f"{r['vs_raw_kv_pts']:+.2f}"
        bs = "" if key == BASELINE else "{:+.2f} .. {:+.2f}".format(
            *r["vs_raw_kv_bootstrap95_pts"])
        flag = ""
        if key in LOSSY:
            flag = (f"**loses > {LOSSY_DROP_POINTS:g} pt**" if r["lossy_drop_over_1pt"]
                    else f"within {LOSSY_DROP_POINTS:g} pt")
        size = f"{r['mean_bytes']:,}" if "mean_bytes" in r else ""
        lines.append(f"| {r['label']} | {r['accuracy_pct']:.2f}% ({r['correct']}/{r['items']}) "
                     f"| {lo:.1f}-{hi:.1f}% | {vs} | {bs} | {size} | {flag} |")
    kinds = list(next(iter(s["rows"].values()))["by_kind_pct"])
    lines += ["", "Accuracy by kind of item (%):", "",
              "| handoff | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for r in s["rows"].values():
        lines.append(f"| {r['label']} | " + " | ".join(
            f"{r['by_kind_pct'][k]:.1f}" for k in kinds) + " |")
    lines += ["", "Bytes are the handoff message as sent (KV rows: the whole KV_CACHE message; "
              "text: the TEXT message; projected: the HIDDEN_STATE message).",
              f"Model time {cfg.get('item_seconds_total', '?')} s summed over the items "
              f"(load average {cfg.get('load_average_1min_at_end', '?')} at the end: a shared "
              "machine); adaptive policy: "
              f"{cfg['adaptive']}."]
    if cfg.get("adaptive_rescored"):
        lines += ["", "The KV adaptive row was re-run alone on the recorded items when the "
                  "adaptive policy changed (`--rescore-adaptive`; raw bf16 re-scored in the "
                  "same forward as a check); its model time is not in the sum above."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(report["summary"]["rows"].values())
    fig, ax = plt.subplots(figsize=(8, 5.2))
    ys = list(range(len(rows)))[::-1]
    acc = [r["accuracy_pct"] for r in rows]
    err = [[a - r["wilson95_pct"][0] for a, r in zip(acc, rows, strict=True)],
           [r["wilson95_pct"][1] - a for a, r in zip(acc, rows, strict=True)]]
    colours = ["tab:red" if r.get("lossy_drop_over_1pt") else "tab:blue" for r in rows]
    ax.barh(ys, acc, xerr=err, color=colours, alpha=0.8, capsize=3)
    ax.set_yticks(ys, [r["label"] for r in rows], fontsize=8)
    ax.set_xlabel("exact-match accuracy (%), Wilson 95% interval")
    ax.set_xlim(0, 100)
    ax.set_title(f"AVP handoffs on {report['summary']['items']} task items "
                 f"({report['config']['model']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the run --------------------------------------------------------------------------------------
def load_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N items (default: all)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory for the results")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--summarize", action="store_true", help="only rebuild tables and plot")
    ap.add_argument("--rescore-adaptive", action="store_true",
                    help="only re-run the kv_adaptive row of the recorded items with the current "
                         "adaptive policy (resumable), then rebuild tables and plot")
    args = ap.parse_args(argv)
    items = qt.items(args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "quality_items.jsonl"
    cfg_path = args.out / "quality_config.json"
    t0 = time.perf_counter()
    if args.rescore_adaptive:
        import quality_runner

        quality_runner.rescore_adaptive(log, args.threads)
        # The settings are now the current ones (every kv_adaptive row was made with them).
        cfg = quality_runner.config(args.threads)
        cfg["adaptive_rescored"] = "kv_adaptive rows re-run alone (--rescore-adaptive)"
        cfg_path.write_text(json.dumps(cfg, indent=1) + "\n")
    elif not args.summarize:
        import quality_runner

        cfg = quality_runner.config(args.threads)
        if cfg_path.exists() and log.exists():
            old = json.loads(cfg_path.read_text())
            if old.get("fingerprint") != cfg["fingerprint"]:
                ap.error(f"{log} was made with other settings; move it away to start again")
        cfg_path.write_text(json.dumps(cfg, indent=1) + "\n")
        done = {r["id"] for r in load_records(log)}
        todo = [it for it in items if it.id not in done]
        print(f"{len(done)} items done, {len(todo)} to go", file=sys.stderr, flush=True)
        if todo:
            quality_runner.run(todo, log, args.threads)
    want = {it.id for it in items}
    records = [r for r in load_records(log) if r["id"] in want]
    cfg = json.loads(cfg_path.read_text())
    cfg["seconds_this_invocation"] = round(time.perf_counter() - t0, 1)
    cfg["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    cfg.setdefault("machine", f"{platform.machine()} CPU")
    cfg["task_items"] = len(qt.items())
    cfg["item_seconds_total"] = round(sum(r.get("seconds", 0.0) for r in records))
    report = {"config": cfg, "summary": summarize(records)}
    (args.out / "quality_bench.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "quality_bench.md").write_text(markdown(report))
    plot(report, args.out / "quality_bench.png")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
