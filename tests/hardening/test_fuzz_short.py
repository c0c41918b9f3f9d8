"""A short coverage-guided fuzz run of every target (issue 7, part 1).

Each target runs under atheris in a subprocess, seeded with the conformance vectors and the
messages of fuzz/avp_fuzz_seeds.py, for a fixed number of executions with a fixed seed. Any
exception other than AvpError, or a broken oracle (decoders disagreeing, a re-encode that does
not round-trip), makes libFuzzer exit nonzero and write the input under tmp_path. Where atheris
cannot run (it has no wheels for Python >= 3.13), the same targets run under the seeded
in-process mutation loop instead. The long campaign is documented in fuzz/README.md.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from . import _fuzzmods

# Executions per target: a few thousand; the incremental target costs ~10x a decode per input
# (it feeds every input three ways), so it gets fewer to keep the whole file under ~60 s.
RUNS = {"decode": 4000, "decoder": 1500, "handshake": 4000}
HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None


@pytest.mark.parametrize("target", sorted(RUNS))
def test_fuzz_target_short_run(target: str, tmp_path: Path) -> None:
    seeds = _fuzzmods.load("avp_fuzz_seeds")
    corpus = seeds.corpus(target)
    assert len(corpus) >= (20 if target == "handshake" else 100), "seed corpus went missing"
    if not HAVE_ATHERIS:
        fuzz = _fuzzmods.load("avp_fuzz")
        n = fuzz.run_inprocess(fuzz.TARGETS[target], list(corpus.values()), RUNS[target], 1)
        assert n == len(corpus) + RUNS[target]
        return
    cdir = tmp_path / "corpus"
    cdir.mkdir()
    for name, data in corpus.items():
        (cdir / name).write_bytes(data)
    art = tmp_path / "artifacts"
    art.mkdir()
    proc = subprocess.run(
        [sys.executable, str(_fuzzmods.FUZZ / "run.py"), target, f"-runs={RUNS[target]}",
         "-seed=1", "-timeout=30", "-rss_limit_mb=3072", "-max_len=16384",
         f"-artifact_prefix={art}/", str(cdir)],
        capture_output=True, text=True, timeout=300)
    tail = (proc.stdout + proc.stderr)[-4000:]
    crashes = sorted(p.name for p in art.iterdir())
    assert proc.returncode == 0 and not crashes, f"fuzz finding in {target}: {crashes}\n{tail}"
    done = re.search(r"Done (\d+) runs", proc.stderr)
    assert done and int(done.group(1)) >= RUNS[target], tail


def test_inprocess_mutation_loop_is_deterministic_and_clean() -> None:
    """The fallback loop itself: deterministic mutants, every target clean on them."""
    fuzz = _fuzzmods.load("avp_fuzz")
    seeds = list(_fuzzmods.load("avp_fuzz_seeds").built().values())
    import random
    a = [fuzz.mutate(random.Random(5), s, seeds) for s in seeds]
    b = [fuzz.mutate(random.Random(5), s, seeds) for s in seeds]
    assert a == b and a != seeds
    for name, target in fuzz.TARGETS.items():
        assert fuzz.run_inprocess(target, seeds, 150, seed=3) == len(seeds) + 150, name


def test_repair_reaches_past_the_checksums() -> None:
    """repair() must turn a payload flip into a semantic fault, not a checksum one, or the
    fuzzer would spend its time at the CRC checks."""
    import avp_codec as avp
    fuzz = _fuzzmods.load("avp_fuzz")
    seeds = _fuzzmods.load("avp_fuzz_seeds")
    buf = bytearray(seeds.representative()["kv_multi"])
    ref = avp.decode(bytes(buf))
    buf[32] = 99  # header.kind -> unregistered
    with pytest.raises(avp.AvpError) as raw:
        avp.decode(bytes(buf))
    assert raw.value.code == avp.ErrorCode.SECTION_CHECKSUM
    with pytest.raises(avp.AvpError) as fixed:
        avp.decode(fuzz.repair(bytes(buf)))
    assert fixed.value.code == avp.ErrorCode.UNKNOWN_KIND
    data_at = ref.tensors[1].stored.obj  # noqa: F841  (a view into buf's copy)
    # A flipped data byte with the data CRC repaired decodes to different tensor values.
    b2 = bytearray(seeds.representative()["kv_multi"])
    idx = bytes(b2).index(bytes(ref.tensors[1].stored)[:8])
    b2[idx] ^= 0x01
    got = avp.decode(fuzz.repair(bytes(b2)))
    assert bytes(got.tensors[1].stored) != bytes(ref.tensors[1].stored)
