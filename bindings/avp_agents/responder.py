"""What the A2A agent and the MCP server host: a ``Responder`` (the AVP responder of 14.2 plus
the application that answers).

It extends ``avp_http.Receiver`` (identity, ``offer``, ``negotiate``: the handshake of 14.3)
with the two things an agent protocol asks of it:

- ``respond(text, payload, mode)``: the answer to a request whose text is ``text`` and whose AVP
  payload (already decoded, verified and checked, R-A2A3.10) is ``payload``, or None for a
  text-only request. Blocking; the bindings call it on one worker thread.
- ``think(text, steps)``: an AVP payload of the responder's own (MCP's ``avp_think``), or
  ``UNSUPPORTED_CAPABILITY`` when it has none.

``check(msg, mode, offered, size)`` applies R-14.6 to R-14.8 to a payload before ``respond``;
``bound_payload(header, mode)`` refuses one at its HEADER, before any tensor is decompressed,
and bounds the tensors that are (R-A2A4.9, R-MCP4.4).
``EchoResponder`` is the model-less responder: it reports what it was given, which is what
protocol tests and a model-less ``--model none`` server need. The reference runtime's agent is
``avp_agents.runtime.RuntimeResponder`` (imports torch).
"""

from __future__ import annotations

import hashlib

import avp_http

import avp_codec as avp

# The payload kind of each mode (14.1); HIDDEN_STATE with HIDDEN_SOURCE 1 rides in KV_CACHE.
PAYLOAD_KIND = {avp.Mode.KV_CACHE: avp.Kind.KV_CACHE, avp.Mode.PROJECTION: avp.Kind.HIDDEN_STATE,
                avp.Mode.TEXT: avp.Kind.TEXT}


class Responder(avp_http.Receiver):
    model_name: str | None = None

    def respond(self, text: str, payload: avp.Message | None, mode: avp.Mode | None) -> str:
        raise NotImplementedError

    def think(self, text: str, steps: int) -> avp.Message:
        raise avp.AvpError(avp.ErrorCode.UNSUPPORTED_CAPABILITY, "this agent makes no payloads")

    def check(self, msg: avp.Message, mode: avp.Mode, offered: avp.Message, size: int) -> None:
        """R-14.6 (kind of the mode), R-14.7 (what we offered), R-14.8 (our own identity)."""
        avp.check_payload(msg, mode, offered, size)
        if self.model_id is not None and msg.kind in (avp.Kind.KV_CACHE, avp.Kind.HIDDEN_STATE):
            avp.check_model_id(msg, self.model_id, self.tokenizer_id)

    def bound_payload(self, header: avp.Message, mode: avp.Mode) -> int | None:
        """A payload of ``mode`` at its HEADER (kind, entries, layer table; no tensor read
        yet): refuse what this responder cannot use (``AvpError``) before anything is
        decompressed, and return the largest tensor, in decoded bytes, it can use in such a
        payload (None: no bound beyond the binding's limits). The default checks identities
        (R-14.8); a responder with a model bounds tensors by the model's sizes."""
        if self.model_id is not None and header.kind in (avp.Kind.KV_CACHE,
                                                         avp.Kind.HIDDEN_STATE):
            avp.check_model_id(header, self.model_id, self.tokenizer_id)
        return None

    def mode_for(self, msg: avp.Message) -> avp.Mode:
        """The mode a payload arriving without a handshake (MCP) belongs to; refused with
        UNSUPPORTED_CAPABILITY when it is no payload of a mode this responder lists."""
        modes = set(self.modes) | {int(avp.Mode.TEXT)}
        if msg.kind == avp.Kind.HIDDEN_STATE:
            mode = avp.Mode.PROJECTION if msg.get(avp.MetaKey.HIDDEN_SOURCE) == 2 \
                else avp.Mode.KV_CACHE
        else:
            mode = next((m for m, k in PAYLOAD_KIND.items() if k == msg.kind), avp.Mode.TEXT)
            if PAYLOAD_KIND[mode] != msg.kind:
                raise avp.AvpError(avp.ErrorCode.UNSUPPORTED_CAPABILITY,
                                   f"{avp.Kind(msg.kind).name} is not a payload")
        if int(mode) not in modes:
            raise avp.AvpError(avp.ErrorCode.UNSUPPORTED_CAPABILITY,
                               f"{mode.name} is not a mode of this agent")
        return mode


class EchoResponder(Responder):
    """A model-less responder with a made-up identity: KV_CACHE and TEXT when given a
    ``model_id``, TEXT only otherwise. Its answer says what it received; ``think`` makes a
    KV_CACHE of about ``think_bytes`` x (1 + steps) bytes of float32 values for its own model id."""

    def __init__(self, *, name: str = "avp-echo", model_id: bytes | None = None,
                 tokenizer_id: bytes | None = None, think_bytes: int = 4096) -> None:
        self.name = name
        self.model_id = model_id
        self.tokenizer_id = tokenizer_id
        self.model_name = "echo"
        self.think_bytes = think_bytes
        if model_id is not None:
            self.modes = (int(avp.Mode.KV_CACHE), int(avp.Mode.TEXT))
        self.received: list[tuple[str, avp.Kind | None]] = []

    def respond(self, text: str, payload: avp.Message | None, mode: avp.Mode | None) -> str:
        kind = avp.Kind(payload.kind) if payload is not None else None
        self.received.append((text, kind))
        if payload is None:
            return f"text only: {text}"
        return f"{kind.name if kind else '-'} with {len(payload.tensors)} tensors: {text}"

    def think(self, text: str, steps: int) -> avp.Message:
        if self.model_id is None:
            return super().think(text, steps)
        # 2 x [1, 1, tokens, 64] float32 per layer; latent steps add positions, as they do
        # for a model (think_bytes for steps=0).
        tokens = max(1, self.think_bytes // 512) * (1 + steps)
        return echo_kv(self.model_id, tokens, seed=text.encode() + bytes([steps % 256]))


def echo_kv(model_id: bytes, tokens: int, *, seed: bytes = b"", layers: int = 1) -> avp.Message:
    """A valid one-head KV_CACHE of ``tokens`` positions for ``model_id`` (float32; its values
    are derived from ``seed`` so that different seeds give different digests)."""
    import numpy as np

    fill = np.frombuffer(hashlib.sha256(seed).digest(), dtype=np.uint8)[0] / 255.0
    arr = np.full((1, 1, tokens, 64), fill, dtype=np.float32)
    ids = (np.arange(tokens, dtype=np.int64).reshape(1, tokens) % 1000).astype(np.int32)
    return avp.kv_cache_from_arrays(model_id, [arr] * layers, [arr.copy()] * layers,
                                    token_ids=ids)


def load_responder(model: str, *, name: str | None = None, threads: int = 1,
                   max_new_tokens: int = 24) -> Responder:
    """'echo' is the model-less ``EchoResponder`` (a fixed made-up identity, so two processes
    agree on it); any other name loads the reference runtime's agent (torch)."""
    if model == "echo":
        fake = hashlib.sha256(b"avp-agents echo model").digest()
        return EchoResponder(name=name or "avp-echo", model_id=fake)
    from .runtime import RuntimeResponder

    return RuntimeResponder.load(model, name=name, threads=threads,
                                 max_new_tokens=max_new_tokens)
