/* IFPruning's models (see orchard/ifprune.h): the mask predictor (a small
 * causal LM plus a two-layer mask head), the masked forward of the large LM
 * (the LM's own forward, rebuilt from its public pieces, with each layer's
 * SwiGLU output multiplied by a per-sequence channel mask), the hard
 * selection at inference, the gather of the chosen channels into a compact
 * dense orc_llm, the IFPruning directory format, and the mask-overlap
 * diagnostic. Training lives in train.c, the study in study.c. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "orchard/fileio.h"
#include "orchard/ifprune.h"
#include "orchard/ops.h"
#include "orchard/rng.h"
#include "orchard/safetensors.h"

/* ---- configuration ------------------------------------------------------------- */

void orc_ifp_config_default(orc_ifp_config *c, const orc_llm_config *lm) {
    memset(c, 0, sizeof *c);
    c->temperature = 0.5;
    c->proj_dim = 128;
    /* AdamW moves every parameter by about lr per step whatever its gradient's
     * scale, so at the LM's rate the mask head's instruction-independent part
     * (what every prompt wants) takes over within tens of steps and the masks
     * collapse to one set (measured in docs/ifprune.md); a tenth keeps them
     * instruction-dependent. */
    c->lr_mult = 0.1;
    if (lm) {
        c->lm_layers = lm->num_hidden_layers;
        c->lm_ffn = lm->intermediate_size;
        c->lm_vocab = lm->vocab_size;
        c->k = lm->intermediate_size / 3 > 0 ? lm->intermediate_size / 3 : 1;
    }
}

orc_status orc_ifp_config_check(const orc_ifp_config *c, orc_error *err) {
    if (c->lm_ffn <= 0 || c->lm_layers <= 0)
        return orc_error_set(err, ORC_EINVAL, "ifprune: lm_layers = %lld and lm_ffn = %lld must be positive",
                             (long long)c->lm_layers, (long long)c->lm_ffn);
    if (c->k < 1 || c->k > c->lm_ffn)
        return orc_error_set(err, ORC_EINVAL, "ifprune: k = %lld active channels must be in [1, %lld] (the LM's FFN "
                             "width intermediate_size)", (long long)c->k, (long long)c->lm_ffn);
    if (!(c->temperature > 0) || !isfinite(c->temperature))
        return orc_error_set(err, ORC_EINVAL, "ifprune: temperature = %g must be positive", c->temperature);
    if (c->proj_dim < 1 || c->proj_dim > 65536)
        return orc_error_set(err, ORC_EINVAL, "ifprune: proj_dim = %lld must be in [1, 65536]", (long long)c->proj_dim);
    if (!(c->lr_mult > 0) || !isfinite(c->lr_mult))
        return orc_error_set(err, ORC_EINVAL, "ifprune: lr_mult = %g must be positive", c->lr_mult);
    return ORC_OK;
}

void orc_ifp_predictor_config_default(orc_llm_config *pc, const orc_llm_config *lm) {
    orc_llm_config_default(pc);
    int64_t h = lm->hidden_size < 128 ? lm->hidden_size : 128;
    h = h / 8 * 8; /* 4 heads with an even head_dim */
    if (h < 8) h = 8;
    pc->hidden_size = h;
    pc->num_hidden_layers = 2;
    pc->num_attention_heads = 4;
    pc->num_key_value_heads = 4;
    pc->head_dim = h / 4;
    pc->intermediate_size = 2 * h;
    pc->vocab_size = lm->vocab_size;
    pc->max_position_embeddings = lm->max_position_embeddings;
    pc->rope_theta = lm->rope_theta;
    pc->rms_norm_eps = lm->rms_norm_eps;
    pc->tie_word_embeddings = true;
    pc->bos_token_id = lm->bos_token_id;
    pc->eos_token_id = lm->eos_token_id;
}

/* ---- the predictor ----------------------------------------------------------------- */

void orc_ifp_predictor_free(orc_ifp_predictor *p) {
    if (!p) return;
    orc_llm_free(p->lm);
    orc_arena_destroy(p->arena);
    free(p);
}

orc_ifp_predictor *orc_ifp_predictor_create(const orc_llm_config *pc, const orc_ifp_config *cfg,
                                            const orc_llm_config *lm, bool with_grad, orc_error *err) {
    if (pc->vocab_size != lm->vocab_size) {
        orc_error_set(err, ORC_EINVAL, "ifprune: the predictor's vocab_size %lld does not match the LM's %lld; both "
                      "must read the LM's tokenizer", (long long)pc->vocab_size, (long long)lm->vocab_size);
        return NULL;
    }
    orc_ifp_config c = *cfg;
    c.lm_layers = lm->num_hidden_layers;
    c.lm_ffn = lm->intermediate_size;
    c.lm_vocab = lm->vocab_size;
    if (orc_ifp_config_check(&c, err) != ORC_OK) return NULL;
    orc_ifp_predictor *p = calloc(1, sizeof *p);
    if (!p) {
        orc_error_set(err, ORC_ENOMEM, "ifprune: out of memory");
        return NULL;
    }
    p->cfg = c;
    p->lm = orc_llm_create(pc, with_grad, err);
    if (!p->lm) {
        orc_ifp_predictor_free(p);
        return NULL;
    }
    const int64_t P = c.proj_dim, H = pc->hidden_size, LF = c.lm_layers * c.lm_ffn;
    p->arena = orc_arena_create((size_t)(P * H + P + LF * P + LF) * sizeof(float) * (with_grad ? 2 : 1) +
                                ((size_t)1 << 20));
    if (!p->arena) {
        orc_error_set(err, ORC_ENOMEM, "ifprune: out of memory for the mask head");
        orc_ifp_predictor_free(p);
        return NULL;
    }
    const char *names[4] = {"mask_head.proj.weight", "mask_head.proj.bias", "mask_head.out.weight",
                            "mask_head.out.bias"};
    const int nds[4] = {2, 1, 2, 1};
    const int64_t shapes[4][2] = {{P, H}, {P, 1}, {LF, P}, {LF, 1}};
    for (int i = 0; i < 4; i++) {
        orc_tensor *t;
        if (with_grad) {
            t = orc_param_new(p->arena, nds[i], shapes[i], names[i], err);
        } else {
            t = orc_tensor_zeros(p->arena, ORC_F32, nds[i], shapes[i], err);
            if (t) {
                t->is_param = true;
                t->name = orc_arena_strdup(p->arena, names[i]);
            }
        }
        if (!t) {
            orc_ifp_predictor_free(p);
            return NULL;
        }
        p->params[i] = t;
    }
    p->proj_w = p->params[0];
    p->proj_b = p->params[1];
    p->out_w = p->params[2];
    p->out_b = p->params[3];
    return p;
}

void orc_ifp_predictor_init(orc_ifp_predictor *p, uint64_t seed) {
    orc_llm_init_weights(p->lm, seed);
    orc_rng r;
    orc_rng_init(&r, seed ^ 0x6966707275ull); /* a stream apart from the backbone's */
    /* Fan-in scaling keeps the scores O(1) and distinct across channels from
     * the start, so the first top-k sets differ between instructions. */
    const float s1 = 1.0f / sqrtf((float)p->proj_w->shape[1]), s2 = 1.0f / sqrtf((float)p->out_w->shape[1]);
    orc_rng_fill_normal(&r, orc_f32(p->proj_w), p->proj_w->numel, 0.0f, s1);
    orc_rng_fill_normal(&r, orc_f32(p->out_w), p->out_w->numel, 0.0f, s2);
    orc_fill(p->proj_b, 0.0f);
    orc_fill(p->out_b, 0.0f);
}

orc_status orc_ifp_check_match(const orc_ifp_predictor *p, const orc_llm_config *lm, orc_error *err) {
    const orc_ifp_config *c = &p->cfg;
    if (p->lm->cfg.vocab_size != lm->vocab_size || c->lm_vocab != lm->vocab_size)
        return orc_error_set(err, ORC_EINVAL, "ifprune: the predictor's vocab_size %lld does not match the LM's %lld",
                             (long long)p->lm->cfg.vocab_size, (long long)lm->vocab_size);
    if (c->lm_layers != lm->num_hidden_layers)
        return orc_error_set(err, ORC_EINVAL, "ifprune: the predictor was built for %lld layers but the LM has "
                             "num_hidden_layers = %lld", (long long)c->lm_layers, (long long)lm->num_hidden_layers);
    if (c->lm_ffn != lm->intermediate_size)
        return orc_error_set(err, ORC_EINVAL, "ifprune: the predictor was built for FFN width %lld but the LM has "
                             "intermediate_size = %lld", (long long)c->lm_ffn, (long long)lm->intermediate_size);
    if (c->k < 1 || c->k > lm->intermediate_size)
        return orc_error_set(err, ORC_EINVAL, "ifprune: k = %lld must be in [1, %lld] (the LM's intermediate_size)",
                             (long long)c->k, (long long)lm->intermediate_size);
    return ORC_OK;
}

orc_tensor *orc_ifp_scores(orc_ctx *ctx, orc_ifp_predictor *p, orc_tensor *ids, const int32_t *lens) {
    orc_tensor *h = orc_llm_hidden(ctx, p->lm, ids, NULL);
    if (!h) return NULL;
    const int64_t B = ids->shape[0], T = ids->shape[1], D = p->lm->cfg.hidden_size;
    orc_tensor *last = orc_new(ctx, ORC_I32, 1, ORC_SHAPE(B));
    if (!last) return NULL;
    for (int64_t b = 0; b < B; b++) {
        if (lens[b] < 1 || lens[b] > T)
            return orc_fail(ctx, ORC_EINVAL, "ifprune predictor: instruction %lld has length %d, outside [1, %lld]",
                            (long long)b, lens[b], (long long)T);
        orc_i32(last)[b] = (int32_t)(b * T + lens[b] - 1);
    }
    orc_tensor *hl = orc_index_select(ctx, orc_reshape(ctx, h, 2, ORC_SHAPE(B * T, D)), last);
    orc_tensor *z = orc_linear(ctx, orc_linear(ctx, hl, p->proj_w, p->proj_b), p->out_w, p->out_b);
    return orc_reshape(ctx, z, 3, ORC_SHAPE(B, p->cfg.lm_layers, p->cfg.lm_ffn));
}

orc_tensor *orc_ifp_mask(orc_ctx *ctx, orc_ifp_predictor *p, orc_tensor *ids, const int32_t *lens) {
    return orc_soft_topk(ctx, orc_ifp_scores(ctx, p, ids, lens), p->cfg.k, (float)p->cfg.temperature);
}

orc_tensor *orc_ifp_balance_loss(orc_ctx *ctx, orc_tensor *mask, int64_t k) {
    if (!mask || mask->ndim != 3 || k < 1 || k > mask->shape[2])
        return orc_fail(ctx, ORC_EINVAL, "ifprune balance loss: needs masks [B, L, F] and 1 <= k <= F");
    const double L = (double)mask->shape[1];
    /* Each row's mask at unit RMS first, so the term cannot fall by shrinking
     * every soft value (the LM would undo that through its down projection). */
    orc_tensor *unit = orc_rmsnorm(ctx, mask, NULL, 1e-12f);
    orc_tensor *usage = orc_mean(ctx, unit, 0, false);
    return orc_scale(ctx, orc_sum_all(ctx, orc_mul(ctx, usage, usage)), (float)(1.0 / ((double)k * L)));
}

/* ---- the masked LM ------------------------------------------------------------------ */

orc_tensor *orc_ifp_lm_hidden(orc_ctx *ctx, orc_llm *m, orc_tensor *ids, orc_tensor *mask, orc_llm_cache *cache) {
    const orc_llm_config *c = &m->cfg;
    orc_tensor *pos = orc_llm_positions(ctx, c, ids, cache, "ifprune lm");
    if (!pos) return NULL;
    const int64_t B = ids->shape[0], T = ids->shape[1], L = c->num_hidden_layers, F = c->intermediate_size;
    if (mask && (mask->ndim != 3 || mask->shape[0] != B || mask->shape[1] != L || mask->shape[2] != F)) {
        char s[96];
        return orc_fail(ctx, ORC_ESHAPE, "ifprune lm: the mask must be [%lld, %lld, %lld] (batch, layers, FFN), got %s",
                        (long long)B, (long long)L, (long long)F, orc_shape_str(s, sizeof s, mask->ndim, mask->shape));
    }
    const float eps = (float)c->rms_norm_eps;
    orc_tensor *h = orc_embedding(ctx, m->embed, ids);
    for (int64_t l = 0; l < L; l++) {
        const orc_llm_layer *y = &m->layers[l];
        orc_tensor *x = orc_rmsnorm(ctx, h, y->attn_norm, eps);
        orc_tensor *att = orc_llm_attend(ctx, c, l, orc_linear(ctx, x, y->wq, NULL), orc_linear(ctx, x, y->wk, NULL),
                                         orc_linear(ctx, x, y->wv, NULL), y->q_norm, y->k_norm, pos, cache);
        h = orc_add(ctx, h, orc_linear(ctx, att, y->wo, NULL));
        x = orc_rmsnorm(ctx, h, y->ffn_norm, eps);
        orc_tensor *mid = orc_swiglu(ctx, orc_linear(ctx, x, y->w_gate, NULL), orc_linear(ctx, x, y->w_up, NULL));
        /* [B, T, F] * [B, 1, F]: one mask per sequence, the same at every position. */
        if (mask) mid = orc_mul(ctx, mid, orc_contiguous(ctx, orc_slice(ctx, mask, 1, l, 1)));
        h = orc_add(ctx, h, orc_linear(ctx, mid, y->w_down, NULL));
    }
    h = orc_rmsnorm(ctx, h, m->norm, eps);
    if (cache && orc_ctx_ok(ctx)) cache->len += T;
    return h;
}

orc_tensor *orc_ifp_lm_forward(orc_ctx *ctx, orc_llm *m, orc_tensor *ids, orc_tensor *mask, orc_llm_cache *cache) {
    return orc_linear(ctx, orc_ifp_lm_hidden(ctx, m, ids, mask, cache), m->lm_head, NULL);
}

/* ---- inference selection -------------------------------------------------------------- */

orc_status orc_ifp_encode_instruction(const orc_tokenizer *tok, const char *instruction, int64_t max_len,
                                      int32_t **ids, size_t *n, orc_error *err) {
    *ids = NULL;
    *n = 0;
    bool blank = true;
    for (const char *s = instruction ? instruction : ""; *s; s++)
        if (!isspace((unsigned char)*s)) blank = false;
    if (blank)
        return orc_error_set(err, ORC_EINVAL, "ifprune: the instruction is empty; the mask predictor needs an "
                             "instruction (or task description) to read");
    int32_t *t = NULL;
    size_t m = 0;
    orc_status st = orc_tokenizer_encode(tok, instruction, strlen(instruction), 0, &t, &m, err);
    if (st != ORC_OK) return st;
    int32_t bos = orc_tokenizer_special_id(tok, ORC_TOK_BEGIN_OF_TEXT);
    size_t total = m + (bos >= 0);
    if (max_len > 0 && total > (size_t)max_len) total = (size_t)max_len;
    int32_t *out = malloc(sizeof(int32_t) * (total ? total : 1));
    if (!out) {
        free(t);
        return orc_error_set(err, ORC_ENOMEM, "ifprune: out of memory");
    }
    size_t j = 0;
    if (bos >= 0 && j < total) out[j++] = bos;
    for (size_t i = 0; j < total; i++) out[j++] = t[i];
    free(t);
    *ids = out;
    *n = total;
    return ORC_OK;
}

typedef struct {
    int32_t i;
    float v;
} idx_val;

static int by_index(const void *a, const void *b) {
    const idx_val *x = a, *y = b;
    return (x->i > y->i) - (x->i < y->i);
}

orc_status orc_ifp_select(orc_ifp_predictor *p, const orc_tokenizer *tok, const char *instruction, int32_t *idx,
                          float *vals, orc_error *err) {
    int32_t *ids = NULL;
    size_t n = 0;
    orc_status st = orc_ifp_encode_instruction(tok, instruction, p->lm->cfg.max_position_embeddings, &ids, &n, err);
    if (st != ORC_OK) return st;
    orc_arena *a = orc_arena_create(0);
    if (!a) {
        free(ids);
        return orc_error_set(err, ORC_ENOMEM, "ifprune: out of memory");
    }
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 0);
    orc_set_no_grad(&ctx, true);
    const int64_t L = p->cfg.lm_layers, F = p->cfg.lm_ffn, k = p->cfg.k;
    int32_t len = (int32_t)n;
    orc_tensor *t = orc_tensor_wrap(a, ORC_I32, 2, ORC_SHAPE(1, (int64_t)n), ids, &ctx.err);
    orc_tensor *z = t ? orc_ifp_scores(&ctx, p, t, &len) : NULL;
    orc_tensor *soft = orc_soft_topk(&ctx, z, k, (float)p->cfg.temperature);
    orc_tensor *v = NULL, *ix = NULL;
    if (soft) orc_topk(&ctx, z, k, &v, &ix);
    if (!orc_ctx_ok(&ctx) || !ix) {
        st = orc_error_set(err, ctx.err.code != ORC_OK ? ctx.err.code : ORC_EINVAL, "ifprune predictor: %s",
                           orc_ctx_message(&ctx));
    } else {
        idx_val *row = malloc(sizeof *row * (size_t)k);
        if (!row) st = orc_error_set(err, ORC_ENOMEM, "ifprune: out of memory");
        for (int64_t l = 0; l < L && row; l++) {
            for (int64_t j = 0; j < k; j++) {
                row[j].i = orc_i32(ix)[l * k + j];
                row[j].v = orc_f32(soft)[l * F + row[j].i];
            }
            qsort(row, (size_t)k, sizeof *row, by_index);
            for (int64_t j = 0; j < k; j++) {
                idx[l * k + j] = row[j].i;
                if (vals) vals[l * k + j] = row[j].v;
            }
        }
        free(row);
    }
    orc_arena_destroy(a);
    free(ids);
    return st;
}

/* ---- gather to a compact dense model ------------------------------------------------- */

orc_llm *orc_ifp_compact(const orc_llm *m, const int32_t *idx, const float *vals, int64_t k, orc_error *err) {
    const orc_llm_config *c = &m->cfg;
    const int64_t L = c->num_hidden_layers, F = c->intermediate_size, D = c->hidden_size;
    if (k < 1 || k > F) {
        orc_error_set(err, ORC_EINVAL, "ifprune compact: k = %lld must be in [1, %lld] (the LM's intermediate_size)",
                      (long long)k, (long long)F);
        return NULL;
    }
    uint8_t *seen = calloc((size_t)F, 1);
    if (!seen) {
        orc_error_set(err, ORC_ENOMEM, "ifprune compact: out of memory");
        return NULL;
    }
    for (int64_t l = 0; l < L; l++) {
        memset(seen, 0, (size_t)F);
        for (int64_t j = 0; j < k; j++) {
            int32_t i = idx[l * k + j];
            if (i < 0 || i >= F || seen[i]) {
                orc_error_set(err, ORC_EINVAL, "ifprune compact: layer %lld channel %d is %s", (long long)l, i,
                              i < 0 || i >= F ? "outside the FFN width" : "chosen twice");
                free(seen);
                return NULL;
            }
            seen[i] = 1;
        }
    }
    free(seen);
    orc_llm_config cc = *c;
    cc.intermediate_size = k;
    orc_llm *o = orc_llm_create(&cc, false, err);
    if (!o) return NULL;
    for (int i = 0; i < o->n_params; i++) {
        orc_tensor *dst = o->params[i];
        if (strstr(dst->name, ".mlp.")) continue;
        const orc_tensor *src = orc_llm_param(m, dst->name);
        if (!src || src->numel != dst->numel) {
            orc_error_set(err, ORC_EINVAL, "ifprune compact: tensor %s is missing in the source model", dst->name);
            orc_llm_free(o);
            return NULL;
        }
        orc_read_f32(src, orc_f32(dst));
    }
    for (int64_t l = 0; l < L; l++) {
        const orc_llm_layer *s = &m->layers[l];
        orc_llm_layer *d = &o->layers[l];
        const float *g = orc_f32(s->w_gate), *u = orc_f32(s->w_up), *w = orc_f32(s->w_down);
        float *gc = orc_f32(d->w_gate), *uc = orc_f32(d->w_up), *wc = orc_f32(d->w_down);
        for (int64_t j = 0; j < k; j++) {
            const int64_t i = idx[l * k + j];
            memcpy(gc + j * D, g + i * D, sizeof(float) * (size_t)D);
            memcpy(uc + j * D, u + i * D, sizeof(float) * (size_t)D);
        }
        for (int64_t r = 0; r < D; r++)
            for (int64_t j = 0; j < k; j++) {
                const int64_t i = idx[l * k + j];
                wc[r * k + j] = vals ? w[r * F + i] * vals[l * k + j] : w[r * F + i];
            }
    }
    return o;
}

/* ---- directories ----------------------------------------------------------------------- */

/* A path too long for the buffer is cut; opening it then fails with a message naming it. */
static void join(char *out, size_t cap, const char *dir, const char *file) {
    if (snprintf(out, cap, "%s/%s", dir, file) >= (int)cap) out[cap - 1] = '\0';
}

void orc_ifp_model_free(orc_ifp_model *m) {
    if (!m) return;
    orc_llm_free(m->lm);
    orc_tokenizer_free(m->tok);
    orc_ifp_predictor_free(m->pred);
    free(m);
}

static orc_status save_predictor(const char *dir, const orc_ifp_predictor *p, orc_error *err) {
    char path[4096];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "%s: cannot create the directory: %s", dir, strerror(errno));
    join(path, sizeof path, dir, "config.json");
    orc_status st = orc_llm_config_save(path, &p->lm->cfg, err);
    if (st != ORC_OK) return st;
    const int n = p->lm->n_params + 4;
    orc_st_entry *e = calloc((size_t)n, sizeof *e);
    if (!e) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", dir);
    for (int i = 0; i < n && st == ORC_OK; i++) {
        const orc_tensor *t = i < p->lm->n_params ? p->lm->params[i] : p->params[i - p->lm->n_params];
        st = orc_st_entry_from_tensor(&e[i], t->name, t, ORC_ST_F32, err);
    }
    const orc_st_kv meta[] = {{"format", "pt"}, {"producer", "orchard-ifprune"}};
    join(path, sizeof path, dir, "model.safetensors");
    if (st == ORC_OK) st = orc_st_write(path, e, (size_t)n, meta, 2, err);
    free(e);
    return st;
}

orc_status orc_ifp_save(const char *dir, const orc_llm *lm, const orc_tokenizer *tok, const orc_ifp_predictor *p,
                        orc_error *err) {
    orc_status st = orc_llm_save(lm, dir, err);
    char path[4096];
    join(path, sizeof path, dir, "tokenizer.json");
    if (st == ORC_OK && tok) st = orc_tokenizer_save(tok, path, err);
    if (st != ORC_OK || !p) return st;
    join(path, sizeof path, dir, "predictor");
    st = save_predictor(path, p, err);
    if (st != ORC_OK) return st;
    const orc_ifp_config *c = &p->cfg;
    json_t *j = json_pack("{s:I, s:f, s:I, s:I, s:I, s:I, s:f, s:I}", "k", (json_int_t)c->k, "temperature",
                          c->temperature, "proj_dim", (json_int_t)c->proj_dim, "lm_layers", (json_int_t)c->lm_layers,
                          "lm_ffn", (json_int_t)c->lm_ffn, "lm_vocab", (json_int_t)c->lm_vocab, "lr_mult",
                          c->lr_mult, "step", (json_int_t)c->step);
    char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!text) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", dir);
    join(path, sizeof path, dir, "ifprune.json");
    size_t len = strlen(text);
    st = orc_write_file_atomic(path, text, len, "ifprune", err);
    free(text);
    return st;
}

static orc_status read_ifp_json(const char *path, orc_ifp_config *c, orc_error *err) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return orc_error_set(err, ORC_EIO, "%s: cannot read an IFPruning config: %s", path, je.text);
    orc_status st = ORC_OK;
    const char *ints[] = {"k", "proj_dim", "lm_layers", "lm_ffn", "lm_vocab", "step"};
    int64_t *iv[] = {&c->k, &c->proj_dim, &c->lm_layers, &c->lm_ffn, &c->lm_vocab, &c->step};
    for (int i = 0; i < 6 && st == ORC_OK; i++) {
        json_t *v = json_object_get(j, ints[i]);
        if (!json_is_integer(v)) st = orc_error_set(err, ORC_EFORMAT, "%s: \"%s\" must be an integer", path, ints[i]);
        else *iv[i] = (int64_t)json_integer_value(v);
    }
    const char *reals[] = {"temperature", "lr_mult"};
    double *rv[] = {&c->temperature, &c->lr_mult};
    for (int i = 0; i < 2 && st == ORC_OK; i++) {
        json_t *v = json_object_get(j, reals[i]);
        if (!json_is_number(v)) st = orc_error_set(err, ORC_EFORMAT, "%s: \"%s\" must be a number", path, reals[i]);
        else *rv[i] = json_number_value(v);
    }
    json_decref(j);
    return st;
}

orc_ifp_model *orc_ifp_load(const char *dir, bool with_grad, orc_error *err) {
    char path[4096], pdir[4096];
    orc_ifp_model *m = calloc(1, sizeof *m);
    if (!m) {
        orc_error_set(err, ORC_ENOMEM, "ifprune: out of memory");
        return NULL;
    }
    orc_ifp_config c;
    orc_ifp_config_default(&c, NULL);
    orc_llm_config pc;
    join(path, sizeof path, dir, "ifprune.json");
    join(pdir, sizeof pdir, dir, "predictor/config.json");
    if (!(m->lm = orc_llm_load(dir, with_grad, err)) || !(m->tok = orc_tokenizer_load(dir, err)) ||
        read_ifp_json(path, &c, err) != ORC_OK || orc_llm_config_load(pdir, &pc, err) != ORC_OK)
        goto fail;
    if ((int64_t)orc_tokenizer_vocab_size(m->tok) > m->lm->cfg.vocab_size) {
        orc_error_set(err, ORC_EINVAL, "%s: the tokenizer has %zu ids but the LM's vocab_size is %lld", dir,
                      orc_tokenizer_vocab_size(m->tok), (long long)m->lm->cfg.vocab_size);
        goto fail;
    }
    /* The recorded LM shape must be this LM's before the head is sized by it. */
    orc_ifp_predictor probe = {.cfg = c};
    orc_llm_config lm_as_built = m->lm->cfg;
    orc_llm probe_lm = {.cfg = pc};
    probe.lm = &probe_lm;
    orc_error local = {0};
    if (orc_ifp_check_match(&probe, &lm_as_built, &local) != ORC_OK) {
        orc_error_set(err, local.code, "%s: %s", dir, local.msg);
        goto fail;
    }
    if (!(m->pred = orc_ifp_predictor_create(&pc, &c, &m->lm->cfg, with_grad, err))) goto fail;
    join(path, sizeof path, dir, "predictor/model.safetensors");
    orc_st_file *f = orc_st_open(path, err);
    if (!f) goto fail;
    orc_status st = ORC_OK;
    for (int i = 0; i < m->pred->lm->n_params + 4 && st == ORC_OK; i++) {
        orc_tensor *t = i < m->pred->lm->n_params ? m->pred->lm->params[i] : m->pred->params[i - m->pred->lm->n_params];
        st = orc_st_read_into(f, t->name, t, err);
    }
    orc_st_close(f);
    if (st != ORC_OK) goto fail;
    return m;
fail:
    orc_ifp_model_free(m);
    return NULL;
}

/* ---- diagnostics ------------------------------------------------------------------------ */

orc_status orc_ifp_overlap(orc_ifp_predictor *p, const orc_tokenizer *tok, const char *const *instructions,
                           const int *groups, int n, double *same, double *diff, bool *all_equal, orc_error *err) {
    const int64_t L = p->cfg.lm_layers, F = p->cfg.lm_ffn, k = p->cfg.k;
    if (n < 2) return orc_error_set(err, ORC_EINVAL, "ifprune overlap: needs at least 2 instructions, got %d", n);
    uint8_t *sets = calloc((size_t)n * (size_t)(L * F), 1);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(L * k));
    if (!sets || !idx) {
        free(sets);
        free(idx);
        return orc_error_set(err, ORC_ENOMEM, "ifprune overlap: out of memory");
    }
    orc_status st = ORC_OK;
    for (int i = 0; i < n && st == ORC_OK; i++) {
        st = orc_ifp_select(p, tok, instructions[i], idx, NULL, err);
        for (int64_t l = 0; l < L && st == ORC_OK; l++)
            for (int64_t j = 0; j < k; j++) sets[(size_t)i * (size_t)(L * F) + (size_t)(l * F + idx[l * k + j])] = 1;
    }
    if (st == ORC_OK) {
        *all_equal = true;
        for (int i = 1; i < n; i++)
            if (memcmp(sets, sets + (size_t)i * (size_t)(L * F), (size_t)(L * F)) != 0) *all_equal = false;
        for (int64_t l = 0; l < L; l++) {
            double s_sum = 0, d_sum = 0;
            int64_t s_n = 0, d_n = 0;
            for (int a = 0; a < n; a++)
                for (int b = a + 1; b < n; b++) {
                    const uint8_t *x = sets + (size_t)a * (size_t)(L * F) + (size_t)(l * F);
                    const uint8_t *y = sets + (size_t)b * (size_t)(L * F) + (size_t)(l * F);
                    int64_t inter = 0;
                    for (int64_t f = 0; f < F; f++) inter += x[f] & y[f];
                    const double jac = (double)inter / (double)(2 * k - inter);
                    if (groups[a] == groups[b]) s_sum += jac, s_n++;
                    else d_sum += jac, d_n++;
                }
            same[l] = s_n ? s_sum / (double)s_n : NAN;
            diff[l] = d_n ? d_sum / (double)d_n : NAN;
        }
    }
    free(sets);
    free(idx);
    return st;
}
