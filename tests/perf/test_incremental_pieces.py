"""The incremental decoder keeps fed pieces as they came (one copy per byte): results do not
depend on how the bytes are cut or what type they come in, a caller may reuse its buffer after
feed(), and a peer that sends one byte at a time costs no object per byte."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import avp_codec as avp

MSG = avp.kv_cache_from_arrays(
    b"\x01" * 32, [np.arange(2 * 300 * 64, dtype=np.float32).reshape(1, 2, 300, 64)],
    [np.full((1, 2, 300, 64), 0.5, np.float32)], token_ids=np.array([list(range(300))]))
DATA = avp.encode(MSG)


def _events(feeds: list[bytes | bytearray | memoryview], reuse: bool = False) -> list[avp.Event]:
    dec = avp.Decoder()
    out: list[avp.Event] = []
    for piece in feeds:
        dec.feed(piece)
        if reuse and not isinstance(piece, bytes):  # the caller overwrites its buffer
            memoryview(piece).cast("B")[:] = b"\xee" * memoryview(piece).nbytes
        while (ev := dec.next_event()) is not avp.NEED_DATA:
            out.append(ev)
    dec.end_of_input()
    return out


def _cut(step: int) -> list[bytes]:
    return [DATA[i:i + step] for i in range(0, len(DATA), step)]


@pytest.mark.parametrize("step", [7, 1000, 65535, 65536, 70001, len(DATA)])
def test_any_cut_and_buffer_type_gives_the_same_tensors(step: int) -> None:
    want = [bytes(t.stored) for t in MSG.tensors]
    cuts = _cut(step)
    for feeds, reuse in ((cuts, False), ([bytearray(c) for c in cuts], True),
                         ([memoryview(bytearray(c)) for c in cuts], True)):
        evs = _events(list(feeds), reuse)
        got = [bytes(e.tensor.stored) for e in evs if isinstance(e, avp.TensorEvent)]
        assert got == want
        assert isinstance(evs[-1], avp.EndEvent)
    if step % 4 == 0:  # a non-byte memoryview format counts bytes, not elements
        evs = _events([memoryview(bytearray(c)).cast("I") for c in cuts])
        assert [bytes(e.tensor.stored) for e in evs if isinstance(e, avp.TensorEvent)] == want


def test_one_byte_at_a_time_is_bounded() -> None:
    dec = avp.Decoder()
    tracemalloc.start()
    try:
        for i in range(len(DATA)):  # nothing consumed: everything stays buffered
            dec.feed(DATA[i:i + 1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(DATA) + (64 << 10), peak  # about the bytes themselves, no per-byte object
    evs = []
    while (ev := dec.next_event()) is not avp.NEED_DATA:
        evs.append(ev)
    assert isinstance(evs[-1], avp.EndEvent) and len(evs) == 2 + len(MSG.tensors)
