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
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import avp_codec as avp

from ._errors import fail

_SENTINEL = "\ue000AVP-TEXT\ue001"  # private-use code points: no template produces these


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


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """`text` as ordinary tokens (no special tokens added, none parsed)."""
    return _ids(tokenizer(text, add_special_tokens=False, split_special_tokens=True))


def spells_control(tokenizer: Any, text: str) -> bool:
    """Whether tokenizing `text` the usual way would produce a control token."""
    specials = control_ids(tokenizer)
    return any(i in specials for i in _ids(tokenizer(text, add_special_tokens=False)))


def encode(tokenizer: Any, text: str, *, chat: bool = True) -> list[int]:
    """Token ids of `text` as a user turn (through the chat template when there is one)."""
    if not isinstance(text, str):
        fail(avp.ErrorCode.INVALID_VALUE, f"a prompt is text, got {type(text).__name__}")
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
