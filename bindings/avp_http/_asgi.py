"""Raw ASGI plumbing: one request's method, path and headers, and the ways a response leaves
(problem details, bytes, a file range, an AVP message streamed tensor by tensor). No framework:
the request body must reach the decoder chunk by chunk (section 4), which raw ASGI gives
directly."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import avp_codec as avp

from ._media import CONTENT_TYPE
from ._problem import PROBLEM_JSON, encode_problem

Scope = dict[str, Any]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[str, str]]

NO_TRANSFORM = ("cache-control", "private, no-transform")  # R-H3.2
FILE_CHUNK = 1 << 20


class Request:
    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        # Mounted inside another ASGI app (Starlette's Mount, say), the path is relative to
        # root_path; served directly, root_path is empty.
        self.root_path: str = scope.get("root_path", "") or ""
        path: str = scope["path"]
        if self.root_path and path.startswith(self.root_path):
            path = path[len(self.root_path):]
        self.path = path
        self.http_version: str = scope.get("http_version", "1.1")
        h: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            name = k.decode("latin-1").lower()
            val = v.decode("latin-1")
            h[name] = f"{h[name]}, {val}" if name in h else val
        self.headers: Mapping[str, str] = h
        self.tls = scope.get("scheme") == "https"
        # True once the body has been read to its end (or there is none): a refusal before
        # that closes an HTTP/1.1 connection (R-H4.2).
        self.body_read = self.method in ("GET", "HEAD") or self.content_length() == 0 and \
            "transfer-encoding" not in h
        client = scope.get("client")
        self.client_host: str | None = client[0] if client else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def content_length(self) -> int | None:
        v = self.headers.get("content-length")
        return int(v) if v is not None and v.isdigit() else None


class Responder:
    """Tracks whether a response has started (a problem can only replace one that has not)."""

    def __init__(self, send: Send, http_version: str) -> None:
        self._send = send
        self.started = False
        self.http1 = not http_version.startswith("2")

    async def start(self, status: int, headers: Headers) -> None:
        self.started = True
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def body(self, data: bytes | memoryview, more: bool = False) -> None:
        await self._send({"type": "http.response.body", "body": bytes(data),
                          "more_body": more})

    async def whole(self, status: int, data: bytes, headers: Headers,
                    head: bool = False) -> None:
        await self.start(status, [*headers, ("content-length", str(len(data)))])
        await self.body(b"" if head else data)

    async def problem(self, status: int, body: dict[str, Any], headers: Headers | None = None,
                      close: bool = False) -> None:
        """R-H5.1; ``close`` on an early refusal asks an HTTP/1.1 client to stop (R-H4.2)."""
        extra = list(headers or [])
        if close and self.http1:
            extra.append(("connection", "close"))
        await self.whole(status, encode_problem(body), [("content-type", PROBLEM_JSON), *extra])

    async def message(self, msg: avp.Message, headers: Headers) -> None:
        """An AVP message, encoded tensor by tensor (StreamEncoder, section 4): the response
        holds one tensor's stored bytes at a time, never the assembled message."""
        size = avp.encoded_size(msg)
        await self.start(200, [("content-type", CONTENT_TYPE), NO_TRANSFORM,
                               ("content-length", str(size)), *headers])
        for part in message_parts(msg):
            await self.body(part, more=True)
        await self.body(b"")

    async def file(self, path: os.PathLike[str] | str, first: int, last: int,
                   read: Callable[..., Awaitable[bytes]]) -> None:
        """Bytes ``first..last`` of a file, read in worker threads a MiB at a time."""
        with open(path, "rb") as f:
            pos = first
            while pos <= last:
                n = min(FILE_CHUNK, last + 1 - pos)
                chunk = await read(_pread, f.fileno(), n, pos)
                if len(chunk) != n:
                    raise OSError("stored message shrank while being served")
                pos += n
                await self.body(chunk, more=pos <= last)


def _pread(fd: int, n: int, pos: int) -> bytes:
    return os.pread(fd, n, pos)


class _Collect:
    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []

    def write(self, data: bytes | memoryview) -> None:
        self.parts.append(data)


# Body pieces are at most this long (plus a section's few bytes). 256 KiB is the HTTP/2 frame
# size this binding's server advertises: httpcore and hypercorn cut a larger piece into frames
# by slicing off one frame and copying the rest each time (a 2 MiB piece was copied about
# 3.5 times over), and a socket send that takes part of a large piece copies the remainder.
PIECE = 1 << 18


def message_parts(msg: avp.Message, size: int = PIECE) -> Iterator[bytes]:
    """The encoded message in pieces of about ``size`` bytes, each tensor's sections and data
    copied once, as StreamEncoder produces them (no whole message is assembled)."""
    sink = _Collect()
    enc = avp.StreamEncoder(sink, msg.kind, msg.entries, msg.layers, len(msg.tensors))
    for t in msg.tensors:
        yield from _joined(sink.parts, size)
        sink.parts.clear()
        enc.write_tensor(t)
    enc.finish()
    yield from _joined(sink.parts, size)


def _joined(parts: list[bytes | memoryview], size: int) -> Iterator[bytes]:
    pending: list[memoryview] = []
    n = 0
    for p in parts:
        mv = memoryview(p).cast("B")
        for i in range(0, len(mv), size):
            piece = mv[i:i + size]
            pending.append(piece)
            n += len(piece)
            if n >= size:
                yield b"".join(pending)
                pending, n = [], 0
    if pending:
        yield b"".join(pending)
