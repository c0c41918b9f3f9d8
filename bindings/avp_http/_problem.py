"""Problem details (RFC 9457) for every refusal of the binding (spec/avp-http.md section 5).

One table maps each AVP ``ErrorCode`` to its HTTP status (R-H5.2); ``HttpProblem`` is the one
exception the server turns into a response and the client raises for a problem that carries no
AVP code. An AVP error travels as ``avp.AvpError`` on both sides: the server renders it with
``problem_from_error`` and the client rebuilds it with ``error_from_problem``, code, offset and
path intact, so a caller handles a remote refusal exactly like a local one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import avp_codec as avp
from avp_codec.limits import LIMIT_ERRORS

PROBLEM_JSON = "application/problem+json"
ERROR_TYPE = "tag:agent-vector-protocol,2025:error:"
HTTP_TYPE = "tag:agent-vector-protocol,2025:http:"

E = avp.ErrorCode

# R-H5.2, by the registry's ranges (20.2): a code registered later takes its range's status.
_RANGES = ((1, 59, 400), (60, 69, 413), (70, 79, 422), (80, 89, 403))
_EXCEPTIONS = {int(E.UNSUPPORTED_VERSION): 415}

# Non-AVP problems (section 5.1): slug -> status.
HTTP_PROBLEMS = {
    "bad-request": 400, "unauthorized": 401, "not-found": 404, "method-not-allowed": 405,
    "not-acceptable": 406, "request-timeout": 408, "session-unknown": 409,
    "idempotency-conflict": 409, "digest-mismatch": 400, "unsupported-media-type": 415,
    "range-not-satisfiable": 416, "decoded-too-large": 413, "busy": 503, "internal": 500,
}

_LIMIT_OF = {code: name for name, code in LIMIT_ERRORS.items()}


def status_of(code: int) -> int:
    """The HTTP status of an AVP error code (R-H5.2); 400 for a code outside every range."""
    if code in _EXCEPTIONS:
        return _EXCEPTIONS[code]
    for lo, hi, status in _RANGES:
        if lo <= code <= hi:
            return status
    return 400


@dataclass
class HttpProblem(Exception):
    """A refusal that is not an AVP error (``slug`` of section 5.1), or, on the client side, a
    problem response the client could not map to an AVP error."""

    slug: str
    detail: str
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.status:
            self.status = HTTP_PROBLEMS[self.slug]
        super().__init__(f"{self.status} {self.slug}: {self.detail}")

    def body(self) -> dict[str, Any]:
        return {"type": HTTP_TYPE + self.slug, "title": self.slug, "status": self.status,
                "detail": self.detail, **self.extra}


class RemoteAvpError(avp.AvpError):
    """An AVP error a receiver reported: the code, offset and path of its problem, plus the
    HTTP status and the problem body itself."""

    def __init__(self, code: avp.ErrorCode, message: str, *, offset: int | None = None,
                 path: str = "", status: int = 0, problem: dict[str, Any] | None = None) -> None:
        super().__init__(code, message, offset=offset, path=path)
        self.status = status
        self.problem = problem or {}


def problem_from_error(err: avp.AvpError, *, limits: avp.Limits | None = None,
                       versions: list[str] | None = None) -> tuple[int, dict[str, Any]]:
    """The status and problem body of an AVP error (R-H5.1, R-H5.2)."""
    code = int(err.code)
    status = status_of(code)
    body: dict[str, Any] = {
        "type": ERROR_TYPE + err.code.name, "title": err.code.name, "status": status,
        "detail": err.detail, "code": code, "code_name": err.code.name, "path": err.path,
    }
    if err.offset is not None:
        body["offset"] = err.offset
    limit = _LIMIT_OF.get(err.code)
    if limit is not None:
        body["limit"] = limit
        if limits is not None:
            body["maximum"] = getattr(limits, limit)
    if versions is not None and err.code in (E.UNSUPPORTED_VERSION, E.NO_COMMON_VERSION):
        body["versions"] = versions
    return status, body


def encode_problem(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def error_from_problem(status: int, raw: bytes,
                       headers: Mapping[str, str] | None = None) -> RemoteAvpError | HttpProblem:
    """The client's view of a problem response: an ``AvpError`` when it carries an AVP code the
    registry knows, else an ``HttpProblem`` (an unknown code is a generic failure, 17)."""
    try:
        body = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, ValueError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = str(body.get("detail", "")) or f"HTTP {status}"
    code = body.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        try:
            known = avp.ErrorCode(code)
        except ValueError:
            known = None
        if known is not None:
            offset = body.get("offset")
            return RemoteAvpError(known, detail,
                                  offset=offset if isinstance(offset, int) else None,
                                  path=str(body.get("path", "")), status=status, problem=body)
    slug = str(body.get("title") or "internal")
    extra = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail")}
    hdrs = list((headers or {}).items())
    return HttpProblem(slug, detail, status=status, headers=hdrs, extra=extra)
