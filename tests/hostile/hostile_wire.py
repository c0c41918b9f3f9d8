"""Raw builders for the hostile corpus: small messages with exactly one lie, checksums correct.

Everything here writes bytes with the conformance suite's independent writer
(avp_conform.wire), never with the codec under test, so a case can be a valid message the codec
mishandles as well as an invalid one the codec must refuse cleanly.
"""

from __future__ import annotations

import json
import struct

import numpy as np
from avp_conform import gen_common as g
from avp_conform.wire import NO_REF, WEntry, WLayer, WMessage, WTensor, build

MIB = 1 << 20
SKIPPABLE_TYPE = 0x8001  # a private-use section type: unknown to every decoder
PRIVATE_KEY = 0x8001  # a private-use metadata key: unknown, non-critical, kept as is


def msg(m: WMessage) -> bytes:
    return build(m).data


def rle_frame(total: int, byte: int = 0x07) -> bytes:
    """A zstd frame of RLE blocks (4 bytes per 128 KiB) inflating to `total` bytes of `byte`;
    no Frame_Content_Size, window 128 KiB: the decoder learns the size only by inflating."""
    out = bytearray(b"\x28\xb5\x2f\xfd" + bytes([0x00, 7 << 3]))
    block, left = 128 << 10, total
    while left:
        n = min(block, left)
        left -= n
        out += struct.pack("<I", (1 if not left else 0) | (1 << 1) | (n << 3))[:3] + bytes([byte])
    return bytes(out)


def kv(model_id: bytes, tokens: int, tensors: list[WTensor], *, layers: int = 1,
       extra: list[WEntry] | None = None, **over: object) -> WMessage:
    m = WMessage(g.KINDS["KV_CACHE"],
                 [g.ent("MODEL_ID", model_id), g.ent("CONTEXT_LENGTH", tokens), *(extra or [])],
                 [WLayer(i, g.FULL, 0, tokens) for i in range(layers)], tensors)
    for k, v in over.items():
        setattr(m, k, v)
    return m


def key(shape: tuple[int, ...], data: bytes, *, layer: int = 0, role: str = "KEY",
        dtype: str = "float32", layout: int = g.BHTD, **over: object) -> WTensor:
    t = WTensor(g.ROLES[role], g.DTYPES[dtype], shape, data, layer=layer, layout=layout)
    for k, v in over.items():
        setattr(t, k, v)
    return t


def f32(shape: tuple[int, ...], value: float = 0.5) -> bytes:
    return np.full(shape, value, np.float32).tobytes()


def from_message(m: object) -> WMessage:
    """A decoded avp_codec Message as raw writer input, so a case can then change one field
    that the codec's encoder would refuse to write."""
    import avp_codec as avp

    assert isinstance(m, avp.Message)
    entries = [WEntry(e.key, int(e.type), g.encode_value(int(e.type), e.value), e.critical)
               for e in m.entries]
    layers = [WLayer(la.index, int(la.kind), la.token_start, la.token_count, la.window)
              for la in m.layers]
    tensors = []
    for t in m.tensors:
        q = t.quant
        tensors.append(WTensor(
            int(t.role), int(t.dtype), t.shape, bytes(t.stored),
            layer=NO_REF if t.layer is None else t.layer, codec=int(t.codec),
            layout=int(t.layout), token_offset=t.token_offset,
            **({} if q is None else {
                "quant_scheme": int(q.scheme), "quant_axis": q.axis, "group_size": q.group_size,
                "scale_tensor": NO_REF if q.scale_tensor is None else q.scale_tensor,
                "zero_point_tensor": NO_REF if q.zero_point_tensor is None
                else q.zero_point_tensor, "dequant_dtype": int(q.dequant_dtype)})))
    return WMessage(int(m.kind), entries, layers, tensors)


# ---------------------------------------------------------------- valid, but many sections


def many_sections(before: str, n: int = 600) -> bytes:
    """A valid 2-token KV_CACHE with `n` empty skippable sections before the HEADER or INDEX."""
    m = kv(g.MODEL_ID, 2, [key((1, 1, 2, 4), f32((1, 1, 2, 4))),
                           key((1, 1, 2, 4), f32((1, 1, 2, 4)), role="VALUE")])
    pos = -1 if before == "header" else len(m.tensors)
    m.extra_sections = [(pos, SKIPPABLE_TYPE, 1, b"")] * n
    return msg(m)


def hello_with_sections(n: int = 600) -> bytes:
    m = g.hello_message()
    m.extra_sections = [(-1, SKIPPABLE_TYPE, 1, b"")] * n
    return msg(m)


def hello_with_vocabulary(tokens: int) -> bytes:
    """A HELLO offering a large VOCABULARY of distinct made-up tokens."""
    vocab = b"".join(struct.pack("<I", len(t)) + t
                     for t in (f"\u0100tok{i}".encode() for i in range(tokens)))
    m = g.hello_message()
    m.entries = sorted([*m.entries, g.ent("VOCABULARY", vocab)], key=lambda e: e.key)
    return msg(m)


# ---------------------------------------------------------------- decompression bombs


def bomb(model_id: bytes, raw: int, codec: int, *, heads: int = 2, dim: int = 8,
         tokens: int | None = None, layers: int = 1) -> bytes:
    """KEY and VALUE of each layer inflate to `raw` bytes of float32 from ~raw/32768 each;
    `tokens` fixes the context (heads then absorb the size)."""
    if tokens is None:
        tokens = raw // (heads * dim * 4)
    else:
        heads = raw // (tokens * dim * 4)
    raw = heads * tokens * dim * 4
    frame = rle_frame(raw)
    shape = (1, heads, tokens, dim)
    ts = [key(shape, frame, layer=i, codec=codec, role=r)
          for i in range(layers) for r in ("KEY", "VALUE")]
    return msg(kv(model_id, tokens, ts, layers=layers))


# ---------------------------------------------------------------- quantization parameters


def quant_kv(group_size: int, *, elements: tuple[int, ...] = (1, 1, 2, 4), codes: str = "int8",
             scale_value: float = 0.1, compress: bool = False, model_id: bytes = g.MODEL_ID,
             layers: int = 1) -> bytes:
    """KEY and VALUE quantized AFFINE along head_dim (axis 3) with `group_size`; scales are
    float32 of shape param_shape (one per group), stored before each quantized tensor."""
    from avp_codec import quant

    b, h, t, d = elements
    pshape = quant.param_shape(elements, 3, group_size)
    scale = np.full(pshape, scale_value, np.float32).tobytes()
    n = b * h * t * d
    bits = {"int8": 8, "uint2": 2, "uint4": 4, "int4": 4}[codes]
    data_len = (n * bits + 7) // 8
    data = rle_frame(data_len, 0x01) if compress else bytes([0x01]) * data_len
    tensors: list[WTensor] = []
    for layer in range(layers):
        for role in ("KEY", "VALUE"):
            tensors.append(key(pshape, scale, layer=layer, role="QUANT_SCALE", layout=g.NONE))
            tensors.append(key(elements, data, layer=layer, role=role, dtype=codes,
                               codec=1 if compress else 0, quant_scheme=1, quant_axis=3,
                               group_size=group_size, scale_tensor=len(tensors) - 1,
                               dequant_dtype=g.DTYPES["float32"]))
    return msg(kv(model_id, t, tensors, layers=layers))


# ---------------------------------------------------------------- accessors on valid messages


def zero_dim_huge(dim: int = (1 << 64) - 1) -> bytes:
    """A HIDDEN_STATE of shape [1, 0, 2^64-1]: no bytes at all, a dimension numpy cannot make."""
    m = WMessage(g.KINDS["HIDDEN_STATE"], [g.ent("MODEL_ID", g.MODEL_ID),
                                           g.ent("HIDDEN_SOURCE", 1)], [],
                 [WTensor(g.ROLES["HIDDEN_STATE"], g.DTYPES["float32"], (1, 0, dim), b"",
                          layout=g.BTD)])
    return msg(m)


# ---------------------------------------------------------------- JSON in metadata


def kv_with_policy(policy: str) -> bytes:
    m = kv(g.MODEL_ID, 2, [key((1, 1, 2, 4), f32((1, 1, 2, 4))),
                           key((1, 1, 2, 4), f32((1, 1, 2, 4)), role="VALUE")],
           extra=[g.ent("QUANT_POLICY", policy)])
    return msg(m)


def canonical_doc(mutate: str) -> bytes:
    """A runner JSON input: {"document": canonical JSON of a small valid KV_CACHE with one
    member replaced, "stored": the tensors' stored bytes as hex}."""
    import avp_codec as avp

    good = avp.decode(many_sections("header", 0))
    doc = avp.to_canonical_json(good)
    stored = b"".join(bytes(t.stored) for t in good.tensors)
    t0, layer0, e0 = doc["tensors"][0], doc["layers"][0], doc["entries"][1]
    if mutate == "float dimension":
        t0["shape"][3] = 2.9
    elif mutate == "float layer index":
        layer0["layer_index"] = 0.0
    elif mutate == "bool as integer":
        layer0["token_start"] = False
    elif mutate == "string as bool":
        e0["critical"] = "true"
    elif mutate == "ligature dtype":
        t0["dtype"] = "\ufb02oat32"  # "ﬂoat32": upper() gives FLOAT32
    elif mutate == "dotless i":
        layer0["layer_kind"] = "FULL_ATTENT\u0131ON"  # "ı".upper() == "I"
    elif mutate == "arabic-indic digits":
        doc["format"] = "AVP/1.\u0660"
    elif mutate == "entries not a list":
        doc["entries"] = {"0": e0}
    elif mutate == "negative layer index":
        t0["layer"] = -1
    elif mutate == "huge integer":
        layer0["token_count"] = "HUGE"  # replaced in the text: valid JSON, 5000 digits
    elif mutate != "none":
        raise ValueError(mutate)
    text = json.dumps({"document": doc, "stored": stored.hex()})
    return text.replace('"HUGE"', "1" * 5000).encode()


# ---------------------------------------------------------------- avp-dump volume


def many_hidden_tensors(n: int) -> bytes:
    t = [WTensor(g.ROLES["HIDDEN_STATE"], g.DTYPES["float32"], (1, 1, 8), f32((1, 1, 8)),
                 layout=g.BTD) for _ in range(n)]
    return msg(WMessage(g.KINDS["HIDDEN_STATE"], [g.ent("MODEL_ID", g.MODEL_ID),
                                                  g.ent("HIDDEN_SOURCE", 1)], [], t))


def big_metadata_list(nbytes: int) -> bytes:
    """A TEXT message with a private non-critical u32-list entry of `nbytes` bytes."""
    values = np.arange(nbytes // 4, dtype="<u4").tobytes()
    m = WMessage(g.KINDS["TEXT"], [g.ent("TEXT", "x"), WEntry(PRIVATE_KEY, 6, values, False)])
    return msg(m)


def hidden_two_token_ids() -> bytes:
    ids = np.arange(3, dtype="<i8").reshape(1, 3).tobytes()
    t = [WTensor(g.ROLES["TOKEN_IDS"], g.DTYPES["int64"], (1, 3), ids, layout=g.BT),
         WTensor(g.ROLES["TOKEN_IDS"], g.DTYPES["int64"], (1, 3), ids, layout=g.BT),
         WTensor(g.ROLES["HIDDEN_STATE"], g.DTYPES["float32"], (1, 1, 8), f32((1, 1, 8)),
                 layout=g.BTD)]
    return msg(WMessage(g.KINDS["HIDDEN_STATE"], [g.ent("MODEL_ID", g.MODEL_ID),
                                                  g.ent("HIDDEN_SOURCE", 1)], [], t))


def nonfinite_scale() -> bytes:
    """A quantized KEY/VALUE whose scale is +inf (R-12.6 forbids it; must be refused, not
    propagated as NaN into statistics)."""
    return quant_kv(4, scale_value=float("inf"))


__all__ = ["NO_REF", "MIB"]
