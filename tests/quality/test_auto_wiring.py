"""codec="auto" where users call it: Connector.export(codec="auto") and the HTTP client's
measured upload rate (AvpClient.upload_bps), plus the chooser's targets at the handoff bench's
link rates."""

from __future__ import annotations

import math

import avp_http
import pytest
import torch
from avp_runtime.connector import Connector
from transformers import AutoModelForCausalLM, LlamaConfig

import avp_codec as avp
from avp_codec import auto
from avp_codec.auto import CodecProfile

# Throughputs of the order handoff_bench measures on this 2-core machine (bytes per second).
RAW = CodecProfile("raw", 1.0, 1.2e9, 9e8, True)
ZSTD = CodecProfile("zstd", 1.27, 2.5e8, 5e8, True)
PLANE = CodecProfile("floatplane_zstd", 1.47, 1.5e8, 3e8, True)
INT8 = CodecProfile("int8", 1.88, 1.8e8, 4e8, False, agreement_pct=100.0)
INT4 = CodecProfile("int4", 3.5, 1.2e8, 3e8, False, agreement_pct=95.31)
ADAPTIVE = CodecProfile("adaptive", 5.05, 8e7, 2.5e8, False, agreement_pct=94.38)
TABLE = [RAW, ZSTD, PLANE, INT8, INT4, ADAPTIVE]
LINKS = {"0.1 Gbps": 0.1e9 / 8, "1 Gbps": 1e9 / 8, "10 Gbps": 10e9 / 8, "25 Gbps": 25e9 / 8,
         "loopback": math.inf}
KV = 47_185_920  # bf16 KV bytes of SmolLM2-135M at 2048 tokens
PIECES = 62


@pytest.mark.parametrize("link", list(LINKS))
@pytest.mark.parametrize("floor", [auto.LOSSLESS, 99.5, 95.0])
@pytest.mark.parametrize("machine", [{}, {"transport_bps": 1.5e8, "cores": 2.0}])
def test_auto_within_10pct_of_best_and_never_worse_than_raw(
        link: str, floor: object, machine: dict[str, float]) -> None:
    bps = LINKS[link]
    chosen = auto.choose_codec(bps, TABLE, floor=floor, raw_bytes=KV,  # type: ignore[arg-type]
                               pieces=PIECES, **machine)
    t = auto.predict_seconds(chosen, KV, bps, PIECES, **machine)
    admitted = [p for p in TABLE if auto.admits(p, floor)]  # type: ignore[arg-type]
    best = min(auto.predict_seconds(p, KV, bps, PIECES, **machine) for p in admitted)
    assert t <= 1.10 * best
    assert t <= auto.predict_seconds(RAW, KV, bps, PIECES, **machine)
    assert auto.admits(chosen, floor)  # type: ignore[arg-type]


def test_default_floor_is_lossless() -> None:
    # On a slow link every lossy codec is predicted faster; without a floor none is chosen.
    slow = 1e6
    assert auto.predict_seconds(ADAPTIVE, KV, slow, PIECES) < auto.predict_seconds(
        PLANE, KV, slow, PIECES)
    assert auto.choose_codec(slow, TABLE, raw_bytes=KV, pieces=PIECES) is PLANE
    assert auto.choose_codec(slow, TABLE, floor=95.0, raw_bytes=KV, pieces=PIECES) is INT4
    assert auto.choose_codec(slow, TABLE, floor=0.0, raw_bytes=KV, pieces=PIECES) is ADAPTIVE
    assert auto.choose_codec(math.inf, TABLE, floor=0.0, raw_bytes=KV, pieces=PIECES) is RAW


# -- Connector.export(codec="auto") ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny() -> Connector:
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    return Connector(AutoModelForCausalLM.from_config(cfg).eval(), None, name="tiny-llama")


def _kv_codecs(wire: bytes) -> set[avp.Codec]:
    msg = avp.decode(wire)
    return {avp.Codec(t.codec) for t in msg.tensors if t.role in (avp.Role.KEY, avp.Role.VALUE)}


def test_export_auto_picks_by_link_rate_and_stays_lossless(tiny: Connector) -> None:
    ctx = tiny.prefill(list(range(1, 40)))
    ref = tiny.export_bytes(ctx, dtype=torch.bfloat16)
    fast = tiny.export_bytes(ctx, dtype=torch.bfloat16, codec="auto", link_bps=math.inf,
                             profiles=TABLE)
    slow = tiny.export_bytes(ctx, dtype=torch.bfloat16, codec="auto", link_bps=1e6,
                             profiles=TABLE)  # lossy profiles given, but export is lossless
    assert _kv_codecs(fast) == {avp.Codec.RAW} and fast == ref
    assert _kv_codecs(slow) == {avp.Codec.FLOATPLANE_ZSTD}
    a, b = avp.decode(ref), avp.decode(slow)
    for x, y in zip(a.tensors, b.tensors, strict=True):
        assert x.raw_bytes() == y.raw_bytes()  # bit-exact after decoding


@pytest.mark.parametrize("kw", [
    {},                                                      # no link rate
    {"link_bps": 1e6},                                       # no profiles (so no raw)
    {"link_bps": 0.0, "profiles": TABLE},
    {"link_bps": 1e6, "profiles": [RAW, CodecProfile("lz9", 3.0, 1e9, 1e9, True)]},
])
def test_export_auto_bad_input_is_an_avp_error(tiny: Connector, kw: dict[str, object]) -> None:
    ctx = tiny.prefill([1, 2, 3])
    with pytest.raises(avp.AvpError) as ei:
        tiny.export_bytes(ctx, codec="auto", **kw)
    assert ei.value.code == avp.ErrorCode.INVALID_VALUE


# -- the HTTP client: streamed bodies and the measured upload rate ---------------------------------
def test_client_streams_an_iterable_body_and_measures_the_upload() -> None:
    app = avp_http.AvpApp(avp_http.Mailbox(name="auto-test"))
    with avp_http.BackgroundServer(app) as srv:
        client = avp_http.AvpClient(srv.url, http2=False)
        try:
            assert client.upload_bps is None
            client.handshake(avp.hello_message("auto-client"))
            data = avp.encode(avp.text_message("x" * 300_000))
            pieces = [data[i:i + 65536] for i in range(0, len(data), 65536)]
            reply = client.deliver(iter(pieces))  # no Content-Length: sent as produced
            assert reply.json()["bytes"] == len(data)
            assert client.last_upload is not None and client.last_upload[0] == len(data)
            assert client.upload_bps is not None and client.upload_bps > 0
        finally:
            client.close()
