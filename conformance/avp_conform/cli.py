"""``avp-conform``: run the AVP conformance vectors against an implementation under test.

Exit status: 0 CONFORMING (or PARTIAL: every selected case passed, but the selection left out
required cases), 1 NOT CONFORMING, 2 usage or harness error (TESTEE-PROTOCOL.md section 4).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from . import manifest as mf
from .report import human_report, junit_xml
from .runner import Result, dumps, load_known_failures, results_json, run_suite
from .testee import HarnessError, open_testee

REFERENCE_TESTEE = f"{shlex.quote(sys.executable)} -m avp_conform.reference_testee"


class _HarnessFailure(click.ClickException):
    # ClickException exits 1, which would read as "not conforming"; a broken manifest is a
    # harness error (2), like click's own usage errors.
    exit_code = 2


class _Progress:
    """A one-line progress bar, drawn only when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.bad, self.enabled = total, 0, 0, enabled

    def __call__(self, result: Result) -> None:
        self.done += 1
        self.bad += result.grade not in ("pass", "skip")
        if not self.enabled:
            return
        width = 30
        filled = width * self.done // max(self.total, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                         f" {self.bad} failing ")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--testee", "testee_cmd", default=None, metavar="CMD",
              help="Command line of the implementation under test (default: the reference codec).")
@click.option("--tier", type=click.Choice(["persistent", "simple"]), default="persistent",
              show_default=True, help="Testee protocol tier (TESTEE-PROTOCOL.md).")
@click.option("--vectors", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Vector directory holding manifest.json (default: the bundled suite).")
@click.option("--level", type=click.Choice(list(mf.LEVELS)), default="optional",
              show_default=True, help="Run cases of this level and every stricter one.")
@click.option("--run", "run_globs", multiple=True, metavar="GLOB", help="Only case ids matching.")
@click.option("--skip", "skip_globs", multiple=True, metavar="GLOB", help="Exclude case ids.")
@click.option("--list", "list_only", is_flag=True, help="List the selected cases and exit.")
@click.option("--known-failures", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Case ids expected to fail; a listed case that passes is stale.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds per request before the case is graded timeout.")
@click.option("--json", "json_out", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--junit", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write a JUnit XML report to this file.")
@click.option("--min-coverage", type=click.FloatRange(0.0, 1.0), default=0.0,
              show_default=True, metavar="FRACTION",
              help="NOT CONFORMING unless this share of the whole suite ran and passed "
                   "(for CI: e.g. 0.9).")
@click.option("-v", "--verbose", is_flag=True, help="List passing and skipped cases too.")
def main(testee_cmd: str | None, tier: str, vectors: Path | None, level: str,
         run_globs: tuple[str, ...], skip_globs: tuple[str, ...], list_only: bool,
         known_failures: Path | None, timeout: float, json_out: bool, junit: Path | None,
         min_coverage: float, verbose: bool) -> None:
    """Run the AVP conformance suite against TESTEE and report case by case.

    The verdict says what was tested: CONFORMING (for the capabilities the testee declares),
    PARTIAL (every selected case passed, but required cases were left out) or NOT CONFORMING.
    """
    try:
        suite = mf.load_suite(vectors, load_data=not list_only)
    except mf.ManifestError as exc:
        raise _HarnessFailure(str(exc)) from exc
    chosen, excluded = mf.select(suite.cases, level, run_globs, skip_globs)
    if not chosen:
        # Running nothing must never read as a result (issue 19: `--run 'nomatch*'`).
        raise click.UsageError(
            f"no case matches --level {level}"
            + "".join(f" --run {g!r}" for g in run_globs)
            + "".join(f" --skip {g!r}" for g in skip_globs)
            + f"; the suite has {len(suite.cases)} cases (see --list), ids look like "
              f"{suite.cases[0].id!r}")
    if list_only:
        for case in chosen:
            click.echo(f"{case.id}\t{case.level}\t{case.result}\t§{case.section}\t"
                       f"{','.join(case.requirement_ids)}")
        click.echo(f"{len(chosen)} cases selected", err=True)
        return
    try:
        known = load_known_failures(known_failures)
        command = testee_cmd or REFERENCE_TESTEE
        testee = open_testee(command, tier)
        try:
            problems = mf.capability_problems(testee.info.capabilities, suite.capability_names)
            if problems:
                raise HarnessError("the testee declares capabilities that do not exist "
                                   "(TESTEE-PROTOCOL 1.5):\n  " + "\n  ".join(problems))
            progress = _Progress(len(chosen), sys.stderr.isatty() and not json_out)
            summary = run_suite(chosen, excluded, testee, timeout, known, progress,
                                min_coverage)
        finally:
            testee.close()
    except HarnessError as exc:
        click.echo(f"avp-conform: harness error: {exc}", err=True)
        sys.exit(2)
    summary.command, summary.tier = shlex.split(command), tier
    if junit is not None:
        junit.write_bytes(junit_xml(summary))
    if json_out:
        click.echo(dumps(results_json(summary)))
    else:
        click.echo(human_report(summary, verbose))
    sys.exit(summary.exit_status)

