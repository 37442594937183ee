/* The update rules: AdamW (decoupled weight decay, bias-corrected moments)
 * and SGD with momentum, both with PyTorch's formulas (see orchard/optim.h).
 * Per-step scalars (bias corrections, decay factors) are computed once in
 * double; the per-element work is float32 and elementwise, so splitting it
 * across threads cannot change a result. */
#include "optim_internal.h"

#include <math.h>

/* Below this many elements a parameter is updated by one thread: forking a
 * team costs more than the work. */
#define PARALLEL_MIN 8192

static void adamw_param(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                        int64_t n, float decay, float b1, float b2, float step_size, float sqrt_bc2, float eps) {
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i];
        const float mi = b1 * m[i] + c1 * gi;
        const float vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / sqrt_bc2 + eps;
        p[i] = p[i] * decay - step_size * mi / denom;
    }
}

void orc_optim_adamw_update(orc_optim *o, float lr) {
    const double t = (double)(o->step + 1);
    const double bc1 = 1.0 - pow((double)o->adamw.beta1, t);
    const double bc2 = 1.0 - pow((double)o->adamw.beta2, t);
    for (int g = 0; g < o->n_groups; g++) {
        const optim_group *grp = &o->groups[g];
        const double lr_g = (double)lr * (double)grp->lr_mult;
        /* PyTorch multiplies by (1 - lr * wd) before the Adam step; with no
         * decay the factor is exactly 1 and leaves p untouched. */
        const float decay = (float)(1.0 - lr_g * (double)grp->weight_decay);
        const float step_size = (float)(lr_g / bc1);
        const float sqrt_bc2 = (float)sqrt(bc2);
        for (int i = 0; i < grp->n; i++) {
            const optim_slot *s = &grp->slots[i];
            adamw_param(orc_f32(s->param), s->param->grad, s->buf[0], s->buf[1], s->param->numel, decay,
                        o->adamw.beta1, o->adamw.beta2, step_size, sqrt_bc2, o->adamw.eps);
        }
    }
}

/* Plain SGD (momentum 0): p -= lr * (g + wd * p). */
static void sgd_plain(float *restrict p, const float *restrict g, int64_t n, float lr, float wd) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float d = g[i] + wd * p[i];
        p[i] -= lr * d;
    }
}

/* With momentum. first: the buffer starts as d itself (PyTorch), which
 * differs from a zero start only when dampening != 0. */
static void sgd_momentum(float *restrict p, const float *restrict g, float *restrict buf, int64_t n, float lr,
                         float wd, float mu, float damp, bool nesterov, bool first) {
    const float keep = 1.0f - damp;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] + wd * p[i];
        const float b = first ? d : mu * buf[i] + keep * d;
        buf[i] = b;
        d = nesterov ? d + mu * b : b;
        p[i] -= lr * d;
    }
}

void orc_optim_sgd_update(orc_optim *o, float lr) {
    const orc_sgd_opts *opt = &o->sgd;
    for (int g = 0; g < o->n_groups; g++) {
        const optim_group *grp = &o->groups[g];
        const float lr_g = (float)((double)lr * (double)grp->lr_mult);
        for (int i = 0; i < grp->n; i++) {
            const optim_slot *s = &grp->slots[i];
            if (opt->momentum == 0.0f)
                sgd_plain(orc_f32(s->param), s->param->grad, s->param->numel, lr_g, grp->weight_decay);
            else
                sgd_momentum(orc_f32(s->param), s->param->grad, s->buf[0], s->param->numel, lr_g,
                             grp->weight_decay, opt->momentum, opt->dampening, opt->nesterov, o->step == 0);
        }
    }
}
