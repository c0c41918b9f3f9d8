"""The AVP extension for A2A (spec/avp-a2a.md) between real processes on 127.0.0.1: the agent is
``python -m avp_agents.a2a_server`` (the official a2a-sdk's routes on hypercorn), the client this
test process or ``python -m avp_agents.a2a_client``, both on the SDK."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from avp_agents import A2A_URI, PayloadHost
from avp_agents.a2a_client import A2AClient, Handoff, initiator_for

from .conftest import run_cli, server

ECHO_ID = hashlib.sha256(b"avp-agents echo model").hexdigest()
THRESHOLD = 32 << 10  # the echo KV of 8 positions is ~5 KB, of 200 positions ~100 KB


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with server("avp_agents.a2a_server", tmp_path_factory.mktemp("a2a"), "--model", "echo",
                "--max-inline", str(64 << 10)) as url:
        yield url


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with server("avp_agents.a2a_server", tmp_path_factory.mktemp("a2a-plain"), "--model",
                "echo", "--plain") as url:
        yield url


def ask(url: str, text: str, tokens: int, **kw: object) -> Handoff:
    async def run() -> Handoff:
        async with A2AClient(url, inline_threshold=THRESHOLD, **kw) as c:  # type: ignore[arg-type]
            return await c.ask(text, initiator_for("echo", tokens=tokens))
    return asyncio.run(run())


def test_card_declares_the_extension(agent: str) -> None:
    # R-A2A2.1: capabilities.extensions holds the URI with the params a client validates.
    card = httpx.get(f"{agent}/.well-known/agent-card.json", timeout=30).json()
    (ext,) = [e for e in card["capabilities"]["extensions"] if e["uri"] == A2A_URI]
    p = ext["params"]
    assert p["version"] == "1.0" and p["mediaType"] == "application/avp"
    assert "TEXT" in p["modes"] and "KV_CACHE" in p["modes"]
    assert p["maxInlineBytes"] == 64 << 10 and p["modelId"] == ECHO_ID
    assert p["httpBinding"] == f"{agent}/avp/v1"
    assert card["supportedInterfaces"][0]["url"] == f"{agent}/"


def test_small_kv_cache_goes_by_value(agent: str) -> None:
    out = ask(agent, "small", 8)
    # R-A2A4.2 / R-A2A6.1: the agent decoded all 3 tensors (K, V, TOKEN_IDS) of the raw part.
    assert out.mode == "KV_CACHE" and not out.fallback and not out.by_reference
    assert out.answer == "KV_CACHE with 3 tensors: small"
    assert out.payload_bytes < THRESHOLD
    assert out.metadata["payloadBytes"] == out.payload_bytes
    assert out.metadata["byReference"] is False and len(out.metadata["digest"]) == 64


def test_large_kv_cache_goes_by_reference_to_the_agents_binding(agent: str) -> None:
    out = ask(agent, "large", 200)
    # R-A2A4.4-4.6: stored on the card's httpBinding, read back locally and verified.
    assert out.by_reference and out.payload_bytes > THRESHOLD
    assert out.answer == "KV_CACHE with 3 tensors: large"
    assert out.metadata["byReference"] is True
    assert httpx.head(f"{agent}/avp/v1/messages/{out.metadata['digest']}",
                      timeout=30).status_code == 200


def test_large_kv_cache_by_reference_to_the_clients_own_host(agent: str) -> None:
    with PayloadHost() as host:
        out = ask(agent, "hosted", 200, host=host, reference="host")
        # R-A2A4.5: the agent fetched it from the client's binding server (a second GET works).
        assert httpx.get(f"{host.url}/messages/{out.metadata['digest']}",
                         timeout=30).status_code == 200
    assert out.by_reference and out.answer == "KV_CACHE with 3 tensors: hosted"


def test_agent_without_the_extension_gets_the_text_fallback(plain: str) -> None:
    card = httpx.get(f"{plain}/.well-known/agent-card.json", timeout=30).json()
    assert not card["capabilities"].get("extensions")
    out = ask(plain, "just the question", 200)
    # R-A2A5.2: text only; the answer carries no AVP metadata (R-A2A3.3).
    assert out.fallback and out.mode == "TEXT" and out.payload_bytes == 0
    assert out.answer == "text only: just the question" and out.metadata == {}


def test_client_process_against_both_agents(agent: str, plain: str) -> None:
    for url, mode, fallback in ((agent, "KV_CACHE", False), (plain, "TEXT", True)):
        r = run_cli("avp_agents.a2a_client", "--url", url, "--model", "echo", "--prompt", "hi",
                    "--inline-threshold", "1024", "--host-payloads")
        assert r.returncode == 0, r.stderr[-2000:]
        (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("AVP-A2A HANDOFF")]
        out = json.loads(line.split(" ", 2)[2])
        assert out["mode"] == mode and out["fallback"] is fallback
        assert out["by_reference"] is (not fallback)  # 16 positions > 1024 bytes


def test_runtime_agents_hand_over_a_kv_cache(tmp_path: Path) -> None:
    # The reference runtime on both sides (a tiny random Llama built from a fixed seed, so both
    # processes hold the same MODEL_ID): the handshake resolves KV_CACHE and the agent imports
    # the cache before it answers (by reference here; by value is the echo tests' path).
    with server("avp_agents.a2a_server", tmp_path, "--model", "tiny-random",
                "--max-new-tokens", "4") as url:
        r = run_cli("avp_agents.a2a_client", "--url", url, "--model", "tiny-random",
                    "--prompt", "\ua66e1 \ua66e2 \ua66e3", "--inline-threshold", "1000")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1].split(" ", 2)[2])
    assert out["mode"] == "KV_CACHE" and out["by_reference"] is True
    assert out["answer"].startswith("\ua66e") and out["payload_bytes"] > 1000


@pytest.mark.slow
def test_smollm2_kv_cache_over_a2a(tmp_path: Path) -> None:
    # A real SmolLM2-135M KV-cache (the question + 1 latent step, ~1.7 MB) over the SDK, once by
    # value (Part.raw, under an 8 MiB inline limit) and once by reference (over the 256 KiB
    # threshold: stored on the agent's binding, read back and verified); the agent's answer
    # continues from the imported cache. The client is this process (the model loaded once).
    from avp_agents.runtime import RuntimeInitiator

    question = "What is the capital of France? Answer in one short sentence."
    with server("avp_agents.a2a_server", tmp_path, "--model", "smollm2",
                "--max-new-tokens", "8", "--max-inline", str(8 << 20)) as url:
        initiator = RuntimeInitiator.load("smollm2", steps=1)

        async def go(threshold: int) -> Handoff:
            async with A2AClient(url, inline_threshold=threshold) as c:
                return await c.ask(question, initiator)
        by_value = asyncio.run(go(8 << 20))
        by_ref = asyncio.run(go(256 << 10))
    for out, by_reference in ((by_value, False), (by_ref, True)):
        assert out.mode == "KV_CACHE" and out.by_reference is by_reference
        assert out.payload_bytes > 1 << 20 and out.metadata["byReference"] is by_reference
        assert "paris" in out.answer.lower()
    assert by_value.payload_bytes == by_ref.payload_bytes
