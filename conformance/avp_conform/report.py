"""Human and JUnit reports of a run."""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET
from itertools import groupby

from .runner import GRADES, Result, RunSummary
from .testee import simple_command

SECTION_TITLES = {
    "1": "Conventions", "2": "Message layout", "3": "Preamble", "4": "Sections",
    "5": "Tensor data placement", "6": "HEADER section", "7": "TENSOR section",
    "8": "INDEX section and Trailer", "9": "Canonical form and verification",
    "10": "Message kinds", "12": "Quantization", "13": "Identities", "14": "Handshake",
    "15": "Authentication", "16": "Resource limits", "17": "Error codes",
}


def _section_key(section: str) -> tuple[int, ...]:
    return tuple(int(p) for p in section.split(".") if p.isdigit())


def hex_window(data: bytes, offset: int, radius: int = 32) -> list[str]:
    """Rows of 16 bytes around ``offset`` with the byte at fault bracketed and a caret under it."""
    if not data:
        return ["(empty input)"]
    at = max(0, min(offset, len(data)))
    start = max(0, (at - radius) // 16 * 16)
    stop = min(len(data), (at + radius) // 16 * 16 + 16)
    rows = []
    for row in range(start, max(stop, start + 1), 16):
        chunk = data[row:row + 16]
        cells = []
        for i, b in enumerate(chunk):
            cells.append(f"[{b:02x}]" if row + i == at else f" {b:02x} ")
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        rows.append(f"  {row:08x} {''.join(cells):<64} |{text}|")
        if row <= at < row + 16:
            rows.append("  " + " " * 9 + " " * (4 * (at - row) + 1) + "^^ offset " + str(at))
    if at >= len(data):
        rows.append(f"  (offset {at} is the end of the input, {len(data)} bytes)")
    return rows


def _reproduce(r: Result, summary: RunSummary) -> list[str]:
    """How to send exactly this request again, by hand."""
    if r.request is None:
        return []
    path = str(r.case.path or r.case.file)
    if r.request["op"] == "encode":
        source = "the stored tensor bytes of that file (manifest tensor_data)"
    else:
        source = f"the {len(r.case.data)} bytes of that file"
    lines = [f"    request:     {json.dumps(r.request, separators=(',', ':'))[:400]}",
             f"                 payload: {source}"]
    if summary.command:
        argv = simple_command(summary.command, r.request)
        stdin = f" < {shlex.quote(path)}" if r.request["op"] != "encode" else ""
        tier = "" if summary.tier == "simple" else " (simple tier)"
        lines.append(f"    reproduce{tier}: {shlex.join(argv)}{stdin}")
        testee = shlex.quote(shlex.join(summary.command))
        lines.append(f"    rerun:       avp-conform --testee {testee} --tier {summary.tier}"
                     f" --run {shlex.quote(r.case.id)} -v")
    return lines


def _failure_block(r: Result, summary: RunSummary) -> list[str]:
    label = r.grade.upper() + (" (known failure)" if r.known_failure else "")
    lines = [f"  {label}  {r.case.id}  [{', '.join(r.case.requirement_ids)}]"]
    if r.case.requirement:
        lines.append(f"    requirement: {r.case.requirement}")
    if r.case.comment:
        lines.append(f"    vector:      {r.case.comment}")
    lines.append(f"    file:        {r.case.path or r.case.file}")
    lines.append(f"    expected:    {r.expected}")
    lines.append(f"    actual:      {r.actual}")
    lines += _reproduce(r, summary)
    for extra in r.detail.strip().splitlines()[-6:]:
        lines.append(f"    | {extra}")
    if r.offset is not None:
        lines += hex_window(r.case.data, r.offset)
    return lines


def summary_lines(summary: RunSummary) -> list[str]:
    """What was tested, what was not and why, and the verdict with its reason."""
    total, ran = len(summary.results), len(summary.ran)
    counts = ", ".join(f"{summary.count(g)} {g}" for g in GRADES
                       if g != "skip" and summary.count(g))
    known = sum(r.known_failure for r in summary.results)
    if known:
        counts += f" ({known} of them known failures)"
    lines = [f"\n{total} cases in the suite: {ran} ran ({counts or 'none'}), "
             f"{summary.count('skip')} skipped"]
    for reason, n in sorted(summary.skip_reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  skipped, {reason}: {n}")
    left_out = summary.required_not_run
    if left_out:
        shown = ", ".join(r.case.id for r in left_out[:5])
        more = f", +{len(left_out) - 5} more" if len(left_out) > 5 else ""
        lines.append("  required cases not selected although the testee declares what they "
                     f"need: {len(left_out)} ({shown}{more})")
    declared = summary.declared
    if declared:
        lines.append("  declared: " + "; ".join(f"{k} {', '.join(declared.get(k, [])) or '-'}"
                                                for k in ("operations", "features")))
    floor = f" (--min-coverage {summary.min_coverage:.1%})" if summary.min_coverage else ""
    lines.append(f"  coverage: {summary.coverage:.1%} of the suite ran and passed{floor}")
    lines.append(f"\n{summary.verdict}: {summary.why()}; {summary.restarts} testee restarts; "
                 f"{summary.seconds:.2f} s")
    return lines


def human_report(summary: RunSummary, verbose: bool = False) -> str:
    lines = [f"avp-conform: testee {summary.testee}"]
    ordered = sorted(summary.results, key=lambda r: (_section_key(r.case.section), r.case.id))
    for top, group in groupby(ordered, key=lambda r: r.case.section.split(".")[0]):
        results = list(group)
        ran = [r for r in results if r.grade != "skip"]
        passed = sum(1 for r in ran if r.grade == "pass")
        title = SECTION_TITLES.get(top, "")
        if not ran and not verbose:
            continue  # nothing of this section was selected or runnable
        lines.append(f"\n§{top} {title}: {passed}/{len(ran)} passed"
                     f" ({len(results) - len(ran)} skipped)")
        for r in results:
            if r.grade not in ("pass", "skip"):
                lines += _failure_block(r, summary)
            elif verbose:
                lines.append(f"  {r.grade:<5} {r.case.id}  {r.detail}".rstrip())
    if summary.stale_known_failures:
        lines.append("\nSTALE known failures (listed but now passing; remove them from the file):")
        lines += [f"  {i}" for i in summary.stale_known_failures]
    lines += summary_lines(summary)
    return "\n".join(lines)


def junit_xml(summary: RunSummary) -> bytes:
    suites = ET.Element("testsuites", name="avp-conform", time=f"{summary.seconds:.3f}")
    ordered = sorted(summary.results, key=lambda r: (_section_key(r.case.section), r.case.id))
    for top, group in groupby(ordered, key=lambda r: r.case.section.split(".")[0]):
        results = list(group)
        suite = ET.SubElement(
            suites, "testsuite", name=f"section {top} {SECTION_TITLES.get(top, '')}".strip(),
            tests=str(len(results)),
            failures=str(sum(r.grade in ("fail", "wrong_code") for r in results)),
            errors=str(sum(r.grade in ("crash", "timeout") for r in results)),
            skipped=str(sum(r.grade == "skip" for r in results)),
        )
        for r in results:
            tc = ET.SubElement(suite, "testcase", classname=f"avp.section{r.case.section}",
                               name=r.case.id, time=f"{r.seconds:.4f}")
            text = f"expected: {r.expected}\nactual: {r.actual}\n{r.detail}".strip()
            if r.grade == "skip":
                ET.SubElement(tc, "skipped", message=r.detail)
            elif r.known_failure:
                ET.SubElement(tc, "skipped", message="known failure: " + r.grade).text = text
            elif r.grade in ("fail", "wrong_code"):
                ET.SubElement(tc, "failure", type=r.grade, message=r.actual).text = text
            elif r.grade in ("crash", "timeout"):
                ET.SubElement(tc, "error", type=r.grade, message=r.actual).text = text
    for case_id in summary.stale_known_failures:
        suite = ET.SubElement(suites, "testsuite", name="known-failures", tests="1", failures="1")
        tc = ET.SubElement(suite, "testcase", classname="avp.known_failures", name=case_id)
        ET.SubElement(tc, "failure", type="stale", message="listed as a known failure but passes")
    return bytes(ET.tostring(suites, encoding="utf-8", xml_declaration=True))
