/* The grouped SwiGLU expert op (orc_moe_experts, see orchard/moe.h): every
 * expert's rows of the dispatched buffer go through that expert's gate, up
 * and down projections as plain sgemm calls on contiguous row ranges, with
 * a hand-written backward. Each product is cut into tiles whose sizes
 * depend only on its own shape; every tile is one single-threaded sgemm
 * (OpenBLAS's own threading changes results with the thread count) and the
 * tiles of all experts run in one parallel loop, so the result is the same
 * for any thread count. A weight gradient sums over an expert's rows inside
 * one sgemm call (K = rows), in a fixed order. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/moe.h"
#include "orchard/ops.h"

#define TILE_M 384         /* rows per tile at most */
#define TILE_N 512         /* columns per tile at most */
#define PAR_MACS 65536     /* below this a job runs on the calling thread */
#define PAR_MIN 32768      /* elementwise work before threads pay off */

/* c = op(a) @ op(b) + beta c, row-major; with a2/b2 a second product is
 * added onto the same tile afterwards (the input gradient's two terms). */
typedef struct prod {
    bool ta, tb;
    int64_t m, n, k;
    const float *a, *b, *a2, *b2;
    int64_t lda, ldb;
    float *c;
    int64_t ldc;
    float beta;
} prod;

typedef struct tile {
    int32_t p;
    int64_t i0, j0, mm, nn;
} tile;

static int blas_single_begin(void) {
    int n = omp_get_max_threads();
    if (n > 1 && !omp_in_parallel()) {
        omp_set_num_threads(1);
        return n;
    }
    return 0;
}

static void blas_single_end(int saved) {
    if (saved) omp_set_num_threads(saved);
}

static void one_gemm(const prod *p, const float *a, const float *b, const tile *t, float beta) {
    float *c = p->c + t->i0 * p->ldc + t->j0;
    if (p->k == 0) {
        if (beta == 0.0f)
            for (int64_t r = 0; r < t->mm; r++) memset(c + r * p->ldc, 0, sizeof(float) * (size_t)t->nn);
        return;
    }
    const float *ap = a + (p->ta ? t->i0 : t->i0 * p->lda);
    const float *bp = b + (p->tb ? t->j0 * p->ldb : t->j0);
    cblas_sgemm(CblasRowMajor, p->ta ? CblasTrans : CblasNoTrans, p->tb ? CblasTrans : CblasNoTrans, (int)t->mm,
                (int)t->nn, (int)p->k, 1.0f, ap, (int)p->lda, bp, (int)p->ldb, beta, c, (int)p->ldc);
}

/* Run every product; false when out of memory. */
static bool run_prods(const prod *ps, int64_t np) {
    int64_t n_tiles = 0;
    double macs = 0;
    for (int64_t i = 0; i < np; i++) {
        if (ps[i].m == 0 || ps[i].n == 0) continue;
        n_tiles += ((ps[i].m + TILE_M - 1) / TILE_M) * ((ps[i].n + TILE_N - 1) / TILE_N);
        macs += (double)ps[i].m * (double)ps[i].n * (double)ps[i].k;
    }
    if (n_tiles == 0) return true;
    tile *ts = malloc(sizeof(tile) * (size_t)n_tiles);
    if (!ts) return false;
    int64_t nt = 0;
    for (int64_t i = 0; i < np; i++) {
        const prod *p = &ps[i];
        if (p->m == 0 || p->n == 0) continue;
        /* Near-equal tiles: sizes follow from the shape alone. */
        const int64_t gm = (p->m + TILE_M - 1) / TILE_M, gn = (p->n + TILE_N - 1) / TILE_N;
        const int64_t tm = (p->m + gm - 1) / gm, tn = (p->n + gn - 1) / gn;
        for (int64_t a = 0; a < gm; a++)
            for (int64_t b = 0; b < gn; b++) {
                const int64_t i0 = a * tm, j0 = b * tn;
                if (i0 >= p->m || j0 >= p->n) continue;
                ts[nt++] = (tile){(int32_t)i, i0, j0, p->m - i0 < tm ? p->m - i0 : tm, p->n - j0 < tn ? p->n - j0 : tn};
            }
    }
    const bool par = nt > 1 && macs > PAR_MACS;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int64_t i = 0; i < nt; i++) {
        const prod *p = &ps[ts[i].p];
        const int saved = blas_single_begin();
        one_gemm(p, p->a, p->b, &ts[i], p->beta);
        if (p->a2) one_gemm(p, p->a2, p->b2, &ts[i], 1.0f);
        blas_single_end(saved);
    }
    free(ts);
    return true;
}

static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

/* ---- the op -------------------------------------------------------------------- */

typedef struct experts_saved {
    const int64_t *offsets; /* [E + 1], copied into the arena */
    float *hg, *hu, *h;     /* [S, F] each */
    int64_t E, S, D, F;
} experts_saved;

static void experts_backward(orc_ctx *ctx, orc_node *n) {
    const experts_saved *sv = n->saved;
    orc_tensor *xs = n->in[0], *wg = n->in[1], *wu = n->in[2], *wd = n->in[3];
    const int64_t E = sv->E, S = sv->S, D = sv->D, F = sv->F;
    const int64_t *off = sv->offsets;
    const float *gy = n->out->grad, *x = orc_f32(xs);
    const float *Wg = orc_f32(wg), *Wu = orc_f32(wu), *Wd = orc_f32(wd);
    float *gx = orc_grad(ctx, xs), *gwg = orc_grad(ctx, wg), *gwu = orc_grad(ctx, wu), *gwd = orc_grad(ctx, wd);
    float *dh = malloc(sizeof(float) * (size_t)(S * F) * 2 + 1);
    prod *ps = malloc(sizeof(prod) * (size_t)(3 * E) + 1);
    if (!dh || !ps) {
        free(dh);
        free(ps);
        orc_fail(ctx, ORC_ENOMEM, "moe experts: out of memory in backward for %lld x %lld", (long long)S, (long long)F);
        return;
    }
    float *dhg = dh, *dhu = dh + S * F;
    int64_t np = 0;
    /* dH = dY @ Wd_e ([rows, D] @ [D, F]) and dWd_e += dY^T @ H. */
    for (int64_t e = 0; e < E; e++) {
        const int64_t r0 = off[e], m = off[e + 1] - off[e];
        ps[np++] = (prod){.ta = false, .tb = false, .m = m, .n = F, .k = D, .a = gy + r0 * D, .lda = D,
                          .b = Wd + e * D * F, .ldb = F, .c = dhg + r0 * F, .ldc = F, .beta = 0.0f};
        if (gwd && m > 0)
            ps[np++] = (prod){.ta = true, .tb = false, .m = D, .n = F, .k = m, .a = gy + r0 * D, .lda = D,
                              .b = sv->h + r0 * F, .ldb = F, .c = gwd + e * D * F, .ldc = F, .beta = 1.0f};
    }
    if (!run_prods(ps, np)) goto oom;
    /* Through silu(g) * u: dU = dH silu(g), dG = dH u silu'(g). */
#pragma omp parallel for schedule(static) if (S * F > PAR_MIN)
    for (int64_t i = 0; i < S * F; i++) {
        const float g = sv->hg[i], u = sv->hu[i], s = sigm(g), d = dhg[i];
        dhu[i] = d * g * s;
        dhg[i] = d * u * s * (1.0f + g * (1.0f - s));
    }
    np = 0;
    for (int64_t e = 0; e < E; e++) {
        const int64_t r0 = off[e], m = off[e + 1] - off[e];
        if (m == 0) continue;
        if (gwg)
            ps[np++] = (prod){.ta = true, .tb = false, .m = F, .n = D, .k = m, .a = dhg + r0 * F, .lda = F,
                              .b = x + r0 * D, .ldb = D, .c = gwg + e * F * D, .ldc = D, .beta = 1.0f};
        if (gwu)
            ps[np++] = (prod){.ta = true, .tb = false, .m = F, .n = D, .k = m, .a = dhu + r0 * F, .lda = F,
                              .b = x + r0 * D, .ldb = D, .c = gwu + e * F * D, .ldc = D, .beta = 1.0f};
        if (gx) /* dX = dG @ Wg_e + dU @ Wu_e */
            ps[np++] = (prod){.ta = false, .tb = false, .m = m, .n = D, .k = F, .a = dhg + r0 * F, .lda = F,
                              .b = Wg + e * F * D, .ldb = D, .a2 = dhu + r0 * F, .b2 = Wu + e * F * D,
                              .c = gx + r0 * D, .ldc = D, .beta = 1.0f};
    }
    if (!run_prods(ps, np)) goto oom;
    free(dh);
    free(ps);
    return;
oom:
    free(dh);
    free(ps);
    orc_fail(ctx, ORC_ENOMEM, "moe experts: out of memory in backward");
}

orc_tensor *orc_moe_experts(orc_ctx *ctx, orc_tensor *xs, const int64_t *offsets, orc_tensor *wg, orc_tensor *wu,
                            orc_tensor *wd) {
    orc_tensor *in[4] = {xs, wg, wu, wd};
    if (!orc_op_begin(ctx, "moe experts", 4, in)) return NULL;
    char a[96], b[96], c[96], d[96];
    if (xs->dtype != ORC_F32 || wg->dtype != ORC_F32 || wu->dtype != ORC_F32 || wd->dtype != ORC_F32 ||
        xs->ndim != 2 || wg->ndim != 3 || !orc_same_shape(wg, wu) || wd->ndim != 3 || wd->shape[0] != wg->shape[0] ||
        wd->shape[1] != xs->shape[1] || wd->shape[2] != wg->shape[1] || wg->shape[2] != xs->shape[1])
        return orc_fail(ctx, ORC_ESHAPE,
                        "moe experts: want f32 xs [S, D], gate/up [E, F, D], down [E, D, F]; got xs %s, gate %s, "
                        "up %s, down %s", orc_tensor_desc(a, sizeof a, xs), orc_tensor_desc(b, sizeof b, wg),
                        orc_tensor_desc(c, sizeof c, wu), orc_tensor_desc(d, sizeof d, wd));
    const int64_t E = wg->shape[0], F = wg->shape[1], D = wg->shape[2], S = xs->shape[0];
    if (!offsets) return orc_fail(ctx, ORC_EINVAL, "moe experts: no slot offsets");
    if (offsets[0] != 0 || offsets[E] != S)
        return orc_fail(ctx, ORC_ESHAPE, "moe experts: offsets run %lld..%lld but xs has %lld rows",
                        (long long)offsets[0], (long long)offsets[E], (long long)S);
    for (int64_t e = 0; e < E; e++)
        if (offsets[e + 1] < offsets[e])
            return orc_fail(ctx, ORC_EINVAL, "moe experts: offsets decrease at expert %lld", (long long)e);
    if (S > INT_MAX || F > INT_MAX || D > INT_MAX)
        return orc_fail(ctx, ORC_ERANGE, "moe experts: sizes exceed sgemm's int range");
    xs = orc_contiguous(ctx, xs);
    wg = orc_contiguous(ctx, wg);
    wu = orc_contiguous(ctx, wu);
    wd = orc_contiguous(ctx, wd);
    if (!xs || !wg || !wu || !wd) return NULL;
    const bool grad = orc_needs_grad(ctx, 4, (orc_tensor *const[]){xs, wg, wu, wd});
    orc_tensor *y = orc_new(ctx, ORC_F32, 2, ORC_SHAPE(S, D));
    float *hg = orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)(S * F) + 1);
    float *hu = orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)(S * F) + 1);
    float *h = orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)(S * F) + 1);
    prod *ps = malloc(sizeof(prod) * (size_t)(2 * E) + 1);
    if (!y || !hg || !hu || !h || !ps) {
        free(ps);
        return orc_fail(ctx, ORC_ENOMEM, "moe experts: out of memory for %lld x %lld activations", (long long)S,
                        (long long)F);
    }
    const float *x = orc_f32(xs), *Wg = orc_f32(wg), *Wu = orc_f32(wu), *Wd = orc_f32(wd);
    int64_t np = 0;
    for (int64_t e = 0; e < E; e++) {
        const int64_t r0 = offsets[e], m = offsets[e + 1] - offsets[e];
        ps[np++] = (prod){.ta = false, .tb = true, .m = m, .n = F, .k = D, .a = x + r0 * D, .lda = D,
                          .b = Wg + e * F * D, .ldb = D, .c = hg + r0 * F, .ldc = F, .beta = 0.0f};
        ps[np++] = (prod){.ta = false, .tb = true, .m = m, .n = F, .k = D, .a = x + r0 * D, .lda = D,
                          .b = Wu + e * F * D, .ldb = D, .c = hu + r0 * F, .ldc = F, .beta = 0.0f};
    }
    bool ok = run_prods(ps, np);
#pragma omp parallel for schedule(static) if (S * F > PAR_MIN)
    for (int64_t i = 0; i < S * F; i++) h[i] = hg[i] * sigm(hg[i]) * hu[i];
    np = 0;
    for (int64_t e = 0; e < E; e++) {
        const int64_t r0 = offsets[e], m = offsets[e + 1] - offsets[e];
        ps[np++] = (prod){.ta = false, .tb = true, .m = m, .n = D, .k = F, .a = h + r0 * F, .lda = F,
                          .b = Wd + e * D * F, .ldb = F, .c = orc_f32(y) + r0 * D, .ldc = D, .beta = 0.0f};
    }
    ok = ok && run_prods(ps, np);
    free(ps);
    if (!ok) return orc_fail(ctx, ORC_ENOMEM, "moe experts: out of memory");
    if (grad) {
        experts_saved *sv = orc_arena_alloc(ctx->arena, sizeof *sv);
        int64_t *off = orc_arena_alloc(ctx->arena, sizeof(int64_t) * (size_t)(E + 1));
        if (!sv || !off) return orc_fail(ctx, ORC_ENOMEM, "moe experts: out of memory");
        memcpy(off, offsets, sizeof(int64_t) * (size_t)(E + 1));
        *sv = (experts_saved){off, hg, hu, h, E, S, D, F};
        orc_tensor *rec[4] = {xs, wg, wu, wd};
        orc_node *n = orc_record(ctx, "moe experts", y, experts_backward, 4, rec);
        if (!n) return NULL;
        n->saved = sv;
    }
    return y;
}
