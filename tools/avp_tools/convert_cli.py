"""``avp-convert``: engine cache formats <-> AVP messages, a thin wrapper over avp_engines.

    avp-convert llama-state STATE OUT.avp --model-id HEX --kv-heads 3 --arch llama
    avp-convert to-llama-state IN.avp STATE --k-type f16 --v-type f16 --arch llama
    avp-convert lmcache BODY OUT.avp --model-id HEX --kv-heads 3 [--retrieve]
    avp-convert to-lmcache IN.avp BODY --model-name NAME --chunk-size 256 [--retrieve]

Exit status: 0 converted; 1 the input was refused (one line: the AVP error code and why);
2 usage error or an unreadable file.
"""

from __future__ import annotations

import mmap
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import avp_codec as avp

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
_HELP = """\b
Exit status:
  0  converted
  1  the input was refused (a malformed or unmappable cache; the line names the AVP error code)
  2  usage error, or a file could not be read or written"""


def _fail(code: int, text: str) -> None:
    click.echo(f"avp-convert: {text}", err=True)
    sys.exit(code)


def _read(path: str) -> Any:
    """The input as a read-only mapping (bytes for an empty file); exit 2 if unreadable."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        _fail(EXIT_USAGE, f"cannot read {path}: {e.strerror or e}")
        raise AssertionError from None  # unreachable: _fail exits


def _write(path: str, data: bytes) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        _fail(EXIT_USAGE, f"cannot write {path}: {e.strerror or e}")


def _model_id(hex_id: str | None, like: str | None, required: bool) -> bytes | None:
    if hex_id and like:
        _fail(EXIT_USAGE, "give --model-id or --model-id-like, not both")
    if hex_id:
        try:
            raw = bytes.fromhex(hex_id)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            _fail(EXIT_USAGE, "--model-id must be 64 hexadecimal digits")
        return raw
    if like:
        try:
            r = avp.IndexedReader.open(like)
        except OSError as e:
            _fail(EXIT_USAGE, f"cannot read {like}: {e.strerror or e}")
            raise AssertionError from None
        mid = next((e.value for e in r.header.entries if e.key == avp.MetaKey.MODEL_ID), None)
        if not isinstance(mid, bytes):
            _fail(EXIT_REFUSED, f"{like} carries no MODEL_ID")
            raise AssertionError
        return mid
    if required:
        _fail(EXIT_USAGE, "the state names no model: give --model-id HEX or --model-id-like "
                          "MSG.avp (the AVP identity of the checkpoint this engine runs)")
    return None


def _run(work: Callable[[], bytes], out: str, what: str) -> None:
    try:
        data = work()
    except avp.AvpError as e:
        _fail(EXIT_REFUSED, f"refused: {e}")
        return
    _write(out, data)
    click.echo(f"{what}: {len(data)} bytes -> {out}")


_mid = [click.option("--model-id", "model_id", metavar="HEX", help="MODEL_ID, 64 hex digits."),
        click.option("--model-id-like", metavar="MSG.avp",
                     help="Take MODEL_ID from another AVP message of the same model.")]


def _opts(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def wrap(f: Any) -> Any:
        for o in reversed(options):
            f = o(f)
        return f
    return wrap


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_HELP)
def main() -> None:
    """Convert engine KV-cache formats (llama.cpp state, LMCache v1) to AVP and back."""


@main.command("llama-state", epilog=_HELP)
@click.argument("state")
@click.argument("out")
@_opts(_mid)
@click.option("--kv-heads", type=click.IntRange(1), required=True, help="KV heads per layer.")
@click.option("--arch", help="GGUF general.architecture (fixes the key order), e.g. llama.")
@click.option("--key-order", type=click.Choice(["interleaved", "halves"]),
              help="Override the architecture's key order.")
@click.option("--form", type=click.Choice(["blob", "file", "raw"]),
              help="Framing of STATE (default: detected from its first word).")
@click.option("--cell-ext", is_flag=True, help="Cells carry M-RoPE/PLE extensions.")
@click.option("--model-name", help="MODEL_NAME entry (informational).")
@click.option("--no-rotation", is_flag=True, help="llama.cpp ran with LLAMA_ATTN_ROT_DISABLE=1: "
              "its quantized cache is not Hadamard-rotated.")
def llama_state(state: str, out: str, model_id: str | None, model_id_like: str | None,
                kv_heads: int, arch: str | None, key_order: str | None, form: str | None,
                cell_ext: bool, model_name: str | None, no_rotation: bool) -> None:
    """A llama.cpp sequence state (llama_state_seq_get_data bytes or a state file) -> AVP."""
    from avp_engines import llama

    mid = _model_id(model_id, model_id_like, True)
    assert mid is not None
    data = _read(state)
    model = llama.LlamaModel(kv_heads, arch, key_order,  # type: ignore[arg-type]
                             False if no_rotation else None)
    _run(lambda: avp.encode(llama.state_to_message(
        data, mid, model, form=form, cell_ext=cell_ext, model_name=model_name)),  # type: ignore[arg-type]
        out, "KV_CACHE")


@main.command("to-llama-state", epilog=_HELP)
@click.argument("message")
@click.argument("out")
@_opts(_mid)
@click.option("--k-type", default="f16", show_default=True,
              type=click.Choice(["f32", "f16", "bf16", "q8_0", "q4_0"]))
@click.option("--v-type", default="f16", show_default=True,
              type=click.Choice(["f32", "f16", "bf16", "q8_0", "q4_0"]))
@click.option("--v-trans", is_flag=True, help="The receiver runs without flash attention.")
@click.option("--arch", help="GGUF general.architecture of the receiver, e.g. llama.")
@click.option("--key-order", type=click.Choice(["interleaved", "halves"]))
@click.option("--form", default="blob", show_default=True,
              type=click.Choice(["blob", "file", "raw"]))
@click.option("--seq-id", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1))
@click.option("--no-rotation", is_flag=True, help="The receiver runs with "
              "LLAMA_ATTN_ROT_DISABLE=1 (quantized caches not Hadamard-rotated).")
def to_llama_state(message: str, out: str, model_id: str | None, model_id_like: str | None,
                   k_type: str, v_type: str, v_trans: bool, arch: str | None,
                   key_order: str | None, form: str, seq_id: int, no_rotation: bool) -> None:
    """An AVP KV_CACHE -> llama.cpp sequence state (checked against --model-id when given)."""
    from avp_engines import llama

    mid = _model_id(model_id, model_id_like, False)
    data = _read(message)
    target = llama.LlamaTarget(k_type, v_type, v_trans, arch, key_order,  # type: ignore[arg-type]
                               form, seq_id, 1,  # type: ignore[arg-type]
                               False if no_rotation else None)
    _run(lambda: llama.message_to_state(avp.decode(data), target, model_id=mid), out,
         f"llama.cpp {form} state")


@main.command("lmcache", epilog=_HELP)
@click.argument("body")
@click.argument("out")
@_opts(_mid)
@click.option("--kv-heads", type=click.IntRange(1), required=True)
@click.option("--retrieve", is_flag=True, help="BODY is a retrieve response (default: a store "
              "request).")
@click.option("--tokens", help="Comma-separated prompt token ids (a retrieve body has none).")
def lmcache_cmd(body: str, out: str, model_id: str | None, model_id_like: str | None,
                kv_heads: int, retrieve: bool, tokens: str | None) -> None:
    """An LMCache v1 stream body (store request or retrieve response) -> AVP."""
    from avp_engines import lmcache

    mid = _model_id(model_id, model_id_like, True)
    assert mid is not None
    ids = None
    if tokens:
        try:
            ids = [int(t) for t in tokens.split(",")]
        except ValueError:
            _fail(EXIT_USAGE, "--tokens must be comma-separated integers")
    data = _read(body)
    parse = lmcache.parse_retrieve if retrieve else lmcache.parse_store
    _run(lambda: avp.encode(lmcache.to_message(parse(data), mid, kv_heads, tokens=ids)), out,
         "KV_CACHE")


@main.command("to-lmcache", epilog=_HELP)
@click.argument("message")
@click.argument("out")
@_opts(_mid)
@click.option("--model-name", required=True, help="The model name LMCache registered.")
@click.option("--chunk-size", type=click.IntRange(1), required=True)
@click.option("--retrieve", is_flag=True, help="Write a retrieve response (default: a store "
              "request).")
@click.option("--world-size", default=1, show_default=True, type=click.IntRange(1))
@click.option("--dtype", type=click.Choice(["torch.float32", "torch.float16", "torch.bfloat16"]))
def to_lmcache(message: str, out: str, model_id: str | None, model_id_like: str | None,
               model_name: str, chunk_size: int, retrieve: bool, world_size: int,
               dtype: str | None) -> None:
    """An AVP KV_CACHE -> an LMCache v1 stream body (whole chunks only)."""
    from avp_engines import lmcache

    mid = _model_id(model_id, model_id_like, False)
    data = _read(message)

    def work() -> bytes:
        kv = lmcache.from_message(avp.decode(data), model_name=model_name,
                                  chunk_size=chunk_size, model_id=mid, dtype=dtype)
        if retrieve:
            return lmcache.encode_retrieve(kv, world_size=world_size)
        return lmcache.encode_store(kv)

    _run(work, out, "LMCache v1 body")


if __name__ == "__main__":  # pragma: no cover
    main()
