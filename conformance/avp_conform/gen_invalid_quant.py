"""Invalid vectors for quantization parameters (section 12) and for the receiver's own checks:
authentication (15), model identity (10.4) and the handshake (14.3)."""

from __future__ import annotations

from collections.abc import Callable

from .gen_common import (
    DTYPES,
    MODEL_ID,
    OTHER_MODEL_ID,
    RECEIVER_NONCE,
    ROLES,
    TEST_KEY,
    TEST_KEY_ID,
    CaseDef,
    WMessage,
    WTensor,
    accept_message,
    array_bytes,
    ent,
    hello_message,
    kv_message,
    text_message,
)
from .gen_invalid_content import put
from .gen_invalid_framing import invalid
from .wire import NO_REF, build, resection


def quant_cases() -> list[CaseDef]:
    out = []
    def qmsg(change: Callable[[WMessage], object] | None = None) -> WMessage:
        m = quantized_kv()
        if change:
            change(m)
        return m
    faults = [
        ("scheme-none-with-axis", "R-12.2",
         lambda m: put(m.tensors[1], "quant_axis", 1)),
        ("affine-on-float16", "R-12.3", lambda m: put(m.tensors[2], "quant_scheme", 1)),
        ("scaled-float-on-int8", "R-12.3", lambda m: put(m.tensors[1], "quant_scheme", 2)),
        ("unregistered-scheme", "R-12.1", lambda m: put(m.tensors[1], "quant_scheme", 7)),
        ("axis-out-of-range", "R-12.3", lambda m: put(m.tensors[1], "quant_axis", 4)),
        ("dequant-dtype-int8", "R-12.3",
         lambda m: put(m.tensors[1], "dequant_dtype", DTYPES["int8"])),
        ("no-scale-tensor", "R-12.3", lambda m: (put(m.tensors[1], "scale_tensor", NO_REF),
                                                 m.tensors.pop(0), renumber(m, -1))),
        ("scale-forward-reference", "R-12.4", lambda m: move_scale_after(m)),
        ("scale-wrong-shape", "R-12.4", lambda m: (put(m.tensors[0], "shape", (1, 2, 2, 8)),
                                                    put(m.tensors[0], "data", b"\0" * 64))),
        ("scale-int8", "R-12.4", lambda m: (put(m.tensors[0], "dtype", DTYPES["int8"]),
                                           put(m.tensors[0], "data", b"\1" * 16))),
        ("scale-wrong-role", "R-12.4", lambda m: put(m.tensors[0], "role",
                                                         ROLES["QUANT_ZERO_POINT"])),
        ("scale-other-layer", "R-12.4", lambda m: move_scale_to_message_level(m)),
        ("scale-unused", "R-12.5", lambda m: (put(m.tensors[1], "quant_scheme", 0),
                                             put(m.tensors[1], "scale_tensor", NO_REF),
                                             put(m.tensors[1], "quant_axis", 0),
                                             put(m.tensors[1], "dequant_dtype", 0))),
        ("zero-point-with-scaled-float", "R-12.3", lambda m: fp8_with_zero_point(m)),
    ]
    for name, rid, change in faults:
        out.append(invalid(f"12/{name}", "12", ["R-12.1", rid], name.replace("-", " "),
                           "QUANT_PARAMS", msg=qmsg(change)))
    return out


def quantized_kv() -> WMessage:
    """Layer 0: KEY int8 [1,2,4,8] with a float16 scale per (head, channel): scale [1,2,1,8]
    (quant_axis 2 = tokens, group_size 0), then VALUE float16."""
    m = kv_message(n_layers=1)
    scale = WTensor(ROLES["QUANT_SCALE"], DTYPES["float16"], (1, 2, 1, 8),
                    array_bytes("float16", (1, 2, 1, 8), "scale"), layer=0)
    key = m.tensors[0]
    key.dtype, key.data = DTYPES["int8"], array_bytes("int8", (1, 2, 4, 8), "q")
    key.quant_scheme, key.quant_axis, key.scale_tensor = 1, 2, 0
    key.dequant_dtype = DTYPES["float16"]
    m.tensors.insert(0, scale)
    return m


def renumber(m: WMessage, delta: int) -> WMessage:
    for t in m.tensors:
        for attr in ("scale_tensor", "zero_point_tensor"):
            if getattr(t, attr) != NO_REF:
                setattr(t, attr, getattr(t, attr) + delta)
    return m


def move_scale_after(m: WMessage) -> None:
    scale, key, value = m.tensors
    key.scale_tensor = 1
    m.tensors[:] = [key, scale, value]


def move_scale_to_message_level(m: WMessage) -> None:
    m.tensors[0].layer = NO_REF


def fp8_with_zero_point(m: WMessage) -> None:
    key = m.tensors[1]
    key.dtype, key.quant_scheme = DTYPES["float8_e4m3fn"], 2
    key.data = array_bytes("float8_e4m3fn", (1, 2, 4, 8), "fp8")
    zp = WTensor(ROLES["QUANT_ZERO_POINT"], DTYPES["float16"], (1, 2, 1, 8), b"\0" * 32, layer=0)
    m.tensors.insert(1, zp)
    key.zero_point_tensor = 1
    m.tensors[2].scale_tensor = 0


def receiver_cases() -> list[CaseDef]:
    out = []
    key_hex = {TEST_KEY_ID.hex(): TEST_KEY.hex()}
    auth = text_message(extra=[ent("AUTH_KEY_ID", TEST_KEY_ID)])
    auth.auth_key = TEST_KEY
    out.append(invalid("15/auth-required-missing", "15", ["R-15.1"],
                       "unauthenticated TEXT, receiver requires authentication", "AUTH_REQUIRED",
                       msg=text_message(), context={"require_auth": True, "keys": key_hex},
                       features=["auth"]))
    out.append(invalid("15/auth-unknown-key", "15", ["R-15.1"],
                       "tag under key id 'conformance-key-1', receiver holds another id",
                       "UNKNOWN_KEY", msg=auth,
                       context={"require_auth": True, "keys": {b"other".hex(): TEST_KEY.hex()}},
                       features=["auth"]))
    wrong = text_message(extra=[ent("AUTH_KEY_ID", TEST_KEY_ID)])
    wrong.auth_key = b"not the test key"
    out.append(invalid("15/auth-tag-wrong", "15", ["R-15.1"],
                       "tag computed with another key", "AUTH_FAILED", msg=wrong,
                       context={"require_auth": True, "keys": key_hex}, features=["auth"]))
    good = build(auth).data
    out.append(invalid("15/auth-text-tampered", "15", ["R-15.1", "R-15.3"],
                       "TEXT changed after tagging (section CRC fixed up by the attacker)",
                       "AUTH_FAILED", data=fix_header_crc(good, b"42", b"41"),
                       context={"keys": key_hex}, features=["auth"]))
    out.append(invalid("10.4/model-mismatch", "10.4", ["R-10.4"],
                       "KV_CACHE of model A at a receiver holding model B", "MODEL_MISMATCH",
                       msg=kv_message(), context={"expected_model_id": OTHER_MODEL_ID.hex()},
                       features=["model_check"]))
    local = {"versions": [0x10000], "modes": [1, 2, 3], "model_id": MODEL_ID.hex(),
             "nonce": RECEIVER_NONCE.hex(),
             "tokenizer_id": None, "dtypes": [1, 2, 3], "codecs": [0, 1, 2], "role": "responder"}
    out.append(invalid("14.3/no-common-version", "14.3", [], "peer HELLO offers only 2.0",
                       "NO_COMMON_VERSION", msg=hello_message(VERSIONS=[0x20000]),
                       context={"local": local}, features=["handshake"]))
    out.append(invalid("14.3/negotiation-mismatch", "14.3", [],
                       "ACCEPT says KV_CACHE but the responder's MODEL_ID differs from ours",
                       "NEGOTIATION_MISMATCH",
                       msg=accept_message(mode=1, MODEL_ID=OTHER_MODEL_ID, TOKENIZER_ID=None),
                       context={"local": dict(local, role="initiator")}, features=["handshake"]))
    out.append(invalid("14.3/unsupported-dtype", "14.3", ["R-14.7"],
                       "KV_CACHE using float16 in a KV_CACHE session, at a receiver that offered"
                       " only float32", "UNSUPPORTED_CAPABILITY", msg=kv_message(),
                       context={"local": dict(local, dtypes=[1], session_mode=1)},
                       features=["handshake"]))
    return out


def fix_header_crc(message: bytes, old: bytes, new: bytes) -> bytes:
    """Replace text in the header and recompute the header CRC (an attacker can do that)."""
    buf = bytearray(message)
    at = buf.index(old)
    buf[at:at + len(old)] = new
    resection(buf, 16)
    return bytes(buf)


def cases() -> list[CaseDef]:
    return quant_cases() + receiver_cases()
