"""The real-model vector: a KV-cache captured once from SmolLM2-135M-Instruct.

Capturing needs the model (avp_runtime.models, transformers, torch) and takes a minute, so it
happens only when the frozen file is missing (or with ``--recapture``); afterwards the generator
reuses the checked-in bytes like every other frozen vector. The message is written with this
package's own byte writer (``wire``), the model identity with the runtime's section 13.1 code.
"""

from __future__ import annotations

from pathlib import Path

from .gen_common import BHTD, BT, DTYPES, FULL, KINDS, ROLES, CaseDef, ent
from .manifest import DEFAULT_VECTORS
from .wire import WLayer, WMessage, WTensor, build

CASE_ID = "10.4/real-smollm2-kv-cache"
FILE = DEFAULT_VECTORS / "valid" / (CASE_ID.replace("/", "__") + ".avp")
PROMPT = "The capital of France is"


def capture() -> bytes:
    """Run the prompt through the model and encode its whole bf16 KV-cache (30 layers)."""
    import torch
    from avp_runtime import identity, models
    from avp_runtime.connector import returned_cache

    lm = models.load_default(dtype=torch.float32)
    ids = lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        cache = returned_cache(lm.model(ids, use_cache=True))
    tokens = int(ids.shape[1])
    layers, tensors = [], [WTensor(ROLES["TOKEN_IDS"], DTYPES["int64"], (1, tokens),
                                   ids.numpy().astype("<i8").tobytes(), layout=BT)]
    for i, layer in enumerate(cache.layers):
        layers.append(WLayer(i, FULL, 0, tokens))
        for role, t in ((ROLES["KEY"], layer.keys), (ROLES["VALUE"], layer.values)):
            bf16 = t.detach().to(torch.bfloat16).contiguous()
            data = bf16.view(torch.int16).numpy().astype("<i2").tobytes()
            tensors.append(WTensor(role, DTYPES["bfloat16"], tuple(bf16.shape), data, layer=i,
                                   layout=BHTD))
    entries = [ent("MODEL_ID", identity.model_id(lm.model)), ent("TOKENIZER_ID",
               identity.tokenizer_id(lm.tokenizer)), ent("MODEL_NAME", "SmolLM2-135M-Instruct"),
               ent("CONTEXT_LENGTH", tokens)]
    entries.sort(key=lambda e: e.key)
    return build(WMessage(KINDS["KV_CACHE"], entries, layers, tensors)).data


def cases(recapture: bool = False, path: Path = FILE) -> list[CaseDef]:
    if recapture or not path.exists():
        data = capture()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    data = path.read_bytes()
    return [CaseDef(CASE_ID, "10.4", ["R-10.2", "R-10.3", "R-9.2"],
                    f"KV-cache of SmolLM2-135M-Instruct after the prompt {PROMPT!r}: 30 layers, "
                    "3 KV heads of 64, bf16, with TOKEN_IDS", data=data, flags=["RealModel"])]
