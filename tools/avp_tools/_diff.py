"""``avp-dump diff A B``: what differs between two decoded messages.

Compares the header (format version, kind, sizes), metadata entries by key, the layer table field
by field, and tensors pairwise by position: descriptor fields, the SHA-256 digest of the raw
bytes (the identity the canonical JSON uses) and, for same-shaped tensors, the largest absolute
difference between their values (dequantized when quantized).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from . import _spec as S
from ._model import Walk
from ._stats import tensor_values

_CHUNK = 1 << 22


def _digest(t: Any) -> str:
    h = hashlib.sha256()
    raw = t.raw_bytes()
    for i in range(0, len(raw), 1 << 24):
        h.update(raw[i:i + (1 << 24)])
    return h.hexdigest()


def _show(v: object) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        return b.hex() if len(b) <= 32 else f"{b[:16].hex()}... ({len(b)} bytes)"
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def max_abs_diff(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """(largest |x - y| over elements where both are finite, number of differing elements).
    NaN equals NaN here: a NaN in the same place is not a difference."""
    fx, fy = x.reshape(-1), y.reshape(-1)
    worst, differing = 0.0, 0
    for i in range(0, fx.size, _CHUNK):
        a = np.asarray(fx[i:i + _CHUNK]).astype(np.float64)
        b = np.asarray(fy[i:i + _CHUNK]).astype(np.float64)
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        differing += int((~same).sum())
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(a - b)
        d = d[np.isfinite(d)]
        if d.size:
            worst = max(worst, float(d.max()))
    return worst, differing


def diff(wa: Walk, wb: Walk, a: Any, b: Any) -> list[str]:
    """Lines describing every difference; empty when the messages are identical."""
    out: list[str] = []
    for name, va, vb in (("format", f"{wa.major}.{wa.minor}", f"{wb.major}.{wb.minor}"),
                         ("size", wa.size, wb.size),
                         ("kind", S.KIND_NAMES.get(int(a.kind)), S.KIND_NAMES.get(int(b.kind)))):
        if va != vb:
            out.append(f"header.{name}: {va} != {vb}")
    ea = {int(e.key): e for e in a.entries}
    eb = {int(e.key): e for e in b.entries}
    for key in sorted(set(ea) | set(eb)):
        name = f"entry {S.key_name(key)} ({key})"
        if key not in eb:
            out.append(f"{name}: only in A = {_show(ea[key].value)}")
        elif key not in ea:
            out.append(f"{name}: only in B = {_show(eb[key].value)}")
        else:
            x, y = ea[key], eb[key]
            if (int(x.type), x.critical) != (int(y.type), y.critical):
                out.append(f"{name}: type/critical {int(x.type)}/{x.critical} != "
                           f"{int(y.type)}/{y.critical}")
            if not _same_value(x.value, y.value):
                out.append(f"{name}: {_show(x.value)} != {_show(y.value)}")
    if len(a.layers) != len(b.layers):
        out.append(f"layers: {len(a.layers)} != {len(b.layers)}")
    for j, (la, lb) in enumerate(zip(a.layers, b.layers, strict=False)):
        for f in ("index", "kind", "window", "token_start", "token_count"):
            x, y = getattr(la, f), getattr(lb, f)
            if x != y:
                out.append(f"layer[{j}].{f}: {_name(x)} != {_name(y)}")
    if len(a.tensors) != len(b.tensors):
        out.append(f"tensors: {len(a.tensors)} != {len(b.tensors)}")
    # Tensors are paired by what they hold, not by position, so one extra message-level
    # tensor does not make every later pair differ.
    ka, kb = _tensor_keys(a), _tensor_keys(b)
    for tk in sorted(set(ka) | set(kb), key=lambda k: (ka.get(k, kb.get(k, 0)), k)):
        if tk not in kb:
            out.append(f"tensor[{ka[tk]}] ({_key_text(tk)}): only in A")
        elif tk not in ka:
            out.append(f"tensor[{kb[tk]}] ({_key_text(tk)}): only in B")
        else:
            out += _tensor_diff(ka[tk], kb[tk], a, b)
    return out


_Key = tuple[int, int, int, int]  # layer (-1 = message level), role, token_offset, occurrence


def _tensor_keys(m: Any) -> dict[_Key, int]:
    keys: dict[_Key, int] = {}
    seen: dict[tuple[int, int, int], int] = {}
    for i, t in enumerate(m.tensors):
        base = (-1 if t.layer is None else t.layer, int(t.role), t.token_offset)
        n = seen.get(base, 0)
        seen[base] = n + 1
        keys[(*base, n)] = i
    return keys


def _key_text(key: _Key) -> str:
    layer = "msg" if key[0] < 0 else f"layer {key[0]}"
    extra = f", token_offset {key[2]}" if key[2] else ""
    return f"{layer} {S.role_name(key[1])}{extra}"


def _name(v: object) -> str:
    return v.name if hasattr(v, "name") else str(v)


def _same_value(x: object, y: object) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y


def _tensor_diff(i: int, j: int, a: Any, b: Any) -> list[str]:
    out = []
    ta, tb = a.tensors[i], b.tensors[j]
    p = f"tensor[{i}]" if i == j else f"tensor[{i}|{j}]"
    for f in ("layer", "role", "dtype", "codec", "layout", "shape", "token_offset",
              "raw_length", "stored_length"):
        x, y = getattr(ta, f), getattr(tb, f)
        if x != y:
            out.append(f"{p}.{f}: {_name(x)} != {_name(y)}")
    qa, qb = ta.quant, tb.quant
    if qa != qb:
        out.append(f"{p}.quant: {qa} != {qb}")
    da, db = _digest(ta), _digest(tb)
    if da != db:
        line = f"{p}.data: sha256 {da[:16]} != {db[:16]}"
        if ta.shape == tb.shape:
            worst, n = max_abs_diff(tensor_values(a, i), tensor_values(b, j))
            line += f"; {n} of {math.prod(ta.shape)} elements differ, max abs diff {worst:.6g}"
        out.append(line)
    return out
