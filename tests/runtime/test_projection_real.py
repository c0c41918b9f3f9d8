"""Projection between the two real models: SmolLM2-135M (byte-level BPE) -> Gemma-3-270M
(SentencePiece). Shares the session's model loads (conftest.py)."""

from __future__ import annotations

import pytest
from avp_runtime import handshake as hs
from avp_runtime import identity
from avp_runtime import projection as proj
from avp_runtime.connector import Connector
from avp_runtime.projection_eval import PROMPTS, evaluate
from avp_runtime.vocab import VocabIndex, compatible, shared_size

import avp_codec as avp

pytestmark = pytest.mark.slow


def test_real_vocabularies_are_compatible_only_after_normalisation(smol: Connector,
                                                                   gemma: Connector) -> None:
    a = VocabIndex.build(identity.vocabulary(smol.tokenizer))
    b = VocabIndex.build(identity.vocabulary(gemma.tokenizer))
    assert a.byte_level and not b.byte_level
    shared = shared_size(a, b)
    assert compatible(shared, a.size, b.size)
    assert shared > 40_000  # most of SmolLM2's 49,152 tokens exist in Gemma's 262,144
    # Compared in stored form ("Ġthe" vs "▁the"), far fewer match: normalisation matters.
    literal = set(identity.vocabulary(smol.tokenizer)) & set(identity.vocabulary(gemma.tokenizer))
    assert len(literal) < shared // 2


def test_handshake_between_the_real_models_resolves_projection(smol: Connector,
                                                               gemma: Connector) -> None:
    def side(c: Connector, **kw: object) -> hs.LocalSide:
        return hs.LocalSide(agent_name=c.name, model_id=c.model_id, tokenizer_id=c.tokenizer_id,
                            vocabulary=identity.vocabulary(c.tokenizer), **kw)  # type: ignore

    a = side(smol, known_vocabularies={gemma.tokenizer_id: identity.vocabulary(gemma.tokenizer)})
    init = hs.Initiator(a)
    reply, res_b = hs.Responder(side(gemma)).handle_hello(avp.decode(avp.encode(init.hello())))
    res_a = init.handle_accept(avp.decode(avp.encode(reply)))
    assert res_b is not None
    assert res_a.mode == res_b.mode == avp.Mode.PROJECTION
    assert res_a.shared_vocab == res_b.shared_vocab


def test_projection_beats_no_handoff_on_the_real_pair(smol: Connector, gemma: Connector) -> None:
    table = proj.ProjectionTable.build(smol.tokenizer, gemma.model, gemma.tokenizer,
                                       target_model_id=gemma.model_id)
    res = evaluate(smol.model, smol.tokenizer, gemma.model, gemma.tokenizer, prompts=PROMPTS[:6],
                   table=table, source_model_id=smol.model_id)
    # A 640-float payload: well under 4 KB as float32 with the header, about half as bf16.
    assert res["payload_bytes"]["float32"] < 4096
    assert res["payload_bytes"]["bfloat16"] < res["payload_bytes"]["float32"]
    # The projection carries the source's choice: its heaviest shared token is the source's
    # argmax, and the target's next-token distribution is far closer to the text reference
    # than with no handoff at all.
    assert res["heaviest_is_source_top1"] == 1.0
    assert res["mean_kl_projected"] < res["mean_kl_none"]
    assert res["top1_agreement_projected"] > res["top1_agreement_none"]


def test_receiver_refuses_a_projection_for_another_model(smol: Connector,
                                                          gemma: Connector) -> None:
    table = proj.ProjectionTable.build(smol.tokenizer, gemma.model, gemma.tokenizer,
                                       target_model_id=gemma.model_id)
    ids = smol._ids_tensor(smol.encode_prompt("Hello"))
    soft = proj.project(smol.model, proj.last_hidden(smol.model, ids)[:, -1:, :], table)
    msg = avp.decode(avp.encode(proj.projection_message(soft, table,
                                                        source_model_id=smol.model_id)))
    with pytest.raises(avp.AvpError) as ei:
        proj.read_projection(msg, model_id=smol.model_id, tokenizer_id=smol.tokenizer_id,
                             hidden_size=576)
    assert ei.value.code == avp.ErrorCode.MODEL_MISMATCH
