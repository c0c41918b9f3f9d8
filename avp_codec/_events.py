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


NEED_DATA = _NeedData()
Event = HeaderEvent | TensorEvent | EndEvent | _NeedData


class Source(Protocol):
    complete: bool

    def end(self) -> int: ...
    def get(self, off: int, n: int) -> bytes | memoryview: ...
    def discard(self, upto: int) -> None: ...
    def reserve(self, n: int, off: int) -> None: ...
