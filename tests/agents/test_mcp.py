"""AVP over MCP (spec/avp-mcp.md): ``python -m avp_agents.mcp_server`` as a real process on
127.0.0.1, driven by the official SDK's own ``mcp.Client`` over Streamable HTTP. Good paths,
then bad input: every failure is the binding's defined error and the server keeps serving."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from avp_agents import MCP_EXTENSION, AgentProblem, PayloadHost
from avp_agents.mcp_client import (
    client_extension,
    payload_argument,
    payload_of,
    problem_of,
    server_params,
)
from avp_agents.responder import echo_kv
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, EmbeddedResource, ResourceLink

import avp_codec as avp

from .conftest import closed_port, liar, server

ECHO_ID = hashlib.sha256(b"avp-agents echo model").digest()
MAX_INLINE = 64 << 10
SMALL = avp.encode(echo_kv(ECHO_ID, 8))  # ~5 KB
LARGE = avp.encode(echo_kv(ECHO_ID, 200))  # ~100 KB > MAX_INLINE


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with server("avp_agents.mcp_server", tmp_path_factory.mktemp("mcp"), "--model", "echo",
                "--max-inline", str(MAX_INLINE), "--inline-threshold", str(16 << 10),
                "--fetch-timeout", "5") as url:
        yield url


def session(base: str, fn: Callable[[Client], Awaitable[Any]], version: str = "1.0") -> Any:
    async def run() -> Any:
        async with Client(f"{base}/mcp", extensions=[client_extension(version)]) as c:
            return await fn(c)
    return asyncio.run(run())


def answer(base: str, payload: dict[str, Any] | None, prompt: str = "q",
           version: str = "1.0") -> CallToolResult:
    args: dict[str, Any] = {"prompt": prompt}
    if payload is not None:
        args["payload"] = payload
    r: CallToolResult = session(base, lambda c: c.call_tool("avp_answer", args), version)
    return r


def refused(base: str, payload: Any, version: str = "1.0") -> AgentProblem:
    r = answer(base, payload, version=version)
    p = problem_of(r)
    assert p is not None, r
    return p


def blob(data: bytes) -> dict[str, Any]:
    return {"blob": base64.b64encode(data).decode()}


# -- good paths -----------------------------------------------------------------------------

def test_extension_settings_and_tools(base: str) -> None:
    async def fn(c: Client) -> tuple[Any, list[str]]:
        return server_params(c), [t.name for t in (await c.list_tools()).tools]
    params, tools = session(base, fn)
    # R-MCP1.1: the declaration, strictly readable, with the binding's URL.
    assert params is not None and params.max_inline_bytes == MAX_INLINE
    assert params.model_id == ECHO_ID and params.http_binding == f"{base}/avp/v1"
    assert avp.Mode.KV_CACHE in params.modes and avp.Mode.TEXT in params.modes
    assert {"avp_answer", "avp_think"} <= set(tools)


def test_answer_with_a_blob_and_with_a_reference(base: str) -> None:
    async def fn(c: Client) -> list[CallToolResult]:
        params = server_params(c)
        assert params is not None
        out = []
        with PayloadHost() as host:  # by reference from the client's own binding server
            for data, h in ((SMALL, None), (LARGE, None), (LARGE, host)):
                arg = payload_argument(data, params, host=h, inline_threshold=32 << 10)
                assert ("blob" in arg) is (data is SMALL)
                out.append(await c.call_tool("avp_answer", {"prompt": "p", "payload": arg}))
        return out
    small, pushed, hosted = session(base, fn)
    for r, by_ref in ((small, False), (pushed, True), (hosted, True)):
        assert not r.is_error, r
        sc = r.structured_content
        assert sc["mode"] == "KV_CACHE" and sc["byReference"] is by_ref
        assert sc["answer"] == "KV_CACHE with 3 tensors: p"
    assert small.structured_content["payloadBytes"] == len(SMALL)
    assert pushed.structured_content["payloadBytes"] == len(LARGE)


def test_text_fallback_is_the_prompt_alone(base: str) -> None:
    r = answer(base, None, prompt="plain question")
    assert not r.is_error and r.structured_content["mode"] == "TEXT"
    assert r.structured_content["answer"] == "text only: plain question"


def test_think_returns_a_blob_or_a_resource_link_listed_as_resources(base: str) -> None:
    async def fn(c: Client) -> dict[str, Any]:
        params = server_params(c)
        assert params is not None
        small = await c.call_tool("avp_think", {"prompt": "x", "steps": 0})   # ~5 KB
        large = await c.call_tool("avp_think", {"prompt": "x", "steps": 15})  # ~80 KB
        listed = {str(r.uri): r for r in (await c.list_resources()).resources}
        hello = await c.read_resource("avp://agent/hello")
        read_small = await c.read_resource(small.structured_content["uri"])
        with pytest.raises(MCPError) as too_large:  # R-MCP2.2: over maxInlineBytes
            await c.read_resource(large.structured_content["uri"])
        again = await c.call_tool("avp_answer", {"prompt": "again", "payload": {
            "uri": large.structured_content["uri"]}})
        return {"small": small, "large": large, "listed": listed, "hello": hello,
                "read_small": read_small, "too_large": too_large.value, "again": again,
                "small_bytes": payload_of(small, params), "large_bytes": payload_of(large, params)}
    out = session(base, fn)
    small, large = out["small"], out["large"]
    # R-MCP3.1: by value as an embedded blob, by reference as a resource_link to the binding.
    assert isinstance(small.content[0], EmbeddedResource)
    link = large.content[0]
    assert isinstance(link, ResourceLink) and link.mime_type == "application/avp"
    assert link.size == large.structured_content["size"] > MAX_INLINE
    assert str(link.uri) == f"{base}/avp/v1/messages/{large.structured_content['digest']}"
    for r, data in ((small, out["small_bytes"]), (large, out["large_bytes"])):
        assert hashlib.sha256(data).hexdigest() == r.structured_content["digest"]
        assert avp.decode(data).kind == avp.Kind.KV_CACHE
    # R-MCP2.1: both listed, with their digest and binding URL in _meta.
    listed = out["listed"]
    entry = listed[large.structured_content["uri"]]
    assert entry.size == link.size and entry.meta[MCP_EXTENSION]["url"] == str(link.uri)
    assert small.structured_content["uri"] in listed
    assert avp.decode(base64.b64decode(out["hello"].contents[0].blob)).kind == avp.Kind.HELLO
    assert base64.b64decode(out["read_small"].contents[0].blob) == out["small_bytes"]
    err = out["too_large"].error
    assert err.code == -32602 and err.data["problem"] == "inline-too-large"
    assert err.data["url"] == str(link.uri) and err.data["size"] == link.size
    assert out["again"].structured_content["mode"] == "KV_CACHE"


# -- bad input ------------------------------------------------------------------------------

def test_corrupt_bytes(base: str) -> None:
    p = refused(base, blob(b"\x00" * 8 + SMALL[8:]))
    assert p.problem == "avp-error" and p.code == avp.ErrorCode.BAD_MAGIC
    p = refused(base, blob(SMALL[:100]))
    assert p.problem == "avp-error" and p.code == avp.ErrorCode.TRUNCATED
    assert refused(base, {"blob": "not base64!"}).problem == "bad-part"


def test_payload_for_another_model(base: str) -> None:
    other = avp.encode(echo_kv(hashlib.sha256(b"another model").digest(), 8))
    p = refused(base, blob(other))
    assert p.problem == "avp-error" and p.code == avp.ErrorCode.MODEL_MISMATCH


def test_oversized_inline_blob(base: str) -> None:
    p = refused(base, blob(LARGE))
    assert p.problem == "inline-too-large" and p.maximum == MAX_INLINE


def test_request_body_over_the_bound_is_413(base: str) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"x": "' + \
        b"A" * (1 << 20) + b'"}}'
    r = httpx.post(f"{base}/mcp", content=body, timeout=60, headers={
        "content-type": "application/json", "accept": "application/json, text/event-stream"})
    assert r.status_code == 413 and r.json()["error"]["data"]["problem"] == "request-too-large"


def test_digest_mismatch_and_unreachable_references(base: str) -> None:
    digest = hashlib.sha256(SMALL).hexdigest()
    with liar() as url:
        p = refused(base, {"url": f"{url}/messages/{digest}", "size": 4096, "digest": digest})
    assert p.problem == "digest-mismatch"
    port = closed_port()
    p = refused(base, {"url": f"http://127.0.0.1:{port}/messages/{digest}", "size": len(SMALL),
                       "digest": digest})
    assert p.problem == "reference-unreachable"
    p = refused(base, {"url": f"file:///tmp/{digest}", "size": len(SMALL), "digest": digest})
    assert p.problem == "reference-refused"


def test_malformed_payload_arguments(base: str) -> None:
    digest = hashlib.sha256(SMALL).hexdigest()
    both = blob(SMALL) | {"uri": f"avp://messages/{digest}"}
    assert refused(base, both).problem == "bad-part"
    assert refused(base, {"url": f"http://127.0.0.1:1/{digest}"}).problem == "bad-part"
    assert refused(base, {"uri": "avp://messages/" + "0" * 64}).problem == "bad-part"
    assert refused(base, {}).problem == "bad-part"
    r = answer(base, {"blob": 5, "extra": True})  # the SDK's own argument validation
    assert r.is_error


def test_unknown_extension_version(base: str) -> None:
    p = refused(base, blob(SMALL), version="2.0")
    assert p.problem == "unsupported-extension-version" and p.supported == ("1.0",)


def test_unknown_resource(base: str) -> None:
    async def fn(c: Client) -> MCPError:
        with pytest.raises(MCPError) as e:
            await c.read_resource("avp://messages/" + "0" * 64)
        return e.value
    err = session(base, fn).error
    assert err.code == -32602 and err.data["uri"] == "avp://messages/" + "0" * 64


def test_still_serving(base: str) -> None:
    r = answer(base, blob(SMALL), prompt="still here")
    assert not r.is_error and r.structured_content["answer"].endswith("still here")
