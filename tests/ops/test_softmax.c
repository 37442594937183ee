/* softmax / log_softmax over the last axis: values against a double
 * reference, stability for large and -INFINITY logits, gradients by finite
 * differences, error cases, and identical bits for 1 and 3 threads. */
#include "gradcheck.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

static orc_tensor *build_softmax(orc_ctx *c, orc_tensor **in, void *u) { (void)u; return orc_softmax(c, in[0]); }
static orc_tensor *build_log_softmax(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    return orc_log_softmax(c, in[0]);
}
static orc_tensor *build_softmax_t(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    return orc_softmax(c, orc_transpose(c, in[0], 0, 1));
}
static orc_tensor *build_log_softmax_t(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    return orc_log_softmax(c, orc_transpose(c, in[0], 0, 1));
}

/* Reference log-softmax of one row in double. */
static void ref_log_softmax(const float *x, double *out, int64_t d) {
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < d; j++) m = fmax(m, x[j]);
    for (int64_t j = 0; j < d; j++) s += exp(x[j] - m);
    for (int64_t j = 0; j < d; j++) out[j] = x[j] - m - log(s);
}

static void test_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 3, ORC_SHAPE(3, 5, 7), 1, -6, 6, false);
    orc_tensor *p = orc_softmax(&ctx, x), *lp = orc_log_softmax(&ctx, x);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(p->ndim, 3);
    assert_int_equal(lp->shape[2], 7);
    for (int r = 0; r < 15; r++) {
        double want[7], total = 0;
        ref_log_softmax(orc_f32(x) + r * 7, want, 7);
        for (int j = 0; j < 7; j++) {
            assert_float_equal(orc_f32(p)[r * 7 + j], exp(want[j]), 1e-6);
            assert_float_equal(orc_f32(lp)[r * 7 + j], want[j], 2e-6 * fmax(1, fabs(want[j])));
            total += orc_f32(p)[r * 7 + j];
        }
        assert_float_equal(total, 1.0, 1e-6);
    }
    orc_arena_destroy(a);
}

/* Shifting a row by a large constant changes nothing (no overflow). */
static void test_large_logits(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    float big[] = {1000, 1001, 1002, 500, 1000, 1000};
    float small[] = {0, 1, 2, -500, 0, 0};
    orc_tensor *xb = orc_tensor_wrap(a, ORC_F32, 2, ORC_SHAPE(2, 3), big, &ctx.err);
    orc_tensor *xs = orc_tensor_wrap(a, ORC_F32, 2, ORC_SHAPE(2, 3), small, &ctx.err);
    orc_tensor *pb = orc_softmax(&ctx, xb), *ps = orc_softmax(&ctx, xs);
    orc_tensor *lb = orc_log_softmax(&ctx, xb), *ls = orc_log_softmax(&ctx, xs);
    GC_ASSERT_OK(&ctx);
    for (int i = 0; i < 6; i++) {
        assert_true(isfinite(orc_f32(pb)[i]));
        assert_true(isfinite(orc_f32(lb)[i]));
        assert_float_equal(orc_f32(pb)[i], orc_f32(ps)[i], 1e-6);
        assert_float_equal(orc_f32(lb)[i], orc_f32(ls)[i], 1e-4);
    }
    orc_arena_destroy(a);
}

/* Masked (-INFINITY) logits: probability 0, log-probability -inf, no NaN in
 * values or gradients; a fully masked row gives zeros, not NaN. */
static void test_masked_rows(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    float xs[] = {-INFINITY, 0.5f, -1.0f, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    orc_tensor *x = orc_tensor_wrap(a, ORC_F32, 2, ORC_SHAPE(2, 4), xs, &ctx.err);
    x->requires_grad = true;
    orc_tensor *p = orc_softmax(&ctx, x);
    GC_ASSERT_OK(&ctx);
    const double e = exp(-1.5);
    const float want[8] = {0, (float)(1 / (1 + e)), (float)(e / (1 + e)), 0, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++) assert_float_equal(orc_f32(p)[i], want[i], 1e-6);
    const float g[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(orc_backward_with(&ctx, p, g), ORC_OK);
    for (int i = 0; i < 8; i++) assert_true(isfinite(x->grad[i]));
    assert_float_equal(x->grad[0], 0, 0);
    assert_float_equal(x->grad[3], 0, 0);
    for (int i = 4; i < 8; i++) assert_float_equal(x->grad[i], 0, 0);
    /* softmax grads over a row sum to zero */
    assert_float_equal(x->grad[1] + x->grad[2], 0, 1e-6);

    orc_ctx_reset(&ctx);
    x = orc_tensor_wrap(a, ORC_F32, 2, ORC_SHAPE(2, 4), xs, &ctx.err);
    x->requires_grad = true;
    orc_tensor *lp = orc_log_softmax(&ctx, x);
    GC_ASSERT_OK(&ctx);
    for (int i = 0; i < 8; i++) assert_false(isnan(orc_f32(lp)[i]));
    assert_true(isinf(orc_f32(lp)[0]) && orc_f32(lp)[0] < 0);
    assert_true(isinf(orc_f32(lp)[3]) && orc_f32(lp)[3] < 0);
    assert_float_equal(orc_f32(lp)[1], log(want[1]), 1e-6);
    assert_float_equal(orc_f32(lp)[2], log(want[2]), 1e-6);
    for (int i = 4; i < 8; i++) assert_true(isinf(orc_f32(lp)[i]) && orc_f32(lp)[i] < 0);
    /* Weight only the finite outputs (a -inf output times 0 is NaN in any loss). */
    const float gl[8] = {0, 2, 3, 0, 0, 0, 0, 0};
    assert_int_equal(orc_backward_with(&ctx, lp, gl), ORC_OK);
    for (int i = 0; i < 8; i++) assert_true(isfinite(x->grad[i]));
    /* d/dx_j = g_j - p_j * sum(g) */
    assert_float_equal(x->grad[1], 2 - want[1] * 5, 1e-5);
    assert_float_equal(x->grad[2], 3 - want[2] * 5, 1e-5);
    assert_float_equal(x->grad[0], 0, 0);
    for (int i = 4; i < 8; i++) assert_float_equal(x->grad[i], 0, 0);
    orc_arena_destroy(a);
}

/* Rows of length zero, and no rows at all. */
static void test_empty(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = orc_tensor_new(a, ORC_F32, 2, ORC_SHAPE(3, 0), &ctx.err);
    orc_tensor *z = orc_tensor_new(a, ORC_F32, 2, ORC_SHAPE(0, 4), &ctx.err);
    assert_int_equal(orc_softmax(&ctx, x)->numel, 0);
    assert_int_equal(orc_log_softmax(&ctx, z)->numel, 0);
    GC_ASSERT_OK(&ctx);
    orc_arena_destroy(a);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_tensor *ids = gc_rand_ids(a, 2, ORC_SHAPE(3, 4), 1, 7);
    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_softmax(&ctx, ids));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    assert_non_null(strstr(ctx.err.msg, "softmax"));
    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_log_softmax(&ctx, ids));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    assert_non_null(strstr(ctx.err.msg, "log_softmax"));
    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_softmax(&ctx, NULL));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    orc_arena_destroy(a);
}

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x3 = gc_rand(a, 3, ORC_SHAPE(3, 5, 7), 1, -3, 3, true);
    orc_tensor *x2 = gc_rand(a, 2, ORC_SHAPE(1, 13), 2, -3, 3, true);
    orc_tensor *xt = gc_rand(a, 2, ORC_SHAPE(6, 5), 3, -3, 3, true);
    orc_tensor *x1 = gc_rand(a, 2, ORC_SHAPE(4, 1), 4, -3, 3, true);
    orc_tensor *xs[] = {x3, x2, x1};
    for (int i = 0; i < 3; i++) {
        gc_check("softmax", build_softmax, 1, &xs[i], NULL, (gc_opts){0});
        gc_check("log_softmax", build_log_softmax, 1, &xs[i], NULL, (gc_opts){0});
    }
    gc_check("softmax (strided)", build_softmax_t, 1, &xt, NULL, (gc_opts){0});
    gc_check("log_softmax (strided)", build_log_softmax_t, 1, &xt, NULL, (gc_opts){0});
    orc_arena_destroy(a);
}

static void test_thread_count_determinism(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(300, 257), 3, -8, 8, true);
    gc_expect_same_bits("softmax", build_softmax, 1, &x, NULL);
    gc_expect_same_bits("log_softmax", build_log_softmax, 1, &x, NULL);
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_large_logits),
        cmocka_unit_test(test_masked_rows),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_thread_count_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
