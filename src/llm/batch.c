/* The paged KV pool and the batched step (see orchard/batch.h). The pool
 * owns pages of ORC_KV_PAGE positions (every layer's keys and values),
 * their reference counts, a free list, and the sequences: a length, the ids
 * and a page table each. The step runs the decoder for several sequences
 * of different lengths in one forward: rows of all sequences are stacked
 * into one [N, D] activation; norms, RoPE (at each row's own position),
 * SwiGLU and residual adds are row-wise ops over it; the projections read
 * each weight row once for every short sequence's rows together; keys and
 * values are written into each sequence's pages and attention reads them
 * there (orc_attention_paged); LoRA deltas are added per row, each row
 * under its own sequence's stack (plan_lora). Each row's arithmetic is the
 * one the single-sequence forward (orc_llm_hidden + orc_linear) does for
 * it, which is what makes a sequence's logits independent of its batch
 * mates. The same step runs a quantized model (orc_qllm_step_adapters):
 * only the weights differ (step_model / step_layer pick them), the
 * projections go through the integer kernels over all N rows at once
 * (a row's result does not depend on how many rows share the call), and
 * everything between the projections is this file's shared code. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/batch.h"
#include "orchard/lora.h"
#include "orchard/ops.h"
#include "orchard/quant.h"
#include "ops/matvec.h"

typedef struct kv_seq {
    bool live;
    int64_t len;
    int64_t n_pages; /* pages in the table; may exceed ceil(len / page) only inside a step */
    int32_t *pages;  /* [max_len / page rounded up] */
    int32_t *tokens; /* [max_len] */
} kv_seq;

struct orc_kv_pool {
    int64_t n_layers, row; /* row: n_kv_heads * head_dim floats per position */
    int64_t max_len, max_pages, page_floats, table_cap;
    float **pages;      /* [max_pages], NULL until first used */
    int32_t *refs;      /* [max_pages] */
    int32_t *free_ids;  /* stack of unused page numbers, [max_pages] */
    int64_t n_free, n_allocated;
    kv_seq *seqs;
    int32_t n_seqs, cap_seqs; /* slots in use or freed; capacity */
};

/* ---- pool ----------------------------------------------------------------------- */

orc_kv_pool *orc_kv_pool_new(const orc_llm_config *cfg, int64_t max_len, int64_t max_pages, orc_error *err) {
    if (orc_llm_config_validate(cfg, err) != ORC_OK) return NULL;
    const int64_t max_pos = cfg->max_position_embeddings;
    if (max_len <= 0) max_len = max_pos;
    if (max_len > max_pos) {
        orc_error_set(err, ORC_EINVAL, "kv pool: max_len %lld exceeds the model's max_position_embeddings %lld",
                      (long long)max_len, (long long)max_pos);
        return NULL;
    }
    const int64_t table = (max_len + ORC_KV_PAGE - 1) / ORC_KV_PAGE;
    if (max_pages <= 0) max_pages = 16 * table;
    if (max_pages > INT32_MAX) {
        orc_error_set(err, ORC_EINVAL, "kv pool: %lld pages exceed the limit of %d", (long long)max_pages,
                      INT32_MAX);
        return NULL;
    }
    orc_kv_pool *p = calloc(1, sizeof *p);
    if (!p) goto oom;
    p->n_layers = cfg->num_hidden_layers;
    p->row = cfg->num_key_value_heads * cfg->head_dim;
    p->max_len = max_len;
    p->max_pages = max_pages;
    p->table_cap = table;
    p->page_floats = p->n_layers * 2 * ORC_KV_PAGE * p->row;
    p->pages = calloc((size_t)max_pages, sizeof *p->pages);
    p->refs = calloc((size_t)max_pages, sizeof *p->refs);
    p->free_ids = malloc(sizeof(int32_t) * (size_t)max_pages);
    if (!p->pages || !p->refs || !p->free_ids) goto oom;
    /* Pop order 0, 1, 2, ...: low page numbers are reused first. */
    for (int64_t i = 0; i < max_pages; i++) p->free_ids[i] = (int32_t)(max_pages - 1 - i);
    p->n_free = max_pages;
    return p;
oom:
    orc_error_set(err, ORC_ENOMEM, "kv pool: out of memory for the tables of %lld pages", (long long)max_pages);
    orc_kv_pool_free(p);
    return NULL;
}

void orc_kv_pool_free(orc_kv_pool *p) {
    if (!p) return;
    for (int32_t i = 0; i < p->n_seqs; i++) {
        free(p->seqs[i].pages);
        free(p->seqs[i].tokens);
    }
    free(p->seqs);
    if (p->pages)
        for (int64_t i = 0; i < p->max_pages; i++) free(p->pages[i]);
    free(p->pages);
    free(p->refs);
    free(p->free_ids);
    free(p);
}

void orc_kv_pool_get_stats(const orc_kv_pool *p, orc_kv_pool_stats *s) {
    memset(s, 0, sizeof *s);
    s->page_bytes = p->page_floats * (int64_t)sizeof(float);
    s->pages_max = p->max_pages;
    s->pages_used = p->max_pages - p->n_free;
    s->pages_allocated = p->n_allocated;
    s->max_len = p->max_len;
    for (int32_t i = 0; i < p->n_seqs; i++) s->sequences += p->seqs[i].live;
}

static float *page_kv(const orc_kv_pool *p, int32_t page, int64_t layer, int kv) {
    return p->pages[page] + (layer * 2 + kv) * ORC_KV_PAGE * p->row;
}

/* A free page with a reference count of 1, or -1 when the pool is full. */
static int32_t page_take(orc_kv_pool *p, orc_error *err) {
    if (p->n_free == 0) {
        orc_error_set(err, ORC_ENOMEM, "kv pool: all %lld pages (%lld positions each) are in use", (long long)p->max_pages,
                      (long long)ORC_KV_PAGE);
        return -1;
    }
    const int32_t id = p->free_ids[p->n_free - 1];
    if (!p->pages[id]) {
        const size_t bytes = sizeof(float) * (size_t)p->page_floats;
        p->pages[id] = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!p->pages[id]) {
            orc_error_set(err, ORC_ENOMEM, "kv pool: out of memory for a page of %zu bytes", bytes);
            return -1;
        }
        p->n_allocated++;
    }
    p->n_free--;
    p->refs[id] = 1;
    return id;
}

static void page_release(orc_kv_pool *p, int32_t id) {
    if (--p->refs[id] == 0) p->free_ids[p->n_free++] = id;
}

/* Release the pages of s from index `keep` on. */
static void seq_drop_pages(orc_kv_pool *p, kv_seq *s, int64_t keep) {
    for (int64_t i = keep; i < s->n_pages; i++) page_release(p, s->pages[i]);
    if (s->n_pages > keep) s->n_pages = keep;
}

static kv_seq *seq_get(const orc_kv_pool *p, int32_t seq, const char *who, orc_error *err) {
    if (seq < 0 || seq >= p->n_seqs || !p->seqs[seq].live) {
        orc_error_set(err, ORC_EINVAL, "%s: %d is not a live sequence of the kv pool", who, (int)seq);
        return NULL;
    }
    return &p->seqs[seq];
}

int32_t orc_kv_seq_new(orc_kv_pool *p, orc_error *err) {
    int32_t id = 0;
    while (id < p->n_seqs && p->seqs[id].live) id++;
    if (id == p->n_seqs) {
        if (p->n_seqs == p->cap_seqs) {
            const int32_t cap = p->cap_seqs ? p->cap_seqs * 2 : 16;
            kv_seq *s = realloc(p->seqs, sizeof *s * (size_t)cap);
            if (!s) {
                orc_error_set(err, ORC_ENOMEM, "kv pool: out of memory for sequence %d", (int)id);
                return -1;
            }
            p->seqs = s;
            p->cap_seqs = cap;
        }
        memset(&p->seqs[id], 0, sizeof p->seqs[id]);
        p->n_seqs++;
    }
    kv_seq *s = &p->seqs[id];
    /* A freed slot keeps its tables for the next sequence. */
    if (!s->pages) s->pages = malloc(sizeof(int32_t) * (size_t)p->table_cap);
    if (!s->tokens) s->tokens = malloc(sizeof(int32_t) * (size_t)p->max_len);
    if (!s->pages || !s->tokens) {
        orc_error_set(err, ORC_ENOMEM, "kv pool: out of memory for sequence %d", (int)id);
        return -1;
    }
    s->live = true;
    s->len = 0;
    s->n_pages = 0;
    return id;
}

orc_status orc_kv_seq_free(orc_kv_pool *p, int32_t seq, orc_error *err) {
    kv_seq *s = seq_get(p, seq, "kv seq free", err);
    if (!s) return ORC_EINVAL;
    seq_drop_pages(p, s, 0);
    s->live = false;
    s->len = 0;
    return ORC_OK;
}

/* dst (live, holding no pages) becomes a sharing copy of src. */
static void share_into(orc_kv_pool *p, kv_seq *dst, const kv_seq *src) {
    for (int64_t i = 0; i < src->n_pages; i++) p->refs[src->pages[i]]++;
    memcpy(dst->pages, src->pages, sizeof(int32_t) * (size_t)src->n_pages);
    memcpy(dst->tokens, src->tokens, sizeof(int32_t) * (size_t)src->len);
    dst->n_pages = src->n_pages;
    dst->len = src->len;
}

int32_t orc_kv_seq_fork(orc_kv_pool *p, int32_t src, orc_error *err) {
    if (!seq_get(p, src, "kv seq fork", err)) return -1;
    int32_t id = orc_kv_seq_new(p, err); /* may move p->seqs */
    if (id < 0) return -1;
    share_into(p, &p->seqs[id], &p->seqs[src]);
    return id;
}

orc_status orc_kv_seq_copy(orc_kv_pool *p, int32_t dst, int32_t src, orc_error *err) {
    kv_seq *d = seq_get(p, dst, "kv seq copy", err), *s = seq_get(p, src, "kv seq copy", err);
    if (!d || !s) return ORC_EINVAL;
    if (d == s) return ORC_OK;
    seq_drop_pages(p, d, 0);
    share_into(p, d, s);
    return ORC_OK;
}

orc_status orc_kv_seq_resample(orc_kv_pool *p, const int32_t *seqs, const int64_t *ancestors, int64_t n,
                               orc_error *err) {
    for (int64_t i = 0; i < n; i++) {
        if (!seq_get(p, seqs[i], "kv seq resample", err)) return ORC_EINVAL;
        if (ancestors[i] < 0 || ancestors[i] >= n)
            return orc_error_set(err, ORC_ERANGE, "kv seq resample: ancestor %lld of particle %lld is outside [0, %lld)",
                                 (long long)ancestors[i], (long long)i, (long long)n);
        for (int64_t j = 0; j < i; j++)
            if (seqs[j] == seqs[i])
                return orc_error_set(err, ORC_EINVAL, "kv seq resample: sequence %d appears twice", (int)seqs[i]);
    }
    /* Hold every ancestor's pages in a temporary fork first, so that
     * overwriting particle i cannot change what a later particle copies. */
    int32_t *tmp = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (!tmp) return orc_error_set(err, ORC_ENOMEM, "kv seq resample: out of memory");
    orc_status st = ORC_OK;
    int64_t made = 0;
    for (; made < n; made++) {
        tmp[made] = -1;
        bool used = false;
        for (int64_t i = 0; i < n && !used; i++) used = ancestors[i] == made;
        if (!used) continue;
        tmp[made] = orc_kv_seq_fork(p, seqs[made], err);
        if (tmp[made] < 0) {
            st = err ? err->code : ORC_ENOMEM;
            break;
        }
    }
    for (int64_t i = 0; i < n && st == ORC_OK; i++) st = orc_kv_seq_copy(p, seqs[i], tmp[ancestors[i]], err);
    for (int64_t k = 0; k < made; k++)
        if (tmp[k] >= 0) orc_kv_seq_free(p, tmp[k], NULL);
    free(tmp);
    return st;
}

orc_status orc_kv_seq_truncate(orc_kv_pool *p, int32_t seq, int64_t len, orc_error *err) {
    kv_seq *s = seq_get(p, seq, "kv seq truncate", err);
    if (!s) return ORC_EINVAL;
    if (len < 0 || len > s->len)
        return orc_error_set(err, ORC_ERANGE, "kv seq truncate: length %lld is outside [0, %lld] for sequence %d",
                             (long long)len, (long long)s->len, (int)seq);
    seq_drop_pages(p, s, (len + ORC_KV_PAGE - 1) / ORC_KV_PAGE);
    s->len = len;
    return ORC_OK;
}

int64_t orc_kv_seq_len(const orc_kv_pool *p, int32_t seq) {
    const kv_seq *s = seq_get(p, seq, "kv seq len", NULL);
    return s ? s->len : -1;
}

const int32_t *orc_kv_seq_tokens(const orc_kv_pool *p, int32_t seq, int64_t *n) {
    const kv_seq *s = seq_get(p, seq, "kv seq tokens", NULL);
    if (n) *n = s ? s->len : 0;
    return s ? s->tokens : NULL;
}

int64_t orc_kv_seq_shared_pages(const orc_kv_pool *p, int32_t seq) {
    const kv_seq *s = seq_get(p, seq, "kv seq shared pages", NULL);
    int64_t n = 0;
    if (s)
        for (int64_t i = 0; i < s->n_pages; i++) n += p->refs[s->pages[i]] > 1;
    return n;
}

/* Make positions [len, len + n) of s writable: copy a shared, partly filled
 * last page (its filled rows only), add pages to the table. On failure the
 * table may hold extra pages; the caller drops them. */
static orc_status seq_reserve(orc_kv_pool *p, kv_seq *s, int64_t n, orc_error *err) {
    const int64_t in_page = s->len % ORC_KV_PAGE, last = s->len / ORC_KV_PAGE;
    if (in_page && p->refs[s->pages[last]] > 1) {
        const int32_t old = s->pages[last], nw = page_take(p, err);
        if (nw < 0) return err ? err->code : ORC_ENOMEM;
        for (int64_t l = 0; l < p->n_layers; l++)
            for (int kv = 0; kv < 2; kv++)
                memcpy(page_kv(p, nw, l, kv), page_kv(p, old, l, kv), sizeof(float) * (size_t)(in_page * p->row));
        page_release(p, old);
        s->pages[last] = nw;
    }
    const int64_t need = (s->len + n + ORC_KV_PAGE - 1) / ORC_KV_PAGE;
    while (s->n_pages < need) {
        const int32_t id = page_take(p, err);
        if (id < 0) return err ? err->code : ORC_ENOMEM;
        s->pages[s->n_pages++] = id;
    }
    return ORC_OK;
}

/* ---- the step ------------------------------------------------------------------------ */

/* Where each sequence's rows sit in the stacked [N, D] activations. */
typedef struct step_plan {
    int64_t B, N;
    const orc_llm_step_seq *in;
    kv_seq **seq;
    int64_t *off;      /* [B + 1] first row of each sequence */
    int64_t *short_rows; /* rows of sequences with <= ORC_STEP_SKINNY tokens */
    int64_t n_short;
    /* LoRA: each sequence's stack (NULL: none); the short rows that have one,
     * ordered so that each chunk of <= ORC_STEP_SKINNY of them shares a stack */
    const orc_lora_stack **stack;
    int64_t *lora_rows;
    struct lora_chunk {
        int64_t at, n;
        const orc_lora_stack *s;
    } *chunks;
    int64_t n_chunks;
} step_plan;

/* The weights a step reads: a float model (f) or a quantized one (q), one
 * of the two. The attention, norms, RoPE, SwiGLU, KV pages and LoRA deltas
 * are the same code for both. */
typedef struct step_model {
    const orc_llm_config *cfg;
    orc_llm *f;
    const orc_qllm *q;
    const orc_lora_stack *lora; /* the model's own active stack (NULL: none) */
} step_model;

/* One layer's weights as the step uses them: each projection (by LoRA
 * target) is either a float tensor (w) or a quantized matrix (qw). */
typedef struct step_layer {
    orc_tensor *attn_norm, *ffn_norm, *q_norm, *k_norm;
    orc_tensor *w[ORC_LORA_N_TARGETS];
    const orc_qmat *qw[ORC_LORA_N_TARGETS];
} step_layer;

static step_layer step_layer_of(const step_model *sm, int64_t l) {
    step_layer y = {0};
    if (sm->f) {
        const orc_llm_layer *a = &sm->f->layers[l];
        y = (step_layer){.attn_norm = a->attn_norm, .ffn_norm = a->ffn_norm, .q_norm = a->q_norm, .k_norm = a->k_norm,
                         .w = {a->wq, a->wk, a->wv, a->wo, a->w_gate, a->w_up, a->w_down}};
    } else {
        const orc_qllm_layer *a = &sm->q->layers[l];
        y = (step_layer){.attn_norm = a->attn_norm, .ffn_norm = a->ffn_norm, .q_norm = a->q_norm, .k_norm = a->k_norm,
                         .qw = {&a->wq, &a->wk, &a->wv, &a->wo, &a->w_gate, &a->w_up, &a->w_down}};
    }
    return y;
}

/* An F16 fallback matrix (orc_quant_fit_type) as a float tensor in the
 * arena: exactly the values orc_qllm_linear multiplies it with. */
static orc_tensor *widen_f16(orc_ctx *ctx, const orc_qmat *w) {
    orc_tensor *wf = orc_new(ctx, ORC_F32, 2, ORC_SHAPE(w->rows, w->cols));
    if (wf) orc_qmat_dequantize(w, orc_f32(wf));
    return wf;
}

/* y [n, rows] = x [n, cols] @ w^T through the integer kernels: x rounded
 * to Q8_0 row by row, as orc_q_linear does. Each output is one dot product
 * whatever n is (docs/quantization.md), so stacking every sequence's rows
 * into one call changes no bit and reads each weight tile once per step. */
static bool quant_rows(orc_ctx *ctx, const orc_qmat *w, const float *x, int64_t n, float *y) {
    const size_t xb = orc_q_row_bytes(ORC_GGML_Q8_0, w->cols);
    uint8_t *xq = orc_arena_alloc(ctx->arena, xb * (size_t)n);
    if (!xq) {
        orc_fail(ctx, ORC_ENOMEM, "llm step: out of memory for %lld quantized activation rows", (long long)n);
        return false;
    }
    orc_q8_quantize_rows(x, n, w->cols, xq);
    orc_q_matmul_q8(w, xq, n, y);
    return true;
}

/* Whether some adapter of s adapts (layer, target). */
static bool stack_targets(const orc_lora_stack *s, int64_t layer, int target) {
    for (int i = 0; i < s->n; i++)
        if (s->ad[i]->a[layer * ORC_LORA_N_TARGETS + target]) return true;
    return false;
}

/* Add the LoRA deltas of (layer, target) to the rows of y that have
 * adapters (S-LoRA style: the base product ran for all rows at once). Each
 * row goes through orc_lora_project, the function the single-sequence
 * forward uses: a long chunk on its own (the product shape it has there),
 * short rows gathered by stack into products of <= ORC_STEP_SKINNY rows,
 * which orc_linear's small-product kernel computes row by row, so
 * gathering them does not change a row's bits. */
static bool plan_lora(orc_ctx *ctx, const step_plan *pl, int64_t layer, int target, const orc_tensor *x,
                      orc_tensor *y) {
    const int64_t din = x->shape[2], dout = y->shape[2];
    const float *xd = orc_f32(x);
    float *yd = orc_f32(y);
    for (int64_t c = 0; c < pl->n_chunks; c++) {
        const struct lora_chunk *ch = &pl->chunks[c];
        if (!stack_targets(ch->s, layer, target)) continue;
        orc_arena_mark mk = orc_arena_get_mark(ctx->arena);
        orc_tensor *xg = orc_new(ctx, ORC_F32, 3, ORC_SHAPE(1, ch->n, din));
        orc_tensor *yg = orc_new(ctx, ORC_F32, 3, ORC_SHAPE(1, ch->n, dout));
        if (!xg || !yg) return false;
        for (int64_t r = 0; r < ch->n; r++) {
            const int64_t row = pl->lora_rows[ch->at + r];
            memcpy(orc_f32(xg) + r * din, xd + row * din, sizeof(float) * (size_t)din);
            memcpy(orc_f32(yg) + r * dout, yd + row * dout, sizeof(float) * (size_t)dout);
        }
        orc_tensor *yo = orc_lora_project(ctx, ch->s, layer, target, xg, yg);
        if (!yo || !orc_ctx_ok(ctx)) return false;
        for (int64_t r = 0; r < ch->n; r++)
            memcpy(yd + pl->lora_rows[ch->at + r] * dout, orc_f32(yo) + r * dout, sizeof(float) * (size_t)dout);
        orc_arena_rewind(ctx->arena, mk);
    }
    for (int64_t i = 0; i < pl->B; i++) {
        const int64_t n = pl->in[i].n;
        if (n <= ORC_STEP_SKINNY || !pl->stack[i] || !stack_targets(pl->stack[i], layer, target)) continue;
        orc_arena_mark mk = orc_arena_get_mark(ctx->arena);
        orc_tensor *xi = orc_tensor_wrap(ctx->arena, ORC_F32, 3, ORC_SHAPE(1, n, din), (void *)(xd + pl->off[i] * din),
                                         &ctx->err);
        orc_tensor *yi = xi ? orc_tensor_wrap(ctx->arena, ORC_F32, 3, ORC_SHAPE(1, n, dout), yd + pl->off[i] * dout,
                                              &ctx->err)
                            : NULL;
        orc_tensor *yo = yi ? orc_lora_project(ctx, pl->stack[i], layer, target, xi, yi) : NULL;
        if (!yo || !orc_ctx_ok(ctx)) return false;
        memcpy(yd + pl->off[i] * dout, orc_f32(yo), sizeof(float) * (size_t)(n * dout));
        orc_arena_rewind(ctx->arena, mk);
    }
    return true;
}

/* y = x @ w^T for float w, row by row as orc_linear computes each
 * sequence's rows alone: the short sequences' rows in one pass over w, a
 * longer chunk in its own product. */
static bool float_rows(orc_ctx *ctx, const step_plan *pl, const float *xd, orc_tensor *w, float *yd) {
    const int64_t din = w->shape[1], dout = w->shape[0];
    if (pl->n_short) orc_matvec_rows(pl->n_short, pl->short_rows, dout, din, xd, orc_f32(w), 0.0f, yd);
    for (int64_t i = 0; i < pl->B; i++) {
        const int64_t n = pl->in[i].n;
        if (n <= ORC_STEP_SKINNY) continue;
        orc_arena_mark mk = orc_arena_get_mark(ctx->arena);
        orc_tensor *xi = orc_tensor_wrap(ctx->arena, ORC_F32, 3, ORC_SHAPE(1, n, din), (void *)(xd + pl->off[i] * din),
                                         &ctx->err);
        orc_tensor *yi = xi ? orc_linear(ctx, xi, w, NULL) : NULL;
        if (!yi) return false;
        memcpy(yd + pl->off[i] * dout, orc_f32(yi), sizeof(float) * (size_t)(n * dout));
        orc_arena_rewind(ctx->arena, mk);
    }
    return true;
}

/* y [1, N, Dout] = x [1, N, Din] @ W^T for the projection `target` of
 * layer ly, each row as the single-sequence forward computes it (float:
 * float_rows; quantized: quant_rows; an F16 fallback: float_rows on its
 * widened copy, as orc_qllm_linear does), plus each row's LoRA deltas
 * (plan_lora: the same bits as the single sequence's too). */
static orc_tensor *plan_linear(orc_ctx *ctx, const step_plan *pl, const step_layer *ly, int64_t layer, int target,
                               orc_tensor *x) {
    if (!x || !orc_ctx_ok(ctx)) return NULL;
    orc_tensor *w = ly->w[target];
    const orc_qmat *qw = ly->qw[target];
    const int64_t dout = w ? w->shape[0] : qw->rows;
    orc_tensor *y = orc_new(ctx, ORC_F32, 3, ORC_SHAPE(1, pl->N, dout));
    if (!y) return NULL;
    orc_arena_mark mk = orc_arena_get_mark(ctx->arena); /* scratch (a widened matrix, Q8_0 rows) ends here */
    if (!w && qw->type == ORC_GGML_F16 && !(w = widen_f16(ctx, qw))) return NULL;
    const bool ok =
        w ? float_rows(ctx, pl, orc_f32(x), w, orc_f32(y)) : quant_rows(ctx, qw, orc_f32(x), pl->N, orc_f32(y));
    orc_arena_rewind(ctx->arena, mk);
    return ok && plan_lora(ctx, pl, layer, target, x, y) ? y : NULL;
}

/* Write this layer's rotated keys and the values ([1, N, Hkv, hd],
 * contiguous) into each sequence's pages, then attend. */
static orc_tensor *plan_attend(orc_ctx *ctx, const step_plan *pl, orc_kv_pool *p, const orc_llm_config *c,
                               int64_t layer, orc_tensor *q, orc_tensor *k, orc_tensor *v) {
    if (!q || !k || !v || !orc_ctx_ok(ctx)) return NULL;
    const int64_t row = p->row, Hq = c->num_attention_heads, hd = c->head_dim;
    const float *kd = orc_f32(k), *vd = orc_f32(v);
    for (int64_t i = 0; i < pl->B; i++) {
        const kv_seq *s = pl->seq[i];
        for (int64_t t = 0; t < pl->in[i].n; t++) {
            const int64_t pos = s->len + t, r = pl->off[i] + t;
            const int32_t pg = s->pages[pos / ORC_KV_PAGE];
            const int64_t at = (pos % ORC_KV_PAGE) * row;
            memcpy(page_kv(p, pg, layer, 0) + at, kd + r * row, sizeof(float) * (size_t)row);
            memcpy(page_kv(p, pg, layer, 1) + at, vd + r * row, sizeof(float) * (size_t)row);
        }
    }
    orc_tensor *out = orc_new(ctx, ORC_F32, 3, ORC_SHAPE(1, pl->N, Hq * hd));
    orc_attn_paged_seq *as = orc_arena_alloc(ctx->arena, sizeof *as * (size_t)pl->B);
    const float **tab = orc_arena_alloc(ctx->arena, sizeof *tab * (size_t)(2 * pl->B * p->table_cap));
    if (!out || !as || !tab) {
        orc_fail(ctx, ORC_ENOMEM, "llm step: out of memory for the attention tables");
        return NULL;
    }
    for (int64_t i = 0; i < pl->B; i++) {
        const kv_seq *s = pl->seq[i];
        const float **kt = tab + 2 * i * p->table_cap, **vt = kt + p->table_cap;
        for (int64_t j = 0; j < s->n_pages; j++) {
            kt[j] = page_kv(p, s->pages[j], layer, 0);
            vt[j] = page_kv(p, s->pages[j], layer, 1);
        }
        as[i] = (orc_attn_paged_seq){.q = orc_f32(q) + pl->off[i] * Hq * hd,
                                     .out = orc_f32(out) + pl->off[i] * Hq * hd,
                                     .T = pl->in[i].n,
                                     .S = s->len + pl->in[i].n,
                                     .k_pages = kt,
                                     .v_pages = vt};
    }
    if (!orc_attention_paged(ctx, as, pl->B, Hq, c->num_key_value_heads, hd, ORC_KV_PAGE)) return NULL;
    return out;
}

/* The forward itself; errors land in ctx. Returns the final hidden states
 * of the last rows, [B, D]. */
static orc_tensor *step_forward(orc_ctx *ctx, const step_model *sm, orc_kv_pool *p, const step_plan *pl) {
    const orc_llm_config *c = sm->cfg;
    const int64_t N = pl->N, Hq = c->num_attention_heads, Hkv = c->num_key_value_heads, hd = c->head_dim;
    const float eps = (float)c->rms_norm_eps, theta = (float)c->rope_theta;
    orc_tensor *ids = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, N));
    orc_tensor *pos = orc_new(ctx, ORC_I32, 1, ORC_SHAPE(N));
    if (!ids || !pos) return NULL;
    for (int64_t i = 0; i < pl->B; i++)
        for (int64_t t = 0; t < pl->in[i].n; t++) {
            orc_i32(ids)[pl->off[i] + t] = pl->in[i].ids[t];
            orc_i32(pos)[pl->off[i] + t] = (int32_t)(pl->seq[i]->len + t);
        }
    orc_tensor *h = sm->f ? orc_embedding(ctx, sm->f->embed, ids) : orc_qmat_embedding(ctx, &sm->q->embed, ids);
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const step_layer y = step_layer_of(sm, l);
        orc_tensor *x = orc_rmsnorm(ctx, h, y.attn_norm, eps);
        orc_tensor *q = orc_reshape(ctx, plan_linear(ctx, pl, &y, l, ORC_LORA_Q, x), 4, ORC_SHAPE(1, N, Hq, hd));
        orc_tensor *k = orc_reshape(ctx, plan_linear(ctx, pl, &y, l, ORC_LORA_K, x), 4, ORC_SHAPE(1, N, Hkv, hd));
        orc_tensor *v = orc_reshape(ctx, plan_linear(ctx, pl, &y, l, ORC_LORA_V, x), 4, ORC_SHAPE(1, N, Hkv, hd));
        if (c->qk_norm) {
            q = orc_rmsnorm(ctx, q, y.q_norm, eps);
            k = orc_rmsnorm(ctx, k, y.k_norm, eps);
        }
        q = orc_contiguous(ctx, orc_rope(ctx, q, pos, theta));
        k = orc_contiguous(ctx, orc_rope(ctx, k, pos, theta));
        v = orc_contiguous(ctx, v);
        orc_tensor *att = plan_attend(ctx, pl, p, c, l, q, k, v);
        h = orc_add(ctx, h, plan_linear(ctx, pl, &y, l, ORC_LORA_O, att));
        x = orc_rmsnorm(ctx, h, y.ffn_norm, eps);
        orc_tensor *a = orc_swiglu(ctx, plan_linear(ctx, pl, &y, l, ORC_LORA_GATE, x),
                                   plan_linear(ctx, pl, &y, l, ORC_LORA_UP, x));
        h = orc_add(ctx, h, plan_linear(ctx, pl, &y, l, ORC_LORA_DOWN, a));
    }
    if (!h || !orc_ctx_ok(ctx)) return NULL;
    const int64_t D = c->hidden_size;
    orc_tensor *last = orc_new(ctx, ORC_F32, 2, ORC_SHAPE(pl->B, D));
    if (!last) return NULL;
    for (int64_t i = 0; i < pl->B; i++)
        memcpy(orc_f32(last) + i * D, orc_f32(h) + (pl->off[i + 1] - 1) * D, sizeof(float) * (size_t)D);
    return orc_rmsnorm(ctx, last, sm->f ? sm->f->norm : sm->q->norm, eps);
}

/* The vocabulary projection of the last rows h [B, D] into logits [B, V]:
 * one row each, so as the generators compute it (orc_linear's small-product
 * kernel for float or F16 weights, the integer kernels otherwise). */
static void step_head(orc_ctx *ctx, const step_model *sm, const orc_tensor *h, int64_t B, float *logits) {
    const int64_t D = sm->cfg->hidden_size, V = sm->cfg->vocab_size;
    const orc_qmat *qh = sm->f ? NULL : &sm->q->lm_head;
    if (qh && qh->type != ORC_GGML_F16) {
        quant_rows(ctx, qh, orc_f32(h), B, logits);
        return;
    }
    orc_tensor *w = qh ? widen_f16(ctx, qh) : sm->f->lm_head;
    if (!w) return;
    int64_t *rows = orc_arena_alloc(ctx->arena, sizeof(int64_t) * (size_t)B);
    if (!rows) {
        orc_fail(ctx, ORC_ENOMEM, "llm step: out of memory");
        return;
    }
    for (int64_t i = 0; i < B; i++) rows[i] = i;
    orc_matvec_rows(B, rows, V, D, orc_f32(h), orc_f32(w), 0.0f, logits);
}

/* Gather the short rows with adapters by stack (equal stacks, not just the
 * same pointer) into chunks of at most ORC_STEP_SKINNY rows. */
static void plan_lora_chunks(step_plan *pl) {
    pl->n_chunks = 0;
    int64_t n_rows = 0;
    for (int64_t i = 0; i < pl->B; i++) {
        if (!pl->stack[i] || pl->in[i].n > ORC_STEP_SKINNY) continue;
        bool seen = false; /* grouped with an earlier sequence of an equal stack */
        for (int64_t j = 0; j < i && !seen; j++)
            seen = pl->stack[j] && pl->in[j].n <= ORC_STEP_SKINNY && orc_lora_stack_equal(pl->stack[j], pl->stack[i]);
        if (seen) continue;
        struct lora_chunk *ch = NULL;
        for (int64_t j = i; j < pl->B; j++) {
            if (!pl->stack[j] || pl->in[j].n > ORC_STEP_SKINNY || !orc_lora_stack_equal(pl->stack[j], pl->stack[i]))
                continue;
            for (int64_t t = 0; t < pl->in[j].n; t++) {
                if (!ch || ch->n == ORC_STEP_SKINNY) {
                    ch = &pl->chunks[pl->n_chunks++];
                    *ch = (struct lora_chunk){.at = n_rows, .n = 0, .s = pl->stack[i]};
                }
                pl->lora_rows[n_rows++] = pl->off[j] + t;
                ch->n++;
            }
        }
    }
}

static orc_status step_check(const step_model *sm, const orc_kv_pool *p, const orc_llm_step_seq *seqs,
                             const orc_lora_stack *const *stacks, int64_t n_seqs, step_plan *pl, orc_error *err) {
    if (n_seqs < 1) return orc_error_set(err, ORC_EINVAL, "llm step: no sequences given");
    const orc_llm_config *c = sm->cfg;
    if (p->n_layers != c->num_hidden_layers || p->row != c->num_key_value_heads * c->head_dim)
        return orc_error_set(err, ORC_ESHAPE,
                             "llm step: the kv pool was made for %lld layers x %lld floats per position, the model "
                             "has %lld x %lld",
                             (long long)p->n_layers, (long long)p->row, (long long)c->num_hidden_layers,
                             (long long)(c->num_key_value_heads * c->head_dim));
    for (int64_t l = 0; sm->f && l < c->num_hidden_layers; l++)
        if (!sm->f->layers[l].w_gate) /* a mixture-of-experts layer */
            return orc_error_set(err, ORC_EUNSUPPORTED,
                                 "llm step: layer %lld has no dense feed-forward (mixture of experts); the batched "
                                 "step supports dense layers only",
                                 (long long)l);
    const int64_t V = c->vocab_size;
    pl->off[0] = 0;
    for (int64_t i = 0; i < n_seqs; i++) {
        const orc_llm_step_seq *q = &seqs[i];
        kv_seq *s = seq_get(p, q->seq, "llm step", err);
        if (!s) return ORC_EINVAL;
        for (int64_t j = 0; j < i; j++)
            if (seqs[j].seq == q->seq)
                return orc_error_set(err, ORC_EINVAL, "llm step: sequence %d appears twice (entries %lld and %lld)",
                                     (int)q->seq, (long long)j, (long long)i);
        if (q->n < 1 || !q->ids)
            return orc_error_set(err, ORC_EINVAL, "llm step: sequence %d has %lld new tokens (want >= 1)",
                                 (int)q->seq, (long long)q->n);
        if (s->len + q->n > p->max_len)
            return orc_error_set(err, ORC_ERANGE,
                                 "llm step: sequence %d has %lld cached + %lld new tokens, beyond the pool's "
                                 "max_len %lld",
                                 (int)q->seq, (long long)s->len, (long long)q->n, (long long)p->max_len);
        for (int64_t t = 0; t < q->n; t++)
            if (q->ids[t] < 0 || q->ids[t] >= V)
                return orc_error_set(err, ORC_ERANGE,
                                     "llm step: token %lld of sequence %d is id %d, outside the vocabulary [0, %lld)",
                                     (long long)t, (int)q->seq, (int)q->ids[t], (long long)V);
        const orc_lora_stack *ls = stacks && stacks[i] ? stacks[i] : sm->lora;
        if (ls && (ls->n < 0 || ls->n > ORC_LORA_MAX_STACK))
            return orc_error_set(err, ORC_EINVAL, "llm step: sequence %d has a stack of %d adapters (0 to %d)",
                                 (int)q->seq, ls->n, ORC_LORA_MAX_STACK);
        for (int a = 0; ls && a < ls->n; a++) {
            orc_error fit = {0};
            if (!ls->ad[a] || orc_lora_check_fits(ls->ad[a], c, &fit) != ORC_OK)
                return orc_error_set(err, ls->ad[a] ? fit.code : ORC_EINVAL, "llm step: adapter %d of sequence %d: %s",
                                     a, (int)q->seq, ls->ad[a] ? fit.msg : "empty stack entry");
        }
        pl->stack[i] = ls && ls->n > 0 ? ls : NULL;
        pl->seq[i] = s;
        pl->off[i + 1] = pl->off[i] + q->n;
        if (q->n <= ORC_STEP_SKINNY)
            for (int64_t t = 0; t < q->n; t++) pl->short_rows[pl->n_short++] = pl->off[i] + t;
    }
    pl->N = pl->off[n_seqs];
    plan_lora_chunks(pl);
    return ORC_OK;
}

orc_status orc_llm_step(orc_ctx *ctx, orc_llm *m, orc_kv_pool *pool, const orc_llm_step_seq *seqs, int64_t n_seqs,
                        float *logits, float *hidden, orc_error *err) {
    return orc_llm_step_adapters(ctx, m, pool, seqs, NULL, n_seqs, logits, hidden, err);
}

/* The step for either kind of model (sm). */
static orc_status step_run(orc_ctx *ctx, const step_model *sm, orc_kv_pool *pool, const orc_llm_step_seq *seqs,
                           const orc_lora_stack *const *stacks, int64_t n_seqs, float *logits, float *hidden,
                           orc_error *err) {
    if (!ctx->no_grad) return orc_error_set(err, ORC_EINVAL, "llm step: the context must be in no-grad mode");
    if (!orc_ctx_ok(ctx))
        return orc_error_set(err, ctx->err.code, "llm step: the context carries an earlier error: %s", ctx->err.msg);
    int64_t n_tok = 0;
    for (int64_t i = 0; i < n_seqs; i++) n_tok += seqs[i].n > 0 ? seqs[i].n : 0;
    step_plan pl = {.B = n_seqs, .in = seqs};
    pl.seq = calloc((size_t)(n_seqs > 0 ? n_seqs : 1), sizeof *pl.seq);
    pl.off = calloc((size_t)(n_seqs + 1 > 1 ? n_seqs + 1 : 2), sizeof *pl.off);
    pl.short_rows = calloc((size_t)(n_tok + 1), sizeof *pl.short_rows);
    pl.stack = calloc((size_t)(n_seqs > 0 ? n_seqs : 1), sizeof *pl.stack);
    pl.lora_rows = calloc((size_t)(n_tok + 1), sizeof *pl.lora_rows);
    pl.chunks = calloc((size_t)(n_tok + 1), sizeof *pl.chunks);
    orc_status st = ORC_OK;
    if (!pl.seq || !pl.off || !pl.short_rows || !pl.stack || !pl.lora_rows || !pl.chunks) {
        st = orc_error_set(err, ORC_ENOMEM, "llm step: out of memory for %lld sequences", (long long)n_seqs);
        goto done;
    }
    st = step_check(sm, pool, seqs, stacks, n_seqs, &pl, err);
    if (st != ORC_OK) goto done;
    for (int64_t i = 0; i < n_seqs && st == ORC_OK; i++) st = seq_reserve(pool, pl.seq[i], seqs[i].n, err);
    if (st == ORC_OK) {
        orc_arena_mark mark = orc_arena_get_mark(ctx->arena);
        orc_tensor *h = step_forward(ctx, sm, pool, &pl);
        const int64_t D = sm->cfg->hidden_size;
        if (h && orc_ctx_ok(ctx)) {
            if (hidden) memcpy(hidden, orc_f32(h), sizeof(float) * (size_t)(n_seqs * D));
            if (logits) step_head(ctx, sm, h, n_seqs, logits);
        }
        if (!orc_ctx_ok(ctx) || !h) {
            st = orc_error_set(err, ctx->err.code ? ctx->err.code : ORC_ENOMEM, "llm step: %s",
                               ctx->err.code ? ctx->err.msg : "out of memory");
            orc_error_clear(&ctx->err);
        }
        orc_arena_rewind(ctx->arena, mark);
    }
    if (st == ORC_OK) {
        for (int64_t i = 0; i < n_seqs; i++) {
            kv_seq *s = pl.seq[i];
            memcpy(s->tokens + s->len, seqs[i].ids, sizeof(int32_t) * (size_t)seqs[i].n);
            s->len += seqs[i].n;
        }
    } else {
        /* Give back pages taken for this step (a copied shared page stays:
         * it holds the same keys). */
        for (int64_t i = 0; i < n_seqs; i++)
            if (pl.seq[i]) seq_drop_pages(pool, pl.seq[i], (pl.seq[i]->len + ORC_KV_PAGE - 1) / ORC_KV_PAGE);
    }
done:
    free(pl.seq);
    free(pl.off);
    free(pl.short_rows);
    free(pl.stack);
    free(pl.lora_rows);
    free(pl.chunks);
    return st;
}

orc_status orc_llm_step_adapters(orc_ctx *ctx, orc_llm *m, orc_kv_pool *pool, const orc_llm_step_seq *seqs,
                                 const orc_lora_stack *const *stacks, int64_t n_seqs, float *logits, float *hidden,
                                 orc_error *err) {
    const step_model sm = {.cfg = &m->cfg, .f = m, .lora = m->lora};
    return step_run(ctx, &sm, pool, seqs, stacks, n_seqs, logits, hidden, err);
}

orc_status orc_qllm_step_adapters(orc_ctx *ctx, const orc_qllm *q, orc_kv_pool *pool, const orc_llm_step_seq *seqs,
                                  const orc_lora_stack *const *stacks, int64_t n_seqs, float *logits, float *hidden,
                                  orc_error *err) {
    const step_model sm = {.cfg = &q->cfg, .q = q, .lora = q->lora};
    return step_run(ctx, &sm, pool, seqs, stacks, n_seqs, logits, hidden, err);
}
