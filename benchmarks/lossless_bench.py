"""Lossless codecs on a real KV-cache: ratio and speed over zstd levels (issue 18 point 3).

The cache is SmolLM2-135M-Instruct's (the runtime's default model) bf16 KV for a 1000-token chat
prompt built from the frozen fidelity prompts; it is captured once through
``avp_runtime.Connector.default()`` and kept under benchmarks/data/ (not committed: 23 MB; the
capture is deterministic and takes seconds). Each codec and level compresses the message's KEY
and VALUE tensors with ``avp.compress_message`` on the threads the process may use and decodes
them with ``avp.decode``; every (codec, level) path runs interleaved in a shuffled order per
repetition, medians reported. Ratio = bf16 KV bytes / stored KV bytes. floatplane_zstd runs on
both transform paths, the compiled kernels (``avp_codec._plane_kernels``, numba) and their numpy
twins (``AVP_KERNELS=numpy``), interleaved in the same run; their bytes are checked identical.
zstd and byteplane_zstd have no compiled path (one row each).

    python benchmarks/lossless_bench.py [--reps N]

Writes benchmarks/results/lossless_bench.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import avp_codec as avp
from avp_codec import _jit

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CAPTURE = HERE / "data" / "smollm2_kv_bf16_1000.avp"
TOKENS = 1000
BP, FP = avp.Codec.BYTEPLANE_ZSTD, avp.Codec.FLOATPLANE_ZSTD
# (label, codec, zstd level or None for the codec's default parameters)
POINTS: list[tuple[str, avp.Codec, int | None]] = [
    ("zstd L3", avp.Codec.ZSTD, 3),
    *((f"byteplane_zstd L{lv}", BP, lv) for lv in (1, 3, 9, 19)),
    ("floatplane_zstd default", FP, None),
    *((f"floatplane_zstd L{lv}", FP, lv) for lv in (1, 3, 9, 19)),
]
TARGET_RATIO, TARGET_MB_S, TARGET_DECODE_MB_S = 1.5, 400.0, 800.0


def capture() -> bytes:
    """The bf16 KV-cache message of a 1000-token prompt (captured once, then read back)."""
    if CAPTURE.exists():
        return CAPTURE.read_bytes()
    import torch
    from avp_runtime.connector import Connector

    torch.manual_seed(0)
    conn = Connector.default()
    prompts = json.loads((RESULTS / "fidelity_prompts.json").read_text())["prompts"]
    text = "\n\n".join([prompts[0]["instruction"], prompts[0]["document"],
                        prompts[1]["document"], prompts[2]["document"]])
    ids = conn.encode_prompt(text)[:TOKENS]
    if len(ids) < TOKENS:
        raise SystemExit(f"prompt has only {len(ids)} tokens")
    wire = conn.export_bytes(conn.prefill(ids), dtype=torch.bfloat16)
    CAPTURE.parent.mkdir(exist_ok=True)
    CAPTURE.write_bytes(wire)
    return wire


def kv_bytes(msg: avp.Message) -> tuple[int, int]:
    kv = [t for t in msg.tensors if t.role in (avp.Role.KEY, avp.Role.VALUE)]
    return sum(t.raw_length for t in kv), sum(t.stored_length for t in kv)


def _on(path: str) -> None:
    """Select the plane-transform path for what runs next in this process."""
    if path == "numpy":
        os.environ[_jit.ENV] = "numpy"
    else:
        os.environ.pop(_jit.ENV, None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    base = avp.decode(capture())
    raw, _ = kv_bytes(base)
    path_names = ["kernels", "numpy"] if _jit.available() else ["numpy"]
    ratios: dict[str, float] = {}
    paths: dict[str, tuple[str, Callable[[], object]]] = {}
    for label, codec, level in POINTS:
        wire = b""
        for pn in path_names if codec == FP else path_names[:1]:
            _on(pn)

            def enc(codec: avp.Codec = codec, level: int | None = level,
                    threads: int | None = None) -> avp.Message:
                return avp.compress_message(base, codec, level=level, threads=threads)

            msg = enc()
            assert all(t.codec == codec for t in msg.tensors
                       if t.role in (avp.Role.KEY, avp.Role.VALUE)), label
            w = avp.encode(msg)
            assert not wire or w == wire, f"{label}: the paths' bytes differ"
            wire = w
            ratios[label] = raw / kv_bytes(msg)[1]
            back = avp.decode(wire)
            assert [t.array().tobytes() for t in back.tensors] == [
                t.array().tobytes() for t in base.tensors], label  # lossless, checked
            key = label if codec != FP else f"{label} [{pn}]"
            paths[f"{key} encode"] = (pn, enc)
            paths[f"{key} decode"] = (pn, lambda w=wire: [t.array()
                                                          for t in avp.decode(w).tensors])
            if label == "floatplane_zstd default":  # one thread: the per-core figure
                paths[f"{key} encode 1T"] = (pn, lambda e=enc: e(threads=1))
                paths[f"{key} decode 1T"] = (pn, lambda w=wire: [
                    t.array() for t in avp.decode(w, threads=1).tensors])
    load0 = os.getloadavg()[0]
    times: dict[str, list[float]] = {k: [] for k in paths}
    cpu: dict[str, list[float]] = {k: [] for k in paths}
    order = list(paths)
    rnd = random.Random(3)
    for _ in range(args.reps):
        rnd.shuffle(order)
        for name in order:
            pn, fn = paths[name]
            _on(pn)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    _on("kernels")
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}

    def mb(d: dict[str, float], k: str) -> float | None:
        return round(raw / d[k] / 1e6, 1) if k in d else None

    rows = []
    for label, codec, level in POINTS:
        for pn in path_names if codec == FP else path_names[:1]:
            key = label if codec != FP else f"{label} [{pn}]"
            rows.append({"codec": codec.name.lower(), "level": level, "label": label,
                         "path": pn if codec == FP else "-",
                         "ratio": round(ratios[label], 4),
                         "encode_mb_s": mb(med, f"{key} encode"),
                         "decode_mb_s": mb(med, f"{key} decode"),
                         "encode_mb_per_cpu_s": mb(med_cpu, f"{key} encode"),
                         "decode_mb_per_cpu_s": mb(med_cpu, f"{key} decode"),
                         "encode_1thread_mb_s": mb(med, f"{key} encode 1T"),
                         "decode_1thread_mb_s": mb(med, f"{key} decode 1T")})
    by = {(r["label"], r["path"]): r for r in rows}
    best = path_names[0]
    fp = by[("floatplane_zstd default", best)]
    best_bp = max(r["ratio"] for r in rows if r["codec"] == "byteplane_zstd")
    targets = {
        "floatplane_ratio_ge_1.5": [fp["ratio"], TARGET_RATIO, fp["ratio"] >= TARGET_RATIO],
        f"floatplane_encode_ge_400_mb_s [{best}]": [fp["encode_mb_s"], TARGET_MB_S,
                                                    fp["encode_mb_s"] >= TARGET_MB_S],
        f"floatplane_decode_ge_800_mb_s [{best}]": [fp["decode_mb_s"], TARGET_DECODE_MB_S,
                                                    fp["decode_mb_s"] >= TARGET_DECODE_MB_S],
        "floatplane_default_beats_byteplane_zstd_L3_ratio": [
            fp["ratio"], by[("byteplane_zstd L3", "-")]["ratio"],
            fp["ratio"] > by[("byteplane_zstd L3", "-")]["ratio"]],
        "floatplane_default_beats_every_byteplane_level_ratio": [
            fp["ratio"], best_bp, fp["ratio"] > best_bp],
    }
    if best == "kernels":  # the compiled path must not be slower than numpy's anywhere
        for label, codec, _level in POINTS:
            if codec != FP:
                continue
            k, n = by[(label, "kernels")], by[(label, "numpy")]
            for what in ("encode", "decode"):
                targets[f"{label} {what} kernels_not_slower_than_numpy (per CPU-s)"] = [
                    k[f"{what}_mb_per_cpu_s"], n[f"{what}_mb_per_cpu_s"],
                    k[f"{what}_mb_per_cpu_s"] >= 0.97 * n[f"{what}_mb_per_cpu_s"]]
    load1 = os.getloadavg()[0]
    result: dict[str, Any] = {
        "workload": {"model": "SmolLM2-135M-Instruct", "tokens": TOKENS, "dtype": "bfloat16",
                     "kv_bytes": raw, "tensors": sum(1 for t in base.tensors
                                                     if t.role in (avp.Role.KEY,
                                                                   avp.Role.VALUE))},
        "reps": args.reps, "threads": len(os.sched_getaffinity(0)),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg_1min_before_after": [round(load0, 2), round(load1, 2)]},
        "rows": rows, "targets": targets,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lossless_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Lossless codecs on a real KV-cache", "",
             f"SmolLM2-135M-Instruct bf16 KV of a {TOKENS}-token prompt ({raw / 1e6:.1f} MB, "
             f"{result['workload']['tensors']} tensors); median of {args.reps} interleaved reps "
             f"on {result['threads']} threads; 1-min load average before/after "
             f"{result['machine']['loadavg_1min_before_after']} on {os.cpu_count()} CPUs "
             "(a shared machine: MB/s are lower bounds). MB per CPU-s divides by the process's "
             "CPU time, all threads: the code's cost apart from waiting for a core. Path: "
             "compiled plane kernels (numba) or their numpy twins (AVP_KERNELS=numpy); both "
             "write the same bytes (checked here). 1T: one thread.", "",
             "| codec | zstd level | path | ratio | encode MB/s | decode MB/s | encode MB per "
             "CPU-s | decode MB per CPU-s | encode 1T MB/s | decode 1T MB/s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def f(v: float | None) -> str:
        return "" if v is None else f"{v:.0f}"

    lines += [f"| {r['codec']} | {r['level'] if r['level'] is not None else 'default'} | "
              f"{r['path']} | {r['ratio']:.4f} | {f(r['encode_mb_s'])} | {f(r['decode_mb_s'])} "
              f"| {f(r['encode_mb_per_cpu_s'])} | {f(r['decode_mb_per_cpu_s'])} | "
              f"{f(r['encode_1thread_mb_s'])} | {f(r['decode_1thread_mb_s'])} |" for r in rows]
    lines += ["", "| target (issue 18 points 2 and 3) | measured | limit | met |",
              "|---|---:|---:|---|"]
    lines += [f"| {k} | {v[0]} | {v[1]} | {'met' if v[2] else 'MISSED'} |"
              for k, v in targets.items()]
    (RESULTS / "lossless_bench.md").write_text("\n".join(lines) + "\n")
    plot([r for r in rows if r["path"] in ("-", best)], RESULTS / "lossless_bench.png")
    print("\n".join(lines))


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for codec, marker in (("zstd", "s"), ("byteplane_zstd", "o"), ("floatplane_zstd", "^")):
        pts = [r for r in rows if r["codec"] == codec]
        ax.plot([r["encode_mb_s"] for r in pts], [r["ratio"] for r in pts], marker=marker,
                label=codec)
        for r in pts:
            ax.annotate(r["label"].split()[-1], (r["encode_mb_s"], r["ratio"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 3))
    ax.axhline(TARGET_RATIO, color="grey", ls=":", lw=1)
    ax.axvline(TARGET_MB_S, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("encode MB/s (bf16 input, log scale)")
    ax.set_ylabel("compression ratio")
    ax.set_title("Lossless codecs on SmolLM2-135M bf16 KV (1000 tokens)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
