"""A short coverage-guided fuzz run of the runtime's receiving side (fuzz/avp_fuzz_runtime.py).

Like tests/hardening/test_fuzz_short.py for the codec targets: atheris in a subprocess, seeded
with the tiny receiver's own messages (KV in several codecs, quantized, batched, masked, a
projection, a TEXT) and the KV_CACHE / HIDDEN_STATE conformance vectors, a fixed number of
executions with a fixed seed. Any exception other than AvpError out of Connector.import_,
generate, projection.receive or generate_after, or an inconsistent imported context, makes
libFuzzer exit nonzero and write the input under tmp_path. Without atheris the same target runs
under the seeded in-process mutation loop.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
RUNS = 1500
HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None


# libFuzzer's -rss_limit_mb reads the process's peak RSS (ru_maxrss), and Linux carries the
# peak of the process that fork+exec'd a program into it: started straight from a pytest worker
# that has loaded real models, the fuzzer begins at the worker's 3 GB and reports an OOM on its
# first seed. A launcher process in between starts the fuzzer with its own peak (a few MB).
FRESH_PEAK = [sys.executable, "-c",
              "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"]


def _load(name: str) -> ModuleType:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(name)


def test_runtime_target_short_run(tmp_path: Path) -> None:
    corpus = _load("avp_fuzz_seeds").runtime_corpus()
    assert len(corpus) >= 30 and {"kv", "kv_int4", "projection"} <= set(corpus)
    if not HAVE_ATHERIS:
        fuzz, target = _load("avp_fuzz"), _load("avp_fuzz_runtime").target_runtime
        assert fuzz.run_inprocess(target, list(corpus.values()), RUNS, 1) == len(corpus) + RUNS
        return
    cdir, art = tmp_path / "corpus", tmp_path / "artifacts"
    cdir.mkdir()
    art.mkdir()
    for name, data in corpus.items():
        (cdir / name).write_bytes(data)
    proc = subprocess.run(
        [*FRESH_PEAK, sys.executable, str(FUZZ / "run.py"), "runtime", f"-runs={RUNS}", "-seed=1",
         "-timeout=60", "-rss_limit_mb=3072", "-max_len=65536", f"-artifact_prefix={art}/",
         str(cdir)], capture_output=True, text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-4000:]
    crashes = sorted(p.name for p in art.iterdir())
    assert proc.returncode == 0 and not crashes, f"fuzz finding: {crashes}\n{tail}"
    done = re.search(r"Done (\d+) runs", proc.stderr)
    assert done and int(done.group(1)) >= RUNS, tail


def test_runtime_target_refuses_its_seeds_mutated_in_process() -> None:
    """The fallback loop on the runtime target: deterministic, clean on a few hundred mutants."""
    fuzz, rt = _load("avp_fuzz"), _load("avp_fuzz_runtime")
    seeds = list(rt.seeds().values())
    assert fuzz.run_inprocess(rt.target_runtime, seeds, 200, seed=3) == len(seeds) + 200
