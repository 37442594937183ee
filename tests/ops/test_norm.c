/* rmsnorm and layernorm: values against naive double loops, gradients by
 * finite differences with and without weight/bias, shape errors, and
 * bit-identical outputs and gradients for 1 and 3 threads. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "gradcheck.h"

/* user: bit 0 = use weight (in[1]), bit 1 = use bias (in[2]). */
static orc_tensor *build_rms(orc_ctx *c, orc_tensor **in, void *u) {
    const int f = (int)(intptr_t)u;
    return orc_rmsnorm(c, in[0], (f & 1) ? in[1] : NULL, 1e-5f);
}

static orc_tensor *build_ln(orc_ctx *c, orc_tensor **in, void *u) {
    const int f = (int)(intptr_t)u;
    return orc_layernorm(c, in[0], (f & 1) ? in[1] : NULL, (f & 2) ? in[2] : NULL, 1e-5f);
}

/* A strided input: normalise a transposed view. */
static orc_tensor *build_ln_view(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    return orc_layernorm(c, orc_transpose(c, in[0], 0, 1), in[1], in[2], 1e-5f);
}

static void test_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    const int64_t R = 6, D = 13;
    orc_tensor *x = gc_rand(a, 3, ORC_SHAPE(2, 3, 13), 1, -2, 3, false);
    orc_tensor *w = gc_rand(a, 1, ORC_SHAPE(13), 2, 0.5f, 1.5f, false);
    orc_tensor *b = gc_rand(a, 1, ORC_SHAPE(13), 3, -1, 1, false);
    orc_tensor *yr = orc_rmsnorm(&ctx, x, w, 1e-6f);
    orc_tensor *yl = orc_layernorm(&ctx, x, w, b, 1e-5f);
    orc_tensor *yl0 = orc_layernorm(&ctx, x, NULL, NULL, 1e-5f);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(yr->ndim, 3);
    const float *xd = orc_f32(x), *wd = orc_f32(w), *bd = orc_f32(b);
    for (int64_t r = 0; r < R; r++) {
        double ss = 0, mu = 0, var = 0;
        for (int64_t j = 0; j < D; j++) {
            ss += (double)xd[r * D + j] * xd[r * D + j];
            mu += xd[r * D + j];
        }
        mu /= D;
        for (int64_t j = 0; j < D; j++) var += (xd[r * D + j] - mu) * (xd[r * D + j] - mu);
        var /= D;
        const double rr = 1 / sqrt(ss / D + 1e-6), rl = 1 / sqrt(var + 1e-5);
        for (int64_t j = 0; j < D; j++) {
            const double xv = xd[r * D + j];
            assert_float_equal(orc_f32(yr)[r * D + j], xv * rr * wd[j], 1e-5);
            assert_float_equal(orc_f32(yl)[r * D + j], (xv - mu) * rl * wd[j] + bd[j], 1e-5);
            assert_float_equal(orc_f32(yl0)[r * D + j], (xv - mu) * rl, 1e-5);
        }
    }
    orc_arena_destroy(a);
}

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *in[3] = {gc_rand(a, 3, ORC_SHAPE(3, 5, 7), 1, -2, 2, true),
                         gc_rand(a, 1, ORC_SHAPE(7), 2, 0.5f, 1.5f, true),
                         gc_rand(a, 1, ORC_SHAPE(7), 3, -1, 1, true)};
    for (intptr_t f = 0; f < 4; f++) {
        const int n = f == 0 ? 1 : (f & 2) ? 3 : 2;
        gc_check("layernorm", build_ln, n, in, (void *)f, (gc_opts){0});
        if (f < 2) gc_check("rmsnorm", build_rms, n, in, (void *)f, (gc_opts){0});
    }
    /* Bias without weight: in[1] unused but present. */
    in[1]->requires_grad = false;
    gc_check("layernorm bias only", build_ln, 3, in, (void *)2, (gc_opts){0});
    in[1]->requires_grad = true;
    /* Rows past one block (NORM_ROW_BLOCK) of the weight-gradient reduction. */
    orc_tensor *big[3] = {gc_rand(a, 2, ORC_SHAPE(70, 3), 4, -2, 2, true),
                          gc_rand(a, 1, ORC_SHAPE(3), 5, 0.5f, 1.5f, true), gc_rand(a, 1, ORC_SHAPE(3), 6, -1, 1, true)};
    gc_check("layernorm 70 rows", build_ln, 3, big, (void *)3, (gc_opts){0});
    gc_check("rmsnorm 70 rows", build_rms, 2, big, (void *)1, (gc_opts){0});
    orc_tensor *inv[3] = {gc_rand(a, 2, ORC_SHAPE(5, 4), 7, -2, 2, true),
                          gc_rand(a, 1, ORC_SHAPE(5), 8, 0.5f, 1.5f, true), gc_rand(a, 1, ORC_SHAPE(5), 9, -1, 1, true)};
    gc_check("layernorm view", build_ln_view, 3, inv, NULL, (gc_opts){0});
    orc_arena_destroy(a);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(4, 6), 1, -1, 1, false);
    orc_tensor *w = gc_rand(a, 1, ORC_SHAPE(5), 2, -1, 1, false);
    assert_null(orc_rmsnorm(&ctx, x, w, 1e-5f));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    assert_non_null(strstr(ctx.err.msg, "[5]"));
    assert_non_null(strstr(ctx.err.msg, "[4, 6]"));
    orc_error_clear(&ctx.err);
    orc_tensor *w6 = gc_rand(a, 1, ORC_SHAPE(6), 3, -1, 1, false);
    assert_null(orc_layernorm(&ctx, x, w6, w, 1e-5f));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    assert_non_null(strstr(ctx.err.msg, "bias"));
    orc_error_clear(&ctx.err);
    assert_null(orc_layernorm(&ctx, x, NULL, NULL, -1.0f));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    orc_error_clear(&ctx.err);
    orc_tensor *ids = gc_rand_ids(a, 2, ORC_SHAPE(4, 6), 4, 3);
    assert_null(orc_rmsnorm(&ctx, ids, NULL, 1e-5f));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    orc_arena_destroy(a);
}


static void test_thread_determinism(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *in[3] = {gc_rand(a, 3, ORC_SHAPE(4, 97, 160), 1, -2, 2, true),
                         gc_rand(a, 1, ORC_SHAPE(160), 2, 0.5f, 1.5f, true),
                         gc_rand(a, 1, ORC_SHAPE(160), 3, -1, 1, true)};
    for (int which = 0; which < 2; which++) {
        gc_build_fn f = which ? build_ln : build_rms;
        gc_expect_same_bits(which ? "layernorm" : "rmsnorm", f, which ? 3 : 2, in, (void *)3);
    }
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_thread_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
