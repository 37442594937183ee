/* orc_attention: values against a naive double-precision reference (plain,
 * causal, grouped-query, causal with S > T and S < T, masks with -INFINITY,
 * fully hidden rows, shapes that span several key/query blocks, strided
 * q/k/v views), gradients of q, k and v by finite differences, argument
 * errors, and the same bits for 1 and 3 threads. */
#include "gradcheck.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

typedef struct attn_case {
    int64_t B, T, S, Hq, Hkv, D, Dv;
    bool causal;
    int mask_kind;   /* 0 none, 1 [T, S], 2 [B, T, S] */
    float scale;
    orc_tensor *mask;
} attn_case;

/* Mask with a few -INFINITY entries; row 1 of batch 0 (or of every batch for
 * a shared mask) is hidden entirely. */
static orc_tensor *make_mask(orc_arena *a, const attn_case *c, uint64_t seed) {
    const int64_t nb = c->mask_kind == 2 ? c->B : 1;
    orc_tensor *m = c->mask_kind == 2 ? gc_rand(a, 3, ORC_SHAPE(c->B, c->T, c->S), seed, -1, 1, false)
                                      : gc_rand(a, 2, ORC_SHAPE(c->T, c->S), seed, -1, 1, false);
    float *md = orc_f32(m);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t t = 0; t < c->T; t++)
            for (int64_t s = 0; s < c->S; s++) {
                float *e = md + (b * c->T + t) * c->S + s;
                if ((t * 3 + s * 5 + b) % 4 == 0) *e = -INFINITY;
                if (t == 1 && b == 0) *e = -INFINITY;
            }
    return m;
}

static orc_attn_opts opts_of(const attn_case *c) {
    return (orc_attn_opts){.causal = c->causal, .mask = c->mask, .scale = c->scale};
}

/* out [B, T, Hq, Dv] in double from contiguous copies of the inputs. */
static void reference(const attn_case *c, const orc_tensor *q, const orc_tensor *k, const orc_tensor *v,
                      double *out) {
    float *qv = malloc(sizeof(float) * (size_t)q->numel), *kv = malloc(sizeof(float) * (size_t)k->numel);
    float *vv = malloc(sizeof(float) * (size_t)(v->numel + 1));
    double *w = malloc(sizeof(double) * (size_t)(c->S + 1));
    orc_read_f32(q, qv);
    orc_read_f32(k, kv);
    orc_read_f32(v, vv);
    const double scale = c->scale != 0 ? c->scale : 1.0 / sqrt((double)c->D);
    const int64_t group = c->Hq / c->Hkv;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t = 0; t < c->T; t++)
            for (int64_t h = 0; h < c->Hq; h++) {
                const int64_t hk = h / group;
                double mx = -INFINITY;
                for (int64_t s = 0; s < c->S; s++) {
                    double sc = 0;
                    for (int64_t i = 0; i < c->D; i++)
                        sc += (double)qv[((b * c->T + t) * c->Hq + h) * c->D + i] *
                              kv[((b * c->S + s) * c->Hkv + hk) * c->D + i];
                    sc *= scale;
                    if (c->mask) sc += orc_f32(c->mask)[((c->mask_kind == 2 ? b : 0) * c->T + t) * c->S + s];
                    if (c->causal && s > t + c->S - c->T) sc = -INFINITY;
                    w[s] = sc;
                    if (sc > mx) mx = sc;
                }
                double *o = out + ((b * c->T + t) * c->Hq + h) * c->Dv;
                for (int64_t j = 0; j < c->Dv; j++) o[j] = 0;
                if (mx == -INFINITY) continue;
                double sum = 0;
                for (int64_t s = 0; s < c->S; s++) sum += (w[s] = exp(w[s] - mx));
                for (int64_t s = 0; s < c->S; s++)
                    for (int64_t j = 0; j < c->Dv; j++)
                        o[j] += w[s] / sum * vv[((b * c->S + s) * c->Hkv + hk) * c->Dv + j];
            }
    free(qv), free(kv), free(vv), free(w);
}

static void check_values(attn_case c, uint64_t seed) {
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *q = gc_rand(a, 4, ORC_SHAPE(c.B, c.T, c.Hq, c.D), seed, -1.5f, 1.5f, false);
    orc_tensor *k = gc_rand(a, 4, ORC_SHAPE(c.B, c.S, c.Hkv, c.D), seed + 1, -1.5f, 1.5f, false);
    orc_tensor *v = gc_rand(a, 4, ORC_SHAPE(c.B, c.S, c.Hkv, c.Dv), seed + 2, -1, 1, false);
    if (c.mask_kind) c.mask = make_mask(a, &c, seed + 3);
    orc_attn_opts o = opts_of(&c);
    orc_tensor *y = orc_attention(&ctx, q, k, v, &o);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(y->ndim, 4);
    assert_int_equal(y->shape[0], c.B);
    assert_int_equal(y->shape[1], c.T);
    assert_int_equal(y->shape[2], c.Hq);
    assert_int_equal(y->shape[3], c.Dv);
    double *ref = malloc(sizeof(double) * (size_t)(y->numel + 1));
    reference(&c, q, k, v, ref);
    for (int64_t i = 0; i < y->numel; i++) {
        assert_false(isnan(orc_f32(y)[i]));
        if (fabs(orc_f32(y)[i] - ref[i]) > 2e-5)
            fail_msg("attention value %lld: got %.7g, want %.7g", (long long)i, orc_f32(y)[i], ref[i]);
    }
    /* The same with a recorded graph (the log-sum-exp path). */
    q->requires_grad = true;
    orc_tensor *y2 = orc_attention(&ctx, q, k, v, &o);
    GC_ASSERT_OK(&ctx);
    assert_memory_equal(orc_f32(y), orc_f32(y2), sizeof(float) * (size_t)y->numel);
    free(ref);
    orc_arena_destroy(a);
}

static void test_values(void **state) {
    (void)state;
    /*            B  T    S    Hq Hkv D   Dv  causal mask scale */
    check_values((attn_case){2, 5, 7, 2, 2, 6, 6, false, 0, 0, NULL}, 10);      /* plain, S != T */
    check_values((attn_case){2, 5, 5, 3, 3, 6, 4, true, 0, 0, NULL}, 20);       /* causal, Dv != D */
    check_values((attn_case){2, 5, 5, 4, 2, 8, 5, true, 0, 0.3f, NULL}, 30);    /* GQA, explicit scale */
    check_values((attn_case){1, 3, 8, 4, 2, 6, 6, true, 0, 0, NULL}, 40);       /* S > T: KV-cache offset */
    check_values((attn_case){2, 5, 3, 2, 1, 6, 6, true, 0, 0, NULL}, 50);       /* S < T: first rows see nothing */
    check_values((attn_case){2, 5, 7, 2, 2, 6, 6, false, 1, 0, NULL}, 60);      /* shared mask with -inf */
    check_values((attn_case){2, 5, 7, 4, 2, 6, 6, true, 2, 0, NULL}, 70);       /* per-batch mask + causal */
    check_values((attn_case){1, 130, 150, 2, 1, 16, 8, true, 0, 0, NULL}, 80);  /* several blocks */
    check_values((attn_case){2, 70, 129, 2, 2, 8, 8, false, 2, 0, NULL}, 90);   /* several blocks + mask */
    check_values((attn_case){1, 1, 67, 4, 1, 8, 8, true, 0, 0, NULL}, 100);     /* one decode step */
}

static void test_hidden_row_is_zero(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    attn_case c = {2, 4, 6, 2, 1, 4, 4, false, 1, 0, NULL};
    c.mask = make_mask(a, &c, 5); /* row t = 1 hidden in every batch */
    orc_tensor *q = gc_rand(a, 4, ORC_SHAPE(2, 4, 2, 4), 1, -1, 1, true);
    orc_tensor *k = gc_rand(a, 4, ORC_SHAPE(2, 6, 1, 4), 2, -1, 1, true);
    orc_tensor *v = gc_rand(a, 4, ORC_SHAPE(2, 6, 1, 4), 3, -1, 1, true);
    orc_attn_opts o = opts_of(&c);
    orc_tensor *y = orc_attention(&ctx, q, k, v, &o);
    GC_ASSERT_OK(&ctx);
    float *w = malloc(sizeof(float) * (size_t)y->numel);
    for (int64_t i = 0; i < y->numel; i++) w[i] = 1.0f;
    assert_int_equal(orc_backward_with(&ctx, y, w), ORC_OK);
    for (int64_t b = 0; b < 2; b++)
        for (int64_t h = 0; h < 2; h++)
            for (int64_t j = 0; j < 4; j++) {
                const int64_t i = ((b * 4 + 1) * 2 + h) * 4 + j;
                assert_true(orc_f32(y)[i] == 0.0f);
                assert_true(q->grad[i] == 0.0f);
            }
    for (int64_t i = 0; i < y->numel; i++) assert_false(isnan(orc_f32(y)[i]));
    for (int64_t i = 0; i < q->numel; i++) assert_false(isnan(q->grad[i]));
    for (int64_t i = 0; i < k->numel; i++) assert_false(isnan(k->grad[i]) || isnan(v->grad[i]));
    free(w);
    orc_arena_destroy(a);
}

/* ---- gradients ---------------------------------------------------------------- */

static orc_tensor *build_attn(orc_ctx *ctx, orc_tensor **in, void *u) {
    const attn_case *c = u;
    orc_attn_opts o = opts_of(c);
    return orc_attention(ctx, in[0], in[1], in[2], &o);
}

/* q, k, v sliced out of one [B, T, Hq + 2 Hkv, D] projection (strided views). */
static orc_tensor *build_fused(orc_ctx *ctx, orc_tensor **in, void *u) {
    const attn_case *c = u;
    orc_tensor *q = orc_slice(ctx, in[0], 2, 0, c->Hq);
    orc_tensor *k = orc_slice(ctx, in[0], 2, c->Hq, c->Hkv);
    orc_tensor *v = orc_slice(ctx, in[0], 2, c->Hq + c->Hkv, c->Hkv);
    orc_attn_opts o = opts_of(c);
    return orc_attention(ctx, q, k, v, &o);
}

static void check_grads(const char *name, attn_case c, uint64_t seed, int max_checks) {
    orc_arena *a = orc_arena_create(0);
    orc_tensor *in[3] = {gc_rand(a, 4, ORC_SHAPE(c.B, c.T, c.Hq, c.D), seed, -1, 1, true),
                         gc_rand(a, 4, ORC_SHAPE(c.B, c.S, c.Hkv, c.D), seed + 1, -1, 1, true),
                         gc_rand(a, 4, ORC_SHAPE(c.B, c.S, c.Hkv, c.Dv), seed + 2, -1, 1, true)};
    if (c.mask_kind) c.mask = make_mask(a, &c, seed + 3);
    gc_check(name, build_attn, 3, in, &c, (gc_opts){.max_checks = max_checks});
    orc_arena_destroy(a);
}

static void test_gradients(void **state) {
    (void)state;
    check_grads("plain", (attn_case){2, 5, 5, 2, 2, 6, 6, false, 0, 0, NULL}, 11, 60);
    check_grads("plain S=7", (attn_case){2, 5, 7, 2, 2, 6, 5, false, 0, 0, NULL}, 12, 60);
    check_grads("causal", (attn_case){2, 5, 5, 2, 2, 6, 6, true, 0, 0, NULL}, 13, 60);
    check_grads("gqa causal S>T", (attn_case){2, 5, 7, 4, 2, 6, 6, true, 0, 0, NULL}, 14, 60);
    check_grads("causal S<T", (attn_case){2, 5, 3, 2, 1, 6, 6, true, 0, 0, NULL}, 15, 60);
    check_grads("mask", (attn_case){2, 5, 7, 2, 1, 6, 6, false, 2, 0.7f, NULL}, 16, 60);
    check_grads("blocks", (attn_case){1, 70, 75, 2, 1, 4, 3, true, 1, 0, NULL}, 17, 40);

    orc_arena *a = orc_arena_create(0);
    attn_case c = {2, 5, 5, 4, 2, 6, 6, true, 0, 0, NULL};
    orc_tensor *in[1] = {gc_rand(a, 4, ORC_SHAPE(2, 5, 8, 6), 18, -1, 1, true)};
    gc_check("fused views", build_fused, 1, in, &c, (gc_opts){.max_checks = 120});
    orc_arena_destroy(a);
}

/* Strided views give the same forward values as contiguous copies. */
static void test_strided_views(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    attn_case c = {2, 70, 70, 4, 2, 8, 8, true, 0, 0, NULL};
    orc_tensor *qkv = gc_rand(a, 4, ORC_SHAPE(2, 70, 8, 8), 3, -1, 1, false);
    orc_tensor *in[1] = {qkv};
    orc_tensor *y = build_fused(&ctx, in, &c);
    GC_ASSERT_OK(&ctx);
    orc_tensor *q = orc_contiguous(&ctx, orc_slice(&ctx, qkv, 2, 0, 4));
    orc_tensor *k = orc_contiguous(&ctx, orc_slice(&ctx, qkv, 2, 4, 2));
    orc_tensor *v = orc_contiguous(&ctx, orc_slice(&ctx, qkv, 2, 6, 2));
    orc_attn_opts o = opts_of(&c);
    orc_tensor *y2 = orc_attention(&ctx, q, k, v, &o);
    GC_ASSERT_OK(&ctx);
    assert_memory_equal(orc_f32(y), orc_f32(y2), sizeof(float) * (size_t)y->numel);
    orc_arena_destroy(a);
}

/* ---- errors ---------------------------------------------------------------------- */

static void expect_error(const int64_t *qs, const int64_t *ks, const int64_t *vs, int mask_nd,
                         const int64_t *ms, orc_status code, const char *needle) {
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *q = gc_rand(a, 4, qs, 1, -1, 1, false);
    orc_tensor *k = gc_rand(a, 4, ks, 2, -1, 1, false);
    orc_tensor *v = gc_rand(a, 4, vs, 3, -1, 1, false);
    orc_attn_opts o = {.causal = true, .mask = mask_nd ? gc_rand(a, mask_nd, ms, 4, -1, 1, false) : NULL};
    assert_null(orc_attention(&ctx, q, k, v, &o));
    assert_int_equal(ctx.err.code, code);
    assert_non_null(strstr(ctx.err.msg, "attention"));
    if (needle && !strstr(ctx.err.msg, needle)) fail_msg("message '%s' lacks '%s'", ctx.err.msg, needle);
    orc_arena_destroy(a);
}

static void test_errors(void **state) {
    (void)state;
    /* Hq = 3 not a multiple of Hkv = 2 */
    expect_error(ORC_SHAPE(1, 4, 3, 8), ORC_SHAPE(1, 4, 2, 8), ORC_SHAPE(1, 4, 2, 8), 0, NULL, ORC_ESHAPE,
                 "[1, 4, 3, 8]");
    /* head dims of q and k differ */
    expect_error(ORC_SHAPE(1, 4, 2, 8), ORC_SHAPE(1, 4, 2, 6), ORC_SHAPE(1, 4, 2, 6), 0, NULL, ORC_ESHAPE, "D");
    /* k and v lengths differ */
    expect_error(ORC_SHAPE(1, 4, 2, 8), ORC_SHAPE(1, 4, 2, 8), ORC_SHAPE(1, 5, 2, 8), 0, NULL, ORC_ESHAPE, NULL);
    /* batch differs */
    expect_error(ORC_SHAPE(2, 4, 2, 8), ORC_SHAPE(1, 4, 2, 8), ORC_SHAPE(1, 4, 2, 8), 0, NULL, ORC_ESHAPE, NULL);
    /* mask [T, S + 1] and [B + 1, T, S] */
    expect_error(ORC_SHAPE(1, 4, 2, 8), ORC_SHAPE(1, 4, 2, 8), ORC_SHAPE(1, 4, 2, 8), 2, ORC_SHAPE(4, 5), ORC_ESHAPE,
                 "[4, 5]");
    expect_error(ORC_SHAPE(1, 4, 2, 8), ORC_SHAPE(1, 4, 2, 8), ORC_SHAPE(1, 4, 2, 8), 3, ORC_SHAPE(2, 4, 4),
                 ORC_ESHAPE, "mask");

    /* three-dimensional q */
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *q3 = gc_rand(a, 3, ORC_SHAPE(4, 2, 8), 1, -1, 1, false);
    orc_tensor *k = gc_rand(a, 4, ORC_SHAPE(1, 4, 2, 8), 1, -1, 1, false);
    assert_null(orc_attention(&ctx, q3, k, k, NULL));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    orc_arena_destroy(a);
}

/* ---- thread-count determinism ------------------------------------------------------ */

typedef struct run_out {
    float *y, *gq, *gk, *gv;
} run_out;

static void run_threads(int threads, run_out *r) {
    omp_set_num_threads(threads);
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    attn_case c = {2, 100, 110, 4, 2, 16, 12, true, 2, 0, NULL};
    c.mask = make_mask(a, &c, 9);
    orc_tensor *q = gc_rand(a, 4, ORC_SHAPE(2, 100, 4, 16), 1, -1, 1, true);
    orc_tensor *k = gc_rand(a, 4, ORC_SHAPE(2, 110, 2, 16), 2, -1, 1, true);
    orc_tensor *v = gc_rand(a, 4, ORC_SHAPE(2, 110, 2, 12), 3, -1, 1, true);
    orc_attn_opts o = opts_of(&c);
    orc_tensor *y = orc_attention(&ctx, q, k, v, &o);
    GC_ASSERT_OK(&ctx);
    float *w = malloc(sizeof(float) * (size_t)y->numel);
    for (int64_t i = 0; i < y->numel; i++) w[i] = (float)((i * 7919) % 17) / 8.0f - 1.0f;
    assert_int_equal(orc_backward_with(&ctx, y, w), ORC_OK);
    r->y = malloc(sizeof(float) * (size_t)y->numel);
    r->gq = malloc(sizeof(float) * (size_t)q->numel);
    r->gk = malloc(sizeof(float) * (size_t)k->numel);
    r->gv = malloc(sizeof(float) * (size_t)v->numel);
    memcpy(r->y, orc_f32(y), sizeof(float) * (size_t)y->numel);
    memcpy(r->gq, q->grad, sizeof(float) * (size_t)q->numel);
    memcpy(r->gk, k->grad, sizeof(float) * (size_t)k->numel);
    memcpy(r->gv, v->grad, sizeof(float) * (size_t)v->numel);
    free(w);
    orc_arena_destroy(a);
}

static void test_thread_determinism(void **state) {
    (void)state;
    const int saved = omp_get_max_threads();
    run_out r1, r3;
    run_threads(1, &r1);
    run_threads(3, &r3);
    omp_set_num_threads(saved);
    assert_memory_equal(r1.y, r3.y, sizeof(float) * 2 * 100 * 4 * 12);
    assert_memory_equal(r1.gq, r3.gq, sizeof(float) * 2 * 100 * 4 * 16);
    assert_memory_equal(r1.gk, r3.gk, sizeof(float) * 2 * 110 * 2 * 16);
    assert_memory_equal(r1.gv, r3.gv, sizeof(float) * 2 * 110 * 2 * 12);
    free(r1.y), free(r1.gq), free(r1.gk), free(r1.gv);
    free(r3.y), free(r3.gq), free(r3.gk), free(r3.gv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_hidden_row_is_zero),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_strided_views),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_thread_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
