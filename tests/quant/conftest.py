"""Quantization tests run on both paths: the compiled kernels and their numpy twins."""

from __future__ import annotations

import pytest

from avp_codec import _jit


@pytest.fixture(params=["kernels", "numpy"])
def kernel_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once with the compiled kernels (when numba is installed) and once with
    ``AVP_KERNELS=numpy``, so that neither path goes untested."""
    if request.param == "numpy":
        monkeypatch.setenv(_jit.ENV, "numpy")
    else:
        monkeypatch.delenv(_jit.ENV, raising=False)
    param: str = request.param
    return param
