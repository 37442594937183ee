/* The quantized decoder LM (orchard/quant.h): building it from a float model
 * or a `llama` GGUF file (tensor names and the q/k row permutation as in
 * src/llm/gguf_model.c), and its no-grad forward pass, which mirrors
 * orc_llm_hidden with the public ops except that every projection is
 * orc_q_linear and the embedding lookup dequantizes one row per token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "orchard/llm_gguf.h"
#include "orchard/ops.h"
#include "orchard/quant.h"

/* ---- building ------------------------------------------------------------------ */

static orc_qllm *qllm_alloc(const orc_llm_config *cfg, orc_error *err) {
    orc_qllm *q = calloc(1, sizeof *q);
    if (q) {
        q->cfg = *cfg;
        q->layers = calloc((size_t)cfg->num_hidden_layers, sizeof *q->layers);
        const size_t norms = (size_t)(cfg->num_hidden_layers * (2 * cfg->hidden_size + 2 * cfg->head_dim) +
                                      cfg->hidden_size);
        q->arena = orc_arena_create(norms * sizeof(float) * 2 + ((size_t)1 << 16));
    }
    if (!q || !q->layers || !q->arena) {
        orc_error_set(err, ORC_ENOMEM, "quant model: out of memory");
        orc_qllm_free(q);
        return NULL;
    }
    return q;
}

void orc_qllm_free(orc_qllm *q) {
    if (!q) return;
    for (int64_t l = 0; q->layers && l < q->cfg.num_hidden_layers; l++) {
        orc_qllm_layer *y = &q->layers[l];
        orc_qmat *mats[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) orc_qmat_release(mats[i]);
    }
    orc_qmat_release(&q->lm_head);
    orc_qmat_release(&q->embed);
    free(q->layers);
    orc_arena_destroy(q->arena);
    orc_gguf_close(q->file);
    free(q);
}

/* The 8-bit type the embeddings keep whatever the projections use. */
static orc_ggml_type embed_type(orc_ggml_type type) { return type == ORC_GGML_Q4_0 ? ORC_GGML_Q8_0 : type; }

static orc_status quantize_param(orc_qmat *q, orc_ggml_type type, const orc_tensor *t, orc_error *err) {
    return orc_qmat_quantize(q, type, orc_f32(t), t->shape[0], t->shape[1], err);
}

static orc_tensor *clone_norm(orc_qllm *q, const orc_tensor *t, orc_error *err) {
    return t ? orc_tensor_clone(q->arena, t, err) : NULL;
}

orc_qllm *orc_qllm_from_llm(const orc_llm *m, orc_ggml_type type, orc_error *err) {
    if (type != ORC_GGML_Q8_0 && type != ORC_GGML_Q4_0) {
        orc_error_set(err, ORC_EINVAL, "quant model: type %s is not Q8_0 or Q4_0", orc_ggml_type_name(type));
        return NULL;
    }
    orc_qllm *q = qllm_alloc(&m->cfg, err);
    if (!q) return NULL;
    q->type = type;
    orc_status st = quantize_param(&q->embed, embed_type(type), m->embed, err);
    for (int64_t l = 0; st == ORC_OK && l < m->cfg.num_hidden_layers; l++) {
        const orc_llm_layer *s = &m->layers[l];
        orc_qllm_layer *y = &q->layers[l];
        const orc_tensor *src[] = {s->wq, s->wk, s->wv, s->wo, s->w_gate, s->w_up, s->w_down};
        orc_qmat *dst[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
        for (size_t i = 0; st == ORC_OK && i < 7; i++) st = quantize_param(dst[i], type, src[i], err);
        if (st != ORC_OK) break;
        y->attn_norm = clone_norm(q, s->attn_norm, err);
        y->ffn_norm = clone_norm(q, s->ffn_norm, err);
        y->q_norm = clone_norm(q, s->q_norm, err);
        y->k_norm = clone_norm(q, s->k_norm, err);
        if (!y->attn_norm || !y->ffn_norm || (m->cfg.qk_norm && (!y->q_norm || !y->k_norm))) st = ORC_ENOMEM;
    }
    if (st == ORC_OK && !(q->norm = clone_norm(q, m->norm, err))) st = ORC_ENOMEM;
    if (st == ORC_OK) {
        if (m->cfg.tie_word_embeddings) {
            q->lm_head = q->embed;
            q->lm_head.owned = NULL;
        } else {
            st = quantize_param(&q->lm_head, embed_type(type), m->lm_head, err);
        }
    }
    if (st != ORC_OK) {
        if (err && err->code == ORC_OK) orc_error_set(err, ORC_ENOMEM, "quant model: out of memory");
        orc_qllm_free(q);
        return NULL;
    }
    return q;
}

/* ---- loading a GGUF file ----------------------------------------------------------- */

/* orchard row h*hd + s*hd/2 + i comes from llama.cpp row h*hd + 2i + s. */
static orc_status unpermute_rows(orc_qmat *q, int64_t n_head, int64_t hd, orc_error *err) {
    uint8_t *buf = malloc(q->row_bytes * (size_t)q->rows);
    if (!buf) return orc_error_set(err, ORC_ENOMEM, "quant model: out of memory");
    const int64_t half = hd / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t s = 0; s < 2; s++)
            for (int64_t i = 0; i < half; i++)
                memcpy(buf + (size_t)(h * hd + s * half + i) * q->row_bytes,
                       q->data + (size_t)(h * hd + 2 * i + s) * q->row_bytes, q->row_bytes);
    free(q->owned);
    q->data = buf;
    q->owned = buf;
    return ORC_OK;
}

static orc_status load_matrix(orc_qllm *q, const char *path, const char *name, int64_t rows, int64_t cols,
                              int64_t permute_heads, orc_qmat *out, orc_error *err) {
    const orc_gguf_tensor_info *ti = orc_gguf_find_tensor(q->file, name);
    if (!ti) return orc_error_set(err, ORC_EFORMAT, "%s: tensor '%s' is missing", path, name);
    if (ti->n_dims != 2 || ti->shape[0] != rows || ti->shape[1] != cols)
        return orc_error_set(err, ORC_ESHAPE, "%s: tensor '%s' has shape [%lld, %lld] (%d dims), expected [%lld, %lld]",
                             path, name, (long long)ti->shape[0], (long long)ti->shape[1], ti->n_dims,
                             (long long)rows, (long long)cols);
    orc_status st;
    char label[4200];
    snprintf(label, sizeof label, "%s: tensor '%s'", path, name);
    if (ti->type == ORC_GGML_Q8_0 || ti->type == ORC_GGML_Q4_0) {
        st = orc_qmat_view(out, ti->type, rows, cols, ti->data, ti->nbytes, label, err);
        if (st == ORC_OK && permute_heads) st = unpermute_rows(out, permute_heads, q->cfg.head_dim, err);
        return st;
    }
    if (ti->type != ORC_GGML_F32 && ti->type != ORC_GGML_F16 && ti->type != ORC_GGML_BF16)
        return orc_error_set(err, ORC_EUNSUPPORTED, "%s: tensor '%s' is %s; quantized inference takes Q8_0, Q4_0, "
                             "F32, F16 or BF16",
                             path, name, orc_ggml_type_name(ti->type));
    float *f = malloc(sizeof(float) * (size_t)(rows * cols) * (permute_heads ? 2 : 1));
    if (!f) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory for tensor '%s'", path, name);
    st = orc_gguf_read_f32(q->file, name, f, rows * cols, err);
    float *src = f;
    if (st == ORC_OK && permute_heads) {
        src = f + rows * cols;
        orc_gguf_permute_qk(src, f, permute_heads, q->cfg.head_dim, cols, false);
    }
    if (st == ORC_OK) st = orc_qmat_quantize(out, ORC_GGML_Q8_0, src, rows, cols, err);
    free(f);
    return st;
}

static orc_tensor *load_norm(orc_qllm *q, const char *path, const char *name, int64_t n, orc_error *err) {
    orc_tensor *t = orc_tensor_new(q->arena, ORC_F32, 1, ORC_SHAPE(n), err);
    if (t && orc_gguf_read_into(q->file, name, t, err) != ORC_OK) {
        if (err && !strstr(err->msg, path)) {
            char msg[ORC_ERROR_MSG_MAX];
            snprintf(msg, sizeof msg, "%s", err->msg);
            err->code = ORC_OK;
            orc_error_set(err, ORC_EFORMAT, "%s: %s", path, msg);
        }
        return NULL;
    }
    return t;
}

static orc_status load_layers(orc_qllm *q, const char *path, orc_error *err) {
    const orc_llm_config *c = &q->cfg;
    const int64_t D = c->hidden_size, F = c->intermediate_size, hd = c->head_dim;
    const int64_t Hq = c->num_attention_heads, Hkv = c->num_key_value_heads;
    char name[96];
    orc_status st = ORC_OK;
    for (int64_t l = 0; st == ORC_OK && l < c->num_hidden_layers; l++) {
        orc_qllm_layer *y = &q->layers[l];
        const struct { const char *n; int64_t r, k, heads; orc_qmat *m; } mats[] = {
            {"attn_q", Hq * hd, D, Hq, &y->wq},          {"attn_k", Hkv * hd, D, Hkv, &y->wk},
            {"attn_v", Hkv * hd, D, 0, &y->wv},          {"attn_output", D, Hq * hd, 0, &y->wo},
            {"ffn_gate", F, D, 0, &y->w_gate},           {"ffn_up", F, D, 0, &y->w_up},
            {"ffn_down", D, F, 0, &y->w_down},
        };
        for (size_t i = 0; st == ORC_OK && i < sizeof mats / sizeof mats[0]; i++) {
            snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)l, mats[i].n);
            st = load_matrix(q, path, name, mats[i].r, mats[i].k, mats[i].heads, mats[i].m, err);
        }
        if (st != ORC_OK) break;
        snprintf(name, sizeof name, "blk.%lld.attn_norm.weight", (long long)l);
        if (!(y->attn_norm = load_norm(q, path, name, D, err))) st = ORC_EFORMAT;
        snprintf(name, sizeof name, "blk.%lld.ffn_norm.weight", (long long)l);
        if (st == ORC_OK && !(y->ffn_norm = load_norm(q, path, name, D, err))) st = ORC_EFORMAT;
    }
    return st;
}

/* The widest matrix type among the blocks' projections decides q->type. */
static orc_ggml_type projection_type(const orc_qllm *q) {
    for (int64_t l = 0; l < q->cfg.num_hidden_layers; l++)
        if (q->layers[l].w_up.type == ORC_GGML_Q4_0) return ORC_GGML_Q4_0;
    return ORC_GGML_Q8_0;
}

orc_qllm *orc_qllm_load(const char *path, orc_error *err) {
    char file[4200];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        snprintf(file, sizeof file, "%s/model.gguf", path);
    else
        snprintf(file, sizeof file, "%s", path);
    orc_gguf_file *f = orc_gguf_open(file, err);
    if (!f) return NULL;
    orc_llm_config cfg;
    if (orc_llm_config_from_gguf(f, file, &cfg, err) != ORC_OK) {
        orc_gguf_close(f);
        return NULL;
    }
    orc_qllm *q = qllm_alloc(&cfg, err);
    if (!q) {
        orc_gguf_close(f);
        return NULL;
    }
    q->file = f;
    const int64_t V = cfg.vocab_size, D = cfg.hidden_size;
    orc_status st = load_matrix(q, file, "token_embd.weight", V, D, 0, &q->embed, err);
    if (st == ORC_OK) st = load_layers(q, file, err);
    if (st == ORC_OK && !(q->norm = load_norm(q, file, "output_norm.weight", D, err))) st = ORC_EFORMAT;
    if (st == ORC_OK && cfg.tie_word_embeddings) {
        q->lm_head = q->embed;
        q->lm_head.owned = NULL;
    } else if (st == ORC_OK) {
        st = load_matrix(q, file, "output.weight", V, D, 0, &q->lm_head, err);
    }
    if (st != ORC_OK) {
        orc_qllm_free(q);
        return NULL;
    }
    q->type = projection_type(q);
    return q;
}

size_t orc_qllm_weight_bytes(const orc_qllm *q) {
    size_t n = q->embed.row_bytes * (size_t)q->embed.rows;
    if (!q->cfg.tie_word_embeddings) n += q->lm_head.row_bytes * (size_t)q->lm_head.rows;
    for (int64_t l = 0; l < q->cfg.num_hidden_layers; l++) {
        const orc_qllm_layer *y = &q->layers[l];
        const orc_qmat *mats[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
        for (size_t i = 0; i < 7; i++) n += mats[i]->row_bytes * (size_t)mats[i]->rows;
        n += sizeof(float) * (size_t)(2 * q->cfg.hidden_size);
    }
    return n + sizeof(float) * (size_t)q->cfg.hidden_size;
}

/* ---- forward --------------------------------------------------------------------------- */

static orc_tensor *q_embedding(orc_ctx *ctx, const orc_qmat *e, orc_tensor *ids) {
    const int64_t B = ids->shape[0], T = ids->shape[1];
    orc_tensor *h = orc_new(ctx, ORC_F32, 3, ORC_SHAPE(B, T, e->cols));
    if (!h) return NULL;
    const int32_t *id = orc_i32(ids);
    for (int64_t i = 0; i < B * T; i++) {
        if (id[i] < 0 || id[i] >= e->rows)
            return orc_fail(ctx, ORC_ERANGE, "quant llm: token id %d at position %lld is outside [0, %lld)", id[i],
                            (long long)i, (long long)e->rows);
        orc_qmat_dequant_row(e, id[i], orc_f32(h) + i * e->cols);
    }
    return h;
}

/* The block's projections are quantized; everything between them is the
 * float model's (orc_llm_attend). */
static orc_tensor *attention_block(orc_ctx *ctx, orc_qllm *q, int64_t l, orc_tensor *x, orc_tensor *pos,
                                   orc_llm_cache *cache) {
    const orc_qllm_layer *y = &q->layers[l];
    orc_tensor *att = orc_llm_attend(ctx, &q->cfg, l, orc_q_linear(ctx, x, &y->wq), orc_q_linear(ctx, x, &y->wk),
                                     orc_q_linear(ctx, x, &y->wv), y->q_norm, y->k_norm, pos, cache);
    return orc_q_linear(ctx, att, &y->wo);
}

static orc_tensor *ffn_block(orc_ctx *ctx, const orc_qllm_layer *y, orc_tensor *x) {
    orc_tensor *h = orc_swiglu(ctx, orc_q_linear(ctx, x, &y->w_gate), orc_q_linear(ctx, x, &y->w_up));
    return orc_q_linear(ctx, h, &y->w_down);
}

orc_tensor *orc_qllm_hidden(orc_ctx *ctx, orc_qllm *q, orc_tensor *ids, orc_llm_cache *cache) {
    if (!orc_op_begin(ctx, "quant llm", 1, &ids)) return NULL;
    const orc_llm_config *c = &q->cfg;
    if (!ctx->no_grad) return orc_fail(ctx, ORC_EINVAL, "quant llm: inference only; set no-grad mode");
    if (!orc_is_contiguous(ids)) return orc_fail(ctx, ORC_ESHAPE, "quant llm: token ids must be contiguous");
    orc_tensor *pos = orc_llm_positions(ctx, c, ids, cache, "quant llm");
    if (!pos) return NULL;
    const int64_t T = ids->shape[1];
    const float eps = (float)c->rms_norm_eps;
    orc_tensor *h = q_embedding(ctx, &q->embed, ids);
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const orc_qllm_layer *y = &q->layers[l];
        h = orc_add(ctx, h, attention_block(ctx, q, l, orc_rmsnorm(ctx, h, y->attn_norm, eps), pos, cache));
        h = orc_add(ctx, h, ffn_block(ctx, y, orc_rmsnorm(ctx, h, y->ffn_norm, eps)));
    }
    h = orc_rmsnorm(ctx, h, q->norm, eps);
    if (cache && orc_ctx_ok(ctx)) cache->len += T;
    return h;
}

orc_tensor *orc_qllm_forward(orc_ctx *ctx, orc_qllm *q, orc_tensor *ids, orc_llm_cache *cache) {
    return orc_q_linear(ctx, orc_qllm_hidden(ctx, q, ids, cache), &q->lm_head);
}
