/* cross_entropy: the weighted mean against a naive double loop, ignore_index,
 * per-token weights (and their gradient), the all-ignored case (loss 0, zero
 * gradients), target range and shape errors, and bit-identical results for
 * 1 and 3 threads. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "gradcheck.h"

#define IGNORE (-100)

typedef struct ce_case {
    orc_tensor *targets;
    bool weighted; /* in[1] holds the weights */
} ce_case;

static orc_tensor *build_ce(orc_ctx *c, orc_tensor **in, void *u) {
    const ce_case *k = u;
    return orc_cross_entropy(c, in[0], k->targets, k->weighted ? in[1] : NULL, IGNORE);
}

static double naive_ce(const orc_tensor *logits, const orc_tensor *targets, const orc_tensor *weights) {
    const int64_t V = logits->shape[logits->ndim - 1], N = targets->numel;
    double num = 0, den = 0;
    for (int64_t r = 0; r < N; r++) {
        const int32_t t = orc_i32(targets)[r];
        if (t == IGNORE) continue;
        const float *x = orc_f32(logits) + r * V;
        double s = 0;
        for (int64_t j = 0; j < V; j++) s += exp((double)x[j]);
        const double w = weights ? orc_f32(weights)[r] : 1.0;
        num += w * (log(s) - x[t]);
        den += w;
    }
    return den != 0 ? num / den : 0;
}

static void test_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *logits = gc_rand(a, 3, ORC_SHAPE(2, 3, 7), 1, -3, 3, false);
    orc_tensor *tg = gc_rand_ids(a, 2, ORC_SHAPE(2, 3), 2, 7);
    orc_tensor *w = gc_rand(a, 1, ORC_SHAPE(6), 3, 0.1f, 2.0f, false);
    orc_tensor *y = orc_cross_entropy(&ctx, logits, tg, NULL, IGNORE);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y->ndim, 0);
    assert_int_equal(y->numel, 1);
    assert_float_equal(orc_f32(y)[0], naive_ce(logits, tg, NULL), 1e-5);
    orc_i32(tg)[1] = IGNORE;
    orc_i32(tg)[4] = IGNORE;
    y = orc_cross_entropy(&ctx, logits, tg, w, IGNORE);
    GC_ASSERT_OK(&ctx);
    assert_float_equal(orc_f32(y)[0], naive_ce(logits, tg, w), 1e-5);
    /* Large logits stay finite (shifted by the row max). */
    orc_tensor *big = gc_rand(a, 2, ORC_SHAPE(2, 5), 4, 80, 90, false);
    orc_tensor *tg2 = gc_rand_ids(a, 1, ORC_SHAPE(2), 5, 5);
    y = orc_cross_entropy(&ctx, big, tg2, NULL, IGNORE);
    GC_ASSERT_OK(&ctx);
    assert_true(isfinite(orc_f32(y)[0]));
    orc_arena_destroy(a);
}

static void test_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *tg = gc_rand_ids(a, 2, ORC_SHAPE(3, 5), 1, 9);
    orc_i32(tg)[2] = IGNORE;
    orc_i32(tg)[7] = IGNORE;
    orc_tensor *in[2] = {gc_rand(a, 3, ORC_SHAPE(3, 5, 9), 2, -2, 2, true),
                         gc_rand(a, 1, ORC_SHAPE(15), 3, 0.2f, 1.5f, true)};
    ce_case plain = {tg, false}, weighted = {tg, true};
    gc_check("cross_entropy", build_ce, 1, in, &plain, (gc_opts){0});
    gc_check("cross_entropy weighted", build_ce, 2, in, &weighted, (gc_opts){0});
    orc_arena_destroy(a);
}

static void test_all_ignored(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *logits = gc_rand(a, 2, ORC_SHAPE(4, 6), 1, -1, 1, true);
    orc_tensor *w = gc_rand(a, 1, ORC_SHAPE(4), 2, 0.5f, 1, true);
    orc_tensor *tg = gc_rand_ids(a, 1, ORC_SHAPE(4), 3, 6);
    for (int i = 0; i < 4; i++) orc_i32(tg)[i] = IGNORE;
    orc_tensor *y = orc_cross_entropy(&ctx, logits, tg, w, IGNORE);
    GC_ASSERT_OK(&ctx);
    assert_true(orc_f32(y)[0] == 0.0f);
    assert_int_equal(orc_backward(&ctx, y), ORC_OK);
    assert_non_null(logits->grad);
    for (int i = 0; i < 24; i++) assert_true(logits->grad[i] == 0.0f);
    for (int i = 0; i < 4; i++) assert_true(w->grad[i] == 0.0f);
    orc_arena_destroy(a);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *logits = gc_rand(a, 2, ORC_SHAPE(4, 6), 1, -1, 1, false);
    orc_tensor *tg = gc_rand_ids(a, 1, ORC_SHAPE(4), 2, 6);
    orc_i32(tg)[2] = 6;
    assert_null(orc_cross_entropy(&ctx, logits, tg, NULL, IGNORE));
    assert_int_equal(ctx.err.code, ORC_ERANGE);
    if (!strstr(ctx.err.msg, "position 2") || !strstr(ctx.err.msg, "target 6"))
        fail_msg("message should name the position and value: %s", ctx.err.msg);
    orc_error_clear(&ctx.err);
    /* The same value is fine when it is the ignore index. */
    assert_non_null(orc_cross_entropy(&ctx, logits, tg, NULL, 6));
    GC_ASSERT_OK(&ctx);
    orc_i32(tg)[2] = 0;
    orc_tensor *tg5 = gc_rand_ids(a, 1, ORC_SHAPE(5), 3, 6);
    assert_null(orc_cross_entropy(&ctx, logits, tg5, NULL, IGNORE));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    assert_non_null(strstr(ctx.err.msg, "[4, 6]"));
    assert_non_null(strstr(ctx.err.msg, "[5]"));
    orc_error_clear(&ctx.err);
    orc_tensor *w3 = gc_rand(a, 1, ORC_SHAPE(3), 4, 0, 1, false);
    assert_null(orc_cross_entropy(&ctx, logits, tg, w3, IGNORE));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    orc_error_clear(&ctx.err);
    assert_null(orc_cross_entropy(&ctx, logits, logits, NULL, IGNORE));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    orc_arena_destroy(a);
}

static float *run_threads(int threads, orc_tensor *logits, orc_tensor *tg, orc_tensor *w) {
    omp_set_num_threads(threads);
    orc_arena *ar = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, ar, 1);
    logits->grad = w->grad = NULL;
    orc_tensor *y = orc_cross_entropy(&ctx, logits, tg, w, IGNORE);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(orc_backward(&ctx, y), ORC_OK);
    float *out = malloc(sizeof(float) * (size_t)(1 + logits->numel + w->numel));
    out[0] = orc_f32(y)[0];
    memcpy(out + 1, logits->grad, sizeof(float) * (size_t)logits->numel);
    memcpy(out + 1 + logits->numel, w->grad, sizeof(float) * (size_t)w->numel);
    logits->grad = w->grad = NULL;
    orc_arena_destroy(ar);
    return out;
}

static void test_thread_determinism(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *logits = gc_rand(a, 3, ORC_SHAPE(3, 100, 500), 1, -4, 4, true);
    orc_tensor *w = gc_rand(a, 1, ORC_SHAPE(300), 2, 0, 1, true);
    orc_tensor *tg = gc_rand_ids(a, 2, ORC_SHAPE(3, 100), 3, 500);
    for (int i = 0; i < 300; i += 7) orc_i32(tg)[i] = IGNORE;
    const size_t n = sizeof(float) * (size_t)(1 + logits->numel + w->numel);
    float *r1 = run_threads(1, logits, tg, w), *r3 = run_threads(3, logits, tg, w);
    if (memcmp(r1, r3, n) != 0) fail_msg("cross_entropy: results differ between 1 and 3 threads");
    free(r1);
    free(r3);
    omp_set_num_threads(2);
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_all_ignored),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_thread_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
