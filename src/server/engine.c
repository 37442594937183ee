/* The work a slot does for a job: the decode loop (the slot's generator
 * primes its KV cache with the prompt, reusing the prefix it already holds,
 * then tokens are sampled and fed one at a time with stop ids, stop strings,
 * a token budget, log-probabilities and client cancellation), the OpenAI
 * response shapes built from it (whole bodies and SSE chunks for chat and
 * text completions), the log-probabilities of an echoed prompt, and
 * embeddings (mean-pooled final hidden states, L2-normalised), each under
 * the job's LoRA stack (the batcher's rows carry it; the slot's own forwards
 * run on the slot's view of the model, never on the shared one; the model
 * is a float or a quantized one, and slot_forward is the one place that
 * tells them apart). The loop is
 * written here rather than through orc_generate's callback because
 * log-probabilities need each step's logits, and because one hook in it
 * (guide_logits / guide_advance) shapes the logits the sampler sees:
 * logit_bias, presence and frequency penalties, and the JSON constraint of
 * tool calls and response_format; tool calls are built into OpenAI's
 * tool_calls (whole or as stream deltas) here too. */
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
    const double lse = orc_logsumexp(logits, V);
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
    /* constrained decoding: json (response_format) constrains the whole
     * output; call (tools) constrains a tool call that starts when the reply
     * begins with trigger (must_call: it has to) */
    const orc_json_schema *json, *call;
    const char *trigger;
    size_t trigger_json; /* bytes at the end of trigger that are the call's JSON */
    bool must_call;
    /* OpenAI's penalties (on this choice's tokens) and logit_bias */
    float presence, frequency;
    const int32_t *bias_ids;
    const float *bias;
    size_t n_bias;
    /* streaming a call: the name (args NULL) once the arguments start, then argument bytes */
    void (*call_part)(void *user, const char *name, size_t name_len, const char *args, size_t n);
    const char *args_key;
    const orc_lora_stack *lora; /* the request's adapters */
} decode_opts;

typedef struct choice_out {
    srv_buf text;
    srv_tok_lp *lps;
    size_t n_lps, cap_lps;
    int64_t n_tokens, cached;
    const char *finish; /* "stop", "length", "tool_calls" or NULL when cancelled */
    double prefill_s, decode_s;
    bool call;          /* the text from call_at is a tool call's JSON */
    size_t call_at;
    bool call_announced; /* streamed: the call's id and name went out */
    size_t call_sent;    /* streamed: argument bytes sent */
} choice_out;

static void choice_free(choice_out *c) {
    srv_buf_free(&c->text);
    free(c->lps);
    memset(c, 0, sizeof *c);
}

/* Bring the slot's sequence to prompt[0..n-1) under the request's LoRA
 * stack: keep the longest prefix it already holds under the same stack (a
 * repeated system prompt, a chat that continues), feed the
 * rest of it as one chunk, then the last prompt token alone for the logits
 * of the first new one. Every feed goes through the batcher, so it shares
 * its forward with whatever the other slots feed at the same time. */
static const float *prime(srv_seq *q, const orc_lora_stack *lora, const int32_t *prompt, size_t n, int64_t *cached,
                          orc_error *err) {
    *cached = 0;
    if (srv_seq_use_adapters(q, lora, err) != ORC_OK) return NULL; /* another stack: nothing is reused */
    size_t have = 0, k = 0;
    const int32_t *old = srv_seq_tokens(q, &have);
    while (k < have && k + 1 < n && old[k] == prompt[k]) k++;
    if (srv_seq_truncate(q, k, err) != ORC_OK) return NULL;
    *cached = (int64_t)k;
    if (n < 2) return srv_seq_feed(q, prompt, n, err);
    if (k < n - 1 && !srv_seq_feed(q, prompt + k, n - 1 - k, err)) return NULL;
    return srv_seq_feed(q, prompt + n - 1, 1, err);
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

/* ---- constrained decoding: the hook in the decode loop ----------------------------------
 *
 * Phases of a choice: free text; undecided (tools with "auto" or
 * "required": the reply so far is a prefix of the call trigger); a call
 * (the JSON after the trigger, under the call schema); or JSON from the
 * first byte (response_format). Each step the hook turns the logits into
 * the masked ones the sampler sees; the log-probabilities stay the model's. */

enum { PH_TEXT = 0, PH_UNDECIDED, PH_CALL, PH_JSON };

typedef struct guide {
    int phase;
    orc_json_matcher *m;
    float *work;    /* [V] the logits the sampler sees */
    int32_t *count; /* [V] this choice's tokens, for the penalties */
} guide;

static bool guide_init(guide *gd, const decode_opts *o, int64_t V, orc_error *err) {
    memset(gd, 0, sizeof *gd);
    gd->phase = o->json ? PH_JSON : o->call ? PH_UNDECIDED : PH_TEXT;
    const orc_json_schema *sc = o->json ? o->json : o->call;
    if (sc && !(gd->m = orc_json_matcher_new(sc, err))) return false;
    if (sc || o->presence != 0.0f || o->frequency != 0.0f || o->n_bias) {
        gd->work = malloc(sizeof(float) * (size_t)V);
        if (!gd->work) return orc_error_set(err, ORC_ENOMEM, "serve: out of memory") == ORC_OK;
    }
    if (o->presence != 0.0f || o->frequency != 0.0f) {
        gd->count = calloc((size_t)V, sizeof(int32_t));
        if (!gd->count) return orc_error_set(err, ORC_ENOMEM, "serve: out of memory") == ORC_OK;
    }
    return true;
}

static void guide_free(guide *gd) {
    orc_json_matcher_free(gd->m);
    free(gd->work);
    free(gd->count);
}

/* Undecided: may id follow text[0..len)? Prefixes of the trigger stay
 * undecided; past the trigger the bytes must start a valid call; anything
 * else is an answer in text, allowed unless a call is required. */
static bool undecided_allows(const srv_server *s, const decode_opts *o, guide *gd, const char *text, size_t len,
                             int32_t id) {
    if (orc_tokenizer_is_special(s->tok, id)) return !o->must_call;
    size_t tl = 0;
    const char *tb = orc_tokenizer_id_to_token(s->tok, id, &tl);
    if (!tb || tl == 0) return !o->must_call;
    const size_t T = strlen(o->trigger), all = len + tl;
    size_t k = 0; /* bytes of text + token that match the trigger */
    for (; k < all && k < T; k++) {
        char c = k < len ? text[k] : tb[k - len];
        if (c != o->trigger[k]) break;
    }
    if (k < all && k < T) return !o->must_call; /* diverges: text */
    if (all <= T) return true;                  /* still a prefix */
    /* Past the trigger: the JSON part must be a valid start of a call. */
    size_t from = T - o->trigger_json; /* where the JSON starts in text + token */
    char tmp[512];
    size_t n = 0;
    for (size_t i = from; i < all && n < sizeof tmp; i++) tmp[n++] = i < len ? text[i] : tb[i - len];
    return orc_json_matcher_allowed(gd->m, tmp, n);
}

/* The logits the sampler sees this step (NULL: the model's, unchanged). */
static const float *guide_logits(srv_server *s, const decode_opts *o, guide *gd, const float *logits, int64_t V,
                                 const choice_out *out, int64_t budget, orc_error *err) {
    if (!gd->work) return logits;
    memcpy(gd->work, logits, sizeof(float) * (size_t)V);
    float *w = gd->work;
    for (size_t i = 0; i < o->n_bias; i++)
        if (o->bias_ids[i] < V) w[o->bias_ids[i]] += o->bias[i];
    if (gd->count)
        for (int64_t i = 0; i < V; i++)
            if (gd->count[i]) w[i] -= (float)gd->count[i] * o->frequency + o->presence;
    const int32_t *ends = o->stop_ids;
    if (gd->phase == PH_JSON || gd->phase == PH_CALL) {
        if (orc_token_filter_apply(s->filter, gd->m, w, V, ends, o->n_stop_ids, budget) == 0) {
            orc_error_set(err, ORC_EINVAL, "serve: constrained decoding found no token that continues the JSON "
                          "(the vocabulary lacks the bytes it needs)");
            return NULL;
        }
    } else if (gd->phase == PH_UNDECIDED) {
        int64_t kept = 0;
        for (int64_t i = 0; i < V; i++) {
            if (!isfinite(w[i]) && w[i] < 0) continue;
            if (undecided_allows(s, o, gd, out->text.p, out->text.len, (int32_t)i)) kept++;
            else w[i] = -INFINITY;
        }
        if (kept == 0) {
            orc_error_set(err, ORC_EINVAL, "serve: no token can start the tool call");
            return NULL;
        }
    }
    return w;
}

/* After id's bytes were appended to out->text: move the phase on. Returns
 * the finish reason when the constrained value is complete, else NULL. */
static const char *guide_advance(const decode_opts *o, guide *gd, choice_out *out, int32_t id, size_t old_len) {
    if (gd->count) gd->count[id]++;
    if (gd->phase == PH_UNDECIDED) {
        const size_t T = strlen(o->trigger);
        if (out->text.len < T) {
            if (memcmp(out->text.p, o->trigger, out->text.len) != 0) gd->phase = PH_TEXT;
            return NULL;
        }
        if (memcmp(out->text.p, o->trigger, T) != 0) {
            gd->phase = PH_TEXT;
            return NULL;
        }
        gd->phase = PH_CALL;
        out->call = true;
        out->call_at = T - o->trigger_json;
        old_len = out->call_at;
    }
    if (gd->phase == PH_CALL || gd->phase == PH_JSON) {
        if (!orc_json_matcher_advance(gd->m, out->text.p + old_len, out->text.len - old_len)) return "stop"; /* cannot happen */
        if (orc_json_matcher_finished(gd->m)) return gd->phase == PH_CALL ? "tool_calls" : "stop";
    }
    return NULL;
}

/* Where a call's name and arguments are in its text: the call schema puts
 * them in order, {"name": "NAME", ARGS_KEY: ARGUMENTS} (names have no
 * escapes), so a scan of the constrained text finds them. */
typedef struct call_parts {
    bool have_name, have_args;
    size_t name_at, name_len, args_at;
} call_parts;

static size_t skip_ws(const char *t, size_t i, size_t n) {
    while (i < n && (t[i] == ' ' || t[i] == '\n' || t[i] == '\t' || t[i] == '\r')) i++;
    return i;
}

static bool take(const char *t, size_t *i, size_t n, const char *lit) {
    size_t L = strlen(lit);
    *i = skip_ws(t, *i, n);
    if (*i + L > n || memcmp(t + *i, lit, L) != 0) return false;
    *i += L;
    return true;
}

static void call_scan(const char *t, size_t n, size_t at, const char *args_key, call_parts *cp) {
    memset(cp, 0, sizeof *cp);
    size_t i = at;
    if (!take(t, &i, n, "{") || !take(t, &i, n, "\"name\"") || !take(t, &i, n, ":") || !take(t, &i, n, "\"")) return;
    const char *q = memchr(t + i, '"', n - i);
    if (!q) return;
    cp->name_at = i;
    cp->name_len = (size_t)(q - (t + i));
    cp->have_name = true;
    i = (size_t)(q - t) + 1;
    char key[32];
    snprintf(key, sizeof key, "\"%s\"", args_key);
    if (!take(t, &i, n, ",") || !take(t, &i, n, key) || !take(t, &i, n, ":")) return;
    i = skip_ws(t, i, n);
    if (i >= n) return;
    cp->args_at = i;
    cp->have_args = true;
}

/* The end of the arguments: before the call's closing brace when finished,
 * else before bytes that may still turn out to be that brace. */
static size_t args_end(const char *t, size_t n, bool finished) {
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\n' || t[n - 1] == '\t' || t[n - 1] == '\r')) n--;
    if (n > 0 && t[n - 1] == '}') n--;
    if (finished)
        while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\n' || t[n - 1] == '\t' || t[n - 1] == '\r')) n--;
    return n;
}

/* Stream what is new of a call in progress (or, finished, the rest). */
static void call_progress(const decode_opts *o, choice_out *out, bool finished) {
    if (!o->call_part || !out->call) return;
    call_parts cp;
    call_scan(out->text.p, out->text.len, out->call_at, o->args_key, &cp);
    if (!cp.have_args) return;
    if (!out->call_announced) {
        o->call_part(o->user, out->text.p + cp.name_at, cp.name_len, NULL, 0);
        out->call_announced = true;
    }
    size_t end = args_end(out->text.p, out->text.len, finished);
    /* whole UTF-8 characters only: a token may end inside one */
    if (end > cp.args_at) end = cp.args_at + orc_utf8_complete_prefix(out->text.p + cp.args_at, end - cp.args_at);
    if (end > cp.args_at + out->call_sent) {
        o->call_part(o->user, NULL, 0, out->text.p + cp.args_at + out->call_sent, end - cp.args_at - out->call_sent);
        out->call_sent = end - cp.args_at;
    }
}

static bool decode(srv_slot *slot, const int32_t *prompt, size_t n, const decode_opts *o, choice_out *out,
                   orc_error *err) {
    srv_server *s = slot->srv;
    const int64_t V = s->cfg->vocab_size, context = srv_seq_context(&slot->seq);
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
    const float *logits = prime(&slot->seq, o->lora, prompt, n, &out->cached, err);
    out->prefill_s = now_s() - t0;
    orc_rng rng;
    orc_rng_init(&rng, o->sampler.seed);
    t0 = now_s();
    guide gd;
    memset(&gd, 0, sizeof gd);
    bool ok = logits != NULL && guide_init(&gd, o, V, err);
    while (ok) {
        const int64_t left_tokens = o->max_tokens - out->n_tokens, left_ctx = context - (int64_t)n_seq;
        const float *view = guide_logits(s, o, &gd, logits, V, out, left_tokens < left_ctx ? left_tokens : left_ctx, err);
        if (!view) {
            ok = false;
            break;
        }
        int32_t id = orc_sample(&o->sampler, view, V, seq, n_seq, orc_rng_uniform(&rng), &slot->work);
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
            const char *fin = ok ? guide_advance(o, &gd, out, id, old_len) : NULL;
            ptrdiff_t cut = ok && !out->call ? find_stop(&out->text, old_len, o) : -1;
            if (fin) {
                out->finish = fin;
                done = true;
            } else if (cut >= 0) {
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
        /* Text that may still become a tool call is held back; a call is sent whole at the end. */
        size_t end = done                                              ? out->text.len
                     : gd.phase == PH_UNDECIDED || gd.phase == PH_CALL ? emitted
                                                                       : safe_end(&out->text, o);
        if (out->call && !done) call_progress(o, out, false);
        if (o->emit && !out->call && (end > emitted || (done && out->n_lps > lp_emitted))) {
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
        logits = srv_seq_feed(&slot->seq, &id, 1, err);
        ok = logits != NULL;
    }
    guide_free(&gd);
    out->decode_s = now_s() - t0;
    free(seq);
    if (!ok) choice_free(out);
    return ok;
}

/* The slot's own forward over ids [1, n] under lora (with no cache), on its
 * view of the shared model: logits [1, n, V], or the final hidden states
 * [1, n, D] when hidden. Errors land in the slot's ctx. */
static orc_tensor *slot_forward(srv_slot *slot, const orc_lora_stack *lora, const int32_t *ids, size_t n,
                                bool hidden) {
    orc_ctx *ctx = &slot->ctx;
    const orc_lora_stack *ls = lora && lora->n > 0 ? lora : NULL;
    orc_tensor *t = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, (int64_t)n));
    if (!t) return NULL;
    memcpy(t->data, ids, sizeof(int32_t) * n);
    if (slot->srv->q) {
        slot->qview.lora = ls;
        return hidden ? orc_qllm_hidden(ctx, &slot->qview, t, NULL) : orc_qllm_forward(ctx, &slot->qview, t, NULL);
    }
    slot->view.lora = ls;
    return hidden ? orc_llm_hidden(ctx, &slot->view, t, NULL) : orc_llm_forward(ctx, &slot->view, t, NULL);
}

/* Log-probabilities of the prompt's tokens (for completions with echo): one
 * forward over the whole prompt; entry i is token i given the ones before,
 * entry 0 has none (NaN). */
static bool prompt_logprobs(srv_slot *slot, const orc_lora_stack *lora, const int32_t *ids, size_t n, int top,
                            srv_tok_lp *out, orc_error *err) {
    orc_ctx *ctx = &slot->ctx;
    orc_ctx_reset(ctx);
    const int64_t V = slot->srv->cfg->vocab_size, tv = (int64_t)orc_tokenizer_vocab_size(slot->srv->tok);
    orc_tensor *logits = slot_forward(slot, lora, ids, n, false);
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
    json_object_set_new(o, "model", srv_json_text(j->model_id, strlen(j->model_id)));
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

/* The tool call in a choice's text: {"id", "type", "function": {"name",
 * "arguments"}} (arguments as JSON text), or NULL when the text is not a
 * complete call (cut by max_tokens). */
static json_t *tool_call_json(srv_job *j, int index, const choice_out *c) {
    if (!c->call || !c->finish || strcmp(c->finish, "tool_calls") != 0) return NULL;
    orc_chat_tool_syntax syn;
    orc_chat_tool_syntax_for(j->srv->opts.chat_template, &syn);
    call_parts cp;
    call_scan(c->text.p, c->text.len, c->call_at, syn.args_key, &cp);
    if (!cp.have_args) return NULL;
    /* The arguments as the model wrote them (what a stream sends), if they parse. */
    size_t end = args_end(c->text.p, c->text.len, true);
    if (end < cp.args_at) return NULL;
    json_t *args = json_loadb(c->text.p + cp.args_at, end - cp.args_at, 0, NULL);
    if (!args) return NULL;
    json_decref(args);
    char id[96];
    snprintf(id, sizeof id, "call_%s_%d", strchr(j->id, '-') ? strchr(j->id, '-') + 1 : j->id, index);
    json_t *fn = json_object(), *o = json_object();
    json_object_set_new(fn, "name", json_stringn(c->text.p + cp.name_at, cp.name_len));
    json_object_set_new(fn, "arguments", json_stringn(c->text.p + cp.args_at, end - cp.args_at));
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "type", json_string("function"));
    json_object_set_new(o, "function", fn);
    return o;
}

/* One streamed piece of a call, as OpenAI's deltas (each carries the call's
 * index): first the id, type and name with empty arguments, then argument
 * text. */
static void call_chunk(void *user, const char *name, size_t name_len, const char *args, size_t n) {
    stream_ctx *sc = user;
    srv_job *j = sc->j;
    json_t *o = envelope(j, "chat.completion.chunk"), *choice = json_object(), *delta = json_object();
    json_t *calls = json_array(), *d = json_object(), *f = json_object();
    json_object_set_new(d, "index", json_integer(0));
    if (name) {
        char id[96];
        snprintf(id, sizeof id, "call_%s_%d", strchr(j->id, '-') ? strchr(j->id, '-') + 1 : j->id, sc->index);
        json_object_set_new(d, "id", json_string(id));
        json_object_set_new(d, "type", json_string("function"));
        json_object_set_new(f, "name", srv_json_text(name, name_len));
        json_object_set_new(f, "arguments", json_string(""));
    } else {
        json_object_set_new(f, "arguments", srv_json_text(args, n));
    }
    json_object_set_new(d, "function", f);
    json_array_append_new(calls, d);
    json_object_set_new(delta, "tool_calls", calls);
    json_object_set_new(choice, "index", json_integer(sc->index));
    json_object_set_new(choice, "delta", delta);
    json_object_set_new(choice, "logprobs", json_null());
    json_object_set_new(choice, "finish_reason", json_null());
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    json_object_set_new(o, "choices", choices);
    write_event(j, o);
}

/* The end of a streamed call: the rest of its arguments; a call cut short
 * (not sent yet) goes out as content. */
static void stream_call(stream_ctx *sc, const decode_opts *o, choice_out *c) {
    if (c->finish && strcmp(c->finish, "tool_calls") == 0) {
        call_progress(o, c, true);
        return;
    }
    if (!c->call_announced) stream_chunk(sc, false, c->text.p, c->text.len, NULL, 0, NULL);
}

/* A non-streamed choice. */
static json_t *choice_json(srv_job *j, int index, const choice_out *c, size_t p, const srv_tok_lp *echo_lps,
                           size_t n_echo) {
    const orc_tokenizer *tok = j->srv->tok;
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(index));
    if (j->req.kind == ORC_API_CHAT) {
        json_t *msg = json_object(), *call = tool_call_json(j, index, c);
        json_object_set_new(msg, "role", json_string("assistant"));
        if (call) {
            json_t *calls = json_array();
            json_array_append_new(calls, call);
            json_object_set_new(msg, "content", json_null());
            json_object_set_new(msg, "tool_calls", calls);
        } else {
            json_object_set_new(msg, "content", srv_json_text(c->text.p, c->text.len));
        }
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
            if (!echo || !prompt_logprobs(slot, &j->lora, ids, n, r->top_logprobs, echo, &err)) {
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
                             .t_start = index == 0 ? t_start : 0,
                             .lora = &j->lora};
            o.sampler.seed = r->sampler.seed + (uint64_t)index;
            orc_chat_tool_syntax syn;
            orc_chat_tool_syntax_for(s->opts.chat_template, &syn);
            if (chat && r->format_schema) o.json = r->format_schema;
            if (chat && r->tool_choice != ORC_TOOL_NONE && r->call_schema) {
                o.call = r->call_schema;
                o.trigger = syn.open;
                o.trigger_json = syn.json_in_open;
                o.must_call = r->tool_choice == ORC_TOOL_REQUIRED || r->tool_choice == ORC_TOOL_NAMED;
                o.args_key = syn.args_key;
                if (r->stream) o.call_part = call_chunk;
            }
            o.presence = r->presence_penalty;
            o.frequency = r->frequency_penalty;
            o.bias_ids = r->bias_ids;
            o.bias = r->bias;
            o.n_bias = r->n_bias;
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
                if (r->stream && out.call) stream_call(&sc, &o, &out);
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

static bool embed_one(srv_slot *slot, const orc_lora_stack *lora, const int32_t *ids, size_t n, float *out,
                      orc_error *err) {
    orc_ctx *ctx = &slot->ctx;
    orc_ctx_reset(ctx);
    const int64_t D = slot->srv->cfg->hidden_size;
    orc_tensor *h = slot_forward(slot, lora, ids, n, true);
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
    const int64_t D = s->cfg->hidden_size;
    float *v = malloc(sizeof(float) * (size_t)D);
    json_t *data = json_array();
    int64_t tokens = 0;
    orc_error err = {0};
    bool ok = v != NULL;
    if (!ok) orc_error_set(&err, ORC_ENOMEM, "serve: out of memory");
    for (size_t i = 0; ok && i < j->n_prompts && !atomic_load(&j->cancelled); i++) {
        ok = embed_one(slot, &j->lora, j->prompts[i], j->prompt_lens[i], v, &err);
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
    json_object_set_new(o, "model", srv_json_text(j->model_id, strlen(j->model_id)));
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
