"""How this Transformers passes a cache to `forward`, found from the signature, not a version.

Transformers has renamed the keyword over time; a model whose `forward` accepts none of them
(its `**kwargs` would swallow any and build a cache of its own) is refused, and the first forward
pass checks that the cache it was given was filled (what a future API change looks like here).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

import avp_codec as avp

from . import cache_io

# The keywords under which Transformers' `forward` has taken the cache, newest first: `cache`
# (5.2x), `past_key_values` (attention models before that), `cache_params` (Mamba-style models
# before that). Chosen from the signature, never from a version string.
CACHE_KEYWORDS = ("cache", "past_key_values", "cache_params")


def _transformers_version() -> str:
    try:
        import transformers
    except ImportError:  # pragma: no cover - the runtime needs transformers to load a model
        return "not installed"
    return str(transformers.__version__)


def cache_keyword(model: Any, params: Any = None) -> str:
    """The keyword this model's `forward` takes its cache under (one of CACHE_KEYWORDS).

    A model whose signature names none of them (its `**kwargs` would swallow any of them and the
    forward pass would silently build a cache of its own) is refused with UNSUPPORTED_CAPABILITY.
    """
    if params is None:
        params = inspect.signature(model.forward).parameters
    for kw in CACHE_KEYWORDS:
        if kw in params:
            return kw
    raise avp.AvpError(
        avp.ErrorCode.UNSUPPORTED_CAPABILITY,
        f"{type(model).__name__}.forward takes its cache under none of {CACHE_KEYWORDS} "
        f"(transformers {_transformers_version()}); the runtime cannot pass it a KV-cache",
    )


def returned_cache(out: Any) -> Any:
    """The cache a forward pass returned (under whichever name this Transformers uses), or None."""
    for name in CACHE_KEYWORDS:
        got = getattr(out, name, None)
        if got is not None:
            return got
    return None


def check_cache_filled(model: Any, keyword: str, cache: Any, out: Any) -> None:
    """Fail at once, and say why, if a forward pass did not extend the cache it was given.

    This is what a future change of Transformers' cache API looks like from here: the model
    accepts the keyword (or swallows it in `**kwargs`), builds and returns a cache of its own,
    and the one handed in stays empty.
    """
    returned = returned_cache(out)
    filled = returned is cache if returned is not None else cache_io.cache_is_filled(cache)
    if not filled:
        raise avp.AvpError(
            avp.ErrorCode.UNSUPPORTED_CAPABILITY,
            f"{type(model).__name__}.forward did not fill the cache passed as `{keyword}=` "
            f"(transformers {_transformers_version()}): the installed Transformers changed how "
            "a cache is passed; see the README's tested version range",
        )


@dataclass
class Cursor:
    """Where the next forward pass of a continuation writes.

    `length` is the number of cached positions. For a context with padding (`mask`, over the
    cached positions) or positions other than 0..n-1 (`next_pos`, each row's next position) the
    forward pass gets that mask extended by ones and those positions; otherwise both are None
    and the forward pass uses an all-ones mask and positions from `length` (the common case,
    unchanged by any of this).
    """

    length: int
    mask: torch.Tensor | None = None  # [batch, length] int64
    next_pos: torch.Tensor | None = None  # [batch] int64

    @classmethod
    def after(cls, length: int, positions: torch.Tensor | None,
              mask: torch.Tensor | None) -> Cursor:
        plain = torch.arange(length, dtype=torch.long)
        if mask is None and (positions is None or positions.numel() == 0
                             or bool((positions == plain).all())):
            return cls(length)
        assert positions is not None
        real = mask.bool() if mask is not None else torch.ones_like(positions, dtype=torch.bool)
        # The next position follows each row's last real token (admit.py checked that the real
        # tokens' positions are consecutive, so this is also their maximum).
        last = torch.where(real, positions, torch.full_like(positions, -1)).amax(dim=1)
        return cls(length, None if mask is None else mask.to(torch.long), last + 1)

    def mask_for(self, n: int, device: torch.device) -> torch.Tensor:
        assert self.mask is not None
        m = self.mask.to(device)
        return torch.cat([m, torch.ones(m.shape[0], n, dtype=torch.long, device=device)], dim=1)

    def positions_for(self, n: int, device: torch.device) -> torch.Tensor:
        assert self.next_pos is not None
        return self.next_pos.to(device).unsqueeze(1) + torch.arange(n, device=device)

    def advance(self, n: int, batch: int) -> None:
        """Record `n` more real positions (the forward pass just wrote them)."""
        self.length += n
        if self.mask is not None:
            self.mask = torch.cat([self.mask, torch.ones(batch, n, dtype=torch.long)], dim=1)
        if self.next_pos is not None:
            self.next_pos = self.next_pos + n

    def new_positions(self, n: int, batch: int) -> torch.Tensor:
        """The positions of the next `n` tokens, `[batch, n]` (before `advance`)."""
        if self.next_pos is None:
            return torch.arange(self.length, self.length + n).unsqueeze(0).expand(batch, n)
        return self.next_pos.unsqueeze(1) + torch.arange(n)

    def frontier(self) -> int:
        """The largest position the next token takes (the cache length without a cursor)."""
        if self.next_pos is None or self.next_pos.numel() == 0:
            return self.length
        return int(self.next_pos.max())
