/* orchard/ops.h: differentiable tensor operations.
 *
 * Every op here has a forward and a hand-written backward (checked against
 * central finite differences in tests/ops). Ops allocate their outputs in
 * ctx->arena, record themselves on ctx's tape when a gradient is needed, and
 * return NULL with ctx->err set on bad input (see orchard/autograd.h). This
 * list is the op interface models are written against; a backend (the CPU
 * one now, CUDA later) supplies the kernels under it, chosen by the inputs'
 * device tag.
 *
 * Conventions: shapes are row-major, the last axis is the fastest. Axis
 * arguments accept negative values counted from the end. Ops that need
 * contiguous input copy a strided view first (that copy is itself an op, so
 * gradients still flow). Results are bit-identical for any thread count:
 * work is split by output element and every reduction runs in a fixed order. */
#ifndef ORCHARD_OPS_H
#define ORCHARD_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "orchard/autograd.h"
#include "orchard/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- views and layout (share memory, no copy) ------------------------ */

/* New shape with the same numel; one dimension may be -1. x must be contiguous
 * (call orc_contiguous first otherwise). */
orc_tensor *orc_reshape(orc_ctx *ctx, orc_tensor *x, int ndim, const int64_t *shape);
/* Swap two axes (a strided view). */
orc_tensor *orc_transpose(orc_ctx *ctx, orc_tensor *x, int axis0, int axis1);
/* x[..., start:start+len, ...] along axis (a strided view). */
orc_tensor *orc_slice(orc_ctx *ctx, orc_tensor *x, int axis, int64_t start, int64_t len);
/* x itself when already contiguous, else a contiguous copy. */
orc_tensor *orc_contiguous(orc_ctx *ctx, orc_tensor *x);

/* ---- elementwise with broadcasting (numpy rules, aligned at the right) -- */

orc_tensor *orc_add(orc_ctx *ctx, orc_tensor *a, orc_tensor *b);
orc_tensor *orc_sub(orc_ctx *ctx, orc_tensor *a, orc_tensor *b);
orc_tensor *orc_mul(orc_ctx *ctx, orc_tensor *a, orc_tensor *b);
orc_tensor *orc_scale(orc_ctx *ctx, orc_tensor *x, float s);       /* s * x */
orc_tensor *orc_add_scalar(orc_ctx *ctx, orc_tensor *x, float s);  /* x + s */

/* ---- activations ------------------------------------------------------ */

orc_tensor *orc_silu(orc_ctx *ctx, orc_tensor *x);
orc_tensor *orc_gelu(orc_ctx *ctx, orc_tensor *x);       /* exact, erf form (PyTorch default) */
orc_tensor *orc_gelu_tanh(orc_ctx *ctx, orc_tensor *x);  /* tanh approximation */
orc_tensor *orc_sigmoid(orc_ctx *ctx, orc_tensor *x);
orc_tensor *orc_tanh(orc_ctx *ctx, orc_tensor *x);
orc_tensor *orc_relu(orc_ctx *ctx, orc_tensor *x);
/* silu(gate) * up, fused; gate and up have the same shape. */
orc_tensor *orc_swiglu(orc_ctx *ctx, orc_tensor *gate, orc_tensor *up);

/* ---- reductions -------------------------------------------------------- */

orc_tensor *orc_sum(orc_ctx *ctx, orc_tensor *x, int axis, bool keepdim);
orc_tensor *orc_mean(orc_ctx *ctx, orc_tensor *x, int axis, bool keepdim);
orc_tensor *orc_sum_all(orc_ctx *ctx, orc_tensor *x);   /* scalar (ndim 0) */
orc_tensor *orc_mean_all(orc_ctx *ctx, orc_tensor *x);  /* scalar (ndim 0) */

/* ---- softmax family (last axis) ---------------------------------------- */

orc_tensor *orc_softmax(orc_ctx *ctx, orc_tensor *x);
orc_tensor *orc_log_softmax(orc_ctx *ctx, orc_tensor *x);

/* ---- normalisation (last axis) ----------------------------------------- */

/* x * rsqrt(mean(x^2) + eps) * weight; weight [D] may be NULL (no scale). */
orc_tensor *orc_rmsnorm(orc_ctx *ctx, orc_tensor *x, orc_tensor *weight, float eps);
/* (x - mean) * rsqrt(var + eps) * weight + bias; weight and bias [D], each may be NULL. */
orc_tensor *orc_layernorm(orc_ctx *ctx, orc_tensor *x, orc_tensor *weight, orc_tensor *bias, float eps);

/* ---- matrix products (CBLAS sgemm) -------------------------------------- */

/* op(a) @ op(b), op = transpose of the last two axes when the flag is set.
 * a: [..., M, K] (after op), b: [..., K, N] with the same leading batch axes,
 * or b 2-D and shared by every batch. Output [..., M, N]. */
orc_tensor *orc_matmul(orc_ctx *ctx, orc_tensor *a, orc_tensor *b, bool trans_a, bool trans_b);
/* y = x @ w^T + bias. x [..., in], w [out, in] (the PyTorch / Hugging Face
 * layout), bias [out] or NULL. Output [..., out]. */
orc_tensor *orc_linear(orc_ctx *ctx, orc_tensor *x, orc_tensor *w, orc_tensor *bias);

/* ---- lookup and indexing ------------------------------------------------ */

/* table [V, D], ids int32 of any shape -> [ids..., D]. An id outside [0, V) is
 * an ORC_ERANGE error naming its position. */
orc_tensor *orc_embedding(orc_ctx *ctx, orc_tensor *table, orc_tensor *ids);
/* Rows of x along axis 0: x [N, ...], idx int32 [M] -> [M, ...]. */
orc_tensor *orc_index_select(orc_ctx *ctx, orc_tensor *x, orc_tensor *idx);
/* Sum rows into n buckets: src [M, ...], idx int32 [M] in [0, n) -> [n, ...]
 * with out[idx[m]] += src[m] (index_add; MoE combine). */
orc_tensor *orc_scatter_add(orc_ctx *ctx, orc_tensor *src, orc_tensor *idx, int64_t n);
/* Along the last axis: x [..., N], idx int32 [..., K] -> [..., K], out[.., j] = x[.., idx[.., j]]. */
orc_tensor *orc_gather(orc_ctx *ctx, orc_tensor *x, orc_tensor *idx);
/* The k largest along the last axis, in descending order (ties: lower index
 * first). values [..., k] is differentiable; indices [..., k] is int32.
 * Returns false (ctx->err set) on failure. */
bool orc_topk(orc_ctx *ctx, orc_tensor *x, int64_t k, orc_tensor **values, orc_tensor **indices);
/* SoftTopK (IFPruning's differentiable top-k mask), per row of z [..., F]:
 * tau solves sum_i sigmoid((z_i - tau) / T) = k (64 bisection steps in
 * double, so tau is exact to double precision); the output is
 * sigmoid((z_i - tau) / T) on the k largest z (ties: lower index) and 0
 * elsewhere, exactly k non-zero per row. The backward goes through the soft
 * values including dtau/dz_j = s'_j / sum_i s'_i. k outside [1, F], T <= 0
 * or a non-finite score is an error. See src/ops/softtopk.c. */
orc_tensor *orc_soft_topk(orc_ctx *ctx, orc_tensor *z, int64_t k, float temperature);

/* ---- joining and splitting ---------------------------------------------- */

/* Join n tensors along axis; other axes must match. */
orc_tensor *orc_concat(orc_ctx *ctx, int n, orc_tensor *const *xs, int axis);
/* Cut x along axis into n contiguous pieces of the given sizes (they must sum
 * to the axis length). Returns false (ctx->err set) on failure. */
bool orc_split(orc_ctx *ctx, orc_tensor *x, int axis, int n, const int64_t *sizes, orc_tensor **outs);

/* ---- losses ------------------------------------------------------------- */

/* Mean token cross-entropy. logits [..., V] (flattened to [N, V]), targets
 * int32 [N] (any shape with N elements). Targets equal to ignore_index count
 * for nothing; weights (float32 [N], or NULL for all ones) scale each token's
 * loss. Result = sum(w_i * nll_i) / sum(w_i) over the counted tokens (0 when
 * no token counts); a scalar. A target outside [0, V) that is not
 * ignore_index is an ORC_ERANGE error naming its position. */
orc_tensor *orc_cross_entropy(orc_ctx *ctx, orc_tensor *logits, orc_tensor *targets, orc_tensor *weights,
                              int32_t ignore_index);

/* ---- transformer pieces ------------------------------------------------- */

/* Rotary position embedding, the half-split (GPT-NeoX / Hugging Face Llama)
 * layout: for each head, dims i and i + D/2 rotate by pos * base^(-2i/D).
 * x [B, T, H, D] with D even; pos int32 [T] (NULL means 0..T-1). */
orc_tensor *orc_rope(orc_ctx *ctx, orc_tensor *x, orc_tensor *pos, float base);

typedef struct orc_attn_opts {
    bool causal;        /* query t sees keys s <= t + (S - T) (KV-cache offset) */
    orc_tensor *mask;   /* optional additive float mask [T, S] or [B, T, S]; -INFINITY hides */
    float scale;        /* 0 means 1/sqrt(D) */
} orc_attn_opts;

/* Fused scaled dot-product attention with grouped-query heads:
 * q [B, T, Hq, D], k [B, S, Hkv, D], v [B, S, Hkv, Dv], Hq a multiple of Hkv
 * (query head h reads KV head h / (Hq / Hkv)). Output [B, T, Hq, Dv].
 * Saves only the row log-sum-exp; backward recomputes the probabilities.
 * A row with no visible key outputs zeros. */
orc_tensor *orc_attention(orc_ctx *ctx, orc_tensor *q, orc_tensor *k, orc_tensor *v, const orc_attn_opts *opts);

/* ---- regularisation ----------------------------------------------------- */

/* Inverted dropout: zero each element with probability p and scale the rest
 * by 1/(1-p). Identity when !ctx->training or p == 0. The mask comes from
 * ctx->rng (counter-based: the same for any thread count). */
orc_tensor *orc_dropout(orc_ctx *ctx, orc_tensor *x, float p);

#ifdef __cplusplus
}
#endif
#endif
