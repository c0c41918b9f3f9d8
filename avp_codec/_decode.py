"""The decoder core (spec 3-9, 15, 16), shared by whole-buffer ``decode`` and the sans-IO
incremental ``Decoder``.

``_Core`` reads structures front to back from a source that is either a complete buffer
(zero-copy memoryview slices) or the incremental decoder's growing buffer. For every structure
it checks, in spec 9.2 order: bytes present (TRUNCATED), limits, section CRC, reserved bits and
padding, then field values. Declared lengths are checked against limits as soon as the length
field itself has been read, before the decoder waits for (or touches) the bytes it announces.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Mapping
from typing import Any, cast

import crc32c

from . import _codecs, _dtypes, _verify
from . import _structs as S
from ._auth import new_mac, tags_equal
from ._events import (
    NEED_DATA,
    DescriptorEvent,
    EndEvent,
    Event,
    HeaderEvent,
    Source,
    TensorEvent,
)
from ._registry import (
    END_MAGIC,
    FORMAT_MAJOR,
    MAGIC,
    NO_REF,
    U64_MAX,
    Codec,
    Dtype,
    ErrorCode,
    Kind,
    LayerKind,
    Layout,
    MetaKey,
    QuantScheme,
    Role,
    SectionType,
    ValueType,
)
from ._validate import TensorChecker, check_kind_entries, check_kind_layers, check_layer
from ._values import check_entry, decode_value, precheck_value
from .errors import AvpError
from .limits import DEFAULT_LIMITS, Limits
from .model import Entry, Layer, Quant, Tensor

_MAX_DESC = 64 + 8 * 255  # the largest tensor descriptor a u8 rank allows


def _err(code: ErrorCode, msg: str, off: int | None, path: str = "") -> AvpError:
    return AvpError(code, msg, offset=off, path=path)


class Core:
    def __init__(self, limits: Limits | None, verify: bool, keys: Mapping[bytes, bytes] | None,
                 require_auth: bool, *, keep_raw: bool = True,
                 descriptors: bool = False) -> None:
        self.lim = limits or DEFAULT_LIMITS
        # The incremental Decoder's options (see there): verify compressed tensors without
        # keeping their output, and report each descriptor before its data is read.
        self.keep_raw = keep_raw
        self.descriptors = descriptors
        self.verify = verify
        self.keys = keys or {}
        self.require_auth = require_auth
        self.pos = 0
        self.state = "preamble"
        self.kind: Kind | None = None
        self.tensor_count = 0
        self.layers: list[Layer] = []
        self.checker: TensorChecker | None = None
        self.index: list[tuple[int, int, int]] = []
        self.pending: tuple[Tensor, int, int] | None = None
        # Bytes consumed before the HEADER named the key (the tag covers them): one contiguous
        # copy for the incremental source, nothing for a complete buffer (it keeps them).
        self.prefix = bytearray()
        self.prefix_len = 0
        self.mac: hmac.HMAC | None = None
        self.authed = False
        self.tag: bytes | None = None
        self.index_at = 0

    # -- helpers ----------------------------------------------------------------------------
    def _have(self, src: Source, n: int, what: str) -> bool:
        # The incremental source refuses a structure bigger than max_buffer_bytes whether or
        # not its bytes happen to be there already, so the outcome never depends on chunking.
        src.reserve(n, self.pos, what)
        if src.end() - self.pos >= n:
            return True
        if src.complete:
            raise _err(ErrorCode.TRUNCATED, f"input ends inside a {n}-byte structure", self.pos,
                       what)
        return False

    def _consume(self, src: Source, n: int) -> None:
        if self.kind is None and self.keys:
            # Before the HEADER names the key, bytes are kept for the tag, but only by a
            # receiver that holds keys, and within max_buffer_bytes (11.2) when incremental.
            self.prefix_len += n
            if not src.keeps_all:
                src.reserve(self.prefix_len, 0, "message")
                self.prefix += src.get(self.pos, n)
        elif self.mac is not None:
            self.mac.update(src.get(self.pos, n))
        self.pos += n
        src.discard(self.pos)

    def step(self, src: Source) -> Event:
        """The next event. A loop, never recursion: a stage that consumed a structure without
        an event to report (the preamble, a skippable section, the INDEX) returns _AGAIN, so any
        number of skippable sections costs constant stack and linear time."""
        while True:
            state = self.state
            if state == "sections":
                ev = self._section(src)
            elif state == "data":
                ev = self._data(src)
            elif state == "preamble":
                ev = self._preamble(src)
            elif state == "trailer":
                ev = self._trailer(src)
            else:
                raise _err(ErrorCode.TRAILING_BYTES, "bytes after the Trailer", self.pos,
                           "trailing")
            if ev is not _AGAIN:
                return ev

    # -- preamble (spec 3) ---------------------------------------------------------------
    def _preamble(self, src: Source) -> Event:
        have = min(src.end(), 8)
        if have and bytes(src.get(0, have)) != MAGIC[:have]:
            raise _err(ErrorCode.BAD_MAGIC, "not an AVP message", 0, "preamble.magic")
        if not self._have(src, 16, "preamble"):
            return NEED_DATA
        p = S.parse_preamble(src.get(0, 16))
        if p.major != FORMAT_MAJOR:
            raise _err(ErrorCode.UNSUPPORTED_VERSION, f"major version {p.major}", 8,
                       "preamble.major")
        if p.reserved:
            raise _err(ErrorCode.RESERVED_NONZERO, "reserved preamble field", 12,
                       "preamble.reserved")
        self.minor = p.minor
        self.skipped = 0
        self._consume(src, 16)
        self.state = "sections"
        return _AGAIN

    # -- sections (spec 4) ---------------------------------------------------------------
    def _section(self, src: Source) -> Event:
        # Runs once per tensor: fields are unpacked into plain tuples with precompiled
        # struct.Structs and read by position (no namedtuple or dataclass per section).
        at = self.pos
        if not self._have(src, 16, "section"):
            return NEED_DATA
        stype, flags, n = _SECTION_HEAD(src.get(at, 16))
        total = 20 + n + (-(20 + n) % 8)
        if at + total > U64_MAX:
            raise _err(ErrorCode.LENGTH_OVERFLOW, "section length overflows u64", at + 8,
                       "section.length")
        lim = self.lim
        known = stype in _KNOWN_SECTIONS
        if stype == SectionType.TENSOR:
            if n > _MAX_DESC:
                raise _err(ErrorCode.HEADER_LAYOUT, "tensor descriptor longer than rank 255 "
                           "allows", at + 8, "section.length")
        elif stype == SectionType.HEADER:
            if n > lim.max_header_bytes:
                raise _err(ErrorCode.LIMIT_HEADER, f"header body of {n} bytes", at + 8,
                           "section.length")
        elif stype == SectionType.INDEX:
            if n > 8 + 24 * lim.max_tensors + 32:
                raise _err(ErrorCode.LIMIT_TENSORS, "index longer than max_tensors allows",
                           at + 8, "section.length")
        elif n > lim.max_header_bytes:
            raise _err(ErrorCode.LIMIT_HEADER, f"unknown section of {n} bytes", at + 8,
                       "section.length")
        if not self._have(src, total, "section"):
            return NEED_DATA
        got = src.get(at, total)  # the whole section: head, body, crc, pad8
        # A view: slicing the bytes the incremental source joins would copy a large HEADER
        # (up to max_header_bytes) once for its CRC and again for its body.
        sec = got if isinstance(got, memoryview) else memoryview(got)
        if stype == SectionType.HEADER and n >= 16:
            self._header_limits(S.parse_header_fixed(sec, 16), at + 16)
        fixed = None
        if stype == SectionType.TENSOR and n >= 64:
            fixed = _TENSOR_FIXED(sec, 16)
            if (fixed[_RANK] > lim.max_rank or fixed[_RAW_LENGTH] > lim.max_tensor_bytes
                    or fixed[_STORED_LENGTH] > lim.max_tensor_bytes):
                self._tensor_limits(fixed, at + 16)  # raises the right one of the three
        if crc32c.crc32c(sec[:16 + n]) != _U32(sec, 16 + n)[0]:
            raise _err(ErrorCode.SECTION_CHECKSUM, "section CRC32C mismatch", at + 16 + n,
                       "section.crc")
        if flags & ~1 or (known and flags):
            raise _err(ErrorCode.RESERVED_NONZERO, "reserved section flag bits", at + 4,
                       "section.flags")
        if total > 20 + n and _nonzero(sec[20 + n:]):
            raise _err(ErrorCode.NONZERO_PADDING, "section padding", at + 20 + n,
                       "section.padding")
        if not known:
            if not flags & 1:
                raise _err(ErrorCode.UNKNOWN_CRITICAL, f"unknown section type {stype}", at,
                           "section.type")
            self._consume(src, total)  # skippable: verified, then ignored
            self.skipped += 1
            return _AGAIN
        expected = (SectionType.HEADER if self.kind is None else SectionType.TENSOR
                    if len(self.index) < self.tensor_count else SectionType.INDEX)
        if stype != expected:
            raise _err(ErrorCode.SECTION_ORDER, f"{SectionType(stype).name} section where "
                       f"{expected.name} belongs", at, "section.type")
        if expected == SectionType.TENSOR:
            t = self._descriptor(sec, fixed, at + 16, n)
            self._consume(src, total)
            self.pending = (t, at, self.pos)
            self.state = "data"
            if self.descriptors:
                return DescriptorEvent(len(self.index), t)
            return self._data(src)
        body = sec[16:16 + n]
        if expected == SectionType.HEADER:
            ev = self._header(body, at + 16)
            self._start_auth(src)  # the tag covers the preamble and any earlier section too
            self._consume(src, total)
            return ev
        self._index(body, at, n)
        self._consume(src, total)
        self.state = "trailer"
        return _AGAIN

    # -- HEADER (spec 6) -----------------------------------------------------------------
    def _header_limits(self, f: object, off: int) -> None:
        lim = self.lim
        if f.entry_count > lim.max_entries:  # type: ignore[attr-defined]
            raise _err(ErrorCode.LIMIT_ENTRIES, "too many entries", off + 4,
                       "header.entry_count")
        if f.layer_count > lim.max_layers:  # type: ignore[attr-defined]
            raise _err(ErrorCode.LIMIT_LAYERS, "too many layers", off + 8, "header.layer_count")
        if f.tensor_count > lim.max_tensors:  # type: ignore[attr-defined]
            raise _err(ErrorCode.LIMIT_TENSORS, "too many tensors", off + 12,
                       "header.tensor_count")

    def _header(self, body: memoryview, off: int) -> HeaderEvent:
        if len(body) < 16:
            raise _err(ErrorCode.HEADER_LAYOUT, "header body shorter than 16 bytes", off,
                       "header")
        f = S.parse_header_fixed(body)
        if f.flags:
            raise _err(ErrorCode.RESERVED_NONZERO, "header flags", off + 2, "header.flags")
        try:
            kind = Kind(f.kind)
        except ValueError:
            raise _err(ErrorCode.UNKNOWN_KIND, f"kind {f.kind}", off, "header.kind") from None
        p = 16
        # Spec 6.1 / H.4: the entries end where the layer table starts, not at the body's end,
        # so an entry_count one too high never reads a layer descriptor as an entry.
        end = len(body) - 32 * f.layer_count
        entries: list[Entry] = []
        entry_at: list[int] = []
        for i in range(f.entry_count):
            path = f"entries[{i}]"
            if p + 8 > end:
                raise _err(ErrorCode.HEADER_LAYOUT, "entries run into the layer table",
                           off + p, path)
            e = S.parse_entry_head(body, p)
            vend = p + 8 + e.length
            if vend + (-e.length % 8) > end:
                raise _err(ErrorCode.HEADER_LAYOUT, "entry value runs into the layer table",
                           off + p + 4, path + ".length")
            if e.flags & ~1:
                raise _err(ErrorCode.RESERVED_NONZERO, "entry flag bits", off + p + 2,
                           path + ".flags")
            if _nonzero(body[vend:vend + (-e.length % 8)]):
                raise _err(ErrorCode.NONZERO_PADDING, "entry padding", off + vend,
                           path + ".padding")
            if entries and e.key <= entries[-1].key:
                raise _err(ErrorCode.NON_CANONICAL, "entries must be sorted by increasing key",
                           off + p, path + ".key")
            raw = body[p + 8:vend]
            precheck_value(e.key, e.type, bool(e.flags & 1), raw, path + ".value",
                           off + p + 8, path, off + p)
            value = decode_value(e.type, raw, path + ".value", off + p + 8)
            vtype = _VALUE_TYPES.get(e.type, e.type)
            entry = Entry(e.key, vtype, value, bool(e.flags & 1))
            check_entry(entry, path, off + p)
            entries.append(entry)
            entry_at.append(off + p)
            p = vend + (-e.length % 8)
        if len(body) - p != 32 * f.layer_count:
            raise _err(ErrorCode.HEADER_LAYOUT, "header length disagrees with its layer count",
                       off + p, "layers")
        layers: list[Layer] = []
        prev = None
        for i, (index, kind_c, reserved1, window, reserved2, token_start, token_count) in (
                enumerate(_LAYER_DESCS(body[p:]))):
            lo = p + 32 * i
            if reserved1 != b"\0\0\0" or reserved2:
                raise _err(ErrorCode.RESERVED_NONZERO, "reserved layer field",
                           off + lo + (5 if reserved1 != b"\0\0\0" else 12),
                           f"layers[{i}].reserved")
            layer_kind = _LAYER_KINDS.get(kind_c)
            if layer_kind is None:
                raise _err(ErrorCode.INVALID_VALUE, f"layer kind {kind_c}", off + lo + 4,
                           f"layers[{i}].layer_kind")
            layer = Layer(index, layer_kind, token_start, token_count, window)
            # check_layer's rules, inline for the common layer; it finds and raises any fault.
            if ((prev is not None and index <= prev.index) or layer_kind is _SLIDING
                    or window or token_start + token_count > _U64_MAX):
                check_layer(i, layer, prev, off + lo)
            layers.append(layer)
            prev = layer
        check_kind_entries(kind, entries, off, entry_at)
        ctx = next((e.value for e in entries if e.key == MetaKey.CONTEXT_LENGTH), None)
        ctx_len = ctx if isinstance(ctx, int) else None
        check_kind_layers(kind, layers, f.tensor_count, ctx_len, off, off + p)
        self.kind, self.tensor_count, self.layers = kind, f.tensor_count, layers
        self.checker = TensorChecker(kind, layers, ctx_len, layers_at=off + p)
        key_id = next((e.value for e in entries if e.key == MetaKey.AUTH_KEY_ID), None)
        self.authed = key_id is not None
        if key_id is None and self.require_auth:
            raise _err(ErrorCode.AUTH_REQUIRED, "message carries no AUTH_KEY_ID", off + 16,
                       "entries")
        if isinstance(key_id, bytes):
            key = self.keys.get(key_id)
            if key is None and self.require_auth:
                raise _err(ErrorCode.UNKNOWN_KEY, "AUTH_KEY_ID names no key held", off + 16,
                           "entries")
            if key is not None:
                self.mac = new_mac(key)
        return HeaderEvent(kind, entries, layers, f.tensor_count, self.minor)

    def _start_auth(self, src: Source) -> None:
        if self.mac is not None:
            self.mac.update(src.get(0, self.prefix_len) if src.keeps_all else self.prefix)
        self.prefix = bytearray()

    # -- TENSOR (spec 7) -----------------------------------------------------------------
    def _tensor_limits(self, f: tuple[Any, ...], off: int) -> None:
        path = f"tensor[{len(self.index)}]"
        if f[_RANK] > self.lim.max_rank:
            raise _err(ErrorCode.LIMIT_RANK, "rank above max_rank", off + 12, path + ".rank")
        for name, field, rel in (("raw_length", _RAW_LENGTH, 40),
                                 ("stored_length", _STORED_LENGTH, 48)):
            if f[field] > self.lim.max_tensor_bytes:
                raise _err(ErrorCode.LIMIT_TENSOR, f"{name} above max_tensor_bytes", off + rel,
                           f"{path}.{name}")

    def _descriptor(self, sec: bytes | memoryview, f: tuple[Any, ...] | None, off: int,
                    n: int) -> Tensor:
        """Check a TENSOR descriptor (spec 7.1-7.7) and return its tensor, data not yet read.
        ``sec`` is the whole section (the body starts at 16); ``off`` is the body's offset."""
        i = len(self.index)
        if f is None:
            raise _err(ErrorCode.HEADER_LAYOUT, "tensor descriptor shorter than 64 bytes", off,
                       f"tensor[{i}]")
        (tensor_index, layer, role_c, dtype_c, codec_c, rank, layout_c, scheme, axis, group,
         scale, zero, dequant, reserved1, token_offset, raw_length, stored_length, data_crc,
         reserved2) = f
        if reserved1 != b"\0\0\0" or reserved2:
            raise _err(ErrorCode.RESERVED_NONZERO, "reserved descriptor field",
                       off + (29 if reserved1 != b"\0\0\0" else 60), f"tensor[{i}].reserved")
        if n != 64 + 8 * rank:
            raise _err(ErrorCode.HEADER_LAYOUT, "descriptor length is not 64 + 8 x rank", off,
                       f"tensor[{i}]")
        if tensor_index != i:
            raise _err(ErrorCode.TENSOR_INDEX, f"tensor_index {tensor_index}, expected {i}",
                       off, f"tensor[{i}].tensor_index")
        dtype, codec = _DTYPES.get(dtype_c), _CODECS.get(codec_c)
        role, layout = _ROLES.get(role_c), _LAYOUTS.get(layout_c)
        if dtype is None:
            raise _err(ErrorCode.UNKNOWN_DTYPE, f"dtype {dtype_c} is not registered", off + 10,
                       f"tensor[{i}].dtype")
        if codec is None:
            raise _err(ErrorCode.UNKNOWN_CODEC, f"codec {codec_c} is not registered", off + 11,
                       f"tensor[{i}].codec")
        if role is None:
            raise _err(ErrorCode.UNKNOWN_ROLE, f"role {role_c} is not registered", off + 8,
                       f"tensor[{i}].role")
        if layout is None:
            raise _err(ErrorCode.UNKNOWN_LAYOUT, f"layout {layout_c} is not registered",
                       off + 13, f"tensor[{i}].layout")
        quant = self._quant_fields(scheme, axis, group, scale, zero, dequant, off, i) if (
            scheme or axis or group or dequant or scale != NO_REF or zero != NO_REF) else None
        t = Tensor._pending(role, dtype, _SHAPES[rank].unpack_from(sec, 80),
                            None if layer == NO_REF else layer, codec, layout, token_offset,
                            quant, raw_length, stored_length, data_crc)
        assert self.checker is not None
        self.checker.check(t, off)
        return t

    @staticmethod
    def _quant_fields(scheme: int, axis: int, group: int, scale: int, zero: int, dequant: int,
                      off: int, i: int) -> Quant | None:
        path = f"tensor[{i}]"
        if scheme == 0:
            if axis or group or dequant or scale != NO_REF or zero != NO_REF:
                raise _err(ErrorCode.QUANT_PARAMS, "quant fields set without a scheme",
                           off + 14, path + ".quant_scheme")
            return None
        if scheme not in QuantScheme._value2member_map_:
            raise _err(ErrorCode.QUANT_PARAMS, f"quant scheme {scheme}", off + 14,
                       path + ".quant_scheme")
        if dequant not in Dtype._value2member_map_:
            raise _err(ErrorCode.QUANT_PARAMS, "dequant_dtype not registered", off + 28,
                       path + ".dequant_dtype")
        return Quant(QuantScheme(scheme), axis, group, None if scale == NO_REF else scale,
                     None if zero == NO_REF else zero, Dtype(dequant))

    def _data(self, src: Source) -> Event:
        assert self.pending is not None
        t, sec_at, end = self.pending
        stored_length = t.stored_length
        data_at = end + (-end % 64)
        stop = data_at + stored_length
        if stop + (-stop % 8) > U64_MAX:  # T.15: only reachable with raised limits
            raise _err(ErrorCode.LENGTH_OVERFLOW, "tensor data ends beyond 2^64 - 1", sec_at,
                       f"tensor[{len(self.index)}].stored_length")
        total = stop + (-stop % 8) - end
        i = len(self.index)
        if not self._have(src, total, f"tensor[{i}].data"):
            return NEED_DATA
        if data_at > end and int.from_bytes(src.get(end, data_at - end), "little"):
            raise _err(ErrorCode.NONZERO_PADDING, "padding before tensor data", end,
                       f"tensor[{i}].padding")
        data = src.get(data_at, stored_length)
        if self.verify and crc32c.crc32c(data) != t.data_crc:
            raise _err(ErrorCode.DATA_CHECKSUM, "tensor data CRC32C mismatch", data_at,
                       f"tensor[{i}].data")
        if stop % 8 and int.from_bytes(src.get(stop, total - (stop - end)), "little"):
            raise _err(ErrorCode.NONZERO_PADDING, "padding after tensor data", stop,
                       f"tensor[{i}].padding")
        t._attach(data if isinstance(data, memoryview) else memoryview(data), src)
        tail: bytes | memoryview | None = None  # the raw bytes' end, when not kept (keep_raw)
        if t.codec != Codec.RAW:
            try:
                if self.keep_raw:
                    t._raw = _codecs.decompress(t.stored, t.codec, t.raw_length, t.dtype,
                                                t.shape, f"tensor[{i}].data")
                else:
                    last = _verify.verify(t.stored, t.codec, t.raw_length, t.dtype, t.shape,
                                          f"tensor[{i}].data")
                    tail = bytes([last]) if last >= 0 else b""
            except AvpError as e:
                e.offset = data_at
                raise
        if t.dtype in _dtypes.PACKED and not _dtypes.packed_tail_ok(
                t.raw_bytes() if tail is None else tail, t.dtype, _prod(t.shape)):
            raise _err(ErrorCode.NONZERO_PADDING, "unused bits of the last packed byte",
                       data_at + stored_length - 1, f"tensor[{i}].data")
        self.index.append((sec_at, data_at, stored_length))
        self._consume(src, total)
        self.pending = None
        self.state = "sections"
        return TensorEvent(i, t)

    # -- INDEX and Trailer (spec 8, 15) --------------------------------------------------
    def _index(self, body: bytes | memoryview, at: int, n: int) -> None:
        count = self.tensor_count
        want = 8 + 24 * count + (32 if self.authed else 0)
        if n != want:
            raise _err(ErrorCode.HEADER_LAYOUT, f"INDEX body is {n} bytes, expected {want}",
                       at + 8, "index.length")
        if int.from_bytes(body[:8], "little") != count:
            raise _err(ErrorCode.INDEX_MISMATCH, "index tensor_count differs from the header",
                       at + 16, "index.tensor_count")
        # The tensors' own offsets are all 64-aligned, so an INDEX equal to them is valid as a
        # whole; only a differing one is walked entry by entry for the first error.
        entries = list(_INDEX_ENTRIES(body[8:8 + 24 * count]))
        if entries != self.index:
            for i, (section_offset, data_offset, stored_length) in enumerate(entries):
                eo = at + 16 + 8 + 24 * i
                if data_offset % 64:
                    raise _err(ErrorCode.MISALIGNED, "data_offset is not a multiple of 64",
                               eo + 8, f"index[{i}].data_offset")
                if (section_offset, data_offset, stored_length) != self.index[i]:
                    raise _err(ErrorCode.INDEX_MISMATCH, "index entry disagrees with the "
                               "tensor", eo, f"index[{i}]")
        if self.authed:
            self.tag = bytes(body[n - 32:n])
            if self.mac is not None:
                if not tags_equal(self.mac.digest(), self.tag):
                    raise _err(ErrorCode.AUTH_FAILED, "authentication tag does not verify",
                               at + 16 + n - 32, "index.tag")
                self.mac = None
                self.tag_ok = True
        self.index_at = at

    def _trailer(self, src: Source) -> Event:
        at = self.pos
        if not self._have(src, 16, "trailer"):
            return NEED_DATA
        t = S.parse_trailer(src.get(at, 16))
        if t.end_magic != END_MAGIC:
            raise _err(ErrorCode.BAD_TRAILER, "wrong end magic", at + 8, "trailer.end_magic")
        if t.index_offset != self.index_at:
            raise _err(ErrorCode.BAD_TRAILER, "index_offset is not the INDEX's offset", at,
                       "trailer.index_offset")
        self._consume(src, 16)
        assert self.checker is not None
        self.checker.finish(at)  # step F, then step Z (trailing bytes) last
        if src.end() > self.pos and not src.stream:
            raise _err(ErrorCode.TRAILING_BYTES, "bytes after the Trailer", self.pos,
                       "trailing")
        self.state = "done"
        return EndEvent(getattr(self, "tag_ok", False), self.tag, self.pos, self.minor,
                        self.skipped)


class _Again:
    """A stage consumed a structure that yields no event; ``step`` goes on to the next."""


_AGAIN = cast(Event, _Again())


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


_VALUE_TYPES: dict[int, ValueType] = {int(m): m for m in ValueType}
# code -> member dicts: a dict lookup is several times cheaper than calling the IntEnum.
_DTYPES = {int(m): m for m in Dtype}
_SLIDING = LayerKind.SLIDING_WINDOW
_U64_MAX = (1 << 64) - 1
_CODECS = {int(m): m for m in Codec}
_ROLES = {int(m): m for m in Role}
_LAYOUTS = {int(m): m for m in Layout}
_SHAPES = {r: struct.Struct(f"<{r}Q") for r in range(256)}
_KNOWN_SECTIONS = frozenset(int(t) for t in SectionType)
_U32 = struct.Struct("<I").unpack_from

# The hot path reads the section head and the 64-byte descriptor as plain tuples through the
# struct.Structs that _structs derives from its construct declarations (the single source of
# each layout); the field order those tuples follow is pinned here.
_SECTION_HEAD = S._C_SECTION_HEAD.struct.unpack_from
_TENSOR_FIXED = S._C_TENSOR_FIXED.struct.unpack_from
_INDEX_ENTRIES = S._C_INDEX_ENTRY.struct.iter_unpack
_LAYER_DESCS = S._C_LAYER_DESC.struct.iter_unpack
assert S._C_LAYER_DESC.tuple._fields == ("layer_index", "layer_kind", "reserved1", "window",
                                         "reserved2", "token_start", "token_count")
assert S._C_SECTION_HEAD.tuple._fields == ("type", "flags", "length")
assert S._C_INDEX_ENTRY.tuple._fields == ("section_offset", "data_offset", "stored_length")
_TENSOR_FIELDS = S._C_TENSOR_FIXED.tuple._fields
assert _TENSOR_FIELDS == (
    "tensor_index", "layer", "role", "dtype", "codec", "rank", "layout", "quant_scheme",
    "quant_axis", "group_size", "scale_tensor", "zero_point_tensor", "dequant_dtype", "reserved1",
    "token_offset", "raw_length", "stored_length", "data_crc", "reserved2")
_RANK, _RAW_LENGTH, _STORED_LENGTH = (_TENSOR_FIELDS.index(f)
                                      for f in ("rank", "raw_length", "stored_length"))


def _nonzero(b: bytes | memoryview) -> bool:
    """Whether any byte is nonzero (int.from_bytes is C-speed for these short pads)."""
    return int.from_bytes(b, "little") != 0
_LAYER_KINDS = {int(m): m for m in LayerKind}
