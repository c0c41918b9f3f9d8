"""The handoff as users feel it: a real KV-cache over the HTTP binding at shaped link rates
(issue 18 point 4).

    python benchmarks/handoff_bench.py            # full run, writes benchmarks/results/handoff*
    python benchmarks/handoff_bench.py --quick    # short prompt, two rates, one repetition

Sender (this process): SmolLM2-135M-Instruct reads a long prompt. Each transfer exports that
KV-cache from the model's cache layer by layer (bfloat16), codes it tensor by tensor, and a
StreamEncoder writes the pieces into a bounded queue; avp_http.AvpClient.deliver sends them as
they come (an iterable body, HTTP/1.1), paced to the link rate. Receiver (a second process, the
avp_http server on hypercorn, handoff_receiver.py): the server decodes as bytes arrive, the
receiver decompresses or dequantizes each tensor when it completes (on_tensor) and imports the
cache at the end (Connector.import_). So encode, wire and decode overlap tensor by tensor.

End-to-end seconds run from the start of the export to the end of the import (one machine, one
clock). Links: 0.1, 1, 10 and 25 Gbps by a paced sender (a cap: the loopback HTTP path itself may
be slower), and unshaped loopback. Codecs: raw, zstd, the best lossless codec, int8, int4, the
adaptive policy, and codec="auto" twice: with the default fidelity floor (lossless, through
Connector.export(codec="auto")) and with a 95% top-1 agreement floor (lossy codecs whose
held-out agreement is at least 95% admitted). Auto chooses from the link rate measured by
probe transfers at that link (AvpClient.upload_bps, the fastest of 3) and each codec's whole CPU
path on this machine, timed end to end over the unshaped HTTP path at the start of the run
(on 2 shared cores encode, transport, decode and import compete for the same CPUs, so the
component rates, modelled as a perfect pipeline, promise far more than the path gives).

Targets: at every rate, auto within 10% of the best measured codec its floor admits, and never
slower than raw. Each (codec, rate) runs --reps times in a shuffled order; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GBPS = {"0.1 Gbps": 0.1e9 / 8, "1 Gbps": 1e9 / 8, "10 Gbps": 10e9 / 8, "25 Gbps": 25e9 / 8,
        "loopback": None}
CODECS = ["raw", "zstd", "floatplane_zstd", "int8", "int4", "adaptive", "auto", "auto95"]
AUTO_FLOOR = 95.0
PIECE = 1 << 16  # bytes per paced write
QUEUE_PIECES = 64  # encoded pieces the sender may run ahead of the link (bounds its memory)
TOKENS = 2048


# -- the link -------------------------------------------------------------------------------------
def paced(pieces: Iterator[bytes | memoryview], bps: float | None) -> Iterator[bytes]:
    """`pieces` re-cut into PIECE-byte writes, none leaving before the link could have carried
    the bytes before it: after t seconds at most bps * t bytes have gone (a paced sender)."""
    t0 = time.perf_counter()
    sent = 0
    for piece in pieces:
        view = memoryview(piece).cast("B")
        for i in range(0, len(view), PIECE):
            part = bytes(view[i:i + PIECE])
            if bps is not None:
                wait = t0 + (sent + len(part)) / bps - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            sent += len(part)
            yield part


class QueueWriter:
    """A writable for StreamEncoder / Connector.export: pieces go to a bounded queue that the
    HTTP body drains, so encoding runs ahead of the link by at most QUEUE_PIECES pieces."""

    def __init__(self) -> None:
        self.q: queue.Queue[bytes | BaseException | None] = queue.Queue(QUEUE_PIECES)

    def write(self, data: bytes | memoryview) -> int:
        self.q.put(bytes(data))
        return len(data)

    def pieces(self) -> Iterator[bytes]:
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def produce(job: Callable[[QueueWriter], object]) -> QueueWriter:
    """Run `job(writer)` on a thread; the writer's pieces end (or raise) when it does."""
    w = QueueWriter()

    def run() -> None:
        try:
            job(w)
        except BaseException as e:  # handed to the consumer, which raises it
            w.q.put(e)
            return
        w.q.put(None)

    threading.Thread(target=run, daemon=True).start()
    return w


# -- receiver process -----------------------------------------------------------------------------
class Peer:
    def __init__(self, quick: bool) -> None:
        cmd = [sys.executable, str(HERE / "handoff_receiver.py")]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=str(HERE))
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 600
        for line in self.proc.stdout:
            if line.startswith("HANDOFF-RECEIVER LISTENING"):
                self.url = f"http://127.0.0.1:{int(line.split()[-1])}/avp/v1"
                return
            if time.monotonic() > deadline:
                break
        self.close()
        raise RuntimeError("the receiver process did not start")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


# -- the run --------------------------------------------------------------------------------------
def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import avp_http
    import handoff_codecs as hc
    import torch

    import avp_codec as avp
    from avp_codec import auto

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    sender = hc.Sender.load(args.tokens)
    peer = Peer(args.quick)
    try:
        client = avp_http.AvpClient(peer.url, http2=False, timeout=600.0)
        hello = avp.hello_message("handoff-bench",
                                  modes=[int(avp.Mode.KV_CACHE), int(avp.Mode.TEXT)],
                                  model_id=sender.c.model_id,
                                  tokenizer_id=sender.c.tokenizer_id)
        client.handshake(hello)
        names = [n for n in CODECS if not n.startswith("auto")]
        parts = sender.profiles(names)  # sender-only encode, local decode + import
        rates = {k: v for k, v in GBPS.items() if not args.quick or k in ("1 Gbps", "loopback")}
        probe = sender.probe_message()
        runs: list[dict[str, Any]] = []
        links: dict[str, float] = {}
        choices: dict[str, dict[str, str]] = {}
        table: list[auto.CodecProfile] = []

        def transfer(codec: str, rate_name: str, bps: float | None) -> dict[str, Any]:
            job = sender.job(codec, link_bps=links.get(rate_name), profiles=table,
                             floor=AUTO_FLOOR)
            t0 = time.time()
            w = produce(job)
            reply = client.deliver(paced(w.pieces(), bps)).json()
            return {"rate": rate_name, "codec": codec, "seconds": reply["t_done"] - t0,
                    "first_tensor_s": reply["t_first"] - t0, "wire_bytes": reply["bytes"],
                    "imported_digest": reply["digest"], "upload_s": client.last_upload[1]
                    if client.last_upload else None,
                    "wire_codecs": reply["wire_codecs"], "quantized": reply["quantized"]}

        def measure(bps: float | None) -> float:
            """The link's rate: the fastest of 3 probes (a paced link never beats its pace;
            a slow probe is the shared machine, not the link)."""
            client.deliver(paced(iter([probe]), bps))  # warms the connection
            seen = []
            for _ in range(3):
                client.deliver(paced(iter([probe]), bps))
                seen.append(client.upload_bps or float("inf"))
            return max(seen)

        # What auto chooses by: each codec's whole CPU path on this machine (export, code,
        # HTTP, server decode, dequantize, import), timed end to end over the unshaped path
        # (the fastest of 2). On this 2-core machine those stages compete for the same cores,
        # so the component rates above, pipelined, would promise far more than the path gives.
        path: dict[str, float] = {}
        for name in names:  # once unmeasured: first calls pay for lazy imports and allocation
            transfer(name, "unshaped", None)
        for name in names:
            path[name] = min(transfer(name, "unshaped", None)["seconds"] for _ in range(2))
            p = parts[name]
            table.append(auto.CodecProfile(name, p.size_ratio, sender.raw_bytes / path[name],
                                           math.inf, p.lossless, p.agreement_pct))
        for rate_name, bps in rates.items():
            links[rate_name] = measure(bps)
            pick = {"raw_bytes": sender.raw_bytes, "pieces": sender.pieces}
            choices[rate_name] = {
                "auto": auto.choose_codec(links[rate_name], [p for p in table if p.lossless],
                                          **pick).name,
                "auto95": auto.choose_codec(links[rate_name], table, floor=AUTO_FLOOR,
                                            **pick).name,
            }
            order = [c for c in CODECS for _ in range(args.reps)]
            random.Random(f"{rate_name}").shuffle(order)
            for codec in order:
                rec = transfer(codec, rate_name, bps)
                if codec.startswith("auto"):
                    rec["chose"] = choices[rate_name][codec]
                runs.append(rec)
                print(f"{rate_name:9s} {codec:9s} {rec['seconds']:7.3f} s "
                      f"{rec['wire_bytes'] / 1e6:7.2f} MB", file=sys.stderr, flush=True)
        client.close()
    finally:
        peer.close()
    return {
        "config": {
            "model": sender.name, "context_tokens": sender.tokens,
            "raw_bf16_kv_bytes": sender.raw_bytes, "tensors": sender.pieces,
            "reps": args.reps, "transport": "HTTP/1.1 (avp_http, hypercorn + httpx), loopback",
            "auto_floor_pct": AUTO_FLOOR, "quick": args.quick,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch 1 thread",
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "seconds": round(time.perf_counter() - t_start, 1),
            "adaptive_policy_seconds_once": round(sender.adaptive_seconds, 2),
        },
        "profiles": {k: {**vars(p), "path_bps": sender.raw_bytes / path[k]}
                     for k, p in parts.items()},
        "measured_link_bps": links,
        "auto_choices": choices,
        "expected_digest": sender.digest,
        "runs": runs,
    }


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Median seconds per (rate, codec); the auto targets per rate."""
    runs = report["runs"]
    rates = list(dict.fromkeys(r["rate"] for r in runs))
    seen = {r["codec"] for r in runs}
    codecs = [c for c in CODECS if c in seen] + sorted(seen - set(CODECS))
    med = {rate: {c: _median([r["seconds"] for r in runs if r["rate"] == rate
                              and r["codec"] == c]) for c in codecs} for rate in rates}
    profiles = report["profiles"]
    targets = []
    for rate in rates:
        m = med[rate]
        for a, floor in (("auto", "lossless"), ("auto95", report["config"]["auto_floor_pct"])):
            if a not in m:
                continue
            admitted = [c for c in codecs if not c.startswith("auto") and _admits(
                profiles[c], floor)]
            best = min(admitted, key=lambda c: m[c])
            chose = report["auto_choices"][rate][a]
            targets.append({
                "rate": rate, "auto": a, "floor": floor, "chose": chose,
                "seconds": round(m[a], 3), "best_codec": best, "best_seconds": round(m[best], 3),
                "vs_best": round(m[a] / m[best], 3), "raw_seconds": round(m["raw"], 3),
                "within_10pct_of_best": m[a] <= 1.10 * m[best],
                "not_slower_than_raw": m[a] <= m["raw"],
                # The decision apart from run-to-run noise: the median of the codec auto chose
                # when it ran under its own name.
                "choice_is_measured_best": m[chose] <= 1.10 * m[best] and m[chose] <= m["raw"],
            })
    lossless_ok = all(r["imported_digest"] == report["expected_digest"] for r in runs
                      if r["codec"] in ("raw", "zstd", "floatplane_zstd", "auto"))
    return {"median_seconds": med, "targets": targets, "lossless_bit_exact": lossless_ok}


def _admits(profile: dict[str, Any], floor: str | float) -> bool:
    from avp_codec import auto

    keep = ("name", "size_ratio", "encode_bps", "decode_bps", "lossless", "agreement_pct")
    return auto.admits(auto.CodecProfile(**{k: profile[k] for k in keep}), floor)


def markdown(report: dict[str, Any]) -> str:
    cfg, s = report["config"], report["summary"]
    codecs = list(next(iter(s["median_seconds"].values())))
    lines = [
        "# The handoff as users feel it: KV-cache over HTTP at shaped link rates", "",
        f"{cfg['model']}, {cfg['context_tokens']} context tokens: "
        f"{cfg['raw_bf16_kv_bytes'] / 1e6:.1f} MB of bfloat16 KV in {cfg['tensors']} tensors; "
        f"{cfg['transport']}; {cfg['machine']}; median of {cfg['reps']} shuffled repetitions; "
        f"load average {cfg['load_average_1min_at_end']} at the end (a shared machine). "
        "Generated by benchmarks/handoff_bench.py.", "",
        "End-to-end seconds (export start to import end):", "",
        "| link | measured link MB/s | " + " | ".join(codecs) + " |",
        "|---|---|" + "---|" * len(codecs),
    ]
    for rate, m in s["median_seconds"].items():
        best = min(v for k, v in m.items() if not k.startswith("auto"))
        cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in m.values()]
        lines.append(f"| {rate} | {report['measured_link_bps'][rate] / 1e6:,.1f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Codec throughput measured on this machine before the transfers (MB of raw "
              "bf16 KV per second). Encode: the sender alone (export + code + encode); decode: "
              "decode + dequantize + import in one process; path: the whole handoff end to end "
              "over the unshaped HTTP path, which auto chooses by (with the measured link rate "
              "and the size ratio):", "",
              "| codec | size ratio | encode MB/s | decode MB/s | path MB/s | lossless | "
              "top-1 agreement (held-out) |", "|---|---|---|---|---|---|---|"]
    for name, p in report["profiles"].items():
        agree = "" if p["agreement_pct"] is None else f"{p['agreement_pct']:.2f}%"
        path = f"{p['path_bps'] / 1e6:,.0f}" if "path_bps" in p else ""
        lines.append(f"| {name} | {p['size_ratio']:.2f}x | {p['encode_bps'] / 1e6:,.0f} | "
                     f"{p['decode_bps'] / 1e6:,.0f} | {path} | "
                     f"{'yes' if p['lossless'] else 'no'} | {agree} |")
    lines += ["", "Targets (auto within 10% of the best codec its floor admits, never slower "
              "than raw):", "",
              "| link | auto (floor) | chose | seconds | best admitted | seconds | ratio | "
              "within 10% | <= raw | choice's own median within 10% and <= raw |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for t in s["targets"]:
        lines.append(
            f"| {t['rate']} | {t['auto']} ({t['floor']}) | {t['chose']} | {t['seconds']:.3f} | "
            f"{t['best_codec']} | {t['best_seconds']:.3f} | {t['vs_best']:.2f} | "
            f"{'met' if t['within_10pct_of_best'] else '**missed**'} | "
            f"{'met' if t['not_slower_than_raw'] else '**missed**'} | "
            f"{'yes' if t['choice_is_measured_best'] else '**no**'} |")
    lines += ["", f"Lossless rows bit-exact after import: "
              f"{'yes' if s['lossless_bit_exact'] else '**NO**'}. The adaptive policy was "
              f"chosen once for this context ({cfg['adaptive_policy_seconds_once']} s, not in "
              "the times above), as a sender would reuse it for a model and context length."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["summary"]["median_seconds"]
    rates = list(s)
    xs = list(range(len(rates)))  # the links as set (the measured rate is in each label)
    fig, ax = plt.subplots(figsize=(8, 5))
    for codec in next(iter(s.values())):
        style = "s--" if codec.startswith("auto") else "o-"
        ax.plot(xs, [s[r][codec] for r in rates], style, label=codec, ms=5)
    ax.set_xticks(xs, [f"{r}\n({report['measured_link_bps'][r] / 1e6:,.0f} MB/s)"
                       for r in rates], fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("link (paced sender; measured rate)")
    ax.set_ylabel("end-to-end seconds (export to import, log)")
    ax.set_title(f"KV handoff over HTTP: {report['config']['raw_bf16_kv_bytes'] / 1e6:.0f} MB "
                 f"bf16 KV of {report['config']['model']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short prompt, 2 rates, 1 rep")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=TOKENS, help="context tokens of the KV-cache")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.tokens = 1, 96
    sys.path.insert(0, str(HERE))
    report = run(args)
    report["summary"] = summarize(report)
    stem = "handoff_quick" if args.quick else "handoff_bench"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    plot(report, args.out / f"{stem}.png")
    print(markdown(report))
    for t in report["summary"]["targets"]:
        print(f"target {t['rate']} {t['auto']}: within 10% of best "
              f"{'met' if t['within_10pct_of_best'] else 'MISSED'} ({t['vs_best']:.2f}x of "
              f"{t['best_codec']}), not slower than raw "
              f"{'met' if t['not_slower_than_raw'] else 'MISSED'} "
              f"({t['seconds']:.3f} s vs {t['raw_seconds']:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
