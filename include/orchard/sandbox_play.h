/* orchard/sandbox_play.h: playing and scoring ToolSandbox conversations
 * (issue 9, second increment): roles and the play loop, scripted and
 * OpenAI-compatible HTTP agents and user simulators, scenarios read from JSON
 * files, milestone/minefield evaluation, and running a directory of scenarios
 * into trajectory files and a summary. docs/sandbox.md describes the file
 * formats and the scoring rules.
 *
 * A role answers with a reply object (JSON):
 *   agent: {"content": TEXT, "recipient": "user"|"execution_environment"}
 *          or {"tool_calls": [{"id": ID, "name": NAME, "arguments": TEXT}]}
 *          or {"mistake": TEXT} (the agent produced something unusable: an
 *          invalid reply is scored as the agent's mistake, never fatal)
 *   user:  {"content": TEXT} or {"end": true} (ends the conversation)
 * A role's error status means the role itself could not answer (transport,
 * missing script): the scenario is reported as an error, the run goes on. */
#ifndef ORCHARD_SANDBOX_PLAY_H
#define ORCHARD_SANDBOX_PLAY_H

#include <jansson.h>

#include "orchard/sandbox.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orc_sb_scenario orc_sb_scenario;

/* ---- roles ------------------------------------------------------------------ */
typedef struct orc_sb_role orc_sb_role;
struct orc_sb_role {
    const char *kind; /* "agent" or "user" */
    /* history: the log rows visible to this role (JSON array of log objects);
     * tools: the tool schemas offered (agent only; NULL for the user). */
    orc_status (*respond)(orc_sb_role *r, const orc_sb_scenario *sc, json_t *history, json_t *tools, json_t **reply,
                          orc_error *err);
    void (*destroy)(orc_sb_role *r);
    void *impl;
};
void orc_sb_role_free(orc_sb_role *r);

/* A scripted role replaying the "agent" or "user" turns of a trajectory file
 * {"agent": [turn...], "user": [turn...]} in order (turns are reply objects;
 * an agent tool call's "arguments" may be an object or text, "id" optional).
 * An exhausted agent tells the user it has nothing more; an exhausted user
 * ends the conversation. */
orc_sb_role *orc_sb_script_role(const char *kind, const char *path, orc_error *err);
/* The same from a parsed trajectory (the role keeps a reference). */
orc_sb_role *orc_sb_script_role_json(const char *kind, json_t *trajectory);

typedef struct orc_sb_http_opts {
    const char *base_url; /* e.g. http://127.0.0.1:8080/v1; NULL: env */
    const char *model;    /* NULL: env, else "default" */
    const char *api_key;  /* NULL: env, else none */
    long timeout_s;       /* 0: 120 */
} orc_sb_http_opts;
/* An agent or user simulator over an OpenAI-compatible chat endpoint (POST
 * BASE_URL/chat/completions). Unset options come from the environment:
 * ORCHARD_AGENT_URL / ORCHARD_AGENT_MODEL / ORCHARD_AGENT_KEY for the agent,
 * ORCHARD_USER_URL / ORCHARD_USER_MODEL / ORCHARD_USER_KEY for the user, then
 * OPENAI_BASE_URL / OPENAI_API_KEY. */
orc_sb_role *orc_sb_http_role(const char *kind, const orc_sb_http_opts *opts, orc_error *err);
/* The user simulator's system prompt for a scenario (malloc'd). */
char *orc_sb_user_prompt(const orc_sb_scenario *sc);

/* ---- scenarios -------------------------------------------------------------- */
/* Parse a scenario file; a malformed file, an unknown tool in an allow or
 * deny list, a milestone on an unknown table or column is ORC_EFORMAT with a
 * message naming the file and the place. */
orc_sb_scenario *orc_sb_scenario_load(const char *path, orc_error *err);
orc_sb_scenario *orc_sb_scenario_parse(json_t *doc, const char *where, orc_error *err);
void orc_sb_scenario_free(orc_sb_scenario *sc);
const char *orc_sb_scenario_name(const orc_sb_scenario *sc);
json_t *orc_sb_scenario_json(const orc_sb_scenario *sc); /* the parsed document (borrowed) */
/* Open a sandbox in the scenario's starting state (setup calls at index 0). */
orc_sandbox *orc_sb_scenario_world(const orc_sb_scenario *sc, orc_error *err);

/* ---- augmentations ---------------------------------------------------------- */
/* The paper's 8 variants of a scenario, differing only in the tool list the
 * agent is offered (docs/sandbox.md):
 *   0 distraction_0               the needed tools (tools_allow minus tools_deny)
 *   1 distraction_3               plus 3 distraction tools
 *   2 distraction_10              plus 10 distraction tools
 *   3 all_tools                   plus every other tool that is not denied
 *   4 tool_name_scrambled         distraction_3, tool names replaced by tool_NN
 *   5 tool_description_scrambled  distraction_3, tool descriptions removed
 *   6 arg_description_scrambled   distraction_3, argument descriptions removed
 *   7 arg_type_scrambled          distraction_3, argument types removed
 * Distraction tools are never needed or denied ones; they are drawn by a
 * shuffle seeded from ORC_SB_AUGMENT_SEED and the scenario's name, so the 3
 * are among the 10 and every run picks the same. Calls name the offered tools;
 * the execution environment maps them back to the real tools, so tool traces
 * (and the constraints on them) carry real names. */
#define ORC_SB_AUGMENTATIONS 8
#define ORC_SB_AUGMENT_SEED 9u
const char *orc_sb_augmentation_name(int i); /* NULL outside [0, 8) */
int orc_sb_augmentation_index(const char *name); /* -1 when unknown */
/* Parse "all" (or NULL) or a comma-separated list of names into which[0..n)
 * (indices, in the list's order, no repeats); returns n, or -1 with an error
 * naming the unknown entry. which has room for ORC_SB_AUGMENTATIONS. */
int orc_sb_augmentations_parse(const char *spec, int *which, orc_error *err);
/* Offer the scenario's tools as augmentation `name` (NULL: distraction_0, the
 * state a scenario is loaded in). An unknown name is ORC_EINVAL. */
orc_status orc_sb_scenario_augment(orc_sb_scenario *sc, const char *name, orc_error *err);
const char *orc_sb_scenario_augmentation(const orc_sb_scenario *sc);
json_t *orc_sb_scenario_tools(const orc_sb_scenario *sc); /* the offered schemas (borrowed) */
/* The real tool behind an offered name, and the offered name of a real tool;
 * NULL when it is not offered. */
const char *orc_sb_scenario_real_tool(const orc_sb_scenario *sc, const char *offered);
const char *orc_sb_scenario_offered_tool(const orc_sb_scenario *sc, const char *real);

/* ---- the play loop ---------------------------------------------------------- */
typedef struct orc_sb_play_result {
    int messages;   /* rows in the log */
    int user_turns; /* user messages to the agent, the first one included */
    int mistakes;   /* invalid agent replies and tool calls that raised */
    int ended;      /* 1: the user ended it; 0: the message limit */
} orc_sb_play_result;
/* Play a scenario in sb (fresh from orc_sb_scenario_world): the system
 * messages, the first user message, then hand each message to its recipient
 * until the user ends the conversation or max_messages (0: the scenario's,
 * default 40) is reached. */
orc_status orc_sb_play(orc_sandbox *sb, const orc_sb_scenario *sc, orc_sb_role *agent, orc_sb_role *user,
                       int max_messages, orc_sb_play_result *res, orc_error *err);

/* ---- evaluation ------------------------------------------------------------- */
/* Score the conversation in sb against the scenario: a new object
 * {"score", "milestones": [{"id","similarity","index"}], "minefields":
 * [{"id","similarity","index","matched"}], "minefield_hit"}. */
orc_status orc_sb_evaluate(orc_sandbox *sb, const orc_sb_scenario *sc, json_t **out, orc_error *err);
/* The similarity functions (also used by the tests). */
double orc_sb_rouge_l(const char *a, const char *b);

/* ---- running a directory ---------------------------------------------------- */
typedef struct orc_sb_run_opts {
    const char *agent;         /* URL, or script:PATH (a trajectory file or a directory of <scenario>.oracle.json) */
    const char *user;          /* the same */
    const char *scenarios_dir; /* *.json, in name order */
    const char *out_dir;       /* created if absent */
    const char *model, *api_key; /* for URL roles; NULL: environment */
    int max_messages;          /* 0: each scenario's */
    const char *augment;       /* "all" or NULL: the 8 variants; else a comma-separated list */
} orc_sb_run_opts;
/* Run every scenario in every chosen augmentation:
 * OUT/<scenario>.<augmentation>.trajectory.json each and OUT/summary.json.
 * A scenario that cannot be parsed or played gets an "error" entry; only a
 * failure to read the directory or write the output is an error status. */
orc_status orc_sb_run(const orc_sb_run_opts *o, json_t **summary, orc_error *err);
/* The report of a run directory: a JSON object by category and augmentation
 * (new reference) and its Markdown table (malloc'd). */
orc_status orc_sb_report(const char *dir, json_t **report, char **markdown, orc_error *err);

#ifdef __cplusplus
}
#endif
#endif
