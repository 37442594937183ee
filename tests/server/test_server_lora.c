/* Per-request LoRA adapters in `orchard serve`, on a tiny random model with
 * two random adapters (non-zero B, saved and loaded in PEFT's layout): in
 * the batcher, six sequences under no adapter, A, B, the stack A + 0.5 B
 * and A twice more share every step (the gate holds each step until all
 * wait) and each sees the same logit bits as a private generator with its
 * stack active (steps on 3 threads, the generators on 1);
 * through the real HTTP server, greedy chat with `model` = A gives the
 * tokens of private generation with A and differs from the base; four
 * clients (none, A, B, A+B) in flight together, their prefills forced into
 * one step, each get exactly their sequential answer; completions with
 * logprobs, streaming and embeddings follow the adapter; /v1/models lists
 * the adapters with their parent; an unknown adapter is a 400 naming it;
 * /metrics counts requests per adapter; and an adapter for another model
 * shape is refused at start naming the tensor. */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "server_test_util.h"
#include "testdir.h"
#include "../../src/server/server_internal.h"
#include "orchard/generate.h"
#include "orchard/lora.h"
#include "orchard/rng.h"

static const char CORPUS[] =
    "The whale rose from the grey sea and the ship turned to follow it. "
    "The captain stood on the deck and watched the white whale swim away. "
    "Every sailor on the ship knew the sea was wide and the whale was old. "
    "They sailed for days and nights, and the wind was cold on the water.";

typedef struct fixture {
    orc_tokenizer *tok;
    orc_llm *m;
    orc_lora_set *set; /* "alpha", "beta" */
    const orc_lora *A, *B;
    orc_server *srv;
    int port;
    char dir[64];
} fixture;

static fixture *F;

/* ---- HTTP --------------------------------------------------------------------------- */

/* GET when body is NULL, else POST body. */
static http_res call(const char *path, const char *body) {
    return srv_test_http(F->port, body ? "POST" : "GET", path, body, NULL, 0, 60L);
}

/* POST that must answer 200 with JSON. */
static json_t *post_json(const char *path, const char *body) {
    http_res r = call(path, body);
    if (r.status != 200) fprintf(stderr, "%s %s -> %ld %s\n", path, body, r.status, r.body);
    assert_int_equal(r.status, 200);
    json_t *v = json_loads(r.body, 0, NULL);
    assert_non_null(v);
    free(r.body);
    return v;
}

static char *chat_content(json_t *v) {
    json_t *msg = json_object_get(json_array_get(json_object_get(v, "choices"), 0), "message");
    const char *s = json_string_value(json_object_get(msg, "content"));
    assert_non_null(s);
    return strdup(s);
}

#define CHAT_FMT "{\"model\": \"%s\", \"messages\": [{\"role\": \"user\", \"content\": \"%s\"}], " \
                 "\"temperature\": 0, \"max_tokens\": %d%s}"

static char *greedy_chat(const char *model, const char *text, int max_tokens, const char *extra) {
    char body[1024];
    snprintf(body, sizeof body, CHAT_FMT, model, text, max_tokens, extra);
    json_t *v = post_json("/v1/chat/completions", body);
    const char *id = json_string_value(json_object_get(v, "model"));
    assert_string_equal(id, model); /* the answer names the adapter it ran with */
    char *s = chat_content(v);
    json_decref(v);
    return s;
}

/* ---- private generation ------------------------------------------------------------------ */

/* What `orchard generate --adapter` does: the stack active on the model, the
 * chat prompt as the server builds it, greedy decoding with its stop ids. */
static char *private_chat(const orc_lora_stack *st, const char *text, int max_tokens) {
    orc_error err = {0};
    assert_int_equal(orc_llm_set_adapters(F->m, st, &err), ORC_OK);
    const orc_chat_template t = orc_chat_template_detect(F->tok);
    orc_chat_msg msg = {"user", text};
    int32_t *ids = NULL, stops[4];
    size_t n = 0, n_stops = orc_chat_stop_ids_with(t, F->tok, stops, 4);
    assert_int_equal(orc_chat_encode_with(t, F->tok, &msg, 1, true, &ids, NULL, &n, &err), ORC_OK);
    orc_generator *g = orc_generator_new(F->m, F->tok, 0, &err);
    assert_non_null(g);
    orc_gen_opts o;
    orc_gen_opts_default(&o);
    orc_sampler_opts_default(&o.sampler);
    o.sampler.temperature = 0.0f; /* as the server parses temperature 0 */
    o.sampler.top_p = 1.0f;
    o.sampler.top_k = 0;
    o.sampler.min_p = 0.0f;
    o.max_tokens = max_tokens;
    o.stop_ids = stops;
    o.n_stop_ids = n_stops > 4 ? 4 : n_stops;
    orc_gen_result res;
    assert_int_equal(orc_generate(g, ids, n, &o, &res, &err), ORC_OK);
    json_t *j = srv_json_text(res.text, res.text_len); /* as the server sends bytes that are not UTF-8 */
    char *s = strdup(json_string_value(j));
    json_decref(j);
    orc_gen_result_free(&res);
    orc_generator_free(g);
    free(ids);
    assert_int_equal(orc_llm_set_adapters(F->m, NULL, &err), ORC_OK);
    return s;
}

static orc_lora_stack stack_of(const orc_lora *a, float wa, const orc_lora *b, float wb) {
    orc_lora_stack s = {0};
    if (a) s.ad[s.n] = a, s.weight[s.n++] = wa;
    if (b) s.ad[s.n] = b, s.weight[s.n++] = wb;
    return s;
}

/* ---- the batcher: mixed stacks in one step ------------------------------------------------ */

#define ROWS 6
#define DECODE 10

typedef struct worker {
    srv_batcher *b;
    orc_lora_stack st;
    int32_t prompt[16];
    int n_prompt;
    int32_t out[DECODE];
    float *logits; /* [(DECODE + 1) * V] */
    orc_status rc;
} worker;

static void *run_worker(void *arg) {
    worker *w = arg;
    orc_error err = {0};
    w->rc = srv_test_greedy(w->b, &w->st, w->prompt, (size_t)w->n_prompt, DECODE, w->out, w->logits,
                            F->m->cfg.vocab_size, &err);
    return NULL;
}

static void test_step_mixed_stacks_same_bits(void **state) {
    (void)state;
    orc_error err = {0};
    srv_batcher *b = srv_batcher_new(F->m, ROWS, 64, 3, &err); /* steps on 3 threads, references on 1 */
    assert_non_null(b);
    srv_batcher_set_gate(b, ROWS); /* every step carries all the stacks */
    const int64_t V = F->m->cfg.vocab_size;
    /* A three times: its short rows (4 + 2 + 3 in the prefill) span several gathered products */
    const orc_lora_stack stacks[ROWS] = {stack_of(NULL, 0, NULL, 0), stack_of(F->A, 1, NULL, 0),
                                         stack_of(F->B, 1, NULL, 0), stack_of(F->A, 1, F->B, 0.5f),
                                         stack_of(F->A, 1, NULL, 0),  stack_of(F->A, 1, NULL, 0)};
    const int n_prompt[ROWS] = {3, 4, 5, 9, 2, 3}; /* decode-sized chunks and own products */
    worker w[ROWS];
    pthread_t th[ROWS];
    for (int i = 0; i < ROWS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].b = b;
        w[i].st = stacks[i];
        w[i].n_prompt = n_prompt[i];
        for (int k = 0; k < w[i].n_prompt; k++) w[i].prompt[k] = (int32_t)((5 * k + 11 + (i > 3 ? i : 0)) % V);
        w[i].logits = malloc(sizeof(float) * (size_t)((DECODE + 1) * V));
        assert_int_equal(pthread_create(&th[i], NULL, run_worker, &w[i]), 0);
    }
    for (int i = 0; i < ROWS; i++) pthread_join(th[i], NULL);
    uint64_t steps, rows;
    srv_batcher_counts(b, &steps, &rows);
    assert_int_equal(steps, (uint64_t)(DECODE + 1));
    assert_int_equal(rows, (uint64_t)ROWS * (DECODE + 1));
    float *ref = malloc(sizeof(float) * (size_t)((DECODE + 1) * V));
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    for (int i = 0; i < ROWS; i++) {
        assert_int_equal(w[i].rc, ORC_OK);
        assert_int_equal(orc_llm_set_adapters(F->m, &w[i].st, &err), ORC_OK);
        assert_int_equal(srv_test_reference(F->m, w[i].prompt, (size_t)w[i].n_prompt, DECODE, w[i].out, ref, &err),
                         ORC_OK);
        if (memcmp(ref, w[i].logits, sizeof(float) * (size_t)((DECODE + 1) * V)) != 0)
            fail_msg("row %d (stack of %d adapters): batched logits differ from a private generator's", i,
                     w[i].st.n);
    }
    omp_set_num_threads(threads);
    assert_int_equal(orc_llm_set_adapters(F->m, NULL, &err), ORC_OK);
    /* the adapters act: row 1 (A) and row 0 (base) share their first 3 prompt
     * tokens, so their logits after 3 tokens differ only by A. Checked on a
     * fresh pair of sequences. */
    srv_seq s0, s1;
    assert_int_equal(srv_seq_init(b, &s0, &err), ORC_OK);
    assert_int_equal(srv_seq_init(b, &s1, &err), ORC_OK);
    srv_batcher_set_gate(b, 0);
    assert_int_equal(srv_seq_use_adapters(&s1, &stacks[1], &err), ORC_OK);
    float *l0 = malloc(sizeof(float) * (size_t)V);
    memcpy(l0, srv_seq_feed(&s0, w[0].prompt, 3, &err), sizeof(float) * (size_t)V);
    const float *l1 = srv_seq_feed(&s1, w[0].prompt, 3, &err);
    assert_non_null(l1);
    assert_true(memcmp(l0, l1, sizeof(float) * (size_t)V) != 0);
    /* a sequence switched to another stack drops what it cached */
    size_t n = 0;
    srv_seq_tokens(&s1, &n);
    assert_int_equal(n, 3);
    assert_int_equal(srv_seq_shared_prefix(&s1, &stacks[1], w[0].prompt, 3), 3);
    assert_int_equal(srv_seq_shared_prefix(&s1, &stacks[2], w[0].prompt, 3), 0);
    assert_int_equal(srv_seq_use_adapters(&s1, &stacks[2], &err), ORC_OK);
    srv_seq_tokens(&s1, &n);
    assert_int_equal(n, 0);
    free(l0);
    srv_seq_release(&s0);
    srv_seq_release(&s1);
    for (int i = 0; i < ROWS; i++) free(w[i].logits);
    free(ref);
    srv_batcher_free(b);
}

/* ---- the server ------------------------------------------------------------------------------ */

static void test_models_and_errors(void **state) {
    (void)state;
    http_res r = call("/v1/models", NULL);
    assert_int_equal(r.status, 200);
    json_t *v = json_loads(r.body, 0, NULL), *data = json_object_get(v, "data");
    assert_int_equal(json_array_size(data), 3);
    const char *ids[3] = {"tiny", "alpha", "beta"};
    for (size_t i = 0; i < 3; i++) {
        json_t *m = json_array_get(data, i);
        assert_string_equal(json_string_value(json_object_get(m, "id")), ids[i]);
        if (i == 0) assert_true(json_is_null(json_object_get(m, "parent")));
        else assert_string_equal(json_string_value(json_object_get(m, "parent")), "tiny");
    }
    json_decref(v);
    free(r.body);
    r = call("/v1/models/beta", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"parent\":\"tiny\""));
    free(r.body);
    /* an unknown adapter: 400 naming it and the field */
    r = call("/v1/chat/completions",
             "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"adapters\": [\"alpha\", \"gamma\"]}");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "gamma"));
    assert_non_null(strstr(r.body, "\"param\":\"adapters\""));
    free(r.body);
    r = call("/v1/completions", "{\"model\": \"gamma\", \"prompt\": \"hi\"}");
    assert_int_equal(r.status, 404); /* OpenAI's model_not_found */
    assert_non_null(strstr(r.body, "model_not_found"));
    free(r.body);
    const char *bad[] = {"{\"prompt\": \"hi\", \"adapters\": \"alpha\"}",
                         "{\"prompt\": \"hi\", \"adapters\": [3]}",
                         "{\"prompt\": \"hi\", \"model\": \"alpha\", \"adapters\": [\"alpha\"]}",
                         "{\"prompt\": \"hi\", \"adapters\": [{\"name\": \"beta\", \"weight\": \"x\"}]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = call("/v1/completions", bad[i]);
        if (r.status != 400) fprintf(stderr, "%s -> %ld %s\n", bad[i], r.status, r.body);
        assert_int_equal(r.status, 400);
        assert_non_null(strstr(r.body, "\"param\":\"adapters\""));
        free(r.body);
    }
}

static void test_chat_matches_private_generation(void **state) {
    (void)state;
    const char *text = "the whale and the sea";
    char *base = greedy_chat("tiny", text, 12, "");
    char *a = greedy_chat("alpha", text, 12, "");
    char *a2 = greedy_chat("tiny", text, 12, ", \"adapters\": [\"alpha\"]");
    char *ab = greedy_chat("alpha", text, 12, ", \"adapters\": [{\"name\": \"beta\", \"weight\": 0.5}]");
    orc_lora_stack none = {0}, sa = stack_of(F->A, 1, NULL, 0), sab = stack_of(F->A, 1, F->B, 0.5f);
    char *pbase = private_chat(&none, text, 12), *pa = private_chat(&sa, text, 12), *pab = private_chat(&sab, text, 12);
    assert_string_equal(base, pbase);
    assert_string_equal(a, pa);
    assert_string_equal(a2, pa); /* "adapters" and `model` select the same */
    assert_string_equal(ab, pab);
    assert_string_not_equal(a, base); /* the adapter changes the answer */
    assert_string_not_equal(ab, a);
    /* a prompt cached under A is not reused under the base: the answer is
     * still the base's (and, back under A, A's again) */
    char *again = greedy_chat("tiny", text, 12, "");
    assert_string_equal(again, base);
    char *again_a = greedy_chat("alpha", text, 12, "");
    assert_string_equal(again_a, a);
    free(base), free(a), free(a2), free(ab), free(pbase), free(pa), free(pab), free(again), free(again_a);
}

/* Completions with logprobs and streaming, and embeddings, under an adapter. */
static void test_completions_stream_embeddings(void **state) {
    (void)state;
    const char *fmt = "{\"model\": \"%s\", \"prompt\": \"the ship\", \"temperature\": 0, \"max_tokens\": 6, "
                      "\"logprobs\": 2, \"n\": 2%s}";
    char body[512];
    snprintf(body, sizeof body, fmt, "beta", "");
    json_t *whole = post_json("/v1/completions", body);
    json_t *c0 = json_array_get(json_object_get(whole, "choices"), 0), *c1 = json_array_get(json_object_get(whole, "choices"), 1);
    const char *t0 = json_string_value(json_object_get(c0, "text"));
    assert_string_equal(t0, json_string_value(json_object_get(c1, "text"))); /* greedy: n choices agree */
    json_t *lp0 = json_array_get(json_object_get(json_object_get(c0, "logprobs"), "token_logprobs"), 0);
    snprintf(body, sizeof body, fmt, "tiny", "");
    json_t *base = post_json("/v1/completions", body);
    json_t *b0 = json_array_get(json_object_get(base, "choices"), 0);
    json_t *blp0 = json_array_get(json_object_get(json_object_get(b0, "logprobs"), "token_logprobs"), 0);
    assert_true(json_real_value(lp0) != json_real_value(blp0)); /* the first token's log-probability moved */
    /* streamed under the same adapter: the same text */
    snprintf(body, sizeof body, fmt, "beta", ", \"stream\": true");
    http_res r = call("/v1/completions", body);
    assert_int_equal(r.status, 200);
    char joined[512] = "";
    for (const char *p = r.body; (p = strstr(p, "data: {")); p += 6) {
        const char *end = strstr(p, "\n\n");
        json_t *ev = json_loadb(p + 6, (size_t)(end - p - 6), 0, NULL);
        assert_non_null(ev);
        assert_string_equal(json_string_value(json_object_get(ev, "model")), "beta");
        json_t *ch = json_array_get(json_object_get(ev, "choices"), 0);
        if (json_integer_value(json_object_get(ch, "index")) == 0)
            strncat(joined, json_string_value(json_object_get(ch, "text")), sizeof joined - strlen(joined) - 1);
        json_decref(ev);
    }
    assert_string_equal(joined, t0);
    free(r.body);
    json_decref(whole);
    json_decref(base);
    /* embeddings: the adapter's hidden states, not the base's */
    json_t *ea = post_json("/v1/embeddings", "{\"model\": \"alpha\", \"input\": \"the old whale\"}");
    json_t *eb = post_json("/v1/embeddings", "{\"input\": \"the old whale\"}");
    json_t *va = json_object_get(json_array_get(json_object_get(ea, "data"), 0), "embedding");
    json_t *vb = json_object_get(json_array_get(json_object_get(eb, "data"), 0), "embedding");
    assert_string_equal(json_string_value(json_object_get(ea, "model")), "alpha");
    double diff = 0;
    for (size_t i = 0; i < json_array_size(va); i++)
        diff += fabs(json_real_value(json_array_get(va, i)) - json_real_value(json_array_get(vb, i)));
    assert_true(diff > 1e-3);
    json_decref(ea);
    json_decref(eb);
}

typedef struct client {
    const char *model, *extra;
    char *got;
} client;

static void *run_client(void *arg) {
    client *c = arg;
    char body[1024];
    snprintf(body, sizeof body, CHAT_FMT, c->model, "the captain and the ship", 10, c->extra);
    http_res r = call("/v1/chat/completions", body);
    json_t *v = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    json_t *msg = json_object_get(json_array_get(json_object_get(v, "choices"), 0), "message");
    const char *s = json_string_value(json_object_get(msg, "content"));
    c->got = s ? strdup(s) : NULL;
    if (!s) fprintf(stderr, "client %s: %ld %s\n", c->model, r.status, r.body);
    json_decref(v);
    free(r.body);
    return NULL;
}

static void test_concurrent_mixed_adapters(void **state) {
    (void)state;
    client cl[4] = {{"tiny", "", NULL},
                    {"alpha", "", NULL},
                    {"beta", "", NULL},
                    {"tiny", ", \"adapters\": [\"alpha\", {\"name\": \"beta\", \"weight\": 0.5}]", NULL}};
    char *want[4];
    for (int i = 0; i < 4; i++) { /* one at a time */
        run_client(&cl[i]);
        assert_non_null(cl[i].got);
        want[i] = cl[i].got;
        cl[i].got = NULL;
    }
    uint64_t steps0, rows0, steps, rows;
    srv_batcher_counts(F->srv->batcher, &steps0, &rows0);
    /* all four in flight: the first step waits for all four prefills */
    srv_batcher_set_gate(F->srv->batcher, 4);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, run_client, &cl[i]), 0);
    for (int k = 0; k < 30000; k++) { /* then let them run free (a short answer must not wait for company) */
        srv_batcher_counts(F->srv->batcher, &steps, &rows);
        if (steps > steps0) break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    srv_batcher_set_gate(F->srv->batcher, 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    /* every step under the gate held all four stacks (the first one for certain) */
    assert_true(steps > steps0 && rows - rows0 == 4 * (steps - steps0));
    for (int i = 0; i < 4; i++) {
        assert_non_null(cl[i].got);
        if (strcmp(cl[i].got, want[i]) != 0)
            fail_msg("client %d (%s%s): '%s' together, '%s' alone", i, cl[i].model, cl[i].extra, cl[i].got, want[i]);
        free(cl[i].got);
        free(want[i]);
    }
    /* /metrics: requests per adapter */
    http_res r = call("/metrics", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "# TYPE orchard_adapter_requests_total counter"));
    const char *p = strstr(r.body, "orchard_adapter_requests_total{adapter=\"beta\"} ");
    assert_non_null(p);
    assert_true(atoi(p + strlen("orchard_adapter_requests_total{adapter=\"beta\"} ")) >= 4);
    free(r.body);
}

/* An adapter for another model shape is refused at start, naming it and the tensor. */
static void test_wrong_shape_refused(void **state) {
    (void)state;
    orc_llm_config wide = F->m->cfg;
    wide.intermediate_size = 48;
    orc_lora_config lc;
    orc_lora_config_default(&lc);
    lc.rank = 2;
    orc_error err = {0};
    orc_lora *w = orc_lora_create(&wide, &lc, false, &err);
    assert_non_null(w);
    char path[128];
    orc_test_path(path, sizeof path, F->dir, "wide");
    assert_int_equal(orc_lora_save(w, path, NULL, 0, &err), ORC_OK);
    orc_lora_free(w);
    orc_lora_set *set = orc_lora_set_new(&err);
    assert_int_equal(orc_lora_set_load(set, "wide", path, &wide, &err), ORC_OK);
    orc_server_opts o;
    orc_server_opts_default(&o);
    o.port = 0;
    o.model_name = "tiny";
    o.adapters = set;
    orc_error_clear(&err);
    assert_null(orc_server_start(F->m, F->tok, &o, &err));
    assert_int_equal(err.code, ORC_ESHAPE);
    assert_non_null(strstr(err.msg, "'wide'"));
    assert_non_null(strstr(err.msg, "mlp.gate_proj.lora_A.weight"));
    orc_lora_set_free(set);
    /* and the loader refuses it for this model, naming the tensor and both shapes */
    set = orc_lora_set_new(&err);
    orc_error_clear(&err);
    assert_int_not_equal(orc_lora_set_load(set, "wide", path, &F->m->cfg, &err), ORC_OK);
    assert_non_null(strstr(err.msg, "lora_"));
    orc_lora_set_free(set);
}

/* ---- fixture ------------------------------------------------------------------------------------ */

static orc_status make_adapter(const char *name, uint64_t seed, orc_error *err) {
    return srv_test_make_adapter(F->set, &F->m->cfg, F->dir, name, seed, err);
}

static int setup(void **state) {
    (void)state;
    curl_global_init(CURL_GLOBAL_ALL);
    F = calloc(1, sizeof *F);
    if (!F || orc_test_dir_make(F->dir, sizeof F->dir, "serve_lora") != 0) return -1;
    if (srv_test_tiny_model(CORPUS, 300, 2, 128, 7, true, &F->tok, &F->m) != 0) return -1;
    orc_error err = {0};
    F->set = orc_lora_set_new(&err);
    if (!F->set || make_adapter("alpha", 11, &err) != ORC_OK || make_adapter("beta", 23, &err) != ORC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    F->A = orc_lora_set_get(F->set, "alpha");
    F->B = orc_lora_set_get(F->set, "beta");
    const orc_server_opts o = srv_test_opts(4, "tiny", F->set);
    F->srv = orc_server_start(F->m, F->tok, &o, &err);
    if (!F->srv) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    F->port = orc_server_port(F->srv);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    orc_server_stop(F->srv);
    orc_lora_set_free(F->set);
    orc_llm_free(F->m);
    orc_tokenizer_free(F->tok);
    orc_test_dir_remove(F->dir);
    free(F);
    curl_global_cleanup();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_mixed_stacks_same_bits),
        cmocka_unit_test(test_models_and_errors),
        cmocka_unit_test(test_chat_matches_private_generation),
        cmocka_unit_test(test_completions_stream_embeddings),
        cmocka_unit_test(test_concurrent_mixed_adapters),
        cmocka_unit_test(test_wrong_shape_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
