/* orc_rope: values against the direct formula, identity at position 0, norm
 * of each rotated pair, gradients (also through a strided view), argument
 * errors and thread-count determinism. */
#include "gradcheck.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

static orc_tensor *make_pos(orc_arena *a, int64_t T, const int32_t *vals) {
    orc_error err = {0};
    orc_tensor *p = orc_tensor_new(a, ORC_I32, 1, ORC_SHAPE(T), &err);
    if (!p) fail_msg("pos: %s", err.msg);
    for (int64_t t = 0; t < T; t++) orc_i32(p)[t] = vals ? vals[t] : 0;
    return p;
}

/* y from the formula, in double, for x read through its strides. */
static void check_formula(const orc_tensor *x, const orc_tensor *y, const int32_t *pos, double base) {
    const int64_t B = x->shape[0], T = x->shape[1], H = x->shape[2], D = x->shape[3], half = D / 2;
    float *xv = malloc(sizeof(float) * (size_t)x->numel);
    orc_read_f32(x, xv);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < half; i++) {
                    const int64_t r = ((b * T + t) * H + h) * D;
                    const double ang = (double)(pos ? pos[t] : t) / pow(base, 2.0 * (double)i / (double)D);
                    const double a = xv[r + i], c = xv[r + i + half];
                    const double w0 = a * cos(ang) - c * sin(ang), w1 = c * cos(ang) + a * sin(ang);
                    assert_float_equal(orc_f32(y)[r + i], w0, 2e-6);
                    assert_float_equal(orc_f32(y)[r + i + half], w1, 2e-6);
                }
    free(xv);
}

static void test_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    const int32_t pos[5] = {3, 0, 17, 1000, 4095};
    orc_tensor *x = gc_rand(a, 4, ORC_SHAPE(2, 5, 3, 8), 1, -1, 1, false);
    orc_tensor *p = make_pos(a, 5, pos);
    orc_tensor *y = orc_rope(&ctx, x, p, 10000.0f);
    GC_ASSERT_OK(&ctx);
    check_formula(x, y, pos, 10000.0);
    y = orc_rope(&ctx, x, p, 500000.0f);
    GC_ASSERT_OK(&ctx);
    check_formula(x, y, pos, 500000.0);
    /* NULL pos is 0..T-1; a strided view (heads sliced out of a wider tensor) reads the same. */
    orc_tensor *wide = gc_rand(a, 4, ORC_SHAPE(2, 5, 7, 8), 2, -1, 1, false);
    orc_tensor *view = orc_slice(&ctx, wide, 2, 2, 3);
    y = orc_rope(&ctx, view, NULL, 10000.0f);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y->shape[2], 3);
    check_formula(view, y, NULL, 10000.0);
    orc_arena_destroy(a);
}

static void test_position_zero_is_identity(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 4, ORC_SHAPE(2, 4, 3, 10), 3, -2, 2, false);
    orc_tensor *y = orc_rope(&ctx, x, make_pos(a, 4, NULL), 500000.0f);
    GC_ASSERT_OK(&ctx);
    for (int64_t i = 0; i < x->numel; i++) assert_true(orc_f32(y)[i] == orc_f32(x)[i]);
    orc_arena_destroy(a);
}

static void test_pair_norm_preserved(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    const int64_t B = 2, T = 33, H = 2, D = 16, half = D / 2;
    orc_tensor *x = gc_rand(a, 4, ORC_SHAPE(B, T, H, D), 4, -3, 3, false);
    orc_tensor *y = orc_rope(&ctx, x, NULL, 10000.0f);
    GC_ASSERT_OK(&ctx);
    for (int64_t r = 0; r < B * T * H; r++)
        for (int64_t i = 0; i < half; i++) {
            const float *xr = orc_f32(x) + r * D, *yr = orc_f32(y) + r * D;
            double n0 = hypot(xr[i], xr[i + half]), n1 = hypot(yr[i], yr[i + half]);
            assert_true(fabs(n0 - n1) <= 1e-5 * (1.0 + n0));
        }
    orc_arena_destroy(a);
}

typedef struct rope_case {
    orc_tensor *pos;
    float base;
} rope_case;

static orc_tensor *build_rope(orc_ctx *c, orc_tensor **in, void *u) {
    const rope_case *rc = u;
    return orc_rope(c, in[0], rc->pos, rc->base);
}

/* Heads 1..2 of a [2, 3, 4, 6] tensor: the gradient goes back through the view. */
static orc_tensor *build_rope_view(orc_ctx *c, orc_tensor **in, void *u) {
    const rope_case *rc = u;
    return orc_rope(c, orc_slice(c, in[0], 2, 1, 2), rc->pos, rc->base);
}

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    const int32_t pos[3] = {7, 2, 31};
    rope_case rc = {make_pos(a, 3, pos), 10000.0f};
    orc_tensor *in[1] = {gc_rand(a, 4, ORC_SHAPE(2, 3, 2, 6), 5, -1, 1, true)};
    gc_check("rope", build_rope, 1, in, &rc, (gc_opts){0});
    rope_case rc0 = {NULL, 500000.0f};
    gc_check("rope NULL pos", build_rope, 1, in, &rc0, (gc_opts){0});
    orc_tensor *wide[1] = {gc_rand(a, 4, ORC_SHAPE(2, 3, 4, 6), 6, -1, 1, true)};
    gc_check("rope strided", build_rope_view, 1, wide, &rc, (gc_opts){0});
    orc_arena_destroy(a);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *odd = gc_rand(a, 4, ORC_SHAPE(1, 2, 1, 5), 1, -1, 1, false);
    assert_null(orc_rope(&ctx, odd, NULL, 10000.0f));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    assert_non_null(strstr(ctx.err.msg, "rope"));
    assert_non_null(strstr(ctx.err.msg, "[1, 2, 1, 5]"));

    orc_ctx_reset(&ctx);
    orc_tensor *x = gc_rand(a, 4, ORC_SHAPE(1, 2, 1, 4), 1, -1, 1, false);
    assert_null(orc_rope(&ctx, x, make_pos(a, 3, NULL), 10000.0f));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);

    orc_ctx_reset(&ctx);
    x = gc_rand(a, 4, ORC_SHAPE(1, 2, 1, 4), 1, -1, 1, false);
    orc_tensor *fpos = gc_rand(a, 1, ORC_SHAPE(2), 1, 0, 1, false);
    assert_null(orc_rope(&ctx, x, fpos, 10000.0f));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);

    orc_ctx_reset(&ctx);
    x = gc_rand(a, 3, ORC_SHAPE(2, 1, 4), 1, -1, 1, false);
    assert_null(orc_rope(&ctx, x, NULL, 10000.0f));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);

    orc_ctx_reset(&ctx);
    x = gc_rand(a, 4, ORC_SHAPE(1, 2, 1, 4), 1, -1, 1, false);
    assert_null(orc_rope(&ctx, x, NULL, 0.0f));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    orc_arena_destroy(a);
}

/* Forward and backward with 1 and 3 threads give the same bits. */
static void run_threads(int threads, float *out, float *grad) {
    omp_set_num_threads(threads);
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 4, ORC_SHAPE(4, 37, 3, 64), 8, -1, 1, true);
    orc_tensor *y = orc_rope(&ctx, x, NULL, 500000.0f);
    GC_ASSERT_OK(&ctx);
    float *w = malloc(sizeof(float) * (size_t)y->numel);
    for (int64_t i = 0; i < y->numel; i++) w[i] = (float)((i * 7919) % 13) - 6.0f;
    assert_int_equal(orc_backward_with(&ctx, y, w), ORC_OK);
    memcpy(out, orc_f32(y), sizeof(float) * (size_t)y->numel);
    memcpy(grad, x->grad, sizeof(float) * (size_t)x->numel);
    free(w);
    orc_arena_destroy(a);
}

static void test_thread_determinism(void **state) {
    (void)state;
    const size_t n = 4 * 37 * 3 * 64;
    float *o1 = malloc(n * sizeof(float)), *g1 = malloc(n * sizeof(float));
    float *o3 = malloc(n * sizeof(float)), *g3 = malloc(n * sizeof(float));
    const int saved = omp_get_max_threads();
    run_threads(1, o1, g1);
    run_threads(3, o3, g3);
    omp_set_num_threads(saved);
    assert_memory_equal(o1, o3, n * sizeof(float));
    assert_memory_equal(g1, g3, n * sizeof(float));
    free(o1), free(g1), free(o3), free(g3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_position_zero_is_identity),
        cmocka_unit_test(test_pair_norm_preserved),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_thread_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
