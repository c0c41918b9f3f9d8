"""Random access to a stored message (spec 11.3): Trailer -> INDEX -> HEADER -> any tensor.

``IndexedReader`` reads back to front and touches only the structures it is asked for, so it
validates less than a full decode (R-11.3 lists what): every structure it reads passes the same
checks as in ``decode`` (shared code), offsets from the INDEX are bounds-checked before use, and
tensor data is returned only after its descriptor and (in verified mode) its CRC passed. Whole-
message rules (tiling, parameter references, order) need ``decode``.

One error vocabulary (spec 17.2): the reader reports what its own steps find (11.3: it starts
at the Trailer, so a cut file is BAD_TRAILER, and an index entry leading to another tensor is
TENSOR_INDEX), with the offsets and paths ``decode`` uses; a fault in a structure it reads as
``decode`` does (the preamble, the HEADER, a tensor) reads exactly as ``decode`` reports it.
"""

from __future__ import annotations

import copy
import mmap
import os
from typing import Any

import crc32c

from . import _structs as S
from ._args import byte_view, check_decode_options, is_int
from ._decode import Core
from ._events import HeaderEvent, TensorEvent
from ._registry import END_MAGIC, ErrorCode, MetaKey, SectionType
from ._validate import TensorChecker
from ._whole import _Whole
from .errors import AvpError
from .limits import DEFAULT_LIMITS, Limits
from .model import Tensor


def _err(code: ErrorCode, msg: str, off: int, path: str) -> AvpError:
    return AvpError(code, msg, offset=off, path=path)


class _Ordinal:
    """Stands in for the core's list of read tensors when reading tensor ``i`` alone: its
    length is ``i`` (what the core numbers the tensor by) at O(1) cost per read."""

    def __init__(self, i: int) -> None:
        self.i = i
        self.last: tuple[int, int, int] | None = None

    def __len__(self) -> int:
        return self.i

    def append(self, entry: tuple[int, int, int]) -> None:
        self.last = entry


class IndexedReader:
    """Random-access reader over bytes, a memoryview or an mmap (``IndexedReader.open(path)``).

    ``header`` is the decoded HEADER (kind, entries, layers, tensor_count); ``tensor(i)`` reads
    and checks tensor ``i`` only; ``index`` lists ``(section_offset, data_offset,
    stored_length)`` per tensor. Opening costs the Trailer, INDEX and HEADER only. The reader
    does not verify authentication tags (that needs every byte; use ``decode`` with ``keys``).

    Hostile input: ``AvpError`` with its code (spec 11.3's steps), offset and path (17.2);
    memory is the HEADER, about 100 bytes per index entry and what ``tensor(i)`` returns; time
    is linear in what it reads.

    >>> import numpy as np, avp_codec as avp
    >>> msg = avp.kv_cache_from_arrays(bytes(32), [np.zeros((1, 1, 2, 4), np.float16)],
    ...                                [np.ones((1, 1, 2, 4), np.float16)])
    >>> r = avp.IndexedReader(avp.encode(msg))
    >>> print(r.header.kind, len(r), r.tensor(1).role, float(r.tensor(1).array().sum()))
    KV_CACHE 2 VALUE 8.0
    """

    def __init__(self, buf: bytes | bytearray | memoryview | mmap.mmap, *, verify: bool = True,
                 limits: Limits | None = None) -> None:
        check_decode_options(limits, verify, None, False)
        mv = byte_view(buf, "buf")
        lim = limits or DEFAULT_LIMITS
        n_all = len(mv)
        if n_all > lim.max_message_bytes:
            raise _err(ErrorCode.LIMIT_MESSAGE, "message larger than max_message_bytes", 0,
                       "message")
        if n_all < 16 or bytes(mv[n_all - 8:]) != END_MAGIC:
            raise _err(ErrorCode.BAD_TRAILER, "no AVP end magic", max(0, n_all - 8),
                       "trailer.end_magic")
        t = S.parse_trailer(mv, n_all - 16)
        at = t.index_offset
        if at % 8 or at < 56 or at + 16 > n_all - 16:
            raise _err(ErrorCode.BAD_TRAILER, "index_offset out of place", n_all - 16,
                       "trailer.index_offset")
        h = S.parse_section_head(mv, at)
        if h.type != SectionType.INDEX:
            raise _err(ErrorCode.SECTION_ORDER, "index_offset does not point at an INDEX", at,
                       "section.type")
        n = h.length
        if at + 20 + n + (-(20 + n) % 8) != n_all - 16:
            raise _err(ErrorCode.BAD_TRAILER, "the INDEX does not end at the Trailer", at + 8,
                       "section.length")
        if crc32c.crc32c(mv[at:at + 16 + n]) != int.from_bytes(mv[at + 16 + n:at + 20 + n],
                                                               "little"):
            raise _err(ErrorCode.SECTION_CHECKSUM, "INDEX CRC32C mismatch", at + 16 + n,
                       "section.crc")
        # Preamble and HEADER, through the full decoder's own code (steps P, S, H).
        self._core = Core(lim, verify, None, False)
        src = _Whole(mv[:at], buf)
        ev = self._core.step(src)
        if not isinstance(ev, HeaderEvent):  # pragma: no cover - Core returns the header first
            raise AssertionError(ev)
        self.header = ev
        authed = any(e.key == MetaKey.AUTH_KEY_ID for e in ev.entries)
        want = 8 + 24 * ev.tensor_count + (32 if authed else 0)
        if n != want:
            raise _err(ErrorCode.HEADER_LAYOUT, f"INDEX body is {n} bytes, expected {want}",
                       at + 8, "index.length")
        body = at + 16
        if int.from_bytes(mv[body:body + 8], "little") != ev.tensor_count:
            raise _err(ErrorCode.INDEX_MISMATCH, "index tensor_count differs from the header",
                       body, "index.tensor_count")
        self.index: list[tuple[int, int, int]] = []
        prev = -1
        for i in range(ev.tensor_count):
            ie = S.parse_index_entry(mv, body + 8 + 24 * i)
            eo = body + 8 + 24 * i
            if ie.data_offset % 64:
                raise _err(ErrorCode.MISALIGNED, "data_offset is not a multiple of 64", eo + 8,
                           f"index[{i}].data_offset")
            if (ie.section_offset <= prev or ie.section_offset % 8
                    or ie.data_offset + ie.stored_length > at
                    or ie.data_offset < ie.section_offset):
                raise _err(ErrorCode.INDEX_MISMATCH, "implausible index entry", eo,
                           f"index[{i}]")
            prev = ie.section_offset
            self.index.append((ie.section_offset, ie.data_offset, ie.stored_length))
        self._index_at = at
        self._src = src

    @classmethod
    def open(cls, path: str | os.PathLike[str], **kw: Any) -> IndexedReader:
        """A reader over a read-only mmap of the file at ``path``."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            m: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        return cls(m, **kw)

    def __len__(self) -> int:
        return len(self.index)

    def tensor(self, i: int) -> Tensor:
        """Read, check and return tensor ``i`` (a zero-copy view in RAW codec).

        ``IndexError`` when ``i`` is not a tensor ordinal; ``AvpError`` when the tensor's
        section, descriptor, data or index entry is at fault (11.3 step 6).
        """
        if not is_int(i):
            raise TypeError(f"tensor index must be an int, not {type(i).__name__}")
        if not 0 <= i < len(self.index):
            raise IndexError(f"tensor {i} of {len(self.index)}")
        sec, data, stored = self.index[i]
        core = copy.copy(self._core)
        core.pos, core.state, core.pending = sec, "sections", None
        read = _Ordinal(i)
        core.index = read  # type: ignore[assignment]
        assert self._core.checker is not None
        core.checker = TensorChecker(self._core.kind or self.header.kind, self.header.layers,
                                     self._core.checker.context_length, standalone_index=i,
                                     layers_at=self._core.checker.layers_at)
        ev = core.step(self._src)
        eo = self._index_at + 24 + 24 * i
        if not isinstance(ev, TensorEvent):
            raise _err(ErrorCode.INDEX_MISMATCH, "index entry does not lead to a tensor", eo,
                       f"index[{i}]")
        if read.last != (sec, data, stored):
            raise _err(ErrorCode.INDEX_MISMATCH, "index entry disagrees with the tensor", eo,
                       f"index[{i}]")
        return ev.tensor
