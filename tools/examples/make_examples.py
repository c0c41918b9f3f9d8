"""Writes the example messages that tools/README.md runs avp-dump on (deterministic bytes).

    python tools/examples/make_examples.py

kv.avp: a two-layer float16 KV_CACHE with TOKEN_IDS, made by avp_codec; kv-damaged.avp: the same
bytes with one data byte of tensor 3 flipped (its CRC no longer matches).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import avp_codec as avp

HERE = Path(__file__).resolve().parent


def kv() -> bytes:
    rng = np.random.default_rng(2024)
    keys = [rng.standard_normal((1, 2, 4, 8)).astype(np.float16) for _ in range(2)]
    values = [rng.standard_normal((1, 2, 4, 8)).astype(np.float16) for _ in range(2)]
    tokens = np.array([[791, 6864, 374, 220]], dtype=np.int64)
    msg = avp.kv_cache_from_arrays(bytes(range(32)), keys, values, token_ids=tokens,
                                   model_name="example-model")
    return avp.encode(msg)


def damaged(data: bytes) -> bytes:
    msg = avp.decode(data)
    view = msg.tensors[3].stored
    at = data.index(bytes(view)) + 5
    out = bytearray(data)
    out[at] ^= 0x40
    return bytes(out)


def main() -> None:
    data = kv()
    (HERE / "kv.avp").write_bytes(data)
    (HERE / "kv-damaged.avp").write_bytes(damaged(data))


if __name__ == "__main__":
    main()
