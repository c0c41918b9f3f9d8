"""Semantic checks shared by the decoder and the encoders (spec 6.6-6.9, 7.5-7.7, 10, 12).

The decoder calls these in spec 9.2 order as structures arrive (``TensorChecker.check`` per
tensor, ``finish`` at the end), so a streaming receiver learns of a bad tensor before the next
one arrives; the encoders run the same code so they cannot emit what the decoder refuses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from . import _codecs
from ._registry import (
    ATTENTION_ROLES,
    DTYPE_BITS,
    FLOAT_PARAM_DTYPES,
    KIND_INFO,
    LAYER_ROLES,
    LAYOUT_INFO,
    MESSAGE_LEVEL_ROLES,
    QUANT_ROLES,
    QUANT_STORED_DTYPES,
    RECURRENT_ROLES,
    ROLE_DTYPES,
    ROLE_INFO,
    U64_MAX,
    Codec,
    Dtype,
    ErrorCode,
    Kind,
    LayerKind,
    Layout,
    MetaKey,
    QuantScheme,
    Role,
)
from .errors import AvpError
from .model import Entry, Layer, Tensor

_PROJ_KEYS = frozenset(int(k) for k in MetaKey if k.name.startswith("PROJ_"))
_KEYS = frozenset(int(k) for k in MetaKey)
_PROJ_REQUIRED = frozenset({MetaKey.PROJ_METHOD, MetaKey.PROJ_SOURCE_TOKENIZER_ID,
                            MetaKey.PROJ_TARGET_TOKENIZER_ID, MetaKey.PROJ_SHARED_VOCAB})


def check_kind_entries(kind: Kind, entries: Sequence[Entry], offset: int | None,
                       entry_offsets: Sequence[int] | None = None) -> None:
    """R-6.6: required keys present, registered keys allowed for the kind. ``offset`` is the
    HEADER body's, ``entry_offsets`` each entry's (a fault in one entry reports its own)."""
    info = KIND_INFO[kind]
    present = {e.key for e in entries}

    def at(i: int) -> int | None:
        return entry_offsets[i] if entry_offsets is not None else offset

    for i, e in enumerate(entries):
        if e.key in _KEYS and MetaKey(e.key) not in info.allowed:
            raise AvpError(ErrorCode.ENTRY_NOT_ALLOWED,
                           f"{MetaKey(e.key).name} is not allowed in {kind.name}",
                           offset=at(i), path=f"entries[{i}]")
    for k in sorted(info.required):
        if int(k) not in present:
            raise AvpError(ErrorCode.MISSING_ENTRY, f"{kind.name} requires {k.name}",
                           offset=_plus(offset, 16), path="entries")
    if kind == Kind.HIDDEN_STATE:
        source = next(e.value for e in entries if e.key == MetaKey.HIDDEN_SOURCE)
        if source == 1:
            for i, e in enumerate(entries):
                if e.key in _PROJ_KEYS:
                    raise AvpError(ErrorCode.ENTRY_NOT_ALLOWED, "PROJ_* keys need "
                                   "HIDDEN_SOURCE 2", offset=at(i), path=f"entries[{i}]")
        else:
            for k in sorted(_PROJ_REQUIRED):
                if int(k) not in present:
                    raise AvpError(ErrorCode.MISSING_ENTRY, f"a projection requires {k.name}",
                                   offset=_plus(offset, 16), path="entries")


def check_layer(i: int, layer: Layer, prev: Layer | None, offset: int | None) -> None:
    """R-6.7 to R-6.9 for one layer descriptor (layer kind already known to be registered)."""
    path = f"layers[{i}]"
    if prev is not None and layer.index <= prev.index:
        raise AvpError(ErrorCode.NON_CANONICAL, "layer_index must be strictly increasing",
                       offset=_plus(offset, 0), path=path + ".layer_index")
    sliding = layer.kind == LayerKind.SLIDING_WINDOW
    if sliding != (layer.window != 0):
        raise AvpError(ErrorCode.INVALID_VALUE,
                       "window must be nonzero exactly for SLIDING_WINDOW layers",
                       offset=_plus(offset, 8), path=path + ".window")
    if layer.token_start + layer.token_count > U64_MAX:
        raise AvpError(ErrorCode.LENGTH_OVERFLOW, "token_start + token_count overflows u64",
                       offset=_plus(offset, 24), path=path + ".token_count")
    if sliding and layer.token_count > layer.window:
        raise AvpError(ErrorCode.TOKEN_RANGE, "a sliding-window layer holds more than window",
                       offset=_plus(offset, 24), path=path + ".token_count")


def check_kind_layers(kind: Kind, layers: Sequence[Layer], tensor_count: int,
                      context_length: int | None, offset: int | None,
                      layers_at: int | None = None) -> None:
    """Section 10 layer-table and tensor-count constraints of the kind (KIND_CONSTRAINT).
    ``offset`` is the HEADER body's, ``layers_at`` the first layer descriptor's."""
    info = KIND_INFO[kind]
    if info.has_layers and not layers:
        raise AvpError(ErrorCode.KIND_CONSTRAINT, f"{kind.name} needs at least one layer",
                       offset=None if offset is None else offset + 8, path="header.layer_count")
    if not info.has_layers and layers:
        raise AvpError(ErrorCode.KIND_CONSTRAINT, f"{kind.name} has an empty layer table",
                       offset=None if offset is None else offset + 8, path="header.layer_count")
    if not info.tensors and tensor_count:
        raise AvpError(ErrorCode.KIND_CONSTRAINT, f"{kind.name} carries no tensors",
                       offset=None if offset is None else offset + 12,
                       path="header.tensor_count")
    if kind == Kind.KV_CACHE and context_length is not None:
        for i, layer in enumerate(layers):
            if layer.kind == LayerKind.RECURRENT:
                continue
            if layer.token_start + layer.token_count != context_length or (
                    layer.kind == LayerKind.FULL_ATTENTION and layer.token_start != 0):
                raise AvpError(ErrorCode.KIND_CONSTRAINT,
                               "an attention layer must end at CONTEXT_LENGTH (and a full one "
                               "start at 0)", offset=None if layers_at is None else
                               layers_at + 32 * i, path=f"layers[{i}]")


_CONTEXT_ROLES = frozenset({Role.TOKEN_IDS, Role.POSITIONS, Role.ATTENTION_MASK})
# Spec 10 (kinds table, R-10.14): roles of which a message carries at most one tensor (they
# describe the message's one context), and roles of which it needs at least one (F.3).
AT_MOST_ONE: dict[Kind, frozenset[Role]] = {
    Kind.KV_CACHE: _CONTEXT_ROLES, Kind.HIDDEN_STATE: frozenset({Role.TOKEN_IDS})}
AT_LEAST_ONE: dict[Kind, frozenset[Role]] = {Kind.HIDDEN_STATE: frozenset({Role.HIDDEN_STATE})}
_BATCH_ROLES = frozenset({Role.HIDDEN_STATE, Role.TOKEN_IDS})  # in HIDDEN_STATE
_BATCH = "batch"
_TOKEN_ROLES = frozenset(r for r in Role if ROLE_INFO[r].tokens)


class _Fail(Protocol):
    """Type of the local ``fail`` helper in TensorChecker.check."""

    def __call__(self, code: ErrorCode, msg: str, field: str = "", /) -> AvpError: ...


@dataclass(slots=True)
class _Seen:
    role: Role
    dtype: int
    shape: tuple[int, ...]
    layer: int | None
    layout: Layout
    token_offset: int
    offset: int | None  # the descriptor's (for whole-message faults found at the end)
    referenced: bool = False


class TensorChecker:
    """Checks tensors one at a time, keeping only their descriptors (never their data)."""

    def __init__(self, kind: Kind, layers: Sequence[Layer], context_length: int | None, *,
                 standalone_index: int | None = None, layers_at: int | None = None) -> None:
        self.kind = kind
        self.layers_at = layers_at  # offset of the first layer descriptor, when decoding
        self.layers = layers
        self.context_length = context_length
        self.seen: list[_Seen] = []
        self._kind_roles = KIND_INFO[kind].tensors
        self._single = AT_MOST_ONE.get(kind, frozenset())
        self._first: dict[object, tuple[int, ...]] = {}  # shapes the checks compare
        self._role_ok: set[tuple[object, ...]] = set()
        # Descriptors (with their layer's kind and token count) that passed every check that
        # depends on the tensor alone: a later tensor with the same values passes them too,
        # and only the checks that look at the tensors before it remain (see check).
        self._alone_ok: set[tuple[object, ...]] = set()
        self._layer_facts = [(layer.kind, layer.token_count) for layer in layers]
        # A random-access read (spec 11.3) checks one tensor alone: the checks that need the
        # other tensors (order, parameter references, agreement) are skipped.
        self.standalone_index = standalone_index
        self._acceptor: Callable[..., bool] | None = None

    def check(self, t: Tensor, offset: int | None = None) -> None:
        """Check one tensor in message order (raises the first fault, spec 9.2 order)."""
        fields = (t.role, t.dtype, t.shape, t.layer, t.codec, t.layout, t.token_offset,
                  t.raw_length, t.stored_length, t.quant)
        if self.accept_known(*fields, offset):
            return
        self._check(t, offset)
        if self._eligible(fields[0], fields[3], fields[9]):
            assert t.layer is not None
            self._alone_ok.add(fields[:3] + fields[4:9] + (self._layer_facts[t.layer],))

    def _eligible(self, role: Role, layer: int | None, quant: object) -> bool:
        """Whether every check of a tensor but the order rule depends on its own descriptor and
        its layer's kind and token count (not on the tensors before it)."""
        return (self.standalone_index is None and quant is None and layer is not None
                and 0 <= layer < len(self.layers) and role not in self._single
                and not (self.kind == Kind.HIDDEN_STATE and role in _BATCH_ROLES))

    def accept_known(self, role: Role, dtype: Dtype, shape: tuple[int, ...], layer: int | None,
                     codec: Codec, layout: Layout, token_offset: int, raw_length: int,
                     stored_length: int, quant: object, offset: int | None) -> bool:
        """Accept a tensor whose descriptor (with its layer's facts) already passed every
        check that depends on it alone, when it also keeps the layer order: record it as
        ``check`` would and return True. False: nothing recorded, run ``check``."""
        if quant is not None:
            return False
        return self.acceptor()(role, dtype, shape, layer, codec, layout, token_offset,
                               raw_length, stored_length, offset)

    def acceptor(self) -> Callable[..., bool]:
        """``accept_known`` for tensors without quant fields, as one closure with this
        checker's facts bound once (the decoder's fast path calls it once per tensor)."""
        fn = self._acceptor
        if fn is not None:
            return fn
        never = self.standalone_index is not None
        single, n_layers = self._single, len(self.layers)
        batch = _BATCH_ROLES if self.kind == Kind.HIDDEN_STATE else frozenset()
        alone_ok, facts, seen, seen_rec = self._alone_ok, self._layer_facts, self.seen, _Seen

        def accept(role: Role, dtype: Dtype, shape: tuple[int, ...], layer: int | None,
                   codec: Codec, layout: Layout, token_offset: int, raw_length: int,
                   stored_length: int, offset: int | None) -> bool:
            # _eligible's conditions (quant is None here), then the remembered descriptor,
            # then the order rule (message-level tensors first).
            if (never or layer is None or not 0 <= layer < n_layers or role in single
                    or role in batch):
                return False
            if (role, dtype, shape, codec, layout, token_offset, raw_length, stored_length,
                    facts[layer]) not in alone_ok:
                return False
            if seen:
                prev = seen[-1].layer
                if prev is not None and layer < prev:
                    return False
            seen.append(seen_rec(role, dtype, shape, layer, layout, token_offset, offset))
            return True

        self._acceptor = accept
        return accept

    def _check(self, t: Tensor, offset: int | None) -> None:
        alone = self.standalone_index is not None
        i = self.standalone_index if self.standalone_index is not None else len(self.seen)
        path = f"tensor[{i}]"

        def fail(code: ErrorCode, msg: str, field: str = "", /) -> AvpError:
            at = None if offset is None else offset + DESCRIPTOR_FIELDS.get(field, 0)
            return AvpError(code, msg, offset=at, path=path + (f".{field}" if field else ""))

        if t.layer is not None and not 0 <= t.layer < len(self.layers):
            raise fail(ErrorCode.BAD_REFERENCE, f"layer ordinal {t.layer} >= "
                       f"{len(self.layers)} layer table entries (a tensor's layer is an "
                       "ordinal into the table, not a model layer index)", "layer")
        n = math.prod(t.shape)
        if n > U64_MAX:
            raise fail(ErrorCode.LENGTH_OVERFLOW, "element count overflows u64", "shape")
        raw = (n * DTYPE_BITS[t.dtype] + 7) // 8
        if raw > U64_MAX:
            raise fail(ErrorCode.LENGTH_OVERFLOW, "raw length overflows u64", "shape")
        if t.raw_length != raw:
            raise fail(ErrorCode.SIZE_MISMATCH, f"raw_length {t.raw_length} != {raw}",
                       "raw_length")
        if t.codec == Codec.RAW and t.stored_length != t.raw_length:
            raise fail(ErrorCode.SIZE_MISMATCH, "raw codec: stored_length != raw_length",
                       "stored_length")
        if t.codec >= Codec.BYTEPLANE_ZSTD and (why := _codecs.dtype_error(t.codec, t.dtype)):
            raise fail(ErrorCode.CODEC_DTYPE, why, "codec")
        # The role rules depend only on these values: check each combination once.
        key = (t.role, t.layout, len(t.shape), t.dtype, t.layer is None,
               None if t.layer is None else self.layers[t.layer].kind)
        if key not in self._role_ok:
            self._role_shape(t, fail)
            self._role_ok.add(key)
        prev = self.seen[-1] if self.seen else None
        if not alone and prev is not None and prev.layer is not None and (
                t.layer is None or t.layer < prev.layer):
            raise fail(ErrorCode.NON_CANONICAL, "message-level tensors come first, then layer "
                       "tensors in non-decreasing layer order", "layer")
        if t.quant is not None:
            self._quant(i, t, fail)
        if t.token_offset or ROLE_INFO[t.role].tokens:
            self._tokens(t, fail)
        if t.role not in self._kind_roles:
            raise fail(ErrorCode.KIND_CONSTRAINT,
                       f"{self.kind.name} messages carry no {t.role.name} tensor", "role")
        if t.role in self._single and not alone and t.role in self._first:
            raise fail(ErrorCode.KIND_CONSTRAINT,
                       f"a second {t.role.name} tensor ({self.kind.name} carries at most one)",
                       "role")
        if (self.kind == Kind.KV_CACHE and t.role in _CONTEXT_ROLES
                and self.context_length is not None and t.shape[1] != self.context_length):
            raise fail(ErrorCode.KIND_CONSTRAINT,
                       f"{t.role.name} must be [batch, CONTEXT_LENGTH]", "shape")
        if self.kind == Kind.HIDDEN_STATE and t.role in _BATCH_ROLES and not alone:
            # the HIDDEN_STATE tensors and the TOKEN_IDS agree on batch, the
            # HIDDEN_STATE tensors also on hidden size. Every earlier one agreed with the
            # first, so comparing with the first of each is enough (and linear).
            first = self._first.setdefault(_BATCH, t.shape)
            if first[0] != t.shape[0]:
                raise fail(ErrorCode.KIND_CONSTRAINT, f"{t.role.name} has batch {t.shape[0]}, "
                           f"an earlier tensor {first[0]}", "shape")
            if t.role == Role.HIDDEN_STATE:
                hidden = self._first.setdefault(Role.HIDDEN_STATE, t.shape)
                if hidden[2] != t.shape[2]:
                    raise fail(ErrorCode.KIND_CONSTRAINT,
                               "HIDDEN_STATE tensors disagree on hidden size", "shape")
        if t.role in self._single:
            self._first[t.role] = t.shape
        self.seen.append(_Seen(t.role, t.dtype, t.shape, t.layer, t.layout, t.token_offset,
                               offset))

    def _role_shape(self, t: Tensor, fail: _Fail) -> None:
        info = ROLE_INFO[t.role]
        if t.layout not in info.layouts:
            raise fail(ErrorCode.ROLE_SHAPE, f"{t.role.name} does not allow layout "
                       f"{t.layout.name}", "layout")
        if info.rank is not None and len(t.shape) != info.rank:
            raise fail(ErrorCode.ROLE_SHAPE, f"{t.role.name} has rank {info.rank}", "shape")
        allowed = MESSAGE_LEVEL_ROLES if t.layer is None else LAYER_ROLES
        if t.role not in allowed:
            raise fail(ErrorCode.ROLE_SHAPE, f"{t.role.name} is not allowed "
                       f"{'at message level' if t.layer is None else 'in a layer'}", "layer")
        dtypes = ROLE_DTYPES.get(t.role)
        if dtypes is not None and t.dtype not in dtypes:
            raise fail(ErrorCode.ROLE_SHAPE, f"{t.role.name} does not allow dtype "
                       f"{t.dtype.name.lower()}", "dtype")
        if t.layer is not None and t.role not in QUANT_ROLES:
            recurrent = self.layers[t.layer].kind == LayerKind.RECURRENT
            if recurrent and t.role not in RECURRENT_ROLES or (
                    not recurrent and t.role not in ATTENTION_ROLES):
                raise fail(ErrorCode.ROLE_SHAPE, f"{t.role.name} does not fit a "
                           f"{self.layers[t.layer].kind.name} layer", "role")

    def _quant(self, i: int, t: Tensor, fail: _Fail) -> None:
        q = t.quant
        if q is None:
            return
        bad = ErrorCode.QUANT_PARAMS
        stored = QUANT_STORED_DTYPES.get(q.scheme)
        if q.scheme == QuantScheme.NONE or stored is None:
            raise fail(bad, "quant given with scheme NONE", "quant_scheme")
        if t.role in QUANT_ROLES:
            raise fail(bad, f"{t.role.name} tensors are never quantized", "quant_scheme")
        if t.dtype not in stored:
            raise fail(bad, f"{q.scheme.name} does not store {t.dtype.name.lower()}", "dtype")
        if q.dequant_dtype not in FLOAT_PARAM_DTYPES:
            raise fail(bad, "dequant_dtype must be float32, float16 or bfloat16",
                       "dequant_dtype")
        if not 0 <= q.axis < len(t.shape):
            raise fail(bad, "quant_axis is not an axis of the tensor", "quant_axis")
        dim = t.shape[q.axis]
        groups = 1 if q.group_size == 0 else -(-dim // q.group_size)
        want = t.shape[:q.axis] + (groups,) + t.shape[q.axis + 1:]
        if q.scale_tensor is None:
            raise fail(bad, "a quantized tensor needs a scale tensor", "scale_tensor")
        if self.standalone_index is not None:
            if q.zero_point_tensor is not None and q.scheme == QuantScheme.SCALED_FLOAT:
                raise fail(bad, "SCALED_FLOAT has no zero point", "zero_point_tensor")
            return
        self._param(i, t, q.scale_tensor, Role.QUANT_SCALE, want, "scale_tensor", fail)
        if q.zero_point_tensor is not None:
            if q.scheme == QuantScheme.SCALED_FLOAT:
                raise fail(bad, "SCALED_FLOAT has no zero point", "zero_point_tensor")
            self._param(i, t, q.zero_point_tensor, Role.QUANT_ZERO_POINT, want,
                        "zero_point_tensor", fail)

    def _param(self, i: int, t: Tensor, ref: int, role: Role, want: tuple[int, ...],
               field: str, fail: _Fail) -> None:
        bad = ErrorCode.QUANT_PARAMS
        if not 0 <= ref < i:
            raise fail(bad, f"{field} {ref} is not an earlier tensor", field)
        p = self.seen[ref]
        if p.role != role or p.layer != t.layer:
            raise fail(bad, f"{field} must be a {role.name} tensor of the same layer", field)
        if p.dtype not in FLOAT_PARAM_DTYPES or p.shape != want:
            raise fail(bad, f"{field} must be float32/16/bf16 of shape {list(want)}", field)
        if p.referenced:
            raise fail(bad, f"{field} {ref} is already used by another tensor", field)
        p.referenced = True

    def _tokens(self, t: Tensor, fail: _Fail) -> None:
        ax = LAYOUT_INFO[t.layout].token_axis
        if not ROLE_INFO[t.role].tokens or ax is None or t.layer is None:
            if t.token_offset != 0:
                raise fail(ErrorCode.TOKEN_RANGE, f"{t.role.name} tensors have token_offset 0",
                           "token_offset")
            return
        count = self.layers[t.layer].token_count
        if t.token_offset + t.shape[ax] > count:
            raise fail(ErrorCode.TOKEN_RANGE, "tensor runs past its layer's token_count",
                       "token_offset")
        if count and not t.shape[ax]:  # keeps the tiling free of ties
            raise fail(ErrorCode.TOKEN_RANGE, "an empty token chunk in a non-empty layer",
                       "shape")

    def _layer_at(self, li: int, offset: int | None) -> int | None:
        return offset if self.layers_at is None or offset is None else self.layers_at + 32 * li

    def finish(self, offset: int | None = None) -> None:
        """Whole-message checks once every tensor is known. A fault in one tensor or layer is
        reported at that structure's offset; one of the whole message at ``offset`` (the
        Trailer's, when decoding)."""
        if not self._all_fine():
            self._finish(offset)

    def _all_fine(self) -> bool:
        """One pass that proves the checks of ``_finish`` pass for the common message (each
        layer's token roles in one chunk covering the layer); False sends any other message,
        and every fault, through ``_finish``, which finds the first fault in its order."""
        seen, layers = self.seen, self.layers
        kv = self.kind == Kind.KV_CACHE
        batch: int | None = None
        have: set[int | None] = set()
        roles: set[Role] = set()
        chunks: set[tuple[int, Role]] = set()
        for s in seen:
            role, layer = s.role, s.layer
            if role in QUANT_ROLES:
                if not s.referenced:
                    return False
            else:
                have.add(layer)
            roles.add(role)
            if kv and s.layout != Layout.NONE:
                if batch is None:
                    batch = s.shape[0]
                elif s.shape[0] != batch:
                    return False
            if layer is not None and role in _TOKEN_ROLES:
                ax = LAYOUT_INFO[s.layout].token_axis
                if ((layer, role) in chunks or ax is None or s.token_offset
                        or s.shape[ax] != layers[layer].token_count):
                    return False
                chunks.add((layer, role))
        if kv and any(li not in have for li in range(len(layers))):
            return False
        return all(role in roles for role in AT_LEAST_ONE.get(self.kind, ()))

    def _finish(self, offset: int | None) -> None:
        chunks: dict[tuple[int, Role], list[int]] = {}
        for i, s in enumerate(self.seen):
            if s.layer is not None and ROLE_INFO[s.role].tokens:
                chunks.setdefault((s.layer, s.role), []).append(i)
        for (layer, role), idx in chunks.items():
            self._tiling(layer, role, idx, offset)
        for i, s in enumerate(self.seen):
            if s.role in QUANT_ROLES and not s.referenced:
                raise AvpError(ErrorCode.QUANT_PARAMS, "parameter tensor referenced by no "
                               "tensor", offset=_at(s, offset), path=f"tensor[{i}]")
        if self.kind == Kind.KV_CACHE:
            shaped = [(i, s) for i, s in enumerate(self.seen) if s.layout != Layout.NONE]
            for i, s in shaped:
                if s.shape[0] != shaped[0][1].shape[0]:
                    batches = sorted({s.shape[0] for _, s in shaped})
                    raise AvpError(ErrorCode.ROLE_SHAPE, f"tensors disagree on batch size: "
                                   f"{batches}", offset=_plus(_at(s, offset), 64),
                                   path=f"tensor[{i}].shape")
            have = {s.layer for s in self.seen if s.role not in QUANT_ROLES}
            for li in range(len(self.layers)):
                if li not in have:
                    raise AvpError(ErrorCode.KIND_CONSTRAINT, "a KV_CACHE layer carries no "
                                   "tensor", offset=self._layer_at(li, offset),
                                   path=f"layers[{li}]")
        for role in AT_LEAST_ONE.get(self.kind, ()):
            if not any(s.role == role for s in self.seen):
                raise AvpError(ErrorCode.KIND_CONSTRAINT, f"{self.kind.name} needs a "
                               f"{role.name} tensor", offset=offset, path="tensors")

    def _tiling(self, layer: int, role: Role, idx: list[int], offset: int | None) -> None:
        first = self.seen[idx[0]]
        ax = LAYOUT_INFO[first.layout].token_axis
        assert ax is not None
        if len(idx) == 1 and first.token_offset == 0 and (
                first.shape[ax] == self.layers[layer].token_count):
            return  # one chunk covering the layer: the common case, nothing to sort
        pos = 0
        for i in sorted(idx, key=lambda j: self.seen[j].token_offset):
            s = self.seen[i]
            rest = s.shape[:ax] + s.shape[ax + 1:]
            if s.token_offset != pos or s.layout != first.layout or rest != (
                    first.shape[:ax] + first.shape[ax + 1:]):
                raise AvpError(ErrorCode.TOKEN_RANGE, f"{role.name} tensors of layer {layer} "
                               "do not tile its tokens", offset=_at(s, offset),
                               path=f"tensor[{i}]")
            pos += s.shape[ax]
        if pos != self.layers[layer].token_count:
            raise AvpError(ErrorCode.TOKEN_RANGE, f"{role.name} tensors of layer {layer} cover "
                           f"{pos} of {self.layers[layer].token_count} tokens",
                           offset=self._layer_at(layer, offset), path=f"layers[{layer}]")


def _at(s: _Seen, offset: int | None) -> int | None:
    """A seen tensor's descriptor offset, or the fallback (None when encoding)."""
    return s.offset if s.offset is not None and offset is not None else offset


def _plus(offset: int | None, rel: int) -> int | None:
    return None if offset is None else offset + rel


# Where each descriptor field starts in the TENSOR body (spec 7.1), so that an error names the
# field's own first byte (spec 17.2); the shape starts at 64.
DESCRIPTOR_FIELDS = {
    "tensor_index": 0, "layer": 4, "role": 8, "dtype": 10, "codec": 11, "rank": 12,
    "layout": 13, "quant_scheme": 14, "quant_axis": 15, "group_size": 16, "scale_tensor": 20,
    "zero_point_tensor": 24, "dequant_dtype": 28, "token_offset": 32, "raw_length": 40,
    "stored_length": 48, "data_crc": 56, "shape": 64}
