/* Quantized kernels (orchard/quant.h): the portable, AVX2 and AVX-512 paths
 * give the same bits on random Q8_0 and Q4_0 matrices (row lengths that are
 * and are not multiples of the 8-block groups, row counts that are and are
 * not multiples of the 4-row pass, several tokens), and those bits are the
 * documented canonical order recomputed here from the blocks; they match a
 * dequantize-then-dot reference in double, any thread count gives the same
 * bits, matrix-vector equals a row of matrix-matrix, the multi-matrix kernel
 * (q/k/v sharing one input) equals separate calls, orc_q_linear applies the
 * matrix to a tensor, and a view with a wrong block count is refused with
 * the tensor's name. The speed paths give the same bits: the vectorized
 * activation quantizer writes exactly ggml's reference blocks (ties at .5,
 * zeros, tiny and huge scales, NaN, infinity); a matrix repacked by
 * orc_qmat_pack multiplies to the portable path's bits, as the unpacked one
 * does through the matrix-matrix kernel, for 1 to 9 tokens, row lengths with
 * and without an 8-block tail, 1 or 3 threads, and a prompt's rows equal
 * one-token calls; packing refuses rows not a multiple of 8, a Q8_0 quant of
 * -128 and palettized matrices, leaving them as they were. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "orchard/ops.h"
#include "orchard/quant.h"
#include "orchard/rng.h"
#include "orchard/safetensors.h"
#include "../../src/quant/quant_internal.h"

/* the canonical order below must not be fused into FMAs either */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

static float *rand_floats(int64_t n, uint64_t seed, float scale) {
    float *x = malloc(sizeof(float) * (size_t)n);
    orc_rng r;
    orc_rng_init(&r, seed);
    orc_rng_fill_normal(&r, x, n, 0.0f, scale);
    return x;
}

static const orc_ggml_type TYPES[] = {ORC_GGML_Q8_0, ORC_GGML_Q4_0};
static const int64_t COLS[] = {32, 224, 256, 416, 2240, 2304, 4128}; /* 1 to 129 blocks */
static const orc_q_path PATHS[] = {ORC_Q_PORTABLE, ORC_Q_AVX2, ORC_Q_AVX512};

/* y [T, R] for a random matrix on the given path. */
static float *run_path(orc_q_path p, orc_ggml_type type, int64_t R, int64_t C, int64_t T, uint64_t seed) {
    float *w = rand_floats(R * C, seed, 1.0f), *x = rand_floats(T * C, seed + 1, 2.0f);
    float *y = malloc(sizeof(float) * (size_t)(T * R));
    orc_qmat q;
    orc_error err = {0};
    assert_int_equal(orc_qmat_quantize(&q, type, w, R, C, &err), ORC_OK);
    assert_int_equal(orc_q_set_path(p, &err), ORC_OK);
    assert_int_equal(orc_q_matmul(&q, x, T, y, &err), ORC_OK);
    assert_int_equal(orc_q_set_path(ORC_Q_AUTO, &err), ORC_OK);
    orc_qmat_release(&q);
    free(w);
    free(x);
    return y;
}

static void test_paths_agree(void **state) {
    (void)state;
    int checked = 0;
    for (size_t t = 0; t < 2; t++)
        for (size_t c = 0; c < sizeof COLS / sizeof COLS[0]; c++) {
            const int64_t R = 19, T = 3;
            float *ref = run_path(ORC_Q_PORTABLE, TYPES[t], R, COLS[c], T, 100 + c);
            for (size_t p = 1; p < 3; p++) {
                if (!orc_q_path_available(PATHS[p])) continue;
                float *y = run_path(PATHS[p], TYPES[t], R, COLS[c], T, 100 + c);
                if (memcmp(ref, y, sizeof(float) * (size_t)(R * T)) != 0)
                    fail_msg("%s differs from portable for %s, %lld columns", orc_q_path_name(PATHS[p]),
                             orc_ggml_type_name(TYPES[t]), (long long)COLS[c]);
                free(y);
                checked++;
            }
            free(ref);
        }
    printf("# kernel paths compared with portable: %d (avx2 %s, avx512 %s)\n", checked,
           orc_q_path_available(ORC_Q_AVX2) ? "yes" : "absent", orc_q_path_available(ORC_Q_AVX512) ? "yes" : "absent");
}

/* Dequantized weights . dequantized Q8_0 activations in double. */
static void test_vs_reference(void **state) {
    (void)state;
    const int64_t R = 7, C = 512, T = 2;
    for (size_t t = 0; t < 2; t++) {
        float *w = rand_floats(R * C, 7, 1.0f), *x = rand_floats(T * C, 8, 1.0f);
        orc_qmat q;
        orc_error err = {0};
        assert_int_equal(orc_qmat_quantize(&q, TYPES[t], w, R, C, &err), ORC_OK);
        const size_t xb = orc_q_row_bytes(ORC_GGML_Q8_0, C);
        uint8_t *xq = malloc(xb * T);
        orc_q8_quantize_rows(x, T, C, xq);
        float *y = malloc(sizeof(float) * R * T), *wd = malloc(sizeof(float) * C), *xd = malloc(sizeof(float) * C);
        orc_q_matmul_q8(&q, xq, T, y);
        for (int64_t i = 0; i < T; i++) {
            assert_int_equal(orc_ggml_dequantize(ORC_GGML_Q8_0, xq + i * xb, xd, C, &err), ORC_OK);
            for (int64_t r = 0; r < R; r++) {
                orc_qmat_dequant_row(&q, r, wd);
                double ref = 0.0, mag = 0.0, exact = 0.0;
                for (int64_t k = 0; k < C; k++) {
                    ref += (double)wd[k] * xd[k];
                    mag += fabs((double)wd[k] * xd[k]);
                    exact += (double)w[r * C + k] * x[i * C + k];
                }
                const float got = y[i * R + r];
                assert_true(fabs(got - ref) <= 1e-5 * mag + 1e-6);
                /* and the float product, within the quantization error */
                const double tol = (TYPES[t] == ORC_GGML_Q8_0 ? 0.02 : 0.15) * mag;
                assert_true(fabs(got - exact) <= tol);
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
    for (size_t t = 0; t < 2; t++) {
        float *w = rand_floats(R * C, 11, 1.0f), *x = rand_floats(T * C, 12, 1.0f);
        float *y1 = malloc(sizeof(float) * R * T), *y3 = malloc(sizeof(float) * R * T), *yv = malloc(sizeof(float) * R);
        orc_qmat q;
        orc_error err = {0};
        assert_int_equal(orc_qmat_quantize(&q, TYPES[t], w, R, C, &err), ORC_OK);
        const int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        assert_int_equal(orc_q_matmul(&q, x, T, y1, &err), ORC_OK);
        omp_set_num_threads(3);
        assert_int_equal(orc_q_matmul(&q, x, T, y3, &err), ORC_OK);
        omp_set_num_threads(saved);
        assert_memory_equal(y1, y3, sizeof(float) * R * T);
        for (int64_t i = 0; i < T; i++) {
            assert_int_equal(orc_q_matmul(&q, x + i * C, 1, yv, &err), ORC_OK);
            assert_memory_equal(yv, y1 + i * R, sizeof(float) * R);
        }
        orc_qmat_release(&q);
        free(w);
        free(x);
        free(y1);
        free(y3);
        free(yv);
    }
}

/* Block b's exact integer sum against activation block b. */
static int32_t block_isum(orc_ggml_type type, const uint8_t *w, const uint8_t *x) {
    const int8_t *qx = (const int8_t *)(x + 2);
    int32_t s = 0;
    for (int j = 0; j < 32; j++) {
        const int q = type == ORC_GGML_Q8_0 ? ((const int8_t *)(w + 2))[j]
                                            : (j < 16 ? (w[2 + j] & 15) : (w[2 + j - 16] >> 4)) - 8;
        s += q * qx[j];
    }
    return s;
}

static float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return orc_st_f16_to_f32(h);
}

/* The documented order, written out: block b adds (d_w * d_x) * isum into
 * lane b % 8; lanes summed as ((0+4)+(2+6))+((1+5)+(3+7)). Every path must
 * give exactly these bits. */
static void test_canonical_order(void **state) {
    (void)state;
    const int64_t R = 9, C = 32 * 13, T = 2, nb = C / 32;
    for (size_t t = 0; t < 2; t++) {
        float *w = rand_floats(R * C, 31, 1.0f), *x = rand_floats(T * C, 32, 3.0f);
        float *y = malloc(sizeof(float) * (size_t)(R * T));
        orc_qmat q;
        orc_error err = {0};
        assert_int_equal(orc_qmat_quantize(&q, TYPES[t], w, R, C, &err), ORC_OK);
        const size_t xb = orc_q_row_bytes(ORC_GGML_Q8_0, C), wb = TYPES[t] == ORC_GGML_Q8_0 ? 34 : 18;
        uint8_t *xq = malloc(xb * T);
        orc_q8_quantize_rows(x, T, C, xq);
        for (size_t p = 0; p < 3; p++) {
            if (!orc_q_path_available(PATHS[p])) continue;
            assert_int_equal(orc_q_set_path(PATHS[p], &err), ORC_OK);
            orc_q_matmul_q8(&q, xq, T, y);
            for (int64_t i = 0; i < T; i++)
                for (int64_t r = 0; r < R; r++) {
                    float acc[8] = {0};
                    for (int64_t b = 0; b < nb; b++) {
                        const uint8_t *wblk = q.data + r * q.row_bytes + b * wb, *xblk = xq + i * xb + b * 34;
                        const float d = f16_at(wblk) * f16_at(xblk);
                        acc[b % 8] += d * (float)block_isum(TYPES[t], wblk, xblk);
                    }
                    const float want = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
                    if (memcmp(&want, &y[i * R + r], sizeof want) != 0)
                        fail_msg("%s %s row %lld token %lld: %.9g, the canonical order gives %.9g",
                                 orc_q_path_name(PATHS[p]), orc_ggml_type_name(TYPES[t]), (long long)r, (long long)i,
                                 (double)y[i * R + r], (double)want);
                }
            /* orc_q_dot is the same order */
            const float d0 = orc_q_dot(TYPES[t], q.data, xq, nb);
            assert_memory_equal(&d0, &y[0], sizeof d0);
        }
        assert_int_equal(orc_q_set_path(ORC_Q_AUTO, &err), ORC_OK);
        orc_qmat_release(&q);
        free(w);
        free(x);
        free(y);
        free(xq);
    }
}

/* Several matrices over one input (q/k/v): one call equals separate calls,
 * for mixed types (a palettized one included) and 1 or 3 threads; and
 * orc_q_linear_many refuses a weight of the wrong width, naming q_linear. */
static void test_many(void **state) {
    (void)state;
    const int64_t C = 288, T = 3;
    const int64_t rows[3] = {37, 8, 21};
    const orc_ggml_type types[3] = {ORC_GGML_Q8_0, ORC_GGML_Q4_0, ORC_Q_PAL4};
    orc_qmat q[3];
    orc_error err = {0};
    float *x = rand_floats(T * C, 41, 1.0f);
    for (int i = 0; i < 3; i++) {
        float *w = rand_floats(rows[i] * C, 42 + (uint64_t)i, 1.0f);
        assert_int_equal(orc_qmat_quantize_ex(&q[i], types[i], w, rows[i], C, 16, &err), ORC_OK);
        free(w);
    }
    const size_t xb = orc_q_row_bytes(ORC_GGML_Q8_0, C);
    uint8_t *xq = malloc(xb * T);
    orc_q8_quantize_rows(x, T, C, xq);
    const orc_qmat *ws[3] = {&q[0], &q[1], &q[2]};
    for (int64_t tt = 1; tt <= T; tt += T - 1) {
        float *sep[3], *one[3];
        for (int i = 0; i < 3; i++) {
            sep[i] = malloc(sizeof(float) * (size_t)(rows[i] * tt));
            one[i] = malloc(sizeof(float) * (size_t)(rows[i] * tt));
            orc_q_matmul_q8(&q[i], xq, tt, sep[i]);
        }
        const int saved = omp_get_max_threads();
        for (int th = 1; th <= 3; th += 2) {
            omp_set_num_threads(th);
            orc_q_matmul_q8_many(ws, 3, xq, tt, one);
            for (int i = 0; i < 3; i++) assert_memory_equal(sep[i], one[i], sizeof(float) * (size_t)(rows[i] * tt));
        }
        omp_set_num_threads(saved);
        for (int i = 0; i < 3; i++) {
            free(sep[i]);
            free(one[i]);
        }
    }
    /* the tensor op: the same bits as orc_q_linear each; a misfit is refused */
    orc_arena *a = orc_arena_create(1 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 0);
    orc_set_no_grad(&ctx, true);
    orc_tensor *xt = orc_new(&ctx, ORC_F32, 2, ORC_SHAPE(T, C)), *y[3];
    memcpy(xt->data, x, sizeof(float) * (size_t)(T * C));
    assert_true(orc_q_linear_many(&ctx, xt, ws, 3, y));
    for (int i = 0; i < 3; i++) {
        orc_tensor *y1 = orc_q_linear(&ctx, xt, ws[i]);
        assert_non_null(y1);
        assert_memory_equal(y1->data, y[i]->data, sizeof(float) * (size_t)(rows[i] * T));
    }
    orc_qmat narrow;
    float *wn = rand_floats(4 * 64, 49, 1.0f);
    assert_int_equal(orc_qmat_quantize(&narrow, ORC_GGML_Q8_0, wn, 4, 64, &err), ORC_OK);
    const orc_qmat *bad[2] = {&q[0], &narrow};
    assert_false(orc_q_linear_many(&ctx, xt, bad, 2, y));
    assert_null(y[0]);
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    assert_non_null(strstr(ctx.err.msg, "q_linear"));
    orc_ctx_reset(&ctx);
    orc_arena_destroy(a);
    orc_qmat_release(&narrow);
    for (int i = 0; i < 3; i++) orc_qmat_release(&q[i]);
    free(wn);
    free(xq);
    free(x);
}

static void test_q_linear(void **state) {
    (void)state;
    const int64_t R = 24, C = 64;
    float *w = rand_floats(R * C, 21, 1.0f);
    orc_qmat q;
    orc_error err = {0};
    assert_int_equal(orc_qmat_quantize(&q, ORC_GGML_Q4_0, w, R, C, &err), ORC_OK);
    orc_arena *a = orc_arena_create(1 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 0);
    orc_set_no_grad(&ctx, true);
    orc_tensor *x = orc_new(&ctx, ORC_F32, 3, ORC_SHAPE(2, 3, C));
    float *xs = rand_floats(6 * C, 22, 1.0f);
    memcpy(x->data, xs, sizeof(float) * 6 * C);
    orc_tensor *y = orc_q_linear(&ctx, x, &q);
    assert_non_null(y);
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->shape[2], R);
    float *ref = malloc(sizeof(float) * 6 * R);
    assert_int_equal(orc_q_matmul(&q, xs, 6, ref, &err), ORC_OK);
    assert_memory_equal(ref, y->data, sizeof(float) * 6 * R);
    /* a strided view of x gives the same values as its copy */
    orc_tensor *xt = orc_transpose(&ctx, x, 0, 1);
    orc_tensor *yt = orc_q_linear(&ctx, xt, &q);
    assert_non_null(yt);
    assert_float_equal(orc_f32(yt)[0], ref[0], 0.0f);
    /* wrong width */
    orc_tensor *bad = orc_new(&ctx, ORC_F32, 2, ORC_SHAPE(2, C + 32));
    assert_null(orc_q_linear(&ctx, bad, &q));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    assert_non_null(strstr(ctx.err.msg, "q_linear"));
    orc_ctx_reset(&ctx);
    orc_arena_destroy(a);
    orc_qmat_release(&q);
    free(w);
    free(xs);
    free(ref);
}

static void test_bad_blocks(void **state) {
    (void)state;
    orc_qmat q;
    orc_error err = {0};
    uint8_t buf[34 * 4] = {0};
    assert_int_equal(orc_qmat_view(&q, ORC_GGML_Q8_0, 2, 64, buf, 34 * 3, "blk.0.attn_q.weight", &err),
                     ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "blk.0.attn_q.weight"));
    orc_error_clear(&err);
    assert_int_equal(orc_qmat_view(&q, ORC_GGML_Q8_0, 2, 64, buf, 34 * 4, "w", &err), ORC_OK);
    assert_int_equal(orc_qmat_view(&q, ORC_GGML_Q4_1, 2, 64, buf, 34 * 4, "w", &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_qmat_view(&q, ORC_GGML_Q8_0, 2, 48, buf, 34 * 4, "w", &err), ORC_EINVAL);
}

/* ---- the speed paths: activation quantizer, packed layout, matrix-matrix ---- */

/* orc_q8_quantize_rows on every path against orc_ggml_quantize. */
static void expect_reference_blocks(const float *x, int64_t cols, const char *what) {
    const size_t rb = orc_q_row_bytes(ORC_GGML_Q8_0, cols);
    uint8_t *ref = malloc(rb), *got = malloc(rb);
    assert_int_equal(orc_ggml_quantize(ORC_GGML_Q8_0, x, ref, cols, NULL), ORC_OK);
    const orc_q_path paths[] = {ORC_Q_PORTABLE, ORC_Q_AVX2, ORC_Q_AVX512};
    orc_error err = {0};
    for (int p = 0; p < 3; p++) {
        if (orc_q_set_path(paths[p], &err) != ORC_OK) {
            orc_error_clear(&err);
            continue;
        }
        memset(got, 0xa5, rb);
        orc_q8_quantize_rows(x, 1, cols, got);
        if (memcmp(ref, got, rb) != 0) fail_msg("%s: %s quantizer differs from the reference", what,
                                                orc_q_path_name(paths[p]));
    }
    orc_q_set_path(ORC_Q_AUTO, &err);
    free(ref);
    free(got);
}

static void test_quantizer_is_the_reference(void **state) {
    (void)state;
    const int64_t C = 4096;
    for (uint64_t seed = 1; seed <= 4; seed++) {
        float *x = rand_floats(C, seed, seed == 4 ? 1e-3f : 3.0f);
        expect_reference_blocks(x, C, "random");
        free(x);
    }
    float x[32 * 8];
    /* block 0: ties at .5 after scaling (amax 127 gives id 1) */
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) + 0.5f;
    x[0] = 127.0f;
    /* block 1: zeros; block 2: one nonzero; block 3: denormal scale */
    for (int j = 0; j < 32; j++) x[32 + j] = 0.0f;
    for (int j = 0; j < 32; j++) x[64 + j] = j == 5 ? -2.5f : 0.0f;
    for (int j = 0; j < 32; j++) x[96 + j] = (float)j * 1e-41f;
    /* block 4: huge; block 5: a NaN; block 6: an infinity; block 7: -0 and negatives */
    for (int j = 0; j < 32; j++) x[128 + j] = (float)(j - 10) * 1e37f;
    for (int j = 0; j < 32; j++) x[160 + j] = j == 7 ? NAN : (float)j;
    for (int j = 0; j < 32; j++) x[192 + j] = j == 3 ? -INFINITY : (float)j;
    for (int j = 0; j < 32; j++) x[224 + j] = j == 0 ? -0.0f : -(float)j * 0.37f;
    expect_reference_blocks(x, 32 * 8, "edge cases");
}

/* y [T, R] for q on path p, packed or not, with `threads` threads. */
static float *run_threads(const orc_qmat *q, const float *x, int64_t T, orc_q_path p, int threads) {
    float *y = malloc(sizeof(float) * (size_t)(T * q->rows));
    orc_error err = {0};
    assert_int_equal(orc_q_set_path(p, &err), ORC_OK);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    assert_int_equal(orc_q_matmul(q, x, T, y, &err), ORC_OK);
    omp_set_num_threads(saved);
    assert_int_equal(orc_q_set_path(ORC_Q_AUTO, &err), ORC_OK);
    return y;
}

static void test_packed_same_bits(void **state) {
    (void)state;
    const orc_ggml_type types[] = {ORC_GGML_Q8_0, ORC_GGML_Q4_0};
    const int64_t cols[] = {32, 256, 288, 768, 2080}; /* 1, 8, 9, 24 and 65 blocks */
    const int64_t rows[] = {8, 40};
    const int64_t toks[] = {1, 3, 4, 5, 9};
    const orc_q_path paths[] = {ORC_Q_AVX2, ORC_Q_AVX512};
    int compared = 0;
    for (int t = 0; t < 2; t++)
        for (int c = 0; c < 5; c++)
            for (int r = 0; r < 2; r++) {
                const int64_t R = rows[r], C = cols[c], Tmax = 9;
                float *w = rand_floats(R * C, 50 + (uint64_t)c, 1.0f), *x = rand_floats(Tmax * C, 60 + (uint64_t)c, 2.0f);
                orc_qmat plain, packed;
                orc_error err = {0};
                assert_int_equal(orc_qmat_quantize(&plain, types[t], w, R, C, &err), ORC_OK);
                assert_int_equal(orc_qmat_quantize(&packed, types[t], w, R, C, &err), ORC_OK);
                assert_true(orc_qmat_pack(&packed));
                assert_non_null(packed.packed);
                assert_memory_equal(plain.data, packed.data, plain.row_bytes * (size_t)R);
                for (int k = 0; k < 5; k++) {
                    const int64_t T = toks[k];
                    float *ref = run_threads(&plain, x, T, ORC_Q_PORTABLE, 1);
                    for (int p = 0; p < 2; p++) {
                        if (!orc_q_path_available(paths[p])) continue;
                        for (int th = 1; th <= 3; th += 2) {
                            float *a = run_threads(&plain, x, T, paths[p], th), *b = run_threads(&packed, x, T, paths[p], th);
                            if (memcmp(ref, a, sizeof(float) * (size_t)(T * R)) ||
                                memcmp(ref, b, sizeof(float) * (size_t)(T * R)))
                                fail_msg("%s %s [%lld, %lld] T=%lld threads %d: plain %s, packed %s",
                                         orc_ggml_type_name(types[t]), orc_q_path_name(paths[p]), (long long)R,
                                         (long long)C, (long long)T, th,
                                         memcmp(ref, a, sizeof(float) * (size_t)(T * R)) ? "differs" : "same",
                                         memcmp(ref, b, sizeof(float) * (size_t)(T * R)) ? "differs" : "same");
                            free(a);
                            free(b);
                            compared++;
                        }
                    }
                    /* each prompt row equals that token alone */
                    float *all = run_threads(&packed, x, T, ORC_Q_AUTO, 2);
                    for (int64_t i = 0; i < T; i++) {
                        float *one = run_threads(&packed, x + i * C, 1, ORC_Q_AUTO, 1);
                        assert_memory_equal(one, all + i * R, sizeof(float) * (size_t)R);
                        free(one);
                    }
                    free(all);
                    free(ref);
                }
                orc_qmat_release(&plain);
                orc_qmat_release(&packed);
                free(w);
                free(x);
            }
    printf("# packed and plain compared with portable: %d runs\n", compared);
}

static void test_pack_refusals(void **state) {
    (void)state;
    const int64_t C = 64;
    float *w = rand_floats(12 * C, 7, 1.0f);
    orc_qmat q;
    orc_error err = {0};
    /* 12 rows: not whole groups of 8 */
    assert_int_equal(orc_qmat_quantize(&q, ORC_GGML_Q8_0, w, 12, C, &err), ORC_OK);
    assert_false(orc_qmat_pack(&q));
    assert_null(q.packed);
    orc_qmat_release(&q);
    /* a -128 quant (possible in a foreign GGUF file): refused, and the row
     * kernels still compute it exactly (portable and SIMD agree) */
    assert_int_equal(orc_qmat_quantize(&q, ORC_GGML_Q8_0, w, 8, C, &err), ORC_OK);
    uint8_t *blocks = malloc(q.row_bytes * 8);
    memcpy(blocks, q.data, q.row_bytes * 8);
    blocks[q.row_bytes * 3 + 34 + 5] = 0x80;
    orc_qmat v;
    assert_int_equal(orc_qmat_view(&v, ORC_GGML_Q8_0, 8, C, blocks, q.row_bytes * 8, "crafted", &err), ORC_OK);
    assert_false(orc_qmat_pack(&v));
    assert_null(v.packed);
    float *x = rand_floats(C, 8, 1.0f);
    float *a = run_threads(&v, x, 1, ORC_Q_PORTABLE, 1), *b = run_threads(&v, x, 1, ORC_Q_AUTO, 1);
    assert_memory_equal(a, b, sizeof(float) * 8);
    free(a);
    free(b);
    free(x);
    orc_qmat_release(&v);
    free(blocks);
    /* packing twice is a no-op; an alias shares the packed copy and owns none */
    assert_true(orc_qmat_pack(&q));
    const uint8_t *first = q.packed;
    assert_true(orc_qmat_pack(&q));
    assert_ptr_equal(first, q.packed);
    orc_qmat al = orc_qmat_alias(&q);
    assert_ptr_equal(al.packed, q.packed);
    assert_null(al.owned_packed);
    orc_qmat_release(&al);
    orc_qmat_release(&q);
    /* palettized matrices are not packed */
    assert_int_equal(orc_qmat_quantize_ex(&q, ORC_Q_PAL4, w, 8, C, ORC_Q_PAL_GROUP, &err), ORC_OK);
    assert_false(orc_qmat_pack(&q));
    orc_qmat_release(&q);
    free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths_agree),     cmocka_unit_test(test_vs_reference),
        cmocka_unit_test(test_threads_and_matvec), cmocka_unit_test(test_q_linear),
        cmocka_unit_test(test_bad_blocks),      cmocka_unit_test(test_canonical_order),
        cmocka_unit_test(test_many),            cmocka_unit_test(test_quantizer_is_the_reference),
        cmocka_unit_test(test_packed_same_bits), cmocka_unit_test(test_pack_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
