"""The public entry points the hostile corpus is run through, one small registered function each.

An entry takes the case's bytes (and the same bytes as a file, for the entry points that read
files) and either returns a one-line summary (the input was accepted) or raises. The runner
(hostile_runner.py) calls each in a forked child and judges it by the contract: AvpError with a
registry code, or success; never another exception, a hang, or memory beyond the output asked
for plus 64 MiB. CLI entries (avp-dump) are judged by exit status and, for a usage or input
error (exit 2), by printing one line.

To cover a new entry point (the HTTP endpoints, say), register a function here:

    @entry("http.post", group="http")
    def _http_post(data: bytes, path: Path, env: Env) -> str: ...
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import avp_codec as avp


@dataclass(frozen=True)
class Entry:
    name: str
    group: str  # codec, json, dump, runtime: the part of the project the entry point is in
    takes: str  # "avp" (message bytes) or "json" (a runner JSON document)
    run: Callable[[bytes, Path, Env], str]
    cli: bool = False
    # Bytes the entry point may hold per input byte beyond output + 64 MiB: a payload carried
    # by value inside JSON (base64, 4/3) is held as the request body and again as its parsed and
    # decoded forms (hostile_agents.py states which copies).
    input_factor: float = 0.0


ENTRIES: dict[str, Entry] = {}


class Refused(Exception):
    """A refusal within the contract that carries no AVP code (an HTTP problem of the binding's
    own, 413 say): the runner records it as ``refused:<label>``."""

    def __init__(self, label: str, detail: str = "") -> None:
        super().__init__(detail)
        self.label = label


def entry(name: str, *, group: str, takes: str = "avp", cli: bool = False,
          input_factor: float = 0.0
          ) -> Callable[[Callable[[bytes, Path, Env], str]], Callable[[bytes, Path, Env], str]]:
    def register(fn: Callable[[bytes, Path, Env], str]) -> Callable[[bytes, Path, Env], str]:
        ENTRIES[name] = Entry(name, group, takes, fn, cli, input_factor)
        return fn
    return register


@dataclass
class Env:
    """What the entries need, built once in the runner before any child is forked."""

    tmp: Path
    connector: Any = None  # a tiny random Llama with SmolLM2's tokenizer and vocabulary size
    local: Any = None  # the runtime's handshake LocalSide for that connector
    reference: Path | None = None  # a small valid message (the other side of avp-dump diff)
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, tmp: Path, *, http: bool = False) -> Env:
        from avp_runtime import handshake as hs
        from avp_runtime import identity

        # The codec's compiled kernels load once here, before any child is forked, as a
        # long-running process (and every server started by avp_http.serve) has them: their
        # one-time ~100 MB is the process's, not any input's (avp_codec.load_kernels).
        import avp_codec

        avp_codec.load_kernels()
        c = tiny_connector()
        # The control tokens a prompt gets from the template alone (the text oracle's baseline).
        controls = len([i for i in c.encode_prompt("") if i in _controls(c)])
        vocab = identity.vocabulary(c.tokenizer)
        local = hs.LocalSide(agent_name="hostile", model_id=c.model_id,
                             tokenizer_id=c.tokenizer_id, vocabulary=vocab,
                             known_vocabularies={c.tokenizer_id: vocab})
        ref = tmp / "reference.avp"
        ref.write_bytes(c.export_bytes(c.prefill([1, 2, 3])))
        env = cls(tmp, c, local, ref, {"prompt_controls": controls})
        if http:
            env.extras["http"] = AgentServer(c.model_id)
        return env

    def close(self) -> None:
        for key in [k for k, v in self.extras.items() if hasattr(v, "stop")]:
            self.extras.pop(key).stop()  # the agent servers and the reference host


def tiny_connector() -> Any:
    """The receiver of the runtime and HTTP entries: a tiny random Llama (fixed config and seed,
    so the corpus runner and the agent server build the same model and MODEL_ID) with SmolLM2's
    tokenizer and vocabulary size."""
    import torch
    from avp_runtime import models
    from avp_runtime.connector import Connector
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(str(models.resolve(models.DEFAULT_MODEL)[1]))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512)
    c = Connector(LlamaForCausalLM(cfg).eval(), tok, name="hostile-tiny")
    c.spec  # probe now, not inside a child  # noqa: B018
    return c


def _controls(c: Any) -> frozenset[int]:
    from avp_runtime import prompts

    return prompts.control_ids(c.tokenizer)


# ---------------------------------------------------------------- codec


@entry("decode", group="codec")
def _decode(data: bytes, path: Path, env: Env) -> str:
    m = avp.decode(data)
    return f"{m.kind.name}, {len(m.tensors)} tensors"


@entry("decoder", group="codec")
def _decoder(data: bytes, path: Path, env: Env) -> str:
    dec = avp.Decoder()
    dec.feed(data)
    dec.end_of_input()
    n = 0
    while True:
        ev = dec.next_event()
        if ev is avp.NEED_DATA:
            raise RuntimeError("Decoder wants data after end_of_input()")
        n += 1
        if isinstance(ev, avp.EndEvent):
            return f"{n} events"


@entry("indexed", group="codec")
def _indexed(data: bytes, path: Path, env: Env) -> str:
    r = avp.IndexedReader(data)
    for i in range(len(r)):
        r.tensor(i).raw_bytes()
    return f"{len(r)} tensors"


@entry("decode_file", group="codec")
def _decode_file(data: bytes, path: Path, env: Env) -> str:
    return f"{len(avp.decode_file(path).tensors)} tensors"


@entry("accessors", group="codec")
def _accessors(data: bytes, path: Path, env: Env) -> str:
    m = avp.decode(data)
    avp.dumps_canonical_json(m)
    for t in m.tensors:
        t.raw_bytes()
        t.values()
    return f"{len(m.tensors)} tensors read"


@entry("canonical", group="codec")
def _canonical(data: bytes, path: Path, env: Env) -> str:
    """The round trip a JSON-speaking system makes: decode, stream the canonical JSON text out
    with the bounded writer, and later build the message back from that text (the strict
    parser, with a value limit that admits the document) and encode it. The decoded message is
    released once its text is written: the caller asks for one message at a time, not two."""
    m = avp.decode(data)
    stored = b"".join(bytes(t.stored) for t in m.tensors)
    with tempfile.TemporaryFile("w+", encoding="utf-8") as fp:
        avp.write_canonical_json(m, fp)
        del m
        fp.seek(0)
        text = fp.read()
    back = avp.from_canonical_json(text, stored, max_values=len(text))
    del text
    return f"re-encoded {len(avp.encode(back))} bytes"


@entry("dequantize", group="codec")
def _dequantize(data: bytes, path: Path, env: Env) -> str:
    from avp_codec import quant

    m = quant.dequantize_message(avp.decode(data))
    return f"{sum(t.raw_length for t in m.tensors)} bytes dequantized"


def _strict_json(data: bytes) -> Any:
    """The codec's own strict RFC 8259 parser (the one its JSON inputs go through), else the
    standard library's."""
    try:
        from avp_codec._json import loads
    except ImportError:  # pragma: no cover - a codec without it
        return json.loads(data)
    return loads(data)


@entry("json.from_canonical", group="json", takes="json")
def _from_canonical(data: bytes, path: Path, env: Env) -> str:
    obj = _strict_json(data)
    m = avp.from_canonical_json(obj["document"], bytes.fromhex(obj["stored"]))
    return f"encoded {len(avp.encode(m))} bytes"


# ---------------------------------------------------------------- avp-dump


class _Count(io.TextIOBase):
    """A stdout that counts what is written and keeps none of it."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, s: str) -> int:
        self.n += len(s)
        return len(s)


def _dump(args: list[str]) -> str:
    from avp_tools.dump_cli import main

    out, err = _Count(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # type: ignore[type-var]
        try:
            main.main(args, prog_name="avp-dump", standalone_mode=True)
        except SystemExit as e:
            code = e.code
    lines = err.getvalue().splitlines()
    if code not in (0, 1, 2):
        raise RuntimeError(f"avp-dump exited with {code!r}")
    if code == 2 and len(lines) != 1:
        raise RuntimeError(f"avp-dump exit 2 printed {len(lines)} lines, not one: {lines[:3]}")
    return f"exit {code}, {out.n} chars out"


for _view, _flags in [("summary", []), ("json", ["--json"]), ("map", ["--map"]),
                      ("hex", ["--hex"]), ("issues", ["--issues"]), ("stats", ["--stats"])]:
    def _make(flags: list[str]) -> Callable[[bytes, Path, Env], str]:
        return lambda data, path, env: _dump([*flags, "--color", "never", str(path)])
    entry(f"dump.{_view}", group="dump", cli=True)(_make(_flags))


@entry("dump.diff", group="dump", cli=True)
def _dump_diff(data: bytes, path: Path, env: Env) -> str:
    return _dump(["diff", str(env.reference), str(path)])


# ---------------------------------------------------------------- runtime


@entry("runtime.import", group="runtime")
def _runtime_import(data: bytes, path: Path, env: Env) -> str:
    ctx = env.connector.import_(data)
    return f"context of {ctx.context_length}"


@entry("runtime.generate", group="runtime")
def _runtime_generate(data: bytes, path: Path, env: Env) -> str:
    c = env.connector
    g = c.generate([42], context=c.import_(data), max_new_tokens=2)
    return f"generated {len(g.token_ids)}"


@entry("runtime.projection", group="runtime")
def _runtime_projection(data: bytes, path: Path, env: Env) -> str:
    from avp_runtime import projection as proj

    c = env.connector
    got = proj.receive(data, c, new_tokens=2)
    proj.generate_after(c, got, max_new_tokens=2)
    return f"projection of {got.states.shape[1]} after {got.context_ids.shape[1]} ids"


@entry("runtime.text", group="runtime")
def _runtime_text(data: bytes, path: Path, env: Env) -> str:
    from avp_runtime import prompts

    c = env.connector
    text = prompts.read_text(data)
    ids = c.encode_prompt(text)
    controls = len([i for i in ids if i in _controls(c)])
    want = env.extras["prompt_controls"]
    if controls != want:  # the oracle: control tokens come from the template only
        raise RuntimeError(f"{controls - want} control tokens came from the text")
    g = c.generate(text, max_new_tokens=2)
    return f"{len(ids)} prompt ids, generated {len(g.token_ids)}"


@entry("runtime.handshake", group="runtime")
def _runtime_handshake(data: bytes, path: Path, env: Env) -> str:
    from avp_runtime import handshake as hs

    reply, res = hs.Responder(env.local).handle_hello(avp.decode(data, limits=hs.LIMITS))
    avp.decode(avp.encode(reply))
    return f"replied {reply.kind.name}" + (f" ({res.mode.name})" if res is not None else "")


# ---------------------------------------------------------------- the agent server (avp_http)

def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (not a zombie), also when it is no child of ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class AgentServer:
    """The runtime's agent server (avp_runtime.agent.AgentReceiver on avp_http, hypercorn) with
    the tiny receiver model, in its own process (hostile_server.py).

    Its memory is measured from outside. A long-running process keeps the pages it freed (the
    allocator reuses them without new RSS), so a per-request mark would miss what a request
    reuses; instead the runner starts a fresh server for every case (`fresh`), warms it up with
    one valid handshake and TEXT delivery, resets its peak-RSS mark there (`baseline`), and
    each HTTP run reports the server's high-water mark above that baseline: an upper bound of
    that run's cost (it includes the case's earlier HTTP runs)."""

    def __init__(self, model_id: bytes, timeout: float = 120.0) -> None:
        self.model_id, self.timeout = model_id, timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.restarts = -1
        self.baseline = 0
        self._owner = os.getpid()
        self.start()

    def start(self) -> None:
        import tempfile
        import time

        self.restarts += 1
        self._dir = Path(tempfile.mkdtemp(prefix="avp-hostile-server-"))
        out = self._dir / "stdout"
        with open(out, "wb") as f, open(self._dir / "stderr", "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("hostile_server.py")),
                 str(self._dir / "store")], stdout=f, stderr=err)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for line in out.read_bytes().splitlines():
                if line.startswith(b"AVP-HOSTILE-SERVER "):
                    info = json.loads(line.split(b" ", 1)[1])
                    if bytes.fromhex(info["model_id"]) != self.model_id:
                        self.stop()
                        raise RuntimeError("the agent server built another model")
                    self.url = f"http://127.0.0.1:{info['port']}/avp/v1"
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = (self._dir / "stderr").read_bytes()[-2000:].decode(errors="replace")
        self.stop()
        raise RuntimeError(f"the agent server did not start: {tail}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        if self.proc is None:
            return False
        if os.getpid() == self._owner:
            return self.proc.poll() is None
        # In a forked child the server is no child of ours (poll() would say it exited).
        return pid_alive(self.proc.pid)

    def ensure(self) -> None:
        if not self.alive():
            self.stop()
            self.start()

    def fresh(self, env: Env) -> None:
        """A new server process for the next case, warmed up, its peak-RSS mark reset."""
        self.stop()
        self.start()
        self.restarts -= 1  # a planned restart, not a crash
        import avp_http

        with avp_http.AvpClient(self.url, http2=False, timeout=60) as client:
            client.handshake(_hello_for(avp.encode(avp.text_message("")), env))
            client.deliver(avp.text_message("Warm up."))
        self.baseline = self.mark()

    def stop(self) -> None:
        import shutil

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def mark(self) -> int:
        """Reset the server's peak-RSS mark; its RSS now."""
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")
        return _proc_status(self.pid, "VmRSS")

    def peak(self) -> int:
        """The server's high-water RSS above its warmed-up baseline."""
        return max(0, _proc_status(self.pid, "VmHWM") - self.baseline)


def _proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def _hello_for(data: bytes, env: Env) -> avp.Message:
    """A HELLO from a peer with the receiver's model and vocabulary offering the mode the case's
    kind needs (KV_CACHE, PROJECTION, else TEXT), so the delivery reaches the model."""
    from avp_runtime import handshake as hs

    return hs.Initiator(_peer_for(data, env)).hello()


def _peer_for(data: bytes, env: Env) -> Any:
    """The handshake side (hs.LocalSide) of that peer."""
    from avp_runtime import handshake as hs

    kind = int.from_bytes(data[32:34], "little") if len(data) >= 34 else 0
    modes = {int(avp.Kind.KV_CACHE): (int(avp.Mode.KV_CACHE), int(avp.Mode.TEXT)),
             int(avp.Kind.HIDDEN_STATE): (int(avp.Mode.PROJECTION), int(avp.Mode.TEXT))}.get(
                 kind, (int(avp.Mode.TEXT),))  # TEXT is always offered
    local = env.local
    return hs.LocalSide(agent_name="hostile-peer", model_id=local.model_id,
                        tokenizer_id=local.tokenizer_id, vocabulary=local.vocabulary,
                        modes=modes)


def _http(resource: str, data: bytes, env: Env, *, handshake: bool = False) -> str:
    """One hostile body to the server's resource over HTTP/1.1 (a real socket and client).

    200 is success; a problem carrying an AVP code raises that AvpError (RemoteAvpError); another
    4xx problem is a refusal of the binding's own (Refused: HTTP-status-slug); a 5xx, an answer
    that is not a problem, or a server that stops answering afterwards is a failure. The server's
    high-water RSS above its baseline (AgentServer) goes to env.extras["server_peak"]."""
    import time

    import avp_http

    server: AgentServer = env.extras["http"]
    session = None
    t0 = time.perf_counter()
    if handshake:  # the session is set up before the measured request; its failure is ours
        try:
            session = avp_http.open_session(server.url, _hello_for(data, env), timeout=50)
        except (avp.AvpError, avp_http.HttpProblem) as e:
            raise RuntimeError(f"the corpus's own handshake failed: {e}") from None
    t1 = time.perf_counter()
    try:
        return avp_http.check_body(f"{server.url}/{resource}", data, session=session,
                                   timeout=50)
    except avp_http.HttpProblem as e:
        if e.status >= 500:
            raise RuntimeError(f"{e.status} {e.slug}: {e.detail[:200]}") from None
        raise Refused(f"HTTP-{e.status}-{e.slug}", e.detail[:200]) from None
    finally:
        env.extras["server_peak"] = server.peak() if server.alive() else 0
        t2 = time.perf_counter()
        _still_up(server)
        # Timed: the request alone (not the corpus's own handshake or the liveness check).
        env.extras["untimed"] = (t1 - t0) + (time.perf_counter() - t2)


def _still_up(server: AgentServer) -> None:
    """The server must answer its service description after every hostile request."""
    import httpx

    try:
        with httpx.Client(timeout=20, trust_env=False) as c:
            r = c.get(server.url)
    except httpx.HTTPError as e:
        raise RuntimeError(f"the server stopped answering: {type(e).__name__}") from None
    if r.status_code != 200:
        raise RuntimeError(f"the server answers its description with {r.status_code}")


@entry("http.handshake", group="http")
def _http_handshake(data: bytes, path: Path, env: Env) -> str:
    return _http("handshake", data, env)


@entry("http.deliver", group="http")
def _http_deliver(data: bytes, path: Path, env: Env) -> str:
    """HELLO for the mode the payload's kind needs, then the case as the delivery: the agent
    answers it with the model (import_ + generate, receive + generate_after, or the text)."""
    return _http("deliver", data, env, handshake=True)


@entry("http.messages", group="http")
def _http_messages(data: bytes, path: Path, env: Env) -> str:
    return _http("messages", data, env)


def select(names: list[str] | None) -> list[Entry]:
    """Entries by name, group or glob (``a2a.*``; all when None), in registration order."""
    if not names:
        return list(ENTRIES.values())
    import fnmatch

    def hit(e: Entry, n: str) -> bool:
        return e.group == n or fnmatch.fnmatchcase(e.name, n)

    out = [e for e in ENTRIES.values() if any(hit(e, n) for n in names)]
    unknown = {n for n in names if not any(hit(e, n) for e in ENTRIES.values())}
    if unknown:
        sys.exit(f"unknown entry points or groups: {sorted(unknown)}")
    return out


# The A2A and MCP endpoints (avp_agents) register their entries; imported last, so that the
# module they import back (this one) is complete.
import hostile_agents  # noqa: E402, F401
