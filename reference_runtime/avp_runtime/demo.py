"""`python -m avp_runtime.demo` (`make demo`): a two-agent handoff on the default model.

Agent A thinks about a question in latent steps and hands its KV-cache to agent B as an .avp
file; B (its own copy of the model, loaded separately) imports it and answers. The same pipeline
is then run the way agents talk today: A writes its reasoning out as text, B re-reads it. Both
are timed stage by stage and printed side by side, with the message sizes and the avp-dump
summary of the .avp file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import avp_codec as avp

from .connector import Connector

QUESTION = "What is the capital of France?"
THINK = "\nBefore answering, explain step by step what you know about it."
ANSWER = " Answer in one sentence."


def _say(msg: str) -> None:
    print(msg, flush=True)


def _timed(label: str, fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    print(f"  ... {label}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def _dump_summary(path: Path) -> str:
    """avp-dump's summary of the message; a short summary of our own if the tool is missing."""
    try:
        r = subprocess.run(
            [sys.executable, "-m", "avp_tools.dump_cli", str(path)],
            capture_output=True, text=True, timeout=120,
        )
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        pass
    msg = avp.decode_file(path)
    lines = [f"(avp-dump unavailable; runtime summary) kind {avp.Kind(msg.kind).name}, "
             f"{len(msg.layers)} layers, {len(msg.tensors)} tensors"]
    for e in msg.entries:
        v = e.value.hex() if isinstance(e.value, bytes) else e.value
        lines.append(f"  {avp.MetaKey(e.key).name}: {v}")
    kinds: dict[str, int] = {}
    for layer in msg.layers:
        kinds[avp.LayerKind(layer.kind).name] = kinds.get(avp.LayerKind(layer.kind).name, 0) + 1
    lines.append(f"  layer kinds: {kinds}")
    t = next(t for t in msg.tensors if t.layer is not None)
    lines.append(f"  first layer tensor: {t!r}")
    return "\n".join(lines)


def run(question: str, steps: int, text_tokens: int, answer_tokens: int, out: Path) -> int:
    _say("== AVP demo: agent A thinks, hands its KV-cache to agent B, B answers ==")
    (a, load_a) = _timed("agent A loads the model", Connector.default)
    (b, load_b) = _timed("agent B loads its own copy", Connector.default)
    # The realignment matrix is computed once per model (like loading it), not per handoff.
    _, t_realign = _timed("A: realignment matrix (once per model)", a.realigner)
    _say(f"models loaded: A {load_a:.1f} s, B {load_b:.1f} s ({a.name}); "
         f"A's realignment matrix {t_realign:.1f} s")
    same = a.model_id == b.model_id
    _say(f"model identity A {a.model_id.hex()[:16]}..., B {b.model_id.hex()[:16]}... "
         f"-> {'identical: KV-cache mode' if same else 'different'}")
    a_prompt = question + THINK
    b_prompt = question + ANSWER

    # --- latent handoff over AVP --------------------------------------------------------
    ctx, t_think = _timed(f"A: {steps} latent steps", a.think, a_prompt, steps)
    size, t_export = _timed("A: export KV-cache", a.export_file, ctx, out)
    ctx_b, t_import = _timed("B: import KV-cache", b.import_, out)
    ans, t_answer = _timed("B: answer", b.generate, b_prompt, context=ctx_b,
                           max_new_tokens=answer_tokens)

    # --- the same handoff as text -------------------------------------------------------
    reasoning, t_write = _timed("A: write reasoning as text", a.generate, a_prompt,
                                max_new_tokens=text_tokens)
    text_msg = avp.encode(avp.text_message(reasoning.text))
    text_prompt = f"Another agent's reasoning: {reasoning.text}\n\n{b_prompt}"
    ans_text, t_answer_text = _timed("B: re-read and answer", b.generate, text_prompt,
                                     max_new_tokens=answer_tokens)

    _say("")
    _say(f"question:            {question}")
    _say(f"B's answer (AVP):    {ans.text}")
    _say(f"B's answer (text):   {ans_text.text}")
    _say(f"A's text reasoning:  {reasoning.text[:200]}{'...' if len(reasoning.text) > 200 else ''}")
    _say("")
    rows: list[tuple[str, str, float, str, float | None]] = [
        ("A: reasoning", f"prompt + {steps} latent steps", t_think,
         f"{len(reasoning.token_ids)} tokens decoded", t_write),
        ("handoff: encode", "export .avp file", t_export, "(text as is)", None),
        ("handoff: decode", "import .avp file", t_import, "(re-read by B below)", None),
        ("B: read + answer", f"{ans.prompt_tokens} own prompt tokens", t_answer,
         f"{ans_text.prompt_tokens} prompt tokens", t_answer_text),
    ]
    _say(f"{'stage':<18} {'AVP latent handoff':<26} {'time':>8}   {'text handoff':<26} {'time':>8}")
    for stage, a_what, a_t, t_what, t_t in rows:
        t_txt = "-" if t_t is None else f"{t_t:.2f}s"
        _say(f"{stage:<18} {a_what:<26} {a_t:>7.2f}s   {t_what:<26} {t_txt:>8}")
    total_avp = t_think + t_export + t_import + t_answer
    total_txt = t_write + t_answer_text
    _say(f"{'total':<18} {'':<26} {total_avp:>7.2f}s   {'':<26} {total_txt:>7.2f}s")
    _say("")
    _say(f"KV-cache message: {size:,} bytes for {ctx.context_length} positions "
         f"({size / max(ctx.context_length, 1) / 1024:.1f} KiB per position) -> {out}")
    _say(f"text message:     {len(text_msg):,} bytes")
    _say("")
    _say("avp-dump summary of the message:")
    _say(_dump_summary(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avp_runtime.demo", description=__doc__)
    p.add_argument("--question", default=QUESTION)
    p.add_argument("--steps", type=int, default=10, help="latent steps of agent A")
    p.add_argument("--text-tokens", type=int, default=96,
                   help="tokens agent A may write in the text-mode comparison")
    p.add_argument("--answer-tokens", type=int, default=48)
    p.add_argument("--out", type=Path, default=None, help="where to write the .avp file")
    args = p.parse_args(argv)
    if args.out is not None:
        return run(args.question, args.steps, args.text_tokens, args.answer_tokens, args.out)
    with tempfile.TemporaryDirectory(prefix="avp-demo-") as d:
        return run(args.question, args.steps, args.text_tokens, args.answer_tokens,
                   Path(d) / "handoff.avp")


if __name__ == "__main__":
    sys.exit(main())
