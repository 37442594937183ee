/* LoRA adapters on a tiny model (dim 32, 2 layers, GQA): the adapted linear
 * against finite differences; a manual training loop that lowers the loss
 * while the frozen base keeps its bits and has no gradient buffers, with an
 * optimizer over the adapter alone; orc_train_run with --lora (checkpoint =
 * PEFT adapter files, optimizer state for A and B only, resume bit for bit
 * with dropout on); save/load round trip and PEFT names and config keys;
 * merge == adapter forward; 1 vs 3 threads; the GGUF LoRA file read back
 * (keys, names, ggml shapes, q/k row permutation of lora_b); accuracy
 * recovery over a Q8_0 file of the model lowers the loss against the
 * quantized base; and bad input: a rank above the layer, an adapter for
 * another size or depth, unknown targets, unsupported PEFT settings. */
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gradcheck.h"
#include "orchard/data.h"
#include "orchard/generate.h"
#include "orchard/gguf.h"
#include "orchard/llm_gguf.h"
#include "orchard/lora.h"
#include "orchard/optim.h"
#include "orchard/quant.h"
#include "orchard/rng.h"
#include "orchard/safetensors.h"
#include "orchard/train.h"
#include "llm_support.h"
#include "testdir.h"
#include "train_support.h"

static void path_in(char *out, const char *name) { orc_test_scratch_path(out, 512, name); }

static const char *const MODEL = ORC_TEST_TINY_MODEL_JSON;

/* The model of MODEL at another width or depth. */
static void tiny_config(orc_llm_config *c, int64_t hidden, int64_t layers) {
    *c = orc_test_llm_config(hidden, layers, 64, 264, 64);
    orc_error err = {0};
    if (orc_llm_config_validate(c, &err) != ORC_OK) fail_msg("%s", err.msg);
}

/* A byte-level tokenizer in DIR/tok, shards, and a base model in DIR/base
 * pretrained for a few steps (a random base's logits are too small for an
 * adapter to move the loss much). */
static int setup(void **state) {
    if (orc_test_scratch_setup(state)) return -1;
    orc_test_write_byte_tokenizer("tok");
    orc_test_write_stream_shard("train.bin", 1, 20, 200);
    orc_test_write_stream_shard("val.bin", 2, 5, 200);
    orc_error err = {0};
    char p[512], q[512];
    char text2[2048];
    snprintf(text2, sizeof text2,
             "{\"model\": %s, \"tokenizer\": \"tok\", \"data\": {\"train\": \"train.bin\", \"val\": \"val.bin\"},\n"
             " \"batch\": 4, \"seq\": 16, \"steps\": 40, \"lr\": 0.01, \"min_lr\": 0.001, \"warmup\": 2,\n"
             " \"eval_every\": 40, \"eval_batches\": 2, \"save_every\": 0, \"seed\": 6}\n", MODEL);
    orc_test_write_text("pretrain.json", text2);
    path_in(p, "pretrain.json");
    path_in(q, "base");
    orc_train_opts to = {.recipe = p, .out_dir = q};
    if (orc_train_run(&to, NULL, &err) != ORC_OK) {
        fprintf(stderr, "pretraining the base: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static orc_llm *load_base(void) {
    char p[512];
    path_in(p, "base");
    orc_error err = {0};
    orc_llm *m = orc_llm_load(p, false, &err);
    if (!m) fail_msg("%s", err.msg);
    return m;
}

/* An adapter with A from the seed and B random too (a fresh B is zero, which
 * would hide mistakes in B's use). */
static orc_lora *random_adapter(const orc_llm_config *c, const char *spec, uint64_t seed, bool with_grad) {
    orc_lora_config lc;
    orc_lora_config_default(&lc);
    orc_error err = {0};
    if (spec && orc_lora_config_parse(spec, &lc, &err) != ORC_OK) fail_msg("%s", err.msg);
    orc_lora *a = orc_lora_create(c, &lc, with_grad, &err);
    if (!a) fail_msg("%s", err.msg);
    orc_lora_init_weights(a, seed);
    orc_rng r;
    orc_rng_init(&r, seed + 1);
    for (int i = 0; i < a->n_params; i++)
        if (a->params[i]->shape[1] == lc.rank) /* a B */
            orc_rng_fill_normal(&r, orc_f32(a->params[i]), a->params[i]->numel, 0, 0.05f);
    return a;
}

/* ---- the adapted linear against finite differences ------------------------------------ */

static orc_tensor *build_lora_linear(orc_ctx *ctx, orc_tensor **in, void *user) {
    (void)user;
    return orc_lora_linear(ctx, in[0], in[1], in[2], in[3], 2.5f, 0.0f);
}

static void test_gradcheck(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(1 << 20);
    orc_tensor *in[4] = {gc_rand(a, 3, ORC_SHAPE(2, 3, 6), 1, -1, 1, true),
                         gc_rand(a, 2, ORC_SHAPE(5, 6), 2, -1, 1, true),
                         gc_rand(a, 2, ORC_SHAPE(3, 6), 3, -1, 1, true),
                         gc_rand(a, 2, ORC_SHAPE(5, 3), 4, -1, 1, true)};
    gc_check("lora_linear", build_lora_linear, 4, in, NULL, (gc_opts){0});
    /* and the value: y = x W^T + 2.5 (x A^T) B^T at one element */
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 0);
    orc_set_no_grad(&ctx, true);
    orc_tensor *y = orc_lora_linear(&ctx, in[0], in[1], in[2], in[3], 2.5f, 0.0f);
    GC_ASSERT_OK(&ctx);
    const float *x = orc_f32(in[0]) + 6, *W = orc_f32(in[1]), *A = orc_f32(in[2]), *B = orc_f32(in[3]);
    double want = 0, xa[3] = {0};
    for (int i = 0; i < 6; i++) want += x[i] * W[2 * 6 + i];
    for (int j = 0; j < 3; j++)
        for (int i = 0; i < 6; i++) xa[j] += x[i] * A[j * 6 + i];
    for (int j = 0; j < 3; j++) want += 2.5 * xa[j] * B[2 * 3 + j];
    assert_true(fabs(orc_f32(y)[5 + 2] - want) < 1e-5);
    orc_arena_destroy(a);
}

/* ---- a manual training loop over a frozen base -------------------------------------------- */

static double loss_of(orc_ctx *ctx, orc_llm *m, orc_tensor *ids, orc_tensor *tg, bool backward) {
    orc_tensor *l = orc_llm_loss(ctx, m, ids, tg);
    GC_ASSERT_OK(ctx);
    double v = orc_f32(l)[0];
    if (backward) assert_int_equal(orc_backward(ctx, l), ORC_OK);
    orc_ctx_reset(ctx);
    return v;
}

static void test_train_frozen_base(void **state) {
    (void)state;
    orc_llm *m = load_base();
    orc_llm *ref = load_base();
    orc_error err = {0};
    orc_lora_config lc;
    orc_lora_config_default(&lc);
    lc.rank = 4;
    lc.alpha = 8;
    orc_lora *ad = orc_lora_create(&m->cfg, &lc, true, &err);
    assert_non_null(ad);
    orc_lora_init_weights(ad, 9);
    orc_lora_stack st = {.n = 1, .ad = {ad}, .weight = {1}};
    assert_int_equal(orc_llm_set_adapters(m, &st, &err), ORC_OK);
    orc_param_group g = orc_group(ad->params, ad->n_params, 0.0f);
    orc_optim *opt = orc_adamw_new(&g, 1, (orc_adamw_opts){0.9f, 0.95f, 1e-8f}, &err);
    assert_non_null(opt);
    /* the optimizer holds A and B only: two state buffers each */
    assert_int_equal(orc_optim_state_count(opt), 2 * ad->n_params);
    assert_int_equal(ad->n_params, 2 * 2 * 7);
    int32_t in[4 * 16], tg[4 * 16];
    int32_t prev = 40;
    for (int i = 0; i < 4 * 16; i++) in[i] = orc_test_stream_token(7, 0, i, &prev);
    for (int i = 0; i < 4 * 16; i++) tg[i] = i % 16 == 15 ? ORC_IGNORE_INDEX : in[i + 1];
    orc_arena *act = orc_arena_create(16 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, act, 1);
    orc_arena *keep = orc_arena_create(1 << 16); /* the ids outlive each step's arena reset */
    orc_tensor *ids = orc_tensor_wrap(keep, ORC_I32, 2, ORC_SHAPE(4, 16), in, &err);
    orc_tensor *tgt = orc_tensor_wrap(keep, ORC_I32, 2, ORC_SHAPE(4, 16), tg, &err);
    assert_non_null(ids);
    assert_non_null(tgt);
    /* a fresh adapter (B = 0) leaves the model equal to its base */
    double first = loss_of(&ctx, m, ids, tgt, false);
    double base_loss = loss_of(&ctx, ref, ids, tgt, false);
    assert_true(first == base_loss);
    double last = first;
    for (int s = 0; s < 30; s++) {
        orc_optim_zero_grad(opt);
        last = loss_of(&ctx, m, ids, tgt, true);
        assert_int_equal(orc_optim_step(opt, 0.01f, &err), ORC_OK);
    }
    last = loss_of(&ctx, m, ids, tgt, false);
    print_message("frozen base: loss %.4f -> %.4f\n", first, last);
    assert_true(last < first - 0.2);
    for (int i = 0; i < m->n_params; i++) {
        assert_null(m->params[i]->grad);
        assert_false(m->params[i]->requires_grad);
        assert_memory_equal(m->params[i]->data, ref->params[i]->data, sizeof(float) * (size_t)m->params[i]->numel);
    }
    orc_optim_free(opt);
    orc_arena_destroy(keep);
    orc_arena_destroy(act);
    orc_lora_free(ad);
    orc_llm_free(m);
    orc_llm_free(ref);
}

/* ---- orc_train_run with LoRA -------------------------------------------------------------- */

static void write_recipe(const char *name, const char *extra, int steps) {
    char text[4096];
    snprintf(text, sizeof text,
             "{\"init_from\": \"base\", \"data\": {\"train\": \"train.bin\", \"val\": \"val.bin\"},\n"
             " \"batch\": 4, \"seq\": 16, \"steps\": %d, \"lr\": 0.03, \"min_lr\": 0.003, \"warmup\": 2,\n"
             " \"eval_every\": 100, \"eval_batches\": 2, \"save_every\": 0, \"log_every\": 5, \"seed\": 4%s}\n",
             steps, extra);
    orc_test_write_text(name, text);
}

typedef struct trace {
    double loss[64], val[64];
    int n;
} trace;

static void record(void *user, const orc_train_step_info *info) {
    trace *t = user;
    if (t->n < 64) {
        t->loss[t->n] = info->loss;
        t->val[t->n++] = info->val_loss;
    }
}

static orc_status run_train(const char *recipe, const char *out, bool resume, int64_t stop_after, const char *lora,
                            const char *recover, trace *tr, orc_train_result *res, orc_error *err) {
    char rp[512], op[512];
    path_in(rp, recipe);
    path_in(op, out);
    orc_train_opts o = {.recipe = rp, .out_dir = op, .resume = resume, .stop_after = stop_after, .lora = lora,
                        .recover_from = recover, .on_step = tr ? record : NULL, .user = tr};
    return orc_train_run(&o, res, err);
}

static void test_train_run(void **state) {
    (void)state;
    write_recipe("lora.json", ", \"lora\": {\"rank\": 4, \"alpha\": 8, \"targets\": [\"q\", \"v\", \"down\"], "
                              "\"dropout\": 0.1}", 12);
    orc_error err = {0};
    trace a = {0}, b = {0};
    orc_train_result res;
    if (run_train("lora.json", "straight", false, 0, NULL, NULL, &a, &res, &err) != ORC_OK) fail_msg("%s", err.msg);
    assert_int_equal(a.n, 12);
    print_message("lora run: first steps %.4f %.4f %.4f, last %.4f %.4f %.4f\n", a.loss[0], a.loss[1], a.loss[2],
                  a.loss[9], a.loss[10], a.loss[11]);
    for (int i = 0; i < 12; i++) assert_true(isfinite(a.loss[i]));
    assert_true(isfinite(a.val[11])); /* (lowering the loss is checked by the manual loop and the recovery test) */
    /* the checkpoint is a PEFT adapter; no base weights in it */
    char p[512];
    path_in(p, "straight/model.safetensors");
    assert_int_not_equal(access(p, F_OK), 0);
    path_in(p, "straight/adapter_config.json");
    assert_int_equal(access(p, F_OK), 0);
    /* optimizer state for A and B of 3 targets x 2 layers only */
    path_in(p, "straight/optimizer.safetensors");
    orc_st_file *f = orc_st_open(p, &err);
    assert_non_null(f);
    assert_int_equal(orc_st_count(f), 3 * 2 * 2 * 2);
    for (size_t i = 0; i < orc_st_count(f); i++)
        assert_true(strncmp(orc_st_info(f, i)->name, "base_model.model.model.layers.", 30) == 0);
    orc_st_close(f);
    /* 6 steps, resume, 6 more: the same losses and the same adapter bits (dropout masks included) */
    if (run_train("lora.json", "paused", false, 6, NULL, NULL, &b, &res, &err) != ORC_OK) fail_msg("%s", err.msg);
    assert_true(res.paused);
    if (run_train("lora.json", "paused", true, 0, NULL, NULL, &b, &res, &err) != ORC_OK) fail_msg("%s", err.msg);
    assert_int_equal(b.n, 12);
    for (int i = 0; i < 12; i++) assert_true(a.loss[i] == b.loss[i]);
    char q[512];
    path_in(p, "straight");
    path_in(q, "paused");
    orc_llm *m = load_base();
    orc_lora *x = orc_lora_load(p, &m->cfg, false, &err), *y = orc_lora_load(q, &m->cfg, false, &err);
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(x->n_params, y->n_params);
    for (int i = 0; i < x->n_params; i++)
        assert_memory_equal(x->params[i]->data, y->params[i]->data, sizeof(float) * (size_t)x->params[i]->numel);
    assert_true(fabs(x->cfg.dropout - 0.1) < 1e-12);
    orc_lora_free(x);
    orc_lora_free(y);
    orc_llm_free(m);
    /* the CLI-style override: --lora on a recipe without a "lora" key */
    write_recipe("plain.json", "", 3);
    trace c = {0};
    if (run_train("plain.json", "cli", false, 0, "rank=2,alpha=4,targets=o,gate", NULL, &c, &res, &err) != ORC_OK)
        fail_msg("%s", err.msg);
    path_in(p, "cli/adapter_model.safetensors");
    f = orc_st_open(p, &err);
    assert_non_null(f);
    assert_int_equal(orc_st_count(f), 2 * 2 * 2);
    assert_non_null(orc_st_find(f, "base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight"));
    orc_st_close(f);
}

/* ---- files: PEFT names and config, round trip ------------------------------------------------ */

static void test_save_load_peft(void **state) {
    (void)state;
    orc_llm *m = load_base();
    orc_lora *a = random_adapter(&m->cfg, "rank=3,alpha=6,targets=q,k,v,o,gate,up,down,dropout=0.05", 11, false);
    snprintf(a->cfg.base_model, sizeof a->cfg.base_model, "tiny-base");
    char p[512];
    path_in(p, "saved");
    orc_error err = {0};
    assert_int_equal(orc_lora_save(a, p, NULL, 0, &err), ORC_OK);
    orc_lora *b = orc_lora_load(p, &m->cfg, false, &err);
    if (!b) fail_msg("%s", err.msg);
    assert_int_equal(b->cfg.rank, 3);
    assert_true(b->cfg.alpha == 6.0 && b->scale == 2.0f);
    assert_int_equal(b->cfg.targets, ORC_LORA_ALL_TARGETS);
    assert_string_equal(b->cfg.base_model, "tiny-base");
    for (int i = 0; i < a->n_params; i++) {
        assert_string_equal(a->params[i]->name, b->params[i]->name);
        assert_memory_equal(a->params[i]->data, b->params[i]->data, sizeof(float) * (size_t)a->params[i]->numel);
    }
    /* PEFT's names and shapes */
    path_in(p, "saved/adapter_model.safetensors");
    orc_st_file *f = orc_st_open(p, &err);
    assert_non_null(f);
    const orc_st_tensor_info *ti = orc_st_find(f, "base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight");
    assert_non_null(ti);
    assert_true(ti->shape[0] == 3 && ti->shape[1] == 32);
    ti = orc_st_find(f, "base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight");
    assert_true(ti && ti->shape[0] == 16 && ti->shape[1] == 3);
    ti = orc_st_find(f, "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
    assert_true(ti && ti->shape[0] == 3 && ti->shape[1] == 64);
    assert_int_equal(orc_st_count(f), 2 * 7 * 2);
    orc_st_close(f);
    /* PEFT's config keys */
    path_in(p, "saved/adapter_config.json");
    json_t *j = json_load_file(p, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "peft_type")), "LORA");
    assert_string_equal(json_string_value(json_object_get(j, "task_type")), "CAUSAL_LM");
    assert_string_equal(json_string_value(json_object_get(j, "bias")), "none");
    assert_int_equal(json_integer_value(json_object_get(j, "r")), 3);
    assert_true(json_number_value(json_object_get(j, "lora_alpha")) == 6.0);
    assert_true(fabs(json_number_value(json_object_get(j, "lora_dropout")) - 0.05) < 1e-12);
    assert_true(json_is_false(json_object_get(j, "fan_in_fan_out")));
    assert_string_equal(json_string_value(json_object_get(j, "base_model_name_or_path")), "tiny-base");
    json_t *tm = json_object_get(j, "target_modules");
    assert_int_equal(json_array_size(tm), 7);
    assert_string_equal(json_string_value(json_array_get(tm, 0)), "q_proj");
    assert_string_equal(json_string_value(json_array_get(tm, 6)), "down_proj");
    json_decref(j);
    orc_lora_free(a);
    orc_lora_free(b);
    orc_llm_free(m);
}

/* ---- merge == adapter forward; threads ------------------------------------------------------ */

static orc_tensor *logits_of(orc_ctx *ctx, orc_llm *m, const int32_t *in) {
    orc_tensor *ids = orc_new(ctx, ORC_I32, 2, ORC_SHAPE(2, 12));
    memcpy(ids->data, in, sizeof(int32_t) * 24);
    orc_tensor *l = orc_llm_forward(ctx, m, ids, NULL);
    GC_ASSERT_OK(ctx);
    return l;
}

static void test_merge_and_threads(void **state) {
    (void)state;
    orc_llm *m = load_base(), *merged = load_base();
    orc_lora *a = random_adapter(&m->cfg, "rank=4,alpha=16", 21, false);
    orc_lora *b = random_adapter(&m->cfg, "rank=2,alpha=2,targets=v,up", 22, false);
    orc_lora_stack st = {.n = 2, .ad = {a, b}, .weight = {1.0f, 0.5f}};
    orc_error err = {0};
    assert_int_equal(orc_llm_set_adapters(m, &st, &err), ORC_OK);
    assert_int_equal(orc_lora_merge(merged, a, 1.0f, &err), ORC_OK);
    assert_int_equal(orc_lora_merge(merged, b, 0.5f, &err), ORC_OK);
    int32_t in[24];
    for (int i = 0; i < 24; i++) in[i] = 32 + (i * 13) % 64;
    orc_arena *act = orc_arena_create(8 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, act, 0);
    orc_set_no_grad(&ctx, true);
    orc_tensor *la = logits_of(&ctx, m, in), *lm = logits_of(&ctx, merged, in);
    orc_llm *base = load_base();
    orc_tensor *lb = logits_of(&ctx, base, in);
    double maxd = 0, moved = 0;
    for (int64_t i = 0; i < la->numel; i++) {
        maxd = fmax(maxd, fabs(orc_f32(la)[i] - orc_f32(lm)[i]));
        moved = fmax(moved, fabs(orc_f32(la)[i] - orc_f32(lb)[i]));
    }
    assert_true(maxd < 1e-5);
    assert_true(moved > 1e-3); /* the adapters do change the output */
    /* 1 vs 3 threads: the adapted forward gives the same bits */
    int was = omp_get_max_threads();
    omp_set_num_threads(1);
    orc_tensor *l1 = logits_of(&ctx, m, in);
    omp_set_num_threads(3);
    orc_tensor *l3 = logits_of(&ctx, m, in);
    omp_set_num_threads(was);
    assert_memory_equal(l1->data, l3->data, sizeof(float) * (size_t)l1->numel);
    /* switching back to the base is one call */
    assert_int_equal(orc_llm_set_adapters(m, NULL, &err), ORC_OK);
    orc_tensor *l0 = logits_of(&ctx, m, in);
    assert_memory_equal(l0->data, lb->data, sizeof(float) * (size_t)l0->numel);
    orc_arena_destroy(act);
    orc_lora_free(a);
    orc_lora_free(b);
    orc_llm_free(m);
    orc_llm_free(merged);
    orc_llm_free(base);
}

/* ---- a named set --------------------------------------------------------------------------- */

static void test_set_select(void **state) {
    (void)state;
    orc_llm *m = load_base();
    orc_lora *a = random_adapter(&m->cfg, "rank=2,alpha=4", 31, false);
    char p[512];
    path_in(p, "set_a");
    orc_error err = {0};
    assert_int_equal(orc_lora_save(a, p, NULL, 0, &err), ORC_OK);
    orc_lora_set *s = orc_lora_set_new(&err);
    assert_int_equal(orc_lora_set_load(s, "style", p, &m->cfg, &err), ORC_OK);
    assert_int_equal(orc_lora_set_load(s, "style", p, &m->cfg, &err), ORC_EINVAL);
    orc_lora_stack st;
    assert_int_equal(orc_lora_set_select(s, "style:0.25", &st, &err), ORC_OK);
    assert_int_equal(st.n, 1);
    assert_true(st.weight[0] == 0.25f);
    orc_error e2 = {0};
    assert_int_equal(orc_lora_set_select(s, "nope", &st, &e2), ORC_EINVAL);
    assert_non_null(strstr(e2.msg, "style"));
    assert_int_equal(orc_lora_set_select(s, "", &st, &err), ORC_OK);
    assert_int_equal(st.n, 0);
    orc_lora_set_free(s);
    orc_lora_free(a);
    orc_llm_free(m);
}

/* ---- the GGUF LoRA file ---------------------------------------------------------------------- */

static void test_gguf_export(void **state) {
    (void)state;
    orc_llm *m = load_base();
    orc_lora *a = random_adapter(&m->cfg, "rank=4,alpha=8,targets=q,k,o,down", 41, false);
    char p[512];
    path_in(p, "adapter.gguf");
    orc_error err = {0};
    assert_int_equal(orc_lora_export_gguf(a, p, "test", &err), ORC_OK);
    orc_gguf_file *f = orc_gguf_open(p, &err);
    if (!f) fail_msg("%s", err.msg);
    const char *s;
    assert_int_equal(orc_gguf_get_str(f, "general.type", &s, NULL, &err), ORC_OK);
    assert_string_equal(s, "adapter");
    assert_int_equal(orc_gguf_get_str(f, "general.architecture", &s, NULL, &err), ORC_OK);
    assert_string_equal(s, "llama");
    assert_int_equal(orc_gguf_get_str(f, "adapter.type", &s, NULL, &err), ORC_OK);
    assert_string_equal(s, "lora");
    float alpha = 0;
    assert_int_equal(orc_gguf_get_f32(f, "adapter.lora.alpha", &alpha, &err), ORC_OK);
    assert_true(alpha == 8.0f);
    assert_int_equal(orc_gguf_tensor_count(f), 2 * 4 * 2);
    /* ggml dims: lora_a ne = [in, r], lora_b ne = [r, out] */
    const orc_gguf_tensor_info *ta = orc_gguf_find_tensor(f, "blk.1.attn_k.weight.lora_a");
    const orc_gguf_tensor_info *tb = orc_gguf_find_tensor(f, "blk.1.attn_k.weight.lora_b");
    assert_non_null(ta);
    assert_non_null(tb);
    assert_true(ta->type == ORC_GGML_F32 && ta->dims[0] == 32 && ta->dims[1] == 4);
    assert_true(tb->dims[0] == 4 && tb->dims[1] == 16);
    const orc_gguf_tensor_info *td = orc_gguf_find_tensor(f, "blk.0.ffn_down.weight.lora_a");
    assert_true(td && td->dims[0] == 64 && td->dims[1] == 4);
    assert_non_null(orc_gguf_find_tensor(f, "blk.0.attn_output.weight.lora_b"));
    assert_null(orc_gguf_find_tensor(f, "blk.0.attn_v.weight.lora_a"));
    /* A unchanged; B of q/k with the GGUF q/k row permutation, B of o as is */
    float buf[64 * 4], want[64 * 4];
    const orc_tensor *A = a->a[1 * ORC_LORA_N_TARGETS + ORC_LORA_K], *B = a->b[1 * ORC_LORA_N_TARGETS + ORC_LORA_K];
    assert_int_equal(orc_gguf_read_f32(f, "blk.1.attn_k.weight.lora_a", buf, A->numel, &err), ORC_OK);
    assert_memory_equal(buf, A->data, sizeof(float) * (size_t)A->numel);
    assert_int_equal(orc_gguf_read_f32(f, "blk.1.attn_k.weight.lora_b", buf, B->numel, &err), ORC_OK);
    orc_gguf_permute_qk(want, orc_f32(B), 2, 8, 4, true);
    assert_memory_equal(buf, want, sizeof(float) * (size_t)B->numel);
    assert_memory_not_equal(buf, B->data, sizeof(float) * (size_t)B->numel);
    B = a->b[0 * ORC_LORA_N_TARGETS + ORC_LORA_Q];
    assert_int_equal(orc_gguf_read_f32(f, "blk.0.attn_q.weight.lora_b", buf, B->numel, &err), ORC_OK);
    orc_gguf_permute_qk(want, orc_f32(B), 4, 8, 4, true);
    assert_memory_equal(buf, want, sizeof(float) * (size_t)B->numel);
    B = a->b[0 * ORC_LORA_N_TARGETS + ORC_LORA_O];
    assert_int_equal(orc_gguf_read_f32(f, "blk.0.attn_output.weight.lora_b", buf, B->numel, &err), ORC_OK);
    assert_memory_equal(buf, B->data, sizeof(float) * (size_t)B->numel);
    orc_gguf_close(f);
    orc_lora_free(a);
    orc_llm_free(m);
}

/* ---- accuracy recovery over a Q8_0 file ----------------------------------------------------------- */

static void test_recover_q8(void **state) {
    (void)state;
    char base[512], q[512];
    path_in(base, "base");
    path_in(q, "base_q8.gguf");
    orc_error err = {0};
    if (orc_quantize_model_dir(base, q, ORC_GGML_Q8_0, &err) != ORC_OK) fail_msg("%s", err.msg);
    /* The frozen base is the file's dequantized weights, exactly. */
    orc_qllm *ql = orc_qllm_load(q, &err);
    assert_non_null(ql);
    orc_llm *qbase = orc_qllm_to_llm(ql, false, &err);
    assert_non_null(qbase);
    orc_qllm_free(ql);
    orc_train_result res;
    char rp0[512], op0[512];
    path_in(rp0, "pretrain.json");
    path_in(op0, "recovered");
    orc_train_opts ro = {.recipe = rp0, .out_dir = op0, .steps = 30, .lora = "rank=4,alpha=8",
                         .recover_from = q};
    if (orc_train_run(&ro, &res, &err) != ORC_OK) fail_msg("%s", err.msg);
    /* eval loss on validation tokens: quantized base alone vs with the recovery adapter */
    int32_t ids[5 * 64], prev = 40;
    for (int d = 0; d < 5; d++)
        for (int i = 0; i < 64; i++) ids[d * 64 + i] = orc_test_stream_token(2, d, i, &prev);
    orc_eval_result e0, e1;
    assert_int_equal(orc_eval_ids(qbase, ids, 5 * 64, NULL, 32, 32, &e0, &err), ORC_OK);
    char dir[512];
    path_in(dir, "recovered");
    orc_lora *ad = orc_lora_load(dir, &qbase->cfg, false, &err);
    if (!ad) fail_msg("%s", err.msg);
    assert_non_null(strstr(ad->cfg.base_model, "base_q8.gguf"));
    orc_lora_stack st = {.n = 1, .ad = {ad}, .weight = {1}};
    assert_int_equal(orc_llm_set_adapters(qbase, &st, &err), ORC_OK);
    assert_int_equal(orc_eval_ids(qbase, ids, 5 * 64, NULL, 32, 32, &e1, &err), ORC_OK);
    print_message("recovery: quantized base %.4f, with adapter %.4f\n", e0.loss, e1.loss);
    assert_true(e1.loss < e0.loss - 0.05);
    /* the recipe saved in the checkpoint names the quantized base */
    char p[512];
    path_in(p, "recovered/trainer_state.json");
    json_t *j = json_load_file(p, 0, NULL);
    assert_non_null(j);
    const char *rf = json_string_value(json_object_get(json_object_get(j, "recipe"), "recover_from"));
    assert_non_null(rf);
    assert_non_null(strstr(rf, "base_q8"));
    json_decref(j);
    /* a feature adapter can start from the recovery adapter */
    write_recipe("feature.json", "", 2);
    orc_train_opts o = {0};
    char rp[512], op[512];
    path_in(rp, "feature.json");
    path_in(op, "feature");
    o.recipe = rp;
    o.out_dir = op;
    o.recover_from = q;
    o.lora_init = dir;
    if (orc_train_run(&o, &res, &err) != ORC_OK) fail_msg("%s", err.msg);
    orc_lora *fa = orc_lora_load(op, &qbase->cfg, false, &err);
    assert_non_null(fa);
    assert_int_equal(fa->cfg.rank, 4);
    orc_lora_free(fa);
    orc_lora_free(ad);
    orc_llm_free(qbase);
}

/* ---- bad input ---------------------------------------------------------------------------------- */

static void test_bad_input(void **state) {
    (void)state;
    orc_llm *m = load_base();
    orc_error err = {0};
    orc_lora_config c;
    orc_lora_config_default(&c);
    /* rank above min(in, out): k_proj is [16, 32] */
    c.rank = 17;
    assert_null(orc_lora_create(&m->cfg, &c, false, &err));
    assert_int_equal(err.code, ORC_EINVAL);
    assert_non_null(strstr(err.msg, "k_proj"));
    assert_non_null(strstr(err.msg, "[16, 32]"));
    c.targets = 1u << ORC_LORA_Q; /* q_proj is [32, 32]: rank 17 fits */
    orc_lora *ok = orc_lora_create(&m->cfg, &c, false, &err);
    assert_non_null(ok);
    orc_lora_free(ok);
    /* unknown targets and keys */
    orc_lora_config_default(&c);
    orc_error e1 = {0}, e2 = {0}, e3 = {0};
    assert_int_equal(orc_lora_config_parse("rank=8,targets=q,lm_head", &c, &e1), ORC_EINVAL);
    assert_non_null(strstr(e1.msg, "lm_head"));
    assert_int_equal(orc_lora_config_parse("rnak=8", &c, &e2), ORC_EINVAL);
    assert_non_null(strstr(e2.msg, "rnak"));
    assert_int_not_equal(orc_lora_config_parse("rank=0", &c, &e3), ORC_OK);
    /* an adapter for a wider model: the error names the tensor and both shapes */
    orc_llm_config wide;
    tiny_config(&wide, 64, 2);
    orc_lora *w = random_adapter(&wide, "rank=2,alpha=4,targets=v", 51, false);
    char p[512];
    path_in(p, "wide");
    assert_int_equal(orc_lora_save(w, p, NULL, 0, &err), ORC_OK);
    orc_error e4 = {0};
    assert_null(orc_lora_load(p, &m->cfg, false, &e4));
    assert_int_equal(e4.code, ORC_ESHAPE);
    assert_non_null(strstr(e4.msg, "base_model.model.model.layers.0.self_attn.v_proj.lora_"));
    assert_non_null(strstr(e4.msg, "[2, 64]"));
    assert_non_null(strstr(e4.msg, "[2, 32]"));
    /* ... for a deeper model: a tensor with no place */
    orc_llm_config deep;
    tiny_config(&deep, 32, 3);
    orc_lora *d = random_adapter(&deep, "rank=2,alpha=4,targets=v", 52, false);
    path_in(p, "deep");
    assert_int_equal(orc_lora_save(d, p, NULL, 0, &err), ORC_OK);
    orc_error e5 = {0};
    assert_null(orc_lora_load(p, &m->cfg, false, &e5));
    assert_non_null(strstr(e5.msg, "layers.2.self_attn.v_proj"));
    assert_non_null(strstr(e5.msg, "no place"));
    /* set_adapters refuses an adapter made for another shape */
    orc_lora_stack st = {.n = 1, .ad = {w}, .weight = {1}};
    orc_error e6 = {0};
    assert_int_equal(orc_llm_set_adapters(m, &st, &e6), ORC_ESHAPE);
    assert_null(m->lora);
    /* unsupported PEFT settings and unknown modules in adapter_config.json */
    path_in(p, "deep/adapter_config.json");
    FILE *f = fopen(p, "w");
    fputs("{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"q_proj\", \"embed_tokens\"]}",
          f);
    fclose(f);
    path_in(p, "deep");
    orc_error e7 = {0};
    assert_null(orc_lora_load(p, &m->cfg, false, &e7));
    assert_non_null(strstr(e7.msg, "embed_tokens"));
    path_in(p, "deep/adapter_config.json");
    f = fopen(p, "w");
    fputs("{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"v_proj\"], "
          "\"use_dora\": true}", f);
    fclose(f);
    path_in(p, "deep");
    orc_error e8 = {0};
    assert_null(orc_lora_load(p, &m->cfg, false, &e8));
    assert_non_null(strstr(e8.msg, "use_dora"));
    /* a recipe with a bad lora key names it */
    write_recipe("badlora.json", ", \"lora\": {\"rank\": 4, \"targets\": [\"q\", \"wq\"]}", 2);
    orc_error e9 = {0};
    assert_int_not_equal(run_train("badlora.json", "bad", false, 0, NULL, NULL, NULL, NULL, &e9), ORC_OK);
    assert_non_null(strstr(e9.msg, "wq"));
    orc_lora_free(w);
    orc_lora_free(d);
    orc_llm_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck),         cmocka_unit_test(test_train_frozen_base),
        cmocka_unit_test(test_train_run),         cmocka_unit_test(test_save_load_peft),
        cmocka_unit_test(test_merge_and_threads), cmocka_unit_test(test_set_select),
        cmocka_unit_test(test_gguf_export),       cmocka_unit_test(test_recover_q8),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, orc_test_scratch_teardown);
}
