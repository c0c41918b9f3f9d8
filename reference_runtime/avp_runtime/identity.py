"""Model and tokenizer identities, byte for byte as spec section 13 defines them.

The model identity hashes the architecture object and every parameter's bytes, so two processes
that load the same checkpoint in the same dtype agree, and two fine-tunes of one architecture do
not. Nothing that varies between machines (paths, library versions, devices) enters it.

Spec section 13 now states each of these choices normatively; they are summarised here and their
history is in spec/DECISIONS.md:

* Architecture values come from the decoder's text config. Transformers 5 folds `rope_theta` and
  `rope_scaling` into `rope_parameters`; `rope_theta` is read from there (from the full-attention
  entry when the parameters are given per layer type) and `rope_scaling` is the whole
  `rope_parameters` object, or null when it says nothing beyond `rope_type: "default"` and
  `rope_theta`.
* Numbers follow RFC 8785 (JCS): a float with an integral value below 2**53 is written as an
  integer (`10000.0` -> `10000`), other floats in ECMAScript shortest form.
* The tokenizer's vocabulary size V is one more than its largest token id (added tokens
  included); an id with no token contributes an empty byte string. Special tokens are
  `tokenizer.all_special_ids`, deduplicated.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable
from typing import Any

import torch

MODEL_ID_PREFIX = b"AVP-MODEL-ID/1\n"
TOKENIZER_ID_PREFIX = b"AVP-TOKENIZER-ID/1\n"

ARCH_KEYS = (
    "model_type",
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "rope_theta",
    "rope_scaling",
    "sliding_window",
    "layer_types",
    "tie_word_embeddings",
)

# Spec section 7.2 dtype codes, for the parameter records of the model identity.
TORCH_DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 1,
    torch.float16: 2,
    torch.bfloat16: 3,
    torch.float8_e4m3fn: 4,
    torch.float8_e5m2: 5,
    torch.int8: 6,
    torch.uint8: 7,
    torch.int32: 11,
    torch.int64: 12,
}


# ---------------------------------------------------------------- canonical JSON (section 13.4)


def _number(x: float | int) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        raise ValueError(f"non-finite number {x!r} has no canonical JSON form")
    if x == int(x) and abs(x) < 2**53:
        return str(int(x))
    # Shortest round-trip digits (Python's repr), laid out the ECMAScript way (RFC 8785 3.2.2.3):
    # plain decimal notation for 1e-6 <= |x| < 1e21, else d.ddde+N.
    digits, exp = _shortest_digits(abs(x))
    sign = "-" if x < 0 else ""
    n = exp + len(digits)  # position of the decimal point relative to the digit string
    if -6 < n <= 21:
        if n <= 0:
            return f"{sign}0.{'0' * -n}{digits}"
        if n >= len(digits):
            return f"{sign}{digits}{'0' * (n - len(digits))}"
        return f"{sign}{digits[:n]}.{digits[n:]}"
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    e = n - 1
    return f"{sign}{mant}e{'+' if e > 0 else '-'}{abs(e)}"


def _shortest_digits(x: float) -> tuple[str, int]:
    """Digits d and exponent e with x == int(d) * 10**e, d the shortest round-trip digit string."""
    mant, _, exp_s = repr(x).partition("e")
    exp = int(exp_s) if exp_s else 0
    whole, _, frac = mant.partition(".")
    digits = (whole + frac).lstrip("0")
    exp -= len(frac)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    return stripped or "0", exp


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def canonical_json(value: Any) -> str:
    """Section 13.4 canonical JSON: sorted keys, no whitespace, minimal escapes, JCS numbers."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{_string(k)}:{canonical_json(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    raise TypeError(f"{type(value).__name__} has no canonical JSON form")


# ---------------------------------------------------------------- architecture object


def _plain(value: Any) -> Any:
    """Config values as JSON data (configs sometimes hold tuples or nested config objects)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _rope(cfg: Any) -> tuple[Any, Any]:
    theta = getattr(cfg, "rope_theta", None)
    scaling = _plain(getattr(cfg, "rope_scaling", None))
    params = _plain(getattr(cfg, "rope_parameters", None))
    if isinstance(params, dict) and params:
        if all(isinstance(v, dict) for v in params.values()):
            # Per layer type (Gemma 3): theta of the full-attention layers, the rest verbatim.
            if theta is None:
                theta = params.get("full_attention", {}).get("rope_theta")
            scaling = params
        else:
            if theta is None:
                theta = params.get("rope_theta")
            rest = {k: v for k, v in params.items() if k != "rope_theta"}
            scaling = None if rest in ({}, {"rope_type": "default"}) else rest
    return theta, scaling


def architecture(model_or_config: Any) -> dict[str, Any]:
    """The section 13.4 architecture object of a model (or its config)."""
    cfg = getattr(model_or_config, "config", model_or_config)
    if hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config(decoder=True)
    arch = {k: _plain(getattr(cfg, k, None)) for k in ARCH_KEYS}
    arch["rope_theta"], arch["rope_scaling"] = _rope(cfg)
    return arch


# ---------------------------------------------------------------- model identity


def _unique_parameters(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    # Tied parameters are one Parameter object under several names; keep the smallest name.
    by_obj: dict[int, tuple[str, torch.Tensor]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        seen = by_obj.get(id(p))
        if seen is None or name.encode() < seen[0].encode():
            by_obj[id(p)] = (name, p)
    return sorted(by_obj.values(), key=lambda item: item[0].encode())


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    # Reinterpret as raw bytes without copying (works for bfloat16 and fp8, which numpy lacks).
    # Every supported machine is little-endian, which is what the spec asks for.
    return memoryview(t.view(torch.uint8).reshape(-1).numpy().data)


def model_id_from_parts(arch: dict[str, Any], params: Iterable[tuple[str, torch.Tensor]]) -> bytes:
    h = hashlib.sha256()
    h.update(MODEL_ID_PREFIX)
    h.update(canonical_json(arch).encode() + b"\n")
    for name, t in params:
        code = TORCH_DTYPE_CODES.get(t.dtype)
        if code is None:
            raise ValueError(f"parameter {name} has dtype {t.dtype}, which AVP cannot name")
        nb = name.encode()
        h.update(struct.pack("<I", len(nb)) + nb)
        h.update(struct.pack("<BB", code, t.dim()) + struct.pack(f"<{t.dim()}Q", *t.shape))
        data = _tensor_bytes(t)
        h.update(struct.pack("<Q", data.nbytes))
        h.update(data)
    return h.digest()


def model_id(model: torch.nn.Module) -> bytes:
    """MODEL_ID (32 bytes): spec section 13.1."""
    return model_id_from_parts(architecture(model), _unique_parameters(model))


# ---------------------------------------------------------------- tokenizer identity


def vocabulary(tokenizer: Any) -> list[bytes]:
    """Token bytes for ids 0..V-1 (section 13.3): the stored string form, UTF-8 encoded."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    size = max(vocab.values()) + 1 if vocab else 0
    out = [b""] * size
    for token, idx in vocab.items():
        out[idx] = token.encode("utf-8")
    return out


def vocabulary_bytes(tokenizer: Any) -> bytes:
    """The VOCABULARY entry value: `u32 length, bytes` for every id in order."""
    return b"".join(struct.pack("<I", len(t)) + t for t in vocabulary(tokenizer))


def vocab_digest(tokenizer: Any) -> bytes:
    """VOCAB_DIGEST: SHA-256 of the VOCABULARY value."""
    return hashlib.sha256(vocabulary_bytes(tokenizer)).digest()


def special_ids(tokenizer: Any) -> list[int]:
    return sorted({int(i) for i in tokenizer.all_special_ids if i is not None})


def tokenizer_id(tokenizer: Any) -> bytes:
    """TOKENIZER_ID (32 bytes): spec section 13.2."""
    tokens = vocabulary(tokenizer)
    h = hashlib.sha256()
    h.update(TOKENIZER_ID_PREFIX)
    h.update(struct.pack("<I", len(tokens)))
    for t in tokens:
        h.update(struct.pack("<I", len(t)) + t)
    specials = special_ids(tokenizer)
    h.update(struct.pack(f"<I{len(specials)}I", len(specials), *specials))
    return h.digest()
