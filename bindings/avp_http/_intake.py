"""A request body, streamed into the sans-IO decoder (spec/avp-http.md section 4).

``BodyReader`` turns ASGI ``http.request`` events into chunks while bounding every wait
(R-H5.5): each piece must arrive within ``chunk_timeout`` and the whole body at an average rate of
at least ``min_rate`` bytes/s after a ``grace`` period, so a peer that sends one byte every few
seconds is refused in about ``grace`` seconds whatever it declared. ``Intake`` feeds the chunks to
``avp.Decoder`` and reacts to its events: the caller's checks run at the HEADER, at each tensor's
descriptor (before its data is received or decompressed) and at each tensor (R-H2.7, R-H4.2),
tensors are kept only when asked, and the bytes go to a ``StoreWriter`` when the message is to be
stored. One request uses one ``Intake``. An intake that keeps no tensors has its decoder verify
compressed tensors without keeping their output (``keep_raw=False``, R-H4.3): storing a message
then costs its stored bytes, not what its tensors declare they inflate to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import avp_codec as avp

from ._media import kv_prefix_key
from ._problem import HttpProblem
from .store import StoreWriter

Receive = Callable[[], Awaitable[dict[str, Any]]]
HeaderCheck = Callable[[avp.HeaderEvent], None]
TensorCheck = Callable[[int, avp.Tensor], None]


class ClientGone(Exception):
    """The peer disconnected before the body ended; nobody is left to answer."""


@dataclass
class Timing:
    chunk_timeout: float = 30.0  # longest wait for the next piece of a body
    grace: float = 30.0  # seconds a body may take before the minimum rate applies
    min_rate: float = 32 * 1024  # bytes/s a body must average after the grace period


class BodyReader:
    def __init__(self, receive: Receive, timing: Timing) -> None:
        self._receive = receive
        self._t = timing
        self.received = 0
        self.ended = False

    async def chunks(self) -> AsyncIterator[bytes]:
        start = time.monotonic()
        t = self._t
        while not self.ended:
            budget = start + t.grace + self.received / t.min_rate - time.monotonic()
            wait = min(t.chunk_timeout, budget)
            if wait <= 0:
                raise HttpProblem("request-timeout", "the request body arrives too slowly")
            try:
                async with asyncio.timeout(wait):  # no task per wait, unlike wait_for
                    event = await self._receive()
            except TimeoutError:
                raise HttpProblem("request-timeout",
                                  "no part of the request body arrived in time") from None
            if event["type"] == "http.disconnect":
                raise ClientGone
            self.ended = not event.get("more_body", False)
            body = event.get("body", b"")
            if body:
                self.received += len(body)
                yield body


@dataclass
class Received:
    """What the decoder produced for one body."""

    header: avp.HeaderEvent
    tensors: list[avp.Tensor]
    end: avp.EndEvent
    length: int
    token_ids: avp.Tensor | None = None
    digest: str | None = None
    stored_new: bool = False

    def message(self) -> avp.Message:
        h, e = self.header, self.end
        return avp.Message(h.kind, h.entries, h.layers, self.tensors,
                           authenticated=e.authenticated, auth_tag=e.auth_tag, minor=e.minor,
                           skipped_sections=e.skipped_sections)

    def prefix(self) -> tuple[str, str, int] | None:
        return kv_prefix_key(self.header, self.token_ids)


@dataclass
class Intake:
    limits: avp.Limits
    keys: dict[bytes, bytes] = field(default_factory=dict)
    require_auth: bool = False
    keep_tensors: bool = True
    writer: StoreWriter | None = None
    on_header: HeaderCheck | None = None
    on_tensor: TensorCheck | None = None
    on_descriptor: TensorCheck | None = None  # a tensor whose data has not been read (R-H2.14)
    # Bound on the decoded bytes of the tensors kept (R-H5.7): compressed tensors inflate up
    # to max_tensor_bytes each, so the wire size alone does not bound what keeping them costs.
    max_decoded_bytes: int = 1 << 32

    def __post_init__(self) -> None:
        self._dec = avp.Decoder(self.limits, verify=True, keys=self.keys,
                                require_auth=self.require_auth, keep_raw=self.keep_tensors,
                                descriptors=self.on_descriptor is not None)
        self._header: avp.HeaderEvent | None = None
        self._tensors: list[avp.Tensor] = []
        self._token_ids: avp.Tensor | None = None
        self._end: avp.EndEvent | None = None
        self.length = 0
        self.decoded = 0

    def feed(self, chunks: list[bytes]) -> None:
        """Decode what ``chunks`` completes; raises AvpError at the first failed check."""
        for c in chunks:
            self._dec.feed(c)
            self.length += len(c)
            if self.writer is not None:
                self.writer.write(c)
        self._drain()

    def finish(self) -> Received:
        """The body ended: an incomplete message is TRUNCATED (R-H4.1, section 4)."""
        self._dec.end_of_input()
        self._drain()
        if self._header is None or self._end is None:  # pragma: no cover - decoder raises
            raise avp.AvpError(avp.ErrorCode.TRUNCATED, "the body ended inside the message",
                               offset=self.length)
        return Received(self._header, self._tensors, self._end, self.length, self._token_ids)

    def _drain(self) -> None:
        while True:
            ev = self._dec.next_event()
            if ev is avp.NEED_DATA or ev is avp.END_OF_STREAM:
                return
            if isinstance(ev, avp.HeaderEvent):
                self._header = ev
                if self.on_header is not None:
                    self.on_header(ev)
            elif isinstance(ev, avp.DescriptorEvent):
                assert self.on_descriptor is not None  # only then does the decoder send one
                self.on_descriptor(ev.index, ev.tensor)
            elif isinstance(ev, avp.TensorEvent):
                if self.on_tensor is not None:
                    self.on_tensor(ev.index, ev.tensor)
                if ev.tensor.role == avp.Role.TOKEN_IDS:
                    self._token_ids = ev.tensor
                if self.keep_tensors:
                    self.decoded += ev.tensor.raw_length
                    if self.decoded > self.max_decoded_bytes:
                        raise HttpProblem("decoded-too-large",
                                          f"the tensors decode to more than "
                                          f"{self.max_decoded_bytes} bytes",
                                          extra={"maximum": self.max_decoded_bytes})
                    self._tensors.append(ev.tensor)
            elif isinstance(ev, avp.EndEvent):
                self._end = ev
                return


async def run_intake(body: BodyReader, intake: Intake) -> Received:
    """Stream ``body`` through ``intake``, decoding each piece as it arrives.

    Decoding runs on the event loop, piece by piece: each step is bounded by the limits (one
    tensor's CRC and, for compressed tensors, its decompression, at most ``max_tensor_bytes``),
    and a worker thread would buy no parallelism under the GIL while its hand-offs cost more
    than the copies they move (measured: 10-20% more CPU per body)."""
    async for chunk in body.chunks():
        intake.feed([chunk])
    return intake.finish()
