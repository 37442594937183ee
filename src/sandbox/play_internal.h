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
    json_t *tools;           /* the schemas offered to the agent */
    int max_messages;
    double clock;
    sb_milestone *milestones, *minefields;
    int n_milestones, n_minefields;
};

/* 1 when tool `name` is offered in the scenario. */
int sb_scenario_allows(const orc_sb_scenario *sc, const char *name);

#endif
