"""decode()'s fast path for plain TENSOR sections (avp_codec/_whole.py) against the core.

``decode`` accepts runs of well-formed tensors without the incremental machinery and hands any
section it does not accept to the core, which ``Decoder`` always uses. So the two must agree on
everything: for every single-byte corruption and truncation of seeds that exercise the fast
path (plain RAW tensors, quantized ones, padding, compressed and packed tensors that take the
fallback, an authentication tag), the same error code, offset, path and text, or the same
decoded message and authentication result, in verified and unverified mode.
"""

from __future__ import annotations

import crc32c
import numpy as np
import pytest

import avp_codec as avp
from avp_codec import Codec, Dtype, Layer, LayerKind, Layout, Quant, QuantScheme, Role, Tensor

KEYS = {b"k": b"s"}
# The incremental decoder's buffer bound (which decode() does not have) lifted, so that a
# corrupted length is judged by the same checks in both.
UNBUFFERED = avp.Limits(max_buffer_bytes=1 << 70)


def _seeds() -> list[bytes]:
    k = np.arange(24, dtype=np.float16).reshape(1, 2, 3, 4)
    scale = Tensor.from_array(np.ones((1, 2, 3, 1), np.float16), Role.QUANT_SCALE, ordinal=0)
    q8 = Tensor.from_array(np.arange(24, dtype=np.int8).reshape(1, 2, 3, 4), Role.KEY, ordinal=0,
                           layout=Layout.BHTD,
                           quant=Quant(QuantScheme.AFFINE, 3, 0, 0, None, Dtype.FLOAT16))
    plain = avp.kv_cache_message(b"\x02" * 32, 3, [Layer(0, LayerKind.FULL_ATTENTION, 0, 3)], [
        scale, q8, Tensor.from_array(k, Role.VALUE, ordinal=0, layout=Layout.BHTD)])
    int4_scale = Tensor.from_array(np.ones((1, 2, 3, 1), np.float32), Role.QUANT_SCALE, ordinal=0)
    int4 = Tensor.from_array(np.array([-3, 2, 1, 0] * 6, np.int8).reshape(1, 2, 3, 4), Role.VALUE,
                             ordinal=0, layout=Layout.BHTD, dtype=Dtype.INT4,
                             quant=Quant(QuantScheme.AFFINE, 3, 0, 2, None, Dtype.FLOAT32))
    mixed = avp.kv_cache_message(b"\x01" * 32, 3, [
        Layer(0, LayerKind.FULL_ATTENTION, 0, 3), Layer(1, LayerKind.RECURRENT, 0, 3)], [
        Tensor.from_array(np.arange(3, dtype=np.int32).reshape(1, 3), Role.TOKEN_IDS,
                          layout=Layout.BT),  # 12 data bytes: nonzero pad8 after the data
        Tensor.from_array(k, Role.KEY, ordinal=0, layout=Layout.BHTD, codec=Codec.ZSTD),
        int4_scale, int4,
        Tensor.from_array(np.zeros((2, 3), np.float32), Role.SSM_STATE, ordinal=1),
    ])
    return [avp.encode(plain), avp.encode(mixed), avp.encode(plain, auth_key=(b"k", b"s"))]


SEEDS = _seeds()


def _whole(b: bytes, verify: bool) -> object:
    try:
        m = avp.decode(b, verify=verify, keys=KEYS)
    except avp.AvpError as e:
        return (e.code, e.offset, e.path, str(e))
    return (avp.dumps_canonical_json(m), m.authenticated, m.auth_tag)


def _core(b: bytes, verify: bool) -> object:
    d = avp.Decoder(verify=verify, keys=KEYS, limits=UNBUFFERED)
    tensors: list[avp.Tensor] = []
    try:
        d.feed(b)
        d.end_of_input()
        while not isinstance(ev := d.next_event(), avp.EndEvent):
            if isinstance(ev, avp.HeaderEvent):
                header = ev
            elif isinstance(ev, avp.TensorEvent):
                tensors.append(ev.tensor)
    except avp.AvpError as e:
        return (e.code, e.offset, e.path, str(e))
    m = avp.Message(header.kind, header.entries, header.layers, tensors,
                    authenticated=ev.authenticated, auth_tag=ev.auth_tag, minor=header.minor)
    return (avp.dumps_canonical_json(m), m.authenticated, m.auth_tag)


def _variants(seed: bytes) -> list[bytes]:
    out = [seed]
    for i in range(len(seed)):
        for x in (0x01, 0x80):
            b = bytearray(seed)
            b[i] ^= x
            out.append(bytes(b))
    out += [seed[:cut] for cut in range(0, len(seed), 8)]
    # A flip inside a section with its CRC recomputed gets past the section CRC, so it reaches
    # the field checks of the fast path's acceptance test (and the core's errors for them).
    reader = avp.IndexedReader(seed)
    trailer_index_offset = int.from_bytes(seed[-16:-8], "little")
    for at in [16, trailer_index_offset] + [sec for sec, _, _ in reader.index]:
        n = int.from_bytes(seed[at + 8:at + 16], "little")
        for i in [*range(at, at + 8), *range(at + 16, at + 16 + n)]:
            for x in (0x01, 0xFF):
                b = bytearray(seed)
                b[i] ^= x
                b[at + 16 + n:at + 20 + n] = crc32c.crc32c(b[at:at + 16 + n]).to_bytes(4, "little")
                out.append(bytes(b))
    return out


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_fast_path_agrees_with_the_core(seed: int) -> None:
    assert _whole(SEEDS[seed], True)[1] == (seed == 2)  # valid; only the last one is tagged
    outcomes = set()
    for b in _variants(SEEDS[seed]):
        for verify in (True, False):
            whole = _whole(b, verify)
            assert whole == _core(b, verify), (b.hex(), verify)
            outcomes.add(whole[0] if isinstance(whole[0], avp.ErrorCode) else "ok")
    # The corruptions reach the checks of every stage, not just one.
    assert {avp.ErrorCode.SECTION_CHECKSUM, avp.ErrorCode.TRUNCATED, avp.ErrorCode.DATA_CHECKSUM,
            avp.ErrorCode.RESERVED_NONZERO, avp.ErrorCode.TENSOR_INDEX,
            avp.ErrorCode.UNKNOWN_DTYPE, avp.ErrorCode.SIZE_MISMATCH, "ok"} <= outcomes


def test_decoded_tensors_are_zero_copy_views() -> None:
    buf = SEEDS[0]
    m = avp.decode(buf, verify=False)
    a = m.tensors[2].array()
    assert a.shape == (1, 2, 3, 4) and not a.flags.writeable
    assert np.shares_memory(a, np.frombuffer(buf, np.uint8))
    assert a.tolist() == np.arange(24, dtype=np.float16).reshape(1, 2, 3, 4).tolist()


def test_array_of_a_reshaped_decoded_tensor_keeps_numpy_checks() -> None:
    t = avp.decode(SEEDS[0], verify=False).tensors[2]
    t.shape = (2, 12)  # a caller's change: the decoder's size check no longer applies
    assert t.array().shape == (2, 12)
    t.shape = (5,)
    with pytest.raises(ValueError):
        t.array()  # never a silent view of a prefix
