"""Receivers the test servers load with ``avp-serve --app receivers:<name>`` (this directory is
on the server process's PYTHONPATH). Each is a small, real ``avp_http.Receiver``."""

from __future__ import annotations

import time

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
