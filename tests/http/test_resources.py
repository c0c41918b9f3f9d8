"""The resources of spec/avp-http.md section 2 against a real ``avp-serve`` process, with httpx
(HTTP/1.1 unless a test says otherwise) and the package's own client."""

from __future__ import annotations

import hashlib
import json
import threading

import avp_http
import httpx
import pytest
from conftest import Served
from httpkit import AVP, handshake, hello, kv, problem, raw_request
from receivers import MODEL_ID, OTHER_MODEL

import avp_codec as avp

pytestmark = pytest.mark.timeout(120)
E = avp.ErrorCode


@pytest.fixture
def http() -> httpx.Client:
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c  # type: ignore[misc]


def _post(http: httpx.Client, url: str, body: bytes, **headers: str) -> httpx.Response:
    return http.post(url, content=body, headers={"content-type": AVP, **headers})


# -- 2: paths, methods, the service description ---------------------------------------------

def test_service_description(mailbox: Served, http: httpx.Client) -> None:
    """R-H2.2: versions, media type, limits and auth on GET of the base URL."""
    r = http.get(mailbox.url)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    d = r.json()
    assert d["versions"] == ["1.0"] and d["media_type"] == AVP
    assert d["limits"]["max_message_bytes"] == avp_http.SERVER_LIMITS.max_message_bytes
    assert d["auth"] == {"bearer": False, "hmac_required": False}
    assert http.head(mailbox.url).status_code == 200


def test_paths_and_methods(mailbox: Served, http: httpx.Client) -> None:
    """R-H2.1: a malformed digest is 400, an unknown path 404, a wrong method 405 + Allow."""
    assert problem(http.get(mailbox.url + "/messages/ABC"))["title"] == "bad-request"
    assert problem(http.get(mailbox.url + "/messages/" + "A" * 64))["title"] == "bad-request"
    assert problem(http.get(f"{mailbox.url}/prefixes/{'0' * 64}/xyz"))["title"] == "bad-request"
    assert problem(http.get(mailbox.url + "/nothing"))["status"] == 404
    assert problem(http.get(mailbox.base + "/elsewhere"))["status"] == 404
    r = http.get(mailbox.url + "/handshake")
    assert problem(r)["status"] == 405 and r.headers["allow"] == "POST"
    r = http.delete(mailbox.url + "/messages/" + "0" * 64)
    assert problem(r)["status"] == 405 and r.headers["allow"] == "GET, HEAD"


# -- 1: media type, Accept, content coding ---------------------------------------------------

def test_media_type_is_checked_before_the_body(mailbox: Served) -> None:
    """R-H1.3, R-H1.2: a wrong or missing Content-Type, or a version this receiver does not
    implement, is answered at once although the 1000-byte body never comes."""
    for ctype, want in ((b"", b"accept-post: application/avp"),
                        (b"content-type: text/plain\r\n", b"accept-post: application/avp"),
                        (b"content-type: application/avp; version=2.0\r\n", b'"versions":["1.0"]')):
        head = (b"POST /avp/v1/handshake HTTP/1.1\r\nhost: x\r\n" + ctype +
                b"content-length: 1000\r\n\r\n")
        out = raw_request(mailbox.port, head, timeout=10)
        assert out.startswith(b"HTTP/1.1 415"), out[:200]
        assert want in out.lower() or want in out


def test_minor_version_parameter_is_accepted(mailbox: Served, http: httpx.Client) -> None:
    """R-H1.2: a higher minor of a major we implement is fine (R-3.3)."""
    r = http.post(mailbox.url + "/handshake", content=avp.encode(hello()),
                  headers={"content-type": "application/avp; version=1.4"})
    assert r.status_code == 200


def test_accept_must_admit_avp(mailbox: Served, http: httpx.Client) -> None:
    """R-H1.4: 406 when Accept excludes application/avp and problem+json."""
    r = _post(http, mailbox.url + "/handshake", avp.encode(hello()), accept="text/html")
    assert problem(r)["status"] == 406
    r = _post(http, mailbox.url + "/handshake", avp.encode(hello()), accept="application/*")
    assert r.status_code == 200


def test_no_content_coding(mailbox: Served, http: httpx.Client) -> None:
    """R-H3.2: a request with Content-Encoding is 415 + Accept-Encoding: identity; AVP responses
    are never coded, whatever Accept-Encoding says, and are marked no-transform."""
    r = _post(http, mailbox.url + "/messages", avp.encode(kv()), **{"content-encoding": "gzip"})
    assert problem(r)["status"] == 415 and r.headers["accept-encoding"] == "identity"
    r = _post(http, mailbox.url + "/handshake", avp.encode(hello()),
              **{"accept-encoding": "gzip, br, zstd"})
    assert r.status_code == 200 and "content-encoding" not in r.headers
    assert "no-transform" in r.headers["cache-control"]
    digest = _store(http, mailbox, avp.encode(kv(seed=9)))
    r = http.get(f"{mailbox.url}/messages/{digest}", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in r.headers and "no-transform" in r.headers["cache-control"]
    assert "private" in r.headers["cache-control"]


# -- 2.1 handshake ---------------------------------------------------------------------------

def test_handshake_opens_a_session(mailbox: Served, http: httpx.Client) -> None:
    """R-H2.3: ACCEPT as application/avp plus a fresh AVP-Session token; the ACCEPT passes the
    initiator's own checks (R-14.2) and carries the responder's identity, not ours (R-14.1)."""
    mine = hello()
    r = _post(http, mailbox.url + "/handshake", avp.encode(mine))
    assert r.status_code == 200 and r.headers["content-type"].startswith(AVP)
    token = r.headers["avp-session"]
    assert 16 <= len(token) <= 128 and avp_http._media.is_session_token(token)
    accept = avp.decode(r.content)
    assert avp.check_accept(mine, accept) == avp.Mode.KV_CACHE
    assert accept.get(avp.MetaKey.AGENT_NAME) == "test-mailbox"
    assert accept.get(avp.MetaKey.NONCE) != mine.get(avp.MetaKey.NONCE)
    again = _post(http, mailbox.url + "/handshake", avp.encode(hello()))
    assert again.headers["avp-session"] != token


@pytest.mark.parametrize(("msg", "code", "status"), [
    (hello(versions=[2 << 16]), E.NO_COMMON_VERSION, 422),
    (hello(modes=[1, 2]), E.UNSUPPORTED_CAPABILITY, 422),
    (avp.text_message("not a HELLO"), E.KIND_CONSTRAINT, 400),
])
def test_handshake_refusals(mailbox: Served, http: httpx.Client, msg: avp.Message,
                            code: avp.ErrorCode, status: int) -> None:
    """R-H2.3: a refused handshake is the problem of its code (R-H5.2), with versions for
    NO_COMMON_VERSION; another kind than HELLO is KIND_CONSTRAINT (14.2)."""
    r = _post(http, mailbox.url + "/handshake", avp.encode(msg))
    p = problem(r)
    assert (r.status_code, p["code"], p["code_name"]) == (status, int(code), code.name)
    assert "avp-session" not in r.headers
    if code == E.NO_COMMON_VERSION:
        assert p["versions"] == ["1.0"]


def test_renegotiation_keeps_the_token(mailbox: Served, http: httpx.Client) -> None:
    """R-H2.4 and R-H2.7 (HELLO in ESTABLISHED): a new mode under the same token, by either
    resource; a refused renegotiation ends the session."""
    token = handshake(mailbox.url, http)
    r = _post(http, mailbox.url + "/handshake", avp.encode(hello(model_id=None)),
              **{"avp-session": token})
    assert r.headers["avp-session"] == token
    assert avp.decode(r.content).get(avp.MetaKey.MODE) == avp.Mode.TEXT
    # Now a TEXT session: a KV_CACHE is refused, a TEXT delivered.
    r = _post(http, mailbox.url + "/deliver", avp.encode(kv()), **{"avp-session": token})
    assert problem(r)["code"] == E.UNSUPPORTED_CAPABILITY
    # A second HELLO inside the session, on the delivery resource: back to KV_CACHE.
    r = _post(http, mailbox.url + "/deliver", avp.encode(hello()), **{"avp-session": token})
    assert r.status_code == 200 and r.headers["avp-session"] == token
    assert avp.decode(r.content).get(avp.MetaKey.MODE) == avp.Mode.KV_CACHE
    assert _post(http, mailbox.url + "/deliver", avp.encode(kv()),
                 **{"avp-session": token}).status_code == 200
    r = _post(http, mailbox.url + "/handshake", avp.encode(hello(versions=[2 << 16])),
              **{"avp-session": token})
    assert problem(r)["code"] == E.NO_COMMON_VERSION
    r = _post(http, mailbox.url + "/deliver", avp.encode(kv()), **{"avp-session": token})
    assert problem(r)["title"] == "session-unknown"


# -- 2.2 delivery ----------------------------------------------------------------------------

def test_delivery_needs_a_live_session_before_the_body(mailbox: Served) -> None:
    """R-H2.6: 409 at once, without the body."""
    for extra in (b"", b"avp-session: " + b"x" * 32 + b"\r\n", b"avp-session: bad!\r\n"):
        head = (b"POST /avp/v1/deliver HTTP/1.1\r\nhost: x\r\ncontent-type: application/avp\r\n"
                + extra + b"content-length: 100000\r\n\r\n")
        out = raw_request(mailbox.port, head, timeout=10)
        assert out.startswith(b"HTTP/1.1 409") and b"session-unknown" in out, out[:300]


def test_delivery_applies_the_session_rules(mailbox: Served, http: httpx.Client) -> None:
    """R-H2.7: ERROR is 204 and the session stays; non-payload kinds are
    UNSUPPORTED_CAPABILITY; another model's KV_CACHE is MODEL_MISMATCH (R-14.8)."""
    token = handshake(mailbox.url, http)
    h = {"avp-session": token}
    r = _post(http, mailbox.url + "/deliver", avp.encode(kv()), **h)
    assert r.status_code == 200 and r.json()["kind"] == "KV_CACHE"
    r = _post(http, mailbox.url + "/deliver",
              avp.encode(avp.error_message(E.MODEL_MISMATCH, "your answer was wrong")), **h)
    assert r.status_code == 204 and r.content == b""
    for msg, code in ((avp.text_message("text in a KV session"), E.UNSUPPORTED_CAPABILITY),
                      (avp.accept_message("x", avp.Mode.TEXT), E.UNSUPPORTED_CAPABILITY),
                      (kv(model_id=OTHER_MODEL), E.MODEL_MISMATCH)):
        r = _post(http, mailbox.url + "/deliver", avp.encode(msg), **h)
        assert (r.status_code, problem(r)["code"]) == (422, code)
    assert _post(http, mailbox.url + "/deliver", avp.encode(kv(seed=3)), **h).status_code == 200


def test_refusal_at_the_header_does_not_wait_for_the_body(mailbox: Served,
                                                          http: httpx.Client) -> None:
    """R-H2.7, R-H4.2: the HEADER alone decides MODEL_MISMATCH; the answer comes while the
    sender still owes most of its body, and the connection is closed after it."""
    token = handshake(mailbox.url, http)
    data = avp.encode(kv(tokens=2048, model_id=OTHER_MODEL))
    head = (b"POST /avp/v1/deliver HTTP/1.1\r\nhost: x\r\ncontent-type: application/avp\r\n"
            b"avp-session: " + token.encode() + b"\r\ncontent-length: " +
            str(len(data)).encode() + b"\r\n\r\n")
    out = raw_request(mailbox.port, head, [data[:4096]], timeout=10)
    assert out.startswith(b"HTTP/1.1 422") and b"MODEL_MISMATCH" in out
    assert b"connection: close" in out.lower()


def test_nothing_is_acted_on_before_the_end(mailbox: Served, http: httpx.Client) -> None:
    """R-H2.8: a body whose every tensor arrived but whose INDEX is corrupt is refused, and the
    message is neither answered nor kept."""
    token = handshake(mailbox.url, http)
    data = bytearray(avp.encode(kv(seed=11)))
    data[-40] ^= 0xFF  # inside the INDEX section
    r = _post(http, mailbox.url + "/deliver", bytes(data), **{"avp-session": token})
    assert problem(r)["code"] in (E.SECTION_CHECKSUM, E.INDEX_MISMATCH)
    digest = hashlib.sha256(avp.encode(kv(seed=11))).hexdigest()
    assert http.head(f"{mailbox.url}/messages/{digest}").status_code == 404
    assert http.head(f"{mailbox.url}/messages/{hashlib.sha256(data).hexdigest()}"
                     ).status_code == 404


def test_answers_in_avp_follow_the_mode(serve: object, http: httpx.Client) -> None:
    """R-H2.9: an application/avp answer is a payload of the session's mode; a receiver whose
    answer breaks that gets 500, not a message sent in the wrong mode."""
    srv = serve("--app", "receivers:echo")  # type: ignore[operator]
    token = handshake(srv.url, http, hello(model_id=None))  # a TEXT session
    r = _post(http, srv.url + "/deliver", avp.encode(avp.text_message("hi")),
              **{"avp-session": token})
    assert r.status_code == 200 and r.headers["content-type"].startswith(AVP)
    assert avp.decode(r.content).get(avp.MetaKey.TEXT) == "echo: hi"
    token = handshake(srv.url, http)  # a KV_CACHE session: the echo answers TEXT
    r = _post(http, srv.url + "/deliver", avp.encode(kv()), **{"avp-session": token})
    assert problem(r)["status"] == 500


def test_delivery_by_reference(mailbox: Served, http: httpx.Client) -> None:
    """R-H2.10: a stored message delivered by digest is checked like a body; 404 when the
    receiver does not hold it; a body next to the reference is refused."""
    msg = kv(seed=21)
    digest = _store(http, mailbox, avp.encode(msg))
    with avp_http.AvpClient(mailbox.url, http2=False) as c:
        c.handshake(hello())
        reply = c.deliver_reference(digest)
        assert reply.status == 200 and reply.json()["digest"] == digest
        with pytest.raises(avp_http.HttpProblem) as e:
            c.deliver_reference("0" * 64)
        assert e.value.status == 404
        text = _store(http, mailbox, avp.encode(avp.text_message("stored text")))
        with pytest.raises(avp.AvpError) as err:
            c.deliver_reference(text)
        assert err.value.code == E.UNSUPPORTED_CAPABILITY
        assert c.session is not None
    r = _post(http, mailbox.url + "/deliver", b"xx",
              **{"avp-session": handshake(mailbox.url, http), "avp-message-digest": digest})
    assert problem(r)["title"] == "bad-request"


# -- 2.3 stored messages ---------------------------------------------------------------------

def _store(http: httpx.Client, srv: Served, data: bytes) -> str:
    r = _post(http, srv.url + "/messages", data)
    assert r.status_code in (200, 201), r.text
    return r.headers["etag"].strip('"')


def test_store_and_get(mailbox: Served, http: httpx.Client) -> None:
    """R-H2.11, R-H2.12: 201 then 200 with Location and ETag; GET returns the exact bytes with
    ETag, Accept-Ranges and Repr-Digest; HEAD the same headers; If-None-Match 304."""
    data = avp.encode(kv(seed=31))
    digest = hashlib.sha256(data).hexdigest()
    r1, r2 = (_post(http, mailbox.url + "/messages", data) for _ in range(2))
    assert (r1.status_code, r2.status_code) == (201, 200)
    for r in (r1, r2):
        assert r.headers["location"] == f"/avp/v1/messages/{digest}"
        assert r.headers["etag"] == f'"{digest}"'
    g = http.get(f"{mailbox.url}/messages/{digest}")
    assert g.status_code == 200 and g.content == data
    assert g.headers["etag"] == f'"{digest}"' and g.headers["accept-ranges"] == "bytes"
    assert avp_http._media.parse_repr_digest(g.headers["repr-digest"]) == digest
    h = http.head(f"{mailbox.url}/messages/{digest}")
    assert h.status_code == 200 and h.content == b""
    assert h.headers["content-length"] == str(len(data)) and h.headers["etag"] == g.headers["etag"]
    r = http.get(f"{mailbox.url}/messages/{digest}", headers={"if-none-match": f'"{digest}"'})
    assert r.status_code == 304 and r.content == b""
    assert http.get(f"{mailbox.url}/messages/{'f' * 64}").status_code == 404


def test_store_checks_the_whole_message_and_repr_digest(mailbox: Served,
                                                        http: httpx.Client) -> None:
    """R-H2.11: an invalid message is refused and not stored; a Repr-Digest is compared."""
    data = bytearray(avp.encode(kv(seed=32)))
    data[200] ^= 1
    r = _post(http, mailbox.url + "/messages", bytes(data))
    assert problem(r)["code"] in (E.SECTION_CHECKSUM, E.DATA_CHECKSUM)
    assert http.head(f"{mailbox.url}/messages/{hashlib.sha256(data).hexdigest()}"
                     ).status_code == 404
    good = avp.encode(kv(seed=33))
    wrong = avp_http._media.repr_digest("0" * 64)
    r = _post(http, mailbox.url + "/messages", good, **{"repr-digest": wrong})
    assert problem(r)["title"] == "digest-mismatch"
    assert http.head(f"{mailbox.url}/messages/{hashlib.sha256(good).hexdigest()}"
                     ).status_code == 404
    right = avp_http._media.repr_digest(hashlib.sha256(good).hexdigest())
    assert _post(http, mailbox.url + "/messages", good,
                 **{"repr-digest": right}).status_code == 201


def test_byte_ranges(mailbox: Served, http: httpx.Client) -> None:
    """R-H2.13: single ranges 206, out of range 416 with bytes */len, several ranges the whole
    message, If-Range with another validator the whole message."""
    data = avp.encode(kv(seed=34))
    digest = _store(http, mailbox, data)
    url = f"{mailbox.url}/messages/{digest}"
    n = len(data)
    for spec, (a, b) in (("0-15", (0, 15)), ("-16", (n - 16, n - 1)), (f"{n - 5}-", (n - 5, n - 1)),
                         (f"100-{n + 50}", (100, n - 1))):
        r = http.get(url, headers={"range": f"bytes={spec}"})
        assert r.status_code == 206 and r.content == data[a:b + 1]
        assert r.headers["content-range"] == f"bytes {a}-{b}/{n}"
    r = http.get(url, headers={"range": f"bytes={n}-"})
    assert problem(r)["status"] == 416 and r.headers["content-range"] == f"bytes */{n}"
    assert http.get(url, headers={"range": "bytes=0-1,5-6"}).content == data
    r = http.get(url, headers={"range": "bytes=0-1", "if-range": '"other"'})
    assert r.status_code == 200 and r.content == data
    r = http.get(url, headers={"range": "bytes=0-1", "if-range": f'"{digest}"'})
    assert r.status_code == 206


@pytest.mark.parametrize("http2", [False, True])
def test_one_tensor_through_the_index(mailbox: Served, http2: bool) -> None:
    """2.3's four range requests read any one tensor, checked (R-11.3)."""
    msg = kv(tokens=64, layers=3, seed=35, token_ids=list(range(64)))
    with avp_http.AvpClient(mailbox.url, http2=http2) as c:
        digest = c.store(msg)
        for i in range(len(msg.tensors)):
            assert c.fetch_tensor(digest, i) == msg.tensors[i]
        with pytest.raises(IndexError):
            c.fetch_tensor(digest, len(msg.tensors))
        assert c.fetch(digest) == msg
        assert c.fetch_url(f"{mailbox.url}/messages/{digest}") == msg
        assert c.has(digest) and not c.has("e" * 64)
        with pytest.raises(avp_http.HttpProblem) as e:  # the bytes must hash to the digest
            c.fetch_url(f"{mailbox.url}/messages/{digest}", digest="0" * 64)
        assert e.value.slug == "digest-mismatch"


def test_lookup_before_transfer(mailbox: Served, http: httpx.Client) -> None:
    """R-H2.14: a stored KV_CACHE is found by model and exact token prefix; HEAD and GET carry
    ETag, Content-Location and AVP-Context-Length; anything else is 404."""
    ids = [7, 8, 9, 10, 11]
    msg = kv(tokens=5, seed=36, token_ids=ids)
    digest = _store(http, mailbox, avp.encode(msg))
    prefix = avp_http.prefix_digest(ids)
    url = f"{mailbox.url}/prefixes/{MODEL_ID.hex()}/{prefix}"
    for method in ("HEAD", "GET"):
        r = http.request(method, url)
        assert r.status_code == 200
        assert r.headers["etag"] == f'"{digest}"'
        assert r.headers["content-location"] == f"/avp/v1/messages/{digest}"
        assert r.headers["avp-context-length"] == "5"
    assert avp.decode(http.get(url).content) == msg
    assert http.head(f"{mailbox.url}/prefixes/{OTHER_MODEL.hex()}/{prefix}").status_code == 404
    shorter = avp_http.prefix_digest(ids[:4])
    assert http.head(f"{mailbox.url}/prefixes/{MODEL_ID.hex()}/{shorter}").status_code == 404
    with avp_http.AvpClient(mailbox.url) as c:
        assert c.lookup(MODEL_ID, ids) == digest
        assert c.lookup(MODEL_ID, ids + [1]) is None
        assert c.lookup(MODEL_ID, [-1, 2]) is None  # latent positions have no prefix digest
        # Delivered KV caches are indexed too (the Mailbox keeps deliveries).
        c.handshake(hello())
        later = kv(tokens=3, seed=37, token_ids=[1, 2, 3])
        c.deliver(later)
        assert c.lookup(MODEL_ID, [1, 2, 3]) == avp_http.message_digest(avp.encode(later))


# -- 7 idempotency ---------------------------------------------------------------------------

def test_idempotency_key(serve: object) -> None:
    """R-H7.1: a completed key replays the recorded answer without acting again; a key still in
    progress is 409; a malformed key 400."""
    srv = serve("--app", "receivers:slow")  # type: ignore[operator]
    with httpx.Client(timeout=30, trust_env=False) as http:
        token = handshake(srv.url, http)
        body = avp.encode(kv(seed=41))
        h = {"avp-session": token, "idempotency-key": "delivery-1"}
        first: list[httpx.Response] = []
        t = threading.Thread(target=lambda: first.append(_post(http, srv.url + "/deliver",
                                                                 body, **h)))
        t.start()
        with httpx.Client(timeout=30, trust_env=False) as other:
            import time
            time.sleep(0.8)  # the slow receiver takes 2 s to answer
            r = _post(other, srv.url + "/deliver", body, **h)
            assert problem(r)["title"] == "idempotency-conflict"
        t.join(30)
        assert first and first[0].status_code == 200
        again = _post(http, srv.url + "/deliver", body, **h)
        assert again.status_code == 200 and again.content == first[0].content  # replayed
        other = _post(http, srv.url + "/deliver", body,
                      **{"avp-session": token, "idempotency-key": "delivery-2"})
        assert other.json()["call"] == first[0].json()["call"] + 1  # a new key runs again
        r = _post(http, srv.url + "/deliver", body,
                  **{"avp-session": token, "idempotency-key": "a b"})
        assert problem(r)["title"] == "bad-request"


def test_a_receiver_bug_is_500_and_the_server_keeps_serving(serve: object) -> None:
    """R-H5.1: even an internal failure is a problem; nothing crashes."""
    srv = serve("--app", "receivers:broken")  # type: ignore[operator]
    with httpx.Client(timeout=30, trust_env=False) as http:
        token = handshake(srv.url, http, hello(model_id=None))
        r = _post(http, srv.url + "/deliver", avp.encode(avp.text_message("x")),
                  **{"avp-session": token})
        assert problem(r)["status"] == 500 and "a receiver bug" not in r.text
        assert http.get(srv.url).status_code == 200
    assert srv.alive()


def test_problem_details_do_not_echo_the_message(mailbox: Served, http: httpx.Client) -> None:
    """5.1: detail never carries bytes of the message (format spec 19.5)."""
    secret = "the secret prompt 12345"
    token = handshake(mailbox.url, http)
    r = _post(http, mailbox.url + "/deliver", avp.encode(avp.text_message(secret)),
              **{"avp-session": token})
    assert r.status_code == 422 and secret not in r.text
    assert json.loads(r.content)["code_name"] == "UNSUPPORTED_CAPABILITY"


def test_early_refusal_over_http2_keeps_the_connection(mailbox: Served) -> None:
    """R-H4.2 over HTTP/2: a 4 MB KV_CACHE in a TEXT session is refused at its HEADER; the
    client reads the answer although its upload was cut short, and the same connection then
    serves the next request (the rest of the refused stream is discarded, not fatal)."""
    big = avp.encode(kv(tokens=32768, layers=2, seed=51))
    with avp_http.AvpClient(mailbox.url, http2=True) as c:
        c.handshake(hello(model_id=None))
        with pytest.raises(avp.AvpError) as e:
            c.deliver(big)
        assert e.value.code == E.UNSUPPORTED_CAPABILITY
        assert c.deliver(avp.text_message("still here")).status == 200
        assert c.describe()["media_type"] == AVP
