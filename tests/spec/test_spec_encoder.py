"""A second encoder, written from the spec's tables alone (sections 2-8, 15), must produce the
same bytes as the reference codec for the appendix examples. This is the spec's central promise:
an engineer who reads only spec/ writes a byte-compatible implementation. It also checks the
offset formulas of section 2 and the HMAC coverage of section 15, which the appendix walker does
not compute."""

from __future__ import annotations

import hashlib
import hmac
import struct

import crc32c
import numpy as np
import pytest

import avp_codec as avp

MAGIC, END_MAGIC = b"\x89AVP\r\n\x1a\n", b"\x89AVPEND\n"
NO_REF = 0xFFFFFFFF


def pad(n: int, m: int) -> bytes:
    return bytes(-n % m)


def section(stype: int, body: bytes) -> bytes:
    head = struct.pack("<IIQ", stype, 0, len(body))  # section 4.1
    raw = head + body + struct.pack("<I", crc32c.crc32c(head + body))
    return raw + pad(len(raw), 8)


def entry(key: int, critical: bool, vtype: int, value: bytes) -> bytes:
    return struct.pack("<HBBI", key, int(critical), vtype, len(value)) + value + pad(len(value), 8)


def message(kind: int, entries: list[bytes], layers: list[bytes],
            tensors: list[tuple[bytes, bytes]], key: bytes | None = None) -> bytes:
    """tensors: (descriptor body without tensor_index, stored data)."""
    out = bytearray(MAGIC + struct.pack("<HHI", 1, 0, 0))  # section 3
    head = struct.pack("<HHIII", kind, 0, len(entries), len(layers), len(tensors))
    out += section(1, head + b"".join(entries) + b"".join(layers))  # section 6
    index = []
    for i, (desc, data) in enumerate(tensors):  # sections 5, 7
        at = len(out)
        out += section(2, struct.pack("<I", i) + desc)
        out += pad(len(out), 64)
        index.append((at, len(out), len(data)))
        out += data + pad(len(data), 8)
    tag = b"" if key is None else hmac.new(key, bytes(out), hashlib.sha256).digest()  # 15
    index_at = len(out)
    body = struct.pack("<Q", len(tensors)) + b"".join(struct.pack("<QQQ", *e) for e in index)
    out += section(3, body + tag)  # section 8
    out += struct.pack("<Q", index_at) + END_MAGIC
    return bytes(out)


def descriptor(layer: int, role: int, dtype: int, layout: int, shape: tuple[int, ...],
               data: bytes, token_offset: int = 0) -> bytes:
    fixed = struct.pack("<IHBBBBBBIIIB3xQQQI4x", layer, role, dtype, 0, len(shape), layout,
                        0, 0, 0, NO_REF, NO_REF, 0, token_offset, len(data), len(data),
                        crc32c.crc32c(data))
    return fixed + b"".join(struct.pack("<Q", d) for d in shape)


def test_text_message_bytes() -> None:
    ours = message(3, [entry(32, True, 4, b"Paris"), entry(33, False, 4, b"assistant")], [], [])
    assert ours == avp.encode(avp.text_message("Paris", role="assistant"))


def test_authenticated_text_bytes() -> None:
    key_id, key = b"example-key-1", bytes(range(32))
    ours = message(3, [entry(32, True, 4, b"Paris"), entry(33, False, 4, b"assistant"),
                       entry(96, True, 5, key_id)], [], [], key=key)
    theirs = avp.encode(avp.text_message("Paris", role="assistant"), auth_key=(key_id, key))
    assert ours == theirs


@pytest.mark.parametrize("tokens", [0, 1, 2, 5])
def test_kv_cache_bytes(tokens: int) -> None:
    mid = hashlib.sha256(b"model").digest()
    k = np.arange(4 * tokens, dtype=np.float16).reshape(1, 1, tokens, 4)
    v = (k * 2).astype(np.float16)
    ids = np.arange(tokens, dtype=np.int32).reshape(1, tokens)
    layer = struct.pack("<IB3xI4xQQ", 0, 1, 0, 0, tokens)  # section 6.4
    ours = message(1, [entry(1, True, 5, mid), entry(5, True, 1, struct.pack("<Q", tokens))],
                   [layer], [
                       (descriptor(NO_REF, 17, 11, 4, (1, tokens), ids.tobytes()), ids.tobytes()),
                       (descriptor(0, 1, 2, 1, k.shape, k.tobytes()), k.tobytes()),
                       (descriptor(0, 2, 2, 1, v.shape, v.tobytes()), v.tobytes()),
                   ])
    assert ours == avp.encode(avp.kv_cache_from_arrays(mid, [k], [v], token_ids=ids))


def test_section_2_offset_formulas() -> None:
    """The closed-form offsets of section 2 against the bytes of a real message."""
    mid = hashlib.sha256(b"model").digest()
    k = np.zeros((1, 2, 3, 5), dtype=np.float32)
    buf = avp.encode(avp.kv_cache_from_arrays(mid, [k, k], [k, k]))
    H = struct.unpack_from("<Q", buf, 16 + 8)[0]
    off = 16 + 20 + H + (-(20 + H) % 8)
    index_at = struct.unpack_from("<Q", buf, len(buf) - 16)[0]
    entries = [struct.unpack_from("<QQQ", buf, index_at + 24 + 24 * i) for i in range(4)]
    for sec_at, data_at, stored in entries:
        assert sec_at == off
        d = 64 + 8 * 4
        assert data_at == off + 24 + d + (-(off + 24 + d) % 64)
        off = data_at + stored + (-stored % 8)
    assert index_at == off
    x = 8 + 24 * 4
    assert len(buf) == index_at + 20 + x + (-(20 + x) % 8) + 16
