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


def _allocate(size: Sequence[Sequence[int]], sensitivity: Sequence[Sequence[float]],
              target: float) -> list[int] | None:
    """One option per unit (a layer, or one role of a layer) so that the summed size is at most
    `target` while the summed sensitivity stays low; None when even the smallest options miss.

    Greedy on the exchange rate: start with every unit on its largest option, then keep taking
    the step (one unit to a smaller option) that adds the least sensitivity per byte saved until
    the budget is met; finally spend the slack left by the last step on the upgrades that remove
    the most sensitivity per byte.
    """
    n = len(size)
    pick = [row.index(max(row)) for row in size]

    def total() -> int:
        return sum(size[i][pick[i]] for i in range(n))

    while total() > target:
        best: tuple[float, int, int] | None = None
        for i in range(n):
            for c in range(len(size[i])):
                saved = size[i][pick[i]] - size[i][c]
                if saved > 0:
                    rate = (sensitivity[i][c] - sensitivity[i][pick[i]]) / saved
                    if best is None or rate < best[0]:
                        best = (rate, i, c)
        if best is None:
            return None
        pick[best[1]] = best[2]
    while True:
        slack = target - total()
        best_up: tuple[float, int, int] | None = None
        for i in range(n):
            for c in range(len(size[i])):
                extra = size[i][c] - size[i][pick[i]]
                gain = sensitivity[i][pick[i]] - sensitivity[i][c]
                if 0 < extra <= slack and gain > 0 and (
                    best_up is None or gain / extra > best_up[0]
                ):
                    best_up = (gain / extra, i, c)
        if best_up is None:
            return pick
        pick[best_up[1]] = best_up[2]


def choose_policy(
    msg: Message,
    candidates: Sequence[LayerSetting],
    sensitivity: Sequence[Sequence[float]],
    budget_ratio: float,
) -> QuantPolicy:
    """Pick one candidate per layer so that the KEY/VALUE bytes are at most
    message_kv_bytes(msg) / budget_ratio while the summed sensitivity stays low (the greedy of
    _allocate). Raises ValueError when even the smallest candidates miss the budget.
    """
    if budget_ratio <= 0 or not candidates:
        raise ValueError("need candidates and a positive budget_ratio")
    n = len(msg.layers)
    if len(sensitivity) != n or any(len(row) != len(candidates) for row in sensitivity):
        raise ValueError("sensitivity must be [layers][candidates]")
    size = [[layer_bytes(msg, i, c) for c in candidates] for i in range(n)]
    pick = _allocate(size, sensitivity, message_kv_bytes(msg) / budget_ratio)
    if pick is None:
        smallest = sum(min(row) for row in size)
        raise ValueError(
            f"budget ratio {budget_ratio} is out of reach: the smallest candidates give "
            f"{message_kv_bytes(msg) / smallest:.2f}x"
        )
    layers = {msg.layers[i].index: candidates[pick[i]] for i in range(n)}
    # The default only matters for layers this message does not have: the largest candidate.
    default = max(candidates, key=lambda c: sum(layer_bytes(msg, i, c) for i in range(n)))
    return QuantPolicy(default, layers, method="sensitivity", budget_ratio=budget_ratio)


# -- one choice per layer AND role ------------------------------------------------------------
# Keys and values of one layer differ in how much their quantization hurts (keys feed the
# softmax, so their error is amplified; values are averaged), and the best key setting rarely
# pairs with the best value setting of a fixed candidate list. Choosing per role measures
# layers x (key options + value options) probes instead of layers x candidates, and lets the
# budget go exactly where it pays.

def role_bytes(msg: Message, ordinal: int, role: Role, setting: QuantSetting | None) -> int:
    """Predicted stored bytes of layer `ordinal`'s `role` (KEY or VALUE) tensors under
    `setting` (None: left as it is)."""
    if role not in _KV_ROLES:
        raise ValueError("role must be KEY or VALUE")
    count = msg.layers[ordinal].token_count
    return sum(_tile_bytes(t, setting, count) for t in msg.tensors
               if t.layer == ordinal and t.role == role)


def measure_role_sensitivity(
    msg: Message,
    key_options: Sequence[QuantSetting | None],
    value_options: Sequence[QuantSetting | None],
    evaluate: Callable[[Message], float],
) -> tuple[list[list[float]], list[list[float]]]:
    """(key_sensitivity, value_sensitivity), each [layer ordinal][option]: evaluate() of the
    message with only that layer's keys (or values) quantized with that option. An option of
    None (unquantized) is not evaluated: its sensitivity is evaluate() of `msg` itself."""
    unchanged = float(evaluate(msg)) if None in (*key_options, *value_options) else 0.0

    def row(layer_index: int, options: Sequence[QuantSetting | None], key: bool) -> list[float]:
        out = []
        for o in options:
            if o is None:
                out.append(unchanged)
                continue
            ls = LayerSetting(o, None) if key else LayerSetting(None, o)
            policy = QuantPolicy(_UNQUANTIZED, {layer_index: ls}, method="probe")
            out.append(float(evaluate(quantize_message(msg, policy))))
        return out

    keys = [row(layer.index, key_options, True) for layer in msg.layers]
    values = [row(layer.index, value_options, False) for layer in msg.layers]
    return keys, values


def choose_role_policy(
    msg: Message,
    key_options: Sequence[QuantSetting | None],
    value_options: Sequence[QuantSetting | None],
    key_sensitivity: Sequence[Sequence[float]],
    value_sensitivity: Sequence[Sequence[float]],
    budget_ratio: float,
) -> QuantPolicy:
    """Pick one key option and one value option per layer so that the KEY/VALUE bytes are at
    most message_kv_bytes(msg) / budget_ratio while the summed sensitivity (keys and values
    treated as additive, like layers) stays low. Raises ValueError when even the smallest
    options miss the budget."""
    if budget_ratio <= 0 or not key_options or not value_options:
        raise ValueError("need key and value options and a positive budget_ratio")
    n = len(msg.layers)
    for sens, opts in ((key_sensitivity, key_options), (value_sensitivity, value_options)):
        if len(sens) != n or any(len(r) != len(opts) for r in sens):
            raise ValueError("sensitivities must be [layers][options]")
    size: list[list[int]] = []
    sens_rows: list[Sequence[float]] = []
    for i in range(n):
        size.append([role_bytes(msg, i, Role.KEY, o) for o in key_options])
        sens_rows.append(key_sensitivity[i])
        size.append([role_bytes(msg, i, Role.VALUE, o) for o in value_options])
        sens_rows.append(value_sensitivity[i])
    pick = _allocate(size, sens_rows, message_kv_bytes(msg) / budget_ratio)
    if pick is None:
        smallest = sum(min(r) for r in size)
        raise ValueError(
            f"budget ratio {budget_ratio} is out of reach: the smallest options give "
            f"{message_kv_bytes(msg) / smallest:.2f}x"
        )
    layers = {
        msg.layers[i].index: LayerSetting(key_options[pick[2 * i]], value_options[pick[2 * i + 1]])
        for i in range(n)
    }
    # Layers this message does not have get the largest options.
    default = LayerSetting(
        key_options[max(range(len(key_options)), key=lambda j: size[0][j])],
        value_options[max(range(len(value_options)), key=lambda j: size[1][j])],
    )
    return QuantPolicy(default, layers, method="sensitivity", budget_ratio=budget_ratio)
