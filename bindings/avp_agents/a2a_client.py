"""The client side of the AVP extension for A2A (spec/avp-a2a.md), on the official ``a2a-sdk``.

    async with A2AClient("http://127.0.0.1:9999") as client:
        handoff = await client.ask("What is 2 + 3?", initiator)      # or client.ask(text)
        handoff.answer, handoff.mode, handoff.fallback, handoff.by_reference

``ask`` does the whole exchange: it reads the agent card (the SDK's ``A2ACardResolver``) and the
extension's declaration (strictly, R-A2A2.2); without one it sends the text alone (the text
fallback, R-A2A5.2). With one it runs the handshake in a new context (R-A2A3.4: a HELLO part,
the ACCEPT back, verified by the initiator, R-A2A3.6), asks the initiator for the payload of the
resolved mode and sends it beside the text: by value under the inline threshold, else by
reference (R-A2A4.8), stored on the agent's own binding when its card offers one
(``POST messages``) or on the client's ``PayloadHost``. Every request activates the extension
with the SDK's ``with_a2a_extensions`` (``A2A-Extensions``) and lists the URI in
``Message.extensions`` (R-A2A3.1). A refusal raises ``AgentProblem`` (problem, AVP code) rebuilt
from the A2A error's ErrorInfo metadata.

An ``Initiator`` is the AVP side of the client: ``hello()``, ``accept(msg) -> mode`` (R-14.2)
and ``payload(mode, text)`` (the AVP message to hand over, or None for text only).
``CodecInitiator`` is the model-less one (the codec's ``check_accept``); the runtime's agent is
``avp_agents.runtime.RuntimeInitiator``.

    python -m avp_agents.a2a_client --url http://127.0.0.1:P --model smollm2 --prompt "..."

prints one line ``AVP-A2A HANDOFF {json}`` (the ``Handoff``), or ``AVP-A2A PROBLEM {json}`` and
exit status 2 for a refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import avp_http
import httpx
from a2a.client import A2ACardResolver, ClientCallContext, ClientConfig, create_client
from a2a.client.client import Client
from a2a.client.errors import A2AClientError
from a2a.client.service_parameters import ServiceParametersFactory, with_a2a_extensions
from a2a.extensions.common import find_extension_by_uri
from a2a.types import AgentCard, Message, Part, Role, SendMessageRequest, StreamResponse
from a2a.utils.errors import A2AError
from google.protobuf.json_format import MessageToDict

import avp_codec as avp

from ._ext import A2A_URI, MEDIA_TYPE, AgentProblem, AvpParams, is_avp_media_type
from .payload import PayloadHost

INLINE_THRESHOLD = 256 << 10  # R-A2A4.8 (benchmarks/results/agents_bench.md)
_PAYLOAD_KIND = {avp.Mode.KV_CACHE: "KV_CACHE", avp.Mode.PROJECTION: "HIDDEN_STATE"}


class Initiator(Protocol):
    def hello(self) -> avp.Message: ...

    def accept(self, msg: avp.Message) -> avp.Mode: ...

    def payload(self, mode: avp.Mode, text: str) -> bytes | None: ...


@dataclass
class CodecInitiator:
    """An initiator without a model: a fixed HELLO (fresh nonce per handshake) and a payload
    function; the ACCEPT is checked with the codec's ``check_accept`` (R-14.2)."""

    make_hello: Callable[[], avp.Message]
    make_payload: Callable[[avp.Mode, str], bytes | None]
    sent: avp.Message | None = None

    def hello(self) -> avp.Message:
        self.sent = self.make_hello()
        return self.sent

    def accept(self, msg: avp.Message) -> avp.Mode:
        assert self.sent is not None
        return avp.check_accept(self.sent, msg)

    def payload(self, mode: avp.Mode, text: str) -> bytes | None:
        return self.make_payload(mode, text)


@dataclass
class Handoff:
    """What one ``ask`` did and got."""

    answer: str
    mode: str  # the session's mode, or "TEXT" for the fallback
    fallback: bool  # the agent does not declare the extension: text only (R-A2A5.2)
    by_reference: bool = False
    payload_bytes: int = 0
    seconds: float = 0.0  # the payload message's round trip (after the handshake)
    context_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)  # the answer's metadata[URI]


class A2AClient:
    def __init__(self, agent_url: str, *, inline_threshold: int = INLINE_THRESHOLD,
                 host: PayloadHost | None = None, reference: str = "auto",
                 timeout: float = 300.0, limits: avp.Limits | None = None) -> None:
        if reference not in ("auto", "push", "host"):
            raise ValueError("reference is 'auto', 'push' or 'host'")
        self.agent_url = agent_url.rstrip("/")
        self.inline_threshold = inline_threshold
        self.host = host
        self.reference = reference
        self.timeout = timeout
        self.limits = limits or avp.Limits(max_message_bytes=16 << 20)  # ACCEPTs are small
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout), trust_env=False)
        self._client: Client | None = None
        self.card: AgentCard | None = None
        self.params: AvpParams | None = None
        self.card_problem: avp.AvpError | None = None  # why a declaration was not used
        self._call = ClientCallContext(service_parameters=ServiceParametersFactory.create(
            [with_a2a_extensions([A2A_URI])]), timeout=timeout)

    async def __aenter__(self) -> A2AClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        await self._http.aclose()

    # -- discovery ------------------------------------------------------------------------
    async def discover(self) -> AvpParams | None:
        """The card, and the extension's params when the agent declares a valid v1 (else
        None, with ``card_problem`` set when a declaration was there but malformed)."""
        if self.card is None:
            self.card = await A2ACardResolver(self._http, self.agent_url).get_agent_card()
            self._client = await create_client(self.card, ClientConfig(
                streaming=False, httpx_client=self._http))
            ext = find_extension_by_uri(self.card, A2A_URI)
            if ext is not None:
                try:
                    self.params = AvpParams.from_json(MessageToDict(ext.params))
                except avp.AvpError as e:  # R-A2A2.2: as if not declared
                    self.card_problem = e
        return self.params

    # -- the exchange -----------------------------------------------------------------------
    async def ask(self, text: str, initiator: Initiator | None = None) -> Handoff:
        params = await self.discover()
        if params is None or initiator is None:
            return await self.send_text(text)
        mode, context_id = await self.handshake(initiator)
        payload = initiator.payload(mode, text) if mode != avp.Mode.TEXT else None
        if payload is None:  # R-A2A3.9: a TEXT session sends the text alone
            return await self.send_text(text, context_id=context_id, mode=mode)
        return await self.send(text, payload, context_id=context_id, mode=mode)

    async def handshake(self, initiator: Initiator, context_id: str | None = None
                        ) -> tuple[avp.Mode, str]:
        """R-A2A3.4-3.6: HELLO out, ACCEPT back and verified; (mode, contextId)."""
        hello = avp.encode(initiator.hello())
        msg = self.message([_avp_part(hello, "hello.avp")], context_id, avp_parts=True)
        reply = await self.send_message(msg)
        parts = [p for p in reply.parts if is_avp_media_type(p.media_type)]
        if len(parts) != 1 or parts[0].WhichOneof("content") != "raw":
            raise avp.AvpError(avp.ErrorCode.KIND_CONSTRAINT, "the handshake answer carries "
                               "no ACCEPT part")
        accept = avp.decode(parts[0].raw, limits=self.limits)
        try:
            mode = initiator.accept(accept)
        except avp.AvpError as e:  # tell the agent, in the context, then give up (R-A2A3.6)
            err = avp.encode(avp.error_message(e.code, e.detail))
            await self.send_message(self.message([_avp_part(err, "error.avp")], reply.context_id,
                                           avp_parts=True))
            raise
        return mode, reply.context_id

    async def send(self, text: str, payload: bytes, *, context_id: str,
                   mode: avp.Mode = avp.Mode.KV_CACHE) -> Handoff:
        """A payload message: the text and one AVP part (R-A2A3.8)."""
        params = self.params
        assert params is not None, "discover() first"
        if len(payload) > params.max_message_bytes:
            raise avp.AvpError(avp.ErrorCode.LIMIT_MESSAGE, f"{len(payload)} bytes > the "
                               f"agent's {params.max_message_bytes}")
        t0 = time.perf_counter()
        kind = _PAYLOAD_KIND.get(mode)  # informative; the message's HEADER is authoritative
        by_reference = len(payload) > min(self.inline_threshold, params.max_inline_bytes)
        digest = avp_http.message_digest(payload)
        meta: dict[str, Any] = {"size": len(payload), "digest": digest}
        if kind is not None:
            meta["kind"] = kind
        if by_reference:
            url = await self._host(payload, digest)
            part = Part(url=url, media_type=MEDIA_TYPE, filename=f"{digest}.avp")
        else:
            part = _avp_part(payload, f"{digest}.avp")
        part.metadata.update({A2A_URI: meta})
        reply = await self.send_message(self.message([Part(text=text), part], context_id,
                                               avp_parts=True))
        return self._handoff(reply, mode.name, False, by_reference, len(payload),
                             time.perf_counter() - t0)

    async def send_text(self, text: str, *, context_id: str | None = None,
                        mode: avp.Mode | None = None) -> Handoff:
        """Text only: the fallback (no declaration), or a TEXT session."""
        t0 = time.perf_counter()
        reply = await self.send_message(self.message([Part(text=text)], context_id,
                                                     avp_parts=False))
        return self._handoff(reply, (mode or avp.Mode.TEXT).name, mode is None, False, 0,
                             time.perf_counter() - t0)

    # -- internals --------------------------------------------------------------------------
    async def _host(self, payload: bytes, digest: str) -> str:
        params = self.params
        assert params is not None
        push = params.http_binding is not None and self.reference in ("auto", "push")
        if push:
            assert params.http_binding is not None
            base = params.http_binding

            def store() -> str:
                with avp_http.AvpClient(base, http2=False, timeout=self.timeout) as c:
                    return c.store(payload)

            stored = await asyncio.to_thread(store)
            return f"{base}/messages/{stored}"
        if self.host is None:
            raise ValueError("the payload is over the inline threshold and there is nowhere "
                             "to host it: the agent offers no binding and no PayloadHost")
        host = self.host
        return await asyncio.to_thread(host.put, payload)

    def message(self, parts: list[Part], context_id: str | None, *, avp_parts: bool) -> Message:
        msg = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=parts)
        if context_id:
            msg.context_id = context_id
        if avp_parts:
            msg.extensions.append(A2A_URI)
        return msg

    async def send_message(self, msg: Message) -> Message:
        """One ``SendMessage`` with the extension activated; the answer as a Message, a
        refusal as ``AgentProblem``."""
        assert self._client is not None, "discover() first"
        try:
            async for ev in self._client.send_message(SendMessageRequest(message=msg),
                                                      context=self._call):
                return _reply_message(ev)
        except A2AClientError as e:  # a transport failure (an A2AError too: caught first)
            problem = _problem_of_status(e)
            if problem is not None:
                raise problem from e
            raise
        except A2AError as e:
            problem = AgentProblem.from_json(e.data or {}, e.message)
            if problem is not None:
                raise problem from e
            raise
        raise AgentProblem("bad-part", "the agent sent no answer")

    def _handoff(self, reply: Message, mode: str, fallback: bool, by_reference: bool,
                 size: int, seconds: float) -> Handoff:
        meta = MessageToDict(reply.metadata).get(A2A_URI, {}) if A2A_URI in reply.metadata \
            else {}
        answer = "\n".join(p.text for p in reply.parts if p.WhichOneof("content") == "text")
        return Handoff(answer, mode, fallback, by_reference, size, seconds, reply.context_id,
                       meta if isinstance(meta, dict) else {})


def _avp_part(data: bytes, filename: str) -> Part:
    return Part(raw=data, media_type=MEDIA_TYPE, filename=filename)


def _reply_message(ev: StreamResponse) -> Message:
    """The answer as a Message: the agent's Message, or a Task's status message and
    artifacts' parts (an agent may answer with a Task, R-A2A6.1)."""
    if ev.HasField("message"):
        return ev.message
    task = ev.task
    out = Message(role=Role.ROLE_AGENT, context_id=task.context_id)
    if task.status.HasField("message"):
        out.parts.extend(task.status.message.parts)
        out.metadata.update(MessageToDict(task.status.message.metadata))
    for art in task.artifacts:
        out.parts.extend(art.parts)
        out.metadata.update(MessageToDict(art.metadata))
    return out


def _problem_of_status(e: A2AClientError) -> AgentProblem | None:
    """A 413 before the body (R-A2A4.3) reaches the SDK's transport as an HTTP error; its
    JSON-RPC error object carries the problem."""
    cause = e.__cause__
    if not isinstance(cause, httpx.HTTPStatusError) or cause.response.status_code != 413:
        return None
    try:
        data = cause.response.json()["error"]["data"]
    except (ValueError, KeyError, TypeError):
        data = {"problem": "request-too-large"}
    return AgentProblem.from_json(data if isinstance(data, dict) else {}, str(e))


def initiator_for(model: str, *, tokens: int = 16, steps: int = 4,
                  threads: int = 1) -> Initiator | None:
    """'none': no initiator (text only); 'echo': a model-less initiator whose KV_CACHE of
    ``tokens`` positions is for the echo agent's made-up model; else the runtime's agent."""
    if model == "none":
        return None
    if model == "echo":
        from .responder import echo_kv

        fake = hashlib.sha256(b"avp-agents echo model").digest()
        return CodecInitiator(
            lambda: avp.hello_message("avp-echo-client", model_id=fake),
            lambda mode, text: avp.encode(echo_kv(fake, tokens, seed=text.encode())))
    from .runtime import RuntimeInitiator

    return RuntimeInitiator.load(model, steps=steps, threads=threads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avp_agents.a2a_client", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the agent's base URL (its card is under it)")
    ap.add_argument("--model", default="none", help="'none' (text), 'echo' or a runtime model")
    ap.add_argument("--prompt", default="What is 2 + 3? Answer in one short sentence.")
    ap.add_argument("--tokens", type=int, default=16, help="echo: KV positions to send")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--inline-threshold", type=int, default=INLINE_THRESHOLD)
    ap.add_argument("--host-payloads", action="store_true",
                    help="host by-reference payloads on a binding server of this process "
                         "instead of the agent's")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    initiator = initiator_for(args.model, tokens=args.tokens, steps=args.steps,
                              threads=args.threads)

    async def run(host: PayloadHost | None) -> Handoff:
        async with A2AClient(args.url, inline_threshold=args.inline_threshold, host=host,
                             reference="host" if host else "auto", timeout=args.timeout) as c:
            return await c.ask(args.prompt, initiator)

    try:
        if args.host_payloads:
            with PayloadHost() as host:
                out = asyncio.run(run(host))
        else:
            out = asyncio.run(run(None))
    except AgentProblem as p:
        print(f"AVP-A2A PROBLEM {json.dumps(p.as_json())}", flush=True)
        return 2
    print(f"AVP-A2A HANDOFF {json.dumps(dataclasses.asdict(out))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
