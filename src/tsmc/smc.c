/* Decoding for TSMC: particles that grow one line at a time. Each particle
 * is a sequence in a KV pool (orchard/batch.h) for the generator and one for
 * the value model: the prompt is prefilled once and forked into every
 * particle (shared pages), all unfinished particles decode together in one
 * batched forward per token, the value model reads every new line in one
 * batched forward per round, and resampling shares the parents' pages
 * (orc_kv_seq_resample) instead of copying or recomputing keys. On top of
 * that: independent sampling (for the rollouts and the best-of-N / voting
 * baselines), greedy decoding, and the twisted SMC loop with its resampling
 * rule. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/batch.h"
#include "orchard/chat.h"
#include "orchard/ops.h"
#include "orchard/tasks.h"
#include "orchard/tsmc.h"

/* ---- names and options ------------------------------------------------------------ */

static const char *const METHOD_NAMES[ORC_TSMC_N_METHODS] = {"greedy", "majority", "orm", "prm", "weighted", "tsmc"};

const char *orc_tsmc_method_name(orc_tsmc_method m) {
    return (int)m >= 0 && m < ORC_TSMC_N_METHODS ? METHOD_NAMES[m] : "?";
}

int orc_tsmc_method_parse(const char *name) {
    for (int m = 0; m < ORC_TSMC_N_METHODS; m++)
        if (name && strcmp(name, METHOD_NAMES[m]) == 0) return m;
    return -1;
}

void orc_tsmc_opts_default(orc_tsmc_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_particles = 8;
    o->alpha = 1.0;
    o->ess_threshold = 0.5;
    o->resample = ORC_RESAMPLE_SYSTEMATIC;
    orc_sampler_opts_default(&o->sampler);
    o->sampler.temperature = 0.7f;
    o->sampler.top_k = 0;
    o->sampler.top_p = 1.0f;
    o->sampler.min_p = 0.0f;
    o->max_steps = 16;
    o->max_line_tokens = 48;
    o->seed = 1;
}

void orc_tsmc_answer_free(orc_tsmc_answer *a) {
    if (!a) return;
    free(a->answer);
    free(a->text);
    memset(a, 0, sizeof *a);
}

orc_status orc_tsmc_prompt(const orc_tokenizer *tok, const char *question, int32_t **ids, int *n, orc_error *err) {
    if (!question || !*question) return orc_error_set(err, ORC_EINVAL, "tsmc: empty question");
    orc_chat_msg msg = {"user", question};
    size_t len = 0;
    orc_status st = orc_chat_encode(tok, &msg, 1, true, ids, NULL, &len, err);
    *n = (int)len;
    return st;
}

bool orc_tsmc_is_step_end(const orc_tokenizer *tok, int32_t id) {
    size_t len = 0;
    const char *b = orc_tokenizer_id_to_token(tok, id, &len);
    return b && memchr(b, '\n', len) != NULL;
}

int orc_tsmc_step_ends(const orc_tokenizer *tok, const int32_t *ids, int n, int *out) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (orc_tsmc_is_step_end(tok, ids[i]) || i == n - 1) out[k++] = i;
    return k;
}

/* ---- particles ------------------------------------------------------------------------ */

/* A particle is a sequence in the generator's KV pool (and one in the value
 * model's pool) plus its bookkeeping. Sequences fork and resample by sharing
 * pages (orchard/batch.h), so the prompt is prefilled once and a resampled
 * particle never copies or recomputes its parent's keys. */
typedef struct particle {
    int32_t gseq, vseq;     /* pool sequences; vseq -1 without a value model */
    int32_t *ids;           /* generated ids, after the prompt */
    float *logp;            /* the generator's log-probability of each (temperature 1) */
    int n_ids;
    int *step_end;
    int n_steps;
    float *logits;          /* the generator's next-token logits [V] */
    double logw;            /* SMC log weight */
    double lpsi;            /* log psi at the last step end */
    double min_lpsi;        /* the smallest step value so far (PRM) */
    float conf;             /* the value model's confidence input: the smallest logp so far */
    int line_from;          /* where the line being written started */
    bool finished, line_done;
} particle;

typedef struct engine {
    const orc_tsmc_models *mo;
    const orc_tsmc_opts *o;
    int n;
    particle *p;
    bool value;
    orc_kv_pool *gpool, *vpool;
    int64_t V, D, cap;      /* vocabulary, value width, positions per particle */
    int32_t stop_ids[8];
    size_t n_stop;
    orc_arena *arena;
    orc_ctx ctx;
    orc_sample_work work;
    orc_rng rng;
    int64_t tokens;         /* sampled tokens, all particles */
    const int32_t *prompt;
    int n_prompt;
    bool record_logp;        /* keep each token's log-probability (and the particles' confidence): for samples
                                handed out (rollouts, the study's baselines) and a value head that reads it */
    orc_llm_step_seq *steps; /* [n] scratch */
    int32_t *next;           /* [n] the token each particle feeds this step */
    float *logits;           /* [n, V] */
    float *hidden;           /* [n, D] */
    int *who;                /* [n] particle of each step row */
} engine;

static void particle_free(particle *q) {
    free(q->ids);
    free(q->logp);
    free(q->step_end);
    free(q->logits);
}

static void engine_free(engine *e) {
    for (int i = 0; e->p && i < e->n; i++) particle_free(&e->p[i]);
    free(e->p);
    orc_kv_pool_free(e->gpool);
    orc_kv_pool_free(e->vpool);
    free(e->steps);
    free(e->next);
    free(e->logits);
    free(e->hidden);
    free(e->who);
    orc_sample_work_release(&e->work);
    orc_arena_destroy(e->arena);
}

static orc_status engine_init(engine *e, const orc_tsmc_models *mo, const orc_tsmc_opts *o, int n, bool with_value,
                              orc_error *err) {
    memset(e, 0, sizeof *e);
    e->mo = mo;
    e->o = o;
    e->n = n;
    e->value = with_value;
    e->V = mo->gen->cfg.vocab_size;
    e->D = with_value ? mo->value->body->cfg.hidden_size : 1;
    e->cap = mo->context < mo->gen->cfg.max_position_embeddings ? mo->context : mo->gen->cfg.max_position_embeddings;
    e->n_stop = orc_chat_stop_ids(mo->tok, e->stop_ids, 8);
    if (e->n_stop > 8) e->n_stop = 8;
    /* every particle's own pages at full length, plus the shared prompt */
    const int64_t pages = (int64_t)(n + 1) * ((e->cap + ORC_KV_PAGE - 1) / ORC_KV_PAGE) + n;
    e->gpool = orc_kv_pool_new(&mo->gen->cfg, e->cap, pages, err);
    e->vpool = with_value && e->gpool ? orc_kv_pool_new(&mo->value->body->cfg, e->cap, pages, err) : NULL;
    e->p = calloc((size_t)n, sizeof *e->p);
    e->steps = calloc((size_t)n, sizeof *e->steps);
    e->next = calloc((size_t)n, sizeof *e->next);
    e->who = calloc((size_t)n, sizeof *e->who);
    e->logits = malloc((size_t)n * (size_t)e->V * sizeof *e->logits);
    e->hidden = malloc((size_t)n * (size_t)e->D * sizeof *e->hidden);
    e->arena = orc_arena_create((size_t)8 << 20);
    bool ok = e->gpool && (!with_value || e->vpool) && e->p && e->steps && e->next && e->who && e->logits &&
              e->hidden && e->arena;
    orc_status st = ok ? orc_sample_work_init(&e->work, e->V, err)
                       : (err && err->code ? err->code : orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory"));
    for (int i = 0; st == ORC_OK && i < n; i++) {
        particle *q = &e->p[i];
        q->gseq = q->vseq = -1;
        q->ids = malloc((size_t)e->cap * sizeof *q->ids);
        q->logp = malloc((size_t)e->cap * sizeof *q->logp);
        q->step_end = malloc((size_t)e->cap * sizeof *q->step_end);
        q->logits = malloc((size_t)e->V * sizeof *q->logits);
        if (!q->ids || !q->logp || !q->step_end || !q->logits)
            st = orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
    }
    if (st != ORC_OK) {
        engine_free(e);
        return st;
    }
    orc_ctx_init(&e->ctx, e->arena, o->seed);
    e->ctx.no_grad = true;
    orc_rng_init(&e->rng, o->seed);
    return ORC_OK;
}

static double log_sigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }

/* log psi from a final hidden state: the head on it (and on the particle's
 * confidence when the head reads it). */
static double head_lpsi(const engine *e, const float *h, float conf) {
    const float *w = orc_f32(e->mo->value->head_w);
    double z = orc_f32(e->mo->value->head_b)[0];
    for (int64_t d = 0; d < e->D; d++) z += (double)w[d] * (double)h[d];
    if (e->mo->value->confidence) z += (double)w[e->D] * (double)conf;
    return log_sigmoid(z);
}

/* log softmax(logits)[id]: the generator's own probability of a token it
 * sampled, whatever the sampler's temperature. */
static float token_logp(const float *logits, int64_t V, int32_t id) {
    return (float)((double)logits[id] - orc_logsumexp(logits, V));
}

/* Prefill the prompt once (both models) and fork it into every particle. */
static orc_status start(engine *e, const int32_t *prompt, int n_prompt, orc_error *err) {
    if (n_prompt < 1) return orc_error_set(err, ORC_EINVAL, "tsmc: empty prompt");
    if (n_prompt + 2 > e->cap)
        return orc_error_set(err, ORC_ERANGE, "tsmc: the prompt's %d tokens leave no room in a context of %lld",
                             n_prompt, (long long)e->cap);
    e->n_prompt = n_prompt;
    e->prompt = prompt;
    particle *q = &e->p[0];
    q->gseq = orc_kv_seq_new(e->gpool, err);
    if (q->gseq < 0) return err->code;
    orc_llm_step_seq s = {q->gseq, prompt, n_prompt};
    orc_status st = orc_llm_step(&e->ctx, e->mo->gen, e->gpool, &s, 1, q->logits, NULL, err);
    double lpsi = 0;
    if (st == ORC_OK && e->value) {
        q->vseq = orc_kv_seq_new(e->vpool, err);
        s.seq = q->vseq;
        st = q->vseq < 0 ? err->code : orc_llm_step(&e->ctx, e->mo->value->body, e->vpool, &s, 1, NULL, e->hidden, err);
        if (st == ORC_OK) lpsi = head_lpsi(e, e->hidden, 0.0f);
    }
    q->lpsi = lpsi;
    q->min_lpsi = INFINITY;
    q->conf = 0.0f;
    for (int i = 1; st == ORC_OK && i < e->n; i++) {
        particle *c = &e->p[i];
        c->gseq = orc_kv_seq_fork(e->gpool, q->gseq, err);
        c->vseq = e->value && c->gseq >= 0 ? orc_kv_seq_fork(e->vpool, q->vseq, err) : -1;
        if (c->gseq < 0 || (e->value && c->vseq < 0)) return err->code;
        memcpy(c->logits, q->logits, (size_t)e->V * sizeof *c->logits);
        c->lpsi = lpsi;
        c->min_lpsi = INFINITY;
        c->conf = 0.0f;
    }
    return st;
}

static bool is_stop(const engine *e, int32_t id) {
    for (size_t i = 0; i < e->n_stop; i++)
        if (e->stop_ids[i] == id) return true;
    return false;
}

/* Does q's line from `from` start with "####"? */
static bool answer_line(const engine *e, const particle *q, int from) {
    char buf[8];
    size_t o = 0;
    for (int i = from; i < q->n_ids && o < 4; i++) {
        size_t len = 0;
        const char *b = orc_tokenizer_id_to_token(e->mo->tok, q->ids[i], &len);
        for (size_t k = 0; k < len && o < 4; k++)
            if (o > 0 || (b[k] != ' ' && b[k] != '\n')) buf[o++] = b[k];
    }
    return o == 4 && memcmp(buf, "####", 4) == 0;
}

/* One line for every unfinished particle: each step samples one token per
 * particle still writing its line, and one forward of the generator feeds
 * all of them together; then one forward of the value model reads every new
 * line and gives log psi at its end. */
static orc_status extend_all(engine *e, bool greedy, orc_error *err) {
    orc_sampler_opts so = e->o->sampler;
    if (greedy) so.temperature = 0.0f;
    for (int i = 0; i < e->n; i++) {
        particle *q = &e->p[i];
        q->line_done = q->finished;
        q->line_from = q->n_ids;
    }
    for (;;) {
        int rows = 0;
        for (int i = 0; i < e->n; i++) {
            particle *q = &e->p[i];
            if (q->line_done) continue;
            if (e->n_prompt + q->n_ids + 1 >= e->cap) { /* no room for another token */
                q->finished = q->line_done = true;
                continue;
            }
            const float u = (float)(((double)orc_rng_u32(&e->rng) + 0.5) / 4294967296.0);
            const int32_t id = orc_sample(&so, q->logits, e->V, q->ids, (size_t)q->n_ids, u, &e->work);
            e->tokens++;
            if (id < 0 || is_stop(e, id)) {
                q->finished = q->line_done = true;
                continue;
            }
            if (e->record_logp) { /* a pass over the vocabulary per token: only when something reads it */
                q->logp[q->n_ids] = token_logp(q->logits, e->V, id);
                q->conf = orc_value_confidence_next(q->conf, q->logp[q->n_ids]);
            }
            q->ids[q->n_ids++] = id;
            q->line_done = orc_tsmc_is_step_end(e->mo->tok, id) || q->n_ids - q->line_from >= e->o->max_line_tokens;
            e->next[rows] = id;
            e->steps[rows] = (orc_llm_step_seq){q->gseq, &e->next[rows], 1};
            e->who[rows++] = i;
        }
        if (rows == 0) break;
        orc_status st = orc_llm_step(&e->ctx, e->mo->gen, e->gpool, e->steps, rows, e->logits, NULL, err);
        if (st != ORC_OK) return st;
        for (int r = 0; r < rows; r++)
            memcpy(e->p[e->who[r]].logits, e->logits + (size_t)r * (size_t)e->V, (size_t)e->V * sizeof(float));
    }
    int rows = 0;
    for (int i = 0; i < e->n; i++) {
        particle *q = &e->p[i];
        if (q->n_ids == q->line_from) continue;
        q->step_end[q->n_steps++] = q->n_ids - 1;
        if (answer_line(e, q, q->line_from)) q->finished = true;
        if (q->n_steps >= e->o->max_steps) q->finished = true;
        if (e->value) {
            e->steps[rows] = (orc_llm_step_seq){q->vseq, q->ids + q->line_from, q->n_ids - q->line_from};
            e->who[rows++] = i;
        }
    }
    if (rows == 0) return ORC_OK;
    orc_status st = orc_llm_step(&e->ctx, e->mo->value->body, e->vpool, e->steps, rows, NULL, e->hidden, err);
    for (int r = 0; st == ORC_OK && r < rows; r++) {
        particle *q = &e->p[e->who[r]];
        const double lpsi = head_lpsi(e, e->hidden + (size_t)r * (size_t)e->D, q->conf);
        q->logw += e->o->alpha * (lpsi - q->lpsi);
        q->lpsi = lpsi;
        if (lpsi < q->min_lpsi) q->min_lpsi = lpsi;
    }
    return st;
}

static orc_status ctx_status(engine *e, const char *what, orc_error *err) {
    orc_status st = orc_ctx_ok(&e->ctx) ? ORC_OK
                                        : orc_error_set(err, e->ctx.err.code, "tsmc: %s: %s", what,
                                                        orc_ctx_message(&e->ctx));
    orc_ctx_reset(&e->ctx);
    e->ctx.no_grad = true;
    return st;
}

/* ---- results ------------------------------------------------------------------------- */

static char *particle_text(const engine *e, const particle *q) {
    char *text = NULL;
    size_t len = 0;
    if (orc_tokenizer_decode(e->mo->tok, q->ids, (size_t)q->n_ids, &text, &len, NULL) != ORC_OK) return NULL;
    return text;
}

/* The normalised answer after the last "####", or NULL ("no answer"). */
static char *particle_answer(const engine *e, const particle *q) {
    char *text = particle_text(e, q);
    const char *hash = text ? strstr(text, "####") : NULL;
    for (const char *h = hash; h; h = strstr(h + 4, "####")) hash = h;
    char *ans = NULL;
    if (hash) {
        char *raw = orc_task_extract_answer(hash);
        ans = raw ? orc_task_normalize(raw) : NULL;
        free(raw);
        if (ans && !*ans) {
            free(ans);
            ans = NULL;
        }
    }
    free(text);
    return ans;
}

static orc_status finish_answer(engine *e, int chosen, orc_tsmc_answer *out, orc_error *err) {
    out->tokens = e->tokens;
    out->finished = 0;
    for (int i = 0; i < e->n; i++) out->finished += e->p[i].finished;
    if (chosen < 0) return ORC_OK;
    out->answer = particle_answer(e, &e->p[chosen]);
    out->text = particle_text(e, &e->p[chosen]);
    if (!out->text) return orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
    return ORC_OK;
}

/* Self-check for tests: every particle's logits (and the log-probabilities
 * recorded for its tokens) must equal a fresh forward of prompt + its ids
 * without a cache, which catches a KV sequence that did
 * not follow its particle through forks and resampling. */
static orc_status check_caches(engine *e, orc_error *err) {
    for (int i = 0; i < e->n; i++) {
        const particle *q = &e->p[i];
        const int n = e->n_prompt + q->n_ids;
        if (orc_kv_seq_len(e->gpool, q->gseq) != n)
            return orc_error_set(err, ORC_EINVAL, "tsmc: particle %d's sequence holds %lld positions, not %d", i,
                                 (long long)orc_kv_seq_len(e->gpool, q->gseq), n);
        orc_tensor *t = orc_new(&e->ctx, ORC_I32, 2, ORC_SHAPE(1, n));
        if (!t) return ctx_status(e, "cache check", err);
        memcpy(orc_i32(t), e->prompt, (size_t)e->n_prompt * sizeof(int32_t));
        memcpy(orc_i32(t) + e->n_prompt, q->ids, (size_t)q->n_ids * sizeof(int32_t));
        orc_tensor *lg = orc_llm_forward(&e->ctx, e->mo->gen, t, NULL);
        if (!lg) return ctx_status(e, "cache check", err);
        for (int t = 0; e->record_logp && t < q->n_ids; t++) {
            const float want = token_logp(orc_f32(lg) + (int64_t)(e->n_prompt + t - 1) * e->V, e->V, q->ids[t]);
            if (fabsf(want - q->logp[t]) > 1e-3f * (1.0f + fabsf(want))) {
                orc_ctx_reset(&e->ctx);
                return orc_error_set(err, ORC_EINVAL, "tsmc: particle %d's token %d log-probability %g is not a "
                                     "fresh forward's %g", i, t, (double)q->logp[t], (double)want);
            }
        }
        const float *last = orc_f32(lg) + (int64_t)(n - 1) * e->V;
        for (int64_t v = 0; v < e->V; v++)
            if (fabsf(last[v] - q->logits[v]) > 1e-3f * (1.0f + fabsf(last[v]))) {
                orc_ctx_reset(&e->ctx);
                return orc_error_set(err, ORC_EINVAL,
                                     "tsmc: particle %d's cached logits differ from a fresh forward at id %lld "
                                     "(%g vs %g)",
                                     i, (long long)v, (double)q->logits[v], (double)last[v]);
            }
        orc_ctx_reset(&e->ctx);
        e->ctx.no_grad = true;
    }
    return ORC_OK;
}

/* ---- the methods ---------------------------------------------------------------------- */

/* Every particle on its own to the end (no resampling), decoding together. */
static orc_status run_independent(engine *e, bool greedy, orc_error *err) {
    for (int round = 0; round < e->o->max_steps; round++) {
        bool any = false;
        for (int i = 0; i < e->n; i++) any |= !e->p[i].finished;
        if (!any) break;
        orc_status st = extend_all(e, greedy, err);
        if (st != ORC_OK) return st;
    }
    for (int i = 0; i < e->n; i++) e->p[i].finished = true; /* out of steps */
    return ORC_OK;
}

/* New particle i = old particle anc[i]: the pools share pages
 * (orc_kv_seq_resample), the bookkeeping is copied through a snapshot. */
static orc_status reorder(engine *e, const int *anc, orc_error *err) {
    const int n = e->n;
    int32_t *gseqs = malloc((size_t)n * sizeof *gseqs), *vseqs = malloc((size_t)n * sizeof *vseqs);
    int64_t *a64 = malloc((size_t)n * sizeof *a64);
    particle *old = malloc((size_t)n * sizeof *old);
    orc_status st = gseqs && vseqs && a64 && old ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
    for (int i = 0; st == ORC_OK && i < n; i++) {
        gseqs[i] = e->p[i].gseq;
        vseqs[i] = e->p[i].vseq;
        a64[i] = anc[i];
        old[i] = e->p[i];
        old[i].ids = malloc((size_t)(e->p[i].n_ids + 1) * sizeof *old[i].ids);
        old[i].logp = malloc((size_t)(e->p[i].n_ids + 1) * sizeof *old[i].logp);
        old[i].step_end = malloc((size_t)(e->p[i].n_steps + 1) * sizeof *old[i].step_end);
        old[i].logits = malloc((size_t)e->V * sizeof *old[i].logits);
        if (!old[i].ids || !old[i].logp || !old[i].step_end || !old[i].logits) {
            for (int k = 0; k <= i; k++) particle_free(&old[k]);
            st = orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
            break;
        }
        memcpy(old[i].ids, e->p[i].ids, (size_t)e->p[i].n_ids * sizeof *old[i].ids);
        memcpy(old[i].logp, e->p[i].logp, (size_t)e->p[i].n_ids * sizeof *old[i].logp);
        memcpy(old[i].step_end, e->p[i].step_end, (size_t)e->p[i].n_steps * sizeof *old[i].step_end);
        memcpy(old[i].logits, e->p[i].logits, (size_t)e->V * sizeof *old[i].logits);
    }
    if (st == ORC_OK) st = orc_kv_seq_resample(e->gpool, gseqs, a64, n, err);
    if (st == ORC_OK && e->value) st = orc_kv_seq_resample(e->vpool, vseqs, a64, n, err);
    for (int i = 0; st == ORC_OK && i < n; i++) {
        particle *q = &e->p[i];
        const particle *s = &old[anc[i]];
        memcpy(q->ids, s->ids, (size_t)s->n_ids * sizeof *q->ids);
        memcpy(q->logp, s->logp, (size_t)s->n_ids * sizeof *q->logp);
        memcpy(q->step_end, s->step_end, (size_t)s->n_steps * sizeof *q->step_end);
        memcpy(q->logits, s->logits, (size_t)e->V * sizeof *q->logits);
        q->n_ids = s->n_ids;
        q->n_steps = s->n_steps;
        q->lpsi = s->lpsi;
        q->min_lpsi = s->min_lpsi;
        q->conf = s->conf;
        q->finished = s->finished;
        q->logw = 0; /* equal weights after resampling */
    }
    if (st == ORC_OK)
        for (int i = 0; i < n; i++) particle_free(&old[i]);
    free(gseqs);
    free(vseqs);
    free(a64);
    free(old);
    return st;
}

static orc_status run_smc(engine *e, orc_tsmc_answer *out, orc_error *err) {
    const int n = e->n;
    double *logw = malloc((size_t)n * sizeof *logw);
    int *anc = malloc((size_t)n * sizeof *anc);
    orc_status st = logw && anc ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
    for (int step = 0; st == ORC_OK && step < e->o->max_steps; step++) {
        bool any = false;
        for (int i = 0; i < n; i++) any |= !e->p[i].finished;
        if (!any) break;
        if ((st = extend_all(e, false, err)) != ORC_OK) break;
        for (int i = 0; i < n; i++) logw[i] = e->p[i].logw;
        if (e->o->ess_threshold < 1.0 && orc_ess(logw, n) >= e->o->ess_threshold * n) continue;
        st = orc_resample(e->o->resample, logw, n, &e->rng, anc, err);
        if (st == ORC_OK) st = reorder(e, anc, err);
        out->resamples += st == ORC_OK;
    }
    free(logw);
    free(anc);
    return st;
}

orc_status orc_tsmc_check_weighting(double alpha, double ess_threshold, orc_error *err) {
    if (!(alpha >= 0) || !(ess_threshold >= 0) || ess_threshold > 1)
        return orc_error_set(err, ORC_EINVAL, "tsmc: alpha %g must be >= 0 and the ESS threshold %g in [0, 1]", alpha,
                             ess_threshold);
    return ORC_OK;
}

static orc_status check_run(const orc_tsmc_models *mo, orc_tsmc_method m, const orc_tsmc_opts *o, orc_error *err) {
    if (!mo || !mo->gen || !mo->tok) return orc_error_set(err, ORC_EINVAL, "tsmc: no generator or tokenizer");
    if ((int)m < 0 || m >= ORC_TSMC_N_METHODS) return orc_error_set(err, ORC_EINVAL, "tsmc: unknown method %d", (int)m);
    if (o->n_particles < 1)
        return orc_error_set(err, ORC_EINVAL, "tsmc: N = %d particles; it must be at least 1", o->n_particles);
    if (o->max_steps < 1 || o->max_line_tokens < 1)
        return orc_error_set(err, ORC_EINVAL, "tsmc: max steps %d and max line tokens %d must be >= 1", o->max_steps,
                             o->max_line_tokens);
    if (orc_tsmc_check_weighting(o->alpha, o->ess_threshold, err) != ORC_OK) return err->code;
    const bool needs_value = m == ORC_TSMC_ORM || m == ORC_TSMC_PRM || m == ORC_TSMC_WEIGHTED || m == ORC_TSMC_SMC;
    if (needs_value && !mo->value)
        return orc_error_set(err, ORC_EINVAL, "tsmc: method '%s' needs a value model", orc_tsmc_method_name(m));
    if (mo->value && mo->value->body->cfg.vocab_size != mo->gen->cfg.vocab_size)
        return orc_error_set(err, ORC_ESHAPE,
                             "tsmc: the value model's vocabulary (%lld) is not the generator's (%lld): it was made "
                             "for another tokenizer",
                             (long long)mo->value->body->cfg.vocab_size, (long long)mo->gen->cfg.vocab_size);
    if (mo->context < 8) return orc_error_set(err, ORC_EINVAL, "tsmc: context %lld is too small", (long long)mo->context);
    return orc_sampler_opts_validate(&o->sampler, err);
}

orc_status orc_tsmc_run(const orc_tsmc_models *mo, orc_tsmc_method m, const int32_t *prompt, int n_prompt,
                        const orc_tsmc_opts *o, orc_tsmc_answer *out, orc_error *err) {
    memset(out, 0, sizeof *out);
    orc_status st = check_run(mo, m, o, err);
    if (st != ORC_OK) return st;
    const int n = m == ORC_TSMC_GREEDY ? 1 : o->n_particles;
    const bool value = m != ORC_TSMC_GREEDY && m != ORC_TSMC_MAJORITY;
    engine e;
    if ((st = engine_init(&e, mo, o, n, value, err)) != ORC_OK) return st;
    e.record_logp = value && mo->value->confidence;
    st = start(&e, prompt, n_prompt, err);
    if (st == ORC_OK) st = m == ORC_TSMC_SMC ? run_smc(&e, out, err) : run_independent(&e, m == ORC_TSMC_GREEDY, err);
    if (st == ORC_OK && o->check_caches) st = check_caches(&e, err);
    if (st != ORC_OK) {
        engine_free(&e);
        return st;
    }
    /* choose */
    char **answers = calloc((size_t)n, sizeof *answers);
    double *w = malloc((size_t)n * sizeof *w);
    int chosen = -1;
    if (!answers || !w) st = orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
    for (int i = 0; st == ORC_OK && i < n; i++) answers[i] = particle_answer(&e, &e.p[i]);
    if (st == ORC_OK) {
        if (m == ORC_TSMC_GREEDY) {
            chosen = 0;
        } else if (m == ORC_TSMC_SMC) { /* weighted majority by the particles' SMC weights */
            double mx = -INFINITY;
            for (int i = 0; i < n; i++) mx = e.p[i].logw > mx ? e.p[i].logw : mx;
            for (int i = 0; i < n; i++) w[i] = isfinite(mx) ? exp(e.p[i].logw - mx) : 1.0;
            chosen = orc_weighted_majority((const char *const *)answers, w, n);
        } else {
            double *final = malloc((size_t)n * sizeof *final), *minv = malloc((size_t)n * sizeof *minv);
            if (!final || !minv) {
                st = orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
            } else {
                for (int i = 0; i < n; i++) {
                    final[i] = e.p[i].lpsi;
                    minv[i] = e.p[i].min_lpsi;
                }
                chosen = orc_tsmc_pick(m, (const char *const *)answers, final, minv, n, w);
            }
            free(final);
            free(minv);
        }
        if (st == ORC_OK) st = finish_answer(&e, chosen, out, err);
    }
    for (int i = 0; answers && i < n; i++) free(answers[i]);
    free(answers);
    free(w);
    engine_free(&e);
    return st;
}

orc_status orc_tsmc_sample(const orc_tsmc_models *mo, const int32_t *prompt, int n_prompt, int k,
                           const orc_tsmc_opts *o, orc_rollout_problem *out, orc_error *err) {
    orc_tsmc_opts oo = *o;
    oo.n_particles = k;
    orc_status st = check_run(mo, ORC_TSMC_MAJORITY, &oo, err);
    if (st != ORC_OK) return st;
    engine e;
    if ((st = engine_init(&e, mo, &oo, k, false, err)) != ORC_OK) return st;
    e.record_logp = true;
    st = start(&e, prompt, n_prompt, err);
    if (st == ORC_OK) st = run_independent(&e, false, err);
    out->samples = st == ORC_OK ? calloc((size_t)k, sizeof *out->samples) : NULL;
    if (st == ORC_OK && !out->samples) st = orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
    for (int i = 0; st == ORC_OK && i < k; i++) {
        const particle *q = &e.p[i];
        orc_rollout_sample *s = &out->samples[i];
        out->n_samples = i + 1;
        s->n_ids = q->n_ids;
        s->n_steps = q->n_steps;
        s->ids = malloc((size_t)(q->n_ids > 0 ? q->n_ids : 1) * sizeof *s->ids);
        s->logp = malloc((size_t)(q->n_ids > 0 ? q->n_ids : 1) * sizeof *s->logp);
        s->step_end = malloc((size_t)(q->n_steps > 0 ? q->n_steps : 1) * sizeof *s->step_end);
        if (!s->ids || !s->logp || !s->step_end) {
            st = orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
            break;
        }
        memcpy(s->ids, q->ids, (size_t)q->n_ids * sizeof *s->ids);
        memcpy(s->logp, q->logp, (size_t)q->n_ids * sizeof *s->logp);
        memcpy(s->step_end, q->step_end, (size_t)q->n_steps * sizeof *s->step_end);
        s->answer = particle_answer(&e, q);
    }
    engine_free(&e);
    return st;
}
