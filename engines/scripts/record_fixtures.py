"""Record the CI fixtures (tests/engines/fixtures) from a finished `make engines` work dir:
16-token prefixes of the Transformers and vLLM messages, and real llama.cpp states of the same
16 tokens (f16 with V transposed, q8_0 and q4_0 with flash attention)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

import avp_codec as avp  # noqa: E402

N = 16


def main() -> None:
    work = C.ROOT / ".engine-work" / "pairwise"
    dest = C.ROOT / "tests" / "engines" / "fixtures"
    dest.mkdir(parents=True, exist_ok=True)
    for src, name in (("hf.avp", "smollm2_hf16.avp"), ("vllm.avp", "smollm2_vllm16.avp")):
        msg = C.prefix(avp.decode_file(work / src), N)
        (dest / name).write_bytes(avp.encode(msg))
    subprocess.run([str(C.ROOT / ".venv-llama/bin/python"), str(Path(__file__).parent /
                    "llama_side.py"), str(work), "--fixtures", str(dest)], check=True,
                   timeout=900)
    for f in sorted(dest.iterdir()):
        print(f"{f.name}: {f.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
