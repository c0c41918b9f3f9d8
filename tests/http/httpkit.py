"""Messages and raw-HTTP helpers shared by the tests/http modules."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import httpx
import numpy as np
import zstandard
from receivers import MODEL_ID

import avp_codec as avp

AVP = "application/avp"


def kv(tokens: int = 4, layers: int = 2, *, model_id: bytes = MODEL_ID, seed: int = 0,
       dtype: Any = np.float16, token_ids: list[int] | None = None) -> avp.Message:
    rng = np.random.default_rng(seed)
    k = [rng.standard_normal((1, 2, tokens, 16)).astype(dtype) for _ in range(layers)]
    v = [rng.standard_normal((1, 2, tokens, 16)).astype(dtype) for _ in range(layers)]
    msg = avp.kv_cache_from_arrays(model_id, k, v)
    if token_ids is not None:
        ids = avp.Tensor.from_array(np.asarray([token_ids], dtype=np.int32), avp.Role.TOKEN_IDS,
                                    layout=avp.Layout.BT)
        msg.tensors.insert(0, ids)
    return msg


def big_kv(mb: int, *, model_id: bytes = MODEL_ID) -> bytes:
    """An encoded KV_CACHE of about ``mb`` MB (2 layers of float16)."""
    tokens = max(1, mb * (1 << 20) // (2 * 2 * 2 * 64 * 2))
    rng = np.random.default_rng(1)
    k = [rng.standard_normal((1, 2, tokens, 64)).astype(np.float16) for _ in range(2)]
    return avp.encode(avp.kv_cache_from_arrays(model_id, k, [x.copy() for x in k]))


def hello(name: str = "tester", *, model_id: bytes | None = MODEL_ID, **kw: Any) -> avp.Message:
    return avp.hello_message(name, model_id=model_id, **kw)


def zstd_bomb(inflated: int) -> bytes:
    """A KV_CACHE whose one zstd tensor declares ``inflated`` raw bytes and really inflates to
    them (a frame of RLE blocks: a few KiB on the wire)."""
    tokens = inflated // (2 * 64 * 2)
    shape = (1, 2, tokens, 64)
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=True)
    frame = cctx.compress(bytes(inflated)) if inflated <= (1 << 20) else _rle_frame(inflated)
    t = avp.Tensor(avp.Role.KEY, avp.Dtype.FLOAT16, shape, frame, layer=0,
                   codec=avp.Codec.ZSTD, layout=avp.Layout.BHTD, raw_length=inflated)
    v = avp.Tensor(avp.Role.VALUE, avp.Dtype.FLOAT16, shape, frame, layer=0,
                   codec=avp.Codec.ZSTD, layout=avp.Layout.BHTD, raw_length=inflated)
    msg = avp.Message(avp.Kind.KV_CACHE, [avp.Entry.of(avp.MetaKey.MODEL_ID, MODEL_ID),
                                          avp.Entry.of(avp.MetaKey.CONTEXT_LENGTH, tokens)],
                      [avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, tokens)], [t, v])
    return avp.encode(msg)


def _rle_frame(n: int) -> bytes:
    """A zstd frame of RLE blocks (128 KiB of zeros each) with content size ``n``."""
    out = bytearray(b"\x28\xb5\x2f\xfd")
    # FCS as 8 bytes, a 128 KiB window (so a decoder needs no window of the frame's size).
    out += bytes([0xC0, 0x38]) + struct.pack("<Q", n)
    block = 128 << 10
    left = n
    while left:
        size = min(block, left)
        left -= size
        header = (1 if left == 0 else 0) | (1 << 1) | (size << 3)  # last, RLE, size
        out += struct.pack("<I", header)[:3] + b"\x00"
    return bytes(out)


def handshake(url: str, client: httpx.Client, msg: avp.Message | None = None) -> str:
    r = client.post(url + "/handshake", content=avp.encode(msg or hello()),
                    headers={"content-type": AVP})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(AVP)
    return r.headers["avp-session"]


def problem(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = json.loads(r.content)
    assert body["status"] == r.status_code
    assert {"type", "title", "status", "detail"} <= set(body)
    return body


def raw_request(port: int, head: bytes, body_parts: list[bytes] = (), *,  # type: ignore[assignment]
                timeout: float = 15.0) -> bytes:
    """One HTTP/1.1 exchange on a plain socket: what a hand-crafted or hostile client sends.
    Returns what the server answered before closing (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        for p in body_parts:
            s.sendall(p)
        chunks = []
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        except TimeoutError:
            pass
    return b"".join(chunks)
