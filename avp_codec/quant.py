"""Quantized KV-caches (spec section 12): the public API.

The runtime composes these with the codec::

    from avp_codec import quant
    msg = quant.quantize_message(exported_kv_message, quant.preset("int4"))
    wire = avp_codec.encode(msg)
    ...
    cache_msg = quant.dequantize_message(avp_codec.decode(wire))  # float tensors again

A layer-adaptive policy (spec 12.3) comes from measure_sensitivity() with a caller-supplied
evaluate(message) -> loss, then choose_policy(..., budget_ratio); measure_role_sensitivity() and
choose_role_policy() do the same with one choice per layer and role (keys and values apart).
Everything here is numpy + ml_dtypes; torch is never imported.
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
