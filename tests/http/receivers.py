"""Receivers the test servers load with ``avp-serve --app receivers:<name>`` (this directory is
on the server process's PYTHONPATH). Each is a small, real ``avp_http.Receiver``."""

from __future__ import annotations

import time
from collections.abc import Callable

import avp_http

import avp_codec as avp

MODEL_ID = bytes(range(32))  # the identity the test messages carry
OTHER_MODEL = bytes(32)


def kv_mailbox() -> avp_http.Receiver:
    """A Mailbox that offers KV_CACHE for MODEL_ID (and TEXT)."""
    return avp_http.Mailbox(name="test-mailbox", model_id=MODEL_ID)


class _Narrow(avp_http.Mailbox):
    """Offers only float16 and the raw codec (R-14.7 per-tensor checks)."""

    def offer(self, max_message_bytes: int) -> avp.Message:
        return avp.hello_message(self.name, modes=sorted(self.modes), dtypes=[avp.Dtype.FLOAT16],
                                 codecs=[avp.Codec.RAW], max_message_bytes=max_message_bytes,
                                 model_id=self.model_id)


def narrow() -> avp_http.Receiver:
    return _Narrow(name="narrow", model_id=MODEL_ID)


class _Slow(avp_http.Mailbox):
    """Takes a while to answer (idempotency in progress) and numbers its answers, so a replay
    is told from a second run by its body."""

    calls = 0

    def deliver(self, session: avp_http.Session, msg: avp.Message,
                info: avp_http.Delivery) -> avp_http.Answer | None:
        time.sleep(2.0)
        _Slow.calls += 1
        return avp_http.Answer.json({"call": _Slow.calls, "digest": info.digest})


def slow() -> avp_http.Receiver:
    return _Slow(name="slow", model_id=MODEL_ID)


class _Echo(avp_http.Mailbox):
    """Answers a TEXT payload with a TEXT payload (an application/avp answer, R-H2.9), and a
    KV_CACHE with an (invalid for the session) TEXT, which the server must refuse to send."""

    def deliver(self, session: avp_http.Session, msg: avp.Message,
                info: avp_http.Delivery) -> avp_http.Answer | None:
        if msg.kind == avp.Kind.TEXT:
            return avp_http.Answer.message(avp.text_message(f"echo: {msg.get(avp.MetaKey.TEXT)}"))
        return avp_http.Answer.message(avp.text_message("not a KV payload"))


def echo() -> avp_http.Receiver:
    return _Echo(name="echo", model_id=MODEL_ID)


class _Broken(avp_http.Mailbox):
    def deliver(self, session: avp_http.Session, msg: avp.Message,
                info: avp_http.Delivery) -> avp_http.Answer | None:
        raise RuntimeError("a receiver bug")


def broken() -> avp_http.Receiver:
    return _Broken(name="broken")


class _Picky(avp_http.Mailbox):
    """Checks each KV tensor's descriptor (R-H2.14): a KEY or VALUE with other than 2 heads is
    MODEL_MISMATCH before its data is read; counts the tensors that reached ``on_tensor``."""

    seen = 0

    def tensor_check(self, session: avp_http.Session, header: avp.HeaderEvent
                     ) -> Callable[[int, avp.Tensor], None] | None:
        if header.kind != avp.Kind.KV_CACHE:
            return None

        def check(index: int, t: avp.Tensor) -> None:
            assert t.stored_length and not len(t.stored)  # a descriptor: no data yet
            if t.role in (avp.Role.KEY, avp.Role.VALUE) and t.shape[1] != 2:
                raise avp.AvpError(avp.ErrorCode.MODEL_MISMATCH,
                                   f"{t.shape[1]} heads; this receiver's model has 2",
                                   path=f"tensor[{index}]")
        return check

    def on_tensor(self, session: avp_http.Session, index: int, tensor: avp.Tensor) -> None:
        _Picky.seen += 1

    def deliver(self, session: avp_http.Session, msg: avp.Message,
                info: avp_http.Delivery) -> avp_http.Answer | None:
        return avp_http.Answer.json({"seen": _Picky.seen, "digest": info.digest})


def picky() -> avp_http.Receiver:
    return _Picky(name="picky", model_id=MODEL_ID)
