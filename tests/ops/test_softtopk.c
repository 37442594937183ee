/* soft_topk: the threshold satisfies its equation, exactly k non-zero entries
 * per row on the hard top-k (ties by index), gradients (including tau's
 * dependence on z) against finite differences, bit-identical results for 1
 * and 3 threads, and the error cases (k < 1, k > F, T <= 0, non-finite). */
#include "gradcheck.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

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

/* tau from the output: any kept channel gives tau = z - T * logit(m). The sum
 * of sigmoids over all channels must then be k. */
static void test_forward_properties(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    const int64_t F = 37;
    orc_tensor *z = gc_rand(a, 3, ORC_SHAPE(2, 3, F), 11, -2, 2, false);
    const int64_t ks[] = {1, 5, 12, 36, 37};
    const float Ts[] = {0.1f, 0.5f, 2.0f};
    for (int ki = 0; ki < 5; ki++)
        for (int ti = 0; ti < 3; ti++) {
            const int64_t k = ks[ki];
            const float T = Ts[ti];
            orc_tensor *m = orc_soft_topk(&ctx, z, k, T);
            GC_ASSERT_OK(&ctx);
            assert_non_null(m);
            orc_tensor *v, *ix;
            assert_true(orc_topk(&ctx, z, k, &v, &ix));
            for (int64_t r = 0; r < 6; r++) {
                const float *zr = orc_f32(z) + r * F, *mr = orc_f32(m) + r * F;
                int nz = 0;
                char *in = calloc((size_t)F, 1);
                for (int64_t j = 0; j < k; j++) in[orc_i32(ix)[r * k + j]] = 1;
                int first = -1;
                for (int64_t i = 0; i < F; i++) {
                    if (mr[i] != 0.0f) nz++;
                    if (!in[i]) assert_true(mr[i] == 0.0f);
                    if (in[i] && first < 0 && mr[i] > 1e-4f && mr[i] < 1 - 1e-4f) first = (int)i;
                }
                assert_int_equal(nz, k);
                if (first >= 0) {
                    const double mi = mr[first];
                    const double tau = zr[first] - T * log(mi / (1 - mi));
                    double s = 0;
                    for (int64_t i = 0; i < F; i++) s += 1.0 / (1.0 + exp(-((double)zr[i] - tau) / T));
                    assert_true(fabs(s - (double)k) < 1e-3 * (double)k);
                }
                free(in);
            }
        }
    /* Ties go to the lower index: equal scores, k = 2 keeps channels 0 and 1. */
    orc_tensor *same = gc_rand(a, 1, ORC_SHAPE(5), 1, 0, 1, false);
    for (int i = 0; i < 5; i++) orc_f32(same)[i] = 0.25f;
    orc_tensor *m = orc_soft_topk(&ctx, same, 2, 1.0f);
    GC_ASSERT_OK(&ctx);
    assert_true(orc_f32(m)[0] > 0 && orc_f32(m)[1] > 0);
    assert_true(orc_f32(m)[2] == 0 && orc_f32(m)[3] == 0 && orc_f32(m)[4] == 0);
    /* tau gives sum = 2 over five equal values: each soft value is 0.4. */
    assert_true(fabsf(orc_f32(m)[0] - 0.4f) < 1e-6f);
    orc_arena_destroy(a);
}

typedef struct {
    int64_t k;
    float T;
} stk_args;

static orc_tensor *build_stk(orc_ctx *c, orc_tensor **in, void *u) {
    const stk_args *s = u;
    return orc_soft_topk(c, in[0], s->k, s->T);
}

static orc_tensor *build_stk_t(orc_ctx *c, orc_tensor **in, void *u) {
    const stk_args *s = u;
    return orc_soft_topk(c, orc_transpose(c, in[0], 0, 1), s->k, s->T);
}

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x[1] = {gc_rand(a, 3, ORC_SHAPE(2, 3, 12), 5, 0, 1, true)};
    spread(x[0], 6);
    stk_args s = {4, 0.5f};
    gc_check("soft_topk k=4", build_stk, 1, x, &s, (gc_opts){0});
    s = (stk_args){1, 1.0f};
    gc_check("soft_topk k=1", build_stk, 1, x, &s, (gc_opts){0});
    s = (stk_args){11, 0.3f};
    gc_check("soft_topk k=11", build_stk, 1, x, &s, (gc_opts){0});
    /* Strided input. */
    orc_tensor *xt[1] = {gc_rand(a, 2, ORC_SHAPE(9, 4), 7, 0, 1, true)};
    spread(xt[0], 8);
    s = (stk_args){3, 0.4f};
    gc_check("soft_topk(transpose)", build_stk_t, 1, xt, &s, (gc_opts){0});

    /* The gradient of sum(m) must not be the naive sum of s' over the kept
     * channels: tau moves too. With every channel kept (k = F) the constraint
     * holds sum(m) = k for every z, so its gradient is zero. */
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *z = gc_rand(a, 1, ORC_SHAPE(12), 9, -1, 1, true);
    orc_tensor *m = orc_soft_topk(&ctx, z, 12, 0.5f);
    assert_int_equal(orc_backward(&ctx, orc_sum_all(&ctx, m)), ORC_OK);
    for (int i = 0; i < 12; i++) assert_true(fabsf(z->grad[i]) < 1e-5f);
    orc_arena_destroy(a);
}

static void run_threads(int threads, orc_tensor *z, float *out, float *grad) {
    omp_set_num_threads(threads);
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    z->grad = NULL; /* a non-parameter leaf: its gradient lives in the step's arena */
    orc_tensor *m = orc_soft_topk(&ctx, z, 100, 0.25f);
    GC_ASSERT_OK(&ctx);
    memcpy(out, m->data, sizeof(float) * (size_t)m->numel);
    orc_tensor *w = gc_rand(a, 2, ORC_SHAPE(16, 300), 3, -1, 1, false);
    assert_int_equal(orc_backward(&ctx, orc_sum_all(&ctx, orc_mul(&ctx, m, w))), ORC_OK);
    memcpy(grad, z->grad, sizeof(float) * (size_t)z->numel);
    z->grad = NULL;
    orc_arena_destroy(a);
}

static void test_threads_bitwise(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *z = gc_rand(a, 2, ORC_SHAPE(16, 300), 2, -3, 3, true);
    float *o1 = malloc(sizeof(float) * 4800), *o3 = malloc(sizeof(float) * 4800);
    float *g1 = malloc(sizeof(float) * 4800), *g3 = malloc(sizeof(float) * 4800);
    run_threads(1, z, o1, g1);
    run_threads(3, z, o3, g3);
    omp_set_num_threads(2);
    assert_memory_equal(o1, o3, sizeof(float) * 4800);
    assert_memory_equal(g1, g3, sizeof(float) * 4800);
    free(o1);
    free(o3);
    free(g1);
    free(g3);
    orc_arena_destroy(a);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(3, 5), 1, -1, 1, false);
    assert_null(orc_soft_topk(&ctx, x, 6, 1.0f));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    assert_non_null(strstr(ctx.err.msg, "k = 6"));
    assert_non_null(strstr(ctx.err.msg, "[3, 5]"));
    orc_error_clear(&ctx.err);
    assert_null(orc_soft_topk(&ctx, x, 0, 1.0f));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    orc_error_clear(&ctx.err);
    assert_null(orc_soft_topk(&ctx, x, 2, 0.0f));
    assert_non_null(strstr(ctx.err.msg, "temperature"));
    orc_error_clear(&ctx.err);
    orc_f32(x)[7] = NAN;
    assert_null(orc_soft_topk(&ctx, x, 2, 1.0f));
    assert_int_equal(ctx.err.code, ORC_ERANGE);
    assert_non_null(strstr(ctx.err.msg, "row 1"));
    orc_error_clear(&ctx.err);
    orc_error err = {0};
    orc_tensor *ids = orc_tensor_zeros(a, ORC_I32, 1, ORC_SHAPE(4), &err);
    assert_null(orc_soft_topk(&ctx, ids, 1, 1.0f));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    orc_error_clear(&ctx.err);
    assert_null(orc_soft_topk(&ctx, NULL, 1, 1.0f));
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_properties),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
