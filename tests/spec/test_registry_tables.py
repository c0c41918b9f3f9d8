"""The registry tables of spec/avp-spec.md are rendered from spec/registries/*.json by
spec/gen_registries.py and are never edited by hand: the text must be exactly what the generator
writes, and an edit of any cell must be noticed. (tests/codec/test_registry_drift.py compares the
JSON files with the reference codec, column by column.)"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "spec" / "avp-spec.md"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("avp_spec_gen_registries_t",
                                                  ROOT / "spec" / "gen_registries.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


gen = _load()
TEXT = SPEC.read_text("utf-8")


def test_every_table_is_what_the_generator_writes() -> None:
    assert gen.splice(TEXT, gen.render(gen.load())) == TEXT, (
        "a registry table differs from spec/registries: run python spec/gen_registries.py")


def test_check_mode_of_the_script_passes() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "spec" / "gen_registries.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _cells() -> list[tuple[str, int, int]]:
    """(registry, row, column): every column of every table, in its first, a middle and its
    last row."""
    out = []
    for name, table in gen.render(gen.load()).items():
        rows = table.splitlines()[2:]
        for r in sorted({0, len(rows) // 2, len(rows) - 1}):
            out += [(name, r, c) for c in range(rows[r].count(" | ") + 1)]
    return out


@pytest.mark.parametrize("name,row,col", _cells())
def test_an_edited_cell_is_noticed(name: str, row: int, col: int) -> None:
    """Test of the test: change one cell of the spec's table by hand; the check must fail."""
    block = re.search(rf"<!-- BEGIN REGISTRY {name} .*?-->\n(.*?)\n<!-- END REGISTRY {name} -->",
                      TEXT, re.DOTALL)
    assert block is not None
    lines = block.group(1).splitlines()
    cells = lines[2 + row].split(" | ")
    cells[col] = cells[col] + "Z" if col < len(cells) - 1 else cells[col][:-2] + "Z |"
    lines[2 + row] = " | ".join(cells)
    edited = TEXT[:block.start(1)] + "\n".join(lines) + TEXT[block.end(1):]
    assert edited != TEXT
    assert gen.splice(edited, gen.render(gen.load())) != edited


def test_pipes_in_cells_are_escaped() -> None:
    # Review item 34: `major << 16 | minor` split the VERSIONS row into an extra cell.
    table = gen.render(gen.load())["metadata_keys"]
    row = next(line for line in table.splitlines() if "| VERSIONS |" in line)
    assert "major << 16 \\| minor" in row
    assert len(re.split(r"(?<!\\)\|", row)) == len(table.splitlines()[0].split("|"))


def test_limit_defaults_render_exactly() -> None:
    assert gen.limit_default_text(1 << 40, "bytes") == "2^40 (1 TiB)"
    assert gen.limit_default_text(16 << 20, "bytes") == "16 MiB"
    assert gen.limit_default_text(1 << 20, "count") == "1048576"
    with pytest.raises(ValueError):
        gen.limit_default_text(8, "tokens")
