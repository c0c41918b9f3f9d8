"""Fixtures for the avp-dump tests: the spec-level message writer of ``avp_craft`` (independent
of avp_codec, so the tools can be tested on hand-crafted valid and deliberately broken bytes),
sample messages built with it, and a field patcher that re-seals the section CRC so a test
injects exactly one fault."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import crc32c
import numpy as np
import pytest

# importlib import mode: this folder is not on sys.path by itself
sys.path.insert(0, str(Path(__file__).resolve().parent))
from avp_craft import NO_REF, M, T, section, u64  # noqa: E402


def kv_message(layers: int = 2, tokens: int = 4, heads: int = 2, dim: int = 8,
               dtype: str = "float16", seed: int = 0) -> M:
    """A valid small KV_CACHE message: BHTD keys/values per layer plus TOKEN_IDS."""
    rng = np.random.default_rng(seed)
    codes = {"float32": 1, "float16": 2}
    m = M(kind=1, entries=[(1, 1, 5, bytes(range(32))), (3, 0, 4, b"tiny-test-model"),
                           (5, 1, 1, u64(tokens))])
    m.tensors.append(T(17, 12, (1, tokens), np.arange(tokens, dtype="<i8").tobytes(),
                       layout=4))
    for j in range(layers):
        m.layers.append((j, 1, 0, 0, tokens))
        for role in (1, 2):
            arr = rng.standard_normal((1, heads, tokens, dim)).astype(dtype)
            m.tensors.append(T(role, codes[dtype], arr.shape, arr.tobytes(), layer=j, layout=1))
    return m


def text_message(text: str = "hello") -> M:
    return M(kind=3, entries=[(32, 1, 4, text.encode())])


def reseal(buf: bytearray, section_offset: int) -> None:
    """Recompute the CRC of the section at ``section_offset`` after a patch."""
    length = struct.unpack_from("<Q", buf, section_offset + 8)[0]
    end = section_offset + 16 + length
    struct.pack_into("<I", buf, end, crc32c.crc32c(bytes(buf[section_offset:end])))


def patch(data: bytes, path: str, value: int | bytes, *, seal: bool = True) -> bytes:
    """Overwrite the field named ``path`` (as avp-dump --map names it) and re-seal its section."""
    from avp_tools import walk

    w = walk(data, record_spans=True)
    assert w.spans is not None
    span = next(s for s in w.spans if s.path == path)
    buf = bytearray(data)
    size = span.end - span.start
    raw = value if isinstance(value, bytes) else value.to_bytes(size, "little")
    buf[span.start:span.start + len(raw)] = raw
    if seal:
        starts = {"header": w.header_offset, "index": w.index.offset if w.index else None}
        sec = span.section
        if sec.startswith("tensor["):
            starts[sec] = w.tensors[int(sec[7:-1])].section_offset
        if starts.get(sec) is not None:
            reseal(buf, starts[sec])  # type: ignore[arg-type]
    return bytes(buf)


def codec_samples() -> dict[str, bytes]:
    """Deterministic messages encoded by the reference codec, one per interesting feature."""
    import avp_codec as avp
    from avp_codec import quant

    rng = np.random.default_rng(7)
    mid = bytes(range(32))
    keys = [rng.standard_normal((1, 2, 6, 8)).astype(np.float16) for _ in range(2)]
    vals = [rng.standard_normal((1, 2, 6, 8)).astype(np.float16) for _ in range(2)]
    tok = np.arange(6, dtype=np.int64).reshape(1, 6)
    kv = avp.kv_cache_from_arrays(mid, keys, vals, token_ids=tok, model_name="tiny")
    import ml_dtypes

    bf = [k.astype(ml_dtypes.bfloat16) for k in keys]
    bfv = [v.astype(ml_dtypes.bfloat16) for v in vals]
    zst = avp.kv_cache_from_arrays(mid, bf, bfv, codec=avp.Codec.BYTEPLANE_ZSTD,
                                   producer="avp-dump tests")
    f32 = [k.astype(np.float32) for k in keys]
    f32v = [v.astype(np.float32) for v in vals]
    q4 = quant.quantize_message(avp.kv_cache_from_arrays(mid, f32, f32v), quant.preset("int4"))
    hidden = avp.hidden_state_message(mid, rng.standard_normal((1, 3, 16)).astype(np.float32))
    return {
        "kv_f16": avp.encode(kv),
        "kv_bf16_byteplane": avp.encode(zst),
        "kv_int4": avp.encode(q4),
        "hidden": avp.encode(hidden),
        "text": avp.encode(avp.text_message("hello, agent", role="assistant")),
        "hello": avp.encode(avp.hello_message("agent-a", nonce=bytes(range(16)))),
    }


_SAMPLES: dict[str, bytes] = {}


@pytest.fixture(scope="session")
def samples() -> dict[str, bytes]:
    if not _SAMPLES:
        _SAMPLES.update(codec_samples())
    return _SAMPLES


@pytest.fixture
def craft() -> Any:
    return SimpleNamespace(M=M, T=T, kv_message=kv_message, text_message=text_message,
                           patch=patch, reseal=reseal, section=section, u64=u64, NO_REF=NO_REF)
