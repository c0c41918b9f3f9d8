"""The shared-vocabulary rule used by handshake rule 3 (avp_runtime.vocab)."""

from __future__ import annotations

import pytest
from avp_runtime.vocab import (
    VocabIndex,
    compatible,
    decoded_bytes,
    encode_vocabulary,
    is_byte_level,
    parse_vocabulary,
    shared_pairs,
    shared_size,
    shared_with,
)

import avp_codec as avp


def test_vocabulary_round_trip() -> None:
    toks = [b"", b"a", "\u0120\u00e9".encode(), b"x" * 300]
    assert parse_vocabulary(encode_vocabulary(toks)) == toks


@pytest.mark.parametrize("blob", [b"\x01", b"\x02\x00\x00\x00a", b"\xff\xff\xff\xff"])
def test_vocabulary_that_does_not_tile_is_invalid(blob: bytes) -> None:
    with pytest.raises(avp.AvpError) as ei:
        parse_vocabulary(blob)
    assert ei.value.code == avp.ErrorCode.INVALID_VALUE


def test_vocabulary_token_count_is_bounded() -> None:
    with pytest.raises(avp.AvpError) as ei:
        parse_vocabulary(encode_vocabulary([b"a"] * 11), max_tokens=10)
    assert ei.value.code == avp.ErrorCode.INVALID_VALUE


def test_byte_level_tokens_decode_through_the_gpt2_table() -> None:
    # "Ġ" is byte 0x20, "Ċ" is 0x0A, "Ã©" is the two UTF-8 bytes of "é".
    assert decoded_bytes("\u0120the".encode(), True) == b" the"
    assert decoded_bytes("\u010a".encode(), True) == b"\n"
    assert decoded_bytes("\u00c3\u00a9".encode(), True) == "é".encode()


def test_sentencepiece_tokens_decode_spaces_and_byte_fallback() -> None:
    assert decoded_bytes("\u2581the".encode(), False) == b" the"
    assert decoded_bytes(b"<0x0A>", False) == b"\n"
    assert decoded_bytes("é".encode(), False) == "é".encode()
    assert decoded_bytes(b"", False) is None


def test_scheme_is_recognised_from_the_list() -> None:
    assert is_byte_level([b"<|endoftext|>", "\u0120a".encode(), b"b"])
    assert not is_byte_level([b"<pad>", "\u2581a".encode()])
    assert not is_byte_level(["\u4e2d".encode()])


def test_shared_counts_distinct_decoded_strings_once() -> None:
    bpe = VocabIndex.build(["\u0120a".encode(), b"b", b"c"])
    # Shared: " a" (spelled "Ġa" / "▁a") and "b"; "<0x41>" is "A", which bpe lacks. The second
    # "b" in spm is a duplicate spelling and maps to the lowest id.
    spm = VocabIndex.build(["\u2581a".encode(), b"b", b"b", b"<0x41>"])
    assert shared_size(bpe, spm) == shared_size(spm, bpe) == 2
    assert shared_pairs(bpe, spm) == [(0, 0), (1, 1)]


def test_shared_with_a_peer_list_equals_the_shared_size_of_its_index() -> None:
    """The responder counts a peer's VOCABULARY against its own index without building the
    peer's (a 200k-token HELLO cost a second index of 200k entries); same count."""
    bpe_tokens = ["\u0120a".encode(), b"b", b"c"]
    spm_tokens = ["\u2581a".encode(), b"b", b"b", b"<0x41>", b"zz"]
    for mine, theirs in ((bpe_tokens, spm_tokens), (spm_tokens, bpe_tokens),
                         (bpe_tokens, bpe_tokens), (spm_tokens, [])):
        index = VocabIndex.build(mine)
        assert shared_with(index, theirs) == shared_size(index, VocabIndex.build(theirs))


def test_compatible_is_half_of_the_smaller_vocabulary() -> None:
    assert compatible(5, 10, 1000)
    assert not compatible(4, 10, 1000)
    assert compatible(5, 1000, 9)
    assert not compatible(0, 0, 10)
