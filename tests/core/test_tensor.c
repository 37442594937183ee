/* Tensor construction and layout: bad shapes are errors with messages,
 * strided copies and clones read through strides, params own a zeroed grad. */
#include "gradcheck.h"

static void test_bad_shapes_are_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_error err = {0};
    assert_null(orc_tensor_new(a, ORC_F32, 5, ORC_SHAPE(1, 1, 1, 1, 1), &err));
    assert_int_equal(err.code, ORC_ESHAPE);
    assert_non_null(strstr(err.msg, "5 dimensions"));
    orc_error_clear(&err);
    assert_null(orc_tensor_new(a, ORC_F32, 2, ORC_SHAPE(3, -2), &err));
    assert_non_null(strstr(err.msg, "[3, -2]"));
    orc_error_clear(&err);
    assert_null(orc_tensor_new(a, ORC_F32, 3, ORC_SHAPE(1 << 30, 1 << 30, 1 << 30), &err));
    assert_int_equal(err.code, ORC_ESHAPE);
    orc_error_clear(&err);
    /* First error wins. */
    orc_error_set(&err, ORC_EIO, "first");
    orc_error_set(&err, ORC_EINVAL, "second");
    assert_string_equal(err.msg, "first");
    orc_arena_destroy(a);
}

static void test_scalar_and_empty(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_error err = {0};
    orc_tensor *s = orc_tensor_zeros(a, ORC_F32, 0, NULL, &err);
    assert_non_null(s);
    assert_int_equal(s->numel, 1);
    orc_tensor *e = orc_tensor_zeros(a, ORC_F32, 2, ORC_SHAPE(0, 5), &err);
    assert_non_null(e);
    assert_int_equal(e->numel, 0);
    orc_arena_destroy(a);
}

static void test_strided_clone_and_copy(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 3, ORC_SHAPE(2, 3, 4), 1, -1, 1, false);
    orc_tensor *t = orc_transpose(&ctx, x, 0, 2); /* [4, 3, 2] */
    assert_false(orc_is_contiguous(t));
    orc_error err = {0};
    orc_tensor *c = orc_tensor_clone(a, t, &err);
    assert_non_null(c);
    assert_true(orc_is_contiguous(c));
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 2; k++)
                assert_float_equal(orc_f32(c)[(i * 3 + j) * 2 + k], orc_f32(x)[(k * 3 + j) * 4 + i], 0);
    orc_tensor *wrong = orc_tensor_new(a, ORC_F32, 2, ORC_SHAPE(4, 6), &err);
    assert_int_equal(orc_copy(wrong, t, &err), ORC_ESHAPE);
    assert_non_null(strstr(err.msg, "[4, 6]"));
    orc_arena_destroy(a);
}

static void test_param_has_zero_grad(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_error err = {0};
    orc_tensor *p = orc_param_new(a, 2, ORC_SHAPE(3, 5), "layers.0.w", &err);
    assert_non_null(p);
    assert_true(p->is_param && p->requires_grad);
    assert_string_equal(p->name, "layers.0.w");
    for (int i = 0; i < 15; i++) assert_float_equal(p->grad[i], 0, 0);
    char buf[128];
    assert_string_equal(orc_tensor_desc(buf, sizeof buf, p), "layers.0.w [3, 5] f32");
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_shapes_are_errors),
        cmocka_unit_test(test_scalar_and_empty),
        cmocka_unit_test(test_strided_clone_and_copy),
        cmocka_unit_test(test_param_has_zero_grad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
