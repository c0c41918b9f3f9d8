"""The sans-IO incremental decoder (h11 style): bytes in, events out, no I/O of its own.

It buffers at most one structure (a section, or one tensor's padded data); a structure that
would need more than ``max_buffer_bytes`` is refused with LIMIT_BUFFER before it is buffered.
Tensors in events own a copy of their bytes (the buffer is reused), unlike whole-buffer decode.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Mapping

from ._args import check_decode_options
from ._decode import Core
from ._events import END_OF_STREAM, NEED_DATA, EndEvent, Event
from ._registry import ErrorCode
from .errors import AvpError
from .limits import DEFAULT_LIMITS, Limits

_SMALL = 1 << 16  # pieces shorter than this are gathered into one bytearray


class _Buffered:
    """The bytes fed and not yet consumed, kept as the pieces they came in.

    A bytearray that is appended to and consumed from the front reallocates and copies what
    it holds as it grows: a 2 MiB tensor fed in 256 KiB pieces was copied about 4.5 times
    over before it was complete. Large pieces are kept as they are (``bytes`` by reference,
    other buffers copied once, since the caller may reuse them); small ones are gathered into
    a bytearray of up to ~128 KiB, so a peer that sends one byte at a time costs no object per
    byte. ``get`` joins just the range asked for: one copy of each byte in all.
    """

    keeps_all = False

    def __init__(self, limits: Limits, stream: bool) -> None:
        self.parts: deque[bytes | bytearray] = deque()
        self.head = 0  # bytes of parts[0] already consumed
        self.size = 0  # bytes held, from ``base``
        self.base = 0  # offset of the first byte held, from the current message's first byte
        self.complete = False
        self.limits = limits
        self.stream = stream

    def append(self, data: bytes | bytearray | memoryview) -> None:
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        if not n:
            return
        parts = self.parts
        if n >= _SMALL:
            parts.append(data if type(data) is bytes else bytes(data))
        elif parts and type(parts[-1]) is bytearray and len(parts[-1]) < _SMALL:
            parts[-1] += data if not isinstance(data, memoryview) else data.cast("B")
        else:
            parts.append(bytearray(data))
        self.size += n

    def end(self) -> int:
        return self.base + self.size

    def get(self, off: int, n: int) -> bytes:
        i = off - self.base + self.head
        parts = self.parts
        first = parts[0] if parts else b""
        if i + n <= len(first):
            return bytes(memoryview(first)[i:i + n])
        whole = off == self.base and n >= _SMALL  # a large structure from the first byte held
        out = []
        covered = 0  # parts read to their end
        for p in parts:
            if i >= len(p):
                i -= len(p)
                covered += 1
                continue
            take = memoryview(p)[i:i + n]
            out.append(take)
            n -= len(take)
            if i + len(take) == len(p):
                covered += 1
            i = 0
            if not n:
                break
        got = b"".join(out)
        rest = len(parts[covered]) - len(out[-1]) if whole and covered < len(out) else 0
        for v in out:  # a gathering bytearray may grow again: hold no export of it
            v.release()
        if whole:
            # The joined bytes replace the pieces they came from, so a large HEADER or tensor
            # is held once, not as pieces plus their join until it is consumed. A last piece
            # read only in part keeps its remainder (at most one piece is copied).
            for _ in range(covered):
                parts.popleft()
            if rest:
                tail = parts.popleft()
                parts.appendleft(tail[len(tail) - rest:])
            parts.appendleft(got)
            self.head = 0
        return got

    def discard(self, upto: int) -> None:
        k = upto - self.base
        self.base = upto
        self.size -= k
        k += self.head
        parts = self.parts
        while parts and k >= len(parts[0]):
            k -= len(parts.popleft())
        self.head = k

    def reserve(self, n: int, off: int, path: str) -> None:
        if self.stream and off + n > self.limits.max_message_bytes:
            # In a stream, bytes past this message belong to the next one, so the feed size
            # says nothing; a structure of this message ending past the limit does (step M).
            raise AvpError(ErrorCode.LIMIT_MESSAGE, "message exceeds max_message_bytes",
                           offset=0, path="message")
        if n > self.limits.max_buffer_bytes:
            raise AvpError(ErrorCode.LIMIT_BUFFER, f"a {n}-byte structure exceeds "
                           "max_buffer_bytes", offset=off, path=path)


class Decoder:
    """Decode AVP messages from bytes that arrive in pieces (spec 11.2); no I/O of its own.

    Feed bytes with :meth:`feed` as they arrive and call :meth:`next_event` until it returns
    ``NEED_DATA``. The events of one message come in this order: one ``HeaderEvent`` (kind,
    entries, layer table, tensor_count), one ``TensorEvent`` per tensor (each fully checked,
    its data CRC included), then one ``EndEvent`` (INDEX, Trailer and the whole-message checks
    passed; only now is the message valid, R-11.2). When the peer closes, call
    :meth:`end_of_input`: a message cut short is then ``TRUNCATED``.

    By default the decoder reads exactly one message, like :func:`avp_codec.decode`: a byte after
    its Trailer is ``TRAILING_BYTES``, and after :meth:`end_of_input` the decoder reports
    ``END_OF_STREAM``. With ``stream=True`` it reads a sequence of messages
    back to back on one stream (a pipe, a long-lived connection): after each ``EndEvent`` the
    next byte starts the next message, and once :meth:`end_of_input` was called between two
    messages, :meth:`next_event` returns ``END_OF_STREAM``. Offsets in errors and events count
    from the current message's first byte (as ``decode`` of that message alone would report
    them); ``message_offset`` is that byte's offset in the stream.

    Errors are ``AvpError`` with the code, offset and field path ``decode`` reports for the same
    input; after one, every call raises it again. Memory: the bytes fed and not yet consumed
    (at most one structure of ``max_buffer_bytes`` waits for completion), the objects of the
    events it returns, and about 200 bytes per tensor of the current message for the
    whole-message checks (freed at its end).

    Two options serve receivers that must not pay for what they do not use (spec 11.2):

    - ``keep_raw=False``: a compressed tensor is verified (every check of step T.19: the frame,
      the exact raw_length, R-7.17, the packed padding) by streaming its decompression through a
      scratch buffer of 1 MiB that is dropped, instead of inflating it into ``raw_length``
      bytes. Its event's tensor keeps its stored bytes and inflates them again when
      ``raw_bytes()`` / ``array()`` is first called. For a receiver that validates without
      reading values (a message store), memory per tensor is then its stored bytes plus a
      constant, whatever it declares; frames whose decoding window exceeds 8 MiB are refused
      (``DECOMPRESSION_FAILED``, which R-7.13 allows). The verdict is otherwise the same.
    - ``descriptors=True``: each tensor is also reported by a ``DescriptorEvent`` as soon as
      its descriptor has been read and checked, before its data is received, checked or
      decompressed; the ``TensorEvent`` follows once the data is there. A receiver that refuses
      a tensor from its role, layer, dtype, shape or codec (another model's shapes, say) does so
      before the tensor costs it anything.

    >>> import avp_codec as avp
    >>> one = avp.encode(avp.text_message("hi"))
    >>> dec = avp.Decoder(stream=True)
    >>> dec.feed(one[:20])
    >>> dec.next_event()
    NEED_DATA
    >>> dec.feed(one[20:] + one)          # the rest, then a second message
    >>> [type(ev).__name__ for ev in iter(dec.next_event, avp.NEED_DATA)]
    ['HeaderEvent', 'EndEvent', 'HeaderEvent', 'EndEvent']
    >>> dec.end_of_input()
    >>> dec.next_event()
    END_OF_STREAM
    >>> dec.messages
    2
    """

    def __init__(self, limits: Limits | None = None, verify: bool = True,
                 keys: Mapping[bytes, bytes] | None = None, require_auth: bool = False, *,
                 stream: bool = False, keep_raw: bool = True,
                 descriptors: bool = False) -> None:
        check_decode_options(limits, verify, keys, require_auth)
        for name, value in (("stream", stream), ("keep_raw", keep_raw),
                            ("descriptors", descriptors)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
        self.limits = limits or DEFAULT_LIMITS
        self.stream = stream
        self._opts = (verify, keys, require_auth)
        self.keep_raw, self.descriptors = keep_raw, descriptors
        self._core = self._new_core()
        self._src = _Buffered(self.limits, stream)
        self._error: AvpError | None = None
        self._ended = False  # the current message's EndEvent has been returned
        self.messages = 0  # messages completed (EndEvents returned)
        self.message_offset = 0  # stream offset of the current message's first byte

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer (any number, including zero).

        Nothing is decoded here; :meth:`next_event` does the work. Raises the decoder's earlier
        error if there was one, ``LIMIT_MESSAGE`` when a single-message decoder is fed more
        than ``max_message_bytes``, and ``ValueError`` after :meth:`end_of_input`.

        >>> import avp_codec as avp
        >>> wire = avp.encode(avp.text_message("hi"))
        >>> dec = avp.Decoder()
        >>> for i in range(0, len(wire), 10):      # bytes as they arrive, 10 at a time
        ...     dec.feed(wire[i:i + 10])
        >>> [type(ev).__name__ for ev in iter(dec.next_event, avp.NEED_DATA)]
        ['HeaderEvent', 'EndEvent']
        """
        if self._error is not None:
            raise self._error
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"feed() takes bytes, bytearray or memoryview, not "
                            f"{type(data).__name__}")
        if self._src.complete:
            raise ValueError("feed() after end_of_input()")
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        if not self.stream and self._src.end() + n > self.limits.max_message_bytes:
            self._error = AvpError(ErrorCode.LIMIT_MESSAGE, "message exceeds "
                                   "max_message_bytes", offset=0, path="message")
            raise self._error
        self._src.append(data)

    def end_of_input(self) -> None:
        """Say that no more bytes will come (the peer closed the stream).

        Afterwards :meth:`next_event` reports what is left: the remaining events, then
        ``END_OF_STREAM`` if the input ended after a complete message (or, with
        ``stream=True``, between messages or before any byte), or ``TRUNCATED`` if it ended
        inside one.
        """
        self._src.complete = True

    def next_event(self) -> Event:
        """The next event: ``HeaderEvent``, ``TensorEvent``, ``EndEvent`` (and
        ``DescriptorEvent`` with ``descriptors=True``), or a sentinel.

        ``NEED_DATA``: feed more bytes, or call :meth:`end_of_input` (also after an
        ``EndEvent``: a single-message decoder still watches for trailing bytes, a stream
        decoder for the next message). ``END_OF_STREAM``: :meth:`end_of_input` was called and
        the input ended after a complete message; it is returned on every later call, so a loop
        that drains events stops on ``NEED_DATA`` *or* ``END_OF_STREAM``. A fault raises
        ``AvpError`` (see the class docstring).

        >>> import avp_codec as avp
        >>> wire = avp.encode(avp.text_message("hi"))
        >>> dec = avp.Decoder()
        >>> dec.feed(wire)
        >>> header = dec.next_event()
        >>> print(type(header).__name__, header.kind, header.tensor_count)
        HeaderEvent TEXT 0
        >>> end = dec.next_event()
        >>> print(type(end).__name__, end.length == len(wire), dec.next_event())
        EndEvent True NEED_DATA
        >>> cut = avp.Decoder()
        >>> cut.feed(wire[:-1]); cut.end_of_input()
        >>> while cut.next_event() is not avp.END_OF_STREAM:
        ...     pass
        Traceback (most recent call last):
        avp_codec.errors.AvpError: TRUNCATED [3]: ...
        """
        if self._error is not None:
            raise self._error
        src = self._src
        if self._ended:
            if not self.stream:
                if src.end() > self._core.pos:
                    return self._fail(AvpError(ErrorCode.TRAILING_BYTES, "bytes after the "
                                               "Trailer", offset=self._core.pos,
                                               path="trailing"))
                return END_OF_STREAM if src.complete else NEED_DATA
            self._next_message()
        if self.stream and self._core.state == "preamble" and src.end() == 0:
            # Between two messages (or before the first): nothing of a message yet.
            return END_OF_STREAM if src.complete else NEED_DATA
        try:
            ev = self._core.step(src)
        except AvpError as e:
            return self._fail(e)
        if isinstance(ev, EndEvent):
            self._ended = True
            self.messages += 1
        return ev

    def _fail(self, e: AvpError) -> Event:
        # A failed decoder keeps its error (to raise it again), and the error's traceback would
        # keep the frames it passed through, with their locals: a refused 15 MiB HEADER and
        # the text decoded from it, plus the bytes still buffered, all reachable from a
        # reference cycle (the error -> next_event's frame -> this decoder -> the error) that
        # only the cyclic collector frees. A server would then hold one refused body per
        # request until the next collection. The frames' locals and the bytes are dropped here;
        # the traceback keeps its lines.
        traceback.clear_frames(e.__traceback__)
        self._src.parts.clear()  # next_event's own frame (in the traceback) holds the source
        self._src = _Buffered(self.limits, self.stream)
        self._core.pending = None
        self._core.prefix = bytearray()
        self._error = e
        raise e

    def _new_core(self) -> Core:
        return Core(self.limits, *self._opts, keep_raw=self.keep_raw,
                    descriptors=self.descriptors)

    def _next_message(self) -> None:
        """Start the next message of a stream at the byte after the last Trailer."""
        length = self._core.pos
        self._src.base -= length  # count offsets from the next message's first byte
        self.message_offset += length
        self._core = self._new_core()
        self._ended = False
