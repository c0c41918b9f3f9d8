"""How a producer wants a cache quantized: per-role settings, per-layer overrides, presets, and
their QUANT_POLICY JSON form (spec section 12.3).

Settings are producer-side choices only. A receiver never reads them: every quantized tensor's
descriptor says everything needed to dequantize it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _json as strict_json
from ._args import field_bool, field_int
from ._registry import Dtype, ErrorCode, QuantScheme
from .errors import AvpError

GroupAxis = Literal["tokens", "channels"]
"""The axis a quantization group runs along: ``"tokens"`` (per-channel groups of tokens, KIVI's
choice for keys) or ``"channels"`` (per-token groups of channels, for values)."""

_AFFINE = frozenset({Dtype.INT8, Dtype.UINT8, Dtype.INT4, Dtype.UINT4, Dtype.UINT2})
_SCALED = frozenset({Dtype.FLOAT8_E4M3FN, Dtype.FLOAT8_E5M2})
_PARAM = frozenset({Dtype.FLOAT32, Dtype.FLOAT16, Dtype.BFLOAT16})
POLICY_VERSION = 1


def _bad(msg: str) -> AvpError:
    return AvpError(ErrorCode.QUANT_PARAMS, msg, path="policy")


@dataclass(frozen=True)
class QuantSetting:
    """How to quantize one role of one layer.

    axis "tokens": groups run along the token axis, one scale per channel and group of tokens
    (KIVI's per-channel keys); "channels": groups run along head_dim, one scale per token and
    head (per-token values). recent_window keeps the layer's last tokens and sink_tokens its
    first tokens unquantized, as tiles of their own (spec 12.4). clip_search picks each group's
    range by a least-squares search over shrink ratios instead of plain min/max (AFFINE only).
    compress stores the codes with codec ZSTD and the parameter and unquantized tiles with
    BYTEPLANE_ZSTD: lossless, and 4-bit key codes of one channel cluster enough that entropy
    coding saves about a tenth of the message, which pays for finer key groups (spec 12.4).
    """

    dtype: Dtype
    axis: GroupAxis = "channels"
    group_size: int = 64
    zero_point: bool = True
    param_dtype: Dtype = Dtype.FLOAT16
    recent_window: int = 0
    sink_tokens: int = 0
    clip_search: bool = False
    compress: bool = False

    def __post_init__(self) -> None:
        d = Dtype(self.dtype)
        if d not in _AFFINE | _SCALED:
            raise _bad(f"{d.name.lower()} is not a quantized dtype")
        if d in _SCALED and (self.zero_point or self.clip_search):
            raise _bad("SCALED_FLOAT (fp8) has no zero point and no clip search")
        if self.axis not in ("tokens", "channels"):
            raise _bad(f"axis must be 'tokens' or 'channels', not {self.axis!r}")
        if not 0 <= self.group_size <= 0xFFFFFFFF:
            raise _bad("group_size must fit in u32")
        if Dtype(self.param_dtype) not in _PARAM:
            raise _bad("param_dtype must be float32, float16 or bfloat16")
        if self.recent_window < 0 or self.sink_tokens < 0:
            raise _bad("recent_window and sink_tokens must be >= 0")

    @property
    def scheme(self) -> QuantScheme:
        """AFFINE for integer codes, SCALED_FLOAT for float8 codes (spec 12)."""
        return QuantScheme.SCALED_FLOAT if self.dtype in _SCALED else QuantScheme.AFFINE

    @property
    def bits(self) -> int:
        """Bits per code: 2, 4 or 8."""
        return {Dtype.UINT2: 2, Dtype.INT4: 4, Dtype.UINT4: 4}.get(Dtype(self.dtype), 8)

    def to_json(self) -> dict[str, Any]:
        """This setting as a JSON object of the QUANT_POLICY entry (spec 12.3)."""
        return {
            "dtype": Dtype(self.dtype).name.lower(),
            "axis": self.axis,
            "group_size": self.group_size,
            "zero_point": self.zero_point,
            "param_dtype": Dtype(self.param_dtype).name.lower(),
            "recent_window": self.recent_window,
            "sink_tokens": self.sink_tokens,
            "clip_search": self.clip_search,
            "compress": self.compress,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> QuantSetting:
        """The setting a QUANT_POLICY JSON object describes (``AvpError`` QUANT_PARAMS if it
        is not one)."""
        # Exact JSON types and names (issue 14): 64.0 is not 64, "false" not false, and
        # "UINT8" or a look-alike ("u\u0131nt8") is not uint8.
        if not isinstance(obj, Mapping):
            raise _bad(f"a setting must be a JSON object, not {type(obj).__name__}")
        p = "QUANT_POLICY setting."
        try:
            return cls(
                dtype=_dtype_name(obj["dtype"], p + "dtype"),
                axis=obj["axis"],
                group_size=field_int(obj["group_size"], p + "group_size", 0xFFFFFFFF),
                zero_point=field_bool(obj["zero_point"], p + "zero_point"),
                param_dtype=_dtype_name(obj["param_dtype"], p + "param_dtype"),
                recent_window=field_int(obj.get("recent_window", 0), p + "recent_window"),
                sink_tokens=field_int(obj.get("sink_tokens", 0), p + "sink_tokens"),
                clip_search=field_bool(obj.get("clip_search", False), p + "clip_search"),
                compress=field_bool(obj.get("compress", False), p + "compress"),
            )
        except (KeyError, TypeError, ValueError, AvpError) as e:
            raise _bad(e.detail if isinstance(e, AvpError) else f"bad setting: {e}") from None


@dataclass(frozen=True)
class LayerSetting:
    """Settings for the KEY and VALUE tensors of one layer; None leaves a role unquantized."""

    key: QuantSetting | None
    value: QuantSetting | None

    def to_json(self) -> dict[str, Any]:
        """This layer's key and value settings as a JSON object (spec 12.3)."""
        return {
            "key": None if self.key is None else self.key.to_json(),
            "value": None if self.value is None else self.value.to_json(),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> LayerSetting:
        """The layer setting a QUANT_POLICY JSON object describes."""
        def one(v: Any) -> QuantSetting | None:
            return None if v is None else QuantSetting.from_json(v)

        return cls(one(obj.get("key")), one(obj.get("value")))


@dataclass(frozen=True)
class QuantPolicy:
    """A default LayerSetting plus overrides keyed by the model's layer number (layer_index)."""

    default: LayerSetting
    layers: Mapping[int, LayerSetting] = field(default_factory=dict)
    method: str = "uniform"
    budget_ratio: float | None = None

    def for_layer(self, layer_index: int) -> LayerSetting:
        """The setting of model layer ``layer_index``: its own, or the default."""
        return self.layers.get(layer_index, self.default)

    def to_json(self) -> str:
        """The QUANT_POLICY entry text: compact, keys sorted, layers in increasing order."""
        obj = {
            "avp_quant_policy": POLICY_VERSION,
            "method": self.method,
            "budget_ratio": self.budget_ratio,
            "default": self.default.to_json(),
            "layers": [
                {"layer": i, **self.layers[i].to_json()} for i in sorted(self.layers)
            ],
        }
        return json.dumps(obj, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> QuantPolicy:
        """The policy a QUANT_POLICY entry's text describes (strict JSON, spec 12.3)."""
        try:
            obj = strict_json.loads(text)
            if obj.get("avp_quant_policy") != POLICY_VERSION:
                raise ValueError("unknown policy version")
            layers = {field_int(e["layer"], "QUANT_POLICY.layers[].layer", 0xFFFFFFFF):
                      LayerSetting.from_json(e) for e in obj["layers"]}
            ratio = obj.get("budget_ratio")
            if isinstance(ratio, bool) or not isinstance(ratio, int | float | None):
                raise ValueError(f"budget_ratio must be a number or null, not {ratio!r}")
            method = obj.get("method", "uniform")
            if not isinstance(method, str):
                raise ValueError(f"method must be a string, not {method!r}")
            return cls(
                LayerSetting.from_json(obj["default"]),
                layers,
                method,
                None if ratio is None else float(ratio),
            )
        except (AvpError, ValueError, KeyError, TypeError, AttributeError) as e:
            why = e.detail if isinstance(e, AvpError) else e
            raise _bad(f"QUANT_POLICY is not a policy object: {why}") from None


def _dtype_name(v: Any, path: str) -> Dtype:
    """A dtype as the policy writes it: the registry name in lower case, byte for byte."""
    d = _DTYPE_NAMES.get(v) if isinstance(v, str) else None
    if d is None:
        raise AvpError(ErrorCode.INVALID_VALUE, f"{path}: {v!r} is not a dtype name", path=path)
    return d


_DTYPE_NAMES = {d.name.lower(): d for d in Dtype}


def _kivi(dtype: Dtype, group: int, window: int = 0, clip: bool = False) -> LayerSetting:
    """Keys per channel (groups along tokens), values per token (groups along head_dim)."""
    return LayerSetting(
        QuantSetting(dtype, "tokens", group, True, recent_window=window, clip_search=clip),
        QuantSetting(dtype, "channels", group, True, recent_window=window, clip_search=clip),
    )


def _fp8(dtype: Dtype) -> LayerSetting:
    # One scale per token and head (the whole head_dim row): fp8's exponent already adapts to
    # each element's magnitude, so a fine group buys little.
    s = QuantSetting(dtype, "channels", 0, False)
    return LayerSetting(s, s)


def _int4_fine() -> LayerSetting:
    """4-bit codes with the bits spent where the error is (measured on SmolLM2-135M, see
    benchmarks/results/fidelity_results.md): keys, whose error dominates, get groups of 32 tokens
    (values keep one group per head_dim row of up to 64); the first token, an attention sink
    whose keys are outliers, stays unquantized so it does not set its group's range; and zstd
    on the codes and byte-plane zstd on the parameters pay for the finer key groups."""
    return LayerSetting(
        QuantSetting(Dtype.UINT4, "tokens", 32, True, sink_tokens=1, compress=True),
        QuantSetting(Dtype.UINT4, "channels", 64, True, sink_tokens=1, compress=True),
    )


PRESETS: dict[str, QuantPolicy] = {
    "int8": QuantPolicy(_kivi(Dtype.UINT8, 64)),
    "fp8_e4m3fn": QuantPolicy(_fp8(Dtype.FLOAT8_E4M3FN)),
    "fp8_e5m2": QuantPolicy(_fp8(Dtype.FLOAT8_E5M2)),
    "int4": QuantPolicy(_kivi(Dtype.UINT4, 64)),
    "int4_fine": QuantPolicy(_int4_fine()),
    "int2": QuantPolicy(_kivi(Dtype.UINT2, 32, window=32)),
}
"""The named uniform policies ``preset(name)`` returns: int8, fp8_e4m3fn, fp8_e5m2, int4,
int4_fine (int4 with finer groups) and int2 (the most recent 32 tokens kept unquantized)."""


def preset(name: str) -> QuantPolicy:
    """A named uniform policy: int8, fp8_e4m3fn, fp8_e5m2, int4, int4_fine or int2 (see
    PRESETS).

    >>> from avp_codec import quant
    >>> policy = quant.preset("int4")
    >>> print(policy.default.key.dtype, policy.default.key.axis, policy.default.key.group_size)
    UINT4 tokens 64
    >>> quant.preset("int3")
    Traceback (most recent call last):
    ValueError: unknown preset 'int3'; known: ...
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
