#include "mini_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t skip_ws(const char *s, size_t n, size_t i) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

/* Returns the index just after the value starting at i, or 0 when malformed. */
static size_t skip_value(const char *s, size_t n, size_t i) {
    if (i >= n) return 0;
    if (s[i] == '"') {
        for (i++; i < n; i++) {
            if (s[i] == '\\') i++;
            else if (s[i] == '"') return i + 1;
        }
        return 0;
    }
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        for (; i < n; i++) {
            if (s[i] == '"') {
                size_t end = skip_value(s, n, i);
                if (!end) return 0;
                i = end - 1;
            } else if (s[i] == '{' || s[i] == '[') {
                depth++;
            } else if (s[i] == '}' || s[i] == ']') {
                if (--depth == 0) return i + 1;
            }
        }
        return 0;
    }
    while (i < n && (strchr("+-.eE", s[i]) || (s[i] >= '0' && s[i] <= '9') ||
                     (s[i] >= 'a' && s[i] <= 'z')))
        i++;
    return i;
}

int json_next_member(json_span obj, size_t *pos, json_span *key, json_span *value) {
    const char *s = obj.p;
    size_t n = obj.n, i = *pos, end;
    if (i == 0) {
        i = skip_ws(s, n, 0);
        if (i >= n || s[i] != '{') return -1;
        i++;
    }
    i = skip_ws(s, n, i);
    if (i < n && s[i] == ',') i = skip_ws(s, n, i + 1);
    if (i < n && s[i] == '}') return 0;
    if (i >= n || s[i] != '"' || !(end = skip_value(s, n, i))) return -1;
    key->p = s + i + 1;
    key->n = end - i - 2;
    i = skip_ws(s, n, end);
    if (i >= n || s[i] != ':') return -1;
    i = skip_ws(s, n, i + 1);
    if (!(end = skip_value(s, n, i))) return -1;
    value->p = s + i;
    value->n = end - i;
    *pos = end;
    return 1;
}

int json_get(const char *text, size_t len, const char *key, json_span *out) {
    json_span obj = {text, len}, k, v;
    size_t pos = 0;
    while (json_next_member(obj, &pos, &k, &v) == 1)
        if (k.n == strlen(key) && !memcmp(k.p, key, k.n)) {
            *out = v;
            return 0;
        }
    return -1;
}

int json_is_true(json_span v) { return v.n == 4 && !memcmp(v.p, "true", 4); }
int json_is_false(json_span v) { return v.n == 5 && !memcmp(v.p, "false", 5); }

int json_u64(json_span v, uint64_t *out) {
    uint64_t x = 0;
    if (!v.n) return -1;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') return -1;
        unsigned d = (unsigned)(v.p[i] - '0');
        if (x > (UINT64_MAX - d) / 10) return -1;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

int json_str_eq(json_span v, const char *s) {
    size_t n = strlen(s);
    return v.n == n + 2 && v.p[0] == '"' && !memcmp(v.p + 1, s, n);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int hex_decode(const char *hex, size_t n, uint8_t *out, size_t cap) {
    if (n % 2 || n / 2 > cap) return -1;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval(hex[i]), lo = hexval(hex[i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return (int)(n / 2);
}

void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) abort(); /* out of memory while writing our own output: nothing sane to do */
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}
