/* Private layout of orc_optim, shared by the files in src/optim: the groups
 * as copied at creation, one slot per parameter with pointers to its state
 * buffers, and the arena that owns all of it. */
#ifndef ORCHARD_OPTIM_INTERNAL_H
#define ORCHARD_OPTIM_INTERNAL_H

#include "orchard/arena.h"
#include "orchard/optim.h"

typedef enum optim_kind { KIND_ADAMW, KIND_SGD } optim_kind;

/* One parameter and its state buffers (NULL where the rule keeps none). */
typedef struct optim_slot {
    orc_tensor *param;
    float *buf[2];  /* AdamW: exp_avg, exp_avg_sq; SGD: momentum_buffer */
} optim_slot;

typedef struct optim_group {
    optim_slot *slots;
    int n;
    float lr_mult;
    float weight_decay;
} optim_group;

/* One entry per state buffer, in enumeration order. */
typedef struct optim_state_ref {
    const char *name;
    float *data;
    int64_t numel;
    const orc_tensor *param;
} optim_state_ref;

struct orc_optim {
    optim_kind kind;
    orc_arena *arena;  /* owns this struct's arrays, names and state buffers */
    optim_group *groups;
    int n_groups;
    int64_t step;
    orc_adamw_opts adamw;
    orc_sgd_opts sgd;
    optim_state_ref *states;
    int n_states;
};

/* The update rules (update.c). */
void orc_optim_adamw_update(orc_optim *o, float lr);
void orc_optim_sgd_update(orc_optim *o, float lr);

#endif
