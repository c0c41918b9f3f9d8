"""The sans-IO incremental decoder (h11 style): bytes in, events out, no I/O of its own.

    dec = Decoder()
    dec.feed(chunk)            # as bytes arrive
    ev = dec.next_event()      # HeaderEvent | TensorEvent | EndEvent | NEED_DATA
    dec.end_of_input()         # the peer closed: a short message is then TRUNCATED

It buffers at most one structure (a section, or one tensor's padded data); a structure that
would need more than ``max_buffer_bytes`` is refused with LIMIT_BUFFER before it is buffered.
Tensors in events own a copy of their bytes (the buffer is reused), unlike whole-buffer decode.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._decode import Core
from ._events import NEED_DATA, EndEvent, Event
from ._registry import ErrorCode
from .errors import AvpError
from .limits import DEFAULT_LIMITS, Limits


class _Buffered:
    def __init__(self, limits: Limits) -> None:
        self.buf = bytearray()
        self.base = 0  # absolute offset of buf[0]
        self.complete = False
        self.limits = limits

    def end(self) -> int:
        return self.base + len(self.buf)

    def get(self, off: int, n: int) -> bytes:
        i = off - self.base
        return bytes(self.buf[i:i + n])

    def discard(self, upto: int) -> None:
        del self.buf[:upto - self.base]
        self.base = upto

    def reserve(self, n: int, off: int) -> None:
        if n > self.limits.max_buffer_bytes:
            raise AvpError(ErrorCode.LIMIT_BUFFER, f"a {n}-byte structure exceeds "
                           "max_buffer_bytes", offset=off)


class Decoder:
    def __init__(self, limits: Limits | None = None, verify: bool = True,
                 keys: Mapping[bytes, bytes] | None = None, require_auth: bool = False) -> None:
        self.limits = limits or DEFAULT_LIMITS
        self._core = Core(self.limits, verify, keys, require_auth)
        self._src = _Buffered(self.limits)
        self._error: AvpError | None = None
        self._ended = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise self._error
        if self._src.complete:
            raise ValueError("feed() after end_of_input()")
        if self._src.end() + len(data) > self.limits.max_message_bytes:
            self._error = AvpError(ErrorCode.LIMIT_MESSAGE, "message exceeds max_message_bytes",
                                   offset=self.limits.max_message_bytes)
            raise self._error
        self._src.buf += data

    def end_of_input(self) -> None:
        """No more bytes will come; an incomplete message becomes TRUNCATED."""
        self._src.complete = True

    def next_event(self) -> Event:
        if self._error is not None:
            raise self._error
        if self._ended:
            if self._src.end() > self._core.pos:
                self._error = AvpError(ErrorCode.TRAILING_BYTES, "bytes after the Trailer",
                                       offset=self._core.pos)
                raise self._error
            return NEED_DATA
        try:
            ev = self._core.step(self._src)
        except AvpError as e:
            self._error = e
            raise
        if isinstance(ev, EndEvent):
            self._ended = True
        return ev
