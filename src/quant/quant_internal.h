/* Internal to src/quant: the palettized pieces the generic matrix code and
 * kernels call into (src/quant/pal.c, src/quant/palkern.c). */
#ifndef ORCHARD_QUANT_INTERNAL_H
#define ORCHARD_QUANT_INTERNAL_H

#include "orchard/quant.h"

/* 16 for PAL4, 4 for PAL2, 0 otherwise. */
int orc_q_pal_entries(orc_ggml_type type);
/* Row r of a palettized matrix as floats. */
void orc_q_pal_dequant_row(const orc_qmat *q, int64_t r, float *out);
/* orc_q_matmul_q8 for a palettized matrix. */
void orc_q_pal_matmul_q8(const orc_qmat *w, const uint8_t *xq, int64_t T, float *y);

#endif
