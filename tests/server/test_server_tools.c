/* Tool calls and structured output of `orchard serve` over loopback, on a
 * tiny random model (context 1024) whose tokenizer is trained here: with
 * tool_choice "required" or a named tool, every answer for many seeds at
 * temperatures 0 and 1 is a tool call whose arguments parse and validate
 * against the tool's schema; "auto" gives text or a valid call;
 * response_format json_object / json_schema answers always parse (and
 * validate); streamed and whole answers agree under greedy decoding (the
 * call's name and arguments, sent in pieces as they are decoded, the finish
 * reason); a history with tool calls
 * and tool results is accepted; logit_bias, the penalties and token-id
 * prompts work; bad tools, tool_choice, response_format and logit_bias
 * are 400s naming the field; and Llama-3's call syntax (a bare JSON call)
 * works the same way. */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "orchard/server.h"
#include "server_test_util.h"

static const char CORPUS[] =
    "The whale rose from the grey sea and the ship turned to follow it. "
    "{\"city\": \"Oslo\", \"unit\": \"c\", \"days\": 3} {\"name\": \"get_weather\", \"arguments\": {}} "
    "<tool_call> [1, 2, 3] true false null -0.5e3 \"text\" the captain stood on the deck.";

static orc_tokenizer *TOK;
static orc_llm *M;
static orc_server *SRV;
static int PORT;

static http_res post(const char *path, const char *body) {
    return srv_test_http(PORT, "POST", path, body, NULL, 0, 120L);
}

static json_t *post_ok(const char *path, const char *body) {
    http_res r = post(path, body);
    if (r.status != 200) fprintf(stderr, "%s -> %ld %s\n", body, r.status, r.body);
    assert_int_equal(r.status, 200);
    json_t *v = json_loads(r.body, 0, NULL);
    assert_non_null(v);
    free(r.body);
    return v;
}

static void expect_error(const char *path, const char *body, const char *param) {
    http_res r = post(path, body);
    if (r.status != 400) fprintf(stderr, "%s -> %ld %s\n", body, r.status, r.body);
    assert_int_equal(r.status, 400);
    json_t *v = json_loads(r.body, 0, NULL), *e = json_object_get(v, "error");
    assert_true(json_is_object(e));
    const char *p = json_string_value(json_object_get(e, "param"));
    if (!p || strcmp(p, param) != 0) fprintf(stderr, "param: want %s, got %s\n", param, r.body);
    assert_non_null(p);
    assert_string_equal(p, param);
    assert_true(json_string_length(json_object_get(e, "message")) > 0);
    json_decref(v);
    free(r.body);
}

static int setup(void **state) {
    (void)state;
    curl_global_init(CURL_GLOBAL_ALL);
    if (srv_test_tiny_model(CORPUS, 360, 1, 1024, 3, false, &TOK, &M) != 0) return -1;
    orc_error err = {0};
    orc_server_opts o;
    orc_server_opts_default(&o);
    o.port = 0;
    o.parallel = 2;
    o.model_name = "tiny";
    o.threads_per_slot = 1;
    SRV = orc_server_start(M, TOK, &o, &err);
    if (!SRV) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    PORT = orc_server_port(SRV);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    orc_server_stop(SRV);
    orc_llm_free(M);
    orc_tokenizer_free(TOK);
    curl_global_cleanup();
    return 0;
}

static const char TOOLS[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"weather in a city\", "
    "\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"maxLength\": 16}, "
    "\"unit\": {\"enum\": [\"c\", \"f\"]}, \"days\": {\"type\": \"integer\"}}, \"required\": [\"city\", \"unit\"]}}}, "
    "{\"type\": \"function\", \"function\": {\"name\": \"get_time\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"zone\": {\"type\": [\"string\", \"null\"]}, \"tags\": {\"type\": \"array\", \"items\": "
    "{\"type\": \"boolean\"}, \"maxItems\": 3}}, \"required\": [\"zone\"]}}}]";

/* The arguments of a call validate against its tool's schema (above). */
static void check_call(json_t *call, const char *want_name) {
    assert_string_equal(json_string_value(json_object_get(call, "type")), "function");
    assert_true(strncmp(json_string_value(json_object_get(call, "id")), "call_", 5) == 0);
    json_t *fn = json_object_get(call, "function");
    const char *name = json_string_value(json_object_get(fn, "name"));
    const char *args = json_string_value(json_object_get(fn, "arguments"));
    assert_non_null(name);
    assert_non_null(args);
    if (want_name) assert_string_equal(name, want_name);
    json_error_t je;
    json_t *a = json_loads(args, 0, &je);
    if (!a) fprintf(stderr, "arguments do not parse: %s (%s)\n", args, je.text);
    assert_true(json_is_object(a));
    const char *k;
    json_t *v;
    if (strcmp(name, "get_weather") == 0) {
        json_t *city = json_object_get(a, "city"), *unit = json_object_get(a, "unit");
        assert_true(json_is_string(city));
        size_t chars = 0;
        for (const char *p = json_string_value(city); *p; p++) chars += ((unsigned char)*p & 0xC0) != 0x80;
        assert_true(chars <= 16);
        assert_true(json_is_string(unit));
        assert_true(!strcmp(json_string_value(unit), "c") || !strcmp(json_string_value(unit), "f"));
        json_object_foreach(a, k, v) {
            assert_true(!strcmp(k, "city") || !strcmp(k, "unit") || (!strcmp(k, "days") && json_is_integer(v)));
        }
    } else {
        assert_string_equal(name, "get_time");
        json_t *zone = json_object_get(a, "zone");
        assert_true(json_is_string(zone) || json_is_null(zone));
        json_object_foreach(a, k, v) {
            if (!strcmp(k, "tags")) {
                assert_true(json_is_array(v) && json_array_size(v) <= 3);
                for (size_t i = 0; i < json_array_size(v); i++) assert_true(json_is_boolean(json_array_get(v, i)));
            } else {
                assert_string_equal(k, "zone");
            }
        }
    }
    json_decref(a);
}

static json_t *choice0(json_t *v) { return json_array_get(json_object_get(v, "choices"), 0); }

static void test_required_and_named_calls_validate(void **state) {
    (void)state;
    char body[4096];
    int calls = 0;
    for (int seed = 1; seed <= 12; seed++) {
        for (int t = 0; t < 2; t++) {
            const char *choice = seed % 3 == 0 ? "{\"type\": \"function\", \"function\": {\"name\": \"get_time\"}}"
                                               : "\"required\"";
            snprintf(body, sizeof body,
                     "{\"messages\": [{\"role\": \"user\", \"content\": \"weather in Oslo?\"}], \"tools\": %s, "
                     "\"tool_choice\": %s, \"temperature\": %d, \"seed\": %d, \"max_tokens\": %d}",
                     TOOLS, choice, t, seed, 50 + seed * 5);
            json_t *v = post_ok("/v1/chat/completions", body);
            json_t *ch = choice0(v), *msg = json_object_get(ch, "message");
            assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls");
            assert_true(json_is_null(json_object_get(msg, "content")));
            json_t *tc = json_object_get(msg, "tool_calls");
            assert_int_equal(json_array_size(tc), 1);
            check_call(json_array_get(tc, 0), seed % 3 == 0 ? "get_time" : NULL);
            json_t *u = json_object_get(v, "usage");
            assert_true(json_integer_value(json_object_get(u, "completion_tokens")) <= 50 + seed * 5);
            calls++;
            json_decref(v);
        }
    }
    assert_int_equal(calls, 24);
}

static void test_auto_gives_text_or_valid_call(void **state) {
    (void)state;
    char body[4096];
    int texts = 0, calls = 0;
    for (int seed = 1; seed <= 8; seed++) {
        snprintf(body, sizeof body,
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"tools\": %s, \"temperature\": 1, "
                 "\"seed\": %d, \"max_tokens\": 40%s}",
                 TOOLS, seed, seed % 2 ? ", \"logit_bias\": {\"0\": 0}" : "");
        json_t *v = post_ok("/v1/chat/completions", body);
        json_t *ch = choice0(v), *msg = json_object_get(ch, "message");
        const char *fin = json_string_value(json_object_get(ch, "finish_reason"));
        if (!strcmp(fin, "tool_calls")) {
            check_call(json_array_get(json_object_get(msg, "tool_calls"), 0), NULL);
            calls++;
        } else {
            assert_true(json_is_string(json_object_get(msg, "content")));
            assert_null(json_object_get(msg, "tool_calls"));
            texts++;
        }
        json_decref(v);
    }
    assert_int_equal(texts + calls, 8);
    /* Steer the first token into the trigger with logit_bias: "<" then the
     * call is forced to be well formed once it starts. */
    int32_t lt = orc_tokenizer_token_to_id(TOK, "<", 1);
    assert_true(lt >= 0);
    snprintf(body, sizeof body,
             "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"tools\": %s, \"temperature\": 0, "
             "\"max_tokens\": 60, \"logit_bias\": {\"%d\": 100}}",
             TOOLS, lt);
    json_t *v = post_ok("/v1/chat/completions", body);
    json_t *ch = choice0(v);
    const char *fin = json_string_value(json_object_get(ch, "finish_reason"));
    if (!strcmp(fin, "tool_calls")) check_call(json_array_get(json_object_get(json_object_get(ch, "message"), "tool_calls"), 0), NULL);
    json_decref(v);
}

static void test_response_format(void **state) {
    (void)state;
    char body[2048];
    const char *schema = "{\"type\": \"object\", \"properties\": {\"answer\": {\"type\": \"string\", \"maxLength\": 10}, "
                         "\"score\": {\"type\": \"number\"}, \"ok\": {\"type\": \"boolean\"}}, \"required\": [\"answer\", \"score\"], "
                         "\"additionalProperties\": false}";
    for (int seed = 1; seed <= 10; seed++) {
        for (int t = 0; t < 2; t++) {
            if (seed % 2) {
                snprintf(body, sizeof body, "{\"messages\": [{\"role\": \"user\", \"content\": \"json please\"}], "
                         "\"response_format\": {\"type\": \"json_object\"}, \"temperature\": %d, \"seed\": %d, \"max_tokens\": 48}", t, seed);
            } else {
                snprintf(body, sizeof body, "{\"messages\": [{\"role\": \"user\", \"content\": \"json please\"}], "
                         "\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"r\", \"strict\": true, "
                         "\"schema\": %s}}, \"temperature\": %d, \"seed\": %d, \"max_tokens\": 48}", schema, t, seed);
            }
            json_t *v = post_ok("/v1/chat/completions", body);
            json_t *ch = choice0(v);
            const char *text = json_string_value(json_object_get(json_object_get(ch, "message"), "content"));
            assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "stop");
            json_error_t je;
            json_t *x = json_loads(text, 0, &je);
            if (!x) fprintf(stderr, "not JSON: %s (%s)\n", text, je.text);
            assert_true(json_is_object(x));
            if (seed % 2 == 0) {
                assert_true(json_is_string(json_object_get(x, "answer")));
                assert_true(json_is_number(json_object_get(x, "score")));
                const char *k;
                json_t *val;
                json_object_foreach(x, k, val) {
                    assert_true(!strcmp(k, "answer") || !strcmp(k, "score") || (!strcmp(k, "ok") && json_is_boolean(val)));
                }
            }
            json_decref(x);
            json_decref(v);
        }
    }
}

/* Concatenate a stream's content or tool-call deltas. */
static int ARG_CHUNKS; /* tool-call deltas that carried argument text */

static void stream_collect(const char *body, char *content, size_t cap, char *name, char *args, char *finish) {
    content[0] = name[0] = args[0] = finish[0] = 0;
    ARG_CHUNKS = 0;
    for (const char *p = body; (p = strstr(p, "data: ")); ) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        if (strncmp(p, "[DONE]", 6) == 0) break;
        json_t *e = json_loadb(p, (size_t)(end - p), 0, NULL);
        assert_non_null(e);
        json_t *ch = json_array_get(json_object_get(e, "choices"), 0), *d = json_object_get(ch, "delta");
        json_t *c = json_object_get(d, "content");
        if (json_is_string(c)) strncat(content, json_string_value(c), cap - strlen(content) - 1);
        json_t *tc = json_array_get(json_object_get(d, "tool_calls"), 0);
        if (tc) {
            assert_int_equal(json_integer_value(json_object_get(tc, "index")), 0);
            json_t *fn = json_object_get(tc, "function");
            if (json_is_string(json_object_get(fn, "name"))) strcat(name, json_string_value(json_object_get(fn, "name")));
            if (json_is_string(json_object_get(fn, "arguments"))) strncat(args, json_string_value(json_object_get(fn, "arguments")), cap - strlen(args) - 1);
            ARG_CHUNKS += json_string_length(json_object_get(fn, "arguments")) > 0;
        }
        if (json_is_string(json_object_get(ch, "finish_reason"))) strcpy(finish, json_string_value(json_object_get(ch, "finish_reason")));
        json_decref(e);
        p = end + 2;
    }
}

static void test_stream_matches_whole(void **state) {
    (void)state;
    char body[4096], content[4096], name[128], args[4096], finish[32];
    const char *extras[] = {", \"tool_choice\": \"required\"", ", \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}",
                            ", \"tool_choice\": \"auto\""};
    for (int k = 0; k < 4; k++) {
        const char *fmt = k < 3 ? "{\"messages\": [{\"role\": \"user\", \"content\": \"weather\"}], \"tools\": %s%s, "
                                  "\"temperature\": 0, \"max_tokens\": 60, \"stream\": %s}"
                                : "{\"messages\": [{\"role\": \"user\", \"content\": \"weather\"}], \"response_format\": "
                                  "{\"type\": \"json_object\"}%.0s%.0s, \"temperature\": 0, \"max_tokens\": 40, \"stream\": %s}";
        snprintf(body, sizeof body, fmt, TOOLS, k < 3 ? extras[k] : "", "false");
        json_t *whole = post_ok("/v1/chat/completions", body);
        snprintf(body, sizeof body, fmt, TOOLS, k < 3 ? extras[k] : "", "true");
        http_res r = post("/v1/chat/completions", body);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "data: [DONE]\n\n"));
        stream_collect(r.body, content, sizeof content, name, args, finish);
        json_t *ch = choice0(whole), *msg = json_object_get(ch, "message");
        assert_string_equal(finish, json_string_value(json_object_get(ch, "finish_reason")));
        json_t *tc = json_array_get(json_object_get(msg, "tool_calls"), 0);
        if (tc) {
            json_t *fn = json_object_get(tc, "function");
            assert_string_equal(name, json_string_value(json_object_get(fn, "name")));
            assert_string_equal(args, json_string_value(json_object_get(fn, "arguments")));
            assert_string_equal(content, "");
            assert_true(ARG_CHUNKS >= 2); /* the arguments stream as they are decoded */
        } else {
            assert_int_not_equal(k, 0);
            assert_int_not_equal(k, 1);
            assert_string_equal(content, json_string_value(json_object_get(msg, "content")));
        }
        free(r.body);
        json_decref(whole);
    }
}

static void test_history_with_tool_calls(void **state) {
    (void)state;
    char body[4096];
    snprintf(body, sizeof body,
             "{\"messages\": [{\"role\": \"user\", \"content\": \"weather in Oslo?\"}, {\"role\": \"assistant\", "
             "\"content\": null, \"tool_calls\": [{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": "
             "\"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Oslo\\\", \\\"unit\\\": \\\"c\\\"}\"}}]}, {\"role\": \"tool\", "
             "\"tool_call_id\": \"call_1\", \"content\": \"12 degrees\"}], \"tools\": %s, \"tool_choice\": \"none\", "
             "\"temperature\": 0, \"max_tokens\": 8}", TOOLS);
    json_t *v = post_ok("/v1/chat/completions", body);
    json_t *ch = choice0(v);
    assert_true(json_is_string(json_object_get(json_object_get(ch, "message"), "content")));
    assert_string_not_equal(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls");
    /* The history's call is part of the prompt: more prompt tokens than without it. */
    json_int_t with = json_integer_value(json_object_get(json_object_get(v, "usage"), "prompt_tokens"));
    json_decref(v);
    snprintf(body, sizeof body, "{\"messages\": [{\"role\": \"user\", \"content\": \"weather in Oslo?\"}, {\"role\": \"tool\", "
             "\"content\": \"12 degrees\"}], \"tools\": %s, \"tool_choice\": \"none\", \"max_tokens\": 2}", TOOLS);
    v = post_ok("/v1/chat/completions", body);
    json_int_t without = json_integer_value(json_object_get(json_object_get(v, "usage"), "prompt_tokens"));
    assert_true(with > without + 10);
    json_decref(v);
}

static void test_bias_penalties_token_prompts(void **state) {
    (void)state;
    char body[512];
    int32_t id = orc_tokenizer_token_to_id(TOK, "whale", 5);
    if (id < 0) id = orc_tokenizer_token_to_id(TOK, "w", 1);
    assert_true(id >= 0);
    snprintf(body, sizeof body, "{\"prompt\": \"The\", \"temperature\": 0, \"max_tokens\": 3, \"logit_bias\": {\"%d\": 100}}", id);
    json_t *v = post_ok("/v1/completions", body);
    size_t len = 0;
    const char *tok = orc_tokenizer_id_to_token(TOK, id, &len);
    const char *text = json_string_value(json_object_get(choice0(v), "text"));
    assert_int_equal(strlen(text), 3 * len);
    for (int i = 0; i < 3; i++) assert_memory_equal(text + i * len, tok, len);
    json_decref(v);
    /* A strong frequency penalty stops the biased token from repeating. */
    snprintf(body, sizeof body, "{\"prompt\": \"The\", \"temperature\": 0, \"max_tokens\": 3, \"logit_bias\": {\"%d\": 5}, "
             "\"frequency_penalty\": 2, \"presence_penalty\": 2}", id);
    v = post_ok("/v1/completions", body);
    text = json_string_value(json_object_get(choice0(v), "text"));
    assert_false(strlen(text) == 3 * len && memcmp(text, tok, len) == 0 && memcmp(text + len, tok, len) == 0 &&
                 memcmp(text + 2 * len, tok, len) == 0);
    json_decref(v);
    /* Token ids as the prompt: the same answer as the text they encode (with the begin token). */
    json_t *a = post_ok("/v1/completions", "{\"prompt\": \"The whale\", \"temperature\": 0, \"max_tokens\": 6}");
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(orc_tokenizer_encode(TOK, "The whale", 9, 0, &ids, &n, NULL), ORC_OK);
    char list[256];
    int at = snprintf(list, sizeof list, "[%d", orc_tokenizer_special_id(TOK, ORC_TOK_BEGIN_OF_TEXT));
    for (size_t i = 0; i < n; i++) at += snprintf(list + at, sizeof list - (size_t)at, ", %d", ids[i]);
    snprintf(list + at, sizeof list - (size_t)at, "]");
    free(ids);
    snprintf(body, sizeof body, "{\"prompt\": %s, \"temperature\": 0, \"max_tokens\": 6, \"echo\": true}", list);
    json_t *b = post_ok("/v1/completions", body);
    const char *ta = json_string_value(json_object_get(choice0(a), "text"));
    const char *tb = json_string_value(json_object_get(choice0(b), "text"));
    assert_true(strlen(tb) > strlen(ta));
    assert_string_equal(tb + strlen(tb) - strlen(ta), ta); /* echo: prompt text, then the same answer */
    assert_non_null(strstr(tb, "The whale"));
    json_decref(a);
    json_decref(b);
    snprintf(body, sizeof body, "{\"prompt\": [[1, 2], %s], \"temperature\": 0, \"max_tokens\": 2}", list);
    json_t *c = post_ok("/v1/completions", body);
    assert_int_equal(json_array_size(json_object_get(c, "choices")), 2);
    json_decref(c);
}

static void test_errors(void **state) {
    (void)state;
    const char *chat = "/v1/chat/completions";
    char body[4096];
    const char *msgs = "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]";
    struct {
        const char *extra, *param;
    } cases[] = {
        {"\"tools\": {}", "tools"},
        {"\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\", "
         "\"properties\": {\"when\": {\"type\": \"string\", \"pattern\": \"^2\"}}}}}]",
         "tools[0].function.parameters"},
        {"\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"objekt\"}}}]",
         "tools[0].function.parameters"},
        {"\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": [1]}}]", "tools[0].function.parameters"},
        {"\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"bad name\"}}]", "tools[0].function.name"},
        {"\"tools\": [{\"type\": \"function\", \"function\": {\"description\": \"no name\"}}]", "tools[0].function.name"},
        {"\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}, {\"type\": \"function\", \"function\": {\"name\": \"f\"}}]",
         "tools[1].function.name"},
        {"\"tools\": [{\"type\": \"retrieval\"}]", "tools[0]"},
        {"\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": 3}}]", "tools[0].function.description"},
        {"\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": {\"type\": \"function\", "
         "\"function\": {\"name\": \"g\"}}", "tool_choice"},
        {"\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": \"always\"", "tool_choice"},
        {"\"tool_choice\": \"required\"", "tool_choice"},
        {"\"tool_choice\": 3", "tool_choice"},
        {"\"functions\": [{\"name\": \"f\"}]", "functions"},
        {"\"response_format\": {\"type\": \"xml\"}", "response_format.type"},
        {"\"response_format\": {\"type\": \"json_schema\"}", "response_format.json_schema"},
        {"\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"schema\": {}}}", "response_format.json_schema.name"},
        {"\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"a\", \"schema\": {\"type\": \"object\", "
         "\"properties\": {\"x\": {\"$ref\": \"#/y\"}}}}}", "response_format.json_schema.schema"},
        {"\"response_format\": {\"type\": \"json_object\"}, \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]",
         "response_format"},
        {"\"logit_bias\": {\"x\": 1}", "logit_bias"},
        {"\"logit_bias\": {\"5\": 101}", "logit_bias"},
        {"\"logit_bias\": {\"99999\": 1}", "logit_bias"},
        {"\"presence_penalty\": 3", "presence_penalty"},
        {"\"frequency_penalty\": \"x\"", "frequency_penalty"},
        {"\"parallel_tool_calls\": 1", "parallel_tool_calls"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(body, sizeof body, "{%s, %s}", msgs, cases[i].extra);
        expect_error(chat, body, cases[i].param);
    }
    expect_error(chat, "{\"messages\": [{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"name\": 5}}]}]}",
                 "messages[0].tool_calls[0]");
    expect_error(chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\", \"tool_calls\": []}]}", "messages[0].tool_calls");
    expect_error(chat, "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\", \"tool_call_id\": 5}]}", "messages[0].tool_call_id");
    expect_error("/v1/completions", "{\"prompt\": [1, -2]}", "prompt");
    expect_error("/v1/completions", "{\"prompt\": [[1], [999999]]}", "prompt[1]");
    expect_error("/v1/completions", "{\"prompt\": []}", "prompt");
    expect_error("/v1/embeddings", "{\"input\": [1, 2]}", "input[0]");
    /* The server still answers. */
    json_decref(post_ok("/v1/completions", "{\"prompt\": \"The\", \"max_tokens\": 2}"));
}

/* Llama-3's call syntax: the call is a bare {"name": ..., "parameters": ...}
 * that starts the reply (its "{" is the trigger); the response has the same
 * OpenAI shape. A second model and tokenizer with Llama-3's special tokens. */
static void test_llama3_calls(void **state) {
    (void)state;
    static const char *const specials[] = {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                           "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>"};
    const char *texts[1] = {CORPUS};
    size_t lens[1] = {sizeof CORPUS - 1};
    orc_tokenizer_train_opts to = {.vocab_size = 360, .specials = specials, .n_specials = 6};
    orc_error err = {0};
    orc_tokenizer *tok = orc_tokenizer_train(texts, lens, 1, &to, &err);
    assert_non_null(tok);
    orc_llm_config c = M->cfg;
    c.vocab_size = (int64_t)orc_tokenizer_vocab_size(tok) + 4;
    c.eos_token_id = orc_tokenizer_special_id(tok, "<|end_of_text|>");
    orc_llm *m = orc_llm_create(&c, false, &err);
    assert_non_null(m);
    orc_llm_init_weights(m, 9);
    orc_server_opts o;
    orc_server_opts_default(&o);
    o.port = 0;
    o.model_name = "tiny";
    o.threads_per_slot = 1;
    o.chat_template = ORC_CHAT_LLAMA3;
    orc_server *srv = orc_server_start(m, tok, &o, &err);
    assert_non_null(srv);
    const int keep = PORT;
    PORT = orc_server_port(srv);
    char body[4096], content[4096], name[128], args[4096], finish[32];
    for (int seed = 1; seed <= 4; seed++) {
        snprintf(body, sizeof body, "{\"messages\": [{\"role\": \"user\", \"content\": \"weather?\"}], \"tools\": %s, "
                 "\"tool_choice\": \"required\", \"temperature\": %d, \"seed\": %d, \"max_tokens\": 60, \"stream\": %s}",
                 TOOLS, seed % 2, seed, "false");
        json_t *v = post_ok("/v1/chat/completions", body);
        json_t *ch = choice0(v), *msg = json_object_get(ch, "message");
        assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls");
        json_t *call = json_array_get(json_object_get(msg, "tool_calls"), 0);
        check_call(call, NULL);
        /* The same request streamed. */
        snprintf(body, sizeof body, "{\"messages\": [{\"role\": \"user\", \"content\": \"weather?\"}], \"tools\": %s, "
                 "\"tool_choice\": \"required\", \"temperature\": %d, \"seed\": %d, \"max_tokens\": 60, \"stream\": %s}",
                 TOOLS, seed % 2, seed, "true");
        http_res r = post("/v1/chat/completions", body);
        assert_int_equal(r.status, 200);
        stream_collect(r.body, content, sizeof content, name, args, finish);
        json_t *fn = json_object_get(call, "function");
        assert_string_equal(name, json_string_value(json_object_get(fn, "name")));
        assert_string_equal(args, json_string_value(json_object_get(fn, "arguments")));
        assert_string_equal(finish, "tool_calls");
        free(r.body);
        json_decref(v);
    }
    PORT = keep;
    orc_server_stop(srv);
    orc_llm_free(m);
    orc_tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_required_and_named_calls_validate),
        cmocka_unit_test(test_auto_gives_text_or_valid_call),
        cmocka_unit_test(test_response_format),
        cmocka_unit_test(test_stream_matches_whole),
        cmocka_unit_test(test_history_with_tool_calls),
        cmocka_unit_test(test_bias_penalties_token_prompts),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_llama3_calls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
