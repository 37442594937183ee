/* The LM module: config validation and config.json errors, checkpoints that
 * round-trip bit for bit, shapes, a tiny model that can memorise a sequence
 * (the whole forward/backward/optimizer path works together), and the
 * shared-prefix forward against the full rows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "orchard/llm.h"
#include "orchard/optim.h"
#include "testdir.h"

static orc_llm_config tiny_config(void) {
    orc_llm_config c;
    orc_llm_config_default(&c);
    c.hidden_size = 32;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 8;
    c.intermediate_size = 48;
    c.vocab_size = 40;
    c.max_position_embeddings = 64;
    return c;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_config_errors_name_the_key(void **state) {
    (void)state;
    orc_llm_config c = tiny_config();
    orc_error err = {0};
    assert_int_equal(orc_llm_config_validate(&c, &err), ORC_OK);
    c.num_key_value_heads = 3;
    assert_int_equal(orc_llm_config_validate(&c, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "num_key_value_heads"));

    char dir[64];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "llm"), 0);
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, "{\"hidden_size\": 32, \"num_hidden_layers\": \"two\"}");
    orc_error_clear(&err);
    assert_int_equal(orc_llm_config_load(path, &c, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "num_hidden_layers"));
    assert_non_null(strstr(err.msg, "config.json"));
    write_file(path, "{\"hidden_size\": 32, \"num_hidden_layers\": 2, ");
    orc_error_clear(&err);
    assert_int_equal(orc_llm_config_load(path, &c, &err), ORC_EFORMAT);
    orc_test_dir_remove(dir);

    orc_error_clear(&err);
    assert_int_equal(orc_llm_config_preset("tiny", &c, &err), ORC_OK);
    assert_int_equal(c.hidden_size, 288);
    assert_int_equal(c.vocab_size, 4096);
    assert_int_equal(orc_llm_config_preset("huge", &c, &err), ORC_EINVAL);
}

static void test_checkpoint_round_trip(void **state) {
    (void)state;
    orc_llm_config c = tiny_config();
    c.qk_norm = true;
    c.tie_word_embeddings = false;
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, true, &err);
    assert_non_null(m);
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += m->params[i]->numel;
    assert_int_equal(n, orc_llm_config_num_params(&c));
    orc_llm_init_weights(m, 7);
    char dir[64];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "llm"), 0);
    assert_int_equal(orc_llm_save(m, dir, &err), ORC_OK);
    orc_llm *m2 = orc_llm_load(dir, false, &err);
    if (!m2) fail_msg("%s", err.msg);
    assert_int_equal(m2->n_params, m->n_params);
    assert_true(m2->cfg.qk_norm && !m2->cfg.tie_word_embeddings);
    for (int i = 0; i < m->n_params; i++) {
        assert_string_equal(m->params[i]->name, m2->params[i]->name);
        assert_memory_equal(m->params[i]->data, m2->params[i]->data, sizeof(float) * (size_t)m->params[i]->numel);
    }
    /* A checkpoint whose config disagrees with the tensors is an error naming the tensor. */
    orc_llm_config wrong = c;
    wrong.intermediate_size = 50;
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(orc_llm_config_save(path, &wrong, &err), ORC_OK);
    assert_null(orc_llm_load(dir, false, &err));
    assert_non_null(strstr(err.msg, "gate_proj"));
    orc_llm_free(m);
    orc_llm_free(m2);
    orc_test_dir_remove(dir);
}

static void test_memorises_a_sequence(void **state) {
    (void)state;
    orc_llm_config c = tiny_config();
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, true, &err);
    orc_llm_init_weights(m, 3);
    orc_param_group g = orc_group(m->params, m->n_params, 0.0f);
    orc_optim *opt = orc_adamw_new(&g, 1, (orc_adamw_opts){0.9f, 0.95f, 1e-8f}, &err);
    assert_non_null(opt);
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    const int T = 24;
    float first = 0, last = 0;
    for (int step = 0; step < 80; step++) {
        orc_tensor *ids = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, T));
        orc_tensor *tg = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, T));
        for (int t = 0; t < T; t++) {
            orc_i32(ids)[t] = (t * 7 + 3) % 40;
            orc_i32(tg)[t] = ((t + 1) * 7 + 3) % 40;
        }
        orc_tensor *loss = orc_llm_loss(&ctx, m, ids, tg);
        GC_ASSERT_OK(&ctx);
        if (step == 0) first = orc_f32(loss)[0];
        last = orc_f32(loss)[0];
        if (getenv("ORCHARD_TEST_VERBOSE")) printf("step %d loss %.4f\n", step, last);
        assert_int_equal(orc_backward(&ctx, loss), ORC_OK);
        assert_int_equal(orc_optim_step(opt, 1e-2f, &err), ORC_OK);
        orc_optim_zero_grad(opt);
        orc_ctx_reset(&ctx);
    }
    assert_true(first > 3.0f);  /* about log(40) at the start */
    assert_true(last < 0.1f);   /* the sequence is memorised */
    orc_optim_free(opt);
    orc_arena_destroy(a);
    orc_llm_free(m);
}

/* sum(h * w) for a fixed w of h's shape drawn from seed: a loss that reads
 * every hidden value with its own weight. */
static orc_tensor *weighted_sum(orc_ctx *ctx, orc_tensor *h, const float *w) {
    orc_tensor *wt = orc_new(ctx, ORC_F32, h->ndim, h->shape);
    memcpy(wt->data, w, (size_t)h->numel * sizeof(float));
    return orc_sum_all(ctx, orc_mul(ctx, h, wt));
}

static orc_tensor *ids_tensor(orc_ctx *ctx, const int32_t *ids, int64_t rows, int64_t cols) {
    orc_tensor *t = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(rows, cols));
    memcpy(t->data, ids, (size_t)(rows * cols) * sizeof *ids);
    return t;
}

/* orc_llm_hidden_prefixed gives orc_llm_hidden's hidden states at the rows'
 * positions of prefix + row, and the same gradient for every parameter (the
 * prefix's keys and values are shared by the rows); a prefix of two rows and
 * too many positions are errors. */
static void test_prefixed_matches_full(void **state) {
    (void)state;
    orc_llm_config c = tiny_config();
    c.qk_norm = true;
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, true, &err);
    assert_non_null(m);
    orc_llm_init_weights(m, 11);
    enum { B = 3, P = 5, S = 6, D = 32 };
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    int32_t pf[P], rw[B * S], fl[B * (P + S)]; /* the ids; tensors made from them after each reset */
    for (int t = 0; t < P; t++) pf[t] = (t * 13 + 5) % 40;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < P + S; t++) {
            const int32_t id = t < P ? pf[t] : (int32_t)((t * 7 + b * 11 + 1) % 40);
            fl[b * (P + S) + t] = id;
            if (t >= P) rw[b * S + t - P] = id;
        }
    static float w[B * S * D];
    for (int i = 0; i < B * S * D; i++) w[i] = (float)((i * 37) % 19) / 19.0f - 0.5f;
    /* the full rows' hidden states at positions P.. and their weighted-sum gradients */
    float *want_h = malloc(sizeof w), **want_g = calloc((size_t)m->n_params, sizeof *want_g);
    orc_tensor *h = orc_llm_hidden(&ctx, m, ids_tensor(&ctx, fl, B, P + S), NULL);
    GC_ASSERT_OK(&ctx);
    orc_tensor *hs = orc_contiguous(&ctx, orc_slice(&ctx, h, 1, P, S));
    memcpy(want_h, hs->data, sizeof w);
    assert_int_equal(orc_backward(&ctx, weighted_sum(&ctx, hs, w)), ORC_OK);
    for (int i = 0; i < m->n_params; i++) {
        want_g[i] = malloc((size_t)m->params[i]->numel * sizeof(float));
        memcpy(want_g[i], m->params[i]->grad, (size_t)m->params[i]->numel * sizeof(float));
        orc_zero_grad(m->params[i]);
    }
    orc_ctx_reset(&ctx);
    orc_tensor *hp = orc_llm_hidden_prefixed(&ctx, m, ids_tensor(&ctx, pf, 1, P), ids_tensor(&ctx, rw, B, S));
    GC_ASSERT_OK(&ctx);
    assert_int_equal(hp->shape[0], B);
    assert_int_equal(hp->shape[1], S);
    for (int i = 0; i < B * S * D; i++)
        if (fabsf(orc_f32(hp)[i] - want_h[i]) > 1e-5f) fail_msg("hidden %d: %g, full rows %g", i, orc_f32(hp)[i], want_h[i]);
    assert_int_equal(orc_backward(&ctx, weighted_sum(&ctx, hp, w)), ORC_OK);
    for (int i = 0; i < m->n_params; i++) {
        float scale = 1e-6f;
        for (int64_t j = 0; j < m->params[i]->numel; j++) scale = fmaxf(scale, fabsf(want_g[i][j]));
        for (int64_t j = 0; j < m->params[i]->numel; j++)
            if (fabsf(m->params[i]->grad[j] - want_g[i][j]) > 1e-4f * scale)
                fail_msg("%s[%lld]: gradient %g, full rows %g", m->params[i]->name, (long long)j,
                         m->params[i]->grad[j], want_g[i][j]);
        free(want_g[i]);
    }
    orc_ctx_reset(&ctx);
    assert_null(orc_llm_hidden_prefixed(&ctx, m, ids_tensor(&ctx, rw, B, S), ids_tensor(&ctx, rw, B, S)));
    assert_int_equal(ctx.err.code, ORC_ESHAPE);
    orc_ctx_reset(&ctx);
    orc_tensor *long_rows = orc_new(&ctx, ORC_I32, 2, ORC_SHAPE(1, 62));
    memset(long_rows->data, 0, 62 * sizeof(int32_t));
    assert_null(orc_llm_hidden_prefixed(&ctx, m, ids_tensor(&ctx, pf, 1, P), long_rows));
    assert_int_equal(ctx.err.code, ORC_ERANGE);
    free(want_h);
    free(want_g);
    orc_arena_destroy(a);
    orc_llm_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors_name_the_key),
        cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_memorises_a_sequence),
        cmocka_unit_test(test_prefixed_matches_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
