/* Quantized dot-product kernels (see orchard/quant.h): Q8_0 and Q4_0 weight
 * rows against Q8_0 activation rows, in a portable C path, an AVX2 path and
 * an AVX-512 path (dpbusd when the CPU has VNNI), chosen at run time. Every
 * path computes the exact integer sum of each block and combines them in one
 * canonical order: block b adds (d_w[b] * d_x[b]) * (float)isum[b] into lane
 * b % 8 of eight float accumulators (a multiply, a multiply and an add, each
 * rounded: never fused), and the lanes are summed in one fixed tree
 * (orc_q_reduce8). The SIMD paths run that order with 8 blocks per vector;
 * the portable path and the SIMD tails run it one lane at a time, so all
 * paths, thread counts and token counts give the same bits. Also the Q8_0
 * activation quantizer (vectorized, writing exactly ggml's reference
 * blocks), the packed layout (orc_qmat_pack: 8 rows interleaved so a vector
 * holds one lane per row) and its kernel, a 4-token matrix-matrix kernel for
 * unpacked matrices, and the row-parallel matrix driver over them (one
 * parallel region per call, or per group of matrices sharing one input). */
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "orchard/quant.h"
#include "orchard/safetensors.h"
#include "quant_internal.h"

/* ---- f16 scales ------------------------------------------------------------ */

static float f16_table[65536];
static pthread_once_t f16_once = PTHREAD_ONCE_INIT;

static void f16_table_init(void) {
    for (uint32_t h = 0; h < 65536; h++) f16_table[h] = orc_st_f16_to_f32((uint16_t)h);
}

static inline float scale_of(const uint8_t *block) {
    uint16_t h;
    memcpy(&h, block, 2);
    return f16_table[h];
}

/* ---- path selection ------------------------------------------------------------ */

static int cpu_avx2 = -1, cpu_avx512 = -1, cpu_vnni = -1;
static orc_q_path forced = ORC_Q_AUTO;

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void detect_cpu(void) {
    __builtin_cpu_init();
    /* the SIMD paths convert scales with F16C (every AVX2 CPU has it; clang's
     * __builtin_cpu_supports does not know the name, so CPUID leaf 1 ECX) */
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    cpu_avx2 = f16c && __builtin_cpu_supports("avx2") ? 1 : 0;
    cpu_avx512 = f16c && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl")
                     ? 1
                     : 0;
    cpu_vnni = cpu_avx512 && __builtin_cpu_supports("avx512vnni") ? 1 : 0;
}

static void detect(void) { pthread_once(&cpu_once, detect_cpu); }

bool orc_q_path_available(orc_q_path p) {
    detect();
    switch (p) {
    case ORC_Q_AUTO:
    case ORC_Q_PORTABLE: return true;
    case ORC_Q_AVX2: return cpu_avx2 == 1;
    case ORC_Q_AVX512: return cpu_avx512 == 1;
    }
    return false;
}

orc_q_path orc_q_active_path(void) {
    detect();
    if (forced != ORC_Q_AUTO) return forced;
    /* AVX2 first: on an AVX-512 VNNI machine (H200 host, docs/quantization.md)
     * the AVX-512 path measured 25-35% slower, since pairing blocks in one
     * register costs what the wider products save; it stays selectable. */
    if (cpu_avx2) return ORC_Q_AVX2;
    if (cpu_avx512) return ORC_Q_AVX512;
    return ORC_Q_PORTABLE;
}

const char *orc_q_path_name(orc_q_path p) {
    detect();
    switch (p) {
    case ORC_Q_AUTO: return "auto";
    case ORC_Q_PORTABLE: return "portable";
    case ORC_Q_AVX2: return "avx2";
    case ORC_Q_AVX512: return cpu_vnni ? "avx512-vnni" : "avx512";
    }
    return "?";
}

orc_status orc_q_set_path(orc_q_path p, orc_error *err) {
    if (!orc_q_path_available(p))
        return orc_error_set(err, ORC_EUNSUPPORTED, "quant: this CPU has no %s kernels", orc_q_path_name(p));
    forced = p;
    return ORC_OK;
}

/* ---- the canonical float step ------------------------------------------------------- */

/* ISO C mode keeps gcc from fusing a multiply and an add; clang needs telling. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* Block b's term into its lane, exactly as one SIMD lane computes it. */
static inline void lane_add(float acc[8], int64_t b, float dw, float dx, int32_t isum) {
    const float d = dw * dx;
    acc[b & 7] += d * (float)isum;
}

/* y[i] for n weight rows (row_bytes apart) against one Q8_0 row of nb blocks. */
typedef void (*rows_fn)(const uint8_t *w, size_t rb, int64_t n, const uint8_t *x, int64_t nb, float *y);

/* ---- portable ------------------------------------------------------------------- */

static int32_t isum_q8_portable(const uint8_t *w, const uint8_t *x) {
    const int8_t *qw = (const int8_t *)(w + 2), *qx = (const int8_t *)(x + 2);
    int32_t s = 0;
    for (int j = 0; j < ORC_Q_BLOCK; j++) s += (int32_t)qw[j] * (int32_t)qx[j];
    return s;
}

static int32_t isum_q4_portable(const uint8_t *w, const uint8_t *x) {
    const uint8_t *qw = w + 2;
    const int8_t *qx = (const int8_t *)(x + 2);
    int32_t lo = 0, hi = 0;
    for (int j = 0; j < ORC_Q_BLOCK / 2; j++) {
        lo += ((int32_t)(qw[j] & 0x0f) - 8) * (int32_t)qx[j];
        hi += ((int32_t)(qw[j] >> 4) - 8) * (int32_t)qx[j + ORC_Q_BLOCK / 2];
    }
    return lo + hi;
}

#define ROWS_PORTABLE(NAME, WB, ISUM)                                                                       \
    static void NAME(const uint8_t *w, size_t rb, int64_t n, const uint8_t *x, int64_t nb, float *y) {      \
        for (int64_t r = 0; r < n; r++) {                                                                   \
            const uint8_t *wr = w + (size_t)r * rb;                                                         \
            float acc[8] = {0};                                                                             \
            for (int64_t b = 0; b < nb; b++) {                                                              \
                const uint8_t *wb = wr + (size_t)b * (WB), *xb = x + (size_t)b * ORC_Q8_0_BYTES;             \
                lane_add(acc, b, scale_of(wb), scale_of(xb), ISUM(wb, xb));                                 \
            }                                                                                               \
            y[r] = orc_q_reduce8(acc);                                                                      \
        }                                                                                                   \
    }

ROWS_PORTABLE(rows_q8_portable, ORC_Q8_0_BYTES, isum_q8_portable)
ROWS_PORTABLE(rows_q4_portable, ORC_Q4_0_BYTES, isum_q4_portable)

/* ---- AVX2 ----------------------------------------------------------------------- */

#define AVX2 __attribute__((target("avx2,f16c")))

/* Signed bytes w . x as 8 int32 partial sums: |w| (unsigned) times x with
 * w's sign; pairs stay below 2 * 128 * 127, so maddubs cannot saturate. */
AVX2 static inline __m256i dot_i8_avx2(__m256i w, __m256i x) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* Unsigned bytes u (at most 15) . signed x: no sign step needed. */
AVX2 static inline __m256i dot_u8_avx2(__m256i u, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
}

/* The 32 Q4_0 nibbles of a block (q, 0..15) in element order. */
AVX2 static inline __m256i nibbles_avx2(const uint8_t *qs) {
    /* the 16 bytes in both halves, the upper half shifted down by 4 */
    const __m256i raw = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    return _mm256_and_si256(_mm256_srlv_epi64(raw, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
}

/* Eight vectors of 8 partial sums each to their 8 totals, in order: a
 * transpose by unpacks (one cheap shuffle each, where hadd costs several). */
AVX2 static inline __m256i pairsum_avx2(__m256i a, __m256i b) {
    return _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
}

AVX2 static inline __m256i quadsum_avx2(__m256i a, __m256i b) {
    return _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
}

/* The halves of blocks 0-3 (a) and 4-7 (b) added into block order. */
AVX2 static inline __m256i halves_avx2(__m256i a, __m256i b) {
    const __m256i lo = _mm256_permute2x128_si256(a, b, 0x20), hi = _mm256_permute2x128_si256(a, b, 0x31);
    return _mm256_add_epi32(lo, hi);
}

AVX2 static inline __m256i reduce8_avx2(const __m256i p[8]) {
    /* per 128-bit lane: [p0, p1, p2, p3] halves, then both halves added */
    const __m256i a = quadsum_avx2(pairsum_avx2(p[0], p[1]), pairsum_avx2(p[2], p[3]));
    const __m256i b = quadsum_avx2(pairsum_avx2(p[4], p[5]), pairsum_avx2(p[6], p[7]));
    return halves_avx2(a, b);
}

AVX2 static inline int32_t hsum_avx2(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

AVX2 static inline __m256i qs_avx2(const uint8_t *block) { return _mm256_loadu_si256((const __m256i *)(block + 2)); }

static inline int16_t f16_bits(const uint8_t *p) {
    int16_t h;
    memcpy(&h, p, 2);
    return h;
}

/* The f16 scales of 8 blocks `stride` bytes apart as floats (exact, as the table). */
AVX2 static inline __m256 scales8_avx2(const uint8_t *p, size_t stride) {
    return _mm256_cvtph_ps(_mm_setr_epi16(f16_bits(p), f16_bits(p + stride), f16_bits(p + 2 * stride),
                                          f16_bits(p + 3 * stride), f16_bits(p + 4 * stride),
                                          f16_bits(p + 5 * stride), f16_bits(p + 6 * stride),
                                          f16_bits(p + 7 * stride)));
}

/* Integer sums of 8 consecutive blocks (w, x at the first) as one vector. */
AVX2 static inline __m256i isum8_q8_avx2(const uint8_t *w, const uint8_t *x) {
    __m256i p[8];
    for (int k = 0; k < 8; k++) p[k] = dot_i8_avx2(qs_avx2(w + k * ORC_Q8_0_BYTES), qs_avx2(x + k * ORC_Q8_0_BYTES));
    return reduce8_avx2(p);
}

/* Q4_0 as sum q * x minus 8 * sum x: the block sums of x (xsum8) are shared by
 * every row of a pass. */
AVX2 static inline __m256i xsum8_avx2(const uint8_t *x) {
    __m256i p[8];
    for (int k = 0; k < 8; k++) p[k] = dot_u8_avx2(_mm256_set1_epi8(1), qs_avx2(x + k * ORC_Q8_0_BYTES));
    return _mm256_slli_epi32(reduce8_avx2(p), 3);
}

AVX2 static inline __m256i isum8_q4_avx2(const uint8_t *w, const uint8_t *x, __m256i x8) {
    __m256i p[8];
    for (int k = 0; k < 8; k++)
        p[k] = dot_u8_avx2(nibbles_avx2(w + k * ORC_Q4_0_BYTES + 2), qs_avx2(x + k * ORC_Q8_0_BYTES));
    return _mm256_sub_epi32(reduce8_avx2(p), x8);
}

AVX2 static inline int32_t isum1_q8_avx2(const uint8_t *w, const uint8_t *x) {
    return hsum_avx2(dot_i8_avx2(qs_avx2(w), qs_avx2(x)));
}

AVX2 static inline int32_t isum1_q4_avx2(const uint8_t *w, const uint8_t *x) {
    const __m256i q = _mm256_sub_epi8(nibbles_avx2(w + 2), _mm256_set1_epi8(8));
    return hsum_avx2(dot_i8_avx2(q, qs_avx2(x)));
}

/* One output of a SIMD kernel: the 8 lanes of acc, plus blocks from..nb-1
 * of row w (blocks wb bytes apart) against Q8_0 row x through lane_add,
 * summed by orc_q_reduce8. */
AVX2 static inline float finish_avx2(__m256 acc, const uint8_t *w, size_t wb, const uint8_t *x, int64_t from,
                                     int64_t nb, int32_t (*isum1)(const uint8_t *, const uint8_t *)) {
    float a[8];
    _mm256_storeu_ps(a, acc);
    for (int64_t t = from; t < nb; t++) {
        const uint8_t *wt = w + (size_t)t * wb, *xt = x + (size_t)t * ORC_Q8_0_BYTES;
        lane_add(a, t, scale_of(wt), scale_of(xt), isum1(wt, xt));
    }
    return orc_q_reduce8(a);
}

/* Rows per pass: each 8-block group of x (its scales, and for Q4_0 its block
 * sums) is prepared once for this many rows. */
#define PASS_ROWS 4

/* The rows kernel of a SIMD path: groups of 8 blocks in vector lanes (block
 * b in lane b % 8, as lane_add), the last nb % 8 blocks through lane_add.
 * PREP(xb) computes what ISUM8(wb, xb) shares across the pass's rows. */
#define ROWS_SIMD(NAME, ATTR, WB, PREP, ISUM8, ISUM1)                                                       \
    ATTR static inline __attribute__((always_inline)) void NAME##_pass(const uint8_t *w, size_t rb,        \
                                                                       const uint8_t *x, int64_t nb,        \
                                                                       float *y, const int nr) {            \
        __m256 acc[PASS_ROWS];                                                                              \
        for (int i = 0; i < nr; i++) acc[i] = _mm256_setzero_ps();                                          \
        int64_t b = 0;                                                                                      \
        for (; b + 8 <= nb; b += 8) {                                                                       \
            const uint8_t *xb = x + (size_t)b * ORC_Q8_0_BYTES;                                             \
            const __m256 dx = scales8_avx2(xb, ORC_Q8_0_BYTES);                                             \
            const __m256i x8 = PREP(xb);                                                                    \
            (void)x8;                                                                                       \
            for (int i = 0; i < nr; i++) {                                                                  \
                const uint8_t *wb = w + (size_t)i * rb + (size_t)b * (WB);                                  \
                /* the same group of the next pass's rows: streams ahead of the hardware prefetcher */      \
                for (int c = 0; c < 8 * (WB); c += 64)                                                      \
                    _mm_prefetch((const char *)(wb + PASS_ROWS * rb + (size_t)c), _MM_HINT_T0);             \
                const __m256 d = _mm256_mul_ps(scales8_avx2(wb, WB), dx);                                   \
                acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(d, _mm256_cvtepi32_ps(ISUM8(wb, xb, x8))));    \
            }                                                                                               \
        }                                                                                                   \
        for (int i = 0; i < nr; i++) y[i] = finish_avx2(acc[i], w + (size_t)i * rb, WB, x, b, nb, ISUM1);   \
    }                                                                                                       \
    ATTR static void NAME(const uint8_t *w, size_t rb, int64_t n, const uint8_t *x, int64_t nb, float *y) { \
        int64_t r = 0;                                                                                      \
        for (; r + PASS_ROWS <= n; r += PASS_ROWS) NAME##_pass(w + (size_t)r * rb, rb, x, nb, y + r, PASS_ROWS); \
        for (; r < n; r++) NAME##_pass(w + (size_t)r * rb, rb, x, nb, y + r, 1);                            \
    }

#define NO_PREP(xb) _mm256_setzero_si256()
#define Q8_ISUM8_AVX2(wb, xb, x8) isum8_q8_avx2(wb, xb)

ROWS_SIMD(rows_q8_avx2, AVX2, ORC_Q8_0_BYTES, NO_PREP, Q8_ISUM8_AVX2, isum1_q8_avx2)
ROWS_SIMD(rows_q4_avx2, AVX2, ORC_Q4_0_BYTES, xsum8_avx2, isum8_q4_avx2, isum1_q4_avx2)

/* ---- matrix-matrix (T > 1) --------------------------------------------------------- */

/* Tokens one weight row meets per pass of the matrix-matrix kernel: each
 * loaded weight block (its sign split, or its nibbles) and each row's block
 * scales serve this many activation rows. */
#define MM_TOKENS 4

/* What every weight row shares about the activation rows of one call,
 * prepared once: each block's scale as a float and 8 times its sum of
 * quants (the Q4_0 offset term), [T, nb] each. */
typedef struct mm_prep {
    const uint8_t *xq;
    size_t xb;
    int64_t nb;
    float *scale;
    int32_t *sum8;
    uint8_t *absq; /* [T, cols]: |quant|, the unsigned operand of the packed Q8_0 kernel */
} mm_prep;

static bool mm_prep_init(mm_prep *p, const uint8_t *xq, int64_t T, int64_t cols) {
    p->xq = xq;
    p->nb = cols / ORC_Q_BLOCK;
    p->xb = (size_t)p->nb * ORC_Q8_0_BYTES;
    p->scale = malloc(sizeof(float) * (size_t)(T * p->nb));
    p->sum8 = malloc(sizeof(int32_t) * (size_t)(T * p->nb));
    p->absq = malloc((size_t)(T * cols));
    if (!p->scale || !p->sum8 || !p->absq) return false;
    for (int64_t i = 0; i < T * p->nb; i++) {
        const uint8_t *blk = xq + (size_t)i * ORC_Q8_0_BYTES;
        uint8_t *a = p->absq + (size_t)i * ORC_Q_BLOCK;
        int32_t s = 0;
        for (int j = 0; j < ORC_Q_BLOCK; j++) {
            const int8_t v = (int8_t)blk[2 + j];
            s += v;
            a[j] = (uint8_t)(v < 0 ? -v : v);
        }
        p->scale[i] = scale_of(blk);
        p->sum8[i] = 8 * s;
    }
    return true;
}

static void mm_prep_free(mm_prep *p) {
    free(p->scale);
    free(p->sum8);
    free(p->absq);
}

/* A Q8_0 weight block as its quants (w) and their magnitudes (a, unsigned;
 * 128 for -128), the operands dot_i8_avx2 forms, here once per token group. */
AVX2 static inline void q8_split_avx2(const uint8_t *blk, __m256i *w, __m256i *a) {
    *w = qs_avx2(blk);
    *a = _mm256_sign_epi8(*w, *w);
}

AVX2 static inline __m256i q8_dot_split_avx2(__m256i a, __m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1));
}

AVX2 static inline void q4_split_avx2(const uint8_t *blk, __m256i *w, __m256i *a) {
    *w = _mm256_setzero_si256();
    *a = nibbles_avx2(blk + 2);
}

AVX2 static inline __m256i q4_dot_split_avx2(__m256i a, __m256i w, __m256i x) {
    (void)w;
    return dot_u8_avx2(a, x);
}

/* Row w against MM_TOKENS activation rows (prep rows t0...): y[t * ystride].
 * The integer sums of each 8-block group are formed block by block for all
 * tokens (partial sums kept per token, in the pair / quad / halves steps of
 * reduce8_avx2), then each token's group goes through the canonical float
 * step of ROWS_SIMD; the tail blocks through lane_add. Integer addition is
 * exact, so every output has the bits of the rows kernel for that token. */
#define MM_SIMD(NAME, ATTR, WB, SPLIT, DOT, Q4, ISUM1)                                                      \
    ATTR static void NAME(const uint8_t *w, const mm_prep *p, int64_t t0, float *y, int64_t ystride) {       \
        const int64_t nb = p->nb;                                                                           \
        const uint8_t *x[MM_TOKENS];                                                                        \
        __m256 acc[MM_TOKENS];                                                                              \
        for (int t = 0; t < MM_TOKENS; t++) {                                                               \
            x[t] = p->xq + (size_t)(t0 + t) * p->xb + 2;                                                    \
            acc[t] = _mm256_setzero_ps();                                                                   \
        }                                                                                                   \
        int64_t b = 0;                                                                                      \
        for (; b + 8 <= nb; b += 8) {                                                                       \
            const uint8_t *wb = w + (size_t)b * (WB);                                                       \
            __m256i half[2][MM_TOKENS];                                                                     \
            for (int h = 0; h < 2; h++) {                                                                   \
                __m256i pr[2][MM_TOKENS];                                                                   \
                for (int q = 0; q < 2; q++) {                                                               \
                    __m256i pk[2][MM_TOKENS];                                                               \
                    for (int e = 0; e < 2; e++) {                                                           \
                        const int64_t k = b + 4 * h + 2 * q + e;                                            \
                        __m256i wv, av;                                                                     \
                        SPLIT(wb + (size_t)(k - b) * (WB), &wv, &av);                                        \
                        for (int t = 0; t < MM_TOKENS; t++)                                                 \
                            pk[e][t] = DOT(av, wv,                                                          \
                                           _mm256_loadu_si256((const __m256i *)(x[t] + (size_t)k * ORC_Q8_0_BYTES))); \
                    }                                                                                       \
                    for (int t = 0; t < MM_TOKENS; t++) pr[q][t] = pairsum_avx2(pk[0][t], pk[1][t]);        \
                }                                                                                           \
                for (int t = 0; t < MM_TOKENS; t++) half[h][t] = quadsum_avx2(pr[0][t], pr[1][t]);          \
            }                                                                                               \
            const __m256 dw = scales8_avx2(wb, WB);                                                         \
            for (int t = 0; t < MM_TOKENS; t++) {                                                           \
                const int64_t at = (t0 + t) * nb + b;                                                       \
                __m256i is = halves_avx2(half[0][t], half[1][t]);                                           \
                if (Q4) is = _mm256_sub_epi32(is, _mm256_loadu_si256((const __m256i *)(p->sum8 + at)));     \
                const __m256 d = _mm256_mul_ps(dw, _mm256_loadu_ps(p->scale + at));                         \
                acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(d, _mm256_cvtepi32_ps(is)));                   \
            }                                                                                               \
        }                                                                                                   \
        for (int t = 0; t < MM_TOKENS; t++) y[t * ystride] = finish_avx2(acc[t], w, WB, x[t] - 2, b, nb, ISUM1); \
    }

MM_SIMD(mm_q8_avx2, AVX2, ORC_Q8_0_BYTES, q8_split_avx2, q8_dot_split_avx2, 0, isum1_q8_avx2)
MM_SIMD(mm_q4_avx2, AVX2, ORC_Q4_0_BYTES, q4_split_avx2, q4_dot_split_avx2, 1, isum1_q4_avx2)

/* ---- the packed layout (orc_qmat_pack) ---------------------------------------------- */

/* Rows per packed group: one int32 lane each in a 256-bit vector. For each
 * block column a group holds the 8 rows' f16 scales (16 bytes), then QB/4
 * vectors of 32 bytes, vector j holding bytes 4j..4j+3 of each row's quants
 * (row r in int32 lane r): for Q8_0 elements 4j..4j+3, for Q4_0 those in the
 * low nibbles and 16+4j..16+4j+3 in the high ones. A group's block column
 * takes 8 blocks' bytes, so the packed copy has the size of the original. */
#define G8 8
#ifndef G8_PREFETCH
#define G8_PREFETCH 4096
#endif

static size_t g8_bytes(bool q4) { return 16 + G8 * (q4 ? ORC_Q4_0_BYTES - 2 : ORC_Q8_0_BYTES - 2); }

size_t orc_q_pack_bytes(const orc_qmat *q) {
    if ((q->type != ORC_GGML_Q8_0 && q->type != ORC_GGML_Q4_0) || q->rows % G8 || !q->data) return 0;
    const bool q4 = q->type == ORC_GGML_Q4_0;
    const int64_t nb = q->cols / ORC_Q_BLOCK;
    if (!q4)
        for (int64_t i = 0; i < q->rows * nb; i++)
            for (int j = 0; j < ORC_Q_BLOCK; j++)
                if (q->data[(size_t)i * ORC_Q8_0_BYTES + 2 + (size_t)j] == 0x80) return 0;
    return ((size_t)(q->rows / G8 * nb) * g8_bytes(q4) + 63) / 64 * 64;
}

void orc_q_pack_into(orc_qmat *q, uint8_t *dst) {
    const bool q4 = q->type == ORC_GGML_Q4_0;
    const int64_t nb = q->cols / ORC_Q_BLOCK, qb = q4 ? ORC_Q4_0_BYTES - 2 : ORC_Q8_0_BYTES - 2;
    const size_t wb = q4 ? ORC_Q4_0_BYTES : ORC_Q8_0_BYTES, bb = g8_bytes(q4);
    for (int64_t g = 0; g < q->rows / G8; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *out = dst + (size_t)(g * nb + b) * bb;
            for (int r = 0; r < G8; r++) {
                const uint8_t *src = q->data + (size_t)(g * G8 + r) * q->row_bytes + (size_t)b * wb;
                memcpy(out + 2 * r, src, 2);
                for (int64_t j = 0; j < qb / 4; j++) memcpy(out + 16 + 32 * j + 4 * r, src + 2 + 4 * j, 4);
            }
        }
    q->packed = dst;
}

void *orc_q_alloc_huge(size_t n) {
    const size_t huge = (size_t)2 << 20;
    if (n < huge) return aligned_alloc(64, (n + 63) / 64 * 64);
    const size_t m = (n + huge - 1) / huge * huge;
    void *p = aligned_alloc(huge, m);
    /* only a hint: without transparent huge pages the memory is the same */
    if (p) madvise(p, m, MADV_HUGEPAGE);
    return p;
}

bool orc_qmat_pack(orc_qmat *q) {
    if (q->packed) return true;
    const size_t n = orc_q_pack_bytes(q);
    uint8_t *buf = n ? orc_q_alloc_huge(n) : NULL;
    if (!buf) return false;
    orc_q_pack_into(q, buf);
    q->owned_packed = buf;
    return true;
}

/* Tokens per pass of the packed kernel: 2 share each weight vector; more
 * would spill the 8 accumulators each token keeps. */
#ifndef G8_TOKENS
#define G8_TOKENS 2
#endif

/* A group's 8 rows' integer sums of block column b against NT activation
 * blocks (x[t] their quants, a[t] their magnitudes, s8[t] 8 times their
 * sum): int32 lane r for row r. Each weight vector is loaded (and for Q4_0
 * unpacked) once for the NT tokens. Q8_0 multiplies |x| (unsigned) by w
 * with x's sign, exact as no packed quant is -128; pairs stay below
 * 2 * 127 * 127. */
AVX2 static inline void g8_isum_q8_avx2(const uint8_t *gq, const uint8_t *const *x, const uint8_t *const *a,
                                        const int32_t *s8, int nt, __m256i *out) {
    (void)s8;
    for (int t = 0; t < nt; t++) out[t] = _mm256_setzero_si256();
    for (int j = 0; j < 8; j++) {
        const __m256i w = _mm256_loadu_si256((const __m256i *)(gq + 32 * j));
        for (int t = 0; t < nt; t++) {
            int32_t xv, av;
            memcpy(&xv, x[t] + 4 * j, 4);
            memcpy(&av, a[t] + 4 * j, 4);
            const __m256i p = _mm256_maddubs_epi16(_mm256_set1_epi32(av), _mm256_sign_epi8(w, _mm256_set1_epi32(xv)));
            out[t] = _mm256_add_epi32(out[t], _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
        }
    }
}

/* Q4_0: nibbles (0..15) times x in int16, all 8 products of a lane pair
 * summed before widening (at most 8 * 2 * 15 * 127 = 30480), less 8 sum x. */
AVX2 static inline void g8_isum_q4_avx2(const uint8_t *gq, const uint8_t *const *x, const uint8_t *const *a,
                                        const int32_t *s8, int nt, __m256i *out) {
    (void)a;
    const __m256i m = _mm256_set1_epi8(0x0f);
    __m256i s[G8_TOKENS];
    for (int t = 0; t < nt; t++) s[t] = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(gq + 32 * j));
        const __m256i lo = _mm256_and_si256(v, m), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
        for (int t = 0; t < nt; t++) {
            int32_t xl, xh;
            memcpy(&xl, x[t] + 4 * j, 4);
            memcpy(&xh, x[t] + 16 + 4 * j, 4);
            s[t] = _mm256_add_epi16(s[t], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(xl)));
            s[t] = _mm256_add_epi16(s[t], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(xh)));
        }
    }
    for (int t = 0; t < nt; t++)
        out[t] = _mm256_sub_epi32(_mm256_madd_epi16(s[t], _mm256_set1_epi16(1)), _mm256_set1_epi32(s8[t]));
}

/* The canonical float step for 8 rows at once: lane r of acc[b % 8] is row
 * r's lane b % 8 of ROWS_SIMD. */
AVX2 static inline __m256 g8_step_avx2(__m256 acc, const uint8_t *gb, float dx, __m256i is) {
    const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)gb)), _mm256_set1_ps(dx));
    return _mm256_add_ps(acc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(is)));
}


/* One packed group (g) against NT activation rows of p from t0: y[t *
 * ystride + 0..7]. Each token's 8 accumulators transposed give each row its
 * 8 lanes, summed by orc_q_reduce8; a token's bits do not depend on NT. */
#define G8_SIMD(NAME, ATTR, Q4, ISUM)                                                                       \
    ATTR static inline __attribute__((always_inline)) void NAME##_nt(const uint8_t *g, const mm_prep *p,   \
                                                                     int64_t t0, float *y, int64_t ystride, \
                                                                     const int nt) {                        \
        const int64_t nb = p->nb;                                                                           \
        const size_t bb = g8_bytes(Q4);                                                                     \
        const uint8_t *x[G8_TOKENS], *a[G8_TOKENS];                                                         \
        __m256 acc[G8_TOKENS][8];                                                                           \
        for (int t = 0; t < nt; t++) {                                                                      \
            x[t] = p->xq + (size_t)(t0 + t) * p->xb + 2;                                                    \
            a[t] = p->absq + (size_t)((t0 + t) * nb) * ORC_Q_BLOCK;                                         \
            for (int k = 0; k < 8; k++) acc[t][k] = _mm256_setzero_ps();                                    \
        }                                                                                                   \
        for (int64_t b8 = 0; b8 < nb; b8 += 8)                                                              \
            /* k constant once unrolled: the accumulators can stay in registers */                           \
            for (int k = 0; k < 8; k++) {                                                                   \
            const int64_t b = b8 + k;                                                                       \
            if (b >= nb) break;                                                                             \
            const uint8_t *gb = g + (size_t)b * bb;                                                         \
            for (size_t c = 0; c < bb; c += 64) _mm_prefetch((const char *)(gb + G8_PREFETCH + c), _MM_HINT_T0); \
            const uint8_t *xb[G8_TOKENS], *ab[G8_TOKENS];                                                   \
            int32_t s8[G8_TOKENS];                                                                          \
            for (int t = 0; t < nt; t++) {                                                                  \
                xb[t] = x[t] + (size_t)b * ORC_Q8_0_BYTES;                                                  \
                ab[t] = a[t] + (size_t)b * ORC_Q_BLOCK;                                                     \
                s8[t] = p->sum8[(t0 + t) * nb + b];                                                         \
            }                                                                                               \
            __m256i is[G8_TOKENS];                                                                          \
            ISUM(gb + 16, xb, ab, s8, nt, is);                                                              \
            for (int t = 0; t < nt; t++)                                                                    \
                acc[t][k] = g8_step_avx2(acc[t][k], gb, p->scale[(t0 + t) * nb + b], is[t]);                \
        }                                                                                                   \
        for (int t = 0; t < nt; t++) {                                                                      \
            float lanes[8][8];                                                                              \
            for (int k = 0; k < 8; k++) _mm256_storeu_ps(lanes[k], acc[t][k]);                              \
            for (int r = 0; r < G8; r++) {                                                                  \
                const float l[8] = {lanes[0][r], lanes[1][r], lanes[2][r], lanes[3][r],                     \
                                    lanes[4][r], lanes[5][r], lanes[6][r], lanes[7][r]};                    \
                y[t * ystride + r] = orc_q_reduce8(l);                                                      \
            }                                                                                               \
        }                                                                                                   \
    }                                                                                                       \
    ATTR static void NAME(const uint8_t *g, const mm_prep *p, int64_t t0, int64_t nt, float *y, int64_t ystride) { \
        int64_t t = 0;                                                                                      \
        for (; t + G8_TOKENS <= nt; t += G8_TOKENS) NAME##_nt(g, p, t0 + t, y + t * ystride, ystride, G8_TOKENS); \
        for (; t < nt; t++) NAME##_nt(g, p, t0 + t, y + t * ystride, ystride, 1);                           \
    }

G8_SIMD(g8_q8_avx2, AVX2, false, g8_isum_q8_avx2)
G8_SIMD(g8_q4_avx2, AVX2, true, g8_isum_q4_avx2)

/* ---- AVX-512 --------------------------------------------------------------------- */

/* This path cannot run on the development machine (no AVX-512): it shares the
 * float step above by construction (the same ROWS_SIMD body) and differs only
 * in how the exact integer sums are formed, two blocks per register. */
#define AVX512 __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl")))
#define AVX512VNNI __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

/* Two blocks side by side in one register: block b in the low half. */
AVX512 static inline __m512i pair(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* |w| and x with w's sign (AVX-512 has no sign_epi8). */
AVX512 static inline void abs_sign(__m512i w, __m512i x, __m512i *aw, __m512i *sx) {
    *aw = _mm512_abs_epi8(w);
    *sx = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
}

AVX512 static inline __m512i dot_i8_512(__m512i w, __m512i x) {
    __m512i aw, sx;
    abs_sign(w, x, &aw, &sx);
    return _mm512_madd_epi16(_mm512_maddubs_epi16(aw, sx), _mm512_set1_epi16(1));
}

AVX512VNNI static inline __m512i dot_i8_vnni(__m512i w, __m512i x) {
    __m512i aw, sx;
    abs_sign(w, x, &aw, &sx);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx);
}

AVX512 static inline __m256i q8w(const uint8_t *w, int64_t b) { return qs_avx2(w + b * ORC_Q8_0_BYTES); }

AVX512 static inline __m256i q4w(const uint8_t *w, int64_t b) {
    return _mm256_sub_epi8(nibbles_avx2(w + b * ORC_Q4_0_BYTES + 2), _mm256_set1_epi8(8));
}

/* 8 blocks' integer sums: four registers of block pairs, their halves the
 * eight block vectors of the AVX2 reduction. */
#define ISUM8_512(NAME, ATTR, LOADW, DOT)                                                                   \
    ATTR static inline __m256i NAME(const uint8_t *w, const uint8_t *x, __m256i unused) {                   \
        (void)unused;                                                                                       \
        __m256i p[8];                                                                                       \
        for (int i = 0; i < 8; i += 2) {                                                                    \
            const __m512i v = DOT(pair(LOADW(w, i), LOADW(w, i + 1)),                                       \
                                  pair(qs_avx2(x + i * ORC_Q8_0_BYTES), qs_avx2(x + (i + 1) * ORC_Q8_0_BYTES))); \
            p[i] = _mm512_castsi512_si256(v);                                                               \
            p[i + 1] = _mm512_extracti64x4_epi64(v, 1);                                                     \
        }                                                                                                   \
        return reduce8_avx2(p);                                                                             \
    }

ISUM8_512(isum8_q8_512, AVX512, q8w, dot_i8_512)
ISUM8_512(isum8_q4_512, AVX512, q4w, dot_i8_512)
ISUM8_512(isum8_q8_vnni, AVX512VNNI, q8w, dot_i8_vnni)
ISUM8_512(isum8_q4_vnni, AVX512VNNI, q4w, dot_i8_vnni)

ROWS_SIMD(rows_q8_avx512, AVX512, ORC_Q8_0_BYTES, NO_PREP, isum8_q8_512, isum1_q8_avx2)
ROWS_SIMD(rows_q4_avx512, AVX512, ORC_Q4_0_BYTES, NO_PREP, isum8_q4_512, isum1_q4_avx2)
ROWS_SIMD(rows_q8_vnni, AVX512VNNI, ORC_Q8_0_BYTES, NO_PREP, isum8_q8_vnni, isum1_q8_avx2)
ROWS_SIMD(rows_q4_vnni, AVX512VNNI, ORC_Q4_0_BYTES, NO_PREP, isum8_q4_vnni, isum1_q4_avx2)

/* ---- dispatch ---------------------------------------------------------------------- */

typedef void (*mm_fn)(const uint8_t *w, const mm_prep *p, int64_t t0, float *y, int64_t ystride);
typedef void (*g8_fn)(const uint8_t *g, const mm_prep *p, int64_t t0, int64_t nt, float *y, int64_t ystride);

/* A path's rows kernel for one weight type, and its matrix-matrix kernel
 * (NULL: the rows kernel token by token). */
typedef struct kernel {
    rows_fn rows;
    mm_fn mm;
    g8_fn g8; /* for packed matrices (NULL: the portable path reads data) */
    size_t wbytes;
} kernel;

static kernel pick(orc_ggml_type type) {
    pthread_once(&f16_once, f16_table_init);
    const bool q4 = type == ORC_GGML_Q4_0;
    kernel k = {q4 ? rows_q4_portable : rows_q8_portable, NULL, NULL, q4 ? ORC_Q4_0_BYTES : ORC_Q8_0_BYTES};
    switch (orc_q_active_path()) {
    case ORC_Q_AVX512:
        if (cpu_vnni)
            k.rows = q4 ? rows_q4_vnni : rows_q8_vnni;
        else
            k.rows = q4 ? rows_q4_avx512 : rows_q8_avx512;
        /* an AVX-512 CPU runs the AVX2 matrix-matrix and packed kernels
         * (exact integer sums: the same bits as its own rows kernel) */
        k.mm = q4 ? mm_q4_avx2 : mm_q8_avx2;
        k.g8 = q4 ? g8_q4_avx2 : g8_q8_avx2;
        break;
    case ORC_Q_AVX2:
        k.rows = q4 ? rows_q4_avx2 : rows_q8_avx2;
        k.mm = q4 ? mm_q4_avx2 : mm_q8_avx2;
        k.g8 = q4 ? g8_q4_avx2 : g8_q8_avx2;
        break;
    default: break;
    }
    return k;
}

float orc_q_dot(orc_ggml_type type, const uint8_t *w, const uint8_t *xq, int64_t nb) {
    const kernel k = pick(type);
    float y;
    k.rows(w, 0, 1, xq, nb, &y);
    return y;
}

/* ---- matrices ------------------------------------------------------------------------ */

/* One activation block as ggml's reference quantizer writes it (d = amax /
 * 127, q = roundf(x * (1 / d)), 0 where that is not an int8), 8 lanes at a
 * time: roundf is trunc(|v|) plus one where the exact remainder is >= 0.5,
 * with v's sign; a block holding a NaN or an infinity, whose amax depends on
 * the scan order, takes the reference itself. Every value is the
 * reference's, so decode does not depend on the path. */
AVX2 static void quant_block_avx2(const float *x, uint8_t *out) {
    const __m256 sgn = _mm256_set1_ps(-0.0f);
    __m256 v[4], m = _mm256_setzero_ps(), fin = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        const __m256 a = _mm256_andnot_ps(sgn, v[i]);
        fin = _mm256_and_ps(fin, _mm256_cmp_ps(a, _mm256_set1_ps(3.40282347e38f), _CMP_LE_OQ));
        m = _mm256_max_ps(m, a);
    }
    if (_mm256_movemask_ps(fin) != 0xff) {
        orc_ggml_quantize(ORC_GGML_Q8_0, x, out, ORC_Q_BLOCK, NULL);
        return;
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    const float d = _mm_cvtss_f32(h) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t hd = orc_st_f32_to_f16(d);
    memcpy(out, &hd, 2);
    __m256i q[4];
    for (int i = 0; i < 4; i++) {
        const __m256 p = _mm256_mul_ps(v[i], _mm256_set1_ps(id));
        const __m256 a = _mm256_andnot_ps(sgn, p);
        const __m256 t = _mm256_round_ps(a, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m256 up = _mm256_and_ps(_mm256_cmp_ps(_mm256_sub_ps(a, t), _mm256_set1_ps(0.5f), _CMP_GE_OQ),
                                        _mm256_set1_ps(1.0f));
        const __m256 r = _mm256_or_ps(_mm256_add_ps(t, up), _mm256_and_ps(sgn, p));
        const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(r, _mm256_set1_ps(-128.0f), _CMP_GE_OQ),
                                        _mm256_cmp_ps(r, _mm256_set1_ps(127.0f), _CMP_LE_OQ));
        q[i] = _mm256_and_si256(_mm256_cvttps_epi32(r), _mm256_castps_si256(ok));
    }
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i *)(out + 2), _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

AVX2 static void quant_rows_avx2(const float *x, int64_t nblocks, uint8_t *out) {
    for (int64_t i = 0; i < nblocks; i++) quant_block_avx2(x + i * ORC_Q_BLOCK, out + (size_t)i * ORC_Q8_0_BYTES);
}

void orc_q8_quantize_rows(const float *x, int64_t n, int64_t cols, uint8_t *out) {
    /* rows are whole blocks, so n rows are n * cols / 32 consecutive blocks */
    if (orc_q_active_path() != ORC_Q_PORTABLE) {
        quant_rows_avx2(x, n * (cols / ORC_Q_BLOCK), out);
        return;
    }
    const size_t rb = orc_q_row_bytes(ORC_GGML_Q8_0, cols);
    for (int64_t t = 0; t < n; t++)
        orc_ggml_quantize(ORC_GGML_Q8_0, x + t * cols, out + (size_t)t * rb, cols, NULL);
}

/* Rows per task: a tile's weights stay in cache while every token passes
 * over them (T > 1); for decode it is the unit the threads split. */
#define TILE_ROWS 16

/* Tile `tile` of a Q8_0 / Q4_0 matrix for every token: groups of MM_TOKENS
 * tokens through the matrix-matrix kernel when there is one and prep holds
 * the activations' scales (NULL: none), the rest token by token. */
static void run_tile(const kernel *k, const orc_qmat *w, int64_t tile, const uint8_t *xq, int64_t T,
                     const mm_prep *prep, float *y) {
    const int64_t R = w->rows, r0 = tile * TILE_ROWS, n = R - r0 < TILE_ROWS ? R - r0 : TILE_ROWS;
    const size_t xb = orc_q_row_bytes(ORC_GGML_Q8_0, w->cols);
    const uint8_t *wt = w->data + (size_t)r0 * w->row_bytes;
    int64_t t = 0;
    if (w->packed && k->g8 && prep) {
        /* a tile is whole groups (TILE_ROWS and rows are multiples of 8); a
         * group's weights stay in cache while every token passes */
        const size_t gb = (size_t)(w->cols / ORC_Q_BLOCK) * g8_bytes(w->type == ORC_GGML_Q4_0);
        for (int64_t g = 0; g < n / G8; g++) k->g8(w->packed + (size_t)(r0 / G8 + g) * gb, prep, 0, T, y + r0 + g * G8, R);
        return;
    }
    if (k->mm && prep)
        for (; t + MM_TOKENS <= T; t += MM_TOKENS)
            for (int64_t r = 0; r < n; r++) k->mm(wt + (size_t)r * w->row_bytes, prep, t, y + t * R + r0 + r, R);
    for (; t < T; t++) k->rows(wt, w->row_bytes, n, xq + (size_t)t * xb, w->cols / ORC_Q_BLOCK, y + t * R + r0);
}

void orc_q_matmul_q8(const orc_qmat *w, const uint8_t *xq, int64_t T, float *y) {
    orc_q_matmul_q8_many(&w, 1, xq, T, &y);
}

void orc_q_matmul_q8_many(const orc_qmat *const *w, int n, const uint8_t *xq, int64_t T, float *const *y) {
    /* Q8_0 / Q4_0 matrices share one parallel region over all their tiles
     * (every tile computes the same bits on any thread); palettized ones run
     * their own kernel. */
    if (n > ORC_Q_MANY_MAX) {
        orc_q_matmul_q8_many(w + ORC_Q_MANY_MAX, n - ORC_Q_MANY_MAX, xq, T, y + ORC_Q_MANY_MAX);
        n = ORC_Q_MANY_MAX;
    }
    kernel k[ORC_Q_MANY_MAX];
    int64_t first[ORC_Q_MANY_MAX + 1];
    first[0] = 0;
    int m = 0;
    const orc_qmat *mats[ORC_Q_MANY_MAX];
    float *outs[ORC_Q_MANY_MAX];
    for (int i = 0; i < n; i++) {
        if (orc_q_type_is_pal(w[i]->type)) {
            orc_q_pal_matmul_q8(w[i], xq, T, y[i]);
            continue;
        }
        mats[m] = w[i];
        outs[m] = y[i];
        k[m] = pick(w[i]->type);
        first[m + 1] = first[m] + (w[i]->rows + TILE_ROWS - 1) / TILE_ROWS;
        m++;
    }
    const int64_t tiles = first[m];
    /* the matrices share x, so one preparation serves them all; without
     * memory for it every token takes the rows kernel (the same bits) */
    mm_prep prep = {0};
    bool packed = false;
    for (int i = 0; i < m; i++) packed = packed || (mats[i]->packed && k[i].g8);
    const bool mm = m > 0 && (packed || (T >= MM_TOKENS && k[0].mm)) && mm_prep_init(&prep, xq, T, mats[0]->cols);
#pragma omp parallel for schedule(static) if (tiles > 1)
    for (int64_t tile = 0; tile < tiles; tile++) {
        int j = 0;
        while (tile >= first[j + 1]) j++;
        run_tile(&k[j], mats[j], tile - first[j], xq, T, mm ? &prep : NULL, outs[j]);
    }
    mm_prep_free(&prep);
}

orc_status orc_q_matmul(const orc_qmat *w, const float *x, int64_t T, float *y, orc_error *err) {
    const size_t xb = orc_q_row_bytes(ORC_GGML_Q8_0, w->cols);
    uint8_t *xq = malloc(xb * (size_t)(T > 0 ? T : 1));
    if (!xq) return orc_error_set(err, ORC_ENOMEM, "quant matmul: out of memory for %lld activation rows",
                                  (long long)T);
    orc_q8_quantize_rows(x, T, w->cols, xq);
    orc_q_matmul_q8(w, xq, T, y);
    free(xq);
    return ORC_OK;
}
