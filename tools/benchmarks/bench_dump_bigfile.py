"""How long avp-dump's header-only summary takes on a multi-GB message, next to a full read.

Writes a valid KV_CACHE of ``--gb`` GB with avp_codec.StreamEncoder (never holding it whole),
then times, side by side in one run:

  summary   avp_tools.walk(mmap)  + the text summary        (reads descriptors only)
  verify    avp_tools.walk(mmap, verify_data=True)         (reads and CRCs every data byte)
  cli       `python -m avp_tools.dump_cli FILE` end to end (process start and imports included)

and prints the ratios.  Usage:  .venv/bin/python tools/benchmarks/bench_dump_bigfile.py --gb 4
"""

from __future__ import annotations

import argparse
import mmap
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from avp_tools import walk
from avp_tools._render import summary

import avp_codec as avp


def write_message(path: Path, gb: float, layers: int) -> int:
    """A KV_CACHE of bf16 K/V tensors [1, 8, T, 128], ``gb`` GB in all."""
    import ml_dtypes

    per_tensor = int(gb * 1e9) // (2 * layers)
    tokens = max(1, per_tensor // (8 * 128 * 2))
    rng = np.random.default_rng(0)
    block = rng.standard_normal((1, 8, tokens, 128), dtype=np.float32).astype(ml_dtypes.bfloat16)
    entries = [avp.Entry.of(avp.MetaKey.MODEL_ID, bytes(32)),
               avp.Entry.of(avp.MetaKey.CONTEXT_LENGTH, tokens)]
    table = [avp.Layer(i, avp.LayerKind.FULL_ATTENTION, 0, tokens) for i in range(layers)]
    with open(path, "wb") as fh:
        enc = avp.StreamEncoder(fh, avp.Kind.KV_CACHE, entries, table, 2 * layers)
        for i in range(layers):
            for role in (avp.Role.KEY, avp.Role.VALUE):
                enc.write_tensor(avp.Tensor.from_array(block, role, ordinal=i,
                                                       layout=avp.Layout.BHTD))
        return enc.finish()


def timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gb", type=float, default=4.0, help="message size in GB (default 4)")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--dir", default=None, help="where to write the file (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "big.avp"
        t_write = timed(lambda: write_message(path, args.gb, args.layers))
        size = path.stat().st_size
        print(f"message      {size / 1e9:.2f} GB, {2 * args.layers} tensors "
              f"(written in {t_write:.1f} s)")
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            lines: list[str] = []
            t_sum = timed(lambda: lines.extend(summary(walk(mm), str(path))))
            t_sum2 = timed(lambda: summary(walk(mm), str(path)))
            ok = walk(mm, verify_data=True)
            assert ok.valid, ok.issues[:3]
            t_ver = timed(lambda: walk(mm, verify_data=True))
        env = dict(os.environ, NO_COLOR="1")
        cmd = [sys.executable, "-m", "avp_tools.dump_cli", str(path)]
        t_cli = timed(lambda: subprocess.run(cmd, env=env, check=True, capture_output=True))
        t_import = timed(lambda: subprocess.run(
            [sys.executable, "-c", "import avp_tools.dump_cli"], check=True))
        print(f"summary      {t_sum * 1e3:8.2f} ms  (again: {t_sum2 * 1e3:.2f} ms)")
        print(f"verify       {t_ver * 1e3:8.1f} ms  ({size / t_ver / 1e9:.2f} GB/s)")
        print(f"cli          {t_cli * 1e3:8.1f} ms  end to end, of which {t_import * 1e3:.0f} ms "
              "is starting Python and importing")
        print(f"ratio        summary / verify = {t_sum / t_ver:.5f};  "
              f"summary reads {100 * t_sum / t_ver:.3f}% of the time a full read takes")


if __name__ == "__main__":
    main()
