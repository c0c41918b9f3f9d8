"""Run the hostile corpus through every entry point, each run in its own memory-limited process.

    python tests/hostile/hostile_runner.py                      # everything (`make hostile`)
    python tests/hostile/hostile_runner.py --entries runtime --select "runtime*"   # a subset
    python tests/hostile/hostile_runner.py --write benchmarks/results/hostile

The runner builds the Env once (imports, a tiny receiver model, the SmolLM2 tokenizer), then for
every (case, entry point) forks a child that sets an address-space limit (RLIMIT_AS: its own
mapped size at fork + max(2 GiB, 3 x (output + 64 MiB))), resets its peak-RSS mark
(/proc/self/clear_refs), runs the entry, and reports its outcome, peak RSS growth and time
through a pipe. A child that runs past --timeout is killed (a hang).

The contract, per run:
- outcome: success, or avp_codec.AvpError with a registry code; for the CLI, exit status 0, 1
  or 2 and one line for 2; for the agent server (HTTP), 2xx or a problem+json with its AVP
  code (another 4xx problem is recorded as refused:HTTP-status-slug), and the server still
  answering afterwards; a 5xx or a server that went down is a failure. Any other exception, a
  signal or a hang is a failure.
- memory: peak RSS growth <= output the caller asked for (Case.output) + 64 MiB; a CLI view
  may also hold the text it prints (8 bytes per input byte), an A2A/MCP entry the copies of a
  payload carried inside JSON (Entry.input_factor per input byte; hostile_agents.py). For
  HTTP entries the growth is the agent server's high-water RSS above its warmed-up baseline (a
  fresh server per case, so an upper bound including the case's earlier HTTP runs; a fresh
  A2A/MCP server per run) plus the client child's.
- time: <= 5 s + 2 s per MiB of input + 1 s per 64 MiB of output and printed text: linear in
  the input (a quadratic walk or a hang of a few-MB input is far beyond it; the constant
  absorbs a shared, loaded machine).
- the case's expectation (Case.expect) where it pins one; and agreement: a message `decode`
  accepts is valid for `avp-dump --issues` (exit 0), and one it refuses is invalid (exit 1).
Exit status 0 when every run keeps the contract, 1 otherwise (the report is written either way).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import resource
import select
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import hostile_cases as hc  # noqa: E402
import hostile_entries as he  # noqa: E402

MIB = 1 << 20
SLACK = 64 * MIB
CLI_TEXT_PER_BYTE = 8


@dataclass
class Run:
    case: str
    cls: str
    owner: str
    entry: str
    group: str
    input_bytes: int
    output_bytes: int
    outcome: str  # ok / refused:CODE / exitN / crash / hang / killed:SIG / build-error
    detail: str
    peak_mb: float
    seconds: float
    mem_budget_mb: float
    time_budget_s: float
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def _child(entry: he.Entry, data: bytes, path: Path, env: he.Env, out_fd: int,
           allowance: int) -> None:
    """In the forked child: limit, measure, run, report. Never returns."""
    import avp_codec as avp

    result: dict[str, Any]
    try:
        limit = _status("VmSize") + allowance
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS mark to the current RSS
        rss0 = _status("VmRSS")
        t0 = time.perf_counter()
        try:
            summary = entry.run(data, path, env)
            outcome, detail = ("ok", summary)
            if entry.cli:
                outcome = summary.split(",")[0].replace(" ", "")  # "exit N"
        except avp.AvpError as e:
            outcome, detail = f"refused:{e.code.name}", str(e)[:300]
        except he.Refused as e:
            outcome, detail = f"refused:{e.label}", str(e)[:300]
        except BaseException as e:  # noqa: BLE001 - anything else is what we are looking for
            outcome, detail = "crash", f"{type(e).__name__}: {e}"[:300]
        seconds = time.perf_counter() - t0 - float(env.extras.get("untimed", 0.0))
        # An HTTP entry's work is done by the agent server: its growth is measured there.
        peak = max(0, _status("VmHWM") - rss0) + int(env.extras.get("server_peak", 0))
        result = {"outcome": outcome, "detail": detail, "seconds": seconds, "peak": peak}
    except BaseException as e:  # noqa: BLE001
        result = {"outcome": "crash", "detail": f"runner: {type(e).__name__}: {e}"[:300],
                  "seconds": 0.0, "peak": 0}
    payload = json.dumps(result).encode()
    try:
        os.write(out_fd, payload)
    finally:
        os._exit(0)


def run_one(case: hc.Case, entry: he.Entry, data: bytes, path: Path, env: he.Env,
            timeout: float) -> Run:
    output = case.output_for(entry.name)
    text = CLI_TEXT_PER_BYTE * len(data) if entry.cli else 0
    mem_budget = output + text + int(entry.input_factor * len(data)) + SLACK
    time_budget = 5.0 + 2 * len(data) / MIB + (output + text) / (64 * MIB)
    allowance = max(2 << 30, 3 * mem_budget)
    r, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        _child(entry, data, path, env, wfd, allowance)
    os.close(wfd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    hung = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            hung = True
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([r], [], [], min(left, 1.0))
        if ready:
            b = os.read(r, 1 << 16)
            if not b:
                break
            chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    res: dict[str, Any] = {"outcome": "crash", "detail": "", "seconds": timeout, "peak": 0}
    if hung:
        res.update(outcome="hang", detail=f"killed after {timeout:.0f} s")
    elif os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        res.update(outcome=f"killed:{sig}", detail="the child died of a signal")
    elif chunks:
        res = json.loads(b"".join(chunks))
    run = Run(case.name, case.cls, case.owner_for(entry.name), entry.name, entry.group,
              len(data), output, res["outcome"], res["detail"], round(res["peak"] / MIB, 1),
              round(res["seconds"], 3), round(mem_budget / MIB, 1), round(time_budget, 2), [])
    run.failures = judge(case, entry, run)
    return run


def judge(case: hc.Case, entry: he.Entry, run: Run) -> list[str]:
    out = []
    o = run.outcome
    if not (o == "ok" or o.startswith("refused:") or o in ("exit0", "exit1", "exit2")):
        out.append(f"contract: {o}")
    if run.peak_mb > run.mem_budget_mb:
        out.append(f"memory: {run.peak_mb} MB > {run.mem_budget_mb} MB")
    if run.seconds > run.time_budget_s and o != "hang":
        out.append(f"time: {run.seconds} s > {run.time_budget_s} s")
    want = case.expect_for(entry.name)
    if want is not None and not out:
        hit = o == want or (want == "refused" and o.startswith("refused:")) or (
            "|" in want and (o in want.split("|") or ("refused" in want.split("|")
                                                       and o.startswith("refused:"))))
        if not hit:
            out.append(f"expected {want}, got {o}")
    return out


def agreement(runs: list[Run]) -> None:
    """decode and avp-dump --issues must agree on whether a message is valid."""
    by = {(r.case, r.entry): r for r in runs}
    for (case, entry), r in by.items():
        if entry != "dump.issues" or (case, "decode") not in by:
            continue
        d = by[(case, "decode")]
        if d.outcome == "ok" and r.outcome == "exit1":
            r.failures.append("disagree: decode accepts, avp-dump --issues says invalid")
        elif d.outcome.startswith("refused:") and r.outcome == "exit0":
            r.failures.append(f"disagree: decode {d.outcome}, avp-dump --issues says valid")


def run_all(cases: list[hc.Case], entries: list[he.Entry], env: he.Env, timeout: float,
            log: Any = None) -> list[Run]:
    runs: list[Run] = []
    for case in cases:
        try:
            data = case.make(env)
        except Exception as e:  # noqa: BLE001 - a corpus bug is reported, not hidden
            runs.append(Run(case.name, case.cls, case.owner, "-", "-", 0, 0, "build-error",
                            f"{type(e).__name__}: {e}", 0, 0, 0, 0, ["corpus: build error"]))
            continue
        path = env.tmp / "case.bin"
        path.write_bytes(data)
        # The server groups (http, a2a, mcp): measured from a fresh, warmed-up server, one per
        # case (http) or, where starting one is cheap (a2a, mcp: forked), one per run.
        servers = {e.group for e in entries if e.takes == case.takes and e.group in env.extras}
        for group in sorted(servers):
            if not getattr(env.extras[group], "per_run", False):
                env.extras[group].fresh(env)
        for entry in entries:
            if entry.takes != case.takes:
                continue
            if entry.group in servers:  # a case that took the server down is reported; go on
                server = env.extras[entry.group]
                server.fresh(env) if getattr(server, "per_run", False) else server.ensure()
            run = run_one(case, entry, data, path, env, timeout)
            runs.append(run)
            if log is not None:
                mark = "ok " if run.ok else "BAD"
                print(f"{mark} {case.name[:52]:52} {entry.name:20} {run.outcome[:28]:28} "
                      f"{run.peak_mb:8.1f} MB {run.seconds:7.2f} s "
                      f"{'; '.join(run.failures)}", file=log, flush=True)
        del data
    agreement(runs)
    return runs


# ---------------------------------------------------------------- report


def worst(runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for entry in dict.fromkeys(r.entry for r in runs):
        mine = [r for r in runs if r.entry == entry]
        m = max(mine, key=lambda r: r.peak_mb)
        t = max(mine, key=lambda r: r.seconds)
        rows.append({"entry": entry, "runs": len(mine), "failures": sum(not r.ok for r in mine),
                     "peak_mb": m.peak_mb, "peak_case": m.case, "seconds": t.seconds,
                     "slowest_case": t.case})
    return rows


def markdown(runs: list[Run], meta: dict[str, Any]) -> str:
    bad = [r for r in runs if not r.ok]
    out = ["# Hostile corpus (issue 14)", "",
           f"Generated by `make hostile` (`tests/hostile/hostile_runner.py`) on "
           f"{meta['date']} at {meta.get('commit', '?')}, {meta['machine']}; {len(runs)} runs "
           f"of {meta['cases']} cases "
           f"through {meta['entries']} entry points, each in a forked child with an "
           "address-space limit. Contract: AvpError with its code or success (CLI: exit 0/1/2, "
           "one line for 2); peak RSS growth <= output asked for + 64 MiB (CLI views: + 8 "
           "bytes of printed text per input byte); time <= 5 s + 2 s per MiB of input + 1 s per "
           "64 MiB of output; decode and `avp-dump --issues` agree. HTTP entries (`http.*`) "
           "post the case to the runtime's agent server (AgentReceiver on avp_http, hypercorn) "
           "running the same tiny model in its own process: 2xx or a problem+json (its AVP code "
           "where it has one), the server answering its description after every request, and "
           "its high-water RSS above its warmed-up baseline counted (a fresh server per case: an "
           "upper bound that includes the case's earlier HTTP runs). A2A and MCP entries "
           "(`a2a.*`, `mcp.*`, tests/hostile/hostile_agents.py) send the case to avp_agents' "
           "A2A agent and MCP server hosting the same runtime agent, through the official SDKs' "
           "clients: by value (base64 inside the JSON-RPC body) and by reference (a plain HTTP "
           "host); each run gets a fresh server forked from a loaded zygote, its own high-water "
           "RSS counted, and its budget adds 16 bytes per payload byte by value (the two JSON "
           "stacks' copies of a base64 payload) or 2 by reference. The servers went down "
           f"{meta.get('server_restarts', 0)} times.", "",
           *([f"Updated: {meta['rerun']} (the runs it repeated replace the earlier ones; the "
              f"others are from {meta['updated_from'].get('commit', '?')})", ""]
             if "updated_from" in meta else []),
           f"**{len(runs) - len(bad)} of {len(runs)} runs keep the contract; {len(bad)} do "
           "not.**", "", "Failing runs by the helper whose fix their class needs: " + (", ".join(
               f"{o} {sum(r.owner == o for r in bad)}" for o in sorted({r.owner for r in bad}))
               or "none") + ".", "", "## Worst peak memory and time per entry point", "",
           "| entry point | runs | failing | worst peak RSS growth | case | worst time | case |",
           "|---|---:|---:|---:|---|---:|---|"]
    for w in worst(runs):
        out.append(f"| {w['entry']} | {w['runs']} | {w['failures']} | {w['peak_mb']} MB | "
                   f"{w['peak_case']} | {w['seconds']} s | {w['slowest_case']} |")
    out += ["", "## Failing runs, by the helper whose fix the class needs", ""]
    if not bad:
        out += ["None.", ""]
    for owner in sorted({r.owner for r in bad}):
        out += [f"### {owner}", "", "| case | class | entry | outcome | peak | time | why |",
                "|---|---|---|---|---:|---:|---|"]
        for r in bad:
            if r.owner == owner:
                why = "; ".join(r.failures).replace("|", "/")
                det = r.detail.replace("|", "/").replace("\n", " ")[:120]
                out.append(f"| {r.case} | {r.cls} | {r.entry} | {r.outcome} ({det}) | "
                           f"{r.peak_mb} MB | {r.seconds} s | {why} |")
        out.append("")
    out += ["## Every case", "", "Outcome per entry point (`ok`, the refusal's code, the CLI's "
            "exit status; **bold** = a broken contract).", ""]
    entries = list(dict.fromkeys(r.entry for r in runs if r.entry != "-"))
    for group in dict.fromkeys(r.group for r in runs if r.group != "-"):
        cols = [e for e in entries if any(r.entry == e and r.group == group for r in runs)]
        out += [f"### {group} entry points", "", "| case | class | " + " | ".join(cols) + " |",
                "|---|---|" + "---|" * len(cols)]
        for case in dict.fromkeys(r.case for r in runs):
            cells = []
            for e in cols:
                r = next((x for x in runs if x.case == case and x.entry == e), None)
                if r is None:
                    cells.append("")
                    continue
                o = r.outcome.replace("refused:", "")
                cells.append(f"**{o}**" if not r.ok else o)
            if any(cells):
                cls = next(r.cls for r in runs if r.case == case)
                out.append(f"| {case} | {cls} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def _reowned(runs: list[Run]) -> list[Run]:
    """Saved runs with their owner as the corpus now attributes it (Case.owners)."""
    cases = {c.name: c for c in hc.corpus()}
    for r in runs:
        if r.case in cases and r.entry != "-":
            r.owner = cases[r.case].owner_for(r.entry)
    return runs


def _commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--all", "--long"],
                             cwd=HERE, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", nargs="*", help="entry point names or groups (default: all)")
    ap.add_argument("--select", nargs="*",
                    help="globs matched against case names and classes (default: every case)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a run is a hang")
    ap.add_argument("--write", help="write PREFIX.md and PREFIX.json")
    ap.add_argument("--json", help="write the runs as JSON here")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--render", metavar="JSON",
                    help="only rewrite a saved JSON report and its markdown (owners as the "
                    "corpus now attributes them)")
    ap.add_argument("--update", metavar="JSON",
                    help="start from a saved JSON report: the runs of this invocation replace "
                    "its runs of the same (case, entry); the others are kept as they were")
    ap.add_argument("--failing", action="store_true",
                    help="with --update: select the cases that had a failing run there")
    args = ap.parse_args(argv)
    if args.render:
        doc = json.loads(Path(args.render).read_text())
        runs = _reowned([Run(**{k: v for k, v in r.items() if k != "ok"}) for r in doc["runs"]])
        prefix = args.write or args.render.removesuffix(".json")
        Path(prefix + ".md").write_text(markdown(runs, doc["meta"]))
        doc.update(worst=worst(runs), runs=[{**asdict(r), "ok": r.ok} for r in runs])
        Path(prefix + ".json").write_text(json.dumps(doc, indent=1) + "\n")
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    entries = he.select(args.entries)
    prev = json.loads(Path(args.update).read_text()) if args.update else None
    failing = {r["case"] for r in prev["runs"] if not r["ok"]} if prev and args.failing else None
    cases = [c for c in hc.corpus() if (not args.select or any(
        fnmatch.fnmatch(c.cls, p) or fnmatch.fnmatch(c.name, p) for p in args.select))
        and (failing is None or c.name in failing)]
    with tempfile.TemporaryDirectory(prefix="avp-hostile-") as tmp:
        env = he.Env.build(Path(tmp), http=any(e.group == "http" for e in entries))
        try:
            he.hostile_agents.start(env, {e.group for e in entries})
            t0 = time.perf_counter()
            runs = run_all(cases, entries, env, args.timeout, None if args.quiet else sys.stderr)
            wall = time.perf_counter() - t0
        finally:
            restarts = sum(env.extras[g].restarts for g in ("http", "a2a", "mcp")
                           if g in env.extras)
            env.close()
    if prev is not None:  # keep the earlier runs this invocation did not repeat
        again = {(r.case, r.entry) for r in runs}
        old = [Run(**{k: v for k, v in r.items() if k != "ok"}) for r in prev["runs"]
               if (r["case"], r["entry"]) not in again]
        runs = _reowned(old) + runs
        order = {name: i for i, name in enumerate(c.name for c in hc.corpus())}
        runs.sort(key=lambda r: order.get(r.case, len(order)))
        for r in runs:  # agreement is judged afresh over the merged runs
            r.failures = [f for f in r.failures if not f.startswith("disagree")]
        agreement(runs)
    meta = {"date": time.strftime("%Y-%m-%d"), "commit": _commit(), "machine":
            f"{os.cpu_count()} cores, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB",
            "cases": len(cases), "entries": len(entries), "wall_seconds": round(wall, 1),
            "server_restarts": restarts}
    if prev is not None:
        meta.update(cases=len({r.case for r in runs}), entries=len({r.entry for r in runs}),
                    updated_from=prev["meta"], rerun=f"{len(cases)} cases through "
                    f"{len(entries)} entry points at {meta['commit']}")
    doc = {"meta": meta, "worst": worst(runs),
           "runs": [{**asdict(r), "ok": r.ok} for r in runs]}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    if args.write:
        Path(args.write + ".json").write_text(json.dumps(doc, indent=1) + "\n")
        Path(args.write + ".md").write_text(markdown(runs, meta))
    bad = [r for r in runs if not r.ok]
    print(f"hostile corpus: {len(runs) - len(bad)}/{len(runs)} runs keep the contract "
          f"({wall:.0f} s)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
