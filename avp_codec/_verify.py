"""Verifying a compressed tensor without keeping its output (spec 7.3, "verification without
the output"; the ``Decoder``'s ``keep_raw=False``).

Why: a receiver that only validates and stores a message (the HTTP binding's ``POST messages``)
has no use for the raw bytes, yet R-7.8 and R-7.13 are judged on them: their exact length, the
frame's blocks, floatplane_zstd's invariants (R-7.17) and the unused bits of a packed last byte
(R-7.14). Inflating into a ``raw_length`` buffer makes a 32 KB bomb cost its declared size. Here
the frame is pulled through a scratch buffer of at most ``SCRATCH`` bytes that is reused and
dropped, so the cost is the scratch, zstd's decoding window (at most ``WINDOW_MAX``, refused
above it as R-7.13 allows) and, for floatplane_zstd, its per-channel side data and one block.

The checks and their order are those of ``_codecs.decompress`` (step T.19): the same frame checks
(``check_frame``), then the content pulled to its end, no byte past it, with the same codes; the
tensor is refused here exactly when ``decompress`` refuses it, apart from the window bound.
"""

from __future__ import annotations

import zstandard

from . import _codecs, _floatplane
from ._registry import Codec, Dtype, ErrorCode
from .errors import AvpError

SCRATCH = 1 << 20  # bytes of content pulled per step of zstd and byteplane_zstd
# The largest decoding window verified. zstd needs min(Window_Size, content) bytes of history
# besides the output; 8 MiB is what says every decoder SHOULD accept (the reference
# encoder's frames need at most 2 MiB). Larger windows MAY be refused (DECOMPRESSION_FAILED).
WINDOW_MAX = 8 << 20


def verify(stored: memoryview, codec: Codec, raw_length: int, dtype: Dtype,
           shape: tuple[int, ...], path: str = "") -> int:
    """Check ``stored`` as ``_codecs.decompress`` would, keeping none of its output.

    Returns the last raw byte (for the packed-padding check, R-7.14), or -1 when there is none
    or the codec's raw bytes are not its content in order (plane codecs, whose dtypes are never
    packed). Raises the AvpError ``decompress`` raises for the same bytes."""
    content = _codecs.check_frame(stored, codec, raw_length, dtype, shape, path)
    try:
        window = zstandard.get_frame_parameters(bytes(stored[:18])).window_size
    except zstandard.ZstdError:  # pragma: no cover - check_frame has parsed this header
        raise AvpError(ErrorCode.DECOMPRESSION_FAILED, "bad zstd frame header",
                       path=path) from None
    # zstd writes what it produces into a window buffer of Window_Size bytes, reserved but
    # touched only as far as output goes: what it costs is the window or the content, the
    # lesser (the content is bounded: check_frame refused another declared size, and the
    # reads below stop one byte past it).
    history = min(window, content)
    if history > WINDOW_MAX:
        raise AvpError(ErrorCode.DECOMPRESSION_FAILED,
                       f"the frame's window needs {history} bytes; this decoder verifies "
                       f"frames with a window of at most {WINDOW_MAX} bytes", path=path)
    with _codecs.zstd_errors(path):
        frame = _codecs.FrameReader(stored, content, path)
        last = -1
        if codec == Codec.FLOATPLANE_ZSTD:
            _floatplane.decompress_into(frame.read, dtype, shape, None, path)
        elif codec in (Codec.ZSTD, Codec.BYTEPLANE_ZSTD):
            scratch = memoryview(bytearray(min(SCRATCH, content)))
            while frame.got < content:
                step = scratch[:min(SCRATCH, content - frame.got)]
                frame.read(step)
                last = step[-1]
            if codec != Codec.ZSTD:
                last = -1
        else:
            raise ValueError(f"codec {codec!r} does not compress")
        frame.end()
    return last
