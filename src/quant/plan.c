/* Quantization plans (orchard/quant.h): which type each matrix of a model
 * gets, their sizes and the model's bits per weight, and the mixed:BITS
 * planner: per-projection sensitivity measured as the increase of the
 * calibration loss when only that projection is quantized, then a greedy
 * knapsack on loss increase per bit saved down to the budget. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/generate.h"
#include "orchard/quant.h"
#include "quant_internal.h"

const orc_ggml_type ORC_QMIX_TYPES[ORC_QMIX_N] = {ORC_GGML_Q8_0, ORC_GGML_Q4_0, ORC_Q_PAL4, ORC_Q_PAL2};

static const char *const PROJ_GGUF[ORC_QLLM_PROJ] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                     "ffn_gate", "ffn_up", "ffn_down"};

const char *orc_quant_proj_name(int64_t l, int i, char *buf, size_t n) {
    snprintf(buf, n, "blk.%lld.%s.weight", (long long)l, i >= 0 && i < ORC_QLLM_PROJ ? PROJ_GGUF[i] : "?");
    return buf;
}

static bool known_type(orc_ggml_type t) {
    return t == ORC_GGML_Q8_0 || t == ORC_GGML_Q4_0 || orc_q_type_is_pal(t);
}

orc_status orc_quant_plan_uniform(orc_quant_plan *p, int64_t n_layers, orc_ggml_type type, int64_t group,
                                  orc_error *err) {
    memset(p, 0, sizeof *p);
    if (!known_type(type))
        return orc_error_set(err, ORC_EINVAL, "quantize: type %s is not Q8_0, Q4_0, PAL4 or PAL2",
                             orc_q_type_name(type));
    if (n_layers < 0) return orc_error_set(err, ORC_EINVAL, "quantize: %lld layers", (long long)n_layers);
    p->proj = malloc(sizeof(orc_ggml_type) * (size_t)(n_layers * ORC_QLLM_PROJ + 1));
    if (!p->proj) return orc_error_set(err, ORC_ENOMEM, "quantize: out of memory");
    for (int64_t i = 0; i < n_layers * ORC_QLLM_PROJ; i++) p->proj[i] = type;
    p->n_layers = n_layers;
    p->embed = ORC_GGML_Q8_0; /* the embeddings at 8 bits whatever the projections use */
    p->group = group > 0 ? group : ORC_Q_PAL_GROUP;
    snprintf(p->scheme, sizeof p->scheme, "%s",
             type == ORC_GGML_Q8_0   ? "q8_0"
             : type == ORC_GGML_Q4_0 ? "q4_0"
             : type == ORC_Q_PAL4    ? "pal4"
                                     : "pal2");
    return ORC_OK;
}

void orc_quant_plan_release(orc_quant_plan *p) {
    if (!p) return;
    free(p->proj);
    p->proj = NULL;
}

size_t orc_quant_matrix_bytes(orc_ggml_type type, int64_t rows, int64_t cols, int64_t group) {
    if (group <= 0) group = ORC_Q_PAL_GROUP;
    if (type == ORC_GGML_F16) return rows > 0 && cols > 0 ? (size_t)(rows * cols) * 2 : 0; /* the fallback */
    const size_t rb = orc_q_row_bytes(type, cols);
    if (!rb || rows <= 0) return 0;
    size_t n = rb * (size_t)rows;
    if (orc_q_type_is_pal(type)) {
        if (group % ORC_Q_PAL_SUB || cols % group) return 0;
        n += (size_t)(cols / group) * ((size_t)orc_q_pal_entries(type) + sizeof(float));
    }
    return n;
}

/* ---- the F16 fallback ----------------------------------------------------------------- */

/* Only the row length decides: a group that does not divide a whole-block
 * row stays the user's error (orc_qmat_quantize_ex names it). */
orc_ggml_type orc_quant_fit_type(orc_ggml_type type, int64_t cols) {
    return known_type(type) && cols % ORC_Q_BLOCK ? ORC_GGML_F16 : type;
}

orc_status orc_qmat_quantize_fit(orc_qmat *q, orc_ggml_type type, const float *w, int64_t rows, int64_t cols,
                                 int64_t group, orc_error *err) {
    if (orc_quant_fit_type(type, cols) != ORC_GGML_F16 || rows <= 0 || cols <= 0)
        return orc_qmat_quantize_ex(q, type, w, rows, cols, group, err);
    memset(q, 0, sizeof *q);
    const size_t n = (size_t)(rows * cols) * 2;
    uint8_t *buf = malloc(n);
    if (!buf) return orc_error_set(err, ORC_ENOMEM, "quant: out of memory for an F16 [%lld, %lld] matrix",
                                   (long long)rows, (long long)cols);
    orc_status st = orc_ggml_quantize(ORC_GGML_F16, w, buf, rows * cols, err);
    if (st != ORC_OK) {
        free(buf);
        return st;
    }
    *q = (orc_qmat){.type = ORC_GGML_F16, .rows = rows, .cols = cols, .row_bytes = (size_t)cols * 2, .data = buf,
                    .owned = buf};
    return ORC_OK;
}

/* [rows, cols] of projection i in a layer. */
static void proj_shape(const orc_llm_config *c, int i, int64_t *rows, int64_t *cols) {
    const int64_t D = c->hidden_size, F = c->intermediate_size, hd = c->head_dim;
    const int64_t q = c->num_attention_heads * hd, kv = c->num_key_value_heads * hd;
    const int64_t r[ORC_QLLM_PROJ] = {q, kv, kv, D, F, F, D}, k[ORC_QLLM_PROJ] = {D, D, D, q, D, D, F};
    *rows = r[i];
    *cols = k[i];
}

/* Bytes of everything but the projections (as orc_qllm_weight_bytes counts). */
static double fixed_bytes(const orc_llm_config *c, orc_ggml_type embed, int64_t group) {
    const double e = (double)orc_quant_matrix_bytes(orc_quant_fit_type(embed, c->hidden_size), c->vocab_size,
                                                    c->hidden_size, group);
    return e * (c->tie_word_embeddings ? 1.0 : 2.0) +
           4.0 * (double)(c->num_hidden_layers * 2 * c->hidden_size + c->hidden_size);
}

/* Bytes of a matrix planned as type, after the fallback. */
static size_t fit_bytes(orc_ggml_type type, int64_t rows, int64_t cols, int64_t group) {
    return orc_quant_matrix_bytes(orc_quant_fit_type(type, cols), rows, cols, group);
}

double orc_quant_plan_bpw(const orc_llm_config *cfg, const orc_quant_plan *p) {
    double bytes = fixed_bytes(cfg, p->embed, p->group);
    for (int64_t l = 0; l < cfg->num_hidden_layers; l++)
        for (int i = 0; i < ORC_QLLM_PROJ; i++) {
            int64_t r, k;
            proj_shape(cfg, i, &r, &k);
            bytes += (double)fit_bytes(p->proj[l * ORC_QLLM_PROJ + i], r, k, p->group);
        }
    return 8.0 * bytes / (double)orc_llm_config_num_params(cfg);
}

static void fallback_note(FILE *fp, const char *name, orc_ggml_type type, int64_t rows, int64_t cols) {
    if (fp)
        fprintf(fp, "note: %s [%lld, %lld]: rows of %lld are not a multiple of %d, so not whole %s blocks; kept in F16 "
                "(16 bits per weight), as llama.cpp's quantizer falls back\n",
                name, (long long)rows, (long long)cols, (long long)cols, ORC_Q_BLOCK, orc_q_type_name(type));
}

int orc_quant_plan_fallbacks(const orc_llm_config *cfg, const orc_quant_plan *p, FILE *fp) {
    int n = 0;
    const int64_t V = cfg->vocab_size, D = cfg->hidden_size;
    if (orc_quant_fit_type(p->embed, D) == ORC_GGML_F16) {
        fallback_note(fp, "token_embd.weight", p->embed, V, D);
        n += cfg->tie_word_embeddings ? 1 : 2;
        if (!cfg->tie_word_embeddings) fallback_note(fp, "output.weight", p->embed, V, D);
    }
    for (int64_t l = 0; l < cfg->num_hidden_layers && l < p->n_layers; l++)
        for (int i = 0; i < ORC_QLLM_PROJ; i++) {
            int64_t r, k;
            proj_shape(cfg, i, &r, &k);
            const orc_ggml_type t = p->proj[l * ORC_QLLM_PROJ + i];
            if (orc_quant_fit_type(t, k) != ORC_GGML_F16) continue;
            char name[96];
            fallback_note(fp, orc_quant_proj_name(l, i, name, sizeof name), t, r, k);
            n++;
        }
    return n;
}

/* ---- sensitivity ------------------------------------------------------------------- */

static orc_tensor *proj_tensor(orc_llm *m, int64_t l, int i) {
    orc_llm_layer *y = &m->layers[l];
    orc_tensor *t[ORC_QLLM_PROJ] = {y->wq, y->wk, y->wv, y->wo, y->w_gate, y->w_up, y->w_down};
    return t[i];
}

orc_status orc_quant_sensitivity(orc_llm *m, const int32_t *ids, size_t n, int64_t context, int64_t group,
                                 double *base_loss, double *delta, orc_error *err) {
    if (n < 2) return orc_error_set(err, ORC_EINVAL, "mixed: the calibration text has %zu tokens; it needs 2 or more", n);
    orc_eval_result r;
    orc_status st = orc_eval_ids(m, ids, n, NULL, context, 0, &r, err);
    if (st != ORC_OK) return st;
    *base_loss = r.loss;
    const int64_t L = m->cfg.num_hidden_layers;
    for (int64_t l = 0; l < L && st == ORC_OK; l++)
        for (int i = 0; i < ORC_QLLM_PROJ && st == ORC_OK; i++) {
            orc_tensor *t = proj_tensor(m, l, i);
            const size_t bytes = sizeof(float) * (size_t)t->numel;
            float *saved = malloc(bytes);
            if (!saved) return orc_error_set(err, ORC_ENOMEM, "mixed: out of memory");
            memcpy(saved, t->data, bytes);
            for (int c = 0; c < ORC_QMIX_N && st == ORC_OK; c++) {
                orc_qmat q;
                st = orc_qmat_quantize_fit(&q, ORC_QMIX_TYPES[c], saved, t->shape[0], t->shape[1], group, err);
                if (st != ORC_OK) break;
                orc_qmat_dequantize(&q, orc_f32(t));
                orc_qmat_release(&q);
                st = orc_eval_ids(m, ids, n, NULL, context, 0, &r, err);
                delta[(l * ORC_QLLM_PROJ + i) * ORC_QMIX_N + c] = r.loss - *base_loss;
            }
            memcpy(t->data, saved, bytes);
            free(saved);
        }
    return st;
}

/* ---- the greedy knapsack ------------------------------------------------------------ */

orc_status orc_quant_plan_mixed(const orc_llm_config *cfg, double budget, int64_t group, const double *delta,
                                orc_quant_plan *p, double *achieved, orc_error *err) {
    const int64_t L = cfg->num_hidden_layers, N = L * ORC_QLLM_PROJ;
    orc_status st = orc_quant_plan_uniform(p, L, ORC_GGML_Q8_0, group, err);
    if (st != ORC_OK) return st;
    snprintf(p->scheme, sizeof p->scheme, "mixed:%g", budget);
    /* the floor: every projection at its smallest candidate */
    for (int64_t t = 0; t < N; t++) p->proj[t] = ORC_Q_PAL2;
    const double floor_bpw = orc_quant_plan_bpw(cfg, p);
    for (int64_t t = 0; t < N; t++) p->proj[t] = ORC_GGML_Q8_0;
    if (budget < floor_bpw) {
        orc_quant_plan_release(p);
        return orc_error_set(err, ORC_EINVAL, "mixed: a budget of %.3f bits per weight is below the %.3f this model "
                             "reaches with every projection in PAL2 and the embeddings in Q8_0",
                             budget, floor_bpw);
    }
    int *cur = calloc((size_t)(N + 1), sizeof(int)); /* candidate index of each projection */
    if (!cur) {
        orc_quant_plan_release(p);
        return orc_error_set(err, ORC_ENOMEM, "mixed: out of memory");
    }
    double bpw = orc_quant_plan_bpw(cfg, p);
    while (bpw > budget) {
        int64_t best_t = -1;
        int best_c = -1;
        double best_score = INFINITY;
        for (int64_t t = 0; t < N; t++) {
            int64_t r, k;
            proj_shape(cfg, (int)(t % ORC_QLLM_PROJ), &r, &k);
            const double now_bits = 8.0 * (double)fit_bytes(ORC_QMIX_TYPES[cur[t]], r, k, p->group);
            const double now_loss = fmax(0.0, delta[t * ORC_QMIX_N + cur[t]]);
            for (int c = 0; c < ORC_QMIX_N; c++) {
                const double bits = 8.0 * (double)fit_bytes(ORC_QMIX_TYPES[c], r, k, p->group);
                if (bits >= now_bits) continue;
                const double score = (fmax(0.0, delta[t * ORC_QMIX_N + c]) - now_loss) / (now_bits - bits);
                if (score < best_score) {
                    best_score = score;
                    best_t = t;
                    best_c = c;
                }
            }
        }
        if (best_t < 0) break; /* nothing narrower left (cannot happen above the floor) */
        cur[best_t] = best_c;
        p->proj[best_t] = ORC_QMIX_TYPES[best_c];
        bpw = orc_quant_plan_bpw(cfg, p);
    }
    free(cur);
    *achieved = orc_quant_plan_bpw(cfg, p);
    return ORC_OK;
}
