"""Bit-exact dequantization (spec 12.2, R-12.6) against the independent slow reference."""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import avp_codec as avp
from avp_codec import quant

from . import _quant_reference as ref

# Every test here runs on the compiled kernels and on their numpy twins (conftest.py).
pytestmark = pytest.mark.usefixtures("kernel_path")

PARAM = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
BITS_VIEW = {"float32": np.uint32, "float16": np.uint16, "bfloat16": np.uint16}
INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-8, 7), "uint4": (0, 15),
             "uint2": (0, 3)}


def _random_params(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Random finite values over the whole bit space: subnormals, huge and tiny magnitudes."""
    view = BITS_VIEW[dtype]
    width = np.iinfo(view).max + 1
    bits = rng.integers(0, width, size=shape, dtype=np.uint64).astype(view)
    vals = bits.view(PARAM[dtype])
    bad = ~np.isfinite(vals.astype(np.float32))
    vals[bad] = PARAM[dtype](1.5)
    # Mix in ordinary magnitudes so that most results are finite and normal.
    ordinary = rng.standard_normal(shape).astype(PARAM[dtype])
    pick = rng.random(shape) < 0.5
    return np.where(pick, ordinary, vals).astype(PARAM[dtype])


def _reference(codes: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int,
               group: int, out: str, fp8: str | None) -> np.ndarray:
    g = codes.shape[axis] if group == 0 else group
    result = np.empty(codes.shape, dtype=np.uint64)
    raw8 = codes.view(np.uint8) if fp8 else None
    for idx in np.ndindex(*codes.shape):
        pidx = list(idx)
        pidx[axis] //= g
        p = tuple(pidx)
        q = ref.fp8_value(int(raw8[idx]), fp8) if fp8 else float(int(codes[idx]))
        s = float(scale[p].astype(np.float32))
        z = None if zp is None else float(zp[p].astype(np.float32))
        result[idx] = ref.dequantize_element(q, s, z, out)
    return result


@pytest.mark.parametrize("dtype", sorted(INT_RANGE))
@pytest.mark.parametrize("out", ["float32", "float16", "bfloat16"])
def test_affine_matches_reference(dtype: str, out: str) -> None:
    rng = np.random.default_rng(hash((dtype, out)) % 2**32)
    shape, axis, group = (2, 3, 7, 5), 2, 3
    lo, hi = INT_RANGE[dtype]
    codes = rng.integers(lo, hi + 1, size=shape).astype(np.int8 if lo < 0 else np.uint8)
    pshape = quant.param_shape(shape, axis, group)
    sdt, zdt = rng.choice(list(PARAM), size=2)
    scale = _random_params(rng, pshape, str(sdt))
    zp = _random_params(rng, pshape, str(zdt))
    for z in (zp, None):
        got = quant.dequantize_array(codes, scale, z, axis, group, out)
        want = _reference(codes, scale, z, axis, group, out, None)
        assert np.array_equal(got.view(BITS_VIEW[out]).astype(np.uint64), want)


@pytest.mark.parametrize("fp8", ["float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("out", ["float32", "float16", "bfloat16"])
def test_scaled_float_matches_reference_on_every_code(fp8: str, out: str) -> None:
    # All 256 codes, NaNs and e5m2 infinities included, against scales that include zero
    # (infinity x 0 is NaN, which must come out canonical).
    codes = np.arange(256, dtype=np.uint8).view(getattr(ml_dtypes, fp8)).reshape(16, 16)
    scale = np.array([[1.0], [0.0], [-3.5], [1e-7], [6e4], [2.0**-24], [1 / 3], [7.0]] * 2,
                     dtype=np.float32)
    got = quant.dequantize_array(codes, scale.astype(np.float16), None, 1, 0, out)
    want = _reference(codes, scale.astype(np.float16), None, 1, 0, out, fp8)
    assert np.array_equal(got.view(BITS_VIEW[out]).astype(np.uint64), want)


def test_hand_computed_values() -> None:
    """A few results worked out by hand from the spec text."""
    codes = np.array([[0, 3, 255]], dtype=np.uint8)
    scale = np.array([[0.1]], dtype=np.float16)      # 0.0999755859375 exactly
    zp = np.array([[1.5]], dtype=np.float16)
    got = quant.dequantize_array(codes, scale, zp, 1, 0, "float32")
    s = 0.0999755859375
    assert got[0].tolist() == [np.float32(-1.5 * s), np.float32(1.5 * s), np.float32(253.5 * s)]
    # bfloat16 ties go to even: 1 + 2^-8 lies exactly between 1 and 1 + 2^-7.
    tie = quant.dequantize_array(np.array([1], np.int8), np.array([1 + 2.0**-8], np.float32),
                                 None, 0, 0, "bfloat16")
    assert tie.view(np.uint16).tolist() == [0x3F80]
    # Overflow of the binary32 product is an infinity, not NaN; float16 overflow likewise.
    big = quant.dequantize_array(np.array([-128], np.int8), np.array([3e38], np.float32),
                                 None, 0, 0, "float16")
    assert big.view(np.uint16).tolist() == [0xFC00]


def test_no_fused_multiply_add() -> None:
    """(q - z) * s must round after the subtraction: a fused evaluation differs here."""
    # Found by search: the exact (q - z) * s rounds differently from the two-step result.
    q, z, s = 1.0, float.fromhex("0x1.45674cp-3"), float.fromhex("-0x1.2b79c8p-2")
    got = quant.dequantize_array(np.array([1], np.uint8), np.array([s], np.float32),
                                 np.array([z], np.float32), 0, 0, "float32")
    stepwise = np.float32(np.float32(q - z) * np.float32(s))
    fused = np.float32(float((Fraction(q) - Fraction(z)) * Fraction(s)))
    assert fused != stepwise  # the case really distinguishes the two evaluations
    assert got[0] == stepwise


def test_through_the_wire_matches_reference() -> None:
    """Encode a quantized tensor, decode it, dequantize: same bits as the reference."""
    rng = np.random.default_rng(7)
    shape = (1, 2, 9, 4)
    codes = rng.integers(-8, 8, size=shape).astype(np.int8)
    pshape = quant.param_shape(shape, 2, 4)
    scale = _random_params(rng, pshape, "bfloat16")
    zp = _random_params(rng, pshape, "float16")
    tensors = [
        avp.Tensor.from_array(scale, avp.Role.QUANT_SCALE, ordinal=0),
        avp.Tensor.from_array(zp, avp.Role.QUANT_ZERO_POINT, ordinal=0),
        avp.Tensor.from_array(codes, avp.Role.KEY, ordinal=0, layout=avp.Layout.BHTD,
                              dtype=avp.Dtype.INT4,
                              quant=avp.Quant(avp.QuantScheme.AFFINE, 2, 4, 0, 1,
                                              avp.Dtype.BFLOAT16)),
        avp.Tensor.from_array(np.zeros(shape, ml_dtypes.bfloat16), avp.Role.VALUE, ordinal=0,
                              layout=avp.Layout.BHTD),
    ]
    layers = [avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, 9)]
    msg = avp.decode(avp.encode(avp.kv_cache_message(b"\0" * 32, 9, layers, tensors)))
    got = quant.dequantize_tensor(msg, 2)
    want = _reference(codes, scale, zp, 2, 4, "bfloat16", None)
    assert np.array_equal(got.view(np.uint16).astype(np.uint64), want)
