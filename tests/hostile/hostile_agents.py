"""The agent protocols' entry points of the hostile corpus: avp_agents' A2A extension server
(spec/avp-a2a.md) and MCP binding (spec/avp-mcp.md), each a real process
(hostile_agent_server.py: the runtime's agent on the tiny receiver model) driven by the official
SDKs' clients (a2a-sdk's ``create_client`` under ``avp_agents.a2a_client.A2AClient``; the mcp
SDK's ``mcp.Client``) from the runner's forked child.

    a2a.handshake   the case as the HELLO part of a SendMessage (by value), no session yet
    a2a.message     a handshake for the mode the case's kind needs, then the case by value:
                    ``Part.raw`` (base64 in the JSON-RPC body) with its size and digest
    a2a.reference   the same session, the case by reference: ``Part.url`` to a plain HTTP
                    server that serves the bytes as they are (no binding to vet them), with
                    size and digest (R-A2A4.4): the agent fetches, hashes and decodes them
    mcp.blob        ``avp_answer(prompt, payload={"blob": base64})`` (R-MCP4.1)
    mcp.url         ``avp_answer(prompt, payload={"url", "size", "digest"})``, the same host

The contract is the runner's: success, or the binding's defined refusal. A refusal carrying an
AVP code (problem ``avp-error``) is recorded as that code (``refused:MODEL_MISMATCH``); another
problem of the documents (``inline-too-large``, ``digest-mismatch``, a 413
``request-too-large``...) as ``refused:<problem>``. An answer without one of the documents'
problems (the SDK's generic internal error, an MCP tool error with no problem in its
``structuredContent``) means an exception escaped the binding: a failure. After every request
the server must still answer (its agent card, its binding's description).

Memory: the server's high-water RSS above its warmed-up baseline (a fresh server per run,
forked from a zygote that has the model and the SDKs loaded) plus the client child's growth.
Budget: output + 64 MiB, plus ``INLINE_FACTOR`` bytes per payload byte by value and
``REFERENCE_FACTOR`` by reference (see their comments).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hostile_entries as he

import avp_codec as avp

# By value the payload crosses two JSON-RPC stacks as base64 (4/3 of its bytes), and each holds
# it several times at once: the A2A server keeps the request body, its decoded text, the parsed
# string and the protobuf's bytes (and our HEADER check a view of those), the SDK client its
# JSON text, the encoded body and the message's bytes. Measured on this runner: 8 MiB of payload
# refused at its HEADER (no AVP work) costs the A2A server 65 MB and the client child ~60 MB,
# about 8 bytes per payload byte on each side (MCP a little less). That is the SDKs' cost of an
# inline payload, bounded by maxInlineBytes (1 MiB by default: at most 16 MiB per request); this
# runner's servers allow 32 MiB so that every case goes through by value, and the budget says
# so: 16 bytes per payload byte on top of output + 64 MiB.
INLINE_FACTOR = 16.0
# By reference the agent holds the fetched bytes (at most the declared size) and the decoder's
# buffer holds one structure whole while it waits for its end (a HEADER with 15 MiB of metadata
# is 15 MiB): 2 bytes per payload byte. The client child only writes a file.
REFERENCE_FACTOR = 2.0
PROMPT = "Go on."


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG: this process gets SIGTERM when the one that started it dies, so a
    runner that is killed leaves no zygote, server or reference host behind."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)


class Zygote:
    """``hostile_agent_server.py zygote``: Python, torch, the model and the SDKs loaded once;
    ``spawn`` forks a fresh server from it (seconds, where a new process takes tens)."""

    def __init__(self, root: Path, timeout: float = 240.0) -> None:
        self.root, self.timeout, self.seq = root, timeout, 0
        root.mkdir(parents=True, exist_ok=True)
        self.out = root / "stdout"
        with open(self.out, "wb") as f, open(root / "stderr", "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("hostile_agent_server.py")),
                 "zygote"], stdin=subprocess.PIPE, stdout=f, stderr=err,
                preexec_fn=die_with_parent)
        self._wait(lambda line: line == b"AVP-HOSTILE-ZYGOTE READY", "the zygote")

    def _wait(self, match: Any, what: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for line in self.out.read_bytes().splitlines():
                if match(line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = (self.root / "stderr").read_bytes()[-2000:].decode(errors="replace")
        raise RuntimeError(f"{what} did not start: {tail}")

    def spawn(self, proto: str, store: Path) -> dict[str, Any]:
        self.seq += 1
        seq = self.seq
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{proto} {store} {seq}\n".encode())
        self.proc.stdin.flush()

        def mine(line: bytes) -> bool:
            return line.startswith(b"AVP-HOSTILE-AGENT ") and \
                json.loads(line.split(b" ", 1)[1])["seq"] == seq

        line = self._wait(mine, f"the {proto} server")
        info: dict[str, Any] = json.loads(line.split(b" ", 1)[1])
        return info

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the zygote's loop ends
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


class ProtoServer:
    """An avp_agents server (``a2a`` or ``mcp``) with the tiny receiver model, forked from the
    zygote; fresh for every run (``per_run``: forking one takes a second or two), warmed up
    with one valid exchange of every kind the entries make. Memory as for the ``http.*``
    entries (``hostile_entries.AgentServer``): the server's high-water RSS above its warmed-up
    baseline, here the run's own (no earlier run of the case is included)."""

    per_run = True

    def __init__(self, proto: str, model_id: bytes, zygote: Zygote, refs: RefHost) -> None:
        self.proto, self.model_id, self.zygote, self.refs = proto, model_id, zygote, refs
        self.pid = 0
        self.url = ""
        self.restarts = -1
        self.baseline = 0
        self._dir: Path | None = None
        self.start()

    def start(self) -> None:
        import tempfile

        self.restarts += 1
        self._dir = Path(tempfile.mkdtemp(prefix=f"avp-hostile-{self.proto}-"))
        info = self.zygote.spawn(self.proto, self._dir / "store")
        if bytes.fromhex(info["model_id"]) != self.model_id:
            raise RuntimeError("the agent server built another model")
        self.pid, self.url = int(info["pid"]), f"http://127.0.0.1:{info['port']}"

    def alive(self) -> bool:
        return he.pid_alive(self.pid)  # the zygote's child, not ours

    def ensure(self) -> None:
        if not self.alive():
            self.stop()
            self.start()

    def stop(self) -> None:
        import shutil
        import signal

        if self.pid and self.alive():
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive():
                os.kill(self.pid, signal.SIGKILL)
        self.pid = 0
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def fresh(self, env: he.Env) -> None:
        self.stop()
        self.start()
        self.restarts -= 1  # a planned restart, not a crash
        # The receiver's own export, once, before the baseline (_warm).
        c = env.connector
        good = c.export_bytes(c.prefill([1, 2, 3]))
        asyncio.run(_warm(self.proto, self.url, good, env))
        self.refs.drop(good)
        self.baseline = self.mark()

    def mark(self) -> int:
        """Reset the server's peak-RSS mark; its RSS now."""
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")
        return he._proc_status(self.pid, "VmRSS")

    def peak(self) -> int:
        return max(0, he._proc_status(self.pid, "VmHWM") - self.baseline)

    def still_up(self) -> None:
        """The process answers its protocol's description and its binding's after every
        hostile request."""
        import httpx

        paths = ["/.well-known/agent-card.json"] if self.proto == "a2a" else []
        try:
            with httpx.Client(timeout=20, trust_env=False) as h:
                for path in [*paths, "/avp/v1/"]:
                    r = h.get(self.url + path)
                    if r.status_code != 200:
                        raise RuntimeError(f"the server answers GET {path} with "
                                           f"{r.status_code}")
        except httpx.HTTPError as e:
            raise RuntimeError(f"the server stopped answering: {type(e).__name__}") from None


class RefHost:
    """A plain HTTP server (``python -m http.server``) serving files as they are: the host of
    the by-reference payloads, which vets nothing, so the agent alone must."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "messages").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
             "--directory", str(root)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # "Serving HTTP on 127.0.0.1 port N ..."
        if " port " not in line:
            self.stop()
            raise RuntimeError(f"the reference host did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split(' port ')[1].split()[0])}"

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (self.root / "messages" / digest).write_bytes(data)
        return f"{self.url}/messages/{digest}"

    def drop(self, data: bytes) -> None:
        (self.root / "messages" / hashlib.sha256(data).hexdigest()).unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start(env: he.Env, groups: set[str]) -> None:
    """The servers the selected entries need (in the runner, before any child is forked); the
    SDK clients are imported here too, so no child counts their import as its growth."""
    wanted = [g for g in ("a2a", "mcp") if g in groups]
    if not wanted:
        return
    import avp_agents.a2a_client  # noqa: F401
    import avp_agents.mcp_client  # noqa: F401
    import mcp  # noqa: F401

    refs = RefHost(env.tmp / "refs")
    zygote = Zygote(env.tmp / "zygote")
    for g in wanted:  # stopped (Env.close) before the zygote and the reference host
        env.extras[g] = ProtoServer(g, env.connector.model_id, zygote, refs)
    env.extras["zygote"], env.extras["refs"] = zygote, refs


# ---------------------------------------------------------------- the clients


class _Initiator:
    """The corpus's HELLO (``hostile_entries._hello_for``: the receiver's model, the mode the
    case's kind needs) and its check of the ACCEPT."""

    def __init__(self, data: bytes, env: he.Env) -> None:
        from avp_runtime import handshake as hs

        self._init = hs.Initiator(he._peer_for(data, env))

    def hello(self) -> avp.Message:
        msg: avp.Message = self._init.hello()
        return msg

    def accept(self, msg: avp.Message) -> avp.Mode:
        mode: avp.Mode = self._init.handle_accept(msg).mode
        return mode

    def payload(self, mode: avp.Mode, text: str) -> bytes | None:
        return None


def _verdict(p: Any) -> BaseException:
    """A problem of the documents as the runner's outcome."""
    if p.problem == "avp-error" and p.code is not None:
        return avp.AvpError(p.code, p.detail)
    return he.Refused(p.problem, str(p)[:200])


def _parts(data: bytes, how: str, env: he.Env) -> list[Any]:
    from a2a.types import Part
    from avp_agents import A2A_URI, MEDIA_TYPE

    digest = hashlib.sha256(data).hexdigest()
    if how == "raw":
        part = Part(raw=data, media_type=MEDIA_TYPE, filename=f"{digest}.avp")
    else:
        part = Part(url=env.extras["refs"].put(data), media_type=MEDIA_TYPE,
                    filename=f"{digest}.avp")
    part.metadata.update({A2A_URI: {"size": len(data), "digest": digest}})
    return [Part(text=PROMPT), part]


async def _a2a(url: str, data: bytes, env: he.Env, how: str, timing: dict[str, float]) -> str:
    from a2a.types import Part
    from a2a.utils.errors import A2AError
    from avp_agents import MEDIA_TYPE, AgentProblem
    from avp_agents.a2a_client import A2AClient

    async with A2AClient(url, timeout=50) as c:
        if await c.discover() is None:
            raise RuntimeError(f"the agent declares no extension: {c.card_problem}")
        context_id = None
        if how != "hello":
            _, context_id = await c.handshake(_Initiator(data, env))
            parts = _parts(data, how, env)
        else:
            parts = [Part(raw=data, media_type=MEDIA_TYPE, filename="hello.avp")]
        msg = c.message(parts, context_id, avp_parts=True)
        timing["t1"] = time.perf_counter()
        try:
            reply = await c.send_message(msg)
        except AgentProblem as p:
            raise _verdict(p) from None
        except A2AError as e:  # no problem of ours: an exception escaped the executor
            raise RuntimeError(f"A2A error without a problem: {type(e).__name__}: "
                               f"{str(e)[:200]}") from None
        finally:
            timing["t2"] = time.perf_counter()
        return f"answered with {len(reply.parts)} parts"


async def _warm(proto: str, url: str, good: bytes, env: he.Env) -> None:
    # By value: the SDK's routes, the executor, the reader and the model have run once. (The
    # by-reference fetch's first use is left in the run it serves: an upper bound, and half
    # the warm-up time of a per-run server on a loaded machine.)
    await (_a2a if proto == "a2a" else _mcp)(url, good, env, "raw" if proto == "a2a"
                                                            else "blob", {})


def _run(data: bytes, env: he.Env, group: str, fn: Any, *args: Any) -> str:
    server: ProtoServer = env.extras[group]
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        return str(asyncio.run(fn(server.url, data, env, *args, timing)))
    finally:
        env.extras["server_peak"] = server.peak() if server.alive() else 0
        t3 = time.perf_counter()
        try:
            server.still_up()
        finally:
            env.extras["refs"].drop(data)
            # Timed: the hostile request alone (not the session set-up or the liveness check).
            t1, t2 = timing.get("t1", t0), timing.get("t2", t3)
            env.extras["untimed"] = (t1 - t0) + (time.perf_counter() - t2)


@he.entry("a2a.handshake", group="a2a", input_factor=INLINE_FACTOR)
def _a2a_handshake(data: bytes, path: Path, env: he.Env) -> str:
    return _run(data, env, "a2a", _a2a, "hello")


@he.entry("a2a.message", group="a2a", input_factor=INLINE_FACTOR)
def _a2a_message(data: bytes, path: Path, env: he.Env) -> str:
    return _run(data, env, "a2a", _a2a, "raw")


@he.entry("a2a.reference", group="a2a", input_factor=REFERENCE_FACTOR)
def _a2a_reference(data: bytes, path: Path, env: he.Env) -> str:
    return _run(data, env, "a2a", _a2a, "url")


async def _mcp(url: str, data: bytes, env: he.Env, how: str, timing: dict[str, float]) -> str:
    from avp_agents.mcp_client import client_extension, problem_of, server_params
    from mcp import Client
    from mcp.shared.exceptions import MCPError

    if how == "blob":
        arg: dict[str, Any] = {"blob": base64.b64encode(data).decode()}
    else:
        arg = {"url": env.extras["refs"].put(data), "size": len(data),
               "digest": hashlib.sha256(data).hexdigest()}
    async with Client(f"{url}/mcp", extensions=[client_extension()],
                      read_timeout_seconds=50) as c:
        if server_params(c) is None:
            raise RuntimeError("the server declares no AVP extension")
        timing["t1"] = time.perf_counter()
        try:
            result = await c.call_tool("avp_answer", {"prompt": PROMPT, "payload": arg})
        except MCPError as e:
            raise RuntimeError(f"MCP error {e.error.code}: {e.error.message[:200]}") from None
        finally:
            timing["t2"] = time.perf_counter()
    if not result.is_error:
        return f"answered: {json.dumps(result.structured_content)[:80]}"
    data_ = result.structured_content if isinstance(result.structured_content, dict) else {}
    if "problem" not in data_:  # the SDK's generic tool error: an exception escaped
        text = " ".join(getattr(b, "text", "") for b in result.content)
        raise RuntimeError(f"tool error without a problem: {text[:200]}")
    p = problem_of(result)
    assert p is not None
    raise _verdict(p)


@he.entry("mcp.blob", group="mcp", input_factor=INLINE_FACTOR)
def _mcp_blob(data: bytes, path: Path, env: he.Env) -> str:
    return _run(data, env, "mcp", _mcp, "blob")


@he.entry("mcp.url", group="mcp", input_factor=REFERENCE_FACTOR)
def _mcp_url(data: bytes, path: Path, env: he.Env) -> str:
    return _run(data, env, "mcp", _mcp, "url")
