"""--stats: per-tensor value statistics, and the tensor selector.

Values are the ones a receiver computes: element values decoded as the codec decodes them
(_data.element_chunks), and quantized tensors dequantized with the codec's normative arithmetic
(``avp_codec.quant.dequantize_array``), applied chunk by chunk: each element's scale (and zero
point) is gathered from its parameter tensor first, so the codec's arithmetic runs on
element-aligned parameters (group size 1) and gives the same bits as dequantizing the whole
tensor. Statistics are accumulated in float64 with Chan's parallel formula, so memory stays
within a few chunks whatever the shape or the group size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import avp_codec as avp
from avp_codec import quant as avq

from . import _spec as S
from ._ctx import BufferLike
from ._data import CHUNK, ElementSource, element_chunks, elements
from ._model import TensorInfo, Walk

_DEQUANT_NAMES = {int(avp.Dtype.FLOAT32): "float32", int(avp.Dtype.FLOAT16): "float16",
                  int(avp.Dtype.BFLOAT16): "bfloat16"}


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
        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {"count": self.count, "finite": self.finite, "nan": self.nan,
                "posinf": self.posinf, "neginf": self.neginf, "zeros": self.zeros,
                "zero_share": self.zeros / self.count if self.count else None,
                "min": num(self.min), "max": num(self.max), "mean": num(self.mean),
                "std": num(self.std)}


class Accumulator:
    """Statistics over chunks: min / max / mean / std over the finite values (population std),
    merged chunk by chunk with Chan's parallel formula so large tensors stay stable."""

    def __init__(self) -> None:
        self.st = Stats()
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.lo, self.hi = math.inf, -math.inf

    def add(self, values: np.ndarray) -> None:
        x = np.asarray(values).reshape(-1).astype(np.float64)
        st = self.st
        st.count += int(x.size)
        st.zeros += int(np.count_nonzero(x == 0))
        with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is the NaN we test for
            total_sum = float(x.sum())
        if math.isfinite(total_sum):  # then every value is finite: no masks, no copies
            good = x
        else:
            finite = np.isfinite(x)
            st.nan += int(np.count_nonzero(np.isnan(x)))
            st.posinf += int(np.count_nonzero(x == np.inf))
            st.neginf += int(np.count_nonzero(x == -np.inf))
            good = x[finite]
            total_sum = float(good.sum())
        k = int(good.size)
        if not k:
            return
        self.lo = min(self.lo, float(good.min()))
        self.hi = max(self.hi, float(good.max()))
        cmean = total_sum / k
        d = good - cmean
        np.multiply(d, d, out=d)
        cm2 = float(d.sum())
        delta = cmean - self.mean
        total = self.n + k
        self.mean += delta * k / total
        self.m2 += cm2 + delta * delta * self.n * k / total
        self.n = total

    def result(self) -> Stats:
        st = self.st
        st.finite = self.n
        if self.n:
            st.min, st.max, st.mean = self.lo, self.hi, self.mean
            st.std = math.sqrt(self.m2 / self.n)
        return st


def array_stats(values: np.ndarray) -> Stats:
    """Statistics of one in-memory array, in chunks of CHUNK elements."""
    acc = Accumulator()
    flat = np.asarray(values).reshape(-1)
    for i in range(0, flat.size, CHUNK):
        acc.add(flat[i:i + CHUNK])
    return acc.result()


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


def layer_of(t: TensorInfo) -> int | None:
    return None if t.layer == S.NO_REF else t.layer


def select(tensors: Sequence[TensorInfo], selectors: list[str]) -> list[int]:
    """Tensor numbers matching any selector (all tensors when there are none), in order."""
    if not selectors:
        return list(range(len(tensors)))
    parsed = [parse_selector(s) for s in selectors]
    chosen = set()
    for how, what in parsed:
        if how == "index":
            if what >= len(tensors):
                n = len(tensors)
                raise ValueError(f"tensor {what} does not exist (the message has {n} "
                                 f"tensor{'' if n == 1 else 's'})")
            chosen.add(what)
            continue
        layer, role = what
        for i, t in enumerate(tensors):
            if (layer == "*" or layer_of(t) == layer) and (role == "*" or t.role == role):
                chosen.add(i)
    return sorted(chosen)


class Undequantizable(Exception):
    """A quantized tensor whose parameters a receiver must refuse (R-12.6)."""

    def __init__(self, error: avp.AvpError) -> None:
        super().__init__(str(error))
        self.error = error


def value_chunks(buf: BufferLike, w: Walk, i: int) -> Iterator[np.ndarray]:
    """Tensor ``i``'s values as a receiver sees them (dequantized when quantized), 1-D chunks.
    Raises Undequantizable (before yielding) for non-finite parameters."""
    t = w.tensors[i]
    if t.quant_scheme == 0:
        yield from element_chunks(buf, t)
        return
    yield from _dequantized(buf, w, i)


def _dequantized(buf: BufferLike, w: Walk, i: int) -> Iterator[np.ndarray]:
    t = w.tensors[i]
    scale = w.tensors[t.scale_tensor]
    zero = None if t.zero_point_tensor == S.NO_REF else w.tensors[t.zero_point_tensor]
    out_dtype = _DEQUANT_NAMES[t.dequant_dtype]
    dim = t.shape[t.quant_axis]
    inner = elements_of(t.shape[t.quant_axis + 1:])
    g_eff = dim if t.group_size == 0 else t.group_size
    groups = 1 if t.group_size == 0 else -(-dim // t.group_size)
    with ElementSource(buf, scale) as s_src:
        z_src = ElementSource(buf, zero) if zero is not None else None
        try:
            # as the codec's dequantize_tensor applies it: every parameter element
            # finite, the scale tensor first.
            for src, field in ((s_src, "scale_tensor"), (z_src, "zero_point_tensor")):
                if src is not None:
                    _check_finite(src, f"tensor[{i}].{field}")
            e0 = 0
            for codes in element_chunks(buf, t):
                n = codes.size
                parts = []
                for a, b in _row_pieces(e0, e0 + n, inner):
                    sv = _params(s_src, a, b, inner, dim, groups, g_eff)
                    zv = _params(z_src, a, b, inner, dim, groups, g_eff) if z_src else None
                    parts.append(avq.dequantize_array(codes[a - e0:b - e0], sv, zv, 0, 1,
                                                      out_dtype))
                e0 += n
                yield parts[0] if len(parts) == 1 else np.concatenate(parts)
        finally:
            if z_src is not None:
                z_src.close()


def elements_of(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _params(src: ElementSource, a: int, b: int, inner: int, dim: int, groups: int,
            g_eff: int) -> np.ndarray:
    """The parameter of each element a..b-1, gathered by rows: elements come in rows of
    ``inner`` (the axes after quant_axis) and a row (outer index o, coordinate c along the axis)
    takes parameter row o * groups + c // g_eff (spec 12.2). Costs one pass over the elements
    and a computation per row, never per element."""
    r0, r1 = a // inner, -(-b // inner)
    rows = np.arange(r0, r1, dtype=np.int64)
    prow = (rows // dim) * groups + (rows % dim) // g_eff
    lo, hi = int(prow.min()), int(prow.max()) + 1
    table = src.read(lo * inner, hi * inner).reshape(hi - lo, inner)
    picked: np.ndarray = table[prow - lo].reshape(-1)
    return picked[a - r0 * inner:b - r0 * inner]


def _row_pieces(a: int, b: int, inner: int) -> list[tuple[int, int]]:
    """[a, b) split where it crosses a row of ``inner`` elements, when rows are long: each piece
    then needs a parameter range no longer than itself (short rows: one piece, whose range is
    at most a few chunks)."""
    if inner < CHUNK:
        return [(a, b)]
    out = []
    while a < b:
        end = min(b, (a // inner + 1) * inner)
        out.append((a, end))
        a = end
    return out


def _check_finite(src: ElementSource, path: str) -> None:
    n = elements(src.t)
    for e0 in range(0, n, CHUNK):
        vals = src.read(e0, min(n, e0 + CHUNK)).astype(np.float32)
        if not np.all(np.isfinite(vals)):
            raise Undequantizable(avp.AvpError(
                avp.ErrorCode.QUANT_PARAMS, "non-finite quantization parameter (R-12.6)",
                path=path))


def stats_rows(buf: BufferLike, w: Walk, indices: list[int]) -> Iterator[dict[str, Any]]:
    """One row per selected tensor; a quantized tensor whose parameters must be refused gets
    the statistics of its stored codes and an ``error``."""
    for i in indices:
        t = w.tensors[i]
        quantized = t.quant_scheme != 0
        error = None
        acc = Accumulator()
        try:
            for chunk in value_chunks(buf, w, i):
                acc.add(chunk)
        except Undequantizable as exc:
            error = exc.error
            acc = Accumulator()
            for chunk in element_chunks(buf, t):
                acc.add(chunk)
        d = acc.result().as_dict()
        yield {"tensor": i, "layer": layer_of(t), "role": S.role_name(t.role),
               "dtype": S.dtype_name(t.dtype), "elements": elements(t),
               "dequantized": quantized and error is None,
               "error": None if error is None else {
                   "code": int(error.code), "name": error.code.name, "path": error.path,
                   "message": error.detail}, **d}


def fmt_num(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


STATS_HEADER = ["#", "layer", "role", "dtype", "count", "min", "max", "mean", "std", "nan",
                "inf", "zeros"]


def stats_cells(r: dict[str, Any]) -> list[str]:
    dtype = r["dtype"] + ("->deq" if r["dequantized"] else "")
    if r["error"] is not None:
        dtype += " (codes)"
    share = r["zero_share"]
    return [str(r["tensor"]), "msg" if r["layer"] is None else str(r["layer"]),
            r["role"], dtype, str(r["count"]), fmt_num(r["min"]), fmt_num(r["max"]),
            fmt_num(r["mean"]), fmt_num(r["std"]), str(r["nan"]),
            str(r["posinf"] + r["neginf"]), "-" if share is None else f"{100 * share:.1f}%"]
