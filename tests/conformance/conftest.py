"""Shared fixtures for the conformance tests: the suite, and the C testee built once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from avp_conform import manifest as mf

C_SOURCES = Path(mf.CONFORMANCE_DIR) / "c_testee"
REFERENCE = [sys.executable, "-m", "avp_conform.reference_testee"]
REFERENCE_KNOWN_FAILURES = Path(mf.CONFORMANCE_DIR) / "known-failures" / "avp_codec.txt"


@pytest.fixture(scope="session")
def suite() -> mf.Suite:
    return mf.load_suite()


@pytest.fixture(scope="session")
def c_testee(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C example testee, compiled exactly as a third party would (C99, warnings as errors)."""
    cc = shutil.which("cc")
    assert cc is not None, "a C compiler (cc) is required to build conformance/c_testee"
    out = tmp_path_factory.mktemp("c_testee") / "avp-c-testee"
    sources = sorted(str(p) for p in C_SOURCES.glob("*.c"))
    flags = ["-O2", "-std=c99", "-Wall", "-Werror", "-ffp-contract=off"]  # as its Makefile
    subprocess.run([cc, *flags, "-o", str(out), *sources, "-lm"],
                   check=True, capture_output=True, text=True)
    return out
