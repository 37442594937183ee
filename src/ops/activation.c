/* Pointwise activations (silu, gelu in its exact erf and tanh forms, sigmoid,
 * tanh, relu) and the fused SwiGLU gate silu(gate) * up. Each is one node
 * whose backward multiplies the output gradient by the local derivative,
 * computed from the saved input and output. Sigmoid-based forms never
 * evaluate exp of a large positive number, so they stay finite for any
 * finite input; the gelu forms work in double so that x^3 and the erf tail
 * neither overflow nor cancel. Every element is independent, so results do
 * not depend on how the loop is split across threads. */
#include "orchard/ops.h"

#include <math.h>

#include "vec_exp.h"

enum act { ACT_SILU, ACT_GELU, ACT_GELU_TANH, ACT_SIGMOID, ACT_TANH, ACT_RELU };

#define PAR_MIN 32768 /* below this many elements threads cost more than they save */

static const double SQRT_2_OVER_PI = 0.79788456080286535588;
static const double INV_SQRT_2PI = 0.39894228040143267794;
static const double GELU_C = 0.044715;

/* 1 / (1 + e^-x) without evaluating e^|x| for large |x|. */
static inline float sigmoid_f(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

static inline double sigmoid_d(double x) {
    if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* x * Phi(x); erfc avoids the cancellation of 1 + erf for negative x. */
static inline float gelu_f(float x) {
    double xd = x;
    return (float)(0.5 * xd * erfc(-xd * M_SQRT1_2));
}

static inline float gelu_grad(float x) {
    double xd = x;
    return (float)(0.5 * erfc(-xd * M_SQRT1_2) + xd * INV_SQRT_2PI * exp(-0.5 * xd * xd));
}

/* 0.5 x (1 + tanh(u)) == x * sigmoid(2u), u = sqrt(2/pi) (x + c x^3). */
static inline float gelu_tanh_f(float x) {
    double xd = x;
    double u = SQRT_2_OVER_PI * (xd + GELU_C * xd * xd * xd);
    return (float)(xd * sigmoid_d(2.0 * u));
}

static inline float gelu_tanh_grad(float x) {
    double xd = x;
    double u = SQRT_2_OVER_PI * (xd + GELU_C * xd * xd * xd);
    double du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * xd * xd);
    double s = sigmoid_d(2.0 * u);
    return (float)(s + xd * s * (1.0 - s) * 2.0 * du);
}

static inline float act_forward(int kind, float x) {
    switch (kind) {
    case ACT_SILU: return x * sigmoid_f(x);
    case ACT_GELU: return gelu_f(x);
    case ACT_GELU_TANH: return gelu_tanh_f(x);
    case ACT_SIGMOID: return sigmoid_f(x);
    case ACT_TANH: return tanhf(x);
    default: return x > 0.0f ? x : 0.0f;
    }
}

/* dy/dx from the input x and the output y (whichever is cheaper). */
static inline float act_derivative(int kind, float x, float y) {
    switch (kind) {
    case ACT_SILU: {
        float s = sigmoid_f(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case ACT_GELU: return gelu_grad(x);
    case ACT_GELU_TANH: return gelu_tanh_grad(x);
    case ACT_SIGMOID: return y * (1.0f - y);
    case ACT_TANH: return 1.0f - y * y;
    default: return x > 0.0f ? 1.0f : 0.0f;
    }
}

static void act_backward(orc_ctx *ctx, orc_node *n) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const int kind = (int)n->iattr[0];
    const float *g = n->out->grad, *xd = orc_f32(n->in[0]), *yd = orc_f32(n->out);
    const int64_t N = n->out->numel;
#pragma omp parallel for schedule(static) if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) gx[i] += g[i] * act_derivative(kind, xd[i], yd[i]);
}

static orc_tensor *activation(orc_ctx *ctx, const char *op, int kind, orc_tensor *x) {
    if (!orc_op_begin(ctx, op, 1, &x)) return NULL;
    if (x->dtype != ORC_F32) {
        char b[128];
        return orc_fail(ctx, ORC_EDTYPE, "%s: input %s must be f32", op, orc_tensor_desc(b, sizeof b, x));
    }
    x = orc_contiguous(ctx, x);
    if (!x) return NULL;
    orc_tensor *y = orc_new(ctx, ORC_F32, x->ndim, x->shape);
    if (!y) return NULL;
    const float *xd = orc_f32(x);
    float *yd = orc_f32(y);
    const int64_t N = x->numel;
#pragma omp parallel for schedule(static) if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) yd[i] = act_forward(kind, xd[i]);
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_node *n = orc_record(ctx, op, y, act_backward, 1, &x);
        if (!n) return NULL;
        n->iattr[0] = kind;
    }
    return y;
}

orc_tensor *orc_silu(orc_ctx *ctx, orc_tensor *x) { return activation(ctx, "silu", ACT_SILU, x); }
orc_tensor *orc_gelu(orc_ctx *ctx, orc_tensor *x) { return activation(ctx, "gelu", ACT_GELU, x); }
orc_tensor *orc_gelu_tanh(orc_ctx *ctx, orc_tensor *x) { return activation(ctx, "gelu_tanh", ACT_GELU_TANH, x); }
orc_tensor *orc_sigmoid(orc_ctx *ctx, orc_tensor *x) { return activation(ctx, "sigmoid", ACT_SIGMOID, x); }
orc_tensor *orc_tanh(orc_ctx *ctx, orc_tensor *x) { return activation(ctx, "tanh", ACT_TANH, x); }
orc_tensor *orc_relu(orc_ctx *ctx, orc_tensor *x) { return activation(ctx, "relu", ACT_RELU, x); }

/* ---- swiglu: y = silu(gate) * up, one node ------------------------------ */

/* Elements per parallel work item of the swiglu loops. */
#define SWIGLU_BLOCK 8192

ORC_VEC_CLONES static void swiglu_span(const float *a, const float *b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = a[i] * orc_vsigmoid(a[i]) * b[i];
}

/* gg and gu may each be NULL (no gradient wanted). */
ORC_VEC_CLONES static void swiglu_grad_span(const float *g, const float *a, const float *b, float *gg, float *gu,
                                            int64_t n) {
    if (gg && gu) {
        for (int64_t i = 0; i < n; i++) {
            const float s = orc_vsigmoid(a[i]);
            gg[i] += g[i] * b[i] * s * (1.0f + a[i] * (1.0f - s));
            gu[i] += g[i] * a[i] * s;
        }
    } else if (gg) {
        for (int64_t i = 0; i < n; i++) {
            const float s = orc_vsigmoid(a[i]);
            gg[i] += g[i] * b[i] * s * (1.0f + a[i] * (1.0f - s));
        }
    } else if (gu) {
        for (int64_t i = 0; i < n; i++) gu[i] += g[i] * a[i] * orc_vsigmoid(a[i]);
    }
}

static void swiglu_backward(orc_ctx *ctx, orc_node *n) {
    orc_tensor *gate = n->in[0], *up = n->in[1];
    float *gg = orc_grad(ctx, gate), *gu = orc_grad(ctx, up);
    const float *g = n->out->grad, *a = orc_f32(gate), *b = orc_f32(up);
    const int64_t N = n->out->numel, nblk = (N + SWIGLU_BLOCK - 1) / SWIGLU_BLOCK;
#pragma omp parallel for schedule(dynamic, 1) if (N > PAR_MIN)
    for (int64_t bl = 0; bl < nblk; bl++) {
        const int64_t i0 = bl * SWIGLU_BLOCK, len = N - i0 < SWIGLU_BLOCK ? N - i0 : SWIGLU_BLOCK;
        swiglu_grad_span(g + i0, a + i0, b + i0, gg ? gg + i0 : NULL, gu ? gu + i0 : NULL, len);
    }
}

orc_tensor *orc_swiglu(orc_ctx *ctx, orc_tensor *gate, orc_tensor *up) {
    orc_tensor *in[2] = {gate, up};
    if (!orc_op_begin(ctx, "swiglu", 2, in)) return NULL;
    char b1[128], b2[128];
    if (gate->dtype != ORC_F32 || up->dtype != ORC_F32)
        return orc_fail(ctx, ORC_EDTYPE, "swiglu: gate %s and up %s must both be f32",
                        orc_tensor_desc(b1, sizeof b1, gate), orc_tensor_desc(b2, sizeof b2, up));
    if (!orc_same_shape(gate, up))
        return orc_fail(ctx, ORC_ESHAPE, "swiglu: gate %s and up %s must have the same shape",
                        orc_tensor_desc(b1, sizeof b1, gate), orc_tensor_desc(b2, sizeof b2, up));
    in[0] = gate = orc_contiguous(ctx, gate);
    in[1] = up = orc_contiguous(ctx, up);
    if (!gate || !up) return NULL;
    orc_tensor *y = orc_new(ctx, ORC_F32, gate->ndim, gate->shape);
    if (!y) return NULL;
    const float *a = orc_f32(gate), *b = orc_f32(up);
    float *yd = orc_f32(y);
    const int64_t N = y->numel, nblk = (N + SWIGLU_BLOCK - 1) / SWIGLU_BLOCK;
#pragma omp parallel for schedule(dynamic, 1) if (N > PAR_MIN)
    for (int64_t bl = 0; bl < nblk; bl++) {
        const int64_t i0 = bl * SWIGLU_BLOCK, len = N - i0 < SWIGLU_BLOCK ? N - i0 : SWIGLU_BLOCK;
        swiglu_span(a + i0, b + i0, yd + i0, len);
    }
    if (orc_needs_grad(ctx, 2, in) && !orc_record(ctx, "swiglu", y, swiglu_backward, 2, in)) return NULL;
    return y;
}
