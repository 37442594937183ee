/* The skinny product kernel (src/ops/matvec.c): every kernel (portable,
 * AVX2 where the CPU has it, the automatic choice) against a reference
 * written from the documented summation order, bit for bit, on odd sizes
 * (k around the 8- and 16-float chunks, n around the 4-row groups and the
 * 16-row blocks), with row lists and beta; the same bits for 1 and 3
 * threads, for any subset and order of rows, and from orc_linear's small
 * products; and close to a double-precision dot product. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "../../src/ops/matvec.h"

/* The order matvec.c documents: chunk c of 8 products goes to lane vector
 * A when c is even, B when odd (FMA into each lane); A + B lane by lane;
 * ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)); then the k % 8 leftovers by fmaf. */
static float ref_dot(const float *x, const float *w, int64_t k) {
    float acc[2][8] = {{0}};
    const int64_t k8 = k / 8 * 8;
    for (int64_t i = 0; i < k8; i++) acc[(i / 8) % 2][i % 8] = fmaf(x[i], w[i], acc[(i / 8) % 2][i % 8]);
    float v[8];
    for (int l = 0; l < 8; l++) v[l] = acc[0][l] + acc[1][l];
    float s = ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
    for (int64_t i = k8; i < k; i++) s = fmaf(x[i], w[i], s);
    return s;
}

static void fill(float *p, int64_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(s >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
    }
}

static void test_kernels_match_reference(void **state) {
    (void)state;
    static const int64_t ks[] = {1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 33, 100, 773};
    static const int64_t ns[] = {1, 3, 4, 5, 15, 16, 17, 33, 70};
    const orc_matvec_isa isas[] = {ORC_MATVEC_PORTABLE, ORC_MATVEC_AVX2, ORC_MATVEC_AUTO};
    const int64_t nr_max = 5, rows_total = 7;
    for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
        for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++) {
            const int64_t k = ks[a], n = ns[b];
            float *x = malloc(sizeof(float) * (size_t)(rows_total * k)), *w = malloc(sizeof(float) * (size_t)(n * k));
            float *y = malloc(sizeof(float) * (size_t)(rows_total * n)), *want = malloc(sizeof(float) * (size_t)(rows_total * n));
            assert_non_null(x);
            assert_non_null(w);
            assert_non_null(y);
            assert_non_null(want);
            fill(x, rows_total * k, (uint64_t)(k * 131 + n));
            fill(w, n * k, (uint64_t)(k * 17 + n * 3 + 5));
            const int64_t rows[5] = {6, 1, 3, 0, 4}; /* a subset of the 7 rows, out of order */
            for (int isa = 0; isa < 3; isa++)
                for (int64_t nr = 1; nr <= nr_max; nr++)
                    for (int with_rows = 0; with_rows < 2; with_rows++)
                        for (int bt = 0; bt < 2; bt++) {
                            const float beta = bt ? 1.5f : 0.0f;
                            fill(y, rows_total * n, 99);
                            memcpy(want, y, sizeof(float) * (size_t)(rows_total * n));
                            for (int64_t r = 0; r < nr; r++) {
                                const int64_t xr = with_rows ? rows[r] : r;
                                for (int64_t j = 0; j < n; j++) {
                                    const float d = ref_dot(x + xr * k, w + j * k, k);
                                    want[xr * n + j] = beta == 0.0f ? d : beta * want[xr * n + j] + d;
                                }
                            }
                            orc_matvec_rows_isa(isas[isa], nr, with_rows ? rows : NULL, n, k, x, w, beta, y);
                            if (memcmp(y, want, sizeof(float) * (size_t)(rows_total * n)) != 0)
                                fail_msg("kernel %d, k %lld, n %lld, %lld rows (list %d), beta %g: bits differ from "
                                         "the reference order",
                                         isa, (long long)k, (long long)n, (long long)nr, with_rows, (double)beta);
                        }
            for (int64_t j = 0; j < n; j++) {
                if (orc_matvec_dot(x, w + j * k, k) != ref_dot(x, w + j * k, k))
                    fail_msg("orc_matvec_dot, k %lld, row %lld: bits differ from the reference", (long long)k,
                             (long long)j);
                double exact = 0, mag = 0;
                for (int64_t i = 0; i < k; i++) {
                    exact += (double)x[i] * (double)w[j * k + i];
                    mag += fabs((double)x[i] * (double)w[j * k + i]);
                }
                assert_true(fabs((double)orc_matvec_dot(x, w + j * k, k) - exact) <= 1e-6 * mag + 1e-30);
            }
            free(x);
            free(w);
            free(y);
            free(want);
        }
}

/* A product big enough to run in parallel, with a ragged last block. */
static void test_threads_bit_identical(void **state) {
    (void)state;
    const int64_t nr = 3, n = 4 * 16 * 5 + 7, k = 517;
    float *x = malloc(sizeof(float) * (size_t)(nr * k)), *w = malloc(sizeof(float) * (size_t)(n * k));
    float *y1 = calloc((size_t)(nr * n), sizeof(float)), *y3 = calloc((size_t)(nr * n), sizeof(float));
    assert_true(x && w && y1 && y3);
    fill(x, nr * k, 1);
    fill(w, n * k, 2);
    const int saved = omp_get_max_threads();
    for (int isa = 0; isa < 2; isa++) {
        const orc_matvec_isa which = isa ? ORC_MATVEC_AVX2 : ORC_MATVEC_PORTABLE;
        omp_set_num_threads(1);
        orc_matvec_rows_isa(which, nr, NULL, n, k, x, w, 0.0f, y1);
        omp_set_num_threads(3);
        orc_matvec_rows_isa(which, nr, NULL, n, k, x, w, 0.0f, y3);
        if (memcmp(y1, y3, sizeof(float) * (size_t)(nr * n)) != 0)
            fail_msg("kernel %d: results differ between 1 and 3 threads", isa);
        for (int64_t j = 0; j < n; j++) assert_true(y1[n + j] == ref_dot(x + k, w + j * k, k));
    }
    omp_set_num_threads(saved);
    free(x);
    free(w);
    free(y1);
    free(y3);
}

/* orc_linear's products of 1..4 rows are this kernel's bits (the batched
 * decode step relies on it), and 5 rows (sgemm) are close to them. */
static void test_linear_uses_kernel(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_set_no_grad(&ctx, true);
    const int64_t k = 97, n = 45;
    orc_tensor *w = gc_rand(a, 2, ORC_SHAPE(n, k), 3, -1, 1, false);
    for (int64_t m = 1; m <= 5; m++) {
        orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(m, k), (uint64_t)(10 + m), -1, 1, false);
        orc_tensor *y = orc_linear(&ctx, x, w, NULL);
        GC_ASSERT_OK(&ctx);
        for (int64_t r = 0; r < m; r++)
            for (int64_t j = 0; j < n; j++) {
                const float got = orc_f32(y)[r * n + j], want = ref_dot(orc_f32(x) + r * k, orc_f32(w) + j * k, k);
                if (m <= 4 && got != want)
                    fail_msg("linear of %lld rows, [%lld, %lld]: %.9g, the kernel gives %.9g", (long long)m,
                             (long long)r, (long long)j, (double)got, (double)want);
                assert_true(fabsf(got - want) <= 1e-4f * (1.0f + fabsf(want)));
            }
    }
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels_match_reference),
        cmocka_unit_test(test_threads_bit_identical),
        cmocka_unit_test(test_linear_uses_kernel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
