"""Invalid vectors for the framing: preamble, sections, padding, index, trailer, limits, lengths.

Each case has exactly one fault. Faults inside a section are made with ``patch``, which then
recomputes that section's CRC so the CRC check does not fire first.
"""

from __future__ import annotations

import struct
from typing import Any

from .gen_common import (
    DTYPES,
    KINDS,
    MODEL_ID,
    RECURRENT,
    ROLES,
    CaseDef,
    WTensor,
    array_bytes,
    ent,
    kv_message,
    text_message,
)
from .wire import SEC_HEADER, SEC_INDEX, WLayer, WMessage, build, header_body, resection

SECTIONS = ("header", "index")


def patch(msg: WMessage, where: str, rel: int, fmt: str, value: int,
          fix_crc: bool = True) -> tuple[bytes, str]:
    """Build ``msg``, overwrite one field, recompute the CRC of the section holding it."""
    built = build(msg)
    buf = bytearray(built.data)
    at = built.offsets[where] + rel
    struct.pack_into(fmt, buf, at, value)
    if fix_crc:
        owner = where.split(".")[0]
        if owner.startswith(("entry", "layer")):
            owner = "header"
        resection(buf, built.offsets[owner])
    return bytes(buf), f"@{at}"


def invalid(cid: str, section: str, reqs: list[str], comment: str, error: str,
            msg: WMessage | None = None, data: bytes | None = None, fault: str | None = None, *,
            context: dict[str, Any] | None = None, features: list[str] | None = None,
            level: str = "required", flags: list[str] | None = None,
            any_of: list[str] | None = None, roundtrip: bool = True) -> CaseDef:
    """An invalid case: exactly one fault, rejected with ``error`` (or any of ``any_of``)."""
    return CaseDef(cid, section, reqs, comment, msg=msg, data=data, result="invalid",
                   error=error, fault=fault, context=context or {}, features=features or [],
                   level=level, flags=flags or [], any_of=any_of or [], roundtrip=roundtrip)


def cases() -> list[CaseDef]:
    out: list[CaseDef] = []
    base = build(kv_message())
    good = base.data
    off = base.offsets

    # -- 3 preamble -------------------------------------------------------------------
    bad = bytearray(good)
    bad[0] = 0x09
    out.append(invalid("3/bad-magic-high-bit-stripped", "3", ["R-3.1"],
                       "the 0x89 byte lost its high bit (7-bit transfer)", "BAD_MAGIC",
                       data=bytes(bad), fault="@0"))
    crlf = good[:4] + b"\r\n\n" + good[7:]  # CR LF LF ... : 0x1A replaced: text-mode damage
    out.append(invalid("3/bad-magic-ctrl-z-lost", "3", ["R-3.1"],
                       "the Ctrl-Z byte of the magic was rewritten", "BAD_MAGIC",
                       data=crlf, fault="@6"))
    lf = good[:4] + good[5:]  # CR LF -> LF conversion shortens the magic by one byte
    out.append(invalid("3/bad-magic-crlf-to-lf", "3", ["R-3.1"],
                       "line-ending conversion turned CR LF into LF", "BAD_MAGIC",
                       data=lf, fault="@4"))
    out.append(invalid("3/bad-magic-not-avp", "3", ["R-3.1"], "a PNG signature",
                       "BAD_MAGIC", data=b"\x89PNG\r\n\x1a\n" + good[8:], fault="@1"))
    out.append(invalid("3/bad-magic-short-prefix", "3", ["R-3.1"],
                       "4 bytes that already differ from the magic", "BAD_MAGIC",
                       data=b"\x89AVQ", fault="@3"))
    for major in (0, 2, 0xFFFF):
        m = kv_message()
        m.major = major
        out.append(invalid(f"3/unsupported-major-{major}", "3", ["R-3.2"],
                           f"major version {major}", "UNSUPPORTED_VERSION", msg=m, fault="@8"))
    m = kv_message()
    m.major = 2
    garbage = bytearray(build(m).data)
    garbage[16:] = b"\xff" * (len(garbage) - 16)  # nothing after the preamble is interpreted
    out.append(invalid("3/unsupported-major-garbage-after", "3", ["R-3.2"],
                       "major 2 followed by bytes that are not a v1 header", "UNSUPPORTED_VERSION",
                       data=bytes(garbage), fault="@8"))
    m = kv_message()
    m.preamble_reserved = 1
    out.append(invalid("3/preamble-reserved-nonzero", "3", ["R-1.2"], "preamble reserved u32 = 1",
                       "RESERVED_NONZERO", msg=m, fault="@12"))

    # -- truncation at every structural boundary ----------------------------------------
    (header_len,) = struct.unpack_from("<Q", good, off["header"] + 8)
    points = {
        "empty": 0, "inside-magic": 5, "inside-preamble": 12, "after-preamble": 16,
        "inside-section-head": off["header"] + 10, "inside-header-body": off["header"] + 40,
        "before-header-crc": off["header"] + 16 + header_len,
        "after-header": off["tensor[0]"], "inside-descriptor": off["tensor[0]"] + 50,
        "before-data-padding": off["tensor[0]"] + 16 + 64 + 32 + 4,
        "before-data": off["tensor[0].data"], "inside-data": off["tensor[0].data"] + 7,
        "after-first-tensor": off["tensor[1]"], "before-index": off["index"],
        "inside-index": off["index"] + 30, "before-trailer": off["trailer"],
        "inside-trailer": off["trailer"] + 8, "last-byte-missing": len(good) - 1,
    }
    for name, cut in points.items():
        out.append(invalid(f"2/truncated-{name}", "2", ["R-4.2"],
                           f"message cut after {cut} of {len(good)} bytes", "TRUNCATED",
                           data=good[:cut], fault=f"@{cut}"))

    # -- 2 trailing bytes ---------------------------------------------------------------
    for name, extra in (("one-zero-byte", b"\0"), ("eight-zero-bytes", b"\0" * 8),
                        ("second-message", build(text_message()).data)):
        out.append(invalid(f"2/trailing-{name}", "2", ["R-2.1"],
                           f"{len(extra)} bytes after the Trailer", "TRAILING_BYTES",
                           data=good + extra, fault=f"@{len(good)}"))

    # -- 4 sections ---------------------------------------------------------------------
    for where in ("header", "tensor[0]", "index"):
        bad = bytearray(good)
        (length,) = struct.unpack_from("<Q", bad, off[where] + 8)
        bad[off[where] + 16 + length] ^= 0x01
        name = where.replace("[0]", "")
        out.append(invalid(f"4.1/section-crc-{name}", "4.1", ["R-4.1"],
                           f"one bit of the {name} section CRC flipped", "SECTION_CHECKSUM",
                           data=bytes(bad), fault=f"@{off[where] + 16 + length}"))
    bad = bytearray(good)
    bad[off["header"] + 16 + 20] ^= 0x40  # inside the body; CRC left stale
    out.append(invalid("4.1/section-crc-header-body-bit", "4.1", ["R-4.1"],
                       "one header body bit flipped, CRC not updated", "SECTION_CHECKSUM",
                       data=bytes(bad), fault=f"@{off['header'] + 36}"))
    m = kv_message()
    m.extra_sections = [(0, 0x8001, 1, b"skippable but damaged")]
    b2 = bytearray(build(m).data)
    b2[build(m).offsets["extra[0]"] + 17] ^= 0xFF
    out.append(invalid("4.1/section-crc-skippable-unknown", "4.1", ["R-4.1", "R-4.3"],
                       "an unknown SKIPPABLE section whose CRC does not match",
                       "SECTION_CHECKSUM", data=bytes(b2)))
    for bit, where in ((1, "header"), (31, "index"), (0, "header"), (0, "tensor[0]")):
        data, fault = patch(kv_message(), where, 4, "<I", 1 << bit)
        name = where.replace("[0]", "")
        what = "SKIPPABLE on a known section" if bit == 0 else f"reserved flag bit {bit}"
        out.append(invalid(f"4.1/section-flags-bit{bit}-{name}", "4.1", ["R-1.2", "R-4.5"],
                           f"{name} section: {what}", "RESERVED_NONZERO", data=data,
                           fault=fault))
    m = kv_message()
    m.extra_sections = [(1, 0x8002, 0, b"critical unknown")]
    out.append(invalid("4.3/unknown-critical-section", "4.3", ["R-4.3", "R-3.3"],
                       "unknown section type 0x8002 without SKIPPABLE", "UNKNOWN_CRITICAL", msg=m,
                       fault="extra[0]+0"))
    m = kv_message()
    m.extra_sections = [(1, 0x8003, 2, b"reserved flag")]
    out.append(invalid("4.3/unknown-section-reserved-flag", "4.3", ["R-1.2"],
                       "unknown section with flag bit 1 set", "RESERVED_NONZERO", msg=m,
                       fault="extra[0]+4"))
    # section order
    m = kv_message()
    m.extra_sections = [(1, SEC_HEADER, 0, header_body(text_message()))]
    out.append(invalid("4.3/second-header", "4.3", ["R-4.3"],
                       "a second HEADER section between the tensors", "SECTION_ORDER", msg=m,
                       fault="extra[0]+0"))
    m = kv_message()
    m.tensor_count = 5
    out.append(invalid("4.3/index-before-last-tensor", "4.3", ["R-4.3"],
                       "header announces 5 tensors, INDEX follows the 4th", "SECTION_ORDER",
                       msg=m, fault="index+0"))
    m = kv_message()
    m.tensor_count = 3
    out.append(invalid("4.3/extra-tensor-before-index", "4.3", ["R-4.3"],
                       "header announces 3 tensors, a 4th TENSOR section follows",
                       "SECTION_ORDER", msg=m, fault="tensor[3]+0"))
    tensor_first = good[:16] + good[off["tensor[0]"]:off["tensor[1]"]]
    out.append(invalid("4.3/tensor-before-header", "4.3", ["R-4.3"],
                       "a TENSOR section right after the preamble", "SECTION_ORDER",
                       data=tensor_first + good[16:off["tensor[0]"]] + good[off["tensor[1]"]:],
                       fault="@16"))
    idx_sec = bytearray(good[16:off["tensor[0]"]])
    struct.pack_into("<I", idx_sec, 0, SEC_INDEX)
    resection(idx_sec, 0)
    out.append(invalid("4.3/index-type-in-header-position", "4.3", ["R-4.3"],
                       "the first section is typed INDEX", "SECTION_ORDER",
                       data=good[:16] + bytes(idx_sec) + good[off["tensor[0]"]:], fault="@16"))

    # -- 5 / 1.3 padding ----------------------------------------------------------------
    m = kv_message()
    m.tensors[0].pre_pad_byte = 0xAA
    out.append(invalid("5/nonzero-pad-before-data", "5", ["R-5.2", "R-1.3", "R-5.1"],
                       "padding between descriptor and 64-aligned data is 0xAA",
                       "NONZERO_PADDING", msg=m, fault="tensor[0].data-1"))
    m = kv_message(dim=3)  # 2*4*3*2 = 48 data bytes: multiple of 8, so use odd tokens
    m = kv_message(tokens=3, dim=3)  # 1*2*3*3*2 = 36 bytes -> 4 bytes of pad8
    m.tensors[0].post_pad_byte = 0x01
    out.append(invalid("5/nonzero-pad-after-data", "5", ["R-5.2", "R-1.3"],
                       "padding after 36 data bytes is 0x01", "NONZERO_PADDING", msg=m,
                       fault="tensor[1]-1"))
    bad = bytearray(good)
    (length,) = struct.unpack_from("<Q", bad, off["header"] + 8)
    pad_at = off["header"] + 20 + length
    if pad_at % 8:
        bad[pad_at] = 0x20
        out.append(invalid("4.1/nonzero-section-padding", "4.1", ["R-1.3"],
                           "padding after the header section CRC is 0x20", "NONZERO_PADDING",
                           data=bytes(bad), fault=f"@{pad_at}"))
    m = kv_message(extra=[ent("PRODUCER", "abc")])
    m.entries[1].pad_byte = 0x20
    out.append(invalid("6.2/nonzero-entry-padding", "6.2", ["R-1.3"],
                       "entry value 'abc' padded with spaces instead of zeros", "NONZERO_PADDING",
                       msg=m, fault="entry[1]+11"))
    for dtype, count in (("int4", 5), ("uint4", 3), ("uint2", 6)):
        shape: tuple[int, ...] = (1, count)
        packed = bytearray(array_bytes(dtype, shape, "pad"))
        bits = 4 if dtype != "uint2" else 2
        packed[-1] |= 0xFF << (count * bits % 8) & 0xFF
        m = kv_message()
        m.layers.append(WLayer(7, 3, 0, 4))
        m.tensors.append(WTensor(ROLES["SSM_STATE"], DTYPES[dtype], shape, bytes(packed),
                                 layer=2))
        out.append(invalid(f"7.2/packed-{dtype}-unused-bits-set", "7.2", ["R-1.3", "R-7.14"],
                           f"{count} {dtype} elements: unused high bits of the last byte set",
                           "NONZERO_PADDING", msg=m, fault=f"tensor[4].data+{len(packed) - 1}"))

    # -- 8 index and trailer ------------------------------------------------------------
    n = 4
    # INDEX section: framing 16, count u64, then entry 0 = section_offset, data_offset, length
    for name, rel, value in (("section-offset", 24, off["tensor[0]"] + 8),
                             ("data-offset", 32, off["tensor[0].data"] + 64),
                             ("stored-length", 40, 63)):
        data, fault = patch(kv_message(), "index", rel, "<Q", value)
        out.append(invalid(f"8/index-{name}-wrong", "8", ["R-8.1"],
                           f"index entry 0 {name} = {value}", "INDEX_MISMATCH", data=data,
                           fault=fault))
    data, fault = patch(kv_message(), "index", 16, "<Q", n + 1)
    out.append(invalid("8/index-count-wrong", "8", ["R-8.1", "R-8.4"], "index tensor_count 5 != 4",
                       "INDEX_MISMATCH", data=data, fault=fault))
    data, fault = patch(kv_message(), "index", 16 + 8 + 8, "<Q", off["tensor[0].data"] + 8)
    out.append(invalid("8/index-data-offset-misaligned", "8", ["R-8.1", "R-8.4", "R-9.5"],
                       "index data_offset is 8 past the data (not a multiple of 64)",
                       "MISALIGNED", data=data, fault=fault))
    bad = bytearray(good)
    bad[-1] = 0x0D
    out.append(invalid("8/trailer-end-magic", "8", ["R-8.2"], "end magic ends in CR",
                       "BAD_TRAILER", data=bytes(bad), fault=f"@{len(good) - 1}"))
    bad = bytearray(good)
    struct.pack_into("<Q", bad, off["trailer"], off["index"] + 8)
    out.append(invalid("8/trailer-index-offset", "8", ["R-8.2"],
                       "trailer index_offset 8 bytes past the INDEX section", "BAD_TRAILER",
                       data=bytes(bad), fault=f"@{off['trailer']}"))

    # -- 16 limits ----------------------------------------------------------------------
    out.append(invalid("16/limit-message", "16", ["R-4.2"], "max_message_bytes = 256",
                       "LIMIT_MESSAGE", msg=kv_message(), context={"limits": {
                           "max_message_bytes": 256}}, features=["limits"]))
    out.append(invalid("16/limit-header", "16", ["R-4.2"], "max_header_bytes = 32",
                       "LIMIT_HEADER", msg=kv_message(), fault="header+8",
                       context={"limits": {"max_header_bytes": 32}}, features=["limits"]))
    out.append(invalid("16/limit-entries", "16", ["R-4.2"], "max_entries = 1, 2 entries",
                       "LIMIT_ENTRIES", msg=kv_message(), fault="header+20",
                       context={"limits": {"max_entries": 1}}, features=["limits"]))
    out.append(invalid("16/limit-layers", "16", ["R-4.2"], "max_layers = 1, 2 layers",
                       "LIMIT_LAYERS", msg=kv_message(), fault="header+24",
                       context={"limits": {"max_layers": 1}}, features=["limits"]))
    out.append(invalid("16/limit-tensors", "16", ["R-4.2"], "max_tensors = 3, 4 tensors",
                       "LIMIT_TENSORS", msg=kv_message(), fault="header+28",
                       context={"limits": {"max_tensors": 3}}, features=["limits"]))
    out.append(invalid("16/limit-tensor-bytes", "16", ["R-4.2"],
                       "max_tensor_bytes = 64, a 128-byte tensor", "LIMIT_TENSOR",
                       msg=kv_message(), fault="tensor[0]+56",
                       context={"limits": {"max_tensor_bytes": 64}}, features=["limits"]))
    m = kv_message()
    m.layers.append(WLayer(9, 3, 0, 4))
    shape = (1,) * 9
    m.tensors.append(WTensor(ROLES["SSM_STATE"], DTYPES["float32"], shape, b"\0" * 4, layer=2))
    out.append(invalid("16/limit-rank-9", "16", ["R-4.2"], "a rank-9 tensor, default max_rank 8",
                       "LIMIT_RANK", msg=m, fault="tensor[4]+28"))
    # A recurrent state declaring 2^32 float16 elements (8 GiB) but carrying 128 bytes.
    big = WMessage(KINDS["KV_CACHE"], [ent("MODEL_ID", MODEL_ID), ent("CONTEXT_LENGTH", 4)],
                   [WLayer(0, RECURRENT, 0, 4)],
                   [WTensor(ROLES["SSM_STATE"], DTYPES["float16"], (1 << 32,), b"\1" * 128,
                            layer=0, raw_len=1 << 33, stored_len=1 << 33)])
    data, big_at = build(big).data, build(big).offsets
    cut = big_at["tensor[0].data"] + 128
    out.append(invalid("16/declared-8gib-tensor-limit", "16", ["R-4.2", "R-1.1"],
                       "a descriptor declaring 8 GiB, max_tensor_bytes = 1 GiB: must be refused"
                       " from the descriptor, before any allocation", "LIMIT_TENSOR",
                       data=data[:cut], context={"limits": {"max_tensor_bytes": 1 << 30}},
                       fault=f"@{big_at['tensor[0]'] + 56}", flags=["LargeDeclared"],
                       features=["limits"]))
    out.append(invalid("16/declared-8gib-tensor-truncated", "16", ["R-4.2"],
                       "a descriptor declaring 8 GiB within the default limit, followed by"
                       " 128 bytes: TRUNCATED without allocating 8 GiB", "TRUNCATED",
                       data=data[:cut], flags=["LargeDeclared"]))
    hdr = bytearray(good)
    struct.pack_into("<Q", hdr, off["header"] + 8, 1 << 40)
    out.append(invalid("16/header-length-1tib", "16", ["R-4.2", "R-9.5"],
                       "HEADER section length 2^40 in a small input: the limit (S.3) comes "
                       "before TRUNCATED (S.4)", "LIMIT_HEADER",
                       data=bytes(hdr), fault=f"@{off['header'] + 8}"))
    return out
