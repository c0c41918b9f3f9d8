"""``avp-dump diff A B``: what differs between two messages, valid or not.

Both inputs are walked leniently with data verification, so a broken file is compared with a
good one as far as its bytes can be read: the report says what decodes in each (valid, or the
first issue: where a decoder stops), where the two byte streams part (the first differing byte
and the field it belongs to on each side), then the differences between what both walks read:
format version, size, kind, metadata entries by key, the layer table field by field, and tensors
paired by (layer, role, token_offset) rather than by position: descriptor fields, the SHA-256 of
the raw bytes and, for tensors of the same shape whose data are intact, how many elements differ
and the largest absolute difference. Everything is streamed (values in chunks, digests in
pieces), so the cost is bounded like the other views'.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np

from . import _spec as S
from ._ctx import BufferLike
from ._data import DataError, element_chunks, elements, raw_chunks, readable
from ._model import EntryInfo, Preview, Span, TensorInfo, Walk
from ._stats import Undequantizable, value_chunks
from ._walker import walk

_Key = tuple[int, int, int, int]  # layer (-1 = message level), role, token_offset, occurrence


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def verdict(w: Walk, label: str, name: str) -> list[str]:
    """What decodes in one input: valid, or where a decoder stops and what the walker read."""
    kind = S.KIND_NAMES.get(w.kind, f"kind {w.kind}") if w.kind is not None else "no header"
    read = (f"{kind}, {plural(len(w.entries), 'entry', 'entries')}, "
            f"{plural(len(w.layers), 'layer')}, {plural(len(w.tensors), 'tensor')}")
    if w.valid:
        return [f"{label}  {name}: valid ({read})"]
    n = len(w.issues) + w.issues_dropped
    damaged = sum(1 for t in w.tensors if not t.data_ok or t.crc_status != "ok")
    out = [f"{label}  {name}: INVALID, {plural(n, 'issue')}; a decoder stops at the first:"]
    first = w.first
    if first is not None:
        where = f" ({first.path})" if first.path else ""
        out.append(f"     {first.code} {first.name} at offset {first.offset}{where}: "
                   f"{first.message}")
    extra = f" ({damaged} with damaged data)" if damaged else ""
    tail = "" if w.complete else "; the input ends before the trailer"
    out.append(f"   read: {read}{extra}{tail}")
    return out


def diff(a: BufferLike, b: BufferLike, wa: Walk, wb: Walk, names: tuple[str, str] = ("A", "B"),
         limits: S.Limits | None = None) -> list[str]:
    """Lines describing every difference; empty when the inputs are byte for byte identical
    and valid."""
    out: list[str] = []
    same_bytes = _first_difference(a, b) is None
    if same_bytes and wa.valid:
        return []
    if not (wa.valid and wb.valid):
        out += verdict(wa, "A", names[0])
        out += verdict(wb, "B", names[1])
    if same_bytes:
        out.append("bytes  identical")
        return out
    out.append(_parting(a, b, limits))
    for name, va, vb in (("format", f"{wa.major}.{wa.minor}", f"{wb.major}.{wb.minor}"),
                         ("size", f"{wa.size:,}", f"{wb.size:,}"),
                         ("kind", _kind(wa), _kind(wb))):
        if va != vb:
            out.append(f"header.{name}: {va} != {vb}")
    out += _entries(a, b, wa, wb)
    out += _layers(wa, wb)
    out += _tensors(a, b, wa, wb)
    return out


def _kind(w: Walk) -> str:
    return "-" if w.kind is None else S.KIND_NAMES.get(w.kind, f"unregistered {w.kind}")


def _first_difference(a: BufferLike, b: BufferLike) -> int | None:
    ma, mb = memoryview(a).cast("B"), memoryview(b).cast("B")
    n = min(len(ma), len(mb))
    step = 1 << 20
    for i in range(0, n, step):
        x, y = ma[i:min(n, i + step)], mb[i:min(n, i + step)]
        if x != y:
            xa = np.frombuffer(x, np.uint8)
            ya = np.frombuffer(y, np.uint8)
            return i + int(np.flatnonzero(xa != ya)[0])
    return None if len(ma) == len(mb) else n


def _field_at(buf: BufferLike, offset: int, limits: S.Limits | None) -> str:
    found: list[str] = []

    def sink(s: Span) -> None:
        if not found and s.start <= offset < s.end:
            found.append(s.path)

    walk(buf, limits=limits, sink=sink)
    return found[0] if found else "bytes the walker could not attribute"


def _parting(a: BufferLike, b: BufferLike, limits: S.Limits | None) -> str:
    at = _first_difference(a, b)
    assert at is not None
    la, lb = len(memoryview(a).cast("B")), len(memoryview(b).cast("B"))
    if at == min(la, lb):
        short, which = ("A", "B") if la < lb else ("B", "A")
        return (f"bytes  {short} is the first {at:,} bytes of {which} (it ends inside "
                f"{_field_at(b if short == 'A' else a, at, limits)} of {which})")
    return (f"bytes  first difference at offset {at:,}: A {_field_at(a, at, limits)}, "
            f"B {_field_at(b, at, limits)}")


def _show(v: object) -> str:
    if isinstance(v, Preview):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        raw = bytes(v)
        return raw.hex() if len(raw) <= 32 else f"{raw[:16].hex()}... ({len(raw)} bytes)"
    r = repr(list(v) if isinstance(v, tuple) else v)
    return r if len(r) <= 80 else r[:77] + "..."


def _value_digest(buf: BufferLike, e: EntryInfo) -> bytes:
    mv = memoryview(buf).cast("B")[e.value_offset:e.value_offset + e.length]
    return hashlib.sha256(mv).digest()


def _entries(a: BufferLike, b: BufferLike, wa: Walk, wb: Walk) -> list[str]:
    out = []
    ea = {e.key: e for e in reversed(wa.entries)}  # the first entry of a key, as decode uses
    eb = {e.key: e for e in reversed(wb.entries)}
    for key in sorted(set(ea) | set(eb)):
        name = f"entry {S.key_name(key)} ({key})"
        if key not in eb:
            out.append(f"{name}: only in A = {_show(ea[key].value)}")
        elif key not in ea:
            out.append(f"{name}: only in B = {_show(eb[key].value)}")
        else:
            x, y = ea[key], eb[key]
            if (x.vtype, x.flags) != (y.vtype, y.flags):
                out.append(f"{name}: type/flags {_vtype(x)}/{x.flags} != {_vtype(y)}/{y.flags}")
            if _value_digest(a, x) != _value_digest(b, y):
                out.append(f"{name}: {_show(x.value)} != {_show(y.value)}")
    return out


def _vtype(e: EntryInfo) -> str:
    return S.VALUE_TYPE_NAMES.get(e.vtype, f"type {e.vtype}")


_LAYER_FIELDS = (("layer_index", "index"), ("layer_kind", "kind"), ("window", "window"),
                 ("token_start", "token_start"), ("token_count", "token_count"))


def _layers(wa: Walk, wb: Walk) -> list[str]:
    out = []
    if len(wa.layers) != len(wb.layers):
        out.append(f"layers: {len(wa.layers)} != {len(wb.layers)}")
    for j, (la, lb) in enumerate(zip(wa.layers, wb.layers, strict=False)):
        for attr, shown in _LAYER_FIELDS:
            x, y = getattr(la, attr), getattr(lb, attr)
            if x != y:
                if attr == "layer_kind":
                    x = S.LAYER_KIND_NAMES.get(x, x)
                    y = S.LAYER_KIND_NAMES.get(y, y)
                out.append(f"layers[{j}].{shown}: {x} != {y}")
    return out


def _tensor_keys(w: Walk) -> dict[_Key, int]:
    keys: dict[_Key, int] = {}
    seen: dict[tuple[int, int, int], int] = {}
    for i, t in enumerate(w.tensors):
        base = (-1 if t.layer == S.NO_REF else t.layer, t.role, t.token_offset)
        n = seen.get(base, 0)
        seen[base] = n + 1
        keys[(*base, n)] = i
    return keys


def _key_text(key: _Key) -> str:
    layer = "msg" if key[0] < 0 else f"layer {key[0]}"
    extra = f", token_offset {key[2]}" if key[2] else ""
    return f"{layer} {S.role_name(key[1])}{extra}"


def _tensors(a: BufferLike, b: BufferLike, wa: Walk, wb: Walk) -> list[str]:
    out = []
    if len(wa.tensors) != len(wb.tensors):
        out.append(f"tensors: {len(wa.tensors)} != {len(wb.tensors)}")
    # Paired by what they hold, not by position, so one extra message-level tensor does not
    # make every later pair differ.
    ka, kb = _tensor_keys(wa), _tensor_keys(wb)
    for tk in sorted(set(ka) | set(kb), key=lambda k: (ka.get(k, kb.get(k, 0)), k)):
        if tk not in kb:
            out.append(f"tensor[{ka[tk]}] ({_key_text(tk)}): only in A")
        elif tk not in ka:
            out.append(f"tensor[{kb[tk]}] ({_key_text(tk)}): only in B")
        else:
            out += _tensor_diff(a, b, wa, wb, ka[tk], kb[tk])
    return out


_FIELDS = ("layer", "role", "dtype", "codec", "layout", "shape", "token_offset", "raw_length",
           "stored_length", "quant_scheme", "quant_axis", "group_size", "scale_tensor",
           "zero_point_tensor", "dequant_dtype")


def _named(field: str, v: object) -> str:
    if not isinstance(v, int):
        return str(list(v)) if isinstance(v, tuple) else str(v)
    if field in ("dtype", "dequant_dtype"):
        return S.dtype_name(v) if v or field == "dtype" else "0"
    table = {"role": {c: r.name for c, r in S.ROLES.items()}, "codec": S.CODEC_NAMES,
             "layout": S.LAYOUT_NAMES, "quant_scheme": S.QUANT_NAMES}.get(field)
    if table is not None:
        return table.get(v, f"unregistered {v}")
    if field in ("layer", "scale_tensor", "zero_point_tensor") and v == S.NO_REF:
        return "none"
    return str(v)


def _tensor_diff(a: BufferLike, b: BufferLike, wa: Walk, wb: Walk, i: int, j: int) -> list[str]:
    out = []
    ta, tb = wa.tensors[i], wb.tensors[j]
    p = f"tensor[{i}]" if i == j else f"tensor[{i}|{j}]"
    for f in _FIELDS:
        x, y = getattr(ta, f), getattr(tb, f)
        if x != y:
            out.append(f"{p}.{f}: {_named(f, x)} != {_named(f, y)}")
    ra, rb = readable(ta), readable(tb)
    if not (ra and rb):
        if not ra or not rb:
            which = " and ".join(s for s, ok in (("A", ra), ("B", rb)) if not ok)
            out.append(f"{p}.data: not compared ({which}: data not readable)")
        return out
    bad_crc = " and ".join(s for s, t in (("A", ta), ("B", tb)) if t.crc_status != "ok")
    note = f" ({bad_crc}: data_crc does not match)" if bad_crc else ""
    try:
        da, db = _digest(a, ta), _digest(b, tb)
    except DataError as exc:
        return [*out, f"{p}.data: not compared ({exc})"]
    if da == db:
        return out + ([f"{p}.data: same raw bytes{note}"] if note else [])
    line = f"{p}.data: sha256 {da[:16]} != {db[:16]}"
    if ta.shape == tb.shape:
        both_valid = wa.valid and wb.valid
        try:
            worst, n, what = _value_diff(a, b, wa, wb, i, j, both_valid)
            line += (f"; {n:,} of {elements(ta):,} {what} differ, max abs diff {worst:.6g}")
        except DataError as exc:
            line += f"; values not compared ({exc})"
    out.append(line + note)
    return out


def _digest(buf: BufferLike, t: TensorInfo) -> str:
    h = hashlib.sha256()
    for piece in raw_chunks(buf, t):
        h.update(piece)
    return h.hexdigest()


def _value_diff(a: BufferLike, b: BufferLike, wa: Walk, wb: Walk, i: int, j: int,
                dequantize: bool) -> tuple[float, int, str]:
    """(largest |x - y| over elements where both are finite, number of differing elements,
    what was compared). NaN equals NaN here: a NaN in the same place is not a difference."""
    ta, tb = wa.tensors[i], wb.tensors[j]
    what = "elements"
    if dequantize and (ta.quant_scheme or tb.quant_scheme):
        try:
            return (*_compare(value_chunks(a, wa, i), value_chunks(b, wb, j)),
                    "dequantized elements")
        except Undequantizable:
            what = "stored codes"
    elif ta.quant_scheme or tb.quant_scheme:
        what = "stored codes"
    return (*_compare(element_chunks(a, ta), element_chunks(b, tb)), what)


def _compare(xs: Iterator[np.ndarray], ys: Iterator[np.ndarray]) -> tuple[float, int]:
    worst, differing = 0.0, 0
    for x, y in zip(xs, ys, strict=False):
        fa = np.asarray(x).astype(np.float64)
        fb = np.asarray(y).astype(np.float64)
        same = (fa == fb) | (np.isnan(fa) & np.isnan(fb))
        differing += int((~same).sum())
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(fa - fb)
        d = d[np.isfinite(d)]
        if d.size:
            worst = max(worst, float(d.max()))
    return worst, differing


def max_abs_diff(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """(largest |x - y| over elements where both are finite, number of differing elements) of
    two in-memory arrays of one shape, in chunks."""
    fx, fy = np.asarray(x).reshape(-1), np.asarray(y).reshape(-1)
    step = 1 << 20
    return _compare((fx[k:k + step] for k in range(0, fx.size, step)),
                    (fy[k:k + step] for k in range(0, fy.size, step)))

