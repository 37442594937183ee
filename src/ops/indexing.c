/* Integer indexing ops: index_select (rows of x along axis 0), scatter_add
 * (sum rows into buckets: index_add, MoE's combine) and gather (along the
 * last axis, torch.gather(dim=-1)). Where indices may repeat, rows are added
 * into their destination through scatter_rows: a stable counting sort groups
 * the source rows by destination, then each (destination row, column block)
 * is one parallel task that adds its rows in ascending source order. That is
 * exactly the order of a plain serial loop, so results are bit-identical for
 * any thread count. Indices are checked before anything is written; a bad
 * one is an ORC_ERANGE error naming its position and value. */
#include "orchard/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAR_MIN 32768  /* elements of work before threads pay off */
#define COL_BLOCK 1024 /* columns per scatter task */

/* Product of t->shape[from .. ndim). */
static int64_t size_from(const orc_tensor *t, int from) {
    int64_t s = 1;
    for (int i = from; i < t->ndim; i++) s *= t->shape[i];
    return s;
}

/* Position of the first entry of idx outside [0, n), or -1. */
static int64_t first_out_of_range(const int32_t *idx, int64_t m, int64_t n) {
    for (int64_t i = 0; i < m; i++)
        if (idx[i] < 0 || (int64_t)idx[i] >= n) return i;
    return -1;
}

/* Format the multi-index of flat position `flat` in a contiguous shape. */
static const char *position_str(char *buf, size_t cap, int ndim, const int64_t *shape, int64_t flat) {
    int64_t pos[ORC_MAX_DIMS] = {0};
    for (int i = ndim - 1; i >= 0; i--) {
        int64_t d = shape[i] ? shape[i] : 1;
        pos[i] = flat % d;
        flat /= d;
    }
    return orc_shape_str(buf, cap, ndim, pos);
}

/* dst[b] += src[m] for every m with idx[m] == b, in ascending m within each
 * b. dst has n rows and src m rows, each of `row` floats; idx is already
 * range-checked. Returns false when out of memory. */
static bool scatter_rows(float *dst, const float *src, const int32_t *idx, int64_t m, int64_t n, int64_t row) {
    if (m == 0 || row == 0 || n == 0) return true;
    int64_t *end = calloc((size_t)n, sizeof *end);
    int64_t *order = malloc((size_t)m * sizeof *order);
    if (!end || !order) {
        free(end);
        free(order);
        return false;
    }
    /* Counts, then bucket starts, then placement advances each start to its
     * bucket's end: bucket b is [b ? end[b-1] : 0, end[b]). */
    for (int64_t i = 0; i < m; i++) end[idx[i]]++;
    int64_t acc = 0;
    for (int64_t b = 0; b < n; b++) {
        int64_t c = end[b];
        end[b] = acc;
        acc += c;
    }
    for (int64_t i = 0; i < m; i++) order[end[idx[i]]++] = i;

    const int64_t nblk = (row + COL_BLOCK - 1) / COL_BLOCK;
    const int64_t tasks = n * nblk;
#pragma omp parallel for schedule(static) if (m * row > PAR_MIN)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t b = t / nblk, c0 = (t % nblk) * COL_BLOCK;
        const int64_t c1 = c0 + COL_BLOCK < row ? c0 + COL_BLOCK : row;
        const int64_t lo = b ? end[b - 1] : 0, hi = end[b];
        float *d = dst + b * row;
        for (int64_t j = lo; j < hi; j++) {
            const float *s = src + order[j] * row;
            for (int64_t c = c0; c < c1; c++) d[c] += s[c];
        }
    }
    free(end);
    free(order);
    return true;
}

/* dst[i] += src[idx[i]] row by row (no two tasks write the same row). */
static void gather_rows_add(float *dst, const float *src, const int32_t *idx, int64_t m, int64_t row) {
#pragma omp parallel for schedule(static) if (m * row > PAR_MIN)
    for (int64_t i = 0; i < m; i++) {
        float *d = dst + i * row;
        const float *s = src + (int64_t)idx[i] * row;
        for (int64_t c = 0; c < row; c++) d[c] += s[c];
    }
}

/* Shared entry checks: x f32 with at least one axis, idx int32 1-D. */
static bool check_rows_args(orc_ctx *ctx, const char *op, const orc_tensor *x, const orc_tensor *idx) {
    char a[96], b[96];
    if (x->dtype != ORC_F32 || idx->dtype != ORC_I32) {
        orc_fail(ctx, ORC_EDTYPE, "%s: data must be f32 and idx int32, got %s and %s", op, orc_dtype_name(x->dtype),
                 orc_dtype_name(idx->dtype));
        return false;
    }
    if (x->ndim < 1 || idx->ndim != 1) {
        orc_fail(ctx, ORC_ESHAPE, "%s: data %s needs at least one axis and idx %s must be 1-D", op,
                 orc_shape_str(a, sizeof a, x->ndim, x->shape), orc_shape_str(b, sizeof b, idx->ndim, idx->shape));
        return false;
    }
    return true;
}

static bool check_range(orc_ctx *ctx, const char *op, const orc_tensor *idx, int64_t n, const char *what) {
    int64_t bad = first_out_of_range(orc_i32(idx), idx->numel, n);
    if (bad < 0) return true;
    orc_fail(ctx, ORC_ERANGE, "%s: idx[%lld] = %d is outside [0, %lld) (%s)", op, (long long)bad,
             (int)orc_i32(idx)[bad], (long long)n, what);
    return false;
}

/* ---- index_select -------------------------------------------------------- */

/* in[0] = x, in[1] = idx; iattr[0] = row length. */
static void index_select_backward(orc_ctx *ctx, orc_node *n) {
    orc_tensor *x = n->in[0], *idx = n->in[1];
    float *gx = orc_grad(ctx, x);
    if (!gx) return;
    if (!scatter_rows(gx, n->out->grad, orc_i32(idx), idx->numel, x->shape[0], n->iattr[0]))
        orc_fail(ctx, ORC_ENOMEM, "index_select: out of memory in backward");
}

orc_tensor *orc_index_select(orc_ctx *ctx, orc_tensor *x, orc_tensor *idx) {
    orc_tensor *in[2] = {x, idx};
    if (!orc_op_begin(ctx, "index_select", 2, in)) return NULL;
    if (!check_rows_args(ctx, "index_select", x, idx)) return NULL;
    x = orc_contiguous(ctx, x);
    idx = orc_contiguous(ctx, idx);
    if (!x || !idx) return NULL;
    char xs[96];
    if (!check_range(ctx, "index_select", idx, x->shape[0], orc_tensor_desc(xs, sizeof xs, x))) return NULL;
    const int64_t m = idx->numel, row = size_from(x, 1);
    int64_t shape[ORC_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = m;
    orc_tensor *y = orc_new(ctx, ORC_F32, x->ndim, shape);
    if (!y) return NULL;
    const float *xd = orc_f32(x);
    const int32_t *id = orc_i32(idx);
    float *yd = orc_f32(y);
#pragma omp parallel for schedule(static) if (m * row > PAR_MIN)
    for (int64_t i = 0; i < m; i++) memcpy(yd + i * row, xd + (int64_t)id[i] * row, (size_t)row * sizeof(float));
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_tensor *rec[2] = {x, idx};
        orc_node *n = orc_record(ctx, "index_select", y, index_select_backward, 2, rec);
        if (!n) return NULL;
        n->iattr[0] = row;
    }
    return y;
}

/* ---- scatter_add ----------------------------------------------------------- */

/* in[0] = src, in[1] = idx; iattr[0] = row length. grad_src[m] = grad_out[idx[m]]. */
static void scatter_add_backward(orc_ctx *ctx, orc_node *n) {
    orc_tensor *src = n->in[0], *idx = n->in[1];
    float *gs = orc_grad(ctx, src);
    if (!gs) return;
    gather_rows_add(gs, n->out->grad, orc_i32(idx), idx->numel, n->iattr[0]);
}

orc_tensor *orc_scatter_add(orc_ctx *ctx, orc_tensor *src, orc_tensor *idx, int64_t n) {
    orc_tensor *in[2] = {src, idx};
    if (!orc_op_begin(ctx, "scatter_add", 2, in)) return NULL;
    if (!check_rows_args(ctx, "scatter_add", src, idx)) return NULL;
    char a[96], b[96];
    if (idx->shape[0] != src->shape[0])
        return orc_fail(ctx, ORC_ESHAPE, "scatter_add: idx %s needs one entry per row of src %s",
                        orc_shape_str(a, sizeof a, idx->ndim, idx->shape),
                        orc_shape_str(b, sizeof b, src->ndim, src->shape));
    if (n < 0) return orc_fail(ctx, ORC_EINVAL, "scatter_add: bucket count n = %lld is negative", (long long)n);
    src = orc_contiguous(ctx, src);
    idx = orc_contiguous(ctx, idx);
    if (!src || !idx) return NULL;
    char what[48];
    snprintf(what, sizeof what, "n = %lld buckets", (long long)n);
    if (!check_range(ctx, "scatter_add", idx, n, what)) return NULL;
    const int64_t row = size_from(src, 1);
    int64_t shape[ORC_MAX_DIMS];
    memcpy(shape, src->shape, sizeof shape);
    shape[0] = n;
    orc_tensor *y = orc_new(ctx, ORC_F32, src->ndim, shape);
    if (!y) return NULL;
    memset(y->data, 0, (size_t)y->numel * sizeof(float));
    if (!scatter_rows(orc_f32(y), orc_f32(src), orc_i32(idx), idx->numel, n, row))
        return orc_fail(ctx, ORC_ENOMEM, "scatter_add: out of memory sorting %lld rows", (long long)idx->numel);
    if (orc_needs_grad(ctx, 1, &src)) {
        orc_tensor *rec[2] = {src, idx};
        orc_node *nd = orc_record(ctx, "scatter_add", y, scatter_add_backward, 2, rec);
        if (!nd) return NULL;
        nd->iattr[0] = row;
    }
    return y;
}

/* ---- gather (last axis) ------------------------------------------------------ */

/* in[0] = x, in[1] = idx; iattr[0] = N (x's last axis), iattr[1] = K. Indices
 * may repeat within a row, so each row is one task adding in column order. */
static void gather_backward(orc_ctx *ctx, orc_node *n) {
    orc_tensor *x = n->in[0], *idx = n->in[1];
    float *gx = orc_grad(ctx, x);
    if (!gx) return;
    const int64_t N = n->iattr[0], K = n->iattr[1], rows = K ? idx->numel / K : 0;
    const float *g = n->out->grad;
    const int32_t *id = orc_i32(idx);
#pragma omp parallel for schedule(static) if (idx->numel > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < K; j++) gx[r * N + id[r * K + j]] += g[r * K + j];
}

static bool check_gather_args(orc_ctx *ctx, const orc_tensor *x, const orc_tensor *idx) {
    char a[96], b[96];
    if (x->dtype != ORC_F32 || idx->dtype != ORC_I32) {
        orc_fail(ctx, ORC_EDTYPE, "gather: x must be f32 and idx int32, got %s and %s", orc_dtype_name(x->dtype),
                 orc_dtype_name(idx->dtype));
        return false;
    }
    bool ok = x->ndim >= 1 && x->ndim == idx->ndim;
    for (int i = 0; ok && i < x->ndim - 1; i++) ok = x->shape[i] == idx->shape[i];
    if (!ok)
        orc_fail(ctx, ORC_ESHAPE, "gather: x %s and idx %s must have the same leading axes (all but the last)",
                 orc_shape_str(a, sizeof a, x->ndim, x->shape), orc_shape_str(b, sizeof b, idx->ndim, idx->shape));
    return ok;
}

orc_tensor *orc_gather(orc_ctx *ctx, orc_tensor *x, orc_tensor *idx) {
    orc_tensor *in[2] = {x, idx};
    if (!orc_op_begin(ctx, "gather", 2, in)) return NULL;
    if (!check_gather_args(ctx, x, idx)) return NULL;
    x = orc_contiguous(ctx, x);
    idx = orc_contiguous(ctx, idx);
    if (!x || !idx) return NULL;
    const int64_t N = x->shape[x->ndim - 1], K = idx->shape[idx->ndim - 1];
    const int32_t *id = orc_i32(idx);
    for (int64_t i = 0; i < idx->numel; i++) {
        if (id[i] >= 0 && (int64_t)id[i] < N) continue;
        char p[96], xs[96];
        return orc_fail(ctx, ORC_ERANGE, "gather: idx%s = %d is outside [0, %lld) (last axis of x %s)",
                        position_str(p, sizeof p, idx->ndim, idx->shape, i), (int)id[i], (long long)N,
                        orc_shape_str(xs, sizeof xs, x->ndim, x->shape));
    }
    orc_tensor *y = orc_new(ctx, ORC_F32, idx->ndim, idx->shape);
    if (!y) return NULL;
    const int64_t rows = K ? idx->numel / K : 0;
    const float *xd = orc_f32(x);
    float *yd = orc_f32(y);
#pragma omp parallel for schedule(static) if (idx->numel > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < K; j++) yd[r * K + j] = xd[r * N + id[r * K + j]];
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_tensor *rec[2] = {x, idx};
        orc_node *n = orc_record(ctx, "gather", y, gather_backward, 2, rec);
        if (!n) return NULL;
        n->iattr[0] = N;
        n->iattr[1] = K;
    }
    return y;
}
