/* Bit-exact dequantization, spec 12.2, for the protocol's `dequantize` operation.
 *
 * Every step is one binary32 operation on `float` variables: this file must be compiled without
 * floating-point contraction (the Makefile passes -ffp-contract=off; -std=c99 implies it for
 * GCC) and on a platform whose float arithmetic is IEEE binary32 with FLT_EVAL_METHOD 0, so that
 * (q - z) * s is two roundings, never a fused multiply-add. Conversions to float16 and bfloat16
 * are done on bit patterns (round to nearest even), never by the platform. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "avp_internal.h"
#include "dequant.h"

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "dequantization needs float arithmetic evaluated in binary32 (FLT_EVAL_METHOD 0)"
#endif

static uint32_t f32_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static float f32_from(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* Exact widenings (12.2 step 2). */
static float half_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FF;
    if (e == 0x1F) return f32_from(sign | 0x7F800000u | (m << 13));
    if (e == 0) { /* zero or subnormal: m x 2^-24, exact in binary32 */
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    return f32_from(sign | ((e + 112) << 23) | (m << 13));
}

static float fp8_to_f32(uint8_t b, int e5m2) {
    int sign = b >> 7;
    float v;
    if (e5m2) {
        int e = (b >> 2) & 0x1F, m = b & 3;
        if (e == 31) v = m ? NAN : INFINITY;
        else v = e ? ldexpf(1.0f + m / 4.0f, e - 15) : ldexpf((float)m, -16);
    } else { /* e4m3fn: no infinities, NaN = S.1111.111 */
        int e = (b >> 3) & 0xF, m = b & 7;
        if (e == 15 && m == 7) v = NAN;
        else v = e ? ldexpf(1.0f + m / 8.0f, e - 7) : ldexpf((float)m, -9);
    }
    return sign ? -v : v;
}

/* 12.2 step 4 for float16: round to nearest even on the binary32 pattern. */
static uint16_t f32_to_half(float f) {
    uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xFF,
             man = x & 0x7FFFFF;
    if (exp == 0xFF) return (uint16_t)(sign | (man ? 0x7E00 : 0x7C00));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7C00);
    if (e <= 0) { /* a float16 subnormal, or zero */
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t r = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++; /* a carry may reach infinity */
    return (uint16_t)(sign | r);
}

static float param(const avp_tensor *p, uint64_t k) {
    const uint8_t *d = p->data;
    if (p->dtype == 1) return f32_from(rd32(d + 4 * k));
    uint16_t h = rd16(d + 2 * k);
    return p->dtype == 2 ? half_to_f32(h) : f32_from((uint32_t)h << 16);
}

static float code(const avp_tensor *t, uint64_t k) {
    const uint8_t *d = t->data;
    switch (t->dtype) {
    case 4: return fp8_to_f32(d[k], 0);
    case 5: return fp8_to_f32(d[k], 1);
    case 6: return (float)(int8_t)d[k];
    case 7: return (float)d[k];
    case 8: case 9: {
        int c = (d[k / 2] >> (4 * (k % 2))) & 0xF;
        return (float)(t->dtype == 8 && c >= 8 ? c - 16 : c);
    }
    default: return (float)((d[k / 4] >> (2 * (k % 4))) & 3); /* uint2 */
    }
}

static uint64_t count_of(const avp_tensor *t) {
    uint64_t n = 1;
    for (int a = 0; a < t->rank; a++) n *= avp_dim(t, a); /* bounded at T.8 */
    return n;
}

int avp_dequantize(const avp_msg *m, uint32_t index, uint8_t **out, size_t *out_len,
                   avp_error *err) {
    *out = NULL;
    *out_len = 0;
    if (index >= m->tensor_count) return fail(err, E_BAD_REFERENCE, 0, "tensor[%u]", index);
    const avp_tensor *t = &m->tensors[index];
    if (!t->quant_scheme) return fail(err, E_UNSUPPORTED, 0, "tensor %u is not quantized", index);
    const avp_tensor *s = &m->tensors[t->scale_tensor];
    const avp_tensor *z = t->zero_point_tensor == NO_REF ? NULL : &m->tensors[t->zero_point_tensor];
    uint64_t ns = count_of(s); /* the zero point has the same shape */
    for (uint64_t k = 0; k < ns; k++) /* parameters must be finite */
        if (!isfinite(param(s, k)) || (z && !isfinite(param(z, k))))
            return fail(err, E_QUANT_PARAMS, 0, "tensor[%u].%s", index,
                        isfinite(param(s, k)) ? "zero_point_tensor" : "scale_tensor");
    uint64_t n = count_of(t), inner = 1, dim = avp_dim(t, t->quant_axis);
    for (int a = t->quant_axis + 1; a < t->rank; a++) inner *= avp_dim(t, a);
    uint64_t groups = avp_dim(s, t->quant_axis);
    size_t size = t->dequant_dtype == 1 ? 4 : 2;
    uint8_t *buf = malloc(n * size + 1);
    if (!buf) return fail(err, E_LIMIT_BUFFER, 0, "tensor[%u]", index);
    for (uint64_t k = 0; k < n; k++) {
        uint64_t a = (k / inner) % dim, outer = k / inner / dim;
        uint64_t g = t->group_size ? a / t->group_size : 0;
        uint64_t pk = (outer * groups + g) * inner + k % inner;
        float q = code(t, k), x;
        if (z) {
            float d = q - param(z, pk); /* one binary32 rounding */
            x = d * param(s, pk);       /* and a second one */
        } else {
            x = q * param(s, pk);
        }
        uint32_t b = f32_bits(x);
        uint8_t *o = buf + k * size;
        if (t->dequant_dtype == 1) {
            wr32(o, isnan(x) ? 0x7FC00000u : b);
        } else {
            uint16_t h = t->dequant_dtype == 2 ? (isnan(x) ? 0x7E00 : f32_to_half(x))
                         : (uint16_t)(isnan(x) ? 0x7FC0 : (b + 0x7FFFu + ((b >> 16) & 1)) >> 16);
            o[0] = (uint8_t)h;
            o[1] = (uint8_t)(h >> 8);
        }
    }
    *out = buf;
    *out_len = (size_t)(n * size);
    return 0;
}

const char *avp_dequant_dtype_name(const avp_msg *m, uint32_t index) {
    return avp_dtype_name(m->tensors[index].dequant_dtype);
}
