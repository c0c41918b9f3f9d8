/* Strict JSON text (spec ), for QUANT_POLICY. */
#ifndef JSON_TEXT_H
#define JSON_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* 1 when s[0..n) is JSON text as defines it, else 0. */
int json_text_ok(const uint8_t *s, size_t n);

#endif
