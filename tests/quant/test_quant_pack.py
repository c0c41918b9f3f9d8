"""Sub-byte packing of quantized tensors (spec 7.2) as produced by quantize_message: element
order, odd lengths and tails, zero padding bits; checked against a bit-by-bit reference."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import avp_codec as avp
from avp_codec import quant

# Every test here runs on the compiled kernels and on their numpy twins (conftest.py).
pytestmark = pytest.mark.usefixtures("kernel_path")

BITS = {avp.Dtype.INT4: 4, avp.Dtype.UINT4: 4, avp.Dtype.UINT2: 2}


def reference_pack(values: list[int], bits: int) -> bytes:
    """Element i goes to bit position (i * bits) % 8 of byte (i * bits) // 8, two's complement."""
    out = bytearray((len(values) * bits + 7) // 8)
    for i, v in enumerate(values):
        pos = i * bits
        out[pos // 8] |= (v & ((1 << bits) - 1)) << (pos % 8)
    return bytes(out)


@pytest.mark.parametrize("dtype", list(BITS))
@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, 7, 8, 9, 63])
def test_packing_matches_reference(dtype: avp.Dtype, count: int) -> None:
    bits = BITS[dtype]
    lo, hi = (-8, 7) if dtype == avp.Dtype.INT4 else (0, (1 << bits) - 1)
    rng = np.random.default_rng(count)
    vals = rng.integers(lo, hi + 1, size=count)
    t = avp.Tensor.from_array(vals.astype(np.int8), avp.Role.CONV_STATE, dtype=dtype)
    assert bytes(t.raw_bytes()) == reference_pack(vals.tolist(), bits)
    assert t.raw_length == (count * bits + 7) // 8
    assert t.values().tolist() == vals.tolist()


@pytest.mark.parametrize("tokens", [1, 3, 31, 33])
def test_quantized_cache_with_odd_element_counts_round_trips(tokens: int) -> None:
    """Odd element counts leave a half-used last byte; the wire form must decode and the codes
    must be the ones the quantizer chose."""
    rng = np.random.default_rng(tokens)
    k = rng.standard_normal((1, 1, tokens, 3)).astype(ml_dtypes.bfloat16)
    msg = avp.kv_cache_from_arrays(b"\1" * 32, [k], [k.copy()])
    for name in ("int4", "int2"):
        policy = quant.QuantPolicy(quant.LayerSetting(
            quant.QuantSetting(avp.Dtype.UINT2 if name == "int2" else avp.Dtype.INT4, "tokens",
                               2, name == "int2"),
            None))
        q = quant.quantize_message(msg, policy)
        data = next(t for t in q.tensors if t.quant is not None)
        codes, _, _ = quant.quantize_array(k, policy.default.key, 2)  # type: ignore[arg-type]
        decoded = avp.decode(avp.encode(q))
        again = next(t for t in decoded.tensors if t.quant is not None)
        assert again.values().tolist() == codes.tolist() == data.values().tolist()
        used = (tokens * 3 * data_bits(data.dtype)) % 8
        if used:
            assert bytes(again.stored)[-1] >> used == 0


def data_bits(d: avp.Dtype) -> int:
    return BITS[d]


def test_nonzero_padding_bits_are_rejected() -> None:
    """Setting an unused high bit of the last byte makes the message invalid (R-1.3 / 7.2)."""
    vals = np.array([1, 2, 3], dtype=np.int8)  # 3 int4 elements: the high nibble of byte 1 is pad
    scale = np.ones((1,), np.float32)
    t = avp.Tensor.from_array(vals, avp.Role.CONV_STATE, dtype=avp.Dtype.INT4,
                              quant=avp.Quant(avp.QuantScheme.AFFINE, 0, 0, 0, None,
                                              avp.Dtype.FLOAT32))
    tensors = [avp.Tensor.from_array(scale, avp.Role.QUANT_SCALE, ordinal=0)]
    stored = bytearray(t.stored)
    stored[-1] |= 0x80
    bad = avp.Tensor.from_bytes(bytes(stored), avp.Role.CONV_STATE, avp.Dtype.INT4, (3,),
                                layer=0, quant=t.quant)
    layers = [avp.Layer(0, avp.LayerKind.RECURRENT, 0, 5)]
    with pytest.raises(avp.AvpError) as e:
        avp.decode(avp.encode(avp.kv_cache_message(b"\0" * 32, 5, layers, [*tensors, bad])))
    assert e.value.code == avp.ErrorCode.NONZERO_PADDING
