"""The AVP MODEL_ID of the checkpoint an engine serves, computed once and remembered.

Engines load weights their own way (vLLM fuses q/k/v, llama.cpp reads GGUF blocks), so the
identity (spec 13.1) is computed the way the spec defines it: the Transformers model loaded from
the same directory in the engine's dtype, through avp_runtime.identity. That costs a model load
(seconds, plus the weights' memory once), so the result is kept in a small cache keyed by the
directory's config and weight files (path, size, modification time): the scheduler and the worker
of one engine, and every later start, read it back.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from avp_codec import AvpError, ErrorCode


def _cache_dir() -> Path:
    env = os.environ.get("AVP_MODEL_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "avp" / "models"
    return root / "_model_ids"


def _key(model_dir: Path, dtype: str) -> str:
    parts = [str(model_dir.resolve()), dtype]
    for f in sorted(model_dir.iterdir()):
        if f.suffix in (".json", ".safetensors", ".bin"):
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def model_id_of(model_dir: str | os.PathLike[str], dtype: str = "float32") -> bytes:
    """MODEL_ID of the Transformers checkpoint in `model_dir` loaded in `dtype`."""
    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                       f"{model_dir} is not a local Transformers directory; configure the "
                       "MODEL_ID explicitly (model_id, 64 hex digits)")
    cache = _cache_dir() / f"{_key(d, dtype)}.json"
    try:
        got = json.loads(cache.read_text())
        if isinstance(got, dict) and isinstance(got.get("model_id"), str):
            return bytes.fromhex(got["model_id"])
    except (OSError, ValueError):
        pass
    import torch
    from avp_runtime import identity
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(d), dtype=getattr(torch, dtype))
    mid: bytes = identity.model_id(model)
    del model
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"model_id": mid.hex(), "dir": str(d.resolve()), "dtype": dtype}))
    os.replace(tmp, cache)
    return mid


def parse_model_id(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise AvpError(ErrorCode.INVALID_VALUE, "model_id must be 64 hexadecimal digits")
    return raw
