/* The quantized LM (orchard/quant.h): a small model quantized to Q8_0 gives
 * logits close to the float model's and mostly the same greedy tokens; Q4_0
 * within a looser bound; decoding through the KV cache matches a full
 * forward; any thread count gives the same bits; a model directory written
 * as a quantized GGUF (tensor types, file type, bit-exact blocks) loads
 * back to the very same logits as quantizing in memory; requantizing a Q8_0
 * file keeps its blocks; a wrong tensor shape is an error naming it. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gradcheck.h"
#include "orchard/llm_gguf.h"
#include "orchard/ops.h"
#include "orchard/quant.h"
#include "orchard/rng.h"

static orc_llm_config small_config(bool tied) {
    orc_llm_config c;
    orc_llm_config_default(&c);
    c.hidden_size = 64;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.intermediate_size = 96;
    c.vocab_size = 160;
    c.max_position_embeddings = 64;
    c.tie_word_embeddings = tied;
    return c;
}

/* A model with larger weights than the default init, so that its logits
 * are peaked enough for greedy tokens to mean something. */
static orc_llm *small_model(bool tied, uint64_t seed) {
    orc_llm_config c = small_config(tied);
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, false, &err);
    assert_non_null(m);
    orc_llm_init_weights(m, seed);
    for (int i = 0; i < m->n_params; i++) {
        orc_tensor *t = m->params[i];
        if (t->ndim == 2)
            for (int64_t k = 0; k < t->numel; k++) orc_f32(t)[k] *= 5.0f;
    }
    return m;
}

typedef struct runner {
    orc_arena *arena;
    orc_ctx ctx;
} runner;

static void runner_init(runner *r) {
    r->arena = orc_arena_create(8 << 20);
    orc_ctx_init(&r->ctx, r->arena, 0);
    orc_set_no_grad(&r->ctx, true);
}

static orc_tensor *ids_tensor(runner *r, const int32_t *ids, int64_t n) {
    orc_tensor *t = orc_new(&r->ctx, ORC_I32, 2, ORC_SHAPE(1, n));
    memcpy(t->data, ids, sizeof(int32_t) * (size_t)n);
    return t;
}

/* Logits [n, V] of a float model (q NULL) or a quantized one, malloc'd. */
static float *logits_of(orc_llm *m, orc_qllm *q, const int32_t *ids, int64_t n) {
    runner r;
    runner_init(&r);
    orc_tensor *t = ids_tensor(&r, ids, n);
    orc_tensor *y = q ? orc_qllm_forward(&r.ctx, q, t, NULL) : orc_llm_forward(&r.ctx, m, t, NULL);
    if (!y) fail_msg("forward: %s", r.ctx.err.msg);
    float *out = malloc(sizeof(float) * (size_t)y->numel);
    orc_read_f32(y, out);
    orc_ctx_reset(&r.ctx);
    orc_arena_destroy(r.arena);
    return out;
}

static const int32_t IDS[] = {1, 17, 42, 99, 3, 150, 77, 8, 23, 64, 5, 120, 31, 2, 88, 140};
#define N_IDS ((int64_t)(sizeof IDS / sizeof IDS[0]))

/* max |a - b| / max |a| and the fraction of rows with the same argmax. */
static void compare(const float *a, const float *b, int64_t rows, int64_t V, double *rel, double *agree) {
    double maxd = 0.0, maxa = 0.0;
    int same = 0;
    for (int64_t i = 0; i < rows; i++) {
        int64_t ia = 0, ib = 0;
        for (int64_t v = 0; v < V; v++) {
            const float x = a[i * V + v], y = b[i * V + v];
            maxd = fmax(maxd, fabs((double)x - y));
            maxa = fmax(maxa, fabs((double)x));
            if (x > a[i * V + ia]) ia = v;
            if (y > b[i * V + ib]) ib = v;
        }
        same += ia == ib;
    }
    *rel = maxd / maxa;
    *agree = (double)same / (double)rows;
}

static void check_close(orc_ggml_type type, bool tied, double max_rel, double min_agree) {
    orc_llm *m = small_model(tied, 5);
    orc_error err = {0};
    orc_qllm *q = orc_qllm_from_llm(m, type, &err);
    assert_non_null(q);
    float *ref = logits_of(m, NULL, IDS, N_IDS), *got = logits_of(NULL, q, IDS, N_IDS);
    double rel, agree;
    compare(ref, got, N_IDS, m->cfg.vocab_size, &rel, &agree);
    printf("# %s tied=%d: max logit error %.4f of the largest, argmax agreement %.2f, %zu weight bytes\n",
           orc_ggml_type_name(type), tied, rel, agree, orc_qllm_weight_bytes(q));
    assert_true(rel < max_rel);
    assert_true(agree >= min_agree);
    free(ref);
    free(got);
    orc_qllm_free(q);
    orc_llm_free(m);
}

static void test_q8_close_to_float(void **state) {
    (void)state;
    check_close(ORC_GGML_Q8_0, true, 0.04, 0.85);
    check_close(ORC_GGML_Q8_0, false, 0.04, 0.85);
}

static void test_q4_close_to_float(void **state) {
    (void)state;
    check_close(ORC_GGML_Q4_0, true, 0.3, 0.5);
}

/* Greedy decode through the cache, fed one token at a time. */
static void greedy(orc_llm *m, orc_qllm *q, int32_t first, int n, int32_t *out) {
    runner r;
    runner_init(&r);
    orc_error err = {0};
    orc_llm_cache *c = orc_llm_cache_new(q ? &q->cfg : &m->cfg, 1, 64, &err);
    const int64_t V = q ? q->cfg.vocab_size : m->cfg.vocab_size;
    int32_t tok = first;
    for (int i = 0; i < n; i++) {
        orc_tensor *t = ids_tensor(&r, &tok, 1);
        orc_tensor *y = q ? orc_qllm_forward(&r.ctx, q, t, c) : orc_llm_forward(&r.ctx, m, t, c);
        if (!y) fail_msg("decode: %s", r.ctx.err.msg);
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (orc_f32(y)[v] > orc_f32(y)[best]) best = (int32_t)v;
        out[i] = tok = best;
        orc_ctx_reset(&r.ctx);
    }
    orc_llm_cache_free(c);
    orc_arena_destroy(r.arena);
}

static void test_greedy_mostly_equal(void **state) {
    (void)state;
    orc_llm *m = small_model(true, 9);
    orc_error err = {0};
    orc_qllm *q = orc_qllm_from_llm(m, ORC_GGML_Q8_0, &err);
    int32_t a[24], b[24];
    greedy(m, NULL, 7, 24, a);
    greedy(NULL, q, 7, 24, b);
    int same = 0;
    while (same < 24 && a[same] == b[same]) same++;
    printf("# q8_0 greedy: the first %d of 24 tokens equal the float model's\n", same);
    assert_true(same >= 12);
    orc_qllm_free(q);
    orc_llm_free(m);
}

static void test_cache_matches_full(void **state) {
    (void)state;
    orc_llm *m = small_model(false, 13);
    orc_error err = {0};
    orc_qllm *q = orc_qllm_from_llm(m, ORC_GGML_Q4_0, &err);
    float *full = logits_of(NULL, q, IDS, N_IDS);
    runner r;
    runner_init(&r);
    orc_llm_cache *c = orc_llm_cache_new(&q->cfg, 1, 64, &err);
    const int64_t V = q->cfg.vocab_size;
    /* a prefill of 10, then one token at a time */
    orc_tensor *y = orc_qllm_forward(&r.ctx, q, ids_tensor(&r, IDS, 10), c);
    assert_non_null(y);
    for (int64_t k = 0; k < 10 * V; k++) assert_float_equal(orc_f32(y)[k], full[k], 1e-4);
    orc_ctx_reset(&r.ctx);
    for (int64_t i = 10; i < N_IDS; i++) {
        y = orc_qllm_forward(&r.ctx, q, ids_tensor(&r, IDS + i, 1), c);
        assert_non_null(y);
        for (int64_t v = 0; v < V; v++) assert_float_equal(orc_f32(y)[v], full[i * V + v], 1e-4);
        orc_ctx_reset(&r.ctx);
    }
    orc_llm_cache_free(c);
    orc_arena_destroy(r.arena);
    free(full);
    orc_qllm_free(q);
    orc_llm_free(m);
}

static void test_threads(void **state) {
    (void)state;
    orc_llm *m = small_model(true, 17);
    orc_error err = {0};
    orc_qllm *q = orc_qllm_from_llm(m, ORC_GGML_Q4_0, &err);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    float *a = logits_of(NULL, q, IDS, N_IDS);
    omp_set_num_threads(3);
    float *b = logits_of(NULL, q, IDS, N_IDS);
    omp_set_num_threads(saved);
    assert_memory_equal(a, b, sizeof(float) * (size_t)(N_IDS * q->cfg.vocab_size));
    free(a);
    free(b);
    orc_qllm_free(q);
    orc_llm_free(m);
}

typedef struct tmp {
    char dir[64], model[96], gguf[96], again[96];
} tmp;

static void tmp_init(tmp *t) {
    snprintf(t->dir, sizeof t->dir, "/tmp/orc_quant_%d", (int)getpid());
    snprintf(t->model, sizeof t->model, "%s/model", t->dir);
    snprintf(t->gguf, sizeof t->gguf, "%s/q.gguf", t->dir);
    snprintf(t->again, sizeof t->again, "%s/again.gguf", t->dir);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", t->dir);
    assert_int_equal(system(cmd), 0);
}

static void tmp_free(tmp *t) {
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", t->dir);
    assert_int_equal(system(cmd), 0);
}

static void check_file(orc_ggml_type type, bool tied) {
    tmp t;
    tmp_init(&t);
    orc_llm *m = small_model(tied, 21);
    orc_error err = {0};
    assert_int_equal(orc_llm_save(m, t.model, &err), ORC_OK);
    if (orc_quantize_model_dir(t.model, t.gguf, type, &err) != ORC_OK) fail_msg("%s", err.msg);
    orc_gguf_file *f = orc_gguf_open(t.gguf, &err);
    assert_non_null(f);
    const orc_ggml_type emb = type == ORC_GGML_Q4_0 ? ORC_GGML_Q8_0 : type;
    assert_int_equal(orc_gguf_find_tensor(f, "token_embd.weight")->type, emb);
    assert_int_equal(orc_gguf_find_tensor(f, "blk.1.ffn_down.weight")->type, type);
    assert_int_equal(orc_gguf_find_tensor(f, "blk.0.attn_q.weight")->type, type);
    assert_int_equal(orc_gguf_find_tensor(f, "blk.0.attn_norm.weight")->type, ORC_GGML_F32);
    if (!tied) assert_int_equal(orc_gguf_find_tensor(f, "output.weight")->type, emb);
    uint32_t ft = 0;
    assert_int_equal(orc_gguf_get_u32(f, "general.file_type", &ft, &err), ORC_OK);
    assert_int_equal(ft, type == ORC_GGML_Q4_0 ? 2u : 7u);
    /* the blocks are ggml's reference quantization of the llama.cpp-order rows */
    const orc_gguf_tensor_info *ti = orc_gguf_find_tensor(f, "blk.0.attn_k.weight");
    const orc_tensor *wk = m->layers[0].wk;
    float *perm = malloc(sizeof(float) * (size_t)wk->numel);
    orc_gguf_permute_qk(perm, orc_f32(wk), m->cfg.num_key_value_heads, m->cfg.head_dim, wk->shape[1], true);
    uint8_t *blocks = malloc(ti->nbytes);
    assert_int_equal(orc_ggml_quantize(type, perm, blocks, wk->numel, &err), ORC_OK);
    assert_memory_equal(blocks, ti->data, ti->nbytes);
    free(perm);
    free(blocks);
    orc_gguf_close(f);
    /* loading the file gives the same model as quantizing in memory */
    orc_qllm *a = orc_qllm_load(t.gguf, &err);
    if (!a) fail_msg("%s", err.msg);
    orc_qllm *b = orc_qllm_from_llm(m, type, &err);
    assert_int_equal(a->type, type);
    float *la = logits_of(NULL, a, IDS, N_IDS), *lb = logits_of(NULL, b, IDS, N_IDS);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)(N_IDS * m->cfg.vocab_size));
    free(la);
    free(lb);
    orc_qllm_free(b);
    /* requantizing keeps the blocks as they are */
    assert_int_equal(orc_quantize_gguf(t.gguf, t.again, type, &err), ORC_OK);
    orc_gguf_file *g = orc_gguf_open(t.again, &err);
    assert_non_null(g);
    const orc_gguf_tensor_info *t1 = orc_gguf_find_tensor(g, "blk.1.ffn_up.weight");
    assert_memory_equal(t1->data, orc_gguf_find_tensor(a->file, "blk.1.ffn_up.weight")->data, t1->nbytes);
    orc_gguf_close(g);
    orc_qllm_free(a);
    orc_llm_free(m);
    tmp_free(&t);
}

static void test_file_round_trip(void **state) {
    (void)state;
    check_file(ORC_GGML_Q8_0, true);
    check_file(ORC_GGML_Q4_0, false);
}

/* A float GGUF runs too (its matrices quantized to Q8_0 on load), and a
 * matrix of the wrong shape is refused by name. */
static void test_float_gguf_and_bad_shape(void **state) {
    (void)state;
    tmp t;
    tmp_init(&t);
    orc_llm *m = small_model(true, 25);
    orc_error err = {0};
    orc_gguf_export_opts o = {.type = ORC_GGML_F32};
    assert_int_equal(orc_llm_export_gguf(m, NULL, t.gguf, &o, &err), ORC_OK);
    orc_qllm *a = orc_qllm_load(t.gguf, &err);
    if (!a) fail_msg("%s", err.msg);
    orc_qllm *b = orc_qllm_from_llm(m, ORC_GGML_Q8_0, &err);
    float *la = logits_of(NULL, a, IDS, N_IDS), *lb = logits_of(NULL, b, IDS, N_IDS);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)(N_IDS * m->cfg.vocab_size));
    free(la);
    free(lb);
    orc_qllm_free(a);
    orc_qllm_free(b);
    /* a file whose ffn_up has a column block too few */
    orc_gguf_writer *w = orc_gguf_writer_new(&err);
    orc_gguf_file *f = orc_gguf_open(t.gguf, &err);
    for (size_t i = 0; i < orc_gguf_kv_count(f); i++) {
        const orc_gguf_kv *kv = orc_gguf_kv_at(f, i);
        if (orc_gguf_kv_type(kv) == ORC_GGUF_UINT32) {
            uint32_t v;
            orc_gguf_kv_get_u32(kv, &v, &err);
            orc_gguf_add_u32(w, orc_gguf_kv_key(kv), v, &err);
        } else if (orc_gguf_kv_type(kv) == ORC_GGUF_FLOAT32) {
            float v;
            orc_gguf_kv_get_f32(kv, &v, &err);
            orc_gguf_add_f32(w, orc_gguf_kv_key(kv), v, &err);
        } else if (orc_gguf_kv_type(kv) == ORC_GGUF_STRING) {
            const char *s;
            orc_gguf_kv_get_str(kv, &s, NULL, &err);
            orc_gguf_add_str(w, orc_gguf_kv_key(kv), s, &err);
        }
    }
    for (size_t i = 0; i < orc_gguf_tensor_count(f); i++) {
        const orc_gguf_tensor_info *ti = orc_gguf_tensor_at(f, i);
        int64_t shape[4] = {ti->shape[0], ti->shape[1]};
        size_t nbytes = ti->nbytes;
        if (strcmp(ti->name, "blk.1.ffn_up.weight") == 0) {
            shape[1] -= 32;
            nbytes = (size_t)(shape[0] * shape[1]) * sizeof(float);
        }
        assert_int_equal(orc_gguf_add_tensor(w, ti->name, ti->type, ti->n_dims, shape, ti->data, nbytes, &err),
                         ORC_OK);
    }
    assert_int_equal(orc_gguf_write(w, t.again, &err), ORC_OK);
    orc_gguf_writer_free(w);
    orc_gguf_close(f);
    assert_null(orc_qllm_load(t.again, &err));
    assert_int_equal(err.code, ORC_ESHAPE);
    assert_non_null(strstr(err.msg, "blk.1.ffn_up.weight"));
    orc_llm_free(m);
    tmp_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_close_to_float),   cmocka_unit_test(test_q4_close_to_float),
        cmocka_unit_test(test_greedy_mostly_equal), cmocka_unit_test(test_cache_matches_full),
        cmocka_unit_test(test_threads),             cmocka_unit_test(test_file_round_trip),
        cmocka_unit_test(test_float_gguf_and_bad_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
