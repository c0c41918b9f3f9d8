"""A tiny random Llama with a synthetic vocabulary: the "incompatible tokenizer" peer.

Its tokens are made-up words (``ꙮ0``, ``ꙮ1``, ...) that no real tokenizer shares, so a handshake
with it must fall back to TEXT. Built in-process from a fixed seed, so two processes get the same
weights (and the same MODEL_ID) without any file.
"""

from __future__ import annotations

from typing import Any

import torch

VOCAB = 256


def tiny_incompatible(seed: int = 0) -> tuple[Any, Any]:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[EOS]": 1} | {f"\ua66e{i}": i + 2 for i in range(VOCAB - 2)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tk, unk_token="[UNK]", eos_token="[EOS]", pad_token="[EOS]")
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=512, eos_token_id=1, pad_token_id=1,
                      bos_token_id=1)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()  # type: ignore[no-untyped-call]
    return model, tok
