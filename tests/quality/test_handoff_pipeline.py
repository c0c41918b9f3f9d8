"""The handoff bench's pipelines on a tiny model, no clock: the sender's tensor-by-tensor
quantized export gives the same bytes as quantizing the whole export, and the receiver's
per-tensor dequantize/import gives the same cache as importing the whole message, through a
real avp_http server. Both kernel paths (compiled where numba is present, and numpy) run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import avp_http
import pytest
import torch
from avp_runtime.connector import Connector
from transformers import AutoModelForCausalLM, LlamaConfig

import avp_codec as avp
from avp_codec import quant
from avp_codec.quant import LayerSetting, QuantPolicy, QuantSetting

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


hc = _load("handoff_codecs")
hr = _load("handoff_receiver")

U4 = avp.Dtype.UINT4
# A per-layer, per-role policy with everything that changes the tensor count: sink tokens,
# a recent window, no zero point, an unquantized role and compressed parameters.
MIXED = QuantPolicy(
    LayerSetting(QuantSetting(avp.Dtype.INT8, "tokens", 16, False, sink_tokens=2,
                              recent_window=4),
                 QuantSetting(U4, "channels", 32, True, recent_window=5)),
    {1: LayerSetting(QuantSetting(U4, "tokens", 8, True, sink_tokens=3, compress=True),
                     None)})
POLICIES = {"int8": quant.preset("int8"), "int4": quant.preset("int4"),
            "int4_fine": quant.preset("int4_fine"), "mixed": MIXED}


@pytest.fixture(params=["default", "numpy"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test once with the process default (compiled kernels when numba is installed) and
    once with AVP_KERNELS=numpy (the numpy twins)."""
    if request.param == "numpy":
        monkeypatch.setenv("AVP_KERNELS", "numpy")
    else:
        monkeypatch.delenv("AVP_KERNELS", raising=False)
    return str(request.param)


@pytest.fixture(scope="module")
def tiny() -> Connector:
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    return Connector(AutoModelForCausalLM.from_config(cfg).eval(), None, name="tiny-llama")


class _Parts:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes | memoryview) -> int:
        self.parts.append(bytes(data))
        return len(data)


def _quantized(c: Connector, ctx: object, policy: QuantPolicy) -> tuple[bytes, list[bytes]]:
    whole = quant.quantize_message(avp.decode(c.export_bytes(ctx, dtype=torch.bfloat16)),
                                   policy)
    sink = _Parts()
    n = hc.export_quantized(c, ctx, sink, policy)
    assert n == sum(map(len, sink.parts))
    return avp.encode(whole), sink.parts


@pytest.mark.parametrize("name", list(POLICIES))
def test_streamed_quantized_export_is_the_whole_message_quantized(
        tiny: Connector, kernels: str, name: str) -> None:
    ctx = tiny.prefill(list(range(1, 40)))
    whole, parts = _quantized(tiny, ctx, POLICIES[name])
    assert b"".join(parts) == whole
    assert len(parts) > 8  # written as it went, not in one piece at the end


@pytest.mark.parametrize("setting", [
    None,
    QuantSetting(avp.Dtype.INT8, "tokens", 16, True),
    QuantSetting(avp.Dtype.INT8, "tokens", 16, False, sink_tokens=4, recent_window=4),
    QuantSetting(U4, "channels", 8, True, sink_tokens=50),   # all sink: one plain tile
    QuantSetting(U4, "channels", 8, True, recent_window=50),  # all recent
])
@pytest.mark.parametrize(("n", "offset", "count"), [(39, 0, 39), (10, 30, 39), (1, 0, 1)])
def test_tile_count_matches_quantize_message(setting: QuantSetting | None, n: int, offset: int,
                                             count: int) -> None:
    import numpy as np

    k = np.ones((1, 2, n, 16), np.float32)
    t = avp.Tensor.from_array(k, avp.Role.KEY, ordinal=0, layout=avp.Layout.BHTD,
                              token_offset=offset)
    layer = avp.Layer(0, avp.LayerKind.FULL_ATTENTION, 0, count)
    policy = QuantPolicy(LayerSetting(setting, setting))
    out = quant.quantize_message(avp.Message(avp.Kind.KV_CACHE, [], [layer], [t]), policy)
    assert hc.tiles_out(n, offset, setting, count) == len(out.tensors)


@pytest.mark.parametrize("pipelined", [True, False])
def test_receiver_prepares_tensor_by_tensor_through_a_real_server(
        tiny: Connector, kernels: str, pipelined: bool) -> None:
    """A quantized and a compressed handoff streamed to handoff_receiver.Importer on avp_http:
    the imported cache is the one Connector.import_ makes of the whole message (pipelined, and
    in handoff_ab.py's baseline mode that does everything at the end)."""
    ctx = tiny.prefill(list(range(1, 40)))
    imp = hr.Importer(tiny, pipelined=pipelined)
    app = avp_http.AvpApp(imp, avp_http.ServerConfig(answer_timeout=60.0))
    with avp_http.BackgroundServer(app) as srv:
        client = avp_http.AvpClient(srv.url, http2=False)
        try:
            client.handshake(avp.hello_message("pipeline-test",
                                               modes=[int(avp.Mode.KV_CACHE), int(avp.Mode.TEXT)],
                                               model_id=tiny.model_id,
                                               tokenizer_id=None))
            for policy in (MIXED, None):
                if policy is None:  # lossless, compressed per tensor
                    sink = _Parts()
                    tiny.export(ctx, sink, dtype=torch.bfloat16, codec=avp.Codec.ZSTD)
                    wire, parts = b"".join(sink.parts), sink.parts
                else:
                    wire, parts = _quantized(tiny, ctx, policy)
                reply = client.deliver(iter(parts)).json()
                want = hc.kv_digest(tiny.import_(wire, dtype=torch.bfloat16))
                assert reply["digest"] == want
                assert reply["quantized"] == (policy is not None)
                assert reply["t_first"] <= reply["t_done"]
        finally:
            client.close()
    assert imp.staged == {}  # every message's staging was released at its delivery
    imp.worker.shutdown()


def test_prepare_refuses_a_non_finite_tensor(tiny: Connector) -> None:
    ctx = tiny.prefill([1, 2, 3, 4])
    msg = avp.decode(tiny.export_bytes(ctx, dtype=torch.bfloat16))
    i = next(j for j, t in enumerate(msg.tensors) if t.role == avp.Role.KEY)
    bad = msg.tensors[i].array().copy()
    bad.flat[3] = math.inf
    seen = list(msg.tensors)
    seen[i] = avp.Tensor.from_array(bad, avp.Role.KEY, ordinal=0, layout=avp.Layout.BHTD)
    with pytest.raises(avp.AvpError) as ei:
        hr.prepare(seen, i)
    assert ei.value.code == avp.ErrorCode.INVALID_VALUE
