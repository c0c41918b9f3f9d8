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

from collections import deque
from collections.abc import Mapping

from ._decode import Core
from ._events import NEED_DATA, EndEvent, Event
from ._registry import ErrorCode
from .errors import AvpError
from .limits import DEFAULT_LIMITS, Limits

_SMALL = 1 << 16  # pieces shorter than this are gathered into one bytearray


class _Buffered:
    """The bytes fed and not yet consumed, kept as the pieces they came in.

    A bytearray that is appended to and consumed from the front reallocates and copies what
    it holds as it grows: a 2 MiB tensor fed in 256 KiB pieces was copied about 4.5 times
    over before it was complete. Large pieces are kept as they are (``bytes`` by reference,
    other buffers copied once, since the caller may reuse them); small ones are gathered into
    a bytearray of up to ~128 KiB, so a peer that sends one byte at a time costs no object per
    byte. ``get`` joins just the range asked for: one copy of each byte in all.
    """

    def __init__(self, limits: Limits) -> None:
        self.parts: deque[bytes | bytearray] = deque()
        self.head = 0  # bytes of parts[0] already consumed
        self.size = 0  # bytes held, from ``base``
        self.base = 0  # absolute offset of the first byte held
        self.complete = False
        self.limits = limits

    def append(self, data: bytes | bytearray | memoryview) -> None:
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        if not n:
            return
        parts = self.parts
        if n >= _SMALL:
            parts.append(data if type(data) is bytes else bytes(data))
        elif parts and type(parts[-1]) is bytearray and len(parts[-1]) < _SMALL:
            parts[-1] += data if not isinstance(data, memoryview) else data.cast("B")
        else:
            parts.append(bytearray(data))
        self.size += n

    def end(self) -> int:
        return self.base + self.size

    def get(self, off: int, n: int) -> bytes:
        i = off - self.base + self.head
        parts = self.parts
        first = parts[0] if parts else b""
        if i + n <= len(first):
            return bytes(memoryview(first)[i:i + n])
        out = []
        for p in parts:
            if i >= len(p):
                i -= len(p)
                continue
            take = memoryview(p)[i:i + n]
            out.append(take)
            n -= len(take)
            i = 0
            if not n:
                break
        got = b"".join(out)
        for v in out:  # a gathering bytearray may grow again: hold no export of it
            v.release()
        return got

    def discard(self, upto: int) -> None:
        k = upto - self.base
        self.base = upto
        self.size -= k
        k += self.head
        parts = self.parts
        while parts and k >= len(parts[0]):
            k -= len(parts.popleft())
        self.head = k

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
        self._src.append(data)

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
