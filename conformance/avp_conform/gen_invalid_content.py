"""Invalid vectors for message content: header fields, entries, layers, tensor descriptors, kind
rules, quantization, authentication and receiver context (model identity, handshake)."""

from __future__ import annotations

import struct
from collections.abc import Callable

from .gen_common import (
    BHTD,
    BT,
    BTD,
    DTYPES,
    FULL,
    KEYS,
    KINDS,
    MODEL_ID,
    OTHER_MODEL_ID,
    RECURRENT,
    ROLES,
    SLIDING,
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
    kv_tensors,
    text_message,
)
from .gen_invalid_framing import invalid
from .wire import NO_REF, crc32c


def put(obj: object, name: str, value: object) -> object:
    """setattr that returns the object, so a lambda can set several fields in one expression."""
    setattr(obj, name, value)
    return obj


def mutated(make: Callable[[], WMessage], change: Callable[[WMessage], object]) -> WMessage:
    m = make()
    change(m)
    return m


def header_cases() -> list[CaseDef]:
    out = []
    for kind in (0, 4, 0xFFFF):
        out.append(invalid(f"6.1/unknown-kind-{kind}", "6.1", ["R-6.2"], f"kind {kind}",
                           "UNKNOWN_KIND", msg=mutated(text_message, _set_kind(kind)),
                           fault="header+16"))
    out.append(invalid("6.1/header-flags-nonzero", "6.1", ["R-1.2"], "header flags = 0x0100",
                       "RESERVED_NONZERO",
                       msg=mutated(kv_message, lambda m: put(m, "header_flags", 0x100)),
                       fault="header+18"))
    out.append(invalid("6.1/entry-count-too-large", "6.1", ["R-6.1"],
                       "entry_count 3 but two entries: the layer table is read as an entry",
                       "HEADER_LAYOUT",
                       msg=mutated(text_message, lambda m: put(m, "entry_count", 2)),
                       fault="header+20"))
    out.append(invalid("6.1/layer-count-too-small", "6.1", ["R-6.1"],
                       "layer_count 1 but two layer descriptors follow", "HEADER_LAYOUT",
                       msg=mutated(kv_message, lambda m: put(m, "layer_count", 1)),
                       fault="header+24"))
    out.append(invalid("6.1/layer-count-too-large", "6.1", ["R-6.1"],
                       "layer_count 3 but two layer descriptors follow", "HEADER_LAYOUT",
                       msg=mutated(kv_message, lambda m: put(m, "layer_count", 3)),
                       fault="header+24"))
    m = text_message()
    m.entries[0].length = 400
    out.append(invalid("6.2/entry-length-past-body", "6.2", ["R-6.1"],
                       "TEXT entry length 400 runs past the header body", "HEADER_LAYOUT",
                       msg=m, fault="entry[0]+4"))
    # entries: order, flags, types, values
    m = kv_message()
    m.entries.reverse()
    out.append(invalid("6.2/entries-unsorted", "6.2", ["R-6.3"],
                       "CONTEXT_LENGTH before MODEL_ID", "NON_CANONICAL", msg=m,
                       fault="entry[1]+0"))
    m = text_message(extra=[ent("TEXT_ROLE", "a")])
    m.entries.append(ent("TEXT_ROLE", "b"))
    out.append(invalid("6.2/entries-duplicate-key", "6.2", ["R-6.3"], "TEXT_ROLE twice",
                       "NON_CANONICAL", msg=m, fault="entry[2]+0"))
    m = text_message()
    m.entries[0].flags = 0x03
    out.append(invalid("6.2/entry-flags-reserved-bit", "6.2", ["R-1.2"],
                       "TEXT entry flags 0x03 (bit 1 reserved)", "RESERVED_NONZERO", msg=m,
                       fault="entry[0]+2"))
    m = text_message()
    m.entries.append(WEntry(0x7000, 5, b"must understand", critical=True))
    out.append(invalid("6.2/unknown-critical-entry", "6.2", ["R-6.5", "R-3.3"],
                       "unregistered key 0x7000 with CRITICAL", "UNKNOWN_CRITICAL", msg=m,
                       fault="entry[1]+0"))
    wrong_types: list[tuple[str, Callable[[], WMessage], int, int, bool]] = [
                   ("MODEL_ID-as-utf8", lambda: kv_message_with(0, ent("MODEL_ID", b"a" * 32)),
                    0, 4, True),
                   ("CONTEXT_LENGTH-as-i64", kv_message, 1, 2, True),
                   ("TEXT-not-critical", text_message, 0, 4, False),
                   ("MODEL_NAME-critical", lambda: text_message(extra=[ent("MODEL_NAME", "m")]),
                    0, 4, True)]
    for name, make, idx, vtype, crit in wrong_types:
        m = make()
        m.entries[idx].type, m.entries[idx].critical = vtype, crit
        out.append(invalid(f"6.2/entry-type-{name.lower().replace('_', '-')}", "6.2", ["R-6.4"],
                           f"registered key with type {vtype}, critical={crit}", "ENTRY_TYPE",
                           msg=m, fault=f"entry[{idx}]+2"))
    bad_values: list[tuple[str, Callable[[], WMessage], str]] = [
        ("model-id-31-bytes", lambda: kv_message_with(0, ent("MODEL_ID", MODEL_ID[:31])),
         "MODEL_ID of 31 bytes"),
        ("text-invalid-utf8", lambda: text_message_raw(b"caf\xc3"), "TEXT ends inside a UTF-8 "
         "sequence"),
        ("text-overlong-utf8", lambda: text_message_raw(b"\xc0\xaf"), "overlong encoding of /"),
        ("text-surrogate", lambda: text_message_raw(b"\xed\xa0\x80"), "UTF-8 encoded surrogate"),
        ("text-bom", lambda: text_message_raw(b"\xef\xbb\xbfhello"), "TEXT starts with a BOM"),
        ("context-length-4-bytes", lambda: kv_message_with(1, WEntry(5, 1, b"\4\0\0\0", True)),
         "a u64 value of 4 bytes"),
        ("hidden-source-3", lambda: hidden_with(1, ent("HIDDEN_SOURCE", 3)), "HIDDEN_SOURCE 3"),
        ("versions-not-increasing",
         lambda: hello_message(VERSIONS=[0x10000, 0x10000]), "VERSIONS [1.0, 1.0]"),
        ("cap-dtypes-decreasing", lambda: hello_message(CAP_DTYPES=[3, 1]), "CAP_DTYPES [3, 1]"),
        ("u32-list-ragged", lambda: hello_message(CAP_MODES=b"\1\0\0\0\2\0"),
         "CAP_MODES of 6 bytes"),
        ("mode-0", lambda: accept_message(mode=0), "ACCEPT MODE 0"),
        ("error-code-zero", lambda: error_message(0), "ERROR_CODE 0 (outside 1..65535)"),
        ("error-code-65536", lambda: error_message(65536), "ERROR_CODE 65536 (outside 1..65535)"),
        ("nonce-15-bytes", lambda: hello_message(NONCE=b"n" * 15), "NONCE of 15 bytes"),
        ("auth-key-id-empty", lambda: text_message(extra=[ent("AUTH_KEY_ID", b"")]),
         "AUTH_KEY_ID of 0 bytes"),
        ("auth-key-id-65-bytes", lambda: text_message(extra=[ent("AUTH_KEY_ID", b"k" * 65)]),
         "AUTH_KEY_ID of 65 bytes"),
        ("proj-temperature-zero", lambda: projection_message(0.0), "PROJ_TEMPERATURE 0.0"),
        ("proj-temperature-negative", lambda: projection_message(-1.0), "PROJ_TEMPERATURE -1"),
        ("vocabulary-ragged", lambda: hello_message(VOCABULARY=b"\3\0\0\0ab"),
         "VOCABULARY whose last token is cut"),
    ]
    for name, make, comment in bad_values:
        out.append(invalid(f"6.2/invalid-value-{name}", "6.2", ["R-6.4"], comment,
                           "INVALID_VALUE", msg=make()))
    m = text_message()
    m.entries.append(WEntry(0x7001, 3, struct.pack("<Q", 0x7FF8000000000001)))
    out.append(invalid("6.3/f64-noncanonical-nan", "6.3", ["R-6.11"],
                       "an f64 NaN other than 0x7FF8000000000000 (in a skippable unknown key)",
                       "NON_CANONICAL", msg=m))
    missing: tuple[tuple[str, Callable[[], WMessage], str], ...] = (
                            ("kv-without-model-id", lambda: kv_message_drop(0), "MODEL_ID"),
                            ("kv-without-context-length", lambda: kv_message_drop(1),
                             "CONTEXT_LENGTH"),
                            ("text-without-text", lambda: text_message_raw(None), "TEXT"),
                            ("hello-without-versions", lambda: hello_message(VERSIONS=None),
                             "VERSIONS"),
                            ("error-without-code", lambda: WMessage(KINDS["ERROR"]),
                             "ERROR_CODE"),
                            ("hello-without-nonce", lambda: hello_message(NONCE=None), "NONCE"),
                            ("accept-without-nonce", lambda: accept_message(NONCE=None),
                             "NONCE"))
    for name, make, key in missing:
        out.append(invalid(f"6.2/missing-{name}", "10", ["R-6.6"], f"{key} absent",
                           "MISSING_ENTRY", msg=make()))
    for name, make in (("context-length-in-text",
                        lambda: text_message(extra=[ent("CONTEXT_LENGTH", 3)])),
                       ("text-in-kv-cache", lambda: kv_message(extra=[ent("TEXT", "hi")])),
                       ("mode-in-hello", lambda: hello_message(MODE=1))):
        out.append(invalid(f"10/entry-not-allowed-{name}", "10", ["R-6.6"], name,
                           "ENTRY_NOT_ALLOWED", msg=make()))
    return out


def _set_kind(kind: int) -> Callable[[WMessage], object]:
    return lambda m: put(m, "kind", kind)


def kv_message_with(index: int, entry: WEntry) -> WMessage:
    m = kv_message()
    m.entries[index] = entry
    return m


def kv_message_drop(index: int) -> WMessage:
    m = kv_message()
    del m.entries[index]
    return m


def text_message_raw(value: bytes | None) -> WMessage:
    m = text_message()
    if value is None:
        m.entries = [ent("TEXT_ROLE", "assistant")]
    else:
        m.entries[0] = WEntry(KEYS["TEXT"][0], 4, value, True)
    return m


def hidden_with(index: int, entry: WEntry) -> WMessage:
    m = hidden_message()
    m.entries[index] = entry
    return m


def projection_message(temperature: float) -> WMessage:
    m = hidden_message()
    m.entries = [ent("MODEL_ID", MODEL_ID), ent("HIDDEN_SOURCE", 2), ent("PROJ_METHOD", 1),
                 ent("PROJ_SOURCE_TOKENIZER_ID", OTHER_MODEL_ID),
                 ent("PROJ_TARGET_TOKENIZER_ID", MODEL_ID), ent("PROJ_SHARED_VOCAB", 100),
                 ent("PROJ_TEMPERATURE", temperature)]
    return m


def error_message(code: int) -> WMessage:
    return WMessage(KINDS["ERROR"], [ent("ERROR_CODE", code), ent("ERROR_TEXT", "no")])


def layer_cases() -> list[CaseDef]:
    out = []
    def lay(change: Callable[[WMessage], object]) -> WMessage:
        return mutated(kv_message, change)
    out.append(invalid("6.4/layer-reserved-a", "6.4", ["R-1.2"], "layer 0 reserved byte 5 = 1",
                       "RESERVED_NONZERO", fault="layer[0]+5",
                       msg=lay(lambda m: put(m.layers[0], "reserved_a", b"\1\0\0"))))
    out.append(invalid("6.4/layer-reserved-b", "6.4", ["R-1.2"], "layer 0 reserved u32 at 12",
                       "RESERVED_NONZERO", fault="layer[0]+12",
                       msg=lay(lambda m: put(m.layers[0], "reserved_b", 7))))
    out.append(invalid("6.4/layer-index-not-increasing", "6.4", ["R-6.7"],
                       "layer indices 3, 3", "NON_CANONICAL", fault="layer[1]+0",
                       msg=lay(lambda m: [put(la, "index", 3) for la in m.layers])))
    out.append(invalid("6.4/layer-index-decreasing", "6.4", ["R-6.7"], "layer indices 5, 2",
                       "NON_CANONICAL", fault="layer[1]+0",
                       msg=lay(lambda m: (put(m.layers[0], "index", 5),
                                          put(m.layers[1], "index", 2)))))
    out.append(invalid("6.4/full-attention-with-window", "6.4", ["R-6.8"],
                       "FULL_ATTENTION layer with window 4", "INVALID_VALUE", fault="layer[0]+8",
                       msg=lay(lambda m: put(m.layers[0], "window", 4))))
    out.append(invalid("6.4/sliding-window-zero", "6.4", ["R-6.8"],
                       "SLIDING_WINDOW layer with window 0", "INVALID_VALUE", fault="layer[1]+8",
                       msg=lay(lambda m: put(m.layers[1], "kind", SLIDING))))
    out.append(invalid("6.4/sliding-window-too-many-tokens", "6.4", ["R-6.8"],
                       "SLIDING_WINDOW of 2 holding 4 tokens", "TOKEN_RANGE", fault="layer[1]+24",
                       msg=lay(lambda m: (put(m.layers[1], "kind", SLIDING),
                                          put(m.layers[1], "window", 2)))))
    out.append(invalid("6.5/unknown-layer-kind", "6.5", ["R-6.12"], "layer_kind 9",
                       "INVALID_VALUE", fault="layer[0]+4",
                       msg=lay(lambda m: put(m.layers[0], "kind", 9))))
    m = kv_message()
    m.layers.append(WLayer(5, RECURRENT, (1 << 64) - 2, 3))
    out.append(invalid("6.4/token-range-overflows-u64", "6.4", ["R-6.9", "R-1.1"],
                       "recurrent layer token_start 2^64-2 + token_count 3", "LENGTH_OVERFLOW",
                       msg=m, fault="layer[2]+16"))
    # kind constraints
    m = kv_message()
    m.layers, m.tensors = [], []
    out.append(invalid("10/kv-cache-without-layers", "10", ["R-6.6"], "KV_CACHE, no layers",
                       "KIND_CONSTRAINT", msg=m))
    m = text_message()
    m.layers = [WLayer(0, FULL, 0, 0)]
    out.append(invalid("10/text-with-layer", "10", ["R-6.6", "R-10.13"], "TEXT with a layer table",
                       "KIND_CONSTRAINT", msg=m))
    m = text_message()
    m.tensors = [WTensor(ROLES["TOKEN_IDS"], DTYPES["int32"], (1, 2), b"\0" * 8, layout=BT)]
    out.append(invalid("10/text-with-tensor", "10", ["R-6.6", "R-10.13"], "TEXT carrying TOKEN_IDS",
                       "KIND_CONSTRAINT", msg=m))
    m = hidden_message()
    m.tensors = []
    out.append(invalid("10/hidden-state-without-tensor", "10", ["R-6.6"],
                       "HIDDEN_STATE with no tensor", "KIND_CONSTRAINT", msg=m))
    m = kv_message()
    m.tensors.insert(0, WTensor(ROLES["HIDDEN_STATE"], DTYPES["float16"], (1, 4, 8),
                                array_bytes("float16", (1, 4, 8), "h"), layout=BTD))
    out.append(invalid("10/hidden-state-tensor-in-kv-cache", "10", ["R-6.6"],
                       "a message-level HIDDEN_STATE tensor in a KV_CACHE", "KIND_CONSTRAINT",
                       msg=m))
    out.append(invalid("10.4/layer-end-not-context-length", "10.4", ["R-10.2"],
                       "CONTEXT_LENGTH 5, layers hold tokens [0, 4)", "KIND_CONSTRAINT",
                       msg=kv_message_with(1, ent("CONTEXT_LENGTH", 5))))
    m = kv_message()
    m.layers[0].token_start, m.layers[0].token_count = 1, 3
    m.tensors[:2] = kv_tensors(0, 1, 2, 3, 8, seed="kv")
    out.append(invalid("10.4/full-attention-not-from-zero", "10.4", ["R-10.2"],
                       "FULL_ATTENTION layer holding tokens [1, 4)", "KIND_CONSTRAINT", msg=m,
                       fault="layer[0]+16"))
    m = kv_message()
    m.tensors.insert(0, WTensor(ROLES["TOKEN_IDS"], DTYPES["int32"], (1, 3),
                                array_bytes("int32", (1, 3), "ids"), layout=BT))
    out.append(invalid("10.4/token-ids-wrong-length", "10.4", ["R-10.3"],
                       "TOKEN_IDS [1, 3] with CONTEXT_LENGTH 4", "KIND_CONSTRAINT", msg=m))
    m = kv_message()
    m.tensors[2:] = kv_tensors(1, 2, 2, 4, 8, seed="kv")
    out.append(invalid("10.4/batch-size-differs", "10.4", ["R-10.1"],
                       "layer 0 has batch 1, layer 1 batch 2", "ROLE_SHAPE", msg=m))
    return out


def tensor_cases() -> list[CaseDef]:
    out = []
    def t0(change: Callable[[WTensor], object], make: Callable[[], WMessage] = kv_message
           ) -> WMessage:
        m = make()
        change(m.tensors[0])
        return m
    simple = [
        ("reserved-a", "R-1.2", "reserved byte 29 = 1", "RESERVED_NONZERO", 29,
         lambda t: put(t, "reserved_a", b"\1\0\0")),
        ("reserved-b", "R-1.2", "reserved u32 at 60 = 1", "RESERVED_NONZERO", 60,
         lambda t: put(t, "reserved_b", 1)),
        ("tensor-index-wrong", "R-7.15", "tensor_index 1 for tensor 0", "TENSOR_INDEX", 0,
         lambda t: put(t, "tensor_index", 1)),
        ("layer-out-of-range", "R-7.6", "layer ordinal 2 with 2 layers", "BAD_REFERENCE", 4,
         lambda t: put(t, "layer", 2)),
        ("unknown-dtype-13", "R-7.5", "dtype 13", "UNKNOWN_DTYPE", 10,
         lambda t: put(t, "dtype", 13)),
        ("unknown-dtype-0", "R-7.5", "dtype 0", "UNKNOWN_DTYPE", 10,
         lambda t: put(t, "dtype", 0)),
        ("unknown-codec-4", "R-7.5", "codec 4", "UNKNOWN_CODEC", 11,
         lambda t: put(t, "codec", 4)),
        ("unknown-role-6", "R-7.5", "role 6", "UNKNOWN_ROLE", 8,
         lambda t: put(t, "role", 6)),
        ("unknown-layout-5", "R-7.5", "layout 5", "UNKNOWN_LAYOUT", 13,
         lambda t: put(t, "layout", 5)),
        ("raw-length-plus-one", "R-7.2", "raw_length one more than shape x dtype",
         "SIZE_MISMATCH", 40, lambda t: put(t, "raw_len", 129)),
        ("stored-length-differs-raw", "R-7.3", "RAW codec, stored_length 136 != raw 128",
         "SIZE_MISMATCH", 48, lambda t: (put(t, "data", t.data + b"\0" * 8),)),
        ("key-rank-3", "R-7.5", "KEY of rank 3", "ROLE_SHAPE", 12,
         lambda t: put(t, "shape", (2, 4, 8))),
        ("key-layout-btd", "R-7.5", "KEY with layout BTD", "ROLE_SHAPE", 13,
         lambda t: put(t, "layout", BTD)),
        ("key-at-message-level", "R-7.5", "KEY with layer 0xFFFFFFFF", "ROLE_SHAPE", 4,
         lambda t: put(t, "layer", NO_REF)),
        ("key-token-offset-past-layer", "R-7.7", "KEY tile at token_offset 1 (gap at 0)",
         "TOKEN_RANGE", 32, lambda t: put(t, "token_offset", 1)),
        ("data-crc-wrong", "R-7.4", "data_crc off by one", "DATA_CHECKSUM", 56,
         lambda t: put(t, "data_crc", (crc32c(t.data) + 1) & 0xFFFFFFFF)),
    ]
    for name, rid, comment, err, rel, change in simple:
        out.append(invalid(f"7.1/{name}", "7.1", [rid], comment, err, msg=t0(change),
                           fault=f"tensor[0]+{16 + rel}"))
    m = kv_message()
    m.tensors[0].rank = 3
    out.append(invalid("7.1/rank-disagrees-with-body", "7.1", ["R-7.1"],
                       "rank 3 but 4 shape values (body 96 bytes)", "HEADER_LAYOUT", msg=m,
                       fault="tensor[0]+8"))
    m = kv_message()
    m.layers.append(WLayer(9, RECURRENT, 0, 4))
    m.tensors.append(WTensor(ROLES["SSM_STATE"], DTYPES["float32"], (1 << 32, 1 << 32, 1 << 8),
                             b"", layer=2, raw_len=0, stored_len=0))
    out.append(invalid("7.1/shape-product-overflows", "7.1", ["R-7.2", "R-1.1"],
                       "shape 2^32 x 2^32 x 2^8 overflows u64", "LENGTH_OVERFLOW", msg=m))
    m = kv_message()
    m.layers.append(WLayer(9, RECURRENT, 0, 4))
    m.tensors.append(WTensor(ROLES["SSM_STATE"], DTYPES["float32"], (1 << 62,), b"", layer=2,
                             raw_len=0, stored_len=0))
    out.append(invalid("7.1/bytes-overflow", "7.1", ["R-7.2", "R-1.1"],
                       "2^62 float32 elements: the byte count overflows u64", "LENGTH_OVERFLOW",
                       msg=m))
    mv = kv_message()
    mv.tensors[0].data = array_bytes("float16", (1, 2, 4, 8), "other")
    mv.tensors[0].data_crc = crc32c(array_bytes("float16", (1, 2, 4, 8), "kv/0/KEY"))
    out.append(invalid("7.1/data-replaced", "7.1", ["R-7.4"],
                       "tensor bytes replaced, descriptor CRC of the original", "DATA_CHECKSUM",
                       msg=mv, fault="tensor[0]+72"))
    out.append(CaseDef("9.3/data-crc-wrong-unverified", "9.3", ["R-7.4"],
                       "the data-crc fault decoded with verify=false: MAY be accepted",
                       msg=mv, result="acceptable", any_of=["valid", "DATA_CHECKSUM"],
                       context={"verify": False}, features=["unverified"], level="optional",
                       flags=["Unverified"], roundtrip=False))
    def ids(dtype: str) -> WTensor:
        return WTensor(ROLES["TOKEN_IDS"], DTYPES[dtype], (1, 4),
                       array_bytes(dtype, (1, 4), "ids"), layout=BT)
    for dtype in ("float32", "uint8"):
        m = kv_message()
        m.tensors.insert(0, ids(dtype))
        out.append(invalid(f"10.2/token-ids-{dtype}", "10.2", ["R-7.5"],
                           f"TOKEN_IDS of dtype {dtype}", "ROLE_SHAPE", msg=m))
    m = kv_message()
    m.tensors.insert(0, WTensor(ROLES["ATTENTION_MASK"], DTYPES["int8"], (1, 4), b"\1" * 4,
                                layout=BT))
    out.append(invalid("10.2/attention-mask-int8", "10.2", ["R-7.5"], "ATTENTION_MASK int8",
                       "ROLE_SHAPE", msg=m))
    m = kv_message()
    m.tensors.append(ids("int32"))
    out.append(invalid("7.1/message-tensor-after-layer-tensors", "7.1", ["R-7.6"],
                       "TOKEN_IDS after the layer tensors", "NON_CANONICAL", msg=m))
    m = kv_message()
    m.tensors = m.tensors[2:] + m.tensors[:2]
    out.append(invalid("7.1/layers-out-of-order", "7.1", ["R-7.6"],
                       "layer 1 tensors before layer 0 tensors", "NON_CANONICAL", msg=m))
    # token tiling
    def split(m: WMessage, first: int, second_offset: int, second_tokens: int) -> None:
        k = m.tensors[0]
        a = WTensor(k.role, k.dtype, (1, 2, first, 8), array_bytes("float16", (1, 2, first, 8),
                                                                    "a"), layer=0, layout=BHTD)
        b = WTensor(k.role, k.dtype, (1, 2, second_tokens, 8),
                    array_bytes("float16", (1, 2, second_tokens, 8), "b"), layer=0,
                    layout=BHTD, token_offset=second_offset)
        m.tensors[0:1] = [a, b]
    for name, args, comment in (("gap", (2, 3, 1), "tiles [0,2) and [3,4)"),
                                ("overlap", (3, 2, 2), "tiles [0,3) and [2,4)"),
                                ("short", (2, 2, 1), "tiles cover [0,3) of 4 tokens")):
        m = kv_message()
        split(m, *args)
        out.append(invalid(f"7.7/token-tiles-{name}", "7.7", ["R-7.7"], comment, "TOKEN_RANGE",
                           msg=m))
    m = kv_message()
    split(m, 2, 2, 2)
    m.tensors[1].shape = (1, 3, 2, 8)
    m.tensors[1].data = array_bytes("float16", (1, 3, 2, 8), "b")
    out.append(invalid("7.7/token-tiles-heads-differ", "7.7", ["R-7.7"],
                       "second tile has 3 heads, first 2", "TOKEN_RANGE", msg=m))
    m = kv_message()
    m.layers.append(WLayer(4, RECURRENT, 0, 4))
    m.tensors.append(WTensor(ROLES["SSM_STATE"], DTYPES["float32"], (1, 4), b"\0" * 16,
                             layer=2, token_offset=1))
    out.append(invalid("7.7/state-with-token-offset", "7.7", ["R-7.7"],
                       "SSM_STATE (no token axis) with token_offset 1", "TOKEN_RANGE", msg=m))
    return out


def cases() -> list[CaseDef]:
    return header_cases() + layer_cases() + tensor_cases()

