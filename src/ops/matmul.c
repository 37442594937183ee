/* Matrix products on CBLAS sgemm: orc_matmul (batched, optional transposes,
 * b either batched like a or 2-D and shared by every batch) and orc_linear
 * (y = x @ w^T + bias, the PyTorch weight layout). Both forward and backward
 * are sgemm calls on contiguous operands. A gradient that sums over the batch
 * (a shared b, a linear weight, a bias) is formed in a fixed order: either as
 * one sgemm whose M spans the whole batch, or batch by batch in sequence, or
 * (bias) in fixed blocks of rows. OpenBLAS's own threading gives results
 * that change with the thread count, so every sgemm call here is
 * single-threaded on one tile of the output, the tiles run in parallel and
 * their sizes depend only on the shape: bit-identical for any thread count.
 * Products of at most 4 rows by a transposed operand (decoding) skip sgemm
 * for the matrix-vector kernel of src/ops/matvec.c. */
#include "orchard/ops.h"
#include "ops/matvec.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* The output grid is cut into at least GEMM_TILE_TARGET tiles where the
 * shape allows, none narrower than GEMM_TILE_MIN; the tile sizes depend only
 * on the shape. Every tile repacks its operands, and with transformer-sized
 * K (a few hundred) packing costs about as much per element as ~30 MACs, so
 * few large tiles win on few cores: 4 tiles of >= 256 spent ~10% fewer CPU
 * cycles than 8 or 32 on the 2-core LM training bench. (32 tiles of >= 64
 * suited 16 cores better; the count must not follow the thread count.)
 * Tiles are handed out dynamically: any thread may compute any tile without
 * changing its bits, and a core stolen by another process then costs less. */
#define GEMM_TILE_TARGET 4
#define GEMM_TILE_MIN 256
/* Smaller jobs run on the calling thread (a parallel region costs more). */
#define GEMM_PARALLEL_MACS 65536
/* Rows per block in the bias-gradient reduction. */
#define BIAS_ROW_BLOCK 64

/* A batch of products c_e = op(a_e) @ op(b_e) + beta * c_e over contiguous
 * row-major operands: op(a) is [m, k] (stored [k, m] when ta), op(b) is
 * [k, n] (stored [n, k] when tb). Strides are in floats between batch
 * entries; sc == 0 means every entry adds into the same c, in entry order. */
typedef struct gemm_job {
    bool ta, tb;
    int64_t batch, m, n, k;
    const float *a, *b;
    int64_t sa, sb, sc;
    float beta;
    float *c;
} gemm_job;

static int64_t halve(int64_t v) { return (v / 2 + 15) / 16 * 16; }

static void tile_sizes(int64_t m, int64_t n, int64_t entries, int64_t *tm, int64_t *tn) {
    *tm = m;
    *tn = n;
    while (entries * ((m + *tm - 1) / *tm) * ((n + *tn - 1) / *tn) < GEMM_TILE_TARGET) {
        if (*tm >= *tn && *tm > GEMM_TILE_MIN) *tm = halve(*tm);
        else if (*tn > GEMM_TILE_MIN) *tn = halve(*tn);
        else if (*tm > GEMM_TILE_MIN) *tm = halve(*tm);
        else break;
    }
}

/* OpenBLAS (OpenMP build) threads a call unless it runs inside an active
 * parallel region, and its result then depends on the thread count. Every
 * call here must be single-threaded, also in a team of one. */
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

/* Rows [i0, i0+mm) and columns [j0, j0+nn) of entry e's product. */
static void gemm_tile(const gemm_job *j, int64_t e, int64_t i0, int64_t j0, int64_t mm, int64_t nn, float beta) {
    float *c = j->c + e * j->sc + i0 * j->n + j0;
    if (j->k == 0) {
        if (beta == 0.0f)
            for (int64_t r = 0; r < mm; r++) memset(c + r * j->n, 0, sizeof(float) * (size_t)nn);
        return; /* beta is 0 or 1 here */
    }
    const float *a = j->a + e * j->sa + (j->ta ? i0 : i0 * j->k);
    const float *b = j->b + e * j->sb + (j->tb ? j0 * j->k : j0);
    cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans, (int)mm, (int)nn,
                (int)j->k, 1.0f, a, (int)(j->ta ? j->m : j->k), b, (int)(j->tb ? j->k : j->n), beta, c, (int)j->n);
}

/* ---- skinny products: c = a @ b^T with m <= SKINNY_M rows ---------------------
 * Decoding multiplies one token's activations by every weight matrix. sgemm
 * packs the whole weight for such a call, so these products go to the
 * matrix-vector kernel (src/ops/matvec.c), which streams each weight row
 * once for all m rows in one fixed summation order: the bits depend on the
 * shape only, and src/llm/batch.c's batched step gets the same bits from the
 * same kernel. */
#define SKINNY_M 4

/* Parallel over (entry, tile) items, each one single-threaded sgemm: every
 * output element is computed by the same call whatever the thread count. */
static void gemm_run(const gemm_job *j) {
    const bool shared_c = j->sc == 0 && j->batch > 1;
    const int64_t entries = shared_c ? 1 : j->batch;
    if (entries == 0 || j->m == 0 || j->n == 0) return;
    if (j->batch == 1 && !j->ta && j->tb && j->m <= SKINNY_M && j->k > 0) {
        orc_matvec_rows(j->m, NULL, j->n, j->k, j->a, j->b, j->beta, j->c);
        return;
    }
    int64_t tm, tn;
    tile_sizes(j->m, j->n, entries, &tm, &tn);
    const int64_t gm = (j->m + tm - 1) / tm, gn = (j->n + tn - 1) / tn, items = entries * gm * gn;
    const bool big = items > 1 && (double)j->batch * (double)(j->m * j->n) * (double)j->k > GEMM_PARALLEL_MACS;
#pragma omp parallel for schedule(dynamic, 1) if (big)
    for (int64_t it = 0; it < items; it++) {
        const int64_t e = it / (gm * gn), t = it % (gm * gn);
        const int64_t i0 = (t / gn) * tm, j0 = (t % gn) * tn;
        const int64_t mm = j->m - i0 < tm ? j->m - i0 : tm, nn = j->n - j0 < tn ? j->n - j0 : tn;
        const int saved = blas_single_begin();
        if (shared_c)
            for (int64_t b = 0; b < j->batch; b++) gemm_tile(j, b, i0, j0, mm, nn, b == 0 ? j->beta : 1.0f);
        else
            gemm_tile(j, e, i0, j0, mm, nn, j->beta);
        blas_single_end(saved);
    }
}

/* One product (no batch). */
static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, const float *b, float beta,
                 float *c) {
    gemm_job j = {ta, tb, 1, m, n, k, a, b, 0, 0, 0, beta, c};
    gemm_run(&j);
}

static void gemm_batched(int64_t batch, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t sa,
                         const float *b, int64_t sb, float beta, float *c, int64_t sc) {
    gemm_job j = {ta, tb, batch, m, n, k, a, b, sa, sb, sc, beta, c};
    gemm_run(&j);
}

static bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* ---- matmul ---------------------------------------------------------------- */

/* iattr: 0 trans_a, 1 trans_b, 2 batch, 3 M, 4 K, 5 N, 6 b shared. */
static void matmul_backward(orc_ctx *ctx, orc_node *n) {
    orc_tensor *a = n->in[0], *b = n->in[1];
    const bool ta = n->iattr[0], tb = n->iattr[1], shared = n->iattr[6];
    const int64_t batch = n->iattr[2], M = n->iattr[3], K = n->iattr[4], N = n->iattr[5];
    const float *g = n->out->grad, *ad = orc_f32(a), *bd = orc_f32(b);
    float *ga = orc_grad(ctx, a), *gb = orc_grad(ctx, b);
    const int64_t sb = shared ? 0 : K * N;
    /* With a shared b and a stored [.., M, K], the batch is one tall product. */
    const bool merge = shared && !ta;
    const int64_t nb = merge ? 1 : batch, rows = merge ? batch * M : M;
    if (ga) {
        if (!ta) /* dA = G @ op(B)^T */
            gemm_batched(nb, false, !tb, rows, K, N, g, M * N, bd, sb, 1.0f, ga, M * K);
        else /* A stored [K, M]: dA = op(B) @ G^T */
            gemm_batched(batch, tb, true, K, M, N, bd, sb, g, M * N, 1.0f, ga, M * K);
    }
    if (gb) { /* a shared b sums over the batch: sb == 0 adds entries in order */
        if (!tb) /* dB = op(A)^T @ G */
            gemm_batched(nb, !ta, false, K, N, rows, ad, M * K, g, M * N, 1.0f, gb, sb);
        else /* B stored [N, K]: dB = G^T @ op(A) */
            gemm_batched(nb, true, ta, N, K, rows, g, M * N, ad, M * K, 1.0f, gb, sb);
    }
}

static void *matmul_shape_error(orc_ctx *ctx, const char *why, const orc_tensor *a, const orc_tensor *b, bool ta,
                                bool tb) {
    char x[96], y[96];
    return orc_fail(ctx, ORC_ESHAPE, "matmul: %s: a %s (trans_a=%d), b %s (trans_b=%d)", why,
                    orc_shape_str(x, sizeof x, a->ndim, a->shape), (int)ta,
                    orc_shape_str(y, sizeof y, b->ndim, b->shape), (int)tb);
}

orc_tensor *orc_matmul(orc_ctx *ctx, orc_tensor *a, orc_tensor *b, bool trans_a, bool trans_b) {
    orc_tensor *in[2] = {a, b};
    if (!orc_op_begin(ctx, "matmul", 2, in)) return NULL;
    if (a->dtype != ORC_F32 || b->dtype != ORC_F32)
        return orc_fail(ctx, ORC_EDTYPE, "matmul: inputs must be f32, got a %s and b %s", orc_dtype_name(a->dtype),
                        orc_dtype_name(b->dtype));
    if (a->ndim < 2 || b->ndim < 2)
        return matmul_shape_error(ctx, "both inputs need at least 2 axes", a, b, trans_a, trans_b);
    const bool shared = b->ndim == 2;
    if (!shared) {
        if (b->ndim != a->ndim) return matmul_shape_error(ctx, "batch axes differ", a, b, trans_a, trans_b);
        for (int i = 0; i < a->ndim - 2; i++)
            if (a->shape[i] != b->shape[i]) return matmul_shape_error(ctx, "batch axes differ", a, b, trans_a, trans_b);
    }
    const int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    const int64_t br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    const int64_t M = trans_a ? ac : ar, K = trans_a ? ar : ac;
    const int64_t Kb = trans_b ? bc : br, N = trans_b ? br : bc;
    if (K != Kb) return matmul_shape_error(ctx, "inner dimensions differ", a, b, trans_a, trans_b);
    int64_t batch = 1;
    for (int i = 0; i < a->ndim - 2; i++) batch *= a->shape[i];
    if (!fits_int(batch * M) || !fits_int(K) || !fits_int(N))
        return matmul_shape_error(ctx, "a dimension exceeds the BLAS int range", a, b, trans_a, trans_b);

    a = orc_contiguous(ctx, a);
    b = orc_contiguous(ctx, b);
    if (!a || !b) return NULL;
    in[0] = a;
    in[1] = b;
    int64_t shape[ORC_MAX_DIMS];
    for (int i = 0; i < a->ndim - 2; i++) shape[i] = a->shape[i];
    shape[a->ndim - 2] = M;
    shape[a->ndim - 1] = N;
    orc_tensor *y = orc_new(ctx, ORC_F32, a->ndim, shape);
    if (!y) return NULL;

    const float *ad = orc_f32(a), *bd = orc_f32(b);
    if (shared && !trans_a)
        gemm(false, trans_b, batch * M, N, K, ad, bd, 0.0f, orc_f32(y));
    else
        gemm_batched(batch, trans_a, trans_b, M, N, K, ad, M * K, bd, shared ? 0 : K * N, 0.0f, orc_f32(y), M * N);

    if (orc_needs_grad(ctx, 2, in)) {
        orc_node *n = orc_record(ctx, "matmul", y, matmul_backward, 2, in);
        if (!n) return NULL;
        int64_t attrs[7] = {trans_a, trans_b, batch, M, K, N, shared};
        memcpy(n->iattr, attrs, sizeof attrs);
    }
    return y;
}

/* ---- linear ---------------------------------------------------------------- */

/* out[j] += sum over rows of g[r, j]: fixed blocks of rows summed in
 * parallel, then the block partials added in block order. */
static bool bias_grad(orc_ctx *ctx, const float *g, int64_t rows, int64_t cols, float *out) {
    const int64_t nblk = (rows + BIAS_ROW_BLOCK - 1) / BIAS_ROW_BLOCK;
    if (nblk == 0 || cols == 0) return true;
    float *part = malloc(sizeof(float) * (size_t)(nblk * cols));
    if (!part) {
        orc_fail(ctx, ORC_ENOMEM, "linear: out of memory for the bias gradient");
        return false;
    }
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
    for (int64_t bl = 0; bl < nblk; bl++) {
        float *p = part + bl * cols;
        const int64_t r1 = bl * BIAS_ROW_BLOCK + BIAS_ROW_BLOCK < rows ? bl * BIAS_ROW_BLOCK + BIAS_ROW_BLOCK : rows;
        memset(p, 0, sizeof(float) * (size_t)cols);
        for (int64_t r = bl * BIAS_ROW_BLOCK; r < r1; r++)
            for (int64_t j = 0; j < cols; j++) p[j] += g[r * cols + j];
    }
#pragma omp parallel for schedule(static) if (nblk * cols > 32768)
    for (int64_t j = 0; j < cols; j++) {
        float s = 0.0f;
        for (int64_t bl = 0; bl < nblk; bl++) s += part[bl * cols + j];
        out[j] += s;
    }
    free(part);
    return true;
}

/* iattr: 0 rows, 1 in, 2 out. in[] = {x, w, bias?}. */
static void linear_backward(orc_ctx *ctx, orc_node *n) {
    orc_tensor *x = n->in[0], *w = n->in[1], *bias = n->n_in > 2 ? n->in[2] : NULL;
    const int64_t rows = n->iattr[0], din = n->iattr[1], dout = n->iattr[2];
    const float *g = n->out->grad;
    float *gx = orc_grad(ctx, x), *gw = orc_grad(ctx, w), *gbias = orc_grad(ctx, bias);
    if (gx) gemm(false, false, rows, din, dout, g, orc_f32(w), 1.0f, gx);        /* dX = G @ W */
    if (gw) gemm(true, false, dout, din, rows, g, orc_f32(x), 1.0f, gw);         /* dW = G^T @ X */
    if (gbias) bias_grad(ctx, g, rows, dout, gbias);
}

orc_tensor *orc_linear(orc_ctx *ctx, orc_tensor *x, orc_tensor *w, orc_tensor *bias) {
    orc_tensor *in[3] = {x, w, bias};
    const int n_in = bias ? 3 : 2;
    if (!orc_op_begin(ctx, "linear", n_in, in)) return NULL;
    if (x->dtype != ORC_F32 || w->dtype != ORC_F32 || (bias && bias->dtype != ORC_F32))
        return orc_fail(ctx, ORC_EDTYPE, "linear: x, w and bias must be f32");
    char xs[96], ws[96], bs[96];
    orc_shape_str(xs, sizeof xs, x->ndim, x->shape);
    orc_shape_str(ws, sizeof ws, w->ndim, w->shape);
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
        return orc_fail(ctx, ORC_ESHAPE, "linear: x %s does not fit w %s (want x [..., in] and w [out, in])", xs, ws);
    const int64_t din = w->shape[1], dout = w->shape[0];
    if (bias && (bias->ndim != 1 || bias->shape[0] != dout))
        return orc_fail(ctx, ORC_ESHAPE, "linear: bias %s does not fit w %s (want bias [%lld])",
                        orc_shape_str(bs, sizeof bs, bias->ndim, bias->shape), ws, (long long)dout);
    int64_t rows = 1;
    for (int i = 0; i < x->ndim - 1; i++) rows *= x->shape[i];
    if (!fits_int(rows) || !fits_int(din) || !fits_int(dout))
        return orc_fail(ctx, ORC_ESHAPE, "linear: x %s, w %s exceed the BLAS int range", xs, ws);

    x = orc_contiguous(ctx, x);
    w = orc_contiguous(ctx, w);
    if (bias) bias = orc_contiguous(ctx, bias);
    if (!x || !w || (in[2] && !bias)) return NULL;
    in[0] = x;
    in[1] = w;
    in[2] = bias;
    int64_t shape[ORC_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = dout;
    orc_tensor *y = orc_new(ctx, ORC_F32, x->ndim, shape);
    if (!y) return NULL;
    float *yd = orc_f32(y);
    float beta = 0.0f;
    if (bias) { /* start from the bias rows and let sgemm add x @ w^T onto them */
        const float *bd = orc_f32(bias);
#pragma omp parallel for schedule(static) if (rows * dout > 32768)
        for (int64_t r = 0; r < rows; r++) memcpy(yd + r * dout, bd, sizeof(float) * (size_t)dout);
        beta = 1.0f;
    }
    gemm(false, true, rows, dout, din, orc_f32(x), orc_f32(w), beta, yd);

    if (orc_needs_grad(ctx, n_in, in)) {
        orc_node *n = orc_record(ctx, "linear", y, linear_backward, n_in, in);
        if (!n) return NULL;
        n->iattr[0] = rows;
        n->iattr[1] = din;
        n->iattr[2] = dout;
    }
    return y;
}
