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
from dataclasses import dataclass
from typing import Any

import crc32c

from . import _codecs, _dtypes
from . import _structs as S
from ._auth import new_mac, tags_equal
from ._events import NEED_DATA, EndEvent, Event, HeaderEvent, Source, TensorEvent
from ._registry import (
    DTYPE_BITS,
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
from ._values import check_entry, decode_value
from .errors import AvpError
from .limits import DEFAULT_LIMITS, Limits
from .model import Entry, Layer, Quant, Tensor

_MAX_DESC = 64 + 8 * 255  # the largest tensor descriptor a u8 rank allows


@dataclass
class _Desc:
    """A parsed tensor descriptor awaiting its data (what TensorChecker sees)."""

    role: Role
    dtype: Dtype
    shape: tuple[int, ...]
    layer: int | None
    codec: Codec
    layout: Layout
    token_offset: int
    quant: Quant | None
    raw_length: int
    stored_length: int
    data_crc: int


def _err(code: ErrorCode, msg: str, off: int | None, path: str = "") -> AvpError:
    return AvpError(code, msg, offset=off, path=path)


class Core:
    def __init__(self, limits: Limits | None, verify: bool, keys: Mapping[bytes, bytes] | None,
                 require_auth: bool) -> None:
        self.lim = limits or DEFAULT_LIMITS
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
        self.pending: tuple[_Desc, int, int] | None = None
        self.prefix: list[bytes] = []  # bytes consumed before the HEADER was processed
        self.prefix_len = 0
        self.mac: hmac.HMAC | None = None
        self.authed = False
        self.tag: bytes | None = None
        self.index_at = 0

    # -- helpers ----------------------------------------------------------------------------
    def _have(self, src: Source, n: int) -> bool:
        # The incremental source refuses a structure bigger than max_buffer_bytes whether or
        # not its bytes happen to be there already, so the outcome never depends on chunking.
        src.reserve(n, self.pos)
        if src.end() - self.pos >= n:
            return True
        if src.complete:
            raise _err(ErrorCode.TRUNCATED, f"input ends inside a {n}-byte structure", self.pos)
        return False

    def _consume(self, src: Source, n: int) -> None:
        if self.kind is None and self.keys:
            # Before the HEADER names the key, bytes are kept for the tag, but only by a
            # receiver that holds keys, and within max_buffer_bytes (11.2) when incremental.
            self.prefix_len += n
            src.reserve(self.prefix_len, 0)
            self.prefix.append(bytes(src.get(self.pos, n)))
        elif self.mac is not None:
            self.mac.update(src.get(self.pos, n))
        self.pos += n
        src.discard(self.pos)

    def step(self, src: Source) -> Event:
        if self.state == "preamble":
            return self._preamble(src)
        if self.state == "sections":
            return self._section(src)
        if self.state == "data":
            return self._data(src)
        if self.state == "trailer":
            return self._trailer(src)
        raise _err(ErrorCode.TRAILING_BYTES, "bytes after the Trailer", self.pos)

    # -- preamble (spec 3) ---------------------------------------------------------------
    def _preamble(self, src: Source) -> Event:
        have = min(src.end(), 8)
        if have and bytes(src.get(0, have)) != MAGIC[:have]:
            raise _err(ErrorCode.BAD_MAGIC, "not an AVP message", 0, "preamble.magic")
        if not self._have(src, 16):
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
        return self.step(src)

    # -- sections (spec 4) ---------------------------------------------------------------
    def _section(self, src: Source) -> Event:
        at = self.pos
        if not self._have(src, 16):
            return NEED_DATA
        h = S.parse_section_head(src.get(at, 16))
        n = h.length
        total = 20 + n + (-(20 + n) % 8)
        if at + total > U64_MAX:
            raise _err(ErrorCode.LENGTH_OVERFLOW, "section length overflows u64", at + 8,
                       "section.length")
        lim = self.lim
        if h.type == SectionType.HEADER and n > lim.max_header_bytes:
            raise _err(ErrorCode.LIMIT_HEADER, f"header body of {n} bytes", at + 8)
        if h.type == SectionType.TENSOR and n > _MAX_DESC:
            raise _err(ErrorCode.HEADER_LAYOUT, "tensor descriptor longer than rank 255 allows",
                       at + 8, "section.length")
        if h.type == SectionType.INDEX and n > 8 + 24 * lim.max_tensors + 32:
            raise _err(ErrorCode.LIMIT_TENSORS, "index longer than max_tensors allows", at + 8)
        if h.type not in (1, 2, 3) and n > lim.max_header_bytes:
            raise _err(ErrorCode.LIMIT_HEADER, f"unknown section of {n} bytes", at + 8)
        if not self._have(src, total):
            return NEED_DATA
        body = src.get(at + 16, n)
        if h.type == SectionType.HEADER and n >= 16:
            self._header_limits(S.parse_header_fixed(body), at + 16)
        fixed = None
        if h.type == SectionType.TENSOR and n >= 64:
            fixed = S.parse_tensor_fixed(body)
            if (fixed.rank > lim.max_rank or fixed.raw_length > lim.max_tensor_bytes
                    or fixed.stored_length > lim.max_tensor_bytes):
                self._tensor_limits(fixed, at + 16)  # raises the right one of the three
        crc = int.from_bytes(src.get(at + 16 + n, 4), "little")
        if crc32c.crc32c(src.get(at, 16 + n)) != crc:
            raise _err(ErrorCode.SECTION_CHECKSUM, "section CRC32C mismatch", at + 16 + n,
                       "section.crc")
        known = h.type in (1, 2, 3)
        if h.flags & ~1 or (known and h.flags):
            raise _err(ErrorCode.RESERVED_NONZERO, "reserved section flag bits", at + 4,
                       "section.flags")
        if _nonzero(src.get(at + 20 + n, total - 20 - n)):
            raise _err(ErrorCode.NONZERO_PADDING, "section padding", at + 20 + n)
        if not known:
            if not h.flags & 1:
                raise _err(ErrorCode.UNKNOWN_CRITICAL, f"unknown section type {h.type}", at,
                           "section.type")
            self._consume(src, total)  # skippable: verified, then ignored
            self.skipped += 1
            return self.step(src)
        expected = (SectionType.HEADER if self.kind is None else SectionType.TENSOR
                    if len(self.index) < self.tensor_count else SectionType.INDEX)
        if h.type != expected:
            raise _err(ErrorCode.SECTION_ORDER, f"{SectionType(h.type).name} section where "
                       f"{expected.name} belongs", at, "section.type")
        if expected == SectionType.HEADER:
            ev = self._header(bytes(body), at + 16)
            self._start_auth()  # the tag covers the preamble and any earlier section too
            self._consume(src, total)
            return ev
        if expected == SectionType.TENSOR:
            desc = self._descriptor(body, fixed, at + 16, n)
            self._consume(src, total)
            self.pending = (desc, at, self.pos)
            self.state = "data"
            return self._data(src)
        self._index(body, at, n)
        self._consume(src, total)
        self.state = "trailer"
        return self.step(src)

    # -- HEADER (spec 6) -----------------------------------------------------------------
    def _header_limits(self, f: object, off: int) -> None:
        lim = self.lim
        if f.entry_count > lim.max_entries:  # type: ignore[attr-defined]
            raise _err(ErrorCode.LIMIT_ENTRIES, "too many entries", off + 4, "entry_count")
        if f.layer_count > lim.max_layers:  # type: ignore[attr-defined]
            raise _err(ErrorCode.LIMIT_LAYERS, "too many layers", off + 8, "layer_count")
        if f.tensor_count > lim.max_tensors:  # type: ignore[attr-defined]
            raise _err(ErrorCode.LIMIT_TENSORS, "too many tensors", off + 12, "tensor_count")

    def _header(self, body: bytes, off: int) -> HeaderEvent:
        if len(body) < 16:
            raise _err(ErrorCode.HEADER_LAYOUT, "header body shorter than 16 bytes", off)
        f = S.parse_header_fixed(body)
        if f.flags:
            raise _err(ErrorCode.RESERVED_NONZERO, "header flags", off + 2, "header.flags")
        try:
            kind = Kind(f.kind)
        except ValueError:
            raise _err(ErrorCode.UNKNOWN_KIND, f"kind {f.kind}", off, "header.kind") from None
        p = 16
        entries: list[Entry] = []
        for i in range(f.entry_count):
            path = f"entries[{i}]"
            if p + 8 > len(body):
                raise _err(ErrorCode.HEADER_LAYOUT, "entries run past the header", off + p, path)
            e = S.parse_entry_head(body, p)
            vend = p + 8 + e.length
            if vend + (-e.length % 8) > len(body):
                raise _err(ErrorCode.HEADER_LAYOUT, "entry value runs past the header",
                           off + p + 4, path + ".length")
            if e.flags & ~1:
                raise _err(ErrorCode.RESERVED_NONZERO, "entry flag bits", off + p + 2,
                           path + ".flags")
            if _nonzero(body[vend:vend + (-e.length % 8)]):
                raise _err(ErrorCode.NONZERO_PADDING, "entry padding", off + vend, path)
            if entries and e.key <= entries[-1].key:
                raise _err(ErrorCode.NON_CANONICAL, "entries must be sorted by increasing key",
                           off + p, path + ".key")
            value = decode_value(e.type, body[p + 8:vend], path + ".value", off + p + 8)
            vtype = ValueType(e.type) if e.type in _VALUE_TYPES else e.type
            entry = Entry(e.key, vtype, value, bool(e.flags & 1))
            check_entry(entry, path, off + p)
            entries.append(entry)
            p = vend + (-e.length % 8)
        if len(body) - p != 32 * f.layer_count:
            raise _err(ErrorCode.HEADER_LAYOUT, "header length disagrees with its layer count",
                       off + p, "layers")
        layers: list[Layer] = []
        for i in range(f.layer_count):
            lo = p + 32 * i
            d = S.parse_layer(body, lo)
            if any(d.reserved1) or d.reserved2:
                raise _err(ErrorCode.RESERVED_NONZERO, "reserved layer field", off + lo + 5,
                           f"layers[{i}]")
            if d.layer_kind not in _LAYER_KINDS:
                raise _err(ErrorCode.INVALID_VALUE, f"layer kind {d.layer_kind}", off + lo + 4,
                           f"layers[{i}].layer_kind")
            layer = Layer(d.layer_index, LayerKind(d.layer_kind), d.token_start, d.token_count,
                          d.window)
            check_layer(i, layer, layers[-1] if layers else None, off + lo)
            layers.append(layer)
        check_kind_entries(kind, entries, off)
        ctx = next((e.value for e in entries if e.key == MetaKey.CONTEXT_LENGTH), None)
        ctx_len = ctx if isinstance(ctx, int) else None
        check_kind_layers(kind, layers, f.tensor_count, ctx_len, off)
        self.kind, self.tensor_count, self.layers = kind, f.tensor_count, layers
        self.checker = TensorChecker(kind, layers, ctx_len)
        key_id = next((e.value for e in entries if e.key == MetaKey.AUTH_KEY_ID), None)
        self.authed = key_id is not None
        if key_id is None and self.require_auth:
            raise _err(ErrorCode.AUTH_REQUIRED, "message carries no AUTH_KEY_ID", off, "entries")
        if isinstance(key_id, bytes):
            key = self.keys.get(key_id)
            if key is None and self.require_auth:
                raise _err(ErrorCode.UNKNOWN_KEY, "AUTH_KEY_ID names no key held", off,
                           "entries")
            if key is not None:
                self.mac = new_mac(key)
        return HeaderEvent(kind, entries, layers, f.tensor_count, self.minor)

    def _start_auth(self) -> None:
        if self.mac is not None:
            for chunk in self.prefix:
                self.mac.update(chunk)
        self.prefix = []

    # -- TENSOR (spec 7) -----------------------------------------------------------------
    def _tensor_limits(self, f: object, off: int) -> None:
        if f.rank > self.lim.max_rank:  # type: ignore[attr-defined]
            raise _err(ErrorCode.LIMIT_RANK, "rank above max_rank", off + 12, "rank")
        for name, rel in (("raw_length", 40), ("stored_length", 48)):
            if getattr(f, name) > self.lim.max_tensor_bytes:
                raise _err(ErrorCode.LIMIT_TENSOR, f"{name} above max_tensor_bytes", off + rel,
                           name)

    def _descriptor(self, body: bytes | memoryview, f: Any, off: int, n: int) -> _Desc:
        i = len(self.index)
        path = f"tensor[{i}]"
        if f is None:
            raise _err(ErrorCode.HEADER_LAYOUT, "tensor descriptor shorter than 64 bytes", off,
                       path)
        if f.reserved1 != b"\0\0\0" or f.reserved2:
            raise _err(ErrorCode.RESERVED_NONZERO, "reserved descriptor field", off + 29, path)
        if n != 64 + 8 * f.rank:
            raise _err(ErrorCode.HEADER_LAYOUT, "descriptor length is not 64 + 8 x rank", off,
                       path)
        if f.tensor_index != i:
            raise _err(ErrorCode.TENSOR_INDEX, f"tensor_index {f.tensor_index}, expected {i}",
                       off, path + ".tensor_index")
        dtype, codec = _DTYPES.get(f.dtype), _CODECS.get(f.codec)
        role, layout = _ROLES.get(f.role), _LAYOUTS.get(f.layout)
        if dtype is None:
            raise _err(ErrorCode.UNKNOWN_DTYPE, f"dtype {f.dtype} is not registered", off + 10,
                       path + ".dtype")
        if codec is None:
            raise _err(ErrorCode.UNKNOWN_CODEC, f"codec {f.codec} is not registered", off + 11,
                       path + ".codec")
        if role is None:
            raise _err(ErrorCode.UNKNOWN_ROLE, f"role {f.role} is not registered", off + 8,
                       path + ".role")
        if layout is None:
            raise _err(ErrorCode.UNKNOWN_LAYOUT, f"layout {f.layout} is not registered",
                       off + 13, path + ".layout")
        quant = self._quant_fields(f, off, path) if (
            f.quant_scheme or f.quant_axis or f.group_size or f.dequant_dtype
            or f.scale_tensor != NO_REF or f.zero_point_tensor != NO_REF) else None
        shape = _shape_struct(f.rank).unpack_from(body, 64)
        desc = _Desc(role, dtype, shape, None if f.layer == NO_REF else f.layer, codec, layout,
                     f.token_offset, quant, f.raw_length, f.stored_length, f.data_crc)
        assert self.checker is not None
        self.checker.check(desc, off)  # type: ignore[arg-type]
        return desc

    def _quant_fields(self, f: object, off: int, path: str) -> Quant | None:
        g = f.__getattribute__
        if g("quant_scheme") == 0:
            if (g("quant_axis") or g("group_size") or g("dequant_dtype")
                    or g("scale_tensor") != NO_REF or g("zero_point_tensor") != NO_REF):
                raise _err(ErrorCode.QUANT_PARAMS, "quant fields set without a scheme",
                           off + 14, path + ".quant_scheme")
            return None
        if g("quant_scheme") not in QuantScheme._value2member_map_:
            raise _err(ErrorCode.QUANT_PARAMS, f"quant scheme {g('quant_scheme')}", off + 14,
                       path + ".quant_scheme")
        if g("dequant_dtype") not in Dtype._value2member_map_:
            raise _err(ErrorCode.QUANT_PARAMS, "dequant_dtype not registered", off + 28,
                       path + ".dequant_dtype")
        s, z = g("scale_tensor"), g("zero_point_tensor")
        return Quant(QuantScheme(g("quant_scheme")), g("quant_axis"), g("group_size"),
                     None if s == NO_REF else s, None if z == NO_REF else z,
                     Dtype(g("dequant_dtype")))

    def _data(self, src: Source) -> Event:
        assert self.pending is not None
        desc, sec_at, end = self.pending
        data_at = end + (-end % 64)
        stop = data_at + desc.stored_length
        total = stop + (-stop % 8) - end
        if not self._have(src, total):
            return NEED_DATA
        i = len(self.index)
        if data_at > end and int.from_bytes(src.get(end, data_at - end), "little"):
            raise _err(ErrorCode.NONZERO_PADDING, "padding before tensor data", end,
                       f"tensor[{i}]")
        data = src.get(data_at, desc.stored_length)
        if self.verify and crc32c.crc32c(data) != desc.data_crc:
            raise _err(ErrorCode.DATA_CHECKSUM, "tensor data CRC32C mismatch", data_at,
                       f"tensor[{i}].data")
        if stop % 8 and int.from_bytes(src.get(stop, total - (stop - end)), "little"):
            raise _err(ErrorCode.NONZERO_PADDING, "padding after tensor data", stop,
                       f"tensor[{i}]")
        if not isinstance(data, memoryview):
            data = memoryview(data)
        t = Tensor._decoded(desc.role, desc.dtype, desc.shape, data, desc.layer, desc.codec,
                            desc.layout, desc.token_offset, desc.quant, desc.raw_length,
                            desc.data_crc, src)
        if desc.codec != Codec.RAW:
            elem = max(1, DTYPE_BITS[desc.dtype] // 8)
            try:
                raw = _codecs.decompress(t.stored, desc.codec, desc.raw_length, elem,
                                         f"tensor[{i}].data")
            except AvpError as e:
                e.offset = data_at
                raise
            t._raw = memoryview(raw)
        if desc.dtype in _dtypes.PACKED and not _dtypes.packed_tail_ok(
                t.raw_bytes(), desc.dtype, _prod(desc.shape)):
            raise _err(ErrorCode.NONZERO_PADDING, "unused bits of the last packed byte",
                       data_at + desc.stored_length - 1, f"tensor[{i}].data")
        self.index.append((sec_at, data_at, desc.stored_length))
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
        for i in range(count):
            e = S.parse_index_entry(body, 8 + 24 * i)
            eo = at + 16 + 8 + 24 * i
            if e.data_offset % 64:
                raise _err(ErrorCode.MISALIGNED, "data_offset is not a multiple of 64", eo + 8,
                           f"index[{i}].data_offset")
            if (e.section_offset, e.data_offset, e.stored_length) != self.index[i]:
                raise _err(ErrorCode.INDEX_MISMATCH, "index entry disagrees with the tensor",
                           eo, f"index[{i}]")
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
        if not self._have(src, 16):
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
        if src.end() > self.pos:
            raise _err(ErrorCode.TRAILING_BYTES, "bytes after the Trailer", self.pos)
        self.state = "done"
        return EndEvent(getattr(self, "tag_ok", False), self.tag, self.pos, self.minor,
                        self.skipped)


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


_VALUE_TYPES = frozenset(int(v) for v in ValueType)
# code -> member dicts: a dict lookup is several times cheaper than calling the IntEnum.
_DTYPES = {int(m): m for m in Dtype}
_CODECS = {int(m): m for m in Codec}
_ROLES = {int(m): m for m in Role}
_LAYOUTS = {int(m): m for m in Layout}
_SHAPES = {r: struct.Struct(f"<{r}Q") for r in range(256)}


def _shape_struct(rank: int) -> struct.Struct:
    return _SHAPES[rank]


def _nonzero(b: bytes | memoryview) -> bool:
    """Whether any byte is nonzero (int.from_bytes is C-speed for these short pads)."""
    return int.from_bytes(b, "little") != 0
_LAYER_KINDS = frozenset(int(v) for v in LayerKind)
