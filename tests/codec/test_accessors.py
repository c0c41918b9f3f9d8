"""Accessors never crash on valid messages (issue 14), and registry values print their names
(issue 19.6 "enums print their names")."""

from __future__ import annotations

import json

import numpy as np
import pytest

import avp_codec as avp

from ..hardening import hostile_codec as H

U64 = (1 << 64) - 1


@pytest.mark.parametrize("shape", [(1, 0, 2, U64), (1, U64, 2, 0), (0, 1 << 62, 2, 1 << 62)])
def test_zero_size_tensors_with_huge_dimensions(shape: tuple[int, ...]) -> None:
    tokens = shape[2]
    k = avp.Tensor(avp.Role.KEY, avp.Dtype.FLOAT16, shape, b"", layer=0,
                   layout=avp.Layout.BHTD)
    v = avp.Tensor(avp.Role.VALUE, avp.Dtype.FLOAT16, shape, b"", layer=0,
                   layout=avp.Layout.BHTD)
    msg = avp.kv_cache_message(bytes(32), tokens,
                               [avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, tokens)], [k, v])
    data = avp.encode(msg)
    back = avp.decode(data)
    t = back.tensors[0]
    assert t.shape == shape and t.raw_length == 0 and bytes(t.raw_bytes()) == b""
    for accessor in (t.array, t.values):
        with pytest.raises(avp.AvpError) as ei:
            accessor()
        assert ei.value.code == avp.ErrorCode.LIMIT_TENSOR and "numpy" in str(ei.value)
    doc = json.loads(avp.dumps_canonical_json(back))
    assert doc["tensors"][0]["shape"] == list(shape)
    assert avp.encode(back) == data
    assert "shape=" in repr(t)
    r = avp.IndexedReader(data)
    assert r.tensor(1).shape == shape


def test_shapes_numpy_can_hold_still_give_arrays() -> None:
    t = avp.Tensor(avp.Role.SSM_STATE, avp.Dtype.UINT8, (0, (1 << 63) - 1), b"", layer=0)
    assert t.array().shape == (0, (1 << 63) - 1)
    p = avp.Tensor(avp.Role.SSM_STATE, avp.Dtype.INT4, (3,), b"\x21\x03", layer=0)
    assert p.values().tolist() == [1, 2, 3]


def test_the_hostile_valid_messages_decode_and_read() -> None:
    for case in H.byte_cases():
        if case.expect_decode != "ok" or case.inflates:
            continue
        msg = avp.decode(case.build(1), **case.decode_kwargs())
        avp.dumps_canonical_json(msg)  # every accessor it uses works
        for t in msg.tensors[:50]:
            try:
                t.values()
            except avp.AvpError as e:  # a shape numpy cannot hold: the one refusal allowed
                assert e.code == avp.ErrorCode.LIMIT_TENSOR


def test_registry_values_print_their_names() -> None:
    msg = avp.decode(avp.encode(avp.text_message("hi")))
    assert str(msg.kind) == "TEXT" and f"{msg.kind}" == "TEXT"
    assert "%s" % msg.kind == "TEXT"  # noqa: UP031 - the old formatting prints the name too
    assert str(avp.Dtype.FLOAT16) == "FLOAT16" and str(avp.ErrorCode.TRUNCATED) == "TRUNCATED"
    assert int(msg.kind) == 3 and f"{msg.kind:d}" == "3" and msg.kind == 3
    assert repr(msg.kind) == "<Kind.TEXT: 3>"
    assert json.dumps({"k": msg.kind}) == '{"k": 3}'  # JSON keeps the code
    k = avp.Tensor.from_array(np.zeros((1, 1, 2, 2), np.float16), avp.Role.KEY, ordinal=0,
                              layout=avp.Layout.BHTD)
    assert f"{k.role} {k.dtype} {k.layout} {k.codec}" == "KEY FLOAT16 BHTD RAW"
