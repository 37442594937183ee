/* Token shards: round trips at both token widths, the writer's id checks and
 * atomic finish, every malformed file the reader must refuse with
 * ORC_EFORMAT naming the file, and the batch sampler's determinism, window
 * bounds and independence from the batch size. */
#include <dirent.h>
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

#include "orchard/data.h"

/* ---- helpers ------------------------------------------------------------------------ */

static int count_entries(void) { return orc_test_count_entries(orc_test_scratch); }

/* 1 if no temporary file (NAME.tmp.XXXXXX) is left in the directory. */
static int no_tmp_files(void) {
    DIR *d = opendir(orc_test_scratch);
    int ok = 1;
    struct dirent *e;
    while ((e = readdir(d))) ok &= strstr(e->d_name, ".tmp.") == NULL;
    closedir(d);
    return ok;
}

static long file_len(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Write docs (lens[d] ids each, concatenated in ids) through the writer. */
static void write_shard(const char *path, int64_t vocab, const int32_t *ids, const size_t *lens, size_t docs) {
    orc_error err = {0};
    orc_shard_writer *w = orc_shard_writer_open(path, vocab, &err);
    assert_non_null(w);
    for (size_t d = 0; d < docs; d++) {
        assert_int_equal(orc_shard_writer_add(w, ids, lens[d], &err), ORC_OK);
        ids += lens[d];
    }
    assert_int_equal(orc_shard_writer_finish(w, &err), ORC_OK);
}

/* ---- round trips -------------------------------------------------------------------- */

static void round_trip(int64_t vocab, uint32_t want_width) {
    char p[256];
    orc_test_scratch_path(p, sizeof p, "rt.bin");
    int32_t ids[40];
    for (int i = 0; i < 40; i++) ids[i] = (int32_t)((i * 7919) % vocab);
    ids[5] = (int32_t)(vocab - 1); /* the largest id survives */
    size_t lens[5] = {3, 0, 17, 1, 19}; /* an empty document too */
    write_shard(p, vocab, ids, lens, 5);
    assert_true(no_tmp_files()); /* finish renamed the temporary file */
    orc_error err = {0};
    orc_shard *s = orc_shard_open(p, vocab, &err);
    assert_non_null(s);
    const orc_shard_info *in = orc_shard_get_info(s);
    assert_int_equal(in->version, 1);
    assert_int_equal(in->width, want_width);
    assert_int_equal(in->tokens, 40);
    assert_int_equal(in->documents, 5);
    assert_int_equal(in->max_id, vocab - 1);
    assert_int_equal(in->file_bytes, 32 + 40 * want_width + 8 * 6);
    assert_int_equal(file_len(p), (long)in->file_bytes);
    for (int i = 0; i < 40; i++) assert_int_equal(orc_shard_token(s, i), ids[i]);
    uint64_t start = 0;
    for (int d = 0; d < 5; d++) {
        assert_int_equal(orc_shard_doc_start(s, d), start);
        start += lens[d];
    }
    assert_int_equal(orc_shard_doc_start(s, 5), 40);
    int32_t got[10];
    assert_int_equal(orc_shard_read(s, 30, 10, got, &err), ORC_OK);
    assert_memory_equal(got, ids + 30, sizeof got);
    assert_int_equal(orc_shard_read(s, 31, 10, got, &err), ORC_ERANGE);
    assert_non_null(strstr(err.msg, "rt.bin"));
    assert_string_equal(orc_shard_path(s), p);
    orc_shard_close(s);
}

static void test_round_trip_u16(void **state) {
    (void)state;
    round_trip(300, 2);
    round_trip(65536, 2);
}

static void test_round_trip_u32(void **state) {
    (void)state;
    round_trip(65537, 4);
    round_trip(1 << 24, 4);
}

static void test_empty_shard(void **state) {
    (void)state;
    char p[256];
    orc_test_scratch_path(p, sizeof p, "empty.bin");
    write_shard(p, 10, NULL, NULL, 0);
    orc_error err = {0};
    orc_shard *s = orc_shard_open(p, 10, &err);
    assert_non_null(s);
    assert_int_equal(orc_shard_get_info(s)->tokens, 0);
    assert_int_equal(orc_shard_get_info(s)->documents, 0);
    assert_int_equal(orc_shard_get_info(s)->max_id, -1);
    int32_t in[2], tg[2];
    assert_int_equal(orc_shard_sample_batch(s, 1, 0, 1, 2, in, tg, &err), ORC_ERANGE);
    orc_shard_close(s);
}

static void test_writer_rejects(void **state) {
    (void)state;
    char p[256];
    orc_test_scratch_path(p, sizeof p, "w.bin");
    orc_error err = {0};
    int before = count_entries();
    assert_null(orc_shard_writer_open(p, 0, &err));
    assert_int_equal(err.code, ORC_EINVAL);
    orc_error_clear(&err);
    orc_shard_writer *w = orc_shard_writer_open(p, 100, &err);
    assert_non_null(w);
    int32_t bad_hi[3] = {1, 100, 2}, bad_lo[2] = {-1, 0}, ok[2] = {0, 99};
    assert_int_equal(orc_shard_writer_add(w, bad_hi, 3, &err), ORC_ERANGE);
    assert_non_null(strstr(err.msg, "w.bin"));
    orc_error_clear(&err);
    assert_int_equal(orc_shard_writer_add(w, bad_lo, 2, &err), ORC_ERANGE);
    assert_int_equal(orc_shard_writer_add(w, ok, 2, &err), ORC_OK);
    orc_shard_writer_abort(w);
    assert_int_equal(count_entries(), before); /* abort leaves nothing, not even the target */
    assert_true(no_tmp_files());
    assert_int_equal(file_len(p), -1);
}

/* ---- malformed files ------------------------------------------------------------------ */

/* A valid width-2 shard image: 6 tokens 0..5 in documents [0,2) [2,6). */
typedef struct image {
    uint8_t b[32 + 12 + 24 + 8];
    size_t len;
} image;

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static image valid_image(void) {
    image m;
    memset(&m, 0, sizeof m);
    memcpy(m.b, "ORCHTOK", 8);
    put32(m.b + 8, 1);
    put32(m.b + 12, 2);
    put64(m.b + 16, 6);
    put64(m.b + 24, 2);
    for (int i = 0; i < 6; i++) m.b[32 + 2 * i] = (uint8_t)i;
    put64(m.b + 44, 0);
    put64(m.b + 52, 2);
    put64(m.b + 60, 6);
    m.len = 68;
    return m;
}

/* Write the image, open it with vocab, expect ORC_EFORMAT whose message names
 * the file and contains want. */
static void expect_bad(const image *m, int64_t vocab, const char *want) {
    char p[256];
    orc_test_scratch_path(p, sizeof p, "bad.bin");
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    if (m->len) assert_int_equal(fwrite(m->b, 1, m->len, fp), m->len);
    fclose(fp);
    orc_error err = {0};
    orc_shard *s = orc_shard_open(p, vocab, &err);
    if (s) fail_msg("opened a shard that should fail with '%s'", want);
    assert_int_equal(err.code, ORC_EFORMAT);
    if (!strstr(err.msg, "bad.bin") || !strstr(err.msg, want)) fail_msg("message '%s' lacks '%s'", err.msg, want);
    unlink(p);
}

static void test_valid_image_opens(void **state) {
    (void)state;
    image m = valid_image();
    char p[256];
    orc_test_scratch_path(p, sizeof p, "good.bin");
    FILE *fp = fopen(p, "wb");
    fwrite(m.b, 1, m.len, fp);
    fclose(fp);
    orc_error err = {0};
    orc_shard *s = orc_shard_open(p, 6, &err);
    if (!s) fail_msg("%s", err.msg);
    assert_int_equal(orc_shard_token(s, 5), 5);
    orc_shard_close(s);
    unlink(p);
}

static void test_malformed(void **state) {
    (void)state;
    image m = valid_image();
    m.len = 0;
    expect_bad(&m, 0, "shorter than the 32-byte header");
    m = valid_image();
    m.len = 20;
    expect_bad(&m, 0, "shorter than the 32-byte header");
    m = valid_image();
    m.b[0] = 'X';
    expect_bad(&m, 0, "bad magic");
    m = valid_image();
    m.b[7] = '!'; /* the magic's NUL is part of it */
    expect_bad(&m, 0, "bad magic");
    m = valid_image();
    put32(m.b + 8, 2);
    expect_bad(&m, 0, "version 2");
    m = valid_image();
    put32(m.b + 12, 3);
    expect_bad(&m, 0, "token width 3");
    m = valid_image();
    put32(m.b + 12, 0);
    expect_bad(&m, 0, "token width 0");
    m = valid_image();
    put64(m.b + 16, 7); /* one token more than the file holds with its offsets */
    expect_bad(&m, 0, "different length");
    m = valid_image();
    put64(m.b + 16, UINT64_MAX / 2); /* would overflow a naive size computation */
    expect_bad(&m, 0, "only 68 bytes");
    m = valid_image();
    put64(m.b + 24, 3);
    expect_bad(&m, 0, "different length");
    m = valid_image();
    put64(m.b + 24, UINT64_MAX);
    expect_bad(&m, 0, "more than 2^64");
    m = valid_image();
    m.len = 69; /* a trailing byte */
    expect_bad(&m, 0, "different length");
    m = valid_image();
    m.len = 67; /* a missing byte */
    expect_bad(&m, 0, "different length");
    m = valid_image();
    put64(m.b + 44, 1);
    expect_bad(&m, 0, "document 0 starts at 1");
    m = valid_image();
    put64(m.b + 52, 7);
    expect_bad(&m, 0, "past the end");
    m = valid_image();
    put64(m.b + 44, 0);
    put64(m.b + 52, 4);
    put64(m.b + 60, 3);
    expect_bad(&m, 0, "not monotone");
    m = valid_image();
    put64(m.b + 60, 5);
    expect_bad(&m, 0, "last document ends at 5");
    m = valid_image();
    expect_bad(&m, 5, "token 5 is id 5, not below the vocabulary size 5");
    m = valid_image();
    m.b[32 + 2] = 0xff;
    m.b[32 + 3] = 0xff;
    expect_bad(&m, 1000, "token 1 is id 65535");
}

static void test_int32_limit_and_missing(void **state) {
    (void)state;
    /* A width-4 id of 2^31 cannot be an int32 even when no vocab is given. */
    uint8_t b[32 + 4 + 16] = {0};
    memcpy(b, "ORCHTOK", 8);
    put32(b + 8, 1);
    put32(b + 12, 4);
    put64(b + 16, 1);
    put64(b + 24, 1);
    put32(b + 32, 0x80000000u);
    put64(b + 36, 0);
    put64(b + 44, 1);
    image m;
    memcpy(m.b, b, sizeof b);
    m.len = sizeof b;
    expect_bad(&m, 0, "int32 limit");
    char p[256];
    orc_error err = {0};
    assert_null(orc_shard_open(orc_test_scratch_path(p, sizeof p, "nope.bin"), 0, &err));
    assert_int_equal(err.code, ORC_EIO);
    assert_non_null(strstr(err.msg, "nope.bin"));
}

/* ---- the batch sampler ------------------------------------------------------------------ */

/* A shard whose token at position i is i: a window's first input is its start. */
static orc_shard *positional_shard(const char *name, int n) {
    char p[256];
    orc_test_scratch_path(p, sizeof p, name);
    int32_t *ids = malloc(n * sizeof *ids);
    for (int i = 0; i < n; i++) ids[i] = i;
    size_t lens[2] = {(size_t)n / 3, (size_t)(n - n / 3)};
    write_shard(p, 65536, ids, lens, 2);
    free(ids);
    orc_error err = {0};
    orc_shard *s = orc_shard_open(p, 65536, &err);
    assert_non_null(s);
    return s;
}

static void test_sampler_windows(void **state) {
    (void)state;
    const int n = 50, B = 8, T = 9;
    orc_shard *s = positional_shard("pos.bin", n);
    int32_t in[8 * 9], tg[8 * 9];
    orc_error err = {0};
    int seen_lo = 0, seen_hi = 0;
    for (uint64_t step = 0; step < 200; step++) {
        assert_int_equal(orc_shard_sample_batch(s, 42, step, B, T, in, tg, &err), ORC_OK);
        for (int b = 0; b < B; b++) {
            int pos = in[b * T];
            assert_true(pos >= 0 && pos <= n - T - 1);
            assert_int_equal((uint64_t)pos, orc_shard_sample_pos(s, 42, step, b, T));
            for (int t = 0; t < T; t++) {
                assert_int_equal(in[b * T + t], pos + t);
                assert_int_equal(tg[b * T + t], pos + t + 1);
            }
            seen_lo |= pos == 0;
            seen_hi |= pos == n - T - 1;
        }
    }
    assert_true(seen_lo && seen_hi); /* both ends of the range are reachable */
    /* Exactly one window fits: it starts at 0. */
    assert_int_equal(orc_shard_sample_batch(s, 7, 3, 2, n - 1, NULL, NULL, &err), ORC_EINVAL);
    orc_error_clear(&err);
    int32_t *in2 = malloc(2 * (n - 1) * sizeof *in2), *tg2 = malloc(2 * (n - 1) * sizeof *tg2);
    assert_int_equal(orc_shard_sample_batch(s, 7, 3, 2, n - 1, in2, tg2, &err), ORC_OK);
    assert_int_equal(in2[0], 0);
    assert_int_equal(in2[n - 1], 0);
    assert_int_equal(tg2[n - 2], n - 1);
    assert_int_equal(orc_shard_sample_batch(s, 7, 3, 2, n, in2, tg2, &err), ORC_ERANGE);
    assert_non_null(strstr(err.msg, "pos.bin"));
    orc_error_clear(&err);
    assert_int_equal(orc_shard_sample_batch(s, 7, 3, 0, 4, in2, tg2, &err), ORC_EINVAL);
    free(in2);
    free(tg2);
    orc_shard_close(s);
}

static void test_sampler_determinism(void **state) {
    (void)state;
    orc_shard *s = positional_shard("det.bin", 5000);
    enum { B = 8, T = 16 };
    int32_t a[B * T], at[B * T], b[B * T], bt[B * T], c[4 * T], ct[4 * T];
    orc_error err = {0};
    assert_int_equal(orc_shard_sample_batch(s, 1234, 17, B, T, a, at, &err), ORC_OK);
    assert_int_equal(orc_shard_sample_batch(s, 1234, 17, B, T, b, bt, &err), ORC_OK);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(at, bt, sizeof at);
    /* A smaller batch gives the same first rows: rows depend on (seed, step, row). */
    assert_int_equal(orc_shard_sample_batch(s, 1234, 17, 4, T, c, ct, &err), ORC_OK);
    assert_memory_equal(c, a, sizeof c);
    /* Another step or another seed moves the windows. */
    assert_int_equal(orc_shard_sample_batch(s, 1234, 18, B, T, b, bt, &err), ORC_OK);
    assert_true(memcmp(a, b, sizeof a) != 0);
    assert_int_equal(orc_shard_sample_batch(s, 1235, 17, B, T, b, bt, &err), ORC_OK);
    assert_true(memcmp(a, b, sizeof a) != 0);
    /* Rows of one batch are not all the same window. */
    int distinct = 0;
    for (int r = 1; r < B; r++) distinct |= a[r * T] != a[0];
    assert_true(distinct);
    orc_shard_close(s);
}

/* ---- SHA-512 (the corpus checksum) ----------------------------------------------------- */

static void hex(const uint8_t *d, char *out) {
    for (int i = 0; i < 64; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_sha512(void **state) {
    (void)state;
    uint8_t d[64];
    char h[129];
    orc_sha512("", 0, d);
    hex(d, h);
    assert_string_equal(h, "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
                           "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e");
    orc_sha512("abc", 3, d);
    hex(d, h);
    assert_string_equal(h, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                           "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
    const char *two = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
                      "lmnopqrsmnopqrstnopqrstu";
    orc_sha512(two, strlen(two), d);
    hex(d, h);
    assert_string_equal(h, "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
                           "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909");
    /* The npm integrity string of a file larger than the 1 MiB read chunk. */
    char p[256], integ[128];
    orc_test_scratch_path(p, sizeof p, "x.txt");
    FILE *fp = fopen(p, "wb");
    for (int i = 0; i < 1000003; i++) fputc('x', fp);
    fclose(fp);
    orc_error err = {0};
    assert_int_equal(orc_file_integrity(p, integ, sizeof integ, &err), ORC_OK);
    assert_string_equal(integ, "sha512-25Ib84A/YzyDWKnP7cqJln8GjnjOcEa/f6gAR5ebppC+eFXJBpiVOxl7Py2YFAUa0yJw0bjLpicglA"
                               "dUvO84Jw==");
    unlink(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_u16),  cmocka_unit_test(test_round_trip_u32),
        cmocka_unit_test(test_empty_shard),     cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_valid_image_opens), cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_int32_limit_and_missing), cmocka_unit_test(test_sampler_windows),
        cmocka_unit_test(test_sampler_determinism), cmocka_unit_test(test_sha512),
    };
    return cmocka_run_group_tests(tests, orc_test_scratch_setup, orc_test_scratch_teardown);
}
