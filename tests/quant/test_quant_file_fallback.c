/* The F16 fallback (orc_quant_fit_type): a model whose FFN width is not a
 * multiple of 32 (like make run's 688) quantizes to q8_0, q4_0, pal4 and
 * pal2; ffn_down, whose rows are that width, is written and loaded as F16
 * while every other matrix takes the scheme; the fallback note names it;
 * bits per weight count its 16 bits (the plan's figure equals the loaded
 * model's bytes); the loaded file gives the same logits as quantizing in
 * memory, close to the float model, the same bits for 1 and 3 threads,
 * and dequantizes to the F16-rounded float weights (what recovery adapters
 * train over). A group that does not divide a whole-block row stays an
 * error rather than a silent fallback. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "orchard/llm_gguf.h"
#include "qmodel_support.h"
#include "testdir.h"

#define FFN 80 /* a multiple of 16, not of 32 */

static const int32_t IDS[] = {1, 17, 42, 99, 3, 150, 77, 8, 23, 64, 5, 120};
#define N_IDS ((int64_t)(sizeof IDS / sizeof IDS[0]))

static float *logits_of(orc_llm *m, orc_qllm *q) { return orc_test_logits(m, q, IDS, N_IDS, NULL); }

static void check_scheme(orc_llm *m, orc_ggml_type type, double bound) {
    orc_error err = {0};
    char model[128], gguf[128], name[32];
    orc_test_scratch_path(model, sizeof model, "model");
    snprintf(name, sizeof name, "%s.gguf", orc_q_type_name(type));
    orc_test_scratch_path(gguf, sizeof gguf, name);
    orc_quant_plan p;
    assert_int_equal(orc_quant_plan_uniform(&p, m->cfg.num_hidden_layers, type, 0, &err), ORC_OK);
    /* the note names each ffn_down and nothing else */
    char *notes = NULL;
    size_t nn = 0;
    FILE *f = open_memstream(&notes, &nn);
    assert_non_null(f);
    assert_int_equal(orc_quant_plan_fallbacks(&m->cfg, &p, f), 2);
    fclose(f);
    assert_non_null(strstr(notes, "blk.0.ffn_down.weight [64, 80]"));
    assert_non_null(strstr(notes, "blk.1.ffn_down.weight [64, 80]"));
    assert_non_null(strstr(notes, "F16"));
    assert_null(strstr(notes, "ffn_up"));
    free(notes);
    if (orc_quantize_model_dir_plan(model, gguf, &p, &err) != ORC_OK) fail_msg("%s: %s", gguf, err.msg);
    /* in the file: ffn_down F16, the rest in the scheme's storage */
    orc_gguf_file *g = orc_gguf_open(gguf, &err);
    assert_non_null(g);
    const orc_gguf_tensor_info *down = orc_gguf_find_tensor(g, "blk.1.ffn_down.weight");
    assert_non_null(down);
    assert_int_equal(down->type, ORC_GGML_F16);
    assert_int_equal(down->shape[0], 64);
    assert_int_equal(down->shape[1], FFN);
    const orc_ggml_type stored = orc_q_type_is_pal(type) ? ORC_GGML_I8 : type;
    assert_int_equal(orc_gguf_find_tensor(g, "blk.1.ffn_up.weight")->type, stored);
    assert_int_equal(orc_gguf_find_tensor(g, "blk.0.attn_output.weight")->type, stored);
    assert_null(orc_gguf_find_tensor(g, "blk.1.ffn_down.weight.pal_lut"));
    if (!orc_q_type_is_pal(type)) { /* llama.cpp's file type is kept */
        uint32_t ft = 0;
        assert_int_equal(orc_gguf_get_u32(g, "general.file_type", &ft, &err), ORC_OK);
        assert_int_equal(ft, type == ORC_GGML_Q4_0 ? 2u : 7u);
    }
    orc_gguf_close(g);
    /* loads back; bits per weight count 16 per ffn_down weight */
    orc_qllm *a = orc_qllm_load(gguf, &err);
    if (!a) fail_msg("%s: %s", gguf, err.msg);
    assert_int_equal(a->layers[0].w_down.type, ORC_GGML_F16);
    assert_int_equal(a->layers[0].w_up.type, type);
    assert_int_equal(a->type, type);
    const double params = (double)orc_llm_config_num_params(&a->cfg);
    const double bpw = 8.0 * (double)orc_qllm_weight_bytes(a) / params;
    assert_true(fabs(bpw - orc_quant_plan_bpw(&m->cfg, &p)) < 1e-12);
    /* ...and more than without the fallback's 16 bits (the F16 bytes are there) */
    const size_t down_bytes = orc_qmat_bytes(&a->layers[0].w_down);
    assert_int_equal(down_bytes, (size_t)64 * FFN * 2);
    /* the same model as quantizing in memory; close to the float one */
    orc_qllm *b = orc_qllm_from_llm_plan(m, &p, &err);
    if (!b) fail_msg("%s", err.msg);
    assert_int_equal(b->layers[1].w_down.type, ORC_GGML_F16);
    float *ref = logits_of(m, NULL), *la = logits_of(NULL, a), *lb = logits_of(NULL, b);
    const int64_t n = N_IDS * m->cfg.vocab_size;
    assert_memory_equal(la, lb, sizeof(float) * (size_t)n);
    const double rel = orc_test_max_rel(ref, la, n);
    printf("# %s with F16 ffn_down: %.3f bits per weight, max logit error %.4f of the largest\n",
           orc_q_type_name(type), bpw, rel);
    assert_true(rel < bound);
    /* the same bits for 1 and 3 threads */
    free(orc_test_qlogits_1v3(a, IDS, N_IDS));
    /* the dequantized float model (recovery training's base) has F16-rounded ffn_down */
    orc_llm *back = orc_qllm_to_llm(a, false, &err);
    assert_non_null(back);
    const orc_tensor *w = m->layers[1].w_down, *wb = back->layers[1].w_down;
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)w->numel);
    float *r = malloc(sizeof(float) * (size_t)w->numel);
    assert_int_equal(orc_ggml_quantize(ORC_GGML_F16, orc_f32(w), h, w->numel, &err), ORC_OK);
    assert_int_equal(orc_ggml_dequantize(ORC_GGML_F16, h, r, w->numel, &err), ORC_OK);
    assert_memory_equal(r, orc_f32(wb), sizeof(float) * (size_t)w->numel);
    free(h);
    free(r);
    orc_llm_free(back);
    free(ref);
    free(la);
    free(lb);
    orc_qllm_free(a);
    orc_qllm_free(b);
    orc_quant_plan_release(&p);
}

static void test_odd_ffn_every_scheme(void **state) {
    (void)state;
    char model[96];
    orc_test_scratch_path(model, sizeof model, "model");
    orc_llm *m = orc_test_qmodel(FFN, true, 3, 5.0f);
    orc_error err = {0};
    assert_int_equal(orc_llm_save(m, model, &err), ORC_OK);
    check_scheme(m, ORC_GGML_Q8_0, 0.05);
    check_scheme(m, ORC_GGML_Q4_0, 0.25);
    check_scheme(m, ORC_Q_PAL4, 0.25);
    check_scheme(m, ORC_Q_PAL2, 1.0); /* 2 bits: only that it runs and stays finite-bounded */
    orc_llm_free(m);
}

/* The fit rule and the plan's arithmetic, without files. */
static void test_fit_type_and_bpw(void **state) {
    (void)state;
    assert_int_equal(orc_quant_fit_type(ORC_GGML_Q8_0, 688), ORC_GGML_F16);
    assert_int_equal(orc_quant_fit_type(ORC_GGML_Q4_0, 704), ORC_GGML_Q4_0);
    assert_int_equal(orc_quant_fit_type(ORC_Q_PAL2, 80), ORC_GGML_F16);
    assert_int_equal(orc_quant_fit_type(ORC_Q_PAL4, 96), ORC_Q_PAL4);
    assert_int_equal(orc_quant_matrix_bytes(ORC_GGML_F16, 3, 10, 0), 60u);
    /* make run's shape (configs/run.json): 4 ffn_down of [256, 688] in F16 */
    orc_llm_config c = orc_test_llm_config(256, 4, 688, 4096, 0);
    c.num_key_value_heads = 4;
    c.tie_word_embeddings = true;
    orc_quant_plan p;
    orc_error err = {0};
    assert_int_equal(orc_quant_plan_uniform(&p, 4, ORC_GGML_Q4_0, 0, &err), ORC_OK);
    const double params = (double)orc_llm_config_num_params(&c);
    const double D = 256, F = 688, V = 4096;
    /* q, k, v, o: 4 D^2 in Q4_0; gate, up: 2 F D in Q4_0; down F16; the tied embedding Q8_0; norms F32 */
    const double bytes = 4 * (4 * D * D + 2 * F * D) * 18.0 / 32 + 4 * D * F * 2 + V * D * 34.0 / 32 +
                         4.0 * (4 * 2 * D + D);
    assert_true(fabs(orc_quant_plan_bpw(&c, &p) - 8 * bytes / params) < 1e-9);
    assert_int_equal(orc_quant_plan_fallbacks(&c, &p, NULL), 4);
    orc_quant_plan_release(&p);
}

/* A palettization group that does not divide a whole-block row is the
 * caller's error, named, not a fallback. */
static void test_bad_group_is_an_error(void **state) {
    (void)state;
    float w[2 * 64];
    for (int i = 0; i < 2 * 64; i++) w[i] = (float)(i % 7) - 3.0f;
    orc_qmat q;
    orc_error err = {0};
    assert_int_not_equal(orc_qmat_quantize_fit(&q, ORC_Q_PAL4, w, 2, 64, 48, &err), ORC_OK);
    assert_true(strlen(err.msg) > 0);
    /* the default group works, and an odd row length falls back */
    err = (orc_error){0};
    assert_int_equal(orc_qmat_quantize_fit(&q, ORC_Q_PAL4, w, 2, 64, 0, &err), ORC_OK);
    assert_int_equal(q.type, ORC_Q_PAL4);
    orc_qmat_release(&q);
    assert_int_equal(orc_qmat_quantize_fit(&q, ORC_GGML_Q8_0, w, 4, 32 - 16, 0, &err), ORC_OK);
    assert_int_equal(q.type, ORC_GGML_F16);
    assert_int_equal(orc_qmat_bytes(&q), (size_t)4 * 16 * 2);
    float back[64];
    orc_qmat_dequantize(&q, back);
    for (int i = 0; i < 64; i++) assert_float_equal(back[i], w[i], 0.0f); /* small integers are exact in F16 */
    orc_qmat_release(&q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fit_type_and_bpw),
        cmocka_unit_test(test_bad_group_is_an_error),
        cmocka_unit_test(test_odd_ffn_every_scheme),
    };
    return cmocka_run_group_tests(tests, orc_test_scratch_setup, orc_test_scratch_teardown);
}
