/* The MoE FFN (orchard/moe.h): token-choice routing semantics (top-k,
 * renormalised gates, rank-first capacity, drops), expert-choice routing,
 * finite-difference gradients of the routing gates, the grouped experts,
 * the auxiliary losses and the whole layer for both routers, parity with the
 * dense SwiGLU FFN, bit-identical results for 1 and 3 threads, and the LM
 * with MoE layers: config.json keys, checkpoints, router losses and stats. */
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "gradcheck.h"
#include "orchard/llm.h"
#include "orchard/moe.h"
#include "testdir.h"

static orc_tensor *wrap_f32(orc_arena *a, int64_t n0, int64_t n1, const float *v) {
    orc_tensor *t = orc_tensor_new(a, ORC_F32, 2, ORC_SHAPE(n0, n1), NULL);
    memcpy(orc_f32(t), v, sizeof(float) * (size_t)(n0 * n1));
    return t;
}

/* ---- routing semantics ---------------------------------------------------------- */

static void test_token_choice_capacity(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    /* 4 tokens, 3 experts, top-2, capacity ceil(4 * 0.75 / 3) = 1. Token 0
     * and 1 both prefer expert 0; token 2 prefers 1 then 0; token 3 prefers
     * 2 then 1. Rank 0 first: t0 -> e0, t1 -> e0 dropped (full), t2 -> e1,
     * t3 -> e2; rank 1: t0 -> e1 dropped, t1 -> e1 dropped, t2 -> e0
     * dropped, t3 -> e1 dropped (t1 -> e2 too). */
    const float lg[] = {3, 2, 0, 3, 1, 2, 2, 3, 0, 0, 1, 3};
    orc_tensor *logits = wrap_f32(a, 4, 3, lg);
    orc_moe_opts o = {ORC_MOE_TOKEN_CHOICE, 3, 2, 0.75, 0};
    orc_moe_plan *pl = NULL;
    orc_tensor *g = orc_moe_route(&ctx, logits, &o, &pl);
    GC_ASSERT_OK(&ctx);
    assert_non_null(g);
    assert_int_equal(pl->capacity, 1);
    assert_int_equal(pl->n_slots, 3);
    assert_int_equal(pl->offsets[1], 1);
    assert_int_equal(pl->offsets[2], 2);
    assert_int_equal(pl->offsets[3], 3);
    assert_int_equal(orc_i32(pl->token)[0], 0);
    assert_int_equal(orc_i32(pl->token)[1], 2);
    assert_int_equal(orc_i32(pl->token)[2], 3);
    assert_int_equal(pl->stats.dropped, 5);
    assert_int_equal(pl->stats.assignments, 8);
    /* Gate of t0's expert 0: p0 / (p0 + p1), renormalised before dropping. */
    double e0 = exp(3), e1 = exp(2), e2 = exp(0);
    assert_float_equal(orc_f32(g)[0], e0 / (e0 + e1), 1e-6);
    (void)e2;
    /* Large capacity keeps everything: 8 slots, gates of a token sum to 1. */
    o.capacity_factor = 10;
    g = orc_moe_route(&ctx, logits, &o, &pl);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(pl->n_slots, 8);
    assert_int_equal(pl->stats.dropped, 0);
    double sum[4] = {0};
    for (int64_t s = 0; s < 8; s++) sum[orc_i32(pl->token)[s]] += orc_f32(g)[s];
    for (int t = 0; t < 4; t++) assert_float_equal(sum[t], 1.0, 1e-6);
    /* Groups of 2 tokens: capacity ceil(2 * 0.75 / 3) = 1 per group. */
    o.capacity_factor = 0.75;
    o.group_size = 2;
    g = orc_moe_route(&ctx, logits, &o, &pl);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(pl->n_groups, 2);
    /* group {0,1}: t0 -> e0, t1 -> e0 dropped, then t0 -> e1, t1 -> e2;
       group {2,3}: t2 -> e1, t3 -> e2, t2 -> e0, t3 -> e1 dropped. */
    assert_int_equal(pl->n_slots, 6);
    assert_int_equal(pl->stats.dropped, 2);
    /* Bad options are errors naming the key. */
    o.top_k = 4;
    assert_null(orc_moe_route(&ctx, logits, &o, &pl));
    assert_non_null(strstr(ctx.err.msg, "moe_top_k"));
    orc_arena_destroy(a);
}

static void test_expert_choice_routing(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *logits = gc_rand(a, 2, ORC_SHAPE(10, 4), 7, -2, 2, false);
    orc_moe_opts o = {ORC_MOE_EXPERT_CHOICE, 4, 0, 1.2, 0};
    orc_moe_plan *pl = NULL;
    orc_tensor *g = orc_moe_route(&ctx, logits, &o, &pl);
    GC_ASSERT_OK(&ctx);
    assert_int_equal(pl->capacity, 3); /* ceil(10 * 1.2 / 4) */
    assert_int_equal(pl->n_slots, 12);
    for (int64_t e = 0; e < 4; e++) {
        /* Every chosen token's score is >= every unchosen token's. */
        float min_in = 2, max_out = -1;
        bool chosen[10] = {0};
        for (int64_t s = pl->offsets[e]; s < pl->offsets[e + 1]; s++) {
            int32_t t = orc_i32(pl->token)[s];
            if (s > pl->offsets[e]) assert_true(t > orc_i32(pl->token)[s - 1]); /* token order */
            chosen[t] = true;
            float p = pl->probs[t * 4 + e];
            assert_float_equal(orc_f32(g)[s], p, 0);
            if (p < min_in) min_in = p;
        }
        for (int t = 0; t < 10; t++)
            if (!chosen[t] && pl->probs[t * 4 + e] > max_out) max_out = pl->probs[t * 4 + e];
        assert_true(min_in >= max_out);
    }
    int64_t hit[10] = {0};
    for (int64_t s = 0; s < 12; s++) hit[orc_i32(pl->token)[s]]++;
    int64_t none = 0;
    for (int t = 0; t < 10; t++) none += hit[t] == 0;
    assert_int_equal(pl->stats.dropped, none);
    orc_arena_destroy(a);
}

/* ---- gradients -------------------------------------------------------------------- */

typedef struct route_case {
    orc_moe_opts o;
    int what; /* 0 gates, 1 balance loss, 2 z loss */
} route_case;

static orc_tensor *build_route(orc_ctx *c, orc_tensor **in, void *u) {
    const route_case *rc = u;
    orc_moe_plan *pl = NULL;
    orc_tensor *g = orc_moe_route(c, in[0], &rc->o, &pl);
    if (rc->what == 0) return g;
    if (rc->what == 1) return orc_moe_balance_loss(c, in[0], pl);
    return orc_moe_z_loss(c, in[0]);
}

/* Logits whose per-token order is well separated so a perturbation of
 * 1e-3 never changes the top-k or the capacity decisions. */
static orc_tensor *separated_logits(orc_arena *a, int64_t N, int64_t E, uint64_t seed) {
    orc_tensor *t = gc_rand(a, 2, ORC_SHAPE(N, E), seed, -0.2f, 0.2f, true);
    for (int64_t n = 0; n < N; n++)
        for (int64_t e = 0; e < E; e++) orc_f32(t)[n * E + e] += 0.5f * (float)((e * 3 + n * 5) % E);
    return t;
}

static void test_route_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *lg = separated_logits(a, 9, 4, 3);
    route_case cases[] = {
        {{ORC_MOE_TOKEN_CHOICE, 4, 2, 1.0, 0}, 0}, {{ORC_MOE_TOKEN_CHOICE, 4, 1, 1.0, 0}, 0},
        {{ORC_MOE_TOKEN_CHOICE, 4, 3, 2.0, 4}, 0}, {{ORC_MOE_EXPERT_CHOICE, 4, 0, 1.5, 0}, 0},
        {{ORC_MOE_EXPERT_CHOICE, 4, 0, 2.0, 5}, 0}, {{ORC_MOE_TOKEN_CHOICE, 4, 2, 1.0, 0}, 1},
        {{ORC_MOE_TOKEN_CHOICE, 4, 2, 1.0, 4}, 1}, {{ORC_MOE_TOKEN_CHOICE, 4, 2, 1.0, 0}, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "moe route case %zu", i);
        gc_check(name, build_route, 1, &lg, &cases[i], (gc_opts){.eps = 1e-3});
    }
    orc_arena_destroy(a);
}

static orc_tensor *build_experts(orc_ctx *c, orc_tensor **in, void *u) {
    return orc_moe_experts(c, in[0], u, in[1], in[2], in[3]);
}

static void test_experts_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    int64_t off[] = {0, 3, 3, 7, 8}; /* an expert with no rows */
    orc_tensor *in[4] = {gc_rand(a, 2, ORC_SHAPE(8, 5), 1, -1, 1, true),
                         gc_rand(a, 3, ORC_SHAPE(4, 6, 5), 2, -1, 1, true),
                         gc_rand(a, 3, ORC_SHAPE(4, 6, 5), 3, -1, 1, true),
                         gc_rand(a, 3, ORC_SHAPE(4, 5, 6), 4, -1, 1, true)};
    gc_check("moe experts", build_experts, 4, in, off, (gc_opts){0});
    /* Bad offsets are an error. */
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    int64_t bad[] = {0, 3, 2, 7, 8};
    assert_null(orc_moe_experts(&ctx, in[0], bad, in[1], in[2], in[3]));
    assert_non_null(strstr(ctx.err.msg, "offsets"));
    orc_arena_destroy(a);
}

/* Combine alone: gates and expert outputs as free inputs over a fixed plan. */
static orc_tensor *build_combine(orc_ctx *c, orc_tensor **in, void *u) {
    route_case *rc = u;
    orc_moe_plan *pl = NULL;
    orc_tensor *lg = separated_logits(c->arena, 6, 3, 11);
    lg->requires_grad = false;
    if (!orc_moe_route(c, lg, &rc->o, &pl)) return NULL;
    return orc_moe_combine(c, in[0], in[1], pl);
}

static void test_combine_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    route_case rc = {{ORC_MOE_TOKEN_CHOICE, 3, 2, 0.9, 0}, 0}; /* capacity 2 of 4 wanted: some tokens keep one */
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_moe_plan *pl = NULL;
    orc_tensor *lg = separated_logits(a, 6, 3, 11);
    lg->requires_grad = false;
    assert_non_null(orc_moe_route(&ctx, lg, &rc.o, &pl));
    assert_true(pl->stats.dropped > 0);
    const int64_t S = pl->n_slots;
    orc_tensor *in[2] = {gc_rand(a, 2, ORC_SHAPE(S, 5), 1, -1, 1, true), gc_rand(a, 1, ORC_SHAPE(S), 2, 0, 1, true)};
    gc_check("moe combine", build_combine, 2, in, &rc, (gc_opts){0});
    orc_arena_destroy(a);
}

typedef struct layer_case {
    orc_moe_opts o;
    bool aux;
} layer_case;

static orc_tensor *build_layer(orc_ctx *c, orc_tensor **in, void *u) {
    const layer_case *lc = u;
    orc_moe_layer L = {.router = in[1], .w_gate = in[2], .w_up = in[3], .w_down = in[4]};
    orc_moe_forward r;
    orc_tensor *y = orc_moe_ffn(c, &L, &lc->o, in[0], &r);
    if (!lc->aux || !y) return y;
    /* The difference passes run without a tape, where the layer builds no
     * auxiliary losses: build them here from the same router logits. */
    const int64_t D = in[0]->shape[in[0]->ndim - 1];
    orc_tensor *logits = orc_linear(c, orc_reshape(c, in[0], 2, ORC_SHAPE(in[0]->numel / D, D)), in[1], NULL);
    orc_tensor *aux = orc_scale(c, orc_moe_z_loss(c, logits), 0.1f);
    if (lc->o.router == ORC_MOE_TOKEN_CHOICE) aux = orc_add(c, aux, orc_moe_balance_loss(c, logits, r.plan));
    return orc_add(c, orc_sum_all(c, y), aux);
}

static void test_layer_gradients(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    const int64_t E = 3, D = 4, F = 5;
    orc_tensor *in[5] = {gc_rand(a, 3, ORC_SHAPE(2, 4, D), 1, -1, 1, true),
                         gc_rand(a, 2, ORC_SHAPE(E, D), 2, -2, 2, true),
                         gc_rand(a, 3, ORC_SHAPE(E, F, D), 3, -1, 1, true),
                         gc_rand(a, 3, ORC_SHAPE(E, F, D), 4, -1, 1, true),
                         gc_rand(a, 3, ORC_SHAPE(E, D, F), 5, -1, 1, true)};
    layer_case cases[] = {
        {{ORC_MOE_TOKEN_CHOICE, E, 2, 1.0, 0}, false},
        {{ORC_MOE_TOKEN_CHOICE, E, 2, 1.0, 4}, true},
        {{ORC_MOE_EXPERT_CHOICE, E, 0, 1.0, 0}, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "moe layer case %zu", i);
        /* Small eps: routing must not flip inside the difference. */
        gc_check(name, build_layer, 5, in, &cases[i], (gc_opts){.eps = 1e-4, .atol = 5e-3});
    }
    orc_arena_destroy(a);
}

/* ---- parity with the dense FFN ----------------------------------------------------- */

static void test_dense_parity(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    const int64_t E = 4, D = 8, F = 12, N = 20;
    orc_tensor *x = gc_rand(a, 2, ORC_SHAPE(N, D), 1, -1, 1, false);
    orc_tensor *wg = gc_rand(a, 2, ORC_SHAPE(F, D), 2, -0.5f, 0.5f, false);
    orc_tensor *wu = gc_rand(a, 2, ORC_SHAPE(F, D), 3, -0.5f, 0.5f, false);
    orc_tensor *wd = gc_rand(a, 2, ORC_SHAPE(D, F), 4, -0.5f, 0.5f, false);
    orc_tensor *dense = orc_linear(&ctx, orc_swiglu(&ctx, orc_linear(&ctx, x, wg, NULL), orc_linear(&ctx, x, wu, NULL)),
                                   wd, NULL);
    orc_moe_layer L = {.router = gc_rand(a, 2, ORC_SHAPE(E, D), 5, -1, 1, false)};
    L.w_gate = orc_tensor_new(a, ORC_F32, 3, ORC_SHAPE(E, F, D), NULL);
    L.w_up = orc_tensor_new(a, ORC_F32, 3, ORC_SHAPE(E, F, D), NULL);
    L.w_down = orc_tensor_new(a, ORC_F32, 3, ORC_SHAPE(E, D, F), NULL);
    for (int64_t e = 0; e < E; e++) {
        memcpy(orc_f32(L.w_gate) + e * F * D, orc_f32(wg), sizeof(float) * (size_t)(F * D));
        memcpy(orc_f32(L.w_up) + e * F * D, orc_f32(wu), sizeof(float) * (size_t)(F * D));
        memcpy(orc_f32(L.w_down) + e * F * D, orc_f32(wd), sizeof(float) * (size_t)(F * D));
    }
    const orc_moe_opts opts[] = {{ORC_MOE_TOKEN_CHOICE, E, 2, 100.0, 0},
                                 {ORC_MOE_TOKEN_CHOICE, E, 3, 100.0, 7},
                                 {ORC_MOE_EXPERT_CHOICE, E, 0, (double)E, 0}};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        orc_moe_forward r;
        orc_tensor *y = orc_moe_ffn(&ctx, &L, &opts[i], x, &r);
        GC_ASSERT_OK(&ctx);
        assert_int_equal(r.plan->stats.dropped, 0);
        for (int64_t j = 0; j < N * D; j++) assert_float_equal(orc_f32(y)[j], orc_f32(dense)[j], 2e-5);
    }
    /* The parity must be able to fail: a different expert breaks it. */
    orc_f32(L.w_down)[2 * F * D] += 1.0f;
    orc_tensor *y = orc_moe_ffn(&ctx, &L, &opts[0], x, NULL);
    double diff = 0;
    for (int64_t j = 0; j < N * D; j++) diff = fmax(diff, fabs(orc_f32(y)[j] - orc_f32(dense)[j]));
    assert_true(diff > 1e-3);
    orc_arena_destroy(a);
}

/* ---- thread-count independence ------------------------------------------------------ */

typedef struct run_out {
    float *y, *g[5];
    int64_t n[5], ny;
} run_out;

static void run_layer(int threads, const orc_moe_opts *o, orc_tensor **in, run_out *out) {
    omp_set_num_threads(threads);
    orc_arena *s = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, s, 1);
    for (int i = 0; i < 5; i++) orc_zero_grad(in[i]);
    orc_moe_layer L = {.router = in[1], .w_gate = in[2], .w_up = in[3], .w_down = in[4]};
    orc_moe_forward r;
    orc_tensor *y = orc_moe_ffn(&ctx, &L, o, in[0], &r);
    GC_ASSERT_OK(&ctx);
    orc_tensor *loss = orc_add(&ctx, orc_sum_all(&ctx, orc_mul(&ctx, y, y)), r.z);
    if (r.balance) loss = orc_add(&ctx, loss, r.balance);
    assert_int_equal(orc_backward(&ctx, loss), ORC_OK);
    out->ny = y->numel;
    out->y = malloc(sizeof(float) * (size_t)y->numel);
    memcpy(out->y, orc_f32(y), sizeof(float) * (size_t)y->numel);
    for (int i = 0; i < 5; i++) {
        out->n[i] = in[i]->numel;
        out->g[i] = malloc(sizeof(float) * (size_t)in[i]->numel);
        memcpy(out->g[i], in[i]->grad, sizeof(float) * (size_t)in[i]->numel);
    }
    orc_arena_destroy(s);
}

/* A random tensor whose gradient buffer lives in a (not in a step's arena). */
static orc_tensor *param_rand(orc_arena *a, int ndim, const int64_t *shape, uint64_t seed, float lo, float hi) {
    orc_tensor *r = gc_rand(a, ndim, shape, seed, lo, hi, false);
    orc_tensor *t = orc_param_new(a, ndim, shape, "p", NULL);
    memcpy(orc_f32(t), orc_f32(r), sizeof(float) * (size_t)r->numel);
    return t;
}

static void test_threads_bit_identical(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    const int64_t E = 8, D = 64, F = 96, N = 2500; /* N * E above the routing loops' parallel threshold */
    orc_tensor *in[5] = {param_rand(a, 2, ORC_SHAPE(N, D), 1, -1, 1), param_rand(a, 2, ORC_SHAPE(E, D), 2, -0.3f, 0.3f),
                         param_rand(a, 3, ORC_SHAPE(E, F, D), 3, -0.2f, 0.2f),
                         param_rand(a, 3, ORC_SHAPE(E, F, D), 4, -0.2f, 0.2f),
                         param_rand(a, 3, ORC_SHAPE(E, D, F), 5, -0.2f, 0.2f)};
    const orc_moe_opts opts[] = {{ORC_MOE_TOKEN_CHOICE, E, 2, 1.25, 0}, {ORC_MOE_EXPERT_CHOICE, E, 0, 2.0, 300}};
    const int saved = omp_get_max_threads();
    for (size_t k = 0; k < 2; k++) {
        run_out r1, r3;
        run_layer(1, &opts[k], in, &r1);
        run_layer(3, &opts[k], in, &r3);
        assert_memory_equal(r1.y, r3.y, sizeof(float) * (size_t)r1.ny);
        for (int i = 0; i < 5; i++) assert_memory_equal(r1.g[i], r3.g[i], sizeof(float) * (size_t)r1.n[i]);
        free(r1.y);
        free(r3.y);
        for (int i = 0; i < 5; i++) {
            free(r1.g[i]);
            free(r3.g[i]);
        }
    }
    omp_set_num_threads(saved);
    orc_arena_destroy(a);
}

/* ---- the LM with MoE layers ------------------------------------------------------------ */

static orc_llm_config moe_config(int router) {
    orc_llm_config c;
    orc_llm_config_default(&c);
    c.hidden_size = 16;
    c.num_hidden_layers = 3;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 2;
    c.head_dim = 8;
    c.intermediate_size = 24;
    c.vocab_size = 40;
    c.max_position_embeddings = 32;
    c.num_experts = 4;
    c.moe_every = 2; /* layer 1 only */
    c.moe_router = router;
    c.moe_intermediate_size = 12;
    return c;
}

static void test_llm_moe(void **state) {
    (void)state;
    char dir[64];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "moe"), 0);
    for (int router = 0; router < 2; router++) {
        orc_llm_config c = moe_config(router);
        orc_error err = {0};
        orc_llm *m = orc_llm_create(&c, true, &err);
        assert_non_null(m);
        assert_null(m->layers[0].moe);
        assert_non_null(m->layers[1].moe);
        assert_null(m->layers[1].w_gate);
        assert_non_null(orc_llm_param(m, "model.layers.1.mlp.experts.gate_proj.weight"));
        assert_non_null(orc_llm_param(m, "model.layers.1.mlp.gate.weight"));
        assert_null(orc_llm_param(m, "model.layers.1.mlp.gate_proj.weight"));
        int64_t total = 0;
        for (int i = 0; i < m->n_params; i++) total += m->params[i]->numel;
        if (!c.tie_word_embeddings) total += 0;
        assert_int_equal(total, orc_llm_config_num_params(&c));
        /* Active: 2 of 4 experts of 3 * 16 * 12 each. */
        assert_int_equal(orc_llm_config_num_params(&c) - orc_llm_config_active_params(&c), 2 * 3 * 16 * 12);
        orc_llm_init_weights(m, 5);
        assert_int_equal(orc_llm_save(m, dir, &err), ORC_OK);
        orc_llm *m2 = orc_llm_load(dir, false, &err);
        assert_non_null(m2);
        assert_int_equal(m2->cfg.num_experts, 4);
        assert_int_equal(m2->cfg.moe_router, router);
        assert_int_equal(m2->cfg.moe_intermediate_size, 12);
        orc_arena *s = orc_arena_create(0);
        orc_ctx ctx;
        orc_ctx_init(&ctx, s, 1);
        orc_tensor *ids = gc_rand_ids(s, 2, ORC_SHAPE(2, 7), 9, 40);
        orc_tensor *tg = gc_rand_ids(s, 2, ORC_SHAPE(2, 7), 10, 40);
        orc_llm_moe_stats_reset(m);
        orc_tensor *loss = orc_llm_loss(&ctx, m, ids, tg);
        GC_ASSERT_OK(&ctx);
        assert_non_null(m->moe_aux);
        assert_true(orc_f32(m->moe_aux)[0] > 0);
        assert_int_equal(orc_backward(&ctx, orc_add(&ctx, loss, m->moe_aux)), ORC_OK);
        assert_non_null(m->layers[1].moe->router->grad);
        double gsum = 0;
        for (int64_t i = 0; i < m->layers[1].moe->router->numel; i++) gsum += fabs(m->layers[1].moe->router->grad[i]);
        assert_true(gsum > 0);
        const orc_moe_stats *st = &m->layers[1].moe->stats;
        assert_int_equal(st->tokens, 14);
        int64_t kept = 0;
        for (int e = 0; e < 4; e++) kept += st->per_expert[e];
        if (router == 0) assert_int_equal(kept + st->dropped, 28);
        else assert_int_equal(kept, 4 * 7); /* ceil(14 * 2 / 4) per expert */
        assert_true(orc_moe_stats_entropy(st) > 0 && orc_moe_stats_entropy(st) <= log(4.0) + 1e-9);
        /* The loaded model computes the same logits (no-grad, no aux). */
        orc_tensor *l1 = orc_llm_forward(&ctx, m, ids, NULL);
        orc_set_no_grad(&ctx, true);
        orc_tensor *l2 = orc_llm_forward(&ctx, m2, ids, NULL);
        GC_ASSERT_OK(&ctx);
        assert_null(m2->moe_aux);
        assert_memory_equal(orc_f32(l1), orc_f32(l2), sizeof(float) * (size_t)l1->numel);
        orc_arena_destroy(s);
        orc_llm_free(m);
        orc_llm_free(m2);
    }
    orc_test_dir_remove(dir);
}

static void test_config_keys(void **state) {
    (void)state;
    char dir[64], path[128];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "moe_cfg"), 0);
    int fd = open(orc_test_path(path, sizeof path, dir, "config.json"), O_RDWR | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    const char *js = "{\"hidden_size\": 16, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
                     "\"intermediate_size\": 32, \"vocab_size\": 50, \"num_experts\": 8, \"router\": \"top2\", "
                     "\"capacity_factor\": 1.5, \"router_z_loss_coef\": 0.002, \"moe_group_size\": 64}";
    assert_int_equal(write(fd, js, strlen(js)), (ssize_t)strlen(js));
    close(fd);
    orc_llm_config c;
    orc_error err = {0};
    assert_int_equal(orc_llm_config_load(path, &c, &err), ORC_OK);
    assert_int_equal(c.num_experts, 8);
    assert_int_equal(c.moe_every, 1);
    assert_int_equal(c.moe_top_k, 2);
    assert_int_equal(c.moe_router, ORC_MOE_TOKEN_CHOICE);
    assert_int_equal(c.moe_intermediate_size, 32);
    assert_int_equal(c.moe_group_size, 64);
    assert_float_equal(c.capacity_factor, 1.5, 0);
    assert_float_equal(c.router_aux_loss_coef, 0.01, 0);
    /* Errors name the key. */
    const char *bad[] = {"\"router\": \"soft\"", "\"moe_top_k\": 9", "\"capacity_factor\": 0", "\"moe_every\": 3"};
    const char *key[] = {"router", "moe_top_k", "capacity_factor", "moe_every"};
    for (int i = 0; i < 4; i++) {
        char text[512];
        snprintf(text, sizeof text,
                 "{\"hidden_size\": 16, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
                 "\"intermediate_size\": 32, \"vocab_size\": 50, \"num_experts\": 8, %s}", bad[i]);
        FILE *f = fopen(path, "w");
        fputs(text, f);
        fclose(f);
        memset(&err, 0, sizeof err);
        assert_int_not_equal(orc_llm_config_load(path, &c, &err), ORC_OK);
        if (!strstr(err.msg, key[i])) fail_msg("error for %s lacks the key: %s", bad[i], err.msg);
    }
    orc_test_dir_remove(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_choice_capacity), cmocka_unit_test(test_expert_choice_routing),
        cmocka_unit_test(test_route_gradients),       cmocka_unit_test(test_experts_gradients),
        cmocka_unit_test(test_combine_gradients),
        cmocka_unit_test(test_layer_gradients),       cmocka_unit_test(test_dense_parity),
        cmocka_unit_test(test_threads_bit_identical), cmocka_unit_test(test_llm_moe),
        cmocka_unit_test(test_config_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
