"""The default text view: a header-only summary built from a Walk (no tensor data is read).

Lines are produced one at a time; tables take two passes over their records (one for the column
widths, one to print), so no table is ever held as text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from . import _spec as S
from ._model import EntryInfo, Issue, Preview, TensorInfo, Walk

Style = Callable[[str, str], str]  # (text, role) -> text; role in "head", "bad", "ok", "dim"

_ID_KEYS = frozenset({1, 2, 18, 19, 20, 55, 96})  # identities, shown in full hex


def plain(text: str, role: str) -> str:
    return text


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 entry``, ``2 entries``: a count with its noun."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Left-aligned columns (right-aligned for the column numbers in ``right``)."""
    return list(stream_table(lambda: iter(rows), right))


def stream_table(rows: Callable[[], Iterator[Sequence[str]]],
                 right: frozenset[int] = frozenset()) -> Iterator[str]:
    """A table from a row source called twice: once for the widths, once to print."""
    widths: list[int] = []
    for r in rows():
        if not widths:
            widths = [0] * len(r)
        for i, c in enumerate(r):
            if len(c) > widths[i]:
                widths[i] = len(c)
    for r in rows():
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                 enumerate(zip(r, widths, strict=True))]
        yield "  " + "  ".join(cells).rstrip()


def fmt_value(e: EntryInfo, limit: int = 64) -> str:
    v = e.value
    if isinstance(v, Preview):  # a large value: its prefix, shown like a small one
        if isinstance(v.head, str):
            return repr(v.head[:limit])[:-1] + "...'" + f" ({v.count} chars)"
        if isinstance(v.head, tuple):
            return fmt_value(EntryInfo(e.offset, e.key, e.flags, e.vtype, e.length,
                                       e.value_offset, v.head), limit)[:-1] + \
                f", ... ({v.count:,} values)]"
        head = v.head if isinstance(v.head, (bytes, bytearray)) else b""
        return f"{bytes(head)[:limit // 2].hex()}... ({v.length} bytes)"
    if e.key == 64 and isinstance(v, int):
        return f"{v} ({S.error_name(v)})"
    if e.key == 54 and isinstance(v, int):
        return f"{v} ({S.MODE_NAMES.get(v, '?')})"
    if e.key == 49 and isinstance(v, tuple):
        return _list(v, lambda x: f"{x >> 16}.{x & 0xFFFF}")
    if e.key in (50, 51, 52) and isinstance(v, tuple):
        names = {50: {c: i.name for c, i in S.DTYPES.items()}, 51: S.CODEC_NAMES,
                 52: S.MODE_NAMES}[e.key]
        return _list(v, lambda x: names.get(x, f"?{x}"))
    if isinstance(v, tuple):
        return _list(v, str)
    if isinstance(v, bytes):
        if e.key in _ID_KEYS and len(v) <= 64:
            return v.hex()
        text = v[:limit // 2].hex()
        return f"{text}... ({len(v)} bytes)" if len(v) > limit // 2 else text
    if isinstance(v, str):
        r = repr(v[:limit])
        return r if len(v) <= limit else r[:-1] + "...'" + f" ({len(v)} chars)"
    return str(v)


def _list(v: tuple[int, ...], name: Callable[[int], str], most: int = 16) -> str:
    shown = ", ".join(name(x) for x in v[:most])
    return f"[{shown}, ... ({len(v):,} values)]" if len(v) > most else f"[{shown}]"


def issue_lines(issues: Sequence[Issue], dropped: int, style: Style) -> list[str]:
    rows = [["code", "name", "offset", "spec", "field", "problem"]]
    rows += [[f"{i.code}", i.name, "-" if i.offset is None else str(i.offset), i.spec,
              i.path or "-", i.message] for i in issues]
    lines = table(rows, right=frozenset({0, 2}))
    lines = lines[:1] + [style(line, "bad") for line in lines[1:]]
    if dropped:
        lines.append(f"  ... and {plural(dropped, 'more issue')} not listed")
    return lines


def _tensor_row(t: TensorInfo, layers: int) -> list[str]:
    layer = "msg" if t.layer == S.NO_REF else (str(t.layer) if t.layer < layers else
                                                  f"{t.layer}?")
    dtype = S.dtype_name(t.dtype)
    if t.quant_scheme:
        dtype += f"/{S.QUANT_NAMES.get(t.quant_scheme, '?').lower()}"
    return [str(t.ordinal), layer, S.role_name(t.role), dtype,
            S.CODEC_NAMES.get(t.codec, f"codec?{t.codec}"),
            "[" + ",".join(str(d) for d in t.shape) + "]",
            S.LAYOUT_NAMES.get(t.layout, f"?{t.layout}"),
            str(t.token_offset), f"{t.stored_length:,}", f"{t.raw_length:,}",
            str(t.data_offset) if t.data_offset >= 0 else "-", t.crc_status]


def status(w: Walk, style: Style) -> str:
    if w.issues or w.issues_dropped:
        n = len(w.issues) + w.issues_dropped
        return style(f"INVALID ({plural(n, 'issue')})", "bad")
    if not w.complete:
        return style("INCOMPLETE", "bad")
    if w.data_verified:
        return style("valid", "ok")
    return style("structure valid (tensor data not read; --verify checks it)", "ok")


def summary(w: Walk, name: str, style: Style = plain) -> Iterator[str]:
    def h(text: str) -> str:
        return style(text, "head")

    version = "?" if w.major is None else f"{w.major}.{w.minor}"
    kind = "?" if w.kind is None else f"{S.KIND_NAMES.get(w.kind, 'UNKNOWN')} ({w.kind})"
    yield f"{h('file')}     {name}  ({w.size:,} bytes)"
    yield f"{h('format')}   AVP {version}   {h('kind')} {kind}   {h('status')} {status(w, style)}"
    parts = []
    if w.header_offset is not None:
        parts.append(f"header @{w.header_offset}")
    parts.append(plural(len(w.tensors), "tensor section"))
    if w.skipped_count:
        parts.append(plural(w.skipped_count, "unknown section"))
    if w.index is not None:
        parts.append(f"index @{w.index.offset}" + (" +auth tag" if w.index.auth_tag else ""))
    if w.trailer_offset is not None:
        parts.append(f"trailer @{w.trailer_offset}")
    yield f"{h('layout')}   " + ", ".join(parts)
    ids = [e for e in w.entries if e.key in _ID_KEYS and isinstance(e.value, bytes)]
    if ids:
        yield ""
        yield h("identities")
        yield from table([[S.key_name(e.key), fmt_value(e)] for e in ids])
    yield ""
    yield h(f"metadata ({plural(len(w.entries), 'entry', 'entries')})")

    def entry_rows() -> Iterator[list[str]]:
        yield ["key", "name", "type", "crit", "value"]
        for e in w.entries:
            yield [str(e.key), S.key_name(e.key), S.VALUE_TYPE_NAMES.get(e.vtype, f"?{e.vtype}"),
                   "C" if e.flags & 1 else "", fmt_value(e)]

    yield from stream_table(entry_rows, right=frozenset({0}))
    yield ""
    yield h(f"layers ({len(w.layers):,})")
    if w.layers:
        def layer_rows() -> Iterator[list[str]]:
            yield ["#", "index", "kind", "window", "token_start", "token_count"]
            for j, la in enumerate(w.layers):
                yield [str(j), str(la.layer_index), S.LAYER_KIND_NAMES.get(la.layer_kind, "?"),
                       str(la.window), str(la.token_start), str(la.token_count)]

        yield from stream_table(layer_rows, right=frozenset({0, 1, 3, 4, 5}))
    yield ""
    yield h(f"tensors ({len(w.tensors):,})")
    if w.tensors:
        def tensor_rows() -> Iterator[list[str]]:
            yield ["#", "layer", "role", "dtype", "codec", "shape", "layout", "tok0", "stored",
                   "raw", "data@", "crc"]
            for t in w.tensors:
                yield _tensor_row(t, len(w.layers))

        yield from stream_table(tensor_rows, right=frozenset({0, 7, 8, 9, 10}))
    yield from _totals(w, h)
    if w.issues or w.issues_dropped:
        yield ""
        yield h("issues") + " (--issues for the full check with tensor data)"
        yield from issue_lines(w.issues, w.issues_dropped, style)


def _totals(w: Walk, h: Callable[[str], str]) -> list[str]:
    if not w.tensors:
        return []
    stored = sum(t.stored_length for t in w.tensors)
    raw = sum(t.raw_length for t in w.tensors)
    ratio = f"{raw / stored:.2f}x" if stored else "-"
    share = f"{100 * stored / w.size:.1f}%" if w.size else "-"
    out = ["", h("totals") + f"   stored {stored:,} bytes, raw {raw:,} bytes (ratio {ratio}), "
           f"data is {share} of the message"]
    by: dict[str, list[int]] = {}
    for t in w.tensors:
        acc = by.setdefault(S.dtype_name(t.dtype), [0, 0, 0])
        acc[0] += 1
        acc[1] += t.stored_length
        acc[2] += t.raw_length
    rows = [["dtype", "tensors", "stored", "raw"]]
    rows += [[k, str(v[0]), f"{v[1]:,}", f"{v[2]:,}"] for k, v in sorted(by.items())]
    out.append(h("by dtype"))
    out += table(rows, right=frozenset({1, 2, 3}))
    return out
