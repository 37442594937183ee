/* concat and split: values against naive loops along the first, a middle
 * and the last axis, int32 data, gradients (more inputs than a node's in[],
 * strided inputs, pieces that get no gradient), error cases, and
 * bit-identical results for 1 and 3 threads. */
#include "gradcheck.h"

#include <omp.h>
#include <stdlib.h>

/* Naive concat of 3-D contiguous tensors along axis ax, element by element. */
static void naive_concat3(int n, orc_tensor *const *xs, int ax, float *out) {
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += xs[i]->shape[ax];
    int64_t osh[3] = {xs[0]->shape[0], xs[0]->shape[1], xs[0]->shape[2]};
    osh[ax] = total;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const orc_tensor *x = xs[i];
        for (int64_t a = 0; a < x->shape[0]; a++)
            for (int64_t b = 0; b < x->shape[1]; b++)
                for (int64_t c = 0; c < x->shape[2]; c++) {
                    int64_t p[3] = {a, b, c};
                    p[ax] += off;
                    out[(p[0] * osh[1] + p[1]) * osh[2] + p[2]] = orc_f32(x)[(a * x->shape[1] + b) * x->shape[2] + c];
                }
        off += x->shape[ax];
    }
}

static void test_concat_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    float want[64];
    /* axis 0 */
    orc_tensor *x0[2] = {gc_rand(a, 3, ORC_SHAPE(2, 3, 2), 1, -1, 1, false),
                         gc_rand(a, 3, ORC_SHAPE(4, 3, 2), 2, -1, 1, false)};
    orc_tensor *y = orc_concat(&ctx, 2, x0, 0);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y->shape[0], 6);
    naive_concat3(2, x0, 0, want);
    assert_memory_equal(orc_f32(y), want, sizeof(float) * (size_t)y->numel);
    /* middle axis, given as 1 and as -2, with a zero-length input */
    orc_tensor *x1[4] = {gc_rand(a, 3, ORC_SHAPE(2, 1, 4), 3, -1, 1, false),
                         gc_rand(a, 3, ORC_SHAPE(2, 3, 4), 4, -1, 1, false),
                         gc_rand(a, 3, ORC_SHAPE(2, 0, 4), 5, -1, 1, false),
                         gc_rand(a, 3, ORC_SHAPE(2, 2, 4), 6, -1, 1, false)};
    naive_concat3(4, x1, 1, want);
    const int axes[2] = {1, -2};
    for (int t = 0; t < 2; t++) {
        y = orc_concat(&ctx, 4, x1, axes[t]);
        GC_ASSERT_OK(&ctx);
        assert_int_equal(y->shape[1], 6);
        assert_memory_equal(orc_f32(y), want, sizeof(float) * (size_t)y->numel);
    }
    /* last axis */
    orc_tensor *x2[2] = {gc_rand(a, 3, ORC_SHAPE(2, 3, 1), 7, -1, 1, false),
                         gc_rand(a, 3, ORC_SHAPE(2, 3, 5), 8, -1, 1, false)};
    y = orc_concat(&ctx, 2, x2, -1);
    GC_ASSERT_OK(&ctx);
    naive_concat3(2, x2, 2, want);
    assert_memory_equal(orc_f32(y), want, sizeof(float) * (size_t)y->numel);
    orc_arena_destroy(a);
}

static void test_int32_and_strided(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *i0 = gc_rand_ids(a, 2, ORC_SHAPE(2, 2), 1, 100), *i1 = gc_rand_ids(a, 2, ORC_SHAPE(2, 3), 2, 100);
    orc_tensor *ins[2] = {i0, i1};
    orc_tensor *y = orc_concat(&ctx, 2, ins, 1);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y->dtype, ORC_I32);
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 5; c++)
            assert_int_equal(orc_i32(y)[r * 5 + c], c < 2 ? orc_i32(i0)[r * 2 + c] : orc_i32(i1)[r * 3 + c - 2]);
    orc_tensor *parts[2];
    assert_true(orc_split(&ctx, y, 1, 2, ORC_SHAPE(2, 3), parts));
    assert_memory_equal(parts[0]->data, i0->data, 4 * sizeof(int32_t));
    assert_memory_equal(parts[1]->data, i1->data, 6 * sizeof(int32_t));

    /* A transposed input is copied first. */
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(3, 2), 3, -1, 1, false);
    orc_tensor *xt = orc_transpose(&ctx, x, 0, 1); /* [2, 3] */
    orc_tensor *pair[2] = {xt, xt};
    y = orc_concat(&ctx, 2, pair, 0);
    GC_ASSERT_OK(&ctx);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 3; c++) assert_true(orc_f32(y)[r * 3 + c] == orc_f32(x)[c * 2 + r % 2]);
    orc_arena_destroy(a);
}

static void test_split_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 3, ORC_SHAPE(2, 7, 3), 1, -1, 1, false);
    orc_tensor *p[4];
    assert_true(orc_split(&ctx, x, 1, 4, ORC_SHAPE(2, 0, 4, 1), p));
    GC_ASSERT_OK(&ctx);
    const int64_t sizes[4] = {2, 0, 4, 1};
    int64_t off = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(p[i]->shape[1], sizes[i]);
        for (int64_t b = 0; b < 2; b++)
            for (int64_t j = 0; j < sizes[i]; j++)
                for (int64_t c = 0; c < 3; c++)
                    assert_true(orc_f32(p[i])[(b * sizes[i] + j) * 3 + c] == orc_f32(x)[(b * 7 + off + j) * 3 + c]);
        off += sizes[i];
    }
    /* Split then concat is the identity, along axis 0 too. */
    assert_true(orc_split(&ctx, x, 0, 2, ORC_SHAPE(1, 1), p));
    orc_tensor *y = orc_concat(&ctx, 2, p, 0);
    GC_ASSERT_OK(&ctx);
    assert_memory_equal(orc_f32(y), orc_f32(x), sizeof(float) * (size_t)x->numel);
    orc_arena_destroy(a);
}

/* ---- gradients --------------------------------------------------------------- */

static orc_tensor *build_concat_mid(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    return orc_concat(c, 3, in, 1);
}

/* Five inputs (more than a node's in[] holds), one of them reused. */
static orc_tensor *build_concat_five(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *xs[5] = {in[0], in[1], in[2], in[0], in[3]};
    return orc_concat(c, 5, xs, -1);
}

static orc_tensor *build_concat_strided(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *xs[2] = {orc_transpose(c, in[0], 0, 1), in[1]};
    return orc_concat(c, 2, xs, 0);
}

/* Split along a middle axis, drop one piece, reorder and scale the rest. */
static orc_tensor *build_split(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *p[3];
    if (!orc_split(c, in[0], 1, 3, ORC_SHAPE(2, 3, 2), p)) return NULL;
    orc_tensor *xs[2] = {p[2], orc_scale(c, p[0], -1.5f)};
    return orc_concat(c, 2, xs, 1);
}

static orc_tensor *build_split_axis0(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *p[2];
    if (!orc_split(c, in[0], 0, 2, ORC_SHAPE(3, 2), p)) return NULL;
    return orc_mul(c, p[0], orc_slice(c, p[1], 0, 1, 1));
}

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *m[3] = {gc_rand(a, 3, ORC_SHAPE(2, 1, 3), 1, -1, 1, true),
                        gc_rand(a, 3, ORC_SHAPE(2, 4, 3), 2, -1, 1, true),
                        gc_rand(a, 3, ORC_SHAPE(2, 2, 3), 3, -1, 1, false)};
    gc_check("concat mid", build_concat_mid, 3, m, NULL, (gc_opts){0});
    orc_tensor *f[4] = {gc_rand(a, 2, ORC_SHAPE(3, 2), 4, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(3, 1), 5, -1, 1, true),
                        gc_rand(a, 2, ORC_SHAPE(3, 3), 6, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(3, 4), 7, -1, 1, true)};
    gc_check("concat five", build_concat_five, 4, f, NULL, (gc_opts){0});
    orc_tensor *s[2] = {gc_rand(a, 2, ORC_SHAPE(3, 2), 8, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(5, 3), 9, -1, 1, true)};
    gc_check("concat strided", build_concat_strided, 2, s, NULL, (gc_opts){0});
    orc_tensor *x[1] = {gc_rand(a, 3, ORC_SHAPE(3, 7, 2), 10, -1, 1, true)};
    gc_check("split", build_split, 1, x, NULL, (gc_opts){0});
    orc_tensor *x0[1] = {gc_rand(a, 2, ORC_SHAPE(5, 3), 11, -1, 1, true)};
    gc_check("split axis 0", build_split_axis0, 1, x0, NULL, (gc_opts){0});
    orc_arena_destroy(a);
}

/* ---- errors -------------------------------------------------------------------------- */

static void expect_error(orc_ctx *ctx, orc_status code, const char *needle) {
    assert_int_equal(ctx->err.code, code);
    if (needle && !strstr(ctx->err.msg, needle)) fail_msg("message '%s' lacks '%s'", ctx->err.msg, needle);
    orc_error_clear(&ctx->err);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(2, 3), 1, -1, 1, false);
    orc_tensor *z = gc_rand(a, 2, ORC_SHAPE(3, 3), 2, -1, 1, false);
    orc_tensor *ids = gc_rand_ids(a, 2, ORC_SHAPE(2, 3), 3, 4);
    orc_tensor *v = gc_rand(a, 1, ORC_SHAPE(3), 4, -1, 1, false);

    orc_tensor *bad_shape[2] = {x, z};
    assert_null(orc_concat(&ctx, 2, bad_shape, 1));
    expect_error(&ctx, ORC_ESHAPE, "[3, 3]");
    assert_non_null(orc_concat(&ctx, 2, bad_shape, 0)); /* fine along axis 0 */
    orc_tensor *bad_ndim[2] = {x, v};
    assert_null(orc_concat(&ctx, 2, bad_ndim, 0));
    expect_error(&ctx, ORC_ESHAPE, "input 1");
    orc_tensor *bad_dtype[2] = {x, ids};
    assert_null(orc_concat(&ctx, 2, bad_dtype, 0));
    expect_error(&ctx, ORC_EDTYPE, "i32");
    assert_null(orc_concat(&ctx, 2, bad_shape, 2));
    expect_error(&ctx, ORC_EINVAL, "axis 2");
    assert_null(orc_concat(&ctx, 0, bad_shape, 0));
    expect_error(&ctx, ORC_EINVAL, "concat");
    orc_tensor *with_null[2] = {x, NULL};
    assert_null(orc_concat(&ctx, 2, with_null, 0));
    expect_error(&ctx, ORC_EINVAL, "input 1");

    orc_tensor *p[3] = {x, x, x};
    assert_false(orc_split(&ctx, x, 1, 2, ORC_SHAPE(1, 1), p));
    assert_null(p[0]);
    expect_error(&ctx, ORC_ESHAPE, "sum to 2");
    assert_false(orc_split(&ctx, x, 1, 2, ORC_SHAPE(4, -1), p));
    expect_error(&ctx, ORC_EINVAL, "negative");
    assert_false(orc_split(&ctx, x, -3, 1, ORC_SHAPE(2), p));
    expect_error(&ctx, ORC_EINVAL, "axis -3");
    assert_false(orc_split(&ctx, x, 0, 0, ORC_SHAPE(2), p));
    expect_error(&ctx, ORC_EINVAL, "split");
    orc_arena_destroy(a);
}

/* ---- thread-count determinism ----------------------------------------------------------- */

typedef struct run_out {
    float *y, *ga, *gb, *gx;
    int64_t ny, na, nb, nx;
} run_out;

static float *dup(const float *s, int64_t n) {
    float *d = malloc(sizeof(float) * (size_t)n);
    memcpy(d, s, sizeof(float) * (size_t)n);
    return d;
}

/* concat along axis 1 and axis 0, then split the result; one backward. */
static run_out run_threads(int threads) {
    omp_set_num_threads(threads);
    orc_arena *ar = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, ar, 1);
    orc_tensor *a = gc_rand(ar, 2, ORC_SHAPE(300, 200), 1, -1, 1, true);
    orc_tensor *b = gc_rand(ar, 2, ORC_SHAPE(300, 57), 2, -1, 1, true);
    orc_tensor *x = gc_rand(ar, 2, ORC_SHAPE(600, 257), 3, -1, 1, true);
    orc_tensor *ab[2] = {a, b};
    orc_tensor *wide = orc_concat(&ctx, 2, ab, 1); /* [300, 257] */
    orc_tensor *p[2];
    assert_true(orc_split(&ctx, x, 0, 2, ORC_SHAPE(100, 500), p));
    orc_tensor *q[3];
    assert_true(orc_split(&ctx, p[1], 1, 3, ORC_SHAPE(7, 200, 50), q));
    orc_tensor *tall_in[3] = {wide, p[0], wide};
    orc_tensor *tall = orc_concat(&ctx, 3, tall_in, 0); /* [700, 257] */
    orc_tensor *last_in[2] = {q[2], q[0]};
    orc_tensor *tail = orc_concat(&ctx, 2, last_in, 1);   /* [500, 57] */
    orc_tensor *both[2] = {orc_reshape(&ctx, tall, 1, ORC_SHAPE(-1)), orc_reshape(&ctx, tail, 1, ORC_SHAPE(-1))};
    orc_tensor *y = orc_concat(&ctx, 2, both, 0);
    GC_ASSERT_OK(&ctx);
    orc_tensor *w = gc_rand(ar, 1, y->shape, 4, -1, 1, false);
    if (orc_backward_with(&ctx, y, orc_f32(w)) != ORC_OK) fail_msg("backward: %s", ctx.err.msg);
    run_out r = {dup(orc_f32(y), y->numel), dup(a->grad, a->numel), dup(b->grad, b->numel), dup(x->grad, x->numel),
                 y->numel, a->numel, b->numel, x->numel};
    orc_arena_destroy(ar);
    return r;
}

static void test_threads_deterministic(void **state) {
    (void)state;
    const int saved = omp_get_max_threads();
    run_out r1 = run_threads(1), r3 = run_threads(3);
    omp_set_num_threads(saved);
    assert_memory_equal(r1.y, r3.y, sizeof(float) * (size_t)r1.ny);
    assert_memory_equal(r1.ga, r3.ga, sizeof(float) * (size_t)r1.na);
    assert_memory_equal(r1.gb, r3.gb, sizeof(float) * (size_t)r1.nb);
    assert_memory_equal(r1.gx, r3.gx, sizeof(float) * (size_t)r1.nx);
    free(r1.y); free(r1.ga); free(r1.gb); free(r1.gx);
    free(r3.y); free(r3.ga); free(r3.gb); free(r3.gx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concat_values),
        cmocka_unit_test(test_int32_and_strided),
        cmocka_unit_test(test_split_values),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_threads_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
