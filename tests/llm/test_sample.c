/* The sampler: greedy and its equivalents (top-k 1, a tiny top-p), the
 * repeat penalty's arithmetic and window, min-p / top-k / top-p candidate
 * sets, the draw against softmax over many draws, determinism from the seed,
 * the partial sorts against a full-sort reference on a 32000-id vocabulary,
 * and option validation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "orchard/generate.h"

static orc_sampler_opts plain(float temperature) {
    orc_sampler_opts o;
    orc_sampler_opts_default(&o);
    o.temperature = temperature;
    o.top_k = 0;
    o.top_p = 1.0f;
    o.min_p = 0.0f;
    o.repeat_penalty = 1.0f;
    return o;
}

static void random_logits(float *x, int64_t V, uint64_t seed, float scale) {
    orc_rng r;
    orc_rng_init(&r, seed);
    for (int64_t i = 0; i < V; i++) x[i] = scale * orc_rng_normal(&r);
}

static void test_greedy_and_ties(void **state) {
    (void)state;
    orc_sample_work w;
    assert_int_equal(orc_sample_work_init(&w, 6, NULL), ORC_OK);
    const float x[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, 0.0f};
    orc_sampler_opts o = plain(0.0f);
    for (float u = 0.0f; u < 1.0f; u += 0.1f) assert_int_equal(orc_sample(&o, x, 6, NULL, 0, u, &w), 1);
    assert_int_equal(orc_sample(&o, x, 5, NULL, 0, 0.5f, &w), -1); /* wrong vocabulary */
    orc_sample_work_release(&w);
}

static void test_topk1_and_tiny_topp_are_greedy(void **state) {
    (void)state;
    const int64_t V = 1000;
    float *x = malloc(sizeof(float) * V);
    orc_sample_work w;
    assert_int_equal(orc_sample_work_init(&w, V, NULL), ORC_OK);
    orc_rng r;
    orc_rng_init(&r, 7);
    for (int trial = 0; trial < 20; trial++) {
        random_logits(x, V, 100 + (uint64_t)trial, 2.0f);
        if (trial == 0) x[17] = x[900] = 50.0f; /* a tie at the top goes to the lower id */
        orc_sampler_opts g = plain(0.0f), k1 = plain(1.0f), p0 = plain(1.5f);
        k1.top_k = 1;
        p0.top_p = 1e-6f;
        int32_t want = orc_sample(&g, x, V, NULL, 0, 0.3f, &w);
        if (trial == 0) assert_int_equal(want, 17);
        for (int d = 0; d < 10; d++) {
            float u = orc_rng_uniform(&r);
            assert_int_equal(orc_sample(&k1, x, V, NULL, 0, u, &w), want);
            assert_int_equal(orc_sample(&p0, x, V, NULL, 0, u, &w), want);
        }
    }
    orc_sample_work_release(&w);
    free(x);
}

static void test_repeat_penalty_math(void **state) {
    (void)state;
    const float x[5] = {2.0f, -2.0f, 1.0f, 0.5f, 0.0f};
    float y[5];
    const int32_t prev[4] = {0, 1, 0, 3};
    orc_apply_repeat_penalty(x, y, 5, prev, 4, 2.0f, -1); /* all history; token 0 twice, penalised once */
    const float all[5] = {1.0f, -4.0f, 1.0f, 0.25f, 0.0f};
    for (int i = 0; i < 5; i++) assert_float_equal(y[i], all[i], 0.0f);
    orc_apply_repeat_penalty(x, y, 5, prev, 4, 2.0f, 2); /* only the last two: 0 and 3 */
    const float last2[5] = {1.0f, -2.0f, 1.0f, 0.25f, 0.0f};
    for (int i = 0; i < 5; i++) assert_float_equal(y[i], last2[i], 0.0f);
    orc_apply_repeat_penalty(x, y, 5, prev, 4, 2.0f, 0); /* window 0: off */
    for (int i = 0; i < 5; i++) assert_float_equal(y[i], x[i], 0.0f);
    const int32_t bad[2] = {-5, 99}; /* ids outside the vocabulary are ignored */
    orc_apply_repeat_penalty(x, y, 5, bad, 2, 2.0f, -1);
    for (int i = 0; i < 5; i++) assert_float_equal(y[i], x[i], 0.0f);

    /* Through the sampler: greedy moves off a repeated winner. */
    orc_sample_work w;
    assert_int_equal(orc_sample_work_init(&w, 5, NULL), ORC_OK);
    orc_sampler_opts o = plain(0.0f);
    assert_int_equal(orc_sample(&o, x, 5, prev, 4, 0.5f, &w), 0);
    o.repeat_penalty = 2.0f;
    o.repeat_last_n = -1;
    assert_int_equal(orc_sample(&o, x, 5, prev, 4, 0.5f, &w), 0); /* 2/2 = 1 ties token 2 at 1; lower id wins */
    o.repeat_penalty = 2.5f;
    assert_int_equal(orc_sample(&o, x, 5, prev, 4, 0.5f, &w), 2);
    orc_sample_work_release(&w);
}

/* Frequencies of n draws with u from a seeded stream. */
static void draw_counts(const orc_sampler_opts *o, const float *x, int64_t V, int n, uint64_t seed, int *counts,
                        orc_sample_work *w) {
    orc_rng r;
    orc_rng_init(&r, seed);
    memset(counts, 0, sizeof(int) * (size_t)V);
    for (int i = 0; i < n; i++) {
        int32_t t = orc_sample(o, x, V, NULL, 0, orc_rng_uniform(&r), w);
        assert_true(t >= 0 && t < V);
        counts[t]++;
    }
}

static void softmax_ref(const float *x, int64_t V, float temp, double *p) {
    double mx = -INFINITY, z = 0.0;
    for (int64_t i = 0; i < V; i++) mx = fmax(mx, x[i]);
    for (int64_t i = 0; i < V; i++) z += (p[i] = exp((x[i] - mx) / temp));
    for (int64_t i = 0; i < V; i++) p[i] /= z;
}

static void test_distribution_matches_softmax(void **state) {
    (void)state;
    enum { V = 8, N = 40000 };
    const float x[V] = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, 1.5f, -2.0f, 0.7f};
    orc_sample_work w;
    assert_int_equal(orc_sample_work_init(&w, V, NULL), ORC_OK);
    int counts[V];
    double p[V];
    const float temps[2] = {1.0f, 2.0f};
    for (int k = 0; k < 2; k++) {
        orc_sampler_opts o = plain(temps[k]);
        draw_counts(&o, x, V, N, 42, counts, &w);
        softmax_ref(x, V, temps[k], p);
        for (int i = 0; i < V; i++) assert_true(fabs((double)counts[i] / N - p[i]) < 0.012);
    }
    /* top-k 3: the three largest, renormalised. */
    orc_sampler_opts o = plain(1.0f);
    o.top_k = 3;
    draw_counts(&o, x, V, N, 43, counts, &w);
    const float top3[3] = {2.0f, 1.5f, 1.0f};
    const int top3_id[3] = {3, 5, 0};
    double q[3];
    softmax_ref(top3, 3, 1.0f, q);
    int kept = 0;
    for (int i = 0; i < 3; i++) {
        kept += counts[top3_id[i]];
        assert_true(fabs((double)counts[top3_id[i]] / N - q[i]) < 0.012);
    }
    assert_int_equal(kept, N);
    orc_sample_work_release(&w);
}

static void test_topp_and_minp_sets(void **state) {
    (void)state;
    enum { V = 4, N = 20000 };
    /* Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1. */
    const float x[V] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    orc_sample_work w;
    assert_int_equal(orc_sample_work_init(&w, V, NULL), ORC_OK);
    int counts[V];
    orc_sampler_opts o = plain(1.0f);
    o.top_p = 0.7f; /* 0.5 < 0.7 <= 0.8: tokens 0 and 1 */
    draw_counts(&o, x, V, N, 5, counts, &w);
    assert_int_equal(counts[2] + counts[3], 0);
    assert_true(fabs((double)counts[0] / N - 0.625) < 0.015);
    o.top_p = 1.0f;
    o.min_p = 0.35f; /* keep p >= 0.175: tokens 0 and 1 */
    draw_counts(&o, x, V, N, 6, counts, &w);
    assert_int_equal(counts[2] + counts[3], 0);
    assert_true(fabs((double)counts[1] / N - 0.375) < 0.015);
    o.min_p = 0.25f; /* keep p >= 0.125: tokens 0, 1, 2 */
    draw_counts(&o, x, V, N, 7, counts, &w);
    assert_int_equal(counts[3], 0);
    assert_true(counts[2] > 0);
    o.top_p = 0.6f; /* both: top-p's cut is the shorter one */
    draw_counts(&o, x, V, N, 8, counts, &w);
    assert_int_equal(counts[2] + counts[3], 0);
    orc_sample_work_release(&w);
}

/* The same cut-offs with a full sort, the obvious way. */
static const float *ref_val;
static int ref_cmp(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (ref_val[i] != ref_val[j]) return ref_val[i] > ref_val[j] ? -1 : 1;
    return i < j ? -1 : 1;
}

static int32_t ref_sample(const orc_sampler_opts *o, const float *x, int64_t V, float u) {
    float *e = malloc(sizeof(float) * V);
    int32_t *idx = malloc(sizeof(int32_t) * V);
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++) mx = fmaxf(mx, x[i]);
    for (int64_t i = 0; i < V; i++) {
        e[i] = expf((x[i] - mx) * (1.0f / o->temperature));
        idx[i] = (int32_t)i;
    }
    ref_val = e;
    qsort(idx, (size_t)V, sizeof *idx, ref_cmp);
    int64_t n = o->top_k > 0 && o->top_k < V ? o->top_k : V;
    double z = 0.0;
    for (int64_t i = 0; i < n; i++) z += e[idx[i]];
    int64_t m = 0;
    while (m < n && e[idx[m]] >= o->min_p) m++;
    int64_t np = n;
    double cum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        cum += e[idx[i]];
        if (cum >= (double)o->top_p * z) {
            np = i + 1;
            break;
        }
    }
    n = m < np ? m : np;
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) total += e[idx[i]];
    double r = (double)u * total, c = 0.0;
    int32_t pick = idx[n - 1];
    for (int64_t i = 0; i < n; i++) {
        c += e[idx[i]];
        if (r < c) {
            pick = idx[i];
            break;
        }
    }
    free(e);
    free(idx);
    return pick;
}

static void test_partial_sort_matches_full_sort(void **state) {
    (void)state;
    const int64_t V = 32000;
    float *x = malloc(sizeof(float) * V);
    orc_sample_work w;
    assert_int_equal(orc_sample_work_init(&w, V, NULL), ORC_OK);
    orc_rng r;
    orc_rng_init(&r, 11);
    const struct {
        int64_t k;
        float p, minp, temp, scale;
    } cases[] = {
        {0, 0.9f, 0.0f, 1.0f, 3.0f},  {0, 0.5f, 0.0f, 0.7f, 1.0f},   {50, 0.8f, 0.0f, 1.0f, 2.0f},
        {0, 0.95f, 0.01f, 1.0f, 2.0f}, {200, 0.99f, 0.02f, 1.3f, 2.0f}, {0, 0.999f, 0.0f, 1.0f, 0.2f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        random_logits(x, V, 300 + c, cases[c].scale);
        x[5] = x[6]; /* a tie inside the nucleus */
        orc_sampler_opts o = plain(cases[c].temp);
        o.top_k = cases[c].k;
        o.top_p = cases[c].p;
        o.min_p = cases[c].minp;
        for (int d = 0; d < 20; d++) {
            float u = orc_rng_uniform(&r);
            assert_int_equal(orc_sample(&o, x, V, NULL, 0, u, &w), ref_sample(&o, x, V, u));
        }
    }
    orc_sample_work_release(&w);
    free(x);
}

static void test_seed_determinism(void **state) {
    (void)state;
    const int64_t V = 500;
    float *x = malloc(sizeof(float) * V);
    random_logits(x, V, 9, 1.0f);
    orc_sample_work w;
    assert_int_equal(orc_sample_work_init(&w, V, NULL), ORC_OK);
    orc_sampler_opts o;
    orc_sampler_opts_default(&o);
    o.temperature = 1.0f;
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        orc_rng r;
        orc_rng_init(&r, run == 2 ? 1234 : 1233);
        int32_t *out = run == 0 ? a : run == 1 ? b : c;
        for (int i = 0; i < 64; i++) out[i] = orc_sample(&o, x, V, out, (size_t)i, orc_rng_uniform(&r), &w);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_true(memcmp(a, c, sizeof a) != 0);
    orc_sample_work_release(&w);
    free(x);
}

static void test_option_validation(void **state) {
    (void)state;
    orc_sampler_opts o;
    orc_sampler_opts_default(&o);
    orc_error err = {0};
    assert_int_equal(orc_sampler_opts_validate(&o, &err), ORC_OK);
    o.temperature = -1.0f;
    assert_int_equal(orc_sampler_opts_validate(&o, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "temperature"));
    orc_sampler_opts_default(&o);
    o.top_p = 0.0f;
    orc_error_clear(&err);
    assert_int_equal(orc_sampler_opts_validate(&o, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "top_p"));
    orc_sampler_opts_default(&o);
    o.min_p = 1.5f;
    orc_error_clear(&err);
    assert_int_equal(orc_sampler_opts_validate(&o, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "min_p"));
    orc_sampler_opts_default(&o);
    o.repeat_penalty = 0.0f;
    orc_error_clear(&err);
    assert_int_equal(orc_sampler_opts_validate(&o, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "repeat_penalty"));
    orc_sampler_opts_default(&o);
    o.top_k = -2;
    orc_error_clear(&err);
    assert_int_equal(orc_sampler_opts_validate(&o, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "top_k"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_and_ties),
        cmocka_unit_test(test_topk1_and_tiny_topp_are_greedy),
        cmocka_unit_test(test_repeat_penalty_math),
        cmocka_unit_test(test_distribution_matches_softmax),
        cmocka_unit_test(test_topp_and_minp_sets),
        cmocka_unit_test(test_partial_sort_matches_full_sort),
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_option_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
