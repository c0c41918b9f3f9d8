"""The compiled plane transforms (avp_codec._plane_kernels) write the same bytes as their numpy
twins, refuse the same hostile streams with the same errors, and the numpy path stays tested:
every test here runs twice, once with kernels and once with AVP_KERNELS=numpy (issue 18.2/3)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard

import avp_codec as avp
from avp_codec import _codecs, _floatplane, _jit, _parallel, _plane_kernels, _verify
from avp_codec._registry import Codec, Dtype, ErrorCode

VECTORS = Path(__file__).resolve().parents[2] / "conformance" / "vectors"
# Whether numba is installed, whatever AVP_KERNELS says for this process: the tests that compare
# the two paths switch the variable themselves.
HAVE_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba (the fast extra) absent")
FP = Codec.FLOATPLANE_ZSTD
FLOATS = {Dtype.BFLOAT16: 16, Dtype.FLOAT16: 16, Dtype.FLOAT32: 32}
UINT: dict[int, Any] = {16: np.uint16, 32: np.uint32}
# Odd shapes: T < 64 (one channel), T >= 64 with one or many channels, blocks that end inside a
# channel (T = 1001, 65537), channels that are not a multiple of 8, empty tensors, rank 1.
SHAPES = [(0,), (1,), (7,), (3, 5), (63, 9), (64, 1), (64, 3), (1, 2, 70, 3), (2, 3, 1001, 67),
          (65537, 1), (1, 130, 5), (0, 64, 4), (2, 0, 8), (2, 64, 0), (70001,)]


@pytest.fixture(params=["kernels", "numpy"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test on the compiled kernels and again on the numpy twins."""
    if request.param == "kernels":
        if not HAVE_NUMBA:
            pytest.skip("numba (the fast extra) absent")
        monkeypatch.delenv(_jit.ENV, raising=False)
    else:
        monkeypatch.setenv(_jit.ENV, "numpy")
    yield str(request.param)


def _with(mode: str, fn: Callable[[], Any]) -> Any:
    """fn() with kernels on ("kernels") or off ("numpy"), whatever the environment says."""
    mp = pytest.MonkeyPatch()
    try:
        if mode == "numpy":
            mp.setenv(_jit.ENV, "numpy")
        else:
            mp.delenv(_jit.ENV, raising=False)
        return fn()
    finally:
        mp.undo()


def _bits(dtype: Dtype, shape: tuple[int, ...], kind: str, seed: int) -> bytes:
    """Adversarial element bits: NaN payloads, +-0, +-inf, subnormals, one-sided signs,
    constant channels and plain random bits, mixed."""
    w = FLOATS[dtype]
    n = int(np.prod(shape, dtype=np.int64))
    rng = np.random.default_rng(seed)
    u = UINT[w]
    if kind == "random":
        x = rng.integers(0, 1 << w, n, dtype=np.uint64).astype(u)
    elif kind == "normal":
        f = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 50.0], n)).astype(np.float32)
        x = (f.view(np.uint32) >> 16).astype(u) if dtype == Dtype.BFLOAT16 else (
            f.astype(np.float16).view(u) if dtype == Dtype.FLOAT16 else f.view(u))
    else:  # specials
        e_bits, m_bits = _floatplane.FORMATS[dtype][1:]
        top = (1 << e_bits) - 1
        pool = [0, 1 << (w - 1), top << m_bits, (top << m_bits) | 1,  # 0, -0, inf, NaN payload
                (1 << (w - 1)) | (top << m_bits) | ((1 << m_bits) - 1),  # -NaN, all payload bits
                1, (1 << m_bits) - 1, (1 << (w - 1)) | 1]  # subnormals
        x = np.array(pool, u)[rng.integers(0, len(pool), n)]
        if n > 2:
            x[: n // 2] = x[0]  # a constant run
    return x.tobytes()


CASES = [(dt, sh, kind) for dt in FLOATS for sh in SHAPES for kind in ("random", "normal",
                                                                      "specials")
         if int(np.prod(sh, dtype=np.int64)) < 200_000 or kind == "normal"]


@needs_numba
@pytest.mark.parametrize(("dtype", "shape", "kind"), CASES)
def test_floatplane_kernels_write_the_numpy_bytes(dtype: Dtype, shape: tuple[int, ...],
                                                  kind: str) -> None:
    raw = _bits(dtype, shape, kind, seed=len(shape) * 7 + sum(shape))
    want = _with("numpy", lambda: _codecs.compress(raw, FP, dtype, shape))
    got = _with("kernels", lambda: _codecs.compress(raw, FP, dtype, shape))
    assert got == want
    # Both decoders rebuild the raw bytes from either path's frame.
    for mode in ("kernels", "numpy"):
        back = _with(mode, lambda: _codecs.decompress(memoryview(got), FP, len(raw), dtype,
                                                      shape))
        assert bytes(back) == raw, mode


@needs_numba
@pytest.mark.parametrize("dtype", list(FLOATS))
def test_stream_pieces_are_identical(dtype: Dtype) -> None:
    """The pieces given to zstd (and so its block boundaries) match one by one."""
    shape = (2, 3, 1001, 67)
    x = np.frombuffer(_bits(dtype, shape, "normal", 5), UINT[FLOATS[dtype]])
    a = [bytes(p) for p in _floatplane._streams_numpy(x, dtype, shape)]
    b = _with("kernels", lambda: [bytes(p) for p in _floatplane._streams_kernel(x, dtype, shape)])
    assert a == b


def _stream(dtype: Dtype, shape: tuple[int, ...], mutate: Callable[[bytearray, int], None]
            ) -> bytes:
    """A frame whose content P was built by the numpy path and then altered."""
    raw = _bits(dtype, shape, "normal", 11)
    frame = _with("numpy", lambda: _codecs.compress(raw, FP, dtype, shape))
    p = bytearray(zstandard.ZstdDecompressor().decompress(frame))
    a, d, t = _floatplane.geometry(shape)
    mutate(p, a * d + (a * d + 7) // 8)
    return zstandard.ZstdCompressor(level=3).compress(bytes(p))


def _block2(side: int) -> int:
    """Offset in P of the second block of a bfloat16 tensor (one mantissa plane)."""
    return side + _floatplane.BLOCK * 2 + _floatplane.BLOCK // 8


def _set_or(off: int, value: int) -> Callable[[bytearray, int], None]:
    def f(p: bytearray, side: int) -> None:
        p[side + off] |= value
    return f


HOSTILE: list[tuple[str, Dtype, tuple[int, ...], Callable[[bytearray, int], None], str]] = [
    ("exponent", Dtype.FLOAT16, (1, 1000, 70), _set_or(5, 0x20), "exponent symbol"),
    ("exponent-last-block", Dtype.FLOAT16, (1, 1000, 70),
     lambda p, side: p.__setitem__(len(p) - 1 - 2 * 4464 - 558, 0x80), "exponent symbol"),
    ("sign-padding", Dtype.BFLOAT16, (1, 1001, 67),  # 67067 elements: a 1531-element tail
     lambda p, side: p.__setitem__(_block2(side) + 1531 + 191, 0x80), "padding"),
    ("mantissa-top-bf16", Dtype.BFLOAT16, (1, 1000, 70),
     lambda p, side: p.__setitem__(side + 65536 + 8192 + 17, 0x80), "above the mantissa"),
    ("mantissa-top-f16", Dtype.FLOAT16, (3, 100),
     lambda p, side: p.__setitem__(side + 300 + 38 + 300 + 4, 0x04), "above the mantissa"),
    ("mantissa-top-f32", Dtype.FLOAT32, (70, 3),
     lambda p, side: p.__setitem__(len(p) - 1, 0x80), "above the mantissa"),
    ("anchor", Dtype.FLOAT16, (1, 100, 4), lambda p, side: p.__setitem__(2, 0x20), "anchor"),
    ("flip-padding", Dtype.FLOAT16, (1, 100, 4),
     lambda p, side: p.__setitem__(4, 0x80), "padding bits after the flip"),
]


@pytest.mark.parametrize(("name", "dtype", "shape", "mutate", "words"), HOSTILE,
                         ids=[h[0] for h in HOSTILE])
def test_hostile_streams_are_refused_alike(path: str, name: str, dtype: Dtype,
                                           shape: tuple[int, ...],
                                           mutate: Callable[[bytearray, int], None],
                                           words: str) -> None:
    stored = _stream(dtype, shape, mutate)
    raw_length = int(np.prod(shape)) * FLOATS[dtype] // 8
    errors = []
    for fn in (lambda: _codecs.decompress(memoryview(stored), FP, raw_length, dtype, shape,
                                          "t"),
               lambda: _verify.verify(memoryview(stored), FP, raw_length, dtype, shape, "t")):
        with pytest.raises(avp.AvpError) as ei:
            fn()
        assert ei.value.code == ErrorCode.DECOMPRESSION_FAILED
        assert words in str(ei.value)
        errors.append(str(ei.value))
    other = "numpy" if path == "kernels" else "kernels"
    if other == "kernels" and not HAVE_NUMBA:
        return
    with pytest.raises(avp.AvpError) as ei:
        _with(other, lambda: _codecs.decompress(memoryview(stored), FP, raw_length, dtype,
                                                shape, "t"))
    assert str(ei.value) == errors[0]  # the same message, whichever path


def _kv(tokens: int = 300, layers: int = 4) -> avp.Message:
    import ml_dtypes

    rng = np.random.default_rng(tokens)
    mk = lambda: (rng.standard_normal((1, 3, tokens, 64)) * 3).astype(  # noqa: E731
        ml_dtypes.bfloat16)
    return avp.kv_cache_from_arrays(b"\x11" * 32, [mk() for _ in range(layers)],
                                    [mk() for _ in range(layers)])


@pytest.mark.parametrize("codec", [Codec.FLOATPLANE_ZSTD, Codec.BYTEPLANE_ZSTD, Codec.ZSTD])
def test_thread_counts_write_the_same_bytes(path: str, codec: Codec,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel, "MIN_PARALLEL_BYTES", 0)
    base = _kv()
    wires = {n: avp.encode(avp.compress_message(base, codec, threads=n)) for n in (1, 2, 3)}
    assert wires[1] == wires[2] == wires[3]
    for n in (1, 2, 3):
        back = avp.decode(wires[1], threads=n)
        assert [t.array().tobytes() for t in back.tensors] == [
            t.array().tobytes() for t in base.tensors]


def _floatplane_cases() -> list[dict[str, Any]]:
    cases = json.loads((VECTORS / "manifest.json").read_text())["cases"]
    return [c for c in cases if "floatplane_zstd" in c.get("requires", {}).get("codecs", [])]


def _outcome(data: bytes) -> Any:
    try:
        msg = avp.decode(data)
        return [(t.codec, bytes(t.raw_bytes())) for t in msg.tensors]
    except avp.AvpError as e:
        return (e.code, str(e))


@needs_numba
def test_conformance_vectors_decode_alike_on_both_paths() -> None:
    cases = _floatplane_cases()
    assert len(cases) >= 10
    for case in cases:
        data = (VECTORS / case["file"]).read_bytes()
        a = _with("numpy", lambda d=data: _outcome(d))
        b = _with("kernels", lambda d=data: _outcome(d))
        assert a == b, case["id"]
        if not isinstance(a, tuple):  # re-encoding the raw tensors: both paths, same frames
            for t in avp.decode(data).tensors:
                if t.codec == FP:
                    args = (bytes(t.raw_bytes()), FP, t.dtype, t.shape)
                    assert _with("numpy", lambda x=args: _codecs.compress(*x)) == _with(
                        "kernels", lambda x=args: _codecs.compress(*x))


def test_kernels_module_constants_match_the_codec() -> None:
    assert _plane_kernels.BLOCK == _floatplane.BLOCK
