/* The MoE FFN as one call (orc_moe_ffn, see orchard/moe.h): router linear,
 * routing, dispatch, grouped experts, combine, and the auxiliary losses
 * when a gradient is recorded; it also sums each call's routing statistics
 * into the layer so a trainer can report them per step. A layer bound to
 * an expert communicator (orc_ep_bind, orchard/dist.h: its expert tensors
 * hold only this rank's experts) runs the expert-parallel layer instead, so
 * the LM forward needs no change for expert parallelism. */
#include <string.h>

#include "orchard/dist.h"
#include "orchard/moe.h"
#include "orchard/ops.h"

void orc_moe_layer_stats_reset(orc_moe_layer *layer) {
    if (!layer) return;
    int64_t *pe = layer->stats.per_expert;
    int64_t E = layer->router ? layer->router->shape[0] : 0;
    memset(&layer->stats, 0, sizeof layer->stats);
    layer->stats.per_expert = pe;
    layer->stats.n_experts = E;
    if (pe) memset(pe, 0, sizeof(int64_t) * (size_t)E);
}

orc_tensor *orc_moe_ffn(orc_ctx *ctx, orc_moe_layer *L, const orc_moe_opts *o, orc_tensor *x, orc_moe_forward *res) {
    orc_moe_forward local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    if (!orc_op_begin(ctx, "moe ffn", 1, &x)) return NULL;
    orc_comm *ep = L ? orc_ep_bound_comm(L) : NULL;
    if (ep) return orc_ep_moe_ffn(ctx, ep, L, o, x, res);
    if (!L || !L->router || !L->w_gate || !L->w_up || !L->w_down || !o)
        return orc_fail(ctx, ORC_EINVAL, "moe ffn: missing layer weights or options");
    char a[96], b[96];
    const int64_t D = x->ndim > 0 ? x->shape[x->ndim - 1] : 0;
    if (x->ndim < 1 || D < 1 || L->router->ndim != 2 || L->router->shape[1] != D || L->router->shape[0] != o->n_experts ||
        L->w_gate->shape[0] != o->n_experts)
        return orc_fail(ctx, ORC_ESHAPE, "moe ffn: x %s does not fit router %s with num_experts = %lld",
                        orc_tensor_desc(a, sizeof a, x), orc_tensor_desc(b, sizeof b, L->router),
                        (long long)o->n_experts);
    const int64_t N = x->numel / D;
    orc_tensor *xf = orc_reshape(ctx, orc_contiguous(ctx, x), 2, ORC_SHAPE(N, D));
    orc_tensor *logits = orc_linear(ctx, xf, L->router, NULL);
    orc_moe_plan *plan = NULL;
    orc_tensor *gates = logits ? orc_moe_route(ctx, logits, o, &plan) : NULL;
    if (!gates) return NULL;
    orc_tensor *xs = orc_moe_dispatch(ctx, xf, plan);
    /* (expert parallelism: the all-to-all of xs by plan->offsets goes here) */
    orc_tensor *ys = orc_moe_experts(ctx, xs, plan->offsets, L->w_gate, L->w_up, L->w_down);
    /* (and the reverse all-to-all of ys here) */
    orc_tensor *out = orc_moe_combine(ctx, ys, gates, plan);
    out = orc_reshape(ctx, out, x->ndim, x->shape);
    if (!out) return NULL;
    if (orc_needs_grad(ctx, 1, &logits)) {
        if (o->router == ORC_MOE_TOKEN_CHOICE) res->balance = orc_moe_balance_loss(ctx, logits, plan);
        res->z = orc_moe_z_loss(ctx, logits);
        if (!orc_ctx_ok(ctx)) return NULL;
    }
    if (L->stats.per_expert) orc_moe_stats_add(&L->stats, &plan->stats);
    res->out = out;
    res->plan = plan;
    return out;
}
