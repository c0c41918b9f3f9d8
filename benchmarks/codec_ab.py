"""Before/after A/B of the codec data paths on a shared machine (issue 18 points 1-2).

On a loaded machine absolute speeds say little: the same code runs 2-3x slower at load 9 than
at load 2. This compares two versions of avp_codec in the same time window instead: each run
imports whichever avp_codec is first on sys.path, times every path interleaved in a shuffled
order (wall and process CPU time, medians), and prints one JSON line; runs of the two versions
alternate. Single-thread paths only, so the CPU time is the code's own cost.

    git archive <before-ref> avp_codec | tar -x -C /tmp/before
    for i in 1 2 3; do
      PYTHONPATH=/tmp/before python benchmarks/codec_ab.py --reps 5 >> ab.jsonl
      python benchmarks/codec_ab.py --reps 5 >> ab.jsonl
    done
    python benchmarks/codec_ab.py --table ab.jsonl   # markdown table, before = the other path

The workload is codec_bench's 117 MB bf16 KV-cache (28 layers).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def run(reps: int) -> dict[str, object]:
    import codec_bench as cb
    import numpy as np

    import avp_codec as avp
    from avp_codec import quant

    keys, values = cb.make_cache()
    flat = np.concatenate([a.reshape(-1).view(np.uint8) for a in keys + values])
    dst = np.empty_like(flat)
    dst[:] = flat
    msg = cb.build(keys, values)
    enc = avp.encode(msg)
    buf = bytearray(len(enc))
    q8 = quant.quantize_message(msg, quant.preset("int8"))
    q4 = quant.quantize_message(msg, quant.preset("int4"))
    wz = avp.encode(avp.compress_message(msg, avp.Codec.ZSTD))
    wf = avp.encode(avp.compress_message(msg, avp.Codec.FLOATPLANE_ZSTD))
    paths: dict[str, Callable[[], object]] = {
        "memcpy": lambda: np.copyto(dst, flat),
        "encode_into_1t": lambda: avp.encode_into(cb.build(keys, values), buf, threads=1),
        "decode_verified_1t": lambda: [t.array() for t in avp.decode(enc, threads=1).tensors],
        "decode_unverified": lambda: [t.array() for t in avp.decode(enc, verify=False).tensors],
        "int8_quantize_1t": lambda: quant.quantize_message(cb.build(keys, values),
                                                           quant.preset("int8"), threads=1),
        "int4_quantize_1t": lambda: quant.quantize_message(cb.build(keys, values),
                                                           quant.preset("int4"), threads=1),
        "int8_dequantize_1t": lambda: quant.dequantize_message(q8, threads=1),
        "int4_dequantize_1t": lambda: quant.dequantize_message(q4, threads=1),
        "zstd_decode_1t": lambda: [t.array() for t in avp.decode(wz, threads=1).tensors],
        "floatplane_decode_1t": lambda: [t.array() for t in avp.decode(wf, threads=1).tensors],
    }
    wall: dict[str, list[float]] = {k: [] for k in paths}
    cpu: dict[str, list[float]] = {k: [] for k in paths}
    order = list(paths)
    for _ in range(reps):
        random.shuffle(order)
        for k in order:
            t0, c0 = time.perf_counter(), time.process_time()
            paths[k]()
            wall[k].append((time.perf_counter() - t0) * 1e3)
            cpu[k].append((time.process_time() - c0) * 1e3)
    return {"code": os.path.dirname(avp.__file__), "load": round(os.getloadavg()[0], 2),
            **{k: [round(statistics.median(wall[k]), 3), round(statistics.median(cpu[k]), 3)]
               for k in paths}}


def table(path: str) -> str:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    mine = str(Path(__file__).resolve().parent.parent / "avp_codec")
    after = [r for r in rows if r["code"] == mine]
    before = [r for r in rows if r["code"] != mine]
    keys = [k for k in rows[0] if k not in ("code", "load")]
    out = [f"{len(before)} runs before ({before[0]['code']}), {len(after)} after ({mine}), "
           f"alternating; 1-min load average at the end of each run: before "
           f"{[r['load'] for r in before]}, after {[r['load'] for r in after]}.", "",
           "| path | before wall ms | after wall ms | before CPU ms | after CPU ms "
           "| CPU after / before |", "|---|---:|---:|---:|---:|---:|"]
    for k in keys:
        bw, aw = (statistics.median(r[k][0] for r in rs) for rs in (before, after))
        bc, ac = (statistics.median(r[k][1] for r in rs) for rs in (before, after))
        out.append(f"| {k} | {bw:.2f} | {aw:.2f} | {bc:.2f} | {ac:.2f} | {ac / bc:.2f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--table", help="print the markdown table of a JSONL file of runs")
    args = ap.parse_args()
    print(table(args.table) if args.table else json.dumps(run(args.reps)))


if __name__ == "__main__":
    main()
