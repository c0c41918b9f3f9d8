"""Seed inputs for the fuzz targets and the hardening tests.

``python fuzz/seeds.py OUT_DIR`` writes one corpus directory per target under OUT_DIR: every
conformance vector (conformance/vectors/**/*.avp: valid, invalid and acceptable, each already one
fault away from valid), plus the representative messages built here with the codec itself.
The handshake corpus gets the HELLO / ACCEPT / ERROR messages only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import avp_codec as avp

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "conformance" / "vectors"
MODEL_ID = bytes(range(32))
TOKENIZER_ID = bytes(range(32, 64))
KEY_ID = b"conformance-key-1"  # the fuzz key of avp_fuzz.py, so tags verify there


def _kv_tensors(layers: int, tokens: int, codec: avp.Codec = avp.Codec.RAW) -> list[avp.Tensor]:
    rng = np.random.default_rng(7)
    out = [avp.Tensor.from_array(np.arange(tokens, dtype=np.int32).reshape(1, tokens),
                                 avp.Role.TOKEN_IDS, layout=avp.Layout.BT)]
    for li in range(layers):
        for role in (avp.Role.KEY, avp.Role.VALUE):
            arr = rng.standard_normal((1, 2, tokens, 4)).astype(np.float16)
            out.append(avp.Tensor.from_array(arr, role, ordinal=li, layout=avp.Layout.BHTD,
                                             codec=codec))
    return out


def kv_multi() -> avp.Message:
    """KV_CACHE: 2 layers x K/V plus TOKEN_IDS (5 tensors), raw float16."""
    layers = [avp.Layer(i, avp.LayerKind.FULL_ATTENTION, 0, 3) for i in range(2)]
    return avp.kv_cache_message(MODEL_ID, 3, layers, _kv_tensors(2, 3),
                                tokenizer_id=TOKENIZER_ID, producer="avp-fuzz-seed")


def kv_zstd() -> avp.Message:
    """KV_CACHE whose K and V are zstd and byteplane_zstd compressed."""
    layers = [avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, 4)]
    rng = np.random.default_rng(8)
    k = (rng.standard_normal((1, 2, 4, 8)) * 0).astype(np.float16)  # compressible
    v = rng.standard_normal((1, 2, 4, 8)).astype(np.float16)
    ts = [avp.Tensor.from_array(k, avp.Role.KEY, ordinal=0, layout=avp.Layout.BHTD,
                                codec=avp.Codec.ZSTD),
          avp.Tensor.from_array(v, avp.Role.VALUE, ordinal=0, layout=avp.Layout.BHTD,
                                codec=avp.Codec.BYTEPLANE_ZSTD)]
    return avp.kv_cache_message(MODEL_ID, 4, layers, ts)


def hidden() -> avp.Message:
    rng = np.random.default_rng(9)
    return avp.hidden_state_message(MODEL_ID, rng.standard_normal((1, 2, 8)).astype(np.float32))


def text() -> avp.Message:
    return avp.text_message("The answer is 42.", role="assistant")


def hello() -> avp.Message:
    vocab = b"".join(len(t).to_bytes(4, "little") + t for t in (b"a", b"b", b"hello"))
    return avp.hello_message("seed-agent", model_id=MODEL_ID, tokenizer_id=TOKENIZER_ID,
                             vocabulary=vocab, nonce=bytes(16))


def accept() -> avp.Message:
    return avp.accept_message("seed-responder", avp.Mode.TEXT, model_id=MODEL_ID,
                              modes=(1, 2, 3), nonce=bytes(range(16)))


def error() -> avp.Message:
    return avp.error_message(avp.ErrorCode.MODEL_MISMATCH, "not my model")


def representative() -> dict[str, bytes]:
    """The messages the corruption test flips every bit of."""
    return {"kv_multi": avp.encode(kv_multi()), "kv_zstd": avp.encode(kv_zstd()),
            "text": avp.encode(text()), "hello": avp.encode(hello())}


def built() -> dict[str, bytes]:
    out = representative()
    out["hidden"] = avp.encode(hidden())
    out["accept"] = avp.encode(accept())
    out["error"] = avp.encode(error())
    import hashlib
    key = hashlib.sha256(b"avp conformance test key (public, for vectors only)").digest()
    out["text_auth"] = avp.encode(text(), auth_key=(KEY_ID, key))
    out["kv_auth"] = avp.encode(kv_multi(), auth_key=(KEY_ID, key))
    return out


def vectors() -> dict[str, bytes]:
    return {f"{p.parent.name}__{p.stem}": p.read_bytes()
            for p in sorted(VECTORS.glob("*/*.avp"))}


_HANDSHAKE_KINDS = {int(avp.Kind.HELLO), int(avp.Kind.ACCEPT), int(avp.Kind.ERROR)}


def corpus(target: str) -> dict[str, bytes]:
    seeds = {**vectors(), **built()}
    if target == "handshake":
        # kind is the first u16 of the HEADER body (offset 32 when no section precedes it)
        seeds = {k: v for k, v in seeds.items()
                 if len(v) > 34 and int.from_bytes(v[32:34], "little") in _HANDSHAKE_KINDS}
    return seeds


def runtime_corpus() -> dict[str, bytes]:
    """The runtime target's seeds: messages of its tiny receiver (avp_fuzz_runtime.py), plus the
    KV_CACHE and HIDDEN_STATE vectors (other models: refused early, still worth mutating)."""
    import avp_fuzz_runtime

    kinds = {int(avp.Kind.KV_CACHE), int(avp.Kind.HIDDEN_STATE)}
    seeds = {k: v for k, v in {**vectors(), **built()}.items()
             if len(v) > 34 and int.from_bytes(v[32:34], "little") in kinds}
    return {**seeds, **avp_fuzz_runtime.seeds()}


def write(out_dir: Path, targets: tuple[str, ...] = ("decode", "decoder", "handshake",
                                                      "runtime")) -> dict[str, int]:
    counts = {}
    for target in targets:
        d = out_dir / target
        d.mkdir(parents=True, exist_ok=True)
        seeds = runtime_corpus() if target == "runtime" else corpus(target)
        for name, data in seeds.items():
            (d / f"seed-{name}").write_bytes(data)
        counts[target] = len(seeds)
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(write(Path(sys.argv[1])))
