"""Dequantization cost follows the element count, never group_size (issue 14), and the segmented,
threaded engine gives the same bits as a plain whole-array evaluation of spec 12.2."""

from __future__ import annotations

import tracemalloc

import ml_dtypes
import numpy as np
import pytest

import avp_codec as avp
from avp_codec import _dtypes, _quant_dequant, quant

# Every test here runs on the compiled kernels and on their numpy twins (conftest.py).
pytestmark = pytest.mark.usefixtures("kernel_path")

F32 = np.float32


def _plain(codes: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int, group: int,
           out: str) -> np.ndarray:
    """Spec 12.2 on whole arrays: parameters repeated out to one per element (small inputs)."""
    dim = codes.shape[axis]
    g = dim if group == 0 else group
    idx = np.arange(dim) // g
    s = np.take(scale.astype(F32), idx, axis=axis)
    x = codes.astype(F32)
    with np.errstate(over="ignore", invalid="ignore"):
        if zp is not None:
            x = np.subtract(x, np.take(zp.astype(F32), idx, axis=axis), dtype=F32)
        r = np.multiply(x, s, dtype=F32)
    dt = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[out]
    res = r.astype(dt)
    bits = res.view(np.uint32 if out == "float32" else np.uint16)
    bits[np.isnan(r)] = {"float32": 0x7FC00000, "float16": 0x7E00, "bfloat16": 0x7FC0}[out]
    return res


def _peak(fn: object) -> int:
    tracemalloc.start()
    try:
        fn()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("group", [2**28, 2**32 - 1])
def test_huge_group_size_costs_what_the_elements_cost(group: int) -> None:
    codes = np.arange(8, dtype=np.int8).reshape(1, 8)
    scale = np.array([[0.5]], np.float16)
    zp = np.array([[1.0]], np.float16)
    got = quant.dequantize_array(codes, scale, zp, 1, group, "float32")
    assert got.tolist() == [[(i - 1) * 0.5 for i in range(8)]]
    # Once first: with a cold numba cache that call compiles the bfloat16 kernel, a one-time
    # cost (megabytes of compiler memory) that is not what this test bounds.
    quant.dequantize_array(codes, scale, zp, 1, group, "bfloat16")
    assert _peak(lambda: quant.dequantize_array(codes, scale, zp, 1, group, "bfloat16")) < 1 << 20


@pytest.mark.parametrize("group", [2**28, 2**32 - 1])
def test_huge_group_size_through_the_wire(group: int) -> None:
    shape = (1, 1, 8, 2)
    codes = np.arange(16, dtype=np.int8).reshape(shape) % 8
    q = avp.Quant(avp.QuantScheme.AFFINE, 2, group, 0, None, avp.Dtype.BFLOAT16)
    tensors = [
        avp.Tensor.from_array(np.full((1, 1, 1, 2), 0.25, np.float16), avp.Role.QUANT_SCALE,
                              ordinal=0),
        avp.Tensor.from_array(codes, avp.Role.KEY, ordinal=0, layout=avp.Layout.BHTD,
                              dtype=avp.Dtype.INT4, quant=q),
        avp.Tensor.from_array(np.zeros(shape, ml_dtypes.bfloat16), avp.Role.VALUE, ordinal=0,
                              layout=avp.Layout.BHTD),
    ]
    msg = avp.Message(avp.Kind.KV_CACHE, [avp.Entry.of(avp.MetaKey.MODEL_ID, b"\0" * 32),
                                          avp.Entry.of(avp.MetaKey.CONTEXT_LENGTH, 8)],
                      [avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, 8)], tensors)
    wire = avp.encode(msg)
    back = avp.decode(wire)
    out = quant.dequantize_tensor(back, 1)
    assert out.astype(F32).reshape(-1).tolist() == (codes.reshape(-1) * 0.25).tolist()
    assert _peak(lambda: quant.dequantize_message(avp.decode(wire))) < 1 << 20


CASES = [  # shape, axis, group: rows longer than a segment, groups longer than a segment,
    ((3, 5, 1000, 7), 2, 64),  # ragged last groups, group_size 0, tiny and huge groups
    ((2, 70000), 1, 3),
    ((2, 70001), 1, 50000),
    ((1, 200001), 1, 0),
    ((4, 300, 9), 1, 1),
    ((7, 11), 0, 2**32 - 1),
    ((2, 3, 40000, 2), 2, 7),
    ((0, 5), 1, 2),
]


@pytest.mark.parametrize(("shape", "axis", "group"), CASES)
@pytest.mark.parametrize("out", ["float32", "bfloat16"])
def test_segments_match_the_plain_evaluation(shape: tuple[int, ...], axis: int, group: int,
                                             out: str) -> None:
    rng = np.random.default_rng(len(shape) * 1000 + axis * 10 + group % 97)
    codes = rng.integers(-128, 128, size=shape).astype(np.int8)
    pshape = quant.param_shape(shape, axis, group)
    scale = rng.standard_normal(pshape).astype(np.float16)
    zp = (rng.standard_normal(pshape) * 4).astype(ml_dtypes.bfloat16)
    for z in (zp, None):
        want = _plain(codes, scale, z, axis, group, out)
        for threads in (1, 3):
            got = quant.dequantize_array(codes, scale, z, axis, group, out) if threads == 3 else \
                _quant_dequant.dequantize_into(
                    np.empty(shape, want.dtype), _quant_dequant.Codes(values=codes),
                    scale.astype(F32), None if z is None else z.astype(F32), axis, group,
                    lambda r, dt=want.dtype: r.astype(dt), threads=1)
            if out == "bfloat16" and threads == 1:  # the lambda above skips NaN canonicalising
                assert not np.isnan(want.astype(F32)).any()
            assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("dtype", [avp.Dtype.INT4, avp.Dtype.UINT4, avp.Dtype.UINT2])
@pytest.mark.parametrize("count", [1, 3, 70001])
def test_packed_codes_widen_exactly(dtype: avp.Dtype, count: int) -> None:
    rng = np.random.default_rng(count)
    lo, hi = (-8, 8) if dtype == avp.Dtype.INT4 else (0, 16 if dtype == avp.Dtype.UINT4 else 4)
    codes = rng.integers(lo, hi, size=(1, count)).astype(np.int8 if lo else np.uint8)
    packed = _dtypes.pack(codes, dtype)
    scale = rng.standard_normal((1, -(-count // 5))).astype(np.float32)
    name = dtype.name.lower()
    got = quant.dequantize_array(np.broadcast_to(np.int8(0), codes.shape), scale, None, 1, 5,
                                 "float32")
    assert got.shape == codes.shape
    from avp_codec import _quant_core
    got = _quant_core.dequantize(np.broadcast_to(np.int8(0), codes.shape), scale, None, 1, 5,
                                 "float32", packed=(packed, name))
    assert np.array_equal(got, _plain(codes, scale, None, 1, 5, "float32"))


@pytest.mark.parametrize(("shape", "axis", "group"), [c for c in CASES if 0 not in c[0]])
@pytest.mark.parametrize(("dtype", "zero_point"), [("uint4", True), ("int8", False),
                                                   ("uint8", True), ("int4", False)])
def test_segmented_producer_matches_the_whole_array_producer(
        shape: tuple[int, ...], axis: int, group: int, dtype: str, zero_point: bool) -> None:
    from avp_codec import _quant_core
    rng = np.random.default_rng(sum(shape) + axis)
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 30, shape)).astype(ml_dtypes.bfloat16)
    # Two equal clip ratios take the whole-array path; one ratio takes the segmented one.
    kw = dict(zero_point=zero_point, param_dtype="float16")
    fast = _quant_core.quantize_affine(x, dtype, axis, group, threads=3, **kw)  # type: ignore[arg-type]
    whole = _quant_core.quantize_affine(x, dtype, axis, group, clip_ratios=(1.0, 1.0), **kw)  # type: ignore[arg-type]
    assert np.array_equal(fast.codes, whole.codes)
    assert fast.codes.dtype == whole.codes.dtype
    assert np.array_equal(fast.scale.view(np.uint8), whole.scale.view(np.uint8))
    if zero_point:
        assert fast.zero_point is not None and whole.zero_point is not None
        assert np.array_equal(fast.zero_point.view(np.uint8), whole.zero_point.view(np.uint8))
    bad = x.copy()
    bad.reshape(-1)[-1] = np.nan
    with pytest.raises(ValueError):
        _quant_core.quantize_affine(bad, dtype, axis, group, **kw)  # type: ignore[arg-type]
