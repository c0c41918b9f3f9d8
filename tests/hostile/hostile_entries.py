"""The public entry points the hostile corpus is run through, one small registered function each.

An entry takes the case's bytes (and the same bytes as a file, for the entry points that read
files) and either returns a one-line summary (the input was accepted) or raises. The runner
(hostile_runner.py) calls each in a forked child and judges it by the contract: AvpError with a
registry code, or success; never another exception, a hang, or memory beyond the output asked
for plus 64 MiB. CLI entries (avp-dump) are judged by exit status and, for a usage or input
error (exit 2), by printing one line.

To cover a new entry point (the HTTP endpoints, say), register a function here:

    @entry("http.post", group="http")
    def _http_post(data: bytes, path: Path, env: Env) -> str: ...
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import avp_codec as avp


@dataclass(frozen=True)
class Entry:
    name: str
    group: str  # codec, json, dump, runtime: the part of the project the entry point is in
    takes: str  # "avp" (message bytes) or "json" (a runner JSON document)
    run: Callable[[bytes, Path, Env], str]
    cli: bool = False


ENTRIES: dict[str, Entry] = {}


def entry(name: str, *, group: str, takes: str = "avp", cli: bool = False
          ) -> Callable[[Callable[[bytes, Path, Env], str]], Callable[[bytes, Path, Env], str]]:
    def register(fn: Callable[[bytes, Path, Env], str]) -> Callable[[bytes, Path, Env], str]:
        ENTRIES[name] = Entry(name, group, takes, fn, cli)
        return fn
    return register


@dataclass
class Env:
    """What the entries need, built once in the runner before any child is forked."""

    tmp: Path
    connector: Any = None  # a tiny random Llama with SmolLM2's tokenizer and vocabulary size
    local: Any = None  # the runtime's handshake LocalSide for that connector
    reference: Path | None = None  # a small valid message (the other side of avp-dump diff)
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, tmp: Path) -> Env:
        import torch
        from avp_runtime import handshake as hs
        from avp_runtime import identity, models
        from avp_runtime.connector import Connector
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        torch.set_num_threads(1)
        tok = AutoTokenizer.from_pretrained(str(models.resolve(models.DEFAULT_MODEL)[1]))
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=512)
        c = Connector(LlamaForCausalLM(cfg).eval(), tok, name="hostile-tiny")
        c.spec  # probe now, not inside a child  # noqa: B018
        # The control tokens a prompt gets from the template alone (the text oracle's baseline).
        controls = len([i for i in c.encode_prompt("") if i in _controls(c)])
        vocab = identity.vocabulary(tok)
        local = hs.LocalSide(agent_name="hostile", model_id=c.model_id,
                             tokenizer_id=c.tokenizer_id, vocabulary=vocab,
                             known_vocabularies={c.tokenizer_id: vocab})
        ref = tmp / "reference.avp"
        ref.write_bytes(c.export_bytes(c.prefill([1, 2, 3])))
        return cls(tmp, c, local, ref, {"prompt_controls": controls})


def _controls(c: Any) -> frozenset[int]:
    from avp_runtime import prompts

    return prompts.control_ids(c.tokenizer)


# ---------------------------------------------------------------- codec


@entry("decode", group="codec")
def _decode(data: bytes, path: Path, env: Env) -> str:
    m = avp.decode(data)
    return f"{m.kind.name}, {len(m.tensors)} tensors"


@entry("decoder", group="codec")
def _decoder(data: bytes, path: Path, env: Env) -> str:
    dec = avp.Decoder()
    dec.feed(data)
    dec.end_of_input()
    n = 0
    while True:
        ev = dec.next_event()
        if ev is avp.NEED_DATA:
            raise RuntimeError("Decoder wants data after end_of_input()")
        n += 1
        if isinstance(ev, avp.EndEvent):
            return f"{n} events"


@entry("indexed", group="codec")
def _indexed(data: bytes, path: Path, env: Env) -> str:
    r = avp.IndexedReader(data)
    for i in range(len(r)):
        r.tensor(i).raw_bytes()
    return f"{len(r)} tensors"


@entry("decode_file", group="codec")
def _decode_file(data: bytes, path: Path, env: Env) -> str:
    return f"{len(avp.decode_file(path).tensors)} tensors"


@entry("accessors", group="codec")
def _accessors(data: bytes, path: Path, env: Env) -> str:
    m = avp.decode(data)
    avp.dumps_canonical_json(m)
    for t in m.tensors:
        t.raw_bytes()
        t.values()
    return f"{len(m.tensors)} tensors read"


@entry("canonical", group="codec")
def _canonical(data: bytes, path: Path, env: Env) -> str:
    m = avp.decode(data)
    stored = b"".join(bytes(t.stored) for t in m.tensors)
    back = avp.from_canonical_json(json.loads(avp.dumps_canonical_json(m)), stored)
    return f"re-encoded {len(avp.encode(back))} bytes"


@entry("dequantize", group="codec")
def _dequantize(data: bytes, path: Path, env: Env) -> str:
    from avp_codec import quant

    m = quant.dequantize_message(avp.decode(data))
    return f"{sum(t.raw_length for t in m.tensors)} bytes dequantized"


def _strict_json(data: bytes) -> Any:
    """The codec's own strict RFC 8259 parser (the one its JSON inputs go through), else the
    standard library's."""
    try:
        from avp_codec._json import loads
    except ImportError:  # pragma: no cover - a codec without it
        return json.loads(data)
    return loads(data)


@entry("json.from_canonical", group="json", takes="json")
def _from_canonical(data: bytes, path: Path, env: Env) -> str:
    obj = _strict_json(data)
    m = avp.from_canonical_json(obj["document"], bytes.fromhex(obj["stored"]))
    return f"encoded {len(avp.encode(m))} bytes"


# ---------------------------------------------------------------- avp-dump


class _Count(io.TextIOBase):
    """A stdout that counts what is written and keeps none of it."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, s: str) -> int:
        self.n += len(s)
        return len(s)


def _dump(args: list[str]) -> str:
    from avp_tools.dump_cli import main

    out, err = _Count(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # type: ignore[type-var]
        try:
            main.main(args, prog_name="avp-dump", standalone_mode=True)
        except SystemExit as e:
            code = e.code
    lines = err.getvalue().splitlines()
    if code not in (0, 1, 2):
        raise RuntimeError(f"avp-dump exited with {code!r}")
    if code == 2 and len(lines) != 1:
        raise RuntimeError(f"avp-dump exit 2 printed {len(lines)} lines, not one: {lines[:3]}")
    return f"exit {code}, {out.n} chars out"


for _view, _flags in [("summary", []), ("json", ["--json"]), ("map", ["--map"]),
                      ("hex", ["--hex"]), ("issues", ["--issues"]), ("stats", ["--stats"])]:
    def _make(flags: list[str]) -> Callable[[bytes, Path, Env], str]:
        return lambda data, path, env: _dump(["show", *flags, "--color", "never", str(path)])
    entry(f"dump.{_view}", group="dump", cli=True)(_make(_flags))


@entry("dump.diff", group="dump", cli=True)
def _dump_diff(data: bytes, path: Path, env: Env) -> str:
    return _dump(["diff", str(env.reference), str(path)])


# ---------------------------------------------------------------- runtime


@entry("runtime.import", group="runtime")
def _runtime_import(data: bytes, path: Path, env: Env) -> str:
    ctx = env.connector.import_(data)
    return f"context of {ctx.context_length}"


@entry("runtime.generate", group="runtime")
def _runtime_generate(data: bytes, path: Path, env: Env) -> str:
    c = env.connector
    g = c.generate([42], context=c.import_(data), max_new_tokens=2)
    return f"generated {len(g.token_ids)}"


@entry("runtime.projection", group="runtime")
def _runtime_projection(data: bytes, path: Path, env: Env) -> str:
    from avp_runtime import projection as proj

    c = env.connector
    got = proj.receive(data, c, new_tokens=2)
    proj.generate_after(c, got, max_new_tokens=2)
    return f"projection of {got.states.shape[1]} after {got.context_ids.shape[1]} ids"


@entry("runtime.text", group="runtime")
def _runtime_text(data: bytes, path: Path, env: Env) -> str:
    from avp_runtime import prompts

    c = env.connector
    text = prompts.read_text(data)
    ids = c.encode_prompt(text)
    controls = len([i for i in ids if i in _controls(c)])
    want = env.extras["prompt_controls"]
    if controls != want:  # the oracle: control tokens come from the template only
        raise RuntimeError(f"{controls - want} control tokens came from the text")
    g = c.generate(text, max_new_tokens=2)
    return f"{len(ids)} prompt ids, generated {len(g.token_ids)}"


@entry("runtime.handshake", group="runtime")
def _runtime_handshake(data: bytes, path: Path, env: Env) -> str:
    from avp_runtime import handshake as hs

    reply, res = hs.Responder(env.local).handle_hello(avp.decode(data, limits=hs.LIMITS))
    avp.decode(avp.encode(reply))
    return f"replied {reply.kind.name}" + (f" ({res.mode.name})" if res is not None else "")


def select(names: list[str] | None) -> list[Entry]:
    """Entries by name or group (all when None), in registration order."""
    if not names:
        return list(ENTRIES.values())
    out = [e for e in ENTRIES.values() if e.name in names or e.group in names]
    unknown = set(names) - {e.name for e in ENTRIES.values()} - {e.group for e in out}
    if unknown:
        sys.exit(f"unknown entry points or groups: {sorted(unknown)}")
    return out
