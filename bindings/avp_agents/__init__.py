"""avp_agents: AVP inside the agent protocols people run (spec/avp-a2a.md, spec/avp-mcp.md).

Public API (everything in underscore modules is private):

    from avp_agents import A2AServer, A2AConfig, A2AClient, Handoff        # A2A extension
    from avp_agents import MCPServer, MCPConfig                            # MCP binding
    from avp_agents import Responder, EchoResponder, PayloadReader, PayloadHost, FetchPolicy
    from avp_agents import AgentProblem

- ``A2AServer`` is an A2A agent on the official ``a2a-sdk`` (card, JSON-RPC, the HTTP binding
  mounted at ``/avp/v1``) hosting a ``Responder``; ``A2AClient`` discovers a card, activates the
  extension, runs the handshake and hands over a payload by value or by reference, or falls back
  to text when the agent does not declare the extension.
- ``MCPServer`` is an MCP server on the official ``mcp`` SDK exposing AVP payloads as
  resources and the tools ``avp_answer`` / ``avp_think``.
- ``Responder`` is what both host (``avp_http.Receiver`` plus ``respond``/``think``);
  ``EchoResponder`` is the model-less one, ``avp_agents.runtime.RuntimeResponder`` the reference
  runtime's agent (imports torch).
- ``AgentProblem`` is every refusal (problem slug, AVP code); ``PayloadReader`` reads payloads by
  value and by reference under a ``FetchPolicy``.

The codec (``avp_codec``) never imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._ext import A2A_PREFIX, A2A_URI, MCP_EXTENSION, MEDIA_TYPE, AgentProblem, AvpParams
from .payload import FetchPolicy, PayloadHost, PayloadReader, Received
from .responder import EchoResponder, Responder

if TYPE_CHECKING:
    from .a2a_client import A2AClient, Handoff
    from .a2a_server import A2AConfig, A2AServer, AvpExecutor
    from .mcp_server import MCPConfig, MCPServer

# The protocol modules load on first use: ``python -m avp_agents.a2a_server`` must not find
# itself imported by the package first, and the MCP side need not load the A2A SDK.
_LAZY = {"A2AClient": "a2a_client", "Handoff": "a2a_client", "A2AConfig": "a2a_server",
         "A2AServer": "a2a_server", "AvpExecutor": "a2a_server", "MCPConfig": "mcp_server",
         "MCPServer": "mcp_server"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)

__all__ = [
    "A2A_URI", "A2A_PREFIX", "MCP_EXTENSION", "MEDIA_TYPE", "AgentProblem", "AvpParams",
    "A2AServer", "A2AConfig", "AvpExecutor", "A2AClient", "Handoff", "MCPConfig", "MCPServer",
    "FetchPolicy", "PayloadHost", "PayloadReader", "Received", "Responder", "EchoResponder",
]
