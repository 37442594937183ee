/* The batched step over a quantized model (orc_qllm_step_adapters) on a
 * tiny random model (GQA, QK-norm, a feed-forward width of 72 so that
 * ffn_down keeps the F16 fallback beside the quantized matrices): in
 * Q8_0, Q4_0 and PAL4, each sequence's logits in mixed steps (prefills of
 * 70 tokens across a page, short prefills, decode rows, joins and leaves),
 * with LoRA stacks chosen per sequence (none, one adapter, the same adapter
 * twice in a step, a stack of two), are the same bits as orc_qllm_forward
 * on that sequence alone through its own KV cache under its stack; the
 * same bits for 1 and 3 threads; the final hidden state equals
 * orc_qllm_hidden's; and bad input (an id outside the vocabulary, a pool
 * for another model, an adapter for another model) is refused naming it,
 * with no sequence changed. */
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "llm_support.h"
#include "orchard/batch.h"
#include "orchard/lora.h"
#include "orchard/ops.h"
#include "orchard/quant.h"

enum { CTX = 160, VOCAB = 150, MAXB = 6 };

typedef struct fixture {
    orc_llm *m;
    orc_lora *ad[2];
    orc_lora_stack none, one, two; /* {}, {ad0}, {ad0, ad1} */
    orc_arena *arena, *ref_arena;
    orc_ctx ctx, ref;
} fixture;

static orc_lora *random_adapter(const orc_llm_config *c, uint64_t seed) {
    orc_error err = {0};
    orc_lora_config lc;
    orc_lora_config_default(&lc);
    lc.rank = 2;
    orc_lora *ad = orc_lora_create(c, &lc, false, &err);
    if (!ad) fail_msg("adapter: %s", err.msg);
    orc_rng r;
    orc_rng_init(&r, seed);
    for (int i = 0; i < ad->n_params; i++)
        orc_rng_fill_normal(&r, orc_f32(ad->params[i]), ad->params[i]->numel, 0.0f, 0.5f);
    return ad;
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    orc_llm_config c = orc_test_llm_config(64, 2, 72, VOCAB, CTX);
    c.qk_norm = true;
    f->m = orc_test_llm(&c, 21, 8.0f);
    f->ad[0] = random_adapter(&c, 3);
    f->ad[1] = random_adapter(&c, 4);
    f->one = (orc_lora_stack){.n = 1, .ad = {f->ad[0]}, .weight = {1.0f}};
    f->two = (orc_lora_stack){.n = 2, .ad = {f->ad[0], f->ad[1]}, .weight = {1.0f, 0.5f}};
    f->arena = orc_arena_create(0);
    f->ref_arena = orc_arena_create(0);
    orc_ctx_init(&f->ctx, f->arena, 0);
    orc_ctx_init(&f->ref, f->ref_arena, 0);
    f->ctx.no_grad = f->ref.no_grad = true;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    orc_arena_destroy(f->arena);
    orc_arena_destroy(f->ref_arena);
    orc_lora_free(f->ad[0]);
    orc_lora_free(f->ad[1]);
    orc_llm_free(f->m);
    free(f);
    return 0;
}

static orc_qllm *quantize(const fixture *f, orc_ggml_type type) {
    orc_error err = {0};
    orc_qllm *q = orc_qllm_from_llm(f->m, type, &err);
    if (!q) fail_msg("quantize to %s: %s", orc_q_type_name(type), err.msg);
    return q;
}

static void fill_ids(int32_t *ids, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(orc_rand_u32(seed, 0, i) % VOCAB);
}

/* One sequence of the schedule and its reference: its own KV cache, fed
 * through orc_qllm_forward under its own stack. */
typedef struct track {
    int32_t seq;
    orc_llm_cache *cache;
    const orc_lora_stack *stack;
    int32_t next;
    bool live;
} track;

/* The reference: q alone, under t's stack, fed ids through t's cache; the
 * last row of orc_qllm_forward's logits into out [V]. */
static void ref_feed(fixture *f, orc_qllm *q, track *t, const int32_t *ids, int64_t n, float *out) {
    orc_error err = {0};
    assert_int_equal(orc_qllm_set_adapters(q, t->stack, &err), ORC_OK);
    orc_ctx_reset(&f->ref);
    orc_tensor *x = orc_new(&f->ref, ORC_I32, 2, ORC_SHAPE(1, n));
    assert_non_null(x);
    memcpy(x->data, ids, sizeof(int32_t) * (size_t)n);
    orc_tensor *y = orc_qllm_forward(&f->ref, q, x, t->cache);
    if (!y) fail_msg("reference forward: %s", f->ref.err.msg);
    memcpy(out, orc_f32(y) + (n - 1) * VOCAB, sizeof(float) * VOCAB);
    assert_int_equal(orc_qllm_set_adapters(q, NULL, &err), ORC_OK);
}

static void expect_same_bits(const float *got, const float *want, const char *what) {
    if (memcmp(got, want, sizeof(float) * VOCAB) == 0) return;
    int64_t at = 0;
    for (int64_t i = 0; i < VOCAB; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            at = i;
            break;
        }
    fail_msg("%s: logits differ first at %lld: %.9g vs %.9g", what, (long long)at, (double)got[at], (double)want[at]);
}

/* One step over the live tracks: chunks[i] (NULL: decode `next`), every
 * sequence checked against its reference. Appends the logits to *log. */
static void run_step(fixture *f, orc_qllm *q, orc_kv_pool *pool, track *tr, int n, const int32_t *const *chunks,
                     const int64_t *lens, float **log, size_t *n_log) {
    orc_llm_step_seq ss[MAXB];
    const orc_lora_stack *stacks[MAXB];
    int idx[MAXB], B = 0;
    for (int i = 0; i < n; i++) {
        if (!tr[i].live) continue;
        const bool chunk = chunks && chunks[i];
        ss[B] = (orc_llm_step_seq){.seq = tr[i].seq, .ids = chunk ? chunks[i] : &tr[i].next, .n = chunk ? lens[i] : 1};
        stacks[B] = tr[i].stack;
        idx[B++] = i;
    }
    float logits[MAXB * VOCAB], want[VOCAB];
    orc_error err = {0};
    if (orc_qllm_step_adapters(&f->ctx, q, pool, ss, stacks, B, logits, NULL, &err) != ORC_OK)
        fail_msg("step: %s", err.msg);
    *log = realloc(*log, sizeof(float) * (*n_log + (size_t)B * VOCAB));
    memcpy(*log + *n_log, logits, sizeof(float) * (size_t)B * VOCAB);
    *n_log += (size_t)B * VOCAB;
    for (int b = 0; b < B; b++) {
        track *t = &tr[idx[b]];
        ref_feed(f, q, t, ss[b].ids, ss[b].n, want);
        char what[96];
        snprintf(what, sizeof what, "%s, sequence %d (%lld new tokens, %d adapters)", orc_q_type_name(q->type),
                 (int)t->seq, (long long)ss[b].n, t->stack->n);
        expect_same_bits(logits + b * VOCAB, want, what);
        t->next = orc_test_argmax(logits + b * VOCAB, VOCAB);
    }
}

static void track_open(orc_kv_pool *pool, orc_qllm *q, track *t, const orc_lora_stack *stack) {
    orc_error err = {0};
    t->seq = orc_kv_seq_new(pool, &err);
    assert_true(t->seq >= 0);
    t->cache = orc_llm_cache_new(&q->cfg, 1, CTX, &err);
    assert_non_null(t->cache);
    t->stack = stack;
    t->live = true;
}

static void track_close(orc_kv_pool *pool, track *t) {
    if (!t->live) return;
    assert_int_equal(orc_kv_seq_free(pool, t->seq, NULL), ORC_OK);
    orc_llm_cache_free(t->cache);
    t->live = false;
}

/* Joins and leaves with mixed prefill and decode rows and per-sequence
 * stacks; returns every logit the steps gave (for the thread check). */
static float *schedule(fixture *f, orc_qllm *q, size_t *n_log) {
    orc_error err = {0};
    orc_kv_pool *pool = orc_kv_pool_new(&q->cfg, 0, 0, &err);
    assert_non_null(pool);
    track tr[5] = {0};
    static int32_t p70[70], p3[3], p5[5], p2[2], p9[9];
    fill_ids(p70, 70, 1);
    fill_ids(p3, 3, 2);
    fill_ids(p5, 5, 3);
    fill_ids(p2, 2, 4);
    fill_ids(p9, 9, 5);
    float *log = NULL;
    *n_log = 0;
    /* a long prefill across a page beside a short one under an adapter */
    track_open(pool, q, &tr[0], &f->none);
    track_open(pool, q, &tr[1], &f->one);
    const int32_t *c1[5] = {p70, p3};
    const int64_t l1[5] = {70, 3};
    run_step(f, q, pool, tr, 2, c1, l1, &log, n_log);
    /* decode rows beside two joining prefills: one (5 tokens, a long chunk)
     * under the same adapter as a decoding row, one under a stack of two */
    track_open(pool, q, &tr[2], &f->one);
    track_open(pool, q, &tr[3], &f->two);
    const int32_t *c2[5] = {NULL, NULL, p5, p2};
    const int64_t l2[5] = {0, 0, 5, 2};
    run_step(f, q, pool, tr, 4, c2, l2, &log, n_log);
    for (int s = 0; s < 3; s++) run_step(f, q, pool, tr, 4, NULL, NULL, &log, n_log);
    /* one leaves, another joins with a 9-token prompt under a stack */
    track_close(pool, &tr[1]);
    track_open(pool, q, &tr[4], &f->two);
    const int32_t *c3[5] = {NULL, NULL, NULL, NULL, p9};
    const int64_t l3[5] = {0, 0, 0, 0, 9};
    run_step(f, q, pool, tr, 5, c3, l3, &log, n_log);
    for (int s = 0; s < 3; s++) run_step(f, q, pool, tr, 5, NULL, NULL, &log, n_log);
    for (int i = 0; i < 5; i++) track_close(pool, &tr[i]);
    orc_kv_pool_stats ps;
    orc_kv_pool_get_stats(pool, &ps);
    assert_int_equal(ps.pages_used, 0);
    orc_kv_pool_free(pool);
    return log;
}

static void check_scheme(fixture *f, orc_ggml_type type) {
    orc_qllm *q = quantize(f, type);
    /* the F16 fallback is part of what is checked */
    assert_int_equal(q->layers[0].w_down.type, ORC_GGML_F16);
    assert_int_equal(q->layers[0].w_up.type, type);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    size_t n1 = 0, n3 = 0;
    float *a = schedule(f, q, &n1);
    omp_set_num_threads(3);
    float *b = schedule(f, q, &n3);
    omp_set_num_threads(saved);
    assert_int_equal(n1, n3);
    assert_memory_equal(a, b, sizeof(float) * n1);
    free(a);
    free(b);
    orc_qllm_free(q);
}

static void test_q8_0_matches_single(void **state) { check_scheme(*state, ORC_GGML_Q8_0); }
static void test_q4_0_matches_single(void **state) { check_scheme(*state, ORC_GGML_Q4_0); }
static void test_pal4_matches_single(void **state) { check_scheme(*state, ORC_Q_PAL4); }

/* The hidden output is orc_qllm_hidden's last row, and the model's own
 * stack (q->lora) is used where stacks[i] is NULL. */
static void test_hidden_and_model_stack(void **state) {
    fixture *f = *state;
    orc_qllm *q = quantize(f, ORC_GGML_Q4_0);
    orc_error err = {0};
    orc_kv_pool *pool = orc_kv_pool_new(&q->cfg, 0, 0, &err);
    int32_t p[12];
    fill_ids(p, 12, 9);
    const int64_t D = q->cfg.hidden_size;
    float hid[64], logits[VOCAB], want[VOCAB];
    assert_int_equal(orc_qllm_set_adapters(q, &f->one, &err), ORC_OK);
    const int32_t s = orc_kv_seq_new(pool, &err);
    const orc_llm_step_seq ss = {.seq = s, .ids = p, .n = 12};
    assert_int_equal(orc_qllm_step_adapters(&f->ctx, q, pool, &ss, NULL, 1, logits, hid, &err), ORC_OK);
    orc_ctx_reset(&f->ref);
    orc_tensor *x = orc_new(&f->ref, ORC_I32, 2, ORC_SHAPE(1, 12));
    memcpy(x->data, p, sizeof p);
    orc_tensor *h = orc_qllm_hidden(&f->ref, q, x, NULL);
    assert_non_null(h);
    assert_memory_equal(hid, orc_f32(h) + 11 * D, sizeof(float) * (size_t)D);
    track t = {.stack = &f->one, .cache = orc_llm_cache_new(&q->cfg, 1, CTX, &err)};
    ref_feed(f, q, &t, p, 12, want);
    expect_same_bits(logits, want, "the model's own stack");
    /* and the adapter changed the answer */
    t.stack = &f->none;
    orc_llm_cache_free(t.cache);
    t.cache = orc_llm_cache_new(&q->cfg, 1, CTX, &err);
    ref_feed(f, q, &t, p, 12, want);
    assert_memory_not_equal(logits, want, sizeof want);
    orc_llm_cache_free(t.cache);
    orc_kv_pool_free(pool);
    orc_qllm_free(q);
}

/* Bad input is refused naming it, and no sequence has changed. */
static void test_errors(void **state) {
    fixture *f = *state;
    orc_qllm *q = quantize(f, ORC_GGML_Q8_0);
    orc_error err = {0};
    orc_kv_pool *pool = orc_kv_pool_new(&q->cfg, 0, 0, &err);
    const int32_t s = orc_kv_seq_new(pool, &err);
    int32_t ids[3] = {1, VOCAB + 2, 3};
    orc_llm_step_seq ss = {.seq = s, .ids = ids, .n = 3};
    float logits[VOCAB];
    assert_int_equal(orc_qllm_step_adapters(&f->ctx, q, pool, &ss, NULL, 1, logits, NULL, &err), ORC_ERANGE);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    assert_int_equal(orc_kv_seq_len(pool, s), 0);
    /* an adapter made for a wider model */
    orc_llm_config wide = orc_test_llm_config(96, 2, 72, VOCAB, CTX);
    orc_lora *bad = random_adapter(&wide, 5);
    const orc_lora_stack bs = {.n = 1, .ad = {bad}, .weight = {1.0f}};
    const orc_lora_stack *stacks[1] = {&bs};
    ids[1] = 2;
    orc_error_clear(&err);
    assert_int_equal(orc_qllm_step_adapters(&f->ctx, q, pool, &ss, stacks, 1, logits, NULL, &err), ORC_ESHAPE);
    assert_non_null(strstr(err.msg, "adapter 0 of sequence"));
    assert_int_equal(orc_kv_seq_len(pool, s), 0);
    /* a pool made for another model */
    orc_llm_config other = orc_test_llm_config(64, 3, 72, VOCAB, CTX);
    orc_kv_pool *op = orc_kv_pool_new(&other, 0, 0, &err);
    const int32_t os = orc_kv_seq_new(op, &err);
    ss.seq = os;
    orc_error_clear(&err);
    assert_int_equal(orc_qllm_step_adapters(&f->ctx, q, op, &ss, NULL, 1, logits, NULL, &err), ORC_ESHAPE);
    assert_non_null(strstr(err.msg, "kv pool"));
    /* and the state is usable afterwards */
    ss.seq = s;
    assert_int_equal(orc_qllm_step_adapters(&f->ctx, q, pool, &ss, NULL, 1, logits, NULL, &err), ORC_OK);
    assert_int_equal(orc_kv_seq_len(pool, s), 3);
    orc_lora_free(bad);
    orc_kv_pool_free(op);
    orc_kv_pool_free(pool);
    orc_qllm_free(q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_0_matches_single),   cmocka_unit_test(test_q4_0_matches_single),
        cmocka_unit_test(test_pal4_matches_single),   cmocka_unit_test(test_hidden_and_model_stack),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
