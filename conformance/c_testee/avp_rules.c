/* Registry rules and metadata value checks used by the decoder (spec 6.3, 10). */
#include <stdarg.h>
#include <stdio.h>

#include "avp_internal.h"
#include "json_text.h"

int fail(avp_error *err, int code, uint64_t offset, const char *fmt, ...) {
    va_list ap;
    err->code = code;
    err->offset = offset;
    va_start(ap, fmt);
    vsnprintf(err->path, sizeof err->path, fmt, ap);
    va_end(ap);
    return code;
}

int all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* ---- registries needed for validation ----------------------------------------------------- */

int dtype_bits(int dtype) {
    static const int bits[13] = {0, 32, 16, 16, 8, 8, 8, 8, 4, 4, 2, 32, 64};
    return dtype >= 1 && dtype <= 12 ? bits[dtype] : 0;
}
int is_float_dtype(int d) { return d == 1 || d == 2 || d == 3; }


static const key_rule KEY_RULES[] = {
    {1, T_BYTES, 1, C_ID32}, {2, T_BYTES, 0, C_ID32}, {3, T_UTF8, 0, C_NONE},
    {4, T_UTF8, 0, C_NONE}, {5, T_U64, 1, C_NONE}, {6, T_U64, 0, C_NONE},
    {16, T_U64, 1, C_HIDDEN_SOURCE}, {17, T_U64, 1, C_PROJ_METHOD}, {18, T_BYTES, 0, C_ID32},
    {19, T_BYTES, 1, C_ID32}, {20, T_BYTES, 1, C_ID32}, {21, T_U64, 1, C_NONE},
    {22, T_F64, 0, C_POSITIVE}, {32, T_UTF8, 1, C_NONE}, {33, T_UTF8, 0, C_NONE},
    {48, T_UTF8, 1, C_NONE}, {49, T_U32_LIST, 1, C_INCREASING},
    {50, T_U32_LIST, 1, C_INCREASING}, {51, T_U32_LIST, 1, C_INCREASING},
    {52, T_U32_LIST, 1, C_INCREASING}, {53, T_U64, 1, C_NONE}, {54, T_U64, 1, C_MODE},
    {55, T_BYTES, 0, C_ID32}, {56, T_BYTES, 0, C_VOCABULARY}, {57, T_U64, 0, C_NONE},
    {58, T_BYTES, 0, C_NONCE16}, {64, T_U64, 1, C_ERROR_CODE}, {65, T_UTF8, 0, C_NONE},
    {80, T_UTF8, 0, C_JSON}, {96, T_BYTES, 1, C_KEY_ID},
};

const key_rule *key_rule_for(int key) {
    for (size_t i = 0; i < sizeof KEY_RULES / sizeof KEY_RULES[0]; i++)
        if (KEY_RULES[i].key == key) return &KEY_RULES[i];
    return NULL;
}

/* The kinds table of spec 10 (spec/registries/kinds.json); required keys in key order. */
static const kind_rule KIND_RULES[] = {
    {1, {1, 5}, {2, 3, 4, 6, 80, 96}},
    {2, {1, 16}, {2, 3, 4, 5, 6, 17, 18, 19, 20, 21, 22, 96}},
    {3, {32}, {33, 3, 4, 96}},
    {16, {48, 49, 50, 51, 52, 53, 58}, {1, 2, 3, 55, 56, 96}},
    {17, {48, 49, 54, 58}, {1, 2, 50, 51, 52, 53, 55, 56, 57, 96}},
    {18, {64}, {65, 48, 96}},
};

const kind_rule *kind_rule_for(int kind) {
    for (size_t i = 0; i < sizeof KIND_RULES / sizeof KIND_RULES[0]; i++)
        if (KIND_RULES[i].kind == kind) return &KIND_RULES[i];
    return NULL;
}

int in_list(const int *list, int n, int v) {
    for (int i = 0; i < n && list[i]; i++)
        if (list[i] == v) return 1;
    return 0;
}


static const role_rule ROLE_RULES[] = {
    {1, 1, 1 << 1 | 1 << 2, 4, 2}, {2, 1, 1 << 1 | 1 << 2, 4, 2}, {3, 1, 1 << 3, 3, 2},
    {4, 0, 1 << 0, -1, 2},         {5, 0, 1 << 0, -1, 2},         {16, 0, 1 << 3, 3, 1},
    {17, 0, 1 << 4, 2, 1},         {18, 0, 1 << 4, 2, 1},         {19, 0, 1 << 4, 2, 1},
    {32, 0, 1 << 0, -1, 3},        {33, 0, 1 << 0, -1, 3},
};

const role_rule *role_rule_for(int role) {
    for (size_t i = 0; i < sizeof ROLE_RULES / sizeof ROLE_RULES[0]; i++)
        if (ROLE_RULES[i].role == role) return &ROLE_RULES[i];
    return NULL;
}

int token_axis(int layout) { return layout == 1 ? 2 : (layout >= 2 && layout <= 4) ? 1 : -1; }

/* ---- value checks ------------------------------------------------------------------------ */

static int utf8_ok(const uint8_t *s, size_t n) {
    if (n >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF) return 0; /* no BOM */
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return 0;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        /* reject overlong forms, surrogates and values past U+10FFFF */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return 0;
        i += len;
    }
    return 1;
}

/* H.4, first part: the value is well-formed for its (registered) value type. */
int check_well_formed(const avp_entry *e, uint64_t off, avp_error *err) {
    uint32_t n = e->length;
    int k = e->key;
    if ((e->type == T_U64 || e->type == T_I64 || e->type == T_F64) && n != 8)
        return fail(err, E_INVALID_VALUE, off, "entry[key=%d].length", k);
    if (e->type == T_U32_LIST && n % 4) return fail(err, E_INVALID_VALUE, off, "entry[key=%d].length", k);
    if (e->type == T_UTF8 && !utf8_ok(e->value, n))
        return fail(err, E_INVALID_VALUE, off, "entry[key=%d].value", k);
    if (e->type == T_F64) {
        uint64_t bits = rd64(e->value);
        int nan = (bits & 0x7FF0000000000000ull) == 0x7FF0000000000000ull &&
                  (bits & 0x000FFFFFFFFFFFFFull);
        if (nan && bits != 0x7FF8000000000000ull)
            return fail(err, E_NON_CANONICAL, off, "entry[key=%d].value", k);
    }
    return 0;
}

/* H.4, last part: the registered key's constraint (10.1). */
int check_constraint(const avp_entry *e, const key_rule *rule, uint64_t off, avp_error *err) {
    const uint8_t *v = e->value;
    uint32_t n = e->length;
    int bad = 0;
    uint64_t u = n == 8 ? rd64(v) : 0;
    switch (rule->constraint) {
    case C_ID32: bad = n != 32; break;
    case C_NONCE16: bad = n != 16; break;
    case C_KEY_ID: bad = n < 1 || n > 64; break;
    case C_HIDDEN_SOURCE: bad = u != 1 && u != 2; break;
    case C_PROJ_METHOD: bad = u != 1; break;
    case C_MODE: bad = u < 1 || u > 3; break;
    case C_ERROR_CODE: bad = u == 0 || u > 65535; break; /* 10.1: any code in 1..65535 */
    case C_POSITIVE: /* finite and > 0: sign clear, not zero, exponent not all ones */
        bad = (u >> 63) || u == 0 || (u & 0x7FF0000000000000ull) == 0x7FF0000000000000ull;
        break;
    case C_INCREASING:
        for (uint32_t i = 4; i < n; i += 4)
            if (rd32(v + i) <= rd32(v + i - 4)) bad = 1;
        break;
    case C_JSON: bad = !json_text_ok(v, n); break; /* */
    case C_VOCABULARY: {
        uint64_t p = 0;
        while (p < n && !bad) {
            if (n - p < 4) bad = 1;
            else {
                uint64_t len = rd32(v + p);
                if (len > n - p - 4) bad = 1;
                p += 4 + len;
            }
        }
        break;
    }
    default: break;
    }
    return bad ? fail(err, E_INVALID_VALUE, off, "entry[key=%d].value", e->key) : 0;
}

