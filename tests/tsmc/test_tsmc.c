/* TSMC: the weight arithmetic (ESS, the three resampling schemes, weighted
 * majority), the value model's two objectives against a direct computation
 * from its logits and against finite differences, batched scoring of
 * sampled solutions against one forward each, value training that
 * learns a planted signal (in the ids, or in the confidence input alone),
 * every decoding method on a tiny random model (deterministic, caches and
 * token log-probabilities consistent after resampling), rollout files, and
 * the bad inputs the issue lists. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "orchard/ops.h"
#include "orchard/tsmc.h"
#include "testdir.h"

static const char CORPUS[] =
    "Tom has 3 apples and buys 4 more.\n3 + 4 = 7\n#### 7\n"
    "Ann reads 12 pages a day for 2 days.\n12 * 2 = 24\n#### 24\n"
    "A box holds 9 eggs; 5 break.\n9 - 5 = 4\n#### 4\n";

typedef struct fixture {
    orc_tokenizer *tok;
    orc_llm *gen;
    char dir[64];
} fixture;

static fixture F;

static int setup(void **state) {
    (void)state;
    const char *texts[1] = {CORPUS};
    size_t lens[1] = {sizeof CORPUS - 1};
    orc_tokenizer_train_opts to = {.vocab_size = 320};
    orc_error err = {0};
    F.tok = orc_tokenizer_train(texts, lens, 1, &to, &err);
    if (!F.tok) return -1;
    orc_llm_config c;
    orc_llm_config_default(&c);
    c.hidden_size = 32;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 8;
    c.intermediate_size = 64;
    c.vocab_size = (int64_t)orc_tokenizer_vocab_size(F.tok);
    c.max_position_embeddings = 160;
    F.gen = orc_llm_create(&c, false, &err);
    if (!F.gen) return -1;
    orc_llm_init_weights(F.gen, 3);
    if (orc_test_dir_make(F.dir, sizeof F.dir, "tsmc") != 0 || orc_llm_save(F.gen, F.dir, &err) != ORC_OK) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    orc_test_dir_remove(F.dir);
    orc_llm_free(F.gen);
    orc_tokenizer_free(F.tok);
    return 0;
}

/* ---- weights ------------------------------------------------------------------------------ */

static void test_ess(void **state) {
    (void)state;
    double eq[4] = {1, 1, 1, 1}, one[4] = {0, -INFINITY, -INFINITY, -INFINITY}, two[4] = {5, 5, -INFINITY, -INFINITY};
    assert_true(fabs(orc_ess(eq, 4) - 4) < 1e-12);
    assert_true(fabs(orc_ess(one, 4) - 1) < 1e-12);
    assert_true(fabs(orc_ess(two, 4) - 2) < 1e-12);
    /* weights 1 and 3: (4)^2 / (1 + 9) = 1.6; log weights are shift-invariant */
    double w[2] = {log(1.0) + 700, log(3.0) + 700};
    assert_true(fabs(orc_ess(w, 2) - 1.6) < 1e-9);
}

static void counts_of(orc_resample_kind k, const double *logw, int n, uint64_t seed, int *counts) {
    int *out = malloc((size_t)n * sizeof *out);
    orc_rng r;
    orc_rng_init(&r, seed);
    orc_error err = {0};
    assert_int_equal(orc_resample(k, logw, n, &r, out, &err), ORC_OK);
    memset(counts, 0, (size_t)n * sizeof *counts);
    for (int i = 0; i < n; i++) {
        assert_true(out[i] >= 0 && out[i] < n);
        counts[out[i]]++;
        if (k != ORC_RESAMPLE_MULTINOMIAL && i) assert_true(out[i] >= out[i - 1]);
    }
    free(out);
}

static void test_resample(void **state) {
    (void)state;
    /* systematic and stratified: each count is floor or ceil of n * w (systematic, exactly) */
    double logw[4] = {log(0.5), log(0.25), log(0.25), -INFINITY};
    int c[4];
    for (uint64_t seed = 1; seed < 50; seed++) {
        counts_of(ORC_RESAMPLE_SYSTEMATIC, logw, 4, seed, c);
        assert_int_equal(c[0], 2);
        assert_int_equal(c[1], 1);
        assert_int_equal(c[2], 1);
        assert_int_equal(c[3], 0);
        counts_of(ORC_RESAMPLE_STRATIFIED, logw, 4, seed, c);
        assert_int_equal(c[3], 0);
        assert_true(c[0] >= 1 && c[0] <= 3);
    }
    /* multinomial frequencies over many draws follow the weights */
    enum { N = 20000 };
    double *lw = malloc(N * sizeof *lw);
    int *cc = malloc(N * sizeof *cc);
    for (int i = 0; i < N; i++) lw[i] = i % 4 == 0 ? log(3.0) : 0.0; /* every 4th particle weighs 3x */
    counts_of(ORC_RESAMPLE_MULTINOMIAL, lw, N, 7, cc);
    long heavy = 0;
    for (int i = 0; i < N; i += 4) heavy += cc[i];
    const double expect = N * 0.5; /* (N/4 * 3) / (N/4 * 3 + 3N/4) */
    assert_true(fabs((double)heavy - expect) < 0.03 * N);
    free(lw);
    free(cc);
    /* every weight zero */
    double zero[3] = {-INFINITY, -INFINITY, -INFINITY};
    int out[3];
    orc_rng r;
    orc_rng_init(&r, 1);
    orc_error err = {0};
    assert_int_equal(orc_resample(ORC_RESAMPLE_SYSTEMATIC, zero, 3, &r, out, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "zero"));
    assert_int_equal(orc_resample_parse("stratified"), ORC_RESAMPLE_STRATIFIED);
    assert_int_equal(orc_resample_parse("nope"), -1);
}

static void test_weighted_majority(void **state) {
    (void)state;
    const char *a[5] = {"3", "4", "3", NULL, "4"};
    double w[5] = {0.1, 0.3, 0.1, 5.0, 0.05};
    assert_int_equal(orc_weighted_majority(a, NULL, 5), 0);  /* 2 vs 2: the first seen */
    assert_int_equal(orc_weighted_majority(a, w, 5), 1);     /* 0.35 vs 0.2; NULL never wins */
    const char *none[2] = {NULL, NULL};
    assert_int_equal(orc_weighted_majority(none, NULL, 2), -1);
}

/* ---- the value model ------------------------------------------------------------------------- */

/* A rollout problem with fixed ids (from the tokenizer's range). */
static void make_problem(orc_rollout_problem *p, int n_samples, uint64_t seed, int32_t marker) {
    memset(p, 0, sizeof *p);
    orc_rng r;
    orc_rng_init(&r, seed);
    const int32_t V = (int32_t)orc_tokenizer_vocab_size(F.tok);
    p->n_prompt = 5;
    p->prompt = malloc(5 * sizeof *p->prompt);
    for (int i = 0; i < 5; i++) p->prompt[i] = (int32_t)orc_rng_below(&r, 200);
    p->samples = calloc((size_t)n_samples, sizeof *p->samples);
    p->n_samples = n_samples;
    for (int k = 0; k < n_samples; k++) {
        orc_rollout_sample *s = &p->samples[k];
        s->n_ids = 6 + (int)orc_rng_below(&r, 6);
        s->ids = malloc((size_t)s->n_ids * sizeof *s->ids);
        for (int i = 0; i < s->n_ids; i++) s->ids[i] = (int32_t)orc_rng_below(&r, 200);
        s->correct = k % 2 == 0;
        if (marker >= 0 && s->correct) s->ids[0] = marker; /* the signal value training must find */
        if (marker >= 0 && !s->correct) s->ids[0] = (marker + 1) % V; /* and the wrong ones with another */
        /* token log-probabilities (the confidence input) from their own stream, so the ids stay as they were */
        orc_rng rl;
        orc_rng_init(&rl, seed * 131 + (uint64_t)k + 7);
        s->logp = malloc((size_t)s->n_ids * sizeof *s->logp);
        for (int i = 0; i < s->n_ids; i++) s->logp[i] = -3.0f * orc_rng_uniform(&rl);
        s->step_end = malloc(4 * sizeof *s->step_end);
        s->n_steps = 0;
        for (int i = 2; i < s->n_ids; i += 3) s->step_end[s->n_steps++] = i;
        if (s->n_steps > 3) s->n_steps = 3;
    }
}

static void free_problem(orc_rollout_problem *p) {
    orc_rollout_set s = {p, 1};
    orc_rollout_problem *copy = malloc(sizeof *copy);
    *copy = *p;
    s.problems = copy;
    orc_rollout_set_free(&s);
}

static double log_sigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }

/* The confidence input over prompt + sample positions, for orc_value_logits
 * on one row: 0 over the prompt, then the running minimum of the sample's
 * token log-probabilities (a static buffer: one row at a time). */
static const float *prefix_conf(const orc_rollout_problem *pr, const orc_rollout_sample *s) {
    static float buf[256];
    assert_true(pr->n_prompt + s->n_ids <= 256);
    for (int i = 0; i < pr->n_prompt; i++) buf[i] = 0.0f;
    orc_value_confidence(s->logp, s->n_ids, buf + pr->n_prompt);
    return buf;
}

/* The loss computed from per-row logits in double, straight from the definitions. */
static double manual_loss(orc_value_model *v, orc_rollout_problem *const *probs, int n, orc_value_objective obj) {
    orc_arena *a = orc_arena_create(1 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    ctx.no_grad = true;
    double total = 0;
    int count = 0;
    for (int p = 0; p < n; p++) {
        const orc_rollout_problem *pr = probs[p];
        double lp[16][16]; /* [sample][step] log psi */
        int max_steps = 0;
        for (int k = 0; k < pr->n_samples; k++) {
            const orc_rollout_sample *s = &pr->samples[k];
            int T = pr->n_prompt + s->n_ids;
            orc_tensor *ids = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, T));
            memcpy(orc_i32(ids), pr->prompt, (size_t)pr->n_prompt * 4);
            memcpy(orc_i32(ids) + pr->n_prompt, s->ids, (size_t)s->n_ids * 4);
            orc_tensor *z = orc_value_logits(&ctx, v, ids, prefix_conf(pr, s), NULL);
            assert_non_null(z);
            for (int t = 0; t < s->n_steps; t++) lp[k][t] = log_sigmoid(orc_f32(z)[pr->n_prompt + s->step_end[t]]);
            if (s->n_steps > max_steps) max_steps = s->n_steps;
            if (obj == ORC_VALUE_BCE)
                for (int t = 0; t < s->n_steps; t++) {
                    double l1 = lp[k][t], l0 = log_sigmoid(-orc_f32(z)[pr->n_prompt + s->step_end[t]]);
                    total -= s->correct ? l1 : l0;
                    count++;
                }
        }
        if (obj == ORC_VALUE_TWIST)
            for (int t = 0; t < max_steps; t++) {
                int nc = 0;
                double mx = -INFINITY;
                for (int k = 0; k < pr->n_samples; k++)
                    if (pr->samples[k].n_steps > t) {
                        nc += pr->samples[k].correct;
                        if (lp[k][t] > mx) mx = lp[k][t];
                    }
                if (!nc) continue;
                double se = 0;
                for (int k = 0; k < pr->n_samples; k++)
                    if (pr->samples[k].n_steps > t) se += exp(lp[k][t] - mx);
                const double lse = mx + log(se);
                for (int k = 0; k < pr->n_samples; k++)
                    if (pr->samples[k].n_steps > t && pr->samples[k].correct) total -= (lp[k][t] - lse) / nc;
                count++;
            }
    }
    orc_arena_destroy(a);
    return total / count;
}

static orc_value_model *value_with_random_head(bool with_grad, bool confidence) {
    orc_error err = {0};
    orc_value_model *v = orc_value_from_generator(F.dir, with_grad, confidence, &err);
    if (!v) fail_msg("%s", err.msg);
    orc_rng r;
    orc_rng_init(&r, 9);
    orc_rng_fill_normal(&r, orc_f32(v->head_w), v->head_w->numel, 0.0f, 0.5f);
    orc_f32(v->head_b)[0] = 0.2f;
    return v;
}

/* Batched scoring of sampled solutions (the study's ORM / PRM / weighted
 * votes) gives the per-sample forward's log psi at every step end, across
 * more samples than one batch holds. */
/* Runs a check with a plain value head and with one that reads the confidence. */
static void both_heads(void **state, void (*check)(bool confidence)) {
    (void)state;
    check(false);
    check(true);
}

static void check_step_logpsi(bool confidence) {
    orc_error err = {0};
    orc_value_model *v = value_with_random_head(false, confidence);
    orc_rollout_problem p;
    make_problem(&p, 21, 17, -1);
    double *lp[21];
    for (int k = 0; k < 21; k++) {
        lp[k] = malloc(4 * sizeof **lp);
        for (int t = 0; t < 4; t++) lp[k][t] = NAN;
    }
    if (orc_value_step_logpsi(v, &p, lp, &err) != ORC_OK) fail_msg("%s", err.msg);
    orc_arena *a = orc_arena_create(1 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    ctx.no_grad = true;
    int checked = 0;
    for (int k = 0; k < 21; k++) {
        const orc_rollout_sample *s = &p.samples[k];
        const int T = p.n_prompt + s->n_ids;
        orc_tensor *ids = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, T));
        memcpy(orc_i32(ids), p.prompt, (size_t)p.n_prompt * 4);
        memcpy(orc_i32(ids) + p.n_prompt, s->ids, (size_t)s->n_ids * 4);
        orc_tensor *z = orc_value_logits(&ctx, v, ids, prefix_conf(&p, s), NULL);
        assert_non_null(z);
        for (int t = 0; t < s->n_steps; t++, checked++) {
            const double want = log_sigmoid(orc_f32(z)[p.n_prompt + s->step_end[t]]);
            if (!(fabs(lp[k][t] - want) < 1e-4)) fail_msg("sample %d step %d: %g, want %g", k, t, lp[k][t], want);
        }
        free(lp[k]);
    }
    assert_true(checked > 21);
    orc_arena_destroy(a);
    free_problem(&p);
    orc_value_free(v);
}

static void test_value_step_logpsi(void **state) { both_heads(state, check_step_logpsi); }

static void check_loss_definitions(bool confidence) {
    orc_value_model *v = value_with_random_head(false, confidence);
    orc_rollout_problem pa, pb;
    make_problem(&pa, 4, 1, -1);
    make_problem(&pb, 3, 2, -1);
    pb.samples[1].n_steps = 1; /* a shorter sample drops out of later groups */
    orc_rollout_problem *probs[2] = {&pa, &pb};
    orc_arena *a = orc_arena_create(1 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    ctx.no_grad = true;
    for (int obj = 0; obj < 2; obj++) {
        int groups = 0;
        orc_tensor *l = orc_value_loss(&ctx, v, (const orc_rollout_problem *const *)probs, 2, (orc_value_objective)obj,
                                       &groups);
        if (!l) fail_msg("%s", orc_ctx_message(&ctx));
        const double want = manual_loss(v, probs, 2, (orc_value_objective)obj);
        assert_true(groups > 0);
        if (fabs(orc_f32(l)[0] - want) > 1e-5 * (1 + fabs(want)))
            fail_msg("objective %d: loss %.8f, direct computation %.8f", obj, (double)orc_f32(l)[0], want);
        orc_ctx_reset(&ctx);
        ctx.no_grad = true;
    }
    orc_arena_destroy(a);
    free_problem(&pa);
    free_problem(&pb);
    orc_value_free(v);
}

static void test_value_loss_definitions(void **state) { both_heads(state, check_loss_definitions); }

/* The tape's gradient of both losses against central differences, for head
 * entries, entries of the body's last FFN and of the first layer's key and
 * value projections (through the prompt's keys and values, which the
 * samples share). */
static void check_loss_gradient(bool confidence) {
    orc_value_model *v = value_with_random_head(true, confidence);
    orc_rollout_problem pa;
    make_problem(&pa, 4, 5, -1);
    orc_rollout_problem *probs[1] = {&pa};
    orc_arena *a = orc_arena_create(8 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *body_w = v->body->layers[1].w_down;
    for (int obj = 0; obj < 2; obj++) {
        orc_zero_grad(v->head_w);
        orc_zero_grad(v->head_b);
        orc_zero_grad(body_w);
        orc_zero_grad(v->body->layers[0].wk);
        orc_zero_grad(v->body->layers[0].wv);
        orc_tensor *l = orc_value_loss(&ctx, v, (const orc_rollout_problem *const *)probs, 1, (orc_value_objective)obj,
                                       NULL);
        assert_non_null(l);
        assert_int_equal(orc_backward(&ctx, l), ORC_OK);
        orc_ctx_reset(&ctx);
        struct {
            orc_tensor *t;
            int64_t i;
        } probes[] = {{v->head_w, 0}, {v->head_w, 7}, {v->head_b, 0}, {body_w, 3}, {body_w, 100},
                      {v->body->layers[0].wk, 5}, {v->body->layers[0].wv, 9}, /* the prompt's shared keys, values */
                      {v->head_w, v->head_w->numel - 1}}; /* with confidence: its weight */
        for (size_t p = 0; p < sizeof probes / sizeof *probes; p++) {
            float *x = orc_f32(probes[p].t) + probes[p].i;
            const float old = *x, h = 1e-2f;
            double lv[2];
            for (int s = 0; s < 2; s++) {
                *x = old + (s ? -h : h);
                bool prev = orc_set_no_grad(&ctx, true);
                orc_tensor *ll = orc_value_loss(&ctx, v, (const orc_rollout_problem *const *)probs, 1,
                                                (orc_value_objective)obj, NULL);
                lv[s] = orc_f32(ll)[0];
                orc_set_no_grad(&ctx, prev);
                orc_ctx_reset(&ctx);
            }
            *x = old;
            const double fd = (lv[0] - lv[1]) / (2 * h), g = probes[p].t->grad[probes[p].i];
            if (fabs(fd - g) > 2e-3 + 2e-2 * fabs(fd))
                fail_msg("objective %d probe %zu: tape %.6f, finite difference %.6f", obj, p, g, fd);
        }
    }
    orc_arena_destroy(a);
    free_problem(&pa);
    orc_value_free(v);
}

static void test_value_loss_gradient(void **state) { both_heads(state, check_loss_gradient); }

/* Short value training for the tests: lr to lr / 10 after 5 warmup steps,
 * quiet unless TSMC_VERBOSE is set. */
static orc_value_train_opts quick_opts(int steps, float lr) {
    orc_value_train_opts o;
    orc_value_train_opts_default(&o);
    o.steps = steps;
    o.lr = lr;
    o.min_lr = lr / 10;
    o.warmup = 5;
    o.quiet = getenv("TSMC_VERBOSE") == NULL;
    return o;
}

/* Correct samples start with one marker token, wrong ones with another:
 * after training, psi at the first step end is higher for prefixes with the
 * marker on new problems (random prompts and tokens otherwise). */
static void test_value_training_learns(void **state) {
    (void)state;
    const int32_t marker = 77;
    orc_rollout_set set = {calloc(12, sizeof(orc_rollout_problem)), 12};
    for (int i = 0; i < 12; i++) make_problem(&set.problems[i], 4, 100 + (uint64_t)i, marker);
    orc_error err = {0};
    orc_value_model *v = orc_value_from_generator(F.dir, true, false, &err);
    assert_non_null(v);
    orc_value_train_opts o = quick_opts(100, 3e-3f);
    double final = 0;
    assert_int_equal(orc_value_train(v, &set, &o, &final, &err), ORC_OK);
    assert_true(isfinite(final));
    /* held-out problems */
    int better = 0, total = 0;
    orc_arena *a = orc_arena_create(1 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    ctx.no_grad = true;
    for (int i = 0; i < 8; i++) {
        orc_rollout_problem p;
        make_problem(&p, 2, 900 + (uint64_t)i, marker);
        double lp[2];
        for (int k = 0; k < 2; k++) {
            const orc_rollout_sample *s = &p.samples[k];
            orc_tensor *ids = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, p.n_prompt + s->n_ids));
            memcpy(orc_i32(ids), p.prompt, (size_t)p.n_prompt * 4);
            memcpy(orc_i32(ids) + p.n_prompt, s->ids, (size_t)s->n_ids * 4);
            orc_tensor *z = orc_value_logits(&ctx, v, ids, NULL, NULL);
            lp[k] = orc_f32(z)[p.n_prompt + s->step_end[0]];
        }
        better += lp[0] > lp[1]; /* sample 0 is correct and has the marker */
        total++;
        orc_ctx_reset(&ctx);
        ctx.no_grad = true;
        free_problem(&p);
    }
    orc_arena_destroy(a);
    fprintf(stderr, "value training: the marked prefix ranks higher in %d of %d new problems\n", better, total);
    if (better < 7) fail_msg("the value model ranks the marked prefix higher in only %d of %d problems", better, total);
    orc_rollout_set_free(&set);
    orc_value_free(v);
}

/* --mixed-only: value training draws only the problems with both right and
 * wrong samples. Training on {all right, all wrong, mixed} with it equals,
 * bit for bit, training on the mixed problem alone (the draws see one
 * problem either way); without it the all-right problem takes part and the
 * weights differ. A set with no mixed problem is an error that says so. */
static void train_head_bits(orc_rollout_set *set, bool mixed_only, float *head_out) {
    orc_error err = {0};
    orc_value_model *v = orc_value_from_generator(F.dir, true, false, &err);
    if (!v) fail_msg("%s", err.msg);
    orc_value_train_opts o = quick_opts(6, 1e-3f);
    o.mixed_only = mixed_only;
    double final = 0;
    if (orc_value_train(v, set, &o, &final, &err) != ORC_OK) fail_msg("%s", err.msg);
    memcpy(head_out, orc_f32(v->head_w), (size_t)v->head_w->numel * sizeof(float));
    orc_value_free(v);
}

static void test_value_training_mixed_only(void **state) {
    (void)state;
    orc_rollout_set all = {calloc(3, sizeof(orc_rollout_problem)), 3};
    for (int i = 0; i < 3; i++) make_problem(&all.problems[i], 4, 300 + (uint64_t)i, -1);
    for (int k = 0; k < 4; k++) {
        all.problems[0].samples[k].correct = true;  /* all right */
        all.problems[1].samples[k].correct = false; /* all wrong */
    }
    orc_rollout_set mixed = {calloc(1, sizeof(orc_rollout_problem)), 1};
    make_problem(&mixed.problems[0], 4, 302, -1); /* the same problem as all.problems[2] */
    const int64_t D = F.gen->cfg.hidden_size;
    float *a = malloc((size_t)D * sizeof *a), *b = malloc((size_t)D * sizeof *b), *c = malloc((size_t)D * sizeof *c);
    train_head_bits(&all, true, a);
    train_head_bits(&mixed, false, b);
    train_head_bits(&all, false, c);
    assert_memory_equal(a, b, (size_t)D * sizeof *a);
    assert_memory_not_equal(a, c, (size_t)D * sizeof *a);
    /* no mixed problem: an error naming the option */
    orc_rollout_set one = {all.problems, 2};
    orc_error err = {0};
    orc_value_model *v = orc_value_from_generator(F.dir, true, false, &err);
    assert_non_null(v);
    orc_value_train_opts o = quick_opts(2, 1e-3f);
    o.mixed_only = true;
    double final = 0;
    assert_int_equal(orc_value_train(v, &one, &o, &final, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "--mixed-only"));
    orc_value_free(v);
    free(a);
    free(b);
    free(c);
    orc_rollout_set_free(&all);
    orc_rollout_set_free(&mixed);
}

/* The confidence input: the running minimum of the token log-probabilities,
 * floored. */
static void test_confidence_input(void **state) {
    (void)state;
    const float lp[6] = {-0.1f, -0.5f, -0.2f, -4.0f, -0.0f, -80.0f};
    float c[6];
    orc_value_confidence(lp, 6, c);
    const float want[6] = {-0.1f, -0.5f, -0.5f, -4.0f, -4.0f, ORC_VALUE_CONF_FLOOR};
    for (int i = 0; i < 6; i++) assert_float_equal(c[i], want[i], 1e-7);
}

/* Wrong samples hold one unlikely token (a slip), right ones none, and the
 * ids carry no signal (every sample of a problem has sample 0's ids): with
 * the confidence input the value model learns to rank the right prefix
 * above the wrong one on new problems; without it, it could not. */
static void plant_slips(orc_rollout_problem *p) {
    const orc_rollout_sample *s0 = &p->samples[0];
    for (int k = 0; k < p->n_samples; k++) {
        orc_rollout_sample *s = &p->samples[k];
        if (k > 0) {
            s->ids = realloc(s->ids, (size_t)s0->n_ids * sizeof *s->ids);
            s->logp = realloc(s->logp, (size_t)s0->n_ids * sizeof *s->logp);
            s->step_end = realloc(s->step_end, 4 * sizeof *s->step_end);
            memcpy(s->ids, s0->ids, (size_t)s0->n_ids * sizeof *s->ids);
            memcpy(s->step_end, s0->step_end, 4 * sizeof *s->step_end);
            s->n_ids = s0->n_ids;
            s->n_steps = s0->n_steps;
        }
        for (int i = 0; i < s->n_ids; i++) s->logp[i] = -0.3f * (float)((i + k) % 3) / 2.0f;
        if (!s->correct) s->logp[(k / 2) % 2] = -6.0f; /* before the first step end */
    }
}

static void test_value_confidence_learns(void **state) {
    (void)state;
    orc_rollout_set set = {calloc(12, sizeof(orc_rollout_problem)), 12};
    for (int i = 0; i < 12; i++) {
        make_problem(&set.problems[i], 4, 300 + (uint64_t)i, -1);
        plant_slips(&set.problems[i]);
    }
    orc_error err = {0};
    orc_value_model *v = orc_value_from_generator(F.dir, true, true, &err);
    assert_non_null(v);
    assert_true(v->confidence);
    assert_int_equal(v->head_w->shape[1], F.gen->cfg.hidden_size + 1);
    /* it starts at psi = sigmoid(confidence); from a zero weight instead, so the test needs the training */
    assert_float_equal(orc_f32(v->head_w)[F.gen->cfg.hidden_size], 1.0f, 0.0f);
    orc_f32(v->head_w)[F.gen->cfg.hidden_size] = 0.0f;
    orc_value_train_opts o = quick_opts(60, 3e-3f);
    double final = 0;
    assert_int_equal(orc_value_train(v, &set, &o, &final, &err), ORC_OK);
    int better = 0;
    for (int i = 0; i < 8; i++) {
        orc_rollout_problem p;
        make_problem(&p, 2, 950 + (uint64_t)i, -1);
        plant_slips(&p);
        double l0[4], l1[4];
        double *lp[2] = {l0, l1};
        assert_int_equal(orc_value_step_logpsi(v, &p, lp, &err), ORC_OK);
        better += l0[0] > l1[0]; /* sample 0 is right, sample 1 slipped */
        free_problem(&p);
    }
    if (better < 7) fail_msg("the confident prefix ranks higher in only %d of 8 new problems", better);
    /* saved and loaded back: the head's width says it reads the confidence */
    char dir[64];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "value_conf"), 0);
    assert_int_equal(orc_value_save(v, dir, &err), ORC_OK);
    orc_value_model *back = orc_value_load(dir, false, &err);
    if (!back) fail_msg("%s", err.msg);
    assert_true(back->confidence);
    assert_memory_equal(orc_f32(back->head_w), orc_f32(v->head_w), (size_t)v->head_w->numel * sizeof(float));
    /* a sample without token log-probabilities cannot be scored by it */
    orc_rollout_problem p;
    make_problem(&p, 2, 5, -1);
    free(p.samples[1].logp);
    p.samples[1].logp = NULL;
    double l0[4], l1[4];
    double *lp[2] = {l0, l1};
    orc_error_clear(&err);
    assert_int_equal(orc_value_step_logpsi(back, &p, lp, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "log-probabilities"));
    free_problem(&p);
    orc_value_free(back);
    orc_test_dir_remove(dir);
    orc_rollout_set_free(&set);
    orc_value_free(v);
}

/* Gives every sample an answer: the right ones "7", each wrong one its own. */
static void give_answers(orc_rollout_problem *p) {
    char wrong[16];
    for (int k = 0; k < p->n_samples; k++) {
        snprintf(wrong, sizeof wrong, "%d", 8 + k);
        p->samples[k].answer = strdup(p->samples[k].correct ? "7" : wrong);
    }
}

/* A constant value (the zero head) carries no information: every pair is a
 * tie, the held-out twist loss is the constant-psi level exactly, and the
 * picks are the ones a constant gives (majority finds the right answer, which
 * has two votes of four, the wrong ones one each; ORM and PRM take the first
 * sample, which is right). */
static void test_value_eval_constant(void **state) {
    (void)state;
    orc_error err = {0};
    orc_value_model *v = orc_value_from_generator(F.dir, false, false, &err);
    assert_non_null(v);
    orc_rollout_set set = {calloc(6, sizeof(orc_rollout_problem)), 6};
    for (int i = 0; i < 6; i++) {
        make_problem(&set.problems[i], 4, 300 + (uint64_t)i, -1);
        give_answers(&set.problems[i]);
    }
    orc_value_report r;
    assert_int_equal(orc_value_eval(v, &set, &r, &err), ORC_OK);
    assert_int_equal(r.problems, 6);
    assert_int_equal(r.samples, 24);
    assert_int_equal(r.correct, 12);
    assert_int_equal(r.mixed, 6);
    assert_true(r.pair_final == 0.5 && r.pair_step[0] == 0.5 && r.auc_final == 0.5);
    assert_true(r.twist_groups > 6);
    assert_true(fabs(r.twist_loss - r.twist_loss_uniform) < 1e-9);
    assert_true(r.majority == 1.0 && r.orm == 1.0 && r.prm == 1.0 && r.weighted == 1.0);
    /* an empty set is an error, not a division by zero */
    orc_rollout_set none = {NULL, 0};
    assert_int_equal(orc_value_eval(v, &none, &r, &err), ORC_EINVAL);
    orc_rollout_set_free(&set);
    orc_value_free(v);
}

/* Training with held-out rollouts: the evaluations run, the kept weights are
 * the best evaluation's (scoring them again gives the same report), and the
 * learned value ranks the marked (right) samples first on the held-out
 * problems, so ORM picks right where a constant would not. */
static void test_value_training_validation(void **state) {
    (void)state;
    const int32_t marker = 77;
    orc_rollout_set set = {calloc(24, sizeof(orc_rollout_problem)), 24};
    for (int i = 0; i < 24; i++) make_problem(&set.problems[i], 4, 100 + (uint64_t)i, marker);
    orc_rollout_set val = {calloc(8, sizeof(orc_rollout_problem)), 8};
    for (int i = 0; i < 8; i++) {
        make_problem(&val.problems[i], 4, 900 + (uint64_t)i, marker);
        /* the wrong samples first, so a constant value's ORM pick is wrong */
        orc_rollout_sample t = val.problems[i].samples[0];
        val.problems[i].samples[0] = val.problems[i].samples[1];
        val.problems[i].samples[1] = t;
        give_answers(&val.problems[i]);
    }
    orc_error err = {0};
    orc_value_model *v = orc_value_from_generator(F.dir, true, false, &err);
    assert_non_null(v);
    orc_value_report before;
    assert_int_equal(orc_value_eval(v, &val, &before, &err), ORC_OK);
    assert_true(before.orm == 0.0 && before.majority == 1.0);
    orc_value_train_opts o = quick_opts(100, 1e-3f);
    orc_value_report kept;
    int kept_step = -2;
    o.val = &val;
    o.eval_every = 25;
    o.keep_best = true;
    o.val_report = &kept;
    o.val_step = &kept_step;
    double final = 0;
    assert_int_equal(orc_value_train(v, &set, &o, &final, &err), ORC_OK);
    assert_true(kept_step >= 25 && kept_step <= 100 && kept_step % 25 == 0);
    orc_value_report again;
    assert_int_equal(orc_value_eval(v, &val, &again, &err), ORC_OK);
    assert_true(again.twist_loss == kept.twist_loss && again.pair_final == kept.pair_final);
    assert_true(kept.twist_loss < kept.twist_loss_uniform);
    if (!(kept.pair_final > 0.9 && kept.orm > 0.8))
        fail_msg("held-out ranking after training: pairs %.3f, orm %.3f", kept.pair_final, kept.orm);
    orc_rollout_set_free(&set);
    orc_rollout_set_free(&val);
    orc_value_free(v);
}

/* ---- decoding ----------------------------------------------------------------------------------- */

static void check_methods_run(bool confidence) {
    orc_error err = {0};
    orc_value_model *v = value_with_random_head(false, confidence);
    orc_tsmc_models mo = {F.gen, v, F.tok, 160};
    int32_t *prompt = NULL;
    int n_prompt = 0;
    assert_int_equal(orc_tsmc_prompt(F.tok, "Tom has 3 apples and buys 4 more.", &prompt, &n_prompt, &err), ORC_OK);
    orc_tsmc_opts o;
    orc_tsmc_opts_default(&o);
    o.n_particles = 4;
    o.max_steps = 3;
    o.max_line_tokens = 6;
    o.sampler.temperature = 1.0f;
    o.check_caches = true;
    for (int m = 0; m < ORC_TSMC_N_METHODS; m++) {
        orc_tsmc_answer a, b;
        if (orc_tsmc_run(&mo, (orc_tsmc_method)m, prompt, n_prompt, &o, &a, &err) != ORC_OK)
            fail_msg("%s: %s", orc_tsmc_method_name((orc_tsmc_method)m), err.msg);
        assert_true(a.tokens > 0);
        assert_true(a.finished >= 1);
        assert_int_equal(orc_tsmc_run(&mo, (orc_tsmc_method)m, prompt, n_prompt, &o, &b, &err), ORC_OK);
        assert_int_equal(a.tokens, b.tokens); /* same seed, same run */
        assert_true((a.text == NULL) == (b.text == NULL));
        if (a.text) assert_string_equal(a.text, b.text);
        if (m == ORC_TSMC_GREEDY) assert_true(a.tokens <= o.max_steps * o.max_line_tokens);
        orc_tsmc_answer_free(&a);
        orc_tsmc_answer_free(&b);
    }
    /* resampling at every step: caches follow their particles */
    o.ess_threshold = 1.0;
    o.n_particles = 6;
    for (int k = 0; k < 3; k++) {
        o.resample = (orc_resample_kind)k;
        orc_tsmc_answer a;
        if (orc_tsmc_run(&mo, ORC_TSMC_SMC, prompt, n_prompt, &o, &a, &err) != ORC_OK)
            fail_msg("%s: %s", orc_resample_name((orc_resample_kind)k), err.msg);
        assert_true(a.resamples >= 1);
        orc_tsmc_answer_free(&a);
    }
    free(prompt);
    orc_value_free(v);
}

/* Every method, with a plain value head and with one that reads the
 * confidence (check_caches also checks each token's recorded log-probability). */
static void test_methods_run(void **state) { both_heads(state, check_methods_run); }

static void test_rollouts_file(void **state) {
    (void)state;
    orc_error err = {0};
    orc_tsmc_models mo = {F.gen, NULL, F.tok, 160};
    orc_tsmc_opts o;
    orc_tsmc_opts_default(&o);
    o.max_steps = 3;
    o.max_line_tokens = 6;
    orc_rollout_set set = {calloc(1, sizeof(orc_rollout_problem)), 1};
    orc_rollout_problem *p = &set.problems[0];
    p->id = strdup("math-1");
    p->question = strdup("Tom has 3 apples.");
    p->gold = strdup("7");
    assert_int_equal(orc_tsmc_prompt(F.tok, p->question, &p->prompt, &p->n_prompt, &err), ORC_OK);
    assert_int_equal(orc_tsmc_sample(&mo, p->prompt, p->n_prompt, 3, &o, p, &err), ORC_OK);
    assert_int_equal(p->n_samples, 3);
    p->samples[1].correct = true;
    char dir[64], path[128];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "rollouts"), 0);
    orc_test_path(path, sizeof path, dir, "rollouts.jsonl");
    assert_int_equal(orc_rollouts_save(&set, path, &err), ORC_OK);
    orc_rollout_set back;
    assert_int_equal(orc_rollouts_load(path, F.gen->cfg.vocab_size, &back, &err), ORC_OK);
    assert_int_equal(back.n_problems, 1);
    assert_int_equal(back.problems[0].n_samples, 3);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(back.problems[0].samples[k].n_ids, p->samples[k].n_ids);
        assert_memory_equal(back.problems[0].samples[k].ids, p->samples[k].ids, (size_t)p->samples[k].n_ids * 4);
        assert_int_equal(back.problems[0].samples[k].correct, k == 1);
        assert_non_null(back.problems[0].samples[k].logp);
        for (int i = 0; i < p->samples[k].n_ids; i++) {
            assert_true(p->samples[k].logp[i] <= 0.0f);
            assert_float_equal(back.problems[0].samples[k].logp[i], p->samples[k].logp[i], 1e-4);
        }
    }
    orc_rollout_set_free(&back);
    /* a logp that is no log-probability, or of the wrong length: an error naming the line */
    char bad[256];
    orc_test_path(bad, sizeof bad, dir, "bad.jsonl");
    FILE *fp = fopen(bad, "w");
    fprintf(fp, "{\"id\":\"a\",\"question\":\"q\",\"gold\":\"1\",\"prompt\":[1,2],\"samples\":"
                "[{\"ids\":[3,4],\"step_end\":[1],\"correct\":true,\"logp\":[-0.5,-0.1]}]}\n"
                "{\"id\":\"b\",\"question\":\"q\",\"gold\":\"1\",\"prompt\":[1,2],\"samples\":"
                "[{\"ids\":[3,4],\"step_end\":[1],\"correct\":true,\"logp\":[-0.5,2.0]}]}\n");
    fclose(fp);
    orc_error_clear(&err);
    assert_int_equal(orc_rollouts_load(bad, F.gen->cfg.vocab_size, &back, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, ":2: sample 0: logp[1]"));
    fp = fopen(bad, "w");
    fprintf(fp, "{\"id\":\"a\",\"question\":\"q\",\"gold\":\"1\",\"prompt\":[1,2],\"samples\":"
                "[{\"ids\":[3,4],\"step_end\":[1],\"correct\":true,\"logp\":[-0.5]}]}\n");
    fclose(fp);
    orc_error_clear(&err);
    assert_int_equal(orc_rollouts_load(bad, F.gen->cfg.vocab_size, &back, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, ":1: sample 0: logp must be"));
    orc_error_clear(&err);
    /* a file for a larger vocabulary: an error naming the line */
    assert_int_equal(orc_rollouts_load(path, 10, &back, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, ":1:"));
    assert_non_null(strstr(err.msg, "another tokenizer"));
    orc_test_dir_remove(dir);
    orc_rollout_set_free(&set);
}

static void test_bad_input(void **state) {
    (void)state;
    orc_error err = {0};
    orc_tsmc_models mo = {F.gen, NULL, F.tok, 160};
    int32_t prompt[3] = {1, 2, 3};
    orc_tsmc_opts o;
    orc_tsmc_opts_default(&o);
    orc_tsmc_answer a;
    o.n_particles = 0;
    assert_int_equal(orc_tsmc_run(&mo, ORC_TSMC_MAJORITY, prompt, 3, &o, &a, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "N = 0"));
    o.n_particles = 2;
    orc_error_clear(&err);
    assert_int_equal(orc_tsmc_run(&mo, ORC_TSMC_SMC, prompt, 3, &o, &a, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "value model"));
    /* a value model for another vocabulary */
    orc_llm_config c = F.gen->cfg;
    c.vocab_size += 10;
    char dir[64];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "tsmc_other"), 0);
    orc_llm *other = orc_llm_create(&c, false, &err);
    assert_int_equal(orc_llm_save(other, dir, &err), ORC_OK);
    orc_llm_free(other);
    orc_value_model *v = orc_value_from_generator(dir, false, false, &err);
    assert_non_null(v);
    mo.value = v;
    orc_error_clear(&err);
    assert_int_equal(orc_tsmc_run(&mo, ORC_TSMC_SMC, prompt, 3, &o, &a, &err), ORC_ESHAPE);
    assert_non_null(strstr(err.msg, "another tokenizer"));
    orc_value_free(v);
    orc_test_dir_remove(dir);
    /* an empty question */
    int32_t *ids = NULL;
    int n = 0;
    orc_error_clear(&err);
    assert_int_equal(orc_tsmc_prompt(F.tok, "", &ids, &n, &err), ORC_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ess),
        cmocka_unit_test(test_resample),
        cmocka_unit_test(test_weighted_majority),
        cmocka_unit_test(test_value_step_logpsi),
        cmocka_unit_test(test_value_loss_definitions),
        cmocka_unit_test(test_value_loss_gradient),
        cmocka_unit_test(test_value_training_learns),
        cmocka_unit_test(test_value_training_mixed_only),
        cmocka_unit_test(test_confidence_input),
        cmocka_unit_test(test_value_confidence_learns),
        cmocka_unit_test(test_value_eval_constant),
        cmocka_unit_test(test_value_training_validation),
        cmocka_unit_test(test_methods_run),
        cmocka_unit_test(test_rollouts_file),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
