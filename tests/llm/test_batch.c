/* The KV pool, the batched step and the batch generator on a tiny random
 * model (GQA, QK-norm, a padded vocabulary, sizes that leave remainders in
 * every kernel): each sequence's logits in mixed batches (different prompt
 * lengths, prompts that cross pages and query blocks, sequences that join
 * mid-way and leave) are the same bits as a single-sequence generator fed
 * the same chunks; the same bits for 1 and 3 threads; fork, copy and
 * truncate against references, with copy-on-write visible in the page
 * counts; resampling particles whose ancestors overlap; the final hidden state against orc_llm_hidden; the batch
 * generator's ids, texts and stop reasons against orc_generate (greedy,
 * sampled, stop ids, stop strings, joins between steps, forked particles,
 * chunked prefill); LoRA adapters applied like the model's forward; and the
 * errors: unknown and repeated sequences, ids outside the vocabulary,
 * context overflow, a full pool, each leaving state unchanged. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "llm_support.h"
#include "orchard/batch.h"
#include "orchard/generate.h"
#include "orchard/lora.h"
#include "orchard/ops.h"

enum { CTX = 200 };

typedef struct fixture {
    orc_tokenizer *tok;
    orc_llm *m;
    int64_t V, TV; /* model vocabulary, tokenizer vocabulary */
    orc_arena *arena;
    orc_ctx ctx;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->tok = orc_test_corpus_tokenizer();
    f->TV = (int64_t)orc_tokenizer_vocab_size(f->tok);
    /* a padded vocabulary: ids without text exist */
    orc_llm_config c = orc_test_llm_config(40, 2, 72, f->TV + 4, CTX);
    c.qk_norm = true;
    /* Peaked logits, so sampled paths are not decided by near ties. */
    f->m = orc_test_llm(&c, 11, 30.0f);
    f->V = c.vocab_size;
    f->arena = orc_arena_create(0);
    orc_ctx_init(&f->ctx, f->arena, 0);
    f->ctx.no_grad = true;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    orc_arena_destroy(f->arena);
    orc_llm_free(f->m);
    orc_tokenizer_free(f->tok);
    free(f);
    return 0;
}

/* Deterministic ids in [0, TV). */
static void fill_ids(int32_t *ids, size_t n, uint32_t seed, int64_t TV) {
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(orc_rand_u32(seed, 0, i) % (uint32_t)TV);
}

/* Bitwise equality, with the largest difference in the message. */
static void assert_same_bits(const float *got, const float *want, int64_t n, const char *what) {
    if (memcmp(got, want, sizeof(float) * (size_t)n) == 0) return;
    double worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > worst || (isnan(d) && worst == 0)) {
            worst = d;
            at = i;
        }
    }
    fail_msg("%s: logits differ, largest at %lld: %.9g vs %.9g", what, (long long)at, (double)got[at],
             (double)want[at]);
}

/* ---- mixed batches against single-sequence generators -------------------------------- */

typedef struct track {
    int32_t seq;
    orc_generator *ref;
    int32_t next; /* the token to feed at the next decode */
    bool live;
} track;

/* One step over the live tracks given chunks (NULL: decode `next`), compared
 * with each track's reference fed the same chunk. Logits out: [n, V]. */
static void run_step(fixture *f, orc_kv_pool *pool, track *tr, int n, const int32_t *const *chunks,
                     const size_t *lens, float *logits) {
    orc_llm_step_seq ss[16];
    int idx[16], B = 0;
    for (int i = 0; i < n; i++) {
        if (!tr[i].live) continue;
        ss[B] = (orc_llm_step_seq){.seq = tr[i].seq, .ids = chunks && chunks[i] ? chunks[i] : &tr[i].next,
                                   .n = chunks && chunks[i] ? (int64_t)lens[i] : 1};
        idx[B++] = i;
    }
    orc_error err = {0};
    orc_status st = orc_llm_step(&f->ctx, f->m, pool, ss, B, logits, NULL, &err);
    if (st != ORC_OK) fail_msg("step: %s", err.msg);
    for (int b = 0; b < B; b++) {
        track *t = &tr[idx[b]];
        const float *want = orc_generator_feed(t->ref, ss[b].ids, (size_t)ss[b].n, &err);
        assert_non_null(want);
        /* The generator hides ids without text; the step does not. */
        float got[1024];
        memcpy(got, logits + b * f->V, sizeof(float) * (size_t)f->V);
        for (int64_t v = 0; v < f->V; v++) assert_false(isinf(got[v]));
        for (int64_t v = f->TV; v < f->V; v++) got[v] = -INFINITY;
        char what[64];
        snprintf(what, sizeof what, "sequence %d (track %d)", (int)t->seq, idx[b]);
        assert_same_bits(got, want, f->V, what);
        t->next = orc_test_argmax(got, f->V);
    }
}

static void track_open(fixture *f, orc_kv_pool *pool, track *t) {
    orc_error err = {0};
    t->seq = orc_kv_seq_new(pool, &err);
    assert_true(t->seq >= 0);
    t->ref = orc_generator_new(f->m, f->tok, CTX, &err);
    assert_non_null(t->ref);
    t->live = true;
}

static void track_close(orc_kv_pool *pool, track *t) {
    if (!t->live) return;
    assert_int_equal(orc_kv_seq_free(pool, t->seq, NULL), ORC_OK);
    orc_generator_free(t->ref);
    t->live = false;
}

/* A schedule of joins and leaves; returns every logit it saw (for the
 * thread comparison). */
static float *mixed_schedule(fixture *f, size_t *n_out) {
    orc_error err = {0};
    orc_kv_pool *pool = orc_kv_pool_new(&f->m->cfg, 0, 0, &err);
    assert_non_null(pool);
    track tr[5] = {0};
    static int32_t p70[70], p3[3], p5[5], p130[130], p1[1];
    fill_ids(p70, 70, 1, f->TV);
    fill_ids(p3, 3, 2, f->TV);
    fill_ids(p5, 5, 3, f->TV);
    fill_ids(p130, 130, 4, f->TV);
    fill_ids(p1, 1, 5, f->TV);
    const size_t cap = (size_t)64 * 5 * (size_t)f->V;
    float *all = malloc(sizeof(float) * cap), *logits = malloc(sizeof(float) * 5 * (size_t)f->V);
    size_t n_all = 0;
#define STEP(...)                                                                  \
    do {                                                                           \
        const int32_t *ch[5] = {0};                                                \
        size_t ln[5] = {0};                                                        \
        __VA_ARGS__;                                                               \
        run_step(f, pool, tr, 5, ch, ln, logits);                                  \
        int live = 0;                                                              \
        for (int i = 0; i < 5; i++) live += tr[i].live;                            \
        memcpy(all + n_all, logits, sizeof(float) * (size_t)(live * f->V));        \
        n_all += (size_t)(live * f->V);                                            \
    } while (0)
    /* Step 1: a long prompt (two pages, two query blocks) and a short one. */
    track_open(f, pool, &tr[0]);
    track_open(f, pool, &tr[1]);
    STEP(ch[0] = p70; ln[0] = 70; ch[1] = p3; ln[1] = 3);
    STEP((void)0);
    /* A 5-token prompt (its own product) joins two decoders. */
    track_open(f, pool, &tr[2]);
    STEP(ch[2] = p5; ln[2] = 5);
    for (int s = 0; s < 3; s++) STEP((void)0);
    /* A 130-token prompt and a 1-token prompt join; then the short one leaves. */
    track_open(f, pool, &tr[3]);
    track_open(f, pool, &tr[4]);
    STEP(ch[3] = p130; ln[3] = 130; ch[4] = p1; ln[4] = 1);
    STEP((void)0);
    track_close(pool, &tr[1]);
    for (int s = 0; s < 4; s++) STEP((void)0);
    /* A multi-token chunk (<= 4) on a running sequence, beside decoders. */
    static int32_t extra[3];
    fill_ids(extra, 3, 6, f->TV);
    STEP(ch[0] = extra; ln[0] = 3);
    for (int s = 0; s < 2; s++) STEP((void)0);
    assert_int_equal(orc_kv_seq_len(pool, tr[0].seq), 70 + 1 + 1 + 3 + 1 + 1 + 4 + 3 + 2);
    assert_true(n_all <= cap);
    for (int i = 0; i < 5; i++) track_close(pool, &tr[i]);
    orc_kv_pool_stats ps;
    orc_kv_pool_get_stats(pool, &ps);
    assert_int_equal(ps.pages_used, 0);
    assert_int_equal(ps.sequences, 0);
    orc_kv_pool_free(pool);
    free(logits);
    *n_out = n_all;
#undef STEP
    return all;
}

static void test_mixed_batch_matches_single(void **state) {
    size_t n;
    float *all = mixed_schedule(*state, &n);
    assert_true(n > 0);
    free(all);
}

static void test_same_bits_any_thread_count(void **state) {
    const int saved = omp_get_max_threads();
    size_t n1, n3;
    omp_set_num_threads(1);
    float *a = mixed_schedule(*state, &n1);
    omp_set_num_threads(3);
    float *b = mixed_schedule(*state, &n3);
    omp_set_num_threads(saved);
    assert_int_equal(n1, n3);
    assert_memory_equal(a, b, n1 * sizeof(float));
    free(a);
    free(b);
}

/* ---- fork, copy, truncate ------------------------------------------------------------ */

static void step1(fixture *f, orc_kv_pool *pool, int32_t seq, const int32_t *ids, int64_t n, float *logits) {
    orc_llm_step_seq s = {.seq = seq, .ids = ids, .n = n};
    orc_error err = {0};
    if (orc_llm_step(&f->ctx, f->m, pool, &s, 1, logits, NULL, &err) != ORC_OK) fail_msg("step: %s", err.msg);
    for (int64_t v = f->TV; v < f->V; v++) logits[v] = -INFINITY;
}

static void test_fork_copy_truncate(void **state) {
    fixture *f = *state;
    orc_error err = {0};
    orc_kv_pool *pool = orc_kv_pool_new(&f->m->cfg, 0, 0, &err);
    assert_non_null(pool);
    int32_t prompt[70];
    fill_ids(prompt, 70, 21, f->TV);
    float *l = malloc(sizeof(float) * 4 * (size_t)f->V);
    const int32_t a = orc_kv_seq_new(pool, &err);
    step1(f, pool, a, prompt, 70, l);
    orc_kv_pool_stats ps;
    orc_kv_pool_get_stats(pool, &ps);
    assert_int_equal(ps.pages_used, 2);
    assert_int_equal(ps.page_bytes, 2 * 2 * ORC_KV_PAGE * 2 * 10 * 4);

    /* Two particles from one prefix: no page is copied by the fork. */
    const int32_t b = orc_kv_seq_fork(pool, a, &err);
    assert_true(b >= 0 && b != a);
    assert_int_equal(orc_kv_seq_len(pool, b), 70);
    int64_t nb;
    const int32_t *tb = orc_kv_seq_tokens(pool, b, &nb);
    assert_int_equal(nb, 70);
    assert_memory_equal(tb, prompt, sizeof prompt);
    assert_int_equal(orc_kv_seq_shared_pages(pool, b), 2);
    orc_kv_pool_get_stats(pool, &ps);
    assert_int_equal(ps.pages_used, 2);

    /* They diverge: a and b each decode a different token in one step. The
     * write into the shared, partly filled page copies it once. */
    const int32_t xa = 7, xb = 9;
    orc_llm_step_seq ss[2] = {{.seq = a, .ids = &xa, .n = 1}, {.seq = b, .ids = &xb, .n = 1}};
    assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, ss, 2, l, NULL, &err), ORC_OK);
    orc_kv_pool_get_stats(pool, &ps);
    assert_int_equal(ps.pages_used, 3);
    assert_int_equal(orc_kv_seq_shared_pages(pool, a), 1);
    assert_int_equal(orc_kv_seq_shared_pages(pool, b), 1);
    for (int i = 0; i < 2; i++) {
        orc_generator *g = orc_generator_new(f->m, f->tok, CTX, &err);
        assert_non_null(orc_generator_feed(g, prompt, 70, &err));
        const float *want = orc_generator_feed(g, i ? &xb : &xa, 1, &err);
        float got[1024];
        memcpy(got, l + i * f->V, sizeof(float) * (size_t)f->V);
        for (int64_t v = f->TV; v < f->V; v++) got[v] = -INFINITY;
        assert_same_bits(got, want, f->V, i ? "fork b" : "fork a");
        orc_generator_free(g);
    }
    /* b's next step still sees its own token, not a's. */
    const int32_t y = 11;
    step1(f, pool, b, &y, 1, l);
    {
        orc_generator *g = orc_generator_new(f->m, f->tok, CTX, &err);
        orc_generator_feed(g, prompt, 70, &err);
        orc_generator_feed(g, &xb, 1, &err);
        assert_same_bits(l, orc_generator_feed(g, &y, 1, &err), f->V, "fork b, second step");
        orc_generator_free(g);
    }

    /* Resample: a becomes a copy of b (b's pages are shared, a's released). */
    assert_int_equal(orc_kv_seq_copy(pool, a, b, &err), ORC_OK);
    assert_int_equal(orc_kv_seq_len(pool, a), 72);
    orc_kv_pool_get_stats(pool, &ps);
    assert_int_equal(ps.pages_used, 2);
    assert_int_equal(orc_kv_seq_copy(pool, a, a, &err), ORC_OK);
    const int32_t z = 13;
    float *l2 = l + f->V;
    step1(f, pool, a, &z, 1, l);
    step1(f, pool, b, &z, 1, l2);
    assert_same_bits(l, l2, f->V, "copy");

    /* Truncate a to 40 positions inside the first page, then feed a chunk. */
    assert_int_equal(orc_kv_seq_truncate(pool, a, 40, &err), ORC_OK);
    assert_int_equal(orc_kv_seq_len(pool, a), 40);
    int32_t chunk[6] = {3, 4, 5, 6, 7, 8}, after = 17;
    step1(f, pool, a, chunk, 6, l);
    step1(f, pool, a, &after, 1, l);
    {
        /* The generator's own prefix reuse truncates the same way: it keeps
         * 40 cached tokens and feeds the 6 new ones in one chunk. */
        orc_generator *g = orc_generator_new(f->m, f->tok, CTX, &err);
        orc_generator_feed(g, prompt, 70, &err);
        int32_t p2[46];
        memcpy(p2, prompt, 40 * sizeof(int32_t));
        memcpy(p2 + 40, chunk, sizeof chunk);
        orc_gen_opts o;
        orc_gen_opts_default(&o);
        o.sampler.temperature = 0;
        o.max_tokens = 1;
        orc_gen_result r;
        assert_int_equal(orc_generate(g, p2, 46, &o, &r, &err), ORC_OK);
        assert_int_equal(r.prefilled, 6);
        orc_gen_result_free(&r);
        assert_same_bits(l, orc_generator_feed(g, &after, 1, &err), f->V, "truncate");
        orc_generator_free(g);
    }
    /* b is untouched by all of it. */
    assert_int_equal(orc_kv_seq_len(pool, b), 73);
    assert_int_equal(orc_kv_seq_truncate(pool, b, 0, &err), ORC_OK);
    step1(f, pool, b, prompt, 70, l);
    {
        orc_generator *g = orc_generator_new(f->m, f->tok, CTX, &err);
        assert_same_bits(l, orc_generator_feed(g, prompt, 70, &err), f->V, "truncate to 0, refill");
        orc_generator_free(g);
    }
    free(l);
    orc_kv_pool_free(pool);
}

/* Resampling particles at once with overlapping ancestors (0 <- 1 and
 * 1 <- 0 swap): each ends equal to its ancestor's old state, tokens and
 * keys, and errors change nothing. */
static void test_resample(void **state) {
    fixture *f = *state;
    orc_error err = {0};
    orc_kv_pool *pool = orc_kv_pool_new(&f->m->cfg, 0, 0, &err);
    int32_t prompt[66];
    fill_ids(prompt, 66, 81, f->TV);
    enum { P = 4 };
    int32_t seq[P];
    seq[0] = orc_kv_seq_new(pool, &err);
    float *l = malloc(sizeof(float) * P * (size_t)f->V), *want = malloc(sizeof(float) * P * (size_t)f->V);
    step1(f, pool, seq[0], prompt, 66, l);
    for (int i = 1; i < P; i++) seq[i] = orc_kv_seq_fork(pool, seq[0], &err);
    int32_t own[P][2];
    orc_llm_step_seq ss[P];
    for (int i = 0; i < P; i++) {
        own[i][0] = (int32_t)(20 + i);
        own[i][1] = (int32_t)(40 + i);
        ss[i] = (orc_llm_step_seq){.seq = seq[i], .ids = own[i], .n = 2};
    }
    assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, ss, P, l, NULL, &err), ORC_OK);
    /* What each particle would give next, before resampling. */
    const int32_t z = 5;
    for (int i = 0; i < P; i++) {
        const int32_t tmp = orc_kv_seq_fork(pool, seq[i], &err);
        step1(f, pool, tmp, &z, 1, want + i * f->V);
        orc_kv_seq_free(pool, tmp, NULL);
    }
    const int64_t anc[P] = {1, 0, 0, 3};
    const int64_t bad[P] = {1, 0, 4, 3};
    orc_error_clear(&err);
    assert_int_equal(orc_kv_seq_resample(pool, seq, bad, P, &err), ORC_ERANGE);
    int32_t dup[P] = {seq[0], seq[1], seq[1], seq[3]};
    assert_int_equal(orc_kv_seq_resample(pool, dup, anc, P, NULL), ORC_EINVAL);
    int64_t n;
    assert_int_equal(orc_kv_seq_tokens(pool, seq[0], &n)[66], own[0][0]); /* unchanged */
    assert_int_equal(orc_kv_seq_resample(pool, seq, anc, P, &err), ORC_OK);
    orc_kv_pool_stats ps;
    orc_kv_pool_get_stats(pool, &ps);
    assert_int_equal(ps.sequences, P);
    for (int i = 0; i < P; i++) {
        const int32_t *t = orc_kv_seq_tokens(pool, seq[i], &n);
        assert_int_equal(n, 68);
        assert_int_equal(t[66], own[anc[i]][0]);
        assert_int_equal(t[67], own[anc[i]][1]);
        ss[i] = (orc_llm_step_seq){.seq = seq[i], .ids = &z, .n = 1};
    }
    assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, ss, P, l, NULL, &err), ORC_OK);
    for (int i = 0; i < P; i++) {
        for (int64_t v = f->TV; v < f->V; v++) l[i * f->V + v] = -INFINITY;
        assert_same_bits(l + i * f->V, want + anc[i] * f->V, f->V, "resampled particle");
    }
    free(l);
    free(want);
    orc_kv_pool_free(pool);
}

/* The final hidden state of the last token equals orc_llm_hidden's. */
static void test_hidden_matches_llm_hidden(void **state) {
    fixture *f = *state;
    orc_error err = {0};
    orc_kv_pool *pool = orc_kv_pool_new(&f->m->cfg, 100, 8, &err);
    int32_t p[9], q[2];
    fill_ids(p, 9, 31, f->TV);
    fill_ids(q, 2, 32, f->TV);
    const int32_t s0 = orc_kv_seq_new(pool, &err), s1 = orc_kv_seq_new(pool, &err);
    const int64_t D = f->m->cfg.hidden_size;
    float hidden[2 * 40];
    orc_llm_step_seq ss[2] = {{.seq = s0, .ids = p, .n = 9}, {.seq = s1, .ids = q, .n = 2}};
    assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, ss, 2, NULL, hidden, &err), ORC_OK);
    const int32_t *chunk[2] = {p, q};
    const int64_t len[2] = {9, 2};
    for (int i = 0; i < 2; i++) {
        orc_arena *ar = orc_arena_create(0);
        orc_ctx c;
        orc_ctx_init(&c, ar, 0);
        c.no_grad = true;
        orc_tensor *ids = orc_new(&c, ORC_I32, 2, ORC_SHAPE(1, len[i]));
        memcpy(ids->data, chunk[i], sizeof(int32_t) * (size_t)len[i]);
        orc_tensor *h = orc_llm_hidden(&c, f->m, ids, NULL);
        assert_non_null(h);
        assert_same_bits(hidden + i * D, orc_f32(h) + (len[i] - 1) * D, D, "hidden");
        orc_arena_destroy(ar);
    }
    orc_kv_pool_free(pool);
}

/* ---- errors ------------------------------------------------------------------------- */

static void test_errors_leave_state(void **state) {
    fixture *f = *state;
    orc_error err = {0};
    orc_kv_pool *pool = orc_kv_pool_new(&f->m->cfg, 100, 3, &err);
    assert_non_null(pool);
    float *l = malloc(sizeof(float) * 2 * (size_t)f->V);
    int32_t p[130];
    fill_ids(p, 130, 41, f->TV);
    const int32_t a = orc_kv_seq_new(pool, &err), b = orc_kv_seq_new(pool, &err);
    step1(f, pool, a, p, 60, l);

    /* Unknown sequence. */
    orc_llm_step_seq bad = {.seq = 7, .ids = p, .n = 1};
    orc_error_clear(&err);
    assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, &bad, 1, l, NULL, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "7 is not a live sequence"));
    /* The same sequence twice. */
    orc_llm_step_seq twice[2] = {{.seq = a, .ids = p, .n = 1}, {.seq = a, .ids = p, .n = 1}};
    orc_error_clear(&err);
    assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, twice, 2, l, NULL, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "twice"));
    /* No tokens; an id outside the vocabulary. */
    orc_llm_step_seq none = {.seq = a, .ids = p, .n = 0};
    orc_error_clear(&err);
    assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, &none, 1, l, NULL, &err), ORC_EINVAL);
    const int32_t big = (int32_t)f->V;
    orc_llm_step_seq oov[2] = {{.seq = b, .ids = p, .n = 1}, {.seq = a, .ids = &big, .n = 1}};
    orc_error_clear(&err);
    assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, oov, 2, l, NULL, &err), ORC_ERANGE);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    /* Context overflow: 60 cached + 41 new > max_len 100, naming the lengths. */
    orc_llm_step_seq over = {.seq = a, .ids = p, .n = 41};
    orc_error_clear(&err);
    assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, &over, 1, l, NULL, &err), ORC_ERANGE);
    assert_non_null(strstr(err.msg, "60 cached + 41 new"));
    assert_non_null(strstr(err.msg, "100"));
    /* A full pool: a holds 1 page of 3; b would need 2 and a 1 more... then 1 more than exist. */
    orc_llm_step_seq full[2] = {{.seq = b, .ids = p, .n = 100}, {.seq = a, .ids = p, .n = 10}};
    orc_error_clear(&err);
    assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, full, 2, l, NULL, &err), ORC_ENOMEM);
    assert_non_null(strstr(err.msg, "pages"));
    orc_kv_pool_stats ps;
    orc_kv_pool_get_stats(pool, &ps);
    assert_int_equal(ps.pages_used, 1); /* what the failed step took is back */
    assert_int_equal(orc_kv_seq_len(pool, a), 60);
    assert_int_equal(orc_kv_seq_len(pool, b), 0);
    /* A context with an earlier error, or one that records gradients. */
    f->ctx.no_grad = false;
    orc_error_clear(&err);
    assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, oov, 1, l, NULL, &err), ORC_EINVAL);
    f->ctx.no_grad = true;

    /* After all that, a still continues exactly like a fresh generator. */
    step1(f, pool, a, p + 60, 2, l);
    orc_generator *g = orc_generator_new(f->m, f->tok, CTX, &err);
    orc_generator_feed(g, p, 60, &err);
    float want[1024];
    memcpy(want, orc_generator_feed(g, p + 60, 2, &err), sizeof(float) * (size_t)f->V);
    assert_same_bits(l, want, f->V, "after errors");
    orc_generator_free(g);

    /* Pool functions on numbers that are not sequences. */
    orc_error_clear(&err);
    assert_int_equal(orc_kv_seq_free(pool, 5, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "5 is not a live sequence"));
    assert_int_equal(orc_kv_seq_fork(pool, -1, NULL), -1);
    assert_int_equal(orc_kv_seq_copy(pool, a, 9, NULL), ORC_EINVAL);
    assert_int_equal(orc_kv_seq_len(pool, 9), -1);
    assert_null(orc_kv_seq_tokens(pool, 9, NULL));
    orc_error_clear(&err);
    assert_int_equal(orc_kv_seq_truncate(pool, a, 63, &err), ORC_ERANGE);
    assert_non_null(strstr(err.msg, "[0, 62]"));
    assert_int_equal(orc_kv_seq_free(pool, b, NULL), ORC_OK);
    assert_int_equal(orc_kv_seq_free(pool, b, NULL), ORC_EINVAL); /* twice */
    /* The freed number is reused. */
    assert_int_equal(orc_kv_seq_new(pool, NULL), b);
    /* Bad pool sizes. */
    orc_error_clear(&err);
    assert_null(orc_kv_pool_new(&f->m->cfg, CTX + 1, 0, &err));
    assert_int_equal(err.code, ORC_EINVAL);
    free(l);
    orc_kv_pool_free(pool);
}

/* ---- the batch generator against orc_generate ------------------------------------------ */

static void expect_same_result(const orc_gen_result *got, const orc_gen_result *want, const char *what) {
    if (got->n_ids != want->n_ids || memcmp(got->ids, want->ids, got->n_ids * sizeof(int32_t)) != 0)
        fail_msg("%s: %zu ids vs orc_generate's %zu (or different ids)", what, got->n_ids, want->n_ids);
    assert_int_equal(got->stop, want->stop);
    assert_int_equal(got->stop_id, want->stop_id);
    assert_string_equal(got->text, want->text);
    assert_int_equal(got->text_len, want->text_len);
}

static void test_batch_generate_matches_generate(void **state) {
    fixture *f = *state;
    orc_error err = {0};
    enum { N = 5 };
    static int32_t pr[N][90];
    const size_t lens[N] = {4, 90, 1, 17, 6};
    const int32_t *prompts[N];
    orc_gen_opts o[N];
    for (int i = 0; i < N; i++) {
        fill_ids(pr[i], lens[i], 50 + (uint32_t)i, f->TV);
        prompts[i] = pr[i];
        orc_gen_opts_default(&o[i]);
        o[i].max_tokens = 30 + 5 * i;
        o[i].sampler.seed = 100 + (uint64_t)i;
    }
    o[0].sampler.temperature = 0;                 /* greedy */
    o[1].sampler.temperature = 1.0f;              /* sampled, penalised */
    o[1].sampler.repeat_penalty = 1.3f;
    o[2].max_tokens = CTX;                        /* runs into the context */
    o[2].sampler.temperature = 0.7f;
    static const char *stops[] = {"e"};           /* a stop string */
    o[3].stop_strings = stops;
    o[3].n_stop_strings = 1;
    orc_gen_result want[N];
    orc_generator *g = orc_generator_new(f->m, f->tok, CTX, &err);
    for (int i = 0; i < N; i++) {
        orc_generator_reset(g);
        assert_int_equal(orc_generate(g, prompts[i], lens[i], &o[i], &want[i], &err), ORC_OK);
    }
    /* A stop id that request 4 meets on its way. */
    assert_true(want[4].n_ids > 3);
    static int32_t stop_id[1];
    stop_id[0] = want[4].ids[3];
    o[4].stop_ids = stop_id;
    o[4].n_stop_ids = 1;
    orc_gen_result_free(&want[4]);
    orc_generator_reset(g);
    assert_int_equal(orc_generate(g, prompts[4], lens[4], &o[4], &want[4], &err), ORC_OK);
    assert_int_equal(want[4].stop, ORC_GEN_STOP_ID);
    assert_int_equal(want[2].stop, ORC_GEN_CONTEXT_FULL);
    assert_int_equal(want[3].stop, ORC_GEN_STOP_STRING);

    /* All at once. */
    orc_gen_result got[N];
    assert_int_equal(orc_batch_generate(f->m, f->tok, prompts, lens, N, o, got, &err), ORC_OK);
    for (int i = 0; i < N; i++) {
        char what[32];
        snprintf(what, sizeof what, "request %d", i);
        expect_same_result(&got[i], &want[i], what);
        assert_int_equal(got[i].prompt_tokens, (int64_t)lens[i]);
        orc_gen_result_free(&got[i]);
    }

    /* Joining mid-way: requests arrive while others decode; one is taken
     * (cancelled) early. */
    orc_kv_pool *pool = orc_kv_pool_new(&f->m->cfg, CTX, 0, &err);
    orc_batch_gen *bg = orc_batch_gen_new(f->m, f->tok, pool, &err);
    assert_non_null(bg);
    int64_t id[N + 1];
    id[0] = orc_batch_gen_add(bg, prompts[0], lens[0], &o[0], &err);
    id[1] = orc_batch_gen_add(bg, prompts[1], lens[1], &o[1], &err);
    for (int s = 0; s < 3; s++) assert_int_equal(orc_batch_gen_step(bg, &err), ORC_OK);
    id[2] = orc_batch_gen_add(bg, prompts[2], lens[2], &o[2], &err);
    id[3] = orc_batch_gen_add(bg, prompts[3], lens[3], &o[3], &err);
    id[5] = orc_batch_gen_add(bg, prompts[1], lens[1], &o[0], &err); /* to be cancelled */
    for (int s = 0; s < 7; s++) assert_int_equal(orc_batch_gen_step(bg, &err), ORC_OK);
    orc_gen_result cancelled;
    assert_int_equal(orc_batch_gen_take(bg, id[5], &cancelled, &err), ORC_OK);
    assert_int_equal(cancelled.stop, ORC_GEN_CALLBACK);
    assert_int_equal(cancelled.n_ids, 7);
    orc_gen_result_free(&cancelled);
    id[4] = orc_batch_gen_add(bg, prompts[4], lens[4], &o[4], &err);
    for (int i = 0; i <= N; i++) assert_true(id[i] >= 0);
    while (orc_batch_gen_pending(bg) > 0) assert_int_equal(orc_batch_gen_step(bg, &err), ORC_OK);
    for (int i = 0; i < N; i++) {
        assert_true(orc_batch_gen_done(bg, id[i]));
        orc_gen_result r;
        assert_int_equal(orc_batch_gen_take(bg, id[i], &r, &err), ORC_OK);
        char what[32];
        snprintf(what, sizeof what, "joined request %d", i);
        expect_same_result(&r, &want[i], what);
        orc_gen_result_free(&r);
    }
    assert_false(orc_batch_gen_done(bg, id[0])); /* taken */
    orc_gen_result r;
    orc_error_clear(&err);
    assert_int_equal(orc_batch_gen_take(bg, id[0], &r, &err), ORC_EINVAL);
    /* Bad requests. */
    orc_error_clear(&err);
    assert_int_equal(orc_batch_gen_add(bg, prompts[0], 0, &o[0], &err), -1);
    assert_int_equal(err.code, ORC_EINVAL);
    static int32_t longp[CTX + 1];
    orc_error_clear(&err);
    assert_int_equal(orc_batch_gen_add(bg, longp, CTX + 1, &o[0], &err), -1);
    assert_int_equal(err.code, ORC_ERANGE);
    assert_non_null(strstr(err.msg, "201 tokens"));
    orc_kv_pool_stats ps;
    orc_kv_pool_get_stats(pool, &ps);
    assert_int_equal(ps.pages_used, 0);
    orc_batch_gen_free(bg);
    orc_kv_pool_free(pool);
    for (int i = 0; i < N; i++) orc_gen_result_free(&want[i]);
    orc_generator_free(g);
}

/* TSMC's pattern: prefill a prompt once, sample a first token per particle,
 * fork the prefix for each particle and let them decode as one batch; each
 * particle's ids equal orc_generate's for prompt + its first token on a
 * generator that has the prompt cached. */
static void test_forked_particles(void **state) {
    fixture *f = *state;
    orc_error err = {0};
    orc_kv_pool *pool = orc_kv_pool_new(&f->m->cfg, CTX, 0, &err);
    orc_batch_gen *bg = orc_batch_gen_new(f->m, f->tok, pool, &err);
    int32_t prompt[40];
    fill_ids(prompt, 40, 77, f->TV);
    const int32_t root = orc_kv_seq_new(pool, &err);
    float *l = malloc(sizeof(float) * (size_t)f->V);
    step1(f, pool, root, prompt, 40, l);
    enum { P = 4 };
    int64_t req[P];
    int32_t first[P];
    orc_gen_opts o;
    orc_gen_opts_default(&o);
    o.max_tokens = 12;
    o.sampler.temperature = 1.0f;
    o.sampler.seed = 5;
    for (int i = 0; i < P; i++) {
        first[i] = (int32_t)((orc_test_argmax(l, f->V) + i) % f->TV);
        const int32_t s = orc_kv_seq_fork(pool, root, &err);
        assert_true(s >= 0);
        req[i] = orc_batch_gen_add_seq(bg, s, &first[i], 1, &o, &err);
        assert_true(req[i] >= 0);
    }
    assert_int_equal(orc_kv_seq_shared_pages(pool, root), 1);
    assert_int_equal(orc_batch_gen_add_seq(bg, 99, first, 1, &o, NULL), -1);
    while (orc_batch_gen_pending(bg) > 0) assert_int_equal(orc_batch_gen_step(bg, &err), ORC_OK);
    orc_generator *g = orc_generator_new(f->m, f->tok, CTX, &err);
    for (int i = 0; i < P; i++) {
        orc_generator_reset(g);
        orc_generator_feed(g, prompt, 40, &err);
        int32_t p2[41];
        memcpy(p2, prompt, sizeof prompt);
        p2[40] = first[i];
        orc_gen_result want, got;
        assert_int_equal(orc_generate(g, p2, 41, &o, &want, &err), ORC_OK);
        assert_int_equal(want.prefilled, 1);
        assert_int_equal(orc_batch_gen_take(bg, req[i], &got, &err), ORC_OK);
        expect_same_result(&got, &want, "particle");
        orc_gen_result_free(&want);
        orc_gen_result_free(&got);
    }
    /* Taking the requests freed the forks; the root keeps its pages. */
    orc_kv_pool_stats ps;
    orc_kv_pool_get_stats(pool, &ps);
    assert_int_equal(ps.sequences, 1);
    assert_int_equal(ps.pages_used, 1);
    orc_generator_free(g);
    free(l);
    orc_batch_gen_free(bg);
    orc_kv_pool_free(pool);
}

/* Chunked prefill: a 90-token prompt fed 16 tokens per step beside a
 * decoding request; both end with orc_generate's greedy ids (the chunked
 * one to rounding, which does not move a greedy choice of this model). */
static void test_chunked_prefill(void **state) {
    fixture *f = *state;
    orc_error err = {0};
    int32_t p[90], q[3];
    fill_ids(p, 90, 61, f->TV);
    fill_ids(q, 3, 62, f->TV);
    orc_gen_opts o;
    orc_gen_opts_default(&o);
    o.sampler.temperature = 0;
    o.max_tokens = 20;
    orc_generator *g = orc_generator_new(f->m, f->tok, CTX, &err);
    orc_gen_result wp, wq;
    assert_int_equal(orc_generate(g, p, 90, &o, &wp, &err), ORC_OK);
    orc_generator_reset(g);
    assert_int_equal(orc_generate(g, q, 3, &o, &wq, &err), ORC_OK);
    orc_kv_pool *pool = orc_kv_pool_new(&f->m->cfg, CTX, 0, &err);
    orc_batch_gen *bg = orc_batch_gen_new(f->m, f->tok, pool, &err);
    assert_int_equal(orc_batch_gen_set_prefill_chunk(bg, -1, &err), ORC_EINVAL);
    assert_int_equal(orc_batch_gen_set_prefill_chunk(bg, 16, &err), ORC_OK);
    const int64_t rq = orc_batch_gen_add(bg, q, 3, &o, &err);
    assert_int_equal(orc_batch_gen_step(bg, &err), ORC_OK);
    const int64_t rp = orc_batch_gen_add(bg, p, 90, &o, &err);
    /* 90 tokens take 6 steps of <= 16; q decodes meanwhile. */
    for (int s = 0; s < 5; s++) {
        assert_int_equal(orc_batch_gen_step(bg, &err), ORC_OK);
        assert_int_equal(orc_kv_seq_len(pool, 1), 16 * (s + 1));
    }
    assert_int_equal(orc_batch_gen_step(bg, &err), ORC_OK);
    assert_int_equal(orc_kv_seq_len(pool, 1), 90);
    while (orc_batch_gen_pending(bg) > 0) assert_int_equal(orc_batch_gen_step(bg, &err), ORC_OK);
    orc_gen_result gp, gq;
    assert_int_equal(orc_batch_gen_take(bg, rp, &gp, &err), ORC_OK);
    assert_int_equal(orc_batch_gen_take(bg, rq, &gq, &err), ORC_OK);
    expect_same_result(&gq, &wq, "decoding beside a chunked prefill");
    expect_same_result(&gp, &wp, "chunked prefill");
    assert_int_equal(gp.prefilled, 90);
    orc_gen_result_free(&gp);
    orc_gen_result_free(&gq);
    orc_gen_result_free(&wp);
    orc_gen_result_free(&wq);
    orc_batch_gen_free(bg);
    orc_kv_pool_free(pool);
    orc_generator_free(g);
}

/* With a LoRA adapter active the step adds its deltas like the model's own
 * forward (the same values to rounding) and they change the logits. */
static void test_lora_adapters(void **state) {
    fixture *f = *state;
    orc_error err = {0};
    orc_lora_config lc;
    orc_lora_config_default(&lc);
    lc.rank = 2;
    orc_lora *ad = orc_lora_create(&f->m->cfg, &lc, false, &err);
    assert_non_null(ad);
    orc_rng r;
    orc_rng_init(&r, 3);
    for (int i = 0; i < ad->n_params; i++)
        orc_rng_fill_normal(&r, orc_f32(ad->params[i]), ad->params[i]->numel, 0.0f, 0.5f);
    orc_lora_stack stack = {.n = 1, .ad = {ad}, .weight = {1.0f}};
    int32_t p[9], q[2];
    fill_ids(p, 9, 71, f->TV);
    fill_ids(q, 2, 72, f->TV);
    float *base = malloc(sizeof(float) * 2 * (size_t)f->V), *l = malloc(sizeof(float) * 2 * (size_t)f->V);
    for (int with = 0; with < 2; with++) {
        assert_int_equal(orc_llm_set_adapters(f->m, with ? &stack : NULL, &err), ORC_OK);
        orc_kv_pool *pool = orc_kv_pool_new(&f->m->cfg, 0, 0, &err);
        const int32_t s0 = orc_kv_seq_new(pool, &err), s1 = orc_kv_seq_new(pool, &err);
        orc_llm_step_seq ss[2] = {{.seq = s0, .ids = p, .n = 9}, {.seq = s1, .ids = q, .n = 2}};
        assert_int_equal(orc_llm_step(&f->ctx, f->m, pool, ss, 2, with ? l : base, NULL, &err), ORC_OK);
        orc_kv_pool_free(pool);
    }
    for (int i = 0; i < 2; i++) {
        orc_generator *g = orc_generator_new(f->m, f->tok, CTX, &err);
        const float *want = orc_generator_feed(g, i ? q : p, i ? 2 : 9, &err);
        assert_non_null(want);
        double moved = 0;
        for (int64_t v = 0; v < f->TV; v++) {
            const float got = l[i * f->V + v];
            assert_float_equal(got, want[v], 1e-5f * (1.0f + fabsf(want[v])));
            moved += fabs((double)got - (double)base[i * f->V + v]);
        }
        assert_true(moved > 1e-2 * (double)f->TV);
        orc_generator_free(g);
    }
    assert_int_equal(orc_llm_set_adapters(f->m, NULL, &err), ORC_OK);
    free(base);
    free(l);
    orc_lora_free(ad);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed_batch_matches_single),
        cmocka_unit_test(test_same_bits_any_thread_count),
        cmocka_unit_test(test_fork_copy_truncate),
        cmocka_unit_test(test_resample),
        cmocka_unit_test(test_hidden_matches_llm_hidden),
        cmocka_unit_test(test_errors_leave_state),
        cmocka_unit_test(test_batch_generate_matches_generate),
        cmocka_unit_test(test_forked_particles),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_lora_adapters),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
