"""Codec bugs found by the hardening work (issue 7), each kept as a regression test.

1. A deeply nested QUANT_POLICY made json.loads raise RecursionError instead of an AvpError.
2. ``avp.Decoder`` kept every byte before the HEADER (for the HMAC) without a bound.
3. Re-encoding a decoded newer-minor authenticated message reused a tag over changed bytes.
All three are fixed; while a bug is open its test carries ``xfail(strict=True)``, so the suite
stays green and turns red (XPASS) the moment a fix lands.
"""

from __future__ import annotations

import tracemalloc

import pytest
from avp_conform import gen_common as g
from avp_conform.wire import WMessage, build, section

import avp_codec as avp

from . import _fuzzmods, _hostile


def test_deeply_nested_quant_policy_is_an_avp_error() -> None:
    """QUANT_POLICY is checked with json.loads, which raises RecursionError (not ValueError)
    on deeply nested JSON: a 100 KB header crashes the decoder with a non-AvpError."""
    m = _hostile._kv([_hostile._key(data=b"\0" * 16)])
    m.entries.append(g.ent("QUANT_POLICY", "[" * 100_000))
    m.entries.sort(key=lambda e: e.key)
    data = build(m).data
    with pytest.raises(avp.AvpError) as ei:
        avp.decode(data)
    assert ei.value.code == avp.ErrorCode.INVALID_VALUE


def test_encoder_refuses_deeply_nested_quant_policy_with_avp_error() -> None:
    layers = [avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, 1)]
    import numpy as np
    k = avp.Tensor.from_array(np.zeros((1, 1, 1, 2), np.float16), avp.Role.KEY, ordinal=0,
                              layout=avp.Layout.BHTD)
    msg = avp.kv_cache_message(bytes(32), 1, layers, [k], quant_policy="[" * 100_000)
    with pytest.raises(avp.AvpError) as ei:
        avp.encode(msg)
    assert ei.value.code == avp.ErrorCode.INVALID_VALUE


def test_decoder_does_not_hoard_skippable_sections_before_the_header() -> None:
    """Spec 11.2: an incremental decoder holds at most max_buffer_bytes of undelivered input.
    Core keeps a copy of every byte before the HEADER (for the HMAC, whose key it learns only
    from the HEADER), so a peer that streams skippable sections first grows it without end."""
    limit = 1 << 20
    dec = avp.Decoder(limits=avp.Limits(max_buffer_bytes=limit))
    dec.feed(_hostile.PREAMBLE)
    chunk = section(0x8001, b"\0" * (256 << 10), flags=1)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(32):  # 8 MiB of skippable sections, each well under the limit
            dec.feed(chunk)
            try:
                assert dec.next_event() is avp.NEED_DATA
            except avp.AvpError as e:  # refusing is a correct fix too
                assert e.code == avp.ErrorCode.LIMIT_BUFFER
                return
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held <= 2 * limit, f"decoder holds {held >> 20} MiB after 8 MiB of skipped sections"


def test_reencoding_newer_minor_authenticated_message_is_valid_or_refused() -> None:
    """R-9.4: an encoder never writes a message a conforming decoder rejects. A message of
    minor 1 authenticated by its sender decodes fine; re-encoding it writes minor 0 but keeps
    the received tag, which covered minor 1, so every holder of the key rejects the result."""
    fuzz = _fuzzmods.load("avp_fuzz")
    data = bytearray(build(WMessage(3, [g.ent("TEXT", "hi"), g.ent("AUTH_KEY_ID", fuzz.KEY_ID)],
                                    auth_key=fuzz.KEY)).data)
    data[10] = 1  # minor 1; repair() recomputes the tag with the key, as the sender would
    newer = fuzz.repair(bytes(data))
    msg = avp.decode(newer, keys=fuzz.KEYS)
    assert msg.authenticated and msg.minor == 1
    try:
        again = avp.encode(msg)
    except avp.AvpError:
        return  # refusing to re-encode without the key is a correct fix
    assert avp.decode(again, keys=fuzz.KEYS).authenticated
