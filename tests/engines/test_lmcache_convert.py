"""LMCache v1 <-> AVP. The bodies here are built from LMCache's protocol description
(lmcache/v1/multiprocess/http_apis/kv_protocol.py and its design note), byte by byte with
struct and json, independently of the converter's own encoder: no LMCache server could be run
here (the released lmcache 0.5.6 does not ship this protocol yet and needs CUDA packages)."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from avp_engines import lmcache

import avp_codec as avp

MID = bytes(range(32))


def frame(header: dict[str, object], payload: bytes = b"") -> bytes:
    """One frame exactly as the protocol text says: !IQ lengths, compact JSON, payload."""
    h = {"version": 1, "payload_length": len(payload), **header}
    hb = json.dumps(h, separators=(",", ":")).encode()
    return struct.pack("!IQ", len(hb), len(payload)) + hb + payload


def kv2ltd(layers: int = 3, t: int = 8, heads: int = 2, hd: int = 4,
           dtype: object = np.float16) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.standard_normal((2, layers, t, heads * hd)).astype(dtype)  # type: ignore[arg-type]


def test_spec_built_store_body_to_avp() -> None:
    kv = kv2ltd()
    tokens = list(range(10, 20))  # 10 tokens, chunk 4: two whole chunks stored (8 tokens)
    body = frame({"type": "store_manifest", "model_name": "smol", "tokens": tokens,
                  "cache_salt": "", "shape": [2, 3, 8, 8], "dtype": "torch.float16"})
    for i in (1, 0):  # chunks may arrive in any order
        body += frame({"type": "store_chunk", "chunk_index": i},
                      np.ascontiguousarray(kv[:, :, 4 * i:4 * i + 4]).tobytes())
    msg = avp.decode(avp.encode(lmcache.store_body_to_message(body, MID, 2)))
    assert msg.get(avp.MetaKey.CONTEXT_LENGTH) == 8
    assert msg.get(avp.MetaKey.MODEL_NAME) == "smol"
    ids = next(t for t in msg.tensors if t.role == avp.Role.TOKEN_IDS).array()
    assert ids.tolist() == [tokens[:8]]
    k1 = next(t for t in msg.tensors if t.role == avp.Role.KEY and t.layer == 1).array()
    assert k1.shape == (1, 2, 8, 4)
    # head h of KV_2LTD's hidden axis is columns [4h, 4h + 4)
    assert np.array_equal(k1[0, 1], kv[0, 1, :, 4:8])
    v2 = next(t for t in msg.tensors if t.role == avp.Role.VALUE and t.layer == 2).array()
    assert np.array_equal(v2[0, 0], kv[1, 2, :, 0:4])


def test_spec_built_retrieve_body_with_two_workers() -> None:
    kv = kv2ltd(dtype=ml_dtypes.bfloat16)
    body = frame({"type": "retrieve_manifest", "model_name": "smol", "total_tokens": 11,
                  "total_chunks": 2, "hit_tokens": 8, "hit_chunks": 2, "chunk_size": 4,
                  "world_size": 2, "shape": [2, 3, 8, 8], "shard_shape": [2, 3, 4, 4],
                  "dtype": "torch.bfloat16"})
    for c in range(2):
        for w in (1, 0):
            body += frame({"type": "retrieve_shard", "chunk_index": c, "worker_id": w},
                          np.ascontiguousarray(kv[:, :, 4 * c:4 * c + 4, 4 * w:4 * w + 4])
                          .tobytes())
    got = lmcache.parse_retrieve(body)
    assert np.array_equal(got.kv.view(np.uint16), kv.view(np.uint16))
    msg = lmcache.to_message(got, MID, 2, tokens=list(range(11)))
    assert msg.get(avp.MetaKey.CONTEXT_LENGTH) == 8
    assert next(t for t in msg.tensors if t.role == avp.Role.KEY).dtype == avp.Dtype.BFLOAT16


@pytest.mark.parametrize("dtype", ["torch.float32", "torch.float16", "torch.bfloat16"])
def test_avp_to_lmcache_and_back(dtype: str) -> None:
    rng = np.random.default_rng(2)
    k = [rng.standard_normal((1, 3, 10, 8)).astype(np.float32) for _ in range(2)]
    v = [rng.standard_normal((1, 3, 10, 8)).astype(np.float32) for _ in range(2)]
    msg = avp.kv_cache_from_arrays(MID, k, v, token_ids=np.arange(1, 11).reshape(1, 10))
    store = lmcache.message_to_store_body(msg, model_name="m", chunk_size=4, dtype=dtype,
                                          model_id=MID)
    parsed = lmcache.parse_store(store)
    assert parsed.kv.shape == (2, 2, 8, 24) and parsed.tokens == list(range(1, 11))
    back = lmcache.to_message(parsed, MID, 3)
    kb = next(t for t in back.tensors if t.role == avp.Role.KEY and t.layer == 1).array()
    want = k[1][:, :, :8].astype(lmcache.DTYPES[dtype])
    assert np.array_equal(kb.view(np.uint8), want.view(np.uint8))
    ret = lmcache.message_to_retrieve_body(msg, model_name="m", chunk_size=4, world_size=3)
    assert np.array_equal(lmcache.parse_retrieve(ret).kv, lmcache.parse_store(
        lmcache.message_to_store_body(msg, model_name="m", chunk_size=4)).kv)


def test_refusals() -> None:
    rng = np.random.default_rng(3)
    k = [rng.standard_normal((1, 2, 6, 4)).astype(np.float32)]
    msg = avp.kv_cache_from_arrays(MID, k, k)
    with pytest.raises(avp.AvpError) as e:  # no TOKEN_IDS: LMCache keys by tokens
        lmcache.message_to_store_body(msg, model_name="m", chunk_size=4)
    assert e.value.code == avp.ErrorCode.KIND_CONSTRAINT
    msg = avp.kv_cache_from_arrays(MID, k, k, token_ids=np.arange(6).reshape(1, 6))
    with pytest.raises(avp.AvpError) as e:
        lmcache.message_to_store_body(msg, model_name="m", chunk_size=4, model_id=bytes(32))
    assert e.value.code == avp.ErrorCode.MODEL_MISMATCH
    with pytest.raises(avp.AvpError) as e:  # 6 tokens make no chunk of 8
        lmcache.message_to_store_body(msg, model_name="m", chunk_size=8)
    assert e.value.code == avp.ErrorCode.KIND_CONSTRAINT
    with pytest.raises(avp.AvpError) as e:
        lmcache.message_to_retrieve_body(msg, model_name="m", chunk_size=2, world_size=3)
    assert e.value.code == avp.ErrorCode.INVALID_VALUE
    parsed = lmcache.parse_store(lmcache.message_to_store_body(msg, model_name="m",
                                                                chunk_size=2))
    with pytest.raises(avp.AvpError) as e:
        lmcache.to_message(parsed, MID, 3)  # 8 columns do not split into 3 heads
    assert e.value.code == avp.ErrorCode.SIZE_MISMATCH


def test_safetensors_bytes_payload() -> None:
    """``application/x-lmcache-kv; v=1``: one U8 tensor "kv", chunk-major worker shards. The
    payload is checked against the safetensors library's own reading of it."""
    from safetensors.numpy import load

    kv = kv2ltd(t=8)
    src = lmcache.LMCacheKV("m", list(range(9)), kv, 4)
    body = lmcache.encode_bytes_payload(src, world_size=2)
    flat = load(body)["kv"]
    assert flat.dtype == np.uint8 and flat.size == kv.nbytes
    first = flat[: kv.nbytes // 4].view(np.float16).reshape(2, 3, 4, 4)  # chunk 0, worker 0
    assert np.array_equal(first, kv[:, :, :4, :4])
    got = lmcache.parse_bytes_payload(body, model_name="m", tokens=list(range(9)), num_layers=3,
                                      hidden=8, dtype="torch.float16", chunk_size=4,
                                      world_size=2)
    assert np.array_equal(got.kv, kv)
    msg = lmcache.to_message(got, MID, 2)
    assert msg.get(avp.MetaKey.CONTEXT_LENGTH) == 8


@pytest.mark.parametrize("mutate,code", [
    (lambda b: b[:5], avp.ErrorCode.TRUNCATED),
    (lambda b: struct.pack("<Q", 2**40) + b[8:], avp.ErrorCode.LIMIT_HEADER),
    (lambda b: struct.pack("<Q", 10**6) + b[8:], avp.ErrorCode.TRUNCATED),
    (lambda b: b[:-2], avp.ErrorCode.SIZE_MISMATCH),
    (lambda b: b + b"\0" * 4, avp.ErrorCode.SIZE_MISMATCH),
    (lambda b: b.replace(b'"U8"', b'"F1"'), avp.ErrorCode.INVALID_VALUE),
    (lambda b: b.replace(b'"kv"', b'"kw"'), avp.ErrorCode.KIND_CONSTRAINT),
    (lambda b: b.replace(b'"1"', b'"2"'), avp.ErrorCode.UNSUPPORTED_VERSION),
    (lambda b: b.replace(b"{", b"[", 1), avp.ErrorCode.INVALID_VALUE),
])
def test_safetensors_payload_refusals(mutate: object, code: avp.ErrorCode) -> None:
    body = lmcache.encode_bytes_payload(lmcache.LMCacheKV("m", list(range(8)), kv2ltd(), 4))
    with pytest.raises(avp.AvpError) as e:
        lmcache.parse_bytes_payload(mutate(body), model_name="m",  # type: ignore[operator]
                                    tokens=list(range(8)), num_layers=3, hidden=8,
                                    dtype="torch.float16", chunk_size=4)
    assert e.value.code == code
    with pytest.raises(avp.AvpError) as e:  # a layout the bytes do not fit
        lmcache.parse_bytes_payload(body, model_name="m", tokens=list(range(8)), num_layers=5,
                                    hidden=8, dtype="torch.float16", chunk_size=4)
    assert e.value.code == avp.ErrorCode.SIZE_MISMATCH
