"""Fixtures for the AVP-over-HTTP tests: the server is always a real ``avp-serve`` process on
127.0.0.1 (a free port chosen by the OS), reaped in teardown whatever happens.

``Served`` exposes what the hostile-peer tests watch from outside: the process's RSS and its
open file descriptors (a leak shows as descriptors that do not come back). Every wait has a
deadline; pytest-timeout guards the rest.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # receivers.py and httpkit.py, also loaded by the servers
    sys.path.insert(0, str(HERE))
START_TIMEOUT = 60.0


class Served:
    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.log_path = log
        self._log = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "avp_http.cli", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=self._log,
            env=os.environ | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(HERE)} | (env or {}))
        line: list[bytes] = []
        t = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
                             daemon=True)
        t.start()
        t.join(START_TIMEOUT)
        if not line or not line[0].startswith(b"AVP-SERVE LISTENING"):
            self.stop()
            raise AssertionError(f"avp-serve did not start: {line!r} {self.log()}")
        self.port = int(line[0].split()[-1])
        self.pid = self.proc.pid
        tls = "--certfile" in args
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.url = self.base + "/avp/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def hwm_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def reset_hwm(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not subprocess.DEVNULL:
            self._log.close()  # type: ignore[union-attr]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    """``serve(*args)`` starts an avp-serve process; all are stopped after the test."""
    started: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Served:
        s = Served(list(args), env, tmp_path / f"serve-{len(started)}.log")
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in started:
            s.stop()


@pytest.fixture(scope="module")
def mailbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One model-less server shared by a module's tests (a KV-capable Mailbox)."""
    log = tmp_path_factory.mktemp("mailbox") / "serve.log"
    s = Served(["--app", "receivers:kv_mailbox", "--body-grace", "5", "--min-rate", "1024",
                "--chunk-timeout", "5"], log=log)
    try:
        yield s
    finally:
        s.stop()


def wait_until(pred: object, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(step)
    return bool(pred())  # type: ignore[operator]


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with ``cryptography``."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "avp-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
