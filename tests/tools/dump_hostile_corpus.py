"""The hostile corpus of avp-dump (issue 14): small files that are pathological for a reader.

Each case is a few KB to ~20 MB of bytes, built here deterministically (nothing is stored in the
repository), and aimed at one way a reader can go wrong: quadratic scans over many tensors,
metadata values whose decoded form is much larger than their bytes, decompression and
unpacking bombs, non-finite quantization parameters, empty tensors with huge dimensions, long
runs of skippable sections, broken files that yield many issues.

    cases(scale=1)          -> {name: Case}, every case
    build(name, scale=1)    -> bytes of one case
    python tests/tools/dump_hostile_corpus.py OUTDIR [--scale N]   writes NAME.avp files

``scale`` multiplies the size of every case whose cost grows with a count or a size (tensors,
layers, entries, list length, sections, declared bytes), so a test can check that the work grows
linearly (1x/4x/16x; fractions are allowed). Scale 16 gives the sizes of issue 14's report
(a 4.8 MB HIDDEN_STATE of 32000 tensors, 15 MB metadata values, a 2.5 KB uint2 message of 2^28
elements); scale 1 is what the test suite runs.
The module uses only numpy, zstandard and the spec-level writer in avp_craft.py (never
avp_codec), so the runtime's hostile runner can reuse it as is.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from avp_craft import (  # noqa: E402
    CODEC,
    DTYPE,
    KEY,
    KIND,
    LAYER_KIND,
    LAYOUT,
    NO_REF,
    ROLE,
    VTYPE,
    M,
    T,
    skippable,
    u64,
)

MODEL_ID = bytes(range(32))
NONCE = bytes(range(16))


@dataclass(frozen=True)
class Case:
    name: str
    klass: str  # the class of hostile input (issue 14 wording)
    build: Callable[[float], bytes]
    scales: bool  # whether ``scale`` grows it


def _f16(shape: tuple[int, ...], seed: int = 0) -> bytes:
    return np.random.default_rng(seed).standard_normal(shape).astype("<f2").tobytes()


def _hidden(tensors: list[T], *, entries: list[tuple[int, int, int, bytes]] | None = None) -> M:
    base = [(KEY["MODEL_ID"], 1, VTYPE["bytes"], MODEL_ID),
            (KEY["HIDDEN_SOURCE"], 1, VTYPE["u64"], u64(1))]
    return M(kind=KIND["HIDDEN_STATE"], entries=base + (entries or []), tensors=tensors)


def _hello(extra: list[tuple[int, int, int, bytes]] | None = None, *,
           versions: bytes = struct.pack("<I", 1 << 16)) -> M:
    entries = [(KEY["AGENT_NAME"], 1, VTYPE["utf8"], b"hostile"),
               (KEY["VERSIONS"], 1, VTYPE["u32_list"], versions),
               (KEY["CAP_DTYPES"], 1, VTYPE["u32_list"], struct.pack("<3I", 1, 2, 3)),
               (KEY["CAP_CODECS"], 1, VTYPE["u32_list"], struct.pack("<2I", 0, 1)),
               (KEY["CAP_MODES"], 1, VTYPE["u32_list"], struct.pack("<2I", 1, 2)),
               (KEY["MAX_MESSAGE_BYTES"], 1, VTYPE["u64"], u64(1 << 30)),
               (KEY["NONCE"], 0, VTYPE["bytes"], NONCE)]
    entries += extra or []
    return M(kind=KIND["HELLO"], entries=sorted(entries))


def _kv(layers: list[tuple[int, int, int, int, int]], tensors: list[T], context: int,
        extra: list[tuple[int, int, int, bytes]] | None = None) -> M:
    entries = [(KEY["MODEL_ID"], 1, VTYPE["bytes"], MODEL_ID),
               (KEY["CONTEXT_LENGTH"], 1, VTYPE["u64"], u64(context))] + (extra or [])
    return M(kind=KIND["KV_CACHE"], entries=sorted(entries), layers=layers, tensors=tensors)


def _zstd_zeros(n: int) -> bytes:
    """One zstd frame (content size set) of ``n`` zero bytes, built without holding them."""
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=True)
    chunk = bytes(1 << 20)
    out = bytearray()
    obj = cctx.compressobj(size=n)
    left = n
    while left:
        take = min(left, len(chunk))
        out += obj.compress(chunk[:take])
        left -= take
    out += obj.flush()
    return bytes(out)


# --------------------------------------------------------------------------------- the cases
def many_hidden_tensors(scale: float) -> bytes:
    """A HIDDEN_STATE message with thousands of small tensors (a quadratic scan costs seconds)."""
    n = max(2, int(2000 * scale))
    data = _f16((1, 1, 4))
    return _hidden([T(ROLE["HIDDEN_STATE"], DTYPE["float16"], (1, 1, 4), data,
                      layout=LAYOUT["BTD"]) for _ in range(n)]).build()


def many_hidden_tensors_last_bad(scale: float) -> bytes:
    """As many_hidden_tensors, with the last tensor's hidden size disagreeing (R-10.10)."""
    n = max(2, int(2000 * scale))
    data = _f16((1, 1, 4))
    ts = [T(ROLE["HIDDEN_STATE"], DTYPE["float16"], (1, 1, 4), data, layout=LAYOUT["BTD"])
          for _ in range(n - 1)]
    ts.append(T(ROLE["HIDDEN_STATE"], DTYPE["float16"], (1, 1, 2), _f16((1, 1, 2)),
                layout=LAYOUT["BTD"]))
    return _hidden(ts).build()


def hidden_two_token_ids(scale: float) -> bytes:
    """HIDDEN_STATE with two TOKEN_IDS tensors: decode and avp-dump must agree on it."""
    ids = np.arange(4, dtype="<i8").reshape(1, 4).tobytes()
    ts = [T(ROLE["TOKEN_IDS"], DTYPE["int64"], (1, 4), ids, layout=LAYOUT["BT"]),
          T(ROLE["TOKEN_IDS"], DTYPE["int64"], (1, 4), ids, layout=LAYOUT["BT"]),
          T(ROLE["HIDDEN_STATE"], DTYPE["float16"], (1, 4, 8), _f16((1, 4, 8)),
            layout=LAYOUT["BTD"])]
    return _hidden(ts).build()


def u32_list_15mb(scale: float) -> bytes:
    """A HELLO whose VERSIONS list is ~15 MB (3.9 M increasing u32): about 36 bytes per value as
    Python ints, 0.5-0.9 GB in views that decode it whole."""
    n = int(min(15 << 20, (15 << 20) * scale / 16)) // 4
    return _hello(versions=np.arange(1, n + 1, dtype="<u4").tobytes()).build()


def u32_list_15mb_unsorted_tail(scale: float) -> bytes:
    """As u32_list_15mb but the last two values are out of order (INVALID_VALUE at the end)."""
    n = int(min(15 << 20, (15 << 20) * scale / 16)) // 4
    values = np.arange(1, n + 1, dtype="<u4")
    values[-1] = 0
    return _hello(versions=values.tobytes()).build()


def many_medium_lists(scale: float) -> bytes:
    """A HELLO with 240 x scale / 16 unknown u32_list entries of 64 KiB each (15 MB at scale
    16): each is decoded by the codec on its own; keeping them all decoded would be ~150 MB."""
    n = max(1, int(240 * scale / 16))
    one = np.arange(1, (1 << 14) + 1, dtype="<u4").tobytes()
    return _hello([(2000 + i, 0, VTYPE["u32_list"], one) for i in range(n)]).build()


def utf8_15mb_astral(scale: float) -> bytes:
    """A TEXT message of ~15 MB ASCII plus one emoji: as a Python str, 4 bytes per character."""
    n = int(min(15 << 20, (15 << 20) * scale / 16))
    text = b"a" * n + "\U0001F600".encode()
    return M(kind=KIND["TEXT"], entries=[(KEY["TEXT"], 1, VTYPE["utf8"], text)]).build()


def vocabulary_15mb(scale: float) -> bytes:
    """A HELLO with a ~15 MB VOCABULARY of empty tokens (3.9 M length prefixes)."""
    n = int(min(15 << 20, (15 << 20) * scale / 16)) // 4 * 4
    return _hello([(56, 0, VTYPE["bytes"], bytes(n))]).build()


def quant_policy_15mb(scale: float) -> bytes:
    """A KV_CACHE whose QUANT_POLICY is ~15 MB of JSON empty arrays."""
    n = max(2, int(min(15 << 20, (15 << 20) * scale / 16)) // 3)
    policy = b"[" + b"[]," * (n - 1) + b"[]]"
    layer = (0, LAYER_KIND["FULL_ATTENTION"], 0, 0, 1)
    key = T(ROLE["KEY"], DTYPE["float16"], (1, 1, 1, 4), _f16((1, 1, 1, 4)), layer=0,
            layout=LAYOUT["BHTD"])
    return _kv([layer], [key], 1, [(KEY["QUANT_POLICY"], 0, VTYPE["utf8"], policy)]).build()


def uint2_bomb(scale: float) -> bytes:
    """A ~2.5 KB KV_CACHE (at scale 16): one AFFINE uint2 KEY tensor of 2^28 elements (64 MiB
    packed), stored as a zstd frame of zeros, with a [1,1,1,4] scale. Unpacking it whole costs
    GBs. (2^24 x scale elements.)"""
    tokens, dim = max(1, int((1 << 22) * scale)), 4
    raw = tokens * dim // 4
    scale_t = T(ROLE["QUANT_SCALE"], DTYPE["float32"], (1, 1, 1, dim),
                np.full(dim, 0.5, "<f4").tobytes(), layer=0)
    key = T(ROLE["KEY"], DTYPE["uint2"], (1, 1, tokens, dim), _zstd_zeros(raw), layer=0,
            layout=LAYOUT["BHTD"], codec=CODEC["zstd"], raw_length=raw,
            quant=(1, 2, 0, 0, NO_REF, DTYPE["float16"]))
    return _kv([(0, LAYER_KIND["FULL_ATTENTION"], 0, 0, tokens)], [scale_t, key], tokens).build()


def zstd_bomb_valid(scale: float) -> bytes:
    """A ~16 KB KV_CACHE (at scale 16) whose float16 KEY is a zstd frame of 512 MiB of zeros
    (valid; 32 MiB x scale)."""
    tokens, heads, dim = max(1, int((1 << 16) * scale)), 2, 128
    raw = tokens * heads * dim * 2
    key = T(ROLE["KEY"], DTYPE["float16"], (1, heads, tokens, dim), _zstd_zeros(raw), layer=0,
            layout=LAYOUT["BHTD"], codec=CODEC["zstd"], raw_length=raw)
    return _kv([(0, LAYER_KIND["FULL_ATTENTION"], 0, 0, tokens)], [key], tokens).build()


def zstd_bomb_lying(scale: float) -> bytes:
    """A zstd frame of 64 MiB of zeros in a tensor whose raw_length says 32 (DECOMPRESSED_SIZE);
    the frame's content size is left out so only decompressing finds the lie."""
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=False)
    frame = cctx.compress(bytes(64 << 20))
    key = T(ROLE["KEY"], DTYPE["float16"], (1, 1, 4, 4), frame, layer=0,
            layout=LAYOUT["BHTD"], codec=CODEC["zstd"], raw_length=32)
    return _kv([(0, LAYER_KIND["FULL_ATTENTION"], 0, 0, 4)], [key], 4).build()


def byteplane_bomb(scale: float) -> bytes:
    """A float32 KEY of 128 MiB (at scale 16; 8 MiB x scale) as byteplane_zstd of zeros."""
    tokens, dim = max(1, int((1 << 19) * scale)), 4
    raw = tokens * dim * 4
    key = T(ROLE["KEY"], DTYPE["float32"], (1, 1, tokens, dim), _zstd_zeros(raw), layer=0,
            layout=LAYOUT["BHTD"], codec=CODEC["byteplane_zstd"], raw_length=raw)
    return _kv([(0, LAYER_KIND["FULL_ATTENTION"], 0, 0, tokens)], [key], tokens).build()


def nonfinite_scales(scale: float) -> bytes:
    """An AFFINE int8 KEY whose scale tensor holds NaN and +Inf (R-12.6: must not dequantize)."""
    scale_t = T(ROLE["QUANT_SCALE"], DTYPE["float32"], (1, 1, 1, 4),
                np.array([np.nan, np.inf, 1.0, -np.inf], "<f4").tobytes(), layer=0)
    key = T(ROLE["KEY"], DTYPE["int8"], (1, 1, 8, 4), bytes(range(32)), layer=0,
            layout=LAYOUT["BHTD"], quant=(1, 2, 0, 0, NO_REF, DTYPE["float32"]))
    return _kv([(0, LAYER_KIND["FULL_ATTENTION"], 0, 0, 8)], [scale_t, key], 8).build()


def zero_dim_huge(scale: float) -> bytes:
    """Empty tensors with huge other dimensions: [0, 2^40, 2^40] hidden state (no elements)."""
    ts = [T(ROLE["HIDDEN_STATE"], DTYPE["float16"], (0, 1 << 40, 1 << 40), b"",
            layout=LAYOUT["BTD"])]
    return _hidden(ts).build()


def zero_dim_huge_recurrent(scale: float) -> bytes:
    """A KV_CACHE recurrent layer whose SSM_STATE is [2^40, 0, 2^40] (no elements)."""
    ssm = T(ROLE["SSM_STATE"], DTYPE["float32"], (1 << 40, 0, 1 << 40), b"", layer=0)
    return _kv([(0, LAYER_KIND["RECURRENT"], 0, 0, 0)], [ssm], 0).build()


def skippable_before_header(scale: float) -> bytes:
    """600 x scale unknown SKIPPABLE sections before the HEADER (a recursive walker overflows)."""
    m = _hidden([T(ROLE["HIDDEN_STATE"], DTYPE["float16"], (1, 1, 4), _f16((1, 1, 4)),
                   layout=LAYOUT["BTD"])])
    m.before_header = skippable(max(1, int(600 * scale)))
    return m.build()


def skippable_before_index(scale: float) -> bytes:
    """600 x scale unknown SKIPPABLE sections between the last tensor and the INDEX."""
    m = _hidden([T(ROLE["HIDDEN_STATE"], DTYPE["float16"], (1, 1, 4), _f16((1, 1, 4)),
                   layout=LAYOUT["BTD"])])
    m.before_index = skippable(max(1, int(600 * scale)))
    return m.build()


def big_skippable_section(scale: float) -> bytes:
    """One 15 MB unknown SKIPPABLE section (its body must never be shown or held whole)."""
    m = _hidden([T(ROLE["HIDDEN_STATE"], DTYPE["float16"], (1, 1, 4), _f16((1, 1, 4)),
                   layout=LAYOUT["BTD"])])
    m.before_index = skippable(1, bytes(int(min(15 << 20, (15 << 20) * scale / 16))))
    return m.build()


def many_layers(scale: float) -> bytes:
    """A KV_CACHE with 4096 x scale layers (max_layers is 65536), one tiny KEY each."""
    n = max(1, min(65536, int(4096 * scale)))
    layers = [(j, LAYER_KIND["FULL_ATTENTION"], 0, 0, 1) for j in range(n)]
    data = _f16((1, 1, 1, 2))
    ts = [T(ROLE["KEY"], DTYPE["float16"], (1, 1, 1, 2), data, layer=j, layout=LAYOUT["BHTD"])
          for j in range(n)]
    return _kv(layers, ts, 1).build()


def many_entries(scale: float) -> bytes:
    """A HELLO with 256 x scale extra entries (4096 at scale 16, max_entries, with the seven a
    HELLO needs): unknown non-critical keys, 8 bytes each."""
    n = max(1, min(4096 - 7, int(256 * scale)))
    extra = [(1000 + i, 0, VTYPE["u64"], u64(i)) for i in range(n)]
    return _hello(extra).build()


def many_bad_crcs(scale: float) -> bytes:
    """2000 x scale tensors whose data CRCs are all wrong: more issues than the report lists."""
    n = max(1, int(2000 * scale))
    data = _f16((1, 1, 4))
    return _hidden([T(ROLE["HIDDEN_STATE"], DTYPE["float16"], (1, 1, 4), data,
                      layout=LAYOUT["BTD"], data_crc=0) for _ in range(n)]).build()


def random_garbage(scale: float) -> bytes:
    """Random bytes behind a valid preamble."""
    rng = np.random.default_rng(14)
    return (b"\x89AVP\r\n\x1a\n" + bytes(8)
            + rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes())


def truncated_many(scale: float) -> bytes:
    """many_hidden_tensors cut in the middle of a tensor's data."""
    data = many_hidden_tensors(scale)
    return data[:len(data) // 2 + 3]


def rank_overflow(scale: float) -> bytes:
    """A descriptor of rank 8 whose element count overflows u64 (LENGTH_OVERFLOW)."""
    ts = [T(ROLE["CONV_STATE"], DTYPE["float32"], (1 << 40,) * 8, b"", layer=0)]
    return _kv([(0, LAYER_KIND["RECURRENT"], 0, 0, 0)], ts, 0).build()


CASES: dict[str, Case] = {}
for _fn, _klass, _scales in (
        (many_hidden_tensors, "quadratic scan over tensors", True),
        (many_hidden_tensors_last_bad, "quadratic scan over tensors", True),
        (hidden_two_token_ids, "decode / avp-dump disagreement", False),
        (u32_list_15mb, "metadata list blow-up", True),
        (u32_list_15mb_unsorted_tail, "metadata list blow-up", True),
        (many_medium_lists, "metadata list blow-up (many)", True),
        (utf8_15mb_astral, "metadata string blow-up", True),
        (vocabulary_15mb, "metadata bytes walk", True),
        (quant_policy_15mb, "metadata JSON blow-up", True),
        (uint2_bomb, "unpack / dequantize bomb", True),
        (zstd_bomb_valid, "decompression bomb (valid)", True),
        (zstd_bomb_lying, "decompression bomb (lying)", False),
        (byteplane_bomb, "decompression bomb (byteplane)", True),
        (nonfinite_scales, "non-finite quantization parameters", False),
        (zero_dim_huge, "empty tensor with huge dimensions", False),
        (zero_dim_huge_recurrent, "empty tensor with huge dimensions", False),
        (skippable_before_header, "long runs of skippable sections", True),
        (skippable_before_index, "long runs of skippable sections", True),
        (big_skippable_section, "large skippable section", True),
        (many_layers, "large layer table", True),
        (many_entries, "large entry table", True),
        (many_bad_crcs, "more issues than the report holds", True),
        (random_garbage, "random bytes", False),
        (truncated_many, "truncation", True),
        (rank_overflow, "element count overflow", False)):
    CASES[_fn.__name__] = Case(_fn.__name__, _klass, _fn, _scales)


def cases(scale: float = 1) -> dict[str, Case]:
    """Every case (``scale`` is applied when building: ``case.build(scale)``)."""
    return dict(CASES)


def build(name: str, scale: float = 1) -> bytes:
    return CASES[name].build(scale)


def main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--scale", type=float, default=16)
    args = ap.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    for name, case in CASES.items():
        (args.outdir / f"{name}.avp").write_bytes(case.build(args.scale))
        print(name)


if __name__ == "__main__":
    main(sys.argv[1:])
