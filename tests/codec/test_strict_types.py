"""Exact types at every door (issue 14 "wrong types", issue 19.3 "arguments checked at the door").

from_canonical_json: an integer is a JSON integer, a boolean a boolean, a registry name matches
byte for byte, objects have exactly their members; every fault is INVALID_VALUE (or the decoder's
limit code) with the member's path. encode / StreamEncoder / builders / Tensor: a message field of
the wrong type or range is AvpError (INVALID_VALUE, or the decoder's registry code) with the
field's path; an argument of the wrong Python type is TypeError (ValueError for a wrong length
or rank) naming the argument; never a raw TypeError/ValueError/struct.error from inside.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import avp_codec as avp
from avp_codec import _handshake

E = avp.ErrorCode
ROOT = Path(__file__).resolve().parents[2] / "conformance" / "vectors"


def _msg() -> avp.Message:
    k = np.zeros((1, 1, 2, 4), np.float16)
    return avp.kv_cache_from_arrays(bytes(32), [k], [k + 1], token_ids=np.zeros((1, 2), np.int32))


def _doc() -> tuple[dict[str, Any], bytes]:
    m = avp.decode(avp.encode(_msg()))
    return avp.to_canonical_json(m), b"".join(t.stored.tobytes() for t in m.tensors)


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    node: Any = doc
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value


BAD_JSON = [
    ("tensors.1.shape", [1, 1, 2.9, 4], "tensors[1].shape[2]"),
    ("tensors.1.shape", [1, 1, 2.0, 4], "tensors[1].shape[2]"),
    ("tensors.1.shape", [1, 1, True, 4], "tensors[1].shape[2]"),
    ("tensors.1.shape", [1, 1, -2, 4], "tensors[1].shape[2]"),
    ("tensors.1.shape", [1, 1, 2 ** 64, 4], "tensors[1].shape[2]"),
    ("tensors.1.shape", "1,1,2,4", "tensors[1].shape"),
    ("layers.0.layer_index", 0.0, "layers[0].layer_index"),
    ("layers.0.layer_index", -1, "layers[0].layer_index"),
    ("layers.0.layer_index", "0", "layers[0].layer_index"),
    ("layers.0.window", False, "layers[0].window"),
    ("tensors.1.layer", 0.0, "tensors[1].layer"),
    ("tensors.1.layer", True, "tensors[1].layer"),
    ("tensors.1.layer", 0xFFFFFFFF, "tensors[1].layer"),
    ("tensors.1.token_offset", True, "tensors[1].token_offset"),
    ("entries.0.critical", "false", "entries[0].critical"),
    ("entries.0.critical", 1, "entries[0].critical"),
    ("entries.0.key", 1.0, "entries[0].key"),
    ("entries.0.key", 10 ** 5000, "entries[0].key"),
    ("entries.1.value", 2.0, "entries[1].value"),  # CONTEXT_LENGTH, u64
    ("entries.1.value", True, "entries[1].value"),
    ("entries.0.value", "AB" * 32, "entries[0].value"),  # MODEL_ID: lowercase hex only
    ("entries.0.value", "ab " * 32, "entries[0].value"),
    ("entries.0.type", "BYTES", "entries[0].type"),
    ("entries.0.type", 5, "entries[0].type"),  # a registered type is written by name
    ("entries.0.name", "model_id", "entries[0].name"),
    ("tensors.1.dtype", "\ufb02oat16", "tensors[1].dtype"),  # ligature: upper() is FLOAT16
    ("tensors.1.dtype", "FLOAT16", "tensors[1].dtype"),
    ("tensors.0.dtype", "\u0131nt32", "tensors[0].dtype"),  # dotless i: upper() is INT32
    ("tensors.1.role", "key", "tensors[1].role"),
    ("tensors.1.role", "K\u0395Y", "tensors[1].role"),  # Greek capital epsilon
    ("tensors.1.codec", "RAW", "tensors[1].codec"),
    ("tensors.1.layout", "bhtd", "tensors[1].layout"),
    ("kind", "kv_cache", "kind"),
    ("kind", 1, "kind"),
    ("format", "AVP/1.\u0660", "format"),  # Arabic-Indic zero: str.isdigit() is True
    ("format", "AVP/1.\uff10", "format"),  # fullwidth zero
    ("format", "AVP/1.00", "format"),
    ("format", "AVP/1.65536", "format"),
    ("entries", {"0": 1}, "entries"),
    ("layers", None, "layers"),
    ("tensors", "[]", "tensors"),
    ("authenticated", "false", "authenticated"),
    ("tensors.1.quant", {"scheme": "AFFINE"}, "tensors[1].quant"),
    ("tensors.1.raw_sha256", "AB" * 32, "tensors[1].raw_sha256"),
    ("tensors.1.data_crc", -1, "tensors[1].data_crc"),
    ("tensors.1.tensor_index", 0, "tensors[1].tensor_index"),
]


@pytest.mark.parametrize("path,value,where", BAD_JSON, ids=[f"{p}#{i}" for i, (p, _, _) in
                                                            enumerate(BAD_JSON)])
def test_from_canonical_json_takes_exact_types(path: str, value: Any, where: str) -> None:
    doc, stored = _doc()
    avp.from_canonical_json(copy.deepcopy(doc), stored)  # the unchanged document is fine
    _set(doc, path, value)
    with pytest.raises(avp.AvpError) as ei:
        avp.from_canonical_json(doc, stored)
    assert (ei.value.code, ei.value.path) == (E.INVALID_VALUE, where), str(ei.value)


@pytest.mark.parametrize("text", [
    '{"format": "AVP/1.0", "format": "AVP/1.0"}',  # duplicate member
    '{"format": NaN}', '{"format": Infinity}', '[' * 10000, '{"a": 1} x', "\ufeff{}",
    '"' + "x" * 100 + '"', "[" + "[]," * 2_000_000 + "[]]",  # > max_values
])
def test_from_canonical_json_text_goes_through_the_strict_parser(text: str) -> None:
    for form in (text, text.encode()):
        with pytest.raises(avp.AvpError) as ei:
            avp.from_canonical_json(form)
        assert ei.value.code == E.INVALID_VALUE


def test_from_canonical_json_limits_and_stored_bytes() -> None:
    doc, stored = _doc()
    with pytest.raises(avp.AvpError) as ei:
        avp.from_canonical_json(doc, stored, limits=avp.Limits(max_tensors=2))
    assert ei.value.code == E.LIMIT_TENSORS
    with pytest.raises(avp.AvpError) as ei:
        avp.from_canonical_json(doc, stored[:-1])
    assert ei.value.code == E.INVALID_VALUE and ei.value.path == "tensors[2].stored_length"
    with pytest.raises(TypeError, match="stored"):
        avp.from_canonical_json(doc, "bytes?")  # type: ignore[arg-type]


def test_every_valid_vector_round_trips_through_its_json_text() -> None:
    """Strictness refuses no canonical document: every valid vector's JSON text (with its stored
    bytes) builds the message again, and it encodes to the same bytes."""
    manifest = json.loads((ROOT / "manifest.json").read_text("utf-8"))
    done = 0
    for case in manifest["cases"]:
        if case["result"] != "valid" or case["context"]:
            continue
        data = (ROOT / case["file"]).read_bytes()
        msg = avp.decode(data)
        stored = b"".join(t.stored.tobytes() for t in msg.tensors)
        back = avp.from_canonical_json(avp.dumps_canonical_json(msg), stored)
        # (compared as canonical JSON: an f64 NaN entry is never == itself)
        assert avp.dumps_canonical_json(back) == avp.dumps_canonical_json(msg), case["id"]
        if msg.minor == 0 and not msg.skipped_sections and msg.get(avp.MetaKey.AUTH_KEY_ID) is None:
            assert avp.encode(back) == data, case["id"]
        done += 1
    assert done >= 60


# -- encode and the model objects -------------------------------------------------------------
def _mutated(fn: Any) -> avp.Message:
    m = _msg()
    fn(m)
    return m


BAD_FIELDS = [
    (lambda m: setattr(m.layers[0], "index", -1), E.INVALID_VALUE, "layers[0].layer_index"),
    (lambda m: setattr(m.layers[0], "index", 0.0), E.INVALID_VALUE, "layers[0].layer_index"),
    (lambda m: setattr(m.layers[0], "token_count", True), E.INVALID_VALUE,
     "layers[0].token_count"),
    (lambda m: setattr(m.layers[0], "kind", 9), E.INVALID_VALUE, "layers[0].layer_kind"),
    (lambda m: setattr(m.layers[0], "kind", "FULL_ATTENTION"), E.INVALID_VALUE,
     "layers[0].layer_kind"),
    (lambda m: setattr(m.tensors[1], "shape", (1, 1, 2.0, 4)), E.INVALID_VALUE,
     "tensor[1].shape[2]"),
    (lambda m: setattr(m.tensors[1], "shape", [1, 1, 2, 4]), E.INVALID_VALUE, "tensor[1].shape"),
    (lambda m: setattr(m.tensors[1], "layer", True), E.INVALID_VALUE, "tensor[1].layer"),
    (lambda m: setattr(m.tensors[1], "layer", -1), E.INVALID_VALUE, "tensor[1].layer"),
    (lambda m: setattr(m.tensors[1], "layer", 7), E.BAD_REFERENCE, "tensor[1].layer"),
    (lambda m: setattr(m.tensors[1], "token_offset", 0.0), E.INVALID_VALUE,
     "tensor[1].token_offset"),
    (lambda m: setattr(m.tensors[1], "role", 99), E.UNKNOWN_ROLE, "tensor[1].role"),
    (lambda m: setattr(m.entries[1], "value", 2.0), E.INVALID_VALUE, "entries[1].value"),
    (lambda m: setattr(m.entries[1], "value", True), E.INVALID_VALUE, "entries[1].value"),
    (lambda m: setattr(m.entries[0], "value", "ab" * 16), E.INVALID_VALUE, "entries[0].value"),
    (lambda m: setattr(m.entries[1], "critical", 1), E.INVALID_VALUE, "entries[1].critical"),
    (lambda m: setattr(m.entries[1], "key", -5), E.INVALID_VALUE, "entries[1].key"),
    (lambda m: setattr(m, "kind", True), E.INVALID_VALUE, "kind"),
    (lambda m: setattr(m, "kind", 1.0), E.INVALID_VALUE, "kind"),
    (lambda m: setattr(m, "auth_tag", b"short"), E.INVALID_VALUE, "auth_tag"),
]


@pytest.mark.parametrize("mutate,code,where", BAD_FIELDS, ids=[w + f"#{i}" for i, (_, _, w) in
                                                              enumerate(BAD_FIELDS)])
def test_encode_checks_every_field_at_the_door(mutate: Any, code: E, where: str) -> None:
    msg = _mutated(mutate)
    for enc in (avp.encode, avp.encoded_size, lambda m: avp.encode_into(m, bytearray(1 << 16))):
        with pytest.raises(avp.AvpError) as ei:
            enc(msg)
        assert (ei.value.code, ei.value.path) == (code, where), str(ei.value)


def test_u32_list_values_are_exact_ints() -> None:
    hello = avp.hello_message("a", nonce=bytes(16))
    e = next(e for e in hello.entries if e.key == avp.MetaKey.VERSIONS)
    e.value = (65536.0,)
    with pytest.raises(avp.AvpError) as ei:
        avp.encode(hello)
    assert ei.value.code == E.INVALID_VALUE and ei.value.path.endswith(".value[0]")
    with pytest.raises(TypeError, match="versions"):
        avp.hello_message("a", versions=[1.5])  # type: ignore[list-item]


def test_arguments_of_the_wrong_type_name_the_argument() -> None:
    """Issue 19.3's list, each with the argument named."""
    k = np.zeros((1, 1, 2, 4), np.float16)
    cases: list[tuple[Any, type[Exception], str]] = [
        (lambda: avp.encode(b"abc"), TypeError, "msg must be an avp_codec.Message, not bytes"),
        (lambda: avp.encode(avp.text_message("x"), auth_key=b"k"), TypeError, "auth_key"),
        (lambda: avp.encode(avp.text_message("x"), auth_key=(b"", b"k")), ValueError,
         "key_id"),
        (lambda: avp.encode(avp.text_message("x"), auth_key=("id", b"k")), TypeError,
         "key_id"),
        (lambda: avp.kv_cache_from_arrays(bytes(32), [k, k], [k]), ValueError,
         "2 keys, 1 values"),
        (lambda: avp.kv_cache_from_arrays(bytes(32), [k[0]], [k[0]]), ValueError,
         "keys[0] has rank 3"),
        (lambda: avp.kv_cache_from_arrays(bytes(32), [k], [k[:, :, :1]]), ValueError,
         "values[0] holds 1 tokens"),
        (lambda: avp.kv_cache_from_arrays("abc", [k], [k]), TypeError, "model_id"),
        (lambda: avp.kv_cache_from_arrays(b"abc", [k], [k]), ValueError,
         "model_id must be 32 bytes, not 3"),
        (lambda: avp.kv_cache_from_arrays(bytes(32), [k], [k], layer_indices=[0, 1]),
         ValueError, "layer_indices"),
        (lambda: avp.kv_cache_from_arrays(bytes(32), [k], [k], layout=avp.Layout.BTD),
         ValueError, "layout"),
        (lambda: avp.kv_cache_from_arrays(bytes(32), k, "v"), TypeError, "values"),
        (lambda: avp.kv_cache_message(bytes(32), 2.0, [], []), TypeError, "context_length"),
        (lambda: avp.kv_cache_message(bytes(32), 2, [None], []), TypeError, "layers[0]"),
        (lambda: avp.text_message(b"abc"), TypeError, "text"),
        (lambda: avp.hidden_state_message(bytes(32), k[0], proj_temperature="2"), TypeError,
         "proj_temperature"),
        (lambda: avp.error_message(0), ValueError, "code"),
        (lambda: avp.accept_message("a", True), TypeError, "mode"),
        (lambda: avp.hello_message("a", nonce=b"short"), ValueError, "nonce"),
        (lambda: avp.Tensor.from_array(k, avp.Role.KEY, ordinal=0.0), TypeError, "ordinal"),
        (lambda: avp.Tensor.from_array(k, True), TypeError, "role"),
        (lambda: avp.Tensor.from_array("k", avp.Role.KEY), TypeError, "arr"),
        (lambda: avp.Tensor.from_array(k, avp.Role.KEY, ordinal=0, layer=0), TypeError,
         "not both"),
        (lambda: avp.Tensor(avp.Role.KEY, avp.Dtype.FLOAT16, (1, 2.9), b""), TypeError,
         "shape[1]"),
        (lambda: avp.Tensor(avp.Role.KEY, avp.Dtype.FLOAT16, (1, 2), "ab"), TypeError,
         "stored"),
        (lambda: avp.decode("text"), TypeError, "buf"),
        (lambda: avp.decode(b"", verify=1), TypeError, "verify"),
        (lambda: avp.decode(b"", keys={"k": b"v"}), TypeError, "keys"),
        (lambda: avp.decode_file(3.5), TypeError, "path"),
        (lambda: avp.IndexedReader(None), TypeError, "buf"),
        (lambda: avp.StreamEncoder(None, avp.Kind.TEXT, [], [], 0), TypeError, "writable"),
        (lambda: avp.check_model_id(_msg(), "abc"), TypeError, "model_id"),
        (lambda: avp.verify_peer(b"x", _msg(), avp.Kind.HELLO), TypeError, "local_hello"),
        (lambda: avp.check_payload(_msg(), 1, _msg()), TypeError, "mode"),
        (lambda: avp.to_canonical_json({}), TypeError, "msg"),
    ]
    for call, exc, text in cases:
        with pytest.raises(exc) as ei:
            call()
        assert text in str(ei.value), (text, str(ei.value))


def test_wrong_values_of_message_fields_are_avp_errors() -> None:
    k = np.zeros((1, 1, 2, 4), np.float16)
    for call, code, where in [
        (lambda: avp.Tensor(99, avp.Dtype.FLOAT16, (1,), b"\0\0"), E.UNKNOWN_ROLE, "role"),
        (lambda: avp.Tensor(avp.Role.KEY, 77, (1,), b"\0\0"), E.UNKNOWN_DTYPE, "dtype"),
        (lambda: avp.Tensor(avp.Role.KEY, avp.Dtype.FLOAT16, (1, -1), b""), E.INVALID_VALUE,
         "shape[1]"),
        (lambda: avp.Tensor.from_array(k, avp.Role.KEY, ordinal=-1), E.INVALID_VALUE,
         "ordinal"),
        (lambda: avp.Tensor.from_array(k, avp.Role.KEY, codec=9), E.UNKNOWN_CODEC, "codec"),
    ]:
        with pytest.raises(avp.AvpError) as ei:
            call()
        assert (ei.value.code, ei.value.path) == (code, where)


def test_the_layer_reference_is_an_explicit_ordinal() -> None:
    """Issue 19.3: with layers 0, 3, 7, 11 the tensor of model layer 7 is ordinal 2; ordinal 7
    is refused with a message that says what an ordinal is."""
    layers = [avp.Layer(i, avp.LayerKind.FULL_ATTENTION, 0, 2) for i in (0, 3, 7, 11)]
    kv = np.zeros((1, 1, 2, 4), np.float16)

    def msg(ordinals: list[int]) -> avp.Message:
        ts = [avp.Tensor.from_array(kv, role, ordinal=o, layout=avp.Layout.BHTD)
              for o in ordinals for role in (avp.Role.KEY, avp.Role.VALUE)]
        return avp.kv_cache_message(bytes(32), 2, layers, ts)

    back = avp.decode(avp.encode(msg([0, 1, 2, 3])))
    assert [back.layers[t.layer].index for t in back.tensors[::2]] == [0, 3, 7, 11]
    with pytest.raises(avp.AvpError) as ei:
        avp.encode(msg([0, 1, 2, 7]))
    assert ei.value.code == E.BAD_REFERENCE and ei.value.path == "tensor[6].layer"
    assert "ordinal 7 >= 4 layer table entries" in str(ei.value)
    with pytest.warns(DeprecationWarning, match="ordinal="):
        t = avp.Tensor.from_array(kv, avp.Role.KEY, layer=1, layout=avp.Layout.BHTD)
    assert t.layer == 1


# -- handshake: the streamed vocabulary comparison equals its definition ----------------------
def _naive_compatible(va: list[bytes], vb: list[bytes]) -> bool:
    shared = _handshake.decoded_token_strings(va) & _handshake.decoded_token_strings(vb)
    return 2 * len(shared) >= min(len(va), len(vb))


def _blob(tokens: list[bytes]) -> bytes:
    return b"".join(len(t).to_bytes(4, "little") + t for t in tokens)


TOKENS = st.lists(st.one_of(
    st.binary(max_size=4),
    st.sampled_from([b"a", b"\xc4\xa0a", b"\xe2\x96\x81a", b" a", b"<0x41>", b"A", b"<0xZZ>",
                     b"\xc4\xa0", b"\xe2\x96\x81", b"", b"\xff", "\u0120b".encode()]),
    st.text(max_size=3).map(str.encode)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(TOKENS, TOKENS)
def test_streamed_vocabulary_comparison_matches_the_definition(va: list[bytes],
                                                                vb: list[bytes]) -> None:
    local = avp.hello_message("a", tokenizer_id=bytes(32), vocabulary=_blob(va), nonce=bytes(16))
    peer = avp.hello_message("b", tokenizer_id=b"\1" * 32, vocabulary=_blob(vb), nonce=bytes(16))
    assert avp.tokenizers_compatible(local, peer) == _naive_compatible(va, vb)
    assert _handshake.is_byte_level(vb) == all(
        t is None or all(c in _handshake._BYTE_OF for c in t)
        for t in map(_handshake._text, vb))
