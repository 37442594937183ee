/* Activations and swiglu: values against libm references in double, finite
 * and correct at large |x|, gradients by finite differences, error cases,
 * and identical bits for 1 and 3 threads. */
#include "gradcheck.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

typedef orc_tensor *(*unary_fn)(orc_ctx *, orc_tensor *);

static const unary_fn UNARY[] = {orc_silu, orc_gelu, orc_gelu_tanh, orc_sigmoid, orc_tanh, orc_relu};
static const char *const UNARY_NAME[] = {"silu", "gelu", "gelu_tanh", "sigmoid", "tanh", "relu"};
#define N_UNARY 6

static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static double reference(int op, double x) {
    switch (op) {
    case 0: return x * ref_sigmoid(x);
    case 1: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case 2: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case 3: return ref_sigmoid(x);
    case 4: return tanh(x);
    default: return x > 0 ? x : 0;
    }
}

static orc_tensor *build_unary(orc_ctx *c, orc_tensor **in, void *u) { return (*(const unary_fn *)u)(c, in[0]); }
static orc_tensor *build_unary_t(orc_ctx *c, orc_tensor **in, void *u) {
    return (*(const unary_fn *)u)(c, orc_transpose(c, in[0], 0, 1));
}
static orc_tensor *build_swiglu(orc_ctx *c, orc_tensor **in, void *u) { (void)u; return orc_swiglu(c, in[0], in[1]); }

static void test_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    const float xs[] = {-1000.0f, -88.0f, -20.0f, -3.0f, -0.5f, -1e-4f, 0.0f, 1e-4f, 0.5f, 1.25f, 3.0f, 20.0f, 88.0f, 1000.0f};
    const int64_t n = (int64_t)(sizeof xs / sizeof xs[0]);
    orc_tensor *x = orc_tensor_wrap(a, ORC_F32, 1, ORC_SHAPE(n), (void *)xs, &ctx.err);
    for (int op = 0; op < N_UNARY; op++) {
        orc_tensor *y = UNARY[op](&ctx, x);
        GC_ASSERT_OK(&ctx);
        assert_int_equal(y->ndim, 1);
        assert_int_equal(y->shape[0], n);
        for (int64_t i = 0; i < n; i++) {
            double want = reference(op, xs[i]), got = orc_f32(y)[i];
            if (!isfinite(got) || fabs(got - want) > 2e-6 * fmax(1.0, fabs(want)))
                fail_msg("%s(%g) = %.9g, want %.9g", UNARY_NAME[op], (double)xs[i], got, want);
        }
    }
    orc_arena_destroy(a);
}

/* Gradients stay finite (and right) where exp(|x|) would overflow. */
static void test_large_inputs_have_finite_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    const float xs[] = {-1e30f, -1000.0f, -100.0f, 100.0f, 1000.0f, 1e30f};
    const float want[N_UNARY][6] = {
        {0, 0, 0, 1, 1, 1}, /* silu */
        {0, 0, 0, 1, 1, 1}, /* gelu */
        {0, 0, 0, 1, 1, 1}, /* gelu_tanh */
        {0, 0, 0, 0, 0, 0}, /* sigmoid */
        {0, 0, 0, 0, 0, 0}, /* tanh */
        {0, 0, 0, 1, 1, 1}, /* relu */
    };
    for (int op = 0; op < N_UNARY; op++) {
        orc_ctx ctx;
        orc_ctx_init(&ctx, a, 1);
        orc_tensor *x = orc_tensor_wrap(a, ORC_F32, 1, ORC_SHAPE(6), (void *)xs, &ctx.err);
        x->requires_grad = true;
        x->grad = NULL;
        orc_tensor *y = UNARY[op](&ctx, x);
        const float ones[6] = {1, 1, 1, 1, 1, 1};
        assert_int_equal(orc_backward_with(&ctx, y, ones), ORC_OK);
        for (int i = 0; i < 6; i++) {
            if (!isfinite(orc_f32(y)[i]) || !isfinite(x->grad[i]))
                fail_msg("%s(%g): value %g, grad %g", UNARY_NAME[op], (double)xs[i], (double)orc_f32(y)[i],
                         (double)x->grad[i]);
            assert_float_equal(x->grad[i], want[op][i], 1e-6);
        }
        orc_arena_reset(a);
    }
    orc_arena_destroy(a);
}

static void test_swiglu_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *g = gc_rand(a, 2, ORC_SHAPE(4, 9), 1, -6, 6, false);
    orc_tensor *u = gc_rand(a, 2, ORC_SHAPE(4, 9), 2, -2, 2, false);
    orc_tensor *y = orc_swiglu(&ctx, g, u);
    GC_ASSERT_OK(&ctx);
    for (int i = 0; i < 36; i++) {
        double gv = orc_f32(g)[i], want = gv * ref_sigmoid(gv) * orc_f32(u)[i];
        assert_float_equal(orc_f32(y)[i], want, 2e-6 * fmax(1.0, fabs(want)));
    }
    orc_arena_destroy(a);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    for (int op = 0; op < N_UNARY; op++) {
        orc_ctx_init(&ctx, a, 1);
        orc_tensor *ids = gc_rand_ids(a, 2, ORC_SHAPE(2, 3), 1, 5);
        assert_null(UNARY[op](&ctx, ids));
        assert_int_equal(ctx.err.code, ORC_EDTYPE);
        assert_non_null(strstr(ctx.err.msg, UNARY_NAME[op]));
    }
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *g = gc_rand(a, 2, ORC_SHAPE(3, 4), 1, -1, 1, false);
    orc_tensor *u = gc_rand(a, 2, ORC_SHAPE(4, 3), 2, -1, 1, false);
    assert_null(orc_swiglu(&ctx, g, u));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    assert_non_null(strstr(ctx.err.msg, "swiglu"));
    assert_non_null(strstr(ctx.err.msg, "[3, 4]"));
    assert_non_null(strstr(ctx.err.msg, "[4, 3]"));
    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_swiglu(&ctx, g, gc_rand_ids(a, 2, ORC_SHAPE(3, 4), 1, 5)));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_silu(&ctx, NULL));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    orc_arena_destroy(a);
}

/* relu's kink at 0 is not differentiable; keep samples away from it. */
static void push_off_zero(orc_tensor *x) {
    for (int64_t i = 0; i < x->numel; i++)
        if (fabsf(orc_f32(x)[i]) < 0.02f) orc_f32(x)[i] = 0.5f;
}

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    for (int op = 0; op < N_UNARY; op++) {
        orc_tensor *x3 = gc_rand(a, 3, ORC_SHAPE(3, 5, 7), 10 + op, -3, 3, true);
        orc_tensor *x2 = gc_rand(a, 2, ORC_SHAPE(1, 13), 20 + op, -3, 3, true);
        push_off_zero(x3);
        push_off_zero(x2);
        gc_check(UNARY_NAME[op], build_unary, 1, &x3, (void *)&UNARY[op], (gc_opts){0});
        gc_check(UNARY_NAME[op], build_unary, 1, &x2, (void *)&UNARY[op], (gc_opts){0});
        /* A strided (transposed) input goes through a contiguous copy. */
        orc_tensor *xt = gc_rand(a, 2, ORC_SHAPE(6, 5), 30 + op, -3, 3, true);
        push_off_zero(xt);
        gc_check(UNARY_NAME[op], build_unary_t, 1, &xt, (void *)&UNARY[op], (gc_opts){0});
    }
    orc_tensor *in[2] = {gc_rand(a, 3, ORC_SHAPE(3, 5, 7), 40, -4, 4, true),
                         gc_rand(a, 3, ORC_SHAPE(3, 5, 7), 41, -2, 2, true)};
    gc_check("swiglu", build_swiglu, 2, in, NULL, (gc_opts){0});
    orc_tensor *in2[2] = {gc_rand(a, 2, ORC_SHAPE(1, 13), 42, -4, 4, true),
                          gc_rand(a, 2, ORC_SHAPE(1, 13), 43, -2, 2, true)};
    gc_check("swiglu", build_swiglu, 2, in2, NULL, (gc_opts){0});
    /* Only one side needs a gradient. */
    in2[1]->requires_grad = false;
    gc_check("swiglu (gate only)", build_swiglu, 2, in2, NULL, (gc_opts){0});
    in2[0]->requires_grad = false;
    in2[1]->requires_grad = true;
    gc_check("swiglu (up only)", build_swiglu, 2, in2, NULL, (gc_opts){0});
    orc_arena_destroy(a);
}

static void test_thread_count_determinism(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(300, 257), 3, -5, 5, true);
    for (int op = 0; op < N_UNARY; op++) gc_expect_same_bits(UNARY_NAME[op], build_unary, 1, &x, (void *)&UNARY[op]);
    orc_tensor *in[2] = {x, gc_rand(a, 2, ORC_SHAPE(300, 257), 4, -2, 2, true)};
    gc_expect_same_bits("swiglu", build_swiglu, 2, in, NULL);
    orc_arena_destroy(a);
}

/* No-grad mode records nothing. */
static void test_no_grad_records_nothing(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(3, 4), 1, -1, 1, true);
    orc_set_no_grad(&ctx, true);
    orc_tensor *y = orc_swiglu(&ctx, orc_gelu(&ctx, x), x);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(ctx.n_nodes, 0);
    assert_false(y->requires_grad);
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_large_inputs_have_finite_gradients),
        cmocka_unit_test(test_swiglu_values),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_thread_count_determinism),
        cmocka_unit_test(test_no_grad_records_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
