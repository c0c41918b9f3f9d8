"""``avp-dump``: the command-line wrapper.  All the work is in the library modules; this file only
parses options, opens the input and maps outcomes to exit statuses."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from . import _bytemap, _render, _stats
from ._ctx import BufferLike
from ._model import Walk
from ._source import InputError, open_input
from ._walker import walk

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2

_EXIT_HELP = """\b
Exit status:
  0  the message is valid (for the checks the chosen view makes)
  1  the message is invalid: at least one departure from the spec
  2  usage error, or the input could not be read"""

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


def _emit(lines: list[str]) -> None:
    click.echo("\n".join(lines), color=True)


class _DefaultGroup(click.Group):
    """``avp-dump FILE`` means ``avp-dump show FILE``; ``avp-dump diff A B`` is the other verb."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_EXIT_HELP)
def main() -> None:
    """Inspect AVP messages (.avp files or streams), valid or broken.

    \b
    avp-dump [OPTIONS] FILE      summary / --json / --map / --hex / --explain / --issues / --stats
    avp-dump diff A B            what differs between two messages

    FILE may be '-' for standard input.  Run 'avp-dump show --help' for the options.
    """


@main.command(epilog=_EXIT_HELP)
@click.argument("file", type=str)
@click.option("--json", "as_json", is_flag=True,
              help="Canonical JSON (avp.to_canonical_json), or JSON of --issues / --stats.")
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
@click.option("--no-reference", is_flag=True,
              help="With --issues: skip the cross-check with avp_codec.decode.")
@click.option("--verify", is_flag=True,
              help="Summary: also read tensor data to check CRCs and zstd frames.")
@click.option("--stats", "as_stats", is_flag=True,
              help="Per-tensor min/max/mean/std, NaN/Inf counts, share of zeros.")
@click.option("--tensor", "selectors", multiple=True, metavar="SEL",
              help="With --stats: tensor N, or LAYER:ROLE or LAYER/ROLE (0:KEY, msg:TOKEN_IDS, "
                   "*/VALUE); repeatable.")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True, help="Colour (auto: only on a terminal without NO_COLOR).")
def show(file: str, as_json: bool, facts: bool, as_map: bool, as_hex: bool, hex_data: int,
         explain_at: str | None, as_issues: bool, no_reference: bool, verify: bool,
         as_stats: bool, selectors: tuple[str, ...], color: str) -> None:
    """Show one AVP message.  Default: a header-only summary (tensor data is not read)."""
    views = [as_map, as_hex, explain_at is not None, as_issues, as_stats]
    if sum(views) > 1:
        raise click.UsageError("choose one of --map, --hex, --explain, --issues, --stats")
    if facts and not as_json:
        raise click.UsageError("--facts only goes with --json")
    if selectors and not as_stats:
        raise click.UsageError("--tensor only goes with --stats")
    if no_reference and not as_issues:
        raise click.UsageError("--no-reference only goes with --issues")
    offset = None
    if explain_at is not None:
        try:
            offset = int(explain_at, 0)
        except ValueError:
            raise click.BadParameter(f"{explain_at!r} is not an offset",
                                     param_hint="--explain") from None
    style = _styler(color)
    name = "<stdin>" if file == "-" else file
    try:
        with open_input(file) as buf:
            code = _show(buf, name, style, as_json=as_json, facts=facts, as_map=as_map,
                         as_hex=as_hex, hex_data=hex_data, offset=offset, as_issues=as_issues,
                         reference=not no_reference, verify=verify, as_stats=as_stats,
                         selectors=list(selectors))
    except InputError as exc:
        click.echo(f"avp-dump: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(code)


def _show(buf: BufferLike, name: str, style: _render.Style, *, as_json: bool, facts: bool,
          as_map: bool, as_hex: bool, hex_data: int, offset: int | None, as_issues: bool,
          reference: bool, verify: bool, as_stats: bool, selectors: list[str]) -> int:
    if as_issues:
        w = walk(buf, verify_data=True)
        ref = _reference_verdict(buf) if reference else None
        if as_json:
            click.echo(json.dumps(_issues_json(w, ref), indent=2, sort_keys=True))
        else:
            _emit(_issues_text(w, name, ref, style))
        return EXIT_VALID if w.valid else EXIT_INVALID
    if as_stats:
        return _stats_view(buf, selectors, as_json, style)
    if as_json:
        return _json_view(buf, facts)
    spans = as_map or as_hex or offset is not None
    w = walk(buf, verify_data=verify, record_spans=spans)
    if as_map:
        _emit(_bytemap.byte_map(w, style))
    elif as_hex:
        _emit(_bytemap.hexdump(w, buf, hex_data, style))
    elif offset is not None:
        try:
            _emit(_bytemap.explain(w, offset))
        except ValueError as exc:
            click.echo(f"avp-dump: {exc}", err=True)
            return EXIT_USAGE
    else:
        _emit(_render.summary(w, name, style))
    return EXIT_VALID if w.valid else EXIT_INVALID


def _decode(buf: BufferLike) -> Any:
    import avp_codec as avp

    return avp.decode(buf)


def _reference_verdict(buf: BufferLike) -> dict[str, Any]:
    """What avp_codec.decode says, shown next to the walker's findings as a cross-check."""
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


def _issue_dict(i: Any) -> dict[str, Any]:
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
        out.append(style(f"result  INVALID: {n} issue{'s' if n != 1 else ''}{first}", "bad"))
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
        click.echo(json.dumps({"error": {"code": int(exc.code), "name": exc.code.name,
                                         "offset": exc.offset, "path": exc.path}},
                              sort_keys=True))
        return EXIT_INVALID
    if not facts:
        click.echo(avp.dumps_canonical_json(msg))
        return EXIT_VALID
    w = walk(buf, verify_data=True)
    doc = {"canonical": avp.to_canonical_json(msg), "dump": _facts(w)}
    click.echo(json.dumps(doc, indent=2, sort_keys=True))
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
    import avp_codec as avp

    try:
        msg = avp.decode(buf)
    except avp.AvpError as exc:
        click.echo(f"avp-dump: cannot decode: {exc}", err=True)
        return EXIT_INVALID
    try:
        chosen = _stats.select(msg.tensors, selectors)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tensor") from None
    rows = _stats.stats_rows(msg, chosen)
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
    else:
        _emit(_render.table(_stats.stats_table(rows), right=frozenset(range(4, 12))))
    return EXIT_VALID


@main.command("diff", epilog=_EXIT_HELP.replace("is valid", "s are identical").replace(
    "is invalid: at least one departure from the spec", "s differ (or one is invalid)"))
@click.argument("file_a", type=str)
@click.argument("file_b", type=str)
def diff_cmd(file_a: str, file_b: str) -> None:
    """What differs between two messages: header, entries, layers, tensors (by digest and by
    max abs difference).  Both must decode."""
    import avp_codec as avp

    from ._diff import diff

    if file_a == file_b == "-":
        raise click.UsageError("only one of A and B can be standard input")
    try:
        with open_input(file_a) as a, \
                open_input(file_b) as b:
            msgs = []
            for label, buf in (("A", a), ("B", b)):
                try:
                    msgs.append(avp.decode(buf))
                except avp.AvpError as exc:
                    click.echo(f"avp-dump: {label} does not decode: {exc}", err=True)
                    sys.exit(EXIT_INVALID)
            lines = diff(walk(a), walk(b), msgs[0], msgs[1])
            del msgs
    except InputError as exc:
        click.echo(f"avp-dump: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if lines:
        _emit(lines)
        sys.exit(EXIT_INVALID)
    click.echo("identical")
    sys.exit(EXIT_VALID)


if __name__ == "__main__":
    main()
