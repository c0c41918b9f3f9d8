#include "canon_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hashes.h"

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void put_hex(sbuf *o, const uint8_t *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    sb_puts(o, "\"");
    for (size_t i = 0; i < n; i++) {
        char two[2] = {digits[p[i] >> 4], digits[p[i] & 15]};
        sb_put(o, two, 2);
    }
    sb_puts(o, "\"");
}

/* A JSON string of validated UTF-8: only '"', '\\' and control characters need escapes. */
static void put_str(sbuf *o, const uint8_t *p, size_t n) {
    sb_puts(o, "\"");
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"' || p[i] == '\\') {
            char esc[2] = {'\\', (char)p[i]};
            sb_put(o, esc, 2);
        } else if (p[i] < 0x20) {
            sb_printf(o, "\\u%04x", p[i]);
        } else {
            sb_put(o, (const char *)p + i, 1);
        }
    }
    sb_puts(o, "\"");
}

static void put_name(sbuf *o, const char *name) {
    if (name) sb_printf(o, "\"%s\"", name);
    else sb_puts(o, "null");
}

/* Shortest decimal that reads back as the same double, like Python's repr. */
static void put_f64(sbuf *o, uint64_t bits) {
    double d;
    memcpy(&d, &bits, sizeof d);
    if (isnan(d)) { sb_puts(o, "\"NaN\""); return; }
    if (isinf(d)) { sb_puts(o, d > 0 ? "\"Infinity\"" : "\"-Infinity\""); return; }
    if (d == 0 && signbit(d)) { sb_puts(o, "-0.0"); return; } /* keep the sign */
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d) break;
    }
    sb_puts(o, tmp);
}

static void put_value(sbuf *o, const avp_entry *e) {
    switch (e->type) {
    case 1: sb_printf(o, "%llu", (unsigned long long)le64(e->value)); break;
    case 2: sb_printf(o, "%lld", (long long)le64(e->value)); break;
    case 3: put_f64(o, le64(e->value)); break;
    case 4: put_str(o, e->value, e->length); break;
    case 6:
        sb_puts(o, "[");
        for (uint32_t i = 0; i < e->length; i += 4) {
            uint32_t v = (uint32_t)e->value[i] | (uint32_t)e->value[i + 1] << 8 |
                         (uint32_t)e->value[i + 2] << 16 | (uint32_t)e->value[i + 3] << 24;
            sb_printf(o, "%s%u", i ? "," : "", v);
        }
        sb_puts(o, "]");
        break;
    default: put_hex(o, e->value, e->length); break; /* bytes, and unknown types of skipped keys */
    }
}

static void put_tensor(sbuf *o, const avp_tensor *t, uint32_t i) {
    uint8_t digest[32];
    sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, t->data, t->raw_length); /* RAW codec: raw bytes are the stored bytes */
    sha256_final(&ctx, digest);
    sb_printf(o, "{\"tensor_index\":%u,\"role\":", i);
    put_name(o, avp_role_name(t->role));
    sb_puts(o, ",\"dtype\":");
    put_name(o, avp_dtype_name(t->dtype));
    sb_puts(o, ",\"shape\":[");
    for (int a = 0; a < t->rank; a++) sb_printf(o, "%s%llu", a ? "," : "", (unsigned long long)avp_dim(t, a));
    sb_puts(o, "],\"layer\":");
    if (t->layer == 0xFFFFFFFFu) sb_puts(o, "null");
    else sb_printf(o, "%u", t->layer);
    sb_puts(o, ",\"codec\":");
    put_name(o, avp_codec_name(t->codec));
    sb_puts(o, ",\"layout\":");
    put_name(o, avp_layout_name(t->layout));
    sb_printf(o, ",\"token_offset\":%llu,\"quant\":", (unsigned long long)t->token_offset);
    if (t->quant_scheme == 0) {
        sb_puts(o, "null");
    } else {
        sb_puts(o, "{\"scheme\":");
        put_name(o, avp_quant_name(t->quant_scheme));
        sb_printf(o, ",\"axis\":%u,\"group_size\":%u,\"scale_tensor\":", t->quant_axis, t->group_size);
        if (t->scale_tensor == 0xFFFFFFFFu) sb_puts(o, "null");
        else sb_printf(o, "%u", t->scale_tensor);
        sb_puts(o, ",\"zero_point_tensor\":");
        if (t->zero_point_tensor == 0xFFFFFFFFu) sb_puts(o, "null");
        else sb_printf(o, "%u", t->zero_point_tensor);
        sb_puts(o, ",\"dequant_dtype\":");
        put_name(o, avp_dtype_name(t->dequant_dtype));
        sb_puts(o, "}");
    }
    sb_printf(o, ",\"raw_length\":%llu,\"stored_length\":%llu,\"data_crc\":%u,\"raw_sha256\":",
              (unsigned long long)t->raw_length, (unsigned long long)t->stored_length, t->data_crc);
    put_hex(o, digest, 32);
    sb_puts(o, "}");
}

void canon_json(sbuf *o, const avp_msg *m) {
    sb_printf(o, "{\"format\":\"AVP/%u.%u\",\"kind\":", m->major, m->minor);
    put_name(o, avp_kind_name(m->kind));
    sb_puts(o, ",\"entries\":[");
    for (uint32_t i = 0; i < m->entry_count; i++) {
        const avp_entry *e = &m->entries[i];
        sb_printf(o, "%s{\"key\":%u,\"name\":", i ? "," : "", e->key);
        put_name(o, avp_key_name(e->key));
        sb_puts(o, ",\"type\":");
        if (avp_value_type_name(e->type)) put_name(o, avp_value_type_name(e->type));
        else sb_printf(o, "%u", e->type); /* unknown type of a skipped key: its number */
        sb_printf(o, ",\"critical\":%s,\"value\":", e->flags & 1 ? "true" : "false");
        put_value(o, e);
        sb_puts(o, "}");
    }
    sb_puts(o, "],\"layers\":[");
    for (uint32_t i = 0; i < m->layer_count; i++) {
        const avp_layer *l = &m->layers[i];
        sb_printf(o, "%s{\"layer_index\":%u,\"layer_kind\":", i ? "," : "", l->index);
        put_name(o, avp_layer_kind_name(l->kind));
        sb_printf(o, ",\"window\":%u,\"token_start\":%llu,\"token_count\":%llu}", l->window,
                  (unsigned long long)l->token_start, (unsigned long long)l->token_count);
    }
    sb_puts(o, "],\"tensors\":[");
    for (uint32_t i = 0; i < m->tensor_count; i++) {
        if (i) sb_puts(o, ",");
        put_tensor(o, &m->tensors[i], i);
    }
    sb_printf(o, "],\"authenticated\":%s}", m->authenticated ? "true" : "false");
}
