"""Convenience constructors for each message kind (spec 10). They check their arguments at the
door (a wrong type is ``TypeError``, a wrong length or rank ``ValueError``, each naming the
argument) and assemble entries; the encoder validates everything else, so a builder cannot
produce a message the decoder refuses."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from ._args import arg_bytes, arg_enum, arg_int, arg_ints, arg_str, tname
from ._registry import (
    LAYOUT_INFO,
    Codec,
    Dtype,
    ErrorCode,
    Kind,
    LayerKind,
    Layout,
    MetaKey,
    Mode,
    Role,
)
from .model import Entry, Layer, Message, Tensor, Value

VERSION_1_0 = 1 << 16
"""Format version 1.0 as HELLO and ACCEPT list it (spec 14.2): ``major << 16 | minor``."""


def _entries(pairs: Iterable[tuple[MetaKey, Value | None]], extra: Sequence[Entry]) -> list[Entry]:
    out = [Entry.of(k, v) for k, v in pairs if v is not None]
    return sorted(out + _listof(extra, "extra", Entry), key=lambda e: e.key)


def _listof(v: object, name: str, cls: type) -> list[Any]:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"{name} must be a list of avp_codec.{cls.__name__}, not {tname(v)}")
    for i, x in enumerate(v):
        if not isinstance(x, cls):
            raise TypeError(f"{name}[{i}] must be an avp_codec.{cls.__name__}, not {tname(x)}")
    return list(v)


def _id32(v: object, name: str, optional: bool = False) -> bytes | None:
    """A 32-byte identity (MODEL_ID, TOKENIZER_ID, ...: SHA-256 digests, spec 13)."""
    return arg_bytes(v, name, length=32, optional=optional)


def _opt_str(v: object, name: str) -> str | None:
    return arg_str(v, name, optional=True)


def _opt_int(v: object, name: str) -> int | None:
    return arg_int(v, name, optional=True)


def kv_cache_message(model_id: bytes, context_length: int, layers: Sequence[Layer],
                     tensors: Sequence[Tensor], *, tokenizer_id: bytes | None = None,
                     model_name: str | None = None, producer: str | None = None,
                     created_by_steps: int | None = None, quant_policy: str | None = None,
                     extra: Sequence[Entry] = ()) -> Message:
    """A KV_CACHE message from a layer table and its tensors (message-level tensors first).

    ``model_id`` is the 32-byte model identity (spec 13.1); ``layers`` one ``Layer`` per model
    layer sent, in increasing ``index``; ``tensors`` placed in those layers by ordinal (see
    ``Tensor.from_array``). For per-layer K/V arrays, ``kv_cache_from_arrays`` does it all.

    >>> import numpy as np, avp_codec as avp
    >>> kv = np.zeros((1, 2, 4, 8), np.float16)          # [batch, heads, tokens, head_dim]
    >>> layers = [avp.Layer(3, avp.LayerKind.FULL_ATTENTION, 0, 4)]   # model layer 3 ...
    >>> tensors = [avp.Tensor.from_array(kv, role, ordinal=0, layout=avp.Layout.BHTD)
    ...            for role in (avp.Role.KEY, avp.Role.VALUE)]        # ... is ordinal 0
    >>> msg = avp.kv_cache_message(bytes(32), 4, layers, tensors, model_name="demo")
    >>> print(msg.kind, msg.get(avp.MetaKey.CONTEXT_LENGTH), msg.get(avp.MetaKey.MODEL_NAME))
    KV_CACHE 4 demo
    >>> avp.kv_cache_message(b"abc", 4, layers, tensors)
    Traceback (most recent call last):
    ValueError: model_id must be 32 bytes, not 3
    """
    return Message(Kind.KV_CACHE, _entries([
        (MetaKey.MODEL_ID, _id32(model_id, "model_id")),
        (MetaKey.TOKENIZER_ID, _id32(tokenizer_id, "tokenizer_id", True)),
        (MetaKey.MODEL_NAME, _opt_str(model_name, "model_name")),
        (MetaKey.PRODUCER, _opt_str(producer, "producer")),
        (MetaKey.CONTEXT_LENGTH, arg_int(context_length, "context_length")),
        (MetaKey.CREATED_BY_STEPS, _opt_int(created_by_steps, "created_by_steps")),
        (MetaKey.QUANT_POLICY, _opt_str(quant_policy, "quant_policy")),
    ], extra), _listof(layers, "layers", Layer), _listof(tensors, "tensors", Tensor))


def kv_cache_from_arrays(model_id: bytes, keys: Sequence[Any], values: Sequence[Any], *,
                         layout: Layout = Layout.BHTD, token_ids: Any = None,
                         codec: Codec = Codec.RAW, layer_indices: Sequence[int] | None = None,
                         **kw: Any) -> Message:
    """A full-attention KV_CACHE from per-layer K and V arrays (numpy or torch) of one layout.

    ``keys[i]`` and ``values[i]`` are layer i's K and V, rank 4: ``[batch, heads, tokens,
    head_dim]`` for layout BHTD (the default), ``[batch, tokens, heads, head_dim]`` for BTHD;
    every one holds the same tokens (the context length). ``layer_indices`` gives the model's
    layer numbers (default 0, 1, 2, ...); the message maps them through its layer table.

    >>> import numpy as np, avp_codec as avp
    >>> k = np.zeros((1, 2, 3, 4), np.float16)
    >>> msg = avp.kv_cache_from_arrays(bytes(32), [k, k], [k, k], layer_indices=[3, 7])
    >>> [la.index for la in msg.layers], msg.get(avp.MetaKey.CONTEXT_LENGTH)
    ([3, 7], 3)
    >>> avp.kv_cache_from_arrays(bytes(32), [k, k], [k])
    Traceback (most recent call last):
    ValueError: keys and values must have the same length: 2 keys, 1 values
    """
    layout = arg_enum(Layout, layout, "layout", ErrorCode.UNKNOWN_LAYOUT)
    if layout not in (Layout.BHTD, Layout.BTHD):
        raise ValueError(f"layout must be BHTD or BTHD for K/V, not {layout.name}")
    for name, seq in (("keys", keys), ("values", values)):
        if isinstance(seq, (str, bytes, bytearray, memoryview)) or not hasattr(seq, "__len__"):
            raise TypeError(f"{name} must be a sequence of per-layer arrays, not {tname(seq)}")
    if len(keys) != len(values):
        raise ValueError(f"keys and values must have the same length: {len(keys)} keys, "
                         f"{len(values)} values")
    if not len(keys):
        raise ValueError("keys is empty: a KV_CACHE needs at least one layer")
    axes = LAYOUT_INFO[layout].axes
    tok_axis = LAYOUT_INFO[layout].token_axis
    assert tok_axis is not None
    ctx = None
    for name, seq in (("keys", keys), ("values", values)):
        for i, a in enumerate(seq):
            shape = getattr(a, "shape", None)
            if shape is None:
                raise TypeError(f"{name}[{i}] must be a numpy array or torch tensor, not "
                                f"{tname(a)}")
            if len(shape) != 4:
                raise ValueError(f"{name}[{i}] has rank {len(shape)}; layout {layout.name} "
                                 f"needs rank 4 [{', '.join(axes)}]")
            if ctx is None:
                ctx = int(shape[tok_axis])
            elif int(shape[tok_axis]) != ctx:
                raise ValueError(f"{name}[{i}] holds {int(shape[tok_axis])} tokens (axis "
                                 f"{tok_axis}, {axes[tok_axis]}); keys[0] holds {ctx}")
    assert ctx is not None
    if layer_indices is not None:
        idx = list(arg_ints(layer_indices, "layer_indices"))
        if len(idx) != len(keys):
            raise ValueError(f"layer_indices has {len(idx)} entries for {len(keys)} layers")
    else:
        idx = list(range(len(keys)))
    _id32(model_id, "model_id")
    layers = [Layer(i, LayerKind.FULL_ATTENTION, 0, ctx) for i in idx]
    tensors: list[Tensor] = []
    if token_ids is not None:
        tensors.append(Tensor.from_array(token_ids, Role.TOKEN_IDS, layout=Layout.BT))
    for li, (k, v) in enumerate(zip(keys, values, strict=True)):
        tensors.append(Tensor.from_array(k, Role.KEY, ordinal=li, layout=layout, codec=codec))
        tensors.append(Tensor.from_array(v, Role.VALUE, ordinal=li, layout=layout, codec=codec))
    return kv_cache_message(model_id, ctx, layers, tensors, **kw)


def hidden_state_message(model_id: bytes, hidden: Any, *, source: int = 1,
                         token_ids: Any = None, tokenizer_id: bytes | None = None,
                         model_name: str | None = None, producer: str | None = None,
                         context_length: int | None = None,
                         created_by_steps: int | None = None,
                         proj_method: int | None = None,
                         proj_source_model_id: bytes | None = None,
                         proj_source_tokenizer_id: bytes | None = None,
                         proj_target_tokenizer_id: bytes | None = None,
                         proj_shared_vocab: int | None = None,
                         proj_temperature: float | None = None,
                         extra: Sequence[Entry] = ()) -> Message:
    """A HIDDEN_STATE message (spec 10.6). ``hidden``: a [batch, tokens, features] array, a
    Tensor, or a list of them. source 1 = same-model latent state, 2 = cross-model projection.

    >>> import numpy as np, avp_codec as avp
    >>> msg = avp.hidden_state_message(bytes(32), np.zeros((1, 3, 8), np.float32))
    >>> print(msg.kind, msg.tensors[0].role, msg.tensors[0].shape)
    HIDDEN_STATE HIDDEN_STATE (1, 3, 8)
    """
    items = hidden if isinstance(hidden, (list, tuple)) else [hidden]
    if proj_temperature is not None and (isinstance(proj_temperature, bool) or not isinstance(
            proj_temperature, (int, float))):
        raise TypeError(f"proj_temperature must be a float, not {tname(proj_temperature)}")
    _id32(model_id, "model_id")
    ids = (("tokenizer_id", tokenizer_id), ("proj_source_model_id", proj_source_model_id),
           ("proj_source_tokenizer_id", proj_source_tokenizer_id),
           ("proj_target_tokenizer_id", proj_target_tokenizer_id))
    for name, b in ids:
        _id32(b, name, True)
    for name, text in (("model_name", model_name), ("producer", producer)):
        _opt_str(text, name)
    arg_int(source, "source")
    ints = (("context_length", context_length), ("created_by_steps", created_by_steps),
            ("proj_method", proj_method), ("proj_shared_vocab", proj_shared_vocab))
    for name, n in ints:
        _opt_int(n, name)
    tensors = [Tensor.from_array(token_ids, Role.TOKEN_IDS, layout=Layout.BT)] \
        if token_ids is not None else []
    for h in items:
        tensors.append(h if isinstance(h, Tensor)
                       else Tensor.from_array(h, Role.HIDDEN_STATE, layout=Layout.BTD))
    return Message(Kind.HIDDEN_STATE, _entries([
        (MetaKey.MODEL_ID, model_id), (MetaKey.TOKENIZER_ID, tokenizer_id),
        (MetaKey.MODEL_NAME, model_name), (MetaKey.PRODUCER, producer),
        (MetaKey.CONTEXT_LENGTH, context_length), (MetaKey.CREATED_BY_STEPS, created_by_steps),
        (MetaKey.HIDDEN_SOURCE, source), (MetaKey.PROJ_METHOD, proj_method),
        (MetaKey.PROJ_SOURCE_MODEL_ID, proj_source_model_id),
        (MetaKey.PROJ_SOURCE_TOKENIZER_ID, proj_source_tokenizer_id),
        (MetaKey.PROJ_TARGET_TOKENIZER_ID, proj_target_tokenizer_id),
        (MetaKey.PROJ_SHARED_VOCAB, proj_shared_vocab),
        (MetaKey.PROJ_TEMPERATURE, None if proj_temperature is None else float(proj_temperature)),
    ], extra), [], tensors)


def text_message(text: str, *, role: str | None = None, model_name: str | None = None,
                 producer: str | None = None, extra: Sequence[Entry] = ()) -> Message:
    """A TEXT message (spec 10.5): the fallback mode every agent supports.

    >>> import avp_codec as avp
    >>> msg = avp.decode(avp.encode(avp.text_message("Summarise this.", role="user")))
    >>> print(msg.get(avp.MetaKey.TEXT), msg.get(avp.MetaKey.TEXT_ROLE))
    Summarise this. user
    """
    return Message(Kind.TEXT, _entries([
        (MetaKey.TEXT, arg_str(text, "text")), (MetaKey.TEXT_ROLE, _opt_str(role, "role")),
        (MetaKey.MODEL_NAME, _opt_str(model_name, "model_name")),
        (MetaKey.PRODUCER, _opt_str(producer, "producer"))], extra))


def hello_message(agent_name: str, *, versions: Sequence[int] = (VERSION_1_0,),
                  dtypes: Sequence[int] = tuple(Dtype), codecs: Sequence[int] = tuple(Codec),
                  modes: Sequence[int] = tuple(Mode), max_message_bytes: int = 1 << 40,
                  model_id: bytes | None = None, tokenizer_id: bytes | None = None,
                  model_name: str | None = None, vocab_digest: bytes | None = None,
                  vocabulary: bytes | None = None, nonce: bytes | None = None,
                  extra: Sequence[Entry] = ()) -> Message:
    """A HELLO (spec 14.2): what this agent offers; ``nonce`` defaults to 16 fresh bytes.

    By default it offers every dtype, codec and mode this codec knows; ``resolve_mode`` picks
    the session mode from two HELLOs (spec 14.3).

    >>> import avp_codec as avp
    >>> mine = avp.hello_message("alice", model_id=bytes(32))
    >>> peer = avp.hello_message("bob", model_id=bytes(32))
    >>> print(mine.get(avp.MetaKey.AGENT_NAME), avp.resolve_mode(mine, peer))
    alice KV_CACHE
    """
    return Message(Kind.HELLO, _entries([
        (MetaKey.AGENT_NAME, arg_str(agent_name, "agent_name")),
        (MetaKey.VERSIONS, _ulist(versions, "versions")),
        (MetaKey.CAP_DTYPES, _ulist(dtypes, "dtypes")),
        (MetaKey.CAP_CODECS, _ulist(codecs, "codecs")),
        (MetaKey.CAP_MODES, _ulist(modes, "modes")),
        (MetaKey.MAX_MESSAGE_BYTES, arg_int(max_message_bytes, "max_message_bytes")),
        (MetaKey.MODEL_ID, _id32(model_id, "model_id", True)),
        (MetaKey.TOKENIZER_ID, _id32(tokenizer_id, "tokenizer_id", True)),
        (MetaKey.MODEL_NAME, _opt_str(model_name, "model_name")),
        (MetaKey.VOCAB_DIGEST, _id32(vocab_digest, "vocab_digest", True)),
        (MetaKey.VOCABULARY, arg_bytes(vocabulary, "vocabulary", optional=True)),
        (MetaKey.NONCE, _nonce(nonce))], extra))


def accept_message(agent_name: str, mode: Mode | int, *,
                   versions: Sequence[int] = (VERSION_1_0,), model_id: bytes | None = None,
                   tokenizer_id: bytes | None = None, dtypes: Sequence[int] | None = None,
                   codecs: Sequence[int] | None = None, modes: Sequence[int] | None = None,
                   max_message_bytes: int | None = None, nonce: bytes | None = None,
                   shared_vocab_size: int | None = None, vocab_digest: bytes | None = None,
                   vocabulary: bytes | None = None, extra: Sequence[Entry] = ()) -> Message:
    """An ACCEPT (spec 14.2): the responder's answer naming the resolved ``mode``.

    >>> import avp_codec as avp
    >>> accept = avp.accept_message("bob", avp.Mode.KV_CACHE, model_id=bytes(32))
    >>> print(avp.Mode(accept.get(avp.MetaKey.MODE)))
    KV_CACHE
    """
    return Message(Kind.ACCEPT, _entries([
        (MetaKey.AGENT_NAME, arg_str(agent_name, "agent_name")),
        (MetaKey.MODE, int(arg_enum(Mode, mode, "mode", ErrorCode.INVALID_VALUE))),
        (MetaKey.VERSIONS, _ulist(versions, "versions")),
        (MetaKey.MODEL_ID, _id32(model_id, "model_id", True)),
        (MetaKey.TOKENIZER_ID, _id32(tokenizer_id, "tokenizer_id", True)),
        (MetaKey.CAP_DTYPES, None if dtypes is None else _ulist(dtypes, "dtypes")),
        (MetaKey.CAP_CODECS, None if codecs is None else _ulist(codecs, "codecs")),
        (MetaKey.CAP_MODES, None if modes is None else _ulist(modes, "modes")),
        (MetaKey.MAX_MESSAGE_BYTES, _opt_int(max_message_bytes, "max_message_bytes")),
        (MetaKey.NONCE, _nonce(nonce)),
        (MetaKey.SHARED_VOCAB_SIZE, _opt_int(shared_vocab_size, "shared_vocab_size")),
        (MetaKey.VOCAB_DIGEST, _id32(vocab_digest, "vocab_digest", True)),
        (MetaKey.VOCABULARY, arg_bytes(vocabulary, "vocabulary", optional=True))], extra))


def error_message(code: ErrorCode | int, text: str | None = None, *,
                  agent_name: str | None = None, extra: Sequence[Entry] = ()) -> Message:
    """An ERROR message carrying ``code`` (any 1..65535, spec 17) and an optional text.

    >>> import avp_codec as avp
    >>> wire = avp.encode(avp.error_message(avp.ErrorCode.LIMIT_TENSORS, "64 tensors at most"))
    >>> msg = avp.decode(wire)
    >>> print(avp.ErrorCode(msg.get(avp.MetaKey.ERROR_CODE)), msg.get(avp.MetaKey.ERROR_TEXT))
    LIMIT_TENSORS 64 tensors at most
    """
    return Message(Kind.ERROR, _entries([
        (MetaKey.ERROR_CODE, int(arg_int(code, "code", lo=1, hi=0xFFFF) or 0)),
        (MetaKey.ERROR_TEXT, _opt_str(text, "text")),
        (MetaKey.AGENT_NAME, _opt_str(agent_name, "agent_name"))], extra))


def _ulist(values: Sequence[int], name: str) -> tuple[int, ...]:
    return tuple(sorted(set(arg_ints(values, name))))


def _nonce(nonce: bytes | None) -> bytes:
    """NONCE is required in HELLO and ACCEPT (lead decision D4): a fresh one unless given."""
    return os.urandom(16) if nonce is None else arg_bytes(nonce, "nonce", length=16) or b""
