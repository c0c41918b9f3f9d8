"""Where a consuming engine finds AVP KV_CACHE messages for a prompt.

A source answers two questions: `lookup(token_ids)` -- which stored message shares the longest
prefix with this prompt (reading only headers and TOKEN_IDS), and `load(candidate)` -- the whole
message. Built-in sources read a file or a directory of `*.avp` files, or ask an AVP-over-HTTP
receiver (`avp-serve`) through its prefix lookup (``HttpSource``, configured as
``"avp_engines.sources:http_source"``); any other (a KV store) plugs in as ``"module:factory"``
in the connector's configuration, the factory taking the configured arguments (and the
engine's ``model_id`` when it has such a parameter) and returning an object with these two
methods. A source may also offer ``load_key(key)``: the engine's worker, which sees only the
candidate's key, loads through it (``load_key`` below).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import avp_codec as avp
from avp_codec import AvpError, ErrorCode


@dataclass(frozen=True)
class Candidate:
    """A stored message that shares `matched` leading tokens with a prompt."""

    key: str
    model_id: bytes
    context_length: int
    matched: int
    n_layers: int


class MessageSource(Protocol):
    def lookup(self, token_ids: Sequence[int]) -> Candidate | None: ...

    def load(self, candidate: Candidate) -> avp.Message: ...


def common_prefix(a: np.ndarray, b: Sequence[int]) -> int:
    """Leading positions where the message's ids equal the prompt's (-1 never matches)."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.nonzero(a[:n] != np.asarray(b[:n], dtype=np.int64))[0]
    return int(diff[0]) if diff.size else n


@dataclass
class _Entry:
    stamp: tuple[int, int]
    model_id: bytes
    context_length: int
    n_layers: int
    token_ids: np.ndarray | None


def read_index_entry(path: Path) -> _Entry:
    """Header and TOKEN_IDS of a stored message, through random access (spec 11.3)."""
    st = path.stat()
    r = avp.IndexedReader.open(path)
    h = r.header
    if h.kind != avp.Kind.KV_CACHE:
        raise AvpError(ErrorCode.KIND_CONSTRAINT, f"{path.name} is a {avp.Kind(h.kind).name}")
    mid = next((e.value for e in h.entries if e.key == avp.MetaKey.MODEL_ID), b"")
    ctx = next((e.value for e in h.entries if e.key == avp.MetaKey.CONTEXT_LENGTH), 0)
    ids = None
    for i in range(len(r)):
        t = r.tensor(i)
        if t.layer is not None:
            break  # message-level tensors come first
        if t.role == avp.Role.TOKEN_IDS:
            ids = np.array(t.array()).reshape(-1).astype(np.int64)
    return _Entry((st.st_mtime_ns, st.st_size), bytes(mid) if isinstance(mid, bytes) else b"",
                  int(ctx) if isinstance(ctx, int) else 0, len(h.layers), ids)


class FileSource:
    """Messages in one file or in a directory of `*.avp` files (re-scanned on each lookup;
    headers are cached by modification time and size)."""

    def __init__(self, path: str | os.PathLike[str], *, model_id: bytes | None = None) -> None:
        self.path = Path(path)
        self.model_id = model_id
        self._index: dict[Path, _Entry] = {}
        self.errors: list[str] = []  # refusals seen while indexing (one line each)

    def _files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(self.path.glob("*.avp"))
        return [self.path] if self.path.exists() else []

    def _entry(self, p: Path) -> _Entry | None:
        try:
            st = p.stat()
            e = self._index.get(p)
            if e is None or e.stamp != (st.st_mtime_ns, st.st_size):
                e = read_index_entry(p)
                self._index[p] = e
            return e
        except (AvpError, OSError) as err:
            self.errors.append(f"{p.name}: {err}")
            return None

    def lookup(self, token_ids: Sequence[int]) -> Candidate | None:
        """The message sharing the most leading tokens with `token_ids` (possibly none: a
        candidate with `matched` 0 still comes back, so a caller can say why it was refused)."""
        best: Candidate | None = None
        for p in self._files():
            e = self._entry(p)
            if e is None:
                continue
            if e.token_ids is None:
                self.errors.append(f"{p.name}: no TOKEN_IDS, the prefix cannot be checked")
                continue
            if self.model_id is not None and e.model_id != self.model_id:
                continue
            m = common_prefix(e.token_ids, token_ids)
            if best is None or m > best.matched:
                best = Candidate(str(p), e.model_id, e.context_length, m, e.n_layers)
        return best

    def candidates(self) -> list[Candidate]:
        """Every readable message (for a source of one file: its refusal reasons matter)."""
        out = []
        for p in self._files():
            e = self._entry(p)
            if e is not None:
                out.append(Candidate(str(p), e.model_id, e.context_length, 0, e.n_layers))
        return out

    def load(self, candidate: Candidate) -> avp.Message:
        return avp.decode_file(candidate.key)


    def load_key(self, key: str) -> avp.Message:
        return avp.decode_file(key)


def make_source(spec: str, args: dict[str, Any] | None = None, *,
                model_id: bytes | None = None,
                engine_model_id: bytes | None = None) -> MessageSource:
    """A source from its configuration: a path (file or directory; ``model_id`` filters what
    it offers) or ``module:factory``. A factory with a ``model_id`` parameter that ``args``
    leaves out gets ``engine_model_id`` (the engine's own)."""
    if ":" in spec and not Path(spec).exists() and not spec.startswith("/"):
        mod, _, name = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError) as e:
            raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                           f"message source {spec!r} cannot be loaded: {e}") from None
        kw = dict(args or {})
        if (engine_model_id is not None and "model_id" not in kw
                and _takes(factory, "model_id")):
            kw["model_id"] = engine_model_id
        src: MessageSource = factory(**kw)
        return src
    return FileSource(spec, model_id=model_id)


def load_key(source: MessageSource | None, key: str) -> avp.Message:
    """The message a candidate's key names, through the source when it can load by key (an
    HTTP source: the key is a URL), else from the file the key names."""
    by_key = getattr(source, "load_key", None)
    if callable(by_key):
        msg: avp.Message = by_key(key)
        return msg
    return avp.decode_file(key)


def _takes(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def http_source(url: str, *, model_id: bytes | str | None = None, **kw: Any) -> MessageSource:
    """``source: "avp_engines.sources:http_source"``, ``source_args: {"url": ...}``: see
    ``avp_engines.http_source.HttpSource`` (imported here lazily: the HTTP binding is an
    optional extra)."""
    from .http_source import HttpSource

    return HttpSource(url, model_id=model_id, **kw)
