"""Spec 9.2 fixes the order of a decoder's checks, so that an input with several faults gets one
predictable code. Conformance vectors have one fault each and cannot see the order; these cases
have two faults each, and assert that the reference codec reports the one 9.2 puts first (plus a
few single-fault cases whose code the spec settles in prose: R-3.1, R-4.4, R-4.5, R-8.4).

Inputs are valid messages from the codec, patched here with a few lines of byte surgery; the
section CRC is recomputed wherever the case does not test the CRC itself."""

from __future__ import annotations

import struct

import crc32c
import numpy as np
import pytest

import avp_codec as avp
from avp_codec import ErrorCode as E

MODEL_ID = bytes(range(32))


def _kv() -> bytes:
    k = np.arange(8, dtype=np.float16).reshape(1, 1, 2, 4)
    return avp.encode(avp.kv_cache_from_arrays(MODEL_ID, [k], [k + 1]))


def _text() -> bytes:
    return avp.encode(avp.text_message("Paris", role="assistant"))


def sections(buf: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, body length) of every section, walking the layout of spec section 2."""
    out, off = [], 16
    while True:
        stype, _, n = struct.unpack_from("<IIQ", buf, off)
        out.append((off, stype, n))
        end = off + 20 + n + (-(20 + n) % 8)
        if stype == avp.SectionType.INDEX:
            return out
        if stype == avp.SectionType.TENSOR:
            stored = struct.unpack_from("<Q", buf, off + 16 + 48)[0]
            data = end + (-end % 64)
            end = data + stored + (-stored % 8)
        off = end


def recrc(buf: bytearray, off: int) -> None:
    n = struct.unpack_from("<Q", buf, off + 8)[0]
    struct.pack_into("<I", buf, off + 16 + n, crc32c.crc32c(bytes(buf[off:off + 16 + n])))


def section_bytes(stype: int, body: bytes, flags: int = 0) -> bytes:
    head = struct.pack("<IIQ", stype, flags, len(body))
    raw = head + body + struct.pack("<I", crc32c.crc32c(head + body))
    return raw + bytes(-len(raw) % 8)


def insert_section(buf: bytes, at: int, extra: bytes) -> bytes:
    """Insert a whole section at offset ``at`` and shift every later offset (INDEX, Trailer)."""
    out = bytearray(buf[:at] + extra + buf[at:])
    shift = len(extra)
    idx = struct.unpack_from("<Q", out, len(out) - 16)[0]
    if idx >= at:
        idx += shift
        struct.pack_into("<Q", out, len(out) - 16, idx)
    count = struct.unpack_from("<Q", out, idx + 16)[0]
    for i in range(count):
        for k in range(2):
            pos = idx + 24 + 24 * i + 8 * k
            v = struct.unpack_from("<Q", out, pos)[0]
            if v >= at:
                struct.pack_into("<Q", out, pos, v + shift)
    recrc(out, idx)
    return bytes(out)


def code_of(buf: bytes, **kw: object) -> E:
    with pytest.raises(avp.AvpError) as exc:
        avp.decode(buf, **kw)  # type: ignore[arg-type]
    return exc.value.code


# -- preamble (steps M, P) -------------------------------------------------------------------

def test_short_input_bad_magic_or_truncated() -> None:
    assert code_of(b"\x89AV") == E.TRUNCATED  # a proper prefix of the magic
    assert code_of(b"\x89AX") == E.BAD_MAGIC


def test_magic_before_version() -> None:
    buf = bytearray(_text())
    buf[3] = ord("X")
    struct.pack_into("<H", buf, 8, 9)
    assert code_of(bytes(buf)) == E.BAD_MAGIC


def test_message_limit_before_everything() -> None:
    buf = bytearray(_text())
    buf[0] = 0
    assert code_of(bytes(buf), limits=avp.Limits(max_message_bytes=len(buf) - 1)) == \
        E.LIMIT_MESSAGE


# -- section framing (step S) ----------------------------------------------------------------

def test_body_limits_before_crc() -> None:
    buf = bytearray(_text())
    off = sections(bytes(buf))[0][0]
    buf[off + 16 + 20] ^= 1  # corrupt the TEXT value: the CRC no longer matches
    got = code_of(bytes(buf), limits=avp.Limits(max_entries=1))
    assert got == E.LIMIT_ENTRIES


def test_crc_before_reserved_flags() -> None:
    buf = bytearray(_text())
    off = sections(bytes(buf))[0][0]
    struct.pack_into("<I", buf, off + 4, 2)  # reserved flag bit 1, CRC left stale
    assert code_of(bytes(buf)) == E.SECTION_CHECKSUM


def test_reserved_flags_before_padding() -> None:
    buf = bytearray(_text())
    off, _, n = sections(bytes(buf))[0]
    struct.pack_into("<I", buf, off + 4, 2)
    recrc(buf, off)
    buf[off + 20 + n] = 1  # the section's first padding byte (20 + n is 4 mod 8 here)
    assert (20 + n) % 8 != 0
    assert code_of(bytes(buf)) == E.RESERVED_NONZERO


def test_skippable_flag_on_a_known_section_is_reserved() -> None:
    buf = bytearray(_text())
    off = sections(bytes(buf))[0][0]
    struct.pack_into("<I", buf, off + 4, 1)
    recrc(buf, off)
    assert code_of(bytes(buf)) == E.RESERVED_NONZERO


@pytest.mark.parametrize("where", ["before HEADER", "before INDEX"])
def test_unknown_skippable_section_is_skipped(where: str) -> None:
    buf = _kv()
    secs = sections(buf)
    at = 16 if where == "before HEADER" else secs[-1][0]
    # 64 bytes in all, so that the tensor data after it stays 64-aligned without re-padding.
    extra = section_bytes(0x8001, b"private experiment".ljust(44, b"."), flags=1)
    assert len(extra) == 64
    out = insert_section(buf, at, extra)
    msg = avp.decode(out)
    assert msg == avp.decode(buf)  # skipping changes nothing that is expected next


def test_unknown_section_flags() -> None:
    buf = _kv()
    at = sections(buf)[-1][0]
    assert code_of(insert_section(buf, at, section_bytes(0x8001, b"x" * 8))) == \
        E.UNKNOWN_CRITICAL
    assert code_of(insert_section(buf, at, section_bytes(0x8001, b"x" * 8, flags=1 | 4))) == \
        E.RESERVED_NONZERO


def test_overflow_before_type_bound_before_truncation() -> None:
    buf = bytearray(_text())
    off = sections(bytes(buf))[0][0]
    struct.pack_into("<Q", buf, off + 8, (1 << 64) - 16)  # HEADER length: end overflows u64
    assert code_of(bytes(buf)) == E.LENGTH_OVERFLOW  # S.2 before S.3 (LIMIT_HEADER)
    struct.pack_into("<Q", buf, off + 8, 1 << 40)  # fits u64, above max_header_bytes, past L
    assert code_of(bytes(buf)) == E.LIMIT_HEADER  # S.3 before S.4 (TRUNCATED)


# -- header (step H) -------------------------------------------------------------------------

def test_value_encoding_before_key_registry() -> None:
    # The encoder refuses an unknown critical key, so write it non-critical and flip the
    # CRITICAL flag afterwards, together with a byte that makes the value invalid UTF-8.
    odd = avp.Entry(0x7001, avp.ValueType.UTF8, "ok", False)
    buf = bytearray(avp.encode(avp.text_message("Paris", extra=[odd])))
    at = bytes(buf).index(b"ok")
    assert struct.unpack_from("<H", buf, at - 8)[0] == 0x7001
    buf[at - 6] = 1  # flags: CRITICAL
    buf[at] = 0xFF  # not UTF-8: INVALID_VALUE comes before UNKNOWN_CRITICAL (H.4)
    recrc(buf, sections(bytes(buf))[0][0])
    assert code_of(bytes(buf)) == E.INVALID_VALUE


def test_entry_not_allowed_before_missing_entry() -> None:
    # A TEXT message whose TEXT entry is replaced by CONTEXT_LENGTH: both H.7 faults at once.
    buf = bytearray(_text())
    off = sections(bytes(buf))[0][0]
    e0 = off + 16 + 16  # first entry of the header body
    assert struct.unpack_from("<H", buf, e0)[0] == avp.MetaKey.TEXT
    # Rewrite entry 0 as CONTEXT_LENGTH (u64, critical) = 5 bytes "Paris" -> 8 bytes needs the
    # same footprint: the value area is 8 bytes (5 + 3 padding), so it fits exactly.
    struct.pack_into("<HBBI", buf, e0, avp.MetaKey.CONTEXT_LENGTH, 1, avp.ValueType.U64, 8)
    struct.pack_into("<Q", buf, e0 + 8, 5)
    recrc(buf, off)
    assert code_of(bytes(buf)) == E.ENTRY_NOT_ALLOWED


# -- tensors (step T) and the end (steps I, R, F) ----------------------------------------------

def _tensor_field(buf: bytes, i: int) -> int:
    """Offset of tensor i's descriptor body."""
    secs = [s for s in sections(buf) if s[1] == avp.SectionType.TENSOR]
    return secs[i][0] + 16


def test_dtype_before_role() -> None:
    buf = bytearray(_kv())
    d = _tensor_field(bytes(buf), 0)
    buf[d + 10] = 200  # dtype
    struct.pack_into("<H", buf, d + 8, 999)  # role
    recrc(buf, d - 16)
    assert code_of(bytes(buf)) == E.UNKNOWN_DTYPE


def test_layer_reference_before_sizes() -> None:
    buf = bytearray(_kv())
    d = _tensor_field(bytes(buf), 0)
    struct.pack_into("<I", buf, d + 4, 5)  # layer ordinal 5 of a 1-layer table
    struct.pack_into("<Q", buf, d + 40, 7)  # and a wrong raw_length
    recrc(buf, d - 16)
    assert code_of(bytes(buf)) == E.BAD_REFERENCE  # T.7 before T.8


def test_data_crc_before_data_padding() -> None:
    k = np.arange(6, dtype=np.float16).reshape(1, 1, 1, 6)  # 12 data bytes: 4 bytes of padding
    buf = bytearray(avp.encode(avp.kv_cache_from_arrays(MODEL_ID, [k], [k])))
    d = _tensor_field(bytes(buf), 0)
    n = struct.unpack_from("<Q", buf, d - 8)[0]
    end = d + n + 4
    end += -end % 8
    data = end + (-end % 64)
    buf[data] ^= 0xFF  # data CRC fails
    buf[data + 12] = 1  # and the padding after the data is nonzero
    assert code_of(bytes(buf)) == E.DATA_CHECKSUM
    assert code_of(bytes(buf), verify=False) == E.NONZERO_PADDING


def test_misaligned_index_entry_is_misaligned() -> None:
    buf = bytearray(_kv())
    idx = sections(bytes(buf))[-1][0]
    pos = idx + 16 + 8 + 8  # index[0].data_offset
    struct.pack_into("<Q", buf, pos, struct.unpack_from("<Q", buf, pos)[0] + 8)
    recrc(buf, idx)
    assert code_of(bytes(buf)) == E.MISALIGNED  # not INDEX_MISMATCH


def _untiled() -> bytes:
    """A KV_CACHE whose layer claims 3 tokens while K and V hold 2 (a step F.1 fault)."""
    buf = bytearray(_kv())
    off = sections(bytes(buf))[0][0]
    body = off + 16
    n = struct.unpack_from("<Q", buf, off + 8)[0]
    layer0 = body + n - 32
    struct.pack_into("<Q", buf, layer0 + 24, 3)  # token_count
    # CONTEXT_LENGTH must move with it, so that tiling is the only fault.
    ctx = bytes(buf).index(struct.pack("<HBBI", avp.MetaKey.CONTEXT_LENGTH, 1, 1, 8))
    struct.pack_into("<Q", buf, ctx + 8, 3)
    recrc(buf, off)
    return bytes(buf)


def test_tiling_is_checked_after_the_trailer_checks() -> None:
    assert code_of(_untiled()) == E.TOKEN_RANGE
    buf = bytearray(_untiled())
    buf[-1] ^= 1  # end magic: BAD_TRAILER (R.2) comes before the whole-message checks (F)
    assert code_of(bytes(buf)) == E.BAD_TRAILER


def test_whole_message_checks_before_trailing_bytes() -> None:
    """Step F before step Z, so that complete and incremental decoders agree (R-9.5)."""
    assert code_of(_untiled() + b"\0") == E.TOKEN_RANGE


def test_trailing_bytes_after_a_valid_message() -> None:
    assert code_of(_kv() + b"\0") == E.TRAILING_BYTES


@pytest.mark.parametrize("feed", [1, 7, 64])
def test_incremental_decoder_agrees(feed: int) -> None:
    """R-9.5: an incremental decoder reports the same code as a complete-buffer decoder, however
    the input is split (a byte fed after the end event is TRAILING_BYTES)."""
    cases: list[tuple[bytes, E]] = [(_untiled(), E.TOKEN_RANGE), (_kv() + b"\0", E.TRAILING_BYTES),
                                     (_untiled() + b"\0", E.TOKEN_RANGE)]
    for buf, want in cases:
        dec = avp.Decoder()
        with pytest.raises(avp.AvpError) as exc:
            for i in range(0, len(buf), feed):
                dec.feed(buf[i:i + feed])
                while dec.next_event() is not avp.NEED_DATA:
                    pass
            dec.end_of_input()
            while dec.next_event() is not avp.NEED_DATA:
                pass
        assert exc.value.code == want
