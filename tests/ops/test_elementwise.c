/* Broadcasting add/sub/mul and the scalar ops: values and gradients. */
#include "gradcheck.h"

static orc_tensor *build_add(orc_ctx *c, orc_tensor **in, void *u) { (void)u; return orc_add(c, in[0], in[1]); }
static orc_tensor *build_sub(orc_ctx *c, orc_tensor **in, void *u) { (void)u; return orc_sub(c, in[0], in[1]); }
static orc_tensor *build_mul(orc_ctx *c, orc_tensor **in, void *u) { (void)u; return orc_mul(c, in[0], in[1]); }
static orc_tensor *build_affine(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    return orc_add_scalar(c, orc_scale(c, in[0], -1.7f), 0.25f);
}

static void test_broadcast_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(3, 4), 1, -1, 1, false);
    orc_tensor *b = gc_rand(a, 1, ORC_SHAPE(4), 2, -1, 1, false);
    orc_tensor *c = gc_rand(a, 2, ORC_SHAPE(3, 1), 3, -1, 1, false);
    orc_tensor *y = orc_mul(&ctx, orc_add(&ctx, x, b), c);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y->ndim, 2);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) {
            float want = (orc_f32(x)[i * 4 + j] + orc_f32(b)[j]) * orc_f32(c)[i];
            assert_float_equal(orc_f32(y)[i * 4 + j], want, 1e-6);
        }
    orc_arena_destroy(a);
}

static void test_broadcast_mismatch_is_error(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(3, 4), 1, -1, 1, false);
    orc_tensor *b = gc_rand(a, 1, ORC_SHAPE(3), 2, -1, 1, false);
    assert_null(orc_add(&ctx, x, b));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    assert_non_null(strstr(ctx.err.msg, "[3, 4]"));
    /* Sticky: a later op fails too, with the first message kept. */
    assert_null(orc_scale(&ctx, x, 2.0f));
    assert_non_null(strstr(ctx.err.msg, "add"));
    orc_arena_destroy(a);
}

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    const int64_t shapes[][2][4] = {
        {{2, 3, 5, 0}, {5, 0, 0, 0}},   /* row broadcast */
        {{3, 1, 7, 0}, {1, 4, 7, 0}},   /* both sides broadcast */
        {{4, 6, 0, 0}, {4, 6, 0, 0}},   /* same shape */
    };
    const int nd[][2] = {{3, 1}, {3, 3}, {2, 2}};
    gc_build_fn fns[] = {build_add, build_sub, build_mul};
    const char *names[] = {"add", "sub", "mul"};
    for (int s = 0; s < 3; s++)
        for (int f = 0; f < 3; f++) {
            orc_tensor *in[2] = {gc_rand(a, nd[s][0], shapes[s][0], 10 + s, -1, 1, true),
                                 gc_rand(a, nd[s][1], shapes[s][1], 20 + s, -1, 1, true)};
            gc_check(names[f], fns[f], 2, in, NULL, (gc_opts){0});
        }
    orc_tensor *in[1] = {gc_rand(a, 3, ORC_SHAPE(2, 3, 5), 5, -2, 2, true)};
    gc_check("scale+add_scalar", build_affine, 1, in, NULL, (gc_opts){0});
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_broadcast_values),
        cmocka_unit_test(test_broadcast_mismatch_is_error),
        cmocka_unit_test(test_gradients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
