/* `orchard serve` over loopback with libcurl, on a tiny random model and a
 * tokenizer trained here: every endpoint answers in OpenAI's shapes;
 * streamed and whole answers agree under greedy decoding (chat and text,
 * with stop strings); log-probabilities, echo, n, seeds and usage add up;
 * embeddings are unit vectors (float and base64 agree); every error case
 * gives its status and an error object naming the field; 8 client threads
 * x 4 requests on 2 slots and a queue of 2 each get an answer or a 429; a
 * client that leaves mid-stream frees its slot (seen in /metrics); and the
 * orchard binary stops cleanly on SIGTERM. */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gradcheck.h"
#include "orchard/server.h"
#include "server_test_util.h"
#include "testdir.h"

static const char CORPUS[] =
    "The whale rose from the grey sea and the ship turned to follow it. "
    "The captain stood on the deck and watched the white whale swim away. "
    "Every sailor on the ship knew the sea was wide and the whale was old. "
    "They sailed for days and nights, and the wind was cold on the water. "
    "The harpoon was ready, the boats were ready, and the men were tired.";

typedef struct fixture {
    orc_tokenizer *tok;
    orc_llm *m;
    orc_server *srv;
    int port;
    char dir[256];
} fixture;

static fixture *F;

/* ---- HTTP helpers ------------------------------------------------------------------ */

static http_res http_to(int port, const char *method, const char *path, const char *body, const char *auth,
                        int abort_after) {
    return srv_test_http(port, method, path, body, auth, abort_after, 60L);
}

static http_res http(const char *method, const char *path, const char *body) {
    return http_to(F->port, method, path, body, NULL, 0);
}

static json_t *parse(const http_res *r) {
    json_error_t e;
    json_t *v = json_loads(r->body, 0, &e);
    if (!v) fprintf(stderr, "not JSON (%ld): %s\n", r->status, r->body);
    assert_non_null(v);
    return v;
}

/* The status, and for an error, an OpenAI error object naming param. */
static void expect_error(int port, const char *method, const char *path, const char *body, const char *auth,
                         long status, const char *param) {
    http_res r = http_to(port, method, path, body, auth, 0);
    if (r.status != status) fprintf(stderr, "%s %s %s -> %ld %s\n", method, path, body ? body : "", r.status, r.body);
    assert_int_equal(r.status, status);
    json_t *v = parse(&r), *e = json_object_get(v, "error");
    assert_true(json_is_object(e));
    assert_true(json_is_string(json_object_get(e, "message")));
    assert_true(json_string_length(json_object_get(e, "message")) > 0);
    assert_true(json_is_string(json_object_get(e, "type")));
    assert_non_null(json_object_get(e, "param"));
    assert_non_null(json_object_get(e, "code"));
    if (param) {
        if (!json_is_string(json_object_get(e, "param")) || strcmp(json_string_value(json_object_get(e, "param")), param))
            fprintf(stderr, "param: want %s, got %s\n", param, r.body);
        assert_string_equal(json_string_value(json_object_get(e, "param")), param);
    }
    json_decref(v);
    free(r.body);
}

/* The data: payloads of an SSE body; the last must be [DONE]. */
static json_t *sse_events(const char *body) {
    json_t *arr = json_array();
    const char *p = body;
    bool done = false;
    while ((p = strstr(p, "data: "))) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        assert_false(done); /* nothing after [DONE] */
        if (end - p == 6 && strncmp(p, "[DONE]", 6) == 0) {
            done = true;
        } else {
            json_error_t e;
            json_t *v = json_loadb(p, (size_t)(end - p), 0, &e);
            assert_non_null(v);
            json_array_append_new(arr, v);
        }
        p = end + 2;
    }
    assert_true(done);
    return arr;
}

static double metric_value(int port, const char *name) {
    http_res r = http_to(port, "GET", "/metrics", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(r.body, key);
    double v = p ? atof(p + strlen(key)) : -1.0;
    free(r.body);
    return v;
}

/* ---- fixture ---------------------------------------------------------------------------- */

static orc_server *start(int parallel, int queue, const char *key, int delay_us) {
    orc_server_opts o;
    orc_server_opts_default(&o);
    o.port = 0;
    o.parallel = parallel;
    o.queue = queue;
    o.api_key = key;
    o.model_name = "tiny";
    o.max_body = 4096;
    o.threads_per_slot = 1;
    o.token_delay_us = delay_us;
    orc_error err = {0};
    orc_server *s = orc_server_start(F->m, F->tok, &o, &err);
    if (!s) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(s);
    return s;
}

static int setup(void **state) {
    (void)state;
    curl_global_init(CURL_GLOBAL_ALL);
    F = calloc(1, sizeof *F);
    if (srv_test_tiny_model(CORPUS, 300, 2, 96, 5, true, &F->tok, &F->m) != 0) return -1;
    orc_error err = {0};
    if (orc_test_dir_make(F->dir, sizeof F->dir, "serve") != 0) return -1;
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", F->dir);
    if (orc_llm_save(F->m, F->dir, &err) != ORC_OK || orc_tokenizer_save(F->tok, path, &err) != ORC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    F->srv = start(2, 8, NULL, 0);
    F->port = orc_server_port(F->srv);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    orc_server_stop(F->srv);
    orc_llm_free(F->m);
    orc_tokenizer_free(F->tok);
    orc_test_dir_remove(F->dir);
    free(F);
    curl_global_cleanup();
    return 0;
}

/* ---- simple endpoints ----------------------------------------------------------------- */

static void test_health_models_metrics(void **state) {
    (void)state;
    http_res r = http("GET", "/health", NULL);
    assert_int_equal(r.status, 200);
    json_t *v = parse(&r);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "ok");
    assert_int_equal(json_integer_value(json_object_get(v, "slots_idle")), 2);
    json_decref(v);
    free(r.body);
    r = http("GET", "/v1/models", NULL);
    assert_int_equal(r.status, 200);
    v = parse(&r);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "list");
    json_t *m0 = json_array_get(json_object_get(v, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(m0, "id")), "tiny");
    assert_string_equal(json_string_value(json_object_get(m0, "object")), "model");
    json_decref(v);
    free(r.body);
    r = http("GET", "/v1/models/tiny", NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    expect_error(F->port, "GET", "/v1/models/other", NULL, NULL, 404, "model");
    r = http("GET", "/metrics", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "# TYPE orchard_requests_total counter"));
    assert_non_null(strstr(r.body, "orchard_requests_total{endpoint=\"models\",status=\"200\"}"));
    assert_non_null(strstr(r.body, "\norchard_slots_total 2\n"));
    assert_non_null(strstr(r.body, "\norchard_queue_depth 0\n"));
    assert_non_null(strstr(r.body, "orchard_decode_tokens_per_second"));
    free(r.body);
}

/* ---- chat and completions ----------------------------------------------------------------- */

static json_t *post_ok(const char *path, const char *body) {
    http_res r = http("POST", path, body);
    if (r.status != 200) fprintf(stderr, "%s -> %ld %s\n", body, r.status, r.body);
    assert_int_equal(r.status, 200);
    json_t *v = parse(&r);
    free(r.body);
    return v;
}

static const char *content_of(json_t *v, size_t i) {
    json_t *ch = json_array_get(json_object_get(v, "choices"), i);
    json_t *msg = json_object_get(ch, "message");
    return json_string_value(msg ? json_object_get(msg, "content") : json_object_get(ch, "text"));
}

static void check_usage(json_t *v) {
    json_t *u = json_object_get(v, "usage");
    json_int_t p = json_integer_value(json_object_get(u, "prompt_tokens"));
    json_int_t c = json_integer_value(json_object_get(u, "completion_tokens"));
    assert_true(p > 0);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), p + c);
}

/* Stream the same request and compare the joined deltas, finish reason and usage. */
static void stream_agrees(const char *path, const char *body_fmt, const char *extra) {
    char body[1024];
    snprintf(body, sizeof body, body_fmt, "false", extra);
    json_t *whole = post_ok(path, body);
    snprintf(body, sizeof body, body_fmt, "true, \"stream_options\": {\"include_usage\": true}", extra);
    http_res r = http("POST", path, body);
    assert_int_equal(r.status, 200);
    json_t *ev = sse_events(r.body);
    bool chat = strstr(path, "chat") != NULL;
    char text[4096] = "";
    const char *finish = NULL;
    json_t *usage = NULL;
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        assert_string_equal(json_string_value(json_object_get(e, "object")), chat ? "chat.completion.chunk" : "text_completion");
        json_t *choices = json_object_get(e, "choices");
        if (json_array_size(choices) == 0) {
            usage = json_object_get(e, "usage");
            continue;
        }
        json_t *ch = json_array_get(choices, 0);
        json_t *piece = chat ? json_object_get(json_object_get(ch, "delta"), "content") : json_object_get(ch, "text");
        if (i == 0 && chat)
            assert_string_equal(json_string_value(json_object_get(json_object_get(ch, "delta"), "role")), "assistant");
        if (json_is_string(piece)) strncat(text, json_string_value(piece), sizeof text - strlen(text) - 1);
        if (json_is_string(json_object_get(ch, "finish_reason"))) finish = json_string_value(json_object_get(ch, "finish_reason"));
    }
    assert_string_equal(text, content_of(whole, 0));
    assert_non_null(finish);
    assert_string_equal(finish, json_string_value(json_object_get(json_array_get(json_object_get(whole, "choices"), 0),
                                                                  "finish_reason")));
    assert_non_null(usage);
    assert_int_equal(json_integer_value(json_object_get(usage, "completion_tokens")),
                     json_integer_value(json_object_get(json_object_get(whole, "usage"), "completion_tokens")));
    json_decref(ev);
    json_decref(whole);
    free(r.body);
}

static void test_chat(void **state) {
    (void)state;
    json_t *v = post_ok("/v1/chat/completions",
                        "{\"model\": \"tiny\", \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
                        "{\"role\": \"user\", \"content\": \"The whale\"}, {\"role\": \"assistant\", \"content\": \"rose\"},"
                        "{\"role\": \"tool\", \"content\": \"42\"}, {\"role\": \"user\", \"content\": [{\"type\": \"text\", "
                        "\"text\": \"and the \"}, {\"type\": \"text\", \"text\": \"sea?\"}]}], \"temperature\": 0, \"max_tokens\": 12}");
    assert_string_equal(json_string_value(json_object_get(v, "object")), "chat.completion");
    assert_true(strncmp(json_string_value(json_object_get(v, "id")), "chatcmpl-", 9) == 0);
    assert_string_equal(json_string_value(json_object_get(v, "model")), "tiny");
    json_t *ch = json_array_get(json_object_get(v, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ch, "message"), "role")), "assistant");
    assert_non_null(content_of(v, 0));
    const char *fin = json_string_value(json_object_get(ch, "finish_reason"));
    assert_true(strcmp(fin, "stop") == 0 || strcmp(fin, "length") == 0);
    assert_true(json_is_null(json_object_get(ch, "logprobs")));
    check_usage(v);
    assert_true(json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens")) <= 12);
    json_decref(v);
}

static void test_stream_matches_whole(void **state) {
    (void)state;
    /* The format takes the stream flag, then extra fields. */
    const char *fmt = "{\"messages\": [{\"role\": \"user\", \"content\": \"The captain\"}], \"temperature\": 0, "
                      "\"max_tokens\": 30, \"stream\": %s%s}";
    stream_agrees("/v1/chat/completions", fmt, "");
    stream_agrees("/v1/chat/completions", fmt, ", \"logprobs\": true, \"top_logprobs\": 2");
    fmt = "{\"prompt\": \"The whale rose\", \"temperature\": 0, \"max_tokens\": 25, \"stream\": %s%s}";
    stream_agrees("/v1/completions", fmt, "");
    stream_agrees("/v1/completions", fmt, ", \"echo\": true");
    /* Sampling with a seed is reproducible, so it streams the same too. */
    stream_agrees("/v1/completions", fmt, ", \"temperature\": 1.0, \"seed\": 7");
}

static void test_stop_strings(void **state) {
    (void)state;
    json_t *v = post_ok("/v1/completions", "{\"prompt\": \"The whale rose\", \"temperature\": 0, \"max_tokens\": 30}");
    const char *full = content_of(v, 0);
    assert_true(strlen(full) > 8);
    /* A stop string from the middle of it, ASCII (the random model also makes
     * bytes that are not UTF-8, which come back as U+FFFD). */
    char stop[8] = {0};
    size_t at = 3;
    while (full[at + 2] && !(full[at] > 32 && full[at] < 127 && full[at + 1] > 32 && full[at + 1] < 127 &&
                             full[at + 2] > 32 && full[at + 2] < 127))
        at++;
    assert_true(full[at + 2] != 0);
    memcpy(stop, full + at, 3);
    size_t cut = (size_t)(strstr(full, stop) - full);
    char body[512];
    for (int stream = 0; stream < 2; stream++) {
        char fmt[256];
        snprintf(fmt, sizeof fmt, "{\"prompt\": \"The whale rose\", \"temperature\": 0, \"max_tokens\": 30, \"stop\": [\"zzzq\", %%s], \"stream\": %s}",
                 stream ? "true" : "false");
        json_t *s = json_string(stop);
        char *enc = json_dumps(s, JSON_ENCODE_ANY);
        snprintf(body, sizeof body, fmt, enc);
        free(enc);
        json_decref(s);
        if (!stream) {
            json_t *w = post_ok("/v1/completions", body);
            assert_int_equal(strlen(content_of(w, 0)), cut);
            assert_memory_equal(content_of(w, 0), full, cut);
            assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(w, "choices"), 0), "finish_reason")), "stop");
            json_decref(w);
        } else {
            http_res r = http("POST", "/v1/completions", body);
            json_t *ev = sse_events(r.body);
            char text[2048] = "";
            for (size_t i = 0; i < json_array_size(ev); i++) {
                json_t *t = json_object_get(json_array_get(json_object_get(json_array_get(ev, i), "choices"), 0), "text");
                if (json_is_string(t)) strcat(text, json_string_value(t));
            }
            assert_int_equal(strlen(text), cut); /* the stop string never streams */
            json_decref(ev);
            free(r.body);
        }
    }
    json_decref(v);
}

static void test_completions_n_echo_logprobs(void **state) {
    (void)state;
    json_t *v = post_ok("/v1/completions", "{\"prompt\": [\"The whale\", \"The sea\"], \"n\": 2, \"max_tokens\": 5, "
                                           "\"seed\": 3, \"temperature\": 0.9}");
    json_t *choices = json_object_get(v, "choices");
    assert_int_equal(json_array_size(choices), 4);
    for (size_t i = 0; i < 4; i++) assert_int_equal(json_integer_value(json_object_get(json_array_get(choices, i), "index")), i);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "text_completion");
    check_usage(v);
    json_t *again = post_ok("/v1/completions", "{\"prompt\": [\"The whale\", \"The sea\"], \"n\": 2, \"max_tokens\": 5, "
                                               "\"seed\": 3, \"temperature\": 0.9}");
    for (size_t i = 0; i < 4; i++) assert_string_equal(content_of(v, i), content_of(again, i));
    json_decref(again);
    json_decref(v);

    v = post_ok("/v1/completions", "{\"prompt\": \"The whale rose\", \"max_tokens\": 6, \"temperature\": 0, \"echo\": true, "
                                   "\"logprobs\": 2}");
    const char *text = content_of(v, 0);
    assert_true(strncmp(text, "The whale rose", 14) == 0);
    json_t *lp = json_object_get(json_array_get(json_object_get(v, "choices"), 0), "logprobs");
    json_t *tokens = json_object_get(lp, "tokens"), *tlp = json_object_get(lp, "token_logprobs");
    json_t *tops = json_object_get(lp, "top_logprobs"), *offs = json_object_get(lp, "text_offset");
    json_int_t ct = json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens"));
    assert_true(json_array_size(tokens) > (size_t)ct); /* prompt tokens come first */
    assert_int_equal(json_array_size(tlp), json_array_size(tokens));
    assert_int_equal(json_array_size(offs), json_array_size(tokens));
    assert_int_equal(json_integer_value(json_array_get(offs, 0)), 0);
    char joined[512] = "";
    for (size_t i = 0; i < json_array_size(tokens); i++) {
        strcat(joined, json_string_value(json_array_get(tokens, i)));
        json_t *l = json_array_get(tlp, i);
        assert_true(json_is_number(l));
        assert_true(json_number_value(l) <= 1e-6);
        assert_true(json_object_size(json_array_get(tops, i)) <= 2);
    }
    assert_true(strncmp(joined, text, strlen(text)) == 0 || strlen(joined) >= strlen(text));
    json_decref(v);
}

static void test_chat_logprobs(void **state) {
    (void)state;
    json_t *v = post_ok("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"The ship\"}], "
                                                "\"temperature\": 0, \"max_tokens\": 8, \"logprobs\": true, \"top_logprobs\": 3}");
    json_t *content = json_object_get(json_object_get(json_array_get(json_object_get(v, "choices"), 0), "logprobs"), "content");
    json_int_t ct = json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens"));
    assert_int_equal(json_array_size(content), ct);
    for (size_t i = 0; i < json_array_size(content); i++) {
        json_t *e = json_array_get(content, i), *tops = json_object_get(e, "top_logprobs");
        assert_true(json_is_string(json_object_get(e, "token")));
        assert_true(json_is_array(json_object_get(e, "bytes")));
        assert_int_equal(json_array_size(tops), 3);
        double chosen = json_number_value(json_object_get(e, "logprob"));
        double best = json_number_value(json_object_get(json_array_get(tops, 0), "logprob"));
        assert_true(fabs(chosen - best) < 1e-5); /* greedy takes the most likely */
        assert_true(best >= json_number_value(json_object_get(json_array_get(tops, 2), "logprob")));
    }
    json_decref(v);
}

/* A repeated prompt reuses a slot's cache (usage and metrics show it). */
static void test_prefix_reuse(void **state) {
    (void)state;
    const char *body = "{\"messages\": [{\"role\": \"system\", \"content\": \"You are a sailor on a ship.\"}, "
                       "{\"role\": \"user\", \"content\": \"The sea\"}], \"temperature\": 0, \"max_tokens\": 4}";
    json_t *a = post_ok("/v1/chat/completions", body), *b = post_ok("/v1/chat/completions", body);
    json_int_t cached = json_integer_value(
        json_object_get(json_object_get(json_object_get(b, "usage"), "prompt_tokens_details"), "cached_tokens"));
    json_int_t prompt = json_integer_value(json_object_get(json_object_get(b, "usage"), "prompt_tokens"));
    assert_true(cached >= prompt - 2 && cached > 0);
    assert_string_equal(content_of(a, 0), content_of(b, 0));
    assert_true(metric_value(F->port, "orchard_prompt_tokens_cached_total") >= (double)cached);
    json_decref(a);
    json_decref(b);
}

/* ---- embeddings ------------------------------------------------------------------------------ */

static void test_embeddings(void **state) {
    (void)state;
    json_t *v = post_ok("/v1/embeddings", "{\"model\": \"tiny\", \"input\": [\"The whale\", \"the cold sea\", \"The whale\"]}");
    json_t *data = json_object_get(v, "data");
    assert_int_equal(json_array_size(data), 3);
    float first[32];
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(data, i), *vec = json_object_get(e, "embedding");
        assert_string_equal(json_string_value(json_object_get(e, "object")), "embedding");
        assert_int_equal(json_array_size(vec), 32);
        double norm = 0;
        for (size_t d = 0; d < 32; d++) norm += pow(json_number_value(json_array_get(vec, d)), 2);
        assert_true(fabs(sqrt(norm) - 1.0) < 1e-4);
        if (i == 0)
            for (size_t d = 0; d < 32; d++) first[d] = (float)json_number_value(json_array_get(vec, d));
        if (i == 2)
            for (size_t d = 0; d < 32; d++) assert_true(fabsf(first[d] - (float)json_number_value(json_array_get(vec, d))) < 1e-6f);
    }
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "usage"), "prompt_tokens")),
                     json_integer_value(json_object_get(json_object_get(v, "usage"), "total_tokens")));
    json_decref(v);
    /* base64: the same floats, little-endian float32. */
    v = post_ok("/v1/embeddings", "{\"input\": \"The whale\", \"encoding_format\": \"base64\"}");
    const char *b64 = json_string_value(json_object_get(json_array_get(json_object_get(v, "data"), 0), "embedding"));
    assert_non_null(b64);
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char raw[32 * 4 + 3];
    size_t n = 0, len = strlen(b64);
    for (size_t i = 0; i + 3 < len + 0 && i < len; i += 4) {
        unsigned q[4];
        for (int k = 0; k < 4; k++) q[k] = b64[i + k] == '=' ? 0 : (unsigned)(strchr(A, b64[i + k]) - A);
        unsigned x = q[0] << 18 | q[1] << 12 | q[2] << 6 | q[3];
        raw[n++] = (unsigned char)(x >> 16);
        if (b64[i + 2] != '=') raw[n++] = (unsigned char)(x >> 8);
        if (b64[i + 3] != '=') raw[n++] = (unsigned char)x;
    }
    assert_int_equal(n, 32 * 4);
    float dec[32];
    memcpy(dec, raw, sizeof dec);
    for (size_t d = 0; d < 32; d++) assert_true(fabsf(dec[d] - first[d]) < 1e-6f);
    json_decref(v);
}

/* ---- errors ------------------------------------------------------------------------------------ */

static void test_errors(void **state) {
    (void)state;
    const int p = F->port;
    const char *chat = "/v1/chat/completions";
    expect_error(p, "POST", chat, "{\"messages\": [", NULL, 400, NULL);
    expect_error(p, "POST", chat, "[1, 2]", NULL, 400, NULL);
    expect_error(p, "POST", chat, "", NULL, 400, NULL);
    expect_error(p, "POST", chat, "{}", NULL, 400, "messages");
    expect_error(p, "POST", chat, "{\"messages\": \"hi\"}", NULL, 400, "messages");
    expect_error(p, "POST", chat, "{\"messages\": []}", NULL, 400, "messages");
    expect_error(p, "POST", chat, "{\"messages\": [{\"role\": \"king\", \"content\": \"x\"}]}", NULL, 400, "messages[0].role");
    expect_error(p, "POST", chat, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", NULL, 400, "messages[0].content");
    expect_error(p, "POST", chat, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", NULL,
                 400, "messages[0].content[0]");
    const char *ok_msgs = "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]";
    char body[8192];
    struct {
        const char *extra, *param;
        long status;
    } cases[] = {
        {"\"temperature\": \"hot\"", "temperature", 400},
        {"\"temperature\": 3", "temperature", 400},
        {"\"top_p\": 0", "top_p", 400},
        {"\"max_tokens\": 0", "max_tokens", 400},
        {"\"max_tokens\": 1.5", "max_tokens", 400},
        {"\"max_tokens\": 100000", "max_tokens", 400},
        {"\"max_completion_tokens\": 90", "max_tokens", 400},
        {"\"n\": 0", "n", 400},
        {"\"n\": 17", "n", 400},
        {"\"stream\": 1", "stream", 400},
        {"\"stop\": 5", "stop", 400},
        {"\"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]", "stop", 400},
        {"\"stop\": [\"\"]", "stop", 400},
        {"\"seed\": \"x\"", "seed", 400},
        {"\"logprobs\": 1", "logprobs", 400},
        {"\"top_logprobs\": 2", "top_logprobs", 400},
        {"\"logprobs\": true, \"top_logprobs\": 21", "top_logprobs", 400},
        {"\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f g\"}}]", "tools[0].function.name", 400},
        {"\"tool_choice\": \"required\"", "tool_choice", 400},
        {"\"response_format\": {\"type\": \"yaml\"}", "response_format.type", 400},
        {"\"presence_penalty\": 2.5", "presence_penalty", 400},
        {"\"logit_bias\": {\"-5\": 10}", "logit_bias", 400},
        {"\"model\": 7", "model", 400},
        {"\"model\": \"gpt-4\"", "model", 404},
        {"\"stream_options\": {\"include_usage\": \"yes\"}", "stream_options.include_usage", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(body, sizeof body, "{%s, %s}", ok_msgs, cases[i].extra);
        expect_error(p, "POST", chat, body, NULL, cases[i].status, cases[i].param);
    }
    /* A prompt longer than the context. */
    char *big = malloc(4000);
    strcpy(big, "{\"prompt\": \"");
    for (int i = 0; i < 150; i++) strcat(big, "whale ");
    strcat(big, "\"}");
    expect_error(p, "POST", "/v1/completions", big, NULL, 400, "prompt");
    big[0] = 0;
    strcpy(big, "{\"input\": \"");
    for (int i = 0; i < 150; i++) strcat(big, "whale ");
    strcat(big, "\"}");
    expect_error(p, "POST", "/v1/embeddings", big, NULL, 400, "input");
    free(big);
    expect_error(p, "POST", "/v1/completions", "{\"prompt\": [1, 2.5, 3]}", NULL, 400, "prompt");
    expect_error(p, "POST", "/v1/completions", "{\"prompt\": \"x\", \"logprobs\": 6}", NULL, 400, "logprobs");
    expect_error(p, "POST", "/v1/completions", "{\"prompt\": \"x\", \"suffix\": \"y\"}", NULL, 400, "suffix");
    expect_error(p, "POST", "/v1/completions", "{}", NULL, 400, "prompt");
    expect_error(p, "POST", "/v1/embeddings", "{\"input\": \"\"}", NULL, 400, "input");
    expect_error(p, "POST", "/v1/embeddings", "{\"input\": [\"a\", 3]}", NULL, 400, "input[1]");
    expect_error(p, "POST", "/v1/embeddings", "{\"input\": \"a\", \"dimensions\": 8}", NULL, 400, "dimensions");
    expect_error(p, "POST", "/v1/embeddings", "{\"input\": \"a\", \"encoding_format\": \"hex\"}", NULL, 400, "encoding_format");
    /* An oversized body (the limit is 4096 bytes here). */
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = 0;
    memcpy(body, "{\"prompt\": \"", 12);
    expect_error(p, "POST", "/v1/completions", body, NULL, 413, NULL);
    expect_error(p, "GET", chat, NULL, NULL, 405, NULL);
    expect_error(p, "POST", "/v1/models", "{}", NULL, 405, NULL);
    expect_error(p, "GET", "/v1/nothing", NULL, NULL, 404, NULL);
    /* The server still answers. */
    json_decref(post_ok("/v1/completions", "{\"prompt\": \"The\", \"max_tokens\": 2}"));
    assert_true(metric_value(p, "orchard_slots_busy") == 0.0);
}

static void test_api_key(void **state) {
    (void)state;
    orc_server *s = start(1, 2, "sekrit", 0);
    int p = orc_server_port(s);
    const char *body = "{\"prompt\": \"The\", \"max_tokens\": 2}";
    expect_error(p, "POST", "/v1/completions", body, NULL, 401, NULL);
    expect_error(p, "POST", "/v1/completions", body, "Bearer wrong", 401, NULL);
    expect_error(p, "POST", "/v1/completions", body, "Bearer sekri", 401, NULL);
    expect_error(p, "GET", "/v1/models", NULL, "Basic c2Vrcml0", 401, NULL);
    http_res r = http_to(p, "POST", "/v1/completions", body, "Bearer sekrit", 0);
    assert_int_equal(r.status, 200);
    free(r.body);
    r = http_to(p, "GET", "/health", NULL, NULL, 0); /* health stays open for probes */
    assert_int_equal(r.status, 200);
    free(r.body);
    orc_server_stop(s);
}

/* ---- load ---------------------------------------------------------------------------------------- */

typedef struct client {
    int port, id, ok, busy, bad;
} client;

static void *client_main(void *arg) {
    client *c = arg;
    for (int k = 0; k < 4; k++) {
        char body[256];
        bool stream = (c->id + k) % 2;
        snprintf(body, sizeof body, "{\"messages\": [{\"role\": \"user\", \"content\": \"sailor %d\"}], \"max_tokens\": 20, "
                                    "\"seed\": %d, \"stream\": %s}", c->id * 10 + k, k, stream ? "true" : "false");
        http_res r = http_to(c->port, "POST", "/v1/chat/completions", body, NULL, 0);
        if (r.status == 200 && stream) {
            /* Well formed: events that parse, ending in [DONE] with a finish reason. */
            bool done = strstr(r.body, "data: [DONE]\n\n") != NULL && strstr(r.body, "\"finish_reason\":\"") != NULL;
            c->ok += done;
            c->bad += !done;
        } else if (r.status == 200) {
            json_t *v = json_loads(r.body, 0, NULL);
            bool good = v && json_array_size(json_object_get(v, "choices")) == 1;
            c->ok += good;
            c->bad += !good;
            json_decref(v);
        } else if (r.status == 429) {
            json_t *v = json_loads(r.body, 0, NULL);
            c->busy += v && json_is_object(json_object_get(v, "error"));
            c->bad += !(v && json_is_object(json_object_get(v, "error")));
            json_decref(v);
        } else {
            fprintf(stderr, "client %d: %ld %s\n", c->id, r.status, r.body);
            c->bad++;
        }
        free(r.body);
    }
    return NULL;
}

static void test_concurrent_clients(void **state) {
    (void)state;
    orc_server *s = start(2, 2, NULL, 300);
    int p = orc_server_port(s);
    pthread_t th[8];
    client cl[8];
    for (int i = 0; i < 8; i++) {
        cl[i] = (client){.port = p, .id = i};
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    int ok = 0, busy = 0, bad = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ok += cl[i].ok;
        busy += cl[i].busy;
        bad += cl[i].bad;
    }
    fprintf(stderr, "concurrent: %d answered, %d refused (429)\n", ok, busy);
    assert_int_equal(bad, 0);
    assert_int_equal(ok + busy, 32);
    assert_true(ok >= 4);
    assert_true(metric_value(p, "orchard_slots_busy") == 0.0);
    assert_true(metric_value(p, "orchard_queue_depth") == 0.0);
    orc_server_stop(s);
}

/* A client that hangs up mid-stream stops its generation and frees the slot. */
static void test_disconnect_frees_slot(void **state) {
    (void)state;
    orc_server *s = start(1, 2, NULL, 20000); /* 20 ms a token: ~1.5 s for the whole answer */
    int p = orc_server_port(s);
    const char *body = "{\"prompt\": \"The\", \"max_tokens\": 80, \"temperature\": 1, \"seed\": 1, \"stream\": true}";
    http_res r = http_to(p, "POST", "/v1/completions", body, NULL, 3);
    assert_int_equal(r.status, 200);
    free(r.body);
    double busy = 1, cancelled = 0;
    for (int i = 0; i < 100 && (busy != 0 || cancelled < 1); i++) {
        usleep(20000);
        busy = metric_value(p, "orchard_slots_busy");
        cancelled = metric_value(p, "orchard_requests_cancelled_total");
    }
    assert_true(busy == 0);
    assert_true(cancelled >= 1);
    assert_true(metric_value(p, "orchard_completion_tokens_total") < 60);
    /* The slot serves the next request. */
    r = http_to(p, "POST", "/v1/completions", "{\"prompt\": \"The\", \"max_tokens\": 2}", NULL, 0);
    assert_int_equal(r.status, 200);
    free(r.body);
    orc_server_stop(s);
}

/* Stopping with requests in flight: each client gets an answer or an error. */
static void *slow_client(void *arg) {
    client *c = arg;
    http_res r = http_to(c->port, "POST", "/v1/completions",
                         "{\"prompt\": \"The\", \"max_tokens\": 80, \"temperature\": 1, \"stream\": true}", NULL, 0);
    /* Each stream ends: an error event (shutting down) or the answer, then [DONE]. */
    c->ok = r.status == 200 && strstr(r.body, "data: [DONE]") != NULL;
    if (!c->ok) fprintf(stderr, "in flight at stop: %ld %s\n", r.status, r.body);
    free(r.body);
    return NULL;
}

static void test_stop_with_requests_in_flight(void **state) {
    (void)state;
    orc_server *s = start(1, 4, NULL, 20000);
    client cl[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        cl[i] = (client){.port = orc_server_port(s), .id = i};
        pthread_create(&th[i], NULL, slow_client, &cl[i]);
    }
    /* Wait until one request runs and two wait, then stop. */
    int p = orc_server_port(s);
    for (int i = 0; i < 500 && !(metric_value(p, "orchard_slots_busy") == 1 && metric_value(p, "orchard_queue_depth") == 2); i++)
        usleep(10000);
    assert_true(metric_value(p, "orchard_queue_depth") == 2);
    orc_server_stop(s);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_true(cl[i].ok);
    }
}

/* The binary: serve the saved model, answer, stop on SIGTERM with status 0. */
static void test_cli_sigterm(void **state) {
    (void)state;
    const char *bin = getenv("ORCHARD_BINARY");
    if (!bin) skip();
    int out[2];
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        execl(bin, bin, "--threads", "1", "serve", "--model", F->dir, "--port", "0", "--parallel", "2", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    FILE *f = fdopen(out[0], "r");
    int port = 0;
    assert_int_equal(fscanf(f, "listening on port %d", &port), 1);
    http_res r = http_to(port, "GET", "/v1/models", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    const char *dir_name = strrchr(F->dir, '/') + 1;
    assert_non_null(strstr(r.body, dir_name));
    free(r.body);
    r = http_to(port, "POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 3}",
                NULL, 0);
    assert_int_equal(r.status, 200);
    free(r.body);
    kill(pid, SIGTERM);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    fclose(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_models_metrics),
        cmocka_unit_test(test_chat),
        cmocka_unit_test(test_stream_matches_whole),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_completions_n_echo_logprobs),
        cmocka_unit_test(test_chat_logprobs),
        cmocka_unit_test(test_prefix_reuse),
        cmocka_unit_test(test_embeddings),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_api_key),
        cmocka_unit_test(test_concurrent_clients),
        cmocka_unit_test(test_disconnect_frees_slot),
        cmocka_unit_test(test_stop_with_requests_in_flight),
        cmocka_unit_test(test_cli_sigterm),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
