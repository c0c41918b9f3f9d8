"""Synthetic llama.cpp states built with the converter's own writer (for layout round trips and
hostile mutations; the real-engine fixtures under fixtures/ check the format itself)."""

from __future__ import annotations

import numpy as np
from avp_engines import _ggml as G
from avp_engines import _llama_blob as B


def state(kt: G.GgmlType, vt: G.GgmlType, *, v_trans: bool = False, n: int = 5, heads: int = 3,
          head_dim: int = 64, layers: int = 2, seed: int = 0,
          positions: list[int] | None = None, form: B.Form = "blob") -> B.CacheState:
    rng = np.random.default_rng(seed)

    def side(t: G.GgmlType, trans: bool) -> tuple[int, np.ndarray]:
        x = rng.standard_normal((n, heads * head_dim)).astype(np.float32)
        if t.avp is not None:
            raw = x.astype(G.numpy_dtype(t)).view(np.uint8)
            if trans:
                el = t.block_bytes
                raw = np.ascontiguousarray(raw.reshape(n, heads * head_dim, el).transpose(1, 0, 2))
            return t.block_bytes * heads * head_dim, raw.reshape(-1)
        blk = (G.q8_0_join(*G.quantize_q8_0(x)) if t is G.Q8_0
               else G.q4_0_join(*G.quantize_q4_0(x)))
        return blk.shape[-2] * blk.shape[-1], blk.reshape(-1)

    lys = []
    for _ in range(layers):
        kr, k = side(kt, False)
        vr, v = side(vt, v_trans)
        lys.append(B.LayerData(kt, kr, memoryview(k), vt, vr, memoryview(v)))
    pos = np.asarray(positions if positions is not None else list(range(n))[::-1], "<i4")
    toks = np.arange(100, 100 + n, dtype="<i4") if form == "file" else None
    return B.CacheState(pos, 0, v_trans, lys, form=form, tokens=toks)


def blob(*args: object, **kw: object) -> bytes:
    return B.build(state(*args, **kw))  # type: ignore[arg-type]
