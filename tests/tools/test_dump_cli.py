"""avp-dump through click's CliRunner: every view, the exit statuses, stdin, colour, usage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from avp_tools.dump_cli import main
from click.testing import CliRunner, Result

import avp_codec as avp

VECTORS = Path(__file__).resolve().parents[2] / "conformance" / "vectors"


def run(*args: str, data: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=data, env=env, catch_exceptions=False)


@pytest.fixture
def files(tmp_path: Path, samples: dict[str, bytes]) -> dict[str, str]:
    out = {}
    for name, data in samples.items():
        p = tmp_path / f"{name}.avp"
        p.write_bytes(data)
        out[name] = str(p)
    return out


def test_summary_shows_header_identities_tables_and_totals(files: dict[str, str]) -> None:
    r = run(files["kv_f16"])
    assert r.exit_code == 0, r.output
    out = r.output
    assert "AVP 1.0" in out and "KV_CACHE (1)" in out
    assert bytes(range(32)).hex() in out  # MODEL_ID in full hex
    for needle in ("metadata (3 entries)", "CONTEXT_LENGTH", "layers (2)", "FULL_ATTENTION",
                   "tensors (5)", "TOKEN_IDS", "float16", "[1,2,6,8]", "BHTD", "unchecked",
                   "by dtype", "int64"):
        assert needle in out, needle
    assert "\x1b[" not in out  # no colour when stdout is not a terminal


def test_verify_checks_data_crcs(files: dict[str, str]) -> None:
    r = run(files["kv_bf16_byteplane"], "--verify")
    assert r.exit_code == 0
    assert "unchecked" not in r.output and " ok" in r.output and "status valid" in r.output


def test_stdin_and_named_file_agree(files: dict[str, str], samples: dict[str, bytes]) -> None:
    a = run(files["kv_int4"]).output.splitlines()[1:]
    b = run("-", data=samples["kv_int4"]).output.splitlines()
    assert b[0].startswith("file     <stdin>")
    assert a == b[1:]


def test_json_is_exactly_the_codecs_canonical_json(files: dict[str, str],
                                                   samples: dict[str, bytes]) -> None:
    for name, path in files.items():
        r = run(path, "--json")
        assert r.exit_code == 0
        assert r.output == avp.dumps_canonical_json(avp.decode(samples[name])) + "\n"


def test_json_facts_are_kept_apart(files: dict[str, str], samples: dict[str, bytes]) -> None:
    r = run(files["kv_f16"], "--json", "--facts")
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert set(doc) == {"canonical", "dump"}
    assert doc["canonical"] == avp.to_canonical_json(avp.decode(samples["kv_f16"]))
    assert doc["dump"]["size"] == len(samples["kv_f16"])
    assert all(t["data_offset"] % 64 == 0 and t["crc_status"] == "ok"
               for t in doc["dump"]["tensors"])


def test_json_of_an_invalid_message_is_its_error(samples: dict[str, bytes]) -> None:
    r = run("-", "--json", data=samples["text"] + b"\0")
    assert r.exit_code == 1
    assert json.loads(r.output)["error"]["name"] == "TRAILING_BYTES"


def test_map_accounts_for_every_byte(files: dict[str, str], samples: dict[str, bytes]) -> None:
    r = run(files["kv_int4"], "--map")
    assert r.exit_code == 0
    size = len(samples["kv_int4"])
    assert f"total {size:,} of {size:,}" in r.output
    assert "UNACCOUNTED" not in r.output
    assert "tensor[2].data" in r.output and "padding" in r.output


def test_map_of_a_broken_file_marks_unparsed_bytes(samples: dict[str, bytes]) -> None:
    data = samples["kv_f16"][:700]
    r = run("-", "--map", data=data)
    assert r.exit_code == 1
    assert f"total {700:,} of {700:,}" in r.output
    assert "TRUNCATED" in r.output and "tensor[1].data" in r.output


def test_hex_annotates_fields_and_elides_data(files: dict[str, str]) -> None:
    r = run(files["kv_f16"], "--hex", "--hex-data", "16")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0].startswith("0000000000  89 41 56 50 0d 0a 1a 0a")
    assert "preamble.magic" in lines[0]
    assert any("more bytes of tensor[1].data" in line for line in lines)


def test_explain_names_the_field(files: dict[str, str], samples: dict[str, bytes]) -> None:
    r = run(files["kv_f16"], "--explain", "0x9")
    assert r.exit_code == 0
    assert "preamble.major" in r.output and "section 3 (Preamble)" in r.output
    from avp_tools import walk

    t = walk(samples["kv_f16"]).tensors[1]
    r = run(files["kv_f16"], "--explain", str(t.section_offset + 16 + 10))
    assert "tensor[1].dtype" in r.output and "Tensor descriptor" in r.output
    r = run(files["kv_f16"], "--explain", str(t.data_offset + 5))
    assert "tensor[1].data" in r.output and "byte 5 of them" in r.output
    assert run(files["kv_f16"], "--explain", "99999999").exit_code == 2
    assert run(files["kv_f16"], "--explain", "banana").exit_code == 2


def test_issues_exit_status_and_listing(files: dict[str, str], samples: dict[str, bytes],
                                        craft: Any) -> None:
    ok = run(files["kv_f16"], "--issues", "--reference")
    assert ok.exit_code == 0 and "result  valid" in ok.output
    assert "reference decoder  accepts" in ok.output
    assert "reference decoder" not in run(files["kv_f16"], "--issues").output
    bad = craft.patch(samples["kv_f16"], "tensor[1].dtype", 99)
    bad = craft.patch(bad, "tensor[3].data_crc", 1)
    r = run("-", "--issues", "--reference", data=bad + b"xx")
    assert r.exit_code == 1
    for needle in ("UNKNOWN_DTYPE", "DATA_CHECKSUM", "TRAILING_BYTES", "R-7.5", "R-2.1",
                   "first: 40 UNKNOWN_DTYPE", "reference decoder  rejects: 40 UNKNOWN_DTYPE"):
        assert needle in r.output, needle
    doc = json.loads(run("-", "--issues", "--json", "--reference", data=bad).output)
    assert [i["name"] for i in doc["issues"]] == ["UNKNOWN_DTYPE", "DATA_CHECKSUM"]
    assert doc["reference_decoder"]["name"] == "UNKNOWN_DTYPE" and doc["valid"] is False


def test_stats_decode_bf16_and_dequantize(files: dict[str, str]) -> None:
    r = run(files["kv_bf16_byteplane"], "--stats", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.output)
    assert [row["dtype"] for row in rows] == ["bfloat16"] * 4
    assert all(row["count"] == 96 and row["nan"] == 0 and -5 < row["mean"] < 5 for row in rows)
    q = json.loads(run(files["kv_int4"], "--stats", "--json", "--tensor", "*:KEY").output)
    assert [(row["role"], row["dequantized"]) for row in q] == [("KEY", True)] * 2
    assert all(row["min"] < 0 < row["max"] for row in q)  # uint4 codes alone are never < 0
    assert run(files["kv_int4"], "--stats", "--json", "--tensor", "*/KEY").output == run(
        files["kv_int4"], "--stats", "--json", "--tensor", "*:KEY").output
    text = run(files["kv_int4"], "--stats", "--tensor", "2").output
    assert "uint4->deq" in text and len(text.splitlines()) == 2


def test_stats_selector_errors_are_usage_errors(files: dict[str, str]) -> None:
    for sel in ("99", "0:NOPE", "x:KEY", "KEY"):
        r = run(files["kv_f16"], "--stats", "--tensor", sel)
        assert r.exit_code == 2, sel


def test_diff(files: dict[str, str], samples: dict[str, bytes], craft: Any) -> None:
    same = run("diff", files["kv_f16"], files["kv_f16"])
    assert same.exit_code == 0 and same.output == "identical\n"
    r = run("diff", files["kv_f16"], files["kv_bf16_byteplane"])
    assert r.exit_code == 1
    for needle in ("entry MODEL_NAME (3): only in A", "entry PRODUCER (4): only in B",
                   "(msg TOKEN_IDS): only in A", "dtype: float16 != bfloat16",
                   "codec: raw != byteplane_zstd", "max abs diff"):
        assert needle in r.output, needle
    broken = Path(files["text"]).with_name("broken.avp")
    broken.write_bytes(samples["text"][:-1])
    assert run("diff", files["text"], str(broken)).exit_code == 1


def test_usage_and_io_errors_exit_2(tmp_path: Path, files: dict[str, str]) -> None:
    assert run(str(tmp_path / "missing.avp")).exit_code == 2
    assert run(files["text"], "--map", "--hex").exit_code == 2
    assert run(files["text"], "--facts").exit_code == 2
    assert run(files["text"], "--tensor", "0").exit_code == 2
    assert run("--bogus").exit_code == 2
    assert run("diff", "-", "-").exit_code == 2


def test_help_documents_exit_codes() -> None:
    for args in (["--help"], ["diff", "--help"]):
        out = run(*args).output
        assert "Exit status" in out and "usage error" in out and "internal error" in out


def test_colour_only_when_asked_or_on_a_tty(files: dict[str, str]) -> None:
    assert "\x1b[" in run(files["text"], "--color", "always").output
    assert "\x1b[" not in run(files["text"], "--color", "never").output


def test_no_color_is_honoured_on_a_terminal(files: dict[str, str]) -> None:
    # A real pseudo-terminal: colour by default, none with NO_COLOR set.
    pty = pytest.importorskip("pty")
    code = ("import sys; from avp_tools.dump_cli import main; "
            f"sys.argv=['avp-dump', {files['text']!r}]; main()")
    outputs = []
    for extra in ({}, {"NO_COLOR": "1"}):
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | extra
        leader, follower = pty.openpty()
        proc = subprocess.run([sys.executable, "-c", code], stdout=follower,
                              stderr=subprocess.PIPE, env=env, timeout=60, check=False)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert proc.returncode == 0, proc.stderr
        outputs.append(b"".join(chunks))
    assert b"\x1b[" in outputs[0]
    assert b"\x1b[" not in outputs[1]


def test_module_entry_point(files: dict[str, str]) -> None:
    r = subprocess.run([sys.executable, "-m", "avp_tools.dump_cli", files["text"]],
                       capture_output=True, timeout=60, check=False)
    assert r.returncode == 0 and b"TEXT (3)" in r.stdout


def test_valid_vectors_json_matches_the_manifest() -> None:
    doc = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
    checked = 0
    for case in doc["cases"]:
        if case["result"] != "valid" or case.get("context") or "json" not in case["expected"]:
            continue
        data = (VECTORS / case["file"]).read_bytes()
        r = run(str(VECTORS / case["file"]), "--json")
        assert r.exit_code == 0, case["id"]
        codec = avp.to_canonical_json(avp.decode(data))
        assert json.loads(r.output) == codec, case["id"]  # one serializer: the codec's
        if codec == case["expected"]["json"]:  # else a codec bug, reported by tests/conformance
            checked += 1
    assert checked >= 60


def test_stdin_from_a_pipe_and_from_a_redirected_file(files: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "avp_tools.dump_cli", "-", "--issues"]
    with open(files["kv_int4"], "rb") as fh:  # a regular file on stdin: mapped, not copied
        redirected = subprocess.run(cmd, stdin=fh, capture_output=True, timeout=60, check=False)
    with open(files["kv_int4"], "rb") as fh:
        piped = subprocess.run(cmd, input=fh.read(), capture_output=True, timeout=60,
                               check=False)
    assert redirected.returncode == piped.returncode == 0
    assert redirected.stdout == piped.stdout and b"result  valid" in piped.stdout


# -- issue 19.6: the CLI as a user meets it -----------------------------------------------------
VIEW_FLAGS = ("--verify", "--json", "--facts", "--map", "--hex", "--explain", "--issues",
              "--stats", "--tensor", "diff")


def test_top_level_help_lists_every_view_and_no_hidden_command() -> None:
    r = run("--help")
    assert r.exit_code == 0
    for flag in VIEW_FLAGS:
        assert flag in r.output, flag
    assert "Usage: avp-dump [OPTIONS] FILE" in r.output
    assert "avp-dump show" not in r.output and "show --help" not in r.output


def test_usage_errors_name_only_what_the_user_typed(files: dict[str, str]) -> None:
    for args in (["--bogus"], [files["text"], "--map", "--hex"], [files["text"], "--facts"],
                 [files["text"], "--tensor", "0"], [files["text"], "--explain"], [],
                 [files["text"], "--stats", "--tensor", "0:NOPE"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, args
        assert "show" not in r.output, (args, r.output)
        usage = [ln for ln in r.output.splitlines() if ln.startswith("Usage:")]
        assert usage in ([], ["Usage: avp-dump [OPTIONS] FILE"]), (args, r.output)
        assert "Error:" in r.output, (args, r.output)
    r = CliRunner().invoke(main, ["diff", files["text"]])
    assert r.exit_code == 2 and "Usage: avp-dump diff [OPTIONS] A B" in r.output


def test_diff_help_reads_right() -> None:
    out = run("diff", "--help").output
    assert "Usage: avp-dump diff [OPTIONS] A B" in out
    assert "the two messages are byte for byte identical and valid" in out
    assert "valid or not" in out
    assert "message s" not in out and "messages are identical" not in out


def test_counts_have_their_plurals(samples: dict[str, bytes], craft: Any) -> None:
    one = run("-", data=samples["hidden"]).output
    assert "1 tensor section," in one and "tensor sections" not in one
    assert "metadata (2 entries)" in one
    text = run("-", data=samples["text"]).output
    assert "metadata (2 entries)" in text
    single = craft.text_message("hi").build()
    assert "metadata (1 entry)" in run("-", data=single).output
    bad = run("-", "--issues", data=samples["text"] + b"\0").output
    assert "INVALID: 1 issue (" in bad


def test_enum_fields_print_their_names(files: dict[str, str], samples: dict[str, bytes]) -> None:
    out = run(files["kv_int4"], "--map").output
    for needle in ("1 (KV_CACHE)", "2 (TENSOR)", "(QUANT_SCALE)", "(AFFINE)", "(uint4)",
                   "(BHTD)", "1 (FULL_ATTENTION)", "(MODEL_ID)", "5 (bytes)"):
        assert needle in out, needle
    d = run("diff", files["kv_f16"], files["kv_bf16_byteplane"]).output
    assert "float16 != bfloat16" in d and "raw != byteplane_zstd" in d


def test_diff_valid_against_invalid_says_what_decodes_and_where_they_part(
        files: dict[str, str], samples: dict[str, bytes], craft: Any, tmp_path: Path) -> None:
    good = samples["kv_f16"]
    bad = craft.patch(good, "tensor[3].data_crc", 1)
    p = tmp_path / "bad.avp"
    p.write_bytes(bad)
    r = run("diff", files["kv_f16"], str(p))
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert lines[0].startswith(f"A  {files['kv_f16']}: valid (KV_CACHE, 3 entries, 2 layers")
    assert lines[1].startswith(f"B  {p}: INVALID, 1 issue; a decoder stops at the first:")
    assert "21 DATA_CHECKSUM at offset" in lines[2] and "(tensor[3].data)" in lines[2]
    assert lines[3].startswith("   read: KV_CACHE")
    assert "bytes  first difference at offset" in r.output and "tensor[3].data_crc" in r.output
    assert "tensor[3].data: same raw bytes (B: data_crc does not match)" in r.output
    cut = tmp_path / "cut.avp"
    cut.write_bytes(good[:700])
    r = run("diff", files["kv_f16"], str(cut))
    assert r.exit_code == 1
    assert "3 TRUNCATED at offset" in r.output and "the input ends before the trailer" in r.output
    assert "B is the first 700 bytes of A" in r.output
    assert "only in A" in r.output
    both = run("diff", str(p), str(p))
    assert both.exit_code == 1 and "bytes  identical" in both.output


def test_an_escaped_exception_is_one_line_and_status_3(files: dict[str, str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import avp_tools.dump_cli as cli

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(cli, "walk", boom)
    r = CliRunner().invoke(main, [files["text"]])
    assert r.exit_code == 3
    assert r.output.strip().count("\n") == 0
    assert r.output.startswith("avp-dump: internal error: RuntimeError: injected")
    assert "Traceback" not in r.output


def test_closed_stdout_is_status_141_and_silent(tmp_path: Path, samples: dict[str, bytes]) -> None:
    p = tmp_path / "many.avp"
    p.write_bytes(samples["kv_int4"] * 1)
    code = ("import sys; from avp_tools.dump_cli import main; "
            f"sys.argv=['avp-dump', {str(p)!r}, '--hex', '--hex-data', '4096']; main()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141
    assert b"Traceback" not in err and err == b""
