/* Training throughput of the decoder LM (the `tiny` preset by default:
 * dim 288, 6 layers, 6 heads, FFN 768, vocab 4096, seq 256, batch 8, AdamW,
 * clipping at 1.0), beside PyTorch training the same model on the same
 * threads in the same run (bench/peers/torch_train.py, skipped when
 * python3-torch is missing). Prints tokens/s, peak memory, the ratio and
 * the fraction of this machine's measured float32 GEMM peak. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "orchard/llm.h"
#include "orchard/ops.h"
#include "orchard/optim.h"
#include "orchard/runtime.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* GEMM peak: best of a few 1024^3 single-call sgemms (OpenBLAS's own threading). */
static double gemm_peak_gflops(void) {
    const int n = 1024;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double g = 2.0 * n * n * n / (now() - t) / 1e9;
        if (g > best) best = g;
    }
    free(a); free(b); free(c);
    return best;
}

static int run_peer(const char *python, const char *script, const orc_llm_config *c, int batch, int seq, int steps,
                    int threads, double *tps, double *rss) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s %s --dim %lld --layers %lld --heads %lld --kv_heads %lld --ffn %lld --vocab %lld --seq %d "
             "--batch %d --steps %d --threads %d 2>/dev/null",
             python, script, (long long)c->hidden_size, (long long)c->num_hidden_layers,
             (long long)c->num_attention_heads, (long long)c->num_key_value_heads, (long long)c->intermediate_size,
             (long long)c->vocab_size, seq, batch, steps, threads);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[1024] = {0};
    int ok = fgets(line, sizeof line, p) != NULL;
    int rc = pclose(p);
    if (!ok || rc != 0) return -1;
    char *t = strstr(line, "\"tokens_per_s\":"), *r = strstr(line, "\"peak_rss_mb\":");
    if (!t || !r) return -1;
    *tps = atof(t + 15);
    *rss = atof(r + 14);
    return 0;
}

int main(int argc, char **argv) {
    const char *preset = "tiny", *python = "/usr/bin/python3", *peer = NULL;
    int batch = 8, seq = 256, steps = 10, threads = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc) seq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--python") && i + 1 < argc) python = argv[++i];
        else if (!strcmp(argv[i], "--peer") && i + 1 < argc) peer = argv[++i];
        else {
            fprintf(stderr, "usage: bench_train [--preset tiny] [--batch 8] [--seq 256] [--steps 10] [--threads 2] "
                            "[--python /usr/bin/python3] [--peer bench/peers/torch_train.py | none]\n");
            return 2;
        }
    }
    orc_set_threads(threads);
    orc_error err = {0};
    orc_llm_config cfg;
    if (orc_llm_config_preset(preset, &cfg, &err) != ORC_OK) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    orc_llm *m = orc_llm_create(&cfg, true, &err);
    if (!m) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    orc_llm_init_weights(m, 1);
    orc_param_group g = orc_group(m->params, m->n_params, 0.1f);
    orc_optim *opt = orc_adamw_new(&g, 1, (orc_adamw_opts){0.9f, 0.95f, 1e-8f}, &err);
    orc_arena *arena = orc_arena_create((size_t)256 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, arena, 1);
    orc_rng rng;
    orc_rng_init(&rng, 7);
    const int warmup = 2;
    double t0 = 0, loss = 0;
    for (int step = 0; step < warmup + steps; step++) {
        if (step == warmup) t0 = now();
        orc_tensor *ids = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(batch, seq));
        orc_tensor *tg = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(batch, seq));
        for (int i = 0; i < batch * seq; i++) {
            orc_i32(ids)[i] = (int32_t)orc_rng_below(&rng, (uint32_t)cfg.vocab_size);
            orc_i32(tg)[i] = (int32_t)orc_rng_below(&rng, (uint32_t)cfg.vocab_size);
        }
        orc_tensor *l = orc_llm_loss(&ctx, m, ids, tg);
        if (!l || orc_backward(&ctx, l) != ORC_OK) {
            fprintf(stderr, "bench_train: %s\n", ctx.err.msg);
            return 1;
        }
        loss = orc_f32(l)[0];
        orc_optim_clip_grad_norm(opt, 1.0f);
        orc_optim_step(opt, 1e-3f, &err);
        orc_optim_zero_grad(opt);
        orc_ctx_reset(&ctx);
    }
    double dt = now() - t0, tps = (double)batch * seq * steps / dt;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss = (double)ru.ru_maxrss / 1024.0;
    /* Model FLOPs per token: 6 x (matmul weights incl. the output head) plus causal attention (QK^T and PV, forward
     * and backward: 6 x L x seq x D on average over positions). */
    double p_mat = (double)orc_llm_config_num_params(&cfg) - (double)cfg.vocab_size * cfg.hidden_size *
                   (cfg.tie_word_embeddings ? 0 : 1) - (double)cfg.num_hidden_layers * 2 * cfg.hidden_size;
    double flops_tok = 6.0 * p_mat + 6.0 * cfg.num_hidden_layers * seq * cfg.hidden_size;
    double peak = gemm_peak_gflops();
    printf("bench_train: preset %s, batch %d x seq %d, %d threads, %d timed steps (final loss %.3f)\n\n", preset,
           batch, seq, threads, steps, loss);
    printf("| system | tokens/s | peak RSS MiB | model GFLOP/s | fraction of GEMM peak (%.0f GFLOP/s) |\n", peak);
    printf("|---|---:|---:|---:|---:|\n");
    printf("| orchard | %.0f | %.0f | %.1f | %.2f |\n", tps, rss, tps * flops_tok / 1e9, tps * flops_tok / 1e9 / peak);
    double ptps = 0, prss = 0;
    if (!peer) peer = "bench/peers/torch_train.py";
    if (strcmp(peer, "none") != 0 &&
        run_peer(python, peer, &cfg, batch, seq, steps, threads, &ptps, &prss) == 0) {
        printf("| PyTorch | %.0f | %.0f | %.1f | %.2f |\n", ptps, prss, ptps * flops_tok / 1e9,
               ptps * flops_tok / 1e9 / peak);
        printf("\norchard / PyTorch tokens/s: %.2fx; peak memory %.2fx\n", tps / ptps, rss / prss);
    } else {
        printf("\n(PyTorch peer skipped: %s %s did not run)\n", python, peer);
    }
    orc_optim_free(opt);
    orc_arena_destroy(arena);
    orc_llm_free(m);
    return 0;
}
