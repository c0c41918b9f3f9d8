"""avp_agents: AVP inside the agent protocols people run (spec/avp-a2a.md, spec/avp-mcp.md).

Public API (everything in underscore modules is private):

    from avp_agents import A2AServer, A2AConfig, A2AClient, Handoff        # A2A extension
    from avp_agents import MCPConfig, build_mcp_server                     # MCP binding
    from avp_agents import Responder, EchoResponder, PayloadReader, FetchPolicy, AgentProblem

- ``A2AServer`` is an A2A agent on the official ``a2a-sdk`` (card, JSON-RPC, the HTTP binding
  mounted at ``/avp/v1``) hosting a ``Responder``; ``A2AClient`` discovers a card, activates the
  extension, runs the handshake and hands over a payload by value or by reference, or falls back
  to text when the agent does not declare the extension.
- ``build_mcp_server`` makes an MCP server on the official ``mcp`` SDK exposing AVP payloads as
  resources and the tools ``avp_answer`` / ``avp_think``.
- ``Responder`` is what both host (``avp_http.Receiver`` plus ``respond``/``think``);
  ``EchoResponder`` is the model-less one, ``avp_agents.runtime.RuntimeResponder`` the reference
  runtime's agent (imports torch).
- ``AgentProblem`` is every refusal (problem slug, AVP code); ``PayloadReader`` reads payloads by
  value and by reference under a ``FetchPolicy``.

The codec (``avp_codec``) never imports this package.
"""

from __future__ import annotations

from ._ext import A2A_PREFIX, A2A_URI, MCP_EXTENSION, MEDIA_TYPE, AgentProblem, AvpParams
from .a2a_server import A2AConfig, A2AServer, AvpExecutor
from .payload import FetchPolicy, PayloadReader, Received
from .responder import EchoResponder, Responder

__all__ = [
    "A2A_URI", "A2A_PREFIX", "MCP_EXTENSION", "MEDIA_TYPE", "AgentProblem", "AvpParams",
    "A2AServer", "A2AConfig", "AvpExecutor", "FetchPolicy", "PayloadReader", "Received",
    "Responder", "EchoResponder",
]
