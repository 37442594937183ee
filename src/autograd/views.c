/* View ops: reshape, transpose, slice (no copy), and contiguous (a copy).
 * A view's gradient is a contiguous buffer of the view's own shape; its
 * backward adds each element into the parent's gradient at the position the
 * element came from. The node stores that map as an offset plus one stride
 * per view axis, measured in the parent's contiguous gradient layout. */
#include "orchard/ops.h"

#include <string.h>

static int norm_axis(int axis, int ndim) { return axis < 0 ? axis + ndim : axis; }

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i];
    }
}

/* iattr[0] = offset into parent grad; iattr[1..4] = strides per view axis. */
static void view_backward(orc_ctx *ctx, orc_node *n) {
    orc_tensor *v = n->out, *p = n->in[0];
    float *gp = orc_grad(ctx, p);
    if (!gp) return;
    const float *gv = v->grad;
    const int64_t off = n->iattr[0];
    const int64_t *st = &n->iattr[1];
    /* A reshape (or a leading slice) maps the view's gradient onto a
     * contiguous run of the parent's: one flat, parallel add. */
    int64_t expect = 1;
    bool flat = true;
    for (int i = v->ndim - 1; i >= 0; i--) {
        if (v->shape[i] != 1 && st[i] != expect) flat = false;
        expect *= v->shape[i];
    }
    if (flat) {
        const int64_t N = v->numel;
        float *dst = gp + off;
#pragma omp parallel for schedule(static) if (N > 32768)
        for (int64_t i = 0; i < N; i++) dst[i] += gv[i];
        return;
    }
    int64_t k = 0;
    for (int64_t i0 = 0; i0 < v->shape[0]; i0++)
        for (int64_t i1 = 0; i1 < v->shape[1]; i1++)
            for (int64_t i2 = 0; i2 < v->shape[2]; i2++)
                for (int64_t i3 = 0; i3 < v->shape[3]; i3++)
                    gp[off + i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3]] += gv[k++];
}

static orc_tensor *view_header(orc_ctx *ctx, const orc_tensor *x) {
    orc_tensor *v = orc_arena_alloc(ctx->arena, sizeof *v);
    if (!v) return orc_fail(ctx, ORC_ENOMEM, "view: out of memory");
    *v = *x;
    v->grad = NULL;
    v->requires_grad = false;
    v->is_param = false;
    v->node = NULL;
    return v;
}

static void record_view(orc_ctx *ctx, const char *op, orc_tensor *v, orc_tensor *x, int64_t off,
                        const int64_t *gstride) {
    if (!orc_needs_grad(ctx, 1, &x)) return;
    orc_node *n = orc_record(ctx, op, v, view_backward, 1, &x);
    if (!n) return;
    n->iattr[0] = off;
    for (int i = 0; i < ORC_MAX_DIMS; i++) n->iattr[1 + i] = i < v->ndim ? gstride[i] : 0;
}

orc_tensor *orc_reshape(orc_ctx *ctx, orc_tensor *x, int ndim, const int64_t *shape) {
    if (!orc_op_begin(ctx, "reshape", 1, &x)) return NULL;
    if (ndim < 0 || ndim > ORC_MAX_DIMS) return orc_fail(ctx, ORC_ESHAPE, "reshape: %d dimensions requested", ndim);
    if (!orc_is_contiguous(x))
        return orc_fail(ctx, ORC_EINVAL, "reshape: input %s is not contiguous; call orc_contiguous first",
                        x->name ? x->name : "");
    int64_t sh[ORC_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        sh[i] = shape[i];
        if (sh[i] == -1) {
            if (infer >= 0) return orc_fail(ctx, ORC_ESHAPE, "reshape: more than one -1 in the new shape");
            infer = i;
        } else if (sh[i] < 0) {
            return orc_fail(ctx, ORC_ESHAPE, "reshape: negative dimension %lld", (long long)sh[i]);
        } else {
            known *= sh[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || x->numel % known) {
            char b[96];
            return orc_fail(ctx, ORC_ESHAPE, "reshape: cannot infer -1 for %lld elements into %s",
                            (long long)x->numel, orc_shape_str(b, sizeof b, ndim, shape));
        }
        sh[infer] = x->numel / known;
        known *= sh[infer];
    }
    if (known != x->numel) {
        char a[96], b[96];
        return orc_fail(ctx, ORC_ESHAPE, "reshape: %s has %lld elements, new shape %s has %lld",
                        orc_shape_str(a, sizeof a, x->ndim, x->shape), (long long)x->numel,
                        orc_shape_str(b, sizeof b, ndim, sh), (long long)known);
    }
    orc_tensor *v = view_header(ctx, x);
    if (!v) return NULL;
    v->ndim = ndim;
    for (int i = 0; i < ORC_MAX_DIMS; i++) {
        v->shape[i] = i < ndim ? sh[i] : 1;
        v->stride[i] = 0;
    }
    contiguous_strides(ndim, v->shape, v->stride);
    int64_t gs[ORC_MAX_DIMS] = {0};
    contiguous_strides(ndim, v->shape, gs);
    record_view(ctx, "reshape", v, x, 0, gs);
    return orc_ctx_ok(ctx) ? v : NULL;
}

orc_tensor *orc_transpose(orc_ctx *ctx, orc_tensor *x, int axis0, int axis1) {
    if (!orc_op_begin(ctx, "transpose", 1, &x)) return NULL;
    int a = norm_axis(axis0, x->ndim), b = norm_axis(axis1, x->ndim);
    if (a < 0 || a >= x->ndim || b < 0 || b >= x->ndim)
        return orc_fail(ctx, ORC_EINVAL, "transpose: axes %d, %d out of range for %d dimensions", axis0, axis1,
                        x->ndim);
    orc_tensor *v = view_header(ctx, x);
    if (!v) return NULL;
    int64_t t = v->shape[a]; v->shape[a] = v->shape[b]; v->shape[b] = t;
    t = v->stride[a]; v->stride[a] = v->stride[b]; v->stride[b] = t;
    int64_t gs[ORC_MAX_DIMS] = {0};
    contiguous_strides(x->ndim, x->shape, gs);
    t = gs[a]; gs[a] = gs[b]; gs[b] = t;
    record_view(ctx, "transpose", v, x, 0, gs);
    return orc_ctx_ok(ctx) ? v : NULL;
}

orc_tensor *orc_slice(orc_ctx *ctx, orc_tensor *x, int axis, int64_t start, int64_t len) {
    if (!orc_op_begin(ctx, "slice", 1, &x)) return NULL;
    int a = norm_axis(axis, x->ndim);
    if (a < 0 || a >= x->ndim)
        return orc_fail(ctx, ORC_EINVAL, "slice: axis %d out of range for %d dimensions", axis, x->ndim);
    if (start < 0 || len < 0 || start + len > x->shape[a])
        return orc_fail(ctx, ORC_ERANGE, "slice: [%lld, %lld) outside axis %d of length %lld", (long long)start,
                        (long long)(start + len), a, (long long)x->shape[a]);
    orc_tensor *v = view_header(ctx, x);
    if (!v) return NULL;
    v->shape[a] = len;
    v->numel = x->numel / (x->shape[a] ? x->shape[a] : 1) * len;
    if (x->shape[a] == 0) v->numel = 0;
    v->data = (char *)x->data + start * x->stride[a] * orc_dtype_size(x->dtype);
    int64_t gs[ORC_MAX_DIMS] = {0};
    contiguous_strides(x->ndim, x->shape, gs);
    record_view(ctx, "slice", v, x, start * gs[a], gs);
    return orc_ctx_ok(ctx) ? v : NULL;
}

static void contiguous_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const float *g = n->out->grad;
    for (int64_t i = 0; i < n->out->numel; i++) gx[i] += g[i];
}

orc_tensor *orc_contiguous(orc_ctx *ctx, orc_tensor *x) {
    if (!orc_op_begin(ctx, "contiguous", 1, &x)) return NULL;
    if (orc_is_contiguous(x)) return x;
    orc_tensor *y = orc_new(ctx, x->dtype, x->ndim, x->shape);
    if (!y) return NULL;
    if (orc_copy(y, x, &ctx->err) != ORC_OK) return NULL;
    /* Both gradients are contiguous buffers of the same shape, so the copy's
     * backward is a plain add. */
    if (orc_needs_grad(ctx, 1, &x)) orc_record(ctx, "contiguous", y, contiguous_backward, 1, &x);
    return orc_ctx_ok(ctx) ? y : NULL;
}
