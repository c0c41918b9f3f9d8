"""Two OS processes negotiating and handing work over HTTP on localhost, in all three modes.

The responder is always a separate process (`python -m avp_runtime.agent serve`, an avp_http
server); the initiator is this test process (sharing the session's model loads, over HTTP/2) or,
once, a second CLI process. Every process has a deadline and is stopped in `finally`, whatever
happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import avp_http
import pytest
from avp_runtime.agent import Agent
from avp_runtime.connector import Connector

import avp_codec as avp

pytestmark = pytest.mark.slow


TIMEOUT = 180.0
QUESTION = "What is 2 + 3? Answer with a number."


@contextmanager
def responder(model: str, tmp_path: Path, *extra: str) -> Iterator[dict[str, object]]:
    """Start `agent serve`; yield {"url": ...}; after the block, "answers" holds what the
    agent printed. The process is always stopped (SIGTERM, then SIGKILL)."""
    log = open(tmp_path / f"serve-{model}.log", "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [sys.executable, "-m", "avp_runtime.agent", "serve", "--model", model,
         "--timeout", str(TIMEOUT), "--max-new-tokens", "8", *extra],
        stdout=subprocess.PIPE, stderr=log, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    session: dict[str, object] = {}
    lines: list[str] = []
    try:
        port: list[int] = []
        # Read stdout on a thread so a process that never prints cannot hang the test.
        reader = threading.Thread(target=_read, args=(proc, port, lines), daemon=True)
        reader.start()
        for _ in range(int(TIMEOUT * 10)):  # bounded: 0.1 s steps up to the deadline
            if port or proc.poll() is not None:
                break
            reader.join(0.1)
        if not port:
            raise AssertionError(f"agent did not start: {Path(log.name).read_text()[-2000:]}")
        session["url"] = f"http://127.0.0.1:{port[0]}/avp/v1"
        yield session
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()
        log.close()
        session["answers"] = [json.loads(line.split(" ", 2)[2]) for line in lines
                              if line.startswith("AVP-AGENT ANSWER")]


def _read(proc: subprocess.Popen[bytes], port: list[int], lines: list[str]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:  # ends when the process closes its stdout
        line = raw.decode()
        lines.append(line)
        if line.startswith("AVP-AGENT LISTENING"):
            port.append(int(line.split()[-1]))


def _client(session: dict[str, object]) -> avp_http.AvpClient:
    url = session["url"]
    assert isinstance(url, str)
    return avp_http.AvpClient(url, timeout=TIMEOUT)


def test_same_model_hands_over_its_kv_cache(smol: Connector, tmp_path: Path) -> None:
    agent = Agent(smol, "a", steps=4, max_new_tokens=8)
    with responder("smollm2", tmp_path) as session, _client(session) as client:
        out = agent.send(client, QUESTION)
        # The same handoff again: the responder kept the payload, so only its digest goes.
        again = agent.send(client, QUESTION)
    assert out["mode"] == "KV_CACHE" and out["answer"] and not out["by_reference"]
    assert again["by_reference"] and again["payload_bytes"] == out["payload_bytes"]
    got, got_again = session["answers"]  # type: ignore[misc]
    assert got["mode"] == "KV_CACHE" and got["payload_bytes"] == out["payload_bytes"]
    assert got["answer"] == out["answer"] == got_again["answer"]
    assert got_again["by_reference"]
    # A real KV-cache of the prompt + 4 latent steps: 30 layers x K,V x 3 heads x 64 x fp32.
    assert out["payload_bytes"] > 30 * 2 * 3 * 64 * 4 * 20


def test_compatible_tokenizer_gets_a_projected_state(smol: Connector, gemma: Connector,
                                                     tmp_path: Path) -> None:
    agent = Agent(smol, "a", max_new_tokens=8, targets=[gemma])
    with responder("gemma", tmp_path) as session, _client(session) as client:
        out = agent.send(client, QUESTION)
    assert out["mode"] == "PROJECTION"
    assert out["shared_vocab"] is not None and out["shared_vocab"] > 40_000
    # One float32 vector of 640 plus the header and the question's token ids.
    assert out["payload_bytes"] < 4096
    (got,) = session["answers"]  # type: ignore[misc]
    assert got["mode"] == "PROJECTION" and got["answer"] == out["answer"]


def test_incompatible_tokenizer_falls_back_to_text(tmp_path: Path) -> None:
    # Both sides are CLI processes here: the initiator is `agent send` (over HTTP/1.1).
    with responder("tiny-random", tmp_path) as session:
        sender = subprocess.run(
            [sys.executable, "-m", "avp_runtime.agent", "send", "--model", "smollm2",
             "--url", str(session["url"]), "--http1", "--prompt", QUESTION,
             "--max-new-tokens", "8", "--timeout", str(TIMEOUT)],
            capture_output=True, timeout=TIMEOUT, check=False)
        assert sender.returncode == 0, sender.stderr.decode()[-2000:]
    out = json.loads(sender.stdout.decode().strip().splitlines()[-1])
    assert out["mode"] == "TEXT" and isinstance(out["answer"], str)
    assert out["peer_shared_vocab"] == 0  # the responder's count, from our VOCABULARY
    (got,) = session["answers"]  # type: ignore[misc]
    assert got["mode"] == "TEXT"


def test_payload_outside_the_negotiated_mode_is_refused(smol: Connector, tmp_path: Path) -> None:
    # Negotiate TEXT with the tiny peer, then send a KV_CACHE anyway: the responder checks the
    # payload against the mode itself and answers 422 UNSUPPORTED_CAPABILITY, at the
    # HEADER, before any tensor or the model runs.
    agent = Agent(smol, "a")
    with responder("tiny-random", tmp_path) as session, _client(session) as client:
        assert agent.handshake(client).mode == avp.Mode.TEXT
        with pytest.raises(avp.AvpError) as err:
            client.deliver(smol.export_bytes(smol.think("Hi", steps=0)))
        assert err.value.code == avp.ErrorCode.UNSUPPORTED_CAPABILITY
        assert getattr(err.value, "status", None) == 422
        # A KV_CACHE of another model in a KV session would be MODEL_MISMATCH; here the
        # session still serves TEXT after the refusal.
        reply = client.deliver(avp.text_message(QUESTION))
        assert reply.status == 200 and isinstance(reply.json()["answer"], str)
    assert [a["mode"] for a in session["answers"]] == ["TEXT"]  # type: ignore[union-attr]
