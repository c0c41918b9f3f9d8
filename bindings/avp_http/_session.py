"""Sessions of the HTTP binding (spec/avp-http.md 2.1, 2.2, 7).

A session is what 14.2 calls "the sequence of messages after one handshake": the resolved mode,
the receiver's own offer (its ACCEPT, against which R-14.7 checks payloads), the peer's HELLO and
whatever the receiver keeps per peer. The table is bounded in count and idle lifetime (R-H2.5),
binds each session to the credential that opened it, and records completed ``Idempotency-Key``
deliveries (R-H7.1), a bounded number per session.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import avp_codec as avp

from ._media import new_session_token

IDEMPOTENCY_KEEP = 64  # completed keys remembered per session


@dataclass
class Negotiated:
    """A receiver's outcome of a HELLO: the ACCEPT to send, the mode, what it offered (normally
    the ACCEPT itself) and any per-session state of its own."""

    accept: avp.Message
    mode: avp.Mode
    offered: avp.Message
    state: Any = None


@dataclass
class Session:
    token: str
    credential: str | None
    negotiated: Negotiated
    hello: avp.Message
    last_used: float = field(default_factory=time.monotonic)
    # Idempotency-Key -> (status, headers, body) once complete; None while in progress.
    done: OrderedDict[str, tuple[int, list[tuple[str, str]], bytes] | None] = field(
        default_factory=OrderedDict)

    @property
    def mode(self) -> avp.Mode:
        return self.negotiated.mode

    @property
    def state(self) -> Any:
        return self.negotiated.state


class SessionTable:
    def __init__(self, *, max_sessions: int = 4096, idle_seconds: float = 600.0) -> None:
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._items: OrderedDict[str, Session] = OrderedDict()

    def open(self, credential: str | None, negotiated: Negotiated,
             hello: avp.Message) -> Session:
        self._expire()
        s = Session(new_session_token(), credential, negotiated, hello)
        self._items[s.token] = s
        while len(self._items) > self.max_sessions:
            self._items.popitem(last=False)
        return s

    def get(self, token: str | None, credential: str | None) -> Session | None:
        """The live session ``token`` names, if it was opened with ``credential`` (R-H2.5)."""
        self._expire()
        if token is None:
            return None
        s = self._items.get(token)
        if s is None or not _same(s.credential, credential):
            return None
        s.last_used = time.monotonic()
        self._items.move_to_end(token)
        return s

    def close(self, token: str) -> None:
        self._items.pop(token, None)

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.idle_seconds
        while self._items:
            s = next(iter(self._items.values()))
            if s.last_used >= cutoff:
                break
            self._items.popitem(last=False)


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return hmac.compare_digest(a.encode(), b.encode())


def remember(session: Session, key: str,
             outcome: tuple[int, list[tuple[str, str]], bytes] | None) -> None:
    session.done[key] = outcome
    session.done.move_to_end(key)
    while len(session.done) > IDEMPOTENCY_KEEP:
        oldest = next(iter(session.done))
        if session.done[oldest] is None:  # never forget one still in progress
            break
        session.done.popitem(last=False)
