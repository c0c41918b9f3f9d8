"""Files, mmap and messages larger than 4 GiB (u64 lengths and offsets end to end).

The > 4 GiB message is never in RAM: its tensor is a calloc'd numpy array (untouched zero pages
all map the kernel's one zero page), StreamEncoder writes the message into a sparse file (the
zero data chunk becomes a seek) and into a calloc'd buffer of the message's size (only the
non-zero structures are written, so it too stays unbacked). decode_file checks the file's
structure through mmap without touching the data; decode verifies every CRC over the buffer.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

import avp_codec as avp
from avp_codec import Layer, LayerKind, Role, Tensor


class CountingSink:
    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes | memoryview) -> None:
        self.n += len(data)


class SparseSink:
    """Writes everything except the known all-zero data chunk, which it skips over."""

    def __init__(self, f: io.BufferedWriter, buf: np.ndarray, zero: memoryview) -> None:
        self.f, self.buf, self.zero, self.n = f, buf, zero, 0

    def write(self, data: bytes | memoryview) -> None:
        if isinstance(data, memoryview) and data.obj is self.zero.obj:
            self.f.seek(len(data), os.SEEK_CUR)
        else:
            self.f.write(data)
            self.buf[self.n:self.n + len(data)] = np.frombuffer(data, np.uint8)
        self.n += len(data)


def test_message_over_4_gib(tmp_path: Path) -> None:
    size = (1 << 32) + 4096 + 3
    big = np.zeros(size, np.uint8)
    t = Tensor.from_array(big, Role.SSM_STATE, ordinal=0)
    ids = Tensor.from_array(np.arange(6, dtype=np.int32).reshape(1, 6), Role.TOKEN_IDS,
                            layout=avp.Layout.BT)
    entries = avp.kv_cache_message(b"\x05" * 32, 6, [], []).entries
    layers = [Layer(7, LayerKind.RECURRENT, 0, 6)]

    def encode_into(sink: CountingSink | SparseSink) -> int:
        enc = avp.StreamEncoder(sink, avp.Kind.KV_CACHE, entries, layers, 2)
        enc.write_tensor(ids)
        enc.write_tensor(t)
        return enc.finish()

    total = encode_into(CountingSink())
    assert total > 1 << 32
    buf = np.zeros(total, np.uint8)
    path = tmp_path / "big.avp"
    with open(path, "wb") as f:
        assert encode_into(SparseSink(f, buf, t.stored)) == total
    assert path.stat().st_size == total
    assert path.stat().st_blocks * 512 < 1 << 24  # sparse: nothing like 4 GiB on disk

    m = avp.decode_file(path, verify=False)  # structure and section CRCs through the mmap
    assert m.tensors[1].stored_length == size and m.tensors[1].shape == (size,)
    assert m.tensors[0].array().tolist() == [[0, 1, 2, 3, 4, 5]]
    index_offset = int.from_bytes(buf[total - 16:total - 8].tobytes(), "little")
    assert index_offset > 1 << 32
    del m
    v = avp.decode(memoryview(buf))  # verified: data CRC over all 4 GiB
    assert v.tensors[1].data_crc == t.data_crc
    view = v.tensors[1].array()
    assert view.shape == (size,) and view[-1] == 0


def test_decode_file_is_zero_copy_mmap(tmp_path: Path) -> None:
    k = np.arange(2 * 4 * 8, dtype=np.float16).reshape(1, 2, 4, 8)
    b = avp.encode(avp.kv_cache_from_arrays(b"\x01" * 32, [k], [k]))
    p = tmp_path / "kv.avp"
    p.write_bytes(b)
    m = avp.decode_file(p)
    a = m.tensors[0].array()
    assert np.array_equal(a, k)
    assert isinstance(a.base, memoryview) or a.base is not None
    assert a.ctypes.data % 64 == 0  # mmap is page-aligned, data offsets are 64-aligned


def test_decode_views_share_the_input_buffer() -> None:
    k = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
    buf = bytearray(avp.encode(avp.kv_cache_from_arrays(b"\x01" * 32, [k], [k])))
    m = avp.decode(buf)
    a = m.tensors[0].array()
    off = bytes(buf).index(k.tobytes())
    buf[off] ^= 0xFF  # mutate the input: the decoded view sees it (no copy was made)
    assert a.view(np.uint8).reshape(-1)[0] == buf[off]


def test_encode_to_file_equals_encode(tmp_path: Path) -> None:
    k = np.ones((1, 2, 3, 4), np.float32)
    msg = avp.kv_cache_from_arrays(b"\x01" * 32, [k, k], [k, k])
    p = tmp_path / "x.avp"
    with open(p, "wb") as f:
        n = avp.encode_to(msg, f)
    assert p.read_bytes() == avp.encode(msg) and n == p.stat().st_size


def test_empty_file_is_truncated(tmp_path: Path) -> None:
    p = tmp_path / "empty.avp"
    p.write_bytes(b"")
    with pytest.raises(avp.AvpError) as ei:
        avp.decode_file(p)
    assert ei.value.code == avp.ErrorCode.TRUNCATED


def test_indexed_reader_reads_one_tensor(tmp_path: Path) -> None:
    ks = [np.full((1, 2, 3, 4), i, np.float16) for i in range(5)]
    msg = avp.kv_cache_from_arrays(b"\x01" * 32, ks, ks, codec=avp.Codec.ZSTD)
    p = tmp_path / "r.avp"
    p.write_bytes(avp.encode(msg))
    r = avp.IndexedReader.open(p)
    assert len(r) == 10 and r.header.kind == avp.Kind.KV_CACHE
    assert np.array_equal(r.tensor(7).array(), ks[3])  # tensor 7 = layer 3's VALUE
    with pytest.raises(IndexError):
        r.tensor(10)


def test_indexed_reader_checks_what_it_reads() -> None:
    k = np.ones((1, 1, 2, 2), np.float32)
    b = bytearray(avp.encode(avp.kv_cache_from_arrays(b"\x01" * 32, [k, k], [k, k])))
    r = avp.IndexedReader(bytes(b))
    sec, data, _ = r.index[2]
    b[data] ^= 1  # corrupt tensor 2's data: reading tensor 0 still works, tensor 2 does not
    r = avp.IndexedReader(bytes(b))
    assert r.tensor(0).shape == (1, 1, 2, 2)
    with pytest.raises(avp.AvpError) as ei:
        r.tensor(2)
    assert ei.value.code == avp.ErrorCode.DATA_CHECKSUM
    # A cut trailer: the reader starts at the end (spec 11.3 step 1), in decode's vocabulary.
    with pytest.raises(avp.AvpError) as ei:
        avp.IndexedReader(bytes(b[:-1]))
    assert (ei.value.code, ei.value.offset, ei.value.path) == (
        avp.ErrorCode.BAD_TRAILER, len(b) - 9, "trailer.end_magic")
