/* Palettized kernels (orchard/quant.h): PAL4 / PAL2 weight rows against
 * Q8_0 activation rows, never making float weights. Every path computes only
 * exact integer sums, one per 16-column sub-group: sum_i lut[idx_i] * xq_i
 * (|lut| <= 127, |xq| <= 127, 16 terms: exact in int32 and in float). The
 * portable path looks entries up one by one; AVX2 and AVX-512 look up 32 / 64
 * at once with a byte shuffle (pshufb: a 16-entry table of int8 per 128-bit
 * lane, which is exactly one sub-group's table) and multiply with maddubs /
 * dpbusd. One shared, non-inlined float step then adds
 *   (lut_scale[g] * d_x[block]) * (float)isum[sub]
 * into 8 lane accumulators (sub-group s into lane s % 8) and sums the lanes
 * in one fixed order, so all paths, thread counts and T give the same bits. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/quant.h"
#include "orchard/safetensors.h"
#include "quant_internal.h"

/* Sub-groups whose integer sums are gathered before the float step (a
 * multiple of 8, so chunking does not change which lane a term goes to). */
#define SUBS 64

/* ---- the float step (shared by every path) ----------------------------------------- */

/* acc[l] += c[j + l] * isum[j + l] for each 8 sub-groups j; n a multiple of 8.
 * Not inlined so every path runs this one compiled copy; ISO C mode does not
 * fuse the multiply and the add. */
__attribute__((noinline)) static void pal_accumulate(float acc[8], const float *c, const int32_t *isum, int64_t n) {
    for (int64_t j = 0; j < n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += c[j + l] * (float)isum[j + l];
}


/* ---- portable ---------------------------------------------------------------------- */

/* isums of n sub-groups (n even): w at their first chunk, x at their first Q8_0 block. */
typedef void (*pal_isums_fn)(const uint8_t *w, const uint8_t *x, const int8_t *ktab, int64_t n, int32_t *out);

static void pal4_portable(const uint8_t *w, const uint8_t *x, const int8_t *ktab, int64_t n, int32_t *out) {
    for (int64_t s = 0; s < n; s++) {
        const uint8_t *b = w + (s / 2) * 16;
        const int sh = (int)(s & 1) * 4;
        const int8_t *t = ktab + s * 16, *xs = (const int8_t *)(x + (s / 2) * ORC_Q8_0_BYTES + 2 + (s & 1) * 16);
        int32_t acc = 0;
        for (int i = 0; i < 16; i++) acc += (int32_t)t[(b[i] >> sh) & 15] * (int32_t)xs[i];
        out[s] = acc;
    }
}

static void pal2_portable(const uint8_t *w, const uint8_t *x, const int8_t *ktab, int64_t n, int32_t *out) {
    for (int64_t s = 0; s < n; s++) {
        const uint8_t *b = w + (s / 2) * 8;
        const int h = (int)(s & 1);
        const int8_t *t = ktab + s * 16, *xs = (const int8_t *)(x + (s / 2) * ORC_Q8_0_BYTES + 2 + h * 16);
        int32_t acc = 0;
        for (int i = 0; i < 16; i++) acc += (int32_t)t[(b[i % 8] >> (2 * (2 * h + i / 8))) & 3] * (int32_t)xs[i];
        out[s] = acc;
    }
}

/* Prefill: a row unpacked once to its int8 entries (cols bytes; not float
 * weights), then dotted with every token. The sums are the same integers. */
typedef void (*pal_unpack_fn)(const uint8_t *w, const int8_t *ktab, int64_t cols, int8_t *out);

static void pal4_unpack_portable(const uint8_t *w, const int8_t *ktab, int64_t cols, int8_t *out) {
    for (int64_t k = 0; k < cols; k++) {
        const int64_t c = k / 32, e = k % 32;
        out[k] = ktab[(k / 16) * 16 + ((w[c * 16 + e % 16] >> (4 * (e / 16))) & 15)];
    }
}

static void pal2_unpack_portable(const uint8_t *w, const int8_t *ktab, int64_t cols, int8_t *out) {
    for (int64_t k = 0; k < cols; k++) {
        const int64_t c = k / 32, e = k % 32;
        out[k] = ktab[(k / 16) * 16 + ((w[c * 8 + e % 8] >> (2 * (e / 8))) & 3)];
    }
}

static void i8_portable(const uint8_t *w, const uint8_t *x, const int8_t *ktab, int64_t n, int32_t *out) {
    (void)ktab;
    const int8_t *wi = (const int8_t *)w;
    for (int64_t s = 0; s < n; s++) {
        const int8_t *xs = (const int8_t *)(x + (s / 2) * ORC_Q8_0_BYTES + 2 + (s & 1) * 16);
        int32_t acc = 0;
        for (int i = 0; i < 16; i++) acc += (int32_t)wi[s * 16 + i] * (int32_t)xs[i];
        out[s] = acc;
    }
}

/* ---- AVX2 ------------------------------------------------------------------------------ */

#define AVX2 __attribute__((target("avx2")))

/* 32 signed weights of a chunk: its two sub-groups' indices (lane 0 the
 * first) shuffled through their two tables (32 contiguous bytes of ktab). */
AVX2 static inline __m256i pal4_w_avx2(const uint8_t *w, const int8_t *ktab) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)w), m = _mm_set1_epi8(0x0f);
    const __m256i idx = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m), _mm_and_si128(raw, m));
    return _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)ktab), idx);
}

AVX2 static inline __m256i pal2_w_avx2(const uint8_t *w, const int8_t *ktab) {
    const __m128i r = _mm_loadl_epi64((const __m128i *)w), m = _mm_set1_epi8(3);
    const __m128i a = _mm_and_si128(r, m), b = _mm_and_si128(_mm_srli_epi16(r, 2), m);
    const __m128i c = _mm_and_si128(_mm_srli_epi16(r, 4), m), d = _mm_and_si128(_mm_srli_epi16(r, 6), m);
    const __m256i idx = _mm256_set_m128i(_mm_unpacklo_epi64(c, d), _mm_unpacklo_epi64(a, b));
    return _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)ktab), idx);
}

/* Signed bytes w . x as 8 int32 partial sums (4 per 128-bit lane); pairs stay
 * below 2 * 127 * 127, so maddubs cannot saturate. */
AVX2 static inline __m256i dot8_avx2(__m256i w, __m256i x) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* Four chunks' partial sums to the 8 sub-group totals, in sub-group order. */
AVX2 static inline void reduce_subs_avx2(__m256i p0, __m256i p1, __m256i p2, __m256i p3, int32_t *out) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
    /* lane 0 holds sub-groups 0 2 4 6, lane 1 holds 1 3 5 7 */
    _mm256_storeu_si256((__m256i *)out, _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

AVX2 static inline __m256i xq_avx2(const uint8_t *x, int64_t c) {
    return _mm256_loadu_si256((const __m256i *)(x + c * ORC_Q8_0_BYTES + 2));
}

#define PAL_AVX2(NAME, LOADW, CB)                                                                           \
    AVX2 static void NAME(const uint8_t *w, const uint8_t *x, const int8_t *ktab, int64_t n, int32_t *out) { \
        const int64_t nc = n / 2;                                                                           \
        int64_t c = 0;                                                                                      \
        for (; c + 4 <= nc; c += 4) {                                                                       \
            __m256i p[4];                                                                                   \
            for (int i = 0; i < 4; i++)                                                                     \
                p[i] = dot8_avx2(LOADW(w + (c + i) * CB, ktab + (c + i) * 32), xq_avx2(x, c + i));          \
            reduce_subs_avx2(p[0], p[1], p[2], p[3], out + 2 * c);                                          \
        }                                                                                                   \
        if (c < nc) {                                                                                       \
            __m256i p[4];                                                                                   \
            int32_t tmp[8];                                                                                 \
            for (int i = 0; i < 4; i++)                                                                     \
                p[i] = c + i < nc ? dot8_avx2(LOADW(w + (c + i) * CB, ktab + (c + i) * 32), xq_avx2(x, c + i)) \
                                  : _mm256_setzero_si256();                                                 \
            reduce_subs_avx2(p[0], p[1], p[2], p[3], tmp);                                                  \
            memcpy(out + 2 * c, tmp, sizeof(int32_t) * (size_t)(2 * (nc - c)));                             \
        }                                                                                                   \
    }

PAL_AVX2(pal4_avx2, pal4_w_avx2, 16)
PAL_AVX2(pal2_avx2, pal2_w_avx2, 8)

AVX2 static inline __m256i i8_w_avx2(const uint8_t *w, const int8_t *ktab) {
    (void)ktab;
    return _mm256_loadu_si256((const __m256i *)w);
}

PAL_AVX2(i8_avx2, i8_w_avx2, 32)

#define UNPACK_AVX2(NAME, LOADW, CB)                                                                        \
    AVX2 static void NAME(const uint8_t *w, const int8_t *ktab, int64_t cols, int8_t *out) {                \
        for (int64_t c = 0; c < cols / 32; c++)                                                             \
            _mm256_storeu_si256((__m256i *)(out + c * 32), LOADW(w + c * CB, ktab + c * 32));               \
    }

UNPACK_AVX2(pal4_unpack_avx2, pal4_w_avx2, 16)
UNPACK_AVX2(pal2_unpack_avx2, pal2_w_avx2, 8)

/* ---- AVX-512 ------------------------------------------------------------------------------ */

#define AVX512 __attribute__((target("avx2,avx512f,avx512bw,avx512vl")))
#define AVX512VNNI __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni")))

AVX512 static inline __m512i pair512(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* Two chunks (four sub-groups, one per 128-bit lane) of indices. */
AVX512 static inline __m512i pal4_idx512(const uint8_t *w) {
    const __m256i raw = _mm256_loadu_si256((const __m256i *)w), m = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(raw, m), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m);
    /* [chunk0 lo, chunk0 hi, chunk1 lo, chunk1 hi] */
    return pair512(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31));
}

AVX512 static inline __m512i pal2_idx512(const uint8_t *w) {
    const __m128i r = _mm_loadu_si128((const __m128i *)w), m = _mm_set1_epi8(3);
    const __m128i a = _mm_and_si128(r, m), b = _mm_and_si128(_mm_srli_epi16(r, 2), m);
    const __m128i c = _mm_and_si128(_mm_srli_epi16(r, 4), m), d = _mm_and_si128(_mm_srli_epi16(r, 6), m);
    /* chunk 0 is the low 8 bytes of each of a b c d, chunk 1 the high 8 */
    const __m256i c0 = _mm256_set_m128i(_mm_unpacklo_epi64(c, d), _mm_unpacklo_epi64(a, b));
    const __m256i c1 = _mm256_set_m128i(_mm_unpackhi_epi64(c, d), _mm_unpackhi_epi64(a, b));
    return pair512(c0, c1);
}

AVX512 static inline __m512i dot16_512(__m512i w, __m512i x) {
    const __m512i aw = _mm512_abs_epi8(w);
    const __m512i sx = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
    return _mm512_madd_epi16(_mm512_maddubs_epi16(aw, sx), _mm512_set1_epi16(1));
}

AVX512VNNI static inline __m512i dot16_vnni(__m512i w, __m512i x) {
    const __m512i aw = _mm512_abs_epi8(w);
    const __m512i sx = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx);
}

/* Four chunks per step as two registers; their 256-bit halves are the
 * per-chunk partial sums the AVX2 reduction takes. Odd tails use AVX2. */
#define PAL_512(NAME, ATTR, IDX, DOT, CB, TAIL)                                                             \
    ATTR static void NAME(const uint8_t *w, const uint8_t *x, const int8_t *ktab, int64_t n, int32_t *out) { \
        const int64_t nc = n / 2;                                                                           \
        int64_t c = 0;                                                                                      \
        for (; c + 4 <= nc; c += 4) {                                                                       \
            __m512i v[2];                                                                                   \
            for (int i = 0; i < 2; i++) {                                                                   \
                const int64_t k = c + 2 * i;                                                                \
                const __m512i wv = _mm512_shuffle_epi8(_mm512_loadu_si512(ktab + k * 32), IDX(w + k * CB)); \
                v[i] = DOT(wv, pair512(xq_avx2(x, k), xq_avx2(x, k + 1)));                                  \
            }                                                                                               \
            reduce_subs_avx2(_mm512_castsi512_si256(v[0]), _mm512_extracti64x4_epi64(v[0], 1),              \
                             _mm512_castsi512_si256(v[1]), _mm512_extracti64x4_epi64(v[1], 1), out + 2 * c); \
        }                                                                                                   \
        if (c < nc) TAIL(w + c * CB, x + c * ORC_Q8_0_BYTES, ktab + c * 32, 2 * (nc - c), out + 2 * c);     \
    }

PAL_512(pal4_avx512, AVX512, pal4_idx512, dot16_512, 16, pal4_avx2)
PAL_512(pal2_avx512, AVX512, pal2_idx512, dot16_512, 8, pal2_avx2)
PAL_512(pal4_vnni, AVX512VNNI, pal4_idx512, dot16_vnni, 16, pal4_avx2)
PAL_512(pal2_vnni, AVX512VNNI, pal2_idx512, dot16_vnni, 8, pal2_avx2)

/* ---- dispatch ------------------------------------------------------------------------------- */

static pal_isums_fn pick(orc_ggml_type type) {
    const bool p4 = type == ORC_Q_PAL4;
    switch (orc_q_active_path()) {
    case ORC_Q_AVX512:
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512vnni")) return p4 ? pal4_vnni : pal2_vnni;
        return p4 ? pal4_avx512 : pal2_avx512;
    case ORC_Q_AVX2: return p4 ? pal4_avx2 : pal2_avx2;
    default: return p4 ? pal4_portable : pal2_portable;
    }
}

/* The unpacker and int8-row kernel of the active path (AVX-512 uses AVX2's:
 * after unpacking, the work is Q8_0-like and memory-light). */
static void pick_prefill(orc_ggml_type type, pal_unpack_fn *u, pal_isums_fn *f) {
    const bool p4 = type == ORC_Q_PAL4;
    if (orc_q_active_path() == ORC_Q_PORTABLE) {
        *u = p4 ? pal4_unpack_portable : pal2_unpack_portable;
        *f = i8_portable;
    } else {
        *u = p4 ? pal4_unpack_avx2 : pal2_unpack_avx2;
        *f = i8_avx2;
    }
}

/* c[s - s0] = lut_scale[table of s] * d_x[block of s] for sub-groups
 * s0 .. s0+n of one activation row, zero-padded to n8. */
static void scales_row(const orc_qmat *w, const uint8_t *xrow, int64_t s0, int64_t n, int64_t n8, float *c) {
    for (int64_t s = s0; s < s0 + n; s++) {
        uint16_t h;
        memcpy(&h, xrow + (s / 2) * ORC_Q8_0_BYTES, 2);
        c[s - s0] = w->lut_scale[s * ORC_Q_PAL_SUB / w->group] * orc_st_f16_to_f32(h);
    }
    for (int64_t i = n; i < n8; i++) c[i] = 0.0f;
}

/* One output: c holds the row's scale products (padded), or is NULL and
 * they are computed per chunk here (the same products, so the same bits). */
static float pal_dot_cb(pal_isums_fn f, const orc_qmat *w, const uint8_t *row, int64_t cb, const uint8_t *xrow,
                        const float *c) {
    const int64_t ns = w->cols / ORC_Q_PAL_SUB;
    int32_t isum[SUBS];
    float local[SUBS];
    float acc[8] = {0};
    for (int64_t s = 0; s < ns; s += SUBS) {
        const int64_t n = ns - s < SUBS ? ns - s : SUBS, n8 = (n + 7) / 8 * 8;
        f(row + (s / 2) * cb, xrow + (s / 2) * ORC_Q8_0_BYTES, w->ktab + s * 16, n, isum);
        for (int64_t i = n; i < n8; i++) isum[i] = 0;
        if (!c) scales_row(w, xrow, s, n, n8, local);
        pal_accumulate(acc, c ? c + s : local, isum, n8);
    }
    return orc_q_reduce8(acc);
}

static float pal_dot(pal_isums_fn f, const orc_qmat *w, const uint8_t *row, const uint8_t *xrow, const float *c) {
    return pal_dot_cb(f, w, row, w->type == ORC_Q_PAL4 ? 16 : 8, xrow, c); /* bytes per 32-column chunk */
}

/* Rows per tile of the matrix-matrix kernel (as in kernels.c). */
#define TILE_ROWS 16

void orc_q_pal_matmul_q8(const orc_qmat *w, const uint8_t *xq, int64_t T, float *y) {
    const pal_isums_fn f = pick(w->type);
    const int64_t ns = w->cols / ORC_Q_PAL_SUB, n8 = (ns + 7) / 8 * 8, R = w->rows;
    const size_t xb = orc_q_row_bytes(ORC_GGML_Q8_0, w->cols);
    /* the scale products of every token, computed once for all rows */
    float *c = malloc(sizeof(float) * (size_t)(n8 * (T > 0 ? T : 1)));
    for (int64_t t = 0; c && t < T; t++) scales_row(w, xq + (size_t)t * xb, 0, ns, n8, c + t * n8);
    if (T == 1) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < R; r++) y[r] = pal_dot(f, w, w->data + (size_t)r * w->row_bytes, xq, c);
        free(c);
        return;
    }
    const int64_t tiles = (R + TILE_ROWS - 1) / TILE_ROWS;
    pal_unpack_fn unpack;
    pal_isums_fn fi;
    pick_prefill(w->type, &unpack, &fi);
#pragma omp parallel
    {
        /* without the buffer a thread dots the packed rows (the same sums) */
        int8_t *buf = malloc((size_t)(TILE_ROWS * w->cols));
#pragma omp for schedule(static)
        for (int64_t tile = 0; tile < tiles; tile++) {
            const int64_t r0 = tile * TILE_ROWS, r1 = r0 + TILE_ROWS < R ? r0 + TILE_ROWS : R;
            for (int64_t r = r0; buf && r < r1; r++)
                unpack(w->data + (size_t)r * w->row_bytes, w->ktab, w->cols, buf + (r - r0) * w->cols);
            for (int64_t t = 0; t < T; t++)
                for (int64_t r = r0; r < r1; r++) {
                    const uint8_t *xr = xq + (size_t)t * xb;
                    const float *ct = c ? c + t * n8 : NULL;
                    y[t * R + r] = buf ? pal_dot_cb(fi, w, (const uint8_t *)(buf + (r - r0) * w->cols), 32, xr, ct)
                                       : pal_dot(f, w, w->data + (size_t)r * w->row_bytes, xr, ct);
                }
        }
        free(buf);
    }
    free(c);
}
