/* Decoding for TSMC: particles that grow one line at a time, each with its
 * own KV caches (generator and value model) so a resampled particle copies
 * its parent's caches instead of recomputing them; the shared prompt is
 * prefilled once and copied to every particle. On top of that: independent
 * sampling (for the rollouts and the best-of-N / voting baselines), greedy
 * decoding, and the twisted SMC loop with its resampling rule. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

typedef struct particle {
    orc_llm_cache *gc, *vc; /* generator and value caches (vc NULL without a value model) */
    int32_t *ids;           /* generated ids, after the prompt */
    int n_ids;
    int *step_end;
    int n_steps;
    float *logits;          /* the generator's next-token logits [V] */
    double logw;            /* SMC log weight */
    double lpsi;            /* log psi at the last step end */
    double min_lpsi;        /* the smallest step value so far (PRM) */
    bool finished;
} particle;

typedef struct engine {
    const orc_tsmc_models *mo;
    const orc_tsmc_opts *o;
    int n;
    particle *p;
    particle *back;         /* SMC: the spare set resampling copies into */
    particle **src;         /* SMC: where each old particle's state is during a resample */
    int64_t V, cap;         /* vocabulary, ids per particle */
    int32_t stop_ids[8];
    size_t n_stop;
    orc_arena *arena;
    orc_ctx ctx;
    orc_sample_work work;
    orc_rng rng;
    int64_t tokens;         /* sampled tokens, all particles */
    const int32_t *prompt;
    int n_prompt;
} engine;

static void particle_free(particle *q) {
    orc_llm_cache_free(q->gc);
    orc_llm_cache_free(q->vc);
    free(q->ids);
    free(q->step_end);
    free(q->logits);
}

static orc_status particle_alloc(engine *e, particle *q, bool with_value, orc_error *err) {
    q->gc = orc_llm_cache_new(&e->mo->gen->cfg, 1, e->cap, err);
    q->vc = with_value && q->gc ? orc_llm_cache_new(&e->mo->value->body->cfg, 1, e->cap, err) : NULL;
    q->ids = malloc((size_t)e->cap * sizeof *q->ids);
    q->step_end = malloc((size_t)e->cap * sizeof *q->step_end);
    q->logits = malloc((size_t)e->V * sizeof *q->logits);
    if (!q->gc || (with_value && !q->vc) || !q->ids || !q->step_end || !q->logits)
        return err && err->code ? err->code : orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
    return ORC_OK;
}

static void engine_free(engine *e) {
    for (int i = 0; e->p && i < e->n; i++) particle_free(&e->p[i]);
    for (int i = 0; e->back && i < e->n; i++) particle_free(&e->back[i]);
    free(e->p);
    free(e->back);
    free(e->src);
    orc_sample_work_release(&e->work);
    orc_arena_destroy(e->arena);
}

static orc_status engine_init(engine *e, const orc_tsmc_models *mo, const orc_tsmc_opts *o, int n, bool with_value,
                              bool spare, orc_error *err) {
    memset(e, 0, sizeof *e);
    e->mo = mo;
    e->o = o;
    e->n = n;
    e->V = mo->gen->cfg.vocab_size;
    e->cap = mo->context;
    e->n_stop = orc_chat_stop_ids(mo->tok, e->stop_ids, 8);
    if (e->n_stop > 8) e->n_stop = 8;
    e->p = calloc((size_t)n, sizeof *e->p);
    e->back = spare ? calloc((size_t)n, sizeof *e->back) : NULL;
    e->src = spare ? calloc((size_t)n, sizeof *e->src) : NULL;
    e->arena = orc_arena_create((size_t)8 << 20);
    orc_status st = e->p && e->arena && (!spare || (e->back && e->src)) ? orc_sample_work_init(&e->work, e->V, err)
                                                                       : orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
    for (int i = 0; st == ORC_OK && i < n; i++) {
        st = particle_alloc(e, &e->p[i], with_value, err);
        if (st == ORC_OK && spare) st = particle_alloc(e, &e->back[i], with_value, err);
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

static orc_status ctx_status(engine *e, const char *what, orc_error *err) {
    orc_status st = orc_ctx_ok(&e->ctx) ? ORC_OK
                                        : orc_error_set(err, e->ctx.err.code, "tsmc: %s: %s", what,
                                                        orc_ctx_message(&e->ctx));
    orc_ctx_reset(&e->ctx);
    e->ctx.no_grad = true;
    return st;
}

static double log_sigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }

/* Feed ids to the generator (keeping the last logits) and, when given, the
 * value model (returning log psi at the last id). */
static orc_status feed(engine *e, particle *q, const int32_t *ids, int n, bool value, double *lpsi, orc_error *err) {
    orc_tensor *t = orc_tensor_wrap(e->arena, ORC_I32, 2, ORC_SHAPE(1, n), (void *)ids, err);
    if (!t) return err->code;
    orc_tensor *h = orc_llm_hidden(&e->ctx, e->mo->gen, t, q->gc);
    orc_tensor *last = h ? orc_slice(&e->ctx, h, 1, n - 1, 1) : NULL;
    orc_tensor *lg = last ? orc_linear(&e->ctx, last, e->mo->gen->lm_head, NULL) : NULL;
    if (lg) memcpy(q->logits, orc_f32(orc_contiguous(&e->ctx, lg)), (size_t)e->V * sizeof(float));
    if (value && orc_ctx_ok(&e->ctx)) {
        orc_tensor *z = orc_value_logits(&e->ctx, e->mo->value, t, q->vc);
        if (z) {
            *lpsi = log_sigmoid(orc_f32(z)[n - 1]);
        }
    }
    return ctx_status(e, "forward", err);
}

static void copy_cache(orc_llm_cache *dst, const orc_llm_cache *src) {
    if (!dst || !src) return;
    const size_t row = (size_t)(src->n_kv_heads * src->head_dim);
    for (int64_t l = 0; l < src->n_layers; l++) {
        memcpy(dst->k[l], src->k[l], (size_t)src->len * row * sizeof(float));
        memcpy(dst->v[l], src->v[l], (size_t)src->len * row * sizeof(float));
    }
    dst->len = src->len;
}

static void copy_particle(engine *e, particle *dst, const particle *src) {
    if (dst == src) return;
    copy_cache(dst->gc, src->gc);
    copy_cache(dst->vc, src->vc);
    memcpy(dst->ids, src->ids, (size_t)src->n_ids * sizeof *dst->ids);
    memcpy(dst->step_end, src->step_end, (size_t)src->n_steps * sizeof *dst->step_end);
    memcpy(dst->logits, src->logits, (size_t)e->V * sizeof *dst->logits);
    dst->n_ids = src->n_ids;
    dst->n_steps = src->n_steps;
    dst->logw = src->logw;
    dst->lpsi = src->lpsi;
    dst->min_lpsi = src->min_lpsi;
    dst->finished = src->finished;
}

/* Prefill the prompt once into particle 0 and copy it to the others. */
static orc_status start(engine *e, const int32_t *prompt, int n_prompt, bool value, orc_error *err) {
    if (n_prompt < 1) return orc_error_set(err, ORC_EINVAL, "tsmc: empty prompt");
    if (n_prompt + 2 > e->cap)
        return orc_error_set(err, ORC_ERANGE, "tsmc: the prompt's %d tokens leave no room in a context of %lld",
                             n_prompt, (long long)e->cap);
    e->n_prompt = n_prompt;
    e->prompt = prompt;
    particle *q = &e->p[0];
    double lpsi = 0;
    orc_status st = feed(e, q, prompt, n_prompt, value, &lpsi, err);
    q->lpsi = lpsi;
    q->min_lpsi = INFINITY;
    for (int i = 1; st == ORC_OK && i < e->n; i++) copy_particle(e, &e->p[i], q);
    return st;
}

static bool is_stop(const engine *e, int32_t id) {
    for (size_t i = 0; i < e->n_stop; i++)
        if (e->stop_ids[i] == id) return true;
    return false;
}

/* Does the last line of q (ids from `from`) start with "####"? */
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

/* The value model catches up over q's last line (ids from `from`; its cache
 * trails the generator's by that line): log psi at the line's end. */
static orc_status value_line(engine *e, particle *q, int from, double *lpsi, orc_error *err) {
    orc_tensor *t = orc_tensor_wrap(e->arena, ORC_I32, 2, ORC_SHAPE(1, q->n_ids - from), q->ids + from, err);
    if (!t) return err->code;
    orc_tensor *z = orc_value_logits(&e->ctx, e->mo->value, t, q->vc);
    if (z) *lpsi = log_sigmoid(orc_f32(z)[q->n_ids - from - 1]);
    return ctx_status(e, "value forward", err);
}

/* Extend q by one line: sample until a token with a newline, an end of turn,
 * the line budget or the context; then one value-model forward over the
 * line gives log psi at its end. */
static orc_status extend(engine *e, particle *q, bool greedy, bool value, orc_error *err) {
    orc_sampler_opts so = e->o->sampler;
    if (greedy) so.temperature = 0.0f;
    const int from = q->n_ids;
    bool line_done = false;
    while (!line_done && !q->finished) {
        if (e->n_prompt + q->n_ids + 1 >= e->cap) { /* no room for another token */
            q->finished = true;
            break;
        }
        const float u = (float)(((double)orc_rng_u32(&e->rng) + 0.5) / 4294967296.0);
        const int32_t id = orc_sample(&so, q->logits, e->V, q->ids, (size_t)q->n_ids, u, &e->work);
        e->tokens++;
        if (id < 0 || is_stop(e, id)) {
            q->finished = true;
            break;
        }
        q->ids[q->n_ids++] = id;
        line_done = orc_tsmc_is_step_end(e->mo->tok, id) || q->n_ids - from >= e->o->max_line_tokens;
        double unused;
        orc_status st = feed(e, q, &q->ids[q->n_ids - 1], 1, false, &unused, err);
        if (st != ORC_OK) return st;
    }
    if (q->n_ids > from) {
        q->step_end[q->n_steps++] = q->n_ids - 1;
        if (value) {
            double lpsi = q->lpsi;
            orc_status st = value_line(e, q, from, &lpsi, err);
            if (st != ORC_OK) return st;
            q->logw += e->o->alpha * (lpsi - q->lpsi);
            q->lpsi = lpsi;
            if (lpsi < q->min_lpsi) q->min_lpsi = lpsi;
        }
        if (answer_line(e, q, from)) q->finished = true;
    }
    if (q->n_steps >= e->o->max_steps) q->finished = true;
    return ORC_OK;
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

/* Self-check for tests: every particle's logits must equal a fresh forward
 * of prompt + its ids without a cache, which catches a cache that was not
 * copied with its particle on resampling. */
static orc_status check_caches(engine *e, orc_error *err) {
    for (int i = 0; i < e->n; i++) {
        const particle *q = &e->p[i];
        const int n = e->n_prompt + q->n_ids;
        orc_tensor *t = orc_new(&e->ctx, ORC_I32, 2, ORC_SHAPE(1, n));
        if (!t) return ctx_status(e, "cache check", err);
        memcpy(orc_i32(t), e->prompt, (size_t)e->n_prompt * sizeof(int32_t));
        memcpy(orc_i32(t) + e->n_prompt, q->ids, (size_t)q->n_ids * sizeof(int32_t));
        orc_tensor *lg = orc_llm_forward(&e->ctx, e->mo->gen, t, NULL);
        if (!lg) return ctx_status(e, "cache check", err);
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

/* Every particle on its own to the end (no resampling). */
static orc_status run_independent(engine *e, bool greedy, bool value, orc_error *err) {
    for (int i = 0; i < e->n; i++)
        while (!e->p[i].finished) {
            orc_status st = extend(e, &e->p[i], greedy, value, err);
            if (st != ORC_OK) return st;
        }
    return ORC_OK;
}

/* Resampling in place: new particle i = old particle anc[i]. Each parent's
 * first child takes the parent's buffers by a struct swap (no copy); the
 * other children copy its caches (copy-on-resample, never a recompute).
 * The old array then serves as the spare for the next round. */
static void reorder(engine *e, const int *anc) {
    const int n = e->n;
    particle **src = e->src;
    for (int k = 0; k < n; k++) src[k] = NULL;
    for (int i = 0; i < n; i++) {
        const int k = anc[i];
        if (src[k]) continue;
        particle t = e->back[i];
        e->back[i] = e->p[k];
        e->p[k] = t;
        src[k] = &e->back[i];
    }
    for (int i = 0; i < n; i++)
        if (src[anc[i]] != &e->back[i]) copy_particle(e, &e->back[i], src[anc[i]]);
    particle *t = e->p;
    e->p = e->back;
    e->back = t;
}

static orc_status run_smc(engine *e, orc_tsmc_answer *out, orc_error *err) {
    const int n = e->n;
    double *logw = malloc((size_t)n * sizeof *logw);
    int *anc = malloc((size_t)n * sizeof *anc);
    orc_status st = logw && anc ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
    for (int step = 0; st == ORC_OK && step < e->o->max_steps; step++) {
        bool any = false;
        for (int i = 0; i < n && st == ORC_OK; i++)
            if (!e->p[i].finished) {
                any = true;
                st = extend(e, &e->p[i], false, true, err);
            }
        if (!any || st != ORC_OK) break;
        for (int i = 0; i < n; i++) logw[i] = e->p[i].logw;
        if (e->o->ess_threshold < 1.0 && orc_ess(logw, n) >= e->o->ess_threshold * n) continue;
        st = orc_resample(e->o->resample, logw, n, &e->rng, anc, err);
        if (st != ORC_OK) break;
        reorder(e, anc);
        out->resamples++;
        for (int i = 0; i < n; i++) e->p[i].logw = 0; /* equal weights after resampling */
    }
    free(logw);
    free(anc);
    return st;
}

static orc_status check_run(const orc_tsmc_models *mo, orc_tsmc_method m, const orc_tsmc_opts *o, orc_error *err) {
    if (!mo || !mo->gen || !mo->tok) return orc_error_set(err, ORC_EINVAL, "tsmc: no generator or tokenizer");
    if ((int)m < 0 || m >= ORC_TSMC_N_METHODS) return orc_error_set(err, ORC_EINVAL, "tsmc: unknown method %d", (int)m);
    if (o->n_particles < 1)
        return orc_error_set(err, ORC_EINVAL, "tsmc: N = %d particles; it must be at least 1", o->n_particles);
    if (o->max_steps < 1 || o->max_line_tokens < 1)
        return orc_error_set(err, ORC_EINVAL, "tsmc: max steps %d and max line tokens %d must be >= 1", o->max_steps,
                             o->max_line_tokens);
    if (!(o->alpha >= 0) || !(o->ess_threshold >= 0) || o->ess_threshold > 1)
        return orc_error_set(err, ORC_EINVAL, "tsmc: alpha %g must be >= 0 and the ESS threshold %g in [0, 1]",
                             o->alpha, o->ess_threshold);
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
    if ((st = engine_init(&e, mo, o, n, value, m == ORC_TSMC_SMC, err)) != ORC_OK) return st;
    st = start(&e, prompt, n_prompt, value, err);
    if (st == ORC_OK) st = m == ORC_TSMC_SMC ? run_smc(&e, out, err) : run_independent(&e, m == ORC_TSMC_GREEDY, value, err);
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
        double best = -INFINITY, mx = -INFINITY;
        switch (m) {
        case ORC_TSMC_GREEDY: chosen = 0; break;
        case ORC_TSMC_MAJORITY: chosen = orc_weighted_majority((const char *const *)answers, NULL, n); break;
        case ORC_TSMC_ORM:
        case ORC_TSMC_PRM:
            for (int i = 0; i < n; i++) {
                const double score = m == ORC_TSMC_ORM ? e.p[i].lpsi : e.p[i].min_lpsi;
                if (answers[i] && score > best) {
                    best = score;
                    chosen = i;
                }
            }
            break;
        case ORC_TSMC_WEIGHTED:
        case ORC_TSMC_SMC:
            for (int i = 0; i < n; i++) {
                w[i] = m == ORC_TSMC_WEIGHTED ? e.p[i].lpsi : e.p[i].logw;
                if (w[i] > mx) mx = w[i];
            }
            for (int i = 0; i < n; i++) w[i] = isfinite(mx) ? exp(w[i] - mx) : 1.0;
            chosen = orc_weighted_majority((const char *const *)answers, w, n);
            break;
        default: break;
        }
        if (chosen < 0 && m != ORC_TSMC_GREEDY) chosen = -1;
        st = finish_answer(&e, chosen, out, err);
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
    if ((st = engine_init(&e, mo, &oo, k, false, false, err)) != ORC_OK) return st;
    st = start(&e, prompt, n_prompt, false, err);
    if (st == ORC_OK) st = run_independent(&e, false, false, err);
    out->samples = st == ORC_OK ? calloc((size_t)k, sizeof *out->samples) : NULL;
    if (st == ORC_OK && !out->samples) st = orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
    for (int i = 0; st == ORC_OK && i < k; i++) {
        const particle *q = &e.p[i];
        orc_rollout_sample *s = &out->samples[i];
        out->n_samples = i + 1;
        s->n_ids = q->n_ids;
        s->n_steps = q->n_steps;
        s->ids = malloc((size_t)(q->n_ids > 0 ? q->n_ids : 1) * sizeof *s->ids);
        s->step_end = malloc((size_t)(q->n_steps > 0 ? q->n_steps : 1) * sizeof *s->step_end);
        if (!s->ids || !s->step_end) {
            st = orc_error_set(err, ORC_ENOMEM, "tsmc: out of memory");
            break;
        }
        memcpy(s->ids, q->ids, (size_t)q->n_ids * sizeof *s->ids);
        memcpy(s->step_end, q->step_end, (size_t)q->n_steps * sizeof *s->step_end);
        s->answer = particle_answer(&e, q);
    }
    engine_free(&e);
    return st;
}
