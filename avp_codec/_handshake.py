"""Handshake and session checks (spec 10.4, 10.11, 10.12, 14) as pure functions over decoded
messages. Each side decides from its own HELLO and the peer's message, never from an echo of its
own values. These raise the receiver-side codes (33, 36, 70-73); the runtime decides what to send
back. ``verify_peer`` runs the per-message checks in the order 14.3 lists them.

Hostile input: the messages are decoded ones (the decoder's limits bound them); arguments of the
wrong type are ``TypeError``. Time is linear in the vocabularies; memory is the set of the local
vocabulary's decoded strings (the receiver's own, trusted) plus a constant: a peer's
vocabulary is streamed from its bytes, never expanded into a list or a set.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Iterator, Sequence

from ._registry import Codec, Dtype, ErrorCode, Kind, MetaKey, Mode
from .errors import AvpError
from .model import Message

_RANK = {Mode.KV_CACHE: 3, Mode.PROJECTION: 2, Mode.TEXT: 1}  # KV_CACHE best (14.1)


def _fail(code: ErrorCode, msg: str, path: str = "") -> AvpError:
    return AvpError(code, msg, path=path)


def _msg(v: object, name: str) -> Message:
    if not isinstance(v, Message):
        raise TypeError(f"{name} must be an avp_codec.Message, not {type(v).__name__}")
    return v


def _records(v: bytes) -> Iterator[bytes]:
    """The token byte strings of a VOCABULARY value (spec 13.3), one at a time."""
    pos, n, u32 = 0, len(v), _U32
    while pos + 4 <= n:
        (k,) = u32(v, pos)
        yield v[pos + 4:pos + 4 + k]
        pos += 4 + k


_U32 = struct.Struct("<I").unpack_from


def check_model_id(msg: Message, model_id: bytes, tokenizer_id: bytes | None = None) -> None:
    """R-10.4, R-10.11, R-10.12 (and R-14.8): refuse a KV_CACHE or HIDDEN_STATE that belongs to
    another model, or a projection made for another tokenizer (when ``tokenizer_id`` is given)."""
    _msg(msg, "msg")
    if not isinstance(model_id, (bytes, bytearray, memoryview)):
        raise TypeError(f"model_id must be bytes, not {type(model_id).__name__}")
    if tokenizer_id is not None and not isinstance(tokenizer_id, (bytes, bytearray, memoryview)):
        raise TypeError(f"tokenizer_id must be bytes or None, not {type(tokenizer_id).__name__}")
    if msg.kind not in (Kind.KV_CACHE, Kind.HIDDEN_STATE):
        return
    if msg.get(MetaKey.MODEL_ID) != bytes(model_id):
        raise _fail(ErrorCode.MODEL_MISMATCH, f"{msg.kind.name} MODEL_ID is not this model's",
                    "entries.MODEL_ID")
    target = msg.get(MetaKey.PROJ_TARGET_TOKENIZER_ID)
    if (tokenizer_id is not None and msg.kind == Kind.HIDDEN_STATE
            and msg.get(MetaKey.HIDDEN_SOURCE) == 2 and target != bytes(tokenizer_id)):
        raise _fail(ErrorCode.MODEL_MISMATCH, "projection made for another tokenizer",
                    "entries.PROJ_TARGET_TOKENIZER_ID")


# -- 14.5 decoded token strings ------------------------------------------------------------
def _byte_unicode() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: character -> byte."""
    direct = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in direct}
    extra = 0
    for b in range(256):
        if b not in direct:
            table[chr(0x100 + extra)] = b
            extra += 1
    return table


_BYTE_OF = _byte_unicode()
# The same table as C-speed string operations: a character outside the 256 stand-ins, and the
# translation of each stand-in to the latin-1 character of its byte.
_NON_BYTE = re.compile("[^" + "".join(re.escape(c) for c in _BYTE_OF) + "]")
_TO_BYTE = str.maketrans({c: chr(b) for c, b in _BYTE_OF.items()})
_FROM_BYTE = str.maketrans({chr(b): c for c, b in _BYTE_OF.items()})
_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, after surrogateescape
_SPACE_MARK = "\u2581".encode()
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def _text(token: bytes) -> str | None:
    """A record's text, or None for an empty record or one that is not UTF-8 (14.5 step 4)."""
    try:
        return token.decode("utf-8") if token else None
    except UnicodeDecodeError:
        return None


def is_byte_level(vocabulary: Iterable[bytes]) -> bool:
    """Spec 14.5 step 1: every record with a text is spelled only with GPT-2's 256 stand-ins."""
    for tok in vocabulary:
        # surrogateescape never raises: a record that is not UTF-8 shows escapes and has no
        # text, so it does not count (a strict decode would cost an exception per record).
        t = tok.decode("utf-8", "surrogateescape")
        if _NON_BYTE.search(t) and not _ESCAPED.search(t):
            return False
    return True


def decoded_token(token: bytes, byte_level: bool) -> bytes | None:
    """The bytes one token stands for (spec 14.5 steps 2-4), or None when it has none."""
    t = _text(token)
    if t is None:
        return None
    if byte_level:
        if _NON_BYTE.search(t):
            return None  # not spelled with the stand-ins: no bytes in a byte-level vocabulary
        return t.translate(_TO_BYTE).encode("latin-1")
    if len(t) == 6 and t.startswith("<0x") and t.endswith(">") and all(
            c in "0123456789abcdefABCDEF" for c in t[3:5]):
        return bytes([int(t[3:5], 16)])
    return t.replace("\u2581", " ").encode("utf-8")


def decoded_token_strings(vocabulary: Sequence[bytes]) -> set[bytes]:
    """The set of decoded token strings of a vocabulary (spec 14.5).

    >>> sorted(decoded_token_strings([b"\\xc4\\xa0a", b"b"]))   # GPT-2 byte-level: "Ġa" is " a"
    [b' a', b'b']
    """
    byte_level = is_byte_level(vocabulary)
    out: set[bytes] = set()
    for tok in vocabulary:
        d = decoded_token(tok, byte_level)
        if d is not None:
            out.add(d)
    return out


def _ulist(msg: Message, key: MetaKey) -> tuple[int, ...] | None:
    v = msg.get(key)
    return v if isinstance(v, tuple) else None


def tokenizers_compatible(local: Message, peer: Message) -> bool:
    """14.3 rule 3: identical TOKENIZER_IDs, or (with both vocabularies at hand) a shared set of
    decoded token strings of at least half the smaller vocabulary."""
    a, b = local.get(MetaKey.TOKENIZER_ID), peer.get(MetaKey.TOKENIZER_ID)
    if a is None or b is None:
        return False
    if a == b:
        return True
    va, vb = local.get(MetaKey.VOCABULARY), peer.get(MetaKey.VOCABULARY)
    if not isinstance(va, bytes) or not isinstance(vb, bytes):
        return False
    mine = decoded_token_strings(list(_records(va)))  # ours: trusted, its size is ours to pick
    # The peer's vocabulary is streamed twice (14.5 step 1, then the strings), so a hostile
    # one costs time linear in its bytes and no memory beyond the shared subset of ours.
    shared, count = _shared(mine, vb, is_byte_level(_records(vb)))
    return 2 * shared >= min(sum(1 for _ in _records(va)), count)


def _shared(mine: set[bytes], vocabulary: bytes, byte_level: bool) -> tuple[int, int]:
    """(how many of ``mine`` the vocabulary's decoded strings hit, its record count), decoding
    only the records that can hit: each decoded string has one spelling in a byte-level
    vocabulary, and is the record with U+2581 made a space otherwise (14.5 steps 2-3)."""
    hits: set[bytes] = set()
    count = 0
    if byte_level:
        spelled = {d.decode("latin-1").translate(_FROM_BYTE).encode(): d for d in mine if d}
        for tok in _records(vocabulary):
            count += 1
            if tok in spelled:
                hits.add(tok)
        return len(hits), count
    for tok in _records(vocabulary):
        count += 1
        if len(tok) == 6 and tok[:3] == b"<0x" and tok[5] == 0x3E and (
                tok[3] in _HEX_DIGITS and tok[4] in _HEX_DIGITS):
            d: bytes | None = bytes([int(tok[3:5], 16)])
        else:
            d = tok.replace(_SPACE_MARK, b" ")
        if d in mine and d not in hits and decoded_token(tok, False) == d:
            hits.add(d)  # (the last test: the record is UTF-8 text, 14.5 step 4)
    return len(hits), count


def resolve_mode(local_hello: Message, peer: Message) -> Mode:
    """The mode of 14.3 from the local HELLO and the peer's HELLO (or ACCEPT). An ACCEPT without
    CAP_MODES counts as offering every mode (R-14.2's downgrade rule covers the rest)."""
    _msg(local_hello, "local_hello")
    _msg(peer, "peer")
    mine = {v >> 16 for v in _ulist(local_hello, MetaKey.VERSIONS) or ()}
    theirs = {v >> 16 for v in _ulist(peer, MetaKey.VERSIONS) or ()}
    if not mine & theirs:
        raise _fail(ErrorCode.NO_COMMON_VERSION, "no shared major version",
                    "entries.VERSIONS")
    modes = set(_ulist(local_hello, MetaKey.CAP_MODES) or ())
    peer_modes = _ulist(peer, MetaKey.CAP_MODES)
    if peer_modes is not None:
        modes &= set(peer_modes)
    ma, mb = local_hello.get(MetaKey.MODEL_ID), peer.get(MetaKey.MODEL_ID)
    if Mode.KV_CACHE in modes and ma is not None and ma == mb:
        return Mode.KV_CACHE
    if Mode.PROJECTION in modes and tokenizers_compatible(local_hello, peer):
        return Mode.PROJECTION
    return Mode.TEXT


def verify_peer(local_hello: Message, peer: Message, expected: Kind) -> Mode:
    """Every check 14.3 lists for a received HELLO (responder) or ACCEPT (initiator), in order;
    returns the resolved mode. The responder puts the result in its ACCEPT."""
    _msg(local_hello, "local_hello")
    _msg(peer, "peer")
    if not isinstance(expected, Kind):
        raise TypeError(f"expected must be an avp_codec.Kind, not {type(expected).__name__}")
    if peer.kind != expected:
        raise _fail(ErrorCode.KIND_CONSTRAINT, f"expected {expected.name}, got {peer.kind.name}")
    vocab, digest = peer.get(MetaKey.VOCABULARY), peer.get(MetaKey.VOCAB_DIGEST)
    if isinstance(vocab, bytes) and digest is not None and hashlib.sha256(vocab).digest() != digest:
        raise _fail(ErrorCode.INVALID_VALUE, "VOCAB_DIGEST is not the SHA-256 of VOCABULARY",
                    "entries.VOCAB_DIGEST")
    caps = _ulist(peer, MetaKey.CAP_MODES)
    if caps is not None and Mode.TEXT not in caps:
        raise _fail(ErrorCode.UNSUPPORTED_CAPABILITY, "CAP_MODES lacks TEXT",
                    "entries.CAP_MODES")
    nonce = local_hello.get(MetaKey.NONCE)
    if nonce is not None and peer.get(MetaKey.NONCE) == nonce:
        raise _fail(ErrorCode.NEGOTIATION_MISMATCH, "the peer sent our own NONCE back",
                    "entries.NONCE")
    own = set(_ulist(local_hello, MetaKey.CAP_MODES) or ())
    if expected == Kind.ACCEPT and peer.get(MetaKey.MODE) not in own:
        raise _fail(ErrorCode.NEGOTIATION_MISMATCH, "ACCEPT chose a mode we did not offer",
                    "entries.MODE")
    mode = resolve_mode(local_hello, peer)
    if expected == Kind.ACCEPT:
        raw = peer.get(MetaKey.MODE)
        assert isinstance(raw, int)  # ACCEPT requires MODE, a registered mode (10.1)
        theirs = Mode(raw)
        full = caps is not None  # with CAP_MODES the initiator sees all the responder's data
        if (theirs != mode) if full else (_RANK[theirs] > _RANK[mode]):
            raise _fail(ErrorCode.NEGOTIATION_MISMATCH,
                        f"peer resolved {theirs.name}, we resolve {mode.name}", "entries.MODE")
        return theirs
    return mode


def check_accept(local_hello: Message, accept: Message) -> Mode:
    """The initiator's side of R-14.2 (see verify_peer)."""
    return verify_peer(local_hello, accept, Kind.ACCEPT)


def check_payload(msg: Message, mode: Mode, offered: Message,
                  encoded_length: int | None = None) -> None:
    """R-14.6 and R-14.7 for a payload received in a session of ``mode``; ``offered`` is the
    receiver's own HELLO or ACCEPT (what it itself offered)."""
    _msg(msg, "msg")
    _msg(offered, "offered")
    if not isinstance(mode, Mode):
        raise TypeError(f"mode must be an avp_codec.Mode, not {type(mode).__name__}")
    payload = {Mode.KV_CACHE: Kind.KV_CACHE, Mode.PROJECTION: Kind.HIDDEN_STATE,
               Mode.TEXT: Kind.TEXT}[mode]
    same_model_state = (mode == Mode.KV_CACHE and msg.kind == Kind.HIDDEN_STATE
                        and msg.get(MetaKey.HIDDEN_SOURCE) == 1)  # D9
    ok = msg.kind in (payload, Kind.ERROR) or same_model_state
    if mode == Mode.PROJECTION and msg.kind == Kind.HIDDEN_STATE:
        ok = msg.get(MetaKey.HIDDEN_SOURCE) == 2
    if not ok:
        raise _fail(ErrorCode.UNSUPPORTED_CAPABILITY,
                    f"{msg.kind.name} is not a payload of a {mode.name} session")
    check_capabilities(msg, offered, encoded_length)


def check_capabilities(msg: Message, offered: Message, encoded_length: int | None = None) -> None:
    """R-14.7: UNSUPPORTED_CAPABILITY if ``msg`` uses a dtype, codec or size outside what
    ``offered`` (the receiver's HELLO/ACCEPT) lists; an absent list accepts everything."""
    _msg(msg, "msg")
    _msg(offered, "offered")
    dtypes, codecs = _ulist(offered, MetaKey.CAP_DTYPES), _ulist(offered, MetaKey.CAP_CODECS)
    for i, t in enumerate(msg.tensors):
        if dtypes is not None and int(t.dtype) not in dtypes:
            raise _fail(ErrorCode.UNSUPPORTED_CAPABILITY,
                        f"{Dtype(t.dtype).name.lower()} was not offered", f"tensor[{i}].dtype")
        if codecs is not None and int(t.codec) not in codecs:
            raise _fail(ErrorCode.UNSUPPORTED_CAPABILITY,
                        f"{Codec(t.codec).name.lower()} was not offered", f"tensor[{i}].codec")
    limit = offered.get(MetaKey.MAX_MESSAGE_BYTES)
    if encoded_length is not None and isinstance(limit, int) and encoded_length > limit:
        raise _fail(ErrorCode.UNSUPPORTED_CAPABILITY,
                    f"{encoded_length} bytes > MAX_MESSAGE_BYTES {limit}")
