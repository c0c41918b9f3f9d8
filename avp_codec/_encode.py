"""Encoders (spec 3-8, 9.1): encode, encode_to and the streaming StreamEncoder.

All three share StreamEncoder, which writes the preamble and HEADER at construction, then each
tensor's descriptor, padding and data as it is given, then INDEX and Trailer; it keeps only
offsets, never tensor data. ``encode`` points it at a list of parts and joins them once, so each
tensor's bytes are copied exactly once (from the array's memoryview into the result).
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Sequence
from typing import Any, Protocol

import crc32c
import numpy as np

from . import _codecs, _parallel
from . import _structs as S
from ._args import auth_key_arg, byte_view
from ._auth import new_mac
from ._fields import check_head, check_message, check_tensor
from ._registry import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    NO_REF,
    Codec,
    ErrorCode,
    Kind,
    MetaKey,
    QuantScheme,
    Role,
    SectionType,
)
from ._validate import TensorChecker, check_kind_entries, check_kind_layers, check_layer
from ._values import check_entry, encode_value
from .errors import AvpError
from .model import Entry, Layer, Message, Tensor, ref

_ZEROS = bytes(64)
# Hot-path builders: the struct equivalents of _structs' declarations (checked there).
_PACK_SECTION_HEAD = S._C_SECTION_HEAD.struct.pack
_PACK_TENSOR_FIXED = S._C_TENSOR_FIXED.struct.pack
_PACK_INDEX_ENTRY = S._C_INDEX_ENTRY.struct.pack
_SHAPE_PACK = [struct.Struct(f"<{r}Q").pack for r in range(256)]


class Writable(Protocol):
    def write(self, data: bytes | memoryview, /) -> object: ...


def pad8(n: int) -> int:
    return -n % 8


def pad64(n: int) -> int:
    return -n % 64


def section(type_: SectionType, body: bytes) -> bytes:
    """A complete section: head, body, CRC32C of head+body, zero padding (spec 4.1)."""
    head = _PACK_SECTION_HEAD(int(type_), 0, len(body))
    crc = crc32c.crc32c(body, crc32c.crc32c(head)).to_bytes(4, "little")
    return head + body + crc + _ZEROS[:pad8(20 + len(body))]


def header_body(kind: Kind, entries: Sequence[Entry], layers: Sequence[Layer],
                tensor_count: int) -> bytes:
    parts = [S.build_header_fixed(int(kind), len(entries), len(layers), tensor_count)]
    for i, e in enumerate(entries):
        value = encode_value(e, f"entries[{i}]")
        if len(value) > 0xFFFFFFFF:
            raise AvpError(ErrorCode.LENGTH_OVERFLOW, "value longer than u32",
                           path=f"entries[{i}]")
        flags = 1 if e.critical else 0
        parts += [S.build_entry_head(e.key, flags, int(e.type), len(value)), value,
                  _ZEROS[:pad8(len(value))]]
    for layer in layers:
        parts.append(S.build_layer(layer.index, int(layer.kind), layer.window,
                                   layer.token_start, layer.token_count))
    return b"".join(parts)


def descriptor_body(i: int, t: Tensor) -> bytes:
    """The TENSOR section body (spec 7.1): the fixed descriptor, then the shape. Packed by the
    struct formats derived from the construct declarations (_structs), fields in declaration
    order; every field was range-checked by check_tensor before."""
    q = t.quant
    rank = len(t.shape)
    return _PACK_TENSOR_FIXED(
        i, ref(t.layer), int(t.role), int(t.dtype), int(t.codec), rank, int(t.layout),
        int(q.scheme) if q else 0, q.axis if q else 0, q.group_size if q else 0,
        ref(q.scale_tensor) if q else NO_REF, ref(q.zero_point_tensor) if q else NO_REF,
        int(q.dequant_dtype) if q else 0, b"\0\0\0", t.token_offset, t.raw_length,
        t.stored_length, t.data_crc, 0) + _SHAPE_PACK[rank](*t.shape)


def canonical_entries(entries: Sequence[Entry]) -> list[Entry]:
    """Entries sorted by key (the one canonical order); duplicates are refused."""
    out = sorted(entries, key=lambda e: e.key)
    for a, b in zip(out, out[1:], strict=False):
        if a.key == b.key:
            raise AvpError(ErrorCode.NON_CANONICAL, f"duplicate metadata key {a.key}",
                           path="entries")
    return out


class StreamEncoder:
    """Writes one message front to back without ever holding it whole (spec 11.1).

    The constructor writes the preamble and the HEADER at once, so it needs everything but the
    tensor data: ``kind``, the metadata ``entries`` (any order; they are sorted), the layer
    table and ``tensor_count``. Then call :meth:`write_tensor` once per tensor, in message order,
    and :meth:`finish` to write the INDEX and Trailer. Only offsets are kept between calls: any
    number of tensors of any size pass through with constant memory. ``writable`` is anything
    with ``write(bytes)`` (a file, a socket's makefile, a BytesIO).

    What a KV_CACHE needs (spec 10, 10.4): entries MODEL_ID (32 bytes) and CONTEXT_LENGTH; a
    layer table with one ``Layer`` per model layer sent (strictly increasing ``index``; a
    FULL_ATTENTION layer holds tokens 0 .. CONTEXT_LENGTH); message-level tensors first
    (TOKEN_IDS, POSITIONS, ATTENTION_MASK: ``[batch, CONTEXT_LENGTH]``), then each layer's
    tensors in table order: KEY and VALUE of layout BHTD ``[batch, heads, tokens, head_dim]`` or
    BTHD, placed with ``Tensor.from_array(..., ordinal=<position in the layer table>)``. Every
    layer carries at least one tensor, and a layer's chunks tile its token range.

    ``auth_key`` is ``(key_id, key)``: the AUTH_KEY_ID entry is added (or must already name
    key_id) and the INDEX carries HMAC-SHA256 over every byte before it (spec 15).

    Everything is checked as it is given (the decoder's own rules, so an encoder cannot emit a
    message a decoder refuses): wrong types are ``TypeError``, wrong values ``AvpError`` with
    the decoder's code and the field's path.

    >>> import io, numpy as np, avp_codec as avp
    >>> out = io.BytesIO()
    >>> layers = [avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, 4),
    ...           avp.Layer(5, avp.LayerKind.FULL_ATTENTION, 0, 4)]
    >>> entries = [avp.Entry.of(avp.MetaKey.MODEL_ID, bytes(32)),
    ...            avp.Entry.of(avp.MetaKey.CONTEXT_LENGTH, 4)]
    >>> enc = avp.StreamEncoder(out, avp.Kind.KV_CACHE, entries, layers, tensor_count=4)
    >>> for ordinal in range(len(layers)):      # model layers 0 and 5: ordinals 0 and 1
    ...     for role in (avp.Role.KEY, avp.Role.VALUE):
    ...         kv = np.zeros((1, 2, 4, 8), np.float16)   # [batch, heads, tokens, head_dim]
    ...         enc.write_tensor(avp.Tensor.from_array(kv, role, ordinal=ordinal,
    ...                                                layout=avp.Layout.BHTD))
    >>> enc.finish() == len(out.getvalue())
    True
    >>> [la.index for la in avp.decode(out.getvalue()).layers]
    [0, 5]
    """

    def __init__(self, writable: Writable, kind: Kind | int, entries: Sequence[Entry],
                 layers: Sequence[Layer], tensor_count: int,
                 auth_key: tuple[bytes, bytes] | None = None, *,
                 _reuse_tag: bytes | None = None) -> None:
        self._w = writable
        self.kind, entries, layers = check_head(writable, kind, entries, layers, tensor_count)
        auth_key = auth_key_arg(auth_key)
        self._mac: hmac.HMAC | None = None
        self._tag = _reuse_tag
        if auth_key is not None:
            key_id, key = auth_key
            have = [e for e in entries if e.key == MetaKey.AUTH_KEY_ID]
            if not have:
                entries.append(Entry.of(MetaKey.AUTH_KEY_ID, bytes(key_id)))
            elif have[0].value != bytes(key_id):
                raise AvpError(ErrorCode.UNKNOWN_KEY, "AUTH_KEY_ID names another key",
                               path="entries")
            self._mac = new_mac(key)
            self._tag = None
        entries = canonical_entries(entries)
        self._authed = any(e.key == MetaKey.AUTH_KEY_ID for e in entries)
        if self._authed and self._mac is None and self._tag is None:
            raise AvpError(ErrorCode.AUTH_REQUIRED, "AUTH_KEY_ID present but no auth_key given",
                           path="entries")
        for i, e in enumerate(entries):
            check_entry(e, f"entries[{i}]", None)
        check_kind_entries(self.kind, entries, None)
        for i, layer in enumerate(layers):
            check_layer(i, layer, layers[i - 1] if i else None, None)
        ctx = next((e.value for e in entries if e.key == MetaKey.CONTEXT_LENGTH), None)
        ctx_len = ctx if isinstance(ctx, int) else None
        check_kind_layers(self.kind, layers, tensor_count, ctx_len, None)
        if not 0 <= tensor_count <= 0xFFFFFFFF:
            raise AvpError(ErrorCode.LENGTH_OVERFLOW, "tensor_count does not fit u32")
        self._checker = TensorChecker(self.kind, list(layers), ctx_len)
        self.tensor_count = tensor_count
        self._index: list[bytes] = []
        self._pos = 0
        self._done = False
        self._out(S.build_preamble(FORMAT_MAJOR, FORMAT_MINOR))
        self._out(section(SectionType.HEADER,
                          header_body(self.kind, entries, layers, tensor_count)))

    def _out(self, data: bytes | memoryview) -> None:
        if len(data):
            if self._mac is not None:
                self._mac.update(data)
            self._w.write(data)
            self._pos += len(data)

    def write_tensor(self, t: Tensor) -> None:
        """Write the next tensor: its descriptor, alignment padding and data (spec 7, 5).

        Tensors come in message order (message-level ones first, then layer by layer in
        table order; a quantized tensor's scale and zero-point tensors before it). Each is
        checked against the rules the decoder applies to it (``AvpError`` with the code and a
        ``tensor[i]...`` path) before any of its bytes is written; ``tensor_count`` of them
        must be written before :meth:`finish`.

        >>> import io, numpy as np, avp_codec as avp
        >>> entries = [avp.Entry.of(avp.MetaKey.MODEL_ID, bytes(32)),
        ...            avp.Entry.of(avp.MetaKey.CONTEXT_LENGTH, 4)]
        >>> table = [avp.Layer(7, avp.LayerKind.FULL_ATTENTION, 0, 4)]   # model layer 7 only
        >>> enc = avp.StreamEncoder(io.BytesIO(), avp.Kind.KV_CACHE, entries, table, 2)
        >>> kv = np.zeros((1, 2, 4, 8), np.float16)
        >>> enc.write_tensor(avp.Tensor.from_array(kv, avp.Role.KEY, ordinal=0,
        ...                                        layout=avp.Layout.BHTD))
        >>> enc.write_tensor(avp.Tensor.from_array(kv, avp.Role.VALUE, ordinal=7,
        ...                                        layout=avp.Layout.BHTD))
        Traceback (most recent call last):
        avp_codec.errors.AvpError: BAD_REFERENCE [46]: layer ordinal 7 >= 1 layer table entries ...
        >>> enc.write_tensor(avp.Tensor.from_array(kv, avp.Role.VALUE, ordinal=0,
        ...                                        layout=avp.Layout.BHTD))  # nothing was written
        >>> enc.finish()
        800
        """
        i = len(self._index)
        self._check_tensor(i, t)
        start = self._pos
        if isinstance(self._w, _Into) and self._mac is None and t._crc is None:
            self._write_fused(i, t)
        else:
            self._out(section(SectionType.TENSOR, descriptor_body(i, t)))
            self._out(_ZEROS[:pad64(self._pos)])
            self._out(t.stored)
            self._out(_ZEROS[:pad8(self._pos)])
        data_at = start + 24 + 64 + 8 * len(t.shape)
        data_at += pad64(data_at)
        self._index.append(_PACK_INDEX_ENTRY(start, data_at, t.stored_length))

    def write_tensors(self, tensors: Sequence[Tensor], threads: int = 1) -> None:
        """write_tensor for each, in order; the same bytes for any ``threads``.

        Into a caller's buffer and without authentication, every tensor is laid out first (its
        offsets depend on lengths only), then the tensors' data are copied with their CRC32C
        computed chunk by chunk on ``threads`` threads, then the descriptors, which carry the
        CRCs, are written in front of their data."""
        w = self._w
        if threads <= 1 or not isinstance(w, _Into) or self._mac is not None:
            for t in tensors:
                self.write_tensor(t)
            return
        jobs: list[tuple[int, Tensor, int, int, int]] = []
        pos = self._pos
        for t in tensors:
            i = len(self._index) + len(jobs)
            self._check_tensor(i, t)
            sec_end = pos + 24 + 64 + 8 * len(t.shape)
            data_at = sec_end + pad64(sec_end)
            end = data_at + t.stored_length
            end += pad8(end)
            jobs.append((i, t, pos, data_at, end))
            pos = end
        if pos > len(w.buf):
            raise ValueError("buffer too small for the encoded message")
        buf = np.frombuffer(w.buf, np.uint8)

        def copy(j: int) -> None:
            _, t, _, data_at, end = jobs[j]
            stop = data_at + t.stored_length
            if t._crc is None:
                t._crc = _parallel.copy_crc(buf[data_at:stop], t.stored)
            else:
                np.copyto(buf[data_at:stop], np.frombuffer(t.stored, np.uint8))
            buf[stop:end] = 0

        _parallel.map_ordered(copy, [t.stored_length for _, t, _, _, _ in jobs], threads)
        for i, t, start, data_at, _ in jobs:
            w.n = start
            w.write(section(SectionType.TENSOR, descriptor_body(i, t)))
            w.write(_ZEROS[:data_at - w.n])
            self._index.append(_PACK_INDEX_ENTRY(start, data_at, t.stored_length))
        w.n = self._pos = pos

    def _check_tensor(self, i: int, t: Tensor) -> None:
        check_tensor(t, i)  # types and ranges first: no struct.error or coercion below
        if self._done or i >= self.tensor_count:
            raise AvpError(ErrorCode.KIND_CONSTRAINT, "more tensors than tensor_count",
                           path=f"tensor[{i}]")
        if len(t.shape) > 255:
            raise AvpError(ErrorCode.LIMIT_RANK, "rank does not fit u8", path=f"tensor[{i}]")
        if t.quant is not None and t.quant.scheme == QuantScheme.NONE:
            raise AvpError(ErrorCode.QUANT_PARAMS, "quant with scheme NONE; use quant=None",
                           path=f"tensor[{i}]")
        self._checker.check(t)
        if t.role == Role.ATTENTION_MASK and t.raw_length and int(
                np.frombuffer(t.raw_bytes(), np.uint8).max()) > 1:
            raise AvpError(ErrorCode.INVALID_VALUE, "ATTENTION_MASK holds only 0 and 1 (R-10.8)",
                           path=f"tensor[{i}]")

    def _write_fused(self, i: int, t: Tensor) -> None:
        """Into a random-access buffer: copy the data first, computing its CRC as it is copied
        (``_parallel.copy_crc``: one pass), then write the descriptor (which carries the CRC) in
        front of it. The bytes are the same as the streaming order produces; the source is read
        once instead of twice."""
        w = self._w
        assert isinstance(w, _Into)
        start = self._pos
        sec_len = 24 + 64 + 8 * len(t.shape)
        data_at = start + sec_len + pad64(start + sec_len)
        stop = data_at + t.stored_length
        if stop > len(w.buf):
            raise ValueError("buffer too small for the encoded message")
        t._crc = _parallel.copy_crc(np.frombuffer(w.buf, np.uint8)[data_at:stop], t.stored)
        w.n = stop
        w.write(_ZEROS[:pad8(w.n)])
        end = w.n
        w.n = start
        w.write(section(SectionType.TENSOR, descriptor_body(i, t)))
        w.write(_ZEROS[:pad64(w.n)])
        assert w.n == data_at
        w.n = end
        self._pos = end

    def finish(self) -> int:
        """Write the INDEX and Trailer after the last tensor (and the whole-message checks:
        tiling, parameter references, every layer carrying a tensor); returns the total number
        of bytes written."""
        if len(self._index) != self.tensor_count:
            raise AvpError(ErrorCode.KIND_CONSTRAINT, f"{len(self._index)} tensors written, "
                           f"tensor_count is {self.tensor_count}", path="tensors")
        self._checker.finish()
        self._done = True
        body = S.build_index_fixed(self.tensor_count) + b"".join(self._index)
        if self._authed:
            tag = self._mac.digest() if self._mac is not None else self._tag
            assert tag is not None and len(tag) == 32
            body += tag
        self._mac = None  # the tag covers bytes before the INDEX only
        index_at = self._pos
        self._out(section(SectionType.INDEX, body))
        self._out(S.build_trailer(index_at))
        return self._pos


class _Parts:
    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []

    def write(self, data: bytes | memoryview) -> None:
        self.parts.append(data)


def _precompute_crcs(tensors: Sequence[Tensor], threads: int) -> None:
    """Compute the tensors' missing data CRCs on ``threads`` threads (CRC32C releases the GIL)."""
    todo = [t for t in tensors if t._crc is None]
    if threads > 1 and len(todo) > 1:
        crcs = _parallel.map_ordered(lambda j: crc32c.crc32c(todo[j].stored),
                                     [t.stored_length for t in todo], threads)
        for t, c in zip(todo, crcs, strict=True):
            t._crc = c


def encode_to(msg: Message, writable: Writable, *,
              auth_key: tuple[bytes, bytes] | None = None, threads: int | None = None) -> int:
    """Encode ``msg`` into ``writable`` (anything with .write); returns bytes written.

    ``threads`` (default: the CPUs this process may use) only changes how fast: the bytes are
    the same for any value."""
    check_message(msg)
    n = _parallel.resolve(threads)
    if not isinstance(writable, _Into) or auth_key is not None:
        _precompute_crcs(msg.tensors, n)
    # A received tag covers the received bytes. It can be reused only when this encoder writes
    # those same bytes again: not when the sender wrote a newer minor version or sections this
    # encoder drops. Then re-encoding needs the key (AUTH_REQUIRED without one, from below).
    same_bytes = msg.minor == 0 and msg.skipped_sections == 0
    enc = StreamEncoder(writable, msg.kind, msg.entries, msg.layers, len(msg.tensors), auth_key,
                        _reuse_tag=msg.auth_tag if same_bytes else None)
    enc.write_tensors(msg.tensors, n)
    return enc.finish()


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes | memoryview) -> None:
        self.n += len(data)


class _Into:
    """Writes into a caller's buffer (one memcpy per part, no allocation)."""

    def __init__(self, buf: memoryview) -> None:
        self.buf, self.n = buf, 0

    def write(self, data: bytes | memoryview) -> None:
        end = self.n + len(data)
        if end > len(self.buf):
            raise ValueError("buffer too small for the encoded message")
        self.buf[self.n:end] = data
        self.n = end


def encoded_size(msg: Message, *, auth_key: tuple[bytes, bytes] | None = None,
                 threads: int | None = None) -> int:
    """The exact encoded length of ``msg`` (computes and caches the tensors' CRCs)."""
    return encode_to(msg, _Count(), auth_key=auth_key, threads=threads)


def encode_into(msg: Message, buf: bytearray | memoryview | Any, *,
                auth_key: tuple[bytes, bytes] | None = None, threads: int | None = None) -> int:
    """Encode into a preallocated writable buffer (bytearray, mmap, numpy uint8 array...);
    returns the number of bytes written. Size it with ``encoded_size``. Tensor data are copied
    once, their CRCs computed as they are copied, on ``threads`` threads (default: the CPUs
    this process may use); the bytes are the same for any value.

    >>> import avp_codec as avp
    >>> msg = avp.text_message("hi")
    >>> buf = bytearray(avp.encoded_size(msg))
    >>> n = avp.encode_into(msg, buf)
    >>> n == len(buf), bytes(buf) == avp.encode(msg)
    (True, True)"""
    mv = byte_view(buf, "buf")
    if mv.readonly:
        raise ValueError("encode_into needs a writable buffer")
    return encode_to(msg, _Into(mv), auth_key=auth_key, threads=threads)


def encode(msg: Message, *, auth_key: tuple[bytes, bytes] | None = None,
           threads: int | None = None) -> bytes:
    """Encode ``msg`` to its one canonical byte string (the same for any ``threads``).

    Every rule the decoder applies is applied first, so the result always decodes. Hostile or
    mistaken input (a field of the wrong type, a negative layer index, a float dimension, a
    registry look-alike) is ``AvpError`` with the decoder's code and the field's path, or
    ``TypeError`` for arguments of the wrong type; memory is the output plus the tensors'
    descriptors.

    >>> import avp_codec as avp
    >>> avp.encode(avp.text_message("hi"))[:8]
    b'\\x89AVP\\r\\n\\x1a\\n'
    >>> avp.encode(b"abc")
    Traceback (most recent call last):
    TypeError: msg must be an avp_codec.Message, not bytes

    Authentication (spec 15): ``auth_key=(key_id, key)`` adds the AUTH_KEY_ID entry and an
    HMAC-SHA256 tag; the receiver passes the keys it holds (``keys={key_id: key}``) and
    ``require_auth=True`` to refuse anything unauthenticated.

    >>> key_id, key = b"agent-a", bytes(range(32))
    >>> signed = avp.encode(avp.text_message("hi"), auth_key=(key_id, key))
    >>> avp.decode(signed, keys={key_id: key}, require_auth=True).authenticated
    True
    >>> try:
    ...     avp.decode(signed, keys={key_id: bytes(32)})
    ... except avp.AvpError as e:
    ...     print(e.code, e.path)
    AUTH_FAILED index.tag
    """
    sink = _Parts()
    encode_to(msg, sink, auth_key=auth_key, threads=threads)
    return b"".join(sink.parts)



def compress_message(msg: Message, codec: Codec | int, *, level: int | None = None,
                     threads: int | None = None) -> Message:
    """A copy of ``msg`` whose RAW tensors are stored with ``codec`` (lossless), where the codec
    accepts their dtype and makes them smaller; the other tensors are kept as they are.

    Tensors are compressed on ``threads`` threads (default: the CPUs this process may use), each
    by one zstd context; ``level`` is zstd's level (default: the codec's, see _codecs). The
    stored bytes are the same for any ``threads``."""
    c = Codec(codec)
    n = _parallel.resolve(threads)
    todo = [i for i, t in enumerate(msg.tensors)
            if t.codec == Codec.RAW and c != Codec.RAW and _codecs.dtype_error(c, t.dtype) is None]

    def run(j: int) -> Tensor:
        t = msg.tensors[todo[j]]
        stored = _codecs.compress(t.stored, c, t.dtype, t.shape, level=level)
        if len(stored) >= t.stored_length:
            return t
        out = Tensor(t.role, t.dtype, t.shape, stored, layer=t.layer, codec=c, layout=t.layout,
                     token_offset=t.token_offset, quant=t.quant, raw_length=t.raw_length)
        out._raw, out._owner = t._raw, t._owner
        return out

    done = _parallel.map_ordered(run, [msg.tensors[i].stored_length for i in todo], n)
    tensors = list(msg.tensors)
    for i, t in zip(todo, done, strict=True):
        tensors[i] = t
    return Message(msg.kind, list(msg.entries), list(msg.layers), tensors)
