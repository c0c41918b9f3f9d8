"""A spec-level AVP message writer independent of avp_codec, so the tools can be tested on
hand-crafted (valid and deliberately broken) bytes that the codec's encoder would refuse.

Plain module (no pytest): ``tests/tools/conftest.py`` exposes it as the ``craft`` fixture and
``dump_hostile_corpus`` builds the hostile corpus with it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import crc32c

MAGIC = b"\x89AVP\r\n\x1a\n"
END = b"\x89AVPEND\n"
NO_REF = 0xFFFFFFFF


def pad8(n: int) -> int:
    return (8 - n % 8) % 8


def pad64(n: int) -> int:
    return (64 - n % 64) % 64


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def section(typ: int, body: bytes, flags: int = 0) -> bytes:
    """One framed section: type, flags, length, body, CRC32C of all that, zero pad8."""
    head = struct.pack("<IIQ", typ, flags, len(body)) + body
    out = head + struct.pack("<I", crc32c.crc32c(head))
    return out + b"\0" * pad8(len(out))


def skippable(n: int, body: bytes = b"", typ: int = 0x7000) -> bytes:
    """``n`` unknown SKIPPABLE sections (flag bit 0), each with ``body``."""
    one = section(typ, body, flags=1)
    return one * n


@dataclass
class T:
    """One tensor: its stored data plus descriptor fields (defaults give a valid RAW tensor;
    for a compressed one, ``data`` is the stored frame and ``raw_length`` must be given)."""

    role: int
    dtype: int
    shape: tuple[int, ...]
    data: bytes
    layer: int = NO_REF
    layout: int = 0
    codec: int = 0
    token_offset: int = 0
    quant: tuple[int, int, int, int, int, int] = (0, 0, 0, NO_REF, NO_REF, 0)
    raw_length: int | None = None
    data_crc: int | None = None  # None: the right CRC32C of ``data``


@dataclass
class M:
    kind: int
    entries: list[tuple[int, int, int, bytes]] = field(default_factory=list)  # key,flags,type,val
    layers: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    tensors: list[T] = field(default_factory=list)
    before_header: bytes = b""  # raw sections written between the preamble and the HEADER
    before_index: bytes = b""  # raw sections written between the last tensor and the INDEX

    def header_body(self) -> bytes:
        parts = [struct.pack("<HHIII", self.kind, 0, len(self.entries), len(self.layers),
                             len(self.tensors))]
        for key, flags, vtype, val in self.entries:
            parts.append(struct.pack("<HBBI", key, flags, vtype, len(val)) + val
                         + b"\0" * pad8(len(val)))
        parts += [struct.pack("<IB3xI4xQQ", *layer) for layer in self.layers]
        return b"".join(parts)

    def build(self) -> bytes:
        out = bytearray(MAGIC + struct.pack("<HHI", 1, 0, 0))
        out += self.before_header
        out += section(1, self.header_body())
        index = []
        for i, t in enumerate(self.tensors):
            sec_off = len(out)
            out += section(2, descriptor(i, t))
            out += b"\0" * pad64(len(out))
            data_off = len(out)
            out += t.data + b"\0" * pad8(len(t.data))
            index.append((sec_off, data_off, len(t.data)))
        out += self.before_index
        idx_off = len(out)
        ibody = struct.pack("<Q", len(index)) + b"".join(struct.pack("<QQQ", *e) for e in index)
        out += section(3, ibody)
        out += struct.pack("<Q", idx_off) + END
        return bytes(out)


def descriptor(i: int, t: T) -> bytes:
    q = t.quant
    raw_len = t.raw_length if t.raw_length is not None else len(t.data)
    if t.codec and t.raw_length is None:
        raise ValueError("a compressed tensor needs its raw_length")
    crc = crc32c.crc32c(t.data) if t.data_crc is None else t.data_crc
    desc = struct.pack("<IIHBBBBBBIIIB3xQQQI4x", i, t.layer, t.role, t.dtype, t.codec,
                       len(t.shape), t.layout, q[0], q[1], q[2], q[3], q[4], q[5],
                       t.token_offset, raw_len, len(t.data), crc)
    return desc + b"".join(struct.pack("<Q", d) for d in t.shape)


def u32_list(values: Iterable[int]) -> bytes:
    import numpy as np

    return np.fromiter(values, dtype="<u4").tobytes()


# Registry codes used by the fixtures (spec section 17 tables; kept literal on purpose: the
# writer must not depend on the codec it tests).
KIND = {"KV_CACHE": 1, "HIDDEN_STATE": 2, "TEXT": 3, "HELLO": 16, "ACCEPT": 17, "ERROR": 18}
ROLE = {"KEY": 1, "VALUE": 2, "LATENT_KV": 3, "CONV_STATE": 4, "SSM_STATE": 5,
        "HIDDEN_STATE": 16, "TOKEN_IDS": 17, "POSITIONS": 18, "ATTENTION_MASK": 19,
        "QUANT_SCALE": 32, "QUANT_ZERO_POINT": 33}
DTYPE = {"float32": 1, "float16": 2, "bfloat16": 3, "float8_e4m3fn": 4, "int8": 6, "uint8": 7,
         "int4": 8, "uint4": 9, "uint2": 10, "int32": 11, "int64": 12}
LAYOUT = {"NONE": 0, "BHTD": 1, "BTHD": 2, "BTD": 3, "BT": 4}
VTYPE = {"u64": 1, "i64": 2, "f64": 3, "utf8": 4, "bytes": 5, "u32_list": 6}
CODEC = {"raw": 0, "zstd": 1, "byteplane_zstd": 2}
LAYER_KIND = {"FULL_ATTENTION": 1, "SLIDING_WINDOW": 2, "RECURRENT": 3}
KEY = {"MODEL_ID": 1, "CONTEXT_LENGTH": 5, "HIDDEN_SOURCE": 16, "TEXT": 32, "AGENT_NAME": 48,
       "VERSIONS": 49, "CAP_DTYPES": 50, "CAP_CODECS": 51, "CAP_MODES": 52,
       "MAX_MESSAGE_BYTES": 53, "VOCABULARY": 56, "NONCE": 58, "QUANT_POLICY": 80}
