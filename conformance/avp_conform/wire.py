"""An independent, deliberately permissive AVP byte writer used to build the vector suite.

It writes exactly the layout of spec sections 3-8 from *raw field values*, and computes the derived
fields (lengths, counts, CRCs, index, trailer, auth tag) unless a field is overridden. That lets
the generator produce both valid messages and messages with exactly one fault. It shares no code
with ``avp_codec`` on purpose: valid vectors are then checked by two implementations.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

MAGIC = b"\x89AVP\r\n\x1a\n"
END_MAGIC = b"\x89AVPEND\n"
NO_REF = 0xFFFFFFFF
SEC_HEADER, SEC_TENSOR, SEC_INDEX = 1, 2, 3

# Bits per element, spec 7.2 (code -> bits).
DTYPE_BITS = {1: 32, 2: 16, 3: 16, 4: 8, 5: 8, 6: 8, 7: 8, 8: 4, 9: 4, 10: 2, 11: 32, 12: 64}


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """Table-driven CRC32C; slow but independent (the vectors are small)."""
    try:  # the compiled package is ~1000x faster; both compute the same function
        import crc32c as _fast

        return int(_fast.crc32c(data))
    except ImportError:  # pragma: no cover
        c = 0xFFFFFFFF
        for b in data:
            c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
        return c ^ 0xFFFFFFFF


def pad8(n: int) -> int:
    return (8 - n % 8) % 8


def pad64(n: int) -> int:
    return (64 - n % 64) % 64


def raw_length(shape: tuple[int, ...], dtype: int) -> int:
    count = 1
    for d in shape:
        count *= d
    return (count * DTYPE_BITS.get(dtype, 8) + 7) // 8


@dataclass
class WEntry:
    key: int
    type: int
    value: bytes
    critical: bool = False
    flags: int | None = None  # overrides the flags byte (reserved bits)
    length: int | None = None  # overrides the value length field
    pad_byte: int = 0


@dataclass
class WLayer:
    index: int
    kind: int
    token_start: int = 0
    token_count: int = 0
    window: int = 0
    reserved_a: bytes = b"\0\0\0"
    reserved_b: int = 0


@dataclass
class WTensor:
    role: int
    dtype: int
    shape: tuple[int, ...]
    data: bytes  # the stored bytes
    layer: int = NO_REF
    codec: int = 0
    layout: int = 0
    quant_scheme: int = 0
    quant_axis: int = 0
    group_size: int = 0
    scale_tensor: int = NO_REF
    zero_point_tensor: int = NO_REF
    dequant_dtype: int = 0
    token_offset: int = 0
    raw_len: int | None = None  # default: computed from shape x dtype
    stored_len: int | None = None  # default: len(data)
    data_crc: int | None = None
    tensor_index: int | None = None
    rank: int | None = None
    reserved_a: bytes = b"\0\0\0"
    reserved_b: int = 0
    section_flags: int = 0
    pre_pad_byte: int = 0
    post_pad_byte: int = 0


@dataclass
class WMessage:
    kind: int
    entries: list[WEntry] = field(default_factory=list)
    layers: list[WLayer] = field(default_factory=list)
    tensors: list[WTensor] = field(default_factory=list)
    major: int = 1
    minor: int = 0
    preamble_reserved: int = 0
    header_flags: int = 0
    header_section_flags: int = 0
    entry_count: int | None = None
    layer_count: int | None = None
    tensor_count: int | None = None
    index_tensor_count: int | None = None
    auth_key: bytes | None = None
    index_extra: bytes = b""  # appended to the INDEX body (before the tag): a length fault
    # (position, type, flags, body): extra sections written before tensor `position` (a position
    # equal to the tensor count puts them just before the INDEX; -1 before the HEADER).
    extra_sections: list[tuple[int, int, int, bytes]] = field(default_factory=list)


@dataclass
class Built:
    data: bytes
    offsets: dict[str, int]  # structure name -> absolute offset, for faults and hex windows


def section(stype: int, body: bytes, flags: int = 0) -> bytes:
    head = struct.pack("<IIQ", stype, flags, len(body)) + body
    out = head + struct.pack("<I", crc32c(head))
    return out + b"\0" * pad8(len(out))


def entry_bytes(e: WEntry) -> bytes:
    flags = e.flags if e.flags is not None else int(e.critical)
    length = e.length if e.length is not None else len(e.value)
    return (struct.pack("<HBBI", e.key, flags, e.type, length) + e.value
            + bytes([e.pad_byte]) * pad8(len(e.value)))


def layer_bytes(layer: WLayer) -> bytes:
    return (struct.pack("<IB", layer.index, layer.kind) + layer.reserved_a
            + struct.pack("<IIQQ", layer.window, layer.reserved_b, layer.token_start,
                          layer.token_count))


def header_body(m: WMessage) -> bytes:
    counts = struct.pack(
        "<HHIII", m.kind, m.header_flags,
        len(m.entries) if m.entry_count is None else m.entry_count,
        len(m.layers) if m.layer_count is None else m.layer_count,
        len(m.tensors) if m.tensor_count is None else m.tensor_count,
    )
    return (counts + b"".join(entry_bytes(e) for e in m.entries)
            + b"".join(layer_bytes(la) for la in m.layers))


def descriptor(t: WTensor, ordinal: int) -> bytes:
    stored = t.stored_len if t.stored_len is not None else len(t.data)
    raw = t.raw_len if t.raw_len is not None else raw_length(t.shape, t.dtype)
    crc = t.data_crc if t.data_crc is not None else crc32c(t.data)
    rank = t.rank if t.rank is not None else len(t.shape)
    return (
        struct.pack(
            "<IIHBBBBBBIIIB",
            ordinal if t.tensor_index is None else t.tensor_index, t.layer, t.role, t.dtype,
            t.codec, rank, t.layout, t.quant_scheme, t.quant_axis, t.group_size, t.scale_tensor,
            t.zero_point_tensor, t.dequant_dtype,
        )
        + t.reserved_a
        + struct.pack("<QQQII", t.token_offset, raw, stored, crc, t.reserved_b)
        + b"".join(struct.pack("<Q", d) for d in t.shape)
    )


def build(m: WMessage) -> Built:
    out = bytearray(MAGIC + struct.pack("<HHI", m.major, m.minor, m.preamble_reserved))
    offsets: dict[str, int] = {"preamble": 0, "header": len(out)}
    extras_before_header = [x for x in m.extra_sections if x[0] == -1]
    for n, (_, stype, flags, body) in enumerate(extras_before_header):
        offsets[f"pre[{n}]"] = len(out)
        out += section(stype, body, flags)
    offsets["header"] = len(out)
    out += section(SEC_HEADER, header_body(m), m.header_section_flags)
    at = offsets["header"] + 32  # section framing (16) + fixed header fields (16)
    for i, e in enumerate(m.entries):
        offsets[f"entry[{i}]"] = at
        at += len(entry_bytes(e))
    for i in range(len(m.layers)):
        offsets[f"layer[{i}]"] = at + 32 * i
    index_entries = []

    def extras(position: int) -> None:
        for n, (pos, stype, flags, body) in enumerate(m.extra_sections):
            if pos == position:
                offsets[f"extra[{n}]"] = len(out)
                out.extend(section(stype, body, flags))

    for i, t in enumerate(m.tensors):
        extras(i)
        offsets[f"tensor[{i}]"] = section_offset = len(out)
        sec = section(SEC_TENSOR, descriptor(t, i), t.section_flags)
        out += sec
        out += bytes([t.pre_pad_byte]) * pad64(len(out))
        offsets[f"tensor[{i}].data"] = data_offset = len(out)
        out += t.data + bytes([t.post_pad_byte]) * pad8(len(t.data))
        index_entries.append((section_offset, data_offset, len(t.data)))
    extras(len(m.tensors))
    offsets["index"] = index_offset = len(out)
    count = len(m.tensors) if m.index_tensor_count is None else m.index_tensor_count
    body = struct.pack("<Q", count) + b"".join(struct.pack("<QQQ", *e) for e in index_entries)
    body += m.index_extra
    if m.auth_key is not None:
        body += hmac.new(m.auth_key, bytes(out), hashlib.sha256).digest()
    out += section(SEC_INDEX, body)
    offsets["trailer"] = len(out)
    out += struct.pack("<Q", index_offset) + END_MAGIC
    return Built(bytes(out), offsets)


def resection(buf: bytearray, offset: int) -> None:
    """Recompute the CRC of the section at ``offset`` after its bytes were patched."""
    (length,) = struct.unpack_from("<Q", buf, offset + 8)
    crc = crc32c(bytes(buf[offset:offset + 16 + length]))
    struct.pack_into("<I", buf, offset + 16 + length, crc)


def u32_list(values: list[int]) -> bytes:
    return b"".join(struct.pack("<I", v) for v in values)
