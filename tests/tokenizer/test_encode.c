/* Encoding and decoding: the exact round trip for random bytes (NULs,
 * invalid UTF-8, long runs) drawn from a seed, agreement with a naive
 * rank-by-rank BPE, special tokens only on request, decode's range check,
 * and the same output when many threads share one tokenizer. */
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "orchard/rng.h"
#include "orchard/tokenizer.h"

static orc_tokenizer *g_tok; /* trained once on generated text */

static char *gen_text(uint64_t seed, size_t n) {
    static const char *lex[] = {"the", "of", "and", "a", "to", "in", "is", "banana", "aaaa", "mississippi", "don't",
                                "\xc3\xa9t\xc3\xa9", "hello", "world", "zz", "abab", "<|user|>", "2024"};
    static const char *sep[] = {" ", " ", " ", ", ", ".\n", "  ", "!", "\t", " \xe2\x80\x94 "};
    orc_rng r;
    orc_rng_init(&r, seed);
    char *t = malloc(n + 64);
    size_t o = 0;
    while (o < n) {
        const char *w = lex[orc_rng_below(&r, orc_rng_below(&r, 18) + 1)], *s = sep[orc_rng_below(&r, 9)];
        size_t lw = strlen(w), ls = strlen(s);
        if (o + lw + ls > n) break;
        memcpy(t + o, w, lw);
        memcpy(t + o + lw, s, ls);
        o += lw + ls;
    }
    t[o] = '\0';
    return t;
}

static int setup(void **state) {
    (void)state;
    char *text = gen_text(11, 50000);
    orc_tokenizer_train_opts o = {.vocab_size = 600};
    orc_error err = {0};
    size_t len = strlen(text);
    const char *p = text;
    g_tok = orc_tokenizer_train(&p, &len, 1, &o, &err);
    free(text);
    return g_tok ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    orc_tokenizer_free(g_tok);
    return 0;
}

static void round_trip(const orc_tokenizer *t, const char *text, size_t len, unsigned flags) {
    int32_t *ids = NULL;
    size_t n = 0, back_len = 0;
    char *back = NULL;
    orc_error err = {0};
    assert_int_equal(orc_tokenizer_encode(t, text, len, flags, &ids, &n, &err), ORC_OK);
    assert_non_null(ids);
    assert_true(n <= len + 1);
    assert_int_equal(orc_tokenizer_decode(t, ids, n, &back, &back_len, &err), ORC_OK);
    assert_int_equal(back_len, len);
    if (len) assert_memory_equal(back, text, len);
    assert_int_equal(back[len], '\0');
    free(ids);
    free(back);
}

static void test_round_trip_random_bytes(void **state) {
    (void)state;
    orc_rng r;
    orc_rng_init(&r, 2024);
    char *buf = malloc(1 << 16);
    for (int k = 0; k < 300; k++) {
        size_t len = orc_rng_below(&r, k < 100 ? 64 : 1 << 14);
        uint32_t alphabet = k % 3 == 0 ? 256 : k % 3 == 1 ? 4 : 40; /* raw bytes, tiny, or text-like */
        for (size_t i = 0; i < len; i++) {
            uint32_t v = orc_rng_below(&r, alphabet);
            static const char tiny[] = "a \0\xff", extra[] = " \n.0'\x80\xc3\xa9\x00z!,t5";
            if (alphabet == 256)
                buf[i] = (char)v;
            else if (alphabet == 4)
                buf[i] = tiny[v];
            else
                buf[i] = v < 26 ? (char)('a' + v) : extra[v - 26];
        }
        round_trip(g_tok, buf, len, 0);
        round_trip(g_tok, buf, len, ORC_TOK_ENCODE_SPECIAL);
    }
    free(buf);
    round_trip(g_tok, "", 0, 0);
}

static void test_round_trip_long_runs(void **state) {
    (void)state;
    size_t n = 1 << 20;
    char *buf = malloc(n);
    const char fills[] = {'a', ' ', '\0', '7', '\xff', '!'};
    for (size_t f = 0; f < sizeof fills; f++) {
        memset(buf, fills[f], n);
        round_trip(g_tok, buf, n, 0);
    }
    for (size_t i = 0; i < n; i++) buf[i] = "ab"[i % 2]; /* one 1 MB pre-token */
    round_trip(g_tok, buf, n, 0);
    free(buf);
}

/* Naive BPE: repeatedly merge every occurrence of the lowest-ranked pair. */
static size_t naive_word(const orc_tokenizer *t, const uint8_t *w, size_t len, int32_t *out) {
    size_t n = len;
    for (size_t i = 0; i < len; i++) out[i] = orc_tokenizer_token_to_id(t, (const char *)&w[i], 1);
    size_t nm = orc_tokenizer_merge_count(t);
    for (;;) {
        size_t best = nm;
        for (size_t i = 0; i + 1 < n; i++)
            for (size_t r = 0; r < best; r++) {
                int32_t a, b;
                orc_tokenizer_merge(t, r, &a, &b, NULL, NULL);
                if (a == out[i] && b == out[i + 1]) {
                    best = r;
                    break;
                }
            }
        if (best == nm) return n;
        int32_t a, b, c;
        orc_tokenizer_merge(t, best, &a, &b, &c, NULL);
        size_t o = 0;
        for (size_t i = 0; i < n;) {
            if (i + 1 < n && out[i] == a && out[i + 1] == b) {
                out[o++] = c;
                i += 2;
            } else {
                out[o++] = out[i++];
            }
        }
        n = o;
    }
}

static void test_matches_naive_bpe(void **state) {
    (void)state;
    char *text = gen_text(99, 6000);
    size_t len = strlen(text);
    int32_t *ids, *want = malloc((len + 1) * sizeof *want);
    size_t n, nw = 0;
    orc_error err = {0};
    assert_int_equal(orc_tokenizer_encode(g_tok, text, len, 0, &ids, &n, &err), ORC_OK);
    for (size_t i = 0; i < len;) {
        size_t e = orc_pretok_next(orc_tokenizer_pretok_mode(g_tok), text, len, i);
        nw += naive_word(g_tok, (const uint8_t *)text + i, e - i, want + nw);
        i = e;
    }
    assert_int_equal(n, nw);
    assert_memory_equal(ids, want, n * sizeof *ids);
    assert_true(n < len / 2); /* the merges do compress this text */
    free(ids);
    free(want);
    free(text);
}

static void test_special_tokens(void **state) {
    (void)state;
    const char *text = "<|user|>hi<|end|><|assistant|>";
    int32_t *ids;
    size_t n;
    orc_error err = {0};
    int32_t user = orc_tokenizer_special_id(g_tok, ORC_TOK_USER), end = orc_tokenizer_special_id(g_tok, ORC_TOK_END),
            asst = orc_tokenizer_special_id(g_tok, ORC_TOK_ASSISTANT);
    assert_int_equal(orc_tokenizer_encode(g_tok, text, strlen(text), ORC_TOK_ENCODE_SPECIAL, &ids, &n, &err), ORC_OK);
    assert_true(n >= 4);
    assert_int_equal(ids[0], user);
    assert_int_equal(ids[n - 2], end);
    assert_int_equal(ids[n - 1], asst);
    for (size_t i = 1; i + 2 < n; i++) assert_false(orc_tokenizer_is_special(g_tok, ids[i]));
    free(ids);
    /* Without the flag the same text is ordinary bytes. */
    assert_int_equal(orc_tokenizer_encode(g_tok, text, strlen(text), 0, &ids, &n, &err), ORC_OK);
    for (size_t i = 0; i < n; i++) assert_false(orc_tokenizer_is_special(g_tok, ids[i]));
    free(ids);
    /* Longest match wins: "<|end_of_text|>" rather than a prefix. */
    assert_int_equal(orc_tokenizer_encode(g_tok, "<|end_of_text|>", 15, ORC_TOK_ENCODE_SPECIAL, &ids, &n, &err),
                     ORC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], orc_tokenizer_special_id(g_tok, ORC_TOK_END_OF_TEXT));
    free(ids);
    /* Decoding a special gives its text. */
    char *out;
    size_t len;
    int32_t two[] = {user, end};
    assert_int_equal(orc_tokenizer_decode(g_tok, two, 2, &out, &len, &err), ORC_OK);
    assert_string_equal(out, "<|user|><|end|>");
    free(out);
}

static void test_decode_errors(void **state) {
    (void)state;
    char *out = (char *)1;
    size_t len;
    orc_error err = {0};
    int32_t bad[] = {5, (int32_t)orc_tokenizer_vocab_size(g_tok)};
    assert_int_equal(orc_tokenizer_decode(g_tok, bad, 2, &out, &len, &err), ORC_ERANGE);
    assert_null(out);
    assert_non_null(strstr(err.msg, "position 1"));
    int32_t neg = -3;
    orc_error_clear(&err);
    assert_int_equal(orc_tokenizer_decode(g_tok, &neg, 1, &out, &len, &err), ORC_ERANGE);
    orc_error_clear(&err);
    assert_int_equal(orc_tokenizer_decode(g_tok, NULL, 0, &out, &len, &err), ORC_OK);
    assert_int_equal(len, 0);
    free(out);
    int32_t *ids;
    size_t n;
    assert_int_equal(orc_tokenizer_encode(NULL, "x", 1, 0, &ids, &n, &err), ORC_EINVAL);
}

static void test_lookups(void **state) {
    (void)state;
    for (int32_t id = 0; id < (int32_t)orc_tokenizer_vocab_size(g_tok); id++) {
        size_t len;
        const char *p = orc_tokenizer_id_to_token(g_tok, id, &len);
        assert_non_null(p);
        assert_int_equal(orc_tokenizer_token_to_id(g_tok, p, len), id);
    }
    assert_int_equal(orc_tokenizer_token_to_id(g_tok, "no such token at all", 20), -1);
}

/* One tokenizer, many threads: the same ids as one thread. */
static void test_threads(void **state) {
    (void)state;
    enum { N = 12 };
    char *texts[N];
    int32_t *seq[N], *par[N];
    size_t nseq[N], npar[N];
    orc_error err = {0};
    for (int i = 0; i < N; i++) {
        texts[i] = gen_text(500 + (uint64_t)i, 20000);
        assert_int_equal(orc_tokenizer_encode(g_tok, texts[i], strlen(texts[i]), 0, &seq[i], &nseq[i], &err), ORC_OK);
    }
    omp_set_num_threads(3);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) orc_tokenizer_encode(g_tok, texts[i], strlen(texts[i]), 0, &par[i], &npar[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_int_equal(nseq[i], npar[i]);
        assert_memory_equal(seq[i], par[i], nseq[i] * sizeof(int32_t));
        free(seq[i]);
        free(par[i]);
        free(texts[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_random_bytes), cmocka_unit_test(test_round_trip_long_runs),
        cmocka_unit_test(test_matches_naive_bpe),       cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_decode_errors),           cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
