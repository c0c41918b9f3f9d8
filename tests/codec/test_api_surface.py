"""The public API beyond encode/decode: structs agree with their declarations, torch interop is
optional and lazy, the incremental decoder's contract (NEED_DATA, end_of_input, sticky errors),
builders, handshake helpers, canonical JSON details."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from construct import Container

import avp_codec as avp
from avp_codec import (
    Dtype,
    ErrorCode,
    Kind,
    Layout,
    MetaKey,
    Mode,
    Role,
    Tensor,
)
from avp_codec import _structs as S


def test_import_does_not_load_torch() -> None:
    code = "import avp_codec, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_resolve() -> None:
    for name in avp.__all__:
        assert getattr(avp, name) is not None, name


@pytest.mark.parametrize("decl,parse", [
    (S.PREAMBLE, S.parse_preamble), (S.SECTION_HEAD, S.parse_section_head),
    (S.HEADER_FIXED, S.parse_header_fixed), (S.ENTRY_HEAD, S.parse_entry_head),
    (S.LAYER_DESC, S.parse_layer), (S.TENSOR_FIXED, S.parse_tensor_fixed),
    (S.INDEX_ENTRY, S.parse_index_entry), (S.TRAILER, S.parse_trailer)])
def test_fast_parsers_agree_with_construct(decl: object, parse: object) -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        raw = rng.integers(0, 256, decl.sizeof(), dtype=np.uint8).tobytes()  # type: ignore[attr-defined]
        slow = decl.parse(raw)  # type: ignore[attr-defined]
        fast = parse(raw)  # type: ignore[operator]
        assert isinstance(slow, Container)
        assert {k: v for k, v in slow.items() if not k.startswith("_")} == fast._asdict()


def test_torch_tensors_are_accepted_without_copy_of_semantics() -> None:
    torch = pytest.importorskip("torch")
    k = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(1, 3, 8, 5).to(torch.bfloat16)
    t = Tensor.from_array(k, Role.KEY, ordinal=0, layout=Layout.BHTD)
    assert t.dtype == Dtype.BFLOAT16 and t.shape == (1, 3, 8, 5)
    back = torch.from_numpy(t.array().view(np.int16).copy()).view(torch.bfloat16)
    assert torch.equal(back, k)
    f8 = torch.tensor([0.5, -2.0], dtype=torch.float8_e4m3fn)
    assert Tensor.from_array(f8, Role.CONV_STATE, ordinal=0).dtype == Dtype.FLOAT8_E4M3FN


def test_decoder_need_data_end_of_input_and_sticky_errors() -> None:
    b = avp.encode(avp.text_message("hello"))
    d = avp.Decoder()
    assert d.next_event() is avp.NEED_DATA
    d.feed(b[:40])
    assert d.next_event() is avp.NEED_DATA
    d.end_of_input()
    with pytest.raises(avp.AvpError) as ei:
        d.next_event()
    assert ei.value.code == ErrorCode.TRUNCATED
    with pytest.raises(avp.AvpError):  # the error sticks
        d.next_event()
    d2 = avp.Decoder()
    d2.feed(b)
    kinds = [type(d2.next_event()).__name__ for _ in range(2)]
    assert kinds == ["HeaderEvent", "EndEvent"]
    assert d2.next_event() is avp.NEED_DATA  # trailing bytes or the end may still come
    d3 = avp.Decoder()
    d3.feed(b)
    d3.end_of_input()
    assert [type(d3.next_event()).__name__ for _ in range(2)] == ["HeaderEvent", "EndEvent"]
    assert d3.next_event() is avp.END_OF_STREAM  # the input ended after the message
    assert d3.next_event() is avp.END_OF_STREAM
    d2.feed(b"x")
    with pytest.raises(avp.AvpError) as ei:
        d2.next_event()
    assert ei.value.code == ErrorCode.TRAILING_BYTES


def test_canonical_json_values_are_exact() -> None:
    big = 2**64 - 1
    msg = avp.hidden_state_message(
        b"\xab" * 32, np.zeros((1, 1, 2), np.float32), source=2, proj_method=1,
        proj_source_tokenizer_id=b"s" * 32, proj_target_tokenizer_id=b"t" * 32,
        proj_shared_vocab=big, proj_temperature=float("inf"))
    doc = json.loads(avp.dumps_canonical_json(avp.decode(avp.encode(msg))))
    values = {e["name"]: e["value"] for e in doc["entries"]}
    assert values["PROJ_SHARED_VOCAB"] == big
    assert values["PROJ_TEMPERATURE"] == "Infinity"
    assert values["MODEL_ID"] == "ab" * 32
    t = doc["tensors"][0]
    assert t["layer"] is None and t["quant"] is None and t["dtype"] == "float32"
    assert doc["format"] == "AVP/1.0" and set(doc) == {
        "format", "kind", "entries", "layers", "tensors", "authenticated"}


def test_builders_produce_valid_messages() -> None:
    hello = avp.hello_message("a", model_id=b"m" * 32, tokenizer_id=b"t" * 32)
    accept = avp.accept_message("b", Mode.KV_CACHE, model_id=b"m" * 32, modes=[1, 2, 3])
    err = avp.error_message(ErrorCode.MODEL_MISMATCH, "no", agent_name="b")
    for m in (hello, accept, err, avp.text_message("x", role="user")):
        assert avp.decode(avp.encode(m)) == m
    assert len(hello.get(MetaKey.NONCE) or b"") == 16  # D4: a fresh nonce


def test_handshake_resolution_and_reflection() -> None:
    a = avp.hello_message("a", model_id=b"m" * 32, tokenizer_id=b"t" * 32)
    b = avp.hello_message("b", model_id=b"m" * 32, tokenizer_id=b"t" * 32)
    assert avp.verify_peer(b, a, Kind.HELLO) == Mode.KV_CACHE
    c = avp.hello_message("c", model_id=b"x" * 32, tokenizer_id=b"t" * 32)
    assert avp.resolve_mode(a, c) == Mode.PROJECTION
    d = avp.hello_message("d", model_id=b"x" * 32)
    assert avp.resolve_mode(a, d) == Mode.TEXT
    with pytest.raises(avp.AvpError) as ei:
        avp.verify_peer(a, a, Kind.HELLO)  # our own HELLO reflected back
    assert ei.value.code == ErrorCode.NEGOTIATION_MISMATCH
    # a downgrade without CAP_MODES is accepted
    acc = avp.accept_message("b", Mode.TEXT, model_id=b"m" * 32)
    assert avp.check_accept(a, acc) == Mode.TEXT


def test_shared_vocabulary_uses_decoded_strings() -> None:
    def vocab(tokens: list[str]) -> bytes:
        return b"".join(len(t.encode()).to_bytes(4, "little") + t.encode() for t in tokens)
    bpe = ["Ġthe", "Ġcat", "a", "b"]  # byte-level: Ġ is a space
    sp = ["\u2581the", "\u2581cat", "<0x61>", "zz"]  # sentencepiece: U+2581 is a space
    a = avp.hello_message("a", tokenizer_id=b"1" * 32, vocabulary=vocab(bpe))
    b = avp.hello_message("b", tokenizer_id=b"2" * 32, vocabulary=vocab(sp))
    assert avp.decoded_token_strings([t.encode() for t in bpe]) == {b" the", b" cat", b"a", b"b"}
    assert avp.tokenizers_compatible(a, b)  # 3 of 4 shared


def test_records_without_text_do_not_decide_the_byte_level_test() -> None:
    # Spec 14.5 step 4: empty and non-UTF-8 records have no decoded string, so they neither make
    # a vocabulary byte-level nor stop it from being one.
    bpe = ["Ġthe".encode(), b"", b"\xff\xfe", b"a"]
    assert avp.is_byte_level(bpe)
    assert avp.decoded_token(b"\xff\xfe", True) is None and avp.decoded_token(b"", False) is None
    assert avp.decoded_token_strings(bpe) == {b" the", b"a"}
    assert not avp.is_byte_level(["\u4e2d".encode()])
    assert avp.decoded_token(b"<0x0A>", False) == b"\n"


def test_session_payload_rules() -> None:
    offered = avp.hello_message("me", dtypes=[Dtype.FLOAT16], max_message_bytes=10_000)
    k = np.zeros((1, 1, 2, 2), np.float16)
    kv = avp.kv_cache_from_arrays(b"m" * 32, [k], [k])
    avp.check_payload(kv, Mode.KV_CACHE, offered, encoded_length=5000)
    latent = avp.hidden_state_message(b"m" * 32, np.zeros((1, 1, 4), np.float16))
    avp.check_payload(latent, Mode.KV_CACHE, offered)  # D9
    for msg, mode in [(kv, Mode.TEXT), (latent, Mode.PROJECTION)]:
        with pytest.raises(avp.AvpError) as ei:
            avp.check_payload(msg, mode, offered)
        assert ei.value.code == ErrorCode.UNSUPPORTED_CAPABILITY


def test_check_model_id_covers_projections() -> None:
    proj = avp.hidden_state_message(
        b"m" * 32, np.zeros((1, 1, 4), np.float16), source=2, proj_method=1,
        proj_source_tokenizer_id=b"s" * 32, proj_target_tokenizer_id=b"t" * 32,
        proj_shared_vocab=3)
    avp.check_model_id(proj, b"m" * 32, b"t" * 32)
    with pytest.raises(avp.AvpError) as ei:
        avp.check_model_id(proj, b"m" * 32, b"u" * 32)
    assert ei.value.code == ErrorCode.MODEL_MISMATCH


def test_attention_mask_values_are_checked_at_encode() -> None:
    k = np.zeros((1, 1, 2, 2), np.float16)
    msg = avp.kv_cache_from_arrays(b"m" * 32, [k], [k])
    msg.tensors.insert(0, Tensor.from_array(np.array([[1, 2]], np.uint8), Role.ATTENTION_MASK,
                                            layout=Layout.BT))
    with pytest.raises(avp.AvpError) as ei:
        avp.encode(msg)
    assert ei.value.code == ErrorCode.INVALID_VALUE


def test_stream_encoder_refuses_wrong_tensor_count() -> None:
    class Sink:
        def write(self, b: bytes | memoryview) -> None:
            pass
    msg = avp.hidden_state_message(b"m" * 32, np.zeros((1, 1, 4), np.float16))
    enc = avp.StreamEncoder(Sink(), msg.kind, msg.entries, msg.layers, 2)
    enc.write_tensor(msg.tensors[0])
    with pytest.raises(avp.AvpError):
        enc.finish()  # one tensor short, no Trailer is written


def test_encode_into_and_encoded_size() -> None:
    msg = avp.text_message("into")
    buf = bytearray(avp.encoded_size(msg))
    assert avp.encode_into(msg, buf) == len(buf) and bytes(buf) == avp.encode(msg)
    # tensors bigger than the 1 MiB copy step, written data-first into the buffer
    rng = np.random.default_rng(3)
    ks = [rng.standard_normal((1, 2, 700, 300), dtype=np.float32) for _ in range(2)]
    kv = avp.kv_cache_from_arrays(b"k" * 32, ks, ks)
    want = avp.encode(avp.kv_cache_from_arrays(b"k" * 32, ks, ks))
    big = np.zeros(len(want) + 100, np.uint8)
    assert avp.encode_into(kv, big) == len(want) and big[:len(want)].tobytes() == want
    with pytest.raises(ValueError):
        avp.encode_into(msg, bytearray(10))


def test_from_canonical_json_rejects_inconsistent_documents() -> None:
    msg = avp.hidden_state_message(b"m" * 32, np.ones((1, 2, 2), np.float16))
    b = avp.encode(msg)
    stored = msg.tensors[0].stored.tobytes()
    doc = avp.to_canonical_json(avp.decode(b))
    assert avp.encode(avp.from_canonical_json(doc, stored)) == b
    bad_name = json.loads(json.dumps(doc))
    bad_name["entries"][0]["name"] = "TOKENIZER_ID"
    bad_crc = json.loads(json.dumps(doc))
    bad_crc["tensors"][0]["data_crc"] ^= 1
    extra = dict(doc, comment="x")
    for d, data in ((bad_name, stored), (bad_crc, stored), (extra, stored), (doc, stored + b"!")):
        with pytest.raises(avp.AvpError) as ei:
            avp.from_canonical_json(d, data)
        assert ei.value.code == ErrorCode.INVALID_VALUE
