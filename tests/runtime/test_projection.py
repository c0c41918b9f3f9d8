"""Vocabulary-mediated projection (spec 14.4) on small hand-made tensors: the math and the
receiver's checks. The real SmolLM2 -> Gemma pair is in test_projection_real.py."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from avp_runtime import projection as proj

import avp_codec as avp

E = avp.ErrorCode
M = avp.MetaKey
TGT_MODEL = hashlib.sha256(b"target").digest()
TGT_TOK = hashlib.sha256(b"target tok").digest()


class FakeSource:
    """Just an lm_head: logits = h @ W.T with W = identity, so h *is* the logit vector."""

    def __init__(self, vocab: int) -> None:
        self.head = torch.nn.Linear(vocab, vocab, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(vocab))

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.head


def table(src_ids: list[int], rows: torch.Tensor) -> proj.ProjectionTable:
    return proj.ProjectionTable(torch.tensor(src_ids), torch.arange(len(src_ids)), rows,
                                b"s" * 32, TGT_TOK, TGT_MODEL)


def test_a_confident_source_projects_onto_that_tokens_target_embedding() -> None:
    rows = torch.randn(3, 8)
    h = torch.tensor([[[0.0, 50.0, 0.0, 0.0, 0.0]]])  # source is sure of its token 1
    out = proj.project(FakeSource(5), h, table([0, 1, 4], rows))
    assert out.shape == (1, 1, 8)
    torch.testing.assert_close(out[0, 0], rows[1], atol=1e-6, rtol=0)


def test_mass_outside_the_shared_set_is_dropped_and_the_rest_renormalised() -> None:
    rows = torch.eye(2)
    # Tokens 0 and 2 are shared with logits 0 and log 3; token 1 (not shared) has a huge logit
    # that must not matter: p = softmax over S only = (1/4, 3/4).
    h = torch.tensor([[[0.0, 100.0, float(np.log(3.0))]]])
    out = proj.project(FakeSource(3), h, table([0, 2], rows))
    torch.testing.assert_close(out[0, 0], torch.tensor([0.25, 0.75]))


def test_temperature_flattens_the_mixture() -> None:
    rows = torch.eye(2)
    h = torch.tensor([[[0.0, 2.0]]])
    sharp = proj.project(FakeSource(2), h, table([0, 1], rows), temperature=0.1)
    flat = proj.project(FakeSource(2), h, table([0, 1], rows), temperature=1000.0)
    assert sharp[0, 0, 1] > 0.99
    torch.testing.assert_close(flat[0, 0], torch.tensor([0.5, 0.5]), atol=1e-3, rtol=0)
    with pytest.raises(ValueError):
        proj.project(FakeSource(2), h, table([0, 1], rows), temperature=0.0)


def _message(hidden: int = 8, dtype: avp.Dtype = avp.Dtype.FLOAT32) -> avp.Message:
    states = torch.randn(1, 2, hidden)
    return proj.projection_message(states, table([0, 1, 2], torch.randn(3, hidden)),
                                   source_model_id=b"s" * 32, temperature=0.7, dtype=dtype)


def test_message_round_trip_and_metadata() -> None:
    msg = _message()
    back = avp.decode(avp.encode(msg))
    assert back.kind == avp.Kind.HIDDEN_STATE
    assert back.get(M.HIDDEN_SOURCE) == 2 and back.get(M.PROJ_METHOD) == 1
    assert back.get(M.MODEL_ID) == TGT_MODEL and back.get(M.PROJ_SHARED_VOCAB) == 3
    assert back.get(M.PROJ_TEMPERATURE) == 0.7
    got = proj.read_projection(back, model_id=TGT_MODEL, tokenizer_id=TGT_TOK, hidden_size=8)
    np.testing.assert_array_equal(got.numpy(), msg.tensors[0].array())


def test_context_token_ids_travel_with_the_state() -> None:
    states = torch.randn(1, 1, 8)
    msg = proj.projection_message(states, table([0], torch.randn(1, 8)), source_model_id=b"s" * 32,
                                  context_ids=[2, 40, 7])
    back = avp.decode(avp.encode(msg))
    assert proj.context_ids(back) == [2, 40, 7]
    got = proj.read_projection(back, model_id=TGT_MODEL, tokenizer_id=TGT_TOK, hidden_size=8)
    np.testing.assert_array_equal(got.numpy(), states.numpy())
    assert proj.context_ids(_message()) == []


def test_bfloat16_payload_is_half_the_data() -> None:
    f32, bf16 = _message(640), _message(640, avp.Dtype.BFLOAT16)
    assert f32.tensors[0].raw_length == 2 * bf16.tensors[0].raw_length == 2 * 2 * 640 * 2
    got = proj.read_projection(avp.decode(avp.encode(bf16)), model_id=TGT_MODEL,
                               tokenizer_id=TGT_TOK, hidden_size=640)
    assert got.dtype == torch.float32


@pytest.mark.parametrize(("kw", "code"), [
    ({"model_id": b"x" * 32}, E.MODEL_MISMATCH),
    ({"tokenizer_id": b"x" * 32}, E.MODEL_MISMATCH),
    ({"hidden_size": 9}, E.ROLE_SHAPE),
])
def test_receiver_refuses_a_state_meant_for_someone_else(kw: dict[str, object],
                                                         code: avp.ErrorCode) -> None:
    args: dict[str, object] = {"model_id": TGT_MODEL, "tokenizer_id": TGT_TOK, "hidden_size": 8}
    args.update(kw)
    with pytest.raises(avp.AvpError) as ei:
        proj.read_projection(avp.decode(avp.encode(_message())), **args)  # type: ignore[arg-type]
    assert ei.value.code == code


def test_receiver_refuses_non_finite_states_and_other_kinds() -> None:
    bad = torch.full((1, 1, 8), float("nan"))
    msg = proj.projection_message(bad, table([0], torch.randn(1, 8)), source_model_id=b"s" * 32)
    with pytest.raises(avp.AvpError) as ei:
        proj.read_projection(avp.decode(avp.encode(msg)), model_id=TGT_MODEL,
                             tokenizer_id=TGT_TOK, hidden_size=8)
    assert ei.value.code == E.INVALID_VALUE
    text = avp.Message(kind=avp.Kind.TEXT, entries=[avp.Entry.of(M.TEXT, "hi")])
    with pytest.raises(avp.AvpError) as ei:
        proj.read_projection(text, model_id=TGT_MODEL, tokenizer_id=TGT_TOK, hidden_size=8)
    assert ei.value.code == E.KIND_CONSTRAINT


def test_source_ids_beyond_the_head_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        proj.project(FakeSource(2), torch.zeros(1, 1, 2), table([0, 5], torch.eye(2)))


def test_injected_soft_tokens_extend_the_prompt() -> None:
    # A tiny real model: reading [prompt, embed(t)] via injection equals reading [prompt, t].
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.tensor([[3, 7, 9]])
    soft = model.get_input_embeddings()(torch.tensor([[11]]))
    got = proj.logits_with_injection(model, ids, soft)
    want = model(torch.tensor([[3, 7, 9, 11]])).logits[:, -1].float()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
