"""Checks at the door of every public entry point (issue 14 strict types, issue 19.3).

Two kinds of fault, two kinds of error:

* An argument of the wrong Python type for the *function* (``encode(b"abc")``, ``auth_key=b"k"``,
  ``limits=5``, ``Decoder.feed("text")``) is API misuse: ``TypeError`` (or ``ValueError`` for a
  value of the right type that the function cannot take, such as K and V lists of different
  lengths), naming the argument.
* A wrong value for a *message field* (an entry's key, a layer index, a tensor's shape or
  layer ordinal, a quantization parameter), however it was given (a builder, a constructor,
  an attribute set by hand, canonical JSON), is ``AvpError`` with the registry code the decoder
  would report for it, usually ``INVALID_VALUE``, and a path naming the field.

Types are exact: an integer field takes a Python ``int`` (``IntEnum`` members included), never a
``bool``, a ``float`` such as ``2.0`` or a numpy scalar; a flag takes a ``bool``; a registry
field takes the registry's enum member (or its exact integer code); bytes fields take ``bytes``,
``bytearray`` or ``memoryview``. Nothing is coerced with ``int()``, ``float()`` or ``upper()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import TypeVar

from ._registry import NO_REF, U64_MAX, ErrorCode
from .errors import AvpError
from .limits import Limits

U32_MAX = 0xFFFFFFFF
E = TypeVar("E", bound=IntEnum)
_BYTES = (bytes, bytearray, memoryview)


def is_int(v: object) -> bool:
    """A Python integer that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def show(v: object) -> str:
    """A short rendering of a value for an error message that never fails (a 5000-digit int
    has no str() in Python 3.11+; a hostile object's repr may raise)."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 128:
        return f"<a {v.bit_length()}-bit integer>"
    try:
        r = repr(v)
    except Exception:  # noqa: BLE001 - any repr failure is only a worse message
        r = f"<{tname(v)}>"
    return r if len(r) <= 40 else r[:37] + "..."


def tname(v: object) -> str:
    t = type(v)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def bad(msg: str, path: str, code: ErrorCode = ErrorCode.INVALID_VALUE) -> AvpError:
    return AvpError(code, msg, path=path)


def field_int(v: object, path: str, hi: int = U64_MAX, lo: int = 0) -> int:
    """A message field that is an unsigned integer (u8 .. u64): INVALID_VALUE otherwise."""
    if not is_int(v):
        raise bad(f"{path} must be an int, not {tname(v)} {show(v)}", path)
    assert isinstance(v, int)
    if not lo <= v <= hi:
        raise bad(f"{path} = {show(v)} is outside {lo}..{hi}", path)
    return v


def field_ref(v: object, path: str) -> int | None:
    """A u32 reference field (layer ordinal, tensor reference): None or 0 .. 2^32 - 2."""
    if v is None:
        return None
    return field_int(v, path, NO_REF - 1)


def field_bool(v: object, path: str) -> bool:
    if not isinstance(v, bool):
        raise bad(f"{path} must be a bool, not {tname(v)} {show(v)}", path)
    return v


def field_enum(enum: type[E], v: object, path: str, unknown: ErrorCode) -> E:
    """A registry field: the enum's member or its exact int code. A registered-looking value of
    another type (a bool, a float, a name string) is INVALID_VALUE; an int that is not
    registered gets the decoder's code for it (``unknown``)."""
    if isinstance(v, enum):
        return v
    if not is_int(v):
        raise bad(f"{path} must be an {enum.__name__} (or its int code), not {tname(v)} "
                  f"{show(v)}", path)
    assert isinstance(v, int)
    try:
        return enum(v)
    except ValueError:
        raise bad(f"{path}: {show(v)} is not a registered {enum.__name__}", path, unknown) from None


def arg_enum(enum: type[E], v: object, name: str, unknown: ErrorCode) -> E:
    """A function argument naming a registry value: TypeError for a wrong type (bool, float,
    str), AvpError with ``unknown`` for an unregistered code."""
    if isinstance(v, enum):
        return v
    if not is_int(v):
        raise TypeError(f"{name} must be an avp_codec.{enum.__name__} (or its int code), not "
                        f"{tname(v)}")
    assert isinstance(v, int)
    try:
        return enum(v)
    except ValueError:
        raise AvpError(unknown, f"{name}: {show(v)} is not a registered {enum.__name__}",
                       path=name) from None


def arg_bytes(v: object, name: str, *, length: int | None = None,
              optional: bool = False) -> bytes | None:
    """A bytes argument (bytes, bytearray, memoryview); ``length`` pins its size."""
    if v is None and optional:
        return None
    if not isinstance(v, _BYTES):
        raise TypeError(f"{name} must be bytes{f' ({length} bytes)' if length else ''}, not "
                        f"{tname(v)}")
    b = bytes(v)
    if length is not None and len(b) != length:
        raise ValueError(f"{name} must be {length} bytes, not {len(b)}")
    return b


def arg_str(v: object, name: str, *, optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise TypeError(f"{name} must be a str, not {tname(v)}")
    return v


def arg_int(v: object, name: str, *, optional: bool = False, lo: int = 0,
            hi: int = U64_MAX) -> int | None:
    if v is None and optional:
        return None
    if not is_int(v):
        raise TypeError(f"{name} must be an int, not {tname(v)}")
    assert isinstance(v, int)
    if not lo <= v <= hi:
        raise ValueError(f"{name} = {show(v)} is outside {lo}..{hi}")
    return v


def arg_ints(v: object, name: str, hi: int = U32_MAX) -> tuple[int, ...]:
    """A sequence of ints (list, tuple, range, set...), each in 0..hi."""
    if isinstance(v, (str, *_BYTES)) or not hasattr(v, "__iter__"):
        raise TypeError(f"{name} must be a sequence of ints, not {tname(v)}")
    out = []
    for i, x in enumerate(v):
        arg_int(x, f"{name}[{i}]", hi=hi)
        out.append(int(x))
    return tuple(out)


def auth_key_arg(auth_key: object) -> tuple[bytes, bytes] | None:
    """``auth_key``: None or a (key_id, key) pair of bytes; key_id 1 to 64 bytes (R-15)."""
    if auth_key is None:
        return None
    if not isinstance(auth_key, (tuple, list)) or len(auth_key) != 2:
        raise TypeError(f"auth_key must be a (key_id, key) pair of bytes, not {tname(auth_key)}"
                        + (f" of length {len(auth_key)}" if isinstance(auth_key, _BYTES) else ""))
    key_id, key = auth_key
    kid = arg_bytes(key_id, "auth_key[0] (key_id)")
    k = arg_bytes(key, "auth_key[1] (key)")
    assert kid is not None and k is not None
    if not 1 <= len(kid) <= 64:
        raise ValueError(f"auth_key[0] (key_id) must be 1 to 64 bytes, not {len(kid)}")
    return kid, k


def check_decode_options(limits: object, verify: object, keys: object,
                         require_auth: object) -> None:
    """The keyword options every decoder takes."""
    if limits is not None and not isinstance(limits, Limits):
        raise TypeError(f"limits must be an avp_codec.Limits, not {tname(limits)}")
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be a bool, not {tname(verify)}")
    if not isinstance(require_auth, bool):
        raise TypeError(f"require_auth must be a bool, not {tname(require_auth)}")
    if keys is not None:
        if not isinstance(keys, Mapping):
            raise TypeError(f"keys must be a mapping of key_id bytes to key bytes, not "
                            f"{tname(keys)}")
        for kid, key in keys.items():
            if not isinstance(kid, bytes) or not isinstance(key, _BYTES):
                raise TypeError("keys must map key_id bytes to key bytes, found "
                                f"{tname(kid)} -> {tname(key)}")


def byte_view(buf: object, name: str) -> memoryview:
    """A flat unsigned-byte view of a bytes-like input, or TypeError naming it."""
    if isinstance(buf, str):
        raise TypeError(f"{name} must be bytes-like (bytes, bytearray, memoryview, mmap), not "
                        "str")
    try:
        mv = memoryview(buf)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be bytes-like (bytes, bytearray, memoryview, mmap), not "
                        f"{tname(buf)}") from None
    if mv.ndim == 1 and mv.format in ("B", "b", "c") and mv.itemsize == 1:
        return mv if mv.format == "B" else mv.cast("B")
    if not mv.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous buffer")
    return mv.cast("B")

