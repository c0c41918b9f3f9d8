"""The optional kernel loader: compiled when numba is present, never when AVP_KERNELS=numpy."""

from __future__ import annotations

import numpy as np
import pytest

from avp_codec import _jit


@_jit.kernel
def _twice(a: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.size):
        out[i] = a[i] * 2


def test_numpy_env_disables_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_jit.ENV, "numpy")
    assert not _jit.available()
    assert _twice.get() is None


def test_compiled_kernel_matches_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_jit.ENV, raising=False)
    pytest.importorskip("numba")
    fn = _twice.get()
    assert fn is not None and fn is not _twice.py
    a = np.arange(7, dtype=np.int32)
    out, ref = np.empty_like(a), np.empty_like(a)
    fn(a, out)
    _twice.py(a, ref)
    assert out.tolist() == ref.tolist() == [0, 2, 4, 6, 8, 10, 12]


def test_load_kernels_reports_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import avp_codec as avp
    from avp_codec import _plane_kernels, _quant_kernels

    monkeypatch.setenv(_jit.ENV, "numpy")
    assert avp.load_kernels() is False
    monkeypatch.delenv(_jit.ENV)
    if not _jit.available():  # pragma: no cover - the project lock installs numba
        pytest.skip("numba is not installed")
    assert avp.load_kernels() is True
    # Every kernel family has a compiled specialisation now (none is compiled on a request).
    for mod in (_plane_kernels, _quant_kernels):
        kernels = [v for v in vars(mod).values() if isinstance(v, _jit.Kernel)]
        assert kernels
        for k in kernels:
            fn = k.get()
            assert fn is not None and fn.signatures, k.py.__name__
