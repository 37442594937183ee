/* The skinny product kernel (see matvec.h): y[r, j] = dot(x_r, w_j) for a
 * few activation rows against every row of a weight, the whole cost of
 * decoding one token (each weight row is read once per token, so decode is
 * bound by memory traffic). One summation order serves every caller,
 * kernel, row grouping and thread count: the k products of a row are split
 * into chunks of 8; even chunks (0, 2, 4, ...) accumulate with FMA into lane
 * vector A, odd chunks into B; then A + B lane by lane, the 8 lanes summed
 * as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), and the k % 8 leftover products
 * added one by one with fmaf. Since every row is summed alone in that order,
 * how rows are grouped into passes and threads cannot change a bit, which
 * leaves both free for speed. The AVX2 kernel computes 4 weight rows per
 * pass over x (8 accumulators, every chunk of x loaded once for 4 rows), and
 * the 4 rows of a pass are a quarter of a chunk of rows apart: 4 sequential
 * memory streams, each through consecutive rows. On the 2-core AMD EPYC
 * development VM (a standalone test streaming 448 MiB of weights on one
 * thread, CPU time, machine under load) that took 25-35% less time than one
 * row per pass at k = 768 and 2048, where 4 adjacent rows per pass gained
 * nothing at k = 768 (the streams then share pages and the hardware
 * prefetcher follows them worse); chunks of 128 rows did as well as 256 or
 * 512 and better than 16-64 (docs/benchmarks.md has the decode numbers).
 * The portable kernel performs the same roundings with fmaf, so both give
 * the same bits. */
#include "ops/matvec.h"

#include <math.h>
#include <omp.h>

/* Rows per chunk: the 4 streams of a pass start CHUNK / 4 rows apart. */
#define MATVEC_CHUNK 128
/* Below this many multiply-adds a parallel region costs more than it saves. */
#define MATVEC_PARALLEL_MACS 65536

/* ---- portable kernels ---------------------------------------------------------- */

/* The 8-lane reduction of the vector kernel's (A + B), in its order. */
static float lanes_sum(const float a[16]) {
    float v[8];
    for (int l = 0; l < 8; l++) v[l] = a[l] + a[l + 8];
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

/* a[0..8) is A, a[8..16) is B. */
static float dot1_portable(const float *x, const float *w, int64_t k) {
    float a[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= k; i += 16)
        for (int l = 0; l < 16; l++) a[l] = fmaf(x[i + l], w[i + l], a[l]);
    if (i + 8 <= k) {
        for (int l = 0; l < 8; l++) a[l] = fmaf(x[i + l], w[i + l], a[l]);
        i += 8;
    }
    float s = lanes_sum(a);
    for (; i < k; i++) s = fmaf(x[i], w[i], s);
    return s;
}

/* Rows w and w + stride k, w + 2 stride k, w + 3 stride k. */
static void dot4_portable(const float *x, const float *w, int64_t stride, int64_t k, float out[4]) {
    for (int q = 0; q < 4; q++) out[q] = dot1_portable(x, w + q * stride * k, k);
}

/* ---- AVX2 + FMA kernels ---------------------------------------------------------- */

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* l + l4 */
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));                                         /* (l0+l4)+(l2+l6), .. */
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

__attribute__((target("avx2,fma"))) static float dot1_avx2(const float *x, const float *w, int64_t k) {
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        a = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(w + i), a);
        b = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(w + i + 8), b);
    }
    if (i + 8 <= k) {
        a = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(w + i), a);
        i += 8;
    }
    float s = hsum8(_mm256_add_ps(a, b));
    for (; i < k; i++) s = fmaf(x[i], w[i], s);
    return s;
}

/* out[q] = dot1_avx2(x, w + q stride k) for q < 4, operation for operation. */
__attribute__((target("avx2,fma"))) static void dot4_avx2(const float *x, const float *w, int64_t stride, int64_t k,
                                                        float out[4]) {
    const float *w0 = w, *w1 = w + stride * k, *w2 = w + 2 * stride * k, *w3 = w + 3 * stride * k;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        const __m256 xa = _mm256_loadu_ps(x + i), xb = _mm256_loadu_ps(x + i + 8);
        a0 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w0 + i), a0);
        a1 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w1 + i), a1);
        a2 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w2 + i), a2);
        a3 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w3 + i), a3);
        b0 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w0 + i + 8), b0);
        b1 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w1 + i + 8), b1);
        b2 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w2 + i + 8), b2);
        b3 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w3 + i + 8), b3);
    }
    if (i + 8 <= k) {
        const __m256 xa = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w0 + i), a0);
        a1 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w1 + i), a1);
        a2 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w2 + i), a2);
        a3 = _mm256_fmadd_ps(xa, _mm256_loadu_ps(w3 + i), a3);
        i += 8;
    }
    float s[4] = {hsum8(_mm256_add_ps(a0, b0)), hsum8(_mm256_add_ps(a1, b1)), hsum8(_mm256_add_ps(a2, b2)),
                  hsum8(_mm256_add_ps(a3, b3))};
    for (; i < k; i++) {
        s[0] = fmaf(x[i], w0[i], s[0]);
        s[1] = fmaf(x[i], w1[i], s[1]);
        s[2] = fmaf(x[i], w2[i], s[2]);
        s[3] = fmaf(x[i], w3[i], s[3]);
    }
    for (int q = 0; q < 4; q++) out[q] = s[q];
}
#endif

/* ---- drivers ------------------------------------------------------------------------ */

bool orc_matvec_have_avx2(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

typedef float (*dot1_fn)(const float *, const float *, int64_t);
typedef void (*dot4_fn)(const float *, const float *, int64_t, int64_t, float[4]);

float orc_matvec_dot(const float *x, const float *w, int64_t k) {
#if defined(__x86_64__)
    if (orc_matvec_have_avx2()) return dot1_avx2(x, w, k);
#endif
    return dot1_portable(x, w, k);
}

static void store(float *y, float d, float beta) { *y = beta == 0.0f ? d : beta * *y + d; }

typedef struct matvec_job {
    dot1_fn dot1;
    dot4_fn dot4;
    int64_t nr, n, k;
    const int64_t *rows;
    const float *x, *w;
    float beta;
    float *y;
} matvec_job;

/* Weight rows [j0, j1) in chunks of MATVEC_CHUNK; a chunk of c rows is
 * c / 4 passes over rows t, t + c/4, t + c/2, t + 3c/4, then the c % 4
 * leftover rows one by one. Activation rows r > 0 find a pass's 4 weight
 * rows in cache. */
static void matvec_range(const matvec_job *jb, int64_t j0, int64_t j1) {
    const int64_t k = jb->k, n = jb->n;
    for (int64_t c0 = j0; c0 < j1; c0 += MATVEC_CHUNK) {
        const int64_t c1 = c0 + MATVEC_CHUNK < j1 ? c0 + MATVEC_CHUNK : j1, q = (c1 - c0) / 4;
        for (int64_t t = 0; t < q; t++)
            for (int64_t r = 0; r < jb->nr; r++) {
                const int64_t xr = jb->rows ? jb->rows[r] : r;
                float d[4];
                jb->dot4(jb->x + xr * k, jb->w + (c0 + t) * k, q, k, d);
                for (int s = 0; s < 4; s++) store(jb->y + xr * n + c0 + t + s * q, d[s], jb->beta);
            }
        for (int64_t j = c0 + 4 * q; j < c1; j++)
            for (int64_t r = 0; r < jb->nr; r++) {
                const int64_t xr = jb->rows ? jb->rows[r] : r;
                store(jb->y + xr * n + j, jb->dot1(jb->x + xr * k, jb->w + j * k, k), jb->beta);
            }
    }
}

void orc_matvec_rows_isa(orc_matvec_isa isa, int64_t nr, const int64_t *rows, int64_t n, int64_t k, const float *x,
                         const float *w, float beta, float *y) {
    matvec_job jb = {dot1_portable, dot4_portable, nr, n, k, rows, x, w, beta, y};
#if defined(__x86_64__)
    if (isa != ORC_MATVEC_PORTABLE && orc_matvec_have_avx2()) {
        jb.dot1 = dot1_avx2;
        jb.dot4 = dot4_avx2;
    }
#else
    (void)isa;
#endif
    if (nr <= 0 || n <= 0) return;
    /* One contiguous range of weight rows per thread (multiples of 4 rows):
     * one region, no scheduling, and the grouping cannot change the bits. */
#pragma omp parallel if ((double)nr * (double)n * (double)k > MATVEC_PARALLEL_MACS && n > 4)
    {
        const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
        const int64_t per = ((n + nt - 1) / nt + 3) / 4 * 4;
        const int64_t j0 = id * per < n ? id * per : n, j1 = j0 + per < n ? j0 + per : n;
        matvec_range(&jb, j0, j1);
    }
}

void orc_matvec_rows(int64_t nr, const int64_t *rows, int64_t n, int64_t k, const float *x, const float *w, float beta,
                     float *y) {
    orc_matvec_rows_isa(ORC_MATVEC_AUTO, nr, rows, n, k, x, w, beta, y);
}
