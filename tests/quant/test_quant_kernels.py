"""The compiled quantize / dequantize kernels give the numpy path's bytes, on hostile inputs.

Every case runs twice in one process: with ``AVP_KERNELS=numpy`` (the numpy twin) and without
(the numba kernels of ``_quant_kernels``), and the codes, parameters, parameter dtypes and
dequantized bits must be identical. Thread counts 1, 2 and 3 must agree too (the pool's
threshold is lowered so small tensors really are split).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from avp_codec import _jit, _parallel, _quant_fast
from avp_codec import _quant_core as core

pytestmark = pytest.mark.skipif(_jit._load_numba() is None, reason="numba (fast extra) absent")

BF16 = ml_dtypes.bfloat16
INT = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-8, 7), "uint4": (0, 15),
       "uint2": (0, 3)}


def both(monkeypatch: pytest.MonkeyPatch, fn: Callable[..., Any], *args: Any,
         **kw: Any) -> tuple[Any, Any]:
    """fn(*args, **kw) on the numpy twin, then on the compiled kernels (floating-point
    warnings silenced: overflow and invalid operations are part of these inputs)."""
    monkeypatch.setenv(_jit.ENV, "numpy")
    assert not _jit.available()
    with np.errstate(all="ignore"):
        a = fn(*args, **kw)
    monkeypatch.delenv(_jit.ENV)
    assert _jit.available()
    with np.errstate(all="ignore"):
        return a, fn(*args, **kw)


def quantize(*args: Any, **kw: Any) -> tuple[Any, ...]:
    r = core.quantize_affine(*args, **kw)
    return r.codes, r.scale, r.zero_point


def same(a: Any, b: Any) -> None:
    if isinstance(a, tuple | list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif a is None or b is None:
        assert a is None and b is None
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def hostile(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any, kind: str
            ) -> np.ndarray:
    """Values that stress the arithmetic of spec 12.4."""
    n = int(np.prod(shape))
    if kind == "normal":
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)
    elif kind == "constant":  # s == 0 groups: one value repeated, zero included
        x = np.repeat(rng.choice([0.0, -0.0, 3.5, -2.25, 1e-3]), n)
        x[: n // 3] = -0.0
    elif kind == "signed_zeros":
        x = rng.choice([0.0, -0.0, 1.0, -1.0], n)
    elif kind == "subnormal":  # smallest magnitudes of the input dtype, scales near zero
        tiny = float(np.finfo(dtype).smallest_subnormal)
        x = rng.integers(-4, 5, n) * tiny
    elif kind == "huge":  # parameters beyond float16 / bfloat16: the float32 fallback
        big = float(np.finfo(dtype).max)
        x = rng.uniform(-1, 1, n) * big
    elif kind == "wide":  # every magnitude at once
        big = float(np.finfo(dtype).max)
        x = np.clip(rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n), -big, big)
    else:
        raise AssertionError(kind)
    with np.errstate(over="ignore"):
        return np.asarray(x).astype(dtype).reshape(shape)


SHAPES = [(2, 3, 70, 9), (1, 5, 64, 64), (3, 7), (1, 1), (4, 1, 130)]


@pytest.mark.parametrize("src", [BF16, np.float16, np.float32])
@pytest.mark.parametrize("data", ["normal", "constant", "signed_zeros", "subnormal", "huge",
                                  "wide"])
def test_quantize_identical(monkeypatch: pytest.MonkeyPatch, src: Any, data: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{src}{data}".encode()))
    for shape in SHAPES:
        x = hostile(rng, shape, src, data)
        for axis in range(len(shape)):
            for gs in (0, 1, 3, 64, 1000):
                dtype = str(rng.choice(list(INT)))
                pdt = str(rng.choice(["float16", "bfloat16", "float32"]))
                for zp in (True, False):
                    same(*both(monkeypatch, quantize, x, dtype, axis, gs, zero_point=zp,
                               param_dtype=pdt, threads=2))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -np.nan])
@pytest.mark.parametrize("src", [BF16, np.float16, np.float32])
def test_non_finite_rejected_on_both_paths(monkeypatch: pytest.MonkeyPatch, bad: float,
                                           src: Any) -> None:
    x = np.linspace(-1, 1, 4 * 64).astype(src).reshape(4, 64)
    x[2, 17] = bad
    for zp in (True, False):
        for axis in (0, 1):
            for env in ("numpy", ""):
                monkeypatch.setenv(_jit.ENV, env)
                with pytest.raises(ValueError, match="non-finite"):
                    core.quantize_affine(x, "uint8" if zp else "int8", axis, 64,
                                         zero_point=zp)


def test_scale_rounding_to_zero_keeps_numpy_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # A float32 group whose range is the smallest subnormal: s rounds to 0 in float32, x / s
    # is NaN or inf; the compiled path hands such tensors to the numpy codes pass.
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    x = np.array([[0, tiny, 0, tiny], [1, 2, 3, 4]], np.float32)
    for zp in (True, False):
        same(*both(monkeypatch, quantize, x, "uint8", 1, 0, zero_point=zp,
                   param_dtype="float32"))


@pytest.mark.parametrize("dtype", ["int4", "uint4"])
def test_packed_codes_identical(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    monkeypatch.setattr(_parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(_quant_fast, "UNIT", 37)  # many small units, odd element starts
    rng = np.random.default_rng(7)
    for shape in [(3, 5, 7), (2, 64, 9), (1, 33), (6, 130, 1), (5,)]:
        x = hostile(rng, shape, BF16, "normal")
        for axis in range(len(shape)):
            for gs in (0, 1, 4, 64):
                for zp in (True, False):
                    want = core.quantize_affine(x, dtype, axis, gs, zero_point=zp, threads=1)
                    packed = np.frombuffer(_quant_fast.pack4(want.codes), np.uint8)
                    for threads in (1, 2, 3):
                        a, b = both(monkeypatch, core.quantize_affine_packed, x, dtype, axis,
                                    gs, zero_point=zp, threads=threads)
                        same(a, b)
                        same(a, (packed, want.scale, want.zero_point))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_identical(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    monkeypatch.setattr(_parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(_quant_fast, "UNIT", 200)
    rng = np.random.default_rng(11)
    x = hostile(rng, (2, 4, 96, 16), BF16, "wide")
    for axis, gs in ((3, 8), (2, 32), (1, 0), (0, 1)):
        want = core.quantize_affine(x, "uint8", axis, gs, zero_point=True, threads=1)
        got = core.quantize_affine(x, "uint8", axis, gs, zero_point=True, threads=threads)
        same((want.codes, want.scale, want.zero_point), (got.codes, got.scale, got.zero_point))
        for out in ("bfloat16", "float32"):
            same(core.dequantize(want.codes, want.scale, want.zero_point, axis, gs, out,
                                 threads=1),
                 core.dequantize(want.codes, want.scale, want.zero_point, axis, gs, out,
                                 threads=threads))


def _pack(codes: np.ndarray, dtype: str) -> bytes:
    per = 4 if dtype == "uint2" else 2
    bits = 8 // per
    u = codes.reshape(-1).astype(np.uint8) & ((1 << bits) - 1)
    u = np.concatenate([u, np.zeros(-u.size % per, np.uint8)]).reshape(-1, per)
    b = np.zeros(len(u), np.uint8)
    for i in range(per):
        b |= (u[:, i] << (bits * i)).astype(np.uint8)
    return b.tobytes()


@pytest.mark.parametrize("dtype", sorted(INT))
@pytest.mark.parametrize("out", ["float32", "bfloat16", "float16"])
def test_dequantize_identical(monkeypatch: pytest.MonkeyPatch, dtype: str, out: str) -> None:
    monkeypatch.setattr(_parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(_quant_fast, "UNIT", 41)
    rng = np.random.default_rng(zlib.crc32(f"{dtype}{out}".encode()))
    lo, hi = INT[dtype]
    for shape in [(2, 3, 70, 9), (5, 1), (3, 130), (1, 7), (1, 4, 33, 5)]:
        codes = rng.integers(lo, hi + 1, size=shape).astype(np.int8 if lo < 0 else np.uint8)
        packed = (_pack(codes, dtype), dtype) if dtype in ("int4", "uint4", "uint2") else None
        for axis in range(len(shape)):
            for gs in (0, 1, 3, 64, 1000):
                ps = core.param_shape(shape, axis, gs)
                # Magnitudes from subnormal to overflowing (inf results), both signs.
                scale = (rng.standard_normal(ps) * 10.0 ** rng.integers(-44, 38, ps)
                         ).astype(np.float32)
                zp = (rng.standard_normal(ps) * 100).astype(np.float16)
                for z in (zp, None):
                    for threads in (1, 3):
                        same(*both(monkeypatch, core.dequantize, codes, scale, z, axis, gs,
                                   out, packed=packed, threads=threads))


def test_dequantize_non_finite_parameters_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    # Non-finite parameters (rejected at the message level, allowed by the array API) make
    # NaNs: the compiled path steps aside and NaNs come out canonical on both.
    codes = np.arange(24, dtype=np.uint8).reshape(4, 6)
    scale = np.array([[np.inf], [np.nan], [0.0], [1.5]], np.float32)
    for out in ("float32", "bfloat16", "float16"):
        same(*both(monkeypatch, core.dequantize, codes, scale, np.zeros_like(scale), 1, 0,
                   out))


def test_kernel_failures_fall_back_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    # numba unable to set a kernel up (cache=True with nowhere to write raises RuntimeError)
    # or to compile a signature (a NumbaError at call time): the numpy twin answers, same bytes.
    from avp_codec import _quant_kernels

    nb = _jit._load_numba()
    x = hostile(np.random.default_rng(3), (2, 4, 70, 16), BF16, "normal")
    want_q = quantize(x, "uint8", 2, 64, zero_point=True)
    want_p = core.quantize_affine_packed(x, "int4", 3, 8, zero_point=True)
    want_d = core.dequantize(want_q[0], want_q[1], want_q[2], 2, 64, "bfloat16")

    def broken_get() -> Any:
        raise RuntimeError("cannot cache function: no locator available")

    def failing(*args: Any) -> None:
        raise nb.core.errors.TypingError("no implementation for this signature")

    for kern in (_quant_kernels.group_keys, _quant_kernels.affine_codes,
                 _quant_kernels.affine_dequant):
        for patch in (broken_get, lambda: failing):
            with monkeypatch.context() as m:
                m.setattr(kern, "get", patch)
                same(quantize(x, "uint8", 2, 64, zero_point=True), want_q)
                same(core.quantize_affine_packed(x, "int4", 3, 8, zero_point=True), want_p)
                same(core.dequantize(want_q[0], want_q[1], want_q[2], 2, 64, "bfloat16"),
                     want_d)
    # Errors of the data itself are not kernel failures: they still reach the caller.
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        quantize(x, "uint8", 2, 64, zero_point=True)
