"""An AVP agent process over HTTP (spec/avp-http.md): handshake, then hand work over in the
negotiated mode.

    python -m avp_runtime.agent serve --model smollm2 --port 0   # "AVP-AGENT LISTENING <port>"
    python -m avp_runtime.agent send  --model smollm2 --url http://127.0.0.1:P/avp/v1 \\
        --prompt "..." [--target gemma]

The responder is an ``avp_http`` server (hypercorn: HTTP/1.1, h2c, h2 over TLS) hosting an
``AgentReceiver``; the initiator is an ``avp_http.AvpClient`` (HTTP/2). One exchange:

    initiator  POST handshake  HELLO          responder  ACCEPT + AVP-Session (or a problem)
    initiator  POST deliver    one payload:   responder  200 {"answer": ...} (or a problem)
        KV_CACHE      its context after reading the question and `steps` latent steps
        HIDDEN_STATE  (PROJECTION) its last hidden state projected into the responder's input
                      space, with TOKEN_IDS = the question in the responder's tokenizer
        TEXT          the question and the answer it decoded as text

Before sending a payload the initiator asks whether the responder already stores those exact
bytes (HEAD messages/{digest}) and then delivers by reference instead (R-H2.10): a repeated
handoff costs no transfer. The initiator is the sender: a projection is computed by the side that
holds the source model and the target's embeddings (R-14.9), so `--target` names a local copy of
the peer's model. The responder checks a payload against the negotiated mode, its own
capabilities and its own model identity whatever the peer claims to have checked (R-14.6-14.8):
the binding does the mode and capability checks as the HEADER and each tensor arrive, the
receiver's MODEL_ID check runs at the HEADER, and the model runs only after the end event.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import avp_http
import torch

import avp_codec as avp

from . import admit, identity, models
from . import handshake as hs
from . import projection as proj
from ._msg import build
from .connector import Connector

M = avp.MetaKey
MAX_MESSAGE = 1 << 31
DEFAULT_TIMEOUT = 300.0


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

    def handshake(self, client: avp_http.AvpClient) -> hs.Resolution:
        """HELLO, then our own check of the ACCEPT (R-14.2); a refused ACCEPT is reported to
        the peer as an ERROR in the session before the error is raised here."""
        init = hs.Initiator(self.local)
        accept = client.handshake(init.hello())
        try:
            return init.handle_accept(accept)
        except avp.AvpError as e:
            client.deliver(hs.error_message(e.code, e.detail, self.name))
            raise

    def send(self, client: avp_http.AvpClient, question: str) -> dict[str, Any]:
        """One task as initiator: handshake, one payload, the responder's answer."""
        res = self.handshake(client)
        t0 = time.perf_counter()
        payload = self.payload(res, question)
        # The peer's capabilities and size limit bind what we send.
        assert res.peer_message is not None
        avp.check_payload(avp.decode(payload, verify=False), res.mode, res.peer_message,
                          len(payload))
        digest = avp_http.message_digest(payload)
        by_reference = client.has(digest)  # the peer already holds these bytes: skip them
        reply = client.deliver_reference(digest) if by_reference else client.deliver(payload)
        answer = reply.json()
        return {"mode": res.mode.name, "peer": res.peer.agent_name,
                "shared_vocab": res.shared_vocab, "peer_shared_vocab": res.peer.shared_vocab_size,
                "payload_bytes": len(payload), "by_reference": by_reference,
                "answer": answer.get("answer"), "seconds": round(time.perf_counter() - t0, 3)}

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


class AgentReceiver(avp_http.Receiver):
    """An ``Agent`` as the responder of the HTTP binding.

    The handshake is the runtime's own (hs.Responder: CAP_MODES and, for PROJECTION between
    different tokenizers, its VOCABULARY in ACCEPT, R-14.10); a refusal becomes the problem of
    its code. Deliveries run the model one at a time (``concurrent_deliveries = 1``) and answer
    ``{"mode", "peer", "payload_bytes", "answer", "seconds"}``; each answer is also printed as
    ``AVP-AGENT ANSWER {json}`` for whoever watches the process. Delivered payloads are kept in
    the server's store, so a peer that hands over the same bytes again sends only their digest.
    """

    keep_deliveries = True
    concurrent_deliveries = 1

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.name = agent.name
        self.model_id = agent.connector.model_id
        self.tokenizer_id = agent.connector.tokenizer_id
        self.modes = agent.modes

    def negotiate(self, hello: avp.Message, max_message_bytes: int) -> avp_http.Negotiated:
        reply, res = hs.Responder(self.agent.local).handle_hello(hello)
        if res is None:  # the runtime answered ERROR: the binding answers its problem
            code = avp.ErrorCode(int(reply.get(M.ERROR_CODE)))  # type: ignore[arg-type]
            raise avp.AvpError(code, str(reply.get(M.ERROR_TEXT) or "handshake refused"))
        self.agent.log.append(f"negotiated {res.mode.name} with {res.peer.agent_name}")
        return avp_http.Negotiated(reply, res.mode, reply, res)

    def check_header(self, session: avp_http.Session, header: avp.HeaderEvent) -> None:
        """Refuse a KV_CACHE this model cannot use at its HEADER (MODEL_ID, CONTEXT_LENGTH
        against the model's maximum, the layer table), before any tensor is received or
        decompressed: a payload sized for another model never costs this server its bytes."""
        super().check_header(session, header)
        if header.kind == avp.Kind.KV_CACHE:
            c = self.agent.connector
            admit.check_header(avp.Message(header.kind, header.entries, header.layers),
                               c.model_id, c.spec)

    def tensor_check(self, session: avp_http.Session, header: avp.HeaderEvent
                     ) -> Callable[[int, avp.Tensor], None] | None:
        """A KV_CACHE's tensors are checked against this model (admit.TensorChecks: roles,
        layers, dtype, heads and head_dim, batch, token counts) from their descriptors, before
        their data is received or decompressed (R-H2.14): a tensor of another model's shapes is
        refused before it costs what it declares. ``import_`` checks the whole message again."""
        if header.kind != avp.Kind.KV_CACHE:
            return None
        c = self.agent.connector
        length = admit.check_header(avp.Message(header.kind, header.entries, header.layers),
                                    c.model_id, c.spec)
        return admit.TensorChecks(header.layers, c.spec, length, max_batch=1).tensor

    def deliver(self, session: avp_http.Session, msg: avp.Message,
                info: avp_http.Delivery) -> avp_http.Answer:
        t0 = time.perf_counter()
        text = self.agent.answer(msg)
        peer = session.state.peer.agent_name if session.state is not None else None
        out = {"mode": session.mode.name, "peer": peer, "payload_bytes": info.length,
               "by_reference": info.by_reference, "answer": text,
               "seconds": round(time.perf_counter() - t0, 3)}
        print(f"AVP-AGENT ANSWER {json.dumps(out)}", flush=True)
        return avp_http.Answer.json(out)


def receiver_for_model(model: str, *, name: str | None = None, threads: int = 1,
                       modes: tuple[int, ...] = hs.ALL_MODES, max_new_tokens: int = 24
                       ) -> avp_http.Receiver:
    """What ``avp-serve --model NAME`` serves."""
    torch.set_num_threads(threads)
    return AgentReceiver(Agent(load_connector(model), name or f"serve:{model}", modes=modes,
                               max_new_tokens=max_new_tokens))


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
    ap.add_argument("--port", type=int, default=0, help="serve: 0 lets the OS pick (printed)")
    ap.add_argument("--url", help="send: the responder's base URL (default: --host/--port)")
    ap.add_argument("--http1", action="store_true", help="send: HTTP/1.1 instead of HTTP/2")
    ap.add_argument("--modes", default="kv,projection,text")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    ap.add_argument("--prompt", default="What is 2 + 3?")
    ap.add_argument("--target", action="append", default=[],
                    help="send: a local copy of a peer model to project onto (repeatable)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--instruction", default=Agent.instruction,
                    help="serve: what the agent asks its model after an imported KV-cache")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 keeps two agents on a 2-core machine from thrashing)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    agent = Agent(load_connector(args.model), args.name or f"{args.command}:{args.model}",
                  modes=_modes(args.modes), max_new_tokens=args.max_new_tokens,
                  steps=args.steps, targets=[load_connector(t) for t in args.target],
                  instruction=args.instruction)
    if args.command == "serve":
        cfg = avp_http.ServerConfig(
            limits=avp.Limits(max_message_bytes=MAX_MESSAGE, max_tensor_bytes=1 << 30,
                              max_buffer_bytes=1 << 30),
            answer_timeout=args.timeout)
        app = avp_http.AvpApp(AgentReceiver(agent), cfg)
        avp_http.serve(app, args.host, args.port, ready=lambda port: print(
            f"AVP-AGENT LISTENING {port}", flush=True))
        for line in agent.log:
            print(f"AVP-AGENT {line}", file=sys.stderr, flush=True)
        return 0
    url = args.url or f"http://{args.host}:{args.port}/avp/v1"
    with avp_http.AvpClient(url, http2=not args.http1, timeout=args.timeout) as client:
        try:
            result = agent.send(client, args.prompt)
        except avp.AvpError as e:
            print(json.dumps({"error": e.code.name, "code": int(e.code), "detail": e.detail}))
            return 2
        except avp_http.HttpProblem as e:
            print(json.dumps({"error": e.slug, "status": e.status, "detail": e.detail}))
            return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
