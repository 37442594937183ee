/* Generation and evaluation on a tiny random model with a tokenizer trained
 * here: greedy with the KV cache equals greedy recomputing the whole
 * sequence, cached logits match a full forward, reuse of a cached prefix,
 * stop ids, stop strings split across tokens (cut from the text and never
 * streamed), max tokens, a full context, a prompt longer than the context,
 * streamed text equal to the result, UTF-8 completeness, the same sampled
 * text for 1 and 3 threads, eval against orc_llm_loss, and a model
 * directory whose tokenizer outgrows the model. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "llm_support.h"
#include "orchard/generate.h"
#include "orchard/ops.h"
#include "testdir.h"

typedef struct fixture {
    orc_tokenizer *tok;
    orc_llm *m;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->tok = orc_test_corpus_tokenizer();
    /* a padded vocabulary: ids without text exist */
    orc_llm_config c = orc_test_llm_config(32, 2, 64, (int64_t)orc_tokenizer_vocab_size(f->tok) + 4, 64);
    /* Larger weights than training's init: peaked logits, so greedy paths
     * are far from ties and float rounding cannot flip them. */
    f->m = orc_test_llm(&c, 3, 40.0f);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    orc_llm_free(f->m);
    orc_tokenizer_free(f->tok);
    free(f);
    return 0;
}

static int32_t *encode(const fixture *f, const char *text, size_t *n) {
    int32_t *ids = NULL;
    assert_int_equal(orc_tokenizer_encode(f->tok, text, strlen(text), 0, &ids, n, NULL), ORC_OK);
    return ids;
}

static orc_gen_opts greedy(int64_t max_tokens) {
    orc_gen_opts o;
    orc_gen_opts_default(&o);
    o.sampler.temperature = 0.0f;
    o.max_tokens = max_tokens;
    return o;
}

static void test_cache_equals_recompute(void **state) {
    fixture *f = *state;
    orc_error err = {0};
    orc_generator *g = orc_generator_new(f->m, f->tok, 0, &err);
    assert_non_null(g);
    assert_int_equal(orc_generator_context(g), 64);
    size_t n;
    int32_t *p = encode(f, "The whale", &n);
    orc_gen_opts o = greedy(40);
    orc_gen_result a, b;
    assert_int_equal(orc_generate(g, p, n, &o, &a, &err), ORC_OK);
    o.no_cache = true;
    assert_int_equal(orc_generate(g, p, n, &o, &b, &err), ORC_OK);
    assert_int_equal(a.n_ids, 40);
    assert_int_equal(a.stop, ORC_GEN_MAX_TOKENS);
    assert_int_equal(a.n_ids, b.n_ids);
    assert_memory_equal(a.ids, b.ids, a.n_ids * sizeof(int32_t));
    assert_string_equal(a.text, b.text);
    assert_int_equal(a.prompt_tokens, (int64_t)n);
    assert_int_equal(a.decode_tokens, 39);
    /* No id beyond the tokenizer's vocabulary is ever produced. */
    for (size_t i = 0; i < a.n_ids; i++) assert_true(a.ids[i] < (int32_t)orc_tokenizer_vocab_size(f->tok));
    int distinct = 0;
    for (size_t i = 1; i < a.n_ids; i++) distinct += a.ids[i] != a.ids[0];
    assert_true(distinct > 0); /* a degenerate model would make the check vacuous */
    orc_gen_result_free(&a);
    orc_gen_result_free(&b);
    free(p);
    orc_generator_free(g);
}

/* The logits of incremental feeding match one full forward, position by position. */
static void test_cached_logits_match_full_forward(void **state) {
    fixture *f = *state;
    size_t n;
    int32_t *p = encode(f, "The captain stood on the deck", &n);
    assert_true(n >= 4);
    const int64_t V = f->m->cfg.vocab_size;
    orc_arena *arena = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, arena, 0);
    ctx.no_grad = true;
    orc_tensor *ids = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, (int64_t)n));
    memcpy(ids->data, p, n * sizeof(int32_t));
    orc_tensor *full = orc_llm_forward(&ctx, f->m, ids, NULL);
    assert_non_null(full);
    orc_generator *g = orc_generator_new(f->m, f->tok, 32, NULL);
    assert_non_null(g);
    const float *l = orc_generator_feed(g, p, 2, NULL); /* a batched prefill, then single tokens */
    for (size_t t = 1; t < n; t++) {
        if (t >= 2) l = orc_generator_feed(g, p + t, 1, NULL);
        assert_non_null(l);
        const float *want = orc_f32(full) + (int64_t)t * V;
        for (int64_t i = 0; i < V - 4; i++) assert_float_equal(l[i], want[i], 1e-3f * (1.0f + fabsf(want[i])));
        for (int64_t i = V - 4; i < V; i++) assert_true(isinf(l[i]) && l[i] < 0); /* ids without text */
    }
    size_t held;
    orc_generator_tokens(g, &held);
    assert_int_equal(held, n);
    orc_error err = {0};
    assert_null(orc_generator_feed(g, p, 32, &err)); /* past the context */
    assert_int_equal(err.code, ORC_ERANGE);
    orc_generator_free(g);
    orc_arena_destroy(arena);
    free(p);
}

static void test_prefix_reuse(void **state) {
    fixture *f = *state;
    orc_generator *g = orc_generator_new(f->m, f->tok, 0, NULL);
    size_t n;
    int32_t *p = encode(f, "The sea", &n);
    orc_gen_opts o = greedy(8);
    orc_gen_result a, b, c;
    assert_int_equal(orc_generate(g, p, n, &o, &a, NULL), ORC_OK);
    assert_int_equal(a.prefilled, (int64_t)n);
    /* Continue the conversation: the prompt now holds the reply and more. */
    int32_t *p2 = malloc((n + a.n_ids + n) * sizeof(int32_t));
    memcpy(p2, p, n * sizeof(int32_t));
    memcpy(p2 + n, a.ids, a.n_ids * sizeof(int32_t));
    memcpy(p2 + n + a.n_ids, p, n * sizeof(int32_t));
    size_t n2 = n + a.n_ids + n;
    assert_int_equal(orc_generate(g, p2, n2, &o, &b, NULL), ORC_OK);
    assert_true(b.prefilled < (int64_t)n2);
    assert_int_equal(b.prefilled, (int64_t)(n + 1)); /* the last sampled id was never fed */
    o.no_cache = true;
    assert_int_equal(orc_generate(g, p2, n2, &o, &c, NULL), ORC_OK);
    assert_int_equal(b.n_ids, c.n_ids);
    assert_memory_equal(b.ids, c.ids, b.n_ids * sizeof(int32_t));
    orc_gen_result_free(&a);
    orc_gen_result_free(&b);
    orc_gen_result_free(&c);
    free(p);
    free(p2);
    orc_generator_free(g);
}

typedef struct stream {
    char buf[4096];
    size_t len;
    int calls;
    int stop_after; /* 0: never */
} stream;

static bool on_token(void *user, int32_t id, const char *text, size_t len) {
    (void)id;
    stream *s = user;
    memcpy(s->buf + s->len, text, len);
    s->len += len;
    s->buf[s->len] = 0;
    s->calls++;
    return !(s->stop_after && s->calls >= s->stop_after);
}

static void test_stop_strings_and_ids(void **state) {
    fixture *f = *state;
    orc_generator *g = orc_generator_new(f->m, f->tok, 0, NULL);
    size_t n;
    int32_t *p = encode(f, "The ship", &n);
    orc_gen_opts o = greedy(30);
    orc_gen_result full;
    assert_int_equal(orc_generate(g, p, n, &o, &full, NULL), ORC_OK);
    /* Token boundaries in the text; pick a 3-byte window that straddles one. */
    size_t bound[64], nb = 0, off = 0;
    for (size_t i = 0; i < full.n_ids; i++) {
        size_t len;
        orc_tokenizer_id_to_token(f->tok, full.ids[i], &len);
        off += len;
        bound[nb++] = off;
    }
    assert_int_equal(off, full.text_len);
    size_t at = 0;
    for (size_t i = 2; i < nb && !at; i++)
        if (bound[i] - bound[i - 1] >= 2 && bound[i] + 2 <= full.text_len) at = bound[i] - 1;
    assert_true(at > 0);
    char stop[4];
    memcpy(stop, full.text + at, 3);
    stop[3] = 0;
    const char *first = strstr(full.text, stop);
    assert_non_null(first);
    const size_t cut = (size_t)(first - full.text);

    const char *stops[2] = {"never appears \x01", stop};
    o.stop_strings = stops;
    o.n_stop_strings = 2;
    stream s = {0};
    o.on_token = on_token;
    o.user = &s;
    orc_gen_result r;
    assert_int_equal(orc_generate(g, p, n, &o, &r, NULL), ORC_OK);
    assert_int_equal(r.stop, ORC_GEN_STOP_STRING);
    assert_int_equal(r.text_len, cut);
    assert_memory_equal(r.text, full.text, cut);
    assert_int_equal(s.len, cut); /* the stop string was never streamed */
    assert_memory_equal(s.buf, full.text, cut);
    orc_gen_result_free(&r);

    /* A stop id: generation ends before it, without it. */
    o = greedy(30);
    int32_t sid = full.ids[5];
    size_t first_at = 0;
    while (full.ids[first_at] != sid) first_at++;
    o.stop_ids = &sid;
    o.n_stop_ids = 1;
    assert_int_equal(orc_generate(g, p, n, &o, &r, NULL), ORC_OK);
    assert_int_equal(r.stop, ORC_GEN_STOP_ID);
    assert_int_equal(r.stop_id, sid);
    assert_int_equal(r.n_ids, first_at);
    assert_memory_equal(r.ids, full.ids, first_at * sizeof(int32_t));
    orc_gen_result_free(&r);

    /* Streaming without stops delivers exactly the text; a callback can stop. */
    o = greedy(30);
    memset(&s, 0, sizeof s);
    o.on_token = on_token;
    o.user = &s;
    assert_int_equal(orc_generate(g, p, n, &o, &r, NULL), ORC_OK);
    assert_int_equal(s.len, full.text_len);
    assert_memory_equal(s.buf, full.text, s.len);
    orc_gen_result_free(&r);
    memset(&s, 0, sizeof s);
    s.stop_after = 4;
    assert_int_equal(orc_generate(g, p, n, &o, &r, NULL), ORC_OK);
    assert_int_equal(r.stop, ORC_GEN_CALLBACK);
    assert_int_equal(r.n_ids, 4);
    orc_gen_result_free(&r);

    orc_gen_result_free(&full);
    free(p);
    orc_generator_free(g);
}

static void test_context_limits(void **state) {
    fixture *f = *state;
    orc_generator *g = orc_generator_new(f->m, f->tok, 0, NULL);
    int32_t p[80];
    for (int i = 0; i < 80; i++) p[i] = 'a' + i % 20;
    orc_gen_opts o = greedy(100);
    orc_gen_result r;
    orc_error err = {0};
    assert_int_equal(orc_generate(g, p, 65, &o, &r, &err), ORC_ERANGE);
    assert_non_null(strstr(err.msg, "65"));
    assert_non_null(strstr(err.msg, "64"));
    assert_int_equal(orc_generate(g, p, 60, &o, &r, NULL), ORC_OK);
    assert_int_equal(r.stop, ORC_GEN_CONTEXT_FULL);
    assert_int_equal(r.n_ids, 4);
    orc_gen_result_free(&r);
    assert_int_equal(orc_generate(g, p, 64, &o, &r, NULL), ORC_OK); /* a full prompt still yields one token */
    assert_int_equal(r.n_ids, 1);
    orc_gen_result_free(&r);
    orc_error_clear(&err);
    assert_int_equal(orc_generate(g, p, 0, &o, &r, &err), ORC_EINVAL);
    o.max_tokens = 0;
    orc_error_clear(&err);
    assert_int_equal(orc_generate(g, p, 3, &o, &r, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "max_tokens"));
    orc_generator_free(g);
    orc_error_clear(&err);
    assert_null(orc_generator_new(f->m, f->tok, 65, &err));
    assert_non_null(strstr(err.msg, "max_position_embeddings"));
}

static void test_utf8_prefix(void **state) {
    (void)state;
    assert_int_equal(orc_utf8_complete_prefix("abc", 3), 3);
    assert_int_equal(orc_utf8_complete_prefix("a\xC3", 2), 1);
    assert_int_equal(orc_utf8_complete_prefix("a\xC3\xA9", 3), 3);
    assert_int_equal(orc_utf8_complete_prefix("\xE2\x82", 2), 0);
    assert_int_equal(orc_utf8_complete_prefix("\xE2\x82\xAC", 3), 3);
    assert_int_equal(orc_utf8_complete_prefix("x\xF0\x9F\x98", 4), 1);
    assert_int_equal(orc_utf8_complete_prefix("x\xF0\x9F\x98\x80", 5), 5);
    assert_int_equal(orc_utf8_complete_prefix("\x80\x80", 2), 2); /* stray continuations pass through */
    assert_int_equal(orc_utf8_complete_prefix("", 0), 0);
}

static void sample_with_threads(fixture *f, int threads, orc_gen_result *r) {
    omp_set_num_threads(threads);
    orc_generator *g = orc_generator_new(f->m, f->tok, 0, NULL);
    size_t n;
    int32_t *p = encode(f, "Every sailor", &n);
    orc_gen_opts o;
    orc_gen_opts_default(&o);
    o.max_tokens = 24;
    o.sampler.temperature = 1.0f;
    o.sampler.seed = 77;
    assert_int_equal(orc_generate(g, p, n, &o, r, NULL), ORC_OK);
    free(p);
    orc_generator_free(g);
}

static void test_same_text_any_thread_count(void **state) {
    fixture *f = *state;
    orc_gen_result a, b;
    sample_with_threads(f, 1, &a);
    sample_with_threads(f, 3, &b);
    omp_set_num_threads(2);
    assert_int_equal(a.n_ids, b.n_ids);
    assert_memory_equal(a.ids, b.ids, a.n_ids * sizeof(int32_t));
    orc_gen_result_free(&a);
    orc_gen_result_free(&b);
}

/* Reference: the NLL sum of one window via orc_llm_loss (targets already masked). */
static double window_loss(orc_llm *m, const int32_t *in, const int32_t *tg, int64_t T, int64_t *count) {
    orc_arena *arena = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, arena, 0);
    ctx.no_grad = true;
    orc_tensor *ids = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, T));
    orc_tensor *t = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, T));
    memcpy(ids->data, in, (size_t)T * sizeof(int32_t));
    memcpy(t->data, tg, (size_t)T * sizeof(int32_t));
    orc_tensor *loss = orc_llm_loss(&ctx, m, ids, t);
    assert_non_null(loss);
    *count = 0;
    for (int64_t i = 0; i < T; i++) *count += tg[i] != ORC_IGNORE_INDEX;
    double v = (double)orc_f32(loss)[0] * (double)*count;
    orc_arena_destroy(arena);
    return v;
}

static void test_eval_matches_loss(void **state) {
    fixture *f = *state;
    size_t n;
    int32_t *ids = encode(f, ORC_TEST_CORPUS, &n);
    assert_true(n > 70); /* more than one window of 64 */
    orc_eval_result r;
    orc_error err = {0};
    /* One window: the mean equals orc_llm_loss over ids[0..T) -> ids[1..T]. */
    assert_int_equal(orc_eval_ids(f->m, ids, 41, NULL, 0, 0, &r, &err), ORC_OK);
    int64_t c;
    double want = window_loss(f->m, ids, ids + 1, 40, &c);
    assert_int_equal(r.tokens, 40);
    assert_int_equal(r.windows, 1);
    assert_true(fabs(r.loss - want / 40.0) < 1e-5);
    assert_true(fabs(r.ppl - exp(r.loss)) < 1e-9 * r.ppl);

    /* Non-overlapping windows of 64 over n tokens. */
    assert_int_equal(orc_eval_ids(f->m, ids, n, NULL, 0, 0, &r, &err), ORC_OK);
    double sum = 0.0;
    int64_t total = 0;
    for (size_t b = 0; b + 1 < n; b += 64) {
        int64_t T = (int64_t)(n - 1 - b) < 64 ? (int64_t)(n - 1 - b) : 64;
        sum += window_loss(f->m, ids + b, ids + b + 1, T, &c);
        total += c;
    }
    assert_int_equal(r.tokens, (int64_t)n - 1);
    assert_int_equal(total, r.tokens);
    assert_true(fabs(r.nll_sum - sum) < 1e-4 * fabs(sum));

    /* Stride 16 over a context of 32: each window scores only its new tokens. */
    assert_int_equal(orc_eval_ids(f->m, ids, n, NULL, 32, 16, &r, &err), ORC_OK);
    assert_int_equal(r.tokens, (int64_t)n - 1);
    sum = 0.0;
    size_t next = 1;
    int32_t tg[32];
    for (size_t b = 0; next < n; b += 16) {
        int64_t T = (int64_t)(n - 1 - b) < 32 ? (int64_t)(n - 1 - b) : 32;
        for (int64_t j = 0; j < T; j++) tg[j] = b + 1 + (size_t)j >= next ? ids[b + 1 + (size_t)j] : ORC_IGNORE_INDEX;
        sum += window_loss(f->m, ids + b, tg, T, &c);
        next = b + 1 + (size_t)T;
    }
    assert_true(fabs(r.nll_sum - sum) < 1e-4 * fabs(sum));

    /* Texts: a begin token in front, every text byte scored once. */
    const char *texts[2] = {ORC_TEST_CORPUS, "The whale."};
    size_t lens[2] = {strlen(ORC_TEST_CORPUS), 10};
    assert_int_equal(orc_eval_texts(f->m, f->tok, texts, lens, 2, 0, 0, &r, &err), ORC_OK);
    assert_int_equal(r.bytes, (int64_t)(lens[0] + lens[1]));
    size_t n2;
    int32_t *tail = encode(f, "The whale.", &n2);
    assert_int_equal(r.tokens, (int64_t)(n + n2));
    assert_true(fabs(r.bits_per_byte - r.nll_sum / log(2.0) / (double)r.bytes) < 1e-12);
    free(tail);

    assert_int_equal(orc_eval_ids(f->m, ids, n, NULL, 32, 33, &r, &err), ORC_EINVAL);
    free(ids);
}

static void test_model_dir_errors(void **state) {
    fixture *f = *state;
    char dir[64];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "gen"), 0);
    orc_llm *m = NULL;
    orc_tokenizer *tok = NULL;
    orc_error err = {0};
    assert_int_not_equal(orc_model_dir_load(dir, &m, &tok, &err), ORC_OK); /* empty directory */
    assert_non_null(strstr(err.msg, "tokenizer.json"));
    /* A model whose vocabulary is smaller than its tokenizer's. */
    orc_llm_config c = f->m->cfg;
    c.vocab_size = 100;
    orc_llm *small = orc_llm_create(&c, false, NULL);
    assert_non_null(small);
    assert_int_equal(orc_llm_save(small, dir, NULL), ORC_OK);
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(orc_tokenizer_save(f->tok, path, NULL), ORC_OK);
    orc_error_clear(&err);
    assert_int_equal(orc_model_dir_load(dir, &m, &tok, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "tokenizer.json"));
    assert_non_null(strstr(err.msg, "vocab_size 100"));
    assert_null(m);
    assert_null(tok);
    /* The right size loads. */
    orc_llm_free(small);
    assert_int_equal(orc_llm_save(f->m, dir, NULL), ORC_OK);
    orc_error_clear(&err);
    assert_int_equal(orc_model_dir_load(dir, &m, &tok, &err), ORC_OK);
    orc_llm_free(m);
    orc_tokenizer_free(tok);
    orc_test_dir_remove(dir);
    orc_error_clear(&err);
    assert_int_not_equal(orc_model_dir_load(dir, &m, &tok, &err), ORC_OK);
    assert_non_null(strstr(err.msg, dir));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_equals_recompute),
        cmocka_unit_test(test_cached_logits_match_full_forward),
        cmocka_unit_test(test_prefix_reuse),
        cmocka_unit_test(test_stop_strings_and_ids),
        cmocka_unit_test(test_context_limits),
        cmocka_unit_test(test_utf8_prefix),
        cmocka_unit_test(test_same_text_any_thread_count),
        cmocka_unit_test(test_eval_matches_loss),
        cmocka_unit_test(test_model_dir_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
