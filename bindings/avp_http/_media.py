"""Header-level rules of the binding: the media type (section 1), digests and prefix digests
(2, 2.4), session tokens (2.1), idempotency keys (7) and byte ranges (2.3). Pure functions over
strings and bytes; the server and the client share them."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable

import numpy as np

import avp_codec as avp

MEDIA_TYPE = "application/avp"
VERSIONS = [f"{avp.FORMAT_MAJOR}.{avp.FORMAT_MINOR}"]  # what this implementation writes/reads
CONTENT_TYPE = f"{MEDIA_TYPE}; version={VERSIONS[0]}"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SESSION = re.compile(r"[A-Za-z0-9_-]{16,128}")
_IDEMPOTENCY = re.compile(r"[\x21-\x7e]{1,128}")
_VERSION = re.compile(r"(\d{1,5})\.(\d{1,5})")


def parse_media_type(value: str | None) -> tuple[str, dict[str, str]]:
    """``type/subtype`` (lowercased) and its parameters (names lowercased, quotes removed)."""
    if not value:
        return "", {}
    parts = value.split(";")
    params: dict[str, str] = {}
    for p in parts[1:]:
        name, sep, val = p.partition("=")
        if sep:
            params[name.strip().lower()] = val.strip().strip('"')
    return parts[0].strip().lower(), params


def version_supported(params: dict[str, str]) -> bool:
    """R-H1.2: an absent ``version`` parameter is fine; a present one must name a major we
    implement (a higher minor is fine, R-3.3). A malformed value names no major we implement."""
    v = params.get("version")
    if v is None:
        return True
    m = _VERSION.fullmatch(v)
    return m is not None and int(m.group(1)) == avp.FORMAT_MAJOR


def accepts(accept: str | None, offered: Iterable[str]) -> bool:
    """Whether an Accept header admits one of ``offered`` (q=0 excludes; ranges count)."""
    if not accept:
        return True
    wanted = list(offered)
    for item in accept.split(","):
        mt, params = parse_media_type(item)
        try:
            if float(params.get("q", "1")) <= 0:
                continue
        except ValueError:
            continue
        if mt in ("*/*", "application/*") or mt in wanted:
            return True
    return False


def is_hex64(s: str) -> bool:
    return _HEX64.fullmatch(s) is not None


def message_digest(data: bytes | bytearray | memoryview) -> str:
    """The message digest of section 2: SHA-256 of the whole message, 64 lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def repr_digest(hex_digest: str) -> str:
    """The RFC 9530 ``Repr-Digest`` field value for a message digest."""
    return "sha-256=:" + base64.b64encode(bytes.fromhex(hex_digest)).decode() + ":"


def parse_repr_digest(value: str) -> str | None:
    """The sha-256 member of a ``Repr-Digest``/``Content-Digest`` value as hex, or None."""
    for member in value.split(","):
        name, sep, val = member.strip().partition("=")
        if sep and name.strip().lower() == "sha-256":
            val = val.strip()
            if len(val) >= 2 and val[0] == ":" and val[-1] == ":":
                try:
                    raw = base64.b64decode(val[1:-1], validate=True)
                except ValueError:
                    return ""
                return raw.hex() if len(raw) == 32 else ""
            return ""
    return None


def prefix_digest(token_ids: Iterable[int] | np.ndarray) -> str | None:
    """The prefix digest of 2.4: SHA-256 of the ids as u32 little-endian; None when an id is
    outside 0..2^32-1 (a latent position, -1, matches no token)."""
    arr = np.asarray(token_ids if isinstance(token_ids, np.ndarray) else list(token_ids),
                     dtype=np.int64).reshape(-1)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 0xFFFFFFFF):
        return None
    return hashlib.sha256(arr.astype("<u4").tobytes()).hexdigest()


def kv_prefix_key(msg_header: avp.HeaderEvent | avp.Message,
                  token_ids: avp.Tensor | None) -> tuple[str, str, int] | None:
    """(model_id hex, prefix digest, n) under which a stored KV_CACHE is found by a lookup
    (R-H2.14), or None when the message is not addressable that way."""
    kind = msg_header.kind
    entries = msg_header.entries
    if kind != avp.Kind.KV_CACHE or token_ids is None:
        return None
    model_id = next((e.value for e in entries if e.key == avp.MetaKey.MODEL_ID), None)
    if not isinstance(model_id, bytes) or len(token_ids.shape) != 2 or token_ids.shape[0] != 1:
        return None
    ids = token_ids.array()
    digest = prefix_digest(ids)
    if digest is None:
        return None
    return model_id.hex(), digest, int(ids.shape[1])


def new_session_token() -> str:
    """A fresh session token (R-H2.3): 192 random bits, 32 base64url characters."""
    return secrets.token_urlsafe(24)


def is_session_token(s: str) -> bool:
    return _SESSION.fullmatch(s) is not None


def is_idempotency_key(s: str) -> bool:
    return _IDEMPOTENCY.fullmatch(s) is not None


def parse_range(value: str, length: int) -> tuple[int, int] | None | str:
    """One byte range of RFC 9110 14.1.2 as (first, last) inclusive; None when the header is
    not a single satisfiable-looking range we serve (the whole message is sent, as the RFC
    allows); "unsatisfiable" when it is a single range outside the message (416)."""
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first_s == "":
            n = int(last_s)
            if n <= 0:
                return "unsatisfiable"
            return max(0, length - n), length - 1
        first = int(first_s)
        last = int(last_s) if last_s else length - 1
    except ValueError:
        return None
    if first < 0 or (last_s and last < first):
        return None
    if first >= length:
        return "unsatisfiable"
    return first, min(last, length - 1)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is a loopback address (R-H6.1's one exception to TLS for bearers)."""
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
