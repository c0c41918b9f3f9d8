"""The threads= knob changes speed only: the same bytes out of every encoder, the same message
or the same error out of every decoder, for any number of threads (issue 18 point 1)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import ml_dtypes
import numpy as np
import pytest

import avp_codec as avp
from avp_codec import _parallel

THREADS = [1, 2, 3, 8]


@pytest.fixture(autouse=True)
def _parallel_even_when_small(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Messages here are small: make every threaded path run anyway, in chunks that split tensors.
    monkeypatch.setattr(_parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(_parallel, "COPY_CHUNK", 1000)
    yield


def _message(layers: int = 5, tokens: int = 37) -> avp.Message:
    rng = np.random.default_rng(layers * 100 + tokens)
    mk = lambda: rng.standard_normal((1, 2, tokens, 24)).astype(  # noqa: E731
        ml_dtypes.bfloat16)
    keys = [mk() for _ in range(layers)]
    values = [mk() for _ in range(layers)]
    return avp.kv_cache_from_arrays(b"\x11" * 32, keys, values)


def test_encoders_write_the_same_bytes_for_any_thread_count() -> None:
    base = _message()
    want = avp.encode(base, threads=1)
    for n in THREADS:
        assert avp.encode(_message(), threads=n) == want
        buf = bytearray(b"\xee" * (len(want) + 50))  # stale bytes must all be overwritten
        assert avp.encode_into(_message(), buf, threads=n) == len(want)
        assert bytes(buf[:len(want)]) == want
        sink = io.BytesIO()
        avp.encode_to(_message(), sink, threads=n)
        assert sink.getvalue() == want
        assert avp.encoded_size(_message(), threads=n) == len(want)
        # Tensors that already carry their CRC (decoded ones) take the copy-only path.
        buf2 = bytearray(len(want))
        avp.encode_into(avp.decode(want), buf2, threads=n)
        assert bytes(buf2) == want


def test_encode_into_with_auth_is_the_same_for_any_thread_count() -> None:
    key = (b"k1", b"\x07" * 32)
    want = avp.encode(_message(), auth_key=key, threads=1)
    for n in THREADS:
        buf = bytearray(len(want))
        avp.encode_into(_message(), buf, auth_key=key, threads=n)
        assert bytes(buf) == want


def test_too_small_buffer_is_refused_for_any_thread_count() -> None:
    size = avp.encoded_size(_message())
    for n in THREADS:
        with pytest.raises(ValueError):
            avp.encode_into(_message(), bytearray(size - 100), threads=n)


def test_decoders_agree_for_any_thread_count() -> None:
    wire = avp.encode(_message(), threads=1)
    want = avp.decode(wire, threads=1)
    for n in THREADS:
        assert avp.decode(wire, threads=n) == want
        assert avp.decode(wire, threads=n, verify=False) == want


def _errors(wire: bytes) -> set[tuple[object, ...]]:
    seen = set()
    for n in THREADS:
        with pytest.raises(avp.AvpError) as e:
            avp.decode(wire, threads=n)
        seen.add((e.value.code, e.value.offset, e.value.path))
    return seen


def test_first_data_crc_failure_wins_for_any_thread_count() -> None:
    wire = bytearray(avp.encode(_message(), threads=1))
    msg = avp.decode(bytes(wire))
    offsets = [bytes(wire).find(t.stored.tobytes()) for t in msg.tensors]
    # Corrupt tensors 7 and 3: tensor 3 is reported, however the CRCs were shared out.
    for i in (7, 3):
        wire[offsets[i] + 5] ^= 0x40
    errs = _errors(bytes(wire))
    assert errs == {(avp.ErrorCode.DATA_CHECKSUM, offsets[3], "tensor[3].data")}


def test_data_crc_failure_comes_before_a_later_structural_error() -> None:
    wire = bytearray(avp.encode(_message(), threads=1))
    msg = avp.decode(bytes(wire))
    at = bytes(wire).find(msg.tensors[2].stored.tobytes())
    wire[at] ^= 1
    wire[-1] ^= 0xFF  # the trailer's end magic: found after every tensor
    errs = _errors(bytes(wire))
    assert errs == {(avp.ErrorCode.DATA_CHECKSUM, at, "tensor[2].data")}
    # Without the data fault, every thread count reports the trailer.
    wire[at] ^= 1
    assert {e[0] for e in _errors(bytes(wire))} == {avp.ErrorCode.BAD_TRAILER}


def test_threads_must_be_positive() -> None:
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError):
            avp.encode(_message(), threads=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            avp.decode(avp.encode(_message()), threads=bad)  # type: ignore[arg-type]


def test_default_is_the_affinity_mask() -> None:
    import os
    assert _parallel.default_threads() == len(os.sched_getaffinity(0))


def _compressed() -> avp.Message:
    msg = _message()
    codecs = [avp.Codec.ZSTD, avp.Codec.BYTEPLANE_ZSTD, avp.Codec.FLOATPLANE_ZSTD, avp.Codec.RAW]
    tensors = [avp.Tensor.from_array(t.array(), t.role, layer=t.layer, layout=t.layout,
                                     codec=codecs[i % 4]) for i, t in enumerate(msg.tensors)]
    return avp.Message(msg.kind, msg.entries, msg.layers, tensors)


def test_compressed_tensors_decode_the_same_for_any_thread_count() -> None:
    wire = avp.encode(_compressed(), threads=1)
    want = [t.array().tobytes() for t in avp.decode(wire, threads=1).tensors]
    for n in THREADS:
        for verify in (True, False):
            got = avp.decode(wire, threads=n, verify=verify)
            assert [t.array().tobytes() for t in got.tensors] == want
            assert avp.encode(got, threads=n) == wire


def test_first_decompression_failure_wins_for_any_thread_count() -> None:
    wire = bytearray(avp.encode(_compressed(), threads=1))
    msg = avp.decode(bytes(wire))
    at = [bytes(wire).find(t.stored.tobytes()) for t in msg.tensors]
    # Tensor 1 (byteplane) loses its frame magic, tensor 6 (floatplane) a data byte, and the
    # trailer is broken: for every thread count the decoder reports tensor 1 first.
    wire[at[1]] ^= 0xFF
    wire[at[6] + 10] ^= 0x10
    wire[-1] ^= 0xFF
    for verify in (True, False):
        seen = set()
        for n in THREADS:
            with pytest.raises(avp.AvpError) as e:
                avp.decode(bytes(wire), threads=n, verify=verify)
            seen.add((e.value.code, e.value.offset, e.value.path))
        code = avp.ErrorCode.DATA_CHECKSUM if verify else avp.ErrorCode.DECOMPRESSION_FAILED
        assert seen == {(code, at[1], "tensor[1].data")}


@pytest.mark.parametrize("codec", [avp.Codec.ZSTD, avp.Codec.BYTEPLANE_ZSTD,
                                   avp.Codec.FLOATPLANE_ZSTD])
def test_compress_message_is_the_same_for_any_thread_count(codec: avp.Codec) -> None:
    base = _message()
    want = avp.encode(avp.compress_message(base, codec, threads=1), threads=1)
    back = avp.decode(want)
    assert all(t.codec == codec for t in back.tensors if t.role in (avp.Role.KEY,
                                                                     avp.Role.VALUE))
    assert [t.array().tobytes() for t in back.tensors] == [
        t.array().tobytes() for t in base.tensors]
    for n in THREADS:
        assert avp.encode(avp.compress_message(_message(), codec, threads=n)) == want


def test_threads_work_in_a_forked_child() -> None:
    import os

    avp.encode(_message(), threads=2)  # the parent's pool exists now
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            ok = avp.encode(_message(), threads=2) == avp.encode(_message(), threads=1)
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
