"""Admission: a received KV_CACHE is checked against the receiving model before it is installed.

The codec checks that a message is a well-formed AVP message (structure, token tiling, roles by
layer kind, R-10.1 to R-10.7). What it cannot know is whether the cache fits *this* model: a
message may carry this model's MODEL_ID and still hold tensors of another shape (a buggy or
hostile sender). Transformers does not check either; it fails deep inside attention (or, for raw
int8 or NaN values, silently generates garbage). So everything is checked here, from the
descriptors first, and only then are tensor values read. Received bytes are read HEADER first
and tensor by tensor under a tensor limit derived from the model (`read_kv`), so nothing is
decompressed, dequantized or allocated beyond what a cache of this model can hold.

What the model is, is learned once per model by a one-token probe pass on an empty cache
(`ModelSpec.probe`): the cache layer classes give each layer's kind and window, the probe's
tensors give the KEY / VALUE head count and head size per layer (K and V separately) and the
recurrent state shapes, so no per-architecture config arithmetic is needed.

Refusals and their codes (spec section 17):

- MODEL_MISMATCH: a KEY / VALUE head count or head size, or a recurrent state shape, that is
  not this model's (the cache cannot be this model's, whatever its MODEL_ID says; R-10.4).
- KIND_CONSTRAINT: the layer table does not match the model (a missing or extra layer, another
  layer kind or window, a sliding-window layer without the tokens the next position attends
  to), an attention layer without exactly one KEY and one VALUE, a recurrent layer with another
  number of states, a second TOKEN_IDS / POSITIONS / ATTENTION_MASK tensor.
- UNSUPPORTED_CAPABILITY: something the model or this runtime cannot take: a dtype that is not
  floating (raw int8 K/V without quantization parameters; a quantized tensor whose dequant_dtype
  is not floating), LATENT_KV (no Transformers cache holds it), a batch outside
  1..max_batch, a CONTEXT_LENGTH or position beyond the model's maximum, POSITIONS that are not
  consecutive for the real tokens, padding (ATTENTION_MASK 0) in a model with recurrent layers.
- INVALID_VALUE: values no model can use: non-finite K/V or states (unless allowed), TOKEN_IDS
  outside [-1, vocabulary), negative positions, ATTENTION_MASK values other than 0 and 1 (R-10.8).
- LIMIT_TENSOR (from the codec, with a limit derived from the model, read_kv): a tensor larger
  than any this model's cache can hold.
- TOKEN_RANGE, QUANT_PARAMS: more K/V tiles than the layer's tokens, parameter tensors that no
  tensor uses (found while reading, before the codec's whole-message checks would).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import (
    DummyLayer,
    DynamicLayer,
    DynamicSlidingWindowLayer,
    LinearAttentionCacheLayerMixin,
)

import avp_codec as avp

from ._errors import fail

E = avp.ErrorCode
R = avp.Role
FLOATING = frozenset({avp.Dtype.FLOAT32, avp.Dtype.FLOAT16, avp.Dtype.BFLOAT16,
                      avp.Dtype.FLOAT8_E4M3FN, avp.Dtype.FLOAT8_E5M2})
CONTEXT_ROLES = (R.TOKEN_IDS, R.POSITIONS, R.ATTENTION_MASK)
QUANT_ROLES = (R.QUANT_SCALE, R.QUANT_ZERO_POINT)
# A model that states no maximum (Mamba-style, no position embeddings) still needs a bound before
# anything per-token is allocated; a caller can raise it (Connector.import_(max_context=...)).
DEFAULT_MAX_CONTEXT = 1 << 20
FINITE_CHUNK = 1 << 20  # elements checked at a time: the check's scratch stays at ~1 MB


@dataclass(frozen=True)
class LayerSpec:
    """What one model layer keeps in its cache, as the probe saw it (batch axis left out)."""

    index: int
    kind: avp.LayerKind | None  # None: the model keeps nothing for this layer
    window: int = 0
    kv: dict[avp.Role, tuple[int, int]] = field(default_factory=dict)  # role -> (heads, dim)
    states: dict[avp.Role, list[tuple[int, ...]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    layers: tuple[LayerSpec, ...]
    vocab_size: int
    max_positions: int | None
    recurrent: bool  # any recurrent layer (padding cannot be undone in a recurrent state)
    takes_positions: bool

    @property
    def attention(self) -> bool:
        return any(s.kind in (avp.LayerKind.FULL_ATTENTION, avp.LayerKind.SLIDING_WINDOW)
                   for s in self.layers)

    @property
    def max_context(self) -> int:
        return self.max_positions if self.max_positions is not None else DEFAULT_MAX_CONTEXT

    def limits(self, max_batch: int, max_context: int | None = None) -> avp.Limits:
        """Decoder limits no valid cache for this model exceeds: max_tensor_bytes is the largest
        tensor it can hold (float32, `max_batch` rows, the maximum context)."""
        ctx = self.max_context if max_context is None else max_context
        per_token = max([h * d for s in self.layers for h, d in s.kv.values()] or [0])
        state = max([math.prod(shape) for s in self.layers for shapes in s.states.values()
                     for shape in shapes] or [0])
        biggest = max_batch * max(ctx * per_token * 4, state * 4, ctx * 8, 1024)
        return avp.Limits(max_tensor_bytes=biggest)

    @classmethod
    def probe(cls, connector: Any) -> ModelSpec:
        """Run one token through an empty cache of the connector's model and read the cache."""
        cache = connector._new_cache()
        connector.forward(cache, 0, input_ids=torch.zeros(1, 1, dtype=torch.long,
                                                          device=connector.device),
                          last_only=True)
        layers = [_layer_spec(i, layer) for i, layer in enumerate(cache.layers)]
        cfg = connector.model.config.get_text_config()
        max_pos = getattr(cfg, "max_position_embeddings", None)
        return cls(tuple(layers), connector.vocab_size,
                   int(max_pos) if isinstance(max_pos, int) else None,
                   any(s.kind == avp.LayerKind.RECURRENT for s in layers),
                   connector._takes_positions)


def _layer_spec(idx: int, layer: Any) -> LayerSpec:
    if isinstance(layer, DummyLayer):
        return LayerSpec(idx, None)
    if isinstance(layer, LinearAttentionCacheLayerMixin):
        states: dict[avp.Role, list[tuple[int, ...]]] = {R.CONV_STATE: [], R.SSM_STATE: []}
        for i in range(layer.number_of_states):
            if layer.is_conv_states_initialized[i]:
                conv = layer.conv_states[i]
                assert conv is not None
                states[R.CONV_STATE].append(tuple(conv.shape[1:]))
        for i in range(layer.number_of_states):
            if layer.is_recurrent_states_initialized[i]:
                ssm = layer.recurrent_states[i]
                assert ssm is not None
                states[R.SSM_STATE].append(tuple(ssm.shape[1:]))
        return LayerSpec(idx, avp.LayerKind.RECURRENT, states=states)
    k, v = layer.keys, layer.values
    kv = {R.KEY: (int(k.shape[1]), int(k.shape[3])), R.VALUE: (int(v.shape[1]), int(v.shape[3]))}
    if isinstance(layer, DynamicSlidingWindowLayer):
        return LayerSpec(idx, avp.LayerKind.SLIDING_WINDOW, int(layer.sliding_window), kv)
    if isinstance(layer, DynamicLayer):
        return LayerSpec(idx, avp.LayerKind.FULL_ATTENTION, 0, kv)
    return LayerSpec(idx, None)  # pragma: no cover - build_cache refuses other classes


# ---------------------------------------------------------------------------- the checks


@dataclass
class Admitted:
    """What the checks established: batch, context length and the message-level tensors."""

    batch: int
    context_length: int
    token_ids: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None


def check_header(msg: avp.Message, model_id: bytes, spec: ModelSpec,
                 max_context: int | None = None) -> int:
    """Kind, MODEL_ID, CONTEXT_LENGTH and the layer table (the HEADER alone); returns the
    context length."""
    if msg.kind != avp.Kind.KV_CACHE:
        fail(E.KIND_CONSTRAINT, f"expected a KV_CACHE message, got {avp.Kind(msg.kind).name}")
    mid = msg.get(avp.MetaKey.MODEL_ID)
    if mid != model_id:
        got = bytes(mid).hex()[:16] if isinstance(mid, bytes | bytearray) else repr(mid)
        fail(E.MODEL_MISMATCH, f"KV-cache is for model {got}..., this model is "
             f"{model_id.hex()[:16]}...", path="entries.MODEL_ID")
    length = msg.get(avp.MetaKey.CONTEXT_LENGTH)
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        fail(E.INVALID_VALUE, f"CONTEXT_LENGTH {length!r}", path="entries.CONTEXT_LENGTH")
    bound = spec.max_context if max_context is None else max_context
    if length > bound:
        fail(E.UNSUPPORTED_CAPABILITY,
             f"CONTEXT_LENGTH {length} exceeds this model's maximum of {bound} positions",
             path="entries.CONTEXT_LENGTH")
    _check_layers(msg, spec, length)
    return length


def check_kv_message(msg: avp.Message, spec: ModelSpec, *, max_batch: int = 1,
                     max_context: int | None = None, model_id: bytes | None = None) -> Admitted:
    """Everything about a KV_CACHE message that can be checked without its K/V values.

    Reads only the (small, [batch, CONTEXT_LENGTH]) TOKEN_IDS / POSITIONS / ATTENTION_MASK
    tensors, after CONTEXT_LENGTH and batch have been bounded. `model_id` defaults to the
    message's own (the caller has compared it).
    """
    mid = model_id if model_id is not None else msg.get(avp.MetaKey.MODEL_ID)
    length = check_header(msg, mid if isinstance(mid, bytes) else b"", spec, max_context)
    checks = TensorChecks(msg.layers, spec, length, max_batch)
    for i, t in enumerate(msg.tensors):
        checks.tensor(i, t)
    batch = checks.finish()
    got = Admitted(batch, length)
    for i, t in enumerate(msg.tensors):
        if t.layer is not None or t.role in QUANT_ROLES:
            continue
        path = f"tensors[{i}]"
        if t.quant is not None or t.shape != (batch, length):
            fail(E.KIND_CONSTRAINT,
                 f"{t.role.name} must be an unquantized [{batch}, {length}] tensor", path=path)
        values = torch.from_numpy(np.array(t.array(), dtype=np.int64))
        if t.role == R.TOKEN_IDS:
            if values.numel() and (int(values.min()) < -1 or int(values.max()) >= spec.vocab_size):
                fail(E.INVALID_VALUE, f"TOKEN_IDS outside [-1, {spec.vocab_size})", path=path)
            got.token_ids = values
        elif t.role == R.POSITIONS:
            got.positions = values
        else:
            if values.numel() and not bool(((values == 0) | (values == 1)).all()):
                fail(E.INVALID_VALUE, "ATTENTION_MASK holds values other than 0 and 1 (R-10.8)",
                     path=path)
            got.attention_mask = values
    _check_context(got, spec)
    return got


def _check_layers(msg: avp.Message, spec: ModelSpec, length: int) -> None:
    want = {s.index: s for s in spec.layers if s.kind is not None}
    have = {d.index: d for d in msg.layers}
    for idx in sorted(set(want) - set(have)):
        fail(E.KIND_CONSTRAINT,
             "the message carries no state for this layer; continuing needs every layer",
             path=f"layers[{idx}]")
    for d in msg.layers:
        path = f"layers[{d.index}]"
        s = want.get(d.index)
        if s is None:
            fail(E.KIND_CONSTRAINT, f"layer index {d.index} does not exist in this model or keeps "
                 f"no cache ({len(spec.layers)} layers)", path=path)
        if d.kind != s.kind:
            assert s.kind is not None  # want holds the layers that keep a cache
            fail(E.KIND_CONSTRAINT, f"the model's layer {d.index} is {s.kind.name}, got "
                 f"{avp.LayerKind(d.kind).name}", path=path)
        if s.kind == avp.LayerKind.SLIDING_WINDOW:
            if d.window != s.window:
                fail(E.KIND_CONSTRAINT, f"window {d.window} differs from the model's "
                     f"{s.window}", path=path)
            # The next position attends to the last window - 1 tokens and itself.
            need = min(length, s.window - 1)
            if not need <= d.token_count <= s.window:
                fail(E.KIND_CONSTRAINT, f"a window-{s.window} layer needs the last {need} tokens "
                     f"of the context, the message holds {d.token_count}", path=path)
        if s.kind != avp.LayerKind.RECURRENT and d.token_start + d.token_count != length:
            fail(E.KIND_CONSTRAINT, "layer does not end at the end of the context", path=path)


class TensorChecks:
    """The checks of each tensor against the model, one tensor at a time in message order, so a
    reader can run them as tensors arrive (read_kv) as well as over a decoded message."""

    def __init__(self, layers: list[avp.Layer], spec: ModelSpec, length: int,
                 max_batch: int) -> None:
        by_index = {s.index: s for s in spec.layers}
        self.layers = [(by_index[d.index], d.token_count) for d in layers]
        self.spec, self.length, self.max_batch = spec, length, max_batch
        self.batch: int | None = None
        self.counts: dict[tuple[int, avp.Role], int] = {}
        self.tokens: dict[tuple[int, avp.Role], int] = {}
        self.seen: set[avp.Role] = set()
        self.params = 0  # quantization parameter tensors since the last other tensor

    def _batch(self, n: int, path: str) -> None:
        if not 1 <= n <= self.max_batch:
            fail(E.UNSUPPORTED_CAPABILITY,
                 f"batch {n}: this receiver takes a batch of 1 to {self.max_batch}", path=path)
        if self.batch is not None and n != self.batch:  # for messages built in memory
            fail(E.ROLE_SHAPE, f"batch {n}, other tensors have {self.batch}", path=path)
        self.batch = n

    def tensor(self, i: int, t: avp.Tensor) -> None:
        path = f"tensors[{i}]"
        if t.role in QUANT_ROLES:
            self.params += 1
            if self.params > 2:  # a scale and a zero point precede the tensor they serve
                fail(E.QUANT_PARAMS, "quantization parameters that no tensor uses", path=path)
            return
        self.params = 0
        if t.shape:
            self._batch(int(t.shape[0]), path)
        if t.layer is None:
            if t.role not in CONTEXT_ROLES:
                fail(E.KIND_CONSTRAINT, f"{t.role.name} has no place in a KV_CACHE", path=path)
            if t.role in self.seen:
                fail(E.KIND_CONSTRAINT, f"a second {t.role.name} tensor", path=path)
            self.seen.add(t.role)
            return
        s, layer_tokens = self.layers[t.layer]
        dtype = t.quant.dequant_dtype if t.quant is not None else t.dtype
        if dtype not in FLOATING:
            what = "quantized to " if t.quant is not None else ""
            fail(E.UNSUPPORTED_CAPABILITY, f"{t.role.name} {what}{avp.Dtype(dtype).name}: "
                 "a model cache holds floating-point values (send integer data with its "
                 "quantization parameters, spec section 12)", path=path)
        if t.role == R.LATENT_KV:
            fail(E.UNSUPPORTED_CAPABILITY, "LATENT_KV: this runtime's caches hold KEY and VALUE",
                 path=path)
        key = (s.index, avp.Role(t.role))
        if t.role in (R.KEY, R.VALUE):
            tokens = _check_kv_shape(t, s, path)
            # Tiles of one layer and role cover its tokens once (the codec checks the tiling
            # of a whole message; counting here bounds what a reader inflates before that).
            self.tokens[key] = self.tokens.get(key, 0) + tokens
            if self.tokens[key] > layer_tokens:
                fail(E.TOKEN_RANGE, f"{t.role.name} tiles of layer {s.index} hold more than its "
                     f"{layer_tokens} tokens", path=path)
            return
        n = self.counts.get(key, 0)
        self.counts[key] = n + 1
        shapes = s.states.get(t.role, [])
        if n >= len(shapes):
            fail(E.KIND_CONSTRAINT, f"this model's layer {s.index} keeps {len(shapes)} "
                 f"{t.role.name} tensor(s)", path=path)
        if tuple(t.shape[1:]) != shapes[n]:
            fail(E.MODEL_MISMATCH, f"{t.role.name} {n} of shape {list(t.shape[1:])} (after "
                 f"batch); this model's is {list(shapes[n])}", path=path)

    def finish(self) -> int:
        """The checks that need every tensor; returns the batch size."""
        for s, _ in self.layers:
            path = f"layers[{s.index}]"
            if s.kind == avp.LayerKind.RECURRENT:
                for role, shapes in s.states.items():
                    if self.counts.get((s.index, role), 0) != len(shapes):
                        fail(E.KIND_CONSTRAINT, f"this model's layer keeps {len(shapes)} "
                             f"{role.name} tensor(s), the message has "
                             f"{self.counts.get((s.index, role), 0)}", path=path)
            elif (s.index, R.KEY) not in self.tokens or (s.index, R.VALUE) not in self.tokens:
                fail(E.KIND_CONSTRAINT, "an attention layer needs a KEY and a VALUE", path=path)
        return self.batch if self.batch is not None else 1


def read_bounded(source: Any, limits: avp.Limits, verify: bool,
                 head: Callable[[avp.Message], Callable[[int, avp.Tensor], None]]
                 ) -> avp.Message:
    """Decode a received message from bytes or a file, checking it as it is read.

    `head(header_only_message)` checks the HEADER and returns the per-tensor check, run on each
    tensor as an IndexedReader (with `limits`) reads it; only a message that passes is decoded
    whole, with every rule of the codec. So nothing beyond what the caller's checks allow is
    inflated. RAW tensors are views either way; a compressed message is inflated twice."""
    if isinstance(source, avp.Message):
        return source
    path = isinstance(source, str | os.PathLike)
    reader = (avp.IndexedReader.open(source, verify=verify, limits=limits) if path
              else avp.IndexedReader(source, verify=verify, limits=limits))
    h = reader.header
    check = head(avp.Message(h.kind, h.entries, h.layers, []))
    for i in range(len(reader)):
        check(i, reader.tensor(i))
    del reader
    if path:
        return avp.decode_file(source, verify=verify, limits=limits)
    return avp.decode(source, verify=verify, limits=limits)


def read_kv(source: Any, model_id: bytes, spec: ModelSpec, *, verify: bool = True,
            max_batch: int = 1, max_context: int | None = None) -> avp.Message:
    """A KV_CACHE from bytes or a file, read so that nothing beyond this model's sizes is
    inflated: the HEADER is checked first (check_header), each tensor as it is read (with a
    LIMIT_TENSOR above the largest tensor a cache of this model holds), and only then is the
    whole message decoded."""
    def head(m: avp.Message) -> Callable[[int, avp.Tensor], None]:
        checks = TensorChecks(m.layers, spec, check_header(m, model_id, spec, max_context),
                              max_batch)
        return checks.tensor

    return read_bounded(source, spec.limits(max_batch, max_context), verify, head)


def _check_kv_shape(t: avp.Tensor, s: LayerSpec, path: str) -> int:
    """Heads and head size against the model's; returns the tensor's token count."""
    if len(t.shape) != 4:  # pragma: no cover - the codec refuses another rank (ROLE_SHAPE)
        fail(E.ROLE_SHAPE, f"{t.role.name} of rank {len(t.shape)}", path=path)
    if t.layout == avp.Layout.BHTD:
        heads, tokens, dim = t.shape[1], t.shape[2], t.shape[3]
    elif t.layout == avp.Layout.BTHD:
        heads, tokens, dim = t.shape[2], t.shape[1], t.shape[3]
    else:  # pragma: no cover - the codec refuses other layouts for KEY / VALUE (ROLE_SHAPE)
        fail(E.ROLE_SHAPE, f"{t.role.name} in layout {avp.Layout(t.layout).name}", path=path)
    want = s.kv[t.role]
    if (heads, dim) != want:
        fail(E.MODEL_MISMATCH, f"{t.role.name} of layer {s.index} has {heads} heads of "
             f"{dim}; this model's has {want[0]} heads of {want[1]}", path=path)
    return int(tokens)


def _check_context(got: Admitted, spec: ModelSpec) -> None:
    """POSITIONS and ATTENTION_MASK: honoured where the model can, refused where it cannot.

    The runtime passes every forward pass an explicit 2-D attention mask and explicit position
    ids, so an attention model continues correctly after padding (mask 0) and after positions
    that do not start at 0, as long as each row's real tokens have consecutive positions (the
    next token then takes the position after the last one). A recurrent state has consumed any
    padding with the real tokens, so padding is refused where the model has recurrent layers.
    """
    mask, pos = got.attention_mask, got.positions
    if mask is not None and bool((mask == 0).any()):
        if spec.recurrent:
            fail(E.UNSUPPORTED_CAPABILITY, "padding (ATTENTION_MASK 0) in a context of a model "
                 "with recurrent layers: the state has consumed it", path="ATTENTION_MASK")
        if bool((mask.sum(dim=1) == 0).any()):
            fail(E.UNSUPPORTED_CAPABILITY, "a batch row without any real token",
                 path="ATTENTION_MASK")
    if pos is None or pos.numel() == 0:
        return
    real = mask.bool() if mask is not None else torch.ones_like(pos, dtype=torch.bool)
    if bool((pos[real] < 0).any()):
        fail(E.INVALID_VALUE, "negative position", path="POSITIONS")
    if not spec.attention:
        return  # a purely recurrent model takes no positions: nothing to honour
    arange = torch.arange(pos.shape[1], dtype=torch.long).expand_as(pos)
    if mask is None and torch.equal(pos, arange):
        return
    if not spec.takes_positions:
        fail(E.UNSUPPORTED_CAPABILITY, "POSITIONS other than 0..n-1: this model takes no "
             "position ids", path="POSITIONS")
    for b in range(pos.shape[0]):
        p = pos[b][real[b]]
        if p.numel() and not torch.equal(p, torch.arange(int(p[0]), int(p[0]) + p.numel())):
            fail(E.UNSUPPORTED_CAPABILITY, f"row {b}: the real tokens' positions are not "
                 "consecutive; this runtime continues a context at one next position",
                 path="POSITIONS")
        if p.numel() and int(p[-1]) >= spec.max_context:
            fail(E.UNSUPPORTED_CAPABILITY, f"row {b}: position {int(p[-1])} is beyond this "
                 f"model's maximum of {spec.max_context}", path="POSITIONS")


def check_finite(x: torch.Tensor, path: str) -> None:
    """INVALID_VALUE for a NaN or an infinity, checked in chunks (bounded scratch memory)."""
    if not x.is_floating_point() or x.device.type == "meta":
        return
    if not _all_finite(x):
        fail(E.INVALID_VALUE, "non-finite value (NaN or infinity) in a cache tensor; "
             "import_(allow_non_finite=True) accepts it", path=path)


def _all_finite(x: torch.Tensor) -> bool:
    """torch.isfinite(x).all() with at most FINITE_CHUNK booleans alive at a time: slices are
    taken along the longest axis, so a permuted (non-contiguous) view is never copied whole."""
    if x.numel() <= FINITE_CHUNK or x.dim() == 0:
        return bool(torch.isfinite(x).all())
    axis = max(range(x.dim()), key=lambda a: x.shape[a])
    step = max(1, FINITE_CHUNK // (x.numel() // x.shape[axis]))
    return all(_all_finite(x.narrow(axis, i, min(step, x.shape[axis] - i)))
               for i in range(0, x.shape[axis], step))
