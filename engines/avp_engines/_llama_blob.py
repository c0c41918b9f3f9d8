"""llama.cpp sequence state, byte for byte (llama-context.cpp, llama-kv-cache.cpp, 0.3.36's
vendored llama.cpp), parsed from and written to untrusted bytes.

Three framings carry the same cache state:

* ``blob``: what ``llama_state_seq_get_data`` returns: ``u32 0xaf143cd8, i32 seq_id``, then the
  cache state;
* ``file``: what ``llama_state_seq_save_file`` writes: ``u32 'ggsq' (0x67677371), u32 version (3),
  u32 n_token, i32 tokens[n_token]``, then the cache state;
* ``raw``: the cache state alone (older llama.cpp wrote the blob form without the two words).

The cache state (``llama_kv_cache::state_write``), all native-endian (little-endian here):

    u32 n_stream
    per stream: u32 cell_count; when nonzero:
        per cell: i32 pos, u32 n_seq_id, [i32 x, i32 y, i32 tok when the model has cell
                  extensions (M-RoPE, PLE)], i32 seq_id[n_seq_id]
        u32 v_trans, u32 n_layer
        per layer: i32 k_type, u64 k_row_bytes, k_row_bytes x cell_count bytes (one row a cell)
        per layer, v_trans 0: i32 v_type, u64 v_row_bytes, v_row_bytes x cell_count bytes
        per layer, v_trans 1: i32 v_type, u32 v_elem_bytes, u32 n_embd_v,
                              n_embd_v x cell_count x v_elem_bytes bytes (element-major)

Every count is checked against the bytes that remain before anything is sized from it, so a
hostile blob costs at most its own length in views (no copies are made here).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from avp_codec import AvpError, ErrorCode

from . import _ggml
from ._reader import Reader

IO_MAGIC = 0xAF143CD8
GGSQ_MAGIC = 0x67677371
GGSQ_VERSION = 3
MAX_STREAMS = 4096
MAX_LAYERS = 65536

Form = Literal["blob", "file", "raw"]
_WHAT = "llama.cpp state"


@dataclass
class LayerData:
    """One layer's K (cell-major rows) and V (cell-major rows, or element-major when v_trans)."""

    k_type: _ggml.GgmlType
    k_row_bytes: int
    k: memoryview
    v_type: _ggml.GgmlType
    v_row_bytes: int  # bytes of one cell's V row (n_embd_v x element bytes when transposed)
    v: memoryview


@dataclass
class CacheState:
    """One sequence's cells and per-layer K/V as llama.cpp serialises them."""

    positions: np.ndarray  # int32 [cells], in cell order
    seq_id: int
    v_trans: bool
    layers: list[LayerData]
    n_stream: int = 1
    stream: int = 0
    form: Form = "blob"
    tokens: np.ndarray | None = None  # int32 [n], the file form's prompt tokens
    cell_ext: bool = False
    ext: np.ndarray | None = None  # int32 [cells, 3] (x, y, tok) when cell_ext
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def cell_count(self) -> int:
        return int(self.positions.shape[0])


def _form(r: Reader, form: Form) -> tuple[int, np.ndarray | None]:
    """Read the framing words of `form`; returns (seq_id, file tokens)."""
    if form == "raw":
        return 0, None
    magic = r.u32("magic")
    want = GGSQ_MAGIC if form == "file" else IO_MAGIC
    if magic != want:
        raise AvpError(ErrorCode.BAD_MAGIC,
                       f"{_WHAT} ({form} form) starts with {magic:#010x}, not {want:#010x}",
                       offset=0, path="magic")
    if form == "blob":
        return r.i32("seq_id"), None
    version = r.u32("version")
    if version != GGSQ_VERSION:
        raise AvpError(ErrorCode.UNSUPPORTED_VERSION,
                       f"sequence state file version {version}, this reads {GGSQ_VERSION}",
                       offset=4, path="version")
    n_token = r.u32("n_token")
    if n_token * 4 > r.remaining:
        raise AvpError(ErrorCode.TRUNCATED,
                       f"{n_token} tokens declared, {r.remaining} bytes left", path="n_token")
    return 0, np.frombuffer(r.take(4 * n_token, "tokens"), "<i4")


def parse(data: bytes | bytearray | memoryview, *, form: Form | None = None,
          cell_ext: bool = False, max_layers: int = MAX_LAYERS) -> CacheState:
    """Parse a llama.cpp sequence state; `form` None detects it from the first word."""
    mv = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    if form is None:
        if len(mv) < 4:
            raise AvpError(ErrorCode.TRUNCATED, f"{_WHAT} is {len(mv)} bytes long")
        first = struct.unpack_from("<I", mv, 0)[0]
        form = "file" if first == GGSQ_MAGIC else "blob" if first == IO_MAGIC else "raw"
    r = Reader(mv, _WHAT)
    seq_id, tokens = _form(r, form)
    st = _cache(r, cell_ext, max_layers)
    if r.remaining:
        raise AvpError(
            ErrorCode.TRAILING_BYTES,
            f"{r.remaining} bytes after the first cache's state: a model with two caches "
            "(interleaved sliding-window attention, e.g. Gemma 3) or a hybrid model, which this "
            "converter does not map", offset=r.pos)
    st.seq_id, st.form, st.tokens = seq_id, form, tokens
    return st


def _cache(r: Reader, cell_ext: bool, max_layers: int) -> CacheState:
    n_stream = r.u32("n_stream")
    if n_stream == 0 or n_stream > MAX_STREAMS:
        raise AvpError(ErrorCode.INVALID_VALUE, f"n_stream {n_stream} (1..{MAX_STREAMS})",
                       offset=r.pos - 4, path="n_stream")
    found: CacheState | None = None
    for s in range(n_stream):
        cells = r.u32(f"stream[{s}].cell_count")
        if cells == 0:
            continue
        if found is not None:
            raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                           f"cells in streams {found.stream} and {s}: one sequence per state",
                           path=f"stream[{s}]")
        found = _stream(r, s, cells, cell_ext, max_layers)
        found.n_stream = n_stream
    if found is None:
        raise AvpError(ErrorCode.KIND_CONSTRAINT, "the state holds no cells (empty sequence)")
    return found


def _stream(r: Reader, s: int, cells: int, cell_ext: bool, max_layers: int) -> CacheState:
    where = f"stream[{s}]"
    stride = 12 + (12 if cell_ext else 0)  # pos, n_seq_id, [x, y, tok], one seq_id
    if cells * stride > r.remaining:
        raise AvpError(ErrorCode.TRUNCATED, f"{cells} cells declared, {r.remaining} bytes left",
                       offset=r.pos, path=f"{where}.cell_count")
    start = r.pos
    meta = np.frombuffer(r.take(cells * stride, f"{where}.cells"), "<i4").reshape(cells, -1)
    bad = np.nonzero(meta[:, 1] != 1)[0]
    if bad.size:
        i = int(bad[0])
        raise AvpError(
            ErrorCode.UNSUPPORTED_CAPABILITY,
            f"cell {i} belongs to {int(meta[i, 1]) & 0xFFFFFFFF} sequences; the converter maps "
            "states of one sequence (llama_state_seq_get_data), each cell in exactly one",
            offset=start + i * stride + 4, path=f"{where}.cells[{i}].n_seq_id")
    positions = meta[:, 0]
    if int(positions.min()) < 0:
        raise AvpError(ErrorCode.INVALID_VALUE, "negative cell position", path=f"{where}.cells")
    seqs = meta[:, stride // 4 - 1]
    if int(seqs.min()) != int(seqs.max()):
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY, "cells of several sequences in one "
                       "state; the converter maps one sequence", path=f"{where}.cells")
    ext = meta[:, 2:5] if cell_ext else None
    v_trans = r.u32(f"{where}.v_trans")
    if v_trans > 1:
        raise AvpError(ErrorCode.INVALID_VALUE, f"v_trans {v_trans}", offset=r.pos - 4,
                       path=f"{where}.v_trans")
    n_layer = r.u32(f"{where}.n_layer")
    if n_layer == 0 or n_layer > max_layers:
        code = ErrorCode.LIMIT_LAYERS if n_layer else ErrorCode.KIND_CONSTRAINT
        raise AvpError(code, f"n_layer {n_layer} (1..{max_layers})", offset=r.pos - 4,
                       path=f"{where}.n_layer")
    if n_layer * 12 > r.remaining:
        raise AvpError(ErrorCode.TRUNCATED, f"{n_layer} layers declared, {r.remaining} bytes "
                       "left", offset=r.pos - 4, path=f"{where}.n_layer")
    ks = [_rows(r, cells, f"{where}.k[{i}]") for i in range(n_layer)]
    layers: list[LayerData] = []
    for i, (kt, krow, k) in enumerate(ks):
        if v_trans:
            vt, vrow, v = _transposed(r, cells, f"{where}.v[{i}]")
        else:
            vt, vrow, v = _rows(r, cells, f"{where}.v[{i}]")
        layers.append(LayerData(kt, krow, k, vt, vrow, v))
    return CacheState(positions, int(seqs[0]), bool(v_trans), layers,
                      stream=s, cell_ext=cell_ext, ext=ext)


def _rows(r: Reader, cells: int, where: str) -> tuple[_ggml.GgmlType, int, memoryview]:
    t = _ggml.ggml_type(r.i32(f"{where}.type"), where)
    row = r.u64(f"{where}.row_bytes")
    if row == 0 or row % t.block_bytes:
        raise AvpError(ErrorCode.SIZE_MISMATCH,
                       f"row of {row} bytes is not whole {t.name} blocks of {t.block_bytes}",
                       offset=r.pos - 8, path=f"{where}.row_bytes")
    if row * cells > r.remaining:
        raise AvpError(ErrorCode.TRUNCATED, f"{cells} rows of {row} bytes declared, "
                       f"{r.remaining} bytes left", offset=r.pos - 8, path=f"{where}.row_bytes")
    return t, row, r.take(row * cells, where)


def _transposed(r: Reader, cells: int, where: str) -> tuple[_ggml.GgmlType, int, memoryview]:
    t = _ggml.ggml_type(r.i32(f"{where}.type"), where)
    if t.block_elems != 1:
        raise AvpError(ErrorCode.INVALID_VALUE, f"transposed V of block type {t.name}: "
                       "llama.cpp only transposes unquantized V", path=f"{where}.type")
    el = r.u32(f"{where}.elem_bytes")
    if el != t.block_bytes:
        raise AvpError(ErrorCode.SIZE_MISMATCH, f"element size {el} for {t.name}",
                       offset=r.pos - 4, path=f"{where}.elem_bytes")
    n_embd = r.u32(f"{where}.n_embd")
    if n_embd == 0 or n_embd * cells * el > r.remaining:
        raise AvpError(ErrorCode.TRUNCATED if n_embd else ErrorCode.SIZE_MISMATCH,
                       f"{n_embd} x {cells} elements declared, {r.remaining} bytes left",
                       offset=r.pos - 4, path=f"{where}.n_embd")
    return t, n_embd * el, r.take(n_embd * cells * el, where)


def build(st: CacheState) -> bytes:
    """Serialise a CacheState in its `form` (the inverse of parse)."""
    out: list[bytes | memoryview] = []
    n = st.cell_count
    if st.form == "blob":
        out.append(struct.pack("<Ii", IO_MAGIC, st.seq_id))
    elif st.form == "file":
        toks = np.asarray(st.tokens if st.tokens is not None else [], "<i4")
        out.append(struct.pack("<III", GGSQ_MAGIC, GGSQ_VERSION, toks.shape[0]) + toks.tobytes())
    out.append(struct.pack("<I", st.n_stream))
    for s in range(st.n_stream):
        if s != st.stream:
            out.append(struct.pack("<I", 0))
            continue
        out.append(struct.pack("<I", n))
        cols = [st.positions.astype("<i4"), np.ones(n, "<i4")]
        if st.cell_ext:
            ext = st.ext if st.ext is not None else np.zeros((n, 3), "<i4")
            cols += [ext[:, 0], ext[:, 1], ext[:, 2]]
        cols.append(np.full(n, st.seq_id, "<i4"))
        out.append(np.stack(cols, axis=1).astype("<i4").tobytes())
        out.append(struct.pack("<II", int(st.v_trans), len(st.layers)))
        for ly in st.layers:
            out.append(struct.pack("<iQ", ly.k_type.code, ly.k_row_bytes))
            out.append(ly.k)
        for ly in st.layers:
            if st.v_trans:
                el = ly.v_type.block_bytes
                out.append(struct.pack("<iII", ly.v_type.code, el, ly.v_row_bytes // el))
            else:
                out.append(struct.pack("<iQ", ly.v_type.code, ly.v_row_bytes))
            out.append(ly.v)
    return b"".join(out)
