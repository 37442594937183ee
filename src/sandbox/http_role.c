/* Agents and user simulators over an OpenAI-compatible chat endpoint
 * (libcurl): the log rows a role sees become chat messages from that role's
 * side (the agent's tool calls and their results paired by call id; for the
 * user simulator the agent is the other party), the request carries the
 * scenario's tool schemas (or the simulator's end_conversation tool), and the
 * reply becomes a reply object. A reply that is not valid JSON, not a chat
 * completion or a non-200 status is the agent's mistake, scored and logged;
 * only a transport failure is an error. Also the user simulator's system
 * prompt: the paper's rules, the task, the knowledge boundary and
 * demonstrations only the user sees. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "play_internal.h"

typedef struct http_role {
    char *url, *model, *key;
    long timeout_s;
} http_role;

static const char *first_env(const char *a, const char *b) {
    const char *v = getenv(a);
    if (!v || !v[0]) v = getenv(b);
    return v && v[0] ? v : NULL;
}

/* ---- the user simulator's prompt -------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const char *s) {
    size_t k = strlen(s);
    if (b->n + k + 1 > b->cap) {
        size_t cap = (b->n + k + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) return;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, k + 1);
    b->n += k;
}

char *orc_sb_user_prompt(const orc_sb_scenario *sc) {
    buf b = {0};
    put(&b, "You are playing a user talking to an AI assistant on your phone. Follow these rules:\n"
            "1. Never act as the assistant: do not offer help, do not answer for it, do not call its tools.\n"
            "2. Use only the facts given below and in this conversation. Never make up names, numbers or details; "
            "if the assistant asks for something you were not given, say you don't know.\n"
            "3. Speak in short, casual sentences, the way people text.\n"
            "4. When your task is done, or the assistant has failed several times in a row, call the "
            "end_conversation tool.\n");
    put(&b, "\nYour task: ");
    put(&b, sc->user_instructions ? sc->user_instructions : sc->first_user_message);
    put(&b, "\n\nWhat you know (your knowledge boundary; nothing beyond it): ");
    put(&b, sc->user_boundary ? sc->user_boundary : "only what your task says.");
    put(&b, "\n");
    if (json_array_size(sc->demonstrations)) {
        put(&b, "\nExamples of how you talk (other conversations, not this one):\n");
        size_t i;
        json_t *d;
        json_array_foreach(sc->demonstrations, i, d) {
            const char *role = json_string_value(json_object_get(d, "role"));
            const char *content = json_string_value(json_object_get(d, "content"));
            put(&b, role && strcmp(role, "agent") == 0 ? "assistant: " : "you: ");
            put(&b, content ? content : "");
            put(&b, "\n");
        }
    }
    put(&b, "\nYou have already sent your first message: ");
    put(&b, sc->first_user_message);
    put(&b, "\n");
    return b.p;
}

/* ---- log rows to chat messages ----------------------------------------------------- */

static const char *str(json_t *row, const char *key) {
    const char *s = json_string_value(json_object_get(row, key));
    return s ? s : "";
}

static json_t *agent_messages(json_t *history) {
    json_t *msgs = json_array(), *pending = NULL; /* an assistant message collecting tool calls */
    size_t i;
    json_t *row;
    json_array_foreach(history, i, row) {
        const char *from = str(row, "sender"), *to = str(row, "recipient"), *content = str(row, "content");
        const char *id = json_string_value(json_object_get(row, "tool_call_id"));
        if (!(strcmp(from, "agent") == 0 && strcmp(to, "execution_environment") == 0 && id)) pending = NULL;
        if (strcmp(from, "system") == 0) {
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", content));
        } else if (strcmp(from, "user") == 0) {
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", content));
        } else if (strcmp(from, "agent") == 0 && id) {
            if (!pending) {
                pending = json_pack("{s:s, s:n, s:[]}", "role", "assistant", "content", "tool_calls");
                json_array_append_new(msgs, pending);
            }
            json_array_append_new(json_object_get(pending, "tool_calls"),
                                  json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function", "function",
                                            "name", str(row, "tool_name"), "arguments", content));
        } else if (strcmp(from, "agent") == 0) {
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "assistant", "content", content));
        } else if (id) {
            json_array_append_new(msgs,
                                  json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", id, "content", content));
        } else {
            char text[600];
            snprintf(text, sizeof text, "[execution environment] %s", content);
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", text));
        }
    }
    return msgs;
}

/* The user simulator's side: the agent is the one it talks to. */
static json_t *user_messages(json_t *history) {
    json_t *msgs = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(history, i, row) {
        const char *from = str(row, "sender");
        const char *role = strcmp(from, "system") == 0 ? "system" : strcmp(from, "user") == 0 ? "assistant" : "user";
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", role, "content", str(row, "content")));
    }
    return msgs;
}

static json_t *end_tool(void) {
    return json_pack("[{s:s, s:{s:s, s:s, s:{s:s, s:{}}}}]", "type", "function", "function", "name",
                     "end_conversation", "description", "End the conversation: the task is done or the assistant "
                     "keeps failing.", "parameters", "type", "object", "properties");
}

/* ---- HTTP ------------------------------------------------------------------------- */

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
    buf *b = ud;
    size_t k = size * n;
    if (b->n + k + 1 > b->cap) {
        size_t cap = (b->n + k + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, k);
    b->n += k;
    b->p[b->n] = 0;
    return k;
}

static orc_status post(http_role *h, const char *body, long *status, char **reply, orc_error *err) {
    char url[1024];
    size_t n = strlen(h->url);
    snprintf(url, sizeof url, "%.*s/chat/completions", (int)(n && h->url[n - 1] == '/' ? n - 1 : n), h->url);
    CURL *c = curl_easy_init();
    if (!c) return orc_error_set(err, ORC_ENOMEM, "sandbox http role: curl_easy_init failed");
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    char auth[600];
    if (h->key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", h->key);
        hdr = curl_slist_append(hdr, auth);
    }
    buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, h->timeout_s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    orc_status s = ORC_OK;
    if (rc != CURLE_OK) s = orc_error_set(err, ORC_EIO, "sandbox http role: POST %s: %s", url, curl_easy_strerror(rc));
    else curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    if (s != ORC_OK) {
        free(b.p);
        return s;
    }
    *reply = b.p ? b.p : strdup("");
    return ORC_OK;
}

static json_t *mistake(const char *fmt, const char *detail) {
    char text[400];
    snprintf(text, sizeof text, fmt, detail);
    return json_pack("{s:s}", "mistake", text);
}

/* A chat completion's message as a reply object. */
static json_t *to_reply(const char *kind, long status, const char *body) {
    if (status != 200) {
        char detail[256];
        snprintf(detail, sizeof detail, "%ld: %.200s", status, body);
        return mistake("the endpoint answered HTTP %s", detail);
    }
    json_error_t je;
    json_t *doc = json_loads(body, 0, &je);
    if (!doc) return mistake("the reply is not valid JSON (%s)", je.text);
    json_t *msg = json_object_get(json_array_get(json_object_get(doc, "choices"), 0), "message");
    json_t *out = NULL;
    if (!json_is_object(msg)) {
        out = mistake("%s", "the reply has no choices[0].message");
    } else if (strcmp(kind, "user") == 0) {
        size_t i;
        json_t *c;
        int ends = 0;
        json_array_foreach(json_object_get(msg, "tool_calls"), i, c) ends |= strcmp(
            str(json_object_get(c, "function"), "name"), "end_conversation") == 0;
        const char *content = json_string_value(json_object_get(msg, "content"));
        out = ends || !content ? json_pack("{s:b}", "end", 1) : json_pack("{s:s}", "content", content);
    } else if (json_array_size(json_object_get(msg, "tool_calls")) > 0) {
        json_t *calls = json_array();
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(msg, "tool_calls"), i, c) {
            json_t *fn = json_object_get(c, "function");
            json_t *args = json_object_get(fn, "arguments");
            char *text = json_is_string(args) ? strdup(json_string_value(args))
                                              : args ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("");
            char id[48];
            snprintf(id, sizeof id, "call_%zu", i);
            const char *cid = json_string_value(json_object_get(c, "id"));
            json_array_append_new(calls, json_pack("{s:s, s:s, s:s}", "id", cid ? cid : id, "name", str(fn, "name"),
                                                   "arguments", text ? text : ""));
            free(text);
        }
        out = json_pack("{s:o}", "tool_calls", calls);
    } else if (json_is_string(json_object_get(msg, "content"))) {
        out = json_pack("{s:s, s:s}", "content", str(msg, "content"), "recipient", "user");
    } else {
        out = mistake("%s", "the reply has neither content nor tool calls");
    }
    json_decref(doc);
    return out;
}

static orc_status http_respond(orc_sb_role *r, const orc_sb_scenario *sc, json_t *history, json_t *tools,
                               json_t **reply, orc_error *err) {
    (void)sc;
    http_role *h = r->impl;
    int is_user = strcmp(r->kind, "user") == 0;
    json_t *req = json_pack("{s:s, s:o}", "model", h->model, "messages",
                            is_user ? user_messages(history) : agent_messages(history));
    json_t *offered = is_user ? end_tool() : json_incref(tools);
    if (json_array_size(offered)) json_object_set(req, "tools", offered);
    json_decref(offered);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!body) return orc_error_set(err, ORC_ENOMEM, "sandbox http role: out of memory");
    long status = 0;
    char *text = NULL;
    orc_status s = post(h, body, &status, &text, err);
    free(body);
    if (s != ORC_OK) return s;
    *reply = to_reply(r->kind, status, text);
    free(text);
    return *reply ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "sandbox http role: out of memory");
}

static void http_destroy(orc_sb_role *r) {
    http_role *h = r->impl;
    free(h->url);
    free(h->model);
    free(h->key);
    free(h);
    free(r);
}

orc_sb_role *orc_sb_http_role(const char *kind, const orc_sb_http_opts *o, orc_error *err) {
    int is_user = strcmp(kind, "user") == 0;
    const char *url = o && o->base_url ? o->base_url
                                       : first_env(is_user ? "ORCHARD_USER_URL" : "ORCHARD_AGENT_URL", "OPENAI_BASE_URL");
    const char *model = o && o->model ? o->model : first_env(is_user ? "ORCHARD_USER_MODEL" : "ORCHARD_AGENT_MODEL",
                                                             "ORCHARD_SANDBOX_MODEL");
    const char *key = o && o->api_key ? o->api_key : first_env(is_user ? "ORCHARD_USER_KEY" : "ORCHARD_AGENT_KEY",
                                                               "OPENAI_API_KEY");
    if (!url) {
        orc_error_set(err, ORC_EINVAL, "sandbox http %s: no base URL (option, %s or OPENAI_BASE_URL)", kind,
                      is_user ? "ORCHARD_USER_URL" : "ORCHARD_AGENT_URL");
        return NULL;
    }
    orc_sb_role *r = calloc(1, sizeof *r);
    http_role *h = calloc(1, sizeof *h);
    if (!r || !h || !(h->url = strdup(url)) || !(h->model = strdup(model ? model : "default")) ||
        (key && !(h->key = strdup(key)))) {
        if (h) free(h->url), free(h->model);
        free(h);
        free(r);
        orc_error_set(err, ORC_ENOMEM, "sandbox http role: out of memory");
        return NULL;
    }
    h->timeout_s = o && o->timeout_s > 0 ? o->timeout_s : 120;
    r->kind = is_user ? "user" : "agent";
    r->respond = http_respond;
    r->destroy = http_destroy;
    r->impl = h;
    return r;
}
