"""Whole-buffer decoding: ``decode`` over bytes / memoryview / mmap and ``decode_file``.

Tensor data comes back as memoryview slices of the input (no copy), so numpy arrays from
``Tensor.array()`` are views into the caller's buffer or the file's mmap.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Mapping
from typing import Any

import crc32c

from . import _codecs, _parallel
from . import _decode as D
from ._args import byte_view, check_decode_options
from ._decode import Core
from ._dtypes import PACKED, packed_tail_ok
from ._events import EndEvent, HeaderEvent, TensorEvent
from ._registry import NO_REF, Codec, ErrorCode, SectionType
from .errors import AvpError
from .limits import DEFAULT_LIMITS, Limits
from .model import Message, Tensor


class _Whole:
    complete = True
    keeps_all = True
    stream = False

    def __init__(self, mv: memoryview, owner: Any) -> None:
        self.mv = mv
        self.owner = owner

    def end(self) -> int:
        return len(self.mv)

    def get(self, off: int, n: int) -> memoryview:
        return self.mv[off:off + n]

    def discard(self, upto: int) -> None:
        pass

    def reserve(self, n: int, off: int, path: str) -> None:
        pass


def decode(buf: bytes | bytearray | memoryview | mmap.mmap, *, verify: bool = True,
           limits: Limits | None = None, keys: Mapping[bytes, bytes] | None = None,
           require_auth: bool = False, threads: int | None = None) -> Message:
    """Decode one complete message (spec 9.2); tensor data are zero-copy views of ``buf``.

    ``verify=False`` skips the tensor data CRCs (9.3); ``keys`` maps AUTH_KEY_ID values to HMAC
    keys; ``require_auth`` refuses a message without a verified tag. A byte after the Trailer is
    ``TRAILING_BYTES`` (use ``Decoder(stream=True)`` for messages back to back). ``threads``
    (default: the CPUs this process may use) spreads the tensors' data CRC32Cs over threads; the
    result, and the error raised for an invalid message, are the same for any value.

    Hostile input: every fault is an ``AvpError`` with its registry code, the offset of the
    structure or field at fault and its path (spec 17.2), found in linear time with constant
    stack (any number of skippable sections). Memory: the returned message (about 900 bytes per
    tensor, and its entries and layers; decompressed data only for codecs other than raw, at
    most each tensor's ``raw_length``, itself at most ``max_tensor_bytes``) plus a constant;
    nothing is allocated in proportion to a declared size before the limits (spec 16) passed.
    Arguments of the wrong type are ``TypeError``.

    >>> import avp_codec as avp
    >>> msg = avp.decode(avp.encode(avp.text_message("hello")))
    >>> print(msg.kind, msg.get(avp.MetaKey.TEXT))
    TEXT hello
    """
    check_decode_options(limits, verify, keys, require_auth)
    n_threads = _parallel.resolve(threads)
    mv = byte_view(buf, "buf")
    lim = limits or DEFAULT_LIMITS
    if len(mv) > lim.max_message_bytes:
        raise AvpError(ErrorCode.LIMIT_MESSAGE, f"{len(mv)} bytes > max_message_bytes",
                       offset=0, path="message")
    core = Core(lim, verify, keys, require_auth)
    src = _Whole(mv, buf)
    header = core.step(src)  # a complete source yields the HEADER first (or raises)
    if not isinstance(header, HeaderEvent):
        raise AssertionError(f"{header!r} before the HEADER")
    tensors: list[Tensor] = []
    # Data work the fast path deferred, to run on threads (see _Deferred).
    deferred: list[_Deferred] | None = (
        [] if n_threads > 1 and len(mv) >= _parallel.MIN_PARALLEL_BYTES else None)
    try:
        while True:
            _plain_tensors(core, mv, src, tensors, deferred)
            ev = core.step(src)
            if isinstance(ev, TensorEvent):
                tensors.append(ev.tensor)
            elif isinstance(ev, EndEvent):
                break
            else:  # a complete source never asks for more data, and has one HEADER
                raise AssertionError(f"{ev!r} after the HEADER")
    except AvpError:
        # A data CRC failure comes before anything found later in the message (spec 9.2).
        _check_deferred(mv, deferred, n_threads)
        raise
    _check_deferred(mv, deferred, n_threads)
    return Message(header.kind, header.entries, header.layers, tensors,
                   authenticated=ev.authenticated, auth_tag=ev.auth_tag,
                   minor=header.minor, skipped_sections=ev.skipped_sections)


# (tensor index, data_at, stop, data CRC to check or None, tensor to decompress or None)
_Deferred = tuple[int, int, int, "int | None", "Tensor | None"]


def _check_deferred(mv: memoryview, deferred: list[_Deferred] | None, threads: int) -> None:
    """Run deferred data checks (CRC, then decompression and its checks, as the core's data
    stage orders them) on ``threads`` threads; raise the first tensor's error, in order."""
    if not deferred:
        return
    crc = crc32c.crc32c

    def run(j: int) -> AvpError | None:
        i, data_at, stop, want, t = deferred[j]
        if want is not None and crc(mv[data_at:stop]) != want:
            return AvpError(ErrorCode.DATA_CHECKSUM, "tensor data CRC32C mismatch",
                            offset=data_at, path=f"tensor[{i}].data")
        if t is not None:
            try:
                t._raw = _codecs.decompress(t.stored, t.codec, t.raw_length, t.dtype, t.shape,
                                            f"tensor[{i}].data")
            except AvpError as e:
                e.offset = data_at
                return e
            if t.dtype in PACKED and not packed_tail_ok(t._raw, t.dtype, D._prod(t.shape)):
                return AvpError(ErrorCode.NONZERO_PADDING, "unused bits of the last packed "
                                "byte", offset=stop - 1, path=f"tensor[{i}].data")
        return None

    weights = [(stop - at) * (1 if t is None else 8) for _, at, stop, _, t in deferred]
    for err in _parallel.map_ordered(run, weights, threads):
        if err is not None:
            raise err


def _plain_tensors(core: Core, mv: memoryview, src: _Whole, out: list[Tensor],
                   deferred: list[_Deferred] | None = None) -> None:
    """Accept the run of well-formed TENSOR sections at ``core.pos``, appending to ``out``.

    The fast path of ``decode`` (issue 2: unverified decode < 1 ms): with every byte present
    it needs none of the incremental machinery, so it reads the buffer directly and tests each
    section and descriptor with one condition. It produces no error of its own: at the first
    section that is not a TENSOR or fails any condition it stops, untouched, and ``core.step``
    checks that section in the spec 9.2 order and raises the precise error. The tensor rules
    (``checker.check``) and quantization fields run the core's own code, and a tensor whose data
    is not plain zero-copy RAW bytes with zero padding (or fails its CRC) goes through the
    core's data stage, so each check has exactly one implementation with its error. With
    ``deferred``, a tensor's data CRC and decompression are not done here but listed there,
    for ``decode`` to run on threads (a failure then raises the same error as the core would).
    """
    checker = core.checker
    if core.state != "sections" or checker is None:
        return
    check, index, mac, lim = checker.check, core.index, core.mac, core.lim
    known = checker.acceptor()  # for tensors without quant fields
    verify = core.verify and deferred is None  # inline CRCs, or none here (deferred)
    size, count, pos = len(mv), core.tensor_count, core.pos
    max_rank, max_bytes, max_desc = lim.max_rank, lim.max_tensor_bytes, D._MAX_DESC
    # Module attributes bound to locals: this loop runs once per tensor.
    whole = _WHOLE_DESC
    dtypes, codecs, roles, layouts = D._DTYPES, D._CODECS, D._ROLES, D._LAYOUTS
    crc, from_bytes, pending = crc32c.crc32c, int.from_bytes, Tensor._pending
    i = len(index)
    while i < count and pos + 84 <= size:
        at = pos
        rank = mv[at + 28]  # the descriptor's rank byte sizes the whole section head
        desc_end = at + 84 + 8 * rank  # section head, descriptor, shape, CRC
        if rank > max_rank or desc_end > size:
            break
        # One unpack for the section head, the descriptor, its shape and the section CRC.
        f = whole[rank](mv, at)
        (stype, flags, n, tensor_index, layer, role_c, dtype_c, codec_c, _rank, layout_c, scheme,
         axis, group, scale, zero, dequant, reserved1, token_offset, raw_length, stored_length,
         data_crc, reserved2) = f[:22]
        if stype != _TENSOR or flags or n != 64 + 8 * rank or n > max_desc:
            break
        end = at + 20 + n + (-(20 + n) % 8)
        data_at = end + (-end % 64)
        if data_at > size:
            break
        # The section's pad8 and the padding before the data are adjacent: one test for both
        # (a nonzero byte in the latter belongs to the data stage, which the fallback reaches).
        if (raw_length > max_bytes or stored_length > max_bytes
                or crc(mv[at:at + 16 + n]) != f[-1]
                or from_bytes(mv[at + 20 + n:data_at], "little")
                or reserved1 != b"\0\0\0" or reserved2 or tensor_index != i):
            break
        dtype, codec = dtypes.get(dtype_c), codecs.get(codec_c)
        role, layout = roles.get(role_c), layouts.get(layout_c)
        if dtype is None or codec is None or role is None or layout is None:
            break
        quant = core._quant_fields(scheme, axis, group, scale, zero, dequant, at + 16, i) if (
            scheme or axis or group or dequant or scale != NO_REF or zero != NO_REF) else None
        shape, ordinal = f[22:-1], None if layer == NO_REF else layer
        t = pending(role, dtype, shape, ordinal, codec, layout, token_offset, quant, raw_length,
                    stored_length, data_crc)
        if quant is not None or not known(role, dtype, shape, ordinal, codec, layout,
                                          token_offset, raw_length, stored_length, at + 16):
            check(t, at + 16)
        stop = data_at + stored_length
        data_end = stop + (-stop % 8)
        padded = data_end > size or (data_end > stop and from_bytes(mv[stop:data_end], "little"))
        if deferred is not None and codec is not _RAW and not padded:
            deferred.append((i, data_at, stop, data_crc if core.verify else None, t))
            t._attach(mv[data_at:stop], src)
            index.append((at, data_at, stored_length))
            if mac is not None:
                mac.update(mv[at:data_end])
            out.append(t)
            pos, i = data_end, i + 1
            continue
        if (padded or codec is not _RAW or dtype in PACKED
                or (verify and crc(mv[data_at:stop]) != data_crc)):
            # The section is accepted: consume it as _section does, then let the core's data
            # stage decompress, or find the error in order.
            if mac is not None:
                mac.update(mv[at:end])
            core.pos, core.pending, core.state = end, (t, at, end), "data"
            ev = core._data(src)
            assert isinstance(ev, TensorEvent)  # a complete source: a tensor or an error
            out.append(ev.tensor)
            pos, i = core.pos, i + 1
            continue
        if deferred is not None and core.verify:
            deferred.append((i, data_at, stop, data_crc, None))
        t._attach(mv[data_at:stop], src)
        index.append((at, data_at, stored_length))
        if mac is not None:
            mac.update(mv[at:data_end])
        out.append(t)
        pos, i = data_end, i + 1
    core.pos = pos


_TENSOR = int(SectionType.TENSOR)
_RAW = Codec.RAW
# Per rank: section head, tensor descriptor, shape and the section's CRC32C, in one Struct.
_WHOLE_DESC = [struct.Struct("<LLQLLHBBBBBBLLLB3sQQQLL" + f"{r}QL").unpack_from
               for r in range(256)]


def decode_file(path: str | os.PathLike[str], *, verify: bool = True,
                limits: Limits | None = None, keys: Mapping[bytes, bytes] | None = None,
                require_auth: bool = False, threads: int | None = None) -> Message:
    """Decode a file through a read-only mmap; tensor arrays are views of the mapping.

    The same checks, errors and bounds as :func:`decode` (the file's bytes are mapped, not
    read into memory). OS errors (a missing file) are ``OSError`` as usual.

    >>> import os, tempfile, avp_codec as avp
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "hello.avp")
    ...     with open(path, "wb") as f:
    ...         _ = f.write(avp.encode(avp.text_message("hello")))
    ...     print(avp.decode_file(path).get(avp.MetaKey.TEXT))
    hello
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    check_decode_options(limits, verify, keys, require_auth)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return decode(b"", verify=verify, limits=limits, keys=keys,
                          require_auth=require_auth, threads=threads)
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return decode(m, verify=verify, limits=limits, keys=keys, require_auth=require_auth,
                  threads=threads)
