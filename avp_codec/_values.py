"""Metadata values (spec 6.3): bytes <-> Python values, and the registry constraints (10.1)."""

from __future__ import annotations

import codecs
import math
import struct

from ._json import check_json_text, utf8_limits_problem
from ._registry import (
    KEY_INFO,
    ErrorCode,
    MetaKey,
    Mode,
    ValueType,
)
from .errors import AvpError
from .model import Entry, Value

CANONICAL_NAN = 0x7FF8000000000000
_MODES = frozenset(int(m) for m in Mode)
_ID32 = frozenset({MetaKey.MODEL_ID, MetaKey.TOKENIZER_ID, MetaKey.PROJ_SOURCE_MODEL_ID,
                   MetaKey.PROJ_SOURCE_TOKENIZER_ID, MetaKey.PROJ_TARGET_TOKENIZER_ID,
                   MetaKey.VOCAB_DIGEST})
_INCREASING = frozenset({MetaKey.VERSIONS, MetaKey.CAP_DTYPES, MetaKey.CAP_CODECS,
                         MetaKey.CAP_MODES})


def decode_value(vtype: int, raw: bytes | memoryview, path: str, offset: int | None) -> Value:
    """Bytes of a value -> its Python form. Unknown value types stay raw bytes."""
    def bad(msg: str, code: ErrorCode = ErrorCode.INVALID_VALUE) -> AvpError:
        return AvpError(code, msg, offset=offset, path=path)

    if vtype in (ValueType.U64, ValueType.I64, ValueType.F64) and len(raw) != 8:
        raise bad(f"a {ValueType(vtype).name.lower()} value is 8 bytes, not {len(raw)}")
    if vtype == ValueType.U64:
        return int.from_bytes(raw, "little")
    if vtype == ValueType.I64:
        return int.from_bytes(raw, "little", signed=True)
    if vtype == ValueType.F64:
        bits = int.from_bytes(raw, "little")
        f: float = struct.unpack("<d", raw)[0]
        if math.isnan(f) and bits != CANONICAL_NAN:
            raise bad("NaN must be encoded as 0x7FF8000000000000", ErrorCode.NON_CANONICAL)
        return f
    if vtype == ValueType.UTF8:
        try:
            s = str(raw, "utf-8")  # raw may be a view of the HEADER: no copy of it first
        except UnicodeDecodeError:
            raise bad("value is not well-formed UTF-8") from None
        if s.startswith("\ufeff"):
            raise bad("UTF-8 value starts with a byte order mark")
        return s
    if vtype == ValueType.U32_LIST:
        if len(raw) % 4:
            raise bad("u32_list length is not a multiple of 4")
        return struct.unpack(f"<{len(raw) // 4}I", raw)  # one C call: no slice per element
    return bytes(raw)  # BYTES, or an unknown type of a skippable key


def encode_value(e: Entry, path: str) -> bytes:
    """Python value -> bytes, rejecting values that do not fit their type."""
    v, t = e.value, e.type
    try:
        if t in (ValueType.U64, ValueType.I64):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError
            return v.to_bytes(8, "little", signed=(t == ValueType.I64))
        if t == ValueType.F64:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise TypeError
            if math.isnan(v):
                return CANONICAL_NAN.to_bytes(8, "little")
            return struct.pack("<d", float(v))
        if t == ValueType.UTF8:
            if not isinstance(v, str):
                raise TypeError
            if v.startswith("\ufeff"):
                raise ValueError("leading byte order mark")
            return v.encode("utf-8")  # lone surrogates raise UnicodeEncodeError (a ValueError)
        if t == ValueType.U32_LIST:
            if not isinstance(v, tuple):
                raise TypeError
            # check_entry has made every element an int in 0..2^32-1; one C call (a 15 MiB
            # list as 4-byte objects plus their join cost 30x its size)
            return struct.pack(f"<{len(v)}I", *v)
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise TypeError
        return bytes(v)
    except (OverflowError, TypeError, ValueError, struct.error) as exc:
        raise AvpError(ErrorCode.INVALID_VALUE,
                       f"value {v!r} does not fit value type {t}: {exc}", path=path) from None


def check_entry(e: Entry, path: str, offset: int | None) -> None:
    """Registry checks of one entry (R-6.4, R-6.5)."""
    try:
        key = MetaKey(e.key)
    except ValueError:
        if e.critical:
            raise AvpError(ErrorCode.UNKNOWN_CRITICAL, f"unknown critical metadata key {e.key}",
                           offset=offset, path=path) from None
        return
    info = KEY_INFO[key]
    if e.type != info.type or e.critical != info.critical:
        raise AvpError(ErrorCode.ENTRY_TYPE,
                       f"{key.name} must be type {info.type.name.lower()}, critical="
                       f"{info.critical}", offset=offset, path=path)
    problem = _constraint(key, e.value)
    if problem:
        raise AvpError(ErrorCode.INVALID_VALUE, f"{key.name}: {problem}", offset=offset,
                       path=path)


def _constraint(key: MetaKey, v: Value) -> str | None:
    if key in _ID32 and isinstance(v, bytes) and len(v) != 32:
        return "must be 32 bytes"
    if key == MetaKey.NONCE and isinstance(v, bytes) and len(v) != 16:
        return "must be 16 bytes"
    if key == MetaKey.AUTH_KEY_ID and isinstance(v, bytes) and not 1 <= len(v) <= 64:
        return "must be 1 to 64 bytes"
    if key == MetaKey.HIDDEN_SOURCE and v not in (1, 2):
        return "must be 1 (same-model) or 2 (projection)"
    if key == MetaKey.PROJ_METHOD and v != 1:
        return "must be 1 (vocabulary-mediated)"
    if key == MetaKey.PROJ_TEMPERATURE and not (isinstance(v, float) and v > 0):
        return "must be > 0"
    if key == MetaKey.MODE and v not in _MODES:
        return "not a registered mode"
    if key == MetaKey.ERROR_CODE and not (isinstance(v, int) and 1 <= v <= 0xFFFF):
        # D6: any code 1..65535, so a newer peer's refusal stays decodable
        return "must be 1..65535"
    if key in _INCREASING and isinstance(v, tuple):
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            return "must be strictly increasing"
        if key == MetaKey.VERSIONS and not v:
            return "must list at least one version"
    if key == MetaKey.VOCABULARY and isinstance(v, bytes) and not _vocab_ok(v):
        return "not a list of u32-length-prefixed tokens"
    if key == MetaKey.QUANT_POLICY and isinstance(v, str):
        try:
            check_json_text(v)
        except AvpError as e:
            return e.detail
    return None


def _vocab_ok(v: bytes) -> bool:
    pos = 0
    while pos < len(v):
        if pos + 4 > len(v):
            return False
        pos += 4 + int.from_bytes(v[pos:pos + 4], "little")
    return pos == len(v)


def parse_vocabulary(v: bytes) -> list[bytes]:
    """The token byte strings of a VOCABULARY value (spec 13.3)."""
    out, pos = [], 0
    while pos + 4 <= len(v):
        n = int.from_bytes(v[pos:pos + 4], "little")
        out.append(v[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


_PRECHECK_MIN = 1 << 16  # QUANT_POLICY texts from this size have their limits checked as bytes


def precheck_value(key: int, vtype: int, critical: bool, raw: bytes | memoryview, path: str,
                   offset: int | None, entry_path: str, entry_offset: int | None) -> None:
    """Refuse a large QUANT_POLICY whose JSON breaks the limits before ``decode_value`` makes
    a str of it (the HEADER may hold max_header_bytes of it): the same code, message, path and
    offset as ``check_entry`` would give after decoding, and the same earlier faults first
    (not UTF-8 or a byte order mark: left to ``decode_value``; a wrong type or criticality:
    left to ``check_entry``). UTF-8 is validated in pieces, so no text of the whole exists."""
    if (key != MetaKey.QUANT_POLICY or vtype != ValueType.UTF8 or len(raw) < _PRECHECK_MIN
            or critical != KEY_INFO[MetaKey.QUANT_POLICY].critical
            or bytes(raw[:3]) == b"\xef\xbb\xbf"):
        return
    dec = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(raw)
    try:
        for i in range(0, len(view), _PRECHECK_MIN):
            dec.decode(view[i:i + _PRECHECK_MIN])
        dec.decode(b"", final=True)
    except UnicodeDecodeError:
        return  # decode_value refuses it with its own message
    problem = utf8_limits_problem(raw)
    if problem:
        raise AvpError(ErrorCode.INVALID_VALUE, f"QUANT_POLICY: {problem}",
                       offset=entry_offset, path=entry_path)
