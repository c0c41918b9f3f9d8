"""Decompression writes straight into one raw_length buffer (R-7.8, issue 14): a small frame that
expands to N bytes costs N plus a constant, never a second copy of N."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import zstandard

import avp_codec as avp
from avp_codec import _codecs

N = 32 << 20  # raw bytes of the bomb
SLACK = 4 << 20  # the constant: chunk buffers, one block's numpy temporaries


def _peak(fn: object) -> int:
    tracemalloc.start()
    try:
        fn()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("codec", [avp.Codec.ZSTD, avp.Codec.BYTEPLANE_ZSTD,
                                   avp.Codec.FLOATPLANE_ZSTD])
def test_bomb_costs_raw_length_once(codec: avp.Codec) -> None:
    shape = (1, 4, N // 2 // 4 // 64, 64)
    raw = np.zeros(shape, np.float16)
    stored = _codecs.compress(raw.data.cast("B"), codec, avp.Dtype.FLOAT16, shape)
    assert len(stored) < N // 500  # a bomb: tiny frame, large output
    del raw
    # Compile the plane kernels (numba, when present) first: compiling is not decompressing.
    small = (1, 64, 8)
    _codecs.decompress(memoryview(_codecs.compress(bytes(1024), codec, avp.Dtype.FLOAT16, small)),
                       codec, 1024, avp.Dtype.FLOAT16, small)
    out: list[memoryview] = []
    peak = _peak(lambda: out.append(_codecs.decompress(
        memoryview(stored), codec, N, avp.Dtype.FLOAT16, shape)))
    assert bytes(out[0][:16]) == bytes(16) and len(out[0]) == N
    assert peak < N + SLACK, f"{codec.name}: peak {peak / 2**20:.1f} MiB for {N >> 20} MiB"


def test_frame_longer_than_raw_length_stops_at_raw_length_plus_one() -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(N))

    def run() -> None:
        with pytest.raises(avp.AvpError) as e:
            _codecs.decompress(memoryview(frame), avp.Codec.ZSTD, 1 << 20, avp.Dtype.UINT8,
                               (1 << 20,))
        assert e.value.code == avp.ErrorCode.DECOMPRESSED_SIZE

    peak = _peak(run)
    assert peak < (1 << 20) + SLACK
