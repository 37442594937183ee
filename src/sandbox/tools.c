/* The tool dispatcher: the table of all tools (gathered from the tools_*.c
 * files), their JSON schemas in OpenAI function-calling form, validation of
 * an agent's JSON arguments against a schema, and running a call inside one
 * transaction with its trace entry, optionally logged as the execution
 * environment's reply. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox_internal.h"

static const sb_tool *const GROUPS[] = {sb_contact_tools, sb_message_tools, sb_reminder_tools,
                                        sb_setting_tools, sb_utility_tools, sb_search_tools};
#define N_GROUPS ((int)(sizeof GROUPS / sizeof GROUPS[0]))

static const sb_tool *tool_at(int i) {
    if (i < 0) return NULL;
    for (int g = 0; g < N_GROUPS; g++)
        for (const sb_tool *t = GROUPS[g]; t->name; t++)
            if (i-- == 0) return t;
    return NULL;
}

static const sb_tool *tool_named(const char *name) {
    for (int g = 0; g < N_GROUPS; g++)
        for (const sb_tool *t = GROUPS[g]; t->name; t++)
            if (name && strcmp(t->name, name) == 0) return t;
    return NULL;
}

int orc_sandbox_tool_count(void) {
    int n = 0;
    while (tool_at(n)) n++;
    return n;
}

const char *orc_sandbox_tool_name(int i) {
    const sb_tool *t = tool_at(i);
    return t ? t->name : NULL;
}

static json_t *schema_of(const sb_tool *t) {
    json_t *props = json_object(), *required = json_array();
    for (const sb_arg *a = t->args; a->name; a++) {
        json_object_set_new(props, a->name, json_pack("{s:s, s:s}", "type", a->type, "description", a->description));
        if (a->required) json_array_append_new(required, json_string(a->name));
    }
    json_t *params = json_pack("{s:s, s:o, s:o, s:b}", "type", "object", "properties", props, "required", required,
                               "additionalProperties", 0);
    return json_pack("{s:s, s:{s:s, s:s, s:o}}", "type", "function", "function", "name", t->name, "description",
                     t->description, "parameters", params);
}

json_t *orc_sandbox_tool_schema(int i) {
    const sb_tool *t = tool_at(i);
    return t ? schema_of(t) : NULL;
}

json_t *orc_sandbox_tool_schemas(void) {
    json_t *all = json_array();
    for (int i = 0; tool_at(i); i++) json_array_append_new(all, schema_of(tool_at(i)));
    return all;
}

void orc_tool_result_free(orc_tool_result *r) {
    if (!r) return;
    free(r->result);
    free(r->exception);
    free(r->trace);
    r->result = r->exception = r->trace = NULL;
}

/* ---- validation --------------------------------------------------------------------- */

static const char *json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static int type_ok(const char *type, const json_t *v) {
    if (strcmp(type, "string") == 0) return json_is_string(v);
    if (strcmp(type, "number") == 0) return json_is_number(v);
    if (strcmp(type, "integer") == 0) return json_is_integer(v);
    if (strcmp(type, "boolean") == 0) return json_is_boolean(v);
    return 0;
}

/* 0 when args fit the tool's schema, else -1 with the exception naming the
 * argument. A null stands for an absent optional argument. */
static int validate(const sb_tool *t, json_t *args, sb_exc *e) {
    if (!json_is_object(args)) {
        sb_raise(e, "%s: arguments must be a JSON object, got %s", t->name, json_type_name(args));
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(args, key, v) {
        const sb_arg *a = t->args;
        while (a->name && strcmp(a->name, key) != 0) a++;
        if (!a->name) {
            sb_raise(e, "%s: unexpected argument '%s'", t->name, key);
            return -1;
        }
        if (json_is_null(v) && !a->required) continue;
        if (!type_ok(a->type, v)) {
            sb_raise(e, "%s: argument '%s' must be of type %s, got %s", t->name, key, a->type, json_type_name(v));
            return -1;
        }
    }
    for (const sb_arg *a = t->args; a->name; a++)
        if (a->required && !json_object_get(args, a->name)) {
            sb_raise(e, "%s: missing required argument '%s'", t->name, a->name);
            return -1;
        }
    return 0;
}

/* ---- running a call ----------------------------------------------------------------- */

static int blank(const char *s) {
    if (!s) return 1;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    return *s == 0;
}

static char *dump(json_t *v) {
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
}

/* Run a validated call in a transaction: committed when it returns a result,
 * rolled back when it raises. */
static json_t *run_in_transaction(orc_sandbox *sb, const sb_tool *t, json_t *args, sb_exc *e) {
    if (sqlite3_exec(sb->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) return sb_internal(e, sb, "begin");
    json_t *result = t->run(sb, args, e);
    if (result && sqlite3_exec(sb->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        json_decref(result);
        result = sb_internal(e, sb, "commit");
    }
    if (!result) {
        if (!e->msg[0]) sb_raise(e, "%s: failed", t->name);
        sqlite3_exec(sb->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return result;
}

orc_status orc_sandbox_invoke(orc_sandbox *sb, const char *name, const char *args_json, orc_tool_result *out,
                              orc_error *err) {
    memset(out, 0, sizeof *out);
    sb_exc e = {{0}, 0};
    json_t *args = NULL, *result = NULL;
    const sb_tool *t = tool_named(name);
    if (!t) {
        sb_raise(&e, "no tool named '%s'", name ? name : "(null)");
    } else {
        json_error_t je;
        args = blank(args_json) ? json_object() : json_loads(args_json, JSON_DECODE_ANY, &je);
        if (!args)
            sb_raise(&e, "%s: arguments are not valid JSON (column %d: %s)", t->name, je.column, je.text);
        else if (validate(t, args, &e) == 0)
            result = run_in_transaction(sb, t, args, &e);
    }
    if (e.internal) {
        json_decref(args);
        json_decref(result);
        return orc_error_set(err, ORC_EIO, "%s", e.msg);
    }
    json_t *trace = json_pack("{s:s}", "tool_name", name ? name : "");
    json_object_set_new(trace, "arguments", args ? json_incref(args) : json_string(args_json ? args_json : ""));
    if (result) {
        json_object_set(trace, "result", result);
        out->result = dump(result);
    } else {
        json_object_set_new(trace, "exception", json_string(e.msg));
        out->exception = strdup(e.msg);
    }
    out->trace = dump(trace);
    json_decref(trace);
    json_decref(args);
    json_decref(result);
    if (!out->trace || (!out->result && !out->exception)) {
        orc_tool_result_free(out);
        return orc_error_set(err, ORC_ENOMEM, "sandbox: out of memory");
    }
    return ORC_OK;
}

orc_status orc_sandbox_call(orc_sandbox *sb, const char *tool_call_id, const char *name, const char *args_json,
                            orc_tool_result *out, int64_t *index, orc_error *err) {
    orc_status s = orc_sandbox_invoke(sb, name, args_json, out, err);
    if (s != ORC_OK) return s;
    size_t n = strlen(out->trace);
    char *trace = malloc(n + 3);
    if (!trace) {
        orc_tool_result_free(out);
        return orc_error_set(err, ORC_ENOMEM, "sandbox: out of memory");
    }
    trace[0] = '[';
    memcpy(trace + 1, out->trace, n);
    trace[n + 1] = ']';
    trace[n + 2] = 0;
    orc_log_message m = {.sender = "execution_environment",
                         .recipient = "agent",
                         .content = out->result ? out->result : out->exception,
                         .tool_call_id = tool_call_id,
                         .tool_name = name,
                         .tool_trace = trace,
                         .exception = out->exception};
    s = orc_sandbox_log_append(sb, &m, index, err);
    free(trace);
    if (s != ORC_OK) orc_tool_result_free(out);
    return s;
}
