/* LoRA adapters over the quantized LM (orc_qllm_set_adapters): the change an
 * adapter makes to a Q8_0 model's logits matches the change it makes to the
 * float model with exactly the quantized weights (orc_qllm_to_llm), up to
 * the Q8_0 rounding of the base projections' activations; the adapted
 * forward gives the same bits for 1 and 3 threads; an empty stack is the
 * base bit for bit; an adapter of another shape is an error naming the
 * tensor and leaves the model's stack unchanged. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "orchard/lora.h"
#include "orchard/rng.h"
#include "qmodel_support.h"

static orc_llm_config small_config(int64_t hidden) { return orc_test_qconfig(hidden, 96, false); }

static float *logits_of(orc_llm *m, orc_qllm *q, const int32_t *ids, int64_t n, int64_t *numel) {
    return orc_test_logits(m, q, ids, n, numel);
}

typedef struct fixture {
    orc_llm *m, *f;  /* the float model; the float model with the quantized weights */
    orc_qllm *q;
    orc_lora *ad;
    orc_lora_stack stack;
    int32_t ids[24];
} fixture;

static void setup(fixture *x) {
    orc_error err = {0};
    orc_llm_config c = small_config(64);
    x->m = orc_test_llm(&c, 7, 1.0f);
    x->q = orc_qllm_from_llm(x->m, ORC_GGML_Q8_0, &err);
    assert_non_null(x->q);
    x->f = orc_qllm_to_llm(x->q, false, &err);
    assert_non_null(x->f);
    orc_lora_config lc;
    orc_lora_config_default(&lc);
    lc.rank = 4;
    x->ad = orc_lora_create(&c, &lc, false, &err);
    assert_non_null(x->ad);
    orc_lora_init_weights(x->ad, 3);
    /* B starts at zero (PEFT); give it values so the adapter acts. */
    for (int i = 0; i < x->ad->n_params; i++) {
        orc_tensor *t = x->ad->params[i];
        bool is_b = false;
        for (int64_t k = 0; k < c.num_hidden_layers * ORC_LORA_N_TARGETS; k++) is_b |= x->ad->b[k] == t;
        if (is_b)
            for (int64_t e = 0; e < t->numel; e++)
                orc_f32(t)[e] = 0.2f * (orc_rand_uniform(11, (uint64_t)i, (uint64_t)e) - 0.5f);
    }
    x->stack.n = 1;
    x->stack.ad[0] = x->ad;
    x->stack.weight[0] = 1.0f;
    for (int i = 0; i < 24; i++) x->ids[i] = (int32_t)((i * 37 + 5) % 160);
}

static void teardown(fixture *x) {
    orc_lora_free(x->ad);
    orc_llm_free(x->f);
    orc_llm_free(x->m);
    orc_qllm_free(x->q);
}

static void test_adapter_delta_matches_float(void **state) {
    (void)state;
    fixture x;
    setup(&x);
    orc_error err = {0};
    int64_t n = 0;
    float *f0 = logits_of(x.f, NULL, x.ids, 24, &n);
    float *q0 = logits_of(NULL, x.q, x.ids, 24, &n);
    assert_int_equal(orc_llm_set_adapters(x.f, &x.stack, &err), ORC_OK);
    assert_int_equal(orc_qllm_set_adapters(x.q, &x.stack, &err), ORC_OK);
    float *f1 = logits_of(x.f, NULL, x.ids, 24, &n);
    float *q1 = logits_of(NULL, x.q, x.ids, 24, &n);
    double max_df = 0, max_gap = 0, max_base = 0;
    for (int64_t i = 0; i < n; i++) {
        const double df = (double)f1[i] - f0[i], dq = (double)q1[i] - q0[i];
        max_df = fmax(max_df, fabs(df));
        max_gap = fmax(max_gap, fabs(dq - df));
        max_base = fmax(max_base, fabs((double)q0[i] - f0[i]));
    }
    /* The adapter must act, clearly above the quantization noise. */
    assert_true(max_df > 0.05);
    assert_true(max_df > 10 * max_base);
    /* Both forwards use the same weights; they differ only in the Q8_0
     * rounding of the base projections' inputs (relative error <= 1/254 per
     * element, max_base shows its size on the logits). The adapter's delta
     * travels through the same perturbed activations, so its change is of
     * that order relative to itself: well under 5% of it, plus max_base. */
    if (max_gap > 0.05 * max_df + max_base)
        fail_msg("adapter delta differs: max |dq - df| = %g, max |df| = %g, base gap %g", max_gap, max_df, max_base);
    free(f0);
    free(q0);
    free(f1);
    free(q1);
    teardown(&x);
}

static void test_threads_and_empty_stack(void **state) {
    (void)state;
    fixture x;
    setup(&x);
    orc_error err = {0};
    int64_t n = 0;
    float *base = logits_of(NULL, x.q, x.ids, 24, &n);
    assert_int_equal(orc_qllm_set_adapters(x.q, &x.stack, &err), ORC_OK);
    float *a1 = orc_test_qlogits_1v3(x.q, x.ids, 24);
    assert_true(memcmp(a1, base, sizeof(float) * (size_t)n) != 0);
    orc_lora_stack empty = {0};
    assert_int_equal(orc_qllm_set_adapters(x.q, &empty, &err), ORC_OK);
    assert_null(x.q->lora);
    float *b2 = logits_of(NULL, x.q, x.ids, 24, &n);
    assert_memory_equal(b2, base, sizeof(float) * (size_t)n);
    free(base);
    free(a1);
    free(b2);
    teardown(&x);
}

static void test_wrong_shape(void **state) {
    (void)state;
    fixture x;
    setup(&x);
    orc_error err = {0};
    orc_llm_config other = small_config(32);
    orc_lora_config lc;
    orc_lora_config_default(&lc);
    lc.rank = 4;
    orc_lora *bad = orc_lora_create(&other, &lc, false, &err);
    assert_non_null(bad);
    orc_lora_stack s = {.n = 1, .ad = {bad}, .weight = {1.0f}};
    assert_int_equal(orc_qllm_set_adapters(x.q, &x.stack, &err), ORC_OK);
    assert_int_equal(orc_qllm_set_adapters(x.q, &s, &err), ORC_ESHAPE);
    assert_non_null(strstr(err.msg, "layers.0.self_attn.q_proj"));
    assert_ptr_equal(x.q->lora, &x.stack); /* unchanged */
    orc_lora_free(bad);
    teardown(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adapter_delta_matches_float),
        cmocka_unit_test(test_threads_and_empty_stack),
        cmocka_unit_test(test_wrong_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
