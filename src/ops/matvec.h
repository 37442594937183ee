/* The skinny product kernel shared by orc_linear / orc_matmul (a product of
 * at most a few rows, src/ops/matmul.c) and the batched decode step
 * (src/llm/batch.c): y[r, j] = dot(x_r, w_j) for a handful of activation
 * rows x_r against every row w_j of a [n, k] weight, reading each weight row
 * once for all activation rows. Internal to the library (not installed);
 * tests/ops/test_matvec.c includes it to test every code path. */
#ifndef ORCHARD_OPS_MATVEC_H
#define ORCHARD_OPS_MATVEC_H

#include <stdbool.h>
#include <stdint.h>

/* Which kernel runs. AUTO picks AVX2+FMA where the CPU has it. Every
 * choice gives the same bits (the portable kernel repeats the vector
 * kernel's operations with fmaf), so a result depends on the shape only. */
typedef enum orc_matvec_isa { ORC_MATVEC_AUTO, ORC_MATVEC_PORTABLE, ORC_MATVEC_AVX2 } orc_matvec_isa;

/* Whether the CPU runs ORC_MATVEC_AVX2 (an explicit request for it falls
 * back to the portable kernel where it does not). */
bool orc_matvec_have_avx2(void);

/* One row's dot product in the kernel's fixed summation order. */
float orc_matvec_dot(const float *x, const float *w, int64_t k);

/* For r < nr, with xr = rows ? rows[r] : r: y[xr * n + j] = dot(x + xr * k,
 * w + j * k) for j < n, or beta * y[..] + dot(..) when beta != 0. x and y
 * are row-major with row strides k and n. Parallel (OpenMP) over fixed
 * blocks of weight rows when the product is large enough; every y element
 * is orc_matvec_dot's bits whatever the thread count, nr, row order or
 * kernel. */
void orc_matvec_rows(int64_t nr, const int64_t *rows, int64_t n, int64_t k, const float *x, const float *w,
                     float beta, float *y);

/* orc_matvec_rows with the kernel chosen by the caller (tests). */
void orc_matvec_rows_isa(orc_matvec_isa isa, int64_t nr, const int64_t *rows, int64_t n, int64_t k, const float *x,
                         const float *w, float beta, float *y);

#endif
