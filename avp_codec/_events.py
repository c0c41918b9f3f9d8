"""Events of the incremental decoder (spec 11.2) and the byte-source protocol the decoder core
reads from (a complete buffer, or the incremental decoder's buffer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ._registry import Kind
from .model import Entry, Layer, Tensor


@dataclass
class HeaderEvent:
    """The first event of a message: its HEADER (spec 6) was read and checked.

    ``kind``, the metadata ``entries``, the layer table ``layers``, how many tensors follow
    (``tensor_count``) and the format's ``minor`` version. The message is not valid yet: that
    is known only at its ``EndEvent``. ``IndexedReader.header`` is one as well.
    """

    kind: Kind
    entries: list[Entry]
    layers: list[Layer]
    tensor_count: int
    minor: int


@dataclass
class TensorEvent:
    """One tensor of the current message, fully checked (descriptor, data CRC, references to
    earlier tensors); ``index`` is its position in the message (0-based)."""

    index: int
    tensor: Tensor


@dataclass
class DescriptorEvent:
    """A tensor's descriptor, checked (spec 7.1, step T.1-T.18 that need no data), before its
    data is received, checked or decompressed: only with ``Decoder(descriptors=True)``.

    ``tensor`` has its final descriptor fields (role, layer, dtype, shape, codec, layout,
    quant, raw_length, stored_length) and no data yet: ``stored`` is empty and the data
    accessors (``raw_bytes``, ``array``, ``values``) must wait for the ``TensorEvent`` of the
    same ``index``, which carries the same object with its data. A receiver refuses a tensor
    it cannot use here, by raising, so that nothing of it is buffered or inflated.
    """

    index: int
    tensor: Tensor


@dataclass
class EndEvent:
    """The message ended and is valid (INDEX, Trailer and the whole-message checks passed,
    R-11.2). ``authenticated`` is True only when its tag verified with a key the decoder holds;
    ``length`` is the message's size in bytes; ``skipped_sections`` counts the skippable
    sections passed over."""

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


NEED_DATA = _NeedData()
"""Returned by ``Decoder.next_event`` when it needs more bytes: ``feed`` some, or call
``end_of_input``. Compare with ``is``."""
END_OF_STREAM = _EndOfStream()
"""Returned by ``Decoder.next_event`` (on every call) once ``end_of_input`` was called and the
input ended after a complete message: no event will follow. Compare with ``is``."""
Event = HeaderEvent | DescriptorEvent | TensorEvent | EndEvent | _NeedData | _EndOfStream


class Source(Protocol):
    complete: bool  # no more bytes will come: a structure that runs past the end is TRUNCATED
    keeps_all: bool  # every byte from offset 0 stays readable (a complete buffer)
    stream: bool  # bytes after a Trailer begin the next message (Decoder(stream=True))

    def end(self) -> int: ...
    def get(self, off: int, n: int) -> bytes | memoryview: ...
    def discard(self, upto: int) -> None: ...
    def reserve(self, n: int, off: int, path: str) -> None: ...
