"""llama.cpp sequence state <-> AVP KV_CACHE, in pure Python (numpy); no llama.cpp needed.

    from avp_engines import llama
    msg = llama.state_to_message(blob, model_id, llama.LlamaModel(n_kv_heads=3, arch="llama"))
    blob = llama.message_to_state(msg, llama.LlamaTarget(k_type="f16", v_type="f16"),
                                  model_id=model_id)

`blob` is what `llama_state_seq_get_data` returns (or a `llama_state_seq_save_file` file, or the
bare cache state; see _llama_blob). The state names no model, so the caller states its AVP
MODEL_ID (the identity of the checkpoint the GGUF was converted from, as Transformers loads it)
and its KV head count and GGUF architecture (which fixes the key permutation, _rotary).

Cache types: f32, f16 and bf16 are carried as AVP float tensors. q8_0 and q4_0 caches are
stored by llama.cpp rotated by a Walsh-Hadamard matrix when the head size is a multiple of 64
(_hadamard): such a cache is dequantized, un-rotated and carried as float32 (the rotation mixes
the elements of a block, so no AVP quantized tensor expresses it), and a quantized target is
rotated and quantized with ggml's reference rounding. Without the rotation (head sizes that are
not multiples of 64, or LLAMA_ATTN_ROT_DISABLE=1 and hadamard=False here) q8_0 and q4_0 travel as
AVP quantized tensors that dequantize bit-exactly to llama.cpp's values (AFFINE int8, or uint4
with zero point 8, float16 scales per 32 elements; groups of 16 with each scale written twice
when keys are permuted, because one 32-element block then covers two 16-element runs of
Transformers' order), and a message in exactly that form gives the original blocks back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import avp_codec as avp
from avp_codec import AvpError, ErrorCode

from . import _ggml, _hadamard, _kv, _llama_blob, _rotary
from ._llama_blob import CacheState, Form, LayerData

PRODUCER = "avp-engines/0.1.0 (llama.cpp state)"


@dataclass(frozen=True)
class LlamaModel:
    """What the state does not say about the model: KV heads and GGUF architecture."""

    n_kv_heads: int
    arch: str | None = None  # GGUF general.architecture, e.g. "llama"
    key_order: _rotary.KeyOrder | None = None  # overrides the arch table
    hadamard: bool | None = None  # None: llama.cpp's rule (quantized, head size % 64 == 0)

    def order(self) -> _rotary.KeyOrder:
        return _rotary.key_order(self.arch, self.key_order)


@dataclass(frozen=True)
class LlamaTarget:
    """The receiving llama.cpp context's cache: types, V layout, framing."""

    k_type: str = "f16"
    v_type: str = "f16"
    v_trans: bool = False  # True when the context runs without flash attention
    arch: str | None = None
    key_order: _rotary.KeyOrder | None = None
    form: Form = "blob"
    seq_id: int = 0
    n_stream: int = 1
    hadamard: bool | None = None  # None: llama.cpp's rule (quantized, head size % 64 == 0)

    def order(self) -> _rotary.KeyOrder:
        return _rotary.key_order(self.arch, self.key_order)


# ---------------------------------------------------------------- llama.cpp -> AVP


def state_to_message(data: bytes | bytearray | memoryview, model_id: bytes, model: LlamaModel,
                     *, token_ids: np.ndarray | list[int] | None = None,
                     form: Form | None = None, cell_ext: bool = False,
                     model_name: str | None = None,
                     tokenizer_id: bytes | None = None) -> avp.Message:
    """An AVP KV_CACHE message from a llama.cpp sequence state (see the module doc)."""
    if len(model_id) != 32:
        raise AvpError(ErrorCode.INVALID_VALUE, "MODEL_ID must be 32 bytes")
    if model.n_kv_heads <= 0:
        raise AvpError(ErrorCode.INVALID_VALUE, f"n_kv_heads {model.n_kv_heads}")
    st = _llama_blob.parse(data, form=form, cell_ext=cell_ext)
    order = np.argsort(st.positions, kind="stable")
    pos = st.positions[order]
    n = st.cell_count
    if not np.array_equal(pos, np.arange(n)):
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY, "cell positions are not 0..n-1 (a "
                       "shifted or partial context); AVP full-attention layers start at 0",
                       path="cells.pos")
    toks = _tokens(token_ids, st, n)
    korder = model.order()
    head = _kv.n_head_tensors(toks, pos)
    tensors: list[avp.Tensor] = []
    for li, ly in enumerate(st.layers):
        k_rows = _cell_rows(ly.k, n, ly.k_row_bytes)[order]
        tensors += _side(k_rows, ly.k_type, model.n_kv_heads, avp.Role.KEY, li,
                         korder == "interleaved", head + len(tensors), f"k[{li}]",
                         model.hadamard)
        v_rows = _v_rows(ly, st, n)[order]
        tensors += _side(v_rows, ly.v_type, model.n_kv_heads, avp.Role.VALUE, li, False,
                         head + len(tensors), f"v[{li}]", model.hadamard)
    return _kv.message_from_layers(model_id, n, tensors, len(st.layers), token_ids=toks,
                                   positions=pos.astype(np.int64), model_name=model_name,
                                   tokenizer_id=tokenizer_id, producer=PRODUCER)


def _tokens(token_ids: np.ndarray | list[int] | None, st: CacheState, n: int
            ) -> np.ndarray | None:
    toks = np.asarray(token_ids, np.int64) if token_ids is not None else None
    if toks is None and st.tokens is not None:
        toks = st.tokens.astype(np.int64)
    if toks is not None and toks.shape != (n,):
        raise AvpError(ErrorCode.KIND_CONSTRAINT, f"{toks.size} token ids for {n} cells",
                       path="tokens")
    return toks


def _cell_rows(mv: memoryview, n: int, row: int) -> np.ndarray:
    return np.frombuffer(mv, np.uint8).reshape(n, row)


def _v_rows(ly: LayerData, st: CacheState, n: int) -> np.ndarray:
    if not st.v_trans:
        return _cell_rows(ly.v, n, ly.v_row_bytes)
    el = ly.v_type.block_bytes
    # element-major [n_embd, n] -> cell-major [n, n_embd] (bytes of each element kept together)
    e = np.frombuffer(ly.v, np.uint8).reshape(ly.v_row_bytes // el, n, el)
    return np.ascontiguousarray(e.transpose(1, 0, 2)).reshape(n, ly.v_row_bytes)


def _heads(n_embd: int, n_heads: int, where: str) -> int:
    if n_embd % n_heads:
        raise AvpError(ErrorCode.SIZE_MISMATCH, f"{n_embd} elements per cell do not split into "
                       f"{n_heads} heads", path=where)
    return n_embd // n_heads


def _side(rows: np.ndarray, t: _ggml.GgmlType, n_heads: int, role: avp.Role, layer: int,
          permute: bool, first: int, where: str, hadamard: bool | None) -> list[avp.Tensor]:
    """The AVP tensors of one layer's K or V from cell-major rows [n, row_bytes]."""
    n, row = rows.shape
    n_embd = row // t.block_bytes * t.block_elems
    hd = _heads(n_embd, n_heads, where)
    rotated = _hadamard.applies(t, hd, hadamard)
    if rotated and hd % 64:
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY, f"a rotated cache needs head_dim % 64 "
                       f"== 0, not {hd}", path=where)
    if t.avp is not None or rotated:
        if t.avp is not None:
            x = _ggml.to_avp_float(np.ascontiguousarray(rows), t).reshape(n, n_heads, hd)
        else:
            x = _dequantize_rows(rows, t).reshape(n, n_heads, hd)
        if rotated:
            x = _hadamard.rotate(x, role == avp.Role.KEY)
        if permute:
            x = _rotary.gguf_to_hf(x)
        return [avp.Tensor.from_array(np.ascontiguousarray(x.transpose(1, 0, 2))[None], role,
                                      layer=layer, layout=avp.Layout.BHTD)]
    if hd % _ggml.QK:
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY, f"{t.name} blocks span heads of "
                       f"{hd} elements; quantized caches need head_dim % 32 == 0", path=where)
    blocks = rows.reshape(n, n_embd // _ggml.QK, t.block_bytes)
    if t is _ggml.Q8_0:
        d, codes = _ggml.q8_0_split(blocks)
        dtype, zero = avp.Dtype.INT8, None
    else:
        d, codes = _ggml.q4_0_split(blocks)
        dtype, zero = avp.Dtype.UINT4, 8.0
    codes = codes.reshape(n, n_heads, hd)
    d = d.reshape(n, n_heads, hd // _ggml.QK)
    group = _ggml.QK
    if permute:
        codes = _rotary.gguf_to_hf(codes)
        d = np.concatenate([d, d], axis=-1)  # block b covers runs b and b + hd/32 of 16
        group = _ggml.QK // 2
    scale = np.ascontiguousarray(d.transpose(1, 0, 2))[None]
    out = [avp.Tensor.from_array(scale, avp.Role.QUANT_SCALE, layer=layer)]
    zp_index = None
    if zero is not None:
        out.append(avp.Tensor.from_array(np.full(scale.shape, zero, np.float16),
                                         avp.Role.QUANT_ZERO_POINT, layer=layer))
        zp_index = first + 1
    q = avp.Quant(avp.QuantScheme.AFFINE, 3, group, first, zp_index, avp.Dtype.FLOAT32)
    data = np.ascontiguousarray(codes.transpose(1, 0, 2))[None]
    out.append(avp.Tensor.from_array(data, role, layer=layer, layout=avp.Layout.BHTD,
                                     dtype=dtype, quant=q))
    return out


def _dequantize_rows(rows: np.ndarray, t: _ggml.GgmlType) -> np.ndarray:
    """float32 [n, n_embd] of Q8_0 / Q4_0 rows, exactly as ggml dequantizes them."""
    n = rows.shape[0]
    if t.block_elems == 1 or (rows.shape[1] % t.block_bytes):
        raise AvpError(ErrorCode.SIZE_MISMATCH, f"rows are not whole {t.name} blocks")
    blocks = rows.reshape(n, -1, t.block_bytes)
    split = _ggml.q8_0_split if t is _ggml.Q8_0 else _ggml.q4_0_split
    d, codes = split(blocks)
    return _ggml.dequantize(d, codes, 0 if t is _ggml.Q8_0 else 8).reshape(n, -1)


# ---------------------------------------------------------------- AVP -> llama.cpp


def message_to_state(source: avp.Message | bytes | bytearray | memoryview,
                     target: LlamaTarget = LlamaTarget(), *,
                     model_id: bytes | None = None) -> bytes:
    """llama.cpp state bytes (target.form) for a KV_CACHE message; refuses another model's
    cache (MODEL_MISMATCH) when `model_id` is given."""
    msg = source if isinstance(source, avp.Message) else avp.decode(source)
    kt, vt = _target_type(target.k_type, "k_type"), _target_type(target.v_type, "v_type")
    if target.v_trans and vt.block_elems != 1:
        raise AvpError(ErrorCode.INVALID_VALUE, "llama.cpp transposes only unquantized V")
    if target.n_stream < 1 or not 0 <= target.seq_id < 2**31:
        raise AvpError(ErrorCode.INVALID_VALUE, "n_stream >= 1 and a seq_id >= 0")
    kv = _kv.view(msg, model_id=model_id)
    permute = target.order() == "interleaved"
    n = kv.context_length
    layers = []
    for li in range(kv.n_layers):
        k_rows, krow = _target_rows(kv, li, avp.Role.KEY, kt, permute, target.hadamard)
        v_rows, vrow = _target_rows(kv, li, avp.Role.VALUE, vt, False, target.hadamard)
        if target.v_trans:
            el = vt.block_bytes
            v_rows = np.ascontiguousarray(
                v_rows.reshape(n, vrow // el, el).transpose(1, 0, 2)).reshape(-1)
        layers.append(LayerData(kt, krow, k_rows.reshape(-1).data, vt, vrow,
                                v_rows.reshape(-1).data))
    tokens = None
    if target.form == "file":
        if kv.token_ids is None or bool((kv.token_ids < 0).any()):
            raise AvpError(ErrorCode.KIND_CONSTRAINT, "a sequence state file needs the token "
                           "ids of every position (TOKEN_IDS without -1)", path="TOKEN_IDS")
        tokens = kv.token_ids.astype("<i4")
    st = CacheState(np.arange(n, dtype="<i4"), target.seq_id, target.v_trans, layers,
                    n_stream=target.n_stream, stream=0, form=target.form, tokens=tokens)
    return _llama_blob.build(st)


def _target_type(name: str, what: str) -> _ggml.GgmlType:
    t = _ggml.BY_NAME.get(name)
    if t is None:
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                       f"{what} {name!r}: one of {sorted(_ggml.BY_NAME)}")
    return t


def _target_rows(kv: _kv.KvView, li: int, role: avp.Role, t: _ggml.GgmlType, permute: bool,
                 hadamard: bool | None) -> tuple[np.ndarray, int]:
    """Cell-major rows [n, row_bytes] of one layer side in ggml type `t`."""
    first = kv.single(li, role)
    head_dim = first.shape[3] if first is not None and len(first.shape) == 4 else 0
    rotated = bool(head_dim) and _hadamard.applies(t, head_dim, hadamard)
    exact = (_exact_blocks(kv, li, role, t, permute)
             if t.block_elems > 1 and not rotated else None)
    if exact is not None:
        return exact, exact.shape[1]
    x = kv.array(li, role)  # [H, T, D] float
    h, n, hd = x.shape
    rotated = _hadamard.applies(t, hd, hadamard)
    if rotated and hd % 64:
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY, f"a rotated cache needs head_dim % 64 "
                       f"== 0, not {hd}", path=f"layers[{li}]")
    if permute:
        x = _rotary.hf_to_gguf(x)
    if rotated:
        x = _hadamard.rotate(x, role == avp.Role.KEY)
    cells = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(n, h * hd)
    if t.avp is not None:
        raw = np.ascontiguousarray(cells.astype(_ggml.numpy_dtype(t))).view(np.uint8)
        return raw, raw.shape[1]
    if (h * hd) % _ggml.QK:
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY, f"{h * hd} elements per cell are not "
                       f"whole {t.name} blocks", path=f"layers[{li}]")
    if t is _ggml.Q8_0:
        blocks = _ggml.q8_0_join(*_ggml.quantize_q8_0(cells))
    else:
        blocks = _ggml.q4_0_join(*_ggml.quantize_q4_0(cells))
    raw = blocks.reshape(n, -1)
    return raw, raw.shape[1]


def _exact_blocks(kv: _kv.KvView, li: int, role: avp.Role, t: _ggml.GgmlType, permute: bool
                  ) -> np.ndarray | None:
    """The original ggml blocks when the message holds them in the form state_to_message
    writes (one tile, AFFINE along head_dim, float16 scales, the right groups); else None."""
    tensor = kv.single(li, role)
    q = tensor.quant if tensor is not None else None
    if tensor is None or q is None or q.axis != 3 or tensor.layout != avp.Layout.BHTD:
        return None
    want_dtype, want_zero = (avp.Dtype.INT8, None) if t is _ggml.Q8_0 else (avp.Dtype.UINT4, 8.0)
    group = _ggml.QK // 2 if permute else _ggml.QK
    if q.scheme != avp.QuantScheme.AFFINE or tensor.dtype != want_dtype or q.group_size != group:
        return None
    msg = kv.msg
    if q.scale_tensor is None or msg.tensors[q.scale_tensor].dtype != avp.Dtype.FLOAT16:
        return None
    if (q.zero_point_tensor is None) != (want_zero is None):
        return None
    if q.zero_point_tensor is not None:
        zp = msg.tensors[q.zero_point_tensor]
        if zp.dtype != avp.Dtype.FLOAT16 or not bool((zp.array() == want_zero).all()):
            return None
    _, h, n, hd = tensor.shape
    if hd % _ggml.QK:
        return None
    scale = msg.tensors[q.scale_tensor].array()[0]  # [H, T, G]
    if scale.shape != (h, n, hd // group):
        return None
    if permute:
        half = hd // _ggml.QK
        if not np.array_equal(scale[..., :half].view(np.uint16), scale[..., half:].view(np.uint16)):
            return None
        scale = scale[..., :half]
    codes = tensor.values()[0]  # [H, T, D]
    if permute:
        codes = _rotary.hf_to_gguf(codes)
    codes = np.ascontiguousarray(codes.transpose(1, 0, 2)).reshape(n, -1, _ggml.QK)
    d = np.ascontiguousarray(scale.transpose(1, 0, 2)).reshape(n, -1)
    join = _ggml.q8_0_join if t is _ggml.Q8_0 else _ggml.q4_0_join
    return join(d, codes).reshape(n, -1)

