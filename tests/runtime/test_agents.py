"""Two OS processes negotiating and handing work over on localhost, in all three modes.

The responder is always a separate process (`python -m avp_runtime.agent serve`); the initiator
is this test process (sharing the session's model loads) or, once, a second CLI process. Every
process has a deadline and is killed in `finally`, whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from avp_runtime.agent import MAX_MESSAGE, Agent
from avp_runtime.connector import Connector
from avp_runtime.transport import FramedSocket

import avp_codec as avp

pytestmark = pytest.mark.slow


TIMEOUT = 180.0
QUESTION = "What is 2 + 3? Answer with a number."


@contextmanager
def responder(model: str, tmp_path: Path, *extra: str) -> Iterator[dict[str, object]]:
    """Start `agent serve`; yield {"port": ...}; after the block, "answers" holds what the
    agent printed. The process is always reaped."""
    log = open(tmp_path / f"serve-{model}.log", "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [sys.executable, "-m", "avp_runtime.agent", "serve", "--model", model,
         "--timeout", str(TIMEOUT), "--max-new-tokens", "8", *extra],
        stdout=subprocess.PIPE, stderr=log, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    session: dict[str, object] = {}
    try:
        port: list[int] = []
        # Read the "LISTENING <port>" line on a thread so a process that never prints cannot
        # hang the test past its deadline.
        reader = threading.Thread(target=lambda: port.append(_port(proc)), daemon=True)
        reader.start()
        reader.join(TIMEOUT)
        if not port:
            raise AssertionError(f"agent did not start: {Path(log.name).read_text()}")
        session["port"] = port[0]
        yield session
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, Path(log.name).read_text()[-2000:]
        session["answers"] = [json.loads(line.split(" ", 2)[2]) for line in out.decode()
                              .splitlines() if line.startswith("AVP-AGENT ANSWER")]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
        log.close()


def _port(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdout is not None
    for _ in range(100):  # bounded: the line comes first, after the model load
        line = proc.stdout.readline().decode()
        if not line:
            break
        if line.startswith("AVP-AGENT LISTENING"):
            return int(line.split()[-1])
    raise AssertionError("agent exited without listening")


def _connect(session: dict[str, object]) -> FramedSocket:
    port = session["port"]
    assert isinstance(port, int)
    return FramedSocket.connect("127.0.0.1", port, max_frame=MAX_MESSAGE, timeout=TIMEOUT,
                                retry_for=10)


def test_same_model_hands_over_its_kv_cache(smol: Connector, tmp_path: Path) -> None:
    agent = Agent(smol, "a", steps=4, max_new_tokens=8)
    with responder("smollm2", tmp_path) as session:
        conn = _connect(session)
        try:
            out = agent.send(conn, QUESTION)
        finally:
            conn.close()
    assert out["mode"] == "KV_CACHE"
    (got,) = session["answers"]  # type: ignore[misc]
    assert got["mode"] == "KV_CACHE" and got["payload_bytes"] == out["payload_bytes"]
    assert got["answer"]
    # A real KV-cache of the prompt + 4 latent steps: 30 layers x K,V x 3 heads x 64 x fp32.
    assert out["payload_bytes"] > 30 * 2 * 3 * 64 * 4 * 20


def test_compatible_tokenizer_gets_a_projected_state(smol: Connector, gemma: Connector,
                                                     tmp_path: Path) -> None:
    agent = Agent(smol, "a", max_new_tokens=8, targets=[gemma])
    with responder("gemma", tmp_path) as session:
        conn = _connect(session)
        try:
            out = agent.send(conn, QUESTION)
        finally:
            conn.close()
    assert out["mode"] == "PROJECTION"
    assert out["shared_vocab"] is not None and out["shared_vocab"] > 40_000
    # One float32 vector of 640 plus the header and the question's token ids.
    assert out["payload_bytes"] < 4096
    (got,) = session["answers"]  # type: ignore[misc]
    assert got["mode"] == "PROJECTION" and got["answer"]


def test_incompatible_tokenizer_falls_back_to_text(tmp_path: Path) -> None:
    # Both sides are CLI processes here: the initiator is `agent send`.
    with responder("tiny-random", tmp_path) as session:
        sender = subprocess.run(
            [sys.executable, "-m", "avp_runtime.agent", "send", "--model", "smollm2",
             "--port", str(session["port"]), "--prompt", QUESTION, "--max-new-tokens", "8",
             "--timeout", str(TIMEOUT)],
            capture_output=True, timeout=TIMEOUT, check=False)
        assert sender.returncode == 0, sender.stderr.decode()[-2000:]
    out = json.loads(sender.stdout.decode().strip().splitlines()[-1])
    assert out["mode"] == "TEXT"
    assert out["peer_shared_vocab"] == 0  # the responder's count, from our VOCABULARY
    (got,) = session["answers"]  # type: ignore[misc]
    assert got["mode"] == "TEXT" and isinstance(got["answer"], str)


def test_payload_outside_the_negotiated_mode_is_refused(smol: Connector, tmp_path: Path) -> None:
    # Negotiate TEXT with the tiny peer, then send a KV_CACHE anyway: the responder checks the
    # payload against the mode itself and answers ERROR UNSUPPORTED_CAPABILITY.
    agent = Agent(smol, "a")
    with responder("tiny-random", tmp_path) as session:
        conn = _connect(session)
        try:
            assert agent.handshake(conn).mode == avp.Mode.TEXT
            conn.send(smol.export_bytes(smol.think("Hi", steps=0)))
            reply, _ = conn.recv_message()
        finally:
            conn.close()
    assert reply.kind == avp.Kind.ERROR
    assert reply.get(avp.MetaKey.ERROR_CODE) == avp.ErrorCode.UNSUPPORTED_CAPABILITY
    assert session["answers"] == []
