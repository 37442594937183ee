/* Token cross-entropy: orc_cross_entropy fuses log-softmax and the negative
 * log-likelihood of the target, with ignore_index and optional per-token
 * weights, and returns the weighted mean as a scalar. Rows are independent
 * and run in parallel (handed out dynamically: a row's result does not
 * depend on which thread computes it); the sum over tokens is taken
 * afterwards in token order (in double), so the loss is the same for any
 * thread count. Each row's log-sum-exp is saved; backward writes
 * (softmax - onehot) * w_i / sum_w.
 * When the weights themselves require a gradient it is (nll_i - loss) / sum_w. */
#include "orchard/ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "vec_exp.h"

typedef struct ce_saved {
    int64_t rows, vocab;
    int32_t ignore;
    int32_t *targets; /* own copy */
    float *lse;       /* per-row log-sum-exp */
    float *nll;       /* per-row loss (0 for ignored rows) */
    float loss;
    double sum_w;     /* sum of counted weights; 0 makes the loss 0 */
} ce_saved;

static bool counted(int32_t t, int32_t ignore) { return t != ignore; }

/* log(sum(exp(x))) over one row, shifted by the row max. Eight fixed lanes
 * (max in float, sums in double) so the loop vectorises; the lane order is
 * fixed, so the result does not depend on the thread count. */
#define LSE_LANES 8

ORC_VEC_CLONES static float row_lse(const float *x, int64_t v) {
    float m[LSE_LANES];
    for (int l = 0; l < LSE_LANES; l++) m[l] = -INFINITY;
    int64_t j = 0;
    for (; j + LSE_LANES <= v; j += LSE_LANES)
        for (int l = 0; l < LSE_LANES; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
    float mx = -INFINITY;
    for (int l = 0; l < LSE_LANES; l++) mx = m[l] > mx ? m[l] : mx;
    for (int64_t t = j; t < v; t++) mx = x[t] > mx ? x[t] : mx;
    if (mx == -INFINITY) return -INFINITY;
    double s[LSE_LANES] = {0};
    for (j = 0; j + LSE_LANES <= v; j += LSE_LANES)
        for (int l = 0; l < LSE_LANES; l++) s[l] += (double)orc_vexp(x[j + l] - mx);
    double sum = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; j < v; j++) sum += (double)orc_vexp(x[j] - mx);
    return mx + (float)log(sum);
}

/* gr += scale * exp(x - lse) over one row. */
ORC_VEC_CLONES static void row_softmax_add(float *gr, const float *x, float lse, float scale, int64_t v) {
    for (int64_t j = 0; j < v; j++) gr[j] += scale * orc_vexp(x[j] - lse);
}

/* in[] = {logits, weights?}; iattr[0] = has weights. */
static void ce_backward(orc_ctx *ctx, orc_node *n) {
    const ce_saved *s = n->saved;
    orc_tensor *logits = n->in[0], *weights = n->iattr[0] ? n->in[1] : NULL;
    float *gl = orc_grad(ctx, logits), *gw = orc_grad(ctx, weights);
    if (s->sum_w == 0.0) return; /* the loss is the constant 0 */
    const float g = n->out->grad[0];
    const float *x = orc_f32(logits), *w = weights ? orc_f32(weights) : NULL;
    const int64_t V = s->vocab;
    if (gl) {
#pragma omp parallel for schedule(dynamic, 16) if (s->rows * V > 32768)
        for (int64_t r = 0; r < s->rows; r++) {
            const int32_t t = s->targets[r];
            if (!counted(t, s->ignore)) continue;
            const float scale = (float)(g * (w ? w[r] : 1.0f) / s->sum_w);
            const float *xr = x + r * V;
            float *gr = gl + r * V;
            row_softmax_add(gr, xr, s->lse[r], scale, V);
            gr[t] -= scale;
        }
    }
    if (gw)
        for (int64_t r = 0; r < s->rows; r++)
            if (counted(s->targets[r], s->ignore)) gw[r] += (float)(g * (s->nll[r] - s->loss) / s->sum_w);
}

/* Checks every target; names the first one outside [0, V) that is not ignored. */
static bool check_targets(orc_ctx *ctx, const orc_tensor *tg, int64_t V, int32_t ignore) {
    const int32_t *t = orc_i32(tg);
    for (int64_t i = 0; i < tg->numel; i++)
        if (counted(t[i], ignore) && (t[i] < 0 || t[i] >= V)) {
            char sh[96];
            orc_fail(ctx, ORC_ERANGE,
                     "cross_entropy: target %d at position %lld (flat) of targets %s is outside [0, %lld) "
                     "and is not ignore_index %d",
                     (int)t[i], (long long)i, orc_shape_str(sh, sizeof sh, tg->ndim, tg->shape), (long long)V,
                     (int)ignore);
            return false;
        }
    return true;
}

static ce_saved *ce_alloc(orc_ctx *ctx, int64_t rows) {
    ce_saved *s = orc_arena_calloc(ctx->arena, 1, sizeof *s);
    size_t n = (size_t)(rows ? rows : 1);
    if (s) {
        s->targets = orc_arena_alloc(ctx->arena, n * sizeof(int32_t));
        s->lse = orc_arena_alloc(ctx->arena, n * sizeof(float));
        s->nll = orc_arena_alloc(ctx->arena, n * sizeof(float));
    }
    if (!s || !s->targets || !s->lse || !s->nll) return orc_fail(ctx, ORC_ENOMEM, "cross_entropy: out of memory");
    s->rows = rows;
    return s;
}

orc_tensor *orc_cross_entropy(orc_ctx *ctx, orc_tensor *logits, orc_tensor *targets, orc_tensor *weights,
                              int32_t ignore_index) {
    orc_tensor *in[3] = {logits, targets, weights};
    if (!orc_op_begin(ctx, "cross_entropy", weights ? 3 : 2, in)) return NULL;
    if (logits->dtype != ORC_F32 || targets->dtype != ORC_I32 || (weights && weights->dtype != ORC_F32))
        return orc_fail(ctx, ORC_EDTYPE, "cross_entropy: want f32 logits, int32 targets and f32 weights");
    char ls[96], ts[96], ws[96];
    orc_shape_str(ls, sizeof ls, logits->ndim, logits->shape);
    orc_shape_str(ts, sizeof ts, targets->ndim, targets->shape);
    if (logits->ndim < 1 || logits->shape[logits->ndim - 1] < 1)
        return orc_fail(ctx, ORC_ESHAPE, "cross_entropy: logits %s need a non-empty last (vocabulary) axis", ls);
    const int64_t V = logits->shape[logits->ndim - 1], rows = logits->numel / V;
    if (targets->numel != rows)
        return orc_fail(ctx, ORC_ESHAPE, "cross_entropy: logits %s have %lld rows but targets %s have %lld elements",
                        ls, (long long)rows, ts, (long long)targets->numel);
    if (weights && weights->numel != rows)
        return orc_fail(ctx, ORC_ESHAPE, "cross_entropy: weights %s have %lld elements, logits %s have %lld rows",
                        orc_shape_str(ws, sizeof ws, weights->ndim, weights->shape), (long long)weights->numel, ls,
                        (long long)rows);
    logits = orc_contiguous(ctx, logits);
    targets = orc_contiguous(ctx, targets);
    if (weights) weights = orc_contiguous(ctx, weights);
    if (!orc_ctx_ok(ctx)) return NULL;
    if (!check_targets(ctx, targets, V, ignore_index)) return NULL;

    ce_saved *s = ce_alloc(ctx, rows);
    if (!s) return NULL;
    s->vocab = V;
    s->ignore = ignore_index;
    memcpy(s->targets, orc_i32(targets), sizeof(int32_t) * (size_t)rows);
    const float *x = orc_f32(logits), *w = weights ? orc_f32(weights) : NULL;
#pragma omp parallel for schedule(dynamic, 16) if (rows * V > 32768)
    for (int64_t r = 0; r < rows; r++) {
        const int32_t t = s->targets[r];
        s->lse[r] = row_lse(x + r * V, V);
        s->nll[r] = counted(t, ignore_index) ? s->lse[r] - x[r * V + t] : 0.0f;
    }
    double num = 0.0, den = 0.0; /* token order: a fixed reduction */
    for (int64_t r = 0; r < rows; r++) {
        if (!counted(s->targets[r], ignore_index)) continue;
        const double wr = w ? w[r] : 1.0;
        num += wr * s->nll[r];
        den += wr;
    }
    s->sum_w = den;
    s->loss = den != 0.0 ? (float)(num / den) : 0.0f;

    orc_tensor *y = orc_new(ctx, ORC_F32, 0, ORC_SHAPE(1));
    if (!y) return NULL;
    orc_f32(y)[0] = s->loss;
    orc_tensor *rec[2] = {logits, weights};
    const int n_rec = weights ? 2 : 1;
    if (orc_needs_grad(ctx, n_rec, rec)) {
        orc_node *n = orc_record(ctx, "cross_entropy", y, ce_backward, n_rec, rec);
        if (!n) return NULL;
        n->saved = s;
        n->iattr[0] = weights != NULL;
    }
    return y;
}
