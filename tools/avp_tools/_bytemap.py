"""--map, --hex and --explain: every byte of the message attributed to a field, padding or data.

All three views come from the walker's spans.  Bytes no span claims (possible only in a broken
file) are listed as UNACCOUNTED, so the map always adds up to the file size.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import _spec as S
from ._ctx import BufferLike
from ._model import Span, SpanKind, Walk
from ._render import Style, issue_lines, plain, table

# Section of the spec that describes each part, for --explain
_SECTION_TITLES = {"3": "Preamble", "4.1": "Section framing", "5": "Tensor data placement",
                   "6.1": "Header body", "6.2": "Metadata entries", "6.4": "Layer descriptor",
                   "7.1": "Tensor descriptor", "8": "INDEX section and Trailer",
                   "15": "Authentication", "2": "Message layout"}


def covering(w: Walk) -> Iterator[Span]:
    """The spans in offset order, with UNACCOUNTED spans filling any gap or tail."""
    assert w.spans is not None, "walk(record_spans=True) is needed for byte maps"
    pos = 0
    for s in w.spans:
        if s.start > pos:
            yield Span(pos, s.start, "UNACCOUNTED", "?", "-", SpanKind.UNPARSED)
        if s.end <= pos:
            continue  # fully inside an earlier span (cannot happen for a well-formed walk)
        yield s if s.start >= pos else Span(pos, s.end, s.path, s.section, s.spec, s.kind,
                                            s.value)
        pos = s.end
    if pos < w.size:
        yield Span(pos, w.size, "UNACCOUNTED", "?", "-", SpanKind.UNPARSED)


def _enum_names(leaf: str, path: str) -> dict[int, str] | None:
    if leaf == "type":
        return S.VALUE_TYPE_NAMES if ".entries[" in path else S.SECTION_NAMES
    if leaf == "key":
        return {c: k.name for c, k in S.KEYS.items()}
    if leaf in ("dtype", "dequant_dtype"):
        return {c: d.name for c, d in S.DTYPES.items()}
    if leaf == "role":
        return {c: r.name for c, r in S.ROLES.items()}
    return {"kind": S.KIND_NAMES, "layer_kind": S.LAYER_KIND_NAMES, "codec": S.CODEC_NAMES,
            "layout": S.LAYOUT_NAMES, "quant_scheme": S.QUANT_NAMES}.get(leaf)


def _show(s: Span) -> str:
    """A span's value as the map shows it: registry codes with their names, CRCs in hex."""
    v = s.value
    if v is None:
        return ""
    if isinstance(v, bytes):
        text = v.hex()
        return text if len(text) <= 48 else text[:48] + "..."
    if isinstance(v, int) and not isinstance(v, bool):
        leaf = s.path.rsplit(".", 1)[-1]
        if s.kind is SpanKind.CRC or leaf == "data_crc":
            return f"0x{v:08x}"
        if leaf in ("layer", "scale_tensor", "zero_point_tensor") and v == S.NO_REF:
            return f"{v} (none)"
        names = _enum_names(leaf, s.path)
        if names is not None and not (leaf == "dequant_dtype" and v == 0):
            return f"{v} ({names.get(v, 'unregistered')})"
        return str(v)
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def byte_map(w: Walk, style: Style = plain) -> list[str]:
    rows = [["offset", "end", "size", "kind", "spec", "field", "value"]]
    totals: dict[str, int] = {}
    for s in covering(w):
        rows.append([str(s.start), str(s.end), str(s.end - s.start), s.kind.value, s.spec,
                     s.path, _show(s)])
        totals[s.kind.value] = totals.get(s.kind.value, 0) + s.end - s.start
    out = table(rows, right=frozenset({0, 1, 2}))
    out = [style(line, "bad") if "UNACCOUNTED" in line else line for line in out]
    out.append("")
    out.append("  bytes by kind: " + ", ".join(f"{k} {v:,}" for k, v in sorted(totals.items()))
               + f"; total {sum(totals.values()):,} of {w.size:,}")
    if w.issues or w.issues_dropped:
        out += ["", "  issues found while walking the structure:"]
        out += issue_lines(w.issues, w.issues_dropped, style)
    return out


def hexdump(w: Walk, buf: BufferLike, data_bytes: int = 32, style: Style = plain) -> list[str]:
    """Annotated hexdump: each span's bytes, 16 per line, its name on the first line.  Tensor data
    and skipped bodies show ``data_bytes`` bytes and a count of the rest."""
    mv = memoryview(buf).cast("B") if not isinstance(buf, memoryview) else buf.cast("B")
    out: list[str] = []
    for s in covering(w):
        size = s.end - s.start
        shown = size
        if s.kind in (SpanKind.DATA, SpanKind.SKIPPED, SpanKind.UNPARSED):
            shown = min(size, data_bytes)
        label = s.path + (f" = {_show(s)}" if s.value is not None else "")
        if s.kind is SpanKind.PADDING:
            label = f"{s.path} ({size} zero bytes)"
        for i in range(0, max(shown, 1), 16):
            chunk = bytes(mv[s.start + i:s.start + min(shown, i + 16)])
            if not chunk:
                break
            hexpart = " ".join(f"{b:02x}" for b in chunk).ljust(47)
            note = label if i == 0 else ""
            out.append(f"{s.start + i:010x}  {hexpart}  {style(note, 'dim') if note else ''}"
                       .rstrip())
        if shown < size:
            out.append(f"{s.start + shown:010x}  ... {size - shown:,} more bytes of {s.path}")
    return out


def explain(w: Walk, offset: int) -> list[str]:
    for s in covering(w):
        if s.start <= offset < s.end:
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
                lines.append(f"  value    {_show(s)}")
            related = [i for i in w.issues if i.offset is not None and s.start <= i.offset < s.end]
            for i in related:
                lines.append(f"  issue    {i.code} {i.name} ({i.spec}): {i.message}")
            return lines
    raise ValueError(f"offset {offset} is outside the message (0..{w.size - 1})")
