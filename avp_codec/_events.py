"""Events of the incremental decoder (spec 11.2) and the byte-source protocol the decoder core
reads from (a complete buffer, or the incremental decoder's buffer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ._registry import Kind
from .model import Entry, Layer, Tensor


@dataclass
class HeaderEvent:
    kind: Kind
    entries: list[Entry]
    layers: list[Layer]
    tensor_count: int
    minor: int


@dataclass
class TensorEvent:
    index: int
    tensor: Tensor


@dataclass
class EndEvent:
    authenticated: bool
    auth_tag: bytes | None
    length: int
    minor: int = 0
    skipped_sections: int = 0


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


class _EndOfStream:
    def __repr__(self) -> str:
        return "END_OF_STREAM"


NEED_DATA = _NeedData()  # the incremental decoder needs more bytes to make progress
END_OF_STREAM = _EndOfStream()  # the incremental decoder is done: no event will follow
Event = HeaderEvent | TensorEvent | EndEvent | _NeedData | _EndOfStream


class Source(Protocol):
    complete: bool  # no more bytes will come: a structure that runs past the end is TRUNCATED
    keeps_all: bool  # every byte from offset 0 stays readable (a complete buffer)
    stream: bool  # bytes after a Trailer begin the next message (Decoder(stream=True))

    def end(self) -> int: ...
    def get(self, off: int, n: int) -> bytes | memoryview: ...
    def discard(self, upto: int) -> None: ...
    def reserve(self, n: int, off: int, path: str) -> None: ...
