"""Digests of the codec's outputs, to show a speed change leaves every byte as it was.

Quantize and dequantize for each preset (1 and 2 threads), lossless compress_message and its
decode, and direct quantize_affine / dequantize calls over every integer dtype, group sizes,
parameter dtypes, bfloat16 inputs with spikes and signed zeros, and non-finite parameters. Run it
on two versions and compare the two lines:

    git archive <before-ref> avp_codec | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before python benchmarks/codec_identity.py
    python benchmarks/codec_identity.py
"""

from __future__ import annotations

import hashlib

import ml_dtypes
import numpy as np

import avp_codec as avp
from avp_codec import _quant_core as core
from avp_codec import quant

rng = np.random.default_rng(5)


def mk(shape: tuple[int, ...], dt: object, scale: float = 1.0, spikes: bool = False
       ) -> np.ndarray:
    a = rng.standard_normal(shape, dtype=np.float32) * scale
    if spikes:
        a.reshape(-1)[::97] *= 50
    return a.astype(dt)


def messages_digest() -> str:
    h = hashlib.sha256()
    cases = []
    for dt in (ml_dtypes.bfloat16, np.float16, np.float32):
        for t in (1, 7, 64, 100, 1024):
            cases.append(([mk((1, 2, t, 64), dt, spikes=True) for _ in range(3)],
                          [mk((1, 2, t, 64), dt) for _ in range(3)]))
    cases.append(([mk((2, 8, 300, 128), ml_dtypes.bfloat16, 1e-3)],
                  [mk((2, 8, 300, 128), ml_dtypes.bfloat16, 1e4)]))
    z = np.zeros((1, 2, 70, 64), np.float32)
    z[0, 0, 5:9] = 3.0
    cases.append(([z.astype(ml_dtypes.bfloat16)], [(z - 1e-30).astype(np.float32)]))
    for k, v in cases:
        msg = avp.kv_cache_from_arrays(b"\x11" * 32, k, v)
        for name in ("int8", "int4", "int4_fine", "int2", "fp8_e4m3fn"):
            for th in (1, 2):
                wire = avp.encode(quant.quantize_message(msg, quant.preset(name), threads=th))
                h.update(wire)
                h.update(avp.encode(quant.dequantize_message(avp.decode(wire), threads=th)))
        for c in (avp.Codec.ZSTD, avp.Codec.BYTEPLANE_ZSTD, avp.Codec.FLOATPLANE_ZSTD):
            wire = avp.encode(avp.compress_message(msg, c))
            h.update(wire)
            for t in avp.decode(wire).tensors:
                h.update(bytes(t.raw_bytes()))
    return h.hexdigest()


def arrays_digest() -> str:
    h = hashlib.sha256()
    for g in (0, 1, 3, 64, 1000):
        for shape, ax in (((3, 50, 5), 1), ((2, 4, 130), 2), ((1, 2, 70, 64), 2),
                          ((1, 2, 70, 64), 3)):
            for dt in (np.float32, ml_dtypes.bfloat16):
                x = mk(shape, dt, spikes=True)
                x.reshape(-1)[3] = -0.0
                for qd in ("int8", "uint8", "int4", "uint4", "uint2"):
                    for zp in (True, False):
                        for pd in ("float16", "bfloat16", "float32"):
                            r = core.quantize_affine(x, qd, ax, g, zero_point=zp,
                                                     param_dtype=pd, threads=2)
                            h.update(r.codes.tobytes() + r.scale.tobytes())
                            if r.zero_point is not None:
                                h.update(r.zero_point.tobytes())
                            for od in ("bfloat16", "float16", "float32"):
                                h.update(core.dequantize(r.codes, r.scale, r.zero_point, ax, g,
                                                         od).tobytes())
    codes = np.array([[1, 2, 3]], np.int8)
    for od in ("bfloat16", "float16", "float32"):
        h.update(core.dequantize(codes, np.array([[1.0, np.inf, np.nan]], np.float32), None,
                                 1, 1, od).tobytes())
        h.update(core.dequantize(codes, np.array([[3e38, 1e-45, -2.0]], np.float32),
                                 np.array([[-100.0, 0, 5]], np.float32), 1, 1, od).tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    print("messages", messages_digest())
    print("arrays", arrays_digest())
