"""Convenience constructors for each message kind (spec 10). They only assemble entries; the
encoder validates everything, so a builder cannot produce a message the decoder refuses."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from ._registry import Codec, Dtype, ErrorCode, Kind, LayerKind, Layout, MetaKey, Mode, Role
from .model import Entry, Layer, Message, Tensor, Value

VERSION_1_0 = 1 << 16


def _entries(pairs: Iterable[tuple[MetaKey, Value | None]], extra: Sequence[Entry]) -> list[Entry]:
    out = [Entry.of(k, v) for k, v in pairs if v is not None]
    return sorted(out + list(extra), key=lambda e: e.key)


def kv_cache_message(model_id: bytes, context_length: int, layers: Sequence[Layer],
                     tensors: Sequence[Tensor], *, tokenizer_id: bytes | None = None,
                     model_name: str | None = None, producer: str | None = None,
                     created_by_steps: int | None = None, quant_policy: str | None = None,
                     extra: Sequence[Entry] = ()) -> Message:
    """A KV_CACHE message from a layer table and its tensors (message-level tensors first)."""
    return Message(Kind.KV_CACHE, _entries([
        (MetaKey.MODEL_ID, model_id), (MetaKey.TOKENIZER_ID, tokenizer_id),
        (MetaKey.MODEL_NAME, model_name), (MetaKey.PRODUCER, producer),
        (MetaKey.CONTEXT_LENGTH, context_length),
        (MetaKey.CREATED_BY_STEPS, created_by_steps), (MetaKey.QUANT_POLICY, quant_policy),
    ], extra), list(layers), list(tensors))


def kv_cache_from_arrays(model_id: bytes, keys: Sequence[Any], values: Sequence[Any], *,
                         layout: Layout = Layout.BHTD, token_ids: Any = None,
                         codec: Codec = Codec.RAW, layer_indices: Sequence[int] | None = None,
                         **kw: Any) -> Message:
    """A full-attention KV_CACHE from per-layer K and V arrays (numpy or torch) of one layout.

    The context length is the token axis of the first K; every layer holds all tokens.
    """
    tok_axis = 2 if layout == Layout.BHTD else 1
    ctx = int(keys[0].shape[tok_axis])
    idx = list(layer_indices) if layer_indices is not None else list(range(len(keys)))
    layers = [Layer(i, LayerKind.FULL_ATTENTION, 0, ctx) for i in idx]
    tensors: list[Tensor] = []
    if token_ids is not None:
        tensors.append(Tensor.from_array(token_ids, Role.TOKEN_IDS, layout=Layout.BT))
    for li, (k, v) in enumerate(zip(keys, values, strict=True)):
        tensors.append(Tensor.from_array(k, Role.KEY, layer=li, layout=layout, codec=codec))
        tensors.append(Tensor.from_array(v, Role.VALUE, layer=li, layout=layout, codec=codec))
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
    """A HIDDEN_STATE message. ``hidden``: a [batch, tokens, features] array, a Tensor, or a
    list of them. source 1 = same-model latent state, 2 = cross-model projection."""
    items = hidden if isinstance(hidden, (list, tuple)) else [hidden]
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
    return Message(Kind.TEXT, _entries([
        (MetaKey.TEXT, text), (MetaKey.TEXT_ROLE, role), (MetaKey.MODEL_NAME, model_name),
        (MetaKey.PRODUCER, producer)], extra))


def hello_message(agent_name: str, *, versions: Sequence[int] = (VERSION_1_0,),
                  dtypes: Sequence[int] = tuple(Dtype), codecs: Sequence[int] = tuple(Codec),
                  modes: Sequence[int] = tuple(Mode), max_message_bytes: int = 1 << 40,
                  model_id: bytes | None = None, tokenizer_id: bytes | None = None,
                  model_name: str | None = None, vocab_digest: bytes | None = None,
                  vocabulary: bytes | None = None, nonce: bytes | None = None,
                  extra: Sequence[Entry] = ()) -> Message:
    return Message(Kind.HELLO, _entries([
        (MetaKey.AGENT_NAME, agent_name), (MetaKey.VERSIONS, _ulist(versions)),
        (MetaKey.CAP_DTYPES, _ulist(dtypes)), (MetaKey.CAP_CODECS, _ulist(codecs)),
        (MetaKey.CAP_MODES, _ulist(modes)), (MetaKey.MAX_MESSAGE_BYTES, max_message_bytes),
        (MetaKey.MODEL_ID, model_id), (MetaKey.TOKENIZER_ID, tokenizer_id),
        (MetaKey.MODEL_NAME, model_name), (MetaKey.VOCAB_DIGEST, vocab_digest),
        (MetaKey.VOCABULARY, vocabulary), (MetaKey.NONCE, _nonce(nonce))], extra))


def accept_message(agent_name: str, mode: Mode | int, *,
                   versions: Sequence[int] = (VERSION_1_0,), model_id: bytes | None = None,
                   tokenizer_id: bytes | None = None, dtypes: Sequence[int] | None = None,
                   codecs: Sequence[int] | None = None, modes: Sequence[int] | None = None,
                   max_message_bytes: int | None = None, nonce: bytes | None = None,
                   shared_vocab_size: int | None = None, vocab_digest: bytes | None = None,
                   vocabulary: bytes | None = None, extra: Sequence[Entry] = ()) -> Message:
    return Message(Kind.ACCEPT, _entries([
        (MetaKey.AGENT_NAME, agent_name), (MetaKey.MODE, int(mode)),
        (MetaKey.VERSIONS, _ulist(versions)), (MetaKey.MODEL_ID, model_id),
        (MetaKey.TOKENIZER_ID, tokenizer_id),
        (MetaKey.CAP_DTYPES, None if dtypes is None else _ulist(dtypes)),
        (MetaKey.CAP_CODECS, None if codecs is None else _ulist(codecs)),
        (MetaKey.CAP_MODES, None if modes is None else _ulist(modes)),
        (MetaKey.MAX_MESSAGE_BYTES, max_message_bytes), (MetaKey.NONCE, _nonce(nonce)),
        (MetaKey.SHARED_VOCAB_SIZE, shared_vocab_size), (MetaKey.VOCAB_DIGEST, vocab_digest),
        (MetaKey.VOCABULARY, vocabulary)], extra))


def error_message(code: ErrorCode | int, text: str | None = None, *,
                  agent_name: str | None = None, extra: Sequence[Entry] = ()) -> Message:
    return Message(Kind.ERROR, _entries([
        (MetaKey.ERROR_CODE, int(code)), (MetaKey.ERROR_TEXT, text),
        (MetaKey.AGENT_NAME, agent_name)], extra))


def _ulist(values: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted({int(v) for v in values}))


def _nonce(nonce: bytes | None) -> bytes:
    """NONCE is required in HELLO and ACCEPT (lead decision D4): a fresh one unless given."""
    return os.urandom(16) if nonce is None else bytes(nonce)
