"""Spec tables avp-dump needs, as plain dicts keyed by registry code.

The walker and the views describe files the codec refuses (unregistered codes included), so they
look codes up by raw value; every value comes from avp_codec (the one copy the codec's own drift
test keeps equal to spec/avp-spec.md and spec/registries/). The rules themselves are the codec's
functions (_walk_header, _walk_tensor); nothing here decides validity.
"""

from __future__ import annotations

from dataclasses import dataclass

import avp_codec as avp

# avp_codec keeps the per-entry facts of its registries (roles' layouts, keys' types, kinds'
# keys) in a private module; the walker reads them from there so there is one copy of every
# registry in the project.  spec/DECISIONS.md asks for them to become public.
from avp_codec import _registry as R

MAGIC = R.MAGIC
END_MAGIC = R.END_MAGIC
MAJOR = R.FORMAT_MAJOR
NO_REF = R.NO_REF
U64_MAX = (1 << 64) - 1

PREAMBLE_SIZE = 16
FRAME_SIZE = 16  # section type, flags, length
TRAILER_SIZE = 16
DESCRIPTOR_FIXED = 64
LAYER_SIZE = 32
INDEX_ENTRY_SIZE = 24
AUTH_TAG_SIZE = 32

SECTION_HEADER = int(avp.SectionType.HEADER)
SECTION_TENSOR = int(avp.SectionType.TENSOR)
SECTION_INDEX = int(avp.SectionType.INDEX)
SECTION_NAMES = {int(c): c.name for c in avp.SectionType}

_ERROR_NAMES: dict[int, str] = {int(c): c.name for c in avp.ErrorCode}
ERR = {name: code for code, name in _ERROR_NAMES.items()}
# The requirement each error code stands for (spec section 17's table, first column), shown
# next to errors raised by the codec's own checks, which carry no requirement id.
SPEC_OF = {
    "BAD_MAGIC": "R-3.1", "UNSUPPORTED_VERSION": "R-3.2", "TRUNCATED": "R-2.1",
    "TRAILING_BYTES": "R-2.1", "RESERVED_NONZERO": "R-1.2", "NONZERO_PADDING": "R-1.3",
    "SECTION_ORDER": "R-4.3", "UNKNOWN_CRITICAL": "R-4.3", "LENGTH_OVERFLOW": "R-1.1",
    "HEADER_LAYOUT": "R-6.1", "BAD_TRAILER": "R-8.2", "INDEX_MISMATCH": "R-8.1",
    "MISALIGNED": "R-8.1", "SECTION_CHECKSUM": "R-4.1", "DATA_CHECKSUM": "R-7.4",
    "UNKNOWN_KIND": "R-6.2", "NON_CANONICAL": "R-6.3", "ENTRY_TYPE": "R-6.4",
    "INVALID_VALUE": "R-6.4", "MISSING_ENTRY": "R-6.6", "ENTRY_NOT_ALLOWED": "R-6.6",
    "KIND_CONSTRAINT": "10", "UNKNOWN_DTYPE": "R-7.5", "UNKNOWN_CODEC": "R-7.5",
    "UNKNOWN_ROLE": "R-7.5", "UNKNOWN_LAYOUT": "R-7.5", "SIZE_MISMATCH": "R-7.2",
    "TENSOR_INDEX": "7.1", "BAD_REFERENCE": "R-7.6", "ROLE_SHAPE": "R-7.5",
    "TOKEN_RANGE": "R-7.7", "CODEC_DTYPE": "R-7.9", "DECOMPRESSION_FAILED": "R-7.8",
    "DECOMPRESSED_SIZE": "R-7.8", "QUANT_PARAMS": "R-12.1", "LIMIT_MESSAGE": "R-16.1",
    "LIMIT_HEADER": "R-16.1", "LIMIT_ENTRIES": "R-16.1", "LIMIT_LAYERS": "R-16.1",
    "LIMIT_TENSORS": "R-16.1", "LIMIT_RANK": "R-16.1", "LIMIT_TENSOR": "R-16.1"}

KIND_NAMES = {int(c): c.name for c in avp.Kind}
LAYER_KIND_NAMES = {int(c): c.name for c in avp.LayerKind}
CODEC_NAMES = {int(c): c.name.lower() for c in avp.Codec}
LAYOUT_NAMES = {int(c): c.name for c in avp.Layout}
QUANT_NAMES = {int(c): c.name for c in avp.QuantScheme}
MODE_NAMES = {int(c): c.name for c in avp.Mode}
VALUE_TYPE_NAMES = {int(c): c.name.lower() for c in avp.ValueType}


@dataclass(frozen=True)
class DtypeInfo:
    name: str
    bits: int


DTYPES: dict[int, DtypeInfo] = {int(d): DtypeInfo(d.name.lower(), R.DTYPE_BITS[d])
                                for d in avp.Dtype}
@dataclass(frozen=True)
class RoleInfo:
    name: str


ROLES: dict[int, RoleInfo] = {int(r): RoleInfo(r.name) for r in avp.Role}
@dataclass(frozen=True)
class KeyInfo:
    name: str
    vtype: int
    critical: bool


KEYS: dict[int, KeyInfo] = {int(k): KeyInfo(k.name, int(i.type), i.critical)
                            for k, i in R.KEY_INFO.items()}
KEY_AUTH = int(avp.MetaKey.AUTH_KEY_ID)
KEY_CONTEXT_LENGTH = int(avp.MetaKey.CONTEXT_LENGTH)


Limits = avp.Limits  # the spec's resource limits (section 16); the walker applies the same


# Metadata values up to this size are decoded by the codec's own decode_value / check_entry
# and kept; a larger value (at most max_header_bytes) is checked in a streaming pass and kept as
# a Preview, so a 15 MB list never becomes 4 M Python ints.
FULL_VALUE_BYTES = 1 << 16
# A walk keeps the decoded value of an entry up to this size, a Preview beyond (a 64 KiB u32
# list is ~0.6 MB of Python ints; a 16 MiB header could hold 256 of them).
KEPT_VALUE_BYTES = 1 << 12


def pad8(n: int) -> int:
    return (8 - n % 8) % 8


def pad64(n: int) -> int:
    return (64 - n % 64) % 64


def error_name(code: int) -> str:
    return _ERROR_NAMES.get(code, f"ERROR_{code}")


def dtype_name(code: int) -> str:
    info = DTYPES.get(code)
    return info.name if info else f"dtype?{code}"


def role_name(code: int) -> str:
    info = ROLES.get(code)
    return info.name if info else f"role?{code}"


def key_name(code: int) -> str:
    info = KEYS.get(code)
    return info.name if info else f"key_{code}"
