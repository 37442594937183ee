/* orchard/autograd.h: the graph context and reverse-mode differentiation.
 *
 * An orc_ctx is the state one forward/backward pass needs: the arena that
 * holds activations (reset each step), the tape of recorded ops, the no-grad
 * and training switches, the random stream for dropout, and the first error.
 * Ops (orchard/ops.h) record a node on the tape when any input requires a
 * gradient and no-grad is off; in no-grad mode they record nothing and save
 * nothing, so inference pays no autograd cost. orc_backward walks the tape
 * in reverse and each node's hand-written backward accumulates into its
 * inputs' gradient buffers.
 *
 * Errors in a graph are sticky: the first failing op stores its message in
 * ctx->err and returns NULL; every later op given a NULL input or a failed
 * context returns NULL too, so model code checks once, at the end. */
#ifndef ORCHARD_AUTOGRAD_H
#define ORCHARD_AUTOGRAD_H

#include <stdbool.h>
#include <stdint.h>

#include "orchard/arena.h"
#include "orchard/error.h"
#include "orchard/rng.h"
#include "orchard/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ORC_NODE_MAX_INPUTS 4

struct orc_ctx;
struct orc_node;
typedef void (*orc_backward_fn)(struct orc_ctx *ctx, struct orc_node *node);

/* One recorded op. in[] are the inputs that gradients flow into (entries may
 * be tensors that do not require grad; backward fns skip those). Small
 * attributes go in iattr/fattr, anything larger in saved (arena memory). */
typedef struct orc_node {
    orc_backward_fn backward;
    const char *op;
    orc_tensor *out;
    orc_tensor *in[ORC_NODE_MAX_INPUTS];
    int n_in;
    int64_t iattr[8];
    float fattr[4];
    void *saved;
    struct orc_node *prev;
} orc_node;

typedef struct orc_ctx {
    orc_arena *arena;   /* activations, saved values, activation grads */
    orc_node *tape;     /* most recent node; walk ->prev */
    int64_t n_nodes;
    bool no_grad;       /* record nothing */
    bool training;      /* dropout active */
    orc_rng rng;
    orc_error err;      /* first error; err.code != ORC_OK means failed */
} orc_ctx;

/* arena: where activations go (the caller owns it and resets it with
 * orc_ctx_reset). seed: dropout's random stream. */
void orc_ctx_init(orc_ctx *ctx, orc_arena *arena, uint64_t seed);
/* End of a step: forget the tape, reset the arena, clear the error. The rng
 * counter continues so that the next step draws fresh numbers. */
void orc_ctx_reset(orc_ctx *ctx);
static inline bool orc_ctx_ok(const orc_ctx *ctx) { return ctx->err.code == ORC_OK; }
const char *orc_ctx_message(const orc_ctx *ctx);

/* Switch no-grad mode; returns the previous setting so callers can restore it. */
bool orc_set_no_grad(orc_ctx *ctx, bool no_grad);

/* Seed loss's gradient with 1 (loss must have one element) and run every
 * recorded backward in reverse order. Gradients add into existing buffers:
 * parameters keep theirs across calls (gradient accumulation) until
 * orc_zero_grad. Fails on a context that already holds an error. */
orc_status orc_backward(orc_ctx *ctx, orc_tensor *loss);
/* Same, with a caller-supplied output gradient (grad has out's numel). */
orc_status orc_backward_with(orc_ctx *ctx, orc_tensor *out, const float *grad);
/* orc_backward that calls hook(user, k) right after the k-th node of the
 * walk (k = 0: the newest node; every node counts, also those no gradient
 * reached). After node k, no later node writes into the gradient of a
 * tensor that only nodes 0..k take as an input, so a caller can start
 * using those gradients early (the data-parallel all-reduce overlapped with
 * backward, orchard/dist.h). */
typedef void (*orc_backward_hook)(void *user, int64_t k);
orc_status orc_backward_hooked(orc_ctx *ctx, orc_tensor *loss, orc_backward_hook hook, void *user);

/* Set a parameter's (or any tensor's) gradient to zero. */
void orc_zero_grad(orc_tensor *t);

/* ---- For op implementers (src/ops) ---------------------------------- */

/* True when the op must record: not no-grad and some input requires grad. */
bool orc_needs_grad(const orc_ctx *ctx, int n, orc_tensor *const *inputs);
/* Append a node producing out; marks out as requiring grad. NULL (with the
 * error set) when the arena is full. */
orc_node *orc_record(orc_ctx *ctx, const char *op, orc_tensor *out, orc_backward_fn backward,
                     int n_in, orc_tensor *const *inputs);
/* The gradient buffer of t, allocated zero-filled in ctx->arena on first use;
 * NULL when t does not require grad (the backward skips that input). */
float *orc_grad(orc_ctx *ctx, orc_tensor *t);
/* A new contiguous output tensor in ctx->arena (NULL + error when out of memory). */
orc_tensor *orc_new(orc_ctx *ctx, orc_dtype dt, int ndim, const int64_t *shape);
/* Set the context's error (first wins) and return NULL, for one-line failures:
 *   if (x->ndim != 2) return orc_fail(ctx, ORC_ESHAPE, "matmul: ...");   */
void *orc_fail(orc_ctx *ctx, orc_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Common entry checks: ctx ok, every pointer non-NULL (a NULL means an
 * earlier op failed), every tensor on the CPU. Returns false to bail out. */
bool orc_op_begin(orc_ctx *ctx, const char *op, int n, orc_tensor *const *inputs);

#ifdef __cplusplus
}
#endif
#endif
