/* The quantized decoder LM (orchard/quant.h): building it from a float model
 * or a `llama` GGUF file (tensor names and the q/k row permutation as in
 * src/llm/gguf_model.c), and its no-grad forward pass, which mirrors
 * orc_llm_hidden with the public ops except that every projection is
 * orc_q_linear (q/k/v and gate/up as one orc_q_linear_many each, their
 * input rounded once; plus the active LoRA adapters' float deltas, for recovery
 * and feature adapters over a quantized base) and the embedding lookup
 * dequantizes one row per token. A built or loaded model repacks its
 * projections for the SIMD kernels (pack_all), which changes no bit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "orchard/llm_gguf.h"
#include "orchard/lora.h"
#include "orchard/ops.h"
#include "orchard/quant.h"
#include "quant_internal.h"

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
    free(q->packed_arena);
    free(q->layers);
    orc_arena_destroy(q->arena);
    orc_gguf_close(q->file);
    free(q);
}

static orc_status quantize_param(orc_qmat *q, orc_ggml_type type, int64_t group, const orc_tensor *t,
                                 orc_error *err) {
    return orc_qmat_quantize_fit(q, type, orc_f32(t), t->shape[0], t->shape[1], group, err);
}

static orc_tensor *clone_norm(orc_qllm *q, const orc_tensor *t, orc_error *err) {
    return t ? orc_tensor_clone(q->arena, t, err) : NULL;
}

/* Every projection and the output matrix repacked for the SIMD kernels
 * (orc_qmat_pack's layout; the same bits, so a matrix it does not apply to
 * keeps the row kernels), all in one allocation in huge pages, which took
 * about a tenth off a base decode step (docs/quantization.md). When that
 * allocation fails each matrix gets its own, or none. The embedding is not
 * packed: it is only read a row at a time (a tied lm_head gets a packed copy). */
static void pack_all(orc_qllm *q) {
    const int64_t L = q->cfg.num_hidden_layers;
    orc_qmat **mats = malloc(sizeof *mats * (size_t)(L * ORC_QLLM_PROJ + 1));
    size_t *bytes = malloc(sizeof *bytes * (size_t)(L * ORC_QLLM_PROJ + 1));
    if (!mats || !bytes) {
        free(mats);
        free(bytes);
        return;
    }
    int64_t n = 0;
    for (int64_t l = 0; l < L; l++) {
        orc_qllm_layer *y = &q->layers[l];
        orc_qmat *m[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
        for (int i = 0; i < ORC_QLLM_PROJ; i++) mats[n++] = m[i];
    }
    mats[n++] = &q->lm_head;
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) total += bytes[i] = orc_q_pack_bytes(mats[i]);
    uint8_t *arena = total ? orc_q_alloc_huge(total) : NULL;
    size_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!bytes[i]) continue;
        if (arena)
            orc_q_pack_into(mats[i], arena + at);
        else
            orc_qmat_pack(mats[i]);
        at += bytes[i];
    }
    q->packed_arena = arena;
    free(mats);
    free(bytes);
}

/* The narrowest projection type (by bits per weight) names the model's type. */
static orc_ggml_type narrowest(const orc_qllm *q) {
    static const orc_ggml_type order[] = {ORC_Q_PAL2, ORC_Q_PAL4, ORC_GGML_Q4_0, ORC_GGML_Q8_0};
    for (size_t o = 0; o < 4; o++)
        for (int64_t l = 0; l < q->cfg.num_hidden_layers; l++) {
            const orc_qllm_layer *y = &q->layers[l];
            const orc_qmat *mats[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
            for (int i = 0; i < ORC_QLLM_PROJ; i++)
                if (mats[i]->type == order[o]) return order[o];
        }
    return ORC_GGML_Q8_0;
}

orc_qllm *orc_qllm_from_llm_plan(const orc_llm *m, const orc_quant_plan *p, orc_error *err) {
    if (!p || !p->proj || p->n_layers != m->cfg.num_hidden_layers) {
        orc_error_set(err, ORC_EINVAL, "quant model: the plan has %lld layers, the model %lld",
                      p ? (long long)p->n_layers : -1LL, (long long)m->cfg.num_hidden_layers);
        return NULL;
    }
    orc_qllm *q = qllm_alloc(&m->cfg, err);
    if (!q) return NULL;
    orc_status st = quantize_param(&q->embed, p->embed, p->group, m->embed, err);
    for (int64_t l = 0; st == ORC_OK && l < m->cfg.num_hidden_layers; l++) {
        const orc_llm_layer *s = &m->layers[l];
        orc_qllm_layer *y = &q->layers[l];
        const orc_tensor *src[] = {s->wq, s->wk, s->wv, s->wo, s->w_gate, s->w_up, s->w_down};
        orc_qmat *dst[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
        for (size_t i = 0; st == ORC_OK && i < ORC_QLLM_PROJ; i++)
            st = quantize_param(dst[i], p->proj[l * ORC_QLLM_PROJ + (int64_t)i], p->group, src[i], err);
        if (st != ORC_OK) break;
        y->attn_norm = clone_norm(q, s->attn_norm, err);
        y->ffn_norm = clone_norm(q, s->ffn_norm, err);
        y->q_norm = clone_norm(q, s->q_norm, err);
        y->k_norm = clone_norm(q, s->k_norm, err);
        if (!y->attn_norm || !y->ffn_norm || (m->cfg.qk_norm && (!y->q_norm || !y->k_norm))) st = ORC_ENOMEM;
    }
    if (st == ORC_OK && !(q->norm = clone_norm(q, m->norm, err))) st = ORC_ENOMEM;
    if (st == ORC_OK) {
        if (m->cfg.tie_word_embeddings)
            q->lm_head = orc_qmat_alias(&q->embed);
        else
            st = quantize_param(&q->lm_head, p->embed, p->group, m->lm_head, err);
    }
    if (st != ORC_OK) {
        if (err && err->code == ORC_OK) orc_error_set(err, ORC_ENOMEM, "quant model: out of memory");
        orc_qllm_free(q);
        return NULL;
    }
    q->type = narrowest(q);
    pack_all(q);
    return q;
}

orc_qllm *orc_qllm_from_llm(const orc_llm *m, orc_ggml_type type, orc_error *err) {
    orc_quant_plan p;
    if (orc_quant_plan_uniform(&p, m->cfg.num_hidden_layers, type, ORC_Q_PAL_GROUP, err) != ORC_OK) return NULL;
    orc_qllm *q = orc_qllm_from_llm_plan(m, &p, err);
    orc_quant_plan_release(&p);
    return q;
}

orc_llm *orc_qllm_to_llm(const orc_qllm *q, bool with_grad, orc_error *err) {
    orc_llm *m = orc_llm_create(&q->cfg, with_grad, err);
    if (!m) return NULL;
    orc_qmat_dequantize(&q->embed, orc_f32(m->embed));
    if (!q->cfg.tie_word_embeddings) orc_qmat_dequantize(&q->lm_head, orc_f32(m->lm_head));
    memcpy(orc_f32(m->norm), orc_f32(q->norm), sizeof(float) * (size_t)q->cfg.hidden_size);
    for (int64_t l = 0; l < q->cfg.num_hidden_layers; l++) {
        const orc_qllm_layer *y = &q->layers[l];
        orc_llm_layer *d = &m->layers[l];
        const orc_qmat *src[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
        orc_tensor *dst[] = {d->wq, d->wk, d->wv, d->wo, d->w_gate, d->w_up, d->w_down};
        for (int i = 0; i < ORC_QLLM_PROJ; i++) orc_qmat_dequantize(src[i], orc_f32(dst[i]));
        const orc_tensor *ns[] = {y->attn_norm, y->ffn_norm, y->q_norm, y->k_norm};
        orc_tensor *nd[] = {d->attn_norm, d->ffn_norm, d->q_norm, d->k_norm};
        for (int i = 0; i < 4; i++)
            if (ns[i] && nd[i]) memcpy(orc_f32(nd[i]), orc_f32(ns[i]), sizeof(float) * (size_t)nd[i]->numel);
    }
    return m;
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

/* A palettized matrix: NAME (I8 [rows, cols*bits/8]), NAME.pal_lut (I8
 * [cols/group, 16 or 4]), NAME.pal_scale (F32 [cols/group]). The bits come
 * from the table width, the group from the number of tables; every size is
 * checked against the [rows, cols] the config implies. */
static orc_status load_pal(orc_qllm *q, const char *path, const char *name, const orc_gguf_tensor_info *ti,
                           int64_t rows, int64_t cols, const char *label, orc_qmat *out, orc_error *err) {
    char ln[200], sn[200];
    snprintf(ln, sizeof ln, "%s.pal_lut", name);
    snprintf(sn, sizeof sn, "%s.pal_scale", name);
    const orc_gguf_tensor_info *lt = orc_gguf_find_tensor(q->file, ln), *stt = orc_gguf_find_tensor(q->file, sn);
    if (!lt || !stt)
        return orc_error_set(err, ORC_EFORMAT, "%s: tensor '%s' is I8 but '%s' or '%s' is missing (an orchard "
                             "palettized matrix needs both)",
                             path, name, ln, sn);
    uint32_t version = 0;
    if (orc_gguf_get_u32(q->file, "orchard.quant.version", &version, NULL) != ORC_OK || version != ORC_Q_PAL_VERSION)
        return orc_error_set(err, ORC_EUNSUPPORTED, "%s: palettized tensor '%s' needs orchard.quant.version %d, the "
                             "file has %u",
                             path, name, ORC_Q_PAL_VERSION, version);
    if (lt->type != ORC_GGML_I8 || lt->n_dims != 2 || (lt->shape[1] != 16 && lt->shape[1] != 4))
        return orc_error_set(err, ORC_ESHAPE, "%s: tensor '%s' must be I8 [groups, 16 or 4], got %s with %d dims "
                             "[%lld, %lld]",
                             path, ln, orc_ggml_type_name(lt->type), lt->n_dims, (long long)lt->shape[0],
                             (long long)lt->shape[1]);
    const orc_ggml_type type = lt->shape[1] == 16 ? ORC_Q_PAL4 : ORC_Q_PAL2;
    const int64_t G = lt->shape[0], bits = type == ORC_Q_PAL4 ? 4 : 2;
    if (G <= 0 || cols % G)
        return orc_error_set(err, ORC_ESHAPE, "%s: tensor '%s' has %lld tables, which do not divide the %lld columns "
                             "of '%s'",
                             path, ln, (long long)G, (long long)cols, name);
    if (stt->type != ORC_GGML_F32 || stt->n_dims != 1 || stt->shape[0] != G)
        return orc_error_set(err, ORC_ESHAPE, "%s: tensor '%s' must be F32 [%lld], got %s [%lld] (%d dims)", path, sn,
                             (long long)G, orc_ggml_type_name(stt->type), (long long)stt->shape[0], stt->n_dims);
    if (ti->n_dims != 2 || ti->shape[0] != rows || ti->shape[1] * 8 != cols * bits)
        return orc_error_set(err, ORC_ESHAPE, "%s: tensor '%s' has shape [%lld, %lld] (%d dims); a [%lld, %lld] "
                             "matrix in %s needs [%lld, %lld]",
                             path, name, (long long)ti->shape[0], (long long)ti->shape[1], ti->n_dims, (long long)rows,
                             (long long)cols, orc_q_type_name(type), (long long)rows, (long long)(cols * bits / 8));
    return orc_qmat_view_pal(out, type, rows, cols, cols / G, ti->data, ti->nbytes, (const int8_t *)lt->data,
                             lt->nbytes, (const float *)stt->data, stt->nbytes, label, err);
}

static orc_status load_matrix(orc_qllm *q, const char *path, const char *name, int64_t rows, int64_t cols,
                              int64_t permute_heads, orc_qmat *out, orc_error *err) {
    const orc_gguf_tensor_info *ti = orc_gguf_find_tensor(q->file, name);
    if (!ti) return orc_error_set(err, ORC_EFORMAT, "%s: tensor '%s' is missing", path, name);
    if (ti->type != ORC_GGML_I8 && (ti->n_dims != 2 || ti->shape[0] != rows || ti->shape[1] != cols))
        return orc_error_set(err, ORC_ESHAPE, "%s: tensor '%s' has shape [%lld, %lld] (%d dims), expected [%lld, %lld]",
                             path, name, (long long)ti->shape[0], (long long)ti->shape[1], ti->n_dims,
                             (long long)rows, (long long)cols);
    orc_status st;
    char label[4200];
    snprintf(label, sizeof label, "%s: tensor '%s'", path, name);
    if (ti->type == ORC_GGML_I8) {
        st = load_pal(q, path, name, ti, rows, cols, label, out, err);
        if (st == ORC_OK && permute_heads) st = unpermute_rows(out, permute_heads, q->cfg.head_dim, err);
        return st;
    }
    if (ti->type == ORC_GGML_Q8_0 || ti->type == ORC_GGML_Q4_0) {
        st = orc_qmat_view(out, ti->type, rows, cols, ti->data, ti->nbytes, label, err);
        if (st == ORC_OK && permute_heads) st = unpermute_rows(out, permute_heads, q->cfg.head_dim, err);
        return st;
    }
    if (ti->type != ORC_GGML_F32 && ti->type != ORC_GGML_F16 && ti->type != ORC_GGML_BF16)
        return orc_error_set(err, ORC_EUNSUPPORTED, "%s: tensor '%s' is %s; quantized inference takes Q8_0, Q4_0, "
                             "orchard's palettized I8, F32, F16 or BF16",
                             path, name, orc_ggml_type_name(ti->type));
    float *f = malloc(sizeof(float) * (size_t)(rows * cols) * (permute_heads ? 2 : 1));
    if (!f) return orc_error_set(err, ORC_ENOMEM, "%s: out of memory for tensor '%s'", path, name);
    st = orc_gguf_read_f32(q->file, name, f, rows * cols, err);
    float *src = f;
    if (st == ORC_OK && permute_heads) {
        src = f + rows * cols;
        orc_gguf_permute_qk(src, f, permute_heads, q->cfg.head_dim, cols, false);
    }
    if (st == ORC_OK) st = orc_qmat_quantize_fit(out, ORC_GGML_Q8_0, src, rows, cols, 0, err);
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
        q->lm_head = orc_qmat_alias(&q->embed);
    } else if (st == ORC_OK) {
        st = load_matrix(q, file, "output.weight", V, D, 0, &q->lm_head, err);
    }
    if (st != ORC_OK) {
        orc_qllm_free(q);
        return NULL;
    }
    q->type = narrowest(q);
    pack_all(q);
    return q;
}

size_t orc_qllm_weight_bytes(const orc_qllm *q) {
    size_t n = orc_qmat_bytes(&q->embed);
    if (!q->cfg.tie_word_embeddings) n += orc_qmat_bytes(&q->lm_head);
    for (int64_t l = 0; l < q->cfg.num_hidden_layers; l++) {
        const orc_qllm_layer *y = &q->layers[l];
        const orc_qmat *mats[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
        for (size_t i = 0; i < 7; i++) n += orc_qmat_bytes(mats[i]);
        n += sizeof(float) * (size_t)(2 * q->cfg.hidden_size);
    }
    return n + sizeof(float) * (size_t)q->cfg.hidden_size;
}

/* ---- forward --------------------------------------------------------------------------- */

orc_status orc_qllm_set_adapters(orc_qllm *q, const orc_lora_stack *s, orc_error *err) {
    if (s && (s->n < 0 || s->n > ORC_LORA_MAX_STACK))
        return orc_error_set(err, ORC_EINVAL, "quant llm: an adapter stack holds 0 to %d adapters, got %d",
                             ORC_LORA_MAX_STACK, s->n);
    for (int i = 0; s && i < s->n; i++) {
        if (!s->ad[i]) return orc_error_set(err, ORC_EINVAL, "quant llm: adapter %d of the stack is NULL", i);
        orc_status st = orc_lora_check_fits(s->ad[i], &q->cfg, err);
        if (st != ORC_OK) return st;
    }
    q->lora = s && s->n > 0 ? s : NULL;
    return ORC_OK;
}

/* An F16 fallback matrix (orc_quant_fit_type: rows that are not whole
 * blocks) is widened to float in the arena for each call and multiplied by
 * the float model's op, so it adds no kernel; it is one odd matrix per layer
 * at most, and the widening is exact. */
orc_tensor *orc_qllm_linear(orc_ctx *ctx, orc_tensor *x, const orc_qmat *w) {
    if (!w || w->type != ORC_GGML_F16) return orc_q_linear(ctx, x, w);
    if (!orc_op_begin(ctx, "q_linear", 1, &x)) return NULL;
    orc_tensor *wf = orc_new(ctx, ORC_F32, 2, ORC_SHAPE(w->rows, w->cols));
    if (!wf) return NULL;
    orc_ggml_dequantize(ORC_GGML_F16, w->data, orc_f32(wf), w->rows * w->cols, NULL);
    return orc_linear(ctx, x, wf, NULL);
}

/* x @ w^T through the quantized kernels plus the active adapters' deltas for
 * (layer l, target); the deltas are float ops on the float x (only the base
 * projection rounds x to Q8_0). */
static orc_tensor *qproj(orc_ctx *ctx, const orc_qllm *q, int64_t l, int target, orc_tensor *x, const orc_qmat *w) {
    orc_tensor *y = orc_qllm_linear(ctx, x, w);
    return q->lora ? orc_lora_project(ctx, q->lora, l, target, x, y) : y;
}

/* qproj for n projections of the same x (q/k/v, gate/up): x is rounded to
 * Q8_0 once and the kernels share one parallel region (the same bits as n
 * qproj calls). With an F16 fallback among them, n qproj calls. */
static void qproj_many(orc_ctx *ctx, const orc_qllm *q, int64_t l, const int *targets, orc_tensor *x,
                       const orc_qmat *const *w, int n, orc_tensor **out) {
    bool fused = true;
    for (int i = 0; i < n; i++) fused = fused && w[i]->type != ORC_GGML_F16;
    if (!fused) {
        for (int i = 0; i < n; i++) out[i] = qproj(ctx, q, l, targets[i], x, w[i]);
        return;
    }
    orc_q_linear_many(ctx, x, w, n, out);
    for (int i = 0; q->lora && i < n; i++) out[i] = orc_lora_project(ctx, q->lora, l, targets[i], x, out[i]);
}

/* The block's projections are quantized; everything between them is the
 * float model's (orc_llm_attend). */
static orc_tensor *attention_block(orc_ctx *ctx, orc_qllm *q, int64_t l, orc_tensor *x, orc_tensor *pos,
                                   orc_llm_cache *cache) {
    const orc_qllm_layer *y = &q->layers[l];
    const orc_qmat *w[3] = {&y->wq, &y->wk, &y->wv};
    const int targets[3] = {ORC_LORA_Q, ORC_LORA_K, ORC_LORA_V};
    orc_tensor *qkv[3];
    qproj_many(ctx, q, l, targets, x, w, 3, qkv);
    orc_tensor *att = orc_llm_attend(ctx, &q->cfg, l, qkv[0], qkv[1], qkv[2], y->q_norm, y->k_norm, pos, cache);
    return qproj(ctx, q, l, ORC_LORA_O, att, &y->wo);
}

static orc_tensor *ffn_block(orc_ctx *ctx, const orc_qllm *q, int64_t l, orc_tensor *x) {
    const orc_qllm_layer *y = &q->layers[l];
    const orc_qmat *w[2] = {&y->w_gate, &y->w_up};
    const int targets[2] = {ORC_LORA_GATE, ORC_LORA_UP};
    orc_tensor *gu[2];
    qproj_many(ctx, q, l, targets, x, w, 2, gu);
    orc_tensor *h = orc_swiglu(ctx, gu[0], gu[1]);
    return qproj(ctx, q, l, ORC_LORA_DOWN, h, &y->w_down);
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
    orc_tensor *h = orc_qmat_embedding(ctx, &q->embed, ids);
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const orc_qllm_layer *y = &q->layers[l];
        h = orc_add(ctx, h, attention_block(ctx, q, l, orc_rmsnorm(ctx, h, y->attn_norm, eps), pos, cache));
        h = orc_add(ctx, h, ffn_block(ctx, q, l, orc_rmsnorm(ctx, h, y->ffn_norm, eps)));
    }
    h = orc_rmsnorm(ctx, h, q->norm, eps);
    if (cache && orc_ctx_ok(ctx)) cache->len += T;
    return h;
}

orc_tensor *orc_qllm_forward(orc_ctx *ctx, orc_qllm *q, orc_tensor *ids, orc_llm_cache *cache) {
    return orc_qllm_linear(ctx, orc_qllm_hidden(ctx, q, ids, cache), &q->lm_head);
}
