/* The palettized and mixed quantized LM (orchard/quant.h): pal4's loss is
 * close to the float model's; decoding through the cache matches a full
 * forward and 1 vs 3 threads give the same bits; pal4 / pal2 / mixed files
 * load back to the same logits as quantizing in memory (q/k rows permuted in
 * the file); orc_qllm_to_llm gives exactly the kernels' weights; the loader
 * names the tensor of a corrupt file; mixed:BITS meets its budget and keeps
 * the sensitive tensors wide; eval-q's numbers match orc_eval's layout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "orchard/generate.h"
#include "orchard/llm_gguf.h"
#include "qmodel_support.h"
#include "testdir.h"

static orc_llm *small_model(bool tied, uint64_t seed, float gain) { return orc_test_qmodel(96, tied, seed, gain); }

static float *logits_of(orc_llm *m, orc_qllm *q, const int32_t *ids, int64_t n) {
    return orc_test_logits(m, q, ids, n, NULL);
}

static const int32_t IDS[] = {1, 17, 42, 99, 3, 150, 77, 8, 23, 64, 5, 120, 31, 2, 88, 140};
#define N_IDS ((int64_t)(sizeof IDS / sizeof IDS[0]))

/* A token stream the float model predicts well: its own greedy continuation. */
static void greedy_stream(orc_llm *m, int32_t *ids, int64_t n) {
    ids[0] = 7;
    for (int64_t i = 1; i < n; i++) {
        float *lg = logits_of(m, NULL, ids, i);
        ids[i] = orc_test_argmax(lg + (i - 1) * m->cfg.vocab_size, m->cfg.vocab_size);
        free(lg);
    }
}

/* Mean KL(float || quantized) of the next-token distributions over n positions. */
static double mean_kl(const float *a, const float *b, int64_t n, int64_t V) {
    double kl = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *x = a + i * V, *y = b + i * V;
        double mx = -INFINITY, my = -INFINITY, sx = 0.0, sy = 0.0;
        for (int64_t v = 0; v < V; v++) mx = fmax(mx, x[v]), my = fmax(my, y[v]);
        for (int64_t v = 0; v < V; v++) sx += exp(x[v] - mx), sy += exp(y[v] - my);
        for (int64_t v = 0; v < V; v++) {
            const double lp = x[v] - mx - log(sx), lq = y[v] - my - log(sy);
            kl += exp(lp) * (lp - lq);
        }
    }
    return kl / (double)n;
}

/* The bound: k-means with 16 levels leaves ~1% relative weight error on
 * Gaussian weights (measured in test_quant_pal; Lloyd-Max gives 0.95%),
 * q4_0 ~0.6-0.8%, so pal4's divergence from the float model is of q4_0's
 * order: at most 3x q4_0's mean KL. pal2 (~11%) must diverge more than
 * pal4. And on the float model's own greedy stream pal4's loss stays
 * within 15% of the float loss (measured: see the printed line). */
static void test_loss_close(void **state) {
    (void)state;
    orc_llm *m = small_model(true, 5, 4.0f);
    int32_t s[40];
    greedy_stream(m, s, 40);
    orc_error err = {0};
    orc_eval_result rf, r4, r2, rq;
    assert_int_equal(orc_eval_ids(m, s, 40, NULL, 0, 0, &rf, &err), ORC_OK);
    orc_qllm *p4 = orc_qllm_from_llm(m, ORC_Q_PAL4, &err), *p2 = orc_qllm_from_llm(m, ORC_Q_PAL2, &err);
    orc_qllm *q4 = orc_qllm_from_llm(m, ORC_GGML_Q4_0, &err);
    assert_non_null(p4);
    assert_non_null(p2);
    assert_non_null(q4);
    assert_int_equal(orc_qllm_eval_ids(p4, s, 40, NULL, 0, 0, &r4, &err), ORC_OK);
    assert_int_equal(orc_qllm_eval_ids(p2, s, 40, NULL, 0, 0, &r2, &err), ORC_OK);
    assert_int_equal(orc_qllm_eval_ids(q4, s, 40, NULL, 0, 0, &rq, &err), ORC_OK);
    assert_int_equal(r4.tokens, rf.tokens);
    const int64_t V = m->cfg.vocab_size;
    float *lf = logits_of(m, NULL, s, 40), *l4 = logits_of(NULL, p4, s, 40), *l2 = logits_of(NULL, p2, s, 40);
    float *lq = logits_of(NULL, q4, s, 40);
    const double k4 = mean_kl(lf, l4, 40, V), k2 = mean_kl(lf, l2, 40, V), kq = mean_kl(lf, lq, 40, V);
    printf("# loss on the float model's greedy stream: float %.4f, q4_0 %.4f, pal4 %.4f, pal2 %.4f\n", rf.loss, rq.loss,
           r4.loss, r2.loss);
    printf("# mean KL from float: q4_0 %.5f, pal4 %.5f, pal2 %.5f\n", kq, k4, k2);
    printf("# bits per weight: pal4 %.3f, pal2 %.3f, q4_0 %.3f\n",
           8.0 * (double)orc_qllm_weight_bytes(p4) / (double)orc_llm_config_num_params(&m->cfg),
           8.0 * (double)orc_qllm_weight_bytes(p2) / (double)orc_llm_config_num_params(&m->cfg),
           8.0 * (double)orc_qllm_weight_bytes(q4) / (double)orc_llm_config_num_params(&m->cfg));
    assert_true(k4 <= 3.0 * kq);
    assert_true(k2 > k4);
    assert_true(fabs(r4.loss - rf.loss) <= 0.15 * rf.loss);
    free(lf);
    free(l4);
    free(l2);
    free(lq);
    orc_qllm_free(p4);
    orc_qllm_free(p2);
    orc_qllm_free(q4);
    orc_llm_free(m);
}

static void test_cache_and_threads(void **state) {
    (void)state;
    orc_llm *m = small_model(false, 13, 3.0f);
    orc_error err = {0};
    orc_qllm *q = orc_qllm_from_llm(m, ORC_Q_PAL4, &err);
    assert_non_null(q);
    float *full = orc_test_qlogits_1v3(q, IDS, N_IDS);
    orc_test_expect_cache_matches(q, IDS, N_IDS, 1, full, 1e-4);
    free(full);
    orc_qllm_free(q);
    orc_llm_free(m);
}

/* A plan with every kind of matrix: pal4, pal2, q4_0, q8_0 in turn. */
static void mixed_plan(orc_quant_plan *p, int64_t L, int64_t group) {
    orc_error err = {0};
    assert_int_equal(orc_quant_plan_uniform(p, L, ORC_Q_PAL4, group, &err), ORC_OK);
    for (int64_t i = 0; i < L * ORC_QLLM_PROJ; i++) p->proj[i] = ORC_QMIX_TYPES[(i * 3 + 2) % ORC_QMIX_N];
    snprintf(p->scheme, sizeof p->scheme, "test");
}

static void check_file(orc_quant_plan *p, bool tied) {
    orc_test_qfiles t;
    orc_test_qfiles_init(&t, "bad.gguf");
    orc_llm *m = small_model(tied, 21, 3.0f);
    orc_error err = {0};
    assert_int_equal(orc_llm_save(m, t.model, &err), ORC_OK);
    if (orc_quantize_model_dir_plan(t.model, t.gguf, p, &err) != ORC_OK) fail_msg("%s", err.msg);
    orc_qllm *a = orc_qllm_load(t.gguf, &err);
    if (!a) fail_msg("%s", err.msg);
    orc_qllm *b = orc_qllm_from_llm_plan(m, p, &err);
    assert_non_null(b);
    assert_int_equal(a->layers[1].w_down.type, p->proj[ORC_QLLM_PROJ + 6]);
    assert_int_equal(a->layers[0].wq.type, p->proj[0]);
    assert_int_equal(orc_qllm_weight_bytes(a), orc_qllm_weight_bytes(b));
    const double bpw = 8.0 * (double)orc_qllm_weight_bytes(a) / (double)orc_llm_config_num_params(&m->cfg);
    assert_float_equal(bpw, orc_quant_plan_bpw(&m->cfg, p), 1e-9);
    float *la = logits_of(NULL, a, IDS, N_IDS), *lb = logits_of(NULL, b, IDS, N_IDS);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)(N_IDS * m->cfg.vocab_size));
    /* the float copy holds exactly the kernels' weights, q/k rows in orchard's order */
    orc_llm *fa = orc_qllm_to_llm(a, false, &err), *fb = orc_qllm_to_llm(b, false, &err);
    assert_non_null(fa);
    assert_non_null(fb);
    for (int i = 0; i < fa->n_params; i++)
        assert_memory_equal(fa->params[i]->data, fb->params[i]->data, sizeof(float) * (size_t)fa->params[i]->numel);
    float *wk = malloc(sizeof(float) * (size_t)fa->layers[0].wk->numel);
    orc_qmat_dequantize(&b->layers[0].wk, wk);
    assert_memory_equal(wk, fa->layers[0].wk->data, sizeof(float) * (size_t)fa->layers[0].wk->numel);
    free(wk);
    /* and its float forward is close to the quantized one (only the activations differ: Q8_0 there) */
    float *lf = logits_of(fa, NULL, IDS, N_IDS);
    assert_true(orc_test_max_rel(lf, la, N_IDS * m->cfg.vocab_size) <= 0.05);
    free(lf);
    orc_llm_free(fa);
    orc_llm_free(fb);
    free(la);
    free(lb);
    orc_qllm_free(a);
    orc_qllm_free(b);
    orc_llm_free(m);
}

static void test_file_round_trip(void **state) {
    (void)state;
    orc_quant_plan p;
    orc_error err = {0};
    assert_int_equal(orc_quant_plan_uniform(&p, 2, ORC_Q_PAL4, 16, &err), ORC_OK);
    check_file(&p, true);
    orc_quant_plan_release(&p);
    assert_int_equal(orc_quant_plan_uniform(&p, 2, ORC_Q_PAL2, 32, &err), ORC_OK);
    check_file(&p, false);
    orc_quant_plan_release(&p);
    mixed_plan(&p, 2, 16);
    check_file(&p, false);
    orc_quant_plan_release(&p);
}

static bool drop_scale(const char *name, orc_ggml_type *type, int64_t *shape, size_t *nbytes) {
    (void)type, (void)shape, (void)nbytes;
    return strcmp(name, "blk.1.ffn_up.weight.pal_scale") != 0;
}

static bool short_rows(const char *name, orc_ggml_type *type, int64_t *shape, size_t *nbytes) {
    (void)type;
    if (strcmp(name, "blk.0.attn_k.weight") == 0) {
        shape[1] -= 4; /* a few index bytes per row too few */
        *nbytes = (size_t)(shape[0] * shape[1]);
    }
    return true;
}

static bool few_tables(const char *name, orc_ggml_type *type, int64_t *shape, size_t *nbytes) {
    (void)type;
    if (strcmp(name, "blk.1.wq_unused") == 0) return true;
    if (strcmp(name, "blk.1.ffn_down.weight.pal_lut") == 0) {
        shape[0] = 5; /* 5 tables do not divide the 96 columns */
        *nbytes = (size_t)(shape[0] * shape[1]);
    }
    if (strcmp(name, "blk.1.ffn_down.weight.pal_scale") == 0) {
        shape[0] = 5;
        *nbytes = 5 * sizeof(float);
    }
    return true;
}

static void expect_error(const char *path, orc_status code, const char *needle) {
    orc_error err = {0};
    orc_qllm *q = orc_qllm_load(path, &err);
    if (q) fail_msg("%s loaded, expected an error naming %s", path, needle);
    assert_int_equal(err.code, code);
    if (!strstr(err.msg, needle)) fail_msg("error '%s' does not name %s", err.msg, needle);
}

static void test_corrupt_files(void **state) {
    (void)state;
    orc_test_qfiles t;
    orc_test_qfiles_init(&t, "bad.gguf");
    orc_llm *m = small_model(false, 31, 1.0f);
    orc_error err = {0};
    assert_int_equal(orc_llm_save(m, t.model, &err), ORC_OK);
    orc_quant_plan p;
    assert_int_equal(orc_quant_plan_uniform(&p, 2, ORC_Q_PAL4, 16, &err), ORC_OK);
    assert_int_equal(orc_quantize_model_dir_plan(t.model, t.gguf, &p, &err), ORC_OK);
    orc_quant_plan_release(&p);
    orc_test_gguf_rewrite(t.gguf, t.other, drop_scale, NULL);
    expect_error(t.other, ORC_EFORMAT, "blk.1.ffn_up.weight.pal_scale");
    orc_test_gguf_rewrite(t.gguf, t.other, short_rows, NULL);
    expect_error(t.other, ORC_ESHAPE, "blk.0.attn_k.weight");
    orc_test_gguf_rewrite(t.gguf, t.other, few_tables, NULL);
    expect_error(t.other, ORC_ESHAPE, "blk.1.ffn_down.weight.pal_lut");
    orc_test_gguf_rewrite(t.gguf, t.other, NULL, "orchard.quant.version");
    expect_error(t.other, ORC_EUNSUPPORTED, "orchard.quant.version");
    /* a truncated file is refused by the GGUF reader */
    FILE *f = fopen(t.gguf, "rb");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    f = fopen(t.other, "wb");
    fwrite(buf, 1, n / 2, f);
    fclose(f);
    orc_qllm *q = orc_qllm_load(t.other, &err);
    assert_null(q);
    orc_llm_free(m);
}

/* mixed:BITS on a random model: the measured plan meets the budget, the
 * model built from it has exactly that bpw, the floor is an error; with a
 * synthetic sensitivity the one sensitive tensor keeps 8 bits. */
static void test_mixed_budget(void **state) {
    (void)state;
    orc_llm *m = small_model(false, 41, 3.0f);
    orc_error err = {0};
    int32_t s[48];
    for (int i = 0; i < 48; i++) s[i] = (int32_t)((i * 37 + 5) % m->cfg.vocab_size);
    const int64_t N = m->cfg.num_hidden_layers * ORC_QLLM_PROJ;
    double *delta = malloc(sizeof(double) * (size_t)(N * ORC_QMIX_N)), base = 0.0, got = 0.0;
    float *before = malloc(sizeof(float) * (size_t)m->layers[1].w_up->numel);
    memcpy(before, m->layers[1].w_up->data, sizeof(float) * (size_t)m->layers[1].w_up->numel);
    assert_int_equal(orc_quant_sensitivity(m, s, 48, 0, 16, &base, delta, &err), ORC_OK);
    assert_memory_equal(before, m->layers[1].w_up->data, sizeof(float) * (size_t)m->layers[1].w_up->numel);
    orc_quant_plan p;
    /* the floor: all pal2; the ceiling: all q8_0 */
    assert_int_equal(orc_quant_plan_uniform(&p, 2, ORC_Q_PAL2, 16, &err), ORC_OK);
    const double lo = orc_quant_plan_bpw(&m->cfg, &p);
    orc_quant_plan_release(&p);
    assert_int_equal(orc_quant_plan_uniform(&p, 2, ORC_GGML_Q8_0, 16, &err), ORC_OK);
    const double hi = orc_quant_plan_bpw(&m->cfg, &p);
    orc_quant_plan_release(&p);
    const double budget = 0.5 * (lo + hi);
    assert_int_equal(orc_quant_plan_mixed(&m->cfg, budget, 16, delta, &p, &got, &err), ORC_OK);
    printf("# mixed: floor %.3f, ceiling %.3f, budget %.3f, achieved %.3f\n", lo, hi, budget, got);
    assert_true(got <= budget);
    assert_true(got > lo);
    orc_qllm *q = orc_qllm_from_llm_plan(m, &p, &err);
    assert_non_null(q);
    assert_float_equal(8.0 * (double)orc_qllm_weight_bytes(q) / (double)orc_llm_config_num_params(&m->cfg), got, 1e-9);
    orc_qllm_free(q);
    orc_quant_plan_release(&p);
    assert_int_equal(orc_quant_plan_mixed(&m->cfg, lo - 0.01, 16, delta, &p, &got, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "below"));
    orc_error_clear(&err);
    /* synthetic: tensor 3 loses a lot at anything below 8 bits, the rest nothing */
    for (int64_t t = 0; t < N; t++)
        for (int c = 0; c < ORC_QMIX_N; c++) delta[t * ORC_QMIX_N + c] = t == 3 && c > 0 ? 1.0 : 0.001 * c;
    assert_int_equal(orc_quant_plan_mixed(&m->cfg, budget, 16, delta, &p, &got, &err), ORC_OK);
    assert_int_equal(p.proj[3], ORC_GGML_Q8_0);
    assert_true(got <= budget);
    orc_quant_plan_release(&p);
    free(delta);
    free(before);
    orc_llm_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_close),    cmocka_unit_test(test_cache_and_threads),
        cmocka_unit_test(test_file_round_trip), cmocka_unit_test(test_corrupt_files),
        cmocka_unit_test(test_mixed_budget),
    };
    return cmocka_run_group_tests(tests, orc_test_scratch_setup, orc_test_scratch_teardown);
}
