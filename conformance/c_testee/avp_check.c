/* AVP 1.0 decoder and validator. Reads front to back and reports the first failing check, in the
 * order of the procedure of spec 9.2: M (message length), P (preamble), S (section framing),
 * H (HEADER), T (each TENSOR, in avp_tensor.c), I (INDEX), R (Trailer), F (whole message).
 *
 * Every length read from the input is checked against the input size before it is used, and all
 * arithmetic on lengths goes through add64/mul64, which report overflow instead of wrapping
 * (spec ). Allocations are bounded by counts that were first checked against the input. */
#include <stdlib.h>
#include <string.h>

#include "avp_internal.h"
#include "hashes.h"

static const uint8_t MAGIC[8] = {0x89, 'A', 'V', 'P', 0x0D, 0x0A, 0x1A, 0x0A};
static const uint8_t END_MAGIC[8] = {0x89, 'A', 'V', 'P', 'E', 'N', 'D', 0x0A};

uint64_t avp_dim(const avp_tensor *t, int axis) { return rd64(t->shape + 8 * axis); }

void avp_default_limits(avp_limits *lim) {
    lim->max_message_bytes = (uint64_t)1 << 40;
    lim->max_header_bytes = (uint64_t)16 << 20;
    lim->max_entries = 4096;
    lim->max_layers = 65536;
    lim->max_tensors = 1048576;
    lim->max_rank = 8;
    lim->max_tensor_bytes = (uint64_t)1 << 34;
    lim->max_buffer_bytes = (uint64_t)256 << 20;
}

void avp_free(avp_msg *msg) {
    free(msg->entries);
    free(msg->layers);
    free(msg->tensors);
    memset(msg, 0, sizeof *msg);
}

/* ---- S: section framing (spec 4.1, procedure 9.2 step S) ----------------------------------- */

/* Reads the section at off (steps S.1-S.10), skipping unknown SKIPPABLE sections. */
static int next_section(const uint8_t *buf, uint64_t len, uint64_t off, uint32_t expected,
                        const avp_limits *lim, section *s, avp_error *err) {
    for (;;) {
        uint64_t size, end;
        const uint8_t *b = buf + off + 16;
        if (len - off < 16) return fail(err, E_TRUNCATED, off, "section");
        s->offset = off;
        s->type = rd32(buf + off);
        s->flags = rd32(buf + off + 4);
        s->length = rd64(buf + off + 8);
        s->body = off + 16;
        uint64_t n = s->length;
        if (!add64(n, 20, &size) || !add64(size, pad_to(size, 8), &size) || !add64(off, size, &end))
            return fail(err, E_LENGTH_OVERFLOW, off + 8, "section.length");
        if ((s->type == SEC_HEADER && n > lim->max_header_bytes) ||
            (s->type > SEC_INDEX && n > lim->max_header_bytes) || (s->type == 0 && n > lim->max_header_bytes))
            return fail(err, E_LIMIT_HEADER, off + 8, "section.length");
        if (s->type == SEC_TENSOR && n > 64 + 8 * 255)
            return fail(err, E_HEADER_LAYOUT, off + 8, "section.length");
        if (s->type == SEC_INDEX && n > 8 + 24 * lim->max_tensors + 32)
            return fail(err, E_LIMIT_TENSORS, off + 8, "section.length");
        if (end > len) return fail(err, E_TRUNCATED, off + 8, "section.length");
        s->end = end;
        /* S.5: limits read from the body before its CRC is known to be good */
        if (s->type == SEC_HEADER && n >= 16) {
            if (rd32(b + 4) > lim->max_entries) return fail(err, E_LIMIT_ENTRIES, off + 20, "header.entry_count");
            if (rd32(b + 8) > lim->max_layers) return fail(err, E_LIMIT_LAYERS, off + 24, "header.layer_count");
            if (rd32(b + 12) > lim->max_tensors) return fail(err, E_LIMIT_TENSORS, off + 28, "header.tensor_count");
        }
        if (s->type == SEC_TENSOR && n >= 64) {
            if (b[12] > lim->max_rank) return fail(err, E_LIMIT_RANK, off + 28, "tensor.rank");
            if (rd64(b + 40) > lim->max_tensor_bytes) return fail(err, E_LIMIT_TENSOR, off + 56, "tensor.raw_length");
            if (rd64(b + 48) > lim->max_tensor_bytes) return fail(err, E_LIMIT_TENSOR, off + 64, "tensor.stored_length");
        }
        if (rd32(b + n) != crc32c(buf + off, 16 + n))
            return fail(err, E_SECTION_CHECKSUM, s->body + n, "section.crc");
        int known = s->type >= SEC_HEADER && s->type <= SEC_INDEX;
        if (known ? s->flags != 0 : (s->flags & ~1u) != 0)
            return fail(err, E_RESERVED_NONZERO, off + 4, "section.flags");
        uint64_t pad_at = s->body + n + 4;
        if (!all_zero(buf + pad_at, s->end - pad_at))
            return fail(err, E_NONZERO_PADDING, pad_at, "section.padding");
        if (!known) {
            if (!(s->flags & 1)) return fail(err, E_UNKNOWN_CRITICAL, off, "section.type");
            off = s->end; /* unknown but skippable: verified, now skipped; still expecting E */
            continue;
        }
        if (s->type != expected) return fail(err, E_SECTION_ORDER, off, "section.type");
        return 0;
    }
}

/* ---- H: HEADER (spec 6, 10) ------------------------------------------------------------------ */

const avp_entry *find_entry(const avp_msg *m, int key) {
    for (uint32_t i = 0; i < m->entry_count; i++)
        if (m->entries[i].key == key) return &m->entries[i];
    return NULL;
}

uint64_t entry_u64(const avp_msg *m, int key) {
    const avp_entry *e = find_entry(m, key);
    return e ? rd64(e->value) : 0;
}

/* H.7: kind rules, entries first, then the layer table. */
static int check_kind_header(const avp_msg *m, uint64_t at, uint64_t layer_table, avp_error *err) {
    const kind_rule *kr = kind_rule_for(m->kind);
    for (uint32_t i = 0; i < m->entry_count; i++) {
        int k = m->entries[i].key;
        if (key_rule_for(k) && !in_list(kr->required, 8, k) && !in_list(kr->optional, 12, k))
            return fail(err, E_ENTRY_NOT_ALLOWED, at, "entry[%u].key", i);
    }
    for (int r = 0; r < 8 && kr->required[r]; r++)
        if (!find_entry(m, kr->required[r])) return fail(err, E_MISSING_ENTRY, at, "entries");
    if (m->kind == 2) { /* */
        static const int proj_required[] = {17, 19, 20, 21};
        uint64_t source = entry_u64(m, 16);
        for (int i = 0; i < 4 && source == 2; i++)
            if (!find_entry(m, proj_required[i])) return fail(err, E_MISSING_ENTRY, at, "entries");
        for (uint32_t i = 0; i < m->entry_count && source == 1; i++)
            if (m->entries[i].key >= 17 && m->entries[i].key <= 22)
                return fail(err, E_ENTRY_NOT_ALLOWED, at, "entry[%u].key", i);
    }
    if (m->kind == 1 ? m->layer_count == 0 : m->layer_count != 0)
        return fail(err, E_KIND_CONSTRAINT, at + 8, "header.layer_count");
    if (m->kind >= 3 && m->tensor_count) return fail(err, E_KIND_CONSTRAINT, at + 12, "header.tensor_count");
    if (m->kind == 1) { /* */
        uint64_t ctx = entry_u64(m, 5);
        for (uint32_t i = 0; i < m->layer_count; i++) {
            const avp_layer *l = &m->layers[i];
            if (l->kind == 3) continue;
            if (l->token_start + l->token_count != ctx || (l->kind == 1 && l->token_start))
                return fail(err, E_KIND_CONSTRAINT, layer_table + 32 * (uint64_t)i + 16,
                            "layer[%u].token_start", i);
        }
    }
    return 0;
}

static int parse_header(const uint8_t *buf, const section *s, const avp_options *opt, avp_msg *m,
                        avp_error *err) {
    const uint8_t *b = buf + s->body;
    uint64_t n = s->length, at = s->body, p;
    if (n < 16) return fail(err, E_HEADER_LAYOUT, s->offset + 8, "header.length");
    m->kind = rd16(b);
    m->entry_count = rd32(b + 4);
    m->layer_count = rd32(b + 8);
    m->tensor_count = rd32(b + 12);
    if (rd16(b + 2)) return fail(err, E_RESERVED_NONZERO, at + 2, "header.flags");
    if (!kind_rule_for(m->kind)) return fail(err, E_UNKNOWN_KIND, at, "header.kind");
    /* Tables are allocated only for what the body can hold: an entry takes >= 8 bytes and a
     * layer 32. Larger counts fail below with HEADER_LAYOUT anyway. */
    uint64_t max_entries = (n - 16) / 8, max_layers = (n - 16) / 32;
    m->entries = calloc((m->entry_count < max_entries ? m->entry_count : max_entries) + 1, sizeof *m->entries);
    m->layers = calloc((m->layer_count < max_layers ? m->layer_count : max_layers) + 1, sizeof *m->layers);
    if (!m->entries || !m->layers) return fail(err, E_LIMIT_BUFFER, at, "header");
    p = 16;
    /* H.4: the entries end where the layer table starts (6.1), n - 32 x layer_count. */
    uint64_t table = (uint64_t)m->layer_count * 32, end = n >= table ? n - table : 0;
    for (uint32_t i = 0; i < m->entry_count; i++) {
        avp_entry *e = &m->entries[i];
        uint64_t eoff = at + p, vlen, total;
        if (end < p || end - p < 8) return fail(err, E_HEADER_LAYOUT, eoff, "entry[%u]", i);
        e->key = rd16(b + p);
        e->flags = b[p + 2];
        e->type = b[p + 3];
        e->length = rd32(b + p + 4);
        vlen = e->length;
        total = 8 + vlen + pad_to(vlen, 8);
        if (total > end - p) return fail(err, E_HEADER_LAYOUT, eoff + 4, "entry[%u].length", i);
        e->value = b + p + 8;
        if (e->flags & ~1u) return fail(err, E_RESERVED_NONZERO, eoff + 2, "entry[%u].flags", i);
        if (!all_zero(b + p + 8 + vlen, total - 8 - vlen))
            return fail(err, E_NONZERO_PADDING, eoff + 8 + vlen, "entry[%u].padding", i);
        if (i && e->key <= m->entries[i - 1].key)
            return fail(err, E_NON_CANONICAL, eoff, "entry[%u].key", i);
        if (check_well_formed(e, eoff + 8, err)) return err->code;
        const key_rule *rule = key_rule_for(e->key);
        if (!rule && (e->flags & 1)) return fail(err, E_UNKNOWN_CRITICAL, eoff, "entry[%u].key", i);
        if (rule && (e->type != rule->type || (e->flags & 1) != rule->critical))
            return fail(err, E_ENTRY_TYPE, eoff + 2, "entry[%u]", i);
        if (rule && check_constraint(e, rule, eoff + 8, err)) return err->code;
        p += total;
    }
    uint64_t layer_table = at + p;
    if (n - p != (uint64_t)m->layer_count * 32)
        return fail(err, E_HEADER_LAYOUT, s->offset + 8, "header.length");
    for (uint32_t i = 0; i < m->layer_count; i++, p += 32) {
        avp_layer *l = &m->layers[i];
        uint64_t loff = at + p, end;
        l->index = rd32(b + p);
        l->kind = b[p + 4];
        l->window = rd32(b + p + 8);
        l->token_start = rd64(b + p + 16);
        l->token_count = rd64(b + p + 24);
        if (!all_zero(b + p + 5, 3) || rd32(b + p + 12))
            return fail(err, E_RESERVED_NONZERO, loff + 5, "layer[%u].reserved", i);
        if (l->kind < 1 || l->kind > 3) return fail(err, E_INVALID_VALUE, loff + 4, "layer[%u].kind", i);
        if (i && l->index <= m->layers[i - 1].index)
            return fail(err, E_NON_CANONICAL, loff, "layer[%u].layer_index", i);
        if ((l->kind == 2) != (l->window != 0))
            return fail(err, E_INVALID_VALUE, loff + 8, "layer[%u].window", i);
        if (!add64(l->token_start, l->token_count, &end))
            return fail(err, E_LENGTH_OVERFLOW, loff + 24, "layer[%u].token_count", i);
        if (l->kind == 2 && l->token_count > l->window)
            return fail(err, E_TOKEN_RANGE, loff + 24, "layer[%u].token_count", i);
    }
    if (check_kind_header(m, at, layer_table, err)) return err->code;
    /* H.8: authentication requirements, before any tensor is read */
    const avp_entry *auth = find_entry(m, 96);
    if (opt->require_auth && !auth) return fail(err, E_AUTH_REQUIRED, at, "entries");
    if (opt->require_auth && !(opt->key && auth->length == opt->key_id_len &&
                               !memcmp(auth->value, opt->key_id, auth->length)))
        return fail(err, E_UNKNOWN_KEY, at, "entry[AUTH_KEY_ID]");
    return 0;
}

/* ---- the whole message: M, P, S/H, T, I, R, F, then the receiver's own checks -------------- */

static int ct_equal(const uint8_t *a, const uint8_t *b, size_t n) {
    uint8_t diff = 0; /* constant time, as asks */
    for (size_t i = 0; i < n; i++) diff |= a[i] ^ b[i];
    return diff == 0;
}

int avp_check(const uint8_t *buf, size_t len, const avp_options *opt, avp_msg *m, avp_error *err) {
    section s;
    uint64_t off;
    memset(m, 0, sizeof *m);
    memset(err, 0, sizeof *err);
    if (len > opt->limits.max_message_bytes) return fail(err, E_LIMIT_MESSAGE, 0, "message");
    /* A prefix that already differs from the magic is BAD_MAGIC even when short. */
    if (memcmp(buf, MAGIC, len < 8 ? len : 8)) return fail(err, E_BAD_MAGIC, 0, "preamble.magic");
    if (len < 16) return fail(err, E_TRUNCATED, len, "preamble");
    if (rd16(buf + 8) != 1) return fail(err, E_UNSUPPORTED_VERSION, 8, "preamble.major");
    if (rd32(buf + 12)) return fail(err, E_RESERVED_NONZERO, 12, "preamble.reserved");
    m->major = 1;
    m->minor = rd16(buf + 10);
    if (next_section(buf, len, 16, SEC_HEADER, &opt->limits, &s, err)) return err->code;
    if (parse_header(buf, &s, opt, m, err)) return err->code;
    const avp_entry *auth = find_entry(m, 96), *model = find_entry(m, 1);
    /* every tensor needs >= 88 input bytes: bound the table by the input */
    uint64_t max_tensors = len / 88;
    m->tensors = calloc((m->tensor_count < max_tensors ? m->tensor_count : max_tensors) + 1,
                        sizeof *m->tensors);
    if (!m->tensors) return fail(err, E_LIMIT_BUFFER, s.offset, "tensors");
    off = s.end;
    for (uint32_t i = 0; i < m->tensor_count; i++) {
        if (next_section(buf, len, off, SEC_TENSOR, &opt->limits, &s, err)) return err->code;
        if (parse_tensor(buf, len, &s, i, opt, m, &off, err)) return err->code;
    }
    if (next_section(buf, len, off, SEC_INDEX, &opt->limits, &s, err)) return err->code;
    uint64_t index_offset = s.offset, body = s.body, tag_at = body + 8 + 24 * (uint64_t)m->tensor_count;
    if (s.length != 8 + 24 * (uint64_t)m->tensor_count + (auth ? 32 : 0))
        return fail(err, E_HEADER_LAYOUT, s.offset + 8, "index.length");
    if (rd64(buf + body) != m->tensor_count)
        return fail(err, E_INDEX_MISMATCH, body, "index.tensor_count");
    for (uint32_t i = 0; i < m->tensor_count; i++) {
        const uint8_t *e = buf + body + 8 + 24 * (uint64_t)i;
        const avp_tensor *t = &m->tensors[i];
        if (rd64(e + 8) % 64) return fail(err, E_MISALIGNED, body + 16 + 24 * (uint64_t)i, "index[%u].data_offset", i);
        if (rd64(e) != t->section_offset || rd64(e + 8) != t->data_offset || rd64(e + 16) != t->stored_length)
            return fail(err, E_INDEX_MISMATCH, body + 8 + 24 * (uint64_t)i, "index[%u]", i);
    }
    if (auth && opt->key && auth->length == opt->key_id_len &&
        !memcmp(auth->value, opt->key_id, auth->length)) { /* I.4, R-15.3 */
        uint8_t tag[32];
        hmac_sha256(opt->key, opt->key_len, buf, index_offset, tag);
        if (!ct_equal(tag, buf + tag_at, 32)) return fail(err, E_AUTH_FAILED, tag_at, "index.tag");
        m->authenticated = 1;
    }
    off = s.end;
    if (len - off < 16) return fail(err, E_TRUNCATED, off, "trailer");
    if (memcmp(buf + off + 8, END_MAGIC, 8)) return fail(err, E_BAD_TRAILER, off + 8, "trailer.end_magic");
    if (rd64(buf + off) != index_offset) return fail(err, E_BAD_TRAILER, off, "trailer.index_offset");
    if (check_message(m, err)) return err->code; /* F, then Z: trailing bytes come last */
    if (len - off > 16) return fail(err, E_TRAILING_BYTES, off + 16, "trailer");
    /* receiver checks (R-10.4, R-10.11, R-10.12; TESTEE-PROTOCOL 1.3) */
    if (opt->expected_model_id && (m->kind == 1 || m->kind == 2) && model &&
        memcmp(model->value, opt->expected_model_id, 32))
        return fail(err, E_MODEL_MISMATCH, 0, "entry[MODEL_ID]");
    const avp_entry *target = find_entry(m, 20);
    if (opt->expected_tokenizer_id && m->kind == 2 && entry_u64(m, 16) == 2 && target &&
        memcmp(target->value, opt->expected_tokenizer_id, 32))
        return fail(err, E_MODEL_MISMATCH, 0, "entry[PROJ_TARGET_TOKENIZER_ID]");
    return 0;
}
