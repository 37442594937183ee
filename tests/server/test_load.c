/* A load test of `orchard serve` over loopback: 32 client threads send 500
 * requests in all to a server with 4 slots, mixing chat and text
 * completions (whole and streamed), n = 2, embeddings, streams the client
 * abandons after two events, malformed bodies and over-long token budgets.
 * A refusal (429) is only possible while abandoned streams still hold their
 * places, so the test bounds refusals by abandoned streams.
 * Every request must get a well-formed answer (a JSON body of the right
 * shape, an SSE stream that ends with [DONE], or an OpenAI error object with
 * the right status), the server must settle with no busy slot and an empty
 * queue, and /metrics must add up with what the clients saw: one count per
 * request, the same number of 400s and 429s, at least the completion tokens
 * the answers report. The suite also runs under AddressSanitizer, which
 * turns any leak or bad access on these paths into a failure. */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gradcheck.h"
#include "orchard/server.h"

#define CLIENTS 32
#define REQUESTS 500

static const char CORPUS[] =
    "The whale rose from the grey sea and the ship turned to follow it. "
    "The captain stood on the deck and watched the white whale swim away. "
    "Every sailor on the ship knew the sea was wide and the whale was old.";

typedef struct body_buf {
    char *p;
    size_t len;
    int events;
    int abort_after;
} body_buf;

static size_t on_data(char *p, size_t size, size_t n, void *user) {
    body_buf *b = user;
    size_t k = size * n;
    char *q = realloc(b->p, b->len + k + 1);
    if (!q) return 0;
    b->p = q;
    memcpy(b->p + b->len, p, k);
    b->len += k;
    b->p[b->len] = 0;
    b->events = 0;
    for (const char *s = b->p; (s = strstr(s, "data: ")); s += 6) b->events++;
    return b->abort_after > 0 && b->events >= b->abort_after ? 0 : k;
}

/* status, or -1 for a transport failure, or 0 when we hung up on purpose */
static long post(int port, const char *path, const char *body, int abort_after, body_buf *out) {
    CURL *c = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    *out = (body_buf){.abort_after = abort_after};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    long status = -1;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else if (abort_after > 0 && rc == CURLE_WRITE_ERROR)
        status = 0;
    else
        fprintf(stderr, "transport failure on %s: %s\n", path, curl_easy_strerror(rc));
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!out->p) out->p = calloc(1, 1);
    return status;
}

static char *get_metrics(int port) {
    CURL *c = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    body_buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_cleanup(c);
    return b.p;
}

static double metric(const char *text, const char *name) {
    char key[160];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    return p ? atof(p + strlen(key)) : -1.0;
}

/* Sum of orchard_requests_total rows whose labels contain every given part. */
static double requests_total(const char *text, const char *part1, const char *part2) {
    double sum = 0;
    const char *prefix = "\norchard_requests_total{";
    for (const char *p = text; (p = strstr(p, prefix)); p += strlen(prefix)) {
        const char *close = strchr(p, '}');
        if (!close) break;
        char labels[160];
        size_t n = (size_t)(close - p) < sizeof labels - 1 ? (size_t)(close - p) : sizeof labels - 1;
        memcpy(labels, p, n);
        labels[n] = 0;
        if ((!part1 || strstr(labels, part1)) && (!part2 || strstr(labels, part2))) sum += atof(close + 1);
    }
    return sum;
}

/* ---- checks on one answer --------------------------------------------------------------- */

static bool is_error_object(const char *body) {
    json_t *v = json_loads(body, 0, NULL);
    json_t *e = json_object_get(v, "error");
    bool ok = json_is_object(e) && json_is_string(json_object_get(e, "message")) &&
              json_string_length(json_object_get(e, "message")) > 0 && json_is_string(json_object_get(e, "type"));
    json_decref(v);
    return ok;
}

/* Every data: payload parses (or is [DONE], last). */
static bool is_complete_stream(const char *body) {
    const char *p = body;
    bool done = false;
    while ((p = strstr(p, "data: "))) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        if (!end || done) return false;
        if (end - p == 6 && strncmp(p, "[DONE]", 6) == 0) {
            done = true;
        } else {
            json_t *v = json_loadb(p, (size_t)(end - p), 0, NULL);
            if (!v) return false;
            json_decref(v);
        }
        p = end + 2;
    }
    return done;
}

/* A whole chat/text answer with n choices: its completion tokens, or -1. */
static long whole_answer_tokens(const char *body, const char *object, size_t n) {
    json_t *v = json_loads(body, 0, NULL);
    long tokens = -1;
    json_t *choices = json_object_get(v, "choices"), *usage = json_object_get(v, "usage");
    const char *obj = json_string_value(json_object_get(v, "object"));
    if (obj && strcmp(obj, object) == 0 && json_array_size(choices) == n && json_is_object(usage) &&
        json_is_integer(json_object_get(usage, "completion_tokens")) &&
        json_is_integer(json_object_get(usage, "prompt_tokens")))
        tokens = (long)json_integer_value(json_object_get(usage, "completion_tokens"));
    json_decref(v);
    return tokens;
}

static bool is_embedding(const char *body) {
    json_t *v = json_loads(body, 0, NULL);
    json_t *d = json_array_get(json_object_get(v, "data"), 0);
    bool ok = json_array_size(json_object_get(d, "embedding")) > 0;
    json_decref(v);
    return ok;
}

/* ---- the clients --------------------------------------------------------------------------- */

typedef struct tally {
    int answered, refused, bad_request, hung_up, malformed;
    long completion_tokens;
} tally;

typedef struct client {
    int port;
    atomic_int *next;
    tally t;
} client;

static void one_request(client *c, int i) {
    char body[512];
    const char *path = "/v1/chat/completions";
    int kind = i % 10, abort_after = 0;
    switch (kind) {
    case 0: case 1: case 2:
        snprintf(body, sizeof body,
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"The whale %d\"}], \"max_tokens\": 6, "
                 "\"temperature\": 0.8, \"seed\": %d}",
                 i, i);
        break;
    case 3: case 4:
        snprintf(body, sizeof body,
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"The sea\"}], \"max_tokens\": 6, \"stream\": true}");
        break;
    case 5:
        path = "/v1/completions";
        snprintf(body, sizeof body, "{\"prompt\": \"The ship %d\", \"max_tokens\": 5, \"n\": 2, \"seed\": %d}", i, i);
        break;
    case 6:
        path = "/v1/completions";
        abort_after = 2;
        snprintf(body, sizeof body, "{\"prompt\": \"The\", \"max_tokens\": 40, \"temperature\": 1, \"stream\": true}");
        break;
    case 7:
        path = "/v1/embeddings";
        snprintf(body, sizeof body, "{\"input\": [\"the whale\", \"the sea %d\"]}", i);
        break;
    case 8:
        snprintf(body, sizeof body, "{\"messages\": [{\"role\": \"user\", \"content\": ");
        break;
    default:
        path = "/v1/completions";
        snprintf(body, sizeof body, "{\"prompt\": \"The\", \"max_tokens\": 100000}");
        break;
    }
    body_buf b;
    long status = post(c->port, path, body, abort_after, &b);
    bool ok = false;
    if (status == 0) {
        c->t.hung_up++;
        ok = true;
    } else if (status == 429 || status == 503) {
        c->t.refused++;
        ok = is_error_object(b.p);
    } else if (status == 400) {
        c->t.bad_request++;
        ok = (kind == 8 || kind == 9) && is_error_object(b.p);
    } else if (status == 200) {
        c->t.answered++;
        if (kind == 3 || kind == 4 || kind == 6) {
            ok = is_complete_stream(b.p);
        } else if (kind == 7) {
            ok = is_embedding(b.p);
        } else {
            long n = whole_answer_tokens(b.p, kind == 5 ? "text_completion" : "chat.completion", kind == 5 ? 2 : 1);
            ok = n >= 0;
            if (ok) c->t.completion_tokens += n;
        }
    }
    if (!ok) {
        c->t.malformed++;
        fprintf(stderr, "request %d (kind %d): status %ld, body: %.300s\n", i, kind, status, b.p);
    }
    free(b.p);
}

static void *client_main(void *arg) {
    client *c = arg;
    for (int i; (i = atomic_fetch_add(c->next, 1)) < REQUESTS;) one_request(c, i);
    return NULL;
}

/* ---- the test ------------------------------------------------------------------------------------ */

static void test_load(void **state) {
    (void)state;
    const char *texts[1] = {CORPUS};
    size_t lens[1] = {sizeof CORPUS - 1};
    orc_tokenizer_train_opts to = {.vocab_size = 300};
    orc_error err = {0};
    orc_tokenizer *tok = orc_tokenizer_train(texts, lens, 1, &to, &err);
    assert_non_null(tok);
    orc_llm_config cfg;
    orc_llm_config_default(&cfg);
    cfg.hidden_size = 32;
    cfg.num_hidden_layers = 2;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.head_dim = 8;
    cfg.intermediate_size = 64;
    cfg.vocab_size = (int64_t)orc_tokenizer_vocab_size(tok);
    cfg.max_position_embeddings = 128;
    orc_llm *m = orc_llm_create(&cfg, false, &err);
    assert_non_null(m);
    orc_llm_init_weights(m, 11);

    orc_server_opts o;
    orc_server_opts_default(&o);
    o.port = 0;
    o.parallel = 4;
    /* 4 slots + 32 places hold every client's request at once, so a refusal
     * can only come from a stream a client abandoned and the server has not
     * noticed yet (it still holds its place) */
    o.queue = 32;
    o.model_name = "tiny";
    o.threads_per_slot = 1;
    orc_server *s = orc_server_start(m, tok, &o, &err);
    if (!s) fail_msg("%s", err.msg);
    const int port = orc_server_port(s);

    atomic_int next = 0;
    pthread_t th[CLIENTS];
    client cl[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        cl[i] = (client){.port = port, .next = &next};
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    tally all = {0};
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        all.answered += cl[i].t.answered;
        all.refused += cl[i].t.refused;
        all.bad_request += cl[i].t.bad_request;
        all.hung_up += cl[i].t.hung_up;
        all.malformed += cl[i].t.malformed;
        all.completion_tokens += cl[i].t.completion_tokens;
    }
    fprintf(stderr, "load: %d answered, %d refused, %d bad requests, %d hung up by the client, %d malformed\n",
            all.answered, all.refused, all.bad_request, all.hung_up, all.malformed);
    assert_int_equal(all.malformed, 0);
    assert_int_equal(all.answered + all.refused + all.bad_request + all.hung_up, REQUESTS);
    assert_int_equal(all.bad_request, 2 * REQUESTS / 10); /* kinds 8 and 9 are refused before any queue */
    assert_true(all.refused <= all.hung_up);

    /* settle: abandoned streams are noticed and their slots freed */
    char *text = NULL;
    for (int tries = 0; tries < 200; tries++) {
        free(text);
        text = get_metrics(port);
        if (metric(text, "orchard_slots_busy") == 0 && metric(text, "orchard_queue_depth") == 0) break;
        usleep(50000);
    }
    assert_true(metric(text, "orchard_slots_busy") == 0);
    assert_true(metric(text, "orchard_queue_depth") == 0);
    /* one count per request, by endpoint; the same 400s and refusals the clients saw */
    const char *eps[] = {"endpoint=\"chat_completions\"", "endpoint=\"completions\"", "endpoint=\"embeddings\""};
    double counted = 0, bad = 0, refused = 0;
    for (int e = 0; e < 3; e++) {
        counted += requests_total(text, eps[e], NULL);
        bad += requests_total(text, eps[e], "status=\"400\"");
        refused += requests_total(text, eps[e], "status=\"429\"") + requests_total(text, eps[e], "status=\"503\"");
    }
    assert_int_equal((int)counted, REQUESTS);
    assert_int_equal((int)bad, all.bad_request);
    assert_int_equal((int)refused, all.refused);
    /* every token an answer reports was counted (streams add more) */
    assert_true(metric(text, "orchard_completion_tokens_total") >= (double)all.completion_tokens);
    /* the continuous batcher ran, each step carrying at least one slot's forward */
    assert_true(metric(text, "orchard_batch_steps_total") > 0);
    assert_true(metric(text, "orchard_batch_rows_total") >= metric(text, "orchard_batch_steps_total"));
    fprintf(stderr, "load: %.0f forwards in %.0f batched steps\n", metric(text, "orchard_batch_rows_total"),
            metric(text, "orchard_batch_steps_total"));
    /* only abandoned streams can be cancelled */
    assert_true(metric(text, "orchard_requests_cancelled_total") <= (double)all.hung_up);
    free(text);
    orc_server_stop(s);
    orc_llm_free(m);
    orc_tokenizer_free(tok);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_ALL);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_load)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
