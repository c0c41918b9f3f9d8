/* The spec's registries (section 10 and friends) as C tables, and their names for JSON output. */
#include "avp_check.h"

#include <stddef.h>

typedef struct {
    int code;
    const char *name;
} named;

static const char *lookup(const named *t, size_t n, int code) {
    for (size_t i = 0; i < n; i++)
        if (t[i].code == code) return t[i].name;
    return NULL;
}

#define LOOKUP(table, code) lookup(table, sizeof table / sizeof table[0], code)

static const named ERRORS[] = {
    {1, "BAD_MAGIC"}, {2, "UNSUPPORTED_VERSION"}, {3, "TRUNCATED"}, {4, "TRAILING_BYTES"},
    {5, "RESERVED_NONZERO"}, {6, "NONZERO_PADDING"}, {7, "SECTION_ORDER"},
    {8, "UNKNOWN_CRITICAL"}, {9, "LENGTH_OVERFLOW"}, {10, "HEADER_LAYOUT"}, {11, "BAD_TRAILER"},
    {12, "INDEX_MISMATCH"}, {13, "MISALIGNED"}, {20, "SECTION_CHECKSUM"}, {21, "DATA_CHECKSUM"},
    {30, "UNKNOWN_KIND"}, {31, "NON_CANONICAL"}, {32, "ENTRY_TYPE"}, {33, "INVALID_VALUE"},
    {34, "MISSING_ENTRY"}, {35, "ENTRY_NOT_ALLOWED"}, {36, "KIND_CONSTRAINT"},
    {40, "UNKNOWN_DTYPE"}, {41, "UNKNOWN_CODEC"}, {42, "UNKNOWN_ROLE"}, {43, "UNKNOWN_LAYOUT"},
    {44, "SIZE_MISMATCH"}, {45, "TENSOR_INDEX"}, {46, "BAD_REFERENCE"}, {47, "ROLE_SHAPE"},
    {48, "TOKEN_RANGE"}, {49, "CODEC_DTYPE"}, {50, "DECOMPRESSION_FAILED"},
    {51, "DECOMPRESSED_SIZE"}, {52, "QUANT_PARAMS"}, {60, "LIMIT_MESSAGE"}, {61, "LIMIT_HEADER"},
    {62, "LIMIT_ENTRIES"}, {63, "LIMIT_LAYERS"}, {64, "LIMIT_TENSORS"}, {65, "LIMIT_RANK"},
    {66, "LIMIT_TENSOR"}, {67, "LIMIT_BUFFER"}, {70, "MODEL_MISMATCH"},
    {71, "NO_COMMON_VERSION"}, {72, "NEGOTIATION_MISMATCH"}, {73, "UNSUPPORTED_CAPABILITY"},
    {80, "AUTH_REQUIRED"}, {81, "AUTH_FAILED"}, {82, "UNKNOWN_KEY"},
};
static const named KINDS[] = {{1, "KV_CACHE"}, {2, "HIDDEN_STATE"}, {3, "TEXT"},
                              {16, "HELLO"}, {17, "ACCEPT"}, {18, "ERROR"}};
static const named DTYPES[] = {{1, "float32"}, {2, "float16"}, {3, "bfloat16"},
                               {4, "float8_e4m3fn"}, {5, "float8_e5m2"}, {6, "int8"},
                               {7, "uint8"}, {8, "int4"}, {9, "uint4"}, {10, "uint2"},
                               {11, "int32"}, {12, "int64"}};
static const named CODECS[] = {{0, "raw"}, {1, "zstd"}, {2, "byteplane_zstd"}};
static const named ROLES[] = {{1, "KEY"}, {2, "VALUE"}, {3, "LATENT_KV"}, {4, "CONV_STATE"},
                              {5, "SSM_STATE"}, {16, "HIDDEN_STATE"}, {17, "TOKEN_IDS"},
                              {18, "POSITIONS"}, {19, "ATTENTION_MASK"}, {32, "QUANT_SCALE"},
                              {33, "QUANT_ZERO_POINT"}};
static const named LAYOUTS[] = {{0, "NONE"}, {1, "BHTD"}, {2, "BTHD"}, {3, "BTD"}, {4, "BT"}};
static const named LAYER_KINDS[] = {{1, "FULL_ATTENTION"}, {2, "SLIDING_WINDOW"},
                                    {3, "RECURRENT"}};
static const named VALUE_TYPES[] = {{1, "u64"}, {2, "i64"}, {3, "f64"}, {4, "utf8"},
                                    {5, "bytes"}, {6, "u32_list"}};
static const named QUANTS[] = {{0, "NONE"}, {1, "AFFINE"}, {2, "SCALED_FLOAT"}};
static const named KEYS[] = {
    {1, "MODEL_ID"}, {2, "TOKENIZER_ID"}, {3, "MODEL_NAME"}, {4, "PRODUCER"},
    {5, "CONTEXT_LENGTH"}, {6, "CREATED_BY_STEPS"}, {16, "HIDDEN_SOURCE"}, {17, "PROJ_METHOD"},
    {18, "PROJ_SOURCE_MODEL_ID"}, {19, "PROJ_SOURCE_TOKENIZER_ID"},
    {20, "PROJ_TARGET_TOKENIZER_ID"}, {21, "PROJ_SHARED_VOCAB"}, {22, "PROJ_TEMPERATURE"},
    {32, "TEXT"}, {33, "TEXT_ROLE"}, {48, "AGENT_NAME"}, {49, "VERSIONS"}, {50, "CAP_DTYPES"},
    {51, "CAP_CODECS"}, {52, "CAP_MODES"}, {53, "MAX_MESSAGE_BYTES"}, {54, "MODE"},
    {55, "VOCAB_DIGEST"}, {56, "VOCABULARY"}, {57, "SHARED_VOCAB_SIZE"}, {58, "NONCE"},
    {64, "ERROR_CODE"}, {65, "ERROR_TEXT"}, {80, "QUANT_POLICY"}, {96, "AUTH_KEY_ID"},
};

const char *avp_error_name(int code) { return LOOKUP(ERRORS, code); }
const char *avp_kind_name(int code) { return LOOKUP(KINDS, code); }
const char *avp_dtype_name(int code) { return LOOKUP(DTYPES, code); }
const char *avp_codec_name(int code) { return LOOKUP(CODECS, code); }
const char *avp_role_name(int code) { return LOOKUP(ROLES, code); }
const char *avp_layout_name(int code) { return LOOKUP(LAYOUTS, code); }
const char *avp_layer_kind_name(int code) { return LOOKUP(LAYER_KINDS, code); }
const char *avp_value_type_name(int code) { return LOOKUP(VALUE_TYPES, code); }
const char *avp_key_name(int code) { return LOOKUP(KEYS, code); }
const char *avp_quant_name(int code) { return LOOKUP(QUANTS, code); }
