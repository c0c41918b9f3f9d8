"""The one exception type of the codec (spec section 17).

Every rejection carries a stable registry code; tests and conformance vectors compare codes,
never message text. ``offset`` is the absolute byte offset of the structure or field at fault
(None when the fault is not tied to a byte, e.g. an encoder given an invalid message) and
``path`` names the field, e.g. ``tensor[3].shape[1]``.
"""

from __future__ import annotations

from ._registry import ErrorCode


class AvpError(Exception):
    """A message, or a request to build one, violates the AVP spec.

    ``code`` is the ``ErrorCode`` (stable: compare it, never the text), ``offset`` the absolute
    byte offset of the structure or field at fault (None when no byte is at fault, e.g. an
    encoder refusing a value), ``path`` the field (spec 17.2: ``tensor[3].shape[1]``,
    ``header.tensor_count``, ``entries[0].value``), ``detail`` the human-readable reason.
    The same fault gives the same ``(code, offset, path)`` from ``decode``, ``decode_file``,
    ``Decoder`` (any chunking) and avp-dump. It pickles (for multiprocessing).

    >>> import avp_codec as avp
    >>> wire = bytearray(avp.encode(avp.text_message("hi")))
    >>> wire[8] = 9                                     # the major version: 9.0
    >>> try:
    ...     avp.decode(bytes(wire))
    ... except avp.AvpError as e:
    ...     print(e.code, e.offset, e.path)
    ...     print(e)
    UNSUPPORTED_VERSION 8 preamble.major
    UNSUPPORTED_VERSION [2]: ... (preamble.major, offset 8)
    """

    def __init__(self, code: ErrorCode, message: str, *, offset: int | None = None,
                 path: str = "") -> None:
        self.code = ErrorCode(code)
        self.offset = offset
        self.path = path
        self.detail = message
        where = []
        if path:
            where.append(path)
        if offset is not None:
            where.append(f"offset {offset}")
        suffix = f" ({', '.join(where)})" if where else ""
        super().__init__(f"{self.code.name} [{int(self.code)}]: {message}{suffix}")

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the exception picklable for multiprocessing users (args differ from __init__'s).
        return (_rebuild, (int(self.code), self.detail, self.offset, self.path))


def _rebuild(code: int, message: str, offset: int | None, path: str) -> AvpError:
    return AvpError(ErrorCode(code), message, offset=offset, path=path)
