"""An AVP agent process: handshake, then hand work over in the negotiated mode.

    python -m avp_runtime.agent serve --model smollm2     # prints "AVP-AGENT LISTENING <port>"
    python -m avp_runtime.agent send  --model smollm2 --port P --prompt "..." [--target gemma]

A session (one connection) carries one length-prefixed AVP message per frame (transport.py) and,
as spec 14.2 / R-14.6 require, only the negotiated mode's payloads after the handshake:

    initiator -> HELLO            responder -> ACCEPT (or ERROR, and the session ends)
    initiator -> one payload:
        KV_CACHE      its context after reading the question and `steps` latent steps
        HIDDEN_STATE  (PROJECTION) its last hidden state projected into the responder's input
                      space, with TOKEN_IDS = the question in the responder's tokenizer
        TEXT          the question and the answer it decoded as text
    initiator half-closes; the responder consumes the payload, prints
    "AVP-AGENT ANSWER {json}" and closes, or sends ERROR with the refusal's code.

The initiator is the sender: a projection is computed by the side that holds the source model and
the target's embeddings (R-14.9), so `--target` names a local copy of the peer's model. A received
payload is checked against the negotiated mode, this agent's own capabilities and its own model
identity whatever the peer claims to have checked (R-14.6-14.8); every socket read has a timeout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

import avp_codec as avp

from . import handshake as hs
from . import identity, models
from . import projection as proj
from ._msg import build
from .connector import Connector
from .transport import DEFAULT_TIMEOUT, FramedSocket, listen

M = avp.MetaKey
MAX_MESSAGE = 1 << 31


def load_connector(name: str) -> Connector:
    if name == "tiny-random":
        from .tiny_peer import tiny_incompatible

        model, tok = tiny_incompatible()
        return Connector(model, tok, name=name)
    lm = models.load_model(name)
    return Connector(lm.model, lm.tokenizer, name=lm.name)


@dataclass
class Target:
    """A local copy of a peer's model we can project onto (embeddings + tokenizer)."""

    connector: Connector
    vocabulary: list[bytes]
    table: proj.ProjectionTable | None = None


@dataclass
class Agent:
    connector: Connector
    name: str
    modes: tuple[int, ...] = hs.ALL_MODES
    max_new_tokens: int = 24
    steps: int = 8
    instruction: str = "Answer the question in one short sentence."
    targets: list[Connector] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.connector
        self.vocabulary = identity.vocabulary(c.tokenizer)
        self._targets = {t.tokenizer_id: Target(t, identity.vocabulary(t.tokenizer))
                         for t in self.targets}
        self.local = hs.LocalSide(
            agent_name=self.name, model_id=c.model_id, tokenizer_id=c.tokenizer_id,
            vocabulary=self.vocabulary, model_name=c.name, modes=self.modes,
            max_message_bytes=MAX_MESSAGE,
            known_vocabularies={k: t.vocabulary for k, t in self._targets.items()})

    # ------------------------------------------------------------------ responder

    def serve(self, conn: FramedSocket) -> list[dict[str, Any]]:
        """One session as responder; returns what it answered (also printed by the CLI)."""
        try:
            hello, _ = conn.recv_message()
        except avp.AvpError as e:  # state machine: a decoding error ends it with ERROR
            conn.send_message(hs.error_message(e.code, e.detail, self.name))
            return []
        reply, res = hs.Responder(self.local).handle_hello(hello)
        conn.send_message(reply)
        if res is None:
            return []
        self.log.append(f"negotiated {res.mode.name} with {res.peer.agent_name}")
        answers = []
        for _ in range(1000):  # bounded: a session carries a handful of payloads
            try:
                data = conn.recv()
            except EOFError:
                break
            try:
                msg = avp.decode(data)
                if msg.kind == avp.Kind.ERROR:
                    self.log.append(f"peer reported {msg.get(M.ERROR_CODE)!r}")
                    continue
                assert res.offered is not None
                avp.check_payload(msg, res.mode, res.offered, len(data))
                t0 = time.perf_counter()
                text = self.answer(msg)
            except avp.AvpError as e:
                conn.send_message(hs.error_message(e.code, e.detail, self.name))
                break
            answers.append({"mode": res.mode.name, "peer": res.peer.agent_name,
                            "payload_bytes": len(data), "answer": text,
                            "seconds": round(time.perf_counter() - t0, 3)})
        return answers

    def answer(self, msg: avp.Message) -> str:
        c = self.connector
        if msg.kind == avp.Kind.KV_CACHE:
            ctx = c.import_(msg)  # MODEL_MISMATCH unless the cache is from our own model
            return c.generate(self.instruction, context=ctx,
                              max_new_tokens=self.max_new_tokens).text
        if msg.kind == avp.Kind.HIDDEN_STATE:
            # Every receiver check (ids against the vocabulary, batch, positions) in receive().
            got = proj.receive(msg, c, new_tokens=self.max_new_tokens)
            return proj.generate_after(c, got, max_new_tokens=self.max_new_tokens)
        # The text is placed as text: control-token spellings in it stay text (prompts.py).
        return c.generate(str(msg.get(M.TEXT)), max_new_tokens=self.max_new_tokens).text

    # ------------------------------------------------------------------ initiator

    def handshake(self, conn: FramedSocket) -> hs.Resolution:
        init = hs.Initiator(self.local)
        conn.send_message(init.hello())
        accept, _ = conn.recv_message()
        try:
            return init.handle_accept(accept)
        except avp.AvpError as e:
            if accept.kind != avp.Kind.ERROR:  # tell the peer why we hang up
                conn.send_message(hs.error_message(e.code, e.detail, self.name))
            raise

    def send(self, conn: FramedSocket, question: str) -> dict[str, Any]:
        """One task as initiator: handshake, one payload, then wait for the peer to finish."""
        res = self.handshake(conn)
        t0 = time.perf_counter()
        payload = self.payload(res, question)
        # The peer's capabilities and size limit bind what we send.
        assert res.peer_message is not None
        avp.check_payload(avp.decode(payload, verify=False), res.mode, res.peer_message,
                          len(payload))
        conn.send(payload)
        conn.finish_sending()
        try:  # the peer closes once it has consumed the payload, or says why it refused it
            reply, _ = conn.recv_message()
        except EOFError:
            reply = None
        if reply is not None and reply.kind == avp.Kind.ERROR:
            code = avp.ErrorCode(int(reply.get(M.ERROR_CODE)))  # type: ignore[arg-type]
            raise avp.AvpError(code, f"peer refused the payload: {reply.get(M.ERROR_TEXT)!s}")
        return {"mode": res.mode.name, "peer": res.peer.agent_name,
                "shared_vocab": res.shared_vocab, "peer_shared_vocab": res.peer.shared_vocab_size,
                "payload_bytes": len(payload), "seconds": round(time.perf_counter() - t0, 3)}

    def payload(self, res: hs.Resolution, question: str) -> bytes:
        c = self.connector
        if res.mode == avp.Mode.KV_CACHE:
            return c.export_bytes(c.think(question, self.steps))
        if res.mode == avp.Mode.PROJECTION:
            target = self._targets.get(res.peer.tokenizer_id or b"")
            if target is None or target.connector.model_id != res.peer.model_id:
                raise avp.AvpError(avp.ErrorCode.UNSUPPORTED_CAPABILITY,
                                   "no local copy of the peer's model to project onto")
            if target.table is None:
                target.table = proj.ProjectionTable.build(
                    c.tokenizer, target.connector.model, target.connector.tokenizer,
                    target_model_id=target.connector.model_id)
            ids = c._ids_tensor(c.encode_prompt(question))
            h = proj.last_hidden(c.model, ids)[:, -1:, :]
            msg = proj.projection_message(
                proj.project(c.model, h, target.table), target.table,
                source_model_id=c.model_id, model_name=c.name,
                context_ids=target.connector.encode_prompt(question))
            return avp.encode(msg)
        draft = c.generate(question, max_new_tokens=self.max_new_tokens).text
        text = f"{question}\n\nAnother agent's answer: {draft}"
        return avp.encode(build(avp.Kind.TEXT, {M.TEXT: text, M.TEXT_ROLE: "user"}))


# ---------------------------------------------------------------------- CLI


def _modes(s: str) -> tuple[int, ...]:
    names = {"kv": avp.Mode.KV_CACHE, "projection": avp.Mode.PROJECTION, "text": avp.Mode.TEXT}
    return tuple(sorted(int(names[p.strip()]) for p in s.split(",") if p.strip()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avp_runtime.agent", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["serve", "send"])
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--name", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--modes", default="kv,projection,text")
    ap.add_argument("--sessions", type=int, default=1, help="serve: sessions before exiting")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    ap.add_argument("--prompt", default="What is 2 + 3?")
    ap.add_argument("--target", action="append", default=[],
                    help="send: a local copy of a peer model to project onto (repeatable)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 keeps two agents on a 2-core machine from thrashing)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    agent = Agent(load_connector(args.model), args.name or f"{args.command}:{args.model}",
                  modes=_modes(args.modes), max_new_tokens=args.max_new_tokens,
                  steps=args.steps, targets=[load_connector(t) for t in args.target])
    if args.command == "serve":
        srv = listen(args.host, args.port)
        srv.settimeout(args.timeout)
        print(f"AVP-AGENT LISTENING {srv.getsockname()[1]}", flush=True)
        try:
            for _ in range(args.sessions):
                sock, _addr = srv.accept()
                conn = FramedSocket(sock, max_frame=MAX_MESSAGE, timeout=args.timeout)
                try:
                    for a in agent.serve(conn):
                        print(f"AVP-AGENT ANSWER {json.dumps(a)}", flush=True)
                finally:
                    conn.close()
                for line in agent.log:
                    print(f"AVP-AGENT {line}", file=sys.stderr, flush=True)
        finally:
            srv.close()
        return 0
    conn = FramedSocket.connect(args.host, args.port, max_frame=MAX_MESSAGE,
                                timeout=args.timeout, retry_for=args.timeout)
    try:
        result = agent.send(conn, args.prompt)
    except avp.AvpError as e:
        print(json.dumps({"error": e.code.name, "code": int(e.code), "detail": e.detail}))
        return 2
    finally:
        conn.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
