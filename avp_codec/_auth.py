"""Message authentication (spec section 15): HMAC-SHA256 over every byte before the INDEX.

The encoder and decoder feed the MAC as bytes pass (so streaming works); these helpers are the
one place that creates MACs and compares tags, and the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac

TAG_BYTES = 32


def new_mac(key: bytes) -> hmac.HMAC:
    return hmac.new(bytes(key), digestmod=hashlib.sha256)


def tags_equal(computed: bytes, received: bytes) -> bool:
    """Constant-time comparison (spec R-15.1)."""
    return hmac.compare_digest(computed, received)


def message_tag(buf: bytes | memoryview, key: bytes) -> bytes:
    """The tag of an encoded message, computed from its Trailer's index_offset (for tools and
    tests that craft authenticated vectors by hand)."""
    mv = memoryview(buf)
    index_offset = int.from_bytes(mv[len(mv) - 16:len(mv) - 8], "little")
    mac = new_mac(key)
    mac.update(mv[:index_offset])
    return mac.digest()
