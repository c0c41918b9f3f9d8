"""R-H1.1 (one message per body), R-H6.3 (the order of checks), and the rule that every
requirement of spec/avp-http.md has a test naming it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from httpkit import AVP, handshake, kv, problem, raw_request

import avp_codec as avp

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def test_one_message_per_body(serve: object) -> None:
    """R-H1.1: bodies are labelled application/avp and hold exactly one message: bytes before
    it are BAD_MAGIC, a second message after it TRAILING_BYTES."""
    s = serve("--app", "receivers:kv_mailbox")  # type: ignore[operator]
    one = avp.encode(kv())
    with httpx.Client(timeout=20, trust_env=False) as http:
        def store(data: bytes) -> httpx.Response:
            return http.post(s.url + "/messages", content=data, headers={"content-type": AVP})

        assert problem(store(one + one))["code"] == avp.ErrorCode.TRAILING_BYTES
        assert problem(store(b"\n" + one))["code"] == avp.ErrorCode.BAD_MAGIC
        digest = store(one).headers["etag"].strip('"')
        r = http.get(f"{s.url}/messages/{digest}")
        assert r.headers["content-type"] == "application/avp; version=1.0"
        assert avp.decode(r.content) == avp.decode(one)


def test_order_of_checks(serve: object, tmp_path: Path) -> None:
    """R-H6.3: a request that fails several checks is refused by the first in the order
    bearer, path/method, media type, Content-Length, session, body."""
    tokens = tmp_path / "t"
    tokens.write_text("ok\n")
    s = serve("--app", "receivers:kv_mailbox", "--token-file", str(tokens),  # type: ignore[operator]
              "--max-message-bytes", "100000")

    def head(path: str, *extra: str, length: int = 10 ** 9, auth: bool = True) -> bytes:
        lines = [f"POST /avp/v1/{path} HTTP/1.1", "host: x", f"content-length: {length}",
                 *(["authorization: Bearer ok"] if auth else []), *extra, "", ""]
        return "\r\n".join(lines).encode()

    def status(raw: bytes) -> int:
        return int(raw.split(b" ", 2)[1])

    bad_type = "content-type: text/plain"
    cases = [
        (head("nowhere", bad_type, auth=False), 401),  # bearer before everything
        (head("nowhere", bad_type), 404),  # then the path
        (head("deliver", bad_type), 415),  # then the media type
        (head("deliver", f"content-type: {AVP}"), 413),  # then Content-Length
        (head("deliver", f"content-type: {AVP}", length=1000), 409),  # then the session
    ]
    for raw, want in cases:
        assert status(raw_request(s.port, raw, timeout=10)) == want, raw
    with httpx.Client(timeout=20, trust_env=False,
                      headers={"authorization": "Bearer ok"}) as http:
        token = handshake(s.url, http)
        # Then the body, front to back: a corrupt HEADER CRC (a decoder check, step S) comes
        # before the session check of its MODEL_ID, which the HEADER would fail too.
        data = bytearray(avp.encode(kv(model_id=bytes(32))))
        data[44] ^= 1  # inside the HEADER body
        r = http.post(s.url + "/deliver", content=bytes(data),
                      headers={"content-type": AVP, "avp-session": token})
        assert problem(r)["code"] == avp.ErrorCode.SECTION_CHECKSUM
        r = http.post(s.url + "/deliver", content=avp.encode(kv(model_id=bytes(32))),
                      headers={"content-type": AVP, "avp-session": token})
        assert problem(r)["code"] == avp.ErrorCode.MODEL_MISMATCH


def test_every_requirement_has_a_test() -> None:
    """Every [R-H...] id of the binding is named by at least one test in tests/http."""
    ids = set(re.findall(r"\[(R-H\d+\.\d+)\]", (ROOT / "spec" / "avp-http.md").read_text()))
    assert len(ids) >= 25
    text = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    named = set(re.findall(r"R-H\d+\.\d+", text))
    assert not ids - named, sorted(ids - named)
    assert not named - ids, sorted(named - ids)  # no test names a requirement that is gone
