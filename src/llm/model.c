/* The decoder LM: parameters, initialisation, checkpoints in the Hugging
 * Face Llama layout, the KV cache and the forward pass (see orchard/llm.h).
 * The forward pass is written once with the public ops; training records it
 * on the tape, inference runs it in no-grad mode with a cache. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "orchard/llm.h"
#include "orchard/lora.h"
#include "orchard/moe.h"
#include "orchard/ops.h"
#include "orchard/safetensors.h"

/* ---- parameters ------------------------------------------------------------ */

static orc_tensor *new_weight(orc_llm *m, bool with_grad, int ndim, const int64_t *shape, const char *name,
                              orc_error *err) {
    orc_tensor *t;
    if (with_grad) {
        t = orc_param_new(m->arena, ndim, shape, name, err);
    } else {
        t = orc_tensor_zeros(m->arena, ORC_F32, ndim, shape, err);
        if (t) {
            t->is_param = true;
            t->name = orc_arena_strdup(m->arena, name);
        }
    }
    if (t) m->params[m->n_params++] = t;
    return t;
}

/* Layer l's router [E, D] (mlp.gate.weight) and batched experts (docs/moe.md). */
static bool moe_create(orc_llm *m, int64_t l, bool with_grad, orc_error *err) {
    const orc_llm_config *c = &m->cfg;
    const int64_t E = c->num_experts, D = c->hidden_size;
    const int64_t Fe = c->moe_intermediate_size > 0 ? c->moe_intermediate_size : c->intermediate_size;
    orc_moe_layer *y = orc_arena_calloc(m->arena, 1, sizeof *y);
    int64_t *pe = orc_arena_calloc(m->arena, (size_t)E, sizeof *pe);
    if (!y || !pe) {
        orc_error_set(err, ORC_ENOMEM, "model: out of memory for layer %lld's experts", (long long)l);
        return false;
    }
    char name[128];
#define MW(field, nd, shp, fmt)                                                  \
    snprintf(name, sizeof name, fmt, (long long)l);                              \
    if (!(y->field = new_weight(m, with_grad, nd, shp, name, err))) return false;
    MW(router, 2, ORC_SHAPE(E, D), "model.layers.%lld.mlp.gate.weight")
    MW(w_gate, 3, ORC_SHAPE(E, Fe, D), "model.layers.%lld.mlp.experts.gate_proj.weight")
    MW(w_up, 3, ORC_SHAPE(E, Fe, D), "model.layers.%lld.mlp.experts.up_proj.weight")
    MW(w_down, 3, ORC_SHAPE(E, D, Fe), "model.layers.%lld.mlp.experts.down_proj.weight")
#undef MW
    y->stats.per_expert = pe;
    y->stats.n_experts = E;
    m->layers[l].moe = y;
    return true;
}

void orc_llm_moe_stats_reset(orc_llm *m) {
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++) orc_moe_layer_stats_reset(m->layers[l].moe);
}

orc_llm *orc_llm_create(const orc_llm_config *cfg, bool with_grad, orc_error *err) {
    if (orc_llm_config_validate(cfg, err) != ORC_OK) return NULL;
    orc_llm *m = calloc(1, sizeof *m);
    if (!m) {
        orc_error_set(err, ORC_ENOMEM, "model: out of memory");
        return NULL;
    }
    m->cfg = *cfg;
    const int64_t L = cfg->num_hidden_layers, D = cfg->hidden_size, hd = cfg->head_dim;
    const int64_t Hq = cfg->num_attention_heads, Hkv = cfg->num_key_value_heads, F = cfg->intermediate_size;
    const int64_t V = cfg->vocab_size;
    size_t bytes = (size_t)orc_llm_config_num_params(cfg) * sizeof(float) * (with_grad ? 2 : 1);
    m->arena = orc_arena_create(bytes + ((size_t)4 << 20));
    m->layers = calloc((size_t)L, sizeof *m->layers);
    m->params = calloc((size_t)(L * 12 + 3), sizeof *m->params); /* a MoE layer has 12 */
    if (!m->arena || !m->layers || !m->params) {
        orc_error_set(err, ORC_ENOMEM, "model: out of memory for %lld parameters",
                      (long long)orc_llm_config_num_params(cfg));
        orc_llm_free(m);
        return NULL;
    }
    char name[128];
    bool ok = (m->embed = new_weight(m, with_grad, 2, ORC_SHAPE(V, D), "model.embed_tokens.weight", err)) != NULL;
    for (int64_t l = 0; l < L && ok; l++) {
        orc_llm_layer *y = &m->layers[l];
#define W(field, nd, shp, fmt)                                                   \
    snprintf(name, sizeof name, fmt, (long long)l);                              \
    ok = ok && (y->field = new_weight(m, with_grad, nd, shp, name, err)) != NULL;
        W(attn_norm, 1, ORC_SHAPE(D), "model.layers.%lld.input_layernorm.weight")
        W(wq, 2, ORC_SHAPE(Hq * hd, D), "model.layers.%lld.self_attn.q_proj.weight")
        W(wk, 2, ORC_SHAPE(Hkv * hd, D), "model.layers.%lld.self_attn.k_proj.weight")
        W(wv, 2, ORC_SHAPE(Hkv * hd, D), "model.layers.%lld.self_attn.v_proj.weight")
        W(wo, 2, ORC_SHAPE(D, Hq * hd), "model.layers.%lld.self_attn.o_proj.weight")
        if (cfg->qk_norm) {
            W(q_norm, 1, ORC_SHAPE(hd), "model.layers.%lld.self_attn.q_norm.weight")
            W(k_norm, 1, ORC_SHAPE(hd), "model.layers.%lld.self_attn.k_norm.weight")
        }
        W(ffn_norm, 1, ORC_SHAPE(D), "model.layers.%lld.post_attention_layernorm.weight")
        if (orc_llm_layer_is_moe(cfg, l)) {
            ok = ok && moe_create(m, l, with_grad, err);
            continue;
        }
        W(w_gate, 2, ORC_SHAPE(F, D), "model.layers.%lld.mlp.gate_proj.weight")
        W(w_up, 2, ORC_SHAPE(F, D), "model.layers.%lld.mlp.up_proj.weight")
        W(w_down, 2, ORC_SHAPE(D, F), "model.layers.%lld.mlp.down_proj.weight")
#undef W
    }
    ok = ok && (m->norm = new_weight(m, with_grad, 1, ORC_SHAPE(D), "model.norm.weight", err)) != NULL;
    if (ok && cfg->tie_word_embeddings)
        m->lm_head = m->embed;
    else if (ok)
        ok = (m->lm_head = new_weight(m, with_grad, 2, ORC_SHAPE(V, D), "lm_head.weight", err)) != NULL;
    if (!ok) {
        orc_llm_free(m);
        return NULL;
    }
    return m;
}

void orc_llm_free(orc_llm *m) {
    if (!m) return;
    orc_arena_destroy(m->arena);
    free(m->layers);
    free(m->params);
    free(m);
}

orc_tensor *orc_llm_param(const orc_llm *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i]->name, name) == 0) return m->params[i];
    return NULL;
}

void orc_llm_init_weights(orc_llm *m, uint64_t seed) {
    orc_rng r;
    orc_rng_init(&r, seed);
    const float std = 0.02f, resid_std = std / sqrtf(2.0f * (float)m->cfg.num_hidden_layers);
    for (int i = 0; i < m->n_params; i++) {
        orc_tensor *t = m->params[i];
        const char *n = t->name;
        if (t->ndim == 1) {
            orc_fill(t, 1.0f); /* every 1-D parameter is a norm weight */
        } else if (strstr(n, "o_proj") || strstr(n, "down_proj")) {
            orc_rng_fill_normal(&r, orc_f32(t), t->numel, 0.0f, resid_std);
        } else {
            orc_rng_fill_normal(&r, orc_f32(t), t->numel, 0.0f, std);
        }
    }
}

/* ---- checkpoints ------------------------------------------------------------ */

static void join_path(char *out, size_t cap, const char *dir, const char *file) {
    snprintf(out, cap, "%s/%s", dir, file);
}

orc_llm *orc_llm_load(const char *dir, bool with_grad, orc_error *err) {
    char path[4096];
    orc_llm_config cfg;
    join_path(path, sizeof path, dir, "config.json");
    if (orc_llm_config_load(path, &cfg, err) != ORC_OK) return NULL;
    orc_llm *m = orc_llm_create(&cfg, with_grad, err);
    if (!m) return NULL;
    join_path(path, sizeof path, dir, "model.safetensors");
    orc_st_file *f = orc_st_open(path, err);
    if (!f) {
        orc_llm_free(m);
        return NULL;
    }
    for (int i = 0; i < m->n_params; i++) {
        if (orc_st_read_into(f, m->params[i]->name, m->params[i], err) != ORC_OK) {
            orc_st_close(f);
            orc_llm_free(m);
            return NULL;
        }
    }
    orc_st_close(f);
    return m;
}

orc_status orc_llm_save(const orc_llm *m, const char *dir, orc_error *err) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return orc_error_set(err, ORC_EIO, "%s: cannot create the directory: %s", dir, strerror(errno));
    char path[4096];
    join_path(path, sizeof path, dir, "config.json");
    orc_status st = orc_llm_config_save(path, &m->cfg, err);
    if (st != ORC_OK) return st;
    orc_st_entry *e = calloc((size_t)m->n_params, sizeof *e);
    if (!e) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory", dir);
    for (int i = 0; i < m->n_params && st == ORC_OK; i++)
        st = orc_st_entry_from_tensor(&e[i], m->params[i]->name, m->params[i], ORC_ST_F32, err);
    const orc_st_kv meta[] = {{"format", "pt"}, {"producer", "orchard"}};
    join_path(path, sizeof path, dir, "model.safetensors");
    if (st == ORC_OK) st = orc_st_write(path, e, (size_t)m->n_params, meta, 2, err);
    free(e);
    return st;
}

/* ---- KV cache ----------------------------------------------------------------- */

orc_llm_cache *orc_llm_cache_new(const orc_llm_config *cfg, int64_t batch, int64_t max_seq, orc_error *err) {
    if (batch <= 0 || max_seq <= 0) {
        orc_error_set(err, ORC_EINVAL, "kv cache: batch %lld and length %lld must be positive", (long long)batch,
                      (long long)max_seq);
        return NULL;
    }
    orc_llm_cache *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->batch = batch;
    c->max_seq = max_seq;
    c->n_layers = cfg->num_hidden_layers;
    c->n_kv_heads = cfg->num_key_value_heads;
    c->head_dim = cfg->head_dim;
    c->k = calloc((size_t)c->n_layers, sizeof *c->k);
    c->v = calloc((size_t)c->n_layers, sizeof *c->v);
    if (!c->k || !c->v) goto oom;
    size_t n = (size_t)(batch * max_seq * c->n_kv_heads * c->head_dim);
    for (int64_t l = 0; l < c->n_layers; l++) {
        c->k[l] = aligned_alloc(64, ((n * sizeof(float)) + 63) / 64 * 64);
        c->v[l] = aligned_alloc(64, ((n * sizeof(float)) + 63) / 64 * 64);
        if (!c->k[l] || !c->v[l]) goto oom;
    }
    return c;
oom:
    orc_error_set(err, ORC_ENOMEM, "kv cache: out of memory for batch %lld x %lld positions", (long long)batch,
                  (long long)max_seq);
    orc_llm_cache_free(c);
    return NULL;
}

void orc_llm_cache_free(orc_llm_cache *c) {
    if (!c) return;
    for (int64_t l = 0; l < c->n_layers; l++) {
        if (c->k) free(c->k[l]);
        if (c->v) free(c->v[l]);
    }
    free(c->k);
    free(c->v);
    free(c);
}

void orc_llm_cache_clear(orc_llm_cache *c) { c->len = 0; }

/* Copy this step's keys or values [B, T, Hkv, hd] into the cache at len and
 * return a view of the filled part [B, len + T, Hkv, hd]. */
static orc_tensor *cache_append(orc_ctx *ctx, orc_llm_cache *c, float *store, orc_tensor *x) {
    x = orc_contiguous(ctx, x);
    if (!x) return NULL;
    const int64_t B = x->shape[0], T = x->shape[1], row = c->n_kv_heads * c->head_dim;
    for (int64_t b = 0; b < B; b++)
        memcpy(store + (b * c->max_seq + c->len) * row, orc_f32(x) + b * T * row, sizeof(float) * (size_t)(T * row));
    orc_tensor *all = orc_tensor_wrap(ctx->arena, ORC_F32, 4, ORC_SHAPE(B, c->max_seq, c->n_kv_heads, c->head_dim),
                                      store, &ctx->err);
    return orc_slice(ctx, all, 1, 0, c->len + T);
}

/* ---- forward ------------------------------------------------------------------ */

/* A projection [B, T, H*hd] as heads [B, T, H, hd]; with pos, the config's
 * QK-norm (norm) and RoPE at pos, as queries and keys get them. */
static orc_tensor *heads(orc_ctx *ctx, const orc_llm_config *c, orc_tensor *x, int64_t H, orc_tensor *norm,
                         orc_tensor *pos) {
    if (!x) return NULL;
    x = orc_reshape(ctx, x, 4, ORC_SHAPE(x->shape[0], x->shape[1], H, c->head_dim));
    if (!pos) return x;
    if (c->qk_norm) x = orc_rmsnorm(ctx, x, norm, (float)c->rms_norm_eps);
    return orc_rope(ctx, x, pos, (float)c->rope_theta);
}

orc_tensor *orc_llm_attend(orc_ctx *ctx, const orc_llm_config *c, int64_t layer, orc_tensor *q, orc_tensor *k,
                           orc_tensor *v, orc_tensor *q_norm, orc_tensor *k_norm, orc_tensor *pos,
                           orc_llm_cache *cache) {
    if (!q) return NULL;
    const int64_t B = q->shape[0], T = q->shape[1], Hq = c->num_attention_heads;
    q = heads(ctx, c, q, Hq, q_norm, pos);
    k = heads(ctx, c, k, c->num_key_value_heads, k_norm, pos);
    v = heads(ctx, c, v, c->num_key_value_heads, NULL, NULL);
    if (cache && orc_ctx_ok(ctx)) {
        k = cache_append(ctx, cache, cache->k[layer], k);
        v = cache_append(ctx, cache, cache->v[layer], v);
    }
    orc_attn_opts opts = {.causal = true};
    return orc_reshape(ctx, orc_attention(ctx, q, k, v, &opts), 3, ORC_SHAPE(B, T, Hq * c->head_dim));
}

/* x @ w^T plus the active LoRA adapters' deltas for (layer l, target). */
static orc_tensor *proj(orc_ctx *ctx, const orc_llm *m, int64_t l, int target, orc_tensor *x, orc_tensor *w) {
    orc_tensor *y = orc_linear(ctx, x, w, NULL);
    return m->lora ? orc_lora_project(ctx, m->lora, l, target, x, y) : y;
}

static orc_tensor *attention_block(orc_ctx *ctx, orc_llm *m, int64_t l, orc_tensor *x, orc_tensor *pos,
                                   orc_llm_cache *cache) {
    const orc_llm_layer *y = &m->layers[l];
    orc_tensor *att = orc_llm_attend(ctx, &m->cfg, l, proj(ctx, m, l, ORC_LORA_Q, x, y->wq),
                                     proj(ctx, m, l, ORC_LORA_K, x, y->wk), proj(ctx, m, l, ORC_LORA_V, x, y->wv),
                                     y->q_norm, y->k_norm, pos, cache);
    return proj(ctx, m, l, ORC_LORA_O, att, y->wo);
}

/* A MoE layer's FFN; its weighted router losses add into m->moe_aux. */
orc_tensor *orc_llm_moe_ffn(orc_ctx *ctx, orc_llm *m, int64_t layer, orc_tensor *x) {
    const orc_llm_config *c = &m->cfg;
    const orc_llm_layer *y = &m->layers[layer];
    const orc_moe_opts o = {.router = (orc_moe_router)c->moe_router, .n_experts = c->num_experts,
                            .top_k = c->moe_top_k, .capacity_factor = c->capacity_factor,
                            .group_size = c->moe_group_size};
    orc_moe_forward r;
    orc_tensor *out = orc_moe_ffn(ctx, y->moe, &o, x, &r);
    orc_tensor *terms[2] = {r.balance && c->router_aux_loss_coef > 0
                                ? orc_scale(ctx, r.balance, (float)c->router_aux_loss_coef) : NULL,
                            r.z && c->router_z_loss_coef > 0 ? orc_scale(ctx, r.z, (float)c->router_z_loss_coef)
                                                             : NULL};
    for (int i = 0; i < 2; i++)
        if (terms[i]) m->moe_aux = m->moe_aux ? orc_add(ctx, m->moe_aux, terms[i]) : terms[i];
    return out;
}

static orc_tensor *ffn_block(orc_ctx *ctx, const orc_llm *m, int64_t l, orc_tensor *x) {
    const orc_llm_layer *y = &m->layers[l];
    orc_tensor *h = orc_swiglu(ctx, proj(ctx, m, l, ORC_LORA_GATE, x, y->w_gate),
                               proj(ctx, m, l, ORC_LORA_UP, x, y->w_up));
    return proj(ctx, m, l, ORC_LORA_DOWN, h, y->w_down);
}

orc_tensor *orc_llm_positions(orc_ctx *ctx, const orc_llm_config *c, orc_tensor *ids, const orc_llm_cache *cache,
                              const char *who) {
    if (!orc_op_begin(ctx, who, 1, &ids)) return NULL;
    if (ids->ndim != 2 || ids->dtype != ORC_I32) {
        char b[96];
        return orc_fail(ctx, ORC_ESHAPE, "%s: token ids must be int32 [batch, seq], got %s", who,
                        orc_shape_str(b, sizeof b, ids->ndim, ids->shape));
    }
    const int64_t B = ids->shape[0], T = ids->shape[1];
    const int64_t start = cache ? cache->len : 0;
    if (cache) {
        if (!ctx->no_grad) return orc_fail(ctx, ORC_EINVAL, "%s: a KV cache is for no-grad inference only", who);
        if (B != cache->batch)
            return orc_fail(ctx, ORC_ESHAPE, "%s: batch %lld does not match the cache's %lld", who, (long long)B,
                            (long long)cache->batch);
        if (start + T > cache->max_seq)
            return orc_fail(ctx, ORC_ERANGE, "%s: %lld cached + %lld new tokens exceed the cache length %lld", who,
                            (long long)start, (long long)T, (long long)cache->max_seq);
    }
    if (start + T > c->max_position_embeddings)
        return orc_fail(ctx, ORC_ERANGE, "%s: %lld positions exceed max_position_embeddings = %lld", who,
                        (long long)(start + T), (long long)c->max_position_embeddings);
    orc_tensor *pos = orc_new(ctx, ORC_I32, 1, ORC_SHAPE(T));
    if (!pos) return NULL;
    for (int64_t t = 0; t < T; t++) orc_i32(pos)[t] = (int32_t)(start + t);
    return pos;
}

orc_tensor *orc_llm_hidden(orc_ctx *ctx, orc_llm *m, orc_tensor *ids, orc_llm_cache *cache) {
    const orc_llm_config *c = &m->cfg;
    orc_tensor *pos = orc_llm_positions(ctx, c, ids, cache, "llm");
    if (!pos) return NULL;
    const int64_t T = ids->shape[1];
    const float eps = (float)c->rms_norm_eps;
    orc_tensor *h = orc_embedding(ctx, m->embed, ids);
    m->moe_aux = NULL;
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const orc_llm_layer *y = &m->layers[l];
        h = orc_add(ctx, h, attention_block(ctx, m, l, orc_rmsnorm(ctx, h, y->attn_norm, eps), pos, cache));
        orc_tensor *xn = orc_rmsnorm(ctx, h, y->ffn_norm, eps);
        h = orc_add(ctx, h, y->moe ? orc_llm_moe_ffn(ctx, m, l, xn) : ffn_block(ctx, m, l, xn));
    }
    h = orc_rmsnorm(ctx, h, m->norm, eps);
    if (cache && orc_ctx_ok(ctx)) cache->len += T;
    return h;
}

/* x [1, ...] repeated n times along the batch axis (its gradient is the sum
 * over the copies: concat's backward adds each piece into the same grad). */
static orc_tensor *repeat_batch(orc_ctx *ctx, orc_tensor *x, int64_t n) {
    if (!x || n == 1) return x;
    orc_tensor **parts = orc_arena_alloc(ctx->arena, (size_t)n * sizeof *parts);
    if (!parts) return orc_fail(ctx, ORC_ENOMEM, "llm prefixed: out of memory");
    for (int64_t i = 0; i < n; i++) parts[i] = x;
    return orc_concat(ctx, (int)n, parts, 0);
}

/* The prefix's keys and values are computed once; each row's queries read
 * them (repeated over the batch) followed by the row's own keys, causally:
 * row position t sees the whole prefix and its own positions <= t. The
 * prefix stream stops after the last layer's keys and values, which are
 * all the rows need of it. */
orc_tensor *orc_llm_hidden_prefixed(orc_ctx *ctx, orc_llm *m, orc_tensor *prefix, orc_tensor *ids) {
    const orc_llm_config *c = &m->cfg;
    const char *who = "llm prefixed";
    orc_tensor *pos_p = orc_llm_positions(ctx, c, prefix, NULL, who);
    orc_tensor *pos_s = pos_p ? orc_llm_positions(ctx, c, ids, NULL, who) : NULL;
    if (!pos_s) return NULL;
    const int64_t P = prefix->shape[1], B = ids->shape[0], S = ids->shape[1];
    if (prefix->shape[0] != 1) return orc_fail(ctx, ORC_ESHAPE, "%s: the prefix must be one row, got %lld", who,
                                               (long long)prefix->shape[0]);
    if (P + S > c->max_position_embeddings)
        return orc_fail(ctx, ORC_ERANGE, "%s: %lld + %lld positions exceed max_position_embeddings = %lld", who,
                        (long long)P, (long long)S, (long long)c->max_position_embeddings);
    for (int64_t t = 0; t < S; t++) orc_i32(pos_s)[t] = (int32_t)(P + t);
    const float eps = (float)c->rms_norm_eps;
    const int64_t Hq = c->num_attention_heads, Hkv = c->num_key_value_heads;
    const orc_attn_opts causal = {.causal = true}; /* rows: query t sees keys <= t + P */
    orc_tensor *hp = orc_embedding(ctx, m->embed, prefix), *hs = orc_embedding(ctx, m->embed, ids);
    m->moe_aux = NULL;
    for (int64_t l = 0; l < c->num_hidden_layers && orc_ctx_ok(ctx); l++) {
        const orc_llm_layer *y = &m->layers[l];
        orc_tensor *xp = orc_rmsnorm(ctx, hp, y->attn_norm, eps), *xs = orc_rmsnorm(ctx, hs, y->attn_norm, eps);
        orc_tensor *kp = heads(ctx, c, proj(ctx, m, l, ORC_LORA_K, xp, y->wk), Hkv, y->k_norm, pos_p);
        orc_tensor *vp = heads(ctx, c, proj(ctx, m, l, ORC_LORA_V, xp, y->wv), Hkv, NULL, NULL);
        orc_tensor *qs = heads(ctx, c, proj(ctx, m, l, ORC_LORA_Q, xs, y->wq), Hq, y->q_norm, pos_s);
        orc_tensor *ks = heads(ctx, c, proj(ctx, m, l, ORC_LORA_K, xs, y->wk), Hkv, y->k_norm, pos_s);
        orc_tensor *vs = heads(ctx, c, proj(ctx, m, l, ORC_LORA_V, xs, y->wv), Hkv, NULL, NULL);
        orc_tensor *kk[2] = {repeat_batch(ctx, kp, B), ks}, *vv[2] = {repeat_batch(ctx, vp, B), vs};
        if (!orc_ctx_ok(ctx)) break;
        orc_tensor *att = orc_attention(ctx, qs, orc_concat(ctx, 2, kk, 1), orc_concat(ctx, 2, vv, 1), &causal);
        hs = orc_add(ctx, hs, proj(ctx, m, l, ORC_LORA_O, orc_reshape(ctx, att, 3, ORC_SHAPE(B, S, Hq * c->head_dim)),
                                   y->wo));
        orc_tensor *xn = orc_rmsnorm(ctx, hs, y->ffn_norm, eps);
        hs = orc_add(ctx, hs, y->moe ? orc_llm_moe_ffn(ctx, m, l, xn) : ffn_block(ctx, m, l, xn));
        if (l + 1 == c->num_hidden_layers) break;
        orc_tensor *qp = heads(ctx, c, proj(ctx, m, l, ORC_LORA_Q, xp, y->wq), Hq, y->q_norm, pos_p);
        if (!orc_ctx_ok(ctx)) break;
        orc_tensor *att_p = orc_attention(ctx, qp, kp, vp, &causal);
        hp = orc_add(ctx, hp, proj(ctx, m, l, ORC_LORA_O, orc_reshape(ctx, att_p, 3, ORC_SHAPE(1, P, Hq * c->head_dim)),
                                   y->wo));
        xn = orc_rmsnorm(ctx, hp, y->ffn_norm, eps);
        hp = orc_add(ctx, hp, y->moe ? orc_llm_moe_ffn(ctx, m, l, xn) : ffn_block(ctx, m, l, xn));
    }
    return orc_ctx_ok(ctx) ? orc_rmsnorm(ctx, hs, m->norm, eps) : NULL;
}

orc_tensor *orc_llm_forward(orc_ctx *ctx, orc_llm *m, orc_tensor *ids, orc_llm_cache *cache) {
    return orc_linear(ctx, orc_llm_hidden(ctx, m, ids, cache), m->lm_head, NULL);
}

orc_tensor *orc_llm_loss(orc_ctx *ctx, orc_llm *m, orc_tensor *ids, orc_tensor *targets) {
    orc_tensor *logits = orc_llm_forward(ctx, m, ids, NULL);
    if (!logits) return NULL;
    if (!targets || targets->numel != ids->numel)
        return orc_fail(ctx, ORC_ESHAPE, "llm loss: targets must have the shape of the ids");
    return orc_cross_entropy(ctx, logits, targets, NULL, ORC_IGNORE_INDEX);
}
