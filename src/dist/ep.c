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
 * gives every rank both the send and the receive counts.
 *
 * For training (orc_ep_llm): a full model's MoE layers get views of this
 * rank's experts in place of their full expert tensors (the views share the
 * full tensors' memory) and are bound to the expert communicator, so that
 * orc_moe_ffn, which the LM forward calls, runs orc_ep_moe_ffn for them;
 * checkpoints gather the slices back into the full tensors. */
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

/* ---- binding layers to a communicator ------------------------------------------------ */

/* Few layers, bound at setup and read by every forward: a small table.
 * orc_moe_layer (orchard/moe.h) has no slot for a communicator, and the MoE
 * layer code needs none without expert parallelism. */
typedef struct ep_binding {
    const orc_moe_layer *layer;
    orc_comm *comm;
} ep_binding;
static ep_binding *ep_bound;
static int ep_n_bound, ep_cap_bound;

orc_status orc_ep_bind(const orc_moe_layer *layer, orc_comm *comm, orc_error *err) {
    orc_ep_unbind(layer);
    if (!comm) return ORC_OK;
    if (ep_n_bound == ep_cap_bound) {
        int cap = ep_cap_bound ? 2 * ep_cap_bound : 16;
        ep_binding *b = realloc(ep_bound, sizeof *b * (size_t)cap);
        if (!b) return orc_error_set(err, ORC_ENOMEM, "expert parallel: out of memory");
        ep_bound = b;
        ep_cap_bound = cap;
    }
    ep_bound[ep_n_bound++] = (ep_binding){layer, comm};
    return ORC_OK;
}

void orc_ep_unbind(const orc_moe_layer *layer) {
    for (int i = 0; i < ep_n_bound; i++)
        if (ep_bound[i].layer == layer) {
            ep_bound[i] = ep_bound[--ep_n_bound];
            break;
        }
    if (ep_n_bound == 0) {
        free(ep_bound);
        ep_bound = NULL;
        ep_cap_bound = 0;
    }
}

orc_comm *orc_ep_bound_comm(const orc_moe_layer *layer) {
    for (int i = 0; i < ep_n_bound; i++)
        if (ep_bound[i].layer == layer) return ep_bound[i].comm;
    return NULL;
}

/* ---- an expert-parallel LM for training ------------------------------------------------ */

/* The view of rank r's experts: dims [E/P, ...] at offset r * E/P rows of
 * the full tensor's data and gradient. */
static orc_tensor *slice_experts(orc_arena *a, orc_tensor *full, int rank, int P, orc_error *err) {
    const int64_t El = full->shape[0] / P, per = full->numel / full->shape[0];
    int64_t shape[ORC_MAX_DIMS];
    for (int d = 0; d < full->ndim; d++) shape[d] = full->shape[d];
    shape[0] = El;
    orc_tensor *v = orc_tensor_wrap(a, ORC_F32, full->ndim, shape, orc_f32(full) + (int64_t)rank * El * per, err);
    if (!v) return NULL;
    v->requires_grad = full->requires_grad;
    v->is_param = true;
    v->grad = full->grad ? full->grad + (int64_t)rank * El * per : NULL;
    v->name = full->name;
    return v;
}

orc_ep_llm *orc_ep_llm_new(orc_llm *full, orc_comm *comm, orc_error *err) {
    orc_ep_llm *ep = calloc(1, sizeof *ep);
    const int n = full->n_params, P = comm->size;
    if (ep) {
        ep->params = calloc((size_t)n + 1, sizeof *ep->params);
        ep->full_params = calloc((size_t)n + 1, sizeof *ep->full_params);
        ep->arena = orc_arena_create((size_t)64 << 10);
    }
    if (!ep || !ep->params || !ep->full_params || !ep->arena) {
        orc_ep_llm_free(ep);
        orc_error_set(err, ORC_ENOMEM, "expert parallel: out of memory");
        return NULL;
    }
    ep->full = full;
    ep->comm = comm;
    ep->n_params = n;
    const int64_t E = full->cfg.num_experts;
    if (E <= 0 || E % P != 0) {
        orc_error_set(err, ORC_EINVAL, "expert parallel: num_experts = %lld over %d ranks", (long long)E, P);
        orc_ep_llm_free(ep);
        return NULL;
    }
    memcpy(ep->params, full->params, sizeof *ep->params * (size_t)n);
    memcpy(ep->full_params, full->params, sizeof *ep->params * (size_t)n);
    for (int64_t l = 0; l < full->cfg.num_hidden_layers; l++) {
        orc_moe_layer *y = full->layers[l].moe;
        if (!y) continue;
        orc_tensor **w[3] = {&y->w_gate, &y->w_up, &y->w_down};
        for (int k = 0; k < 3; k++) {
            int i = 0;
            while (i < n && full->params[i] != *w[k]) i++;
            orc_tensor *v = i < n ? slice_experts(ep->arena, *w[k], comm->rank, P, err) : NULL;
            if (!v) {
                if (i == n) orc_error_set(err, ORC_EINVAL, "expert parallel: layer %lld's experts are not parameters",
                                          (long long)l);
                orc_ep_llm_free(ep);
                return NULL;
            }
            ep->params[i] = v;
            *w[k] = v;
        }
        if (orc_ep_bind(y, comm, err) != ORC_OK) {
            orc_ep_llm_free(ep);
            return NULL;
        }
    }
    return ep;
}

void orc_ep_llm_free(orc_ep_llm *ep) {
    if (!ep) return;
    if (ep->full && ep->full_params) /* the layers get their full tensors back */
        for (int64_t l = 0; l < ep->full->cfg.num_hidden_layers; l++) {
            orc_moe_layer *y = ep->full->layers[l].moe;
            if (!y) continue;
            orc_ep_unbind(y);
            orc_tensor **w[3] = {&y->w_gate, &y->w_up, &y->w_down};
            for (int k = 0; k < 3; k++)
                for (int i = 0; i < ep->n_params; i++)
                    if (ep->params[i] == *w[k]) *w[k] = ep->full_params[i];
        }
    free(ep->params);
    free(ep->full_params);
    if (ep->arena) orc_arena_destroy(ep->arena);
    free(ep);
}

bool orc_ep_param_is_expert(const orc_ep_llm *ep, int i) { return ep->params[i] != ep->full_params[i]; }

orc_status orc_ep_gather(orc_ep_llm *ep, int i, const float *local, float *full, orc_error *err) {
    const int64_t n = ep->params[i]->numel;
    if (!orc_ep_param_is_expert(ep, i)) {
        if (local != full) memcpy(full, local, sizeof(float) * (size_t)n);
        return ORC_OK;
    }
    /* MPI forbids overlapping send and receive buffers, and local may sit
     * inside full (the weights' views do). */
    float *tmp = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!tmp) return orc_error_set(err, ORC_ENOMEM, "expert parallel: out of memory");
    memcpy(tmp, local, sizeof(float) * (size_t)n);
    orc_status st = orc_allgather(ep->comm, tmp, sizeof(float) * (size_t)n, full, err);
    free(tmp);
    return st;
}

void orc_ep_scatter(const orc_ep_llm *ep, int i, const float *full, float *local) {
    const int64_t n = ep->params[i]->numel;
    memcpy(local, full + (orc_ep_param_is_expert(ep, i) ? (int64_t)ep->comm->rank * n : 0), sizeof(float) * (size_t)n);
}

orc_status orc_ep_llm_to_full(orc_ep_llm *ep, orc_error *err) {
    for (int i = 0; i < ep->n_params; i++)
        if (orc_ep_param_is_expert(ep, i)) {
            orc_status st = orc_ep_gather(ep, i, orc_f32(ep->params[i]), orc_f32(ep->full_params[i]), err);
            if (st != ORC_OK) return st;
        }
    return ORC_OK;
}
