"""The README examples print what they show (issue 19.6).

tools/README.md: every ```console block is a transcript: lines starting with ``$ avp-dump`` are
run (from the repository root, on the committed example files) and must print exactly the lines
that follow them. After a deliberate output change, regenerate the transcripts with

    AVP_UPDATE_README=1 .venv/bin/python -m pytest tests/tools/test_dump_readme.py

README.md: every avp-dump command of its Tools block runs on the example files (msg.avp, a.avp and
b.avp stand for them) and prints what its comment says it shows.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from avp_tools.dump_cli import main
from click.testing import CliRunner

import avp_codec as avp

REPO = Path(__file__).resolve().parents[2]
TOOLS_README = REPO / "tools" / "README.md"
EXAMPLES = REPO / "tools" / "examples"
_BLOCK = re.compile(r"```console\n(.*?)```", re.DOTALL)


def _run(command: str) -> str:
    args = shlex.split(command)
    assert args[0] == "avp-dump", command
    old = Path.cwd()
    os.chdir(REPO)
    try:
        r = CliRunner().invoke(main, args[1:], catch_exceptions=False)
    finally:
        os.chdir(old)
    assert r.exit_code in (0, 1), (command, r.exit_code, r.output)
    return r.output


def _transcripts(text: str) -> list[tuple[str, str]]:
    """(command, expected output) of every ``$`` line of every console block."""
    out = []
    for block in _BLOCK.findall(text):
        current: list[str] = []
        command = None
        for line in block.splitlines():
            if line.startswith("$ "):
                if command is not None:
                    out.append((command, "".join(current)))
                command, current = line[2:], []
            else:
                current.append(line + "\n")
        if command is not None:
            out.append((command, "".join(current)))
    return out


def _update(text: str) -> str:
    def fill(m: re.Match[str]) -> str:
        lines = []
        for command, _ in _transcripts(m.group(0)):
            lines.append(f"$ {command}\n{_run(command)}")
        return "```console\n" + "".join(lines) + "```"

    return _BLOCK.sub(fill, text)


def test_example_files_are_what_the_readme_says() -> None:
    assert avp.decode((EXAMPLES / "kv.avp").read_bytes()).kind == avp.Kind.KV_CACHE
    with pytest.raises(avp.AvpError) as err:
        avp.decode((EXAMPLES / "kv-damaged.avp").read_bytes())
    assert err.value.code == avp.ErrorCode.DATA_CHECKSUM and err.value.path == "tensor[3].data"


def test_tools_readme_transcripts_are_exact() -> None:
    text = TOOLS_README.read_text("utf-8")
    if os.environ.get("AVP_UPDATE_README") == "1":
        text = _update(text)
        TOOLS_README.write_text(text, "utf-8")
    transcripts = _transcripts(text)
    assert len(transcripts) >= 5
    for command, expected in transcripts:
        assert expected.strip(), f"{command}: the README shows no output; regenerate"
        assert _run(command) == expected, f"{command}: output differs from tools/README.md"


def test_main_readme_commands_show_what_their_comments_say() -> None:
    text = (REPO / "README.md").read_text("utf-8")
    # the Tools section only: other sections show avp-dump on files their own commands make
    tools = text.split("\n## Tools\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in tools.splitlines() if ln.startswith("avp-dump ")]
    assert len(lines) >= 4
    subst = {"msg.avp": "tools/examples/kv-damaged.avp", "a.avp": "tools/examples/kv.avp",
             "b.avp": "tools/examples/kv-damaged.avp"}
    # what each comment promises, as words the output must contain
    promised = {"summary": ["kind", "identities", "layers", "tensors"],
                "departure": ["DATA_CHECKSUM", "R-7.4"], "every byte": ["total 1,576 of 1,576"]}
    for line in lines:
        command, _, comment = line.partition("#")
        words = [subst.get(w, w) for w in command.split()]
        out = _run(" ".join(words))
        for key, needles in promised.items():
            if key in comment:
                for needle in needles:
                    assert needle in out, (line, needle)
        if " diff " in f" {command} ":
            assert "a decoder stops at the first" in out and "tensor[3].data" in out
