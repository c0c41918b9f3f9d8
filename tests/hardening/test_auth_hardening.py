"""Authentication under attack (spec 15; issue 7, part 4).

The attacker modelled here knows the format and CRC32C but not the key: after every tampering
it recomputes all section and data CRCs (fuzz/avp_fuzz.py ``repair(retag=False)``), so only the
HMAC tag stands between it and the receiver. Tags are checked against Python's hmac module,
computed independently of the codec from the message bytes and the Trailer.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import Counter

import pytest
from avp_conform import gen_common as g

import avp_codec as avp

from . import _fuzzmods

fuzz = _fuzzmods.load("avp_fuzz")
seeds = _fuzzmods.load("avp_fuzz_seeds")
KEY_ID, KEY = fuzz.KEY_ID, fuzz.KEY
OTHER_ID, OTHER = b"other-key", bytes(range(100, 132))
KEYS = {KEY_ID: KEY, OTHER_ID: OTHER}
E = avp.ErrorCode


def _independent_tag(buf: bytes, key: bytes) -> tuple[bytes, bytes]:
    """(tag HMAC-SHA256 over every byte before the INDEX, tag stored in the INDEX body)."""
    (index_at,) = struct.unpack_from("<Q", buf, len(buf) - 16)
    (n,) = struct.unpack_from("<Q", buf, index_at + 8)
    stored = buf[index_at + 16 + n - 32:index_at + 16 + n]
    return hmac.new(key, buf[:index_at], hashlib.sha256).digest(), stored


def _refusal(buf: bytes, **kw: object) -> E | None:
    try:
        avp.decode(buf, **kw)  # type: ignore[arg-type]
    except avp.AvpError as e:
        return e.code
    return None


def test_spec_example_a5_matches_python_hmac() -> None:
    msg = avp.text_message("Paris", role="assistant")
    buf = avp.encode(msg, auth_key=(b"example-key-1", bytes(range(32))))
    assert hashlib.sha256(buf).hexdigest() == (
        "5ddd04585ebe3a551737a5a2c0b4e61328c8cd0c300ea463d9beb2060c4b7301")
    want, stored = _independent_tag(buf, bytes(range(32)))
    assert stored == want == bytes.fromhex(
        "704f865b2f2a359375fd7407d1405f95536355957 96d64a30ff1a274878d60da".replace(" ", ""))


@pytest.mark.parametrize("key", [KEY, b"", b"k" * 64, bytes(range(200))],
                         ids=["32B", "empty", "64B", "200B-hashed-first"])
@pytest.mark.parametrize("name", ["kv_multi", "kv_zstd", "text"])
def test_encoder_tag_is_rfc2104_hmac_sha256(name: str, key: bytes) -> None:
    msg = {"kv_multi": seeds.kv_multi, "kv_zstd": seeds.kv_zstd, "text": seeds.text}[name]()
    buf = avp.encode(msg, auth_key=(KEY_ID, key))
    want, stored = _independent_tag(buf, key)
    assert stored == want
    assert avp.decode(buf, keys={KEY_ID: key}, require_auth=True).authenticated


def test_conformance_auth_vectors_carry_independent_tags() -> None:
    vectors = sorted((seeds.VECTORS / "valid").glob("15__authenticated*.avp"))
    assert vectors
    for p in vectors:
        buf = p.read_bytes()
        want, stored = _independent_tag(buf, g.TEST_KEY)
        if b"conformance-key-1" in buf:
            assert stored == want, p.name


def test_require_auth_refuses_unauthenticated_unknown_and_wrong_key() -> None:
    plain = avp.encode(seeds.kv_multi())
    assert _refusal(plain, keys=KEYS, require_auth=True) == E.AUTH_REQUIRED
    unknown = avp.encode(seeds.kv_multi(), auth_key=(b"who-knows", KEY))
    assert _refusal(unknown, keys=KEYS, require_auth=True) == E.UNKNOWN_KEY
    # Signed with a key other than the one its id names (an attacker's key under our id).
    forged = avp.encode(seeds.kv_multi(), auth_key=(KEY_ID, b"attacker" * 4))
    assert _refusal(forged, keys=KEYS, require_auth=True) == E.AUTH_FAILED
    # holding the named key means verifying it, required or not.
    assert _refusal(forged, keys=KEYS) == E.AUTH_FAILED
    good = avp.encode(seeds.kv_multi(), auth_key=(KEY_ID, KEY))
    assert avp.decode(good, keys=KEYS, require_auth=True).authenticated
    # without the key the message decodes but is never reported authenticated.
    assert not avp.decode(good).authenticated
    assert not avp.decode(good, keys={OTHER_ID: OTHER}).authenticated


def test_stripping_or_swapping_the_key_id_does_not_help() -> None:
    good = avp.decode(avp.encode(seeds.kv_multi(), auth_key=(KEY_ID, KEY)))
    stripped = avp.Message(good.kind, [e for e in good.entries
                                       if e.key != avp.MetaKey.AUTH_KEY_ID],
                           good.layers, good.tensors)
    assert _refusal(avp.encode(stripped), keys=KEYS, require_auth=True) == E.AUTH_REQUIRED
    # Re-point the id at another key the receiver holds, CRCs recomputed, tag kept.
    buf = avp.encode(seeds.kv_multi(), auth_key=(KEY_ID.replace(b"1", b"2"), KEY))
    swapped = fuzz.repair(buf.replace(KEY_ID.replace(b"1", b"2"), KEY_ID), retag=False)
    keys = {KEY_ID: OTHER, KEY_ID.replace(b"1", b"2"): KEY}
    assert _refusal(swapped, keys=keys, require_auth=True) == E.AUTH_FAILED


def _regions(buf: bytes) -> list[str]:
    """A region name for every byte of an authenticated message."""
    out = ["preamble"] * 16
    pos = 16
    while True:
        typ, _f, n = struct.unpack_from("<IIQ", buf, pos)
        name = {1: "header", 2: "descriptor", 3: "index"}[typ]
        out += [f"{name} framing"] * 16 + [name] * n + [f"{name} framing"] * 4
        end = pos + 20 + n
        out += ["padding"] * (-end % 8)
        end += -end % 8
        if typ == 2:
            (stored,) = struct.unpack_from("<Q", buf, pos + 16 + 48)
            data_at = end + (-end % 64)
            out += ["padding"] * (data_at - end) + ["data"] * stored + ["padding"] * (-stored % 8)
            end = data_at + stored + (-stored % 8)
        pos = end
        if typ == 3:
            break
    out += ["trailer"] * 16
    idx = buf.index(struct.pack("<IIQ", 3, 0, len(buf) - pos - 16 + 0)[:4], pos - 200)
    (n,) = struct.unpack_from("<Q", buf, idx + 8)
    for i in range(idx + 16 + n - 32, idx + 16 + n):
        out[i] = "tag"
    kid = buf.index(KEY_ID)
    for i in range(kid, kid + len(KEY_ID)):
        out[i] = "key id"
    assert len(out) == len(buf)
    return out


def test_every_tampered_byte_is_refused() -> None:
    """Flip one bit of every byte of an authenticated KV message (5 tensors), recompute every
    CRC, decode with require_auth: nothing may be accepted; content changes fail the tag."""
    buf = avp.encode(seeds.kv_multi(), auth_key=(KEY_ID, KEY))
    regions = _regions(buf)
    codes: dict[str, Counter[str]] = {}
    accepted = []
    for i in range(len(buf)):
        b = bytearray(buf)
        b[i] ^= 0x10
        tampered = fuzz.repair(bytes(b), retag=False)
        if tampered == buf:
            continue  # a flipped CRC byte that the repair recomputed: nothing was tampered
        code = _refusal(tampered, keys=KEYS, require_auth=True)
        if code is None:
            accepted.append((i, regions[i]))
            continue
        codes.setdefault(regions[i], Counter())[code.name] += 1
    assert not accepted, accepted[:10]
    # Bytes covered by the tag whose change breaks no structural rule fail the tag itself.
    for region in ("data", "tag"):
        assert set(codes[region]) == {"AUTH_FAILED"}, (region, codes[region])
    assert set(codes["key id"]) == {"UNKNOWN_KEY"}
    for region in ("header", "preamble"):  # descriptor bytes all fail structural checks
        assert codes[region]["AUTH_FAILED"] > 0, (region, codes[region])
    assert set(codes["padding"]) == {"NONZERO_PADDING"}
    assert set(codes["trailer"]) <= {"BAD_TRAILER"}


def test_incremental_decoder_refuses_before_any_tensor_and_never_ends_unauthenticated() -> None:
    plain = avp.encode(seeds.kv_multi())
    dec = avp.Decoder(keys=KEYS, require_auth=True)
    dec.feed(plain)
    with pytest.raises(avp.AvpError) as ei:
        dec.next_event()  # refused at the end of the HEADER (H.8): no event at all
    assert ei.value.code == E.AUTH_REQUIRED

    buf = bytearray(avp.encode(seeds.kv_multi(), auth_key=(KEY_ID, KEY)))
    data_at = avp.decode(bytes(buf)).tensors[-1].stored
    last = bytes(buf).rindex(bytes(data_at))
    buf[last] ^= 1
    tampered = fuzz.repair(bytes(buf), retag=False)
    dec = avp.Decoder(keys=KEYS, require_auth=True)
    dec.feed(tampered)
    events = []
    with pytest.raises(avp.AvpError) as ei:
        while True:
            ev = dec.next_event()
            assert not isinstance(ev, avp.EndEvent), "tampered stream reached its end event"
            events.append(ev)
    assert ei.value.code == E.AUTH_FAILED
    # Tensor events came (provisional, R-11.2), but the message never completed.
    assert sum(isinstance(e, avp.TensorEvent) for e in events) == 5


def test_tags_are_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    buf = avp.encode(seeds.text(), auth_key=(KEY_ID, KEY))
    assert avp.decode(buf, keys=KEYS).authenticated
    _, stored = _independent_tag(buf, KEY)
    assert any(stored in pair for pair in calls)
