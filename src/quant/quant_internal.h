/* Internal to src/quant: the palettized pieces the generic matrix code and
 * kernels call into (src/quant/pal.c, src/quant/palkern.c), the lane sum the
 * kernels share, and the multi-matrix kernel the quantized LM uses. */
#ifndef ORCHARD_QUANT_INTERNAL_H
#define ORCHARD_QUANT_INTERNAL_H

#include "orchard/quant.h"

/* 16 for PAL4, 4 for PAL2, 0 otherwise. */
int orc_q_pal_entries(orc_ggml_type type);
/* Row r of a palettized matrix as floats. */
void orc_q_pal_dequant_row(const orc_qmat *q, int64_t r, float *out);
/* orc_q_matmul_q8 for a palettized matrix. */
void orc_q_pal_matmul_q8(const orc_qmat *w, const uint8_t *xq, int64_t T, float *y);

/* The fixed sum of 8 float lane accumulators every quantized kernel ends
 * with (the tree an AVX2 horizontal add takes: halves, then pairs). */
static inline float orc_q_reduce8(const float a[8]) {
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* Bytes orc_qmat_pack's copy of q takes (a multiple of 64), 0 where it does
 * not apply (see orc_qmat_pack). */
size_t orc_q_pack_bytes(const orc_qmat *q);
/* Pack q into dst (orc_q_pack_bytes(q) bytes, 32-byte aligned, owned by the
 * caller): q->packed = dst, q->owned_packed untouched. */
void orc_q_pack_into(orc_qmat *q, uint8_t *dst);
/* n bytes aligned to 2 MiB and advised into transparent huge pages when n
 * is at least that (a decode step streams every weight: 4 KiB pages cost a
 * TLB walk per page); free() releases it. NULL when memory is short. */
void *orc_q_alloc_huge(size_t n);

/* Matrices orc_q_matmul_q8_many takes at once (q, k, v). */
#define ORC_Q_MANY_MAX 4
/* y[i] = w[i] applied to the same Q8_0 rows xq (T of them), for n <= 4
 * matrices sharing one input (q/k/v, gate/up): one parallel region for all
 * their Q8_0 / Q4_0 rows. The same bits as n calls of orc_q_matmul_q8. */
void orc_q_matmul_q8_many(const orc_qmat *const *w, int n, const uint8_t *xq, int64_t T, float *const *y);

/* orc_q_linear for n <= 4 weights of the same width applied to one x (the
 * quantized LM's q/k/v and gate/up): y[i] = x @ w[i]^T, x rounded to Q8_0
 * once, one parallel region. Q8_0 / Q4_0 / palettized weights only; false
 * with ctx's error set (and every y[i] NULL) otherwise. */
bool orc_q_linear_many(orc_ctx *ctx, orc_tensor *x, const orc_qmat *const *w, int n, orc_tensor **y);

#endif
