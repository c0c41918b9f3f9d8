"""Shared state of one lenient walk: the buffer, the findings and small reading helpers."""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable

import avp_codec as avp

from ._model import Issue, Span, SpanKind, Walk
from ._spec import ERR, SPEC_OF, Limits

# A broken file can produce one issue per tensor; past this many the rest are only counted, so a
# hostile input cannot make the report itself unbounded.
MAX_ISSUES = 1000
# Unknown skippable sections are counted; the first this many are also listed.
SKIPPED_KEPT = 1000

BufferLike = bytes | bytearray | memoryview | mmap.mmap
SpanSink = Callable[[Span], None]

_FMT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


class Ctx:
    def __init__(self, buf: BufferLike, limits: Limits, verify_data: bool,
                 sink: SpanSink | None):
        self.buf = memoryview(buf).cast("B")
        self.n = len(self.buf)
        self.limits = limits
        self.verify_data = verify_data
        self.walk = Walk(size=self.n)
        self.walk.data_verified = verify_data
        # Spans go to the sink as they are found, in offset order (the walker records them
        # front to back), so --map / --hex print as they walk and hold nothing.
        self.sink = sink

    # -- findings -------------------------------------------------------------------------------
    def issue(self, name: str, offset: int | None, path: str, spec: str, message: str) -> None:
        w = self.walk
        if len(w.issues) >= MAX_ISSUES:
            w.issues_dropped += 1
            return
        w.issues.append(Issue(ERR[name], offset, path, spec, message))

    def error(self, exc: avp.AvpError) -> None:
        """Record an error raised by one of the codec's own checks, exactly as it reports it."""
        self.issue(exc.code.name, exc.offset, exc.path, SPEC_OF.get(exc.code.name, "17"),
                   exc.detail)

    def span(self, start: int, size: int, path: str, section: str, spec: str,
             kind: SpanKind = SpanKind.FIELD, value: object = None) -> None:
        if self.sink is not None and size > 0:
            self.sink(Span(start, start + size, path, section, spec, kind, value))

    # -- reading --------------------------------------------------------------------------------
    def uint(self, off: int, size: int) -> int:
        value: int = struct.unpack_from(_FMT[size], self.buf, off)[0]
        return value

    def field(self, off: int, size: int, path: str, section: str, spec: str) -> int:
        """Read an unsigned field (caller guarantees the bytes are present) and record its span."""
        value = self.uint(off, size)
        self.span(off, size, path, section, spec, SpanKind.FIELD, value)
        return value

    def nonzero_at(self, off: int, size: int) -> int | None:
        """Offset of the first nonzero byte in [off, off + size), read in 64 KiB pieces so a
        large pad is never copied whole; None when all are zero."""
        chunk = 1 << 16
        for start in range(off, off + size, chunk):
            piece = self.buf[start:min(off + size, start + chunk)]
            if int.from_bytes(piece, "little"):
                return start + next(i for i, b in enumerate(piece) if b)
        return None

    def padding(self, off: int, size: int, path: str, section: str, spec: str,
                issue_path: str = "") -> None:
        """Zero padding (R-1.3), reported at its first byte as the decoder does."""
        if size <= 0:
            return
        self.span(off, size, path, section, spec, SpanKind.PADDING)
        first = self.nonzero_at(off, size)
        if first is not None:
            self.issue("NONZERO_PADDING", off, issue_path, "R-1.3",
                       f"padding byte at offset {first} is {self.buf[first]:#04x}")

    def have(self, off: int, size: int) -> bool:
        return off + size <= self.n
