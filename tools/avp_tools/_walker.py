"""The lenient structural walker: reads a message front to back like a decoder would (spec 9.2),
but records each departure from the spec as an Issue and keeps going wherever the bytes still
make sense, so one run lists every problem instead of the first.

It reads only structure (preamble, sections, descriptors, index, trailer) unless asked to verify
tensor data, so a multi-GB file summarises after touching a few pages of its mmap.
"""

from __future__ import annotations

from dataclasses import dataclass

import crc32c

from . import _spec as S
from ._ctx import BufferLike, Ctx
from ._model import IndexInfo, SpanKind, Walk
from ._walk_header import header_body
from ._walk_tensor import cross_checks, tensor_data, tensor_descriptor


def walk(buf: BufferLike, *, limits: S.Limits | None = None, verify_data: bool = False,
         record_spans: bool = False) -> Walk:
    """Walk ``buf`` leniently.  ``verify_data`` also reads tensor data (CRCs, zstd frames,
    packed-dtype padding); ``record_spans`` keeps a Span for every byte range (--map/--hex)."""
    ctx = Ctx(buf, limits or S.Limits(), verify_data, record_spans)
    _walk(ctx)
    if ctx.walk.spans is not None:
        ctx.walk.spans.sort(key=lambda s: (s.start, s.end))
    return ctx.walk


@dataclass
class _Frame:
    start: int
    type: int
    flags: int
    length: int
    body: int
    body_end: int
    next: int


def _walk(ctx: Ctx) -> None:
    w = ctx.walk
    if ctx.n > ctx.limits.max_message_bytes:
        ctx.issue("LIMIT_MESSAGE", 0, "message", "16",
                  f"message is {ctx.n} bytes, limit is {ctx.limits.max_message_bytes}")
    if not _preamble(ctx):
        return
    pos = S.PREAMBLE_SIZE
    header_seen = False
    tensors_seen = 0
    while True:
        if not ctx.have(pos, 4):
            _truncated(ctx, pos, "section", "4.1", "the input ends where a section should start")
            return
        typ = ctx.uint(pos, 4)
        declared = w.tensor_count if w.tensor_count is not None else 0
        if typ == S.SECTION_TENSOR:
            label = f"tensor[{tensors_seen}]"
        elif typ in S.SECTION_NAMES:
            label = S.SECTION_NAMES[typ].lower()
        else:
            label = f"section@{pos}"
        fr = _frame(ctx, pos, label)
        if fr is None:
            return
        if typ not in S.SECTION_NAMES:
            if fr.flags & 1:
                w.skipped_sections.append((pos, typ, fr.length))
                ctx.span(fr.body, fr.length, f"{label}.body", label, "4.1", SpanKind.SKIPPED)
            else:
                ctx.issue("UNKNOWN_CRITICAL", pos, f"{label}.section.type", "R-4.3",
                          f"unknown section type {typ} without SKIPPABLE")
                ctx.span(fr.body, fr.length, f"{label}.body", label, "4.1", SpanKind.UNPARSED)
            pos = fr.next
            continue
        expected = (S.SECTION_HEADER if not header_seen else
                    S.SECTION_TENSOR if tensors_seen < declared else S.SECTION_INDEX)
        if typ != expected:
            ctx.issue("SECTION_ORDER", pos, f"{label}.section.type", "R-4.3",
                      f"{S.SECTION_NAMES[typ]} section where {S.SECTION_NAMES[expected]} "
                      "was expected")
        if typ == S.SECTION_HEADER:
            if header_seen:  # a second header: report it, do not let it overwrite the first
                ctx.span(fr.body, fr.length, f"{label}.body", label, "6.1", SpanKind.UNPARSED)
                pos = fr.next
                continue
            header_seen = True
            w.header_offset = pos
            header_body(ctx, fr.body, fr.body_end)
            pos = fr.next
        elif typ == S.SECTION_TENSOR:
            t = tensor_descriptor(ctx, tensors_seen, pos, fr.body, fr.body_end)
            if t is None:
                return
            tensors_seen += 1
            nxt = tensor_data(ctx, t, fr.next)
            if nxt is None:
                return
            pos = nxt
        else:
            _index(ctx, pos, fr)
            _trailer(ctx, fr.next, pos)
            cross_checks(ctx)  # after the trailer, as a decoder finishes (spec 9.2)
            return


def _truncated(ctx: Ctx, pos: int, path: str, spec: str, why: str,
               rest_from: int | None = None) -> None:
    """Report TRUNCATED at ``pos``; the bytes from ``rest_from`` (default pos) are unparsed."""
    ctx.issue("TRUNCATED", pos, path, spec, why)
    start = pos if rest_from is None else rest_from
    ctx.span(start, ctx.n - start, path, "truncated", spec, SpanKind.UNPARSED)


def _preamble(ctx: Ctx) -> bool:
    w = ctx.walk
    head = bytes(ctx.buf[:8])
    if head != S.MAGIC[:len(head)]:
        # Keep going only when the magic looks damaged rather than absent (most bytes match):
        # then the rest is probably AVP and worth walking; otherwise it is some other file.
        same = sum(a == b for a, b in zip(head, S.MAGIC, strict=False))
        ctx.issue("BAD_MAGIC", 0, "preamble.magic", "R-3.1",
                  f"first bytes are {head.hex()}, expected {S.MAGIC.hex()}")
        ctx.span(0, len(head), "preamble.magic", "preamble", "3", SpanKind.FIELD, head)
        if same < 5:
            ctx.span(len(head), ctx.n - len(head), "not-avp", "unparsed", "3", SpanKind.UNPARSED)
            return False
    else:
        ctx.span(0, len(head), "preamble.magic", "preamble", "3", SpanKind.FIELD, head)
    if not ctx.have(0, S.PREAMBLE_SIZE):
        _truncated(ctx, len(head), "preamble", "3", f"input is only {ctx.n} bytes")
        return False
    w.major = ctx.field(8, 2, "preamble.major", "preamble", "3")
    w.minor = ctx.field(10, 2, "preamble.minor", "preamble", "3")
    if w.major != S.MAJOR:
        ctx.issue("UNSUPPORTED_VERSION", 8, "preamble.major", "R-3.2",
                  f"major version {w.major}; this walker implements {S.MAJOR}")
        ctx.span(16, ctx.n - 16, "unknown-major", "unparsed", "3.1", SpanKind.UNPARSED)
        return False
    ctx.reserved(12, 4, "preamble.reserved", "preamble", "3")
    return True


def _frame(ctx: Ctx, pos: int, label: str) -> _Frame | None:
    """Read and check a section frame (4.1).  None when the input ends inside it."""
    if not ctx.have(pos, S.FRAME_SIZE):
        _truncated(ctx, pos, label, "4.1", "the input ends inside a section frame")
        return None
    typ = ctx.field(pos, 4, f"{label}.section.type", label, "4.1")
    flags = ctx.field(pos + 4, 4, f"{label}.section.flags", label, "4.1")
    length = ctx.field(pos + 8, 8, f"{label}.section.length", label, "4.1")
    body = pos + S.FRAME_SIZE
    body_end = body + length
    nxt = body_end + 4 + S.pad8(20 + length)
    # Limits come before the bytes are waited for: a receiver must refuse a huge
    # declared length without buffering it, so that is the first thing reported.
    lim = ctx.limits
    if nxt > S.U64_MAX:
        ctx.issue("LENGTH_OVERFLOW", pos + 8, f"{label}.section.length", "R-1.1",
                  "section length overflows u64")
    elif typ == S.SECTION_HEADER and length > lim.max_header_bytes:
        ctx.issue("LIMIT_HEADER", pos + 8, f"{label}.section.length", "R-4.2",
                  f"header body is {length} bytes, limit is {lim.max_header_bytes}")
    elif typ == S.SECTION_TENSOR and length > S.DESCRIPTOR_FIXED + 8 * 255:
        ctx.issue("HEADER_LAYOUT", pos + 8, f"{label}.section.length", "R-7.1",
                  f"descriptor of {length} bytes is longer than rank 255 allows")
    elif typ == S.SECTION_INDEX and length > 8 + S.INDEX_ENTRY_SIZE * lim.max_tensors + 32:
        ctx.issue("LIMIT_TENSORS", pos + 8, f"{label}.section.length", "R-4.2",
                  f"index body of {length} bytes lists more than max_tensors tensors")
    elif typ not in S.SECTION_NAMES and length > lim.max_header_bytes:
        ctx.issue("LIMIT_HEADER", pos + 8, f"{label}.section.length", "R-4.2",
                  f"unknown section of {length} bytes exceeds max_header_bytes")
    if nxt > ctx.n:  # step S.4: the whole section, padding included, must be present
        where = "body" if body_end + 4 > ctx.n else "padding"
        _truncated(ctx, pos + 8, f"{label}.section.length", "R-4.2",
                   f"the section's {where} runs past the end of the input", body)
        return None
    _body_limits(ctx, typ, label, body, length)
    stored = ctx.uint(body_end, 4)
    ctx.span(body_end, 4, f"{label}.section.crc", label, "4.1", SpanKind.CRC, stored)
    actual = crc32c.crc32c(ctx.buf[pos:body_end])
    if stored != actual:
        ctx.issue("SECTION_CHECKSUM", body_end, f"{label}.section.crc", "R-4.1",
                  f"section crc is {stored:08x}, bytes give {actual:08x}")
    if flags & ~1 or (typ in S.SECTION_NAMES and flags):
        ctx.issue("RESERVED_NONZERO", pos + 4, f"{label}.section.flags", "R-4.5",
                  f"reserved section flag bits set: {flags:#x}")
    ctx.padding(body_end + 4, nxt - body_end - 4, f"{label}.section.padding", label, "4.1")
    return _Frame(pos, typ, flags, length, body, body_end, nxt)


def _body_limits(ctx: Ctx, typ: int, label: str, body: int, length: int) -> None:
    """Step S.5: limits read from a body whose CRC is not verified yet."""
    lim = ctx.limits
    if typ == S.SECTION_HEADER and length >= 16:
        for rel, limit, code, what in ((4, lim.max_entries, "LIMIT_ENTRIES", "entry_count"),
                                       (8, lim.max_layers, "LIMIT_LAYERS", "layer_count"),
                                       (12, lim.max_tensors, "LIMIT_TENSORS", "tensor_count")):
            count = ctx.uint(body + rel, 4)
            if count > limit:
                ctx.issue(code, body + rel, f"header.{what}", "R-16.1",
                          f"{what} {count} exceeds the limit {limit}")
    elif typ == S.SECTION_TENSOR and length >= S.DESCRIPTOR_FIXED:
        rank = ctx.uint(body + 12, 1)
        if rank > lim.max_rank:
            ctx.issue("LIMIT_RANK", body + 12, f"{label}.rank", "R-16.1",
                      f"rank {rank} exceeds the limit {lim.max_rank}")
        for rel, what in ((40, "raw_length"), (48, "stored_length")):
            value = ctx.uint(body + rel, 8)
            if value > lim.max_tensor_bytes:
                ctx.issue("LIMIT_TENSOR", body + rel, f"{label}.{what}", "R-16.1",
                          f"{what} {value} exceeds the limit {lim.max_tensor_bytes}")


def _index(ctx: Ctx, pos: int, fr: _Frame) -> None:
    w = ctx.walk
    sec = "index"
    length = fr.body_end - fr.body
    if length < 8:
        ctx.issue("HEADER_LAYOUT", fr.body, "index.tensor_count", "8",
                  f"index body is {length} bytes, too short for its count")
        return
    count = ctx.field(fr.body, 8, "index.tensor_count", sec, "8")
    info = IndexInfo(pos, count)
    w.index = info
    declared = w.tensor_count or 0
    has_auth = w.entry(S.KEY_AUTH) is not None
    want = 8 + S.INDEX_ENTRY_SIZE * declared + (S.AUTH_TAG_SIZE if has_auth else 0)
    if want != length:
        ctx.issue("HEADER_LAYOUT", pos + 8, "index.section.length", "R-15" if has_auth else "8",
                  f"index body is {length} bytes, {declared} entries"
                  f"{' and an auth tag' if has_auth else ''} need {want}")
    if count != declared:
        ctx.issue("INDEX_MISMATCH", fr.body, "index.tensor_count", "8",
                  f"index counts {count} tensors, header declares {declared}")
    room = (length - 8 - (S.AUTH_TAG_SIZE if has_auth else 0)) // S.INDEX_ENTRY_SIZE
    for i in range(max(0, min(count, room))):
        off = fr.body + 8 + S.INDEX_ENTRY_SIZE * i
        p = f"index.entry[{i}]"
        sec_off = ctx.field(off, 8, f"{p}.section_offset", sec, "8")
        data_off = ctx.field(off + 8, 8, f"{p}.data_offset", sec, "8")
        stored = ctx.field(off + 16, 8, f"{p}.stored_length", sec, "8")
        info.entries.append((sec_off, data_off, stored))
        if data_off % 64:
            ctx.issue("MISALIGNED", off + 8, f"{p}.data_offset", "R-8.1",
                      f"data_offset {data_off} is not a multiple of 64")
            continue
        actual = w.tensors[i] if i < len(w.tensors) else None
        if actual is None:
            ctx.issue("INDEX_MISMATCH", off, p, "R-8.1", "index entry for a missing tensor")
        elif (sec_off, data_off, stored) != (actual.section_offset, actual.data_offset,
                                             actual.stored_length):
            ctx.issue("INDEX_MISMATCH", off, p, "R-8.1",
                      f"index says ({sec_off}, {data_off}, {stored}), tensor is at "
                      f"({actual.section_offset}, {actual.data_offset}, {actual.stored_length})")
    if has_auth and length >= 8 + S.AUTH_TAG_SIZE:
        tag_off = fr.body_end - S.AUTH_TAG_SIZE
        info.auth_tag = bytes(ctx.buf[tag_off:fr.body_end])
        ctx.span(tag_off, S.AUTH_TAG_SIZE, "index.auth_tag", sec, "15", SpanKind.AUTH_TAG,
                 info.auth_tag.hex())


def _trailer(ctx: Ctx, pos: int, index_offset: int) -> None:
    w = ctx.walk
    if not ctx.have(pos, S.TRAILER_SIZE):
        _truncated(ctx, pos, "trailer", "8", "the input ends inside the trailer")
        return
    w.trailer_offset = pos
    idx = ctx.field(pos, 8, "trailer.index_offset", "trailer", "8")
    magic = bytes(ctx.buf[pos + 8:pos + 16])
    ctx.span(pos + 8, 8, "trailer.end_magic", "trailer", "8", SpanKind.FIELD, magic)
    if magic != S.END_MAGIC:
        ctx.issue("BAD_TRAILER", pos + 8, "trailer.end_magic", "R-8.2",
                  f"end magic is {magic.hex()}, expected {S.END_MAGIC.hex()}")
    if idx != index_offset:
        ctx.issue("BAD_TRAILER", pos, "trailer.index_offset", "R-8.2",
                  f"index_offset is {idx}, the index is at {index_offset}")
    end = pos + S.TRAILER_SIZE
    w.complete = True
    if end < ctx.n:
        ctx.issue("TRAILING_BYTES", end, "trailing", "R-2.1",
                  f"{ctx.n - end} bytes follow the trailer")
        ctx.span(end, ctx.n - end, "trailing", "trailing", "2", SpanKind.UNPARSED)
