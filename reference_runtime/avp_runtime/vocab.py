"""Vocabulary lists (spec 13.3) and the shared-vocabulary computation of the handshake (14.3).

Two tokenizers store the same text differently: GPT-2 style byte-level BPE (SmolLM2, Llama 3,
Qwen) writes every byte as one of 256 printable stand-in characters (a space is ``Ġ``), while
SentencePiece (Gemma, Llama 2) writes a space as ``▁`` and byte-fallback tokens as ``<0xNN>``.
Compared in their stored form the two vocabularies share almost nothing that starts with a space,
so we compare the *decoded* byte strings. The scheme of a vocabulary is recognised from the list
itself (the peer's VOCABULARY is all we get), so both sides of a handshake reach the same number.
The rule is normative in spec 13.3 and 14.3 (its history: spec/DECISIONS.md, D3).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import avp_codec as avp

from ._errors import fail

# The decoding rule of spec 14.5 has one implementation, the codec's: both sides of a handshake
# must reach the same shared-vocabulary size, so the runtime never spells the rule again.
is_byte_level = avp.is_byte_level
decoded_bytes = avp.decoded_token


def encode_vocabulary(tokens: Sequence[bytes]) -> bytes:
    """The VOCABULARY entry value: ``u32 byte length, bytes`` for ids 0..V-1."""
    return b"".join(struct.pack("<I", len(t)) + t for t in tokens)


def parse_vocabulary(blob: bytes | memoryview, *, max_tokens: int = 1 << 22) -> list[bytes]:
    """Split a received VOCABULARY value, refusing anything that does not tile it exactly."""
    view = memoryview(blob)
    out: list[bytes] = []
    pos = 0
    while pos < len(view):
        if len(out) >= max_tokens:
            fail(avp.ErrorCode.INVALID_VALUE, f"VOCABULARY has more than {max_tokens} tokens",
                 path="VOCABULARY")
        if pos + 4 > len(view):
            fail(avp.ErrorCode.INVALID_VALUE, "VOCABULARY ends inside a length prefix",
                 path=f"VOCABULARY[{len(out)}]")
        (n,) = struct.unpack_from("<I", view, pos)
        if n > len(view) - pos - 4:
            fail(avp.ErrorCode.INVALID_VALUE, "VOCABULARY token runs past the end of the value",
                 path=f"VOCABULARY[{len(out)}]")
        out.append(bytes(view[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out


@dataclass(frozen=True)
class VocabIndex:
    """Decoded form -> lowest token id having it, for one vocabulary."""

    size: int
    byte_level: bool
    ids: dict[bytes, int]

    @classmethod
    def build(cls, tokens: Sequence[bytes]) -> VocabIndex:
        byte_level = is_byte_level(tokens)
        ids: dict[bytes, int] = {}
        for i, tok in enumerate(tokens):
            key = decoded_bytes(tok, byte_level)
            if key is not None and key not in ids:
                ids[key] = i
        return cls(len(tokens), byte_level, ids)


def shared_pairs(a: VocabIndex, b: VocabIndex) -> list[tuple[int, int]]:
    """(id in a, id in b) for every decoded string both vocabularies hold, in a's id order."""
    pairs = [(ia, b.ids[key]) for key, ia in a.ids.items() if key in b.ids]
    pairs.sort()
    return pairs


def shared_size(a: VocabIndex, b: VocabIndex) -> int:
    small, large = (a, b) if len(a.ids) <= len(b.ids) else (b, a)
    return sum(1 for key in small.ids if key in large.ids)


def shared_with(mine: VocabIndex, tokens: Sequence[bytes]) -> int:
    """``shared_size(mine, VocabIndex.build(tokens))`` without building the peer's index: its
    decoded strings are looked up one at a time, so a peer's VOCABULARY of 200k tokens costs a
    set of at most this side's own size, not a second index of the peer's."""
    byte_level = is_byte_level(tokens)
    seen: set[bytes] = set()
    for tok in tokens:
        key = decoded_bytes(tok, byte_level)
        if key is not None and key in mine.ids:
            seen.add(key)
    return len(seen)


def compatible(shared: int, size_a: int, size_b: int) -> bool:
    """Rule 3 of 14.3: shared >= 50% of the smaller vocabulary (integer arithmetic, no rounding)."""
    smaller = min(size_a, size_b)
    return smaller > 0 and 2 * shared >= smaller
