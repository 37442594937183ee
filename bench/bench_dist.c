/* Scaling of a training step (orchard/dist.h): the `tiny` preset, each
 * rank training on its own rows (weak scaling: rows per rank fixed, so the
 * global batch grows with the rank count), AdamW, one thread per rank. Run
 * without arguments it launches itself under `mpirun --oversubscribe -np P`
 * for P = 1, 2, 4 and prints Markdown tables:
 *   1. data parallel, the gradient all-reduce (4 MiB buckets) after
 *      backward and overlapped with it (orc_ddp_overlap_*);
 *   2. the MoE version of the preset (E experts, top-2, expert width F/2:
 *      the same activated parameters as the dense model) against the dense
 *      one on one process, then expert parallel over P ranks (experts split,
 *      tokens exchanged by all-to-all, the rest all-reduced).
 * Step time is the slowest rank's, median of the timed steps; "sync" is the
 * part after backward spent in the gradient all-reduce (with overlap: what
 * was left to wait for). --cpu-time measures each rank's thread CPU time
 * instead of wall time (for a loaded machine; waiting costs little CPU).
 * On a machine with fewer cores than P the ranks share cores and the
 * efficiency shows it; the tables say how many cores there were. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "orchard/dist.h"
#include "orchard/llm.h"
#include "orchard/ops.h"
#include "orchard/optim.h"
#include "orchard/rng.h"
#include "orchard/runtime.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool g_cpu_time;
static double clock_s(void) {
    if (!g_cpu_time) return now();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Both syncs' hooks (dense and, with expert parallelism, nothing else: the
 * experts of one data rank are not replicated). */
static void hook(void *user, int64_t k) { orc_ddp_overlap_hook(user, k); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One rank: prints "P step_s sync_s tokens_per_s" on rank 0. moe > 0: that
 * many experts in every layer; ep: split them over the ranks. */
static int worker(const char *preset, int rows, int seq, int steps, int zero, bool overlap, int moe, bool ep) {
    orc_error err = {0};
    orc_comm *w = orc_dist_init(NULL, NULL, &err);
    if (!w) {
        fprintf(stderr, "bench_dist: %s\n", err.msg);
        return 1;
    }
    orc_set_threads(1);
    orc_llm_config cfg;
    orc_llm *m = NULL;
    if (orc_llm_config_preset(preset, &cfg, &err) == ORC_OK) {
        if (moe > 0) {
            cfg.num_experts = moe;
            cfg.moe_every = 1;
            cfg.moe_top_k = 2;
            cfg.capacity_factor = 1.25;
            cfg.moe_intermediate_size = cfg.intermediate_size / 2; /* top-2 x F/2 = the dense F */
        }
        m = orc_llm_create(&cfg, true, &err);
    }
    orc_ep_llm *epm = m && ep && w->size > 1 ? orc_ep_llm_new(m, w, &err) : NULL;
    orc_tensor **params = epm ? epm->params : m ? m->params : NULL, **dense = NULL;
    int n_params = m ? m->n_params : 0, n_dense = 0;
    if (m && (!ep || w->size == 1 || epm)) dense = calloc((size_t)n_params + 1, sizeof *dense);
    for (int i = 0; dense && i < n_params; i++) /* one data rank: experts are not replicated, not synced */
        if (!epm || !orc_ep_param_is_expert(epm, i)) dense[n_dense++] = params[i];
    orc_ddp *d = dense ? orc_ddp_new(w, dense, n_dense, zero, 0, &err) : NULL;
    if (!d) {
        fprintf(stderr, "bench_dist: %s\n", err.msg);
        orc_dist_finalize(w, true);
        return 1;
    }
    orc_llm_init_weights(m, 1);
    int np = n_params;
    orc_tensor **op = epm || !zero ? params : orc_ddp_opt_params(d, &np);
    orc_param_group g = orc_group(op, np, 0.1f);
    orc_optim *opt = orc_adamw_new(&g, 1, (orc_adamw_opts){0.9f, 0.95f, 1e-8f}, &err);
    orc_arena *act = orc_arena_create((size_t)64 << 20), *fixed = orc_arena_create((size_t)1 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, act, 1);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(rows * (seq + 1)));
    double *step_t = calloc((size_t)steps + 2, sizeof *step_t), *sync_t = calloc((size_t)steps + 2, sizeof *sync_t);
    int rc = opt && ids && step_t && sync_t && orc_ddp_broadcast_params(d, &err) == ORC_OK ? 0 : 1;
    for (int s = 0; s < steps + 2 && rc == 0; s++) { /* 2 warm-up steps */
        for (int i = 0; i < rows * (seq + 1); i++)
            ids[i] = (int32_t)(orc_rand_u32(7, (uint64_t)(s * w->size + w->rank), (uint64_t)i) % cfg.vocab_size);
        orc_arena_reset(fixed);
        orc_tensor *x = orc_tensor_new(fixed, ORC_I32, 2, ORC_SHAPE(rows, seq), &err);
        orc_tensor *y = orc_tensor_new(fixed, ORC_I32, 2, ORC_SHAPE(rows, seq), &err);
        for (int r = 0; r < rows; r++)
            for (int t = 0; t < seq; t++) {
                orc_i32(x)[r * seq + t] = ids[r * (seq + 1) + t];
                orc_i32(y)[r * seq + t] = ids[r * (seq + 1) + t + 1];
            }
        double t0 = clock_s();
        for (int i = 0; i < n_params; i++) orc_zero_grad(params[i]);
        orc_tensor *loss = orc_llm_loss(&ctx, m, x, y);
        if (loss && m->moe_aux) loss = orc_add(&ctx, loss, m->moe_aux);
        loss = orc_scale(&ctx, loss, 1.0f / (float)w->size);
        if (loss && overlap && w->size > 1 && orc_ddp_overlap_begin(d, &ctx, &err) != ORC_OK) loss = NULL;
        if (!loss || orc_backward_hooked(&ctx, loss, overlap ? hook : NULL, d) != ORC_OK) {
            fprintf(stderr, "bench_dist: %s\n", orc_ctx_message(&ctx));
            rc = 1;
            break;
        }
        orc_ctx_reset(&ctx);
        double t1 = clock_s();
        double gn = orc_ddp_sync_grads(d, 1.0, &err);
        double t2 = clock_s();
        if (isnan(gn) || orc_optim_step(opt, 1e-3f, &err) != ORC_OK || orc_ddp_after_step(d, &err) != ORC_OK) rc = 1;
        double times[2] = {clock_s() - t0, t2 - t1};
        if (rc == 0 && orc_allreduce_f64(w, times, 2, ORC_REDUCE_MAX, &err) != ORC_OK) rc = 1;
        if (s >= 2) step_t[s - 2] = times[0], sync_t[s - 2] = times[1];
    }
    if (rc == 0 && w->rank == 0) {
        qsort(step_t, (size_t)steps, sizeof *step_t, cmp_double);
        qsort(sync_t, (size_t)steps, sizeof *sync_t, cmp_double);
        printf("%d %.6f %.6f %.1f\n", w->size, step_t[steps / 2], sync_t[steps / 2],
               (double)rows * seq * w->size / step_t[steps / 2]);
    }
    if (rc) fprintf(stderr, "bench_dist: rank %d: %s\n", w->rank, err.msg);
    free(ids);
    free(step_t);
    free(sync_t);
    orc_optim_free(opt);
    orc_ddp_free(d);
    free(dense);
    orc_ep_llm_free(epm);
    orc_llm_free(m);
    orc_arena_destroy(act);
    orc_arena_destroy(fixed);
    orc_dist_finalize(w, rc != 0);
    return rc;
}

/* Launch one configuration; false when it failed. */
static bool launch(const char *self, int p, const char *preset, int rows, int seq, int steps, int zero, bool overlap,
                   int moe, bool ep, double *st, double *sy, double *tps) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "mpirun --oversubscribe --bind-to none -np %d '%s' --worker --preset %s --rows %d --seq %d "
             "--steps %d --zero %d --overlap %d --moe %d%s%s",
             p, self, preset, rows, seq, steps, zero, overlap, moe, ep ? " --ep" : "", g_cpu_time ? " --cpu-time" : "");
    FILE *f = popen(cmd, "r");
    char line[256] = "";
    int np = 0;
    bool ok = f && fgets(line, sizeof line, f) && sscanf(line, "%d %lf %lf %lf", &np, st, sy, tps) == 4;
    if (f && pclose(f) != 0) ok = false;
    if (!ok) printf("(failed: `%s`)\n", cmd);
    return ok;
}

int main(int argc, char **argv) {
    const char *preset = "tiny";
    int rows = 4, seq = 128, steps = 5, zero = 0, max_np = 4, overlap = 1, moe = 8;
    bool is_worker = false, ep = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--worker")) is_worker = true;
        else if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[++i];
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc) seq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--zero") && i + 1 < argc) zero = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-np") && i + 1 < argc) max_np = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--overlap") && i + 1 < argc) overlap = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--moe") && i + 1 < argc) moe = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ep")) ep = true;
        else if (!strcmp(argv[i], "--cpu-time")) g_cpu_time = true;
        else {
            fprintf(stderr, "usage: bench_dist [--preset tiny] [--rows 4] [--seq 128] [--steps 5] [--zero 0|1] "
                            "[--max-np 4] [--moe 8 (experts; 0: skip the MoE table)] [--cpu-time]\n");
            return 2;
        }
    }
    if (rows < 1 || seq < 1 || steps < 1 || max_np < 1 || (zero != 0 && zero != 1) || moe < 0) {
        fprintf(stderr, "bench_dist: sizes must be positive, --zero 0 or 1\n");
        return 2;
    }
    if (is_worker) return worker(preset, rows, seq, steps, zero, overlap != 0, moe, ep);
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = '\0';
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    const char *clock_name = g_cpu_time ? "thread CPU time" : "wall time";
    printf("Data-parallel training step, preset %s, %d rows x %d tokens per rank, 1 thread per rank, ZeRO-%d, "
           "%ld cores, %s\n\n", preset, rows, seq, zero, sysconf(_SC_NPROCESSORS_ONLN), clock_name);
    printf("| ranks | overlap | step (ms) | sync after backward (ms) | tokens/s (all ranks) | "
           "scaling efficiency t(1)/t(P) |\n");
    printf("|---:|---:|---:|---:|---:|---:|\n");
    double t1 = 0, st, sy, tps;
    for (int p = 1; p <= max_np; p *= 2)
        for (int ov = 0; ov <= (zero ? 0 : 1); ov++) {
            if (!launch(self, p, preset, rows, seq, steps, zero, ov, 0, false, &st, &sy, &tps)) continue;
            if (p == 1 && ov == 0) t1 = st;
            printf("| %d | %s | %.1f | %.1f | %.0f | %.2f |\n", p, ov ? "on" : "off", 1e3 * st, 1e3 * sy, tps,
                   t1 > 0 ? t1 / st : 0);
        }
    if (moe == 0) return 0;
    printf("\nMoE (%d experts per layer, top-2, expert width intermediate_size/2, capacity factor 1.25) against "
           "the dense preset with the same activated parameters; expert parallel over P ranks (weak scaling, %s)"
           "\n\n", moe, clock_name);
    printf("| model | ranks | step (ms) | sync after backward (ms) | tokens/s (all ranks) | vs dense 1 rank | "
           "scaling efficiency t(1)/t(P) |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|\n");
    double dense1 = 0, moe1 = 0;
    if (launch(self, 1, preset, rows, seq, steps, 0, true, 0, false, &st, &sy, &tps)) {
        dense1 = st;
        printf("| dense | 1 | %.1f | %.1f | %.0f | 1.00 | |\n", 1e3 * st, 1e3 * sy, tps);
    }
    for (int p = 1; p <= max_np; p *= 2) {
        if (moe % p != 0) continue;
        if (!launch(self, p, preset, rows, seq, steps, 0, true, moe, true, &st, &sy, &tps)) continue;
        if (p == 1) moe1 = st;
        printf("| MoE | %d | %.1f | %.1f | %.0f | %.2f | %.2f |\n", p, 1e3 * st, 1e3 * sy, tps,
               dense1 > 0 ? st / dense1 : 0, moe1 > 0 ? moe1 / st : 0);
    }
    return 0;
}
