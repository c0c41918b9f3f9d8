"""Whole-buffer decoding: ``decode`` over bytes / memoryview / mmap and ``decode_file``.

Tensor data comes back as memoryview slices of the input (no copy), so numpy arrays from
``Tensor.array()`` are views into the caller's buffer or the file's mmap.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from typing import Any

from ._decode import Core
from ._events import EndEvent, HeaderEvent, TensorEvent
from ._registry import ErrorCode
from .errors import AvpError
from .limits import DEFAULT_LIMITS, Limits
from .model import Message, Tensor


class _Whole:
    complete = True

    def __init__(self, mv: memoryview, owner: Any) -> None:
        self.mv = mv
        self.owner = owner

    def end(self) -> int:
        return len(self.mv)

    def get(self, off: int, n: int) -> memoryview:
        return self.mv[off:off + n]

    def discard(self, upto: int) -> None:
        pass

    def reserve(self, n: int, off: int) -> None:
        pass


def decode(buf: bytes | bytearray | memoryview | mmap.mmap, *, verify: bool = True,
           limits: Limits | None = None, keys: Mapping[bytes, bytes] | None = None,
           require_auth: bool = False) -> Message:
    """Decode one complete message. ``keys`` maps AUTH_KEY_ID values to HMAC keys."""
    mv = memoryview(buf)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    lim = limits or DEFAULT_LIMITS
    if len(mv) > lim.max_message_bytes:
        raise AvpError(ErrorCode.LIMIT_MESSAGE, f"{len(mv)} bytes > max_message_bytes",
                       offset=0)
    core = Core(lim, verify, keys, require_auth)
    src = _Whole(mv, buf)
    header: HeaderEvent | None = None
    tensors: list[Tensor] = []
    while True:
        ev = core.step(src)
        if isinstance(ev, HeaderEvent):
            header = ev
        elif isinstance(ev, TensorEvent):
            tensors.append(ev.tensor)
        elif isinstance(ev, EndEvent):
            assert header is not None
            return Message(header.kind, header.entries, header.layers, tensors,
                           authenticated=ev.authenticated, auth_tag=ev.auth_tag,
                           minor=header.minor, skipped_sections=ev.skipped_sections)
        else:  # a complete source never asks for more data
            raise AssertionError("NEED_DATA from a complete buffer")


def decode_file(path: str | os.PathLike[str], *, verify: bool = True,
                limits: Limits | None = None, keys: Mapping[bytes, bytes] | None = None,
                require_auth: bool = False) -> Message:
    """Decode a file through a read-only mmap; tensor arrays are views of the mapping."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return decode(b"", verify=verify, limits=limits, keys=keys,
                          require_auth=require_auth)
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return decode(m, verify=verify, limits=limits, keys=keys, require_auth=require_auth)
