"""The default text view: a header-only summary built from a Walk (no tensor data is read)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import _spec as S
from ._model import EntryInfo, Issue, TensorInfo, Walk

Style = Callable[[str, str], str]  # (text, role) -> text; role in "head", "bad", "ok", "dim"

_ID_KEYS = frozenset({1, 2, 18, 19, 20, 55, 96})  # identities, shown in full hex


def plain(text: str, role: str) -> str:
    return text


def table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Left-aligned columns (right-aligned for the column numbers in ``right``)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                 enumerate(zip(r, widths, strict=True))]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def fmt_value(e: EntryInfo, limit: int = 64) -> str:
    v = e.value
    if e.key == 64 and isinstance(v, int):
        return f"{v} ({S.error_name(v)})"
    if e.key == 54 and isinstance(v, int):
        return f"{v} ({S.MODE_NAMES.get(v, '?')})"
    if e.key == 49 and isinstance(v, tuple):
        return "[" + ", ".join(f"{x >> 16}.{x & 0xFFFF}" for x in v) + "]"
    if e.key in (50, 51, 52) and isinstance(v, tuple):
        table = {50: {c: i.name for c, i in S.DTYPES.items()}, 51: S.CODEC_NAMES,
                 52: S.MODE_NAMES}[e.key]
        return "[" + ", ".join(table.get(x, f"?{x}") for x in v) + "]"
    if isinstance(v, bytes):
        if e.key in _ID_KEYS and len(v) <= 64:
            return v.hex()
        text = v[:limit // 2].hex()
        return f"{text}... ({len(v)} bytes)" if len(v) > limit // 2 else text
    if isinstance(v, str):
        r = repr(v)
        return r if len(r) <= limit else r[:limit - 4] + "...'" + f" ({len(v)} chars)"
    return str(v)


def issue_lines(issues: Sequence[Issue], dropped: int, style: Style) -> list[str]:
    rows = [["code", "name", "offset", "spec", "field", "problem"]]
    rows += [[f"{i.code}", i.name, "-" if i.offset is None else str(i.offset), i.spec, i.path,
              i.message] for i in issues]
    lines = table(rows, right=frozenset({0, 2}))
    lines = lines[:1] + [style(line, "bad") for line in lines[1:]]
    if dropped:
        lines.append(f"  ... and {dropped} more issues not listed")
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


def summary(w: Walk, name: str, style: Style = plain) -> list[str]:
    out: list[str] = []

    def h(text: str) -> str:
        return style(text, "head")

    version = "?" if w.major is None else f"{w.major}.{w.minor}"
    kind = "?" if w.kind is None else f"{S.KIND_NAMES.get(w.kind, 'UNKNOWN')} ({w.kind})"
    if w.issues or w.issues_dropped:
        n = len(w.issues) + w.issues_dropped
        status = style(f"INVALID ({n} issue{'' if n == 1 else 's'})", "bad")
    elif not w.complete:
        status = style("INCOMPLETE", "bad")
    elif w.data_verified:
        status = style("valid", "ok")
    else:
        status = style("structure valid (tensor data not read; --verify checks it)", "ok")
    out.append(f"{h('file')}     {name}  ({w.size:,} bytes)")
    out.append(f"{h('format')}   AVP {version}   {h('kind')} {kind}   {h('status')} {status}")
    parts = []
    if w.header_offset is not None:
        parts.append(f"header @{w.header_offset}")
    parts.append(f"{len(w.tensors)} tensor sections")
    if w.skipped_sections:
        parts.append(f"{len(w.skipped_sections)} skipped unknown sections")
    if w.index is not None:
        parts.append(f"index @{w.index.offset}" + (" +auth tag" if w.index.auth_tag else ""))
    if w.trailer_offset is not None:
        parts.append(f"trailer @{w.trailer_offset}")
    out.append(f"{h('layout')}   " + ", ".join(parts))
    ids = [e for e in w.entries if e.key in _ID_KEYS and isinstance(e.value, bytes)]
    if ids:
        out.append("")
        out.append(h("identities"))
        out += table([[S.key_name(e.key), fmt_value(e)] for e in ids])
    out.append("")
    out.append(h(f"metadata ({len(w.entries)} entries)"))
    rows = [["key", "name", "type", "crit", "value"]]
    rows += [[str(e.key), S.key_name(e.key), S.VALUE_TYPE_NAMES.get(e.vtype, f"?{e.vtype}"),
              "C" if e.flags & 1 else "", fmt_value(e)] for e in w.entries]
    out += table(rows, right=frozenset({0}))
    out.append("")
    out.append(h(f"layers ({len(w.layers)})"))
    if w.layers:
        rows = [["#", "index", "kind", "window", "token_start", "token_count"]]
        rows += [[str(j), str(la.layer_index), S.LAYER_KIND_NAMES.get(la.layer_kind, "?"),
                  str(la.window), str(la.token_start), str(la.token_count)]
                 for j, la in enumerate(w.layers)]
        out += table(rows, right=frozenset({0, 1, 3, 4, 5}))
    out.append("")
    out.append(h(f"tensors ({len(w.tensors)})"))
    if w.tensors:
        rows = [["#", "layer", "role", "dtype", "codec", "shape", "layout", "tok0", "stored",
                 "raw", "data@", "crc"]]
        rows += [_tensor_row(t, len(w.layers)) for t in w.tensors]
        out += table(rows, right=frozenset({0, 7, 8, 9, 10}))
    out += _totals(w, h)
    if w.issues or w.issues_dropped:
        out.append("")
        out.append(h("issues") + " (--issues for the full check with tensor data)")
        out += issue_lines(w.issues, w.issues_dropped, style)
    return out


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
