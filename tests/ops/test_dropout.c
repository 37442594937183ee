/* Dropout: identity outside training and at p == 0, argument checks, the
 * kept fraction and the 1/(1-p) scale, the mask's dependence on the seed
 * only (not on threads), and a backward that applies the same mask. */
#include "gradcheck.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

static orc_tensor *build_dropout(orc_ctx *c, orc_tensor **in, void *u) {
    c->training = true;
    return orc_dropout(c, in[0], *(const float *)u);
}

static void test_identity_cases(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(4, 5), 1, -1, 1, true);
    const orc_rng before = ctx.rng;
    ctx.training = false;
    assert_ptr_equal(orc_dropout(&ctx, x, 0.5f), x);
    ctx.training = true;
    assert_ptr_equal(orc_dropout(&ctx, x, 0.0f), x);
    GC_ASSERT_OK(&ctx);
    /* No stream was drawn and nothing recorded. */
    assert_int_equal(ctx.rng.stream, before.stream);
    assert_int_equal(ctx.n_nodes, 0);
    orc_arena_destroy(a);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(4, 5), 1, -1, 1, false);
    const float bad[] = {-0.1f, 1.0f, 1.5f, NAN};
    for (int i = 0; i < 4; i++)
        for (int training = 0; training < 2; training++) {
            orc_ctx_init(&ctx, a, 1);
            ctx.training = training;
            assert_null(orc_dropout(&ctx, x, bad[i]));
            assert_int_equal(ctx.err.code, ORC_EINVAL);
            assert_non_null(strstr(ctx.err.msg, "dropout"));
        }
    orc_ctx_init(&ctx, a, 1);
    ctx.training = true;
    assert_null(orc_dropout(&ctx, gc_rand_ids(a, 1, ORC_SHAPE(8), 1, 3), 0.5f));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    orc_ctx_init(&ctx, a, 1);
    assert_null(orc_dropout(&ctx, NULL, 0.5f));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    orc_arena_destroy(a);
}

/* Kept fraction near 1-p, kept values exactly x/(1-p)-scaled, dropped ones 0. */
static void test_mask_statistics_and_scale(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    const float ps[] = {0.1f, 0.3f, 0.75f};
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(300, 257), 2, 0.5f, 1.5f, false);
    for (int k = 0; k < 3; k++) {
        orc_ctx ctx;
        orc_ctx_init(&ctx, a, 11);
        ctx.training = true;
        orc_tensor *y = orc_dropout(&ctx, x, ps[k]);
        GC_ASSERT_OK(&ctx);
        assert_int_equal(y->numel, x->numel);
        const float scale = 1.0f / (1.0f - ps[k]);
        int64_t kept = 0;
        for (int64_t i = 0; i < x->numel; i++) {
            float v = orc_f32(y)[i];
            if (v == 0.0f) continue;
            kept++;
            assert_float_equal(v, orc_f32(x)[i] * scale, 1e-6 * fabsf(v));
        }
        /* Binomial: std of the fraction is below 0.002 here; allow ~5 std. */
        double frac = (double)kept / (double)x->numel;
        if (fabs(frac - (1.0 - ps[k])) > 0.01) fail_msg("p = %g: kept fraction %g", (double)ps[k], frac);
    }
    orc_arena_destroy(a);
}

static void test_seed_determines_mask(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(37, 41), 2, 0.5f, 1.5f, false);
    orc_ctx c1, c2, c3;
    orc_ctx_init(&c1, a, 7);
    orc_ctx_init(&c2, a, 7);
    orc_ctx_init(&c3, a, 8);
    c1.training = c2.training = c3.training = true;
    orc_tensor *y1 = orc_dropout(&c1, x, 0.5f);
    orc_tensor *y2 = orc_dropout(&c2, x, 0.5f);
    orc_tensor *y3 = orc_dropout(&c3, x, 0.5f);
    orc_tensor *y1b = orc_dropout(&c1, x, 0.5f); /* the next call draws a new stream */
    GC_ASSERT_OK(&c1);
    GC_ASSERT_OK(&c2);
    GC_ASSERT_OK(&c3);
    const size_t bytes = sizeof(float) * (size_t)x->numel;
    assert_memory_equal(orc_f32(y1), orc_f32(y2), bytes);
    assert_memory_not_equal(orc_f32(y1), orc_f32(y3), bytes);
    assert_memory_not_equal(orc_f32(y1), orc_f32(y1b), bytes);
    /* No-grad mode still drops (it is the training switch that matters). */
    orc_ctx c4;
    orc_ctx_init(&c4, a, 7);
    c4.training = true;
    orc_set_no_grad(&c4, true);
    orc_tensor *y4 = orc_dropout(&c4, x, 0.5f);
    GC_ASSERT_OK(&c4);
    assert_memory_equal(orc_f32(y1), orc_f32(y4), bytes);
    orc_arena_destroy(a);
}

/* The gradient is the output gradient through the same mask and scale. */
static void test_backward_uses_mask(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 3);
    ctx.training = true;
    orc_tensor *x = gc_rand(a, 3, ORC_SHAPE(3, 5, 7), 4, 0.5f, 1.5f, true);
    orc_tensor *y = orc_dropout(&ctx, x, 0.4f);
    GC_ASSERT_OK(&ctx);
    float *g = malloc(sizeof(float) * (size_t)y->numel);
    for (int64_t i = 0; i < y->numel; i++) g[i] = (float)(i % 7) - 3.0f;
    assert_int_equal(orc_backward_with(&ctx, y, g), ORC_OK);
    const float scale = 1.0f / (1.0f - 0.4f);
    for (int64_t i = 0; i < y->numel; i++) {
        float want = orc_f32(y)[i] != 0.0f ? scale * g[i] : 0.0f;
        assert_float_equal(x->grad[i], want, 1e-6);
    }
    free(g);

    const float p = 0.3f;
    orc_tensor *x2 = gc_rand(a, 2, ORC_SHAPE(1, 13), 5, -1, 1, true);
    gc_check("dropout", build_dropout, 1, &x, (void *)&p, (gc_opts){0});
    gc_check("dropout", build_dropout, 1, &x2, (void *)&p, (gc_opts){0});
    orc_arena_destroy(a);
}

static void test_thread_count_determinism(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(300, 257), 3, -1, 1, true);
    const float p = 0.25f;
    gc_expect_same_bits("dropout", build_dropout, 1, &x, (void *)&p);
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_cases),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_mask_statistics_and_scale),
        cmocka_unit_test(test_seed_determines_mask),
        cmocka_unit_test(test_backward_uses_mask),
        cmocka_unit_test(test_thread_count_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
