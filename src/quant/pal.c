/* Palettized matrices (orchard/quant.h): the 1-D k-means that learns each
 * column group's lookup table, packing the 4- and 2-bit indices, checked
 * views of tables and indices in a mapped file, and dequantization to the
 * exact values the kernels multiply with. A table is shared by all rows of
 * a group of `group` columns (AFM: "a 16-entry lookup table per group of 16
 * columns"); its entries are int8 times one float scale so that the kernels
 * can look them up with a byte shuffle (src/quant/palkern.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard/quant.h"
#include "quant_internal.h"

bool orc_q_type_is_pal(orc_ggml_type type) { return type == ORC_Q_PAL4 || type == ORC_Q_PAL2; }

const char *orc_q_type_name(orc_ggml_type type) {
    if (type == ORC_Q_PAL4) return "PAL4";
    if (type == ORC_Q_PAL2) return "PAL2";
    return orc_ggml_type_name(type);
}

int orc_q_pal_entries(orc_ggml_type type) { return type == ORC_Q_PAL4 ? 16 : type == ORC_Q_PAL2 ? 4 : 0; }

/* ---- k-means -------------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* First index in sorted x[lo..hi) with x > v. */
static int64_t upper_bound(const float *x, int64_t lo, int64_t hi, double v) {
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if ((double)x[mid] > v)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* In 1-D the clusters of sorted values are intervals split at the midpoints
 * between neighbouring centroids, so one Lloyd iteration is k binary
 * searches and k prefix-sum means: many iterations cost less than the sort. */
orc_status orc_q_kmeans1d(float *x, int64_t n, int k, int iters, float *c, orc_error *err) {
    if (k < 1 || n < 1) return orc_error_set(err, ORC_EINVAL, "kmeans: %d clusters of %lld values", k, (long long)n);
    qsort(x, (size_t)n, sizeof(float), cmp_float);
    double *ps = malloc(sizeof(double) * (size_t)(n + 1));
    int64_t *b = malloc(sizeof(int64_t) * (size_t)(k + 1)), *nb = malloc(sizeof(int64_t) * (size_t)(k + 1));
    if (!ps || !b || !nb) {
        free(ps);
        free(b);
        free(nb);
        return orc_error_set(err, ORC_ENOMEM, "kmeans: out of memory for %lld values", (long long)n);
    }
    ps[0] = 0.0;
    for (int64_t i = 0; i < n; i++) ps[i + 1] = ps[i] + (double)x[i];
    /* quantile init: cluster j holds the j-th of k equal-count slices */
    for (int j = 0; j <= k; j++) b[j] = (int64_t)((double)n * j / k);
    for (int j = 0; j < k; j++)
        c[j] = b[j + 1] > b[j] ? (float)((ps[b[j + 1]] - ps[b[j]]) / (double)(b[j + 1] - b[j]))
                               : x[b[j] < n ? b[j] : n - 1];
    for (int it = 0; it < iters; it++) {
        nb[0] = 0;
        nb[k] = n;
        for (int j = 1; j < k; j++) {
            nb[j] = upper_bound(x, 0, n, 0.5 * ((double)c[j - 1] + (double)c[j]));
            if (nb[j] < nb[j - 1]) nb[j] = nb[j - 1];
        }
        bool same = true;
        for (int j = 0; j <= k; j++) same = same && nb[j] == b[j];
        memcpy(b, nb, sizeof(int64_t) * (size_t)(k + 1));
        for (int j = 0; j < k; j++) /* an empty cluster keeps its centroid */
            if (b[j + 1] > b[j]) c[j] = (float)((ps[b[j + 1]] - ps[b[j]]) / (double)(b[j + 1] - b[j]));
        for (int j = 1; j < k; j++) /* keep them ascending (insertion sort; empty ones can drift) */
            for (int i = j; i > 0 && c[i] < c[i - 1]; i--) {
                const float t = c[i];
                c[i] = c[i - 1];
                c[i - 1] = t;
            }
        if (same && it > 0) break; /* converged: further iterations change nothing */
    }
    free(ps);
    free(b);
    free(nb);
    return ORC_OK;
}

/* ---- building -------------------------------------------------------------------- */

/* The per-16-column tables the kernels shuffle with (unused slots zero). */
static void build_ktab(orc_qmat *q) {
    const int64_t subs = q->cols / ORC_Q_PAL_SUB;
    memset(q->ktab, 0, (size_t)q->cols);
    for (int64_t s = 0; s < subs; s++) {
        const int64_t g = s * ORC_Q_PAL_SUB / q->group;
        memcpy(q->ktab + s * 16, q->lut + g * q->entries, (size_t)q->entries);
    }
}

static orc_status check_pal_shape(orc_ggml_type type, int64_t rows, int64_t cols, int64_t group, const char *name,
                                  orc_error *err) {
    if (!orc_q_type_is_pal(type))
        return orc_error_set(err, ORC_EINVAL, "quant: %s: type %s is not PAL4 or PAL2", name, orc_q_type_name(type));
    if (rows <= 0 || cols <= 0 || cols % ORC_Q_BLOCK)
        return orc_error_set(err, ORC_EINVAL, "quant: %s: shape [%lld, %lld] needs positive sizes and a row length "
                             "that is a multiple of %d",
                             name, (long long)rows, (long long)cols, ORC_Q_BLOCK);
    if (group <= 0 || group % ORC_Q_PAL_SUB || cols % group)
        return orc_error_set(err, ORC_EINVAL, "quant: %s: group %lld must be a positive multiple of %d dividing the "
                             "%lld columns",
                             name, (long long)group, ORC_Q_PAL_SUB, (long long)cols);
    return ORC_OK;
}

/* The owned tables block: scales, entries, kernel tables. */
static orc_status alloc_tables(orc_qmat *q, bool own_lut, orc_error *err) {
    const int64_t G = q->cols / q->group;
    const size_t scale_b = own_lut ? sizeof(float) * (size_t)G : 0, lut_b = own_lut ? (size_t)(G * q->entries) : 0;
    uint8_t *p = malloc(scale_b + lut_b + (size_t)q->cols);
    if (!p) return orc_error_set(err, ORC_ENOMEM, "quant: out of memory for the tables of a [%lld, %lld] matrix",
                                 (long long)q->rows, (long long)q->cols);
    q->owned_lut = p;
    if (own_lut) {
        q->lut_scale = (const float *)p;
        q->lut = (const int8_t *)(p + scale_b);
    }
    q->ktab = (int8_t *)(p + scale_b + lut_b);
    return ORC_OK;
}

static void pack_row(orc_ggml_type type, const uint8_t *idx, int64_t cols, uint8_t *out) {
    for (int64_t c = 0; c < cols / 32; c++) {
        const uint8_t *e = idx + c * 32;
        if (type == ORC_Q_PAL4) {
            for (int i = 0; i < 16; i++) out[c * 16 + i] = (uint8_t)(e[i] | e[16 + i] << 4);
        } else {
            for (int i = 0; i < 8; i++)
                out[c * 8 + i] = (uint8_t)(e[i] | e[8 + i] << 2 | e[16 + i] << 4 | e[24 + i] << 6);
        }
    }
}

/* Index of element k of a packed palettized row. */
static inline int pal_index(orc_ggml_type type, const uint8_t *row, int64_t k) {
    const int64_t c = k / 32, e = k % 32;
    if (type == ORC_Q_PAL4) return (row[c * 16 + e % 16] >> (4 * (e / 16))) & 15;
    return (row[c * 8 + e % 8] >> (2 * (e / 8))) & 3;
}

/* Learn group g's table; fills lut/scale and idx[:, g*group ..] (idx is [rows, cols] bytes). */
static orc_status palettize_group(const float *w, int64_t rows, int64_t cols, int64_t group, int E, int64_t g,
                                  int8_t *lut, float *scale, uint8_t *idx, orc_error *err) {
    const int64_t n = rows * group;
    float *v = malloc(sizeof(float) * (size_t)n);
    if (!v) return orc_error_set(err, ORC_ENOMEM, "quant: out of memory palettizing %lld values", (long long)n);
    for (int64_t r = 0; r < rows; r++) memcpy(v + r * group, w + r * cols + g * group, sizeof(float) * (size_t)group);
    float cen[16];
    orc_status st = orc_q_kmeans1d(v, n, E, ORC_Q_PAL_ITERS, cen, err);
    free(v);
    if (st != ORC_OK) return st;
    float amax = 0.0f;
    for (int e = 0; e < E; e++) amax = fmaxf(amax, fabsf(cen[e]));
    const float s = amax / 127.0f;
    float val[16];
    for (int e = 0; e < E; e++) {
        long t = s > 0.0f ? lrintf(cen[e] / s) : 0;
        t = t > 127 ? 127 : t < -127 ? -127 : t;
        lut[e] = (int8_t)t;
        val[e] = s * (float)lut[e]; /* exactly what the kernels and orc_qmat_dequantize use */
    }
    *scale = s;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = g * group; k < (g + 1) * group; k++) {
            const float x = w[r * cols + k];
            int best = 0;
            float bd = fabsf(x - val[0]);
            for (int e = 1; e < E; e++) {
                const float d = fabsf(x - val[e]);
                if (d < bd) {
                    bd = d;
                    best = e;
                }
            }
            idx[r * cols + k] = (uint8_t)best;
        }
    return ORC_OK;
}

static orc_status palettize(orc_qmat *q, orc_ggml_type type, const float *w, int64_t rows, int64_t cols,
                            int64_t group, orc_error *err) {
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(w[i]))
            return orc_error_set(err, ORC_EINVAL, "quant: a [%lld, %lld] matrix has a non-finite weight at %lld",
                                 (long long)rows, (long long)cols, (long long)i);
    const size_t rb = orc_q_row_bytes(type, cols);
    *q = (orc_qmat){.type = type, .rows = rows, .cols = cols, .row_bytes = rb, .group = group,
                    .entries = orc_q_pal_entries(type)};
    uint8_t *buf = aligned_alloc(64, (rb * (size_t)rows + 63) / 64 * 64);
    uint8_t *idx = malloc((size_t)(rows * cols));
    orc_status st = buf && idx ? alloc_tables(q, true, err)
                               : orc_error_set(err, ORC_ENOMEM, "quant: out of memory for a [%lld, %lld] matrix",
                                               (long long)rows, (long long)cols);
    q->data = buf;
    q->owned = buf;
    const int64_t G = cols / group;
    int failed = 0;
    if (st == ORC_OK) {
        /* groups are independent, so the result does not depend on the thread count */
#pragma omp parallel for schedule(dynamic) reduction(| : failed)
        for (int64_t g = 0; g < G; g++) {
            orc_error e = {0};
            if (palettize_group(w, rows, cols, group, q->entries, g, (int8_t *)q->lut + g * q->entries,
                                (float *)q->lut_scale + g, idx, &e) != ORC_OK)
                failed |= 1;
        }
        if (failed) st = orc_error_set(err, ORC_ENOMEM, "quant: out of memory palettizing a [%lld, %lld] matrix",
                                       (long long)rows, (long long)cols);
    }
    if (st == ORC_OK) {
        for (int64_t r = 0; r < rows; r++) pack_row(type, idx + r * cols, cols, buf + (size_t)r * rb);
        build_ktab(q);
    }
    free(idx);
    if (st != ORC_OK) orc_qmat_release(q);
    return st;
}

orc_status orc_qmat_quantize_ex(orc_qmat *q, orc_ggml_type type, const float *w, int64_t rows, int64_t cols,
                                int64_t group, orc_error *err) {
    if (!orc_q_type_is_pal(type)) return orc_qmat_quantize(q, type, w, rows, cols, err);
    memset(q, 0, sizeof *q);
    if (group <= 0) group = ORC_Q_PAL_GROUP;
    orc_status st = check_pal_shape(type, rows, cols, group, "matrix", err);
    if (st != ORC_OK) return st;
    return palettize(q, type, w, rows, cols, group, err);
}

orc_status orc_qmat_view_pal(orc_qmat *q, orc_ggml_type type, int64_t rows, int64_t cols, int64_t group,
                             const void *indices, size_t nbytes, const int8_t *lut, size_t lut_bytes,
                             const float *lut_scale, size_t scale_bytes, const char *name, orc_error *err) {
    memset(q, 0, sizeof *q);
    orc_status st = check_pal_shape(type, rows, cols, group, name, err);
    if (st != ORC_OK) return st;
    const size_t rb = orc_q_row_bytes(type, cols);
    const int E = orc_q_pal_entries(type);
    const int64_t G = cols / group;
    if (nbytes != rb * (size_t)rows)
        return orc_error_set(err, ORC_EFORMAT, "quant: %s: %zu index bytes, but [%lld, %lld] in %s needs %zu",
                             name, nbytes, (long long)rows, (long long)cols, orc_q_type_name(type), rb * (size_t)rows);
    if (lut_bytes != (size_t)(G * E) || scale_bytes != sizeof(float) * (size_t)G)
        return orc_error_set(err, ORC_EFORMAT, "quant: %s: tables of %zu bytes and scales of %zu bytes, but %lld "
                             "groups of %lld columns in %s need %lld and %zu",
                             name, lut_bytes, scale_bytes, (long long)G, (long long)group, orc_q_type_name(type),
                             (long long)(G * E), sizeof(float) * (size_t)G);
    for (int64_t i = 0; i < G * E; i++)
        if (lut[i] == -128)
            return orc_error_set(err, ORC_EFORMAT, "quant: %s: table entry %lld is -128 (entries are in [-127, 127])",
                                 name, (long long)i);
    for (int64_t g = 0; g < G; g++) {
        float s;
        memcpy(&s, lut_scale + g, sizeof s);
        if (!isfinite(s))
            return orc_error_set(err, ORC_EFORMAT, "quant: %s: table scale %lld is not finite", name, (long long)g);
    }
    *q = (orc_qmat){.type = type, .rows = rows, .cols = cols, .row_bytes = rb, .data = indices, .group = group,
                    .entries = E, .lut = lut, .lut_scale = lut_scale};
    st = alloc_tables(q, false, err);
    if (st == ORC_OK) build_ktab(q);
    return st;
}

/* ---- reading back -------------------------------------------------------------------- */

void orc_q_pal_dequant_row(const orc_qmat *q, int64_t r, float *out) {
    const uint8_t *row = q->data + (size_t)r * q->row_bytes;
    for (int64_t k = 0; k < q->cols; k++) {
        const int64_t g = k / q->group;
        out[k] = q->lut_scale[g] * (float)q->lut[g * q->entries + pal_index(q->type, row, k)];
    }
}
