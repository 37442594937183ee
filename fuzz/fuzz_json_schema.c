/* libFuzzer target for constrained JSON decoding (orchard/constrain.h): the
 * input is a schema, a NUL byte, then output bytes. A schema that does not
 * compile must say why ("json schema ..."); one that compiles gives a
 * matcher that is fed the output byte by byte: allowed() must agree with
 * advance(), a refused byte must leave the state as it was, the bytes to
 * completion must be 0 exactly when a value is done, and every prefix that
 * the matcher calls done must be JSON that jansson parses (the guarantee
 * the server gives clients). Freeing must leave nothing behind. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/constrain.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t slen = nul ? (size_t)(nul - data) : size;
    const char *out = nul ? (const char *)nul + 1 : "";
    size_t olen = nul ? size - slen - 1 : 0;
    orc_json_schema_opts o;
    orc_json_schema_opts_default(&o);
    o.strict_objects = slen % 2 == 0; /* both object defaults */
    o.max_string = 24;
    orc_error err = {0};
    orc_json_schema *s = slen == 0 ? orc_json_schema_any(size % 3 == 0, &o, &err)
                                   : orc_json_schema_compile((const char *)data, slen, &o, &err);
    if (!s) {
        if (strncmp(err.msg, "json schema", 11) != 0) __builtin_trap();
        return 0;
    }
    orc_json_matcher *m = orc_json_matcher_new(s, &err);
    if (!m) __builtin_trap();
    for (size_t i = 0; i < olen; i++) {
        int64_t before = orc_json_matcher_min_remaining(m);
        bool allowed = orc_json_matcher_allowed(m, out + i, 1);
        bool took = orc_json_matcher_advance(m, out + i, 1);
        if (allowed != took) __builtin_trap();
        if (!took) {
            if (orc_json_matcher_min_remaining(m) != before) __builtin_trap();
            continue;
        }
        /* Refused bytes were skipped: the output so far is what was taken. */
        (void)before;
    }
    orc_json_matcher_reset(m);
    /* The taken bytes again, as one prefix; done prefixes must parse. */
    char *buf = malloc(olen + 1);
    size_t n = 0;
    for (size_t i = 0; buf && i < olen; i++) {
        if (!orc_json_matcher_advance(m, out + i, 1)) continue;
        buf[n++] = out[i];
        bool done = orc_json_matcher_done(m);
        if (done != (orc_json_matcher_min_remaining(m) == 0)) __builtin_trap();
        if (done) {
            json_error_t je;
            json_t *v = json_loadb(buf, n, JSON_DECODE_ANY, &je);
            if (!v) __builtin_trap();
            json_decref(v);
        }
    }
    free(buf);
    orc_json_matcher_free(m);
    orc_json_schema_free(s);
    return 0;
}
