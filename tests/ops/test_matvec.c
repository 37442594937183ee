/* The skinny matrix-vector path of orc_linear / orc_matmul (at most 4 rows of
 * activations times a [n, k] weight, as in decoding): values against a
 * double-precision reference on odd sizes (weight-row tails that are not a
 * multiple of 2 or of a parallel block, k tails below 32 and 8), the bias
 * and beta path, bit-identical results for 1, 2 and 3 threads, and the same
 * bits for a row whichever kernel (4 rows per pass or the leftover 1-row
 * one) computed it. The kernels themselves are tested in test_matvec_kernel.c. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"

/* y = x @ w^T (+ bias) with threads threads; returns a malloc'd copy. */
static float *run_linear(int threads, orc_tensor *x, orc_tensor *w, orc_tensor *bias) {
    omp_set_num_threads(threads);
    orc_arena *ar = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, ar, 1);
    orc_set_no_grad(&ctx, true);
    orc_tensor *y = orc_linear(&ctx, x, w, bias);
    GC_ASSERT_OK(&ctx);
    assert_non_null(y);
    float *out = malloc(sizeof(float) * (size_t)y->numel);
    memcpy(out, orc_f32(y), sizeof(float) * (size_t)y->numel);
    orc_arena_destroy(ar);
    return out;
}

static void check_case(orc_arena *a, int64_t m, int64_t n, int64_t k, bool with_bias, uint64_t seed) {
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(m, k), seed, -1, 1, false);
    orc_tensor *w = gc_rand(a, 2, ORC_SHAPE(n, k), seed + 1, -1, 1, false);
    orc_tensor *bias = with_bias ? gc_rand(a, 1, ORC_SHAPE(n), seed + 2, -1, 1, false) : NULL;
    float *y1 = run_linear(1, x, w, bias), *y2 = run_linear(2, x, w, bias), *y3 = run_linear(3, x, w, bias);
    const float *xd = orc_f32(x), *wd = orc_f32(w);
    for (int64_t r = 0; r < m; r++)
        for (int64_t j = 0; j < n; j++) {
            double s = bias ? (double)orc_f32(bias)[j] : 0.0, mag = fabs(s);
            for (int64_t i = 0; i < k; i++) {
                s += (double)xd[r * k + i] * (double)wd[j * k + i];
                mag += fabs((double)xd[r * k + i] * (double)wd[j * k + i]);
            }
            const double got = y1[r * n + j];
            if (!(fabs(got - s) <= 1e-5 * mag + 1e-6))
                fail_msg("m %lld n %lld k %lld bias %d: y[%lld, %lld] = %.9g, reference %.9g", (long long)m,
                         (long long)n, (long long)k, (int)with_bias, (long long)r, (long long)j, got, s);
        }
    if (memcmp(y1, y2, sizeof(float) * (size_t)(m * n)) || memcmp(y1, y3, sizeof(float) * (size_t)(m * n)))
        fail_msg("m %lld n %lld k %lld: results differ between 1, 2 and 3 threads", (long long)m, (long long)n,
                 (long long)k);
    /* Row j of a one-row weight is computed by the 1-row kernel; inside the
     * full product, by the 4-row one (j < n - n % 4). Both must agree bitwise. */
    if (!bias)
        for (int64_t j = 0; j < n; j += 5) {
            orc_tensor *wr = orc_tensor_wrap(a, ORC_F32, 2, ORC_SHAPE(1, k), (float *)wd + j * k, NULL);
            assert_non_null(wr);
            float *yr = run_linear(1, x, wr, NULL);
            for (int64_t r = 0; r < m; r++)
                if (memcmp(&yr[r], &y1[r * n + j], sizeof(float)))
                    fail_msg("m %lld n %lld k %lld: row %lld differs between the 1-row and 4-row kernels",
                             (long long)m, (long long)n, (long long)k, (long long)j);
            free(yr);
        }
    free(y1);
    free(y2);
    free(y3);
}

static void test_matvec_sizes(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    const int64_t ns[] = {1, 3, 4, 5, 17, 33, 301};
    const int64_t ks[] = {1, 7, 8, 9, 16, 23, 33, 40, 289};
    uint64_t seed = 1;
    for (int64_t m = 1; m <= 4; m++)
        for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
            for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++, seed += 3)
                check_case(a, m, ns[in], ks[ik], (in + ik) % 2 == 1, seed);
    omp_set_num_threads(2);
    orc_arena_destroy(a);
}

/* Large enough to run in parallel (n k above the threshold), with a ragged
 * last block, and long rows with odd tails. */
static void test_matvec_parallel(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    check_case(a, 1, 1027, 291, false, 101);
    check_case(a, 1, 770, 768, true, 111);
    check_case(a, 3, 515, 200, false, 121);
    /* long rows (k >= 1024), with odd n and k tails */
    check_case(a, 1, 77, 2051, false, 131);
    check_case(a, 2, 41, 1057, true, 141);
    check_case(a, 4, 9, 1024, false, 151);
    omp_set_num_threads(2);
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matvec_sizes),
        cmocka_unit_test(test_matvec_parallel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
