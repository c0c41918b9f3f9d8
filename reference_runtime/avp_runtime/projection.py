"""Vocabulary-mediated projection of a hidden state into another model's input space (spec 14.4).

    h (source, last layer, final norm)  -> logits = lm_head_src(h)
    -> softmax(logits / T) over the shared token set S  (renormalised: the mass outside S is
       dropped)                          -> p
    -> projected = sum_s p_s * embed_tgt(id_tgt(s))    (a "soft token" in the target's input space)

No learned weights. The sender computes it, so it must hold the target's tokenizer and input
embedding table (ProjectionTable); the payload is tiny (one vector of the target's hidden size per
projected position). The receiver appends the vectors to its own prompt embeddings as
``inputs_embeds``. Rows come from the target's embedding *module*, not its raw weight, so a model
that scales its embeddings (Gemma multiplies by sqrt(hidden_size)) gets vectors on its own scale.

Message convention (HIDDEN_STATE, HIDDEN_SOURCE = 2): MODEL_ID is the *target's* identity (the
state lives in the target's input space), PROJ_SOURCE_MODEL_ID the source's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import avp_codec as avp

from . import identity
from ._errors import fail
from ._msg import build
from .vocab import VocabIndex, shared_pairs

M = avp.MetaKey
PROJ_METHOD_VOCAB = 1
HIDDEN_SOURCE_PROJECTION = 2


@dataclass
class ProjectionTable:
    """The sender's map from the source vocabulary to the target's embeddings, over S."""

    src_ids: torch.Tensor  # [S] int64, ids in the source vocabulary
    tgt_ids: torch.Tensor  # [S] int64, the same strings' ids in the target vocabulary
    target_rows: torch.Tensor  # [S, hidden_tgt] float32, embed_tgt(tgt_ids)
    source_tokenizer_id: bytes
    target_tokenizer_id: bytes
    target_model_id: bytes

    @property
    def shared(self) -> int:
        return int(self.src_ids.numel())

    @classmethod
    def build(cls, source_tokenizer: Any, target_model: Any, target_tokenizer: Any, *,
              target_model_id: bytes | None = None) -> ProjectionTable:
        src = VocabIndex.build(identity.vocabulary(source_tokenizer))
        tgt = VocabIndex.build(identity.vocabulary(target_tokenizer))
        # Special tokens (<eos>, <|im_start|>, ...) are control symbols, not text: never put
        # probability mass on them even where both vocabularies spell one the same way.
        skip_src = set(identity.special_ids(source_tokenizer))
        skip_tgt = set(identity.special_ids(target_tokenizer))
        pairs = [(a, b) for a, b in shared_pairs(src, tgt)
                 if a not in skip_src and b not in skip_tgt]
        if not pairs:
            fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY, "the vocabularies share no token")
        src_ids = torch.tensor([a for a, _ in pairs], dtype=torch.long)
        tgt_ids = torch.tensor([b for _, b in pairs], dtype=torch.long)
        emb = target_model.get_input_embeddings()
        dev = emb.weight.device
        with torch.no_grad():
            rows = emb(tgt_ids.to(dev)).float()
        return cls(src_ids, tgt_ids, rows, identity.tokenizer_id(source_tokenizer),
                   identity.tokenizer_id(target_tokenizer),
                   target_model_id or identity.model_id(target_model))


@torch.no_grad()
def last_hidden(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """Last-layer hidden states with the final norm applied: [batch, tokens, hidden]."""
    out = model.model(input_ids=input_ids.to(model.device))
    hidden: torch.Tensor = out.last_hidden_state
    return hidden


@torch.no_grad()
def project(source_model: Any, hidden: torch.Tensor, table: ProjectionTable, *,
            temperature: float = 1.0) -> torch.Tensor:
    """[batch, tokens, hidden_src] -> [batch, tokens, hidden_tgt] float32."""
    if not temperature > 0:
        raise ValueError("temperature must be > 0")
    head = source_model.get_output_embeddings().weight  # [V_src, hidden_src]
    if int(table.src_ids.max()) >= head.shape[0]:
        raise ValueError("the projection table names source ids beyond the source's lm_head")
    w = head[table.src_ids.to(head.device)].float()  # only the shared rows: [S, hidden_src]
    logits = hidden.float() @ w.T  # [B, T, S]; the softmax over S is the renormalisation
    p = torch.softmax(logits / temperature, dim=-1)
    return p @ table.target_rows.to(p.device)


def projection_message(projected: torch.Tensor, table: ProjectionTable, *,
                       source_model_id: bytes, temperature: float = 1.0,
                       dtype: avp.Dtype = avp.Dtype.FLOAT32, model_name: str | None = None,
                       context_ids: list[int] | None = None) -> avp.Message:
    """The HIDDEN_STATE message. `context_ids` (target-tokenizer ids) become its TOKEN_IDS: the
    context the state follows (R-10.10), so a receiver holding nothing yet reads them first."""
    arr = projected.detach().float().cpu().numpy()
    if dtype == avp.Dtype.BFLOAT16:
        import ml_dtypes

        arr = arr.astype(ml_dtypes.bfloat16)
    elif dtype != avp.Dtype.FLOAT32:
        raise ValueError("projected states are sent as float32 or bfloat16")
    tensors = []
    if context_ids is not None:
        ids = np.asarray([context_ids], dtype=np.int32)
        tensors.append(avp.Tensor.from_array(ids, avp.Role.TOKEN_IDS, layout=avp.Layout.BT))
    tensors.append(avp.Tensor.from_array(np.ascontiguousarray(arr), avp.Role.HIDDEN_STATE,
                                         layout=avp.Layout.BTD))
    values: dict[avp.MetaKey, Any] = {
        M.MODEL_ID: table.target_model_id,
        M.TOKENIZER_ID: table.target_tokenizer_id,
        M.MODEL_NAME: model_name,
        M.HIDDEN_SOURCE: HIDDEN_SOURCE_PROJECTION,
        M.PROJ_METHOD: PROJ_METHOD_VOCAB,
        M.PROJ_SOURCE_MODEL_ID: source_model_id,
        M.PROJ_SOURCE_TOKENIZER_ID: table.source_tokenizer_id,
        M.PROJ_TARGET_TOKENIZER_ID: table.target_tokenizer_id,
        M.PROJ_SHARED_VOCAB: table.shared,
        M.PROJ_TEMPERATURE: float(temperature),
    }
    return build(avp.Kind.HIDDEN_STATE, values, tensors)


def context_ids(msg: avp.Message) -> list[int]:
    """The TOKEN_IDS the projected state follows (empty when the message has none). Unchecked:
    a receiver uses `receive()`, which checks them against its vocabulary."""
    for t in msg.tensors:
        if t.role == avp.Role.TOKEN_IDS:
            return [int(i) for i in np.asarray(t.array()).reshape(-1)]
    return []


FLOATING = frozenset({avp.Dtype.FLOAT32, avp.Dtype.FLOAT16, avp.Dtype.BFLOAT16,
                      avp.Dtype.FLOAT8_E4M3FN, avp.Dtype.FLOAT8_E5M2})


def read_projection(msg: avp.Message, *, model_id: bytes, tokenizer_id: bytes,
                    hidden_size: int, vocab_size: int | None = None,
                    max_positions: int | None = None) -> torch.Tensor:
    """The receiver's checks, then the projected states as a float32 [batch, tokens, hidden].

    With `vocab_size` the TOKEN_IDS are checked too, with `max_positions` the number of
    positions (see `receive`, which is what a receiver normally calls).
    """
    return _read(msg, model_id, tokenizer_id, hidden_size, vocab_size, max_positions,
                 receiving=False)[1]


@dataclass
class Received:
    """A projection a receiver may feed its model: the context token ids it follows
    (`[1, n]`, n may be 0) and the projected states (`[1, tokens >= 1, hidden]`, float32)."""

    context_ids: torch.Tensor
    states: torch.Tensor


def receive(source: avp.Message | bytes | bytearray | memoryview, connector: Any, *,
            new_tokens: int = 0, verify: bool = True) -> Received:
    """Every check a receiver makes on a projected HIDDEN_STATE, for `connector`'s model.

    Codes: KIND_CONSTRAINT (not a projection; no projected position; TOKEN_IDS and states
    disagree on the batch; a second TOKEN_IDS), INVALID_VALUE (an unknown PROJ_METHOD; a token id
    outside the vocabulary, the latent marker -1 included, since these ids are embedded; NaN or
    infinity), MODEL_MISMATCH (another model or tokenizer, R-10.11 / R-14.8), ROLE_SHAPE (another
    hidden size), UNSUPPORTED_CAPABILITY (a batch other than 1; states that are not floating
    point; more positions, with `new_tokens` to generate, than the model's maximum).

    Given bytes, the message is read with admit.read_bounded: the HEADER is checked first and
    each tensor as it is read, so no more than the model's positions of states are inflated
    (LIMIT_TENSOR for a tensor beyond that).
    """
    c = connector
    hidden = int(c.model.config.get_text_config().hidden_size)
    room = c.spec.max_context - new_tokens
    if not isinstance(source, avp.Message):
        source = _read_bounded(source, c.model_id, c.tokenizer_id, hidden, room, verify)
    ids, states = _read(source, c.model_id, c.tokenizer_id, hidden, c.vocab_size, room,
                        receiving=True)
    return Received(ids, states)


def _check_head(msg: avp.Message, model_id: bytes, tokenizer_id: bytes) -> None:
    if msg.kind != avp.Kind.HIDDEN_STATE or msg.get(M.HIDDEN_SOURCE) != HIDDEN_SOURCE_PROJECTION:
        fail(avp.ErrorCode.KIND_CONSTRAINT, "not a projected HIDDEN_STATE message")
    if msg.get(M.PROJ_METHOD) != PROJ_METHOD_VOCAB:
        fail(avp.ErrorCode.INVALID_VALUE, f"unknown PROJ_METHOD {msg.get(M.PROJ_METHOD)!r}",
             path="PROJ_METHOD")
    # our own MODEL_ID and TOKENIZER_ID, else MODEL_MISMATCH.
    avp.check_model_id(msg, model_id, tokenizer_id)


def _read_bounded(source: Any, model_id: bytes, tokenizer_id: bytes, hidden: int, room: int,
                  verify: bool) -> avp.Message:
    from . import admit

    positions = max(room, 1)
    limits = avp.Limits(max_tensor_bytes=positions * max(4 * hidden, 8))

    def head(m: avp.Message) -> Callable[[int, avp.Tensor], None]:
        _check_head(m, model_id, tokenizer_id)
        used = [0]

        def tensor(i: int, t: avp.Tensor) -> None:
            # Each tensor's token axis counts against the model's positions as it arrives.
            if t.role in (avp.Role.HIDDEN_STATE, avp.Role.TOKEN_IDS) and len(t.shape) >= 2:
                used[0] += int(t.shape[1])
            if used[0] > room:
                fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY, f"more than {room} positions, this "
                     "model's maximum", path=f"tensors[{i}]")
        return tensor

    return admit.read_bounded(source, limits, verify, head)


def _read(msg: avp.Message, model_id: bytes, tokenizer_id: bytes, hidden_size: int,
          vocab_size: int | None, max_positions: int | None, *, receiving: bool
          ) -> tuple[torch.Tensor, torch.Tensor]:
    _check_head(msg, model_id, tokenizer_id)
    # Descriptors first: nothing is decompressed or converted for a message that cannot fit.
    hidden = [(i, t) for i, t in enumerate(msg.tensors) if t.role == avp.Role.HIDDEN_STATE]
    id_tensors = [(i, t) for i, t in enumerate(msg.tensors) if t.role == avp.Role.TOKEN_IDS]
    if not hidden:
        fail(avp.ErrorCode.KIND_CONSTRAINT, "no HIDDEN_STATE tensor")
    for i, t in hidden:
        if len(t.shape) != 3 or t.shape[2] != hidden_size:
            fail(avp.ErrorCode.ROLE_SHAPE,
                 f"projected state of shape {list(t.shape)}, expected [batch, tokens, "
                 f"{hidden_size}]", path=f"tensors[{i}].shape")
        dtype = t.quant.dequant_dtype if t.quant is not None else t.dtype
        if dtype not in FLOATING:
            fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY,
                 f"projected state of dtype {avp.Dtype(dtype).name}", path=f"tensors[{i}]")
    batch = {t.shape[0] for _, t in hidden}
    if len(batch) != 1:
        fail(avp.ErrorCode.KIND_CONSTRAINT, f"HIDDEN_STATE tensors disagree on the batch: "
             f"{sorted(batch)} (R-10.10)")
    b = batch.pop()
    tokens = sum(t.shape[1] for _, t in hidden)
    if receiving and b != 1:
        fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY, f"batch {b}: a receiver continues one "
             "sequence")
    if receiving and tokens == 0:
        fail(avp.ErrorCode.KIND_CONSTRAINT, "the projection holds no projected position")
    if len(id_tensors) > 1:
        fail(avp.ErrorCode.KIND_CONSTRAINT, "a second TOKEN_IDS tensor",
             path=f"tensors[{id_tensors[1][0]}]")
    n = 0
    if id_tensors:
        i, t = id_tensors[0]
        if len(t.shape) != 2 or t.shape[0] != b or t.quant is not None:
            fail(avp.ErrorCode.KIND_CONSTRAINT, f"TOKEN_IDS of shape {list(t.shape)} for "
                 f"states of batch {b}", path=f"tensors[{i}]")
        n = t.shape[1]
    if max_positions is not None and n + tokens > max_positions:
        fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY, f"{n} context tokens and {tokens} projected "
             f"positions exceed this model's maximum of {max_positions}")
    ids = torch.zeros(1, 0, dtype=torch.long)
    if id_tensors:
        i, t = id_tensors[0]
        ids = torch.from_numpy(np.array(t.array(), dtype=np.int64))
        if vocab_size is not None and ids.numel() and (
                int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            fail(avp.ErrorCode.INVALID_VALUE, f"TOKEN_IDS outside the vocabulary [0, "
                 f"{vocab_size}) (the latent marker -1 names no token to embed)",
                 path=f"tensors[{i}]")
    if any(t.quant is not None for _, t in hidden):
        from avp_codec import quant

        msg = quant.dequantize_message(msg)
        hidden = [(i, t) for i, t in enumerate(msg.tensors) if t.role == avp.Role.HIDDEN_STATE]
    states = [np.asarray(t.array(), dtype=np.float32) for _, t in hidden]
    # The message's sequence is its HIDDEN_STATE tensors concatenated along tokens (10.6).
    arr = states[0] if len(states) == 1 else np.concatenate(states, axis=1)
    if not np.isfinite(arr).all():
        fail(avp.ErrorCode.INVALID_VALUE, "projected state holds NaN or infinity",
             path="HIDDEN_STATE")
    return ids, torch.from_numpy(arr.copy())


@torch.no_grad()
def generate_after(connector: Any, received: Received, *, max_new_tokens: int = 24) -> str:
    """The receiver's answer: its model reads the context ids, then the projected states, and
    generates greedily (`receive(..., new_tokens=max_new_tokens)` bounded the positions)."""
    c = connector
    embeds = received.states.to(c.device, c.model.dtype)
    if received.context_ids.numel():
        ids = received.context_ids.to(c.device)
        embeds = torch.cat([c.model.get_input_embeddings()(ids), embeds], 1)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    pad = getattr(c.tokenizer, "pad_token_id", None)
    out = c.model.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                           max_new_tokens=max_new_tokens, pad_token_id=pad or 0)
    return str(c.tokenizer.decode(out[0], skip_special_tokens=True)).strip()


@torch.no_grad()
def logits_with_injection(model: Any, prompt_ids: torch.Tensor,
                          injected: torch.Tensor | None) -> torch.Tensor:
    """Next-token logits of `model` reading its prompt, then the injected soft tokens (if any)."""
    dev = model.device
    embeds = model.get_input_embeddings()(prompt_ids.to(dev))
    if injected is not None:
        embeds = torch.cat([embeds, injected.to(dev, embeds.dtype)], dim=1)
    logits: torch.Tensor = model(inputs_embeds=embeds).logits[:, -1, :].float()
    return logits
