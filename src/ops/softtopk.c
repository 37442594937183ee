/* SoftTopK along the last axis (IFPruning's differentiable top-k mask). For
 * each row z [F] and a budget k, the threshold tau solves
 *     sum_i sigmoid((z_i - tau) / T) = k
 * (found by bisection in double precision), and the output keeps the soft
 * values s_i = sigmoid((z_i - tau) / T) on the hard top-k channels (the k
 * largest z, ties to the lower index, exactly as orc_topk ranks) and 0
 * elsewhere, so every row has exactly k non-zero entries. The backward
 * differentiates through the soft values including tau's dependence on z:
 * with a_i = s_i (1 - s_i), implicit differentiation of the constraint gives
 * dtau/dz_j = a_j / sum_i a_i, so
 *     dL/dz_j = (h_j g_j a_j - a_j * (sum_i h_i g_i a_i) / sum_i a_i) / T
 * where h is the hard top-k indicator (piecewise constant: no gradient of its
 * own). Rows are independent and each runs sequentially in a fixed order, so
 * the result is the same for any thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/ops.h"

/* Bisection steps: the bracket below is at most (max - min) + 2 * 40 T wide,
 * and 64 halvings take it below 2^-64 of that, i.e. to the double precision
 * of tau itself. A fixed count keeps the work (and the bits) independent of
 * the data. */
#define SOFTTOPK_ITERS 64
#define SOFTTOPK_MARGIN 40.0 /* sigmoid(40) = 1 - 4e-18: the bracket ends are saturated */
#define PAR_MIN 4096

typedef struct {
    float v;
    int32_t i;
} ranked;

/* Larger value first, equal values by lower index (orc_topk's order; z is
 * checked finite before this runs). */
static int rank_cmp(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->i < b->i ? -1 : (a->i > b->i);
}

static inline double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

/* One row: tau by bisection, the hard top-k set, the masked soft values. */
static void softtopk_row(const float *z, int64_t F, int64_t k, double T, float *out, float *soft, ranked *work) {
    double lo = z[0], hi = z[0];
    for (int64_t i = 1; i < F; i++) {
        if (z[i] < lo) lo = z[i];
        if (z[i] > hi) hi = z[i];
    }
    lo -= SOFTTOPK_MARGIN * T; /* sum(lo) ~ F >= k */
    hi += SOFTTOPK_MARGIN * T; /* sum(hi) ~ 0 <= k */
    for (int it = 0; it < SOFTTOPK_ITERS; it++) {
        const double mid = 0.5 * (lo + hi);
        double s = 0;
        for (int64_t i = 0; i < F; i++) s += sigm(((double)z[i] - mid) / T);
        if (s > (double)k) lo = mid; /* the sum falls as tau rises */
        else hi = mid;
    }
    const double tau = 0.5 * (lo + hi);
    for (int64_t i = 0; i < F; i++) {
        soft[i] = (float)sigm(((double)z[i] - tau) / T);
        work[i].v = z[i];
        work[i].i = (int32_t)i;
        out[i] = 0.0f;
    }
    qsort(work, (size_t)F, sizeof *work, rank_cmp);
    for (int64_t j = 0; j < k; j++) out[work[j].i] = soft[work[j].i];
}

/* in[0] = z; saved = soft values [rows, F]; iattr = F, k; fattr[0] = T. The
 * hard set is read back from the output (non-zero there, or a soft value
 * that underflowed to 0, whose gradient is 0 anyway). */
static void softtopk_backward(orc_ctx *ctx, orc_node *n) {
    float *gz = orc_grad(ctx, n->in[0]);
    if (!gz) return;
    const int64_t F = n->iattr[0], rows = n->out->numel / F;
    const double T = n->fattr[0];
    const float *g = n->out->grad, *soft = n->saved, *out = orc_f32(n->out);
#pragma omp parallel for schedule(static) if (n->out->numel > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *s = soft + r * F, *o = out + r * F, *gr = g + r * F;
        double A = 0, G = 0;
        for (int64_t i = 0; i < F; i++) {
            const double a = (double)s[i] * (1.0 - (double)s[i]);
            A += a;
            if (o[i] != 0.0f) G += (double)gr[i] * a;
        }
        const double ratio = A > 0 ? G / A : 0.0;
        for (int64_t i = 0; i < F; i++) {
            const double a = (double)s[i] * (1.0 - (double)s[i]);
            const double d = (o[i] != 0.0f ? (double)gr[i] * a : 0.0) - a * ratio;
            gz[r * F + i] += (float)(d / T);
        }
    }
}

orc_tensor *orc_soft_topk(orc_ctx *ctx, orc_tensor *z, int64_t k, float temperature) {
    if (!orc_op_begin(ctx, "soft_topk", 1, &z)) return NULL;
    char s[96];
    if (z->dtype != ORC_F32) return orc_fail(ctx, ORC_EDTYPE, "soft_topk: z must be f32, got %s", orc_dtype_name(z->dtype));
    if (z->ndim < 1) return orc_fail(ctx, ORC_ESHAPE, "soft_topk: z must have at least one axis, got a scalar");
    const int64_t F = z->shape[z->ndim - 1];
    if (k < 1 || k > F)
        return orc_fail(ctx, ORC_EINVAL, "soft_topk: k = %lld must be in [1, %lld] (the last axis of z %s)",
                        (long long)k, (long long)F, orc_shape_str(s, sizeof s, z->ndim, z->shape));
    if (!(temperature > 0.0f) || !isfinite(temperature))
        return orc_fail(ctx, ORC_EINVAL, "soft_topk: temperature must be a positive number, got %g", (double)temperature);
    if (F > INT32_MAX)
        return orc_fail(ctx, ORC_ESHAPE, "soft_topk: last axis of z %s is too long",
                        orc_shape_str(s, sizeof s, z->ndim, z->shape));
    z = orc_contiguous(ctx, z);
    if (!z) return NULL;
    const float *zd = orc_f32(z);
    for (int64_t i = 0; i < z->numel; i++)
        if (!isfinite(zd[i]))
            return orc_fail(ctx, ORC_ERANGE, "soft_topk: score %lld of row %lld is not finite (%g)",
                            (long long)(i % F), (long long)(i / F), (double)zd[i]);
    const int64_t rows = z->numel / F;
    orc_tensor *out = orc_new(ctx, ORC_F32, z->ndim, z->shape);
    orc_tensor *soft = orc_new(ctx, ORC_F32, z->ndim, z->shape);
    ranked *work = orc_arena_alloc(ctx->arena, sizeof(ranked) * (size_t)(rows * F));
    if (!out || !soft) return NULL;
    if (!work) return orc_fail(ctx, ORC_ENOMEM, "soft_topk: out of memory for %lld x %lld scores", (long long)rows,
                               (long long)F);
    float *od = orc_f32(out), *sd = orc_f32(soft);
    const double T = temperature;
#pragma omp parallel for schedule(static) if (rows > 1 && z->numel > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) softtopk_row(zd + r * F, F, k, T, od + r * F, sd + r * F, work + r * F);
    if (orc_needs_grad(ctx, 1, &z)) {
        orc_node *n = orc_record(ctx, "soft_topk", out, softtopk_backward, 1, &z);
        if (!n) return NULL;
        n->saved = sd;
        n->iattr[0] = F;
        n->iattr[1] = k;
        n->fattr[0] = temperature;
    }
    return out;
}
