"""The reference runtime's agent (``avp_runtime.agent.Agent``, Transformers) as a ``Responder``.
Imports torch: the bindings import this module only when asked to serve a model.

The handshake is the runtime's own (``AgentReceiver.negotiate``: CAP_MODES, and the VOCABULARY a
PROJECTION between different tokenizers needs, R-14.10). ``respond`` continues from an imported
KV-cache with the request's text as the next user turn, reads a projected hidden state (whose
TOKEN_IDS already carry the question), or answers the text alone. ``think`` is the agent's
KV-cache after reading the text and ``steps`` latent steps.
"""

from __future__ import annotations

import avp_http
import torch
from avp_runtime.agent import Agent, AgentReceiver, load_connector

import avp_codec as avp

from .responder import Responder


class RuntimeResponder(Responder):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._receiver = AgentReceiver(agent)
        c = agent.connector
        self.name = agent.name
        self.model_id = c.model_id
        self.tokenizer_id = c.tokenizer_id
        self.model_name = c.name
        self.modes = agent.modes

    @classmethod
    def load(cls, model: str, *, name: str | None = None, threads: int = 1,
             max_new_tokens: int = 24, steps: int = 8) -> RuntimeResponder:
        torch.set_num_threads(threads)
        return cls(Agent(load_connector(model), name or f"avp-{model}",
                         max_new_tokens=max_new_tokens, steps=steps))

    def negotiate(self, hello: avp.Message, max_message_bytes: int) -> avp_http.Negotiated:
        negotiated: avp_http.Negotiated = self._receiver.negotiate(hello, max_message_bytes)
        return negotiated

    def respond(self, text: str, payload: avp.Message | None, mode: avp.Mode | None) -> str:
        agent, c = self.agent, self.agent.connector
        if payload is not None and payload.kind == avp.Kind.KV_CACHE:
            ctx = c.import_(payload)  # MODEL_MISMATCH unless the cache is from our own model
            return str(c.generate(text, context=ctx, max_new_tokens=agent.max_new_tokens).text)
        if payload is not None and payload.kind == avp.Kind.HIDDEN_STATE:
            return str(agent.answer(payload))
        if payload is not None and payload.kind == avp.Kind.TEXT:
            text = f"{payload.get(avp.MetaKey.TEXT)!s}\n\n{text}"
        return str(c.generate(text, max_new_tokens=agent.max_new_tokens).text)

    def think(self, text: str, steps: int) -> avp.Message:
        c = self.agent.connector
        return avp.decode(c.export_bytes(c.think(text, steps)))
