"""Shared pieces of the vector generator: case records, metadata helpers, standard messages.

Every case is built from raw field values with ``wire`` (never with the codec under test), so an
invalid vector differs from a valid one by exactly the fault it is named after.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from .wire import NO_REF, Built, WEntry, WLayer, WMessage, WTensor, build, u32_list

SPEC_PATH = Path(__file__).resolve().parents[2] / "spec" / "avp-spec.md"

# Registered metadata keys (spec 10.1): name -> (code, value type, critical).
KEYS: dict[str, tuple[int, int, bool]] = {
    "MODEL_ID": (1, 5, True), "TOKENIZER_ID": (2, 5, False), "MODEL_NAME": (3, 4, False),
    "PRODUCER": (4, 4, False), "CONTEXT_LENGTH": (5, 1, True), "CREATED_BY_STEPS": (6, 1, False),
    "HIDDEN_SOURCE": (16, 1, True), "PROJ_METHOD": (17, 1, True),
    "PROJ_SOURCE_MODEL_ID": (18, 5, False), "PROJ_SOURCE_TOKENIZER_ID": (19, 5, True),
    "PROJ_TARGET_TOKENIZER_ID": (20, 5, True), "PROJ_SHARED_VOCAB": (21, 1, True),
    "PROJ_TEMPERATURE": (22, 3, False), "TEXT": (32, 4, True), "TEXT_ROLE": (33, 4, False),
    "AGENT_NAME": (48, 4, True), "VERSIONS": (49, 6, True), "CAP_DTYPES": (50, 6, True),
    "CAP_CODECS": (51, 6, True), "CAP_MODES": (52, 6, True), "MAX_MESSAGE_BYTES": (53, 1, True),
    "MODE": (54, 1, True), "VOCAB_DIGEST": (55, 5, False), "VOCABULARY": (56, 5, False),
    "SHARED_VOCAB_SIZE": (57, 1, False), "NONCE": (58, 5, False), "ERROR_CODE": (64, 1, True),
    "ERROR_TEXT": (65, 4, False), "QUANT_POLICY": (80, 4, False), "AUTH_KEY_ID": (96, 5, True),
}
KINDS = {"KV_CACHE": 1, "HIDDEN_STATE": 2, "TEXT": 3, "HELLO": 16, "ACCEPT": 17, "ERROR": 18}
KIND_NAMES = {v: k for k, v in KINDS.items()}
DTYPES = {"float32": 1, "float16": 2, "bfloat16": 3, "float8_e4m3fn": 4, "float8_e5m2": 5,
          "int8": 6, "uint8": 7, "int4": 8, "uint4": 9, "uint2": 10, "int32": 11, "int64": 12}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
CODEC_NAMES = {0: "raw", 1: "zstd", 2: "byteplane_zstd", 3: "floatplane_zstd"}
ROLES = {"KEY": 1, "VALUE": 2, "LATENT_KV": 3, "CONV_STATE": 4, "SSM_STATE": 5,
         "HIDDEN_STATE": 16, "TOKEN_IDS": 17, "POSITIONS": 18, "ATTENTION_MASK": 19,
         "QUANT_SCALE": 32, "QUANT_ZERO_POINT": 33}
FULL, SLIDING, RECURRENT = 1, 2, 3
BHTD, BTHD, BTD, BT, NONE = 1, 2, 3, 4, 0

MODEL_ID = hashlib.sha256(b"avp conformance model A").digest()
OTHER_MODEL_ID = hashlib.sha256(b"avp conformance model B").digest()
TOKENIZER_ID = hashlib.sha256(b"avp conformance tokenizer A").digest()
# NONCE is required in HELLO and ACCEPT (lead decision D4); fixed values keep vectors frozen.
HELLO_NONCE = bytes(range(16))
ACCEPT_NONCE = bytes(range(16, 32))
RECEIVER_NONCE = bytes(range(32, 48))
TEST_KEY_ID = b"conformance-key-1"
TEST_KEY = hashlib.sha256(b"avp conformance test key (public, for vectors only)").digest()


def ent(name: str, value: Any, **over: Any) -> WEntry:
    """A registered entry with its registered type and critical flag, value encoded by type."""
    code, vtype, critical = KEYS[name]
    return WEntry(code, vtype, encode_value(vtype, value), critical, **over)


def encode_value(vtype: int, value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if vtype == 1:
        return struct.pack("<Q", value)
    if vtype == 2:
        return struct.pack("<q", value)
    if vtype == 3:
        return struct.pack("<d", value)
    if vtype == 4:
        return str(value).encode("utf-8")
    if vtype == 6:
        return u32_list(list(value))
    raise ValueError(vtype)


def _stream(seed: str, n: int) -> bytes:
    """n deterministic bytes for a seed (SHAKE-256: the same on every platform and version)."""
    return hashlib.shake_256(seed.encode()).digest(n)


def array_bytes(dtype: str, shape: tuple[int, ...], seed: str) -> bytes:
    """Deterministic contents of a tensor: finite floats in [-4, 4), small integers, packed codes.

    Values come from SHAKE-256 rather than a numpy RNG so the frozen vectors do not depend on a
    library's random stream; float values are exact multiples of 2^-13, rounded to the dtype by
    numpy/ml_dtypes casts (IEEE round-to-nearest-even, deterministic)."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    words = np.frombuffer(_stream(seed, 2 * count), dtype="<u2").astype(np.int64)
    if dtype in ("float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"):
        np_dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
                    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
                    "float8_e5m2": ml_dtypes.float8_e5m2}[dtype]
        values = ((words - 32768) / 8192.0).astype(np.float32)
        return values.astype(np_dtype).tobytes()
    if dtype in ("int8", "uint8", "int32", "int64"):
        lo = 0 if dtype == "uint8" else -100
        span = 256 if dtype == "uint8" else 201
        return (words % span + lo).astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    bits = {"int4": 4, "uint4": 4, "uint2": 2}[dtype]
    codes = words % (1 << bits)
    out = bytearray((count * bits + 7) // 8)
    for i, c in enumerate(codes):
        out[i * bits // 8] |= int(c) << (i * bits % 8)
    return bytes(out)


def kv_tensors(layer: int, batch: int, heads: int, tokens: int, dim: int, dtype: str = "float16",
               seed: str = "", layout: int = BHTD, vdim: int | None = None) -> list[WTensor]:
    """KEY then VALUE of one layer (VALUE may have another head_dim: MLA-like widths)."""
    out = []
    for role, d in (("KEY", dim), ("VALUE", vdim or dim)):
        shape = (batch, heads, tokens, d) if layout == BHTD else (batch, tokens, heads, d)
        out.append(WTensor(ROLES[role], DTYPES[dtype], shape,
                           array_bytes(dtype, shape, f"{seed}/{layer}/{role}"), layer=layer,
                           layout=layout))
    return out


def kv_message(n_layers: int = 2, tokens: int = 4, batch: int = 1, heads: int = 2, dim: int = 8,
               dtype: str = "float16", seed: str = "kv", extra: list[WEntry] | None = None
               ) -> WMessage:
    """A small KV_CACHE: n full-attention layers, fp16 K/V [batch, heads, tokens, dim]."""
    layers = [WLayer(i, FULL, 0, tokens) for i in range(n_layers)]
    tensors = [t for i in range(n_layers)
               for t in kv_tensors(i, batch, heads, tokens, dim, dtype, seed)]
    entries = [ent("MODEL_ID", MODEL_ID), ent("CONTEXT_LENGTH", tokens)] + (extra or [])
    entries.sort(key=lambda e: e.key)
    return WMessage(KINDS["KV_CACHE"], entries, layers, tensors)


def text_message(text: str = "The answer is 42.", extra: list[WEntry] | None = None) -> WMessage:
    entries = [ent("TEXT", text)] + (extra or [])
    entries.sort(key=lambda e: e.key)
    return WMessage(KINDS["TEXT"], entries)


def hidden_message(tokens: int = 3, hidden: int = 16, dtype: str = "bfloat16") -> WMessage:
    shape = (1, tokens, hidden)
    t = WTensor(ROLES["HIDDEN_STATE"], DTYPES[dtype], shape,
                array_bytes(dtype, shape, "hidden"), layout=BTD)
    return WMessage(KINDS["HIDDEN_STATE"], [ent("MODEL_ID", MODEL_ID), ent("HIDDEN_SOURCE", 1)],
                    [], [t])


def hello_message(**over: Any) -> WMessage:
    values = {"AGENT_NAME": "agent-a", "VERSIONS": [0x10000], "CAP_DTYPES": [1, 2, 3],
              "CAP_CODECS": [0, 1, 2], "CAP_MODES": [1, 2, 3], "MAX_MESSAGE_BYTES": 1 << 30,
              "MODEL_ID": MODEL_ID, "TOKENIZER_ID": TOKENIZER_ID, "NONCE": HELLO_NONCE}
    values.update(over)
    entries = sorted((ent(k, v) for k, v in values.items() if v is not None), key=lambda e: e.key)
    return WMessage(KINDS["HELLO"], entries)


def accept_message(mode: int = 1, **over: Any) -> WMessage:
    values = {"AGENT_NAME": "agent-b", "MODE": mode, "VERSIONS": [0x10000],
              "MODEL_ID": MODEL_ID, "TOKENIZER_ID": TOKENIZER_ID, "NONCE": ACCEPT_NONCE}
    values.update(over)
    entries = sorted((ent(k, v) for k, v in values.items() if v is not None), key=lambda e: e.key)
    return WMessage(KINDS["ACCEPT"], entries)


@dataclass
class CaseDef:
    id: str
    section: str
    req_ids: list[str]
    comment: str
    msg: WMessage | None = None
    data: bytes | None = None  # raw bytes when the fault cannot be expressed in a WMessage
    result: str = "valid"
    error: str | None = None  # expected error name (invalid)
    any_of: list[str] = field(default_factory=list)  # acceptable: error names and/or "valid"
    level: str = "required"
    flags: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    roundtrip: bool = True
    fault: str | None = None  # name of a structure in Built.offsets, or "@<absolute offset>"
    features: list[str] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)  # beyond decode, e.g. "dequantize"
    # (tensor index, {"values", "dtype", "shape"} or {"error": NAME}): the dequantize checks
    dequantize: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def built(self) -> Built:
        if self.msg is not None and self.data is None:
            return build(self.msg)
        assert self.data is not None
        return Built(self.data, {})


def requirement_quotes() -> dict[str, str]:
    """[R-x.y] -> the spec sentence(s) stating it, taken from the bullet or paragraph it is in."""
    text = SPEC_PATH.read_text("utf-8")
    quotes: dict[str, str] = {}
    blocks = re.split(r"\n(?=- |\n)", text)
    for block in blocks:
        flat = " ".join(block.split()).lstrip("- ")
        for rid in re.findall(r"\[(R-\d+\.\d+)", flat):
            quotes.setdefault(rid, flat)
    return quotes


def requirement_ids() -> list[str]:
    return sorted(requirement_quotes(), key=lambda r: tuple(int(p) for p in r[2:].split(".")))


__all__ = ["NO_REF", "WEntry", "WLayer", "WMessage", "WTensor"]
