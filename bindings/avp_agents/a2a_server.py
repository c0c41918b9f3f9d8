"""An A2A agent on the official ``a2a-sdk`` that implements the AVP extension
(spec/avp-a2a.md), or, with ``extension=False``, the same agent without it.

    server = A2AServer(responder, A2AConfig())             # responder: avp_agents.Responder
    with avp_http.BackgroundServer(server.app, root="") as srv:
        server.bind(f"http://127.0.0.1:{srv.port}")        # the card's URL, the binding's base
        ...

    python -m avp_agents.a2a_server --model smollm2 --port 0    # "AVP-A2A LISTENING <port>"

The process serves, on one hypercorn server: the agent card (``/.well-known/agent-card.json``,
the SDK's ``create_agent_card_routes``), the JSON-RPC endpoint (``/``, the SDK's
``create_jsonrpc_routes`` over ``DefaultRequestHandler``) and the HTTP binding at ``/avp/v1``
(where clients may store payloads to reference them, and from which they are read locally).

``AvpExecutor`` is the SDK's ``AgentExecutor``. Per message it decides, in this order: a use of
an AVP extension URI it does not implement (R-A2A1.3), a required extension not activated, a
message that does not use the extension (answered from its text, R-A2A3.2), then the AVP part:
read by value or by reference (``PayloadReader``), a HELLO opens or renegotiates the context's
session (R-A2A3.4, R-A2A3.5), an ERROR is recorded, a payload is checked against the session
(R-A2A3.8) and handed with the text to the ``Responder``. Refusals are ``AgentProblem``s,
raised as the SDK's A2A errors with ErrorInfo metadata (R-A2A7.1). The model runs on one worker
thread; payload reading on others; the event loop never blocks on either.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import avp_http
from a2a.helpers.proto_helpers import new_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentSkill,
    ContentTypeNotSupportedError,
    ExtensionSupportRequiredError,
    InvalidParamsError,
    Message,
    Part,
    Role,
    UnsupportedOperationError,
)
from a2a.utils.errors import A2AError
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.routing import Mount

import avp_codec as avp

from . import _cli
from ._ext import A2A_URI, MEDIA_TYPE, AgentProblem, AvpParams, is_avp_media_type, is_avp_uri
from ._host import BINDING_ROOT, Hosted, request_limit
from .payload import Bound, FetchPolicy, PayloadReader, Received
from .responder import Responder

log = logging.getLogger("avp_agents.a2a")


@dataclass
class A2AConfig:
    name: str = "avp-agent"
    description: str = "An AVP agent: hand it a KV-cache or a hidden state beside the text"
    extension: bool = True  # False: the same agent, without the extension (the text fallback)
    required: bool = False  # the card marks the extension required (R-A2A2.1)
    limits: avp.Limits = avp_http.SERVER_LIMITS
    max_inline_bytes: int = 1 << 20
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    keys: dict[bytes, bytes] = field(default_factory=dict)
    require_auth: bool = False
    max_sessions: int = 1024
    session_idle: float = 600.0
    store: avp_http.MessageStore | None = None


class Sessions:
    """R-A2A3.7: contextId -> (negotiated, principal), bounded in count and idle time."""

    def __init__(self, max_sessions: int, idle: float) -> None:
        self.max_sessions, self.idle = max_sessions, idle
        self._items: OrderedDict[str, tuple[avp_http.Negotiated, str, float]] = OrderedDict()

    def put(self, context_id: str, negotiated: avp_http.Negotiated, principal: str) -> None:
        self._items[context_id] = (negotiated, principal, time.monotonic())
        self._items.move_to_end(context_id)
        while len(self._items) > self.max_sessions:
            self._items.popitem(last=False)

    def get(self, context_id: str, principal: str) -> avp_http.Negotiated | None:
        now = time.monotonic()
        for key in [k for k, (_, _, t) in self._items.items() if now - t > self.idle]:
            del self._items[key]
        item = self._items.get(context_id)
        if item is None or item[1] != principal:  # another principal's session is unknown
            return None
        self._items[context_id] = (item[0], principal, now)
        self._items.move_to_end(context_id)
        return item[0]

    def drop(self, context_id: str) -> None:
        self._items.pop(context_id, None)

    def __len__(self) -> int:
        return len(self._items)


def to_a2a_error(p: AgentProblem) -> A2AError:
    """R-A2A7.1: the A2A error type of a problem, its metadata as ErrorInfo strings."""
    cls = ContentTypeNotSupportedError if p.problem == "unsupported-extension-version" \
        else InvalidParamsError
    return cls(str(p), data=p.as_strings())


class AvpExecutor(AgentExecutor):
    def __init__(self, responder: Responder, reader: PayloadReader, params: AvpParams | None,
                 *, required: bool = False, sessions: Sessions | None = None) -> None:
        self.responder = responder
        self.reader = reader
        self.params = params  # None: this agent does not implement the extension
        self.required = required
        self.sessions = sessions or Sessions(1024, 600.0)
        self._model = ThreadPoolExecutor(1, thread_name_prefix="avp-a2a-model")
        self.stats = {"answered": 0, "refused": 0, "handshakes": 0}

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        try:
            reply = await self._handle(context)
        except AgentProblem as p:
            self.stats["refused"] += 1
            raise to_a2a_error(p) from None
        except avp.AvpError as e:
            self.stats["refused"] += 1
            raise to_a2a_error(AgentProblem.from_avp(e)) from None
        await event_queue.enqueue_event(reply)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise UnsupportedOperationError("an AVP answer cannot be cancelled")

    def close(self) -> None:
        self._model.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._model, fn, *args)

    # -- one message -------------------------------------------------------------------------
    async def _handle(self, ctx: RequestContext) -> Message:
        msg = ctx.message
        if msg is None:
            raise AgentProblem("bad-part", "no message")
        if self.params is None:
            return await self._plain(ctx, msg)
        used = _avp_uris_used(msg)
        if used - {A2A_URI}:  # R-A2A1.3: never read another version as ours
            raise AgentProblem("unsupported-extension-version",
                               f"this agent implements {A2A_URI} only", supported=[A2A_URI])
        requested = A2A_URI in ctx.requested_extensions
        if self.required and not requested:
            raise ExtensionSupportRequiredError(f"activate {A2A_URI} (A2A-Extensions)")
        if A2A_URI not in msg.extensions:  # R-A2A3.2: not read under the extension
            return await self._plain(ctx, msg)
        avp_parts = [(i, p) for i, p in enumerate(msg.parts) if is_avp_media_type(p.media_type)]
        texts = [p.text for p in msg.parts if p.WhichOneof("content") == "text"]
        if not avp_parts:  # a TEXT session's payload (R-A2A3.9): the text is the payload
            return await self._answer(ctx, "\n".join(texts), None, None, requested)
        if len(avp_parts) > 1:
            raise AgentProblem("bad-part", "a message carries at most one AVP part",
                               part=avp_parts[1][0])
        index, part = avp_parts[0]
        negotiated = self.sessions.get(ctx.context_id or "", _principal(ctx))

        def bound(header: avp.Message) -> int | None:
            """R-A2A4.9: a payload is checked against the session at its HEADER, before any
            of its tensors is decompressed (kind, then what we offered, then identities)."""
            if header.kind in (avp.Kind.HELLO, avp.Kind.ERROR):
                return None  # handshake messages carry no tensors
            if negotiated is None:
                raise AgentProblem("session-unknown", "no session in this context: send a "
                                   "HELLO first", part=index)
            avp.check_payload(header, negotiated.mode, negotiated.offered)
            return self.responder.bound_payload(header, negotiated.mode)

        got = await self._read(index, part, bound)
        kind = got.message.kind
        if kind == avp.Kind.HELLO:
            if len(msg.parts) != 1:
                raise AgentProblem("bad-part", "a handshake message carries the HELLO only")
            return await self._handshake(ctx, got.message)
        if kind == avp.Kind.ERROR:  # R-A2A3.6: recorded; the client sends no payload
            code = got.message.get(avp.MetaKey.ERROR_CODE)
            code = code if isinstance(code, int) else None
            log.info("context %s: the client refused our ACCEPT (%s)", ctx.context_id, code)
            self.sessions.drop(ctx.context_id or "")
            return self._message(ctx, [Part(text=f"recorded the client's ERROR {code}")])
        if negotiated is None:  # pragma: no cover - bound() refused it at its HEADER
            raise AgentProblem("session-unknown", "no session in this context: send a HELLO "
                               "first", part=index)
        if not texts:
            raise AgentProblem("bad-part", "a payload message needs a text part (R-A2A5.1)")
        try:  # R-A2A3.8: kind, then what we offered, then our identity
            self.responder.check(got.message, negotiated.mode, negotiated.offered, got.size)
        except avp.AvpError as e:
            raise AgentProblem.from_avp(e, part=index) from e
        return await self._answer(ctx, "\n".join(texts), got, negotiated.mode, requested)

    async def _read(self, index: int, part: Part, bound: Bound) -> Received:
        meta = _part_meta(part, index)
        content = part.WhichOneof("content")
        if content == "raw":
            return await asyncio.to_thread(self.reader.inline, part.raw, size=meta.get("size"),
                                           digest=meta.get("digest"), part=index, bound=bound)
        if content == "url":
            return await asyncio.to_thread(self.reader.reference, part.url, meta.get("size"),
                                           meta.get("digest"), part=index, bound=bound)
        raise AgentProblem("bad-part", "an AVP part carries raw or url", part=index)

    async def _handshake(self, ctx: RequestContext, hello: avp.Message) -> Message:
        assert self.params is not None
        context_id = ctx.context_id or ""
        try:
            negotiated: avp_http.Negotiated = await self._run(
                self.responder.negotiate, hello, self.params.max_message_bytes)
        except avp.AvpError as e:
            self.sessions.drop(context_id)  # a refused renegotiation ends the session
            raise AgentProblem.from_avp(e, part=0) from e
        self.sessions.put(context_id, negotiated, _principal(ctx))
        self.stats["handshakes"] += 1
        accept = avp.encode(negotiated.accept)
        reply = self._message(ctx, [Part(raw=accept, media_type=MEDIA_TYPE,
                                         filename="accept.avp")])
        reply.extensions.append(A2A_URI)
        reply.metadata.update({A2A_URI: {"mode": negotiated.mode.name}})
        return reply

    async def _plain(self, ctx: RequestContext, msg: Message) -> Message:
        text = ctx.get_user_input()
        return await self._answer(ctx, text, None, None, False)

    async def _answer(self, ctx: RequestContext, text: str, got: Received | None,
                      mode: avp.Mode | None, requested: bool) -> Message:
        payload = got.message if got is not None else None
        answer: str = await self._run(self.responder.respond, text, payload, mode)
        self.stats["answered"] += 1
        reply = self._message(ctx, [Part(text=answer)])
        if requested:  # R-A2A3.3, R-A2A6.1
            reply.extensions.append(A2A_URI)
            meta: dict[str, Any] = {"mode": (mode or avp.Mode.TEXT).name}
            if got is not None:
                meta |= {"payloadBytes": got.size, "byReference": got.by_reference,
                         "digest": got.digest}
            reply.metadata.update({A2A_URI: meta})
        return reply

    @staticmethod
    def _message(ctx: RequestContext, parts: list[Part]) -> Message:
        return new_message(parts, context_id=ctx.context_id, role=Role.ROLE_AGENT)


def _principal(ctx: RequestContext) -> str:
    user = ctx.call_context.user
    return user.user_name if user.is_authenticated else ""


def _avp_uris_used(msg: Message) -> set[str]:
    """AVP extension URIs a message uses: listed in ``extensions`` or keying metadata."""
    used = {u for u in msg.extensions if is_avp_uri(u)}
    used |= {k for k in msg.metadata if is_avp_uri(k)}
    for p in msg.parts:
        used |= {k for k in p.metadata if is_avp_uri(k)}
    return used


def _part_meta(part: Part, index: int) -> dict[str, Any]:
    """``metadata[URI]`` of an AVP part (4): an object of size (integer), digest, kind."""
    if A2A_URI not in part.metadata:
        return {}
    raw = MessageToDict(part.metadata).get(A2A_URI)
    if not isinstance(raw, dict):
        raise AgentProblem("bad-part", "metadata[URI] is not an object", part=index)
    size = raw.get("size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int | float) or size != int(size):
            raise AgentProblem("bad-part", "size is not an integer", part=index)
        raw["size"] = int(size)
    for key in ("digest", "kind"):
        if key in raw and not isinstance(raw[key], str):
            raise AgentProblem("bad-part", f"{key} is not a string", part=index)
    return raw


def agent_card(responder: Responder, url: str, params: AvpParams | None, *, name: str,
               description: str, required: bool = False) -> AgentCard:
    exts = [] if params is None else [AgentExtension(
        uri=A2A_URI, required=required, params=params.to_json(),
        description="AVP: hand this agent a KV-cache or a projected hidden state beside the "
                    "text, by value or by reference (spec/avp-a2a.md)")]
    inputs = ["text/plain"] + ([MEDIA_TYPE] if params is not None else [])
    return AgentCard(
        name=name, description=description, version="1.0",
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC",
                                             protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=False, push_notifications=False,
                                       extensions=exts),
        default_input_modes=["text/plain"], default_output_modes=["text/plain"],
        skills=[AgentSkill(id="answer", name="Answer",
                           description=f"{responder.name} answers a question; with AVP, after "
                                       "importing the caller's context",
                           tags=["avp", "kv-cache"], input_modes=inputs,
                           output_modes=["text/plain"])])


class A2AServer:
    """The application (``app``, for ``avp_http.serve``) and its parts; ``bind(base)`` fixes
    the public URL (the card's, the binding's) once the port is known."""

    def __init__(self, responder: Responder, config: A2AConfig | None = None) -> None:
        self.config = cfg = config or A2AConfig()
        self.responder = responder
        store = cfg.store if cfg.store is not None else avp_http.MessageStore()
        self.binding = avp_http.AvpApp(avp_http.Mailbox(name=f"{cfg.name}-store"),
                                       avp_http.ServerConfig(limits=cfg.limits, root="",
                                                             store=store))
        self.params: AvpParams | None = None
        if cfg.extension:
            self.params = AvpParams(
                max_message_bytes=cfg.limits.max_message_bytes,
                max_inline_bytes=cfg.max_inline_bytes,
                modes=tuple(avp.Mode(m) for m in sorted(set(responder.modes) | {3})),
                model_id=responder.model_id, tokenizer_id=responder.tokenizer_id,
                model_name=responder.model_name, fetches_references=cfg.policy.fetch_others)
        self.reader = PayloadReader(cfg.limits, cfg.max_inline_bytes, cfg.policy, store=store,
                                    keys=cfg.keys, require_auth=cfg.require_auth)
        self.executor = AvpExecutor(responder, self.reader, self.params, required=cfg.required,
                                    sessions=Sessions(cfg.max_sessions, cfg.session_idle))
        self.card = agent_card(responder, "http://127.0.0.1/", self.params, name=cfg.name,
                               description=cfg.description, required=cfg.required)
        handler = DefaultRequestHandler(agent_executor=self.executor,
                                        task_store=InMemoryTaskStore(), agent_card=self.card)
        routes = [*create_agent_card_routes(self.card), *create_jsonrpc_routes(handler, "/"),
                  Mount(BINDING_ROOT, app=self.binding)]  # type: ignore[arg-type]
        self.app = Hosted(Starlette(routes=routes), self.binding,
                          request_limit(cfg.max_inline_bytes), on_close=self.executor.close)

    def bind(self, base_url: str) -> None:
        """Patch the card in place (the SDK's routes serve this object) before serving."""
        base = base_url.rstrip("/")
        self.card.supported_interfaces[0].url = base + "/"
        binding = base + BINDING_ROOT
        self.reader.own_base = binding
        if self.params is not None:
            self.params = replace(self.params, http_binding=binding)
            self.executor.params = self.params
            ext = self.card.capabilities.extensions[0]
            ext.params.Clear()
            ext.params.update(self.params.to_json())



def main(argv: list[str] | None = None) -> int:
    ap = _cli.parser("python -m avp_agents.a2a_server", __doc__)
    ap.add_argument("--plain", action="store_true", help="serve without the AVP extension")
    ap.add_argument("--required", action="store_true", help="mark the extension required")
    args = ap.parse_args(argv)
    _quiet_sdk_refusals()
    server = A2AServer(_cli.responder(args), A2AConfig(
        name=args.name or f"avp-{args.model}", extension=not args.plain, required=args.required,
        max_inline_bytes=args.max_inline, policy=_cli.fetch_policy(args)))
    return _cli.serve(server, args, "AVP-A2A LISTENING")


class _DropA2AErrors(logging.Filter):
    """The SDK logs every error an executor raises with its traceback; a refusal of ours is
    an answer, not a fault, so keep one line for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, A2AError):
            record.exc_info = None
            record.msg, record.args = f"refused: {exc}", ()
        return True


def _quiet_sdk_refusals() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for h in logging.getLogger().handlers:
        h.addFilter(_DropA2AErrors())


if __name__ == "__main__":
    sys.exit(main())
