/* Benchmark of orc_attention (forward + backward) against the same
 * computation composed from naive pieces: per (batch, head) QK^T with
 * cblas_sgemm into a full [T, S] score matrix, a masked softmax, PV with
 * sgemm, and the backward likewise (dV = P^T dO, dP = dO V^T, the softmax
 * backward, dQ = dS K, dK = dS^T Q), keeping every probability matrix. Both
 * run on the same inputs; the table shows tokens/s (B * T per forward +
 * backward, median of the repeats), their ratio, and the largest difference
 * between the two outputs as a sanity check.
 *
 * usage: bench_attention [--threads N] [--repeat N] */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchard/ops.h"

typedef struct shape {
    const char *name;
    int64_t B, T, Hq, Hkv, D;
} shape;

typedef struct inputs {
    orc_tensor *q, *k, *v;
    float *dout; /* upstream gradient, [B, T, Hq, D] */
} inputs;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* ---- the fused op ------------------------------------------------------------ */

/* One forward + backward; returns seconds. out (may be NULL) gets the output. */
static double run_fused(orc_ctx *ctx, const shape *s, inputs *in, float *out) {
    in->q->grad = in->k->grad = in->v->grad = NULL; /* they lived in the reset arena */
    orc_attn_opts o = {.causal = true};
    double t0 = now_s();
    orc_tensor *y = orc_attention(ctx, in->q, in->k, in->v, &o);
    if (!y || orc_backward_with(ctx, y, in->dout) != ORC_OK) {
        fprintf(stderr, "bench_attention: %s\n", orc_ctx_message(ctx));
        exit(1);
    }
    double t = now_s() - t0;
    if (out) memcpy(out, orc_f32(y), sizeof(float) * (size_t)y->numel);
    orc_ctx_reset(ctx);
    (void)s;
    return t;
}

/* ---- the naive composition ------------------------------------------------------ */

typedef struct naive_buf {
    float *p;                  /* [B, Hq, T, T] probabilities */
    float *dp;                 /* [T, T] scratch */
    float *out, *gq, *gk, *gv; /* contiguous, same layouts as the tensors */
} naive_buf;

static void softmax_causal(float *p, int64_t T, int64_t S) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        float *row = p + t * S;
        const int64_t last = t + S - T;
        float mx = -INFINITY;
        for (int64_t j = 0; j < S; j++) {
            if (j > last) row[j] = -INFINITY;
            if (row[j] > mx) mx = row[j];
        }
        float sum = 0;
        for (int64_t j = 0; j < S; j++) sum += (row[j] = mx == -INFINITY ? 0.0f : expf(row[j] - mx));
        const float inv = sum > 0 ? 1.0f / sum : 0.0f;
        for (int64_t j = 0; j < S; j++) row[j] *= inv;
    }
}

/* dS = P * (dP - rowsum(dP * P)), in place in dp. */
static void softmax_backward(const float *p, float *dp, int64_t T, int64_t S) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *pr = p + t * S;
        float *dr = dp + t * S;
        float c = 0;
        for (int64_t j = 0; j < S; j++) c += pr[j] * dr[j];
        for (int64_t j = 0; j < S; j++) dr[j] = pr[j] * (dr[j] - c);
    }
}

static double run_naive(const shape *s, const inputs *in, naive_buf *nb) {
    const int64_t B = s->B, T = s->T, Hq = s->Hq, Hkv = s->Hkv, D = s->D, g = Hq / Hkv;
    const float scale = 1.0f / sqrtf((float)D);
    const float *q = orc_f32(in->q), *k = orc_f32(in->k), *v = orc_f32(in->v);
    const int ldq = (int)(Hq * D), ldk = (int)(Hkv * D);
    memset(nb->gk, 0, sizeof(float) * (size_t)(B * T * Hkv * D));
    memset(nb->gv, 0, sizeof(float) * (size_t)(B * T * Hkv * D));
    double t0 = now_s();
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            float *p = nb->p + (b * Hq + h) * T * T;
            const float *qh = q + b * T * Hq * D + h * D, *kh = k + b * T * Hkv * D + (h / g) * D;
            const float *vh = v + b * T * Hkv * D + (h / g) * D;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)D, scale, qh, ldq, kh, ldk,
                        0.0f, p, (int)T);
            softmax_causal(p, T, T);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)D, (int)T, 1.0f, p, (int)T, vh, ldk,
                        0.0f, nb->out + b * T * Hq * D + h * D, ldq);
        }
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            const float *p = nb->p + (b * Hq + h) * T * T;
            const int64_t qo = b * T * Hq * D + h * D, ko = b * T * Hkv * D + (h / g) * D;
            const float *dout = in->dout + qo;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)D, (int)T, 1.0f, p, (int)T, dout, ldq,
                        1.0f, nb->gv + ko, ldk);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)D, 1.0f, dout, ldq, v + ko, ldk,
                        0.0f, nb->dp, (int)T);
            softmax_backward(p, nb->dp, T, T);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)D, (int)T, scale, nb->dp, (int)T,
                        k + ko, ldk, 0.0f, nb->gq + qo, ldq);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)D, (int)T, scale, nb->dp, (int)T,
                        q + qo, ldq, 1.0f, nb->gk + ko, ldk);
        }
    return now_s() - t0;
}

/* ---- driver ------------------------------------------------------------------------ */

static void bench_shape(const shape *s, int repeat, orc_arena *params, orc_ctx *ctx) {
    const int64_t nq = s->B * s->T * s->Hq * s->D, nk = s->B * s->T * s->Hkv * s->D;
    orc_error err = {0};
    orc_rng r;
    orc_rng_init(&r, 7);
    inputs in;
    in.q = orc_tensor_new(params, ORC_F32, 4, ORC_SHAPE(s->B, s->T, s->Hq, s->D), &err);
    in.k = orc_tensor_new(params, ORC_F32, 4, ORC_SHAPE(s->B, s->T, s->Hkv, s->D), &err);
    in.v = orc_tensor_new(params, ORC_F32, 4, ORC_SHAPE(s->B, s->T, s->Hkv, s->D), &err);
    in.dout = orc_arena_alloc(params, sizeof(float) * (size_t)nq);
    naive_buf nb = {
        .p = malloc(sizeof(float) * (size_t)(s->B * s->Hq * s->T * s->T)),
        .dp = malloc(sizeof(float) * (size_t)(s->T * s->T)),
        .out = malloc(sizeof(float) * (size_t)nq),
        .gq = malloc(sizeof(float) * (size_t)nq),
        .gk = malloc(sizeof(float) * (size_t)nk),
        .gv = malloc(sizeof(float) * (size_t)nk),
    };
    float *fused_out = malloc(sizeof(float) * (size_t)nq);
    if (!in.q || !in.k || !in.v || !in.dout || !nb.p || !nb.dp || !nb.out || !nb.gq || !nb.gk || !nb.gv ||
        !fused_out) {
        fprintf(stderr, "bench_attention: out of memory (%s)\n", err.msg);
        exit(1);
    }
    orc_rng_fill_normal(&r, orc_f32(in.q), nq, 0, 1);
    orc_rng_fill_normal(&r, orc_f32(in.k), nk, 0, 1);
    orc_rng_fill_normal(&r, orc_f32(in.v), nk, 0, 1);
    orc_rng_fill_normal(&r, in.dout, nq, 0, 1);
    in.q->requires_grad = in.k->requires_grad = in.v->requires_grad = true;

    double *tf = malloc(sizeof(double) * (size_t)repeat), *tn = malloc(sizeof(double) * (size_t)repeat);
    run_fused(ctx, s, &in, fused_out); /* warm-up, and the output for the check */
    run_naive(s, &in, &nb);
    for (int i = 0; i < repeat; i++) {
        tf[i] = run_fused(ctx, s, &in, NULL);
        tn[i] = run_naive(s, &in, &nb);
    }
    double diff = 0;
    for (int64_t i = 0; i < nq; i++) diff = fmax(diff, fabs((double)fused_out[i] - nb.out[i]));
    const double mf = median(tf, repeat), mn = median(tn, repeat), tok = (double)(s->B * s->T);
    printf("| %-5s | %lld | %lld | %lld | %lld | %lld | %10.0f | %10.0f | %5.2fx | %.1e |\n", s->name,
           (long long)s->B, (long long)s->T, (long long)s->Hq, (long long)s->Hkv, (long long)s->D, tok / mf,
           tok / mn, mn / mf, diff);
    fflush(stdout);
    free(tf), free(tn), free(fused_out);
    free(nb.p), free(nb.dp), free(nb.out), free(nb.gq), free(nb.gk), free(nb.gv);
}

int main(int argc, char **argv) {
    int threads = omp_get_max_threads(), repeat = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            repeat = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--threads N] [--repeat N]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1 || repeat < 1) {
        fprintf(stderr, "bench_attention: --threads and --repeat must be at least 1\n");
        return 2;
    }
    omp_set_num_threads(threads);
    const shape shapes[] = {
        {"tiny", 8, 256, 6, 6, 48},
        {"gqa", 4, 512, 12, 4, 64},
    };
    orc_arena *params = orc_arena_create(0), *acts = orc_arena_create(0);
    if (!params || !acts) {
        fprintf(stderr, "bench_attention: out of memory\n");
        return 1;
    }
    orc_ctx ctx;
    orc_ctx_init(&ctx, acts, 1);
    printf("attention forward+backward, causal, %d thread(s), median of %d\n\n", threads, repeat);
    printf("| shape | B | T | Hq | Hkv | D | fused tok/s | naive tok/s | ratio | max |diff| |\n");
    printf("|-------|---|---|----|-----|---|-------------|-------------|-------|------------|\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) bench_shape(&shapes[i], repeat, params, &ctx);
    orc_arena_destroy(acts);
    orc_arena_destroy(params);
    return 0;
}
