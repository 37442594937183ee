/* GGUF: the ggml type table, Q8_0/Q4_0 blocks against hand-computed bytes,
 * round trips of every key/value type and tensor type (default and custom
 * alignment), a file spelled out byte by byte (the writer must produce exactly
 * it; version 2 of it must read), nested arrays, every malformed case the
 * reader must refuse with ORC_EFORMAT and a message naming the problem,
 * truncation at every byte, atomic writes, and thread-count independence. */
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

#include "orchard/arena.h"
#include "orchard/gguf.h"
#include "orchard/safetensors.h"

#define ASSERT_OK(err)                                                                                              \
    do {                                                                                                            \
        if ((err).code != ORC_OK) fail_msg("unexpected error: %s", (err).msg);                                      \
    } while (0)

/* ---- helpers ---------------------------------------------------------------------- */

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *p = malloc(*len ? *len : 1);
    assert_int_equal(fread(p, 1, *len, fp), *len);
    fclose(fp);
    return p;
}

/* A byte builder for hand-made images. */
typedef struct bb {
    uint8_t *p;
    size_t n, cap;
} bb;

static void bb_put(bb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void bb_u8(bb *b, uint8_t v) { bb_put(b, &v, 1); }
static void bb_u32(bb *b, uint32_t v) { bb_put(b, &v, 4); }
static void bb_u64(bb *b, uint64_t v) { bb_put(b, &v, 8); }
static void bb_str(bb *b, const char *s) {
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}
static void bb_pad(bb *b, size_t a) {
    while (b->n % a) bb_u8(b, 0);
}
static void bb_header(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b->n = 0;
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}
static void bb_tensor(bb *b, const char *name, uint32_t n_dims, const uint64_t *dims, uint32_t type, uint64_t off) {
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) bb_u64(b, dims[i]);
    bb_u32(b, type);
    bb_u64(b, off);
}
static void bb_zeros(bb *b, size_t n) {
    for (size_t i = 0; i < n; i++) bb_u8(b, 0);
}

static void expect_bad_code(const bb *b, orc_status code, const char *needle) {
    orc_error err = {0};
    orc_gguf_file *f = orc_gguf_parse(b->p, b->n, "bad.gguf", &err);
    if (f) {
        orc_gguf_close(f);
        fail_msg("a malformed image was accepted (expected '%s')", needle);
    }
    if (err.code != code) fail_msg("code %d, expected %d: %s", (int)err.code, (int)code, err.msg);
    if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
    if (!strstr(err.msg, "bad.gguf")) fail_msg("message '%s' does not name the file", err.msg);
}

static void expect_bad(const bb *b, const char *needle) { expect_bad_code(b, ORC_EFORMAT, needle); }

static orc_gguf_file *parse_ok(const bb *b) {
    orc_error err = {0};
    orc_gguf_file *f = orc_gguf_parse(b->p, b->n, "good.gguf", &err);
    ASSERT_OK(err);
    assert_non_null(f);
    return f;
}

/* ---- the type table and the quantizers ----------------------------------------------- */

static void test_type_table(void **state) {
    (void)state;
    assert_int_equal(orc_ggml_block_size(ORC_GGML_F32), 1);
    assert_int_equal(orc_ggml_type_size(ORC_GGML_F16), 2);
    assert_int_equal(orc_ggml_block_size(ORC_GGML_Q4_0), 32);
    assert_int_equal(orc_ggml_type_size(ORC_GGML_Q4_0), 18);
    assert_int_equal(orc_ggml_block_size(ORC_GGML_Q8_0), 32);
    assert_int_equal(orc_ggml_type_size(ORC_GGML_Q8_0), 34);
    assert_int_equal(orc_ggml_type_size(ORC_GGML_BF16), 2);
    assert_int_equal(orc_ggml_type_size(ORC_GGML_Q6_K), 210);
    assert_int_equal(orc_ggml_block_size(ORC_GGML_Q6_K), 256);
    assert_string_equal(orc_ggml_type_name(ORC_GGML_Q8_0), "Q8_0");
    assert_false(orc_ggml_type_known((orc_ggml_type)4)); /* Q4_2, removed */
    assert_false(orc_ggml_type_known((orc_ggml_type)31));
    assert_false(orc_ggml_type_known(ORC_GGML_TYPE_COUNT));
    assert_string_equal(orc_ggml_type_name((orc_ggml_type)99), "?");
    size_t n = 0;
    orc_error err = {0};
    assert_int_equal(orc_ggml_nbytes(ORC_GGML_Q8_0, 96, &n, &err), ORC_OK);
    assert_int_equal(n, 3 * 34);
    assert_int_equal(orc_ggml_nbytes(ORC_GGML_Q4_0, 33, &n, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_ggml_nbytes(ORC_GGML_F64, INT64_MAX / 4, &n, &err), ORC_ERANGE);
    assert_string_equal(orc_gguf_vtype_name(ORC_GGUF_FLOAT64), "FLOAT64");
    assert_int_equal(orc_gguf_vtype_size(ORC_GGUF_STRING), 0);
}

static void test_q8_0_blocks(void **state) {
    (void)state;
    /* Block 0: amax 127, so d = 1 (f16 0x3c00) and q = round(x), halves away from 0.
     * Block 1: amax 254, d = 2 (0x4000), q = round(x / 2).
     * Block 2: all zero, d = 0, q = 0. */
    float x[96] = {0};
    int8_t want[96] = {0};
    const float b0[8] = {127, -127, 2.5f, -2.5f, 0.49f, -0.51f, 1.5f, 100.2f};
    const int8_t q0[8] = {127, -127, 3, -3, 0, -1, 2, 100};
    const float b1[6] = {254, 3, 5, -3, -1, 0.9f};
    const int8_t q1[6] = {127, 2, 3, -2, -1, 0};
    memcpy(x, b0, sizeof b0);
    memcpy(want, q0, sizeof q0);
    memcpy(x + 32, b1, sizeof b1);
    memcpy(want + 32, q1, sizeof q1);
    uint8_t got[3 * 34];
    orc_error err = {0};
    assert_int_equal(orc_ggml_quantize(ORC_GGML_Q8_0, x, got, 96, &err), ORC_OK);
    const uint16_t d[3] = {0x3c00, 0x4000, 0x0000};
    for (int b = 0; b < 3; b++) {
        uint16_t h;
        memcpy(&h, got + 34 * b, 2);
        assert_int_equal(h, d[b]);
        for (int j = 0; j < 32; j++) assert_int_equal((int8_t)got[34 * b + 2 + j], want[32 * b + j]);
    }
    float back[96];
    assert_int_equal(orc_ggml_dequantize(ORC_GGML_Q8_0, got, back, 96, &err), ORC_OK);
    for (int i = 0; i < 96; i++) assert_true(back[i] == (float)want[i] * (i < 32 ? 1.0f : i < 64 ? 2.0f : 0.0f));
    /* A non-trivial scale: amax 16 gives d = 16/127, stored as f16 0x3008. */
    float y[32];
    for (int j = 0; j < 32; j++) y[j] = (float)j - 16;
    assert_int_equal(orc_ggml_quantize(ORC_GGML_Q8_0, y, got, 32, &err), ORC_OK);
    uint16_t h;
    memcpy(&h, got, 2);
    assert_int_equal(h, 0x3008);
    assert_int_equal((int8_t)got[2], -127);                        /* -16 * 127/16 */
    assert_int_equal((int8_t)got[2 + 31], 119);                    /* 15 * 7.9375 = 119.06 */
    assert_int_equal((int8_t)got[2 + 17], 8);                      /* 1 * 7.9375 */
    assert_int_equal(orc_ggml_quantize(ORC_GGML_Q8_0, y, got, 31, &err), ORC_EINVAL);
}

static void test_q4_0_blocks(void **state) {
    (void)state;
    /* Block 0: the largest magnitude is -8, so d = -8 / -8 = 1 (0x3c00), q = min(15, (int)(x + 8.5)).
     * Block 1: the largest magnitude is +16 (it beats -16 by coming first), d = -2 (0xc000),
     * q = min(15, (int)(-x / 2 + 8.5)). */
    float x[64] = {0};
    uint8_t q[64];
    const float b0[8] = {-8, 7, 7.4f, -0.5f, -0.6f, 0.49f, 3.2f, -7.6f};
    const uint8_t q0[8] = {0, 15, 15, 8, 7, 8, 11, 0};
    memcpy(x, b0, sizeof b0);
    for (int j = 8; j < 32; j++) q[j] = 8; /* zeros */
    memcpy(q, q0, sizeof q0);
    x[16] = 7.0f; /* a high nibble */
    q[16] = 15;
    const float b1[5] = {16, -16, 1, -3, 0};
    const uint8_t q1[5] = {0, 15, 8, 10, 8};
    memcpy(x + 32, b1, sizeof b1);
    for (int j = 32; j < 64; j++) q[j] = 8;
    memcpy(q + 32, q1, sizeof q1);
    x[32 + 20] = -16.0f; /* 16.5 -> 16 -> clamped to 15 */
    q[32 + 20] = 15;
    uint8_t got[2 * 18];
    orc_error err = {0};
    assert_int_equal(orc_ggml_quantize(ORC_GGML_Q4_0, x, got, 64, &err), ORC_OK);
    const uint16_t d[2] = {0x3c00, 0xc000};
    for (int b = 0; b < 2; b++) {
        uint16_t h;
        memcpy(&h, got + 18 * b, 2);
        assert_int_equal(h, d[b]);
        for (int j = 0; j < 16; j++) {
            uint8_t byte = got[18 * b + 2 + j];
            assert_int_equal(byte & 15, q[32 * b + j]);
            assert_int_equal(byte >> 4, q[32 * b + 16 + j]);
        }
    }
    float back[64];
    assert_int_equal(orc_ggml_dequantize(ORC_GGML_Q4_0, got, back, 64, &err), ORC_OK);
    for (int i = 0; i < 64; i++) assert_true(back[i] == (float)(q[i] - 8) * (i < 32 ? 1.0f : -2.0f));
    assert_true(back[0] == -8.0f && back[1] == 7.0f && back[32] == 16.0f && back[33] == -14.0f);
    /* Non-finite input quantizes without undefined behaviour. */
    x[5] = NAN;
    assert_int_equal(orc_ggml_quantize(ORC_GGML_Q4_0, x, got, 64, &err), ORC_OK);
    assert_int_equal(orc_ggml_quantize(ORC_GGML_Q8_0, x, back, 64, &err), ORC_OK);
    assert_int_equal(orc_ggml_quantize(ORC_GGML_Q4_K, x, got, 256, &err), ORC_EUNSUPPORTED);
}

/* ---- round trips --------------------------------------------------------------------- */

enum { N_VOCAB = 40000 };

static void test_roundtrip_kvs(void **state) {
    (void)state;
    orc_error err = {0};
    orc_gguf_writer *w = orc_gguf_writer_new(&err);
    assert_non_null(w);
    char **vocab = malloc(N_VOCAB * sizeof *vocab);
    float *scores = malloc(N_VOCAB * sizeof *scores);
    int32_t *types = malloc(N_VOCAB * sizeof *types);
    for (int i = 0; i < N_VOCAB; i++) {
        vocab[i] = malloc(16);
        snprintf(vocab[i], 16, i == 7 ? "" : "tok%d", i);
        scores[i] = -(float)i * 0.25f;
        types[i] = i % 6;
    }
    const bool flags[3] = {true, false, true};
    const uint8_t bytes[4] = {0, 1, 254, 255};
    const int64_t big[2] = {INT64_MIN, INT64_MAX};
    const double dbl[2] = {0.1, -1e300};
    assert_int_equal(orc_gguf_add_u8(w, "u8", 200, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_i8(w, "i8", -100, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_u16(w, "u16", 65535, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_i16(w, "i16", -32768, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_u32(w, "u32", 4000000000u, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_i32(w, "i32", -7, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_f32(w, "f32", 0.1f, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_bool(w, "bool", true, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_str(w, "general.name", "tiny \xc3\xa9", &err), ORC_OK);
    assert_int_equal(orc_gguf_add_u64(w, "u64", UINT64_MAX, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_i64(w, "i64", INT64_MIN, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_f64(w, "f64", 1e300, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_str(w, "empty", "", &err), ORC_OK);
    assert_int_equal(orc_gguf_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)vocab, N_VOCAB, &err),
                     ORC_OK);
    assert_int_equal(orc_gguf_add_arr(w, "tokenizer.ggml.scores", ORC_GGUF_FLOAT32, scores, N_VOCAB, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_arr(w, "tokenizer.ggml.token_type", ORC_GGUF_INT32, types, N_VOCAB, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_arr(w, "flags", ORC_GGUF_BOOL, flags, 3, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_arr(w, "bytes", ORC_GGUF_UINT8, bytes, 4, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_arr(w, "big", ORC_GGUF_INT64, big, 2, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_arr(w, "dbl", ORC_GGUF_FLOAT64, dbl, 2, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_arr(w, "none", ORC_GGUF_UINT16, NULL, 0, &err), ORC_OK);
    ASSERT_OK(err);
    char path[256];
    assert_int_equal(orc_gguf_write(w, orc_test_scratch_path(path, sizeof path, "kvs.gguf"), &err), ORC_OK);
    orc_gguf_writer_free(w);

    orc_gguf_file *f = orc_gguf_open(path, &err);
    ASSERT_OK(err);
    assert_int_equal(orc_gguf_version(f), 3);
    assert_int_equal(orc_gguf_alignment(f), 32);
    assert_int_equal(orc_gguf_kv_count(f), 21);
    assert_string_equal(orc_gguf_kv_key(orc_gguf_kv_at(f, 0)), "u8"); /* file order */
    assert_string_equal(orc_gguf_kv_key(orc_gguf_kv_at(f, 20)), "none");
    assert_null(orc_gguf_kv_at(f, 21));
    assert_null(orc_gguf_find_kv(f, "nope"));
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f32;
    double f64;
    bool b;
    const char *s;
    size_t len;
    assert_int_equal(orc_gguf_get_u32(f, "u8", &u32, &err), ORC_OK);
    assert_int_equal(u32, 200);
    assert_int_equal(orc_gguf_get_i32(f, "i8", &i32, &err), ORC_OK);
    assert_int_equal(i32, -100);
    assert_int_equal(orc_gguf_get_u32(f, "u16", &u32, &err), ORC_OK);
    assert_int_equal(u32, 65535);
    assert_int_equal(orc_gguf_get_i32(f, "i16", &i32, &err), ORC_OK);
    assert_int_equal(i32, -32768);
    assert_int_equal(orc_gguf_get_u32(f, "u32", &u32, &err), ORC_OK);
    assert_int_equal(u32, 4000000000u);
    assert_int_equal(orc_gguf_get_i64(f, "u32", &i64, &err), ORC_OK);
    assert_int_equal(i64, 4000000000ll);
    assert_int_equal(orc_gguf_get_f32(f, "f32", &f32, &err), ORC_OK);
    assert_true(f32 == 0.1f);
    assert_int_equal(orc_gguf_get_f32(f, "i32", &f32, &err), ORC_OK);
    assert_true(f32 == -7.0f);
    assert_int_equal(orc_gguf_get_bool(f, "bool", &b, &err), ORC_OK);
    assert_true(b);
    assert_int_equal(orc_gguf_get_str(f, "general.name", &s, &len, &err), ORC_OK);
    assert_string_equal(s, "tiny \xc3\xa9");
    assert_int_equal(len, 7);
    assert_int_equal(orc_gguf_get_str(f, "empty", &s, &len, &err), ORC_OK);
    assert_string_equal(s, "");
    assert_int_equal(orc_gguf_get_u64(f, "u64", &u64, &err), ORC_OK);
    assert_true(u64 == UINT64_MAX);
    assert_int_equal(orc_gguf_get_i64(f, "i64", &i64, &err), ORC_OK);
    assert_true(i64 == INT64_MIN);
    assert_int_equal(orc_gguf_get_f64(f, "f64", &f64, &err), ORC_OK);
    assert_true(f64 == 1e300);
    assert_int_equal(orc_gguf_get_f64(f, "f32", &f64, &err), ORC_OK);
    assert_true(f64 == (double)0.1f);
    ASSERT_OK(err);

    /* Conversion refusals name the key. */
    assert_int_equal(orc_gguf_get_u32(f, "i32", &u32, &err), ORC_ERANGE);
    assert_non_null(strstr(err.msg, "'i32'"));
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_i32(f, "u32", &i32, &err), ORC_ERANGE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_i64(f, "u64", &i64, &err), ORC_ERANGE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_u64(f, "i64", &u64, &err), ORC_ERANGE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_f32(f, "f64", &f32, &err), ORC_ERANGE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_u32(f, "f32", &u32, &err), ORC_EDTYPE);
    assert_non_null(strstr(err.msg, "FLOAT32"));
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_u32(f, "bool", &u32, &err), ORC_EDTYPE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_bool(f, "u8", &b, &err), ORC_EDTYPE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_str(f, "u8", &s, &len, &err), ORC_EDTYPE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_u32(f, "tokenizer.ggml.tokens", &u32, &err), ORC_EDTYPE);
    assert_non_null(strstr(err.msg, "ARRAY of STRING"));
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_u32(f, "missing.key", &u32, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "missing.key"));
    assert_non_null(strstr(err.msg, "kvs.gguf"));
    orc_error_clear(&err);

    /* Arrays. */
    const orc_gguf_kv *tok = orc_gguf_find_kv(f, "tokenizer.ggml.tokens");
    assert_int_equal(orc_gguf_kv_type(tok), ORC_GGUF_ARRAY);
    assert_int_equal(orc_gguf_kv_elem_type(tok), ORC_GGUF_STRING);
    assert_int_equal(orc_gguf_kv_len(tok), N_VOCAB);
    for (uint64_t i = 0; i < N_VOCAB; i++) {
        assert_string_equal(orc_gguf_kv_arr_str(tok, i, &len), vocab[i]);
        assert_int_equal(len, strlen(vocab[i]));
    }
    assert_null(orc_gguf_kv_arr_str(tok, N_VOCAB, NULL));
    assert_null(orc_gguf_kv_arr_data(tok));
    float *sc = malloc(N_VOCAB * sizeof *sc);
    int32_t *ty = malloc(N_VOCAB * sizeof *ty);
    assert_int_equal(orc_gguf_get_arr_f32(f, "tokenizer.ggml.scores", sc, N_VOCAB, &err), ORC_OK);
    assert_memory_equal(sc, scores, N_VOCAB * sizeof *sc);
    assert_int_equal(orc_gguf_get_arr_i32(f, "tokenizer.ggml.token_type", ty, N_VOCAB, &err), ORC_OK);
    assert_memory_equal(ty, types, N_VOCAB * sizeof *ty);
    assert_int_equal(orc_gguf_get_arr_f32(f, "tokenizer.ggml.token_type", sc, N_VOCAB, &err), ORC_OK);
    assert_true(sc[5] == 5.0f);
    assert_int_equal(orc_gguf_get_arr_i32(f, "tokenizer.ggml.scores", ty, N_VOCAB, &err), ORC_EDTYPE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_arr_f32(f, "tokenizer.ggml.scores", sc, 3, &err), ORC_ESHAPE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_arr_f32(f, "tokenizer.ggml.tokens", sc, N_VOCAB, &err), ORC_EDTYPE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_get_arr_f32(f, "u8", sc, 1, &err), ORC_EDTYPE);
    orc_error_clear(&err);
    int32_t fl[3];
    assert_int_equal(orc_gguf_get_arr_i32(f, "flags", fl, 3, &err), ORC_OK);
    assert_true(fl[0] == 1 && fl[1] == 0 && fl[2] == 1);
    assert_memory_equal(orc_gguf_kv_arr_data(orc_gguf_find_kv(f, "bytes")), bytes, 4);
    int32_t bi[2];
    assert_int_equal(orc_gguf_get_arr_i32(f, "big", bi, 2, &err), ORC_ERANGE);
    orc_error_clear(&err);
    float df[2];
    assert_int_equal(orc_gguf_get_arr_f32(f, "dbl", df, 2, &err), ORC_OK);
    assert_true(df[0] == 0.1f && isinf(df[1]));
    assert_int_equal(orc_gguf_get_arr_f32(f, "none", df, 0, &err), ORC_OK);
    assert_int_equal(orc_gguf_kv_len(orc_gguf_find_kv(f, "none")), 0);
    assert_int_equal(orc_gguf_kv_len(orc_gguf_find_kv(f, "u8")), 1);
    assert_int_equal(orc_gguf_kv_elem_type(orc_gguf_find_kv(f, "u8")), ORC_GGUF_VTYPE_COUNT);
    ASSERT_OK(err);
    orc_gguf_close(f);
    for (int i = 0; i < N_VOCAB; i++) free(vocab[i]);
    free(vocab);
    free(scores);
    free(types);
    free(sc);
    free(ty);
}

static void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = sinf((float)i * 0.71f + 0.3f) * scale;
}

/* Writes tensors of every readable type (plus raw bytes of an unsupported one)
 * with the given alignment (0: default), reads them back and checks values,
 * dims, offsets and alignment. */
static void roundtrip_tensors(uint32_t alignment) {
    orc_error err = {0};
    orc_gguf_writer *w = orc_gguf_writer_new(&err);
    if (alignment) assert_int_equal(orc_gguf_add_u32(w, "general.alignment", alignment, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_str(w, "general.architecture", "llama", &err), ORC_OK);
    float a[6], q8[2 * 64], q4[3 * 32], h[5], bf[7];
    fill(a, 6, 3.0f);
    fill(q8, 128, 2.0f);
    fill(q4, 96, 0.5f);
    fill(h, 5, 100.0f);
    fill(bf, 7, 1e6f);
    uint8_t q4raw[3 * 18];
    assert_int_equal(orc_ggml_quantize(ORC_GGML_Q4_0, q4, q4raw, 96, &err), ORC_OK);
    const int32_t ints[4] = {-1, 0, 7, INT32_MAX};
    const int8_t i8s[3] = {-128, 0, 127};
    const int64_t i64s[2] = {-5, 5};
    const double f64s[2] = {0.5, -2.25};
    const float one = 42.0f;
    uint8_t k4[144];
    for (int i = 0; i < 144; i++) k4[i] = (uint8_t)i;
    assert_int_equal(orc_gguf_add_tensor(w, "a", ORC_GGML_F32, 2, ORC_SHAPE(2, 3), a, sizeof a, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor_f32(w, "q8", ORC_GGML_Q8_0, 2, ORC_SHAPE(2, 64), q8, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor(w, "q4", ORC_GGML_Q4_0, 3, ORC_SHAPE(3, 1, 32), q4raw, sizeof q4raw, &err),
                     ORC_OK);
    assert_int_equal(orc_gguf_add_tensor_f32(w, "h", ORC_GGML_F16, 1, ORC_SHAPE(5), h, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor_f32(w, "bf", ORC_GGML_BF16, 4, ORC_SHAPE(7, 1, 1, 1), bf, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor(w, "ints", ORC_GGML_I32, 1, ORC_SHAPE(4), ints, sizeof ints, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor(w, "i8", ORC_GGML_I8, 1, ORC_SHAPE(3), i8s, 3, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor(w, "i64", ORC_GGML_I64, 1, ORC_SHAPE(2), i64s, 16, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor(w, "f64", ORC_GGML_F64, 2, ORC_SHAPE(1, 2), f64s, 16, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor(w, "scalar", ORC_GGML_F32, 0, NULL, &one, 4, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor(w, "empty", ORC_GGML_F32, 2, ORC_SHAPE(0, 4), NULL, 0, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor(w, "k4", ORC_GGML_Q4_K, 1, ORC_SHAPE(256), k4, sizeof k4, &err), ORC_OK);
    ASSERT_OK(err);
    char path[256];
    assert_int_equal(orc_gguf_write(w, orc_test_scratch_path(path, sizeof path, "t.gguf"), &err), ORC_OK);
    orc_gguf_writer_free(w);

    orc_gguf_file *f = orc_gguf_open(path, &err);
    ASSERT_OK(err);
    uint32_t al = alignment ? alignment : 32;
    assert_int_equal(orc_gguf_alignment(f), al);
    assert_int_equal(orc_gguf_data_offset(f) % al, 0);
    assert_int_equal(orc_gguf_tensor_count(f), 12);
    const char *order[12] = {"a", "q8", "q4", "h", "bf", "ints", "i8", "i64", "f64", "scalar", "empty", "k4"};
    size_t data_offset = orc_gguf_data_offset(f);
    const uint8_t *base = (const uint8_t *)orc_gguf_tensor_at(f, 0)->data - orc_gguf_tensor_at(f, 0)->offset -
                          data_offset;
    uint64_t next = 0;
    for (size_t i = 0; i < 12; i++) {
        const orc_gguf_tensor_info *t = orc_gguf_tensor_at(f, i);
        assert_string_equal(t->name, order[i]);
        assert_ptr_equal(orc_gguf_find_tensor(f, order[i]), t);
        assert_int_equal(t->offset % al, 0);
        assert_int_equal(t->offset, next); /* contiguous with padding, in the order added */
        assert_ptr_equal(t->data, base + data_offset + t->offset);
        next = t->offset + (t->nbytes + al - 1) / al * al;
    }
    const orc_gguf_tensor_info *t = orc_gguf_find_tensor(f, "q4");
    assert_int_equal(t->type, ORC_GGML_Q4_0);
    assert_int_equal(t->n_dims, 3);
    assert_true(t->dims[0] == 32 && t->dims[1] == 1 && t->dims[2] == 3 && t->dims[3] == 1);
    assert_true(t->shape[0] == 3 && t->shape[1] == 1 && t->shape[2] == 32);
    assert_int_equal(t->numel, 96);
    assert_int_equal(t->nbytes, 54);
    assert_memory_equal(t->data, q4raw, 54);
    t = orc_gguf_find_tensor(f, "scalar");
    assert_int_equal(t->n_dims, 0);
    assert_int_equal(t->numel, 1);
    assert_int_equal(orc_gguf_find_tensor(f, "empty")->numel, 0);
    assert_null(orc_gguf_find_tensor(f, "nope"));

    float out[128], want[128];
    assert_int_equal(orc_gguf_read_f32(f, "a", out, 6, &err), ORC_OK);
    assert_memory_equal(out, a, sizeof a);
    uint8_t q8raw[4 * 34];
    assert_int_equal(orc_ggml_quantize(ORC_GGML_Q8_0, q8, q8raw, 128, &err), ORC_OK);
    assert_memory_equal(orc_gguf_find_tensor(f, "q8")->data, q8raw, sizeof q8raw);
    assert_int_equal(orc_ggml_dequantize(ORC_GGML_Q8_0, q8raw, want, 128, &err), ORC_OK);
    assert_int_equal(orc_gguf_read_f32(f, "q8", out, 128, &err), ORC_OK);
    assert_memory_equal(out, want, 128 * sizeof(float));
    for (int i = 0; i < 128; i++) assert_true(fabsf(out[i] - q8[i]) <= 2.0f / 127 * 0.51f + 1e-3f);
    assert_int_equal(orc_gguf_read_f32(f, "q4", out, 96, &err), ORC_OK);
    /* Within half a step, or a whole step at the clamped end (q = 16 -> 15). */
    for (int i = 0; i < 96; i++) assert_true(fabsf(out[i] - q4[i]) <= 0.5f / 8 * 1.01f + 1e-3f);
    assert_int_equal(orc_gguf_read_f32(f, "h", out, 5, &err), ORC_OK);
    for (int i = 0; i < 5; i++) assert_true(out[i] == orc_st_f16_to_f32(orc_st_f32_to_f16(h[i])));
    assert_int_equal(orc_gguf_read_f32(f, "bf", out, 7, &err), ORC_OK);
    for (int i = 0; i < 7; i++) assert_true(out[i] == orc_st_bf16_to_f32(orc_st_f32_to_bf16(bf[i])));
    assert_int_equal(orc_gguf_read_f32(f, "f64", out, 2, &err), ORC_OK);
    assert_true(out[0] == 0.5f && out[1] == -2.25f);
    assert_int_equal(orc_gguf_read_f32(f, "scalar", out, 1, &err), ORC_OK);
    assert_true(out[0] == 42.0f);
    assert_int_equal(orc_gguf_read_f32(f, "empty", out, 0, &err), ORC_OK);
    int32_t io[4];
    assert_int_equal(orc_gguf_read_i32(f, "ints", io, 4, &err), ORC_OK);
    assert_memory_equal(io, ints, sizeof ints);
    assert_int_equal(orc_gguf_read_i32(f, "i8", io, 3, &err), ORC_OK);
    assert_true(io[0] == -128 && io[2] == 127);
    assert_int_equal(orc_gguf_read_i32(f, "i64", io, 2, &err), ORC_OK);
    assert_true(io[0] == -5 && io[1] == 5);
    ASSERT_OK(err);
    assert_memory_equal(orc_gguf_find_tensor(f, "k4")->data, k4, 144);
    assert_int_equal(orc_gguf_read_f32(f, "k4", out, 256, &err), ORC_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "Q4_K"));
    assert_non_null(strstr(err.msg, "'k4'"));
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_read_f32(f, "ints", out, 4, &err), ORC_EDTYPE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_read_i32(f, "a", io, 6, &err), ORC_EDTYPE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_read_f32(f, "a", out, 5, &err), ORC_ESHAPE);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_read_f32(f, "zzz", out, 5, &err), ORC_EFORMAT);
    orc_error_clear(&err);

    /* Into orchard tensors, row-major shapes. */
    orc_arena *ar = orc_arena_create(0);
    orc_tensor *dst = orc_tensor_new(ar, ORC_F32, 2, ORC_SHAPE(2, 64), &err);
    assert_int_equal(orc_gguf_read_into(f, "q8", dst, &err), ORC_OK);
    assert_memory_equal(dst->data, want, 128 * sizeof(float));
    orc_tensor *wrong = orc_tensor_new(ar, ORC_F32, 2, ORC_SHAPE(64, 2), &err);
    assert_int_equal(orc_gguf_read_into(f, "q8", wrong, &err), ORC_ESHAPE);
    assert_non_null(strstr(err.msg, "[2, 64]"));
    orc_error_clear(&err);
    orc_tensor *it = orc_tensor_new(ar, ORC_I32, 1, ORC_SHAPE(4), &err);
    assert_int_equal(orc_gguf_read_into(f, "ints", it, &err), ORC_OK);
    assert_memory_equal(it->data, ints, sizeof ints);
    orc_arena_destroy(ar);
    orc_gguf_close(f);
}

static void test_roundtrip_tensors_default_alignment(void **state) {
    (void)state;
    roundtrip_tensors(0);
}

static void test_roundtrip_tensors_custom_alignment(void **state) {
    (void)state;
    roundtrip_tensors(64);
    roundtrip_tensors(1);
    roundtrip_tensors(4096);
}

/* ---- a file spelled out byte by byte ---------------------------------------------------- */

/* version, 1 kv (general.architecture = "llama"), tensor "w": F32, row-major
 * shape [2, 1] (ggml dims [1, 2]), values 1.0 and -2.5, at offset 0. */
static void hand_file(bb *b, uint32_t version) {
    bb_header(b, version, 1, 1);
    bb_str(b, "general.architecture");
    bb_u32(b, ORC_GGUF_STRING);
    bb_str(b, "llama");
    bb_tensor(b, "w", 2, (const uint64_t[]){1, 2}, ORC_GGML_F32, 0);
    bb_pad(b, 32);
    const float v[2] = {1.0f, -2.5f};
    bb_put(b, v, 8);
    bb_pad(b, 32);
}

static void test_hand_built_file(void **state) {
    (void)state;
    bb b = {0};
    hand_file(&b, 3);
    /* Spelled out: the fields above at their byte positions. */
    static const uint8_t expect_start[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0,
                                           0, 0, 20, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(b.p, expect_start, sizeof expect_start);
    /* header 24, key 28 + type 4 + value 13, tensor info 9 + 4 + 16 + 4 + 8: 110 bytes, padded to 128;
     * data 8 bytes, padded to 32. */
    assert_int_equal(b.n, 160);
    orc_gguf_file *f = parse_ok(&b);
    assert_int_equal(orc_gguf_data_offset(f), 128);
    const orc_gguf_tensor_info *t = orc_gguf_find_tensor(f, "w");
    assert_true(t->shape[0] == 2 && t->shape[1] == 1);
    float out[2];
    orc_error err = {0};
    assert_int_equal(orc_gguf_read_f32(f, "w", out, 2, &err), ORC_OK);
    assert_true(out[0] == 1.0f && out[1] == -2.5f);
    const char *arch;
    assert_int_equal(orc_gguf_get_str(f, "general.architecture", &arch, NULL, &err), ORC_OK);
    assert_string_equal(arch, "llama");
    orc_gguf_close(f);

    /* The writer produces exactly these bytes. */
    orc_gguf_writer *w = orc_gguf_writer_new(&err);
    const float v[2] = {1.0f, -2.5f};
    assert_int_equal(orc_gguf_add_str(w, "general.architecture", "llama", &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor(w, "w", ORC_GGML_F32, 2, ORC_SHAPE(2, 1), v, 8, &err), ORC_OK);
    char path[256];
    assert_int_equal(orc_gguf_write(w, orc_test_scratch_path(path, sizeof path, "hand.gguf"), &err), ORC_OK);
    orc_gguf_writer_free(w);
    size_t len;
    uint8_t *got = read_file(path, &len);
    assert_int_equal(len, b.n);
    assert_memory_equal(got, b.p, b.n);
    free(got);

    /* Version 2 has the same layout. */
    hand_file(&b, 2);
    f = parse_ok(&b);
    assert_int_equal(orc_gguf_version(f), 2);
    assert_int_equal(orc_gguf_read_f32(f, "w", out, 2, &err), ORC_OK);
    assert_true(out[1] == -2.5f);
    orc_gguf_close(f);

    /* Metadata only, the file ends right after the key/values (no padding). */
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, ORC_GGUF_UINT8);
    bb_u8(&b, 9);
    f = parse_ok(&b);
    assert_int_equal(orc_gguf_kv_count(f), 1);
    orc_gguf_close(f);
    free(b.p);
}

static void test_nested_arrays(void **state) {
    (void)state;
    bb b = {0};
    /* [[1, 2], [], [3]] as UINT16. */
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "nest");
    bb_u32(&b, ORC_GGUF_ARRAY);
    bb_u32(&b, ORC_GGUF_ARRAY);
    bb_u64(&b, 3);
    const uint16_t vals[3] = {1, 2, 3};
    bb_u32(&b, ORC_GGUF_UINT16);
    bb_u64(&b, 2);
    bb_put(&b, vals, 4);
    bb_u32(&b, ORC_GGUF_UINT16);
    bb_u64(&b, 0);
    bb_u32(&b, ORC_GGUF_UINT16);
    bb_u64(&b, 1);
    bb_put(&b, vals + 2, 2);
    orc_gguf_file *f = parse_ok(&b);
    const orc_gguf_kv *kv = orc_gguf_find_kv(f, "nest");
    assert_int_equal(orc_gguf_kv_elem_type(kv), ORC_GGUF_ARRAY);
    assert_int_equal(orc_gguf_kv_len(kv), 3);
    const orc_gguf_kv *s0 = orc_gguf_kv_arr_sub(kv, 0), *s2 = orc_gguf_kv_arr_sub(kv, 2);
    assert_string_equal(orc_gguf_kv_key(s0), "nest");
    assert_int_equal(orc_gguf_kv_len(s0), 2);
    assert_int_equal(orc_gguf_kv_len(orc_gguf_kv_arr_sub(kv, 1)), 0);
    assert_null(orc_gguf_kv_arr_sub(kv, 3));
    int32_t got[2];
    orc_error err = {0};
    assert_int_equal(orc_gguf_kv_arr_i32(s0, got, 2, &err), ORC_OK);
    assert_true(got[0] == 1 && got[1] == 2);
    assert_int_equal(orc_gguf_kv_arr_i32(s2, got, 1, &err), ORC_OK);
    assert_true(got[0] == 3);
    orc_gguf_close(f);

    /* Depth: ORC_GGUF_MAX_DEPTH levels read, one more is refused. */
    for (int depth = ORC_GGUF_MAX_DEPTH; depth <= ORC_GGUF_MAX_DEPTH + 1; depth++) {
        bb_header(&b, 3, 0, 1);
        bb_str(&b, "deep");
        bb_u32(&b, ORC_GGUF_ARRAY);
        for (int d = 1; d < depth; d++) {
            bb_u32(&b, ORC_GGUF_ARRAY);
            bb_u64(&b, 1);
        }
        bb_u32(&b, ORC_GGUF_INT8);
        bb_u64(&b, 1);
        bb_u8(&b, 5);
        if (depth == ORC_GGUF_MAX_DEPTH) {
            f = parse_ok(&b);
            orc_gguf_close(f);
        } else {
            expect_bad(&b, "nested more than");
        }
    }
    free(b.p);
}

/* ---- malformed files ---------------------------------------------------------------------- */

static void kv_u32(bb *b, const char *key, uint32_t v) {
    bb_str(b, key);
    bb_u32(b, ORC_GGUF_UINT32);
    bb_u32(b, v);
}

static void test_malformed_header_and_kvs(void **state) {
    (void)state;
    bb b = {0};
    bb_put(&b, "GGU", 3);
    expect_bad(&b, "not a GGUF file");
    b.n = 0;
    bb_put(&b, "GGML", 4);
    bb_zeros(&b, 20);
    expect_bad(&b, "not a GGUF file");
    bb_header(&b, 3, 0, 0);
    b.n = 20;
    expect_bad(&b, "too short for the 24-byte header");
    bb_header(&b, 1, 0, 0);
    expect_bad_code(&b, ORC_EUNSUPPORTED, "version 1");
    bb_header(&b, 7, 0, 0);
    expect_bad(&b, "unknown GGUF version 7");
    bb_header(&b, 0x03000000u, 0, 0);
    expect_bad_code(&b, ORC_EUNSUPPORTED, "big-endian");
    bb_header(&b, 3, 0, 1ull << 60);
    expect_bad(&b, "claims 1152921504606846976 key/values");
    bb_header(&b, 3, 1ull << 60, 0);
    expect_bad(&b, "claims 1152921504606846976 tensors");
    bb_header(&b, 3, 1, 0);
    bb_zeros(&b, 23);
    expect_bad(&b, "claims 1 tensors");

    /* Key length past the end, empty key, key with NUL. */
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 1000);
    bb_zeros(&b, 10);
    expect_bad(&b, "key of key/value 0 of 1000 bytes");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "");
    bb_u32(&b, ORC_GGUF_UINT8);
    bb_u8(&b, 0);
    bb_zeros(&b, 8);
    expect_bad(&b, "empty name");
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, ORC_GGUF_UINT8);
    bb_u8(&b, 0);
    expect_bad(&b, "NUL byte");
    /* Unknown value type; unknown element type. */
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, 13);
    bb_u8(&b, 0);
    expect_bad(&b, "key 'k': unknown value type 13");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, ORC_GGUF_ARRAY);
    bb_u32(&b, 77);
    bb_u64(&b, 0);
    expect_bad(&b, "unknown array element type 77");
    /* Value truncated; string value length past the end; absurd array counts. */
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, ORC_GGUF_UINT64);
    bb_u32(&b, 5);
    bb_zeros(&b, 1);
    expect_bad(&b, "UINT64 value at byte");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, ORC_GGUF_STRING);
    bb_u64(&b, UINT64_MAX);
    expect_bad(&b, "string value of 18446744073709551615 bytes");
    for (uint32_t et = 0; et < ORC_GGUF_VTYPE_COUNT; et++) {
        bb_header(&b, 3, 0, 1);
        bb_str(&b, "arr");
        bb_u32(&b, ORC_GGUF_ARRAY);
        bb_u32(&b, et);
        bb_u64(&b, UINT64_MAX / 2);
        bb_zeros(&b, 64);
        expect_bad(&b, "array of 9223372036854775807");
    }
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, ORC_GGUF_ARRAY);
    bb_u32(&b, ORC_GGUF_STRING);
    bb_u64(&b, 2);
    bb_str(&b, "ok");
    bb_u64(&b, 5);
    bb_put(&b, "abc", 3);
    expect_bad(&b, "string element of 5 bytes");
    /* Bools other than 0/1. */
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "b");
    bb_u32(&b, ORC_GGUF_BOOL);
    bb_u8(&b, 2);
    expect_bad(&b, "BOOL value 2");
    /* Duplicate keys. */
    bb_header(&b, 3, 0, 3);
    kv_u32(&b, "x", 1);
    kv_u32(&b, "y", 1);
    kv_u32(&b, "x", 2);
    expect_bad(&b, "key 'x': duplicate key");
    /* Alignment: not a power of two, zero, wrong type. */
    const uint32_t bad_align[2] = {48, 0};
    for (int i = 0; i < 2; i++) {
        bb_header(&b, 3, 0, 1);
        kv_u32(&b, "general.alignment", bad_align[i]);
        expect_bad(&b, "is not a power of two");
    }
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, ORC_GGUF_INT32);
    bb_u32(&b, 32);
    expect_bad(&b, "must be UINT32");
    free(b.p);
}

/* One tensor with the given fields; data_bytes zero bytes after the padding. */
static void one_tensor(bb *b, const char *name, uint32_t n_dims, const uint64_t *dims, uint32_t type, uint64_t off,
                       size_t data_bytes) {
    bb_header(b, 3, 1, 0);
    bb_tensor(b, name, n_dims, dims, type, off);
    bb_pad(b, 32);
    bb_zeros(b, data_bytes);
}

static void test_malformed_tensors(void **state) {
    (void)state;
    bb b = {0};
    const uint64_t d4[5] = {4, 1, 1, 1, 1};
    one_tensor(&b, "t", 5, d4, ORC_GGML_F32, 0, 64);
    expect_bad(&b, "tensor 't': 5 dimensions");
    one_tensor(&b, "t", 2, (const uint64_t[]){4, 1ull << 63}, ORC_GGML_F32, 0, 64);
    expect_bad(&b, "over the int64 range");
    one_tensor(&b, "t", 3, (const uint64_t[]){1ull << 30, 1ull << 30, 1ull << 30}, ORC_GGML_F32, 0, 64);
    expect_bad(&b, "too many elements");
    one_tensor(&b, "t", 2, (const uint64_t[]){1ull << 31, 1ull << 31}, ORC_GGML_F64, 0, 64);
    expect_bad(&b, "too many bytes");
    one_tensor(&b, "t", 1, d4, 4, 0, 64);
    expect_bad(&b, "unknown ggml type 4");
    one_tensor(&b, "t", 1, d4, 1000, 0, 64);
    expect_bad(&b, "unknown ggml type 1000");
    one_tensor(&b, "t", 1, (const uint64_t[]){16}, ORC_GGML_Q8_0, 0, 64);
    expect_bad(&b, "not a multiple of the Q8_0 block size 32");
    one_tensor(&b, "t", 1, d4, ORC_GGML_F32, 8, 64);
    expect_bad(&b, "offset 8 is not a multiple of the alignment 32");
    one_tensor(&b, "t", 1, d4, ORC_GGML_F32, 0, 15);
    expect_bad(&b, "run past the end of the 15-byte data section");
    one_tensor(&b, "t", 1, d4, ORC_GGML_F32, 1ull << 62, 64);
    expect_bad(&b, "run past the end");
    one_tensor(&b, "t", 1, d4, ORC_GGML_F32, 0, 0);
    expect_bad(&b, "run past the end of the 0-byte data section");
    /* Name past the end, empty name. */
    bb_header(&b, 3, 1, 0);
    bb_u64(&b, 100);
    bb_zeros(&b, 30);
    expect_bad(&b, "name of tensor 0 of 100 bytes");
    one_tensor(&b, "", 1, d4, ORC_GGML_F32, 0, 64);
    expect_bad(&b, "tensor 0 has an empty name");
    /* Truncated infos. */
    bb_header(&b, 3, 1, 0);
    bb_tensor(&b, "t", 4, d4, ORC_GGML_F32, 0);
    b.n -= 20;
    bb_zeros(&b, 8); /* keeps 24 bytes for the count check */
    b.n -= 8;
    expect_bad(&b, "tensor 't'");
    /* Overlap and duplicate names. */
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "a", 1, (const uint64_t[]){16}, ORC_GGML_F32, 0);
    bb_tensor(&b, "b", 1, (const uint64_t[]){4}, ORC_GGML_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_bad(&b, "tensor 'b': data at offset 32 overlaps tensor 'a'");
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "a", 1, d4, ORC_GGML_F32, 0);
    bb_tensor(&b, "a", 1, d4, ORC_GGML_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_bad(&b, "tensor 'a': duplicate tensor name");
    /* A hole and out-of-order offsets are allowed; so are zero-size tensors anywhere. */
    bb_header(&b, 3, 3, 0);
    bb_tensor(&b, "late", 1, d4, ORC_GGML_F32, 64);
    bb_tensor(&b, "early", 1, d4, ORC_GGML_F32, 0);
    bb_tensor(&b, "none", 2, (const uint64_t[]){4, 0}, ORC_GGML_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 80);
    orc_gguf_file *f = parse_ok(&b);
    assert_int_equal(orc_gguf_find_tensor(f, "late")->offset, 64);
    orc_gguf_close(f);
    free(b.p);
}

/* Every prefix of a valid file either fails with a message or (once all
 * tensor data is present) parses. */
static void test_truncation_everywhere(void **state) {
    (void)state;
    orc_error err = {0};
    orc_gguf_writer *w = orc_gguf_writer_new(&err);
    const char *toks[3] = {"a", "bb", "ccc"};
    const float v[64] = {1, 2, 3};
    assert_int_equal(orc_gguf_add_arr_str(w, "toks", toks, 3, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_f32(w, "eps", 1e-5f, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor(w, "x", ORC_GGML_F32, 1, ORC_SHAPE(5), v, 20, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_tensor_f32(w, "q", ORC_GGML_Q8_0, 1, ORC_SHAPE(64), v, &err), ORC_OK);
    char path[256];
    assert_int_equal(orc_gguf_write(w, orc_test_scratch_path(path, sizeof path, "trunc.gguf"), &err), ORC_OK);
    orc_gguf_writer_free(w);
    size_t len;
    uint8_t *full = read_file(path, &len);
    orc_gguf_file *f = orc_gguf_parse(full, len, "trunc.gguf", &err);
    ASSERT_OK(err);
    const orc_gguf_tensor_info *q = orc_gguf_find_tensor(f, "q");
    size_t end = orc_gguf_data_offset(f) + q->offset + q->nbytes;
    orc_gguf_close(f);
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size, so ASan sees any over-read */
        memcpy(copy, full, n);
        orc_error e = {0};
        f = orc_gguf_parse(copy, n, "trunc.gguf", &e);
        if (n >= end) {
            if (!f) fail_msg("prefix %zu rejected: %s", n, e.msg);
        } else {
            if (f) fail_msg("prefix %zu of %zu accepted", n, len);
            assert_int_equal(e.code, ORC_EFORMAT);
            assert_non_null(strstr(e.msg, "trunc.gguf"));
        }
        orc_gguf_close(f);
        free(copy);
    }
    free(full);
}

/* ---- writing failures ------------------------------------------------------------------------- */

static void test_write_failures_leave_nothing(void **state) {
    (void)state;
    char sub[256], path[300];
    orc_test_scratch_path(sub, sizeof sub, "wf");
    assert_int_equal(mkdir(sub, 0755), 0);
    const float v[32] = {1, 2};
    orc_error err = {0};
    orc_gguf_writer *w = orc_gguf_writer_new(&err);
    assert_int_equal(orc_gguf_add_tensor(w, "x", ORC_GGML_F32, 1, ORC_SHAPE(2), v, 8, &err), ORC_OK);

    snprintf(path, sizeof path, "%s/no/such/dir/x.gguf", sub);
    assert_int_equal(orc_gguf_write(w, path, &err), ORC_EIO);
    assert_non_null(strstr(err.msg, "no/such/dir"));
    assert_int_equal(orc_test_count_entries(sub), 0);
    orc_error_clear(&err);

    snprintf(path, sizeof path, "%s/keep.gguf", sub);
    assert_int_equal(orc_gguf_write(w, path, &err), ORC_OK);
    size_t len0;
    uint8_t *before = read_file(path, &len0);

    /* Refused additions leave the builder as it was. */
    assert_int_equal(orc_gguf_add_tensor(w, "x", ORC_GGML_F32, 1, ORC_SHAPE(2), v, 8, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "duplicate"));
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_add_tensor(w, "y", ORC_GGML_F32, 1, ORC_SHAPE(2), v, 12, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "12 bytes given"));
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_add_tensor(w, "y", ORC_GGML_Q8_0, 1, ORC_SHAPE(16), v, 17, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "block size"));
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_add_tensor(w, "y", (orc_ggml_type)5, 1, ORC_SHAPE(2), v, 8, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_add_tensor(w, "y", ORC_GGML_F32, 5, ORC_SHAPE(1, 1, 1, 1, 2), v, 8, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_add_tensor(w, "y", ORC_GGML_F32, 1, ORC_SHAPE(-2), v, 8, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_add_tensor_f32(w, "y", ORC_GGML_Q4_K, 1, ORC_SHAPE(256), v, &err), ORC_EINVAL);
    orc_error_clear(&err);
    char longname[80];
    memset(longname, 'n', 64);
    longname[64] = '\0';
    assert_int_equal(orc_gguf_add_tensor(w, longname, ORC_GGML_F32, 1, ORC_SHAPE(2), v, 8, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_add_u32(w, "general.alignment", 48, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_add_i32(w, "general.alignment", 32, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_add_u8(w, "", 1, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_add_arr(w, "a", ORC_GGUF_STRING, v, 1, &err), ORC_EINVAL);
    orc_error_clear(&err);
    const uint8_t two = 2;
    assert_int_equal(orc_gguf_add_arr(w, "a", ORC_GGUF_BOOL, &two, 1, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_gguf_add_u8(w, "k", 1, &err), ORC_OK);
    assert_int_equal(orc_gguf_add_str(w, "k", "again", &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "duplicate key 'k'"));
    orc_error_clear(&err);
    orc_gguf_writer_free(w);

    /* The target is a directory: the rename fails, the temporary goes, the old file stays. */
    w = orc_gguf_writer_new(&err);
    assert_int_equal(orc_gguf_add_u8(w, "k", 1, &err), ORC_OK);
    snprintf(path, sizeof path, "%s/adir", sub);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(orc_gguf_write(w, path, &err), ORC_EIO);
    assert_non_null(strstr(err.msg, "rename"));
    orc_gguf_writer_free(w);
    assert_int_equal(orc_test_count_entries(sub), 2);
    assert_int_equal(orc_test_count_entries(path), 0);
    rmdir(path);
    snprintf(path, sizeof path, "%s/keep.gguf", sub);
    size_t len1;
    uint8_t *after = read_file(path, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    free(before);
    free(after);
    unlink(path);
    rmdir(sub);
}

/* ---- threads ------------------------------------------------------------------------------------ */

static void test_threads_bit_identical(void **state) {
    (void)state;
    enum { N = 32 * 8191 };
    float *src = malloc(N * sizeof(float)), *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
    uint8_t *qa = malloc(N * 2), *qb = malloc(N * 2);
    fill(src, N, 7.0f);
    const orc_ggml_type types[4] = {ORC_GGML_Q8_0, ORC_GGML_Q4_0, ORC_GGML_F16, ORC_GGML_BF16};
    orc_error err = {0};
    for (int k = 0; k < 4; k++) {
        omp_set_num_threads(1);
        assert_int_equal(orc_ggml_quantize(types[k], src, qa, N, &err), ORC_OK);
        assert_int_equal(orc_ggml_dequantize(types[k], qa, a, N, &err), ORC_OK);
        omp_set_num_threads(3);
        assert_int_equal(orc_ggml_quantize(types[k], src, qb, N, &err), ORC_OK);
        assert_int_equal(orc_ggml_dequantize(types[k], qb, b, N, &err), ORC_OK);
        size_t nbytes = 0;
        orc_ggml_nbytes(types[k], N, &nbytes, &err);
        assert_memory_equal(qa, qb, nbytes);
        assert_memory_equal(a, b, N * sizeof(float));
    }
    free(src);
    free(a);
    free(b);
    free(qa);
    free(qb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_q8_0_blocks),
        cmocka_unit_test(test_q4_0_blocks),
        cmocka_unit_test(test_roundtrip_kvs),
        cmocka_unit_test(test_roundtrip_tensors_default_alignment),
        cmocka_unit_test(test_roundtrip_tensors_custom_alignment),
        cmocka_unit_test(test_hand_built_file),
        cmocka_unit_test(test_nested_arrays),
        cmocka_unit_test(test_malformed_header_and_kvs),
        cmocka_unit_test(test_malformed_tensors),
        cmocka_unit_test(test_truncation_everywhere),
        cmocka_unit_test(test_write_failures_leave_nothing),
        cmocka_unit_test(test_threads_bit_identical),
    };
    return cmocka_run_group_tests(tests, orc_test_scratch_setup, orc_test_scratch_teardown);
}
