"""Vectors for bit-exact dequantization (spec 12.2, R-12.6), graded through the testee protocol's
``dequantize`` operation (TESTEE-PROTOCOL 1.1).

Each case is a valid message; the manifest adds, per quantized tensor, the exact bytes its
dequantization must produce. Those bytes come from ``dequantize`` below, written from the text of
12.2 alone (numpy binary32 operations, one IEEE operation per step, the bfloat16 rounding formula
on the bit pattern); the generator reports any place where the reference codec disagrees.
Parameters are chosen to reach what implementations get wrong: subnormals, overflow to infinity,
every fp8 code, NaN canonicalisation, ties in the float16 and bfloat16 roundings, the order of
the two AFFINE steps, negative zero, packed codes whose groups cross byte boundaries, a last
group that is shorter, and non-finite parameters (QUANT_PARAMS, R-12.6).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .gen_common import (
    BTD,
    DTYPES,
    KINDS,
    MODEL_ID,
    RECURRENT,
    ROLES,
    CaseDef,
    WLayer,
    WMessage,
    WTensor,
    array_bytes,
    ent,
)

_NP = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": ml_dtypes.bfloat16,
       "float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2,
       "int8": np.dtype("i1"), "uint8": np.dtype("u1")}
_BITS = {"int4": 4, "uint4": 4, "uint2": 2}


def codes_of(dtype: str, data: bytes, count: int) -> np.ndarray:
    """The stored elements as binary32 values (12.2 step 1: exact)."""
    if dtype in _BITS:
        bits = _BITS[dtype]
        raw = np.frombuffer(data, dtype=np.uint8)
        per = 8 // bits
        codes = np.stack([(raw >> (bits * j)) & ((1 << bits) - 1) for j in range(per)],
                         axis=1).reshape(-1)[:count].astype(np.int32)
        if dtype == "int4":
            codes = np.where(codes >= 8, codes - 16, codes)
        return codes.astype(np.float32)
    return np.frombuffer(data, dtype=_NP[dtype])[:count].astype(np.float32)


def _expand(params: np.ndarray, axis: int, group_size: int, dim: int) -> np.ndarray:
    """Parameter of every element: index g = a_k // group_size along the quant axis."""
    if group_size == 0:
        return np.repeat(params, dim, axis=axis) if dim else params.take([], axis=axis)
    index = np.arange(dim) // group_size
    return params.take(index, axis=axis)


def to_dtype_bytes(x: np.ndarray, dtype: str) -> bytes:
    """12.2 step 4: round-to-nearest-even into dequant_dtype, NaN canonical."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    nan = np.isnan(x)
    if dtype == "float32":
        out = np.where(nan, 0x7FC00000, bits).astype("<u4")
    elif dtype == "float16":
        half = x.astype(np.float32).astype(np.float16).view(np.uint16)  # IEEE RNE, overflow inf
        out = np.where(nan, 0x7E00, half).astype("<u2")
    else:  # bfloat16, the formula of 12.2 on the binary32 pattern
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        out = np.where(nan, 0x7FC0, rounded & 0xFFFF).astype("<u2")
    return out.tobytes()


@np.errstate(over="ignore", invalid="ignore")  # overflow to infinity is part of the rules
def dequantize(dtype: str, shape: tuple[int, ...], data: bytes, axis: int, group_size: int,
               scale: np.ndarray, zero: np.ndarray | None, out: str) -> bytes:
    """Spec 12.2 steps 1-5 for one tensor; raises ValueError for a non-finite parameter."""
    for p in (scale, zero):
        if p is not None and not np.all(np.isfinite(p.astype(np.float32))):
            raise ValueError("QUANT_PARAMS")
    count = int(np.prod(shape)) if shape else 1
    q = codes_of(dtype, data, count).reshape(shape)
    s = _expand(scale.astype(np.float32), axis, group_size, shape[axis])
    # q - z is one binary32 rounding (none without a zero point) ...
    d = q if zero is None else q - _expand(zero.astype(np.float32), axis, group_size,
                                           shape[axis])
    x = d * s  # ... and the product a second, separate one: never fused
    return to_dtype_bytes(x, out)


@dataclass
class Spec:
    """One quantized tensor of a case."""
    dtype: str
    shape: tuple[int, ...]
    axis: int
    group_size: int
    scale: np.ndarray
    out: str = "float32"
    zero: np.ndarray | None = None
    data: bytes | None = None  # the stored codes; default: deterministic codes
    scheme: int = 1

    def groups(self) -> int:
        dim = self.shape[self.axis]
        return 1 if self.group_size == 0 else -(-dim // self.group_size)

    def param_shape(self) -> tuple[int, ...]:
        return self.shape[:self.axis] + (self.groups(),) + self.shape[self.axis + 1:]

    def codes(self) -> bytes:
        if self.data is not None:
            return self.data
        return array_bytes(self.dtype, self.shape, f"dq/{self.dtype}/{self.shape}")


@np.errstate(over="ignore")  # a float16 parameter of 70000 is infinity on purpose
def _param(values: np.ndarray, dtype: str) -> tuple[np.ndarray, bytes]:
    arr = np.asarray(values, dtype=np.float32).astype(_NP[dtype])
    return arr, arr.tobytes()


def state_case(cid: str, comment: str, spec: Spec, param_dtype: str = "float32",
               zero_dtype: str = "float32") -> CaseDef:
    """A KV_CACHE with one RECURRENT layer: [QUANT_SCALE, (QUANT_ZERO_POINT), SSM_STATE]."""
    pshape = spec.param_shape()
    scale, scale_bytes = _param(spec.scale.reshape(pshape), param_dtype)
    tensors = [WTensor(ROLES["QUANT_SCALE"], DTYPES[param_dtype], pshape, scale_bytes, layer=0)]
    zero = None
    if spec.zero is not None:
        zero, zero_bytes = _param(spec.zero.reshape(pshape), zero_dtype)
        tensors.append(WTensor(ROLES["QUANT_ZERO_POINT"], DTYPES[zero_dtype], pshape,
                               zero_bytes, layer=0))
    codes = spec.codes()
    tensors.append(WTensor(ROLES["SSM_STATE"], DTYPES[spec.dtype], spec.shape, codes, layer=0,
                           quant_scheme=spec.scheme, quant_axis=spec.axis,
                           group_size=spec.group_size, scale_tensor=0,
                           zero_point_tensor=1 if zero is not None else 0xFFFFFFFF,
                           dequant_dtype=DTYPES[spec.out]))
    msg = WMessage(KINDS["KV_CACHE"], [ent("MODEL_ID", MODEL_ID), ent("CONTEXT_LENGTH", 3)],
                   [WLayer(0, RECURRENT, 0, 3)], tensors)
    index = len(tensors) - 1
    try:
        values = dequantize(spec.dtype, spec.shape, codes, spec.axis, spec.group_size, scale,
                            zero, spec.out)
        expected: dict[str, object] = {"values": values, "dtype": spec.out,
                                       "shape": list(spec.shape)}
    except ValueError:
        expected = {"error": "QUANT_PARAMS"}
    return CaseDef(cid, "12.2", ["R-12.6"], comment, msg=msg, operations=["dequantize"],
                   dequantize=[(index, expected)])


def _f32(bits: list[int]) -> np.ndarray:
    return np.array(bits, dtype="<u4").view(np.float32)


def _pack(codes: list[int], bits: int) -> bytes:
    out = bytearray((len(codes) * bits + 7) // 8)
    for i, c in enumerate(codes):
        out[i * bits // 8] |= (c & ((1 << bits) - 1)) << (i * bits % 8)
    return bytes(out)


def cases() -> list[CaseDef]:
    r = np.random.default_rng(20261207)  # fixed: parameters only, stored in the vectors

    def scales(n: int, lo: float = 0.01, hi: float = 2.0) -> np.ndarray:
        return r.uniform(lo, hi, n).astype(np.float32)

    out = [
        state_case("12.2/affine-int8-one-group", "int8 [2, 3, 4], one group on axis 0, no zero"
                   " point, float32", Spec("int8", (2, 3, 4), 0, 0, scales(12))),
        state_case("12.2/affine-int8-zero-point", "int8 [3, 8] groups of 4 on axis 1, float32 "
                   "scale and fractional zero point", Spec("int8", (3, 8), 1, 4, scales(6),
                                                           zero=r.uniform(-3, 3, 6))),
        state_case("12.2/affine-uint8-bf16-params", "uint8 [4, 6], groups of 2 on axis 1, "
                   "bfloat16 scale and zero point, bfloat16 result",
                   Spec("uint8", (4, 6), 1, 2, scales(12), "bfloat16",
                        zero=r.uniform(100, 150, 12)), "bfloat16", "bfloat16"),
        state_case("12.2/affine-int4-groups-cross-bytes", "int4 [2, 9] (odd count: a packed "
                   "tail), groups of 3 on axis 1 that cross byte boundaries, float16 result",
                   Spec("int4", (2, 9), 1, 3, scales(6), "float16"), "float16"),
        state_case("12.2/affine-uint4-zero-point", "uint4 [5, 4], groups of 2 on axis 0 (last "
                   "group shorter), float16 scale and zero point",
                   Spec("uint4", (5, 4), 0, 2, scales(12), "float16", zero=r.uniform(0, 15, 12)),
                   "float16", "float16"),
        state_case("12.2/affine-uint2-kivi-style", "uint2 [1, 2, 7, 4], groups of 4 tokens on "
                   "axis 2, float16 scale and zero point",
                   Spec("uint2", (1, 2, 7, 4), 2, 4, scales(16), "float16",
                        zero=r.uniform(0, 3, 16)), "float16", "float16"),
        state_case("12.2/affine-last-group-shorter", "int8 [10], groups of 4 (4, 4, 2)",
                   Spec("int8", (10,), 0, 4, scales(3))),
        state_case("12.2/affine-group-larger-than-axis", "int8 [3, 5], group_size 64 on an axis"
                   " of 5: one group", Spec("int8", (3, 5), 1, 64, scales(3))),
        state_case("12.2/affine-last-axis-rank-3", "int8 [2, 2, 6] on axis 2, groups of 2",
                   Spec("int8", (2, 2, 6), 2, 2, scales(12), "bfloat16"), "bfloat16"),
        state_case("12.2/affine-rank-1-scalar-group", "uint8 [1], one group",
                   Spec("uint8", (1,), 0, 0, np.array([0.5], np.float32))),
        state_case("12.2/empty-tensor", "int8 [2, 0] quantized along the empty axis with "
                   "group_size 4: no groups, no values", Spec("int8", (2, 0), 1, 4,
                                                              np.zeros(0, np.float32))),
    ]
    # fp8: every code once, scale 1 and a scale that rescales.
    all_codes = bytes(range(256))
    for dtype in ("float8_e4m3fn", "float8_e5m2"):
        for target in ("float32", "float16", "bfloat16"):
            out.append(state_case(
                f"12.2/scaled-float-{dtype.split('_')[1]}-all-codes-{target}",
                f"every {dtype} code (NaN and, for e5m2, infinities included) times 1 and "
                f"0.375, {target} result: NaN canonical", Spec(
                    dtype, (2, 256), 1, 0, np.array([1.0, 0.375], np.float32), target,
                    data=all_codes * 2, scheme=2)))
    tiny = _f32([0x00000001, 0x00400000])  # the smallest subnormal, and a large subnormal
    out += [
        state_case("12.2/subnormal-results-float32", "int8 codes times subnormal float32 "
                   "scales: subnormal results, never flushed to zero",
                   Spec("int8", (2, 4), 1, 0, tiny, data=bytes([1, 3, 0x7F, 0x81]) * 2)),
        state_case("12.2/subnormal-results-float16", "results in float16's subnormal range, "
                   "rounded to nearest even", Spec("int8", (1, 8), 1, 0,
                                                   np.array([2.0 ** -20], np.float32), "float16",
                                                   data=bytes([1, 2, 3, 5, 7, 11, 13, 0x7F]))),
        state_case("12.2/overflow-to-infinity", "127 x 3e38 overflows binary32 to +infinity, "
                   "-128 x 3e38 to -infinity", Spec("int8", (1, 4), 1, 0,
                                                    np.array([3e38], np.float32),
                                                    data=bytes([0x7F, 0x80, 1, 0]))),
        state_case("12.2/float16-overflow", "values above 65504 become infinity in the float16"
                   " result", Spec("int8", (1, 4), 1, 0, np.array([1000.0], np.float32),
                                   "float16", data=bytes([0x7F, 0x41, 0x42, 0xC0]))),
        state_case("12.2/float16-ties-to-even", "binary32 results exactly halfway between two "
                   "float16 values round to the even one", Spec(
                       "int8", (1, 4), 1, 0, np.array([1.0 + 2.0 ** -11], np.float32), "float16",
                       data=bytes([1, 3, 5, 0xFF]))),
        state_case("12.2/bfloat16-ties-to-even", "binary32 results whose low 16 bits are 0x8000"
                   " round to the even bfloat16 (the 12.2 formula)", Spec(
                       "int8", (1, 4), 1, 0, _f32([0x3F808000]), "bfloat16",
                       data=bytes([1, 2, 3, 0xFF]))),
        state_case("12.2/affine-two-roundings", "q - z rounds to binary32, then the product "
                   "rounds again: for these four elements (one scale and zero point each) "
                   "rounding once, or computing q*s - z*s, gives other bits",
                   Spec("int8", (1, 4), 0, 1,
                        _f32([1060592503, 1057658156, 1064594756, 1066231247]),
                        zero=_f32([1072079661, 1045111488, 1066642669, 3216727779]),
                        data=struct.pack("<4b", -7, -20, 64, -97))),
        state_case("12.2/negative-zero", "a code equal to the zero point gives 0.0, and 0.0 "
                   "times a negative scale is -0.0: the sign bit is kept",
                   Spec("int8", (1, 3), 1, 0, np.array([-2.0], np.float32),
                        zero=np.array([3.0], np.float32), data=bytes([3, 0, 5]))),
        hidden_case(),
    ]
    for name, values, zero in (("scale-nan", [1.0, float("nan")], None),
                               ("scale-infinite", [float("inf"), 1.0], None),
                               ("zero-point-infinite", [1.0, 1.0], [0.0, float("-inf")])):
        out.append(state_case(
            f"12.2/{name}", f"a {name.replace('-', ' ')} parameter: the message decodes, its "
            "dequantization is refused with QUANT_PARAMS (R-12.6)",
            Spec("int8", (2, 2), 1, 0, np.array(values, np.float32),
                 zero=None if zero is None else np.array(zero, np.float32))))
    out.append(state_case("12.2/bfloat16-scale-nan", "a bfloat16 scale holding NaN: refused",
                          Spec("int8", (2, 2), 1, 0, np.array([np.nan, 1.0], np.float32)),
                          "bfloat16"))
    out.append(state_case("12.2/float16-scale-infinite", "a float16 scale of 70000 (infinity "
                          "in float16): refused", Spec("int8", (2, 2), 1, 0,
                                                       np.array([1.0, 70000.0], np.float32)),
                          "float16"))
    return out


def hidden_case() -> CaseDef:
    """A message-level quantized HIDDEN_STATE (the shape of appendix A.4)."""
    shape = (1, 3, 8)
    scale = np.array([0.25, 0.5, 2.0], np.float32).reshape(1, 3, 1)
    s16 = scale.astype(np.float16)
    codes = _pack([(i * 5) % 16 for i in range(24)], 4)
    tensors = [WTensor(ROLES["QUANT_SCALE"], DTYPES["float16"], (1, 3, 1), s16.tobytes()),
               WTensor(ROLES["HIDDEN_STATE"], DTYPES["int4"], shape, codes, layout=BTD,
                       quant_scheme=1, quant_axis=2, group_size=0, scale_tensor=0,
                       dequant_dtype=DTYPES["bfloat16"])]
    msg = WMessage(KINDS["HIDDEN_STATE"], [ent("MODEL_ID", MODEL_ID), ent("HIDDEN_SOURCE", 1)],
                   [], tensors)
    values = dequantize("int4", shape, codes, 2, 0, s16, None, "bfloat16")
    return CaseDef("12.2/hidden-state-int4", "12.2", ["R-12.6"], "a message-level int4 "
                   "HIDDEN_STATE, one scale per position (axis 2, group_size 0), bfloat16 result",
                   msg=msg, operations=["dequantize"],
                   dequantize=[(1, {"values": values, "dtype": "bfloat16",
                                    "shape": list(shape)})])

