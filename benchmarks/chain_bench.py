"""Agent chains: text handoff vs AVP KV-cache handoff (2 and 4 agents, default model).

    python benchmarks/chain_bench.py            # full run, writes benchmarks/results/chain_*
    python benchmarks/chain_bench.py --quick    # one problem, short budgets (used by a test)

Every agent of a chain gets a role; the last one answers. Per hop we record the tokens the agent
processes (tokens it reads + tokens it writes), its wall time (including encoding and decoding the
handoff message) and the bytes of the message it hands on.

* text: agent i reads the question plus everything agents 1..i-1 wrote, then writes `--draft`
  tokens of text (the last agent writes `--answer` tokens). Prompts grow with every hop.
* avp:  agent 1 reads the question and thinks for `--steps` latent steps (no decoding); its
  KV-cache goes out as an AVP KV_CACHE message (bytes, then decoded again, as on a wire); agent i
  imports the cache, reads only its own short role instruction and thinks `--steps` latent steps;
  the last agent writes `--answer` tokens from the imported cache.

The published anchor (LatentMAS, 4-agent GSM8K chains on Qwen2.5): 73-78% fewer tokens with KV
handoff. The models here are tiny and the problems short, so accuracy is reported for honesty,
not as a claim: SmolLM2-135M gets few of these right either way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from avp_runtime.connector import Connector

import avp_codec as avp

ANCHOR = (0.73, 0.78)
RESULTS = Path(__file__).resolve().parent / "results"

PROBLEMS = [
    ("Tom has 3 apples and buys 5 more. How many apples does he have?", 8),
    ("A box holds 6 pens. How many pens are in 4 boxes?", 24),
    ("Sara had 20 stickers and gave away 7. How many stickers are left?", 13),
    ("A train travels 60 km each hour for 3 hours. How far does it go?", 180),
    ("There are 12 cookies shared equally by 3 children. How many does each child get?", 4),
    ("Ben reads 15 pages a day. How many pages does he read in 2 days?", 30),
    ("A shop sold 9 red and 14 blue balloons. How many balloons were sold?", 23),
    ("Lisa has 50 coins and spends 18. How many coins remain?", 32),
]

ROLES = {
    2: ["planner", "solver"],
    4: ["planner", "calculator", "checker", "solver"],
}
ROLE_TEXT = {
    "planner": "You are the planner. Outline the steps needed to solve the problem.",
    "calculator": "You are the calculator. Do the arithmetic the plan needs.",
    "checker": "You are the checker. Verify the work so far and fix any mistake.",
    "solver": "You are the solver. Give the final answer as a number.",
}


@dataclass
class Hop:
    agent: int
    role: str
    tokens_read: int
    tokens_written: int
    latent_steps: int
    seconds: float
    message_bytes: int

    @property
    def tokens(self) -> int:
        return self.tokens_read + self.tokens_written + self.latent_steps


def _last_number(text: str) -> int | None:
    nums = re.findall(r"-?\d+", text.replace(",", ""))
    return int(nums[-1]) if nums else None


def _text_message(text: str) -> bytes:
    return avp.encode(avp.Message(kind=avp.Kind.TEXT, entries=[
        avp.Entry.of(avp.MetaKey.TEXT, text)]))


def run_text(c: Connector, question: str, roles: list[str], draft: int,
             answer: int) -> tuple[list[Hop], str]:
    notes: list[str] = []
    hops = []
    out = ""
    for i, role in enumerate(roles):
        t0 = time.perf_counter()
        prior = "".join(f"\n\nAgent {j + 1} wrote: {n}" for j, n in enumerate(notes))
        prompt = f"{ROLE_TEXT[role]}\n\nProblem: {question}{prior}"
        last = i == len(roles) - 1
        gen = c.generate(prompt, max_new_tokens=answer if last else draft)
        out = gen.text
        size = 0
        if not last:  # hand it on as an AVP TEXT message, encoded and decoded like the KV path
            wire = _text_message(out)
            out = str(avp.decode(wire).get(avp.MetaKey.TEXT))
            size = len(wire)
        hops.append(Hop(i + 1, role, gen.prompt_tokens, len(gen.token_ids), 0,
                        time.perf_counter() - t0, size))
        notes.append(out)
    return hops, out


def _turn_ids(c: Connector, text: str) -> list[int]:
    """A new user turn appended to an imported context (no second system prompt), ending where
    the assistant's reply begins; plain text for a model without ChatML markers."""
    if "<|im_start|>" in c.tokenizer.get_vocab():
        turn = f"<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        return [int(i) for i in c.tokenizer(turn, add_special_tokens=False)["input_ids"]]
    return c.encode_prompt(text, chat=False)


def run_avp(c: Connector, question: str, roles: list[str], steps: int,
            answer: int) -> tuple[list[Hop], str]:
    hops = []
    wire: bytes | None = None
    out = ""
    for i, role in enumerate(roles):
        t0 = time.perf_counter()
        last = i == len(roles) - 1
        if i == 0:
            ids = c.encode_prompt(f"{ROLE_TEXT[role]}\n\nProblem: {question}")
            ctx = c.think(ids, steps)
            wire = c.export_bytes(ctx)
            hops.append(Hop(1, role, len(ids), 0, steps, time.perf_counter() - t0, len(wire)))
            continue
        assert wire is not None
        ctx = c.import_(avp.decode(wire))
        ids = _turn_ids(c, ROLE_TEXT[role])
        if last:
            gen = c.generate(ids, context=ctx, max_new_tokens=answer)
            out = gen.text
            hops.append(Hop(i + 1, role, len(ids), len(gen.token_ids), 0,
                            time.perf_counter() - t0, 0))
        else:
            ctx = c.think(ids, steps, context=ctx)
            wire = c.export_bytes(ctx)
            hops.append(Hop(i + 1, role, len(ids), 0, steps, time.perf_counter() - t0,
                            len(wire)))
    return hops, out


def bench(c: Connector, problems: list[tuple[str, int]], chains: list[int], *, draft: int,
          answer: int, steps: int) -> dict[str, Any]:
    runs = []
    for n in chains:
        for q, expected in problems:
            for mode in ("text", "avp"):
                print(f"  {n} agents, {mode}: {q[:50]}...", file=sys.stderr, flush=True)
                if mode == "text":
                    hops, out = run_text(c, q, ROLES[n], draft, answer)
                else:
                    hops, out = run_avp(c, q, ROLES[n], steps, answer)
                print(f"    {sum(h.seconds for h in hops):.1f} s, "
                      f"{sum(h.tokens for h in hops)} tokens", file=sys.stderr, flush=True)
                runs.append({
                    "agents": n, "mode": mode, "problem": q, "expected": expected,
                    "answer": out, "correct": _last_number(out) == expected,
                    "hops": [asdict(h) | {"tokens": h.tokens} for h in hops],
                    "tokens": sum(h.tokens for h in hops),
                    "seconds": sum(h.seconds for h in hops),
                    "message_bytes": sum(h.message_bytes for h in hops),
                })
    return {"runs": runs, "summary": summarise(runs, chains)}


def summarise(runs: list[dict[str, Any]], chains: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in chains:
        row: dict[str, Any] = {}
        for mode in ("text", "avp"):
            rs = [r for r in runs if r["agents"] == n and r["mode"] == mode]
            k = len(rs)
            per_hop = [sum(r["hops"][h]["tokens"] for r in rs) / k for h in range(n)]
            row[mode] = {
                "problems": k,
                "tokens_total": sum(r["tokens"] for r in rs),
                "tokens_per_problem": sum(r["tokens"] for r in rs) / k,
                "tokens_per_hop": [round(x, 1) for x in per_hop],
                "seconds_total": round(sum(r["seconds"] for r in rs), 2),
                "message_bytes_per_problem": sum(r["message_bytes"] for r in rs) / k,
                "accuracy": sum(r["correct"] for r in rs) / k,
            }
        t, a = row["text"], row["avp"]
        row["token_reduction"] = 1 - a["tokens_total"] / t["tokens_total"]
        row["speedup"] = t["seconds_total"] / a["seconds_total"]
        out[str(n)] = row
    return out


def write_markdown(res: dict[str, Any], path: Path) -> None:
    cfg = res["config"]
    lines = [
        "# Chain benchmark: text handoff vs AVP KV-cache handoff", "",
        f"Model {cfg['model']}, {cfg['problems']} arithmetic word problems, draft "
        f"{cfg['draft']} tokens, answer {cfg['answer']} tokens, {cfg['steps']} latent steps per "
        f"agent; {cfg['machine']}. Tokens = tokens read + tokens written + latent steps.", "",
        "| agents | mode | tokens/problem | tokens per hop | seconds (all problems) | "
        "handoff bytes/problem | accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, row in res["summary"].items():
        for mode in ("text", "avp"):
            m = row[mode]
            lines.append(
                f"| {n} | {mode} | {m['tokens_per_problem']:.0f} | "
                f"{' -> '.join(f'{x:.0f}' for x in m['tokens_per_hop'])} | "
                f"{m['seconds_total']:.1f} | {m['message_bytes_per_problem']:,.0f} | "
                f"{m['accuracy']:.0%} |")
    lines.append("")
    for n, row in res["summary"].items():
        lines.append(f"- {n} agents: AVP processes {row['token_reduction']:.1%} fewer tokens "
                     f"than text, {row['speedup']:.2f}x the speed.")
    lo, hi = ANCHOR
    lines += ["", f"Published anchor at 4 agents: {lo:.0%}-{hi:.0%} fewer tokens.", ""]
    path.write_text("\n".join(lines))


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chains = list(res["summary"])
    fig, axes = plt.subplots(1, len(chains), figsize=(5 * len(chains), 3.6), squeeze=False)
    for ax, n in zip(axes[0], chains, strict=True):
        row = res["summary"][n]
        hops = range(1, int(n) + 1)
        for mode, style in (("text", "o-"), ("avp", "s-")):
            ax.plot(list(hops), row[mode]["tokens_per_hop"], style, label=mode)
        ax.set_title(f"{n} agents: {row['token_reduction']:.0%} fewer tokens with AVP")
        ax.set_xlabel("hop (agent)")
        ax.set_ylabel("tokens processed (mean per problem)")
        ax.set_xticks(list(hops))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="1 problem, tiny budgets (seconds; used by a test)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--draft", type=int, default=48)
    ap.add_argument("--answer", type=int, default=24)
    ap.add_argument("--steps", type=int, default=10)
    # 4 problems: the committed run took 14 min with the 2 cores shared by ~8 other busy
    # processes (load average 8-11), most of it the text chains; --problems 8 runs them all.
    ap.add_argument("--problems", type=int, default=4,
                    help=f"how many of the {len(PROBLEMS)} built-in problems to run")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: stable timings on a shared 2-core machine)")
    args = ap.parse_args(argv)
    problems, chains = PROBLEMS[: args.problems], [2, 4]
    if args.quick:
        problems, chains = PROBLEMS[:1], [2, 4]
        args.draft, args.answer, args.steps = 8, 4, 2
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    c = Connector.from_pretrained(args.model)
    res = bench(c, problems, chains, draft=args.draft, answer=args.answer, steps=args.steps)
    res["config"] = {
        "model": c.name, "problems": len(problems), "draft": args.draft, "answer": args.answer,
        "steps": args.steps, "quick": args.quick, "anchor_4_agents": list(ANCHOR),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}",
        "seconds": round(time.perf_counter() - t0, 1),
        # Wall times are only comparable within one run; the load says how busy the cores were.
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "chain_bench_quick" if args.quick else "chain_bench"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(res, args.out_dir / f"{stem}.md")
    plot(res, args.out_dir / f"{stem}.png")
    for n, row in res["summary"].items():
        print(f"{n} agents: text {row['text']['tokens_per_problem']:.0f} tokens/problem, "
              f"avp {row['avp']['tokens_per_problem']:.0f} -> {row['token_reduction']:.1%} "
              f"fewer tokens, {row['speedup']:.2f}x faster "
              f"(anchor at 4 agents: {ANCHOR[0]:.0%}-{ANCHOR[1]:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
