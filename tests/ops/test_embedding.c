/* embedding: gathered rows, gradients (repeated ids accumulate), out-of-range
 * ids naming their position, and bit-identical gradients for 1 and 3 threads. */
#include <omp.h>
#include <stdlib.h>

#include "gradcheck.h"

static orc_tensor *build_emb(orc_ctx *c, orc_tensor **in, void *u) { return orc_embedding(c, in[0], u); }

static void test_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *table = gc_rand(a, 2, ORC_SHAPE(11, 6), 1, -1, 1, false);
    orc_tensor *ids = gc_rand_ids(a, 3, ORC_SHAPE(2, 3, 4), 2, 11);
    orc_tensor *y = orc_embedding(&ctx, table, ids);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y->ndim, 4);
    assert_int_equal(y->shape[3], 6);
    for (int64_t t = 0; t < 24; t++)
        assert_memory_equal(orc_f32(y) + t * 6, orc_f32(table) + orc_i32(ids)[t] * 6, 6 * sizeof(float));
    /* A scalar id gives one row. */
    orc_tensor *one = orc_tensor_new(a, ORC_I32, 0, ORC_SHAPE(1), &ctx.err);
    orc_i32(one)[0] = 7;
    orc_tensor *y1 = orc_embedding(&ctx, table, one);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y1->ndim, 1);
    assert_memory_equal(orc_f32(y1), orc_f32(table) + 7 * 6, 6 * sizeof(float));
    orc_arena_destroy(a);
}

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *in[1] = {gc_rand(a, 2, ORC_SHAPE(5, 7), 1, -1, 1, true)};
    orc_tensor *ids = gc_rand_ids(a, 2, ORC_SHAPE(3, 6), 2, 5); /* 18 ids over 5 rows: repeats */
    gc_check("embedding", build_emb, 1, in, ids, (gc_opts){0});
    /* Exact: the gradient of row v is the sum of the output gradients of its tokens. */
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *y = orc_embedding(&ctx, in[0], ids);
    GC_ASSERT_OK(&ctx);
    float gy[18 * 7];
    for (int i = 0; i < 18 * 7; i++) gy[i] = (float)(i % 5) - 2.0f;
    in[0]->grad = NULL;
    assert_int_equal(orc_backward_with(&ctx, y, gy), ORC_OK);
    for (int v = 0; v < 5; v++)
        for (int j = 0; j < 7; j++) {
            float want = 0;
            for (int t = 0; t < 18; t++)
                if (orc_i32(ids)[t] == v) want += gy[t * 7 + j];
            assert_float_equal(in[0]->grad[v * 7 + j], want, 1e-6);
        }
    in[0]->grad = NULL;
    orc_arena_destroy(a);
}

static void test_out_of_range(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *table = gc_rand(a, 2, ORC_SHAPE(10, 4), 1, -1, 1, false);
    orc_tensor *ids = gc_rand_ids(a, 2, ORC_SHAPE(2, 3), 2, 10);
    orc_i32(ids)[4] = 10; /* position [1, 1] */
    assert_null(orc_embedding(&ctx, table, ids));
    assert_int_equal(ctx.err.code, ORC_ERANGE);
    if (!strstr(ctx.err.msg, "[1, 1]") || !strstr(ctx.err.msg, "10"))
        fail_msg("message should name the position and value: %s", ctx.err.msg);
    orc_error_clear(&ctx.err);
    orc_i32(ids)[4] = 0;
    orc_i32(ids)[0] = -3;
    assert_null(orc_embedding(&ctx, table, ids));
    assert_int_equal(ctx.err.code, ORC_ERANGE);
    assert_non_null(strstr(ctx.err.msg, "-3"));
    orc_error_clear(&ctx.err);
    /* Wrong dtypes and shapes. */
    assert_null(orc_embedding(&ctx, table, table));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    orc_error_clear(&ctx.err);
    orc_tensor *t3 = gc_rand(a, 3, ORC_SHAPE(2, 5, 4), 3, -1, 1, false);
    orc_i32(ids)[0] = 0;
    assert_null(orc_embedding(&ctx, t3, ids));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    orc_error_clear(&ctx.err);
    orc_tensor *ids4 = gc_rand_ids(a, 4, ORC_SHAPE(1, 2, 1, 2), 4, 10);
    assert_null(orc_embedding(&ctx, table, ids4));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    orc_arena_destroy(a);
}

static float *run_threads(int threads, orc_tensor *table, orc_tensor *ids) {
    omp_set_num_threads(threads);
    orc_arena *ar = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, ar, 1);
    table->grad = NULL;
    orc_tensor *y = orc_embedding(&ctx, table, ids);
    GC_ASSERT_OK(&ctx);
    float *gy = malloc(sizeof(float) * (size_t)y->numel);
    for (int64_t i = 0; i < y->numel; i++) gy[i] = (float)((i * 7919) % 1000) / 300.0f - 1.3f;
    assert_int_equal(orc_backward_with(&ctx, y, gy), ORC_OK);
    float *out = malloc(sizeof(float) * (size_t)(y->numel + table->numel));
    memcpy(out, orc_f32(y), sizeof(float) * (size_t)y->numel);
    memcpy(out + y->numel, table->grad, sizeof(float) * (size_t)table->numel);
    table->grad = NULL;
    free(gy);
    orc_arena_destroy(ar);
    return out;
}

static void test_thread_determinism(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *table = gc_rand(a, 2, ORC_SHAPE(50, 200), 1, -1, 1, true);
    orc_tensor *ids = gc_rand_ids(a, 2, ORC_SHAPE(4, 128), 2, 50);
    const size_t n = (size_t)(4 * 128 * 200 + table->numel) * sizeof(float);
    float *r1 = run_threads(1, table, ids), *r3 = run_threads(3, table, ids);
    if (memcmp(r1, r3, n) != 0) fail_msg("embedding: results differ between 1 and 3 threads");
    free(r1);
    free(r3);
    omp_set_num_threads(2);
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_thread_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
