/* The optimizer container (see orchard/optim.h): checking and copying the
 * parameter groups, allocating every state buffer once in a private arena,
 * naming the buffers for checkpoints, the step counter, zero_grad and the
 * step entry point that hands off to the update rules in update.c. */
#include "optim_internal.h"

#include "orchard/autograd.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Small chunks: a tiny optimizer should not reserve 16 MiB; large state
 * buffers get chunks of their own anyway. */
#define OPTIM_ARENA_CHUNK ((size_t)64 << 10)

static const char *param_label(char *buf, size_t cap, const orc_tensor *p, int index) {
    if (p && p->name) snprintf(buf, cap, "%s", p->name);
    else snprintf(buf, cap, "param%d", index);
    return buf;
}

/* Every parameter must be an updatable float32 leaf with a gradient buffer
 * and appear only once (a duplicate would be updated twice per step). */
static orc_status check_groups(const char *who, const orc_param_group *groups, int n_groups, orc_error *err) {
    if (!groups || n_groups <= 0)
        return orc_error_set(err, ORC_EINVAL, "%s: no parameter groups (n_groups = %d)", who, n_groups);
    int index = 0;
    for (int g = 0; g < n_groups; g++) {
        const orc_param_group *grp = &groups[g];
        if (grp->n_params < 0 || (grp->n_params > 0 && !grp->params))
            return orc_error_set(err, ORC_EINVAL, "%s: group %d has no parameter array (n_params = %d)", who, g,
                                 grp->n_params);
        if (!isfinite(grp->lr_mult) || grp->lr_mult < 0 || !isfinite(grp->weight_decay) || grp->weight_decay < 0)
            return orc_error_set(err, ORC_EINVAL, "%s: group %d has lr_mult %g and weight_decay %g; both must be "
                                 "finite and >= 0", who, g, (double)grp->lr_mult, (double)grp->weight_decay);
        for (int i = 0; i < grp->n_params; i++, index++) {
            const orc_tensor *p = grp->params[i];
            char name[96], desc[160];
            if (!p) return orc_error_set(err, ORC_EINVAL, "%s: group %d, parameter %d is NULL", who, g, i);
            param_label(name, sizeof name, p, index);
            orc_tensor_desc(desc, sizeof desc, p);
            if (p->dtype != ORC_F32 || p->device != ORC_DEV_CPU)
                return orc_error_set(err, ORC_EDTYPE, "%s: parameter %s must be a float32 CPU tensor", who, desc);
            if (!orc_is_contiguous(p))
                return orc_error_set(err, ORC_EINVAL, "%s: parameter %s is not contiguous", who, desc);
            if (!p->requires_grad || !p->grad)
                return orc_error_set(err, ORC_EINVAL, "%s: parameter %s has no gradient buffer (make it with "
                                     "orc_param_new)", who, desc);
            for (int h = 0; h <= g; h++) {
                int end = h == g ? i : groups[h].n_params;
                for (int j = 0; j < end; j++)
                    if (groups[h].params[j] == p)
                        return orc_error_set(err, ORC_EINVAL, "%s: parameter %s is listed twice (group %d and "
                                             "group %d)", who, name, h, g);
            }
        }
    }
    return ORC_OK;
}

static int buffers_per_param(const orc_optim *o) {
    if (o->kind == KIND_ADAMW) return 2;
    return o->sgd.momentum != 0.0f ? 1 : 0;
}

static const char *buffer_suffix(const orc_optim *o, int k) {
    if (o->kind == KIND_ADAMW) return k == 0 ? "exp_avg" : "exp_avg_sq";
    return "momentum_buffer";
}

/* Copy the groups, allocate the zeroed state and build the name table. */
static orc_optim *build(optim_kind kind, const char *who, const orc_param_group *groups, int n_groups,
                        const orc_adamw_opts *adamw, const orc_sgd_opts *sgd, orc_error *err) {
    if (check_groups(who, groups, n_groups, err) != ORC_OK) return NULL;
    orc_arena *a = orc_arena_create(OPTIM_ARENA_CHUNK);
    if (!a) { orc_error_set(err, ORC_ENOMEM, "%s: out of memory", who); return NULL; }
    orc_optim *o = orc_arena_calloc(a, 1, sizeof *o);
    if (!o) goto oom;
    o->kind = kind;
    o->arena = a;
    if (adamw) o->adamw = *adamw;
    if (sgd) o->sgd = *sgd;
    o->n_groups = n_groups;
    o->groups = orc_arena_calloc(a, (size_t)n_groups, sizeof *o->groups);
    if (!o->groups) goto oom;
    const int per = buffers_per_param(o);
    int total = 0;
    for (int g = 0; g < n_groups; g++) total += groups[g].n_params;
    o->n_states = total * per;
    if (o->n_states > 0) {
        o->states = orc_arena_calloc(a, (size_t)o->n_states, sizeof *o->states);
        if (!o->states) goto oom;
    }
    int index = 0, s = 0;
    for (int g = 0; g < n_groups; g++) {
        optim_group *dst = &o->groups[g];
        dst->n = groups[g].n_params;
        dst->lr_mult = groups[g].lr_mult;
        dst->weight_decay = groups[g].weight_decay;
        if (dst->n > 0) {
            dst->slots = orc_arena_calloc(a, (size_t)dst->n, sizeof *dst->slots);
            if (!dst->slots) goto oom;
        }
        for (int i = 0; i < dst->n; i++, index++) {
            optim_slot *slot = &dst->slots[i];
            slot->param = groups[g].params[i];
            for (int k = 0; k < per; k++) {
                slot->buf[k] = orc_arena_calloc(a, (size_t)slot->param->numel, sizeof(float));
                if (!slot->buf[k]) goto oom;
                char label[96], name[160];
                param_label(label, sizeof label, slot->param, index);
                snprintf(name, sizeof name, "%s.%s", label, buffer_suffix(o, k));
                optim_state_ref *ref = &o->states[s++];
                ref->name = orc_arena_strdup(a, name);
                if (!ref->name) goto oom;
                ref->data = slot->buf[k];
                ref->numel = slot->param->numel;
                ref->param = slot->param;
            }
        }
    }
    return o;
oom:
    orc_arena_destroy(a);
    orc_error_set(err, ORC_ENOMEM, "%s: out of memory for the optimizer state", who);
    return NULL;
}

static bool unit_interval(float b) { return isfinite(b) && b >= 0.0f && b < 1.0f; }

orc_optim *orc_adamw_new(const orc_param_group *groups, int n_groups, orc_adamw_opts opts, orc_error *err) {
    if (!unit_interval(opts.beta1) || !unit_interval(opts.beta2) || !isfinite(opts.eps) || opts.eps < 0) {
        orc_error_set(err, ORC_EINVAL, "adamw: betas (%g, %g) must be in [0, 1) and eps %g finite and >= 0",
                      (double)opts.beta1, (double)opts.beta2, (double)opts.eps);
        return NULL;
    }
    return build(KIND_ADAMW, "adamw", groups, n_groups, &opts, NULL, err);
}

orc_optim *orc_sgd_new(const orc_param_group *groups, int n_groups, orc_sgd_opts opts, orc_error *err) {
    if (!isfinite(opts.momentum) || opts.momentum < 0 || !isfinite(opts.dampening)) {
        orc_error_set(err, ORC_EINVAL, "sgd: momentum %g must be finite and >= 0, dampening %g finite",
                      (double)opts.momentum, (double)opts.dampening);
        return NULL;
    }
    if (opts.nesterov && (opts.momentum <= 0 || opts.dampening != 0)) {
        orc_error_set(err, ORC_EINVAL, "sgd: nesterov needs momentum > 0 and dampening 0 (got %g and %g)",
                      (double)opts.momentum, (double)opts.dampening);
        return NULL;
    }
    return build(KIND_SGD, "sgd", groups, n_groups, NULL, &opts, err);
}

void orc_optim_free(orc_optim *o) {
    if (o) orc_arena_destroy(o->arena); /* o itself lives in the arena */
}

const char *orc_optim_kind(const orc_optim *o) { return o->kind == KIND_ADAMW ? "adamw" : "sgd"; }

orc_status orc_optim_step(orc_optim *o, float lr, orc_error *err) {
    if (!o) return orc_error_set(err, ORC_EINVAL, "optim step: optimizer is NULL");
    if (!isfinite(lr) || lr < 0)
        return orc_error_set(err, ORC_EINVAL, "%s step %lld: learning rate %g must be finite and >= 0",
                             orc_optim_kind(o), (long long)o->step, (double)lr);
    if (o->kind == KIND_ADAMW) orc_optim_adamw_update(o, lr);
    else orc_optim_sgd_update(o, lr);
    o->step++;
    return ORC_OK;
}

void orc_optim_zero_grad(orc_optim *o) {
    for (int g = 0; g < o->n_groups; g++)
        for (int i = 0; i < o->groups[g].n; i++) orc_zero_grad(o->groups[g].slots[i].param);
}

int orc_optim_state_count(const orc_optim *o) { return o->n_states; }

orc_optim_state orc_optim_state_get(const orc_optim *o, int i) {
    orc_optim_state s = {0};
    if (i < 0 || i >= o->n_states) return s;
    const optim_state_ref *r = &o->states[i];
    s.name = r->name;
    s.data = r->data;
    s.numel = r->numel;
    s.param = r->param;
    return s;
}

int64_t orc_optim_get_step(const orc_optim *o) { return o->step; }

orc_status orc_optim_set_step(orc_optim *o, int64_t step, orc_error *err) {
    if (step < 0)
        return orc_error_set(err, ORC_EINVAL, "%s: step counter %lld must be >= 0", orc_optim_kind(o),
                             (long long)step);
    o->step = step;
    return ORC_OK;
}

orc_status orc_optim_set_lr_mult(orc_optim *o, int g, float lr_mult, orc_error *err) {
    if (g < 0 || g >= o->n_groups)
        return orc_error_set(err, ORC_EINVAL, "optimizer: group %d does not exist (%d groups)", g, o->n_groups);
    if (!isfinite(lr_mult) || lr_mult < 0)
        return orc_error_set(err, ORC_EINVAL, "optimizer: group %d's lr_mult %g must be finite and >= 0", g,
                             (double)lr_mult);
    o->groups[g].lr_mult = lr_mult;
    return ORC_OK;
}
