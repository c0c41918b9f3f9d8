"""numpy views of AVP dtypes (spec 7.2) and packing of sub-byte integers."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ._registry import DTYPE_BITS, Dtype

NUMPY_DTYPES: dict[Dtype, np.dtype[np.generic]] = {
    Dtype.FLOAT32: np.dtype("<f4"),
    Dtype.FLOAT16: np.dtype("<f2"),
    Dtype.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    Dtype.FLOAT8_E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    Dtype.FLOAT8_E5M2: np.dtype(ml_dtypes.float8_e5m2),
    Dtype.INT8: np.dtype("i1"),
    Dtype.UINT8: np.dtype("u1"),
    Dtype.INT32: np.dtype("<i4"),
    Dtype.INT64: np.dtype("<i8"),
}
PACKED = frozenset({Dtype.INT4, Dtype.UINT4, Dtype.UINT2})


def dtype_of_numpy(dt: np.dtype[np.generic]) -> Dtype | None:
    dt = dt.newbyteorder("<") if dt.byteorder == ">" else dt
    for code, candidate in NUMPY_DTYPES.items():
        if candidate == dt:
            return code
    return None


def raw_length(shape: tuple[int, ...], dtype: Dtype) -> int:
    n = 1
    for d in shape:
        n *= d
    return (n * DTYPE_BITS[dtype] + 7) // 8


def pack(values: np.ndarray, dtype: Dtype) -> bytes:
    """Pack integer values (any integer array, C order) into int4/uint4/uint2 bytes.

    Element i goes to the lowest unused bits: 2i in the low nibble for 4-bit types, 4i in bits
    0-1 for uint2. Values out of range raise ValueError.
    """
    bits = DTYPE_BITS[dtype]
    flat = np.ascontiguousarray(values).reshape(-1).astype(np.int64)
    lo, hi = (-8, 7) if dtype == Dtype.INT4 else (0, (1 << bits) - 1)
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"values out of range for {dtype.name.lower()}")
    u = (flat & ((1 << bits) - 1)).astype(np.uint8)
    per = 8 // bits
    pad = (-u.size) % per
    if pad:
        u = np.concatenate([u, np.zeros(pad, np.uint8)])
    u = u.reshape(-1, per)
    out = np.zeros(u.shape[0], np.uint8)
    for j in range(per):
        out |= (u[:, j] << (bits * j)).astype(np.uint8)
    return out.tobytes()


def unpack(data: bytes | memoryview, dtype: Dtype, count: int) -> np.ndarray:
    """Inverse of pack: int8 values for INT4 (sign-extended), uint8 for UINT4/UINT2."""
    bits = DTYPE_BITS[dtype]
    per = 8 // bits
    b = np.frombuffer(data, dtype=np.uint8)
    planes = [(b >> (bits * j)) & ((1 << bits) - 1) for j in range(per)]
    u = np.stack(planes, axis=1).reshape(-1)[:count].astype(np.uint8)
    if dtype == Dtype.INT4:
        return ((u.astype(np.int16) ^ 8) - 8).astype(np.int8)
    return u


def packed_tail_ok(data: bytes | memoryview, dtype: Dtype, count: int) -> bool:
    """Unused high bits of the last byte of a packed tensor must be zero (spec 7.2)."""
    bits = DTYPE_BITS[dtype]
    used = (count * bits) % 8
    if used == 0 or len(data) == 0:
        return True
    return (data[len(data) - 1] >> used) == 0
