/* Quantized matrices (orchard/quant.h): building one from floats or as a
 * view of existing ggml blocks, row dequantization, and orc_q_linear, the
 * inference op that applies one to an orc_tensor activation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/ops.h"
#include "orchard/quant.h"
#include "quant_internal.h"

size_t orc_q_row_bytes(orc_ggml_type type, int64_t n) {
    if (n < 0 || n % ORC_Q_BLOCK) return 0;
    if (type == ORC_GGML_Q8_0) return (size_t)(n / ORC_Q_BLOCK) * ORC_Q8_0_BYTES;
    if (type == ORC_GGML_Q4_0) return (size_t)(n / ORC_Q_BLOCK) * ORC_Q4_0_BYTES;
    if (type == ORC_Q_PAL4) return (size_t)(n / 2);
    if (type == ORC_Q_PAL2) return (size_t)(n / 4);
    return 0;
}

size_t orc_qmat_bytes(const orc_qmat *q) {
    size_t n = q->row_bytes * (size_t)q->rows;
    if (orc_q_type_is_pal(q->type) && q->group > 0)
        n += (size_t)(q->cols / q->group) * ((size_t)q->entries + sizeof(float));
    return n;
}

orc_qmat orc_qmat_alias(const orc_qmat *q) {
    orc_qmat a = *q;
    a.owned = NULL;
    a.owned_lut = NULL;
    a.owned_packed = NULL;
    return a;
}

static orc_status check_shape(orc_ggml_type type, int64_t rows, int64_t cols, const char *name, orc_error *err) {
    if (type != ORC_GGML_Q8_0 && type != ORC_GGML_Q4_0)
        return orc_error_set(err, ORC_EINVAL, "quant: %s: type %s is not Q8_0 or Q4_0", name,
                             orc_q_type_name(type));
    if (rows <= 0 || cols <= 0 || cols % ORC_Q_BLOCK)
        return orc_error_set(err, ORC_EINVAL, "quant: %s: shape [%lld, %lld] needs positive sizes and a row length "
                             "that is a multiple of %d",
                             name, (long long)rows, (long long)cols, ORC_Q_BLOCK);
    return ORC_OK;
}

orc_status orc_qmat_quantize(orc_qmat *q, orc_ggml_type type, const float *w, int64_t rows, int64_t cols,
                             orc_error *err) {
    memset(q, 0, sizeof *q);
    orc_status st = check_shape(type, rows, cols, "matrix", err);
    if (st != ORC_OK) return st;
    const size_t rb = orc_q_row_bytes(type, cols);
    uint8_t *buf = aligned_alloc(64, (rb * (size_t)rows + 63) / 64 * 64);
    if (!buf) return orc_error_set(err, ORC_ENOMEM, "quant: out of memory for a [%lld, %lld] matrix",
                                   (long long)rows, (long long)cols);
    st = orc_ggml_quantize(type, w, buf, rows * cols, err);
    if (st != ORC_OK) {
        free(buf);
        return st;
    }
    *q = (orc_qmat){.type = type, .rows = rows, .cols = cols, .row_bytes = rb, .data = buf, .owned = buf};
    return ORC_OK;
}

orc_status orc_qmat_view(orc_qmat *q, orc_ggml_type type, int64_t rows, int64_t cols, const void *data,
                         size_t nbytes, const char *name, orc_error *err) {
    memset(q, 0, sizeof *q);
    orc_status st = check_shape(type, rows, cols, name, err);
    if (st != ORC_OK) return st;
    const size_t rb = orc_q_row_bytes(type, cols);
    if (nbytes != rb * (size_t)rows)
        return orc_error_set(err, ORC_EFORMAT, "quant: %s: %zu bytes, but [%lld, %lld] in %s needs %zu (%lld blocks)",
                             name, nbytes, (long long)rows, (long long)cols, orc_ggml_type_name(type),
                             rb * (size_t)rows, (long long)(rows * cols / ORC_Q_BLOCK));
    *q = (orc_qmat){.type = type, .rows = rows, .cols = cols, .row_bytes = rb, .data = data};
    return ORC_OK;
}

void orc_qmat_release(orc_qmat *q) {
    if (!q) return;
    free(q->owned);
    free(q->owned_lut);
    free(q->owned_packed);
    memset(q, 0, sizeof *q);
}

void orc_qmat_dequant_row(const orc_qmat *q, int64_t r, float *out) {
    if (orc_q_type_is_pal(q->type))
        orc_q_pal_dequant_row(q, r, out);
    else
        orc_ggml_dequantize(q->type, q->data + (size_t)r * q->row_bytes, out, q->cols, NULL);
}

orc_tensor *orc_qmat_embedding(orc_ctx *ctx, const orc_qmat *e, const orc_tensor *ids) {
    const int64_t B = ids->shape[0], T = ids->shape[1];
    orc_tensor *h = orc_new(ctx, ORC_F32, 3, ORC_SHAPE(B, T, e->cols));
    if (!h) return NULL;
    const int32_t *id = orc_i32(ids);
    for (int64_t i = 0; i < B * T; i++) {
        if (id[i] < 0 || id[i] >= e->rows)
            return orc_fail(ctx, ORC_ERANGE, "quant llm: token id %d at position %lld is outside [0, %lld)", id[i],
                            (long long)i, (long long)e->rows);
        orc_qmat_dequant_row(e, id[i], orc_f32(h) + i * e->cols);
    }
    return h;
}

void orc_qmat_dequantize(const orc_qmat *q, float *out) {
    for (int64_t r = 0; r < q->rows; r++) orc_qmat_dequant_row(q, r, out + r * q->cols);
}

orc_tensor *orc_q_linear(orc_ctx *ctx, orc_tensor *x, const orc_qmat *w) {
    orc_tensor *y = NULL;
    return orc_q_linear_many(ctx, x, &w, 1, &y) ? y : NULL;
}

/* The checks of one weight against x; NULL (ctx's error set) when it fails. */
static bool linear_fits(orc_ctx *ctx, const orc_tensor *x, const orc_qmat *w) {
    char b[96];
    if (!w || !w->data) {
        orc_fail(ctx, ORC_EINVAL, "q_linear: no quantized weight");
        return false;
    }
    if (!orc_q_type_is_pal(w->type) && w->type != ORC_GGML_Q8_0 && w->type != ORC_GGML_Q4_0) {
        orc_fail(ctx, ORC_EINVAL, "q_linear: a [%lld, %lld] %s weight has no quantized kernel", (long long)w->rows,
                 (long long)w->cols, orc_q_type_name(w->type));
        return false;
    }
    if (x->dtype != ORC_F32 || x->ndim < 1 || x->shape[x->ndim - 1] != w->cols) {
        orc_fail(ctx, ORC_ESHAPE, "q_linear: x %s %s does not fit a [%lld, %lld] %s weight",
                 orc_shape_str(b, sizeof b, x->ndim, x->shape), orc_dtype_name(x->dtype), (long long)w->rows,
                 (long long)w->cols, orc_q_type_name(w->type));
        return false;
    }
    return true;
}

bool orc_q_linear_many(orc_ctx *ctx, orc_tensor *x, const orc_qmat *const *w, int n, orc_tensor **y) {
    for (int i = 0; i < n; i++) y[i] = NULL;
    if (!orc_op_begin(ctx, "q_linear", 1, &x)) return false;
    if (n < 1 || n > ORC_Q_MANY_MAX) {
        orc_fail(ctx, ORC_EINVAL, "q_linear: %d weights at once, 1 to %d", n, ORC_Q_MANY_MAX);
        return false;
    }
    for (int i = 0; i < n; i++)
        if (!linear_fits(ctx, x, w[i])) return false;
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_fail(ctx, ORC_EINVAL, "q_linear: an inference op; x requires a gradient outside no-grad mode");
        return false;
    }
    x = orc_contiguous(ctx, x);
    if (!x) return false;
    const int64_t C = w[0]->cols, T = x->numel / C;
    float *out[ORC_Q_MANY_MAX];
    for (int i = 0; i < n; i++) {
        int64_t shape[ORC_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[x->ndim - 1] = w[i]->rows;
        if (!(y[i] = orc_new(ctx, ORC_F32, x->ndim, shape))) return false;
        out[i] = orc_f32(y[i]);
    }
    /* x is rounded to Q8_0 once for all n weights */
    const size_t xb = orc_q_row_bytes(ORC_GGML_Q8_0, C);
    uint8_t *xq = orc_arena_alloc(ctx->arena, xb * (size_t)(T > 0 ? T : 1));
    if (!xq) {
        orc_fail(ctx, ORC_ENOMEM, "q_linear: out of memory for %lld activation rows", (long long)T);
        return false;
    }
    orc_q8_quantize_rows(orc_f32(x), T, C, xq);
    orc_q_matmul_q8_many(w, n, xq, T, out);
    return true;
}
