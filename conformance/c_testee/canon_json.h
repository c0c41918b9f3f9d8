/* The canonical JSON form of a decoded message (TESTEE-PROTOCOL 1.2): the same document the
 * reference codec's avp_codec.to_canonical_json produces, tensor data as SHA-256 digests. */
#ifndef CANON_JSON_H
#define CANON_JSON_H

#include "avp_check.h"
#include "mini_json.h"

void canon_json(sbuf *out, const avp_msg *m);

#endif
