"""The Transformers connector: think in latent steps, export / import KV-caches, generate.

A `Connector` wraps one loaded causal LM. `think()` runs a prompt and then LatentMAS latent steps
(the last hidden state, realigned into input-embedding space, is fed back as the next input) and
returns a `Context`. `export()` streams a Context into an AVP KV_CACHE message layer by layer;
`import_()` turns such a message back into a Context whose cache is a Transformers DynamicCache
on any device, after checking that the message's MODEL_ID is this model's own and that every
tensor fits this model (admit.py: nothing is installed that the model cannot use). `generate()`
continues from a Context.

Contexts are immutable in use: every forward pass runs on a fork of the context's cache (see
cache_io.fork_cache), so one context can feed any number of receivers or generations.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

import avp_codec as avp
from avp_codec import auto

from . import _install, admit, cache_io, identity, models, prompts
from ._errors import fail
from ._forward import CACHE_KEYWORDS, Cursor, cache_keyword, returned_cache
from ._forward import check_cache_filled as _check_cache_filled
from .latent import Realigner

__all__ = ["CACHE_KEYWORDS", "Connector", "Context", "Generation", "LATENT_TOKEN",
           "cache_keyword", "returned_cache"]

PRODUCER = "avp-runtime/0.1.0 (transformers)"
LATENT_TOKEN = -1  # TOKEN_IDS value at positions that hold a latent step, not a token


class Writable(Protocol):
    """Anything with a binary write(): a file, a socket's makefile("wb"), a BytesIO."""

    def write(self, data: bytes | memoryview, /) -> object: ...


@dataclass(frozen=True)
class Context:
    """What an agent hands over: a KV-cache and the tokens/positions it covers.

    `token_ids` and `positions` are `[batch, context_length]` int64; latent-step positions have
    token id -1. `attention_mask` (`[batch, context_length]`, 1 = real token, 0 = padding) is
    None when every position is a real token. Never mutate `cache`; use `fork()` to get a cache
    you may extend.
    """

    cache: Any
    token_ids: torch.Tensor
    positions: torch.Tensor
    context_length: int
    model_id: bytes
    steps: int = 0
    extras: dict[str, Any] = field(default_factory=dict, compare=False)
    attention_mask: torch.Tensor | None = None

    def fork(self) -> Any:
        return cache_io.fork_cache(self.cache)

    def cursor(self) -> Cursor:
        """Where a continuation writes: the cache length, plus the mask and each row's next
        position when the context has padding or positions other than 0..n-1."""
        return Cursor.after(self.context_length, self.positions, self.attention_mask)

    @property
    def batch_size(self) -> int:
        return int(self.token_ids.shape[0])

    def nbytes(self) -> int:
        return cache_io.cache_nbytes(self.cache)


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    seconds: float
    prompt_tokens: int


class Connector:
    """One model + tokenizer, with the AVP operations on top."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or str(getattr(model.config, "_name_or_path", "") or "model")
        self._model_id: bytes | None = None
        self._tokenizer_id: bytes | None = None
        self._realigner: Realigner | None = None
        self._spec: admit.ModelSpec | None = None
        self._vocab: int | None = None
        params = inspect.signature(model.forward).parameters
        self._cache_kw = cache_keyword(model, params)
        self._cache_checked = False
        # Attention models get an explicit mask over context + new tokens and explicit positions
        # (see forward); purely recurrent models (Mamba) take neither.
        self._attention = not cache_io.is_recurrent_only(self._new_cache())
        self._takes_positions = "position_ids" in params
        # Prefill only needs the last position's logits; over a 262k vocabulary the full
        # [tokens, vocab] logits of a long prompt cost more than the rest of the forward pass.
        self._takes_keep = "logits_to_keep" in params

    # ------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, name_or_path: str = models.DEFAULT_MODEL, **kw: Any) -> Connector:
        lm = models.load_model(name_or_path, **kw)
        return cls(lm.model, lm.tokenizer, name=lm.name)

    @classmethod
    def default(cls, **kw: Any) -> Connector:
        return cls.from_pretrained(models.DEFAULT_MODEL, **kw)

    # ------------------------------------------------------------ identities

    @property
    def device(self) -> torch.device:
        dev: torch.device = next(self.model.parameters()).device
        return dev

    @property
    def model_id(self) -> bytes:
        if self._model_id is None:
            self._model_id = identity.model_id(self.model)
        return self._model_id

    @property
    def tokenizer_id(self) -> bytes:
        if self._tokenizer_id is None:
            self._tokenizer_id = identity.tokenizer_id(self.tokenizer)
        return self._tokenizer_id

    # ------------------------------------------------------------ what the model takes

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding: the token ids this model can read."""
        if self._vocab is None:
            emb = getattr(self.model, "get_input_embeddings", None)
            rows = getattr(emb(), "num_embeddings", None) if callable(emb) else None
            if not isinstance(rows, int):
                rows = int(self.model.config.get_text_config().vocab_size)
            self._vocab = rows
        return self._vocab

    @property
    def spec(self) -> admit.ModelSpec:
        """What this model's cache holds, layer by layer (probed once; see admit.py)."""
        if self._spec is None:
            self._spec = admit.ModelSpec.probe(self)
        return self._spec

    # ------------------------------------------------------------ tokens

    def encode_prompt(self, prompt: str, *, chat: bool = True) -> list[int]:
        """Token ids of `prompt` as text, through the chat template when the tokenizer has one.

        Control-token spellings in the text stay text (prompts.py): a prompt, or a received
        TEXT payload, never opens chat turns of its own. Text that cannot fit the model's
        positions is refused (UNSUPPORTED_CAPABILITY) before it is tokenized whole.
        """
        if self.tokenizer is None:
            fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY, f"{self.name} has no tokenizer")
        return prompts.encode(self.tokenizer, prompt, chat=chat, max_tokens=self.spec.max_context)

    def _ids_tensor(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        try:
            t = torch.as_tensor(ids, dtype=torch.long)
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            fail(avp.ErrorCode.INVALID_VALUE, f"token ids: {e}")
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.dim() != 2:
            fail(avp.ErrorCode.INVALID_VALUE, f"token ids of shape {list(t.shape)}")
        vocab = self.vocab_size
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab):
            fail(avp.ErrorCode.INVALID_VALUE, f"token id outside this model's vocabulary "
                 f"[0, {vocab})")
        return t.to(self.device)

    # ------------------------------------------------------------ forward passes

    def forward(
        self,
        cache: Any,
        start: int,
        *,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        hidden: bool = False,
        last_only: bool = False,
        cursor: Cursor | None = None,
    ) -> Any:
        """One forward pass appending to `cache` (mutated) at absolute position `start`.

        `last_only` computes logits for the last position only (when the model supports it).
        `cursor` (a context's `cursor()`, advanced by the caller) carries a padding mask and
        per-row next positions; without one the mask is all ones and positions run from `start`.
        """
        x = input_ids if input_ids is not None else inputs_embeds
        assert x is not None
        batch, n = int(x.shape[0]), int(x.shape[1])
        kw: dict[str, Any] = {self._cache_kw: cache, "use_cache": True}
        if self._attention:
            # An explicit mask over context + new tokens and explicit positions: the imported
            # cache may not start at 0 for every layer (sliding windows), so nothing is left
            # for the model to infer from cache lengths.
            if cursor is not None and cursor.mask is not None:
                kw["attention_mask"] = cursor.mask_for(n, x.device)
            else:
                kw["attention_mask"] = torch.ones(batch, start + n, dtype=torch.long,
                                                  device=x.device)
            if self._takes_positions:
                if cursor is not None and cursor.next_pos is not None:
                    kw["position_ids"] = cursor.positions_for(n, x.device)
                else:
                    pos = torch.arange(start, start + n, device=x.device).unsqueeze(0)
                    kw["position_ids"] = pos.expand(batch, n)
        if hidden:
            kw["output_hidden_states"] = True
        if last_only and self._takes_keep:
            kw["logits_to_keep"] = 1
        with torch.inference_mode():
            if input_ids is not None:
                out = self.model(input_ids=input_ids, **kw)
            else:
                out = self.model(inputs_embeds=inputs_embeds, **kw)
        if not self._cache_checked:
            _check_cache_filled(self.model, self._cache_kw, cache, out)
            self._cache_checked = True
        return out

    def _new_cache(self) -> Any:
        from transformers.cache_utils import DynamicCache

        return DynamicCache(config=self.model.config)

    def prefill(self, ids: list[int] | torch.Tensor) -> Context:
        """A context holding `ids` (no latent steps)."""
        return self.think(ids, steps=0)

    def think(
        self,
        prompt: str | list[int] | torch.Tensor,
        steps: int = 10,
        *,
        context: Context | None = None,
        chat: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> Context:
        """Read `prompt`, then run `steps` LatentMAS latent steps; return the resulting Context.

        Each latent step takes the last layer's final hidden state, maps it into the input
        embedding space with the realignment matrix (latent.Realigner) and feeds it back as the
        next input embedding, so the cache grows by one position per step without decoding a
        token. With `context` (e.g. one imported from another agent) the prompt is appended to
        it and thinking continues from there; `context` itself is left unchanged.
        """
        ids = self.encode_prompt(prompt, chat=chat) if isinstance(prompt, str) else prompt
        input_ids = self._ids_tensor(ids)
        if input_ids.shape[1] == 0:
            raise ValueError("think needs at least one prompt token")
        if steps < 0:
            raise ValueError("steps must be >= 0")
        input_ids = self._match_batch(input_ids, context)
        batch, n = int(input_ids.shape[0]), int(input_ids.shape[1])
        cur = self._cursor(context, n + steps)
        new_positions = cur.new_positions(n + steps, batch)
        cache = context.fork() if context is not None else self._new_cache()
        out = self.forward(cache, cur.length, input_ids=input_ids, hidden=steps > 0,
                           last_only=True, cursor=cur)
        cur.advance(n, batch)
        token_ids = [input_ids.cpu()]
        if context is not None:
            token_ids.insert(0, context.token_ids)
        if steps > 0:
            realign = self.realigner()
            h = out.hidden_states[-1][:, -1:, :]
            for i in range(steps):
                e = realign(h)
                out = self.forward(cache, cur.length, inputs_embeds=e, hidden=True,
                                   last_only=True, cursor=cur)
                cur.advance(1, batch)
                h = out.hidden_states[-1][:, -1:, :]
                token_ids.append(torch.full_like(token_ids[-1][:, :1], LATENT_TOKEN))
                if progress is not None:
                    progress(i + 1, steps)
        all_ids = torch.cat(token_ids, dim=1)
        positions = new_positions.contiguous()
        mask = None
        if context is not None:
            positions = torch.cat([context.positions, positions], dim=1)
            if context.attention_mask is not None:
                mask = torch.cat([context.attention_mask,
                                  torch.ones(batch, n + steps, dtype=torch.long)], dim=1)
        prior = context.steps if context is not None else 0
        return Context(cache, all_ids, positions, cur.length, self.model_id, prior + steps,
                       attention_mask=mask)

    def _cursor(self, context: Context | None, new: int) -> Cursor:
        """The continuation point of `context` (None: an empty cache), after checking that the
        context is this model's and that `new` more positions stay within the model's maximum."""
        if context is None:
            cur = Cursor(0)
        else:
            if context.model_id != self.model_id:
                fail(avp.ErrorCode.MODEL_MISMATCH, "the context was made by another model")
            cur = context.cursor()
        limit = self.spec.max_context
        if cur.frontier() + new > limit:
            fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY,
                 f"{new} more positions after position {cur.frontier()} exceed this model's "
                 f"maximum of {limit}")
        return cur

    def _match_batch(self, ids: torch.Tensor, context: Context | None) -> torch.Tensor:
        """One row of ids continues every row of a batched context."""
        if context is None or ids.shape[0] == context.batch_size:
            return ids
        if ids.shape[0] == 1:
            return ids.expand(context.batch_size, -1)
        fail(avp.ErrorCode.INVALID_VALUE, f"{ids.shape[0]} rows of ids for a context of batch "
             f"{context.batch_size}")

    def realigner(self) -> Realigner:
        if self._realigner is None:
            self._realigner = Realigner.for_model(self.model)
        return self._realigner

    # ------------------------------------------------------------ export

    def _entries(self, ctx: Context) -> list[avp.Entry]:
        K = avp.MetaKey
        entries = [
            avp.Entry.of(K.MODEL_ID, ctx.model_id),
            avp.Entry.of(K.MODEL_NAME, self.name),
            avp.Entry.of(K.PRODUCER, PRODUCER),
            avp.Entry.of(K.CONTEXT_LENGTH, ctx.context_length),
            avp.Entry.of(K.CREATED_BY_STEPS, ctx.steps),
        ]
        if self.tokenizer is not None:
            entries.append(avp.Entry.of(K.TOKENIZER_ID, self.tokenizer_id))
        return entries

    def export(
        self,
        ctx: Context,
        writable: Writable,
        *,
        dtype: torch.dtype | None = None,
        codec: avp.Codec | str = avp.Codec.RAW,
        link_bps: float | None = None,
        profiles: Sequence[auto.CodecProfile] = (),
        transport_bps: float = float("inf"),
        cores: float = float("inf"),
    ) -> int:
        """Stream `ctx` as a KV_CACHE message into `writable`; returns the bytes written.

        Layers are described up front (the header needs the layer table) but their tensors are
        pulled from the cache one layer at a time, so at most one layer is ever staged on the
        CPU for a GPU model; CPU tensors go to the encoder as they are. `dtype` casts the
        tensors (e.g. torch.bfloat16 halves a float32 cache; lossy); `codec` picks the storage
        codec (RAW, ZSTD, BYTEPLANE_ZSTD, FLOATPLANE_ZSTD: lossless), or "auto": the lossless
        codec of `profiles` (measured on this machine, named like avp.Codec members) that
        avp_codec.auto predicts fastest over a link of `link_bps` bytes per second (with
        `transport_bps` and `cores`, the CPU the transport and codecs share; see avp_codec.auto).
        """
        states = list(cache_io.layer_states(ctx.cache, ctx.context_length))
        if codec == "auto":
            codec = _auto_codec(states, link_bps, profiles, transport_bps, cores)
        mask = ctx.attention_mask
        n_tensors = 2 + (mask is not None) + sum(len(st.tensors) for st in states)
        enc = avp.StreamEncoder(
            writable,
            avp.Kind.KV_CACHE,
            self._entries(ctx),
            [st.descriptor() for st in states],
            n_tensors,
        )
        # Message-level tensors come first (spec ).
        enc.write_tensor(avp.Tensor.from_array(ctx.token_ids.contiguous(), avp.Role.TOKEN_IDS,
                                               layout=avp.Layout.BT))
        enc.write_tensor(avp.Tensor.from_array(ctx.positions.contiguous(), avp.Role.POSITIONS,
                                               layout=avp.Layout.BT))
        if mask is not None:
            enc.write_tensor(avp.Tensor.from_array(mask.to(torch.uint8).contiguous(),
                                                   avp.Role.ATTENTION_MASK, layout=avp.Layout.BT))
        for ordinal, st in enumerate(states):
            for role, t in st.tensors:
                kv = role in (avp.Role.KEY, avp.Role.VALUE)
                layout = avp.Layout.BHTD if kv else avp.Layout.NONE
                enc.write_tensor(
                    avp.Tensor.from_array(
                        cache_io.to_wire(t, dtype), role, ordinal=ordinal, layout=layout,
                        codec=codec,
                    )
                )
        return int(enc.finish())

    def export_bytes(self, ctx: Context, **kw: Any) -> bytes:
        parts = _Parts()
        self.export(ctx, parts, **kw)
        return b"".join(parts.parts)

    def export_file(self, ctx: Context, path: str | os.PathLike[str], **kw: Any) -> int:
        """Write `ctx` to `path` (via a temporary file renamed into place)."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                n = self.export(ctx, f, **kw)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return n

    # ------------------------------------------------------------ import

    def import_(
        self,
        source: avp.Message | bytes | bytearray | memoryview | str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        verify: bool = True,
        max_batch: int = 1,
        max_context: int | None = None,
        allow_non_finite: bool = False,
    ) -> Context:
        """A Context from a KV_CACHE message (a decoded Message, its bytes, or a file path).

        Nothing is installed that this model cannot use. In order, before any tensor value is
        read: the kind (KIND_CONSTRAINT), the MODEL_ID (MODEL_MISMATCH), CONTEXT_LENGTH against
        `max_context` (default: the model's maximum; UNSUPPORTED_CAPABILITY), then the layer
        table and every tensor's role, dtype and shape against the model (admit.py lists the
        checks and their codes); a batch beyond `max_batch` is UNSUPPORTED_CAPABILITY. Then
        quantized tensors (spec section 12) are dequantized with the codec's bit-exact
        reference arithmetic, tensors are placed on `device` (default: the model's) in `dtype`
        (default: the model's), and NaN / infinity is refused (INVALID_VALUE) unless
        `allow_non_finite`. When device and dtype already match, on CPU, the tensors stay
        zero-copy views of the message's buffer. POSITIONS and ATTENTION_MASK are honoured
        (padding, shifted positions) where the model can continue from them, else refused.
        """
        msg = admit.read_kv(source, self.model_id, self.spec, verify=verify,
                            max_batch=max_batch, max_context=max_context)
        ctx: Context = _install.install(
            self, msg, device=device, dtype=dtype, max_batch=max_batch, max_context=max_context,
            allow_non_finite=allow_non_finite)
        return ctx

    # ------------------------------------------------------------ generation

    def continue_logits(self, ctx: Context | None, ids: list[int] | torch.Tensor) -> torch.Tensor:
        """Logits for `ids` appended after `ctx` (the context itself is left untouched)."""
        input_ids = self._match_batch(self._ids_tensor(ids), ctx)
        cur = self._cursor(ctx, int(input_ids.shape[1]))
        cache = ctx.fork() if ctx is not None else self._new_cache()
        out = self.forward(cache, cur.length, input_ids=input_ids, cursor=cur)
        logits: torch.Tensor = out.logits
        return logits

    def generate(
        self,
        prompt: str | list[int] | None = None,
        *,
        context: Context | None = None,
        max_new_tokens: int = 64,
        chat: bool = True,
        temperature: float = 0.0,
        seed: int | None = None,
        stop_ids: set[int] | None = None,
    ) -> Generation:
        """Continue from `context` with `prompt` appended; greedy unless `temperature` > 0.

        Generation is for one sequence: a batched context is refused (UNSUPPORTED_CAPABILITY),
        as is a context of another model (MODEL_MISMATCH), a prompt token outside the vocabulary
        (INVALID_VALUE) or a prompt that does not fit the model's maximum position
        (UNSUPPORTED_CAPABILITY); generation stops at that maximum.
        """
        t0 = time.perf_counter()
        if prompt is None:
            ids: list[int] = []
        elif isinstance(prompt, str):
            ids = self.encode_prompt(prompt, chat=chat)
        else:
            ids = list(prompt)
        if not ids and context is None:
            raise ValueError("nothing to continue from: give a prompt or a context")
        if not ids:
            raise ValueError("generate needs at least one prompt token after the context")
        if context is not None and context.batch_size != 1:
            fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY,
                 f"generate continues one sequence; the context has batch {context.batch_size}")
        input_ids = self._ids_tensor(ids)
        cur = self._cursor(context, len(ids))
        limit = self.spec.max_context
        cache = context.fork() if context is not None else self._new_cache()
        stops = stop_ids if stop_ids is not None else prompts.stop_ids(self.model, self.tokenizer)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        out = self.forward(cache, cur.length, input_ids=input_ids, last_only=True, cursor=cur)
        cur.advance(len(ids), 1)
        new: list[int] = []
        for _ in range(max_new_tokens):
            logits = out.logits[:, -1, :].float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1).cpu()
                nxt = int(torch.multinomial(probs, 1, generator=gen)[0, 0])
            else:
                nxt = int(logits.argmax(dim=-1)[0])
            new.append(nxt)
            if nxt in stops or cur.frontier() >= limit:
                break
            out = self.forward(cache, cur.length, input_ids=self._ids_tensor([nxt]), cursor=cur)
            cur.advance(1, 1)
        text = self.tokenizer.decode(new, skip_special_tokens=True) if self.tokenizer else ""
        return Generation(text.strip(), new, time.perf_counter() - t0, len(ids))


def _auto_codec(states: list[cache_io.LayerState], link_bps: float | None,
                profiles: Sequence[auto.CodecProfile], transport_bps: float,
                cores: float) -> avp.Codec:
    """codec="auto" of export(): a storage codec, so lossless profiles only."""
    if link_bps is None:
        raise avp.AvpError(avp.ErrorCode.INVALID_VALUE, 'codec="auto" needs link_bps',
                           path="auto")
    raw = sum(int(t.numel()) * t.element_size() for st in states for _, t in st.tensors)
    pieces = max(1, sum(len(st.tensors) for st in states))
    best = auto.choose_codec(link_bps, [p for p in profiles if p.lossless],
                             raw_bytes=raw, pieces=pieces, transport_bps=transport_bps,
                             cores=cores)
    try:
        return avp.Codec[best.name.upper()]
    except KeyError:
        raise avp.AvpError(avp.ErrorCode.INVALID_VALUE,
                           f"profile {best.name!r} names no storage codec", path="auto") from None


class _Parts:
    """Collects the encoder's chunks by reference; the final join is the only copy of the
    tensor bytes (a BytesIO would copy them twice and regrow its buffer as it goes)."""

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []

    def write(self, data: bytes | memoryview) -> int:
        self.parts.append(data)
        return len(data)
