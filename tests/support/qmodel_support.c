/* Shared helpers of the quantized-model tests (see qmodel_support.h). The
 * forwards run in their own arena in no-grad mode so that a helper leaves
 * no state behind between the comparisons a test makes. */
#include "qmodel_support.h"

#include <omp.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "orchard/ops.h"
#include "testdir.h"

orc_llm_config orc_test_qconfig(int64_t hidden, int64_t ffn, bool tied) {
    orc_llm_config c = orc_test_llm_config(hidden, 2, ffn, 160, 64);
    c.tie_word_embeddings = tied;
    return c;
}

orc_llm *orc_test_qmodel(int64_t ffn, bool tied, uint64_t seed, float gain) {
    orc_llm_config c = orc_test_qconfig(64, ffn, tied);
    return orc_test_llm(&c, seed, gain);
}

/* A no-grad context over a fresh arena; ids as a [1, n] tensor in it. */
static orc_arena *open_ctx(orc_ctx *ctx) {
    orc_arena *a = orc_arena_create(8 << 20);
    orc_ctx_init(ctx, a, 0);
    orc_set_no_grad(ctx, true);
    return a;
}

static orc_tensor *ids_tensor(orc_ctx *ctx, const int32_t *ids, int64_t n) {
    orc_tensor *t = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, n));
    if (!t) fail_msg("ids tensor: %s", ctx->err.msg);
    memcpy(t->data, ids, sizeof(int32_t) * (size_t)n);
    return t;
}

float *orc_test_logits(orc_llm *m, orc_qllm *q, const int32_t *ids, int64_t n, int64_t *numel) {
    orc_ctx ctx;
    orc_arena *a = open_ctx(&ctx);
    orc_tensor *t = ids_tensor(&ctx, ids, n);
    orc_tensor *y = q ? orc_qllm_forward(&ctx, q, t, NULL) : orc_llm_forward(&ctx, m, t, NULL);
    if (!y) fail_msg("forward: %s", ctx.err.msg);
    float *out = malloc(sizeof(float) * (size_t)y->numel);
    orc_read_f32(y, out);
    if (numel) *numel = y->numel;
    orc_ctx_reset(&ctx);
    orc_arena_destroy(a);
    return out;
}

float *orc_test_qlogits_1v3(orc_qllm *q, const int32_t *ids, int64_t n) {
    const int saved = omp_get_max_threads();
    int64_t numel = 0;
    omp_set_num_threads(1);
    float *a = orc_test_logits(NULL, q, ids, n, &numel);
    omp_set_num_threads(3);
    float *b = orc_test_logits(NULL, q, ids, n, NULL);
    omp_set_num_threads(saved);
    assert_memory_equal(a, b, sizeof(float) * (size_t)numel);
    free(b);
    return a;
}

void orc_test_expect_cache_matches(orc_qllm *q, const int32_t *ids, int64_t n, int64_t prefill, const float *full,
                                   double tol) {
    orc_ctx ctx;
    orc_arena *a = open_ctx(&ctx);
    orc_error err = {0};
    orc_llm_cache *c = orc_llm_cache_new(&q->cfg, 1, 64, &err);
    if (!c) fail_msg("cache: %s", err.msg);
    const int64_t V = q->cfg.vocab_size;
    for (int64_t i = 0; i < n;) {
        const int64_t len = i == 0 ? prefill : 1;
        orc_tensor *y = orc_qllm_forward(&ctx, q, ids_tensor(&ctx, ids + i, len), c);
        if (!y) fail_msg("cached forward at %lld: %s", (long long)i, ctx.err.msg);
        for (int64_t k = 0; k < len * V; k++) assert_float_equal(orc_f32(y)[k], full[i * V + k], tol);
        orc_ctx_reset(&ctx);
        i += len;
    }
    orc_llm_cache_free(c);
    orc_arena_destroy(a);
}

void orc_test_qfiles_init(orc_test_qfiles *f, const char *other) {
    orc_test_dir_clear(orc_test_scratch);
    orc_test_scratch_path(f->model, sizeof f->model, "model");
    orc_test_scratch_path(f->gguf, sizeof f->gguf, "q.gguf");
    orc_test_scratch_path(f->other, sizeof f->other, other);
}

void orc_test_gguf_rewrite(const char *in, const char *out, orc_test_gguf_edit edit, const char *drop_key) {
    orc_error err = {0};
    orc_gguf_writer *w = orc_gguf_writer_new(&err);
    orc_gguf_file *f = orc_gguf_open(in, &err);
    if (!w || !f) fail_msg("rewriting %s: %s", in, err.msg);
    for (size_t i = 0; i < orc_gguf_kv_count(f); i++) {
        const orc_gguf_kv *kv = orc_gguf_kv_at(f, i);
        const char *key = orc_gguf_kv_key(kv);
        if (drop_key && strcmp(key, drop_key) == 0) continue;
        if (orc_gguf_kv_type(kv) == ORC_GGUF_UINT32) {
            uint32_t v;
            orc_gguf_kv_get_u32(kv, &v, &err);
            orc_gguf_add_u32(w, key, v, &err);
        } else if (orc_gguf_kv_type(kv) == ORC_GGUF_FLOAT32) {
            float v;
            orc_gguf_kv_get_f32(kv, &v, &err);
            orc_gguf_add_f32(w, key, v, &err);
        } else if (orc_gguf_kv_type(kv) == ORC_GGUF_STRING) {
            const char *s;
            orc_gguf_kv_get_str(kv, &s, NULL, &err);
            orc_gguf_add_str(w, key, s, &err);
        }
    }
    for (size_t i = 0; i < orc_gguf_tensor_count(f); i++) {
        const orc_gguf_tensor_info *ti = orc_gguf_tensor_at(f, i);
        int64_t shape[4] = {ti->shape[0], ti->shape[1], ti->shape[2], ti->shape[3]};
        size_t nbytes = ti->nbytes;
        orc_ggml_type type = ti->type;
        if (edit && !edit(ti->name, &type, shape, &nbytes)) continue;
        assert_int_equal(orc_gguf_add_tensor(w, ti->name, type, ti->n_dims, shape, ti->data, nbytes, &err), ORC_OK);
    }
    assert_int_equal(orc_gguf_write(w, out, &err), ORC_OK);
    orc_gguf_writer_free(w);
    orc_gguf_close(f);
}
