/* safetensors reading (memory-mapped, fully validated before use), writing
 * (temporary file, fsync, rename) and the hand-written F16/BF16 conversions
 * (see orchard/safetensors.h for the rules and the dtype policy). The header
 * JSON is parsed with jansson; tensor names and metadata are copied out of it
 * so the JSON tree is freed as soon as the file is validated. */
#include "orchard/safetensors.h"
#include "orchard/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "orchard's safetensors code assumes a little-endian host"
#endif

typedef struct st_meta {
    char *key;
    char *value;
} st_meta;

struct orc_st_file {
    char *label;                  /* path or caller's label, for messages */
    void *map;                    /* our mapping (orc_st_open only) */
    size_t map_len;
    const uint8_t *buffer;        /* start of the byte buffer */
    size_t buffer_len;
    orc_st_tensor_info *tensors;  /* sorted by data offset */
    size_t n;
    const orc_st_tensor_info **by_name; /* sorted by name */
    st_meta *meta;                /* sorted by key */
    size_t n_meta;
};

/* ---- dtypes ----------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} DTYPES[ORC_ST_DTYPE_COUNT] = {
    [ORC_ST_F32] = {"F32", 4},   [ORC_ST_F16] = {"F16", 2},         [ORC_ST_BF16] = {"BF16", 2},
    [ORC_ST_I32] = {"I32", 4},   [ORC_ST_I64] = {"I64", 8},         [ORC_ST_U8] = {"U8", 1},
    [ORC_ST_F64] = {"F64", 8},   [ORC_ST_I8] = {"I8", 1},           [ORC_ST_I16] = {"I16", 2},
    [ORC_ST_U16] = {"U16", 2},   [ORC_ST_U32] = {"U32", 4},         [ORC_ST_U64] = {"U64", 8},
    [ORC_ST_BOOL] = {"BOOL", 1}, [ORC_ST_F8_E4M3] = {"F8_E4M3", 1}, [ORC_ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *orc_st_dtype_name(orc_st_dtype dt) {
    return (unsigned)dt < ORC_ST_DTYPE_COUNT ? DTYPES[dt].name : "?";
}

size_t orc_st_dtype_size(orc_st_dtype dt) { return (unsigned)dt < ORC_ST_DTYPE_COUNT ? DTYPES[dt].size : 0; }

static bool dtype_from_name(const char *s, orc_st_dtype *out) {
    for (int i = 0; i < ORC_ST_DTYPE_COUNT; i++)
        if (strcmp(s, DTYPES[i].name) == 0) {
            *out = (orc_st_dtype)i;
            return true;
        }
    return false;
}

/* ---- 16-bit floats ------------------------------------------------------------ */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float orc_st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13)); /* inf, nan (payload kept) */
    if (exp == 0) {
        if (mant == 0) return bits_f32(sign);
        /* Subnormal: shift the leading 1 up to the implicit bit; each shift
         * lowers the exponent by one. */
        int e = -14;
        while (!(mant & 0x400)) {
            mant <<= 1;
            e--;
        }
        return bits_f32(sign | (uint32_t)(e + 127) << 23 | (mant & 0x3ff) << 13);
    }
    return bits_f32(sign | (exp - 15 + 127) << 23 | mant << 13);
}

/* Round the integer q + rem/2^shift to nearest, ties to even. */
static uint32_t round_shift(uint32_t value, int shift) {
    uint32_t q = value >> shift;
    uint32_t rem = value & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return q;
}

uint16_t orc_st_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff)); /* nan stays quiet nan */
    if (a == 0x7f800000u) return (uint16_t)(sign | 0x7c00);
    int e = (int)(a >> 23) - 127 + 15; /* biased half exponent */
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return sign; /* below half the smallest subnormal */
        uint32_t mant = (a & 0x7fffffu) | 0x800000u;
        /* A carry out of the top lands on the smallest normal: correct. */
        return (uint16_t)(sign | round_shift(mant, 14 - e));
    }
    /* Normal: a carry into the exponent (even up to inf) is correct too. */
    uint32_t h = ((uint32_t)e << 10) | ((a >> 13) & 0x3ff);
    uint32_t rem = a & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float orc_st_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t orc_st_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040); /* quiet nan */
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* ---- parsing ------------------------------------------------------------------ */

/* "safetensors: LABEL: tensor 'NAME': DETAIL" (tensor part only when given). */
static orc_status st_fail(orc_error *err, orc_status code, const char *label, const char *tensor, const char *fmt,
                          ...) __attribute__((format(printf, 5, 6)));
static orc_status st_fail(orc_error *err, orc_status code, const char *label, const char *tensor, const char *fmt,
                          ...) {
    char detail[ORC_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (tensor)
        return orc_error_set(err, code, "safetensors: %.200s: tensor '%.120s': %s", label, tensor, detail);
    return orc_error_set(err, code, "safetensors: %.200s: %s", label, detail);
}

static uint64_t load_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void store_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static orc_status parse_dtype(const orc_st_file *f, const char *name, json_t *entry, orc_st_dtype *dt,
                              orc_error *err) {
    json_t *v = json_object_get(entry, "dtype");
    if (!v) return st_fail(err, ORC_EFORMAT, f->label, name, "missing \"dtype\"");
    if (!json_is_string(v)) return st_fail(err, ORC_EFORMAT, f->label, name, "\"dtype\" is not a string");
    if (!dtype_from_name(json_string_value(v), dt))
        return st_fail(err, ORC_EFORMAT, f->label, name, "unknown dtype \"%.40s\"", json_string_value(v));
    return ORC_OK;
}

static orc_status parse_shape(const orc_st_file *f, const char *name, json_t *entry, orc_st_tensor_info *t,
                              orc_error *err) {
    json_t *v = json_object_get(entry, "shape");
    if (!v) return st_fail(err, ORC_EFORMAT, f->label, name, "missing \"shape\"");
    if (!json_is_array(v)) return st_fail(err, ORC_EFORMAT, f->label, name, "\"shape\" is not an array");
    size_t nd = json_array_size(v);
    if (nd > ORC_ST_MAX_DIMS)
        return st_fail(err, ORC_EUNSUPPORTED, f->label, name, "%zu dimensions; orchard reads at most %d", nd,
                       ORC_ST_MAX_DIMS);
    bool has_zero = false;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(v, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return st_fail(err, ORC_EFORMAT, f->label, name, "shape entry %zu is not a non-negative integer", i);
        t->shape[i] = (int64_t)json_integer_value(d);
        if (t->shape[i] == 0) has_zero = true;
    }
    t->ndim = (int)nd;
    int64_t numel = 1;
    for (size_t i = 0; i < nd && !has_zero; i++) {
        if (numel > INT64_MAX / t->shape[i]) {
            char buf[200];
            return st_fail(err, ORC_EFORMAT, f->label, name, "shape %s has too many elements",
                           orc_shape_str(buf, sizeof buf, t->ndim, t->shape));
        }
        numel *= t->shape[i];
    }
    t->numel = has_zero ? 0 : numel;
    uint64_t size = DTYPES[t->dtype].size;
    if ((uint64_t)t->numel > SIZE_MAX / size) {
        char buf[200];
        return st_fail(err, ORC_EFORMAT, f->label, name, "shape %s of %s is too many bytes",
                       orc_shape_str(buf, sizeof buf, t->ndim, t->shape), DTYPES[t->dtype].name);
    }
    t->nbytes = (size_t)t->numel * size;
    return ORC_OK;
}

static orc_status parse_offsets(const orc_st_file *f, const char *name, json_t *entry, orc_st_tensor_info *t,
                                orc_error *err) {
    json_t *v = json_object_get(entry, "data_offsets");
    if (!v) return st_fail(err, ORC_EFORMAT, f->label, name, "missing \"data_offsets\"");
    json_t *b = json_array_get(v, 0), *e = json_array_get(v, 1);
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(b) || !json_is_integer(e) ||
        json_integer_value(b) < 0 || json_integer_value(e) < 0)
        return st_fail(err, ORC_EFORMAT, f->label, name,
                       "\"data_offsets\" is not [begin, end] of two non-negative integers");
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(e);
    if (begin > end)
        return st_fail(err, ORC_EFORMAT, f->label, name, "data_offsets [%llu, %llu] end before they begin",
                       (unsigned long long)begin, (unsigned long long)end);
    if (end - begin != t->nbytes) {
        char buf[200];
        return st_fail(err, ORC_EFORMAT, f->label, name,
                       "data_offsets [%llu, %llu] span %llu bytes but dtype %s and shape %s need %zu",
                       (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin),
                       DTYPES[t->dtype].name, orc_shape_str(buf, sizeof buf, t->ndim, t->shape), t->nbytes);
    }
    if (end > f->buffer_len)
        return st_fail(err, ORC_EFORMAT, f->label, name,
                       "data_offsets [%llu, %llu] run past the end of the %zu-byte data buffer",
                       (unsigned long long)begin, (unsigned long long)end, f->buffer_len);
    t->offset = (size_t)begin;
    t->data = f->buffer + begin;
    return ORC_OK;
}

static orc_status parse_tensor(orc_st_file *f, const char *name, json_t *entry, orc_st_tensor_info *t,
                               orc_error *err) {
    t->name = strdup(name);
    if (!t->name) return orc_error_set(err, ORC_ENOMEM, "safetensors: out of memory");
    if (!json_is_object(entry)) return st_fail(err, ORC_EFORMAT, f->label, name, "entry is not an object");
    orc_status st = parse_dtype(f, name, entry, &t->dtype, err);
    if (st == ORC_OK) st = parse_shape(f, name, entry, t, err);
    if (st == ORC_OK) st = parse_offsets(f, name, entry, t, err);
    return st;
}

static int cmp_meta(const void *a, const void *b) {
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

static orc_status parse_metadata(orc_st_file *f, json_t *obj, orc_error *err) {
    if (!json_is_object(obj)) return st_fail(err, ORC_EFORMAT, f->label, NULL, "\"__metadata__\" is not an object");
    size_t n = json_object_size(obj);
    f->meta = calloc(n ? n : 1, sizeof *f->meta);
    if (!f->meta) return orc_error_set(err, ORC_ENOMEM, "safetensors: out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!json_is_string(v))
            return st_fail(err, ORC_EFORMAT, f->label, NULL, "\"__metadata__\" value of key '%.120s' is not a string",
                           key);
        st_meta *m = &f->meta[f->n_meta++];
        m->key = strdup(key);
        m->value = strdup(json_string_value(v));
        if (!m->key || !m->value) return orc_error_set(err, ORC_ENOMEM, "safetensors: out of memory");
    }
    qsort(f->meta, f->n_meta, sizeof *f->meta, cmp_meta);
    return ORC_OK;
}

static int cmp_offset(const void *pa, const void *pb) {
    const orc_st_tensor_info *a = pa, *b = pb;
    if (a->offset != b->offset) return a->offset < b->offset ? -1 : 1;
    if (a->nbytes != b->nbytes) return a->nbytes < b->nbytes ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* The buffer must be covered from 0 to its end, in offset order, with no hole
 * and no overlap (empty tensors sit anywhere inside). */
static orc_status check_layout(orc_st_file *f, orc_error *err) {
    qsort(f->tensors, f->n, sizeof *f->tensors, cmp_offset);
    size_t pos = 0;
    for (size_t i = 0; i < f->n; i++) {
        const orc_st_tensor_info *t = &f->tensors[i];
        if (t->offset > pos && i == 0)
            return st_fail(err, ORC_EFORMAT, f->label, t->name,
                           "data starts at byte %zu, leaving a hole at the start of the data buffer", t->offset);
        if (t->offset > pos)
            return st_fail(err, ORC_EFORMAT, f->label, t->name,
                           "data starts at byte %zu but tensor '%.120s' ends at %zu, leaving a %zu-byte hole",
                           t->offset, f->tensors[i - 1].name, pos, t->offset - pos);
        if (t->offset < pos)
            return st_fail(err, ORC_EFORMAT, f->label, t->name,
                           "data starts at byte %zu, overlapping tensor '%.120s' which ends at %zu", t->offset,
                           f->tensors[i - 1].name, pos);
        pos = t->offset + t->nbytes;
    }
    if (pos != f->buffer_len) {
        if (f->n == 0)
            return st_fail(err, ORC_EFORMAT, f->label, NULL, "the %zu-byte data buffer holds no tensor",
                           f->buffer_len);
        return st_fail(err, ORC_EFORMAT, f->label, NULL,
                       "%zu unused bytes after the last tensor '%.120s' (it ends at %zu, the data buffer is %zu "
                       "bytes)",
                       f->buffer_len - pos, f->tensors[f->n - 1].name, pos, f->buffer_len);
    }
    return ORC_OK;
}

static int cmp_name_ptr(const void *pa, const void *pb) {
    const orc_st_tensor_info *a = *(const orc_st_tensor_info *const *)pa;
    const orc_st_tensor_info *b = *(const orc_st_tensor_info *const *)pb;
    return strcmp(a->name, b->name);
}

/* Called after check_layout, so the tensors no longer move. */
static orc_status build_name_index(orc_st_file *f, orc_error *err) {
    f->by_name = malloc((f->n ? f->n : 1) * sizeof *f->by_name);
    if (!f->by_name) return orc_error_set(err, ORC_ENOMEM, "safetensors: out of memory");
    for (size_t i = 0; i < f->n; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, f->n, sizeof *f->by_name, cmp_name_ptr);
    /* The JSON parser already rejects duplicate keys; this keeps find exact
     * whatever the parser does. */
    for (size_t i = 1; i < f->n; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
            return st_fail(err, ORC_EFORMAT, f->label, f->by_name[i]->name, "duplicate tensor name");
    return ORC_OK;
}

static orc_status parse_header(orc_st_file *f, json_t *root, orc_error *err) {
    size_t total = json_object_size(root);
    f->tensors = calloc(total ? total : 1, sizeof *f->tensors);
    if (!f->tensors) return orc_error_set(err, ORC_ENOMEM, "safetensors: out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        orc_status st = strcmp(key, "__metadata__") == 0 ? parse_metadata(f, v, err)
                                                         : parse_tensor(f, key, v, &f->tensors[f->n++], err);
        if (st != ORC_OK) return st;
    }
    orc_status st = check_layout(f, err);
    if (st == ORC_OK) st = build_name_index(f, err);
    return st;
}

static orc_status parse_image(orc_st_file *f, const uint8_t *base, size_t len, orc_error *err) {
    if (len < 8)
        return st_fail(err, ORC_EFORMAT, f->label, NULL, "%zu bytes is too short for the 8-byte header length", len);
    uint64_t hlen = load_le64(base);
    if (hlen > ORC_ST_MAX_HEADER)
        return st_fail(err, ORC_EFORMAT, f->label, NULL, "header length %llu is over the limit of %llu bytes",
                       (unsigned long long)hlen, ORC_ST_MAX_HEADER);
    if (hlen > len - 8)
        return st_fail(err, ORC_EFORMAT, f->label, NULL, "header length %llu runs past the end of the %zu-byte file",
                       (unsigned long long)hlen, len);
    f->buffer = base + 8 + hlen;
    f->buffer_len = len - 8 - (size_t)hlen;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root && json_error_code(&jerr) == json_error_duplicate_key)
        return st_fail(err, ORC_EFORMAT, f->label, NULL, "duplicate name in the header (line %d, column %d: %s)",
                       jerr.line, jerr.column, jerr.text);
    if (!root)
        return st_fail(err, ORC_EFORMAT, f->label, NULL, "header is not valid JSON (line %d, column %d: %s)",
                       jerr.line, jerr.column, jerr.text);
    orc_status st = json_is_object(root) ? parse_header(f, root, err)
                                         : st_fail(err, ORC_EFORMAT, f->label, NULL, "header JSON is not an object");
    json_decref(root);
    return st;
}

orc_st_file *orc_st_parse(const void *buf, size_t len, const char *label, orc_error *err) {
    if (!buf && len > 0) {
        orc_error_set(err, ORC_EINVAL, "safetensors: NULL buffer of %zu bytes", len);
        return NULL;
    }
    orc_st_file *f = calloc(1, sizeof *f);
    if (f) f->label = strdup(label ? label : "<memory>");
    if (!f || !f->label) {
        orc_error_set(err, ORC_ENOMEM, "safetensors: out of memory");
        orc_st_close(f);
        return NULL;
    }
    if (parse_image(f, buf ? buf : (const void *)"", len, err) != ORC_OK) {
        orc_st_close(f);
        return NULL;
    }
    return f;
}

orc_st_file *orc_st_open(const char *path, orc_error *err) {
    orc_mapped_file m;
    if (orc_file_map(path, "safetensors", &m, err) != ORC_OK) return NULL;
    orc_st_file *f = orc_st_parse(m.data, m.len, path, err);
    if (!f) {
        orc_file_unmap(&m);
        return NULL;
    }
    f->map = m.data;
    f->map_len = m.len;
    return f;
}

void orc_st_close(orc_st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) free((char *)f->tensors[i].name);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->by_name);
    free(f->meta);
    free(f->label);
    if (f->map) munmap(f->map, f->map_len);
    free(f);
}

/* ---- queries --------------------------------------------------------------- */

size_t orc_st_count(const orc_st_file *f) { return f ? f->n : 0; }

const orc_st_tensor_info *orc_st_info(const orc_st_file *f, size_t i) {
    return f && i < f->n ? &f->tensors[i] : NULL;
}

const orc_st_tensor_info *orc_st_find(const orc_st_file *f, const char *name) {
    if (!f || !name) return NULL;
    size_t lo = 0, hi = f->n;
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

const char *orc_st_metadata(const orc_st_file *f, const char *key) {
    if (!f || !key) return NULL;
    size_t lo = 0, hi = f->n_meta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->meta[mid].key, key);
        if (c == 0) return f->meta[mid].value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t orc_st_metadata_count(const orc_st_file *f) { return f ? f->n_meta : 0; }

const char *orc_st_metadata_key(const orc_st_file *f, size_t i) {
    return f && i < f->n_meta ? f->meta[i].key : NULL;
}

const char *orc_st_metadata_value(const orc_st_file *f, size_t i) {
    return f && i < f->n_meta ? f->meta[i].value : NULL;
}

/* ---- converting readers ------------------------------------------------------ */

static bool is_supported(orc_st_dtype dt) { return dt <= ORC_ST_U8; }

/* The named tensor, checked against the caller's element count. */
static orc_status lookup(const orc_st_file *f, const char *name, const void *out, int64_t n, const char *fn,
                         const orc_st_tensor_info **found, orc_error *err) {
    if (!f || !name || (!out && n > 0))
        return orc_error_set(err, ORC_EINVAL, "%s: NULL file, name or output buffer", fn);
    const orc_st_tensor_info *t = orc_st_find(f, name);
    if (!t) return st_fail(err, ORC_EFORMAT, f->label, NULL, "no tensor named '%.120s'", name);
    if (n != t->numel) {
        char buf[200];
        return st_fail(err, ORC_ESHAPE, f->label, name, "%s: has %lld elements (shape %s), the output holds %lld",
                       fn, (long long)t->numel, orc_shape_str(buf, sizeof buf, t->ndim, t->shape), (long long)n);
    }
    if (!is_supported(t->dtype))
        return st_fail(err, ORC_EUNSUPPORTED, f->label, name, "%s: dtype %s is not converted by orchard", fn,
                       DTYPES[t->dtype].name);
    *found = t;
    return ORC_OK;
}

/* Chunks big enough to be worth a thread each. */
#define ST_PAR_MIN 65536

orc_status orc_st_read_f32(const orc_st_file *f, const char *name, float *out, int64_t n, orc_error *err) {
    const orc_st_tensor_info *t = NULL;
    orc_status st = lookup(f, name, out, n, "read_f32", &t, err);
    if (st != ORC_OK) return st;
    const uint8_t *src = t->data;
    switch (t->dtype) {
    case ORC_ST_F32:
        if (t->nbytes) memcpy(out, src, t->nbytes);
        return ORC_OK;
    case ORC_ST_F16:
#pragma omp parallel for schedule(static) if (n > ST_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = orc_st_f16_to_f32(h);
        }
        return ORC_OK;
    case ORC_ST_BF16:
#pragma omp parallel for schedule(static) if (n > ST_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = orc_st_bf16_to_f32(h);
        }
        return ORC_OK;
    default:
        return st_fail(err, ORC_EDTYPE, f->label, name, "read_f32: dtype %s is not F32, F16 or BF16",
                       DTYPES[t->dtype].name);
    }
}

orc_status orc_st_read_i32(const orc_st_file *f, const char *name, int32_t *out, int64_t n, orc_error *err) {
    const orc_st_tensor_info *t = NULL;
    orc_status st = lookup(f, name, out, n, "read_i32", &t, err);
    if (st != ORC_OK) return st;
    const uint8_t *src = t->data;
    switch (t->dtype) {
    case ORC_ST_I32:
        if (t->nbytes) memcpy(out, src, t->nbytes);
        return ORC_OK;
    case ORC_ST_I64:
        for (int64_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, src + 8 * i, 8);
            if (v < INT32_MIN || v > INT32_MAX)
                return st_fail(err, ORC_ERANGE, f->label, name, "read_i32: element %lld is %lld, outside int32",
                               (long long)i, (long long)v);
            out[i] = (int32_t)v;
        }
        return ORC_OK;
    case ORC_ST_U8:
        for (int64_t i = 0; i < n; i++) out[i] = src[i];
        return ORC_OK;
    default:
        return st_fail(err, ORC_EDTYPE, f->label, name, "read_i32: dtype %s is not I32, I64 or U8",
                       DTYPES[t->dtype].name);
    }
}

static orc_status check_expected_shape(const orc_st_file *f, const orc_st_tensor_info *t, int ndim,
                                       const int64_t *shape, orc_error *err) {
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (same) return ORC_OK;
    char have[200], want[200];
    return st_fail(err, ORC_ESHAPE, f->label, t->name, "has shape %s, expected %s%s",
                   orc_shape_str(have, sizeof have, t->ndim, t->shape), orc_shape_str(want, sizeof want, ndim, shape),
                   t->ndim > ORC_MAX_DIMS ? " (orchard tensors have at most 4 dimensions)" : "");
}

static orc_status read_as(const orc_st_file *f, const char *name, orc_dtype dt, void *out, int64_t n,
                          orc_error *err) {
    if (dt == ORC_F32) return orc_st_read_f32(f, name, out, n, err);
    if (dt == ORC_I32) return orc_st_read_i32(f, name, out, n, err);
    return orc_error_set(err, ORC_EDTYPE, "safetensors: cannot load '%.120s' as dtype %d", name, (int)dt);
}

orc_tensor *orc_st_load(const orc_st_file *f, orc_arena *a, const char *name, orc_dtype dt, int ndim,
                        const int64_t *shape, orc_error *err) {
    if (!f || !a || !name || (!shape && ndim > 0)) {
        orc_error_set(err, ORC_EINVAL, "orc_st_load: NULL file, arena, name or shape");
        return NULL;
    }
    if (ndim < 0 || ndim > ORC_MAX_DIMS) {
        orc_error_set(err, ORC_ESHAPE, "orc_st_load: '%.120s': expected %d dimensions, orchard supports 0 to %d",
                      name, ndim, ORC_MAX_DIMS);
        return NULL;
    }
    const orc_st_tensor_info *t = orc_st_find(f, name);
    if (!t) {
        st_fail(err, ORC_EFORMAT, f->label, NULL, "no tensor named '%.120s'", name);
        return NULL;
    }
    if (check_expected_shape(f, t, ndim, shape, err) != ORC_OK) return NULL;
    orc_tensor *out = orc_tensor_new(a, dt, ndim, shape, err);
    if (!out) return NULL;
    if (read_as(f, name, dt, out->data, out->numel, err) != ORC_OK) return NULL;
    out->name = orc_arena_strdup(a, name);
    return out;
}

orc_status orc_st_read_into(const orc_st_file *f, const char *name, orc_tensor *dst, orc_error *err) {
    if (!f || !name || !dst) return orc_error_set(err, ORC_EINVAL, "orc_st_read_into: NULL file, name or tensor");
    if (dst->device != ORC_DEV_CPU || !orc_is_contiguous(dst))
        return orc_error_set(err, ORC_EINVAL, "orc_st_read_into: '%.120s': the target must be a contiguous CPU tensor",
                             name);
    const orc_st_tensor_info *t = orc_st_find(f, name);
    if (!t) return st_fail(err, ORC_EFORMAT, f->label, NULL, "no tensor named '%.120s'", name);
    orc_status st = check_expected_shape(f, t, dst->ndim, dst->shape, err);
    if (st != ORC_OK) return st;
    return read_as(f, name, dst->dtype, dst->data, dst->numel, err);
}

/* ---- writing ------------------------------------------------------------------ */

orc_status orc_st_entry_from_tensor(orc_st_entry *e, const char *name, const orc_tensor *t, orc_st_dtype store,
                                    orc_error *err) {
    if (!e || !t) return orc_error_set(err, ORC_EINVAL, "safetensors: NULL entry or tensor");
    if (t->device != ORC_DEV_CPU || !orc_is_contiguous(t))
        return orc_error_set(err, ORC_EINVAL, "safetensors: tensor '%.120s' must be contiguous on the CPU to be saved",
                             name ? name : "?");
    memset(e, 0, sizeof *e);
    e->name = name;
    e->ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) e->shape[i] = t->shape[i];
    e->data = t->data;
    if (t->dtype == ORC_I32) {
        e->dtype = ORC_ST_I32;
        return ORC_OK;
    }
    if (store != ORC_ST_F32 && store != ORC_ST_F16 && store != ORC_ST_BF16)
        return orc_error_set(err, ORC_EINVAL, "safetensors: tensor '%.120s': f32 data cannot be stored as %s",
                             name ? name : "?", orc_st_dtype_name(store));
    e->dtype = store;
    e->from_f32 = true;
    return ORC_OK;
}

/* Checks one entry and returns its byte size in the file through nbytes. */
static orc_status check_entry(const orc_st_entry *e, size_t i, size_t *nbytes, orc_error *err) {
    if (!e->name || !e->name[0] || strcmp(e->name, "__metadata__") == 0)
        return orc_error_set(err, ORC_EINVAL, "safetensors: write: tensor %zu has an empty or reserved name", i);
    if ((unsigned)e->dtype >= ORC_ST_DTYPE_COUNT)
        return orc_error_set(err, ORC_EINVAL, "safetensors: write: tensor '%.120s': bad dtype %d", e->name,
                             (int)e->dtype);
    if (e->from_f32 && e->dtype != ORC_ST_F32 && e->dtype != ORC_ST_F16 && e->dtype != ORC_ST_BF16)
        return orc_error_set(err, ORC_EINVAL, "safetensors: write: tensor '%.120s': cannot convert f32 to %s",
                             e->name, DTYPES[e->dtype].name);
    if (e->ndim < 0 || e->ndim > ORC_ST_MAX_DIMS)
        return orc_error_set(err, ORC_EINVAL, "safetensors: write: tensor '%.120s': %d dimensions", e->name, e->ndim);
    uint64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) {
        char buf[200];
        if (e->shape[d] < 0 || (e->shape[d] > 0 && numel > (uint64_t)INT64_MAX / 8 / (uint64_t)e->shape[d]))
            return orc_error_set(err, ORC_EINVAL, "safetensors: write: tensor '%.120s': bad shape %s", e->name,
                                 orc_shape_str(buf, sizeof buf, e->ndim, e->shape));
        numel *= (uint64_t)e->shape[d];
    }
    if (numel > 0 && !e->data)
        return orc_error_set(err, ORC_EINVAL, "safetensors: write: tensor '%.120s': NULL data", e->name);
    *nbytes = (size_t)numel * DTYPES[e->dtype].size;
    return ORC_OK;
}

static orc_status add_tensor_json(json_t *root, const orc_st_entry *e, size_t begin, size_t nbytes,
                                  orc_error *err) {
    if (json_object_get(root, e->name))
        return orc_error_set(err, ORC_EINVAL, "safetensors: write: duplicate tensor name '%.120s'", e->name);
    json_t *shape = json_array();
    for (int d = 0; d < e->ndim; d++) json_array_append_new(shape, json_integer(e->shape[d]));
    json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", DTYPES[e->dtype].name, "shape", shape, "data_offsets",
                              (json_int_t)begin, (json_int_t)(begin + nbytes));
    if (!entry || json_object_set_new(root, e->name, entry) != 0)
        return orc_error_set(err, ORC_EINVAL, "safetensors: write: tensor '%.120s': name is not valid UTF-8",
                             e->name);
    return ORC_OK;
}

static orc_status add_metadata_json(json_t *root, const orc_st_kv *meta, size_t n_meta, orc_error *err) {
    if (n_meta == 0) return ORC_OK;
    json_t *obj = json_object();
    if (!obj || json_object_set_new(root, "__metadata__", obj) != 0)
        return orc_error_set(err, ORC_ENOMEM, "safetensors: write: out of memory");
    for (size_t i = 0; i < n_meta; i++) {
        const char *k = meta[i].key, *v = meta[i].value;
        if (!k || !v) return orc_error_set(err, ORC_EINVAL, "safetensors: write: metadata entry %zu is NULL", i);
        if (json_object_get(obj, k))
            return orc_error_set(err, ORC_EINVAL, "safetensors: write: duplicate metadata key '%.120s'", k);
        json_t *s = json_string(v);
        if (!s || json_object_set_new(obj, k, s) != 0)
            return orc_error_set(err, ORC_EINVAL, "safetensors: write: metadata '%.120s' is not valid UTF-8", k);
    }
    return ORC_OK;
}

/* The 8-byte length, the JSON and the space padding, in one malloc'd block. */
static orc_status build_header(const orc_st_entry *tensors, size_t n, const orc_st_kv *meta, size_t n_meta,
                               uint8_t **out, size_t *out_len, orc_error *err) {
    json_t *root = json_object();
    if (!root) return orc_error_set(err, ORC_ENOMEM, "safetensors: write: out of memory");
    orc_status st = add_metadata_json(root, meta, n_meta, err);
    size_t pos = 0;
    for (size_t i = 0; i < n && st == ORC_OK; i++) {
        size_t nbytes = 0;
        st = check_entry(&tensors[i], i, &nbytes, err);
        if (st == ORC_OK) st = add_tensor_json(root, &tensors[i], pos, nbytes, err);
        pos += nbytes;
    }
    char *text = st == ORC_OK ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (st != ORC_OK) return st;
    if (!text) return orc_error_set(err, ORC_ENOMEM, "safetensors: write: out of memory for the header");
    size_t len = strlen(text), padded = (len + 7) / 8 * 8;
    if (padded > ORC_ST_MAX_HEADER) {
        free(text);
        return orc_error_set(err, ORC_EINVAL, "safetensors: write: header of %zu bytes is over the limit", padded);
    }
    uint8_t *h = malloc(8 + padded);
    if (!h) {
        free(text);
        return orc_error_set(err, ORC_ENOMEM, "safetensors: write: out of memory for the header");
    }
    store_le64(h, padded);
    memcpy(h + 8, text, len);
    memset(h + 8 + len, ' ', padded - len);
    free(text);
    *out = h;
    *out_len = 8 + padded;
    return ORC_OK;
}

/* Converts float32 to 16-bit in chunks so memory stays small. */
static bool write_converted(orc_atomic_file *out, const orc_st_entry *e, size_t nbytes) {
    if (!e->from_f32 || e->dtype == ORC_ST_F32) return orc_atomic_write(out, e->data, nbytes);
    const float *src = e->data;
    size_t n = nbytes / 2;
    uint16_t chunk[4096];
    for (size_t i = 0; i < n; i += 4096) {
        size_t m = n - i < 4096 ? n - i : 4096;
        for (size_t j = 0; j < m; j++)
            chunk[j] = e->dtype == ORC_ST_F16 ? orc_st_f32_to_f16(src[i + j]) : orc_st_f32_to_bf16(src[i + j]);
        if (!orc_atomic_write(out, chunk, m * 2)) return false;
    }
    return true;
}

orc_status orc_st_write(const char *path, const orc_st_entry *tensors, size_t n, const orc_st_kv *meta,
                        size_t n_meta, orc_error *err) {
    if (!path || (!tensors && n > 0) || (!meta && n_meta > 0))
        return orc_error_set(err, ORC_EINVAL, "safetensors: write: NULL path, tensors or metadata");
    uint8_t *header = NULL;
    size_t header_len = 0;
    orc_status st = build_header(tensors, n, meta, n_meta, &header, &header_len, err);
    if (st != ORC_OK) return st;
    orc_atomic_file out;
    st = orc_atomic_open(&out, path, "safetensors", err);
    if (st == ORC_OK) {
        bool ok = orc_atomic_write(&out, header, header_len);
        for (size_t i = 0; i < n && ok; i++) {
            size_t nbytes = 0;
            check_entry(&tensors[i], i, &nbytes, NULL); /* already checked; recomputes the size */
            ok = write_converted(&out, &tensors[i], nbytes);
        }
        st = orc_atomic_commit(&out, err);
    }
    free(header);
    return st;
}
