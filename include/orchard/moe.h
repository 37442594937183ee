/* orchard/moe.h: the mixture-of-experts feed-forward (issue 6, part 1).
 *
 * A MoE layer replaces a block's SwiGLU FFN by E SwiGLU experts and a linear
 * router. Routing is either token choice (GShard/Switch top-k: each token
 * picks its k best experts, each expert takes at most C tokens per group) or
 * expert choice (each expert picks its C best tokens per group). A forward
 * is four steps, each an op with a hand-written backward:
 *
 *   logits = x @ router^T                   orc_linear           [N, E]
 *   gates  = orc_moe_route(logits, plan)    routing + gates      [S]
 *   xs     = orc_moe_dispatch(x, plan)      gather rows          [S, D]
 *   ys     = orc_moe_experts(xs, plan, W)   grouped SwiGLU GEMMs [S, D]
 *   out    = orc_moe_combine(ys, gates)     gate, scatter-add    [N, D]
 *
 * S is the number of (token, expert) assignments kept. Slots are laid out
 * expert-major: expert e's rows are xs[offsets[e] .. offsets[e+1]), in token
 * order. That is the seam for expert parallelism: between dispatch and
 * experts an all-to-all can send segment e to the rank that owns expert e
 * (and the reverse between experts and combine); orc_moe_experts accepts
 * any number of local experts with their own offsets. No tensor of size
 * tokens x experts x capacity exists anywhere. See docs/moe.md for the exact
 * routing math, the auxiliary losses and the statistics. */
#ifndef ORCHARD_MOE_H
#define ORCHARD_MOE_H

#include <stdbool.h>
#include <stdint.h>

#include "orchard/autograd.h"
#include "orchard/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum orc_moe_router {
    ORC_MOE_TOKEN_CHOICE = 0, /* "top2" / "token_choice" (GShard, Switch for k = 1) */
    ORC_MOE_EXPERT_CHOICE = 1 /* "expert_choice" */
} orc_moe_router;

/* "token_choice", "top2", "topk" -> token choice; "expert_choice" -> expert
 * choice. Returns false for anything else. */
bool orc_moe_router_parse(const char *s, orc_moe_router *out);
const char *orc_moe_router_name(orc_moe_router r);

typedef struct orc_moe_opts {
    orc_moe_router router;
    int64_t n_experts;       /* E >= 1 */
    int64_t top_k;           /* token choice: experts per token, 1..E */
    double capacity_factor;  /* > 0 */
    int64_t group_size;      /* tokens per routing group; 0 = all tokens of the call */
} orc_moe_opts;

/* Capacity of one expert in a group of n tokens: token choice
 * ceil(n * cf / E) (at least 1); expert choice the same clamped to n. */
int64_t orc_moe_capacity(const orc_moe_opts *o, int64_t n);

/* Statistics of one routing call (or a sum of calls, see orc_moe_stats_add). */
typedef struct orc_moe_stats {
    int64_t n_experts;
    int64_t tokens;             /* tokens routed */
    int64_t assignments;        /* token choice: tokens * k wanted; expert choice: slots filled */
    int64_t dropped;            /* token choice: wanted assignments over capacity;
                                   expert choice: tokens no expert took */
    double entropy_sum;         /* sum over tokens of -sum_e p log p (nats) */
    int64_t *per_expert;        /* [n_experts] slots kept per expert */
} orc_moe_stats;

/* Dropped fraction: dropped / assignments (token choice) or dropped / tokens
 * (expert choice); mean router entropy in nats. */
double orc_moe_stats_dropped_fraction(const orc_moe_stats *s, orc_moe_router r);
double orc_moe_stats_entropy(const orc_moe_stats *s);
/* dst += src (per_expert element-wise); dst->per_expert must have room for
 * src->n_experts entries. */
void orc_moe_stats_add(orc_moe_stats *dst, const orc_moe_stats *src);

/* The routing decisions of one call, in ctx's arena (valid until the
 * context is reset). */
typedef struct orc_moe_plan {
    orc_moe_opts opts;
    int64_t n_tokens;      /* N */
    int64_t n_slots;       /* S */
    int64_t n_groups, group_size, capacity; /* capacity of a full group */
    int64_t *offsets;      /* [E + 1]: expert e owns slots offsets[e] .. offsets[e+1] */
    orc_tensor *token;     /* int32 [S]: the token row of each slot (dispatch and combine index) */
    int32_t *expert;       /* [S]: the expert of each slot */
    int32_t *rank;         /* [S]: token choice: the slot's choice rank (0 = top-1); expert choice: 0 */
    int32_t *choice;       /* token choice [N * k]: each token's experts, best first */
    float *probs;          /* [N, E]: softmax of the logits (float32) */
    int64_t *tok_off;      /* [N + 1]: token t's slots are tok_slots[tok_off[t] .. tok_off[t+1]) */
    int64_t *tok_slots;    /* [S]: slots grouped by token, ascending within a token */
    orc_moe_stats stats;   /* per_expert in the arena */
} orc_moe_plan;

/* ---- ops ---------------------------------------------------------------- */

/* Route logits [N, E] (float32) and return the gate of every slot [S],
 * differentiable with respect to the logits; *plan receives the decisions.
 * Token choice: p = softmax(logits); each token's top-k experts (ties: lower
 * index); gates p_e / sum of the top-k p (k >= 2) or p_e (k = 1); per group,
 * slots are granted by rank first (every token's top-1, in token order, then
 * every top-2, ...) while the expert has fewer than C; the rest are dropped.
 * Expert choice: per group each expert takes its C highest p[:, e] (ties:
 * lower token), gate = p. */
orc_tensor *orc_moe_route(orc_ctx *ctx, orc_tensor *logits, const orc_moe_opts *opts, orc_moe_plan **plan);

/* xs[s] = x[plan->token[s]]: x [N, D] -> [S, D] (index_select). */
orc_tensor *orc_moe_dispatch(orc_ctx *ctx, orc_tensor *x, const orc_moe_plan *plan);

/* Grouped SwiGLU: for every expert e and its rows r of xs,
 * ys[r] = down_e(silu(gate_e xs[r]) * up_e xs[r]). xs [S, D]; w_gate, w_up
 * [E, F, D]; w_down [E, D, F]; offsets [E + 1] with offsets[0] = 0 and
 * offsets[E] = S. Each product is single-threaded sgemm on a tile of one
 * expert's output, so results do not depend on the thread count. */
orc_tensor *orc_moe_experts(orc_ctx *ctx, orc_tensor *xs, const int64_t *offsets, orc_tensor *w_gate,
                            orc_tensor *w_up, orc_tensor *w_down);

/* out[n] = sum over slots s of token n of gates[s] * ys[s]: ys [S, D],
 * gates [S] -> [n_tokens, D], summed in ascending slot order; a token with
 * no slot gets zeros (its residual passes alone). */
orc_tensor *orc_moe_combine(orc_ctx *ctx, orc_tensor *ys, orc_tensor *gates, const orc_moe_plan *plan);

/* Load-balance loss (token choice): per group g of n_g tokens,
 * E * sum_e f_e * P_e with f_e = (tokens whose top-1 is e) / n_g (before
 * capacity) and P_e = mean of p[:, e] over the group; the mean over groups.
 * Equals E^2 * mean_e(f_e P_e); 1 when routing is uniform. Gradient flows
 * through P only. A scalar. */
orc_tensor *orc_moe_balance_loss(orc_ctx *ctx, orc_tensor *logits, const orc_moe_plan *plan);
/* Router z-loss: mean over tokens of logsumexp(logits)^2. A scalar. */
orc_tensor *orc_moe_z_loss(orc_ctx *ctx, orc_tensor *logits);

/* ---- the layer ------------------------------------------------------------ */

/* One MoE FFN's parameters (owned by the model's arena) and its running
 * statistics (summed over forwards until orc_moe_layer_stats_reset). */
typedef struct orc_moe_layer {
    orc_tensor *router;               /* [E, D]      mlp.gate.weight */
    orc_tensor *w_gate, *w_up;        /* [E, Fe, D]  mlp.experts.gate_proj.weight, up_proj */
    orc_tensor *w_down;               /* [E, D, Fe]  mlp.experts.down_proj.weight */
    orc_moe_stats stats;              /* per_expert [E], malloc'd by the owner */
} orc_moe_layer;

typedef struct orc_moe_forward {
    orc_tensor *out;      /* [..., D] like x */
    orc_tensor *balance;  /* scalar or NULL (no grad, or expert choice) */
    orc_tensor *z;        /* scalar or NULL (no grad) */
    orc_moe_plan *plan;
} orc_moe_forward;

/* The whole MoE FFN on x [..., D] (contiguous). The auxiliary losses are
 * built only when a gradient is recorded. Adds the call's statistics to
 * layer->stats. Returns res->out (NULL with ctx->err set on failure). */
orc_tensor *orc_moe_ffn(orc_ctx *ctx, orc_moe_layer *layer, const orc_moe_opts *opts, orc_tensor *x,
                        orc_moe_forward *res);

void orc_moe_layer_stats_reset(orc_moe_layer *layer);

#ifdef __cplusplus
}
#endif
#endif
