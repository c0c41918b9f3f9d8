"""The logical message (spec 9.1): kind, metadata entries, layer table, tensors.

Decoded tensors are zero-copy: ``Tensor.stored`` is a memoryview into the caller's buffer or
mmap, and ``Tensor.array()`` a read-only numpy view of it (for codec RAW). Tensors built from
arrays keep a memoryview of the array, so encoding copies each tensor's bytes exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import crc32c
import numpy as np

from . import _codecs, _dtypes
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
        """An entry for a registered key, with the registry's type and critical flag."""
        info = KEY_INFO[MetaKey(key)]
        if info.type == ValueType.U32_LIST and not isinstance(value, tuple):
            value = tuple(value)  # type: ignore[arg-type]
        return cls(int(key), info.type, value, info.critical)


@dataclass
class Layer:
    """One layer descriptor (spec 6.4)."""

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
    """One tensor: descriptor fields and its stored bytes."""

    __slots__ = ("role", "dtype", "shape", "layer", "codec", "layout", "token_offset", "quant",
                 "raw_length", "_stored", "_slen", "_crc", "_raw", "_owner", "_sized")

    def __init__(self, role: Role | int, dtype: Dtype | int, shape: tuple[int, ...],
                 stored: bytes | bytearray | memoryview, *, layer: int | None = None,
                 codec: Codec | int = Codec.RAW, layout: Layout | int = Layout.NONE,
                 token_offset: int = 0, quant: Quant | None = None,
                 raw_length: int | None = None, data_crc: int | None = None,
                 owner: Any = None) -> None:
        self.role = Role(role)
        self.dtype = Dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.layer = layer
        self.codec = Codec(codec)
        self.layout = Layout(layout)
        self.token_offset = token_offset
        self.quant = quant
        self.raw_length = (_dtypes.raw_length(self.shape, self.dtype)
                           if raw_length is None else raw_length)
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
        return self._stored

    @property
    def stored_length(self) -> int:
        return self._slen

    @property
    def data_crc(self) -> int:
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
        back as their packed uint8 bytes; use ``values()`` to unpack them."""
        raw = self._raw if self._raw is not None else self.raw_bytes()
        if self.dtype in _dtypes.PACKED:
            return np.frombuffer(raw, dtype=np.uint8)
        sized = self._sized
        if sized is not None and sized[0] is self.shape and sized[1] is self.dtype:
            # exactly shape's bytes: one ndarray call, half the cost of frombuffer + reshape
            return np.ndarray(self.shape, _dtypes.NUMPY_DTYPES[self.dtype], raw)
        a = np.frombuffer(raw, dtype=_dtypes.NUMPY_DTYPES[self.dtype])
        return a.reshape(self.shape)

    def values(self) -> np.ndarray:
        """Like array(), but packed sub-byte dtypes are unpacked to int8/uint8 of ``shape``."""
        if self.dtype in _dtypes.PACKED:
            n = math.prod(self.shape)
            return _dtypes.unpack(self.raw_bytes(), self.dtype, n).reshape(self.shape)
        return self.array()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_array(cls, arr: Any, role: Role | int, *, layer: int | None = None,
                   layout: Layout | int = Layout.NONE, codec: Codec | int = Codec.RAW,
                   token_offset: int = 0, dtype: Dtype | int | None = None,
                   quant: Quant | None = None) -> Tensor:
        """Build a tensor from a numpy array or a torch tensor (torch is imported lazily).

        ``dtype`` defaults to the array's own. For INT4/UINT4/UINT2 pass the unpacked integer
        values (one per element) and the dtype; they are packed here. Codec RAW keeps a view of
        the array (no copy); ZSTD / BYTEPLANE_ZSTD compress now.
        """
        a = _to_numpy(arr)
        codec = Codec(codec)
        if dtype is not None and Dtype(dtype) in _dtypes.PACKED:
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
            t = cls(role, d, shape, stored, layer=layer, codec=codec, layout=layout,
                    token_offset=token_offset, quant=quant, raw_length=raw_len)
            t._raw = raw if isinstance(raw, memoryview) else memoryview(raw)
            t._owner = owner
            return t
        return cls(role, d, shape, raw, layer=layer, codec=codec, layout=layout,
                   token_offset=token_offset, quant=quant, owner=owner)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, role: Role | int,
                   dtype: Dtype | int, shape: tuple[int, ...], **kw: Any) -> Tensor:
        """A RAW tensor from its raw bytes (e.g. already-packed int4 data)."""
        return cls(role, dtype, shape, data, **kw)

    # -- comparison and display -----------------------------------------------------------
    def descriptor(self) -> tuple[object, ...]:
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
    mod = type(arr).__module__
    if mod.startswith("torch"):
        return _torch_to_numpy(arr)
    return np.asarray(arr)


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
