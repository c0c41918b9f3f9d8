"""Run avp-dump views on one file inside an address-space limit (issue 14's memory contract).

    python tests/tools/dump_limited_run.py FILE BUDGET_MIB VIEW [VIEW ...]

Imports avp-dump and warms it up (a walk, a stats pass and a diff of a tiny message, so every
lazily imported module is loaded), reads this process's virtual size as the floor, then sets
RLIMIT_AS to floor + twice the size of FILE (memory-mapped; twice by diff) + BUDGET_MIB and
runs each VIEW (names as in VIEWS) in turn, in process (the UNLIMITED ones first, before the
limit is set). Prints one JSON object: per view the exit status, the
stderr lines and whether a traceback or MemoryError appeared; plus the floor and the limit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys
from pathlib import Path

VIEWS: dict[str, list[str]] = {
    "summary": [], "verify": ["--verify"], "map": ["--map"], "hex": ["--hex"],
    "explain": ["--explain", "MID"], "issues": ["--issues"], "issues-json": ["--issues", "--json"],
    "stats": ["--stats"], "diff": ["diff"], "json": ["--json"], "facts": ["--json", "--facts"],
}
# Views whose memory is avp_codec.decode's (tools/README.md): run before the limit is set, for
# the exit-status and one-line contract only.
UNLIMITED = ("json", "facts")


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _argv(view: str, path: str) -> list[str]:
    if view == "diff":
        return ["diff", path, path]
    size = os.path.getsize(path)
    return [path, *(str(size // 2) if a == "MID" else a for a in VIEWS[view])]


def run_view(main: object, argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr text) of one avp-dump invocation, stdout discarded."""
    err = io.StringIO()
    code = 0
    with open(os.devnull, "w") as out, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            main.main(argv, "avp-dump", standalone_mode=True)  # type: ignore[attr-defined]
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except MemoryError:
            code, _ = -1, err.write("MemoryError\n")
    return code, err.getvalue()


def main(argv: list[str]) -> None:
    path, budget, views = argv[0], int(argv[1]), argv[2:]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from avp_craft import DTYPE, KEY, KIND, LAYOUT, ROLE, VTYPE, M, T, u64
    from avp_tools import dump_cli

    tiny = M(kind=KIND["HIDDEN_STATE"],
             entries=[(KEY["MODEL_ID"], 1, VTYPE["bytes"], bytes(32)),
                      (KEY["HIDDEN_SOURCE"], 1, VTYPE["u64"], u64(1))],
             tensors=[T(ROLE["HIDDEN_STATE"], DTYPE["float16"], (1, 1, 4), bytes(8),
                        layout=LAYOUT["BTD"])]).build()
    warm = Path(path).with_name("warm-up.avp")
    warm.write_bytes(tiny)
    for view in VIEWS:
        run_view(dump_cli.main, _argv(view, str(warm)))
    report: dict[str, object] = {"views": {}}
    done: dict[str, object] = {}
    for view in [v for v in views if v in UNLIMITED] + [v for v in views if v not in UNLIMITED]:
        if view not in UNLIMITED and "limit" not in report:
            floor = _vm("VmSize")
            limit = floor + 2 * os.path.getsize(path) + (budget << 20)  # diff maps it twice
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            report.update(floor=floor, limit=limit)
        code, err = run_view(dump_cli.main, _argv(view, path))
        done[view] = {"exit": code, "stderr": err.splitlines(), "limited": "limit" in report,
                      "traceback": "Traceback" in err, "memory_error": "MemoryError" in err}
    report["views"] = done
    report["peak"] = _vm("VmPeak")
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
