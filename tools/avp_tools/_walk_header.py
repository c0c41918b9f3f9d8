"""HEADER section body: kind, counts, metadata entries (6.2, 6.3, 10.1) and layers (6.4).

The byte layout (lengths, reserved bits, padding, key order) is read here, in the decoder's
order and with its offsets and paths; every rule about values, keys, layers and kinds is the
codec's own function (``decode_value``, ``check_entry``, ``check_layer``, ``check_kind_entries``,
``check_kind_layers``), called on the same values with the same offsets, so the walker and
``avp_codec.decode`` cannot disagree on them. Unlike the decoder, the walker keeps going after a
failed entry or layer, so one run lists every bad one.
"""

from __future__ import annotations

import codecs
from typing import Any

import numpy as np

import avp_codec as avp
from avp_codec import _validate, _values

from . import _spec as S
from ._ctx import Ctx
from ._model import EntryInfo, LayerInfo, Preview, SpanKind

_SEC = "header"
_VALUE_TYPES = {int(m): m for m in avp.ValueType}
_LAYER_KINDS = {int(m): m for m in avp.LayerKind}
_KINDS = {int(m): m for m in avp.Kind}
_U32_LIST = int(avp.ValueType.U32_LIST)
_UTF8 = int(avp.ValueType.UTF8)
_QUANT_POLICY = int(avp.MetaKey.QUANT_POLICY)
_CHUNK = 1 << 20


class HeaderState:
    """What the tensor stage needs from the header, as the codec's own objects."""

    def __init__(self) -> None:
        self.kind: avp.Kind | None = None
        self.layers: list[avp.Layer] | None = None  # None when a layer could not be read
        self.context_length: int | None = None
        self.tensor_count = 0


def header_body(ctx: Ctx, b0: int, b1: int) -> HeaderState:
    w = ctx.walk
    st = HeaderState()
    if b1 - b0 < 16:
        ctx.issue("HEADER_LAYOUT", b0, "", "R-6.1",
                  f"header body is {b1 - b0} bytes, the fixed part alone is 16")
        ctx.span(b0, b1 - b0, "header.body", _SEC, "6.1", SpanKind.UNPARSED)
        return st
    w.kind = ctx.field(b0, 2, "header.kind", _SEC, "6.1")
    flags = ctx.field(b0 + 2, 2, "header.flags", _SEC, "6.1")
    w.entry_count = ctx.field(b0 + 4, 4, "header.entry_count", _SEC, "6.1")
    w.layer_count = ctx.field(b0 + 8, 4, "header.layer_count", _SEC, "6.1")
    w.tensor_count = ctx.field(b0 + 12, 4, "header.tensor_count", _SEC, "6.1")
    st.tensor_count = w.tensor_count
    if flags:
        ctx.issue("RESERVED_NONZERO", b0 + 2, "header.flags", "R-1.2",
                  f"header flags are {flags:#06x}, must be zero")
    st.kind = _KINDS.get(w.kind)
    if st.kind is None:
        ctx.issue("UNKNOWN_KIND", b0, "header.kind", "R-6.2", f"unregistered kind {w.kind}")
    # Spec 6.1 (H.4): the entries end where the layer table starts, as the decoder reads them.
    entries, pos = _entries(ctx, b0, b1, max(b0 + 16, b1 - S.LAYER_SIZE * w.layer_count),
                            w.entry_count)
    if pos is None:
        return st
    need = pos + S.LAYER_SIZE * w.layer_count
    if need != b1:
        ctx.issue("HEADER_LAYOUT", pos, "layers", "R-6.1",
                  f"header body is {b1 - b0} bytes; its entries and {w.layer_count} layers "
                  f"need {need - b0}")
    st.layers = _layers(ctx, pos, min(w.layer_count, (b1 - pos) // S.LAYER_SIZE))
    if need != b1:
        st.layers = None  # a table that does not fit its count: tensor rules cannot use it
    used = pos + S.LAYER_SIZE * len(w.layers)
    if used < b1:
        ctx.span(used, b1 - used, "header.excess", _SEC, "6.1", SpanKind.UNPARSED)
    ce = w.entry(S.KEY_CONTEXT_LENGTH)
    st.context_length = ce.value if ce is not None and isinstance(ce.value, int) else None
    if st.kind is not None:
        try:
            _validate.check_kind_entries(st.kind, entries, b0)
        except avp.AvpError as exc:
            ctx.error(exc)
        if st.layers is not None:
            try:
                _validate.check_kind_layers(st.kind, st.layers, w.tensor_count,
                                            st.context_length, b0)
            except avp.AvpError as exc:
                ctx.error(exc)
    return st


def _entries(ctx: Ctx, b0: int, end: int, table: int,
             count: int) -> tuple[list[avp.Entry], int | None]:
    """Walk the entries, which end at ``table`` (the layer table's start); returns them (as the
    codec's Entry) and the offset after the last one, None if the layout broke."""
    w = ctx.walk
    out: list[avp.Entry] = []
    prev_key = -1
    pos = b0 + 16
    for i in range(count):
        p = f"entries[{i}]"
        if pos + 8 > table:
            ctx.issue("HEADER_LAYOUT", pos, p, "R-6.1", "entry runs into the layer table")
            ctx.span(pos, end - pos, p, _SEC, "6.2", SpanKind.UNPARSED)
            return out, None
        key = ctx.field(pos, 2, f"{p}.key", _SEC, "6.2")
        flags = ctx.field(pos + 2, 1, f"{p}.flags", _SEC, "6.2")
        vtype = ctx.field(pos + 3, 1, f"{p}.type", _SEC, "6.2")
        vlen = ctx.field(pos + 4, 4, f"{p}.length", _SEC, "6.2")
        voff = pos + 8
        pend = voff + vlen + S.pad8(vlen)
        if pend > table:
            ctx.issue("HEADER_LAYOUT", pos + 4, f"{p}.length", "R-6.1",
                      f"entry value of {vlen} bytes runs into the layer table")
            ctx.span(voff, end - voff, f"{p}.value", _SEC, "6.2", SpanKind.UNPARSED)
            return out, None
        if flags & 0xFE:
            ctx.issue("RESERVED_NONZERO", pos + 2, f"{p}.flags", "R-1.2",
                      f"reserved entry flag bits set: {flags:#x}")
        first = ctx.nonzero_at(voff + vlen, S.pad8(vlen))
        if first is not None:
            ctx.issue("NONZERO_PADDING", voff + vlen, p, "R-1.3",
                      f"entry padding byte at offset {first} is not zero")
        if key <= prev_key:
            ctx.issue("NON_CANONICAL", pos, f"{p}.key", "R-6.3",
                      f"key {key} follows key {prev_key}; keys must strictly increase")
        prev_key = key
        entry, shown = _value(ctx, p, pos, key, flags & 1, vtype, voff, vlen)
        ctx.span(voff, vlen, f"{p}.value ({S.key_name(key)})", _SEC, "6.2", SpanKind.VALUE,
                 shown)
        ctx.span(voff + vlen, S.pad8(vlen), f"{p}.padding", _SEC, "6.2", SpanKind.PADDING)
        info = EntryInfo(pos, key, flags, vtype, vlen, voff, shown)
        w.entries.append(info)
        w._by_key.setdefault(key, info)
        if vlen > S.KEPT_VALUE_BYTES:
            # The kind rules read keys and small values (HIDDEN_SOURCE, CONTEXT_LENGTH,
            # AUTH_KEY_ID), never a large one: drop it rather than hold every list decoded.
            entry = avp.Entry(entry.key, entry.type, shown, entry.critical)  # type: ignore[arg-type]
        out.append(entry)
        pos = pend
    return out, pos


def _value(ctx: Ctx, p: str, pos: int, key: int, critical: int, vtype: int, voff: int,
           vlen: int) -> tuple[avp.Entry, object]:
    """Decode and check one value with the codec's functions: (the Entry the kind checks see,
    the value kept for display).  Large u32 lists and UTF-8 texts are checked in a streaming
    pass instead (see _large_u32 / _large_utf8) and kept as a Preview."""
    vt: Any = _VALUE_TYPES.get(vtype, vtype)
    mv = ctx.buf[voff:voff + vlen]
    large = vlen > S.FULL_VALUE_BYTES
    if large and vtype == _U32_LIST and vlen % 4 == 0:
        pair, shown = _large_u32(mv)
        return _checked(ctx, p, pos, avp.Entry(key, vt, pair, bool(critical))), shown
    if large and vtype == _UTF8 and key != _QUANT_POLICY:
        ok, prefix, shown = _large_utf8(ctx, p, mv, voff)
        entry = avp.Entry(key, vt, prefix, bool(critical))
        return (_checked(ctx, p, pos, entry) if ok else entry), shown
    # Everything else goes through the codec as the decoder does it (a large bytes value is
    # copied once: at most max_header_bytes).
    raw = bytes(mv)
    try:
        value = _values.decode_value(vtype, raw, f"{p}.value", voff)
    except avp.AvpError as exc:
        ctx.error(exc)
        kept: object = _shown(raw, vtype, vlen) if vlen > S.KEPT_VALUE_BYTES else raw
        return avp.Entry(key, vt, raw, bool(critical)), kept
    entry = _checked(ctx, p, pos, avp.Entry(key, vt, value, bool(critical)))
    return entry, (_shown(value, vtype, vlen) if vlen > S.KEPT_VALUE_BYTES else value)


def _checked(ctx: Ctx, p: str, pos: int, entry: avp.Entry) -> avp.Entry:
    try:
        _values.check_entry(entry, p, pos)
    except avp.AvpError as exc:
        ctx.error(exc)
    return entry


def _shown(value: object, vtype: int, vlen: int) -> Preview:
    """The display form of a large value (its decoded prefix)."""
    if isinstance(value, tuple):
        return Preview(vtype, vlen, len(value), value[:16])
    if isinstance(value, str):
        return Preview(vtype, vlen, len(value), value[:200])
    assert isinstance(value, (bytes, bytearray))
    return Preview(vtype, vlen, len(value), bytes(value[:32]))


def _large_u32(mv: memoryview) -> tuple[tuple[int, ...], Preview]:
    """A u32_list longer than FULL_VALUE_BYTES, as a zero-copy numpy view. The codec's rules
    for lists (check_entry: strictly increasing, non-empty) are applied to a witness: the first
    pair that breaks the order, or the first two values, so check_entry decides with the same
    code, offset and path as on the whole list."""
    a = np.frombuffer(mv, dtype="<u4")
    bad = np.flatnonzero(a[1:] <= a[:-1])
    j = int(bad[0]) if bad.size else 0
    witness = (int(a[j]), int(a[j + 1]))
    return witness, Preview(_U32_LIST, len(mv), int(a.size), tuple(int(x) for x in a[:16]))


def _large_utf8(ctx: Ctx, p: str, mv: memoryview, voff: int) -> tuple[bool, str, Preview]:
    """A UTF-8 text longer than FULL_VALUE_BYTES, decoded 1 MiB at a time and dropped: the two
    rules of decode_value for UTF-8 (well-formed, no byte order mark) with the decoder's code,
    offset and path. Returns (ok, a witness prefix for check_entry, the display preview)."""
    dec = codecs.getincrementaldecoder("utf-8")("strict")
    head, chars = "", 0
    try:
        for i in range(0, len(mv), _CHUNK):
            text = dec.decode(bytes(mv[i:i + _CHUNK]), final=i + _CHUNK >= len(mv))
            chars += len(text)
            if len(head) < 200:
                head += text[:200 - len(head)]
    except UnicodeDecodeError:
        ctx.issue("INVALID_VALUE", voff, f"{p}.value", "6.3", "value is not well-formed UTF-8")
        return False, "", Preview(_UTF8, len(mv), 0, bytes(mv[:32]))
    if head.startswith("\ufeff"):
        ctx.issue("INVALID_VALUE", voff, f"{p}.value", "6.3",
                  "UTF-8 value starts with a byte order mark")
        return False, head, Preview(_UTF8, len(mv), chars, head)
    return True, head, Preview(_UTF8, len(mv), chars, head)


def _layers(ctx: Ctx, pos: int, count: int) -> list[avp.Layer] | None:
    """Read the layer table; the codec's Layer objects, or None when a layer kind is not
    registered (the tensor rules cannot be checked against such a table)."""
    out: list[avp.Layer] | None = []
    prev: avp.Layer | None = None
    for j in range(count):
        off = pos + S.LAYER_SIZE * j
        p = f"layers[{j}]"
        index = ctx.field(off, 4, f"{p}.layer_index", _SEC, "6.4")
        kind = ctx.field(off + 4, 1, f"{p}.layer_kind", _SEC, "6.4")
        r1 = bytes(ctx.buf[off + 5:off + 8])
        ctx.span(off + 5, 3, f"{p}.reserved", _SEC, "6.4", SpanKind.FIELD, r1)
        window = ctx.field(off + 8, 4, f"{p}.window", _SEC, "6.4")
        r2 = bytes(ctx.buf[off + 12:off + 16])
        ctx.span(off + 12, 4, f"{p}.reserved2", _SEC, "6.4", SpanKind.FIELD, r2)
        start = ctx.field(off + 16, 8, f"{p}.token_start", _SEC, "6.4")
        count_ = ctx.field(off + 24, 8, f"{p}.token_count", _SEC, "6.4")
        ctx.walk.layers.append(LayerInfo(off, index, kind, window, start, count_))
        if any(r1) or any(r2):
            ctx.issue("RESERVED_NONZERO", off + 5, p, "R-1.2", "reserved layer bytes are not zero")
        lk = _LAYER_KINDS.get(kind)
        if lk is None:
            ctx.issue("INVALID_VALUE", off + 4, f"{p}.layer_kind", "6.5",
                      f"unregistered layer kind {kind}")
            out = None
            continue
        layer = avp.Layer(index, lk, start, count_, window)
        try:
            _validate.check_layer(j, layer, prev, off)
        except avp.AvpError as exc:
            ctx.error(exc)
        prev = layer
        if out is not None:
            out.append(layer)
    return out
