"""Vectors for the precise rules: zstd frames (R-7.8, R-7.13), token axes (R-7.10, R-7.11),
INDEX length (R-8.3), unverified mode (R-9.6), layer roles and kind shapes (R-10.5 - R-10.12),
shared parameters (R-12.5), limits at their boundary (R-16.1), and the handshake (14.3)."""

from __future__ import annotations

import hashlib
import struct

import zstandard

from .gen_common import (
    BT,
    BTD,
    DTYPES,
    HELLO_NONCE,
    KINDS,
    MODEL_ID,
    OTHER_MODEL_ID,
    RECEIVER_NONCE,
    RECURRENT,
    ROLES,
    TEST_KEY_ID,
    TOKENIZER_ID,
    CaseDef,
    WLayer,
    WMessage,
    WTensor,
    accept_message,
    array_bytes,
    ent,
    hello_message,
    hidden_message,
    kv_message,
    kv_tensors,
    text_message,
)
from .gen_invalid_framing import invalid
from .gen_invalid_quant import quantized_kv
from .gen_valid import state_message

ZSTD = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=False)


def zstd_state(stored: bytes, raw_len: int, dtype: str = "float16", shape: tuple[int, ...] = (8, 8),
               codec: int = 1) -> WMessage:
    """A KV_CACHE whose one SSM_STATE carries the given zstd bytes for a raw_length tensor."""
    t = WTensor(ROLES["SSM_STATE"], DTYPES[dtype], shape, stored, layer=0, codec=codec,
                raw_len=raw_len)
    return WMessage(KINDS["KV_CACHE"], [ent("MODEL_ID", MODEL_ID), ent("CONTEXT_LENGTH", 7)],
                    [WLayer(0, RECURRENT, 0, 7)], [t])


def zstd_cases() -> list[CaseDef]:
    raw = array_bytes("float16", (8, 8), "z")  # 128 bytes
    frame = ZSTD.compress(raw)
    out = []
    bad = [("not-a-frame", b"\x00" * 16, "16 zero bytes"),
           ("truncated-frame", frame[:-3], "the frame without its last 3 bytes"),
           ("two-frames", frame + ZSTD.compress(b""), "a second, empty frame after the first"),
           ("trailing-byte", frame + b"\0", "one byte after the frame"),
           ("skippable-frame-first", struct.pack("<II", 0x184D2A50, 4) + b"skip" + frame,
            "a skippable frame before the data frame"),
           ("wrong-content-checksum", _bad_checksum(raw), "frame checksum flag set, wrong value"),
           ("dictionary-id", _with_dict_id(raw), "a frame that names dictionary 7")]
    for name, stored, comment in bad:
        out.append(invalid(f"7.3/zstd-{name}", "7.3", ["R-7.8", "R-7.13"], comment,
                           "DECOMPRESSION_FAILED", msg=zstd_state(stored, len(raw))))
    more = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(raw + b"\0" * 64)
    out.append(invalid("7.3/zstd-output-larger-than-raw-length", "7.3", ["R-7.8"],
                       "a frame without content size that inflates to 192 bytes, raw_length 128:"
                       " decoding must stop at 128", "DECOMPRESSED_SIZE",
                       msg=zstd_state(more, len(raw))))
    bomb = zstandard.ZstdCompressor(level=19, write_content_size=False).compress(b"\0" * (1 << 24))
    out.append(invalid("7.3/zstd-bomb-16mib-into-128", "7.3", ["R-7.8", "R-16.2"],
                       f"{len(bomb)} stored bytes inflating to 16 MiB, raw_length 128",
                       "DECOMPRESSED_SIZE", msg=zstd_state(bomb, len(raw))))
    fewer = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(raw[:100])
    out.append(invalid("7.3/zstd-output-smaller-than-raw-length", "7.3", ["R-7.8"],
                       "a frame without content size that inflates to 100 of 128 bytes",
                       "DECOMPRESSED_SIZE", msg=zstd_state(fewer, len(raw))))
    out.append(invalid("7.3/zstd-declared-content-size-differs", "7.3", ["R-7.13"],
                       "frame content size 192, raw_length 128", "DECOMPRESSED_SIZE",
                       msg=zstd_state(ZSTD.compress(raw + b"\0" * 64), len(raw))))
    out.append(CaseDef("7.3/zstd-without-content-size", "7.3", ["R-7.13"],
                       "a frame without Frame_Content_Size (valid, bounded by raw_length)",
                       msg=zstd_state(zstandard.ZstdCompressor(write_content_size=False)
                                      .compress(raw), len(raw))))
    out.append(CaseDef("7.3/zstd-with-checksum", "7.3", ["R-7.13"],
                       "a frame with a correct content checksum", msg=zstd_state(
                           zstandard.ZstdCompressor(write_checksum=True).compress(raw), len(raw))))
    for dtype, shape in (("int8", (16,)), ("int4", (16,))):
        raw_d = array_bytes(dtype, shape, "bp")
        out.append(invalid(f"7.3/byteplane-on-{dtype}", "7.3", ["R-7.9"],
                           f"byteplane_zstd on {dtype}", "CODEC_DTYPE",
                           msg=zstd_state(ZSTD.compress(raw_d), len(raw_d), dtype, shape, 2)))
    tail = bytearray(array_bytes("int4", (5,), "tail"))
    tail[-1] |= 0xF0
    out.append(invalid("7.2/packed-tail-after-zstd", "7.2", ["R-7.12"],
                       "5 int4 codes through zstd; the unused nibble is set in the raw bytes",
                       "NONZERO_PADDING", msg=zstd_state(ZSTD.compress(bytes(tail)), 3, "int4",
                                                         (5,))))
    return out


def _bad_checksum(raw: bytes) -> bytes:
    frame = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(raw))
    frame[-1] ^= 0xFF
    return bytes(frame)


def _with_dict_id(raw: bytes) -> bytes:
    """Rewrite a frame header to carry Dictionary_ID 7 (1-byte field, DID_Flag = 1)."""
    frame = zstandard.ZstdCompressor(write_content_size=False, write_dict_id=False).compress(raw)
    fhd = frame[4]
    assert fhd & 0x03 == 0
    single = fhd & 0x20
    header_len = 1 + (0 if single else 1)  # descriptor + window descriptor
    rest = frame[4 + header_len:]
    return frame[:4] + bytes([fhd | 0x01]) + frame[5:4 + header_len] + b"\x07" + rest


def token_and_kind_cases() -> list[CaseDef]:
    out = []
    m = kv_message()
    m.tensors[0:1] = kv_tensors(0, 1, 2, 4, 8, seed="kv")[:1] + [
        WTensor(ROLES["KEY"], DTYPES["float16"], (1, 2, 0, 8), b"", layer=0, layout=1,
                token_offset=4)]
    out.append(invalid("7.7/empty-tile-in-nonempty-layer", "7.7", ["R-7.10"],
                       "a 0-token KEY tile at offset 4 of a 4-token layer", "TOKEN_RANGE", msg=m))
    m = kv_message()
    a = WTensor(ROLES["KEY"], DTYPES["float16"], (1, 2, 2, 8),
                array_bytes("float16", (1, 2, 2, 8), "l1"), layer=0, layout=1)
    b = WTensor(ROLES["KEY"], DTYPES["float16"], (1, 2, 2, 8),
                array_bytes("float16", (1, 2, 2, 8), "l2"), layer=0, layout=2, token_offset=2)
    m.tensors[0:1] = [a, b]
    out.append(invalid("7.7/tiles-different-layouts", "7.7", ["R-7.11"],
                       "KEY tiles in BHTD and BTHD", "TOKEN_RANGE", msg=m))
    m = kv_message()
    m.tensors[0].token_offset = 2
    out.append(invalid("7.7/tile-past-layer-end", "7.7", ["R-7.7"],
                       "a 4-token KEY at offset 2 of a 4-token layer", "TOKEN_RANGE", msg=m))
    m = kv_message()
    m.index_extra = b"\0" * 24
    out.append(invalid("8/index-body-length", "8", ["R-8.3"],
                       "INDEX body 24 bytes longer than 8 + 24 x count", "HEADER_LAYOUT", msg=m))
    out.append(invalid("8/index-without-tag", "8", ["R-8.3", "R-15.1"],
                       "AUTH_KEY_ID present but the INDEX carries no tag", "HEADER_LAYOUT",
                       msg=_untagged(text_message(extra=[ent("AUTH_KEY_ID", TEST_KEY_ID)]))))
    # layer roles by layer kind
    m = kv_message()
    m.layers.append(WLayer(5, RECURRENT, 0, 4))
    m.tensors += [t for t in kv_tensors(2, 1, 2, 4, 8, seed="r")]
    out.append(invalid("10.4/key-in-recurrent-layer", "10.4", ["R-10.5"],
                       "KEY/VALUE in a RECURRENT layer", "ROLE_SHAPE", msg=m))
    m = kv_message()
    m.tensors.append(WTensor(ROLES["SSM_STATE"], DTYPES["float32"], (2,), b"\0" * 8, layer=1))
    out.append(invalid("10.4/state-in-attention-layer", "10.4", ["R-10.5"],
                       "SSM_STATE in a FULL_ATTENTION layer", "ROLE_SHAPE", msg=m))
    m = kv_message()
    m.tensors.insert(0, WTensor(ROLES["POSITIONS"], DTYPES["int64"], (1, 5),
                                array_bytes("int64", (1, 5), "p"), layout=BT))
    out.append(invalid("10.4/positions-wrong-length", "10.4", ["R-10.6"],
                       "POSITIONS [1, 5] with CONTEXT_LENGTH 4", "KIND_CONSTRAINT", msg=m))
    m = kv_message()
    m.layers.append(WLayer(9, RECURRENT, 0, 4))
    m.tensors.append(WTensor(ROLES["QUANT_SCALE"], DTYPES["float32"], (1,), b"\0" * 4, layer=2))
    out.append(invalid("10.4/layer-with-only-parameters", "10.4", ["R-10.7", "R-12.5"],
                       "a layer holding nothing but an (orphan) QUANT_SCALE: F.2 (QUANT_PARAMS)"
                       " comes before F.3 (KIND_CONSTRAINT)", "QUANT_PARAMS", msg=m))
    m = kv_message()
    m.layers.append(WLayer(9, RECURRENT, 0, 4))
    out.append(invalid("10.4/layer-without-tensors", "10.4", ["R-10.7"],
                       "a RECURRENT layer with no tensor", "KIND_CONSTRAINT", msg=m))
    m = kv_message()
    m.tensors.insert(0, WTensor(ROLES["ATTENTION_MASK"], DTYPES["uint8"], (1, 4),
                                bytes([1, 1, 2, 1]), layout=BT))
    out.append(CaseDef("10.2/attention-mask-value-2", "10.2", ["R-10.8"],
                       "ATTENTION_MASK holding a 2: a receiver MAY reject it", msg=m,
                       result="acceptable", any_of=["valid", "INVALID_VALUE"],
                       flags=["ReceiverMay", "ProducerMustNot"], roundtrip=False))
    m = hidden_message()
    m.tensors.append(WTensor(ROLES["HIDDEN_STATE"], DTYPES["bfloat16"], (1, 2, 8),
                             array_bytes("bfloat16", (1, 2, 8), "h2"), layout=BTD))
    out.append(invalid("10.6/hidden-sizes-differ", "10.6", ["R-10.10"],
                       "HIDDEN_STATE tensors of hidden size 16 and 8", "KIND_CONSTRAINT", msg=m))
    m = hidden_message()
    m.entries.append(ent("PROJ_TEMPERATURE", 1.0))
    out.append(invalid("10.6/latent-with-proj-key", "10.6", ["R-10.12"],
                       "HIDDEN_SOURCE 1 with PROJ_TEMPERATURE", "ENTRY_NOT_ALLOWED", msg=m))
    m = hidden_message()
    m.entries = [ent("MODEL_ID", MODEL_ID), ent("HIDDEN_SOURCE", 2),
                 ent("PROJ_SOURCE_TOKENIZER_ID", OTHER_MODEL_ID),
                 ent("PROJ_TARGET_TOKENIZER_ID", TOKENIZER_ID), ent("PROJ_SHARED_VOCAB", 5)]
    out.append(invalid("10.6/projection-without-method", "10.6", ["R-10.12"],
                       "HIDDEN_SOURCE 2 without PROJ_METHOD", "MISSING_ENTRY", msg=m))
    out.append(invalid("10.6/hidden-state-model-mismatch", "10.6", ["R-10.11", "R-14.8"],
                       "HIDDEN_STATE in model A's space at a receiver holding model B",
                       "MODEL_MISMATCH", msg=hidden_message(),
                       context={"expected_model_id": OTHER_MODEL_ID.hex()},
                       features=["model_check"]))
    # shared parameters, R-9.6 unverified mode
    m = quantized_kv()
    val = m.tensors[2]
    val.dtype, val.data = DTYPES["int8"], array_bytes("int8", (1, 2, 4, 8), "qv")
    val.quant_scheme, val.quant_axis, val.scale_tensor = 1, 2, 0
    val.dequant_dtype = DTYPES["float16"]
    out.append(invalid("12/scale-shared", "12", ["R-12.5"], "KEY and VALUE name one scale",
                       "QUANT_PARAMS", msg=m))
    m = kv_message()
    m.tensors[1].reserved_b = 1
    out.append(invalid("9.3/unverified-still-checks-structure", "9.3", ["R-9.6"],
                       "verify=false does not switch off structural checks", "RESERVED_NONZERO",
                       msg=m, context={"verify": False}, features=["unverified"],
                       level="optional"))
    return out


def _untagged(m: WMessage) -> WMessage:
    m.auth_key = None  # AUTH_KEY_ID present, no tag appended
    return m


def limit_boundary_cases() -> list[CaseDef]:
    m = kv_message()
    limits = {"max_entries": 2, "max_layers": 2, "max_tensors": 4, "max_rank": 4,
              "max_tensor_bytes": 128}
    big = state_message("float32", (64, 64))  # one 16 KiB tensor
    return [CaseDef("16/limit-buffer-incremental-only", "16", ["R-9.5", "R-16.1"],
                    "max_buffer_bytes 4096 and a 16 KiB tensor: an incremental decoder MAY refuse"
                    " to buffer it, a complete-buffer decoder decodes it", msg=big,
                    context={"limits": {"max_buffer_bytes": 4096}}, result="acceptable",
                    any_of=["valid", "LIMIT_BUFFER"], features=["limits"],
                    flags=["IncrementalMay"]),
            CaseDef("16/limits-equal-pass", "16", ["R-16.1", "R-16.3"],
                    "every limit set exactly to what the message uses", msg=m,
                    context={"limits": limits}, features=["limits"])]


HS = ["handshake"]


def handshake_cases() -> list[CaseDef]:
    local = {"versions": [0x10000], "modes": [1, 2, 3], "model_id": MODEL_ID.hex(),
             "tokenizer_id": TOKENIZER_ID.hex(), "nonce": RECEIVER_NONCE.hex(),
             "dtypes": [1, 2, 3], "codecs": [0, 1, 2], "role": "responder"}
    ini = dict(local, role="initiator")
    out = [
        CaseDef("14.3/hello-resolves", "14.3", ["R-14.1"], "a compatible HELLO", hello_message(),
                context={"local": local},
                features=HS),
        CaseDef("14.3/accept-downgrade-to-text", "14.3", ["R-14.2"],
                "ACCEPT picks TEXT where KV_CACHE was possible: a downgrade is accepted",
                accept_message(mode=3), context={"local": ini},
                features=HS),
        invalid("14.3/accept-upgrade", "14.3", ["R-14.2"],
                "ACCEPT picks KV_CACHE but the responder's MODEL_ID differs",
                "NEGOTIATION_MISMATCH",
                msg=accept_message(mode=1, MODEL_ID=OTHER_MODEL_ID, TOKENIZER_ID=OTHER_MODEL_ID),
                context={"local": ini},
                features=HS),
        invalid("14.3/accept-mode-not-offered", "14.3", ["R-14.2"],
                "ACCEPT picks PROJECTION, which the initiator did not offer",
                "NEGOTIATION_MISMATCH", msg=accept_message(mode=2),
                context={"local": dict(ini, modes=[1, 3])},
                features=HS),
        invalid("14.3/hello-without-text-mode", "14.3", ["R-14.3"],
                "HELLO whose CAP_MODES is [1, 2]", "UNSUPPORTED_CAPABILITY",
                msg=hello_message(CAP_MODES=[1, 2]), context={"local": local},
                features=HS),
        invalid("14.3/hello-reflected-nonce", "14.3", ["R-14.4"],
                "a HELLO carrying the receiver's own NONCE", "NEGOTIATION_MISMATCH",
                msg=hello_message(NONCE=RECEIVER_NONCE), context={"local": local},
                features=HS),
        invalid("14.3/vocab-digest-mismatch", "14.3", ["R-14.5", "R-13.3"],
                "VOCAB_DIGEST that is not the SHA-256 of VOCABULARY", "INVALID_VALUE",
                msg=hello_message(VOCABULARY=b"\1\0\0\0a", VOCAB_DIGEST=b"\0" * 32),
                context={"local": local},
                features=HS),
        CaseDef("14.3/vocab-digest-matches", "14.3", ["R-14.5"], "VOCAB_DIGEST of VOCABULARY",
                hello_message(VOCABULARY=b"\1\0\0\0a",
                              VOCAB_DIGEST=hashlib.sha256(b"\1\0\0\0a").digest()),
                context={"local": local},
                features=HS),
        CaseDef("14.3/accept-with-cap-modes-and-vocabulary", "14.3", ["R-14.10"],
                "ACCEPT carrying CAP_MODES, VOCABULARY and VOCAB_DIGEST (lead decision D1)",
                accept_message(mode=1, CAP_MODES=[1, 2, 3], VOCABULARY=b"\1\0\0\0a",
                               VOCAB_DIGEST=hashlib.sha256(b"\1\0\0\0a").digest()),
                context={"local": ini}, level="recommended",
                features=HS),
        invalid("14.3/payload-of-other-mode", "14.3", ["R-14.6"],
                "a TEXT payload in a session resolved to KV_CACHE", "UNSUPPORTED_CAPABILITY",
                msg=text_message(), context={"local": dict(local, session_mode=1)},
                features=HS),
        invalid("14.3/unsupported-codec", "14.3", ["R-14.7"],
                "a zstd tensor at a receiver that offered only raw", "UNSUPPORTED_CAPABILITY",
                msg=state_message("float32", (4, 4), 1), context={"local": dict(
                    local, codecs=[0], session_mode=1)},
                features=HS),
        invalid("14.3/message-too-large", "14.3", ["R-14.7"],
                "a KV_CACHE larger than the receiver's MAX_MESSAGE_BYTES (256)",
                "UNSUPPORTED_CAPABILITY", msg=kv_message(),
                context={"local": dict(local, max_message_bytes=256, session_mode=1)},
                features=HS),
    ]
    _ = HELLO_NONCE
    return out


def cases() -> list[CaseDef]:
    return zstd_cases() + token_and_kind_cases() + limit_boundary_cases() + handshake_cases()
