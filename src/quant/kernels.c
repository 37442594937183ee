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
 * activation quantizer and the row-parallel matrix kernels built on the rows
 * kernels (several rows per pass, one parallel region per call, or per group
 * of matrices sharing one input). */
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

AVX2 static inline __m256i reduce8_avx2(const __m256i p[8]) {
    /* per 128-bit lane: [p0, p1, p2, p3] halves, then both halves added */
    const __m256i a = quadsum_avx2(pairsum_avx2(p[0], p[1]), pairsum_avx2(p[2], p[3]));
    const __m256i b = quadsum_avx2(pairsum_avx2(p[4], p[5]), pairsum_avx2(p[6], p[7]));
    const __m256i lo = _mm256_permute2x128_si256(a, b, 0x20), hi = _mm256_permute2x128_si256(a, b, 0x31);
    return _mm256_add_epi32(lo, hi);
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
        for (int i = 0; i < nr; i++) {                                                                      \
            float a[8];                                                                                     \
            _mm256_storeu_ps(a, acc[i]);                                                                    \
            for (int64_t t = b; t < nb; t++) {                                                              \
                const uint8_t *wb = w + (size_t)i * rb + (size_t)t * (WB), *xb = x + (size_t)t * ORC_Q8_0_BYTES; \
                lane_add(a, t, scale_of(wb), scale_of(xb), ISUM1(wb, xb));                                  \
            }                                                                                               \
            y[i] = orc_q_reduce8(a);                                                                        \
        }                                                                                                   \
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

/* A path's rows kernel for one weight type. */
typedef struct kernel {
    rows_fn rows;
    size_t wbytes;
} kernel;

static kernel pick(orc_ggml_type type) {
    pthread_once(&f16_once, f16_table_init);
    const bool q4 = type == ORC_GGML_Q4_0;
    kernel k = {q4 ? rows_q4_portable : rows_q8_portable, q4 ? ORC_Q4_0_BYTES : ORC_Q8_0_BYTES};
    switch (orc_q_active_path()) {
    case ORC_Q_AVX512:
        if (cpu_vnni)
            k.rows = q4 ? rows_q4_vnni : rows_q8_vnni;
        else
            k.rows = q4 ? rows_q4_avx512 : rows_q8_avx512;
        break;
    case ORC_Q_AVX2: k.rows = q4 ? rows_q4_avx2 : rows_q8_avx2; break;
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

void orc_q8_quantize_rows(const float *x, int64_t n, int64_t cols, uint8_t *out) {
    const size_t rb = orc_q_row_bytes(ORC_GGML_Q8_0, cols);
    for (int64_t t = 0; t < n; t++)
        orc_ggml_quantize(ORC_GGML_Q8_0, x + t * cols, out + (size_t)t * rb, cols, NULL);
}

/* Rows per task: a tile's weights stay in cache while every token passes
 * over them (T > 1); for decode it is the unit the threads split. */
#define TILE_ROWS 16

/* Tile `tile` of a Q8_0 / Q4_0 matrix for every token. */
static void run_tile(const kernel *k, const orc_qmat *w, int64_t tile, const uint8_t *xq, int64_t T, float *y) {
    const int64_t R = w->rows, r0 = tile * TILE_ROWS, n = R - r0 < TILE_ROWS ? R - r0 : TILE_ROWS;
    const size_t xb = orc_q_row_bytes(ORC_GGML_Q8_0, w->cols);
    for (int64_t t = 0; t < T; t++)
        k->rows(w->data + (size_t)r0 * w->row_bytes, w->row_bytes, n, xq + (size_t)t * xb, w->cols / ORC_Q_BLOCK,
                y + t * R + r0);
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
#pragma omp parallel for schedule(static) if (tiles > 1)
    for (int64_t tile = 0; tile < tiles; tile++) {
        int j = 0;
        while (tile >= first[j + 1]) j++;
        run_tile(&k[j], mats[j], tile - first[j], xq, T, outs[j]);
    }
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
