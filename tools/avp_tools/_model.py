"""What the lenient walker finds: byte spans, issues and the structures it could read."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Span:
    """One byte range of the message: [start, end)."""

    start: int
    end: int
    path: str  # field path, e.g. "tensor[3].shape[1]"
    section: str  # "preamble", "header", "tensor[3]", "index", "trailer"
    spec: str  # spec section that defines the bytes, e.g. "7.1"
    kind: SpanKind
    value: object = None  # decoded value for display (int, str, bytes, ...)


@dataclass(frozen=True)
class Issue:
    """One departure from the spec.  ``code`` is the error registry code (spec section 17)."""

    code: int
    offset: int | None
    path: str
    spec: str  # requirement or section, e.g. "R-6.3"
    message: str

    @property
    def name(self) -> str:
        return error_name(self.code)


@dataclass
class EntryInfo:
    offset: int
    key: int
    flags: int
    vtype: int
    length: int
    value_offset: int
    value: object  # decoded value, or raw bytes when it cannot be decoded


@dataclass
class LayerInfo:
    offset: int
    layer_index: int
    layer_kind: int
    window: int
    token_start: int
    token_count: int


@dataclass
class TensorInfo:
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


@dataclass
class IndexInfo:
    offset: int
    count: int
    entries: list[tuple[int, int, int]] = field(default_factory=list)
    auth_tag: bytes | None = None


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
    tensors: list[TensorInfo] = field(default_factory=list)
    index: IndexInfo | None = None
    trailer_offset: int | None = None
    skipped_sections: list[tuple[int, int, int]] = field(default_factory=list)  # off, type, len
    spans: list[Span] | None = None
    issues: list[Issue] = field(default_factory=list)
    issues_dropped: int = 0
    data_verified: bool = False
    complete: bool = False  # the walk reached the end of the trailer

    @property
    def valid(self) -> bool:
        return self.complete and not self.issues and self.issues_dropped == 0

    def entry(self, key: int) -> EntryInfo | None:
        for e in self.entries:
            if e.key == key:
                return e
        return None
