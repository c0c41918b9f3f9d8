"""Running ``AvpApp`` on hypercorn: HTTP/1.1, HTTP/2 with prior knowledge (h2c) on cleartext,
HTTP/2 by ALPN over TLS (R-H3.1).

``serve`` blocks until SIGINT/SIGTERM (or ``shutdown`` is set) and then shuts down gracefully;
``BackgroundServer`` runs the same on a thread for tests and embedding. The listening socket is
created here, so port 0 works and the caller learns the port before the first request.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import os
import signal
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

import h2.events
import h2.settings
import hypercorn.asyncio.tcp_server as hypercorn_tcp
import hypercorn.protocol
import hyperframe.frame
from h11._receivebuffer import ReceiveBuffer
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h2 import H2Protocol

import avp_codec

from .server import AvpApp


class Servable(Protocol):
    """What ``serve`` runs: ``AvpApp``, or another ASGI application that mounts one (the A2A
    and MCP bindings of ``avp_agents``); ``close`` runs once the server has stopped."""

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]: ...

    def close(self) -> None: ...


H2_WINDOW = 16 << 20  # per stream and per connection
H2_FRAME = 1 << 18
READ_SIZE = 1 << 20


class _AvpH2(H2Protocol):
    """hypercorn's HTTP/2 protocol with two changes an AVP receiver needs.

    Windows and frames: hypercorn advertises HTTP/2's defaults (64 KiB windows, 16 KiB frames)
    and has no setting for them; a 117 MB body then needs ~1,800 WINDOW_UPDATE round trips, which
    made HTTP/2 uploads 10-20x slower than HTTP/1.1 here. A 16 MiB window buffers no more in the
    server: received frames wait in hypercorn's bounded per-request queue, and when it is full
    the connection stops reading (TCP backpressure). Frames of 256 KiB cost the least CPU per
    byte in h2's frame buffer (measured against 64 KiB and 1 MiB).

    Early answers (R-H4.2): when the application answers before the request body has ended (a
    refusal at the HEADER), hypercorn forgets the stream and the client's next DATA frame for it
    raised KeyError, killing the connection and the answer with it. Here such frames are dropped
    unread, their flow-control credit returned. The stream is not reset: httpx's HTTP/2 client
    cannot read an answer once its upload is reset, so the rest of the body is discarded instead,
    bounded in time by the keep-alive timeout (the connection counts as idle once no request
    is open) and in bytes by the request's own Content-Length.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conn = self.connection
        values = {h2.settings.SettingCodes(k): v for k, v in conn.local_settings.items()}
        values[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = H2_WINDOW
        values[h2.settings.SettingCodes.MAX_FRAME_SIZE] = H2_FRAME
        conn.local_settings = h2.settings.Settings(client=False, initial_values=values)
        conn.max_inbound_frame_size = H2_FRAME

    async def initiate(self, headers: Any = None, settings: Any = None) -> None:
        await super().initiate(headers, settings)
        self.connection.increment_flow_control_window(H2_WINDOW - 65535)  # the connection's
        await self._flush()

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        # One at a time: a request's HEADERS and its first DATA often come in one batch, and
        # whether a stream is still wanted is known only after the events before it ran.
        for ev in events:
            if isinstance(ev, h2.events.DataReceived) and ev.stream_id not in self.streams:
                self.connection.acknowledge_received_data(ev.flow_controlled_length,
                                                          ev.stream_id)
                await self._flush()
            else:
                await super()._handle_events([ev])


def _raw_data_repr(data: bytes | None) -> str:
    """hyperframe's repr of frame data, made O(1): the original hexlifies the whole payload and
    keeps 20 hex digits, and h2 formats every received frame's repr for a trace log even when
    nothing logs (30-40% of the server's CPU on a large HTTP/2 upload, measured). Same output."""
    if not data:
        return "None"
    r = binascii.hexlify(data[:11]).decode("ascii")
    return "<hex:" + (r[:20] + "..." if len(r) > 20 else r) + ">"


def install_h2_repr_fix() -> None:
    hyperframe.frame._raw_data_repr = _raw_data_repr


def _extract_at_most(self: ReceiveBuffer, count: int) -> bytearray | None:
    """h11's ``maybe_extract_at_most`` without its two extra passes over a body piece: the
    original slices ``count`` bytes only to test that the slice is not empty, then slices
    them again; and when the piece is the whole buffer, the buffer itself is handed over
    instead of copied. Same result (a bytearray of the same bytes, or None) and the same
    state afterwards."""
    data: bytearray = self._data
    n = len(range(len(data))[:count])  # the length of data[:count], without the copy
    if not n:
        return None
    if n == len(data):
        self._data = bytearray()
        out = data
    else:
        out = data[:n]
        del data[:n]
    self._next_line_search = 0
    self._multiple_lines_search = 0
    return out


class _Owned(bytearray):
    """Bytes read from a socket that nobody else holds: ``_read_data`` hands each one to the
    connection's protocol and forgets it, so h11 may adopt it as its receive buffer instead
    of copying it (``_receive_into``). Any other bytearray a caller passes is copied, as
    h11 does."""


_h11_iadd = ReceiveBuffer.__iadd__


def _receive_into(self: ReceiveBuffer, byteslike: bytes | bytearray) -> ReceiveBuffer:
    if type(byteslike) is _Owned and not self._data:
        self._data = byteslike
        return self
    return _h11_iadd(self, byteslike)


def install_h11_fixes() -> None:
    if ReceiveBuffer.maybe_extract_at_most is not _extract_at_most:
        setattr(ReceiveBuffer, "maybe_extract_at_most", _extract_at_most)  # noqa: B010
        setattr(ReceiveBuffer, "__iadd__", _receive_into)  # noqa: B010


async def _read_data(self: hypercorn_tcp.TCPServer) -> None:
    """hypercorn's connection read loop, with the per-piece costs of a large body cut.

    The original reads with ``wait_for(reader.read(64 KiB))``: a new task per read, the
    transport's 256 KiB recv size, a StreamReader that pauses and resumes the transport
    whenever more than 128 KiB wait (an epoll re-registration per piece), and two copies of
    every byte in ``read`` (slice, then ``bytes``). Here the transport reads up to
    ``READ_SIZE`` at a time, the reader buffers up to twice that before it pauses the
    transport (TCP backpressure as before, at a larger bound), the wait is bounded by a
    timeout scope (no task), and the buffered bytes are handed over whole instead of
    copied. Same events and the same timeout as the original; h11 and h2 copy what they
    are given into their own buffers, so the handed-over buffer is not kept.
    """
    reader = self.reader
    transport = self.writer.transport
    if isinstance(getattr(transport, "max_size", None), int):  # selector (cleartext) sockets
        transport.max_size = READ_SIZE  # type: ignore[attr-defined]
    if isinstance(getattr(reader, "_limit", None), int):
        reader._limit = max(reader._limit, READ_SIZE)  # type: ignore[attr-defined]
    while not reader.at_eof():
        try:
            async with asyncio.timeout(self.config.read_timeout):
                data = await _take(reader)
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
            break
        else:
            await self.protocol.handle(RawData(data))  # type: ignore[arg-type] # h11/h2 take any buffer
    await self.protocol.handle(Closed())


async def _take(reader: asyncio.StreamReader) -> bytes | bytearray:
    """Everything the reader holds (at least one byte, or b"" at EOF), without copying it.
    Uses StreamReader internals (stable since Python 3.4); any other reader is read as
    hypercorn does."""
    wait = getattr(reader, "_wait_for_data", None)
    if not isinstance(getattr(reader, "_buffer", None), bytearray) or wait is None:
        return await reader.read(READ_SIZE)  # pragma: no cover - another StreamReader
    if (exc := reader.exception()) is not None:
        raise exc
    if not reader._buffer and not reader.at_eof():  # type: ignore[attr-defined]
        await wait("read")
    buf: bytearray = reader._buffer  # type: ignore[attr-defined]
    reader._buffer = _Owned()  # type: ignore[attr-defined]
    reader._maybe_resume_transport()  # type: ignore[attr-defined]
    return buf


def install_tuning() -> None:
    """Make hypercorn build ``_AvpH2`` for HTTP/2 connections and read large pieces cheaply
    (``_read_data``: hypercorn's fixed 64 KiB reads cost one pass through h11/h2, the ASGI
    queue and the decoder per 64 KiB). Idempotent; ``serve`` and ``BackgroundServer`` call
    it."""
    setattr(hypercorn.protocol, "H2Protocol", _AvpH2)  # noqa: B010 (not exported)
    hypercorn_tcp.MAX_RECV = READ_SIZE
    setattr(hypercorn_tcp.TCPServer, "_read_data", _read_data)  # noqa: B010
    install_h2_repr_fix()
    install_h11_fixes()


def hypercorn_config(sock: socket.socket, *, certfile: str | None = None,
                     keyfile: str | None = None, keep_alive: float = 5.0,
                     read_timeout: int = 60, access_log: bool = False) -> Config:
    """Hypercorn settings for an AVP receiver.

    ``keep_alive`` also bounds how long a connection may take to send its request headers
    (hypercorn counts a connection as idle until the headers are complete), so a peer that
    connects and sends nothing, or sends headers one byte at a time, is closed after it
    (R-H5.5). Bodies are bounded by the app's own timing. HTTP/2 frames may be up to 1 MiB, so
    a large body costs a few hundred frames rather than thousands.
    """
    cfg = Config()
    # Hypercorn adopts (and closes) the descriptor it is given: give it a duplicate, so the
    # caller's socket object stays the caller's to close.
    cfg.bind = [f"fd://{os.dup(sock.fileno())}"]
    cfg.certfile, cfg.keyfile = certfile, keyfile
    cfg.keep_alive_timeout = keep_alive
    cfg.read_timeout = read_timeout
    cfg.h2_max_inbound_frame_size = 1 << 20
    cfg.graceful_timeout = 5.0
    cfg.include_server_header = False
    cfg.accesslog = "-" if access_log else None
    cfg.errorlog = "-"
    cfg.loglevel = "WARNING"
    return cfg


def listen(host: str = "127.0.0.1", port: int = 0, backlog: int = 128) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: small frames (HTTP/2 WINDOW_UPDATE, response heads)
    # must not wait for Nagle's algorithm, which costs ~40 ms per round trip on loopback.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


async def serve_async(app: Servable, sock: socket.socket, shutdown: asyncio.Event, *,
                      certfile: str | None = None, keyfile: str | None = None,
                      keep_alive: float = 5.0, access_log: bool = False) -> None:
    install_tuning()
    cfg = hypercorn_config(sock, certfile=certfile, keyfile=keyfile, keep_alive=keep_alive,
                           access_log=access_log)
    try:
        await hypercorn_serve(app, cfg, shutdown_trigger=shutdown.wait,
                              mode="asgi")
    finally:
        app.close()


def serve(app: Servable, host: str = "127.0.0.1", port: int = 0, *,
          certfile: str | None = None, keyfile: str | None = None, keep_alive: float = 5.0,
          access_log: bool = False, ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM. ``ready(port)`` runs once the socket listens.

    The codec's compiled kernels (numba, when installed) are loaded first
    (``avp_codec.load_kernels``): about a second and 100 MB once, at start-up rather than inside
    the first request that quantizes or decompresses floatplane_zstd."""
    avp_codec.load_kernels()
    sock = listen(host, port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready(sock.getsockname()[1])
        await serve_async(app, sock, stop, certfile=certfile, keyfile=keyfile,
                          keep_alive=keep_alive, access_log=access_log)

    try:
        asyncio.run(main())
    finally:
        sock.close()


class BackgroundServer:
    """``with BackgroundServer(app) as srv: AvpClient(srv.url)...`` on a thread of this
    process; leaving the block shuts the server down and waits for the thread (bounded)."""

    def __init__(self, app: Servable, host: str = "127.0.0.1", port: int = 0, *,
                 certfile: str | None = None, keyfile: str | None = None,
                 root: str | None = None) -> None:
        self.app = app
        self._sock = listen(host, port)
        self.port: int = self._sock.getsockname()[1]
        scheme = "https" if certfile else "http"
        if root is None:  # an AvpApp's own root; another app says where it mounted one
            root = app.config.root if isinstance(app, AvpApp) else ""
        self.url = f"{scheme}://{host}:{self.port}{root}"
        self._tls = (certfile, keyfile)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="avp-http-server", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await serve_async(self.app, self._sock, self._stop, certfile=self._tls[0],
                              keyfile=self._tls[1])

        asyncio.run(main())

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the server thread did not start")
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._sock.close()
