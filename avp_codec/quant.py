"""Quantized KV-caches (spec section 12): the public API.

The sender quantizes a KV_CACHE's KEY and VALUE tensors with a named preset (``PRESETS``:
int8, fp8_e4m3fn, fp8_e5m2, int4, int4_fine, int2) or a per-layer ``QuantPolicy``; the
receiver dequantizes back to floating point, bit-exactly as spec 12.2 defines:

>>> import numpy as np, avp_codec as avp
>>> from avp_codec import quant
>>> k = np.linspace(-1, 1, 2 * 32 * 64, dtype=np.float16).reshape(1, 2, 32, 64)
>>> exported = avp.kv_cache_from_arrays(bytes(32), [k], [k])
>>> wire = avp.encode(quant.quantize_message(exported, quant.preset("int4")))
>>> len(wire) < len(avp.encode(exported)) // 2
True
>>> cache = quant.dequantize_message(avp.decode(wire))      # float tensors again
>>> cache.tensors[0].shape == k.shape, cache.get(avp.MetaKey.QUANT_POLICY) is None
(True, True)

A layer-adaptive policy (spec 12.3) comes from measure_sensitivity() with a caller-supplied
evaluate(message) -> loss, then choose_policy(..., budget_ratio); measure_role_sensitivity() and
choose_role_policy() do the same with one choice per layer and role (keys and values apart).
Everything here is numpy + ml_dtypes; torch is never imported. Dequantization costs memory in
proportion to the elements it returns, whatever the declared group size (issue 14).
"""

from ._quant_core import dequantize as dequantize_array
from ._quant_core import num_groups, param_shape
from ._quant_message import (
    dequantize_message,
    dequantize_tensor,
    quant_axis,
    quantize_array,
    quantize_message,
)
from ._quant_policy import (
    choose_policy,
    choose_role_policy,
    layer_bytes,
    measure_role_sensitivity,
    measure_sensitivity,
    message_kv_bytes,
    policy_kv_bytes,
    role_bytes,
)
from ._quant_settings import (
    PRESETS,
    GroupAxis,
    LayerSetting,
    QuantPolicy,
    QuantSetting,
    preset,
)

__all__ = [
    "PRESETS",
    "GroupAxis",
    "LayerSetting",
    "QuantPolicy",
    "QuantSetting",
    "choose_policy",
    "choose_role_policy",
    "dequantize_array",
    "dequantize_message",
    "dequantize_tensor",
    "layer_bytes",
    "measure_role_sensitivity",
    "measure_sensitivity",
    "message_kv_bytes",
    "num_groups",
    "param_shape",
    "policy_kv_bytes",
    "preset",
    "quant_axis",
    "quantize_array",
    "quantize_message",
    "role_bytes",
]
