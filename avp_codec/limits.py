"""Resource limits (spec section 16): every declared size is checked against these before the
decoder allocates anything for it. Callers may raise or lower them."""

from __future__ import annotations

from dataclasses import dataclass

from ._registry import ErrorCode


@dataclass(frozen=True)
class Limits:
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
