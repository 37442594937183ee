/* Shared between the play loop, the roles, the scenario parser, the
 * evaluator and the runner: the parsed scenario and its milestones. */
#ifndef ORCHARD_SANDBOX_PLAY_INTERNAL_H
#define ORCHARD_SANDBOX_PLAY_INTERNAL_H

#include <jansson.h>

#include "orchard/sandbox_play.h"

/* One milestone or minefield: a constraint of `kind` on `table`, compared
 * column by column (columns: {name: {"value", "similarity", "tolerance"}}). */
typedef struct sb_milestone {
    const char *id;
    const char *kind;  /* snapshot, addition, removal, update, tool_trace, guardrail */
    const char *table; /* log for tool_trace */
    json_t *columns;   /* borrowed from the scenario document */
    int *after;        /* indices of the milestones this one follows */
    int n_after;
    double threshold;  /* a minefield matches at >= threshold (default 1) */
} sb_milestone;

struct orc_sb_scenario {
    json_t *doc;
    const char *name;
    json_t *categories;      /* array of strings */
    json_t *setup;           /* array of {"tool", "arguments"} */
    const char *system_prompt, *first_user_message, *user_instructions, *user_boundary;
    json_t *demonstrations;  /* array of {"role": "user"|"agent", "content"} */
    json_t *tools;           /* the schemas offered to the agent (after the augmentation) */
    json_t *needed;          /* real names: tools_allow (default all) minus tools_deny */
    json_t *pool;            /* real names a distraction tool is drawn from: the others, minus tools_deny */
    json_t *name_map;        /* offered name -> real name, one per offered schema */
    const char *augmentation; /* one of orc_sb_augmentation_name() */
    int max_messages;
    double clock;
    sb_milestone *milestones, *minefields;
    int n_milestones, n_minefields;
};

/* Rebuild sc->tools and sc->name_map for augmentation index a (augment.c). */
int sb_scenario_apply(orc_sb_scenario *sc, int a, orc_error *err);

#endif
