"""The shared pieces without processes: the declaration's strict reading (R-A2A2.2), the fetch
policy (R-A2A4.7), the reader's decoded-size bound, and in-process exchanges for the rules that
need a misbehaving peer (a malformed card, a refused ACCEPT, AVP parts outside the extension)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import avp_http
import httpx
import pytest
from a2a.types import Part
from avp_agents import A2A_URI, MEDIA_TYPE, AgentProblem, AvpParams, FetchPolicy, PayloadReader
from avp_agents.a2a_client import A2AClient, CodecInitiator, initiator_for
from avp_agents.a2a_server import A2AConfig, A2AServer, Sessions
from avp_agents.responder import EchoResponder, echo_kv

import avp_codec as avp

ECHO_ID = hashlib.sha256(b"avp-agents echo model").digest()
KV = avp.encode(echo_kv(ECHO_ID, 8))
GOOD = AvpParams(max_message_bytes=1 << 30, max_inline_bytes=1 << 20,
                 modes=(avp.Mode.KV_CACHE, avp.Mode.TEXT), model_id=ECHO_ID,
                 http_binding="http://h/avp/v1").to_json()


def test_declaration_round_trips() -> None:
    p = AvpParams.from_json(GOOD)
    assert p.model_id == ECHO_ID and p.modes == (avp.Mode.KV_CACHE, avp.Mode.TEXT)
    assert AvpParams.from_json(GOOD | {"maxInlineBytes": 1024.0}).max_inline_bytes == 1024
    assert AvpParams.from_json(GOOD | {"unknownMember": 1}).version == "1.0"  # ignored


@pytest.mark.parametrize("change", [
    {"version": None}, {"version": "one"}, {"modes": ["KV_CACHE"]}, {"modes": ["NOPE", "TEXT"]},
    {"mediaType": "application/json"}, {"maxInlineBytes": 1.5}, {"maxInlineBytes": True},
    {"maxMessageBytes": 1 << 53}, {"maxMessageBytes": -1}, {"modelId": "AB" * 32},
    {"tokenizerId": "00"}, {"fetchesReferences": "yes"}, {"formatVersions": []},
    {"httpBinding": 5},
])
def test_declaration_is_read_strictly(change: dict[str, Any]) -> None:
    bad = {k: v for k, v in (GOOD | change).items() if v is not None}
    with pytest.raises(avp.AvpError) as e:
        AvpParams.from_json(bad)
    assert e.value.code == avp.ErrorCode.INVALID_VALUE


def test_fetch_policy() -> None:
    assert FetchPolicy().allows("http://10.0.0.1:9/x")
    assert not FetchPolicy().allows("ftp://h/x") and not FetchPolicy().allows("file:///x")
    assert not FetchPolicy().allows("http://user:pw@h/x")  # no credentials in URLs
    only = FetchPolicy(hosts={"trusted", "other:8080"})
    assert only.allows("https://trusted/x") and only.allows("http://other:8080/x")
    assert not only.allows("http://evil/x") and not only.allows("http://other:9/x")
    assert not FetchPolicy(fetch_others=False).allows("http://trusted/x")


def test_reader_bounds_what_a_payload_decodes_to() -> None:
    reader = PayloadReader(avp.Limits(), 1 << 20, max_decoded_bytes=1000)
    with pytest.raises(AgentProblem) as e:
        reader.inline(KV)
    assert e.value.problem == "decoded-too-large" and e.value.maximum == 1000
    assert PayloadReader(avp.Limits(), 1 << 20).inline(KV).message.kind == avp.Kind.KV_CACHE


def _bomb(mib: int) -> bytes:
    """A KV_CACHE of the echo model whose two zstd tensors inflate to ``mib`` MiB each (zeros:
    a few KB on the wire)."""
    import numpy as np

    zeros = np.zeros((1, 1, mib * 4096, 64), np.float32)
    return avp.encode(avp.kv_cache_from_arrays(ECHO_ID, [zeros], [zeros], codec=avp.Codec.ZSTD))


def test_reader_refuses_at_the_header_and_bounds_tensors_before_inflating() -> None:
    """R-A2A4.9, R-MCP4.4: ``bound`` sees the HEADER before any tensor is decompressed; its
    refusal is the payload's problem, and the bound it returns is the decoder's tensor limit
    (LIMIT_TENSOR from the descriptor: the 16 MiB tensor is never inflated)."""
    import tracemalloc

    bomb = _bomb(16)
    assert len(bomb) < 64 << 10
    reader = PayloadReader(avp_http.SERVER_LIMITS, 1 << 20)
    seen: list[avp.Message] = []

    def bound(header: avp.Message) -> int:
        seen.append(header)
        assert not header.tensors  # nothing past the HEADER has been read
        return 1 << 20

    tracemalloc.start()
    try:
        with pytest.raises(AgentProblem) as e:
            reader.inline(bomb, bound=bound)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.problem == "avp-error" and e.value.code == avp.ErrorCode.LIMIT_TENSOR
    assert seen[0].kind == avp.Kind.KV_CACHE and peak < 4 << 20, peak

    def refuse(header: avp.Message) -> int:
        raise avp.AvpError(avp.ErrorCode.MODEL_MISMATCH, "not ours")
    with pytest.raises(AgentProblem) as e:
        reader.inline(bomb, bound=refuse, part=1)
    assert e.value.code == avp.ErrorCode.MODEL_MISMATCH and e.value.part == 1

    def unknown(header: avp.Message) -> int:
        raise AgentProblem("session-unknown", "no session")
    with pytest.raises(AgentProblem) as e:
        reader.inline(bomb, bound=unknown)
    assert e.value.problem == "session-unknown"
    # Within the bound, or with no bound from the responder, the payload decodes.
    assert reader.inline(KV, bound=lambda h: 1 << 20).message.kind == avp.Kind.KV_CACHE
    assert reader.inline(KV, bound=lambda h: None).message.kind == avp.Kind.KV_CACHE
    with pytest.raises(AgentProblem) as e:  # a message cut before its HEADER
        reader.inline(KV[:20], bound=bound)
    assert e.value.code == avp.ErrorCode.TRUNCATED


def test_a_payload_without_a_session_is_refused_before_it_is_decoded(
        served: tuple[A2AServer, str]) -> None:
    """R-A2A4.9: ``session-unknown`` from the HEADER (a 2 x 16 MiB bomb costs nothing)."""
    _, url = served
    bomb = _bomb(16)

    async def go() -> None:
        async with A2AClient(url) as c:
            await c.discover()
            part = Part(raw=bomb, media_type=MEDIA_TYPE)
            await c.send_message(c.message([Part(text="q"), part], None, avp_parts=True))
    with pytest.raises(AgentProblem) as e:
        run(go())
    assert e.value.problem == "session-unknown"


@pytest.fixture
def served() -> Iterator[tuple[A2AServer, str]]:
    server = A2AServer(EchoResponder(model_id=ECHO_ID), A2AConfig())
    with avp_http.BackgroundServer(server.app, root="") as srv:
        url = f"http://127.0.0.1:{srv.port}"
        server.bind(url)
        yield server, url


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_malformed_card_declaration_means_text_only(served: tuple[A2AServer, str]) -> None:
    server, url = served
    server.card.capabilities.extensions[0].params["modes"] = ["KV_CACHE"]  # no TEXT

    async def go() -> tuple[Any, Any]:
        async with A2AClient(url) as c:
            return await c.ask("q", initiator_for("echo")), c.card_problem
    out, problem = run(go())
    assert out.fallback and out.answer == "text only: q"  # R-A2A2.2, R-A2A5.2
    assert problem is not None and problem.path == "modes"


def test_a_refused_accept_is_reported_and_nothing_is_sent(served: tuple[A2AServer, str]) -> None:
    server, url = served

    def refuse(msg: avp.Message) -> avp.Mode:
        raise avp.AvpError(avp.ErrorCode.NEGOTIATION_MISMATCH, "no")

    init = CodecInitiator(lambda: avp.hello_message("c", model_id=ECHO_ID),
                          lambda mode, text: KV)
    init.accept = refuse  # type: ignore[method-assign]

    async def go() -> None:
        async with A2AClient(url) as c:
            await c.ask("q", init)
    with pytest.raises(avp.AvpError) as e:
        run(go())
    assert e.value.code == avp.ErrorCode.NEGOTIATION_MISMATCH
    # R-A2A3.6: the agent recorded the ERROR, answered no payload and holds no session.
    assert server.executor.stats["answered"] == 0 and len(server.executor.sessions) == 0


def test_avp_parts_outside_the_extension_are_not_read(served: tuple[A2AServer, str]) -> None:
    _, url = served

    async def go() -> str:
        async with A2AClient(url) as c:
            await c.discover()
            msg = c.message([Part(text="just text"), Part(raw=b"junk", media_type=MEDIA_TYPE)],
                            None, avp_parts=False)  # extensions does not list the URI
            reply = await c.send_message(msg)
            assert A2A_URI not in reply.extensions
            return "".join(p.text for p in reply.parts)
    assert run(go()) == "text only: just text"  # R-A2A3.2


def rpc(url: str, extensions_header: str, message: dict[str, Any]) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
        "role": "ROLE_USER", "messageId": "m1"} | message}}
    r = httpx.post(url + "/", json=body, timeout=30, headers={
        "A2A-Version": "1.0", "A2A-Extensions": extensions_header})
    out: dict[str, Any] = r.json()
    return out


def test_activation_of_an_unknown_version_is_ignored(served: tuple[A2AServer, str]) -> None:
    # R-A2A1.2: the header asks for v2 only; the text message is served as by a plain agent.
    _, url = served
    out = rpc(url, "https://agent-vector-protocol.org/ext/a2a/v2", {"parts": [{"text": "hi"}]})
    msg = out["result"]["message"]
    assert msg["parts"] == [{"text": "text only: hi"}] and not msg.get("extensions")


def test_refusals_carry_error_info_on_the_wire(served: tuple[A2AServer, str]) -> None:
    # R-A2A7.1: JSON-RPC error, google.rpc.ErrorInfo with the A2A domain and string metadata.
    _, url = served
    out = rpc(url, A2A_URI, {"extensions": ["https://agent-vector-protocol.org/ext/a2a/v9"],
                             "parts": [{"text": "hi"}]})
    err = out["error"]
    assert err["code"] == -32005  # ContentTypeNotSupportedError
    (info,) = err["data"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["domain"] == "a2a-protocol.org"
    assert info["metadata"] == {"problem": "unsupported-extension-version", "supported": A2A_URI}
    out = rpc(url, A2A_URI, {"extensions": [A2A_URI], "parts": [
        {"text": "q"}, {"raw": base64.b64encode(b"AVP junk").decode(),
                        "mediaType": MEDIA_TYPE}]})
    meta = out["error"]["data"][0]["metadata"]
    assert out["error"]["code"] == -32602 and meta["problem"] == "avp-error"
    assert meta["avpCodeName"] == "BAD_MAGIC" and meta["avpCode"] == "1" and meta["part"] == "1"


def test_a_kv_cache_for_another_model_is_refused(served: tuple[A2AServer, str]) -> None:
    _, url = served
    other = avp.encode(echo_kv(hashlib.sha256(b"another model").digest(), 8))
    init = CodecInitiator(lambda: avp.hello_message("c", model_id=ECHO_ID),
                          lambda mode, text: other)

    async def go() -> None:
        async with A2AClient(url) as c:
            await c.ask("q", init)
    with pytest.raises(AgentProblem) as e:
        run(go())
    assert e.value.problem == "avp-error" and e.value.code == avp.ErrorCode.MODEL_MISMATCH


def test_a_text_session_sends_the_text_alone() -> None:
    # R-A2A3.9: an agent without a model resolves TEXT; no AVP part goes.
    server = A2AServer(EchoResponder(), A2AConfig())
    with avp_http.BackgroundServer(server.app, root="") as srv:
        url = f"http://127.0.0.1:{srv.port}"
        server.bind(url)

        async def go() -> Any:
            async with A2AClient(url) as c:
                return await c.ask("q", initiator_for("echo"))
        out = run(go())
    assert out.mode == "TEXT" and not out.fallback and out.payload_bytes == 0
    assert out.answer == "text only: q" and server.executor.stats["handshakes"] == 1


def test_sessions_are_bounded_and_per_principal() -> None:
    # R-A2A3.7
    n = avp_http.Negotiated(avp.hello_message("x"), avp.Mode.TEXT, avp.hello_message("x"))
    s = Sessions(2, 600.0)
    for ctx in ("a", "b", "c"):
        s.put(ctx, n, "alice")
    assert len(s) == 2 and s.get("a", "alice") is None and s.get("c", "alice") is n
    assert s.get("c", "bob") is None  # another principal's session is unknown
    idle = Sessions(10, 0.0)
    idle.put("a", n, "")
    time.sleep(0.01)
    assert idle.get("a", "") is None
