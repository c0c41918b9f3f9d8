#!/usr/bin/env python3
"""`make compat`: test the version ranges pyproject.toml declares, and print what was tested.

Each side is its own venv built from a hashed lock (`make compat-lock` writes them):

* ``low``: the runtime with every direct dependency at the lower bound pyproject allows;
* ``high``: the runtime with the newest release of everything;
* ``codec-low``: the codec, tools and conformance suite alone, every dependency at its floor
  (installing the runtime pulls some of those higher, so their floors are tested here).

A side is installed exactly as the project venv is (`pip --require-hashes --no-deps`, then the
project editable without dependencies), checked to hold exactly its lock, given a fresh model
cache so the GGUF -> safetensors conversion runs with that side's gguf / accelerate /
transformers, and then runs the test suites. The table goes to stdout and into compat/README.md
between its two markers. Exit status 0 only if every side held its lock, converted the models and
passed every test.

Only the standard library is used: this script runs under the project venv's interpreter but
inspects the compat venvs through their own interpreters.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".compat"
README = ROOT / "compat" / "README.md"
BEGIN, END = "<!-- compat-table:begin -->", "<!-- compat-table:end -->"

RUNTIME_TESTS = ["tests/runtime", "tests/quant", "tests/hardening", "tests/packaging"]
CODEC_TESTS = ["tests/codec", "tests/conformance", "tests/tools", "tests/spec"]
# The dependencies whose versions the table shows, in this order (canonical names).
SHOWN = [
    "transformers", "torch", "accelerate", "gguf", "safetensors", "tokenizers",
    "huggingface-hub", "sentencepiece", "numpy", "ml-dtypes", "zstandard", "construct",
    "crc32c", "click", "jsonschema", "tqdm", "matplotlib",
]
PROJECT = "avp-codec"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
TABLE_TEST = ("tests/packaging/test_compat.py"
              "::test_the_committed_table_shows_the_locked_versions_and_a_pass")
STEP_TIMEOUT = 3 * 3600  # a hang guard only: a whole side takes 10-20 min on 2 cores


@dataclass
class Side:
    name: str
    lock: str
    models: bool  # install the model packages and convert the built-in models
    tests: list[str]
    deselect: list[str] = field(default_factory=list)


SIDES = {
    "low": Side("low", "lock/compat-low.txt", True, RUNTIME_TESTS + CODEC_TESTS),
    "high": Side("high", "lock/compat-high.txt", True, RUNTIME_TESTS + CODEC_TESTS),
    "codec-low": Side(
        "codec-low", "lock/compat-codec-low.txt", False,
        ["tests/quant", "tests/packaging", *CODEC_TESTS, "tests/hardening"],
        # These import the runtime (torch, transformers), which this side does not hold.
        ["tests/hardening/test_no_pickle.py::test_imports_and_decoding_never_touch_pickle",
         "tests/spec/test_resolutions.py::test_rope_parameters_flat_or_per_layer_type"],
    ),
}


@dataclass
class Result:
    side: str
    versions: dict[str, str] = field(default_factory=dict)
    lock_diffs: list[str] = field(default_factory=list)
    build_s: float | None = None  # None: the venv already held this lock and was reused
    convert: str = "not run"
    convert_s: float = 0.0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    tests_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.lock_diffs and self.convert in ("ok", "not needed")
                and self.failed == 0 and self.passed > 0 and not self.notes)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def say(msg: str) -> None:
    print(f"[compat] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Run `cmd` in its own process group with output to `log`; kill the whole group on timeout."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=STEP_TIMEOUT)
        except BaseException:
            # Timeout or Ctrl-C: no pytest worker or converter may outlive this script.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def build_venv(side: Side, venv: Path, log: Path) -> bool:
    """(Re)create the side's venv unless it already holds exactly this lock (stamp = hash)."""
    locks = [ROOT / side.lock] + ([ROOT / "lock/models.txt"] if side.models else [])
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in locks)).hexdigest()
    stamp = venv / ".compat-stamp"
    if stamp.exists() and stamp.read_text() == digest:
        say(f"{side.name}: {venv.name} is up to date")
        return False
    shutil.rmtree(venv, ignore_errors=True)
    say(f"{side.name}: building {venv.name} from {side.lock} ...")
    py = str(venv / "bin" / "python")
    steps = [[sys.executable, "-m", "venv", "--without-pip", str(venv)],
             [sys.executable, "-m", "pip", "--python", py, "install", "-q",
              "--require-hashes", "--no-deps", "-r", str(ROOT / side.lock)]]
    if side.models:
        steps.append([py, "-m", "pip", "install", "-q", "--require-hashes", "--no-deps",
                      "-r", str(ROOT / "lock/models.txt")])
    steps.append([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                  "-e", str(ROOT)])
    for cmd in steps:
        if run(cmd, log) != 0:
            raise RuntimeError(f"{side.name}: `{' '.join(cmd[:6])} ...` failed; see {log}")
    stamp.write_text(digest)
    return True


_LIST = ("import json; from importlib import metadata; print(json.dumps({d.metadata['Name']: "
         "d.version for d in metadata.distributions()}))")


def installed(venv: Path) -> dict[str, str]:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", _LIST], capture_output=True,
                         text=True, check=True, timeout=300).stdout
    return {canonical(k): v for k, v in json.loads(out).items()}


def lock_differences(side: Side, have: dict[str, str]) -> list[str]:
    pins = lock_pins(ROOT / side.lock)
    if side.models:
        pins |= lock_pins(ROOT / "lock/models.txt")
    out = [f"{n} {have[n]} not in the lock" for n in sorted(have) if n not in pins
           and n != PROJECT]
    out += [f"{n} {have[n]} != {pins[n]}" for n in sorted(have) if n in pins
            and have[n] != pins[n]]
    out += [f"{n} missing" for n in sorted(pins) if n not in have]
    return out


_CONVERT = ("from avp_runtime import models\n"
            "for name in ('smollm2-135m-instruct', 'gemma-3-270m'):\n"
            "    models.resolve(name)\n"
            "    models.load_model(name)\n")


def junit_counts(path: Path) -> tuple[int, int, int]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return total - failed - skipped, failed, skipped


def run_side(side: Side, workers: int, keep_models: bool) -> Result:
    res = Result(side.name)
    venv = ROOT / f".venv-compat-{side.name}"
    work = WORK / side.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "run.log"
    t0 = time.perf_counter()
    if build_venv(side, venv, log):
        res.build_s = time.perf_counter() - t0
    have = installed(venv)
    res.versions = {n: have[n] for n in SHOWN if n in have}
    res.versions["python"] = python_version(venv)
    res.lock_diffs = lock_differences(side, have)
    env = dict(os.environ)
    env.pop("CI", None)  # hypothesis keeps its default (exploring) profile, as on a developer box
    py = str(venv / "bin" / "python")
    if side.models:
        cache = work / "models"
        env["AVP_MODEL_CACHE"] = str(cache)
        say(f"{side.name}: converting the built-in models into a fresh cache ...")
        t0 = time.perf_counter()
        rc = run([py, "-c", _CONVERT], log, env)
        res.convert_s = time.perf_counter() - t0
        res.convert = "ok" if rc == 0 else f"failed (exit {rc}; see {log.relative_to(ROOT)})"
    else:
        res.convert = "not needed"
    junit = work / "junit.xml"
    cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers),
           f"--junitxml={junit}", *side.tests]
    # The committed table is make compat's output, checked in CI; it cannot be current mid-run.
    for node in [*side.deselect, TABLE_TEST]:
        cmd += ["--deselect", node]
    say(f"{side.name}: pytest -n {workers} {' '.join(side.tests)} ...")
    t0 = time.perf_counter()
    rc = run(cmd, work / "pytest.log", env)
    res.tests_s = time.perf_counter() - t0
    if junit.exists():
        res.passed, res.failed, res.skipped = junit_counts(junit)
    if rc not in (0, 1):
        res.notes.append(f"pytest exited {rc}; see {(work / 'pytest.log').relative_to(ROOT)}")
    if side.models and not keep_models:
        shutil.rmtree(work / "models", ignore_errors=True)  # ~2 GB per side
    return res


def python_version(venv: Path) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import platform; print(platform.python_version())"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return out.strip()


def revision() -> str:
    """The commit the tested tree came from, marked when the tree had uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60).stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return (git("rev-parse", "--short", "HEAD") or "unknown") + (" + local changes" if dirty
                                                                  else "")


def table(results: list[Result]) -> str:
    def row(label: str, cells: list[str]) -> str:
        return "| " + " | ".join([label, *cells]) + " |"

    lines = [row("", [r.side for r in results]),
             row("---", ["---"] * len(results))]
    for name in ["python", *SHOWN]:
        lines.append(row(name, [r.versions.get(name, "-") for r in results]))
    lines.append(row("venv == lock", ["yes" if not r.lock_diffs else "NO: "
                                      + "; ".join(r.lock_diffs[:5]) for r in results]))
    lines.append(row("GGUF -> safetensors", [
        r.convert + (f" ({r.convert_s:.0f} s)" if r.convert_s else "") for r in results]))
    lines.append(row("tests passed", [str(r.passed) for r in results]))
    lines.append(row("tests failed", [str(r.failed) for r in results]))
    lines.append(row("tests skipped", [str(r.skipped) for r in results]))
    lines.append(row("wall time: venv build / tests", [
        ("reused" if r.build_s is None else f"{r.build_s:.0f} s") + f" / {r.tests_s:.0f} s"
        for r in results]))
    lines.append(row("result", ["pass" if r.ok else "FAIL" for r in results]))
    return "\n".join(lines)


def write_readme(text: str) -> None:
    doc = README.read_text()
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sides", nargs="*", default=list(SIDES), choices=list(SIDES))
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per side")
    ap.add_argument("--keep-models", action="store_true",
                    help="keep each side's converted model cache under .compat/")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)
    # A `timeout` or kill of make ends the current step's whole process group too (see run()).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = []
    for name in args.sides:
        t0 = time.perf_counter()
        try:
            res = run_side(SIDES[name], args.workers, args.keep_models)
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            res = Result(name, notes=[str(e)])
        say(f"{name}: {'pass' if res.ok else 'FAIL'} in {time.perf_counter() - t0:.0f} s")
        results.append(res)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"Run {when} at commit {revision()} on {os.cpu_count()} CPU cores "
            f"({platform.machine()}, no GPU), "
            f"`make compat COMPAT_WORKERS={args.workers} COMPAT_SIDES=\"{' '.join(args.sides)}\"`."
            f"\n\n{table(results)}")
    print(text)
    if not args.no_write:
        write_readme(text)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
