"""HTTP/2 over TLS (ALPN h2, a self-signed certificate made for the test), curl over TLS, and
streaming in both directions: the receiver acts on the first tensor before the body has ended
(R-H4.1) and the sender never assembles the message."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import avp_http
import httpx
import pytest
from httpkit import AVP, hello, kv
from receivers import MODEL_ID

import avp_codec as avp

pytestmark = pytest.mark.timeout(120)


def test_h2_over_tls_with_a_bearer(serve: object, tls_files: tuple[Path, Path],
                                   tmp_path: Path) -> None:
    """R-H3.1 (HTTP/2 by ALPN over TLS) and R-H6.1 (a bearer over TLS, any host)."""
    cert, key = tls_files
    tokens = tmp_path / "tokens"
    tokens.write_text("tls-token\n")
    s = serve("--app", "receivers:kv_mailbox", "--certfile", str(cert), "--keyfile", str(key),  # type: ignore[operator]
              "--token-file", str(tokens))
    ctx = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(http2=True, verify=ctx, trust_env=False) as http:
        r = http.get(s.url, headers={"authorization": "Bearer tls-token"})
        assert r.status_code == 200 and r.http_version == "HTTP/2"
    with avp_http.AvpClient(s.url, verify=ctx, token="tls-token") as c:
        assert c.handshake(hello()).get(avp.MetaKey.MODE) == avp.Mode.KV_CACHE
        msg = kv(tokens=256, seed=8)
        assert c.deliver(msg).status == 200
        digest = avp_http.message_digest(avp.encode(msg))
        assert c.fetch(digest) == msg and c.fetch_tensor(digest, 1) == msg.tensors[1]
    with avp_http.AvpClient(s.url, verify=ctx, token="tls-token", http2=False) as c:
        c.handshake(hello())
        assert c.deliver(kv(seed=9)).status == 200
    with avp_http.AvpClient(s.url, verify=ctx) as c, pytest.raises(avp_http.HttpProblem):
        c.handshake(hello())  # no credential: 401
    with avp_http.AvpClient(s.url, token="tls-token") as c, pytest.raises(httpx.ConnectError):
        c.handshake(hello())  # an unknown certificate is refused


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_over_tls_negotiates_h2(serve: object, tls_files: tuple[Path, Path],
                                     tmp_path: Path) -> None:
    cert, key = tls_files
    s = serve("--certfile", str(cert), "--keyfile", str(key))  # type: ignore[operator]
    msg = tmp_path / "m.avp"
    msg.write_bytes(avp.encode(avp.text_message("over TLS")))
    r = subprocess.run(["curl", "-sS", "--cacert", str(cert), "-o", str(tmp_path / "out"),
                        "-w", "%{http_version} %{http_code}", "-H", f"Content-Type: {AVP}",
                        "--data-binary", f"@{msg}", s.url + "/messages"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.stdout == "2 201", (r.stdout, r.stderr)


class _Watcher(avp_http.Mailbox):
    """Signals when its first tensor event arrives (R-H4.1's observable)."""

    def __init__(self) -> None:
        super().__init__(name="watcher", model_id=MODEL_ID)
        self.first_tensor = threading.Event()

    def on_tensor(self, session: avp_http.Session, index: int, t: avp.Tensor) -> None:
        if t.layer is not None:
            self.first_tensor.set()


@pytest.mark.parametrize("http2", [False, True])
def test_receiver_acts_before_the_body_ends(http2: bool) -> None:
    """R-H4.1: the sender holds back the second half of its body until the receiver has seen
    its first layer tensor; a receiver that waited for the whole body would never see it (the
    test would time out). Also exercises R-H2.8: the answer comes only after the end."""
    watcher = _Watcher()
    app = avp_http.AvpApp(watcher)
    msg = kv(tokens=4096, layers=4, seed=12)
    data = avp.encode(msg)
    half = len(data) // 2
    seen_before_end: list[bool] = []

    def body() -> Iterator[bytes]:
        yield data[:half]
        seen_before_end.append(watcher.first_tensor.wait(30))
        yield data[half:]

    with avp_http.BackgroundServer(app) as srv, \
            avp_http.AvpClient(srv.url, http2=http2) as c:
        c.handshake(hello())
        assert c.session is not None
        with httpx.Client(http1=not http2, http2=http2, trust_env=False, timeout=60) as http:
            r = http.post(srv.url + "/deliver", content=body(),
                          headers={"content-type": AVP, "content-length": str(len(data)),
                                   "avp-session": c.session})
        assert r.status_code == 200 and r.json()["bytes"] == len(data)
    assert seen_before_end == [True]


def test_client_streams_tensor_by_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Section 4: the client sends a message as StreamEncoder pieces (one per tensor), never as
    one assembled buffer, and the receiver gets exactly the canonical bytes."""
    import avp_http.client as client_mod

    sizes: list[int] = []
    real = client_mod.message_parts

    def spy(msg: avp.Message) -> Iterator[bytes]:
        for part in real(msg):
            sizes.append(len(part))
            yield part

    monkeypatch.setattr(client_mod, "message_parts", spy)
    msg = kv(tokens=1024, layers=3, seed=13)
    with avp_http.BackgroundServer(avp_http.AvpApp(avp_http.Mailbox(model_id=MODEL_ID))) as srv, \
            avp_http.AvpClient(srv.url) as c:
        digest = c.store(msg)
    assert digest == avp_http.message_digest(avp.encode(msg))
    assert len(sizes) == len(msg.tensors) + 1
    assert max(sizes) < len(avp.encode(msg)) // 3
