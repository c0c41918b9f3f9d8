"""A message source that asks an AVP-over-HTTP receiver (spec/avp-http.md 2.3, 2.4).

    source: "avp_engines.sources:http_source"
    source_args: {"url": "http://10.0.0.5:8080/avp/v1", "token_file": "/run/avp-token"}

The receiver (``avp-serve``) indexes the KV_CACHE messages it stores by model and exact token
prefix (R-H2.14). The binding answers "do you hold exactly these n tokens?", not "what is the
longest prefix you hold?", so ``lookup`` asks for a bounded set of prefix lengths of the prompt,
longest first: the whole prompt and the ``tail`` lengths below it (a producer that saved a
prompt this one extends by a few tokens), then every multiple of ``block_size`` (what a paged
engine can take anyway). At most ``max_probes`` HEAD requests go out per lookup, on one
keep-alive connection. A hit's HEADER is read with byte ranges (Trailer, INDEX, HEADER: three
small requests) for the layer count and context length; ``load`` then fetches the message,
decoding it as it streams in and checking it against its digest (the key is the message's URL).
Every failure is an ``AvpError``, which the connector logs before computing the prompt itself
(at lookup) or reports to vLLM's load-error path (at load): an AVP error the receiver reported
keeps its code (``RemoteAvpError``); an HTTP problem (401, 404 after an eviction, 503) or a
transport failure becomes TRUNCATED with the reason, as the connector does for OSError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from avp_http import AvpClient, HttpProblem

import avp_codec as avp
from avp_codec import AvpError, ErrorCode

from .sources import Candidate


class HttpSource:
    def __init__(self, url: str, *, model_id: bytes | str | None = None,
                 token: str | None = None, token_file: str | None = None,
                 block_size: int = 16, tail: int = 8, max_probes: int = 64,
                 http2: bool = True, timeout: float = 30.0,
                 client: AvpClient | None = None) -> None:
        if model_id is None:
            raise AvpError(ErrorCode.MODEL_MISMATCH, "an HTTP source needs the engine's "
                           "model_id (the lookup is by model and token prefix)")
        self.model_id = bytes.fromhex(model_id) if isinstance(model_id, str) else bytes(model_id)
        if token is None and token_file is not None:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        if block_size < 1 or tail < 0 or max_probes < 1:
            raise ValueError("block_size and max_probes must be positive, tail non-negative")
        self.block_size, self.tail, self.max_probes = block_size, tail, max_probes
        self.client = client or AvpClient(url, token=token, http2=http2, timeout=timeout)
        self.errors: list[str] = []

    def close(self) -> None:
        self.client.close()

    def lengths(self, n: int) -> list[int]:
        """The prefix lengths a lookup of an n-token prompt asks for, in order."""
        want = list(range(n, max(n - self.tail, 0) - 1, -1))
        want += range(n // self.block_size * self.block_size, 0, -self.block_size)
        out: list[int] = []
        for k in want:
            if k > 0 and k not in out:
                out.append(k)
        return out[:self.max_probes]

    def lookup(self, token_ids: Sequence[int]) -> Candidate | None:
        ids = np.asarray(list(token_ids), dtype=np.int64).reshape(-1)
        # A latent position (-1) or an id beyond u32 has no prefix digest past it (2.4).
        bad = np.nonzero((ids < 0) | (ids > 0xFFFFFFFF))[0]
        usable = int(bad[0]) if bad.size else len(ids)
        wanted = self.lengths(usable)
        if not wanted:
            return None
        digests = _prefix_digests(ids[:usable].astype("<u4").tobytes(), set(wanted))
        try:
            for k in wanted:
                digest = self.client.lookup_digest(self.model_id, digests[k])
                if digest is None:
                    continue
                h = self.client.fetch_header(digest)
                ctx = next((e.value for e in h.entries
                            if e.key == avp.MetaKey.CONTEXT_LENGTH), k)
                return Candidate(f"{self.client.base}/messages/{digest}", self.model_id,
                                 int(ctx) if isinstance(ctx, int) else k, k, len(h.layers))
        except (httpx.HTTPError, HttpProblem) as e:
            raise AvpError(ErrorCode.TRUNCATED, f"lookup at {self.client.base} failed: "
                           f"{type(e).__name__}: {e}") from None
        return None

    def load(self, candidate: Candidate) -> avp.Message:
        return self.load_key(candidate.key)

    def load_key(self, key: str) -> avp.Message:
        """The message at ``key`` (a ``.../messages/{digest}`` URL), checked against the
        digest it is named by (2.3)."""
        try:
            return self.client.fetch_url(key)
        except (httpx.HTTPError, HttpProblem) as e:
            raise AvpError(ErrorCode.TRUNCATED, f"fetching {key} failed: "
                           f"{type(e).__name__}: {e}") from None

    def __enter__(self) -> HttpSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _prefix_digests(data: bytes, lengths: set[int]) -> dict[int, str]:
    """SHA-256 of the first 4k bytes for every k in ``lengths``, in one pass over the ids."""
    out: dict[int, str] = {}
    h = hashlib.sha256()
    done = 0
    for k in sorted(lengths):
        h.update(data[4 * done:4 * k])
        done = k
        out[k] = h.copy().hexdigest()
    return out
