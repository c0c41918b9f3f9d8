"""``load_kernels``: pay the compiled kernels' one-time set-up at a moment the caller chooses.

The kernels (``_jit``) are loaded on first use: importing numba and llvmlite and loading each
kernel from numba's on-disk cache (compiling it when the cache is cold) costs about a second and
about 100 MB of resident memory, once per process. A server would otherwise pay that inside its
first request that quantizes, dequantizes or runs floatplane_zstd; calling ``load_kernels()`` at
start-up moves it there, so every request costs only what its input asks for. A one-shot process
(a CLI) need not call it, or may set ``AVP_KERNELS=numpy`` to skip the kernels altogether.
"""

from __future__ import annotations

import numpy as np

from . import _copy_kernels, _jit
from ._builders import kv_cache_from_arrays
from ._registry import Codec
from ._whole import decode


def load_kernels() -> bool:
    """Load every compiled kernel now; True when compiled kernels are in use (numba is
    installed and ``AVP_KERNELS`` allows it), False when the numpy path runs (nothing to load).

    It runs each kernel family once on a small KV-cache through the public paths (quantize and
    dequantize at 8, 4 and 2 bits, floatplane_zstd both ways, the copy+CRC kernel), so later
    calls find them compiled. The output of any later call is the same either way."""
    if not _jit.available():
        return False
    import ml_dtypes  # the codec's own dependency: bfloat16, the usual KV dtype

    from . import quant
    from ._encode import compress_message, encode

    k = np.random.default_rng(0).standard_normal((1, 2, 64, 64), dtype=np.float32)
    for dtype in (ml_dtypes.bfloat16, np.float16, np.float32):
        x = k.astype(dtype)
        m = kv_cache_from_arrays(bytes(32), [x], [x])
        for name in ("int8", "int4", "int2"):
            quant.dequantize_message(decode(encode(quant.quantize_message(m, quant.preset(name)))))
        decode(encode(compress_message(m, Codec.FLOATPLANE_ZSTD)))
    _copy_kernels.get()
    return True
