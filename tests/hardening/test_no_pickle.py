"""Nothing ever unpickles, and model identity cannot be bypassed (spec R-19.1, R-10.4; issue 7,
part 5).

Static: an AST scan of every shipped module (avp_codec, avp_conform, avp_tools, avp_runtime,
benchmarks, fuzz) for pickle-family imports, ``torch.load`` without ``weights_only=True``,
``numpy.load`` with ``allow_pickle`` and friends, following import aliases (``import pickle as
p``, ``from torch import load``), which a grep would miss. The scanner is tested on snippets.
Dynamic: _no_pickle_probe.py imports everything and decodes every conformance vector, dumps it,
converts tensors to torch and round-trips a KV-cache through a real (tiny) model with the
unpicklers replaced by tripwires and an audit hook on ``pickle.find_class``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from avp_conform import gen_common as g
from avp_conform.wire import WEntry, WMessage, build

import avp_codec as avp

from . import _fuzzmods, _hostile

ROOT = _fuzzmods.ROOT
SHIPPED = ["avp_codec", "conformance/avp_conform", "tools/avp_tools",
           "reference_runtime/avp_runtime", "benchmarks", "fuzz"]
# Modules whose only purpose is deserializing arbitrary objects (code execution by design).
BANNED_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "dill", "cloudpickle", "shelve",
                  "joblib", "jsonpickle"}
BANNED_CALLS = {"pandas.read_pickle", "yaml.unsafe_load", "yaml.full_load"}


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def scan(source: str, filename: str = "<snippet>") -> list[str]:
    """Findings (``file:line: what``) for one module's source."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {"np": "numpy"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in BANNED_MODULES:
                    found.append(f"{filename}:{node.lineno}: imports {a.name}")
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else \
                    a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in BANNED_MODULES:
                found.append(f"{filename}:{node.lineno}: imports from {node.module}")
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name is None:
            continue
        where = f"{filename}:{node.lineno}: {name}"
        if name in ("torch.load", "torch.serialization.load"):
            w = _kw(node, "weights_only")
            if not (isinstance(w, ast.Constant) and w.value is True):
                found.append(f"{where} without weights_only=True")
        elif name == "numpy.load":
            ap = _kw(node, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                found.append(f"{where} with allow_pickle")
        elif name == "yaml.load":
            loader = _kw(node, "Loader")
            if not (loader is not None and "Safe" in (_dotted(loader, aliases) or "")):
                found.append(f"{where} without a SafeLoader")
        elif name in BANNED_CALLS:
            found.append(where)
    return found


@pytest.mark.parametrize("snippet,hits", [
    ("import pickle\npickle.loads(b)", 1),
    ("import pickle as p\n", 1),
    ("from pickle import loads\n", 1),
    ("import marshal\n", 1),
    ("import torch\ntorch.load(f)", 1),
    ("import torch\ntorch.load(f, weights_only=False)", 1),
    ("import torch\ntorch.load(f, weights_only=flag)", 1),
    ("from torch import load as L\nL(f)", 1),
    ("import torch as T\nT.serialization.load(f)", 1),
    ("import numpy as np\nnp.load(f, allow_pickle=True)", 1),
    ("import numpy\nnumpy.load(f, allow_pickle=x)", 1),
    ("import pandas as pd\npd.read_pickle(f)", 1),
    ("import yaml\nyaml.load(s)", 1),
    ("import torch\ntorch.load(f, weights_only=True)", 0),
    ("import numpy as np\nnp.load(f)\nnp.load(f, allow_pickle=False)", 0),
    ("import yaml\nyaml.load(s, Loader=yaml.SafeLoader)", 0),
    ("import json\njson.loads(s)", 0),
    ("def __reduce__(self):\n    return (f, ())", 0),
])
def test_scanner_flags_each_pattern(snippet: str, hits: int) -> None:
    assert len(scan(snippet)) == hits, scan(snippet)


def test_shipped_code_never_unpickles() -> None:
    files = [p for d in SHIPPED for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 40  # the scan really covers the packages
    findings = [f for p in files for f in scan(p.read_text(), str(p.relative_to(ROOT)))]
    assert not findings, "\n".join(findings)


def test_imports_and_decoding_never_touch_pickle() -> None:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_no_pickle_probe.py")),
         str(ROOT / "conformance" / "vectors")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["import_events"] == [] and out["events"] == [], out
    # ...and the probe would have noticed: each guarded path, and the audit hook on the
    # unguarded original pickle.loads, records an event when something is unpickled.
    assert out["selftest_events"][:4] == ["pickle.loads", "pickle.Unpickler",
                                          "torch.load without weights_only=True",
                                          "numpy.load(allow_pickle=True)"]
    assert any(e.startswith("pickle.find_class") for e in out["selftest_events"][4:])
    assert out["vectors"] > 100 and out["decoded"] > 100
    assert out["roundtrip_tokens"] == 4 and out["reply"] == "ACCEPT"
    # The runtime's import path: a message object that simply omits MODEL_ID (it never went
    # through the codec) is refused, as is another model's cache; its own is accepted.
    assert out["runtime_without_model_id"] == "MODEL_MISMATCH"
    assert out["runtime_other_model"] == "MODEL_MISMATCH"
    assert out["runtime_own_model"] == "accepted"


# ------------------------------------------------------------------ model identity


def _kv_entries(**replace: WEntry | None) -> list[WEntry]:
    entries = {"MODEL_ID": g.ent("MODEL_ID", g.MODEL_ID),
               "CONTEXT_LENGTH": g.ent("CONTEXT_LENGTH", 2)}
    entries.update(replace)  # type: ignore[arg-type]
    return [e for e in entries.values() if e is not None]


def _kv_bytes(entries: list[WEntry], kind: int = 1) -> bytes:
    m = _hostile._kv([_hostile._key(data=b"\0" * 16)])
    m.entries, m.kind = sorted(entries, key=lambda e: e.key), kind
    return build(m).data


@pytest.mark.parametrize("label,entries,code", [
    ("omitted", _kv_entries(MODEL_ID=None), avp.ErrorCode.MISSING_ENTRY),
    ("31 bytes", _kv_entries(MODEL_ID=g.ent("MODEL_ID", g.MODEL_ID[:31])),
     avp.ErrorCode.INVALID_VALUE),
    ("empty", _kv_entries(MODEL_ID=g.ent("MODEL_ID", b"")), avp.ErrorCode.INVALID_VALUE),
    ("not critical", _kv_entries(MODEL_ID=WEntry(1, 5, g.MODEL_ID, False)),
     avp.ErrorCode.ENTRY_TYPE),
    ("as utf8", _kv_entries(MODEL_ID=WEntry(1, 4, b"a" * 32, True)),
     avp.ErrorCode.ENTRY_TYPE),
])
def test_kv_cache_model_id_cannot_be_omitted_or_malformed(label: str, entries: list[WEntry],
                                                          code: avp.ErrorCode) -> None:
    data = _kv_bytes(entries)
    with pytest.raises(avp.AvpError) as ei:
        avp.decode(data)
    assert ei.value.code == code, label
    dec = avp.Decoder()
    dec.feed(data)
    with pytest.raises(avp.AvpError) as ei:
        dec.next_event()  # refused with the HEADER, before any tensor is delivered
    assert ei.value.code == code, label


def test_hidden_state_without_model_id_is_refused() -> None:
    m = WMessage(2, [g.ent("HIDDEN_SOURCE", 1)], [], [])
    m.tensors = g.hidden_message().tensors
    with pytest.raises(avp.AvpError) as ei:
        avp.decode(build(m).data)
    assert ei.value.code == avp.ErrorCode.MISSING_ENTRY


def test_encoder_and_receiver_checks_refuse_a_missing_model_id() -> None:
    ok = avp.decode(_kv_bytes(_kv_entries()))
    no_id = avp.Message(ok.kind, [e for e in ok.entries if e.key != avp.MetaKey.MODEL_ID],
                        ok.layers, ok.tensors)
    with pytest.raises(avp.AvpError) as ei:
        avp.encode(no_id)
    assert ei.value.code == avp.ErrorCode.MISSING_ENTRY
    # The receiver-side check treats "absent" as "not mine", never as "matches anything".
    with pytest.raises(avp.AvpError) as ei:
        avp.check_model_id(no_id, g.MODEL_ID)
    assert ei.value.code == avp.ErrorCode.MODEL_MISMATCH
    avp.check_model_id(ok, g.MODEL_ID)
    with pytest.raises(avp.AvpError) as ei:
        avp.check_model_id(ok, g.OTHER_MODEL_ID)
    assert ei.value.code == avp.ErrorCode.MODEL_MISMATCH

