/* The tape and the backward walk (see orchard/autograd.h). Nodes live in the
 * context's arena, so forgetting a graph is resetting that arena. */
#include "orchard/autograd.h"

#include <stdio.h>
#include <string.h>

void orc_ctx_init(orc_ctx *ctx, orc_arena *arena, uint64_t seed) {
    memset(ctx, 0, sizeof *ctx);
    ctx->arena = arena;
    orc_rng_init(&ctx->rng, seed);
}

void orc_ctx_reset(orc_ctx *ctx) {
    ctx->tape = NULL;
    ctx->n_nodes = 0;
    orc_arena_reset(ctx->arena);
    orc_error_clear(&ctx->err);
}

const char *orc_ctx_message(const orc_ctx *ctx) { return ctx->err.code == ORC_OK ? "" : ctx->err.msg; }

bool orc_set_no_grad(orc_ctx *ctx, bool no_grad) {
    bool old = ctx->no_grad;
    ctx->no_grad = no_grad;
    return old;
}

void *orc_fail(orc_ctx *ctx, orc_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    orc_error_setv(&ctx->err, code, fmt, ap);
    va_end(ap);
    return NULL;
}

bool orc_op_begin(orc_ctx *ctx, const char *op, int n, orc_tensor *const *inputs) {
    if (!orc_ctx_ok(ctx)) return false;
    for (int i = 0; i < n; i++) {
        if (!inputs[i]) {
            orc_fail(ctx, ORC_EINVAL, "%s: input %d is NULL (an earlier step failed or it was not created)", op, i);
            return false;
        }
        if (inputs[i]->device != ORC_DEV_CPU) {
            orc_fail(ctx, ORC_EUNSUPPORTED, "%s: input %d is on device %d; only the CPU backend is built", op, i,
                     (int)inputs[i]->device);
            return false;
        }
    }
    return true;
}

bool orc_needs_grad(const orc_ctx *ctx, int n, orc_tensor *const *inputs) {
    if (ctx->no_grad) return false;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad) return true;
    return false;
}

orc_node *orc_record(orc_ctx *ctx, const char *op, orc_tensor *out, orc_backward_fn backward, int n_in,
                     orc_tensor *const *inputs) {
    if (n_in > ORC_NODE_MAX_INPUTS) return orc_fail(ctx, ORC_EINVAL, "%s: too many inputs for one node", op);
    orc_node *n = orc_arena_calloc(ctx->arena, 1, sizeof *n);
    if (!n) return orc_fail(ctx, ORC_ENOMEM, "%s: out of memory recording the op", op);
    n->backward = backward;
    n->op = op;
    n->out = out;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) n->in[i] = inputs[i];
    n->prev = ctx->tape;
    ctx->tape = n;
    ctx->n_nodes++;
    out->requires_grad = true;
    out->node = n;
    return n;
}

float *orc_grad(orc_ctx *ctx, orc_tensor *t) {
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad) {
        t->grad = orc_arena_calloc(ctx->arena, (size_t)t->numel, sizeof(float));
        if (!t->grad) orc_fail(ctx, ORC_ENOMEM, "backward: out of memory for a gradient of %lld floats",
                               (long long)t->numel);
    }
    return t->grad;
}

orc_tensor *orc_new(orc_ctx *ctx, orc_dtype dt, int ndim, const int64_t *shape) {
    return orc_tensor_new(ctx->arena, dt, ndim, shape, &ctx->err);
}

/* The walk; hook (optional) runs after the k-th node from the newest, also
 * for nodes nothing flowed into, so k counts every node of the tape. */
static orc_status backward_walk(orc_ctx *ctx, orc_tensor *out, const float *grad, orc_backward_hook hook, void *user) {
    if (!orc_ctx_ok(ctx)) return ctx->err.code;
    if (!out) return orc_error_set(&ctx->err, ORC_EINVAL, "backward: output tensor is NULL");
    if (!out->requires_grad)
        return orc_error_set(&ctx->err, ORC_EINVAL,
                             "backward: the output does not depend on any tensor that requires a gradient");
    float *g = orc_grad(ctx, out);
    if (!g) return ctx->err.code;
    for (int64_t i = 0; i < out->numel; i++) g[i] += grad[i];
    int64_t k = 0;
    for (orc_node *n = ctx->tape; n && orc_ctx_ok(ctx); n = n->prev, k++) {
        if (n->out->grad) n->backward(ctx, n); /* else nothing flowed into this op */
        if (hook) hook(user, k);
    }
    return ctx->err.code;
}

orc_status orc_backward_with(orc_ctx *ctx, orc_tensor *out, const float *grad) {
    return backward_walk(ctx, out, grad, NULL, NULL);
}

orc_status orc_backward_hooked(orc_ctx *ctx, orc_tensor *loss, orc_backward_hook hook, void *user) {
    if (!orc_ctx_ok(ctx)) return ctx->err.code;
    if (!loss) return orc_error_set(&ctx->err, ORC_EINVAL, "backward: loss is NULL");
    if (loss->numel != 1) {
        char buf[96];
        return orc_error_set(&ctx->err, ORC_ESHAPE, "backward: loss must have one element, got shape %s",
                             orc_shape_str(buf, sizeof buf, loss->ndim, loss->shape));
    }
    static const float one = 1.0f; /* static: gcc cannot see that numel 1 reads only one float */
    return backward_walk(ctx, loss, &one, hook, user);
}

orc_status orc_backward(orc_ctx *ctx, orc_tensor *loss) { return orc_backward_hooked(ctx, loss, NULL, NULL); }

void orc_zero_grad(orc_tensor *t) {
    if (t && t->grad) memset(t->grad, 0, (size_t)t->numel * sizeof(float));
}
