"""``post_body``: one raw POST to a running server, for hostile-input runners and tests.

    status, problem = post_body("http://127.0.0.1:8080/avp/v1/messages", data)

Sends ``data`` as-is (no AVP encoding, no checks of ours) with ``application/avp`` unless told
otherwise and returns the status and the parsed problem body (None when the answer is not
``application/problem+json``). Bounded: one request, ``timeout`` seconds in all.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from ._problem import PROBLEM_JSON


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
