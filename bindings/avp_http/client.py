"""The AVP-over-HTTP client, on httpx (spec/avp-http.md).

    with AvpClient("http://127.0.0.1:8080/avp/v1") as c:        # HTTP/2 (h2c or ALPN h2)
        accept = c.handshake(hello)                            # opens c.session
        answer = c.deliver(kv_message)                         # streamed, tensor by tensor
        digest = c.store(kv_message)                           # by-digest resource (2.3)
        msg = c.fetch(digest)                                  # streamed into the Decoder
        msg = c.fetch_url(url)                                 # a by-reference payload
        t = c.fetch_tensor(digest, 5)                          # 4 range requests (2.3)
        held = c.lookup(model_id, token_ids)                   # lookup before transfer (2.4)

Every refusal raises: an ``avp.AvpError`` subclass (``RemoteAvpError``, with ``status`` and the
``problem``) when the receiver reported an AVP error code, else ``HttpProblem``. Messages are sent
with a StreamEncoder (one tensor's bytes at a time, ``Content-Length`` computed first) and
received with the sans-IO Decoder under the client's own ``limits`` and ``keys``. ``http2`` uses
HTTP/2 with prior knowledge on ``http://`` and ALPN on ``https://``; ``http2=False`` speaks
HTTP/1.1. A bearer ``token`` is refused over cleartext to a non-loopback host (R-H6.1).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import numpy as np

import avp_codec as avp

from . import _media as media
from ._asgi import PIECE, message_parts
from ._problem import PROBLEM_JSON, HttpProblem, error_from_problem
from ._run import install_h2_repr_fix

_T = TypeVar("_T")


@dataclass
class Reply:
    """A delivery's answer (R-H2.9): status, media type and body; ``message`` when the body
    was an AVP message (decoded as it arrived)."""

    status: int
    content_type: str
    body: bytes
    message: avp.Message | None = None

    def json(self) -> Any:
        return json.loads(self.body)


class AvpClient:
    def __init__(self, base_url: str, *, http2: bool = True, token: str | None = None,
                 verify: ssl.SSLContext | str | bool = True, timeout: float = 120.0,
                 limits: avp.Limits | None = None, keys: dict[bytes, bytes] | None = None,
                 require_auth: bool = False, auth_key: tuple[bytes, bytes] | None = None,
                 session: str | None = None, max_decoded_bytes: int = 1 << 32) -> None:
        self.base = base_url.rstrip("/")
        parts = urlsplit(self.base)
        if token is not None and parts.scheme != "https" and not media.is_loopback(parts.hostname):
            raise ValueError("a bearer credential needs TLS (https) off the loopback (R-H6.1)")
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        h1 = not http2 or parts.scheme == "https"  # cleartext HTTP/2 is prior knowledge only
        if http2:
            install_h2_repr_fix()
        if parts.scheme != "https":
            verify = False  # no TLS on this connection: skip loading a CA bundle
        transport = httpx.HTTPTransport(http1=h1, http2=http2, verify=verify,
                                        socket_options=[(socket.IPPROTO_TCP,
                                                         socket.TCP_NODELAY, 1)])
        self._http = httpx.Client(transport=transport, headers=headers,
                                  timeout=httpx.Timeout(timeout), trust_env=False)
        self.limits = limits or avp.Limits(max_message_bytes=1 << 34)
        self.keys = keys or {}
        self.require_auth = require_auth
        self.auth_key = auth_key
        self.session = session
        self.max_decoded_bytes = max_decoded_bytes  # R-H5.7 applies to what we receive too
        # (bytes, seconds) of the last request body, first piece to last piece handed to the
        # connection: the upload rate a sender can choose its codec by (avp_codec.auto).
        self.last_upload: tuple[int, float] | None = None

    def close(self) -> None:
        self._http.close()

    @property
    def upload_bps(self) -> float | None:
        """Bytes per second of the last request body (None before any, or when it took no
        measurable time): the link rate ``Connector.export(codec="auto", link_bps=...)`` and
        ``avp_codec.auto.choose_codec`` choose by. Meaningful for bodies larger than the
        socket buffers (a few MB); a small body is absorbed by them and reads as very fast."""
        if self.last_upload is None or self.last_upload[1] <= 0:
            return None
        return self.last_upload[0] / self.last_upload[1]

    def __enter__(self) -> AvpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- resources ----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        r = self._http.get(self.base + "/")
        _raise_for_problem(r.status_code, r.headers, r.content)
        out: dict[str, Any] = r.json()
        return out

    def handshake(self, hello: avp.Message, *, renegotiate: bool = False) -> avp.Message:
        """Send HELLO; returns the ACCEPT and keeps the session token in ``self.session``.
        ``renegotiate`` re-handshakes the current session (R-H2.4). The caller verifies the
        ACCEPT (avp.check_accept or its own resolution, R-14.2)."""
        headers = {"avp-session": self.session} if renegotiate and self.session else {}
        reply = self._post("/handshake", hello, headers)
        if reply.message is None or reply.message.kind != avp.Kind.ACCEPT:
            raise avp.AvpError(avp.ErrorCode.KIND_CONSTRAINT, "the handshake answer is not "
                               "an ACCEPT")
        self.session = reply.headers_session
        return reply.message

    def deliver(self, msg: avp.Message | bytes | bytearray | memoryview | Iterable[bytes], *,
                idempotency_key: str | None = None) -> Reply:
        """Deliver a payload in the current session (2.2); the receiver's answer. ``msg`` may
        also be an iterable of byte pieces (a StreamEncoder's output as it is produced): sent
        as the pieces come, without Content-Length."""
        return self._post("/deliver", msg, self._session_headers(idempotency_key))

    def deliver_reference(self, digest: str, *, idempotency_key: str | None = None) -> Reply:
        """Deliver a message the receiver already stores (R-H2.10), by its digest."""
        headers = self._session_headers(idempotency_key) | {"avp-message-digest": digest}
        r = self._http.post(self.base + "/deliver", content=b"", headers=headers)
        return self._reply(r.status_code, r.headers, r.content)

    def store(self, msg: avp.Message | bytes | bytearray | memoryview) -> str:
        """Store a message on the receiver (2.3); returns its digest."""
        r = self._post_raw("/messages", msg, {})
        _raise_for_problem(r.status_code, r.headers, r.content)
        return r.headers["etag"].strip('"')

    def has(self, digest: str) -> bool:
        r = self._http.head(f"{self.base}/messages/{digest}")
        if r.status_code == 404:
            return False
        _raise_for_problem(r.status_code, r.headers, b"")
        return True

    def lookup(self, model_id: bytes, token_ids: Iterable[int] | np.ndarray) -> str | None:
        """The digest of the KV_CACHE the receiver holds for this model and exact token prefix
        (2.4), or None."""
        prefix = media.prefix_digest(token_ids)
        if prefix is None:
            return None
        return self.lookup_digest(model_id, prefix)

    def lookup_digest(self, model_id: bytes, prefix_digest: str) -> str | None:
        """``lookup`` by a prefix digest the caller computed (2.4): a consumer that asks for
        several prefix lengths of one prompt hashes the ids once for all of them."""
        r = self._http.head(f"{self.base}/prefixes/{bytes(model_id).hex()}/{prefix_digest}")
        if r.status_code == 404:
            return None
        _raise_for_problem(r.status_code, r.headers, b"")
        return r.headers["etag"].strip('"')

    def fetch(self, digest: str) -> avp.Message:
        """A stored message, decoded as it streams in (verified, the client's limits/keys)."""
        return self.fetch_url(f"{self.base}/messages/{digest}", digest=digest)

    def fetch_url(self, url: str, *, digest: str | None = None) -> avp.Message:
        """A message by its absolute URL (a by-reference payload another protocol carried, e.g.
        an A2A or MCP message naming ``.../messages/{digest}``). With ``digest`` (or when the
        URL ends in one) the bytes received must hash to it (2.3), else ``digest-mismatch``."""
        tail = url.rstrip("/").rsplit("/", 1)[-1]
        want = digest or (tail if media.is_hex64(tail) else None)
        h = hashlib.sha256()
        with self._http.stream("GET", url, headers={"accept": media.MEDIA_TYPE}) as r:
            if r.status_code != 200:
                r.read()
                _raise_for_problem(r.status_code, r.headers, r.content)

            def hashed(chunks: Iterator[bytes]) -> Iterator[bytes]:
                for c in chunks:
                    h.update(c)
                    yield c

            msg, _ = self._decode_stream(hashed(r.iter_raw()), r.headers)
        if want is not None and h.hexdigest() != want:
            raise HttpProblem("digest-mismatch", "the message does not hash to its digest",
                              status=502)
        return msg

    def fetch_tensor(self, digest: str, i: int) -> avp.Tensor:
        """Tensor ``i`` of a stored message, reading only the Trailer, INDEX, HEADER and that
        tensor with byte ranges (2.3); every structure read is checked (R-11.3)."""
        url = f"{self.base}/messages/{digest}"
        return self._sparse(url, lambda buf, index, at, count, length: self._tensor_from(
            url, buf, index, at, count, length, i))

    def fetch_header(self, digest: str) -> avp.HeaderEvent:
        """The HEADER of a stored message (kind, entries, layer table, tensor count), reading
        only its Trailer, INDEX and HEADER with byte ranges (2.3), each checked (R-11.3): what
        a consumer needs to decide whether to fetch the whole message."""
        url = f"{self.base}/messages/{digest}"

        def header(buf: mmap.mmap, index: bytes, index_at: int, count: int,
                   length: int) -> avp.HeaderEvent:
            self._head_into(url, buf, index, index_at, count, length)
            h: avp.HeaderEvent = avp.IndexedReader(buf, limits=self.limits).header
            return h

        return self._sparse(url, header)

    def _sparse(self, url: str, then: Callable[[mmap.mmap, bytes, int, int, int], _T]) -> _T:
        """Read the Trailer and INDEX of ``url`` into a sparse copy of the message and run
        ``then(buf, index, index_at, count, length)`` on it."""
        trailer, length = self._range(url, "-16", None)
        if len(trailer) != 16:
            raise avp.AvpError(avp.ErrorCode.BAD_TRAILER, "no Trailer")
        if length > self.limits.max_message_bytes:
            raise avp.AvpError(avp.ErrorCode.LIMIT_MESSAGE, f"{length} bytes > limit")
        index_at = struct.unpack_from("<Q", trailer)[0]
        if not 56 <= index_at <= length - 16 - 24:
            raise avp.AvpError(avp.ErrorCode.BAD_TRAILER, "index_offset out of place",
                               offset=length - 16)
        # A sparse copy: only the ranges read occupy memory (anonymous pages are lazy).
        buf = mmap.mmap(-1, length)
        try:
            buf[length - 16:] = trailer
            index, _ = self._range(url, f"{index_at}-{length - 17}", length)
            buf[index_at:length - 16] = index
            count = struct.unpack_from("<Q", index, 16)[0] if len(index) >= 24 else 0
            if 24 + 24 * count > len(index):
                raise avp.AvpError(avp.ErrorCode.HEADER_LAYOUT, "INDEX shorter than its count",
                                   offset=index_at)
            return then(buf, index, index_at, count, length)
        finally:
            buf.close()

    # -- internals ------------------------------------------------------------------------
    def _session_headers(self, key: str | None) -> dict[str, str]:
        if self.session is None:
            raise HttpProblem("session-unknown", "no session: call handshake() first")
        h = {"avp-session": self.session}
        if key is not None:
            h["idempotency-key"] = key
        return h

    def _body(self, msg: avp.Message | bytes | bytearray | memoryview | Iterable[bytes]
              ) -> tuple[bytes | Iterator[bytes], int | None]:
        if isinstance(msg, avp.Message):
            if self.auth_key is not None:
                data = avp.encode(msg, auth_key=self.auth_key)
                return data, len(data)
            return self._timed(message_parts(msg)), avp.encoded_size(msg)
        if not isinstance(msg, bytes | bytearray | memoryview):
            return self._timed(iter(msg)), None
        view = memoryview(msg).cast("B")
        return self._timed(_pieces(view)), len(view)

    def _timed(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        n, t0 = 0, None
        for piece in pieces:
            if t0 is None:
                t0 = time.perf_counter()
            yield piece
            n += len(piece)
        if t0 is not None:
            self.last_upload = (n, time.perf_counter() - t0)

    def _post_raw(self, path: str, msg: avp.Message | bytes | bytearray | memoryview,
                  headers: dict[str, str]) -> httpx.Response:
        content, n = self._body(msg)
        h = {"content-type": media.MEDIA_TYPE, **_length(n), **headers}
        return self._http.post(self.base + path, content=content, headers=h)

    def _post(self, path: str, msg: avp.Message | bytes | bytearray | memoryview | Iterable[bytes],
              headers: dict[str, str]) -> _SessionReply:
        content, n = self._body(msg)
        h = {"content-type": media.MEDIA_TYPE, **_length(n),
             "accept": f"{media.MEDIA_TYPE}, application/json;q=0.9, {PROBLEM_JSON};q=0.5",
             **headers}
        with self._http.stream("POST", self.base + path, content=content, headers=h) as r:
            ctype, _ = media.parse_media_type(r.headers.get("content-type"))
            if r.status_code < 300 and ctype == media.MEDIA_TYPE:
                msg_in, raw_len = self._decode_stream(r.iter_raw(), r.headers)
                out = _SessionReply(r.status_code, ctype, b"", msg_in)
            else:
                r.read()
                reply = self._reply(r.status_code, r.headers, r.content)
                out = _SessionReply(reply.status, reply.content_type, reply.body)
            out.headers_session = r.headers.get("avp-session")
        return out

    def _reply(self, status: int, headers: httpx.Headers, body: bytes) -> Reply:
        _raise_for_problem(status, headers, body)
        ctype, _ = media.parse_media_type(headers.get("content-type"))
        msg = avp.decode(body, limits=self.limits, keys=self.keys,
                         require_auth=self.require_auth) if ctype == media.MEDIA_TYPE else None
        return Reply(status, ctype, body, msg)

    def _decode_stream(self, chunks: Iterator[bytes], headers: httpx.Headers
                       ) -> tuple[avp.Message, int]:
        if headers.get("content-encoding", "identity").lower() != "identity":
            raise HttpProblem("unsupported-media-type", "AVP bodies carry no content coding")
        dec = avp.Decoder(self.limits, keys=self.keys, require_auth=self.require_auth)
        header: avp.HeaderEvent | None = None
        tensors: list[avp.Tensor] = []
        n = decoded = 0

        def drain() -> avp.EndEvent | None:
            nonlocal header
            while True:
                ev = dec.next_event()
                if ev is avp.NEED_DATA:
                    return None
                if isinstance(ev, avp.HeaderEvent):
                    header = ev
                elif isinstance(ev, avp.TensorEvent):
                    nonlocal decoded
                    decoded += ev.tensor.raw_length
                    if decoded > self.max_decoded_bytes:
                        raise HttpProblem("decoded-too-large", "the answer's tensors decode to "
                                          f"more than {self.max_decoded_bytes} bytes")
                    tensors.append(ev.tensor)
                elif isinstance(ev, avp.EndEvent):
                    return ev

        end = None
        for chunk in chunks:
            n += len(chunk)
            dec.feed(chunk)
            end = drain() or end
        dec.end_of_input()
        end = drain() or end
        if header is None or end is None:  # pragma: no cover - the decoder raised TRUNCATED
            raise avp.AvpError(avp.ErrorCode.TRUNCATED, "the answer ended early", offset=n)
        return avp.Message(header.kind, header.entries, header.layers, tensors,
                           authenticated=end.authenticated, auth_tag=end.auth_tag,
                           minor=end.minor, skipped_sections=end.skipped_sections), n

    def _range(self, url: str, spec: str, length: int | None) -> tuple[bytes, int]:
        r = self._http.get(url, headers={"range": f"bytes={spec}",
                                         "accept": media.MEDIA_TYPE})
        _raise_for_problem(r.status_code, r.headers, r.content)
        if r.status_code != 206:
            raise HttpProblem("bad-request", "the server ignored the byte range", status=502)
        total = int(r.headers["content-range"].rpartition("/")[2])
        if length is not None and total != length:
            raise HttpProblem("bad-request", "the message changed between ranges", status=502)
        return r.content, total

    def _head_into(self, url: str, buf: mmap.mmap, index: bytes, index_at: int, count: int,
                   length: int) -> int:
        """Read the bytes before the first tensor section (preamble, HEADER, other sections)
        into ``buf``; returns where the first tensor section starts."""
        first_section: int = (struct.unpack_from("<Q", index, 24)[0] if count else index_at)
        if not 16 < first_section <= index_at:
            raise avp.AvpError(avp.ErrorCode.INDEX_MISMATCH, "implausible first section",
                               offset=index_at)
        head, _ = self._range(url, f"0-{first_section - 1}", length)
        buf[:first_section] = head
        return first_section

    def _tensor_from(self, url: str, buf: mmap.mmap, index: bytes, index_at: int, count: int,
                     length: int, i: int) -> avp.Tensor:
        if not 0 <= i < count:
            raise IndexError(i)
        first_section = self._head_into(url, buf, index, index_at, count, length)
        sec, data, stored = struct.unpack_from("<QQQ", index, 24 + 24 * i)
        end = data + stored + (-stored % 8)
        if not (first_section <= sec < data <= end <= index_at):
            raise avp.AvpError(avp.ErrorCode.INDEX_MISMATCH, "implausible index entry",
                               offset=index_at + 24 + 24 * i, path=f"index[{i}]")
        part, _ = self._range(url, f"{sec}-{end - 1}", length)
        buf[sec:end] = part
        reader = avp.IndexedReader(buf, limits=self.limits)
        t = reader.tensor(i)
        # Copy out: the sparse buffer is closed when we return.
        return avp.Tensor(t.role, t.dtype, t.shape, bytes(t.stored), layer=t.layer,
                          codec=t.codec, layout=t.layout, token_offset=t.token_offset,
                          quant=t.quant, raw_length=t.raw_length)


def _length(n: int | None) -> dict[str, str]:
    return {} if n is None else {"content-length": str(n)}


def _pieces(view: memoryview, size: int = PIECE) -> Iterator[bytes]:
    """A body in 256 KiB pieces: httpcore copies what a socket send (HTTP/1.1) or a frame
    (HTTP/2) leaves over, so one large piece costs quadratic copying; pieces of the server's
    frame size keep it linear (``_asgi.PIECE``)."""
    for i in range(0, len(view), size):
        yield bytes(view[i:i + size])


@dataclass
class _SessionReply(Reply):
    headers_session: str | None = None


def _raise_for_problem(status: int, headers: httpx.Headers, body: bytes) -> None:
    if status < 400:
        return
    raise error_from_problem(status, body, dict(headers))
