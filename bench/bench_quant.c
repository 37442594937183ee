/* Quantized inference speed (orchard/quant.h) against float32 on the same
 * machine: matrix-vector GB/s of weights streamed for a [4096, 4096] matrix
 * (float orc_linear vs Q8_0, Q4_0, PAL4 and PAL2 on every kernel path the
 * CPU has), and prefill and decode tokens/s of a randomly initialised model
 * (the `tiny` preset by default; other presets as arguments) in fp32, q8_0,
 * q4_0, pal4, pal2 and mixed:3.5, with the largest logit difference from
 * fp32 as a sanity column. The mixed plan here comes from a size-weighted
 * error proxy, not from calibration text (a random model has none worth
 * measuring): it only fixes the mix of kernels whose speed is measured.
 * Prefill is a 64-token prompt after one untimed warm-up pass, with the
 * output projection for its last position only (as generation and
 * llama-bench's pp test run a prompt).
 * --repeat N runs each model measurement N times and keeps the best rates
 * (the 2-core development machine is shared; the best run is the one least
 * disturbed by other work).
 * --cpu-time times with the process's CPU clock (use one thread).
 * --schemes LIST keeps only those rows (fp32,q8_0,q4_0,pal4,pal2,mixed);
 * --no-matvec skips the matrix-vector table; --threads N sets the threads.
 * --llama-bench PATH adds the side by side with llama.cpp: the same random
 * model as GGUF q8_0 / q4_0 files, decoded by orchard and by llama-bench
 * (tiny and base unless presets are given; see side_by_side).
 * --keep-gguf keeps those files (their paths are printed) for measuring
 * both sides with an outside tool, e.g. perf stat with one thread.
 * usage: bench_quant [--tokens N] [--repeat N] [--cpu-time] [--schemes LIST] [--no-matvec]
 *                    [--threads N] [--llama-bench PATH] [--keep-gguf] [[--preset] PRESET ...] */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "orchard/llm_gguf.h"
#include "orchard/ops.h"
#include "orchard/quant.h"
#include "orchard/rng.h"
#include "orchard/runtime.h"
#include "peer_llama.h"

/* --cpu-time: process CPU time instead of wall time. With one thread this
 * measures the work, not the share of a crowded machine the process got. */
static bool cpu_time = false;

static double now(void) {
    struct timespec ts;
    clock_gettime(cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- matrix-vector ---------------------------------------------------------------- */

static void bench_matvec(void) {
    const int64_t R = 4096, C = 4096, reps = 20;
    float *w = malloc(sizeof(float) * (size_t)(R * C)), *x = malloc(sizeof(float) * (size_t)C);
    float *y = malloc(sizeof(float) * (size_t)R);
    orc_rng r;
    orc_rng_init(&r, 1);
    orc_rng_fill_normal(&r, w, R * C, 0.0f, 1.0f);
    orc_rng_fill_normal(&r, x, C, 0.0f, 1.0f);
    printf("matrix-vector [%lld, %lld] (GB/s of weights read, best of %lld)\n", (long long)R, (long long)C,
           (long long)reps);
    /* float: orc_linear in no-grad mode */
    orc_arena *a = orc_arena_create(1 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 0);
    orc_set_no_grad(&ctx, true);
    orc_error err = {0};
    orc_tensor *wt = orc_tensor_wrap(a, ORC_F32, 2, ORC_SHAPE(R, C), w, &err);
    double best = 1e9;
    for (int64_t i = 0; i < reps; i++) {
        orc_arena_mark m = orc_arena_get_mark(a);
        orc_tensor *xt = orc_new(&ctx, ORC_F32, 2, ORC_SHAPE(1, C));
        memcpy(xt->data, x, sizeof(float) * (size_t)C);
        double t = now();
        orc_linear(&ctx, xt, wt, NULL);
        t = now() - t;
        best = t < best ? t : best;
        orc_arena_rewind(a, m);
    }
    printf("  %-8s %-17s %8.2f GB/s  %8.3f ms\n", "fp32", "sgemm", (double)(R * C * 4) / best / 1e9, best * 1e3);
    orc_arena_destroy(a);
    const orc_ggml_type types[] = {ORC_GGML_Q8_0, ORC_GGML_Q4_0, ORC_Q_PAL4, ORC_Q_PAL2};
    const orc_q_path paths[] = {ORC_Q_PORTABLE, ORC_Q_AVX2, ORC_Q_AVX512, ORC_Q_AVX2, ORC_Q_AVX512};
    uint8_t *xq = malloc(orc_q_row_bytes(ORC_GGML_Q8_0, C));
    orc_q8_quantize_rows(x, 1, C, xq);
    for (int t = 0; t < 4; t++) {
        orc_qmat q;
        if (orc_qmat_quantize_ex(&q, types[t], w, R, C, ORC_Q_PAL_GROUP, &err) != ORC_OK) continue;
        /* paths 3, 4: AVX2 and AVX-512 on the packed copy (orc_qmat_pack, as a model loads) */
        for (int p = 0; p < 5; p++) {
            if (p == 3 && !orc_qmat_pack(&q)) break;
            if (orc_q_set_path(paths[p], &err) != ORC_OK) {
                orc_error_clear(&err);
                continue;
            }
            best = 1e9;
            for (int64_t i = 0; i < reps; i++) {
                double s = now();
                orc_q_matmul_q8(&q, xq, 1, y);
                s = now() - s;
                best = s < best ? s : best;
            }
            char label[32];
            snprintf(label, sizeof label, "%s%s", orc_q_path_name(paths[p]), p > 2 ? "+pack" : "");
            printf("  %-8s %-17s %8.2f GB/s  %8.3f ms\n", orc_q_type_name(types[t]), label,
                   (double)orc_qmat_bytes(&q) / best / 1e9, best * 1e3);
        }
        orc_q_set_path(ORC_Q_AUTO, &err);
        orc_qmat_release(&q);
    }
    free(xq);
    free(w);
    free(x);
    free(y);
}

/* ---- decode -------------------------------------------------------------------------- */

typedef struct timing {
    double prefill_tps, decode_tps;
    float *logits; /* the prompt's last logits [V] */
} timing;

static orc_tensor *forward(orc_ctx *ctx, orc_llm *m, orc_qllm *q, orc_tensor *ids, orc_llm_cache *c) {
    return q ? orc_qllm_forward(ctx, q, ids, c) : orc_llm_forward(ctx, m, ids, c);
}

/* A prompt's pass as generation runs it (and llama-bench's pp test): every
 * position through the layers, the output projection for the last only. */
static orc_tensor *prefill(orc_ctx *ctx, orc_llm *m, orc_qllm *q, orc_tensor *ids, orc_llm_cache *c) {
    orc_tensor *h = q ? orc_qllm_hidden(ctx, q, ids, c) : orc_llm_hidden(ctx, m, ids, c);
    if (!h) return NULL;
    orc_tensor *last = orc_slice(ctx, h, 1, h->shape[1] - 1, 1);
    return q ? orc_qllm_linear(ctx, last, &q->lm_head) : orc_linear(ctx, last, m->lm_head, NULL);
}

static int repeats = 1;

static timing run_model_once(orc_llm *m, orc_qllm *q, int64_t prompt, int64_t tokens);

/* The best prefill and decode rates of `repeats` runs (the logits are the same each time). */
static timing run_model(orc_llm *m, orc_qllm *q, int64_t prompt, int64_t tokens) {
    timing best = run_model_once(m, q, prompt, tokens);
    for (int i = 1; i < repeats; i++) {
        timing t = run_model_once(m, q, prompt, tokens);
        best.prefill_tps = t.prefill_tps > best.prefill_tps ? t.prefill_tps : best.prefill_tps;
        best.decode_tps = t.decode_tps > best.decode_tps ? t.decode_tps : best.decode_tps;
        free(t.logits);
    }
    return best;
}

static timing run_model_once(orc_llm *m, orc_qllm *q, int64_t prompt, int64_t tokens) {
    const orc_llm_config *cfg = q ? &q->cfg : &m->cfg;
    timing out = {0};
    orc_error err = {0};
    orc_arena *a = orc_arena_create((size_t)64 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 0);
    orc_set_no_grad(&ctx, true);
    orc_llm_cache *c = orc_llm_cache_new(cfg, 1, prompt + tokens + 1, &err);
    if (!c) return out;
    orc_tensor *ids = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, prompt));
    for (int64_t i = 0; i < prompt; i++) orc_i32(ids)[i] = (int32_t)((i * 7919) % cfg->vocab_size);
    /* one untimed pass first (as llama-bench warms up): the arena's pages
     * are touched once, as in a server that keeps its arena */
    orc_arena_mark mk = orc_arena_get_mark(a);
    prefill(&ctx, m, q, ids, c);
    orc_arena_rewind(a, mk);
    orc_llm_cache_clear(c);
    double t = now();
    orc_tensor *y = prefill(&ctx, m, q, ids, c);
    out.prefill_tps = (double)prompt / (now() - t);
    const int64_t V = cfg->vocab_size;
    out.logits = malloc(sizeof(float) * (size_t)V);
    if (y) memcpy(out.logits, orc_f32(y), sizeof(float) * (size_t)V);
    orc_ctx_reset(&ctx);
    int32_t tok = 1;
    t = now();
    for (int64_t i = 0; i < tokens && y; i++) {
        orc_tensor *one = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, 1));
        orc_i32(one)[0] = tok;
        y = forward(&ctx, m, q, one, c);
        if (y) tok = (int32_t)(((int64_t)tok * 31 + 7) % V);
        orc_ctx_reset(&ctx);
    }
    out.decode_tps = (double)tokens / (now() - t);
    orc_llm_cache_free(c);
    orc_arena_destroy(a);
    return out;
}

#define ORC_GGML_COUNT_MIXED ((orc_ggml_type)-1)

/* A mixed plan at budget (or just above the floor when the embeddings make
 * the budget unreachable) from a proxy sensitivity: each candidate's typical
 * relative weight error on Gaussian weights times the tensor's size. */
static orc_status mixed_plan(const orc_llm_config *cfg, double budget, orc_quant_plan *p) {
    orc_error err = {0};
    const double rel[ORC_QMIX_N] = {0.00003, 0.007, 0.011, 0.11};
    const int64_t N = cfg->num_hidden_layers * ORC_QLLM_PROJ;
    double *delta = malloc(sizeof(double) * (size_t)(N * ORC_QMIX_N)), got = 0.0;
    if (!delta) return ORC_ENOMEM;
    const int64_t D = cfg->hidden_size, F = cfg->intermediate_size;
    const double size[ORC_QLLM_PROJ] = {1, 0.5, 0.5, 1, (double)F / D, (double)F / D, (double)F / D};
    for (int64_t t = 0; t < N; t++)
        for (int c = 0; c < ORC_QMIX_N; c++) delta[t * ORC_QMIX_N + c] = rel[c] * size[t % ORC_QLLM_PROJ];
    orc_quant_plan floor_plan;
    orc_status st = orc_quant_plan_uniform(&floor_plan, cfg->num_hidden_layers, ORC_Q_PAL2, ORC_Q_PAL_GROUP, &err);
    if (st == ORC_OK) {
        const double lo = orc_quant_plan_bpw(cfg, &floor_plan) + 0.1;
        orc_quant_plan_release(&floor_plan);
        st = orc_quant_plan_mixed(cfg, budget > lo ? budget : lo, ORC_Q_PAL_GROUP, delta, p, &got, &err);
    }
    if (st != ORC_OK) fprintf(stderr, "bench_quant: %s\n", err.msg);
    free(delta);
    return st;
}

/* --schemes a,b,...: only these quantized rows (all when NULL). */
static const char *only_schemes = NULL;

static bool wanted(const char *name) {
    if (!only_schemes) return true;
    const size_t n = strlen(name);
    for (const char *s = only_schemes; (s = strstr(s, name)) != NULL; s += n)
        if ((s == only_schemes || s[-1] == ',') && (s[n] == '\0' || s[n] == ',')) return true;
    return false;
}

static void bench_model(const char *preset, int64_t tokens) {
    orc_llm_config cfg;
    orc_error err = {0};
    if (orc_llm_config_preset(preset, &cfg, &err) != ORC_OK) {
        fprintf(stderr, "bench_quant: %s\n", err.msg);
        return;
    }
    orc_llm *m = orc_llm_create(&cfg, false, &err);
    if (!m) {
        fprintf(stderr, "bench_quant: %s\n", err.msg);
        return;
    }
    orc_llm_init_weights(m, 1);
    const int64_t prompt = 64 < cfg.max_position_embeddings / 2 ? 64 : cfg.max_position_embeddings / 2;
    if (tokens > cfg.max_position_embeddings - prompt - 1) tokens = cfg.max_position_embeddings - prompt - 1;
    const double params = (double)orc_llm_config_num_params(&cfg);
    printf("\nmodel %s (dim %lld, %lld layers, FFN %lld, vocab %lld): prefill %lld tokens, decode %lld tokens, "
           "kernels %s\n",
           preset, (long long)cfg.hidden_size, (long long)cfg.num_hidden_layers, (long long)cfg.intermediate_size,
           (long long)cfg.vocab_size, (long long)prompt, (long long)tokens, orc_q_path_name(orc_q_active_path()));
    printf("  %-6s %8s %10s %14s %14s %16s\n", "scheme", "bpw", "MB", "prefill tok/s", "decode tok/s",
           "max logit diff");
    timing base = {0};
    if (wanted("fp32")) {
        base = run_model(m, NULL, prompt, tokens);
        printf("  %-6s %8.2f %10.2f %14.1f %14.1f %16s\n", "fp32", 32.0, params * 4 / 1e6, base.prefill_tps,
               base.decode_tps, "-");
    }
    const orc_ggml_type types[] = {ORC_GGML_Q8_0, ORC_GGML_Q4_0, ORC_Q_PAL4, ORC_Q_PAL2, ORC_GGML_COUNT_MIXED};
    const char *names[] = {"q8_0", "q4_0", "pal4", "pal2", "mixed"};
    for (int i = 0; i < 5; i++) {
        if (!wanted(names[i])) continue;
        orc_quant_plan plan;
        if (types[i] == ORC_GGML_COUNT_MIXED) {
            if (mixed_plan(&cfg, 3.5, &plan) != ORC_OK) continue;
        } else if (orc_quant_plan_uniform(&plan, cfg.num_hidden_layers, types[i], ORC_Q_PAL_GROUP, &err) != ORC_OK) {
            continue;
        }
        orc_qllm *q = orc_qllm_from_llm_plan(m, &plan, &err);
        orc_quant_plan_release(&plan);
        if (!q) {
            fprintf(stderr, "bench_quant: %s\n", err.msg);
            continue;
        }
        timing r = run_model(NULL, q, prompt, tokens);
        double maxd = 0.0, maxa = 0.0;
        for (int64_t v = 0; base.logits && r.logits && v < cfg.vocab_size; v++) {
            maxd = fmax(maxd, fabs((double)r.logits[v] - base.logits[v]));
            maxa = fmax(maxa, fabs((double)base.logits[v]));
        }
        const double bytes = (double)orc_qllm_weight_bytes(q);
        printf("  %-6s %8.2f %10.2f %14.1f %14.1f %15.1f%%\n", names[i], 8.0 * bytes / params,
               bytes / 1e6, r.prefill_tps, r.decode_tps, 100.0 * maxd / (maxa > 0 ? maxa : 1));
        free(r.logits);
        orc_qllm_free(q);
    }
    free(base.logits);
    orc_llm_free(m);
}

/* ---- side by side with llama.cpp ------------------------------------------------------- */

/* --llama-bench PATH: the preset's random model exported to GGUF and
 * quantized to q8_0 and q4_0 with orchard's own code (orc_quantize_gguf, as
 * `orchard quantize`); orchard decodes each file as loaded (orc_qllm_load)
 * and llama-bench runs the same file with the same thread count. Wall time
 * on both sides (--cpu-time is ignored here: llama-bench has no CPU clock). */
static bool keep_gguf = false;

static void side_by_side(const char *llama, const char *preset, int threads, int64_t tokens,
                         const orc_tokenizer *tok) {
    orc_llm_config cfg;
    orc_error err = {0};
    if (orc_llm_config_preset(preset, &cfg, &err) != ORC_OK) {
        fprintf(stderr, "bench_quant: %s\n", err.msg);
        return;
    }
    const int64_t prompt = 64;
    cfg.max_position_embeddings = prompt + tokens + 8;
    orc_llm *m = orc_llm_create(&cfg, false, &err);
    if (!m) {
        fprintf(stderr, "bench_quant: %s\n", err.msg);
        return;
    }
    orc_llm_init_weights(m, 1);
    char f32[256];
    snprintf(f32, sizeof f32, "/tmp/orchard_bench_quant_%s_%d.gguf", preset, (int)getpid());
    if (orc_llm_export_gguf(m, tok, f32, &(orc_gguf_export_opts){0}, &err) != ORC_OK) {
        printf("| %s | | (export failed: %s) | | | | | |\n", preset, err.msg);
        orc_llm_free(m);
        return;
    }
    orc_llm_free(m);
    const orc_ggml_type types[] = {ORC_GGML_Q8_0, ORC_GGML_Q4_0};
    const char *names[] = {"q8_0", "q4_0"};
    for (int i = 0; i < 2; i++) {
        if (!wanted(names[i])) continue;
        char path[300];
        snprintf(path, sizeof path, "%s.%s.gguf", f32, names[i]);
        orc_qllm *q = NULL;
        if (orc_quantize_gguf(f32, path, types[i], &err) != ORC_OK || !(q = orc_qllm_load(path, &err))) {
            printf("| %s | %s | (failed: %s) | | | | | |\n", preset, names[i], err.msg);
            orc_error_clear(&err);
            unlink(path);
            continue;
        }
        const int saved = repeats;
        repeats = repeats > 3 ? repeats : 3;
        const bool saved_cpu = cpu_time;
        cpu_time = false;
        timing r = run_model(NULL, q, prompt, tokens);
        cpu_time = saved_cpu;
        repeats = saved;
        free(r.logits);
        orc_qllm_free(q);
        double lpp = 0, ltg = 0;
        if (llama_bench(llama, path, threads, (int)prompt, (int)tokens, &lpp, &ltg) == 0)
            printf("| %s | %s | %.0f | %.1f | %.0f | %.1f | %.2fx | %.2fx |\n", preset, names[i], r.prefill_tps,
                   r.decode_tps, lpp, ltg, r.prefill_tps / lpp, r.decode_tps / ltg);
        else
            printf("| %s | %s | %.0f | %.1f | (llama-bench failed) | | | |\n", preset, names[i], r.prefill_tps,
                   r.decode_tps);
        if (keep_gguf)
            fprintf(stderr, "bench_quant: kept %s\n", path);
        else
            unlink(path);
    }
    unlink(f32);
}

int main(int argc, char **argv) {
    int64_t tokens = 64;
    bool matvec = true;
    const char *llama = NULL;
    int threads = 0;
    int n_presets = 0;
    const char *presets[8];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc)
            tokens = atoll(argv[++i]);
        else if (strcmp(argv[i], "--cpu-time") == 0)
            cpu_time = true;
        else if (strcmp(argv[i], "--llama-bench") == 0 && i + 1 < argc)
            llama = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--preset") == 0 && i + 1 < argc && n_presets < 8)
            presets[n_presets++] = argv[++i];
        else if (strcmp(argv[i], "--keep-gguf") == 0)
            keep_gguf = true;
        else if (strcmp(argv[i], "--no-matvec") == 0)
            matvec = false;
        else if (strcmp(argv[i], "--schemes") == 0 && i + 1 < argc)
            only_schemes = argv[++i];
        else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
            repeats = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 1;
        else if (n_presets < 8)
            presets[n_presets++] = argv[i];
    }
    const bool given = n_presets > 0;
    if (n_presets == 0) presets[n_presets++] = "tiny";
    if (threads > 0) orc_set_threads(threads);
    if (matvec) bench_matvec();
    for (int i = 0; i < n_presets; i++) bench_model(presets[i], tokens > 0 ? tokens : 64);
    if (!llama) {
        printf("\n(llama.cpp side by side skipped: pass --llama-bench PATH to compare)\n");
        return 0;
    }
    orc_error err = {0};
    orc_tokenizer *tok = small_tokenizer(&err);
    if (!tok) {
        fprintf(stderr, "bench_quant: %s\n", err.msg);
        return 1;
    }
    const int lt = threads > 0 ? threads : orc_get_threads();
    printf("\nside by side with llama.cpp: the same GGUF file, %d threads, prefill 64 tokens, decode %lld tokens, "
           "wall time, best of %d\n\n",
           lt, (long long)(tokens > 0 ? tokens : 64), repeats > 3 ? repeats : 3);
    printf("| model | scheme | orchard prefill tok/s | orchard decode tok/s | llama.cpp prefill tok/s | "
           "llama.cpp decode tok/s | prefill orchard / llama.cpp | decode orchard / llama.cpp |\n");
    printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
    /* without preset arguments: tiny and base, the two sizes the issue names */
    const char *side[2] = {"tiny", "base"};
    const int n_side = given ? n_presets : 2;
    for (int i = 0; i < n_side; i++)
        side_by_side(llama, given ? presets[i] : side[i], lt, tokens > 0 ? tokens : 64, tok);
    orc_tokenizer_free(tok);
    return 0;
}
