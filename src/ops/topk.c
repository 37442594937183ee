/* topk along the last axis. Each row keeps a min-heap of its k best
 * (value, index) pairs, stored directly in the output row, so a scan costs
 * one compare per element plus O(log k) per replacement; a final in-place
 * heapsort leaves the row in descending order. The ranking is a strict total
 * order (larger value first, equal values by lower index, NaN below
 * everything including -inf, NaNs among themselves by index), so the chosen
 * set and its order are unique and do not depend on how rows are split
 * across threads. NaN is ranked rather than rejected so that a NaN score is
 * never picked over a real one. Only the values are differentiable; their
 * backward adds each gradient at its source index (distinct within a row). */
#include "orchard/ops.h"

#include <stdio.h>
#include <string.h>

#define PAR_MIN 32768 /* elements of work before threads pay off */

/* True when (a, ia) ranks strictly above (b, ib). */
static inline bool ranks_above(float a, int32_t ia, float b, int32_t ib) {
    const bool na = a != a, nb = b != b;
    if (na || nb) return na && nb ? ia < ib : nb;
    if (a != b) return a > b;
    return ia < ib;
}

static inline void swap_at(float *v, int32_t *ix, int64_t i, int64_t j) {
    float tv = v[i];
    v[i] = v[j];
    v[j] = tv;
    int32_t ti = ix[i];
    ix[i] = ix[j];
    ix[j] = ti;
}

/* Min-heap on ranks_above: the root is the lowest ranked of the kept pairs. */
static void sift_down(float *v, int32_t *ix, int64_t size, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, low = i;
        if (l < size && ranks_above(v[low], ix[low], v[l], ix[l])) low = l;
        if (l + 1 < size && ranks_above(v[low], ix[low], v[l + 1], ix[l + 1])) low = l + 1;
        if (low == i) return;
        swap_at(v, ix, i, low);
        i = low;
    }
}

static void sift_up(float *v, int32_t *ix, int64_t i) {
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!ranks_above(v[p], ix[p], v[i], ix[i])) return;
        swap_at(v, ix, i, p);
        i = p;
    }
}

/* The k best of x[0..n) into v/ix (k slots each), best first. */
static void topk_row(const float *x, int64_t n, int64_t k, float *v, int32_t *ix) {
    for (int64_t i = 0; i < k; i++) {
        v[i] = x[i];
        ix[i] = (int32_t)i;
        sift_up(v, ix, i);
    }
    /* Most elements lose to the root; `<=` rejects them with one compare
     * (exact without NaN, since a tie loses to the kept lower index; a NaN
     * on either side makes it false and falls through to the full check). */
    float worst = v[0];
    for (int64_t i = k; i < n; i++) {
        const float xi = x[i];
        if (xi <= worst || !ranks_above(xi, (int32_t)i, v[0], ix[0])) continue;
        v[0] = xi;
        ix[0] = (int32_t)i;
        sift_down(v, ix, k, 0);
        worst = v[0];
    }
    /* Heapsort: moving the lowest to the back each time leaves the row in
     * descending rank order. */
    for (int64_t size = k; size > 1; size--) {
        swap_at(v, ix, 0, size - 1);
        sift_down(v, ix, size - 1, 0);
    }
}

/* in[0] = x; saved = the indices tensor; iattr[0] = N, iattr[1] = k. */
static void topk_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const orc_tensor *ind = n->saved;
    const int64_t N = n->iattr[0], k = n->iattr[1], rows = ind->numel / k;
    const float *g = n->out->grad;
    const int32_t *id = orc_i32(ind);
#pragma omp parallel for schedule(static) if (ind->numel > PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < k; j++) gx[r * N + id[r * k + j]] += g[r * k + j];
}

static bool check_topk_args(orc_ctx *ctx, const orc_tensor *x, int64_t k) {
    char s[96];
    if (x->dtype != ORC_F32) {
        orc_fail(ctx, ORC_EDTYPE, "topk: x must be f32, got %s", orc_dtype_name(x->dtype));
        return false;
    }
    if (x->ndim < 1) {
        orc_fail(ctx, ORC_ESHAPE, "topk: x must have at least one axis, got a scalar");
        return false;
    }
    const int64_t N = x->shape[x->ndim - 1];
    if (k < 1 || k > N) {
        orc_fail(ctx, ORC_EINVAL, "topk: k = %lld must be in [1, %lld] for x %s", (long long)k, (long long)N,
                 orc_shape_str(s, sizeof s, x->ndim, x->shape));
        return false;
    }
    if (N > INT32_MAX) {
        orc_fail(ctx, ORC_ESHAPE, "topk: last axis of x %s is too long for int32 indices",
                 orc_shape_str(s, sizeof s, x->ndim, x->shape));
        return false;
    }
    return true;
}

bool orc_topk(orc_ctx *ctx, orc_tensor *x, int64_t k, orc_tensor **values, orc_tensor **indices) {
    if (values) *values = NULL;
    if (indices) *indices = NULL;
    if (!orc_op_begin(ctx, "topk", 1, &x)) return false;
    if (!values || !indices) {
        orc_fail(ctx, ORC_EINVAL, "topk: values and indices must both be given");
        return false;
    }
    if (!check_topk_args(ctx, x, k)) return false;
    x = orc_contiguous(ctx, x);
    if (!x) return false;
    const int64_t N = x->shape[x->ndim - 1], rows = x->numel / N;
    int64_t shape[ORC_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = k;
    orc_tensor *v = orc_new(ctx, ORC_F32, x->ndim, shape);
    orc_tensor *ind = orc_new(ctx, ORC_I32, x->ndim, shape);
    if (!v || !ind) return false;
    const float *xd = orc_f32(x);
    float *vd = orc_f32(v);
    int32_t *id = orc_i32(ind);
#pragma omp parallel for schedule(static) if (rows > 1 && x->numel > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) topk_row(xd + r * N, N, k, vd + r * k, id + r * k);
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_node *n = orc_record(ctx, "topk", v, topk_backward, 1, &x);
        if (!n) return false;
        n->saved = ind;
        n->iattr[0] = N;
        n->iattr[1] = k;
    }
    *values = v;
    *indices = ind;
    return true;
}
