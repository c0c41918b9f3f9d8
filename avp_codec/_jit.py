"""Optional compiled kernels: numba, when installed (the ``fast`` extra), loaded on first use.

A kernel is a plain Python function over numpy arrays and scalars, written so that numba
compiles it to a loop the CPU can vectorise. Every kernel has a numpy twin elsewhere in the
codec that produces the same bytes; the compiled one only makes them faster. So the codec's
output never depends on whether numba is present, and the tests run both paths
(``AVP_KERNELS=numpy`` selects the numpy twin for a whole process).

Kernels are compiled ``nogil=True`` and never ``parallel=True``: threads come from
``_parallel``'s pool, which hands each thread its own segment. That keeps the ``threads=`` knob
meaning the same thing on every path, and it keeps concurrent callers (an HTTP server encoding
two messages at once) away from numba's default threading layer, which does not allow two
threads to launch parallel regions at the same time.

``fastmath`` stays off: reassociation or reciprocal division would change codes and break the
byte identity with the numpy twin (and the spec's reference arithmetic, section 12.4).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import Any

ENV = "AVP_KERNELS"  # "numpy": never use compiled kernels in this process
_lock = threading.Lock()
_numba: Any = None
_tried = False


def _load_numba() -> Any:
    global _numba, _tried
    if not _tried:
        with _lock:
            if not _tried:
                mod: Any
                try:
                    mod = importlib.import_module("numba")
                except ImportError:  # the ``fast`` extra is not installed
                    mod = None
                _numba, _tried = mod, True
    return _numba


def available() -> bool:
    """True when compiled kernels will be used: numba imports and ``AVP_KERNELS`` allows it."""
    if os.environ.get(ENV, "").strip().lower() == "numpy":
        return False
    return _load_numba() is not None


class Kernel:
    """A function compiled by numba on its first use, or None from ``get`` when unavailable."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.py = fn  # the uncompiled function (tests may call it for small inputs)
        self._compiled: Any = None
        self._klock = threading.Lock()

    def get(self) -> Callable[..., Any] | None:
        if not available():
            return None
        if self._compiled is None:
            with self._klock:
                if self._compiled is None:
                    nb = _load_numba()
                    self._compiled = nb.njit(nogil=True, cache=True, fastmath=False,
                                             error_model="numpy")(self.py)
        compiled: Callable[..., Any] = self._compiled
        return compiled


def kernel(fn: Callable[..., Any]) -> Kernel:
    """Decorator: ``@kernel`` over a numba-compilable function gives a lazily compiled Kernel."""
    return Kernel(fn)
