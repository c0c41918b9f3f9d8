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
