/* Finite-difference gradient checking for the op tests (see gradcheck.h). */
#include "gradcheck.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

orc_tensor *gc_rand(orc_arena *a, int ndim, const int64_t *shape, uint64_t seed, float lo, float hi,
                    bool requires_grad) {
    orc_error err = {0};
    orc_tensor *t = orc_tensor_new(a, ORC_F32, ndim, shape, &err);
    if (!t) fail_msg("gc_rand: %s", err.msg);
    orc_rng r;
    orc_rng_init(&r, seed);
    orc_rng_fill_uniform(&r, orc_f32(t), t->numel, lo, hi);
    t->requires_grad = requires_grad;
    return t;
}

orc_tensor *gc_rand_ids(orc_arena *a, int ndim, const int64_t *shape, uint64_t seed, int32_t n) {
    orc_error err = {0};
    orc_tensor *t = orc_tensor_new(a, ORC_I32, ndim, shape, &err);
    if (!t) fail_msg("gc_rand_ids: %s", err.msg);
    orc_rng r;
    orc_rng_init(&r, seed);
    for (int64_t i = 0; i < t->numel; i++) orc_i32(t)[i] = (int32_t)orc_rng_below(&r, (uint32_t)n);
    return t;
}

/* L = sum(w * out) in double; out read through its strides. */
static double weighted_sum(const orc_tensor *out, const float *w, float *scratch) {
    orc_read_f32(out, scratch);
    double s = 0;
    for (int64_t i = 0; i < out->numel; i++) s += (double)w[i] * (double)scratch[i];
    return s;
}

/* ar is reused across evaluations (reset each time): creating a fresh arena
 * per evaluation dominated the test time under AddressSanitizer. */
static double eval_loss(orc_arena *ar, gc_build_fn build, int n_in, orc_tensor **inputs, void *user,
                        const float *w, float *scratch, int64_t numel) {
    orc_arena_reset(ar);
    orc_ctx ctx;
    orc_ctx_init(&ctx, ar, 1234);
    ctx.no_grad = true;
    /* The graph must not touch the inputs' grad fields in no-grad mode. */
    orc_tensor *out = build(&ctx, inputs, user);
    (void)n_in;
    if (!out) fail_msg("gradcheck: forward failed: %s", ctx.err.msg);
    if (out->numel != numel) fail_msg("gradcheck: output size changed between runs");
    return weighted_sum(out, w, scratch);
}

double gc_check(const char *name, gc_build_fn build, int n_in, orc_tensor **inputs, void *user, gc_opts o) {
    if (o.eps == 0) o.eps = 1e-3;
    if (o.atol == 0) o.atol = 1e-3;
    if (o.rtol == 0) o.rtol = 1e-2;
    if (o.max_checks == 0) o.max_checks = 400;

    /* Analytic pass. */
    orc_arena *ar = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, ar, 1234);
    for (int i = 0; i < n_in; i++) inputs[i]->grad = NULL;
    orc_tensor *out = build(&ctx, inputs, user);
    if (!out) fail_msg("%s: forward failed: %s", name, ctx.err.msg);
    const int64_t numel = out->numel;
    float *w = malloc(sizeof(float) * (size_t)(numel ? numel : 1));
    float *scratch = malloc(sizeof(float) * (size_t)(numel ? numel : 1));
    orc_rng r;
    orc_rng_init(&r, 99);
    orc_rng_fill_uniform(&r, w, numel, -1.0f, 1.0f);
    if (orc_backward_with(&ctx, out, w) != ORC_OK) fail_msg("%s: backward failed: %s", name, ctx.err.msg);

    /* Keep the analytic gradients before the arena goes. */
    float *ana[8] = {0};
    for (int i = 0; i < n_in; i++) {
        if (!inputs[i]->requires_grad || inputs[i]->dtype != ORC_F32) continue;
        ana[i] = calloc((size_t)inputs[i]->numel + 1, sizeof(float));
        if (inputs[i]->grad) memcpy(ana[i], inputs[i]->grad, sizeof(float) * (size_t)inputs[i]->numel);
        inputs[i]->grad = NULL;
    }
    orc_arena_destroy(ar);
    for (int i = 0; i < n_in; i++) inputs[i]->requires_grad = inputs[i]->requires_grad; /* unchanged */

    double worst = 0;
    orc_arena *fd = orc_arena_create((size_t)1 << 20);
    for (int i = 0; i < n_in; i++) {
        if (!ana[i]) continue;
        orc_tensor *x = inputs[i];
        if (!orc_is_contiguous(x)) fail_msg("%s: gradcheck inputs must be contiguous", name);
        float *xd = orc_f32(x);
        int64_t n = x->numel, step = 1;
        if (n > o.max_checks) step = (n + o.max_checks - 1) / o.max_checks;
        for (int64_t j = 0; j < n; j += step) {
            /* Odd steps visit different residues so big inputs are not only
             * sampled at a fixed stride pattern. */
            int64_t e = (j + (j / step) % step) % n;
            float saved = xd[e];
            xd[e] = saved + (float)o.eps;
            double lp = eval_loss(fd, build, n_in, inputs, user, w, scratch, numel);
            xd[e] = saved - (float)o.eps;
            double lm = eval_loss(fd, build, n_in, inputs, user, w, scratch, numel);
            xd[e] = saved;
            double num = (lp - lm) / (2 * o.eps);
            double a = ana[i][e];
            double d = fabs(a - num);
            if (d > worst) worst = d;
            if (d > o.atol + o.rtol * fabs(num))
                fail_msg("%s: gradient of input %d element %lld: analytic %.6g, numeric %.6g (|diff| %.3g)", name, i,
                         (long long)e, a, num, d);
        }
        free(ana[i]);
    }
    orc_arena_destroy(fd);
    free(w);
    free(scratch);
    return worst;
}

/* Output and each input's gradient (NULL when it takes none), malloc'ed. */
static float *forward_backward(int threads, gc_build_fn build, int n_in, orc_tensor **in, void *user, int64_t *n_out,
                               float **grads) {
    omp_set_num_threads(threads);
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 5);
    for (int i = 0; i < n_in; i++) in[i]->grad = NULL;
    orc_tensor *y = build(&ctx, in, user);
    GC_ASSERT_OK(&ctx);
    float *out = malloc(sizeof(float) * (size_t)y->numel);
    float *w = malloc(sizeof(float) * (size_t)y->numel);
    if (!out || !w) fail_msg("gc_expect_same_bits: out of memory");
    orc_read_f32(y, out);
    orc_rng r;
    orc_rng_init(&r, 77);
    orc_rng_fill_uniform(&r, w, y->numel, -1, 1);
    if (orc_backward_with(&ctx, y, w) != ORC_OK) fail_msg("backward: %s", ctx.err.msg);
    for (int i = 0; i < n_in; i++) {
        grads[i] = NULL;
        if (!in[i]->requires_grad || !in[i]->grad) continue;
        grads[i] = malloc(sizeof(float) * (size_t)in[i]->numel);
        if (!grads[i]) fail_msg("gc_expect_same_bits: out of memory");
        memcpy(grads[i], in[i]->grad, sizeof(float) * (size_t)in[i]->numel);
        in[i]->grad = NULL;
    }
    *n_out = y->numel;
    free(w);
    orc_arena_destroy(a);
    return out;
}

void gc_expect_same_bits(const char *name, gc_build_fn build, int n_in, orc_tensor **in, void *user) {
    enum { MAX_IN = 8 };
    if (n_in < 1 || n_in > MAX_IN) fail_msg("gc_expect_same_bits: %d inputs (1..%d)", n_in, MAX_IN);
    const int before = omp_get_max_threads();
    int64_t n1, n3;
    float *g1[MAX_IN], *g3[MAX_IN];
    float *o1 = forward_backward(1, build, n_in, in, user, &n1, g1);
    float *o3 = forward_backward(3, build, n_in, in, user, &n3, g3);
    omp_set_num_threads(before);
    if (n1 != n3 || memcmp(o1, o3, sizeof(float) * (size_t)n1))
        fail_msg("%s: output differs between 1 and 3 threads", name);
    for (int i = 0; i < n_in; i++) {
        if ((g1[i] == NULL) != (g3[i] == NULL) ||
            (g1[i] && memcmp(g1[i], g3[i], sizeof(float) * (size_t)in[i]->numel)))
            fail_msg("%s: gradient of input %d differs between 1 and 3 threads", name, i);
        free(g1[i]);
        free(g3[i]);
    }
    free(o1);
    free(o3);
}
