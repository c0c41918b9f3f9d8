"""Valid vectors: every kind, dtype, codec, value type and layer shape the format allows."""

from __future__ import annotations

import struct
from typing import Any

import zstandard

from .gen_common import (
    BHTD,
    BT,
    BTD,
    BTHD,
    DTYPES,
    FULL,
    KINDS,
    MODEL_ID,
    OTHER_MODEL_ID,
    RECURRENT,
    ROLES,
    SLIDING,
    TEST_KEY,
    TEST_KEY_ID,
    TOKENIZER_ID,
    CaseDef,
    WEntry,
    WLayer,
    WMessage,
    WTensor,
    accept_message,
    array_bytes,
    ent,
    hello_message,
    hidden_message,
    kv_message,
    kv_tensors,
    text_message,
)
from .gen_invalid_quant import quantized_kv


def valid(cid: str, section: str, reqs: list[str], comment: str, msg: WMessage, *,
          context: dict[str, Any] | None = None, features: list[str] | None = None,
          level: str = "required", flags: list[str] | None = None,
          roundtrip: bool = True) -> CaseDef:
    return CaseDef(cid, section, reqs, comment, msg=msg, context=context or {},
                   features=features or [], level=level, flags=flags or [], roundtrip=roundtrip)


def state_message(dtype: str, shape: tuple[int, ...], codec: int = 0, seed: str = "s"
                  ) -> WMessage:
    """A KV_CACHE with one RECURRENT layer holding one SSM_STATE (any dtype, any rank)."""
    raw = array_bytes(dtype, shape, seed)
    t = WTensor(ROLES["SSM_STATE"], DTYPES[dtype], shape, compress(raw, codec, dtype), layer=0,
                codec=codec, raw_len=len(raw))
    return WMessage(KINDS["KV_CACHE"], [ent("MODEL_ID", MODEL_ID), ent("CONTEXT_LENGTH", 7)],
                    [WLayer(0, RECURRENT, 0, 7)], [t])


def compress(raw: bytes, codec: int, dtype: str) -> bytes:
    if codec == 0:
        return raw
    if codec == 2:  # byte planes: plane j holds byte j of every element
        k = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4, "int64": 8}[dtype]
        raw = b"".join(raw[j::k] for j in range(k))
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=False)
    return cctx.compress(raw)


def kind_cases() -> list[CaseDef]:
    out = [
        valid("10/kv-cache-basic", "10", ["R-9.2", "R-5.1", "R-18.1", "R-18.2", "R-18.3"],
              "2 full-attention layers, fp16 K/V",
              kv_message()),
        valid("10/text-basic", "10", ["R-10.9", "R-18.3"], "TEXT only", text_message()),
        valid("10/text-with-role-and-producer", "10", [], "TEXT + TEXT_ROLE, PRODUCER, MODEL_NAME",
              text_message(extra=[ent("TEXT_ROLE", "assistant"), ent("PRODUCER", "avp-vectors 1"),
                                  ent("MODEL_NAME", "SmolLM2-135M-Instruct")])),
        valid("10/text-empty", "10", [], "an empty TEXT value", text_message("")),
        valid("10/text-unicode", "10", [], "non-ASCII, astral plane and control characters",
              text_message("Grüße, 世界 🚀 \"quoted\" back\\slash\ttab\nnewline\x01")),
        valid("10/text-long", "10", [], "a 20,000-byte TEXT", text_message("avp " * 5000)),
        valid("10/hidden-state-latent", "10", [], "same-model latent state [1, 3, 16] bf16",
              hidden_message()),
        valid("10/hello", "10", [], "HELLO with every optional key",
              hello_message(MODEL_NAME="m", VOCAB_DIGEST=TOKENIZER_ID, NONCE=b"\x11" * 16,
                            VOCABULARY=b"\1\0\0\0a\2\0\0\0bc")),
        valid("10/hello-minimal", "10", [], "HELLO with only the required keys",
              hello_message(MODEL_ID=None, TOKENIZER_ID=None)),
        valid("10/accept", "10", [], "ACCEPT resolving KV_CACHE", accept_message(
            mode=1, NONCE=b"\x22" * 16, SHARED_VOCAB_SIZE=10, CAP_DTYPES=[1, 2],
            CAP_CODECS=[0], MAX_MESSAGE_BYTES=1 << 20)),
        valid("10/error", "10", [], "ERROR with text and agent name", WMessage(
            KINDS["ERROR"], [ent("AGENT_NAME", "b"), ent("ERROR_CODE", 70),
                             ent("ERROR_TEXT", "model mismatch")])),
        valid("10/error-unregistered-code", "17", [], "ERROR_CODE 999, a code a newer peer may "
              "add: decodable, treated as a generic failure (D6)", WMessage(
                  KINDS["ERROR"], [ent("ERROR_CODE", 999), ent("ERROR_TEXT", "from the future")])),
    ]
    proj = hidden_message(tokens=2, hidden=8, dtype="float32")
    proj.entries = [ent("MODEL_ID", MODEL_ID), ent("TOKENIZER_ID", TOKENIZER_ID),
                    ent("HIDDEN_SOURCE", 2), ent("PROJ_METHOD", 1),
                    ent("PROJ_SOURCE_MODEL_ID", OTHER_MODEL_ID),
                    ent("PROJ_SOURCE_TOKENIZER_ID", OTHER_MODEL_ID),
                    ent("PROJ_TARGET_TOKENIZER_ID", TOKENIZER_ID), ent("PROJ_SHARED_VOCAB", 31000),
                    ent("PROJ_TEMPERATURE", 0.7)]
    out.append(valid("10/hidden-state-projection", "10", [], "cross-model projection with every "
                     "PROJ_* key", proj))
    ids = WTensor(ROLES["TOKEN_IDS"], DTYPES["int64"], (1, 3), array_bytes("int64", (1, 3), "i"),
                  layout=BT)
    hs = hidden_message()
    hs.tensors.insert(0, ids)
    out.append(valid("10/hidden-state-with-token-ids", "10", [], "TOKEN_IDS then HIDDEN_STATE",
                     hs))
    return out


def dtype_codec_cases() -> list[CaseDef]:
    out = []
    for name in DTYPES:
        shape = (3, 5) if name in ("int4", "uint4", "uint2") else (2, 3)
        out.append(valid(f"7.2/dtype-{name}", "7.2", ["R-7.2"],
                         f"SSM_STATE {list(shape)} of {name}", state_message(name, shape)))
    for name in ("float32", "float16", "bfloat16"):
        m = kv_message(dtype=name, seed=f"kv-{name}")
        out.append(valid(f"7.2/kv-{name}", "7.2", ["R-7.2"], f"K/V in {name}", m))
    for codec, cname in ((1, "zstd"), (2, "byteplane_zstd")):
        for dtype in ("float32", "float16", "bfloat16", "int64"):
            out.append(valid(f"7.3/{cname}-{dtype}", "7.3", ["R-7.8"],
                             f"SSM_STATE [16, 16] {dtype} stored with {cname} (level 3)",
                             state_message(dtype, (16, 16), codec, seed=f"{cname}{dtype}"),
                             level="required"))
    out.append(valid("7.3/zstd-int8", "7.3", ["R-7.8"], "int8 through plain zstd",
                     state_message("int8", (40,), 1)))
    out.append(valid("7.3/zstd-empty-tensor", "7.3", ["R-7.8"], "zstd frame of 0 bytes",
                     state_message("float16", (0, 4), 1)))
    return out


def shape_cases() -> list[CaseDef]:
    out = []
    for rank in range(9):
        shape = tuple([2, 1, 3, 1, 2, 1, 1, 2][:rank])
        out.append(valid(f"7.1/rank-{rank}", "7.1", ["R-7.2"], f"shape {list(shape)}",
                         state_message("float32", shape, seed=f"rank{rank}")))
    out.append(valid("7.1/empty-zero-dim", "7.1", ["R-7.2"], "shape [4, 0]: 0 bytes",
                     state_message("float32", (4, 0))))
    m = kv_message(tokens=0)
    out.append(valid("7.1/kv-zero-tokens", "7.1", ["R-7.7"], "a 0-token context: empty K/V", m))
    out.append(valid("7.2/packed-int4-odd", "7.2", ["R-7.2"], "7 int4 elements: 4 bytes",
                     state_message("int4", (7,))))
    out.append(valid("7.2/packed-uint2-odd", "7.2", ["R-7.2"], "5 uint2 elements: 2 bytes",
                     state_message("uint2", (5,))))
    return out


def layer_cases() -> list[CaseDef]:
    out = []
    ctx = 6
    m = WMessage(KINDS["KV_CACHE"], [ent("MODEL_ID", MODEL_ID), ent("CONTEXT_LENGTH", ctx)])
    m.layers = [WLayer(0, FULL, 0, ctx), WLayer(1, SLIDING, ctx - 4, 4, window=4),
                WLayer(2, RECURRENT, 0, ctx)]
    m.tensors = kv_tensors(0, 1, 2, ctx, 8, seed="het") + kv_tensors(1, 1, 2, 4, 8, seed="sw")
    m.tensors += [WTensor(ROLES["CONV_STATE"], DTYPES["float32"], (1, 16, 3),
                          array_bytes("float32", (1, 16, 3), "conv"), layer=2),
                  WTensor(ROLES["SSM_STATE"], DTYPES["float32"], (1, 4, 8, 2),
                          array_bytes("float32", (1, 4, 8, 2), "ssm"), layer=2)]
    out.append(valid("6.4/heterogeneous-layers", "6.4", ["R-6.8", "R-10.2"],
                     "full attention, sliding window (4 of 6 tokens), recurrent state", m))
    m = kv_message()
    m.tensors = [t for i in range(2) for t in kv_tensors(i, 1, 2, 4, 16, seed="mla", vdim=8)]
    out.append(valid("6.4/kv-different-widths", "6.4", ["R-7.7"],
                     "K head_dim 16, V head_dim 8 (MLA-like)", m))
    m = kv_message(n_layers=1)
    m.tensors = [WTensor(ROLES["LATENT_KV"], DTYPES["bfloat16"], (1, 4, 32),
                         array_bytes("bfloat16", (1, 4, 32), "lat"), layer=0, layout=BTD)]
    out.append(valid("6.4/latent-kv", "6.4", [], "a LATENT_KV [1, 4, 32] layer (MLA)", m))
    m = kv_message()
    for i, la in enumerate(m.layers):
        la.index = [3, 17][i]
    out.append(valid("6.4/layer-subset", "6.4", ["R-6.7"], "layers 3 and 17 only", m))
    out.append(valid("10.4/batch-3", "10.4", ["R-10.1"], "batch 3 everywhere",
                     kv_message(batch=3)))
    m = kv_message()
    m.tensors = [t for i in range(2) for t in kv_tensors(i, 1, 2, 4, 8, seed="bthd", layout=BTHD)]
    out.append(valid("10.3/layout-bthd", "10.3", [], "K/V in BTHD", m))
    m = kv_message()
    k = m.tensors[0]
    a = WTensor(k.role, k.dtype, (1, 2, 3, 8), array_bytes("float16", (1, 2, 3, 8), "t1"),
                layer=0, layout=BHTD)
    b = WTensor(k.role, k.dtype, (1, 2, 1, 8), array_bytes("float16", (1, 2, 1, 8), "t2"),
                layer=0, layout=BHTD, token_offset=3)
    m.tensors[0:1] = [b, a]
    out.append(valid("7.7/token-tiles", "7.7", ["R-7.7"],
                     "KEY of layer 0 in two tiles, [3,4) written before [0,3)", m))
    ctx = 4
    m = kv_message(tokens=ctx, batch=2)
    m.tensors[0:0] = [
        WTensor(ROLES["TOKEN_IDS"], DTYPES["int32"], (2, ctx), array_bytes("int32", (2, ctx), "t"),
                layout=BT),
        WTensor(ROLES["POSITIONS"], DTYPES["int64"], (2, ctx), struct.pack("<8q", *range(4),
                                                                             *range(4)), layout=BT),
        WTensor(ROLES["ATTENTION_MASK"], DTYPES["uint8"], (2, ctx), b"\1" * 8, layout=BT)]
    out.append(valid("10.4/token-ids-positions-mask", "10.4", ["R-10.3"],
                     "TOKEN_IDS, POSITIONS, ATTENTION_MASK, batch 2", m))
    return out


def metadata_cases() -> list[CaseDef]:
    out = []
    m = text_message()
    m.entries += [WEntry(0x7000, 1, struct.pack("<Q", 2**64 - 1)),
                  WEntry(0x7001, 2, struct.pack("<q", -(2**63))),
                  WEntry(0x7002, 3, struct.pack("<d", 0.1)),
                  WEntry(0x7003, 3, struct.pack("<Q", 0x7FF8000000000000)),
                  WEntry(0x7004, 3, struct.pack("<d", float("-inf"))),
                  WEntry(0x7005, 4, "ünïcode".encode()),
                  WEntry(0x7006, 5, bytes(range(19))),
                  WEntry(0x7007, 6, struct.pack("<3I", 0, 7, 2**32 - 1)),
                  WEntry(0x7008, 200, b"unknown value type")]
    out.append(valid("6.3/every-value-type-unknown-keys", "6.3", ["R-6.5", "R-6.10", "R-18.1"],
                     "skippable unknown keys of every value type (u64 max, i64 min, 0.1, NaN,"
                     " -Infinity, utf8, bytes, u32_list) and an unknown type", m))
    m = kv_message(extra=[ent("TOKENIZER_ID", TOKENIZER_ID), ent("MODEL_NAME", "m"),
                          ent("PRODUCER", "p"), ent("CREATED_BY_STEPS", 20),
                          ent("QUANT_POLICY", '{"avp_quant_policy":1}')])
    out.append(valid("10.1/kv-all-optional-keys", "10.1", [], "KV_CACHE with every allowed key", m))
    m = kv_message()
    m.minor = 7
    out.append(valid("3/newer-minor", "3", ["R-3.3"], "minor version 7 of major 1", m,
                     roundtrip=False, flags=["NewerMinor"]))
    m = kv_message()
    m.minor = 1
    m.extra_sections = [(-1, 0x8001, 1, b"before the header"),
                        (0, 0x8000, 1, b"a skippable extension"), (4, 0x9000, 1, b"")]
    out.append(valid("4.3/skippable-unknown-sections", "4.3", ["R-4.3", "R-4.4", "R-3.3"],
                     "unknown SKIPPABLE sections before the HEADER, before the first tensor and"
                     " before the INDEX",
                     m, roundtrip=False, flags=["NewerMinor"]))
    m = text_message()
    m.entries.append(WEntry(0x7000, 5, b"future non-critical entry"))
    out.append(valid("6.2/unknown-noncritical-entry-preserved", "6.2", ["R-6.5", "R-9.2"],
                     "an unregistered key without CRITICAL: skipped and re-encoded unchanged", m))
    return out


def quant_and_auth_cases() -> list[CaseDef]:
    out = [valid("12/affine-int8-per-channel", "12", ["R-12.4"],
                 "KEY int8 with a float16 scale per (head, channel)", quantized_kv())]
    m = kv_message(n_layers=1)
    key = m.tensors[0]
    key.dtype, key.data = DTYPES["int4"], array_bytes("int4", (1, 2, 4, 8), "q4")
    key.quant_scheme, key.quant_axis, key.group_size = 1, 3, 3
    key.scale_tensor, key.zero_point_tensor, key.dequant_dtype = 0, 1, DTYPES["bfloat16"]
    m.tensors[0:0] = [
        WTensor(ROLES["QUANT_SCALE"], DTYPES["float32"], (1, 2, 4, 3),
                array_bytes("float32", (1, 2, 4, 3), "s4"), layer=0),
        WTensor(ROLES["QUANT_ZERO_POINT"], DTYPES["bfloat16"], (1, 2, 4, 3),
                array_bytes("bfloat16", (1, 2, 4, 3), "z4"), layer=0)]
    out.append(valid("12/affine-int4-groups-zero-point", "12", ["R-12.4"],
                     "KEY int4, groups of 3 along head_dim 8 (last group shorter), zero point", m))
    m = kv_message(n_layers=1)
    val = m.tensors[1]
    val.dtype, val.data = DTYPES["float8_e5m2"], array_bytes("float8_e5m2", (1, 2, 4, 8), "f8")
    val.quant_scheme, val.quant_axis, val.scale_tensor = 2, 2, 1
    val.dequant_dtype = DTYPES["float32"]
    m.tensors.insert(1, WTensor(ROLES["QUANT_SCALE"], DTYPES["float32"], (1, 2, 1, 8),
                                array_bytes("float32", (1, 2, 1, 8), "s8"), layer=0))
    out.append(valid("12/scaled-float-e5m2", "12", ["R-12.4"], "VALUE fp8 e5m2 with scale", m))
    m = kv_message(n_layers=1)
    key = m.tensors[0]
    key.dtype, key.data = DTYPES["uint2"], array_bytes("uint2", (1, 2, 4, 8), "q2")
    key.quant_scheme, key.quant_axis, key.group_size = 1, 2, 32
    key.scale_tensor, key.dequant_dtype = 0, DTYPES["float16"]
    m.tensors.insert(0, WTensor(ROLES["QUANT_SCALE"], DTYPES["float16"], (1, 2, 1, 8),
                                array_bytes("float16", (1, 2, 1, 8), "s2"), layer=0))
    out.append(valid("12/affine-uint2-group-larger-than-axis", "12", ["R-12.4"],
                     "uint2 codes, group_size 32 > 4 tokens: one group", m))
    auth = text_message(extra=[ent("AUTH_KEY_ID", TEST_KEY_ID)])
    auth.auth_key = TEST_KEY
    keys = {TEST_KEY_ID.hex(): TEST_KEY.hex()}
    out.append(valid("15/authenticated-with-key", "15", ["R-15.1", "R-15.4"],
                     "TEXT tagged with the test key, receiver holds it", auth,
                     context={"require_auth": True, "keys": keys}, features=["auth"]))
    out.append(valid("15/authenticated-without-key", "15", ["R-15.2"],
                     "the same message at a receiver with no keys: decoded, not authenticated",
                     auth))
    out.append(valid("15/authenticated-other-key-held", "15", ["R-15.3", "R-15.2"],
                     "the receiver holds a key, but not the named one, and does not require"
                     " authentication: decoded as unauthenticated", auth,
                     context={"keys": {b"other".hex(): TEST_KEY.hex()}}, features=["auth"]))
    kv_auth = kv_message(extra=[ent("AUTH_KEY_ID", TEST_KEY_ID)])
    kv_auth.auth_key = TEST_KEY
    out.append(valid("15/authenticated-kv-cache", "15", ["R-15.1"],
                     "a tagged KV_CACHE (tag covers tensor data)", kv_auth,
                     context={"keys": keys}, features=["auth"]))
    out.append(valid("10.4/model-id-matches", "10.4", ["R-10.4"],
                     "KV_CACHE at a receiver holding the same model", kv_message(),
                     context={"expected_model_id": MODEL_ID.hex()}, features=["model_check"]))
    big = kv_message(n_layers=1)
    out.append(valid("16/raised-limits", "16", [], "decoded with max_rank 255 and 1 TiB tensors",
                     big, context={"limits": {"max_rank": 255, "max_tensor_bytes": 1 << 40}},
                     features=["limits"]))
    return out


def cases() -> list[CaseDef]:
    return (kind_cases() + dtype_codec_cases() + shape_cases() + layer_cases()
            + metadata_cases() + quant_and_auth_cases())
