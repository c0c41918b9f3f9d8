"""The readings spec/DECISIONS.md's resolution table pins where no conformance vector can: the
random-access reader (11.3), the encoder (R-15.5, R-18.3), the incremental decoder's limits
(R-9.5) and the architecture object (13.4). Each test names its review item
(shared/reviews/spec-review-2026-12.md); if the code changes its answer, the spec text and this
test change together."""

from __future__ import annotations

import copy
import struct
from types import SimpleNamespace
from typing import Any

import crc32c
import numpy as np
import pytest

import avp_codec as avp

KEY_ID, KEY = b"k1", bytes(range(32))


def _kv(layers: int = 3) -> bytes:
    keys = [np.full((1, 1, 2, 4), i, np.float16) for i in range(layers)]
    return avp.encode(avp.kv_cache_from_arrays(b"\1" * 32, keys, keys))


def _index_at(data: bytes) -> int:
    return int.from_bytes(data[-16:-8], "little")


def _with_index(data: bytes, entries: list[tuple[int, int, int]]) -> bytes:
    """``data`` with its INDEX entries replaced (same count) and the INDEX CRC recomputed."""
    buf = bytearray(data)
    at = _index_at(data)
    for i, entry in enumerate(entries):
        struct.pack_into("<QQQ", buf, at + 24 + 24 * i, *entry)
    n = int.from_bytes(buf[at + 8:at + 16], "little")
    struct.pack_into("<I", buf, at + 16 + n, crc32c.crc32c(bytes(buf[at:at + 16 + n])))
    return bytes(buf)


def _code(call: Any) -> str:
    with pytest.raises(avp.AvpError) as info:
        call()
    return info.value.code.name


# -- items 27-29: the random-access reader ---------------------------------------------------
def test_an_entry_leading_to_another_tensor_is_tensor_index() -> None:
    """Item 27: the reader applies T.4 with the entry's ordinal: TENSOR_INDEX."""
    data = _kv(1)  # tensors 0 (KEY) and 1 (VALUE)
    index = avp.IndexedReader(data).index
    (s0, d0, n0), (s1, d1, n1) = index
    # Entry 0 now points at tensor 1; entry 1 moves on to a plausible place after it.
    moved = _with_index(data, [(s1, d1, n1), (d1, d1, 0)])
    reader = avp.IndexedReader(moved)
    assert _code(lambda: reader.tensor(0)) == "TENSOR_INDEX"


def test_index_plausibility_is_exactly_as_written() -> None:
    """Item 28: "strictly increasing" is the section offsets; each check is INDEX_MISMATCH."""
    data = _kv(1)
    (s0, d0, n0), (s1, d1, n1) = avp.IndexedReader(data).index
    at = _index_at(data)
    for entries in ([(s0, d0, n0), (s0, d0, n0)],          # not strictly increasing
                    [(s0, d0, n0), (s1 + 4, d1, n1)],      # not a multiple of 8
                    [(s0, d0, n0), (d1 + 64, d1, n1)],     # data before its section
                    [(s0, d0, n0), (s1, d1, at)]):         # data past the INDEX
        assert _code(lambda e=entries: avp.IndexedReader(_with_index(data, e))) == \
            "INDEX_MISMATCH", entries
    misaligned = [(s0, d0, n0), (s1, d1 + 8, n1)]
    assert _code(lambda: avp.IndexedReader(_with_index(data, misaligned))) == "MISALIGNED"


def test_reader_starts_at_the_trailer() -> None:
    """Item 29: an input too short for a Trailer is BAD_TRAILER (no step P first)."""
    for short in (b"", b"\x89AV", b"\x89AVP\r\n\x1a\n\x01\x00"):
        assert _code(lambda s=short: avp.IndexedReader(s)) == "BAD_TRAILER"


# -- items 13-15: the encoder ---------------------------------------------------------------
def _doc_and_stored() -> tuple[dict[str, Any], bytes]:
    msg = avp.decode(_kv(1))
    return avp.to_canonical_json(msg), b"".join(bytes(t.stored) for t in msg.tensors)


@pytest.mark.parametrize("member,value,code", [
    ("stored_length", 3, "INVALID_VALUE"), ("data_crc", 5, "INVALID_VALUE"),
    ("raw_sha256", "00" * 32, "INVALID_VALUE"), ("tensor_index", 1, "INVALID_VALUE"),
    ("raw_length", 1, "SIZE_MISMATCH"),  # a descriptor field: the decoder's code
])
def test_json_input_codes(member: str, value: Any, code: str) -> None:
    """Item 13: JSON-level faults are INVALID_VALUE, message-level ones the decoder's code."""
    doc, stored = _doc_and_stored()
    doc["tensors"][0][member] = value
    assert _code(lambda: avp.encode(avp.from_canonical_json(doc, stored))) == code


def test_json_input_name_must_match_the_key() -> None:
    doc, stored = _doc_and_stored()
    doc["entries"][0]["name"] = "TOKENIZER_ID"
    assert _code(lambda: avp.from_canonical_json(doc, stored)) == "INVALID_VALUE"


def test_encoding_an_authenticated_message_needs_its_key() -> None:
    """Item 14: AUTH_KEY_ID and neither key nor reusable tag: AUTH_REQUIRED; a key of another
    id: UNKNOWN_KEY (R-15.5)."""
    msg = avp.text_message("hi", extra=[avp.Entry(int(avp.MetaKey.AUTH_KEY_ID),
                                                  avp.ValueType.BYTES, KEY_ID, True)])
    assert _code(lambda: avp.encode(msg)) == "AUTH_REQUIRED"
    assert _code(lambda: avp.encode(msg, auth_key=(b"other", KEY))) == "UNKNOWN_KEY"
    assert avp.decode(avp.encode(msg, auth_key=(KEY_ID, KEY)), keys={KEY_ID: KEY}).authenticated


def test_a_stale_tag_is_never_reused() -> None:
    """Item 15: re-encoding without the key reuses the tag only for the same bytes."""
    signed = avp.encode(avp.text_message("hi"), auth_key=(KEY_ID, KEY))
    assert avp.encode(avp.decode(signed)) == signed  # same minor, nothing dropped: reused
    newer = bytearray(signed)
    newer[10] = 1  # minor 1: the tag covered it, the encoder writes minor 0
    decoded = avp.decode(bytes(newer))  # no key held: decodes, not authenticated
    assert not decoded.authenticated
    assert _code(lambda: avp.encode(decoded)) == "AUTH_REQUIRED"
    again = avp.encode(decoded, auth_key=(KEY_ID, KEY))
    assert avp.decode(again, keys={KEY_ID: KEY}).authenticated


def test_negative_zero_keeps_its_sign_in_json_text() -> None:
    """Item 17: the message JSON keeps -0.0 (the 13.4 rule is for the architecture object)."""
    msg = avp.text_message("x", extra=[avp.Entry(0x7002, avp.ValueType.F64, -0.0, False)])
    text = avp.dumps_canonical_json(avp.decode(avp.encode(msg)))
    assert '"value":-0.0' in text


# -- items 10 and 11: the incremental decoder's limits ---------------------------------------
def _incremental(data: bytes, chunk: int, limits: avp.Limits) -> str:
    dec = avp.Decoder(limits=limits)
    try:
        for i in range(0, len(data), chunk):
            dec.feed(data[i:i + chunk])
            while dec.next_event() is not avp.NEED_DATA:
                pass
        dec.end_of_input()
        while dec.next_event() is not avp.NEED_DATA:
            pass
    except avp.AvpError as e:
        return e.code.name
    return "valid"


def test_limit_message_with_an_earlier_fault() -> None:
    """Item 10: R-9.5's exception: LIMIT_MESSAGE for the complete-buffer decoder; an
    incremental decoder may report the fault it met first."""
    bad = bytearray(_kv(1))
    bad[0] = 0x09
    limits = avp.Limits(max_message_bytes=256)
    assert _code(lambda: avp.decode(bytes(bad), limits=limits)) == "LIMIT_MESSAGE"
    assert _incremental(bytes(bad), len(bad), limits) == "LIMIT_MESSAGE"
    assert _incremental(bytes(bad), 8, limits) in ("LIMIT_MESSAGE", "BAD_MAGIC")


def test_limit_buffer_does_not_depend_on_chunking() -> None:
    """Item 11: decided from declared sizes (S.4, T.15), not from how the input is split."""
    data = _kv(1)
    limits = avp.Limits(max_buffer_bytes=64)
    outcomes = {_incremental(data, chunk, limits) for chunk in (1, 7, 64, len(data))}
    assert outcomes == {"LIMIT_BUFFER"}
    assert avp.decode(data, limits=limits).kind == avp.Kind.KV_CACHE  # complete: goes on


# -- item 31: the architecture object's rope_parameters -------------------------------------
def test_rope_parameters_flat_or_per_layer_type() -> None:
    from avp_runtime.identity import architecture  # imports torch: only this test needs it

    flat = architecture(SimpleNamespace(rope_parameters={"rope_type": "default",
                                                         "rope_theta": 1e5}))
    assert flat["rope_theta"] == 1e5 and flat["rope_scaling"] is None
    scaled = architecture(SimpleNamespace(rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                           "rope_theta": 1e4}))
    assert scaled["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    per_type = {"full_attention": {"rope_theta": 1e6, "rope_type": "default"},
                "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}}
    layered = architecture(SimpleNamespace(rope_parameters=copy.deepcopy(per_type)))
    assert layered["rope_theta"] == 1e6 and layered["rope_scaling"] == per_type
    attr = architecture(SimpleNamespace(rope_theta=5.0, rope_parameters={"rope_theta": 1e5}))
    assert attr["rope_theta"] == 5.0  # a configuration attribute is used as it is
