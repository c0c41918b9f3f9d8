"""--map, --hex and --explain: every byte of the message attributed to a field, padding or data.

All three views consume the walker's spans as it produces them (in offset order), so they print
while walking and keep nothing per span: a file with a million fields costs no more memory than
one with ten. Bytes no span claims (possible only in a broken file) are shown as UNACCOUNTED,
so the map always adds up to the file size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from . import _spec as S
from ._ctx import BufferLike
from ._model import Preview, Span, SpanKind, Walk
from ._render import Style, issue_lines, plain
from ._walker import walk

Write = Callable[[str], None]
_LONG_VALUE = 4096  # --hex shows a metadata value longer than this like tensor data

# Section of the spec that describes each part, for --explain
_SECTION_TITLES = {"3": "Preamble", "4.1": "Section framing", "5": "Tensor data placement",
                   "6.1": "Header body", "6.2": "Metadata entries", "6.4": "Layer descriptor",
                   "7.1": "Tensor descriptor", "8": "INDEX section and Trailer",
                   "15": "Authentication", "2": "Message layout"}
_KEY_NAMES = {c: k.name for c, k in S.KEYS.items()}
_DTYPE_NAMES = {c: d.name for c, d in S.DTYPES.items()}
_ROLE_NAMES = {c: r.name for c, r in S.ROLES.items()}
_LEAF_NAMES = {"kind": S.KIND_NAMES, "layer_kind": S.LAYER_KIND_NAMES, "codec": S.CODEC_NAMES,
               "layout": S.LAYOUT_NAMES, "quant_scheme": S.QUANT_NAMES, "key": _KEY_NAMES,
               "dtype": _DTYPE_NAMES, "dequant_dtype": _DTYPE_NAMES, "role": _ROLE_NAMES}


class Cover:
    """Turns the walker's spans (offset order) into a covering of [0, size): gaps become
    UNACCOUNTED spans, overlaps are clipped."""

    def __init__(self, size: int, emit: Callable[[Span], None]) -> None:
        self.size, self.emit, self.pos = size, emit, 0

    def __call__(self, s: Span) -> None:
        if s.start > self.pos:
            self.emit(Span(self.pos, s.start, "UNACCOUNTED", "?", "-", SpanKind.UNPARSED))
        if s.end <= self.pos:
            return  # inside an earlier span (cannot happen for a well-formed walk)
        self.emit(s if s.start >= self.pos else Span(self.pos, s.end, s.path, s.section,
                                                     s.spec, s.kind, s.value))
        self.pos = s.end

    def close(self) -> None:
        if self.pos < self.size:
            self.emit(Span(self.pos, self.size, "UNACCOUNTED", "?", "-", SpanKind.UNPARSED))
            self.pos = self.size


def covering(w: Walk) -> Iterator[Span]:
    """The recorded spans of a walk (``walk(..., record_spans=True)``) as a covering."""
    assert w.spans is not None, "walk(record_spans=True) is needed for byte maps"
    out: list[Span] = []
    cover = Cover(w.size, out.append)
    for s in w.spans:
        cover(s)
        yield from out
        out.clear()
    cover.close()
    yield from out


def show(s: Span) -> str:
    """A span's value as the map shows it: registry codes with their names, CRCs in hex."""
    v = s.value
    if v is None:
        return ""
    if isinstance(v, Preview):
        text = str(v)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(v, bytes):
        text = v.hex()
        return text if len(text) <= 48 else text[:48] + "..."
    if isinstance(v, int) and not isinstance(v, bool):
        leaf = s.path.rsplit(".", 1)[-1]
        if s.kind is SpanKind.CRC or leaf == "data_crc":
            return f"0x{v:08x}"
        if leaf in ("layer", "scale_tensor", "zero_point_tensor") and v == S.NO_REF:
            return f"{v} (none)"
        names = _names(leaf, s.path)
        if names is not None and not (leaf == "dequant_dtype" and v == 0):
            return f"{v} ({names.get(v, 'unregistered')})"
        return str(v)
    if isinstance(v, tuple):
        text = "[" + ", ".join(map(str, v[:12])) + (", ..." if len(v) > 12 else "") + "]"
    else:
        text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _names(leaf: str, path: str) -> dict[int, str] | None:
    if leaf == "type":
        return S.VALUE_TYPE_NAMES if ".value" not in path and "entries[" in path \
            else S.SECTION_NAMES
    return _LEAF_NAMES.get(leaf)


def byte_map(buf: BufferLike, write: Write, style: Style = plain, *,
             limits: S.Limits | None = None, verify: bool = False) -> Walk:
    """Write the byte map of ``buf`` (one line per span, as the walk finds them); the Walk."""
    size = len(memoryview(buf).cast("B"))
    width = max(6, len(str(size)))
    write("  " + "  ".join(["offset".rjust(width), "end".rjust(width), "size".rjust(width),
                            "kind".ljust(9), "spec ", "field".ljust(40), "value"]).rstrip())
    totals: dict[str, int] = {}

    def emit(s: Span) -> None:
        n = s.end - s.start
        totals[s.kind.value] = totals.get(s.kind.value, 0) + n
        line = "  " + "  ".join([str(s.start).rjust(width), str(s.end).rjust(width),
                                 str(n).rjust(width), s.kind.value.ljust(9), s.spec.ljust(5),
                                 s.path.ljust(40), show(s)]).rstrip()
        write(style(line, "bad") if s.path == "UNACCOUNTED" else line)

    cover = Cover(size, emit)
    w = walk(buf, limits=limits, verify_data=verify, sink=cover)
    cover.close()
    write("")
    write("  bytes by kind: " + ", ".join(f"{k} {v:,}" for k, v in sorted(totals.items()))
          + f"; total {sum(totals.values()):,} of {size:,}")
    if w.issues or w.issues_dropped:
        write("")
        write("  issues found while walking the structure:")
        for line in issue_lines(w.issues, w.issues_dropped, style):
            write(line)
    return w


def hexdump(buf: BufferLike, write: Write, data_bytes: int = 32, style: Style = plain, *,
            limits: S.Limits | None = None, verify: bool = False) -> Walk:
    """Annotated hexdump: each span's bytes, 16 per line, its name on the first line.  Tensor data
    and skipped or unparsed bodies show ``data_bytes`` bytes and a count of the rest."""
    mv = memoryview(buf).cast("B")

    def emit(s: Span) -> None:
        size = s.end - s.start
        shown = size
        if s.kind in (SpanKind.DATA, SpanKind.SKIPPED, SpanKind.UNPARSED) or (
                s.kind is SpanKind.VALUE and size > _LONG_VALUE):
            shown = min(size, data_bytes)
        label = s.path + (f" = {show(s)}" if s.value is not None else "")
        if s.kind is SpanKind.PADDING:
            label = f"{s.path} ({size} zero bytes)"
        for i in range(0, shown, 16):
            chunk = bytes(mv[s.start + i:s.start + min(shown, i + 16)])
            hexpart = " ".join(f"{b:02x}" for b in chunk).ljust(47)
            note = label if i == 0 else ""
            write(f"{s.start + i:010x}  {hexpart}  {style(note, 'dim') if note else ''}"
                  .rstrip())
        if shown < size:
            if shown == 0:
                write(f"{s.start:010x}  {style(label, 'dim')}")
            write(f"{s.start + shown:010x}  ... {size - shown:,} more bytes of {s.path}")

    cover = Cover(len(mv), emit)
    w = walk(buf, limits=limits, verify_data=verify, sink=cover)
    cover.close()
    return w


def explain(buf: BufferLike, offset: int, *, limits: S.Limits | None = None,
            verify: bool = False) -> tuple[Walk, list[str]]:
    """Which field byte ``offset`` belongs to; ValueError when it is outside the input."""
    size = len(memoryview(buf).cast("B"))
    if not 0 <= offset < size:
        raise ValueError(f"offset {offset} is outside the message (0..{size - 1})")
    found: list[Span] = []

    def keep(s: Span) -> None:
        if s.start <= offset < s.end:
            found.append(s)

    cover = Cover(size, keep)
    w = walk(buf, limits=limits, verify_data=verify, sink=cover)
    cover.close()
    s = found[0]
    within = offset - s.start
    title = _SECTION_TITLES.get(s.spec, "")
    lines = [f"offset {offset} (0x{offset:x})",
             f"  field    {s.path}",
             f"  kind     {s.kind.value}",
             f"  bytes    [{s.start}, {s.end}) ({s.end - s.start} bytes); this is byte "
             f"{within} of them",
             f"  section  {s.section}",
             f"  spec     section {s.spec}" + (f" ({title})" if title else "")]
    if s.value is not None:
        lines.append(f"  value    {show(s)}")
    for i in w.issues:
        if i.offset is not None and s.start <= i.offset < s.end:
            lines.append(f"  issue    {i.code} {i.name} ({i.spec}): {i.message}")
    return w, lines
