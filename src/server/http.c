/* The HTTP layer on libmicrohttpd (one thread per connection, so a handler
 * may wait for its job): body collection with the size limit, routing,
 * API-key checks, the checks that need the model (its name, the context
 * length, the embedding width), the choice of LoRA adapters by `model` or
 * "adapters" (and their place in /v1/models), tokenization of prompts (the
 * tokenizer is read-only and thread-safe), hand-off to the scheduler, and
 * the answers: whole JSON bodies, or server-sent events read from the job's
 * output as the slot writes it. Also the server's start and stop. */
#include <microhttpd.h>
#include <netdb.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/server_internal.h"

typedef struct conn {
    srv_buf body;
    bool too_big;
    bool answered; /* a response was queued on the first call (413) */
} conn;

/* ---- answers ---------------------------------------------------------------------- */

static enum MHD_Result send_body(srv_server *s, struct MHD_Connection *c, srv_endpoint ep, int status, char *body,
                                 const char *type) {
    if (!body) {
        body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
        status = 500;
        if (!body) return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    srv_metrics_request(&s->metrics, ep, status);
    return ret;
}

static enum MHD_Result send_json(srv_server *s, struct MHD_Connection *c, srv_endpoint ep, int status, json_t *v) {
    return send_body(s, c, ep, status, srv_json_dump(v), "application/json");
}

static enum MHD_Result send_error(srv_server *s, struct MHD_Connection *c, srv_endpoint ep, const orc_api_error *e) {
    return send_body(s, c, ep, e->status, srv_error_body(e), "application/json");
}

#define API_ERROR(s, c, ep, status, type, param, code, ...)                               \
    do {                                                                                  \
        orc_api_error e_;                                                                 \
        orc_api_error_set(&e_, status, type, param, code, __VA_ARGS__);                   \
        return send_error(s, c, ep, &e_);                                                 \
    } while (0)

/* ---- simple endpoints --------------------------------------------------------------- */

/* The index of the adapter called name, or -1. */
static long adapter_index(const srv_server *s, const char *name) {
    for (size_t i = 0; i < s->n_adapters; i++)
        if (strcmp(s->adapter_names[i], name) == 0) return (long)i;
    return -1;
}

/* The base model (adapter < 0) or adapter i, as vLLM lists a LoRA module:
 * its name as the id, "parent" the base's id, "root" too. */
static json_t *model_json(srv_server *s, long adapter) {
    json_t *o = json_object(), *meta = json_object();
    const char *id = adapter < 0 ? s->model_name : s->adapter_names[adapter];
    json_object_set_new(o, "id", srv_json_text(id, strlen(id)));
    json_object_set_new(o, "object", json_string("model"));
    json_object_set_new(o, "created", json_integer(s->started));
    json_object_set_new(o, "owned_by", json_string("orchard"));
    json_object_set_new(o, "root", srv_json_text(s->model_name, strlen(s->model_name)));
    json_object_set_new(o, "parent", adapter < 0 ? json_null() : srv_json_text(s->model_name, strlen(s->model_name)));
    if (adapter >= 0) {
        const orc_lora *a = orc_lora_set_at(s->adapters, (size_t)adapter);
        json_object_set_new(meta, "lora_rank", json_integer(a->cfg.rank));
        json_object_set_new(meta, "lora_alpha", json_real(a->cfg.alpha));
    }
    json_object_set_new(meta, "context_length", json_integer(s->context));
    json_object_set_new(meta, "vocab_size", json_integer(s->cfg->vocab_size));
    json_object_set_new(meta, "hidden_size", json_integer(s->cfg->hidden_size));
    json_object_set_new(meta, "parameters", json_integer(orc_llm_config_num_params(s->cfg)));
    json_object_set_new(o, "meta", meta);
    return o;
}

static enum MHD_Result handle_models(srv_server *s, struct MHD_Connection *c, const char *id) {
    if (id) {
        long a = strcmp(id, s->model_name) == 0 ? -1 : adapter_index(s, id);
        if (a < 0 && strcmp(id, s->model_name) != 0)
            API_ERROR(s, c, EP_MODELS, 404, "invalid_request_error", "model", "model_not_found",
                      "The model '%.200s' does not exist; this server has '%.200s'%s", id, s->model_name,
                      s->n_adapters ? " and its adapters (GET /v1/models)" : "");
        return send_json(s, c, EP_MODELS, 200, model_json(s, a));
    }
    json_t *o = json_object(), *data = json_array();
    json_array_append_new(data, model_json(s, -1));
    for (size_t i = 0; i < s->n_adapters; i++) json_array_append_new(data, model_json(s, (long)i));
    json_object_set_new(o, "object", json_string("list"));
    json_object_set_new(o, "data", data);
    return send_json(s, c, EP_MODELS, 200, o);
}

static enum MHD_Result handle_health(srv_server *s, struct MHD_Connection *c) {
    int q, busy;
    srv_load(s, &q, &busy);
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string("ok"));
    json_object_set_new(o, "slots_idle", json_integer(s->opts.parallel - busy));
    json_object_set_new(o, "slots_processing", json_integer(busy));
    json_object_set_new(o, "queue", json_integer(q));
    return send_json(s, c, EP_HEALTH, 200, o);
}

static enum MHD_Result handle_metrics(srv_server *s, struct MHD_Connection *c) {
    int q, busy;
    srv_load(s, &q, &busy);
    /* Count this scrape first so the text it returns includes it. */
    srv_metrics_request(&s->metrics, EP_METRICS, 200);
    uint64_t steps = 0, rows = 0;
    if (s->batcher) srv_batcher_counts(s->batcher, &steps, &rows);
    char *text = srv_metrics_text(&s->metrics, q, busy, s->opts.parallel, steps, rows);
    if (!text) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- generation and embeddings ------------------------------------------------------- */

static bool append_ids(int32_t **ids, size_t *n, const int32_t *more, size_t k) {
    int32_t *p = realloc(*ids, sizeof(int32_t) * (*n + k + 1));
    if (!p) return false;
    memcpy(p + *n, more, sizeof(int32_t) * k);
    *ids = p;
    *n += k;
    return true;
}

/* The messages as the template sees them: with tools, their list is added
 * to the system message (or a system message is put first); an assistant
 * message's tool calls are written after its content in the template's
 * call syntax. Strings made here go to *owned (freed by the caller). */
static bool chat_messages(srv_server *s, const orc_api_request *r, orc_chat_msg **out, size_t *n_out, char ***owned,
                          size_t *n_owned, orc_api_error *e) {
    const orc_chat_template t = s->opts.chat_template;
    /* Listed whatever tool_choice says (as OpenAI does): the model knows the
     * tools of the calls in its history, and the system prompt stays the same
     * across a round trip, so its cached prefix is reused. */
    const bool tools = r->n_tools > 0;
    const bool sys_first = r->n_messages > 0 && strcmp(r->messages[0].role, "system") == 0;
    size_t n = r->n_messages + (tools && !sys_first ? 1 : 0);
    orc_chat_msg *m = calloc(n, sizeof *m);
    char **own = calloc(r->n_messages + 2, sizeof *own);
    size_t k = 0, at = 0;
    *out = m;
    *owned = own;
    *n_owned = 0;
    if (!m || !own) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    if (tools) {
        const char **js = calloc(r->n_tools, sizeof *js);
        if (!js) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
        for (size_t i = 0; i < r->n_tools; i++) js[i] = r->tools[i].json;
        char *list = orc_chat_tools_text(t, js, r->n_tools);
        free(js);
        if (!list) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
        own[k++] = list;
        if (sys_first && r->messages[0].content[0]) {
            srv_buf b = {0};
            bool ok = srv_buf_addf(&b, "%s\n\n%s", r->messages[0].content, list);
            if (!ok) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
            own[k++] = b.p;
            m[at++] = (orc_chat_msg){"system", b.p};
        } else {
            m[at++] = (orc_chat_msg){"system", list};
        }
    }
    for (size_t i = tools && sys_first ? 1 : 0; i < r->n_messages; i++) {
        m[at] = r->messages[i];
        size_t nc = r->calls ? r->n_calls[i] : 0;
        if (nc) {
            srv_buf b = {0};
            bool ok = srv_buf_add(&b, r->messages[i].content, strlen(r->messages[i].content));
            for (size_t c = 0; ok && c < nc; c++) {
                char *call = orc_chat_tool_call_text(t, r->calls[i][c].name, r->calls[i][c].arguments);
                ok = call && (b.len == 0 || srv_buf_add(&b, "\n", 1)) && srv_buf_add(&b, call, strlen(call));
                free(call);
            }
            if (!ok) {
                srv_buf_free(&b);
                return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
            }
            own[k++] = b.p;
            m[at].content = b.p;
        }
        at++;
    }
    *n_out = at;
    *n_owned = k;
    return true;
}

/* The schema of a call: {"name": one of the allowed tools, ARGS: its
 * parameters}, ARGS being the template's key ("arguments" or "parameters"),
 * the name first (so the call can be streamed as it is decoded). */
static bool call_schema(srv_server *s, orc_api_request *r, orc_api_error *e) {
    if (r->tool_choice == ORC_TOOL_NONE || r->n_tools == 0) return true;
    orc_chat_tool_syntax syn;
    orc_chat_tool_syntax_for(s->opts.chat_template, &syn);
    srv_buf b = {0};
    bool ok = srv_buf_addf(&b, "{\"anyOf\":[");
    bool first = true;
    for (size_t i = 0; ok && i < r->n_tools; i++) {
        if (r->tool_choice == ORC_TOOL_NAMED && (int)i != r->tool_index) continue;
        ok = srv_buf_addf(&b, "%s{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"%s\"},\"%s\":", first ? "" : ",",
                          r->tools[i].name, syn.args_key) &&
             srv_buf_add(&b, r->tools[i].parameters, strlen(r->tools[i].parameters)) &&
             srv_buf_addf(&b, "},\"required\":[\"name\",\"%s\"],\"additionalProperties\":false,"
                              "\"x-orchard-ordered\":true}", syn.args_key);
        first = false;
    }
    ok = ok && srv_buf_add(&b, "]}", 2);
    if (!ok) {
        srv_buf_free(&b);
        return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    }
    orc_json_schema_opts o;
    orc_json_schema_opts_default(&o);
    o.strict_objects = true;
    orc_error err = {0};
    r->call_schema = orc_json_schema_compile(b.p, b.len, &o, &err);
    srv_buf_free(&b);
    if (!r->call_schema)
        return orc_api_error_set(e, err.code == ORC_ENOMEM ? 500 : 400, "invalid_request_error", "tools",
                                 err.code == ORC_EUNSUPPORTED ? "unsupported_parameter" : "",
                                 "the tools cannot be used for constrained decoding together: %s", err.msg);
    return true;
}

/* Ids from the request (logit_bias, token-id prompts) must be in the vocabulary. */
static bool check_ids(srv_server *s, orc_api_request *r, orc_api_error *e) {
    const int64_t V = s->cfg->vocab_size, tv = (int64_t)orc_tokenizer_vocab_size(s->tok);
    for (size_t i = 0; i < r->n_bias; i++)
        if (r->bias_ids[i] >= V)
            return orc_api_error_set(e, 400, "invalid_request_error", "logit_bias", "",
                                     "'logit_bias' has token id %d; the vocabulary has %lld", r->bias_ids[i], (long long)V);
    for (size_t i = 0; r->prompt_ids && i < r->n_inputs; i++) {
        if (!r->prompt_ids[i]) continue;
        char param[48];
        snprintf(param, sizeof param, r->n_inputs > 1 ? "prompt[%zu]" : "prompt", i);
        for (size_t k = 0; k < r->prompt_id_lens[i]; k++)
            if (r->prompt_ids[i][k] >= tv || r->prompt_ids[i][k] >= V)
                return orc_api_error_set(e, 400, "invalid_request_error", param, "",
                                         "'%s' has token id %d; the vocabulary has %lld", param, r->prompt_ids[i][k],
                                         (long long)(tv < V ? tv : V));
        /* The prompt's text, for echo. */
        char *text = NULL;
        size_t len = 0;
        orc_error err = {0};
        if (orc_tokenizer_decode(s->tok, r->prompt_ids[i], r->prompt_id_lens[i], &text, &len, &err) != ORC_OK)
            return orc_api_error_set(e, 400, "invalid_request_error", param, "", "%s", err.msg);
        free(r->inputs[i]);
        r->inputs[i] = text;
    }
    return true;
}

/* Token ids of every prompt (chat template, or begin token + text), checked
 * against the context. false with e set. */
static bool tokenize_job(srv_server *s, srv_job *j, orc_api_error *e) {
    const orc_api_request *r = &j->req;
    const bool chat = r->kind == ORC_API_CHAT, embed = r->kind == ORC_API_EMBEDDING;
    j->n_prompts = chat ? 1 : r->n_inputs;
    j->prompts = calloc(j->n_prompts, sizeof *j->prompts);
    j->prompt_lens = calloc(j->n_prompts, sizeof *j->prompt_lens);
    j->max_tokens = calloc(j->n_prompts, sizeof *j->max_tokens);
    if (!j->prompts || !j->prompt_lens || !j->max_tokens)
        return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
    orc_error err = {0};
    for (size_t i = 0; i < j->n_prompts; i++) {
        char param[48];
        snprintf(param, sizeof param, chat ? "messages" : r->n_inputs > 1 ? "%s[%zu]" : "%s", embed ? "input" : "prompt", i);
        size_t n = 0;
        if (chat) {
            orc_chat_msg *msgs = NULL;
            char **owned = NULL;
            size_t nm = 0, no = 0;
            bool ok = chat_messages(s, r, &msgs, &nm, &owned, &no, e);
            orc_status st = ok ? orc_chat_encode_with(s->opts.chat_template, s->tok, msgs, nm, true, &j->prompts[i],
                                                      NULL, &n, &err)
                               : ORC_OK;
            for (size_t k = 0; k < no; k++) free(owned[k]);
            free(owned);
            free(msgs);
            if (!ok) return false;
            if (st != ORC_OK)
                return orc_api_error_set(e, 400, "invalid_request_error", "messages", "",
                                         "the messages cannot be put in the chat template: %s", err.msg);
        } else if (r->prompt_ids && r->prompt_ids[i]) {
            /* Token ids are the prompt as given (no begin token added). */
            if (!append_ids(&j->prompts[i], &n, r->prompt_ids[i], r->prompt_id_lens[i]))
                return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
        } else {
            int32_t *ids = NULL;
            size_t k = 0;
            if (orc_tokenizer_encode(s->tok, r->inputs[i], strlen(r->inputs[i]), 0, &ids, &k, &err) != ORC_OK) {
                free(ids);
                return orc_api_error_set(e, 400, "invalid_request_error", param, "", "%s", err.msg);
            }
            bool ok = s->bos < 0 || append_ids(&j->prompts[i], &n, &s->bos, 1);
            ok = ok && append_ids(&j->prompts[i], &n, ids, k);
            free(ids);
            if (!ok) return orc_api_error_set(e, 500, "server_error", "", "", "out of memory");
        }
        j->prompt_lens[i] = n;
        if (n == 0) return orc_api_error_set(e, 400, "invalid_request_error", param, "", "'%s' has no tokens", param);
        const long long ctx = (long long)s->context;
        if (embed) {
            if ((long long)n > ctx)
                return orc_api_error_set(e, 400, "invalid_request_error", param, "context_length_exceeded",
                                         "'%s' has %zu tokens but the model's context holds %lld", param, n, ctx);
            continue;
        }
        if ((long long)n >= ctx)
            return orc_api_error_set(e, 400, "invalid_request_error", param, "context_length_exceeded",
                                     "This model's maximum context length is %lld tokens, and '%s' has %zu, which "
                                     "leaves no room for a completion", ctx, param, n);
        if (r->max_tokens > 0 && (long long)n + r->max_tokens > ctx)
            return orc_api_error_set(e, 400, "invalid_request_error", "max_tokens", "context_length_exceeded",
                                     "This model's maximum context length is %lld tokens. However, you requested "
                                     "%lld tokens (%zu in '%s', %lld in the completion)", ctx,
                                     (long long)n + (long long)r->max_tokens, n, param, (long long)r->max_tokens);
        j->max_tokens[i] = r->max_tokens > 0 ? r->max_tokens : ctx - (long long)n;
    }
    return true;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    srv_job *j = cls;
    pthread_mutex_lock(&j->mu);
    srv_job_wait_locked(j, false);
    size_t n = j->out.len - j->out_pos;
    if (n > max) n = max;
    if (n) memcpy(buf, j->out.p + j->out_pos, n);
    j->out_pos += n;
    bool end = n == 0 && j->done;
    pthread_mutex_unlock(&j->mu);
    return end ? MHD_CONTENT_READER_END_OF_STREAM : (ssize_t)n;
}

/* The response is gone: the stream ended or the client left. */
static void sse_free(void *cls) {
    srv_job *j = cls;
    pthread_mutex_lock(&j->mu);
    bool done = j->done;
    pthread_mutex_unlock(&j->mu);
    if (!done) {
        srv_job_cancel(j, false);
        if (srv_unqueue(j->srv, j)) {
            srv_metrics_cancelled(&j->srv->metrics);
            srv_job_finish(j, 499, NULL);
            srv_job_release(j);
        }
    }
    srv_job_release(j);
}

static const char *ID_PREFIX[] = {"chatcmpl-", "cmpl-", "embd-"};

/* The request's LoRA stack: the server's base stack (a quantized model's
 * recovery adapter), the adapter `model` names (vLLM's way; the base's id or
 * no model selects none), then those of "adapters" in order. An unknown
 * model is a 404 (OpenAI's model_not_found), an unknown or repeated adapter
 * a 400 naming it. idx: the chosen adapters' indices (metrics; after the
 * base's s->base.n entries). */
static bool resolve_adapters(srv_server *s, srv_job *j, size_t *idx, orc_api_error *e) {
    const orc_api_request *r = &j->req;
    orc_lora_stack *st = &j->lora;
    *st = s->base;
    const int n0 = s->base.n; /* the chosen adapters' entries start here; idx[k - n0] for entry k */
    j->model_id = s->model_name;
    if (r->model && strcmp(r->model, s->model_name) != 0) {
        long a = adapter_index(s, r->model);
        if (a < 0)
            return orc_api_error_set(e, 404, "invalid_request_error", "model", "model_not_found",
                                     "The model '%.200s' does not exist; this server has '%.200s'%s", r->model,
                                     s->model_name, s->n_adapters ? " and its adapters (GET /v1/models)" : "");
        if (st->n == ORC_LORA_MAX_STACK)
            return orc_api_error_set(e, 400, "invalid_request_error", "model", "",
                                     "the server's %d base adapters leave no room for '%.200s'", n0, r->model);
        idx[st->n - n0] = (size_t)a;
        st->ad[st->n] = orc_lora_set_at(s->adapters, (size_t)a);
        st->weight[st->n++] = 1.0f;
        j->model_id = s->adapter_names[a];
    }
    for (size_t i = 0; i < r->n_adapters; i++) {
        long a = adapter_index(s, r->adapters[i]);
        if (a < 0)
            return orc_api_error_set(e, 400, "invalid_request_error", "adapters", "adapter_not_found",
                                     "'adapters[%zu]': no adapter named '%.200s' is loaded (%zu loaded; GET "
                                     "/v1/models lists them)", i, r->adapters[i], s->n_adapters);
        for (int k = n0; k < st->n; k++)
            if (idx[k - n0] == (size_t)a)
                return orc_api_error_set(e, 400, "invalid_request_error", "adapters", "",
                                         "'adapters[%zu]': adapter '%.200s' is already in the request's stack%s", i,
                                         r->adapters[i], k == n0 && j->model_id != s->model_name ? " (as 'model')" : "");
        if (st->n == ORC_LORA_MAX_STACK)
            return orc_api_error_set(e, 400, "invalid_request_error", "adapters", "",
                                     "at most %d adapters at once ('model' and 'adapters' together%s)",
                                     ORC_LORA_MAX_STACK - n0, n0 ? ", beside the server's base adapters" : "");
        idx[st->n - n0] = (size_t)a;
        st->ad[st->n] = orc_lora_set_at(s->adapters, (size_t)a);
        st->weight[st->n++] = r->adapter_weights[i];
    }
    return true;
}

static enum MHD_Result handle_work(srv_server *s, struct MHD_Connection *c, conn *cn, orc_api_kind kind,
                                   srv_endpoint ep) {
    orc_api_error e;
    srv_job *j = srv_job_new(s);
    if (!j) API_ERROR(s, c, ep, 500, "server_error", "", "", "out of memory");
    if (!orc_api_request_parse(kind, cn->body.p, cn->body.len, &j->req, &e)) {
        srv_job_release(j);
        return send_error(s, c, ep, &e);
    }
    const orc_api_request *r = &j->req;
    size_t adapter_idx[ORC_LORA_MAX_STACK];
    bool ok = resolve_adapters(s, j, adapter_idx, &e);
    if (ok && kind == ORC_API_EMBEDDING && r->dimensions && r->dimensions != s->cfg->hidden_size)
        ok = orc_api_error_set(&e, 400, "invalid_request_error", "dimensions", "unsupported_parameter",
                               "'dimensions' must be the model's width %lld (truncation is not supported), got %lld",
                               (long long)s->cfg->hidden_size, (long long)r->dimensions);
    ok = ok && check_ids(s, &j->req, &e) && call_schema(s, &j->req, &e) && tokenize_job(s, j, &e);
    if (!ok) {
        srv_job_release(j);
        return send_error(s, c, ep, &e);
    }
    unsigned long long seq = atomic_fetch_add(&s->next_id, 1);
    j->created = (long long)time(NULL);
    snprintf(j->id, sizeof j->id, "%s%llx%06llx", ID_PREFIX[kind], (unsigned long long)s->started, seq);
    if (!r->has_seed) j->req.sampler.seed = ((uint64_t)time(NULL) << 20) ^ (seq * 0x9E3779B97F4A7C15ull);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    j->fd = ci ? ci->connect_fd : -1;
    int st = srv_submit(s, j);
    if (st) {
        srv_job_release(j);
        if (st == 429)
            API_ERROR(s, c, ep, 429, "rate_limit_error", "", "queue_full",
                      "all %d slots are busy and %d requests are waiting; retry later", s->opts.parallel, s->opts.queue);
        API_ERROR(s, c, ep, 503, "server_error", "", "server_shutting_down", "the server is shutting down");
    }
    srv_metrics_adapter_request(&s->metrics, adapter_idx, (size_t)(j->lora.n - s->base.n));
    if (r->stream) {
        /* The job's reference passes to the response (released in sse_free). */
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, j, sse_free);
        if (!resp) {
            srv_job_cancel(j, false);
            srv_job_release(j);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        srv_metrics_request(&s->metrics, ep, 200);
        return ret;
    }
    pthread_mutex_lock(&j->mu);
    srv_job_wait_locked(j, true);
    int status = j->status;
    char *body = j->out.len ? strdup(j->out.p) : NULL;
    pthread_mutex_unlock(&j->mu);
    srv_job_release(j);
    if (status == 499) { /* the client left: nobody to answer */
        free(body);
        srv_metrics_request(&s->metrics, ep, 499);
        return MHD_NO;
    }
    return send_body(s, c, ep, status, body, "application/json");
}

/* ---- routing ------------------------------------------------------------------------------ */

static bool authorized(srv_server *s, struct MHD_Connection *c) {
    if (!s->api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    while (*h == ' ') h++;
    size_t a = strlen(h), b = strlen(s->api_key);
    unsigned diff = a != b;
    for (size_t i = 0; i < a; i++) diff |= (unsigned char)h[i] ^ (unsigned char)s->api_key[i % (b ? b : 1)];
    return diff == 0; /* no early exit: the time does not tell how much matched */
}

typedef struct route {
    const char *path;
    const char *method;
    srv_endpoint ep;
} route;

static const route ROUTES[] = {
    {"/chat/completions", "POST", EP_CHAT}, {"/completions", "POST", EP_COMPLETIONS},
    {"/embeddings", "POST", EP_EMBEDDINGS}, {"/models", "GET", EP_MODELS},
    {"/health", "GET", EP_HEALTH},          {"/metrics", "GET", EP_METRICS},
};

static enum MHD_Result dispatch(srv_server *s, struct MHD_Connection *c, const char *url, const char *method,
                                conn *cn) {
    /* /v1/x and /x are the same endpoint (llama.cpp accepts both). */
    const char *path = strncmp(url, "/v1/", 4) == 0 ? url + 3 : url;
    const char *model_id = NULL;
    if (strncmp(path, "/models/", 8) == 0 && path[8]) {
        model_id = path + 8;
        path = "/models";
    }
    const route *rt = NULL;
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
        if (strcmp(path, ROUTES[i].path) == 0) rt = &ROUTES[i];
    if (!rt)
        API_ERROR(s, c, EP_OTHER, 404, "invalid_request_error", "", "not_found", "no endpoint %.200s %.200s", method,
                  url);
    if (strcmp(method, rt->method) != 0 && !(strcmp(method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0))
        API_ERROR(s, c, rt->ep, 405, "invalid_request_error", "", "method_not_allowed", "%.200s takes %s, not %.20s",
                  url, rt->method, method);
    if (rt->ep == EP_HEALTH) return handle_health(s, c);
    if (rt->ep == EP_METRICS) return handle_metrics(s, c);
    if (!authorized(s, c))
        API_ERROR(s, c, rt->ep, 401, "authentication_error", "", "invalid_api_key",
                  "Incorrect or missing API key: send 'Authorization: Bearer KEY'");
    if (rt->ep == EP_MODELS) return handle_models(s, c, model_id);
    if (cn->too_big)
        API_ERROR(s, c, rt->ep, 413, "invalid_request_error", "", "request_too_large",
                  "the request body exceeds the limit of %zu bytes", s->opts.max_body);
    orc_api_kind kind = rt->ep == EP_CHAT ? ORC_API_CHAT : rt->ep == EP_COMPLETIONS ? ORC_API_COMPLETION : ORC_API_EMBEDDING;
    return handle_work(s, c, cn, kind, rt->ep);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **state) {
    (void)version;
    srv_server *s = cls;
    conn *cn = *state;
    if (!cn) {
        cn = calloc(1, sizeof *cn);
        if (!cn) return MHD_NO;
        *state = cn;
        atomic_fetch_add(&s->active, 1);
        /* A declared oversized body is refused before it is read. */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->opts.max_body) {
            cn->answered = true;
            API_ERROR(s, c, EP_OTHER, 413, "invalid_request_error", "", "request_too_large",
                      "the request body of %.30s bytes exceeds the limit of %zu bytes", cl, s->opts.max_body);
        }
        return MHD_YES;
    }
    if (cn->answered) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        if (cn->body.len + *upload_size > s->opts.max_body) cn->too_big = true;
        else if (!srv_buf_add(&cn->body, upload, *upload_size)) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    return dispatch(s, c, url, method, cn);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode code) {
    (void)c;
    (void)code;
    srv_server *s = cls;
    conn *cn = *state;
    if (!cn) return;
    atomic_fetch_sub(&s->active, 1);
    srv_buf_free(&cn->body);
    free(cn);
    *state = NULL;
}

/* ---- start and stop ------------------------------------------------------------------------- */

void orc_server_opts_default(orc_server_opts *o) {
    *o = (orc_server_opts){.host = "127.0.0.1", .port = 8080, .parallel = 1, .queue = 16, .max_body = 1u << 20,
                           .model_name = "orchard"};
}

static void server_free(orc_server *s) {
    if (s->mhd) MHD_stop_daemon(s->mhd);
    orc_token_filter_free(s->filter);
    srv_metrics_destroy(&s->metrics);
    pthread_mutex_destroy(&s->mu);
    free(s->model_name);
    free(s->api_key);
    free(s->adapter_names);
    free(s);
}

/* opts.adapters: every adapter must fit the model, and no name may be the
 * base model's id (a request could not tell them apart). */
static bool adapters_check(orc_server *s, const orc_lora_set *set, orc_error *err) {
    s->adapters = set;
    s->n_adapters = set ? orc_lora_set_count(set) : 0;
    s->adapter_names = calloc(s->n_adapters ? s->n_adapters : 1, sizeof *s->adapter_names);
    if (!s->adapter_names || !srv_metrics_adapters(&s->metrics, s->adapter_names, s->n_adapters)) {
        orc_error_set(err, ORC_ENOMEM, "serve: out of memory");
        return false;
    }
    for (size_t i = 0; i < s->n_adapters; i++) {
        const char *name = orc_lora_set_name(set, i);
        orc_error fit = {0};
        s->adapter_names[i] = name;
        if (orc_lora_check_fits(orc_lora_set_at(set, i), s->cfg, &fit) != ORC_OK) {
            orc_error_set(err, fit.code, "serve: adapter '%s' does not fit the model: %s", name, fit.msg);
            return false;
        }
        if (strcmp(name, s->model_name) == 0) {
            orc_error_set(err, ORC_EINVAL, "serve: adapter '%s' has the base model's id; give it another name", name);
            return false;
        }
    }
    return true;
}

/* Either model (one of m, q): everything past here reads only s->cfg, and
 * the model itself only through the batcher and slot_forward (engine.c). */
static orc_server *server_start(orc_llm *m, orc_qllm *q, const orc_tokenizer *tok, const orc_server_opts *o,
                                orc_error *err) {
    const orc_llm_config *cfg = m ? &m->cfg : &q->cfg;
    const int64_t max_pos = cfg->max_position_embeddings;
    if (o->parallel < 1 || o->parallel > 256 || o->queue < 0 || o->queue > 100000 || o->port < 0 || o->port > 65535 ||
        o->max_body < 64 || o->context > max_pos) {
        orc_error_set(err, ORC_EINVAL, "serve: parallel %d (1..256), queue %d (0..100000), port %d, max body %zu "
                      "(>= 64) or context %lld (<= %lld) out of range", o->parallel, o->queue, o->port, o->max_body,
                      (long long)o->context, (long long)max_pos);
        return NULL;
    }
    orc_server *s = calloc(1, sizeof *s);
    if (!s) {
        orc_error_set(err, ORC_ENOMEM, "serve: out of memory");
        return NULL;
    }
    s->m = m;
    s->q = q;
    s->cfg = cfg;
    if (q && q->lora) s->base = *q->lora;
    s->tok = tok;
    s->opts = *o;
    if (s->opts.threads_per_slot <= 0) s->opts.threads_per_slot = omp_get_max_threads() / o->parallel;
    s->model_name = strdup(o->model_name && o->model_name[0] ? o->model_name : "orchard");
    s->api_key = o->api_key && o->api_key[0] ? strdup(o->api_key) : NULL;
    s->context = o->context > 0 ? o->context : max_pos;
    if (s->opts.chat_template == ORC_CHAT_AUTO) s->opts.chat_template = orc_chat_template_detect(tok);
    s->n_chat_stops = orc_chat_stop_ids_with(s->opts.chat_template, tok, s->chat_stops, 4);
    if (s->n_chat_stops > 4) s->n_chat_stops = 4;
    int32_t eot = orc_tokenizer_special_id(tok, ORC_TOK_END_OF_TEXT);
    if (eot >= 0) s->text_stops[s->n_text_stops++] = eot;
    if (cfg->eos_token_id >= 0 && cfg->eos_token_id != eot) s->text_stops[s->n_text_stops++] = (int32_t)cfg->eos_token_id;
    s->bos = orc_tokenizer_special_id(tok, ORC_TOK_BEGIN_OF_TEXT);
    s->started = (long long)time(NULL);
    s->n_slots = o->parallel;
    atomic_init(&s->next_id, 1);
    atomic_init(&s->active, 0);
    pthread_mutex_init(&s->mu, NULL);
    srv_metrics_init(&s->metrics);
    if (!s->model_name) orc_error_set(err, ORC_ENOMEM, "serve: out of memory");
    else if (adapters_check(s, o->adapters, err)) s->filter = orc_token_filter_new(tok, cfg->vocab_size, err);
    if (!s->filter) {
        server_free(s);
        return NULL;
    }
    if (!s->model_name || !srv_slots_start(s, err)) {
        orc_error_set(err, ORC_ENOMEM, "serve: out of memory");
        srv_slots_stop(s);
        server_free(s);
        return NULL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    const char *host = o->host && o->host[0] ? o->host : "127.0.0.1";
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        orc_error_set(err, ORC_EINVAL, "serve: cannot resolve the host '%s': %s", host, gai_strerror(gai));
    } else {
        unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                         (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
        s->mhd = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned)(256 + o->parallel + o->queue),
                                  MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
        if (!s->mhd) orc_error_set(err, ORC_EIO, "serve: cannot listen on %s:%d (is the port in use?)", host, o->port);
    }
    if (ai) freeaddrinfo(ai);
    if (!s->mhd) {
        srv_slots_stop(s);
        server_free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? (int)di->port : o->port;
    return s;
}

orc_server *orc_server_start(orc_llm *m, const orc_tokenizer *tok, const orc_server_opts *o, orc_error *err) {
    return server_start(m, NULL, tok, o, err);
}

orc_server *orc_server_start_quant(orc_qllm *q, const orc_tokenizer *tok, const orc_server_opts *o, orc_error *err) {
    return server_start(NULL, q, tok, o, err);
}

int orc_server_port(const orc_server *s) { return s->port; }

void orc_server_stop(orc_server *s) {
    if (!s) return;
    srv_slots_stop(s); /* new requests get 503; queued and running ones end */
    /* Let the answers already written reach their clients (a stream's last
     * chunk) before the daemon closes the connections; bounded at 3 s. */
    for (int i = 0; i < 300 && atomic_load(&s->active) > 0; i++) usleep(10000);
    server_free(s); /* joins the connection threads, whose jobs are all done */
}
