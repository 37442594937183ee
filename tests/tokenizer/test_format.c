/* Tokenizer files: a tokenizer.json written by hand in this file (GPT-2's
 * byte ids, both merge forms, both pre-tokenizers, added tokens,
 * add_prefix_space, ignore_merges), GPT-2's encoder.json + vocab.bpe,
 * save/load round trips that keep every encoding, atomic writes, and every
 * malformed file the reader must refuse with the file and problem named. */
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

#include "orchard/rng.h"
#include "orchard/tokenizer.h"

/* ---- a hand-written tokenizer.json ---------------------------------------------- */

static int printable(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

/* GPT-2's id for byte b: printable bytes first, then the rest, in byte order. */
static int gpt2_id(int b) {
    int id = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int x = 0; x < 256; x++)
            if (printable(x) == !pass) {
                if (x == b) return id;
                id++;
            }
    return -1;
}

/* "c": id entries for the 256 byte tokens, in GPT-2's characters. */
static char *byte_vocab(int skip) {
    static char buf[8192];
    size_t o = 0;
    int k = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = (uint32_t)b;
        if (!printable(b)) { /* 256 + the number of non-printable bytes before b */
            cp = 256;
            for (int x = 0; x < b; x++) cp += !printable(x);
        }
        if (b == skip) continue;
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s\"", k++ ? "," : "");
        if (cp == '"' || cp == '\\')
            o += (size_t)snprintf(buf + o, sizeof buf - o, "\\%c", (char)cp);
        else if (cp < 0x80)
            buf[o++] = (char)cp;
        else {
            buf[o++] = (char)(0xC0 | (cp >> 6));
            buf[o++] = (char)(0x80 | (cp & 0x3F));
        }
        o += (size_t)snprintf(buf + o, sizeof buf - o, "\":%d", gpt2_id(b));
    }
    buf[o] = '\0';
    return buf;
}

#define G "\xc4\xa0" /* 'Ġ', GPT-2's character for the space byte */
#define ADDED_EOT                                                                                                 \
    "{\"id\":261,\"content\":\"<|endoftext|>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"           \
    "\"normalized\":false,\"special\":true}"
#define PRE_BYTELEVEL "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}"
#define PRE_DIGITS                                                                                                \
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[0-9]\"},"            \
    "\"behavior\":\"Isolated\",\"invert\":false}," PRE_BYTELEVEL "]}"
#define EXTRA ",\"" G "t\":256,\"he\":257,\"" G "the\":258,\"in\":259,\"" G "in\":260"
#define MERGES_STR "\"h e\",\"" G " t\",\"" G "t he\",\"i n\",\"" G " in\""
#define MERGES_PAIRS "[\"h\",\"e\"],[\"" G "\",\"t\"],[\"" G "t\",\"he\"],[\"i\",\"n\"],[\"" G "\",\"in\"]"

typedef struct spec {
    const char *added, *norm, *pre, *extra, *merges, *type, *model_extra;
    int skip_byte;
} spec;

static spec valid(void) {
    return (spec){.added = "[" ADDED_EOT "]", .norm = "null", .pre = PRE_BYTELEVEL, .extra = EXTRA,
                  .merges = MERGES_STR, .type = "\"type\":\"BPE\",", .model_extra = "", .skip_byte = -1};
}

static char *make_json(spec s) {
    char *out = NULL;
    char pre[1024] = "";
    if (s.pre) snprintf(pre, sizeof pre, "\"pre_tokenizer\":%s,", s.pre);
    char merges[2048] = "";
    if (s.merges) snprintf(merges, sizeof merges, ",\"merges\":[%s]", s.merges);
    int n = asprintf(&out,
                     "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":%s,"
                     "\"normalizer\":%s,%s\"post_processor\":null,"
                     "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true},"
                     "\"model\":{%s\"dropout\":null,\"unk_token\":null%s,\"vocab\":{%s%s}%s}}",
                     s.added, s.norm, pre, s.type, s.model_extra, byte_vocab(s.skip_byte), s.extra, merges);
    assert_true(n > 0);
    return out;
}

static orc_tokenizer *parse(spec s) {
    char *json = make_json(s);
    orc_error err = {0};
    orc_tokenizer *t = orc_tokenizer_from_json(json, strlen(json), "hand.json", &err);
    if (!t) fail_msg("hand-written tokenizer.json refused: %s", err.msg);
    free(json);
    return t;
}

static void expect_ids(const orc_tokenizer *t, const char *text, unsigned flags, const int32_t *want, size_t n_want) {
    int32_t *ids;
    size_t n;
    orc_error err = {0};
    assert_int_equal(orc_tokenizer_encode(t, text, strlen(text), flags, &ids, &n, &err), ORC_OK);
    if (n != n_want) fail_msg("'%s': %zu ids, want %zu", text, n, n_want);
    assert_memory_equal(ids, want, n * sizeof *ids);
    free(ids);
}

static void test_hand_written(void **state) {
    (void)state;
    assert_int_equal(gpt2_id('!'), 0);
    assert_int_equal(gpt2_id('t'), 83); /* as in GPT-2's encoder.json */
    assert_int_equal(gpt2_id(' '), 220);
    spec s = valid();
    for (int form = 0; form < 2; form++) {
        s.merges = form ? MERGES_PAIRS : MERGES_STR;
        orc_tokenizer *t = parse(s);
        assert_int_equal(orc_tokenizer_vocab_size(t), 262);
        assert_int_equal(orc_tokenizer_merge_count(t), 5);
        assert_int_equal(orc_tokenizer_pretok_mode(t), ORC_PRETOK_GPT2);
        const int32_t want[] = {83, 257, 256, 71, 259, 260};
        expect_ids(t, "the thin in", 0, want, 6);
        expect_ids(t, " the", 0, (const int32_t[]){258}, 1);
        assert_int_equal(orc_tokenizer_token_to_id(t, " the", 4), 258);
        assert_int_equal(orc_tokenizer_token_to_id(t, " ", 1), 220);
        assert_int_equal(orc_tokenizer_special_id(t, "<|endoftext|>"), 261);
        assert_true(orc_tokenizer_is_special(t, 261));
        expect_ids(t, "<|endoftext|>", ORC_TOK_ENCODE_SPECIAL, (const int32_t[]){261}, 1);
        orc_tokenizer_free(t);
    }
    /* The digit-splitting Sequence pre-tokenizer. */
    s = valid();
    s.pre = PRE_DIGITS;
    orc_tokenizer *t = parse(s);
    assert_int_equal(orc_tokenizer_pretok_mode(t), ORC_PRETOK_SPLIT_DIGITS);
    orc_tokenizer_free(t);
    s.pre = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
            PRE_BYTELEVEL "]}";
    t = parse(s);
    assert_int_equal(orc_tokenizer_pretok_mode(t), ORC_PRETOK_SPLIT_DIGITS);
    orc_tokenizer_free(t);
    /* add_prefix_space (Hugging Face's default when the field is absent). */
    s.pre = "{\"type\":\"ByteLevel\"}";
    t = parse(s);
    expect_ids(t, "the", 0, (const int32_t[]){258}, 1);
    orc_tokenizer_free(t);
    /* ignore_merges: a whole pre-token found in the vocabulary is one token. */
    s = valid();
    s.extra = EXTRA ",\"" G "th\":261";
    s.added = "[]";
    s.model_extra = ",\"ignore_merges\":true";
    t = parse(s);
    expect_ids(t, " th", 0, (const int32_t[]){261}, 1);
    orc_tokenizer_free(t);
    s.model_extra = "";
    t = parse(s);
    expect_ids(t, " th", 0, (const int32_t[]){256, 71}, 2);
    orc_tokenizer_free(t);
}

/* ---- temporary directory ---------------------------------------------------------------- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---- round trips ---------------------------------------------------------------------- */

static char *gen_text(uint64_t seed, size_t n) {
    static const char *lex[] = {"the", "of", "and", "in", "banana", "aaaa", "don't", "\xc3\xa9t\xc3\xa9", "1999",
                                "<|user|>", "x"};
    orc_rng r;
    orc_rng_init(&r, seed);
    char *t = malloc(n + 1);
    size_t o = 0;
    while (o + 12 < n) {
        const char *w = lex[orc_rng_below(&r, 11)];
        memcpy(t + o, w, strlen(w));
        o += strlen(w);
        t[o++] = " \n,"[orc_rng_below(&r, 3)];
    }
    t[o] = '\0';
    return t;
}

static void same_encodings(const orc_tokenizer *a, const orc_tokenizer *b, uint64_t seed) {
    orc_rng r;
    orc_rng_init(&r, seed);
    char *text = gen_text(seed, 5000);
    char raw[512];
    for (size_t i = 0; i < sizeof raw; i++) raw[i] = (char)orc_rng_below(&r, 256);
    const char *texts[] = {text, raw};
    size_t lens[] = {strlen(text), sizeof raw};
    for (int k = 0; k < 2; k++)
        for (unsigned flags = 0; flags < 2; flags++) {
            int32_t *x, *y;
            size_t nx, ny;
            assert_int_equal(orc_tokenizer_encode(a, texts[k], lens[k], flags, &x, &nx, NULL), ORC_OK);
            assert_int_equal(orc_tokenizer_encode(b, texts[k], lens[k], flags, &y, &ny, NULL), ORC_OK);
            assert_int_equal(nx, ny);
            assert_memory_equal(x, y, nx * sizeof *x);
            free(x);
            free(y);
        }
    free(text);
}

static void test_save_load_round_trip(void **state) {
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        char *text = gen_text(5, 40000);
        orc_tokenizer_train_opts o = {.vocab_size = 500, .pretok = (orc_pretok_mode)mode};
        orc_error err = {0};
        size_t len = strlen(text);
        const char *p = text;
        orc_tokenizer *t = orc_tokenizer_train(&p, &len, 1, &o, &err);
        assert_non_null(t);
        assert_int_equal(orc_tokenizer_save(t, orc_test_scratch, &err), ORC_OK); /* a directory gets tokenizer.json */
        assert_int_equal(orc_test_count_entries(orc_test_scratch), 1);                      /* and no temporary file is left */
        orc_tokenizer *u = orc_tokenizer_load(orc_test_scratch, &err);
        if (!u) fail_msg("load: %s", err.msg);
        assert_int_equal(orc_tokenizer_pretok_mode(u), mode);
        assert_int_equal(orc_tokenizer_vocab_size(u), orc_tokenizer_vocab_size(t));
        assert_int_equal(orc_tokenizer_merge_count(u), orc_tokenizer_merge_count(t));
        for (size_t i = 0; i < ORC_TOK_N_DEFAULT_SPECIALS; i++) {
            int32_t id = orc_tokenizer_special_id(u, orc_tok_default_specials[i]);
            assert_int_equal(id, orc_tokenizer_special_id(t, orc_tok_default_specials[i]));
            assert_true(orc_tokenizer_is_special(u, id));
        }
        same_encodings(t, u, 77);
        char *j1 = orc_tokenizer_to_json(t, &err), *j2 = orc_tokenizer_to_json(u, &err);
        assert_string_equal(j1, j2);
        free(j1);
        free(j2);
        /* Saving over an existing file, by file name. */
        char path[128];
        assert_int_equal(orc_tokenizer_save(u, orc_test_scratch_path(path, sizeof path, "tokenizer.json"), &err), ORC_OK);
        assert_int_equal(orc_test_count_entries(orc_test_scratch), 1);
        orc_tokenizer *v = orc_tokenizer_load(path, &err);
        assert_non_null(v);
        same_encodings(t, v, 78);
        orc_tokenizer_free(t);
        orc_tokenizer_free(u);
        orc_tokenizer_free(v);
        free(text);
        orc_test_dir_clear(orc_test_scratch);
    }
    /* The hand-written file survives our writer too. */
    orc_tokenizer *h = parse(valid());
    orc_error err = {0};
    char *json = orc_tokenizer_to_json(h, &err);
    orc_tokenizer *h2 = orc_tokenizer_from_json(json, strlen(json), "rewritten", &err);
    assert_non_null(h2);
    same_encodings(h, h2, 79);
    free(json);
    orc_tokenizer_free(h);
    orc_tokenizer_free(h2);
    /* A save into a missing directory fails cleanly. */
    assert_int_equal(orc_tokenizer_save(h2 = parse(valid()), "/nonexistent/dir/tokenizer.json", &err), ORC_EIO);
    orc_tokenizer_free(h2);
}

static void test_gpt2_files(void **state) {
    (void)state;
    char enc[128], bpe[128];
    orc_test_scratch_path(enc, sizeof enc, "encoder.json");
    orc_test_scratch_path(bpe, sizeof bpe, "vocab.bpe");
    char *json;
    assert_true(asprintf(&json, "{%s" EXTRA ",\"<|endoftext|>\":261}", byte_vocab(-1)) > 0);
    write_text(enc, json);
    free(json);
    write_text(bpe, "#version: 0.2\nh e\n" G " t\r\n" G "t he\n\ni n\n" G " in");
    orc_error err = {0};
    orc_tokenizer *t = orc_tokenizer_load(orc_test_scratch, &err);
    if (!t) fail_msg("gpt2 load: %s", err.msg);
    assert_int_equal(orc_tokenizer_pretok_mode(t), ORC_PRETOK_GPT2);
    assert_int_equal(orc_tokenizer_merge_count(t), 5);
    const int32_t want[] = {83, 257, 256, 71, 259, 260};
    expect_ids(t, "the thin in", 0, want, 6);
    assert_int_equal(orc_tokenizer_special_id(t, "<|endoftext|>"), 261);
    assert_true(orc_tokenizer_is_special(t, 261));
    orc_tokenizer *h = parse(valid());
    same_encodings(t, h, 80);
    orc_tokenizer_free(h);
    orc_tokenizer_free(t);

    write_text(bpe, "#version: 0.2\nh e x\n");
    assert_null(orc_tokenizer_load_gpt2(enc, bpe, &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "vocab.bpe:2"));
    orc_error_clear(&err);
    write_text(bpe, "q zz\n");
    assert_null(orc_tokenizer_load_gpt2(enc, bpe, &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "unknown token 'zz'"));
    orc_error_clear(&err);
    write_text(enc, "[1, 2]");
    assert_null(orc_tokenizer_load_gpt2(enc, bpe, &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "encoder.json"));
    orc_error_clear(&err);
    orc_test_dir_clear(orc_test_scratch);
    assert_null(orc_tokenizer_load(orc_test_scratch, &err));
    assert_int_equal(err.code, ORC_EIO);
    assert_non_null(strstr(err.msg, "neither"));
}

/* ---- malformed files ---------------------------------------------------------------------- */

typedef struct bad_case {
    const char *what;
    spec s;
    const char *raw; /* whole file text instead of s */
    orc_status code;
    const char *msg;
} bad_case;

static void test_malformed(void **state) {
    (void)state;
    spec v = valid();
    spec missing_q = v; /* 'q' (id 80) replaced by "zz" */
    missing_q.skip_byte = 'q';
    missing_q.extra = EXTRA ",\"zz\":80";
#define WITH(field, value) ({ spec s_ = v; s_.field = value; s_; })
    const bad_case cases[] = {
        {"bad JSON", v, "{\"model\": ", ORC_EFORMAT, "bad JSON"},
        {"empty file", v, "", ORC_EFORMAT, "bad JSON"},
        {"array", v, "[1, 2]", ORC_EFORMAT, "top level"},
        {"no model", v, "{}", ORC_EFORMAT, "\"model\""},
        {"WordPiece", WITH(type, "\"type\":\"WordPiece\","), NULL, ORC_EFORMAT, "'WordPiece', not \"BPE\""},
        {"no type", WITH(type, ""), NULL, ORC_EFORMAT, "model.type is missing"},
        {"string id", WITH(extra, EXTRA ",\"zz\":\"262\""), NULL, ORC_EFORMAT, "'zz' has no integer id"},
        {"negative id", WITH(extra, EXTRA ",\"zz\":-1"), NULL, ORC_EFORMAT, "outside"},
        {"huge id", WITH(extra, EXTRA ",\"zz\":99999999999"), NULL, ORC_EFORMAT, "outside"},
        {"duplicate id", WITH(extra, EXTRA ",\"zz\":257"), NULL, ORC_EFORMAT, "duplicate id 257"},
        {"hole", WITH(extra, EXTRA ",\"zz\":300"), NULL, ORC_EFORMAT, "id 300 leaves a hole"},
        {"hole inside", WITH(extra, EXTRA ",\"<|endoftext|>\":261,\"zz\":263"), NULL, ORC_EFORMAT,
         "id 262 is not assigned"},
        {"duplicate key", WITH(extra, EXTRA ",\"he\":262"), NULL, ORC_EFORMAT, "duplicate"},
        {"unknown merge token", WITH(merges, MERGES_STR ",\"q zz\""), NULL, ORC_EFORMAT, "unknown token 'zz'"},
        {"merge result missing", WITH(merges, MERGES_STR ",\"t h\""), NULL, ORC_EFORMAT, "not in the vocab"},
        {"merge without space", WITH(merges, MERGES_STR ",\"th\""), NULL, ORC_EFORMAT, "one space"},
        {"merge of three", WITH(merges, MERGES_STR ",\"t h e\""), NULL, ORC_EFORMAT, "one space"},
        {"merge pair of one", WITH(merges, MERGES_PAIRS ",[\"t\"]"), NULL, ORC_EFORMAT, "merges[5]"},
        {"merge number", WITH(merges, MERGES_STR ",5"), NULL, ORC_EFORMAT, "merges[5]"},
        {"no merges", WITH(merges, NULL), NULL, ORC_EFORMAT, "model.merges"},
        {"missing byte", missing_q, NULL, ORC_EFORMAT, "byte 0x71"},
        {"raw space key", WITH(extra, EXTRA ",\" x\":262"), NULL, ORC_EFORMAT, "not a byte-level string"},
        {"euro key", WITH(extra, EXTRA ",\"\xe2\x82\xac\":262"), NULL, ORC_EFORMAT, "not a byte-level string"},
        {"empty key", WITH(extra, EXTRA ",\"\":262"), NULL, ORC_EFORMAT, "empty"},
        {"added id clash", WITH(added, "[{\"id\":257,\"content\":\"<|x|>\",\"special\":true}]"), NULL, ORC_EFORMAT,
         "duplicate id 257"},
        {"added twice", WITH(added, "[" ADDED_EOT ",{\"id\":262,\"content\":\"<|endoftext|>\"}]"), NULL, ORC_EFORMAT,
         "has two ids"},
        {"added no content", WITH(added, "[{\"id\":261}]"), NULL, ORC_EFORMAT, "added_tokens[0]"},
        {"added not array", WITH(added, "{}"), NULL, ORC_EFORMAT, "added_tokens is not an array"},
        {"added special not bool", WITH(added, "[{\"id\":261,\"content\":\"<e>\",\"special\":1}]"), NULL,
         ORC_EFORMAT, "special is not a boolean"},
        {"whitespace pre", WITH(pre, "{\"type\":\"Whitespace\"}"), NULL, ORC_EUNSUPPORTED, "'Whitespace'"},
        {"pre not object", WITH(pre, "7"), NULL, ORC_EFORMAT, "pre_tokenizer"},
        {"no pre", WITH(pre, NULL), NULL, ORC_EUNSUPPORTED, "pre_tokenizer"},
        {"odd sequence", WITH(pre, "{\"type\":\"Sequence\",\"pretokenizers\":[" PRE_BYTELEVEL "," PRE_BYTELEVEL "]}"),
         NULL, ORC_EUNSUPPORTED, "Sequence"},
        {"prefix after digits",
         WITH(pre, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
                   "{\"type\":\"ByteLevel\"}]}"),
         NULL, ORC_EUNSUPPORTED, "add_prefix_space"},
        {"no regex", WITH(pre, "{\"type\":\"ByteLevel\",\"use_regex\":false}"), NULL, ORC_EUNSUPPORTED, "use_regex"},
        {"normalizer", WITH(norm, "{\"type\":\"NFC\"}"), NULL, ORC_EUNSUPPORTED, "normalizer"},
        {"byte fallback", WITH(model_extra, ",\"byte_fallback\":true"), NULL, ORC_EUNSUPPORTED, "byte_fallback"},
        {"suffix", WITH(model_extra, ",\"end_of_word_suffix\":\"</w>\""), NULL, ORC_EUNSUPPORTED,
         "end_of_word_suffix"},
    };
#undef WITH
    char path[128];
    orc_test_scratch_path(path, sizeof path, "tokenizer.json");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        char *text = c->raw ? strdup(c->raw) : make_json(c->s);
        write_text(path, text);
        orc_error err = {0};
        orc_tokenizer *t = orc_tokenizer_load(orc_test_scratch, &err);
        if (t) fail_msg("case '%s': accepted", c->what);
        if (err.code != c->code || !strstr(err.msg, c->msg) || !strstr(err.msg, path))
            fail_msg("case '%s': got %s '%s', want %s naming the file and '%s'", c->what, orc_status_name(err.code),
                     err.msg, orc_status_name(c->code), c->msg);
        /* From memory too: same verdict. */
        orc_error_clear(&err);
        assert_null(orc_tokenizer_from_json(text, strlen(text), "mem", &err));
        assert_int_equal(err.code, c->code);
        free(text);
    }
    orc_error err = {0};
    assert_null(orc_tokenizer_load("/nonexistent/tokenizer.json", &err));
    assert_int_equal(err.code, ORC_EIO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_written),
        cmocka_unit_test_setup_teardown(test_save_load_round_trip, orc_test_scratch_setup, orc_test_scratch_teardown),
        cmocka_unit_test_setup_teardown(test_gpt2_files, orc_test_scratch_setup, orc_test_scratch_teardown),
        cmocka_unit_test_setup_teardown(test_malformed, orc_test_scratch_setup, orc_test_scratch_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
