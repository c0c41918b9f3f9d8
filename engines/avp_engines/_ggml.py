"""ggml element types as they appear in llama.cpp cache state (ggml/include/ggml.h), and the two
block formats the converters translate exactly: Q8_0 and Q4_0.

Q8_0 block (34 bytes, 32 elements): float16 d, int8 qs[32]; x[j] = d * qs[j].
Q4_0 block (18 bytes, 32 elements): float16 d, uint8 qs[16]; element j is the low nibble of
qs[j] and element j + 16 its high nibble; x = (nibble - 8) * d.

Both dequantize with one float32 multiplication (after an exact integer subtraction for Q4_0),
which is exactly AVP's AFFINE arithmetic (spec 12.2) with int8 codes and no zero point, or uint4
codes with zero point 8: the translation is bit-exact in both directions. Quantizing float data
into these formats (for a receiver whose cache is quantized) follows ggml's reference routines
quantize_row_q8_0_ref / quantize_row_q4_0_ref.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from avp_codec import AvpError, Dtype, ErrorCode

QK = 32  # elements per Q8_0 / Q4_0 block


@dataclass(frozen=True)
class GgmlType:
    code: int
    name: str
    block_elems: int
    block_bytes: int
    avp: Dtype | None  # the AVP dtype of an element, for the unquantized types


F32 = GgmlType(0, "f32", 1, 4, Dtype.FLOAT32)
F16 = GgmlType(1, "f16", 1, 2, Dtype.FLOAT16)
BF16 = GgmlType(30, "bf16", 1, 2, Dtype.BFLOAT16)
Q8_0 = GgmlType(8, "q8_0", QK, 2 + QK, None)
Q4_0 = GgmlType(2, "q4_0", QK, 2 + QK // 2, None)

SUPPORTED: dict[int, GgmlType] = {t.code: t for t in (F32, F16, BF16, Q8_0, Q4_0)}
BY_NAME: dict[str, GgmlType] = {t.name: t for t in SUPPORTED.values()}

# Known ggml types this converter does not translate (named in the refusal, so a user learns
# which cache type to configure instead). Codes from ggml.h's enum ggml_type.
KNOWN_UNSUPPORTED: dict[int, str] = {
    3: "q4_1", 6: "q5_0", 7: "q5_1", 9: "q8_1", 10: "q2_k", 11: "q3_k", 12: "q4_k",
    13: "q5_k", 14: "q6_k", 15: "q8_k", 16: "iq2_xxs", 17: "iq2_xs", 18: "iq3_xxs",
    19: "iq1_s", 20: "iq4_nl", 21: "iq3_s", 22: "iq2_s", 23: "iq4_xs", 24: "i8", 25: "i16",
    26: "i32", 27: "i64", 28: "f64", 29: "iq1_m", 34: "tq1_0", 35: "tq2_0", 39: "mxfp4",
    40: "nvfp4", 41: "q1_0", 42: "q2_0",
}


def ggml_type(code: int, where: str) -> GgmlType:
    """The supported type with this code, or AvpError naming why not."""
    t = SUPPORTED.get(code)
    if t is not None:
        return t
    if code in KNOWN_UNSUPPORTED:
        raise AvpError(
            ErrorCode.UNSUPPORTED_CAPABILITY,
            f"ggml type {KNOWN_UNSUPPORTED[code]} ({code}) in {where} is not translated; "
            "run llama.cpp with a f32, f16, bf16, q8_0 or q4_0 cache", path=where)
    raise AvpError(ErrorCode.UNKNOWN_DTYPE, f"unknown ggml type {code} in {where}", path=where)


def row_bytes(t: GgmlType, n: int) -> int:
    """ggml_row_size: bytes of a row of `n` elements (n a multiple of the block size)."""
    return (n // t.block_elems) * t.block_bytes


_F16 = np.dtype("<f2")


def q8_0_split(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., nb, 34] uint8 -> (d [..., nb] float16, qs [..., nb, 32] int8), views where possible."""
    d = np.ascontiguousarray(blocks[..., :2]).view(_F16)[..., 0]
    qs = blocks[..., 2:].view(np.int8)
    return d, qs


def q8_0_join(d: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """The inverse of q8_0_split: [..., nb, 34] uint8."""
    out = np.empty(qs.shape[:-1] + (2 + QK,), np.uint8)
    out[..., :2] = np.ascontiguousarray(d.astype(_F16))[..., None].view(np.uint8)
    out[..., 2:] = qs.view(np.uint8)
    return out


def q4_0_split(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., nb, 18] uint8 -> (d [..., nb] float16, codes [..., nb, 32] uint8 in 0..15)."""
    d = np.ascontiguousarray(blocks[..., :2]).view(_F16)[..., 0]
    qs = blocks[..., 2:]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)
    return d, codes


def q4_0_join(d: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The inverse of q4_0_split: [..., nb, 18] uint8."""
    out = np.empty(codes.shape[:-1] + (2 + QK // 2,), np.uint8)
    out[..., :2] = np.ascontiguousarray(d.astype(_F16))[..., None].view(np.uint8)
    lo, hi = codes[..., : QK // 2], codes[..., QK // 2:]
    out[..., 2:] = (lo & 0x0F) | ((hi & 0x0F) << 4)
    return out


def quantize_q8_0(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's quantize_row_q8_0_ref over the last axis (a multiple of 32): (d float16, qs int8)."""
    xb = x.astype(np.float32).reshape(x.shape[:-1] + (-1, QK))
    amax = np.abs(xb).max(axis=-1)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), np.float32(0))
    v = xb * inv[..., None].astype(np.float32)
    t = np.trunc(v)
    # C roundf: halves away from zero (numpy's rint rounds them to even)
    q = np.where(np.abs(v - t) == np.float32(0.5), t + np.sign(v), np.rint(v))
    return d.astype(_F16), q.astype(np.int8)


def quantize_q4_0(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's quantize_row_q4_0_ref over the last axis: (d float16, codes uint8 in 0..15)."""
    xb = x.astype(np.float32).reshape(x.shape[:-1] + (-1, QK))
    idx = np.abs(xb).argmax(axis=-1)  # first index of the largest magnitude, as the C loop
    mx = np.take_along_axis(xb, idx[..., None], axis=-1)[..., 0]
    d = (mx / np.float32(-8)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), np.float32(0))
    v = xb * inv[..., None].astype(np.float32) + np.float32(8.5)
    q = np.minimum(np.trunc(v).astype(np.int32).astype(np.int8), 15)  # (int8_t) cast, MIN(15)
    return d.astype(_F16), q.astype(np.uint8)


def dequantize(d: np.ndarray, codes: np.ndarray, zero: int) -> np.ndarray:
    """float32 values of a Q8_0 (zero 0) or Q4_0 (zero 8) block array, as ggml computes them."""
    q = codes.astype(np.float32) - np.float32(zero)
    return q * d.astype(np.float32)[..., None]


def to_avp_float(x: np.ndarray, t: GgmlType) -> np.ndarray:
    """Reinterpret raw little-endian element bytes of an unquantized type."""
    return x.view(numpy_dtype(t))


def numpy_dtype(t: GgmlType) -> np.dtype:
    """The numpy element type of an unquantized ggml type."""
    if t.avp == Dtype.FLOAT32:
        return np.dtype("<f4")
    if t.avp == Dtype.FLOAT16:
        return np.dtype("<f2")
    bf16: np.dtype = np.dtype(ml_dtypes.bfloat16)
    return bf16
