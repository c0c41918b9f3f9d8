"""Vectors that pin the readings chosen for spec/reviews/spec-review-2026-12.md (spec/DECISIONS.md,
"Resolutions of the 2026-12 review"): wherever two readings of the text give different bytes or
codes, one case here decides. Each comment names the review item. A few cases carry two faults on
purpose (flag TwoFaults): they pin an order of checks that single-fault vectors cannot see."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from .gen_common import (
    BT,
    DTYPES,
    FULL,
    KINDS,
    MODEL_ID,
    OTHER_MODEL_ID,
    RECEIVER_NONCE,
    RECURRENT,
    ROLES,
    TEST_KEY,
    TEST_KEY_ID,
    TOKENIZER_ID,
    CaseDef,
    WEntry,
    WLayer,
    WMessage,
    WTensor,
    accept_message,
    array_bytes,
    ent,
    hello_message,
    hidden_message,
    kv_message,
    text_message,
)
from .gen_invalid_framing import invalid, patch
from .gen_invalid_quant import quantized_kv
from .gen_valid import valid
from .wire import build

HS = ["handshake"]
TWO = ["TwoFaults"]
LOCAL: dict[str, Any] = {"role": "responder", "versions": [0x10000], "modes": [1, 2, 3],
                         "dtypes": [1, 2, 3], "codecs": [0, 1, 2], "model_id": MODEL_ID.hex(),
                         "tokenizer_id": TOKENIZER_ID.hex(), "nonce": RECEIVER_NONCE.hex()}
INITIATOR = dict(LOCAL, role="initiator")
PEER_TOKENIZER = hashlib.sha256(b"avp conformance tokenizer P").digest()


def error_message(code: int) -> WMessage:
    return WMessage(KINDS["ERROR"], [ent("ERROR_CODE", code)])


def vocabulary(tokens: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(t)) + t for t in tokens)


def header_cases() -> list[CaseDef]:
    out = []
    # Item 1: ERROR_CODE is any code in 1..65535, registered or not (D6).
    for code in (999, 65535):
        out.append(valid(f"6.2/error-code-{code}", "6.2", ["R-6.4"],
                         f"ERROR_CODE {code}: not a registered code, but in 1..65535 (a newer "
                         "peer's code); valid (review item 1)", error_message(code)))
    # Item 2: the entries end where the layer table starts (6.1), not at the body's end.
    data, fault = patch(kv_message(), "header", 16 + 4, "<I", 3)
    out.append(invalid("6.1/entry-count-one-too-high-kv", "6.1", ["R-6.1"],
                       "KV_CACHE with entry_count 3 and 2 entries: the third entry would start "
                       "inside the layer table, HEADER_LAYOUT (not the first layer descriptor "
                       "read as a key-0 entry, NON_CANONICAL; review item 2)",
                       "HEADER_LAYOUT", data=data, fault=fault))
    m = kv_message()
    m.entries[1].length = 16  # CONTEXT_LENGTH's value would run 8 bytes into the layer table
    out.append(invalid("6.1/entry-runs-into-layer-table", "6.1", ["R-6.1"],
                       "CONTEXT_LENGTH declares 16 value bytes, which end inside the layer "
                       "table but inside the body: HEADER_LAYOUT (not INVALID_VALUE for a "
                       "16-byte u64; review item 2)", "HEADER_LAYOUT", msg=m, fault="entry[1]+4"))
    # Item 18: well-formedness for the entry's own type comes before the key's type.
    m = kv_message()
    m.entries[0].type = 1  # MODEL_ID typed u64 with its 32 bytes
    out.append(invalid("6.2/model-id-typed-u64-32-bytes", "6.2", ["R-6.11", "R-6.4"],
                       "MODEL_ID typed u64 with 32 bytes: not a well-formed u64, so "
                       "INVALID_VALUE before ENTRY_TYPE (review item 18)", "INVALID_VALUE",
                       msg=m, fault="entry[0]+3"))
    m = kv_message()
    m.entries[0].type, m.entries[0].value = 1, struct.pack("<Q", 7)
    out.append(invalid("6.2/model-id-typed-u64-8-bytes", "6.2", ["R-6.4"],
                       "MODEL_ID typed u64 with 8 bytes: well-formed, wrong type for the key: "
                       "ENTRY_TYPE (the contrast to model-id-typed-u64-32-bytes)",
                       "ENTRY_TYPE", msg=m, fault="entry[0]+3"))
    # Item 17: an f64 keeps its sign in canonical JSON and on re-encoding.
    out.append(valid("6.3/f64-negative-zero", "6.3", ["R-18.1", "R-9.2"],
                     "an unregistered non-critical f64 entry holding -0.0: canonical JSON "
                     "writes -0.0, and re-encoding keeps the sign bit (review item 17)",
                     text_message(extra=[WEntry(0x7002, 3, struct.pack("<d", -0.0))])))
    out += every_allowed_key_cases()
    # Item 36: the allowed-keys lists are closed; ACCEPT does not allow MODEL_NAME.
    out.append(invalid("10/entry-not-allowed-model-name-in-accept", "10", ["R-6.6"],
                       "ACCEPT carrying MODEL_NAME, which HELLO allows and ACCEPT does not "
                       "(review item 36)", "ENTRY_NOT_ALLOWED",
                       msg=accept_message(MODEL_NAME="b")))
    return out


def every_allowed_key_cases() -> list[CaseDef]:
    """Item 36: each kind with every key its row of the kinds table allows, AUTH_KEY_ID (D8)
    included: the table is read as required plus "other allowed keys", nothing else."""
    vocab = vocabulary([b"a", b"b"])
    digest = hashlib.sha256(vocab).digest()
    auth = {"AUTH_KEY_ID": TEST_KEY_ID}
    hidden = hidden_message()
    hidden.entries = sorted([ent("MODEL_ID", MODEL_ID), ent("TOKENIZER_ID", TOKENIZER_ID),
                             ent("MODEL_NAME", "m"), ent("PRODUCER", "p"),
                             ent("CONTEXT_LENGTH", 9), ent("CREATED_BY_STEPS", 3),
                             ent("HIDDEN_SOURCE", 2), ent("PROJ_METHOD", 1),
                             ent("PROJ_SOURCE_MODEL_ID", OTHER_MODEL_ID),
                             ent("PROJ_SOURCE_TOKENIZER_ID", PEER_TOKENIZER),
                             ent("PROJ_TARGET_TOKENIZER_ID", TOKENIZER_ID),
                             ent("PROJ_SHARED_VOCAB", 100), ent("PROJ_TEMPERATURE", 0.5),
                             ent("AUTH_KEY_ID", TEST_KEY_ID)], key=lambda e: e.key)
    messages = {
        "hidden-state": hidden,
        "text": text_message(extra=[ent("TEXT_ROLE", "tool"), ent("MODEL_NAME", "m"),
                                    ent("PRODUCER", "p"), ent("AUTH_KEY_ID", TEST_KEY_ID)]),
        "hello": hello_message(MODEL_NAME="m", VOCABULARY=vocab, VOCAB_DIGEST=digest, **auth),
        "accept": accept_message(mode=1, CAP_DTYPES=[1, 2], CAP_CODECS=[0], CAP_MODES=[1, 3],
                                 MAX_MESSAGE_BYTES=1 << 20, SHARED_VOCAB_SIZE=2,
                                 VOCABULARY=vocab, VOCAB_DIGEST=digest, **auth),
        "error": WMessage(KINDS["ERROR"], [ent("AGENT_NAME", "b"), ent("ERROR_CODE", 36),
                                           ent("ERROR_TEXT", "no"),
                                           ent("AUTH_KEY_ID", TEST_KEY_ID)]),
    }
    out = []
    for name, msg in messages.items():
        msg.auth_key = TEST_KEY
        out.append(valid(f"10/{name}-every-allowed-key", "10", ["R-6.6"],
                         f"{name.upper().replace('-', '_')} with every key its row of the kinds "
                         "table allows, authenticated (review item 36)", msg,
                         context={"keys": {TEST_KEY_ID.hex(): TEST_KEY.hex()}},
                         features=["auth"]))
    return out


def context_tensor_cases() -> list[CaseDef]:
    """Item 9 and the TOKEN_IDS count silence: which code for a wrong batch, and at most one."""
    out = []

    def ids(role: str, batch: int, n: int, dtype: str = "int64") -> WTensor:
        data = (b"\1" * batch * n if role == "ATTENTION_MASK"  # only 0 and 1 (R-10.8)
                else array_bytes(dtype, (batch, n), f"{role}{batch}{n}"))
        return WTensor(ROLES[role], DTYPES[dtype], (batch, n), data, layout=BT)

    m = kv_message()
    m.tensors[0:0] = [ids("TOKEN_IDS", 1, 4), ids("POSITIONS", 1, 4),
                      ids("ATTENTION_MASK", 1, 4, "uint8")]
    out.append(valid("10.4/context-tensors-once-each", "10.4", ["R-10.3", "R-10.6", "R-10.14"],
                     "TOKEN_IDS, POSITIONS and ATTENTION_MASK, one each, [1, CONTEXT_LENGTH]",
                     m))
    for role, dtype in (("TOKEN_IDS", "int64"), ("POSITIONS", "int32"),
                        ("ATTENTION_MASK", "uint8")):
        m = kv_message()
        m.tensors[0:0] = [ids(role, 1, 4, dtype), ids(role, 1, 4, dtype)]
        out.append(invalid(f"10.4/two-{role.lower().replace('_', '-')}", "10.4", ["R-10.14"],
                           f"two {role} tensors in one KV_CACHE: at most one (KIND_CONSTRAINT at"
                           " the second)", "KIND_CONSTRAINT", msg=m, fault="tensor[1]"))
        m = kv_message()
        m.tensors.insert(0, ids(role, 2, 4, dtype))
        out.append(invalid(f"10.4/{role.lower().replace('_', '-')}-batch-differs", "10.4",
                           ["R-10.1", "R-10.3" if role == "TOKEN_IDS" else "R-10.6"],
                           f"{role} [2, 4] with K/V of batch 1: the batch rule R-10.1, "
                           "ROLE_SHAPE at F.3 (not KIND_CONSTRAINT; review item 9)",
                           "ROLE_SHAPE", msg=m))
    m = hidden_message()
    m.tensors.insert(0, ids("TOKEN_IDS", 1, 2))
    m.tensors.insert(0, ids("TOKEN_IDS", 1, 2))
    out.append(invalid("10.6/two-token-ids", "10.6", ["R-10.14"],
                       "a HIDDEN_STATE with two TOKEN_IDS tensors: at most one",
                       "KIND_CONSTRAINT", msg=m, fault="tensor[1]"))
    m = hidden_message()
    m.tensors.insert(0, ids("TOKEN_IDS", 2, 5))
    out.append(invalid("10.6/token-ids-batch-differs", "10.6", ["R-10.10"],
                       "HIDDEN_STATE of batch 1 after a TOKEN_IDS of batch 2: KIND_CONSTRAINT",
                       "KIND_CONSTRAINT", msg=m, fault="tensor[1]"))
    m = hidden_message()
    m.tensors.append(ids("TOKEN_IDS", 1, 9))
    out.append(valid("10.6/token-ids-after-hidden-state", "10.6", ["R-10.10"],
                     "TOKEN_IDS [1, 9] after a HIDDEN_STATE of batch 1: any context length, "
                     "same batch, any order among message-level tensors", m))
    return out


def quant_cases() -> list[CaseDef]:
    out = []
    # Item 8: an empty axis has ceil(0 / group_size) = 0 groups when group_size > 0.
    def empty(group_size: int, scale_dim: int) -> WMessage:
        m = WMessage(KINDS["KV_CACHE"], [ent("MODEL_ID", MODEL_ID), ent("CONTEXT_LENGTH", 0)],
                     [WLayer(0, FULL, 0, 0)], [])
        shape, sshape = (1, 2, 0, 8), (1, 2, scale_dim, 8)
        m.tensors = [
            WTensor(ROLES["QUANT_SCALE"], DTYPES["float16"], sshape,
                    array_bytes("float16", sshape, "es"), layer=0),
            WTensor(ROLES["KEY"], DTYPES["int8"], shape, b"", layer=0, layout=1,
                    quant_scheme=1, quant_axis=2, group_size=group_size, scale_tensor=0,
                    dequant_dtype=DTYPES["float16"]),
            WTensor(ROLES["VALUE"], DTYPES["float16"], shape, b"", layer=0, layout=1)]
        return m
    out.append(valid("12/empty-axis-no-groups", "12.1", ["R-12.3"],
                     "int8 KEY [1, 2, 0, 8] quantized along the empty token axis with "
                     "group_size 32: G = 0, scale [1, 2, 0, 8] (review item 8)", empty(32, 0)))
    out.append(invalid("12/empty-axis-one-group", "12.1", ["R-12.3"],
                       "the same KEY with a scale of [1, 2, 1, 8]: one group where "
                       "ceil(0 / 32) = 0 (review item 8)", "QUANT_PARAMS", msg=empty(32, 1)))
    out.append(valid("12/empty-axis-group-size-0", "12.1", ["R-12.3"],
                     "group_size 0 on the empty axis: one group whatever dim, scale "
                     "[1, 2, 1, 8]", empty(0, 1)))
    # Item 7: R-12.2's axis rule is step T.12, after T.7 (layer reference).
    m = quantized_kv()
    m.tensors[1].quant_axis = 4
    m.tensors[1].layer = 5
    out.append(invalid("12/two-faults-axis-and-layer", "9.2", ["R-12.2", "R-7.6", "R-9.5"],
                       "quant_axis 4 of a rank-4 tensor (R-12.2, step T.12) and layer 5 of a "
                       "1-layer table (T.7): BAD_REFERENCE, T.6 holds only three checks "
                       "(review item 7)", "BAD_REFERENCE", msg=m, flags=TWO))
    return out


def limit_cases() -> list[CaseDef]:
    out = []
    # Item 19: an end offset above 2^64 - 1 is LENGTH_OVERFLOW (R-1.1), even at T.15.
    n = (1 << 64) - 64
    t = WTensor(ROLES["SSM_STATE"], DTYPES["uint8"], (n,), b"", layer=0, raw_len=n,
                stored_len=n)
    m = WMessage(KINDS["KV_CACHE"], [ent("MODEL_ID", MODEL_ID), ent("CONTEXT_LENGTH", 1)],
                 [WLayer(0, RECURRENT, 0, 1)], [t])
    data = build(m).data
    cut = build(m).offsets["tensor[0].data"]
    out.append(invalid("7.1/data-end-overflows-u64", "9.2", ["R-1.1", "R-7.2"],
                       "raised max_tensor_bytes and a raw uint8 tensor of 2^64 - 64 bytes: its "
                       "data would end past 2^64 - 1, LENGTH_OVERFLOW at T.15 (review item 19)",
                       "LENGTH_OVERFLOW", data=data[:cut],
                       context={"limits": {"max_tensor_bytes": (1 << 64) - 1}},
                       features=["limits"], flags=["LargeDeclared"]))
    # Item 10: an input longer than max_message_bytes whose first bytes are already faulty.
    bad = bytearray(build(kv_message()).data)
    bad[0] = 0x09
    out.append(CaseDef("16/limit-message-and-bad-magic", "16", ["R-9.5", "R-16.1"],
                       "a 700-byte input with a bad magic and max_message_bytes 256: "
                       "LIMIT_MESSAGE for a complete-buffer decoder, BAD_MAGIC allowed for an "
                       "incremental one (review item 10)", data=bytes(bad), result="acceptable",
                       any_of=["LIMIT_MESSAGE", "BAD_MAGIC"], flags=["IncrementalMay", "TwoFaults"],
                       context={"limits": {"max_message_bytes": 256}}, features=["limits"]))
    size = len(build(kv_message()).data)
    out.append(valid("16/limit-message-equal", "16", ["R-16.1"],
                     f"max_message_bytes equal to the message length ({size})", kv_message(),
                     context={"limits": {"max_message_bytes": size}}, features=["limits"]))
    out.append(invalid("16/limit-message-one-over", "16", ["R-16.1"],
                       f"max_message_bytes one below the message length ({size - 1})",
                       "LIMIT_MESSAGE", msg=kv_message(),
                       context={"limits": {"max_message_bytes": size - 1}}, features=["limits"]))
    # Item 11: LIMIT_BUFFER is decided from declared sizes; a complete-buffer decoder goes on.
    out.append(CaseDef("16/limit-buffer-header", "16", ["R-9.5", "R-16.1"],
                       "max_buffer_bytes 64 and a HEADER section of 160 bytes: an incremental "
                       "decoder MAY refuse it (S.4), a complete-buffer decoder decodes it",
                       msg=kv_message(), result="acceptable", any_of=["valid", "LIMIT_BUFFER"],
                       context={"limits": {"max_buffer_bytes": 64}}, features=["limits"],
                       flags=["IncrementalMay"]))
    return out


def _raw_block_frame(fcs: int | None, blocks: list[bytes], window_exp: int = 0) -> bytes:
    """A zstd frame written by hand (RFC 8878): header, raw blocks, no checksum. Raw blocks keep
    the bytes independent of any zstd library version."""
    if fcs is None:
        head = bytes([0x00, window_exp << 3])  # no content size, Window_Descriptor
    else:
        head = bytes([0x80, window_exp << 3]) + struct.pack("<I", fcs)  # FCS in 4 bytes
    out = bytearray(b"\x28\xb5\x2f\xfd" + head)
    for i, b in enumerate(blocks):
        out += struct.pack("<I", int(i == len(blocks) - 1) | (len(b) << 3))[:3] + b
    return bytes(out)


def zstd_cases() -> list[CaseDef]:
    """Item 12 (the order of the zstd checks) and item 33 (the window, a deliberate choice)."""
    raw = array_bytes("float16", (8, 8), "zraw")  # 128 bytes

    def state(stored: bytes) -> WMessage:
        t = WTensor(ROLES["SSM_STATE"], DTYPES["float16"], (8, 8), stored, layer=0, codec=1,
                    raw_len=128)
        return WMessage(KINDS["KV_CACHE"], [ent("MODEL_ID", MODEL_ID), ent("CONTEXT_LENGTH", 7)],
                        [WLayer(0, RECURRENT, 0, 7)], [t])
    out = [
        valid("7.3/zstd-raw-blocks", "7.3", ["R-7.13"],
              "a frame of two raw blocks with Frame_Content_Size 128 (written by hand)",
              state(_raw_block_frame(128, [raw[:50], raw[50:]]))),
        invalid("7.3/zstd-content-size-matches-fewer-blocks", "7.3", ["R-7.8", "R-7.13"],
                "Frame_Content_Size 128 = raw_length, but the blocks hold 100 bytes: a frame"
                " that contradicts itself, DECOMPRESSION_FAILED (review item 12)",
                "DECOMPRESSION_FAILED", msg=state(_raw_block_frame(128, [raw[:100]]))),
        invalid("7.3/zstd-content-size-matches-more-blocks", "7.3", ["R-7.8", "R-7.13"],
                "Frame_Content_Size 128 = raw_length, but the blocks hold 192 bytes: "
                "DECOMPRESSION_FAILED (review item 12)", "DECOMPRESSION_FAILED",
                msg=state(_raw_block_frame(128, [raw, raw[:64]]))),
        invalid("7.3/zstd-no-content-size-more-blocks", "7.3", ["R-7.8"],
                "no Frame_Content_Size and raw blocks of 192 bytes for raw_length 128: "
                "DECOMPRESSED_SIZE", "DECOMPRESSED_SIZE",
                msg=state(_raw_block_frame(None, [raw, raw[:64]]))),
        invalid("7.3/zstd-two-faults-structure-and-size", "7.3", ["R-7.13"],
                "Frame_Content_Size 192 (differs) and a block header running past the "
                "stored bytes: the structure walk comes first, DECOMPRESSION_FAILED",
                "DECOMPRESSION_FAILED",
                msg=state(_raw_block_frame(192, [raw + raw[:64]])[:-10]), flags=TWO),
        invalid("7.3/zstd-two-faults-size-and-content", "7.3", ["R-7.13"],
                "Frame_Content_Size 192 (differs) and a compressed block of garbage: the "
                "declared size is decided before decompressing, DECOMPRESSED_SIZE",
                "DECOMPRESSED_SIZE", msg=state(
                    b"\x28\xb5\x2f\xfd\x80\x00" + struct.pack("<I", 192)
                    + struct.pack("<I", 1 | (2 << 1) | (8 << 3))[:3] + b"\xff" * 8), flags=TWO),
        valid("7.3/zstd-window-8mib", "7.3", ["R-7.13"],
              "a frame without content size declaring an 8 MiB window: a decoder SHOULD "
              "accept it", state(_raw_block_frame(None, [raw], window_exp=13)),
              level="recommended"),
        CaseDef("7.3/zstd-window-128mib", "7.3", ["R-7.13"],
                "a frame without content size declaring a 128 MiB window: a decoder MAY refuse"
                " it (review item 33: both outcomes conform)",
                msg=state(_raw_block_frame(None, [raw], window_exp=17)), result="acceptable",
                any_of=["valid", "DECOMPRESSION_FAILED"], flags=["ReceiverMay"]),
    ]
    return out


def handshake_cases() -> list[CaseDef]:
    """Items 4, 5, 22-26 and 30: the testee's state, identities, order and vocabulary."""
    vocab = b"\1\0\0\0a"
    out = [
        # Item 4: spec 14.3's order (VOCAB_DIGEST, TEXT, NONCE, MODE, versions).
        invalid("14.3/two-faults-vocab-digest-and-nonce", "14.3", ["R-14.5", "R-14.4"],
                "a HELLO with a wrong VOCAB_DIGEST that also reflects the receiver's NONCE: "
                "VOCAB_DIGEST is step 3, NONCE step 5 (review item 4)", "INVALID_VALUE",
                msg=hello_message(VOCABULARY=vocab, VOCAB_DIGEST=b"\0" * 32,
                                  NONCE=RECEIVER_NONCE), context={"local": LOCAL},
                features=HS, flags=TWO),
        invalid("14.3/two-faults-no-text-and-nonce", "14.3", ["R-14.3", "R-14.4"],
                "a HELLO without TEXT in CAP_MODES that reflects the receiver's NONCE: "
                "UNSUPPORTED_CAPABILITY (step 4 before 5)", "UNSUPPORTED_CAPABILITY",
                msg=hello_message(CAP_MODES=[1, 2], NONCE=RECEIVER_NONCE),
                context={"local": LOCAL}, features=HS, flags=TWO),
        invalid("14.3/two-faults-mode-not-offered-and-version", "14.3", ["R-14.2"],
                "an ACCEPT choosing PROJECTION, which the initiator did not offer, with only "
                "version 2.0: NEGOTIATION_MISMATCH (step 6 before 7)", "NEGOTIATION_MISMATCH",
                msg=accept_message(mode=2, VERSIONS=[0x20000]),
                context={"local": dict(INITIATOR, modes=[1, 3])}, features=HS, flags=TWO),
        invalid("14.3/accept-without-text-mode", "14.3", ["R-14.3"],
                "an ACCEPT whose CAP_MODES is [1, 2]: R-14.3 holds for ACCEPT as for HELLO",
                "UNSUPPORTED_CAPABILITY", msg=accept_message(mode=1, CAP_MODES=[1, 2]),
                context={"local": INITIATOR}, features=HS),
        # Item 5: an ERROR ends a handshake only for the initiator.
        invalid("14.2/error-to-responder", "14.2", ["R-14.11"],
                "an ERROR reaching a responder in WAIT_HELLO: any other kind, KIND_CONSTRAINT "
                "(review item 5)", "KIND_CONSTRAINT", msg=error_message(73),
                context={"local": LOCAL}, features=HS),
        valid("14.2/error-to-initiator", "14.2", ["R-14.11"],
              "an ERROR reaching an initiator in WAIT_ACCEPT ends the handshake with the "
              "peer's code: decoded, not a receiver error (review item 5)", error_message(71),
              context={"local": INITIATOR}, features=HS),
        # Item 23: the state for a message that is not the expected handshake kind.
        invalid("14.2/kv-cache-while-waiting-for-hello", "14.2", ["R-14.11"],
                "a KV_CACHE at a responder with no session yet (WAIT_HELLO): KIND_CONSTRAINT "
                "(review item 23)", "KIND_CONSTRAINT", msg=kv_message(),
                context={"local": LOCAL}, features=HS),
        invalid("14.2/text-while-waiting-for-accept", "14.2", ["R-14.11"],
                "a TEXT at an initiator in WAIT_ACCEPT: KIND_CONSTRAINT", "KIND_CONSTRAINT",
                msg=text_message(), context={"local": INITIATOR}, features=HS),
        valid("14.2/kv-cache-in-session", "14.2", ["R-14.6", "R-14.7", "R-14.8"],
              "a KV_CACHE of the receiver's own model in a KV_CACHE session", kv_message(),
              context={"local": dict(LOCAL, session_mode=1)}, features=HS),
        valid("14.2/latent-state-in-kv-session", "14.2", ["R-14.11", "R-14.6"],
              "a HIDDEN_STATE with HIDDEN_SOURCE 1 in a KV_CACHE session (spec 14.1)",
              hidden_message(), context={"local": dict(LOCAL, session_mode=1)}, features=HS),
        invalid("14.2/latent-state-in-projection-session", "14.2", ["R-14.11", "R-14.6"],
                "a HIDDEN_STATE with HIDDEN_SOURCE 1 in a PROJECTION session: not a payload"
                " of the mode", "UNSUPPORTED_CAPABILITY", msg=hidden_message(),
                context={"local": dict(LOCAL, session_mode=2)}, features=HS),
        # Item 24: renegotiation.
        valid("14.2/hello-in-session", "14.2", ["R-14.11", "R-14.1"],
              "a HELLO in an established session, at the first handshake's initiator: a "
              "renegotiation, checked as a responder (review item 24)", hello_message(),
              context={"local": dict(INITIATOR, session_mode=1)}, features=HS),
        invalid("14.2/hello-in-session-reflected-nonce", "14.2", ["R-14.4"],
                "a renegotiating HELLO carrying the receiver's NONCE: the responder's checks "
                "apply", "NEGOTIATION_MISMATCH", msg=hello_message(NONCE=RECEIVER_NONCE),
                context={"local": dict(INITIATOR, session_mode=1)}, features=HS),
        invalid("14.2/accept-in-session", "14.2", ["R-14.11", "R-14.6"],
                "an ACCEPT in an established session: not a payload, UNSUPPORTED_CAPABILITY "
                "(review item 24)", "UNSUPPORTED_CAPABILITY", msg=accept_message(mode=1),
                context={"local": dict(INITIATOR, session_mode=1)}, features=HS),
        # Item 26: which identity the receiver checks.
        invalid("14.2/kv-cache-of-other-model-in-session", "14.2", ["R-14.8", "R-10.4"],
                "a KV_CACHE of model B in a KV_CACHE session of a receiver whose local.model_id"
                " is model A, no expected_model_id: MODEL_MISMATCH (review item 26)",
                "MODEL_MISMATCH", msg=_kv_of(OTHER_MODEL_ID),
                context={"local": dict(LOCAL, session_mode=1)}, features=HS),
        invalid("14.2/two-faults-dtype-and-model", "14.2", ["R-14.7", "R-14.8"],
                "a KV_CACHE of another model using float16 where only float32 was offered: "
                "R-14.7 comes before R-14.8, UNSUPPORTED_CAPABILITY",
                "UNSUPPORTED_CAPABILITY", msg=_kv_of(OTHER_MODEL_ID),
                context={"local": dict(LOCAL, session_mode=1, dtypes=[1])}, features=HS,
                flags=TWO),
        invalid("10.6/projection-for-another-tokenizer", "10.6", ["R-10.12"],
                "a projection whose PROJ_TARGET_TOKENIZER_ID is not the receiver's "
                "expected_tokenizer_id: MODEL_MISMATCH", "MODEL_MISMATCH", msg=_projection(),
                context={"expected_model_id": MODEL_ID.hex(),
                         "expected_tokenizer_id": OTHER_MODEL_ID.hex()},
                features=["model_check"]),
        valid("10.6/projection-for-this-tokenizer", "10.6", ["R-10.12"],
              "a projection made for the receiver's own tokenizer", _projection(),
              context={"expected_model_id": MODEL_ID.hex(),
                       "expected_tokenizer_id": TOKENIZER_ID.hex()}, features=["model_check"]),
    ]
    out += vocabulary_cases()
    return out


def _kv_of(model_id: bytes) -> WMessage:
    m = kv_message()
    m.entries[0] = ent("MODEL_ID", model_id)
    return m


def _projection() -> WMessage:
    m = hidden_message()
    m.entries = [ent("MODEL_ID", MODEL_ID), ent("HIDDEN_SOURCE", 2), ent("PROJ_METHOD", 1),
                 ent("PROJ_SOURCE_TOKENIZER_ID", PEER_TOKENIZER),
                 ent("PROJ_TARGET_TOKENIZER_ID", TOKENIZER_ID), ent("PROJ_SHARED_VOCAB", 100)]
    return m


def vocabulary_cases() -> list[CaseDef]:
    """Items 22 and 30: the initiator recomputes rule 3 from its own vocabulary
    (local.vocabulary) and the ACCEPT's; decoded strings as spec 14.5 says."""
    def accept(tokens: list[bytes]) -> WMessage:
        v = vocabulary(tokens)
        return accept_message(mode=2, MODEL_ID=OTHER_MODEL_ID, TOKENIZER_ID=PEER_TOKENIZER,
                              CAP_MODES=[1, 2, 3], VOCABULARY=v,
                              VOCAB_DIGEST=hashlib.sha256(v).digest())

    def local(tokens: list[bytes] | None) -> dict[str, Any]:
        return dict(INITIATOR, vocabulary=None if tokens is None else vocabulary(tokens).hex())
    # A SentencePiece-style vocabulary (U+2581 makes it not byte-level) and a byte-level one.
    sp = [b"<0x0A>", "\u2581zz".encode()]
    gpt2 = ["\u010a".encode(), b"qq"]  # byte-level: U+010A stands for the byte 0x0A
    return [
        valid("14.3/projection-by-shared-vocabulary", "14.3", ["R-14.2", "R-14.10"],
              "ACCEPT resolving PROJECTION with another TOKENIZER_ID; the initiator's own "
              "vocabulary (local.vocabulary) shares 1 of 2 decoded strings, 2 x 1 >= 2: "
              "PROJECTION (review item 22)", accept(gpt2), context={"local": local(sp)},
              features=HS),
        invalid("14.3/projection-without-own-vocabulary", "14.3", ["R-14.2"],
                "the same ACCEPT at an initiator without a vocabulary: only identical "
                "TOKENIZER_IDs make tokenizers compatible, so it resolves TEXT and refuses "
                "the ACCEPT's PROJECTION", "NEGOTIATION_MISMATCH", msg=accept(gpt2),
                context={"local": local(None)}, features=HS),
        invalid("14.3/projection-below-half-shared", "14.3", ["R-14.2"],
                "vocabularies of 3 tokens sharing 1 decoded string: 2 x 1 < 3, TEXT, so the "
                "ACCEPT's PROJECTION is refused", "NEGOTIATION_MISMATCH",
                msg=accept(gpt2 + [b"rr"]), context={"local": local(sp + [b"ss"])},
                features=HS),
        valid("14.5/byte-token-lower-case-hex", "14.5", ["R-14.2"],
              "the initiator's vocabulary spells the byte token <0x0a> in lower case: it is "
              "still the byte 0x0A, shared with the peer's byte-level U+010A (review item 30)",
              accept(gpt2), context={"local": local([b"<0x0a>", sp[1]])}, features=HS),
        valid("14.5/non-utf8-record-keeps-byte-level", "14.5", ["R-14.2"],
              "the peer's byte-level vocabulary also holds a record that is not UTF-8: the "
              "record has no decoded string and does not make the vocabulary non-byte-level "
              "(review item 30)", accept(gpt2 + [b"\xff"]), context={"local": local(sp)},
              features=HS),
    ]


def cases() -> list[CaseDef]:
    return (header_cases() + context_tensor_cases() + quant_cases() + limit_cases()
            + zstd_cases() + handshake_cases())

