"""Content-addressed storage of AVP messages (spec/avp-http.md 2.3, 2.4).

A ``MessageStore`` keeps whole messages as files named by their digest in one directory, bounded
in total bytes and count (least recently used first out), and indexes KV_CACHE messages by
(MODEL_ID, prefix digest) for the lookup before transfer. Bodies arrive through a
``StoreWriter``: bytes go to a temporary file as they are received, the digest is computed on the
way, and the file becomes visible under its digest only on ``commit`` (after the decoder's end
event, R-H2.11); ``abort`` removes it. Stored files are never modified, so readers may keep a file
open (or mapped) while it is evicted.

Thread-safe: the server writes from worker threads and reads from the event loop.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import avp_codec as avp

from ._media import is_hex64, kv_prefix_key


@dataclass(frozen=True)
class Stored:
    digest: str
    path: Path
    size: int
    prefix: tuple[str, str, int] | None  # (model_id hex, prefix digest, n) for KV_CACHE


class StoreWriter:
    """One message being received into the store. Not thread-safe (one request uses it)."""

    def __init__(self, store: MessageStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(prefix=".incoming-", suffix=".avp", dir=store.directory)
        self._file = os.fdopen(fd, "wb")
        self._path = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def digest(self) -> str:
        return self._hash.hexdigest()

    def commit(self, prefix: tuple[str, str, int] | None = None) -> tuple[Stored, bool]:
        """Make the message visible under its digest; returns (entry, newly stored)."""
        self._file.close()
        self._done = True
        return self._store._adopt(self._path, self.digest(), self.size, prefix)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._file.close()
            self._path.unlink(missing_ok=True)


class MessageStore:
    """Messages by digest in ``directory`` (a private temporary one when None)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None, *,
                 max_bytes: int = 8 << 30, max_messages: int = 10_000) -> None:
        if directory is None:
            self._tmp: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(
                prefix="avp-store-")
            directory = self._tmp.name
        else:
            self._tmp = None
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Stored] = OrderedDict()  # LRU order, oldest first
        self._prefixes: dict[tuple[str, str], str] = {}
        self._bytes = 0
        for p in sorted(self.directory.glob("*.avp")):  # a directory kept from an earlier run
            if is_hex64(p.stem):
                self._index_existing(p)
            elif p.name.startswith(".incoming-"):
                p.unlink(missing_ok=True)

    def _index_existing(self, path: Path) -> None:
        try:
            msg = avp.decode_file(path)
        except (avp.AvpError, OSError):
            path.unlink(missing_ok=True)
            return
        ids = next((t for t in msg.tensors if t.role == avp.Role.TOKEN_IDS), None)
        self._adopt(path, path.stem, path.stat().st_size, kv_prefix_key(msg, ids), rename=False)

    # -- writing ------------------------------------------------------------------------
    def writer(self) -> StoreWriter:
        return StoreWriter(self)

    def put_bytes(self, data: bytes | bytearray | memoryview) -> str:
        """Store a complete message after decoding it (any AvpError propagates); its digest."""
        msg = avp.decode(data)
        return self.put_message(msg, _bytes=data)

    def put_message(self, msg: avp.Message, *,
                    _bytes: bytes | bytearray | memoryview | None = None) -> str:
        """Encode (streaming, into the store's file) and store ``msg``; returns its digest.
        How a sender hosts a large payload for a peer to fetch by reference."""
        w = self.writer()
        try:
            if _bytes is not None:
                w.write(_bytes)
            else:
                avp.encode_to(msg, w)
            ids = next((t for t in msg.tensors if t.role == avp.Role.TOKEN_IDS), None)
            stored, _ = w.commit(kv_prefix_key(msg, ids))
        except BaseException:
            w.abort()
            raise
        return stored.digest

    def _adopt(self, tmp: Path, digest: str, size: int, prefix: tuple[str, str, int] | None,
               *, rename: bool = True) -> tuple[Stored, bool]:
        final = self.directory / f"{digest}.avp"
        with self._lock:
            have = self._items.get(digest)
            if have is not None:
                if rename:
                    tmp.unlink(missing_ok=True)
                self._items.move_to_end(digest)
                return have, False
            if rename:
                os.replace(tmp, final)
            entry = Stored(digest, final, size, prefix)
            self._items[digest] = entry
            self._bytes += size
            if prefix is not None:
                self._prefixes[(prefix[0], prefix[1])] = digest
            self._evict(keep=digest)
            return entry, True

    def _evict(self, keep: str) -> None:
        while (self._bytes > self.max_bytes or len(self._items) > self.max_messages) and \
                len(self._items) > 1:
            digest, old = next(iter(self._items.items()))
            if digest == keep:
                break
            self._drop(digest, old)

    def _drop(self, digest: str, old: Stored) -> None:
        del self._items[digest]
        self._bytes -= old.size
        if old.prefix is not None and self._prefixes.get(old.prefix[:2]) == digest:
            del self._prefixes[old.prefix[:2]]
        old.path.unlink(missing_ok=True)

    def remove(self, digest: str) -> bool:
        with self._lock:
            old = self._items.get(digest)
            if old is None:
                return False
            self._drop(digest, old)
            return True

    # -- reading ------------------------------------------------------------------------
    def get(self, digest: str) -> Stored | None:
        with self._lock:
            entry = self._items.get(digest)
            if entry is not None:
                self._items.move_to_end(digest)
            return entry

    def lookup(self, model_id_hex: str, prefix_hex: str) -> Stored | None:
        """The stored KV_CACHE for a model and token prefix (R-H2.14), or None."""
        with self._lock:
            digest = self._prefixes.get((model_id_hex, prefix_hex))
        return self.get(digest) if digest is not None else None

    def message(self, digest: str, **decode_kw: object) -> avp.Message | None:
        """A stored message decoded from its file (zero-copy over a read-only map)."""
        entry = self.get(digest)
        if entry is None:
            return None
        return avp.decode_file(entry.path, **decode_kw)  # type: ignore[arg-type]

    def __contains__(self, digest: object) -> bool:
        with self._lock:
            return digest in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
