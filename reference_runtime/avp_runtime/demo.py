"""`python -m avp_runtime.demo` (`make demo`): two agents in two processes hand a real KV-cache
over HTTP.

Agent B is its own process: `python -m avp_runtime.agent serve`, an AVP-over-HTTP server
(spec/avp-http.md) on its own copy of the default model. Agent A, this process, opens a session
(HELLO -> ACCEPT: the model identities match, so KV_CACHE), thinks about a question in latent
steps and POSTs its KV-cache to B, which imports it and answers in the HTTP response. The same
pipeline is then run the way agents talk today: A writes its reasoning out as text and hands it
over in a TEXT session; B re-reads it. Both are timed stage by stage and printed side by side,
with the message sizes, the avp-dump summary of the .avp file A sent, and the curl line that
replays it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import avp_http

import avp_codec as avp

from .agent import Agent
from .connector import Connector

QUESTION = "What is the capital of France?"
THINK = "\nBefore answering, explain step by step what you know about it."
ANSWER = "Answer the question in one sentence."
START_TIMEOUT = 300.0


def _say(msg: str) -> None:
    print(msg, flush=True)


def _timed(label: str, fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    print(f"  ... {label}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


class AgentB:
    """Agent B's process: started first (it loads its model while A loads its own), stopped
    with SIGTERM at the end, whatever happened."""

    def __init__(self, answer_tokens: int, instruction: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "avp_runtime.agent", "serve", "--model", "smollm2",
             "--name", "agent-B", "--port", "0", "--max-new-tokens", str(answer_tokens),
             "--instruction", instruction],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=os.environ | {"PYTHONUNBUFFERED": "1"})
        self._port: list[int] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if raw.startswith(b"AVP-AGENT LISTENING"):
                self._port.append(int(raw.split()[-1]))
                self._ready.set()
        self._ready.set()  # the process ended

    def url(self) -> str:
        self._ready.wait(START_TIMEOUT)
        if not self._port:
            raise RuntimeError("agent B did not start (see `python -m avp_runtime.agent serve`)")
        return f"http://127.0.0.1:{self._port[0]}/avp/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def _dump_summary(path: Path) -> str:
    """avp-dump's summary of the message; a one-line fallback if the tool fails."""
    try:
        r = subprocess.run([sys.executable, "-m", "avp_tools.dump_cli", str(path)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        pass
    msg = avp.decode_file(path)
    return f"(avp-dump unavailable) kind {avp.Kind(msg.kind).name}, {len(msg.tensors)} tensors"


def run(question: str, steps: int, text_tokens: int, answer_tokens: int, out: Path) -> int:
    _say("== AVP demo: agent A thinks, hands its KV-cache to agent B over HTTP, B answers ==")
    # B reads the question again after A's imported context, as it would in a pipeline.
    b = AgentB(answer_tokens, f"{question} {ANSWER}")
    try:
        return _run(b, question, steps, text_tokens, out)
    finally:
        b.stop()


def _run(b: AgentB, question: str, steps: int, text_tokens: int, out: Path) -> int:
    a, load_a = _timed("agent A loads the model (B loads its own copy in its process)",
                       Connector.default)
    _, t_realign = _timed("A: realignment matrix (once per model)", a.realigner)
    url = b.url()
    _say(f"agent A: {a.name} loaded in {load_a:.1f} s (realignment matrix {t_realign:.1f} s); "
         f"agent B: pid {b.proc.pid}, listening at {url}")
    agent = Agent(a, "agent-A")
    a_prompt = question + THINK

    # --- latent handoff over AVP-over-HTTP (HTTP/2) ---------------------------------------
    with avp_http.AvpClient(url, timeout=START_TIMEOUT) as client:
        res, t_hs = _timed("A -> B: HELLO / ACCEPT", agent.handshake, client)
        _say(f"handshake: B is {res.peer.agent_name}, model identity "
             f"{(res.peer.model_id or b'').hex()[:16]}... (A: {a.model_id.hex()[:16]}...) -> "
             f"{'identical: KV-cache mode' if res.mode == avp.Mode.KV_CACHE else res.mode.name}")
        ctx, t_think = _timed(f"A: {steps} latent steps", a.think, a_prompt, steps)
        wire, t_export = _timed("A: export KV-cache", a.export_bytes, ctx)
        out.write_bytes(wire)
        reply, t_send = _timed("A -> B: POST the KV-cache; B imports it and answers",
                               client.deliver, wire)
    avp_answer = reply.json()

    # --- the same handoff as text, in a TEXT session with the same process ---------------
    texter = Agent(a, "agent-A-text", modes=(int(avp.Mode.TEXT),))
    reasoning, t_write = _timed("A: write reasoning as text", a.generate, a_prompt,
                                max_new_tokens=text_tokens)
    text = f"Another agent's reasoning: {reasoning.text}\n\n{question} {ANSWER}"
    text_wire = avp.encode(avp.text_message(text, role="user"))
    with avp_http.AvpClient(url, timeout=START_TIMEOUT) as client:
        assert texter.handshake(client).mode == avp.Mode.TEXT
        text_reply, t_text_send = _timed("A -> B: POST the text; B re-reads it and answers",
                                         client.deliver, text_wire)
    text_answer = text_reply.json()

    b_avp, b_text = float(avp_answer["seconds"]), float(text_answer["seconds"])
    _say("")
    _say(f"question:            {question}")
    _say(f"B's answer (AVP):    {avp_answer['answer']}")
    _say(f"B's answer (text):   {text_answer['answer']}")
    _say(f"A's text reasoning:  {reasoning.text[:200]}{'...' if len(reasoning.text) > 200 else ''}")
    _say("")
    rows: list[tuple[str, str, float, str, float]] = [
        ("A: reasoning", f"prompt + {steps} latent steps", t_think,
         f"{len(reasoning.token_ids)} tokens decoded", t_write),
        ("A: encode", "export KV-cache", t_export, "(text as is)", 0.0),
        ("HTTP transfer", f"{len(wire) / 1e6:.1f} MB over HTTP/2", t_send - b_avp,
         f"{len(text_wire):,} bytes", t_text_send - b_text),
        ("B: read + answer", "import + answer", b_avp, "prefill text + answer", b_text),
    ]
    _say(f"{'stage':<18} {'AVP latent handoff':<26} {'time':>8}   {'text handoff':<26} {'time':>8}")
    for stage, a_what, a_t, t_what, t_t in rows:
        _say(f"{stage:<18} {a_what:<26} {a_t:>7.2f}s   {t_what:<26} {t_t:>7.2f}s")
    total_avp = t_think + t_export + t_send
    total_txt = t_write + t_text_send
    _say(f"{'total':<18} {'':<26} {total_avp:>7.2f}s   {'':<26} {total_txt:>7.2f}s")
    _say(f"(handshake {t_hs:.2f} s, once per session)")
    _say("")
    _say(f"KV-cache message: {len(wire):,} bytes for {ctx.context_length} positions "
         f"({len(wire) / max(ctx.context_length, 1) / 1024:.1f} KiB per position) -> {out}")
    _say(f"text message:     {len(text_wire):,} bytes")
    _say("")
    _say("avp-dump summary of the message A sent:")
    _say(_dump_summary(out))
    _say("")
    _say("replay it with curl (a session first; see README):")
    _say(f"  curl -s -D - -o /dev/null --data-binary @hello.avp -H 'Content-Type: "
         f"application/avp' {url}/handshake")
    _say(f"  curl -s --data-binary @{out} -H 'Content-Type: application/avp' "
         f"-H 'AVP-Session: <token>' {url}/deliver")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avp_runtime.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--question", default=QUESTION)
    p.add_argument("--steps", type=int, default=8, help="latent steps of agent A")
    p.add_argument("--text-tokens", type=int, default=48,
                   help="tokens agent A may write in the text-mode comparison")
    p.add_argument("--answer-tokens", type=int, default=24)
    p.add_argument("--out", type=Path, default=None, help="where to write the .avp file")
    args = p.parse_args(argv)
    if args.out is not None:
        return run(args.question, args.steps, args.text_tokens, args.answer_tokens, args.out)
    with tempfile.TemporaryDirectory(prefix="avp-demo-") as d:
        return run(args.question, args.steps, args.text_tokens, args.answer_tokens,
                   Path(d) / "handoff.avp")


if __name__ == "__main__":
    sys.exit(main())
