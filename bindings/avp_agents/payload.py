"""Reading an AVP payload that arrived inside another protocol: by value (bytes that were base64
in JSON) or by reference (a URL to the HTTP binding's stored-message resource plus its size and
digest). Shared by the A2A agent and the MCP server (spec/avp-a2a.md 4, spec/avp-mcp.md 4).

    reader = PayloadReader(limits=..., max_inline_bytes=1 << 20, policy=FetchPolicy(...),
                           store=app.store, own_base="http://host:port/avp/v1")
    got = reader.inline(data)                          # R-A2A4.2, R-A2A4.3
    got = reader.reference(url, size, digest)          # R-A2A4.4 - R-A2A4.7 (blocking)

By reference, the bytes are read whole (at most ``size`` of them, under a deadline) and hashed
before any of them is decoded: a payload that is not the one its digest names is
``digest-mismatch`` whatever else is wrong with it, and nothing is decoded from bytes the client
did not vouch for. Decoding then runs the sans-IO ``Decoder`` in verified mode under the
reader's limits with ``max_message_bytes = size``, and bounds the decoded bytes it keeps (a
compressed message can inflate far past its length). Every failure is an ``AgentProblem``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import avp_http
import httpx

import avp_codec as avp

from ._ext import AgentProblem, is_hex64

E = avp.ErrorCode
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchPolicy:
    """R-A2A4.7. ``hosts``: the hosts (``host`` or ``host:port``) by-reference payloads may be
    fetched from; None allows any host (a deployment that trusts its clients' networks).
    ``fetch_others=False`` accepts only URLs under the reader's own binding."""

    hosts: Collection[str] | None = None
    fetch_others: bool = True
    timeout: float = 60.0  # the whole fetch, connect to last byte

    def allows(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            return False
        if not self.fetch_others:
            return False
        if self.hosts is None:
            return True
        host = parts.hostname.lower()
        return host in self.hosts or f"{host}:{parts.port}" in self.hosts


@dataclass
class Received:
    """A payload that passed every check of the reading (not yet the session's, R-14.6-14.8)."""

    message: avp.Message
    size: int
    digest: str
    by_reference: bool


@dataclass
class PayloadReader:
    limits: avp.Limits
    max_inline_bytes: int
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    store: avp_http.MessageStore | None = None
    own_base: str | None = None  # this agent's binding base URL: references to it are local
    keys: Mapping[bytes, bytes] = field(default_factory=dict)
    require_auth: bool = False
    max_decoded_bytes: int = 1 << 32  # R-H5.7's bound, applied to what we keep of a payload

    # -- by value -------------------------------------------------------------------------
    def inline(self, data: bytes, *, size: int | None = None, digest: str | None = None,
               part: int | None = None, bound: Bound | None = None) -> Received:
        if len(data) > self.max_inline_bytes:
            raise AgentProblem("inline-too-large", f"{len(data)} bytes by value; send it by "
                               "reference", part=part, maximum=self.max_inline_bytes)
        h = hashlib.sha256(data).hexdigest()
        if (size is not None and size != len(data)) or (digest is not None and digest != h):
            raise AgentProblem("bad-part", "size or digest do not match the bytes", part=part)
        return Received(self.decode(data, len(data), part=part, bound=bound), len(data), h,
                        False)

    # -- by reference ---------------------------------------------------------------------
    def reference(self, url: str, size: object, digest: object, *,
                  part: int | None = None, bound: Bound | None = None) -> Received:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 \
                or not is_hex64(digest):
            raise AgentProblem("bad-part", "a reference needs an integer size and a digest "
                               "of 64 lowercase hex digits", part=part)
        assert isinstance(digest, str)
        if urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] != digest:
            raise AgentProblem("bad-part", "the URL does not name the digest's message",
                               part=part)
        if size > self.limits.max_message_bytes:
            raise AgentProblem("avp-error", f"{size} bytes > limit", code=E.LIMIT_MESSAGE,
                               part=part, maximum=self.limits.max_message_bytes)
        if self.own_base is not None and url.startswith(self.own_base.rstrip("/") + "/messages/"):
            data: bytes | bytearray = self._local(digest, part)
        elif self.policy.allows(url):
            data = self._fetch(url, size, part)
        else:
            raise AgentProblem("reference-refused", "the URL is outside this agent's fetch "
                               "policy", part=part)
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise AgentProblem("digest-mismatch", "the referenced bytes are not the message "
                               "the digest names", part=part)
        return Received(self.decode(data, size, part=part, bound=bound), size, digest, True)

    def _local(self, digest: str, part: int | None) -> bytes:
        entry = self.store.get(digest) if self.store is not None else None
        if entry is None:
            raise AgentProblem("reference-unreachable", "this agent's store holds no such "
                               "message", part=part)
        try:
            return entry.path.read_bytes()
        except OSError as e:  # evicted between get() and the read
            raise AgentProblem("reference-unreachable", "the stored message is gone",
                               part=part) from e

    def _fetch(self, url: str, size: int, part: int | None) -> bytearray:
        """One GET, no redirects, no credentials, at most ``size`` bytes (one more proves the
        body too long), within ``policy.timeout`` in total."""
        deadline = time.monotonic() + self.policy.timeout
        buf = bytearray()
        try:
            with httpx.Client(timeout=httpx.Timeout(self.policy.timeout), trust_env=False,
                              follow_redirects=False) as http, \
                    http.stream("GET", url, headers={"accept": avp_http.MEDIA_TYPE}) as r:
                if r.status_code != 200:
                    raise AgentProblem("reference-unreachable",
                                       f"the reference answered {r.status_code}", part=part)
                for chunk in r.iter_raw(READ_CHUNK):
                    buf += chunk
                    if len(buf) > size:
                        break  # longer than declared: it cannot hash to the digest
                    if time.monotonic() > deadline:
                        raise AgentProblem("reference-unreachable", "the fetch took longer "
                                           f"than {self.policy.timeout} s", part=part)
        except httpx.HTTPError as e:
            raise AgentProblem("reference-unreachable", f"fetching the reference failed: "
                               f"{type(e).__name__}", part=part) from e
        return buf  # not copied into bytes: the one copy of the payload we hold

    # -- decoding -------------------------------------------------------------------------
    def decode(self, data: bytes | bytearray, size: int, *, part: int | None = None,
               bound: Bound | None = None) -> avp.Message:
        """Verified decoding under our limits (``max_message_bytes`` = the declared size) and
        keys, keeping at most ``max_decoded_bytes`` of decoded tensors.

        ``bound(header)``, given, sees the message at its HEADER (kind, entries, layer table;
        no tensor yet) and refuses it (``AvpError``, ``AgentProblem``) or returns the largest
        tensor, in decoded bytes, its receiver can use (None: no bound beyond our limits):
        the message is then decoded with that ``max_tensor_bytes``, so a tensor beyond it is
        ``LIMIT_TENSOR`` from its descriptor, before it is decompressed (R-A2A4.9)."""
        limits = replace(self.limits, max_message_bytes=min(size, self.limits.max_message_bytes))
        view = memoryview(data)
        try:
            return self._decode(view, limits, part, bound)
        except _Tighter as t:  # the bound is below our limits and the message has tensors
            most = t.most
        # The first pass stopped at the HEADER (nothing inflated, nothing of it kept); the
        # second decodes the message with the responder's tensor bound.
        return self._decode(view, replace(limits, max_tensor_bytes=most), part, None)

    def _decode(self, view: memoryview, limits: avp.Limits, part: int | None,
                bound: Bound | None) -> avp.Message:
        dec = avp.Decoder(limits, keys=dict(self.keys), require_auth=self.require_auth)
        header: avp.HeaderEvent | None = None
        end: avp.EndEvent | None = None
        tensors: list[avp.Tensor] = []
        kept = 0

        def drain() -> None:
            nonlocal header, end, kept
            while (ev := dec.next_event()) is not avp.NEED_DATA and ev is not avp.END_OF_STREAM:
                if isinstance(ev, avp.HeaderEvent):
                    header = ev
                    most = None if bound is None else bound(avp.Message(ev.kind, ev.entries,
                                                                        ev.layers))
                    if most is not None and most < limits.max_tensor_bytes and ev.tensor_count:
                        raise _Tighter(most)  # before any tensor event: nothing inflated
                elif isinstance(ev, avp.TensorEvent):
                    kept += ev.tensor.raw_length
                    if kept > self.max_decoded_bytes:
                        raise AgentProblem("decoded-too-large", "the payload's tensors decode "
                                           f"to more than {self.max_decoded_bytes} bytes",
                                           part=part, maximum=self.max_decoded_bytes)
                    tensors.append(ev.tensor)
                elif isinstance(ev, avp.EndEvent):
                    end = ev

        try:
            # In pieces, drained in between: the decoder's buffer holds one piece plus what a
            # structure needs (max_buffer_bytes), not a second copy of the message.
            for i in range(0, len(view), READ_CHUNK):
                dec.feed(view[i:i + READ_CHUNK])
                drain()
            dec.end_of_input()
            drain()
        except avp.AvpError as e:
            raise AgentProblem.from_avp(e, part=part) from e
        if header is None or end is None:  # the decoder raises TRUNCATED first; belt and braces
            raise AgentProblem("avp-error", "the message ended early", code=E.TRUNCATED,
                               part=part)
        return avp.Message(header.kind, header.entries, header.layers, tensors,
                           authenticated=end.authenticated, auth_tag=end.auth_tag,
                           minor=end.minor, skipped_sections=end.skipped_sections)


Bound = Callable[[avp.Message], "int | None"]


class _Tighter(Exception):
    def __init__(self, most: int) -> None:
        self.most = most


class PayloadHost:
    """A sender's own HTTP binding server for by-reference payloads (R-A2A4.4): an ``AvpApp``
    with a ``MessageStore`` on a background hypercorn thread. ``put(data)`` stores a message and
    returns its ``messages/{digest}`` URL; the message stays until the host closes or evicts it.

        with PayloadHost() as host:
            url = host.put(kv_bytes)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 store: avp_http.MessageStore | None = None) -> None:
        self.store = store if store is not None else avp_http.MessageStore()
        self.app = avp_http.AvpApp(avp_http.Mailbox(name="avp-payload-host"),
                                   avp_http.ServerConfig(store=self.store))
        self._server = avp_http.BackgroundServer(self.app, host, port)
        self.url = self._server.url

    def put(self, data: bytes | bytearray | memoryview) -> str:
        digest = self.store.put_bytes(data)  # decoded first: only valid messages are hosted
        return f"{self.url}/messages/{digest}"

    def __enter__(self) -> PayloadHost:
        self._server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.__exit__(None, None, None)
        self.store.close()
