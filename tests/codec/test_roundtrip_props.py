"""Property tests: arbitrary valid messages round-trip exactly.

The strategy covers every kind, every dtype, ranks 0-8, empty tensors, many and heterogeneous
layers (full, sliding window, recurrent state; K and V of different widths; MLA-style latent KV),
batch > 1, token ids/positions/masks, tiles of one (layer, role), compressed codecs, quantized
tensors with their scale / zero-point references, and unknown skippable entries (which must be
preserved). Data comes from a numpy generator seeded by hypothesis (cheap to shrink).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avp_codec as avp
from avp_codec import (
    Codec,
    Dtype,
    Entry,
    Kind,
    Layer,
    LayerKind,
    Layout,
    Quant,
    QuantScheme,
    Role,
    Tensor,
    ValueType,
)
from avp_codec._dtypes import NUMPY_DTYPES, PACKED

FLOATS = [Dtype.FLOAT32, Dtype.FLOAT16, Dtype.BFLOAT16]
ALL_DTYPES = list(Dtype)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _tensor(rng: np.random.Generator, shape: tuple[int, ...], dtype: Dtype, role: Role,
            codec: Codec, **kw: Any) -> Tensor:
    n = int(np.prod(shape)) if shape else 1
    if dtype in PACKED:
        hi = {Dtype.INT4: (-8, 8), Dtype.UINT4: (0, 16), Dtype.UINT2: (0, 4)}[dtype]
        vals = rng.integers(hi[0], hi[1], size=shape, dtype=np.int64)
        return Tensor.from_array(vals, role, dtype=dtype, codec=codec, **kw)
    npd = NUMPY_DTYPES[dtype]
    raw = rng.integers(0, 256, size=n * npd.itemsize, dtype=np.uint8).tobytes()
    arr = np.frombuffer(raw, dtype=npd).reshape(shape)
    return Tensor.from_array(arr, role, codec=codec, **kw)


def _codec_for(draw: Any, dtype: Dtype) -> Codec:
    options = [Codec.RAW, Codec.ZSTD]
    if dtype in (Dtype.FLOAT32, Dtype.FLOAT16, Dtype.BFLOAT16, Dtype.INT32, Dtype.INT64):
        options.append(Codec.BYTEPLANE_ZSTD)
    return draw(st.sampled_from(options))  # type: ignore[no-any-return]


def _unknown_entries(draw: Any) -> list[Entry]:
    out = []
    for key in draw(st.lists(st.integers(1000, 65535), max_size=3, unique=True)):
        vtype = draw(st.sampled_from([1, 4, 5, 6, 7, 200]))
        value: Any = {1: draw(st.integers(0, 2**64 - 1)), 4: "x" * draw(st.integers(0, 9)),
                      5: draw(st.binary(max_size=12)),
                      6: tuple(draw(st.lists(st.integers(0, 2**32 - 1), max_size=3)))}.get(
                          vtype, draw(st.binary(max_size=12)))
        out.append(Entry(key, ValueType(vtype) if vtype <= 6 else vtype, value, False))
    return out


def _quantized_tile(draw: Any, rng: np.random.Generator, shape: tuple[int, ...], role: Role,
                    layer: int, layout: Layout, token_offset: int, first_index: int
                    ) -> list[Tensor]:
    """A scale (and maybe zero point) tensor followed by the tensor that uses them."""
    scheme = draw(st.sampled_from([QuantScheme.AFFINE, QuantScheme.SCALED_FLOAT]))
    dtype = draw(st.sampled_from(
        [Dtype.INT8, Dtype.UINT8, Dtype.INT4, Dtype.UINT4, Dtype.UINT2]
        if scheme == QuantScheme.AFFINE else [Dtype.FLOAT8_E4M3FN, Dtype.FLOAT8_E5M2]))
    axis = draw(st.integers(0, len(shape) - 1))
    group = draw(st.integers(0, 3))
    d = shape[axis]
    groups = 1 if group == 0 else -(-d // group)
    pshape = shape[:axis] + (groups,) + shape[axis + 1:]
    out = [_tensor(rng, pshape, draw(st.sampled_from(FLOATS)), Role.QUANT_SCALE, Codec.RAW,
                   ordinal=layer)]
    zp = None
    if scheme == QuantScheme.AFFINE and draw(st.booleans()):
        out.append(_tensor(rng, pshape, draw(st.sampled_from(FLOATS)), Role.QUANT_ZERO_POINT,
                           Codec.RAW, ordinal=layer))
        zp = first_index + 1
    q = Quant(scheme, axis, group, first_index, zp, draw(st.sampled_from(FLOATS)))
    out.append(_tensor(rng, shape, dtype, role, _codec_for(draw, dtype), ordinal=layer,
                       layout=layout, token_offset=token_offset, quant=q))
    return out


@st.composite
def kv_messages(draw: Any) -> avp.Message:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch = draw(st.integers(1, 2))
    ctx = draw(st.integers(0, 6))
    n_layers = draw(st.integers(1, 6))
    indices = sorted(draw(st.lists(st.integers(0, 200), min_size=n_layers, max_size=n_layers,
                                   unique=True)))
    layers: list[Layer] = []
    for idx in indices:
        lk = draw(st.sampled_from(list(LayerKind)))
        if lk == LayerKind.SLIDING_WINDOW:
            w = draw(st.integers(1, 8))
            held = min(ctx, w)
            layers.append(Layer(idx, lk, ctx - held, held, window=w))
        else:
            layers.append(Layer(idx, lk, 0, ctx))
    tensors: list[Tensor] = []
    for role in draw(st.lists(st.sampled_from([Role.TOKEN_IDS, Role.POSITIONS,
                                               Role.ATTENTION_MASK]), unique=True)):
        dt = Dtype.UINT8 if role == Role.ATTENTION_MASK else draw(
            st.sampled_from([Dtype.INT32, Dtype.INT64]))
        if role == Role.ATTENTION_MASK:  # producers write only 0 and 1
            mask = rng.integers(0, 2, (batch, ctx), dtype=np.uint8)
            tensors.append(Tensor.from_array(mask, role, layout=Layout.BT,
                                             codec=_codec_for(draw, dt)))
            continue
        tensors.append(_tensor(rng, (batch, ctx), dt, role, _codec_for(draw, dt),
                               layout=Layout.BT))
    for li, layer in enumerate(layers):
        if layer.kind == LayerKind.RECURRENT:
            for role in draw(st.lists(st.sampled_from([Role.CONV_STATE, Role.SSM_STATE]),
                                      min_size=1, unique=True)):
                rank = draw(st.integers(0, 8))
                shape = tuple(draw(st.lists(st.integers(0, 3), min_size=rank, max_size=rank)))
                dt = draw(st.sampled_from(ALL_DTYPES))
                tensors.append(_tensor(rng, shape, dt, role, _codec_for(draw, dt), ordinal=li))
            continue
        latent = draw(st.booleans()) and draw(st.booleans())
        roles = [Role.LATENT_KV] if latent else [Role.KEY, Role.VALUE]
        for role in roles:
            layout = Layout.BTD if latent else draw(st.sampled_from([Layout.BHTD, Layout.BTHD]))
            heads, width = draw(st.integers(1, 3)), draw(st.integers(1, 5))
            # chunks are non-empty unless the layer is
            cuts = sorted(draw(st.lists(st.integers(1, max(1, layer.token_count - 1)),
                                        max_size=2, unique=True))) \
                if layer.token_count > 1 else []
            bounds = [0, *cuts, layer.token_count]
            for a, b in zip(bounds, bounds[1:], strict=False):
                n = b - a
                shape = ((batch, n, width) if latent else (batch, heads, n, width)
                         if layout == Layout.BHTD else (batch, n, heads, width))
                if draw(st.integers(0, 3)) == 0:
                    tensors += _quantized_tile(draw, rng, shape, role, li, layout, a,
                                               len(tensors))
                else:
                    dt = draw(st.sampled_from(FLOATS + [Dtype.FLOAT8_E4M3FN, Dtype.INT8]))
                    tensors.append(_tensor(rng, shape, dt, role, _codec_for(draw, dt), ordinal=li,
                                           layout=layout, token_offset=a))
    return avp.kv_cache_message(
        bytes(rng.integers(0, 256, 32, dtype=np.uint8)), ctx, layers, tensors,
        producer=draw(st.none() | st.just("avp-test")), extra=_unknown_entries(draw))


@st.composite
def other_messages(draw: Any) -> avp.Message:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from([Kind.HIDDEN_STATE, Kind.TEXT, Kind.HELLO, Kind.ACCEPT,
                                 Kind.ERROR]))
    extra = _unknown_entries(draw)
    if kind == Kind.HIDDEN_STATE:
        b, t, f = draw(st.integers(1, 2)), draw(st.integers(0, 4)), draw(st.integers(1, 6))
        hs = [_tensor(rng, (b, t, f), draw(st.sampled_from(FLOATS)), Role.HIDDEN_STATE,
                      Codec.RAW, layout=Layout.BTD) for _ in range(draw(st.integers(1, 2)))]
        proj = draw(st.booleans())
        return avp.hidden_state_message(
            bytes(32), hs, source=2 if proj else 1,
            token_ids=rng.integers(0, 1000, (b, t)).astype(np.int64) if draw(st.booleans())
            else None,
            proj_method=1 if proj else None, proj_source_tokenizer_id=b"s" * 32 if proj else None,
            proj_target_tokenizer_id=b"t" * 32 if proj else None,
            proj_shared_vocab=7 if proj else None,
            proj_temperature=draw(st.floats(0.01, 10)) if proj else None, extra=extra)
    if kind == Kind.TEXT:
        text = draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
        return avp.text_message(text.lstrip("\ufeff"), role=draw(st.none() | st.just("user")),
                                extra=extra)
    if kind == Kind.HELLO:
        return avp.hello_message("agent", model_id=draw(st.none() | st.just(b"m" * 32)),
                                 vocabulary=b"\x01\x00\x00\x00a", nonce=b"n" * 16, extra=extra)
    if kind == Kind.ACCEPT:
        return avp.accept_message("agent", draw(st.sampled_from(list(avp.Mode))),
                                  nonce=b"n" * 16, modes=[1, 3], extra=extra)
    return avp.error_message(draw(st.sampled_from(list(avp.ErrorCode))),
                             draw(st.none() | st.text(max_size=10)), extra=extra)


def _check_roundtrip(msg: avp.Message, chunk: int) -> None:
    b = avp.encode(msg)
    d = avp.decode(b)
    assert d == msg
    assert avp.encode(d) == b
    assert avp.dumps_canonical_json(d) == avp.dumps_canonical_json(msg)
    for t_in, t_out in zip(msg.tensors, d.tensors, strict=True):
        assert np.array_equal(t_in.values().reshape(-1).view(np.uint8),
                              t_out.values().reshape(-1).view(np.uint8))
    doc = avp.to_canonical_json(d)  # the JSON plus the stored bytes rebuild it
    rebuilt = avp.from_canonical_json(json.loads(json.dumps(doc)),
                                      b"".join(t.stored.tobytes() for t in d.tensors))
    assert rebuilt == d and avp.encode(rebuilt) == b
    reader = avp.IndexedReader(b)  # random access (11.3) reads the same tensors
    assert [reader.tensor(i) for i in range(len(reader))] == d.tensors
    # the incremental decoder, fed in chunks, yields the same message
    dec = avp.Decoder()
    tensors: list[Tensor] = []
    header = None
    end = None
    for i in range(0, len(b), chunk):
        dec.feed(b[i:i + chunk])
        while (ev := dec.next_event()) is not avp.NEED_DATA:
            if isinstance(ev, avp.HeaderEvent):
                header = ev
            elif isinstance(ev, avp.TensorEvent):
                tensors.append(ev.tensor)
            else:
                end = ev
    assert header is not None and end is not None and end.length == len(b)
    assert avp.Message(header.kind, header.entries, header.layers, tensors) == msg


@SETTINGS
@given(kv_messages(), st.integers(1, 300))
def test_kv_cache_roundtrip(msg: avp.Message, chunk: int) -> None:
    _check_roundtrip(msg, chunk)


@SETTINGS
@given(other_messages(), st.integers(1, 300))
def test_other_kinds_roundtrip(msg: avp.Message, chunk: int) -> None:
    _check_roundtrip(msg, chunk)


def test_unknown_skippable_entry_is_preserved() -> None:
    extra = [Entry(4000, 200, b"\x01\x02", False), Entry(4001, ValueType.U64, 5, False)]
    b = avp.encode(avp.text_message("x", extra=extra))
    d = avp.decode(b)
    assert [e for e in d.entries if e.key >= 4000] == extra
    assert avp.encode(d) == b


def test_byte_at_a_time_equals_whole_buffer() -> None:
    k = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    msg = avp.kv_cache_from_arrays(b"\x07" * 32, [k, k[:, :2]], [k, k[:, :2]],
                                   token_ids=np.arange(8).reshape(2, 4), codec=Codec.ZSTD)
    b = avp.encode(msg, auth_key=(b"id", b"key"))
    whole = avp.decode(b, keys={b"id": b"key"})
    dec = avp.Decoder(keys={b"id": b"key"}, require_auth=True)
    events = []
    for i in range(len(b)):
        dec.feed(b[i:i + 1])
        while (ev := dec.next_event()) is not avp.NEED_DATA:
            events.append(ev)
    assert isinstance(events[0], avp.HeaderEvent) and isinstance(events[-1], avp.EndEvent)
    assert events[-1].authenticated and whole.authenticated
    tensors = [e.tensor for e in events if isinstance(e, avp.TensorEvent)]
    assert tensors == whole.tensors
    assert events[0].entries == whole.entries and events[0].layers == whole.layers
