/* Just enough JSON for the testee protocol: find members of an object, read numbers, booleans
 * and hex strings, and build output in a growable buffer. Values are returned as spans of the
 * input text; nothing is copied or unescaped (protocol keys and hex strings need no escapes). */
#ifndef MINI_JSON_H
#define MINI_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *p;
    size_t n;
} json_span;

/* Finds member `key` of the object in text[0..len). 0 if found, -1 if not. */
int json_get(const char *text, size_t len, const char *key, json_span *out);
/* Iterates over an object's members: *pos starts at 0. Returns 1 per member (key without its
 * quotes), 0 at the end, -1 on malformed input. */
int json_next_member(json_span obj, size_t *pos, json_span *key, json_span *value);
int json_is_true(json_span v);
int json_is_false(json_span v);
int json_u64(json_span v, uint64_t *out);
int json_str_eq(json_span v, const char *s);
/* Hex digits -> bytes; returns the byte count, or -1 (odd length, bad digit, too long). */
int hex_decode(const char *hex, size_t n, uint8_t *out, size_t cap);

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

void sb_put(sbuf *b, const char *s, size_t n);
void sb_puts(sbuf *b, const char *s);
void sb_printf(sbuf *b, const char *fmt, ...);

#endif
