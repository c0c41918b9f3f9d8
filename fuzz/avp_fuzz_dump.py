"""Coverage-guided fuzz target for avp-dump (issue 14): every view on mutated messages.

    python fuzz/avp_fuzz_dump.py -runs=100000 fuzz/corpus/dump
    python fuzz/avp_fuzz_dump.py -max_total_time=300 fuzz/corpus/dump

Each input runs as given and "repaired" (every CRC recomputed by avp_fuzz.repair, so mutations
reach the rules behind the checksums). The only exception allowed out of avp_tools is none at
all: the walker never raises on bad input. Oracles (a broken one is a finding):

- the walk with data verification gives exactly ``avp_codec.decode``'s verdict: the same first
  ``(code, offset, path)``, valid exactly when decode accepts (issue 19.4);
- the byte map covers the input exactly once; --map, --hex and --explain report the walk's
  issues; the summary renders; ``diff`` of the input against its repaired form runs;
- ``--stats`` runs on every valid input whose tensors hold at most 2^20 elements in all (the
  statistics of a 16 GiB declared tensor are linear but not for a fuzzer's time budget).

``run_inprocess`` in avp_fuzz drives the same target without atheris
(tests/tools/test_dump_fuzz_short.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

if __name__ == "__main__":  # instrument the code under test before anything imports it
    import atheris
    import crc32c  # noqa: F401  (numpy, zstandard ... stay uninstrumented, as in fuzz/run.py)
    import ml_dtypes  # noqa: F401
    import numpy  # noqa: F401
    import zstandard  # noqa: F401

    # numba compiles the kernels from their bytecode: keep atheris' coverage calls out of it.
    KERNEL_MODULES = ["avp_codec._jit", "avp_codec._copy_kernels", "avp_codec._plane_kernels",
                      "avp_codec._quant_kernels"]
    with atheris.instrument_imports(include=["avp_codec", "avp_tools"],
                                    exclude=KERNEL_MODULES):
        import avp_tools._data  # noqa: F401
        import avp_tools._diff  # noqa: F401
        import avp_tools._stats  # noqa: F401
        import avp_tools.dump_cli  # noqa: F401

        import avp_codec  # noqa: F401

from avp_tools import _bytemap, _diff, _render, _stats, walk  # noqa: E402
from avp_tools._model import Span  # noqa: E402

import avp_codec as avp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from avp_fuzz import Finding, variants  # noqa: E402

_STATS_ELEMENTS = 1 << 20


def _decode(buf: bytes) -> tuple[int, int | None, str] | None:
    try:
        avp.decode(buf)
    except avp.AvpError as exc:
        return int(exc.code), exc.offset, exc.path
    return None


def _check(buf: bytes) -> None:
    w = walk(buf, verify_data=True)
    first = w.first
    got = None if first is None else (first.code, first.offset, first.path)
    ref = _decode(buf)
    if got != ref:
        raise Finding(f"walker says {got}, decode says {ref}")
    if w.valid != (ref is None):
        raise Finding(f"walker valid={w.valid}, decode says {ref}")
    covered = 0
    pos = 0

    def cover(s: Span) -> None:
        nonlocal covered, pos
        if s.start != pos:
            raise Finding(f"byte map jumps from {pos} to {s.start}")
        pos = s.end
        covered += s.end - s.start

    cov = _bytemap.Cover(len(buf), cover)
    quiet = walk(buf, sink=cov)
    cov.close()
    if covered != len(buf):
        raise Finding(f"byte map covers {covered} of {len(buf)} bytes")
    lines: list[str] = []
    if _bytemap.byte_map(buf, lines.append).issues != quiet.issues:
        raise Finding("--map and the walk disagree")
    lines.clear()
    _bytemap.hexdump(buf, lines.append, 16)
    lines.clear()
    if buf:
        _bytemap.explain(buf, len(buf) // 2)
    list(_render.summary(w, "fuzz"))
    if w.valid:
        sizes = [_stats.elements_of(t.shape) for t in w.tensors]
        if sum(sizes) <= _STATS_ELEMENTS:
            list(_stats.stats_rows(buf, w, list(range(len(sizes)))))


def target_dump(data: bytes) -> None:
    seen = list(variants(data))
    for buf in seen:
        _check(buf)
    if len(seen) == 2:
        a, b = seen
        _diff.diff(a, b, walk(a, verify_data=True), walk(b, verify_data=True))


TARGETS: dict[str, Callable[[bytes], None]] = {"dump": target_dump}


if __name__ == "__main__":
    atheris.Setup(sys.argv, target_dump)
    atheris.Fuzz()
