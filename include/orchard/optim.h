/* orchard/optim.h: optimizers, gradient clipping and learning-rate schedules.
 *
 * An orc_optim updates parameters (orc_param_new leaves, each with its own
 * gradient buffer) from their gradients. It holds parameter groups, each with
 * its own learning-rate multiplier and weight decay, and the state the update
 * rule needs between steps (AdamW's moment estimates, SGD's momentum buffers)
 * plus a step counter. It owns its state: everything it allocates lives in one
 * private arena released by orc_optim_free. It does not own the parameters;
 * they must outlive it. The update is elementwise, so results are the same for
 * any thread count. State buffers and the step counter are exposed (see
 * orc_optim_state_get) so that a checkpoint can save and restore them.
 *
 * A training step with gradient accumulation over n micro-batches:
 *
 *     orc_optim_zero_grad(opt);
 *     for (int k = 0; k < n; k++) {
 *         loss_k = model(micro-batch k);            // mean over its own tokens
 *         loss_k = orc_scale(ctx, loss_k, 1.0f / n); // so the sum is the mean
 *         orc_backward(ctx, loss_k);                 // adds into param grads
 *         orc_ctx_reset(ctx);                        // activations only
 *     }
 *     orc_optim_clip_grad_norm(opt, 1.0);            // optional
 *     orc_optim_step(opt, orc_lr_at(&sched, step), &err);
 *
 * Parameter gradients persist across orc_backward calls until zeroed, so n
 * backward passes over equal-sized micro-batches with the loss scaled by 1/n
 * give the gradient of the mean loss over the whole batch. */
#ifndef ORCHARD_OPTIM_H
#define ORCHARD_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "orchard/error.h"
#include "orchard/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One parameter group as the caller describes it. The optimizer copies the
 * array of pointers (not the tensors). A group's effective learning rate is
 * lr * lr_mult; weight_decay 0 turns decay off for the group (biases, norm
 * weights, embeddings, ...). */
typedef struct orc_param_group {
    orc_tensor *const *params;
    int n_params;
    float lr_mult;       /* usually 1 */
    float weight_decay;  /* AdamW: decoupled; SGD: L2 added to the gradient */
} orc_param_group;

/* A group with lr_mult 1. */
static inline orc_param_group orc_group(orc_tensor *const *params, int n_params, float weight_decay) {
    orc_param_group g = {params, n_params, 1.0f, weight_decay};
    return g;
}

typedef struct orc_adamw_opts {
    float beta1;  /* 0.9 is usual */
    float beta2;  /* 0.999 (0.95 for LMs) */
    float eps;    /* 1e-8 */
} orc_adamw_opts;

typedef struct orc_sgd_opts {
    float momentum;   /* 0 means plain SGD (no state) */
    float dampening;  /* 0 is usual; must be 0 with nesterov */
    bool nesterov;
} orc_sgd_opts;

typedef struct orc_optim orc_optim;

/* AdamW, PyTorch semantics: per step t (counted from 1), for each parameter
 *   p *= 1 - lr_g * wd_g
 *   m = beta1 * m + (1 - beta1) * g
 *   v = beta2 * v + (1 - beta2) * g * g
 *   p -= lr_g / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * with lr_g = lr * lr_mult. State: "<name>.exp_avg" and "<name>.exp_avg_sq"
 * per parameter, zero at start.
 * Returns NULL and fills err for an empty group list, a NULL, non-float32,
 * non-contiguous or gradient-less parameter, a parameter listed twice, or
 * betas outside [0, 1). */
orc_optim *orc_adamw_new(const orc_param_group *groups, int n_groups, orc_adamw_opts opts, orc_error *err);

/* SGD with momentum, PyTorch semantics: d = g + wd_g * p; with momentum,
 * buf = d on the first step, then buf = momentum * buf + (1 - dampening) * d;
 * d = nesterov ? d + momentum * buf : buf; p -= lr_g * d.
 * State (only when momentum != 0): "<name>.momentum_buffer". */
orc_optim *orc_sgd_new(const orc_param_group *groups, int n_groups, orc_sgd_opts opts, orc_error *err);

/* Release the optimizer and all its state (not the parameters). NULL is fine. */
void orc_optim_free(orc_optim *o);

/* "adamw" or "sgd". */
const char *orc_optim_kind(const orc_optim *o);

/* One update of every parameter with learning rate lr (times each group's
 * multiplier); then the step counter is one higher. lr must be finite and
 * >= 0 (ORC_EINVAL otherwise, nothing changed). Gradients are left as they
 * are; zero them before the next accumulation. */
orc_status orc_optim_step(orc_optim *o, float lr, orc_error *err);

/* Change group g's learning-rate multiplier from the next step on (0
 * freezes the group exactly: AdamW then moves neither by the update nor by
 * the decay). ORC_EINVAL for a group out of range or a multiplier that is
 * negative or not finite, nothing changed. */
orc_status orc_optim_set_lr_mult(orc_optim *o, int g, float lr_mult, orc_error *err);

/* Set every parameter gradient of every group to zero. */
void orc_optim_zero_grad(orc_optim *o);

/* Global-norm clipping, PyTorch's clip_grad_norm_: the L2 norm of all the
 * gradients together (accumulated in double, parameter by parameter in the
 * given order, each in fixed blocks summed in order, so the same for any
 * thread count). When norm > max_norm every gradient is multiplied by
 * max_norm / (norm + 1e-6). Returns the norm before clipping. When the norm
 * is not finite the gradients are left unchanged (the caller should skip the
 * step). */
double orc_clip_grad_norm(orc_tensor *const *params, int n_params, double max_norm);
/* The same over all parameters of o, group by group. */
double orc_optim_clip_grad_norm(orc_optim *o, double max_norm);
/* The norm alone, nothing changed. */
double orc_grad_norm(orc_tensor *const *params, int n_params);

/* ---- state, for checkpoints ------------------------------------------- */

/* One state buffer: a contiguous float32 array of numel values (the same
 * count as its parameter's), owned by the optimizer. A checkpoint saves data
 * under name and restores it by copying into data. */
typedef struct orc_optim_state {
    const char *name;         /* "<param name>.exp_avg" etc.; "param<i>" for unnamed params */
    float *data;
    int64_t numel;
    const orc_tensor *param;  /* the parameter it belongs to (for its shape) */
} orc_optim_state;

/* Number of state buffers, and buffer i (0 <= i < count) in a fixed order:
 * group by group, parameter by parameter, each parameter's buffers in the
 * order listed above. An out-of-range i gives an all-zero struct. */
int orc_optim_state_count(const orc_optim *o);
orc_optim_state orc_optim_state_get(const orc_optim *o, int i);

/* Steps taken so far (AdamW's bias correction uses it). Restoring a
 * checkpoint sets it back; a negative value is ORC_EINVAL. */
int64_t orc_optim_get_step(const orc_optim *o);
orc_status orc_optim_set_step(orc_optim *o, int64_t step, orc_error *err);

/* ---- learning-rate schedules ------------------------------------------- */

typedef enum orc_lr_kind {
    ORC_LR_CONSTANT = 0,       /* max_lr at every step */
    ORC_LR_WARMUP_COSINE = 1,  /* linear warmup, cosine decay, then min_lr */
} orc_lr_kind;

/* Warmup + cosine, steps counted from 0:
 *   step < W:            max_lr * (step + 1) / W   (reaches max_lr at W - 1)
 *   W <= step < total:   min_lr + (max_lr - min_lr) * (1 + cos(pi * (step - W) / (total - W))) / 2
 *   step >= total:       min_lr
 * W = warmup_steps (0: no warmup), total = total_steps. */
typedef struct orc_lr_schedule {
    orc_lr_kind kind;
    float max_lr;
    float min_lr;
    int64_t warmup_steps;
    int64_t total_steps;
} orc_lr_schedule;

/* The learning rate for step (computed in double, returned as float). A
 * negative step counts as 0. */
float orc_lr_at(const orc_lr_schedule *s, int64_t step);

/* ORC_EINVAL with a message for negative or non-finite rates, min_lr >
 * max_lr, negative step counts, or total_steps < warmup_steps. */
orc_status orc_lr_schedule_check(const orc_lr_schedule *s, orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
