"""The encoders' door: every field of a message to encode has its exact type and range before any
byte is built (so no ``struct.error``, ``OverflowError`` or ``TypeError`` escapes from inside, and
nothing is silently coerced). The rules are those of ``_args``; the semantic rules that follow
(kind, order, tiling, ...) are the decoder's own, run by ``_validate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._args import (
    U32_MAX,
    field_bool,
    field_enum,
    field_int,
    field_ref,
    is_int,
    tname,
)
from ._registry import (
    Codec,
    Dtype,
    ErrorCode,
    Kind,
    LayerKind,
    Layout,
    QuantScheme,
    Role,
    ValueType,
)
from .errors import AvpError
from .model import Entry, Layer, Message, Quant, Tensor


def _seq(v: object, name: str, item: str) -> Sequence[Any]:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"{name} must be a list of avp_codec.{item}, not {tname(v)}")
    return v


def check_message(msg: object) -> Message:
    """``msg`` handed to encode / encode_to / encode_into / encoded_size."""
    if not isinstance(msg, Message):
        raise TypeError(f"msg must be an avp_codec.Message, not {tname(msg)}")
    _seq(msg.tensors, "msg.tensors", "Tensor")
    field_int(msg.minor, "minor", 0xFFFF)
    field_int(msg.skipped_sections, "skipped_sections")
    tag = msg.auth_tag
    if tag is not None and (not isinstance(tag, (bytes, bytearray, memoryview))
                            or len(tag) != 32):
        raise AvpError(ErrorCode.INVALID_VALUE, "auth_tag must be None or the 32-byte tag of a "
                       "received message", path="auth_tag")
    return msg


def check_head(writable: object, kind: object, entries: object, layers: object,
               tensor_count: object) -> tuple[Kind, list[Entry], list[Layer]]:
    """StreamEncoder's arguments: the writable, then kind, entries, layers, tensor_count."""
    if not callable(getattr(writable, "write", None)):
        raise TypeError(f"writable must have a write() method, not {tname(writable)}")
    k = field_enum(Kind, kind, "kind", ErrorCode.UNKNOWN_KIND)
    es = list(_seq(entries, "entries", "Entry"))
    for i, e in enumerate(es):
        check_entry(e, i)
    ls = list(_seq(layers, "layers", "Layer"))
    for i, layer in enumerate(ls):
        check_layer(layer, i)
    if not is_int(tensor_count):
        raise TypeError(f"tensor_count must be an int, not {tname(tensor_count)}")
    return k, es, ls


def check_entry(e: object, i: int) -> None:
    path = f"entries[{i}]"
    if not isinstance(e, Entry):
        raise TypeError(f"{path} must be an avp_codec.Entry, not {tname(e)}")
    field_int(e.key, path + ".key", 0xFFFF)
    if not isinstance(e.type, ValueType):
        field_int(e.type, path + ".type", 0xFF)  # an unknown type of an unregistered key
    field_bool(e.critical, path + ".critical")
    v, t = e.value, e.type
    want = _VALUE_TYPES.get(t, (bytes, bytearray, memoryview))  # unknown type: raw bytes
    if not isinstance(v, want) or isinstance(v, bool):
        names = " or ".join(x.__name__ for x in want)
        raise AvpError(ErrorCode.INVALID_VALUE, f"{path}.value must be {names} for type "
                       f"{t.name.lower() if isinstance(t, ValueType) else t}, not {tname(v)}",
                       path=path + ".value")
    if t == ValueType.U32_LIST:
        # One C-level pass for plain ints in range; a faulty list is walked for the first bad
        # element's path (a path string per element cost seconds on a 15 MiB list).
        items: tuple[Any, ...] = v  # type: ignore[assignment]
        if all(type(x) is int for x in items) and (
                not items or (min(items) >= 0 and max(items) <= U32_MAX)):
            return
        for j, x in enumerate(items):
            field_int(x, f"{path}.value[{j}]", U32_MAX)


_VALUE_TYPES: dict[object, tuple[type, ...]] = {
    ValueType.U64: (int,), ValueType.I64: (int,), ValueType.F64: (int, float),
    ValueType.UTF8: (str,), ValueType.BYTES: (bytes, bytearray, memoryview),
    ValueType.U32_LIST: (tuple,)}


def check_layer(layer: object, i: int) -> None:
    path = f"layers[{i}]"
    if not isinstance(layer, Layer):
        raise TypeError(f"{path} must be an avp_codec.Layer, not {tname(layer)}")
    field_int(layer.index, path + ".layer_index", U32_MAX)
    # An unregistered layer kind is INVALID_VALUE in the decoder too.
    field_enum(LayerKind, layer.kind, path + ".layer_kind", ErrorCode.INVALID_VALUE)
    field_int(layer.window, path + ".window", U32_MAX)
    field_int(layer.token_start, path + ".token_start")
    field_int(layer.token_count, path + ".token_count")


def check_tensor(t: object, i: int) -> None:
    path = f"tensor[{i}]"
    if not isinstance(t, Tensor):
        raise TypeError(f"{path} must be an avp_codec.Tensor, not {tname(t)}")
    field_enum(Role, t.role, path + ".role", ErrorCode.UNKNOWN_ROLE)
    field_enum(Dtype, t.dtype, path + ".dtype", ErrorCode.UNKNOWN_DTYPE)
    field_enum(Codec, t.codec, path + ".codec", ErrorCode.UNKNOWN_CODEC)
    field_enum(Layout, t.layout, path + ".layout", ErrorCode.UNKNOWN_LAYOUT)
    if not isinstance(t.shape, tuple):
        raise AvpError(ErrorCode.INVALID_VALUE, f"{path}.shape must be a tuple of ints, not "
                       f"{tname(t.shape)}", path=path + ".shape")
    if len(t.shape) > 255:
        raise AvpError(ErrorCode.LIMIT_RANK, "rank does not fit u8", path=path + ".shape")
    for j, d in enumerate(t.shape):
        field_int(d, f"{path}.shape[{j}]")
    field_ref(t.layer, path + ".layer")
    field_int(t.token_offset, path + ".token_offset")
    field_int(t.raw_length, path + ".raw_length")
    q = t.quant
    if q is not None:
        if not isinstance(q, Quant):
            raise AvpError(ErrorCode.INVALID_VALUE, f"{path}.quant must be an avp_codec.Quant "
                           f"or None, not {tname(q)}", path=path + ".quant")
        bad = ErrorCode.QUANT_PARAMS
        field_enum(QuantScheme, q.scheme, path + ".quant_scheme", bad)
        field_int(q.axis, path + ".quant_axis", 0xFF)
        field_int(q.group_size, path + ".group_size", U32_MAX)
        field_ref(q.scale_tensor, path + ".scale_tensor")
        field_ref(q.zero_point_tensor, path + ".zero_point_tensor")
        field_enum(Dtype, q.dequant_dtype, path + ".dequant_dtype", bad)
