"""Hostile inputs that declare huge sizes are refused before allocation (issue 7, part 3).

Each case of _hostile.py is a tiny input (at most a few hundred KiB) that declares gigabytes or
billions of things: section lengths, entry / layer / tensor counts, ranks, tensor lengths, a
shape whose product overflows, zstd frames that inflate to 1-4 GiB, thousands of entries, and
an incremental decoder fed only a header announcing a huge section. Peak memory is measured two
ways: tracemalloc in this process (Python allocations) and ru_maxrss of a subprocess (native
allocations too: zstd, numpy). Both must stay within a small bound that does not depend on the
declared size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

import avp_codec as avp

from . import _hostile

CASES = {c.name: c for c in _hostile.cases()}
SMALL = 256 << 10  # what a rejection may cost beyond copies of its own input


def _peak(fn: Callable[[], object]) -> tuple[object, int]:
    """(result, peak Python bytes allocated while fn ran)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_refused_with_bounded_python_memory(name: str) -> None:
    case = CASES[name]
    data = case.make()
    case.make = lambda: data  # build outside the measurement
    got, peak = _peak(lambda: _hostile.run(case))
    want = case.expect if isinstance(case.expect, str) else case.expect
    assert got == want, f"{name}: {got}"
    # A decoder may copy (parts of) its input, never anything proportional to a declared size.
    bound = SMALL + 3 * len(data)
    assert peak <= bound, f"{name}: peak {peak} B for a {len(data)} B input"
    if case.declared >= 1 << 30:
        assert peak * 1000 < case.declared


@pytest.mark.parametrize("declared", [1 << 20, 1 << 30, 1 << 40, (1 << 62)])
def test_peak_does_not_grow_with_the_declared_header_length(declared: int) -> None:
    head = _hostile._head(1, declared)
    got, peak = _peak(lambda: _hostile.run(_hostile.Case("h", lambda: head, "")))
    assert got == (avp.ErrorCode.LIMIT_HEADER if declared > 16 << 20 else
                   avp.ErrorCode.TRUNCATED)
    assert peak < 16 << 10


@pytest.mark.parametrize("inflates_to", [1 << 20, 64 << 20, 1 << 30, 4 << 30])
def test_zstd_bomb_costs_raw_length_not_frame_output(inflates_to: int) -> None:
    """A frame (RLE blocks, no content size) that inflates to 1 MiB .. 4 GiB in a tensor whose
    raw_length is 4 KiB: DECOMPRESSED_SIZE, having held at most raw_length + 1 bytes of output."""
    data = _hostile._bomb(inflates_to)
    assert len(data) < inflates_to // 4000 + 1024  # the frame really is tiny
    got, peak = _peak(lambda: _hostile.run(_hostile.Case("b", lambda: data, "")))
    assert got == avp.ErrorCode.DECOMPRESSED_SIZE
    assert peak < 4096 + SMALL + 2 * len(data)


def test_zstd_within_raw_length_is_bounded_by_raw_length() -> None:
    """The same bomb in a 1 MiB tensor: output is bounded by raw_length (1 MiB), not 1 GiB."""
    frame = _hostile.rle_frame(1 << 30)
    tensor = _hostile._key((1, 1, 2, 1 << 18), frame, codec=1)
    data = _hostile.build(_hostile._kv([tensor])).data
    got, peak = _peak(lambda: _hostile.run(_hostile.Case("b", lambda: data, "")))
    assert got == avp.ErrorCode.DECOMPRESSED_SIZE
    assert peak < 3 * (1 << 20) + SMALL


def test_native_peak_rss_stays_flat(tmp_path: Path) -> None:
    """Every case in one subprocess (smallest input first): peak RSS growth is measured with
    ru_maxrss, which sees zstd's and numpy's native buffers that tracemalloc does not."""
    paths = []
    for i, case in enumerate(sorted(CASES.values(), key=lambda c: len(c.make()))):
        p = tmp_path / f"{i:03d}.case"
        p.write_bytes(case.name.encode() + b"\n" + case.make())
        paths.append(str(p))
    proc = subprocess.run([sys.executable, str(Path(_hostile.__file__)), *paths],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(CASES)
    for row in rows:
        case = CASES[row["name"]]
        want = case.expect if isinstance(case.expect, str) else case.expect.name
        assert row["result"] == want, row
        if row["input_bytes"] < 1 << 20:
            # Tiny inputs declaring up to 2^64 bytes: no measurable growth (16 MiB of slack
            # for allocator noise is still 1/64 of the smallest declared gigabyte).
            assert row["rss_growth_kib"] < 16 << 10, row
    # The one large input (4 MiB of valid entries) may cost a few copies of itself.
    assert max(r["rss_above_start_kib"] for r in rows) < 48 << 10, rows


def test_stream_decoder_refuses_a_huge_section_before_buffering() -> None:
    """Fed only a TENSOR descriptor announcing 16 GiB, the Decoder answers LIMIT_BUFFER at once;
    fed a 15 MiB skippable section's head, it waits holding only what it was given."""
    head = _hostile._stream_tensor(1 << 34)
    dec = avp.Decoder(limits=avp.Limits(max_tensor_bytes=1 << 34))
    dec.feed(head)
    assert isinstance(dec.next_event(), avp.HeaderEvent)
    with pytest.raises(avp.AvpError) as ei:
        dec.next_event()
    assert ei.value.code == avp.ErrorCode.LIMIT_BUFFER
    # The error sticks: feeding more cannot resurrect the stream.
    with pytest.raises(avp.AvpError):
        dec.feed(b"\0" * 64)

    dec = avp.Decoder()
    dec.feed(_hostile._head(0x8001, 15 << 20, 1))
    _, peak = _peak(lambda: [dec.next_event() for _ in range(3)])
    assert peak < 64 << 10
