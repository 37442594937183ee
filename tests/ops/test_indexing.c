/* index_select, scatter_add and gather: values against naive loops,
 * gradients (with repeated indices, so accumulation is exercised), error
 * cases, bit-identical results for 1 and 3 threads, and a small MoE round
 * trip (topk routing -> index_select -> scale -> scatter_add) against a
 * dense reference. */
#include "gradcheck.h"

#include <omp.h>
#include <stdlib.h>

static orc_tensor *ids_from(orc_arena *a, int ndim, const int64_t *shape, const int32_t *v) {
    orc_error err = {0};
    orc_tensor *t = orc_tensor_new(a, ORC_I32, ndim, shape, &err);
    if (!t) fail_msg("ids_from: %s", err.msg);
    memcpy(t->data, v, sizeof(int32_t) * (size_t)t->numel);
    return t;
}

static float *copy_floats(const float *src, int64_t n) {
    float *d = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (n) memcpy(d, src, sizeof(float) * (size_t)n);
    return d;
}

/* ---- builders for gc_check (the index tensor comes through user) --------- */

static orc_tensor *build_index_select(orc_ctx *c, orc_tensor **in, void *u) {
    return orc_index_select(c, in[0], (orc_tensor *)u);
}

typedef struct scatter_args {
    orc_tensor *idx;
    int64_t n;
} scatter_args;

static orc_tensor *build_scatter_add(orc_ctx *c, orc_tensor **in, void *u) {
    scatter_args *s = u;
    return orc_scatter_add(c, in[0], s->idx, s->n);
}

static orc_tensor *build_gather(orc_ctx *c, orc_tensor **in, void *u) {
    return orc_gather(c, in[0], (orc_tensor *)u);
}

/* Gather from a transposed (strided) view, so the contiguous copy is in the graph. */
static orc_tensor *build_gather_t(orc_ctx *c, orc_tensor **in, void *u) {
    return orc_gather(c, orc_transpose(c, in[0], 0, 1), (orc_tensor *)u);
}

/* ---- values ------------------------------------------------------------------ */

static void test_index_select_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 3, ORC_SHAPE(7, 3, 2), 1, -1, 1, false);
    orc_tensor *idx = ids_from(a, 1, ORC_SHAPE(6), (const int32_t[]){6, 0, 3, 3, 0, 5});
    orc_tensor *y = orc_index_select(&ctx, x, idx);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->shape[0], 6);
    assert_int_equal(y->shape[1], 3);
    assert_int_equal(y->shape[2], 2);
    for (int m = 0; m < 6; m++)
        for (int j = 0; j < 6; j++) assert_true(orc_f32(y)[m * 6 + j] == orc_f32(x)[orc_i32(idx)[m] * 6 + j]);
    /* An empty selection is fine. */
    orc_tensor *e = orc_index_select(&ctx, x, ids_from(a, 1, ORC_SHAPE(0), (const int32_t[]){0}));
    GC_ASSERT_OK(&ctx);
    assert_int_equal(e->numel, 0);
    orc_arena_destroy(a);
}

static void test_scatter_add_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *src = gc_rand(a, 2, ORC_SHAPE(8, 5), 2, -1, 1, false);
    const int32_t iv[8] = {3, 0, 3, 1, 3, 0, 5, 1};
    orc_tensor *idx = ids_from(a, 1, ORC_SHAPE(8), iv);
    orc_tensor *y = orc_scatter_add(&ctx, src, idx, 6);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y->shape[0], 6);
    assert_int_equal(y->shape[1], 5);
    float want[30] = {0};
    for (int m = 0; m < 8; m++)
        for (int j = 0; j < 5; j++) want[iv[m] * 5 + j] += orc_f32(src)[m * 5 + j];
    /* Same additions in the same order as the serial loop: exact. */
    assert_memory_equal(orc_f32(y), want, sizeof want);
    orc_arena_destroy(a);
}

static void test_gather_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 3, ORC_SHAPE(2, 3, 5), 3, -1, 1, false);
    orc_tensor *idx = gc_rand_ids(a, 3, ORC_SHAPE(2, 3, 7), 4, 5);
    orc_tensor *y = orc_gather(&ctx, x, idx);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->shape[2], 7);
    for (int r = 0; r < 6; r++)
        for (int j = 0; j < 7; j++)
            assert_true(orc_f32(y)[r * 7 + j] == orc_f32(x)[r * 5 + orc_i32(idx)[r * 7 + j]]);
    /* 1-D works too. */
    orc_tensor *x1 = gc_rand(a, 1, ORC_SHAPE(4), 5, -1, 1, false);
    orc_tensor *y1 = orc_gather(&ctx, x1, ids_from(a, 1, ORC_SHAPE(3), (const int32_t[]){3, 3, 0}));
    GC_ASSERT_OK(&ctx);
    assert_true(orc_f32(y1)[0] == orc_f32(x1)[3] && orc_f32(y1)[2] == orc_f32(x1)[0]);
    orc_arena_destroy(a);
}

/* ---- gradients ------------------------------------------------------------------ */

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    /* index_select with repeats and an unused row. */
    orc_tensor *xs[1] = {gc_rand(a, 3, ORC_SHAPE(5, 3, 2), 10, -1, 1, true)};
    orc_tensor *sel = ids_from(a, 1, ORC_SHAPE(9), (const int32_t[]){4, 1, 1, 0, 4, 4, 2, 1, 0});
    gc_check("index_select", build_index_select, 1, xs, sel, (gc_opts){0});

    /* scatter_add with repeats and empty buckets (1 and 4). */
    orc_tensor *ss[1] = {gc_rand(a, 3, ORC_SHAPE(9, 2, 3), 11, -1, 1, true)};
    scatter_args sa = {ids_from(a, 1, ORC_SHAPE(9), (const int32_t[]){2, 0, 2, 3, 0, 5, 2, 6, 0}), 7};
    gc_check("scatter_add", build_scatter_add, 1, ss, &sa, (gc_opts){0});

    /* gather with repeats inside rows. */
    orc_tensor *gs[1] = {gc_rand(a, 3, ORC_SHAPE(2, 3, 5), 12, -1, 1, true)};
    orc_tensor *gi = gc_rand_ids(a, 3, ORC_SHAPE(2, 3, 9), 13, 5);
    gc_check("gather", build_gather, 1, gs, gi, (gc_opts){0});

    /* gather from a strided view: x [5, 3] transposed to [3, 5]. */
    orc_tensor *gt[1] = {gc_rand(a, 2, ORC_SHAPE(5, 3), 14, -1, 1, true)};
    orc_tensor *gti = gc_rand_ids(a, 2, ORC_SHAPE(3, 4), 15, 5);
    gc_check("gather(transpose)", build_gather_t, 1, gt, gti, (gc_opts){0});
    orc_arena_destroy(a);
}

/* ---- errors --------------------------------------------------------------------------- */

static void expect_error(orc_ctx *ctx, orc_status code, const char *needle1, const char *needle2) {
    assert_int_equal(ctx->err.code, code);
    if (needle1 && !strstr(ctx->err.msg, needle1)) fail_msg("message '%s' lacks '%s'", ctx->err.msg, needle1);
    if (needle2 && !strstr(ctx->err.msg, needle2)) fail_msg("message '%s' lacks '%s'", ctx->err.msg, needle2);
    orc_error_clear(&ctx->err);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(5, 3), 1, -1, 1, false);
    orc_tensor *fidx = gc_rand(a, 1, ORC_SHAPE(4), 2, 0, 1, false);

    /* out-of-range indices name position and value */
    assert_null(orc_index_select(&ctx, x, ids_from(a, 1, ORC_SHAPE(4), (const int32_t[]){0, 4, 5, 1})));
    expect_error(&ctx, ORC_ERANGE, "idx[2] = 5", "[0, 5)");
    assert_null(orc_index_select(&ctx, x, ids_from(a, 1, ORC_SHAPE(2), (const int32_t[]){0, -1})));
    expect_error(&ctx, ORC_ERANGE, "idx[1] = -1", NULL);
    assert_null(orc_scatter_add(&ctx, x, ids_from(a, 1, ORC_SHAPE(5), (const int32_t[]){0, 1, 2, 3, 3}), 3));
    expect_error(&ctx, ORC_ERANGE, "idx[3] = 3", "n = 3");
    orc_tensor *gidx = ids_from(a, 2, ORC_SHAPE(5, 2), (const int32_t[]){0, 1, 2, 2, 1, 0, 2, 3, 0, 0});
    assert_null(orc_gather(&ctx, x, gidx));
    expect_error(&ctx, ORC_ERANGE, "idx[3, 1] = 3", "[0, 3)");

    /* wrong dtypes */
    assert_null(orc_index_select(&ctx, x, fidx));
    expect_error(&ctx, ORC_EDTYPE, "index_select", "f32");
    assert_null(orc_scatter_add(&ctx, gidx, ids_from(a, 1, ORC_SHAPE(5), (const int32_t[]){0, 0, 0, 0, 0}), 2));
    expect_error(&ctx, ORC_EDTYPE, "scatter_add", NULL);
    assert_null(orc_gather(&ctx, x, gc_rand(a, 2, ORC_SHAPE(5, 2), 3, 0, 1, false)));
    expect_error(&ctx, ORC_EDTYPE, "gather", NULL);

    /* mismatched shapes */
    assert_null(orc_index_select(&ctx, x, gidx));
    expect_error(&ctx, ORC_ESHAPE, "index_select", "[5, 2]");
    assert_null(orc_scatter_add(&ctx, x, ids_from(a, 1, ORC_SHAPE(4), (const int32_t[]){0, 0, 0, 0}), 2));
    expect_error(&ctx, ORC_ESHAPE, "[4]", "[5, 3]");
    assert_null(orc_scatter_add(&ctx, x, ids_from(a, 1, ORC_SHAPE(5), (const int32_t[]){0, 0, 0, 0, 0}), -1));
    expect_error(&ctx, ORC_EINVAL, "negative", NULL);
    assert_null(orc_gather(&ctx, x, ids_from(a, 2, ORC_SHAPE(4, 1), (const int32_t[]){0, 0, 0, 0})));
    expect_error(&ctx, ORC_ESHAPE, "[5, 3]", "[4, 1]");
    assert_null(orc_gather(&ctx, x, ids_from(a, 1, ORC_SHAPE(5), (const int32_t[]){0, 0, 0, 0, 0})));
    expect_error(&ctx, ORC_ESHAPE, "gather", NULL);

    /* sticky: a NULL input from a failed step */
    assert_null(orc_index_select(&ctx, NULL, gidx));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    orc_arena_destroy(a);
}

/* ---- thread-count determinism ---------------------------------------------------------- */

typedef struct run_out {
    float *y[3];
    float *g[3];
    int64_t ny[3], ng[3];
} run_out;

/* Runs op `which` on sizes above the parallel threshold with a fixed
 * upstream gradient; records its output and input gradient. */
static void run_one(int which, float **y, int64_t *ny, float **g, int64_t *ng) {
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 7);
    orc_tensor *x = NULL, *out = NULL;
    if (which == 0) {
        x = gc_rand(a, 2, ORC_SHAPE(300, 257), 21, -1, 1, true);
        out = orc_index_select(&ctx, x, gc_rand_ids(a, 1, ORC_SHAPE(2000), 24, 300));
    } else if (which == 1) {
        x = gc_rand(a, 2, ORC_SHAPE(2000, 257), 22, -1, 1, true);
        out = orc_scatter_add(&ctx, x, gc_rand_ids(a, 1, ORC_SHAPE(2000), 25, 300), 300);
    } else {
        x = gc_rand(a, 2, ORC_SHAPE(64, 1000), 23, -1, 1, true);
        out = orc_gather(&ctx, x, gc_rand_ids(a, 2, ORC_SHAPE(64, 700), 26, 1000));
    }
    GC_ASSERT_OK(&ctx);
    orc_tensor *w = gc_rand(a, out->ndim, out->shape, 30 + which, -1, 1, false);
    if (orc_backward_with(&ctx, out, orc_f32(w)) != ORC_OK) fail_msg("backward: %s", ctx.err.msg);
    *ny = out->numel;
    *y = copy_floats(orc_f32(out), out->numel);
    *ng = x->numel;
    *g = copy_floats(x->grad, x->numel);
    orc_arena_destroy(a);
}

static run_out run_all(int threads) {
    omp_set_num_threads(threads);
    run_out r;
    for (int i = 0; i < 3; i++) run_one(i, &r.y[i], &r.ny[i], &r.g[i], &r.ng[i]);
    return r;
}

static void test_threads_deterministic(void **state) {
    (void)state;
    const int saved = omp_get_max_threads();
    run_out r1 = run_all(1), r3 = run_all(3);
    omp_set_num_threads(saved);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r1.ny[i], r3.ny[i]);
        assert_memory_equal(r1.y[i], r3.y[i], sizeof(float) * (size_t)r1.ny[i]);
        assert_memory_equal(r1.g[i], r3.g[i], sizeof(float) * (size_t)r1.ng[i]);
        free(r1.y[i]); free(r3.y[i]); free(r1.g[i]); free(r3.g[i]);
    }
}

/* The parallel scatter equals the serial index_add loop bit for bit. */
static void test_scatter_matches_serial_big(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    const int64_t M = 3000, D = 37, n = 50;
    orc_tensor *src = gc_rand(a, 2, ORC_SHAPE(M, D), 40, -1, 1, false);
    orc_tensor *idx = gc_rand_ids(a, 1, ORC_SHAPE(M), 41, (int32_t)n);
    orc_tensor *y = orc_scatter_add(&ctx, src, idx, n);
    GC_ASSERT_OK(&ctx);
    float *want = calloc((size_t)(n * D), sizeof(float));
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < D; j++) want[orc_i32(idx)[m] * D + j] += orc_f32(src)[m * D + j];
    assert_memory_equal(orc_f32(y), want, sizeof(float) * (size_t)(n * D));
    free(want);
    orc_arena_destroy(a);
}

/* ---- MoE round trip --------------------------------------------------------------------- */

enum { MOE_T = 11, MOE_D = 3, MOE_E = 4, MOE_C = 4 };

/* Expert choice: each expert e takes its top C tokens by score, scales them
 * by the score, and the results are summed back per token. */
static orc_tensor *build_moe(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *x = in[0], *scores = in[1]; /* [T, D], [E, T] */
    orc_tensor *v = NULL, *ind = NULL;
    if (!orc_topk(c, scores, MOE_C, &v, &ind)) return NULL;
    orc_tensor *flat = orc_reshape(c, ind, 1, ORC_SHAPE(MOE_E * MOE_C));
    orc_tensor *sel = orc_index_select(c, x, flat);
    orc_tensor *gate = orc_reshape(c, v, 2, ORC_SHAPE(MOE_E * MOE_C, 1));
    orc_tensor *y = orc_scale(c, orc_mul(c, sel, gate), 0.5f);
    return orc_scatter_add(c, y, flat, MOE_T);
}

static void test_moe_round_trip(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(MOE_T, MOE_D), 50, -1, 1, true);
    orc_tensor *scores = gc_rand(a, 2, ORC_SHAPE(MOE_E, MOE_T), 51, 0, 1, true);
    /* Distinct scores 0.02 apart in a shuffled order, so finite differences
     * never change which tokens are chosen. */
    float *s = orc_f32(scores);
    const int ns = MOE_E * MOE_T;
    int perm[MOE_E * MOE_T];
    for (int i = 0; i < ns; i++) perm[i] = i;
    orc_rng r;
    orc_rng_init(&r, 52);
    for (int i = ns - 1; i > 0; i--) {
        int j = (int)orc_rng_below(&r, (uint32_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < ns; i++) s[i] = 0.02f * (float)perm[i] - 0.3f;

    /* Dense reference. */
    double want[MOE_T][MOE_D] = {{0}};
    for (int e = 0; e < MOE_E; e++)
        for (int t = 0; t < MOE_T; t++) {
            int above = 0;
            for (int u = 0; u < MOE_T; u++) above += s[e * MOE_T + u] > s[e * MOE_T + t];
            if (above >= MOE_C) continue;
            for (int d = 0; d < MOE_D; d++) want[t][d] += 0.5 * s[e * MOE_T + t] * orc_f32(x)[t * MOE_D + d];
        }
    orc_ctx ctx;
    orc_arena *ga = orc_arena_create(0);
    orc_ctx_init(&ctx, ga, 1);
    orc_tensor *in[2] = {x, scores};
    orc_tensor *out = build_moe(&ctx, in, NULL);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(out->shape[0], MOE_T);
    assert_int_equal(out->shape[1], MOE_D);
    for (int t = 0; t < MOE_T; t++)
        for (int d = 0; d < MOE_D; d++) assert_float_equal(orc_f32(out)[t * MOE_D + d], want[t][d], 1e-6);
    orc_arena_destroy(ga);
    x->grad = scores->grad = NULL;
    gc_check("moe round trip", build_moe, 2, in, NULL, (gc_opts){0});
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_select_values),
        cmocka_unit_test(test_scatter_add_values),
        cmocka_unit_test(test_gather_values),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_threads_deterministic),
        cmocka_unit_test(test_scatter_matches_serial_big),
        cmocka_unit_test(test_moe_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
