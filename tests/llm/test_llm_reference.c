/* The LM against PyTorch: fixtures written by scripts/gen_llm_fixtures.py
 * (the same Llama-style model in plain torch, float64 reference) for two tiny
 * variants, tied without QK-norm and untied with QK-norm. Checks logits, loss
 * and every parameter gradient (max error relative to max |ref| <= 1e-4), the
 * losses of 10 AdamW steps (within 1e-4), and that decoding with the KV cache
 * gives the logits and greedy tokens of full-sequence forwards. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gradcheck.h"
#include "orchard/llm.h"
#include "orchard/optim.h"
#include "orchard/safetensors.h"

#define TOL 1e-4
#define ADAM_STEPS 10
#define GEN_PROMPT 4
#define GEN_NEW 8

static const char *const VARIANTS[] = {"tied", "untied_qknorm"};

/* Worst errors over all checks, reported at the end. */
static double worst_logits, worst_loss, worst_grad, worst_adam, worst_cache;

/* ---- fixtures --------------------------------------------------------------- */

static void fixture_dir(char *out, size_t cap, const char *variant) {
    const char *src = getenv("ORCHARD_SOURCE_DIR");
    if (src && *src) {
        snprintf(out, cap, "%s/tests/llm/fixtures/%s", src, variant);
        return;
    }
    /* Fallback: next to this source file. */
    const char *file = __FILE__, *slash = strrchr(file, '/');
    int len = slash ? (int)(slash - file) : 1;
    snprintf(out, cap, "%.*s/fixtures/%s", len, slash ? file : ".", variant);
}

static orc_llm *load_model(const char *variant) {
    char dir[1024];
    fixture_dir(dir, sizeof dir, variant);
    orc_error err = {0};
    orc_llm *m = orc_llm_load(dir, true, &err);
    if (!m) fail_msg("%s: %s", variant, err.msg);
    return m;
}

static orc_st_file *open_reference(const char *variant) {
    char dir[1024], path[1100];
    fixture_dir(dir, sizeof dir, variant);
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    orc_error err = {0};
    orc_st_file *f = orc_st_open(path, &err);
    if (!f) fail_msg("%s", err.msg);
    return f;
}

/* A reference tensor as float32 in the ctx arena; its element count must be n. */
static float *ref_f32(orc_ctx *ctx, const orc_st_file *f, const char *name, int64_t n) {
    const orc_st_tensor_info *info = orc_st_find(f, name);
    if (!info) fail_msg("reference.safetensors has no tensor %s", name);
    if (info->numel != n) fail_msg("reference %s: %lld values, expected %lld", name, (long long)info->numel, (long long)n);
    float *out = orc_arena_alloc(ctx->arena, sizeof(float) * (size_t)n);
    assert_non_null(out);
    orc_error err = {0};
    if (orc_st_read_f32(f, name, out, n, &err) != ORC_OK) fail_msg("%s", err.msg);
    return out;
}

/* ids or targets [B, T] as an int32 tensor in the ctx arena. */
static orc_tensor *ref_i32(orc_ctx *ctx, const orc_st_file *f, const char *name) {
    orc_error err = {0};
    const orc_st_tensor_info *info = orc_st_find(f, name);
    if (!info || info->ndim != 2) fail_msg("reference %s: missing or not 2-D", name);
    orc_tensor *t = orc_st_load(f, ctx->arena, name, ORC_I32, 2, info->shape, &err);
    if (!t) fail_msg("%s", err.msg);
    return t;
}

/* max |got - ref| / max |ref| (absolute when ref is all zero). */
static double rel_err(const float *got, const float *ref, int64_t n) {
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= diff)) diff = d; /* also catches NaN */
        if (fabs((double)ref[i]) > scale) scale = fabs((double)ref[i]);
    }
    return scale > 0 ? diff / scale : diff;
}

static double max_of(double a, double b) { return a > b ? a : b; }

static void init_ctx(orc_ctx *ctx) {
    orc_arena *a = orc_arena_create((size_t)1 << 20);
    assert_non_null(a);
    orc_ctx_init(ctx, a, 1);
}

static void free_ctx(orc_ctx *ctx) { orc_arena_destroy(ctx->arena); }

/* ---- forward and gradients ------------------------------------------------- */

static void check_forward_and_grads(const char *variant) {
    orc_llm *m = load_model(variant);
    orc_st_file *ref = open_reference(variant);
    orc_ctx ctx;
    init_ctx(&ctx);
    orc_tensor *ids = ref_i32(&ctx, ref, "ids");
    orc_tensor *targets = ref_i32(&ctx, ref, "targets");

    /* Logits alone, without a tape. */
    bool prev = orc_set_no_grad(&ctx, true);
    orc_tensor *logits = orc_llm_forward(&ctx, m, ids, NULL);
    GC_ASSERT_OK(&ctx);
    orc_set_no_grad(&ctx, prev);
    assert_int_equal(logits->ndim, 3);
    assert_int_equal(logits->shape[2], m->cfg.vocab_size);
    double e = rel_err(orc_f32(logits), ref_f32(&ctx, ref, "logits", logits->numel), logits->numel);
    printf("%s: logits rel err %.3g\n", variant, e);
    worst_logits = max_of(worst_logits, e);
    if (!(e <= TOL)) fail_msg("%s: logits differ from PyTorch, rel err %g", variant, e);

    /* Loss and the gradient of every parameter. */
    orc_tensor *loss = orc_llm_loss(&ctx, m, ids, targets);
    GC_ASSERT_OK(&ctx);
    const float ref_loss = ref_f32(&ctx, ref, "loss", 1)[0];
    e = fabs((double)orc_f32(loss)[0] - ref_loss) / fabs((double)ref_loss);
    printf("%s: loss %.6f (torch %.6f) rel err %.3g\n", variant, orc_f32(loss)[0], ref_loss, e);
    worst_loss = max_of(worst_loss, e);
    if (!(e <= TOL)) fail_msg("%s: loss %g, PyTorch %g", variant, (double)orc_f32(loss)[0], (double)ref_loss);
    assert_int_equal(orc_backward(&ctx, loss), ORC_OK);

    int n_grads = 0;
    for (size_t i = 0; i < orc_st_count(ref); i++)
        if (strncmp(orc_st_info(ref, i)->name, "grad.", 5) == 0) n_grads++;
    assert_int_equal(n_grads, m->n_params); /* no parameter missing on either side */
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m->n_params; i++) {
        orc_tensor *p = m->params[i];
        char name[256];
        snprintf(name, sizeof name, "grad.%s", p->name);
        assert_non_null(p->grad);
        e = rel_err(p->grad, ref_f32(&ctx, ref, name, p->numel), p->numel);
        if (!(e <= TOL)) fail_msg("%s: gradient of %s differs from PyTorch, rel err %g", variant, p->name, e);
        if (e > worst) {
            worst = e;
            worst_name = p->name;
        }
    }
    printf("%s: worst gradient rel err %.3g (%s)\n", variant, worst, worst_name);
    worst_grad = max_of(worst_grad, worst);

    free_ctx(&ctx);
    orc_st_close(ref);
    orc_llm_free(m);
}

static void test_tied_matches_torch(void **state) {
    (void)state;
    check_forward_and_grads(VARIANTS[0]);
}

static void test_untied_qknorm_matches_torch(void **state) {
    (void)state;
    check_forward_and_grads(VARIANTS[1]);
}

/* ---- AdamW --------------------------------------------------------------------- */

static void check_adamw(const char *variant) {
    orc_llm *m = load_model(variant);
    orc_st_file *ref = open_reference(variant);
    orc_ctx ctx;
    init_ctx(&ctx);
    float ref_losses[ADAM_STEPS];
    orc_error err = {0};
    if (orc_st_read_f32(ref, "adam_losses", ref_losses, ADAM_STEPS, &err) != ORC_OK) fail_msg("%s", err.msg);

    /* Two groups as in the script: 2-D weights decay, 1-D norm weights not. */
    orc_tensor **sorted = calloc((size_t)m->n_params, sizeof *sorted);
    assert_non_null(sorted);
    int n2 = 0, n1 = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i]->ndim >= 2) sorted[n2++] = m->params[i];
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i]->ndim < 2) sorted[n2 + n1++] = m->params[i];
    const orc_param_group groups[2] = {orc_group(sorted, n2, 0.1f), orc_group(sorted + n2, n1, 0.0f)};
    orc_optim *opt = orc_adamw_new(groups, 2, (orc_adamw_opts){0.9f, 0.95f, 1e-8f}, &err);
    if (!opt) fail_msg("%s", err.msg);

    double worst = 0;
    for (int step = 0; step < ADAM_STEPS; step++) {
        orc_optim_zero_grad(opt);
        orc_tensor *ids = ref_i32(&ctx, ref, "ids");
        orc_tensor *targets = ref_i32(&ctx, ref, "targets");
        orc_tensor *loss = orc_llm_loss(&ctx, m, ids, targets);
        GC_ASSERT_OK(&ctx);
        const double got = orc_f32(loss)[0], e = fabs(got - (double)ref_losses[step]);
        if (!(e <= TOL)) fail_msg("%s: AdamW step %d loss %.7f, PyTorch %.7f", variant, step, got, (double)ref_losses[step]);
        worst = max_of(worst, e);
        assert_int_equal(orc_backward(&ctx, loss), ORC_OK);
        assert_int_equal(orc_optim_step(opt, 1e-2f, &err), ORC_OK);
        orc_ctx_reset(&ctx);
    }
    printf("%s: AdamW losses max abs err %.3g (last loss torch %.5f)\n", variant, worst, (double)ref_losses[ADAM_STEPS - 1]);
    worst_adam = max_of(worst_adam, worst);

    orc_optim_free(opt);
    free(sorted);
    free_ctx(&ctx);
    orc_st_close(ref);
    orc_llm_free(m);
}

static void test_tied_adamw_matches_torch(void **state) {
    (void)state;
    check_adamw(VARIANTS[0]);
}

static void test_untied_qknorm_adamw_matches_torch(void **state) {
    (void)state;
    check_adamw(VARIANTS[1]);
}

/* ---- KV cache ------------------------------------------------------------------- */

static int32_t argmax(const float *x, int64_t n) {
    int32_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = (int32_t)i;
    return best;
}

/* Logits [1, n, V] of tokens toks[0..n) fed at the cache's current position
 * (or from 0 without a cache), copied into out (rows from first on). */
static void run_tokens(orc_ctx *ctx, orc_llm *m, const int32_t *toks, int64_t n, orc_llm_cache *cache, int64_t first,
                       float *out) {
    orc_tensor *ids = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(1, n));
    assert_non_null(ids);
    memcpy(ids->data, toks, sizeof(int32_t) * (size_t)n);
    orc_tensor *logits = orc_llm_forward(ctx, m, ids, cache);
    GC_ASSERT_OK(ctx);
    const int64_t V = m->cfg.vocab_size;
    memcpy(out, orc_f32(logits) + first * V, sizeof(float) * (size_t)((n - first) * V));
    orc_ctx_reset(ctx);
}

static void check_cache(const char *variant) {
    orc_llm *m = load_model(variant);
    orc_st_file *ref = open_reference(variant);
    orc_ctx ctx;
    init_ctx(&ctx);
    orc_set_no_grad(&ctx, true);
    const int64_t V = m->cfg.vocab_size, N = GEN_PROMPT + GEN_NEW;
    int32_t prompt[GEN_PROMPT];
    {
        orc_tensor *ids = ref_i32(&ctx, ref, "ids");
        memcpy(prompt, ids->data, sizeof prompt);
        orc_ctx_reset(&ctx);
    }
    float *full = calloc((size_t)(N * V), sizeof(float)); /* last-row logits per generated token */
    float *inc = calloc((size_t)(N * V), sizeof(float));
    float *row = calloc((size_t)(N * V), sizeof(float));
    assert_true(full && inc && row);

    /* Greedy decoding by re-running the whole sequence each time. */
    int32_t seq_full[GEN_PROMPT + GEN_NEW], seq_inc[GEN_PROMPT + GEN_NEW];
    memcpy(seq_full, prompt, sizeof prompt);
    for (int64_t n = GEN_PROMPT; n < N; n++) {
        run_tokens(&ctx, m, seq_full, n, NULL, n - 1, full + (n - GEN_PROMPT) * V);
        seq_full[n] = argmax(full + (n - GEN_PROMPT) * V, V);
    }

    /* The same with the KV cache: the prompt at once, then one token a step. */
    orc_error err = {0};
    orc_llm_cache *cache = orc_llm_cache_new(&m->cfg, 1, N, &err);
    if (!cache) fail_msg("%s", err.msg);
    memcpy(seq_inc, prompt, sizeof prompt);
    run_tokens(&ctx, m, seq_inc, GEN_PROMPT, cache, GEN_PROMPT - 1, inc);
    seq_inc[GEN_PROMPT] = argmax(inc, V);
    for (int64_t n = GEN_PROMPT + 1; n < N; n++) {
        assert_int_equal(cache->len, n - 1);
        run_tokens(&ctx, m, seq_inc + n - 1, 1, cache, 0, inc + (n - GEN_PROMPT) * V);
        seq_inc[n] = argmax(inc + (n - GEN_PROMPT) * V, V);
    }
    assert_memory_equal(seq_full, seq_inc, sizeof seq_full);
    double e = rel_err(inc, full, GEN_NEW * V);

    /* Chunks of several tokens after a cached prefix (causal offset S - T):
     * positions 3..N-2 at once after a prefix of 3 equal the full rows. */
    orc_llm_cache_clear(cache);
    run_tokens(&ctx, m, seq_full, 3, cache, 0, row);
    run_tokens(&ctx, m, seq_full + 3, N - 4, cache, 0, inc);
    run_tokens(&ctx, m, seq_full, N - 1, NULL, 3, row);
    e = max_of(e, rel_err(inc, row, (N - 4) * V));
    printf("%s: generated", variant);
    for (int64_t n = GEN_PROMPT; n < N; n++) printf(" %d", seq_inc[n]);
    printf("; cache vs full logits rel err %.3g\n", e);
    worst_cache = max_of(worst_cache, e);
    if (!(e <= TOL)) fail_msg("%s: cached logits differ from full-sequence logits, rel err %g", variant, e);

    orc_llm_cache_free(cache);
    free(full);
    free(inc);
    free(row);
    free_ctx(&ctx);
    orc_st_close(ref);
    orc_llm_free(m);
}

static void test_cache_matches_full_sequence(void **state) {
    (void)state;
    check_cache(VARIANTS[0]);
    check_cache(VARIANTS[1]);
}

static int report(void **state) {
    (void)state;
    printf("worst rel errors: logits %.3g, loss %.3g, gradients %.3g, cache %.3g; AdamW losses abs %.3g\n",
           worst_logits, worst_loss, worst_grad, worst_cache, worst_adam);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tied_matches_torch),
        cmocka_unit_test(test_untied_qknorm_matches_torch),
        cmocka_unit_test(test_tied_adamw_matches_torch),
        cmocka_unit_test(test_untied_qknorm_adamw_matches_torch),
        cmocka_unit_test(test_cache_matches_full_sequence),
    };
    return cmocka_run_group_tests(tests, NULL, report);
}
