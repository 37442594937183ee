/* GGUF reading (memory-mapped, every count and length checked against the
 * bytes that remain before anything is allocated or handed out), the ggml
 * type table with the Q8_0/Q4_0 (de)quantizers, and the builder that writes
 * version-3 files through a synced, renamed temporary (see orchard/gguf.h for
 * the rules). Strings and key/value records of an open file live in one
 * chunked pool, freed at close; numeric values stay in the image. */
#include "orchard/gguf.h"
#include "orchard/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "orchard/safetensors.h" /* the F16/BF16 conversions */

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "orchard's GGUF code assumes a little-endian host"
#endif

/* ---- value types ---------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} VTYPES[ORC_GGUF_VTYPE_COUNT] = {
    [ORC_GGUF_UINT8] = {"UINT8", 1},     [ORC_GGUF_INT8] = {"INT8", 1},       [ORC_GGUF_UINT16] = {"UINT16", 2},
    [ORC_GGUF_INT16] = {"INT16", 2},     [ORC_GGUF_UINT32] = {"UINT32", 4},   [ORC_GGUF_INT32] = {"INT32", 4},
    [ORC_GGUF_FLOAT32] = {"FLOAT32", 4}, [ORC_GGUF_BOOL] = {"BOOL", 1},       [ORC_GGUF_STRING] = {"STRING", 0},
    [ORC_GGUF_ARRAY] = {"ARRAY", 0},     [ORC_GGUF_UINT64] = {"UINT64", 8},   [ORC_GGUF_INT64] = {"INT64", 8},
    [ORC_GGUF_FLOAT64] = {"FLOAT64", 8},
};

const char *orc_gguf_vtype_name(orc_gguf_vtype t) { return (unsigned)t < ORC_GGUF_VTYPE_COUNT ? VTYPES[t].name : "?"; }

size_t orc_gguf_vtype_size(orc_gguf_vtype t) { return (unsigned)t < ORC_GGUF_VTYPE_COUNT ? VTYPES[t].size : 0; }

/* ---- ggml types ------------------------------------------------------------------ */

/* Block sizes and bytes per block as ggml defines them; a zero block size
 * marks an id ggml does not (or no longer) define. New quantizations add a
 * row here and a case to dequantize/quantize. */
static const struct {
    const char *name;
    int64_t block;
    size_t size;
} GGML_TYPES[ORC_GGML_TYPE_COUNT] = {
    [ORC_GGML_F32] = {"F32", 1, 4},           [ORC_GGML_F16] = {"F16", 1, 2},
    [ORC_GGML_Q4_0] = {"Q4_0", 32, 18},       [ORC_GGML_Q4_1] = {"Q4_1", 32, 20},
    [ORC_GGML_Q5_0] = {"Q5_0", 32, 22},       [ORC_GGML_Q5_1] = {"Q5_1", 32, 24},
    [ORC_GGML_Q8_0] = {"Q8_0", 32, 34},       [ORC_GGML_Q8_1] = {"Q8_1", 32, 36},
    [ORC_GGML_Q2_K] = {"Q2_K", 256, 84},      [ORC_GGML_Q3_K] = {"Q3_K", 256, 110},
    [ORC_GGML_Q4_K] = {"Q4_K", 256, 144},     [ORC_GGML_Q5_K] = {"Q5_K", 256, 176},
    [ORC_GGML_Q6_K] = {"Q6_K", 256, 210},     [ORC_GGML_Q8_K] = {"Q8_K", 256, 292},
    [ORC_GGML_IQ2_XXS] = {"IQ2_XXS", 256, 66}, [ORC_GGML_IQ2_XS] = {"IQ2_XS", 256, 74},
    [ORC_GGML_IQ3_XXS] = {"IQ3_XXS", 256, 98}, [ORC_GGML_IQ1_S] = {"IQ1_S", 256, 50},
    [ORC_GGML_IQ4_NL] = {"IQ4_NL", 32, 18},   [ORC_GGML_IQ3_S] = {"IQ3_S", 256, 110},
    [ORC_GGML_IQ2_S] = {"IQ2_S", 256, 82},    [ORC_GGML_IQ4_XS] = {"IQ4_XS", 256, 136},
    [ORC_GGML_I8] = {"I8", 1, 1},             [ORC_GGML_I16] = {"I16", 1, 2},
    [ORC_GGML_I32] = {"I32", 1, 4},           [ORC_GGML_I64] = {"I64", 1, 8},
    [ORC_GGML_F64] = {"F64", 1, 8},           [ORC_GGML_IQ1_M] = {"IQ1_M", 256, 56},
    [ORC_GGML_BF16] = {"BF16", 1, 2},         [ORC_GGML_TQ1_0] = {"TQ1_0", 256, 54},
    [ORC_GGML_TQ2_0] = {"TQ2_0", 256, 66},    [ORC_GGML_MXFP4] = {"MXFP4", 32, 17},
};

bool orc_ggml_type_known(orc_ggml_type t) { return (unsigned)t < ORC_GGML_TYPE_COUNT && GGML_TYPES[t].block > 0; }

const char *orc_ggml_type_name(orc_ggml_type t) { return orc_ggml_type_known(t) ? GGML_TYPES[t].name : "?"; }

int64_t orc_ggml_block_size(orc_ggml_type t) { return orc_ggml_type_known(t) ? GGML_TYPES[t].block : 0; }

size_t orc_ggml_type_size(orc_ggml_type t) { return orc_ggml_type_known(t) ? GGML_TYPES[t].size : 0; }

orc_status orc_ggml_nbytes(orc_ggml_type t, int64_t n, size_t *out, orc_error *err) {
    if (!orc_ggml_type_known(t)) return orc_error_set(err, ORC_EINVAL, "ggml: unknown type id %d", (int)t);
    int64_t blk = GGML_TYPES[t].block;
    if (n < 0 || n % blk != 0)
        return orc_error_set(err, ORC_EINVAL, "ggml: %lld elements of %s is not a whole number of %lld-element blocks",
                             (long long)n, GGML_TYPES[t].name, (long long)blk);
    uint64_t blocks = (uint64_t)(n / blk), size = GGML_TYPES[t].size;
    if (blocks > (uint64_t)INT64_MAX / size || blocks * size > SIZE_MAX)
        return orc_error_set(err, ORC_ERANGE, "ggml: %lld elements of %s is too many bytes", (long long)n,
                             GGML_TYPES[t].name);
    if (out) *out = (size_t)(blocks * size);
    return ORC_OK;
}

/* ---- (de)quantization -------------------------------------------------------------- */

static uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t load_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void dequant_q8_0_block(const uint8_t *b, float *y) {
    float d = orc_st_f16_to_f32(load_u16(b));
    for (int j = 0; j < ORC_QK8_0; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

static void dequant_q4_0_block(const uint8_t *b, float *y) {
    float d = orc_st_f16_to_f32(load_u16(b));
    for (int j = 0; j < ORC_QK4_0 / 2; j++) {
        y[j] = (float)((b[2 + j] & 0x0f) - 8) * d;
        y[j + ORC_QK4_0 / 2] = (float)((b[2 + j] >> 4) - 8) * d;
    }
}

/* The reference casts (int8_t)(float) are undefined for NaN and out-of-range
 * values; these give what x86 gives there (0), and the same as the reference
 * everywhere it is defined. */
static int8_t q8_of(float r) { return r >= -128.0f && r <= 127.0f ? (int8_t)r : 0; }

static uint8_t q4_of(float t) {
    if (!(t >= 0.0f && t < 128.0f)) return 0;
    int q = (int)t;
    return (uint8_t)(q < 15 ? q : 15);
}

/* quantize_row_q8_0_ref: d = amax / 127, q = round(x * (1/d)). */
static void quant_q8_0_block(const float *x, uint8_t *b) {
    float amax = 0.0f;
    for (int j = 0; j < ORC_QK8_0; j++) {
        float a = fabsf(x[j]);
        amax = amax > a ? amax : a;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t h = orc_st_f32_to_f16(d);
    memcpy(b, &h, 2);
    for (int j = 0; j < ORC_QK8_0; j++) b[2 + j] = (uint8_t)q8_of(roundf(x[j] * id));
}

/* quantize_row_q4_0_ref: max is the value of largest magnitude (first wins),
 * d = max / -8, q = min(15, (int8)(x * (1/d) + 8.5)). */
static void quant_q4_0_block(const float *x, uint8_t *b) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < ORC_QK4_0; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t h = orc_st_f32_to_f16(d);
    memcpy(b, &h, 2);
    for (int j = 0; j < ORC_QK4_0 / 2; j++) {
        uint8_t lo = q4_of(x[j] * id + 8.5f), hi = q4_of(x[j + ORC_QK4_0 / 2] * id + 8.5f);
        b[2 + j] = (uint8_t)(lo | hi << 4);
    }
}

/* Blocks big enough to be worth a thread each. */
#define GG_PAR_MIN 2048

orc_status orc_ggml_dequantize(orc_ggml_type t, const void *src, float *dst, int64_t n, orc_error *err) {
    orc_status st = orc_ggml_nbytes(t, n, NULL, err);
    if (st != ORC_OK) return st;
    if ((!src || !dst) && n > 0) return orc_error_set(err, ORC_EINVAL, "ggml: dequantize: NULL buffer");
    const uint8_t *s = src;
    int64_t nb = n / GGML_TYPES[t].block;
    switch (t) {
    case ORC_GGML_F32:
        if (n) memcpy(dst, s, (size_t)n * 4);
        return ORC_OK;
    case ORC_GGML_F16:
#pragma omp parallel for schedule(static) if (n > GG_PAR_MIN * 32)
        for (int64_t i = 0; i < n; i++) dst[i] = orc_st_f16_to_f32(load_u16(s + 2 * i));
        return ORC_OK;
    case ORC_GGML_BF16:
#pragma omp parallel for schedule(static) if (n > GG_PAR_MIN * 32)
        for (int64_t i = 0; i < n; i++) dst[i] = orc_st_bf16_to_f32(load_u16(s + 2 * i));
        return ORC_OK;
    case ORC_GGML_F64:
        for (int64_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, s + 8 * i, 8);
            dst[i] = (float)v;
        }
        return ORC_OK;
    case ORC_GGML_Q8_0:
#pragma omp parallel for schedule(static) if (nb > GG_PAR_MIN)
        for (int64_t i = 0; i < nb; i++) dequant_q8_0_block(s + 34 * i, dst + ORC_QK8_0 * i);
        return ORC_OK;
    case ORC_GGML_Q4_0:
#pragma omp parallel for schedule(static) if (nb > GG_PAR_MIN)
        for (int64_t i = 0; i < nb; i++) dequant_q4_0_block(s + 18 * i, dst + ORC_QK4_0 * i);
        return ORC_OK;
    case ORC_GGML_I8:
    case ORC_GGML_I16:
    case ORC_GGML_I32:
    case ORC_GGML_I64:
        return orc_error_set(err, ORC_EDTYPE, "ggml: type %s is an integer type, not converted to float32",
                             GGML_TYPES[t].name);
    default:
        return orc_error_set(err, ORC_EUNSUPPORTED, "ggml: type %s is not converted to float32 by orchard",
                             GGML_TYPES[t].name);
    }
}

orc_status orc_ggml_quantize(orc_ggml_type t, const float *src, void *dst, int64_t n, orc_error *err) {
    orc_status st = orc_ggml_nbytes(t, n, NULL, err);
    if (st != ORC_OK) return st;
    if ((!src || !dst) && n > 0) return orc_error_set(err, ORC_EINVAL, "ggml: quantize: NULL buffer");
    uint8_t *d = dst;
    int64_t nb = n / GGML_TYPES[t].block;
    switch (t) {
    case ORC_GGML_F32:
        if (n) memcpy(d, src, (size_t)n * 4);
        return ORC_OK;
    case ORC_GGML_F16:
    case ORC_GGML_BF16:
#pragma omp parallel for schedule(static) if (n > GG_PAR_MIN * 32)
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = t == ORC_GGML_F16 ? orc_st_f32_to_f16(src[i]) : orc_st_f32_to_bf16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        return ORC_OK;
    case ORC_GGML_Q8_0:
#pragma omp parallel for schedule(static) if (nb > GG_PAR_MIN)
        for (int64_t i = 0; i < nb; i++) quant_q8_0_block(src + ORC_QK8_0 * i, d + 34 * i);
        return ORC_OK;
    case ORC_GGML_Q4_0:
#pragma omp parallel for schedule(static) if (nb > GG_PAR_MIN)
        for (int64_t i = 0; i < nb; i++) quant_q4_0_block(src + ORC_QK4_0 * i, d + 18 * i);
        return ORC_OK;
    default:
        return orc_error_set(err, ORC_EUNSUPPORTED, "ggml: orchard does not quantize to %s", GGML_TYPES[t].name);
    }
}

/* ---- the pool ------------------------------------------------------------------------ */

/* Bump allocation in chunks, 8-byte aligned, freed together: one vocabulary
 * string costs its bytes, not a malloc header. */
typedef struct pool_chunk {
    struct pool_chunk *next;
    size_t cap, used;
    uint64_t data[]; /* 8-byte aligned */
} pool_chunk;

#define POOL_CHUNK (1u << 16)

static void *pool_alloc(pool_chunk **head, size_t n) {
    if (n > SIZE_MAX - 16) return NULL;
    n = (n + 7) & ~(size_t)7;
    pool_chunk *c = *head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > POOL_CHUNK ? n : POOL_CHUNK;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = *head;
        *head = c;
    }
    void *p = (uint8_t *)c->data + c->used;
    c->used += n;
    return p;
}

static void pool_free(pool_chunk *c) {
    while (c) {
        pool_chunk *next = c->next;
        free(c);
        c = next;
    }
}

/* ---- the file ----------------------------------------------------------------------- */

struct orc_gguf_kv {
    const char *key;
    const char *label;              /* the file's, for messages */
    orc_gguf_vtype type;
    orc_gguf_vtype elem_type;       /* arrays; ORC_GGUF_VTYPE_COUNT otherwise */
    uint64_t count;                 /* arrays; 1 otherwise */
    const uint8_t *raw;             /* a fixed-size value, or an array's first fixed-size element */
    const char *str;                /* STRING: a NUL-terminated copy */
    size_t str_len;
    const char **strs;              /* STRING arrays */
    size_t *lens;
    orc_gguf_kv *sub;               /* arrays of arrays */
};

struct orc_gguf_file {
    char *label;
    void *map;                      /* our mapping (orc_gguf_open only) */
    size_t map_len;
    uint32_t version, alignment;
    size_t data_offset, data_len;
    orc_gguf_kv *kvs;               /* file order */
    size_t n_kv;
    const orc_gguf_kv **kv_by_key;
    orc_gguf_tensor_info *tensors;  /* file order */
    size_t n_tensors;
    const orc_gguf_tensor_info **by_name;
    pool_chunk *pool;
};

/* "gguf: LABEL: KIND 'NAME': DETAIL" (the kind part only when given). */
static orc_status gg_fail(orc_error *err, orc_status code, const char *label, const char *kind, const char *name,
                          const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static orc_status gg_fail(orc_error *err, orc_status code, const char *label, const char *kind, const char *name,
                          const char *fmt, ...) {
    char detail[ORC_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (kind && name)
        return orc_error_set(err, code, "gguf: %.200s: %s '%.120s': %s", label, kind, name, detail);
    return orc_error_set(err, code, "gguf: %.200s: %s", label, detail);
}

static orc_status oom(orc_error *err) { return orc_error_set(err, ORC_ENOMEM, "gguf: out of memory"); }

typedef struct cursor {
    const uint8_t *base;
    size_t len, pos;
} cursor;

static size_t remaining(const cursor *c) { return c->len - c->pos; }

/* n bytes at the cursor, or NULL when fewer remain. */
static const uint8_t *take(cursor *c, uint64_t n) {
    if (n > remaining(c)) return NULL;
    const uint8_t *p = c->base + c->pos;
    c->pos += (size_t)n;
    return p;
}

/* Reads a u32/u64; `what` names the field for the truncation message. */
static orc_status take_u32(orc_gguf_file *f, cursor *c, const char *kind, const char *name, const char *what,
                           uint32_t *out, orc_error *err) {
    const uint8_t *p = take(c, 4);
    if (!p)
        return gg_fail(err, ORC_EFORMAT, f->label, kind, name, "file ends at byte %zu inside the %s", c->len, what);
    *out = load_u32(p);
    return ORC_OK;
}

static orc_status take_u64(orc_gguf_file *f, cursor *c, const char *kind, const char *name, const char *what,
                           uint64_t *out, orc_error *err) {
    const uint8_t *p = take(c, 8);
    if (!p)
        return gg_fail(err, ORC_EFORMAT, f->label, kind, name, "file ends at byte %zu inside the %s", c->len, what);
    *out = load_u64(p);
    return ORC_OK;
}

/* A GGUF string, copied NUL-terminated into the pool. */
static orc_status take_string(orc_gguf_file *f, cursor *c, const char *kind, const char *name, const char *what,
                              const char **out, size_t *out_len, orc_error *err) {
    uint64_t n = 0;
    orc_status st = take_u64(f, c, kind, name, what, &n, err);
    if (st != ORC_OK) return st;
    size_t at = c->pos;
    const uint8_t *p = take(c, n);
    if (!p)
        return gg_fail(err, ORC_EFORMAT, f->label, kind, name,
                       "%s of %llu bytes at byte %zu runs past the end of the %zu-byte file", what,
                       (unsigned long long)n, at, c->len);
    char *s = pool_alloc(&f->pool, (size_t)n + 1);
    if (!s) return oom(err);
    memcpy(s, p, (size_t)n);
    s[n] = '\0';
    *out = s;
    *out_len = (size_t)n;
    return ORC_OK;
}

/* Keys and tensor names are C strings to the caller: non-empty, no NUL. */
static orc_status check_name(orc_gguf_file *f, const char *kind, size_t index, const char *s, size_t len,
                             orc_error *err) {
    if (len == 0) return gg_fail(err, ORC_EFORMAT, f->label, NULL, NULL, "%s %zu has an empty name", kind, index);
    if (strlen(s) != len)
        return gg_fail(err, ORC_EFORMAT, f->label, kind, s, "name contains a NUL byte at position %zu", strlen(s));
    return ORC_OK;
}

/* Smallest encoding of one element, to bound counts by the bytes left. */
static size_t min_elem_size(orc_gguf_vtype t) {
    if (t == ORC_GGUF_STRING) return 8;
    if (t == ORC_GGUF_ARRAY) return 12;
    return VTYPES[t].size;
}

static orc_status check_bools(orc_gguf_file *f, const orc_gguf_kv *kv, const uint8_t *p, uint64_t n,
                              orc_error *err) {
    for (uint64_t i = 0; i < n; i++)
        if (p[i] > 1)
            return gg_fail(err, ORC_EFORMAT, f->label, "key", kv->key, "BOOL value %u (element %llu) is not 0 or 1",
                           p[i], (unsigned long long)i);
    return ORC_OK;
}

static orc_status parse_value(orc_gguf_file *f, cursor *c, orc_gguf_kv *kv, int depth, orc_error *err);

static orc_status parse_array(orc_gguf_file *f, cursor *c, orc_gguf_kv *kv, int depth, orc_error *err) {
    if (depth > ORC_GGUF_MAX_DEPTH)
        return gg_fail(err, ORC_EFORMAT, f->label, "key", kv->key, "arrays nested more than %d deep",
                       ORC_GGUF_MAX_DEPTH);
    uint32_t et = 0;
    orc_status st = take_u32(f, c, "key", kv->key, "array element type", &et, err);
    if (st == ORC_OK) st = take_u64(f, c, "key", kv->key, "array length", &kv->count, err);
    if (st != ORC_OK) return st;
    if (et >= ORC_GGUF_VTYPE_COUNT)
        return gg_fail(err, ORC_EFORMAT, f->label, "key", kv->key, "unknown array element type %u", et);
    kv->elem_type = (orc_gguf_vtype)et;
    size_t min = min_elem_size(kv->elem_type);
    if (kv->count > remaining(c) / min)
        return gg_fail(err, ORC_EFORMAT, f->label, "key", kv->key,
                       "array of %llu %s elements needs at least %zu bytes each, but only %zu bytes remain",
                       (unsigned long long)kv->count, VTYPES[et].name, min, remaining(c));
    if (et == ORC_GGUF_STRING) {
        kv->strs = pool_alloc(&f->pool, (size_t)kv->count * sizeof *kv->strs);
        kv->lens = pool_alloc(&f->pool, (size_t)kv->count * sizeof *kv->lens);
        if (!kv->strs || !kv->lens) return oom(err);
        for (uint64_t i = 0; i < kv->count && st == ORC_OK; i++)
            st = take_string(f, c, "key", kv->key, "string element", &kv->strs[i], &kv->lens[i], err);
        return st;
    }
    if (et == ORC_GGUF_ARRAY) {
        kv->sub = pool_alloc(&f->pool, (size_t)kv->count * sizeof *kv->sub);
        if (!kv->sub) return oom(err);
        for (uint64_t i = 0; i < kv->count && st == ORC_OK; i++) {
            orc_gguf_kv *s = &kv->sub[i];
            memset(s, 0, sizeof *s);
            s->key = kv->key;
            s->label = kv->label;
            s->type = ORC_GGUF_ARRAY;
            st = parse_value(f, c, s, depth + 1, err);
        }
        return st;
    }
    kv->raw = take(c, kv->count * min); /* fits: checked above */
    return et == ORC_GGUF_BOOL ? check_bools(f, kv, kv->raw, kv->count, err) : ORC_OK;
}

/* The value of kv->type at the cursor. */
static orc_status parse_value(orc_gguf_file *f, cursor *c, orc_gguf_kv *kv, int depth, orc_error *err) {
    kv->elem_type = ORC_GGUF_VTYPE_COUNT;
    kv->count = 1;
    if (kv->type == ORC_GGUF_ARRAY) return parse_array(f, c, kv, depth, err);
    if (kv->type == ORC_GGUF_STRING)
        return take_string(f, c, "key", kv->key, "string value", &kv->str, &kv->str_len, err);
    size_t at = c->pos;
    kv->raw = take(c, VTYPES[kv->type].size);
    if (!kv->raw)
        return gg_fail(err, ORC_EFORMAT, f->label, "key", kv->key,
                       "%s value at byte %zu runs past the end of the %zu-byte file", VTYPES[kv->type].name, at,
                       c->len);
    return kv->type == ORC_GGUF_BOOL ? check_bools(f, kv, kv->raw, 1, err) : ORC_OK;
}

static orc_status parse_kv(orc_gguf_file *f, cursor *c, size_t i, orc_gguf_kv *kv, orc_error *err) {
    char what[64];
    snprintf(what, sizeof what, "key of key/value %zu", i);
    size_t len = 0;
    orc_status st = take_string(f, c, NULL, NULL, what, &kv->key, &len, err);
    if (st == ORC_OK) st = check_name(f, "key/value", i, kv->key, len, err);
    if (st != ORC_OK) return st;
    kv->label = f->label;
    uint32_t type = 0;
    st = take_u32(f, c, "key", kv->key, "value type", &type, err);
    if (st != ORC_OK) return st;
    if (type >= ORC_GGUF_VTYPE_COUNT)
        return gg_fail(err, ORC_EFORMAT, f->label, "key", kv->key, "unknown value type %u", type);
    kv->type = (orc_gguf_vtype)type;
    return parse_value(f, c, kv, 1, err);
}

static int cmp_kv_ptr(const void *pa, const void *pb) {
    return strcmp((*(const orc_gguf_kv *const *)pa)->key, (*(const orc_gguf_kv *const *)pb)->key);
}

static orc_status index_kvs(orc_gguf_file *f, orc_error *err) {
    f->kv_by_key = pool_alloc(&f->pool, (f->n_kv ? f->n_kv : 1) * sizeof *f->kv_by_key);
    if (!f->kv_by_key) return oom(err);
    for (size_t i = 0; i < f->n_kv; i++) f->kv_by_key[i] = &f->kvs[i];
    qsort(f->kv_by_key, f->n_kv, sizeof *f->kv_by_key, cmp_kv_ptr);
    for (size_t i = 1; i < f->n_kv; i++)
        if (strcmp(f->kv_by_key[i - 1]->key, f->kv_by_key[i]->key) == 0)
            return gg_fail(err, ORC_EFORMAT, f->label, "key", f->kv_by_key[i]->key, "duplicate key");
    return ORC_OK;
}

static orc_status read_alignment(orc_gguf_file *f, orc_error *err) {
    f->alignment = ORC_GGUF_DEFAULT_ALIGNMENT;
    const orc_gguf_kv *kv = orc_gguf_find_kv(f, "general.alignment");
    if (!kv) return ORC_OK;
    if (kv->type != ORC_GGUF_UINT32)
        return gg_fail(err, ORC_EFORMAT, f->label, "key", kv->key, "is %s, must be UINT32", VTYPES[kv->type].name);
    uint32_t a = load_u32(kv->raw);
    if (a == 0 || (a & (a - 1)) != 0)
        return gg_fail(err, ORC_EFORMAT, f->label, "key", kv->key, "alignment %u is not a power of two", a);
    f->alignment = a;
    return ORC_OK;
}

/* Element count and byte size from the ggml dims, with every overflow and
 * block rule checked. */
static orc_status tensor_size(orc_gguf_file *f, orc_gguf_tensor_info *t, orc_error *err) {
    char buf[200];
    int64_t numel = 1;
    bool zero = false;
    for (int d = 0; d < t->n_dims; d++) zero = zero || t->dims[d] == 0;
    for (int d = 0; d < t->n_dims && !zero; d++) {
        if (numel > INT64_MAX / t->dims[d])
            return gg_fail(err, ORC_EFORMAT, f->label, "tensor", t->name, "shape %s has too many elements",
                           orc_shape_str(buf, sizeof buf, t->n_dims, t->shape));
        numel *= t->dims[d];
    }
    t->numel = zero ? 0 : numel;
    int64_t blk = GGML_TYPES[t->type].block;
    if (t->dims[0] % blk != 0)
        return gg_fail(err, ORC_EFORMAT, f->label, "tensor", t->name,
                       "row length %lld (ggml dims[0]) is not a multiple of the %s block size %lld",
                       (long long)t->dims[0], GGML_TYPES[t->type].name, (long long)blk);
    if (orc_ggml_nbytes(t->type, t->numel, &t->nbytes, NULL) != ORC_OK)
        return gg_fail(err, ORC_EFORMAT, f->label, "tensor", t->name, "shape %s of %s is too many bytes",
                       orc_shape_str(buf, sizeof buf, t->n_dims, t->shape), GGML_TYPES[t->type].name);
    return ORC_OK;
}

static orc_status parse_tensor_info(orc_gguf_file *f, cursor *c, size_t i, orc_gguf_tensor_info *t,
                                    orc_error *err) {
    char what[64];
    snprintf(what, sizeof what, "name of tensor %zu", i);
    size_t len = 0;
    orc_status st = take_string(f, c, NULL, NULL, what, &t->name, &len, err);
    if (st == ORC_OK) st = check_name(f, "tensor", i, t->name, len, err);
    uint32_t n_dims = 0, type = 0;
    if (st == ORC_OK) st = take_u32(f, c, "tensor", t->name, "dimension count", &n_dims, err);
    if (st != ORC_OK) return st;
    if (n_dims > ORC_GGUF_MAX_DIMS)
        return gg_fail(err, ORC_EFORMAT, f->label, "tensor", t->name, "%u dimensions; GGUF allows at most %d", n_dims,
                       ORC_GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (int d = 0; d < ORC_GGUF_MAX_DIMS; d++) t->dims[d] = t->shape[d] = 1;
    for (int d = 0; d < t->n_dims; d++) {
        uint64_t v = 0;
        st = take_u64(f, c, "tensor", t->name, "dimensions", &v, err);
        if (st != ORC_OK) return st;
        if (v > (uint64_t)INT64_MAX)
            return gg_fail(err, ORC_EFORMAT, f->label, "tensor", t->name, "dimension %d is %llu, over the int64 range",
                           d, (unsigned long long)v);
        t->dims[d] = (int64_t)v;
    }
    for (int d = 0; d < t->n_dims; d++) t->shape[d] = t->dims[t->n_dims - 1 - d];
    st = take_u32(f, c, "tensor", t->name, "type", &type, err);
    if (st == ORC_OK) st = take_u64(f, c, "tensor", t->name, "offset", &t->offset, err);
    if (st != ORC_OK) return st;
    if (!orc_ggml_type_known((orc_ggml_type)type))
        return gg_fail(err, ORC_EFORMAT, f->label, "tensor", t->name, "unknown ggml type %u", type);
    t->type = (orc_ggml_type)type;
    return tensor_size(f, t, err);
}

static int cmp_offset_ptr(const void *pa, const void *pb) {
    const orc_gguf_tensor_info *a = *(const orc_gguf_tensor_info *const *)pa;
    const orc_gguf_tensor_info *b = *(const orc_gguf_tensor_info *const *)pb;
    if (a->offset != b->offset) return a->offset < b->offset ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int cmp_name_ptr(const void *pa, const void *pb) {
    return strcmp((*(const orc_gguf_tensor_info *const *)pa)->name, (*(const orc_gguf_tensor_info *const *)pb)->name);
}

/* Offsets aligned and inside the data section; no two tensors share a byte. */
static orc_status check_layout(orc_gguf_file *f, const uint8_t *base, orc_error *err) {
    for (size_t i = 0; i < f->n_tensors; i++) {
        orc_gguf_tensor_info *t = &f->tensors[i];
        if (t->offset % f->alignment != 0)
            return gg_fail(err, ORC_EFORMAT, f->label, "tensor", t->name,
                           "offset %llu is not a multiple of the alignment %u", (unsigned long long)t->offset,
                           f->alignment);
        if (t->offset > f->data_len || t->nbytes > f->data_len - t->offset)
            return gg_fail(err, ORC_EFORMAT, f->label, "tensor", t->name,
                           "%zu bytes at offset %llu run past the end of the %zu-byte data section", t->nbytes,
                           (unsigned long long)t->offset, f->data_len);
        t->data = base + f->data_offset + t->offset;
    }
    const orc_gguf_tensor_info **order = (const orc_gguf_tensor_info **)f->by_name;
    for (size_t i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    qsort(order, f->n_tensors, sizeof *order, cmp_offset_ptr);
    const orc_gguf_tensor_info *prev = NULL;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const orc_gguf_tensor_info *t = order[i];
        if (t->nbytes == 0) continue;
        if (prev && t->offset < prev->offset + prev->nbytes)
            return gg_fail(err, ORC_EFORMAT, f->label, "tensor", t->name,
                           "data at offset %llu overlaps tensor '%.120s' (offset %llu, %zu bytes)",
                           (unsigned long long)t->offset, prev->name, (unsigned long long)prev->offset, prev->nbytes);
        prev = t;
    }
    return ORC_OK;
}

static orc_status index_tensors(orc_gguf_file *f, orc_error *err) {
    for (size_t i = 0; i < f->n_tensors; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, f->n_tensors, sizeof *f->by_name, cmp_name_ptr);
    for (size_t i = 1; i < f->n_tensors; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
            return gg_fail(err, ORC_EFORMAT, f->label, "tensor", f->by_name[i]->name, "duplicate tensor name");
    return ORC_OK;
}

static orc_status parse_header(orc_gguf_file *f, cursor *c, uint64_t *n_tensors, uint64_t *n_kv, orc_error *err) {
    if (c->len < 4 || memcmp(c->base, "GGUF", 4) != 0)
        return gg_fail(err, ORC_EFORMAT, f->label, NULL, NULL, "not a GGUF file (it does not start with \"GGUF\")");
    if (c->len < 24)
        return gg_fail(err, ORC_EFORMAT, f->label, NULL, NULL, "%zu bytes is too short for the 24-byte header", c->len);
    c->pos = 4;
    f->version = load_u32(take(c, 4));
    *n_tensors = load_u64(take(c, 8));
    *n_kv = load_u64(take(c, 8));
    if (f->version == 1)
        return gg_fail(err, ORC_EUNSUPPORTED, f->label, NULL, NULL, "GGUF version 1 is not supported (only 2 and 3)");
    if ((f->version & 0xffff) == 0 && f->version != 0)
        return gg_fail(err, ORC_EUNSUPPORTED, f->label, NULL, NULL,
                       "version field 0x%08x looks like a big-endian file, which orchard does not read", f->version);
    if (f->version != 2 && f->version != 3)
        return gg_fail(err, ORC_EFORMAT, f->label, NULL, NULL, "unknown GGUF version %u (orchard reads 2 and 3)",
                       f->version);
    if (*n_kv > remaining(c) / 14)
        return gg_fail(err, ORC_EFORMAT, f->label, NULL, NULL,
                       "header claims %llu key/values but only %zu bytes follow", (unsigned long long)*n_kv,
                       remaining(c));
    return ORC_OK;
}

static orc_status parse_image(orc_gguf_file *f, const uint8_t *base, size_t len, orc_error *err) {
    cursor c = {base, len, 0};
    uint64_t n_tensors = 0, n_kv = 0;
    orc_status st = parse_header(f, &c, &n_tensors, &n_kv, err);
    if (st != ORC_OK) return st;
    f->kvs = pool_alloc(&f->pool, (n_kv ? (size_t)n_kv : 1) * sizeof *f->kvs);
    if (!f->kvs) return oom(err);
    memset(f->kvs, 0, (size_t)n_kv * sizeof *f->kvs);
    for (size_t i = 0; i < n_kv && st == ORC_OK; i++, f->n_kv++) st = parse_kv(f, &c, i, &f->kvs[i], err);
    if (st == ORC_OK) st = index_kvs(f, err);
    if (st == ORC_OK) st = read_alignment(f, err);
    if (st != ORC_OK) return st;
    /* A tensor info is at least 24 bytes: name length, n_dims, type, offset. */
    if (n_tensors > remaining(&c) / 24)
        return gg_fail(err, ORC_EFORMAT, f->label, NULL, NULL,
                       "header claims %llu tensors but only %zu bytes are left for their infos",
                       (unsigned long long)n_tensors, remaining(&c));
    f->tensors = pool_alloc(&f->pool, (n_tensors ? (size_t)n_tensors : 1) * sizeof *f->tensors);
    f->by_name = pool_alloc(&f->pool, (n_tensors ? (size_t)n_tensors : 1) * sizeof *f->by_name);
    if (!f->tensors || !f->by_name) return oom(err);
    memset(f->tensors, 0, (size_t)n_tensors * sizeof *f->tensors);
    for (size_t i = 0; i < n_tensors && st == ORC_OK; i++, f->n_tensors++)
        st = parse_tensor_info(f, &c, i, &f->tensors[i], err);
    if (st != ORC_OK) return st;
    /* The padding after the infos may be missing when no data follows. */
    size_t a = f->alignment;
    f->data_offset = (c.pos + a - 1) / a * a;
    f->data_len = len > f->data_offset ? len - f->data_offset : 0;
    st = check_layout(f, base, err);
    if (st == ORC_OK) st = index_tensors(f, err);
    return st;
}

orc_gguf_file *orc_gguf_parse(const void *buf, size_t len, const char *label, orc_error *err) {
    if (!buf && len > 0) {
        orc_error_set(err, ORC_EINVAL, "gguf: NULL buffer of %zu bytes", len);
        return NULL;
    }
    orc_gguf_file *f = calloc(1, sizeof *f);
    if (f) f->label = strdup(label ? label : "<memory>");
    if (!f || !f->label) {
        oom(err);
        orc_gguf_close(f);
        return NULL;
    }
    if (parse_image(f, buf ? buf : (const void *)"", len, err) != ORC_OK) {
        orc_gguf_close(f);
        return NULL;
    }
    return f;
}

orc_gguf_file *orc_gguf_open(const char *path, orc_error *err) {
    orc_mapped_file m;
    if (orc_file_map(path, "gguf", &m, err) != ORC_OK) return NULL;
    orc_gguf_file *f = orc_gguf_parse(m.data, m.len, path, err);
    if (!f) {
        orc_file_unmap(&m);
        return NULL;
    }
    f->map = m.data;
    f->map_len = m.len;
    return f;
}

void orc_gguf_close(orc_gguf_file *f) {
    if (!f) return;
    pool_free(f->pool);
    free(f->label);
    if (f->map) munmap(f->map, f->map_len);
    free(f);
}

uint32_t orc_gguf_version(const orc_gguf_file *f) { return f ? f->version : 0; }
uint32_t orc_gguf_alignment(const orc_gguf_file *f) { return f ? f->alignment : 0; }
size_t orc_gguf_data_offset(const orc_gguf_file *f) { return f ? f->data_offset : 0; }

/* ---- key/values ---------------------------------------------------------------------- */

size_t orc_gguf_kv_count(const orc_gguf_file *f) { return f ? f->n_kv : 0; }

const orc_gguf_kv *orc_gguf_kv_at(const orc_gguf_file *f, size_t i) { return f && i < f->n_kv ? &f->kvs[i] : NULL; }

const orc_gguf_kv *orc_gguf_find_kv(const orc_gguf_file *f, const char *key) {
    if (!f || !key) return NULL;
    size_t lo = 0, hi = f->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->kv_by_key[mid]->key, key);
        if (c == 0) return f->kv_by_key[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *orc_gguf_kv_key(const orc_gguf_kv *kv) { return kv ? kv->key : NULL; }
orc_gguf_vtype orc_gguf_kv_type(const orc_gguf_kv *kv) { return kv ? kv->type : ORC_GGUF_VTYPE_COUNT; }
orc_gguf_vtype orc_gguf_kv_elem_type(const orc_gguf_kv *kv) { return kv ? kv->elem_type : ORC_GGUF_VTYPE_COUNT; }
uint64_t orc_gguf_kv_len(const orc_gguf_kv *kv) { return kv ? kv->count : 0; }

/* A numeric value widened without loss: integers exactly, floats as double. */
typedef struct num {
    enum { NUM_U, NUM_I, NUM_F } kind;
    uint64_t u;
    int64_t i;
    double f;
} num;

static bool load_num(orc_gguf_vtype t, const uint8_t *p, num *out) {
    switch (t) {
    case ORC_GGUF_UINT8: *out = (num){NUM_U, p[0], 0, 0}; return true;
    case ORC_GGUF_UINT16: *out = (num){NUM_U, load_u16(p), 0, 0}; return true;
    case ORC_GGUF_UINT32: *out = (num){NUM_U, load_u32(p), 0, 0}; return true;
    case ORC_GGUF_UINT64: *out = (num){NUM_U, load_u64(p), 0, 0}; return true;
    case ORC_GGUF_INT8: *out = (num){NUM_I, 0, (int8_t)p[0], 0}; return true;
    case ORC_GGUF_INT16: *out = (num){NUM_I, 0, (int16_t)load_u16(p), 0}; return true;
    case ORC_GGUF_INT32: *out = (num){NUM_I, 0, (int32_t)load_u32(p), 0}; return true;
    case ORC_GGUF_INT64: *out = (num){NUM_I, 0, (int64_t)load_u64(p), 0}; return true;
    case ORC_GGUF_FLOAT32: {
        float v;
        memcpy(&v, p, 4);
        *out = (num){NUM_F, 0, 0, v};
        return true;
    }
    case ORC_GGUF_FLOAT64: {
        double v;
        memcpy(&v, p, 8);
        *out = (num){NUM_F, 0, 0, v};
        return true;
    }
    default: return false;
    }
}

/* Integer in [lo, hi] (signed view) or [0, uhi] for unsigned targets. */
static bool num_to_int(const num *n, int64_t lo, uint64_t hi, int64_t *out_i, uint64_t *out_u) {
    if (n->kind == NUM_U) {
        if (n->u > hi) return false;
        if (out_u) *out_u = n->u;
        if (out_i) *out_i = (int64_t)n->u;
        return true;
    }
    if (n->i < lo || (n->i > 0 && (uint64_t)n->i > hi)) return false;
    if (out_i) *out_i = n->i;
    if (out_u) *out_u = (uint64_t)n->i;
    return true;
}

static double num_to_double(const num *n) {
    return n->kind == NUM_F ? n->f : n->kind == NUM_U ? (double)n->u : (double)n->i;
}

static orc_status bad_type(const orc_gguf_kv *kv, const char *want, orc_error *err) {
    if (kv->type == ORC_GGUF_ARRAY)
        return gg_fail(err, ORC_EDTYPE, kv->label, "key", kv->key, "is an ARRAY of %s, not %s",
                       VTYPES[kv->elem_type].name, want);
    return gg_fail(err, ORC_EDTYPE, kv->label, "key", kv->key, "is %s, not %s", VTYPES[kv->type].name, want);
}

/* The scalar integer of kv within [lo, hi]. */
static orc_status get_int(const orc_gguf_kv *kv, const char *want, int64_t lo, uint64_t hi, int64_t *out_i,
                          uint64_t *out_u, orc_error *err) {
    if (!kv) return orc_error_set(err, ORC_EINVAL, "gguf: NULL key/value");
    num n = {0};
    if (!load_num(kv->type, kv->raw, &n) || n.kind == NUM_F) return bad_type(kv, want, err);
    if (!num_to_int(&n, lo, hi, out_i, out_u)) {
        if (n.kind == NUM_U)
            return gg_fail(err, ORC_ERANGE, kv->label, "key", kv->key, "value %llu does not fit %s",
                           (unsigned long long)n.u, want);
        return gg_fail(err, ORC_ERANGE, kv->label, "key", kv->key, "value %lld does not fit %s", (long long)n.i, want);
    }
    return ORC_OK;
}

orc_status orc_gguf_kv_get_u32(const orc_gguf_kv *kv, uint32_t *out, orc_error *err) {
    uint64_t v = 0;
    orc_status st = get_int(kv, "u32", 0, UINT32_MAX, NULL, &v, err);
    if (st == ORC_OK && out) *out = (uint32_t)v;
    return st;
}

orc_status orc_gguf_kv_get_i32(const orc_gguf_kv *kv, int32_t *out, orc_error *err) {
    int64_t v = 0;
    orc_status st = get_int(kv, "i32", INT32_MIN, INT32_MAX, &v, NULL, err);
    if (st == ORC_OK && out) *out = (int32_t)v;
    return st;
}

orc_status orc_gguf_kv_get_u64(const orc_gguf_kv *kv, uint64_t *out, orc_error *err) {
    uint64_t v = 0;
    orc_status st = get_int(kv, "u64", 0, UINT64_MAX, NULL, &v, err);
    if (st == ORC_OK && out) *out = v;
    return st;
}

orc_status orc_gguf_kv_get_i64(const orc_gguf_kv *kv, int64_t *out, orc_error *err) {
    int64_t v = 0;
    orc_status st = get_int(kv, "i64", INT64_MIN, INT64_MAX, &v, NULL, err);
    if (st == ORC_OK && out) *out = v;
    return st;
}

orc_status orc_gguf_kv_get_f64(const orc_gguf_kv *kv, double *out, orc_error *err) {
    if (!kv) return orc_error_set(err, ORC_EINVAL, "gguf: NULL key/value");
    num n = {0};
    if (!load_num(kv->type, kv->raw, &n)) return bad_type(kv, "a number", err);
    if (out) *out = num_to_double(&n);
    return ORC_OK;
}

orc_status orc_gguf_kv_get_f32(const orc_gguf_kv *kv, float *out, orc_error *err) {
    if (!kv) return orc_error_set(err, ORC_EINVAL, "gguf: NULL key/value");
    num n = {0};
    if (!load_num(kv->type, kv->raw, &n)) return bad_type(kv, "a number", err);
    float v;
    if (kv->type == ORC_GGUF_FLOAT32) {
        memcpy(&v, kv->raw, 4); /* keeps a NaN's payload */
    } else if (n.kind == NUM_F) {
        if (isfinite(n.f) && fabs(n.f) > FLT_MAX)
            return gg_fail(err, ORC_ERANGE, kv->label, "key", kv->key, "value %g does not fit f32", n.f);
        v = (float)n.f;
    } else {
        v = n.kind == NUM_U ? (float)n.u : (float)n.i; /* one rounding, not two through double */
    }
    if (out) *out = v;
    return ORC_OK;
}

orc_status orc_gguf_kv_get_bool(const orc_gguf_kv *kv, bool *out, orc_error *err) {
    if (!kv) return orc_error_set(err, ORC_EINVAL, "gguf: NULL key/value");
    if (kv->type != ORC_GGUF_BOOL) return bad_type(kv, "BOOL", err);
    if (out) *out = kv->raw[0] != 0;
    return ORC_OK;
}

orc_status orc_gguf_kv_get_str(const orc_gguf_kv *kv, const char **out, size_t *len, orc_error *err) {
    if (!kv) return orc_error_set(err, ORC_EINVAL, "gguf: NULL key/value");
    if (kv->type != ORC_GGUF_STRING) return bad_type(kv, "STRING", err);
    if (out) *out = kv->str;
    if (len) *len = kv->str_len;
    return ORC_OK;
}

static orc_status need_kv(const orc_gguf_file *f, const char *key, const orc_gguf_kv **kv, orc_error *err) {
    if (!f || !key) return orc_error_set(err, ORC_EINVAL, "gguf: NULL file or key");
    *kv = orc_gguf_find_kv(f, key);
    if (!*kv) return gg_fail(err, ORC_EFORMAT, f->label, NULL, NULL, "no key '%.120s'", key);
    return ORC_OK;
}

#define GG_BY_KEY(suffix, type)                                                                                      \
    orc_status orc_gguf_get_##suffix(const orc_gguf_file *f, const char *key, type *out, orc_error *err) {           \
        const orc_gguf_kv *kv = NULL;                                                                                \
        orc_status st = need_kv(f, key, &kv, err);                                                                   \
        return st == ORC_OK ? orc_gguf_kv_get_##suffix(kv, out, err) : st;                                           \
    }
GG_BY_KEY(u32, uint32_t)
GG_BY_KEY(i32, int32_t)
GG_BY_KEY(u64, uint64_t)
GG_BY_KEY(i64, int64_t)
GG_BY_KEY(f32, float)
GG_BY_KEY(f64, double)
GG_BY_KEY(bool, bool)
#undef GG_BY_KEY

orc_status orc_gguf_get_str(const orc_gguf_file *f, const char *key, const char **out, size_t *len,
                            orc_error *err) {
    const orc_gguf_kv *kv = NULL;
    orc_status st = need_kv(f, key, &kv, err);
    return st == ORC_OK ? orc_gguf_kv_get_str(kv, out, len, err) : st;
}

/* ---- arrays --------------------------------------------------------------------------- */

const char *orc_gguf_kv_arr_str(const orc_gguf_kv *kv, uint64_t i, size_t *len) {
    if (!kv || kv->type != ORC_GGUF_ARRAY || kv->elem_type != ORC_GGUF_STRING || i >= kv->count) return NULL;
    if (len) *len = kv->lens[i];
    return kv->strs[i];
}

const orc_gguf_kv *orc_gguf_kv_arr_sub(const orc_gguf_kv *kv, uint64_t i) {
    if (!kv || kv->type != ORC_GGUF_ARRAY || kv->elem_type != ORC_GGUF_ARRAY || i >= kv->count) return NULL;
    return &kv->sub[i];
}

const void *orc_gguf_kv_arr_data(const orc_gguf_kv *kv) {
    if (!kv || kv->type != ORC_GGUF_ARRAY || VTYPES[kv->elem_type].size == 0) return NULL;
    return kv->raw;
}

static orc_status check_arr(const orc_gguf_kv *kv, const void *out, uint64_t n, const char *fn, orc_error *err) {
    if (!kv || (!out && n > 0)) return orc_error_set(err, ORC_EINVAL, "gguf: %s: NULL key/value or output", fn);
    if (kv->type != ORC_GGUF_ARRAY)
        return gg_fail(err, ORC_EDTYPE, kv->label, "key", kv->key, "%s: is %s, not an array", fn,
                       VTYPES[kv->type].name);
    if (n != kv->count)
        return gg_fail(err, ORC_ESHAPE, kv->label, "key", kv->key, "%s: array has %llu elements, the output holds %llu",
                       fn, (unsigned long long)kv->count, (unsigned long long)n);
    return ORC_OK;
}

orc_status orc_gguf_kv_arr_f32(const orc_gguf_kv *kv, float *out, uint64_t n, orc_error *err) {
    orc_status st = check_arr(kv, out, n, "arr_f32", err);
    if (st != ORC_OK) return st;
    orc_gguf_vtype et = kv->elem_type;
    size_t size = VTYPES[et].size;
    if (size == 0 || et == ORC_GGUF_BOOL)
        return gg_fail(err, ORC_EDTYPE, kv->label, "key", kv->key, "arr_f32: elements are %s, not numbers",
                       VTYPES[et].name);
    if (et == ORC_GGUF_FLOAT32) {
        if (n) memcpy(out, kv->raw, (size_t)n * 4);
        return ORC_OK;
    }
    for (uint64_t i = 0; i < n; i++) {
        num v = {0};
        load_num(et, kv->raw + i * size, &v);
        out[i] = v.kind == NUM_F ? (float)v.f : v.kind == NUM_U ? (float)v.u : (float)v.i;
    }
    return ORC_OK;
}

orc_status orc_gguf_kv_arr_i32(const orc_gguf_kv *kv, int32_t *out, uint64_t n, orc_error *err) {
    orc_status st = check_arr(kv, out, n, "arr_i32", err);
    if (st != ORC_OK) return st;
    orc_gguf_vtype et = kv->elem_type;
    size_t size = VTYPES[et].size;
    if (et == ORC_GGUF_BOOL) {
        for (uint64_t i = 0; i < n; i++) out[i] = kv->raw[i];
        return ORC_OK;
    }
    if (size == 0 || et == ORC_GGUF_FLOAT32 || et == ORC_GGUF_FLOAT64)
        return gg_fail(err, ORC_EDTYPE, kv->label, "key", kv->key, "arr_i32: elements are %s, not integers",
                       VTYPES[et].name);
    for (uint64_t i = 0; i < n; i++) {
        num v = {0};
        int64_t x = 0;
        load_num(et, kv->raw + i * size, &v);
        if (!num_to_int(&v, INT32_MIN, INT32_MAX, &x, NULL))
            return gg_fail(err, ORC_ERANGE, kv->label, "key", kv->key, "arr_i32: element %llu does not fit int32",
                           (unsigned long long)i);
        out[i] = (int32_t)x;
    }
    return ORC_OK;
}

orc_status orc_gguf_get_arr_f32(const orc_gguf_file *f, const char *key, float *out, uint64_t n, orc_error *err) {
    const orc_gguf_kv *kv = NULL;
    orc_status st = need_kv(f, key, &kv, err);
    return st == ORC_OK ? orc_gguf_kv_arr_f32(kv, out, n, err) : st;
}

orc_status orc_gguf_get_arr_i32(const orc_gguf_file *f, const char *key, int32_t *out, uint64_t n,
                                orc_error *err) {
    const orc_gguf_kv *kv = NULL;
    orc_status st = need_kv(f, key, &kv, err);
    return st == ORC_OK ? orc_gguf_kv_arr_i32(kv, out, n, err) : st;
}

/* ---- tensors ---------------------------------------------------------------------------- */

size_t orc_gguf_tensor_count(const orc_gguf_file *f) { return f ? f->n_tensors : 0; }

const orc_gguf_tensor_info *orc_gguf_tensor_at(const orc_gguf_file *f, size_t i) {
    return f && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const orc_gguf_tensor_info *orc_gguf_find_tensor(const orc_gguf_file *f, const char *name) {
    if (!f || !name) return NULL;
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static orc_status lookup(const orc_gguf_file *f, const char *name, const void *out, int64_t n, const char *fn,
                         const orc_gguf_tensor_info **found, orc_error *err) {
    if (!f || !name || (!out && n > 0))
        return orc_error_set(err, ORC_EINVAL, "gguf: %s: NULL file, name or output buffer", fn);
    const orc_gguf_tensor_info *t = orc_gguf_find_tensor(f, name);
    if (!t) return gg_fail(err, ORC_EFORMAT, f->label, NULL, NULL, "no tensor named '%.120s'", name);
    if (n != t->numel) {
        char buf[200];
        return gg_fail(err, ORC_ESHAPE, f->label, "tensor", name,
                       "%s: has %lld elements (shape %s), the output holds %lld", fn, (long long)t->numel,
                       orc_shape_str(buf, sizeof buf, t->n_dims, t->shape), (long long)n);
    }
    *found = t;
    return ORC_OK;
}

static bool is_int_type(orc_ggml_type t) {
    return t == ORC_GGML_I8 || t == ORC_GGML_I16 || t == ORC_GGML_I32 || t == ORC_GGML_I64;
}

static bool is_float_type(orc_ggml_type t) {
    return t == ORC_GGML_F32 || t == ORC_GGML_F16 || t == ORC_GGML_BF16 || t == ORC_GGML_F64 || t == ORC_GGML_Q8_0 ||
           t == ORC_GGML_Q4_0;
}

orc_status orc_gguf_read_f32(const orc_gguf_file *f, const char *name, float *out, int64_t n, orc_error *err) {
    const orc_gguf_tensor_info *t = NULL;
    orc_status st = lookup(f, name, out, n, "read_f32", &t, err);
    if (st != ORC_OK) return st;
    if (is_int_type(t->type))
        return gg_fail(err, ORC_EDTYPE, f->label, "tensor", name, "read_f32: type %s is an integer type",
                       GGML_TYPES[t->type].name);
    if (!is_float_type(t->type))
        return gg_fail(err, ORC_EUNSUPPORTED, f->label, "tensor", name, "read_f32: type %s is not converted by orchard",
                       GGML_TYPES[t->type].name);
    return orc_ggml_dequantize(t->type, t->data, out, n, err); /* sizes were checked at open */
}

orc_status orc_gguf_read_i32(const orc_gguf_file *f, const char *name, int32_t *out, int64_t n, orc_error *err) {
    const orc_gguf_tensor_info *t = NULL;
    orc_status st = lookup(f, name, out, n, "read_i32", &t, err);
    if (st != ORC_OK) return st;
    if (is_float_type(t->type))
        return gg_fail(err, ORC_EDTYPE, f->label, "tensor", name, "read_i32: type %s is not an integer type",
                       GGML_TYPES[t->type].name);
    if (!is_int_type(t->type))
        return gg_fail(err, ORC_EUNSUPPORTED, f->label, "tensor", name, "read_i32: type %s is not converted by orchard",
                       GGML_TYPES[t->type].name);
    const uint8_t *s = t->data;
    for (int64_t i = 0; i < n; i++) {
        int64_t v = t->type == ORC_GGML_I8    ? (int8_t)s[i]
                    : t->type == ORC_GGML_I16 ? (int16_t)load_u16(s + 2 * i)
                    : t->type == ORC_GGML_I32 ? (int32_t)load_u32(s + 4 * i)
                                              : (int64_t)load_u64(s + 8 * i);
        if (v < INT32_MIN || v > INT32_MAX)
            return gg_fail(err, ORC_ERANGE, f->label, "tensor", name, "read_i32: element %lld is %lld, outside int32",
                           (long long)i, (long long)v);
        out[i] = (int32_t)v;
    }
    return ORC_OK;
}

orc_status orc_gguf_read_into(const orc_gguf_file *f, const char *name, orc_tensor *dst, orc_error *err) {
    if (!f || !name || !dst) return orc_error_set(err, ORC_EINVAL, "gguf: read_into: NULL file, name or tensor");
    if (dst->device != ORC_DEV_CPU || !orc_is_contiguous(dst))
        return orc_error_set(err, ORC_EINVAL, "gguf: read_into: '%.120s': the target must be a contiguous CPU tensor",
                             name);
    const orc_gguf_tensor_info *t = orc_gguf_find_tensor(f, name);
    if (!t) return gg_fail(err, ORC_EFORMAT, f->label, NULL, NULL, "no tensor named '%.120s'", name);
    bool same = t->n_dims == dst->ndim;
    for (int i = 0; same && i < dst->ndim; i++) same = t->shape[i] == dst->shape[i];
    if (!same) {
        char have[200], want[200];
        return gg_fail(err, ORC_ESHAPE, f->label, "tensor", name, "has shape %s, expected %s",
                       orc_shape_str(have, sizeof have, t->n_dims, t->shape),
                       orc_shape_str(want, sizeof want, dst->ndim, dst->shape));
    }
    if (dst->dtype == ORC_F32) return orc_gguf_read_f32(f, name, dst->data, dst->numel, err);
    if (dst->dtype == ORC_I32) return orc_gguf_read_i32(f, name, dst->data, dst->numel, err);
    return orc_error_set(err, ORC_EDTYPE, "gguf: cannot load '%.120s' into dtype %s", name, orc_dtype_name(dst->dtype));
}

/* ---- writing ------------------------------------------------------------------------------ */

typedef struct w_tensor {
    char *name;
    orc_ggml_type type;
    int ndim;
    int64_t shape[ORC_GGUF_MAX_DIMS];
    int64_t numel;
    const void *data;
    size_t nbytes;
    bool from_f32;
} w_tensor;

struct orc_gguf_writer {
    uint8_t *kv;          /* the key/values, already encoded */
    size_t kv_len, kv_cap;
    char **keys;
    size_t n_kv, keys_cap;
    w_tensor *tensors;
    size_t n_tensors, tensors_cap;
    uint32_t alignment;
};

orc_gguf_writer *orc_gguf_writer_new(orc_error *err) {
    orc_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) {
        oom(err);
        return NULL;
    }
    w->alignment = ORC_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void orc_gguf_writer_free(orc_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (size_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->keys);
    free(w->tensors);
    free(w->kv);
    free(w);
}

/* Grow *buf (of *cap elements of size) to hold need elements. */
static bool grow(void **buf, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return true;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / size) return false;
        n *= 2;
    }
    void *p = realloc(*buf, n * size);
    if (!p) return false;
    *buf = p;
    *cap = n;
    return true;
}

static bool put(orc_gguf_writer *w, const void *p, size_t n) {
    if (n > SIZE_MAX - w->kv_len || !grow((void **)&w->kv, &w->kv_cap, w->kv_len + n, 1)) return false;
    if (n) memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return true;
}

static bool put_u32(orc_gguf_writer *w, uint32_t v) { return put(w, &v, 4); }
static bool put_u64(orc_gguf_writer *w, uint64_t v) { return put(w, &v, 8); }
static bool put_str(orc_gguf_writer *w, const char *s, size_t n) { return put_u64(w, n) && put(w, s, n); }

/* Checks the key and encodes it with the value type; the caller appends the
 * value and calls end_kv (which rolls back on failure). */
static orc_status begin_kv(orc_gguf_writer *w, const char *key, orc_gguf_vtype type, size_t *mark, orc_error *err) {
    if (!w || !key) return orc_error_set(err, ORC_EINVAL, "gguf: write: NULL writer or key");
    if (!key[0]) return orc_error_set(err, ORC_EINVAL, "gguf: write: empty key");
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return orc_error_set(err, ORC_EINVAL, "gguf: write: duplicate key '%.120s'", key);
    if (strcmp(key, "general.alignment") == 0 && type != ORC_GGUF_UINT32)
        return orc_error_set(err, ORC_EINVAL, "gguf: write: general.alignment must be UINT32, not %s",
                             VTYPES[type].name);
    *mark = w->kv_len;
    if (!put_str(w, key, strlen(key)) || !put_u32(w, (uint32_t)type)) {
        w->kv_len = *mark;
        return oom(err);
    }
    return ORC_OK;
}

static orc_status end_kv(orc_gguf_writer *w, const char *key, size_t mark, bool ok, orc_error *err) {
    char *copy = ok ? strdup(key) : NULL;
    if (!copy || !grow((void **)&w->keys, &w->keys_cap, w->n_kv + 1, sizeof *w->keys)) {
        free(copy);
        w->kv_len = mark;
        return oom(err);
    }
    w->keys[w->n_kv++] = copy;
    return ORC_OK;
}

static orc_status add_scalar(orc_gguf_writer *w, const char *key, orc_gguf_vtype type, const void *v,
                             orc_error *err) {
    size_t mark = 0;
    orc_status st = begin_kv(w, key, type, &mark, err);
    if (st != ORC_OK) return st;
    return end_kv(w, key, mark, put(w, v, VTYPES[type].size), err);
}

#define GG_ADD(suffix, ctype, vtype)                                                                               \
    orc_status orc_gguf_add_##suffix(orc_gguf_writer *w, const char *key, ctype v, orc_error *err) {                \
        return add_scalar(w, key, vtype, &v, err);                                                                 \
    }
GG_ADD(u8, uint8_t, ORC_GGUF_UINT8)
GG_ADD(i8, int8_t, ORC_GGUF_INT8)
GG_ADD(u16, uint16_t, ORC_GGUF_UINT16)
GG_ADD(i16, int16_t, ORC_GGUF_INT16)
GG_ADD(i32, int32_t, ORC_GGUF_INT32)
GG_ADD(u64, uint64_t, ORC_GGUF_UINT64)
GG_ADD(i64, int64_t, ORC_GGUF_INT64)
GG_ADD(f32, float, ORC_GGUF_FLOAT32)
GG_ADD(f64, double, ORC_GGUF_FLOAT64)
#undef GG_ADD

orc_status orc_gguf_add_u32(orc_gguf_writer *w, const char *key, uint32_t v, orc_error *err) {
    bool is_align = key && strcmp(key, "general.alignment") == 0;
    if (is_align && (v == 0 || (v & (v - 1)) != 0))
        return orc_error_set(err, ORC_EINVAL, "gguf: write: general.alignment %u is not a power of two", v);
    orc_status st = add_scalar(w, key, ORC_GGUF_UINT32, &v, err);
    if (st == ORC_OK && is_align) w->alignment = v;
    return st;
}

orc_status orc_gguf_add_bool(orc_gguf_writer *w, const char *key, bool v, orc_error *err) {
    uint8_t b = v ? 1 : 0;
    return add_scalar(w, key, ORC_GGUF_BOOL, &b, err);
}

orc_status orc_gguf_add_str(orc_gguf_writer *w, const char *key, const char *v, orc_error *err) {
    if (!v) return orc_error_set(err, ORC_EINVAL, "gguf: write: key '%.120s': NULL string", key ? key : "?");
    size_t mark = 0;
    orc_status st = begin_kv(w, key, ORC_GGUF_STRING, &mark, err);
    if (st != ORC_OK) return st;
    return end_kv(w, key, mark, put_str(w, v, strlen(v)), err);
}

orc_status orc_gguf_add_arr(orc_gguf_writer *w, const char *key, orc_gguf_vtype elem, const void *data, uint64_t n,
                            orc_error *err) {
    if ((unsigned)elem >= ORC_GGUF_VTYPE_COUNT || VTYPES[elem].size == 0)
        return orc_error_set(err, ORC_EINVAL,
                             "gguf: write: key '%.120s': array elements must be a fixed-size type, not %s",
                             key ? key : "?", orc_gguf_vtype_name(elem));
    size_t size = VTYPES[elem].size;
    if ((!data && n > 0) || n > SIZE_MAX / size)
        return orc_error_set(err, ORC_EINVAL, "gguf: write: key '%.120s': NULL data or too many elements",
                             key ? key : "?");
    if (elem == ORC_GGUF_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (((const uint8_t *)data)[i] > 1)
                return orc_error_set(err, ORC_EINVAL, "gguf: write: key '%.120s': bool element %llu is not 0 or 1",
                                     key ? key : "?", (unsigned long long)i);
    size_t mark = 0;
    orc_status st = begin_kv(w, key, ORC_GGUF_ARRAY, &mark, err);
    if (st != ORC_OK) return st;
    bool ok = put_u32(w, (uint32_t)elem) && put_u64(w, n) && put(w, data, (size_t)n * size);
    return end_kv(w, key, mark, ok, err);
}

orc_status orc_gguf_add_arr_str(orc_gguf_writer *w, const char *key, const char *const *strs, uint64_t n,
                                orc_error *err) {
    if (!strs && n > 0)
        return orc_error_set(err, ORC_EINVAL, "gguf: write: key '%.120s': NULL strings", key ? key : "?");
    for (uint64_t i = 0; i < n; i++)
        if (!strs[i])
            return orc_error_set(err, ORC_EINVAL, "gguf: write: key '%.120s': string %llu is NULL", key ? key : "?",
                                 (unsigned long long)i);
    size_t mark = 0;
    orc_status st = begin_kv(w, key, ORC_GGUF_ARRAY, &mark, err);
    if (st != ORC_OK) return st;
    bool ok = put_u32(w, ORC_GGUF_STRING) && put_u64(w, n);
    for (uint64_t i = 0; i < n && ok; i++) ok = put_str(w, strs[i], strlen(strs[i]));
    return end_kv(w, key, mark, ok, err);
}

static orc_status add_tensor(orc_gguf_writer *w, const char *name, orc_ggml_type type, int ndim, const int64_t *shape,
                             const void *data, size_t nbytes, bool from_f32, orc_error *err) {
    if (!w || !name || (!shape && ndim > 0))
        return orc_error_set(err, ORC_EINVAL, "gguf: write: NULL writer, name or shape");
    size_t len = strlen(name);
    if (len == 0 || len > ORC_GGUF_MAX_NAME)
        return orc_error_set(err, ORC_EINVAL, "gguf: write: tensor name '%.120s' is empty or longer than %d bytes",
                             name, ORC_GGUF_MAX_NAME);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return orc_error_set(err, ORC_EINVAL, "gguf: write: duplicate tensor name '%.120s'", name);
    if (!orc_ggml_type_known(type))
        return orc_error_set(err, ORC_EINVAL, "gguf: write: tensor '%.120s': unknown ggml type %d", name, (int)type);
    if (from_f32 && type != ORC_GGML_F32 && type != ORC_GGML_F16 && type != ORC_GGML_BF16 && type != ORC_GGML_Q8_0 &&
        type != ORC_GGML_Q4_0)
        return orc_error_set(err, ORC_EINVAL, "gguf: write: tensor '%.120s': cannot convert f32 to %s", name,
                             GGML_TYPES[type].name);
    if (ndim < 0 || ndim > ORC_GGUF_MAX_DIMS)
        return orc_error_set(err, ORC_EINVAL, "gguf: write: tensor '%.120s': %d dimensions (0 to 4)", name, ndim);
    char buf[200];
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] > 0 && numel > INT64_MAX / shape[d]))
            return orc_error_set(err, ORC_EINVAL, "gguf: write: tensor '%.120s': bad shape %s", name,
                                 orc_shape_str(buf, sizeof buf, ndim, shape));
        numel *= shape[d];
    }
    int64_t row = ndim ? shape[ndim - 1] : 1, blk = GGML_TYPES[type].block;
    if (row % blk != 0)
        return orc_error_set(err, ORC_EINVAL,
                             "gguf: write: tensor '%.120s': last dimension of shape %s is not a multiple of the %s "
                             "block size %lld",
                             name, orc_shape_str(buf, sizeof buf, ndim, shape), GGML_TYPES[type].name, (long long)blk);
    size_t need = 0;
    if (orc_ggml_nbytes(type, numel, &need, NULL) != ORC_OK)
        return orc_error_set(err, ORC_EINVAL, "gguf: write: tensor '%.120s': shape %s is too many bytes", name,
                             orc_shape_str(buf, sizeof buf, ndim, shape));
    if (!from_f32 && nbytes != need)
        return orc_error_set(err, ORC_EINVAL, "gguf: write: tensor '%.120s': %zu bytes given, %s %s needs %zu", name,
                             nbytes, GGML_TYPES[type].name, orc_shape_str(buf, sizeof buf, ndim, shape), need);
    if (!data && numel > 0) return orc_error_set(err, ORC_EINVAL, "gguf: write: tensor '%.120s': NULL data", name);
    if (!grow((void **)&w->tensors, &w->tensors_cap, w->n_tensors + 1, sizeof *w->tensors)) return oom(err);
    w_tensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return oom(err);
    t->type = type;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->numel = numel;
    t->data = data;
    t->nbytes = need;
    t->from_f32 = from_f32;
    w->n_tensors++;
    return ORC_OK;
}

orc_status orc_gguf_add_tensor(orc_gguf_writer *w, const char *name, orc_ggml_type type, int ndim,
                               const int64_t *shape, const void *data, size_t nbytes, orc_error *err) {
    return add_tensor(w, name, type, ndim, shape, data, nbytes, false, err);
}

orc_status orc_gguf_add_tensor_f32(orc_gguf_writer *w, const char *name, orc_ggml_type type, int ndim,
                                   const int64_t *shape, const float *data, orc_error *err) {
    return add_tensor(w, name, type, ndim, shape, data, 0, true, err);
}

static size_t pad_to(size_t n, size_t a) { return (a - n % a) % a; }

static bool write_zeros(orc_atomic_file *out, size_t n) {
    static const uint8_t zeros[4096];
    while (n > 0) {
        size_t m = n < sizeof zeros ? n : sizeof zeros;
        if (!orc_atomic_write(out, zeros, m)) return false;
        n -= m;
    }
    return true;
}

/* Header, key/values and tensor infos, in one malloc'd block. */
static uint8_t *build_meta(const orc_gguf_writer *w, size_t *out_len) {
    orc_gguf_writer m = {0}; /* reuse the encoder on a scratch buffer */
    bool ok = put(&m, "GGUF", 4) && put_u32(&m, ORC_GGUF_VERSION) && put_u64(&m, w->n_tensors) &&
              put_u64(&m, w->n_kv) && put(&m, w->kv, w->kv_len);
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors && ok; i++) {
        const w_tensor *t = &w->tensors[i];
        ok = put_str(&m, t->name, strlen(t->name)) && put_u32(&m, (uint32_t)t->ndim);
        for (int d = t->ndim - 1; d >= 0 && ok; d--) ok = put_u64(&m, (uint64_t)t->shape[d]);
        ok = ok && put_u32(&m, (uint32_t)t->type) && put_u64(&m, offset);
        offset += t->nbytes + pad_to(t->nbytes, w->alignment);
    }
    if (!ok) {
        free(m.kv);
        return NULL;
    }
    *out_len = m.kv_len;
    return m.kv;
}

/* Converts float32 rows in chunks so memory stays small. */
static bool write_tensor(orc_atomic_file *out, const w_tensor *t) {
    if (!t->from_f32 || t->type == ORC_GGML_F32) return orc_atomic_write(out, t->data, t->nbytes);
    enum { CHUNK = 8192 }; /* a multiple of every block size used here */
    uint8_t *buf = malloc(CHUNK * 4);
    if (!buf) return false;
    const float *src = t->data;
    bool ok = true;
    for (int64_t i = 0; i < t->numel && ok; i += CHUNK) {
        int64_t m = t->numel - i < CHUNK ? t->numel - i : CHUNK;
        size_t bytes = 0;
        ok = orc_ggml_quantize(t->type, src + i, buf, m, NULL) == ORC_OK &&
             orc_ggml_nbytes(t->type, m, &bytes, NULL) == ORC_OK && orc_atomic_write(out, buf, bytes);
    }
    free(buf);
    return ok;
}

orc_status orc_gguf_write(const orc_gguf_writer *w, const char *path, orc_error *err) {
    if (!w || !path) return orc_error_set(err, ORC_EINVAL, "gguf: write: NULL writer or path");
    size_t meta_len = 0;
    uint8_t *meta = build_meta(w, &meta_len);
    if (!meta) return oom(err);
    orc_atomic_file out;
    orc_status st = orc_atomic_open(&out, path, "gguf", err);
    if (st == ORC_OK) {
        /* A failed write is remembered by the file and reported by the commit. */
        bool ok = orc_atomic_write(&out, meta, meta_len) && write_zeros(&out, pad_to(meta_len, w->alignment));
        for (size_t i = 0; i < w->n_tensors && ok; i++)
            ok = write_tensor(&out, &w->tensors[i]) && write_zeros(&out, pad_to(w->tensors[i].nbytes, w->alignment));
        if (!ok && !out.failed) out.failed = ENOMEM; /* a conversion buffer could not be allocated */
        st = orc_atomic_commit(&out, err);
    }
    free(meta);
    return st;
}
