"""Drivers for an implementation under test (TESTEE-PROTOCOL.md, sections 2 and 3).

Both drivers expose one call, ``request(header, payload, timeout)``, returning a ``Reply``. A crash
or timeout never raises: it comes back as a ``Reply`` with status ``crash``/``timeout`` so that the
runner can grade exactly one case and go on. Only a testee that cannot be started at all, or that
keeps crashing, raises ``HarnessError``.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shlex
import struct
import subprocess
import threading
from dataclasses import dataclass, field
from typing import IO, Any

PROTOCOL_VERSION = 1  # the major version; TESTEE-PROTOCOL.md is 1.1
PROTOCOL_MINOR = 1
MAX_JSON_FRAME = 1 << 26
MAX_CONSECUTIVE_FAILURES = 5
STDERR_KEEP = 4096


class HarnessError(Exception):
    """The harness itself cannot go on (exit status 2)."""


@dataclass
class Reply:
    status: str  # ok | error | unsupported | crash | timeout
    header: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""
    detail: str = ""  # why a crash was declared, plus the testee's recent stderr


@dataclass
class TesteeInfo:
    name: str
    version: str
    capabilities: dict[str, Any]
    minor: int = 0


_HINT_SIMPLE = ("hint: a persistent-tier testee writes a start frame first (TESTEE-PROTOCOL "
                "3.2); if this testee implements only the simple tier, run with --tier simple")
_HINT_PERSISTENT = ("hint: `CMD capabilities` must print the start object (TESTEE-PROTOCOL "
                    "2.4); if this testee implements only the persistent tier, run with "
                    "--tier persistent (the default)")


def _start_info(start: Any, where: str) -> TesteeInfo:
    """Check the start object (TESTEE-PROTOCOL 3.2) and return what it says."""
    if not isinstance(start, dict):
        raise HarnessError(f"{where} is not a JSON object")
    if start.get("avp_testee") != PROTOCOL_VERSION:
        raise HarnessError(f"{where}: testee speaks protocol {start.get('avp_testee')!r}, "
                           f"not {PROTOCOL_VERSION}")
    minor = start.get("minor", 0)
    if not isinstance(minor, int) or isinstance(minor, bool) or minor < 0:
        raise HarnessError(f"{where}: minor must be a non-negative integer, not {minor!r}")
    caps = start.get("capabilities")
    if not isinstance(caps, dict):
        raise HarnessError(f"{where} has no capabilities object")
    return TesteeInfo(str(start.get("name", "?")), str(start.get("version", "?")), caps, minor)


def _split(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


class _StderrTail:
    """Keeps the last few KiB of the testee's stderr without ever blocking it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        read1 = getattr(stream, "read1", stream.read)  # a pipe is a BufferedReader: read1
        for chunk in iter(lambda: bytes(read1(4096)), b""):
            with self._lock:
                self._buf += chunk
                del self._buf[:-STDERR_KEEP]

    def text(self) -> str:
        with self._lock:
            return self._buf.decode("utf-8", "replace")


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            raise EOFError("testee closed stdout")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    """Read one frame (TESTEE-PROTOCOL 3.1); raise ValueError/EOFError when malformed."""
    (json_length,) = struct.unpack("<I", _read_exact(stream, 4))
    if json_length > MAX_JSON_FRAME:
        raise ValueError(f"json_length {json_length} exceeds 2^26")
    header = json.loads(_read_exact(stream, json_length).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("frame JSON is not an object")
    (payload_length,) = struct.unpack("<Q", _read_exact(stream, 8))
    return header, _read_exact(stream, payload_length)


def write_frame(stream: IO[bytes], header: dict[str, Any], payload: bytes = b"") -> None:
    body = json.dumps(header, separators=(",", ":")).encode("utf-8")
    stream.write(struct.pack("<I", len(body)) + body + struct.pack("<Q", len(payload)))
    stream.write(payload)
    stream.flush()


class PersistentTestee:
    """One long-lived testee process, restarted after a crash or timeout."""

    def __init__(self, command: str | list[str], start_timeout: float = 30.0) -> None:
        self.argv = _split(command)
        self.start_timeout = start_timeout
        self.failures_in_row = 0
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._frames: queue.Queue[tuple[dict[str, Any], bytes] | BaseException] = queue.Queue()
        self._stderr: _StderrTail | None = None
        self.info = self._start()

    def _reader(self, stream: IO[bytes], out: queue.Queue[Any]) -> None:
        # A dedicated thread turns a blocking pipe into a queue we can wait on with a timeout.
        try:
            while True:
                out.put(read_frame(stream))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting side
            out.put(exc)

    def _start(self) -> TesteeInfo:
        try:
            proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise HarnessError(f"cannot start testee {self.argv!r}: {exc}") from exc
        assert proc.stdout is not None and proc.stderr is not None
        self._proc = proc
        self._frames = queue.Queue()
        self._stderr = _StderrTail(proc.stderr)
        threading.Thread(target=self._reader, args=(proc.stdout, self._frames), daemon=True).start()
        got = self._wait(self.start_timeout)
        if not isinstance(got, tuple):
            self._kill()
            why = "no start frame within the time limit" if got is None else got
            raise HarnessError(f"testee start handshake failed: {why}\n{_HINT_SIMPLE}\n"
                               f"{self.stderr_tail()}".rstrip())
        try:
            return _start_info(got[0], "the start frame")
        except HarnessError:
            self._kill()
            raise

    def _wait(self, timeout: float) -> tuple[dict[str, Any], bytes] | BaseException | None:
        try:
            return self._frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def stderr_tail(self) -> str:
        return self._stderr.text() if self._stderr else ""

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin,):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _fail(self, status: str, why: str) -> Reply:
        detail = f"{why}\n{self.stderr_tail()}".strip()
        self._kill()
        self.failures_in_row += 1
        if self.failures_in_row >= MAX_CONSECUTIVE_FAILURES:
            raise HarnessError(f"testee failed {self.failures_in_row} cases in a row: {detail}")
        self.restarts += 1
        self.info = self._start()
        return Reply(status, detail=detail)

    def request(self, header: dict[str, Any], payload: bytes, timeout: float) -> Reply:
        proc = self._proc
        if proc is None or proc.stdin is None:
            self.info = self._start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None
        try:
            write_frame(proc.stdin, header, payload)
        except OSError as exc:
            return self._fail("crash", f"writing the request failed: {exc}")
        got = self._wait(timeout)
        if got is None:
            return self._fail("timeout", f"no response within {timeout:g} s")
        if isinstance(got, BaseException):
            code = proc.poll()
            return self._fail("crash", f"testee exited ({code}) or sent a bad frame: {got!r}")
        reply_header, reply_payload = got
        if reply_header.get("id") != header.get("id"):
            return self._fail("crash", f"response id {reply_header.get('id')!r} != request id")
        status = reply_header.get("status")
        if status not in ("ok", "error", "unsupported"):
            return self._fail("crash", f"unknown response status {status!r}")
        self.failures_in_row = 0
        return Reply(str(status), reply_header, reply_payload)

    def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                write_frame(proc.stdin, {"op": "quit"})
        self._kill()


def _context_args(context: dict[str, Any]) -> list[str]:
    args: list[str] = []
    if context.get("verify") is False:
        args.append("--no-verify")
    for name, value in sorted(context.get("limits", {}).items()):
        args += ["--limit", f"{name}={value}"]
    if context.get("require_auth"):
        args.append("--require-auth")
    for key_id, key in sorted(context.get("keys", {}).items()):
        args += ["--key", f"{key_id}={key}"]
    if context.get("expected_model_id"):
        args += ["--expected-model-id", str(context["expected_model_id"])]
    if context.get("expected_tokenizer_id"):
        args += ["--expected-tokenizer-id", str(context["expected_tokenizer_id"])]
    if context.get("local") is not None:
        args += ["--local", json.dumps(context["local"], separators=(",", ":"))]
    return args


def simple_command(argv: list[str], header: dict[str, Any]) -> list[str]:
    """The simple-tier argv that serves one request (TESTEE-PROTOCOL 2); failure reports show
    it so that a case can be reproduced by hand."""
    context = _context_args(header.get("context", {}))
    if header["op"] == "dequantize":
        return [*argv, "dequantize", "--tensor", str(header["tensor"]), *context]
    return [*argv, header["op"], *context]


def parse_error_line(text: str) -> dict[str, Any] | None:
    """Parse ``AVP-ERROR <code> <NAME> <offset> <path>`` (TESTEE-PROTOCOL 2.1)."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "AVP-ERROR" and parts[1].isdigit():
            offset = parts[3] if len(parts) > 3 else "-"
            return {
                "status": "error",
                "code": int(parts[1]),
                "name": parts[2] if len(parts) > 2 else "",
                "offset": int(offset) if offset.isdigit() else None,
                "path": parts[4] if len(parts) > 4 and parts[4] != "-" else "",
            }
    return None


class SimpleTestee:
    """One process per request (TESTEE-PROTOCOL section 2)."""

    def __init__(self, command: str | list[str]) -> None:
        self.argv = _split(command)
        self.restarts = 0
        where = f"`{shlex.join(self.argv)} capabilities`"
        try:
            out = subprocess.run(
                [*self.argv, "capabilities"], capture_output=True, timeout=30, check=True
            )
            start = json.loads(out.stdout)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            raise HarnessError(f"{where} failed: {exc}\n{_HINT_PERSISTENT}") from exc
        try:
            self.info = _start_info(start, f"the output of {where}")
        except HarnessError as exc:
            raise HarnessError(f"{exc}\n{_HINT_PERSISTENT}") from None

    def command_line(self, header: dict[str, Any]) -> list[str]:
        return simple_command(self.argv, header)

    def request(self, header: dict[str, Any], payload: bytes, timeout: float) -> Reply:
        argv = self.command_line(header)
        if header["op"] == "encode":
            body = json.dumps(header["json"], separators=(",", ":")).encode("utf-8")
            stdin = struct.pack("<I", len(body)) + body + payload
        else:
            stdin = payload
        try:
            out = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Reply("timeout", detail=f"no exit within {timeout:g} s")
        except OSError as exc:
            raise HarnessError(f"cannot run testee: {exc}") from exc
        tail = out.stderr[-STDERR_KEEP:].decode("utf-8", "replace")
        if out.returncode == 0:
            if header["op"] in ("encode", "dequantize"):
                return Reply("ok", {"status": "ok"}, out.stdout)
            try:
                return Reply("ok", {"status": "ok", "json": json.loads(out.stdout)})
            except ValueError as exc:
                return Reply("crash", detail=f"stdout is not JSON: {exc}\n{tail}")
        if out.returncode == 3:
            parsed = parse_error_line(out.stdout.decode("utf-8", "replace"))
            if parsed is not None:
                return Reply("error", parsed)
            return Reply("crash", detail=f"exit 3 without an AVP-ERROR line\n{tail}")
        if out.returncode == 4:
            return Reply("unsupported", {"status": "unsupported"})
        return Reply("crash", detail=f"exit status {out.returncode}\n{tail}")

    def close(self) -> None:
        pass


Testee = PersistentTestee | SimpleTestee


def open_testee(command: str, tier: str) -> Testee:
    if tier == "simple":
        return SimpleTestee(command)
    return PersistentTestee(command)

