/* orc_data_prepare with a byte-level encoder written here (id = byte value,
 * 256 = end of document): every document lands whole in exactly one of
 * train.bin / val.bin, the val share is the promised count, the split and the
 * files depend only on (input, seed), text files split at blank lines, and
 * bad input or a failing tokenizer is reported with the file and line. */
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

#define EOS 256
#define VOCAB 257

/* ---- the test tokenizer --------------------------------------------------------------- */

static orc_status byte_encode(void *user, const char *text, size_t len, int32_t **ids, size_t *n, orc_error *err) {
    int *calls = user;
    if (calls) (*calls)++;
    if (len >= 4 && memcmp(text, "FAIL", 4) == 0) return orc_error_set(err, ORC_EINVAL, "byte encoder: told to fail");
    *ids = malloc((len ? len : 1) * sizeof **ids);
    if (!*ids) return orc_error_set(err, ORC_ENOMEM, "byte encoder: out of memory");
    for (size_t i = 0; i < len; i++) (*ids)[i] = (uint8_t)text[i];
    *n = len;
    return ORC_OK;
}

/* An encoder that returns an id past the vocabulary. */
static orc_status wild_encode(void *user, const char *text, size_t len, int32_t **ids, size_t *n, orc_error *err) {
    (void)user;
    (void)text;
    (void)len;
    (void)err;
    *ids = malloc(sizeof **ids);
    (*ids)[0] = 999;
    *n = 1;
    return ORC_OK;
}

/* ---- helpers --------------------------------------------------------------------------- */

static void doc_text(int i, char *buf, size_t cap) {
    snprintf(buf, cap, "document %d says \\\"hello\\\" %.*s", i, i % 7, "xxxxxxx");
}

/* A JSONL file of n documents (plus blank lines that are not documents). */
static void write_jsonl(const char *path, int n, const char *field) {
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < n; i++) {
        char t[128];
        doc_text(i, t, sizeof t);
        fprintf(fp, "{\"id\": %d, \"%s\": \"%s\"}\n", i, field, t);
        if (i % 10 == 3) fprintf(fp, "  \n");
    }
    fclose(fp);
}

/* The decoded text of document i as JSON would give it. */
static void doc_plain(int i, char *buf, size_t cap) {
    snprintf(buf, cap, "document %d says \"hello\" %.*s", i, i % 7, "xxxxxxx");
}

static orc_prepare_opts opts_for(const char *input, const char *out, double frac, uint64_t seed) {
    orc_prepare_opts o = {0};
    o.input = input;
    o.out_dir = out;
    o.val_fraction = frac;
    o.seed = seed;
    o.vocab_size = VOCAB;
    o.eos_id = EOS;
    o.encode = byte_encode;
    return o;
}

/* Which input document (by its text) each document of a shard is; -1 if none. */
static int find_doc(const char *text, size_t len, int n) {
    char want[128];
    for (int i = 0; i < n; i++) {
        doc_plain(i, want, sizeof want);
        if (strlen(want) == len && memcmp(want, text, len) == 0) return i;
    }
    return -1;
}

/* Map each document of shard path to its input index (order kept) into idx; returns the count. */
static int shard_docs(const char *path, int n_input, int *idx) {
    orc_error err = {0};
    orc_shard *s = orc_shard_open(path, VOCAB, &err);
    if (!s) fail_msg("%s", err.msg);
    const orc_shard_info *in = orc_shard_get_info(s);
    for (uint64_t d = 0; d < in->documents; d++) {
        uint64_t a = orc_shard_doc_start(s, d), b = orc_shard_doc_start(s, d + 1);
        assert_true(b > a);
        assert_int_equal(orc_shard_token(s, b - 1), EOS); /* each document ends with EOS */
        char text[256];
        size_t len = (size_t)(b - a - 1);
        assert_true(len < sizeof text);
        for (size_t i = 0; i < len; i++) text[i] = (char)orc_shard_token(s, a + i);
        idx[d] = find_doc(text, len, n_input);
        assert_true(idx[d] >= 0);
    }
    int docs = (int)in->documents;
    orc_shard_close(s);
    return docs;
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc(*len + 1);
    assert_int_equal(fread(b, 1, *len, fp), *len);
    fclose(fp);
    return b;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_split_by_document(void **state) {
    (void)state;
    const int n = 40;
    char in[256], out[256], tp[300], vp[300];
    write_jsonl(orc_test_scratch_path(in, sizeof in, "docs.jsonl"), n, "text");
    orc_test_scratch_path(out, sizeof out, "out1");
    int calls = 0;
    orc_prepare_opts o = opts_for(in, out, 0.25, 7);
    o.encode_user = &calls;
    orc_prepare_result r;
    orc_error err = {0};
    if (orc_data_prepare(&o, &r, &err) != ORC_OK) fail_msg("%s", err.msg);
    assert_int_equal(calls, n); /* blank lines are not documents */
    assert_int_equal(r.documents, n);
    assert_int_equal(r.val_documents, 10);
    assert_int_equal(r.train_documents, 30);
    snprintf(tp, sizeof tp, "%s/train.bin", out);
    snprintf(vp, sizeof vp, "%s/val.bin", out);
    int train[64], val[64], seen[64] = {0};
    int nt = shard_docs(tp, n, train), nv = shard_docs(vp, n, val);
    assert_int_equal(nt, 30);
    assert_int_equal(nv, 10);
    for (int i = 0; i < nt; i++) seen[train[i]]++;
    for (int i = 0; i < nv; i++) seen[val[i]]++;
    for (int i = 0; i < n; i++) assert_int_equal(seen[i], 1); /* every document exactly once, whole */
    for (int i = 1; i < nt; i++) assert_true(train[i] > train[i - 1]); /* input order kept */
    for (int i = 1; i < nv; i++) assert_true(val[i] > val[i - 1]);
    /* The split is the one orc_data_split describes. */
    uint8_t is_val[64];
    assert_int_equal(orc_data_split(n, 0.25, 7, is_val, &err), ORC_OK);
    for (int i = 0; i < nv; i++) assert_true(is_val[val[i]]);
    for (int i = 0; i < nt; i++) assert_false(is_val[train[i]]);
    /* Token counts: text bytes + one EOS per document. */
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++) {
        char t[128];
        doc_plain(i, t, sizeof t);
        bytes += strlen(t) + 1;
    }
    assert_int_equal(r.train_tokens + r.val_tokens, bytes);
    char meta[300];
    snprintf(meta, sizeof meta, "%s/prepare.json", out);
    size_t ml;
    unsigned char *m = slurp(meta, &ml);
    m[ml] = 0;
    assert_non_null(strstr((char *)m, "\"val_documents\": 10"));
    free(m);
}

static void test_val_fraction_counts(void **state) {
    (void)state;
    orc_error err = {0};
    uint8_t v[100];
    struct {
        uint64_t d;
        double f;
        int want;
    } cases[] = {{40, 0.05, 2}, {40, 0.0, 0}, {40, 0.001, 1}, {100, 0.5, 50}, {3, 0.99, 2}, {1, 0.5, 0}, {2, 0.1, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        assert_int_equal(orc_data_split(cases[c].d, cases[c].f, 99, v, &err), ORC_OK);
        int k = 0;
        for (uint64_t i = 0; i < cases[c].d; i++) k += v[i];
        if (k != cases[c].want) fail_msg("d=%llu f=%g: %d val docs, want %d", (unsigned long long)cases[c].d, cases[c].f, k, cases[c].want);
    }
    assert_int_equal(orc_data_split(10, 1.0, 1, v, &err), ORC_EINVAL);
    orc_error_clear(&err);
    assert_int_equal(orc_data_split(10, -0.1, 1, v, &err), ORC_EINVAL);
    /* val fraction 0: val.bin exists and is empty. */
    char in[256], out[256], vp[300];
    write_jsonl(orc_test_scratch_path(in, sizeof in, "z.jsonl"), 5, "text");
    orc_prepare_opts o = opts_for(in, orc_test_scratch_path(out, sizeof out, "zero"), 0.0, 1);
    orc_prepare_result r;
    orc_error_clear(&err);
    assert_int_equal(orc_data_prepare(&o, &r, &err), ORC_OK);
    assert_int_equal(r.val_documents, 0);
    snprintf(vp, sizeof vp, "%s/val.bin", out);
    orc_shard *s = orc_shard_open(vp, VOCAB, &err);
    assert_non_null(s);
    assert_int_equal(orc_shard_get_info(s)->documents, 0);
    orc_shard_close(s);
}

static void test_determinism(void **state) {
    (void)state;
    char in[256], a[256], b[256], c[256], pa[300], pb[300], pc[300];
    write_jsonl(orc_test_scratch_path(in, sizeof in, "det.jsonl"), 60, "text");
    orc_prepare_result r;
    orc_error err = {0};
    orc_prepare_opts o = opts_for(in, orc_test_scratch_path(a, sizeof a, "da"), 0.2, 5);
    assert_int_equal(orc_data_prepare(&o, &r, &err), ORC_OK);
    o.out_dir = orc_test_scratch_path(b, sizeof b, "db");
    assert_int_equal(orc_data_prepare(&o, &r, &err), ORC_OK);
    o.out_dir = orc_test_scratch_path(c, sizeof c, "dc");
    o.seed = 6;
    assert_int_equal(orc_data_prepare(&o, &r, &err), ORC_OK);
    const char *names[2] = {"train.bin", "val.bin"};
    for (int i = 0; i < 2; i++) {
        snprintf(pa, sizeof pa, "%s/%s", a, names[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, names[i]);
        snprintf(pc, sizeof pc, "%s/%s", c, names[i]);
        assert_true(same_file(pa, pb));    /* same seed: byte-identical */
        assert_false(same_file(pa, pc));   /* another seed: another split */
    }
    /* Splits of the same size for different seeds differ as sets too. */
    uint8_t s5[60], s6[60];
    assert_int_equal(orc_data_split(60, 0.2, 5, s5, &err), ORC_OK);
    assert_int_equal(orc_data_split(60, 0.2, 6, s6, &err), ORC_OK);
    assert_true(memcmp(s5, s6, 60) != 0);
}

static void test_text_input_and_field(void **state) {
    (void)state;
    char in[256], out[256], tp[300];
    FILE *fp = fopen(orc_test_scratch_path(in, sizeof in, "book.txt"), "w");
    fprintf(fp, "\n\nfirst paragraph\nstill first\n\n  \nsecond\n\n\nthird\nlast line");
    fclose(fp);
    orc_prepare_opts o = opts_for(in, orc_test_scratch_path(out, sizeof out, "txt"), 0.0, 1);
    orc_prepare_result r;
    orc_error err = {0};
    assert_int_equal(orc_data_prepare(&o, &r, &err), ORC_OK);
    assert_int_equal(r.documents, 3);
    snprintf(tp, sizeof tp, "%s/train.bin", out);
    orc_shard *s = orc_shard_open(tp, VOCAB, &err);
    assert_non_null(s);
    /* "first paragraph\nstill first" + EOS: the document keeps its inner newline. */
    assert_int_equal(orc_shard_doc_start(s, 1), strlen("first paragraph\nstill first") + 1);
    assert_int_equal(orc_shard_token(s, 15), '\n');
    assert_int_equal(orc_shard_get_info(s)->tokens, strlen("first paragraph\nstill first") + strlen("second") +
                                                        strlen("third\nlast line") + 3);
    orc_shard_close(s);
    /* --field picks another JSONL member; no EOS when eos_id is -1. */
    write_jsonl(orc_test_scratch_path(in, sizeof in, "body.jsonl"), 4, "body");
    o = opts_for(in, orc_test_scratch_path(out, sizeof out, "field"), 0.0, 1);
    o.field = "body";
    o.eos_id = -1;
    assert_int_equal(orc_data_prepare(&o, &r, &err), ORC_OK);
    assert_int_equal(r.documents, 4);
    char t[128];
    uint64_t bytes = 0;
    for (int i = 0; i < 4; i++) {
        doc_plain(i, t, sizeof t);
        bytes += strlen(t);
    }
    assert_int_equal(r.train_tokens, bytes);
}

static void expect_fail(orc_prepare_opts *o, orc_status code, const char *want) {
    orc_prepare_result r;
    orc_error err = {0};
    orc_status st = orc_data_prepare(o, &r, &err);
    if (st != code) fail_msg("status %d, want %d (%s)", st, code, err.msg);
    if (!strstr(err.msg, want)) fail_msg("message '%s' lacks '%s'", err.msg, want);
}

static void test_errors(void **state) {
    (void)state;
    char in[256], out[256];
    FILE *fp = fopen(orc_test_scratch_path(in, sizeof in, "bad.jsonl"), "w");
    fprintf(fp, "{\"text\": \"ok\"}\n\n{\"txt\": \"no text field\"}\n");
    fclose(fp);
    orc_prepare_opts o = opts_for(in, orc_test_scratch_path(out, sizeof out, "bad"), 0.1, 1);
    expect_fail(&o, ORC_EFORMAT, "bad.jsonl:3: no string field \"text\"");
    fp = fopen(in, "w");
    fprintf(fp, "{\"text\": \"ok\"}\n{\"text\": \n");
    fclose(fp);
    expect_fail(&o, ORC_EFORMAT, "bad.jsonl:2: invalid JSON");
    fp = fopen(in, "w");
    fprintf(fp, "{\"text\": \"ok\"}\n{\"text\": \"FAIL here\"}\n");
    fclose(fp);
    expect_fail(&o, ORC_EINVAL, "told to fail"); /* the tokenizer's own message comes through */
    o.encode = wild_encode;
    expect_fail(&o, ORC_ERANGE, "bad.jsonl:1: the tokenizer returned id 999");
    o.encode = byte_encode;
    fp = fopen(in, "w");
    fprintf(fp, "\n  \n");
    fclose(fp);
    expect_fail(&o, ORC_EFORMAT, "no documents");
    o.input = orc_test_scratch_path(in, sizeof in, "missing.jsonl");
    expect_fail(&o, ORC_EIO, "missing.jsonl");
    o.val_fraction = 1.0;
    expect_fail(&o, ORC_EINVAL, "val fraction");
    o.val_fraction = 0.1;
    o.eos_id = VOCAB;
    expect_fail(&o, ORC_EINVAL, "end-of-document id");
    /* A failed run leaves no temporary files in the output directory. */
    DIR *d = opendir(out);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) assert_null(strstr(e->d_name, ".tmp."));
    closedir(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_by_document), cmocka_unit_test(test_val_fraction_counts),
        cmocka_unit_test(test_determinism),       cmocka_unit_test(test_text_input_and_field),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, orc_test_scratch_setup, orc_test_scratch_teardown);
}
