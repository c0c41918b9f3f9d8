/* avp-c-testee: the C example implementation driven by avp-conform
 * (conformance/TESTEE-PROTOCOL.md).
 *
 *   avp-c-testee                 persistent tier: framed requests on stdin, responses on stdout
 *   avp-c-testee capabilities    print the start object
 *   avp-c-testee decode [OPTS]   simple tier: decode stdin, print canonical JSON or AVP-ERROR
 *
 *   avp-c-testee dequantize --tensor N [OPTS]   simple tier: dequantize (protocol 1.1)
 *
 * Decoding and dequantization are implemented, without zstd or the handshake: the capabilities
 * say so, and the harness skips the cases that need more. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "avp_check.h"
#include "canon_json.h"
#include "dequant.h"
#include "mini_json.h"

#define TESTEE_NAME "avp-c-testee"
#define TESTEE_VERSION "1.1.0"

/* TESTEE-PROTOCOL 1.5: every name in lower case. */
static const char CAPABILITIES[] =
    "{\"operations\":[\"decode\",\"dequantize\"],"
    "\"kinds\":[\"kv_cache\",\"hidden_state\",\"text\",\"hello\",\"accept\",\"error\"],"
    "\"dtypes\":[\"float32\",\"float16\",\"bfloat16\",\"float8_e4m3fn\",\"float8_e5m2\",\"int8\","
    "\"uint8\",\"int4\",\"uint4\",\"uint2\",\"int32\",\"int64\"],"
    "\"codecs\":[\"raw\"],"
    "\"features\":[\"unverified\",\"limits\",\"auth\",\"model_check\"]}";

/* Storage for the decoded key material of one request. */
typedef struct {
    avp_options opt;
    uint8_t key_id[64], key[256], model_id[32], tokenizer_id[32];
} request_options;

static int set_limit(avp_limits *lim, const char *name, size_t name_len, uint64_t value) {
    static const struct {
        const char *name;
        size_t offset;
    } fields[] = {
        {"max_message_bytes", offsetof(avp_limits, max_message_bytes)},
        {"max_header_bytes", offsetof(avp_limits, max_header_bytes)},
        {"max_entries", offsetof(avp_limits, max_entries)},
        {"max_layers", offsetof(avp_limits, max_layers)},
        {"max_tensors", offsetof(avp_limits, max_tensors)},
        {"max_rank", offsetof(avp_limits, max_rank)},
        {"max_tensor_bytes", offsetof(avp_limits, max_tensor_bytes)},
        {"max_buffer_bytes", offsetof(avp_limits, max_buffer_bytes)},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (strlen(fields[i].name) == name_len && !memcmp(fields[i].name, name, name_len)) {
            *(uint64_t *)((char *)lim + fields[i].offset) = value;
            return 0;
        }
    return -1;
}

static void init_options(request_options *r) {
    memset(r, 0, sizeof *r);
    r->opt.verify = 1;
    avp_default_limits(&r->opt.limits);
}

/* Reads the TESTEE-PROTOCOL 1.3 context object. Returns 0, or -1 when it is malformed. */
static int parse_context(const char *ctx, size_t len, request_options *r) {
    json_span v, k, obj;
    size_t pos;
    init_options(r);
    if (!len) return 0;
    if (json_get(ctx, len, "verify", &v) == 0) r->opt.verify = !json_is_false(v);
    if (json_get(ctx, len, "require_auth", &v) == 0) r->opt.require_auth = json_is_true(v);
    if (json_get(ctx, len, "limits", &obj) == 0)
        for (pos = 0; json_next_member(obj, &pos, &k, &v) == 1;) {
            uint64_t n;
            if (json_u64(v, &n) || set_limit(&r->opt.limits, k.p, k.n, n)) return -1;
        }
    if (json_get(ctx, len, "keys", &obj) == 0) {
        pos = 0;
        if (json_next_member(obj, &pos, &k, &v) == 1) { /* this testee holds one key */
            int a = hex_decode(k.p, k.n, r->key_id, sizeof r->key_id);
            int b = hex_decode(v.p + 1, v.n - 2, r->key, sizeof r->key);
            if (a < 0 || b < 0) return -1;
            r->opt.key_id = r->key_id;
            r->opt.key_id_len = (size_t)a;
            r->opt.key = r->key;
            r->opt.key_len = (size_t)b;
        }
    }
    if (json_get(ctx, len, "expected_model_id", &v) == 0 && v.p[0] == '"') {
        if (hex_decode(v.p + 1, v.n - 2, r->model_id, 32) != 32) return -1;
        r->opt.expected_model_id = r->model_id;
    }
    if (json_get(ctx, len, "expected_tokenizer_id", &v) == 0 && v.p[0] == '"') {
        if (hex_decode(v.p + 1, v.n - 2, r->tokenizer_id, 32) != 32) return -1;
        r->opt.expected_tokenizer_id = r->tokenizer_id;
    }
    return 0;
}

/* One request: decode (tensor < 0), or decode then dequantize tensor `tensor`. On success out
 * gets the canonical JSON (decode) or the JSON members and *values the bytes (dequantize).
 * Returns 0, or the error code with err filled in. */
static int run_request(const uint8_t *msg, size_t len, const request_options *r, long long tensor,
                       sbuf *out, uint8_t **values, size_t *values_len, avp_error *err) {
    avp_msg m;
    int rc = avp_check(msg, len, &r->opt, &m, err);
    if (!rc && tensor < 0) canon_json(out, &m);
    if (!rc && tensor >= 0) {
        rc = avp_dequantize(&m, (uint32_t)tensor, values, values_len, err);
        {
            if (!rc) {
                const avp_tensor *t = &m.tensors[tensor];
                sb_printf(out, "\"dtype\":\"%s\",\"shape\":[", avp_dequant_dtype_name(&m, (uint32_t)tensor));
                for (int a = 0; a < t->rank; a++)
                    sb_printf(out, "%s%llu", a ? "," : "", (unsigned long long)avp_dim(t, a));
                sb_puts(out, "]");
            }
        }
    }
    avp_free(&m);
    return rc;
}

/* ---- persistent tier ------------------------------------------------------------------------ */

static int read_exact(void *dst, size_t n) { return fread(dst, 1, n, stdin) == n ? 0 : -1; }

static void write_frame(const sbuf *json, const uint8_t *payload, uint64_t payload_len) {
    uint8_t len4[4], len8[8];
    for (int i = 0; i < 4; i++) len4[i] = (uint8_t)(json->n >> (8 * i));
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(payload_len >> (8 * i));
    fwrite(len4, 1, 4, stdout);
    fwrite(json->p, 1, json->n, stdout);
    fwrite(len8, 1, 8, stdout);
    if (payload_len) fwrite(payload, 1, payload_len, stdout);
    fflush(stdout);
}

static int serve(void) {
    sbuf out = {0};
    sb_puts(&out, "{\"avp_testee\":1,\"minor\":1,\"name\":\"" TESTEE_NAME "\",\"version\":\"" TESTEE_VERSION
                  "\",\"capabilities\":");
    sb_puts(&out, CAPABILITIES);
    sb_puts(&out, "}");
    write_frame(&out, NULL, 0);
    for (;;) {
        uint8_t len4[4], len8[8];
        uint64_t jlen = 0, plen = 0;
        if (read_exact(len4, 4)) break; /* end of stdin: done */
        for (int i = 0; i < 4; i++) jlen |= (uint64_t)len4[i] << (8 * i);
        if (jlen > (1u << 26)) return 1;
        char *req = malloc(jlen + 1);
        if (!req || read_exact(req, jlen) || read_exact(len8, 8)) return 1;
        for (int i = 0; i < 8; i++) plen |= (uint64_t)len8[i] << (8 * i);
        uint8_t *payload = malloc(plen ? plen : 1);
        if (!payload || read_exact(payload, plen)) return 1;

        json_span id = {"null", 4}, op = {"\"\"", 2}, ctx = {"", 0}, tv = {"", 0};
        json_get(req, jlen, "id", &id);
        json_get(req, jlen, "op", &op);
        json_get(req, jlen, "context", &ctx);
        uint64_t tensor = 0;
        int dq = json_str_eq(op, "dequantize");
        if (dq && (json_get(req, jlen, "tensor", &tv) || json_u64(tv, &tensor) || tensor > 0xFFFFFFFFu))
            dq = -1;
        out.n = 0;
        sb_puts(&out, "{\"id\":");
        sb_put(&out, id.p, id.n);
        if (json_str_eq(op, "quit")) {
            free(req);
            free(payload);
            break;
        }
        request_options r;
        avp_error err;
        sbuf body = {0};
        uint8_t *values = NULL;
        size_t values_len = 0;
        if (!json_str_eq(op, "decode") && dq != 1) {
            sb_puts(&out, ",\"status\":\"unsupported\",\"reason\":\"only decode and dequantize "
                          "are implemented\"}");
        } else if (parse_context(ctx.p, ctx.n, &r)) {
            sb_puts(&out, ",\"status\":\"unsupported\",\"reason\":\"unreadable context\"}");
        } else if (run_request(payload, plen, &r, dq == 1 ? (long long)tensor : -1, &body, &values,
                               &values_len, &err) == 0) {
            sb_puts(&out, dq == 1 ? ",\"status\":\"ok\"," : ",\"status\":\"ok\",\"json\":");
            sb_put(&out, body.p, body.n);
            sb_puts(&out, "}");
        } else if (err.code == E_UNSUPPORTED) {
            sb_printf(&out, ",\"status\":\"unsupported\",\"reason\":\"%s\"}", err.path);
        } else {
            sb_printf(&out, ",\"status\":\"error\",\"code\":%d,\"name\":\"%s\",\"offset\":%llu,"
                            "\"path\":\"%s\"}",
                      err.code, avp_error_name(err.code), (unsigned long long)err.offset, err.path);
        }
        write_frame(&out, values, values_len);
        free(values);
        free(body.p);
        free(req);
        free(payload);
    }
    free(out.p);
    return 0;
}

/* ---- simple tier ------------------------------------------------------------------------------ */

/* decode [OPTIONS], or dequantize --tensor N [OPTIONS] (TESTEE-PROTOCOL 2.1, 2.3). */
static int simple_request(int argc, char **argv) {
    request_options r;
    long long tensor = -1;
    int first = 2;
    init_options(&r);
    if (!strcmp(argv[1], "dequantize")) {
        char *end = NULL;
        if (argc < 4 || strcmp(argv[2], "--tensor")) return 2;
        tensor = strtoll(argv[3], &end, 10);
        if (*end || tensor < 0 || tensor > 0xFFFFFFFFll) return 2;
        first = 4;
    }
    for (int i = first; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : "";
        const char *eq = strchr(val, '=');
        if (!strcmp(a, "--no-verify")) r.opt.verify = 0;
        else if (!strcmp(a, "--require-auth")) r.opt.require_auth = 1;
        else if (!strcmp(a, "--limit") && eq) {
            i++;
            if (set_limit(&r.opt.limits, val, (size_t)(eq - val), strtoull(eq + 1, NULL, 10))) return 2;
        } else if (!strcmp(a, "--key") && eq) {
            int n1 = hex_decode(val, (size_t)(eq - val), r.key_id, sizeof r.key_id);
            int n2 = hex_decode(eq + 1, strlen(eq + 1), r.key, sizeof r.key);
            i++;
            if (n1 < 0 || n2 < 0) return 2;
            r.opt.key_id = r.key_id, r.opt.key_id_len = (size_t)n1;
            r.opt.key = r.key, r.opt.key_len = (size_t)n2;
        } else if (!strcmp(a, "--expected-model-id") && i + 1 < argc) {
            i++;
            if (hex_decode(val, strlen(val), r.model_id, 32) != 32) return 2;
            r.opt.expected_model_id = r.model_id;
        } else if (!strcmp(a, "--expected-tokenizer-id") && i + 1 < argc) {
            i++;
            if (hex_decode(val, strlen(val), r.tokenizer_id, 32) != 32) return 2;
            r.opt.expected_tokenizer_id = r.tokenizer_id;
        } else if (!strcmp(a, "--local")) {
            puts("handshake resolution is not implemented");
            return 4;
        } else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    size_t cap = 1 << 16, len = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + len, 1, cap - len, stdin)) > 0) {
        len += got;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    if (!buf) return 2;
    sbuf out = {0};
    avp_error err;
    uint8_t *values = NULL;
    size_t values_len = 0;
    int rc = run_request(buf, len, &r, tensor, &out, &values, &values_len, &err);
    if (!rc && tensor < 0) fwrite(out.p, 1, out.n, stdout);
    else if (!rc) fwrite(values, 1, values_len, stdout);
    else if (err.code == E_UNSUPPORTED) puts(err.path);
    else
        printf("AVP-ERROR %d %s %llu %s\n", err.code, avp_error_name(err.code),
               (unsigned long long)err.offset, err.path[0] ? err.path : "-");
    free(buf);
    free(out.p);
    free(values);
    return !rc ? 0 : err.code == E_UNSUPPORTED ? 4 : 3;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "serve")) return serve();
    if (!strcmp(argv[1], "capabilities")) {
        printf("{\"avp_testee\":1,\"minor\":1,\"name\":\"%s\",\"version\":\"%s\",\"capabilities\":%s}\n",
               TESTEE_NAME, TESTEE_VERSION, CAPABILITIES);
        return 0;
    }
    if (!strcmp(argv[1], "decode") || !strcmp(argv[1], "dequantize")) return simple_request(argc, argv);
    if (!strcmp(argv[1], "encode")) {
        puts("encoding is not implemented");
        return 4;
    }
    fprintf(stderr, "usage: %s [serve | capabilities | decode [OPTIONS] | dequantize --tensor N "
                    "[OPTIONS]]\n", argv[0]);
    return 2;
}
