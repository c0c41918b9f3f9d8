"""An independent, slow reference of spec 12.2 dequantization, one element at a time.

It shares nothing with avp_codec: fp8 codes are decoded from their bit fields, binary32
arithmetic is Python (binary64) arithmetic rounded through struct after every single operation
(exact for one +, -, * of binary32 operands, see spec 12.2 step 3), bfloat16 rounding is done on
the bit pattern and float16 rounding by struct's IEEE half packing.
"""

from __future__ import annotations

import math
import struct


def f32(x: float) -> float:
    """Round a Python float to the nearest binary32 (ties to even), overflowing to infinity."""
    if math.isnan(x) or math.isinf(x):
        return x
    try:
        return float(struct.unpack("<f", struct.pack("<f", x))[0])
    except OverflowError:
        # struct refuses exactly the values that round (to nearest) to an infinity.
        return math.copysign(math.inf, x)


def f32_bits(x: float) -> int:
    if math.isnan(x):
        return 0x7FC00000
    return int(struct.unpack("<I", struct.pack("<f", x))[0])


def to_bits(x: float, dtype: str) -> int:
    """Bit pattern of binary32 value x rounded to dtype, canonical NaN (spec 12.2 steps 4-5)."""
    if dtype == "float32":
        return f32_bits(x)
    if dtype == "bfloat16":
        if math.isnan(x):
            return 0x7FC0
        b = f32_bits(x)
        return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF
    if math.isnan(x):
        return 0x7E00
    try:
        return int(struct.unpack("<H", struct.pack("<e", x))[0])
    except OverflowError:
        return 0xFC00 if x < 0 else 0x7C00


def fp8_value(byte: int, dtype: str) -> float:
    """Exact value of an fp8 code from its sign, exponent and mantissa fields."""
    sign = -1.0 if byte & 0x80 else 1.0
    if dtype == "float8_e4m3fn":
        e, m = (byte >> 3) & 0xF, byte & 0x7
        if e == 15 and m == 7:
            return math.nan
        if e == 0:
            return sign * m / 8 * 2.0**-6
        return sign * (1 + m / 8) * 2.0 ** (e - 7)
    e, m = (byte >> 2) & 0x1F, byte & 0x3
    if e == 31:
        return sign * math.inf if m == 0 else math.nan
    if e == 0:
        return sign * m / 4 * 2.0**-14
    return sign * (1 + m / 4) * 2.0 ** (e - 15)


def half_value(bits: int) -> float:
    return float(struct.unpack("<e", struct.pack("<H", bits))[0])


def bf16_value(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits << 16))[0])


def dequantize_element(q: float, s: float, z: float | None, dtype: str) -> int:
    """One element: q, s, z already exact binary32 values; returns the result's bit pattern."""
    x = f32(q * s) if z is None else f32(f32(q - z) * s)
    return to_bits(x, dtype)
