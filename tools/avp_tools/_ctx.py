"""Shared state of one lenient walk: the buffer, the findings and small reading helpers."""

from __future__ import annotations

import mmap
import struct

from ._model import Issue, Span, SpanKind, Walk
from ._spec import ERR, Limits

# A broken file can produce one issue per tensor; past this many the rest are only counted, so a
# hostile input cannot make the report itself unbounded.
MAX_ISSUES = 1000

BufferLike = bytes | bytearray | memoryview | mmap.mmap

_FMT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


class Ctx:
    def __init__(self, buf: BufferLike, limits: Limits, verify_data: bool, record_spans: bool):
        self.buf = memoryview(buf).cast("B")
        self.n = len(self.buf)
        self.limits = limits
        self.verify_data = verify_data
        self.walk = Walk(size=self.n, spans=[] if record_spans else None)
        self.walk.data_verified = verify_data
        self.quant_refs: dict[int, int] = {}  # parameter tensor -> the tensor that uses it

    # -- findings -------------------------------------------------------------------------------
    def issue(self, name: str, offset: int | None, path: str, spec: str, message: str) -> None:
        w = self.walk
        if len(w.issues) >= MAX_ISSUES:
            w.issues_dropped += 1
            return
        w.issues.append(Issue(ERR[name], offset, path, spec, message))

    def span(self, start: int, size: int, path: str, section: str, spec: str,
             kind: SpanKind = SpanKind.FIELD, value: object = None) -> None:
        spans = self.walk.spans
        if spans is not None and size > 0:
            spans.append(Span(start, start + size, path, section, spec, kind, value))

    # -- reading --------------------------------------------------------------------------------
    def uint(self, off: int, size: int) -> int:
        value: int = struct.unpack_from(_FMT[size], self.buf, off)[0]
        return value

    def field(self, off: int, size: int, path: str, section: str, spec: str) -> int:
        """Read an unsigned field (caller guarantees the bytes are present) and record its span."""
        value = self.uint(off, size)
        self.span(off, size, path, section, spec, SpanKind.FIELD, value)
        return value

    def reserved(self, off: int, size: int, path: str, section: str, spec: str) -> None:
        """A reserved field: must be zero (R-1.2)."""
        raw = bytes(self.buf[off:off + size])
        self.span(off, size, path, section, spec, SpanKind.FIELD, raw)
        if any(raw):
            self.issue("RESERVED_NONZERO", off, path, "R-1.2",
                       f"reserved field is {raw.hex()}, must be zero")

    def padding(self, off: int, size: int, path: str, section: str, spec: str) -> None:
        """Zero padding (R-1.3).  Checked in chunks so a big pad never becomes one big copy."""
        if size <= 0:
            return
        self.span(off, size, path, section, spec, SpanKind.PADDING)
        chunk = 1 << 16
        for start in range(off, off + size, chunk):
            piece = self.buf[start:min(off + size, start + chunk)]
            if any(piece):
                first = start + next(i for i, b in enumerate(piece) if b)
                self.issue("NONZERO_PADDING", first, path, "R-1.3",
                           f"padding byte at offset {first} is {self.buf[first]:#04x}")
                return

    def have(self, off: int, size: int) -> bool:
        return off + size <= self.n
