"""Streams of messages (issue 19.5): ``Decoder(stream=True)`` reads messages back to back on one
stream, fed in any chunking, and ends with END_OF_STREAM; a single-message Decoder keeps
TRAILING_BYTES (step Z) and, after end_of_input(), reports END_OF_STREAM instead of NEED_DATA.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avp_codec as avp

E = avp.ErrorCode
KEYS = {b"k1": b"secret"}


def _pool() -> list[bytes]:
    k = np.arange(2 * 3 * 4, dtype=np.float16).reshape(1, 2, 3, 4)
    kv = avp.kv_cache_from_arrays(bytes(32), [k, k + 1], [k - 1, k * 2], codec=avp.Codec.ZSTD)
    hidden = avp.hidden_state_message(bytes(range(32)), np.ones((1, 5, 8), np.float32),
                                      token_ids=np.arange(5, dtype=np.int32).reshape(1, 5))
    return [avp.encode(avp.text_message("hello")), avp.encode(kv), avp.encode(hidden),
            avp.encode(avp.text_message("signed"), auth_key=(b"k1", b"secret")),
            avp.encode(avp.error_message(avp.ErrorCode.MODEL_MISMATCH, "no"))]


POOL = _pool()


def _events(dec: avp.Decoder, data: bytes, cuts: list[int]) -> list[Any]:
    out: list[Any] = []
    prev = 0
    for at in [*cuts, len(data)]:
        dec.feed(data[prev:at])
        prev = at
        while (ev := dec.next_event()) is not avp.NEED_DATA:
            assert ev is not avp.END_OF_STREAM
            out.append(ev)
    dec.end_of_input()
    assert dec.next_event() is avp.END_OF_STREAM
    assert dec.next_event() is avp.END_OF_STREAM  # and it stays there
    return out


def _messages(events: list[Any]) -> list[avp.Message]:
    msgs, cur, tensors = [], None, []
    for ev in events:
        if isinstance(ev, avp.HeaderEvent):
            cur, tensors = ev, []
        elif isinstance(ev, avp.TensorEvent):
            tensors.append(ev.tensor)
        else:
            assert cur is not None and isinstance(ev, avp.EndEvent)
            msgs.append(avp.Message(cur.kind, cur.entries, cur.layers, tensors,
                                    authenticated=ev.authenticated, auth_tag=ev.auth_tag))
    return msgs


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(range(len(POOL))), min_size=0, max_size=12), st.data())
def test_many_messages_back_to_back_in_any_chunking(picks: list[int],
                                                    data: st.DataObject) -> None:
    stream = b"".join(POOL[i] for i in picks)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)),
                                         max_size=60)))) if stream else []
    dec = avp.Decoder(keys=KEYS, stream=True)
    got = _messages(_events(dec, stream, cuts))
    want = [avp.decode(POOL[i], keys=KEYS) for i in picks]
    assert got == want
    assert [m.authenticated for m in got] == [w.authenticated for w in want]
    assert dec.messages == len(picks)
    assert dec.message_offset == len(stream)


def test_every_event_of_a_message_comes_before_the_next_message() -> None:
    dec = avp.Decoder(stream=True)
    dec.feed(POOL[1] + POOL[0])
    kinds, offsets = [], []
    for ev in iter(dec.next_event, avp.NEED_DATA):
        kinds.append(type(ev).__name__)
        offsets.append(dec.message_offset)  # the first byte of the message the event is of
    assert kinds == ["HeaderEvent"] + ["TensorEvent"] * 4 + ["EndEvent", "HeaderEvent",
                                                             "EndEvent"]
    assert offsets == [0] * 6 + [len(POOL[1])] * 2
    assert dec.message_offset == len(POOL[1]) + len(POOL[0])  # where a third one would start


def test_errors_count_offsets_from_the_message_they_are_in() -> None:
    """A fault in the third message reads exactly as decode of that message alone reports it."""
    bad = bytearray(POOL[1])
    bad[-20] ^= 1  # inside the INDEX section (its CRC)
    with pytest.raises(avp.AvpError) as alone:
        avp.decode(bytes(bad))
    dec = avp.Decoder(stream=True)
    dec.feed(POOL[0] + POOL[2] + bytes(bad) + POOL[0])
    with pytest.raises(avp.AvpError) as ei:
        while dec.next_event() is not avp.NEED_DATA:
            pass
    e, a = ei.value, alone.value
    assert (e.code, e.offset, e.path) == (a.code, a.offset, a.path)
    assert dec.messages == 2 and dec.message_offset == len(POOL[0]) + len(POOL[2])
    with pytest.raises(avp.AvpError):  # the error sticks
        dec.next_event()


@pytest.mark.parametrize("tail,code,offset", [
    (b"\x89AVP", E.TRUNCATED, 0),  # a message cut short: TRUNCATED, at its own offset 0
    (b"junk", E.BAD_MAGIC, 0),  # bytes that are not a message
])
def test_a_stream_that_ends_inside_a_message(tail: bytes, code: E, offset: int) -> None:
    dec = avp.Decoder(stream=True)
    dec.feed(POOL[0] + tail)
    dec.end_of_input()
    with pytest.raises(avp.AvpError) as ei:
        while dec.next_event() is not avp.END_OF_STREAM:
            pass
    assert (ei.value.code, ei.value.offset) == (code, offset)
    assert dec.messages == 1


def test_an_empty_stream_is_a_stream_of_no_messages() -> None:
    dec = avp.Decoder(stream=True)
    assert dec.next_event() is avp.NEED_DATA
    dec.end_of_input()
    assert dec.next_event() is avp.END_OF_STREAM and dec.messages == 0
    single = avp.Decoder()
    single.end_of_input()
    with pytest.raises(avp.AvpError) as ei:  # one message was due: none came
        single.next_event()
    assert ei.value.code == E.TRUNCATED


def test_single_message_mode_keeps_trailing_bytes() -> None:
    """Without stream=True, two messages back to back are TRAILING_BYTES, as in decode."""
    two = POOL[0] + POOL[0]
    with pytest.raises(avp.AvpError) as whole:
        avp.decode(two)
    dec = avp.Decoder()
    dec.feed(POOL[0])
    assert [type(ev).__name__ for ev in iter(dec.next_event, avp.NEED_DATA)] == [
        "HeaderEvent", "EndEvent"]
    dec.feed(POOL[0])
    with pytest.raises(avp.AvpError) as ei:
        dec.next_event()
    assert (ei.value.code, ei.value.offset, ei.value.path) == (
        whole.value.code, whole.value.offset, whole.value.path) == (
        E.TRAILING_BYTES, len(POOL[0]), "trailing")


def test_end_state_after_end_of_input() -> None:
    dec = avp.Decoder()
    dec.feed(POOL[0])
    list(iter(dec.next_event, avp.NEED_DATA))
    assert dec.next_event() is avp.NEED_DATA  # trailing bytes or the end may still come
    dec.end_of_input()
    assert dec.next_event() is avp.END_OF_STREAM
    with pytest.raises(ValueError, match="end_of_input"):
        dec.feed(b"x")


def test_max_message_bytes_bounds_each_message_of_a_stream() -> None:
    """The limit is per message: many small messages pass, one big message does not."""
    small, big = POOL[0], POOL[1]
    lim = avp.Limits(max_message_bytes=len(small) + 8)
    dec = avp.Decoder(limits=lim, stream=True)
    dec.feed(small * 50)
    assert sum(isinstance(ev, avp.EndEvent) for ev in iter(dec.next_event, avp.NEED_DATA)) == 50
    dec.feed(big)
    with pytest.raises(avp.AvpError) as ei:
        list(iter(dec.next_event, avp.NEED_DATA))
    assert (ei.value.code, ei.value.offset) == (E.LIMIT_MESSAGE, 0)
    with pytest.raises(avp.AvpError) as single:  # a single-message decoder: as decode
        avp.Decoder(limits=lim).feed(small * 2)
    assert (single.value.code, single.value.offset) == (E.LIMIT_MESSAGE, 0)


def test_wrong_argument_types() -> None:
    with pytest.raises(TypeError, match="stream"):
        avp.Decoder(stream=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="feed"):
        avp.Decoder().feed("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limits"):
        avp.Decoder(limits={"max_message_bytes": 1})  # type: ignore[arg-type]
