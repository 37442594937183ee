/* Rotary position embedding (orc_rope), half-split layout as in GPT-NeoX and
 * Hugging Face Llama: in every head, dims i and i + D/2 form a pair that turns
 * by the angle pos * base^(-2i/D). The cos/sin table is built in double (at
 * base 500000 and long contexts the float angle would lose digits), then
 * stored as float. x is read through its strides (q and k are usually views
 * of one projection), the output is contiguous. Backward applies the inverse
 * rotation, element by element, so it needs no reduction. */
#include "orchard/ops.h"

#include <math.h>
#include <string.h>

typedef struct rope_table {
    float *cos_t; /* [T, D/2] */
    float *sin_t; /* [T, D/2] */
} rope_table;

static int64_t pos_at(const orc_tensor *pos, int64_t t) {
    return pos ? (int64_t)orc_i32(pos)[t * pos->stride[0]] : t;
}

static bool build_table(orc_ctx *ctx, const orc_tensor *pos, int64_t T, int64_t D, double base, rope_table *tb) {
    const int64_t half = D / 2;
    tb->cos_t = orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)(T * half + 1));
    tb->sin_t = orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)(T * half + 1));
    double *inv_freq = orc_arena_alloc(ctx->arena, sizeof(double) * (size_t)(half + 1));
    if (!tb->cos_t || !tb->sin_t || !inv_freq) {
        orc_fail(ctx, ORC_ENOMEM, "rope: out of memory for a [%lld, %lld] angle table", (long long)T,
                 (long long)half);
        return false;
    }
    for (int64_t i = 0; i < half; i++) inv_freq[i] = pow(base, -2.0 * (double)i / (double)D);
#pragma omp parallel for schedule(static) if (T * half > 4096)
    for (int64_t t = 0; t < T; t++) {
        const double p = (double)pos_at(pos, t);
        for (int64_t i = 0; i < half; i++) {
            const double ang = p * inv_freq[i];
            tb->cos_t[t * half + i] = (float)cos(ang);
            tb->sin_t[t * half + i] = (float)sin(ang);
        }
    }
    return true;
}

/* iattr: B, T, H, D. saved: the rope_table. */
static void rope_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const rope_table *tb = n->saved;
    const int64_t T = n->iattr[1], H = n->iattr[2], D = n->iattr[3], half = D / 2;
    const int64_t rows = n->iattr[0] * T * H;
    const float *g = n->out->grad;
#pragma omp parallel for schedule(static) if (rows * D > 32768)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t t = (r / H) % T;
        const float *c = tb->cos_t + t * half, *s = tb->sin_t + t * half;
        const float *gr = g + r * D;
        float *xr = gx + r * D;
        for (int64_t i = 0; i < half; i++) {
            const float a = gr[i], b = gr[i + half];
            xr[i] += a * c[i] + b * s[i];
            xr[i + half] += b * c[i] - a * s[i];
        }
    }
}

static bool check_args(orc_ctx *ctx, const orc_tensor *x, const orc_tensor *pos, float base) {
    char b1[96], b2[96];
    if (x->dtype != ORC_F32) {
        orc_fail(ctx, ORC_EDTYPE, "rope: x must be f32, got %s", orc_dtype_name(x->dtype));
        return false;
    }
    if (x->ndim != 4 || x->shape[3] % 2) {
        orc_fail(ctx, ORC_ESHAPE, "rope: x must be [B, T, H, D] with D even, got %s",
                 orc_shape_str(b1, sizeof b1, x->ndim, x->shape));
        return false;
    }
    if (!(base > 0.0f) || !isfinite(base)) {
        orc_fail(ctx, ORC_EINVAL, "rope: base must be a positive finite number, got %g", (double)base);
        return false;
    }
    if (pos && pos->dtype != ORC_I32) {
        orc_fail(ctx, ORC_EDTYPE, "rope: pos must be int32, got %s", orc_dtype_name(pos->dtype));
        return false;
    }
    if (pos && (pos->ndim != 1 || pos->shape[0] != x->shape[1])) {
        orc_fail(ctx, ORC_ESHAPE, "rope: pos must be [T] = [%lld] for x %s, got %s", (long long)x->shape[1],
                 orc_shape_str(b1, sizeof b1, x->ndim, x->shape), orc_shape_str(b2, sizeof b2, pos->ndim, pos->shape));
        return false;
    }
    return true;
}

orc_tensor *orc_rope(orc_ctx *ctx, orc_tensor *x, orc_tensor *pos, float base) {
    orc_tensor *in[2] = {x, pos};
    if (!orc_op_begin(ctx, "rope", pos ? 2 : 1, in)) return NULL;
    if (!check_args(ctx, x, pos, base)) return NULL;
    const int64_t B = x->shape[0], T = x->shape[1], H = x->shape[2], D = x->shape[3], half = D / 2;
    rope_table tb;
    if (!build_table(ctx, pos, T, D, (double)base, &tb)) return NULL;
    orc_tensor *y = orc_new(ctx, ORC_F32, 4, x->shape);
    if (!y) return NULL;
    const float *xd = orc_f32(x);
    float *yd = orc_f32(y);
    const int64_t s0 = x->stride[0], s1 = x->stride[1], s2 = x->stride[2], s3 = x->stride[3];
    const int64_t rows = B * T * H;
#pragma omp parallel for schedule(static) if (rows * D > 32768)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t b = r / (T * H), t = (r / H) % T, h = r % H;
        const float *xr = xd + b * s0 + t * s1 + h * s2;
        const float *c = tb.cos_t + t * half, *s = tb.sin_t + t * half;
        float *yr = yd + r * D;
        for (int64_t i = 0; i < half; i++) {
            const float a = xr[i * s3], bb = xr[(i + half) * s3];
            yr[i] = a * c[i] - bb * s[i];
            yr[i + half] = bb * c[i] + a * s[i];
        }
    }
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_node *n = orc_record(ctx, "rope", y, rope_backward, 1, &x);
        if (!n) return NULL;
        n->iattr[0] = B;
        n->iattr[1] = T;
        n->iattr[2] = H;
        n->iattr[3] = D;
        n->saved = orc_arena_alloc(ctx->arena, sizeof tb);
        if (!n->saved) return orc_fail(ctx, ORC_ENOMEM, "rope: out of memory");
        memcpy(n->saved, &tb, sizeof tb);
    }
    return y;
}
