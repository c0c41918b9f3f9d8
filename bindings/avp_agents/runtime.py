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
from avp_runtime import admit
from avp_runtime import handshake as hs
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

    def bound_payload(self, header: avp.Message, mode: avp.Mode) -> int | None:
        """The runtime's own HEADER checks, and its bounds (what ``import_``, ``proj.receive``
        and ``prompts.read_text`` read bytes with): a KV-cache's CONTEXT_LENGTH against the
        model's maximum, its MODEL_ID and layer table (admit.check_header), each tensor at most
        the largest this model's cache holds; a projected state at most the model's positions
        of hidden states; a TEXT payload no tensor at all."""
        c = self.agent.connector
        super().bound_payload(header, mode)
        if header.kind == avp.Kind.KV_CACHE:
            admit.check_header(header, c.model_id, c.spec)
            return int(c.spec.limits(1).max_tensor_bytes)
        if header.kind == avp.Kind.HIDDEN_STATE:
            hidden = int(c.model.config.get_text_config().hidden_size)
            room = max(c.spec.max_context - self.agent.max_new_tokens, 1)
            return int(room * max(4 * hidden, 8))
        return 0  # TEXT (HELLO and ERROR carry no tensors either, R-10.13)

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


class RuntimeInitiator:
    """The reference runtime's agent as the AVP side of an A2A or MCP client (an
    ``a2a_client.Initiator``): the runtime's HELLO (with its VOCABULARY), its own check of the
    ACCEPT (R-14.2) and the payload of the resolved mode (``Agent.payload``: the KV-cache after
    reading the question and ``steps`` latent steps, a projected state, or TEXT)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._init: hs.Initiator | None = None
        self._res: hs.Resolution | None = None

    @classmethod
    def load(cls, model: str, *, name: str | None = None, threads: int = 1,
             steps: int = 4, max_new_tokens: int = 24) -> RuntimeInitiator:
        torch.set_num_threads(threads)
        return cls(Agent(load_connector(model), name or f"avp-client-{model}", steps=steps,
                         max_new_tokens=max_new_tokens))

    def hello(self) -> avp.Message:
        self._init = hs.Initiator(self.agent.local)  # a fresh nonce per handshake
        self._res = None
        hello: avp.Message = self._init.hello()
        return hello

    def accept(self, msg: avp.Message) -> avp.Mode:
        if self._init is None:
            raise avp.AvpError(avp.ErrorCode.KIND_CONSTRAINT, "an ACCEPT without our HELLO")
        self._res = self._init.handle_accept(msg)
        mode: avp.Mode = self._res.mode
        return mode

    def payload(self, mode: avp.Mode, text: str) -> bytes | None:
        """The AVP message to hand over beside ``text`` (None in a TEXT session: the text is
        the payload, R-A2A3.9). Checked against the peer's ACCEPT before it leaves (R-14.6)."""
        if self._res is None or mode == avp.Mode.TEXT:
            return None
        data: bytes = self.agent.payload(self._res, text)
        assert self._res.peer_message is not None
        avp.check_payload(avp.decode(data, verify=False), mode, self._res.peer_message,
                          len(data))
        return data
