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
    const char *penalties[] = {"presence_penalty", "frequency_penalty"};
    for (int i = 0; i < 2; i++) {
        float p = 0.0f;
        if (!get_num(root, penalties[i], -2.0, 2.0, false, &p, e)) return false;
        if (p != 0.0f) return UNSUPPORTED(e, penalties[i], "'%s' is not supported yet (use repeat_penalty)", penalties[i]);
    }
    json_t *lb = field(root, "logit_bias");
    if (lb && (!json_is_object(lb) || json_object_size(lb) > 0))
        return UNSUPPORTED(e, "logit_bias", "'logit_bias' is not supported yet");
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
        json_t *tc = field(msg, "tool_calls");
        if (tc) {
            snprintf(param, sizeof param, "messages[%zu].tool_calls", i);
            return UNSUPPORTED(e, param, "'%s': tool calls are not supported yet", param);
        }
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
    }
    return true;
}

static bool parse_chat(json_t *root, orc_api_request *r, orc_api_error *e) {
    if (!parse_messages(root, r, e) || !parse_sampling(root, r, e)) return false;
    if (!get_bool(root, "logprobs", &r->logprobs, e)) return false;
    long long x = 0;
    bool present = false;
    if (!get_int(root, "top_logprobs", 0, ORC_API_MAX_TOP_LOGPROBS, &present, &x, e)) return false;
    if (present && !r->logprobs) return BAD(e, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
    r->top_logprobs = (int)x;
    json_t *tools = field(root, "tools"), *fns = field(root, "functions");
    if ((tools && (!json_is_array(tools) || json_array_size(tools) > 0)) || fns)
        return UNSUPPORTED(e, tools ? "tools" : "functions", "'%s' (tool calling) is not supported yet",
                           tools ? "tools" : "functions");
    const char *choice_keys[] = {"tool_choice", "function_call"};
    for (int i = 0; i < 2; i++) {
        json_t *tc = field(root, choice_keys[i]);
        if (tc && !(json_is_string(tc) && (strcmp(json_string_value(tc), "none") == 0 ||
                                           strcmp(json_string_value(tc), "auto") == 0)))
            return UNSUPPORTED(e, choice_keys[i], "'%s' is not supported yet", choice_keys[i]);
    }
    json_t *rf = field(root, "response_format");
    if (rf) {
        json_t *type = json_object_get(rf, "type");
        if (!json_is_object(rf) || !json_is_string(type))
            return BAD(e, "response_format", "'response_format' must be an object with a string 'type'");
        if (strcmp(json_string_value(type), "text") != 0)
            return UNSUPPORTED(e, "response_format", "'response_format' of type '%.40s' is not supported yet",
                               json_string_value(type));
    }
    return true;
}

/* ---- completions and embeddings: a string or an array of strings ------------------ */

static bool parse_texts(json_t *root, const char *key, bool allow_empty, orc_api_request *r, orc_api_error *e) {
    json_t *v = field(root, key);
    if (!v) return BAD(e, key, "'%s' is required", key);
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_string(v) && !json_is_array(v)) return BAD(e, key, "'%s' must be a string or an array of strings", key);
    if (n == 0) return BAD(e, key, "'%s' must not be an empty array", key);
    if (n > MAX_INPUTS) return BAD(e, key, "'%s' may hold at most %d items, got %zu", key, MAX_INPUTS, n);
    r->inputs = calloc(n, sizeof *r->inputs);
    if (!r->inputs) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(v) ? json_array_get(v, i) : v;
        char param[64];
        snprintf(param, sizeof param, json_is_array(v) ? "%s[%zu]" : "%s", key, i);
        if (json_is_integer(s) || json_is_array(s))
            return UNSUPPORTED(e, param, "'%s': token-id input is not supported yet; send text", param);
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
    for (size_t i = 0; i < r->n_messages; i++) free((char *)r->messages[i].content);
    free(r->messages);
    for (size_t i = 0; i < r->n_inputs; i++) free(r->inputs[i]);
    free(r->inputs);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
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
        ok = parse_model(root, r, e);
        if (ok && kind == ORC_API_CHAT) ok = parse_chat(root, r, e);
        else if (ok && kind == ORC_API_COMPLETION) ok = parse_completion(root, r, e);
        else if (ok) ok = parse_embedding(root, r, e);
    }
    json_decref(root);
    if (!ok) orc_api_request_free(r);
    return ok;
}
