/* Constrained JSON decoding (orchard/constrain.h): per schema, texts the
 * matcher must accept as complete values and texts it must refuse (at some
 * byte, or as incomplete); schema errors name the keyword's path; the token
 * filter's mask equals a brute-force check of every token; and random walks
 * through the filter (random logits, random choice among the allowed ids,
 * a token budget) always end in JSON that jansson parses and that a small
 * validator written here finds valid against the schema. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gradcheck.h"
#include "orchard/constrain.h"
#include "orchard/rng.h"

static orc_json_schema *compile(const char *text, bool strict) {
    orc_json_schema_opts o;
    orc_json_schema_opts_default(&o);
    o.strict_objects = strict;
    orc_error err = {0};
    orc_json_schema *s = orc_json_schema_compile(text, strlen(text), &o, &err);
    if (!s) fprintf(stderr, "compile %s: %s\n", text, err.msg);
    assert_non_null(s);
    return s;
}

/* Accepted as a whole value: every byte advances and the value is done. */
static bool accepts(const orc_json_schema *s, const char *text) {
    orc_json_matcher *m = orc_json_matcher_new(s, NULL);
    assert_non_null(m);
    bool ok = orc_json_matcher_advance(m, text, strlen(text)) && orc_json_matcher_done(m);
    orc_json_matcher_free(m);
    return ok;
}

typedef struct cases {
    const char *schema;
    bool strict;
    const char *good[12];
    const char *bad[16];
} cases;

static const cases CASES[] = {
    {"{\"type\": \"string\"}", false,
     {"\"\"", "\"abc\"", "\"a\\\"b\"", "\"\\u00e9\"", "\"\xc3\xa9\"", "\"\\n\\t\"", " \"x\""},
     {"abc", "\"abc", "\"a\x01\"", "\"\\x\"", "\"\\u0000\"", "\"\\ud800\"", "\"\xc3\"", "\"\xff\"", "\"a\" ", "1",
      "  \"x\""}},
    {"{\"type\": \"integer\"}", false,
     {"0", "-1", "123", "-0"},
     {"01", "1.5", "1e3", "-", "+1", "\"1\"", "12345678901234567"}},
    {"{\"type\": \"number\"}", false,
     {"0", "-1.5", "3e10", "2.5E-3", "0.0"},
     {".5", "1.", "1e", "1e+", "--1", "NaN", "1e999"}},
    {"{\"type\": \"boolean\"}", false, {"true", "false"}, {"tru", "True", "null", "truex", "0"}},
    {"{\"type\": \"null\"}", false, {"null"}, {"nul", "nulll", "false"}},
    {"{\"enum\": [\"red\", \"green\", 1, 12, null]}", false,
     {"\"red\"", "\"green\"", "1", "12", "null"},
     {"\"blue\"", "\"re\"", "2", "123", "\"red\"x"}},
    {"{\"const\": {\"a\": [1, 2]}}", false, {"{\"a\":[1,2]}"}, {"{\"a\": [1, 2]}", "{\"a\":[1]}"}},
    {"{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}, \"days\": {\"type\": \"integer\"}}, "
     "\"required\": [\"city\"]}", true,
     {"{\"city\":\"Oslo\"}", "{\"city\": \"Oslo\", \"days\": 3}", "{\"days\":3,\"city\":\"x\"}", "{ \"city\" : \"a\" }"},
     {"{}", "{\"days\":3}", "{\"city\":\"a\",\"city\":\"b\"}", "{\"city\":\"a\",\"other\":1}", "{\"city\":1}",
      "{\"city\":\"a\",}", "{\"city\":\"a\"", "{\"cit\":\"a\"}", "{\"city\":\"a\"}}", "{\"city\":  \"a\"}"}},
    {"{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}}}", false,
     {"{}", "{\"a\":1}", "{\"b\":[1,{\"c\":null}]}", "{\"ab\":\"x\",\"a\":2}"},
     {"{\"a\":\"x\"}", "{\"a\":1,\"a\":2}", "{,}"}},
    {"{\"type\": \"object\", \"properties\": {\"a\": {}}, \"additionalProperties\": {\"type\": \"boolean\"}}", false,
     {"{\"a\":[1],\"b\":true}", "{\"zz\":false}"},
     {"{\"b\":1}"}},
    {"{\"type\": \"array\", \"items\": {\"type\": \"integer\"}, \"minItems\": 1, \"maxItems\": 3}", false,
     {"[1]", "[1,2,3]", "[ 1, 2 ]"},
     {"[]", "[1,2,3,4]", "[1,]", "[\"a\"]", "[1 2]"}},
    {"{\"type\": \"string\", \"minLength\": 2, \"maxLength\": 3}", false,
     {"\"ab\"", "\"abc\"", "\"\xc3\xa9\xc3\xa9\""},
     {"\"a\"", "\"abcd\""}},
    {"{\"anyOf\": [{\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"integer\"}}, \"required\": [\"x\"]},"
     "{\"type\": \"object\", \"properties\": {\"y\": {\"type\": \"string\"}}, \"required\": [\"y\"]}, {\"type\": \"null\"}]}",
     true,
     {"{\"x\":1}", "{\"y\":\"a\"}", "null"},
     {"{\"x\":\"a\"}", "{\"y\":1}", "{\"x\":1,\"y\":\"a\"}", "{}"}},
    {"{\"type\": [\"string\", \"integer\"]}", false, {"\"a\"", "5"}, {"true", "1.5"}},
    {"{\"oneOf\": [{\"type\": \"array\", \"items\": {\"enum\": [\"a\", \"b\"]}}, {\"type\": \"string\"}]}", false,
     {"[\"a\",\"b\",\"a\"]", "\"zz\""},
     {"[\"c\"]", "[\"a\""}},
    {"{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}, \"b\": {\"type\": \"integer\"}, \"c\": "
     "{\"type\": \"integer\"}}, \"required\": [\"a\", \"c\"], \"additionalProperties\": false, \"x-orchard-ordered\": true}", false,
     {"{\"a\":1,\"c\":2}", "{\"a\":1,\"b\":2,\"c\":3}"},
     {"{\"c\":1,\"a\":2}", "{\"b\":1,\"a\":1,\"c\":1}", "{\"a\":1,\"c\":2,\"b\":3}", "{\"a\":1}"}},
    {"{\"description\": \"anything\"}", false, {"{\"k\":[true,null,-2.5e3]}", "\"s\"", "[]", "0"}, {"{", "[1,]", "tru"}},
};

static void test_accept_reject(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        orc_json_schema *s = compile(CASES[c].schema, CASES[c].strict);
        for (size_t i = 0; i < 12 && CASES[c].good[i]; i++) {
            if (!accepts(s, CASES[c].good[i])) fprintf(stderr, "%s should accept %s\n", CASES[c].schema, CASES[c].good[i]);
            assert_true(accepts(s, CASES[c].good[i]));
        }
        for (size_t i = 0; i < 16 && CASES[c].bad[i]; i++) {
            if (accepts(s, CASES[c].bad[i])) fprintf(stderr, "%s should refuse %s\n", CASES[c].schema, CASES[c].bad[i]);
            assert_false(accepts(s, CASES[c].bad[i]));
        }
        orc_json_schema_free(s);
    }
}

static void test_prefix_and_done(void **state) {
    (void)state;
    orc_json_schema *s = compile("{\"type\": \"object\", \"properties\": {\"n\": {\"type\": \"integer\"}}, \"required\": [\"n\"]}", true);
    orc_json_matcher *m = orc_json_matcher_new(s, NULL);
    assert_true(orc_json_matcher_allowed(m, "{\"n\"", 4));
    assert_false(orc_json_matcher_allowed(m, "{\"m\"", 4));
    assert_true(orc_json_matcher_advance(m, "{\"n\":1", 6));
    assert_false(orc_json_matcher_done(m));
    assert_int_equal(orc_json_matcher_min_remaining(m), 1); /* "}" */
    assert_false(orc_json_matcher_advance(m, "x", 1));  /* refused, and the state is kept */
    assert_true(orc_json_matcher_advance(m, "2}", 2));
    assert_true(orc_json_matcher_done(m));
    assert_true(orc_json_matcher_finished(m));
    assert_false(orc_json_matcher_allowed(m, " ", 1)); /* nothing after the value */
    orc_json_matcher_reset(m);
    assert_int_equal(orc_json_matcher_min_remaining(m), 7); /* {"n":0} */
    orc_json_matcher_free(m);
    orc_json_schema_free(s);
    /* A number at the top is done but not finished: more digits may come. */
    s = compile("{\"type\": \"integer\"}", false);
    m = orc_json_matcher_new(s, NULL);
    assert_true(orc_json_matcher_advance(m, "12", 2));
    assert_true(orc_json_matcher_done(m));
    assert_false(orc_json_matcher_finished(m));
    orc_json_matcher_free(m);
    orc_json_schema_free(s);
}

static void test_schema_errors(void **state) {
    (void)state;
    struct {
        const char *schema, *needle;
    } bad[] = {
        {"{\"type\": \"object\", \"properties\": {\"when\": {\"type\": \"string\", \"pattern\": \"^a\"}}}",
         "#/properties/when/pattern"},
        {"{\"type\": \"strin\"}", "#/type"},
        {"{\"$ref\": \"#/$defs/x\"}", "#/$ref"},
        {"{\"type\": \"object\", \"required\": [\"a\"]}", "#/required"},
        {"{\"enum\": []}", "#/enum"},
        {"{\"type\": \"array\", \"items\": {\"minimum\": 3}}", "#/items/minimum"},
        {"{\"anyOf\": [{\"type\": \"string\"}, {\"allOf\": []}]}", "#/anyOf/1/allOf"},
        {"{\"type\": \"array\", \"minItems\": 3, \"maxItems\": 2}", "#/minItems"},
        {"{\"type\": \"string\", \"maxLength\": -1}", "#/maxLength"},
        {"[1]", "#"},
        {"{\"type\": \"object\"", "not JSON"},
        {"{\"type\": \"object\", \"x-orchard-ordered\": true}", "#/x-orchard-ordered"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        orc_error err = {0};
        orc_json_schema *s = orc_json_schema_compile(bad[i].schema, strlen(bad[i].schema), NULL, &err);
        if (s || !strstr(err.msg, bad[i].needle)) fprintf(stderr, "%s -> %s\n", bad[i].schema, err.msg);
        assert_null(s);
        assert_non_null(strstr(err.msg, bad[i].needle));
    }
    /* Annotations are ignored. */
    const char *ok = "{\"title\": \"t\", \"description\": \"d\", \"type\": \"string\", \"format\": \"date\", \"default\": \"x\"}";
    orc_json_schema *s = compile(ok, false);
    orc_json_schema_free(s);
}

/* ---- a validator for the random walks ------------------------------------------------ */

static bool valid(json_t *v, json_t *schema, bool strict);

static bool valid_type(json_t *v, const char *t) {
    if (!strcmp(t, "string")) return json_is_string(v);
    if (!strcmp(t, "integer")) return json_is_integer(v);
    if (!strcmp(t, "number")) return json_is_number(v);
    if (!strcmp(t, "boolean")) return json_is_boolean(v);
    if (!strcmp(t, "null")) return json_is_null(v);
    if (!strcmp(t, "object")) return json_is_object(v);
    if (!strcmp(t, "array")) return json_is_array(v);
    return false;
}

static size_t utf8_chars(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

static bool valid(json_t *v, json_t *schema, bool strict) {
    if (json_is_true(schema)) return true;
    json_t *any = json_object_get(schema, "anyOf");
    if (!any) any = json_object_get(schema, "oneOf");
    if (any) {
        for (size_t i = 0; i < json_array_size(any); i++)
            if (valid(v, json_array_get(any, i), strict)) return true;
        return false;
    }
    json_t *en = json_object_get(schema, "enum"), *cn = json_object_get(schema, "const");
    if (cn && !json_equal(v, cn)) return false;
    if (en) {
        bool hit = false;
        for (size_t i = 0; i < json_array_size(en); i++) hit = hit || json_equal(v, json_array_get(en, i));
        if (!hit) return false;
    }
    json_t *type = json_object_get(schema, "type");
    if (json_is_string(type) && !valid_type(v, json_string_value(type))) return false;
    if (json_is_array(type)) {
        bool hit = false;
        for (size_t i = 0; i < json_array_size(type); i++) hit = hit || valid_type(v, json_string_value(json_array_get(type, i)));
        if (!hit) return false;
    }
    if (json_is_string(v)) {
        size_t n = utf8_chars(json_string_value(v), json_string_length(v));
        json_t *mn = json_object_get(schema, "minLength"), *mx = json_object_get(schema, "maxLength");
        if ((mn && n < (size_t)json_integer_value(mn)) || (mx && n > (size_t)json_integer_value(mx))) return false;
    }
    if (json_is_array(v)) {
        json_t *mn = json_object_get(schema, "minItems"), *mx = json_object_get(schema, "maxItems");
        size_t n = json_array_size(v);
        if ((mn && n < (size_t)json_integer_value(mn)) || (mx && n > (size_t)json_integer_value(mx))) return false;
        json_t *items = json_object_get(schema, "items");
        for (size_t i = 0; items && i < n; i++)
            if (!valid(json_array_get(v, i), items, strict)) return false;
    }
    if (json_is_object(v)) {
        json_t *props = json_object_get(schema, "properties"), *req = json_object_get(schema, "required");
        json_t *addl = json_object_get(schema, "additionalProperties");
        for (size_t i = 0; i < json_array_size(req); i++)
            if (!json_object_get(v, json_string_value(json_array_get(req, i)))) return false;
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            json_t *ps = json_object_get(props, k);
            if (ps) {
                if (!valid(x, ps, strict)) return false;
            } else if (json_is_false(addl) || (!addl && strict && (props || req))) {
                return false;
            } else if (json_is_object(addl) && !valid(x, addl, strict)) {
                return false;
            }
        }
    }
    return true;
}

/* ---- the token filter ---------------------------------------------------------------------- */

static orc_tokenizer *TOK;
static int32_t END_ID;

static int setup(void **state) {
    (void)state;
    static const char corpus[] =
        "{\"city\": \"Oslo\", \"days\": 3, \"units\": \"metric\"} [1, 2, 3] {\"a\": true, \"b\": null} "
        "\"weather\" \"get_weather\" {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}} "
        "-12.5e3 0.25 false true null \"red\" \"green\" \\n \\\" \\u00e9 caf\xc3\xa9 the whale rose from the sea";
    const char *texts[1] = {corpus};
    size_t lens[1] = {sizeof corpus - 1};
    orc_tokenizer_train_opts to = {.vocab_size = 400};
    orc_error err = {0};
    TOK = orc_tokenizer_train(texts, lens, 1, &to, &err);
    if (!TOK) fprintf(stderr, "%s\n", err.msg);
    END_ID = orc_tokenizer_special_id(TOK, ORC_TOK_END_OF_TEXT);
    return TOK && END_ID >= 0 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    orc_tokenizer_free(TOK);
    return 0;
}

static const char *const WALK_SCHEMAS[] = {
    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"maxLength\": 12}, \"days\": {\"type\": "
    "\"integer\"}, \"units\": {\"enum\": [\"metric\", \"imperial\"]}}, \"required\": [\"city\", \"units\"]}",
    "{\"type\": \"array\", \"items\": {\"type\": \"number\"}, \"minItems\": 2, \"maxItems\": 4}",
    "{\"anyOf\": [{\"type\": \"object\", \"properties\": {\"name\": {\"const\": \"get_weather\"}, \"arguments\": "
    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}, "
    "\"required\": [\"name\", \"arguments\"]}, {\"type\": \"object\", \"properties\": {\"name\": {\"const\": \"get_time\"}, "
    "\"arguments\": {\"type\": \"object\", \"properties\": {}}}, \"required\": [\"name\", \"arguments\"]}]}",
    "{\"type\": \"object\", \"properties\": {\"tags\": {\"type\": \"array\", \"items\": {\"type\": [\"string\", \"null\", "
    "\"boolean\"]}}, \"nested\": {\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"number\"}}, \"required\": [\"x\"]}}, "
    "\"required\": [\"nested\"]}",
    "{}",
    "{\"type\": \"object\"}",
    "{\"type\": \"object\", \"properties\": {\"name\": {\"enum\": [\"f\", \"g\"]}, \"x\": {\"type\": \"boolean\"}, "
    "\"arguments\": {\"type\": \"object\", \"properties\": {\"q\": {\"type\": \"string\"}}}}, \"required\": [\"name\", "
    "\"arguments\"], \"additionalProperties\": false, \"x-orchard-ordered\": true}",
};

static void test_filter_matches_brute_force(void **state) {
    (void)state;
    orc_error err = {0};
    const int64_t V = (int64_t)orc_tokenizer_vocab_size(TOK);
    orc_token_filter *f = orc_token_filter_new(TOK, V, &err);
    assert_non_null(f);
    uint8_t *mask = malloc((size_t)V);
    orc_rng rng;
    orc_rng_init(&rng, 11);
    for (size_t si = 0; si < sizeof WALK_SCHEMAS / sizeof WALK_SCHEMAS[0]; si++) {
        orc_json_schema *s = compile(WALK_SCHEMAS[si], true);
        orc_json_matcher *m = orc_json_matcher_new(s, NULL);
        for (int step = 0; step < 30; step++) {
            int64_t n = orc_token_filter_mask(f, m, mask, V);
            int64_t brute = 0;
            int32_t pick = -1, seen = 0;
            for (int64_t id = 0; id < V; id++) {
                size_t len = 0;
                const char *b = orc_tokenizer_id_to_token(TOK, (int32_t)id, &len);
                bool ok = !orc_tokenizer_is_special(TOK, (int32_t)id) && len > 0 && orc_json_matcher_allowed(m, b, len);
                assert_int_equal(ok, mask[id] != 0);
                brute += ok;
                if (ok && orc_rng_uniform(&rng) * (float)(++seen) < 1.0f) pick = (int32_t)id;
            }
            assert_int_equal(n, brute);
            if (pick < 0) break; /* finished */
            size_t len = 0;
            const char *b = orc_tokenizer_id_to_token(TOK, pick, &len);
            assert_true(orc_json_matcher_advance(m, b, len));
        }
        orc_json_matcher_free(m);
        orc_json_schema_free(s);
    }
    free(mask);
    orc_token_filter_free(f);
}

static void test_random_walks_are_valid(void **state) {
    (void)state;
    orc_error err = {0};
    const int64_t V = (int64_t)orc_tokenizer_vocab_size(TOK);
    orc_token_filter *f = orc_token_filter_new(TOK, V, &err);
    assert_non_null(f);
    float *logits = malloc(sizeof(float) * (size_t)V);
    char *text = malloc(4096);
    orc_rng rng;
    orc_rng_init(&rng, getenv("CN_SEED") ? (uint64_t)atoll(getenv("CN_SEED")) : 5); /* CN_SEED: other walks */
    int walks = 0;
    for (size_t si = 0; si < sizeof WALK_SCHEMAS / sizeof WALK_SCHEMAS[0]; si++) {
        orc_json_schema *s = compile(WALK_SCHEMAS[si], true);
        json_t *schema_js = json_loads(WALK_SCHEMAS[si], 0, NULL);
        orc_json_matcher *m = orc_json_matcher_new(s, NULL);
        for (int w = 0; w < 40; w++) {
            orc_json_matcher_reset(m);
            size_t len = 0;
            const int64_t budget = 40 + (w % 4) * 30;
            bool ended = false;
            for (int64_t step = 0; step < budget; step++) {
                for (int64_t i = 0; i < V; i++) logits[i] = orc_rng_uniform(&rng) * 4.0f;
                if (getenv("CN_DEBUG")) fprintf(stderr, "step %lld left %lld min %lld text %.*s\n", (long long)step, (long long)(budget - step), (long long)orc_json_matcher_min_remaining(m), (int)len, text);
                int64_t kept = orc_token_filter_apply(f, m, logits, V, &END_ID, 1, budget - step);
                assert_true(kept > 0);
                /* Sample: softmax of the masked logits. */
                double total = 0;
                for (int64_t i = 0; i < V; i++) total += isfinite(logits[i]) ? exp(logits[i]) : 0.0;
                double u = orc_rng_uniform(&rng) * total, acc = 0;
                int32_t id = -1;
                for (int64_t i = 0; i < V && id < 0; i++) {
                    if (!isfinite(logits[i])) continue;
                    acc += exp(logits[i]);
                    if (acc >= u) id = (int32_t)i;
                }
                for (int64_t i = V - 1; id < 0 && i >= 0; i--)
                    if (isfinite(logits[i])) id = (int32_t)i;
                if (id == END_ID) {
                    ended = true;
                    break;
                }
                size_t n = 0;
                const char *b = orc_tokenizer_id_to_token(TOK, id, &n);
                assert_true(len + n < 4096);
                assert_true(orc_json_matcher_advance(m, b, n));
                memcpy(text + len, b, n);
                len += n;
                if (orc_json_matcher_finished(m)) { /* nothing may follow: the decoder stops */
                    ended = true;
                    break;
                }
            }
            ended = ended || orc_json_matcher_done(m); /* the budget ran out on a complete value */
            text[len] = 0;
            if (!ended) fprintf(stderr, "walk did not end within %lld tokens: %s\n", (long long)budget, text);
            assert_true(ended);
            json_error_t je;
            json_t *v = json_loadb(text, len, JSON_DECODE_ANY, &je);
            if (!v || !valid(v, schema_js, true)) fprintf(stderr, "schema %zu: invalid %s (%s)\n", si, text, v ? "schema" : je.text);
            assert_non_null(v);
            assert_true(valid(v, schema_js, true));
            json_decref(v);
            walks++;
        }
        orc_json_matcher_free(m);
        json_decref(schema_js);
        orc_json_schema_free(s);
    }
    assert_int_equal(walks, 280);
    free(text);
    free(logits);
    orc_token_filter_free(f);
}

/* Not a check: with ORC_CONSTRAIN_BENCH=TOKENIZER (a tokenizer.json or its
 * folder) print what the filter costs on that vocabulary: the trie build,
 * and the time of one orc_token_filter_apply per token over random walks
 * (tool-call and json_object schemas, the fastest of 3 runs of each step).
 * Prints nothing otherwise. */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static void test_filter_cost(void **state) {
    (void)state;
    const char *path = getenv("ORC_CONSTRAIN_BENCH");
    if (!path) skip();
    orc_error err = {0};
    orc_tokenizer *tok = orc_tokenizer_load(path, &err);
    assert_non_null(tok);
    const int64_t V = (int64_t)orc_tokenizer_vocab_size(tok);
    int32_t end = orc_tokenizer_special_id(tok, ORC_TOK_END_OF_TEXT);
    double t0 = now_us();
    orc_token_filter *f = orc_token_filter_new(tok, V, &err);
    double build = now_us() - t0;
    assert_non_null(f);
    const char *schemas[] = {WALK_SCHEMAS[2], WALK_SCHEMAS[5]};
    const char *names[] = {"tool call (2 tools)", "json_object"};
    float *logits = malloc(sizeof(float) * (size_t)V), *raw = malloc(sizeof(float) * (size_t)V);
    double *times = malloc(sizeof(double) * 20 * 160);
    orc_rng rng;
    orc_rng_init(&rng, 1);
    printf("filter: vocabulary %lld, trie built in %.1f ms\n", (long long)V, build / 1000.0);
    for (int k = 0; k < 2; k++) {
        orc_json_schema *s = compile(schemas[k], true);
        orc_json_matcher *m = orc_json_matcher_new(s, NULL);
        size_t nt = 0;
        for (int w = 0; w < 20; w++) {
            orc_json_matcher_reset(m);
            for (int step = 0; step < 160; step++) {
                for (int64_t i = 0; i < V; i++) raw[i] = orc_rng_uniform(&rng);
                /* The fastest of 3 runs: the machine's other work adds 4 ms ticks. */
                double best_t = INFINITY;
                int64_t kept = 0;
                for (int rep = 0; rep < 3; rep++) {
                    memcpy(logits, raw, sizeof(float) * (size_t)V);
                    double a = now_us();
                    kept = orc_token_filter_apply(f, m, logits, V, &end, 1, 160 - step);
                    if (now_us() - a < best_t) best_t = now_us() - a;
                }
                times[nt++] = best_t;
                assert_true(kept > 0);
                int32_t best = -1;
                for (int64_t i = 0; i < V; i++)
                    if (isfinite(logits[i]) && (best < 0 || logits[i] > logits[best])) best = (int32_t)i;
                if (best == end) break;
                size_t n = 0;
                const char *b = orc_tokenizer_id_to_token(tok, best, &n);
                assert_true(orc_json_matcher_advance(m, b, n));
                if (orc_json_matcher_finished(m)) break;
            }
        }
        double sum = 0;
        for (size_t i = 0; i < nt; i++) sum += times[i];
        qsort(times, nt, sizeof *times, cmp_double);
        printf("filter: %-20s %zu tokens: mean %.0f us, median %.0f us, p90 %.0f us, max %.0f us per token\n", names[k], nt,
               sum / (double)nt, times[nt / 2], times[nt * 9 / 10], times[nt - 1]);
        orc_json_matcher_free(m);
        orc_json_schema_free(s);
    }
    free(times);
    free(logits);
    free(raw);
    orc_token_filter_free(f);
    orc_tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_reject),
        cmocka_unit_test(test_prefix_and_done),
        cmocka_unit_test(test_schema_errors),
        cmocka_unit_test(test_filter_matches_brute_force),
        cmocka_unit_test(test_random_walks_are_valid),
        cmocka_unit_test(test_filter_cost),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
