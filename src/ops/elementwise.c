/* Elementwise binary ops with numpy broadcasting (add, sub, mul) and the
 * scalar ops (scale, add_scalar). Shapes are aligned at the right and padded
 * to four axes; an operand's broadcast axes get stride 0, both for reading
 * its data and for adding into its gradient. Backward into a broadcast
 * operand is a reduction, run in one fixed order so results do not depend
 * on the thread count. */
#include "orchard/ops.h"

#include <string.h>

enum { OP_ADD, OP_SUB, OP_MUL };

typedef struct bcast {
    int64_t shape[4];     /* output shape, padded to 4 on the left */
    int64_t as[4], bs[4]; /* data strides of a and b into the output index space */
    int64_t ag[4], bg[4]; /* strides into a's and b's contiguous gradient */
    bool a_full, b_full;  /* operand has the output's shape (no reduction in backward) */
} bcast;

/* Pad a tensor's shape/strides to 4 axes aligned at the right. */
static void pad4(const orc_tensor *t, int64_t sh[4], int64_t st[4], int64_t gs[4]) {
    int off = 4 - t->ndim;
    int64_t g = 1;
    for (int i = 3; i >= 0; i--) {
        int k = i - off;
        sh[i] = k >= 0 ? t->shape[k] : 1;
        st[i] = k >= 0 ? t->stride[k] : 0;
        gs[i] = g;
        g *= sh[i];
    }
}

static bool make_bcast(orc_ctx *ctx, const char *op, const orc_tensor *a, const orc_tensor *b, bcast *bc) {
    int64_t ash[4], bsh[4];
    pad4(a, ash, bc->as, bc->ag);
    pad4(b, bsh, bc->bs, bc->bg);
    bc->a_full = bc->b_full = true;
    for (int i = 0; i < 4; i++) {
        if (ash[i] == bsh[i]) {
            bc->shape[i] = ash[i];
        } else if (ash[i] == 1) {
            bc->shape[i] = bsh[i];
            bc->as[i] = bc->ag[i] = 0;
            bc->a_full = false;
        } else if (bsh[i] == 1) {
            bc->shape[i] = ash[i];
            bc->bs[i] = bc->bg[i] = 0;
            bc->b_full = false;
        } else {
            char x[96], y[96];
            orc_fail(ctx, ORC_ESHAPE, "%s: shapes %s and %s do not broadcast", op,
                     orc_shape_str(x, sizeof x, a->ndim, a->shape), orc_shape_str(y, sizeof y, b->ndim, b->shape));
            return false;
        }
    }
    return true;
}

static inline int64_t at(const int64_t s[4], int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    return i0 * s[0] + i1 * s[1] + i2 * s[2] + i3 * s[3];
}

static void binary_backward(orc_ctx *ctx, orc_node *n) {
    const bcast *bc = n->saved;
    const int kind = (int)n->iattr[0];
    orc_tensor *a = n->in[0], *b = n->in[1];
    const float *g = n->out->grad;
    const float *ad = orc_f32(a), *bd = orc_f32(b);
    float *ga = orc_grad(ctx, a), *gb = orc_grad(ctx, b);
    const int64_t *sh = bc->shape;
    const int64_t inner = sh[2] * sh[3];
    /* Each operand separately: parallel over rows when it is not broadcast,
     * otherwise one thread in row-major order (a deterministic reduction). */
    for (int which = 0; which < 2; which++) {
        float *gx = which == 0 ? ga : gb;
        if (!gx) continue;
        const int64_t *gs = which == 0 ? bc->ag : bc->bg;
        const int64_t *os = which == 0 ? bc->bs : bc->as; /* the other operand (for mul) */
        const float *od = which == 0 ? bd : ad;
        const float sign = (kind == OP_SUB && which == 1) ? -1.0f : 1.0f;
        const bool full = which == 0 ? bc->a_full : bc->b_full;
        const int64_t rows = sh[0] * sh[1];
#pragma omp parallel for schedule(static) if (full && rows * inner > 32768)
        for (int64_t r = 0; r < rows; r++) {
            int64_t i0 = r / sh[1], i1 = r % sh[1];
            for (int64_t i2 = 0; i2 < sh[2]; i2++)
                for (int64_t i3 = 0; i3 < sh[3]; i3++) {
                    float gv = g[((i0 * sh[1] + i1) * sh[2] + i2) * sh[3] + i3];
                    if (kind == OP_MUL) gv *= od[at(os, i0, i1, i2, i3)];
                    gx[at(gs, i0, i1, i2, i3)] += sign * gv;
                }
        }
    }
}

static orc_tensor *binary(orc_ctx *ctx, const char *op, int kind, orc_tensor *a, orc_tensor *b) {
    orc_tensor *in[2] = {a, b};
    if (!orc_op_begin(ctx, op, 2, in)) return NULL;
    if (a->dtype != ORC_F32 || b->dtype != ORC_F32)
        return orc_fail(ctx, ORC_EDTYPE, "%s: both inputs must be f32", op);
    bcast bc;
    if (!make_bcast(ctx, op, a, b, &bc)) return NULL;
    int ndim = a->ndim > b->ndim ? a->ndim : b->ndim;
    orc_tensor *y = orc_new(ctx, ORC_F32, ndim, bc.shape + (4 - ndim));
    if (!y) return NULL;
    const float *ad = orc_f32(a), *bd = orc_f32(b);
    float *yd = orc_f32(y);
    const int64_t *sh = bc.shape;
    const int64_t rows = sh[0] * sh[1] * sh[2];
#pragma omp parallel for schedule(static) if (y->numel > 32768)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i0 = r / (sh[1] * sh[2]), i1 = (r / sh[2]) % sh[1], i2 = r % sh[2];
        float *yr = yd + r * sh[3];
        const float *ar = ad + at(bc.as, i0, i1, i2, 0), *br = bd + at(bc.bs, i0, i1, i2, 0);
        const int64_t sa = bc.as[3], sb = bc.bs[3];
        if (kind == OP_ADD)
            for (int64_t i3 = 0; i3 < sh[3]; i3++) yr[i3] = ar[i3 * sa] + br[i3 * sb];
        else if (kind == OP_SUB)
            for (int64_t i3 = 0; i3 < sh[3]; i3++) yr[i3] = ar[i3 * sa] - br[i3 * sb];
        else
            for (int64_t i3 = 0; i3 < sh[3]; i3++) yr[i3] = ar[i3 * sa] * br[i3 * sb];
    }
    if (orc_needs_grad(ctx, 2, in)) {
        orc_node *n = orc_record(ctx, op, y, binary_backward, 2, in);
        if (!n) return NULL;
        n->iattr[0] = kind;
        n->saved = orc_arena_alloc(ctx->arena, sizeof bc);
        if (!n->saved) return orc_fail(ctx, ORC_ENOMEM, "%s: out of memory", op);
        memcpy(n->saved, &bc, sizeof bc);
    }
    return y;
}

orc_tensor *orc_add(orc_ctx *ctx, orc_tensor *a, orc_tensor *b) { return binary(ctx, "add", OP_ADD, a, b); }
orc_tensor *orc_sub(orc_ctx *ctx, orc_tensor *a, orc_tensor *b) { return binary(ctx, "sub", OP_SUB, a, b); }
orc_tensor *orc_mul(orc_ctx *ctx, orc_tensor *a, orc_tensor *b) { return binary(ctx, "mul", OP_MUL, a, b); }

/* ---- scalar ops: y = s * x + c ------------------------------------------ */

static void affine_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const float s = n->fattr[0];
    const float *g = n->out->grad;
    const int64_t N = n->out->numel;
#pragma omp parallel for schedule(static) if (N > 32768)
    for (int64_t i = 0; i < N; i++) gx[i] += s * g[i];
}

static orc_tensor *affine(orc_ctx *ctx, const char *op, orc_tensor *x, float s, float c) {
    if (!orc_op_begin(ctx, op, 1, &x)) return NULL;
    if (x->dtype != ORC_F32) return orc_fail(ctx, ORC_EDTYPE, "%s: input must be f32", op);
    x = orc_contiguous(ctx, x);
    if (!x) return NULL;
    orc_tensor *y = orc_new(ctx, ORC_F32, x->ndim, x->shape);
    if (!y) return NULL;
    const float *xd = orc_f32(x);
    float *yd = orc_f32(y);
    const int64_t N = x->numel;
#pragma omp parallel for schedule(static) if (N > 32768)
    for (int64_t i = 0; i < N; i++) yd[i] = s * xd[i] + c;
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_node *n = orc_record(ctx, op, y, affine_backward, 1, &x);
        if (!n) return NULL;
        n->fattr[0] = s;
    }
    return y;
}

orc_tensor *orc_scale(orc_ctx *ctx, orc_tensor *x, float s) { return affine(ctx, "scale", x, s, 0.0f); }
orc_tensor *orc_add_scalar(orc_ctx *ctx, orc_tensor *x, float s) { return affine(ctx, "add_scalar", x, 1.0f, s); }
