/* Request bodies of the OpenAI endpoints (see orchard/server.h): JSON text
 * -> a validated orc_api_request, or a 400 naming the field at fault. This
 * file owns every check a body alone can fail; checks that need the model
 * (the context length, the model's name, the embedding width) happen in the
 * HTTP layer. Absent and null fields mean the default, as OpenAI's clients
 * send null for unset options. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/server.h"

#define MAX_INPUTS 256
#define MAX_MESSAGES 4096

static void copy_field(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

bool orc_api_error_set(orc_api_error *e, int status, const char *type, const char *param, const char *code,
                       const char *fmt, ...) {
    if (!e) return false;
    e->status = status;
    copy_field(e->type, sizeof e->type, type);
    copy_field(e->param, sizeof e->param, param);
    copy_field(e->code, sizeof e->code, code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return false;
}

#define BAD(e, param, ...) orc_api_error_set(e, 400, "invalid_request_error", param, "", __VA_ARGS__)
#define UNSUPPORTED(e, param, ...) orc_api_error_set(e, 400, "invalid_request_error", param, "unsupported_parameter", __VA_ARGS__)

/* ---- typed field readers: absent or null leaves *out alone ------------------------ */

static json_t *field(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

static bool get_bool(json_t *o, const char *key, bool *out, orc_api_error *e) {
    json_t *v = field(o, key);
    if (!v) return true;
    if (!json_is_boolean(v)) return BAD(e, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return true;
}

static bool get_int(json_t *o, const char *key, long long lo, long long hi, bool *present, long long *out,
                    orc_api_error *e) {
    json_t *v = field(o, key);
    if (present) *present = v != NULL;
    if (!v) return true;
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15) {
        x = (long long)json_real_value(v); /* 4.0 from a client that only has doubles */
    } else {
        return BAD(e, key, "'%s' must be an integer", key);
    }
    if (x < lo || x > hi) return BAD(e, key, "'%s' must be between %lld and %lld, got %lld", key, lo, hi, x);
    *out = x;
    return true;
}

/* A number in [lo, hi] (lo excluded when lo_open). */
static bool get_num(json_t *o, const char *key, double lo, double hi, bool lo_open, float *out, orc_api_error *e) {
    json_t *v = field(o, key);
    if (!v) return true;
    if (!json_is_number(v)) return BAD(e, key, "'%s' must be a number", key);
    double x = json_number_value(v);
    if (!(lo_open ? x > lo : x >= lo) || !(x <= hi))
        return BAD(e, key, "'%s' must be %s %g and at most %g, got %g", key, lo_open ? "above" : "at least", lo, hi, x);
    *out = (float)x;
    return true;
}

/* A non-empty string field into a fresh copy. */
static char *dup_str(json_t *v) {
    size_t n = json_string_length(v);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, json_string_value(v), n);
        s[n] = 0;
    }
    return s;
}

/* ---- shared fields ---------------------------------------------------------------- */

static bool parse_model(json_t *root, orc_api_request *r, orc_api_error *e) {
    json_t *v = field(root, "model");
    if (!v) return true;
    if (!json_is_string(v)) return BAD(e, "model", "'model' must be a string");
    r->model = dup_str(v);
    return r->model ? true : orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
}

/* "adapters": ["name", {"name": "other", "weight": 0.5}, ...]; the names are
 * checked against the loaded adapters by the server. */
static bool parse_adapters(json_t *root, orc_api_request *r, orc_api_error *e) {
    json_t *v = field(root, "adapters");
    if (!v) return true;
    if (!json_is_array(v)) return BAD(e, "adapters", "'adapters' must be an array of adapter names");
    const size_t n = json_array_size(v);
    if (n > ORC_LORA_MAX_STACK)
        return BAD(e, "adapters", "'adapters' may hold at most %d adapters, got %zu", ORC_LORA_MAX_STACK, n);
    r->adapters = calloc(n ? n : 1, sizeof *r->adapters);
    r->adapter_weights = calloc(n ? n : 1, sizeof *r->adapter_weights);
    if (!r->adapters || !r->adapter_weights) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(v, i), *name = it;
        r->adapter_weights[i] = 1.0f;
        if (json_is_object(it)) {
            name = json_object_get(it, "name");
            json_t *w = field(it, "weight");
            if (w && !(json_is_number(w) && isfinite(json_number_value(w)) && fabs(json_number_value(w)) <= 1e6))
                return BAD(e, "adapters", "'adapters[%zu].weight' must be a finite number", i);
            if (w) r->adapter_weights[i] = (float)json_number_value(w);
        }
        if (!json_is_string(name) || json_string_length(name) == 0)
            return BAD(e, "adapters", "'adapters[%zu]' must be an adapter name or {\"name\": ..., \"weight\": ...}", i);
        if (!(r->adapters[i] = dup_str(name))) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
        r->n_adapters = i + 1;
    }
    return true;
}

static bool parse_stop(json_t *root, orc_api_request *r, orc_api_error *e) {
    json_t *v = field(root, "stop");
    if (!v) return true;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > ORC_API_MAX_STOP) return BAD(e, "stop", "'stop' may hold at most %d strings, got %zu", ORC_API_MAX_STOP, n);
    } else if (!json_is_string(v)) {
        return BAD(e, "stop", "'stop' must be a string or an array of strings");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(v) ? json_array_get(v, i) : items[0];
        if (!json_is_string(s)) return BAD(e, "stop", "'stop[%zu]' must be a string", i);
        if (json_string_length(s) == 0) return BAD(e, "stop", "'stop[%zu]' must not be empty", i);
        if (strlen(json_string_value(s)) != json_string_length(s))
            return BAD(e, "stop", "'stop[%zu]' must not contain NUL", i);
        if (!(r->stop[r->n_stop++] = dup_str(s))) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    }
    return true;
}

/* logit_bias: {"token id": bias in [-100, 100]}; the ids are checked
 * against the vocabulary by the HTTP layer. */
static bool parse_logit_bias(json_t *root, orc_api_request *r, orc_api_error *e) {
    json_t *lb = field(root, "logit_bias");
    if (!lb) return true;
    if (!json_is_object(lb)) return BAD(e, "logit_bias", "'logit_bias' must be an object of token id -> number");
    size_t n = json_object_size(lb);
    if (n > ORC_API_MAX_BIAS) return BAD(e, "logit_bias", "'logit_bias' may hold at most %d tokens", ORC_API_MAX_BIAS);
    if (n == 0) return true;
    r->bias_ids = malloc(sizeof *r->bias_ids * n);
    r->bias = malloc(sizeof *r->bias * n);
    if (!r->bias_ids || !r->bias) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(lb, key, v) {
        char *end = NULL;
        long long id = strtoll(key, &end, 10);
        if (!key[0] || *end || id < 0 || id >= ORC_TOK_MAX_VOCAB)
            return BAD(e, "logit_bias", "'logit_bias' keys must be token ids, got '%.40s'", key);
        if (!json_is_number(v) || json_number_value(v) < -100.0 || json_number_value(v) > 100.0)
            return BAD(e, "logit_bias", "'logit_bias[%.40s]' must be a number from -100 to 100", key);
        r->bias_ids[r->n_bias] = (int32_t)id;
        r->bias[r->n_bias++] = (float)json_number_value(v);
    }
    return true;
}

/* Sampling and length fields shared by chat and completions. */
static bool parse_sampling(json_t *root, orc_api_request *r, orc_api_error *e) {
    orc_sampler_opts *s = &r->sampler;
    bool present = false;
    long long x = 0;
    if (!get_num(root, "temperature", 0.0, 2.0, false, &s->temperature, e)) return false;
    if (!get_num(root, "top_p", 0.0, 1.0, true, &s->top_p, e)) return false;
    if (!get_num(root, "min_p", 0.0, 1.0, false, &s->min_p, e)) return false;
    if (!get_num(root, "repeat_penalty", 0.0, 100.0, true, &s->repeat_penalty, e)) return false;
    if (!get_int(root, "top_k", 0, ORC_TOK_MAX_VOCAB, &present, &x, e)) return false;
    if (present) s->top_k = x;
    if (!get_int(root, "seed", INT64_MIN, INT64_MAX, &r->has_seed, &x, e)) return false;
    if (r->has_seed) s->seed = (uint64_t)x;
    if (!get_int(root, "n", 1, ORC_API_MAX_N, &present, &x, e)) return false;
    if (present) r->n = (int)x;
    /* max_completion_tokens is the newer name; it wins when both are given. */
    if (!get_int(root, "max_tokens", 1, INT32_MAX, &present, &x, e)) return false;
    if (present) r->max_tokens = x;
    if (!get_int(root, "max_completion_tokens", 1, INT32_MAX, &present, &x, e)) return false;
    if (present) r->max_tokens = x;
    if (!get_bool(root, "stream", &r->stream, e)) return false;
    json_t *so = field(root, "stream_options");
    if (so) {
        if (!json_is_object(so)) return BAD(e, "stream_options", "'stream_options' must be an object");
        if (!get_bool(so, "include_usage", &r->include_usage, e)) {
            copy_field(e->param, sizeof e->param, "stream_options.include_usage");
            return false;
        }
    }
    if (!get_num(root, "presence_penalty", -2.0, 2.0, false, &r->presence_penalty, e)) return false;
    if (!get_num(root, "frequency_penalty", -2.0, 2.0, false, &r->frequency_penalty, e)) return false;
    if (!parse_logit_bias(root, r, e)) return false;
    return parse_stop(root, r, e);
}

/* ---- chat ------------------------------------------------------------------------ */

static const char *canonical_role(const char *role) {
    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    for (int i = 0; i < 4; i++)
        if (strcmp(role, roles[i]) == 0) return roles[i];
    if (strcmp(role, "developer") == 0) return "system"; /* OpenAI's newer name for system */
    return NULL;
}

/* A message's content: a string, or an array of {"type": "text", "text": ...}
 * parts that are joined. */
static bool message_content(json_t *msg, size_t i, const char *role, char **out, orc_api_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    json_t *c = field(msg, "content");
    if (!c) {
        if (strcmp(role, "assistant") != 0) return BAD(e, param, "'%s' is required for role '%s'", param, role);
        *out = strdup("");
        return *out ? true : orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    }
    if (json_is_string(c)) {
        if (strlen(json_string_value(c)) != json_string_length(c)) return BAD(e, param, "'%s' must not contain NUL", param);
        *out = dup_str(c);
        return *out ? true : orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    }
    if (!json_is_array(c)) return BAD(e, param, "'%s' must be a string or an array of content parts", param);
    size_t total = 0, n = json_array_size(c);
    for (size_t j = 0; j < n; j++) {
        json_t *part = json_array_get(c, j), *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        char pp[80];
        snprintf(pp, sizeof pp, "messages[%zu].content[%zu]", i, j);
        if (!json_is_object(part) || !json_is_string(type)) return BAD(e, pp, "'%s' must be an object with a string 'type'", pp);
        if (strcmp(json_string_value(type), "text") != 0)
            return UNSUPPORTED(e, pp, "'%s': content parts of type '%s' are not supported (only text)", pp,
                               json_string_value(type));
        if (!json_is_string(text) || strlen(json_string_value(text)) != json_string_length(text))
            return BAD(e, pp, "'%s.text' must be a string without NUL", pp);
        total += json_string_length(text);
    }
    char *s = malloc(total + 1);
    if (!s) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    size_t at = 0;
    for (size_t j = 0; j < n; j++) {
        json_t *text = json_object_get(json_array_get(c, j), "text");
        memcpy(s + at, json_string_value(text), json_string_length(text));
        at += json_string_length(text);
    }
    s[at] = 0;
    *out = s;
    return true;
}

/* An assistant message's tool_calls: [{"id", "type": "function", "function": {"name", "arguments"}}]. */
static bool message_calls(json_t *msg, size_t i, size_t n_msgs, orc_api_request *r, orc_api_error *e) {
    json_t *tc = field(msg, "tool_calls");
    char param[80];
    snprintf(param, sizeof param, "messages[%zu].tool_calls", i);
    if (!tc) return true;
    if (strcmp(r->messages[i].role, "assistant") != 0)
        return BAD(e, param, "'%s' is only allowed in assistant messages", param);
    if (!json_is_array(tc) || json_array_size(tc) > ORC_API_MAX_TOOLS)
        return BAD(e, param, "'%s' must be an array of at most %d calls", param, ORC_API_MAX_TOOLS);
    size_t n = json_array_size(tc);
    if (n == 0) return true;
    if (!r->calls) {
        r->calls = calloc(n_msgs, sizeof *r->calls);
        r->n_calls = calloc(n_msgs, sizeof *r->n_calls);
        if (!r->calls || !r->n_calls) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    }
    r->calls[i] = calloc(n, sizeof **r->calls);
    if (!r->calls[i]) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    for (size_t k = 0; k < n; k++) {
        json_t *call = json_array_get(tc, k), *fn = json_object_get(call, "function");
        json_t *id = field(call, "id"), *type = field(call, "type");
        json_t *name = json_object_get(fn, "name"), *args = field(fn, "arguments");
        snprintf(param, sizeof param, "messages[%zu].tool_calls[%zu]", i, k);
        if (!json_is_object(call) || !json_is_object(fn))
            return BAD(e, param, "'%s' must be an object with a 'function' object", param);
        if (type && !(json_is_string(type) && strcmp(json_string_value(type), "function") == 0))
            return BAD(e, param, "'%s.type' must be 'function'", param);
        if (!json_is_string(name) || json_string_length(name) == 0 || strlen(json_string_value(name)) != json_string_length(name))
            return BAD(e, param, "'%s.function.name' must be a non-empty string", param);
        if (args && !json_is_string(args)) return BAD(e, param, "'%s.function.arguments' must be a string of JSON", param);
        if (id && !json_is_string(id)) return BAD(e, param, "'%s.id' must be a string", param);
        orc_api_call *cl = &r->calls[i][r->n_calls[i]++];
        cl->id = id ? dup_str(id) : strdup("");
        cl->name = dup_str(name);
        /* Arguments that parse are written compactly; others as sent. */
        json_t *parsed = args ? json_loadb(json_string_value(args), json_string_length(args), JSON_DECODE_ANY, NULL) : NULL;
        cl->arguments = parsed ? json_dumps(parsed, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER)
                               : args ? dup_str(args) : strdup("{}");
        json_decref(parsed);
        if (!cl->id || !cl->name || !cl->arguments) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    }
    return true;
}

static bool parse_messages(json_t *root, orc_api_request *r, orc_api_error *e) {
    json_t *v = field(root, "messages");
    if (!v) return BAD(e, "messages", "'messages' is required");
    if (!json_is_array(v) || json_array_size(v) == 0) return BAD(e, "messages", "'messages' must be a non-empty array");
    size_t n = json_array_size(v);
    if (n > MAX_MESSAGES) return BAD(e, "messages", "'messages' may hold at most %d messages", MAX_MESSAGES);
    r->messages = calloc(n, sizeof *r->messages);
    if (!r->messages) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(v, i), *role = json_object_get(m, "role");
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(m)) return BAD(e, param, "'%s' must be an object", param);
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!json_is_string(role)) return BAD(e, param, "'%s' must be a string", param);
        const char *canon = canonical_role(json_string_value(role));
        if (!canon)
            return BAD(e, param, "'%s' is '%.40s'; expected system, developer, user, assistant or tool", param,
                       json_string_value(role));
        char *content = NULL;
        if (!message_content(m, i, canon, &content, e)) return false;
        r->messages[r->n_messages++] = (orc_chat_msg){canon, content};
        if (!message_calls(m, i, n, r, e)) return false;
        json_t *tcid = field(m, "tool_call_id");
        snprintf(param, sizeof param, "messages[%zu].tool_call_id", i);
        if (tcid && !json_is_string(tcid)) return BAD(e, param, "'%s' must be a string", param);
    }
    return true;
}

/* ---- tools and response_format ------------------------------------------------------ */

static bool valid_name(const char *s, size_t n) {
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* Compile schema text to check it; e names param and the schema path. */
static bool check_schema(const char *text, bool strict, const char *param, orc_json_schema **keep, orc_api_error *e) {
    orc_json_schema_opts o;
    orc_json_schema_opts_default(&o);
    o.strict_objects = strict;
    orc_error err = {0};
    orc_json_schema *s = orc_json_schema_compile(text, strlen(text), &o, &err);
    if (!s) {
        if (err.code == ORC_ENOMEM) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
        if (err.code == ORC_EUNSUPPORTED)
            return UNSUPPORTED(e, param, "'%s' cannot be used for constrained decoding: %s", param, err.msg);
        return BAD(e, param, "'%s' is not a valid schema: %s", param, err.msg);
    }
    if (keep) *keep = s;
    else orc_json_schema_free(s);
    return true;
}

static bool parse_tools(json_t *root, orc_api_request *r, orc_api_error *e) {
    json_t *tools = field(root, "tools");
    if (field(root, "functions")) return UNSUPPORTED(e, "functions", "'functions' is deprecated and not supported; use 'tools'");
    if (field(root, "function_call"))
        return UNSUPPORTED(e, "function_call", "'function_call' is deprecated and not supported; use 'tool_choice'");
    if (tools) {
        if (!json_is_array(tools)) return BAD(e, "tools", "'tools' must be an array");
        size_t n = json_array_size(tools);
        if (n > ORC_API_MAX_TOOLS) return BAD(e, "tools", "'tools' may hold at most %d tools, got %zu", ORC_API_MAX_TOOLS, n);
        r->tools = calloc(n ? n : 1, sizeof *r->tools);
        if (!r->tools) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *t = json_array_get(tools, i), *type = json_object_get(t, "type"), *fn = json_object_get(t, "function");
            char param[96];
            snprintf(param, sizeof param, "tools[%zu]", i);
            if (!json_is_object(t)) return BAD(e, param, "'%s' must be an object", param);
            if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0)
                return BAD(e, param, "'%s.type' must be 'function'", param);
            snprintf(param, sizeof param, "tools[%zu].function", i);
            if (!json_is_object(fn)) return BAD(e, param, "'%s' must be an object", param);
            json_t *name = json_object_get(fn, "name"), *desc = field(fn, "description"), *params = field(fn, "parameters");
            json_t *strict = field(fn, "strict");
            snprintf(param, sizeof param, "tools[%zu].function.name", i);
            if (!json_is_string(name) || !valid_name(json_string_value(name), json_string_length(name)))
                return BAD(e, param, "'%s' must be 1 to 64 letters, digits, '_' or '-'", param);
            for (size_t k = 0; k < i; k++)
                if (strcmp(r->tools[k].name, json_string_value(name)) == 0)
                    return BAD(e, param, "'%s': the name '%s' is used twice", param, json_string_value(name));
            snprintf(param, sizeof param, "tools[%zu].function.description", i);
            if (desc && !json_is_string(desc)) return BAD(e, param, "'%s' must be a string", param);
            snprintf(param, sizeof param, "tools[%zu].function.strict", i);
            if (strict && !json_is_boolean(strict)) return BAD(e, param, "'%s' must be a boolean", param);
            snprintf(param, sizeof param, "tools[%zu].function.parameters", i);
            if (params && !json_is_object(params)) return BAD(e, param, "'%s' must be a JSON schema object", param);
            orc_api_tool *tl = &r->tools[r->n_tools++];
            tl->name = dup_str(name);
            tl->parameters = params ? json_dumps(params, JSON_COMPACT | JSON_PRESERVE_ORDER)
                                    : strdup("{\"type\":\"object\",\"properties\":{}}");
            /* The prompt's copy: type, name, description, parameters. */
            json_t *pj = json_pack("{s:s,s:{s:O}}", "type", "function", "function", "name", name);
            json_t *pf = json_object_get(pj, "function");
            if (desc) json_object_set(pf, "description", desc);
            if (params) json_object_set(pf, "parameters", params);
            tl->json = pj ? json_dumps(pj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
            json_decref(pj);
            if (!tl->name || !tl->parameters || !tl->json) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
            /* Tool arguments take no keys their schema does not name, unless it says so. */
            if (!check_schema(tl->parameters, true, param, NULL, e)) return false;
        }
    }
    r->tool_choice = r->n_tools ? ORC_TOOL_AUTO : ORC_TOOL_NONE;
    json_t *tc = field(root, "tool_choice");
    if (!tc) return true;
    if (json_is_string(tc)) {
        const char *v = json_string_value(tc);
        if (strcmp(v, "none") == 0) r->tool_choice = ORC_TOOL_NONE;
        else if (strcmp(v, "auto") == 0) r->tool_choice = r->n_tools ? ORC_TOOL_AUTO : ORC_TOOL_NONE;
        else if (strcmp(v, "required") == 0) r->tool_choice = ORC_TOOL_REQUIRED;
        else return BAD(e, "tool_choice", "'tool_choice' must be 'none', 'auto', 'required' or a function, got '%.40s'", v);
    } else if (json_is_object(tc)) {
        json_t *type = json_object_get(tc, "type"), *fn = json_object_get(tc, "function");
        json_t *name = json_object_get(fn, "name");
        if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0 || !json_is_string(name))
            return BAD(e, "tool_choice", "'tool_choice' must be {\"type\": \"function\", \"function\": {\"name\": ...}}");
        r->tool_choice = ORC_TOOL_NAMED;
        r->tool_index = -1;
        for (size_t k = 0; k < r->n_tools; k++)
            if (strcmp(r->tools[k].name, json_string_value(name)) == 0) r->tool_index = (int)k;
        if (r->tool_index < 0)
            return BAD(e, "tool_choice", "'tool_choice' names the function '%.64s', which is not in 'tools'",
                       json_string_value(name));
    } else {
        return BAD(e, "tool_choice", "'tool_choice' must be a string or an object");
    }
    if (r->tool_choice == ORC_TOOL_REQUIRED && r->n_tools == 0)
        return BAD(e, "tool_choice", "'tool_choice' 'required' needs 'tools'");
    return true;
}

static bool parse_response_format(json_t *root, orc_api_request *r, orc_api_error *e) {
    json_t *rf = field(root, "response_format");
    if (!rf) return true;
    json_t *type = json_object_get(rf, "type");
    if (!json_is_object(rf) || !json_is_string(type))
        return BAD(e, "response_format", "'response_format' must be an object with a string 'type'");
    const char *t = json_string_value(type);
    orc_error err = {0};
    if (strcmp(t, "text") == 0) return true;
    if (strcmp(t, "json_object") == 0) {
        r->format = ORC_FORMAT_JSON_OBJECT;
        r->format_schema = orc_json_schema_any(true, NULL, &err);
        return r->format_schema ? true : orc_api_error_set(e, 500, "server_error", "", "", "%s", err.msg);
    }
    if (strcmp(t, "json_schema") != 0)
        return BAD(e, "response_format.type", "'response_format.type' must be 'text', 'json_object' or 'json_schema', got '%.40s'", t);
    json_t *js = json_object_get(rf, "json_schema");
    if (!json_is_object(js)) return BAD(e, "response_format.json_schema", "'response_format.json_schema' must be an object");
    json_t *name = json_object_get(js, "name"), *schema = field(js, "schema"), *strict = field(js, "strict");
    if (!json_is_string(name) || !valid_name(json_string_value(name), json_string_length(name)))
        return BAD(e, "response_format.json_schema.name", "'response_format.json_schema.name' must be 1 to 64 letters, digits, '_' or '-'");
    if (strict && !json_is_boolean(strict))
        return BAD(e, "response_format.json_schema.strict", "'response_format.json_schema.strict' must be a boolean");
    if (schema && !json_is_object(schema))
        return BAD(e, "response_format.json_schema.schema", "'response_format.json_schema.schema' must be a JSON schema object");
    char *text = schema ? json_dumps(schema, JSON_COMPACT | JSON_PRESERVE_ORDER) : strdup("{}");
    if (!text) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    r->format = ORC_FORMAT_JSON_SCHEMA;
    bool ok = check_schema(text, json_is_true(strict), "response_format.json_schema.schema", &r->format_schema, e);
    free(text);
    return ok;
}

static bool parse_chat(json_t *root, orc_api_request *r, orc_api_error *e) {
    if (!parse_messages(root, r, e) || !parse_sampling(root, r, e)) return false;
    if (!get_bool(root, "logprobs", &r->logprobs, e)) return false;
    long long x = 0;
    bool present = false;
    if (!get_int(root, "top_logprobs", 0, ORC_API_MAX_TOP_LOGPROBS, &present, &x, e)) return false;
    if (present && !r->logprobs) return BAD(e, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
    r->top_logprobs = (int)x;
    if (!parse_tools(root, r, e) || !parse_response_format(root, r, e)) return false;
    json_t *ptc = field(root, "parallel_tool_calls");
    if (ptc && !json_is_boolean(ptc)) return BAD(e, "parallel_tool_calls", "'parallel_tool_calls' must be a boolean");
    if (r->format != ORC_FORMAT_TEXT && r->tool_choice != ORC_TOOL_NONE)
        return UNSUPPORTED(e, "response_format", "'response_format' json_object/json_schema together with tool calls "
                           "is not supported; send tool_choice 'none' or no response_format");
    return true;
}

/* ---- completions and embeddings: a string or an array of strings ------------------ */

/* A token-id prompt (completions): a non-empty array of ids. */
static bool parse_ids(json_t *a, const char *param, orc_api_request *r, size_t i, orc_api_error *e) {
    size_t n = json_array_size(a);
    if (n == 0) return BAD(e, param, "'%s' must not be an empty array of token ids", param);
    if (!r->prompt_ids) {
        r->prompt_ids = calloc(MAX_INPUTS, sizeof *r->prompt_ids);
        r->prompt_id_lens = calloc(MAX_INPUTS, sizeof *r->prompt_id_lens);
        if (!r->prompt_ids || !r->prompt_id_lens) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    }
    int32_t *ids = malloc(sizeof *ids * n);
    if (!ids) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    r->prompt_ids[i] = ids;
    r->prompt_id_lens[i] = n;
    for (size_t k = 0; k < n; k++) {
        json_t *x = json_array_get(a, k);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= ORC_TOK_MAX_VOCAB)
            return BAD(e, param, "'%s[%zu]' must be a token id (a non-negative integer)", param, k);
        ids[k] = (int32_t)json_integer_value(x);
    }
    return true;
}

static bool parse_texts(json_t *root, const char *key, bool allow_empty, orc_api_request *r, orc_api_error *e) {
    json_t *v = field(root, key);
    if (!v) return BAD(e, key, "'%s' is required", key);
    const bool ids_ok = r->kind == ORC_API_COMPLETION;
    /* [1, 2, 3] is one prompt of token ids, not three prompts. */
    const bool one_ids = ids_ok && json_is_array(v) && json_array_size(v) > 0 && json_is_integer(json_array_get(v, 0));
    size_t n = json_is_array(v) && !one_ids ? json_array_size(v) : 1;
    if (!json_is_string(v) && !json_is_array(v)) return BAD(e, key, "'%s' must be a string or an array of strings", key);
    if (n == 0) return BAD(e, key, "'%s' must not be an empty array", key);
    if (n > MAX_INPUTS) return BAD(e, key, "'%s' may hold at most %d items, got %zu", key, MAX_INPUTS, n);
    r->inputs = calloc(n, sizeof *r->inputs);
    if (!r->inputs) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(v) && !one_ids ? json_array_get(v, i) : v;
        char param[64];
        snprintf(param, sizeof param, json_is_array(v) && !one_ids ? "%s[%zu]" : "%s", key, i);
        if (ids_ok && json_is_array(s)) {
            if (!parse_ids(s, param, r, i, e)) return false;
            if (!(r->inputs[r->n_inputs++] = strdup(""))) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
            continue;
        }
        if (json_is_integer(s) || json_is_array(s))
            return UNSUPPORTED(e, param, "'%s': token-id input is not supported here; send text", param);
        if (!json_is_string(s)) return BAD(e, param, "'%s' must be a string", param);
        if (strlen(json_string_value(s)) != json_string_length(s)) return BAD(e, param, "'%s' must not contain NUL", param);
        if (!allow_empty && json_string_length(s) == 0) return BAD(e, param, "'%s' must not be empty", param);
        if (!(r->inputs[r->n_inputs++] = dup_str(s))) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    }
    return true;
}

static bool parse_completion(json_t *root, orc_api_request *r, orc_api_error *e) {
    if (!parse_texts(root, "prompt", true, r, e) || !parse_sampling(root, r, e)) return false;
    if (!get_bool(root, "echo", &r->echo, e)) return false;
    long long x = 0;
    if (!get_int(root, "logprobs", 0, 5, &r->logprobs, &x, e)) return false;
    r->top_logprobs = (int)x;
    long long best_of = r->n;
    bool present = false;
    if (!get_int(root, "best_of", 1, ORC_API_MAX_N, &present, &best_of, e)) return false;
    if (present && best_of != r->n) return UNSUPPORTED(e, "best_of", "'best_of' other than 'n' is not supported yet");
    json_t *suffix = field(root, "suffix");
    if (suffix && !(json_is_string(suffix) && json_string_length(suffix) == 0))
        return UNSUPPORTED(e, "suffix", "'suffix' (insertion) is not supported yet");
    return true;
}

static bool parse_embedding(json_t *root, orc_api_request *r, orc_api_error *e) {
    if (!parse_texts(root, "input", false, r, e)) return false;
    json_t *fmt = field(root, "encoding_format");
    if (fmt) {
        if (!json_is_string(fmt)) return BAD(e, "encoding_format", "'encoding_format' must be a string");
        const char *f = json_string_value(fmt);
        if (strcmp(f, "base64") == 0) r->base64 = true;
        else if (strcmp(f, "float") != 0)
            return BAD(e, "encoding_format", "'encoding_format' must be 'float' or 'base64', got '%.40s'", f);
    }
    long long d = 0;
    if (!get_int(root, "dimensions", 1, INT32_MAX, NULL, &d, e)) return false;
    r->dimensions = d;
    return true;
}

/* ---- entry points -------------------------------------------------------------------- */

void orc_api_request_free(orc_api_request *r) {
    if (!r) return;
    free(r->model);
    for (size_t i = 0; i < r->n_adapters; i++) free(r->adapters[i]);
    free(r->adapters);
    free(r->adapter_weights);
    for (size_t i = 0; i < r->n_messages; i++) free((char *)r->messages[i].content);
    free(r->messages);
    for (size_t i = 0; i < r->n_inputs; i++) free(r->inputs[i]);
    free(r->inputs);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    for (size_t i = 0; i < r->n_tools; i++) {
        free(r->tools[i].name);
        free(r->tools[i].json);
        free(r->tools[i].parameters);
    }
    free(r->tools);
    for (size_t i = 0; r->calls && i < r->n_messages; i++) {
        for (size_t k = 0; r->calls[i] && k < r->n_calls[i]; k++) {
            free(r->calls[i][k].id);
            free(r->calls[i][k].name);
            free(r->calls[i][k].arguments);
        }
        free(r->calls[i]);
    }
    free(r->calls);
    free(r->n_calls);
    orc_json_schema_free(r->format_schema);
    orc_json_schema_free(r->call_schema);
    free(r->bias_ids);
    free(r->bias);
    for (size_t i = 0; r->prompt_ids && i < MAX_INPUTS; i++) free(r->prompt_ids[i]);
    free(r->prompt_ids);
    free(r->prompt_id_lens);
    memset(r, 0, sizeof *r);
}

bool orc_api_request_parse(orc_api_kind kind, const char *body, size_t len, orc_api_request *r, orc_api_error *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->n = 1;
    r->max_tokens = -1;
    orc_sampler_opts_default(&r->sampler);
    r->sampler.temperature = 1.0f; /* OpenAI's defaults: plain sampling */
    r->sampler.top_p = 1.0f;
    r->sampler.top_k = 0;
    r->sampler.min_p = 0.0f;
    json_error_t jerr;
    json_t *root = body ? json_loadb(body, len, 0, &jerr) : NULL;
    if (!root) {
        return orc_api_error_set(e, 400, "invalid_request_error", "", "invalid_json",
                                 "the body is not valid JSON: %s (line %d, column %d)", body ? jerr.text : "empty",
                                 body ? jerr.line : 0, body ? jerr.column : 0);
    }
    bool ok;
    if (!json_is_object(root)) {
        ok = BAD(e, "", "the body must be a JSON object");
    } else {
        ok = parse_model(root, r, e) && parse_adapters(root, r, e);
        if (ok && kind == ORC_API_CHAT) ok = parse_chat(root, r, e);
        else if (ok && kind == ORC_API_COMPLETION) ok = parse_completion(root, r, e);
        else if (ok) ok = parse_embedding(root, r, e);
    }
    json_decref(root);
    if (!ok) orc_api_request_free(r);
    return ok;
}
