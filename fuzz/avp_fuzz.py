"""Coverage-guided fuzz targets for the AVP decoders and the handshake (spec 19.1).

Run one target under atheris (libFuzzer flags pass through):

    python fuzz/avp_fuzz.py decode    -runs=100000 fuzz/corpus/decode
    python fuzz/avp_fuzz.py decoder   -max_total_time=300 fuzz/corpus/decoder
    python fuzz/avp_fuzz.py handshake -max_total_time=300 fuzz/corpus/handshake

Targets (each takes the fuzzer's bytes; the only exception allowed out of the code under test is
``avp_codec.AvpError``; anything else, and any broken oracle below, is a finding):

- ``decode``: ``avp.decode`` on the whole buffer. A buffer that decodes must also survive
  canonical JSON, ``raw_bytes()``/``array()`` of every tensor and a re-encode that decodes to an
  equal message (and reproduces the input byte for byte when the input has no unknown
  sections and minor 0: R-9.2).
- ``decoder``: the sans-IO ``avp.Decoder`` fed the buffer whole, in pseudo-random chunks and
  (for short inputs) byte by byte. Each run must end exactly as ``avp.decode`` does: the same
  error code (LIMIT_BUFFER excepted, R-9.5) or the same canonical JSON.
- ``handshake``: decode with handshake-sized limits, then the codec's handshake functions and,
  when importable, the runtime's ``Responder.handle_hello`` / ``Initiator.handle_accept``; a
  reply the responder builds must encode and decode.

Random bytes almost never carry correct CRC32Cs, which would keep a fuzzer at the checksum
checks. Every target therefore runs each input twice: as given, and "repaired" (every section
CRC, tensor data CRC and, for INDEX bodies of the authenticated length, the HMAC tag under the
fuzz key recomputed), so mutations reach the semantic checks behind the checksums.

``run_inprocess`` is a small seeded mutation loop over the same targets, for machines without
atheris; the pytest suite uses atheris when it can (tests/hardening/test_fuzz_short.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import crc32c

import avp_codec as avp

# The conformance suite's published test key, so the authenticated vectors verify here too.
KEY_ID = b"conformance-key-1"
KEY = hashlib.sha256(b"avp conformance test key (public, for vectors only)").digest()
KEYS = {KEY_ID: KEY}
# Handshake messages are small; a receiver lowers the header limit for them (spec 16, 19.6).
HANDSHAKE_LIMITS = avp.Limits(max_header_bytes=1 << 20, max_message_bytes=2 << 20)


class Finding(AssertionError):
    """An oracle failed: a silent inconsistency rather than an escaped exception."""


# ---------------------------------------------------------------------------- repair


def repair(buf: bytes, *, retag: bool = True) -> bytes:
    """Recompute every checksum (and, with ``retag``, the fuzz-key tag) that a walk over the
    sections can find: what an attacker who knows CRC32C but not the key can do."""
    b = bytearray(buf)
    pos = 16
    while pos + 16 <= len(b):
        typ, _flags, n = struct.unpack_from("<IIQ", b, pos)
        if pos + 20 + n > len(b):
            break
        nxt = pos + 20 + n + (-(20 + n) % 8)
        if typ == 2 and n >= 64:
            (stored,) = struct.unpack_from("<Q", b, pos + 16 + 48)
            data_at = nxt + (-nxt % 64)
            if data_at + stored > len(b):
                break
            struct.pack_into("<I", b, pos + 16 + 56, crc32c.crc32c(b[data_at:data_at + stored]))
            nxt = data_at + stored + (-stored % 8)
        if retag and typ == 3 and n >= 40 and (n - 40) % 24 == 0:
            tag = hmac.new(KEY, bytes(b[:pos]), hashlib.sha256).digest()
            b[pos + 16 + n - 32:pos + 16 + n] = tag
        struct.pack_into("<I", b, pos + 16 + n, crc32c.crc32c(b[pos:pos + 16 + n]))
        if typ == 3:
            break
        pos = nxt
    return bytes(b)


def variants(data: bytes) -> Iterator[bytes]:
    yield data
    fixed = repair(data)
    if fixed != data:
        yield fixed


def section_types(buf: bytes) -> list[int]:
    """Types of the sections a well-formed message holds (used after a successful decode)."""
    out, pos = [], 16
    while pos + 16 <= len(buf):
        typ, _f, n = struct.unpack_from("<IIQ", buf, pos)
        out.append(typ)
        nxt = pos + 20 + n + (-(20 + n) % 8)
        if typ == 2:
            (stored,) = struct.unpack_from("<Q", buf, pos + 16 + 48)
            data_at = nxt + (-nxt % 64)
            nxt = data_at + stored + (-stored % 8)
        if typ == 3:
            break
        pos = nxt
    return out


# ---------------------------------------------------------------------------- outcomes


def outcome(msg: avp.Message) -> str:
    """What two decoders must agree on: the canonical JSON plus the received tag."""
    tag = msg.auth_tag.hex() if msg.auth_tag is not None else "-"
    return avp.dumps_canonical_json(msg) + "|" + tag


def decode_outcome(buf: bytes, **kw: Any) -> tuple[str, Any]:
    try:
        return "ok", avp.decode(buf, keys=KEYS, **kw)
    except avp.AvpError as e:
        return "err", e.code


def incremental(buf: bytes, sizes: Iterable[int], **kw: Any) -> tuple[str, Any]:
    """Feed ``buf`` in pieces of the given sizes (the rest at once), then end the input."""
    dec = avp.Decoder(keys=KEYS, **kw)
    header: avp.HeaderEvent | None = None
    tensors: list[avp.Tensor] = []
    end: avp.EndEvent | None = None

    def drain() -> None:
        nonlocal header, end
        while True:
            ev = dec.next_event()
            if ev is avp.NEED_DATA or ev is avp.END_OF_STREAM:
                return
            if isinstance(ev, avp.HeaderEvent):
                header = ev
            elif isinstance(ev, avp.TensorEvent):
                tensors.append(ev.tensor)
            elif isinstance(ev, avp.EndEvent):
                end = ev
                return

    try:
        pos = 0
        for n in sizes:
            if pos >= len(buf):
                break
            dec.feed(buf[pos:pos + n])
            pos += n
            drain()
        if pos < len(buf):
            dec.feed(buf[pos:])
            drain()
        dec.end_of_input()
        drain()
        if end is None:
            raise Finding("incremental decoder still wants data after end_of_input()")
        drain()  # bytes fed after the Trailer surface here as TRAILING_BYTES
    except avp.AvpError as e:
        return "err", e.code
    assert header is not None
    return "ok", avp.Message(header.kind, header.entries, header.layers, tensors,
                             authenticated=end.authenticated, auth_tag=end.auth_tag,
                             minor=header.minor)


def chunk_sizes(buf: bytes) -> list[int]:
    """Deterministic pseudo-random chunk sizes (1..97 bytes, sometimes larger) for ``buf``."""
    rng = random.Random(crc32c.crc32c(buf))
    sizes, total = [], 0
    while total < len(buf):
        n = rng.choice((1, 2, 3, 7, 8, 15, 16, 17, 63, 64, 65, 97, 4096))
        sizes.append(n)
        total += n
    return sizes


def same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "err":
        return bool(a[1] == b[1])
    return outcome(a[1]) == outcome(b[1])


# ---------------------------------------------------------------------------- targets


def check_decoded(buf: bytes, msg: avp.Message) -> None:
    """Oracles for a buffer the decoder accepted."""
    avp.dumps_canonical_json(msg)
    for t in msg.tensors:
        raw = t.raw_bytes()
        if len(raw) != t.raw_length:
            raise Finding(f"raw_bytes() is {len(raw)} bytes, raw_length {t.raw_length}")
        t.array()
    try:
        again = avp.encode(msg)
    except avp.AvpError as e:
        # The one documented asymmetry: binds producers (ATTENTION_MASK holds 0 and 1)
        # while a decoder MAY accept other values, so the encoder refuses to re-send them.
        masks = [t for t in msg.tensors if t.role == avp.Role.ATTENTION_MASK]
        if e.code == avp.ErrorCode.INVALID_VALUE and masks:
            return
        # An authenticated message whose bytes this encoder cannot reproduce (newer minor, or
        # skippable sections it drops) needs the key to be re-signed: refusing is correct.
        stale = msg.auth_tag is not None and (msg.minor != 0 or msg.skipped_sections)
        if e.code == avp.ErrorCode.AUTH_REQUIRED and stale:
            return
        raise Finding(f"a decoded message does not re-encode: {e}") from e
    back = avp.decode(again, keys=KEYS)
    back.minor = msg.minor  # an encoder writes its own minor; the rest must survive
    if outcome(back) != outcome(msg):
        raise Finding("decode(encode(decode(x))) differs from decode(x)")
    if buf[10:12] == b"\0\0" and set(section_types(buf)) <= {1, 2, 3} and again != buf:
        raise Finding("re-encoding a decoded message does not reproduce its bytes (R-9.2)")


def target_decode(data: bytes) -> None:
    for buf in variants(data):
        kind, value = decode_outcome(buf)
        if kind == "ok":
            check_decoded(buf, value)
        # The unverified mode skips data CRCs only; it must never crash either.
        with contextlib.suppress(avp.AvpError):
            avp.decode(buf, verify=False)


def target_decoder(data: bytes) -> None:
    for buf in variants(data):
        want = decode_outcome(buf)
        runs = [[len(buf)], chunk_sizes(buf)]
        if len(buf) <= 2048:
            runs.append([1] * len(buf))
        for sizes in runs:
            got = incremental(buf, sizes)
            if got[0] == "err" and got[1] == avp.ErrorCode.LIMIT_BUFFER:
                continue  # the one code an incremental decoder may add
            if not same(want, got):
                raise Finding(f"Decoder fed in pieces {sizes[:4]}... gave {_show(got)}, "
                              f"decode gave {_show(want)}")


def _show(result: tuple[str, Any]) -> str:
    return f"error {result[1].name}" if result[0] == "err" else "a message"


def _handshake_parts() -> dict[str, Any]:
    """Local state for the handshake target, built once (not per input)."""
    from avp_conform import gen_common as g

    vocab = [b"a", b"b", b"hello", b"\xc4\xa0world", b"<0x41>", b"\xe2\x96\x81x", b""]
    parts: dict[str, Any] = {
        "hello": avp.hello_message("fuzz-local", model_id=g.MODEL_ID,
                                   tokenizer_id=g.TOKENIZER_ID, nonce=bytes(16)),
        "model_id": g.MODEL_ID,
        "payload": avp.text_message("x"),
    }
    try:
        from avp_runtime import handshake as hs
    except ImportError:  # the runtime is optional for the codec-level target
        return parts
    local = hs.LocalSide("fuzz-local", model_id=g.MODEL_ID, tokenizer_id=g.TOKENIZER_ID,
                         vocabulary=vocab, known_vocabularies={g.TOKENIZER_ID: vocab})
    parts.update(hs=hs, local=local)
    return parts


_HS: dict[str, Any] = {}


def _handshake_checks(msg: avp.Message, size: int) -> None:
    """Every handshake decision on one decoded message; only AvpError may come out of each."""
    hello = _HS["hello"]
    calls: list[Callable[[], object]] = [
        lambda: avp.resolve_mode(hello, msg),
        lambda: avp.check_accept(hello, msg),
        lambda: avp.tokenizers_compatible(hello, msg),
        lambda: avp.check_model_id(msg, _HS["model_id"]),
        lambda: avp.check_capabilities(_HS["payload"], msg, size),
    ]
    # The codec's full 14.3 check list in both roles, and the payload checks of every mode.
    calls += [partial(avp.verify_peer, hello, msg, kind)
              for kind in (avp.Kind.HELLO, avp.Kind.ACCEPT)]
    calls += [partial(avp.check_payload, msg, mode, hello, size) for mode in avp.Mode]
    if "hs" in _HS:
        hs, local = _HS["hs"], _HS["local"]
        calls.append(lambda: hs.Initiator(local).handle_accept(msg))
        calls.append(lambda: hs.PeerClaims.from_message(msg))
    for call in calls:
        with contextlib.suppress(avp.AvpError):
            call()
    if "hs" in _HS:
        reply, _res = _HS["hs"].Responder(_HS["local"]).handle_hello(msg)
        back = avp.decode(avp.encode(reply))  # the reply must be a valid message
        if back.kind not in (avp.Kind.ACCEPT, avp.Kind.ERROR):
            raise Finding(f"responder replied with {back.kind.name}")


def target_handshake(data: bytes) -> None:
    if not _HS:
        _HS.update(_handshake_parts())
    for buf in variants(data):
        try:
            msg = avp.decode(buf, limits=HANDSHAKE_LIMITS, keys=KEYS)
        except avp.AvpError:
            continue
        _handshake_checks(msg, len(buf))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "decode": target_decode,
    "decoder": target_decoder,
    "handshake": target_handshake,
}


# ---------------------------------------------------------------------------- no-atheris loop


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One libFuzzer-like mutation: flip, set, insert, erase, copy, splice or shorten."""
    b = bytearray(data)
    op = rng.randrange(8)
    if not b:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 32)))
    i = rng.randrange(len(b))
    if op == 0:
        b[i] ^= 1 << rng.randrange(8)
    elif op == 1:
        b[i] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    elif op == 2:
        struct_at = i - i % 8
        if struct_at + 8 <= len(b):  # an interesting u64 / u32 where lengths live
            v = rng.choice((0, 1, 63, 64, 255, 1 << 31, 1 << 32, (1 << 64) - 1, len(b)))
            b[struct_at:struct_at + 8] = (v % (1 << 64)).to_bytes(8, "little")
    elif op == 3:
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    elif op == 4:
        del b[i:i + rng.randrange(1, 65)]
    elif op == 5:
        j = rng.randrange(len(b))
        n = rng.randrange(1, 65)
        b[i:i + n] = b[j:j + n]
    elif op == 6:
        other = rng.choice(pool)
        j = rng.randrange(len(other) + 1)
        b = b[:i] + bytearray(other[j:])
    else:
        b = b[:i]
    return bytes(b)


def run_inprocess(target: Callable[[bytes], None], seeds: list[bytes], runs: int,
                  seed: int = 0) -> int:
    """Run every seed, then ``runs`` mutants (1-3 stacked mutations each); returns executions."""
    rng = random.Random(seed)
    n = 0
    for s in seeds:
        target(s)
        n += 1
    for _ in range(runs):
        data = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            data = mutate(rng, data, seeds)
        target(data)
        n += 1
    return n


if __name__ == "__main__":
    sys.exit("run the targets through fuzz/run.py (it instruments the code under test first)")
