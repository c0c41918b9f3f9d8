"""The AVP-over-HTTP server: an ASGI application (spec/avp-http.md).

    app = AvpApp(Mailbox(), ServerConfig(tokens=["s3cret"]))
    avp_http.serve(app, host="127.0.0.1", port=8080)       # hypercorn: HTTP/1.1, h2c, h2+TLS

Every request passes the checks of R-H6.3 in order; the first that fails answers with a problem
(section 5). Bodies stream into the sans-IO decoder (``_intake``); a refusal found at the HEADER
or at a tensor is answered at once and the rest of the body is not read (R-H4.2). Waits are
bounded (R-H5.5) and so is the number of bodies decoded at once (R-H5.6); memory per body is the
decoder's limits plus the tensors a receiver keeps (R-H4.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import avp_codec as avp

from . import _media as media
from ._asgi import NO_TRANSFORM, Headers, Request, Responder, Scope, Send
from ._intake import BodyReader, ClientGone, Intake, Received, Timing, run_intake
from ._problem import HttpProblem, problem_from_error
from ._session import Session, SessionTable, remember
from .receiver import Answer, Delivery, Receiver
from .store import MessageStore

Receive = Callable[[], Awaitable[dict[str, Any]]]

# A server's own defaults are tighter than the codec's (which suit files): a peer cannot make it
# buffer or inflate more than a quarter GiB for one tensor, or accept more than 2 GiB at once.
DRAIN_TIMEOUT = 5.0  # longest the rest of a refused body is discarded after the answer
REPLAY_MAX = 8 << 20  # largest answer kept for an Idempotency-Key retry (R-H7.1)
SERVER_LIMITS = avp.Limits(max_message_bytes=1 << 31, max_tensor_bytes=256 << 20,
                           max_buffer_bytes=256 << 20)


@dataclass
class ServerConfig:
    limits: avp.Limits = SERVER_LIMITS
    tokens: Sequence[str] = ()  # accepted bearer credentials; empty: none required (6)
    keys: dict[bytes, bytes] = field(default_factory=dict)  # HMAC key id -> key (spec 15)
    require_auth: bool = False  # refuse messages without a verified tag (R-H6.2)
    timing: Timing = field(default_factory=Timing)
    max_decoded_bytes: int = 1 << 32  # decoded tensors one delivery may keep (R-H5.7)
    max_concurrent: int = 16  # bodies decoded at once (R-H5.6)
    queue_timeout: float = 10.0  # wait for a slot before 503
    answer_timeout: float = 300.0  # longest a receiver's deliver() may take
    max_sessions: int = 4096
    session_idle: float = 600.0
    decode_threads: int = 4
    root: str = "/avp/v1"
    store: MessageStore | None = None  # a private temporary store when None


class AvpApp:
    """The ASGI application. One instance serves one receiver."""

    def __init__(self, receiver: Receiver, config: ServerConfig | None = None) -> None:
        self.receiver = receiver
        self.config = cfg = config or ServerConfig()
        self.store = cfg.store if cfg.store is not None else MessageStore()
        self.sessions = SessionTable(max_sessions=cfg.max_sessions,
                                     idle_seconds=cfg.session_idle)
        self._tokens = [t.encode() for t in cfg.tokens]
        self._pool = ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix="avp-decode")
        self._answer_pool = ThreadPoolExecutor(max(1, receiver.concurrent_deliveries),
                                               thread_name_prefix="avp-answer")
        self._slots: asyncio.Semaphore | None = None
        self.stats = {"requests": 0, "refused": 0, "delivered": 0, "stored": 0}

    # -- ASGI entry ---------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        req = Request(scope)
        out = Responder(send, req.http_version)
        self.stats["requests"] += 1
        refusal: Coroutine[Any, Any, None] | None = None
        try:
            await self._route(req, receive, out)
        except ClientGone:
            return
        except avp.AvpError as e:
            refusal = self._refuse(out, *problem_from_error(e, limits=self.config.limits,
                                                            versions=media.VERSIONS),
                                   close=not req.body_read)
        except HttpProblem as p:
            refusal = self._refuse(out, p.status, p.body(), p.headers, close=not req.body_read)
        except Exception as e:  # a receiver's bug must not take the server down
            refusal = self._refuse(out, 500, HttpProblem("internal", type(e).__name__).body())
        if refusal is not None:
            await self._refuse_early(receive, req, refusal)

    async def _refuse_early(self, receive: Receive, req: Request,
                            refusal: Coroutine[Any, Any, None]) -> None:
        """Answer a refusal while the rest of the request body is read and discarded.

        hypercorn hands body pieces to the app through a queue of 10; the piece that finds it
        full stops the connection's reader until the app takes one. An app that has stopped
        reading (it refuses at the HEADER, R-H4.2) and is sending its answer then deadlocks
        with it: the answer's end closes the stream, which queues ``http.disconnect`` behind
        the full queue, in the app's own task. Over HTTP/2 that also stalls every other stream
        of the connection. So the queue is kept moving until the stream ends (HTTP/2: right
        after the answer; HTTP/1.1: when the connection, answered with ``Connection:
        close``, is closed), bounded in time."""
        if req.body_read:
            await refusal
            return
        drain = asyncio.create_task(_discard(receive))
        try:
            await refusal
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(drain), DRAIN_TIMEOUT)
        finally:
            drain.cancel()

    async def _refuse(self, out: Responder, status: int, body: dict[str, Any],
                      headers: Headers | None = None, close: bool = False) -> None:
        self.stats["refused"] += 1
        if not out.started:
            with contextlib.suppress(Exception):  # the peer may be gone
                await out.problem(status, body, headers, close=close)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            ev = await receive()
            if ev["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif ev["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._answer_pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- routing (R-H6.3 order) -----------------------------------------------------------
    async def _route(self, req: Request, receive: Receive, out: Responder) -> None:
        credential = self._authenticate(req)
        root = self.config.root.rstrip("/")
        if req.path != root and not req.path.startswith(root + "/"):
            raise HttpProblem("not-found", "no such resource")
        parts = [p for p in req.path[len(root):].split("/") if p]
        head = req.method == "HEAD"
        if not parts:
            self._allow(req, ("GET", "HEAD"))
            await out.whole(200, self._describe(), [("content-type", "application/json")],
                            head=head)
        elif parts == ["handshake"]:
            self._allow(req, ("POST",))
            await self._handshake(req, receive, out, credential)
        elif parts == ["deliver"]:
            self._allow(req, ("POST",))
            await self._deliver(req, receive, out, credential)
        elif parts == ["messages"]:
            self._allow(req, ("POST",))
            await self._store(req, receive, out)
        elif len(parts) == 2 and parts[0] == "messages":
            self._allow(req, ("GET", "HEAD"))
            _hex(parts[1], "digest")
            entry = self.store.get(parts[1])
            if entry is None:
                raise HttpProblem("not-found", "no stored message has this digest")
            await self._send_stored(req, out, entry.digest, [])
        elif len(parts) == 3 and parts[0] == "prefixes":
            self._allow(req, ("GET", "HEAD"))
            _hex(parts[1], "model_id")
            _hex(parts[2], "prefix digest")
            entry = self.store.lookup(parts[1], parts[2])
            if entry is None or entry.prefix is None:
                raise HttpProblem("not-found", "no stored KV_CACHE for this model and prefix")
            await self._send_stored(req, out, entry.digest, [
                ("content-location", f"{req.root_path}{root}/messages/{entry.digest}"),
                ("avp-context-length", str(entry.prefix[2]))])
        else:
            raise HttpProblem("not-found", "no such resource")

    def _authenticate(self, req: Request) -> str | None:
        """R-H6.1: the bearer credential, compared in constant time with every accepted one.
        Returns an identity for session binding (a hash, never the token itself)."""
        if not self._tokens:
            return None
        auth = req.header("authorization") or ""
        scheme, _, token = auth.partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        ok = False
        for t in self._tokens:  # no early exit: timing does not say which token matched
            ok |= hmac.compare_digest(given, t)
        if not ok:
            challenge = 'Bearer realm="avp"' + (', error="invalid_token"' if auth else "")
            raise HttpProblem("unauthorized", "a valid bearer credential is required",
                              headers=[("www-authenticate", challenge)])
        return hashlib.sha256(given).hexdigest()

    @staticmethod
    def _allow(req: Request, methods: tuple[str, ...]) -> None:
        if req.method not in methods:
            raise HttpProblem("method-not-allowed", f"{req.method} is not allowed here",
                              headers=[("allow", ", ".join(methods))])

    def _describe(self) -> bytes:
        lim = self.config.limits
        return json.dumps({
            "versions": media.VERSIONS, "media_type": media.MEDIA_TYPE,
            "limits": {k: getattr(lim, k) for k in lim.__dataclass_fields__},
            "max_decoded_bytes": self.config.max_decoded_bytes,
            "auth": {"bearer": bool(self._tokens), "hmac_required": self.config.require_auth},
            "receiver": self.receiver.name,
        }, separators=(",", ":")).encode()

    # -- request checks before the body (R-H1.2, R-H1.3, R-H3.2, R-H5.3) ------------------
    def _check_body_headers(self, req: Request, answers_avp: bool) -> None:
        mt, params = media.parse_media_type(req.header("content-type"))
        if mt != media.MEDIA_TYPE:
            raise HttpProblem("unsupported-media-type", "the body must be application/avp",
                              headers=[("accept-post", media.MEDIA_TYPE)])
        if not media.version_supported(params):
            raise HttpProblem("unsupported-media-type",
                              f"format version {params.get('version')} is not implemented",
                              headers=[("accept-post", media.CONTENT_TYPE)],
                              extra={"versions": media.VERSIONS})
        coding = (req.header("content-encoding") or "identity").strip().lower()
        if coding != "identity":
            raise HttpProblem("unsupported-media-type", "AVP bodies carry no content coding",
                              headers=[("accept-encoding", "identity")])
        if answers_avp and not media.accepts(req.header("accept"),
                                             (media.MEDIA_TYPE, "application/problem+json")):
            raise HttpProblem("not-acceptable", "this resource answers application/avp")
        n = req.content_length()
        limit = self.config.limits.max_message_bytes
        if n is not None and n > limit:
            raise avp.AvpError(avp.ErrorCode.LIMIT_MESSAGE,
                               f"Content-Length {n} exceeds max_message_bytes {limit}",
                               offset=limit)

    async def _slot(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_concurrent)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.config.queue_timeout)
        except TimeoutError:
            raise HttpProblem("busy", "too many messages in flight; retry later",
                              headers=[("retry-after", "1")]) from None
        return self._slots

    async def _receive_body(self, receive: Receive, intake: Intake, req: Request) -> Received:
        slots = await self._slot()
        try:
            got = await run_intake(BodyReader(receive, self.config.timing), intake)
        finally:
            slots.release()
        req.body_read = True
        return got

    def _intake(self, **kw: Any) -> Intake:
        c = self.config
        return Intake(c.limits, keys=c.keys, require_auth=c.require_auth,
                      max_decoded_bytes=c.max_decoded_bytes, **kw)

    # -- handshake (2.1) ----------------------------------------------------------------
    async def _handshake(self, req: Request, receive: Receive, out: Responder,
                         credential: str | None) -> None:
        self._check_body_headers(req, answers_avp=True)
        token = req.header("avp-session")
        old = self.sessions.get(token, credential) if token else None
        got = await self._receive_body(receive, self._intake(on_header=_hello_only), req)
        await self._negotiate(got.message(), out, credential, old)

    async def _negotiate(self, hello: avp.Message, out: Responder, credential: str | None,
                         old: Session | None) -> None:
        if hello.kind != avp.Kind.HELLO:
            raise avp.AvpError(avp.ErrorCode.KIND_CONSTRAINT,
                               f"expected HELLO, got {avp.Kind(hello.kind).name}")
        try:
            neg = await self._run(self.receiver.negotiate, hello,
                                  self.config.limits.max_message_bytes)
        except avp.AvpError:
            if old is not None:  # a refused renegotiation ends the session (14.2 FAILED)
                self.sessions.close(old.token)
            raise
        if old is not None:  # R-H2.4: same token, new mode
            old.negotiated, old.hello = neg, hello
            old.done.clear()
            session = old
        else:
            session = self.sessions.open(credential, neg, hello)
        await out.message(neg.accept, [("avp-session", session.token)])

    # -- delivery (2.2) -----------------------------------------------------------------
    async def _deliver(self, req: Request, receive: Receive, out: Responder,
                       credential: str | None) -> None:
        ref = req.header("avp-message-digest")
        if ref is None:
            self._check_body_headers(req, answers_avp=False)
        elif req.content_length() or req.header("transfer-encoding"):
            raise HttpProblem("bad-request", "a delivery by reference has an empty body")
        session = self.sessions.get(req.header("avp-session"), credential)
        if session is None:
            raise HttpProblem("session-unknown", "no such session: send a HELLO to handshake")
        key = req.header("idempotency-key")
        if key is not None:
            if not media.is_idempotency_key(key):
                raise HttpProblem("bad-request", "Idempotency-Key must be 1-128 printable "
                                  "ASCII characters")
            if key in session.done:
                done = session.done[key]
                if done is None:
                    raise HttpProblem("idempotency-conflict",
                                      "a delivery with this Idempotency-Key is in progress "
                                      "or its answer was too large to keep")
                await out.whole(done[0], done[2], done[1])
                return
            remember(session, key, None)
        try:
            replay = await self._deliver_body(req, receive, out, session, ref, key is not None)
        except BaseException:
            if key is not None:
                session.done.pop(key, None)  # not completed: a retry may run it
            raise
        if key is not None:
            if replay is None:
                session.done.pop(key, None)  # a renegotiation or an ERROR: nothing acted on
            elif replay[2] is not None:
                remember(session, key, (replay[0], replay[1], replay[2]))
            # else: completed but too large to keep; the key stays "in progress" (409)

    async def _deliver_body(self, req: Request, receive: Receive, out: Responder,
                            session: Session, ref: str | None, keyed: bool
                            ) -> tuple[int, Headers, bytes | None] | None:
        """Receive, check and hand over one delivery. Returns what a retry with the same
        Idempotency-Key gets back (body None: too large to keep), or None when the message was
        not a payload (HELLO, ERROR) and nothing was acted on."""
        recv = self.receiver
        check: list[Callable[[int, avp.Tensor], None] | None] = [None]

        def on_header(h: avp.HeaderEvent) -> None:
            if h.kind in (avp.Kind.HELLO, avp.Kind.ERROR):
                return  # renegotiation and refusals are not payloads (14.2)
            avp.check_payload(avp.Message(h.kind, h.entries), session.mode,
                              session.negotiated.offered)
            recv.check_header(session, h)
            check[0] = recv.tensor_check(session, h)

        def on_descriptor(i: int, t: avp.Tensor) -> None:
            # R-H2.14: what the descriptor decides is refused before the data costs anything.
            avp.check_capabilities(avp.Message(avp.Kind.KV_CACHE, tensors=[t]),
                                   session.negotiated.offered)
            if check[0] is not None:
                check[0](i, t)

        def on_tensor(i: int, t: avp.Tensor) -> None:
            recv.on_tensor(session, i, t)

        digest = None
        if ref is not None:
            got, digest = await self._by_reference(ref, on_header, on_descriptor, on_tensor)
        else:
            writer = self.store.writer() if recv.keep_deliveries else None
            try:
                got = await self._receive_body(receive, self._intake(
                    writer=writer, on_header=on_header, on_descriptor=on_descriptor,
                    on_tensor=on_tensor), req)
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
            if writer is not None:
                if got.header.kind in (avp.Kind.HELLO, avp.Kind.ERROR):
                    writer.abort()
                else:  # stored only now, after the end event (R-H2.8)
                    entry, _ = await self._run(writer.commit, got.prefix())
                    digest = entry.digest
        msg = got.message()
        if msg.kind == avp.Kind.HELLO:
            await self._negotiate(msg, out, session.credential, session)
            return None
        if msg.kind == avp.Kind.ERROR:
            await out.whole(204, b"", [])
            return None
        avp.check_payload(msg, session.mode, session.negotiated.offered, got.length)
        self.stats["delivered"] += 1
        info = Delivery(got.length, digest, ref is not None)
        loop = asyncio.get_running_loop()
        try:
            answer = await asyncio.wait_for(loop.run_in_executor(
                self._answer_pool, recv.deliver, session, msg, info),
                self.config.answer_timeout)
        except TimeoutError:
            raise HttpProblem("busy", "the receiver did not answer in time",
                              headers=[("retry-after", "5")]) from None
        return await self._answer(out, session, answer, keyed)

    async def _answer(self, out: Responder, session: Session, answer: Answer | None,
                      keyed: bool) -> tuple[int, Headers, bytes | None]:
        if answer is None:
            await out.whole(204, b"", [])
            return 204, [], b""
        if isinstance(answer.body, avp.Message):
            try:  # R-H2.9: the receiver's own answer must follow the session's mode too
                avp.check_payload(answer.body, session.mode, session.hello)
            except avp.AvpError as e:
                raise HttpProblem("internal", f"the receiver's answer breaks the session: "
                                  f"{e.code.name}") from None
            if not keyed:
                await out.message(answer.body, [])
                return 200, [], None
            data = avp.encode(answer.body)
            headers = [("content-type", media.CONTENT_TYPE), NO_TRANSFORM]
        else:
            data, headers = answer.body, [("content-type", answer.content_type)]
        await out.whole(answer.status, data, headers)
        return answer.status, headers, data if len(data) <= REPLAY_MAX else None

    async def _by_reference(self, digest: str, on_header: Callable[[avp.HeaderEvent], None],
                            on_descriptor: Callable[[int, avp.Tensor], None],
                            on_tensor: Callable[[int, avp.Tensor], None]
                            ) -> tuple[Received, str]:
        """R-H2.10: a stored message goes through the same intake as a body would."""
        _hex(digest, "AVP-Message-Digest")
        entry = self.store.get(digest)
        if entry is None:
            raise HttpProblem("not-found", "no stored message has this digest; send the bytes")
        intake = self._intake(on_header=on_header, on_descriptor=on_descriptor,
                              on_tensor=on_tensor)

        def feed_file() -> Received:
            with open(entry.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    intake.feed([chunk])
            return intake.finish()

        slots = await self._slot()
        try:
            got: Received = await self._run(feed_file)
        finally:
            slots.release()
        return got, digest

    # -- stored messages (2.3, 2.4) -------------------------------------------------------
    async def _store(self, req: Request, receive: Receive, out: Responder) -> None:
        self._check_body_headers(req, answers_avp=False)
        claimed = None
        if (rd := req.header("repr-digest")) is not None:
            claimed = media.parse_repr_digest(rd)
        writer = self.store.writer()
        try:
            got = await self._receive_body(receive, self._intake(writer=writer,
                                                                 keep_tensors=False), req)
            if claimed is not None and not hmac.compare_digest(claimed, writer.digest()):
                raise HttpProblem("digest-mismatch", "Repr-Digest is not the body's SHA-256")
        except BaseException:
            writer.abort()
            raise
        entry, new = await self._run(writer.commit, got.prefix())
        self.stats["stored"] += 1
        loc = f"{req.root_path}{self.config.root.rstrip('/')}/messages/{entry.digest}"
        await out.whole(201 if new else 200, b"", [
            ("location", loc), ("etag", f'"{entry.digest}"'),
            ("repr-digest", media.repr_digest(entry.digest))])

    async def _send_stored(self, req: Request, out: Responder, digest: str,
                           extra: Headers) -> None:
        if not media.accepts(req.header("accept"), (media.MEDIA_TYPE,
                                                    "application/problem+json")):
            raise HttpProblem("not-acceptable", "this resource answers application/avp")
        entry = self.store.get(digest)
        if entry is None:
            raise HttpProblem("not-found", "the message was evicted")
        etag = f'"{digest}"'
        size = entry.size
        common = [("etag", etag), ("accept-ranges", "bytes"), NO_TRANSFORM,
                  ("repr-digest", media.repr_digest(digest)), *extra]
        inm = req.header("if-none-match")
        if inm is not None and (inm.strip() == "*" or etag in [t.strip() for t in
                                                               inm.split(",")]):
            await out.whole(304, b"", common)
            return
        first, last, status = 0, size - 1, 200
        rng = req.header("range")
        if_range = req.header("if-range")
        if rng is not None and req.method == "GET" and (if_range is None
                                                        or if_range.strip() == etag):
            r = media.parse_range(rng, size)
            if r == "unsatisfiable":
                raise HttpProblem("range-not-satisfiable", "the range lies outside the message",
                                  headers=[("content-range", f"bytes */{size}")])
            if isinstance(r, tuple):
                first, last, status = r[0], r[1], 206
                common.append(("content-range", f"bytes {first}-{last}/{size}"))
        await out.start(status, [("content-type", media.CONTENT_TYPE),
                                 ("content-length", str(last - first + 1)), *common])
        if req.method == "HEAD":
            await out.body(b"")
            return
        await out.file(entry.path, first, last, self._run)


async def _discard(receive: Receive) -> None:
    while True:
        ev = await receive()
        if ev["type"] == "http.disconnect" or not ev.get("more_body", False):
            return


def _hello_only(h: avp.HeaderEvent) -> None:
    if h.kind != avp.Kind.HELLO:  # 14.2: WAIT_HELLO, any other kind (refused at the HEADER)
        raise avp.AvpError(avp.ErrorCode.KIND_CONSTRAINT,
                           f"expected HELLO, got {avp.Kind(h.kind).name}", path="kind")


def _hex(s: str, what: str) -> None:
    if not media.is_hex64(s):
        raise HttpProblem("bad-request", f"{what} must be 64 lowercase hex digits")
