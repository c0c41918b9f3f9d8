/* Bit-exact dequantization of one tensor of a decoded message (spec 12.2, R-12.6). */
#ifndef DEQUANT_H
#define DEQUANT_H

#include <stddef.h>
#include <stdint.h>

#include "avp_check.h"

/* Dequantizes tensor `index` of a message avp_check accepted. Returns 0 and a malloc'd buffer of
 * the values (little-endian dequant_dtype, C order), or an error code with err filled in
 * (QUANT_PARAMS for a non-finite scale or zero point). */
int avp_dequantize(const avp_msg *m, uint32_t index, uint8_t **out, size_t *out_len,
                   avp_error *err);
const char *avp_dequant_dtype_name(const avp_msg *m, uint32_t index);

#endif
