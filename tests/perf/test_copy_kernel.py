"""The compiled copy+CRC32C kernel (``_copy_kernels``) and its numpy twin (``_parallel``) give
the same bytes and the same CRC on adversarial inputs, and every encoder writes the same message
through either (issue 18.1). The numpy twin stays tested: each encoder test runs with
``AVP_KERNELS=numpy`` too."""

from __future__ import annotations

from collections.abc import Iterator

import crc32c
import ml_dtypes
import numpy as np
import pytest

import avp_codec as avp
from avp_codec import _copy_kernels, _jit, _parallel

B = _copy_kernels.BLOCK
# Lengths around every boundary of the kernel's loops: words, three-stream blocks, the tail.
LENGTHS = sorted({0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 3 * B - 8, 3 * B - 1, 3 * B, 3 * B + 1,
                  3 * B + 7, 3 * B + 8, 6 * B, 6 * B + 5, 9 * B - 3, (1 << 20) + 13})


def _kernel() -> object:
    fn = _copy_kernels.get()
    if fn is None:
        pytest.skip("compiled kernels unavailable here (no numba, AVP_KERNELS=numpy or no "
                    "SSE4.2); the numpy twin is tested by the other tests")
    return fn


@pytest.fixture(params=["kernel", "numpy"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test through the compiled kernel (forced even for small copies) and through the
    numpy twin (``AVP_KERNELS=numpy``)."""
    if request.param == "numpy":
        monkeypatch.setenv(_jit.ENV, "numpy")
        assert _copy_kernels.get() is None
    else:
        _kernel()
        monkeypatch.setattr(_copy_kernels, "MIN_BYTES", 0)
    yield request.param


def _data(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "zeros":
        return np.zeros(n, np.uint8)
    if kind == "ones":
        return np.full(n, 0xFF, np.uint8)
    if kind == "pattern":
        return (np.arange(n) % 251).astype(np.uint8)
    return rng.integers(0, 256, n, dtype=np.uint8)


@pytest.mark.parametrize("kind", ["random", "zeros", "ones", "pattern"])
def test_kernel_matches_crc32c_and_numpy_twin(kind: str) -> None:
    fn = _kernel()
    rng = np.random.default_rng(18)
    for n in LENGTHS:
        for src_off, dst_off in ((0, 0), (1, 0), (0, 3), (5, 7)):  # unaligned both ways
            src = _data(kind, n + src_off, rng)[src_off:]
            init = int(rng.integers(0, 1 << 32))
            dst = np.full(n + dst_off + 9, 0xA5, np.uint8)
            got = fn(dst[dst_off:dst_off + n], src, init)  # type: ignore[operator]
            assert got == crc32c.crc32c(src, init), (kind, n, src_off, dst_off)
            assert bytes(dst[dst_off:dst_off + n]) == bytes(src)
            assert (dst[:dst_off] == 0xA5).all() and (dst[dst_off + n:] == 0xA5).all()
            twin = np.zeros(n, np.uint8)
            assert _parallel.copy_crc_numpy(twin, memoryview(src), init) == got
            assert bytes(twin) == bytes(src)


def test_kernel_reads_read_only_sources() -> None:
    fn = _kernel()
    raw = bytes(np.random.default_rng(1).integers(0, 256, 3 * B + 11, dtype=np.uint8))
    src = np.frombuffer(raw, np.uint8)  # read-only
    dst = np.zeros(len(raw), np.uint8)
    assert fn(dst, src, 0) == crc32c.crc32c(raw)  # type: ignore[operator]
    assert bytes(dst) == raw


def test_shift_table_is_appending_zero_bytes() -> None:
    rng = np.random.default_rng(2)
    for n in (1, 8, 100, B):
        table = _copy_kernels.shift_table(n)
        for _ in range(20):
            c = int(rng.integers(0, 1 << 32))
            via_table = 0
            for j in range(4):
                via_table ^= int(table[j, (c >> (8 * j)) & 0xFF])
            assert via_table == _copy_kernels._raw(c, bytes(n))


def test_copy_crc_dispatch_is_the_same_either_way(mode: str) -> None:
    rng = np.random.default_rng(3)
    for n in (0, 5, 3 * B + 3, 100_000):
        src = rng.integers(0, 256, n, dtype=np.uint8)
        dst = np.zeros(n, np.uint8)
        assert _parallel.copy_crc(dst, memoryview(src), 77) == crc32c.crc32c(src, 77)
        assert bytes(dst) == bytes(src)


def _message(layers: int = 4, tokens: int = 131) -> avp.Message:
    rng = np.random.default_rng(layers * 7 + tokens)
    mk = lambda: rng.standard_normal((1, 2, tokens, 40)).astype(  # noqa: E731
        ml_dtypes.bfloat16)
    return avp.kv_cache_from_arrays(b"\x22" * 32, [mk() for _ in range(layers)],
                                    [mk() for _ in range(layers)])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_encode_into_same_bytes_with_kernel_or_twin(mode: str, threads: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel, "MIN_PARALLEL_BYTES", 0)
    want = avp.encode(_message(), threads=1)
    for buf in (bytearray(b"\xee" * (len(want) + 64)),
                np.full(len(want) + 64, 0xEE, np.uint8)):
        assert avp.encode_into(_message(), buf, threads=threads) == len(want)
        assert bytes(memoryview(buf)[:len(want)]) == want
        assert bytes(memoryview(buf)[len(want):]) == b"\xee" * 64  # nothing past the end
    assert avp.decode(want).tensors[0].data_crc == crc32c.crc32c(_message().tensors[0].stored)


def test_too_small_buffer_is_refused_before_any_copy(mode: str) -> None:
    want = avp.encode(_message())
    buf = bytearray(len(want) - 1)
    with pytest.raises(ValueError, match="too small"):
        avp.encode_into(_message(), buf, threads=1)


def test_an_unusable_numba_leaves_the_numpy_twin_in_charge(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that cannot be compiled here (no cache locator, a broken llvmlite) or gives a
    wrong CRC in the self-test is never used: encoders fall back to the twin, same bytes."""
    want = avp.encode(_message())

    def broken() -> object:
        raise RuntimeError("cannot cache function: no locator available")

    for fake in (broken, lambda: (lambda dst, src, crc, table: 0)):
        monkeypatch.setattr(_copy_kernels, "_ready", None)
        monkeypatch.setattr(_copy_kernels, "_fn", None)
        monkeypatch.setattr(_copy_kernels._KERNEL, "get", fake)
        monkeypatch.setattr(_copy_kernels, "MIN_BYTES", 0)
        monkeypatch.delenv(_jit.ENV, raising=False)
        if _jit._load_numba() is not None:
            assert _copy_kernels.get() is None
        buf = bytearray(len(want))
        avp.encode_into(_message(), buf, threads=1)
        assert bytes(buf) == want
