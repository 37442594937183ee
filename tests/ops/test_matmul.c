/* matmul and linear: values against naive loops for every transpose combo,
 * batched and shared b, gradients by finite differences on odd shapes,
 * shape errors naming both shapes, and bit-identical results for 1 and 3
 * threads. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "gradcheck.h"

typedef struct mm_case {
    bool ta, tb;
} mm_case;

static orc_tensor *build_matmul(orc_ctx *c, orc_tensor **in, void *u) {
    const mm_case *m = u;
    return orc_matmul(c, in[0], in[1], m->ta, m->tb);
}

static orc_tensor *build_linear(orc_ctx *c, orc_tensor **in, void *u) {
    return orc_linear(c, in[0], in[1], u ? in[2] : NULL);
}

/* op(a) @ op(b) through a transposed view instead of the flag. */
static orc_tensor *build_matmul_view(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    return orc_matmul(c, orc_transpose(c, in[0], -1, -2), in[1], false, true);
}

/* Shape of a stored operand: [batch..., rows, cols] where op() gives [r, c]. */
static orc_tensor *operand(orc_arena *a, int nbatch, const int64_t *batch, int64_t r, int64_t c, bool t,
                           uint64_t seed, bool grad) {
    int64_t sh[4];
    for (int i = 0; i < nbatch; i++) sh[i] = batch[i];
    sh[nbatch] = t ? c : r;
    sh[nbatch + 1] = t ? r : c;
    return gc_rand(a, nbatch + 2, sh, seed, -1, 1, grad);
}

static double ref_elem(const float *A, const float *B, bool ta, bool tb, int64_t M, int64_t K, int64_t N, int64_t m,
                       int64_t n) {
    double s = 0;
    for (int64_t k = 0; k < K; k++) {
        float x = ta ? A[k * M + m] : A[m * K + k];
        float y = tb ? B[n * K + k] : B[k * N + n];
        s += (double)x * y;
    }
    return s;
}

static void test_matmul_values(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    const int64_t B = 2, M = 3, K = 5, N = 7;
    for (int combo = 0; combo < 8; combo++) {
        const bool ta = combo & 1, tb = combo & 2, shared = combo & 4;
        orc_tensor *x = operand(a, 1, &B, M, K, ta, 1 + combo, false);
        orc_tensor *w = operand(a, shared ? 0 : 1, &B, K, N, tb, 11 + combo, false);
        orc_tensor *y = orc_matmul(&ctx, x, w, ta, tb);
        GC_ASSERT_OK(&ctx);
        assert_int_equal(y->ndim, 3);
        assert_int_equal(y->shape[0], B);
        assert_int_equal(y->shape[1], M);
        assert_int_equal(y->shape[2], N);
        for (int64_t i = 0; i < B; i++)
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) {
                    double want = ref_elem(orc_f32(x) + i * M * K, orc_f32(w) + (shared ? 0 : i * K * N), ta, tb, M,
                                           K, N, m, n);
                    assert_float_equal(orc_f32(y)[(i * M + m) * N + n], want, 1e-5);
                }
    }
    orc_arena_destroy(a);
}

static void test_matmul_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    const int64_t B = 2, M = 3, K = 5, N = 7;
    const int64_t B2[2] = {2, 3};
    for (int combo = 0; combo < 8; combo++) {
        mm_case mc = {combo & 1, combo & 2};
        const bool shared = combo & 4;
        orc_tensor *in[2] = {operand(a, 1, &B, M, K, mc.ta, 21 + combo, true),
                             operand(a, shared ? 0 : 1, &B, K, N, mc.tb, 31 + combo, true)};
        gc_check("matmul", build_matmul, 2, in, &mc, (gc_opts){0});
        /* Two batch axes, for no and both transposes (a sample of elements). */
        if (mc.ta != mc.tb) continue;
        orc_tensor *in4[2] = {operand(a, 2, B2, M, K, mc.ta, 41 + combo, true),
                              operand(a, shared ? 0 : 2, B2, K, N, mc.tb, 51 + combo, true)};
        gc_check("matmul 4-D", build_matmul, 2, in4, &mc, (gc_opts){.max_checks = 50});
    }
    /* Plain 2-D, and a gradient that only flows into one side. */
    mm_case plain = {false, false};
    orc_tensor *in2[2] = {gc_rand(a, 2, ORC_SHAPE(4, 6), 3, -1, 1, true),
                          gc_rand(a, 2, ORC_SHAPE(6, 5), 4, -1, 1, false)};
    gc_check("matmul 2-D", build_matmul, 2, in2, &plain, (gc_opts){0});
    /* Strided views go through contiguous copies, gradients still flow. */
    orc_tensor *inv[2] = {gc_rand(a, 3, ORC_SHAPE(2, 5, 3), 5, -1, 1, true),
                          gc_rand(a, 3, ORC_SHAPE(2, 7, 5), 6, -1, 1, true)};
    gc_check("matmul view", build_matmul_view, 2, inv, NULL, (gc_opts){0});
    orc_arena_destroy(a);
}

static void test_linear_values_and_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 3, ORC_SHAPE(2, 3, 5), 1, -1, 1, true);
    orc_tensor *w = gc_rand(a, 2, ORC_SHAPE(7, 5), 2, -1, 1, true);
    orc_tensor *b = gc_rand(a, 1, ORC_SHAPE(7), 3, -1, 1, true);
    orc_tensor *y = orc_linear(&ctx, x, w, b);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->shape[2], 7);
    for (int64_t r = 0; r < 6; r++)
        for (int64_t o = 0; o < 7; o++) {
            double s = orc_f32(b)[o];
            for (int64_t k = 0; k < 5; k++) s += (double)orc_f32(x)[r * 5 + k] * orc_f32(w)[o * 5 + k];
            assert_float_equal(orc_f32(y)[r * 7 + o], s, 1e-5);
        }
    orc_tensor *in[3] = {x, w, b};
    gc_check("linear+bias", build_linear, 3, in, (void *)1, (gc_opts){0});
    gc_check("linear", build_linear, 2, in, NULL, (gc_opts){0});
    /* 1-D x: one row. */
    orc_tensor *in1[3] = {gc_rand(a, 1, ORC_SHAPE(5), 9, -1, 1, true), w, b};
    gc_check("linear 1-D", build_linear, 3, in1, (void *)1, (gc_opts){0});
    orc_arena_destroy(a);
}

static void expect_shape_error(orc_ctx *ctx, const char *s1, const char *s2) {
    assert_int_equal(ctx->err.code, ORC_ESHAPE);
    if (!strstr(ctx->err.msg, s1) || !strstr(ctx->err.msg, s2))
        fail_msg("message \"%s\" should name %s and %s", ctx->err.msg, s1, s2);
    orc_error_clear(&ctx->err);
}

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *x = gc_rand(a, 3, ORC_SHAPE(2, 3, 5), 1, -1, 1, false);
    orc_tensor *w = gc_rand(a, 2, ORC_SHAPE(4, 7), 2, -1, 1, false);
    assert_null(orc_matmul(&ctx, x, w, false, false));
    expect_shape_error(&ctx, "[2, 3, 5]", "[4, 7]");
    orc_tensor *wb = gc_rand(a, 3, ORC_SHAPE(3, 5, 7), 3, -1, 1, false);
    assert_null(orc_matmul(&ctx, x, wb, false, false));
    expect_shape_error(&ctx, "[2, 3, 5]", "[3, 5, 7]");
    orc_tensor *v = gc_rand(a, 1, ORC_SHAPE(5), 4, -1, 1, false);
    assert_null(orc_matmul(&ctx, x, v, false, false));
    expect_shape_error(&ctx, "[2, 3, 5]", "[5]");
    orc_tensor *ww = gc_rand(a, 2, ORC_SHAPE(7, 4), 5, -1, 1, false);
    assert_null(orc_linear(&ctx, x, ww, NULL));
    expect_shape_error(&ctx, "[2, 3, 5]", "[7, 4]");
    orc_tensor *wl = gc_rand(a, 2, ORC_SHAPE(7, 5), 6, -1, 1, false);
    orc_tensor *bad_b = gc_rand(a, 1, ORC_SHAPE(6), 7, -1, 1, false);
    assert_null(orc_linear(&ctx, x, wl, bad_b));
    expect_shape_error(&ctx, "[6]", "[7, 5]");
    orc_tensor *ids = gc_rand_ids(a, 2, ORC_SHAPE(5, 7), 8, 3);
    assert_null(orc_matmul(&ctx, x, ids, false, false));
    assert_int_equal(ctx.err.code, ORC_EDTYPE);
    orc_error_clear(&ctx.err);
    /* NULL input (an earlier failure) is an error, not a crash. */
    assert_null(orc_linear(&ctx, NULL, wl, NULL));
    assert_int_equal(ctx.err.code, ORC_EINVAL);
    orc_arena_destroy(a);
}

static void test_thread_determinism(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    const int64_t B = 3;
    for (int combo = 0; combo < 8; combo++) {
        mm_case mc = {combo & 1, combo & 2};
        const bool shared = combo & 4;
        orc_tensor *in[2] = {operand(a, 1, &B, 150, 96, mc.ta, 61 + combo, true),
                             operand(a, shared ? 0 : 1, &B, 96, 130, mc.tb, 71 + combo, true)};
        gc_expect_same_bits("matmul", build_matmul, 2, in, &mc);
        /* Many small products: the batch loop runs in parallel. */
        const int64_t Bs = 16;
        orc_tensor *ins[2] = {operand(a, 1, &Bs, 9, 17, mc.ta, 81 + combo, true),
                              operand(a, shared ? 0 : 1, &Bs, 17, 13, mc.tb, 91 + combo, true)};
        gc_expect_same_bits("matmul small", build_matmul, 2, ins, &mc);
    }
    orc_tensor *inl[3] = {gc_rand(a, 3, ORC_SHAPE(4, 100, 96), 1, -1, 1, true),
                          gc_rand(a, 2, ORC_SHAPE(200, 96), 2, -1, 1, true),
                          gc_rand(a, 1, ORC_SHAPE(200), 3, -1, 1, true)};
    gc_expect_same_bits("linear", build_linear, 3, inl, (void *)1);
    omp_set_num_threads(2);
    orc_arena_destroy(a);
}

static void test_no_grad_records_nothing(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_set_no_grad(&ctx, true);
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(3, 5), 1, -1, 1, true);
    orc_tensor *w = gc_rand(a, 2, ORC_SHAPE(4, 5), 2, -1, 1, true);
    assert_non_null(orc_linear(&ctx, x, w, NULL));
    assert_non_null(orc_matmul(&ctx, x, w, false, true));
    assert_int_equal(ctx.n_nodes, 0);
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_values),
        cmocka_unit_test(test_matmul_gradients),
        cmocka_unit_test(test_linear_values_and_gradients),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_thread_determinism),
        cmocka_unit_test(test_no_grad_records_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
