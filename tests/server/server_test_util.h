/* Helpers shared by the server tests (tests/server/test_server*.c): an HTTP
 * client over libcurl (the status, the body, the SSE events seen, and
 * stopping after a number of them to act as a client that leaves) and the
 * tiny random model with a tokenizer trained on a corpus that they serve;
 * greedy decoding through the batcher and the same tokens through a
 * private generator, for bit-for-bit comparisons; random adapters saved
 * and loaded by name; the options of an in-process test server.
 * Header-only (static inline), because each test file is a program of its
 * own and the support library has no libcurl. */
#ifndef ORCHARD_TEST_SERVER_UTIL_H
#define ORCHARD_TEST_SERVER_UTIL_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/server/batcher.h"
#include "orchard/generate.h"
#include "orchard/llm.h"
#include "orchard/lora.h"
#include "orchard/rng.h"
#include "orchard/server.h"
#include "orchard/tokenizer.h"
#include "testdir.h"

typedef struct http_res {
    long status;
    char *body;
    size_t len;
    int events;      /* SSE events seen (for aborting) */
    int abort_after; /* > 0: stop reading after this many events */
} http_res;

static inline size_t srv_test_on_data(char *p, size_t size, size_t n, void *user) {
    http_res *r = user;
    size_t k = size * n;
    char *b = realloc(r->body, r->len + k + 1);
    if (!b) return 0;
    r->body = b;
    memcpy(r->body + r->len, p, k);
    r->len += k;
    r->body[r->len] = 0;
    if (r->abort_after > 0) {
        r->events = 0;
        for (const char *q = r->body; (q = strstr(q, "data: ")); q += 6) r->events++;
        if (r->events >= r->abort_after) return 0;
    }
    return k;
}

/* method path on 127.0.0.1:port with a JSON body (NULL: none) and an
 * Authorization header (NULL: none); status -1 when no answer came. */
static inline http_res srv_test_http(int port, const char *method, const char *path, const char *body,
                                     const char *auth, int abort_after, long timeout_s) {
    http_res r = {.abort_after = abort_after};
    CURL *c = curl_easy_init();
    char url[256], hdr[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (auth) {
        snprintf(hdr, sizeof hdr, "Authorization: %s", auth);
        h = curl_slist_append(h, hdr);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, srv_test_on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK && !(abort_after > 0 && rc == CURLE_WRITE_ERROR)) r.status = -1;
    else curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r.body) r.body = calloc(1, 1);
    return r;
}

/* A tokenizer of `vocab` entries trained on corpus, and a random model over
 * it (hidden 32, 4 heads of 8, 2 kv heads, FFN 64; `layers` blocks,
 * max_pos positions, eos = end of text) initialised from seed; peaked
 * multiplies the weight matrices by 40 so greedy paths are far from ties.
 * 0 on success. */
static inline int srv_test_tiny_model(const char *corpus, size_t vocab, int64_t layers, int64_t max_pos,
                                      uint64_t seed, bool peaked, orc_tokenizer **tok, orc_llm **m) {
    const char *texts[1] = {corpus};
    size_t lens[1] = {strlen(corpus)};
    orc_tokenizer_train_opts to = {.vocab_size = vocab};
    orc_error err = {0};
    *tok = orc_tokenizer_train(texts, lens, 1, &to, &err);
    if (!*tok) return -1;
    orc_llm_config c;
    orc_llm_config_default(&c);
    c.hidden_size = 32;
    c.num_hidden_layers = layers;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 8;
    c.intermediate_size = 64;
    c.vocab_size = (int64_t)orc_tokenizer_vocab_size(*tok) + 4;
    c.max_position_embeddings = max_pos;
    c.eos_token_id = orc_tokenizer_special_id(*tok, ORC_TOK_END_OF_TEXT);
    *m = orc_llm_create(&c, false, &err);
    if (!*m) return -1;
    orc_llm_init_weights(*m, seed);
    for (int i = 0; peaked && i < (*m)->n_params; i++)
        if ((*m)->params[i]->ndim == 2)
            for (int64_t j = 0; j < (*m)->params[i]->numel; j++) orc_f32((*m)->params[i])[j] *= 40.0f;
    return 0;
}

/* A random rank-4 adapter for cfg (B non-zero, from seed) saved in PEFT's
 * layout as dir/name and loaded into set under name. */
static inline orc_status srv_test_make_adapter(orc_lora_set *set, const orc_llm_config *cfg, const char *dir,
                                               const char *name, uint64_t seed, orc_error *err) {
    orc_lora_config lc;
    orc_lora_config_default(&lc);
    lc.rank = 4;
    lc.alpha = 8;
    orc_lora *a = orc_lora_create(cfg, &lc, false, err);
    if (!a) return err->code;
    orc_lora_init_weights(a, seed);
    orc_rng r;
    orc_rng_init(&r, seed + 1);
    for (int64_t i = 0; i < cfg->num_hidden_layers * ORC_LORA_N_TARGETS; i++)
        if (a->b[i]) orc_rng_fill_uniform(&r, orc_f32(a->b[i]), a->b[i]->numel, -1.0f, 1.0f);
    char path[128];
    orc_status st = orc_lora_save(a, orc_test_path(path, sizeof path, dir, name), NULL, 0, err);
    orc_lora_free(a);
    return st == ORC_OK ? orc_lora_set_load(set, name, path, cfg, err) : st;
}

/* A test server's options: an ephemeral port, `parallel` slots of one
 * thread each, the model id `name`, the adapters of set (may be NULL). */
static inline orc_server_opts srv_test_opts(int parallel, const char *name, const orc_lora_set *set) {
    orc_server_opts o;
    orc_server_opts_default(&o);
    o.port = 0;
    o.parallel = parallel;
    o.model_name = name;
    o.threads_per_slot = 1;
    o.adapters = set;
    return o;
}

static inline int srv_test_argmax(const float *x, int64_t n) {
    int best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = (int)i;
    return best;
}

/* A sequence of b under stack st (NULL: the base): feed the prompt, then
 * decode greedily: out[0..decode) the tokens, logits [(decode + 1) * V]
 * after the prompt and after each token. */
static inline orc_status srv_test_greedy(srv_batcher *b, const orc_lora_stack *st, const int32_t *prompt,
                                         size_t n_prompt, int decode, int32_t *out, float *logits, int64_t V,
                                         orc_error *err) {
    srv_seq s;
    orc_status rc = srv_seq_init(b, &s, err);
    if (rc == ORC_OK) rc = srv_seq_use_adapters(&s, st, err);
    const float *lg = rc == ORC_OK ? srv_seq_feed(&s, prompt, n_prompt, err) : NULL;
    for (int t = 0; lg && t <= decode; t++) {
        memcpy(logits + (size_t)t * (size_t)V, lg, sizeof(float) * (size_t)V);
        if (t == decode) break;
        out[t] = srv_test_argmax(lg, V);
        lg = srv_seq_feed(&s, &out[t], 1, err);
    }
    if (!lg && rc == ORC_OK) rc = err->code ? err->code : ORC_EINVAL;
    srv_seq_release(&s);
    return rc;
}

/* The same tokens through a private generator over m (its own m->lora):
 * logits [(decode + 1) * V]. */
static inline orc_status srv_test_reference(orc_llm *m, const int32_t *prompt, size_t n_prompt, int decode,
                                            const int32_t *out, float *logits, orc_error *err) {
    const int64_t V = m->cfg.vocab_size;
    orc_generator *g = orc_generator_new(m, NULL, 64, err);
    if (!g) return err->code;
    const float *lg = orc_generator_feed(g, prompt, n_prompt, err);
    for (int t = 0; lg && t <= decode; t++) {
        memcpy(logits + (size_t)t * (size_t)V, lg, sizeof(float) * (size_t)V);
        if (t < decode) lg = orc_generator_feed(g, &out[t], 1, err);
    }
    orc_generator_free(g);
    return lg ? ORC_OK : err->code ? err->code : ORC_EINVAL;
}

#endif
