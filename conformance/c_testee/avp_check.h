/* An independent AVP 1.0 decoder/validator (spec/avp-spec.md), written for the conformance
 * suite. It checks a complete message held in memory and either fills an avp_msg with pointers
 * into the input (no copies) or reports the first failing check as an error code. */
#ifndef AVP_CHECK_H
#define AVP_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* Error codes, spec section 17. */
enum {
    E_BAD_MAGIC = 1, E_UNSUPPORTED_VERSION = 2, E_TRUNCATED = 3, E_TRAILING_BYTES = 4,
    E_RESERVED_NONZERO = 5, E_NONZERO_PADDING = 6, E_SECTION_ORDER = 7, E_UNKNOWN_CRITICAL = 8,
    E_LENGTH_OVERFLOW = 9, E_HEADER_LAYOUT = 10, E_BAD_TRAILER = 11, E_INDEX_MISMATCH = 12,
    E_MISALIGNED = 13, E_SECTION_CHECKSUM = 20, E_DATA_CHECKSUM = 21, E_UNKNOWN_KIND = 30,
    E_NON_CANONICAL = 31, E_ENTRY_TYPE = 32, E_INVALID_VALUE = 33, E_MISSING_ENTRY = 34,
    E_ENTRY_NOT_ALLOWED = 35, E_KIND_CONSTRAINT = 36, E_UNKNOWN_DTYPE = 40, E_UNKNOWN_CODEC = 41,
    E_UNKNOWN_ROLE = 42, E_UNKNOWN_LAYOUT = 43, E_SIZE_MISMATCH = 44, E_TENSOR_INDEX = 45,
    E_BAD_REFERENCE = 46, E_ROLE_SHAPE = 47, E_TOKEN_RANGE = 48, E_CODEC_DTYPE = 49,
    E_QUANT_PARAMS = 52, E_LIMIT_MESSAGE = 60, E_LIMIT_HEADER = 61, E_LIMIT_ENTRIES = 62,
    E_LIMIT_LAYERS = 63, E_LIMIT_TENSORS = 64, E_LIMIT_RANK = 65, E_LIMIT_TENSOR = 66, E_LIMIT_BUFFER = 67,
    E_MODEL_MISMATCH = 70, E_AUTH_REQUIRED = 80, E_AUTH_FAILED = 81, E_UNKNOWN_KEY = 82,
    E_UNSUPPORTED = 1000 /* not an AVP code: a feature this decoder does not implement */
};

const char *avp_error_name(int code);

typedef struct {
    uint64_t max_message_bytes, max_header_bytes, max_entries, max_layers, max_tensors, max_rank,
        max_tensor_bytes, max_buffer_bytes;
} avp_limits;

void avp_default_limits(avp_limits *lim);

typedef struct {
    int verify;                 /* check tensor data CRCs (spec 9.3) */
    avp_limits limits;
    int require_auth;
    const uint8_t *key_id;      /* the one key this receiver holds, or NULL */
    size_t key_id_len;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *expected_model_id; /* 32 bytes, or NULL */
    const uint8_t *expected_tokenizer_id; /* 32 bytes, or NULL (R-10.12 receiver check) */
} avp_options;

typedef struct {
    uint16_t key;
    uint8_t flags, type;
    const uint8_t *value;
    uint32_t length;
} avp_entry;

typedef struct {
    uint32_t index, window;
    uint8_t kind;
    uint64_t token_start, token_count;
} avp_layer;

typedef struct {
    uint32_t layer, scale_tensor, zero_point_tensor, group_size, data_crc;
    uint16_t role;
    uint8_t dtype, codec, rank, layout, quant_scheme, quant_axis, dequant_dtype;
    uint64_t token_offset, raw_length, stored_length, section_offset, data_offset;
    const uint8_t *shape;       /* rank little-endian u64 values inside the input */
    const uint8_t *data;
} avp_tensor;

typedef struct {
    uint16_t kind, major, minor;
    uint32_t entry_count, layer_count, tensor_count;
    avp_entry *entries;
    avp_layer *layers;
    avp_tensor *tensors;
    int authenticated;          /* a tag was present and verified with a held key */
} avp_msg;

typedef struct {
    int code;
    uint64_t offset;
    char path[64];
} avp_error;

/* Returns 0 and fills msg, or returns the error code and fills err. Free msg with avp_free. */
int avp_check(const uint8_t *buf, size_t len, const avp_options *opt, avp_msg *msg,
              avp_error *err);
void avp_free(avp_msg *msg);
uint64_t avp_dim(const avp_tensor *t, int axis);

/* Registry names for the JSON output. */
const char *avp_kind_name(int code);
const char *avp_dtype_name(int code);
const char *avp_codec_name(int code);
const char *avp_role_name(int code);
const char *avp_layout_name(int code);
const char *avp_layer_kind_name(int code);
const char *avp_value_type_name(int code);
const char *avp_key_name(int code);
const char *avp_quant_name(int code);

#endif
