"""Strict JSON (RFC 8259) with explicit limits: the one parser for every JSON the format carries
(QUANT_POLICY) and every JSON the toolkit accepts (canonical message JSON, testee requests).

Why not plain ``json.loads``: it accepts ``NaN``/``Infinity`` (not JSON), keeps the last of two
duplicate member names silently, converts a 5000-digit integer into an exception instead of a
value, recurses once per nesting level, and builds every value before any limit can be applied (a
16 MiB text of ``[],`` costs 400+ MB). Here the limits are checked first, on the text, in linear
time and constant extra memory per byte (C-level regular expressions; no Python loop per byte), and
only then does the C parser run, with hooks that reject what RFC 8259 does not allow.

The profile (spec 10.1, "JSON text", R-10.15): UTF-8 text of one RFC 8259 value (any type) with
optional whitespace around it; no byte order mark; member names unique within an object; at most
``max_depth`` nested arrays/objects; at most ``max_values`` values (every object, array, string,
number, ``true``, ``false`` and ``null`` counts one, the top-level value included; member names do
not count). Numbers of any length are valid JSON; callers that need them as Python numbers get
integers of up to ``MAX_INT_DIGITS`` digits and binary64 floats.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ._registry import ErrorCode
from .errors import AvpError

# Limits of the profile for JSON inside messages (spec 10.1). Other callers may pass their own.
MAX_DEPTH = 64
MAX_VALUES = 65536
# Integers longer than this are valid JSON but no field of AVP can hold them (u64 has 20 digits);
# converting them is refused instead of spending quadratic time on int().
MAX_INT_DIGITS = 64

# A JSON string, escapes included; what it contains is checked later by the C parser.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
# The skeleton is bytes so that every later pass is a C loop over a byte table (bytes.translate,
# bytes.count, `in`): the regular-expression engine scans a character class at 20 MB/s.
_WHITESPACE = b" \t\n\r"
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_DIGIT_TO_D = bytes.maketrans(b"0123456789", b"d" * 10)
# A run of digits longer than any AVP integer (only numbers have digits once strings are gone).
_LONG_DIGITS = b"d" * (MAX_INT_DIGITS + 1)


def _bad(why: str, path: str) -> AvpError:
    return AvpError(ErrorCode.INVALID_VALUE, f"not strict JSON: {why}", path=path)


def _skeleton(text: str) -> bytes:
    """The text with every string replaced by `s` and whitespace removed (linear, C-level).
    Outside strings JSON text is ASCII; anything else is kept as its UTF-8 bytes."""
    return _STRING.sub("s", text).encode("utf-8", "surrogatepass").translate(None, _WHITESPACE)


def _count_values(skel: bytes) -> int:
    """Values in a skeleton, counted with ``bytes.count`` only (no object per match): the top
    value, plus one per array element and object member. A non-empty container of n items has
    n - 1 commas, so the items are the commas plus the non-empty containers. Exact for JSON
    text; for other text it is some count and the parser refuses the text anyway (it stops at
    the first fault, having built no more than the valid prefix, which this count bounds)."""
    if not skel:
        return 0
    containers = skel.count(b"[") + skel.count(b"{")
    empty = skel.count(b"[]") + skel.count(b"{}")
    return 1 + skel.count(b",") + containers - empty


def _depth(skel: bytes, limit: int) -> int:
    depth = deepest = 0
    for ch in skel.translate(None, _NOT_BRACKET):
        if ch in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate member name {dup!r}")
    return obj


def _int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(s)} characters is out of range for AVP")
    return int(s)


def _float(s: str) -> float:
    f = float(s)
    if f in (float("inf"), float("-inf")):
        raise ValueError(f"the number {s[:40]} is out of range for binary64")
    return f


def _check_limits(text: str, max_depth: int, max_values: int, path: str) -> bool:
    """Refuse what breaks the limits; returns whether some number has more digits than
    MAX_INT_DIGITS (so that integers need the checked conversion)."""
    if text.startswith("\ufeff"):
        raise _bad("a byte order mark is not allowed", path)
    skel = _skeleton(text)
    values = _count_values(skel)
    if values > max_values:
        raise _bad(f"more than {max_values} values", path)
    if _depth(skel, max_depth) > max_depth:
        raise _bad(f"nested deeper than {max_depth}", path)
    return _LONG_DIGITS in skel.translate(_DIGIT_TO_D)


def check_json_text(
    text: str, *, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES, path: str = ""
) -> None:
    """Raise INVALID_VALUE unless `text` is strict JSON within the limits (nothing is kept).

    Numbers are checked for their grammar only, so an integer of any length passes.
    """
    _check_limits(text, max_depth, max_values, path)
    try:
        json.loads(
            text,
            parse_constant=_no_constant,
            object_pairs_hook=_unique,
            parse_int=lambda s: 0,
            parse_float=lambda s: 0.0,
        )
    except (ValueError, RecursionError) as e:
        raise _bad(str(e), path) from None


def loads(
    data: str | bytes,
    *,
    max_depth: int = MAX_DEPTH,
    max_values: int = MAX_VALUES,
    path: str = "",
) -> Any:
    """Parse strict JSON within the limits; INVALID_VALUE for anything else.

    Integers come back as `int` (at most MAX_INT_DIGITS digits, else INVALID_VALUE), other
    numbers as `float` (binary64), objects as `dict` with unique keys.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise _bad(f"not UTF-8 ({e.reason} at byte {e.start})", path) from None
    elif isinstance(data, str):
        text = data
    else:
        raise TypeError(f"JSON text must be str or bytes, not {type(data).__name__}")
    long_digits = _check_limits(text, max_depth, max_values, path)
    try:
        return json.loads(
            text,
            parse_constant=_no_constant,
            object_pairs_hook=_unique,
            # The C parser's own int conversion unless some number is long enough to need the
            # digit limit (a Python call per integer costs seconds on a list of millions).
            parse_int=_int if long_digits else None,
            parse_float=_float,
        )
    except (ValueError, RecursionError) as e:
        raise _bad(str(e), path) from None


_STRING_UTF8 = re.compile(_STRING.pattern.encode("ascii"), re.DOTALL)
_ANY_WHITESPACE = re.compile(rb"[ \t\n\r]")


def utf8_limits_problem(raw: bytes | memoryview, *, max_depth: int = MAX_DEPTH,
                        max_values: int = MAX_VALUES) -> str | None:
    """Why the UTF-8 bytes of a JSON text break the limits of ``check_json_text``, or None,
    decided on the bytes before they are decoded: a 15 MiB QUANT_POLICY of empty arrays is
    refused without its text and the text's skeleton (about 4 copies of it) ever existing
    at once. The skeleton is the same as ``_skeleton``'s: a string is replaced whole whatever
    its bytes (UTF-8 continuation bytes are never `"` or `\\`), whitespace is ASCII. The caller
    has checked the text is UTF-8 without a byte order mark."""
    skel = _STRING_UTF8.sub(b"s", raw)
    if _ANY_WHITESPACE.search(skel):  # else no second copy
        skel = skel.translate(None, _WHITESPACE)
    if _count_values(skel) > max_values:
        return f"not strict JSON: more than {max_values} values"
    if _depth(skel, max_depth) > max_depth:
        return f"not strict JSON: nested deeper than {max_depth}"
    return None
