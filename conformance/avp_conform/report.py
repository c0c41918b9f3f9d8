"""Human and JUnit reports of a run."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from itertools import groupby

from .runner import GRADES, Result, RunSummary

SECTION_TITLES = {
    "1": "Conventions", "2": "Message layout", "3": "Preamble", "4": "Sections",
    "5": "Tensor data placement", "6": "HEADER section", "7": "TENSOR section",
    "8": "INDEX section and Trailer", "9": "Canonical form and verification",
    "10": "Message kinds", "12": "Quantization", "13": "Identities", "14": "Handshake",
    "15": "Authentication", "16": "Resource limits",
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


def _failure_block(r: Result) -> list[str]:
    label = r.grade.upper() + (" (known failure)" if r.known_failure else "")
    lines = [f"  {label}  {r.case.id}  [{', '.join(r.case.requirement_ids)}]"]
    if r.case.requirement:
        lines.append(f"    requirement: {r.case.requirement}")
    if r.case.comment:
        lines.append(f"    vector:      {r.case.comment}")
    lines.append(f"    expected:    {r.expected}")
    lines.append(f"    actual:      {r.actual}")
    for extra in r.detail.strip().splitlines()[-6:]:
        lines.append(f"    | {extra}")
    if r.offset is not None:
        lines += hex_window(r.case.data, r.offset)
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
                lines += _failure_block(r)
            elif verbose:
                lines.append(f"  {r.grade:<5} {r.case.id}  {r.detail}".rstrip())
    if summary.stale_known_failures:
        lines.append("\nSTALE known failures (listed but now passing; remove them from the file):")
        lines += [f"  {i}" for i in summary.stale_known_failures]
    counts = ", ".join(f"{summary.count(g)} {g}" for g in GRADES if summary.count(g))
    known = sum(r.known_failure for r in summary.results)
    if known:
        counts += f" ({known} of them known failures)"
    verdict = "CONFORMING" if summary.conforming else "NOT CONFORMING"
    lines.append(f"\n{verdict}: {len(summary.results)} cases: {counts};"
                 f" {summary.restarts} testee restarts; {summary.seconds:.2f} s")
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
