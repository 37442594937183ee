/* Quantized dot-product kernels (see orchard/quant.h): Q8_0 and Q4_0 weight
 * blocks against Q8_0 activation blocks, in a portable C path, an AVX2 path
 * and an AVX-512 path (dpbusd when the CPU has VNNI), chosen at run time.
 * Every path computes only the exact per-block integer sums; one shared
 * function combines them with the block scales in a fixed sequential order,
 * so all paths give the same bits. Also the on-the-fly Q8_0 activation quantizer and the
 * row-parallel matrix kernels built on the dot product. */
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
    cpu_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    cpu_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
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

/* ---- the float step --------------------------------------------------------------- */

/* Blocks whose integer sums are gathered before the float step. */
#define CHUNK 64

/* acc + the terms (d_w * d_x) * isum[b], added one block at a time in order.
 * Not inlined, so every path runs this one compiled copy (and C11 mode does
 * not fuse the multiply and add). A SIMD version with lanes was tried: it
 * gives the same bits but measured ~30% slower, its scale gathers competing
 * with the integer shuffles for the same port. */
__attribute__((noinline)) static float accumulate(float acc, const uint8_t *w, size_t wbytes, const uint8_t *x,
                                                  const int32_t *isum, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        const float d = scale_of(w + (size_t)b * wbytes) * scale_of(x + (size_t)b * ORC_Q8_0_BYTES);
        acc += d * (float)isum[b];
    }
    return acc;
}

/* ---- portable ------------------------------------------------------------------- */

static void isums_q8_portable(const uint8_t *w, const uint8_t *x, int64_t nb, int32_t *out) {
    for (int64_t b = 0; b < nb; b++) {
        const int8_t *qw = (const int8_t *)(w + b * ORC_Q8_0_BYTES + 2);
        const int8_t *qx = (const int8_t *)(x + b * ORC_Q8_0_BYTES + 2);
        int32_t s = 0;
        for (int j = 0; j < ORC_Q_BLOCK; j++) s += (int32_t)qw[j] * (int32_t)qx[j];
        out[b] = s;
    }
}

static void isums_q4_portable(const uint8_t *w, const uint8_t *x, int64_t nb, int32_t *out) {
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *qw = w + b * ORC_Q4_0_BYTES + 2;
        const int8_t *qx = (const int8_t *)(x + b * ORC_Q8_0_BYTES + 2);
        int32_t s = 0;
        for (int j = 0; j < ORC_Q_BLOCK / 2; j++) {
            s += ((int32_t)(qw[j] & 0x0f) - 8) * (int32_t)qx[j];
            s += ((int32_t)(qw[j] >> 4) - 8) * (int32_t)qx[j + ORC_Q_BLOCK / 2];
        }
        out[b] = s;
    }
}

/* ---- AVX2 ----------------------------------------------------------------------- */

#define AVX2 __attribute__((target("avx2")))

/* Signed bytes w . x as 8 int32 partial sums: |w| (unsigned) times x with
 * w's sign; pairs stay below 2 * 128 * 127, so maddubs cannot saturate. */
AVX2 static inline __m256i dot_i8_avx2(__m256i w, __m256i x) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* The 32 Q4_0 weights of a block as signed bytes q - 8, in element order. */
AVX2 static inline __m256i unpack_q4_avx2(const uint8_t *qs) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    const __m128i lo = _mm_and_si128(raw, _mm_set1_epi8(0x0f));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0f));
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

/* Eight vectors of 8 partial sums each to their 8 totals, in order. */
AVX2 static inline void reduce8_avx2(const __m256i p[8], int32_t *out) {
    const __m256i h01 = _mm256_hadd_epi32(p[0], p[1]), h23 = _mm256_hadd_epi32(p[2], p[3]);
    const __m256i h45 = _mm256_hadd_epi32(p[4], p[5]), h67 = _mm256_hadd_epi32(p[6], p[7]);
    const __m256i a = _mm256_hadd_epi32(h01, h23), b = _mm256_hadd_epi32(h45, h67);
    const __m256i lo = _mm256_permute2x128_si256(a, b, 0x20), hi = _mm256_permute2x128_si256(a, b, 0x31);
    _mm256_storeu_si256((__m256i *)out, _mm256_add_epi32(lo, hi));
}

AVX2 static inline int32_t hsum_avx2(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

AVX2 static __m256i load_x(const uint8_t *x, int64_t b) {
    return _mm256_loadu_si256((const __m256i *)(x + b * ORC_Q8_0_BYTES + 2));
}

AVX2 static void isums_q8_avx2(const uint8_t *w, const uint8_t *x, int64_t nb, int32_t *out) {
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        __m256i p[8];
        for (int i = 0; i < 8; i++)
            p[i] = dot_i8_avx2(_mm256_loadu_si256((const __m256i *)(w + (b + i) * ORC_Q8_0_BYTES + 2)),
                               load_x(x, b + i));
        reduce8_avx2(p, out + b);
    }
    for (; b < nb; b++)
        out[b] = hsum_avx2(dot_i8_avx2(_mm256_loadu_si256((const __m256i *)(w + b * ORC_Q8_0_BYTES + 2)),
                                       load_x(x, b)));
}

AVX2 static void isums_q4_avx2(const uint8_t *w, const uint8_t *x, int64_t nb, int32_t *out) {
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        __m256i p[8];
        for (int i = 0; i < 8; i++)
            p[i] = dot_i8_avx2(unpack_q4_avx2(w + (b + i) * ORC_Q4_0_BYTES + 2), load_x(x, b + i));
        reduce8_avx2(p, out + b);
    }
    for (; b < nb; b++) out[b] = hsum_avx2(dot_i8_avx2(unpack_q4_avx2(w + b * ORC_Q4_0_BYTES + 2), load_x(x, b)));
}

/* ---- AVX-512 --------------------------------------------------------------------- */

#define AVX512 __attribute__((target("avx2,avx512f,avx512bw,avx512vl")))
#define AVX512VNNI __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni")))

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

AVX512 static inline __m256i q8w(const uint8_t *w, int64_t b) {
    return _mm256_loadu_si256((const __m256i *)(w + b * ORC_Q8_0_BYTES + 2));
}

AVX512 static inline __m256i q4w(const uint8_t *w, int64_t b) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)(w + b * ORC_Q4_0_BYTES + 2));
    const __m128i lo = _mm_and_si128(raw, _mm_set1_epi8(0x0f));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0f));
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

/* One body for the four AVX-512 variants: weights loader x product op.
 * Eight blocks are four registers; their halves are the eight block vectors. */
#define ISUMS_512(NAME, ATTR, LOADW, DOT)                                                                   \
    ATTR static void NAME(const uint8_t *w, const uint8_t *x, int64_t nb, int32_t *out) {                   \
        int64_t b = 0;                                                                                      \
        for (; b + 8 <= nb; b += 8) {                                                                       \
            __m256i p[8];                                                                                   \
            for (int i = 0; i < 8; i += 2) {                                                                \
                const __m512i v = DOT(pair(LOADW(w, b + i), LOADW(w, b + i + 1)),                           \
                                      pair(load_x(x, b + i), load_x(x, b + i + 1)));                        \
                p[i] = _mm512_castsi512_si256(v);                                                           \
                p[i + 1] = _mm512_extracti64x4_epi64(v, 1);                                                 \
            }                                                                                               \
            reduce8_avx2(p, out + b);                                                                       \
        }                                                                                                   \
        for (; b < nb; b++) {                                                                               \
            const __m512i v = DOT(pair(LOADW(w, b), _mm256_setzero_si256()),                               \
                                  pair(load_x(x, b), _mm256_setzero_si256()));                              \
            out[b] = hsum_avx2(_mm512_castsi512_si256(v));                                                  \
        }                                                                                                   \
    }

ISUMS_512(isums_q8_avx512, AVX512, q8w, dot_i8_512)
ISUMS_512(isums_q4_avx512, AVX512, q4w, dot_i8_512)
ISUMS_512(isums_q8_vnni, AVX512VNNI, q8w, dot_i8_vnni)
ISUMS_512(isums_q4_vnni, AVX512VNNI, q4w, dot_i8_vnni)

/* ---- dispatch ---------------------------------------------------------------------- */

typedef void (*isums_fn)(const uint8_t *w, const uint8_t *x, int64_t nb, int32_t *out);

/* A path's integer-sum kernel for one weight type. */
typedef struct kernel {
    isums_fn isums;
    size_t wbytes;
} kernel;

static kernel pick(orc_ggml_type type) {
    const bool q4 = type == ORC_GGML_Q4_0;
    kernel k = {q4 ? isums_q4_portable : isums_q8_portable, q4 ? ORC_Q4_0_BYTES : ORC_Q8_0_BYTES};
    switch (orc_q_active_path()) {
    case ORC_Q_AVX512:
        if (cpu_vnni)
            k.isums = q4 ? isums_q4_vnni : isums_q8_vnni;
        else
            k.isums = q4 ? isums_q4_avx512 : isums_q8_avx512;
        break;
    case ORC_Q_AVX2: k.isums = q4 ? isums_q4_avx2 : isums_q8_avx2; break;
    default: break;
    }
    return k;
}

static float dot_with(const kernel *k, const uint8_t *w, const uint8_t *x, int64_t nb) {
    int32_t isum[CHUNK];
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b += CHUNK) {
        const int64_t n = nb - b < CHUNK ? nb - b : CHUNK;
        const uint8_t *wb = w + (size_t)b * k->wbytes, *xb = x + (size_t)b * ORC_Q8_0_BYTES;
        k->isums(wb, xb, n, isum);
        acc = accumulate(acc, wb, k->wbytes, xb, isum, n);
    }
    return acc;
}

float orc_q_dot(orc_ggml_type type, const uint8_t *w, const uint8_t *xq, int64_t nb) {
    pthread_once(&f16_once, f16_table_init);
    const kernel k = pick(type);
    return dot_with(&k, w, xq, nb);
}

/* ---- matrices ------------------------------------------------------------------------ */

void orc_q8_quantize_rows(const float *x, int64_t n, int64_t cols, uint8_t *out) {
    const size_t rb = orc_q_row_bytes(ORC_GGML_Q8_0, cols);
    for (int64_t t = 0; t < n; t++)
        orc_ggml_quantize(ORC_GGML_Q8_0, x + t * cols, out + (size_t)t * rb, cols, NULL);
}

/* Rows per tile of the matrix-matrix kernel: a tile's weights stay in cache
 * while every token passes over them. */
#define TILE_ROWS 16

void orc_q_matmul_q8(const orc_qmat *w, const uint8_t *xq, int64_t T, float *y) {
    if (orc_q_type_is_pal(w->type)) {
        orc_q_pal_matmul_q8(w, xq, T, y);
        return;
    }
    pthread_once(&f16_once, f16_table_init);
    const kernel k = pick(w->type);
    const int64_t nb = w->cols / ORC_Q_BLOCK, R = w->rows;
    const size_t xb = orc_q_row_bytes(ORC_GGML_Q8_0, w->cols);
    if (T == 1) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < R; r++) y[r] = dot_with(&k, w->data + (size_t)r * w->row_bytes, xq, nb);
        return;
    }
    const int64_t tiles = (R + TILE_ROWS - 1) / TILE_ROWS;
#pragma omp parallel for schedule(static)
    for (int64_t tile = 0; tile < tiles; tile++) {
        const int64_t r0 = tile * TILE_ROWS, r1 = r0 + TILE_ROWS < R ? r0 + TILE_ROWS : R;
        for (int64_t t = 0; t < T; t++)
            for (int64_t r = r0; r < r1; r++)
                y[t * R + r] = dot_with(&k, w->data + (size_t)r * w->row_bytes, xq + (size_t)t * xb, nb);
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
