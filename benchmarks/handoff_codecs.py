"""The sending side of benchmarks/handoff_bench.py: a real KV-cache and the codecs it goes by.

Each codec is a job that writes one KV_CACHE message into a writable as it is produced:

* raw, zstd, floatplane_zstd   Connector.export(dtype=bfloat16, codec=...): the cache layer by
                               layer, coded tensor by tensor (lossless);
* auto                         Connector.export(codec="auto", link_bps=..., profiles=...): the
                               lossless codec avp_codec.auto predicts fastest on this link;
* int8, int4, adaptive         export_quantized: the cache read layer by layer as bf16, each
                               KEY / VALUE tensor quantized as it is read (avp_codec.quant presets
                               int8 and int4, the adaptive 5x policy of
                               benchmarks/fidelity_bench.py) and written to a StreamEncoder at
                               once: the bytes of quantize_message over the whole export;
* auto95                       the codec avp_codec.auto chooses with a 95% top-1 agreement floor
                               (lossy codecs admitted by their committed held-out agreement).

`profiles()` measures each codec's parts on this machine for the report (encode: the job into a
sink; decode: decode + dequantize + import) and its size ratio; auto chooses by whole-handoff
timings instead (handoff_bench.calibrate, avp_codec.auto.measured_profile).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from avp_runtime import Connector, cache_io, models
from avp_runtime.connector import Context

import avp_codec as avp
from avp_codec import auto, quant

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOSSLESS = ("raw", "zstd", "floatplane_zstd")
QUANT = ("int8", "int4", "adaptive")
WHOLE = "_whole"  # suffix: a quantized codec exported whole, then streamed (the old sender)
# Held-out top-1 agreement (benchmarks/results/fidelity_heldout.json) of the lossy rows.
FIDELITY_ROWS = {"int8": "int8 (K/ch, V/tok, g64, zp)", "int4": "int4 (g64, zp)"}
DOC = ROOT / "spec" / "avp-spec.md"
PROBE_TOKENS = 512  # ~12 MB: well beyond the socket buffers, so the rate is the link's

Job = Callable[[Any], object]


def kv_digest(ctx: Context) -> str:
    """sha256 of every cache tensor of `ctx` as bfloat16 (what a lossless handoff must keep)."""
    h = hashlib.sha256()
    for st in cache_io.layer_states(ctx.cache, ctx.context_length):
        for role, t in st.tensors:
            h.update(int(role).to_bytes(2, "little"))
            h.update(cache_io.to_wire(t, torch.bfloat16).contiguous().view(torch.uint8)
                     .numpy().tobytes())
    return h.hexdigest()


def agreements(path: Path = HERE / "results" / "fidelity_heldout.json",
               adaptive_path: Path = HERE / "results" / "fidelity_adaptive_curve.json"
               ) -> dict[str, float]:
    """Held-out top-1 agreement per lossy codec: int8 / int4 from the fidelity bench's held-out
    run; adaptive (the role-adaptive preset fidelity_bench.adaptive_policy now builds) from its
    one scoring on the final held-out set of adaptive_curve.py (issue 18.5)."""
    rows = {r["codec"]: r["top1_agreement_pct"] for r in json.loads(path.read_text())["results"]}
    out = {short: float(rows[long]) for short, long in FIDELITY_ROWS.items()}
    curve = json.loads(adaptive_path.read_text())
    out["adaptive"] = float(curve["final"][curve["selected_on_development_sets"]]["top1_pct"])
    return out


_KV = (avp.Role.KEY, avp.Role.VALUE)


def tiles_out(n_tokens: int, token_offset: int, setting: quant.QuantSetting | None,
              token_count: int) -> int:
    """How many tensors quantize_message makes of one KEY / VALUE tensor with `n_tokens` tokens
    (spec 12: each quantized tile is [scale, (zero point,) codes]; the layer's first
    sink_tokens and last recent_window tokens stay unquantized tiles of one tensor each). A
    stream declares its tensor count in the header, before any tensor is quantized."""
    if setting is None:
        return 1
    lo = min(max(setting.sink_tokens - token_offset, 0), n_tokens)
    hi = max(lo, min(max(token_count - setting.recent_window - token_offset, 0), n_tokens))
    parts = ((lo, False), (hi - lo, True), (n_tokens - hi, False))
    return sum((3 if setting.zero_point else 2) if q else 1 for n, q in parts if n > 0)


def quantize_one(t: avp.Tensor, layers: list[avp.Layer], policy: quant.QuantPolicy,
                 first: int) -> list[avp.Tensor]:
    """quantize_message on one KEY / VALUE tensor, its parameter references moved to where its
    tensors land in the whole message (`first`: the index of its first output)."""
    one = avp.Message(avp.Kind.KV_CACHE, [], layers, [t])
    out = quant.quantize_message(one, policy, threads=1).tensors
    for x in out:
        q = x.quant
        if q is not None:
            x.quant = dataclasses.replace(
                q, scale_tensor=None if q.scale_tensor is None else q.scale_tensor + first,
                zero_point_tensor=None if q.zero_point_tensor is None
                else q.zero_point_tensor + first)
    return out


def message_tensors(ctx: Context) -> list[avp.Tensor]:
    """The message-level tensors of a KV_CACHE export, as Connector.export writes them."""
    out = [avp.Tensor.from_array(ctx.token_ids.contiguous(), avp.Role.TOKEN_IDS,
                                 layout=avp.Layout.BT),
           avp.Tensor.from_array(ctx.positions.contiguous(), avp.Role.POSITIONS,
                                 layout=avp.Layout.BT)]
    if ctx.attention_mask is not None:
        out.append(avp.Tensor.from_array(ctx.attention_mask.to(torch.uint8).contiguous(),
                                         avp.Role.ATTENTION_MASK, layout=avp.Layout.BT))
    return out


def export_quantized(c: Connector, ctx: Context, writable: Any,
                     policy: quant.QuantPolicy) -> int:
    """Connector.export(dtype=bfloat16) quantized per `policy` on the way, tensor by tensor:
    the same bytes as quantize_message over the whole export (tests/quality check it), but
    each tensor is read from the cache, quantized and handed to the writable before the next
    is touched, so a streaming body sends tensor i while tensor i+1 is quantized."""
    states = list(cache_io.layer_states(ctx.cache, ctx.context_length))
    layers = [st.descriptor() for st in states]
    head = message_tensors(ctx)
    plan: list[list[tuple[avp.Role, torch.Tensor, quant.QuantSetting | None]]] = []
    # Each layer's tensors are quantized under a policy of that layer's setting alone: the
    # same tensors as under the whole policy, without its JSON written out once per tensor.
    own: list[quant.QuantPolicy] = []
    count = len(head)
    for ordinal, st in enumerate(states):
        ls = policy.for_layer(layers[ordinal].index)
        own.append(quant.QuantPolicy(ls))
        row = []
        for role, t in st.tensors:
            setting = (ls.key if role == avp.Role.KEY else ls.value) if role in _KV else None
            count += tiles_out(int(t.shape[2]) if role in _KV else 0, 0, setting,
                               layers[ordinal].token_count)
            row.append((role, t, setting))
        plan.append(row)
    # The runtime's own metadata (model, tokenizer, producer, steps) plus the policy, in
    # canonical key order as quantize_message writes it.
    entries = sorted([*c._entries(ctx), avp.Entry.of(avp.MetaKey.QUANT_POLICY,
                                                     policy.to_json())], key=lambda e: e.key)
    enc = avp.StreamEncoder(writable, avp.Kind.KV_CACHE, entries, layers, count)
    for x in head:
        enc.write_tensor(x)
    n = len(head)
    for ordinal, row in enumerate(plan):
        for role, t, setting in row:
            x = avp.Tensor.from_array(cache_io.to_wire(t, torch.bfloat16), role,
                                      ordinal=ordinal,
                                      layout=avp.Layout.BHTD if role in _KV else avp.Layout.NONE)
            outs = [x] if setting is None else quantize_one(x, layers, own[ordinal], n)
            for o in outs:
                enc.write_tensor(o)
            n += len(outs)
    return int(enc.finish())


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes | memoryview) -> int:
        self.n += len(data)
        return len(data)


class _Collect:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes | memoryview) -> int:
        self.parts.append(bytes(data))
        return len(data)


@dataclass
class Sender:
    c: Connector
    ctx: Context
    probe_ctx: Context
    name: str
    tokens: int
    raw_bytes: int  # bf16 bytes of the cache tensors
    pieces: int  # tensors of the message
    digest: str
    policies: dict[str, quant.QuantPolicy]
    adaptive_seconds: float

    @classmethod
    def load(cls, tokens: int) -> Sender:
        import fidelity_bench as fb

        c = Connector.default()
        text = DOC.read_text()
        ids = [int(i) for i in c.tokenizer(text, add_special_tokens=False)["input_ids"]][:tokens]
        with torch.inference_mode():
            ctx = c.prefill(ids)
            probe = c.prefill(ids[:PROBE_TOKENS])
        states = list(cache_io.layer_states(ctx.cache, ctx.context_length))
        raw = sum(int(t.numel()) * 2 for st in states for _, t in st.tensors)
        pieces = 2 + sum(len(st.tensors) for st in states)
        t0 = time.perf_counter()
        base = avp.decode(c.export_bytes(ctx, dtype=torch.bfloat16))
        policies = {"int8": quant.preset("int8"), "int4": quant.preset("int4"),
                    "adaptive": fb.adaptive_policy(base)}
        return cls(c, ctx, probe, models.DEFAULT_MODEL,
                   len(ids), raw, pieces, kv_digest(ctx), policies, time.perf_counter() - t0)

    # -- jobs --------------------------------------------------------------------------------
    def _export(self, codec: avp.Codec | str, **kw: Any) -> Job:
        return lambda w: self.c.export(self.ctx, w, dtype=torch.bfloat16, codec=codec, **kw)

    def _quantized(self, name: str) -> Job:
        """Export, quantize and encode pipelined tensor by tensor: the cache is read one layer
        at a time, each KEY / VALUE tensor is quantized as it comes and written at once, so the
        link carries tensor i while tensor i+1 is quantized (the queue behind the writable
        bounds how far the sender runs ahead)."""
        policy = self.policies[name]
        return lambda w: export_quantized(self.c, self.ctx, w, policy)

    def _quantized_whole(self, name: str) -> Job:
        """The same message, not pipelined on the sender (handoff_ab.py's baseline): the whole
        cache is exported and quantized (quantize_message, on threads) before the first tensor
        is written."""
        policy = self.policies[name]

        def job(w: Any) -> None:
            msg = quant.quantize_message(
                avp.decode(self.c.export_bytes(self.ctx, dtype=torch.bfloat16), verify=False),
                policy)
            enc = avp.StreamEncoder(w, msg.kind, msg.entries, msg.layers, len(msg.tensors))
            for t in msg.tensors:
                enc.write_tensor(t)
            enc.finish()
        return job

    def job(self, codec: str, *, link_bps: float | None = None,
            profiles: Sequence[auto.CodecProfile] = (), floor: float = 95.0,
            transport_bps: float = math.inf, cores: float = math.inf) -> Job:
        if codec in LOSSLESS:
            return self._export(avp.Codec[codec.upper()])
        if codec in QUANT:
            return self._quantized(codec)
        if codec.endswith(WHOLE) and codec.removesuffix(WHOLE) in QUANT:
            return self._quantized_whole(codec.removesuffix(WHOLE))
        if codec == "auto":
            return self._export("auto", link_bps=link_bps, profiles=profiles,
                                transport_bps=transport_bps, cores=cores)
        if codec == "auto95":
            assert link_bps is not None
            chosen = auto.choose_codec(link_bps, profiles, floor=floor,
                                       raw_bytes=self.raw_bytes, pieces=self.pieces,
                                       transport_bps=transport_bps, cores=cores).name
            return self.job(chosen)
        raise ValueError(f"unknown codec {codec!r}")

    def probe_message(self) -> bytes:
        """A small KV_CACHE message (PROBE_TOKENS tokens) for measuring the link."""
        return self.c.export_bytes(self.probe_ctx, dtype=torch.bfloat16)

    # -- throughput on this machine --------------------------------------------------------------
    def profiles(self, names: Sequence[str], reps: int = 2) -> dict[str, auto.CodecProfile]:
        agree = agreements()
        measured: dict[str, tuple[int, float, float]] = {}
        for name in names:
            enc_s, dec_s, size = [], [], 0
            for _ in range(reps):
                sink = _Collect()
                t0 = time.perf_counter()
                self.job(name)(sink)
                enc_s.append(time.perf_counter() - t0)
                wire = b"".join(sink.parts)
                size = len(wire)
                t0 = time.perf_counter()
                self.c.import_(wire, dtype=torch.bfloat16)
                dec_s.append(time.perf_counter() - t0)
            measured[name] = (size, min(enc_s), min(dec_s))
        raw_size = measured["raw"][0]  # size ratios are against the raw message (raw: 1)
        return {name: auto.CodecProfile(name, raw_size / size, self.raw_bytes / enc,
                                        self.raw_bytes / dec, name in LOSSLESS, agree.get(name))
                for name, (size, enc, dec) in measured.items()}
