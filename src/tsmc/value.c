/* The TSMC value model: the generator's body with a scalar head, its files,
 * its two training objectives (contrastive twist learning and the per-step
 * BCE ablation) written with the engine's ops so the backward comes from
 * the tape, and the training loop (AdamW, warmup + cosine, the head at its
 * own learning-rate multiplier). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "orchard/ops.h"
#include "orchard/optim.h"
#include "orchard/safetensors.h"
#include "orchard/tsmc.h"

/* ---- the model ------------------------------------------------------------------- */

static orc_value_model *attach_head(orc_llm *body, bool with_grad, bool confidence, orc_error *err) {
    if (!body) return NULL;
    orc_value_model *v = calloc(1, sizeof *v);
    if (!v) {
        orc_llm_free(body);
        orc_error_set(err, ORC_ENOMEM, "value model: out of memory");
        return NULL;
    }
    v->body = body;
    v->confidence = confidence;
    v->arena = orc_arena_create((size_t)body->cfg.hidden_size * 16 + 4096);
    const int64_t D = body->cfg.hidden_size + (confidence ? 1 : 0);
    if (with_grad) {
        v->head_w = v->arena ? orc_param_new(v->arena, 2, ORC_SHAPE(1, D), "value_head.weight", err) : NULL;
        v->head_b = v->head_w ? orc_param_new(v->arena, 1, ORC_SHAPE(1), "value_head.bias", err) : NULL;
    } else {
        v->head_w = v->arena ? orc_tensor_zeros(v->arena, ORC_F32, 2, ORC_SHAPE(1, D), err) : NULL;
        v->head_b = v->head_w ? orc_tensor_zeros(v->arena, ORC_F32, 1, ORC_SHAPE(1), err) : NULL;
        if (v->head_b) {
            v->head_w->name = "value_head.weight";
            v->head_b->name = "value_head.bias";
        }
    }
    if (!v->head_b) {
        if (err && err->code == ORC_OK) orc_error_set(err, ORC_ENOMEM, "value model: out of memory");
        orc_value_free(v);
        return NULL;
    }
    return v;
}

orc_value_model *orc_value_from_generator(const char *gen_dir, bool with_grad, bool confidence, orc_error *err) {
    orc_value_model *v = attach_head(orc_llm_load(gen_dir, with_grad, err), with_grad, confidence, err);
    /* The confidence weight starts at 1: psi = sigmoid(conf), about the probability of the prefix's least likely
     * token, is a value before any training (a slip of e^-6 puts psi near e^-6), and training moves the head
     * from there; from 0 the head's 1e-3 steps take hundreds of steps to reach that scale. */
    if (v && confidence) orc_f32(v->head_w)[v->head_w->numel - 1] = 1.0f;
    return v;
}

orc_value_model *orc_value_load(const char *dir, bool with_grad, orc_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/value_head.safetensors", dir);
    orc_st_file *f = orc_st_open(path, err);
    if (!f) return NULL;
    orc_llm *body = orc_llm_load(dir, with_grad, err);
    /* the head's width says whether it reads the confidence input */
    const orc_st_tensor_info *hw = orc_st_find(f, "value_head.weight");
    const int64_t D = body ? body->cfg.hidden_size : 0;
    if (body && (!hw || hw->ndim != 2 || hw->shape[0] != 1 || (hw->shape[1] != D && hw->shape[1] != D + 1))) {
        orc_error_set(err, ORC_ESHAPE, "%s: value_head.weight is missing or not [1, %lld] (or [1, %lld] with the "
                      "confidence input) for this body", path, (long long)D, (long long)D + 1);
        orc_llm_free(body);
        body = NULL;
    }
    orc_value_model *v = body ? attach_head(body, with_grad, hw->shape[1] == D + 1, err) : NULL;
    if (!v) {
        orc_st_close(f);
        return NULL;
    }
    orc_status st = orc_st_read_into(f, "value_head.weight", v->head_w, err);
    if (st == ORC_OK) st = orc_st_read_into(f, "value_head.bias", v->head_b, err);
    orc_st_close(f);
    if (st != ORC_OK) {
        orc_value_free(v);
        return NULL;
    }
    return v;
}

orc_status orc_value_save(const orc_value_model *v, const char *dir, orc_error *err) {
    orc_status st = orc_llm_save(v->body, dir, err);
    if (st != ORC_OK) return st;
    orc_st_entry e[2];
    st = orc_st_entry_from_tensor(&e[0], "value_head.weight", v->head_w, ORC_ST_F32, err);
    if (st == ORC_OK) st = orc_st_entry_from_tensor(&e[1], "value_head.bias", v->head_b, ORC_ST_F32, err);
    char path[4096];
    snprintf(path, sizeof path, "%s/value_head.safetensors", dir);
    const orc_st_kv meta[] = {{"format", "pt"}, {"producer", "orchard tsmc value head"}};
    if (st == ORC_OK) st = orc_st_write(path, e, 2, meta, 2, err);
    return st;
}

void orc_value_free(orc_value_model *v) {
    if (!v) return;
    orc_llm_free(v->body);
    orc_arena_destroy(v->arena);
    orc_arena_destroy(v->scratch);
    free(v);
}

float orc_value_confidence_next(float conf, float logp) {
    const float m = logp < conf ? logp : conf;
    return m > ORC_VALUE_CONF_FLOOR ? m : ORC_VALUE_CONF_FLOOR;
}

void orc_value_confidence(const float *logp, int n, float *out) {
    float m = 0.0f;
    for (int t = 0; t < n; t++) out[t] = m = orc_value_confidence_next(m, logp[t]);
}

/* The head on hidden states h [B, T, D]: with the confidence input, conf
 * [B * T] joins h as one more feature column first. [B, T] logits. */
static orc_tensor *head_logits(orc_ctx *ctx, orc_value_model *v, orc_tensor *h, const float *conf) {
    if (!h) return NULL;
    const int64_t B = h->shape[0], T = h->shape[1];
    if (v->confidence) {
        if (!conf) return orc_fail(ctx, ORC_EFORMAT, "value model: its head reads the generator's confidence, and "
                                   "the solution has no token log-probabilities (rollouts from an older orchard?)");
        orc_tensor *c = orc_new(ctx, ORC_F32, 3, ORC_SHAPE(B, T, 1));
        if (!c) return NULL;
        memcpy(c->data, conf, (size_t)(B * T) * sizeof(float));
        orc_tensor *pair[2] = {h, c};
        h = orc_concat(ctx, 2, pair, 2);
    }
    orc_tensor *z = orc_linear(ctx, h, v->head_w, v->head_b); /* [B, T, 1] */
    return z ? orc_reshape(ctx, z, 2, ORC_SHAPE(B, T)) : NULL;
}

orc_tensor *orc_value_logits(orc_ctx *ctx, orc_value_model *v, orc_tensor *ids, const float *conf,
                             orc_llm_cache *cache) {
    return head_logits(ctx, v, orc_llm_hidden(ctx, v->body, ids, cache), conf);
}

/* ---- losses ------------------------------------------------------------------------ */

/* log sigmoid(x) for x [N, 1] as log_softmax([x, 0])[0], so the engine's
 * ops give the backward. */
static orc_tensor *log_sigmoid_col(orc_ctx *ctx, orc_tensor *x) {
    orc_tensor *zero = orc_new(ctx, ORC_F32, 2, x ? x->shape : ORC_SHAPE(1, 1));
    if (!x || !zero) return NULL;
    memset(zero->data, 0, (size_t)zero->numel * sizeof(float));
    orc_tensor *pair[2] = {x, zero};
    orc_tensor *ls = orc_log_softmax(ctx, orc_concat(ctx, 2, pair, 1));
    return orc_contiguous(ctx, orc_slice(ctx, ls, 1, 0, 1));
}

/* The value logits of samples [k0, k0 + n) of problem pr at their own
 * positions, [n, S] (S the longest of them, at least 1): the prompt is
 * run once as the shared prefix, each row holds one sample padded with its
 * last id (the causal mask keeps padding out of every position read). */
static orc_tensor *sample_logits(orc_ctx *ctx, orc_value_model *v, const orc_rollout_problem *pr, int k0, int n) {
    int64_t S = 1;
    for (int k = k0; k < k0 + n; k++)
        if (pr->samples[k].n_ids > S) S = pr->samples[k].n_ids;
    orc_tensor *prefix = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, pr->n_prompt));
    orc_tensor *ids = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(n, S));
    float *conf = v->confidence ? orc_arena_alloc(ctx->arena, (size_t)(n * S) * sizeof *conf) : NULL;
    if (!prefix || !ids || (v->confidence && !conf)) return orc_fail(ctx, ORC_ENOMEM, "value scoring: out of memory");
    memcpy(orc_i32(prefix), pr->prompt, (size_t)pr->n_prompt * sizeof(int32_t));
    for (int r = 0; r < n; r++) {
        const orc_rollout_sample *s = &pr->samples[k0 + r];
        int32_t *row = orc_i32(ids) + r * S;
        memcpy(row, s->ids, (size_t)s->n_ids * sizeof *row);
        const int32_t pad = s->n_ids > 0 ? s->ids[s->n_ids - 1] : pr->prompt[pr->n_prompt - 1];
        for (int64_t t = s->n_ids; t < S; t++) row[t] = pad;
        if (!conf) continue;
        if (!s->logp && s->n_ids > 0)
            return orc_fail(ctx, ORC_EFORMAT, "value model: its head reads the generator's confidence, and sample %d "
                            "has no token log-probabilities (rollouts from an older orchard: sample them again)",
                            k0 + r);
        float *crow = conf + r * S;
        orc_value_confidence(s->logp, s->n_ids, crow);
        for (int64_t t = s->n_ids; t < S; t++) crow[t] = s->n_ids > 0 ? crow[s->n_ids - 1] : 0.0f;
    }
    return head_logits(ctx, v, orc_llm_hidden_prefixed(ctx, v->body, prefix, ids), conf);
}

/* The samples' logits of probs[0..n_probs), flattened into one column
 * [cells, 1]; row0[p] is problem p's first cell and S[p] its row length,
 * so sample k's position t of problem p is cell row0[p] + k * S[p] + t. */
static orc_tensor *batch_logits(orc_ctx *ctx, orc_value_model *v, const orc_rollout_problem *const *probs, int n_probs,
                                int64_t *row0, int64_t *S) {
    orc_tensor **cols = orc_arena_alloc(ctx->arena, (size_t)n_probs * sizeof *cols);
    if (!cols) return orc_fail(ctx, ORC_ENOMEM, "value loss: out of memory");
    int64_t cells = 0;
    for (int p = 0; p < n_probs; p++) {
        if (probs[p]->n_prompt < 1 || probs[p]->n_samples < 1)
            return orc_fail(ctx, ORC_EINVAL, "value loss: problem %d has no prompt or no samples", p);
        orc_tensor *z = sample_logits(ctx, v, probs[p], 0, probs[p]->n_samples);
        if (!z) return NULL;
        row0[p] = cells;
        S[p] = z->shape[1];
        cells += z->numel;
        cols[p] = orc_reshape(ctx, z, 2, ORC_SHAPE(z->numel, 1));
    }
    return n_probs == 1 ? cols[0] : orc_concat(ctx, n_probs, cols, 0);
}

/* Samples of one forward in orc_value_step_logpsi: bounds the activations
 * (chunk x (prompt + solution) positions) while keeping the matrix products
 * wide enough to be cheaper than one forward per sample. */
#define LOGPSI_CHUNK 16

orc_status orc_value_step_logpsi(orc_value_model *v, const orc_rollout_problem *pr, double *const *out, orc_error *err) {
    if (!v->scratch && !(v->scratch = orc_arena_create((size_t)32 << 20)))
        return orc_error_set(err, ORC_ENOMEM, "value scoring: out of memory");
    orc_arena *a = v->scratch;
    orc_status st = ORC_OK;
    for (int k0 = 0; st == ORC_OK && k0 < pr->n_samples; k0 += LOGPSI_CHUNK) {
        const int n = pr->n_samples - k0 < LOGPSI_CHUNK ? pr->n_samples - k0 : LOGPSI_CHUNK;
        orc_arena_reset(a);
        orc_ctx ctx;
        orc_ctx_init(&ctx, a, 1);
        ctx.no_grad = true;
        orc_tensor *z = sample_logits(&ctx, v, pr, k0, n);
        if (!z) {
            st = orc_error_set(err, ctx.err.code ? ctx.err.code : ORC_ENOMEM, "value scoring of %d samples after a "
                               "%d-token prompt: %s", n, pr->n_prompt, orc_ctx_message(&ctx));
            break;
        }
        const int64_t S = z->shape[1];
        for (int k = 0; k < n; k++) {
            const orc_rollout_sample *s = &pr->samples[k0 + k];
            for (int t = 0; t < s->n_steps; t++) {
                const double x = orc_f32(z)[(int64_t)k * S + s->step_end[t]];
                out[k0 + k][t] = x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); /* log sigmoid, stable */
            }
        }
    }
    return st; /* the next call's first reset keeps the chunks this one used */
}

orc_tensor *orc_value_loss(orc_ctx *ctx, orc_value_model *v, const orc_rollout_problem *const *probs, int n_probs,
                           orc_value_objective obj, int *n_groups) {
    if (n_groups) *n_groups = 0;
    int64_t *row0 = orc_arena_alloc(ctx->arena, (size_t)(n_probs > 0 ? n_probs : 1) * 2 * sizeof *row0);
    if (!row0) return orc_fail(ctx, ORC_ENOMEM, "value loss: out of memory");
    int64_t *S = row0 + n_probs;
    orc_tensor *flat = n_probs > 0 ? batch_logits(ctx, v, probs, n_probs, row0, S)
                                   : orc_fail(ctx, ORC_EINVAL, "value loss: no problems");
    if (!flat) return NULL;
    /* count the cells: BCE one per (sample, step); twist a [groups, Kmax] grid */
    int kmax = 1, max_steps = 0;
    int64_t cells = 0;
    for (int p = 0; p < n_probs; p++) {
        if (probs[p]->n_samples > kmax) kmax = probs[p]->n_samples;
        for (int k = 0; k < probs[p]->n_samples; k++) {
            cells += probs[p]->samples[k].n_steps;
            if (probs[p]->samples[k].n_steps > max_steps) max_steps = probs[p]->samples[k].n_steps;
        }
    }
    if (obj == ORC_VALUE_BCE) {
        if (cells == 0) return orc_fail(ctx, ORC_EINVAL, "value loss: the batch has no solution steps");
        orc_tensor *idx = orc_new(ctx, ORC_I32, 1, ORC_SHAPE(cells));
        orc_tensor *tgt = orc_new(ctx, ORC_I32, 1, ORC_SHAPE(cells));
        if (!idx || !tgt) return NULL;
        int64_t c = 0;
        for (int p = 0; p < n_probs; p++)
            for (int k = 0; k < probs[p]->n_samples; k++) {
                const orc_rollout_sample *s = &probs[p]->samples[k];
                for (int t = 0; t < s->n_steps; t++, c++) {
                    orc_i32(idx)[c] = (int32_t)(row0[p] + k * S[p] + s->step_end[t]);
                    orc_i32(tgt)[c] = s->correct ? 0 : 1; /* class 0 = log sigmoid(x) */
                }
            }
        orc_tensor *x = orc_index_select(ctx, flat, idx);
        orc_tensor *zero = orc_new(ctx, ORC_F32, 2, ORC_SHAPE(cells, 1));
        if (!x || !zero) return NULL;
        memset(zero->data, 0, (size_t)cells * sizeof(float));
        orc_tensor *pair[2] = {x, zero};
        if (n_groups) *n_groups = (int)cells;
        return orc_cross_entropy(ctx, orc_concat(ctx, 2, pair, 1), tgt, NULL, ORC_IGNORE_INDEX);
    }
    /* twist: groups are (problem, step t) with a correct sample among those that reach t */
    int64_t groups = 0;
    for (int p = 0; p < n_probs; p++)
        for (int t = 0; t < max_steps; t++) {
            bool any = false;
            for (int k = 0; k < probs[p]->n_samples && !any; k++)
                any = probs[p]->samples[k].correct && probs[p]->samples[k].n_steps > t;
            groups += any;
        }
    if (groups == 0) return orc_fail(ctx, ORC_EINVAL, "value loss: no problem in the batch has a correct sample");
    orc_tensor *idx = orc_new(ctx, ORC_I32, 1, ORC_SHAPE(groups * kmax));
    orc_tensor *bias = orc_new(ctx, ORC_F32, 2, ORC_SHAPE(groups, kmax));
    orc_tensor *target = orc_new(ctx, ORC_F32, 2, ORC_SHAPE(groups, kmax));
    if (!idx || !bias || !target) return NULL;
    int64_t g = 0;
    for (int p = 0; p < n_probs; p++) {
        const orc_rollout_problem *pr = probs[p];
        for (int t = 0; t < max_steps; t++) {
            int n_correct = 0;
            for (int k = 0; k < pr->n_samples; k++) n_correct += pr->samples[k].correct && pr->samples[k].n_steps > t;
            if (!n_correct) continue;
            for (int k = 0; k < kmax; k++) {
                const int64_t cell = g * kmax + k;
                const bool in = k < pr->n_samples && pr->samples[k].n_steps > t;
                orc_i32(idx)[cell] = in ? (int32_t)(row0[p] + k * S[p] + pr->samples[k].step_end[t]) : 0;
                orc_f32(bias)[cell] = in ? 0.0f : -1e9f; /* out of the softmax */
                orc_f32(target)[cell] = in && pr->samples[k].correct ? 1.0f / (float)n_correct : 0.0f;
            }
            g++;
        }
    }
    orc_tensor *lpsi = log_sigmoid_col(ctx, orc_index_select(ctx, flat, idx));
    orc_tensor *grid = orc_add(ctx, orc_reshape(ctx, lpsi, 2, ORC_SHAPE(groups, kmax)), bias);
    orc_tensor *ce = orc_sum_all(ctx, orc_mul(ctx, orc_log_softmax(ctx, grid), target));
    if (n_groups) *n_groups = (int)groups;
    return orc_scale(ctx, ce, -1.0f / (float)groups);
}

/* ---- training ---------------------------------------------------------------------- */

void orc_value_train_opts_default(orc_value_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->objective = ORC_VALUE_TWIST;
    o->steps = 200;
    o->problems_per_step = 4;
    o->lr = 1e-4f;
    o->min_lr = 1e-5f;
    o->warmup = 10;
    o->weight_decay = 0.0f;
    o->head_lr_mult = 10.0f;
    o->seed = 1;
}

/* Every parameter of v (body, then head), for keeping the best weights. */
static int64_t value_numel(const orc_value_model *v) {
    int64_t n = v->head_w->numel + v->head_b->numel;
    for (int i = 0; i < v->body->n_params; i++) n += v->body->params[i]->numel;
    return n;
}

static void value_copy(orc_value_model *v, float *buf, bool save) {
    orc_tensor *extra[2] = {v->head_w, v->head_b};
    int64_t off = 0;
    for (int i = 0; i < v->body->n_params + 2; i++) {
        orc_tensor *t = i < v->body->n_params ? v->body->params[i] : extra[i - v->body->n_params];
        float *d = (float *)t->data;
        if (save) memcpy(buf + off, d, (size_t)t->numel * sizeof *d);
        else memcpy(d, buf + off, (size_t)t->numel * sizeof *d);
        off += t->numel;
    }
}

/* One held-out evaluation during training: prints it, and with keep_best
 * snapshots the weights when the twist loss is the lowest so far (or, with
 * keep_by_pairs, the pair accuracy the highest). */
static orc_status value_validate(orc_value_model *v, const orc_value_train_opts *o, int step, float *best_buf,
                                 double *best_loss, int *best_step, orc_value_report *best, orc_error *err) {
    orc_value_report r;
    if (orc_value_eval(v, o->val, &r, err) != ORC_OK) return err->code;
    if (!o->quiet)
        fprintf(stderr, "value eval step %d: held-out twist loss %.4f (constant psi %.4f), right-vs-wrong final %.3f, "
                "after step 1 %.3f, AUC %.3f | pick of %d: majority %.3f orm %.3f prm %.3f weighted %.3f\n",
                step, r.twist_loss, r.twist_loss_uniform, r.pair_final, r.pair_step[0], r.auc_final,
                o->val->problems[0].n_samples, r.majority, r.orm, r.prm, r.weighted);
    /* log psi = log sigmoid(x) flattens where x is large: once every value sits there, the softmax over a
     * problem's prefixes is uniform and the gradient all but vanishes, so training has stalled for good */
    if (!o->quiet && step > 0 && fabs(r.twist_loss - r.twist_loss_uniform) < 1e-4)
        fprintf(stderr, "value eval step %d: warning: the held-out values are all but equal, so they rank nothing "
                "(with too large a learning rate psi saturates near 1 or 0 and the training stalls for good)\n", step);
    const double score = o->keep_by_pairs ? -r.pair_final : r.twist_loss; /* lower is better */
    const bool better = *best_step < 0 || score < *best_loss;
    if (!o->keep_best || better) {
        *best_loss = score;
        *best_step = step;
        *best = r;
        if (o->keep_best) value_copy(v, best_buf, true);
    }
    return ORC_OK;
}

orc_status orc_value_train(orc_value_model *v, const orc_rollout_set *set, const orc_value_train_opts *o,
                           double *final_loss, orc_error *err) {
    if (o->steps < 1 || o->problems_per_step < 1)
        return orc_error_set(err, ORC_EINVAL, "value training: steps %d and problems per step %d must be >= 1",
                             o->steps, o->problems_per_step);
    for (int p = 0; v->confidence && p < set->n_problems; p++)
        for (int k = 0; k < set->problems[p].n_samples; k++)
            if (!set->problems[p].samples[k].logp && set->problems[p].samples[k].n_ids > 0)
                return orc_error_set(err, ORC_EFORMAT, "value training: the head reads the generator's confidence, "
                                     "and rollout problem %d (%s) has no token log-probabilities (rollouts from an "
                                     "older orchard: sample them again)", p + 1,
                                     set->problems[p].id ? set->problems[p].id : "?");
    /* problems the objective can learn from */
    int n_use = 0;
    int *use = malloc((size_t)(set->n_problems > 0 ? set->n_problems : 1) * sizeof *use);
    if (!use) return orc_error_set(err, ORC_ENOMEM, "value training: out of memory");
    for (int p = 0; p < set->n_problems; p++) {
        bool any_correct = false, any_wrong = false, any_steps = false;
        for (int k = 0; k < set->problems[p].n_samples; k++) {
            any_correct |= set->problems[p].samples[k].correct;
            any_wrong |= !set->problems[p].samples[k].correct;
            any_steps |= set->problems[p].samples[k].n_steps > 0;
        }
        const bool learnable = o->mixed_only ? any_correct && any_wrong : any_correct || o->objective == ORC_VALUE_BCE;
        if (any_steps && learnable) use[n_use++] = p;
    }
    if (n_use == 0) {
        free(use);
        return orc_error_set(err, ORC_EINVAL,
                             "value training: no rollout problem has %s (%d problems; sample more, or train the "
                             "generator longer)",
                             o->mixed_only ? "both a right and a wrong sample (--mixed-only)"
                             : o->objective == ORC_VALUE_TWIST ? "a correct sample" : "a solution step",
                             set->n_problems);
    }
    if (!o->quiet && o->mixed_only)
        fprintf(stderr, "value training: %d of %d rollout problems have both right and wrong samples\n", n_use,
                set->n_problems);
    orc_tensor *head[2] = {v->head_w, v->head_b};
    orc_param_group groups[2] = {orc_group(v->body->params, v->body->n_params, o->weight_decay),
                                 {head, 2, o->head_lr_mult, 0.0f}};
    orc_adamw_opts ao = {0.9f, 0.95f, 1e-8f};
    orc_optim *opt = orc_adamw_new(groups, 2, ao, err);
    orc_lr_schedule sched = {ORC_LR_WARMUP_COSINE, o->lr, o->min_lr, o->warmup < o->steps ? o->warmup : o->steps, o->steps};
    orc_arena *arena = orc_arena_create((size_t)64 << 20);
    if (!opt || !arena || orc_lr_schedule_check(&sched, err) != ORC_OK) {
        orc_optim_free(opt);
        orc_arena_destroy(arena);
        free(use);
        return err && err->code ? err->code : orc_error_set(err, ORC_ENOMEM, "value training: out of memory");
    }
    orc_ctx ctx;
    orc_ctx_init(&ctx, arena, o->seed);
    orc_rng rng;
    orc_rng_init(&rng, o->seed);
    const orc_rollout_problem **batch = malloc((size_t)o->problems_per_step * sizeof *batch);
    double tail = 0;
    int tail_n = 0;
    const bool validate = o->val && o->val->n_problems > 0;
    float *best_buf = validate && o->keep_best ? malloc((size_t)value_numel(v) * sizeof *best_buf) : NULL;
    double best_loss = INFINITY;
    int best_step = -1;
    orc_value_report best;
    memset(&best, 0, sizeof best);
    orc_status st = batch && (!validate || !o->keep_best || best_buf)
                        ? ORC_OK : orc_error_set(err, ORC_ENOMEM, "value training: out of memory");
    if (st == ORC_OK && validate) st = value_validate(v, o, 0, best_buf, &best_loss, &best_step, &best, err);
    for (int step = 0; step < o->steps && st == ORC_OK; step++) {
        for (int b = 0; b < o->problems_per_step; b++)
            batch[b] = &set->problems[use[orc_rng_below(&rng, (uint32_t)n_use)]];
        orc_optim_zero_grad(opt);
        int n_groups = 0;
        orc_tensor *loss = orc_value_loss(&ctx, v, batch, o->problems_per_step, o->objective, &n_groups);
        if (loss || ctx.err.code != ORC_EINVAL) { /* EINVAL: a batch with nothing to learn, the step is skipped */
            if (!loss || orc_backward(&ctx, loss) != ORC_OK) {
                st = orc_error_set(err, ctx.err.code ? ctx.err.code : ORC_EINVAL, "value training: step %d: %s", step,
                                   orc_ctx_message(&ctx));
                break;
            }
            const double l = orc_f32(loss)[0];
            orc_optim_clip_grad_norm(opt, 1.0);
            st = orc_optim_step(opt, orc_lr_at(&sched, step), err);
            if (step >= o->steps - 10) {
                tail += l;
                tail_n++;
            }
            if (!o->quiet && (step % 10 == 0 || step == o->steps - 1))
                fprintf(stderr, "value step %d/%d  loss %.4f  groups %d  lr %.2e\n", step + 1, o->steps, l, n_groups,
                        (double)orc_lr_at(&sched, step));
        }
        orc_ctx_reset(&ctx);
        const bool eval_now = o->eval_every > 0 && (step + 1) % o->eval_every == 0;
        if (st == ORC_OK && validate && (eval_now || step == o->steps - 1))
            st = value_validate(v, o, step + 1, best_buf, &best_loss, &best_step, &best, err);
    }
    if (st == ORC_OK && validate) {
        if (o->keep_best) value_copy(v, best_buf, false);
        if (o->val_report) *o->val_report = best;
        if (o->val_step) *o->val_step = best_step;
        if (!o->quiet && o->keep_best)
            fprintf(stderr, "value training: keeping the weights of step %d (held-out %s %.4f)\n", best_step,
                    o->keep_by_pairs ? "right > wrong" : "twist loss", o->keep_by_pairs ? -best_loss : best_loss);
    }
    free(best_buf);
    if (final_loss) *final_loss = tail_n ? tail / tail_n : NAN;
    free(batch);
    free(use);
    orc_arena_destroy(arena);
    orc_optim_free(opt);
    return st;
}
