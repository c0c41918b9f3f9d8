"""A bounds-checked little-endian reader over untrusted bytes.

Every foreign blob the converters accept (llama.cpp state, LMCache frames) is read through this:
each read checks the remaining length first and slices without copying, so a declared count or
size that runs past the end is TRUNCATED before anything is allocated for it. Memory use is the
caller's buffer plus what the caller decides to build from the views handed back.
"""

from __future__ import annotations

import struct

from avp_codec import AvpError, ErrorCode

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")


class Reader:
    """Sequential reads from a memoryview; `what` names the format in error messages."""

    __slots__ = ("_buf", "_pos", "_what")

    def __init__(self, data: bytes | bytearray | memoryview, what: str) -> None:
        mv = data if isinstance(data, memoryview) else memoryview(data)
        self._buf = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
        self._pos = 0
        self._what = what

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._buf) - self._pos

    def _need(self, n: int, field: str) -> None:
        if n < 0 or n > self.remaining:
            raise AvpError(
                ErrorCode.TRUNCATED,
                f"{self._what} ends inside {field}: {n} bytes needed, {self.remaining} left",
                offset=self._pos, path=field,
            )

    def u32(self, field: str) -> int:
        self._need(4, field)
        (v,) = _U32.unpack_from(self._buf, self._pos)
        self._pos += 4
        return int(v)

    def i32(self, field: str) -> int:
        self._need(4, field)
        (v,) = _I32.unpack_from(self._buf, self._pos)
        self._pos += 4
        return int(v)

    def u64(self, field: str) -> int:
        self._need(8, field)
        (v,) = _U64.unpack_from(self._buf, self._pos)
        self._pos += 8
        return int(v)

    def take(self, n: int, field: str) -> memoryview:
        """The next `n` bytes as a view (no copy)."""
        self._need(n, field)
        out = self._buf[self._pos:self._pos + n]
        self._pos += n
        return out

    def end(self) -> None:
        """Refuse bytes left after the structure."""
        if self.remaining:
            raise AvpError(
                ErrorCode.TRAILING_BYTES,
                f"{self.remaining} bytes after the end of the {self._what}",
                offset=self._pos,
            )
