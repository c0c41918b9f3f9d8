"""HEADER section body: kind, counts, metadata entries (6.2, 6.3, 10.1) and layers (6.4)."""

from __future__ import annotations

import math
import struct

import avp_codec as avp
from avp_codec import _values

from . import _spec as S
from ._ctx import Ctx
from ._model import EntryInfo, LayerInfo, SpanKind

_SEC = "header"
_CANONICAL_NAN = 0x7FF8000000000000


def header_body(ctx: Ctx, b0: int, b1: int) -> None:
    w = ctx.walk
    if b1 - b0 < 16:
        ctx.issue("HEADER_LAYOUT", b0, "header", "R-6.1",
                  f"header body is {b1 - b0} bytes, the fixed part alone is 16")
        ctx.span(b0, b1 - b0, "header.body", _SEC, "6.1", SpanKind.UNPARSED)
        return
    w.kind = ctx.field(b0, 2, "header.kind", _SEC, "6.1")
    ctx.reserved(b0 + 2, 2, "header.flags", _SEC, "6.1")
    w.entry_count = ctx.field(b0 + 4, 4, "header.entry_count", _SEC, "6.1")
    w.layer_count = ctx.field(b0 + 8, 4, "header.layer_count", _SEC, "6.1")
    w.tensor_count = ctx.field(b0 + 12, 4, "header.tensor_count", _SEC, "6.1")
    if w.kind not in S.KIND_NAMES:
        ctx.issue("UNKNOWN_KIND", b0, "header.kind", "R-6.2", f"unregistered kind {w.kind}")
    # Spec 6.1 / H.4: the entries end where the layer table starts (review item 2).
    pos = _entries(ctx, b0 + 16, b1, w.entry_count,
                   max(b0 + 16, b1 - S.LAYER_SIZE * w.layer_count))
    if pos is not None:
        need = pos + S.LAYER_SIZE * w.layer_count
        if need != b1:
            ctx.issue("HEADER_LAYOUT", b0, "header", "R-6.1",
                      f"header body is {b1 - b0} bytes; its entries and {w.layer_count} layers "
                      f"need {need - b0}")
        _layers(ctx, pos, min(w.layer_count, (b1 - pos) // S.LAYER_SIZE))
        if need < b1:
            ctx.span(need, b1 - need, "header.excess", _SEC, "6.1", SpanKind.UNPARSED)
    _kind_checks(ctx, b0)


def _entries(ctx: Ctx, pos: int, end: int, count: int, table: int) -> int | None:
    """Walk the entries, which end at ``table`` (the layer table's start); returns the offset
    after the last one, None if the layout broke."""
    prev_key = -1
    for i in range(count):
        p = f"header.entries[{i}]"
        if pos + 8 > table:
            ctx.issue("HEADER_LAYOUT", pos, p, "R-6.1", "entry runs into the layer table")
            ctx.span(pos, end - pos, p, _SEC, "6.2", SpanKind.UNPARSED)
            return None
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
            return None
        raw = bytes(ctx.buf[voff:voff + vlen])
        if flags & 0xFE:
            ctx.issue("RESERVED_NONZERO", pos + 2, f"{p}.flags", "R-1.2",
                      f"reserved entry flag bits set: {flags:#x}")
        ctx.padding(voff + vlen, S.pad8(vlen), f"{p}.padding", _SEC, "6.2")
        if key <= prev_key:
            ctx.issue("NON_CANONICAL", pos, f"{p}.key", "R-6.3",
                      f"key {key} follows key {prev_key}; keys must strictly increase")
        prev_key = key
        value = _value(ctx, p, key, flags & 1, vtype, raw, voff)
        ctx.span(voff, vlen, f"{p}.value ({S.key_name(key)})", _SEC, "6.2", SpanKind.VALUE,
                 value)
        ctx.walk.entries.append(EntryInfo(pos, key, flags, vtype, vlen, voff, value))
        pos = pend
    return pos


def _decode(ctx: Ctx, p: str, vtype: int, raw: bytes, voff: int) -> tuple[object, bool]:
    """Decode a value by its type; (value, ok).  Undecodable values come back as raw bytes."""
    if vtype in (1, 2, 3):
        if len(raw) != 8:
            ctx.issue("INVALID_VALUE", voff, f"{p}.value", "6.3",
                      f"{S.VALUE_TYPE_NAMES[vtype]} value must be 8 bytes, is {len(raw)}")
            return raw, False
        if vtype == 1:
            return struct.unpack("<Q", raw)[0], True
        if vtype == 2:
            return struct.unpack("<q", raw)[0], True
        bits = struct.unpack("<Q", raw)[0]
        f = struct.unpack("<d", raw)[0]
        if math.isnan(f) and bits != _CANONICAL_NAN:
            ctx.issue("NON_CANONICAL", voff, f"{p}.value", "6.3",
                      f"NaN must be encoded as 7ff8000000000000, is {raw[::-1].hex()}")
        return f, True
    if vtype == 4:
        try:
            text = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            ctx.issue("INVALID_VALUE", voff + exc.start, f"{p}.value", "6.3",
                      f"utf8 value is not well-formed UTF-8 at byte {exc.start}")
            return raw, False
        if text.startswith("\ufeff"):
            ctx.issue("INVALID_VALUE", voff, f"{p}.value", "6.3", "utf8 value starts with a BOM")
        return text, True
    if vtype == 5:
        return raw, True
    if len(raw) % 4:
        ctx.issue("INVALID_VALUE", voff, f"{p}.value", "6.3",
                  f"u32_list value of {len(raw)} bytes is not a multiple of 4")
        return raw, False
    return tuple(v for (v,) in struct.iter_unpack("<I", raw)), True


def _value(ctx: Ctx, p: str, key: int, critical: int, vtype: int, raw: bytes,
           voff: int) -> object:
    # Decode by the declared type first, then apply the registry (the order the reference
    # decoder uses, so both report the same first code for a single fault).
    value, ok = (raw, True) if vtype not in S.VALUE_TYPE_NAMES else _decode(ctx, p, vtype, raw,
                                                                             voff)
    info = S.KEYS.get(key)
    if info is None:
        if critical:
            ctx.issue("UNKNOWN_CRITICAL", voff - 8, f"{p}.key", "R-6.5",
                      f"unregistered key {key} is marked CRITICAL")
        return value  # an unknown non-critical key is skipped by meaning
    if vtype != info.vtype or bool(critical) != info.critical:
        want = f"{S.VALUE_TYPE_NAMES[info.vtype]}{', critical' if info.critical else ''}"
        ctx.issue("ENTRY_TYPE", voff - 8, f"{p}.type", "R-6.4",
                  f"{info.name} must be {want}; is type {vtype}, critical={bool(critical)}")
        return value
    if ok and _constraint(key, value):
        ctx.issue("INVALID_VALUE", voff, f"{p}.value", "R-6.4",
                  f"{info.name} = {_brief(value)} is outside the key's registered "
                  "constraint (section 10.1)")
    return value


def _brief(value: object) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _constraint(key: int, value: object) -> str | None:
    """The registry's value constraints (10.1), exactly as the reference decoder applies them
    (one implementation, so the two cannot disagree); a reason string when violated."""
    return _values._constraint(avp.MetaKey(key), value)  # type: ignore[arg-type]


def _layers(ctx: Ctx, pos: int, count: int) -> None:
    prev = -1
    for j in range(count):
        off = pos + S.LAYER_SIZE * j
        p = f"layer[{j}]"
        index = ctx.field(off, 4, f"{p}.layer_index", _SEC, "6.4")
        kind = ctx.field(off + 4, 1, f"{p}.layer_kind", _SEC, "6.4")
        ctx.reserved(off + 5, 3, f"{p}.reserved", _SEC, "6.4")
        window = ctx.field(off + 8, 4, f"{p}.window", _SEC, "6.4")
        ctx.reserved(off + 12, 4, f"{p}.reserved2", _SEC, "6.4")
        start = ctx.field(off + 16, 8, f"{p}.token_start", _SEC, "6.4")
        count_ = ctx.field(off + 24, 8, f"{p}.token_count", _SEC, "6.4")
        if kind not in S.LAYER_KIND_NAMES:
            ctx.issue("INVALID_VALUE", off + 4, f"{p}.layer_kind", "6.5",
                      f"unregistered layer kind {kind}")
        if index <= prev:
            ctx.issue("NON_CANONICAL", off, f"{p}.layer_index", "R-6.7",
                      f"layer_index {index} follows {prev}; must strictly increase")
        prev = index
        if (kind == 2) != (window != 0) and kind in S.LAYER_KIND_NAMES:
            ctx.issue("INVALID_VALUE", off + 8, f"{p}.window", "R-6.8",
                      f"window {window} for a {S.LAYER_KIND_NAMES[kind]} layer (nonzero exactly "
                      "for SLIDING_WINDOW)")
        if start + count_ > S.U64_MAX:
            ctx.issue("LENGTH_OVERFLOW", off + 16, f"{p}.token_start", "R-6.9",
                      "token_start + token_count overflows u64")
        if kind == 2 and window and count_ > window:
            ctx.issue("TOKEN_RANGE", off + 24, f"{p}.token_count", "R-6.8",
                      f"sliding-window layer holds {count_} tokens, window is {window}")
        ctx.walk.layers.append(LayerInfo(off, index, kind, window, start, count_))


def _kind_checks(ctx: Ctx, b0: int) -> None:
    """Required / allowed keys and the layer / tensor counts of the kind (10, 10.4)."""
    w = ctx.walk
    info = S.KINDS.get(w.kind if w.kind is not None else -1)
    if info is None:
        return
    name = S.KIND_NAMES[w.kind or 0]
    present = {e.key for e in w.entries}
    for e in w.entries:
        if e.key in S.KEYS and e.key not in info.allowed:
            ctx.issue("ENTRY_NOT_ALLOWED", e.offset, "header.entries", "R-6.6",
                      f"{S.key_name(e.key)} is not allowed in {name}")
    for key in sorted(info.required - present):
        ctx.issue("MISSING_ENTRY", b0, "header.entries", "R-6.6",
                  f"{name} requires {S.key_name(key)}")
    _projection_keys(ctx, b0)
    layers = w.layer_count or 0
    if info.has_layers and layers < 1:
        ctx.issue("KIND_CONSTRAINT", b0 + 8, "header.layer_count", "10",
                  f"{name} needs at least one layer")
    elif not info.has_layers and layers:
        ctx.issue("KIND_CONSTRAINT", b0 + 8, "header.layer_count", "10",
                  f"{name} must have an empty layer table, has {layers}")
    if not info.tensor_roles and w.tensor_count:
        ctx.issue("KIND_CONSTRAINT", b0 + 12, "header.tensor_count", "10",
                  f"{name} carries no tensors, declares {w.tensor_count}")
    if w.kind == S.KIND_KV_CACHE:
        ce = w.entry(S.KEY_CONTEXT_LENGTH)
        ctx_len = ce.value if ce is not None and isinstance(ce.value, int) else None
        for j, layer in enumerate(w.layers):
            if layer.layer_kind not in (1, 2) or ctx_len is None:
                continue
            if layer.token_start + layer.token_count != ctx_len:
                ctx.issue("KIND_CONSTRAINT", layer.offset + 16, f"layer[{j}].token_count",
                          "R-10.2", f"layer ends at token {layer.token_start + layer.token_count}"
                          f", CONTEXT_LENGTH is {ctx_len}")
            if layer.layer_kind == 1 and layer.token_start != 0:
                ctx.issue("KIND_CONSTRAINT", layer.offset + 16, f"layer[{j}].token_start",
                          "R-10.2", "a FULL_ATTENTION layer must start at token 0")


_PROJ_KEYS = frozenset({17, 18, 19, 20, 21, 22})
_PROJ_REQUIRED = (17, 19, 20, 21)


def _projection_keys(ctx: Ctx, b0: int) -> None:
    """R-10.12: PROJ_* keys go with HIDDEN_SOURCE 2 and never with HIDDEN_SOURCE 1."""
    w = ctx.walk
    src = w.entry(16)
    if w.kind != S.KIND_HIDDEN_STATE or src is None:
        return
    if src.value == 1:
        for e in w.entries:
            if e.key in _PROJ_KEYS:
                ctx.issue("ENTRY_NOT_ALLOWED", e.offset, "header.entries", "R-10.12",
                          f"{S.key_name(e.key)} with HIDDEN_SOURCE 1 (same-model state)")
    elif src.value == 2:
        present = {e.key for e in w.entries}
        for key in _PROJ_REQUIRED:
            if key not in present:
                ctx.issue("MISSING_ENTRY", b0, "header.entries", "R-10.12",
                          f"a projection (HIDDEN_SOURCE 2) requires {S.key_name(key)}")
