"""avp_runtime: the AVP reference runtime on HuggingFace Transformers.

Public API (everything else is an implementation detail):

    from avp_runtime import Connector
    a = Connector.default()                      # SmolLM2-135M-Instruct from the model cache
    ctx = a.think("question", steps=10)          # prompt + LatentMAS latent steps -> Context
    a.export_file(ctx, "handoff.avp")            # KV_CACHE message, streamed layer by layer
    b = Connector.default()
    answer = b.generate("question", context=b.import_("handoff.avp"))

Names are resolved lazily, so importing a light submodule (handshake, vocab) does not load
torch and Transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Connector": "connector",
    "Context": "connector",
    "Generation": "connector",
    "LATENT_TOKEN": "connector",
    "Realigner": "latent",
    "load_model": "models",
    "load_default": "models",
    "load_gemma": "models",
    "LoadedModel": "models",
    "model_id": "identity",
    "tokenizer_id": "identity",
    "vocabulary_bytes": "identity",
    "vocab_digest": "identity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'avp_runtime' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
