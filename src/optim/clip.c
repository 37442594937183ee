/* Global gradient norm and clipping over a list of parameters. The sum of
 * squares is accumulated in double in a fixed order: each parameter is cut
 * into fixed-size blocks, blocks are summed (in parallel, each by one
 * thread), and the block sums are added in block order, parameter by
 * parameter. The result therefore does not depend on the thread count. */
#include "optim_internal.h"

#include <math.h>

#define BLOCK 4096      /* elements per partial sum */
#define BATCH 64        /* blocks computed per parallel region */

static double block_sumsq(const float *g, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * (double)g[i];
    return s;
}

static double param_sumsq(const float *g, int64_t n) {
    const int64_t n_blocks = (n + BLOCK - 1) / BLOCK;
    double total = 0.0;
    for (int64_t b0 = 0; b0 < n_blocks; b0 += BATCH) {
        const int64_t nb = n_blocks - b0 < BATCH ? n_blocks - b0 : BATCH;
        double part[BATCH];
#pragma omp parallel for schedule(static) if (nb > 1)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t start = (b0 + b) * BLOCK;
            const int64_t len = n - start < BLOCK ? n - start : BLOCK;
            part[b] = block_sumsq(g + start, len);
        }
        for (int64_t b = 0; b < nb; b++) total += part[b];
    }
    return total;
}

static void scale_grad(float *g, int64_t n, float c) {
#pragma omp parallel for schedule(static) if (n >= 8192)
    for (int64_t i = 0; i < n; i++) g[i] *= c;
}

double orc_grad_norm(orc_tensor *const *params, int n_params) {
    double sumsq = 0.0;
    for (int i = 0; i < n_params; i++)
        if (params[i] && params[i]->grad) sumsq += param_sumsq(params[i]->grad, params[i]->numel);
    return sqrt(sumsq);
}

/* PyTorch's clip_grad_norm_: scale by max_norm / (norm + 1e-6) when above. */
static float clip_coef(double norm, double max_norm) {
    if (!isfinite(norm) || norm <= max_norm) return 1.0f;
    return (float)(max_norm / (norm + 1e-6));
}

double orc_clip_grad_norm(orc_tensor *const *params, int n_params, double max_norm) {
    const double norm = orc_grad_norm(params, n_params);
    const float c = clip_coef(norm, max_norm);
    if (c < 1.0f)
        for (int i = 0; i < n_params; i++)
            if (params[i] && params[i]->grad) scale_grad(params[i]->grad, params[i]->numel, c);
    return norm;
}

double orc_optim_clip_grad_norm(orc_optim *o, double max_norm) {
    double sumsq = 0.0;
    for (int g = 0; g < o->n_groups; g++)
        for (int i = 0; i < o->groups[g].n; i++) {
            const orc_tensor *p = o->groups[g].slots[i].param;
            sumsq += param_sumsq(p->grad, p->numel);
        }
    const double norm = sqrt(sumsq);
    const float c = clip_coef(norm, max_norm);
    if (c < 1.0f)
        for (int g = 0; g < o->n_groups; g++)
            for (int i = 0; i < o->groups[g].n; i++) {
                orc_tensor *p = o->groups[g].slots[i].param;
                scale_grad(p->grad, p->numel, c);
            }
    return norm;
}
