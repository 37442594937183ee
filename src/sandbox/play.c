/* The play loop and the scripted roles. The loop seeds the log with the
 * system messages (the agent's system prompt, the user simulator's prompt)
 * and the first user message, then hands the conversation to the last
 * message's recipient: the agent answers the user or calls tools, which the
 * execution environment runs through the dispatcher (one reply per call id,
 * tools outside the scenario's offered list refused like unknown ones, an
 * offered name mapped back to its real tool, and the agent's view of the
 * log naming tools only by their offered names), the user
 * answers the agent or ends the conversation. An unusable agent reply is
 * logged as the agent's mistake and the agent gets another turn, so the
 * message limit bounds every conversation. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "play_internal.h"

#define DEFAULT_SYSTEM_PROMPT                                                                                        \
    "You are a helpful assistant on the user's phone. Use the tools to act on the user's behalf. When information " \
    "is missing, ask the user; never make up values. Reply to the user in plain text."

void orc_sb_role_free(orc_sb_role *r) {
    if (r && r->destroy) r->destroy(r);
}

/* ---- scripted roles ------------------------------------------------------------ */

typedef struct script {
    json_t *turns;
    size_t next;
} script;

/* A copy of a scripted turn with tool call ids filled in, arguments as text
 * and real tool names turned into the names the augmentation offers
 * (trajectories are written with real names; a tool that is not offered
 * keeps its name, so a planted call of a denied tool stays one). */
static json_t *normalise_turn(const orc_sb_scenario *sc, json_t *turn, size_t n) {
    json_t *reply = json_deep_copy(turn);
    json_t *calls = json_object_get(reply, "tool_calls");
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        if (!json_object_get(c, "id")) {
            char id[48];
            snprintf(id, sizeof id, "call_%zu_%zu", n, i);
            json_object_set_new(c, "id", json_string(id));
        }
        const char *offered = sc ? orc_sb_scenario_offered_tool(sc, json_string_value(json_object_get(c, "name")))
                                 : NULL;
        if (offered) json_object_set_new(c, "name", json_string(offered));
        json_t *a = json_object_get(c, "arguments");
        if (a && !json_is_string(a)) {
            char *text = json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY);
            json_object_set_new(c, "arguments", json_string(text ? text : ""));
            free(text);
        }
    }
    return reply;
}

static orc_status script_respond(orc_sb_role *r, const orc_sb_scenario *sc, json_t *history, json_t *tools,
                                 json_t **reply, orc_error *err) {
    (void)history, (void)tools, (void)err;
    script *s = r->impl;
    if (s->next < json_array_size(s->turns)) {
        *reply = normalise_turn(sc, json_array_get(s->turns, s->next), s->next);
        s->next++;
    } else if (strcmp(r->kind, "agent") == 0) {
        *reply = json_pack("{s:s, s:s}", "content", "I have nothing more to add.", "recipient", "user");
    } else {
        *reply = json_pack("{s:b}", "end", 1);
    }
    return ORC_OK;
}

static void script_destroy(orc_sb_role *r) {
    script *s = r->impl;
    json_decref(s->turns);
    free(s);
    free(r);
}

orc_sb_role *orc_sb_script_role_json(const char *kind, json_t *trajectory) {
    orc_sb_role *r = calloc(1, sizeof *r);
    script *s = calloc(1, sizeof *s);
    if (!r || !s) {
        free(r);
        free(s);
        return NULL;
    }
    json_t *turns = json_object_get(trajectory, strcmp(kind, "agent") == 0 ? "agent" : "user");
    s->turns = json_is_array(turns) ? json_incref(turns) : json_array();
    r->kind = strcmp(kind, "agent") == 0 ? "agent" : "user";
    r->respond = script_respond;
    r->destroy = script_destroy;
    r->impl = s;
    return r;
}

orc_sb_role *orc_sb_script_role(const char *kind, const char *path, orc_error *err) {
    json_error_t je;
    json_t *doc = json_load_file(path, 0, &je);
    if (!doc) {
        orc_error_set(err, ORC_EFORMAT, "trajectory %s: line %d: %s", path, je.line, je.text);
        return NULL;
    }
    json_t *turns = json_object_get(doc, kind);
    if (turns && !json_is_array(turns)) {
        orc_error_set(err, ORC_EFORMAT, "trajectory %s: '%s' must be an array of turns", path, kind);
        json_decref(doc);
        return NULL;
    }
    orc_sb_role *r = orc_sb_script_role_json(kind, doc);
    json_decref(doc);
    if (!r) orc_error_set(err, ORC_ENOMEM, "trajectory %s: out of memory", path);
    return r;
}

/* ---- the loop -------------------------------------------------------------------- */

/* The log rows whose visible_to names `role`. */
/* Text with every real tool name that the scenario offers under another name
 * (tool_name_scrambled) replaced by that name, as whole words; malloc'ed. */
static char *offered_names_in(const orc_sb_scenario *sc, const char *text) {
    char *cur = strdup(text);
    const char *offered;
    json_t *v;
    json_object_foreach(sc->name_map, offered, v) {
        const char *real = json_string_value(v);
        size_t rl = strlen(real), ol = strlen(offered);
        if (!cur || strcmp(real, offered) == 0 || !strstr(cur, real)) continue;
        size_t cap = strlen(cur) / rl * (ol > rl ? ol : rl) + strlen(cur) + 1, k = 0;
        char *out = malloc(cap);
        if (!out) {
            free(cur);
            return NULL;
        }
        for (const char *p = cur; *p;) {
            const char *hit = strstr(p, real);
            int word = hit && (hit == cur || !(isalnum((unsigned char)hit[-1]) || hit[-1] == '_')) &&
                       !(isalnum((unsigned char)hit[rl]) || hit[rl] == '_');
            size_t upto = hit ? (size_t)(hit - p) : strlen(p);
            memcpy(out + k, p, upto);
            k += upto;
            if (!hit) break;
            memcpy(out + k, word ? offered : real, word ? ol : rl);
            k += word ? ol : rl;
            p = hit + rl;
        }
        out[k] = '\0';
        free(cur);
        cur = out;
    }
    return cur;
}

/* A log row as the agent sees it under a name-scrambling augmentation: the
 * tool names in it, its text and its trace are the offered ones, so an error
 * message never gives away which real tool an offered name stands for. */
static void offer_row_names(const orc_sb_scenario *sc, json_t *row) {
    static const char *const FIELDS[] = {"tool_name", "content", "exception", "tool_trace"};
    for (size_t f = 0; f < sizeof FIELDS / sizeof *FIELDS; f++) {
        const char *text = json_string_value(json_object_get(row, FIELDS[f]));
        char *swapped = text ? offered_names_in(sc, text) : NULL;
        if (swapped) json_object_set_new(row, FIELDS[f], json_string(swapped));
        free(swapped);
    }
}

static orc_status visible_history(orc_sandbox *sb, const orc_sb_scenario *sc, const char *role, json_t **out,
                                  orc_error *err) {
    json_t *log = NULL;
    orc_status s = orc_sandbox_read(sb, "log", -1, &log, err);
    if (s != ORC_OK) return s;
    json_t *seen = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(log, i, row) {
        json_t *vis = json_loads(json_string_value(json_object_get(row, "visible_to")), 0, NULL);
        size_t k;
        json_t *v;
        int shown = 0;
        json_array_foreach(vis, k, v) shown |= strcmp(json_string_value(v), role) == 0;
        json_decref(vis);
        if (shown && sc && strcmp(role, "agent") == 0) offer_row_names(sc, row);
        if (shown) json_array_append(seen, row);
    }
    json_decref(log);
    *out = seen;
    return ORC_OK;
}

static orc_status say(orc_sandbox *sb, const char *from, const char *to, const char *content, int ends,
                      orc_error *err) {
    orc_log_message m = {.sender = from, .recipient = to, .content = content, .ends_conversation = ends};
    return orc_sandbox_log_append(sb, &m, NULL, err);
}

/* The execution environment's reply to something the agent got wrong. */
static orc_status refuse(orc_sandbox *sb, const char *call_id, const char *tool, const char *args, const char *why,
                         orc_error *err) {
    json_t *trace = NULL;
    char *trace_text = NULL;
    if (tool) {
        trace = json_pack("[{s:s, s:s, s:s}]", "tool_name", tool, "arguments", args ? args : "", "exception", why);
        trace_text = json_dumps(trace, JSON_COMPACT);
    }
    orc_log_message m = {.sender = "execution_environment", .recipient = "agent", .content = why,
                         .tool_call_id = call_id, .tool_name = tool, .tool_trace = trace_text, .exception = why};
    orc_status s = orc_sandbox_log_append(sb, &m, NULL, err);
    free(trace_text);
    json_decref(trace);
    return s;
}

static orc_status run_tool_calls(orc_sandbox *sb, const orc_sb_scenario *sc, json_t *calls, int max,
                                 orc_sb_play_result *res, orc_error *err) {
    size_t i;
    json_t *c;
    orc_status s = ORC_OK;
    /* First the agent's calls, then one reply per call id. */
    json_array_foreach(calls, i, c) {
        if (orc_sandbox_head(sb) >= max) return ORC_OK;
        orc_log_message m = {.sender = "agent", .recipient = "execution_environment",
                             .content = json_string_value(json_object_get(c, "arguments")),
                             .tool_call_id = json_string_value(json_object_get(c, "id")),
                             .tool_name = json_string_value(json_object_get(c, "name"))};
        if ((s = orc_sandbox_log_append(sb, &m, NULL, err)) != ORC_OK) return s;
    }
    json_array_foreach(calls, i, c) {
        if (orc_sandbox_head(sb) >= max) return ORC_OK;
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *args = json_string_value(json_object_get(c, "arguments"));
        /* The agent names the offered tool; the call runs the real one, so
         * the reply and its trace carry the real name. */
        const char *real = orc_sb_scenario_real_tool(sc, name);
        if (!real) {
            char why[300];
            snprintf(why, sizeof why, "no tool named '%s'", name ? name : "(none)");
            res->mistakes++;
            s = refuse(sb, id, name ? name : "", args, why, err);
        } else {
            orc_tool_result r;
            s = orc_sandbox_call(sb, id, real, args ? args : "", &r, NULL, err);
            if (s == ORC_OK && r.exception) res->mistakes++;
            if (s == ORC_OK) orc_tool_result_free(&r);
        }
        if (s != ORC_OK) return s;
    }
    return ORC_OK;
}

/* The agent's turn; *next gets the role that speaks after it. */
static orc_status agent_turn(orc_sandbox *sb, const orc_sb_scenario *sc, orc_sb_role *agent, int max,
                             orc_sb_play_result *res, const char **next, orc_error *err) {
    json_t *hist = NULL, *reply = NULL;
    orc_status s = visible_history(sb, sc, "agent", &hist, err);
    if (s == ORC_OK) s = agent->respond(agent, sc, hist, sc->tools, &reply, err);
    json_decref(hist);
    if (s != ORC_OK) return s;
    *next = "agent";
    json_t *calls = json_object_get(reply, "tool_calls");
    const char *content = json_string_value(json_object_get(reply, "content"));
    const char *to = json_string_value(json_object_get(reply, "recipient"));
    const char *mistake = json_string_value(json_object_get(reply, "mistake"));
    if (!to) to = "user";
    if (mistake) {
        res->mistakes++;
        char why[512];
        snprintf(why, sizeof why, "invalid agent reply: %s", mistake);
        s = refuse(sb, NULL, NULL, NULL, why, err);
    } else if (json_array_size(calls) > 0) {
        s = run_tool_calls(sb, sc, calls, max, res, err);
    } else if (content && strcmp(to, "user") == 0) {
        s = say(sb, "agent", "user", content, 0, err);
        *next = "user";
    } else if (content && strcmp(to, "execution_environment") == 0) {
        /* Plain text to the execution environment: a wrong recipient. */
        res->mistakes++;
        s = say(sb, "agent", "execution_environment", content, 0, err);
        if (s == ORC_OK && orc_sandbox_head(sb) < max)
            s = refuse(sb, NULL, NULL, NULL, "the execution environment only runs tool calls", err);
    } else {
        res->mistakes++;
        s = refuse(sb, NULL, NULL, NULL, "invalid agent reply: neither content for a known recipient nor tool calls",
                   err);
    }
    json_decref(reply);
    return s;
}

orc_status orc_sb_play(orc_sandbox *sb, const orc_sb_scenario *sc, orc_sb_role *agent, orc_sb_role *user,
                       int max_messages, orc_sb_play_result *res, orc_error *err) {
    memset(res, 0, sizeof *res);
    int max = max_messages > 0 ? max_messages : sc->max_messages;
    char *prompt = orc_sb_user_prompt(sc);
    if (!prompt) return orc_error_set(err, ORC_ENOMEM, "sandbox play: out of memory");
    orc_status s = say(sb, "system", "agent", sc->system_prompt ? sc->system_prompt : DEFAULT_SYSTEM_PROMPT, 0, err);
    if (s == ORC_OK) s = say(sb, "system", "user", prompt, 0, err);
    if (s == ORC_OK) s = say(sb, "user", "agent", sc->first_user_message, 0, err);
    free(prompt);
    res->user_turns = 1;
    const char *turn = "agent";
    while (s == ORC_OK && orc_sandbox_head(sb) < max) {
        if (strcmp(turn, "agent") == 0) {
            s = agent_turn(sb, sc, agent, max, res, &turn, err);
            continue;
        }
        json_t *hist = NULL, *reply = NULL;
        s = visible_history(sb, sc, "user", &hist, err);
        if (s == ORC_OK) s = user->respond(user, sc, hist, NULL, &reply, err);
        json_decref(hist);
        if (s != ORC_OK) break;
        const char *content = json_string_value(json_object_get(reply, "content"));
        int ends = json_is_true(json_object_get(reply, "end")) || !content;
        s = say(sb, "user", "agent", content ? content : "", ends, err);
        json_decref(reply);
        if (ends) {
            res->ended = 1;
            break;
        }
        res->user_turns++;
        turn = "agent";
    }
    res->messages = (int)orc_sandbox_head(sb);
    return s;
}
