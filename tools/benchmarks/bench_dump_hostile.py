"""Peak memory and time of every avp-dump view on the hostile corpus (issue 14).

    python tools/benchmarks/bench_dump_hostile.py [--scale 16] [--timeout 120]
        [--cases a,b] [--views summary,map] [--out benchmarks/results/hostile_dump.md]

Each (case, view) runs avp-dump in its own process; the peak resident set size is that
process's own VmHWM (read from /proc at exit), the time is wall-clock. The
interpreter with numpy, zstandard and avp_codec imported is the floor every view pays; the
table shows it (the ``tiny`` row: a 300-byte valid message) so each case's cost above it reads
directly. A run past ``--timeout`` is killed and shown as a hang; a Python traceback on stderr
is shown as a crash. The corpus comes from tests/tools/dump_hostile_corpus.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
import dump_hostile_corpus as corpus  # noqa: E402
from avp_craft import DTYPE, KEY, KIND, LAYOUT, ROLE, VTYPE, M, T, u64  # noqa: E402

# view name -> the arguments after FILE (diff compares the case with itself and with tiny)
VIEWS: dict[str, list[str]] = {
    "summary": [], "verify": ["--verify"], "json": ["--json"], "facts": ["--json", "--facts"],
    "map": ["--map"], "hex": ["--hex"], "explain": ["--explain", "MID"], "issues": ["--issues"],
    "issues-json": ["--issues", "--json"], "stats": ["--stats"], "diff-self": ["diff"],
    "diff-tiny": ["diff"],
}


def tiny() -> bytes:
    """A minimal valid HIDDEN_STATE message: the baseline row."""
    return M(kind=KIND["HIDDEN_STATE"],
             entries=[(KEY["MODEL_ID"], 1, VTYPE["bytes"], bytes(range(32))),
                      (KEY["HIDDEN_SOURCE"], 1, VTYPE["u64"], u64(1))],
             tensors=[T(ROLE["HIDDEN_STATE"], DTYPE["float16"], (1, 1, 4), bytes(8),
                        layout=LAYOUT["BTD"])]).build()


# Runs avp-dump in-process and, at exit, copies /proc/self/status (VmHWM: this process's own
# peak RSS; ru_maxrss would also count the parent's pages the child had before exec).
_WRAP = """import atexit, os, sys
def _peak():
    with open('/proc/self/status') as f, open(os.environ['AVP_PEAK_OUT'], 'w') as out:
        out.write(f.read())
atexit.register(_peak)
sys.argv = ['avp-dump', *sys.argv[1:]]
from avp_tools.dump_cli import main
main()
"""


def command(view: str, path: Path, tiny_path: Path) -> list[str]:
    base = [sys.executable, "-c", _WRAP]
    if view == "diff-self":
        return [*base, "diff", str(path), str(path)]
    if view == "diff-tiny":
        return [*base, "diff", str(tiny_path), str(path)]
    args = [str(path.stat().st_size // 2) if a == "MID" else a for a in VIEWS[view]]
    return [*base, str(path), *args]


def _hwm(status_text: str) -> int:
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_one(cmd: list[str], timeout: float) -> tuple[int | None, float, float, int, str]:
    """(exit status or None when killed, wall seconds, CPU seconds, peak RSS in KiB, last
    stderr line). CPU time (user + system, from wait4) is what to compare on a shared machine."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as peak:
        env = {**os.environ, "NO_COLOR": "1", "AVP_PEAK_OUT": peak.name}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                start_new_session=True)
        seen = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                cpu = usage.ru_utime + usage.ru_stime
                return None, time.perf_counter() - t0, cpu, seen, "hang (killed)"
            with contextlib.suppress(OSError, ValueError):  # for a run killed before atexit
                seen = max(seen, _hwm(Path(f"/proc/{proc.pid}/status").read_text()))
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - t0
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
        rss = max(seen, _hwm(Path(peak.name).read_text()))
    lines = [ln for ln in text.splitlines() if ln.strip()]
    last = "crash: " + lines[-1] if "Traceback" in text else (lines[-1] if lines else "")
    return proc.returncode, elapsed, usage.ru_utime + usage.ru_stime, rss, last[:100]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=16)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--cases", default="")
    ap.add_argument("--views", default="")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--rows", type=Path, help="also write the raw rows as JSON here")
    ap.add_argument("--before", type=Path,
                    help="rows JSON of an earlier avp-dump: add a before/after comparison")
    args = ap.parse_args(argv)
    names = args.cases.split(",") if args.cases else ["tiny", *corpus.CASES]
    views = args.views.split(",") if args.views else list(VIEWS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="avp-hostile-") as tmp:
        tiny_path = Path(tmp) / "tiny.avp"
        tiny_path.write_bytes(tiny())
        for name in names:
            data = tiny() if name == "tiny" else corpus.build(name, args.scale)
            path = Path(tmp) / f"{name}.avp"
            path.write_bytes(data)
            for view in views:
                code, secs, cpu, rss, last = run_one(command(view, path, tiny_path),
                                                     args.timeout)
                rows.append((name, len(data), view, code, secs, cpu, rss, last))
                print(f"{name:32} {view:12} exit={code} {secs:7.2f}s cpu {cpu:7.2f}s "
                      f"{rss / 1024:8.1f} MiB {last}", flush=True)
            if name != "tiny":
                path.unlink()
    if args.rows:
        args.rows.write_text(json.dumps(rows), "utf-8")
    if args.out:
        text = report(rows, args.scale)
        if args.before:
            text += compare([tuple(r) for r in json.loads(args.before.read_text())], rows)
        args.out.write_text(text, "utf-8")
    bad = [r for r in rows if r[3] is None or r[7].startswith("crash")]
    return 1 if bad else 0


Row = tuple[str, int, str, int | None, float, float, int, str]


def report(rows: list[Row], scale: float) -> str:
    base = {r[2]: r for r in rows if r[0] == "tiny"}
    load = os.getloadavg()[0]
    out = ["# avp-dump on the hostile corpus", "",
           f"`python tools/benchmarks/bench_dump_hostile.py --scale {scale:g} --out "
           "benchmarks/results/hostile_dump.md`: every view of `avp-dump` on every case of "
           "`tests/tools/dump_hostile_corpus.py` (scale 16: the sizes of issue 14's report), one "
           "process each, on the 2-core development machine shared with other jobs (load "
           f"average {load:.1f} at the end of the run: compare CPU seconds, not wall time). "
           "Peak RSS is the process's own VmHWM; `tiny` (a 300-byte valid message) is the floor "
           "of interpreter + numpy + avp_codec every run pays, and its CPU time the start-up. "
           "Exit 0 valid, 1 invalid/different, 2 usage or unreadable input, 3 internal error.",
           "", "## Worst case per view", "",
           "| view | worst peak RSS | above the floor | case | most CPU | above start-up | case |",
           "|---|---:|---:|---|---:|---:|---|"]
    for view in dict.fromkeys(r[2] for r in rows):
        mine = [r for r in rows if r[2] == view and r[0] != "tiny"]
        if not mine:
            continue
        big = max(mine, key=lambda r: r[6])
        slow = max(mine, key=lambda r: r[5])
        floor = base[view][6] if view in base else 0
        start = base[view][5] if view in base else 0.0
        out.append(f"| {view} | {big[6] / 1024:.1f} MiB | {(big[6] - floor) / 1024:+.1f} MiB | "
                   f"{big[0]} | {slow[5]:.2f} s | {slow[5] - start:+.2f} s | {slow[0]} |")
    out += ["", "## Every run", "",
            "| case | bytes | view | exit | wall s | CPU s | peak RSS | stderr (last line) |",
            "|---|---:|---|---:|---:|---:|---:|---|"]
    for name, size, view, code, secs, cpu, rss, last in rows:
        shown = "hang" if code is None else str(code)
        out.append(f"| {name} | {size:,} | {view} | {shown} | {secs:.2f} | {cpu:.2f} | "
                   f"{rss / 1024:.1f} MiB | {last.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def compare(before: list[Any], after: list[Row]) -> str:
    """Before/after per view: worst peak RSS and most CPU over the cases both runs have."""
    names = {r[0] for r in before} & {r[0] for r in after} - {"tiny"}
    out = ["", "## Before and after", "",
           "The same corpus through the avp-dump of the previous main (a `hang` is a run killed "
           "at the earlier run's timeout, its CPU time then a lower bound).", "",
           "| view | before: worst peak RSS | after | before: most CPU | after | "
           "before: hangs or crashes | after |", "|---|---:|---:|---:|---:|---:|---:|"]
    for view in dict.fromkeys(r[2] for r in after):
        b = [r for r in before if r[2] == view and r[0] in names]
        a = [r for r in after if r[2] == view and r[0] in names]
        if not a or not b:
            continue

        def bad(rs: list[Any]) -> int:
            return sum(1 for r in rs if r[3] is None or str(r[7]).startswith("crash"))

        out.append(f"| {view} | {max(r[6] for r in b) / 1024:.1f} MiB | "
                   f"{max(r[6] for r in a) / 1024:.1f} MiB | {max(r[5] for r in b):.2f} s | "
                   f"{max(r[5] for r in a):.2f} s | {bad(b)} | {bad(a)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
