"""Opening inputs as one read-only buffer without reading them into memory.

A regular file (or stdin redirected from one) is mmapped, so a 10 GB message costs only the pages
the walker touches.  A pipe cannot be mapped: it is spooled to an unlinked temporary file in 1 MiB
pieces and that file is mapped, so messages larger than memory still work.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from ._ctx import BufferLike
from ._spec import Limits

_SPOOL_CHUNK = 1 << 20
_MAX_SPOOL = Limits().max_message_bytes + 1


class InputError(Exception):
    """The input could not be opened or read (exit status 2, not an AVP verdict)."""


def _map_fd(fd: int) -> BufferLike:
    size = os.fstat(fd).st_size
    if size == 0:
        return b""  # mmap refuses empty files; an empty input is still a (truncated) message
    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)


@contextmanager
def open_input(path: str, stdin: BinaryIO | None = None) -> Iterator[BufferLike]:
    """Yield the bytes of ``path`` (``-`` = standard input) as a read-only buffer."""
    if path == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        with _open_stream(stream) as buf:
            yield buf
        return
    try:
        fh = open(path, "rb")  # noqa: SIM115 - the mmap must outlive this statement
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror or exc}") from exc
    with fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            with _open_stream(fh) as buf:  # e.g. a FIFO or /dev/stdin given by name
                yield buf
            return
        buf = _map_fd(fh.fileno())
        try:
            yield buf
        finally:
            _close(buf)


@contextmanager
def _open_stream(stream: BinaryIO) -> Iterator[BufferLike]:
    try:
        fd = stream.fileno()
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except (OSError, ValueError, AttributeError):
        fd, regular = -1, False
    if regular and stream.seekable() and stream.tell() == 0:
        buf = _map_fd(fd)
        try:
            yield buf
        finally:
            _close(buf)
        return
    with tempfile.TemporaryFile(prefix="avp-dump-") as spool:
        # An endless stream (/dev/zero, a runaway producer) stops one byte past the spec's
        # max_message_bytes: enough for the walker to report LIMIT_MESSAGE, as decode would.
        left = _MAX_SPOOL
        while left > 0:
            chunk = stream.read(min(_SPOOL_CHUNK, left))
            if not chunk:
                break
            spool.write(chunk)
            left -= len(chunk)
        spool.flush()
        buf = _map_fd(spool.fileno())
        try:
            yield buf
        finally:
            _close(buf)


def _close(buf: BufferLike) -> None:
    if isinstance(buf, mmap.mmap):
        # A caller may still hold a view (e.g. a decoded Message); the mapping is then
        # released when the last view goes away.
        with contextlib.suppress(BufferError):
            buf.close()
