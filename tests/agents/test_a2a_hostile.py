"""Bad input to the A2A extension (spec/avp-a2a.md section 7): every refusal is the defined A2A
error with its problem (and AVP code), the agent process survives and keeps serving."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from a2a.types import Part
from avp_agents import A2A_URI, MEDIA_TYPE, AgentProblem
from avp_agents.a2a_client import A2AClient, initiator_for
from avp_agents.responder import echo_kv

import avp_codec as avp

from .conftest import closed_port, liar, server

ECHO_ID = hashlib.sha256(b"avp-agents echo model").digest()
MAX_INLINE = 64 << 10
KV = avp.encode(echo_kv(ECHO_ID, 8))


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with server("avp_agents.a2a_server", tmp_path_factory.mktemp("a2a-hostile"), "--model",
                "echo", "--max-inline", str(MAX_INLINE), "--fetch-timeout", "5") as url:
        yield url


def with_client(url: str, fn: Callable[[A2AClient], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with A2AClient(url, timeout=60) as c:
            await c.discover()
            return await fn(c)
    return asyncio.run(run())


async def session(c: A2AClient) -> str:
    mode, context_id = await c.handshake(initiator_for("echo"))
    assert mode == avp.Mode.KV_CACHE
    return context_id


def refused(url: str, parts: Callable[[], list[Part]], *, in_session: bool = True,
            extensions: tuple[str, ...] = (A2A_URI,)) -> AgentProblem:
    async def fn(c: A2AClient) -> AgentProblem:
        ctx = await session(c) if in_session else None
        msg = c.message(parts(), ctx, avp_parts=False)
        msg.extensions.extend(extensions)
        with pytest.raises(AgentProblem) as e:
            await c.send_message(msg)
        return e.value
    p: AgentProblem = with_client(url, fn)
    return p


def avp_raw(data: bytes, **meta: Any) -> Part:
    p = Part(raw=data, media_type=MEDIA_TYPE)
    if meta:
        p.metadata.update({A2A_URI: meta})
    return p


def avp_url(url: str, size: int, digest: str) -> Part:
    p = Part(url=url, media_type=MEDIA_TYPE)
    p.metadata.update({A2A_URI: {"size": size, "digest": digest}})
    return p


def q() -> Part:
    return Part(text="the question")


def test_corrupt_bytes_under_the_avp_media_type(agent: str) -> None:
    bad = b"\x00" * 8 + KV[8:]  # the magic gone
    p = refused(agent, lambda: [q(), avp_raw(bad)])
    assert p.problem == "avp-error" and p.code == avp.ErrorCode.BAD_MAGIC and p.part == 1
    p = refused(agent, lambda: [q(), avp_raw(KV[: len(KV) // 2])])
    assert p.problem == "avp-error" and p.code == avp.ErrorCode.TRUNCATED
    flipped = bytearray(KV)
    flipped[-100] ^= 0xFF  # a tensor byte: the CRC catches it in verified mode
    p = refused(agent, lambda: [q(), avp_raw(bytes(flipped))])
    assert p.problem == "avp-error" and p.code is not None


def test_by_value_size_or_digest_that_do_not_match(agent: str) -> None:
    p = refused(agent, lambda: [q(), avp_raw(KV, size=len(KV) + 1)])
    assert p.problem == "bad-part"
    p = refused(agent, lambda: [q(), avp_raw(KV, digest="0" * 64)])
    assert p.problem == "bad-part"


def test_oversized_inline_part(agent: str) -> None:
    big = avp.encode(echo_kv(ECHO_ID, 200))  # ~100 KB > 64 KiB, under the request bound
    p = refused(agent, lambda: [q(), avp_raw(big)])
    assert p.problem == "inline-too-large" and p.maximum == MAX_INLINE


def test_request_body_over_the_inline_bound_is_413(agent: str) -> None:
    huge = avp.encode(echo_kv(ECHO_ID, 1200))  # ~600 KB: base64 of it passes the body bound
    p = refused(agent, lambda: [q(), avp_raw(huge)])
    assert p.problem == "request-too-large"


def test_digest_mismatch_by_reference(agent: str) -> None:
    with liar() as base:
        digest = hashlib.sha256(KV).hexdigest()
        url = f"{base}/messages/{digest}"
        p = refused(agent, lambda: [q(), avp_url(url, 4096, digest)])
        assert p.problem == "digest-mismatch"
        # Declared size shorter than what the server sends: still not the message.
        p = refused(agent, lambda: [q(), avp_url(url, 100, digest)])
        assert p.problem == "digest-mismatch"


def test_unreachable_reference(agent: str) -> None:
    digest = hashlib.sha256(KV).hexdigest()
    port = closed_port()
    p = refused(agent, lambda: [q(), avp_url(f"http://127.0.0.1:{port}/messages/{digest}",
                                              len(KV), digest)])
    assert p.problem == "reference-unreachable"
    # Under the agent's own binding, a digest it does not hold (R-A2A4.6).
    p = refused(agent, lambda: [q(), avp_url(f"{agent}/avp/v1/messages/{digest}", len(KV),
                                              digest)])
    assert p.problem == "reference-unreachable"


def test_reference_outside_the_fetch_policy_and_malformed_references(agent: str) -> None:
    digest = hashlib.sha256(KV).hexdigest()
    p = refused(agent, lambda: [q(), avp_url(f"file:///tmp/{digest}", len(KV), digest)])
    assert p.problem == "reference-refused"
    p = refused(agent, lambda: [q(), avp_url(f"http://127.0.0.1:1/x/{'1' * 64}", 10, digest)])
    assert p.problem == "bad-part"  # the URL does not name the digest (R-A2A4.4)
    p = refused(agent, lambda: [q(), avp_url(f"http://127.0.0.1:1/{digest}", 1 << 40, digest)])
    assert p.problem == "avp-error" and p.code == avp.ErrorCode.LIMIT_MESSAGE
    no_meta = Part(url=f"http://127.0.0.1:1/{digest}", media_type=MEDIA_TYPE)
    assert refused(agent, lambda: [q(), no_meta]).problem == "bad-part"


def test_unknown_extension_version(agent: str) -> None:
    v2 = "https://agent-vector-protocol.org/ext/a2a/v2"
    p = refused(agent, lambda: [q(), avp_raw(KV)], in_session=False, extensions=(v2,))
    assert p.problem == "unsupported-extension-version" and p.supported == (A2A_URI,)


def test_malformed_parts_and_missing_session(agent: str) -> None:
    assert refused(agent, lambda: [q(), avp_raw(KV), avp_raw(KV)]).problem == "bad-part"
    assert refused(agent, lambda: [q(), Part(text="x", media_type=MEDIA_TYPE)]
                   ).problem == "bad-part"
    assert refused(agent, lambda: [avp_raw(KV)]).problem == "bad-part"  # no text (R-A2A5.1)
    p = refused(agent, lambda: [q(), avp_raw(KV)], in_session=False)
    assert p.problem == "session-unknown"


def test_the_agent_still_serves_after_every_refusal(agent: str) -> None:
    async def fn(c: A2AClient) -> str:
        return (await c.ask("still here", initiator_for("echo", tokens=8))).answer
    assert with_client(agent, fn) == "KV_CACHE with 3 tensors: still here"
