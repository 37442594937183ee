/* bench_gemm: throughput of orchard's matrix products against OpenBLAS.
 * For a few transformer-sized shapes it times orc_matmul forward (no-grad),
 * a direct cblas_sgemm on the same operands in the same run, and orc_linear
 * forward + backward (x, w and bias all needing gradients), and prints the
 * medians as a Markdown table. Options: --threads N (OpenMP threads, used by
 * both orchard and OpenBLAS), --repeat N (timed runs per entry, after two
 * warm-up runs). */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchard/ops.h"

typedef struct shape {
    int64_t m, k, n;
} shape;

static const shape SHAPES[] = {
    {512, 768, 768}, {512, 768, 2048}, {512, 2048, 768}, {256, 288, 288}, {1024, 1024, 1024},
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static void fill(orc_tensor *t, uint64_t seed) {
    orc_rng r;
    orc_rng_init(&r, seed);
    orc_rng_fill_uniform(&r, orc_f32(t), t->numel, -1.0f, 1.0f);
}

typedef struct bench {
    orc_arena *params, *acts;
    orc_ctx ctx;
    orc_tensor *a, *b, *w, *bias;
    float *c, *gy;
    shape s;
} bench;

enum { RUN_MATMUL, RUN_BLAS, RUN_LINEAR };

/* One timed unit of work; false on an orchard error. */
static bool run_once(bench *B, int what) {
    const shape s = B->s;
    orc_ctx_reset(&B->ctx);
    if (what == RUN_BLAS) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s.m, (int)s.n, (int)s.k, 1.0f, orc_f32(B->a),
                    (int)s.k, orc_f32(B->b), (int)s.n, 0.0f, B->c, (int)s.n);
        return true;
    }
    if (what == RUN_MATMUL) {
        orc_set_no_grad(&B->ctx, true);
        return orc_matmul(&B->ctx, B->a, B->b, false, false) != NULL;
    }
    orc_set_no_grad(&B->ctx, false);
    B->a->grad = NULL; /* its gradient lives in the activation arena, reset above */
    orc_tensor *y = orc_linear(&B->ctx, B->a, B->w, B->bias);
    return y && orc_backward_with(&B->ctx, y, B->gy) == ORC_OK;
}

/* Median seconds over repeat runs after two warm-ups; negative on error. */
static double time_it(bench *B, int what, int repeat) {
    double *t = malloc(sizeof(double) * (size_t)repeat);
    if (!t) return -1;
    for (int i = 0; i < 2; i++)
        if (!run_once(B, what)) goto fail;
    for (int i = 0; i < repeat; i++) {
        double t0 = now();
        if (!run_once(B, what)) goto fail;
        t[i] = now() - t0;
    }
    double m = median(t, repeat);
    free(t);
    return m;
fail:
    fprintf(stderr, "bench_gemm: %s\n", orc_ctx_message(&B->ctx));
    free(t);
    return -1;
}

static bool setup(bench *B, shape s) {
    orc_error err = {0};
    memset(B, 0, sizeof *B);
    B->s = s;
    B->params = orc_arena_create(0);
    B->acts = orc_arena_create((size_t)64 << 20);
    if (!B->params || !B->acts) return false;
    orc_ctx_init(&B->ctx, B->acts, 1);
    B->a = orc_tensor_new(B->params, ORC_F32, 2, ORC_SHAPE(s.m, s.k), &err);
    B->b = orc_tensor_new(B->params, ORC_F32, 2, ORC_SHAPE(s.k, s.n), &err);
    B->w = orc_param_new(B->params, 2, ORC_SHAPE(s.n, s.k), "w", &err);
    B->bias = orc_param_new(B->params, 1, ORC_SHAPE(s.n), "bias", &err);
    B->c = malloc(sizeof(float) * (size_t)(s.m * s.n));
    B->gy = malloc(sizeof(float) * (size_t)(s.m * s.n));
    if (!B->a || !B->b || !B->w || !B->bias || !B->c || !B->gy) {
        fprintf(stderr, "bench_gemm: setup failed: %s\n", err.msg);
        return false;
    }
    fill(B->a, 1);
    fill(B->b, 2);
    fill(B->w, 3);
    fill(B->bias, 4);
    for (int64_t i = 0; i < s.m * s.n; i++) B->gy[i] = (float)(i % 7) * 0.1f - 0.3f;
    B->a->requires_grad = true;
    return true;
}

static void teardown(bench *B) {
    free(B->c);
    free(B->gy);
    if (B->acts) orc_arena_destroy(B->acts);
    if (B->params) orc_arena_destroy(B->params);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_gemm [--threads N] [--repeat N]\n");
    return 2;
}

int main(int argc, char **argv) {
    int threads = 0, repeat = 7;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else return usage();
    }
    if (repeat < 1 || threads < 0) return usage();
    if (threads > 0) omp_set_num_threads(threads);
    printf("bench_gemm: %d threads, median of %d runs, %s\n\n", omp_get_max_threads(), repeat,
           openblas_get_config());
    printf("| M | K | N | orc_matmul GFLOP/s | cblas_sgemm GFLOP/s | orchard/openblas | orc_linear fwd+bwd GFLOP/s |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|\n");
    int rc = 0;
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++) {
        const shape s = SHAPES[i];
        bench B;
        if (!setup(&B, s)) {
            teardown(&B);
            return 1;
        }
        const double flop = 2.0 * (double)s.m * (double)s.k * (double)s.n;
        double t_orc = time_it(&B, RUN_MATMUL, repeat);
        double t_blas = time_it(&B, RUN_BLAS, repeat);
        double t_lin = time_it(&B, RUN_LINEAR, repeat);
        if (t_orc < 0 || t_blas < 0 || t_lin < 0) {
            rc = 1;
        } else {
            printf("| %lld | %lld | %lld | %.1f | %.1f | %.2f | %.1f |\n", (long long)s.m, (long long)s.k,
                   (long long)s.n, flop / t_orc * 1e-9, flop / t_blas * 1e-9, t_blas / t_orc,
                   3 * flop / t_lin * 1e-9);
            fflush(stdout);
        }
        teardown(&B);
    }
    return rc;
}
