/* The palettized and mixed quantized LM (orchard/quant.h): pal4's loss is
 * close to the float model's; decoding through the cache matches a full
 * forward and 1 vs 3 threads give the same bits; pal4 / pal2 / mixed files
 * load back to the same logits as quantizing in memory (q/k rows permuted in
 * the file); orc_qllm_to_llm gives exactly the kernels' weights; the loader
 * names the tensor of a corrupt file; mixed:BITS meets its budget and keeps
 * the sensitive tensors wide; eval-q's numbers match orc_eval's layout. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gradcheck.h"
#include "orchard/generate.h"
#include "orchard/llm_gguf.h"
#include "orchard/ops.h"
#include "orchard/quant.h"
#include "orchard/rng.h"

static orc_llm *small_model(bool tied, uint64_t seed, float gain) {
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
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, false, &err);
    assert_non_null(m);
    orc_llm_init_weights(m, seed);
    for (int i = 0; i < m->n_params; i++) {
        orc_tensor *t = m->params[i];
        if (t->ndim == 2)
            for (int64_t k = 0; k < t->numel; k++) orc_f32(t)[k] *= gain;
    }
    return m;
}

static const int32_t IDS[] = {1, 17, 42, 99, 3, 150, 77, 8, 23, 64, 5, 120, 31, 2, 88, 140};
#define N_IDS ((int64_t)(sizeof IDS / sizeof IDS[0]))

static float *logits_of(orc_llm *m, orc_qllm *q, const int32_t *ids, int64_t n) {
    orc_arena *a = orc_arena_create(8 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 0);
    orc_set_no_grad(&ctx, true);
    orc_tensor *t = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, n));
    memcpy(t->data, ids, sizeof(int32_t) * (size_t)n);
    orc_tensor *y = q ? orc_qllm_forward(&ctx, q, t, NULL) : orc_llm_forward(&ctx, m, t, NULL);
    if (!y) fail_msg("forward: %s", ctx.err.msg);
    float *out = malloc(sizeof(float) * (size_t)y->numel);
    orc_read_f32(y, out);
    orc_ctx_reset(&ctx);
    orc_arena_destroy(a);
    return out;
}

/* A token stream the float model predicts well: its own greedy continuation. */
static void greedy_stream(orc_llm *m, int32_t *ids, int64_t n) {
    ids[0] = 7;
    for (int64_t i = 1; i < n; i++) {
        float *lg = logits_of(m, NULL, ids, i);
        const float *last = lg + (i - 1) * m->cfg.vocab_size;
        int32_t best = 0;
        for (int64_t v = 1; v < m->cfg.vocab_size; v++)
            if (last[v] > last[best]) best = (int32_t)v;
        ids[i] = best;
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
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    float *full = logits_of(NULL, q, IDS, N_IDS);
    omp_set_num_threads(3);
    float *full3 = logits_of(NULL, q, IDS, N_IDS);
    omp_set_num_threads(saved);
    assert_memory_equal(full, full3, sizeof(float) * (size_t)(N_IDS * q->cfg.vocab_size));
    orc_arena *a = orc_arena_create(8 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 0);
    orc_set_no_grad(&ctx, true);
    orc_llm_cache *c = orc_llm_cache_new(&q->cfg, 1, 64, &err);
    const int64_t V = q->cfg.vocab_size;
    for (int64_t i = 0; i < N_IDS; i++) {
        orc_tensor *t = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, 1));
        orc_i32(t)[0] = IDS[i];
        orc_tensor *y = orc_qllm_forward(&ctx, q, t, c);
        assert_non_null(y);
        for (int64_t v = 0; v < V; v++) assert_float_equal(orc_f32(y)[v], full[i * V + v], 1e-4);
        orc_ctx_reset(&ctx);
    }
    orc_llm_cache_free(c);
    orc_arena_destroy(a);
    free(full);
    free(full3);
    orc_qllm_free(q);
    orc_llm_free(m);
}

typedef struct tmp {
    char dir[64], model[96], gguf[96], bad[96];
} tmp;

static void tmp_init(tmp *t) {
    snprintf(t->dir, sizeof t->dir, "/tmp/orc_palm_%d", (int)getpid());
    snprintf(t->model, sizeof t->model, "%s/model", t->dir);
    snprintf(t->gguf, sizeof t->gguf, "%s/q.gguf", t->dir);
    snprintf(t->bad, sizeof t->bad, "%s/bad.gguf", t->dir);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", t->dir);
    assert_int_equal(system(cmd), 0);
}

static void tmp_free(tmp *t) {
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", t->dir);
    assert_int_equal(system(cmd), 0);
}

/* A plan with every kind of matrix: pal4, pal2, q4_0, q8_0 in turn. */
static void mixed_plan(orc_quant_plan *p, int64_t L, int64_t group) {
    orc_error err = {0};
    assert_int_equal(orc_quant_plan_uniform(p, L, ORC_Q_PAL4, group, &err), ORC_OK);
    for (int64_t i = 0; i < L * ORC_QLLM_PROJ; i++) p->proj[i] = ORC_QMIX_TYPES[(i * 3 + 2) % ORC_QMIX_N];
    snprintf(p->scheme, sizeof p->scheme, "test");
}

static void check_file(orc_quant_plan *p, bool tied) {
    tmp t;
    tmp_init(&t);
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
    double maxd = 0.0, maxa = 0.0;
    for (int64_t k = 0; k < N_IDS * m->cfg.vocab_size; k++) {
        maxd = fmax(maxd, fabs((double)lf[k] - la[k]));
        maxa = fmax(maxa, fabs((double)lf[k]));
    }
    assert_true(maxd <= 0.05 * maxa);
    free(lf);
    orc_llm_free(fa);
    orc_llm_free(fb);
    free(la);
    free(lb);
    orc_qllm_free(a);
    orc_qllm_free(b);
    orc_llm_free(m);
    tmp_free(&t);
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

/* Copy a GGUF, letting edit change one tensor (or drop it: return false). */
typedef bool (*edit_fn)(const char *name, orc_ggml_type *type, int64_t *shape, size_t *nbytes);

static void rewrite(const char *in, const char *out, edit_fn edit, bool keep_version) {
    orc_error err = {0};
    orc_gguf_writer *w = orc_gguf_writer_new(&err);
    orc_gguf_file *f = orc_gguf_open(in, &err);
    assert_non_null(f);
    for (size_t i = 0; i < orc_gguf_kv_count(f); i++) {
        const orc_gguf_kv *kv = orc_gguf_kv_at(f, i);
        const char *key = orc_gguf_kv_key(kv);
        if (!keep_version && strcmp(key, "orchard.quant.version") == 0) continue;
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
    tmp t;
    tmp_init(&t);
    orc_llm *m = small_model(false, 31, 1.0f);
    orc_error err = {0};
    assert_int_equal(orc_llm_save(m, t.model, &err), ORC_OK);
    orc_quant_plan p;
    assert_int_equal(orc_quant_plan_uniform(&p, 2, ORC_Q_PAL4, 16, &err), ORC_OK);
    assert_int_equal(orc_quantize_model_dir_plan(t.model, t.gguf, &p, &err), ORC_OK);
    orc_quant_plan_release(&p);
    rewrite(t.gguf, t.bad, drop_scale, true);
    expect_error(t.bad, ORC_EFORMAT, "blk.1.ffn_up.weight.pal_scale");
    rewrite(t.gguf, t.bad, short_rows, true);
    expect_error(t.bad, ORC_ESHAPE, "blk.0.attn_k.weight");
    rewrite(t.gguf, t.bad, few_tables, true);
    expect_error(t.bad, ORC_ESHAPE, "blk.1.ffn_down.weight.pal_lut");
    rewrite(t.gguf, t.bad, NULL, false);
    expect_error(t.bad, ORC_EUNSUPPORTED, "orchard.quant.version");
    /* a truncated file is refused by the GGUF reader */
    FILE *f = fopen(t.gguf, "rb");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    f = fopen(t.bad, "wb");
    fwrite(buf, 1, n / 2, f);
    fclose(f);
    orc_qllm *q = orc_qllm_load(t.bad, &err);
    assert_null(q);
    orc_llm_free(m);
    tmp_free(&t);
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
    return cmocka_run_group_tests(tests, NULL, NULL);
}
