"""GPU benchmark: a Qwen2.5-7B-shaped model (config only, random weights, bf16) on CUDA.

    python benchmarks/gpu_bench.py                      # needs CUDA; exits 0 with a message if not
    python benchmarks/gpu_bench.py --device cpu --tiny  # the same code path on a tiny config

Measures, side by side in one run:
* agent A's two ways to prepare a handoff: 20 latent steps vs decoding 387 tokens (the published
  anchor: 0.9 s vs 15.6 s for Qwen 7B on an A100);
* the KV-cache size of the handed-over context and its AVP message size;
* export (device cache -> AVP bytes in host memory) and import (bytes -> device cache)
  throughput, next to a plain device->host and host->device copy of the same tensors;
* the codec's share of the pipeline think + export + import + B's answer (target < 5%).

Random weights make the *text* meaningless but not the timings: every matmul has the real shape.
Results go to benchmarks/results/gpu_bench.{json,md} with the device named.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

QWEN25_7B = dict(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
    num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
)
TINY = dict(
    vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
)


def _sync(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(torch: Any, device: str, fn: Any) -> tuple[Any, float]:
    _sync(torch, device)
    t0 = time.perf_counter()
    out = fn()
    _sync(torch, device)
    return out, time.perf_counter() - t0


def _decode(c: Any, ids: list[int], n: int) -> int:
    """Greedy decoding of exactly `n` tokens (no stop token: random weights)."""
    cache = c._new_cache()
    out = c.forward(cache, 0, input_ids=c._ids_tensor(ids))
    pos = len(ids)
    for _ in range(n):
        nxt = out.logits[:, -1:, :].argmax(dim=-1)
        out = c.forward(cache, pos, input_ids=nxt)
        pos += 1
    return pos


def run(device: str, tiny: bool, *, prompt_len: int, steps: int, decode: int,
        answer: int) -> dict[str, Any]:
    import torch
    from avp_runtime.connector import Connector
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import avp_codec as avp

    dtype = torch.bfloat16
    cfg = Qwen2Config(**(TINY if tiny else QWEN25_7B))
    torch.manual_seed(0)
    # Build straight in bf16 on the device: a float32 7B model would need 30 GB first.
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(default)
    c = Connector(model, None, name="qwen2.5-7b-shaped" + ("-tiny" if tiny else ""))
    # MODEL_ID hashes every weight once (on the host); done before the timed stages.
    _, t_id = _timed(torch, device, lambda: c.model_id)
    ids = torch.randint(0, cfg.vocab_size, (prompt_len,), generator=torch.Generator()
                        .manual_seed(1)).tolist()
    c.think(ids[:8], steps=1)  # warm-up: kernels, realignment matrix
    ctx, t_think = _timed(torch, device, lambda: c.think(ids, steps))
    _, t_decode = _timed(torch, device, lambda: _decode(c, ids, decode))

    buf = io.BytesIO()
    n_bytes, t_export = _timed(torch, device, lambda: c.export(ctx, buf))
    data = buf.getbuffer()
    msg, t_parse = _timed(torch, device, lambda: avp.decode(data))
    ctx_b, t_import = _timed(torch, device, lambda: c.import_(msg, device=device))
    # Baselines: the same tensors copied device->host and host->device without AVP.
    layers = [(k, v) for k, v in _kv(ctx.cache)]
    host, t_d2h = _timed(torch, device, lambda: [(k.cpu(), v.cpu()) for k, v in layers])
    _, t_h2d = _timed(torch, device, lambda: [(k.to(device), v.to(device)) for k, v in host])
    kv_bytes = ctx.nbytes()
    gen_ids = torch.randint(0, cfg.vocab_size, (16,), generator=torch.Generator()
                            .manual_seed(2)).tolist()

    def answer_fn() -> None:
        cache = ctx_b.fork()
        out = c.forward(cache, ctx_b.context_length, input_ids=c._ids_tensor(gen_ids))
        pos = ctx_b.context_length + len(gen_ids)
        for _ in range(answer):
            out = c.forward(cache, pos, input_ids=out.logits[:, -1:, :].argmax(dim=-1))
            pos += 1

    _, t_answer = _timed(torch, device, answer_fn)
    codec = t_export + t_parse + t_import
    pipeline = t_think + codec + t_answer
    return {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "config": "tiny" if tiny else "Qwen2.5-7B shape (random weights)",
        "dtype": "bfloat16", "prompt_tokens": prompt_len, "latent_steps": steps,
        "decode_tokens": decode, "answer_tokens": answer,
        "think_seconds": t_think, "decode_seconds": t_decode,
        "think_ms_per_step": 1000 * t_think / max(steps, 1),
        "decode_vs_think": t_decode / t_think,
        "kv_bytes": kv_bytes, "message_bytes": int(n_bytes),
        "kv_bytes_per_token": kv_bytes / ctx.context_length,
        "export_seconds": t_export, "decode_message_seconds": t_parse,
        "import_seconds": t_import,
        "export_gb_per_s": n_bytes / t_export / 1e9,
        "import_gb_per_s": n_bytes / (t_parse + t_import) / 1e9,
        "d2h_copy_gb_per_s": kv_bytes / t_d2h / 1e9, "h2d_copy_gb_per_s": kv_bytes / t_h2d / 1e9,
        "answer_seconds": t_answer, "pipeline_seconds": pipeline,
        "codec_share": codec / pipeline, "model_id_seconds": t_id,
    }


def _kv(cache: Any) -> list[tuple[Any, Any]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def write(res: dict[str, Any], out_dir: Path, stem: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    r = res
    md = [
        f"# GPU benchmark on {r['device']}", "",
        f"{r['config']}, {r['dtype']}, prompt {r['prompt_tokens']} tokens.", "",
        "| stage | value |", "|---|---|",
        f"| {r['latent_steps']} latent steps | {r['think_seconds']:.3f} s "
        f"({r['think_ms_per_step']:.1f} ms/step, prompt prefill included) |",
        f"| decoding {r['decode_tokens']} tokens | {r['decode_seconds']:.3f} s "
        f"({r['decode_vs_think']:.1f}x the latent steps) |",
        f"| KV-cache handed over | {r['kv_bytes'] / 1e6:.1f} MB "
        f"({r['kv_bytes_per_token'] / 1e3:.1f} KB/token); AVP message "
        f"{r['message_bytes'] / 1e6:.1f} MB |",
        f"| export (device -> AVP bytes) | {r['export_seconds']:.3f} s, "
        f"{r['export_gb_per_s']:.2f} GB/s (plain device->host copy "
        f"{r['d2h_copy_gb_per_s']:.2f} GB/s) |",
        f"| import (bytes -> device) | {r['decode_message_seconds'] + r['import_seconds']:.3f}"
        f" s, {r['import_gb_per_s']:.2f} GB/s (plain host->device copy "
        f"{r['h2d_copy_gb_per_s']:.2f} GB/s) |",
        f"| B answers {r['answer_tokens']} tokens | {r['answer_seconds']:.3f} s |",
        f"| codec share of think + export + import + answer | {r['codec_share']:.1%} "
        "(target < 5%) |", "",
    ]
    (out_dir / f"{stem}.md").write_text("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny config (for tests on CPU)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--prompt", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--decode", type=int, default=387)
    ap.add_argument("--answer", type=int, default=64)
    args = ap.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_bench: skipped, CUDA is not available on this machine "
              "(run with --device cpu --tiny to exercise the code path)")
        return 0
    if args.tiny:
        args.prompt, args.steps, args.decode, args.answer = 16, 3, 8, 4
    res = run(args.device, args.tiny, prompt_len=args.prompt, steps=args.steps,
              decode=args.decode, answer=args.answer)
    write(res, args.out_dir, "gpu_bench_tiny" if args.tiny else "gpu_bench")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
