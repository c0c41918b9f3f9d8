"""The lenient structural walker: reads a message front to back like a decoder would (spec 9.2),
but records each departure from the spec as an Issue and keeps going wherever the bytes still
make sense, so one run lists every problem instead of the first.

Agreement with the codec: the walker makes the decoder's checks in the decoder's order and
reports them with the decoder's (code, offset, path); the rules about values, layers, kinds and
tensors are the codec's own functions (see _walk_header and _walk_tensor). So the first issue of
a walk that verifies data is exactly the error ``avp_codec.decode`` raises, and a message is
valid for one exactly when it is valid for the other (tests/tools/test_dump_agreement.py).

Cost: one pass, linear in the number of sections and entries; the walker touches the sections,
descriptors, index and trailer only, unless asked to verify tensor data, so a multi-GB file
summarises after reading a few pages of its mmap. Spans go to a sink as they are found, in
offset order; a walk keeps one small record per entry, layer and tensor (see tools/README.md,
"Memory").
"""

from __future__ import annotations

from collections.abc import Callable

import crc32c

from . import _spec as S
from ._ctx import SKIPPED_KEPT, BufferLike, Ctx
from ._model import IndexInfo, Span, SpanKind, Walk
from ._walk_header import HeaderState, header_body
from ._walk_tensor import Checker, tensor_data, tensor_descriptor


def walk(buf: BufferLike, *, limits: S.Limits | None = None, verify_data: bool = False,
         record_spans: bool = False, sink: Callable[[Span], None] | None = None) -> Walk:
    """Walk ``buf`` leniently.  ``verify_data`` also reads tensor data (CRCs, zstd frames,
    packed-dtype padding); ``record_spans`` keeps a Span for every byte range in ``w.spans``;
    ``sink`` receives them instead, one at a time in offset order (--map / --hex stream them)."""
    spans: list[Span] | None = [] if record_spans else None
    out = spans.append if spans is not None else sink
    ctx = Ctx(buf, limits or S.Limits(), verify_data, out)
    _walk(ctx)
    ctx.walk.spans = spans
    return ctx.walk


class _Frame:
    __slots__ = ("start", "type", "flags", "length", "body", "body_end", "next", "label")

    def __init__(self, start: int, typ: int, flags: int, length: int, label: str) -> None:
        self.start, self.type, self.flags, self.length = start, typ, flags, length
        self.body = start + S.FRAME_SIZE
        self.body_end = self.body + length
        self.next = self.body_end + 4 + S.pad8(20 + length)
        self.label = label


def _walk(ctx: Ctx) -> None:
    w = ctx.walk
    if ctx.n > ctx.limits.max_message_bytes:
        ctx.issue("LIMIT_MESSAGE", 0, "", "R-16.1",
                  f"message is {ctx.n} bytes, limit is {ctx.limits.max_message_bytes}")
    if not _preamble(ctx):
        return
    pos = S.PREAMBLE_SIZE
    header = None
    checker: Checker | None = None
    tensors_seen = 0
    while True:  # one iteration per section: never recursion, whatever the section count
        if not ctx.have(pos, S.FRAME_SIZE):
            _truncated(ctx, pos, "section", "the input ends inside a section frame")
            return
        typ = ctx.uint(pos, 4)
        if typ == S.SECTION_TENSOR:
            label = f"tensor[{tensors_seen}]"
        elif typ in S.SECTION_NAMES:
            label = S.SECTION_NAMES[typ].lower()
        else:
            label = f"section@{pos}"
        fr = _frame(ctx, pos, typ, label)
        if fr is None:
            return
        if typ not in S.SECTION_NAMES:
            w.skipped_count += 1
            if fr.flags & 1:
                if len(w.skipped_sections) < SKIPPED_KEPT:
                    w.skipped_sections.append((pos, typ, fr.length))
                ctx.span(fr.body, fr.length, f"{label}.body", label, "4.1", SpanKind.SKIPPED)
            else:
                ctx.issue("UNKNOWN_CRITICAL", pos, "section.type", "R-4.3",
                          f"unknown section type {typ} without SKIPPABLE")
                ctx.span(fr.body, fr.length, f"{label}.body", label, "4.1", SpanKind.UNPARSED)
            _close(ctx, fr)
            pos = fr.next
            continue
        declared = header.tensor_count if header is not None else 0
        expected = (S.SECTION_HEADER if header is None else
                    S.SECTION_TENSOR if tensors_seen < declared else S.SECTION_INDEX)
        if typ != expected:
            ctx.issue("SECTION_ORDER", pos, "section.type", "R-4.3",
                      f"{S.SECTION_NAMES[typ]} section where {S.SECTION_NAMES[expected]} "
                      "belongs")
        if typ == S.SECTION_HEADER:
            if header is not None:  # a second header: report it, do not let it replace the first
                ctx.span(fr.body, fr.length, f"{label}.body", label, "6.1", SpanKind.UNPARSED)
            else:
                w.header_offset = pos
                header = header_body(ctx, fr.body, fr.body_end)
                checker = Checker(header)
            _close(ctx, fr)
            pos = fr.next
        elif typ == S.SECTION_TENSOR:
            if checker is None:  # a TENSOR before any HEADER: only its layout can be read
                checker = Checker(HeaderState())
            t = tensor_descriptor(ctx, checker, tensors_seen, pos, fr.body, fr.body_end)
            _close(ctx, fr)
            if t is None:
                _rest_unparsed(ctx, fr.next)
                return
            tensors_seen += 1
            nxt = tensor_data(ctx, t, fr.next)
            if nxt is None:
                return
            pos = nxt
        else:
            _index(ctx, pos, fr)
            _close(ctx, fr)
            if _trailer(ctx, fr.next, pos) and checker is not None:
                # Step F (whole-message rules) comes after the trailer, as in the decoder.
                checker.finish(ctx, fr.next)
            w.complete = w.trailer_offset is not None
            if w.complete and fr.next + S.TRAILER_SIZE < ctx.n:
                end = fr.next + S.TRAILER_SIZE
                ctx.issue("TRAILING_BYTES", end, "", "R-2.1",
                          f"{ctx.n - end} bytes follow the trailer")
                ctx.span(end, ctx.n - end, "trailing", "trailing", "2", SpanKind.UNPARSED)
            return


def _truncated(ctx: Ctx, pos: int, path: str, why: str, rest_from: int | None = None) -> None:
    """TRUNCATED at ``pos`` (the structure that is cut, as the decoder reports it); the input
    from ``rest_from`` (default ``pos``) is unparsed."""
    ctx.issue("TRUNCATED", pos, "", "R-2.1", why)
    start = pos if rest_from is None else rest_from
    ctx.span(start, ctx.n - start, path, "truncated", "2", SpanKind.UNPARSED)


def _rest_unparsed(ctx: Ctx, pos: int) -> None:
    if pos < ctx.n:
        ctx.span(pos, ctx.n - pos, "unparsed", "unparsed", "2", SpanKind.UNPARSED)


def _preamble(ctx: Ctx) -> bool:
    w = ctx.walk
    head = bytes(ctx.buf[:8])
    ctx.span(0, len(head), "preamble.magic", "preamble", "3", SpanKind.FIELD, head)
    if head != S.MAGIC[:len(head)]:
        # Keep going only when the magic looks damaged rather than absent (most bytes match):
        # then the rest is probably AVP and worth walking; otherwise it is some other file.
        same = sum(a == b for a, b in zip(head, S.MAGIC, strict=False))
        ctx.issue("BAD_MAGIC", 0, "preamble.magic", "R-3.1",
                  f"first bytes are {head.hex()}, expected {S.MAGIC.hex()}")
        if same < 5:
            _rest_unparsed(ctx, len(head))
            return False
    if not ctx.have(0, S.PREAMBLE_SIZE):
        ctx.issue("TRUNCATED", 0, "", "R-2.1", f"input is only {ctx.n} bytes")
        _rest_unparsed(ctx, len(head))
        return False
    w.major = ctx.field(8, 2, "preamble.major", "preamble", "3")
    w.minor = ctx.field(10, 2, "preamble.minor", "preamble", "3")
    if w.major != S.MAJOR:
        ctx.issue("UNSUPPORTED_VERSION", 8, "preamble.major", "R-3.2",
                  f"major version {w.major}; this walker implements {S.MAJOR}")
        ctx.span(12, ctx.n - 12, "unknown-major", "unparsed", "3.1", SpanKind.UNPARSED)
        return False
    reserved = ctx.field(12, 4, "preamble.reserved", "preamble", "3")
    if reserved:
        ctx.issue("RESERVED_NONZERO", 12, "preamble.reserved", "R-1.2",
                  f"reserved preamble field is {reserved:#x}, must be zero")
    return True


def _frame(ctx: Ctx, pos: int, typ: int, label: str) -> _Frame | None:
    """Read and check a section frame (4.1) in the decoder's order: overflow and limits on the
    declared length before the bytes are waited for (R-4.2), presence, the limits read from the
    body (step S.5), CRC, flags, padding. None when the input ends inside the section."""
    flags = ctx.uint(pos + 4, 4)
    length = ctx.uint(pos + 8, 8)
    fr = _Frame(pos, typ, flags, length, label)
    ctx.span(pos, 4, f"{label}.section.type", label, "4.1", SpanKind.FIELD, typ)
    ctx.span(pos + 4, 4, f"{label}.section.flags", label, "4.1", SpanKind.FIELD, flags)
    ctx.span(pos + 8, 8, f"{label}.section.length", label, "4.1", SpanKind.FIELD, length)
    lim = ctx.limits
    if fr.next > S.U64_MAX:
        ctx.issue("LENGTH_OVERFLOW", pos + 8, "section.length", "R-1.1",
                  "section length overflows u64")
    elif typ == S.SECTION_TENSOR and length > S.DESCRIPTOR_FIXED + 8 * 255:
        ctx.issue("HEADER_LAYOUT", pos + 8, "section.length", "R-7.1",
                  f"descriptor of {length} bytes is longer than rank 255 allows")
    elif typ == S.SECTION_HEADER and length > lim.max_header_bytes:
        ctx.issue("LIMIT_HEADER", pos + 8, "", "R-4.2",
                  f"header body is {length} bytes, limit is {lim.max_header_bytes}")
    elif typ == S.SECTION_INDEX and length > 8 + S.INDEX_ENTRY_SIZE * lim.max_tensors + 32:
        ctx.issue("LIMIT_TENSORS", pos + 8, "", "R-4.2",
                  f"index body of {length} bytes lists more than max_tensors tensors")
    elif typ not in S.SECTION_NAMES and length > lim.max_header_bytes:
        ctx.issue("LIMIT_HEADER", pos + 8, "", "R-4.2",
                  f"unknown section of {length} bytes exceeds max_header_bytes")
    if fr.next > ctx.n:  # step S.4: the whole section, padding included, must be present
        where = "body" if fr.body_end + 4 > ctx.n else "padding"
        _truncated(ctx, pos, f"{label}.body",
                   f"the section's {where} runs past the end of the input", fr.body)
        return None
    _body_limits(ctx, typ, fr.body, length)
    stored = ctx.uint(fr.body_end, 4)
    actual = crc32c.crc32c(ctx.buf[pos:fr.body_end])
    if stored != actual:
        ctx.issue("SECTION_CHECKSUM", fr.body_end, "section.crc", "R-4.1",
                  f"{label}: section crc is {stored:08x}, bytes give {actual:08x}")
    if flags & ~1 or (typ in S.SECTION_NAMES and flags):
        ctx.issue("RESERVED_NONZERO", pos + 4, "section.flags", "R-4.5",
                  f"{label}: reserved section flag bits set: {flags:#x}")
    pad = fr.body_end + 4
    if ctx.nonzero_at(pad, fr.next - pad) is not None:
        ctx.issue("NONZERO_PADDING", pad, "", "R-1.3", f"{label}: section padding is not zero")
    return fr


def _close(ctx: Ctx, fr: _Frame) -> None:
    """The spans after a section's body: its CRC and padding (recorded last, in offset order)."""
    ctx.span(fr.body_end, 4, f"{fr.label}.section.crc", fr.label, "4.1", SpanKind.CRC,
             ctx.uint(fr.body_end, 4))
    pad = fr.body_end + 4
    ctx.span(pad, fr.next - pad, f"{fr.label}.section.padding", fr.label, "4.1",
             SpanKind.PADDING)


def _body_limits(ctx: Ctx, typ: int, body: int, length: int) -> None:
    """Step S.5: limits read from a body whose CRC is not verified yet."""
    lim = ctx.limits
    if typ == S.SECTION_HEADER and length >= 16:
        for rel, limit, code, what in ((4, lim.max_entries, "LIMIT_ENTRIES", "entry_count"),
                                       (8, lim.max_layers, "LIMIT_LAYERS", "layer_count"),
                                       (12, lim.max_tensors, "LIMIT_TENSORS", "tensor_count")):
            count = ctx.uint(body + rel, 4)
            if count > limit:
                ctx.issue(code, body + rel, what, "R-16.1",
                          f"{what} {count} exceeds the limit {limit}")
    elif typ == S.SECTION_TENSOR and length >= S.DESCRIPTOR_FIXED:
        rank = ctx.uint(body + 12, 1)
        if rank > lim.max_rank:
            ctx.issue("LIMIT_RANK", body + 12, "rank", "R-16.1",
                      f"rank {rank} exceeds the limit {lim.max_rank}")
        for rel, what in ((40, "raw_length"), (48, "stored_length")):
            value = ctx.uint(body + rel, 8)
            if value > lim.max_tensor_bytes:
                ctx.issue("LIMIT_TENSOR", body + rel, what, "R-16.1",
                          f"{what} {value} exceeds the limit {lim.max_tensor_bytes}")


def _index(ctx: Ctx, pos: int, fr: _Frame) -> None:
    w = ctx.walk
    sec = "index"
    length = fr.length
    declared = w.tensor_count or 0
    has_auth = w.entry(S.KEY_AUTH) is not None
    want = 8 + S.INDEX_ENTRY_SIZE * declared + (S.AUTH_TAG_SIZE if has_auth else 0)
    if want != length:
        ctx.issue("HEADER_LAYOUT", pos + 8, "index.length", "R-15" if has_auth else "8",
                  f"index body is {length} bytes, {declared} entries"
                  f"{' and an auth tag' if has_auth else ''} need {want}")
    if length < 8:
        ctx.span(fr.body, length, "index.body", sec, "8", SpanKind.UNPARSED)
        return
    count = ctx.field(fr.body, 8, "index.tensor_count", sec, "8")
    info = IndexInfo(pos, count)
    w.index = info
    if count != declared:
        ctx.issue("INDEX_MISMATCH", fr.body, "index.tensor_count", "8",
                  f"index counts {count} tensors, header declares {declared}")
    room = (length - 8 - (S.AUTH_TAG_SIZE if has_auth else 0)) // S.INDEX_ENTRY_SIZE
    listed = max(0, min(count, room))
    cols = w.tensors
    sections, datas = cols.column("section_offset"), cols.column("data_offset")
    storeds = cols.column("stored_length")
    for i in range(listed):
        off = fr.body + 8 + S.INDEX_ENTRY_SIZE * i
        p = f"index[{i}]"
        sec_off = ctx.field(off, 8, f"{p}.section_offset", sec, "8")
        data_off = ctx.field(off + 8, 8, f"{p}.data_offset", sec, "8")
        stored = ctx.field(off + 16, 8, f"{p}.stored_length", sec, "8")
        info.flat.extend((sec_off, data_off, stored))
        if data_off % 64:
            ctx.issue("MISALIGNED", off + 8, f"{p}.data_offset", "R-8.1",
                      f"data_offset {data_off} is not a multiple of 64")
            continue
        if i >= len(w.tensors):
            ctx.issue("INDEX_MISMATCH", off, p, "R-8.1", "index entry for a missing tensor")
            continue
        actual = (sections[i], datas[i], storeds[i])
        if (sec_off, data_off, stored) != actual:
            ctx.issue("INDEX_MISMATCH", off, p, "R-8.1",
                      f"index says ({sec_off}, {data_off}, {stored}), tensor is at {actual}")
    used = fr.body + 8 + S.INDEX_ENTRY_SIZE * listed
    tag_off = fr.body_end - S.AUTH_TAG_SIZE
    if has_auth and length >= 8 + S.AUTH_TAG_SIZE and tag_off >= used:
        if tag_off > used:
            ctx.span(used, tag_off - used, "index.excess", sec, "8", SpanKind.UNPARSED)
        info.auth_tag = bytes(ctx.buf[tag_off:fr.body_end])
        ctx.span(tag_off, S.AUTH_TAG_SIZE, "index.auth_tag", sec, "15", SpanKind.AUTH_TAG,
                 info.auth_tag.hex())
    elif used < fr.body_end:
        ctx.span(used, fr.body_end - used, "index.excess", sec, "8", SpanKind.UNPARSED)


def _trailer(ctx: Ctx, pos: int, index_offset: int) -> bool:
    """The trailer; False when the input ends inside it."""
    w = ctx.walk
    if not ctx.have(pos, S.TRAILER_SIZE):
        _truncated(ctx, pos, "trailer", "the input ends inside the trailer")
        return False
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
    return True
