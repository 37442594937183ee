/* Tensor (model) parallelism, Megatron style (orchard/dist.h): the two
 * communication ops as autograd nodes (f = orc_tp_copy: identity forward,
 * all-reduce of the gradient backward; g = orc_tp_reduce: all-reduce
 * forward, identity backward), slicing a full model into one model rank's
 * part (column-parallel q/k/v/gate/up keep a block of output rows,
 * row-parallel o/down the matching block of input columns; heads and FFN
 * columns are split contiguously, so each rank keeps whole GQA groups),
 * gathering the slices (or their gradients) back into the full layout, and
 * the LM forward over the slices. Per block one f and one g around the
 * attention and around the FFN: the attention and the SwiGLU run on local
 * heads and columns only; the partial outputs of o and down are summed.
 * MoE layers are not split over the model axis: every model rank runs the
 * whole router and its experts (all of them, or its expert-axis share under
 * orc_ep_llm) on the same tokens, so the residual stream stays replicated. */
#include <stdlib.h>
#include <string.h>

#include "orchard/dist.h"
#include "orchard/ops.h"

/* ---- the communication ops ----------------------------------------------------------- */

static void reduce_grad_into(orc_ctx *ctx, orc_node *n, bool allreduce) {
    float *gx = orc_grad(ctx, n->in[0]);
    if (!gx) return;
    const int64_t N = n->out->numel;
    const float *g = n->out->grad;
    if (!allreduce) {
        for (int64_t i = 0; i < N; i++) gx[i] += g[i];
        return;
    }
    float *tmp = malloc(sizeof(float) * (size_t)(N ? N : 1));
    if (!tmp) {
        orc_fail(ctx, ORC_ENOMEM, "tp copy backward: out of memory for %lld values", (long long)N);
        return;
    }
    memcpy(tmp, g, sizeof(float) * (size_t)N);
    orc_error err = {0};
    if (orc_allreduce_f32((orc_comm *)n->saved, tmp, N, ORC_REDUCE_SUM, &err) != ORC_OK)
        orc_fail(ctx, err.code, "tp copy backward: %s", err.msg);
    else
        for (int64_t i = 0; i < N; i++) gx[i] += tmp[i];
    free(tmp);
}

static void copy_backward(orc_ctx *ctx, orc_node *n) { reduce_grad_into(ctx, n, true); }
static void reduce_backward(orc_ctx *ctx, orc_node *n) { reduce_grad_into(ctx, n, false); }

static orc_tensor *comm_op(orc_ctx *ctx, const char *op, orc_comm *comm, orc_tensor *x, bool reduce_forward) {
    if (!orc_op_begin(ctx, op, 1, &x)) return NULL;
    if (!comm) return orc_fail(ctx, ORC_EINVAL, "%s: no communicator", op);
    if (x->dtype != ORC_F32) return orc_fail(ctx, ORC_EDTYPE, "%s: input must be f32", op);
    x = orc_contiguous(ctx, x);
    orc_tensor *y = x ? orc_new(ctx, ORC_F32, x->ndim, x->shape) : NULL;
    if (!y) return NULL;
    memcpy(y->data, x->data, sizeof(float) * (size_t)x->numel);
    if (reduce_forward) {
        orc_error err = {0};
        if (orc_allreduce_f32(comm, orc_f32(y), y->numel, ORC_REDUCE_SUM, &err) != ORC_OK)
            return orc_fail(ctx, err.code, "%s: %s", op, err.msg);
    }
    if (orc_needs_grad(ctx, 1, &x)) {
        orc_node *n = orc_record(ctx, op, y, reduce_forward ? reduce_backward : copy_backward, 1, &x);
        if (!n) return NULL;
        n->saved = comm;
    }
    return y;
}

orc_tensor *orc_tp_copy(orc_ctx *ctx, orc_comm *comm, orc_tensor *x) {
    return comm_op(ctx, "tp_copy", comm, x, false);
}
orc_tensor *orc_tp_reduce(orc_ctx *ctx, orc_comm *comm, orc_tensor *x) {
    return comm_op(ctx, "tp_reduce", comm, x, true);
}

/* ---- slicing a model -------------------------------------------------------------------- */

/* PARTIAL: replicated, but applied to local heads only (QK-norm weights),
 * so each rank's gradient is its heads' share and the full gradient is the
 * sum over model ranks. */
typedef enum { REPLICATED, ROWS, COLS, PARTIAL } split_kind;

static split_kind kind_of(const char *name) {
    /* MoE layers: every model rank holds the whole router and its experts
     * (the expert axis, not the model axis, splits experts). */
    if (strstr(name, ".mlp.experts.") || strstr(name, ".mlp.gate.weight")) return REPLICATED;
    if (strstr(name, "q_norm") || strstr(name, "k_norm")) return PARTIAL;
    if (strstr(name, "q_proj") || strstr(name, "k_proj") || strstr(name, "v_proj") || strstr(name, "gate_proj") ||
        strstr(name, "up_proj"))
        return ROWS;
    if (strstr(name, "o_proj") || strstr(name, "down_proj")) return COLS;
    return REPLICATED;
}

/* full <-> local block of rank m out of M for one 2-D tensor's buffer. */
static void copy_block(split_kind k, float *full, float *local, const orc_tensor *lt, int m, int M, bool to_local) {
    const int64_t n = lt->numel;
    if (k == REPLICATED || k == PARTIAL) {
        if (to_local) memcpy(local, full, sizeof(float) * (size_t)n);
        else memcpy(full, local, sizeof(float) * (size_t)n);
        return;
    }
    if (k == ROWS) {
        if (to_local) memcpy(local, full + (int64_t)m * n, sizeof(float) * (size_t)n);
        else memcpy(full + (int64_t)m * n, local, sizeof(float) * (size_t)n);
        return;
    }
    const int64_t rows = lt->shape[0], c = lt->shape[1];
    for (int64_t r = 0; r < rows; r++) {
        float *f = full + r * c * M + (int64_t)m * c, *l = local + r * c;
        if (to_local) memcpy(l, f, sizeof(float) * (size_t)c);
        else memcpy(f, l, sizeof(float) * (size_t)c);
    }
}

orc_tp_llm *orc_tp_llm_from_full(const orc_llm *full, orc_comm *comm, bool with_grad, orc_error *err) {
    const orc_llm_config *c = &full->cfg;
    const int M = comm->size;
    if (c->num_attention_heads % M || c->num_key_value_heads % M || c->intermediate_size % M) {
        orc_error_set(err, ORC_EINVAL, "model parallel: model=%d must divide num_attention_heads = %lld, "
                      "num_key_value_heads = %lld and intermediate_size = %lld", M, (long long)c->num_attention_heads,
                      (long long)c->num_key_value_heads, (long long)c->intermediate_size);
        return NULL;
    }
    orc_tp_llm *tp = calloc(1, sizeof *tp);
    if (!tp) {
        orc_error_set(err, ORC_ENOMEM, "model parallel: out of memory");
        return NULL;
    }
    tp->comm = comm;
    tp->full = *c;
    orc_llm_config lc = *c;
    lc.num_attention_heads /= M;
    lc.num_key_value_heads /= M;
    /* The experts keep their full width (replicated over the model axis). */
    if (lc.num_experts > 0 && lc.moe_intermediate_size <= 0) lc.moe_intermediate_size = c->intermediate_size;
    lc.intermediate_size /= M;
    tp->local = orc_llm_create(&lc, with_grad, err);
    if (!tp->local) {
        free(tp);
        return NULL;
    }
    for (int i = 0; i < full->n_params; i++) {
        orc_tensor *lt = tp->local->params[i];
        copy_block(kind_of(lt->name), orc_f32(full->params[i]), orc_f32(lt), lt, comm->rank, M, true);
    }
    return tp;
}

void orc_tp_llm_free(orc_tp_llm *tp) {
    if (!tp) return;
    orc_llm_free(tp->local);
    free(tp);
}

bool orc_tp_param_is_split(const orc_tp_llm *tp, int i) {
    split_kind k = kind_of(tp->local->params[i]->name);
    return k == ROWS || k == COLS;
}

orc_status orc_tp_gather(orc_tp_llm *tp, int i, const float *local, float *full, orc_error *err) {
    const orc_tensor *lt = tp->local->params[i];
    const int M = tp->comm->size;
    split_kind k = kind_of(lt->name);
    if (k == REPLICATED || k == PARTIAL) {
        memcpy(full, local, sizeof(float) * (size_t)lt->numel);
        return ORC_OK;
    }
    float *all = malloc(sizeof(float) * (size_t)lt->numel * (size_t)M);
    if (!all) return orc_error_set(err, ORC_ENOMEM, "model parallel: out of memory for %s", lt->name);
    orc_status st = orc_allgather(tp->comm, local, sizeof(float) * (size_t)lt->numel, all, err);
    for (int m = 0; m < M && st == ORC_OK; m++) copy_block(k, full, all + (int64_t)m * lt->numel, lt, m, M, false);
    free(all);
    return st;
}

void orc_tp_scatter(const orc_tp_llm *tp, int i, const float *full, float *local) {
    const orc_tensor *lt = tp->local->params[i];
    copy_block(kind_of(lt->name), (float *)full, local, lt, tp->comm->rank, tp->comm->size, true);
}

orc_status orc_tp_llm_sync_grads(orc_tp_llm *tp, orc_error *err) {
    for (int i = 0; i < tp->local->n_params; i++) {
        orc_tensor *p = tp->local->params[i];
        if (kind_of(p->name) != PARTIAL || !p->grad) continue;
        orc_status st = orc_allreduce_f32(tp->comm, p->grad, p->numel, ORC_REDUCE_SUM, err);
        if (st != ORC_OK) return st;
    }
    return ORC_OK;
}

orc_status orc_tp_llm_to_full(orc_tp_llm *tp, orc_llm *full, bool grads, orc_error *err) {
    const int M = tp->comm->size;
    for (int i = 0; i < full->n_params; i++) {
        orc_tensor *lt = tp->local->params[i], *ft = full->params[i];
        float *lsrc = grads ? lt->grad : orc_f32(lt), *fdst = grads ? ft->grad : orc_f32(ft);
        if (!lsrc || !fdst) return orc_error_set(err, ORC_EINVAL, "model parallel: %s has no gradient buffer", ft->name);
        split_kind k = kind_of(lt->name);
        if (k == REPLICATED || k == PARTIAL) {
            copy_block(k, fdst, lsrc, lt, 0, 1, false);
            if (k == PARTIAL && grads) {
                orc_status st = orc_allreduce_f32(tp->comm, fdst, ft->numel, ORC_REDUCE_SUM, err);
                if (st != ORC_OK) return st;
            }
            continue;
        }
        float *all = malloc(sizeof(float) * (size_t)ft->numel);
        if (!all) return orc_error_set(err, ORC_ENOMEM, "model parallel: out of memory for %s", ft->name);
        orc_status st = orc_allgather(tp->comm, lsrc, sizeof(float) * (size_t)lt->numel, all, err);
        for (int m = 0; m < M && st == ORC_OK; m++) copy_block(k, fdst, all + (int64_t)m * lt->numel, lt, m, M, false);
        free(all);
        if (st != ORC_OK) return st;
    }
    return ORC_OK;
}

/* ---- the forward ---------------------------------------------------------------------------- */


orc_tensor *orc_tp_llm_forward(orc_ctx *ctx, orc_tp_llm *tp, orc_tensor *ids) {
    orc_llm *m = tp->local;
    const orc_llm_config *c = &m->cfg;
    orc_tensor *pos = orc_llm_positions(ctx, c, ids, NULL, "tp llm");
    if (!pos) return NULL;
    const float eps = (float)c->rms_norm_eps;
    orc_tensor *h = orc_embedding(ctx, m->embed, ids);
    m->moe_aux = NULL;
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const orc_llm_layer *y = &m->layers[l];
        orc_tensor *x = orc_tp_copy(ctx, tp->comm, orc_rmsnorm(ctx, h, y->attn_norm, eps));
        orc_tensor *att = orc_llm_attend(ctx, c, l, orc_linear(ctx, x, y->wq, NULL), orc_linear(ctx, x, y->wk, NULL),
                                         orc_linear(ctx, x, y->wv, NULL), y->q_norm, y->k_norm, pos, NULL);
        h = orc_add(ctx, h, orc_tp_reduce(ctx, tp->comm, orc_linear(ctx, att, y->wo, NULL)));
        if (y->moe) {
            /* Every model rank holds the same tokens and the whole router, so
             * each runs the same routing and expert FFN (expert parallel over
             * the expert axis when bound, orc_ep_llm): no f / g around it, the
             * output is already whole on every model rank. */
            h = orc_add(ctx, h, orc_llm_moe_ffn(ctx, m, l, orc_rmsnorm(ctx, h, y->ffn_norm, eps)));
            continue;
        }
        x = orc_tp_copy(ctx, tp->comm, orc_rmsnorm(ctx, h, y->ffn_norm, eps));
        orc_tensor *f = orc_swiglu(ctx, orc_linear(ctx, x, y->w_gate, NULL), orc_linear(ctx, x, y->w_up, NULL));
        h = orc_add(ctx, h, orc_tp_reduce(ctx, tp->comm, orc_linear(ctx, f, y->w_down, NULL)));
    }
    h = orc_rmsnorm(ctx, h, m->norm, eps);
    return orc_linear(ctx, h, m->lm_head, NULL);
}

orc_tensor *orc_tp_llm_loss(orc_ctx *ctx, orc_tp_llm *tp, orc_tensor *ids, orc_tensor *targets) {
    orc_tensor *logits = orc_tp_llm_forward(ctx, tp, ids);
    if (!logits) return NULL;
    if (!targets || targets->numel != ids->numel)
        return orc_fail(ctx, ORC_ESHAPE, "tp llm loss: targets must have the shape of the ids");
    return orc_cross_entropy(ctx, logits, targets, NULL, ORC_IGNORE_INDEX);
}
