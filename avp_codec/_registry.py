"""The spec's registries as IntEnums plus per-entry facts (spec sections 4.2, 6.3, 6.5, 7.2-7.3,
10, 12, 14.1, 16, 17).

Every value here mirrors a table of spec/avp-spec.md and a file of spec/registries/; the test
tests/codec/test_registry_drift.py fails if the three ever disagree. Codes are never reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

FORMAT_MAJOR = 1
FORMAT_MINOR = 0
MAGIC = b"\x89AVP\r\n\x1a\n"
END_MAGIC = b"\x89AVPEND\n"
NO_REF = 0xFFFFFFFF  # "no layer" / "no tensor" in u32 reference fields
U64_MAX = (1 << 64) - 1


class SectionType(IntEnum):
    HEADER = 1
    TENSOR = 2
    INDEX = 3


class Kind(IntEnum):
    KV_CACHE = 1
    HIDDEN_STATE = 2
    TEXT = 3
    HELLO = 16
    ACCEPT = 17
    ERROR = 18


class LayerKind(IntEnum):
    FULL_ATTENTION = 1
    SLIDING_WINDOW = 2
    RECURRENT = 3


class ValueType(IntEnum):
    U64 = 1
    I64 = 2
    F64 = 3
    UTF8 = 4
    BYTES = 5
    U32_LIST = 6


class Dtype(IntEnum):
    FLOAT32 = 1
    FLOAT16 = 2
    BFLOAT16 = 3
    FLOAT8_E4M3FN = 4
    FLOAT8_E5M2 = 5
    INT8 = 6
    UINT8 = 7
    INT4 = 8
    UINT4 = 9
    UINT2 = 10
    INT32 = 11
    INT64 = 12


# Bits per element; the spec's registry name is the lowercase enum name.
DTYPE_BITS: dict[Dtype, int] = {
    Dtype.FLOAT32: 32, Dtype.FLOAT16: 16, Dtype.BFLOAT16: 16, Dtype.FLOAT8_E4M3FN: 8,
    Dtype.FLOAT8_E5M2: 8, Dtype.INT8: 8, Dtype.UINT8: 8, Dtype.INT4: 4, Dtype.UINT4: 4,
    Dtype.UINT2: 2, Dtype.INT32: 32, Dtype.INT64: 64,
}
FLOAT_PARAM_DTYPES = frozenset({Dtype.FLOAT32, Dtype.FLOAT16, Dtype.BFLOAT16})


class Codec(IntEnum):
    RAW = 0
    ZSTD = 1
    BYTEPLANE_ZSTD = 2
    FLOATPLANE_ZSTD = 3


class Layout(IntEnum):
    NONE = 0
    BHTD = 1
    BTHD = 2
    BTD = 3
    BT = 4


@dataclass(frozen=True)
class LayoutInfo:
    axes: tuple[str, ...]  # empty = unspecified
    token_axis: int | None


LAYOUT_INFO: dict[Layout, LayoutInfo] = {
    Layout.NONE: LayoutInfo((), None),
    Layout.BHTD: LayoutInfo(("batch", "heads", "tokens", "head_dim"), 2),
    Layout.BTHD: LayoutInfo(("batch", "tokens", "heads", "head_dim"), 1),
    Layout.BTD: LayoutInfo(("batch", "tokens", "features"), 1),
    Layout.BT: LayoutInfo(("batch", "tokens"), 1),
}


class Role(IntEnum):
    KEY = 1
    VALUE = 2
    LATENT_KV = 3
    CONV_STATE = 4
    SSM_STATE = 5
    HIDDEN_STATE = 16
    TOKEN_IDS = 17
    POSITIONS = 18
    ATTENTION_MASK = 19
    QUANT_SCALE = 32
    QUANT_ZERO_POINT = 33


@dataclass(frozen=True)
class RoleInfo:
    tokens: bool  # token-carrying: tensors of a (layer, role) tile the layer's token range
    layouts: tuple[Layout, ...]
    rank: int | None  # None = any rank


ROLE_INFO: dict[Role, RoleInfo] = {
    Role.KEY: RoleInfo(True, (Layout.BHTD, Layout.BTHD), 4),
    Role.VALUE: RoleInfo(True, (Layout.BHTD, Layout.BTHD), 4),
    Role.LATENT_KV: RoleInfo(True, (Layout.BTD,), 3),
    Role.CONV_STATE: RoleInfo(False, (Layout.NONE,), None),
    Role.SSM_STATE: RoleInfo(False, (Layout.NONE,), None),
    Role.HIDDEN_STATE: RoleInfo(False, (Layout.BTD,), 3),
    Role.TOKEN_IDS: RoleInfo(False, (Layout.BT,), 2),
    Role.POSITIONS: RoleInfo(False, (Layout.BT,), 2),
    Role.ATTENTION_MASK: RoleInfo(False, (Layout.BT,), 2),
    Role.QUANT_SCALE: RoleInfo(False, (Layout.NONE,), None),
    Role.QUANT_ZERO_POINT: RoleInfo(False, (Layout.NONE,), None),
}
QUANT_ROLES = frozenset({Role.QUANT_SCALE, Role.QUANT_ZERO_POINT})
MESSAGE_LEVEL_ROLES = frozenset(
    {Role.HIDDEN_STATE, Role.TOKEN_IDS, Role.POSITIONS, Role.ATTENTION_MASK}) | QUANT_ROLES
LAYER_ROLES = frozenset(
    {Role.KEY, Role.VALUE, Role.LATENT_KV, Role.CONV_STATE, Role.SSM_STATE}) | QUANT_ROLES
# Roles the spec pins to particular dtypes (section 10.2).
ROLE_DTYPES: dict[Role, frozenset[Dtype]] = {
    Role.TOKEN_IDS: frozenset({Dtype.INT32, Dtype.INT64}),
    Role.POSITIONS: frozenset({Dtype.INT32, Dtype.INT64}),
    Role.ATTENTION_MASK: frozenset({Dtype.UINT8}),
}
ATTENTION_ROLES = frozenset({Role.KEY, Role.VALUE, Role.LATENT_KV})
RECURRENT_ROLES = frozenset({Role.CONV_STATE, Role.SSM_STATE})


class QuantScheme(IntEnum):
    NONE = 0
    AFFINE = 1
    SCALED_FLOAT = 2


QUANT_STORED_DTYPES: dict[QuantScheme, frozenset[Dtype] | None] = {
    QuantScheme.NONE: None,  # any
    QuantScheme.AFFINE: frozenset(
        {Dtype.INT8, Dtype.UINT8, Dtype.INT4, Dtype.UINT4, Dtype.UINT2}),
    QuantScheme.SCALED_FLOAT: frozenset({Dtype.FLOAT8_E4M3FN, Dtype.FLOAT8_E5M2}),
}


class Mode(IntEnum):
    KV_CACHE = 1
    PROJECTION = 2
    TEXT = 3


class MetaKey(IntEnum):
    MODEL_ID = 1
    TOKENIZER_ID = 2
    MODEL_NAME = 3
    PRODUCER = 4
    CONTEXT_LENGTH = 5
    CREATED_BY_STEPS = 6
    HIDDEN_SOURCE = 16
    PROJ_METHOD = 17
    PROJ_SOURCE_MODEL_ID = 18
    PROJ_SOURCE_TOKENIZER_ID = 19
    PROJ_TARGET_TOKENIZER_ID = 20
    PROJ_SHARED_VOCAB = 21
    PROJ_TEMPERATURE = 22
    TEXT = 32
    TEXT_ROLE = 33
    AGENT_NAME = 48
    VERSIONS = 49
    CAP_DTYPES = 50
    CAP_CODECS = 51
    CAP_MODES = 52
    MAX_MESSAGE_BYTES = 53
    MODE = 54
    VOCAB_DIGEST = 55
    VOCABULARY = 56
    SHARED_VOCAB_SIZE = 57
    NONCE = 58
    ERROR_CODE = 64
    ERROR_TEXT = 65
    QUANT_POLICY = 80
    AUTH_KEY_ID = 96


@dataclass(frozen=True)
class KeyInfo:
    type: ValueType
    critical: bool


_V = ValueType
KEY_INFO: dict[MetaKey, KeyInfo] = {
    MetaKey.MODEL_ID: KeyInfo(_V.BYTES, True),
    MetaKey.TOKENIZER_ID: KeyInfo(_V.BYTES, False),
    MetaKey.MODEL_NAME: KeyInfo(_V.UTF8, False),
    MetaKey.PRODUCER: KeyInfo(_V.UTF8, False),
    MetaKey.CONTEXT_LENGTH: KeyInfo(_V.U64, True),
    MetaKey.CREATED_BY_STEPS: KeyInfo(_V.U64, False),
    MetaKey.HIDDEN_SOURCE: KeyInfo(_V.U64, True),
    MetaKey.PROJ_METHOD: KeyInfo(_V.U64, True),
    MetaKey.PROJ_SOURCE_MODEL_ID: KeyInfo(_V.BYTES, False),
    MetaKey.PROJ_SOURCE_TOKENIZER_ID: KeyInfo(_V.BYTES, True),
    MetaKey.PROJ_TARGET_TOKENIZER_ID: KeyInfo(_V.BYTES, True),
    MetaKey.PROJ_SHARED_VOCAB: KeyInfo(_V.U64, True),
    MetaKey.PROJ_TEMPERATURE: KeyInfo(_V.F64, False),
    MetaKey.TEXT: KeyInfo(_V.UTF8, True),
    MetaKey.TEXT_ROLE: KeyInfo(_V.UTF8, False),
    MetaKey.AGENT_NAME: KeyInfo(_V.UTF8, True),
    MetaKey.VERSIONS: KeyInfo(_V.U32_LIST, True),
    MetaKey.CAP_DTYPES: KeyInfo(_V.U32_LIST, True),
    MetaKey.CAP_CODECS: KeyInfo(_V.U32_LIST, True),
    MetaKey.CAP_MODES: KeyInfo(_V.U32_LIST, True),
    MetaKey.MAX_MESSAGE_BYTES: KeyInfo(_V.U64, True),
    MetaKey.MODE: KeyInfo(_V.U64, True),
    MetaKey.VOCAB_DIGEST: KeyInfo(_V.BYTES, False),
    MetaKey.VOCABULARY: KeyInfo(_V.BYTES, False),
    MetaKey.SHARED_VOCAB_SIZE: KeyInfo(_V.U64, False),
    MetaKey.NONCE: KeyInfo(_V.BYTES, False),
    MetaKey.ERROR_CODE: KeyInfo(_V.U64, True),
    MetaKey.ERROR_TEXT: KeyInfo(_V.UTF8, False),
    MetaKey.QUANT_POLICY: KeyInfo(_V.UTF8, False),
    MetaKey.AUTH_KEY_ID: KeyInfo(_V.BYTES, True),
}

_K = MetaKey
_PROJ_KEYS = (_K.PROJ_METHOD, _K.PROJ_SOURCE_MODEL_ID, _K.PROJ_SOURCE_TOKENIZER_ID,
              _K.PROJ_TARGET_TOKENIZER_ID, _K.PROJ_SHARED_VOCAB, _K.PROJ_TEMPERATURE)


@dataclass(frozen=True)
class KindInfo:
    required: frozenset[MetaKey]
    allowed: frozenset[MetaKey]  # includes the required keys
    has_layers: bool  # KV_CACHE: >= 1 layer; every other kind: an empty layer table
    tensors: frozenset[Role]  # roles a tensor of this kind may have (empty = no tensors)


def _kind(required: tuple[MetaKey, ...], extra: tuple[MetaKey, ...], has_layers: bool,
          tensors: frozenset[Role]) -> KindInfo:
    return KindInfo(frozenset(required), frozenset(required + extra), has_layers, tensors)


KIND_INFO: dict[Kind, KindInfo] = {
    Kind.KV_CACHE: _kind(
        (_K.MODEL_ID, _K.CONTEXT_LENGTH),
        (_K.TOKENIZER_ID, _K.MODEL_NAME, _K.PRODUCER, _K.CREATED_BY_STEPS, _K.QUANT_POLICY,
         _K.AUTH_KEY_ID),
        True,
        LAYER_ROLES | frozenset({Role.TOKEN_IDS, Role.POSITIONS, Role.ATTENTION_MASK})),
    # D7: a same-model latent state may say how many steps made it and after which context.
    Kind.HIDDEN_STATE: _kind(
        (_K.MODEL_ID, _K.HIDDEN_SOURCE),
        (_K.TOKENIZER_ID, _K.MODEL_NAME, _K.PRODUCER, _K.CONTEXT_LENGTH, _K.CREATED_BY_STEPS,
         *_PROJ_KEYS, _K.AUTH_KEY_ID),
        False, frozenset({Role.HIDDEN_STATE, Role.TOKEN_IDS}) | QUANT_ROLES),
    Kind.TEXT: _kind(
        (_K.TEXT,), (_K.TEXT_ROLE, _K.MODEL_NAME, _K.PRODUCER, _K.AUTH_KEY_ID),
        False, frozenset()),
    # Lead decisions D1, D4, D8 (spec/DECISIONS.md): NONCE is required in HELLO and
    # ACCEPT (reflection detection); ACCEPT may carry CAP_MODES, VOCAB_DIGEST and VOCABULARY so
    # the initiator can recompute the mode; the handshake kinds may be authenticated.
    Kind.HELLO: _kind(
        (_K.AGENT_NAME, _K.VERSIONS, _K.CAP_DTYPES, _K.CAP_CODECS, _K.CAP_MODES,
         _K.MAX_MESSAGE_BYTES, _K.NONCE),
        (_K.MODEL_ID, _K.TOKENIZER_ID, _K.MODEL_NAME, _K.VOCAB_DIGEST, _K.VOCABULARY,
         _K.AUTH_KEY_ID),
        False, frozenset()),
    Kind.ACCEPT: _kind(
        (_K.AGENT_NAME, _K.MODE, _K.VERSIONS, _K.NONCE),
        (_K.MODEL_ID, _K.TOKENIZER_ID, _K.CAP_DTYPES, _K.CAP_CODECS, _K.CAP_MODES,
         _K.MAX_MESSAGE_BYTES, _K.SHARED_VOCAB_SIZE, _K.VOCAB_DIGEST, _K.VOCABULARY,
         _K.AUTH_KEY_ID),
        False, frozenset()),
    Kind.ERROR: _kind((_K.ERROR_CODE,), (_K.ERROR_TEXT, _K.AGENT_NAME, _K.AUTH_KEY_ID), False,
                      frozenset()),
}


class ErrorCode(IntEnum):
    BAD_MAGIC = 1
    UNSUPPORTED_VERSION = 2
    TRUNCATED = 3
    TRAILING_BYTES = 4
    RESERVED_NONZERO = 5
    NONZERO_PADDING = 6
    SECTION_ORDER = 7
    UNKNOWN_CRITICAL = 8
    LENGTH_OVERFLOW = 9
    HEADER_LAYOUT = 10
    BAD_TRAILER = 11
    INDEX_MISMATCH = 12
    MISALIGNED = 13
    SECTION_CHECKSUM = 20
    DATA_CHECKSUM = 21
    UNKNOWN_KIND = 30
    NON_CANONICAL = 31
    ENTRY_TYPE = 32
    INVALID_VALUE = 33
    MISSING_ENTRY = 34
    ENTRY_NOT_ALLOWED = 35
    KIND_CONSTRAINT = 36
    UNKNOWN_DTYPE = 40
    UNKNOWN_CODEC = 41
    UNKNOWN_ROLE = 42
    UNKNOWN_LAYOUT = 43
    SIZE_MISMATCH = 44
    TENSOR_INDEX = 45
    BAD_REFERENCE = 46
    ROLE_SHAPE = 47
    TOKEN_RANGE = 48
    CODEC_DTYPE = 49
    DECOMPRESSION_FAILED = 50
    DECOMPRESSED_SIZE = 51
    QUANT_PARAMS = 52
    LIMIT_MESSAGE = 60
    LIMIT_HEADER = 61
    LIMIT_ENTRIES = 62
    LIMIT_LAYERS = 63
    LIMIT_TENSORS = 64
    LIMIT_RANK = 65
    LIMIT_TENSOR = 66
    LIMIT_BUFFER = 67
    MODEL_MISMATCH = 70
    NO_COMMON_VERSION = 71
    NEGOTIATION_MISMATCH = 72
    UNSUPPORTED_CAPABILITY = 73
    AUTH_REQUIRED = 80
    AUTH_FAILED = 81
    UNKNOWN_KEY = 82


def dtype_name(d: Dtype) -> str:
    return d.name.lower()


def codec_name(c: Codec) -> str:
    return c.name.lower()
