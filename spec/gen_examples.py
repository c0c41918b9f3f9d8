"""Generate appendix A of spec/avp-spec.md: small messages, byte by byte.

Each example is built with the reference codec (avp_codec) and rendered as an annotated hex dump:
offset, bytes, and the field they belong to. The dump is produced by a small walker in this file
that parses the bytes on its own, following the spec's tables, rather than by asking the codec
what it wrote; so the appendix doubles as a second reading of the layout, and
tests/spec/test_appendix.py fails if the spec text, this walker and the codec ever disagree.

    python spec/gen_examples.py           rewrite the appendix in spec/avp-spec.md
    python spec/gen_examples.py --check   exit 1 if the appendix is out of date
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

import avp_codec as avp

SPEC = Path(__file__).resolve().parent / "avp-spec.md"
BEGIN = "<!-- BEGIN GENERATED EXAMPLES (spec/gen_examples.py; do not edit by hand) -->"
END = "<!-- END GENERATED EXAMPLES -->"
ROW = 16  # bytes per dump line

# Fixed inputs, so that the examples are the same on every run. The model identity is not a
# real model's: it is SHA-256 of a label, which is all an example needs (32 opaque bytes).
EXAMPLE_MODEL_ID = hashlib.sha256(b"AVP appendix example model").digest()
EXAMPLE_KEY_ID = b"example-key-1"
EXAMPLE_KEY = bytes(range(32))  # a test key; never use a key like this for real


@dataclass(frozen=True)
class Example:
    ident: str  # "A.1", ...
    title: str
    text: str  # what the example shows, in prose
    build: Callable[[], avp.Message]
    auth: tuple[bytes, bytes] | None = None  # (key id, key) for authenticated examples
    note: Callable[[], str] | None = None  # computed text appended to ``text``

    def encode(self) -> bytes:
        return avp.encode(self.build(), auth_key=self.auth)

    def decode_keys(self) -> dict[bytes, bytes] | None:
        return None if self.auth is None else {self.auth[0]: self.auth[1]}


# ---------------------------------------------------------------- the examples


def _text() -> avp.Message:
    return avp.text_message("Paris", role="assistant")


def _kv_cache() -> avp.Message:
    keys = np.array([[[[0.5, 1.0, 1.5, 2.0], [-1.0, -0.5, 0.25, 0.0]]]], dtype=np.float16)
    values = np.array([[[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]]], dtype=np.float16)
    token_ids = np.array([[15, 27]], dtype=np.int32)
    return avp.kv_cache_from_arrays(EXAMPLE_MODEL_ID, [keys], [values], token_ids=token_ids)


_BYTEPLANE_VALUES = np.arange(32, dtype=np.float32).reshape(1, 4, 8) * 0.125 + 1.0


def _plain_zstd_size() -> str:
    """The size plain zstd (same level) gives the same raw bytes, for comparison in A.3."""
    raw = _BYTEPLANE_VALUES.astype(ml_dtypes.bfloat16).tobytes()
    t = avp.Tensor.from_array(np.frombuffer(raw, dtype=np.uint8), avp.Role.QUANT_SCALE,
                              codec=avp.Codec.ZSTD)
    return (f"For comparison, plain zstd at the same level stores these {len(raw)} bytes in "
            f"{t.stored_length}.")


def _byteplane() -> avp.Message:
    # Four positions of an 8-wide latent state in bfloat16. Nearby values share their high
    # (sign/exponent) bytes, which is what the byte-plane split lets zstd exploit.
    hidden = _BYTEPLANE_VALUES
    t = avp.Tensor.from_array(hidden.astype(ml_dtypes.bfloat16), avp.Role.HIDDEN_STATE,
                              layout=avp.Layout.BTD, codec=avp.Codec.BYTEPLANE_ZSTD)
    return avp.hidden_state_message(EXAMPLE_MODEL_ID, t, source=1)


def _int4() -> avp.Message:
    scale = avp.Tensor.from_array(np.array([[[0.5]]], dtype=np.float16), avp.Role.QUANT_SCALE)
    quant = avp.Quant(avp.QuantScheme.AFFINE, axis=2, group_size=0, scale_tensor=0,
                      zero_point_tensor=None, dequant_dtype=avp.Dtype.FLOAT16)
    codes = np.array([[[-8, -1, 0, 3, 7]]], dtype=np.int8)
    data = avp.Tensor.from_array(codes, avp.Role.HIDDEN_STATE, layout=avp.Layout.BTD,
                                 dtype=avp.Dtype.INT4, quant=quant)
    return avp.hidden_state_message(EXAMPLE_MODEL_ID, [scale, data], source=1)


def _authenticated() -> avp.Message:
    return avp.text_message("Paris", role="assistant")


EXAMPLES: tuple[Example, ...] = (
    Example("A.1", "TEXT message", (
        'A TEXT message carrying "Paris" with TEXT_ROLE "assistant": the text fallback mode, and '
        "the smallest complete message shape (no layers, no tensors, an INDEX with a count of 0)."
    ), _text),
    Example("A.2", "KV_CACHE, one layer, two tokens of float16", (
        "A KV_CACHE for a model with one full-attention layer, one KV head and head_dim 4, after "
        "a context of two tokens (ids 15 and 27). Tensors: TOKEN_IDS int32 `[1, 2]` at message "
        "level, then KEY and VALUE float16 `[1, 1, 2, 4]` (layout BHTD) of layer ordinal 0. "
        "MODEL_ID is SHA-256 of the ASCII text `AVP appendix example model` (a stand-in). Note "
        "the 64-byte alignment padding before each tensor's data."
    ), _kv_cache),
    Example("A.3", "HIDDEN_STATE, bfloat16 with byteplane_zstd", (
        "A same-model latent state (HIDDEN_SOURCE 1) of shape `[1, 4, 8]` in bfloat16, values "
        "1.0, 1.125, ..., 4.875, stored with codec byteplane_zstd: the 64 raw bytes are split "
        "into a plane of low bytes and a plane of high bytes (sign and exponent), then "
        "compressed as one zstd frame (level 3, content size set, no checksum). raw_length is "
        "the size after decompression and plane joining; stored_length is the frame's size."
    ), _byteplane, note=_plain_zstd_size),
    Example("A.4", "HIDDEN_STATE quantized to int4", (
        "A quantized state: codes -8, -1, 0, 3, 7 as int4 `[1, 1, 5]`, AFFINE, quant_axis 2, "
        "group_size 0 (one group), scale tensor 0 (QUANT_SCALE float16 `[1, 1, 1]` = 0.5), no "
        "zero point, dequant_dtype float16. Packing: element 0 in the low nibble, so the bytes "
        "are `F8` (-8 = 0x8, -1 = 0xF), `30` (0, 3) and `07` (7, then a zero tail nibble). "
        "Dequantized (12.2): -4.0, -0.5, 0.0, 1.5, 3.5."
    ), _int4),
    Example("A.5", "Authenticated TEXT message", (
        "Example A.1's content, authenticated (section 15) with key id `example-key-1` (ASCII) "
        "and the 32-byte test key 00 01 02 ... 1F. AUTH_KEY_ID joins the entries, and the INDEX "
        "body ends with the HMAC-SHA256 tag over every byte before the INDEX section."
    ), _authenticated, (EXAMPLE_KEY_ID, EXAMPLE_KEY)),
)


# ---------------------------------------------------------------- an independent walker

def _name(enum: type, value: int) -> str:
    try:
        return str(enum(value).name)
    except ValueError:
        return "unregistered"


class Dump:
    """Collects (offset, bytes, field) rows while walking a message."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.rows: list[tuple[int, bytes, str]] = []

    def take(self, n: int, label: str) -> bytes:
        chunk = self.buf[self.pos:self.pos + n]
        if len(chunk) != n:
            raise ValueError(f"example ends inside {label!r} at offset {self.pos}")
        for k in range(0, n, ROW):
            part = chunk[k:k + ROW]
            self.rows.append((self.pos + k, part, label if k == 0 else "  (continued)"))
        self.pos += n
        return chunk

    def u(self, size: int, label: str, note: Callable[[int], str] | None = None, *,
          hex_value: bool = False) -> int:
        raw = self.buf[self.pos:self.pos + size]
        value = int.from_bytes(raw, "little")
        shown = f"0x{value:0{2 * size}X}" if hex_value else str(value)
        self.take(size, f"{label} = {shown}" + (f" ({note(value)})" if note else ""))
        return value

    def pad_to(self, multiple: int, label: str) -> None:
        n = -self.pos % multiple
        if n:
            self.take(n, label)


def _value_text(vtype: int, raw: bytes) -> str:
    if vtype == avp.ValueType.U64:
        return str(int.from_bytes(raw, "little"))
    if vtype == avp.ValueType.UTF8:
        return json.dumps(raw.decode("utf-8"), ensure_ascii=False)
    if vtype == avp.ValueType.BYTES:
        printable = all(0x20 <= b < 0x7F for b in raw)
        return f'"{raw.decode("ascii")}" (ASCII)' if printable and raw else f"{len(raw)} bytes"
    return f"{len(raw)} bytes"


# Element types the walker can show as numbers: dtype code -> numpy dtype.
_SHOWN = {1: np.dtype("<f4"), 2: np.dtype("<f2"), 3: np.dtype(ml_dtypes.bfloat16),
          11: np.dtype("<i4"), 12: np.dtype("<i8")}


def _data_text(data: bytes, dtype: int, codec: int, count: int) -> str:
    """What a tensor's stored bytes hold, for the label of their first dump line."""
    if codec != avp.Codec.RAW:
        return f"{len(data)} bytes, one zstd frame"
    if dtype == avp.Dtype.INT4:
        codes = [(b >> s) & 0xF for b in data for s in (0, 4)]
        shown = ", ".join(str(c - 16 if c >= 8 else c) for c in codes[:count])
        tail = " and a zero tail nibble" if len(codes) > count else ""
        return f"int4 codes (low nibble first) {shown}{tail}"
    np_dtype = _SHOWN.get(dtype)
    if np_dtype is None or not data:
        return f"{len(data)} bytes"
    values = np.frombuffer(data, dtype=np_dtype)
    return ", ".join(f"{float(v):g}" if np_dtype.kind == "f" or dtype == avp.Dtype.BFLOAT16
                     else str(int(v)) for v in values)


def _header(d: Dump, n: int) -> tuple[int, bool]:
    start = d.pos
    d.u(2, "header.kind", lambda v: _name(avp.Kind, v))
    d.u(2, "header.flags")
    entries = d.u(4, "header.entry_count")
    layers = d.u(4, "header.layer_count")
    tensors = d.u(4, "header.tensor_count")
    authed = False
    for i in range(entries):
        key = d.u(2, f"entry[{i}].key", lambda v: _name(avp.MetaKey, v))
        d.u(1, f"entry[{i}].flags", lambda v: "CRITICAL" if v & 1 else "not critical")
        vtype = d.u(1, f"entry[{i}].type", lambda v: _name(avp.ValueType, v).lower())
        length = d.u(4, f"entry[{i}].length")
        text = _value_text(vtype, d.buf[d.pos:d.pos + length])
        raw = d.take(length, f"entry[{i}].value = {text}")
        authed |= key == avp.MetaKey.AUTH_KEY_ID and bool(raw)
        d.pad_to(8, f"entry[{i}] padding")
    for i in range(layers):
        d.u(4, f"layer[{i}].layer_index")
        d.u(1, f"layer[{i}].layer_kind", lambda v: _name(avp.LayerKind, v))
        d.take(3, f"layer[{i}] reserved")
        d.u(4, f"layer[{i}].window")
        d.take(4, f"layer[{i}] reserved")
        d.u(8, f"layer[{i}].token_start")
        d.u(8, f"layer[{i}].token_count")
    if d.pos - start != n:
        raise ValueError("HEADER body length disagrees with its contents")
    return tensors, authed


def _descriptor(d: Dump, i: int) -> tuple[int, int, int, int]:
    p = f"tensor[{i}]"
    d.u(4, f"{p}.tensor_index")
    layer = int.from_bytes(d.buf[d.pos:d.pos + 4], "little")
    d.u(4, f"{p}.layer", lambda v: "message-level" if v == 0xFFFFFFFF else "layer ordinal",
        hex_value=layer == 0xFFFFFFFF)
    d.u(2, f"{p}.role", lambda v: _name(avp.Role, v))
    dtype = d.u(1, f"{p}.dtype", lambda v: _name(avp.Dtype, v).lower())
    codec = d.u(1, f"{p}.codec", lambda v: _name(avp.Codec, v).lower())
    rank = d.u(1, f"{p}.rank")
    d.u(1, f"{p}.layout", lambda v: _name(avp.Layout, v))
    d.u(1, f"{p}.quant_scheme", lambda v: _name(avp.QuantScheme, v))
    d.u(1, f"{p}.quant_axis")
    d.u(4, f"{p}.group_size")
    for ref in ("scale_tensor", "zero_point_tensor"):
        none = int.from_bytes(d.buf[d.pos:d.pos + 4], "little") == 0xFFFFFFFF
        d.u(4, f"{p}.{ref}", lambda v: "none" if v == 0xFFFFFFFF else "tensor index",
            hex_value=none)
    d.u(1, f"{p}.dequant_dtype", lambda v: "none" if v == 0 else _name(avp.Dtype, v).lower())
    d.take(3, f"{p} reserved")
    d.u(8, f"{p}.token_offset")
    d.u(8, f"{p}.raw_length")
    stored = d.u(8, f"{p}.stored_length")
    d.u(4, f"{p}.data_crc", lambda v: "CRC32C of the stored bytes", hex_value=True)
    d.take(4, f"{p} reserved")
    count = 1
    for k in range(rank):
        count *= d.u(8, f"{p}.shape[{k}]")
    return stored, dtype, codec, count


def walk(buf: bytes) -> list[tuple[int, bytes, str]]:
    """Annotate every byte of a valid message (raises ValueError on anything unexpected)."""
    d = Dump(buf)
    d.take(8, "preamble.magic")
    d.u(2, "preamble.major")
    d.u(2, "preamble.minor")
    d.u(4, "preamble.reserved")
    tensor_count, authed = 0, False
    done = 0
    index_at = -1
    while index_at < 0:
        at = d.pos
        stype = d.u(4, "section.type", lambda v: _name(avp.SectionType, v))
        d.u(4, "section.flags")
        n = d.u(8, "section.length (body bytes)")
        if stype == avp.SectionType.HEADER:
            tensor_count, authed = _header(d, n)
        elif stype == avp.SectionType.TENSOR:
            stored, dtype, codec, count = _descriptor(d, done)
        elif stype == avp.SectionType.INDEX:
            index_at = at
            d.u(8, "index.tensor_count")
            for i in range(tensor_count):
                d.u(8, f"index[{i}].section_offset")
                d.u(8, f"index[{i}].data_offset")
                d.u(8, f"index[{i}].stored_length")
            if authed:
                d.take(32, "index.auth_tag (HMAC-SHA256)")
        else:
            raise ValueError(f"unexpected section type {stype}")
        d.u(4, "section.crc", lambda v: "CRC32C of type .. body", hex_value=True)
        d.pad_to(8, "section padding")
        if stype == avp.SectionType.TENSOR:
            d.pad_to(64, f"tensor[{done}] alignment padding (data starts 64-aligned)")
            data = d.buf[d.pos:d.pos + stored]
            d.take(stored, f"tensor[{done}] data: {_data_text(data, dtype, codec, count)}")
            d.pad_to(8, f"tensor[{done}] data padding")
            done += 1
    d.u(8, "trailer.index_offset")
    d.take(8, "trailer.end_magic")
    if d.pos != len(buf):
        raise ValueError("bytes after the Trailer")
    return d.rows


# ---------------------------------------------------------------- rendering


def _dump_text(buf: bytes) -> str:
    lines = ["offset  bytes                                            field"]
    for off, chunk, label in walk(buf):
        hexes = " ".join(f"{b:02x}" for b in chunk)
        lines.append(f"{off:06x}  {hexes:<48} {label}".rstrip())
    return "\n".join(lines)


def _canonical(ex: Example, buf: bytes) -> str:
    msg = avp.decode(buf, keys=ex.decode_keys(), require_auth=ex.auth is not None)
    return json.dumps(avp.to_canonical_json(msg), indent=1, sort_keys=True, ensure_ascii=False)


def render_example(ex: Example) -> str:
    buf = ex.encode()
    parts = [
        f"### {ex.ident} {ex.title}",
        "",
        textwrap.fill(ex.text + (" " + ex.note() if ex.note else ""), width=100),
        "",
        f"Length: {len(buf)} bytes. SHA-256 of the message:\n"
        f"`{hashlib.sha256(buf).hexdigest()}`. Offsets are hexadecimal.",
        "",
        "```",
        _dump_text(buf),
        "```",
        "",
        "Canonical JSON (section 18):",
        "",
        "```json",
        _canonical(ex, buf),
        "```",
    ]
    return "\n".join(parts)


def render() -> str:
    """The generated appendix text, without the markers."""
    return "\n\n".join(render_example(ex) for ex in EXAMPLES)


def splice(spec_text: str, generated: str) -> str:
    """spec_text with everything between the markers replaced by ``generated``."""
    head, sep, rest = spec_text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError("appendix markers not found in the spec")
    return f"{head}{BEGIN}\n\n{generated}\n\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="fail if the appendix is stale")
    args = ap.parse_args(argv)
    current = SPEC.read_text(encoding="utf-8")
    wanted = splice(current, render())
    if args.check:
        if wanted != current:
            print("spec/avp-spec.md appendix A is out of date: run spec/gen_examples.py",
                  file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        SPEC.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

