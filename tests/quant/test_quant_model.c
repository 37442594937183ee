/* The quantized LM (orchard/quant.h): a small model quantized to Q8_0 gives
 * logits close to the float model's and mostly the same greedy tokens; Q4_0
 * within a looser bound; decoding through the KV cache matches a full
 * forward; any thread count gives the same bits; a model directory written
 * as a quantized GGUF (tensor types, file type, bit-exact blocks) loads
 * back to the very same logits as quantizing in memory; requantizing a Q8_0
 * file keeps its blocks; a wrong tensor shape is an error naming it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "orchard/llm_gguf.h"
#include "orchard/ops.h"
#include "qmodel_support.h"
#include "testdir.h"

/* A model with larger weights than the default init, so that its logits
 * are peaked enough for greedy tokens to mean something. */
static orc_llm *small_model(bool tied, uint64_t seed) { return orc_test_qmodel(96, tied, seed, 5.0f); }

static float *logits_of(orc_qllm *q, const int32_t *ids, int64_t n) { return orc_test_logits(NULL, q, ids, n, NULL); }

static const int32_t IDS[] = {1, 17, 42, 99, 3, 150, 77, 8, 23, 64, 5, 120, 31, 2, 88, 140};
#define N_IDS ((int64_t)(sizeof IDS / sizeof IDS[0]))

static void check_close(orc_ggml_type type, bool tied, double max_rel, double min_agree) {
    orc_llm *m = small_model(tied, 5);
    orc_error err = {0};
    orc_qllm *q = orc_qllm_from_llm(m, type, &err);
    assert_non_null(q);
    float *ref = orc_test_logits(m, NULL, IDS, N_IDS, NULL), *got = logits_of(q, IDS, N_IDS);
    const int64_t V = m->cfg.vocab_size;
    const double rel = orc_test_max_rel(ref, got, N_IDS * V), agree = orc_test_argmax_agreement(ref, got, N_IDS, V);
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
    orc_arena *arena = orc_arena_create(8 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, arena, 0);
    orc_set_no_grad(&ctx, true);
    orc_error err = {0};
    orc_llm_cache *c = orc_llm_cache_new(q ? &q->cfg : &m->cfg, 1, 64, &err);
    const int64_t V = q ? q->cfg.vocab_size : m->cfg.vocab_size;
    int32_t tok = first;
    for (int i = 0; i < n; i++) {
        orc_tensor *t = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, 1));
        orc_i32(t)[0] = tok;
        orc_tensor *y = q ? orc_qllm_forward(&ctx, q, t, c) : orc_llm_forward(&ctx, m, t, c);
        if (!y) fail_msg("decode: %s", ctx.err.msg);
        out[i] = tok = orc_test_argmax(orc_f32(y), V);
        orc_ctx_reset(&ctx);
    }
    orc_llm_cache_free(c);
    orc_arena_destroy(arena);
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
    float *full = logits_of(q, IDS, N_IDS);
    /* a prefill of 10, then one token at a time */
    orc_test_expect_cache_matches(q, IDS, N_IDS, 10, full, 1e-4);
    free(full);
    orc_qllm_free(q);
    orc_llm_free(m);
}

static void test_threads(void **state) {
    (void)state;
    orc_llm *m = small_model(true, 17);
    orc_error err = {0};
    orc_qllm *q = orc_qllm_from_llm(m, ORC_GGML_Q4_0, &err);
    free(orc_test_qlogits_1v3(q, IDS, N_IDS));
    orc_qllm_free(q);
    orc_llm_free(m);
}

static void check_file(orc_ggml_type type, bool tied) {
    orc_test_qfiles t;
    orc_test_qfiles_init(&t, "again.gguf");
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
    float *la = logits_of(a, IDS, N_IDS), *lb = logits_of(b, IDS, N_IDS);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)(N_IDS * m->cfg.vocab_size));
    free(la);
    free(lb);
    orc_qllm_free(b);
    /* requantizing keeps the blocks as they are */
    assert_int_equal(orc_quantize_gguf(t.gguf, t.other, type, &err), ORC_OK);
    orc_gguf_file *g = orc_gguf_open(t.other, &err);
    assert_non_null(g);
    const orc_gguf_tensor_info *t1 = orc_gguf_find_tensor(g, "blk.1.ffn_up.weight");
    assert_memory_equal(t1->data, orc_gguf_find_tensor(a->file, "blk.1.ffn_up.weight")->data, t1->nbytes);
    orc_gguf_close(g);
    orc_qllm_free(a);
    orc_llm_free(m);
}

static void test_file_round_trip(void **state) {
    (void)state;
    check_file(ORC_GGML_Q8_0, true);
    check_file(ORC_GGML_Q4_0, false);
}

static bool ffn_up_short(const char *name, orc_ggml_type *type, int64_t *shape, size_t *nbytes) {
    (void)type;
    if (strcmp(name, "blk.1.ffn_up.weight") == 0) {
        shape[1] -= 32;
        *nbytes = (size_t)(shape[0] * shape[1]) * sizeof(float);
    }
    return true;
}

/* A float GGUF runs too (its matrices quantized to Q8_0 on load), and a
 * matrix of the wrong shape is refused by name. */
static void test_float_gguf_and_bad_shape(void **state) {
    (void)state;
    orc_test_qfiles t;
    orc_test_qfiles_init(&t, "again.gguf");
    orc_llm *m = small_model(true, 25);
    orc_error err = {0};
    orc_gguf_export_opts o = {.type = ORC_GGML_F32};
    assert_int_equal(orc_llm_export_gguf(m, NULL, t.gguf, &o, &err), ORC_OK);
    orc_qllm *a = orc_qllm_load(t.gguf, &err);
    if (!a) fail_msg("%s", err.msg);
    orc_qllm *b = orc_qllm_from_llm(m, ORC_GGML_Q8_0, &err);
    float *la = logits_of(a, IDS, N_IDS), *lb = logits_of(b, IDS, N_IDS);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)(N_IDS * m->cfg.vocab_size));
    free(la);
    free(lb);
    orc_qllm_free(a);
    orc_qllm_free(b);
    /* a file whose ffn_up has a column block too few */
    orc_test_gguf_rewrite(t.gguf, t.other, ffn_up_short, NULL);
    assert_null(orc_qllm_load(t.other, &err));
    assert_int_equal(err.code, ORC_ESHAPE);
    assert_non_null(strstr(err.msg, "blk.1.ffn_up.weight"));
    orc_llm_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_close_to_float),   cmocka_unit_test(test_q4_close_to_float),
        cmocka_unit_test(test_greedy_mostly_equal), cmocka_unit_test(test_cache_matches_full),
        cmocka_unit_test(test_threads),             cmocka_unit_test(test_file_round_trip),
        cmocka_unit_test(test_float_gguf_and_bad_shape),
    };
    return cmocka_run_group_tests(tests, orc_test_scratch_setup, orc_test_scratch_teardown);
}
