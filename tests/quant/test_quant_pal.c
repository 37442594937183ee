/* Palettization (orchard/quant.h): 1-D k-means finds known clusters; a
 * matrix built from a table packs and unpacks to itself; the portable, AVX2
 * and AVX-512 kernel paths give the same bits for PAL4 and PAL2 at several
 * row lengths and group sizes and match a dequantize-then-dot reference;
 * 1 and 3 threads give the same bits and matrix-vector equals a row of
 * matrix-matrix; views with wrong byte counts or bad tables are refused
 * naming the tensor. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "orchard/ops.h"
#include "orchard/quant.h"
#include "orchard/rng.h"

static float *rand_floats(int64_t n, uint64_t seed, float scale) {
    float *x = malloc(sizeof(float) * (size_t)n);
    orc_rng r;
    orc_rng_init(&r, seed);
    orc_rng_fill_normal(&r, x, n, 0.0f, scale);
    return x;
}

static const orc_ggml_type PAL[] = {ORC_Q_PAL4, ORC_Q_PAL2};
static const orc_q_path PATHS[] = {ORC_Q_PORTABLE, ORC_Q_AVX2, ORC_Q_AVX512};

static void test_kmeans_known(void **state) {
    (void)state;
    orc_error err = {0};
    /* 16 clusters at -7.5 .. 7.5, 50 points each at +-0.01 and +-0.02 around
     * the centre (symmetric, so the means are the centres) */
    const int K = 16, per = 52;
    float *x = malloc(sizeof(float) * K * per), c[16];
    const float off[4] = {-0.02f, -0.01f, 0.01f, 0.02f};
    for (int j = 0; j < K; j++)
        for (int i = 0; i < per; i++) x[(i * 7 + j * 3) % per + j * per] = ((float)j - 7.5f) + off[i % 4];
    /* shuffle the order so the sort has work to do */
    for (int i = 0; i < K * per; i++) {
        int k = (i * 37 + 11) % (K * per);
        float t = x[i];
        x[i] = x[k];
        x[k] = t;
    }
    assert_int_equal(orc_q_kmeans1d(x, K * per, K, 30, c, &err), ORC_OK);
    for (int j = 0; j < K; j++) assert_float_equal(c[j], (float)j - 7.5f, 1e-4);
    /* unequal clusters: quantile init starts wrong; Lloyd must move it */
    float y[40], d[2];
    for (int i = 0; i < 30; i++) y[i] = -1.0f + 0.001f * (float)(i % 3 - 1);
    for (int i = 30; i < 40; i++) y[i] = 5.0f;
    assert_int_equal(orc_q_kmeans1d(y, 40, 2, 30, d, &err), ORC_OK);
    assert_float_equal(d[0], -1.0f, 1e-5);
    assert_float_equal(d[1], 5.0f, 1e-6);
    assert_int_equal(orc_q_kmeans1d(y, 40, 0, 30, d, &err), ORC_EINVAL);
    free(x);
}

/* A matrix whose every column group holds exactly the entries t * 2^-7
 * (equally often) palettizes to itself: dequantize gives it back exactly. */
static void test_round_trip(void **state) {
    (void)state;
    const int64_t R = 32, C = 96;
    for (int p = 0; p < 2; p++) {
        const int E = PAL[p] == ORC_Q_PAL4 ? 16 : 4;
        float *w = malloc(sizeof(float) * R * C), *back = malloc(sizeof(float) * R * C);
        for (int64_t r = 0; r < R; r++)
            for (int64_t k = 0; k < C; k++) {
                const int e = (int)((r + k * 5) % E);
                const int t = -127 + (254 * e) / (E - 1) + (int)(k / 16) % 3; /* differs per group */
                w[r * C + k] = (float)(t > 127 ? 127 : t) / 128.0f;
            }
        orc_qmat q;
        orc_error err = {0};
        assert_int_equal(orc_qmat_quantize_ex(&q, PAL[p], w, R, C, 16, &err), ORC_OK);
        assert_int_equal(q.row_bytes, (size_t)(PAL[p] == ORC_Q_PAL4 ? C / 2 : C / 4));
        assert_int_equal(orc_qmat_bytes(&q), q.row_bytes * R + (size_t)(C / 16) * (E + 4));
        orc_qmat_dequantize(&q, back);
        assert_memory_equal(w, back, sizeof(float) * R * C);
        orc_qmat_release(&q);
        free(w);
        free(back);
    }
}

/* y [T, R] of a random palettized matrix on one path. */
static float *run_path(orc_q_path path, orc_ggml_type type, int64_t R, int64_t C, int64_t group, int64_t T,
                       uint64_t seed) {
    float *w = rand_floats(R * C, seed, 1.0f), *x = rand_floats(T * C, seed + 1, 2.0f);
    float *y = malloc(sizeof(float) * (size_t)(T * R));
    orc_qmat q;
    orc_error err = {0};
    if (orc_qmat_quantize_ex(&q, type, w, R, C, group, &err) != ORC_OK) fail_msg("%s", err.msg);
    assert_int_equal(orc_q_set_path(path, &err), ORC_OK);
    assert_int_equal(orc_q_matmul(&q, x, T, y, &err), ORC_OK);
    assert_int_equal(orc_q_set_path(ORC_Q_AUTO, &err), ORC_OK);
    orc_qmat_release(&q);
    free(w);
    free(x);
    return y;
}

static void test_paths_agree(void **state) {
    (void)state;
    const struct { int64_t cols, group; } shapes[] = {{32, 16}, {224, 16}, {288, 16}, {288, 32}, {2240, 64},
                                                      {2304, 16}, {2304, 128}};
    int checked = 0;
    for (int p = 0; p < 2; p++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int64_t R = 13, T = 3;
            float *ref = run_path(ORC_Q_PORTABLE, PAL[p], R, shapes[s].cols, shapes[s].group, T, 300 + s);
            /* decode (packed rows) and prefill (unpacked tiles) agree on the portable path too */
            float *one = run_path(ORC_Q_PORTABLE, PAL[p], R, shapes[s].cols, shapes[s].group, 1, 300 + s);
            assert_memory_equal(one, ref, sizeof(float) * (size_t)R);
            free(one);
            for (int k = 1; k < 3; k++) {
                if (!orc_q_path_available(PATHS[k])) continue;
                float *y = run_path(PATHS[k], PAL[p], R, shapes[s].cols, shapes[s].group, T, 300 + s);
                if (memcmp(ref, y, sizeof(float) * (size_t)(R * T)) != 0)
                    fail_msg("%s differs from portable for %s, %lld columns, group %lld", orc_q_path_name(PATHS[k]),
                             orc_q_type_name(PAL[p]), (long long)shapes[s].cols, (long long)shapes[s].group);
                free(y);
                checked++;
            }
            free(ref);
        }
    printf("# palettized kernel paths compared with portable: %d (avx2 %s, avx512 %s)\n", checked,
           orc_q_path_available(ORC_Q_AVX2) ? "yes" : "absent",
           orc_q_path_available(ORC_Q_AVX512) ? orc_q_path_name(ORC_Q_AVX512) : "absent");
}

/* Dequantized weights . dequantized Q8_0 activations in double; and the
 * float product within the palettization error. */
static void test_vs_reference(void **state) {
    (void)state;
    const int64_t R = 9, C = 512, T = 2;
    for (int p = 0; p < 2; p++) {
        float *w = rand_floats(R * C, 41, 1.0f), *x = rand_floats(T * C, 42, 1.0f);
        orc_qmat q;
        orc_error err = {0};
        assert_int_equal(orc_qmat_quantize_ex(&q, PAL[p], w, R, C, 16, &err), ORC_OK);
        const size_t xb = orc_q_row_bytes(ORC_GGML_Q8_0, C);
        uint8_t *xq = malloc(xb * T);
        orc_q8_quantize_rows(x, T, C, xq);
        float *y = malloc(sizeof(float) * R * T), *wd = malloc(sizeof(float) * R * C), *xd = malloc(sizeof(float) * C);
        orc_q_matmul_q8(&q, xq, T, y);
        orc_qmat_dequantize(&q, wd);
        double werr = 0.0, wmag = 0.0;
        for (int64_t i = 0; i < R * C; i++) {
            werr += ((double)wd[i] - w[i]) * ((double)wd[i] - w[i]);
            wmag += (double)w[i] * w[i];
        }
        /* k-means on N(0,1): 16 levels leave ~1% of the variance, 4 levels ~12% */
        printf("# %s: relative weight MSE %.4f\n", orc_q_type_name(PAL[p]), werr / wmag);
        assert_true(werr / wmag < (PAL[p] == ORC_Q_PAL4 ? 0.02 : 0.15));
        for (int64_t i = 0; i < T; i++) {
            assert_int_equal(orc_ggml_dequantize(ORC_GGML_Q8_0, xq + i * xb, xd, C, &err), ORC_OK);
            for (int64_t r = 0; r < R; r++) {
                double ref = 0.0, mag = 0.0;
                for (int64_t k = 0; k < C; k++) {
                    ref += (double)wd[r * C + k] * xd[k];
                    mag += fabs((double)wd[r * C + k] * xd[k]);
                }
                if (!(fabs(y[i * R + r] - ref) <= 1e-5 * mag + 1e-6))
                    fail_msg("%s row %lld: %g vs reference %g", orc_q_type_name(PAL[p]), (long long)r, y[i * R + r],
                             ref);
            }
        }
        orc_qmat_release(&q);
        free(w);
        free(x);
        free(xq);
        free(y);
        free(wd);
        free(xd);
    }
}

static void test_threads_and_matvec(void **state) {
    (void)state;
    const int64_t R = 45, C = 320, T = 6;
    for (int p = 0; p < 2; p++) {
        float *w = rand_floats(R * C, 51, 1.0f), *x = rand_floats(T * C, 52, 1.0f);
        float *y1 = malloc(sizeof(float) * R * T), *y3 = malloc(sizeof(float) * R * T), *yv = malloc(sizeof(float) * R);
        orc_qmat q, q3;
        orc_error err = {0};
        const int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        assert_int_equal(orc_qmat_quantize_ex(&q, PAL[p], w, R, C, 32, &err), ORC_OK);
        assert_int_equal(orc_q_matmul(&q, x, T, y1, &err), ORC_OK);
        omp_set_num_threads(3);
        assert_int_equal(orc_qmat_quantize_ex(&q3, PAL[p], w, R, C, 32, &err), ORC_OK);
        assert_memory_equal(q.data, q3.data, q.row_bytes * R);
        assert_memory_equal(q.lut, q3.lut, (size_t)(C / 32 * q.entries));
        assert_int_equal(orc_q_matmul(&q, x, T, y3, &err), ORC_OK);
        omp_set_num_threads(saved);
        assert_memory_equal(y1, y3, sizeof(float) * R * T);
        for (int64_t i = 0; i < T; i++) {
            assert_int_equal(orc_q_matmul(&q, x + i * C, 1, yv, &err), ORC_OK);
            assert_memory_equal(yv, y1 + i * R, sizeof(float) * R);
        }
        /* orc_q_linear takes palettized weights */
        orc_arena *a = orc_arena_create(1 << 20);
        orc_ctx ctx;
        orc_ctx_init(&ctx, a, 0);
        orc_set_no_grad(&ctx, true);
        orc_tensor *xt = orc_new(&ctx, ORC_F32, 2, ORC_SHAPE(T, C));
        memcpy(xt->data, x, sizeof(float) * T * C);
        orc_tensor *yt = orc_q_linear(&ctx, xt, &q);
        assert_non_null(yt);
        assert_memory_equal(yt->data, y1, sizeof(float) * R * T);
        orc_ctx_reset(&ctx);
        orc_arena_destroy(a);
        orc_qmat_release(&q);
        orc_qmat_release(&q3);
        free(w);
        free(x);
        free(y1);
        free(y3);
        free(yv);
    }
}

static void test_bad_views(void **state) {
    (void)state;
    orc_qmat q;
    orc_error err = {0};
    uint8_t idx[2 * 32] = {0};
    int8_t lut[4 * 16] = {0};
    float scale[4] = {1, 1, 1, 1};
    const char *name = "blk.3.ffn_up.weight";
    /* [2, 64] pal4, group 16: 64 index bytes, 4 tables of 16, 4 scales */
    assert_int_equal(orc_qmat_view_pal(&q, ORC_Q_PAL4, 2, 64, 16, idx, 64, lut, 64, scale, 16, name, &err), ORC_OK);
    orc_qmat_release(&q);
    assert_int_equal(orc_qmat_view_pal(&q, ORC_Q_PAL4, 2, 64, 16, idx, 63, lut, 64, scale, 16, name, &err),
                     ORC_EFORMAT);
    assert_non_null(strstr(err.msg, name));
    orc_error_clear(&err);
    assert_int_equal(orc_qmat_view_pal(&q, ORC_Q_PAL4, 2, 64, 16, idx, 64, lut, 48, scale, 16, name, &err),
                     ORC_EFORMAT);
    assert_non_null(strstr(err.msg, name));
    orc_error_clear(&err);
    assert_int_equal(orc_qmat_view_pal(&q, ORC_Q_PAL4, 2, 64, 24, idx, 64, lut, 64, scale, 16, name, &err),
                     ORC_EINVAL);
    orc_error_clear(&err);
    lut[5] = -128;
    assert_int_equal(orc_qmat_view_pal(&q, ORC_Q_PAL4, 2, 64, 16, idx, 64, lut, 64, scale, 16, name, &err),
                     ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "-128"));
    orc_error_clear(&err);
    lut[5] = 0;
    scale[2] = NAN;
    assert_int_equal(orc_qmat_view_pal(&q, ORC_Q_PAL2, 2, 64, 16, idx, 32, lut, 16, scale, 16, name, &err),
                     ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "scale"));
    orc_error_clear(&err);
    /* quantizing: a group that does not divide, a non-finite weight */
    float w[2 * 64] = {0};
    assert_int_equal(orc_qmat_quantize_ex(&q, ORC_Q_PAL2, w, 2, 64, 48, &err), ORC_EINVAL);
    orc_error_clear(&err);
    w[7] = INFINITY;
    assert_int_equal(orc_qmat_quantize_ex(&q, ORC_Q_PAL2, w, 2, 64, 16, &err), ORC_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kmeans_known),       cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_paths_agree),        cmocka_unit_test(test_vs_reference),
        cmocka_unit_test(test_threads_and_matvec), cmocka_unit_test(test_bad_views),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
