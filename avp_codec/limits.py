"""Resource limits (spec section 16): every declared size is checked against these before the
decoder allocates anything for it. Callers may raise or lower them."""

from __future__ import annotations

from dataclasses import dataclass

from ._registry import ErrorCode


@dataclass(frozen=True)
class Limits:
    """The resource limits a decoder enforces (spec 16), each checked against what a message
    declares before anything is allocated for it; exceeding one is ``AvpError`` with its
    LIMIT_* code. Pass one to ``decode``, ``decode_file``, ``Decoder`` or ``IndexedReader``.

    The defaults are the spec's (what a decoder uses when the caller says nothing: up to a
    1 TiB message, 16 GiB per tensor); a receiver facing the network lowers them to what it is
    prepared to hold. A value equal to a limit passes (R-16.1). ``max_buffer_bytes``
    bounds the single structure the incremental decoder waits to see whole.

    >>> import numpy as np, avp_codec as avp
    >>> kv = [np.zeros((1, 2, 4, 8), np.float16)] * 3
    >>> wire = avp.encode(avp.kv_cache_from_arrays(bytes(32), kv, kv))
    >>> strict = avp.Limits(max_tensors=4, max_tensor_bytes=1 << 20)
    >>> try:
    ...     avp.decode(wire, limits=strict)
    ... except avp.AvpError as e:
    ...     print(e.code, e.path)
    LIMIT_TENSORS header.tensor_count
    """

    max_message_bytes: int = 1 << 40
    max_header_bytes: int = 16 << 20
    max_entries: int = 4096
    max_layers: int = 65536
    max_tensors: int = 1 << 20
    max_rank: int = 8
    max_tensor_bytes: int = 1 << 34
    max_buffer_bytes: int = 256 << 20


DEFAULT_LIMITS = Limits()

# The error each limit raises, in the spec's table order.
LIMIT_ERRORS: dict[str, ErrorCode] = {
    "max_message_bytes": ErrorCode.LIMIT_MESSAGE,
    "max_header_bytes": ErrorCode.LIMIT_HEADER,
    "max_entries": ErrorCode.LIMIT_ENTRIES,
    "max_layers": ErrorCode.LIMIT_LAYERS,
    "max_tensors": ErrorCode.LIMIT_TENSORS,
    "max_rank": ErrorCode.LIMIT_RANK,
    "max_tensor_bytes": ErrorCode.LIMIT_TENSOR,
    "max_buffer_bytes": ErrorCode.LIMIT_BUFFER,
}
