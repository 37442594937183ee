/* Training: the first merges on a small embedded corpus, agreement with a
 * naive trainer (recount every pair after every merge) on text generated
 * from a seed, determinism (same result twice and for any order of the
 * texts), the id layout and special tokens, the stopping rules, option
 * errors, and training from plain and JSON-lines files. */
#include <dirent.h>
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
#include "testdir.h"

static orc_tokenizer *train_one(const char *text, size_t vocab, bool specials) {
    orc_tokenizer_train_opts o = {.vocab_size = vocab, .no_specials = !specials};
    orc_error err = {0};
    size_t len = strlen(text);
    orc_tokenizer *t = orc_tokenizer_train(&text, &len, 1, &o, &err);
    if (!t) fail_msg("train: %s", err.msg);
    return t;
}

/* Merge r as "left right" token bytes. */
static const char *merge_str(const orc_tokenizer *t, size_t r, char *buf, size_t cap) {
    int32_t a, b, c;
    assert_int_equal(orc_tokenizer_merge(t, r, &a, &b, &c, NULL), ORC_OK);
    size_t la, lb;
    const char *pa = orc_tokenizer_id_to_token(t, a, &la), *pb = orc_tokenizer_id_to_token(t, b, &lb);
    snprintf(buf, cap, "%.*s %.*s", (int)la, pa, (int)lb, pb);
    assert_int_equal(c, 256 + (int32_t)r);
    return buf;
}

/* Hugging Face's course example: hug 10, pug 5, pun 12, bun 4, hugs 5. */
static void test_first_merges(void **state) {
    (void)state;
    static const struct {
        const char *w;
        int n;
    } words[] = {{"hug", 10}, {"pug", 5}, {"pun", 12}, {"bun", 4}, {"hugs", 5}};
    char text[512] = "";
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < words[i].n; k++) {
            strcat(text, words[i].w);
            strcat(text, "\n"); /* a newline is its own pre-token, so words stay bare */
        }
    orc_tokenizer *t = train_one(text, 256 + 4, false);
    assert_int_equal(orc_tokenizer_merge_count(t), 4);
    assert_int_equal(orc_tokenizer_vocab_size(t), 260);
    const char *want[] = {"u g", "u n", "h ug", "p un"};
    char buf[64];
    for (size_t r = 0; r < 4; r++) assert_string_equal(merge_str(t, r, buf, sizeof buf), want[r]);
    orc_tokenizer_free(t);

    /* With more room, merges stop once no pair occurs twice (min frequency 2). */
    t = train_one(text, 300, false);
    assert_true(orc_tokenizer_merge_count(t) < 300 - 256);
    assert_int_equal(orc_tokenizer_vocab_size(t), 256 + orc_tokenizer_merge_count(t));
    orc_tokenizer_free(t);
}

/* Ties go to the smallest (left, right) ids: "ab" and "cd" both occur 3 times. */
static void test_tie_break(void **state) {
    (void)state;
    orc_tokenizer *t = train_one("cd\ncd\ncd\nab\nab\nab\n", 258, false);
    char buf[64];
    assert_string_equal(merge_str(t, 0, buf, sizeof buf), "a b");
    assert_string_equal(merge_str(t, 1, buf, sizeof buf), "c d");
    orc_tokenizer_free(t);
}

/* ---- a naive reference trainer ---------------------------------------------------- */

typedef struct ref_word {
    int32_t sym[ORC_TOK_TRAIN_MAX_WORD];
    int len;
    int64_t freq;
} ref_word;

static int ref_words(const char *text, size_t n, ref_word **out) {
    ref_word *w = calloc(n + 1, sizeof *w);
    int nw = 0;
    for (size_t i = 0; i < n;) {
        size_t e = orc_pretok_next(ORC_PRETOK_SPLIT_DIGITS, text, n, i);
        assert_true(e - i <= ORC_TOK_TRAIN_MAX_WORD);
        int found = -1;
        for (int k = 0; k < nw && found < 0; k++) {
            if ((size_t)w[k].len != e - i) continue;
            int same = 1;
            for (size_t j = 0; j < e - i && same; j++) same = w[k].sym[j] == (uint8_t)text[i + j];
            if (same) found = k;
        }
        if (found < 0) {
            found = nw++;
            w[found].len = (int)(e - i);
            for (size_t j = 0; j < e - i; j++) w[found].sym[j] = (uint8_t)text[i + j];
        }
        w[found].freq++;
        i = e;
    }
    *out = w;
    return nw;
}

/* Recounts all pairs before every merge; a merge whose bytes already are a
 * token reuses its id. Returns the number of merges (a, b, c). */
static int ref_train(ref_word *w, int nw, int max_tokens, int32_t (*merges)[3]) {
    int V = max_tokens;
    int64_t *cnt = malloc((size_t)V * V * sizeof *cnt);
    static uint8_t bytes[4096][2 * ORC_TOK_TRAIN_MAX_WORD];
    static int blen[4096];
    assert_true(V <= 4096);
    for (int b = 0; b < 256; b++) {
        bytes[b][0] = (uint8_t)b;
        blen[b] = 1;
    }
    int n_tok = 256, m = 0;
    while (n_tok < max_tokens) {
        memset(cnt, 0, (size_t)V * V * sizeof *cnt);
        for (int k = 0; k < nw; k++)
            for (int j = 0; j + 1 < w[k].len; j++) cnt[(size_t)w[k].sym[j] * V + w[k].sym[j + 1]] += w[k].freq;
        int64_t best = 0;
        size_t bi = 0;
        for (size_t i = 0; i < (size_t)V * V; i++) /* row-major: the first maximum is the smallest pair */
            if (cnt[i] > best) {
                best = cnt[i];
                bi = i;
            }
        if (best < 2) break;
        int32_t a = (int32_t)(bi / V), b = (int32_t)(bi % V), c = -1;
        uint8_t cat[2 * ORC_TOK_TRAIN_MAX_WORD];
        memcpy(cat, bytes[a], (size_t)blen[a]);
        memcpy(cat + blen[a], bytes[b], (size_t)blen[b]);
        for (int i = 0; i < n_tok && c < 0; i++)
            if (blen[i] == blen[a] + blen[b] && memcmp(bytes[i], cat, (size_t)blen[i]) == 0) c = i;
        if (c < 0) {
            c = n_tok++;
            memcpy(bytes[c], cat, (size_t)(blen[a] + blen[b]));
            blen[c] = blen[a] + blen[b];
        }
        merges[m][0] = a;
        merges[m][1] = b;
        merges[m][2] = c;
        m++;
        for (int k = 0; k < nw; k++) {
            int o = 0;
            for (int j = 0; j < w[k].len;) {
                if (j + 1 < w[k].len && w[k].sym[j] == a && w[k].sym[j + 1] == b) {
                    w[k].sym[o++] = c;
                    j += 2;
                } else {
                    w[k].sym[o++] = w[k].sym[j++];
                }
            }
            w[k].len = o;
        }
    }
    free(cnt);
    return m;
}

/* Text from a small Zipf-like lexicon with spaces, punctuation, digits,
 * newlines, repeated letters (pairs like "aa" overlapping) and UTF-8. */
static char *gen_text(uint64_t seed, size_t n) {
    static const char *lex[] = {"the", "of", "and", "a", "to", "in", "is", "banana", "aaaa", "mississippi",
                                "don't", "x", "\xc3\xa9t\xc3\xa9", "hello", "world", "zz", "abab", "n"};
    static const char *sep[] = {" ", " ", " ", " ", ", ", ".\n", "  ", " 19", "!", "\t"};
    orc_rng r;
    orc_rng_init(&r, seed);
    char *t = malloc(n + 64);
    size_t o = 0;
    while (o < n) {
        uint32_t k = orc_rng_below(&r, 18);
        k = orc_rng_below(&r, k + 1); /* skews toward early words */
        const char *w = lex[k], *s = sep[orc_rng_below(&r, 10)];
        char rnd[8];
        if (orc_rng_below(&r, 3) == 0) { /* a random word over a small alphabet */
            uint32_t n = 2 + orc_rng_below(&r, 6);
            for (uint32_t i = 0; i < n; i++) rnd[i] = "aabcdeh"[orc_rng_below(&r, 7)];
            rnd[n] = '\0';
            w = rnd;
        }
        size_t lw = strlen(w), ls = strlen(s);
        if (o + lw + ls > n) break;
        memcpy(t + o, w, lw);
        o += lw;
        memcpy(t + o, s, ls);
        o += ls;
    }
    t[o] = '\0';
    return t;
}

static void test_matches_naive_trainer(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        char *text = gen_text(seed, 20000);
        const int M = 120;
        orc_tokenizer *t = train_one(text, 256 + M, false);
        ref_word *w;
        int nw = ref_words(text, strlen(text), &w);
        int32_t (*ref)[3] = malloc(sizeof(int32_t[3]) * 4 * M);
        int m = ref_train(w, nw, 256 + M, ref);
        assert_int_equal((int)orc_tokenizer_merge_count(t), m);
        assert_int_equal(m, M); /* the text supports them all */
        for (int k = 0; k < m; k++) {
            int32_t a, b, c;
            orc_tokenizer_merge(t, (size_t)k, &a, &b, &c, NULL);
            if (a != ref[k][0] || b != ref[k][1] || c != ref[k][2])
                fail_msg("seed %llu merge %d: got (%d, %d) -> %d, naive trainer (%d, %d) -> %d",
                         (unsigned long long)seed, k, a, b, c, ref[k][0], ref[k][1], ref[k][2]);
        }
        free(ref);
        free(w);
        free(text);
        orc_tokenizer_free(t);
    }
}

static void test_deterministic(void **state) {
    (void)state;
    char *a = gen_text(7, 30000), *b = gen_text(8, 30000);
    orc_tokenizer_train_opts o = {.vocab_size = 400};
    orc_error err = {0};
    const char *ab[] = {a, b}, *ba[] = {b, a};
    size_t lab[] = {strlen(a), strlen(b)}, lba[] = {strlen(b), strlen(a)};
    orc_tokenizer *t1 = orc_tokenizer_train(ab, lab, 2, &o, &err);
    orc_tokenizer *t2 = orc_tokenizer_train(ab, lab, 2, &o, &err);
    orc_tokenizer *t3 = orc_tokenizer_train(ba, lba, 2, &o, &err);
    assert_non_null(t1);
    assert_non_null(t2);
    assert_non_null(t3);
    char *j1 = orc_tokenizer_to_json(t1, &err), *j2 = orc_tokenizer_to_json(t2, &err),
         *j3 = orc_tokenizer_to_json(t3, &err);
    assert_string_equal(j1, j2);
    assert_string_equal(j1, j3);
    free(j1);
    free(j2);
    free(j3);
    orc_tokenizer_free(t1);
    orc_tokenizer_free(t2);
    orc_tokenizer_free(t3);
    free(a);
    free(b);
}

static void test_specials_and_layout(void **state) {
    (void)state;
    char *text = gen_text(3, 20000);
    orc_tokenizer *t = train_one(text, 300, true);
    assert_int_equal(orc_tokenizer_vocab_size(t), 300);
    size_t m = 300 - 256 - ORC_TOK_N_DEFAULT_SPECIALS; /* learned tokens */
    for (int b = 0; b < 256; b++) {
        size_t len;
        const char *p = orc_tokenizer_id_to_token(t, b, &len);
        assert_int_equal(len, 1);
        assert_int_equal((uint8_t)p[0], b);
        assert_false(orc_tokenizer_is_special(t, b));
    }
    for (size_t i = 0; i < ORC_TOK_N_DEFAULT_SPECIALS; i++) {
        int32_t id = orc_tokenizer_special_id(t, orc_tok_default_specials[i]);
        assert_int_equal(id, (int32_t)(256 + m + i));
        assert_true(orc_tokenizer_is_special(t, id));
        assert_string_equal(orc_tokenizer_id_to_token(t, id, NULL), orc_tok_default_specials[i]);
    }
    assert_int_equal(orc_tokenizer_special_id(t, ORC_TOK_USER), (int32_t)(256 + m + 4));
    assert_int_equal(orc_tokenizer_special_id(t, "<|nope|>"), -1);
    assert_null(orc_tokenizer_id_to_token(t, 300, NULL));
    assert_null(orc_tokenizer_id_to_token(t, -1, NULL));
    /* Merges never produce a special token, even from text full of them. */
    orc_tokenizer_free(t);
    free(text);
    const char *spam = "<|user|><|user|><|user|><|user|><|user|><|user|>";
    t = train_one(spam, 300, true);
    for (size_t r = 0; r < orc_tokenizer_merge_count(t); r++) {
        int32_t c;
        orc_tokenizer_merge(t, r, NULL, NULL, &c, NULL);
        assert_false(orc_tokenizer_is_special(t, c));
    }
    assert_int_equal(orc_tokenizer_special_id(t, ORC_TOK_USER), (int32_t)orc_tokenizer_vocab_size(t) - 8 + 4);

    /* Custom specials. */
    orc_tokenizer_free(t);
    const char *mine[] = {"<s>", "</s>"};
    orc_tokenizer_train_opts o = {.vocab_size = 270, .specials = mine, .n_specials = 2};
    orc_error err = {0};
    size_t len = strlen(spam);
    t = orc_tokenizer_train(&spam, &len, 1, &o, &err);
    assert_non_null(t);
    assert_int_equal(orc_tokenizer_special_id(t, "</s>"), (int32_t)orc_tokenizer_vocab_size(t) - 1);
    assert_int_equal(orc_tokenizer_special_id(t, ORC_TOK_USER), -1);
    orc_tokenizer_free(t);
}

static void test_option_errors(void **state) {
    (void)state;
    orc_error err = {0};
    orc_tokenizer_train_opts o = {.vocab_size = 263}; /* < 256 + 8 */
    assert_null(orc_tok_trainer_new(&o, &err));
    assert_int_equal(err.code, ORC_EINVAL);
    assert_non_null(strstr(err.msg, "vocab size"));
    orc_error_clear(&err);
    const char *dup[] = {"<a>", "<a>"};
    o = (orc_tokenizer_train_opts){.vocab_size = 300, .specials = dup, .n_specials = 2};
    assert_null(orc_tok_trainer_new(&o, &err));
    assert_int_equal(err.code, ORC_EINVAL);
    orc_error_clear(&err);
    o = (orc_tokenizer_train_opts){.vocab_size = 256, .no_specials = true};
    orc_tok_trainer *tr = orc_tok_trainer_new(&o, &err);
    assert_non_null(tr);
    assert_int_equal(orc_tok_trainer_add(tr, "hello hello", 11, &err), ORC_OK);
    orc_tokenizer *t = orc_tok_trainer_finish(tr, &err);
    assert_non_null(t);
    assert_int_equal(orc_tokenizer_merge_count(t), 0);
    orc_tokenizer_free(t);
    /* Empty input: a valid byte-only tokenizer. */
    orc_tok_trainer_free(tr);
    tr = orc_tok_trainer_new(&o, &err);
    t = orc_tok_trainer_finish(tr, &err);
    assert_non_null(t);
    assert_int_equal(orc_tokenizer_vocab_size(t), 256);
    orc_tokenizer_free(t);
    orc_tok_trainer_free(tr);
}

/* Very long pre-tokens are cut for training, so they cost little. */
static void test_long_word(void **state) {
    (void)state;
    size_t n = 1 << 20;
    char *text = malloc(n);
    for (size_t i = 0; i < n; i++) text[i] = "abcab"[i % 5];
    orc_tokenizer_train_opts o = {.vocab_size = 1000, .no_specials = true};
    orc_error err = {0};
    const char *p = text;
    orc_tokenizer *t = orc_tokenizer_train(&p, &n, 1, &o, &err);
    assert_non_null(t);
    assert_true(orc_tokenizer_merge_count(t) > 0);
    orc_tokenizer_free(t);
    free(text);
}

static void test_files(void **state) {
    (void)state;
    char dir[64];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "tok_train"), 0);
    char plain[128], jsonl[128], bad[128];
    snprintf(plain, sizeof plain, "%s/a.txt", dir);
    snprintf(jsonl, sizeof jsonl, "%s/b.jsonl", dir);
    snprintf(bad, sizeof bad, "%s/c.jsonl", dir);
    FILE *f = fopen(plain, "w");
    fputs("hug\nhug\npug\n", f);
    fclose(f);
    f = fopen(jsonl, "w");
    fputs("{\"text\": \"hug\\nhug\\n\", \"id\": 1}\n\n{\"text\": \"pug\\n\"}\n", f);
    fclose(f);
    f = fopen(bad, "w");
    fputs("{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n", f);
    fclose(f);

    orc_tokenizer_train_opts o = {.vocab_size = 300, .no_specials = true};
    orc_error err = {0};
    orc_tok_trainer *a = orc_tok_trainer_new(&o, &err), *b = orc_tok_trainer_new(&o, &err);
    assert_int_equal(orc_tok_trainer_add_file(a, plain, NULL, &err), ORC_OK);
    assert_int_equal(orc_tok_trainer_add_file(b, jsonl, "text", &err), ORC_OK);
    assert_int_equal(orc_tok_trainer_word_count(a), 3); /* hug, \n, pug */
    orc_tokenizer *ta = orc_tok_trainer_finish(a, &err), *tb = orc_tok_trainer_finish(b, &err);
    char *ja = orc_tokenizer_to_json(ta, &err), *jb = orc_tokenizer_to_json(tb, &err);
    assert_string_equal(ja, jb);
    free(ja);
    free(jb);
    orc_tokenizer_free(ta);
    orc_tokenizer_free(tb);

    assert_int_equal(orc_tok_trainer_add_file(a, bad, "text", &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "c.jsonl:2"));
    orc_error_clear(&err);
    assert_int_equal(orc_tok_trainer_add_file(a, "/nonexistent/x.txt", NULL, &err), ORC_EIO);
    orc_tok_trainer_free(a);
    orc_tok_trainer_free(b);
    orc_test_dir_remove(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_merges),   cmocka_unit_test(test_tie_break),
        cmocka_unit_test(test_matches_naive_trainer), cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_specials_and_layout), cmocka_unit_test(test_option_errors),
        cmocka_unit_test(test_long_word),      cmocka_unit_test(test_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
