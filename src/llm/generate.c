/* Text generation (see orchard/generate.h): the generator (a model, its
 * tokenizer, a KV cache, a no-grad context whose arena is reset every step),
 * the batched prefill that projects only the last position to logits, the
 * decode loop with its stop conditions, and the streaming of final text
 * (whole UTF-8 characters that cannot begin a stop string). Loading a model
 * directory with its tokenizer lives here too, since every consumer of the
 * generator starts with it. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "orchard/generate.h"
#include "orchard/ops.h"

struct orc_generator {
    orc_llm *m;
    const orc_tokenizer *tok;
    int64_t context, vocab;
    int64_t tok_vocab; /* ids the tokenizer can decode (== vocab without one) */
    orc_llm_cache *cache;
    orc_arena *arena;
    orc_ctx ctx;
    int32_t *tokens; /* the ids in the cache, [context] */
    size_t n_tokens;
    float *logits;   /* the last position's logits, [vocab] */
    orc_sample_work work;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *orc_gen_stop_name(orc_gen_stop s) {
    switch (s) {
    case ORC_GEN_MAX_TOKENS: return "max_tokens";
    case ORC_GEN_STOP_ID: return "stop_id";
    case ORC_GEN_STOP_STRING: return "stop_string";
    case ORC_GEN_CONTEXT_FULL: return "context_full";
    case ORC_GEN_CALLBACK: return "callback";
    }
    return "unknown";
}

void orc_gen_opts_default(orc_gen_opts *o) {
    memset(o, 0, sizeof *o);
    orc_sampler_opts_default(&o->sampler);
    o->max_tokens = 256;
}

void orc_gen_result_free(orc_gen_result *r) {
    if (!r) return;
    free(r->ids);
    free(r->text);
    memset(r, 0, sizeof *r);
}

/* ---- loading ------------------------------------------------------------------- */

orc_status orc_model_dir_load(const char *dir, orc_llm **m, orc_tokenizer **tok, orc_error *err) {
    *m = NULL;
    *tok = NULL;
    struct stat st;
    if (stat(dir, &st) != 0)
        return orc_error_set(err, ORC_EIO, "%s: cannot open the model directory: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return orc_error_set(err, ORC_EINVAL, "%s: not a directory (a model is a directory with config.json, "
                             "model.safetensors and tokenizer.json)", dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (stat(path, &st) != 0)
        return orc_error_set(err, ORC_EIO, "%s: cannot open the tokenizer: %s", path, strerror(errno));
    orc_llm *model = orc_llm_load(dir, false, err);
    if (!model) return err ? err->code : ORC_EINVAL;
    orc_tokenizer *t = orc_tokenizer_load(path, err);
    if (!t) {
        orc_llm_free(model);
        return err ? err->code : ORC_EINVAL;
    }
    size_t tv = orc_tokenizer_vocab_size(t);
    if ((int64_t)tv > model->cfg.vocab_size) {
        orc_error_set(err, ORC_EFORMAT, "%s: the tokenizer has %zu ids but %s/config.json has vocab_size %lld",
                      path, tv, dir, (long long)model->cfg.vocab_size);
        orc_tokenizer_free(t);
        orc_llm_free(model);
        return ORC_EFORMAT;
    }
    *m = model;
    *tok = t;
    return ORC_OK;
}

/* ---- the generator ------------------------------------------------------------- */

orc_generator *orc_generator_new(orc_llm *m, const orc_tokenizer *tok, int64_t context, orc_error *err) {
    const int64_t max_pos = m->cfg.max_position_embeddings;
    if (context <= 0) context = max_pos;
    if (context > max_pos) {
        orc_error_set(err, ORC_EINVAL, "generate: context %lld exceeds the model's max_position_embeddings %lld",
                      (long long)context, (long long)max_pos);
        return NULL;
    }
    if (tok && (int64_t)orc_tokenizer_vocab_size(tok) > m->cfg.vocab_size) {
        orc_error_set(err, ORC_EINVAL, "generate: the tokenizer has %zu ids but the model's vocab_size is %lld",
                      orc_tokenizer_vocab_size(tok), (long long)m->cfg.vocab_size);
        return NULL;
    }
    orc_generator *g = calloc(1, sizeof *g);
    if (!g) {
        orc_error_set(err, ORC_ENOMEM, "generate: out of memory");
        return NULL;
    }
    g->m = m;
    g->tok = tok;
    g->context = context;
    g->vocab = m->cfg.vocab_size;
    g->tok_vocab = tok ? (int64_t)orc_tokenizer_vocab_size(tok) : g->vocab;
    g->arena = orc_arena_create(0);
    g->tokens = malloc(sizeof(int32_t) * (size_t)context);
    g->logits = malloc(sizeof(float) * (size_t)g->vocab);
    if (!g->arena || !g->tokens || !g->logits) {
        orc_error_set(err, ORC_ENOMEM, "generate: out of memory");
        orc_generator_free(g);
        return NULL;
    }
    if (orc_sample_work_init(&g->work, g->vocab, err) != ORC_OK ||
        !(g->cache = orc_llm_cache_new(&m->cfg, 1, context, err))) {
        orc_generator_free(g);
        return NULL;
    }
    orc_ctx_init(&g->ctx, g->arena, 0);
    g->ctx.no_grad = true;
    return g;
}

void orc_generator_free(orc_generator *g) {
    if (!g) return;
    orc_llm_cache_free(g->cache);
    orc_sample_work_release(&g->work);
    if (g->arena) orc_arena_destroy(g->arena);
    free(g->tokens);
    free(g->logits);
    free(g);
}

int64_t orc_generator_context(const orc_generator *g) { return g->context; }

void orc_generator_reset(orc_generator *g) {
    orc_llm_cache_clear(g->cache);
    g->n_tokens = 0;
}

const int32_t *orc_generator_tokens(const orc_generator *g, size_t *n) {
    *n = g->n_tokens;
    return g->tokens;
}

/* One forward over ids (appended to cache when given) keeping only the last
 * position: its hidden state is sliced out before the vocabulary projection,
 * which is the largest matrix of a small model. */
static const float *forward_last(orc_generator *g, const int32_t *ids, size_t n, orc_llm_cache *cache,
                                 orc_error *err) {
    orc_ctx *ctx = &g->ctx;
    orc_ctx_reset(ctx);
    orc_tensor *t = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, (int64_t)n));
    if (t) memcpy(t->data, ids, sizeof(int32_t) * n);
    orc_tensor *h = t ? orc_llm_hidden(ctx, g->m, t, cache) : NULL;
    orc_tensor *last = h ? orc_slice(ctx, h, 1, (int64_t)n - 1, 1) : NULL;
    orc_tensor *logits = last ? orc_linear(ctx, last, g->m->lm_head, NULL) : NULL;
    if (!logits || !orc_ctx_ok(ctx)) {
        orc_error_set(err, ctx->err.code ? ctx->err.code : ORC_ENOMEM, "generate: %s",
                      ctx->err.code ? ctx->err.msg : "out of memory");
        orc_ctx_reset(ctx);
        return NULL;
    }
    orc_read_f32(logits, g->logits);
    /* A model may have more ids than its tokenizer (padded vocabularies):
     * ids without text are never generated. */
    for (int64_t i = g->tok_vocab; i < g->vocab; i++) g->logits[i] = -INFINITY;
    orc_ctx_reset(ctx);
    return g->logits;
}

const float *orc_generator_feed(orc_generator *g, const int32_t *ids, size_t n, orc_error *err) {
    if (n == 0) {
        orc_error_set(err, ORC_EINVAL, "generate: nothing to feed");
        return NULL;
    }
    if ((int64_t)(g->n_tokens + n) > g->context) {
        orc_error_set(err, ORC_ERANGE, "generate: %zu cached + %zu new tokens exceed the context of %lld",
                      g->n_tokens, n, (long long)g->context);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= g->vocab) {
            orc_error_set(err, ORC_ERANGE, "generate: token %zu is id %d, outside the vocabulary [0, %lld)", i,
                          (int)ids[i], (long long)g->vocab);
            return NULL;
        }
    const float *l = forward_last(g, ids, n, g->cache, err);
    if (!l) {
        g->cache->len = (int64_t)g->n_tokens; /* whatever the failed step appended is dropped */
        return NULL;
    }
    memcpy(g->tokens + g->n_tokens, ids, sizeof(int32_t) * n);
    g->n_tokens += n;
    return l;
}

/* ---- text bookkeeping ----------------------------------------------------------- */

size_t orc_utf8_complete_prefix(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = len, back = 0;
    while (i > 0 && back < 4 && (u[i - 1] & 0xC0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0) return len;
    unsigned char lead = u[i - 1];
    size_t need = (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 1;
    return need > 1 && back + 1 < need ? i - 1 : len;
}

typedef struct text_buf {
    char *p;
    size_t len, cap;
} text_buf;

static bool text_append(text_buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return false;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return true;
}

/* Where the first stop string starts in text, looking only at matches that
 * end in the bytes after old_len; -1 if none. */
static ptrdiff_t find_stop(const text_buf *t, size_t old_len, const orc_gen_opts *o) {
    ptrdiff_t best = -1;
    for (size_t i = 0; i < o->n_stop_strings; i++) {
        const char *s = o->stop_strings[i];
        size_t L = strlen(s);
        size_t from = old_len + 1 > L ? old_len + 1 - L : 0;
        if (from >= t->len) continue;
        const char *hit = memmem(t->p + from, t->len - from, s, L);
        if (hit && (best < 0 || hit - t->p < best)) best = hit - t->p;
    }
    return best;
}

/* How much of text is final: not a possible start of a stop string, and
 * ending on a whole UTF-8 character. */
static size_t safe_end(const text_buf *t, const orc_gen_opts *o) {
    size_t hold = 0;
    for (size_t i = 0; i < o->n_stop_strings; i++) {
        const char *s = o->stop_strings[i];
        size_t L = strlen(s);
        for (size_t k = (L - 1 < t->len ? L - 1 : t->len); k > hold; k--)
            if (memcmp(t->p + t->len - k, s, k) == 0) {
                hold = k;
                break;
            }
    }
    return orc_utf8_complete_prefix(t->p, t->len - hold);
}

/* ---- generation ------------------------------------------------------------------ */

static orc_status check_opts(const orc_gen_opts *o, orc_error *err) {
    orc_status st = orc_sampler_opts_validate(&o->sampler, err);
    if (st != ORC_OK) return st;
    if (o->max_tokens <= 0)
        return orc_error_set(err, ORC_EINVAL, "generate: max_tokens must be positive, got %lld",
                             (long long)o->max_tokens);
    for (size_t i = 0; i < o->n_stop_strings; i++)
        if (!o->stop_strings[i] || !o->stop_strings[i][0])
            return orc_error_set(err, ORC_EINVAL, "generate: stop string %zu is empty", i);
    return ORC_OK;
}

static bool is_stop_id(const orc_gen_opts *o, int32_t id) {
    for (size_t i = 0; i < o->n_stop_ids; i++)
        if (o->stop_ids[i] == id) return true;
    return false;
}

/* Prefill: reuse the cached prefix the prompt shares (at least one token
 * must go through the model to get logits). */
static const float *prefill(orc_generator *g, const int32_t *prompt, size_t n, bool no_cache, int64_t *fed,
                            orc_error *err) {
    if (no_cache) {
        orc_generator_reset(g);
        *fed = (int64_t)n;
        return forward_last(g, prompt, n, NULL, err);
    }
    size_t common = 0;
    while (common < g->n_tokens && common < n && g->tokens[common] == prompt[common]) common++;
    if (common == n) common--;
    g->n_tokens = common;
    g->cache->len = (int64_t)common;
    *fed = (int64_t)(n - common);
    return orc_generator_feed(g, prompt + common, n - common, err);
}

orc_status orc_generate(orc_generator *g, const int32_t *prompt, size_t n_prompt, const orc_gen_opts *o,
                        orc_gen_result *res, orc_error *err) {
    memset(res, 0, sizeof *res);
    res->stop_id = -1;
    orc_status st = check_opts(o, err);
    if (st != ORC_OK) return st;
    if (n_prompt == 0) return orc_error_set(err, ORC_EINVAL, "generate: the prompt is empty");
    if ((int64_t)n_prompt > g->context)
        return orc_error_set(err, ORC_ERANGE, "generate: the prompt has %zu tokens but the context holds only %lld",
                             n_prompt, (long long)g->context);
    /* The whole sequence: the repeat penalty's history, and the no-cache input. */
    const size_t cap = n_prompt + (size_t)o->max_tokens;
    int32_t *seq = malloc(sizeof(int32_t) * cap);
    res->ids = malloc(sizeof(int32_t) * (size_t)o->max_tokens);
    text_buf text = {0};
    if (!seq || !res->ids || !text_append(&text, "", 0)) {
        st = orc_error_set(err, ORC_ENOMEM, "generate: out of memory");
        goto fail;
    }
    memcpy(seq, prompt, sizeof(int32_t) * n_prompt);
    size_t n_seq = n_prompt;
    res->prompt_tokens = (int64_t)n_prompt;

    double t0 = now_s();
    const float *logits = prefill(g, prompt, n_prompt, o->no_cache, &res->prefilled, err);
    res->prompt_seconds = now_s() - t0;
    if (!logits) {
        st = err ? err->code : ORC_EINVAL;
        goto fail;
    }
    orc_rng rng;
    orc_rng_init(&rng, o->sampler.seed);
    size_t emitted = 0;
    t0 = now_s();
    for (;;) {
        int32_t id = orc_sample(&o->sampler, logits, g->vocab, seq, n_seq, orc_rng_uniform(&rng), &g->work);
        bool done = false;
        if (is_stop_id(o, id)) {
            res->stop = ORC_GEN_STOP_ID;
            res->stop_id = id;
            done = true;
        } else {
            res->ids[res->n_ids++] = id;
            seq[n_seq++] = id;
            size_t plen = 0;
            const char *piece = g->tok ? orc_tokenizer_id_to_token(g->tok, id, &plen) : NULL;
            size_t old_len = text.len;
            if (!text_append(&text, piece ? piece : "", piece ? plen : 0)) {
                st = orc_error_set(err, ORC_ENOMEM, "generate: out of memory");
                goto fail;
            }
            ptrdiff_t cut = find_stop(&text, old_len, o);
            if (cut >= 0) {
                text.len = (size_t)cut;
                text.p[cut] = 0;
                res->stop = ORC_GEN_STOP_STRING;
                done = true;
            } else if ((int64_t)res->n_ids >= o->max_tokens) {
                res->stop = ORC_GEN_MAX_TOKENS;
                done = true;
            } else if ((int64_t)n_seq >= g->context) {
                res->stop = ORC_GEN_CONTEXT_FULL;
                done = true;
            }
        }
        size_t end = done ? text.len : safe_end(&text, o);
        if (o->on_token && (end > emitted || !done)) {
            bool more = o->on_token(o->user, id, text.p + emitted, end > emitted ? end - emitted : 0);
            if (end > emitted) emitted = end;
            if (!more && !done) {
                res->stop = ORC_GEN_CALLBACK;
                done = true;
            }
        }
        if (done) break;
        if (o->no_cache)
            logits = forward_last(g, seq, n_seq, NULL, err);
        else
            logits = orc_generator_feed(g, &id, 1, err);
        if (!logits) {
            st = err ? err->code : ORC_EINVAL;
            goto fail;
        }
        res->decode_tokens++;
    }
    res->decode_seconds = now_s() - t0;
    res->text = text.p;
    res->text_len = text.len;
    free(seq);
    return ORC_OK;
fail:
    free(seq);
    free(text.p);
    orc_gen_result_free(res);
    return st != ORC_OK ? st : ORC_EINVAL;
}
