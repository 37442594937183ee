/* Views (reshape, transpose, slice, contiguous) and the tape itself:
 * gradients flow through strided views, accumulate over uses, and no-grad
 * mode records nothing. */
#include <string.h>

#include "gradcheck.h"

static orc_tensor *build_views(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *x = in[0];                                  /* [2, 3, 4] */
    orc_tensor *t = orc_transpose(c, x, 0, 2);              /* [4, 3, 2] strided */
    orc_tensor *s = orc_slice(c, t, 1, 1, 2);               /* [4, 2, 2] strided */
    orc_tensor *m = orc_mul(c, s, s);                       /* reads through strides */
    orc_tensor *r = orc_reshape(c, orc_contiguous(c, m), 2, ORC_SHAPE(8, -1));
    return orc_add(c, r, orc_reshape(c, orc_contiguous(c, s), 2, ORC_SHAPE(8, 2)));
}

static void test_view_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *in[1] = {gc_rand(a, 3, ORC_SHAPE(2, 3, 4), 7, -1, 1, true)};
    gc_check("views", build_views, 1, in, NULL, (gc_opts){0});
    orc_arena_destroy(a);
}

static void test_no_grad_records_nothing(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(3, 4), 1, -1, 1, true);
    orc_set_no_grad(&ctx, true);
    orc_tensor *y = orc_mul(&ctx, x, x);
    assert_non_null(y);
    assert_int_equal(ctx.n_nodes, 0);
    assert_false(y->requires_grad);
    orc_set_no_grad(&ctx, false);
    y = orc_mul(&ctx, x, x);
    assert_int_equal(ctx.n_nodes, 1);
    orc_arena_destroy(a);
}

static void test_param_grads_accumulate(void **state) {
    (void)state;
    orc_arena *pa = orc_arena_create(0), *a = orc_arena_create(0);
    orc_error err = {0};
    orc_tensor *p = orc_param_new(pa, 1, ORC_SHAPE(3), "p", &err);
    assert_non_null(p);
    for (int i = 0; i < 3; i++) orc_f32(p)[i] = (float)(i + 1);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    for (int step = 0; step < 2; step++) {
        orc_tensor *loss = orc_sum_all(&ctx, orc_mul(&ctx, p, p)); /* d/dp = 2p */
        assert_int_equal(orc_backward(&ctx, loss), ORC_OK);
        orc_ctx_reset(&ctx);
    }
    for (int i = 0; i < 3; i++) assert_float_equal(p->grad[i], 4.0f * (float)(i + 1), 1e-6);
    orc_zero_grad(p);
    assert_float_equal(p->grad[0], 0.0f, 0);
    orc_arena_destroy(a);
    orc_arena_destroy(pa);
}

static void test_errors_name_the_problem(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(3, 4), 1, -1, 1, false);
    assert_null(orc_reshape(&ctx, x, 2, ORC_SHAPE(5, -1)));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    assert_non_null(strstr(ctx.err.msg, "reshape"));
    orc_ctx_reset(&ctx);
    x = gc_rand(a, 2, ORC_SHAPE(3, 4), 1, -1, 1, false);
    assert_null(orc_slice(&ctx, x, 1, 2, 3));
    assert_int_equal(ctx.err.code, ORC_ERANGE);
    orc_ctx_reset(&ctx);
    x = gc_rand(a, 2, ORC_SHAPE(3, 4), 1, -1, 1, false);
    assert_null(orc_reshape(&ctx, orc_transpose(&ctx, x, 0, 1), 1, ORC_SHAPE(12)));
    assert_non_null(strstr(ctx.err.msg, "contiguous"));
    orc_ctx_reset(&ctx);
    assert_int_equal(orc_backward(&ctx, NULL), ORC_EINVAL);
    orc_arena_destroy(a);
}

static void test_arena_mark_rewind(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(4096);
    void *p = orc_arena_alloc(a, 100);
    assert_true(((uintptr_t)p % ORC_ARENA_ALIGN) == 0);
    orc_arena_mark m = orc_arena_get_mark(a);
    size_t used = orc_arena_used(a);
    for (int i = 0; i < 10; i++) assert_non_null(orc_arena_alloc(a, 3000));
    assert_non_null(orc_arena_alloc(a, 1 << 20)); /* bigger than a chunk */
    orc_arena_rewind(a, m);
    assert_int_equal(orc_arena_used(a), used);
    assert_null(orc_arena_alloc(a, SIZE_MAX - 8));
    orc_arena_reset(a);
    assert_int_equal(orc_arena_used(a), 0);
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_gradients),
        cmocka_unit_test(test_no_grad_records_nothing),
        cmocka_unit_test(test_param_grads_accumulate),
        cmocka_unit_test(test_errors_name_the_problem),
        cmocka_unit_test(test_arena_mark_rewind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
