/* libFuzzer target for the tokenizer.json reader: every input goes through
 * orc_tokenizer_from_json. A rejected input must carry a code and a message.
 * An accepted one must encode and decode a fixed string (with NUL, invalid
 * UTF-8, digits and special-token text) back to itself (or, with ByteLevel's
 * add_prefix_space, to itself after one space), keep every id in range, and
 * survive our writer: the rewritten JSON must load and encode identically. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/tokenizer.h"

static const char TEXT[] = "Hello world 123, it's \xc3\xa9t\xc3\xa9!\n\t<|endoftext|><|user|>\0\xff\xfe  x";

static int32_t *encode(const orc_tokenizer *t, unsigned flags, size_t *n) {
    int32_t *ids = NULL;
    orc_error err = {0};
    if (orc_tokenizer_encode(t, TEXT, sizeof TEXT - 1, flags, &ids, n, &err) != ORC_OK) __builtin_trap();
    for (size_t i = 0; i < *n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= orc_tokenizer_vocab_size(t)) __builtin_trap();
    return ids;
}

static void check_round_trip(const orc_tokenizer *t) {
    size_t n = 0, len = 0;
    int32_t *ids = encode(t, 0, &n);
    char *out = NULL;
    orc_error err = {0};
    if (orc_tokenizer_decode(t, ids, n, &out, &len, &err) != ORC_OK) __builtin_trap();
    size_t want = sizeof TEXT - 1;
    bool same = len == want && memcmp(out, TEXT, want) == 0;
    bool prefixed = len == want + 1 && out[0] == ' ' && memcmp(out + 1, TEXT, want) == 0;
    if (!same && !prefixed) __builtin_trap();
    free(out);
    free(ids);
}

static void check_rewrite(const orc_tokenizer *t) {
    orc_error err = {0};
    char *json = orc_tokenizer_to_json(t, &err);
    if (!json) __builtin_trap();
    orc_tokenizer *u = orc_tokenizer_from_json(json, strlen(json), "rewritten", &err);
    if (!u) __builtin_trap();
    for (unsigned flags = 0; flags < 2; flags++) {
        size_t na, nb;
        int32_t *a = encode(t, flags, &na), *b = encode(u, flags, &nb);
        if (na != nb || memcmp(a, b, na * sizeof *a) != 0) __builtin_trap();
        free(a);
        free(b);
    }
    orc_tokenizer_free(u);
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    orc_error err = {0};
    orc_tokenizer *t = orc_tokenizer_from_json((const char *)data, size, "fuzz", &err);
    if (!t) {
        if (err.code == ORC_OK || err.msg[0] == '\0') __builtin_trap();
        return 0;
    }
    check_round_trip(t);
    check_rewrite(t);
    orc_tokenizer_free(t);
    return 0;
}
