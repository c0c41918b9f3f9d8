"""quantize_message / dequantize_message: wire round trips, error bounds, tensor order, the
recent window's tiling, QUANT_POLICY, and QUANT_PARAMS for bad parameters (spec 12)."""

from __future__ import annotations

import dataclasses
import json

import ml_dtypes
import numpy as np
import pytest

import avp_codec as avp
from avp_codec import quant
from avp_codec.quant import LayerSetting, QuantPolicy, QuantSetting

# Every test here runs on the compiled kernels and on their numpy twins (conftest.py).
pytestmark = pytest.mark.usefixtures("kernel_path")

D = avp.Dtype
T = 40  # tokens


def kv_message(layers: int = 3, tokens: int = T, layout: avp.Layout = avp.Layout.BHTD
               ) -> avp.Message:
    rng = np.random.default_rng(layers * 1000 + tokens)
    shape = (1, 2, tokens, 16) if layout == avp.Layout.BHTD else (1, tokens, 2, 16)
    # Keys get per-channel offsets (as real keys do); values are plain noise.
    offs = rng.standard_normal(16) * 4
    ks = [(rng.standard_normal(shape) + offs).astype(ml_dtypes.bfloat16) for _ in range(layers)]
    vs = [rng.standard_normal(shape).astype(ml_dtypes.bfloat16) for _ in range(layers)]
    return avp.kv_cache_from_arrays(b"\7" * 32, ks, vs, layout=layout,
                                    token_ids=np.arange(tokens, dtype=np.int32)[None])


def as_f32(t: avp.Tensor) -> np.ndarray:
    return np.asarray(t.array(), dtype=np.float32)


@pytest.mark.parametrize("name", sorted(quant.PRESETS))
@pytest.mark.parametrize("layout", [avp.Layout.BHTD, avp.Layout.BTHD])
def test_presets_round_trip_through_the_wire(name: str, layout: avp.Layout) -> None:
    msg = kv_message(layout=layout)
    q = quant.quantize_message(msg, quant.preset(name))
    wire = avp.encode(q)
    decoded = avp.decode(wire)
    assert avp.encode(decoded) == wire  # canonical: re-encoding reproduces the bytes
    out = quant.dequantize_message(decoded)
    assert out.get(avp.MetaKey.QUANT_POLICY) is None
    assert [(t.role, t.layer, t.shape, t.dtype, t.token_offset) for t in out.tensors] == [
        (t.role, t.layer, t.shape, t.dtype, t.token_offset) for t in msg.tensors]
    # Error bound: half a quantization step plus bf16 rounding of the result, per group.
    bits = {"int8": 8, "int4": 4, "int4_fine": 4, "int2": 2}.get(name)
    for a, b in zip(msg.tensors[1:], out.tensors[1:], strict=True):
        x, y = as_f32(a), as_f32(b)
        span = float(x.max() - x.min())
        if bits is not None:
            bound = span / ((1 << bits) - 1) / 2 * 1.02 + np.abs(x).max() * 2.0**-8
        else:  # fp8: relative error of the fp8 mantissa, plus bf16 rounding
            bound = np.abs(x).max() * (2.0**-3 if "e4m3" in name else 2.0**-2)
        assert float(np.abs(x - y).max()) <= bound


def test_scales_precede_their_data_and_are_referenced_once() -> None:
    q = quant.quantize_message(kv_message(), quant.preset("int4"))
    seen = set()
    for i, t in enumerate(q.tensors):
        if t.quant is None:
            continue
        refs = [r for r in (t.quant.scale_tensor, t.quant.zero_point_tensor) if r is not None]
        assert all(r < i and q.tensors[r].layer == t.layer for r in refs)
        assert not seen & set(refs)
        seen |= set(refs)
    assert seen == {i for i, t in enumerate(q.tensors) if t.role in
                    (avp.Role.QUANT_SCALE, avp.Role.QUANT_ZERO_POINT)}


def _tiles(msg: avp.Message, layer: int, role: avp.Role) -> list[tuple[int, int, bool]]:
    return [(t.token_offset, t.shape[2], t.quant is not None) for t in msg.tensors
            if t.layer == layer and t.role == role]


@pytest.mark.parametrize("window,expect", [
    (0, [(0, T, True)]),
    (8, [(0, T - 8, True), (T - 8, 8, False)]),
    (T, [(0, T, False)]),
    (T + 5, [(0, T, False)]),
])
def test_recent_window_tiles_the_layer(window: int, expect: list[tuple[int, int, bool]]) -> None:
    s = QuantSetting(D.UINT2, "tokens", 16, True, recent_window=window)
    q = quant.quantize_message(kv_message(), QuantPolicy(LayerSetting(s, s)))
    for role in (avp.Role.KEY, avp.Role.VALUE):
        assert _tiles(q, 1, role) == expect
    decoded = avp.decode(avp.encode(q))  # the validator checks the tiling
    out = quant.dequantize_message(decoded)
    key = next(t for t in out.tensors if t.layer == 1 and t.role == avp.Role.KEY)
    orig = next(t for t in kv_message().tensors if t.layer == 1 and t.role == avp.Role.KEY)
    # The window's tokens come back bit-identical.
    if window:
        w = min(window, T)
        assert np.array_equal(as_f32(key)[:, :, T - w:], as_f32(orig)[:, :, T - w:])


def test_window_spanning_existing_tiles() -> None:
    """A cache already sent as two tiles: the window splits only the tile it falls in."""
    msg = kv_message(layers=1)
    tiles = []
    for t in msg.tensors:
        if t.layer is None:
            tiles.append(t)
            continue
        a = t.array()
        tiles.append(avp.Tensor.from_array(a[:, :, :30], t.role, ordinal=0, layout=t.layout))
        tiles.append(avp.Tensor.from_array(a[:, :, 30:], t.role, ordinal=0, layout=t.layout,
                                           token_offset=30))
    two = avp.Message(msg.kind, msg.entries, msg.layers, tiles)
    s = QuantSetting(D.UINT4, "channels", 8, True, recent_window=4)
    q = quant.quantize_message(two, QuantPolicy(LayerSetting(s, s)))
    assert _tiles(q, 0, avp.Role.KEY) == [(0, 30, True), (30, 6, True), (36, 4, False)]
    out = quant.dequantize_message(avp.decode(avp.encode(q)))
    assert _tiles(out, 0, avp.Role.KEY) == [(0, T, False)]


def test_policy_recorded_and_parsed_back() -> None:
    policy = QuantPolicy(
        LayerSetting(QuantSetting(D.UINT4, "tokens", 32), None),
        {2: LayerSetting(None, QuantSetting(D.FLOAT8_E5M2, "channels", 0, False))},
    )
    q = quant.quantize_message(kv_message(), policy)
    text = q.get(avp.MetaKey.QUANT_POLICY)
    assert isinstance(text, str)
    assert json.loads(text)["avp_quant_policy"] == 1
    assert QuantPolicy.from_json(text) == policy
    kinds = {(t.layer, t.role): t.dtype for t in q.tensors if t.quant is not None}
    assert kinds == {(0, avp.Role.KEY): D.UINT4, (1, avp.Role.KEY): D.UINT4,
                     (2, avp.Role.VALUE): D.FLOAT8_E5M2}


def test_constant_and_zero_groups_are_exact() -> None:
    k = np.zeros((1, 1, 8, 4), ml_dtypes.bfloat16)
    k[:, :, :, 1] = 3.5
    k[:, :, :, 2] = -0.25
    msg = avp.kv_cache_from_arrays(b"\0" * 32, [k], [k.copy()])
    for name in ("int8", "int4", "int2", "fp8_e4m3fn"):
        out = quant.dequantize_message(quant.quantize_message(msg, quant.preset(name)))
        assert np.array_equal(as_f32(out.tensors[0]), k.astype(np.float32)), name


def test_already_quantized_input_is_refused() -> None:
    q = quant.quantize_message(kv_message(), quant.preset("int8"))
    with pytest.raises(avp.AvpError) as e:
        quant.quantize_message(q, quant.preset("int8"))
    assert e.value.code == avp.ErrorCode.QUANT_PARAMS


def test_bad_settings_are_quant_params() -> None:
    for kwargs in ({"dtype": D.FLOAT8_E4M3FN, "zero_point": True},
                   {"dtype": D.BFLOAT16}, {"dtype": D.INT8, "param_dtype": D.INT8},
                   {"dtype": D.INT8, "recent_window": -1}):
        with pytest.raises(avp.AvpError) as e:
            QuantSetting(**kwargs)  # type: ignore[arg-type]
        assert e.value.code == avp.ErrorCode.QUANT_PARAMS
    with pytest.raises(avp.AvpError):
        QuantPolicy.from_json('{"avp_quant_policy": 2}')


# -- QUANT_PARAMS from the codec's validator on messages with bad parameters ---------------------
def _mutated(mutate: str) -> avp.Message:
    q = quant.quantize_message(kv_message(layers=1), quant.preset("int4"))
    tensors = list(q.tensors)
    data_i = next(i for i, t in enumerate(tensors) if t.quant is not None)
    data = tensors[data_i]
    assert data.quant is not None
    qd = data.quant

    def with_quant(**kw: object) -> avp.Tensor:
        fields = {"scheme": qd.scheme, "axis": qd.axis, "group_size": qd.group_size,
                  "scale_tensor": qd.scale_tensor, "zero_point_tensor": qd.zero_point_tensor,
                  "dequant_dtype": qd.dequant_dtype, **kw}
        return avp.Tensor.from_bytes(bytes(data.stored), data.role, data.dtype, data.shape,
                                     layer=data.layer, layout=data.layout,
                                     quant=avp.Quant(**fields))  # type: ignore[arg-type]

    if mutate == "group_size":        # parameter shape no longer matches the grouping
        tensors[data_i] = with_quant(group_size=16)
    elif mutate == "forward_ref":     # scale named after the tensor that uses it
        tensors[data_i] = with_quant(scale_tensor=data_i + 1)
    elif mutate == "swapped_roles":   # the scale field names the zero-point tensor
        tensors[data_i] = with_quant(scale_tensor=qd.zero_point_tensor,
                                     zero_point_tensor=qd.scale_tensor)
    elif mutate == "fp8_zero_point":  # SCALED_FLOAT with a zero point
        tensors[data_i] = with_quant(scheme=avp.QuantScheme.SCALED_FLOAT)
    elif mutate == "scheme_dtype":    # SCALED_FLOAT cannot store uint4
        tensors[data_i] = with_quant(scheme=avp.QuantScheme.SCALED_FLOAT, zero_point_tensor=None)
    elif mutate == "dequant_dtype":
        tensors[data_i] = with_quant(dequant_dtype=D.INT8)
    elif mutate == "axis":
        tensors[data_i] = with_quant(axis=4)
    elif mutate == "orphan":          # a zero point nobody references
        tensors[data_i] = with_quant(zero_point_tensor=None)
    elif mutate == "shared":          # the next tensor reuses this tensor's scale
        nxt = next(i for i, t in enumerate(tensors) if t.quant is not None and i > data_i)
        nq = tensors[nxt].quant
        assert nq is not None
        t2 = tensors[nxt]
        tensors[nxt] = avp.Tensor.from_bytes(
            bytes(t2.stored), t2.role, t2.dtype, t2.shape, layer=t2.layer, layout=t2.layout,
            quant=avp.Quant(nq.scheme, nq.axis, nq.group_size, qd.scale_tensor,
                            nq.zero_point_tensor, nq.dequant_dtype))
    return avp.Message(q.kind, q.entries, q.layers, tensors)


@pytest.mark.parametrize("mutate", ["group_size", "forward_ref", "swapped_roles",
                                    "fp8_zero_point", "scheme_dtype", "dequant_dtype", "axis",
                                    "orphan", "shared"])
def test_bad_parameters_are_rejected_with_quant_params(mutate: str) -> None:
    with pytest.raises(avp.AvpError) as e:
        avp.encode(_mutated(mutate))
    assert e.value.code == avp.ErrorCode.QUANT_PARAMS


def test_non_finite_parameter_is_rejected_at_dequantization() -> None:
    """R-12.6: an infinite scale is QUANT_PARAMS when dequantizing."""
    q = quant.quantize_message(kv_message(layers=1), quant.preset("int8"))
    scale_i = next(i for i, t in enumerate(q.tensors) if t.role == avp.Role.QUANT_SCALE)
    s = np.array(q.tensors[scale_i].array())
    s.reshape(-1)[3] = np.inf
    tensors = list(q.tensors)
    tensors[scale_i] = avp.Tensor.from_array(s, avp.Role.QUANT_SCALE, ordinal=0)
    decoded = avp.decode(avp.encode(avp.Message(q.kind, q.entries, q.layers, tensors)))
    with pytest.raises(avp.AvpError) as e:
        quant.dequantize_message(decoded)
    assert e.value.code == avp.ErrorCode.QUANT_PARAMS


def test_sink_tokens_and_window_make_three_tiles() -> None:
    s = QuantSetting(D.UINT4, "tokens", 8, True, recent_window=6, sink_tokens=4)
    msg = kv_message(layers=1)
    q = quant.quantize_message(msg, QuantPolicy(LayerSetting(s, s)))
    assert _tiles(q, 0, avp.Role.KEY) == [(0, 4, False), (4, T - 10, True), (T - 6, 6, False)]
    assert quant.policy_kv_bytes(msg, QuantPolicy(LayerSetting(s, s))) == \
        quant.message_kv_bytes(q)
    out = quant.dequantize_message(avp.decode(avp.encode(q)))
    key = as_f32(out.tensors[1])
    assert np.array_equal(key[:, :, :4], as_f32(msg.tensors[1])[:, :, :4])


def test_clip_search_never_increases_group_error() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 64, 16)).astype(np.float32)
    x[0, 0, 3, 2] = 9.0  # an outlier that stretches its group's range
    for dtype in (D.UINT2, D.UINT4, D.INT4):
        errs = []
        for clip in (False, True):
            s = QuantSetting(dtype, "channels", 16, dtype != D.INT4, clip_search=clip)
            codes, scale, zp = quant.quantize_array(x, s, 3)
            y = quant.dequantize_array(codes, scale, zp, 3, 16, "float32")
            errs.append(((y - x) ** 2).reshape(-1, 16).sum(axis=1))
        assert np.all(errs[1] <= errs[0] * (1 + 1e-6)) and errs[1].sum() < errs[0].sum()


def test_compress_is_lossless_and_smaller() -> None:
    """compress=True only changes codecs: the same codes and parameters decode to the same bits,
    codes are ZSTD, parameters and sink tiles BYTEPLANE_ZSTD (or RAW where that is smaller)."""
    # Outlier tokens (as real keys have): one token in 20 is 30x larger and sets its group's
    # range, the other codes crowd near the middle, and zstd finds their low entropy.
    rng = np.random.default_rng(5)
    ks = []
    for _ in range(2):
        k = rng.standard_normal((1, 2, 200, 16))
        k[:, :, ::20] *= 30
        ks.append(k.astype(ml_dtypes.bfloat16))
    msg = avp.kv_cache_from_arrays(b"\7" * 32, ks, [k.copy() for k in ks])
    plain = LayerSetting(QuantSetting(D.UINT4, "tokens", 32, sink_tokens=1),
                         QuantSetting(D.UINT4, "channels", 16, sink_tokens=1))
    packed = LayerSetting(*(dataclasses.replace(s, compress=True)
                            for s in (plain.key, plain.value)))
    wire_plain = avp.encode(quant.quantize_message(msg, QuantPolicy(plain)))
    decoded = avp.decode(avp.encode(quant.quantize_message(msg, QuantPolicy(packed))))
    assert len(avp.encode(decoded)) < len(wire_plain)
    codecs = {(t.quant is not None, t.codec) for t in decoded.tensors if t.layer is not None}
    assert (True, avp.Codec.ZSTD) in codecs
    assert (False, avp.Codec.BYTEPLANE_ZSTD) in codecs
    assert all(c in (avp.Codec.ZSTD, avp.Codec.RAW) for q, c in codecs if q)
    a = quant.dequantize_message(avp.decode(wire_plain))
    b = quant.dequantize_message(decoded)
    for x, y in zip(a.tensors, b.tensors, strict=True):
        assert bytes(x.raw_bytes()) == bytes(y.raw_bytes())
    policy = json.loads(decoded.get(avp.MetaKey.QUANT_POLICY))  # type: ignore[arg-type]
    assert policy["default"]["key"]["compress"] is True
