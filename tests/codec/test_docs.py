"""The documentation runs (issue 19.2): every ``pycon`` block of docs/embedding.md is executed
as a doctest (in order, one namespace, so the guide reads as one session) and must print what the
guide shows; every public name has a docstring; the main entry points carry runnable examples
(run by tests/codec/test_doctests.py); ``make docs`` builds the pdoc reference."""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import avp_codec as avp
from avp_codec import quant

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "embedding.md"
_BLOCK = re.compile(r"^```pycon\n(.*?)^```", re.S | re.M)


def guide_session() -> str:
    """The guide's pycon blocks, joined: a fence never ends up in an expected output."""
    blocks = _BLOCK.findall(GUIDE.read_text("utf-8"))
    assert len(blocks) >= 10, "the guide lost its examples"
    return "\n".join(blocks)


def test_embedding_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    test = doctest.DocTestParser().get_doctest(guide_session(), {}, "embedding.md",
                                               str(GUIDE), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} examples of docs/embedding.md fail (above)"
    assert result.attempted >= 40


def test_guide_covers_what_issue_19_asks() -> None:
    text = GUIDE.read_text("utf-8")
    for heading in ("Building", "Writing", "Reading a whole", "incrementally", "Streams of",
                    "Random access", "Errors", "Limits", "Authentication", "Quantization"):
        assert re.search(rf"^## .*{heading}", text, re.M), heading
    session = guide_session()
    for call in ("StreamEncoder(", "write_tensor(", "Decoder(", ".feed(", ".next_event",
                 "IndexedReader(", "decode_file(", "encode_into(", "Limits(", "auth_key=",
                 "quantize_message(", "stream=True"):
        assert call in session, call


# --- every public name has a docstring -----------------------------------------------------------

def _variable_docstrings(module: object) -> dict[str, str]:
    """Attribute docstrings (a string literal right after ``NAME = ...``, as pdoc reads them)."""
    tree = ast.parse(inspect.getsource(module))  # type: ignore[arg-type]
    found: dict[str, str] = {}
    body = tree.body
    for stmt, nxt in zip(body, body[1:], strict=False):
        if (isinstance(stmt, ast.Assign | ast.AnnAssign) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    found[t.id] = nxt.value.value
    return found


def _own_docstring(obj: object) -> str:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not isinstance(doc, str):
        return ""
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""  # the signature dataclasses write in place of a docstring
    return doc.strip()


def _docstring(module: object, name: str) -> str:
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
        return _own_docstring(obj)
    # A constant: its attribute docstring in the module that defines it.
    for mod_name in [module.__name__,  # type: ignore[attr-defined]
                     *(f"avp_codec.{m}" for m in ("_registry", "_builders", "_events",
                                                  "_quant_settings"))]:
        doc = _variable_docstrings(importlib.import_module(mod_name)).get(name)
        if doc:
            return doc.strip()
    return ""


PUBLIC = [(avp, n) for n in avp.__all__] + [(quant, n) for n in quant.__all__]


@pytest.mark.parametrize("module,name", PUBLIC, ids=[f"{m.__name__}.{n}" for m, n in PUBLIC])
def test_every_public_name_has_a_docstring(module: object, name: str) -> None:
    assert len(_docstring(module, name)) >= 20, f"{name} has no docstring of its own"


def test_public_methods_have_docstrings() -> None:
    missing = []
    for module, name in PUBLIC:
        obj = getattr(module, name)
        if not inspect.isclass(obj) or issubclass(obj, int):  # enums: members, not methods
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_") or not (inspect.isfunction(member)
                                            or isinstance(member, classmethod | property)):
                continue
            target = member.__func__ if isinstance(member, classmethod) else member
            if not (getattr(target, "__doc__", None) or "").strip():
                missing.append(f"{name}.{attr}")
    assert not missing, missing


def test_main_entry_points_carry_examples() -> None:
    main = [avp.encode, avp.encode_into, avp.StreamEncoder, avp.StreamEncoder.write_tensor,
            avp.decode, avp.decode_file, avp.Decoder, avp.Decoder.feed, avp.Decoder.next_event,
            avp.IndexedReader, avp.Tensor.from_array, avp.kv_cache_message,
            avp.kv_cache_from_arrays, avp.text_message, avp.hidden_state_message,
            avp.hello_message, avp.accept_message, avp.error_message, avp.AvpError,
            avp.ErrorCode, avp.Limits, avp.from_canonical_json, quant, quant.preset,
            quant.quantize_message, quant.dequantize_message]
    lacking = [getattr(o, "__qualname__", getattr(o, "__name__", o)) for o in main
               if ">>>" not in (o.__doc__ or "")]
    assert not lacking, f"no runnable example: {lacking}"
    # Authentication has no object of its own: its example lives in encode's docstring.
    assert "auth_key=" in (avp.encode.__doc__ or "") and "keys=" in (avp.encode.__doc__ or "")


# --- make docs --------------------------------------------------------------------------------

def test_make_docs_builds_the_reference(tmp_path: Path) -> None:
    pytest.importorskip("pdoc")  # the docs extra (locked in the project venv; not in compat venvs)
    out = tmp_path / "api"
    cmd = [sys.executable, "-m", "pdoc", "--docformat", "restructuredtext", "-o", str(out),
           "avp_codec", "avp_codec.quant"]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=300, capture_output=True)
    page = (out / "avp_codec.html").read_text("utf-8")
    for name in ("StreamEncoder", "write_tensor", "Decoder", "IndexedReader", "NEED_DATA"):
        assert name in page, name
    assert (out / "avp_codec" / "quant.html").exists()
    makefile = (ROOT / "Makefile").read_text("utf-8")
    assert re.search(r"^docs:", makefile, re.M) and "pdoc" in makefile
    assert "docs/api/" in (ROOT / ".gitignore").read_text("utf-8").splitlines()
