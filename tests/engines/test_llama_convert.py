"""llama.cpp state <-> AVP on synthetic states: exact round trips for every cache type, key
permutation, V transposition and framing; quantized caches dequantize through AVP to exactly
ggml's values."""

from __future__ import annotations

import numpy as np
import pytest
from avp_engines import _ggml as G
from avp_engines import _llama_blob as B
from avp_engines import _rotary, llama

import avp_codec as avp
from avp_codec import quant

from ._synth import state

MID = bytes(range(32))
TYPES = [(G.F16, G.F16, False), (G.F32, G.F32, True), (G.BF16, G.BF16, False),
         (G.Q8_0, G.Q8_0, False), (G.Q4_0, G.Q4_0, False), (G.Q8_0, G.F16, True),
         (G.Q4_0, G.BF16, False)]


def _sorted_rows(st: B.CacheState) -> list[tuple[np.ndarray, np.ndarray]]:
    order = np.argsort(st.positions)
    n = st.cell_count
    out = []
    for ly in st.layers:
        k = np.frombuffer(ly.k, np.uint8).reshape(n, -1)[order]
        if st.v_trans:
            el = ly.v_type.block_bytes
            v = np.frombuffer(ly.v, np.uint8).reshape(-1, n, el)[:, order]
        else:
            v = np.frombuffer(ly.v, np.uint8).reshape(n, -1)[order]
        out.append((k, v))
    return out


@pytest.mark.parametrize("kt,vt,vtrans", TYPES, ids=lambda x: getattr(x, "name", str(x)))
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("hadamard", [None, False], ids=["rotated", "plain"])
def test_round_trip_is_exact(kt: G.GgmlType, vt: G.GgmlType, vtrans: bool, arch: str,
                             hadamard: bool | None) -> None:
    """Plain quantized caches travel as AVP quantized tensors and come back as the same blocks;
    rotated ones (llama.cpp's default for head_dim 64) travel as float32 H.dequant(x) and
    requantize to the same blocks (H is its own inverse; the codes are recovered by rounding)."""
    st = state(kt, vt, v_trans=vtrans)
    msg = llama.state_to_message(B.build(st), MID, llama.LlamaModel(3, arch, hadamard=hadamard))
    quantized = any(t.quant is not None for t in msg.tensors)
    assert quantized == (hadamard is False and (kt.block_elems > 1 or vt.block_elems > 1))
    wire = avp.encode(msg)
    target = llama.LlamaTarget(kt.name, vt.name, vtrans, arch, hadamard=hadamard)
    back = B.parse(llama.message_to_state(avp.decode(wire), target, model_id=MID))
    assert back.positions.tolist() == list(range(st.cell_count))
    for (ka, va), (kb, vb) in zip(_sorted_rows(st), _sorted_rows(back), strict=True):
        assert np.array_equal(ka, kb) and np.array_equal(va, vb)


@pytest.mark.parametrize("kt", [G.Q8_0, G.Q4_0])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("hadamard", [False, None], ids=["plain", "rotated"])
def test_quantized_dequantize_to_ggml_values(kt: G.GgmlType, arch: str,
                                             hadamard: bool | None) -> None:
    """AVP's bit-exact AFFINE dequantization (spec 12.2) of the converted keys equals ggml's own
    dequantization of the blocks (un-rotated by llama.cpp's Hadamard matrix when the cache is
    rotated), permuted to Transformers' order for LLAMA-style models."""
    st = state(kt, kt, n=4)
    msg = avp.decode(avp.encode(llama.state_to_message(
        B.build(st), MID, llama.LlamaModel(3, arch, hadamard=hadamard))))
    deq = quant.dequantize_message(msg)
    order = np.argsort(st.positions)
    k_avp = next(t for t in deq.tensors if t.role == avp.Role.KEY and t.layer == 0).array()[0]
    blocks = np.frombuffer(st.layers[0].k, np.uint8).reshape(4, -1, kt.block_bytes)[order]
    split = G.q8_0_split if kt is G.Q8_0 else G.q4_0_split
    d, codes = split(blocks)
    ref = G.dequantize(d, codes, 0 if kt is G.Q8_0 else 8).reshape(4, 3, 64)
    if hadamard is None:
        h = np.ones((1, 1))
        while h.shape[0] < 64:  # Sylvester's construction, as llama-kv-cache.cpp builds it
            h = np.block([[h, h], [h, -h]])
        ref = (ref.astype(np.float64) @ (h / 8.0)).astype(np.float32)
    if arch == "llama":
        ref = _rotary.gguf_to_hf(ref)
    assert np.array_equal(k_avp, ref.transpose(1, 0, 2))


def test_float_message_to_quantized_cache_uses_ggml_rounding() -> None:
    rng = np.random.default_rng(1)
    k = [rng.standard_normal((1, 2, 4, 64)).astype(np.float32)]
    v = [rng.standard_normal((1, 2, 4, 64)).astype(np.float32)]
    msg = avp.kv_cache_from_arrays(MID, k, v)
    st = B.parse(llama.message_to_state(msg, llama.LlamaTarget("q8_0", "q4_0", arch="qwen2",
                                                               hadamard=False)))
    d, q = G.q8_0_split(np.frombuffer(st.layers[0].k, np.uint8).reshape(4, -1, 34))
    got = G.dequantize(d, q, 0).reshape(4, 2, 64).transpose(1, 0, 2)
    assert np.abs(got - k[0][0]).max() <= np.abs(k[0]).max() / 127  # within one step
    d4, q4 = G.q4_0_split(np.frombuffer(st.layers[0].v, np.uint8).reshape(4, -1, 18))
    got4 = G.dequantize(d4, q4, 8).reshape(4, 2, 64).transpose(1, 0, 2)
    assert np.abs(got4 - v[0][0]).max() <= np.abs(v[0]).max() / 8 + 1e-6


def test_file_form_keeps_tokens_and_blob_form_takes_them() -> None:
    st = state(G.F16, G.F16, form="file", positions=[0, 1, 2, 3, 4])
    msg = llama.state_to_message(B.build(st), MID, llama.LlamaModel(3, "llama"))
    ids = next(t for t in msg.tensors if t.role == avp.Role.TOKEN_IDS).array()
    assert ids.tolist() == [[100, 101, 102, 103, 104]]
    out = B.parse(llama.message_to_state(msg, llama.LlamaTarget(form="file", arch="llama")))
    assert out.form == "file" and out.tokens is not None
    assert out.tokens.tolist() == [100, 101, 102, 103, 104]
    blob = B.build(state(G.F16, G.F16))
    msg2 = llama.state_to_message(blob, MID, llama.LlamaModel(3, "llama"),
                                  token_ids=[7, 8, 9, 10, 11])
    assert next(t for t in msg2.tensors if t.role == avp.Role.TOKEN_IDS).array().tolist() == [
        [7, 8, 9, 10, 11]]


def test_raw_form_and_cell_extensions() -> None:
    st = state(G.F16, G.F16)
    st.form = "raw"
    st.cell_ext = True
    st.ext = np.tile(np.array([[0, 0, -1]], "<i4"), (st.cell_count, 1))
    raw = B.build(st)
    back = B.parse(raw, cell_ext=True)
    assert back.form == "raw" and back.cell_count == 5 and back.ext is not None
    msg = llama.state_to_message(raw, MID, llama.LlamaModel(3, "llama"), cell_ext=True)
    assert msg.get(avp.MetaKey.CONTEXT_LENGTH) == 5


def test_receiver_refusals() -> None:
    msg = llama.state_to_message(B.build(state(G.F16, G.F16)), MID, llama.LlamaModel(3, "llama"))
    with pytest.raises(avp.AvpError) as e:
        llama.message_to_state(msg, llama.LlamaTarget(arch="llama"), model_id=bytes(32))
    assert e.value.code == avp.ErrorCode.MODEL_MISMATCH
    sub = avp.Message(msg.kind, msg.entries, msg.layers[1:],
                      [t for t in msg.tensors if t.layer is None])
    with pytest.raises(avp.AvpError) as e:
        llama.message_to_state(sub, llama.LlamaTarget(arch="llama"))
    assert e.value.code == avp.ErrorCode.KIND_CONSTRAINT
    with pytest.raises(avp.AvpError) as e:
        llama.message_to_state(msg, llama.LlamaTarget(arch="mystery"))
    assert e.value.code == avp.ErrorCode.UNSUPPORTED_CAPABILITY
    with pytest.raises(avp.AvpError) as e:
        llama.message_to_state(msg, llama.LlamaTarget(k_type="q4_1", arch="llama"))
    assert e.value.code == avp.ErrorCode.UNSUPPORTED_CAPABILITY
    with pytest.raises(avp.AvpError) as e:  # latent positions cannot be a state file's tokens
        llama.message_to_state(msg, llama.LlamaTarget(arch="llama", form="file"))
    assert e.value.code == avp.ErrorCode.KIND_CONSTRAINT
    text = avp.text_message("hi")
    with pytest.raises(avp.AvpError) as e:
        llama.message_to_state(text, llama.LlamaTarget(arch="llama"))
    assert e.value.code == avp.ErrorCode.KIND_CONSTRAINT


def test_rotary_permutation_is_its_own_inverse_pair() -> None:
    x = np.arange(2 * 8).reshape(2, 8)
    assert _rotary.gguf_to_hf(x)[0].tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert np.array_equal(_rotary.hf_to_gguf(_rotary.gguf_to_hf(x)), x)
    assert _rotary.key_order("qwen2") == "halves" and _rotary.key_order("llama") == "interleaved"
    assert _rotary.key_order("whatever", "halves") == "halves"
    with pytest.raises(avp.AvpError):
        _rotary.key_order(None, "sideways")
    with pytest.raises(avp.AvpError):
        _rotary.gguf_to_hf(np.zeros((2, 7)))
