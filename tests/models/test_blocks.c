/* The seams of the engine: the building blocks later models need (an LSTM
 * cell, a LoRA linear over a frozen base, an FFN with a per-input channel
 * mask, a DiT block with adaLN and cross-attention, expert-choice MoE
 * dispatch/combine, ViT patch embedding) composed from the public ops, with
 * their gradients checked end to end by finite differences. */
#include "gradcheck.h"

/* LSTM cell: gates = [x, h] W^T + b, split i f g o; c' = f*c + i*g; h' = o*tanh(c'). */
static orc_tensor *build_lstm(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *x = in[0], *h = in[1], *cell = in[2], *w = in[3];
    orc_tensor *xs[2] = {x, h};
    orc_tensor *gates = orc_linear(c, orc_concat(c, 2, xs, 1), w, NULL); /* [B, 4H] */
    orc_tensor *g[4];
    const int64_t H = h->shape[1];
    if (!orc_split(c, gates, 1, 4, ORC_SHAPE(H, H, H, H), g)) return NULL;
    orc_tensor *cn = orc_add(c, orc_mul(c, orc_sigmoid(c, g[1]), cell), orc_mul(c, orc_sigmoid(c, g[0]), orc_tanh(c, g[2])));
    orc_tensor *hn = orc_mul(c, orc_sigmoid(c, g[3]), orc_tanh(c, cn));
    orc_tensor *both[2] = {hn, cn};
    return orc_concat(c, 2, both, 1);
}

static void test_lstm_cell(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *in[4] = {gc_rand(a, 2, ORC_SHAPE(3, 5), 1, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(3, 4), 2, -1, 1, true),
                         gc_rand(a, 2, ORC_SHAPE(3, 4), 3, -1, 1, true),
                         gc_rand(a, 2, ORC_SHAPE(16, 9), 4, -0.5f, 0.5f, true)};
    gc_check("lstm cell", build_lstm, 4, in, NULL, (gc_opts){0});
    orc_arena_destroy(a);
}

/* LoRA: y = x W^T + (alpha/r) * (x A^T) B^T with W frozen. */
static orc_tensor *build_lora(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *x = in[0], *w = in[1], *A = in[2], *B = in[3];
    orc_tensor *delta = orc_scale(c, orc_linear(c, orc_linear(c, x, A, NULL), B, NULL), 2.0f);
    return orc_add(c, orc_linear(c, x, w, NULL), delta);
}

static void test_lora_frozen_base(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *in[4] = {gc_rand(a, 3, ORC_SHAPE(2, 3, 6), 1, -1, 1, true),
                         gc_rand(a, 2, ORC_SHAPE(7, 6), 2, -1, 1, false), /* frozen */
                         gc_rand(a, 2, ORC_SHAPE(2, 6), 3, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(7, 2), 4, -1, 1, true)};
    gc_check("lora", build_lora, 4, in, NULL, (gc_opts){0});
    /* The frozen base never gets a gradient buffer. */
    orc_ctx ctx;
    orc_arena *s = orc_arena_create(0);
    orc_ctx_init(&ctx, s, 1);
    orc_tensor *y = build_lora(&ctx, in, NULL);
    assert_int_equal(orc_backward(&ctx, orc_sum_all(&ctx, y)), ORC_OK);
    assert_null(in[1]->grad);
    assert_non_null(in[2]->grad);
    orc_arena_destroy(s);
    orc_arena_destroy(a);
}

/* IFPruning-style FFN: down(swiglu(gate x, up x) * mask[b]) with a per-input mask [B, 1, F]. */
static orc_tensor *build_masked_ffn(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *x = in[0], *wg = in[1], *wu = in[2], *wd = in[3];
    orc_tensor *mask = u ? (orc_tensor *)u : NULL;
    orc_tensor *hmid = orc_swiglu(c, orc_linear(c, x, wg, NULL), orc_linear(c, x, wu, NULL));
    return orc_linear(c, orc_mul(c, hmid, mask), wd, NULL);
}

static void test_masked_ffn(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *mask = gc_rand(a, 3, ORC_SHAPE(2, 1, 8), 9, 0, 1, false);
    for (int i = 0; i < 16; i++) orc_f32(mask)[i] = orc_f32(mask)[i] > 0.5f ? orc_f32(mask)[i] : 0.0f;
    orc_tensor *in[4] = {gc_rand(a, 3, ORC_SHAPE(2, 3, 5), 1, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(8, 5), 2, -1, 1, true),
                         gc_rand(a, 2, ORC_SHAPE(8, 5), 3, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(5, 8), 4, -1, 1, true)};
    gc_check("masked ffn", build_masked_ffn, 4, in, mask, (gc_opts){0});
    orc_arena_destroy(a);
}

/* DiT block: adaLN (layernorm without affine, then x*(1+scale)+shift from the
 * timestep embedding) and cross-attention from image tokens to text tokens. */
static orc_tensor *build_dit(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *x = in[0], *txt = in[1], *temb = in[2], *w = in[3]; /* w [D, D] shared q/k/v for brevity */
    const int64_t B = x->shape[0], T = x->shape[1], D = x->shape[2], S = txt->shape[1];
    orc_tensor *mods[2];
    if (!orc_split(c, temb, 2, 2, ORC_SHAPE(D, D), mods)) return NULL; /* temb [B, 1, 2D] */
    orc_tensor *hmod = orc_add(c, orc_mul(c, orc_layernorm(c, x, NULL, NULL, 1e-5f), orc_add_scalar(c, mods[0], 1.0f)),
                               mods[1]);
    orc_tensor *q = orc_reshape(c, orc_linear(c, hmod, w, NULL), 4, ORC_SHAPE(B, T, 2, D / 2));
    orc_tensor *k = orc_reshape(c, orc_linear(c, txt, w, NULL), 4, ORC_SHAPE(B, S, 2, D / 2));
    orc_tensor *att = orc_attention(c, q, k, k, &(orc_attn_opts){.causal = false});
    return orc_add(c, x, orc_reshape(c, att, 3, ORC_SHAPE(B, T, D)));
}

static void test_dit_cross_attention(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *in[4] = {gc_rand(a, 3, ORC_SHAPE(2, 5, 4), 1, -1, 1, true), gc_rand(a, 3, ORC_SHAPE(2, 3, 4), 2, -1, 1, true),
                         gc_rand(a, 3, ORC_SHAPE(2, 1, 8), 3, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(4, 4), 4, -1, 1, true)};
    gc_check("dit block", build_dit, 4, in, NULL, (gc_opts){0});
    orc_arena_destroy(a);
}

/* Expert choice: scores [N, E] -> per expert the top-C tokens; each expert
 * (a linear) processes its tokens, scaled by the chosen score, and the
 * results are scatter-added back to the token rows. */
static orc_tensor *build_expert_choice(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *x = in[0], *wr = in[1], *we0 = in[2], *we1 = in[3];
    const int64_t N = x->shape[0], C = 3;
    orc_tensor *probs = orc_softmax(c, orc_linear(c, x, wr, NULL));                   /* [N, 2] */
    orc_tensor *pt = orc_contiguous(c, orc_transpose(c, probs, 0, 1));                /* [2, N] */
    orc_tensor *vals, *idx;
    if (!orc_topk(c, pt, C, &vals, &idx)) return NULL;                                  /* [2, C] */
    orc_tensor *experts[2] = {we0, we1};
    orc_tensor *out = NULL;
    for (int e = 0; e < 2; e++) {
        orc_tensor *ie = orc_reshape(c, orc_contiguous(c, orc_slice(c, idx, 0, e, 1)), 1, ORC_SHAPE(C));
        orc_tensor *ge = orc_reshape(c, orc_contiguous(c, orc_slice(c, vals, 0, e, 1)), 2, ORC_SHAPE(C, 1));
        orc_tensor *ye = orc_mul(c, orc_linear(c, orc_index_select(c, x, ie), experts[e], NULL), ge);
        orc_tensor *back = orc_scatter_add(c, ye, ie, N);
        out = out ? orc_add(c, out, back) : back;
    }
    return orc_add(c, x, out);
}

static void test_expert_choice_moe(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *in[4] = {gc_rand(a, 2, ORC_SHAPE(7, 4), 1, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(2, 4), 2, -2, 2, true),
                         gc_rand(a, 2, ORC_SHAPE(4, 4), 3, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(4, 4), 4, -1, 1, true)};
    /* Small eps: top-k selection must not flip inside the difference. */
    gc_check("expert choice", build_expert_choice, 4, in, NULL, (gc_opts){.eps = 1e-4, .atol = 5e-3});
    orc_arena_destroy(a);
}

/* ViT patch embedding: [B, H, W] image -> [B, (H/p)*(W/p), p*p] patches -> linear. */
static orc_tensor *build_patchify(orc_ctx *c, orc_tensor **in, void *u) {
    (void)u;
    orc_tensor *img = in[0], *w = in[1]; /* img [2, 4, 6], p = 2 */
    orc_tensor *t = orc_reshape(c, img, 4, ORC_SHAPE(2 * 2, 2, 3, 2));  /* [B*H/p, p, W/p, p] */
    t = orc_contiguous(c, orc_transpose(c, t, 1, 2));                     /* [B*H/p, W/p, p, p] */
    t = orc_reshape(c, t, 3, ORC_SHAPE(2, 6, 4));
    return orc_gelu(c, orc_linear(c, t, w, NULL));
}

static void test_vit_patchify(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *in[2] = {gc_rand(a, 3, ORC_SHAPE(2, 4, 6), 1, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(5, 4), 2, -1, 1, true)};
    gc_check("vit patchify", build_patchify, 2, in, NULL, (gc_opts){0});
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lstm_cell),        cmocka_unit_test(test_lora_frozen_base),
        cmocka_unit_test(test_masked_ffn),       cmocka_unit_test(test_dit_cross_attention),
        cmocka_unit_test(test_expert_choice_moe), cmocka_unit_test(test_vit_patchify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
