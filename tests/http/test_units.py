"""The binding's pure parts, without a server: the status table, problem bodies both ways,
media-type and header parsing, digests, byte ranges."""

from __future__ import annotations

import base64
import hashlib
import json

import avp_http
import numpy as np
import pytest
from avp_http import _media as media
from avp_http import _problem as problem

import avp_codec as avp


def test_every_error_code_has_the_status_of_its_range() -> None:
    """R-H5.2: the table, code by code, and a code registered later takes its range's."""
    want = {400: set(range(1, 60)) - {2}, 415: {2}, 413: set(range(60, 70)),
            422: set(range(70, 80)), 403: set(range(80, 90))}
    for code in avp.ErrorCode:
        (status,) = [s for s, codes in want.items() if int(code) in codes]
        assert avp_http.status_of(int(code)) == status, code
    assert avp_http.status_of(69) == 413 and avp_http.status_of(89) == 403


def test_problem_round_trip_keeps_code_offset_and_path() -> None:
    """R-H5.1: code, code_name, offset and path travel; the client rebuilds the AvpError."""
    err = avp.AvpError(avp.ErrorCode.DATA_CHECKSUM, "bad", offset=4160, path="tensor[2].data")
    status, body = problem.problem_from_error(err)
    assert status == 400
    assert body["type"] == "tag:agent-vector-protocol,2025:error:DATA_CHECKSUM"
    assert body["title"] == body["code_name"] == "DATA_CHECKSUM" and body["code"] == 21
    back = problem.error_from_problem(status, problem.encode_problem(body))
    assert isinstance(back, avp_http.RemoteAvpError) and isinstance(back, avp.AvpError)
    assert (back.code, back.offset, back.path, back.status) == (
        avp.ErrorCode.DATA_CHECKSUM, 4160, "tensor[2].data", 400)


def test_limit_and_version_problems_name_the_limit_and_the_versions() -> None:
    status, body = problem.problem_from_error(
        avp.AvpError(avp.ErrorCode.LIMIT_TENSOR, "big"), limits=avp.Limits())
    assert status == 413 and body["limit"] == "max_tensor_bytes"
    assert body["maximum"] == avp.Limits().max_tensor_bytes
    status, body = problem.problem_from_error(
        avp.AvpError(avp.ErrorCode.UNSUPPORTED_VERSION, "v2"), versions=["1.0"])
    assert status == 415 and body["versions"] == ["1.0"]


def test_unknown_codes_and_garbage_are_generic_failures() -> None:
    """5.1: a code the client does not know, or a body that is not JSON, is a generic failure
    (HttpProblem), never a crash."""
    p = problem.error_from_problem(422, json.dumps({"code": 9999, "detail": "new"}).encode())
    assert isinstance(p, avp_http.HttpProblem) and p.status == 422
    for raw in (b"", b"\xff\xfe", b"[1, 2]", b"{", b'{"code": true}'):
        assert isinstance(problem.error_from_problem(500, raw), avp_http.HttpProblem)


def test_media_type_parameters() -> None:
    """R-H1.2: no version is fine, a known major with any minor is fine, anything else is not."""
    mt, params = media.parse_media_type('Application/AVP ; version="1.7"; x=y')
    assert mt == "application/avp" and params == {"version": "1.7", "x": "y"}
    assert media.version_supported({}) and media.version_supported({"version": "1.0"})
    assert media.version_supported({"version": "1.9"})
    for bad in ("2.0", "0.1", "1", "one", "1.0.0", ""):
        assert not media.version_supported({"version": bad}), bad


def test_accept_negotiation() -> None:
    """R-H1.4: ranges and q=0."""
    offered = ("application/avp", "application/problem+json")
    assert media.accepts(None, offered) and media.accepts("*/*", offered)
    assert media.accepts("application/*;q=0.2", offered)
    assert media.accepts("text/html, application/avp", offered)
    assert not media.accepts("text/html", offered)
    assert not media.accepts("application/avp;q=0", offered)


def test_digests() -> None:
    """Section 2 (message digest, Repr-Digest) and 2.4 (prefix digest: u32 little-endian)."""
    data = b"\x89AVP"
    assert media.message_digest(data) == hashlib.sha256(data).hexdigest()
    rd = media.repr_digest(hashlib.sha256(data).hexdigest())
    assert rd == "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"
    assert media.parse_repr_digest(rd) == hashlib.sha256(data).hexdigest()
    assert media.parse_repr_digest("md5=:AAAA:") is None
    assert media.parse_repr_digest("sha-256=:not base64!:") == ""
    ids = [1, 2, 70000, 2**32 - 1]
    want = hashlib.sha256(b"".join(i.to_bytes(4, "little") for i in ids)).hexdigest()
    assert avp_http.prefix_digest(ids) == want
    assert avp_http.prefix_digest(np.asarray([ids], dtype=np.int64)) == want
    assert avp_http.prefix_digest([5, -1, 6]) is None  # a latent position matches no token
    assert avp_http.prefix_digest([2**32]) is None


@pytest.mark.parametrize(("spec", "want"), [
    ("bytes=0-9", (0, 9)), ("bytes=10-", (10, 99)), ("bytes=-16", (84, 99)),
    ("bytes=90-1000", (90, 99)), ("bytes=-1000", (0, 99)), ("bytes=100-", "unsatisfiable"),
    ("bytes=-0", "unsatisfiable"), ("bytes=5-2", None), ("bytes=0-1,5-6", None),
    ("items=0-1", None), ("bytes=a-b", None), ("bytes=7", None)])
def test_single_byte_ranges(spec: str, want: object) -> None:
    """R-H2.13 on a 100-byte message."""
    assert media.parse_range(spec, 100) == want


def test_session_tokens_and_idempotency_keys() -> None:
    """R-H2.3 token alphabet and length; R-H7.1 key syntax."""
    tokens = {media.new_session_token() for _ in range(50)}
    assert len(tokens) == 50 and all(media.is_session_token(t) for t in tokens)
    assert not media.is_session_token("short") and not media.is_session_token("a" * 129)
    assert not media.is_session_token("x" * 20 + "/")
    assert media.is_idempotency_key("retry-1") and not media.is_idempotency_key("")
    assert not media.is_idempotency_key("a b") and not media.is_idempotency_key("k" * 129)


def test_loopback_rule_for_bearer_credentials() -> None:
    """R-H6.1: the client refuses a bearer over cleartext except to a loopback address."""
    with pytest.raises(ValueError, match="TLS"):
        avp_http.AvpClient("http://example.com/avp/v1", token="t")
    for url in ("http://127.0.0.1:1/avp/v1", "http://[::1]:1/avp/v1",
                "http://localhost:1/avp/v1", "https://example.com/avp/v1"):
        avp_http.AvpClient(url, token="t").close()


def test_store_evicts_least_recently_used_and_indexes_prefixes(tmp_path: object) -> None:
    """2.3/2.4 storage: bounded, LRU, prefix index follows eviction."""
    from httpkit import kv
    from receivers import MODEL_ID

    cap = len(avp.encode(kv(tokens=8, token_ids=list(range(8))))) + len(avp.encode(kv(tokens=8)))
    store = avp_http.MessageStore(tmp_path, max_bytes=cap)  # type: ignore[arg-type]
    a = store.put_message(kv(tokens=8, token_ids=list(range(8)), seed=1))
    assert store.lookup(MODEL_ID.hex(), avp_http.prefix_digest(range(8)) or "")
    b = store.put_message(kv(tokens=8, seed=2))
    store.get(a)  # a is now the most recent
    c = store.put_message(kv(tokens=8, seed=3))
    assert a in store and c in store and b not in store
    assert store.total_bytes <= cap
    assert store.message(a) == kv(tokens=8, token_ids=list(range(8)), seed=1)
    with pytest.raises(avp.AvpError):
        store.put_bytes(b"\x89AVP\r\n\x1a\nxx")
    assert len(store) == 2 and not any(p.name.startswith(".incoming") for p in
                                        store.directory.iterdir())
    reopened = avp_http.MessageStore(tmp_path)  # type: ignore[arg-type]
    assert a in reopened and reopened.lookup(MODEL_ID.hex(),
                                             avp_http.prefix_digest(range(8)) or "")


def test_probe_entry_points(mailbox: object) -> None:
    """post_body / check_body / open_session: what a hostile-corpus runner registers."""
    from httpkit import hello, kv

    url = mailbox.url  # type: ignore[attr-defined]
    good = avp.encode(kv(seed=77))
    assert avp_http.post_body(url + "/messages", good)[0] in (200, 201)
    status, prob = avp_http.post_body(url + "/messages", good[:-1])
    assert status == 400 and prob is not None and prob["code_name"] == "TRUNCATED"
    assert avp_http.check_body(url + "/messages", good).startswith(("200", "201"))
    with pytest.raises(avp.AvpError) as e:
        avp_http.check_body(url + "/messages", b"\x00" * 40)
    assert e.value.code == avp.ErrorCode.BAD_MAGIC
    token = avp_http.open_session(url, hello())
    assert avp_http.check_body(url + "/deliver", good, session=token).startswith("200")
    with pytest.raises(avp.AvpError) as e:
        avp_http.check_body(url + "/deliver", avp.encode(avp.text_message("x")), session=token)
    assert e.value.code == avp.ErrorCode.UNSUPPORTED_CAPABILITY
    with pytest.raises(avp_http.HttpProblem):
        avp_http.check_body(url + "/deliver", good)  # no session: 409, not an AVP code


def test_mounted_in_a_starlette_app() -> None:
    """AvpApp is a plain ASGI app: mounted under another application's path (as an A2A or MCP
    server would host it), it routes relative to the mount and its Locations include it."""
    import asyncio

    import httpx
    from httpkit import hello, kv
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    avp_app = avp_http.AvpApp(avp_http.Mailbox(), avp_http.ServerConfig(root=""))
    outer = Starlette(routes=[Route("/", lambda r: PlainTextResponse("outer")),
                              Mount("/agents/avp", app=avp_app)])

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer),
                                     base_url="http://test") as c:
            assert (await c.get("/")).text == "outer"
            r = await c.post("/agents/avp/handshake", content=avp.encode(hello(model_id=None)),
                             headers={"content-type": "application/avp"})
            assert r.status_code == 200 and avp.decode(r.content).kind == avp.Kind.ACCEPT
            r = await c.post("/agents/avp/messages", content=avp.encode(kv()),
                             headers={"content-type": "application/avp"})
            assert r.status_code == 201
            assert r.headers["location"].startswith("/agents/avp/messages/")
            assert (await c.get(r.headers["location"])).content == avp.encode(kv())

    try:
        asyncio.run(go())
    finally:
        avp_app.close()
