"""Robustness: arbitrary corruptions of valid messages never crash, hang or over-allocate.

Every mutated input either decodes or raises AvpError (never another exception), and the
complete-buffer and incremental decoders agree on the outcome (spec R-9.5: same code for the
same complete input). The seeds cover every structure: entries of all value types, layers of
every kind, compressed and quantized tensors, an authentication tag.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avp_codec as avp
from avp_codec import Codec, Dtype, Layer, LayerKind, Layout, Quant, QuantScheme, Role, Tensor


def _seeds() -> list[bytes]:
    k = np.arange(2 * 3 * 2, dtype=np.float16).reshape(1, 1, 3, 4)
    layers = [Layer(0, LayerKind.FULL_ATTENTION, 0, 3), Layer(2, LayerKind.SLIDING_WINDOW, 1, 2,
                                                             window=2),
              Layer(4, LayerKind.RECURRENT, 0, 3)]
    scale = Tensor.from_array(np.ones((1, 1, 3, 1), np.float32), Role.QUANT_SCALE, ordinal=0)
    q = Tensor.from_array(np.array([-3, 2, 1, 0] * 3, np.int8).reshape(1, 1, 3, 4), Role.VALUE,
                          ordinal=0, layout=Layout.BHTD, dtype=Dtype.INT4,
                          quant=Quant(QuantScheme.AFFINE, 3, 0, 2, None, Dtype.FLOAT32))
    kv = avp.kv_cache_message(b"\x01" * 32, 3, layers, [
        Tensor.from_array(np.arange(3, dtype=np.int32).reshape(1, 3), Role.TOKEN_IDS,
                          layout=Layout.BT),
        Tensor.from_array(k, Role.KEY, ordinal=0, layout=Layout.BHTD, codec=Codec.ZSTD),
        scale, q,
        Tensor.from_array(k[:, :, 1:], Role.KEY, ordinal=1, layout=Layout.BHTD,
                          codec=Codec.BYTEPLANE_ZSTD),
        Tensor.from_array(k[:, :, 1:], Role.VALUE, ordinal=1, layout=Layout.BHTD),
        Tensor.from_array(np.zeros((2, 2), np.float32), Role.SSM_STATE, ordinal=2),
    ], producer="seed", quant_policy="{}")
    hello = avp.hello_message("a", model_id=b"m" * 32, vocabulary=b"\x01\x00\x00\x00a",
                              nonce=b"n" * 16)
    text = avp.text_message("héllo", role="user")
    return [avp.encode(kv), avp.encode(hello), avp.encode(text, auth_key=(b"k", b"s"))]


SEEDS = _seeds()
KEYS = {b"k": b"s"}


def _outcome_whole(b: bytes) -> object:
    try:
        avp.decode(b, keys=KEYS)
        return "ok"
    except avp.AvpError as e:
        return e.code


def _outcome_incremental(b: bytes, chunk: int) -> object:
    d = avp.Decoder(keys=KEYS)
    ended = False
    try:
        for i in range(0, len(b), chunk):
            d.feed(b[i:i + chunk])
            while (ev := d.next_event()) is not avp.NEED_DATA:
                ended = ended or isinstance(ev, avp.EndEvent)
        d.end_of_input()
        while not ended:  # a complete input never needs more data: TRUNCATED comes here
            ev = d.next_event()
            assert ev is not avp.NEED_DATA
            ended = isinstance(ev, avp.EndEvent)
        return "ok"
    except avp.AvpError as e:
        return e.code


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    b = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "byte", "u64", "cut", "insert"]))
        at = draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            b[at] = draw(st.integers(0, 255))
        elif op == "u64" and at + 8 <= len(b):
            b[at:at + 8] = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
        elif op == "cut":
            del b[at:at + draw(st.integers(1, 64))]
        else:
            b[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.integers(1, 97))
def test_mutations_raise_only_avp_errors_and_decoders_agree(b: bytes, chunk: int) -> None:
    whole = _outcome_whole(b)
    assert _outcome_incremental(b, chunk) == whole


def test_seeds_are_valid() -> None:
    assert [_outcome_whole(s) for s in SEEDS] == ["ok", "ok", "ok"]
