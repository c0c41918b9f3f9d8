"""What every engine bridge needs from a KV_CACHE message, and how each builds one.

`KvView` is a received message checked for what an engine cache can hold: a KV_CACHE of one
sequence (batch 1), for the expected model, whose layers are every model layer 0..L-1 as
FULL_ATTENTION over the whole context. Each layer's KEY/VALUE tiles are joined, quantized tiles
dequantized bit-exactly (spec 12.2) unless the caller asks for the tensors themselves, and BTHD
turned into BHTD, so an engine gets `[heads, tokens, head_dim]` arrays.

`message_from_layers` is the producer side: per-layer Tensors (already in AVP order) plus token
ids and positions, under the spec's identity entries.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import avp_codec as avp
from avp_codec import AvpError, ErrorCode, quant


@dataclass
class KvView:
    msg: avp.Message
    context_length: int
    n_layers: int
    token_ids: np.ndarray | None  # int64 [T], -1 where a position holds no token
    positions: np.ndarray | None  # int64 [T]
    # (layer ordinal, role) -> tensor indices in token order
    tiles: dict[tuple[int, avp.Role], list[int]]

    def model_id(self) -> bytes:
        mid = self.msg.get(avp.MetaKey.MODEL_ID)
        return bytes(mid) if isinstance(mid, bytes | bytearray) else b""

    def single(self, layer: int, role: avp.Role) -> avp.Tensor | None:
        """The layer's one tensor of `role`, or None when it is split into tiles."""
        idx = self.tiles.get((layer, role), [])
        return self.msg.tensors[idx[0]] if len(idx) == 1 else None

    def array(self, layer: int, role: avp.Role) -> np.ndarray:
        """[heads, tokens, head_dim] float values of a layer's KEY or VALUE (tiles joined)."""
        parts = []
        for i in self.tiles[(layer, role)]:
            t = self.msg.tensors[i]
            a = quant.dequantize_tensor(self.msg, i) if t.quant is not None else t.values()
            if t.layout == avp.Layout.BTHD:
                a = a.transpose(0, 2, 1, 3)
            parts.append(a[0])
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def check_model(msg: avp.Message, expected: bytes | None) -> None:
    """R-10.4: refuse another model's cache before touching a tensor (constant-time compare)."""
    if expected is None:
        return
    mid = msg.get(avp.MetaKey.MODEL_ID)
    got = bytes(mid) if isinstance(mid, bytes | bytearray) else b""
    if not hmac.compare_digest(got, expected):
        raise AvpError(ErrorCode.MODEL_MISMATCH,
                       f"KV-cache is for model {got.hex()[:16]}..., this engine serves "
                       f"{expected.hex()[:16]}...", path="entries.MODEL_ID")


def view(msg: avp.Message, *, model_id: bytes | None = None,
         n_layers: int | None = None) -> KvView:
    """Check `msg` as an engine cache for `model_id` with `n_layers` layers; see the module doc."""
    if msg.kind != avp.Kind.KV_CACHE:
        raise AvpError(ErrorCode.KIND_CONSTRAINT,
                       f"expected a KV_CACHE message, got {avp.Kind(msg.kind).name}")
    check_model(msg, model_id)
    ctx = msg.get(avp.MetaKey.CONTEXT_LENGTH)
    if not isinstance(ctx, int) or ctx <= 0:
        raise AvpError(ErrorCode.KIND_CONSTRAINT, f"context length {ctx!r}; an engine cache "
                       "needs at least one token", path="entries.CONTEXT_LENGTH")
    for i, ly in enumerate(msg.layers):
        if ly.index != i:
            raise AvpError(ErrorCode.KIND_CONSTRAINT, f"layer {i} is missing (the message "
                           "carries a subset of layers); an engine needs every layer",
                           path=f"layers[{i}]")
        if ly.kind != avp.LayerKind.FULL_ATTENTION or ly.token_start != 0 \
                or ly.token_count != ctx:
            raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                           f"layer {i} is {avp.LayerKind(ly.kind).name} over "
                           f"[{ly.token_start}, {ly.token_start + ly.token_count}); this bridge "
                           "maps full-attention layers over the whole context",
                           path=f"layers[{i}]")
    if n_layers is not None and len(msg.layers) != n_layers:
        raise AvpError(ErrorCode.KIND_CONSTRAINT, f"{len(msg.layers)} layers, the engine's "
                       f"model has {n_layers}", path="layers")
    tiles: dict[tuple[int, avp.Role], list[int]] = {}
    token_ids = positions = None
    for i, t in enumerate(msg.tensors):
        if t.shape and t.layout != avp.Layout.NONE and t.shape[0] != 1:
            raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY, f"batch {t.shape[0]}: an engine "
                           "cache holds one sequence per message", path=f"tensor[{i}].shape[0]")
        if t.layer is None:
            if t.role == avp.Role.TOKEN_IDS:
                token_ids = t.array().reshape(-1).astype(np.int64)
            elif t.role == avp.Role.POSITIONS:
                positions = t.array().reshape(-1).astype(np.int64)
            continue
        if t.role == avp.Role.LATENT_KV:
            raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY, "LATENT_KV (MLA) layers are not "
                           "mapped by this bridge", path=f"tensor[{i}]")
        if t.role in (avp.Role.KEY, avp.Role.VALUE):
            tiles.setdefault((t.layer, avp.Role(t.role)), []).append(i)
    for li in range(len(msg.layers)):
        for role in (avp.Role.KEY, avp.Role.VALUE):
            idx = tiles.get((li, role))
            if not idx:
                raise AvpError(ErrorCode.KIND_CONSTRAINT, f"layer {li} has no {role.name}",
                               path=f"layers[{li}]")
            idx.sort(key=lambda j: msg.tensors[j].token_offset)
    if positions is not None and not np.array_equal(positions, np.arange(ctx)):
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY, "POSITIONS are not 0..n-1 (left "
                       "padding or a shifted context); engine caches here start at 0",
                       path="POSITIONS")
    return KvView(msg, ctx, len(msg.layers), token_ids, positions, tiles)


def message_from_layers(model_id: bytes, context_length: int, tensors: Sequence[avp.Tensor],
                        n_layers: int, *, token_ids: np.ndarray | None = None,
                        positions: np.ndarray | None = None, model_name: str | None = None,
                        tokenizer_id: bytes | None = None, producer: str) -> avp.Message:
    """A KV_CACHE message: message-level TOKEN_IDS / POSITIONS, then `tensors` (layer tensors
    whose scale / zero-point references already count those message-level tensors)."""
    head: list[avp.Tensor] = []
    if token_ids is not None:
        head.append(avp.Tensor.from_array(np.asarray(token_ids, np.int64).reshape(1, -1),
                                          avp.Role.TOKEN_IDS, layout=avp.Layout.BT))
    if positions is not None:
        head.append(avp.Tensor.from_array(np.asarray(positions, np.int64).reshape(1, -1),
                                          avp.Role.POSITIONS, layout=avp.Layout.BT))
    layers = [avp.Layer(i, avp.LayerKind.FULL_ATTENTION, 0, context_length)
              for i in range(n_layers)]
    return avp.kv_cache_message(model_id, context_length, layers, head + list(tensors),
                                tokenizer_id=tokenizer_id, model_name=model_name,
                                producer=producer)


def n_head_tensors(token_ids: object, positions: object) -> int:
    """How many message-level tensors message_from_layers puts first."""
    return int(token_ids is not None) + int(positions is not None)
