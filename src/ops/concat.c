/* Joining and splitting along an axis: concat and split. Both see a
 * contiguous tensor as [outer, axis, inner], so each piece is a block of
 * `outer` rows of (its axis length * inner) elements sitting at a column
 * offset inside the joined tensor's rows; forward copies those blocks and
 * backward adds them back. Every output element is written by one task, so
 * results do not depend on the thread count. A concat of more than
 * ORC_NODE_MAX_INPUTS tensors keeps its full input list in the node's saved
 * memory (in[] then holds only the first few, for inspection). Split makes
 * contiguous copies, one node per piece, so a piece that gets no gradient
 * costs nothing in backward. */
#include "orchard/ops.h"

#include <stdio.h>
#include <string.h>

#define PAR_MIN 32768  /* elements of work before threads pay off */
#define COL_BLOCK 4096 /* columns per copy task */

static int norm_axis(int axis, int ndim) { return axis < 0 ? axis + ndim : axis; }

static int64_t size_range(const orc_tensor *t, int from, int to) {
    int64_t s = 1;
    for (int i = from; i < to; i++) s *= t->shape[i];
    return s;
}

/* dst[r * dld + c] = src[r * sld + c] (4-byte elements of either dtype), or
 * += for f32 when add is set; r < rows, c < cols. Tasks are (row, column
 * block), so a single long row (axis 0) is still split. */
static void move_block(void *dst, int64_t dld, const void *src, int64_t sld, int64_t rows, int64_t cols, bool add) {
    if (rows == 0 || cols == 0) return;
    const int64_t nblk = (cols + COL_BLOCK - 1) / COL_BLOCK, tasks = rows * nblk;
#pragma omp parallel for schedule(static) if (rows * cols > PAR_MIN)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t r = t / nblk, c0 = (t % nblk) * COL_BLOCK;
        const int64_t len = c0 + COL_BLOCK < cols ? COL_BLOCK : cols - c0;
        if (add) {
            float *d = (float *)dst + r * dld + c0;
            const float *s = (const float *)src + r * sld + c0;
            for (int64_t c = 0; c < len; c++) d[c] += s[c];
        } else {
            memcpy((int32_t *)dst + r * dld + c0, (const int32_t *)src + r * sld + c0, (size_t)len * 4);
        }
    }
}

/* ---- concat ------------------------------------------------------------------ */

typedef struct concat_saved {
    int n;
    orc_tensor **parts; /* contiguous inputs */
} concat_saved;

/* iattr[0] = outer, iattr[1] = inner, iattr[2] = joined axis length. */
static void concat_backward(orc_ctx *ctx, orc_node *nd) {
    const concat_saved *cs = nd->saved;
    const int64_t outer = nd->iattr[0], inner = nd->iattr[1], total = nd->iattr[2];
    const int axis = (int)nd->iattr[3];
    const float *g = nd->out->grad;
    int64_t off = 0;
    for (int i = 0; i < cs->n; i++) {
        orc_tensor *p = cs->parts[i];
        const int64_t cols = p->shape[axis] * inner;
        float *gp = orc_grad(ctx, p);
        if (gp) move_block(gp, cols, g + off, total * inner, outer, cols, true);
        off += cols;
    }
}

static bool check_concat_args(orc_ctx *ctx, int n, orc_tensor *const *xs, int axis) {
    char a[96], b[96];
    const orc_tensor *x0 = xs[0];
    const int ax = norm_axis(axis, x0->ndim);
    if (ax < 0 || ax >= x0->ndim) {
        orc_fail(ctx, ORC_EINVAL, "concat: axis %d out of range for %d dimensions", axis, x0->ndim);
        return false;
    }
    for (int i = 1; i < n; i++) {
        const orc_tensor *x = xs[i];
        if (x->dtype != x0->dtype) {
            orc_fail(ctx, ORC_EDTYPE, "concat: input %d is %s but input 0 is %s", i, orc_dtype_name(x->dtype),
                     orc_dtype_name(x0->dtype));
            return false;
        }
        bool ok = x->ndim == x0->ndim;
        for (int d = 0; ok && d < x0->ndim; d++) ok = d == ax || x->shape[d] == x0->shape[d];
        if (!ok) {
            orc_fail(ctx, ORC_ESHAPE, "concat: input %d %s does not match input 0 %s outside axis %d", i,
                     orc_shape_str(a, sizeof a, x->ndim, x->shape), orc_shape_str(b, sizeof b, x0->ndim, x0->shape),
                     ax);
            return false;
        }
    }
    return true;
}

static void record_concat(orc_ctx *ctx, orc_tensor *y, int n, orc_tensor **parts, int64_t outer, int64_t inner,
                          int64_t total, int ax) {
    if (!orc_needs_grad(ctx, n, parts)) return;
    concat_saved *cs = orc_arena_alloc(ctx->arena, sizeof *cs);
    if (!cs) {
        orc_fail(ctx, ORC_ENOMEM, "concat: out of memory");
        return;
    }
    cs->n = n;
    cs->parts = parts;
    orc_node *nd = orc_record(ctx, "concat", y, concat_backward, n < ORC_NODE_MAX_INPUTS ? n : ORC_NODE_MAX_INPUTS,
                              parts);
    if (!nd) return;
    nd->saved = cs;
    nd->iattr[0] = outer;
    nd->iattr[1] = inner;
    nd->iattr[2] = total;
    nd->iattr[3] = ax;
}

orc_tensor *orc_concat(orc_ctx *ctx, int n, orc_tensor *const *xs, int axis) {
    if (!orc_ctx_ok(ctx)) return NULL;
    if (n < 1 || !xs) return orc_fail(ctx, ORC_EINVAL, "concat: needs at least one input, got %d", n);
    if (!orc_op_begin(ctx, "concat", n, xs)) return NULL;
    if (!check_concat_args(ctx, n, xs, axis)) return NULL;
    const int ax = norm_axis(axis, xs[0]->ndim);
    orc_tensor **parts = orc_arena_alloc(ctx->arena, (size_t)n * sizeof *parts);
    if (!parts) return orc_fail(ctx, ORC_ENOMEM, "concat: out of memory");
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        parts[i] = orc_contiguous(ctx, xs[i]);
        if (!parts[i]) return NULL;
        total += parts[i]->shape[ax];
    }
    int64_t shape[ORC_MAX_DIMS];
    memcpy(shape, parts[0]->shape, sizeof shape);
    shape[ax] = total;
    orc_tensor *y = orc_new(ctx, parts[0]->dtype, parts[0]->ndim, shape);
    if (!y) return NULL;
    const int64_t outer = size_range(y, 0, ax), inner = size_range(y, ax + 1, y->ndim);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const int64_t cols = parts[i]->shape[ax] * inner;
        move_block((int32_t *)y->data + off, total * inner, parts[i]->data, cols, outer, cols, false);
        off += cols;
    }
    record_concat(ctx, y, n, parts, outer, inner, total, ax);
    return orc_ctx_ok(ctx) ? y : NULL;
}

/* ---- split ----------------------------------------------------------------------- */

/* One node per piece. iattr[0] = outer, iattr[1] = piece columns,
 * iattr[2] = column offset in x's rows, iattr[3] = x's row length. */
static void split_backward(orc_ctx *ctx, orc_node *nd) {
    float *gx = orc_grad(ctx, nd->in[0]);
    if (!gx) return;
    const int64_t outer = nd->iattr[0], cols = nd->iattr[1], off = nd->iattr[2], ld = nd->iattr[3];
    move_block(gx + off, ld, nd->out->grad, cols, outer, cols, true);
}

static bool check_split_args(orc_ctx *ctx, const orc_tensor *x, int axis, int n, const int64_t *sizes) {
    char s[96];
    const int ax = norm_axis(axis, x->ndim);
    if (ax < 0 || ax >= x->ndim) {
        orc_fail(ctx, ORC_EINVAL, "split: axis %d out of range for %d dimensions", axis, x->ndim);
        return false;
    }
    if (n < 1 || !sizes) {
        orc_fail(ctx, ORC_EINVAL, "split: needs at least one piece size, got %d", n);
        return false;
    }
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 0) {
            orc_fail(ctx, ORC_EINVAL, "split: piece %d has negative size %lld", i, (long long)sizes[i]);
            return false;
        }
        sum += sizes[i];
    }
    if (sum != x->shape[ax]) {
        orc_fail(ctx, ORC_ESHAPE, "split: %d piece sizes sum to %lld but axis %d of x %s has length %lld", n,
                 (long long)sum, ax, orc_shape_str(s, sizeof s, x->ndim, x->shape), (long long)x->shape[ax]);
        return false;
    }
    return true;
}

static bool split_fail(int n, orc_tensor **outs) {
    for (int i = 0; i < n; i++) outs[i] = NULL;
    return false;
}

bool orc_split(orc_ctx *ctx, orc_tensor *x, int axis, int n, const int64_t *sizes, orc_tensor **outs) {
    if (!outs) {
        if (orc_ctx_ok(ctx)) orc_fail(ctx, ORC_EINVAL, "split: outs is NULL");
        return false;
    }
    for (int i = 0; i < n; i++) outs[i] = NULL;
    if (!orc_op_begin(ctx, "split", 1, &x)) return false;
    if (!check_split_args(ctx, x, axis, n, sizes)) return false;
    const int ax = norm_axis(axis, x->ndim);
    x = orc_contiguous(ctx, x);
    if (!x) return false;
    const int64_t outer = size_range(x, 0, ax), inner = size_range(x, ax + 1, x->ndim);
    const int64_t ld = x->shape[ax] * inner;
    const bool grad = orc_needs_grad(ctx, 1, &x);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t shape[ORC_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[ax] = sizes[i];
        orc_tensor *p = orc_new(ctx, x->dtype, x->ndim, shape);
        if (!p) return split_fail(n, outs);
        const int64_t cols = sizes[i] * inner;
        move_block(p->data, cols, (const int32_t *)x->data + off, ld, outer, cols, false);
        if (grad) {
            orc_node *nd = orc_record(ctx, "split", p, split_backward, 1, &x);
            if (!nd) return split_fail(n, outs);
            nd->iattr[0] = outer;
            nd->iattr[1] = cols;
            nd->iattr[2] = off;
            nd->iattr[3] = ld;
        }
        outs[i] = p;
        off += cols;
    }
    return true;
}
