/* "JSON text" as spec defines it (QUANT_POLICY): one RFC 8259 value with optional
 * whitespace around it, no NaN/Infinity, unique member names per object (compared after their
 * escapes are decoded), at most 64 nested arrays/objects and at most 65536 values (every object,
 * array, string, number, true, false and null, member names not counted). Numbers are checked
 * against the grammar only, so any length is valid. The input is already known to be UTF-8
 * so bytes >= 0x80 inside strings are taken as they are.
 *
 * A recursive-descent checker: the depth limit bounds the recursion, the value limit the work. */
#include <stdlib.h>
#include <string.h>

#include "json_text.h"

#define MAX_DEPTH 64
#define MAX_VALUES 65536

typedef struct {
    const uint8_t *s;
    size_t n, pos;
    size_t values;
} reader;

typedef struct {
    uint8_t *p;
    size_t n;
} name;

static void skip_ws(reader *r) {
    while (r->pos < r->n && (r->s[r->pos] == ' ' || r->s[r->pos] == '\t' ||
                             r->s[r->pos] == '\n' || r->s[r->pos] == '\r'))
        r->pos++;
}

static int hex4(reader *r, unsigned *out) {
    unsigned v = 0;
    if (r->n - r->pos < 4) return 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = r->s[r->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* Appends code point cp as UTF-8 (a lone surrogate as its 3-byte form, so that equal escapes
 * stay equal) when out is not NULL. */
static void put_cp(name *out, unsigned cp) {
    uint8_t b[4];
    size_t k;
    if (!out) return;
    if (cp < 0x80) b[0] = (uint8_t)cp, k = 1;
    else if (cp < 0x800) b[0] = (uint8_t)(0xC0 | cp >> 6), b[1] = (uint8_t)(0x80 | (cp & 0x3F)), k = 2;
    else if (cp < 0x10000)
        b[0] = (uint8_t)(0xE0 | cp >> 12), b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)),
        b[2] = (uint8_t)(0x80 | (cp & 0x3F)), k = 3;
    else
        b[0] = (uint8_t)(0xF0 | cp >> 18), b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F)),
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)), b[3] = (uint8_t)(0x80 | (cp & 0x3F)), k = 4;
    memcpy(out->p + out->n, b, k);
    out->n += k;
}

/* A string at r->pos (the opening quote). With out != NULL the decoded bytes are stored there;
 * out->p must have room for as many bytes as the string's text (decoding never grows it). */
static int string(reader *r, name *out) {
    r->pos++;
    while (r->pos < r->n) {
        uint8_t c = r->s[r->pos++];
        if (c == '"') return 1;
        if (c < 0x20) return 0; /* control characters must be escaped */
        if (c != '\\') {
            if (out) out->p[out->n++] = c;
            continue;
        }
        if (r->pos >= r->n) return 0;
        c = r->s[r->pos++];
        const char *simple = "\"\\/bfnrt", *decoded = "\"\\/\b\f\n\r\t";
        const char *at = c ? strchr(simple, c) : NULL;
        if (at) {
            if (out) out->p[out->n++] = (uint8_t)decoded[at - simple];
            continue;
        }
        if (c != 'u') return 0;
        unsigned cp, lo;
        if (!hex4(r, &cp)) return 0;
        if (cp >= 0xD800 && cp < 0xDC00 && r->n - r->pos >= 6 && r->s[r->pos] == '\\' &&
            r->s[r->pos + 1] == 'u') {
            size_t back = r->pos;
            r->pos += 2;
            if (hex4(r, &lo) && lo >= 0xDC00 && lo < 0xE000)
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            else
                r->pos = back; /* a lone high surrogate, then another escape */
        }
        put_cp(out, cp);
    }
    return 0;
}

/* Bytes of the string's text at r->pos (after the opening quote, escapes undecoded): an upper
 * bound of its decoded length, so a member name costs memory in proportion to itself. */
static size_t text_length(const reader *r) {
    size_t i = r->pos + 1;
    while (i < r->n && r->s[i] != '"') i += r->s[i] == '\\' ? 2 : 1;
    return i - r->pos;
}

static int digits(reader *r) {
    size_t start = r->pos;
    while (r->pos < r->n && r->s[r->pos] >= '0' && r->s[r->pos] <= '9') r->pos++;
    return r->pos > start;
}

static int number(reader *r) {
    if (r->s[r->pos] == '-') r->pos++;
    if (r->pos >= r->n) return 0;
    if (r->s[r->pos] == '0') r->pos++;
    else if (!digits(r)) return 0;
    if (r->pos < r->n && r->s[r->pos] == '.') {
        r->pos++;
        if (!digits(r)) return 0;
    }
    if (r->pos < r->n && (r->s[r->pos] == 'e' || r->s[r->pos] == 'E')) {
        r->pos++;
        if (r->pos < r->n && (r->s[r->pos] == '+' || r->s[r->pos] == '-')) r->pos++;
        if (!digits(r)) return 0;
    }
    return 1;
}

static int word(reader *r, const char *w) {
    size_t k = strlen(w);
    if (r->n - r->pos < k || memcmp(r->s + r->pos, w, k)) return 0;
    r->pos += k;
    return 1;
}

static int cmp_name(const void *a, const void *b) {
    const name *x = a, *y = b;
    size_t k = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, k);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

static int value(reader *r, int depth);

static int object(reader *r, int depth) {
    name *names = NULL;
    size_t count = 0, cap = 0;
    int ok = 0;
    r->pos++;
    skip_ws(r);
    if (r->pos < r->n && r->s[r->pos] == '}') {
        r->pos++;
        return 1;
    }
    for (;;) {
        skip_ws(r);
        if (r->pos >= r->n || r->s[r->pos] != '"') goto done;
        if (count == cap) {
            cap = cap ? 2 * cap : 8;
            name *grown = realloc(names, cap * sizeof *names);
            if (!grown) goto done;
            names = grown;
        }
        names[count].p = malloc(text_length(r) + 4); /* decoding never makes it longer */
        names[count].n = 0;
        if (!names[count].p) goto done;
        count++;
        if (!string(r, &names[count - 1])) goto done;
        skip_ws(r);
        if (r->pos >= r->n || r->s[r->pos++] != ':') goto done;
        if (!value(r, depth)) goto done;
        skip_ws(r);
        if (r->pos >= r->n) goto done;
        if (r->s[r->pos] == ',') {
            r->pos++;
            continue;
        }
        if (r->s[r->pos++] != '}') goto done;
        break;
    }
    qsort(names, count, sizeof *names, cmp_name);
    ok = 1;
    for (size_t i = 1; i < count && ok; i++) ok = cmp_name(&names[i - 1], &names[i]) != 0;
done:
    for (size_t i = 0; i < count; i++) free(names[i].p);
    free(names);
    return ok;
}

static int array(reader *r, int depth) {
    r->pos++;
    skip_ws(r);
    if (r->pos < r->n && r->s[r->pos] == ']') {
        r->pos++;
        return 1;
    }
    for (;;) {
        if (!value(r, depth)) return 0;
        skip_ws(r);
        if (r->pos >= r->n) return 0;
        uint8_t c = r->s[r->pos++];
        if (c == ']') return 1;
        if (c != ',') return 0;
    }
}

static int value(reader *r, int depth) {
    skip_ws(r);
    if (r->pos >= r->n || ++r->values > MAX_VALUES) return 0;
    uint8_t c = r->s[r->pos];
    if (c == '{' || c == '[') {
        if (depth + 1 > MAX_DEPTH) return 0;
        return c == '{' ? object(r, depth + 1) : array(r, depth + 1);
    }
    if (c == '"') return string(r, NULL);
    if (c == '-' || (c >= '0' && c <= '9')) return number(r);
    return word(r, "true") || word(r, "false") || word(r, "null");
}

int json_text_ok(const uint8_t *s, size_t n) {
    reader r = {s, n, 0, 0};
    if (!value(&r, 0)) return 0;
    skip_ws(&r);
    return r.pos == r.n;
}
