"""Hostile peers against a real ``avp-serve`` process (issue 15's list, spec/avp-http.md 5.3,
5.4 and 6): each case is bounded in count and time, and after each the server must still be
alive, serve a real client, and not have kept memory or descriptors.

Short timeouts make the bounds testable in seconds: ``--keep-alive 2`` (headers and idle
connections), ``--body-grace 2 --min-rate 4096 --chunk-timeout 3`` (bodies).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import avp_http
import httpx
import numpy as np
import pytest
from conftest import Served, wait_until
from httpkit import AVP, big_kv, handshake, hello, kv, problem, raw_request, zstd_bomb
from receivers import MODEL_ID

import avp_codec as avp

pytestmark = pytest.mark.timeout(180)
E = avp.ErrorCode
FAST = ["--app", "receivers:kv_mailbox", "--keep-alive", "2", "--body-grace", "2",
        "--min-rate", "4096", "--chunk-timeout", "3"]
MB = 1024


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(FAST + ["--max-decoded-bytes", str(300 << 20)],
               log=tmp_path_factory.mktemp("hostile") / "serve.log")
    try:
        yield s
    finally:
        s.stop()


def _healthy(s: Served) -> None:
    """Alive, and a real client gets a real answer promptly."""
    assert s.alive(), s.log()
    t0 = time.monotonic()
    with avp_http.AvpClient(s.url, http2=False, timeout=10) as c:
        c.handshake(hello())
        assert c.deliver(kv(seed=int(t0 * 1000) % 1000)).status == 200
    assert time.monotonic() - t0 < 10


def _settle(s: Served, fds: int) -> None:
    """Descriptors come back to what they were (nothing leaked), within a bound."""
    assert wait_until(lambda: s.fds() <= fds, 15), (s.fds(), fds)


def _head(path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST /avp/v1/{path} HTTP/1.1", "host: x", "content-type: application/avp",
             f"content-length: {length}", *extra, "", ""]
    return "\r\n".join(lines).encode()


def test_connect_and_close_without_a_byte(srv: Served) -> None:
    _healthy(srv)  # lazily created resources exist before the baseline is taken
    fds = srv.fds()
    for _ in range(30):
        socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()
    _healthy(srv)
    _settle(srv, fds)


def test_idle_connections_do_not_block_others_and_are_closed(srv: Served) -> None:
    """R-H5.5, R-H5.6: 20 silent connections cost a slot each for the keep-alive time only."""
    _healthy(srv)
    fds = srv.fds()
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(20)]
    try:
        _healthy(srv)  # served while the 20 are open
        t0 = time.monotonic()
        for s in idle:
            assert s.recv(1) == b""  # the server closes them...
        assert time.monotonic() - t0 < 8  # ...after its 2 s keep-alive
    finally:
        for s in idle:
            s.close()
    _settle(srv, fds)


def test_slow_headers_are_cut_off(srv: Served) -> None:
    """R-H5.5: a request line trickling in one byte a second is closed within keep-alive."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        t0 = time.monotonic()
        closed = False
        for b in b"POST /avp/v1/messages HTTP/1.1\r\n":
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed = True
                break
            time.sleep(1.0)
            if time.monotonic() - t0 > 8:
                break
        if not closed:
            s.settimeout(5)
            try:
                closed = s.recv(100) in (b"",) or True
            except (TimeoutError, OSError):
                closed = False
        assert closed and time.monotonic() - t0 < 12
    _healthy(srv)


def test_slow_body_one_byte_every_3_seconds(srv: Served) -> None:
    """R-H5.5: the issue's slow peer; answered 408 after the grace period, not held."""
    data = avp.encode(kv())
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
        s.sendall(_head("messages", len(data)))
        t0 = time.monotonic()
        answer = b""
        for b in data[:5]:
            s.sendall(bytes([b]))
            s.settimeout(3)
            try:
                answer = s.recv(4096)
            except TimeoutError:
                continue
            break
        s.settimeout(5)
        while answer and (more := s.recv(4096)):
            answer += more
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request-timeout" in answer and time.monotonic() - t0 < 10
    _healthy(srv)


def test_declared_2_gib_then_16_bytes(srv: Served) -> None:
    """Content-Length 2^31 (equal to the limit, so not refused up front) and 16 bytes, then
    nothing: nothing is allocated for the declared length and the wait ends in 408."""
    srv.reset_hwm()
    before = srv.rss_kb()
    t0 = time.monotonic()
    out = raw_request(srv.port, _head("messages", 1 << 31), [avp.encode(kv())[:16]], timeout=15)
    assert out.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 12
    assert srv.hwm_kb() - before < 16 * MB
    # The same claim with the connection closed after the 16 bytes: nobody to answer.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(_head("messages", 1 << 31) + avp.encode(kv())[:16])
    assert srv.hwm_kb() - before < 16 * MB
    _healthy(srv)


def test_oversized_content_length_is_413_before_the_body(srv: Served) -> None:
    """R-H5.3: 413 LIMIT_MESSAGE at once, nothing read or allocated."""
    srv.reset_hwm()
    before = srv.rss_kb()
    out = raw_request(srv.port, _head("messages", 1 << 40), timeout=10)
    assert out.startswith(b"HTTP/1.1 413")
    assert b'"code":60' in out and b'"limit":"max_message_bytes"' in out
    assert srv.hwm_kb() - before < 8 * MB
    _healthy(srv)


def test_chunked_body_outgrowing_the_limit_is_aborted(serve: object) -> None:
    """R-H5.4: without Content-Length, the body is refused as soon as it passes the limit and
    the connection closed, while the sender still has more to send."""
    s = serve(*FAST, "--max-message-bytes", str(1 << 20))  # type: ignore[operator]
    data = big_kv(4)
    head = (b"POST /avp/v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/avp\r\n"
            b"transfer-encoding: chunked\r\n\r\n")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(head)
        answer = b""
        for i in range(0, len(data), 65536):
            piece = data[i:i + 65536]
            try:
                c.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            except OSError:
                break
            c.settimeout(0.05)
            try:
                answer += c.recv(65536)
                if answer:
                    break
            except TimeoutError:
                continue
        c.settimeout(5)
        try:
            while chunk := c.recv(65536):
                answer += chunk
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 413") and b"LIMIT_MESSAGE" in answer
    assert i < len(data) - 65536  # refused before the end of the body
    _healthy(s)


def test_zstd_bombs_are_bounded(srv: Served) -> None:
    """A tensor declaring 1 GiB (inflating to it) is LIMIT_TENSOR before any inflation; two of
    200 MiB each are inflated one at a time and refused once the kept total passes the
    receiver's decoded-size bound of 300 MiB (R-H5.7): peak memory stays within that bound
    plus one tensor's inflation (its output and, with today's codec, one transient copy)."""
    with httpx.Client(timeout=60, trust_env=False) as http:
        token = handshake(srv.url, http)
        srv.reset_hwm()
        before = srv.rss_kb()
        r = http.post(srv.url + "/deliver", content=zstd_bomb(1 << 30),
                      headers={"content-type": AVP, "avp-session": token})
        assert (r.status_code, problem(r)["code"]) == (413, E.LIMIT_TENSOR)
        assert srv.hwm_kb() - before < 16 * MB
        r = http.post(srv.url + "/deliver", content=zstd_bomb(200 << 20),
                      headers={"content-type": AVP, "avp-session": token})
        assert (r.status_code, problem(r)["title"]) == (413, "decoded-too-large")
        assert srv.hwm_kb() - before < (300 + 2 * 200 + 64) * MB
    _healthy(srv)
    assert wait_until(lambda: srv.rss_kb() - before < 100 * MB, 10), srv.rss_kb() - before


def test_second_hello_and_malformed_payloads_keep_the_session(srv: Served) -> None:
    """The issue's protocol cases: a second HELLO after ACCEPT is a new negotiation (R-14.2,
    R-H2.4); a payload malformed for the session's mode is answered with its error and the
    server keeps serving the same session."""
    with avp_http.AvpClient(srv.url, http2=True, timeout=20) as c:
        first = c.handshake(hello())
        token = c.session
        second = c.handshake(hello(model_id=None), renegotiate=True)
        assert c.session == token
        assert first.get(avp.MetaKey.MODE) == avp.Mode.KV_CACHE
        assert second.get(avp.MetaKey.MODE) == avp.Mode.TEXT
        c.handshake(hello(), renegotiate=True)
        projected = avp.hidden_state_message(  # a PROJECTION payload in a KV_CACHE session
            MODEL_ID, np.zeros((1, 1, 8), np.float32), source=2, proj_method=1,
            proj_source_tokenizer_id=bytes(32), proj_target_tokenizer_id=bytes(32),
            proj_shared_vocab=10)
        bad = [b"\x00" * 64, avp.encode(kv())[:-1] + b"\x00",
               avp.encode(avp.text_message("t")), avp.encode(projected)]
        for data in bad:
            with pytest.raises(avp.AvpError):
                c.deliver(data)
            assert c.deliver(kv(seed=len(data) % 97)).status == 200
    _healthy(srv)


def test_truncated_bodies_and_mid_stream_disconnects(srv: Served) -> None:
    """A body shorter than its Content-Length, and peers that vanish mid-body (close or RST):
    nothing is answered to nobody, nothing leaks, the server keeps serving."""
    data = big_kv(2)
    _healthy(srv)
    fds = srv.fds()
    srv.reset_hwm()
    before = srv.rss_kb()
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(_head("messages", len(data)) + data[:len(data) // 2])
        if i % 2:  # an abortive close (RST) half of the time
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    _settle(srv, fds)
    assert srv.hwm_kb() - before < 64 * MB
    # A body that ends early but completely (FIN after half): the decoder says TRUNCATED.
    with httpx.Client(timeout=20, trust_env=False) as http:
        r = http.post(srv.url + "/messages", content=data[:len(data) // 2],
                      headers={"content-type": AVP})
        assert (r.status_code, problem(r)["code"]) == (400, E.TRUNCATED)
    _healthy(srv)


def test_fifty_concurrent_clients(srv: Served) -> None:
    """R-H5.6: 50 clients at once (HTTP/1.1 and HTTP/2 mixed), 1 MB each: all served, the
    server's peak memory bounded."""
    data = big_kv(1)
    srv.reset_hwm()
    before = srv.rss_kb()
    barrier = threading.Barrier(50, timeout=60)

    def one(i: int) -> int:
        with avp_http.AvpClient(srv.url, http2=bool(i % 2), timeout=60) as c:
            c.handshake(hello())
            token = c.session
        barrier.wait()
        # A fresh connection: the one used for the handshake may have outlived the server's
        # 2 s keep-alive while the others were still shaking hands (the session has not).
        with avp_http.AvpClient(srv.url, http2=bool(i % 2), timeout=60, session=token) as c:
            return c.deliver(data).status

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(one, range(50), timeout=150))
    assert statuses == [200] * 50
    assert srv.hwm_kb() - before < 200 * MB, (srv.hwm_kb() - before) // MB
    _healthy(srv)


def test_bearer_credentials(serve: object, tmp_path: object) -> None:
    """R-H6.1: no credential or a wrong one is 401 with a Bearer challenge, before the body,
    on every resource; sessions are bound to the credential that opened them (R-H2.5)."""
    tokens = tmp_path / "tokens"  # type: ignore[operator]
    tokens.write_text("alpha\nbeta\n")
    s = serve(*FAST, "--token-file", str(tokens))  # type: ignore[operator]
    out = raw_request(s.port, _head("messages", 1 << 30), timeout=10)
    assert out.startswith(b"HTTP/1.1 401")
    assert b'www-authenticate: Bearer realm="avp"' in out
    with httpx.Client(timeout=20, trust_env=False) as http:
        for path in ("", "/messages/" + "0" * 64, f"/prefixes/{'0' * 64}/{'0' * 64}"):
            r = http.get(s.url + path)
            assert problem(r)["status"] == 401 and "error=" not in r.headers["www-authenticate"]
        r = http.get(s.url, headers={"authorization": "Bearer gamma"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        r = http.get(s.url, headers={"authorization": "Basic YWxwaGE6"})
        assert r.status_code == 401
        assert http.get(s.url, headers={"authorization": "Bearer beta"}).status_code == 200
    with avp_http.AvpClient(s.url, token="alpha") as a:
        a.handshake(hello())
        assert a.deliver(kv()).status == 200
        with avp_http.AvpClient(s.url, token="beta", session=a.session) as b:
            with pytest.raises(avp_http.HttpProblem) as e:
                b.deliver(kv())
            assert e.value.status == 409  # another credential's session is unknown to it


def test_message_authentication(serve: object, tmp_path: object) -> None:
    """R-H6.2: with --require-auth, a message without a tag is AUTH_REQUIRED, an unknown key
    UNKNOWN_KEY, a forged one AUTH_FAILED (all 403); a genuine one passes."""
    key = tmp_path / "k.bin"  # type: ignore[operator]
    key.write_bytes(b"k" * 32)
    s = serve(*FAST, "--hmac-key", f"k1={key}", "--require-auth")  # type: ignore[operator]
    good = avp.encode(kv(seed=3), auth_key=(b"k1", b"k" * 32))
    forged = bytearray(good)
    other = avp.encode(kv(seed=3), auth_key=(b"k2", b"k" * 32))
    with httpx.Client(timeout=20, trust_env=False) as http:
        def store(data: bytes) -> httpx.Response:
            return http.post(s.url + "/messages", content=data, headers={"content-type": AVP})

        assert store(good).status_code == 201
        for data, code in ((avp.encode(kv(seed=3)), E.AUTH_REQUIRED), (other, E.UNKNOWN_KEY)):
            r = store(data)
            assert (r.status_code, problem(r)["code"]) == (403, code)
        # Flip a tensor byte and repair its CRC: only the tag can tell.
        msg = avp.decode(good)
        t = msg.tensors[0]
        raw = bytearray(t.stored)
        raw[0] ^= 1
        msg.tensors[0] = avp.Tensor(t.role, t.dtype, t.shape, bytes(raw), layer=t.layer,
                                    layout=t.layout)
        forged = avp.encode(msg)  # keeps the received tag: CRCs right, tag wrong
        r = store(forged)
        assert (r.status_code, problem(r)["code"]) == (403, E.AUTH_FAILED)
    assert s.alive()


def test_concurrency_bound_and_answer_bound(serve: object) -> None:
    """R-H5.6: with one decoding slot held by a stalled body, the next body waits the queue
    bound and gets 503 + Retry-After, and is served once the slot frees; R-H5.5: an answer
    slower than its bound is 503 + Retry-After too."""
    s = serve("--app", "receivers:slow", "--max-concurrent", "1", "--queue-timeout", "1",  # type: ignore[operator]
              "--answer-timeout", "1", "--body-grace", "4", "--min-rate", "4096")
    data = avp.encode(kv())
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as hog:
        hog.sendall(_head("messages", len(data)) + data[:32])  # holds the slot, stalls
        time.sleep(0.5)
        with httpx.Client(timeout=20, trust_env=False) as http:
            r = http.post(s.url + "/messages", content=data, headers={"content-type": AVP})
            assert problem(r)["title"] == "busy" and r.headers["retry-after"] == "1"
            hog.settimeout(15)
            assert hog.recv(100).startswith(b"HTTP/1.1 408")  # the hog's own bound
            r = http.post(s.url + "/messages", content=data, headers={"content-type": AVP})
            assert r.status_code == 201
            token = handshake(s.url, http)
            r = http.post(s.url + "/deliver", content=data,
                          headers={"content-type": AVP, "avp-session": token})
            assert problem(r)["title"] == "busy" and "retry-after" in r.headers
    assert s.alive()
