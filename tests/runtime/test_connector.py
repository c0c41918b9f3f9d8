"""The connector's messages and refusals on the real default model."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from avp_runtime import connector as conn
from avp_runtime.connector import Connector
from transformers import LlamaConfig

import avp_codec as avp
from avp_codec import quant

pytestmark = pytest.mark.slow

PROMPT = "Name three primary colors."


@pytest.fixture(scope="module")
def ctx(smol: Connector) -> conn.Context:
    return smol.think(PROMPT, steps=4)


def test_message_describes_the_cache(smol: Connector, ctx: conn.Context) -> None:
    msg = avp.decode(smol.export_bytes(ctx))
    assert msg.kind == avp.Kind.KV_CACHE
    assert msg.get(avp.MetaKey.MODEL_ID) == smol.model_id
    assert msg.get(avp.MetaKey.TOKENIZER_ID) == smol.tokenizer_id
    assert msg.get(avp.MetaKey.CONTEXT_LENGTH) == ctx.context_length
    assert msg.get(avp.MetaKey.CREATED_BY_STEPS) == 4
    n_prompt = len(smol.encode_prompt(PROMPT))
    assert ctx.context_length == n_prompt + 4
    assert [layer.index for layer in msg.layers] == list(range(30))
    for layer in msg.layers:
        assert layer.kind == avp.LayerKind.FULL_ATTENTION
        assert (layer.token_start, layer.token_count, layer.window) == (0, ctx.context_length, 0)
    ids, pos = msg.tensors[0], msg.tensors[1]
    assert ids.role == avp.Role.TOKEN_IDS and pos.role == avp.Role.POSITIONS
    # Latent steps have no token: their ids are -1.
    assert ids.array()[0, n_prompt:].tolist() == [conn.LATENT_TOKEN] * 4
    assert pos.array()[0].tolist() == list(range(ctx.context_length))
    kv = msg.tensors[2:]
    assert len(kv) == 60
    for i, t in enumerate(kv):
        assert t.layer == i // 2
        assert t.role == (avp.Role.KEY if i % 2 == 0 else avp.Role.VALUE)
        assert t.shape == (1, 3, ctx.context_length, 64) and t.dtype == avp.Dtype.FLOAT32
        assert t.layout == avp.Layout.BHTD
    layer7 = ctx.cache.layers[7]
    assert torch.equal(torch.from_numpy(kv[14].array().copy()), layer7.keys)
    assert torch.equal(torch.from_numpy(kv[15].array().copy()), layer7.values)


def test_kv_size_is_what_the_cache_holds(smol: Connector, ctx: conn.Context) -> None:
    wire = smol.export_bytes(ctx)
    per_token = 30 * 2 * 3 * 64 * 4  # layers x (K, V) x kv heads x head_dim x float32
    assert ctx.nbytes() == per_token * ctx.context_length
    # Framing (header, descriptors, padding, index, token ids, positions) stays small.
    assert ctx.nbytes() < len(wire) < ctx.nbytes() + 16 * 1024


def test_stream_export_matches_bytes_and_file(smol: Connector, ctx: conn.Context,
                                              tmp_path: Path) -> None:
    wire = smol.export_bytes(ctx)
    sink = io.BytesIO()
    assert smol.export(ctx, sink) == len(wire)
    assert sink.getvalue() == wire
    path = tmp_path / "ctx.avp"
    assert smol.export_file(ctx, path) == len(wire)
    assert path.read_bytes() == wire
    from_file = smol.import_(path)
    from_msg = smol.import_(avp.decode(wire))
    suffix = smol.encode_prompt("Go on.", chat=False)
    ref = smol.continue_logits(ctx, suffix)
    assert torch.equal(smol.continue_logits(from_file, suffix), ref)
    assert torch.equal(smol.continue_logits(from_msg, suffix), ref)


def test_export_casts_and_compresses_on_request(smol: Connector, ctx: conn.Context) -> None:
    raw = smol.export_bytes(ctx)
    small = smol.export_bytes(ctx, dtype=torch.bfloat16, codec=avp.Codec.BYTEPLANE_ZSTD)
    msg = avp.decode(small)
    assert all(t.dtype == avp.Dtype.BFLOAT16 for t in msg.tensors[2:])
    assert len(small) < len(raw) / 2
    # Importing into the float32 model converts back; bf16 rounding moves logits only a little.
    back = smol.import_(small, dtype=torch.float32)
    suffix = smol.encode_prompt("Go on.", chat=False)
    diff = (smol.continue_logits(back, suffix) - smol.continue_logits(ctx, suffix)).abs().max()
    assert 0 < float(diff) < 1.0


def test_other_model_identity_is_refused(smol: Connector, ctx: conn.Context,
                                         tiny: Callable[..., Connector]) -> None:
    other = tiny(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, vocab_size=128))
    foreign = other.export_bytes(other.prefill([1, 2, 3, 4]))
    with pytest.raises(avp.AvpError) as ei:
        smol.import_(foreign)
    assert ei.value.code == avp.ErrorCode.MODEL_MISMATCH
    # Same shapes, same everything, one bit of the identity different: still refused.
    msg = avp.decode(smol.export_bytes(ctx))
    for e in msg.entries:
        if e.key == avp.MetaKey.MODEL_ID:
            e.value = bytes([e.value[0] ^ 1]) + e.value[1:]  # type: ignore[index,operator]
    with pytest.raises(avp.AvpError) as ei:
        smol.import_(avp.encode(msg))
    assert ei.value.code == avp.ErrorCode.MODEL_MISMATCH


def test_non_kv_messages_and_corruption_are_refused(smol: Connector, ctx: conn.Context) -> None:
    with pytest.raises(avp.AvpError) as ei:
        smol.import_(avp.encode(avp.text_message("hello")))
    assert ei.value.code == avp.ErrorCode.KIND_CONSTRAINT
    wire = bytearray(smol.export_bytes(ctx))
    wire[-200] ^= 0xFF  # inside the last VALUE tensor's data
    with pytest.raises(avp.AvpError) as ei:
        smol.import_(bytes(wire))
    assert ei.value.code in (avp.ErrorCode.DATA_CHECKSUM, avp.ErrorCode.SECTION_CHECKSUM)


def test_import_places_tensors_on_the_requested_device_and_dtype(
    smol: Connector, ctx: conn.Context
) -> None:
    got = smol.import_(smol.export_bytes(ctx), device="cpu", dtype=torch.float16)
    layer = got.cache.layers[0]
    assert layer.keys.dtype == torch.float16 and layer.keys.device.type == "cpu"
    # The "meta" device takes any placement without allocating: the import path is device-generic.
    meta = smol.import_(smol.export_bytes(ctx), device="meta")
    assert meta.cache.layers[0].keys.device.type == "meta"


def test_generate_uses_the_chat_template(smol: Connector) -> None:
    ids = smol.encode_prompt("Hi")
    text = smol.tokenizer.decode(ids)
    assert "<|im_start|>user" in text and text.rstrip().endswith("<|im_start|>assistant")
    out = smol.generate("What is the capital of France?", max_new_tokens=10)
    assert "Paris" in out.text


def test_realignment_for_tied_and_untied_embeddings(smol: Connector,
                                                    tiny: Callable[..., Connector]) -> None:
    r = smol.realigner()
    assert r.tied
    # Tied: W_a = (W^T W + lambda I)^-1 W^T W is the identity up to the ridge term.
    eye = torch.eye(r.matrix.shape[0])
    assert float((r.matrix - eye).abs().max()) < 1e-3
    h = torch.randn(1, 1, r.matrix.shape[0])
    e = r(h)
    assert abs(float(e.norm()) - r.target_norm) < 1e-3 * r.target_norm
    untied = tiny(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                              tie_word_embeddings=False))
    ru = untied.realigner()
    assert not ru.tied
    w_in = untied.model.get_input_embeddings().weight.detach()
    w_out = untied.model.get_output_embeddings().weight.detach()
    # Normal equations of the ridge regression: (W_out^T W_out + lambda I) W_a = W_out^T W_in.
    lhs = (w_out.T @ w_out + 1e-5 * torch.eye(64)) @ ru.matrix
    assert torch.allclose(lhs, w_out.T @ w_in, atol=1e-3)
    ctx = untied.think([5, 6, 7, 8], steps=3)
    assert ctx.context_length == 7 and ctx.token_ids[0, -3:].tolist() == [-1, -1, -1]


def test_quantized_kv_is_dequantized_on_import(smol: Connector, ctx: conn.Context) -> None:
    msg = avp.decode(smol.export_bytes(ctx))
    wire = avp.encode(quant.quantize_message(msg, quant.preset("int8")))
    assert len(wire) < len(smol.export_bytes(ctx)) / 3
    back = smol.import_(wire)
    assert back.cache.layers[0].keys.dtype == torch.float32
    suffix = smol.encode_prompt("Go on.", chat=False)
    ref, got = smol.continue_logits(ctx, suffix), smol.continue_logits(back, suffix)
    # int8 KIVI-style quantization: measured max abs logit difference 0.12 on this context.
    assert float((ref - got).abs().max()) < 0.5
    assert torch.equal(ref.argmax(-1), got.argmax(-1))
