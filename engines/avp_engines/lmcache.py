"""LMCache's v1 KV transfer protocol <-> AVP KV_CACHE.

LMCache moves a prefix's KV as KV_2LTD: one tensor ``[2, num_layers, tokens, hidden]`` (K then V;
``hidden`` = KV heads x head_dim, heads outermost, keys in the model's own order as vLLM computes
them), cut into chunks of ``chunk_size`` tokens and, on retrieval, into one shard per
tensor-parallel worker along ``hidden``. The framing is in _lmcache_wire.

    body = lmcache.message_to_store_body(msg, model_name="HuggingFaceTB/SmolLM2-135M-Instruct",
                                         chunk_size=256)       # POST /api/kv/store
    msg = lmcache.retrieve_body_to_message(body, model_id, n_kv_heads=3, tokens=prompt_ids)

LMCache names models by string; AVP by MODEL_ID, which the caller supplies (and checks, for the
AVP -> LMCache direction). Only whole chunks travel (LMCache keys chunks by token hashes and
ignores a trailing partial chunk), so a message of T tokens stores floor(T / chunk) x chunk.
The fixtures under tests/engines are built from the protocol's specification, not recorded
from a running LMCache server (its package needs CUDA to install here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np

import avp_codec as avp
from avp_codec import AvpError, ErrorCode

from . import _kv, _lmcache_bytes
from ._lmcache_wire import STREAM_MEDIA_TYPE, encode_frame, get_int, get_ints, get_str, iter_frames

__all__ = [
    "STREAM_MEDIA_TYPE", "BYTES_MEDIA_TYPE", "LMCacheKV", "parse_store", "parse_retrieve",
    "encode_store", "encode_retrieve", "parse_bytes_payload", "encode_bytes_payload",
    "to_message", "from_message", "store_body_to_message", "retrieve_body_to_message",
    "message_to_store_body", "message_to_retrieve_body",
]

PRODUCER = "avp-engines/0.1.0 (lmcache v1)"
BYTES_MEDIA_TYPE = _lmcache_bytes.MEDIA_TYPE
DTYPES: dict[str, np.dtype] = {
    "torch.float32": np.dtype("<f4"),
    "torch.float16": np.dtype("<f2"),
    "torch.bfloat16": np.dtype(ml_dtypes.bfloat16),
    "torch.float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "torch.float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
}
DEFAULT_MAX_BYTES = 1 << 34


@dataclass
class LMCacheKV:
    """The content of a store request or retrieve response: KV_2LTD and its routing data."""

    model_name: str
    tokens: list[int]
    kv: np.ndarray  # [2, L, T, D]
    chunk_size: int
    cache_salt: str = ""

    @property
    def dtype(self) -> str:
        for name, dt in DTYPES.items():
            if dt == self.kv.dtype:
                return name
        raise AvpError(ErrorCode.UNKNOWN_DTYPE, f"{self.kv.dtype} has no LMCache dtype name")


def _dtype(name: str, offset: int) -> np.dtype:
    dt = DTYPES.get(name)
    if dt is None:
        raise AvpError(ErrorCode.UNKNOWN_DTYPE, f"LMCache dtype {name!r} (known: "
                       f"{', '.join(DTYPES)})", offset=offset, path="header.dtype")
    return dt


def _check_size(shape: list[int], item: int, max_bytes: int, offset: int) -> int:
    n = math.prod(shape) * item
    if n > max_bytes:
        raise AvpError(ErrorCode.LIMIT_TENSOR, f"KV of shape {shape} is {n} bytes (limit "
                       f"{max_bytes})", offset=offset, path="header.shape")
    return n


# ---------------------------------------------------------------- parsing


def parse_store(body: bytes | bytearray | memoryview, *,
                max_bytes: int = DEFAULT_MAX_BYTES) -> LMCacheKV:
    """A store request body (store_manifest, then store_chunk frames in any order)."""
    frames = iter_frames(body, max_payload=max_bytes)
    m = next(frames, None)
    if m is None or m.type != "store_manifest":
        raise AvpError(ErrorCode.SECTION_ORDER, "a store body starts with a store_manifest "
                       "frame", offset=0 if m is None else m.offset)
    h, off = m.header, m.offset
    model = get_str(h, "model_name", off)
    tokens = get_ints(h, "tokens", off, hi=2**31 - 1)
    salt = get_str(h, "cache_salt", off, default="")
    shape = get_ints(h, "shape", off, n=4, hi=2**40)
    dt = _dtype(get_str(h, "dtype", off), off)
    if shape[0] != 2 or min(shape[1], shape[3]) == 0:
        raise AvpError(ErrorCode.INVALID_VALUE, f"KV_2LTD shape {shape}", offset=off,
                       path="header.shape")
    total = _check_size(shape, dt.itemsize, max_bytes, off)
    if len(tokens) < shape[2]:
        raise AvpError(ErrorCode.KIND_CONSTRAINT, f"{len(tokens)} tokens for {shape[2]} KV "
                       "positions", offset=off, path="header.tokens")
    chunks: dict[int, memoryview] = {}
    size = -1
    for f in frames:
        if f.type != "store_chunk":
            raise AvpError(ErrorCode.SECTION_ORDER, f"{f.type} frame in a store body",
                           offset=f.offset)
        i = get_int(f.header, "chunk_index", f.offset, hi=2**31)
        if i in chunks:
            raise AvpError(ErrorCode.BAD_REFERENCE, f"chunk {i} twice", offset=f.offset)
        if size < 0:
            size = len(f.payload)
        if len(f.payload) != size or size == 0:
            raise AvpError(ErrorCode.SIZE_MISMATCH, "store chunks differ in size or are empty",
                           offset=f.offset)
        chunks[i] = f.payload
    per_token = 2 * shape[1] * shape[3] * dt.itemsize
    if not chunks or size % per_token or len(chunks) * size != total:
        raise AvpError(ErrorCode.SIZE_MISMATCH, f"{len(chunks)} chunk(s) of {max(size, 0)} "
                       f"bytes do not make KV of shape {shape}", path="store_chunk")
    cs = size // per_token
    if sorted(chunks) != list(range(len(chunks))):
        raise AvpError(ErrorCode.BAD_REFERENCE, f"chunk indices {sorted(chunks)[:8]}... are "
                       f"not 0..{len(chunks) - 1}", path="store_chunk.chunk_index")
    kv = np.empty(shape, dt)
    for i, p in chunks.items():
        kv[:, :, i * cs:(i + 1) * cs, :] = np.frombuffer(p, dt).reshape(2, shape[1], cs, shape[3])
    return LMCacheKV(model, tokens, kv, cs, salt)


def parse_retrieve(body: bytes | bytearray | memoryview, *,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> LMCacheKV:
    """A retrieve response body (retrieve_manifest, then retrieve_shard frames)."""
    frames = iter_frames(body, max_payload=max_bytes)
    m = next(frames, None)
    if m is None or m.type != "retrieve_manifest":
        raise AvpError(ErrorCode.SECTION_ORDER, "a retrieve body starts with a "
                       "retrieve_manifest frame", offset=0 if m is None else m.offset)
    h, off = m.header, m.offset
    model = get_str(h, "model_name", off)
    cs = get_int(h, "chunk_size", off, lo=1, hi=2**31)
    ws = get_int(h, "world_size", off, lo=1, hi=4096)
    hit_tokens = get_int(h, "hit_tokens", off, hi=2**40)
    hit_chunks = get_int(h, "hit_chunks", off, hi=2**40)
    shape = get_ints(h, "shape", off, n=4, hi=2**40)
    shard = get_ints(h, "shard_shape", off, n=4, hi=2**40)
    dt = _dtype(get_str(h, "dtype", off), off)
    if hit_chunks == 0:
        raise AvpError(ErrorCode.KIND_CONSTRAINT, "a retrieve miss (hit_chunks 0) holds no KV",
                       offset=off, path="header.hit_chunks")
    ok = (shape[0] == 2 and shard[0] == 2 and shape[1] == shard[1] and shape[1] > 0
          and hit_tokens == hit_chunks * cs and shape[2] == hit_tokens and shard[2] == cs
          and shard[3] > 0 and shard[3] * ws == shape[3])
    if not ok:
        raise AvpError(ErrorCode.INVALID_VALUE, f"inconsistent manifest: shape {shape}, "
                       f"shard_shape {shard}, chunk_size {cs}, world_size {ws}, hit_tokens "
                       f"{hit_tokens}, hit_chunks {hit_chunks}", offset=off, path="header")
    _check_size(shape, dt.itemsize, max_bytes, off)
    want = math.prod(shard) * dt.itemsize
    seen: set[tuple[int, int]] = set()
    parts: list[tuple[int, int, memoryview]] = []
    for f in frames:
        if f.type != "retrieve_shard":
            raise AvpError(ErrorCode.SECTION_ORDER, f"{f.type} frame in a retrieve body",
                           offset=f.offset)
        c = get_int(f.header, "chunk_index", f.offset, hi=hit_chunks - 1)
        w = get_int(f.header, "worker_id", f.offset, hi=ws - 1)
        if (c, w) in seen:
            raise AvpError(ErrorCode.BAD_REFERENCE, f"shard ({c}, {w}) twice", offset=f.offset)
        if len(f.payload) != want:
            raise AvpError(ErrorCode.SIZE_MISMATCH, f"shard of {len(f.payload)} bytes, "
                           f"{want} expected", offset=f.offset)
        seen.add((c, w))
        parts.append((c, w, f.payload))
    if len(seen) != hit_chunks * ws:
        raise AvpError(ErrorCode.TOKEN_RANGE, f"{hit_chunks * ws - len(seen)} shard(s) missing",
                       path="retrieve_shard")
    kv = np.empty(shape, dt)
    d = shard[3]
    for c, w, p in parts:
        kv[:, :, c * cs:(c + 1) * cs, w * d:(w + 1) * d] = np.frombuffer(p, dt).reshape(shard)
    return LMCacheKV(model, [], kv, cs)


# ---------------------------------------------------------------- encoding


def _whole(kv: LMCacheKV) -> int:
    if kv.chunk_size <= 0:
        raise AvpError(ErrorCode.INVALID_VALUE, f"chunk_size {kv.chunk_size}")
    n = int(kv.kv.shape[2]) // kv.chunk_size
    if n == 0:
        raise AvpError(ErrorCode.KIND_CONSTRAINT, f"{kv.kv.shape[2]} tokens make no whole chunk "
                       f"of {kv.chunk_size}")
    return n


def encode_store(kv: LMCacheKV) -> bytes:
    """A store request body: the whole chunks of `kv` (a trailing partial chunk is dropped)."""
    n = _whole(kv)
    t = n * kv.chunk_size
    shape = [2, kv.kv.shape[1], t, kv.kv.shape[3]]
    out = [encode_frame("store_manifest", fields={
        "model_name": kv.model_name, "tokens": list(kv.tokens), "cache_salt": kv.cache_salt,
        "shape": shape, "dtype": kv.dtype})]
    for i in range(n):
        chunk = np.ascontiguousarray(kv.kv[:, :, i * kv.chunk_size:(i + 1) * kv.chunk_size])
        out.append(encode_frame("store_chunk", chunk.view(np.uint8).reshape(-1).data,
                                {"chunk_index": i}))
    return b"".join(out)


def encode_retrieve(kv: LMCacheKV, *, world_size: int = 1, total_tokens: int | None = None
                    ) -> bytes:
    """A retrieve response body, as an LMCache server sends it for the whole chunks of `kv`."""
    n = _whole(kv)
    cs, t = kv.chunk_size, n * kv.chunk_size
    d = kv.kv.shape[3]
    if world_size < 1 or d % world_size:
        raise AvpError(ErrorCode.INVALID_VALUE, f"hidden {d} does not split over {world_size}")
    ds = d // world_size
    total = t if total_tokens is None else total_tokens
    out = [encode_frame("retrieve_manifest", fields={
        "model_name": kv.model_name, "total_tokens": total, "total_chunks": total // cs,
        "hit_tokens": t, "hit_chunks": n, "chunk_size": cs, "world_size": world_size,
        "shape": [2, kv.kv.shape[1], t, d], "shard_shape": [2, kv.kv.shape[1], cs, ds],
        "dtype": kv.dtype})]
    for c in range(n):
        for w in range(world_size):
            part = np.ascontiguousarray(kv.kv[:, :, c * cs:(c + 1) * cs, w * ds:(w + 1) * ds])
            out.append(encode_frame("retrieve_shard", part.view(np.uint8).reshape(-1).data,
                                    {"chunk_index": c, "worker_id": w}))
    return b"".join(out)


def parse_bytes_payload(body: bytes | bytearray | memoryview, *, model_name: str,
                        tokens: list[int], num_layers: int, hidden: int, dtype: str,
                        chunk_size: int, world_size: int = 1,
                        max_bytes: int = DEFAULT_MAX_BYTES) -> LMCacheKV:
    """The safetensors payload of ``application/x-lmcache-kv; v=1`` (_lmcache_bytes); the
    layout (layers, hidden, dtype, chunk size, world size) is the server's registered one and
    `tokens` the X-LMCache-Tokens header, so the caller supplies them."""
    dt = _dtype(dtype, 0)
    if min(num_layers, hidden, chunk_size, world_size) <= 0 or hidden % world_size:
        raise AvpError(ErrorCode.INVALID_VALUE, "layers, hidden, chunk_size and world_size must "
                       "be positive, hidden a multiple of world_size")
    raw = _lmcache_bytes.parse(body)
    if len(raw) > max_bytes:
        raise AvpError(ErrorCode.LIMIT_TENSOR, f"payload of {len(raw)} bytes")
    ds = hidden // world_size
    shard = 2 * num_layers * chunk_size * ds * dt.itemsize
    if len(raw) == 0 or len(raw) % (shard * world_size):
        raise AvpError(ErrorCode.SIZE_MISMATCH, f"{len(raw)} bytes are not whole chunks of "
                       f"{world_size} shards of {shard} bytes")
    n = len(raw) // (shard * world_size)
    t = n * chunk_size
    if len(tokens) < t:
        raise AvpError(ErrorCode.KIND_CONSTRAINT, f"{len(tokens)} tokens for {t} KV positions")
    kv = np.empty((2, num_layers, t, hidden), dt)
    for c in range(n):
        for w in range(world_size):
            off = (c * world_size + w) * shard
            part = np.frombuffer(raw[off:off + shard], dt).reshape(2, num_layers, chunk_size, ds)
            kv[:, :, c * chunk_size:(c + 1) * chunk_size, w * ds:(w + 1) * ds] = part
    return LMCacheKV(model_name, list(tokens), kv, chunk_size)


def encode_bytes_payload(kv: LMCacheKV, *, world_size: int = 1) -> bytes:
    """The safetensors payload for the whole chunks of `kv` (tokens and model name go in the
    X-LMCache-Tokens / X-LMCache-Model-Name headers, the layout in the server's status)."""
    n = _whole(kv)
    cs, d = kv.chunk_size, kv.kv.shape[3]
    if world_size < 1 or d % world_size:
        raise AvpError(ErrorCode.INVALID_VALUE, f"hidden {d} does not split over {world_size}")
    ds = d // world_size
    parts = [np.ascontiguousarray(kv.kv[:, :, c * cs:(c + 1) * cs, w * ds:(w + 1) * ds])
             .tobytes() for c in range(n) for w in range(world_size)]
    return _lmcache_bytes.build(b"".join(parts))


# ---------------------------------------------------------------- AVP


def to_message(kv: LMCacheKV, model_id: bytes, n_kv_heads: int, *,
               tokens: list[int] | None = None, tokenizer_id: bytes | None = None
               ) -> avp.Message:
    """A KV_CACHE message from KV_2LTD: per layer K and V as BHTD [1, heads, T, head_dim]."""
    _, n_layers, t, d = kv.kv.shape
    if n_kv_heads <= 0 or d % n_kv_heads:
        raise AvpError(ErrorCode.SIZE_MISMATCH, f"hidden {d} does not split into {n_kv_heads} "
                       "heads")
    hd = d // n_kv_heads
    toks = list(tokens) if tokens is not None else list(kv.tokens)
    ids = np.asarray(toks[:t], np.int64) if len(toks) >= t else None
    tensors = []
    for li in range(n_layers):
        for side, role in ((0, avp.Role.KEY), (1, avp.Role.VALUE)):
            x = kv.kv[side, li].reshape(t, n_kv_heads, hd).transpose(1, 0, 2)
            tensors.append(avp.Tensor.from_array(np.ascontiguousarray(x)[None], role,
                                                 layer=li, layout=avp.Layout.BHTD))
    return _kv.message_from_layers(model_id, t, tensors, n_layers, token_ids=ids,
                                   positions=np.arange(t), model_name=kv.model_name or None,
                                   tokenizer_id=tokenizer_id, producer=PRODUCER)


def from_message(source: avp.Message | bytes | bytearray | memoryview, *, model_name: str,
                 chunk_size: int, model_id: bytes | None = None, dtype: str | None = None,
                 cache_salt: str = "") -> LMCacheKV:
    """KV_2LTD from a KV_CACHE message (dequantized, in `dtype`, default the message's own)."""
    msg = source if isinstance(source, avp.Message) else avp.decode(source)
    kv = _kv.view(msg, model_id=model_id)
    if kv.token_ids is None or bool((kv.token_ids < 0).any()):
        raise AvpError(ErrorCode.KIND_CONSTRAINT, "LMCache keys KV by token ids: the message "
                       "needs TOKEN_IDS without latent (-1) positions", path="TOKEN_IDS")
    sides = [[kv.array(li, r) for li in range(kv.n_layers)]
             for r in (avp.Role.KEY, avp.Role.VALUE)]
    want = _dtype(dtype, 0) if dtype is not None else np.result_type(sides[0][0].dtype)
    if want not in DTYPES.values():
        want = np.dtype("<f4")
    h, t, hd = sides[0][0].shape
    out = np.empty((2, kv.n_layers, t, h * hd), want)
    for s in range(2):
        for li, x in enumerate(sides[s]):
            if x.shape != (h, t, hd):
                raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY, f"layer {li} has K/V of "
                               f"shape {x.shape}; KV_2LTD needs one shape for all",
                               path=f"layers[{li}]")
            out[s, li] = x.transpose(1, 0, 2).reshape(t, h * hd).astype(want)
    return LMCacheKV(model_name, [int(i) for i in kv.token_ids], out, chunk_size, cache_salt)


def store_body_to_message(body: bytes | bytearray | memoryview, model_id: bytes,
                          n_kv_heads: int, **kw: object) -> avp.Message:
    return to_message(parse_store(body), model_id, n_kv_heads, **kw)  # type: ignore[arg-type]


def retrieve_body_to_message(body: bytes | bytearray | memoryview, model_id: bytes,
                             n_kv_heads: int, **kw: object) -> avp.Message:
    return to_message(parse_retrieve(body), model_id, n_kv_heads, **kw)  # type: ignore[arg-type]


def message_to_store_body(source: avp.Message | bytes, *, model_name: str, chunk_size: int,
                          **kw: object) -> bytes:
    return encode_store(from_message(source, model_name=model_name, chunk_size=chunk_size,
                                     **kw))  # type: ignore[arg-type]


def message_to_retrieve_body(source: avp.Message | bytes, *, model_name: str, chunk_size: int,
                             world_size: int = 1, **kw: object) -> bytes:
    kv = from_message(source, model_name=model_name, chunk_size=chunk_size,
                      **kw)  # type: ignore[arg-type]
    return encode_retrieve(kv, world_size=world_size)
