"""The logical message (spec 9.1): kind, metadata entries, layer table, tensors.

Decoded tensors are zero-copy: ``Tensor.stored`` is a memoryview into the caller's buffer or
mmap, and ``Tensor.array()`` a read-only numpy view of it (for codec RAW). Tensors built from
arrays keep a memoryview of the array, so encoding copies each tensor's bytes exactly once.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import crc32c
import numpy as np

from . import _codecs, _dtypes
from ._args import arg_bytes, arg_enum, arg_int, is_int, show, tname
from ._registry import (
    KEY_INFO,
    NO_REF,
    Codec,
    Dtype,
    ErrorCode,
    Kind,
    LayerKind,
    Layout,
    MetaKey,
    QuantScheme,
    Role,
    ValueType,
)
from .errors import AvpError

Value = int | float | str | bytes | tuple[int, ...]


@dataclass
class Entry:
    """One metadata entry (spec 6.2). ``type`` is a plain int only for an unknown value type of
    an unregistered, skippable key, whose value is then its raw bytes."""

    key: int
    type: ValueType | int
    value: Value
    critical: bool

    @classmethod
    def of(cls, key: MetaKey, value: Value) -> Entry:
        """An entry for a registered key, with the registry's type and critical flag.

        >>> Entry.of(MetaKey.CONTEXT_LENGTH, 4)
        Entry(key=5, type=<ValueType.U64: 1>, value=4, critical=True)
        """
        info = KEY_INFO[arg_enum(MetaKey, key, "key", ErrorCode.INVALID_VALUE)]
        if info.type == ValueType.U32_LIST and isinstance(value, (list, range)):
            value = tuple(value)
        return cls(int(key), info.type, value, info.critical)


@dataclass
class Layer:
    """One layer descriptor (spec 6.4): a model layer a message carries tensors for.

    ``index`` is the model's layer number (strictly increasing along the table); tensors refer
    to a layer by its *ordinal*, its position in the table. ``kind`` is a ``LayerKind``;
    ``token_start`` and ``token_count`` are the token range the layer's tensors hold (a
    FULL_ATTENTION layer of a KV_CACHE holds 0 .. CONTEXT_LENGTH); ``window`` is the sliding
    window, nonzero exactly for SLIDING_WINDOW layers.

    >>> import avp_codec as avp
    >>> avp.Layer(index=11, kind=avp.LayerKind.SLIDING_WINDOW, token_start=4, token_count=4,
    ...           window=4)
    Layer(index=11, kind=<LayerKind.SLIDING_WINDOW: 2>, token_start=4, token_count=4, window=4)
    """

    index: int
    kind: LayerKind
    token_start: int
    token_count: int
    window: int = 0


@dataclass
class Quant:
    """The quantization fields of a tensor descriptor (spec 7.1, 12). Tensor references are
    indices into the message's tensor list."""

    scheme: QuantScheme
    axis: int
    group_size: int
    scale_tensor: int | None
    zero_point_tensor: int | None
    dequant_dtype: Dtype


class Tensor:
    """One tensor: its descriptor fields (spec 7.1) and its stored bytes.

    ``layer`` is the wire field: the *ordinal* of the tensor's layer in the message's layer
    table (``msg.layers[t.layer].index`` is the model's layer number), or None for a
    message-level tensor. Build tensors with :meth:`from_array` (numpy or torch) or
    :meth:`from_bytes`; read them with :meth:`array` / :meth:`values`.

    Constructor arguments are checked at the door: a wrong Python type is ``TypeError``, an
    unregistered role/dtype/codec/layout code ``AvpError`` with its registry code, a negative
    or too large dimension, ordinal or offset ``AvpError(INVALID_VALUE)``, each naming the
    argument.
    """

    __slots__ = ("role", "dtype", "shape", "layer", "codec", "layout", "token_offset", "quant",
                 "raw_length", "_stored", "_slen", "_crc", "_raw", "_owner", "_sized")

    def __init__(self, role: Role | int, dtype: Dtype | int, shape: tuple[int, ...],
                 stored: bytes | bytearray | memoryview, *, layer: int | None = None,
                 codec: Codec | int = Codec.RAW, layout: Layout | int = Layout.NONE,
                 token_offset: int = 0, quant: Quant | None = None,
                 raw_length: int | None = None, data_crc: int | None = None,
                 owner: Any = None) -> None:
        self.role = arg_enum(Role, role, "role", ErrorCode.UNKNOWN_ROLE)
        self.dtype = arg_enum(Dtype, dtype, "dtype", ErrorCode.UNKNOWN_DTYPE)
        self.shape = shape_arg(shape)
        self.layer = ordinal_arg(layer, "layer")
        self.codec = arg_enum(Codec, codec, "codec", ErrorCode.UNKNOWN_CODEC)
        self.layout = arg_enum(Layout, layout, "layout", ErrorCode.UNKNOWN_LAYOUT)
        self.token_offset = _u64_arg(token_offset, "token_offset")
        if quant is not None and not isinstance(quant, Quant):
            raise TypeError(f"quant must be an avp_codec.Quant or None, not {tname(quant)}")
        self.quant = quant
        self.raw_length = (_dtypes.raw_length(self.shape, self.dtype)
                           if raw_length is None else _u64_arg(raw_length, "raw_length"))
        if not isinstance(stored, (bytes, bytearray, memoryview)):
            arg_bytes(stored, "stored")  # raises the TypeError
        if data_crc is not None:
            arg_int(data_crc, "data_crc", hi=0xFFFFFFFF)
        mv = stored if isinstance(stored, memoryview) else memoryview(stored)
        self._stored = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
        self._slen = len(self._stored)
        self._crc = data_crc
        self._raw: memoryview | None = self._stored if self.codec == Codec.RAW else None
        self._owner = owner  # keeps the source array (or mmap) alive while views exist
        # The (shape, dtype) a decoder checked raw_length against, so that array() may map the
        # bytes directly while those are the tensor's; caller-built tensors keep numpy's checks.
        self._sized: tuple[tuple[int, ...], Dtype] | None = None

    @classmethod
    def _pending(cls, role: Role, dtype: Dtype, shape: tuple[int, ...], layer: int | None,
                 codec: Codec, layout: Layout, token_offset: int, quant: Quant | None,
                 raw_length: int, stored_length: int, data_crc: int) -> Tensor:
        """The decoder's constructor, from a parsed descriptor whose data has not been read
        yet (``_attach`` adds it). Every field is already typed, so this skips the conversions
        of __init__: it runs once per tensor on the zero-copy path."""
        t = cls.__new__(cls)
        t.role, t.dtype, t.shape, t.layer, t.codec = role, dtype, shape, layer, codec
        t.layout, t.token_offset, t.quant, t.raw_length = layout, token_offset, quant, raw_length
        t._stored, t._slen, t._crc, t._raw, t._owner = _NO_DATA, stored_length, data_crc, None, None
        t._sized = (shape, dtype)  # the decoder checks raw_length against these before data
        return t

    def _attach(self, stored: memoryview, owner: Any) -> None:
        """Give a ``_pending`` tensor its stored bytes (``stored_length`` of them)."""
        self._stored, self._owner = stored, owner
        if self.codec == Codec.RAW:
            self._raw = stored

    # -- stored and raw bytes -------------------------------------------------------------
    @property
    def stored(self) -> memoryview:
        """The tensor's bytes as stored on the wire (packed, compressed or quantized codes)."""
        return self._stored

    @property
    def stored_length(self) -> int:
        """The number of stored bytes (the descriptor's ``stored_length``, spec 7.1)."""
        return self._slen

    @property
    def data_crc(self) -> int:
        """CRC32C of the stored bytes (the descriptor's ``data_crc``), computed once."""
        if self._crc is None:
            self._crc = crc32c.crc32c(self._stored)
        return self._crc

    def raw_bytes(self) -> memoryview:
        """The raw bytes, decompressed on first use (bounded by raw_length, spec R-7.8)."""
        if self._raw is None:
            self._raw = _codecs.decompress(self._stored, self.codec, self.raw_length,
                                           self.dtype, self.shape)
        return self._raw

    def array(self) -> np.ndarray:
        """A read-only numpy view (ml_dtypes for bfloat16 and fp8). Packed sub-byte dtypes come
        back as their packed uint8 bytes; use ``values()`` to unpack them.

        A valid shape numpy cannot represent (a zero dimension next to dimensions whose product
        exceeds 2^63 bytes, e.g. ``(0, 2**64 - 1)``) is ``AvpError(LIMIT_TENSOR)``; the
        message itself is fine and ``shape`` / ``raw_bytes()`` still work.
        """
        raw = self._raw if self._raw is not None else self.raw_bytes()
        if self.dtype in _dtypes.PACKED:
            return np.frombuffer(raw, dtype=np.uint8)
        _numpy_shape(self.shape, _dtypes.NUMPY_DTYPES[self.dtype].itemsize)
        sized = self._sized
        if sized is not None and sized[0] is self.shape and sized[1] is self.dtype:
            # exactly shape's bytes: one ndarray call, half the cost of frombuffer + reshape
            return np.ndarray(self.shape, _dtypes.NUMPY_DTYPES[self.dtype], raw)
        a = np.frombuffer(raw, dtype=_dtypes.NUMPY_DTYPES[self.dtype])
        return a.reshape(self.shape)

    def values(self) -> np.ndarray:
        """Like array(), but packed sub-byte dtypes are unpacked to int8/uint8 of ``shape``."""
        if self.dtype in _dtypes.PACKED:
            _numpy_shape(self.shape, 1)
            n = math.prod(self.shape)
            return _dtypes.unpack(self.raw_bytes(), self.dtype, n).reshape(self.shape)
        return self.array()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_array(cls, arr: Any, role: Role | int, *, ordinal: int | None = None,
                   layout: Layout | int = Layout.NONE, codec: Codec | int = Codec.RAW,
                   token_offset: int = 0, dtype: Dtype | int | None = None,
                   quant: Quant | None = None, layer: int | None = None) -> Tensor:
        """Build a tensor from a numpy array or a torch tensor (torch is imported lazily).

        ``ordinal`` places the tensor in a layer: it is the position of that layer in the
        message's layer table (0 for the first ``Layer`` you pass), not the model's layer
        number; None (the default) makes a message-level tensor. With layers 0, 3, 7, 11 in the
        table, the tensor of model layer 7 has ``ordinal=2``. (``layer=`` is the old name of
        ``ordinal=`` and is deprecated because it read like a model layer number.)

        ``dtype`` defaults to the array's own. For INT4/UINT4/UINT2 pass the unpacked integer
        values (one per element) and the dtype; they are packed here. Codec RAW keeps a view of
        the array (no copy); ZSTD / BYTEPLANE_ZSTD compress now.

        >>> import numpy as np, avp_codec as avp
        >>> k = avp.Tensor.from_array(np.zeros((1, 2, 4, 8), np.float16), avp.Role.KEY,
        ...                           ordinal=0, layout=avp.Layout.BHTD)
        >>> print(k.role, k.dtype, k.shape, k.layer)
        KEY FLOAT16 (1, 2, 4, 8) 0
        """
        if layer is not None:
            if ordinal is not None:
                raise TypeError("give ordinal= (layer= is its deprecated name), not both")
            warnings.warn("Tensor.from_array(layer=) is the ordinal of the layer in the "
                          "message's layer table; pass it as ordinal=", DeprecationWarning,
                          stacklevel=2)
            ordinal = layer
        role = arg_enum(Role, role, "role", ErrorCode.UNKNOWN_ROLE)
        ordinal = ordinal_arg(ordinal, "ordinal")
        a = _to_numpy(arr)
        codec = arg_enum(Codec, codec, "codec", ErrorCode.UNKNOWN_CODEC)
        if dtype is not None:
            dtype = arg_enum(Dtype, dtype, "dtype", ErrorCode.UNKNOWN_DTYPE)
        if dtype is not None and dtype in _dtypes.PACKED:
            d = Dtype(dtype)
            try:
                raw: bytes | memoryview = _dtypes.pack(a, d)
            except (ValueError, TypeError) as e:
                raise AvpError(ErrorCode.INVALID_VALUE, str(e)) from None
            owner: Any = raw
        else:
            native = _dtypes.dtype_of_numpy(a.dtype)
            if native is None:
                raise AvpError(ErrorCode.UNKNOWN_DTYPE, f"numpy dtype {a.dtype} has no AVP dtype")
            d = native if dtype is None else Dtype(dtype)
            if d != native:
                a = a.astype(_dtypes.NUMPY_DTYPES[d])
            if a.dtype.byteorder == ">":
                a = a.astype(a.dtype.newbyteorder("<"))
            if not a.flags.c_contiguous:  # (np.ascontiguousarray would make 0-d arrays 1-d)
                a = a.copy(order="C")
            raw = a.reshape(-1).view(np.uint8).data
            owner = a
        shape = tuple(int(x) for x in a.shape)
        if codec != Codec.RAW:
            why = _codecs.dtype_error(codec, d)
            if why:
                raise AvpError(ErrorCode.CODEC_DTYPE, why)
            raw_len = len(raw)
            stored: bytes | memoryview = _codecs.compress(raw, codec, d, shape)
            t = cls(role, d, shape, stored, layer=ordinal, codec=codec, layout=layout,
                    token_offset=token_offset, quant=quant, raw_length=raw_len)
            t._raw = raw if isinstance(raw, memoryview) else memoryview(raw)
            t._owner = owner
            return t
        return cls(role, d, shape, raw, layer=ordinal, codec=codec, layout=layout,
                   token_offset=token_offset, quant=quant, owner=owner)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, role: Role | int,
                   dtype: Dtype | int, shape: tuple[int, ...], **kw: Any) -> Tensor:
        """A RAW tensor from its raw bytes (e.g. already-packed int4 data)."""
        return cls(role, dtype, shape, data, **kw)

    # -- comparison and display -----------------------------------------------------------
    def descriptor(self) -> tuple[object, ...]:
        """The descriptor fields that define the tensor logically (what equality compares
        besides the data)."""
        return (self.role, self.dtype, self.shape, self.layer, self.codec, self.layout,
                self.token_offset, self.quant, self.raw_length, self.stored_length)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tensor):
            return NotImplemented
        return (self.descriptor() == other.descriptor()
                and self._stored.tobytes() == other._stored.tobytes())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        q = f", quant={self.quant.scheme.name}" if self.quant else ""
        return (f"Tensor({self.role.name}, {self.dtype.name.lower()}, shape={self.shape}, "
                f"layer={self.layer}, codec={self.codec.name.lower()}, "
                f"layout={self.layout.name}, token_offset={self.token_offset}{q})")


def _to_numpy(arr: Any) -> np.ndarray:
    if isinstance(arr, np.ndarray):
        return arr
    if isinstance(arr, (str, bytes, bytearray, memoryview, Tensor)) or arr is None:
        raise TypeError(f"arr must be a numpy array, a torch tensor or a nested list of "
                        f"numbers, not {tname(arr)}")
    mod = type(arr).__module__
    if mod.startswith("torch"):
        return _torch_to_numpy(arr)
    try:
        a = np.asarray(arr)
    except (ValueError, TypeError) as e:
        raise TypeError(f"arr is not array-like: {e}") from None
    if a.dtype == object:
        raise TypeError(f"arr must hold numbers, not {tname(arr)} of Python objects")
    return a


def shape_arg(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """A shape: a sequence of ints, each 0 .. 2^64 - 1 (TypeError / INVALID_VALUE)."""
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of ints, not {tname(shape)}")
    out = tuple(shape)
    for i, d in enumerate(out):
        if not is_int(d):
            raise TypeError(f"{name}[{i}] must be an int, not {tname(d)} {show(d)}")
        if not 0 <= d <= _U64:
            raise AvpError(ErrorCode.INVALID_VALUE, f"{name}[{i}] = {show(d)} is not a u64",
                           path=f"{name}[{i}]")
    return out if all(type(d) is int for d in out) else tuple(int(d) for d in out)


def ordinal_arg(v: Any, name: str) -> int | None:
    """A layer ordinal: None (message-level) or 0 .. 2^32 - 2 (0xFFFFFFFF means none)."""
    if v is None:
        return None
    if not is_int(v):
        raise TypeError(f"{name} must be an int (the layer's position in the layer table) or "
                        f"None, not {tname(v)}")
    if not 0 <= v < NO_REF:
        raise AvpError(ErrorCode.INVALID_VALUE, f"{name} {show(v)} is not a layer table ordinal "
                       f"(0 .. {NO_REF - 1})", path=name)
    return int(v)


def _u64_arg(v: Any, name: str) -> int:
    if not is_int(v):
        raise TypeError(f"{name} must be an int, not {tname(v)} {show(v)}")
    if not 0 <= v <= _U64:
        raise AvpError(ErrorCode.INVALID_VALUE, f"{name} = {show(v)} is not a u64", path=name)
    return int(v)


_U64 = (1 << 64) - 1
_INTP_MAX = (1 << 63) - 1


def _numpy_shape(shape: tuple[int, ...], itemsize: int) -> None:
    """numpy represents a shape only if every dimension and the byte size of the nonzero
    dimensions fit intp; a valid AVP shape with a zero dimension may not."""
    n = itemsize
    for d in shape:
        if d > _INTP_MAX:
            break
        n *= d or 1
    else:
        if n <= _INTP_MAX:
            return
    raise AvpError(ErrorCode.LIMIT_TENSOR, f"shape {shape} has no numpy equivalent (numpy needs "
                   "each dimension, and the bytes of the nonzero ones, below 2^63); the tensor "
                   f"holds {math.prod(shape)} elements", path="shape")


def _torch_to_numpy(t: Any) -> np.ndarray:
    import torch  # lazily: the codec must not pull torch in at import time

    t = t.detach().cpu().contiguous()
    views = {torch.bfloat16: (torch.int16, _dtypes.NUMPY_DTYPES[Dtype.BFLOAT16]),
             torch.float8_e4m3fn: (torch.uint8, _dtypes.NUMPY_DTYPES[Dtype.FLOAT8_E4M3FN]),
             torch.float8_e5m2: (torch.uint8, _dtypes.NUMPY_DTYPES[Dtype.FLOAT8_E5M2])}
    if t.dtype in views:
        as_int, np_dt = views[t.dtype]
        return np.asarray(t.view(as_int).numpy().view(np_dt))
    return np.asarray(t.numpy())


@dataclass
class Message:
    """A logical AVP message. ``authenticated`` is True only when a decoder verified the tag
    with a key it holds; ``auth_tag`` keeps a received tag so re-encoding reproduces it.
    Equality compares the logical content (kind, entries, layers, tensors)."""

    kind: Kind
    entries: list[Entry] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    authenticated: bool = False
    auth_tag: bytes | None = None
    minor: int = 0  # the preamble's minor version (an encoder always writes its own, 0)
    skipped_sections: int = 0  # unknown skippable sections the decoder verified and ignored

    def get(self, key: MetaKey | int) -> Value | None:
        """The value of metadata entry ``key``, or None when the message has none.

        >>> import avp_codec as avp
        >>> msg = avp.text_message("hi")
        >>> msg.get(avp.MetaKey.TEXT), msg.get(avp.MetaKey.MODEL_ID)
        ('hi', None)
        """
        for e in self.entries:
            if e.key == int(key):
                return e.value
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.kind == other.kind and self.entries == other.entries
                and self.layers == other.layers and self.tensors == other.tensors)


_NO_DATA = memoryview(b"")  # a pending decoded tensor's bytes until _attach


def ref(value: int | None) -> int:
    """A tensor/layer reference as its u32 wire value."""
    return NO_REF if value is None else value
