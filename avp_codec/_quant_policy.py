"""Layer-adaptive quantization (the Q-KVComm idea, spec 12.3): measure how much each layer's
quantization hurts, then give the sensitive layers more bits within a size budget.

The model never enters this module. The caller supplies `evaluate(message) -> loss` (for
example the mean KL divergence of next-token distributions on a calibration prompt against the
unquantized cache); sensitivities are measured one layer at a time, which treats the layers'
losses as additive. That is an approximation, but the one that Q-KVComm and most mixed-precision
work use, and it needs only layers x candidates evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from . import _quant_core as core
from ._quant_message import _KV_ROLES, _quantize_kv, quant_axis, quantize_message, segments
from ._quant_settings import LayerSetting, QuantPolicy, QuantSetting
from ._registry import DTYPE_BITS, QUANT_ROLES, Dtype, Role
from .model import Message, Tensor

_UNQUANTIZED = LayerSetting(None, None)


def message_kv_bytes(msg: Message) -> int:
    """Stored bytes of the layers' KEY / VALUE tensors and their QUANT_SCALE / QUANT_ZERO_POINT
    tensors: the size a budget ratio refers to, comparable before and after quantization."""
    return sum(
        t.stored_length
        for t in msg.tensors
        if t.layer is not None and (t.role in _KV_ROLES or t.role in QUANT_ROLES)
    )


def _tile_bytes(t: Tensor, setting: QuantSetting | None, token_count: int) -> int:
    """Bytes one KEY/VALUE tile will store after quantization with `setting` (codec RAW for the
    new tensors; parameters at their requested dtype). A compressed setting's size depends on
    the data, so that tile is quantized and compressed here and its stored bytes counted."""
    if setting is None:
        return t.stored_length
    if setting.compress:
        return sum(x.stored_length for x in _quantize_kv(t, setting, token_count, 0))
    ax, parts = segments(t, setting, token_count)
    total = 0
    for start, stop, quantized in parts:
        shape = t.shape[:ax] + (stop - start,) + t.shape[ax + 1:]
        count = math.prod(shape)
        if not quantized:
            total += (count * DTYPE_BITS[t.dtype] + 7) // 8
            continue
        total += (count * setting.bits + 7) // 8
        pshape = core.param_shape(shape, quant_axis(setting, t), setting.group_size)
        per = DTYPE_BITS[Dtype(setting.param_dtype)] // 8
        total += math.prod(pshape) * per * (2 if setting.zero_point else 1)
    return total


def layer_bytes(msg: Message, ordinal: int, setting: LayerSetting) -> int:
    """Predicted stored bytes of layer `ordinal`'s KEY/VALUE tensors under `setting`."""
    count = msg.layers[ordinal].token_count
    total = 0
    for t in msg.tensors:
        if t.layer == ordinal and t.role in _KV_ROLES:
            s = setting.key if t.role == Role.KEY else setting.value
            total += _tile_bytes(t, s, count)
    return total


def policy_kv_bytes(msg: Message, policy: QuantPolicy) -> int:
    """Predicted stored bytes of all KEY/VALUE data, parameter and window tensors under
    `policy` (what quantize_message will produce, barring the float32 parameter fallback)."""
    return sum(
        layer_bytes(msg, i, policy.for_layer(layer.index)) for i, layer in enumerate(msg.layers)
    )


def measure_sensitivity(
    msg: Message,
    candidates: Sequence[LayerSetting],
    evaluate: Callable[[Message], float],
) -> list[list[float]]:
    """sensitivity[layer ordinal][candidate]: evaluate() of the message with only that layer
    quantized with that candidate (all other layers left as they are)."""
    out: list[list[float]] = []
    for layer in msg.layers:
        row = []
        for cand in candidates:
            policy = QuantPolicy(_UNQUANTIZED, {layer.index: cand}, method="probe")
            row.append(float(evaluate(quantize_message(msg, policy))))
        out.append(row)
    return out


def choose_policy(
    msg: Message,
    candidates: Sequence[LayerSetting],
    sensitivity: Sequence[Sequence[float]],
    budget_ratio: float,
) -> QuantPolicy:
    """Pick one candidate per layer so that the KEY/VALUE bytes are at most
    message_kv_bytes(msg) / budget_ratio while the summed sensitivity stays low.

    Greedy on the exchange rate: start with every layer on its largest candidate, then keep
    taking the step (one layer to a smaller candidate) that adds the least sensitivity per byte
    saved until the budget is met; finally spend any slack left by the last step on the upgrades
    that remove the most sensitivity per byte. Raises ValueError when even the smallest
    candidates miss the budget.
    """
    if budget_ratio <= 0 or not candidates:
        raise ValueError("need candidates and a positive budget_ratio")
    n = len(msg.layers)
    if len(sensitivity) != n or any(len(row) != len(candidates) for row in sensitivity):
        raise ValueError("sensitivity must be [layers][candidates]")
    size = [[layer_bytes(msg, i, c) for c in candidates] for i in range(n)]
    target = message_kv_bytes(msg) / budget_ratio
    # Start from each layer's largest candidate.
    pick = [row.index(max(row)) for row in size]

    def total() -> int:
        return sum(size[i][pick[i]] for i in range(n))

    while total() > target:
        best: tuple[float, int, int] | None = None
        for i in range(n):
            for c in range(len(candidates)):
                saved = size[i][pick[i]] - size[i][c]
                if saved > 0:
                    rate = (sensitivity[i][c] - sensitivity[i][pick[i]]) / saved
                    if best is None or rate < best[0]:
                        best = (rate, i, c)
        if best is None:
            raise ValueError(
                f"budget ratio {budget_ratio} is out of reach: the smallest candidates give "
                f"{message_kv_bytes(msg) / total():.2f}x"
            )
        pick[best[1]] = best[2]
    while True:
        slack = target - total()
        best_up: tuple[float, int, int] | None = None
        for i in range(n):
            for c in range(len(candidates)):
                extra = size[i][c] - size[i][pick[i]]
                gain = sensitivity[i][pick[i]] - sensitivity[i][c]
                if 0 < extra <= slack and gain > 0 and (
                    best_up is None or gain / extra > best_up[0]
                ):
                    best_up = (gain / extra, i, c)
        if best_up is None:
            break
        pick[best_up[1]] = best_up[2]
    layers = {msg.layers[i].index: candidates[pick[i]] for i in range(n)}
    # The default only matters for layers this message does not have: the largest candidate.
    default = max(candidates, key=lambda c: sum(layer_bytes(msg, i, c) for i in range(n)))
    return QuantPolicy(default, layers, method="sensitivity", budget_ratio=budget_ratio)

