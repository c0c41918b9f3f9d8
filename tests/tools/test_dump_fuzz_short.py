"""A short coverage-guided fuzz run of the avp-dump target (fuzz/avp_fuzz_dump.py, issue 14).

Like tests/hardening/test_fuzz_short.py for the decoders: atheris in a subprocess, seeded with
the conformance vectors, the fuzz seeds and the hostile corpus at a small scale, a fixed number
of executions with a fixed seed; any exception or broken oracle (walker and decode disagreeing,
a byte map that does not cover the input) makes libFuzzer exit nonzero. Without atheris the
same target runs under avp_fuzz's seeded in-process mutation loop.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FUZZ = HERE.parents[1] / "fuzz"
RUNS = 400
HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None


def _seeds() -> dict[str, bytes]:
    sys.path.insert(0, str(FUZZ))
    sys.path.insert(0, str(HERE))
    import avp_fuzz_seeds
    import dump_hostile_corpus as corpus

    # the fuzz seeds' own messages, every 8th conformance vector, the hostile corpus (small)
    seeds = dict(avp_fuzz_seeds.built())
    vectors = sorted(avp_fuzz_seeds.vectors().items())
    seeds.update(vectors[::16])
    for name in corpus.CASES:
        data = corpus.build(name, 1 / 64)
        if len(data) <= 16384:
            seeds[f"hostile-{name}"] = data
    return seeds


def test_dump_target_short_run(tmp_path: Path) -> None:
    seeds = _seeds()
    assert len(seeds) >= 50, "seed corpus went missing"
    if not HAVE_ATHERIS:
        import avp_fuzz
        import avp_fuzz_dump

        n = avp_fuzz.run_inprocess(avp_fuzz_dump.target_dump, list(seeds.values()), RUNS, 1)
        assert n == len(seeds) + RUNS
        return
    cdir = tmp_path / "corpus"
    cdir.mkdir()
    for name, data in seeds.items():
        (cdir / name).write_bytes(data)
    art = tmp_path / "artifacts"
    art.mkdir()
    # Through a launcher: Linux carries the peak RSS of a fork+exec parent (a pytest worker
    # that loaded models: 3 GB) into the child, where libFuzzer's -rss_limit_mb reads it.
    proc = subprocess.run(
        [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))",
         sys.executable, str(FUZZ / "avp_fuzz_dump.py"), f"-runs={RUNS}", "-seed=1",
         "-timeout=60", "-rss_limit_mb=2048", "-max_len=16384", f"-artifact_prefix={art}/",
         str(cdir)], capture_output=True, text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-4000:]
    crashes = sorted(p.name for p in art.iterdir())
    assert proc.returncode == 0 and not crashes, f"fuzz finding in dump: {crashes}\n{tail}"
    done = re.search(r"Done (\d+) runs", proc.stderr)
    assert done and int(done.group(1)) >= RUNS, tail
