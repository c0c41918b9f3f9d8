/* Steps T (each TENSOR section and its data) and F (whole-message checks) of spec 9.2. */
#include <stdlib.h>
#include <string.h>

#include "avp_internal.h"
#include "hashes.h"

/* ---- T: TENSOR (spec 7, 10.2, 12) ------------------------------------------------------------ */

/* T.6: exactly three checks: fields set with scheme NONE, an unregistered scheme, an
 * unregistered dequant_dtype (the rest of is T.12). */
static int check_quant_fields(const avp_tensor *t, uint32_t i, uint64_t at, avp_error *err) {
    if (t->quant_scheme == 0) {
        if (t->quant_axis || t->group_size || t->scale_tensor != NO_REF ||
            t->zero_point_tensor != NO_REF || t->dequant_dtype)
            return fail(err, E_QUANT_PARAMS, at + 14, "tensor[%u].quant", i);
        return 0;
    }
    if (t->quant_scheme > 2 || !dtype_bits(t->dequant_dtype))
        return fail(err, E_QUANT_PARAMS, at + 14, "tensor[%u].quant", i);
    return 0;
}

/* T.12: R-12.2 (role, stored dtype, dequant dtype, rank and axis), then the references to
 * parameter tensors (R-12.3 - R-12.5). */
static int check_quant_refs(const avp_msg *m, uint32_t i, uint64_t at, avp_error *err) {
    const avp_tensor *t = &m->tensors[i];
    if (t->quant_scheme == 0) return 0;
    int d = t->dtype, ok_dtype = t->quant_scheme == 1 ? (d >= 6 && d <= 10) : (d == 4 || d == 5);
    if (t->role == 32 || t->role == 33 || !ok_dtype || !is_float_dtype(t->dequant_dtype) ||
        t->rank == 0 || t->quant_axis >= t->rank)
        return fail(err, E_QUANT_PARAMS, at + 14, "tensor[%u].quant", i);
    if (t->scale_tensor == NO_REF || t->scale_tensor >= i ||
        (t->zero_point_tensor != NO_REF && (t->zero_point_tensor >= i || t->quant_scheme == 2)))
        return fail(err, E_QUANT_PARAMS, at + 20, "tensor[%u].scale_tensor", i);
    for (int which = 0; which < 2; which++) {
        uint32_t ref = which ? t->zero_point_tensor : t->scale_tensor;
        if (ref == NO_REF) continue;
        const avp_tensor *q = &m->tensors[ref];
        if (q->role != (which ? 33 : 32) || q->layer != t->layer || !is_float_dtype(q->dtype) ||
            q->quant_scheme != 0 || q->rank != t->rank)
            return fail(err, E_QUANT_PARAMS, at + 20 + 4 * which, "tensor[%u].quant", i);
        for (int a = 0; a < t->rank; a++) {
            uint64_t dim = avp_dim(t, a), want = dim;
            if (a == t->quant_axis)
                want = t->group_size ? dim / t->group_size + (dim % t->group_size != 0) : 1;
            if (avp_dim(q, a) != want)
                return fail(err, E_QUANT_PARAMS, at + 20 + 4 * which, "tensor[%u].quant", i);
        }
        for (uint32_t j = 0; j < i; j++) /* no parameter tensor is shared */
            if (m->tensors[j].scale_tensor == ref || m->tensors[j].zero_point_tensor == ref)
                return fail(err, E_QUANT_PARAMS, at + 20 + 4 * which, "tensor[%u].quant", i);
    }
    return 0;
}

/* T.14: the role in the message kind, at most one context tensor of each role, and
 * the shapes, R-10.6 (axis 1 only: the batch is F.3) and fix. */
static int check_tensor_kind(const avp_msg *m, uint32_t i, uint64_t at, avp_error *err) {
    const avp_tensor *t = &m->tensors[i];
    int r = t->role, quant = r == 32 || r == 33;
    if (m->kind == 1 && !quant && t->layer == NO_REF && r == 16)
        return fail(err, E_KIND_CONSTRAINT, at + 8, "tensor[%u].role", i);
    if (m->kind == 2 && !quant && r != 16 && r != 17)
        return fail(err, E_KIND_CONSTRAINT, at + 8, "tensor[%u].role", i);
    int single = (m->kind == 1 && r >= 17 && r <= 19) || (m->kind == 2 && r == 17);
    for (uint32_t j = 0; j < i && single; j++)
        if (m->tensors[j].role == r) return fail(err, E_KIND_CONSTRAINT, at + 8, "tensor[%u].role", i);
    if (m->kind == 1 && r >= 17 && r <= 19 && avp_dim(t, 1) != entry_u64(m, 5))
        return fail(err, E_KIND_CONSTRAINT, at + 72, "tensor[%u].shape[1]", i);
    for (uint32_t j = 0; j < i && m->kind == 2 && (r == 16 || r == 17); j++) {
        const avp_tensor *u = &m->tensors[j]; /* batch (and hidden size) agree */
        if ((u->role == 16 || u->role == 17) && avp_dim(u, 0) != avp_dim(t, 0))
            return fail(err, E_KIND_CONSTRAINT, at + 64, "tensor[%u].shape[0]", i);
        if (r == 16 && u->role == 16 && avp_dim(u, 2) != avp_dim(t, 2))
            return fail(err, E_KIND_CONSTRAINT, at + 64, "tensor[%u].shape", i);
    }
    return 0;
}

int parse_tensor(const uint8_t *buf, uint64_t len, const section *s, uint32_t i,
                 const avp_options *opt, avp_msg *m, uint64_t *next, avp_error *err) {
    const uint8_t *b = buf + s->body;
    uint64_t at = s->body, count = 1, bits_total, data_end;
    avp_tensor *t = &m->tensors[i];
    if (s->length < 64) return fail(err, E_HEADER_LAYOUT, s->offset + 8, "tensor[%u].length", i);
    t->section_offset = s->offset;
    t->rank = b[12];
    if (!all_zero(b + 29, 3) || rd32(b + 60))
        return fail(err, E_RESERVED_NONZERO, at + 29, "tensor[%u].reserved", i);
    if (s->length != 64 + 8 * (uint64_t)t->rank)
        return fail(err, E_HEADER_LAYOUT, s->offset + 8, "tensor[%u].length", i);
    t->layer = rd32(b + 4);
    t->role = rd16(b + 8);
    t->dtype = b[10];
    t->codec = b[11];
    t->layout = b[13];
    t->quant_scheme = b[14];
    t->quant_axis = b[15];
    t->group_size = rd32(b + 16);
    t->scale_tensor = rd32(b + 20);
    t->zero_point_tensor = rd32(b + 24);
    t->dequant_dtype = b[28];
    t->token_offset = rd64(b + 32);
    t->raw_length = rd64(b + 40);
    t->stored_length = rd64(b + 48);
    t->data_crc = rd32(b + 56);
    t->shape = b + 64;
    if (rd32(b) != i) return fail(err, E_TENSOR_INDEX, at, "tensor[%u].tensor_index", i);
    if (!dtype_bits(t->dtype)) return fail(err, E_UNKNOWN_DTYPE, at + 10, "tensor[%u].dtype", i);
    if (t->codec > 2) return fail(err, E_UNKNOWN_CODEC, at + 11, "tensor[%u].codec", i);
    const role_rule *rr = role_rule_for(t->role);
    if (!rr) return fail(err, E_UNKNOWN_ROLE, at + 8, "tensor[%u].role", i);
    if (t->layout > 4) return fail(err, E_UNKNOWN_LAYOUT, at + 13, "tensor[%u].layout", i);
    if (check_quant_fields(t, i, at, err)) return err->code;
    if (t->layer != NO_REF && t->layer >= m->layer_count)
        return fail(err, E_BAD_REFERENCE, at + 4, "tensor[%u].layer", i);
    /* T.8: a zero dimension makes the product 0 whatever the other dimensions are */
    int zero = 0;
    for (int a = 0; a < t->rank; a++) zero |= avp_dim(t, a) == 0;
    for (int a = 0; a < t->rank && !zero; a++)
        if (!mul64(count, avp_dim(t, a), &count))
            return fail(err, E_LENGTH_OVERFLOW, at + 64 + 8 * a, "tensor[%u].shape[%d]", i, a);
    if (zero) count = 0;
    if (!mul64(count, (uint64_t)dtype_bits(t->dtype), &bits_total))
        return fail(err, E_LENGTH_OVERFLOW, at + 64, "tensor[%u].shape", i);
    if (bits_total / 8 + (bits_total % 8 != 0) != t->raw_length)
        return fail(err, E_SIZE_MISMATCH, at + 40, "tensor[%u].raw_length", i);
    if (t->codec == 0 && t->stored_length != t->raw_length)
        return fail(err, E_SIZE_MISMATCH, at + 48, "tensor[%u].stored_length", i);
    if (t->codec == 2 && dtype_bits(t->dtype) < 16)
        return fail(err, E_CODEC_DTYPE, at + 11, "tensor[%u].codec", i);
    /* T.10: role rules: layout, rank, level, dtype, and the role against the layer kind */
    int lk = t->layer == NO_REF ? 0 : m->layers[t->layer].kind, quant = t->role == 32 || t->role == 33;
    int level_ok = t->layer == NO_REF ? (rr->placement & 1) : (rr->placement & 2);
    int kind_ok = quant || lk == 0 || (lk == 3 ? (t->role == 4 || t->role == 5) : t->role <= 3);
    if (!(rr->layouts & (1 << t->layout)) || (rr->rank >= 0 && t->rank != rr->rank) || !level_ok ||
        !kind_ok || ((t->role == 17 || t->role == 18) && t->dtype != 11 && t->dtype != 12) ||
        (t->role == 19 && t->dtype != 7))
        return fail(err, E_ROLE_SHAPE, at + 8, "tensor[%u].role", i);
    if (i && (m->tensors[i - 1].layer + 1u) > (t->layer + 1u)) /* NO_REF (+1 = 0) sorts first */
        return fail(err, E_NON_CANONICAL, at + 4, "tensor[%u].layer", i);
    if (check_quant_refs(m, i, at, err)) return err->code;
    /* T.13: token rules */
    if ((!rr->tokens || t->layer == NO_REF) && t->token_offset)
        return fail(err, E_TOKEN_RANGE, at + 32, "tensor[%u].token_offset", i);
    if (rr->tokens && t->layer != NO_REF) {
        uint64_t held = m->layers[t->layer].token_count, len_t = avp_dim(t, token_axis(t->layout)), end;
        if (!add64(t->token_offset, len_t, &end))
            return fail(err, E_LENGTH_OVERFLOW, at + 32, "tensor[%u].token_offset", i);
        if (end > held || (held && !len_t) || (!held && t->token_offset))
            return fail(err, E_TOKEN_RANGE, at + 32, "tensor[%u].token_offset", i);
    }
    if (check_tensor_kind(m, i, at, err)) return err->code;
    /* T.15 - T.19: data placement, padding, CRC, codec, packed tail */
    t->data_offset = s->end + pad_to(s->end, 64);
    if (!add64(t->data_offset, t->stored_length, &data_end) ||
        !add64(data_end, pad_to(data_end, 8), &data_end))
        return fail(err, E_LENGTH_OVERFLOW, at + 48, "tensor[%u].stored_length", i);
    if (data_end > len) return fail(err, E_TRUNCATED, t->data_offset, "tensor[%u].data", i);
    if (!all_zero(buf + s->end, t->data_offset - s->end))
        return fail(err, E_NONZERO_PADDING, s->end, "tensor[%u].padding", i);
    t->data = buf + t->data_offset;
    if (opt->verify && crc32c(t->data, t->stored_length) != t->data_crc)
        return fail(err, E_DATA_CHECKSUM, at + 56, "tensor[%u].data_crc", i);
    uint64_t pad_at = t->data_offset + t->stored_length;
    if (!all_zero(buf + pad_at, data_end - pad_at))
        return fail(err, E_NONZERO_PADDING, pad_at, "tensor[%u].data_padding", i);
    if (t->codec) return fail(err, E_UNSUPPORTED, at + 11, "tensor[%u].codec (zstd)", i);
    int bits = dtype_bits(t->dtype);
    if (bits < 8 && t->raw_length && count * bits % 8) {
        uint8_t last = t->data[t->raw_length - 1];
        if (last >> (count * bits % 8))
            return fail(err, E_NONZERO_PADDING, pad_at - 1, "tensor[%u].data", i);
    }
    *next = data_end;
    return 0;
}

/* ---- F: whole-message checks ----------------------------------------------------------------- */

/* F.1, token tiling of the (layer, role) group whose first tensor is `first`:
 * sorted by token_offset, the pieces must follow each other from 0 to the layer's token_count
 * and agree on layout and every non-token dimension. */
static int check_tiling(const avp_msg *m, uint32_t first, avp_error *err) {
    const avp_tensor *t = &m->tensors[first];
    uint32_t *group = malloc(sizeof *group * (m->tensor_count - first)), n = 0;
    int ax = token_axis(t->layout), rc = 0;
    uint64_t covered = 0;
    if (!group) return fail(err, E_LIMIT_BUFFER, 0, "tensors");
    for (uint32_t j = first; j < m->tensor_count; j++) {
        if (m->tensors[j].layer != t->layer || m->tensors[j].role != t->role) continue;
        uint32_t k = n++; /* insertion sort by token_offset: groups are small */
        while (k && m->tensors[group[k - 1]].token_offset > m->tensors[j].token_offset) {
            group[k] = group[k - 1];
            k--;
        }
        group[k] = j;
    }
    for (uint32_t k = 0; k < n && !rc; k++) {
        const avp_tensor *u = &m->tensors[group[k]];
        int same = u->layout == t->layout;
        for (int a = 0; a < t->rank && same; a++) same = a == ax || avp_dim(u, a) == avp_dim(t, a);
        if (!same) rc = fail(err, E_TOKEN_RANGE, u->section_offset, "tensor[%u].shape", group[k]);
        else if (u->token_offset != covered)
            rc = fail(err, E_TOKEN_RANGE, u->section_offset, "tensor[%u].token_offset", group[k]);
        else covered += avp_dim(u, ax); /* no overflow: each range was bounded at T.13 */
    }
    if (!rc && covered != m->layers[t->layer].token_count)
        rc = fail(err, E_TOKEN_RANGE, t->section_offset, "tensor[%u].token_offset", first);
    free(group);
    return rc;
}

int check_message(const avp_msg *m, avp_error *err) {
    for (uint32_t i = 0; i < m->tensor_count; i++) { /* F.1, in order of first appearance */
        const avp_tensor *t = &m->tensors[i];
        int first = 1;
        if (!role_rule_for(t->role)->tokens || t->layer == NO_REF) continue;
        for (uint32_t j = 0; j < i && first; j++)
            first = !(m->tensors[j].layer == t->layer && m->tensors[j].role == t->role);
        if (first && check_tiling(m, i, err)) return err->code;
    }
    for (uint32_t i = 0; i < m->tensor_count; i++) { /* F.2 */
        int used = 0;
        if (m->tensors[i].role != 32 && m->tensors[i].role != 33) continue;
        for (uint32_t j = i + 1; j < m->tensor_count; j++)
            used |= m->tensors[j].scale_tensor == i || m->tensors[j].zero_point_tensor == i;
        if (!used) return fail(err, E_QUANT_PARAMS, m->tensors[i].section_offset, "tensor[%u]", i);
    }
    if (m->kind == 1) { /* F.3 */
        uint64_t batch = 0;
        int have = 0;
        for (uint32_t i = 0; i < m->tensor_count; i++) {
            const avp_tensor *t = &m->tensors[i];
            if (t->layout == 0) continue;
            if (have && avp_dim(t, 0) != batch)
                return fail(err, E_ROLE_SHAPE, t->section_offset, "tensor[%u].shape[0]", i);
            batch = avp_dim(t, 0);
            have = 1;
        }
        for (uint32_t l = 0; l < m->layer_count; l++) {
            int held = 0;
            for (uint32_t i = 0; i < m->tensor_count; i++)
                held |= m->tensors[i].layer == l && m->tensors[i].role != 32 && m->tensors[i].role != 33;
            if (!held) return fail(err, E_KIND_CONSTRAINT, 0, "layer[%u]", l);
        }
    }
    if (m->kind == 2) {
        int hidden = 0;
        for (uint32_t i = 0; i < m->tensor_count; i++) hidden |= m->tensors[i].role == 16;
        if (!hidden) return fail(err, E_KIND_CONSTRAINT, 0, "tensors");
    }
    return 0;
}

