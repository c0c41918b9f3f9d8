"""What the lenient walker finds: byte spans, issues and the structures it could read."""

from __future__ import annotations

import enum
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from ._spec import error_name


class SpanKind(enum.Enum):
    FIELD = "field"
    PADDING = "padding"
    CRC = "crc"
    VALUE = "value"  # a metadata entry's value bytes
    DATA = "data"  # tensor data (never read unless asked)
    AUTH_TAG = "auth_tag"
    SKIPPED = "skipped"  # body of an unknown skippable section
    UNPARSED = "unparsed"  # bytes the walker could not attribute (broken input)


@dataclass(frozen=True, slots=True)
class Span:
    """One byte range of the message: [start, end)."""

    start: int
    end: int
    path: str  # field path, e.g. "tensor[3].shape[1]"
    section: str  # "preamble", "header", "tensor[3]", "index", "trailer"
    spec: str  # spec section that defines the bytes, e.g. "7.1"
    kind: SpanKind
    value: object = None  # decoded value for display (int, str, bytes, Preview, ...)


@dataclass(frozen=True, slots=True)
class Issue:
    """One departure from the spec.  ``code`` is the error registry code (spec section 17);
    ``offset`` and ``path`` are those ``avp_codec.decode`` reports for the same fault (the first
    issue of a walk is exactly the decoder's error; later ones follow the same conventions)."""

    code: int
    offset: int | None
    path: str
    spec: str  # requirement or section, e.g. "R-6.3"
    message: str

    @property
    def name(self) -> str:
        return error_name(self.code)


@dataclass(frozen=True, slots=True)
class Preview:
    """A metadata value too large to keep decoded: its type, size and a decoded prefix."""

    vtype: int
    length: int  # bytes of the value
    count: int  # elements (u32_list), characters (utf8, when well-formed) or bytes
    head: object  # a decoded prefix: str, tuple of ints or bytes

    def __str__(self) -> str:
        if isinstance(self.head, tuple):
            return "[" + ", ".join(map(str, self.head)) + f", ... ({self.count:,} values)]"
        if isinstance(self.head, str):
            return repr(self.head)[:-1] + f"...' ({self.count:,} chars)"
        assert isinstance(self.head, (bytes, bytearray))
        return f"{bytes(self.head).hex()}... ({self.length:,} bytes)"


@dataclass(slots=True)
class EntryInfo:
    offset: int
    key: int
    flags: int
    vtype: int
    length: int
    value_offset: int
    # the decoded value; raw bytes when it cannot be decoded; a Preview for a value of more
    # than FULL_VALUE_BYTES (the bytes stay in the input and are read again when needed)
    value: object


@dataclass(slots=True)
class LayerInfo:
    offset: int
    layer_index: int
    layer_kind: int
    window: int
    token_start: int
    token_count: int


@dataclass(slots=True)
class TensorInfo:
    """One tensor section as the walker read it (a snapshot: ``Walk.tensors`` keeps them in
    columns and makes one of these on each access)."""

    ordinal: int
    section_offset: int
    tensor_index: int
    layer: int
    role: int
    dtype: int
    codec: int
    rank: int
    layout: int
    quant_scheme: int
    quant_axis: int
    group_size: int
    scale_tensor: int
    zero_point_tensor: int
    dequant_dtype: int
    token_offset: int
    raw_length: int
    stored_length: int
    data_crc: int
    shape: tuple[int, ...]
    data_offset: int = -1  # -1 until placed
    end_offset: int = -1  # offset of the next section
    crc_status: str = "unchecked"  # "ok", "BAD", "unchecked", "missing"
    # verified data present, its zstd frame and padding good (the CRC is crc_status)
    data_ok: bool = False


_CRC_STATUS = ("unchecked", "ok", "BAD", "missing")
_COLUMNS = ("section_offset", "tensor_index", "layer", "role", "dtype", "codec", "rank", "layout",
            "quant_scheme", "quant_axis", "group_size", "scale_tensor", "zero_point_tensor",
            "dequant_dtype", "token_offset", "raw_length", "stored_length", "data_crc",
            "data_offset", "end_offset", "crc_status", "data_ok")
_NONE = (1 << 64) - 1  # data_offset / end_offset not known yet (-1 in a TensorInfo)


class TensorTable(Sequence[TensorInfo]):
    """The tensor sections of a walk, one unsigned 64-bit column per field (about 200 bytes per
    tensor instead of ~800 for objects), so a message with 10^5 tensors stays small. Indexing
    and iteration give TensorInfo snapshots; the walker updates fields with ``update``."""

    def __init__(self) -> None:
        self._cols = {name: array("Q") for name in _COLUMNS}
        self._shape_at = array("Q", [0])
        self._shapes = array("Q")

    def append(self, t: TensorInfo) -> None:
        cols = self._cols
        for name in _COLUMNS[:18]:
            cols[name].append(getattr(t, name))
        cols["data_offset"].append(_NONE if t.data_offset < 0 else t.data_offset)
        cols["end_offset"].append(_NONE if t.end_offset < 0 else t.end_offset)
        cols["crc_status"].append(_CRC_STATUS.index(t.crc_status))
        cols["data_ok"].append(int(t.data_ok))
        self._shapes.extend(t.shape)
        self._shape_at.append(len(self._shapes))

    def update(self, i: int, **fields: object) -> None:
        for name, value in fields.items():
            if name == "crc_status":
                value = _CRC_STATUS.index(str(value))
            elif name in ("data_offset", "end_offset") and value == -1:
                value = _NONE
            self._cols[name][i] = int(value)  # type: ignore[call-overload]

    def __len__(self) -> int:
        return len(self._shape_at) - 1

    @overload
    def __getitem__(self, i: int) -> TensorInfo: ...

    @overload
    def __getitem__(self, i: slice) -> list[TensorInfo]: ...

    def __getitem__(self, i: int | slice) -> TensorInfo | list[TensorInfo]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("tensor index out of range")
        c = self._cols
        v = [c[name][i] for name in _COLUMNS]
        shape = tuple(self._shapes[self._shape_at[i]:self._shape_at[i + 1]])
        return TensorInfo(i, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10],
                          v[11], v[12], v[13], v[14], v[15], v[16], v[17], shape,
                          -1 if v[18] == _NONE else v[18], -1 if v[19] == _NONE else v[19],
                          _CRC_STATUS[v[20]], bool(v[21]))

    def __iter__(self) -> Iterator[TensorInfo]:
        for i in range(len(self)):
            yield self[i]

    def column(self, name: str) -> array[int]:
        """One field of every tensor (read-only use), e.g. ``column("stored_length")``."""
        return self._cols[name]


@dataclass
class IndexInfo:
    offset: int
    count: int
    flat: array[int] = field(default_factory=lambda: array("Q"))  # entry after entry
    auth_tag: bytes | None = None

    @property
    def entries(self) -> list[tuple[int, int, int]]:
        """(section_offset, data_offset, stored_length) of each entry the walker read."""
        f = self.flat
        return [(f[i], f[i + 1], f[i + 2]) for i in range(0, len(f), 3)]


@dataclass
class Walk:
    """Everything the walker learned about one input."""

    size: int
    major: int | None = None
    minor: int | None = None
    kind: int | None = None
    header_offset: int | None = None
    entry_count: int | None = None
    layer_count: int | None = None
    tensor_count: int | None = None
    entries: list[EntryInfo] = field(default_factory=list)
    layers: list[LayerInfo] = field(default_factory=list)
    tensors: TensorTable = field(default_factory=TensorTable)
    index: IndexInfo | None = None
    trailer_offset: int | None = None
    skipped_sections: list[tuple[int, int, int]] = field(default_factory=list)  # off, type, len
    skipped_count: int = 0  # all of them (the list keeps the first SKIPPED_KEPT)
    spans: list[Span] | None = None
    issues: list[Issue] = field(default_factory=list)
    issues_dropped: int = 0
    data_verified: bool = False
    complete: bool = False  # the walk reached the end of the trailer
    _by_key: dict[int, EntryInfo] = field(default_factory=dict, repr=False)

    @property
    def valid(self) -> bool:
        return self.complete and not self.issues and self.issues_dropped == 0

    @property
    def first(self) -> Issue | None:
        """The first issue: the error ``avp_codec.decode`` raises for these bytes."""
        return self.issues[0] if self.issues else None

    def entry(self, key: int) -> EntryInfo | None:
        """The first entry with ``key`` (constant time: the walker indexes them once)."""
        return self._by_key.get(key)
