"""Vectors for floatplane_zstd (spec 7.3.1, R-7.16, R-7.17).

The pre-compression buffer P is built here from the spec text, element by element in plain
Python, independently of avp_codec's vectorised codec: geometry, anchors, flips, the per-block
exponent / sign / mantissa streams. Valid cases cover the three float dtypes, per-channel and
single-channel geometry, an empty tensor, a tensor of two blocks, NaN / infinity / zero / subnormal
values and encoder-chosen anchors that are not the mode; invalid ones break one rule each.
"""

from __future__ import annotations

import math
import struct

import zstandard

from .gen_common import (
    DTYPES,
    KINDS,
    MODEL_ID,
    RECURRENT,
    ROLES,
    CaseDef,
    WLayer,
    WMessage,
    WTensor,
    ent,
    kv_message,
)
from .gen_invalid_framing import invalid
from .gen_valid import valid

CODEC = 3
FORMATS = {"bfloat16": (16, 8, 7), "float16": (16, 5, 10), "float32": (32, 8, 23)}
BLOCK = 65536
ZSTD = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=False)


def geometry(shape: tuple[int, ...]) -> tuple[int, int, int]:
    n = math.prod(shape)
    if len(shape) >= 2 and shape[-2] >= 64:
        t, d = shape[-2], shape[-1]
        return (n // (t * d) if t * d else 0), d, t
    return 1, 1, n


def pack_bits(bits: list[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        out[i // 8] |= b << (i % 8)
    return bytes(out)


def build_p(raw: bytes, dtype: str, shape: tuple[int, ...],
            anchors: list[int] | None = None, flips: list[int] | None = None) -> bytes:
    """P of spec 7.3.1 for ``raw``; anchors/flips default to channel 0's exponent and 0."""
    w, e_bits, m_bits = FORMATS[dtype]
    k = (m_bits + 7) // 8
    vals = list(struct.unpack(f"<{len(raw) // (w // 8)}{'H' if w == 16 else 'I'}", raw))
    a, d, t = geometry(shape)
    c = a * d
    order = [(ai * t + ti) * d + di for ai in range(a) for di in range(d) for ti in range(t)]
    fields = [((v >> (w - 1)) & 1, (v >> m_bits) & ((1 << e_bits) - 1),
               v & ((1 << m_bits) - 1)) for v in vals]
    if anchors is None:
        anchors = [fields[order[ch * t]][1] if t else 0 for ch in range(c)]
    if flips is None:
        flips = [0] * c
    p = bytearray(bytes(anchors) + pack_bits(flips))
    n = len(order)
    for b0 in range(0, n, BLOCK):
        idx = range(b0, min(n, b0 + BLOCK))
        ch = [i // t for i in idx]
        f = [fields[order[i]] for i in idx]
        p += bytes((e - anchors[cc]) % (1 << e_bits) for (_, e, _), cc in zip(f, ch, strict=True))
        p += pack_bits([s ^ flips[cc] for (s, _, _), cc in zip(f, ch, strict=True)])
        for j in range(k):
            p += bytes((m >> (8 * j)) & 0xFF for _, _, m in f)
    return bytes(p)


def values(dtype: str, shape: tuple[int, ...], seed: int) -> bytes:
    """Deterministic floats of every class: normal of several scales per channel, zeros, a
    subnormal, infinities and a NaN with a payload."""
    n = math.prod(shape)
    w = FORMATS[dtype][0]
    out = []
    x = seed
    for i in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        mag = 2.0 ** ((x >> 40) % 9 - 4 + (i % 5))
        v = (((x >> 20) % 2000) / 1000 - 1) * mag
        bits = struct.unpack("<I", struct.pack("<f", v))[0]
        if dtype == "float16":
            bits = struct.unpack("<H", struct.pack("<e", v))[0]
        elif dtype == "bfloat16":
            bits >>= 16
        out.append(bits)
    specials = {"bfloat16": [0, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x0001],
                "float16": [0, 0x8000, 0x7C00, 0xFC00, 0x7E01, 0x0001],
                "float32": [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00001, 0x00000001]}
    for j, s in enumerate(specials[dtype]):
        if n > 7 * j + 3:
            out[7 * j + 3] = s
    return struct.pack(f"<{n}{'H' if w == 16 else 'I'}", *out)


def fp_state(dtype: str, shape: tuple[int, ...], stored: bytes, raw_len: int) -> WMessage:
    t = WTensor(ROLES["SSM_STATE"], DTYPES[dtype], shape, stored, layer=0, codec=CODEC,
                raw_len=raw_len)
    return WMessage(KINDS["KV_CACHE"], [ent("MODEL_ID", MODEL_ID), ent("CONTEXT_LENGTH", 7)],
                    [WLayer(0, RECURRENT, 0, 7)], [t])


def _ok(dtype: str, shape: tuple[int, ...], seed: int, period: int = 0,
        **kw: list[int]) -> WMessage:
    raw = values(dtype, shape, seed)
    if period:  # repeat the first values: a large tensor whose frame stays small
        size = FORMATS[dtype][0] // 8 * period
        raw = (raw[:size] * (len(raw) // size + 1))[:len(raw)]
    return fp_state(dtype, shape, ZSTD.compress(build_p(raw, dtype, shape, **kw)), len(raw))


def cases() -> list[CaseDef]:
    out: list[CaseDef] = []
    for i, dtype in enumerate(FORMATS):
        out.append(valid(f"7.3.1/floatplane-{dtype}-channels", "7.3.1", ["R-7.17"],
                         f"[2, 70, 3] {dtype}: 6 channels of 70 positions, special values",
                         _ok(dtype, (2, 70, 3), 11 + i), level="required"))
        out.append(valid(f"7.3.1/floatplane-{dtype}-one-channel", "7.3.1", ["R-7.17"],
                         f"[5, 9] {dtype}: a sequence under 64, one channel",
                         _ok(dtype, (5, 9), 21 + i)))
    out.append(valid("7.3.1/floatplane-odd-anchors-and-flips", "7.3.1", ["R-7.17"],
                     "anchors and flips chosen far from the data: still the same raw bytes",
                     _ok("bfloat16", (1, 64, 2), 5, anchors=[0, 255], flips=[1, 0])))
    out.append(valid("7.3.1/floatplane-empty", "7.3.1", ["R-7.17"], "[0, 4]: P is empty",
                     _ok("float16", (0, 4), 1)))
    out.append(valid("7.3.1/floatplane-zero-channels", "7.3.1", ["R-7.17"],
                     "[2, 80, 0]: no channel, P is empty", _ok("float32", (2, 80, 0), 1)))
    out.append(valid("7.3.1/floatplane-two-blocks", "7.3.1", ["R-7.17"],
                     "[65600, 1] bfloat16: one channel across two blocks",
                     _ok("bfloat16", (65600, 1), 3, period=50)))
    kv = kv_message(dtype="bfloat16", tokens=64, seed="fp-kv")
    for t in kv.tensors:
        p = build_p(t.data, "bfloat16", t.shape)
        t.data, t.codec, t.raw_len = ZSTD.compress(p), CODEC, len(t.data)
    out.append(valid("7.3.1/floatplane-kv-cache", "7.3.1", ["R-7.17"],
                     "K/V [1, 2, 64, 8] bfloat16 stored with floatplane_zstd", kv,
                     level="required"))
    out += _invalid_cases()
    return out


def _bad(case: str, comment: str, code: str, dtype: str, shape: tuple[int, ...], p: bytes,
         raw_len: int, reqs: list[str], *, content_size: bool = True) -> CaseDef:
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=content_size)
    return invalid(f"7.3.1/floatplane-{case}", "7.3.1", reqs, comment, code,
                   msg=fp_state(dtype, shape, cctx.compress(p), raw_len))


def _invalid_cases() -> list[CaseDef]:
    out = []
    shape = (2, 64, 1)
    raw16 = values("float16", shape, 7)
    p = bytearray(build_p(raw16, "float16", shape))
    bad = bytearray(p)
    bad[0] = 32  # anchor of channel 0: float16 exponents are 5 bits
    out.append(_bad("anchor-out-of-range", "float16 anchor 32", "DECOMPRESSION_FAILED",
                    "float16", shape, bytes(bad), len(raw16), ["R-7.17"]))
    side = 2 + 1
    bad = bytearray(p)
    bad[side + 5] = 40  # an exponent-stream byte of 40 for a 5-bit exponent
    out.append(_bad("exponent-out-of-range", "float16 exponent byte 40", "DECOMPRESSION_FAILED",
                    "float16", shape, bytes(bad), len(raw16), ["R-7.17"]))
    bad = bytearray(p)
    bad[2] |= 0x80  # flip bit 7 of a 2-channel tensor: padding
    out.append(_bad("flip-padding", "a set padding bit after the flip bits",
                    "DECOMPRESSION_FAILED", "float16", shape, bytes(bad), len(raw16), ["R-7.17"]))
    shape_odd = (1, 65, 1)  # 65 signs: the 9th sign byte has 7 padding bits
    raw_odd = values("bfloat16", shape_odd, 9)
    bad = bytearray(build_p(raw_odd, "bfloat16", shape_odd))
    bad[1 + 1 + 65 + 8] |= 0x40
    out.append(_bad("sign-padding", "a set padding bit after the sign bits",
                    "DECOMPRESSION_FAILED", "bfloat16", shape_odd, bytes(bad), len(raw_odd),
                    ["R-7.17"]))
    bad = bytearray(build_p(raw_odd, "bfloat16", shape_odd))
    bad[1 + 1 + 65 + 9 + 3] |= 0x80  # bfloat16 mantissas have 7 bits
    out.append(_bad("mantissa-high-bit", "bit 7 of a bfloat16 mantissa byte",
                    "DECOMPRESSION_FAILED", "bfloat16", shape_odd, bytes(bad), len(raw_odd),
                    ["R-7.17"]))
    pb = build_p(raw_odd, "bfloat16", shape_odd)
    out.append(_bad("content-size-is-raw-length", "Frame_Content_Size = raw_length, not P's",
                    "DECOMPRESSED_SIZE", "bfloat16", shape_odd, pb[:len(raw_odd)], len(raw_odd),
                    ["R-7.13", "R-7.17"]))
    out.append(_bad("short-content", "a frame without content size, one byte short of P",
                    "DECOMPRESSED_SIZE", "bfloat16", shape_odd, pb[:-1], len(raw_odd),
                    ["R-7.13", "R-7.17"], content_size=False))
    out.append(_bad("long-content", "a frame without content size, one byte past P",
                    "DECOMPRESSED_SIZE", "bfloat16", shape_odd, pb + b"\0", len(raw_odd),
                    ["R-7.13", "R-7.17"], content_size=False))
    for dtype, shape_d, nbytes in (("int8", (16,), 16), ("int64", (4,), 32),
                                   ("float8_e4m3fn", (16,), 16)):
        frame = ZSTD.compress(bytes(nbytes + 1 + 2))
        out.append(invalid(f"7.3.1/floatplane-on-{dtype}", "7.3.1", ["R-7.16"],
                           f"floatplane_zstd on {dtype}", "CODEC_DTYPE",
                           msg=fp_state(dtype, shape_d, frame, nbytes)))
    return out
