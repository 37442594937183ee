/* Data-parallel scaling of a training step (orchard/dist.h): the `tiny`
 * preset, each rank training on its own rows (weak scaling: rows per rank
 * fixed, so the global batch grows with the rank count), the gradients
 * all-reduced in 4 MiB buckets, AdamW, one thread per rank. Run without
 * arguments it launches itself under `mpirun --oversubscribe -np P` for
 * P = 1, 2, 4 and prints a Markdown table: step time (the slowest rank's,
 * median of the timed steps), the part of it spent in the gradient
 * all-reduce, tokens/s over all ranks and the scaling efficiency
 * t(1) / t(P). On a machine with fewer cores than P the ranks share cores
 * and the efficiency shows it; the table says how many cores there were. */
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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One rank: prints "P step_s sync_s tokens_per_s" on rank 0. */
static int worker(const char *preset, int rows, int seq, int steps, int zero) {
    orc_error err = {0};
    orc_comm *w = orc_dist_init(NULL, NULL, &err);
    if (!w) {
        fprintf(stderr, "bench_dist: %s\n", err.msg);
        return 1;
    }
    orc_set_threads(1);
    orc_llm_config cfg;
    orc_llm *m = NULL;
    if (orc_llm_config_preset(preset, &cfg, &err) == ORC_OK) m = orc_llm_create(&cfg, true, &err);
    orc_ddp *d = m ? orc_ddp_new(w, m->params, m->n_params, zero, 0, &err) : NULL;
    if (!d) {
        fprintf(stderr, "bench_dist: %s\n", err.msg);
        orc_dist_finalize(w, true);
        return 1;
    }
    orc_llm_init_weights(m, 1);
    int np = 0;
    orc_tensor **op = orc_ddp_opt_params(d, &np);
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
        double t0 = now();
        for (int i = 0; i < m->n_params; i++) orc_zero_grad(m->params[i]);
        orc_tensor *loss = orc_llm_loss(&ctx, m, x, y);
        loss = orc_scale(&ctx, loss, 1.0f / (float)w->size);
        if (!loss || orc_backward(&ctx, loss) != ORC_OK) {
            fprintf(stderr, "bench_dist: %s\n", orc_ctx_message(&ctx));
            rc = 1;
            break;
        }
        orc_ctx_reset(&ctx);
        double t1 = now();
        double gn = orc_ddp_sync_grads(d, 1.0, &err);
        double t2 = now();
        if (isnan(gn) || orc_optim_step(opt, 1e-3f, &err) != ORC_OK || orc_ddp_after_step(d, &err) != ORC_OK) rc = 1;
        double times[2] = {now() - t0, t2 - t1};
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
    orc_llm_free(m);
    orc_arena_destroy(act);
    orc_arena_destroy(fixed);
    orc_dist_finalize(w, rc != 0);
    return rc;
}

int main(int argc, char **argv) {
    const char *preset = "tiny";
    int rows = 4, seq = 128, steps = 5, zero = 0, max_np = 4;
    bool is_worker = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--worker")) is_worker = true;
        else if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[++i];
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc) seq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--zero") && i + 1 < argc) zero = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-np") && i + 1 < argc) max_np = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_dist [--preset tiny] [--rows 4] [--seq 128] [--steps 5] [--zero 0|1] "
                            "[--max-np 4]\n");
            return 2;
        }
    }
    if (rows < 1 || seq < 1 || steps < 1 || max_np < 1 || (zero != 0 && zero != 1)) {
        fprintf(stderr, "bench_dist: sizes must be positive, --zero 0 or 1\n");
        return 2;
    }
    if (is_worker) return worker(preset, rows, seq, steps, zero);
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = '\0';
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    printf("Data-parallel training step, preset %s, %d rows x %d tokens per rank, 1 thread per rank, ZeRO-%d, "
           "%ld cores\n\n", preset, rows, seq, zero, sysconf(_SC_NPROCESSORS_ONLN));
    printf("| ranks | step (ms) | all-reduce (ms) | tokens/s (all ranks) | scaling efficiency t(1)/t(P) |\n");
    printf("|---:|---:|---:|---:|---:|\n");
    double t1 = 0;
    for (int p = 1; p <= max_np; p *= 2) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "mpirun --oversubscribe --bind-to none -np %d '%s' --worker --preset %s --rows %d --seq %d "
                 "--steps %d --zero %d",
                 p, self, preset, rows, seq, steps, zero);
        FILE *f = popen(cmd, "r");
        char line[256] = "";
        int np = 0;
        double st = 0, sy = 0, tps = 0;
        bool ok = f && fgets(line, sizeof line, f) && sscanf(line, "%d %lf %lf %lf", &np, &st, &sy, &tps) == 4;
        if (f && pclose(f) != 0) ok = false;
        if (!ok) {
            printf("| %d | failed (`%s`) | | | |\n", p, cmd);
            continue;
        }
        if (p == 1) t1 = st;
        printf("| %d | %.1f | %.1f | %.0f | %.2f |\n", p, 1e3 * st, 1e3 * sy, tps, t1 > 0 ? t1 / st : 0);
    }
    return 0;
}
