"""``avp-dump``: the command-line wrapper.  All the work is in the library modules; this file only
parses options, opens the input, streams the output and maps outcomes to exit statuses.

Hostile-input contract: whatever the bytes, every view ends with an exit status and, on
failure, one line on stderr (``avp-dump: ...``); never a traceback. An exception that escapes
a view is a bug in avp-dump or avp_codec: it is reported on one line with exit status 3
(``AVP_DUMP_TRACEBACK=1`` prints the traceback too).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Iterable
from typing import Any

import click

from . import _bytemap, _render, _stats
from ._ctx import BufferLike
from ._model import Issue, Walk
from ._source import InputError, open_input
from ._walker import walk

EXIT_VALID, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_PIPE = 141  # stdout closed early (avp-dump ... | head): 128 + SIGPIPE, as a shell reports

_EXIT_HELP = """\b
Exit status:
  0  the message is valid (for the checks the chosen view makes)
  1  the message is invalid: at least one departure from the spec
  2  usage error, or the input could not be read
  3  internal error (a bug: please report it)"""

_DIFF_EXIT_HELP = """\b
Exit status:
  0  the two messages are byte for byte identical and valid
  1  they differ, or one of them is invalid
  2  usage error, or an input could not be read
  3  internal error (a bug: please report it)"""

_COLORS: dict[str, dict[str, Any]] = {
    "head": {"bold": True}, "bad": {"fg": "red"}, "ok": {"fg": "green"}, "dim": {"fg": "cyan"}}


def _styler(mode: str) -> _render.Style:
    """Colour only on a terminal, never when NO_COLOR is set (https://no-color.org)."""
    if mode == "never" or (mode == "auto" and (os.environ.get("NO_COLOR") or
                                               not sys.stdout.isatty())):
        return _render.plain

    def style(text: str, role: str) -> str:
        return click.style(text, **_COLORS.get(role, {})) if text else text

    return style


class _PipeClosed(Exception):
    """stdout was closed by the reader (not an OSError, so click does not turn it into 1)."""


def _write(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
    except BrokenPipeError:
        raise _PipeClosed from None


def _flush() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise _PipeClosed from None


def _emit(lines: Iterable[str]) -> None:
    for line in lines:
        _write(line)


def _fail(message: str, code: int) -> int:
    click.echo(f"avp-dump: {message}", err=True)
    return code


def _issue_text(i: Issue) -> str:
    where = f" ({i.path})" if i.path else ""
    return f"{i.code} {i.name} at offset {i.offset}{where}: {i.message}"


class _DumpCommand(click.Command):
    """``avp-dump FILE [view]``; ``avp-dump diff A B`` is dispatched to the diff command, so
    neither help nor usage errors ever name a command the user did not type. Exceptions no view
    should raise become one line and exit status 3."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        prog = prog_name or "avp-dump"
        try:
            if argv[:1] == ["diff"]:
                return diff_cmd.main(argv[1:], f"{prog} diff", complete_var, standalone_mode,
                                     **extra)
            return super().main(argv, prog, complete_var, standalone_mode, **extra)
        except (_PipeClosed, BrokenPipeError):
            _quiet_stdout()
            sys.exit(EXIT_PIPE)
        except KeyboardInterrupt:
            sys.exit(_fail("interrupted", 130))
        except Exception as exc:  # a bug: report it on one line, never a traceback
            if os.environ.get("AVP_DUMP_TRACEBACK"):
                traceback.print_exc()
            sys.exit(_fail(f"internal error: {type(exc).__name__}: {exc} (a bug in avp-dump "
                           "or avp_codec; AVP_DUMP_TRACEBACK=1 shows where)", EXIT_INTERNAL))


def _quiet_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


_MAIN_HELP = """Inspect AVP messages (.avp files or streams), valid or broken.

\b
Views of one message (FILE; '-' reads standard input):
  avp-dump FILE                     summary of the header and tensor table (data not read)
  avp-dump FILE --verify            ... also check every tensor's CRC and zstd frame
  avp-dump FILE --json [--facts]    canonical JSON (spec 18) [+ offsets, checksums, issues]
  avp-dump FILE --map               every byte range: field, padding, CRC, data
  avp-dump FILE --hex [--hex-data N]  annotated hexdump
  avp-dump FILE --explain OFFSET    which field byte OFFSET belongs to
  avp-dump FILE --issues [--json]   every departure from the spec, with codes
  avp-dump FILE --stats [--tensor SEL] [--json]   per-tensor value statistics
Comparing two messages:
  avp-dump diff A B                 what differs (valid or not); 'avp-dump diff --help'
"""


@click.command("avp-dump", cls=_DumpCommand, help=_MAIN_HELP, epilog=_EXIT_HELP,
               context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=str)
@click.option("--json", "as_json", is_flag=True,
              help="Canonical JSON (avp_codec.dumps_canonical_json), or JSON of --issues / "
                   "--stats.")
@click.option("--facts", is_flag=True,
              help="With --json: wrap as {canonical, dump} adding dump-only facts (offsets, "
                   "checksums, issues).")
@click.option("--map", "as_map", is_flag=True, help="Every byte range: fields, padding, data.")
@click.option("--hex", "as_hex", is_flag=True, help="Annotated hexdump.")
@click.option("--hex-data", default=32, show_default=True, type=click.IntRange(0),
              help="Bytes of each tensor's data shown by --hex.")
@click.option("--explain", "explain_at", type=str, metavar="OFFSET",
              help="Name the field that byte OFFSET (decimal or 0x hex) belongs to.")
@click.option("--issues", "as_issues", is_flag=True,
              help="Lenient full check (tensor data included): list every departure from the "
                   "spec with its section and error code.")
@click.option("--reference", is_flag=True,
              help="With --issues: also run avp_codec.decode and show its verdict (its first "
                   "error is the walker's first issue; this costs what decode costs).")
@click.option("--no-reference", is_flag=True, hidden=True)
@click.option("--verify", is_flag=True,
              help="Summary, --map, --hex, --explain: also read tensor data to check CRCs, "
                   "zstd frames and packed padding.")
@click.option("--stats", "as_stats", is_flag=True,
              help="Per-tensor min/max/mean/std, NaN/Inf counts, share of zeros.")
@click.option("--tensor", "selectors", multiple=True, metavar="SEL",
              help="With --stats: tensor N, or LAYER:ROLE or LAYER/ROLE (0:KEY, msg:TOKEN_IDS, "
                   "*/VALUE); repeatable.")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True, help="Colour (auto: only on a terminal without NO_COLOR).")
def main(file: str, as_json: bool, facts: bool, as_map: bool, as_hex: bool, hex_data: int,
         explain_at: str | None, as_issues: bool, reference: bool, no_reference: bool,
         verify: bool, as_stats: bool, selectors: tuple[str, ...], color: str) -> None:
    views = [as_map, as_hex, explain_at is not None, as_issues, as_stats]
    if sum(views) > 1:
        raise click.UsageError("choose one of --map, --hex, --explain, --issues, --stats")
    if facts and not as_json:
        raise click.UsageError("--facts only goes with --json")
    if as_json and (as_map or as_hex or explain_at is not None):
        raise click.UsageError("--json goes with the summary, --issues or --stats")
    if selectors and not as_stats:
        raise click.UsageError("--tensor only goes with --stats")
    if reference and not as_issues:
        raise click.UsageError("--reference only goes with --issues")
    offset = None
    if explain_at is not None:
        try:
            offset = int(explain_at, 0)
        except ValueError:
            raise click.BadParameter(f"{explain_at!r} is not an offset",
                                     param_hint="--explain") from None
    if as_stats:
        for sel in selectors:  # a bad selector is a usage error before any input is read
            try:
                _stats.parse_selector(sel)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--tensor") from None
    style = _styler(color)
    name = "<stdin>" if file == "-" else file
    try:
        with open_input(file) as buf:
            code = _show(buf, name, style, as_json=as_json, facts=facts, as_map=as_map,
                         as_hex=as_hex, hex_data=hex_data, offset=offset, as_issues=as_issues,
                         reference=reference and not no_reference, verify=verify,
                         as_stats=as_stats,
                         selectors=list(selectors))
            _flush()
    except InputError as exc:
        code = _fail(str(exc), EXIT_USAGE)
    sys.exit(code)


def _show(buf: BufferLike, name: str, style: _render.Style, *, as_json: bool, facts: bool,
          as_map: bool, as_hex: bool, hex_data: int, offset: int | None, as_issues: bool,
          reference: bool, verify: bool, as_stats: bool, selectors: list[str]) -> int:
    if as_issues:
        w = walk(buf, verify_data=True)
        ref = _reference_verdict(buf) if reference else None
        if as_json:
            _write(json.dumps(_issues_json(w, ref), indent=2, sort_keys=True))
        else:
            _emit(_issues_text(w, name, ref, style))
        return EXIT_VALID if w.valid else EXIT_INVALID
    if as_stats:
        return _stats_view(buf, selectors, as_json, style)
    if as_json:
        return _json_view(buf, facts)
    if as_map:
        w = _bytemap.byte_map(buf, _write, style, verify=verify)
    elif as_hex:
        w = _bytemap.hexdump(buf, _write, hex_data, style, verify=verify)
    elif offset is not None:
        try:
            w, lines = _bytemap.explain(buf, offset, verify=verify)
        except ValueError as exc:
            return _fail(str(exc), EXIT_USAGE)
        _emit(lines)
    else:
        w = walk(buf, verify_data=verify)
        _emit(_render.summary(w, name, style))
    return EXIT_VALID if w.valid else EXIT_INVALID


def _reference_verdict(buf: BufferLike) -> dict[str, Any]:
    """What avp_codec.decode says, shown next to the walker's findings as a cross-check (asked
    for with --reference: decode holds the whole message, compressed tensors decompressed, so
    it is outside the views' memory ceiling)."""
    import avp_codec as avp

    try:
        avp.decode(buf)
    except avp.AvpError as exc:
        return {"valid": False, "code": int(exc.code), "name": exc.code.name,
                "offset": exc.offset, "path": exc.path}
    except Exception as exc:  # a decoder bug must not hide the walker's report
        return {"valid": False, "code": None, "name": f"crash: {type(exc).__name__}: {exc}",
                "offset": None, "path": ""}
    return {"valid": True}


def _issue_dict(i: Issue) -> dict[str, Any]:
    return {"code": i.code, "name": i.name, "offset": i.offset, "spec": i.spec, "path": i.path,
            "message": i.message}


def _issues_json(w: Walk, ref: dict[str, Any] | None) -> dict[str, Any]:
    doc = {"valid": w.valid, "complete": w.complete, "size": w.size,
           "issues": [_issue_dict(i) for i in w.issues], "issues_not_listed": w.issues_dropped}
    if ref is not None:
        doc["reference_decoder"] = ref
    return doc


def _issues_text(w: Walk, name: str, ref: dict[str, Any] | None,
                 style: _render.Style) -> list[str]:
    out = [f"{style('file', 'head')}  {name}  ({w.size:,} bytes)"]
    if w.issues:
        out += _render.issue_lines(w.issues, w.issues_dropped, style)
    if w.valid:
        out.append(style("result  valid: no departures from the spec", "ok"))
    else:
        n = len(w.issues) + w.issues_dropped
        first = f" (first: {w.issues[0].code} {w.issues[0].name})" if w.issues else ""
        out.append(style(f"result  INVALID: {_render.plural(n, 'issue')}{first}", "bad"))
    if ref is None:
        pass
    elif ref["valid"]:
        out.append("reference decoder  accepts the message")
    else:
        out.append(f"reference decoder  rejects: {ref['code']} {ref['name']} at "
                   f"{ref['path'] or '-'} (offset {ref['offset']})")
    return out


def _json_view(buf: BufferLike, facts: bool) -> int:
    import avp_codec as avp

    try:
        msg = avp.decode(buf)
    except avp.AvpError as exc:
        _write(json.dumps({"error": {"code": int(exc.code), "name": exc.code.name,
                                     "offset": exc.offset, "path": exc.path}}, sort_keys=True))
        return EXIT_INVALID
    if not facts:
        # Streamed: the text of a 15 MiB metadata list or of a bomb's digests is never held
        # whole (write_canonical_json keeps one chunk at a time).
        try:
            avp.write_canonical_json(msg, sys.stdout)
        except BrokenPipeError:
            raise _PipeClosed from None
        _write("")
        return EXIT_VALID
    canonical = avp.to_canonical_json(msg)
    del msg
    w = walk(buf, verify_data=True)
    doc = {"canonical": canonical, "dump": _facts(w)}
    _write(json.dumps(doc, indent=2, sort_keys=True))
    return EXIT_VALID if w.valid else EXIT_INVALID


def _facts(w: Walk) -> dict[str, Any]:
    """Dump-only facts: where things are in the file and what was checked."""
    return {"size": w.size, "format": {"major": w.major, "minor": w.minor},
            "header_offset": w.header_offset,
            "index_offset": w.index.offset if w.index else None,
            "trailer_offset": w.trailer_offset,
            "authenticated_tag": w.index.auth_tag.hex() if w.index and w.index.auth_tag else None,
            "tensors": [{"section_offset": t.section_offset, "data_offset": t.data_offset,
                         "stored_length": t.stored_length, "data_crc": f"{t.data_crc:08x}",
                         "crc_status": t.crc_status} for t in w.tensors],
            "issues": [_issue_dict(i) for i in w.issues]}


def _stats_view(buf: BufferLike, selectors: list[str], as_json: bool,
                style: _render.Style) -> int:
    w = walk(buf, verify_data=True)
    if not w.valid:
        first = w.first
        why = _issue_text(first) if first is not None else "the input ends early"
        return _fail(f"no statistics: the message is invalid: {why}", EXIT_INVALID)
    try:
        chosen = _stats.select(w.tensors, selectors)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tensor") from None
    rows = list(_stats.stats_rows(buf, w, chosen))
    if as_json:
        _write(json.dumps(rows, indent=2, sort_keys=True))
    else:
        _emit(_render.table([_stats.STATS_HEADER] + [_stats.stats_cells(r) for r in rows],
                            right=frozenset(range(4, 12))))
    refused = [r for r in rows if r["error"] is not None]
    if refused:
        e = refused[0]["error"]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        return _fail(f"tensor {refused[0]['tensor']} cannot be dequantized: {e['code']} "
                     f"{e['name']} ({e['path']}): {e['message']}{more}; its row shows the "
                     "stored codes", EXIT_INVALID)
    return EXIT_VALID


@click.command("diff", epilog=_DIFF_EXIT_HELP,
               context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file_a", metavar="A", type=str)
@click.argument("file_b", metavar="B", type=str)
def diff_cmd(file_a: str, file_b: str) -> None:
    """What differs between two AVP messages, valid or not.

    Says what decodes in each (valid, or the first issue: where a decoder stops), where the two
    byte streams part, then every difference in what both could be read as: header, metadata
    entries by key, layers, tensors paired by (layer, role, token_offset) with the SHA-256 of
    their raw bytes and, for same-shaped intact tensors, the largest difference between values.
    A or B may be '-' for standard input (not both).
    """
    from ._diff import diff

    if file_a == file_b == "-":
        raise click.UsageError("only one of A and B can be standard input")
    names = tuple("<stdin>" if f == "-" else f for f in (file_a, file_b))
    try:
        with open_input(file_a) as a, open_input(file_b) as b:
            wa, wb = walk(a, verify_data=True), walk(b, verify_data=True)
            lines = diff(a, b, wa, wb, (names[0], names[1]))
            same = not lines
            _emit(lines or ["identical"])
            _flush()
    except InputError as exc:
        sys.exit(_fail(str(exc), EXIT_USAGE))
    sys.exit(EXIT_VALID if same else EXIT_INVALID)


if __name__ == "__main__":
    main()
