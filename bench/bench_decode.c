/* Inference speed of the decoder LM at batch 1: prompt processing (prefill)
 * and decode tokens/s for a randomly initialised model (the `tiny` preset
 * and the 110M `base` preset by default), beside llama.cpp running the same
 * weights exported to GGUF F32, when its llama-bench binary is given with
 * --llama-bench PATH (the column is skipped otherwise). Decode is bound by
 * memory traffic: each token reads every weight once, so the table also
 * gives model bytes x tokens/s against this machine's measured read
 * bandwidth. --cpu-time times orchard with the process's CPU clock instead
 * (use --threads 1): on a crowded machine that measures the work, not the
 * share of the cores the process got; the llama.cpp column stays wall time. */
#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "orchard/generate.h"
#include "orchard/llm.h"
#include "orchard/llm_gguf.h"
#include "orchard/runtime.h"
#include "orchard/tokenizer.h"
#include "peer_llama.h"

static bool cpu_time = false;

static double now(void) {
    struct timespec ts;
    clock_gettime(cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Memory bandwidth in GB/s: every thread copies its half of a 256 MiB
 * buffer with memcpy (glibc's vector copy); bytes read plus bytes written
 * over the time. */
static double read_bandwidth(void) {
    const size_t n = (size_t)256 << 20;
    char *src = malloc(n), *dst = malloc(n);
    if (!src || !dst) {
        free(src);
        free(dst);
        return 0;
    }
    memset(src, 1, n);
    memset(dst, 2, n);
    double best = 0;
    for (int r = 0; r < 4; r++) {
        double t = now();
#pragma omp parallel
        {
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
            size_t part = n / (size_t)nt, lo = part * (size_t)id, len = id == nt - 1 ? n - lo : part;
            memcpy(dst + lo, src + lo, len);
        }
        double gbs = 2.0 * (double)n / (now() - t) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(src);
    free(dst);
    return best;
}

static int argmax(const float *x, int64_t n) {
    int b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = (int)i;
    return b;
}

int main(int argc, char **argv) {
    const char *llama = NULL, *presets[4] = {"tiny", "base"};
    int n_presets = 2, threads = 2, n_prompt = 128, n_gen = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--llama-bench") && i + 1 < argc) llama = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) n_prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gen") && i + 1 < argc) n_gen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--preset") && i + 1 < argc) { presets[0] = argv[++i]; n_presets = 1; }
        else if (!strcmp(argv[i], "--cpu-time")) cpu_time = true;
        else {
            fprintf(stderr, "usage: bench_decode [--preset tiny|small|base] [--threads 2] [--prompt 128] [--gen 64] "
                            "[--cpu-time] [--llama-bench PATH]\n");
            return 2;
        }
    }
    orc_set_threads(threads);
    double bw = cpu_time ? 0 : read_bandwidth(); /* a CPU-time rate is no bandwidth */
    printf("bench_decode: batch 1, %d threads, prompt %d tokens, %d generated; memory bandwidth %.1f GB/s (memcpy, read + write)%s\n\n", threads,
           n_prompt, n_gen, bw, cpu_time ? "; orchard tok/s per CPU second" : "");
    printf("| model | params | system | prefill tok/s | decode tok/s | decode GB/s of weights | of bandwidth |\n");
    printf("|---|---:|---|---:|---:|---:|---:|\n");
    orc_error err = {0};
    orc_tokenizer *tok = small_tokenizer(&err);
    if (!tok) {
        fprintf(stderr, "bench_decode: %s\n", err.msg);
        return 1;
    }
    for (int p = 0; p < n_presets; p++) {
        orc_llm_config cfg;
        if (orc_llm_config_preset(presets[p], &cfg, &err) != ORC_OK) {
            fprintf(stderr, "bench_decode: %s\n", err.msg);
            return 1;
        }
        cfg.max_position_embeddings = n_prompt + n_gen + 8;
        orc_llm *m = orc_llm_create(&cfg, false, &err);
        if (!m) {
            fprintf(stderr, "bench_decode: %s\n", err.msg);
            return 1;
        }
        orc_llm_init_weights(m, 1);
        const double bytes = (double)orc_llm_config_num_params(&cfg) * 4.0;
        orc_generator *g = orc_generator_new(m, NULL, cfg.max_position_embeddings, &err);
        int32_t *prompt = malloc(sizeof(int32_t) * (size_t)n_prompt);
        for (int i = 0; i < n_prompt; i++) prompt[i] = (int32_t)((i * 37 + 11) % 250);
        double best_pp = 0, best_tg = 0;
        for (int r = 0; r < 3; r++) {
            orc_generator_reset(g);
            double t = now();
            const float *logits = orc_generator_feed(g, prompt, (size_t)n_prompt, &err);
            double pp = n_prompt / (now() - t);
            t = now();
            for (int i = 0; i < n_gen && logits; i++) {
                int32_t next = argmax(logits, cfg.vocab_size) % 250;
                logits = orc_generator_feed(g, &next, 1, &err);
            }
            if (!logits) {
                fprintf(stderr, "bench_decode: %s\n", err.msg);
                return 1;
            }
            double tg = n_gen / (now() - t);
            if (pp > best_pp) best_pp = pp;
            if (tg > best_tg) best_tg = tg;
        }
        printf("| %s | %.1fM | orchard | %.0f | %.1f | %.1f | %.2f |\n", presets[p],
               orc_llm_config_num_params(&cfg) / 1e6, best_pp, best_tg, bytes * best_tg / 1e9,
               bw > 0 ? bytes * best_tg / 1e9 / bw : 0);
        if (llama) {
            char path[256];
            snprintf(path, sizeof path, "/tmp/orchard_bench_%s_%d.gguf", presets[p], (int)getpid());
            double lpp = 0, ltg = 0;
            if (orc_llm_export_gguf(m, tok, path, &(orc_gguf_export_opts){0}, &err) == ORC_OK &&
                llama_bench(llama, path, threads, n_prompt, n_gen, &lpp, &ltg) == 0) {
                printf("| %s | | llama.cpp | %.0f | %.1f | %.1f | %.2f |\n", presets[p], lpp, ltg, bytes * ltg / 1e9,
                       bw > 0 ? bytes * ltg / 1e9 / bw : 0);
                printf("| %s | | orchard / llama.cpp | %.2fx | %.2fx | | |\n", presets[p], best_pp / lpp,
                       best_tg / ltg);
            } else {
                printf("| %s | | llama.cpp | (failed: %s) | | | |\n", presets[p], err.code ? err.msg : "llama-bench");
            }
            unlink(path);
        }
        free(prompt);
        orc_generator_free(g);
        orc_llm_free(m);
    }
    orc_tokenizer_free(tok);
    if (!llama) printf("\n(llama.cpp column skipped: pass --llama-bench PATH to compare)\n");
    return 0;
}
