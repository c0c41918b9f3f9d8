"""One construct Struct per fixed-size spec structure (sections 3, 4.1, 6.1, 6.2, 6.4, 7.1, 8).

The Structs are the single declaration of every byte layout: the encoder builds with them and
the decoder parses with them (compiled, so a per-tensor descriptor costs microseconds).
Variable-length parts (entry values, shapes, index entries, padding) are handled by the callers,
which check every declared length against the input and the limits *before* touching it.
construct's exceptions never escape: parse helpers get exactly the right number of bytes, so a
parse cannot fail, and build helpers are only called with range-checked values.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any

from construct import (
    Bytes,
    Const,
    FormatField,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Padding,
    Renamed,
    Struct,
)

from ._registry import END_MAGIC, MAGIC

# Section 3: the 16-byte preamble. The magic is parsed as plain bytes (not Const) so that the
# decoder can report BAD_MAGIC itself instead of catching a construct exception.
PREAMBLE = Struct(
    "magic" / Bytes(8),  # 89 41 56 50 0D 0A 1A 0A
    "major" / Int16ul,  # format major version
    "minor" / Int16ul,  # format minor version
    "reserved" / Int32ul,  # zero
)

# Section 4.1: the 16 bytes that open every section; body, crc and pad8 follow.
SECTION_HEAD = Struct(
    "type" / Int32ul,  # registry 4.2
    "flags" / Int32ul,  # bit 0 SKIPPABLE, bits 1-31 reserved
    "length" / Int64ul,  # body length n
)

# Section 6.1: the fixed 16-byte start of the HEADER body.
HEADER_FIXED = Struct(
    "kind" / Int16ul,
    "flags" / Int16ul,  # reserved
    "entry_count" / Int32ul,
    "layer_count" / Int32ul,
    "tensor_count" / Int32ul,
)

# Section 6.2: the 8-byte head of a metadata entry; value and pad8(value) follow.
ENTRY_HEAD = Struct(
    "key" / Int16ul,
    "flags" / Int8ul,  # bit 0 CRITICAL, bits 1-7 reserved
    "type" / Int8ul,  # value type, section 6.3
    "length" / Int32ul,  # value byte length v
)

# Section 6.4: one 32-byte layer descriptor.
LAYER_DESC = Struct(
    "layer_index" / Int32ul,
    "layer_kind" / Int8ul,
    "reserved1" / Bytes(3),
    "window" / Int32ul,
    "reserved2" / Int32ul,
    "token_start" / Int64ul,
    "token_count" / Int64ul,
)

# Section 7.1: the fixed 64-byte start of a tensor descriptor; the shape (u64 x rank) follows.
TENSOR_FIXED = Struct(
    "tensor_index" / Int32ul,
    "layer" / Int32ul,  # 0xFFFFFFFF = message-level
    "role" / Int16ul,
    "dtype" / Int8ul,
    "codec" / Int8ul,
    "rank" / Int8ul,
    "layout" / Int8ul,
    "quant_scheme" / Int8ul,
    "quant_axis" / Int8ul,
    "group_size" / Int32ul,
    "scale_tensor" / Int32ul,
    "zero_point_tensor" / Int32ul,
    "dequant_dtype" / Int8ul,
    "reserved1" / Bytes(3),
    "token_offset" / Int64ul,
    "raw_length" / Int64ul,
    "stored_length" / Int64ul,
    "data_crc" / Int32ul,
    "reserved2" / Int32ul,
)

# Section 8: one 24-byte index entry, and the fixed 8-byte start of the INDEX body.
INDEX_ENTRY = Struct(
    "section_offset" / Int64ul,
    "data_offset" / Int64ul,
    "stored_length" / Int64ul,
)
INDEX_FIXED = Struct("tensor_count" / Int64ul)

# Section 8: the 16-byte trailer.
TRAILER = Struct(
    "index_offset" / Int64ul,
    "end_magic" / Bytes(8),  # 89 41 56 50 45 4E 44 0A
)

# The encoder-side preamble pins the magic with Const (the construct gallery idiom): an encoder
# cannot emit anything else.
PREAMBLE_OUT = Struct(
    "magic" / Const(MAGIC),
    "major" / Int16ul,
    "minor" / Int16ul,
    Padding(4),
)
TRAILER_OUT = Struct("index_offset" / Int64ul, "end_magic" / Const(END_MAGIC))



class _Unpacker:
    """The parse side of a fixed-size Struct, derived from its declaration.

    construct's compiled parser costs ~13 us per 64-byte descriptor; a message with thousands of
    tensors (and the < 1 ms unverified-decode target) wants less. The Struct stays the single
    source of truth: this walks its fields once at import and builds the equivalent
    ``struct.Struct`` format, and tests/codec/test_structs.py checks both parse alike.
    """

    def __init__(self, decl: Struct) -> None:
        fmt = "<"
        names = []
        for sc in decl.subcons:
            if not isinstance(sc, Renamed):
                raise TypeError("unnamed field in a parse Struct")
            inner = sc.subcon
            if isinstance(inner, FormatField):
                fmt += inner.fmtstr[1:]
            elif isinstance(inner, Bytes) and isinstance(inner.length, int):
                fmt += f"{inner.length}s"
            else:
                raise TypeError(f"field {sc.name} has no fixed struct equivalent")
            names.append(sc.name)
        self.struct = struct.Struct(fmt)
        assert self.struct.size == decl.sizeof()
        self.tuple: Any = namedtuple(f"Parsed{len(names)}", names)  # type: ignore[misc]

        self._unpack = self.struct.unpack_from

    def __call__(self, b: bytes | memoryview, offset: int = 0) -> Any:
        return _tuple_new(self.tuple, self._unpack(b, offset))


_tuple_new = tuple.__new__  # namedtuple._make without its Python-level length check


_C_PREAMBLE = _Unpacker(PREAMBLE)
_C_SECTION_HEAD = _Unpacker(SECTION_HEAD)
_C_HEADER_FIXED = _Unpacker(HEADER_FIXED)
_C_ENTRY_HEAD = _Unpacker(ENTRY_HEAD)
_C_LAYER_DESC = _Unpacker(LAYER_DESC)
_C_TENSOR_FIXED = _Unpacker(TENSOR_FIXED)
_C_INDEX_ENTRY = _Unpacker(INDEX_ENTRY)
_C_TRAILER = _Unpacker(TRAILER)
_B_SECTION_HEAD = SECTION_HEAD.compile()
_B_HEADER_FIXED = HEADER_FIXED.compile()
_B_ENTRY_HEAD = ENTRY_HEAD.compile()
_B_LAYER_DESC = LAYER_DESC.compile()
_B_TENSOR_FIXED = TENSOR_FIXED.compile()
_B_INDEX_ENTRY = INDEX_ENTRY.compile()

SIZES = {
    "preamble": PREAMBLE.sizeof(), "section_head": SECTION_HEAD.sizeof(),
    "header_fixed": HEADER_FIXED.sizeof(), "entry_head": ENTRY_HEAD.sizeof(),
    "layer_desc": LAYER_DESC.sizeof(), "tensor_fixed": TENSOR_FIXED.sizeof(),
    "index_entry": INDEX_ENTRY.sizeof(), "trailer": TRAILER.sizeof(),
}
assert SIZES == {"preamble": 16, "section_head": 16, "header_fixed": 16, "entry_head": 8,
                 "layer_desc": 32, "tensor_fixed": 64, "index_entry": 24, "trailer": 16}


def parse_preamble(b: bytes | memoryview, offset: int = 0) -> Any:
    return _C_PREAMBLE(b, offset)


def parse_section_head(b: bytes | memoryview, offset: int = 0) -> Any:
    return _C_SECTION_HEAD(b, offset)


def parse_header_fixed(b: bytes | memoryview, offset: int = 0) -> Any:
    return _C_HEADER_FIXED(b, offset)


def parse_entry_head(b: bytes | memoryview, offset: int = 0) -> Any:
    return _C_ENTRY_HEAD(b, offset)


def parse_layer(b: bytes | memoryview, offset: int = 0) -> Any:
    return _C_LAYER_DESC(b, offset)


def parse_tensor_fixed(b: bytes | memoryview, offset: int = 0) -> Any:
    return _C_TENSOR_FIXED(b, offset)


def parse_index_entry(b: bytes | memoryview, offset: int = 0) -> Any:
    return _C_INDEX_ENTRY(b, offset)


def parse_trailer(b: bytes | memoryview, offset: int = 0) -> Any:
    return _C_TRAILER(b, offset)


def build_preamble(major: int, minor: int) -> bytes:
    return bytes(PREAMBLE_OUT.build({"major": major, "minor": minor}))


def build_section_head(type_: int, flags: int, length: int) -> bytes:
    return bytes(_B_SECTION_HEAD.build({"type": type_, "flags": flags, "length": length}))


def build_header_fixed(kind: int, entry_count: int, layer_count: int, tensor_count: int) -> bytes:
    return bytes(_B_HEADER_FIXED.build({"kind": kind, "flags": 0, "entry_count": entry_count,
                                        "layer_count": layer_count,
                                        "tensor_count": tensor_count}))


def build_entry_head(key: int, flags: int, type_: int, length: int) -> bytes:
    return bytes(_B_ENTRY_HEAD.build({"key": key, "flags": flags, "type": type_,
                                      "length": length}))


def build_layer(layer_index: int, layer_kind: int, window: int, token_start: int,
                token_count: int) -> bytes:
    return bytes(_B_LAYER_DESC.build({
        "layer_index": layer_index, "layer_kind": layer_kind, "reserved1": b"\0\0\0",
        "window": window, "reserved2": 0, "token_start": token_start,
        "token_count": token_count}))


def build_tensor_fixed(fields: dict[str, int]) -> bytes:
    d: dict[str, object] = dict(fields)
    d["reserved1"] = b"\0\0\0"
    d["reserved2"] = 0
    return bytes(_B_TENSOR_FIXED.build(d))


def build_index_entry(section_offset: int, data_offset: int, stored_length: int) -> bytes:
    return bytes(_B_INDEX_ENTRY.build({"section_offset": section_offset,
                                       "data_offset": data_offset,
                                       "stored_length": stored_length}))


def build_index_fixed(count: int) -> bytes:
    return bytes(INDEX_FIXED.build({"tensor_count": count}))


def build_trailer(index_offset: int) -> bytes:
    return bytes(TRAILER_OUT.build({"index_offset": index_offset}))
