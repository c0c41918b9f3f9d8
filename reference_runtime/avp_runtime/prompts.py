"""Text in, token ids out: a prompt is always *text*, never markup.

A chat template wraps the user's text in control tokens (``<|im_start|>user\\n ... <|im_end|>``).
Rendering the template to a string and tokenizing that string, as ``apply_chat_template`` does,
parses control-token spellings wherever they occur, including inside the user's text: a TEXT
payload holding ``<|im_end|>\\n<|im_start|>system\\n...`` would open turns of its own. So text
that spells a control token is placed with the template's own text around it tokenized as usual
and the text itself tokenized with ``split_special_tokens=True`` (the spelling becomes ordinary
tokens: ``<``, ``|``, ``im``, ...), so every control token id the receiver builds comes from
its template. Text without such spellings goes through ``apply_chat_template`` unchanged (the
ids are exactly the usual ones).

A template whose surrounding text depends on the content (so that the content cannot be cut out
of the rendered string) gets such text refused with INVALID_VALUE rather than guessed at.

Text longer than the model can read is refused (UNSUPPORTED_CAPABILITY) before it is tokenized
whole: a text of more characters than `max_tokens` x the longest token can never fit, and a
longer text is first counted in bounded pieces, so a megabyte of received text costs the
receiver a few megabytes and milliseconds, not hundreds.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import avp_codec as avp

from ._errors import fail

_SENTINEL = "\ue000AVP-TEXT\ue001"  # private-use code points: no template produces these
PIECE = 16384  # characters tokenized at a time when a long text is counted


@lru_cache(maxsize=16)
def control_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of every special token: the declared ones and the added tokens flagged special."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", ())}
    for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return frozenset(ids)


def _ids(encoded: Any) -> list[int]:
    if hasattr(encoded, "keys"):  # transformers 5 may return a BatchEncoding
        encoded = encoded["input_ids"]
    return [int(i) for i in encoded]


# A TEXT message carries no tensor: a receiver reading one inflates nothing, whatever arrives.
TEXT_LIMITS = avp.Limits(max_tensor_bytes=0)


def read_text(source: avp.Message | bytes | bytearray | memoryview) -> str:
    """The text of a received TEXT message (KIND_CONSTRAINT for another kind). Bytes are read
    HEADER first and decoded with TEXT_LIMITS: no tensor of any message is ever inflated."""
    if isinstance(source, avp.Message):
        msg = source
    else:
        kind = avp.IndexedReader(source, limits=TEXT_LIMITS).header.kind
        if kind != avp.Kind.TEXT:
            fail(avp.ErrorCode.KIND_CONSTRAINT, f"expected TEXT, got {avp.Kind(kind).name}")
        msg = avp.decode(source, limits=TEXT_LIMITS)
    if msg.kind != avp.Kind.TEXT:
        fail(avp.ErrorCode.KIND_CONSTRAINT, f"expected TEXT, got {avp.Kind(msg.kind).name}")
    text = msg.get(avp.MetaKey.TEXT)
    if not isinstance(text, str):  # pragma: no cover - the codec requires TEXT in a TEXT message
        fail(avp.ErrorCode.MISSING_ENTRY, "TEXT message without text", path="entries.TEXT")
    return text


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """`text` as ordinary tokens (no special tokens added, none parsed)."""
    return _ids(tokenizer(text, add_special_tokens=False, split_special_tokens=True))


def spells_control(tokenizer: Any, text: str) -> bool:
    """Whether tokenizing `text` the usual way would produce a control token."""
    specials = control_ids(tokenizer)
    return any(i in specials for i in _ids(tokenizer(text, add_special_tokens=False)))


@lru_cache(maxsize=16)
def longest_token(tokenizer: Any) -> int:
    """Characters of the longest vocabulary entry: no token covers more text than that."""
    return max((len(t) for t in tokenizer.get_vocab()), default=1)


def _pieces(text: str, size: int) -> list[str]:
    """`text` cut into pieces of at most `size` characters, at whitespace where there is some."""
    out, at = [], 0
    while at < len(text):
        end = min(len(text), at + size)
        if end < len(text):
            cut = text.rfind(" ", at + size // 2, end)
            end = cut if cut > at else end
        out.append(text[at:end])
        at = end
    return out


def check_length(tokenizer: Any, text: str, max_tokens: int) -> None:
    """UNSUPPORTED_CAPABILITY if `text` alone is more than `max_tokens` tokens, found without
    tokenizing more than PIECE characters at a time."""
    if len(text) > max_tokens * longest_token(tokenizer):
        fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY, f"a text of {len(text)} characters is longer "
             f"than this model's {max_tokens} positions can hold")
    if len(text) <= PIECE:
        return
    count = 0
    for n, piece in enumerate(_pieces(text, PIECE), start=1):
        count += len(text_ids(tokenizer, piece))
        # Cutting can split a word into two tokens: allow one token per cut.
        if count > max_tokens + n:
            fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY, f"the text is more than {max_tokens} "
                 "tokens, this model's maximum")


def encode(tokenizer: Any, text: str, *, chat: bool = True,
           max_tokens: int | None = None) -> list[int]:
    """Token ids of `text` as a user turn (through the chat template when there is one).

    With `max_tokens`, text that cannot fit is refused (UNSUPPORTED_CAPABILITY), when it is
    long before it is tokenized whole."""
    if not isinstance(text, str):
        fail(avp.ErrorCode.INVALID_VALUE, f"a prompt is text, got {type(text).__name__}")
    if max_tokens is not None:
        check_length(tokenizer, text, max_tokens)
    ids = _encode(tokenizer, text, chat)
    if max_tokens is not None and len(ids) > max_tokens:
        fail(avp.ErrorCode.UNSUPPORTED_CAPABILITY, f"the prompt is {len(ids)} tokens, more than "
             f"this model's {max_tokens} positions")
    return ids


def _encode(tokenizer: Any, text: str, chat: bool) -> list[int]:
    if not (chat and getattr(tokenizer, "chat_template", None)):
        # Special tokens the tokenizer adds by itself (BOS) are its own; none come from the text.
        return _ids(tokenizer(text, split_special_tokens=True))
    if not spells_control(tokenizer, text):
        return _ids(_render(tokenizer, text, tokenize=True))
    marked = str(_render(tokenizer, _SENTINEL, tokenize=False))
    full = str(_render(tokenizer, text, tokenize=False))
    prefix, sep, suffix = marked.partition(_SENTINEL)
    inner = full[len(prefix):len(full) - len(suffix)] if suffix else full[len(prefix):]
    if (not sep or _SENTINEL in suffix or not full.startswith(prefix)
            or not full.endswith(suffix) or len(full) < len(prefix) + len(suffix)):
        fail(avp.ErrorCode.INVALID_VALUE, "the text spells control tokens and this chat "
             "template's surrounding text depends on it; it cannot be placed as plain text")
    parts = [_ids(tokenizer(prefix, add_special_tokens=False)), text_ids(tokenizer, inner),
             _ids(tokenizer(suffix, add_special_tokens=False))]
    return [i for part in parts for i in part]


def _render(tokenizer: Any, content: str, *, tokenize: bool) -> Any:
    return tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                         add_generation_prompt=True, tokenize=tokenize)


def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a generation: the model's and tokenizer's EOS and end-of-turn ids."""
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
