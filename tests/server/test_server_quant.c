/* `orchard serve` over a quantized model (orc_server_start_quant), on a
 * tiny random model quantized to Q4_0 with two random adapters, "alpha"
 * (selectable per request) and "rec" (active on the model at start: the
 * recovery adapter under every request): in the batcher, four sequences
 * under no adapter, alpha, rec + alpha and alpha again share every step
 * (the gate holds each step until all wait) and each sees the same logit
 * bits as orc_qllm_forward on that sequence alone with its stack (steps on
 * 3 threads, references on 1); through the HTTP server, a greedy
 * completion equals private greedy decoding over rec (and differs from the
 * base without it), under `model` = alpha equals decoding over rec + alpha,
 * a chat and an embedding answer, and three clients in flight together,
 * their prefills forced into one step, each get exactly their sequential
 * answer; /v1/models lists the base and alpha, not rec. */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gradcheck.h"
#include "server_test_util.h"
#include "testdir.h"
#include "../../src/server/server_internal.h"
#include "orchard/batch.h"
#include "orchard/lora.h"
#include "orchard/quant.h"
#include "orchard/rng.h"

static const char CORPUS[] =
    "The whale rose from the grey sea and the ship turned to follow it. "
    "The captain stood on the deck and watched the white whale swim away. "
    "Every sailor on the ship knew the sea was wide and the whale was old. "
    "They sailed for days and nights, and the wind was cold on the water.";

typedef struct fixture {
    orc_tokenizer *tok;
    orc_llm *m;
    orc_qllm *q;
    orc_lora_set *set;    /* "alpha", "rec" */
    orc_lora_set *served; /* what requests may choose: "alpha" (the same files) */
    const orc_lora *A, *R;
    orc_lora_stack base; /* {rec}: active on q at start */
    orc_server *srv;
    int port;
    char dir[64];
} fixture;

static fixture *F;

static orc_lora_stack stack_of(const orc_lora *a, const orc_lora *b) {
    orc_lora_stack s = {0};
    if (a) s.ad[s.n] = a, s.weight[s.n++] = 1.0f;
    if (b) s.ad[s.n] = b, s.weight[s.n++] = 1.0f;
    return s;
}

/* ---- private decoding over the quantized model ---------------------------------------- */

/* Feed ids[0..n) to a view of q under st through cache; the last row's
 * logits into out [V]. */
static void qfeed(orc_ctx *ctx, orc_qllm *view, orc_llm_cache *cache, const int32_t *ids, size_t n, float *out) {
    orc_ctx_reset(ctx);
    orc_tensor *t = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, (int64_t)n));
    assert_non_null(t);
    memcpy(t->data, ids, sizeof(int32_t) * n);
    orc_tensor *y = orc_qllm_forward(ctx, view, t, cache);
    if (!y) fail_msg("reference forward: %s", ctx->err.msg);
    const int64_t V = view->cfg.vocab_size;
    memcpy(out, orc_f32(y) + (int64_t)(n - 1) * V, sizeof(float) * (size_t)V);
}

/* The logits [(decode + 1) * V] of prompt then out[0..decode) fed one by
 * one, on q alone under st. */
static void qreference(const orc_lora_stack *st, const int32_t *prompt, size_t n_prompt, int decode,
                       const int32_t *out, float *logits) {
    orc_qllm view = *F->q; /* shares the weights; its own adapter pointer */
    orc_error err = {0};
    assert_int_equal(orc_qllm_set_adapters(&view, st, &err), ORC_OK);
    const int64_t V = view.cfg.vocab_size;
    orc_llm_cache *cache = orc_llm_cache_new(&view.cfg, 1, 64, &err);
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 0);
    ctx.no_grad = true;
    qfeed(&ctx, &view, cache, prompt, n_prompt, logits);
    for (int t = 0; t < decode; t++) qfeed(&ctx, &view, cache, &out[t], 1, logits + (size_t)(t + 1) * (size_t)V);
    orc_ctx_reset(&ctx);
    orc_arena_destroy(a);
    orc_llm_cache_free(cache);
}

/* Greedy completion text of "text" as the server decodes it (a begin token,
 * ids without text masked, stopping at end of text), on q alone under st,
 * as the server's JSON string holds it. */
static char *private_completion(const orc_lora_stack *st, const char *text, int max_tokens) {
    orc_qllm view = *F->q;
    orc_error err = {0};
    assert_int_equal(orc_qllm_set_adapters(&view, st, &err), ORC_OK);
    const int64_t V = view.cfg.vocab_size, tv = (int64_t)orc_tokenizer_vocab_size(F->tok);
    int32_t ids[64], *enc = NULL;
    size_t n = 0, k = 0;
    ids[n++] = orc_tokenizer_special_id(F->tok, ORC_TOK_BEGIN_OF_TEXT);
    assert_int_equal(orc_tokenizer_encode(F->tok, text, strlen(text), 0, &enc, &k, &err), ORC_OK);
    memcpy(ids + n, enc, sizeof(int32_t) * k);
    n += k;
    free(enc);
    const int32_t eot = orc_tokenizer_special_id(F->tok, ORC_TOK_END_OF_TEXT);
    orc_llm_cache *cache = orc_llm_cache_new(&view.cfg, 1, 64, &err);
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 0);
    ctx.no_grad = true;
    float *lg = malloc(sizeof(float) * (size_t)V);
    int32_t gen[64];
    int n_gen = 0;
    qfeed(&ctx, &view, cache, ids, n, lg);
    while (n_gen < max_tokens) {
        for (int64_t v = tv; v < V; v++) lg[v] = -INFINITY;
        const int32_t id = srv_test_argmax(lg, V);
        if (id == eot || id == view.cfg.eos_token_id) break;
        gen[n_gen++] = id;
        if (n_gen < max_tokens) qfeed(&ctx, &view, cache, &id, 1, lg);
    }
    char *bytes = NULL;
    size_t len = 0;
    assert_int_equal(orc_tokenizer_decode(F->tok, gen, (size_t)n_gen, &bytes, &len, &err), ORC_OK);
    json_t *j = srv_json_text(bytes, len); /* as the server sends bytes that are not UTF-8 */
    char *s = strdup(json_string_value(j));
    json_decref(j);
    free(bytes);
    free(lg);
    orc_ctx_reset(&ctx);
    orc_arena_destroy(a);
    orc_llm_cache_free(cache);
    return s;
}

/* ---- the batcher: stacks over the quantized base in one step ---------------------------- */

#define ROWS 4
#define DECODE 8

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
                            F->q->cfg.vocab_size, &err);
    return NULL;
}

static void test_step_same_bits(void **state) {
    (void)state;
    orc_error err = {0};
    srv_batcher *b = srv_batcher_new_quant(F->q, ROWS, 64, 3, &err); /* steps on 3 threads, references on 1 */
    assert_non_null(b);
    srv_batcher_set_gate(b, ROWS);
    const int64_t V = F->q->cfg.vocab_size;
    const orc_lora_stack stacks[ROWS] = {stack_of(NULL, NULL), stack_of(F->A, NULL), stack_of(F->R, F->A),
                                         stack_of(F->A, NULL)};
    const int n_prompt[ROWS] = {3, 4, 9, 2}; /* decode-sized chunks and a chunk of its own */
    worker w[ROWS];
    pthread_t th[ROWS];
    for (int i = 0; i < ROWS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].b = b;
        w[i].st = stacks[i];
        w[i].n_prompt = n_prompt[i];
        for (int k = 0; k < w[i].n_prompt; k++) w[i].prompt[k] = (int32_t)((7 * k + 5 + i) % V);
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
        qreference(&w[i].st, w[i].prompt, (size_t)w[i].n_prompt, DECODE, w[i].out, ref);
        if (memcmp(ref, w[i].logits, sizeof(float) * (size_t)((DECODE + 1) * V)) != 0)
            fail_msg("row %d (a stack of %d adapters): batched logits differ from orc_qllm_forward's alone", i,
                     w[i].st.n);
    }
    omp_set_num_threads(threads);
    /* alpha acts: row 1's prompt without it gives other logits */
    qreference(&stacks[0], w[1].prompt, (size_t)w[1].n_prompt, 0, NULL, ref);
    assert_true(memcmp(ref, w[1].logits, sizeof(float) * (size_t)V) != 0);
    for (int i = 0; i < ROWS; i++) free(w[i].logits);
    free(ref);
    srv_batcher_free(b);
}

/* ---- the server ------------------------------------------------------------------------------ */

static http_res call(const char *path, const char *body) {
    return srv_test_http(F->port, body ? "POST" : "GET", path, body, NULL, 0, 60L);
}

/* The first choice's text (completions) or message content (chat) of a 200 answer. */
static char *answer(const char *path, const char *body) {
    http_res r = call(path, body);
    if (r.status != 200) fprintf(stderr, "%s %s -> %ld %s\n", path, body, r.status, r.body);
    assert_int_equal(r.status, 200);
    json_t *v = json_loads(r.body, 0, NULL);
    assert_non_null(v);
    json_t *c = json_array_get(json_object_get(v, "choices"), 0);
    json_t *t = json_object_get(c, "text");
    if (!t) t = json_object_get(json_object_get(c, "message"), "content");
    assert_non_null(json_string_value(t));
    char *s = strdup(json_string_value(t));
    json_decref(v);
    free(r.body);
    return s;
}

#define COMPLETION "{\"prompt\": \"the whale and the\", \"temperature\": 0, \"max_tokens\": 10%s}"

static char *completion(const char *extra) {
    char body[512];
    snprintf(body, sizeof body, COMPLETION, extra);
    return answer("/v1/completions", body);
}

static void test_answers_match_private_decoding(void **state) {
    (void)state;
    char *base = completion(""), *alpha = completion(", \"model\": \"alpha\"");
    orc_lora_stack none = {0}, r = stack_of(F->R, NULL), ra = stack_of(F->R, F->A);
    char *p_r = private_completion(&r, "the whale and the", 10);
    char *p_none = private_completion(&none, "the whale and the", 10);
    char *p_ra = private_completion(&ra, "the whale and the", 10);
    assert_string_equal(base, p_r);     /* the recovery adapter is under every request */
    assert_string_not_equal(p_r, p_none); /* and it matters */
    assert_string_equal(alpha, p_ra);
    assert_string_not_equal(alpha, base);
    char *chat = answer("/v1/chat/completions",
                        "{\"messages\": [{\"role\": \"user\", \"content\": \"the sea\"}], \"max_tokens\": 4}");
    free(chat);
    http_res e = call("/v1/embeddings", "{\"model\": \"alpha\", \"input\": \"the ship\"}");
    assert_int_equal(e.status, 200);
    assert_non_null(strstr(e.body, "\"embedding\""));
    free(e.body);
    http_res m = call("/v1/models", NULL);
    assert_int_equal(m.status, 200);
    assert_non_null(strstr(m.body, "\"id\":\"tq\""));
    assert_non_null(strstr(m.body, "\"id\":\"alpha\""));
    assert_null(strstr(m.body, "\"id\":\"rec\""));
    free(m.body);
    free(base), free(alpha), free(p_r), free(p_none), free(p_ra);
}

typedef struct client {
    const char *extra;
    char *got;
} client;

static void *run_client(void *arg) {
    client *c = arg;
    c->got = completion(c->extra);
    return NULL;
}

static void test_concurrent_answers(void **state) {
    (void)state;
    client cl[3] = {{"", NULL},
                    {", \"model\": \"alpha\"", NULL},
                    {", \"adapters\": [\"alpha\"], \"stream\": false", NULL}};
    char *want[3];
    for (int i = 0; i < 3; i++) {
        run_client(&cl[i]);
        want[i] = cl[i].got;
    }
    uint64_t steps0, rows0, steps, rows;
    srv_batcher_counts(F->srv->batcher, &steps0, &rows0);
    srv_batcher_set_gate(F->srv->batcher, 3); /* the first step waits for all three prefills */
    pthread_t th[3];
    for (int i = 0; i < 3; i++) assert_int_equal(pthread_create(&th[i], NULL, run_client, &cl[i]), 0);
    for (int k = 0; k < 30000; k++) {
        srv_batcher_counts(F->srv->batcher, &steps, &rows);
        if (steps > steps0) break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    srv_batcher_set_gate(F->srv->batcher, 0);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    assert_true(steps > steps0 && rows - rows0 >= 3);
    for (int i = 0; i < 3; i++) {
        if (strcmp(cl[i].got, want[i]) != 0)
            fail_msg("client %d (%s): '%s' together, '%s' alone", i, cl[i].extra, cl[i].got, want[i]);
        free(cl[i].got);
        free(want[i]);
    }
}

/* ---- fixture ------------------------------------------------------------------------------------ */

static int setup(void **state) {
    (void)state;
    curl_global_init(CURL_GLOBAL_ALL);
    F = calloc(1, sizeof *F);
    if (!F || orc_test_dir_make(F->dir, sizeof F->dir, "serve_quant") != 0) return -1;
    if (srv_test_tiny_model(CORPUS, 300, 2, 64, 7, true, &F->tok, &F->m) != 0) return -1;
    orc_error err = {0};
    F->q = orc_qllm_from_llm(F->m, ORC_GGML_Q4_0, &err);
    F->set = orc_lora_set_new(&err);
    if (!F->q || !F->set || srv_test_make_adapter(F->set, &F->m->cfg, F->dir, "alpha", 11, &err) != ORC_OK ||
        srv_test_make_adapter(F->set, &F->m->cfg, F->dir, "rec", 23, &err) != ORC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    F->A = orc_lora_set_get(F->set, "alpha");
    F->R = orc_lora_set_get(F->set, "rec");
    F->base = stack_of(F->R, NULL);
    F->served = orc_lora_set_new(&err);
    char path[128];
    if (!F->served ||
        orc_lora_set_load(F->served, "alpha", orc_test_path(path, sizeof path, F->dir, "alpha"), &F->q->cfg, &err) !=
            ORC_OK ||
        orc_qllm_set_adapters(F->q, &F->base, &err) != ORC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    const orc_server_opts o = srv_test_opts(3, "tq", F->served);
    F->srv = orc_server_start_quant(F->q, F->tok, &o, &err);
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
    orc_lora_set_free(F->served);
    orc_lora_set_free(F->set);
    orc_qllm_free(F->q);
    orc_llm_free(F->m);
    orc_tokenizer_free(F->tok);
    orc_test_dir_remove(F->dir);
    free(F);
    curl_global_cleanup();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_same_bits),
        cmocka_unit_test(test_answers_match_private_decoding),
        cmocka_unit_test(test_concurrent_answers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
