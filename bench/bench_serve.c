/* Throughput and latency of `orchard serve`: starts the server in-process
 * (orc_server_start on an ephemeral loopback port) over a randomly
 * initialised model (the `tiny` preset by default, vocabulary cut to a small
 * trained tokenizer) and drives it with libcurl from 1, 4 and 16 concurrent
 * clients, each sending chat requests one after another (temperature 0,
 * fixed max_tokens), first non-streaming, then streaming. Prints, per row:
 * aggregate generated tokens/s (completion tokens from `usage` over the
 * row's wall time), request latency, and time to first token (median, p90):
 * for streaming, the first event after the role chunk; for non-streaming,
 * the whole answer (that is when such a client sees its first token). */
#include <curl/curl.h>
#include <jansson.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchard/llm.h"
#include "orchard/server.h"
#include "orchard/tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct bench_opts {
    const char *preset;
    int max_tokens, requests, parallel, threads, port;
} bench_opts;

/* One request's outcome. */
typedef struct sample {
    double latency, ttft;
    long tokens;
    bool ok;
} sample;

typedef struct client {
    const bench_opts *o;
    bool stream;
    int index;
    sample *out; /* [o->requests] */
} client;

/* The response body, and the time of the second SSE event (the first after
 * the role chunk) for streaming requests. */
typedef struct body {
    char *text;
    size_t len;
    int events;
    double t0, first;
} body;

static size_t on_data(char *p, size_t size, size_t n, void *user) {
    body *b = user;
    size_t k = size * n;
    char *g = realloc(b->text, b->len + k + 1);
    if (!g) return 0;
    b->text = g;
    memcpy(b->text + b->len, p, k);
    b->len += k;
    b->text[b->len] = 0;
    if (b->first == 0) {
        int events = 0;
        for (const char *q = b->text; (q = strstr(q, "data: ")); q += 6) events++;
        if (events >= 2) b->first = now() - b->t0;
    }
    return k;
}

/* completion_tokens from the usage object of a JSON text, or -1. */
static long usage_tokens(const char *json) {
    json_t *root = json_loads(json, 0, NULL);
    json_t *u = root ? json_object_get(root, "usage") : NULL;
    long n = json_is_object(u) ? (long)json_integer_value(json_object_get(u, "completion_tokens")) : -1;
    json_decref(root);
    return n;
}

/* The usage of a stream: the event before "data: [DONE]" with a usage object. */
static long stream_tokens(char *text) {
    long n = -1;
    for (char *q = strstr(text, "data: "); q; q = strstr(q, "data: ")) {
        q += 6;
        char *end = strstr(q, "\n\n");
        if (!end) break;
        *end = 0;
        if (strstr(q, "\"usage\"")) n = usage_tokens(q);
        *end = '\n';
        q = end;
    }
    return n;
}

static sample one_request(CURL *c, const bench_opts *o, bool stream, int who, int i) {
    char url[128], req[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", o->port);
    snprintf(req, sizeof req,
             "{\"model\": \"bench\", \"messages\": [{\"role\": \"system\", \"content\": \"You are a sailor.\"}, "
             "{\"role\": \"user\", \"content\": \"Client %d asks question %d about the whale and the sea.\"}], "
             "\"max_tokens\": %d, \"temperature\": 0, \"stream\": %s%s}",
             who, i, o->max_tokens, stream ? "true" : "false",
             stream ? ", \"stream_options\": {\"include_usage\": true}" : "");
    body b = {.t0 = now()};
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, req);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 600L);
    CURLcode rc = curl_easy_perform(c);
    sample s = {.latency = now() - b.t0};
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && status == 200 && b.text) {
        s.tokens = stream ? stream_tokens(b.text) : usage_tokens(b.text);
        s.ok = s.tokens >= 0;
        s.ttft = stream ? b.first : s.latency;
    }
    if (!s.ok) fprintf(stderr, "bench_serve: request failed (curl %d, HTTP %ld): %.200s\n", (int)rc, status,
                       b.text ? b.text : "");
    free(b.text);
    curl_slist_free_all(h);
    return s;
}

static void *client_main(void *arg) {
    client *cl = arg;
    CURL *c = curl_easy_init();
    for (int i = 0; i < cl->o->requests; i++)
        cl->out[i] = c ? one_request(c, cl->o, cl->stream, cl->index, i) : (sample){0};
    if (c) curl_easy_cleanup(c);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (nearest rank) of n sorted values. */
static double quantile(const double *v, size_t n, double q) {
    if (n == 0) return 0;
    size_t k = (size_t)(q * (double)n + 0.999999);
    if (k < 1) k = 1;
    return v[k > n ? n - 1 : k - 1];
}

/* Run one row: n_clients clients in parallel; print its table line. */
static int run_row(const bench_opts *o, int n_clients, bool stream) {
    client *cl = calloc((size_t)n_clients, sizeof *cl);
    pthread_t *th = calloc((size_t)n_clients, sizeof *th);
    sample *all = calloc((size_t)n_clients * (size_t)o->requests, sizeof *all);
    if (!cl || !th || !all) {
        free(cl);
        free(th);
        free(all);
        return 1;
    }
    double t0 = now();
    int started = 0;
    for (int i = 0; i < n_clients; i++) {
        cl[i] = (client){.o = o, .stream = stream, .index = i, .out = all + (size_t)i * (size_t)o->requests};
        if (pthread_create(&th[i], NULL, client_main, &cl[i]) != 0) break;
        started++;
    }
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    const double wall = now() - t0;
    const size_t total = (size_t)started * (size_t)o->requests;
    double *lat = malloc(total * sizeof *lat), *ttft = malloc(total * sizeof *ttft);
    size_t n_ok = 0;
    long tokens = 0;
    for (size_t i = 0; lat && ttft && i < total; i++) {
        if (!all[i].ok) continue;
        lat[n_ok] = all[i].latency;
        ttft[n_ok++] = all[i].ttft;
        tokens += all[i].tokens;
    }
    if (lat && ttft) {
        qsort(lat, n_ok, sizeof *lat, cmp_double);
        qsort(ttft, n_ok, sizeof *ttft, cmp_double);
        printf("| %d | %s | %zu | %zu | %ld | %.2f | %.1f | %.0f | %.0f | %.0f | %.0f |\n", n_clients,
               stream ? "stream" : "whole", n_ok, total - n_ok, tokens, wall, wall > 0 ? (double)tokens / wall : 0,
               1e3 * quantile(lat, n_ok, 0.5), 1e3 * quantile(lat, n_ok, 0.9), 1e3 * quantile(ttft, n_ok, 0.5),
               1e3 * quantile(ttft, n_ok, 0.9));
        fflush(stdout);
    }
    int rc = (lat && ttft && n_ok == total && started == n_clients) ? 0 : 1;
    free(lat);
    free(ttft);
    free(all);
    free(th);
    free(cl);
    return rc;
}

static orc_tokenizer *small_tokenizer(orc_error *err) {
    static const char text[] = "The whale rose from the grey sea and the ship turned to follow it. The captain stood "
                               "on the deck and watched the white whale swim away. Every sailor knew the sea was wide.";
    const char *texts[1] = {text};
    size_t lens[1] = {sizeof text - 1};
    orc_tokenizer_train_opts o = {.vocab_size = 400};
    return orc_tokenizer_train(texts, lens, 1, &o, err);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_serve [--preset tiny|small|base] [--max-tokens 32] [--requests 4] "
                    "[--parallel 4] [--threads N]\n"
                    "  --requests: requests per client (at least 8 per row in all)\n");
    return 2;
}

int main(int argc, char **argv) {
    bench_opts o = {.preset = "tiny", .max_tokens = 32, .requests = 4, .parallel = 4, .threads = 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage();
        if (!v) {
            fprintf(stderr, "bench_serve: ignoring option %s\n", a);
            continue;
        }
        if (!strcmp(a, "--preset")) o.preset = v;
        else if (!strcmp(a, "--max-tokens")) o.max_tokens = atoi(v);
        else if (!strcmp(a, "--requests")) o.requests = atoi(v);
        else if (!strcmp(a, "--parallel")) o.parallel = atoi(v);
        else if (!strcmp(a, "--threads")) o.threads = atoi(v);
        else fprintf(stderr, "bench_serve: ignoring option %s %s\n", a, v); /* run_bench.sh passes options to all */
        i++;
    }
    if (o.max_tokens < 1 || o.requests < 1 || o.parallel < 1 || o.parallel > 256) return usage();
    if (o.threads > 0) omp_set_num_threads(o.threads);
    curl_global_init(CURL_GLOBAL_ALL);
    orc_error err = {0};
    orc_tokenizer *tok = small_tokenizer(&err);
    orc_llm_config cfg;
    orc_llm *m = NULL;
    if (tok && orc_llm_config_preset(o.preset, &cfg, &err) == ORC_OK) {
        cfg.vocab_size = (int64_t)orc_tokenizer_vocab_size(tok); /* every sampled id decodes to text */
        cfg.eos_token_id = orc_tokenizer_special_id(tok, ORC_TOK_END_OF_TEXT);
        cfg.bos_token_id = orc_tokenizer_special_id(tok, ORC_TOK_BEGIN_OF_TEXT);
        m = orc_llm_create(&cfg, false, &err);
    }
    if (!m) {
        fprintf(stderr, "bench_serve: %s\n", err.msg);
        orc_tokenizer_free(tok);
        return 1;
    }
    orc_llm_init_weights(m, 1);
    orc_server_opts so;
    orc_server_opts_default(&so);
    so.port = 0;
    so.parallel = o.parallel;
    so.queue = 256;
    so.model_name = "bench";
    orc_server *s = orc_server_start(m, tok, &so, &err);
    if (!s) {
        fprintf(stderr, "bench_serve: %s\n", err.msg);
        orc_llm_free(m);
        orc_tokenizer_free(tok);
        return 1;
    }
    o.port = orc_server_port(s);
    printf("orchard serve, preset %s (%.1fM parameters), %d slots, %d OpenMP threads, max_tokens %d, "
           "temperature 0; each client sends its requests one after another.\n\n",
           o.preset, (double)orc_llm_config_num_params(&cfg) / 1e6, o.parallel, omp_get_max_threads(), o.max_tokens);
    printf("| clients | mode | ok | errors | tokens | wall s | tokens/s | latency p50 ms | latency p90 ms "
           "| TTFT p50 ms | TTFT p90 ms |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    const int clients[] = {1, 4, 16};
    int rc = 0;
    for (int c = 0; c < 3; c++) {
        bench_opts row = o;
        if (row.requests * clients[c] < 8) row.requests = (8 + clients[c] - 1) / clients[c];
        for (int st = 0; st < 2; st++) rc |= run_row(&row, clients[c], st == 1);
    }
    orc_server_stop(s);
    orc_llm_free(m);
    orc_tokenizer_free(tok);
    curl_global_cleanup();
    return rc;
}
