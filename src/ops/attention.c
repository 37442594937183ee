/* Fused scaled dot-product attention (orc_attention) with grouped-query
 * heads, causal masking with a KV-cache offset and an optional additive mask.
 * The forward walks keys in blocks with a streaming (online) softmax per query
 * row, so no [T, S] score matrix is ever stored; it keeps only each row's
 * log-sum-exp for the backward, which recomputes the probabilities block by
 * block. Block products go through single-threaded CBLAS sgemm calls (OpenBLAS
 * runs serially inside an OpenMP region), reading q, k and v through their
 * strides, so slices of one fused projection need no copy. Work splits into
 * independent tasks, each writing its own outputs in a fixed order: the
 * forward by (batch, query head, query block), the backward by (batch, KV
 * head), which owns that head's dK and dV and the dQ of every query head that
 * shares it; results are therefore the same bits for any thread count. The
 * mask is a constant: it gets no gradient. */
#include "vec_exp.h"
#include "orchard/batch.h"
#include "orchard/ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

enum { BQ = 64, BK = 64 }; /* query rows and keys per block; BK a multiple of 8 */

typedef struct attn_dims {
    int64_t B, T, S, Hq, Hkv, D, Dv, group;
    float scale;
    bool causal;
} attn_dims;

/* A [B, rows, H, cols] tensor whose rows are read with sgemm: last stride 1,
 * row stride ld. */
typedef struct rows4 {
    const float *p;
    int64_t sb, ld, sh;
} rows4;

typedef struct attn_saved {
    attn_dims d;
    rows4 q, k, v;
    const float *mask;    /* contiguous [T, S] or [B, T, S]; NULL for none */
    int64_t mask_bstride; /* T * S for a per-batch mask, 0 for a shared one */
    float *lse;           /* [B, Hq, T]; +INFINITY marks a row with no visible key */
} attn_saved;

/* The elementwise block loops get an AVX2 copy picked at load time where the
 * CPU has it (the build targets baseline x86-64). The copy has no FMA, so
 * both give the same bits. They must inline everything they call: a call
 * from AVX code into SSE code costs more than the loop itself. */
#define VEC_CLONES ORC_VEC_CLONES

/* ---- small vectorisable kernels ------------------------------------------- */

/* e^x for the softmax: orc_vexp (vec_exp.h), vectorisable, within about
 * 1e-7 relative; -INFINITY (a masked key) gives exactly 0. */
#define exp_fast orc_vexp

/* Sums and maxima in eight fixed lanes: vectorises without reassociation,
 * and the order is the same on every call. */
static inline float lane_sum(const float *x, int64_t n) {
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int u = 0; u < 8; u++) acc[u] += x[j + u];
    for (int u = 0; j < n; j++, u++) acc[u] += x[j];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static inline float lane_dot(const float *x, const float *y, int64_t n) {
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int u = 0; u < 8; u++) acc[u] += x[j + u] * y[j + u];
    for (int u = 0; j < n; j++, u++) acc[u] += x[j] * y[j];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static inline float lane_max(const float *x, int64_t n) {
    float acc[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int u = 0; u < 8; u++) acc[u] = x[j + u] > acc[u] ? x[j + u] : acc[u];
    for (int u = 0; j < n; j++, u++) acc[u] = x[j] > acc[u] ? x[j] : acc[u];
    float m = acc[0];
    for (int u = 1; u < 8; u++) m = acc[u] > m ? acc[u] : m;
    return m;
}

static inline void scale_row(float *x, int64_t n, float s) {
    for (int64_t j = 0; j < n; j++) x[j] *= s;
}

/* ---- shared block pieces --------------------------------------------------- */

/* One past the last key that query rows [0, t_end) can see. */
static int64_t key_end(const attn_dims *d, int64_t t_end) {
    if (!d->causal) return d->S;
    int64_t e = t_end + d->S - d->T;
    return e < 0 ? 0 : e > d->S ? d->S : e;
}

/* First query row that sees key s0. */
static int64_t first_query(const attn_dims *d, int64_t s0) {
    if (!d->causal) return 0;
    int64_t t = s0 - (d->S - d->T);
    return t < 0 ? 0 : t;
}

/* sc[r, j] = scale * q_r . k_j for nq query rows (ldq apart) against nk keys
 * (ldk apart); sc has row stride BK. One query row (decoding) goes through
 * sgemv, which reads K once without sgemm's packing; forward_block and
 * paged_block both call this, so the two paths keep the same bits. */
static void qk_block(int64_t nq, int64_t nk, int64_t D, float scale, const float *q, int64_t ldq, const float *k,
                     int64_t ldk, float *sc) {
    if (nq == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nk, (int)D, scale, k, (int)ldk, q, 1, 0.0f, sc, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, (int)D, scale, q, (int)ldq, k,
                    (int)ldk, 0.0f, sc, BK);
}

/* o[r] += p[r] @ V for nq rows (o rows ldo apart, p rows BK apart). */
static void pv_block(int64_t nq, int64_t nk, int64_t Dv, const float *p, const float *v, int64_t ldv, float *o,
                     int64_t ldo) {
    if (nq == 1)
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)nk, (int)Dv, 1.0f, v, (int)ldv, p, 1, 1.0f, o, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, (int)Dv, (int)nk, 1.0f, p, BK, v, (int)ldv,
                    1.0f, o, (int)ldo);
}

/* sc[r, j] = scale * q_(t0+r) . k_(s0+j) + mask, with causally hidden keys at
 * -INFINITY. sc has row stride BK. */
static void scores(const attn_saved *a, int64_t b, int64_t h, int64_t t0, int64_t nq, int64_t s0, int64_t nk,
                   float *sc) {
    const attn_dims *d = &a->d;
    const int64_t hk = h / d->group;
    const float *qp = a->q.p + b * a->q.sb + t0 * a->q.ld + h * a->q.sh;
    const float *kp = a->k.p + b * a->k.sb + s0 * a->k.ld + hk * a->k.sh;
    qk_block(nq, nk, d->D, d->scale, qp, a->q.ld, kp, a->k.ld, sc);
    if (a->mask) {
        const float *mp = a->mask + b * a->mask_bstride + t0 * d->S + s0;
        for (int64_t r = 0; r < nq; r++) {
            float *row = sc + r * BK;
            const float *mr = mp + r * d->S;
            for (int64_t j = 0; j < nk; j++) row[j] += mr[j];
        }
    }
    if (d->causal) {
        const int64_t off = d->S - d->T;
        for (int64_t r = 0; r < nq; r++) {
            int64_t first_hidden = t0 + r + off + 1 - s0; /* keys j >= this are in the future */
            if (first_hidden < 0) first_hidden = 0;
            for (int64_t j = first_hidden; j < nk; j++) sc[r * BK + j] = -INFINITY;
        }
    }
}

/* ---- forward ---------------------------------------------------------------- */

/* Fold one block of scores into each row's running max m, sum l and output
 * o (rows ldo apart; o is rescaled here, the caller adds p @ V after). Turns
 * sc into p. */
VEC_CLONES static void online_block(float *sc, int64_t nq, int64_t nk, float *m, float *l, float *o, int64_t ldo,
                                    int64_t Dv) {
    for (int64_t r = 0; r < nq; r++) {
        float *row = sc + r * BK;
        const float mx_blk = lane_max(row, nk);
        const float mx = mx_blk > m[r] ? mx_blk : m[r];
        if (mx == -INFINITY) { /* nothing visible yet: p = 0, o and l stay 0 */
            memset(row, 0, sizeof(float) * (size_t)nk);
            continue;
        }
        for (int64_t j = 0; j < nk; j++) row[j] = exp_fast(row[j] - mx);
        const float alpha = exp_fast(m[r] - mx);
        if (alpha != 1.0f) scale_row(o + r * ldo, Dv, alpha);
        l[r] = l[r] * alpha + lane_sum(row, nk);
        m[r] = mx;
    }
}

/* Query rows [t0, t0 + nq) of head h in batch b. scratch: BQ * BK + 2 * BQ floats.
 * paged_block (below) repeats these steps for pages; tests/llm/test_batch.c
 * compares their bits, so change both together. */
static void forward_block(const attn_saved *a, int64_t b, int64_t h, int64_t t0, int64_t nq, float *scratch,
                          float *out, float *lse) {
    const attn_dims *d = &a->d;
    float *sc = scratch, *m = scratch + BQ * BK, *l = m + BQ;
    const int64_t ldo = d->Hq * d->Dv;
    float *o = out + ((b * d->T + t0) * d->Hq + h) * d->Dv;
    const float *vp = a->v.p + b * a->v.sb + (h / d->group) * a->v.sh;
    for (int64_t r = 0; r < nq; r++) {
        memset(o + r * ldo, 0, sizeof(float) * (size_t)d->Dv);
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    const int64_t s_end = key_end(d, t0 + nq);
    for (int64_t s0 = 0; s0 < s_end; s0 += BK) {
        const int64_t nk = s_end - s0 < BK ? s_end - s0 : BK;
        scores(a, b, h, t0, nq, s0, nk, sc);
        online_block(sc, nq, nk, m, l, o, ldo, d->Dv);
        if (d->Dv > 0) pv_block(nq, nk, d->Dv, sc, vp + s0 * a->v.ld, a->v.ld, o, ldo);
    }
    for (int64_t r = 0; r < nq; r++) {
        const bool any = l[r] > 0.0f;
        if (any) scale_row(o + r * ldo, d->Dv, 1.0f / l[r]);
        if (lse) lse[(b * d->Hq + h) * d->T + t0 + r] = any ? m[r] + logf(l[r]) : INFINITY;
    }
}

/* ---- backward ----------------------------------------------------------------- */

typedef struct attn_grads {
    const float *go;   /* dOut, [B, T, Hq, Dv] */
    const float *dvec; /* rowsum(dOut * Out), [B, Hq, T] */
    float *gq, *gk, *gv;
} attn_grads;

/* p = exp(scores - lse) row by row: the forward's probabilities again. */
VEC_CLONES static void probs_block(float *p, int64_t nq, int64_t nk, const float *lse) {
    for (int64_t r = 0; r < nq; r++) {
        float *row = p + r * BK;
        const float z = lse[r];
        for (int64_t j = 0; j < nk; j++) row[j] = exp_fast(row[j] - z);
    }
}

/* dS = P * (dP - rowsum(dOut * Out)) * scale, in place in dp. */
VEC_CLONES static void dscores_block(float *dp, const float *p, int64_t nq, int64_t nk, const float *dvec,
                                     float scale) {
    for (int64_t r = 0; r < nq; r++) {
        float *dr = dp + r * BK;
        const float *pr = p + r * BK;
        const float c = dvec[r];
        for (int64_t j = 0; j < nk; j++) dr[j] = pr[j] * (dr[j] - c) * scale;
    }
}

/* One (query block, key block) pair of head h: adds into dV, dK of the key
 * block and dQ of the query block. scratch: 2 * BQ * BK floats. */
static void backward_pair(const attn_saved *a, const attn_grads *g, int64_t b, int64_t h, int64_t t0, int64_t nq,
                          int64_t s0, int64_t nk, float *scratch) {
    const attn_dims *d = &a->d;
    const int64_t hk = h / d->group;
    float *p = scratch, *dp = scratch + BQ * BK;
    scores(a, b, h, t0, nq, s0, nk, p);
    probs_block(p, nq, nk, a->lse + (b * d->Hq + h) * d->T + t0);
    const int64_t ldo = d->Hq * d->Dv;
    const float *go = g->go + ((b * d->T + t0) * d->Hq + h) * d->Dv;
    const float *vp = a->v.p + b * a->v.sb + s0 * a->v.ld + hk * a->v.sh;
    if (g->gv && d->Dv > 0) {
        const int64_t ldv = d->Hkv * d->Dv;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)d->Dv, (int)nq, 1.0f, p, BK, go,
                    (int)ldo, 1.0f, g->gv + ((b * d->S + s0) * d->Hkv + hk) * d->Dv, (int)ldv);
    }
    if (!g->gq && !g->gk) return;
    if (d->Dv > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, (int)d->Dv, 1.0f, go, (int)ldo, vp,
                    (int)a->v.ld, 0.0f, dp, BK);
    else
        memset(dp, 0, sizeof(float) * BQ * BK);
    dscores_block(dp, p, nq, nk, g->dvec + (b * d->Hq + h) * d->T + t0, d->scale);
    if (g->gq) {
        const float *kp = a->k.p + b * a->k.sb + s0 * a->k.ld + hk * a->k.sh;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, (int)d->D, (int)nk, 1.0f, dp, BK, kp,
                    (int)a->k.ld, 1.0f, g->gq + ((b * d->T + t0) * d->Hq + h) * d->D, (int)(d->Hq * d->D));
    }
    if (g->gk) {
        const float *qp = a->q.p + b * a->q.sb + t0 * a->q.ld + h * a->q.sh;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)d->D, (int)nq, 1.0f, dp, BK, qp,
                    (int)a->q.ld, 1.0f, g->gk + ((b * d->S + s0) * d->Hkv + hk) * d->D, (int)(d->Hkv * d->D));
    }
}

/* Everything that KV head hk of batch b takes part in, in one fixed order:
 * key blocks outermost, then the query heads of the group, then query blocks. */
static void backward_kv_head(const attn_saved *a, const attn_grads *g, int64_t b, int64_t hk, float *scratch) {
    const attn_dims *d = &a->d;
    for (int64_t s0 = 0; s0 < d->S; s0 += BK) {
        const int64_t nk = d->S - s0 < BK ? d->S - s0 : BK;
        for (int64_t h = hk * d->group; h < (hk + 1) * d->group; h++)
            for (int64_t t0 = first_query(d, s0); t0 < d->T; t0 += BQ) {
                const int64_t nq = d->T - t0 < BQ ? d->T - t0 : BQ;
                backward_pair(a, g, b, h, t0, nq, s0, nk, scratch);
            }
    }
}

static float *thread_scratch(orc_ctx *ctx, int nthreads, int64_t per_thread) {
    return orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)(per_thread * nthreads));
}

static void attention_backward(orc_ctx *ctx, orc_node *n) {
    const attn_saved *a = n->saved;
    const attn_dims *d = &a->d;
    attn_grads g = {.go = n->out->grad};
    g.gq = orc_grad(ctx, n->in[0]);
    g.gk = orc_grad(ctx, n->in[1]);
    g.gv = orc_grad(ctx, n->in[2]);
    if (!orc_ctx_ok(ctx) || (!g.gq && !g.gk && !g.gv)) return;
    orc_arena_mark mark = orc_arena_get_mark(ctx->arena);
    const int64_t rows = d->B * d->Hq * d->T;
    float *dvec = orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)(rows + 1));
    const int nth = omp_get_max_threads();
    const int64_t per = 2 * BQ * BK;
    float *scratch = thread_scratch(ctx, nth, per);
    if (!dvec || !scratch) {
        orc_fail(ctx, ORC_ENOMEM, "attention backward: out of memory for scratch");
        return;
    }
    const float *out = orc_f32(n->out);
#pragma omp parallel for schedule(static) if (rows * d->Dv > 32768)
    for (int64_t r = 0; r < rows; r++) { /* r = (b * Hq + h) * T + t */
        const int64_t t = r % d->T, h = (r / d->T) % d->Hq, b = r / (d->T * d->Hq);
        const int64_t off = ((b * d->T + t) * d->Hq + h) * d->Dv;
        dvec[r] = lane_dot(g.go + off, out + off, d->Dv);
    }
    g.dvec = dvec;
    const int64_t tasks = d->B * d->Hkv;
#pragma omp parallel
    {
        float *mine = scratch + per * omp_get_thread_num();
        /* Tasks are independent, so handing them out dynamically (which
         * evens out causal rows and a busy core) keeps the bits. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < tasks; i++) backward_kv_head(a, &g, i / d->Hkv, i % d->Hkv, mine);
    }
    orc_arena_rewind(ctx->arena, mark);
}

/* ---- entry ---------------------------------------------------------------------- */

/* True when sgemm can read the tensor's rows in place. */
static bool rows_readable(const orc_tensor *t) {
    const int64_t D = t->shape[3];
    return (D <= 1 || t->stride[3] == 1) && (t->shape[1] <= 1 || t->stride[1] >= D);
}

static rows4 rows_of(const orc_tensor *t) {
    rows4 r = {orc_f32(t), t->stride[0], t->stride[1], t->stride[2]};
    const int64_t D = t->shape[3] > 1 ? t->shape[3] : 1;
    if (t->shape[1] <= 1 || r.ld < D) r.ld = D; /* unused but must satisfy sgemm's check */
    return r;
}

static bool fail_false(orc_ctx *ctx, orc_status code, const char *what, const orc_tensor *q, const orc_tensor *k,
                       const orc_tensor *v) {
    char a[96], b[96], c[96];
    orc_fail(ctx, code, "attention: %s (q %s, k %s, v %s)", what, orc_shape_str(a, sizeof a, q->ndim, q->shape),
             orc_shape_str(b, sizeof b, k->ndim, k->shape), orc_shape_str(c, sizeof c, v->ndim, v->shape));
    return false;
}

static bool check_shapes(orc_ctx *ctx, const orc_tensor *q, const orc_tensor *k, const orc_tensor *v,
                         const orc_tensor *mask) {
    if (q->dtype != ORC_F32 || k->dtype != ORC_F32 || v->dtype != ORC_F32)
        return fail_false(ctx, ORC_EDTYPE, "q, k and v must be f32", q, k, v);
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4)
        return fail_false(ctx, ORC_ESHAPE, "q, k, v must be [B, T, Hq, D], [B, S, Hkv, D], [B, S, Hkv, Dv]", q, k, v);
    if (k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0])
        return fail_false(ctx, ORC_ESHAPE, "batch sizes differ", q, k, v);
    if (k->shape[1] != v->shape[1] || k->shape[2] != v->shape[2])
        return fail_false(ctx, ORC_ESHAPE, "k and v must have the same S and Hkv", q, k, v);
    if (k->shape[3] != q->shape[3]) return fail_false(ctx, ORC_ESHAPE, "q and k head dims D differ", q, k, v);
    if (q->shape[3] < 1) return fail_false(ctx, ORC_ESHAPE, "head dim D must be at least 1", q, k, v);
    if (k->shape[2] < 1 || q->shape[2] % k->shape[2])
        return fail_false(ctx, ORC_ESHAPE, "Hq must be a multiple of Hkv (>= 1)", q, k, v);
    if (!mask) return true;
    char a[96], b[96], c[96];
    if (mask->dtype != ORC_F32) {
        orc_fail(ctx, ORC_EDTYPE, "attention: mask must be f32, got %s", orc_dtype_name(mask->dtype));
        return false;
    }
    const int64_t B = q->shape[0], T = q->shape[1], S = k->shape[1];
    const bool ok2 = mask->ndim == 2 && mask->shape[0] == T && mask->shape[1] == S;
    const bool ok3 = mask->ndim == 3 && mask->shape[0] == B && mask->shape[1] == T && mask->shape[2] == S;
    if (!ok2 && !ok3) {
        orc_fail(ctx, ORC_ESHAPE, "attention: mask must be [T, S] or [B, T, S] for q %s and k %s, got %s",
                 orc_shape_str(a, sizeof a, q->ndim, q->shape), orc_shape_str(b, sizeof b, k->ndim, k->shape),
                 orc_shape_str(c, sizeof c, mask->ndim, mask->shape));
        return false;
    }
    return true;
}

/* Copy a tensor that sgemm cannot read in place (the copy is an op of its own). */
static orc_tensor *readable(orc_ctx *ctx, orc_tensor *t) { return rows_readable(t) ? t : orc_contiguous(ctx, t); }

orc_tensor *orc_attention(orc_ctx *ctx, orc_tensor *q, orc_tensor *k, orc_tensor *v, const orc_attn_opts *opts) {
    const orc_attn_opts none = {0};
    if (!opts) opts = &none;
    orc_tensor *in[4] = {q, k, v, opts->mask};
    if (!orc_op_begin(ctx, "attention", opts->mask ? 4 : 3, in)) return NULL;
    if (!check_shapes(ctx, q, k, v, opts->mask)) return NULL;
    if (!isfinite(opts->scale))
        return orc_fail(ctx, ORC_EINVAL, "attention: scale must be finite, got %g", (double)opts->scale);
    q = readable(ctx, q);
    k = readable(ctx, k);
    v = readable(ctx, v);
    orc_tensor *mask = opts->mask ? orc_contiguous(ctx, opts->mask) : NULL;
    if (!q || !k || !v || (opts->mask && !mask)) return NULL;

    attn_saved a = {0};
    attn_dims *d = &a.d;
    d->B = q->shape[0], d->T = q->shape[1], d->Hq = q->shape[2], d->D = q->shape[3];
    d->S = k->shape[1], d->Hkv = k->shape[2], d->Dv = v->shape[3];
    d->group = d->Hq / d->Hkv;
    d->scale = opts->scale != 0.0f ? opts->scale : 1.0f / sqrtf((float)d->D);
    d->causal = opts->causal;
    a.q = rows_of(q), a.k = rows_of(k), a.v = rows_of(v);
    if (a.q.ld > INT32_MAX || a.k.ld > INT32_MAX || a.v.ld > INT32_MAX || d->Hq * (d->D + d->Dv) > INT32_MAX)
        return orc_fail(ctx, ORC_EUNSUPPORTED, "attention: row strides beyond 32 bits (BLAS ints) are not supported");
    a.mask = mask ? orc_f32(mask) : NULL;
    a.mask_bstride = mask && mask->ndim == 3 ? d->T * d->S : 0;

    orc_tensor *y = orc_new(ctx, ORC_F32, 4, ORC_SHAPE(d->B, d->T, d->Hq, d->Dv));
    if (!y) return NULL;
    orc_tensor *qkv[3] = {q, k, v};
    const bool grad = orc_needs_grad(ctx, 3, qkv);
    if (grad) {
        a.lse = orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)(d->B * d->Hq * d->T + 1));
        if (!a.lse) return orc_fail(ctx, ORC_ENOMEM, "attention: out of memory for the log-sum-exp");
    }
    orc_arena_mark mark = orc_arena_get_mark(ctx->arena);
    const int nth = omp_get_max_threads();
    const int64_t per = BQ * BK + 2 * BQ;
    float *scratch = thread_scratch(ctx, nth, per);
    if (!scratch) return orc_fail(ctx, ORC_ENOMEM, "attention: out of memory for scratch");
    const int64_t nqb = (d->T + BQ - 1) / BQ, tasks = d->B * d->Hq * nqb;
    float *yd = orc_f32(y);
#pragma omp parallel
    {
        float *mine = scratch + per * omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < tasks; i++) {
            const int64_t qb = i % nqb, h = (i / nqb) % d->Hq, b = i / (nqb * d->Hq);
            const int64_t t0 = qb * BQ, nq = d->T - t0 < BQ ? d->T - t0 : BQ;
            forward_block(&a, b, h, t0, nq, mine, yd, a.lse);
        }
    }
    orc_arena_rewind(ctx->arena, mark);
    if (grad) {
        orc_node *n = orc_record(ctx, "attention", y, attention_backward, 3, qkv);
        if (!n) return NULL;
        n->saved = orc_arena_alloc(ctx->arena, sizeof a);
        if (!n->saved) return orc_fail(ctx, ORC_ENOMEM, "attention: out of memory");
        memcpy(n->saved, &a, sizeof a);
    }
    return y;
}

/* ---- keys and values in pages (no grad) ------------------------------------------
 * orc_attention_paged (orchard/batch.h): the forward above for several
 * sequences at once whose keys and values sit in fixed-size pages of a KV
 * pool rather than in one tensor. A page holds page_len (a multiple of BK)
 * consecutive positions, so every key block of BK keys lies inside one page
 * and the blocks, sgemm calls and online softmax are exactly those of
 * forward_block: a sequence gets the same bits as orc_attention on the same
 * T new queries against the same S keys, whatever else is in the batch.
 * Tasks are (sequence, query head, query block), each writing its own rows. */

/* Query rows [t0, t0 + nq) of head h of one sequence; mirrors forward_block. */
static void paged_block(const orc_attn_paged_seq *s, const attn_dims *d, int64_t page_len, int64_t h, int64_t t0,
                        int64_t nq, float *scratch) {
    float *sc = scratch, *m = scratch + BQ * BK, *l = m + BQ;
    const int64_t ldo = d->Hq * d->Dv, hk = h / d->group;
    /* rows_of's leading dimensions: D when there is one row. */
    const int64_t ldq = d->T <= 1 ? d->D : d->Hq * d->D;
    const int64_t ldk = d->S <= 1 ? d->D : d->Hkv * d->D, ldv = d->S <= 1 ? d->Dv : d->Hkv * d->Dv;
    const float *qp = s->q + t0 * (d->Hq * d->D) + h * d->D;
    float *o = s->out + t0 * ldo + h * d->Dv;
    for (int64_t r = 0; r < nq; r++) {
        memset(o + r * ldo, 0, sizeof(float) * (size_t)d->Dv);
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    const int64_t s_end = key_end(d, t0 + nq), off = d->S - d->T;
    for (int64_t s0 = 0; s0 < s_end; s0 += BK) {
        const int64_t nk = s_end - s0 < BK ? s_end - s0 : BK;
        const int64_t pg = s0 / page_len, in_pg = s0 % page_len;
        const float *kp = s->k_pages[pg] + in_pg * (d->Hkv * d->D) + hk * d->D;
        const float *vp = s->v_pages[pg] + in_pg * (d->Hkv * d->Dv) + hk * d->Dv;
        qk_block(nq, nk, d->D, d->scale, qp, ldq, kp, ldk, sc);
        for (int64_t r = 0; r < nq; r++) {
            int64_t first_hidden = t0 + r + off + 1 - s0;
            if (first_hidden < 0) first_hidden = 0;
            for (int64_t j = first_hidden; j < nk; j++) sc[r * BK + j] = -INFINITY;
        }
        online_block(sc, nq, nk, m, l, o, ldo, d->Dv);
        if (d->Dv > 0) pv_block(nq, nk, d->Dv, sc, vp, ldv, o, ldo);
    }
    for (int64_t r = 0; r < nq; r++)
        if (l[r] > 0.0f) scale_row(o + r * ldo, d->Dv, 1.0f / l[r]);
}

bool orc_attention_paged(orc_ctx *ctx, const orc_attn_paged_seq *seqs, int64_t n_seqs, int64_t Hq, int64_t Hkv,
                         int64_t D, int64_t page_len) {
    if (!orc_ctx_ok(ctx)) return false;
    if (n_seqs < 0 || Hq < 1 || Hkv < 1 || Hq % Hkv || D < 1 || page_len < BK || page_len % BK) {
        orc_fail(ctx, ORC_EINVAL,
                 "attention (paged): want Hq (%lld) a multiple of Hkv (%lld), D (%lld) >= 1 and a page length "
                 "(%lld) that is a multiple of %d",
                 (long long)Hq, (long long)Hkv, (long long)D, (long long)page_len, BK);
        return false;
    }
    if (Hq * D > INT32_MAX || Hkv * D > INT32_MAX) {
        orc_fail(ctx, ORC_EUNSUPPORTED, "attention (paged): row strides beyond 32 bits (BLAS ints) are not supported");
        return false;
    }
    int64_t tasks = 0;
    for (int64_t i = 0; i < n_seqs; i++) {
        const orc_attn_paged_seq *s = &seqs[i];
        if (s->T < 1 || s->S < s->T || !s->q || !s->out || !s->k_pages || !s->v_pages) {
            orc_fail(ctx, ORC_EINVAL, "attention (paged): sequence %lld has %lld queries and %lld keys (want 1 <= T <= S)",
                     (long long)i, (long long)s->T, (long long)s->S);
            return false;
        }
        tasks += Hq * ((s->T + BQ - 1) / BQ);
    }
    orc_arena_mark mark = orc_arena_get_mark(ctx->arena);
    const int nth = omp_get_max_threads();
    const int64_t per = BQ * BK + 2 * BQ;
    float *scratch = thread_scratch(ctx, nth, per);
    int64_t *first = orc_arena_alloc(ctx->arena, sizeof(int64_t) * (size_t)(n_seqs + 1));
    if (!scratch || !first) {
        orc_fail(ctx, ORC_ENOMEM, "attention (paged): out of memory for scratch");
        return false;
    }
    first[0] = 0; /* first task of each sequence */
    for (int64_t i = 0; i < n_seqs; i++) first[i + 1] = first[i] + Hq * ((seqs[i].T + BQ - 1) / BQ);
#pragma omp parallel
    {
        float *mine = scratch + per * omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < tasks; it++) {
            int64_t i = 0;
            while (first[i + 1] <= it) i++; /* few sequences: a scan is cheap next to a block */
            const orc_attn_paged_seq *s = &seqs[i];
            const int64_t nqb = (s->T + BQ - 1) / BQ, k = it - first[i];
            const int64_t qb = k % nqb, h = k / nqb, t0 = qb * BQ, nq = s->T - t0 < BQ ? s->T - t0 : BQ;
            attn_dims d = {.B = 1, .T = s->T, .S = s->S, .Hq = Hq, .Hkv = Hkv, .D = D, .Dv = D, .group = Hq / Hkv,
                           .scale = 1.0f / sqrtf((float)D), .causal = true};
            paged_block(s, &d, page_len, h, t0, nq, mine);
        }
    }
    orc_arena_rewind(ctx->arena, mark);
    return true;
}
