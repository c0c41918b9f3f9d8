"""One raw POST to a running server, for hostile-input runners and tests.

    status, problem = post_body("http://127.0.0.1:8080/avp/v1/messages", data)
    summary = check_body("http://127.0.0.1:8080/avp/v1/messages", data)   # or raises

``post_body`` sends ``data`` as-is (no AVP encoding, no checks of ours) as ``application/avp``
unless told otherwise and returns the status and the parsed problem (None when the answer is not
``application/problem+json``). ``check_body`` has the contract of a hostile-corpus entry point:
it returns a one-line summary when the server accepted the body, raises the ``AvpError`` (a
``RemoteAvpError``) the server reported for a 4xx carrying an AVP code, and raises
``HttpProblem`` for anything else (a 5xx is a server bug for a runner to flag). For the
``deliver`` resource, ``open_session`` makes the handshake first. Bounded: one request (two with a
handshake), ``timeout`` seconds each.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

import avp_codec as avp

from ._problem import PROBLEM_JSON, HttpProblem, error_from_problem


def post_body(url: str, data: bytes, *, headers: dict[str, str] | None = None,
              http2: bool = False, timeout: float = 30.0
              ) -> tuple[int, dict[str, Any] | None]:
    h = {"content-type": "application/avp", **(headers or {})}
    with httpx.Client(http1=not http2, http2=http2, timeout=timeout, trust_env=False) as c:
        r = c.post(url, content=data, headers=h)
    if not r.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return r.status_code, None
    try:
        body = json.loads(r.content)
    except ValueError:
        return r.status_code, None
    return r.status_code, body if isinstance(body, dict) else None


def open_session(base_url: str, hello: avp.Message, *, timeout: float = 30.0) -> str:
    """Handshake with ``hello``; the AVP-Session token for ``check_body(..., session=)``."""
    with httpx.Client(timeout=timeout, trust_env=False) as c:
        r = c.post(base_url.rstrip("/") + "/handshake", content=avp.encode(hello),
                   headers={"content-type": "application/avp"})
    if r.status_code != 200:
        raise error_from_problem(r.status_code, r.content, dict(r.headers))
    return r.headers["avp-session"]


def check_body(url: str, data: bytes, *, session: str | None = None, http2: bool = False,
               timeout: float = 30.0) -> str:
    h = {"content-type": "application/avp"}
    if session is not None:
        h["avp-session"] = session
    with httpx.Client(http1=not http2, http2=http2, timeout=timeout, trust_env=False) as c:
        r = c.post(url, content=data, headers=h)
    if r.status_code < 300:
        return f"{r.status_code} {r.headers.get('content-type', '-')} {len(r.content)} bytes"
    err = error_from_problem(r.status_code, r.content, dict(r.headers))
    if r.status_code >= 500 and not isinstance(err, HttpProblem):
        raise HttpProblem("internal", str(err), status=r.status_code)
    raise err
