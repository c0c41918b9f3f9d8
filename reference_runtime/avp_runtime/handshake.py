"""HELLO / ACCEPT / ERROR negotiation (spec section 14), sans-IO.

The rules of 14.3, in the order the spec gives them:

1. no shared major version                       -> ERROR NO_COMMON_VERSION
2. both offer KV_CACHE and MODEL_IDs are equal   -> KV_CACHE
3. both offer PROJECTION, both sent TOKENIZER_ID, and the tokenizers are identical or share >= 50%
   of the smaller vocabulary (from the peer's VOCABULARY)            -> PROJECTION
4. otherwise                                     -> TEXT

Every decision compares the peer's *own* claims (from its message) with our *own* values (from
our model), never something the peer copied from us: the old SDK's server echoed the client's
identity back and so always "agreed". A reflected message (one carrying the nonce we just sent) is
refused outright (R-14.4). The initiator recomputes the mode from ACCEPT (R-14.2): our responder
sends CAP_MODES, and its VOCABULARY when it resolves PROJECTION between different tokenizers
(R-14.10); without them the initiator uses a local vocabulary copy whose TOKENIZER_ID is the
peer's, and accepts a downgrade but never an upgrade.

Nothing here touches a socket: callers pass decoded messages in (decoded with `LIMITS`) and get
messages back (agent.py does the I/O). Payload checks after the handshake (R-14.6, R-14.7) are
the codec's `avp.check_payload`, called with `Resolution.offered` / `Resolution.peer_message`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import avp_codec as avp

from ._errors import fail
from ._msg import build
from .vocab import VocabIndex, compatible, encode_vocabulary, parse_vocabulary, shared_with

M = avp.MetaKey
FORMAT_1_0 = (1 << 16) | 0
# Preference order of 14.3: lower rank wins.
RANK = {avp.Mode.KV_CACHE: 0, avp.Mode.PROJECTION: 1, avp.Mode.TEXT: 2}
ALL_MODES = tuple(sorted(int(m) for m in avp.Mode))
# HELLO / ACCEPT / ERROR carry no tensor: decode them with these limits and a message of another
# kind with tensors (a decompression bomb sent to the handshake) is refused before inflation.
LIMITS = avp.Limits(max_tensor_bytes=0)


@dataclass
class LocalSide:
    """What this agent is and offers; identities come from its own model (identity.py)."""

    agent_name: str
    model_id: bytes | None = None
    tokenizer_id: bytes | None = None
    vocabulary: Sequence[bytes] | None = None
    model_name: str | None = None
    versions: tuple[int, ...] = (FORMAT_1_0,)
    dtypes: tuple[int, ...] = tuple(sorted(int(d) for d in avp.Dtype))
    codecs: tuple[int, ...] = tuple(sorted(int(c) for c in avp.Codec))
    modes: tuple[int, ...] = ALL_MODES
    max_message_bytes: int = 1 << 32
    # Vocabularies of peers we could *send* a projection to (we hold their input embeddings),
    # keyed by TOKENIZER_ID; lets the initiator re-check rule 3 from ACCEPT (see module doc).
    known_vocabularies: Mapping[bytes, Sequence[bytes]] = field(default_factory=dict)
    _index: VocabIndex | None = field(default=None, init=False, repr=False)

    def vocab_index(self) -> VocabIndex | None:
        if self._index is None and self.vocabulary is not None:
            self._index = VocabIndex.build(self.vocabulary)
        return self._index


@dataclass(frozen=True)
class PeerClaims:
    """The values a peer stated about itself in a HELLO or ACCEPT."""

    kind: avp.Kind
    agent_name: str
    versions: tuple[int, ...]
    modes: tuple[int, ...] | None
    dtypes: tuple[int, ...] | None
    codecs: tuple[int, ...] | None
    max_message_bytes: int | None
    model_id: bytes | None
    tokenizer_id: bytes | None
    vocabulary: list[bytes] | None
    nonce: bytes | None
    mode: avp.Mode | None
    shared_vocab_size: int | None

    @classmethod
    def from_message(cls, msg: avp.Message) -> PeerClaims:
        if msg.kind == avp.Kind.ERROR:
            code = int(_get(msg, M.ERROR_CODE))
            text = _get(msg, M.ERROR_TEXT) or ""
            try:
                err = avp.ErrorCode(code)
            except ValueError:
                err = avp.ErrorCode.NEGOTIATION_MISMATCH
            fail(err, f"peer refused the handshake: {text}", path="ERROR")
        if msg.kind not in (avp.Kind.HELLO, avp.Kind.ACCEPT):
            fail(avp.ErrorCode.KIND_CONSTRAINT,
                 f"expected HELLO or ACCEPT during the handshake, got {msg.kind.name}")
        vocab_blob = _get(msg, M.VOCABULARY)
        vocab = parse_vocabulary(vocab_blob) if vocab_blob is not None else None
        digest = _get(msg, M.VOCAB_DIGEST)
        if digest is not None and vocab_blob is not None and not hmac.compare_digest(
                bytes(digest), hashlib.sha256(bytes(vocab_blob)).digest()):
            fail(avp.ErrorCode.INVALID_VALUE, "VOCAB_DIGEST is not the SHA-256 of VOCABULARY",
                 path="VOCAB_DIGEST")
        mode_v = _get(msg, M.MODE)
        mode = None
        if mode_v is not None:
            try:
                mode = avp.Mode(int(mode_v))
            except ValueError:
                fail(avp.ErrorCode.INVALID_VALUE, f"unregistered MODE {mode_v}", path="MODE")
        modes = _tuple(_get(msg, M.CAP_MODES))
        if modes is not None and int(avp.Mode.TEXT) not in modes:
            # 14.3 rule 4: every implementation MUST support TEXT.
            fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY, "peer does not offer TEXT",
                 path="CAP_MODES")
        return cls(
            kind=avp.Kind(msg.kind),
            agent_name=str(_get(msg, M.AGENT_NAME)),
            versions=_tuple(_get(msg, M.VERSIONS)) or (),
            modes=modes,
            dtypes=_tuple(_get(msg, M.CAP_DTYPES)),
            codecs=_tuple(_get(msg, M.CAP_CODECS)),
            max_message_bytes=_opt_int(_get(msg, M.MAX_MESSAGE_BYTES)),
            model_id=_opt_bytes(_get(msg, M.MODEL_ID)),
            tokenizer_id=_opt_bytes(_get(msg, M.TOKENIZER_ID)),
            vocabulary=vocab,
            nonce=_opt_bytes(_get(msg, M.NONCE)),
            mode=mode,
            shared_vocab_size=_opt_int(_get(msg, M.SHARED_VOCAB_SIZE)),
        )


@dataclass(frozen=True)
class Resolution:
    """The outcome both sides act on. `offered` is this side's own HELLO or ACCEPT (what it
    accepts: avp.check_payload checks received payloads against it) and `peer_message` the
    peer's (what a sender's payloads must fit)."""

    mode: avp.Mode
    peer: PeerClaims
    shared_vocab: int | None  # decoded token strings both vocabularies hold (rule 3)
    offered: avp.Message | None = None
    peer_message: avp.Message | None = None


def _get(msg: avp.Message, key: avp.MetaKey) -> Any:
    return msg.get(key)


def _tuple(v: Any) -> tuple[int, ...] | None:
    return None if v is None else tuple(int(x) for x in v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_bytes(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


def _majors(versions: Sequence[int]) -> set[int]:
    return {v >> 16 for v in versions}


def _tokenizers(local: LocalSide, peer_tok: bytes | None,
                peer_vocab: Sequence[bytes] | None) -> tuple[bool, int | None]:
    """Rule 3's tokenizer test: (compatible, shared decoded strings or None when not computed)."""
    if local.tokenizer_id is None or peer_tok is None:
        return False, None
    mine = local.vocab_index()
    if peer_vocab is None or mine is None:
        same = hmac.compare_digest(local.tokenizer_id, peer_tok)
        return same, (len(mine.ids) if same and mine is not None else None)
    shared = shared_with(mine, peer_vocab)
    if hmac.compare_digest(local.tokenizer_id, peer_tok):
        return True, shared
    return compatible(shared, mine.size, len(peer_vocab)), shared


def resolve(local: LocalSide, peer: PeerClaims, *, peer_modes: Sequence[int] | None = None,
            peer_vocab: Sequence[bytes] | None = None) -> Resolution:
    """Rules 1-4 of 14.3 from our values and the peer's own claims."""
    if not _majors(local.versions) & _majors(peer.versions):
        fail(avp.ErrorCode.NO_COMMON_VERSION,
             f"peer versions {[hex(v) for v in peer.versions]} share no major with ours",
             path="VERSIONS")
    theirs = set(ALL_MODES if peer_modes is None else peer_modes)
    both = set(local.modes) & theirs
    kv = (int(avp.Mode.KV_CACHE) in both and local.model_id is not None
          and peer.model_id is not None and hmac.compare_digest(local.model_id, peer.model_id))
    ok, shared = _tokenizers(local, peer.tokenizer_id, peer_vocab)
    if kv:
        return Resolution(avp.Mode.KV_CACHE, peer, shared)
    if int(avp.Mode.PROJECTION) in both and ok:
        return Resolution(avp.Mode.PROJECTION, peer, shared)
    return Resolution(avp.Mode.TEXT, peer, shared)


# ------------------------------------------------------------------ message builders


def _message(kind: avp.Kind, values: Mapping[avp.MetaKey, Any]) -> avp.Message:
    return build(kind, values)


def error_message(code: avp.ErrorCode, text: str, agent_name: str | None = None) -> avp.Message:
    return _message(avp.Kind.ERROR, {M.ERROR_CODE: int(code), M.ERROR_TEXT: text,
                                     M.AGENT_NAME: agent_name})


class Initiator:
    """Sends HELLO, checks ACCEPT. One instance per connection (it holds the nonce)."""

    def __init__(self, local: LocalSide, *, send_vocabulary: bool = True) -> None:
        self.local = local
        self.nonce = os.urandom(16)  # fresh for every handshake
        self.send_vocabulary = send_vocabulary
        self.sent: avp.Message | None = None

    def hello(self) -> avp.Message:
        loc = self.local
        vocab = (encode_vocabulary(loc.vocabulary)
                 if loc.vocabulary is not None and self.send_vocabulary else None)
        self.sent = _message(avp.Kind.HELLO, {
            M.AGENT_NAME: loc.agent_name, M.VERSIONS: loc.versions, M.CAP_DTYPES: loc.dtypes,
            M.CAP_CODECS: loc.codecs, M.CAP_MODES: loc.modes,
            M.MAX_MESSAGE_BYTES: loc.max_message_bytes, M.MODEL_ID: loc.model_id,
            M.TOKENIZER_ID: loc.tokenizer_id, M.MODEL_NAME: loc.model_name,
            M.VOCAB_DIGEST: hashlib.sha256(vocab).digest() if vocab is not None else None,
            M.VOCABULARY: vocab, M.NONCE: self.nonce,
        })
        return self.sent

    def handle_accept(self, msg: avp.Message) -> Resolution:
        """The agreed resolution, or AvpError (the caller then sends error_message(e.code))."""
        peer = PeerClaims.from_message(msg)  # an ERROR reply raises here with the peer's code
        if peer.kind != avp.Kind.ACCEPT or peer.mode is None:
            fail(avp.ErrorCode.KIND_CONSTRAINT, "expected ACCEPT")
        if peer.nonce is not None and hmac.compare_digest(peer.nonce, self.nonce):
            fail(avp.ErrorCode.NEGOTIATION_MISMATCH,
                 "ACCEPT carries our own nonce: a reflected message is not a peer", path="NONCE")
        if int(peer.mode) not in self.local.modes:
            fail(avp.ErrorCode.NEGOTIATION_MISMATCH,
                 f"peer chose {peer.mode.name}, which we did not offer", path="MODE")
        # The responder's own VOCABULARY when it sent one, else a local copy whose
        # TOKENIZER_ID is the peer's (the copy we would project onto anyway).
        peer_vocab = peer.vocabulary
        if peer_vocab is None and peer.tokenizer_id is not None:
            known = self.local.known_vocabularies.get(peer.tokenizer_id)
            peer_vocab = list(known) if known is not None else None
        mine = resolve(self.local, peer, peer_modes=peer.modes, peer_vocab=peer_vocab)
        exact = peer.modes is not None  # with CAP_MODES we hold all the responder's data
        if (exact and peer.mode != mine.mode) or RANK[peer.mode] < RANK[mine.mode]:
            fail(avp.ErrorCode.NEGOTIATION_MISMATCH,
                 f"peer resolved {peer.mode.name}, our data gives {mine.mode.name}", path="MODE")
        return Resolution(peer.mode, peer, mine.shared_vocab, self.sent, msg)


class Responder:
    """Answers a HELLO with ACCEPT (its own identity, never the initiator's) or ERROR."""

    def __init__(self, local: LocalSide) -> None:
        self.local = local
        self.nonce = os.urandom(16)

    def handle_hello(self, msg: avp.Message) -> tuple[avp.Message, Resolution | None]:
        try:
            peer = PeerClaims.from_message(msg)
            if peer.kind != avp.Kind.HELLO:
                fail(avp.ErrorCode.KIND_CONSTRAINT, "expected HELLO")
            if peer.nonce is not None and hmac.compare_digest(peer.nonce, self.nonce):
                fail(avp.ErrorCode.NEGOTIATION_MISMATCH, "HELLO carries our own nonce",
                     path="NONCE")
            res = resolve(self.local, peer, peer_modes=peer.modes, peer_vocab=peer.vocabulary)
        except avp.AvpError as e:
            return error_message(e.code, e.detail, self.local.agent_name), None
        loc = self.local
        # CAP_MODES always; our VOCABULARY when the initiator needs it to re-check
        # rule 3 (PROJECTION between different tokenizers).
        vocab = None
        if (res.mode == avp.Mode.PROJECTION and loc.vocabulary is not None
                and peer.tokenizer_id != loc.tokenizer_id):
            vocab = encode_vocabulary(loc.vocabulary)
        reply = _message(avp.Kind.ACCEPT, {
            M.AGENT_NAME: loc.agent_name, M.MODE: int(res.mode), M.VERSIONS: loc.versions,
            M.MODEL_ID: loc.model_id, M.TOKENIZER_ID: loc.tokenizer_id,
            M.CAP_DTYPES: loc.dtypes, M.CAP_CODECS: loc.codecs, M.CAP_MODES: loc.modes,
            M.MAX_MESSAGE_BYTES: loc.max_message_bytes, M.NONCE: self.nonce,
            M.SHARED_VOCAB_SIZE: res.shared_vocab,
            M.VOCAB_DIGEST: hashlib.sha256(vocab).digest() if vocab is not None else None,
            M.VOCABULARY: vocab,
        })
        return reply, Resolution(res.mode, peer, res.shared_vocab, reply, msg)
