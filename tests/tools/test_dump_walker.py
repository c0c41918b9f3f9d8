"""The lenient walker: valid messages walk clean with every byte attributed; each injected fault
is reported with the code the reference decoder gives; broken input never crashes it.

The two property tests run a few hundred examples by default; for a deeper run set
AVP_FUZZ_EXAMPLES (e.g. 5000)."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from avp_tools import SpanKind, walk
from hypothesis import given, settings
from hypothesis import strategies as st

import avp_codec as avp


def decode_code(data: bytes) -> int | None:
    try:
        avp.decode(data)
    except avp.AvpError as exc:
        return int(exc.code)
    return None


def decode_error(data: bytes) -> tuple[int, int | None, str] | None:
    """What avp_codec.decode reports: (code, offset, path), None when it accepts."""
    try:
        avp.decode(data)
    except avp.AvpError as exc:
        return int(exc.code), exc.offset, exc.path
    return None


def first_error(data: bytes) -> tuple[int, int | None, str] | None:
    w = walk(data, verify_data=True)
    return (w.issues[0].code, w.issues[0].offset, w.issues[0].path) if w.issues else None


def first_code(data: bytes) -> int | None:
    w = walk(data, verify_data=True)
    return w.issues[0].code if w.issues else None


def test_valid_samples_walk_clean_and_every_byte_is_attributed(samples: dict[str, bytes]) -> None:
    for name, data in samples.items():
        w = walk(data, verify_data=True, record_spans=True)
        assert w.valid, (name, w.issues)
        assert w.spans is not None
        pos = 0
        for s in w.spans:
            assert s.start == pos, (name, s)
            pos = s.end
        assert pos == len(data), name
        assert all(s.kind is not SpanKind.UNPARSED for s in w.spans), name
        msg = avp.decode(data)
        assert len(w.tensors) == len(msg.tensors)
        assert w.index is not None
        assert w.index.entries == [(t.section_offset, t.data_offset, t.stored_length)
                                   for t in w.tensors]
        assert [t.crc_status for t in w.tensors] == ["ok"] * len(w.tensors)


def test_summary_walk_reads_no_tensor_data(samples: dict[str, bytes]) -> None:
    # Corrupt every data byte: a walk that does not verify data must not notice.
    data = bytearray(samples["kv_f16"])
    w = walk(bytes(data))
    for t in w.tensors:
        data[t.data_offset:t.data_offset + t.stored_length] = b"\xff" * t.stored_length
    quiet = walk(bytes(data))
    assert quiet.valid and not quiet.data_verified
    assert {t.crc_status for t in quiet.tensors} == {"unchecked"}
    loud = walk(bytes(data), verify_data=True)
    assert [i.name for i in loud.issues] == ["DATA_CHECKSUM"] * len(w.tensors)


# (field path as --map names it, new value, expected error name); the section CRC is resealed so
# each case carries exactly one fault, as the conformance vectors do.
FAULTS: list[tuple[str, int | bytes, str]] = [
    ("preamble.magic", b"\x89AVQ", "BAD_MAGIC"),
    ("preamble.major", 2, "UNSUPPORTED_VERSION"),
    ("preamble.reserved", 1, "RESERVED_NONZERO"),
    ("header.flags", 1, "RESERVED_NONZERO"),
    ("header.kind", 99, "UNKNOWN_KIND"),
    ("header.entry_count", 5000, "LIMIT_ENTRIES"),
    ("header.tensor_count", 9, "SECTION_ORDER"),
    ("entries[0].flags", 3, "RESERVED_NONZERO"),
    ("entries[0].type", 1, "INVALID_VALUE"),  # 32 bytes are no u64
    ("entries[0].type", 4, "ENTRY_TYPE"),  # bytes 0..31 happen to be valid UTF-8
    ("entries[1].flags", 1, "ENTRY_TYPE"),
    ("entries[2].key", 53, "ENTRY_NOT_ALLOWED"),  # MAX_MESSAGE_BYTES in a KV_CACHE
    ("entries[2].key", 6, "ENTRY_TYPE"),  # CREATED_BY_STEPS is not critical
    ("entries[2].key", 2, "NON_CANONICAL"),
    ("layers[0].layer_kind", 7, "INVALID_VALUE"),
    ("layers[0].window", 3, "INVALID_VALUE"),
    ("layers[1].layer_index", 0, "NON_CANONICAL"),
    ("layers[0].reserved", b"\x01", "RESERVED_NONZERO"),
    ("layers[0].token_start", 1, "KIND_CONSTRAINT"),
    ("tensor[1].tensor_index", 4, "TENSOR_INDEX"),
    ("tensor[1].dtype", 99, "UNKNOWN_DTYPE"),
    ("tensor[1].codec", 9, "UNKNOWN_CODEC"),
    ("tensor[1].role", 999, "UNKNOWN_ROLE"),
    ("tensor[1].layout", 9, "UNKNOWN_LAYOUT"),
    ("tensor[1].layout", 2, "TOKEN_RANGE"),  # BTHD reads [1,2,6,8] as 2 tokens, not 6
    ("tensor[1].dtype", 1, "SIZE_MISMATCH"),
    ("tensor[1].layer", 7, "BAD_REFERENCE"),
    ("tensor[1].role", 16, "ROLE_SHAPE"),
    ("tensor[1].rank", 9, "LIMIT_RANK"),
    ("tensor[1].raw_length", 1 << 40, "LIMIT_TENSOR"),
    ("tensor[1].reserved2", b"\x01", "RESERVED_NONZERO"),
    ("tensor[1].quant_axis", 1, "QUANT_PARAMS"),
    ("tensor[1].codec", 2, "DECOMPRESSION_FAILED"),  # raw f16 bytes are no zstd frame
    ("tensor[1].token_offset", 1, "TOKEN_RANGE"),
    ("tensor[0].token_offset", 1, "TOKEN_RANGE"),
    ("tensor[1].data_crc", 0, "DATA_CHECKSUM"),
    ("tensor[0].shape[1]", 5, "SIZE_MISMATCH"),
    ("index.tensor_count", 4, "INDEX_MISMATCH"),
    ("index[2].data_offset", 65, "MISALIGNED"),
    ("index[2].stored_length", 1, "INDEX_MISMATCH"),
    ("trailer.index_offset", 8, "BAD_TRAILER"),
    ("trailer.end_magic", b"\x89AVPEOF\n", "BAD_TRAILER"),
]


@pytest.mark.parametrize(("path", "value", "expected"), FAULTS,
                         ids=[f"{p}={v!r}" for p, v, _ in FAULTS])
def test_single_fault_first_issue_matches_decoder(samples: dict[str, bytes], craft: Any,
                                                  path: str, value: int | bytes,
                                                  expected: str) -> None:
    data = craft.patch(samples["kv_f16"], path, value)
    w = walk(data, verify_data=True)
    assert w.issues, "the fault went unnoticed"
    assert w.issues[0].name == expected, w.issues[:3]
    assert decode_error(data) == first_error(data)
    assert not w.valid


def test_unsealed_patch_is_a_section_checksum(samples: dict[str, bytes], craft: Any) -> None:
    data = craft.patch(samples["kv_f16"], "header.kind", 3, seal=False)
    assert [i.name for i in walk(data).issues][:1] == ["SECTION_CHECKSUM"]
    assert decode_code(data) == int(avp.ErrorCode.SECTION_CHECKSUM)


def test_lenient_walk_lists_every_fault(samples: dict[str, bytes], craft: Any) -> None:
    data = samples["kv_f16"]
    for path, value in (("tensor[1].reserved2", b"\x01"), ("tensor[3].dtype", 99),
                        ("trailer.end_magic", b"\x00" * 8)):
        data = craft.patch(data, path, value)
    data += b"junk"
    names = [i.name for i in walk(data, verify_data=True).issues]
    for want in ("RESERVED_NONZERO", "UNKNOWN_DTYPE", "BAD_TRAILER", "TRAILING_BYTES"):
        assert want in names, names


def test_every_truncation_agrees_with_decoder(samples: dict[str, bytes]) -> None:
    # Every cut of a small message, and every 7th cut (coprime with the 8-byte alignment, so
    # every field position is hit) of two larger ones.
    for name, step in (("text", 1), ("kv_f16", 7), ("kv_int4", 7)):
        data = samples[name]
        for cut in range(0, len(data), step):
            prefix = data[:cut]
            w = walk(prefix, verify_data=True, record_spans=True)
            assert not w.valid
            assert first_error(prefix) == decode_error(prefix), (name, cut, w.issues[:2])
            assert w.spans is not None and sum(s.end - s.start for s in w.spans) <= cut


def test_trailing_bytes_and_skippable_sections(samples: dict[str, bytes], craft: Any) -> None:
    data = samples["text"]
    assert first_code(data + b"\0") == int(avp.ErrorCode.TRAILING_BYTES)
    # An unknown SKIPPABLE section between the header and the index is skipped, not an issue.
    w0 = walk(data)
    assert w0.index is not None
    cut = w0.index.offset
    extra = craft.section(0x8001, b"future", flags=1)
    spliced = bytearray(data[:cut] + extra + data[cut:])
    # the index moved: fix the trailer's index_offset
    struct.pack_into("<Q", spliced, len(spliced) - 16, cut + len(extra))
    w = walk(bytes(spliced))
    assert w.valid, w.issues
    assert w.skipped_sections == [(cut, 0x8001, 6)]
    assert decode_code(bytes(spliced)) is None
    critical = bytearray(spliced)
    struct.pack_into("<I", critical, cut + 4, 0)
    craft.reseal(critical, cut)
    assert first_code(bytes(critical)) == int(avp.ErrorCode.UNKNOWN_CRITICAL)


def test_not_avp_at_all() -> None:
    for data in (b"", b"{\"json\": true}\n", b"\x89AVP"):
        w = walk(data)
        assert not w.valid and w.issues
        assert w.issues[0].code == decode_code(data)


@settings(max_examples=int(os.environ.get("AVP_FUZZ_EXAMPLES", "300")), deadline=None)
@given(st.data())
def test_bit_flips_never_crash_and_agree_with_decoder(samples: dict[str, bytes],
                                                      data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(samples)))
    raw = bytearray(samples[name])
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    w = walk(bytes(raw), verify_data=True, record_spans=True)
    assert first_error(bytes(raw)) == decode_error(bytes(raw)), (name, pos, w.issues[:3])
    assert w.valid == (decode_error(bytes(raw)) is None)


@settings(max_examples=int(os.environ.get("AVP_FUZZ_EXAMPLES", "200")), deadline=None)
@given(st.data())
def test_splices_and_garbage_never_crash(samples: dict[str, bytes], data: st.DataObject) -> None:
    from avp_tools._bytemap import byte_map, covering, hexdump

    a = samples[data.draw(st.sampled_from(sorted(samples)))]
    b = samples[data.draw(st.sampled_from(sorted(samples)))]
    cut_a = data.draw(st.integers(0, len(a)))
    cut_b = data.draw(st.integers(0, len(b)))
    junk = data.draw(st.binary(max_size=64))
    raw = a[:cut_a] + junk + b[cut_b:]
    w = walk(raw, verify_data=True, record_spans=True)
    assert first_error(raw) == decode_error(raw)
    assert sum(s.end - s.start for s in covering(w)) == len(raw)
    lines: list[str] = []
    assert byte_map(raw, lines.append).issues == walk(raw).issues
    assert hexdump(raw, lines.append).issues == walk(raw).issues


def test_decompression_bomb_is_stopped_at_raw_length(craft: Any) -> None:
    import tracemalloc

    import zstandard

    # 64 MiB of zeros in a small frame that does not declare its size, posing as 128 bytes.
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64 << 20))
    m = craft.M(kind=2, entries=[(1, 1, 5, bytes(32)), (16, 1, 1, craft.u64(1))])
    m.tensors.append(craft.T(16, 7, (1, 8, 16), frame, layout=3, codec=1, raw_length=128))
    data = m.build()
    tracemalloc.start()
    try:
        w = walk(data, verify_data=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [i.name for i in w.issues] == ["DECOMPRESSED_SIZE"]
    assert decode_code(data) == int(avp.ErrorCode.DECOMPRESSED_SIZE)
    assert peak < 4 << 20, peak  # bounded by one read, not by what the frame would produce


def test_quantized_attention_mask_follows_the_codec(craft: Any) -> None:
    # The walker has no rules of its own: a quantized ATTENTION_MASK (uint8, AFFINE) is judged
    # exactly as avp_codec.decode judges it (an earlier walker refused it on its own).
    import numpy as np

    m = craft.kv_message()
    scale = craft.T(32, 1, (1, 1), np.ones((1, 1), "<f4").tobytes())
    mask = craft.T(19, 7, (1, 4), bytes([1, 1, 1, 1]), layout=4,
                   quant=(1, 1, 0, 1, craft.NO_REF, 1))
    m.tensors[1:1] = [scale, mask]
    data = m.build()
    assert first_error(data) == decode_error(data)
    assert walk(data, verify_data=True).valid == (decode_error(data) is None)
