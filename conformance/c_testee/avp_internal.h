/* Internal to the C testee's decoder: little-endian readers, overflow-checked arithmetic, the
 * registry rules that validation needs, and the functions shared by avp_check.c (sections,
 * HEADER, INDEX, Trailer), avp_tensor.c (TENSOR and whole-message checks) and avp_rules.c. */
#ifndef AVP_INTERNAL_H
#define AVP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "avp_check.h"

#define NO_REF 0xFFFFFFFFu
#define SEC_HEADER 1
#define SEC_TENSOR 2
#define SEC_INDEX 3

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static inline void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline int add64(uint64_t a, uint64_t b, uint64_t *r) {
    *r = a + b;
    return *r >= a;
}
static inline int mul64(uint64_t a, uint64_t b, uint64_t *r) {
    if (a && b > UINT64_MAX / a) return 0;
    *r = a * b;
    return 1;
}
static inline uint64_t pad_to(uint64_t n, uint64_t m) { return (m - n % m) % m; }

/* Records the first failing check; returns its code so callers can `return fail(...)`. */
int fail(avp_error *err, int code, uint64_t offset, const char *fmt, ...);
int all_zero(const uint8_t *p, size_t n);

/* ---- registries (avp_rules.c) ---- */
enum { T_U64 = 1, T_I64, T_F64, T_UTF8, T_BYTES, T_U32_LIST };
/* Value constraints beyond the type (spec 10.1). */
enum { C_NONE, C_ID32, C_NONCE16, C_UTF8, C_INCREASING, C_HIDDEN_SOURCE, C_PROJ_METHOD, C_MODE,
       C_ERROR_CODE, C_POSITIVE, C_KEY_ID, C_VOCABULARY, C_JSON };

typedef struct {
    int key, type, critical, constraint;
} key_rule;

/* Required and allowed keys per kind (spec section 10), zero-terminated. */
typedef struct {
    int kind;
    int required[8];
    int optional[12];
} kind_rule;

/* Role registry (spec 10.2): token-carrying, allowed layouts (bit mask), rank (-1 any),
 * placement (1 = message level, 2 = layer, 3 = either). */
typedef struct {
    int role, tokens, layouts, rank, placement;
} role_rule;

int dtype_bits(int dtype);
int is_float_dtype(int d);
const key_rule *key_rule_for(int key);
const kind_rule *kind_rule_for(int kind);
const role_rule *role_rule_for(int role);
int in_list(const int *list, int n, int v);
int token_axis(int layout);
int check_well_formed(const avp_entry *e, uint64_t off, avp_error *err);
int check_constraint(const avp_entry *e, const key_rule *rule, uint64_t off, avp_error *err);

/* ---- shared by the stages ---- */
typedef struct {
    uint32_t type, flags;
    uint64_t length;
    uint64_t offset, body, end; /* end: first byte after the section padding */
} section;

const avp_entry *find_entry(const avp_msg *m, int key);
uint64_t entry_u64(const avp_msg *m, int key);
/* Steps T.1-T.19 for tensor i, whose section s has passed S; *next gets the next offset. */
int parse_tensor(const uint8_t *buf, uint64_t len, const section *s, uint32_t i,
                 const avp_options *opt, avp_msg *m, uint64_t *next, avp_error *err);
/* Steps F.1-F.3, once every tensor is known. */
int check_message(const avp_msg *m, avp_error *err);

#endif
