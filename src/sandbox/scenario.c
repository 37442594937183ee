/* Scenario files: parsing and validating a scenario's JSON (metadata, the
 * starting state as setup tool calls, the user's instructions, boundary and
 * demonstrations, tool allow/deny lists, milestones and minefields with their
 * DAG), the needed tools and the distraction pool the offered list is built
 * from (augment.c), and opening a sandbox in
 * the scenario's starting state. Every problem is an ORC_EFORMAT naming the
 * file and the field, so a bad scenario is reported, never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "play_internal.h"

/* The columns a constraint may name, per table (see orchard/sandbox.h). */
static const struct {
    const char *table;
    const char *columns[11];
} COLUMNS[] = {
    {"log", {"sender", "recipient", "content", "tool_call_id", "tool_name", "tool_trace", "visible_to",
             "conversation_active", "exception", NULL}},
    {"settings", {"cellular", "wifi", "location_service", "low_battery_mode", "latitude", "longitude", NULL}},
    {"contacts", {"person_id", "name", "phone_number", "relationship", "is_self", NULL}},
    {"messages", {"message_id", "sender_person_id", "sender_phone_number", "recipient_person_id",
                  "recipient_phone_number", "content", "creation_timestamp", NULL}},
    {"reminders", {"reminder_id", "content", "creation_timestamp", "reminder_timestamp", "latitude", "longitude",
                   NULL}},
};
static const char *TRACE_COLUMNS[] = {"tool_name", "arguments", "result", NULL};
static const char *KINDS[] = {"snapshot", "addition", "removal", "update", "tool_trace", "guardrail", NULL};
static const char *SIMILARITIES[] = {"exact", "rouge_l", "contains", "numeric", "tool_args", NULL};

static int in_list(const char *const *list, const char *s) {
    for (int i = 0; list[i]; i++)
        if (s && strcmp(list[i], s) == 0) return 1;
    return 0;
}

static const char *const *columns_of(const char *table) {
    for (size_t i = 0; i < sizeof COLUMNS / sizeof COLUMNS[0]; i++)
        if (table && strcmp(COLUMNS[i].table, table) == 0) return COLUMNS[i].columns;
    return NULL;
}

static int tool_known(const char *name) {
    for (int i = 0; i < orc_sandbox_tool_count(); i++)
        if (name && strcmp(orc_sandbox_tool_name(i), name) == 0) return 1;
    return 0;
}

/* An optional string field; a present non-string is an error. */
static int opt_string(json_t *doc, const char *key, const char **out, const char *where, orc_error *err) {
    json_t *v = json_object_get(doc, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) {
        orc_error_set(err, ORC_EFORMAT, "scenario %s: '%s' must be a string", where, key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* An optional array of strings. */
static int string_array(json_t *doc, const char *key, json_t **out, const char *where, orc_error *err) {
    json_t *v = json_object_get(doc, key);
    *out = v;
    if (!v) return 0;
    size_t i;
    json_t *s;
    if (!json_is_array(v)) goto bad;
    json_array_foreach(v, i, s) if (!json_is_string(s)) goto bad;
    return 0;
bad:
    orc_error_set(err, ORC_EFORMAT, "scenario %s: '%s' must be an array of strings", where, key);
    return -1;
}

/* The tool schemas offered: the allow list (default all) minus the deny list. */
static int build_tools(orc_sb_scenario *sc, const char *where, orc_error *err) {
    json_t *allow, *deny;
    if (string_array(sc->doc, "tools_allow", &allow, where, err) || string_array(sc->doc, "tools_deny", &deny, where, err))
        return -1;
    json_t *lists[2] = {allow, deny};
    for (int l = 0; l < 2; l++) {
        size_t i;
        json_t *s;
        json_array_foreach(lists[l], i, s) if (!tool_known(json_string_value(s))) {
            orc_error_set(err, ORC_EFORMAT, "scenario %s: %s names an unknown tool '%s'", where,
                          l ? "tools_deny" : "tools_allow", json_string_value(s));
            return -1;
        }
    }
    /* needed: the allow list (default all) minus the deny list; pool: every
     * other tool not denied, where distraction tools come from. */
    sc->needed = json_array();
    sc->pool = json_array();
    for (int t = 0; t < orc_sandbox_tool_count(); t++) {
        const char *name = orc_sandbox_tool_name(t);
        int allowed = 1, denied = 0;
        size_t i;
        json_t *s;
        if (allow) {
            allowed = 0;
            json_array_foreach(allow, i, s) allowed |= strcmp(json_string_value(s), name) == 0;
        }
        json_array_foreach(deny, i, s) denied |= strcmp(json_string_value(s), name) == 0;
        if (!denied) json_array_append_new(allowed ? sc->needed : sc->pool, json_string(name));
    }
    return sb_scenario_apply(sc, 0, err);
}

static int check_columns(const sb_milestone *m, const char *where, orc_error *err) {
    const char *const *allowed = strcmp(m->kind, "tool_trace") == 0 ? TRACE_COLUMNS : columns_of(m->table);
    const char *col;
    json_t *c;
    json_object_foreach(m->columns, col, c) {
        if (!in_list(allowed, col))
            return orc_error_set(err, ORC_EFORMAT, "scenario %s: milestone '%s' names an unknown column '%s' of %s",
                                 where, m->id, col, strcmp(m->kind, "tool_trace") == 0 ? "a tool trace" : m->table),
                   -1;
        if (!json_is_object(c) || !json_object_get(c, "value"))
            return orc_error_set(err, ORC_EFORMAT, "scenario %s: milestone '%s' column '%s' needs {\"value\": ...}",
                                 where, m->id, col),
                   -1;
        json_t *sim = json_object_get(c, "similarity");
        if (sim && !in_list(SIMILARITIES, json_string_value(sim)))
            return orc_error_set(err, ORC_EFORMAT,
                                 "scenario %s: milestone '%s' column '%s': similarity must be exact, rouge_l, "
                                 "contains, numeric or tool_args",
                                 where, m->id, col),
                   -1;
        json_t *tol = json_object_get(c, "tolerance");
        if (tol && (!json_is_number(tol) || json_number_value(tol) < 0))
            return orc_error_set(err, ORC_EFORMAT, "scenario %s: milestone '%s' column '%s': tolerance must be a number >= 0",
                                 where, m->id, col),
                   -1;
    }
    return 0;
}

/* Parse one list (milestones or minefields) of constraints. */
static int parse_constraints(orc_sb_scenario *sc, const char *key, sb_milestone **out, int *n_out, const char *where,
                             orc_error *err) {
    json_t *list = json_object_get(sc->doc, key);
    *out = NULL;
    *n_out = 0;
    if (!list) return 0;
    if (!json_is_array(list))
        return orc_error_set(err, ORC_EFORMAT, "scenario %s: '%s' must be an array", where, key), -1;
    int n = (int)json_array_size(list);
    sb_milestone *ms = calloc((size_t)n + 1, sizeof *ms);
    *out = ms;
    *n_out = n;
    if (!ms) return orc_error_set(err, ORC_ENOMEM, "scenario %s: out of memory", where), -1;
    for (int i = 0; i < n; i++) {
        json_t *j = json_array_get(list, (size_t)i);
        sb_milestone *m = &ms[i];
        m->threshold = 1.0;
        if (!json_is_object(j))
            return orc_error_set(err, ORC_EFORMAT, "scenario %s: %s[%d] must be an object", where, key, i), -1;
        m->id = json_string_value(json_object_get(j, "id"));
        if (!m->id) return orc_error_set(err, ORC_EFORMAT, "scenario %s: %s[%d] needs a string 'id'", where, key, i), -1;
        for (int k = 0; k < i; k++)
            if (strcmp(ms[k].id, m->id) == 0)
                return orc_error_set(err, ORC_EFORMAT, "scenario %s: %s: duplicate id '%s'", where, key, m->id), -1;
        m->kind = json_string_value(json_object_get(j, "kind"));
        if (!in_list(KINDS, m->kind))
            return orc_error_set(err, ORC_EFORMAT,
                                 "scenario %s: %s '%s': kind must be snapshot, addition, removal, update, "
                                 "tool_trace or guardrail",
                                 where, key, m->id),
                   -1;
        m->table = json_string_value(json_object_get(j, "table"));
        if (strcmp(m->kind, "tool_trace") == 0) m->table = "log";
        if (!columns_of(m->table))
            return orc_error_set(err, ORC_EFORMAT, "scenario %s: %s '%s': unknown table '%s'", where, key, m->id,
                                 m->table ? m->table : "(none)"),
                   -1;
        if ((!strcmp(m->kind, "addition") || !strcmp(m->kind, "removal") || !strcmp(m->kind, "update") ||
             !strcmp(m->kind, "guardrail")) &&
            !strcmp(m->table, "log"))
            return orc_error_set(err, ORC_EFORMAT, "scenario %s: %s '%s': a %s constraint needs a world table", where,
                                 key, m->id, m->kind),
                   -1;
        m->columns = json_object_get(j, "columns");
        if (m->columns && !json_is_object(m->columns))
            return orc_error_set(err, ORC_EFORMAT, "scenario %s: %s '%s': 'columns' must be an object", where, key,
                                 m->id),
                   -1;
        if (!m->columns && strcmp(m->kind, "guardrail") != 0)
            return orc_error_set(err, ORC_EFORMAT, "scenario %s: %s '%s' needs 'columns'", where, key, m->id), -1;
        if (m->columns && check_columns(m, where, err)) return -1;
        json_t *th = json_object_get(j, "threshold");
        if (th) {
            if (!json_is_number(th) || json_number_value(th) <= 0 || json_number_value(th) > 1)
                return orc_error_set(err, ORC_EFORMAT, "scenario %s: %s '%s': threshold must be in (0, 1]", where,
                                     key, m->id),
                       -1;
            m->threshold = json_number_value(th);
        }
    }
    /* Dependencies: ids of earlier or later milestones of the same list. */
    for (int i = 0; i < n; i++) {
        json_t *after = json_object_get(json_array_get(list, (size_t)i), "after");
        if (!after) continue;
        if (!json_is_array(after))
            return orc_error_set(err, ORC_EFORMAT, "scenario %s: %s '%s': 'after' must be an array of ids", where,
                                 key, ms[i].id),
                   -1;
        ms[i].after = calloc(json_array_size(after) + 1, sizeof(int));
        size_t k;
        json_t *id;
        json_array_foreach(after, k, id) {
            int found = -1;
            for (int q = 0; q < n; q++)
                if (json_is_string(id) && strcmp(ms[q].id, json_string_value(id)) == 0) found = q;
            if (found < 0 || found == i)
                return orc_error_set(err, ORC_EFORMAT, "scenario %s: %s '%s': 'after' names an unknown id", where,
                                     key, ms[i].id),
                       -1;
            ms[i].after[ms[i].n_after++] = found;
        }
    }
    /* The dependencies must form a DAG: repeatedly remove nodes with no
     * remaining predecessors. */
    int *done = calloc((size_t)n + 1, sizeof(int)), removed = 0, progress = 1;
    while (progress) {
        progress = 0;
        for (int i = 0; i < n; i++) {
            if (done[i]) continue;
            int ready = 1;
            for (int k = 0; k < ms[i].n_after; k++) ready &= done[ms[i].after[k]];
            if (ready) done[i] = 1, removed++, progress = 1;
        }
    }
    free(done);
    if (removed < n)
        return orc_error_set(err, ORC_EFORMAT, "scenario %s: %s: 'after' dependencies form a cycle", where, key), -1;
    return 0;
}

static int parse_setup(orc_sb_scenario *sc, const char *where, orc_error *err) {
    sc->setup = json_object_get(sc->doc, "setup");
    if (!sc->setup) return 0;
    size_t i;
    json_t *c;
    if (!json_is_array(sc->setup)) goto bad;
    json_array_foreach(sc->setup, i, c) {
        const char *tool = json_string_value(json_object_get(c, "tool"));
        if (!tool) goto bad;
        if (!tool_known(tool))
            return orc_error_set(err, ORC_EFORMAT, "scenario %s: setup[%zu] calls an unknown tool '%s'", where, i, tool),
                   -1;
    }
    return 0;
bad:
    return orc_error_set(err, ORC_EFORMAT, "scenario %s: 'setup' must be an array of {\"tool\", \"arguments\"}", where),
           -1;
}

orc_sb_scenario *orc_sb_scenario_parse(json_t *doc, const char *where, orc_error *err) {
    if (!json_is_object(doc)) {
        orc_error_set(err, ORC_EFORMAT, "scenario %s: the document must be a JSON object", where);
        return NULL;
    }
    orc_sb_scenario *sc = calloc(1, sizeof *sc);
    if (!sc) {
        orc_error_set(err, ORC_ENOMEM, "scenario %s: out of memory", where);
        return NULL;
    }
    sc->doc = json_incref(doc);
    sc->name = json_string_value(json_object_get(doc, "name"));
    int bad = 0;
    if (!sc->name || !sc->name[0]) {
        orc_error_set(err, ORC_EFORMAT, "scenario %s: needs a string 'name'", where);
        bad = 1;
    }
    bad = bad || opt_string(doc, "system_prompt", &sc->system_prompt, where, err) ||
          opt_string(doc, "first_user_message", &sc->first_user_message, where, err) ||
          opt_string(doc, "user_instructions", &sc->user_instructions, where, err) ||
          opt_string(doc, "user_boundary", &sc->user_boundary, where, err) ||
          string_array(doc, "categories", &sc->categories, where, err);
    if (!bad && !sc->first_user_message) {
        orc_error_set(err, ORC_EFORMAT, "scenario %s: needs a string 'first_user_message'", where);
        bad = 1;
    }
    if (!bad) {
        sc->demonstrations = json_object_get(doc, "user_demonstrations");
        if (sc->demonstrations && !json_is_array(sc->demonstrations)) {
            orc_error_set(err, ORC_EFORMAT, "scenario %s: 'user_demonstrations' must be an array", where);
            bad = 1;
        }
        json_t *mm = json_object_get(doc, "max_messages"), *clock = json_object_get(doc, "clock");
        sc->max_messages = mm ? (int)json_integer_value(mm) : 40;
        if (!bad && (sc->max_messages < 4 || sc->max_messages > 1000 || (mm && !json_is_integer(mm)))) {
            orc_error_set(err, ORC_EFORMAT, "scenario %s: 'max_messages' must be an integer in [4, 1000]", where);
            bad = 1;
        }
        if (!bad && clock && !json_is_number(clock)) {
            orc_error_set(err, ORC_EFORMAT, "scenario %s: 'clock' must be a Unix timestamp", where);
            bad = 1;
        }
        sc->clock = clock ? json_number_value(clock) : 0;
    }
    bad = bad || parse_setup(sc, where, err) || build_tools(sc, where, err) ||
          parse_constraints(sc, "milestones", &sc->milestones, &sc->n_milestones, where, err) ||
          parse_constraints(sc, "minefields", &sc->minefields, &sc->n_minefields, where, err);
    if (bad) {
        orc_sb_scenario_free(sc);
        return NULL;
    }
    return sc;
}

orc_sb_scenario *orc_sb_scenario_load(const char *path, orc_error *err) {
    json_error_t je;
    json_t *doc = json_load_file(path, 0, &je);
    if (!doc) {
        orc_error_set(err, ORC_EFORMAT, "scenario %s: line %d column %d: %s", path, je.line, je.column, je.text);
        return NULL;
    }
    orc_sb_scenario *sc = orc_sb_scenario_parse(doc, path, err);
    json_decref(doc);
    return sc;
}

static void free_list(sb_milestone *ms, int n) {
    for (int i = 0; ms && i < n; i++) free(ms[i].after);
    free(ms);
}

void orc_sb_scenario_free(orc_sb_scenario *sc) {
    if (!sc) return;
    free_list(sc->milestones, sc->n_milestones);
    free_list(sc->minefields, sc->n_minefields);
    json_decref(sc->tools);
    json_decref(sc->needed);
    json_decref(sc->pool);
    json_decref(sc->name_map);
    json_decref(sc->doc);
    free(sc);
}

const char *orc_sb_scenario_name(const orc_sb_scenario *sc) { return sc->name; }
json_t *orc_sb_scenario_json(const orc_sb_scenario *sc) { return sc->doc; }

orc_sandbox *orc_sb_scenario_world(const orc_sb_scenario *sc, orc_error *err) {
    orc_sandbox_opts o = {.clock = sc->clock};
    orc_sandbox *sb = orc_sandbox_open(&o, err);
    if (!sb) return NULL;
    size_t i;
    json_t *c;
    json_array_foreach(sc->setup, i, c) {
        json_t *args = json_object_get(c, "arguments");
        char *text = args ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        orc_tool_result r;
        orc_status s = orc_sandbox_invoke(sb, json_string_value(json_object_get(c, "tool")), text ? text : "", &r, err);
        free(text);
        if (s == ORC_OK && r.exception)
            s = orc_error_set(err, ORC_EFORMAT, "scenario %s: setup[%zu] raised: %s", sc->name, i, r.exception);
        orc_tool_result_free(&r);
        if (s != ORC_OK) {
            orc_sandbox_close(sb);
            return NULL;
        }
    }
    return sb;
}
