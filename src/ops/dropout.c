/* Inverted dropout. Each call takes a fresh stream id from ctx->rng and keeps
 * element i when orc_rand_uniform(seed, stream, i) >= p, scaling kept values
 * by 1/(1-p) so the expected output equals the input. The draw for an element
 * depends only on (seed, stream, i), so the mask is the same for any thread
 * count, and the backward recomputes it from the saved seed and stream
 * instead of storing a mask. Outside training, or with p == 0, the op is the
 * identity and returns its input without drawing a stream. */
#include "orchard/ops.h"

#define PAR_MIN 32768 /* elements below which one thread is faster */

static inline bool kept(uint64_t seed, uint64_t stream, int64_t i, float p) {
    return orc_rand_uniform(seed, stream, (uint64_t)i) >= p;
}

static void dropout_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const uint64_t seed = (uint64_t)n->iattr[0], stream = (uint64_t)n->iattr[1];
    const float p = n->fattr[0], scale = n->fattr[1];
    const float *g = n->out->grad;
    const int64_t N = n->out->numel;
#pragma omp parallel for schedule(static) if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++)
        if (kept(seed, stream, i, p)) gx[i] += scale * g[i];
}

orc_tensor *orc_dropout(orc_ctx *ctx, orc_tensor *x, float p) {
    if (!orc_op_begin(ctx, "dropout", 1, &x)) return NULL;
    if (x->dtype != ORC_F32) {
        char b[128];
        return orc_fail(ctx, ORC_EDTYPE, "dropout: input %s must be f32", orc_tensor_desc(b, sizeof b, x));
    }
    /* Written so that NaN fails too. */
    if (!(p >= 0.0f && p < 1.0f)) return orc_fail(ctx, ORC_EINVAL, "dropout: p = %g must be in [0, 1)", (double)p);
    if (!ctx->training || p == 0.0f) return x;
    x = orc_contiguous(ctx, x);
    if (!x) return NULL;
    orc_tensor *y = orc_new(ctx, ORC_F32, x->ndim, x->shape);
    if (!y) return NULL;
    const uint64_t seed = ctx->rng.seed, stream = orc_rng_split(&ctx->rng);
    const float scale = 1.0f / (1.0f - p);
    const float *xd = orc_f32(x);
    float *yd = orc_f32(y);
    const int64_t N = x->numel;
#pragma omp parallel for schedule(static) if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) yd[i] = kept(seed, stream, i, p) ? xd[i] * scale : 0.0f;
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_node *n = orc_record(ctx, "dropout", y, dropout_backward, 1, &x);
        if (!n) return NULL;
        n->iattr[0] = (int64_t)seed;
        n->iattr[1] = (int64_t)stream;
        n->fattr[0] = p;
        n->fattr[1] = scale;
    }
    return y;
}
