"""pyproject.toml's ranges are the ones `make compat` tested (compat/README.md).

`make compat` is run by hand (it takes tens of minutes); these checks keep its inputs and its
committed table honest in CI: every lower bound pyproject declares for the codec and the runtime is
exactly the version the low compat locks install, both compat locks lie inside the declared
ranges, and the committed table shows the locked versions and a pass on every side.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {
    "low": ROOT / "lock" / "compat-low.txt",
    "high": ROOT / "lock" / "compat-high.txt",
    "codec-low": ROOT / "lock" / "compat-codec-low.txt",
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
HINT = "change the range, run `make compat-lock` and `make compat`, commit compat/README.md"


def pins(path: Path) -> dict[str, Version]:
    out = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line)
        if m:
            out[canonicalize_name(m.group(1))] = Version(m.group(3))
    return out


def declared(*groups: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]] if "base" in groups else []
    for g in groups:
        if g != "base":
            reqs += [Requirement(r) for r in project["optional-dependencies"][g]]
    return reqs


def floor(req: Requirement) -> Version:
    bounds = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert len(bounds) == 1, f"{req}: every range needs exactly one lower bound"
    return bounds[0]


@pytest.mark.parametrize(("side", "groups"), [
    ("codec-low", ("base",)),
    ("low", ("runtime", "torch")),
])
def test_every_lower_bound_is_what_the_low_lock_installs(side: str,
                                                         groups: tuple[str, ...]) -> None:
    locked = pins(LOCKS[side])
    wrong = []
    for req in declared(*groups):
        name = canonicalize_name(req.name)
        got = locked.get(name)
        # torch's local build tag (+cpu) is not part of the version a range talks about.
        if got is None or Version(got.public) != floor(req):
            wrong.append(f"{req}: lock/{LOCKS[side].name} pins {name}=={got}")
    assert not wrong, f"{wrong}; {HINT}"


@pytest.mark.parametrize("side", list(LOCKS))
def test_each_compat_lock_lies_inside_the_declared_ranges(side: str) -> None:
    locked = pins(LOCKS[side])
    groups = ("base",) if side == "codec-low" else ("base", "runtime", "torch")
    outside = [f"{req} vs {locked[canonicalize_name(req.name)]}" for req in declared(*groups)
               if not req.specifier.contains(locked[canonicalize_name(req.name)],
                                             prereleases=True)]
    assert not outside, f"{outside}; {HINT}"


def test_the_newest_side_runs_a_current_transformers() -> None:
    # Issue 12: the high side must cover the transformers that a fresh install gets today.
    assert pins(LOCKS["high"])["transformers"] >= Version("5.25")


def table() -> dict[str, dict[str, str]]:
    """The committed table as {row label: {side: cell}}."""
    text = (ROOT / "compat" / "README.md").read_text()
    body = text.split("<!-- compat-table:begin -->", 1)[1].split("<!-- compat-table:end -->")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in body.splitlines() if line.startswith("|")]
    assert rows, "compat/README.md holds no table: run `make compat`"
    sides = rows[0][1:]
    return {r[0]: dict(zip(sides, r[1:], strict=True)) for r in rows[2:]}


def test_the_committed_table_shows_the_locked_versions_and_a_pass() -> None:
    t = table()
    assert set(t["result"]) == set(LOCKS), f"the table covers {sorted(t['result'])}; {HINT}"
    assert set(t["result"].values()) == {"pass"}, f"{t['result']}; {HINT}"
    assert set(t["venv == lock"].values()) == {"yes"}
    labels = list(t)
    packages = labels[labels.index("python") + 1:labels.index("venv == lock")]
    assert "transformers" in packages and "torch" in packages
    stale = []
    for side, path in LOCKS.items():
        locked = pins(path)
        for name in packages:
            want = str(locked[name]) if name in locked else "-"
            if t[name][side] != want:
                stale.append(f"{side} {name}: table {t[name][side]}, lock {want}")
    assert not stale, f"{stale}; {HINT}"
