"""The receiver's side of a projection (projection.receive / generate_after) on hostile input.

Before these checks the agent embedded the message's TOKEN_IDS as they came: an id outside the
vocabulary or the latent marker -1 raised IndexError inside the embedding, zero projected
positions or TOKEN_IDS of another batch raised RuntimeError inside Transformers. The receiver is
the tiny random Llama with its synthetic 256-token vocabulary (tiny_peer.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from avp_runtime import projection as proj
from avp_runtime.connector import Connector
from avp_runtime.tiny_peer import tiny_incompatible

import avp_codec as avp

E = avp.ErrorCode
M = avp.MetaKey
HIDDEN = 32


@pytest.fixture(scope="module")
def rx() -> Connector:
    model, tok = tiny_incompatible()
    return Connector(model, tok, name="tiny-random")


def _table(rx: Connector) -> proj.ProjectionTable:
    return proj.ProjectionTable(torch.arange(4), torch.arange(4), torch.randn(4, HIDDEN),
                                b"s" * 32, rx.tokenizer_id, rx.model_id)


def _message(rx: Connector, states: Any = None, ids: Any = (5, 6, 7),
             id_rows: int = 1) -> avp.Message:
    states = torch.randn(1, 2, HIDDEN) if states is None else states
    msg = proj.projection_message(states, _table(rx), source_model_id=b"s" * 32)
    if ids is not None:
        arr = np.asarray([list(ids)] * id_rows, dtype=np.int64).reshape(id_rows, -1)
        msg.tensors.insert(0, avp.Tensor.from_array(arr, avp.Role.TOKEN_IDS,
                                                    layout=avp.Layout.BT))
    return msg


def _wire(msg: avp.Message) -> avp.Message:
    return avp.decode(avp.encode(msg))  # what crosses the wire: the codec's checks apply


def _refused(rx: Connector, msg: avp.Message, codes: set[avp.ErrorCode]) -> None:
    with pytest.raises(avp.AvpError) as ei:
        got = proj.receive(_wire(msg), rx, new_tokens=4)
        proj.generate_after(rx, got, max_new_tokens=4)
    assert ei.value.code in codes, ei.value


def test_a_projection_is_received_and_continued(rx: Connector) -> None:
    got = proj.receive(_wire(_message(rx)), rx, new_tokens=4)
    assert got.context_ids.tolist() == [[5, 6, 7]] and got.states.shape == (1, 2, HIDDEN)
    assert isinstance(proj.generate_after(rx, got, max_new_tokens=4), str)
    # Without TOKEN_IDS the state alone is read.
    alone = proj.receive(_wire(_message(rx, ids=None)), rx)
    assert alone.context_ids.shape == (1, 0)
    assert isinstance(proj.generate_after(rx, alone, max_new_tokens=2), str)


@pytest.mark.parametrize("bad", [256, 10**6, -1, -7])
def test_token_ids_outside_the_vocabulary_and_the_latent_marker(rx: Connector, bad: int) -> None:
    _refused(rx, _message(rx, ids=(5, bad, 7)), {E.INVALID_VALUE})


def test_zero_projected_positions(rx: Connector) -> None:
    _refused(rx, _message(rx, states=torch.zeros(1, 0, HIDDEN)), {E.KIND_CONSTRAINT})


def test_token_ids_of_another_batch(rx: Connector) -> None:
    # R-10.10 gives TOKEN_IDS the states' batch; a decoder may already refuse the message.
    msg = _message(rx, id_rows=2)
    try:
        wire = _wire(msg)
    except avp.AvpError as e:
        assert e.code in (E.KIND_CONSTRAINT, E.ROLE_SHAPE)
        wire = msg
    with pytest.raises(avp.AvpError) as ei:
        proj.receive(wire, rx)
    assert ei.value.code == E.KIND_CONSTRAINT


def test_a_batch_of_two_is_not_one_sequence(rx: Connector) -> None:
    _refused(rx, _message(rx, states=torch.randn(2, 1, HIDDEN), id_rows=2),
             {E.UNSUPPORTED_CAPABILITY})


def test_more_positions_than_the_model_has(rx: Connector) -> None:
    # 512 positions in the tiny model: 500 context ids + 2 states + 24 new tokens do not fit.
    msg = _message(rx, ids=[5] * 500)
    with pytest.raises(avp.AvpError) as ei:
        proj.receive(_wire(msg), rx, new_tokens=24)
    assert ei.value.code == E.UNSUPPORTED_CAPABILITY
    assert proj.receive(_wire(msg), rx, new_tokens=10).context_ids.shape == (1, 500)


def test_states_that_are_not_floating_point(rx: Connector) -> None:
    msg = _message(rx)
    i = next(i for i, t in enumerate(msg.tensors) if t.role == avp.Role.HIDDEN_STATE)
    msg.tensors[i] = avp.Tensor.from_array(np.ones((1, 2, HIDDEN), np.int8),
                                           avp.Role.HIDDEN_STATE, layout=avp.Layout.BTD)
    _refused(rx, msg, {E.UNSUPPORTED_CAPABILITY})


def test_non_finite_states(rx: Connector) -> None:
    _refused(rx, _message(rx, states=torch.full((1, 2, HIDDEN), float("inf"))),
             {E.INVALID_VALUE})


def test_quantized_states_are_dequantized(rx: Connector) -> None:
    states = torch.randn(1, 2, HIDDEN)
    msg = _message(rx, states=states)
    # Symmetric int8, one scale per position (group = the hidden axis), scale before codes.
    x = states.numpy()
    scale = (np.abs(x).max(axis=2, keepdims=True) / 127).astype(np.float32)
    codes = np.round(x / scale).astype(np.int8)
    i = next(i for i, t in enumerate(msg.tensors) if t.role == avp.Role.HIDDEN_STATE)
    q = avp.Quant(avp.QuantScheme.AFFINE, 2, HIDDEN, i, None, avp.Dtype.FLOAT32)
    msg.tensors[i:i + 1] = [
        avp.Tensor.from_array(scale, avp.Role.QUANT_SCALE),
        avp.Tensor.from_array(codes, avp.Role.HIDDEN_STATE, layout=avp.Layout.BTD, quant=q)]
    got = proj.receive(_wire(msg), rx)
    assert float((got.states - states).abs().max()) < float(scale.max())


def test_another_receiver_is_refused(rx: Connector) -> None:
    model, tok = tiny_incompatible(seed=1)
    other = Connector(model, tok, name="other")
    with pytest.raises(avp.AvpError) as ei:
        proj.receive(_wire(_message(rx)), other)
    assert ei.value.code == E.MODEL_MISMATCH
