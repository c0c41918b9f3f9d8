"""Agent-protocol servers as real processes on 127.0.0.1 (``python -m avp_agents.a2a_server``,
``python -m avp_agents.mcp_server``), each stopped in ``finally`` whatever happens."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

START_TIMEOUT = 240.0


@contextmanager
def server(module: str, tmp_path: Path, *args: str, banner: str = "LISTENING"
           ) -> Iterator[str]:
    """Start ``python -m module args``; yield ``http://127.0.0.1:<port>`` once it prints
    ``... LISTENING <port>``. SIGTERM after the block, then SIGKILL."""
    name = module.rsplit(".", 1)[-1]
    log_path = tmp_path / f"{name}-{len(os.listdir(tmp_path))}.log"
    log = open(log_path, "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                            stderr=log, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    port: list[int] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:  # ends when the process closes its stdout
            line = raw.decode(errors="replace")
            if banner in line and not port:
                port.append(int(line.split()[-1]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for _ in range(int(START_TIMEOUT * 10)):  # bounded wait for the banner
            if port or proc.poll() is not None:
                break
            reader.join(0.1)
        if not port:
            raise AssertionError(f"{module} did not start: {log_path.read_text()[-3000:]}")
        yield f"http://127.0.0.1:{port[0]}"
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


def run_cli(module: str, *args: str, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ | {"PYTHONUNBUFFERED": "1"})


class _Liar(http.server.BaseHTTPRequestHandler):
    """A real HTTP server answering every GET with bytes that are not the named message."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b"\x00" * 4096
        self.send_response(200)
        self.send_header("content-type", "application/avp")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def liar() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


def closed_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
