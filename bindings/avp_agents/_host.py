"""One ASGI application per process: the agent protocol's routes (A2A or MCP, Starlette) and the
HTTP binding (``avp_http.AvpApp``) mounted beside them at ``/avp/v1``, run by ``avp_http.serve``
(hypercorn: HTTP/1.1, h2c, h2 over TLS).

``Hosted`` also bounds request bodies on the protocol's routes (R-A2A4.3, R-MCP5.2): the A2A SDK
reads a JSON-RPC body whole before it parses it, so a body larger than the inline limit allows
for is refused here, with 413, as soon as its ``Content-Length`` (or, chunked, its growth) shows
it is over the bound: none of it is kept or parsed. The rest of the body is read and dropped (up
to ``DRAIN_BYTES``) before the answer, because an HTTP/1.1 client that is still sending sees a
reset connection, not the 413, when the server closes early; past that the connection is
closed. Bodies on the binding's own routes are bounded by ``AvpApp``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import avp_http

from ._ext import AgentProblem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BINDING_ROOT = "/avp/v1"
DRAIN_BYTES = 64 << 20  # what we read and drop to deliver a 413 to a client still sending


def request_limit(max_inline_bytes: int, slack: int = 256 << 10) -> int:
    """The largest protocol request body that can carry an inline part of ``max_inline_bytes``:
    base64 turns each 3 bytes into 4, plus the rest of the JSON (text parts, ids)."""
    return 4 * -(-max_inline_bytes // 3) + slack


class Hosted:
    """``app`` (the protocol's Starlette app, which mounts ``binding`` at ``BINDING_ROOT``) with
    the body bound in front of it. ``close`` releases the binding's worker pools."""

    def __init__(self, app: ASGIApp, binding: avp_http.AvpApp, max_body: int,
                 on_close: Callable[[], None] | None = None) -> None:
        self.app = app
        self.binding = binding
        self.max_body = max_body
        self.on_close = on_close

    def close(self) -> None:
        if self.on_close is not None:
            self.on_close()
        self.binding.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" \
                or str(scope.get("path", "")).startswith(BINDING_ROOT + "/"):
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            # Refused on its declared length (R-A2A4.3): nothing of it is kept.
            await self._drain_and_refuse(receive, send, 0, length <= DRAIN_BYTES)
            return
        # The pieces are joined once, then only the joined body is held, and only until the
        # app has taken it: a body is in memory once, not as a buffer and a copy of it.
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            chunks.append(chunk)
            seen += len(chunk)
            more = bool(msg.get("more_body"))
            if seen > self.max_body:
                chunks.clear()
                await self._drain_and_refuse(receive, send, seen, more)
                return
        pending: list[bytes] = [b"".join(chunks)]
        chunks.clear()

        async def replay() -> Message:
            if pending:
                return {"type": "http.request", "body": pending.pop(), "more_body": False}
            return await receive()  # later calls wait for the disconnect, as ASGI says

        await self.app(scope, replay, send)

    async def _drain_and_refuse(self, receive: Receive, send: Send, seen: int,
                                drain: bool) -> None:
        while drain and seen <= DRAIN_BYTES:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            seen += len(msg.get("body", b""))
            drain = bool(msg.get("more_body"))
        await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        # A JSON-RPC error object (both protocols speak JSON-RPC) with the problem as its data.
        p = AgentProblem("request-too-large", f"the request body exceeds {self.max_body} "
                         "bytes; send large AVP payloads by reference", maximum=self.max_body)
        body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
            "code": -32600, "message": str(p), "data": p.as_json()}}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
