"""Conversion between Transformers caches and AVP layer descriptors + tensors.

Transformers 5 keeps a cache as a list of per-layer objects. The ones a causal LM produces with
``DynamicCache(config=...)`` are:

* ``DynamicLayer``: full attention; keys/values ``[batch, kv_heads, tokens, head_dim]`` holding
  every token of the context -> FULL_ATTENTION, token_start 0.
* ``DynamicSlidingWindowLayer``: keeps only the last ``sliding_window - 1`` tokens (the next
  query attends to those plus itself) while ``cumulative_length`` counts every token seen ->
  SLIDING_WINDOW with token_start = cumulative_length - held.
* ``LinearAttentionLayer``: Mamba/conv/linear-attention layers with fixed-size ``conv_states``
  and ``recurrent_states`` (one or more of each) -> RECURRENT, roles CONV_STATE / SSM_STATE.
* ``DummyLayer``: layers that store nothing (MLP-only, KV-sharing consumers): left out of the
  message (the spec lets a message carry a subset of layers); rebuilt from the config.

Keys and values may have different head dims (MLA-style models): the spec describes each
(layer, role) tensor by its own shape, so nothing here assumes K and V agree.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import (
    Cache,
    DummyLayer,
    DynamicCache,
    DynamicLayer,
    DynamicSlidingWindowLayer,
    LinearAttentionCacheLayerMixin,
)

import avp_codec as avp

TORCH_TO_DTYPE: dict[torch.dtype, avp.Dtype] = {
    torch.float32: avp.Dtype.FLOAT32,
    torch.float16: avp.Dtype.FLOAT16,
    torch.bfloat16: avp.Dtype.BFLOAT16,
    torch.float8_e4m3fn: avp.Dtype.FLOAT8_E4M3FN,
    torch.float8_e5m2: avp.Dtype.FLOAT8_E5M2,
    torch.int8: avp.Dtype.INT8,
    torch.uint8: avp.Dtype.UINT8,
    torch.int32: avp.Dtype.INT32,
    torch.int64: avp.Dtype.INT64,
}
DTYPE_TO_TORCH = {v: k for k, v in TORCH_TO_DTYPE.items()}


@dataclass
class LayerState:
    """One layer of a cache as AVP sees it: its descriptor and its tensors in wire order."""

    index: int
    kind: avp.LayerKind
    token_start: int
    token_count: int
    window: int = 0
    tensors: list[tuple[avp.Role, torch.Tensor]] = field(default_factory=list)

    def descriptor(self) -> avp.Layer:
        return avp.Layer(
            index=self.index,
            kind=self.kind,
            token_start=self.token_start,
            token_count=self.token_count,
            window=self.window,
        )


# ---------------------------------------------------------------- cache -> layer states


def _recurrent_tensors(layer: Any) -> list[tuple[avp.Role, torch.Tensor]]:
    out: list[tuple[avp.Role, torch.Tensor]] = []
    # Several states per layer are sent in state order; the receiver's config says how many.
    for i in range(layer.number_of_states):
        if layer.is_conv_states_initialized[i]:
            out.append((avp.Role.CONV_STATE, layer.conv_states[i]))
    for i in range(layer.number_of_states):
        if layer.is_recurrent_states_initialized[i]:
            out.append((avp.Role.SSM_STATE, layer.recurrent_states[i]))
    return out


def layer_states(cache: Cache, context_length: int) -> Iterator[LayerState]:
    """Describe every non-empty layer of `cache`, lazily (one layer's tensors at a time)."""
    for idx, layer in enumerate(cache.layers):
        if isinstance(layer, DummyLayer):
            continue
        is_linear = isinstance(layer, LinearAttentionCacheLayerMixin)
        if is_linear and isinstance(layer, DynamicLayer):
            raise ValueError(
                f"layer {idx} ({type(layer).__name__}) holds both attention KV and a recurrent "
                "state; AVP 1.0 has one layer kind per layer, so hybrid layers cannot be sent"
            )
        if is_linear:
            tensors = _recurrent_tensors(layer)
            if not tensors:
                raise ValueError(f"layer {idx} holds no state yet")
            yield LayerState(idx, avp.LayerKind.RECURRENT, 0, context_length, 0, tensors)
            continue
        if not isinstance(layer, DynamicLayer):
            raise TypeError(
                f"layer {idx} is a {type(layer).__name__}; export supports the DynamicCache "
                "layer classes (DynamicLayer, DynamicSlidingWindowLayer, LinearAttentionLayer)"
            )
        if not layer.is_initialized or layer.keys is None or layer.values is None:
            raise ValueError(f"layer {idx} holds no keys yet")
        held = int(layer.keys.shape[-2])
        kv = [(avp.Role.KEY, layer.keys), (avp.Role.VALUE, layer.values)]
        if isinstance(layer, DynamicSlidingWindowLayer):
            seen = int(layer.cumulative_length)
            yield LayerState(
                idx, avp.LayerKind.SLIDING_WINDOW, seen - held, held, int(layer.sliding_window), kv
            )
        else:
            if held != context_length:
                raise ValueError(
                    f"full-attention layer {idx} holds {held} tokens, context has {context_length}"
                )
            yield LayerState(idx, avp.LayerKind.FULL_ATTENTION, 0, held, 0, kv)


def to_wire(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A CPU, C-contiguous tensor for the encoder; copies only when it must (device, strides,
    a requested dtype change)."""
    t = t.detach()
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if t.device.type != "cpu":
        t = t.cpu()
    return t.contiguous()


# ---------------------------------------------------------------- AVP tensors -> torch


def tensor_to_torch(t: avp.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """A torch view of a decoded AVP tensor's bytes (zero-copy on CPU when the codec is RAW).

    The runtime never writes into imported attention tensors (caches grow by concatenation) and
    forks clone the recurrent states that Transformers updates in place, so a read-only source
    buffer is safe to view.
    """
    if t.quant is not None:
        raise avp.AvpError(
            avp.ErrorCode.UNSUPPORTED_CAPABILITY,
            "quantized tensors must be dequantized before import",
            path=f"tensor role {t.role.name}",
        )
    tdt = DTYPE_TO_TORCH.get(avp.Dtype(t.dtype))
    if tdt is None:
        raise avp.AvpError(
            avp.ErrorCode.UNSUPPORTED_CAPABILITY,
            f"dtype {avp.Dtype(t.dtype).name} has no torch equivalent in this runtime",
        )
    shape = tuple(int(d) for d in t.shape)
    raw = t.raw_bytes()
    if len(raw) == 0:
        out = torch.empty(shape, dtype=tdt)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            out = torch.frombuffer(raw, dtype=tdt).reshape(shape)
    if device is not None and torch.device(device) != out.device:
        out = out.to(device)
    return out


def join_tiles(tiles: list[avp.Tensor], device: torch.device | str | None) -> torch.Tensor:
    """One layer-role's tensor in the cache's [batch, heads, tokens, dim] order.

    A sender may split a layer's tokens into several tensors (token tiles, e.g. an old part and
    a recent part stored differently) and may use the BTHD axis order; the codec has already
    checked that the tiles cover the layer exactly. One tile in BHTD order stays a view.
    """
    tiles = sorted(tiles, key=lambda t: t.token_offset)
    parts = []
    for t in tiles:
        x = tensor_to_torch(t, device)
        if t.layout == avp.Layout.BTHD:
            x = x.permute(0, 2, 1, 3)
        parts.append(x)
    if len(parts) == 1:
        return parts[0]
    if any(t.layout not in (avp.Layout.BHTD, avp.Layout.BTHD) for t in tiles):
        raise avp.AvpError(avp.ErrorCode.UNSUPPORTED_CAPABILITY,
                           "token tiles are only supported for KEY / VALUE tensors")
    dt = parts[0].dtype
    return torch.cat([p.to(dt) for p in parts], dim=2)


def _kind_error(msg: str, path: str) -> avp.AvpError:
    return avp.AvpError(avp.ErrorCode.KIND_CONSTRAINT, msg, path=path)


def _fill_attention(layer: Any, st: LayerState, context_length: int, path: str) -> None:
    roles = [r for r, _ in st.tensors]
    if roles != [avp.Role.KEY, avp.Role.VALUE]:
        raise _kind_error(f"an attention layer needs one KEY and one VALUE, got {roles}", path)
    k, v = st.tensors[0][1], st.tensors[1][1]
    sliding = isinstance(layer, DynamicSlidingWindowLayer)
    want = avp.LayerKind.SLIDING_WINDOW if sliding else avp.LayerKind.FULL_ATTENTION
    if st.kind != want:
        raise _kind_error(f"the model's layer {st.index} is {want.name}, got {st.kind.name}", path)
    if sliding and st.window != layer.sliding_window:
        raise _kind_error(
            f"window {st.window} differs from the model's {layer.sliding_window}", path
        )
    if st.token_start + st.token_count != context_length:
        raise _kind_error("layer does not end at the end of the context", path)
    layer.lazy_initialization(k, v)
    layer.keys, layer.values = k, v
    if sliding:
        layer.cumulative_length = context_length


def _fill_recurrent(layer: Any, st: LayerState, path: str) -> None:
    if st.kind != avp.LayerKind.RECURRENT:
        raise _kind_error(f"the model's layer {st.index} is RECURRENT, got {st.kind.name}", path)
    convs = [t for r, t in st.tensors if r == avp.Role.CONV_STATE]
    ssms = [t for r, t in st.tensors if r == avp.Role.SSM_STATE]
    if len(convs) + len(ssms) != len(st.tensors) or not st.tensors:
        raise _kind_error("a RECURRENT layer carries CONV_STATE / SSM_STATE tensors only", path)
    if max(len(convs), len(ssms)) > layer.number_of_states:
        raise _kind_error(f"more states than the model's {layer.number_of_states}", path)
    for i, conv in enumerate(convs):
        layer.dtype, layer.device = conv.dtype, conv.device
        layer.conv_states[i] = conv
        layer.conv_kernel_size[i] = int(conv.shape[-1])
        layer.is_conv_states_initialized[i] = True
        layer.has_previous_state[i] = True
    for i, ssm in enumerate(ssms):
        if layer.device is None:
            layer.dtype, layer.device = ssm.dtype, ssm.device
        layer.recurrent_states[i] = ssm
        layer.is_recurrent_states_initialized[i] = True
        layer.has_previous_state[i] = True


def build_cache(config: Any, states: list[LayerState], context_length: int) -> DynamicCache:
    """A DynamicCache for a model of `config`, holding `states` (tensors used as given)."""
    cache = DynamicCache(config=config)
    by_index = {st.index: st for st in states}
    for idx, layer in enumerate(cache.layers):
        st = by_index.pop(idx, None)
        path = f"layers[{idx}]"
        if isinstance(layer, DummyLayer):
            if st is not None:
                raise _kind_error("the model keeps no cache for this layer", path)
            continue
        if st is None:
            raise _kind_error(
                "the message carries no state for this layer; continuing needs every layer", path
            )
        if isinstance(layer, LinearAttentionCacheLayerMixin):
            if isinstance(layer, DynamicLayer):
                raise _kind_error("hybrid attention+recurrent layers are not supported", path)
            _fill_recurrent(layer, st, path)
        elif isinstance(layer, DynamicLayer):
            _fill_attention(layer, st, context_length, path)
        else:
            raise _kind_error(f"unsupported cache layer class {type(layer).__name__}", path)
    if by_index:
        extra = min(by_index)
        raise _kind_error(
            f"layer index {extra} does not exist in this model ({len(cache.layers)} layers)",
            f"layers[{extra}]",
        )
    return cache


def fork_cache(cache: Cache) -> Cache:
    """A cache that can be extended without changing `cache`.

    Attention layers grow by ``torch.cat`` and rebinding, so sharing their tensors is safe and
    free; recurrent layers update their state tensors in place (``copy_``), so those are cloned.
    """
    forked = copy.copy(cache)
    layers = []
    for layer in cache.layers:
        new = copy.copy(layer)
        if isinstance(layer, LinearAttentionCacheLayerMixin):
            for name in ("conv_states", "recurrent_states"):
                states = getattr(layer, name)
                setattr(new, name, {i: None if s is None else s.clone() for i, s in states.items()})
            for name in (
                "is_conv_states_initialized",
                "is_recurrent_states_initialized",
                "has_previous_state",
                "conv_kernel_size",
            ):
                setattr(new, name, dict(getattr(layer, name)))
        layers.append(new)
    forked.layers = layers
    return forked


def cache_nbytes(cache: Cache) -> int:
    """Bytes of state the cache holds (what a RAW export carries, before the framing)."""
    total = 0
    for st in layer_states(cache, _seq_len(cache)):
        total += sum(t.numel() * t.element_size() for _, t in st.tensors)
    return total


def is_recurrent_only(cache: Cache) -> bool:
    """Whether every layer of `cache` is a recurrent (linear-attention / SSM) layer."""
    layers = getattr(cache, "layers", ())
    return bool(layers) and all(isinstance(x, LinearAttentionCacheLayerMixin) for x in layers)


def cache_is_filled(cache: Cache) -> bool:
    """Whether any layer of `cache` holds state (a forward pass has written to it)."""
    for layer in getattr(cache, "layers", ()):
        if isinstance(layer, LinearAttentionCacheLayerMixin):
            if any(s is not None for s in layer.recurrent_states.values()):
                return True
        elif getattr(layer, "is_initialized", False):
            return True
    return False


def _seq_len(cache: Cache) -> int:
    for layer in cache.layers:
        if isinstance(layer, DynamicLayer) and not isinstance(layer, DynamicSlidingWindowLayer):
            return int(layer.get_seq_length())
    return int(cache.get_seq_length())
