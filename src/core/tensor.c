/* Tensor construction, layout queries and strided copies (see
 * orchard/tensor.h). Nothing here knows about autograd. */
#include "orchard/tensor.h"

#include <stdio.h>
#include <string.h>

const char *orc_dtype_name(orc_dtype dt) {
    switch (dt) {
    case ORC_F32: return "f32";
    case ORC_I32: return "i32";
    }
    return "?";
}

static orc_status check_shape(int ndim, const int64_t *shape, int64_t *numel, orc_error *err) {
    if (ndim < 0 || ndim > ORC_MAX_DIMS)
        return orc_error_set(err, ORC_ESHAPE, "tensor: %d dimensions requested, orchard supports 0 to %d", ndim,
                             ORC_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            char buf[96];
            return orc_error_set(err, ORC_ESHAPE, "tensor: negative dimension in shape %s",
                                 orc_shape_str(buf, sizeof buf, ndim, shape));
        }
        if (shape[i] > 0 && n > (INT64_MAX / 8) / shape[i]) {
            char buf[96];
            return orc_error_set(err, ORC_ESHAPE, "tensor: shape %s is too large",
                                 orc_shape_str(buf, sizeof buf, ndim, shape));
        }
        n *= shape[i];
    }
    *numel = n;
    return ORC_OK;
}

static void set_contiguous_layout(orc_tensor *t, int ndim, const int64_t *shape) {
    t->ndim = ndim;
    for (int i = 0; i < ORC_MAX_DIMS; i++) {
        t->shape[i] = i < ndim ? shape[i] : 1;
        t->stride[i] = 0;
    }
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}

orc_tensor *orc_tensor_wrap(orc_arena *a, orc_dtype dt, int ndim, const int64_t *shape, void *data, orc_error *err) {
    int64_t numel = 0;
    if (check_shape(ndim, shape, &numel, err) != ORC_OK) return NULL;
    orc_tensor *t = orc_arena_calloc(a, 1, sizeof *t);
    if (!t) {
        orc_error_set(err, ORC_ENOMEM, "tensor: out of memory for a tensor header");
        return NULL;
    }
    t->dtype = dt;
    t->device = ORC_DEV_CPU;
    set_contiguous_layout(t, ndim, shape);
    t->numel = numel;
    t->data = data;
    return t;
}

orc_tensor *orc_tensor_new(orc_arena *a, orc_dtype dt, int ndim, const int64_t *shape, orc_error *err) {
    orc_tensor *t = orc_tensor_wrap(a, dt, ndim, shape, NULL, err);
    if (!t) return NULL;
    t->data = orc_arena_alloc(a, (size_t)(t->numel * orc_dtype_size(dt)));
    if (!t->data) {
        char buf[96];
        orc_error_set(err, ORC_ENOMEM, "tensor: out of memory for shape %s (%lld bytes)",
                      orc_shape_str(buf, sizeof buf, ndim, shape), (long long)(t->numel * orc_dtype_size(dt)));
        return NULL;
    }
    return t;
}

orc_tensor *orc_tensor_zeros(orc_arena *a, orc_dtype dt, int ndim, const int64_t *shape, orc_error *err) {
    orc_tensor *t = orc_tensor_new(a, dt, ndim, shape, err);
    if (t) memset(t->data, 0, (size_t)(t->numel * orc_dtype_size(dt)));
    return t;
}

orc_tensor *orc_tensor_clone(orc_arena *a, const orc_tensor *src, orc_error *err) {
    orc_tensor *t = orc_tensor_new(a, src->dtype, src->ndim, src->shape, err);
    if (!t) return NULL;
    if (orc_copy(t, src, err) != ORC_OK) return NULL;
    t->name = src->name;
    return t;
}

orc_tensor *orc_param_new(orc_arena *a, int ndim, const int64_t *shape, const char *name, orc_error *err) {
    orc_tensor *t = orc_tensor_zeros(a, ORC_F32, ndim, shape, err);
    if (!t) return NULL;
    t->grad = orc_arena_calloc(a, (size_t)t->numel, sizeof(float));
    if (!t->grad) {
        orc_error_set(err, ORC_ENOMEM, "param %s: out of memory for the gradient", name ? name : "?");
        return NULL;
    }
    t->requires_grad = true;
    t->is_param = true;
    t->name = orc_arena_strdup(a, name);
    return t;
}

bool orc_is_contiguous(const orc_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

bool orc_same_shape(const orc_tensor *a, const orc_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

int64_t orc_offset(const orc_tensor *t, const int64_t *idx) {
    int64_t o = 0;
    for (int i = 0; i < t->ndim; i++) o += idx[i] * t->stride[i];
    return o;
}

const char *orc_tensor_desc(char *buf, size_t cap, const orc_tensor *t) {
    char sh[96];
    snprintf(buf, cap, "%s %s %s", t->name ? t->name : "tensor", orc_shape_str(sh, sizeof sh, t->ndim, t->shape),
             orc_dtype_name(t->dtype));
    return buf;
}

/* Visit every element in row-major order: calls f(dst_off, src_off). */
#define FOR_EACH_4D(t, body)                                                   \
    for (int64_t i0 = 0; i0 < (t)->shape[0]; i0++)                             \
        for (int64_t i1 = 0; i1 < (t)->shape[1]; i1++)                         \
            for (int64_t i2 = 0; i2 < (t)->shape[2]; i2++)                     \
                for (int64_t i3 = 0; i3 < (t)->shape[3]; i3++) { body }

static inline int64_t off4(const orc_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    return i0 * t->stride[0] + i1 * t->stride[1] + i2 * t->stride[2] + i3 * t->stride[3];
}

void orc_fill(orc_tensor *t, float value) {
    if (t->dtype == ORC_F32) {
        float *d = orc_f32(t);
        FOR_EACH_4D(t, d[off4(t, i0, i1, i2, i3)] = value;)
    } else {
        int32_t *d = orc_i32(t);
        FOR_EACH_4D(t, d[off4(t, i0, i1, i2, i3)] = (int32_t)value;)
    }
}

orc_status orc_copy(orc_tensor *dst, const orc_tensor *src, orc_error *err) {
    if (!orc_same_shape(dst, src) || dst->dtype != src->dtype) {
        char a[128], b[128];
        return orc_error_set(err, ORC_ESHAPE, "copy: destination %s does not match source %s",
                             orc_tensor_desc(a, sizeof a, dst), orc_tensor_desc(b, sizeof b, src));
    }
    if (orc_is_contiguous(dst) && orc_is_contiguous(src)) {
        memmove(dst->data, src->data, (size_t)(src->numel * orc_dtype_size(src->dtype)));
        return ORC_OK;
    }
    const int32_t *s = src->data; /* 4-byte elements for both dtypes */
    int32_t *d = dst->data;
    FOR_EACH_4D(src, d[off4(dst, i0, i1, i2, i3)] = s[off4(src, i0, i1, i2, i3)];)
    return ORC_OK;
}

void orc_read_f32(const orc_tensor *t, float *out) {
    int64_t k = 0;
    if (t->dtype == ORC_F32) {
        const float *s = orc_f32(t);
        FOR_EACH_4D(t, out[k++] = s[off4(t, i0, i1, i2, i3)];)
    } else {
        const int32_t *s = orc_i32(t);
        FOR_EACH_4D(t, out[k++] = (float)s[off4(t, i0, i1, i2, i3)];)
    }
}
