/* Softmax and log-softmax over the last axis. Each row subtracts its maximum
 * before exponentiating, so large logits do not overflow, and sums in double.
 * -INFINITY entries (masked logits) get probability 0 / log-probability
 * -INFINITY without NaN as long as the row holds a finite element; a row that
 * is entirely -INFINITY has no defined softmax, and gives zeros (softmax) or
 * all -INFINITY (log-softmax) with zero gradient rather than NaN. Rows are
 * independent, so any thread count gives the same bits. */
#include "orchard/ops.h"

#include <math.h>

#define PAR_MIN 32768 /* elements below which one thread is faster */

static float row_max(const float *x, int64_t d) {
    float m = -INFINITY;
    for (int64_t j = 0; j < d; j++)
        if (x[j] > m) m = x[j];
    return m;
}

static void softmax_row(const float *x, float *y, int64_t d) {
    const float m = row_max(x, d);
    if (m == -INFINITY) {
        for (int64_t j = 0; j < d; j++) y[j] = 0.0f;
        return;
    }
    double sum = 0.0;
    for (int64_t j = 0; j < d; j++) {
        y[j] = expf(x[j] - m);
        sum += y[j];
    }
    const double inv = 1.0 / sum;
    for (int64_t j = 0; j < d; j++) y[j] = (float)(y[j] * inv);
}

static void log_softmax_row(const float *x, float *y, int64_t d) {
    const float m = row_max(x, d);
    if (m == -INFINITY) {
        for (int64_t j = 0; j < d; j++) y[j] = -INFINITY;
        return;
    }
    double sum = 0.0;
    for (int64_t j = 0; j < d; j++) sum += expf(x[j] - m);
    const float log_sum = (float)log(sum);
    for (int64_t j = 0; j < d; j++) y[j] = (x[j] - m) - log_sum;
}

/* dx = y * (g - sum(g * y)) */
static void softmax_row_backward(const float *y, const float *g, float *gx, int64_t d) {
    double dot = 0.0;
    for (int64_t j = 0; j < d; j++) dot += (double)g[j] * y[j];
    const float fdot = (float)dot;
    for (int64_t j = 0; j < d; j++) gx[j] += y[j] * (g[j] - fdot);
}

/* dx = g - softmax * sum(g); softmax = exp(y), 0 where y = -inf. */
static void log_softmax_row_backward(const float *y, const float *g, float *gx, int64_t d) {
    if (d > 0 && row_max(y, d) == -INFINITY) return; /* fully masked row: constant output */
    double gsum = 0.0;
    for (int64_t j = 0; j < d; j++) gsum += g[j];
    const float fsum = (float)gsum;
    for (int64_t j = 0; j < d; j++) gx[j] += g[j] - expf(y[j]) * fsum;
}

static void softmax_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const bool log_form = n->iattr[0] != 0;
    const int64_t d = n->iattr[1], rows = n->iattr[2];
    const float *y = orc_f32(n->out), *g = n->out->grad;
#pragma omp parallel for schedule(static) if (rows * d > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        if (log_form) log_softmax_row_backward(y + r * d, g + r * d, gx + r * d, d);
        else softmax_row_backward(y + r * d, g + r * d, gx + r * d, d);
    }
}

static orc_tensor *softmax_op(orc_ctx *ctx, const char *op, orc_tensor *x, bool log_form) {
    if (!orc_op_begin(ctx, op, 1, &x)) return NULL;
    if (x->dtype != ORC_F32) {
        char b[128];
        return orc_fail(ctx, ORC_EDTYPE, "%s: input %s must be f32", op, orc_tensor_desc(b, sizeof b, x));
    }
    x = orc_contiguous(ctx, x);
    if (!x) return NULL;
    orc_tensor *y = orc_new(ctx, ORC_F32, x->ndim, x->shape);
    if (!y) return NULL;
    /* A scalar is one row of one element. */
    const int64_t d = x->ndim > 0 ? x->shape[x->ndim - 1] : 1;
    const int64_t rows = d > 0 ? x->numel / d : 0;
    const float *xd = orc_f32(x);
    float *yd = orc_f32(y);
#pragma omp parallel for schedule(static) if (x->numel > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        if (log_form) log_softmax_row(xd + r * d, yd + r * d, d);
        else softmax_row(xd + r * d, yd + r * d, d);
    }
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_node *n = orc_record(ctx, op, y, softmax_backward, 1, &x);
        if (!n) return NULL;
        n->iattr[0] = log_form;
        n->iattr[1] = d;
        n->iattr[2] = rows;
    }
    return y;
}

orc_tensor *orc_softmax(orc_ctx *ctx, orc_tensor *x) { return softmax_op(ctx, "softmax", x, false); }
orc_tensor *orc_log_softmax(orc_ctx *ctx, orc_tensor *x) { return softmax_op(ctx, "log_softmax", x, true); }
