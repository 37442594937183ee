/* Training step time of MoE LMs against the dense LM with the same activated
 * parameters, in one process (issue 6's speed target: at most 1.3x). The
 * dense model is a preset (`tiny` by default: dim 288, 6 layers, FFN 768);
 * the MoE models make every FFN E experts of width F * 1 / k (token choice
 * top-k) or F / capacity_factor (expert choice), so each token uses as many
 * FFN parameters as in the dense model. A step is forward, backward
 * (including the router losses), clipping and AdamW on random tokens. The
 * models run in interleaved rounds and each keeps its best round, which
 * damps the noise of a shared machine. Prints a Markdown table with the
 * ratio of each MoE step time to the dense one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchard/llm.h"
#include "orchard/moe.h"
#include "orchard/ops.h"
#include "orchard/optim.h"
#include "orchard/runtime.h"

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
/* CPU seconds of every thread of the process: on a loaded machine this
 * tracks the work done better than the wall clock (OpenMP's spinning
 * threads count too, so compare it at equal thread counts only). */
static double cpu_now(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

typedef struct model_run {
    const char *name;
    orc_llm_config cfg;
    orc_llm *m;
    orc_optim *opt;
    double best, best_cpu, dropped, loss, cpu; /* cpu: CPU seconds per step of the last run_steps */
} model_run;

static int setup(model_run *r) {
    orc_error err = {0};
    r->m = orc_llm_create(&r->cfg, true, &err);
    if (!r->m) {
        fprintf(stderr, "bench_moe: %s: %s\n", r->name, err.msg);
        return 1;
    }
    orc_llm_init_weights(r->m, 1);
    orc_param_group g = orc_group(r->m->params, r->m->n_params, 0.1f);
    r->opt = orc_adamw_new(&g, 1, (orc_adamw_opts){0.9f, 0.95f, 1e-8f}, &err);
    if (!r->opt) {
        fprintf(stderr, "bench_moe: %s\n", err.msg);
        return 1;
    }
    r->best = r->best_cpu = INFINITY;
    return 0;
}

/* `steps` training steps; returns seconds per step, or a negative value on error. */
static double run_steps(model_run *r, orc_ctx *ctx, int batch, int seq, int steps, uint64_t seed) {
    orc_rng rng;
    orc_rng_init(&rng, seed);
    orc_error err = {0};
    double t0 = now(), c0 = cpu_now();
    int64_t dropped = 0, wanted = 0;
    for (int s = 0; s < steps; s++) {
        orc_tensor *ids = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(batch, seq));
        orc_tensor *tg = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(batch, seq));
        if (!ids || !tg) return -1;
        for (int i = 0; i < batch * seq; i++) {
            orc_i32(ids)[i] = (int32_t)orc_rng_below(&rng, (uint32_t)r->cfg.vocab_size);
            orc_i32(tg)[i] = (int32_t)orc_rng_below(&rng, (uint32_t)r->cfg.vocab_size);
        }
        orc_llm_moe_stats_reset(r->m);
        orc_tensor *l = orc_llm_loss(ctx, r->m, ids, tg);
        if (l) r->loss = orc_f32(l)[0];
        if (l && r->m->moe_aux) l = orc_add(ctx, l, r->m->moe_aux);
        if (!l || orc_backward(ctx, l) != ORC_OK) {
            fprintf(stderr, "bench_moe: %s: %s\n", r->name, ctx->err.msg);
            return -1;
        }
        for (int64_t i = 0; i < r->cfg.num_hidden_layers; i++) {
            const orc_moe_layer *y = r->m->layers[i].moe;
            if (!y) continue;
            dropped += y->stats.dropped;
            wanted += r->cfg.moe_router == ORC_MOE_EXPERT_CHOICE ? y->stats.tokens : y->stats.assignments;
        }
        orc_optim_clip_grad_norm(r->opt, 1.0f);
        if (orc_optim_step(r->opt, 1e-3f, &err) != ORC_OK) {
            fprintf(stderr, "bench_moe: %s\n", err.msg);
            return -1;
        }
        orc_optim_zero_grad(r->opt);
        orc_ctx_reset(ctx);
    }
    r->dropped = wanted ? (double)dropped / (double)wanted : 0;
    r->cpu = (cpu_now() - c0) / steps;
    return (now() - t0) / steps;
}

int main(int argc, char **argv) {
    const char *preset = "tiny";
    int batch = 8, seq = 256, steps = 5, rounds = 3, threads = 2, experts = 8;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc) seq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--experts") && i + 1 < argc) experts = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_moe [--preset tiny] [--batch 8] [--seq 256] [--steps 5] [--rounds 3] "
                            "[--threads 2] [--experts 8]\n");
            return 2;
        }
    }
    if (batch < 1 || seq < 1 || steps < 1 || rounds < 1 || threads < 1 || experts < 2) {
        fprintf(stderr, "bench_moe: sizes must be positive (experts >= 2)\n");
        return 2;
    }
    orc_set_threads(threads);
    orc_error err = {0};
    orc_llm_config dense;
    if (orc_llm_config_preset(preset, &dense, &err) != ORC_OK) {
        fprintf(stderr, "bench_moe: %s\n", err.msg);
        return 1;
    }
    if (seq > dense.max_position_embeddings) seq = (int)dense.max_position_embeddings;
    model_run runs[3] = {{.name = "dense", .cfg = dense}, {.name = "MoE token choice top-2", .cfg = dense},
                         {.name = "MoE expert choice", .cfg = dense}};
    for (int k = 1; k < 3; k++) {
        orc_llm_config *c = &runs[k].cfg;
        c->num_experts = experts;
        c->moe_every = 1;
        c->moe_top_k = 2;
        c->capacity_factor = 2.0;
        c->moe_router = k == 1 ? ORC_MOE_TOKEN_CHOICE : ORC_MOE_EXPERT_CHOICE;
        c->moe_intermediate_size = dense.intermediate_size / 2; /* 2 experts per token on average */
    }
    for (int k = 0; k < 3; k++)
        if (setup(&runs[k])) return 1;
    orc_arena *arena = orc_arena_create((size_t)512 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, arena, 1);
    for (int k = 0; k < 3; k++) /* warm-up: page in the arena, the optimizer state and the BLAS buffers */
        if (run_steps(&runs[k], &ctx, batch, seq, 1, 99) < 0) return 1;
    for (int round = 0; round < rounds; round++)
        for (int k = 0; k < 3; k++) {
            double t = run_steps(&runs[k], &ctx, batch, seq, steps, (uint64_t)round + 1);
            if (t < 0) return 1;
            if (t < runs[k].best) runs[k].best = t;
            if (runs[k].cpu < runs[k].best_cpu) runs[k].best_cpu = runs[k].cpu;
        }
    printf("bench_moe: preset %s, %d experts (FFN width %lld each), capacity factor 2, batch %d x seq %d, "
           "%d threads, best of %d rounds of %d steps\n\n", preset, experts,
           (long long)runs[1].cfg.moe_intermediate_size, batch, seq, threads, rounds, steps);
    printf("| model | total params | active params | ms/step | tokens/s | CPU ms/step | dropped | vs dense (wall) | "
           "vs dense (CPU) |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int k = 0; k < 3; k++) {
        const model_run *r = &runs[k];
        printf("| %s | %lld | %lld | %.1f | %.0f | %.1f | %.1f%% | %.2fx | %.2fx |\n", r->name,
               (long long)orc_llm_config_num_params(&r->cfg), (long long)orc_llm_config_active_params(&r->cfg),
               1e3 * r->best, (double)batch * seq / r->best, 1e3 * r->best_cpu, 100 * r->dropped,
               r->best / runs[0].best, r->best_cpu / runs[0].best_cpu);
    }
    for (int k = 0; k < 3; k++) {
        orc_optim_free(runs[k].opt);
        orc_llm_free(runs[k].m);
    }
    orc_arena_destroy(arena);
    return 0;
}
