"""Writes the frozen vector suite: ``conformance/vectors/{valid,invalid,acceptable}/*.avp`` and
``manifest.json``. Run once per format version (``python conformance/generate_vectors.py``);
tests/conformance regenerates into a temporary directory and compares, so the files cannot drift.

Expected results come from the case definitions, never from a decoder; the reference codec is
only consulted for the canonical JSON of valid cases, and every disagreement between it and a
case's expectation is reported (and makes ``main`` exit 1) instead of being written down.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import struct
import sys
from pathlib import Path
from typing import Any

import avp_codec as avp
from avp_codec import quant

from . import (
    gen_dequant,
    gen_extra,
    gen_floatplane,
    gen_invalid_content,
    gen_invalid_framing,
    gen_invalid_quant,
    gen_json,
    gen_model,
    gen_pins,
    gen_valid,
)
from .gen_common import (
    CODEC_NAMES,
    DTYPE_NAMES,
    KIND_NAMES,
    TEST_KEY,
    TEST_KEY_ID,
    CaseDef,
    requirement_quotes,
)
from .manifest import CONFORMANCE_DIR, DEFAULT_VECTORS, validate_manifest
from .reference_testee import decode_with_context
from .wire import Built

NOTES = {
    "IncrementalMay": "LIMIT_BUFFER applies to incremental decoders only (16); a complete-buffer"
                      " decoder goes on and decodes the message.",
    "LargeDeclared": "Declares gigabytes it does not carry: a decoder must decide from the "
                     "descriptor, without allocating what is declared.",
    "ProducerMustNot": "A producer MUST NOT write this (so no roundtrip is asked), but a receiver"
                       " MAY accept it.",
    "NewerMinor": "A newer minor version (R-3.3): decoded, but re-encoding writes minor 0 and "
                  "drops skippable sections, so the bytes are not reproduced.",
    "RealModel": "Captured from a real model run (SmolLM2-135M-Instruct, first layers, few "
                 "tokens); data digests pin the exact cache.",
    "ReceiverMay": "The spec lets a receiver choose to check this (MAY): accepting and rejecting"
                   " with the named code both conform.",
    "TwoFaults": "Two faults on purpose: pins the order of checks the spec fixes (9.2, 14.3, "
                 "7.3), which one-fault vectors cannot see; the expected code is the first "
                 "check's.",
    "Unverified": "Decoded with verify=false (spec 9.3): tensor CRCs may be skipped.",
}
REGISTRIES = CONFORMANCE_DIR.parent / "spec" / "registries"


def capability_names() -> dict[str, list[str]]:
    """The only names a testee may declare (TESTEE-PROTOCOL 1.5): lower case, from the
    registries for kinds, dtypes and codecs."""
    def names(registry: str) -> list[str]:
        doc = json.loads((REGISTRIES / f"{registry}.json").read_text("utf-8"))
        return [str(e["name"]).lower() for e in doc["entries"]]
    return {"operations": ["decode", "encode", "dequantize"], "kinds": names("kinds"),
            "dtypes": names("dtypes"), "codecs": names("codecs"),
            "features": ["unverified", "limits", "auth", "model_check", "handshake"]}
LEVELS_FOR_FEATURE = {"unverified": "optional", "handshake": "required"}


def all_cases() -> list[CaseDef]:
    return (gen_valid.cases() + gen_invalid_framing.cases() + gen_invalid_content.cases()
            + gen_invalid_quant.cases() + gen_extra.cases() + gen_model.cases()
            + gen_pins.cases() + gen_json.cases() + gen_dequant.cases()
            + gen_floatplane.cases())


def _resolve(fault: str | None, built: Built) -> int | None:
    if fault is None:
        return None
    if fault.startswith("@"):
        return int(fault[1:])
    m = re.fullmatch(r"(.+?)([+-]\d+)?", fault)
    assert m is not None
    return built.offsets[m.group(1)] + int(m.group(2) or 0)


def _requires(case: CaseDef) -> dict[str, list[str]]:
    req: dict[str, list[str]] = {"operations": ["decode", *case.operations]}
    msg = case.msg
    if msg is not None:
        if msg.kind in KIND_NAMES:
            req["kinds"] = [KIND_NAMES[msg.kind].lower()]
        req["dtypes"] = sorted({DTYPE_NAMES[t.dtype] for t in msg.tensors
                                if t.dtype in DTYPE_NAMES})
        req["codecs"] = sorted({CODEC_NAMES[t.codec] for t in msg.tensors
                                if t.codec in CODEC_NAMES})
    if case.context.get("limits"):
        req["features"] = ["limits"]
    req["features"] = sorted(set(req.get("features", [])) | set(case.features))
    return {k: v for k, v in req.items() if v}


def _outcome(case: CaseDef, data: bytes, problems: list[str]) -> dict[str, Any]:
    """The expected outcome of a valid alternative, checked against the reference decoder."""
    try:
        msg = decode_with_context(data, case.context)
    except avp.AvpError as exc:
        problems.append(f"{case.id}: reference rejects a valid vector: {exc}")
        return {"json": None, "roundtrip": False}
    doc = avp.to_canonical_json(msg)
    major, minor = struct.unpack_from("<HH", data, 8)
    if doc.get("format") != f"AVP/{major}.{minor}":  # spec 18.3: the preamble's version
        problems.append(f"{case.id}: reference writes format {doc.get('format')!r}")
        doc["format"] = f"AVP/{major}.{minor}"
    if case.roundtrip and case.msg is not None and case.msg.auth_key is None:
        try:
            again = avp.encode(msg)
        except avp.AvpError as exc:
            problems.append(f"{case.id}: reference refuses to re-encode it: {exc}")
            again = data
        if again != data:
            problems.append(f"{case.id}: reference re-encodes to different bytes")
    return {"json": doc, "roundtrip": case.roundtrip and (case.msg is None
                                                          or case.msg.auth_key is None
                                                          or bool(case.context.get("keys")))}


def _check_invalid(case: CaseDef, data: bytes, allowed: list[str], problems: list[str]) -> None:
    try:
        decode_with_context(data, case.context)
    except avp.AvpError as exc:
        if exc.code.name not in allowed:
            problems.append(f"{case.id}: reference says {exc.code.name}, case expects {allowed}")
        return
    if "valid" not in allowed:
        problems.append(f"{case.id}: reference accepts it, case expects {allowed}")


def case_record(case: CaseDef, quotes: dict[str, str], problems: list[str]
                ) -> tuple[dict[str, Any], bytes]:
    built = case.built()
    data = built.data
    folder = {"valid": "valid", "invalid": "invalid", "acceptable": "acceptable"}[case.result]
    rec: dict[str, Any] = {
        "id": case.id, "section": case.section, "requirement_ids": case.req_ids,
        "requirement": " / ".join(quotes[r] for r in case.req_ids if r in quotes),
        "level": case.level, "result": case.result, "flags": case.flags,
        "comment": case.comment, "file": f"{folder}/{case.id.replace('/', '__')}.avp",
        "sha256": hashlib.sha256(data).hexdigest(), "context": case.context,
        "requires": _requires(case), "fault_offset": _resolve(case.fault, built),
    }
    tensor_data = index_slices(data) if case.result != "invalid" else []
    if case.result == "valid":
        rec["expected"] = dict(_outcome(case, data, problems), tensor_data=tensor_data)
    elif case.result == "invalid":
        assert case.error is not None
        allowed = case.any_of or [case.error]
        _check_invalid(case, data, allowed, problems)
        if case.any_of:  # several codes defensible: an acceptable case in all but name
            rec["result"] = "acceptable"
            rec["file"] = f"acceptable/{case.id.replace('/', '__')}.avp"
            rec["expected"] = {"any_of": [_error_outcome(n) for n in allowed]}
        else:
            rec["expected"] = _error_outcome(case.error)
    else:
        _check_invalid(case, data, case.any_of, problems)
        rec["expected"] = {"any_of": [
            dict(_outcome(case, data, problems), tensor_data=tensor_data) if n == "valid"
            else _error_outcome(n) for n in case.any_of]}
    if case.dequantize:
        rec["dequantize"] = [_dequantize_record(case, data, i, want, problems)
                             for i, want in case.dequantize]
    return rec, data


def dequantized_file(case_id: str, index: int) -> str:
    return f"dequantized/{case_id.replace('/', '__')}__t{index}.bin"


def _dequantize_record(case: CaseDef, data: bytes, index: int, want: dict[str, Any],
                       problems: list[str]) -> dict[str, Any]:
    """The manifest entry of one dequantize check; the reference codec is only compared."""
    try:
        got: bytes | str = quant.dequantize_tensor(decode_with_context(data, case.context),
                                                   index).tobytes()
    except avp.AvpError as exc:
        got = exc.code.name
    if "error" in want:
        if got != want["error"]:
            problems.append(f"{case.id}: reference dequantizes tensor {index} to {got!r:.40}, "
                            f"case expects {want['error']}")
        return {"tensor": index, "expected": _error_outcome(want["error"])}
    values: bytes = want["values"]
    if got != values:
        problems.append(f"{case.id}: reference dequantizes tensor {index} differently")
    return {"tensor": index, "expected": {
        "dtype": want["dtype"], "shape": want["shape"], "length": len(values),
        "sha256": hashlib.sha256(values).hexdigest(),
        "file": dequantized_file(case.id, index)}}


def index_slices(data: bytes) -> list[list[int]]:
    """[data_offset, stored_length] of every tensor, read from a well-formed message's INDEX."""
    (index_at,) = struct.unpack_from("<Q", data, len(data) - 16)
    (count,) = struct.unpack_from("<Q", data, index_at + 16)
    return [list(struct.unpack_from("<QQ", data, index_at + 24 + 24 * i + 8))
            for i in range(count)]


def _error_outcome(name: str) -> dict[str, Any]:
    return {"error": int(avp.ErrorCode[name]), "error_name": name}


def generate(out_dir: Path) -> list[str]:
    """Write the suite into out_dir; return the reference/expectation disagreements."""
    quotes = requirement_quotes()
    problems: list[str] = []
    records = []
    written: set[Path] = set()
    for case in all_cases():
        rec, data = case_record(case, quotes, problems)
        path = out_dir / rec["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.add(path)
        for (_, want), entry in zip(case.dequantize, rec.get("dequantize", []), strict=True):
            if "values" in want:
                bin_path = out_dir / entry["expected"]["file"]
                bin_path.parent.mkdir(parents=True, exist_ok=True)
                bin_path.write_bytes(want["values"])
                written.add(bin_path)
        records.append(rec)
    manifest = {
        "suite": "AVP conformance vectors", "format_version": "1.0",
        "protocol": "conformance/TESTEE-PROTOCOL.md", "protocol_version": "1.1",
        "capability_names": capability_names(),
        "notes": NOTES,
        "test_keys": {TEST_KEY_ID.hex(): TEST_KEY.hex()},
        "cases": records,
    }
    validate_manifest(manifest)
    for old in [*out_dir.glob("*/*.avp"), *out_dir.glob("dequantized/*.bin")]:
        if old not in written:  # a renamed or removed case leaves no orphan file
            old.unlink()
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n",
                                           "utf-8")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_VECTORS)
    parser.add_argument("--recapture", action="store_true",
                        help="capture the real-model vector again (needs the model; its bytes "
                             "change only if the model or the runtime does)")
    args = parser.parse_args(argv)
    if args.recapture:
        gen_model.cases(recapture=True)
    problems = generate(args.out)
    for p in problems:
        print("DISAGREEMENT:", p, file=sys.stderr)
    print(f"wrote {args.out}; {len(problems)} disagreements with the reference decoder")
    return 1 if problems else 0
