"""AVP over MCP (spec/avp-mcp.md) on the official ``mcp`` SDK's ``MCPServer``.

    server = MCPServer(responder, MCPConfig())
    with avp_http.BackgroundServer(server.app, root="") as srv:
        server.bind(f"http://127.0.0.1:{srv.port}")      # MCP at /mcp, the binding at /avp/v1
        ...

    python -m avp_agents.mcp_server --model smollm2 --port 0    # "AVP-MCP LISTENING <port>"

One hypercorn server carries the SDK's Streamable HTTP application (``/mcp``) and the HTTP
binding (``/avp/v1``, mounted on the same Starlette router, so the SDK's lifespan runs). What
the MCP side offers:

- the extension ``org.agent-vector-protocol/avp`` (an SDK ``Extension``) whose settings are the
  declaration of R-MCP1.1;
- resources: ``avp://messages/{digest}`` (template; a blob up to the inline limit, the problem
  ``inline-too-large`` with the binding URL above it, R-MCP2.2), every payload the tools made
  (listed, R-MCP2.1), and ``avp://agent/hello`` (the agent's HELLO, R-MCP2.3);
- tools: ``avp_answer(prompt, payload?)`` runs the receiving agent on a payload given by
  ``uri``, ``blob`` or ``url`` + ``size`` + ``digest`` (R-MCP4.1-4.3); ``avp_think(prompt,
  steps)`` returns the agent's own KV-cache as an embedded blob or a ``resource_link`` to the
  binding (R-MCP3.1). Failures are tool execution errors with the problem in
  ``structuredContent`` (R-MCP5.1).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import avp_http
from mcp.server.extension import Extension
from mcp.server.mcpserver import Context
from mcp.server.mcpserver import MCPServer as SdkServer
from mcp.server.mcpserver.resources import FunctionResource
from mcp.shared.exceptions import MCPError
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ResourceLink,
    TextContent,
)
from mcp_types import Resource as MCPResource
from pydantic import BaseModel, ConfigDict
from starlette.routing import Mount

import avp_codec as avp

from . import _cli
from ._ext import MCP_EXTENSION, MEDIA_TYPE, AgentProblem, AvpParams, is_hex64, major_of
from ._host import BINDING_ROOT, Hosted, request_limit
from .payload import Bound, FetchPolicy, PayloadReader, Received
from .responder import Responder

MESSAGES = "avp://messages/"
HELLO_URI = "avp://agent/hello"
INVALID_PARAMS = -32602


class PayloadArg(BaseModel):
    """R-MCP4.1: exactly one of ``uri``, ``blob``, ``url`` (with ``size`` and ``digest``)."""

    model_config = ConfigDict(extra="forbid")
    uri: str | None = None
    blob: str | None = None
    url: str | None = None
    size: int | None = None
    digest: str | None = None


@dataclass
class MCPConfig:
    name: str = "avp-mcp"
    limits: avp.Limits = avp_http.SERVER_LIMITS
    max_inline_bytes: int = 1 << 20
    inline_threshold: int = 256 << 10  # tool results by value up to this (R-MCP3.1)
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    keys: dict[bytes, bytes] = field(default_factory=dict)
    require_auth: bool = False
    store: avp_http.MessageStore | None = None


class _AvpExtension(Extension):
    identifier = MCP_EXTENSION

    def __init__(self, params: AvpParams) -> None:
        self.params = params

    def settings(self) -> dict[str, Any]:
        return self.params.to_json()


class _Server(SdkServer[Any]):
    """The SDK's server, listing the payloads the tools made that the store still holds."""

    made: dict[str, tuple[int, str]]  # digest -> (size, kind name)
    store: avp_http.MessageStore

    async def list_resources(self) -> list[MCPResource]:
        out = await super().list_resources()
        for digest, (size, kind) in list(self.made.items()):
            if digest not in self.store:
                self.made.pop(digest, None)
                continue
            out.append(MCPResource(uri=MESSAGES + digest, name=f"{digest}.avp",
                                   mime_type=MEDIA_TYPE, size=size,
                                   _meta={MCP_EXTENSION: _meta_of(self, digest, kind)}))
        return out


def _meta_of(server: _Server, digest: str, kind: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"digest": digest, "kind": kind}
    base = getattr(server, "binding_url", None)
    if base:
        meta["url"] = f"{base}/messages/{digest}"
    return meta


def tool_error(p: AgentProblem) -> CallToolResult:
    """R-MCP5.1: a tool execution error carrying the problem."""
    return CallToolResult(content=[TextContent(type="text", text=str(p))],
                          structured_content=p.as_json(), is_error=True)


class MCPServer:
    """The application (``app``, for ``avp_http.serve``) and its parts; ``bind(base)`` fixes
    the binding's public URL once the port is known."""

    def __init__(self, responder: Responder, config: MCPConfig | None = None) -> None:
        self.config = cfg = config or MCPConfig()
        self.responder = responder
        self.store = store = cfg.store if cfg.store is not None else avp_http.MessageStore()
        self.binding = avp_http.AvpApp(avp_http.Mailbox(name=f"{cfg.name}-store"),
                                       avp_http.ServerConfig(limits=cfg.limits, root="",
                                                             store=store))
        self.params = AvpParams(
            max_message_bytes=cfg.limits.max_message_bytes,
            max_inline_bytes=cfg.max_inline_bytes,
            modes=tuple(avp.Mode(m) for m in sorted(set(responder.modes) | {3})),
            model_id=responder.model_id, tokenizer_id=responder.tokenizer_id,
            model_name=responder.model_name, fetches_references=cfg.policy.fetch_others)
        self.reader = PayloadReader(cfg.limits, cfg.max_inline_bytes, cfg.policy, store=store,
                                    keys=cfg.keys, require_auth=cfg.require_auth)
        self._model = ThreadPoolExecutor(1, thread_name_prefix="avp-mcp-model")
        self.extension = _AvpExtension(self.params)
        self.mcp = _Server(cfg.name, extensions=[self.extension], log_level="WARNING")
        self.mcp.made = {}
        self.mcp.store = store
        self._register()
        app = self.mcp.streamable_http_app(
            max_request_body_size=request_limit(cfg.max_inline_bytes) + (1 << 20))
        app.router.routes.append(Mount(BINDING_ROOT, app=self.binding))  # type: ignore[arg-type]
        self.app = Hosted(app, self.binding, request_limit(cfg.max_inline_bytes),
                          on_close=lambda: self._model.shutdown(wait=False,
                                                                cancel_futures=True))

    def bind(self, base_url: str) -> None:
        binding = base_url.rstrip("/") + BINDING_ROOT
        self.reader.own_base = binding
        self.params = replace(self.params, http_binding=binding)
        self.extension.params = self.params
        self.mcp._lowlevel_server.extensions[MCP_EXTENSION] = self.params.to_json()
        self.mcp.binding_url = binding  # type: ignore[attr-defined]

    # -- registration --------------------------------------------------------------------------
    def _register(self) -> None:
        mcp = self.mcp

        @mcp.resource(MESSAGES + "{digest}", mime_type=MEDIA_TYPE,
                      description="An AVP message held by this server (R-MCP2.2)")
        def read_message(digest: str) -> bytes:
            return self.read_message(digest)

        def hello() -> bytes:
            return avp.encode(self.responder.offer(self.params.max_message_bytes))

        mcp.add_resource(FunctionResource.from_function(
            hello, uri=HELLO_URI, name="hello.avp", mime_type=MEDIA_TYPE,
            description="This agent's HELLO (R-MCP2.3): identities and capabilities"))

        async def avp_answer(prompt: str, ctx: Context,
                             payload: PayloadArg | None = None) -> CallToolResult:
            """Run the agent on an AVP payload (by uri, blob, or url + size + digest) and
            read ``prompt`` as the next user turn; ``prompt`` alone is the text fallback."""
            try:
                return await self.answer(prompt, payload, _client_version(ctx))
            except AgentProblem as p:
                return tool_error(p)
            except avp.AvpError as e:
                return tool_error(AgentProblem.from_avp(e))

        async def avp_think(prompt: str, ctx: Context, steps: int = 4) -> CallToolResult:
            """The agent's KV-cache after reading ``prompt`` and ``steps`` latent steps, as an
            embedded blob (small) or a resource_link to the HTTP binding (large)."""
            try:
                return await self.think(prompt, steps, _client_version(ctx))
            except AgentProblem as p:
                return tool_error(p)
            except avp.AvpError as e:
                return tool_error(AgentProblem.from_avp(e))

        mcp.add_tool(avp_answer, structured_output=False)
        mcp.add_tool(avp_think, structured_output=False)

    # -- resources -----------------------------------------------------------------------------
    def read_message(self, digest: str) -> bytes:
        entry = self.store.get(digest) if is_hex64(digest) else None
        if entry is None:
            raise MCPError(code=INVALID_PARAMS, message="no such AVP message",
                           data={"uri": MESSAGES + digest})
        if entry.size > self.config.max_inline_bytes:
            p = AgentProblem("inline-too-large", f"{entry.size} bytes: read it from the HTTP "
                             "binding", maximum=self.config.max_inline_bytes,
                             extra={"size": entry.size, "digest": digest,
                                    "url": f"{self.reader.own_base}/messages/{digest}"})
            raise MCPError(code=INVALID_PARAMS, message=str(p), data=p.as_json())
        try:
            return entry.path.read_bytes()
        except OSError as e:  # evicted meanwhile
            raise MCPError(code=INVALID_PARAMS, message="no such AVP message",
                           data={"uri": MESSAGES + digest}) from e

    # -- tools ---------------------------------------------------------------------------------
    async def answer(self, prompt: str, payload: PayloadArg | None,
                     client_version: str | None) -> CallToolResult:
        got = None
        mode: avp.Mode | None = None
        if payload is not None:
            self._check_version(client_version)
            offered = self.responder.offer(self.params.max_message_bytes)

            def bound(header: avp.Message) -> int | None:
                """R-MCP4.4: the payload's mode (R-MCP4.3), kind and identities at its
                HEADER, before any of its tensors is decompressed."""
                mode = self.responder.mode_for(header)
                avp.check_payload(header, mode, offered)
                return self.responder.bound_payload(header, mode)

            got = await asyncio.to_thread(self.read_payload, payload, bound)
            mode = self.responder.mode_for(got.message)  # R-MCP4.3: a payload of our modes
            self.responder.check(got.message, mode, offered, got.size)
        text: str = await asyncio.get_running_loop().run_in_executor(
            self._model, self.responder.respond, prompt, got.message if got else None, mode)
        structured: dict[str, Any] = {"answer": text, "mode": (mode or avp.Mode.TEXT).name,
                                      "payloadBytes": got.size if got else 0,
                                      "byReference": got.by_reference if got else False}
        return CallToolResult(content=[TextContent(type="text", text=text)],
                              structured_content=structured)

    def read_payload(self, arg: PayloadArg, bound: Bound | None = None) -> Received:
        """R-MCP4.1, R-MCP4.2 (blocking: a reference is fetched)."""
        given = [k for k in ("uri", "blob", "url") if getattr(arg, k) is not None]
        if len(given) != 1:
            raise AgentProblem("bad-part", "a payload has exactly one of uri, blob, url")
        if arg.uri is not None:
            digest = arg.uri.removeprefix(MESSAGES)
            entry = self.store.get(digest) if arg.uri.startswith(MESSAGES) \
                and is_hex64(digest) else None
            if entry is None:
                raise AgentProblem("bad-part", "uri names no AVP message of this server")
            assert self.reader.own_base is not None
            return self.reader.reference(f"{self.reader.own_base}/messages/{digest}",
                                         entry.size, digest, bound=bound)
        if arg.blob is not None:
            if len(arg.blob) > 4 * -(-self.config.max_inline_bytes // 3):  # before decoding
                raise AgentProblem("inline-too-large", "the blob is over the inline limit: "
                                   "send it by reference", maximum=self.config.max_inline_bytes)
            try:
                data = base64.b64decode(arg.blob, validate=True)
            except (binascii.Error, ValueError) as e:
                raise AgentProblem("bad-part", "blob is not base64") from e
            return self.reader.inline(data, size=arg.size, digest=arg.digest, bound=bound)
        assert arg.url is not None
        if arg.size is None or arg.digest is None:
            raise AgentProblem("bad-part", "a url needs size and digest beside it")
        return self.reader.reference(arg.url, arg.size, arg.digest, bound=bound)

    async def think(self, prompt: str, steps: int, client_version: str | None
                    ) -> CallToolResult:
        self._check_version(client_version)
        if not 0 <= steps <= 64:
            raise AgentProblem("bad-part", "steps is 0 .. 64")
        msg: avp.Message = await asyncio.get_running_loop().run_in_executor(
            self._model, self.responder.think, prompt, steps)
        data = avp.encode(msg)
        digest = await asyncio.to_thread(self.store.put_bytes, data)
        kind = avp.Kind(msg.kind).name
        self.mcp.made[digest] = (len(data), kind)
        uri, url = MESSAGES + digest, f"{self.reader.own_base}/messages/{digest}"
        meta = {MCP_EXTENSION: {"digest": digest, "kind": kind}}
        block: EmbeddedResource | ResourceLink
        if len(data) <= min(self.config.inline_threshold, self.config.max_inline_bytes):
            block = EmbeddedResource(type="resource", resource=BlobResourceContents(
                uri=uri, blob=base64.b64encode(data).decode(), mime_type=MEDIA_TYPE,
                _meta=meta))
        else:
            block = ResourceLink(type="resource_link", uri=url, name=f"{digest}.avp",
                                 mime_type=MEDIA_TYPE, size=len(data), _meta=meta)
        return CallToolResult(content=[block], structured_content={
            "digest": digest, "size": len(data), "kind": kind, "uri": uri, "url": url})

    def _check_version(self, client_version: str | None) -> None:
        """R-MCP1.2: a client speaking another major version gets no AVP reading."""
        if client_version is not None and major_of(client_version) != major_of(
                self.params.version):
            raise AgentProblem("unsupported-extension-version",
                               f"this server implements version {self.params.version}",
                               supported=[self.params.version])


def _client_version(ctx: Context) -> str | None:
    """The version the client declared for the extension (None: it declared none)."""
    caps = ctx.client_capabilities
    declared = caps.extensions if caps is not None else None
    if not declared or MCP_EXTENSION not in declared:
        return None
    settings = declared[MCP_EXTENSION]
    version = settings.get("version") if isinstance(settings, dict) else None
    return str(version) if version is not None else None


def main(argv: list[str] | None = None) -> int:
    ap = _cli.parser("python -m avp_agents.mcp_server", __doc__)
    ap.add_argument("--inline-threshold", type=int, default=256 << 10)
    args = ap.parse_args(argv)
    server = MCPServer(_cli.responder(args), MCPConfig(
        name=args.name or f"avp-{args.model}", max_inline_bytes=args.max_inline,
        inline_threshold=args.inline_threshold, policy=_cli.fetch_policy(args)))
    return _cli.serve(server, args, "AVP-MCP LISTENING")


if __name__ == "__main__":
    sys.exit(main())
