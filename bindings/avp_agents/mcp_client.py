"""The client side of AVP over MCP (spec/avp-mcp.md), for use with the SDK's own ``mcp.Client``.

    async with mcp.Client(f"{base}/mcp", extensions=[client_extension()]) as c:
        params = server_params(c)                 # None: no AVP, call the tools with text only
        arg = payload_argument(kv_bytes, params, host=payload_host)
        result = await c.call_tool("avp_answer", {"prompt": "...", "payload": arg})
        data = payload_of(result, params)         # an avp_think result's message, verified

Small payloads go by value (``blob``), larger ones by reference (``url`` + ``size`` +
``digest``; R-MCP4.1), stored on the server's own binding (``POST messages``) or on a
``PayloadHost`` of the client. A ``resource_link`` result is fetched with one GET and checked
against its size and digest before the bytes are used (R-MCP3.1).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import avp_http
import httpx
from mcp import Client
from mcp.client.extension import ClientExtension, advertise
from mcp_types import CallToolResult, EmbeddedResource, ResourceLink

import avp_codec as avp

from ._ext import MCP_EXTENSION, VERSION, AgentProblem, AvpParams
from .payload import PayloadHost

INLINE_THRESHOLD = 256 << 10


def client_extension(version: str = VERSION) -> ClientExtension:
    """The client's declaration of the extension (the version it speaks, R-MCP1.2)."""
    return advertise(MCP_EXTENSION, {"version": version})


def server_params(client: Client) -> AvpParams | None:
    """The server's declaration (R-MCP1.1), read strictly (R-A2A2.2); None without one."""
    declared = client.server_capabilities.extensions or {}
    settings = declared.get(MCP_EXTENSION)
    if settings is None:
        return None
    try:
        return AvpParams.from_json(settings)
    except avp.AvpError:
        return None


def payload_argument(data: bytes, params: AvpParams, *, host: PayloadHost | None = None,
                     inline_threshold: int = INLINE_THRESHOLD, timeout: float = 300.0
                     ) -> dict[str, Any]:
    """The ``payload`` argument of R-MCP4.1 for ``data`` (blocking when it is stored)."""
    if len(data) > params.max_message_bytes:
        raise avp.AvpError(avp.ErrorCode.LIMIT_MESSAGE, f"{len(data)} bytes > the server's "
                           f"{params.max_message_bytes}")
    digest = hashlib.sha256(data).hexdigest()
    if len(data) <= min(inline_threshold, params.max_inline_bytes):
        return {"blob": base64.b64encode(data).decode()}
    if host is not None:
        url = host.put(data)
    elif params.http_binding is not None:
        with avp_http.AvpClient(params.http_binding, http2=False, timeout=timeout) as c:
            url = f"{params.http_binding}/messages/{c.store(data)}"
    else:
        raise ValueError("over the inline threshold and nowhere to host it")
    return {"url": url, "size": len(data), "digest": digest}


def problem_of(result: CallToolResult) -> AgentProblem | None:
    """The problem of a tool execution error (R-MCP5.1), None for a success."""
    if not result.is_error:
        return None
    data = result.structured_content if isinstance(result.structured_content, dict) else {}
    text = " ".join(getattr(b, "text", "") for b in result.content)
    return AgentProblem.from_json(data, text) or AgentProblem("avp-error", text)


def payload_of(result: CallToolResult, params: AvpParams, *, timeout: float = 300.0) -> bytes:
    """The AVP message a tool returned (R-MCP3.1): an embedded blob, or a ``resource_link``
    fetched with one GET of at most ``size`` bytes and verified against its digest."""
    p = problem_of(result)
    if p is not None:
        raise p
    for block in result.content:
        meta = (block.meta or {}).get(MCP_EXTENSION, {}) if hasattr(block, "meta") else {}
        digest = meta.get("digest") if isinstance(meta, dict) else None
        if isinstance(block, EmbeddedResource) and hasattr(block.resource, "blob"):
            data = base64.b64decode(block.resource.blob)
        elif isinstance(block, ResourceLink) and block.mime_type == "application/avp":
            if block.size is None or block.size > params.max_message_bytes:
                raise AgentProblem("bad-part", "a resource_link without a usable size")
            data = _get(str(block.uri), block.size, timeout)
        else:
            continue
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            raise AgentProblem("digest-mismatch", "the payload does not hash to its digest")
        return data
    raise AgentProblem("bad-part", "the result carries no AVP message")


def _get(url: str, size: int, timeout: float) -> bytes:
    buf = bytearray()
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as http, \
                http.stream("GET", url, headers={"accept": avp_http.MEDIA_TYPE}) as r:
            if r.status_code != 200:
                raise AgentProblem("reference-unreachable", f"GET answered {r.status_code}")
            for chunk in r.iter_raw(1 << 20):
                buf += chunk
                if len(buf) > size:
                    break
    except httpx.HTTPError as e:
        raise AgentProblem("reference-unreachable", type(e).__name__) from e
    return bytes(buf)
