/* Expert parallelism (orchard/dist.h): the MoE FFN with its experts split
 * over the ranks of one communicator. Routing stays local (the router is
 * replicated, each rank routes its own tokens); orc_moe_dispatch lays the
 * kept (token, expert) slots out expert-major, so the slots for the experts
 * of rank j are one contiguous block and an all-to-all-v sends block j to
 * rank j. The receiver reorders what it got (source-major) into
 * expert-major order for orc_moe_experts, and the reverse exchange returns
 * every expert output to the slot it came from before orc_moe_combine. Both
 * exchanges are autograd ops whose backward is the other exchange, so the
 * gradients of the expert inputs travel back the way the tokens came. The
 * per-expert slot counts are all-gathered first (E integers per rank), which
 * gives every rank both the send and the receive counts. */
#include <stdlib.h>
#include <string.h>

#include "orchard/dist.h"
#include "orchard/ops.h"

typedef struct exchange {
    orc_comm *comm;
    int64_t S, R, D;        /* rows sent (slots here), rows received, row width */
    int64_t *send, *recv;   /* [P] floats to / from each rank */
    int64_t *perm;          /* [R]: output row i is received row perm[i] */
} exchange;

/* x [S, D] -> y [R, D] (forward direction). */
static orc_status ex_forward(const exchange *e, const float *x, float *y, orc_error *err) {
    float *tmp = malloc(sizeof(float) * (size_t)(e->R * e->D + 1));
    if (!tmp) return orc_error_set(err, ORC_ENOMEM, "expert parallel: out of memory");
    orc_status st = orc_alltoallv_f32(e->comm, x, e->send, tmp, e->recv, err);
    if (st == ORC_OK)
        for (int64_t i = 0; i < e->R; i++) memcpy(y + i * e->D, tmp + e->perm[i] * e->D, sizeof(float) * (size_t)e->D);
    free(tmp);
    return st;
}

/* y [R, D] -> x [S, D] (the inverse). */
static orc_status ex_inverse(const exchange *e, const float *y, float *x, orc_error *err) {
    float *tmp = malloc(sizeof(float) * (size_t)(e->R * e->D + 1));
    if (!tmp) return orc_error_set(err, ORC_ENOMEM, "expert parallel: out of memory");
    for (int64_t i = 0; i < e->R; i++) memcpy(tmp + e->perm[i] * e->D, y + i * e->D, sizeof(float) * (size_t)e->D);
    orc_status st = orc_alltoallv_f32(e->comm, tmp, e->recv, x, e->send, err);
    free(tmp);
    return st;
}

static void ex_backward(orc_ctx *ctx, orc_node *n, bool forward_op) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const exchange *e = n->saved;
    const int64_t nin = forward_op ? e->S : e->R;
    float *tmp = malloc(sizeof(float) * (size_t)(nin * e->D + 1));
    orc_error err = {0};
    orc_status st = tmp ? (forward_op ? ex_inverse(e, n->out->grad, tmp, &err) : ex_forward(e, n->out->grad, tmp, &err))
                        : orc_error_set(&err, ORC_ENOMEM, "out of memory");
    if (st != ORC_OK) orc_fail(ctx, st, "expert exchange backward: %s", err.msg);
    else
        for (int64_t i = 0; i < nin * e->D; i++) gx[i] += tmp[i];
    free(tmp);
}
static void ex_fwd_backward(orc_ctx *ctx, orc_node *n) { ex_backward(ctx, n, true); }
static void ex_inv_backward(orc_ctx *ctx, orc_node *n) { ex_backward(ctx, n, false); }

static orc_tensor *exchange_op(orc_ctx *ctx, exchange *e, orc_tensor *x, bool forward) {
    if (!orc_op_begin(ctx, "expert exchange", 1, &x)) return NULL;
    x = orc_contiguous(ctx, x);
    orc_tensor *y = x ? orc_new(ctx, ORC_F32, 2, ORC_SHAPE(forward ? e->R : e->S, e->D)) : NULL;
    if (!y) return NULL;
    orc_error err = {0};
    if ((forward ? ex_forward(e, orc_f32(x), orc_f32(y), &err) : ex_inverse(e, orc_f32(x), orc_f32(y), &err)) != ORC_OK)
        return orc_fail(ctx, err.code, "expert exchange: %s", err.msg);
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_node *n = orc_record(ctx, "expert_exchange", y, forward ? ex_fwd_backward : ex_inv_backward, 1, &x);
        if (!n) return NULL;
        n->saved = e;
    }
    return y;
}

/* The exchange plan from every rank's per-expert slot counts; local
 * offsets [El + 1] for orc_moe_experts. Arena memory (lives until reset). */
static exchange *plan_exchange(orc_ctx *ctx, orc_comm *comm, const orc_moe_plan *plan, int64_t D, int64_t **loff) {
    const int P = comm->size;
    const int64_t E = plan->opts.n_experts, El = E / P, e0 = (int64_t)comm->rank * El;
    orc_arena *a = ctx->arena;
    exchange *e = orc_arena_calloc(a, 1, sizeof *e);
    int64_t *cnt = orc_arena_calloc(a, (size_t)E, sizeof *cnt), *all = orc_arena_calloc(a, (size_t)(E * P), sizeof *all);
    int64_t *off = orc_arena_calloc(a, (size_t)El + 1, sizeof *off);
    if (e) {
        e->send = orc_arena_calloc(a, (size_t)P, sizeof *e->send);
        e->recv = orc_arena_calloc(a, (size_t)P, sizeof *e->recv);
    }
    if (!e || !cnt || !all || !off || !e->send || !e->recv)
        return orc_fail(ctx, ORC_ENOMEM, "expert parallel: out of memory");
    for (int64_t x = 0; x < E; x++) cnt[x] = plan->offsets[x + 1] - plan->offsets[x];
    orc_error err = {0};
    if (orc_allgather(comm, cnt, sizeof(int64_t) * (size_t)E, all, &err) != ORC_OK)
        return orc_fail(ctx, err.code, "expert parallel: %s", err.msg);
    e->comm = comm;
    e->D = D;
    e->S = plan->n_slots;
    for (int j = 0; j < P; j++) {
        int64_t s = 0, r = 0;
        for (int64_t x = 0; x < El; x++) {
            s += cnt[j * El + x];
            r += all[j * E + e0 + x];
        }
        e->send[j] = s * D;
        e->recv[j] = r * D;
        e->R += r;
    }
    e->perm = orc_arena_calloc(a, (size_t)(e->R ? e->R : 1), sizeof *e->perm);
    if (!e->perm) return orc_fail(ctx, ORC_ENOMEM, "expert parallel: out of memory");
    /* Received rows: source j, then local expert x. Wanted: x, then j. */
    int64_t i = 0;
    for (int64_t x = 0; x < El; x++) {
        off[x] = i;
        for (int j = 0; j < P; j++) {
            int64_t start = 0; /* rows before (j, x) in the received buffer */
            for (int jj = 0; jj < j; jj++) start += e->recv[jj] / D;
            for (int64_t xx = 0; xx < x; xx++) start += all[j * E + e0 + xx];
            for (int64_t k = 0; k < all[j * E + e0 + x]; k++) e->perm[i++] = start + k;
        }
    }
    off[El] = i;
    *loff = off;
    return e;
}

orc_tensor *orc_ep_moe_ffn(orc_ctx *ctx, orc_comm *comm, orc_moe_layer *L, const orc_moe_opts *o, orc_tensor *x,
                           orc_moe_forward *res) {
    orc_moe_forward local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    if (!orc_op_begin(ctx, "ep moe ffn", 1, &x)) return NULL;
    if (!comm || !L || !L->router || !L->w_gate || !o || o->n_experts % comm->size != 0 ||
        L->w_gate->shape[0] != o->n_experts / comm->size)
        return orc_fail(ctx, ORC_EINVAL, "ep moe ffn: %lld experts over %d ranks need %lld local experts per rank",
                        o ? (long long)o->n_experts : 0LL, comm ? comm->size : 0,
                        o && comm ? (long long)(o->n_experts / comm->size) : 0LL);
    const int64_t D = x->shape[x->ndim - 1], N = x->numel / D;
    orc_tensor *xf = orc_reshape(ctx, orc_contiguous(ctx, x), 2, ORC_SHAPE(N, D));
    orc_tensor *logits = orc_linear(ctx, xf, L->router, NULL);
    orc_moe_plan *plan = NULL;
    orc_tensor *gates = logits ? orc_moe_route(ctx, logits, o, &plan) : NULL;
    if (!gates) return NULL;
    orc_tensor *xs = orc_moe_dispatch(ctx, xf, plan);
    int64_t *loff = NULL;
    exchange *e = xs ? plan_exchange(ctx, comm, plan, D, &loff) : NULL;
    if (!e) return NULL;
    orc_tensor *xl = exchange_op(ctx, e, xs, true);
    orc_tensor *yl = orc_moe_experts(ctx, xl, loff, L->w_gate, L->w_up, L->w_down);
    orc_tensor *ys = exchange_op(ctx, e, yl, false);
    orc_tensor *out = orc_reshape(ctx, orc_moe_combine(ctx, ys, gates, plan), x->ndim, x->shape);
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
