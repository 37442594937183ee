/* The server's continuous batcher (src/server/batcher.c): four threads feed
 * their own prompts and decode greedily through one batcher; every logit
 * they see must be the same bits as a private orc_generator gives for the
 * same tokens (so batching never changes an answer), the gate makes the
 * four share their steps for certain (one step per token for all four),
 * truncation keeps a prefix that feeds on like a fresh sequence (to
 * rounding),
 * and a sequence that outgrows its context fails alone without touching the
 * others in its step. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/server/batcher.h"
#include "orchard/generate.h"
#include "server_test_util.h"

#define THREADS 4
#define DECODE 12

static orc_llm *M;

typedef struct worker {
    srv_batcher *b;
    int id;
    int32_t prompt[16];
    int n_prompt;
    int32_t out[DECODE];
    float *logits; /* [(DECODE + 1) * V] */
    orc_status st;
} worker;

static void *run(void *arg) {
    worker *w = arg;
    orc_error err = {0};
    w->st = srv_test_greedy(w->b, NULL, w->prompt, (size_t)w->n_prompt, DECODE, w->out, w->logits,
                            M->cfg.vocab_size, &err);
    if (w->st != ORC_OK) fprintf(stderr, "worker %d: %s\n", w->id, err.msg);
    return NULL;
}

/* The same tokens through a private generator. */
static void reference(const worker *w, float *logits) {
    orc_error err = {0};
    assert_int_equal(srv_test_reference(M, w->prompt, (size_t)w->n_prompt, DECODE, w->out, logits, &err), ORC_OK);
}

static void test_shared_steps_same_bits(void **state) {
    (void)state;
    orc_error err = {0};
    srv_batcher *b = srv_batcher_new(M, THREADS, 64, 0, &err);
    assert_non_null(b);
    srv_batcher_set_gate(b, THREADS);
    const int64_t V = M->cfg.vocab_size;
    worker w[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].b = b;
        w[i].id = i;
        w[i].n_prompt = 3 + 3 * i; /* 3, 6, 9, 12 tokens: decode-sized and prefill-sized chunks */
        for (int k = 0; k < w[i].n_prompt; k++) w[i].prompt[k] = (int32_t)((7 * i + 3 * k + 1) % V);
        w[i].logits = malloc((size_t)(DECODE + 1) * (size_t)V * sizeof(float));
        assert_int_equal(pthread_create(&th[i], NULL, run, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    uint64_t steps, rows;
    srv_batcher_counts(b, &steps, &rows);
    /* 1 prompt step + DECODE decode steps, each holding all four */
    assert_int_equal(rows, (uint64_t)THREADS * (DECODE + 1));
    assert_int_equal(steps, (uint64_t)(DECODE + 1));
    float *ref = malloc((size_t)(DECODE + 1) * (size_t)V * sizeof(float));
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(w[i].st, ORC_OK);
        reference(&w[i], ref);
        if (memcmp(ref, w[i].logits, (size_t)(DECODE + 1) * (size_t)V * sizeof(float)) != 0)
            fail_msg("worker %d: batched logits differ from its own generator's", i);
        free(w[i].logits);
    }
    free(ref);
    srv_batcher_free(b);
}

static void test_truncate_and_overflow(void **state) {
    (void)state;
    orc_error err = {0};
    srv_batcher *b = srv_batcher_new(M, 2, 16, 0, &err);
    assert_non_null(b);
    srv_seq a, c;
    assert_int_equal(srv_seq_init(b, &a, &err), ORC_OK);
    assert_int_equal(srv_seq_init(b, &c, &err), ORC_OK);
    const int64_t V = M->cfg.vocab_size;
    int32_t ids[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    assert_non_null(srv_seq_feed(&a, ids, 10, &err));
    assert_int_equal(srv_seq_truncate(&a, 4, &err), ORC_OK);
    size_t n = 0;
    srv_seq_tokens(&a, &n);
    assert_int_equal(n, 4);
    float *after = malloc((size_t)V * sizeof(float));
    memcpy(after, srv_seq_feed(&a, ids + 4, 2, &err), (size_t)V * sizeof(float));
    /* a fresh sequence of the same 6 tokens; the kept keys came from a
     * 10-token chunk, so equal up to the rounding of another product shape */
    assert_non_null(srv_seq_feed(&c, ids, 4, &err));
    const float *fresh = srv_seq_feed(&c, ids + 4, 2, &err);
    assert_non_null(fresh);
    for (int64_t v = 0; v < V; v++)
        if (fabsf(after[v] - fresh[v]) > 1e-4f * (1.0f + fabsf(fresh[v])))
            fail_msg("logit %lld after truncation: %g, fresh %g", (long long)v, (double)after[v], (double)fresh[v]);
    /* 6 + 11 > 16 positions: an error naming the lengths, the sequence unchanged */
    int32_t more[11] = {0};
    orc_error_clear(&err);
    assert_null(srv_seq_feed(&a, more, 11, &err));
    assert_int_equal(err.code, ORC_ERANGE);
    srv_seq_tokens(&a, &n);
    assert_int_equal(n, 6);
    assert_non_null(srv_seq_feed(&a, more, 1, &err));
    assert_int_equal(srv_seq_truncate(&a, 99, &err), ORC_ERANGE);
    free(after);
    srv_seq_release(&a);
    srv_seq_release(&c);
    srv_batcher_free(b);
}

static int setup(void **state) {
    (void)state;
    orc_llm_config c;
    orc_llm_config_default(&c);
    c.hidden_size = 32;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 8;
    c.intermediate_size = 64;
    c.vocab_size = 97;
    c.max_position_embeddings = 64;
    orc_error err = {0};
    M = orc_llm_create(&c, false, &err);
    if (!M) return -1;
    orc_llm_init_weights(M, 4);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    orc_llm_free(M);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_steps_same_bits),
        cmocka_unit_test(test_truncate_and_overflow),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
