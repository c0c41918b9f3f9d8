"""Byte-exact examples: messages written out by hand from the spec's tables (sections 3-8), with
every field annotated. The CRC32C fields were computed from the neighbouring literal bytes with
the crc32c package alone (the spec's check value is asserted below), never by the encoder."""

from __future__ import annotations

import crc32c
import numpy as np

import avp_codec as avp


def h(s: str) -> bytes:
    return bytes.fromhex("".join(line.split("#")[0] for line in s.splitlines()).replace(" ", ""))


TEXT_HI = h("""
89 41 56 50 0D 0A 1A 0A  0100 0000 00000000          # preamble: magic, major 1, minor 0, reserved
01000000 00000000 2000000000000000                    # HEADER section: type 1, flags 0, n = 32
0300 0000 01000000 00000000 00000000                  # TEXT, flags, 1 entry, 0 layers, 0 tensors
2000 01 04 02000000 6869 000000000000                 # TEXT(32), CRITICAL, utf8, len 2, "hi", pad6
de89d0fa 00000000                                     # section crc, pad8(52) = 4
03000000 00000000 0800000000000000                    # INDEX section at 72: type 3, n = 8
0000000000000000                                      # tensor_count 0
aaf222c6 00000000                                     # crc, pad
4800000000000000 89 41 56 50 45 4E 44 0A              # trailer: index_offset 72, end magic
""")

HIDDEN = h("""
89 41 56 50 0D 0A 1A 0A  0100 0000 00000000          # preamble
01000000 00000000 4800000000000000                    # HEADER at 16, n = 72
0200 0000 02000000 00000000 01000000                  # HIDDEN_STATE, 2 entries, 0 layers, 1 tensor
0100 01 05 20000000                                   # MODEL_ID(1), CRITICAL, bytes, len 32
1111111111111111111111111111111111111111111111111111111111111111
1000 01 01 08000000 0100000000000000                  # HIDDEN_SOURCE(16), CRITICAL, u64, = 1
36f3f85d 00000000                                     # crc, pad -> next section at 112
02000000 00000000 5800000000000000                    # TENSOR at 112, n = 64 + 8 x 3 = 88
00000000 FFFFFFFF                                     # tensor_index 0, message-level
1000 01 00 03 03 00 00                                # HIDDEN_STATE, f32, raw, rank 3, BTD, no q
00000000 FFFFFFFF FFFFFFFF 00 000000                  # group_size, no scale, no zero pt, dequant
0000000000000000 0800000000000000 0800000000000000    # token_offset 0, raw/stored length 8
c9f236aa 00000000                                     # data_crc, reserved
0100000000000000 0100000000000000 0200000000000000    # shape [1, 1, 2]
a1349edf 00000000                                     # crc, pad -> section ends at 224
0000000000000000000000000000000000000000000000000000000000000000  # pad64: 32 zero bytes
0000803F 000000C0                                     # data at 256: [1.0, -2.0]; pad8(8) = 0
03000000 00000000 2000000000000000                    # INDEX at 264, n = 32
0100000000000000                                      # tensor_count 1
7000000000000000 0001000000000000 0800000000000000    # section 112, data 256, stored 8
3c541345 00000000                                     # crc, pad
0801000000000000 89 41 56 50 45 4E 44 0A              # trailer: index_offset 264
""")


def test_crc32c_check_value() -> None:
    assert crc32c.crc32c(b"123456789") == 0xE3069283  # spec section 1


def test_text_message_bytes() -> None:
    assert len(TEXT_HI) == 120
    assert avp.encode(avp.text_message("hi")) == TEXT_HI
    m = avp.decode(TEXT_HI)
    assert m.kind == avp.Kind.TEXT and m.get(avp.MetaKey.TEXT) == "hi"


def test_hidden_state_message_bytes() -> None:
    assert len(HIDDEN) == 336
    msg = avp.hidden_state_message(b"\x11" * 32, np.array([[[1.0, -2.0]]], np.float32))
    assert avp.encode(msg) == HIDDEN
    m = avp.decode(HIDDEN)
    t = m.tensors[0]
    assert t.role == avp.Role.HIDDEN_STATE and t.shape == (1, 1, 2)
    assert t.array().tolist() == [[[1.0, -2.0]]]
    assert HIDDEN.index(bytes.fromhex("0000803F000000C0")) == 256


def test_layout_of_a_kv_cache_follows_the_offsets_rule() -> None:
    """Every data offset is a multiple of 64, every section starts 8-aligned, and the index
    lists exactly what is there (spec 5, 8)."""
    k = np.arange(3 * 5 * 7, dtype=np.float16).reshape(1, 3, 5, 7)
    msg = avp.kv_cache_from_arrays(b"\x22" * 32, [k, k], [k, k])
    b = avp.encode(msg)
    idx_at = int.from_bytes(b[-16:-8], "little")
    count = int.from_bytes(b[idx_at + 16:idx_at + 24], "little")
    assert count == 4
    for i in range(count):
        sec, data, stored = (int.from_bytes(b[idx_at + 24 + 24 * i + 8 * j:
                                              idx_at + 32 + 24 * i + 8 * j], "little")
                             for j in range(3))
        assert sec % 8 == 0 and data % 64 == 0 and stored == k.nbytes
        assert b[data:data + stored] == k.tobytes()
