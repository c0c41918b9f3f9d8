"""--stats arithmetic: counts of NaN / infinities / zeros, and chunked mean / std equal to numpy's
over the finite values (the chunk size is lowered so the merge path really runs)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from avp_tools import _stats


def test_counts_and_moments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_stats, "CHUNK", 7)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(1000).astype(np.float32) * 3 + 1
    x[[5, 50, 500]] = np.nan
    x[[6, 60]] = np.inf
    x[7] = -np.inf
    x[100:110] = 0
    st = _stats.array_stats(x.reshape(10, 100))
    finite = x[np.isfinite(x)].astype(np.float64)
    assert (st.count, st.nan, st.posinf, st.neginf, st.zeros) == (1000, 3, 2, 1, 10)
    assert st.finite == finite.size
    assert (st.min, st.max) == (finite.min(), finite.max())
    assert math.isclose(st.mean, finite.mean(), rel_tol=1e-12)
    assert math.isclose(st.std, finite.std(), rel_tol=1e-12)


def test_bfloat16_and_fp8_are_read_as_numbers() -> None:
    b = np.array([1.5, -2.0, 0.0], dtype=ml_dtypes.bfloat16)
    st = _stats.array_stats(b)
    assert (st.min, st.max, st.zeros) == (-2.0, 1.5, 1)
    f8 = np.array([448.0, -0.5, float("nan")], dtype=ml_dtypes.float8_e4m3fn)
    st = _stats.array_stats(f8)
    assert (st.max, st.min, st.nan) == (448.0, -0.5, 1)


def test_all_nan_and_empty() -> None:
    st = _stats.array_stats(np.full(4, np.nan, dtype=np.float16))
    assert st.nan == 4 and st.finite == 0 and st.as_dict()["mean"] is None
    assert _stats.array_stats(np.zeros((0, 3), np.float32)).as_dict()["zero_share"] is None


@pytest.mark.parametrize("axis,group,codec,scale_codec", [
    (3, 0, 0, 0), (3, 3, 1, 2), (2, 2, 0, 1), (0, 1, 1, 0), (1, 0, 0, 2), (2, 5, 1, 1)])
def test_chunked_dequantization_is_the_codecs_bit_for_bit(
        monkeypatch: pytest.MonkeyPatch, axis: int, group: int, codec: int,
        scale_codec: int) -> None:
    """--stats dequantizes chunk by chunk (parameters gathered per element, then the codec's
    arithmetic): the values must be exactly avp_codec.quant.dequantize_tensor's, for any axis,
    group size and codec of the codes and of the parameters, across chunk and row boundaries."""
    from avp_tools import _data, walk

    import avp_codec as avp
    from avp_codec import quant

    monkeypatch.setattr(_data, "CHUNK", 48)
    monkeypatch.setattr(_stats, "CHUNK", 48)
    rng = np.random.default_rng(axis * 10 + group)
    shape = (2, 3, 7, 5)
    codes = rng.integers(0, 16, size=shape).astype(np.uint8)
    pshape = quant.param_shape(shape, axis, group)
    scale = (rng.random(pshape) + 0.1).astype(np.float32)
    zero = rng.integers(0, 16, size=pshape).astype(np.float16)
    q = avp.Quant(avp.QuantScheme.AFFINE, axis, group, 0, 1, avp.Dtype.BFLOAT16)
    tensors = [
        avp.Tensor.from_array(scale, avp.Role.QUANT_SCALE, layer=0, codec=scale_codec),
        avp.Tensor.from_array(zero, avp.Role.QUANT_ZERO_POINT, layer=0, codec=scale_codec),
        avp.Tensor.from_array(codes, avp.Role.KEY, layer=0, layout=avp.Layout.BHTD,
                              dtype=avp.Dtype.UINT4, quant=q, codec=codec)]
    msg = avp.kv_cache_message(bytes(32), 7, [avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, 7)],
                               tensors)
    data = avp.encode(msg)
    w = walk(data, verify_data=True)
    assert w.valid, w.issues
    mine = np.concatenate(list(_stats.value_chunks(data, w, 2)))
    ref = quant.dequantize_tensor(avp.decode(data), 2).reshape(-1)
    assert mine.dtype == ref.dtype and mine.tobytes() == ref.tobytes()
    st = _stats.array_stats(ref)
    row = next(_stats.stats_rows(data, w, [2]))
    assert row["dequantized"] and row["count"] == ref.size
    assert math.isclose(row["mean"], st.mean, rel_tol=1e-12)


def test_non_finite_parameters_are_refused_not_dequantized() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import dump_hostile_corpus as corpus
    from avp_tools import walk

    data = corpus.build("nonfinite_scales")
    w = walk(data, verify_data=True)
    assert w.valid
    row = next(_stats.stats_rows(data, w, [1]))
    assert not row["dequantized"] and row["error"]["name"] == "QUANT_PARAMS"
    assert row["error"]["path"] == "tensor[1].scale_tensor" and row["count"] == 32


def test_empty_tensor_with_huge_dimensions() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import dump_hostile_corpus as corpus
    from avp_tools import walk

    for name in ("zero_dim_huge", "zero_dim_huge_recurrent"):
        data = corpus.build(name)
        w = walk(data, verify_data=True)
        row = next(_stats.stats_rows(data, w, [0]))
        assert row["count"] == 0 and row["mean"] is None and row["zero_share"] is None
