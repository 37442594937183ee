/* topk: values and indices against a naive selection (small rows, a 50k-wide
 * row, and a large k as in expert choice), ties and NaN ordering, gradients
 * of the values, error cases, and bit-identical results for 1 and 3 threads. */
#include "gradcheck.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

static orc_tensor *floats_from(orc_arena *a, int ndim, const int64_t *shape, const float *v) {
    orc_tensor *t = gc_rand(a, ndim, shape, 1, 0, 1, false);
    memcpy(t->data, v, sizeof(float) * (size_t)t->numel);
    return t;
}

/* The documented order: larger first, ties by lower index, NaN last. */
static bool above(float a, int ia, float b, int ib) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? ia < ib : isnan(b);
    return a != b ? a > b : ia < ib;
}

/* Naive: k passes, each picking the best element not taken yet. */
static void naive_topk(const float *x, int n, int k, float *v, int32_t *ix, char *taken) {
    memset(taken, 0, (size_t)n);
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (!taken[i] && (best < 0 || above(x[i], i, x[best], best))) best = i;
        taken[best] = 1;
        v[j] = x[best];
        ix[j] = best;
    }
}

/* Runs topk on x and compares every row with the naive selection. */
static void check_against_naive(orc_tensor *x, int k) {
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *v = NULL, *ix = NULL;
    assert_true(orc_topk(&ctx, x, k, &v, &ix));
    GC_ASSERT_OK(&ctx);
    const int n = (int)x->shape[x->ndim - 1];
    const int64_t rows = x->numel / n;
    assert_int_equal(v->shape[v->ndim - 1], k);
    assert_int_equal(ix->dtype, ORC_I32);
    float *wv = malloc(sizeof(float) * (size_t)k);
    int32_t *wi = malloc(sizeof(int32_t) * (size_t)k);
    char *taken = malloc((size_t)n);
    for (int64_t r = 0; r < rows; r++) {
        naive_topk(orc_f32(x) + r * n, n, k, wv, wi, taken);
        assert_memory_equal(orc_i32(ix) + r * k, wi, sizeof(int32_t) * (size_t)k);
        assert_memory_equal(orc_f32(v) + r * k, wv, sizeof(float) * (size_t)k);
    }
    free(wv);
    free(wi);
    free(taken);
    orc_arena_destroy(a);
}

static void test_values_small(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x = gc_rand(a, 3, ORC_SHAPE(3, 5, 37), 1, -1, 1, false);
    const int ks[] = {1, 2, 5, 36, 37};
    for (int i = 0; i < 5; i++) check_against_naive(x, ks[i]);
    /* Few distinct values: many ties. */
    orc_tensor *q = gc_rand(a, 2, ORC_SHAPE(6, 41), 2, 0, 4, false);
    for (int64_t i = 0; i < q->numel; i++) orc_f32(q)[i] = floorf(orc_f32(q)[i]);
    for (int k = 1; k <= 41; k += 8) check_against_naive(q, k);
    orc_arena_destroy(a);
}

static void test_values_wide_and_large_k(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    /* Vocabulary-sized row, small k. */
    check_against_naive(gc_rand(a, 2, ORC_SHAPE(2, 50000), 3, -5, 5, false), 8);
    /* Expert choice: N = tokens, k = capacity. */
    check_against_naive(gc_rand(a, 2, ORC_SHAPE(4, 1500), 4, -1, 1, false), 300);
    orc_arena_destroy(a);
}

static void test_ties_and_nan(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *v, *ix;
    orc_tensor *t = floats_from(a, 1, ORC_SHAPE(6), (const float[]){1, 3, 3, 2, 3, 1});
    assert_true(orc_topk(&ctx, t, 6, &v, &ix));
    assert_memory_equal(orc_i32(ix), ((const int32_t[]){1, 2, 4, 3, 0, 5}), 6 * sizeof(int32_t));
    assert_memory_equal(orc_f32(v), ((const float[]){3, 3, 3, 2, 1, 1}), 6 * sizeof(float));
    assert_true(orc_topk(&ctx, t, 2, &v, &ix));
    assert_memory_equal(orc_i32(ix), ((const int32_t[]){1, 2}), 2 * sizeof(int32_t));

    orc_tensor *same = floats_from(a, 2, ORC_SHAPE(1, 5), (const float[]){7, 7, 7, 7, 7});
    assert_true(orc_topk(&ctx, same, 3, &v, &ix));
    assert_memory_equal(orc_i32(ix), ((const int32_t[]){0, 1, 2}), 3 * sizeof(int32_t));

    /* NaN ranks below everything, even -inf. */
    orc_tensor *nan = floats_from(a, 1, ORC_SHAPE(5), (const float[]){NAN, 1, -INFINITY, NAN, 2});
    assert_true(orc_topk(&ctx, nan, 5, &v, &ix));
    assert_memory_equal(orc_i32(ix), ((const int32_t[]){4, 1, 2, 0, 3}), 5 * sizeof(int32_t));
    assert_true(orc_topk(&ctx, nan, 3, &v, &ix));
    assert_memory_equal(orc_i32(ix), ((const int32_t[]){4, 1, 2}), 3 * sizeof(int32_t));
    assert_true(orc_f32(v)[2] == -INFINITY);
    GC_ASSERT_OK(&ctx);
    orc_arena_destroy(a);
}

/* Distinct values at least 0.05 apart, so finite differences keep the order. */
static void spread(orc_tensor *x, uint64_t seed) {
    int64_t n = x->numel;
    int *perm = malloc(sizeof(int) * (size_t)n);
    for (int64_t i = 0; i < n; i++) perm[i] = (int)i;
    orc_rng r;
    orc_rng_init(&r, seed);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = orc_rng_below(&r, (uint32_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int64_t i = 0; i < n; i++) orc_f32(x)[i] = 0.05f * (float)perm[i] - 1.0f;
    free(perm);
}

static orc_tensor *build_topk(orc_ctx *c, orc_tensor **in, void *u) {
    orc_tensor *v = NULL, *ix = NULL;
    return orc_topk(c, in[0], *(int64_t *)u, &v, &ix) ? v : NULL;
}

static orc_tensor *build_topk_t(orc_ctx *c, orc_tensor **in, void *u) {
    orc_tensor *v = NULL, *ix = NULL;
    return orc_topk(c, orc_transpose(c, in[0], 0, 1), *(int64_t *)u, &v, &ix) ? v : NULL;
}

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x[1] = {gc_rand(a, 3, ORC_SHAPE(2, 3, 9), 5, 0, 1, true)};
    spread(x[0], 6);
    int64_t k = 3;
    gc_check("topk", build_topk, 1, x, &k, (gc_opts){0});
    k = 9;
    gc_check("topk k=N", build_topk, 1, x, &k, (gc_opts){0});
    /* Strided input: [7, 4] transposed to [4, 7]. */
    orc_tensor *xt[1] = {gc_rand(a, 2, ORC_SHAPE(7, 4), 7, 0, 1, true)};
    spread(xt[0], 8);
    k = 2;
    gc_check("topk(transpose)", build_topk_t, 1, xt, &k, (gc_opts){0});

    /* Indices carry no gradient; values do. */
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *v, *ix;
    assert_true(orc_topk(&ctx, x[0], 2, &v, &ix));
    assert_true(v->requires_grad);
    assert_false(ix->requires_grad);
    assert_null(ix->node);
    x[0]->grad = NULL;
    orc_arena_destroy(a);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(3, 5), 1, -1, 1, false);
    orc_tensor *v = x, *ix = x;
    assert_false(orc_topk(&ctx, x, 6, &v, &ix));
    assert_null(v);
    assert_null(ix);
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    assert_non_null(strstr(ctx.err.msg, "k = 6"));
    assert_non_null(strstr(ctx.err.msg, "[3, 5]"));
    orc_error_clear(&ctx.err);
    assert_false(orc_topk(&ctx, x, 0, &v, &ix));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    orc_error_clear(&ctx.err);

    orc_error err = {0};
    orc_tensor *ids = orc_tensor_zeros(a, ORC_I32, 1, ORC_SHAPE(4), &err);
    assert_false(orc_topk(&ctx, ids, 1, &v, &ix));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    orc_error_clear(&ctx.err);

    orc_tensor *scalar = gc_rand(a, 0, NULL, 2, -1, 1, false);
    assert_false(orc_topk(&ctx, scalar, 1, &v, &ix));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    orc_error_clear(&ctx.err);

    assert_false(orc_topk(&ctx, x, 1, &v, NULL));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    orc_error_clear(&ctx.err);

    /* Sticky: NULL input. */
    assert_false(orc_topk(&ctx, NULL, 1, &v, &ix));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    orc_arena_destroy(a);
}

static void run_threads(int threads, float **vals, int32_t **ids, float **grad, int64_t *nv, int64_t *nx) {
    omp_set_num_threads(threads);
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(64, 2000), 9, -1, 1, true);
    orc_tensor *v, *ix;
    assert_true(orc_topk(&ctx, x, 16, &v, &ix));
    orc_tensor *w = gc_rand(a, 2, v->shape, 10, -1, 1, false);
    if (orc_backward_with(&ctx, v, orc_f32(w)) != ORC_OK) fail_msg("backward: %s", ctx.err.msg);
    *nv = v->numel;
    *nx = x->numel;
    *vals = malloc(sizeof(float) * (size_t)v->numel);
    *ids = malloc(sizeof(int32_t) * (size_t)v->numel);
    *grad = malloc(sizeof(float) * (size_t)x->numel);
    memcpy(*vals, v->data, sizeof(float) * (size_t)v->numel);
    memcpy(*ids, ix->data, sizeof(int32_t) * (size_t)v->numel);
    memcpy(*grad, x->grad, sizeof(float) * (size_t)x->numel);
    orc_arena_destroy(a);
}

static void test_threads_deterministic(void **state) {
    (void)state;
    const int saved = omp_get_max_threads();
    float *v1, *v3, *g1, *g3;
    int32_t *i1, *i3;
    int64_t nv, nx;
    run_threads(1, &v1, &i1, &g1, &nv, &nx);
    run_threads(3, &v3, &i3, &g3, &nv, &nx);
    omp_set_num_threads(saved);
    assert_memory_equal(v1, v3, sizeof(float) * (size_t)nv);
    assert_memory_equal(i1, i3, sizeof(int32_t) * (size_t)nv);
    assert_memory_equal(g1, g3, sizeof(float) * (size_t)nx);
    free(v1); free(v3); free(i1); free(i3); free(g1); free(g3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_small),
        cmocka_unit_test(test_values_wide_and_large_k),
        cmocka_unit_test(test_ties_and_nan),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_threads_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
