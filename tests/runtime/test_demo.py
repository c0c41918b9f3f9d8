"""`python -m avp_runtime.demo` runs end to end (short settings): agent B is a second process
serving AVP over HTTP, agent A hands it a real KV-cache, and the .avp file A sent is valid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from avp_runtime.connector import Connector

import avp_codec as avp

pytestmark = pytest.mark.slow


def test_demo_hands_over_a_kv_cache_over_http(tmp_path: Path, smol: Connector) -> None:
    out = tmp_path / "handoff.avp"
    r = subprocess.run(
        [sys.executable, "-m", "avp_runtime.demo", "--steps", "3", "--text-tokens", "12",
         "--answer-tokens", "10", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # like the test workers (see conftest)
    )
    assert r.returncode == 0, r.stderr[-2000:]
    text = r.stdout
    assert "identical: KV-cache mode" in text and "listening at http://127.0.0.1:" in text
    assert "B's answer (AVP):" in text and "B's answer (text):" in text
    assert "3 latent steps" in text and "over HTTP/2" in text and "total" in text
    assert "KV-cache message:" in text and "avp-dump summary" in text
    assert "loading smollm2-135m-instruct" in r.stderr  # progress during loading
    msg = avp.decode_file(out)
    assert msg.kind == avp.Kind.KV_CACHE
    assert msg.get(avp.MetaKey.MODEL_ID) == smol.model_id
    assert msg.get(avp.MetaKey.CREATED_BY_STEPS) == 3
    size = out.stat().st_size
    assert f"KV-cache message: {size:,} bytes" in text
    assert f"{size / 1e6:.1f} MB over HTTP/2" in text
    # Agent B's process is gone: the demo stops what it starts.
    pid = int(text.split("agent B: pid ", 1)[1].split(",", 1)[0])
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
        f"/proc/{pid}/status").read_text().lower()
