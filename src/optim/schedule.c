/* Learning-rate schedules: constant, and linear warmup followed by a cosine
 * decay to a floor (see orchard/optim.h for the exact formula). Computed in
 * double so that the value for a step does not depend on how it is reached. */
#include "orchard/optim.h"

#include <math.h>

float orc_lr_at(const orc_lr_schedule *s, int64_t step) {
    if (step < 0) step = 0;
    const double max_lr = s->max_lr, min_lr = s->min_lr;
    if (s->kind == ORC_LR_CONSTANT) return s->max_lr;
    const int64_t w = s->warmup_steps > 0 ? s->warmup_steps : 0;
    if (step < w) return (float)(max_lr * (double)(step + 1) / (double)w);
    const int64_t decay = s->total_steps - w;
    if (decay <= 0 || step >= s->total_steps) return s->min_lr;
    const double progress = (double)(step - w) / (double)decay;
    return (float)(min_lr + (max_lr - min_lr) * 0.5 * (1.0 + cos(M_PI * progress)));
}

orc_status orc_lr_schedule_check(const orc_lr_schedule *s, orc_error *err) {
    if (s->kind != ORC_LR_CONSTANT && s->kind != ORC_LR_WARMUP_COSINE)
        return orc_error_set(err, ORC_EINVAL, "lr schedule: unknown kind %d", (int)s->kind);
    if (!isfinite(s->max_lr) || s->max_lr < 0)
        return orc_error_set(err, ORC_EINVAL, "lr schedule: max_lr %g must be finite and >= 0", (double)s->max_lr);
    if (s->kind == ORC_LR_CONSTANT) return ORC_OK;
    if (!isfinite(s->min_lr) || s->min_lr < 0 || s->min_lr > s->max_lr)
        return orc_error_set(err, ORC_EINVAL, "lr schedule: min_lr %g must be finite and in [0, max_lr = %g]",
                             (double)s->min_lr, (double)s->max_lr);
    if (s->warmup_steps < 0 || s->total_steps < s->warmup_steps)
        return orc_error_set(err, ORC_EINVAL, "lr schedule: need 0 <= warmup_steps (%lld) <= total_steps (%lld)",
                             (long long)s->warmup_steps, (long long)s->total_steps);
    return ORC_OK;
}
