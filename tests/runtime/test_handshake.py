"""Spec section 14 negotiation: every resolution rule, echoes, versions, capability violations.

Messages cross the real codec (encode -> decode) between the two sides, as they would on a wire.
Vocabularies are synthetic so these run in milliseconds; the real SmolLM2/Gemma pair is covered
in test_projection_real.py.
"""

from __future__ import annotations

import hashlib

import pytest
from avp_runtime import handshake as hs
from avp_runtime.vocab import encode_vocabulary

import avp_codec as avp

Mode = avp.Mode
E = avp.ErrorCode
M = avp.MetaKey

# The same 40 words in the two stored forms: GPT-2 byte-level ("Ġ" = space) and SentencePiece
# ("▁" = space). Decoded, they are equal strings.
WORDS = [f"w{i}" for i in range(20)] + ["the", "cat", "sat", "on", "mat", "dog", "ran", "far",
                                           "and", "or", "not", "yes", "no", "up", "down", "left",
                                           "right", "in", "out", "it"]
BPE = [b"<|endoftext|>"] + [("\u0120" + w).encode() for w in WORDS]
SPM = [b"<pad>", b"<eos>"] + [("\u2581" + w).encode() for w in WORDS]
OTHER = [f"zz{i}".encode() for i in range(41)]  # shares nothing with either

MODEL_A = hashlib.sha256(b"model a").digest()
MODEL_B = hashlib.sha256(b"model b").digest()
TOK_BPE = hashlib.sha256(b"tok bpe").digest()
TOK_SPM = hashlib.sha256(b"tok spm").digest()
TOK_OTHER = hashlib.sha256(b"tok other").digest()


def wire(msg: avp.Message) -> avp.Message:
    return avp.decode(avp.encode(msg))


def side(name: str, model: bytes, tok: bytes, vocab: list[bytes], **kw: object) -> hs.LocalSide:
    return hs.LocalSide(agent_name=name, model_id=model, tokenizer_id=tok, vocabulary=vocab,
                        **kw)  # type: ignore[arg-type]


def negotiate(a: hs.LocalSide, b: hs.LocalSide) -> tuple[hs.Resolution, hs.Resolution]:
    init = hs.Initiator(a)
    reply, res_b = hs.Responder(b).handle_hello(wire(init.hello()))
    assert res_b is not None, reply.get(M.ERROR_TEXT)
    res_a = init.handle_accept(wire(reply))
    return res_a, res_b


def test_same_model_gives_kv_cache_on_both_sides() -> None:
    a, b = negotiate(side("a", MODEL_A, TOK_BPE, BPE), side("b", MODEL_A, TOK_BPE, BPE))
    assert a.mode == b.mode == Mode.KV_CACHE


def test_identical_tokenizer_different_model_gives_projection() -> None:
    a, b = negotiate(side("a", MODEL_A, TOK_BPE, BPE), side("b", MODEL_B, TOK_BPE, BPE))
    assert a.mode == b.mode == Mode.PROJECTION


def test_compatible_tokenizers_across_marker_forms_give_projection() -> None:
    # BPE "Ġcat" and SentencePiece "▁cat" are the same text: 40 shared of min(41, 42) tokens.
    a_side = side("a", MODEL_A, TOK_BPE, BPE, known_vocabularies={TOK_SPM: SPM})
    a, b = negotiate(a_side, side("b", MODEL_B, TOK_SPM, SPM))
    assert a.mode == b.mode == Mode.PROJECTION
    assert b.shared_vocab == a.shared_vocab == 40


def test_incompatible_tokenizers_give_text() -> None:
    a, b = negotiate(side("a", MODEL_A, TOK_BPE, BPE), side("b", MODEL_B, TOK_OTHER, OTHER))
    assert a.mode == b.mode == Mode.TEXT
    assert b.shared_vocab == 0


@pytest.mark.parametrize(("shared", "expected"), [(20, Mode.PROJECTION), (19, Mode.TEXT)])
def test_fifty_percent_boundary(shared: int, expected: avp.Mode) -> None:
    # Smaller vocabulary: 40 tokens; 20 shared is exactly 50% (compatible), 19 is not.
    mine = [("\u0120" + w).encode() for w in WORDS]
    theirs = [("\u2581" + w).encode() for w in WORDS[:shared]]
    theirs += [f"q{i}".encode() for i in range(40 - shared)]
    a_side = side("a", MODEL_A, TOK_BPE, mine, known_vocabularies={TOK_SPM: theirs})
    a, b = negotiate(a_side, side("b", MODEL_B, TOK_SPM, theirs))
    assert a.mode == b.mode == expected


def test_projection_needs_both_tokenizer_ids() -> None:
    a = hs.LocalSide("a", model_id=MODEL_A, tokenizer_id=None, vocabulary=BPE)
    _, b = negotiate(a, side("b", MODEL_B, TOK_BPE, BPE))
    assert b.mode == Mode.TEXT


def test_kv_cache_needs_both_sides_to_offer_it() -> None:
    text_proj = (int(Mode.PROJECTION), int(Mode.TEXT))
    a, b = negotiate(side("a", MODEL_A, TOK_BPE, BPE),
                     side("b", MODEL_A, TOK_BPE, BPE, modes=text_proj))
    assert a.mode == b.mode == Mode.PROJECTION  # the ACCEPT's CAP_MODES lacks KV_CACHE


def test_downgrade_without_cap_modes_is_accepted_upgrade_is_not() -> None:
    # an ACCEPT without CAP_MODES may pick a lower mode than our data allows.
    init = hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE))
    init.hello()
    assert init.handle_accept(wire(_accept(Mode.TEXT, MODEL_A, TOK_BPE, b"\x03" * 16))).mode \
        == Mode.TEXT
    # The same ACCEPT with CAP_MODES listing KV_CACHE is a mismatch: the mode must be exact.
    exact = _accept(Mode.TEXT, MODEL_A, TOK_BPE, b"\x03" * 16)
    exact.entries.append(avp.Entry.of(M.CAP_MODES, hs.ALL_MODES))
    exact.entries.sort(key=lambda e: e.key)
    with pytest.raises(avp.AvpError) as ei:
        init.handle_accept(wire(exact))
    assert ei.value.code == E.NEGOTIATION_MISMATCH


def test_accept_carries_the_responders_identity_not_the_initiators() -> None:
    init = hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE))
    reply, _ = hs.Responder(side("b", MODEL_B, TOK_SPM, SPM)).handle_hello(wire(init.hello()))
    reply = wire(reply)
    assert reply.get(M.MODEL_ID) == MODEL_B
    assert reply.get(M.TOKENIZER_ID) == TOK_SPM
    assert reply.get(M.NONCE) != init.nonce


def _accept(mode: avp.Mode, model: bytes, tok: bytes, nonce: bytes) -> avp.Message:
    return hs.build(avp.Kind.ACCEPT, {
        M.AGENT_NAME: "liar", M.MODE: int(mode), M.VERSIONS: (hs.FORMAT_1_0,),
        M.MODEL_ID: model, M.TOKENIZER_ID: tok, M.NONCE: nonce})


def test_reflected_hello_is_refused() -> None:
    resp = hs.Responder(side("b", MODEL_A, TOK_BPE, BPE))
    hello = hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE)).hello()
    hello.entries = [e if e.key != M.NONCE else avp.Entry.of(M.NONCE, resp.nonce)
                     for e in hello.entries]
    reply, res = resp.handle_hello(wire(hello))
    assert res is None and reply.get(M.ERROR_CODE) == E.NEGOTIATION_MISMATCH


def test_reflected_accept_is_refused() -> None:
    # A "peer" that reflects our own identity and nonce back would make KV_CACHE look agreed.
    init = hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE))
    init.hello()
    with pytest.raises(avp.AvpError) as ei:
        init.handle_accept(wire(_accept(Mode.KV_CACHE, MODEL_A, TOK_BPE, init.nonce)))
    assert ei.value.code == E.NEGOTIATION_MISMATCH


def test_responder_claiming_a_mode_its_identity_does_not_support_is_refused() -> None:
    init = hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE))
    for mode, model, tok in [(Mode.KV_CACHE, MODEL_B, TOK_BPE),
                             (Mode.PROJECTION, MODEL_B, TOK_OTHER)]:
        with pytest.raises(avp.AvpError) as ei:
            init.handle_accept(wire(_accept(mode, model, tok, b"\x01" * 16)))
        assert ei.value.code == E.NEGOTIATION_MISMATCH


def test_responder_choosing_a_mode_we_did_not_offer_is_refused() -> None:
    init = hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE, modes=(int(Mode.TEXT),)))
    with pytest.raises(avp.AvpError) as ei:
        init.handle_accept(wire(_accept(Mode.KV_CACHE, MODEL_A, TOK_BPE, b"\x01" * 16)))
    assert ei.value.code == E.NEGOTIATION_MISMATCH


def test_projection_to_an_unknown_vocabulary_cannot_be_confirmed() -> None:
    # A minimal responder says PROJECTION without sending its VOCABULARY, and we hold no copy of
    # its vocabulary (so no embeddings to project onto either): our data does not reach that
    # mode, so it is an upgrade.
    init = hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE))
    init.hello()
    with pytest.raises(avp.AvpError) as ei:
        init.handle_accept(wire(_accept(Mode.PROJECTION, MODEL_B, TOK_SPM, b"\x02" * 16)))
    assert ei.value.code == E.NEGOTIATION_MISMATCH
    # With a local copy of that vocabulary it can be confirmed.
    init = hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE, known_vocabularies={TOK_SPM: SPM}))
    init.hello()
    res = init.handle_accept(wire(_accept(Mode.PROJECTION, MODEL_B, TOK_SPM, b"\x02" * 16)))
    assert res.mode == Mode.PROJECTION


def test_no_common_version() -> None:
    init = hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE, versions=(2 << 16,)))
    reply, res = hs.Responder(side("b", MODEL_A, TOK_BPE, BPE)).handle_hello(wire(init.hello()))
    assert res is None
    reply = wire(reply)
    assert reply.kind == avp.Kind.ERROR and reply.get(M.ERROR_CODE) == E.NO_COMMON_VERSION
    with pytest.raises(avp.AvpError) as ei:
        init.handle_accept(reply)
    assert ei.value.code == E.NO_COMMON_VERSION


def test_a_newer_minor_of_the_same_major_is_common() -> None:
    a, b = negotiate(side("a", MODEL_A, TOK_BPE, BPE, versions=(hs.FORMAT_1_0, (1 << 16) | 3)),
                     side("b", MODEL_A, TOK_BPE, BPE))
    assert a.mode == b.mode == Mode.KV_CACHE


def _hello(**over: object) -> avp.Message:
    values: dict[avp.MetaKey, object] = {
        M.AGENT_NAME: "peer", M.VERSIONS: (hs.FORMAT_1_0,), M.CAP_DTYPES: (1, 3),
        M.NONCE: b"n" * 16, M.CAP_CODECS: (0,), M.CAP_MODES: (1, 2, 3),
        M.MAX_MESSAGE_BYTES: 1 << 20,
        M.MODEL_ID: MODEL_B, M.TOKENIZER_ID: TOK_SPM, M.VOCABULARY: encode_vocabulary(SPM)}
    values.update({getattr(M, k): v for k, v in over.items()})
    return hs.build(avp.Kind.HELLO, values)


def _refusal(hello: avp.Message, *, via_wire: bool = True) -> avp.ErrorCode:
    reply, res = hs.Responder(side("b", MODEL_A, TOK_BPE, BPE)).handle_hello(
        wire(hello) if via_wire else hello)
    assert res is None
    reply = wire(reply)
    assert reply.kind == avp.Kind.ERROR
    return avp.ErrorCode(reply.get(M.ERROR_CODE))


def test_peer_without_text_mode_is_refused() -> None:
    assert _refusal(_hello(CAP_MODES=(1, 2))) == E.UNSUPPORTED_CAPABILITY


def test_vocab_digest_must_match_the_vocabulary() -> None:
    assert _refusal(_hello(VOCAB_DIGEST=b"\0" * 32)) == E.INVALID_VALUE


def test_malformed_vocabulary_is_refused() -> None:
    # The codec already refuses to encode or decode such a value; the handshake checks again
    # (a Message can reach it without crossing the codec, e.g. from another decoder).
    for blob in (b"\x05\x00\x00\x00abc", b"\x01\x00"):
        with pytest.raises(avp.AvpError) as ei:
            avp.encode(_hello(VOCABULARY=blob))
        assert ei.value.code == E.INVALID_VALUE
        assert _refusal(_hello(VOCABULARY=blob), via_wire=False) == E.INVALID_VALUE


def test_accept_carries_cap_modes_and_the_vocabulary_the_initiator_needs() -> None:
    # PROJECTION between different tokenizers -> the ACCEPT brings the responder's own
    # VOCABULARY, so an initiator without a local copy can still re-check rule 3.
    init = hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE))
    reply, res = hs.Responder(side("b", MODEL_B, TOK_SPM, SPM)).handle_hello(wire(init.hello()))
    reply = wire(reply)
    assert res is not None and res.mode == Mode.PROJECTION
    assert reply.get(M.CAP_MODES) == hs.ALL_MODES
    assert reply.get(M.VOCABULARY) == encode_vocabulary(SPM)
    assert reply.get(M.VOCAB_DIGEST) == hashlib.sha256(encode_vocabulary(SPM)).digest()
    assert init.handle_accept(reply).mode == Mode.PROJECTION
    # Same tokenizer, or another mode: no vocabulary needs to travel back.
    init = hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE))
    reply, _ = hs.Responder(side("b", MODEL_A, TOK_BPE, BPE)).handle_hello(wire(init.hello()))
    assert reply.get(M.VOCABULARY) is None


@pytest.mark.parametrize(("b_model", "b_tok", "b_vocab", "b_modes"), [
    (MODEL_A, TOK_BPE, BPE, hs.ALL_MODES),
    (MODEL_A, TOK_BPE, BPE, (2, 3)),
    (MODEL_B, TOK_BPE, BPE, hs.ALL_MODES),
    (MODEL_B, TOK_SPM, SPM, hs.ALL_MODES),
    (MODEL_B, TOK_SPM, SPM, (1, 3)),
    (MODEL_B, TOK_OTHER, OTHER, hs.ALL_MODES),
])
def test_our_resolution_agrees_with_the_codecs(b_model: bytes, b_tok: bytes,
                                                b_vocab: list[bytes],
                                                b_modes: tuple[int, ...]) -> None:
    # Two implementations of 14.3 (this one, with local vocabulary copies, and the codec's
    # message-only avp.resolve_mode) must reach the same mode from the same HELLOs.
    a_hello = wire(hs.Initiator(side("a", MODEL_A, TOK_BPE, BPE)).hello())
    b_init = hs.Initiator(side("b", b_model, b_tok, b_vocab, modes=b_modes))
    b_hello = wire(b_init.hello())
    reply, res = hs.Responder(side("b", b_model, b_tok, b_vocab, modes=b_modes)).handle_hello(
        a_hello)
    assert res is not None
    assert res.mode == avp.resolve_mode(b_hello, a_hello) == avp.resolve_mode(a_hello, b_hello)
