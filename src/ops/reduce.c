/* Sum and mean, along one axis (keepdim or not) or over all elements to a
 * scalar. All sums accumulate in double in a fixed order so the result is
 * bit-identical for any thread count: an axis reduction gives each output
 * element to exactly one thread, which walks the axis front to back; a full
 * reduction sums fixed-size blocks in parallel and then adds the block
 * partials in block order on one thread. Backward spreads the output
 * gradient (times 1/n for a mean) back over the reduced elements. */
#include "orchard/ops.h"

#define PAR_MIN 32768   /* elements below which one thread is faster */
#define COL_BLOCK 64    /* output columns one task accumulates at once */
#define ALL_BLOCK 8192  /* elements per partial sum in a full reduction */

/* The input viewed as [outer, len, inner] around the reduced axis. */
typedef struct axis_split {
    int64_t outer, len, inner;
} axis_split;

static axis_split split_at(const orc_tensor *x, int axis) {
    axis_split s = {1, x->shape[axis], 1};
    for (int i = 0; i < axis; i++) s.outer *= x->shape[i];
    for (int i = axis + 1; i < x->ndim; i++) s.inner *= x->shape[i];
    return s;
}

static bool check_input(orc_ctx *ctx, const char *op, orc_tensor *x) {
    if (!orc_op_begin(ctx, op, 1, &x)) return false;
    if (x->dtype != ORC_F32) {
        char b[128];
        orc_fail(ctx, ORC_EDTYPE, "%s: input %s must be f32", op, orc_tensor_desc(b, sizeof b, x));
        return false;
    }
    return true;
}

/* ---- along one axis ------------------------------------------------------ */

/* Last axis: each output element is one contiguous row. */
static void reduce_rows(const float *x, float *y, axis_split s, bool mean) {
#pragma omp parallel for schedule(static) if (s.outer * s.len > PAR_MIN)
    for (int64_t o = 0; o < s.outer; o++) {
        const float *row = x + o * s.len;
        double acc = 0.0;
        for (int64_t k = 0; k < s.len; k++) acc += row[k];
        y[o] = (float)(mean ? acc / (double)s.len : acc);
    }
}

/* Inner axis: a task owns COL_BLOCK output columns of one outer index and
 * reads the reduced rows one after another (contiguous loads). */
static void reduce_cols(const float *x, float *y, axis_split s, bool mean) {
    const int64_t nblk = (s.inner + COL_BLOCK - 1) / COL_BLOCK;
    const int64_t tasks = s.outer * nblk;
#pragma omp parallel for schedule(static) if (s.outer * s.len * s.inner > PAR_MIN)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t o = t / nblk, c0 = (t % nblk) * COL_BLOCK;
        const int64_t w = s.inner - c0 < COL_BLOCK ? s.inner - c0 : COL_BLOCK;
        double acc[COL_BLOCK] = {0};
        for (int64_t k = 0; k < s.len; k++) {
            const float *row = x + (o * s.len + k) * s.inner + c0;
            for (int64_t j = 0; j < w; j++) acc[j] += row[j];
        }
        float *out = y + o * s.inner + c0;
        for (int64_t j = 0; j < w; j++) out[j] = (float)(mean ? acc[j] / (double)s.len : acc[j]);
    }
}

static void reduce_axis_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const axis_split s = {n->iattr[0], n->iattr[1], n->iattr[2]};
    const float scale = n->fattr[0];
    const float *g = n->out->grad;
    const int64_t rows = s.outer * s.len;
#pragma omp parallel for schedule(static) if (rows * s.inner > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + (r / s.len) * s.inner;
        float *dst = gx + r * s.inner;
        for (int64_t j = 0; j < s.inner; j++) dst[j] += scale * gr[j];
    }
}

static orc_tensor *reduce_axis(orc_ctx *ctx, const char *op, orc_tensor *x, int axis, bool keepdim, bool mean) {
    if (!check_input(ctx, op, x)) return NULL;
    int a = axis < 0 ? axis + x->ndim : axis;
    if (a < 0 || a >= x->ndim) {
        char b[128];
        return orc_fail(ctx, ORC_EINVAL, "%s: axis %d out of range for %s (%d dimensions)", op, axis,
                        orc_tensor_desc(b, sizeof b, x), x->ndim);
    }
    x = orc_contiguous(ctx, x);
    if (!x) return NULL;
    int64_t shape[ORC_MAX_DIMS];
    int ndim = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i != a) shape[ndim++] = x->shape[i];
        else if (keepdim) shape[ndim++] = 1;
    }
    orc_tensor *y = orc_new(ctx, ORC_F32, ndim, shape);
    if (!y) return NULL;
    const axis_split s = split_at(x, a);
    if (s.inner == 1) reduce_rows(orc_f32(x), orc_f32(y), s, mean);
    else reduce_cols(orc_f32(x), orc_f32(y), s, mean);
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_node *n = orc_record(ctx, op, y, reduce_axis_backward, 1, &x);
        if (!n) return NULL;
        n->iattr[0] = s.outer;
        n->iattr[1] = s.len;
        n->iattr[2] = s.inner;
        n->fattr[0] = mean ? (float)(1.0 / (double)s.len) : 1.0f;
    }
    return y;
}

orc_tensor *orc_sum(orc_ctx *ctx, orc_tensor *x, int axis, bool keepdim) {
    return reduce_axis(ctx, "sum", x, axis, keepdim, false);
}

orc_tensor *orc_mean(orc_ctx *ctx, orc_tensor *x, int axis, bool keepdim) {
    return reduce_axis(ctx, "mean", x, axis, keepdim, true);
}

/* ---- over all elements ----------------------------------------------------- */

/* Sum of n floats in double: blocks in parallel, then the partials in order. */
static bool sum_all_f64(orc_ctx *ctx, const char *op, const float *x, int64_t n, double *out) {
    const int64_t nb = (n + ALL_BLOCK - 1) / ALL_BLOCK;
    if (nb <= 1) {
        double acc = 0.0;
        for (int64_t i = 0; i < n; i++) acc += x[i];
        *out = acc;
        return true;
    }
    orc_arena_mark m = orc_arena_get_mark(ctx->arena);
    double *part = orc_arena_alloc(ctx->arena, (size_t)nb * sizeof(double));
    if (!part) {
        orc_fail(ctx, ORC_ENOMEM, "%s: out of memory for %lld partial sums", op, (long long)nb);
        return false;
    }
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t end = (b + 1) * ALL_BLOCK < n ? (b + 1) * ALL_BLOCK : n;
        double acc = 0.0;
        for (int64_t i = b * ALL_BLOCK; i < end; i++) acc += x[i];
        part[b] = acc;
    }
    double acc = 0.0;
    for (int64_t b = 0; b < nb; b++) acc += part[b];
    *out = acc;
    orc_arena_rewind(ctx->arena, m); /* scratch only; nothing else was allocated since */
    return true;
}

static void reduce_all_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const float v = n->fattr[0] * n->out->grad[0];
    const int64_t N = n->in[0]->numel;
#pragma omp parallel for schedule(static) if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) gx[i] += v;
}

static orc_tensor *reduce_all(orc_ctx *ctx, const char *op, orc_tensor *x, bool mean) {
    if (!check_input(ctx, op, x)) return NULL;
    x = orc_contiguous(ctx, x);
    if (!x) return NULL;
    double acc;
    if (!sum_all_f64(ctx, op, orc_f32(x), x->numel, &acc)) return NULL;
    orc_tensor *y = orc_new(ctx, ORC_F32, 0, ORC_SHAPE(1));
    if (!y) return NULL;
    orc_f32(y)[0] = (float)(mean ? acc / (double)x->numel : acc);
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_node *n = orc_record(ctx, op, y, reduce_all_backward, 1, &x);
        if (!n) return NULL;
        n->fattr[0] = mean ? (float)(1.0 / (double)x->numel) : 1.0f;
    }
    return y;
}

orc_tensor *orc_sum_all(orc_ctx *ctx, orc_tensor *x) { return reduce_all(ctx, "sum_all", x, false); }
orc_tensor *orc_mean_all(orc_ctx *ctx, orc_tensor *x) { return reduce_all(ctx, "mean_all", x, true); }
