/* Aggregate decode speed of the batched step (orc_llm_step over a paged KV
 * pool) at batch 1, 4 and 16 against the same number of independent
 * single-sequence generators (orc_generator_feed, one token each in turn),
 * for a randomly initialised model (the `tiny` preset by default). Both
 * sides prefill the same prompts first (not timed) and then decode greedily,
 * so they do the same arithmetic on the same rows; the batched side reads
 * each weight once per step for all B sequences, the independent side once
 * per sequence. The two sides alternate for --reps rounds and each keeps its
 * best round, so a load that comes and goes hits both alike. Prints a
 * Markdown table with both figures and the ratio. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchard/batch.h"
#include "orchard/generate.h"
#include "orchard/llm.h"
#include "orchard/rng.h"
#include "orchard/runtime.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int32_t argmax(const float *x, int64_t n) {
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = (int32_t)i;
    return b;
}

static int die(const orc_error *err) {
    fprintf(stderr, "bench_batch: %s\n", err->msg);
    return 1;
}

/* B generators, decoding one token each in turn: tokens/s over all of them. */
static double run_independent(orc_llm *m, int B, const int32_t *prompts, int n_prompt, int n_gen, orc_error *err) {
    orc_generator **g = calloc((size_t)B, sizeof *g);
    int32_t *next = calloc((size_t)B, sizeof *next);
    double tps = -1;
    for (int b = 0; b < B; b++) {
        g[b] = orc_generator_new(m, NULL, n_prompt + n_gen + 1, err);
        const float *l = g[b] ? orc_generator_feed(g[b], prompts + b * n_prompt, (size_t)n_prompt, err) : NULL;
        if (!l) goto done;
        next[b] = argmax(l, m->cfg.vocab_size);
    }
    double t0 = now();
    for (int t = 0; t < n_gen; t++)
        for (int b = 0; b < B; b++) {
            const float *l = orc_generator_feed(g[b], &next[b], 1, err);
            if (!l) goto done;
            next[b] = argmax(l, m->cfg.vocab_size);
        }
    tps = (double)B * n_gen / (now() - t0);
done:
    for (int b = 0; b < B; b++) orc_generator_free(g[b]);
    free(g);
    free(next);
    return tps;
}

/* One pool, one step per token for all B sequences. */
static double run_batched(orc_llm *m, int B, const int32_t *prompts, int n_prompt, int n_gen, orc_error *err) {
    const int64_t V = m->cfg.vocab_size;
    orc_kv_pool *pool = orc_kv_pool_new(&m->cfg, n_prompt + n_gen + 1, 0, err);
    orc_arena *arena = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, arena, 0);
    ctx.no_grad = true;
    orc_llm_step_seq *ss = calloc((size_t)B, sizeof *ss);
    int32_t *next = calloc((size_t)B, sizeof *next);
    float *logits = malloc(sizeof(float) * (size_t)(B * V));
    double tps = -1;
    if (!pool) goto done;
    for (int b = 0; b < B; b++) {
        ss[b].seq = orc_kv_seq_new(pool, err);
        ss[b].ids = prompts + b * n_prompt;
        ss[b].n = n_prompt;
    }
    if (orc_llm_step(&ctx, m, pool, ss, B, logits, NULL, err) != ORC_OK) goto done;
    for (int b = 0; b < B; b++) {
        next[b] = argmax(logits + b * V, V);
        ss[b].ids = &next[b];
        ss[b].n = 1;
    }
    double t0 = now();
    for (int t = 0; t < n_gen; t++) {
        if (orc_llm_step(&ctx, m, pool, ss, B, logits, NULL, err) != ORC_OK) goto done;
        for (int b = 0; b < B; b++) next[b] = argmax(logits + b * V, V);
    }
    tps = (double)B * n_gen / (now() - t0);
done:
    orc_kv_pool_free(pool);
    orc_arena_destroy(arena);
    free(ss);
    free(next);
    free(logits);
    return tps;
}

int main(int argc, char **argv) {
    const char *preset = "tiny";
    int threads = 2, n_prompt = 32, n_gen = 32, reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) n_prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gen") && i + 1 < argc) n_gen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_batch [--preset tiny|small|base] [--threads 2] [--prompt 32] [--gen 32] [--reps 3]\n");
            return 2;
        }
    }
    if (n_prompt < 1 || n_gen < 1 || threads < 1 || reps < 1) {
        fprintf(stderr, "bench_batch: --prompt, --gen, --threads and --reps must be positive\n");
        return 2;
    }
    orc_set_threads(threads);
    orc_error err = {0};
    orc_llm_config cfg;
    if (orc_llm_config_preset(preset, &cfg, &err) != ORC_OK) return die(&err);
    cfg.max_position_embeddings = n_prompt + n_gen + 8;
    orc_llm *m = orc_llm_create(&cfg, false, &err);
    if (!m) return die(&err);
    orc_llm_init_weights(m, 1);
    const int batches[3] = {1, 4, 16};
    int32_t *prompts = malloc(sizeof(int32_t) * (size_t)(16 * n_prompt));
    for (int i = 0; i < 16 * n_prompt; i++)
        prompts[i] = (int32_t)(orc_rand_u32(7, 0, (uint64_t)i) % (uint32_t)cfg.vocab_size);
    printf("bench_batch: %s preset (random weights), %d threads, prompt %d tokens, %d decoded per sequence, "
           "best of %d\n\n",
           preset, threads, n_prompt, n_gen, reps);
    printf("| batch | independent generators tok/s | batched step tok/s | batched / independent |\n");
    printf("|---:|---:|---:|---:|\n");
    int rc = 0;
    for (int i = 0; i < 3; i++) {
        const int B = batches[i];
        double a = 0, b = 0;
        for (int r = 0; r < reps && rc == 0; r++) {
            const double x = run_independent(m, B, prompts, n_prompt, n_gen, &err);
            const double y = x > 0 ? run_batched(m, B, prompts, n_prompt, n_gen, &err) : -1;
            if (x <= 0 || y <= 0) rc = die(&err);
            a = x > a ? x : a;
            b = y > b ? y : b;
        }
        if (rc) break;
        printf("| %d | %.0f | %.0f | %.2fx |\n", B, a, b, b / a);
        fflush(stdout);
    }
    free(prompts);
    orc_llm_free(m);
    return rc;
}
