"""The Transformers connector: think in latent steps, export / import KV-caches, generate.

A `Connector` wraps one loaded causal LM. `think()` runs a prompt and then LatentMAS latent steps
(the last hidden state, realigned into input-embedding space, is fed back as the next input) and
returns a `Context`. `export()` streams a Context into an AVP KV_CACHE message layer by layer;
`import_()` turns such a message back into a Context whose cache is a Transformers DynamicCache
on any device, after checking that the message's MODEL_ID is this model's own. `generate()`
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
from avp_codec import auto, quant

from . import cache_io, identity, models
from .latent import Realigner

PRODUCER = "avp-runtime/0.1.0 (transformers)"
LATENT_TOKEN = -1  # TOKEN_IDS value at positions that hold a latent step, not a token


class Writable(Protocol):
    """Anything with a binary write(): a file, a socket's makefile("wb"), a BytesIO."""

    def write(self, data: bytes | memoryview, /) -> object: ...


@dataclass(frozen=True)
class Context:
    """What an agent hands over: a KV-cache and the tokens/positions it covers.

    `token_ids` and `positions` are `[batch, context_length]` int64; latent-step positions have
    token id -1. Never mutate `cache`; use `fork()` to get a cache you may extend.
    """

    cache: Any
    token_ids: torch.Tensor
    positions: torch.Tensor
    context_length: int
    model_id: bytes
    steps: int = 0
    extras: dict[str, Any] = field(default_factory=dict, compare=False)

    def fork(self) -> Any:
        return cache_io.fork_cache(self.cache)

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


# The keywords under which Transformers' `forward` has taken the cache, newest first: `cache`
# (5.2x), `past_key_values` (attention models before that), `cache_params` (Mamba-style models
# before that). Chosen from the signature, never from a version string.
CACHE_KEYWORDS = ("cache", "past_key_values", "cache_params")


def _transformers_version() -> str:
    try:
        import transformers
    except ImportError:  # pragma: no cover - the runtime needs transformers to load a model
        return "not installed"
    return str(transformers.__version__)


def cache_keyword(model: Any, params: Any = None) -> str:
    """The keyword this model's `forward` takes its cache under (one of CACHE_KEYWORDS).

    A model whose signature names none of them (its `**kwargs` would swallow any of them and the
    forward pass would silently build a cache of its own) is refused with UNSUPPORTED_CAPABILITY.
    """
    if params is None:
        params = inspect.signature(model.forward).parameters
    for kw in CACHE_KEYWORDS:
        if kw in params:
            return kw
    raise avp.AvpError(
        avp.ErrorCode.UNSUPPORTED_CAPABILITY,
        f"{type(model).__name__}.forward takes its cache under none of {CACHE_KEYWORDS} "
        f"(transformers {_transformers_version()}); the runtime cannot pass it a KV-cache",
    )


def returned_cache(out: Any) -> Any:
    """The cache a forward pass returned (under whichever name this Transformers uses), or None."""
    for name in CACHE_KEYWORDS:
        got = getattr(out, name, None)
        if got is not None:
            return got
    return None


def _check_cache_filled(model: Any, keyword: str, cache: Any, out: Any) -> None:
    """Fail at once, and say why, if a forward pass did not extend the cache it was given.

    This is what a future change of Transformers' cache API looks like from here: the model
    accepts the keyword (or swallows it in `**kwargs`), builds and returns a cache of its own,
    and the one handed in stays empty.
    """
    returned = returned_cache(out)
    filled = returned is cache if returned is not None else cache_io.cache_is_filled(cache)
    if not filled:
        raise avp.AvpError(
            avp.ErrorCode.UNSUPPORTED_CAPABILITY,
            f"{type(model).__name__}.forward did not fill the cache passed as `{keyword}=` "
            f"(transformers {_transformers_version()}): the installed Transformers changed how "
            "a cache is passed; see the README's tested version range",
        )


class Connector:
    """One model + tokenizer, with the AVP operations on top."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or str(getattr(model.config, "_name_or_path", "") or "model")
        self._model_id: bytes | None = None
        self._tokenizer_id: bytes | None = None
        self._realigner: Realigner | None = None
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

    # ------------------------------------------------------------ tokens

    def encode_prompt(self, prompt: str, *, chat: bool = True) -> list[int]:
        """Token ids of `prompt`, through the chat template when the tokenizer has one."""
        if chat and getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
            )
            if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        return [int(i) for i in self.tokenizer(prompt)["input_ids"]]

    def _ids_tensor(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(ids, dtype=torch.long)
        return (t if t.dim() == 2 else t.unsqueeze(0)).to(self.device)

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
    ) -> Any:
        """One forward pass appending to `cache` (mutated) at absolute position `start`.

        `last_only` computes logits for the last position only (when the model supports it).
        """
        x = input_ids if input_ids is not None else inputs_embeds
        assert x is not None
        batch, n = int(x.shape[0]), int(x.shape[1])
        kw: dict[str, Any] = {self._cache_kw: cache, "use_cache": True}
        if self._attention:
            # An explicit all-ones mask over context + new tokens and explicit positions: the
            # imported cache may not start at 0 for every layer (sliding windows), so nothing
            # is left for the model to infer from cache lengths.
            kw["attention_mask"] = torch.ones(batch, start + n, dtype=torch.long, device=x.device)
            if self._takes_positions:
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
        cache = context.fork() if context is not None else self._new_cache()
        start = context.context_length if context is not None else 0
        out = self.forward(cache, start, input_ids=input_ids, hidden=steps > 0, last_only=True)
        length = start + int(input_ids.shape[1])
        token_ids = [input_ids.cpu()]
        if context is not None:
            token_ids.insert(0, context.token_ids)
        if steps > 0:
            realign = self.realigner()
            h = out.hidden_states[-1][:, -1:, :]
            for i in range(steps):
                e = realign(h)
                out = self.forward(cache, length, inputs_embeds=e, hidden=True, last_only=True)
                length += 1
                h = out.hidden_states[-1][:, -1:, :]
                token_ids.append(torch.full_like(token_ids[-1][:, :1], LATENT_TOKEN))
                if progress is not None:
                    progress(i + 1, steps)
        all_ids = torch.cat(token_ids, dim=1)
        positions = torch.arange(length, dtype=torch.long).unsqueeze(0)
        if context is not None:
            positions[:, :start] = context.positions[:1]
        positions = positions.expand(all_ids.shape[0], length).contiguous()
        prior = context.steps if context is not None else 0
        return Context(cache, all_ids, positions, length, self.model_id, prior + steps)

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
        n_tensors = 2 + sum(len(st.tensors) for st in states)
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
    ) -> Context:
        """A Context from a KV_CACHE message (a decoded Message, its bytes, or a file path).

        Refuses a message whose MODEL_ID is not this model's (MODEL_MISMATCH) before touching
        any tensor. Quantized tensors (spec section 12) are dequantized with the codec's
        bit-exact reference arithmetic. Tensors are placed on `device` (default: the model's)
        in `dtype` (default: the model's); when both already match, on CPU, they stay zero-copy
        views of the message's buffer.
        """
        msg = _decode(source, verify)
        if msg.kind != avp.Kind.KV_CACHE:
            raise avp.AvpError(avp.ErrorCode.KIND_CONSTRAINT,
                               f"expected a KV_CACHE message, got {avp.Kind(msg.kind).name}")
        mid = msg.get(avp.MetaKey.MODEL_ID)
        if mid != self.model_id:
            got = bytes(mid).hex()[:16] if isinstance(mid, bytes | bytearray) else repr(mid)
            raise avp.AvpError(
                avp.ErrorCode.MODEL_MISMATCH,
                f"KV-cache is for model {got}..., this model is {self.model_id.hex()[:16]}...",
                path="entries.MODEL_ID",
            )
        if any(t.quant is not None for t in msg.tensors):
            msg = quant.dequantize_message(msg)  # also joins token tiles of one layer and role
        length = int(msg.get(avp.MetaKey.CONTEXT_LENGTH))  # type: ignore[arg-type]
        dev = torch.device(device) if device is not None else self.device
        want = dtype if dtype is not None else self.model.dtype
        states = [
            cache_io.LayerState(d.index, avp.LayerKind(d.kind), d.token_start, d.token_count,
                                d.window)
            for d in msg.layers
        ]
        token_ids: torch.Tensor | None = None
        positions: torch.Tensor | None = None
        tiles: dict[tuple[int, avp.Role], list[avp.Tensor]] = {}
        for t in msg.tensors:
            if t.layer is None:
                if t.role == avp.Role.TOKEN_IDS:
                    token_ids = cache_io.tensor_to_torch(t).to(torch.long)
                elif t.role == avp.Role.POSITIONS:
                    positions = cache_io.tensor_to_torch(t).to(torch.long)
                continue
            tiles.setdefault((t.layer, avp.Role(t.role)), []).append(t)
        for (ordinal, role), group in tiles.items():
            x = cache_io.join_tiles(group, dev)
            if x.is_floating_point() and x.dtype != want:
                x = x.to(want)
            states[ordinal].tensors.append((role, x))
        cache = cache_io.build_cache(self.model.config, states, length)
        if token_ids is None:
            token_ids = torch.full((1, length), LATENT_TOKEN, dtype=torch.long)
        if positions is None:
            positions = torch.arange(length, dtype=torch.long).unsqueeze(0)
        steps = msg.get(avp.MetaKey.CREATED_BY_STEPS)
        n_steps = steps if isinstance(steps, int) else 0
        return Context(cache, token_ids, positions, length, self.model_id, n_steps)

    # ------------------------------------------------------------ generation

    def continue_logits(self, ctx: Context | None, ids: list[int] | torch.Tensor) -> torch.Tensor:
        """Logits for `ids` appended after `ctx` (the context itself is left untouched)."""
        cache = ctx.fork() if ctx is not None else self._new_cache()
        start = ctx.context_length if ctx is not None else 0
        out = self.forward(cache, start, input_ids=self._ids_tensor(ids))
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
        """Continue from `context` with `prompt` appended; greedy unless `temperature` > 0."""
        t0 = time.perf_counter()
        if prompt is None:
            ids: list[int] = []
        elif isinstance(prompt, str):
            ids = self.encode_prompt(prompt, chat=chat)
        else:
            ids = list(prompt)
        if not ids and context is None:
            raise ValueError("nothing to continue from: give a prompt or a context")
        cache = context.fork() if context is not None else self._new_cache()
        pos = context.context_length if context is not None else 0
        if not ids:
            raise ValueError("generate needs at least one prompt token after the context")
        stops = stop_ids if stop_ids is not None else _eos_ids(self.model, self.tokenizer)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        out = self.forward(cache, pos, input_ids=self._ids_tensor(ids), last_only=True)
        pos += len(ids)
        new: list[int] = []
        for _ in range(max_new_tokens):
            logits = out.logits[:, -1, :].float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1).cpu()
                nxt = int(torch.multinomial(probs, 1, generator=gen)[0, 0])
            else:
                nxt = int(logits.argmax(dim=-1)[0])
            new.append(nxt)
            if nxt in stops:
                break
            out = self.forward(cache, pos, input_ids=self._ids_tensor([nxt]))
            pos += 1
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


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), model.config, tokenizer):
        if src is None:
            continue
        eos = getattr(src, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list | tuple):
            ids.update(int(e) for e in eos)
    if tokenizer is None:
        return ids
    # Chat models end a turn with their end-of-turn token even when eos says otherwise.
    for tok in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
        tid = tokenizer.convert_tokens_to_ids(tok) if tok in tokenizer.get_vocab() else None
        if isinstance(tid, int):
            ids.add(tid)
    return ids


class _Parts:
    """Collects the encoder's chunks by reference; the final join is the only copy of the
    tensor bytes (a BytesIO would copy them twice and regrow its buffer as it goes)."""

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []

    def write(self, data: bytes | memoryview) -> int:
        self.parts.append(data)
        return len(data)


def _decode(source: Any, verify: bool) -> avp.Message:
    if isinstance(source, avp.Message):
        return source
    if isinstance(source, str | os.PathLike):
        return avp.decode_file(source, verify=verify)
    return avp.decode(source, verify=verify)
