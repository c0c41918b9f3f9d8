"""The agent-chain and GPU benchmarks run end to end (short settings) and report consistently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_gpu_bench_skips_cleanly_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the skip path is not taken here")
    p = _run("benchmarks/gpu_bench.py")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "skipped, CUDA is not available" in p.stdout


def test_gpu_bench_logic_on_a_tiny_cpu_config(tmp_path: Path) -> None:
    p = _run("benchmarks/gpu_bench.py", "--device", "cpu", "--tiny", "--out-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "gpu_bench_tiny.json").read_text())
    # The tiny config: 2 layers x (K, V) x 2 kv heads x head_dim 16 x bf16, for the prompt plus
    # the latent steps.
    tokens = r["prompt_tokens"] + r["latent_steps"]
    assert r["kv_bytes"] == 2 * 2 * 2 * 16 * 2 * tokens
    assert r["message_bytes"] > r["kv_bytes"]  # headers, descriptors, token ids, alignment
    assert 0 < r["codec_share"] < 1
    assert r["pipeline_seconds"] > r["think_seconds"]
    assert "GPU benchmark on cpu" in (tmp_path / "gpu_bench_tiny.md").read_text()


@pytest.mark.slow
def test_chain_bench_quick(tmp_path: Path) -> None:
    p = _run("benchmarks/chain_bench.py", "--quick", "--out-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((tmp_path / "chain_bench_quick.json").read_text())
    for n in ("2", "4"):
        row = res["summary"][n]
        runs = [r for r in res["runs"] if r["agents"] == int(n)]
        text = sum(r["tokens"] for r in runs if r["mode"] == "text")
        avp = sum(r["tokens"] for r in runs if r["mode"] == "avp")
        assert row["token_reduction"] == pytest.approx(1 - avp / text)
        for r in runs:
            assert len(r["hops"]) == int(n)
            # Every AVP hop but the last hands on a real KV_CACHE message.
            if r["mode"] == "avp":
                assert all(h["message_bytes"] > 0 for h in r["hops"][:-1])
    assert (tmp_path / "chain_bench_quick.png").stat().st_size > 0
    assert "Published anchor" in (tmp_path / "chain_bench_quick.md").read_text()
