/* safetensors: round trips of every dtype, a file built byte by byte from the
 * format's rules, every malformed case the reader must refuse (with the
 * tensor or the problem named), atomic writes, and the F16/BF16 conversions
 * against known bit patterns. */
#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testdir.h"

#include "orchard/safetensors.h"

/* ---- helpers -------------------------------------------------------------------- */

static void write_bytes(const char *path, const void *buf, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, n, fp), n);
    fclose(fp);
}

/* 8-byte length + json + buffer_len bytes of 0xAB: an image to parse. */
static uint8_t *image(const char *json, size_t buffer_len, size_t *len) {
    size_t n = strlen(json);
    *len = 8 + n + buffer_len;
    uint8_t *p = malloc(*len);
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(p + 8, json, n);
    memset(p + 8 + n, 0xAB, buffer_len);
    return p;
}

#define ASSERT_OK(err) \
    do { if ((err).code != ORC_OK) fail_msg("unexpected error: %s", (err).msg); } while (0)

/* ---- conversions --------------------------------------------------------------- */

static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_f16_bits(void **state) {
    (void)state;
    /* decode */
    assert_true(orc_st_f16_to_f32(0x3c00) == 1.0f);
    assert_true(orc_st_f16_to_f32(0xc000) == -2.0f);
    assert_true(orc_st_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(orc_st_f16_to_f32(0x0400) == ldexpf(1, -14));         /* smallest normal */
    assert_true(orc_st_f16_to_f32(0x0001) == ldexpf(1, -24));         /* smallest subnormal */
    assert_true(orc_st_f16_to_f32(0x03ff) == ldexpf(1023, -24));      /* largest subnormal */
    assert_true(orc_st_f16_to_f32(0x8001) == -ldexpf(1, -24));
    assert_true(orc_st_f16_to_f32(0x3555) == 0.333251953125f);
    assert_int_equal(bits(orc_st_f16_to_f32(0x8000)), 0x80000000u);
    assert_true(isinf(orc_st_f16_to_f32(0x7c00)) && orc_st_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(orc_st_f16_to_f32(0xfc00)) && orc_st_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(orc_st_f16_to_f32(0x7e00)));
    assert_true(isnan(orc_st_f16_to_f32(0x7c01)));
    /* every half round-trips exactly (NaNs stay NaN) */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = orc_st_f16_to_f32((uint16_t)h);
        if (isnan(f))
            assert_true(isnan(orc_st_f16_to_f32(orc_st_f32_to_f16(f))));
        else
            assert_int_equal(orc_st_f32_to_f16(f), h);
    }
    /* encode, round to nearest even */
    assert_int_equal(orc_st_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(orc_st_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);     /* tie -> even */
    assert_int_equal(orc_st_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02); /* tie -> even (up) */
    assert_int_equal(orc_st_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)), 0x3c01);
    assert_int_equal(orc_st_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(orc_st_f32_to_f16(65520.0f), 0x7c00); /* rounds up to inf */
    assert_int_equal(orc_st_f32_to_f16(1e6f), 0x7c00);
    assert_int_equal(orc_st_f32_to_f16(-1e6f), 0xfc00);
    assert_int_equal(orc_st_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(orc_st_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(orc_st_f32_to_f16(ldexpf(1, -25)), 0x0000);            /* tie -> 0 */
    assert_int_equal(orc_st_f32_to_f16(ldexpf(1.0001f, -25)), 0x0001);
    assert_int_equal(orc_st_f32_to_f16(ldexpf(3, -25)), 0x0002);            /* 1.5 ulp -> 2 */
    assert_int_equal(orc_st_f32_to_f16(ldexpf(2047, -25)), 0x0400);         /* carries into normal */
    assert_int_equal(orc_st_f32_to_f16(1e-8f), 0x0000);
    assert_int_equal(orc_st_f32_to_f16(-1e-8f), 0x8000);
    assert_int_equal(orc_st_f32_to_f16(from_bits(0x00000001)), 0x0000);     /* f32 subnormal */
    uint16_t qn = orc_st_f32_to_f16(NAN);
    assert_int_equal(qn & 0x7c00, 0x7c00);
    assert_true((qn & 0x3ff) != 0);
    assert_true(orc_st_f32_to_f16(from_bits(0x7f800001)) & 0x3ff); /* signalling NaN stays NaN */
}

static void test_bf16_bits(void **state) {
    (void)state;
    assert_true(orc_st_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(orc_st_bf16_to_f32(0xc040) == -3.0f);
    assert_true(orc_st_bf16_to_f32(0x0001) == ldexpf(1, -133)); /* subnormal */
    assert_true(orc_st_bf16_to_f32(0x0080) == ldexpf(1, -126));
    assert_true(isinf(orc_st_bf16_to_f32(0x7f80)));
    assert_true(isnan(orc_st_bf16_to_f32(0x7fc0)));
    assert_int_equal(bits(orc_st_bf16_to_f32(0x8000)), 0x80000000u);
    assert_int_equal(orc_st_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(orc_st_f32_to_bf16(from_bits(0x3f808000)), 0x3f80); /* tie -> even */
    assert_int_equal(orc_st_f32_to_bf16(from_bits(0x3f818000)), 0x3f82); /* tie -> even (up) */
    assert_int_equal(orc_st_f32_to_bf16(from_bits(0x3f808001)), 0x3f81);
    assert_int_equal(orc_st_f32_to_bf16(from_bits(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to inf */
    assert_int_equal(orc_st_f32_to_bf16(from_bits(0x00018000)), 0x0002); /* subnormal tie -> even */
    assert_int_equal(orc_st_f32_to_bf16(from_bits(0x00008000)), 0x0000);
    assert_int_equal(orc_st_f32_to_bf16(-INFINITY), 0xff80);
    uint16_t qn = orc_st_f32_to_bf16(from_bits(0x7f800001)); /* NaN whose payload is all in the low half */
    assert_true((qn & 0x7f80) == 0x7f80 && (qn & 0x7f) != 0);
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = orc_st_bf16_to_f32((uint16_t)h);
        if (!isnan(f)) assert_int_equal(orc_st_f32_to_bf16(f), h);
    }
}

/* ---- round trip ----------------------------------------------------------------- */

static void test_roundtrip_all_dtypes(void **state) {
    (void)state;
    char path[256];
    orc_test_scratch_path(path, sizeof path, "all.safetensors");
    uint8_t raw[15][64];
    for (int d = 0; d < 15; d++)
        for (int i = 0; i < 64; i++) raw[d][i] = (uint8_t)(d * 31 + i * 7);
    orc_st_entry e[24];
    char names[15][16];
    int n = 0;
    for (int d = 0; d < ORC_ST_DTYPE_COUNT; d++) { /* 2x(8/size) elements: 16 bytes each */
        snprintf(names[d], sizeof names[d], "raw.%s", orc_st_dtype_name((orc_st_dtype)d));
        e[n++] = (orc_st_entry){.name = names[d], .dtype = (orc_st_dtype)d, .ndim = 2,
                                .shape = {2, (int64_t)(8 / orc_st_dtype_size((orc_st_dtype)d))}, .data = raw[d]};
    }
    const float fv[5] = {1.0f, -2.5f, 65504.0f, ldexpf(1, -24), 1.0f / 3.0f};
    e[n++] = (orc_st_entry){.name = "conv.f16", .dtype = ORC_ST_F16, .ndim = 1, .shape = {5}, .data = fv,
                            .from_f32 = true};
    e[n++] = (orc_st_entry){.name = "conv.bf16", .dtype = ORC_ST_BF16, .ndim = 1, .shape = {5}, .data = fv,
                            .from_f32 = true};
    e[n++] = (orc_st_entry){.name = "conv.f32", .dtype = ORC_ST_F32, .ndim = 1, .shape = {5}, .data = fv,
                            .from_f32 = true};
    e[n++] = (orc_st_entry){.name = "empty", .dtype = ORC_ST_F32, .ndim = 1, .shape = {0}, .data = NULL};
    const float scalar = 42.5f;
    e[n++] = (orc_st_entry){.name = "scalar", .dtype = ORC_ST_F32, .ndim = 0, .data = &scalar};
    const int64_t i64[3] = {-5, 2147483647, -2147483648LL};
    e[n++] = (orc_st_entry){.name = "ids64", .dtype = ORC_ST_I64, .ndim = 1, .shape = {3}, .data = i64};
    const float five_d[2] = {7, 8};
    e[n++] = (orc_st_entry){.name = "five.d", .dtype = ORC_ST_F32, .ndim = 5, .shape = {1, 2, 1, 1, 1}, .data = five_d};
    const orc_st_kv meta[2] = {{"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\""}};
    orc_error err = {0};
    assert_int_equal(orc_st_write(path, e, (size_t)n, meta, 2, &err), ORC_OK);
    ASSERT_OK(err);

    /* Layout: header length a multiple of 8, padded with spaces. */
    FILE *fp = fopen(path, "rb");
    uint8_t head[8];
    assert_int_equal(fread(head, 1, 8, fp), 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | head[i];
    assert_int_equal(hlen % 8, 0);
    fclose(fp);

    orc_st_file *f = orc_st_open(path, &err);
    ASSERT_OK(err);
    assert_non_null(f);
    assert_int_equal(orc_st_count(f), (size_t)n);
    for (int d = 0; d < ORC_ST_DTYPE_COUNT; d++) {
        const orc_st_tensor_info *t = orc_st_find(f, names[d]);
        assert_non_null(t);
        assert_int_equal(t->dtype, d);
        assert_int_equal(t->ndim, 2);
        assert_int_equal(t->nbytes, 16);
        assert_memory_equal(t->data, raw[d], 16);
    }
    /* Offsets are contiguous in write order. */
    size_t pos = 0;
    for (size_t i = 0; i < orc_st_count(f); i++) {
        const orc_st_tensor_info *t = orc_st_info(f, i);
        assert_int_equal(t->offset, pos);
        pos += t->nbytes;
    }
    float out[5];
    assert_int_equal(orc_st_read_f32(f, "conv.f32", out, 5, &err), ORC_OK);
    assert_memory_equal(out, fv, sizeof fv);
    assert_int_equal(orc_st_read_f32(f, "conv.f16", out, 5, &err), ORC_OK);
    for (int i = 0; i < 4; i++) assert_true(out[i] == fv[i]);
    assert_true(out[4] == orc_st_f16_to_f32(0x3555));
    assert_int_equal(orc_st_read_f32(f, "conv.bf16", out, 5, &err), ORC_OK);
    assert_true(out[0] == 1.0f && out[1] == -2.5f && out[2] == 65536.0f && out[3] == ldexpf(1, -24));
    assert_true(out[4] == orc_st_bf16_to_f32(0x3eab));
    ASSERT_OK(err);

    const orc_st_tensor_info *t = orc_st_find(f, "empty");
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], 0);
    assert_int_equal(t->numel, 0);
    assert_int_equal(orc_st_read_f32(f, "empty", NULL, 0, &err), ORC_OK);
    t = orc_st_find(f, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->numel, 1);
    assert_int_equal(orc_st_read_f32(f, "scalar", out, 1, &err), ORC_OK);
    assert_true(out[0] == 42.5f);

    int32_t ids[16];
    assert_int_equal(orc_st_read_i32(f, "ids64", ids, 3, &err), ORC_OK);
    assert_int_equal(ids[0], -5);
    assert_int_equal(ids[1], 2147483647);
    assert_int_equal(ids[2], INT32_MIN);
    assert_int_equal(orc_st_read_i32(f, "raw.U8", ids, 16, &err), ORC_OK);
    for (int i = 0; i < 16; i++) assert_int_equal(ids[i], raw[ORC_ST_U8][i]);
    assert_int_equal(orc_st_read_i32(f, "raw.I32", ids, 4, &err), ORC_OK);
    assert_memory_equal(ids, raw[ORC_ST_I32], 16);
    ASSERT_OK(err);

    /* Wrong-kind and unsupported reads. */
    assert_int_equal(orc_st_read_f32(f, "raw.I32", out, 4, &err), ORC_EDTYPE);
    assert_non_null(strstr(err.msg, "raw.I32"));
    orc_error_clear(&err);
    assert_int_equal(orc_st_read_i32(f, "raw.F32", ids, 4, &err), ORC_EDTYPE);
    orc_error_clear(&err);
    assert_int_equal(orc_st_read_f32(f, "raw.F64", out, 2, &err), ORC_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "F64"));
    orc_error_clear(&err);
    assert_int_equal(orc_st_read_f32(f, "conv.f16", out, 4, &err), ORC_ESHAPE);
    orc_error_clear(&err);
    assert_int_equal(orc_st_read_f32(f, "nope", out, 4, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "nope"));
    orc_error_clear(&err);

    /* 5-D: readable flat, not loadable as an orchard tensor. */
    assert_int_equal(orc_st_find(f, "five.d")->ndim, 5);
    assert_int_equal(orc_st_read_f32(f, "five.d", out, 2, &err), ORC_OK);
    assert_true(out[0] == 7 && out[1] == 8);

    /* Metadata lookup and iteration (sorted by key). */
    assert_string_equal(orc_st_metadata(f, "format"), "pt");
    assert_string_equal(orc_st_metadata(f, "note"), "caf\xc3\xa9 \"quoted\"");
    assert_null(orc_st_metadata(f, "missing"));
    assert_int_equal(orc_st_metadata_count(f), 2);
    assert_string_equal(orc_st_metadata_key(f, 0), "format");
    assert_string_equal(orc_st_metadata_value(f, 1), "caf\xc3\xa9 \"quoted\"");
    assert_null(orc_st_metadata_key(f, 2));
    orc_st_close(f);
}

static void test_load_into_tensors(void **state) {
    (void)state;
    char path[256];
    orc_test_scratch_path(path, sizeof path, "load.safetensors");
    orc_arena *a = orc_arena_create(0);
    orc_error err = {0};
    orc_tensor *w = orc_tensor_new(a, ORC_F32, 2, ORC_SHAPE(2, 3), &err);
    orc_tensor *ids = orc_tensor_new(a, ORC_I32, 1, ORC_SHAPE(4), &err);
    for (int i = 0; i < 6; i++) orc_f32(w)[i] = 0.5f * (float)i - 1.0f; /* exact in bf16 */
    for (int i = 0; i < 4; i++) orc_i32(ids)[i] = 10 * i - 7;
    orc_st_entry e[2];
    assert_int_equal(orc_st_entry_from_tensor(&e[0], "model.w", w, ORC_ST_BF16, &err), ORC_OK);
    assert_int_equal(orc_st_entry_from_tensor(&e[1], "model.ids", ids, ORC_ST_F16, &err), ORC_OK);
    assert_int_equal(orc_st_write(path, e, 2, NULL, 0, &err), ORC_OK);
    ASSERT_OK(err);
    orc_st_file *f = orc_st_open(path, &err);
    assert_non_null(f);
    assert_int_equal(orc_st_find(f, "model.w")->dtype, ORC_ST_BF16);
    orc_tensor *w2 = orc_st_load(f, a, "model.w", ORC_F32, 2, ORC_SHAPE(2, 3), &err);
    ASSERT_OK(err);
    assert_memory_equal(w2->data, w->data, 6 * sizeof(float));
    assert_string_equal(w2->name, "model.w");
    orc_tensor *ids2 = orc_tensor_zeros(a, ORC_I32, 1, ORC_SHAPE(4), &err);
    assert_int_equal(orc_st_read_into(f, "model.ids", ids2, &err), ORC_OK);
    assert_memory_equal(ids2->data, ids->data, 16);

    /* Shape mismatch names the tensor and both shapes. */
    assert_null(orc_st_load(f, a, "model.w", ORC_F32, 2, ORC_SHAPE(3, 2), &err));
    assert_int_equal(err.code, ORC_ESHAPE);
    assert_non_null(strstr(err.msg, "model.w"));
    assert_non_null(strstr(err.msg, "[2, 3]"));
    assert_non_null(strstr(err.msg, "[3, 2]"));
    orc_error_clear(&err);
    orc_tensor *small = orc_tensor_zeros(a, ORC_F32, 1, ORC_SHAPE(6), &err);
    assert_int_equal(orc_st_read_into(f, "model.w", small, &err), ORC_ESHAPE);
    orc_error_clear(&err);
    assert_null(orc_st_load(f, a, "model.w", ORC_I32, 2, ORC_SHAPE(2, 3), &err));
    assert_int_equal(err.code, ORC_EDTYPE);
    orc_error_clear(&err);
    assert_null(orc_st_load(f, a, "absent", ORC_F32, 1, ORC_SHAPE(1), &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "absent"));
    orc_st_close(f);
    orc_arena_destroy(a);
}

/* ---- a file written by hand ----------------------------------------------------------- */

/* Two tensors listed out of offset order, metadata, and space padding, the
 * way the reference Python writer lays a file out. Buffer (24 bytes):
 *   a: F32 [2]      at [0, 8)   = 1.0, -2.5
 *   b: BF16 [2]     at [8, 12)  = 1.0, -3.0
 *   c: I64 [1]      at [12, 20) = 3000000000 (outside int32)
 *   d: U8 [2, 2]    at [20, 24) = 1, 2, 3, 255 */
static const char HAND_JSON[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"d\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[20,24]},"
    "\"c\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[12,20]}}";
static const uint8_t HAND_DATA[24] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0, /* a */
                                      0x80, 0x3f, 0x40, 0xc0,                         /* b */
                                      0x00, 0x5e, 0xd0, 0xb2, 0x00, 0x00, 0x00, 0x00, /* c */
                                      0x01, 0x02, 0x03, 0xff};                        /* d */

static size_t hand_file(uint8_t *out) {
    size_t n = strlen(HAND_JSON), padded = (n + 7) / 8 * 8;
    out[0] = (uint8_t)(padded & 0xff);
    out[1] = (uint8_t)(padded >> 8);
    for (int i = 2; i < 8; i++) out[i] = 0;
    memcpy(out + 8, HAND_JSON, n);
    memset(out + 8 + n, ' ', padded - n);
    memcpy(out + 8 + padded, HAND_DATA, sizeof HAND_DATA);
    return 8 + padded + sizeof HAND_DATA;
}

static void check_hand_file(orc_st_file *f) {
    orc_error err = {0};
    assert_int_equal(orc_st_count(f), 4);
    assert_string_equal(orc_st_info(f, 0)->name, "a"); /* offset order */
    assert_string_equal(orc_st_info(f, 3)->name, "d");
    float v[2];
    assert_int_equal(orc_st_read_f32(f, "a", v, 2, &err), ORC_OK);
    assert_true(v[0] == 1.0f && v[1] == -2.5f);
    assert_int_equal(orc_st_read_f32(f, "b", v, 2, &err), ORC_OK);
    assert_true(v[0] == 1.0f && v[1] == -3.0f);
    int32_t ids[4];
    assert_int_equal(orc_st_read_i32(f, "d", ids, 4, &err), ORC_OK);
    assert_true(ids[0] == 1 && ids[3] == 255);
    assert_int_equal(orc_st_find(f, "d")->shape[1], 2);
    ASSERT_OK(err);
    assert_int_equal(orc_st_read_i32(f, "c", ids, 1, &err), ORC_ERANGE);
    assert_non_null(strstr(err.msg, "'c'"));
    assert_non_null(strstr(err.msg, "3000000000"));
    assert_string_equal(orc_st_metadata(f, "format"), "pt");
}

static void test_hand_built_file(void **state) {
    (void)state;
    uint8_t bytes[512];
    size_t n = hand_file(bytes);
    char path[256];
    write_bytes(orc_test_scratch_path(path, sizeof path, "hand.safetensors"), bytes, n);
    orc_error err = {0};
    orc_st_file *f = orc_st_open(path, &err);
    ASSERT_OK(err);
    check_hand_file(f);
    orc_st_close(f);
    f = orc_st_parse(bytes, n, "hand", &err);
    ASSERT_OK(err);
    check_hand_file(f);
    orc_st_close(f);
}

static void test_valid_edge_cases(void **state) {
    (void)state;
    const struct { const char *json; size_t buf; size_t count; } cases[] = {
        {"{}", 0, 0},
        {"{}        ", 0, 0},                                                          /* padding */
        {" {\"__metadata__\":{}} ", 0, 0},
        {"{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, 1},
        /* empty tensors at the start, between two others and at the end */
        {"{\"e\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
         "\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"f\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[0,0]},"
         "\"b\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[4,5]},"
         "\"g\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[5,5],\"extra\":1}}", 5, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        uint8_t *img = image(cases[i].json, cases[i].buf, &len);
        orc_error err = {0};
        orc_st_file *f = orc_st_parse(img, len, "edge", &err);
        if (!f) fail_msg("case %zu: %s", i, err.msg);
        assert_int_equal(orc_st_count(f), cases[i].count);
        orc_st_close(f);
        free(img);
    }
}

/* ---- malformed files ----------------------------------------------------------------------- */

typedef struct bad_case {
    const char *json;
    size_t buffer_len;
    orc_status code;
    const char *want1; /* substrings the message must hold */
    const char *want2;
} bad_case;

#define T(body) "{\"w.bad\":" body "}"
#define F32x2(off) "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":" off "}"

static const bad_case BAD[] = {
    {"{\"a\":", 0, ORC_EFORMAT, "not valid JSON", NULL},
    {"[1, 2]", 0, ORC_EFORMAT, "not an object", NULL},
    {"\"text\"", 0, ORC_EFORMAT, "JSON", NULL},
    {"{\"\xff\xfe\":1}", 0, ORC_EFORMAT, "not valid JSON", NULL},
    {"{}x", 0, ORC_EFORMAT, "not valid JSON", NULL},
    {"{\"a\":\"\\u0000\"}", 0, ORC_EFORMAT, "JSON", NULL},
    {T("5"), 0, ORC_EFORMAT, "w.bad", "not an object"},
    {T("{\"shape\":[2],\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad", "missing \"dtype\""},
    {T("{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad", "\"dtype\" is not a string"},
    {T("{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad", "unknown dtype \"F128\""},
    {T("{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad", "unknown dtype"},
    {T("{\"dtype\":\"F32\",\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad", "missing \"shape\""},
    {T("{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad", "not an array"},
    {T("{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad", "non-negative integer"},
    {T("{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad", "shape entry 0"},
    {T("{\"dtype\":\"F32\",\"shape\":[1,\"2\"],\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad", "shape entry 1"},
    {T("{\"dtype\":\"F32\",\"shape\":[1,null],\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad", "shape entry 1"},
    {T("{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad",
     "too many elements"},
    {T("{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad",
     "too many bytes"},
    {T("{\"dtype\":\"F32\",\"shape\":[2]}"), 8, ORC_EFORMAT, "w.bad", "missing \"data_offsets\""},
    {T("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}"), 8, ORC_EFORMAT, "w.bad", "[begin, end]"},
    {T("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}"), 8, ORC_EFORMAT, "w.bad", "[begin, end]"},
    {T("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"a\":0}}"), 8, ORC_EFORMAT, "w.bad", "[begin, end]"},
    {T("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,\"8\"]}"), 8, ORC_EFORMAT, "w.bad", "[begin, end]"},
    {T("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}"), 8, ORC_EFORMAT, "w.bad", "[begin, end]"},
    {T("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}"), 8, ORC_EFORMAT, "w.bad", "end before they begin"},
    {T("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}"), 4, ORC_EFORMAT, "w.bad", "need 8"},
    {T("{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,8]}"), 8, ORC_EFORMAT, "w.bad", "need 4"},
    {T(F32x2("[0,8]")), 4, ORC_EFORMAT, "w.bad", "past the end"},
    {T(F32x2("[9223372036854775800,9223372036854775807]")), 4, ORC_EFORMAT, "w.bad", "need 8"},
    {T(F32x2("[4,12]")), 12, ORC_EFORMAT, "w.bad", "hole"},
    {"{\"a\":" F32x2("[0,8]") ",\"w.bad\":" F32x2("[12,20]") "}", 20, ORC_EFORMAT, "w.bad", "4-byte hole"},
    {"{\"a\":" F32x2("[0,8]") ",\"w.bad\":" F32x2("[4,12]") "}", 12, ORC_EFORMAT, "w.bad", "overlapping tensor 'a'"},
    {"{\"a\":" F32x2("[0,8]") ",\"w.bad\":" F32x2("[0,8]") "}", 8, ORC_EFORMAT, "w.bad", "overlapping"},
    {T(F32x2("[0,8]")), 12, ORC_EFORMAT, "4 unused bytes", "w.bad"},
    {"{}", 3, ORC_EFORMAT, "3-byte data buffer holds no tensor", NULL},
    {"{\"w.bad\":" F32x2("[0,8]") ",\"w.bad\":" F32x2("[0,8]") "}", 8, ORC_EFORMAT, "duplicate", "w.bad"},
    {"{\"__metadata__\":5}", 0, ORC_EFORMAT, "\"__metadata__\" is not an object", NULL},
    {"{\"__metadata__\":{\"k.bad\":1}}", 0, ORC_EFORMAT, "k.bad", "not a string"},
    {"{\"__metadata__\":{\"a\":\"x\"},\"__metadata__\":{}}", 0, ORC_EFORMAT, "duplicate", NULL},
    {T("{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}"), 1, ORC_EUNSUPPORTED, "w.bad",
     "9 dimensions"},
};

static void test_malformed_headers(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        size_t len;
        uint8_t *img = image(BAD[i].json, BAD[i].buffer_len, &len);
        orc_error err = {0};
        orc_st_file *f = orc_st_parse(img, len, "case.safetensors", &err);
        if (f || err.code != BAD[i].code || !strstr(err.msg, "case.safetensors") ||
            !strstr(err.msg, BAD[i].want1) || (BAD[i].want2 && !strstr(err.msg, BAD[i].want2)))
            fail_msg("case %zu (%s): got code %d, message \"%s\"", i, BAD[i].json, err.code, err.msg);
        free(img);
    }
}

static void test_malformed_lengths(void **state) {
    (void)state;
    orc_error err = {0};
    uint8_t b[16] = {0};
    assert_null(orc_st_parse(b, 7, "short", &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "too short"));
    orc_error_clear(&err);
    assert_null(orc_st_parse(NULL, 0, "empty", &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    orc_error_clear(&err);
    /* header length just over the limit */
    uint64_t big = 100000001;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(big >> (8 * i));
    assert_null(orc_st_parse(b, 16, "big", &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "over the limit"));
    orc_error_clear(&err);
    memset(b, 0xff, 8);
    assert_null(orc_st_parse(b, 16, "huge", &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    orc_error_clear(&err);
    /* past the end of the file */
    memset(b, 0, 8);
    b[0] = 9;
    memcpy(b + 8, "{}      ", 8);
    assert_null(orc_st_parse(b, 16, "trunc", &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "past the end"));
    orc_error_clear(&err);
    /* the same through a file: the message names the path */
    char path[256];
    write_bytes(orc_test_scratch_path(path, sizeof path, "trunc.safetensors"), b, 16);
    assert_null(orc_st_open(path, &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    assert_non_null(strstr(err.msg, path));
    orc_error_clear(&err);
    write_bytes(orc_test_scratch_path(path, sizeof path, "zero.safetensors"), b, 0);
    assert_null(orc_st_open(path, &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    orc_error_clear(&err);
    assert_null(orc_st_open(orc_test_scratch_path(path, sizeof path, "missing.safetensors"), &err));
    assert_int_equal(err.code, ORC_EIO);
    assert_non_null(strstr(err.msg, "missing.safetensors"));
    orc_error_clear(&err);
    assert_null(orc_st_open(orc_test_scratch, &err));
    assert_int_equal(err.code, ORC_EIO);
}

/* ---- writing failures ---------------------------------------------------------------------- */

static void test_write_failures_leave_nothing(void **state) {
    (void)state;
    char sub[256], path[300];
    orc_test_scratch_path(sub, sizeof sub, "wf");
    assert_int_equal(mkdir(sub, 0755), 0);
    const float v[2] = {1, 2};
    orc_st_entry e = {.name = "x", .dtype = ORC_ST_F32, .ndim = 1, .shape = {2}, .data = v};
    orc_error err = {0};

    /* A directory that does not exist. */
    snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", sub);
    assert_int_equal(orc_st_write(path, &e, 1, NULL, 0, &err), ORC_EIO);
    assert_non_null(strstr(err.msg, "no/such/dir"));
    assert_int_equal(orc_test_count_entries(sub), 0);
    orc_error_clear(&err);

    /* A good file, then failed rewrites: the old file stays as it was. */
    snprintf(path, sizeof path, "%s/keep.safetensors", sub);
    assert_int_equal(orc_st_write(path, &e, 1, NULL, 0, &err), ORC_OK);
    orc_st_entry dup[2] = {e, e};
    assert_int_equal(orc_st_write(path, dup, 2, NULL, 0, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "duplicate"));
    orc_error_clear(&err);
    orc_st_entry bad = e;
    bad.dtype = ORC_ST_I32;
    bad.from_f32 = true;
    assert_int_equal(orc_st_write(path, &bad, 1, NULL, 0, &err), ORC_EINVAL);
    orc_error_clear(&err);
    bad = e;
    bad.name = "__metadata__";
    assert_int_equal(orc_st_write(path, &bad, 1, NULL, 0, &err), ORC_EINVAL);
    orc_error_clear(&err);
    bad = e;
    bad.name = "bad\xff";
    assert_int_equal(orc_st_write(path, &bad, 1, NULL, 0, &err), ORC_EINVAL);
    orc_error_clear(&err);
    bad = e;
    bad.shape[0] = -1;
    assert_int_equal(orc_st_write(path, &bad, 1, NULL, 0, &err), ORC_EINVAL);
    orc_error_clear(&err);
    const orc_st_kv dupmeta[2] = {{"k", "1"}, {"k", "2"}};
    assert_int_equal(orc_st_write(path, &e, 1, dupmeta, 2, &err), ORC_EINVAL);
    orc_error_clear(&err);
    const orc_st_kv badmeta[1] = {{"k", "\xc3"}};
    assert_int_equal(orc_st_write(path, &e, 1, badmeta, 1, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_test_count_entries(sub), 1);
    orc_st_file *f = orc_st_open(path, &err);
    ASSERT_OK(err);
    assert_int_equal(orc_st_count(f), 1);
    orc_st_close(f);

    /* The target is a directory: the rename fails, the temporary goes. */
    snprintf(path, sizeof path, "%s/adir", sub);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(orc_st_write(path, &e, 1, NULL, 0, &err), ORC_EIO);
    assert_non_null(strstr(err.msg, "rename"));
    assert_int_equal(orc_test_count_entries(sub), 2);
    assert_int_equal(orc_test_count_entries(path), 0);
    rmdir(path);
    snprintf(path, sizeof path, "%s/keep.safetensors", sub);
    unlink(path);
    rmdir(sub);
}

/* ---- threads -------------------------------------------------------------------------------- */

static void test_threads_bit_identical(void **state) {
    (void)state;
    enum { N = 200003 };
    float *src = malloc(N * sizeof(float)), *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) src[i] = sinf((float)i * 0.37f) * 1000.0f;
    orc_st_entry e[2] = {
        {.name = "h", .dtype = ORC_ST_F16, .ndim = 1, .shape = {N}, .data = src, .from_f32 = true},
        {.name = "b", .dtype = ORC_ST_BF16, .ndim = 1, .shape = {N}, .data = src, .from_f32 = true},
    };
    char path[256];
    orc_error err = {0};
    assert_int_equal(orc_st_write(orc_test_scratch_path(path, sizeof path, "big.safetensors"), e, 2, NULL, 0, &err), ORC_OK);
    orc_st_file *f = orc_st_open(path, &err);
    assert_non_null(f);
    for (int k = 0; k < 2; k++) {
        const char *name = k ? "b" : "h";
        omp_set_num_threads(1);
        assert_int_equal(orc_st_read_f32(f, name, a, N, &err), ORC_OK);
        omp_set_num_threads(3);
        assert_int_equal(orc_st_read_f32(f, name, b, N, &err), ORC_OK);
        assert_memory_equal(a, b, N * sizeof(float));
        for (int i = 0; i < N; i += 997)
            assert_true(fabsf(a[i] - src[i]) <= fabsf(src[i]) * (k ? 1.0f / 256 : 1.0f / 2048) + 1e-6f);
    }
    orc_st_close(f);
    free(src);
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_bits),
        cmocka_unit_test(test_bf16_bits),
        cmocka_unit_test(test_roundtrip_all_dtypes),
        cmocka_unit_test(test_load_into_tensors),
        cmocka_unit_test(test_hand_built_file),
        cmocka_unit_test(test_valid_edge_cases),
        cmocka_unit_test(test_malformed_headers),
        cmocka_unit_test(test_malformed_lengths),
        cmocka_unit_test(test_write_failures_leave_nothing),
        cmocka_unit_test(test_threads_bit_identical),
    };
    return cmocka_run_group_tests(tests, orc_test_scratch_setup, orc_test_scratch_teardown);
}
