/* Normalisation over the last axis: orc_rmsnorm and orc_layernorm. Row
 * statistics are accumulated in double and the per-row rstd (and mean) are
 * saved for backward, which recomputes the normalised row from x. Forward
 * and the input gradient are parallel over rows; the weight and bias
 * gradients sum over rows in fixed blocks of NORM_ROW_BLOCK rows (computed in
 * parallel into partial buffers, then added block by block in order), so
 * they are bit-identical for any thread count. */
#include "orchard/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NORM_ROW_BLOCK 32

enum { NORM_RMS, NORM_LAYER };

typedef struct norm_saved {
    float *mean; /* NULL for rmsnorm */
    float *rstd;
} norm_saved;

/* Per-row mean (layernorm only) and 1/sqrt(var + eps), in double. */
static void row_stats(int kind, const float *x, int64_t d, float eps, float *mean, float *rstd) {
    double mu = 0.0, ss = 0.0;
    if (kind == NORM_LAYER) {
        for (int64_t j = 0; j < d; j++) mu += x[j];
        mu = d ? mu / (double)d : 0.0;
    }
    for (int64_t j = 0; j < d; j++) {
        double c = (double)x[j] - mu;
        ss += c * c;
    }
    double var = d ? ss / (double)d : 0.0;
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt(var + (double)eps));
}

/* One row of backward. gw/gb (may be NULL) are this block's partial sums. */
static void row_backward(int kind, const float *x, const float *g, const float *w, int64_t d, float mean, float rstd,
                         float *gx, float *gw, float *gb) {
    double sum_gh = 0.0, sum_ghx = 0.0; /* sums of g*w and of g*w*xhat */
    for (int64_t j = 0; j < d; j++) {
        float xhat = (x[j] - mean) * rstd;
        float gh = w ? g[j] * w[j] : g[j];
        sum_gh += gh;
        sum_ghx += (double)gh * xhat;
        if (gw) gw[j] += g[j] * xhat;
        if (gb) gb[j] += g[j];
    }
    if (!gx) return;
    const float m_gh = kind == NORM_LAYER ? (float)(sum_gh / (double)d) : 0.0f;
    const float m_ghx = (float)(sum_ghx / (double)d);
    for (int64_t j = 0; j < d; j++) {
        float xhat = (x[j] - mean) * rstd;
        float gh = w ? g[j] * w[j] : g[j];
        gx[j] += rstd * (gh - m_gh - xhat * m_ghx);
    }
}

/* in[] = {x, weight?, bias?}; iattr: 0 kind, 1 has weight, 2 has bias, 3 rows, 4 d. */
static void norm_backward(orc_ctx *ctx, orc_node *n) {
    const int kind = (int)n->iattr[0];
    const bool has_w = n->iattr[1], has_b = n->iattr[2];
    const int64_t rows = n->iattr[3], d = n->iattr[4];
    const norm_saved *s = n->saved;
    orc_tensor *x = n->in[0], *w = has_w ? n->in[1] : NULL, *b = has_b ? n->in[1 + has_w] : NULL;
    const float *xd = orc_f32(x), *wd = w ? orc_f32(w) : NULL, *g = n->out->grad;
    float *gx = orc_grad(ctx, x), *gw = orc_grad(ctx, w), *gb = orc_grad(ctx, b);
    if (!orc_ctx_ok(ctx)) return;
    const int64_t nblk = (rows + NORM_ROW_BLOCK - 1) / NORM_ROW_BLOCK;
    const int nparts = (gw != NULL) + (gb != NULL);
    float *part = NULL;
    if (nparts && nblk && d) {
        part = calloc((size_t)(nblk * nparts * d), sizeof(float));
        if (!part) {
            orc_fail(ctx, ORC_ENOMEM, "%s: out of memory for the weight gradient", n->op);
            return;
        }
    }
#pragma omp parallel for schedule(static) if (rows * d > 16384)
    for (int64_t bl = 0; bl < nblk; bl++) {
        float *pw = gw && part ? part + (bl * nparts) * d : NULL;
        float *pb = gb && part ? part + (bl * nparts + (gw != NULL)) * d : NULL;
        int64_t r1 = (bl + 1) * NORM_ROW_BLOCK < rows ? (bl + 1) * NORM_ROW_BLOCK : rows;
        for (int64_t r = bl * NORM_ROW_BLOCK; r < r1; r++)
            row_backward(kind, xd + r * d, g + r * d, wd, d, s->mean ? s->mean[r] : 0.0f, s->rstd[r],
                         gx ? gx + r * d : NULL, pw, pb);
    }
    if (!part) return;
#pragma omp parallel for schedule(static) if (nblk * d > 16384)
    for (int64_t j = 0; j < d; j++) {
        float sw = 0.0f, sb = 0.0f;
        for (int64_t bl = 0; bl < nblk; bl++) {
            const float *p = part + bl * nparts * d;
            if (gw) sw += p[j];
            if (gb) sb += p[(gw != NULL) * d + j];
        }
        if (gw) gw[j] += sw;
        if (gb) gb[j] += sb;
    }
    free(part);
}

static bool check_vec(orc_ctx *ctx, const char *op, const char *what, const orc_tensor *v, const orc_tensor *x) {
    if (!v) return true;
    if (v->dtype != ORC_F32) {
        orc_fail(ctx, ORC_EDTYPE, "%s: %s must be f32, got %s", op, what, orc_dtype_name(v->dtype));
        return false;
    }
    const int64_t d = x->ndim ? x->shape[x->ndim - 1] : 1;
    if (v->ndim != 1 || v->shape[0] != d) {
        char vs[96], xs[96];
        orc_fail(ctx, ORC_ESHAPE, "%s: %s %s does not match the last axis of x %s", op, what,
                 orc_shape_str(vs, sizeof vs, v->ndim, v->shape), orc_shape_str(xs, sizeof xs, x->ndim, x->shape));
        return false;
    }
    return true;
}

static orc_tensor *norm(orc_ctx *ctx, const char *op, int kind, orc_tensor *x, orc_tensor *w, orc_tensor *b,
                        float eps) {
    if (!orc_op_begin(ctx, op, 1, &x)) return NULL;
    if ((w && !orc_op_begin(ctx, op, 1, &w)) || (b && !orc_op_begin(ctx, op, 1, &b))) return NULL;
    if (x->dtype != ORC_F32)
        return orc_fail(ctx, ORC_EDTYPE, "%s: x must be f32, got %s", op, orc_dtype_name(x->dtype));
    if (x->ndim < 1) return orc_fail(ctx, ORC_ESHAPE, "%s: x must have at least one axis", op);
    if (!(eps >= 0.0f)) return orc_fail(ctx, ORC_EINVAL, "%s: eps must be >= 0, got %g", op, (double)eps);
    if (!check_vec(ctx, op, "weight", w, x) || !check_vec(ctx, op, "bias", b, x)) return NULL;
    x = orc_contiguous(ctx, x);
    if (w) w = orc_contiguous(ctx, w);
    if (b) b = orc_contiguous(ctx, b);
    if (!orc_ctx_ok(ctx)) return NULL;

    const int64_t d = x->shape[x->ndim - 1], rows = d ? x->numel / d : 0;
    orc_tensor *y = orc_new(ctx, ORC_F32, x->ndim, x->shape);
    if (!y) return NULL;
    orc_tensor *in[3] = {x};
    int n_in = 1;
    if (w) in[n_in++] = w;
    if (b) in[n_in++] = b;
    const bool record = orc_needs_grad(ctx, n_in, in);
    norm_saved *s = NULL;
    if (record) {
        s = orc_arena_calloc(ctx->arena, 1, sizeof *s);
        float *stats = orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)(2 * rows + 1));
        if (!s || !stats) return orc_fail(ctx, ORC_ENOMEM, "%s: out of memory saving row statistics", op);
        s->rstd = stats;
        s->mean = kind == NORM_LAYER ? stats + rows : NULL;
    }
    const float *xd = orc_f32(x), *wd = w ? orc_f32(w) : NULL, *bd = b ? orc_f32(b) : NULL;
    float *yd = orc_f32(y);
#pragma omp parallel for schedule(static) if (x->numel > 16384)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xd + r * d;
        float *yr = yd + r * d;
        float mean, rstd;
        row_stats(kind, xr, d, eps, &mean, &rstd);
        for (int64_t j = 0; j < d; j++) {
            float v = (xr[j] - mean) * rstd;
            if (wd) v *= wd[j];
            if (bd) v += bd[j];
            yr[j] = v;
        }
        if (s) {
            s->rstd[r] = rstd;
            if (s->mean) s->mean[r] = mean;
        }
    }
    if (record) {
        orc_node *n = orc_record(ctx, op, y, norm_backward, n_in, in);
        if (!n) return NULL;
        n->saved = s;
        int64_t attrs[5] = {kind, w != NULL, b != NULL, rows, d};
        memcpy(n->iattr, attrs, sizeof attrs);
    }
    return y;
}

orc_tensor *orc_rmsnorm(orc_ctx *ctx, orc_tensor *x, orc_tensor *weight, float eps) {
    return norm(ctx, "rmsnorm", NORM_RMS, x, weight, NULL, eps);
}

orc_tensor *orc_layernorm(orc_ctx *ctx, orc_tensor *x, orc_tensor *weight, orc_tensor *bias, float eps) {
    return norm(ctx, "layernorm", NORM_LAYER, x, weight, bias, eps);
}
