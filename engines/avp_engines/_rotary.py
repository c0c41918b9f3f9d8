"""Model-family permutations between llama.cpp's cached keys and Transformers' (AVP's) order.

AVP carries keys as the model's cache holds them in the model's reference implementation
(Transformers), where rotary embeddings rotate the pair (i, i + d/2) of each head ("rotate_half",
NeoX style). llama.cpp's LLAMA-family graphs rotate adjacent pairs (2i, 2i + 1) instead, so
convert_hf_to_gguf.py permutes the rows of q_proj and k_proj of those families (LlamaModel.permute:
reshape each head to (2, d/2), swap the axes). The keys llama.cpp caches for such a model are
therefore Transformers' keys with each head's dimensions interleaved: GGUF dimension 2i + s is
Transformers dimension s * d/2 + i. Values and NeoX-style families are not permuted.

The tables name GGUF architectures (`general.architecture`) by what the converter does to them;
an architecture in neither table is refused unless the caller states the order explicitly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from avp_codec import AvpError, ErrorCode

KeyOrder = Literal["interleaved", "halves"]

# convert_hf_to_gguf.py applies LlamaModel.permute (or a copy of it) to q/k for these.
INTERLEAVED_ARCHS = frozenset({
    "llama", "arcee", "smollm3", "granite", "granitemoe", "olmo", "arctic", "chameleon",
    "minicpm", "internlm2", "llada", "deci", "deepseek", "bailingmoe", "nanbeige",
})
# NeoX-style rotary in both implementations: the cached keys are already in Transformers' order.
HALVES_ARCHS = frozenset({
    "qwen2", "qwen2moe", "qwen3", "qwen3moe", "gemma", "gemma2", "gemma3", "phi3", "stablelm",
    "starcoder2", "falcon", "gptneox", "olmo2", "olmoe", "exaone", "exaone4", "nemotron",
})


def key_order(arch: str | None, explicit: str | None = None) -> KeyOrder:
    """How llama.cpp's cached keys of `arch` are ordered (or the caller's explicit choice)."""
    if explicit is not None:
        if explicit not in ("interleaved", "halves"):
            raise AvpError(ErrorCode.INVALID_VALUE,
                           f"key order must be 'interleaved' or 'halves', not {explicit!r}")
        return "interleaved" if explicit == "interleaved" else "halves"
    if arch in INTERLEAVED_ARCHS:
        return "interleaved"
    if arch in HALVES_ARCHS:
        return "halves"
    raise AvpError(
        ErrorCode.UNSUPPORTED_CAPABILITY,
        f"no known key order for llama.cpp architecture {arch!r}; state it explicitly "
        "(interleaved for LLAMA-style rotary that convert_hf_to_gguf permutes, halves otherwise)")


def _check(head_dim: int) -> None:
    if head_dim % 2:
        raise AvpError(ErrorCode.INVALID_VALUE, f"head_dim {head_dim} is odd; rotary pairs need "
                       "an even head size")


def gguf_to_hf(k: np.ndarray) -> np.ndarray:
    """Keys [..., head_dim] from GGUF pair order (2i + s) to Transformers order (s * d/2 + i)."""
    d = int(k.shape[-1])
    _check(d)
    return k.reshape(k.shape[:-1] + (d // 2, 2)).swapaxes(-1, -2).reshape(k.shape)


def hf_to_gguf(k: np.ndarray) -> np.ndarray:
    """The inverse of gguf_to_hf."""
    d = int(k.shape[-1])
    _check(d)
    return k.reshape(k.shape[:-1] + (2, d // 2)).swapaxes(-1, -2).reshape(k.shape)


def gguf_to_hf_index(head_dim: int) -> np.ndarray:
    """perm with hf[..., j] = gguf[..., perm[j]]."""
    _check(head_dim)
    return gguf_to_hf(np.arange(head_dim))
