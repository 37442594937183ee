/* sum / mean along an axis and over everything: values and shapes, double
 * accumulation, gradients by finite differences, error cases, and identical
 * bits for 1 and 3 threads. */
#include "gradcheck.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

typedef struct reduce_args {
    int axis;
    bool keepdim;
    bool mean;
} reduce_args;

static orc_tensor *build_axis(orc_ctx *c, orc_tensor **in, void *u) {
    const reduce_args *r = u;
    return r->mean ? orc_mean(c, in[0], r->axis, r->keepdim) : orc_sum(c, in[0], r->axis, r->keepdim);
}
static orc_tensor *build_axis_t(orc_ctx *c, orc_tensor **in, void *u) {
    const reduce_args *r = u;
    orc_tensor *x = orc_transpose(c, in[0], 0, 2);
    return r->mean ? orc_mean(c, x, r->axis, r->keepdim) : orc_sum(c, x, r->axis, r->keepdim);
}
static orc_tensor *build_sum_all(orc_ctx *c, orc_tensor **in, void *u) { (void)u; return orc_sum_all(c, in[0]); }
static orc_tensor *build_mean_all(orc_ctx *c, orc_tensor **in, void *u) { (void)u; return orc_mean_all(c, in[0]); }

/* x[i, j, k] = 100 i + 10 j + k: every sum is an exact small integer. */
static orc_tensor *iota3(orc_arena *a) {
    orc_error err = {0};
    orc_tensor *x = orc_tensor_new(a, ORC_F32, 3, ORC_SHAPE(2, 3, 4), &err);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++) orc_f32(x)[(i * 3 + j) * 4 + k] = (float)(100 * i + 10 * j + k);
    return x;
}

static void test_axis_values_and_shapes(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = iota3(a);

    orc_tensor *s0 = orc_sum(&ctx, x, 0, false); /* [3, 4]: 100 + 20 j + 2 k */
    orc_tensor *s1 = orc_sum(&ctx, x, 1, true);  /* [2, 1, 4]: 300 i + 30 + 3 k */
    orc_tensor *s2 = orc_sum(&ctx, x, -1, false); /* [2, 3]: 400 i + 40 j + 6 */
    orc_tensor *m1 = orc_mean(&ctx, x, -2, false); /* [2, 4]: 100 i + 10 + k */
    orc_tensor *m2 = orc_mean(&ctx, x, 2, true);   /* [2, 3, 1]: 100 i + 10 j + 1.5 */
    GC_ASSERT_OK(&ctx);

    assert_int_equal(s0->ndim, 2);
    assert_int_equal(s0->shape[0], 3);
    assert_int_equal(s0->shape[1], 4);
    for (int j = 0; j < 3; j++)
        for (int k = 0; k < 4; k++) assert_float_equal(orc_f32(s0)[j * 4 + k], 100 + 20 * j + 2 * k, 0);

    assert_int_equal(s1->ndim, 3);
    assert_int_equal(s1->shape[1], 1);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) assert_float_equal(orc_f32(s1)[i * 4 + k], 300 * i + 30 + 3 * k, 0);

    assert_int_equal(s2->ndim, 2);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) assert_float_equal(orc_f32(s2)[i * 3 + j], 400 * i + 40 * j + 6, 0);

    assert_int_equal(m1->ndim, 2);
    assert_int_equal(m1->shape[1], 4);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) assert_float_equal(orc_f32(m1)[i * 4 + k], 100 * i + 10 + k, 1e-5);

    assert_int_equal(m2->ndim, 3);
    assert_int_equal(m2->shape[2], 1);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) assert_float_equal(orc_f32(m2)[i * 3 + j], 100 * i + 10 * j + 1.5, 1e-5);

    /* A 1-D reduction without keepdim is a scalar. */
    orc_tensor *v = gc_rand(a, 1, ORC_SHAPE(5), 3, -1, 1, false);
    orc_tensor *sv = orc_sum(&ctx, v, 0, false);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(sv->ndim, 0);
    assert_int_equal(sv->numel, 1);
    orc_arena_destroy(a);
}

static void test_all_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = iota3(a);
    orc_tensor *s = orc_sum_all(&ctx, x), *m = orc_mean_all(&ctx, x);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(s->ndim, 0);
    assert_int_equal(s->numel, 1);
    assert_int_equal(m->ndim, 0);
    /* sum = 12*100 + 8*(0+10+20) + 6*(0+1+2+3) = 1200 + 240 + 36 */
    assert_float_equal(orc_f32(s)[0], 1476, 0);
    assert_float_equal(orc_f32(m)[0], 1476.0 / 24, 1e-5);
    orc_arena_destroy(a);
}

/* Double accumulation: 300 000 copies of 0.1f sum to what a double loop
 * gives, where a float running sum drifts by far more than one ulp. */
static void test_accumulates_in_double(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    const int64_t n = 300000;
    orc_tensor *x = orc_tensor_new(a, ORC_F32, 2, ORC_SHAPE(n / 100, 100), &ctx.err);
    for (int64_t i = 0; i < n; i++) orc_f32(x)[i] = 0.1f;
    const double want = (double)n * (double)0.1f;
    orc_tensor *s = orc_sum_all(&ctx, x);
    orc_tensor *m = orc_mean_all(&ctx, x);
    orc_tensor *c = orc_sum(&ctx, x, 0, false);
    GC_ASSERT_OK(&ctx);
    assert_true(orc_f32(s)[0] == (float)want);
    assert_true(orc_f32(m)[0] == 0.1f);
    assert_true(orc_f32(c)[7] == (float)((double)(n / 100) * (double)0.1f));
    orc_arena_destroy(a);
}

/* Empty inputs: a sum over a zero-length axis is 0, and nothing crashes. */
static void test_empty(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = orc_tensor_new(a, ORC_F32, 3, ORC_SHAPE(2, 0, 3), &ctx.err);
    x->requires_grad = true;
    orc_tensor *s1 = orc_sum(&ctx, x, 1, false);
    orc_tensor *s0 = orc_sum(&ctx, x, 0, true);
    orc_tensor *all = orc_sum_all(&ctx, x);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(s1->numel, 6);
    for (int i = 0; i < 6; i++) assert_true(orc_f32(s1)[i] == 0.0f);
    assert_int_equal(s0->numel, 0);
    assert_int_equal(s0->shape[0], 1);
    assert_true(orc_f32(all)[0] == 0.0f);
    assert_int_equal(orc_backward(&ctx, all), ORC_OK);
    orc_arena_destroy(a);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_tensor *x = gc_rand(a, 3, ORC_SHAPE(3, 5, 7), 1, -1, 1, false);

    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_sum(&ctx, x, 3, false));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    assert_non_null(strstr(ctx.err.msg, "sum"));
    assert_non_null(strstr(ctx.err.msg, "axis 3"));
    assert_non_null(strstr(ctx.err.msg, "[3, 5, 7]"));

    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_mean(&ctx, x, -4, true));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    assert_non_null(strstr(ctx.err.msg, "mean"));
    assert_non_null(strstr(ctx.err.msg, "axis -4"));

    orc_ctx_init(&ctx, a, 1);
    orc_tensor *scalar = orc_sum_all(&ctx, x);
    assert_null(orc_sum(&ctx, scalar, 0, false));
    assert_int_equal(ctx.err.code, ORC_EINVAL);

    orc_tensor *ids = gc_rand_ids(a, 2, ORC_SHAPE(4, 4), 1, 9);
    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_sum(&ctx, ids, 0, false));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_mean(&ctx, ids, 0, false));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_sum_all(&ctx, ids));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_mean_all(&ctx, ids));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    assert_non_null(strstr(ctx.err.msg, "mean_all"));
    orc_arena_destroy(a);
}

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    /* A sample of elements: each check re-runs the graph twice per element. */
    const gc_opts few = {.max_checks = 40};
    orc_tensor *x3 = gc_rand(a, 3, ORC_SHAPE(3, 5, 7), 1, -1, 1, true);
    orc_tensor *x2 = gc_rand(a, 2, ORC_SHAPE(1, 13), 2, -1, 1, true);
    /* Every axis (positive and negative) with both reductions and keepdim
     * settings spread over them; a few checks cost a lot under sanitizers. */
    const reduce_args on3[] = {{0, false, false}, {1, true, false}, {2, false, false}, {-1, true, false},
                               {0, true, true},   {1, false, true}, {2, true, true},   {-3, false, true}};
    for (size_t i = 0; i < sizeof on3 / sizeof on3[0]; i++) {
        reduce_args r = on3[i];
        gc_check(r.mean ? "mean" : "sum", build_axis, 1, &x3, &r, few);
    }
    reduce_args strided[] = {{1, false, false}, {-1, true, true}};
    for (int i = 0; i < 2; i++)
        gc_check(strided[i].mean ? "mean (strided)" : "sum (strided)", build_axis_t, 1, &x3, &strided[i],
                 few);
    const reduce_args on2[] = {{0, false, false}, {-1, true, false}, {-2, true, true}, {1, false, true}};
    for (size_t i = 0; i < sizeof on2 / sizeof on2[0]; i++) {
        reduce_args r = on2[i];
        gc_check(r.mean ? "mean" : "sum", build_axis, 1, &x2, &r, few);
    }
    gc_check("sum_all", build_sum_all, 1, &x3, NULL, few);
    gc_check("mean_all", build_mean_all, 1, &x3, NULL, few);
    gc_check("sum_all", build_sum_all, 1, &x2, NULL, few);
    gc_check("mean_all", build_mean_all, 1, &x2, NULL, few);
    orc_arena_destroy(a);
}

static void test_thread_count_determinism(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(300, 257), 3, -1, 1, true);
    orc_tensor *x3 = gc_rand(a, 3, ORC_SHAPE(3, 300, 257), 4, -1, 1, true);
    for (int mean = 0; mean < 2; mean++)
        for (int axis = 0; axis < 2; axis++) {
            reduce_args r = {axis, false, mean};
            gc_expect_same_bits(mean ? "mean" : "sum", build_axis, 1, &x, &r);
        }
    reduce_args mid = {1, true, false};
    gc_expect_same_bits("sum (middle axis)", build_axis, 1, &x3, &mid);
    gc_expect_same_bits("sum_all", build_sum_all, 1, &x, NULL);
    gc_expect_same_bits("mean_all", build_mean_all, 1, &x3, NULL);
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_axis_values_and_shapes),
        cmocka_unit_test(test_all_values),
        cmocka_unit_test(test_accumulates_in_double),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_thread_count_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
