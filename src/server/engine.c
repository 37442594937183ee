/* The work a slot does for a job: the decode loop (the slot's generator
 * primes its KV cache with the prompt, reusing the prefix it already holds,
 * then tokens are sampled and fed one at a time with stop ids, stop strings,
 * a token budget, log-probabilities and client cancellation), the OpenAI
 * response shapes built from it (whole bodies and SSE chunks for chat and
 * text completions), the log-probabilities of an echoed prompt, and
 * embeddings (mean-pooled final hidden states, L2-normalised). The loop is
 * written here rather than through orc_generate's callback because
 * log-probabilities need each step's logits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "orchard/ops.h"
#include "server/server_internal.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- log-probabilities ------------------------------------------------------------ */

/* log softmax of logits at id, and the top alternatives ordered by
 * (log-probability descending, id ascending). -inf logits are impossible ids. */
static void token_logprobs(const float *logits, int64_t V, int32_t id, int top, srv_tok_lp *r) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0.0;
    for (int64_t i = 0; i < V; i++)
        if (isfinite(logits[i])) sum += exp((double)(logits[i] - mx));
    const double lse = (double)mx + log(sum > 0 ? sum : 1.0);
    r->id = id;
    r->lp = (float)((double)logits[id] - lse);
    r->n_top = 0;
    for (int64_t i = 0; i < V && top > 0; i++) {
        float v = logits[i];
        if (!isfinite(v)) continue;
        int k = r->n_top;
        if (k == top && !(v > logits[r->top_id[k - 1]])) continue;
        if (k < top) r->n_top++;
        else k--; /* drop the last */
        while (k > 0 && v > logits[r->top_id[k - 1]]) {
            r->top_id[k] = r->top_id[k - 1];
            k--;
        }
        r->top_id[k] = (int32_t)i;
    }
    for (int k = 0; k < r->n_top; k++) r->top_lp[k] = (float)((double)logits[r->top_id[k]] - lse);
}

/* OpenAI carries an impossible token as a very negative number, never -inf. */
static json_t *lp_value(float lp) { return json_real(isfinite(lp) ? lp : -9999.0); }

static json_t *token_bytes(const orc_tokenizer *tok, int32_t id) {
    size_t n = 0;
    const char *s = orc_tokenizer_id_to_token(tok, id, &n);
    json_t *a = json_array();
    for (size_t i = 0; s && i < n; i++) json_array_append_new(a, json_integer((unsigned char)s[i]));
    return a;
}

static json_t *token_text(const orc_tokenizer *tok, int32_t id) {
    size_t n = 0;
    const char *s = orc_tokenizer_id_to_token(tok, id, &n);
    return srv_json_text(s ? s : "", s ? n : 0);
}

/* Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs"}...]}. */
static json_t *chat_logprobs(const orc_tokenizer *tok, const srv_tok_lp *lps, size_t n) {
    json_t *content = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_object(), *tops = json_array();
        json_object_set_new(e, "token", token_text(tok, lps[i].id));
        json_object_set_new(e, "logprob", lp_value(lps[i].lp));
        json_object_set_new(e, "bytes", token_bytes(tok, lps[i].id));
        for (int k = 0; k < lps[i].n_top; k++) {
            json_t *t = json_object();
            json_object_set_new(t, "token", token_text(tok, lps[i].top_id[k]));
            json_object_set_new(t, "logprob", lp_value(lps[i].top_lp[k]));
            json_object_set_new(t, "bytes", token_bytes(tok, lps[i].top_id[k]));
            json_array_append_new(tops, t);
        }
        json_object_set_new(e, "top_logprobs", tops);
        json_array_append_new(content, e);
    }
    json_t *o = json_object();
    json_object_set_new(o, "content", content);
    return o;
}

/* Completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
 * a NaN log-probability (a prompt's first token) is null. */
static json_t *text_logprobs(const orc_tokenizer *tok, const srv_tok_lp *lps, size_t n, size_t offset) {
    json_t *tokens = json_array(), *lp = json_array(), *tops = json_array(), *offs = json_array();
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        orc_tokenizer_id_to_token(tok, lps[i].id, &len);
        json_array_append_new(tokens, token_text(tok, lps[i].id));
        bool none = isnan(lps[i].lp);
        json_array_append_new(lp, none ? json_null() : lp_value(lps[i].lp));
        json_t *t = none ? json_null() : json_object();
        for (int k = 0; !none && k < lps[i].n_top; k++) {
            size_t tl = 0;
            const char *ts = orc_tokenizer_id_to_token(tok, lps[i].top_id[k], &tl);
            json_t *key = srv_json_text(ts ? ts : "", ts ? tl : 0);
            json_object_set_new(t, json_string_value(key), lp_value(lps[i].top_lp[k]));
            json_decref(key);
        }
        json_array_append_new(tops, t);
        json_array_append_new(offs, json_integer((json_int_t)offset));
        offset += len;
    }
    json_t *o = json_object();
    json_object_set_new(o, "tokens", tokens);
    json_object_set_new(o, "token_logprobs", lp);
    json_object_set_new(o, "top_logprobs", tops);
    json_object_set_new(o, "text_offset", offs);
    return o;
}

/* ---- the decode loop -------------------------------------------------------------- */

typedef bool (*piece_fn)(void *user, const char *text, size_t len, const srv_tok_lp *lps, size_t n_lps);

typedef struct decode_opts {
    orc_sampler_opts sampler;
    int64_t max_tokens;
    const int32_t *stop_ids;
    size_t n_stop_ids;
    char *const *stops;
    size_t n_stops;
    int top;          /* -1: no log-probabilities */
    piece_fn emit;    /* NULL: not streamed */
    void *user;
    atomic_bool *cancel;
    int delay_us;
    double t_start;   /* for the time to first token */
} decode_opts;

typedef struct choice_out {
    srv_buf text;
    srv_tok_lp *lps;
    size_t n_lps, cap_lps;
    int64_t n_tokens, cached;
    const char *finish; /* "stop", "length" or NULL when cancelled */
    double prefill_s, decode_s;
} choice_out;

static void choice_free(choice_out *c) {
    srv_buf_free(&c->text);
    free(c->lps);
    memset(c, 0, sizeof *c);
}

/* Bring the slot's cache to prompt[0..n-1) through orc_generate (which keeps
 * the prefix the cache shares with it), then feed the last prompt token for
 * the logits of the first new one. */
static const float *prime(orc_generator *g, const int32_t *prompt, size_t n, int64_t *cached, orc_error *err) {
    *cached = 0;
    if (n < 2) {
        orc_generator_reset(g);
        return orc_generator_feed(g, prompt, n, err);
    }
    orc_gen_opts o;
    orc_gen_opts_default(&o);
    o.sampler.temperature = 0.0f;
    o.max_tokens = 1; /* the sampled token is not fed: the cache ends at the prompt */
    orc_gen_result r;
    if (orc_generate(g, prompt, n - 1, &o, &r, err) != ORC_OK) return NULL;
    *cached = r.prompt_tokens - r.prefilled;
    orc_gen_result_free(&r);
    return orc_generator_feed(g, prompt + n - 1, 1, err);
}

/* Where the earliest stop string starts among matches ending after old_len; -1 if none. */
static ptrdiff_t find_stop(const srv_buf *t, size_t old_len, const decode_opts *o) {
    ptrdiff_t best = -1;
    for (size_t i = 0; i < o->n_stops; i++) {
        size_t L = strlen(o->stops[i]);
        size_t from = old_len + 1 > L ? old_len + 1 - L : 0;
        if (from >= t->len) continue;
        const char *hit = memmem(t->p + from, t->len - from, o->stops[i], L);
        if (hit && (best < 0 || hit - t->p < best)) best = hit - t->p;
    }
    return best;
}

/* The final part of the text: whole UTF-8 characters that cannot be the
 * start of a stop string. */
static size_t safe_end(const srv_buf *t, const decode_opts *o) {
    size_t hold = 0;
    for (size_t i = 0; i < o->n_stops; i++) {
        size_t L = strlen(o->stops[i]);
        for (size_t k = L - 1 < t->len ? L - 1 : t->len; k > hold; k--)
            if (memcmp(t->p + t->len - k, o->stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return orc_utf8_complete_prefix(t->p, t->len - hold);
}

static bool is_stop_id(const decode_opts *o, int32_t id) {
    for (size_t i = 0; i < o->n_stop_ids; i++)
        if (o->stop_ids[i] == id) return true;
    return false;
}

static bool push_lp(choice_out *c, const srv_tok_lp *lp) {
    if (c->n_lps == c->cap_lps) {
        size_t cap = c->cap_lps ? c->cap_lps * 2 : 64;
        srv_tok_lp *p = realloc(c->lps, cap * sizeof *p);
        if (!p) return false;
        c->lps = p;
        c->cap_lps = cap;
    }
    c->lps[c->n_lps++] = *lp;
    return true;
}

static bool decode(srv_slot *slot, const int32_t *prompt, size_t n, const decode_opts *o, choice_out *out,
                   orc_error *err) {
    srv_server *s = slot->srv;
    const int64_t V = s->m->cfg.vocab_size, context = orc_generator_context(slot->gen);
    memset(out, 0, sizeof *out);
    int32_t *seq = malloc(sizeof(int32_t) * (n + (size_t)o->max_tokens + 1));
    if (!seq || !srv_buf_add(&out->text, "", 0)) {
        free(seq);
        orc_error_set(err, ORC_ENOMEM, "serve: out of memory");
        return false;
    }
    memcpy(seq, prompt, sizeof(int32_t) * n);
    size_t n_seq = n, emitted = 0, lp_emitted = 0;
    double t0 = now_s();
    const float *logits = prime(slot->gen, prompt, n, &out->cached, err);
    out->prefill_s = now_s() - t0;
    orc_rng rng;
    orc_rng_init(&rng, o->sampler.seed);
    t0 = now_s();
    bool ok = logits != NULL;
    while (ok) {
        int32_t id = orc_sample(&o->sampler, logits, V, seq, n_seq, orc_rng_uniform(&rng), &slot->work);
        if (out->n_tokens == 0 && o->t_start > 0) srv_metrics_ttft(&s->metrics, now_s() - o->t_start);
        bool done = false;
        if (id < 0 || is_stop_id(o, id)) {
            out->finish = "stop";
            done = true;
        } else {
            srv_tok_lp lp;
            if (o->top >= 0) {
                token_logprobs(logits, V, id, o->top, &lp);
                if (!push_lp(out, &lp)) ok = false;
            }
            seq[n_seq++] = id;
            out->n_tokens++;
            size_t plen = 0, old_len = out->text.len;
            const char *piece = orc_tokenizer_id_to_token(s->tok, id, &plen);
            if (!srv_buf_add(&out->text, piece ? piece : "", piece ? plen : 0)) ok = false;
            ptrdiff_t cut = ok ? find_stop(&out->text, old_len, o) : -1;
            if (cut >= 0) {
                out->text.len = (size_t)cut;
                out->text.p[cut] = 0;
                out->finish = "stop";
                done = true;
            } else if (out->n_tokens >= o->max_tokens || (int64_t)n_seq >= context) {
                out->finish = "length";
                done = true;
            }
        }
        if (!ok) {
            orc_error_set(err, ORC_ENOMEM, "serve: out of memory");
            break;
        }
        size_t end = done ? out->text.len : safe_end(&out->text, o);
        if (o->emit && (end > emitted || (done && out->n_lps > lp_emitted))) {
            if (!o->emit(o->user, out->text.p + emitted, end > emitted ? end - emitted : 0, out->lps + lp_emitted,
                         out->n_lps - lp_emitted))
                atomic_store(o->cancel, true);
            emitted = end > emitted ? end : emitted;
            lp_emitted = out->n_lps;
        }
        if (done) break;
        if (atomic_load(o->cancel)) {
            out->finish = NULL;
            break;
        }
        if (o->delay_us > 0) usleep((useconds_t)o->delay_us);
        logits = orc_generator_feed(slot->gen, &id, 1, err);
        ok = logits != NULL;
    }
    out->decode_s = now_s() - t0;
    free(seq);
    if (!ok) choice_free(out);
    return ok;
}

/* Log-probabilities of the prompt's tokens (for completions with echo): one
 * forward over the whole prompt; entry i is token i given the ones before,
 * entry 0 has none (NaN). */
static bool prompt_logprobs(srv_slot *slot, const int32_t *ids, size_t n, int top, srv_tok_lp *out,
                            orc_error *err) {
    orc_ctx *ctx = &slot->ctx;
    orc_ctx_reset(ctx);
    const int64_t V = slot->srv->m->cfg.vocab_size, tv = (int64_t)orc_tokenizer_vocab_size(slot->srv->tok);
    orc_tensor *t = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, (int64_t)n));
    if (t) memcpy(t->data, ids, sizeof(int32_t) * n);
    orc_tensor *logits = t ? orc_llm_forward(ctx, slot->srv->m, t, NULL) : NULL;
    float *row = malloc(sizeof(float) * (size_t)V);
    bool ok = logits && row && orc_ctx_ok(ctx);
    if (!ok) orc_error_set(err, ctx->err.code ? ctx->err.code : ORC_ENOMEM, "serve: %s", ctx->err.msg);
    for (size_t i = 0; ok && i < n; i++) {
        if (i == 0) {
            out[0] = (srv_tok_lp){.id = ids[0], .lp = NAN};
            continue;
        }
        memcpy(row, orc_f32(logits) + (i - 1) * (size_t)V, sizeof(float) * (size_t)V);
        for (int64_t k = tv; k < V; k++) row[k] = -INFINITY;
        token_logprobs(row, V, ids[i], top, &out[i]);
    }
    free(row);
    orc_ctx_reset(ctx);
    return ok;
}

/* ---- responses ----------------------------------------------------------------------- */

static json_t *envelope(const srv_job *j, const char *object) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "object", json_string(object));
    json_object_set_new(o, "created", json_integer(j->created));
    json_object_set_new(o, "model", srv_json_text(j->srv->model_name, strlen(j->srv->model_name)));
    json_object_set_new(o, "system_fingerprint", json_string("orchard-" ORCHARD_VERSION));
    return o;
}

static json_t *usage(int64_t prompt, int64_t completion, int64_t cached) {
    json_t *u = json_object(), *d = json_object();
    json_object_set_new(u, "prompt_tokens", json_integer(prompt));
    json_object_set_new(u, "completion_tokens", json_integer(completion));
    json_object_set_new(u, "total_tokens", json_integer(prompt + completion));
    json_object_set_new(d, "cached_tokens", json_integer(cached));
    json_object_set_new(u, "prompt_tokens_details", d);
    return u;
}

static void write_event(srv_job *j, json_t *v) {
    char *s = srv_json_dump(v);
    srv_buf b = {0};
    if (s && srv_buf_addf(&b, "data: %s\n\n", s)) srv_job_write(j, b.p, b.len);
    srv_buf_free(&b);
    free(s);
}

/* One streamed chunk for choice index: text (may be empty), its tokens'
 * log-probabilities, a finish reason or NULL; chat's first chunk has the role. */
typedef struct stream_ctx {
    srv_job *j;
    int index;
    size_t offset; /* completions: text_offset of the next token */
} stream_ctx;

static void stream_chunk(stream_ctx *sc, bool role, const char *text, size_t len, const srv_tok_lp *lps,
                         size_t n_lps, const char *finish) {
    srv_job *j = sc->j;
    const bool chat = j->req.kind == ORC_API_CHAT;
    json_t *o = envelope(j, chat ? "chat.completion.chunk" : "text_completion");
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(sc->index));
    const orc_tokenizer *tok = j->srv->tok;
    if (chat) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", srv_json_text(text, len));
        json_object_set_new(choice, "delta", delta);
        json_object_set_new(choice, "logprobs", j->req.logprobs && n_lps ? chat_logprobs(tok, lps, n_lps) : json_null());
    } else {
        json_object_set_new(choice, "text", srv_json_text(text ? text : "", text ? len : 0));
        json_object_set_new(choice, "logprobs",
                            j->req.logprobs && n_lps ? text_logprobs(tok, lps, n_lps, sc->offset) : json_null());
        for (size_t i = 0; i < n_lps; i++) {
            size_t l = 0;
            orc_tokenizer_id_to_token(tok, lps[i].id, &l);
            sc->offset += l;
        }
    }
    json_object_set_new(choice, "finish_reason", finish ? json_string(finish) : json_null());
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    json_object_set_new(o, "choices", choices);
    write_event(j, o);
}

static bool emit_piece(void *user, const char *text, size_t len, const srv_tok_lp *lps, size_t n_lps) {
    stream_ctx *sc = user;
    stream_chunk(sc, false, text, len, lps, n_lps, NULL);
    return !atomic_load(&sc->j->cancelled);
}

/* A non-streamed choice. */
static json_t *choice_json(srv_job *j, int index, const choice_out *c, size_t p, const srv_tok_lp *echo_lps,
                           size_t n_echo) {
    const orc_tokenizer *tok = j->srv->tok;
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(index));
    if (j->req.kind == ORC_API_CHAT) {
        json_t *msg = json_object();
        json_object_set_new(msg, "role", json_string("assistant"));
        json_object_set_new(msg, "content", srv_json_text(c->text.p, c->text.len));
        json_object_set_new(o, "message", msg);
        json_object_set_new(o, "logprobs", j->req.logprobs ? chat_logprobs(tok, c->lps, c->n_lps) : json_null());
    } else {
        srv_buf t = {0};
        const char *prompt = j->req.inputs[p];
        if (j->req.echo) srv_buf_add(&t, prompt, strlen(prompt));
        srv_buf_add(&t, c->text.p, c->text.len);
        json_object_set_new(o, "text", srv_json_text(t.p, t.len));
        srv_buf_free(&t);
        if (j->req.logprobs) {
            size_t n_all = n_echo + c->n_lps;
            srv_tok_lp *all = malloc(sizeof *all * (n_all ? n_all : 1));
            if (all) {
                if (n_echo) memcpy(all, echo_lps, sizeof *all * n_echo);
                if (c->n_lps) memcpy(all + n_echo, c->lps, sizeof *all * c->n_lps);
            }
            json_object_set_new(o, "logprobs", all ? text_logprobs(tok, all, n_all, 0) : json_null());
            free(all);
        } else {
            json_object_set_new(o, "logprobs", json_null());
        }
    }
    json_object_set_new(o, "finish_reason", json_string(c->finish ? c->finish : "stop"));
    return o;
}

/* ---- generation jobs -------------------------------------------------------------------- */

static void fail_job(srv_job *j, const orc_error *err) {
    orc_api_error e;
    orc_api_error_set(&e, 500, "server_error", "", "", "generation failed: %s", err->msg);
    char *body = srv_error_body(&e);
    if (j->req.stream) {
        srv_buf b = {0};
        srv_buf_addf(&b, "data: %s\n\ndata: [DONE]\n\n", body ? body : "{}");
        srv_job_write(j, b.p, b.len);
        srv_buf_free(&b);
        free(body);
        srv_job_finish(j, 500, NULL);
    } else {
        srv_job_finish(j, 500, body);
    }
}

void srv_finish_cancelled(srv_job *j) {
    bool shutdown;
    pthread_mutex_lock(&j->mu);
    shutdown = j->shutdown;
    pthread_mutex_unlock(&j->mu);
    if (!shutdown) {
        srv_metrics_cancelled(&j->srv->metrics);
        srv_job_finish(j, 499, NULL);
        return;
    }
    orc_api_error e;
    orc_api_error_set(&e, 503, "server_error", "", "server_shutting_down", "the server is shutting down");
    char *body = srv_error_body(&e);
    if (j->req.stream) {
        srv_buf b = {0};
        srv_buf_addf(&b, "data: %s\n\ndata: [DONE]\n\n", body ? body : "{}");
        srv_job_write(j, b.p, b.len);
        srv_buf_free(&b);
        free(body);
        body = NULL;
    }
    srv_job_finish(j, 503, body);
}

static void run_generation(srv_slot *slot, srv_job *j, double t_start) {
    srv_server *s = slot->srv;
    const orc_api_request *r = &j->req;
    const bool chat = r->kind == ORC_API_CHAT;
    json_t *choices = json_array();
    int64_t prompt_total = 0, completion_total = 0, cached_total = 0;
    orc_error err = {0};
    bool failed = false;
    for (size_t p = 0; p < j->n_prompts && !failed && !atomic_load(&j->cancelled); p++) {
        const int32_t *ids = j->prompts[p];
        const size_t n = j->prompt_lens[p];
        prompt_total += (int64_t)n;
        /* Echo: the prompt text, and its tokens' log-probabilities (after a begin token). */
        srv_tok_lp *echo = NULL;
        size_t skip = s->bos >= 0 && n > 0 && ids[0] == s->bos ? 1 : 0, n_echo = 0;
        if (!chat && r->echo && r->logprobs) {
            echo = malloc(sizeof *echo * n);
            if (!echo || !prompt_logprobs(slot, ids, n, r->top_logprobs, echo, &err)) {
                if (!echo) orc_error_set(&err, ORC_ENOMEM, "serve: out of memory");
                failed = true;
                free(echo);
                break;
            }
            n_echo = n - skip;
        }
        for (int c = 0; c < r->n && !failed && !atomic_load(&j->cancelled); c++) {
            const int index = (int)p * r->n + c;
            stream_ctx sc = {.j = j, .index = index, .offset = 0};
            if (r->stream && chat) stream_chunk(&sc, true, "", 0, NULL, 0, NULL);
            if (r->stream && !chat && r->echo) {
                const char *pt = r->inputs[p];
                stream_chunk(&sc, false, pt, strlen(pt), echo ? echo + skip : NULL, n_echo, NULL);
                if (!echo) sc.offset = strlen(pt);
            }
            decode_opts o = {.sampler = r->sampler,
                             .max_tokens = j->max_tokens[p],
                             .stop_ids = chat ? s->chat_stops : s->text_stops,
                             .n_stop_ids = chat ? s->n_chat_stops : s->n_text_stops,
                             .stops = r->stop,
                             .n_stops = r->n_stop,
                             .top = r->logprobs ? r->top_logprobs : -1,
                             .emit = r->stream ? emit_piece : NULL,
                             .user = &sc,
                             .cancel = &j->cancelled,
                             .delay_us = s->opts.token_delay_us,
                             .t_start = index == 0 ? t_start : 0};
            o.sampler.seed = r->sampler.seed + (uint64_t)index;
            choice_out out;
            if (!decode(slot, ids, n, &o, &out, &err)) {
                failed = true;
                break;
            }
            completion_total += out.n_tokens;
            cached_total += out.cached;
            srv_metrics_generation(&s->metrics, c == 0 ? (int64_t)n : 0, c == 0 ? out.cached : 0, out.n_tokens,
                                   out.prefill_s, out.decode_s);
            if (out.finish) {
                if (r->stream) stream_chunk(&sc, false, chat ? NULL : "", 0, NULL, 0, out.finish);
                else json_array_append_new(choices, choice_json(j, index, &out, p, echo ? echo + skip : NULL, n_echo));
            }
            choice_free(&out);
        }
        free(echo);
    }
    if (failed) {
        fail_job(j, &err);
    } else if (atomic_load(&j->cancelled)) {
        srv_finish_cancelled(j);
    } else if (r->stream) {
        if (r->include_usage) {
            json_t *o = envelope(j, chat ? "chat.completion.chunk" : "text_completion");
            json_object_set_new(o, "choices", json_array());
            json_object_set_new(o, "usage", usage(prompt_total, completion_total, cached_total));
            write_event(j, o);
        }
        srv_job_write(j, "data: [DONE]\n\n", 14);
        srv_job_finish(j, 200, NULL);
    } else {
        json_t *o = envelope(j, chat ? "chat.completion" : "text_completion");
        json_object_set_new(o, "choices", choices);
        choices = NULL;
        json_object_set_new(o, "usage", usage(prompt_total, completion_total, cached_total));
        srv_job_finish(j, 200, srv_json_dump(o));
    }
    json_decref(choices);
}

/* ---- embeddings ---------------------------------------------------------------------------- */

static void base64_floats(srv_buf *b, const float *x, size_t n) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *u = (const unsigned char *)x; /* little-endian float32, as OpenAI sends */
    size_t len = n * sizeof(float);
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)u[i] << 16 | (i + 1 < len ? (unsigned)u[i + 1] << 8 : 0) | (i + 2 < len ? u[i + 2] : 0);
        char q[4] = {A[v >> 18 & 63], A[v >> 12 & 63], i + 1 < len ? A[v >> 6 & 63] : '=', i + 2 < len ? A[v & 63] : '='};
        srv_buf_add(b, q, 4);
    }
}

static bool embed_one(srv_slot *slot, const int32_t *ids, size_t n, float *out, orc_error *err) {
    orc_ctx *ctx = &slot->ctx;
    orc_ctx_reset(ctx);
    const int64_t D = slot->srv->m->cfg.hidden_size;
    orc_tensor *t = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, (int64_t)n));
    if (t) memcpy(t->data, ids, sizeof(int32_t) * n);
    orc_tensor *h = t ? orc_llm_hidden(ctx, slot->srv->m, t, NULL) : NULL;
    if (!h || !orc_ctx_ok(ctx)) {
        orc_error_set(err, ctx->err.code ? ctx->err.code : ORC_ENOMEM, "serve: %s", ctx->err.msg);
        orc_ctx_reset(ctx);
        return false;
    }
    h = orc_contiguous(ctx, h);
    const float *x = h ? orc_f32(h) : NULL;
    double norm = 0.0;
    for (int64_t d = 0; x && d < D; d++) {
        double sum = 0.0;
        for (size_t i = 0; i < n; i++) sum += x[i * (size_t)D + (size_t)d];
        out[d] = (float)(sum / (double)n);
        norm += (double)out[d] * out[d];
    }
    norm = sqrt(norm);
    for (int64_t d = 0; x && d < D; d++) out[d] = norm > 0 ? (float)(out[d] / norm) : 0.0f;
    orc_ctx_reset(ctx);
    return x != NULL;
}

static void run_embeddings(srv_slot *slot, srv_job *j) {
    srv_server *s = slot->srv;
    const int64_t D = s->m->cfg.hidden_size;
    float *v = malloc(sizeof(float) * (size_t)D);
    json_t *data = json_array();
    int64_t tokens = 0;
    orc_error err = {0};
    bool ok = v != NULL;
    if (!ok) orc_error_set(&err, ORC_ENOMEM, "serve: out of memory");
    for (size_t i = 0; ok && i < j->n_prompts && !atomic_load(&j->cancelled); i++) {
        ok = embed_one(slot, j->prompts[i], j->prompt_lens[i], v, &err);
        if (!ok) break;
        tokens += (int64_t)j->prompt_lens[i];
        json_t *e = json_object();
        json_object_set_new(e, "object", json_string("embedding"));
        json_object_set_new(e, "index", json_integer((json_int_t)i));
        if (j->req.base64) {
            srv_buf b = {0};
            base64_floats(&b, v, (size_t)D);
            json_object_set_new(e, "embedding", json_stringn(b.p ? b.p : "", b.len));
            srv_buf_free(&b);
        } else {
            json_t *arr = json_array();
            for (int64_t d = 0; d < D; d++) json_array_append_new(arr, json_real(v[d]));
            json_object_set_new(e, "embedding", arr);
        }
        json_array_append_new(data, e);
    }
    free(v);
    srv_metrics_embedding(&s->metrics, tokens);
    if (!ok) {
        json_decref(data);
        fail_job(j, &err);
        return;
    }
    if (atomic_load(&j->cancelled)) {
        json_decref(data);
        srv_finish_cancelled(j);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "object", json_string("list"));
    json_object_set_new(o, "data", data);
    json_object_set_new(o, "model", srv_json_text(s->model_name, strlen(s->model_name)));
    json_t *u = json_object();
    json_object_set_new(u, "prompt_tokens", json_integer(tokens));
    json_object_set_new(u, "total_tokens", json_integer(tokens));
    json_object_set_new(o, "usage", u);
    srv_job_finish(j, 200, srv_json_dump(o));
}

void srv_run_job(srv_slot *slot, srv_job *j) {
    double t_start = now_s();
    if (j->req.kind == ORC_API_EMBEDDING) run_embeddings(slot, j);
    else run_generation(slot, j, t_start);
}
