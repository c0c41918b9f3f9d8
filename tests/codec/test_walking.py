"""Section walking is iterative in every reader (issue 14): any number of skippable sections, before
the HEADER or before the INDEX, decodes in linear time with constant stack (no RecursionError).

Each reader runs with the recursion limit a few dozen frames above the test's own depth, so a
walk that recursed even once per few sections would fail here.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import avp_codec as avp

from ..hardening import hostile_codec as H

N = 250_000  # "hundreds of thousands"


@contextmanager
def shallow_stack(headroom: int = 60) -> Iterator[None]:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + headroom)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _readers(tmp: Path, data: bytes, **kw: object) -> dict[str, Callable[[], object]]:
    path = tmp / "m.avp"
    path.write_bytes(data)

    def incremental(step: int) -> object:
        d = avp.Decoder(**kw)  # type: ignore[arg-type]
        end = None
        for i in range(0, len(data), step):
            d.feed(data[i:i + step])
            while (ev := d.next_event()) is not avp.NEED_DATA:
                end = ev if isinstance(ev, avp.EndEvent) else end
        return end

    def indexed() -> object:
        r = avp.IndexedReader(data)
        return [r.tensor(i) for i in range(len(r))]

    return {"decode": lambda: avp.decode(data, **kw),  # type: ignore[arg-type]
            "decode_file": lambda: avp.decode_file(path, **kw),  # type: ignore[arg-type]
            "Decoder": lambda: incremental(len(data)),
            "Decoder(64 KiB)": lambda: incremental(65536),
            "IndexedReader": indexed}


@pytest.mark.parametrize("where", ["before the HEADER", "before the INDEX"])
def test_hundreds_of_thousands_of_skippable_sections(tmp_path: Path, where: str) -> None:
    if where == "before the HEADER":
        data = H._text([(-1, *H.SKIP)] * N)
    else:
        data = H._kv(H._kv_pair(), extra=[(2, *H.SKIP)] * N)
    for name, read in _readers(tmp_path, data).items():
        with shallow_stack():
            got = read()
        if name.startswith("decode"):
            assert isinstance(got, avp.Message) and got.skipped_sections == N, name
        if name.startswith("Decoder"):
            assert isinstance(got, avp.EndEvent) and got.skipped_sections == N, name


def test_skippable_sections_before_an_authenticated_header(tmp_path: Path) -> None:
    """With keys held, the bytes before the HEADER are covered by the tag: kept once (incremental)
    or not at all (a complete buffer keeps them), and authenticated at the end."""
    data = H._authed_text(N)
    keys = {H.KEY_ID: H.KEY}
    for name, read in _readers(tmp_path, data, keys=keys).items():
        if name == "IndexedReader":
            continue  # it verifies no tag
        with shallow_stack():
            got = read()
        assert getattr(got, "authenticated", False), name
    bad = bytearray(data)
    bad[20] ^= 1  # inside the first skippable section: its CRC fails first
    with pytest.raises(avp.AvpError) as ei:
        avp.decode(bytes(bad), keys=keys)
    assert ei.value.code == avp.ErrorCode.SECTION_CHECKSUM and ei.value.offset == 16 + 16


def test_a_fault_after_the_sections_is_found_iteratively() -> None:
    """A critical unknown section after N skippable ones: UNKNOWN_CRITICAL at its offset."""
    data = H._text([(-1, *H.SKIP)] * N + [(-1, 0x8002, 0, b"")])
    with shallow_stack(), pytest.raises(avp.AvpError) as ei:
        avp.decode(data)
    assert (ei.value.code, ei.value.offset, ei.value.path) == (
        avp.ErrorCode.UNKNOWN_CRITICAL, 16 + 24 * N, "section.type")
    with shallow_stack(), pytest.raises(avp.AvpError) as ei2:
        avp.IndexedReader(data)
    assert (ei2.value.code, ei2.value.offset) == (ei.value.code, ei.value.offset)
