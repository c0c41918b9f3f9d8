"""--stats: per-tensor value statistics, and the tensor selector shared with ``diff``.

Values are read through the codec (``Tensor.values()``: ml_dtypes for bfloat16 / fp8, packed
int4 / uint4 / uint2 unpacked) and quantized tensors are dequantized with the codec's normative
dequantization, so the numbers are those a receiver would compute.  Statistics are accumulated
in float64 over fixed-size chunks, so a tensor larger than memory (an mmap view) never has to be
converted at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _spec as S

_CHUNK = 1 << 22  # elements converted to float64 at a time


@dataclass
class Stats:
    count: int = 0
    finite: int = 0
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    zeros: int = 0
    min: float = math.nan
    max: float = math.nan
    mean: float = math.nan
    std: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | str | None:
            return None if math.isnan(x) else x

        return {"count": self.count, "finite": self.finite, "nan": self.nan,
                "posinf": self.posinf, "neginf": self.neginf, "zeros": self.zeros,
                "zero_share": self.zeros / self.count if self.count else None,
                "min": num(self.min), "max": num(self.max), "mean": num(self.mean),
                "std": num(self.std)}


def array_stats(values: np.ndarray) -> Stats:
    """Statistics over every element; min / max / mean / std over the finite ones (population
    std), merged chunk by chunk with Chan's parallel formula so large tensors stay stable."""
    flat = values.reshape(-1)
    st = Stats(count=int(flat.size))
    n, mean, m2 = 0, 0.0, 0.0
    lo, hi = math.inf, -math.inf
    for i in range(0, flat.size, _CHUNK):
        x = np.asarray(flat[i:i + _CHUNK]).astype(np.float64)
        nan = np.isnan(x)
        inf = np.isinf(x)
        st.nan += int(nan.sum())
        st.posinf += int((inf & (x > 0)).sum())
        st.neginf += int((inf & (x < 0)).sum())
        st.zeros += int((x == 0).sum())
        good = x[~(nan | inf)]
        k = int(good.size)
        if not k:
            continue
        lo = min(lo, float(good.min()))
        hi = max(hi, float(good.max()))
        cmean = float(good.mean())
        cm2 = float(((good - cmean) ** 2).sum())
        delta = cmean - mean
        total = n + k
        mean += delta * k / total
        m2 += cm2 + delta * delta * n * k / total
        n = total
    st.finite = n
    if n:
        st.min, st.max, st.mean, st.std = lo, hi, mean, math.sqrt(m2 / n)
    return st


def parse_selector(text: str) -> tuple[str, Any]:
    """``7`` (tensor number), ``LAYER:ROLE`` (or ``LAYER/ROLE``) with LAYER a layer-table
    ordinal, ``msg`` or ``*`` and ROLE a role name or ``*`` (``0:KEY``, ``msg:TOKEN_IDS``,
    ``*/VALUE``)."""
    text = text.strip()
    if text.isdigit():
        return "index", int(text)
    sep = ":" if ":" in text else "/"
    if sep not in text:
        raise ValueError(f"bad tensor selector {text!r}: use N or LAYER:ROLE (e.g. 0:KEY)")
    layer_s, role_s = (p.strip() for p in text.split(sep, 1))
    if layer_s == "*":
        layer: int | None | str = "*"
    elif layer_s.lower() == "msg":
        layer = None
    elif layer_s.isdigit():
        layer = int(layer_s)
    else:
        raise ValueError(f"bad layer {layer_s!r} in selector {text!r}: a number, msg or *")
    names = {info.name: code for code, info in S.ROLES.items()}
    if role_s == "*":
        role: int | str = "*"
    elif role_s.upper() in names:
        role = names[role_s.upper()]
    else:
        raise ValueError(f"unknown role {role_s!r}; roles: {', '.join(sorted(names))}")
    return "match", (layer, role)


def select(tensors: list[Any], selectors: list[str]) -> list[int]:
    """Tensor numbers matching any selector (all tensors when there are none), in order."""
    if not selectors:
        return list(range(len(tensors)))
    parsed = [parse_selector(s) for s in selectors]
    chosen = set()
    for how, what in parsed:
        if how == "index":
            if what >= len(tensors):
                raise ValueError(f"tensor {what} does not exist (message has {len(tensors)})")
            chosen.add(what)
            continue
        layer, role = what
        for i, t in enumerate(tensors):
            if (layer == "*" or t.layer == layer) and (role == "*" or int(t.role) == role):
                chosen.add(i)
    return sorted(chosen)


def tensor_values(msg: Any, i: int) -> np.ndarray:
    """The element values of tensor ``i`` as a receiver sees them (dequantized if quantized)."""
    t = msg.tensors[i]
    codes = t.values()
    q = t.quant
    if q is None or int(q.scheme) == 0:
        return np.asarray(codes)
    from avp_codec import quant as avq  # the normative dequantization lives in the codec

    out: np.ndarray = avq.dequantize_tensor(msg, i)
    return out


def stats_rows(msg: Any, indices: list[int]) -> list[dict[str, Any]]:
    rows = []
    for i in indices:
        t = msg.tensors[i]
        d = array_stats(tensor_values(msg, i)).as_dict()
        d = {"tensor": i, "layer": t.layer, "role": S.role_name(int(t.role)),
             "dtype": S.dtype_name(int(t.dtype)),
             "dequantized": t.quant is not None and int(t.quant.scheme) != 0, **d}
        rows.append(d)
    return rows


def fmt_num(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def stats_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = [["#", "layer", "role", "dtype", "count", "min", "max", "mean", "std", "nan", "inf",
            "zeros"]]
    for r in rows:
        dtype = r["dtype"] + ("->deq" if r["dequantized"] else "")
        share = r["zero_share"]
        out.append([str(r["tensor"]), "msg" if r["layer"] is None else str(r["layer"]),
                    r["role"], dtype, str(r["count"]), fmt_num(r["min"]), fmt_num(r["max"]),
                    fmt_num(r["mean"]), fmt_num(r["std"]), str(r["nan"]),
                    str(r["posinf"] + r["neginf"]),
                    "-" if share is None else f"{100 * share:.1f}%"])
    return out
