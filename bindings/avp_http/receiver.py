"""What an AVP-over-HTTP server hosts: a ``Receiver`` (spec/avp-http.md 2.1, 2.2).

The server does the HTTP and decoding work and the binding's checks; a receiver decides what its
side of the protocol is. Override any of:

- ``negotiate(hello)``: resolve the mode from a HELLO (14.3) and build the ACCEPT. The default
  resolves with the codec's ``verify_peer`` from ``offer()``, the receiver's own identity and
  capabilities, never from values copied from the peer (R-14.1).
- ``check_header(session, header)``: refuse a payload at its HEADER, before any tensor arrives.
  The default checks MODEL_ID against ``model_id`` (R-14.8); the server itself has already
  checked that the kind is a payload of the session's mode.
- ``tensor_check(session, header)``: called at the HEADER (after ``check_header``); may return
  a check that runs on each tensor's descriptor (role, layer, dtype, shape, codec, raw_length)
  before its data is received or decompressed (R-H2.14), with state for this one message (a
  model's per-layer counts, say). The default returns None.
- ``on_tensor(session, index, tensor)``: act on a tensor as it arrives (install a layer, start a
  forward pass). Provisional until the end event (R-11.2): a later error discards the message.
- ``deliver(session, msg, info)``: the whole, valid message (the end event has passed); return
  an ``Answer`` or None (204). Runs in a worker thread, one call at a time per receiver unless
  ``concurrent_deliveries`` says otherwise, so a model need not be thread-safe.

``Mailbox`` is the model-less receiver ``avp-serve`` runs without ``--model``: TEXT (and
KV_CACHE/PROJECTION when given an identity), keeps every delivered message in the store and
answers with its digest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import avp_codec as avp

from ._session import Negotiated, Session


@dataclass
class Answer:
    """A delivery's answer (R-H2.9): an AVP message (a payload of the session's mode, streamed
    with StreamEncoder) or bytes of any media type."""

    body: bytes | avp.Message
    content_type: str = "application/json"
    status: int = 200

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> Answer:
        return cls(json.dumps(obj, separators=(",", ":")).encode(), "application/json", status)

    @classmethod
    def message(cls, msg: avp.Message) -> Answer:
        return cls(msg, "application/avp")


@dataclass(frozen=True)
class Delivery:
    """Facts about a delivered message that are not in the message."""

    length: int  # encoded bytes
    digest: str | None  # message digest when the server stored it (keep_deliveries)
    by_reference: bool  # delivered with AVP-Message-Digest (2.2)


class Receiver:
    name = "avp-http-receiver"
    model_id: bytes | None = None
    tokenizer_id: bytes | None = None
    modes: tuple[int, ...] = (int(avp.Mode.TEXT),)
    keep_deliveries = False  # store every accepted delivery (and index KV prefixes, 2.4)
    concurrent_deliveries = 1

    def offer(self, max_message_bytes: int) -> avp.Message:
        """This side's capabilities as a HELLO (the local values of 14.3), fresh nonce."""
        return avp.hello_message(
            self.name, modes=sorted(set(self.modes) | {int(avp.Mode.TEXT)}),
            max_message_bytes=max_message_bytes, model_id=self.model_id,
            tokenizer_id=self.tokenizer_id, nonce=os.urandom(16))

    def negotiate(self, hello: avp.Message, max_message_bytes: int) -> Negotiated:
        own = self.offer(max_message_bytes)
        mode = avp.verify_peer(own, hello, avp.Kind.HELLO)  # AvpError refuses (2.1)
        g = own.get
        accept = avp.accept_message(
            self.name, mode, model_id=self.model_id, tokenizer_id=self.tokenizer_id,
            dtypes=g(avp.MetaKey.CAP_DTYPES), codecs=g(avp.MetaKey.CAP_CODECS),  # type: ignore[arg-type]
            modes=g(avp.MetaKey.CAP_MODES), max_message_bytes=max_message_bytes,  # type: ignore[arg-type]
            nonce=g(avp.MetaKey.NONCE))  # type: ignore[arg-type]
        return Negotiated(accept, mode, accept)

    def check_header(self, session: Session, header: avp.HeaderEvent) -> None:
        if self.model_id is not None:
            avp.check_model_id(avp.Message(header.kind, header.entries), self.model_id,
                               self.tokenizer_id)

    def tensor_check(self, session: Session, header: avp.HeaderEvent
                     ) -> Callable[[int, avp.Tensor], None] | None:
        return None

    def on_tensor(self, session: Session, index: int, tensor: avp.Tensor) -> None:
        return None

    def deliver(self, session: Session, msg: avp.Message, info: Delivery) -> Answer | None:
        return None


class Mailbox(Receiver):
    """Keeps what it is given; answers ``{"digest", "kind", "bytes"}``."""

    name = "avp-mailbox"
    keep_deliveries = True
    concurrent_deliveries = 8

    def __init__(self, *, name: str | None = None, model_id: bytes | None = None,
                 tokenizer_id: bytes | None = None) -> None:
        if name is not None:
            self.name = name
        self.model_id = model_id
        self.tokenizer_id = tokenizer_id
        if model_id is not None:
            self.modes = (int(avp.Mode.KV_CACHE), int(avp.Mode.TEXT))

    def deliver(self, session: Session, msg: avp.Message, info: Delivery) -> Answer | None:
        return Answer.json({"digest": info.digest, "kind": avp.Kind(msg.kind).name,
                            "bytes": info.length})
