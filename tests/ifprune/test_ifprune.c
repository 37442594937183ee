/* IFPruning: the masked forward equals the LM's forward when unmasked; the
 * compact model's logits equal the masked large model's (hard 0/1 mask, and
 * the soft values folded into down); gradients reach the predictor through
 * SoftTopK (finite differences on the mask head and a backbone weight);
 * selection gives k ascending channels per layer; save/load round trip;
 * the overlap diagnostic; a short joint training run (both stages) and its
 * directory; the predictor reading the whole user turn (pred_reads_input);
 * and the bad inputs: k > FFN width, a predictor whose vocab or
 * layer count does not match the LM, an empty instruction. */
#include "gradcheck.h"
#include "testdir.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "orchard/data.h"
#include "orchard/generate.h"
#include "orchard/ifprune.h"
#include "orchard/safetensors.h"

static orc_tokenizer *g_tok;

static int setup_tok(void **state) {
    (void)state;
    const char *texts[] = {"Reverse the word. hello world", "Compute the result: 12 + 30 = 42 #### 42",
                           "Decode the cipher with shift 3.", "the whale and the sea and the ship"};
    size_t lens[4];
    for (int i = 0; i < 4; i++) lens[i] = strlen(texts[i]);
    orc_tokenizer_train_opts o = {.vocab_size = 300};
    orc_error err = {0};
    g_tok = orc_tokenizer_train(texts, lens, 4, &o, &err);
    return g_tok ? 0 : -1;
}

static int teardown_tok(void **state) {
    (void)state;
    orc_tokenizer_free(g_tok);
    return 0;
}

static orc_llm_config lm_config(int64_t F) {
    orc_llm_config c;
    orc_llm_config_default(&c);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.head_dim = 8;
    c.intermediate_size = F;
    c.vocab_size = 320;
    c.max_position_embeddings = 64;
    return c;
}

static orc_ifp_predictor *make_pred(const orc_llm_config *lc, int64_t k, bool grad) {
    orc_llm_config pc;
    orc_ifp_predictor_config_default(&pc, lc);
    orc_ifp_config c;
    orc_ifp_config_default(&c, lc);
    c.k = k;
    c.proj_dim = 8;
    orc_error err = {0};
    orc_ifp_predictor *p = orc_ifp_predictor_create(&pc, &c, lc, grad, &err);
    if (!p) fail_msg("%s", err.msg);
    orc_ifp_predictor_init(p, 7);
    return p;
}

static orc_tensor *ids_tensor(orc_arena *a, int64_t B, int64_t T, uint64_t seed) {
    return gc_rand_ids(a, 2, ORC_SHAPE(B, T), seed, 300);
}

static void test_unmasked_equals_lm(void **state) {
    (void)state;
    orc_llm_config c = lm_config(24);
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, false, &err);
    orc_llm_init_weights(m, 3);
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_tensor *ids = ids_tensor(a, 2, 7, 1);
    orc_tensor *ref = orc_llm_forward(&ctx, m, ids, NULL);
    orc_tensor *got = orc_ifp_lm_forward(&ctx, m, ids, NULL, NULL);
    orc_tensor *ones = gc_rand(a, 3, ORC_SHAPE(2, 2, 24), 1, 0, 1, false);
    orc_fill(ones, 1.0f);
    orc_tensor *got1 = orc_ifp_lm_forward(&ctx, m, ids, ones, NULL);
    GC_ASSERT_OK(&ctx);
    assert_memory_equal(ref->data, got->data, sizeof(float) * (size_t)ref->numel);
    assert_memory_equal(ref->data, got1->data, sizeof(float) * (size_t)ref->numel);
    /* A zero mask changes the output (the FFN is really masked). */
    orc_tensor *zeros = gc_rand(a, 3, ORC_SHAPE(2, 2, 24), 1, 0, 1, false);
    orc_fill(zeros, 0.0f);
    orc_tensor *got0 = orc_ifp_lm_forward(&ctx, m, ids, zeros, NULL);
    GC_ASSERT_OK(&ctx);
    assert_memory_not_equal(ref->data, got0->data, sizeof(float) * (size_t)ref->numel);
    /* A mask of the wrong shape is an error naming the expected shape. */
    assert_null(orc_ifp_lm_forward(&ctx, m, ids, ids, NULL));
    assert_non_null(strstr(ctx.err.msg, "[2, 2, 24]"));
    orc_arena_destroy(a);
    orc_llm_free(m);
}

static void check_compact(bool soft) {
    orc_llm_config c = lm_config(24);
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, false, &err);
    orc_llm_init_weights(m, 5);
    /* Bigger FFN weights so the masked channels matter. */
    for (int64_t l = 0; l < 2; l++) {
        orc_rng r;
        orc_rng_init(&r, (uint64_t)(11 + l));
        orc_rng_fill_normal(&r, orc_f32(m->layers[l].w_down), m->layers[l].w_down->numel, 0, 0.3f);
    }
    const int64_t k = 8, L = 2, F = 24;
    int32_t idx[16];
    float vals[16];
    for (int64_t l = 0; l < L; l++)
        for (int64_t j = 0; j < k; j++) {
            idx[l * k + j] = (int32_t)(3 * j + l); /* ascending, distinct */
            vals[l * k + j] = 0.3f + 0.05f * (float)j;
        }
    orc_llm *cm = orc_ifp_compact(m, idx, soft ? vals : NULL, k, &err);
    assert_non_null(cm);
    assert_int_equal(cm->cfg.intermediate_size, k);
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_set_no_grad(&ctx, true);
    orc_tensor *mask = gc_rand(a, 3, ORC_SHAPE(1, L, F), 1, 0, 1, false);
    orc_fill(mask, 0.0f);
    for (int64_t l = 0; l < L; l++)
        for (int64_t j = 0; j < k; j++) orc_f32(mask)[l * F + idx[l * k + j]] = soft ? vals[l * k + j] : 1.0f;
    orc_tensor *ids = ids_tensor(a, 1, 9, 4);
    orc_tensor *big = orc_ifp_lm_forward(&ctx, m, ids, mask, NULL);
    orc_tensor *small = orc_llm_forward(&ctx, cm, ids, NULL);
    orc_tensor *full = orc_llm_forward(&ctx, m, ids, NULL);
    GC_ASSERT_OK(&ctx);
    double maxd = 0, maxfull = 0;
    for (int64_t i = 0; i < big->numel; i++) {
        maxd = fmax(maxd, fabs((double)orc_f32(big)[i] - orc_f32(small)[i]));
        maxfull = fmax(maxfull, fabs((double)orc_f32(full)[i] - orc_f32(small)[i]));
    }
    assert_true(maxd < 1e-5);
    assert_true(maxfull > 1e-3); /* the comparison is not vacuous */
    /* The compact model runs under the normal generator too. */
    orc_generator *g = orc_generator_new(cm, g_tok, 32, &err);
    assert_non_null(g);
    const float *lg = orc_generator_feed(g, orc_i32(ids), 9, &err);
    assert_non_null(lg);
    /* The generator hides ids past the tokenizer's vocabulary (-inf). */
    for (int64_t v = 0; v < (int64_t)orc_tokenizer_vocab_size(g_tok); v++)
        if (!(fabs((double)lg[v] - orc_f32(big)[8 * c.vocab_size + v]) < 1e-5))
            fail_msg("generator logit %lld: %g vs %g", (long long)v, (double)lg[v], (double)orc_f32(big)[8 * c.vocab_size + v]);
    orc_generator_free(g);
    /* Bad indices. */
    idx[1] = idx[0];
    orc_error_clear(&err);
    assert_null(orc_ifp_compact(m, idx, NULL, k, &err));
    assert_non_null(strstr(err.msg, "chosen twice"));
    orc_error_clear(&err);
    assert_null(orc_ifp_compact(m, idx, NULL, 25, &err));
    assert_non_null(strstr(err.msg, "k = 25"));
    orc_arena_destroy(a);
    orc_llm_free(cm);
    orc_llm_free(m);
}

static void test_compact_hard(void **state) {
    (void)state;
    check_compact(false);
}

static void test_compact_soft(void **state) {
    (void)state;
    check_compact(true);
}

/* Gradcheck of the loss through the masked LM w.r.t. predictor parameters. */
typedef struct {
    orc_llm *m;
    orc_ifp_predictor *p;
    orc_tensor *ids, *pids;
    int32_t lens[2];
} joint;

static orc_tensor *build_joint(orc_ctx *c, orc_tensor **in, void *u) {
    (void)in;
    joint *j = u;
    orc_tensor *mask = orc_ifp_mask(c, j->p, j->pids, j->lens);
    return orc_ifp_lm_forward(c, j->m, j->ids, mask, NULL);
}

static void test_predictor_gradients(void **state) {
    (void)state;
    orc_llm_config c = lm_config(12);
    c.vocab_size = 300;
    orc_error err = {0};
    joint j;
    j.m = orc_llm_create(&c, true, &err);
    orc_llm_init_weights(j.m, 9);
    for (int64_t l = 0; l < 2; l++) {
        orc_rng r;
        orc_rng_init(&r, (uint64_t)(21 + l));
        orc_rng_fill_normal(&r, orc_f32(j.m->layers[l].w_down), j.m->layers[l].w_down->numel, 0, 0.5f);
    }
    j.p = make_pred(&c, 4, true);
    orc_arena *a = orc_arena_create(0);
    j.ids = ids_tensor(a, 2, 5, 2);
    j.pids = ids_tensor(a, 2, 6, 3);
    j.lens[0] = 6;
    j.lens[1] = 4;
    orc_tensor *in[3] = {j.p->out_b, j.p->proj_w, j.p->lm->layers[1].w_up};
    gc_check("ifprune joint", build_joint, 3, in, &j, (gc_opts){.eps = 1e-3, .atol = 2e-3, .rtol = 2e-2, .max_checks = 60});
    orc_arena_destroy(a);
    orc_ifp_predictor_free(j.p);
    orc_llm_free(j.m);
}

static void test_select_and_overlap(void **state) {
    (void)state;
    orc_llm_config c = lm_config(24);
    c.vocab_size = 300;
    orc_ifp_predictor *p = make_pred(&c, 8, false);
    int32_t idx[16];
    float vals[16];
    orc_error err = {0};
    assert_int_equal(orc_ifp_select(p, g_tok, "Reverse the word.", idx, vals, &err), ORC_OK);
    for (int l = 0; l < 2; l++)
        for (int j = 0; j < 8; j++) {
            assert_true(idx[l * 8 + j] >= 0 && idx[l * 8 + j] < 24);
            if (j) assert_true(idx[l * 8 + j] > idx[l * 8 + j - 1]);
            assert_true(vals[l * 8 + j] > 0 && vals[l * 8 + j] <= 1);
        }
    /* Empty instruction. */
    orc_error_clear(&err);
    assert_int_equal(orc_ifp_select(p, g_tok, "  \n", idx, vals, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "instruction is empty"));
    /* Overlap: identical instructions collapse; different ones do not (here). */
    const char *same[3] = {"Reverse the word.", "Reverse the word.", "Reverse the word."};
    int groups[3] = {0, 0, 1};
    double s[2], d[2];
    bool eq = false;
    assert_int_equal(orc_ifp_overlap(p, g_tok, same, groups, 3, s, d, &eq, &err), ORC_OK);
    assert_true(eq);
    assert_true(s[0] == 1.0 && d[1] == 1.0);
    const char *mixed[4] = {"Reverse the word.", "Reverse the word hello.", "Compute the result: 12 + 30",
                            "the whale and the sea"};
    int g2[4] = {0, 0, 1, 1};
    assert_int_equal(orc_ifp_overlap(p, g_tok, mixed, g2, 4, s, d, &eq, &err), ORC_OK);
    assert_false(eq);
    for (int l = 0; l < 2; l++) assert_true(s[l] >= 0 && s[l] <= 1 && d[l] >= 0 && d[l] <= 1);
    orc_error_clear(&err);
    assert_int_equal(orc_ifp_overlap(p, g_tok, same, groups, 1, s, d, &eq, &err), ORC_EINVAL);
    orc_ifp_predictor_free(p);
}

static void test_bad_configs(void **state) {
    (void)state;
    orc_llm_config c = lm_config(24);
    orc_llm_config pc;
    orc_ifp_predictor_config_default(&pc, &c);
    orc_ifp_config ic;
    orc_ifp_config_default(&ic, &c);
    assert_int_equal(ic.k, 8);
    orc_error err = {0};
    ic.k = 25;
    assert_null(orc_ifp_predictor_create(&pc, &ic, &c, false, &err));
    assert_non_null(strstr(err.msg, "k = 25"));
    assert_non_null(strstr(err.msg, "[1, 24]"));
    ic.k = 0;
    orc_error_clear(&err);
    assert_null(orc_ifp_predictor_create(&pc, &ic, &c, false, &err));
    ic.k = 8;
    pc.vocab_size = 400;
    orc_error_clear(&err);
    assert_null(orc_ifp_predictor_create(&pc, &ic, &c, false, &err));
    if (!strstr(err.msg, "vocab_size 400")) fail_msg("%s", err.msg);
    pc.vocab_size = c.vocab_size;
    orc_ifp_predictor *p = orc_ifp_predictor_create(&pc, &ic, &c, false, &err);
    assert_non_null(p);
    orc_llm_config other = c;
    other.num_hidden_layers = 3;
    orc_error_clear(&err);
    assert_int_equal(orc_ifp_check_match(p, &other, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "num_hidden_layers = 3"));
    other = c;
    other.intermediate_size = 30;
    orc_error_clear(&err);
    assert_int_equal(orc_ifp_check_match(p, &other, &err), ORC_EINVAL);
    assert_int_equal(orc_ifp_check_match(p, &c, &err), ORC_OK);
    orc_ifp_predictor_free(p);
}

/* A directory with a tiny LM, a shard and a task file; train both stages,
 * load the result, and compare its selection with a re-load. */
static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A fresh LM (FFN 24, seed 1) with the test tokenizer saved as a model dir. */
static orc_llm_config save_lm(const char *lm_dir) {
    orc_llm_config c = lm_config(24);
    c.vocab_size = (int64_t)orc_tokenizer_vocab_size(g_tok);
    orc_error err = {0};
    orc_llm *m = orc_llm_create(&c, false, &err);
    assert_non_null(m);
    orc_llm_init_weights(m, 1);
    assert_int_equal(orc_ifp_save(lm_dir, m, g_tok, NULL, &err), ORC_OK);
    orc_llm_free(m);
    return c;
}

/* The tiny training run both training tests start from: 3 SFT steps of
 * batch 2 x 24 tokens, k = 6 of the FFN's 24 channels. */
static orc_ifp_train_opts tiny_train_opts(const char *lm_dir, const char *out, const char *tasks) {
    orc_ifp_train_opts o;
    orc_ifp_train_opts_default(&o);
    o.model_dir = lm_dir;
    o.out_dir = out;
    o.tasks = tasks;
    o.stage2_steps = 3;
    o.batch = 2;
    o.seq = 24;
    o.k = 6;
    return o;
}

static void test_train_and_load(void **state) {
    (void)state;
    char dir[64];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "ifp_test"), 0);
    char lm_dir[512], out[512], shard[512], tasks[512], path[600], cmd[1200];
    snprintf(lm_dir, sizeof lm_dir, "%s/lm", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(shard, sizeof shard, "%s/train.bin", dir);
    snprintf(tasks, sizeof tasks, "%s/train.jsonl", dir);
    orc_llm_config c = save_lm(lm_dir);
    orc_error err = {0};
    orc_shard_writer *w = orc_shard_writer_open(shard, c.vocab_size, &err);
    assert_non_null(w);
    for (int d = 0; d < 20; d++) {
        const char *t = "the whale and the sea and the ship sailed on the sea. ";
        int32_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(orc_tokenizer_encode(g_tok, t, strlen(t), 0, &ids, &n, &err), ORC_OK);
        assert_int_equal(orc_shard_writer_add(w, ids, n, &err), ORC_OK);
        free(ids);
    }
    assert_int_equal(orc_shard_writer_finish(w, &err), ORC_OK);
    write_file(tasks, "{\"instruction\": \"Reverse the word.\", \"input\": \"hello\", \"solution\": \"#### olleh\"}\n"
                      "{\"instruction\": \"Compute the result.\", \"input\": \"12 + 30\", \"solution\": \"12 + 30 = "
                      "42\\n#### 42\"}\n");
    orc_ifp_train_opts o = tiny_train_opts(lm_dir, out, tasks);
    o.corpus = shard;
    o.stage1_steps = 3;
    o.pred_seq = 8;
    o.lr_mult = 2.0;
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    o.log_path = path;
    orc_ifp_train_result res;
    orc_status st = orc_ifp_train(&o, &res, &err);
    if (st != ORC_OK) fail_msg("%s", err.msg);
    assert_int_equal(res.steps, 6);
    assert_true(isfinite(res.loss));
    /* Six log lines, stages 1 then 2. */
    FILE *f = fopen(path, "r");
    char line[512];
    int lines = 0, stage2 = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        stage2 += strstr(line, "\"stage\": 2") != NULL;
    }
    fclose(f);
    assert_int_equal(lines, 6);
    assert_int_equal(stage2, 3);
    /* A second run into the same directory is refused. */
    orc_error_clear(&err);
    assert_int_not_equal(orc_ifp_train(&o, &res, &err), ORC_OK);
    assert_non_null(strstr(err.msg, "already holds"));

    orc_ifp_model *im = orc_ifp_load(out, false, &err);
    if (!im) fail_msg("%s", err.msg);
    assert_int_equal(im->pred->cfg.k, 6);
    assert_true(im->pred->cfg.lr_mult == 2.0);
    assert_int_equal(im->pred->cfg.step, 6);
    int32_t i1[12], i2[12];
    assert_int_equal(orc_ifp_select(im->pred, im->tok, "Reverse the word.", i1, NULL, &err), ORC_OK);
    orc_ifp_model *im2 = orc_ifp_load(out, false, &err);
    assert_int_equal(orc_ifp_select(im2->pred, im2->tok, "Reverse the word.", i2, NULL, &err), ORC_OK);
    assert_memory_equal(i1, i2, sizeof i1);
    orc_ifp_model_free(im2);
    orc_ifp_model_free(im);

    /* ifprune.json claiming another layer count is refused on load. */
    snprintf(cmd, sizeof cmd, "sed -i 's/\"lm_layers\": 2/\"lm_layers\": 5/' %s/ifprune.json", out);
    assert_int_equal(system(cmd), 0);
    orc_error_clear(&err);
    assert_null(orc_ifp_load(out, false, &err));
    if (!strstr(err.msg, "5 layers")) fail_msg("%s", err.msg);
    /* k above the FFN width is refused by training. */
    snprintf(out, sizeof out, "%s/out2", dir);
    o.out_dir = out;
    o.k = 25;
    o.log_path = NULL;
    orc_error_clear(&err);
    assert_int_equal(orc_ifp_train(&o, &res, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "k = 25"));
    orc_test_dir_remove(dir);
}

/* The predictor's weights file of a trained directory (malloc'd, *n bytes). */
static char *read_predictor(const char *out, size_t *n) {
    char path[600];
    snprintf(path, sizeof path, "%s/predictor/model.safetensors", out);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    char *buf = malloc(*n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, *n, f), *n);
    fclose(f);
    return buf;
}

/* Stage-2 training (3 steps) of lm_dir on a task file into dir/name, reading
 * the instruction or the whole user turn; returns the predictor's weights
 * file (malloc'd, *n bytes). */
static char *train_predictor(const char *dir, const char *name, const char *tasks, bool whole_turn, size_t *n) {
    char lm_dir[512], out[512];
    snprintf(lm_dir, sizeof lm_dir, "%s/lm", dir);
    snprintf(out, sizeof out, "%s/%s", dir, name);
    orc_ifp_train_opts o = tiny_train_opts(lm_dir, out, tasks);
    o.pred_seq = 16;
    o.lr_mult = 1.0;
    o.pred_reads_input = whole_turn;
    orc_error err = {0};
    orc_ifp_train_result res;
    if (orc_ifp_train(&o, &res, &err) != ORC_OK) fail_msg("%s", err.msg);
    return read_predictor(out, n);
}

/* A scratch dir (char[64]) holding a fresh LM (lm_dir) and a two-item task
 * file (tasks), both char[512]: the training-option tests' common start. */
static void two_task_setup(char *dir, char *lm_dir, char *tasks) {
    assert_int_equal(orc_test_dir_make(dir, 64, "ifp_test"), 0);
    snprintf(lm_dir, 512, "%s/lm", dir);
    snprintf(tasks, 512, "%s/tasks.jsonl", dir);
    save_lm(lm_dir);
    write_file(tasks, "{\"instruction\": \"Reverse the word.\", \"input\": \"hello\", \"solution\": \"#### olleh\"}\n"
                      "{\"instruction\": \"Add the numbers.\", \"input\": \"2 3\", \"solution\": \"#### 5\"}\n");
}

/* predictor_steps: the predictor stops at that step while the LM goes on, so
 * 3 and 4 steps with the predictor frozen after the first give the same
 * predictor bit for bit (the first step's rate is the same: warmup 1), and
 * not the one that trained for all 3 steps. */
static void test_predictor_steps(void **state) {
    (void)state;
    char dir[64], lm_dir[512], tasks[512], out[3][512];
    two_task_setup(dir, lm_dir, tasks);
    const int64_t steps[3] = {3, 4, 3}, frozen[3] = {1, 1, 0};
    char *w[3];
    size_t n[3];
    for (int r = 0; r < 3; r++) {
        snprintf(out[r], sizeof out[r], "%s/run%d", dir, r);
        orc_ifp_train_opts o = tiny_train_opts(lm_dir, out[r], tasks);
        o.pred_seq = 16;
        o.lr_mult = 1.0;
        o.warmup = 1;
        o.stage2_steps = steps[r];
        o.predictor_steps = frozen[r];
        orc_error err = {0};
        orc_ifp_train_result res;
        if (orc_ifp_train(&o, &res, &err) != ORC_OK) fail_msg("%s", err.msg);
        w[r] = read_predictor(out[r], &n[r]);
    }
    assert_int_equal(n[0], n[1]);
    assert_memory_equal(w[0], w[1], n[0]);
    assert_int_equal(n[0], n[2]);
    assert_memory_not_equal(w[0], w[2], n[0]);
    for (int r = 0; r < 3; r++) free(w[r]);
    orc_test_dir_remove(dir);
}

/* One numeric field of every line of a training log (at most max; returns
 * the count). */
static int read_log_field(const char *path, const char *field, double *out, int max) {
    char key[64];
    snprintf(key, sizeof key, "\"%s\": ", field);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, key);
        assert_non_null(p);
        out[n++] = strtod(p + strlen(key), NULL);
    }
    fclose(f);
    return n;
}

/* Options of run r of a logged comparison: DIR/run<r>, DIR/log<r>.jsonl, a
 * 16-token predictor input, warmup 1, `steps` SFT steps. */
static orc_ifp_train_opts logged_run(const char *dir, const char *lm_dir, const char *tasks, int r, int64_t steps,
                                     char *out, char *log) {
    snprintf(out, 512, "%s/run%d", dir, r);
    snprintf(log, 512, "%s/log%d.jsonl", dir, r);
    orc_ifp_train_opts o = tiny_train_opts(lm_dir, out, tasks);
    o.pred_seq = 16;
    o.warmup = 1;
    o.stage2_steps = steps;
    o.log_path = log;
    return o;
}

/* dense_steps: for its first steps IFPruning's LM trains exactly as the
 * dense baseline does (same losses bit for bit: no mask, and the idle
 * predictor's zero gradients change neither the clipping nor the LM's
 * updates); the masks switch on after them. Bad values are refused. */
static void test_dense_steps(void **state) {
    (void)state;
    char dir[64], lm_dir[512], tasks[512], out[3][512], log[3][512];
    two_task_setup(dir, lm_dir, tasks);
    double loss[3][4];
    for (int r = 0; r < 3; r++) { /* 0: dense baseline, 1: dense for 2 steps then masked, 2: masked throughout */
        orc_ifp_train_opts o = logged_run(dir, lm_dir, tasks, r, 4, out[r], log[r]);
        o.dense = r == 0;
        o.dense_steps = r == 1 ? 2 : 0;
        orc_error err = {0};
        orc_ifp_train_result res;
        if (orc_ifp_train(&o, &res, &err) != ORC_OK) fail_msg("%s", err.msg);
        assert_int_equal(read_log_field(log[r], "loss", loss[r], 4), 4);
    }
    for (int i = 0; i < 2; i++)
        if (loss[1][i] != loss[0][i]) fail_msg("step %d: %.9g vs %.9g", i + 1, loss[1][i], loss[0][i]);
    assert_true(loss[1][2] != loss[0][2]); /* step 3, the first masked one */
    assert_true(loss[2][0] != loss[0][0]);
    /* The masks must switch on inside the run, and the predictor cannot be frozen before it starts. */
    orc_ifp_train_opts o = tiny_train_opts(lm_dir, out[0], tasks);
    snprintf(out[0], sizeof out[0], "%s/bad", dir);
    o.pred_seq = 16;
    o.dense_steps = 3;
    orc_error err = {0};
    assert_int_equal(orc_ifp_train(&o, NULL, &err), ORC_EINVAL);
    if (!strstr(err.msg, "dense-steps 3")) fail_msg("%s", err.msg);
    o.dense_steps = 1;
    o.predictor_steps = 1;
    orc_error_clear(&err);
    assert_int_equal(orc_ifp_train(&o, NULL, &err), ORC_EINVAL);
    if (!strstr(err.msg, "predictor-steps 1")) fail_msg("%s", err.msg);
    orc_test_dir_remove(dir);
}

/* anneal_steps: after the dense steps the active width falls linearly from
 * the FFN width (24) to k (6), reaching k at the last annealing step; the
 * log records it per step. Annealing past the end of the run is refused. */
static void test_anneal_steps(void **state) {
    (void)state;
    char dir[64], lm_dir[512], tasks[512], out[512], log[512];
    two_task_setup(dir, lm_dir, tasks); /* the LM's FFN is 24 wide */
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(log, sizeof log, "%s/log.jsonl", dir);
    orc_ifp_train_opts o = tiny_train_opts(lm_dir, out, tasks);
    o.pred_seq = 16;
    o.stage2_steps = 6;
    o.dense_steps = 1;
    o.anneal_steps = 3;
    o.log_path = log;
    orc_error err = {0};
    if (orc_ifp_train(&o, NULL, &err) != ORC_OK) fail_msg("%s", err.msg);
    double active[6];
    assert_int_equal(read_log_field(log, "active", active, 6), 6);
    const double want[6] = {24, 18, 12, 6, 6, 6};
    for (int i = 0; i < 6; i++)
        if (active[i] != want[i]) fail_msg("step %d: %g channels active, want %g", i + 1, active[i], want[i]);
    snprintf(out, sizeof out, "%s/bad", dir);
    o.anneal_steps = 6;
    o.log_path = NULL;
    assert_int_equal(orc_ifp_train(&o, NULL, &err), ORC_EINVAL);
    if (!strstr(err.msg, "anneal-steps 6")) fail_msg("%s", err.msg);
    orc_test_dir_remove(dir);
}

/* The mask-balance loss: F / k for a batch whose rows keep the same k
 * channels (at any scale), 1 for rows that share the channels out evenly; its gradient
 * through SoftTopK against finite differences; a bad k is an error. */
static orc_tensor *build_balance(orc_ctx *ctx, orc_tensor **in, void *user) {
    (void)user;
    return orc_ifp_balance_loss(ctx, orc_soft_topk(ctx, in[0], 2, 0.5f), 2);
}

static void test_balance_loss(void **state) {
    (void)state;
    orc_ctx ctx;
    orc_ctx_init(&ctx, orc_arena_create(0), 1);
    orc_tensor *m = orc_new(&ctx, ORC_F32, 3, ORC_SHAPE(2, 1, 4));
    const float same[8] = {1, 1, 0, 0, 1, 1, 0, 0}, apart[8] = {1, 1, 0, 0, 0, 0, 1, 1};
    memcpy(orc_f32(m), same, sizeof same);
    assert_float_equal(orc_f32(orc_ifp_balance_loss(&ctx, m, 2))[0], 2.0f, 1e-6f);
    for (int i = 0; i < 8; i++) orc_f32(m)[i] *= 0.3f; /* the scale of the soft values does not matter */
    assert_float_equal(orc_f32(orc_ifp_balance_loss(&ctx, m, 2))[0], 2.0f, 1e-5f);
    memcpy(orc_f32(m), apart, sizeof apart);
    assert_float_equal(orc_f32(orc_ifp_balance_loss(&ctx, m, 2))[0], 1.0f, 1e-6f);
    assert_null(orc_ifp_balance_loss(&ctx, m, 5));
    if (!strstr(ctx.err.msg, "1 <= k <= F")) fail_msg("%s", ctx.err.msg);
    orc_arena_destroy(ctx.arena);
    orc_arena *a = orc_arena_create(0);
    orc_tensor *z = gc_rand(a, 3, ORC_SHAPE(3, 2, 6), 11, -2, 2, true);
    gc_check("ifprune balance", build_balance, 1, &z, NULL, (gc_opts){.eps = 1e-3, .atol = 2e-3, .rtol = 2e-2});
    orc_arena_destroy(a);
}

/* Gradient descent on the balance term alone moves eight nearly identical
 * rows of scores (one shared pattern plus 1% noise: every row keeps about
 * the same channels) apart: the term falls from near F / k = 4 to below 2
 * (0.92 when written), which identical masks cannot reach. */
static void test_balance_descent(void **state) {
    (void)state;
    const int64_t B = 8, F = 16, k = 4;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *base = gc_rand(a, 3, ORC_SHAPE(1, 1, F), 5, -2, 2, false);
    orc_tensor *noise = gc_rand(a, 3, ORC_SHAPE(B, 1, F), 6, -0.02f, 0.02f, false);
    orc_error err = {0};
    orc_tensor *z = orc_param_new(a, 3, ORC_SHAPE(B, 1, F), "z", &err); /* a leaf whose gradient persists */
    assert_non_null(z);
    for (int64_t b = 0; b < B; b++)
        for (int64_t f = 0; f < F; f++) orc_f32(z)[b * F + f] = orc_f32(base)[f] + orc_f32(noise)[b * F + f];
    orc_ctx ctx;
    orc_ctx_init(&ctx, orc_arena_create(0), 1);
    double first = 0, last = 0;
    for (int it = 0; it < 300; it++) {
        orc_tensor *l = orc_ifp_balance_loss(&ctx, orc_soft_topk(&ctx, z, k, 0.5f), k);
        assert_non_null(l);
        last = orc_f32(l)[0];
        if (it == 0) first = last;
        memset(z->grad, 0, (size_t)z->numel * sizeof(float));
        assert_int_equal(orc_backward(&ctx, l), ORC_OK);
        for (int64_t i = 0; i < z->numel; i++) orc_f32(z)[i] -= 2.0f * z->grad[i];
        orc_ctx_reset(&ctx);
    }
    if (!(first > 3.5 && last < 2.0)) fail_msg("balance term %.4f -> %.4f", first, last);
    orc_arena_destroy(ctx.arena);
    orc_arena_destroy(a);
}

/* balance > 0 changes training only through the gradient: step 1's loss
 * equals the run without it; the log records the balance term on every
 * masked step (and not without it). A negative weight is refused. */
static void test_balance_training(void **state) {
    (void)state;
    char dir[64], lm_dir[512], tasks[512], out[2][512], log[2][512];
    two_task_setup(dir, lm_dir, tasks);
    double loss[2][3], bal[3];
    for (int r = 0; r < 2; r++) {
        orc_ifp_train_opts o = logged_run(dir, lm_dir, tasks, r, 3, out[r], log[r]);
        o.balance = r == 1 ? 5.0 : 0.0;
        orc_error err = {0};
        if (orc_ifp_train(&o, NULL, &err) != ORC_OK) fail_msg("%s", err.msg);
        assert_int_equal(read_log_field(log[r], "loss", loss[r], 3), 3);
    }
    char text[4096] = {0};
    FILE *f = fopen(log[0], "r");
    assert_non_null(f);
    assert_true(fread(text, 1, sizeof text - 1, f) > 0);
    fclose(f);
    assert_null(strstr(text, "balance")); /* off: not logged */
    assert_int_equal(read_log_field(log[1], "balance", bal, 3), 3);
    for (int i = 0; i < 3; i++)
        if (!(bal[i] > 0.5 && bal[i] <= 4.0 + 1e-6)) fail_msg("step %d: balance term %g", i + 1, bal[i]);
    if (loss[1][0] != loss[0][0]) fail_msg("step 1: %.9g vs %.9g", loss[1][0], loss[0][0]);
    orc_ifp_train_opts o = tiny_train_opts(lm_dir, out[0], tasks);
    snprintf(out[0], sizeof out[0], "%s/bad", dir);
    o.balance = -1;
    orc_error err = {0};
    assert_int_equal(orc_ifp_train(&o, NULL, &err), ORC_EINVAL);
    if (!strstr(err.msg, "balance weight -1")) fail_msg("%s", err.msg);
    orc_test_dir_remove(dir);
}

/* A finished study's results.json with the given mean accuracies (%);
 * each model's math accuracy is its mean + 1, strings its mean - 1. */
static void write_results(const char *dir, int seed, double full, double small, double ifp, double speed,
                          const char *lr) {
    char path[600], text[2000], models[3][300];
    const char *names[3] = {"dense-full", "dense-small", "ifprune"};
    const double acc[3] = {full, small, ifp};
    for (int a = 0; a < 3; a++)
        snprintf(models[a], sizeof models[a], "{\"model\": \"%s\", \"mean_accuracy\": %g, \"domains\": {\"math\": "
                 "{\"accuracy\": %g}, \"strings\": {\"accuracy\": %g}}}", names[a], acc[a], acc[a] + 1, acc[a] - 1);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/results.json", dir);
    snprintf(text, sizeof text,
             "{\"models\": [%s, %s, %s], \"decode_speed_vs_dense_small\": %g, \"settings\": {\"seed\": %d, "
             "\"lr\": %s, \"ffn_K\": 576, \"speed_rounds\": %d}}\n", models[0], models[1], models[2], speed, seed, lr,
             seed * 10);
    write_file(path, text);
}

/* A scratch directory dir with study paths d[0..6] = dir/s0..s6, the first
 * three written: seeds 1, 2, 3 at lr 0.003 with gains 4, 6 and 2 points. */
static void three_studies(char dir[64], char d[7][512]) {
    assert_int_equal(orc_test_dir_make(dir, 64, "ifp_test"), 0);
    for (int i = 0; i < 7; i++) snprintf(d[i], 512, "%s/s%d", dir, i);
    write_results(d[0], 1, 40, 30, 34, 1.0, "0.003");
    write_results(d[1], 2, 30, 32, 38, 0.9, "0.003");
    write_results(d[2], 3, 35, 28, 30, 1.1, "0.003");
}

/* The multi-seed summary: means, the gain's t interval (2 df: 4.303 sd /
 * sqrt 3), the gap of the means, the target on the means; studies that
 * differ in more than the seed, a seed twice and a missing file refused. */
/* The study refuses a bad schedule or balance weight before it creates
 * anything (the baselines would otherwise train for hours first). */
static void test_study_checks_first(void **state) {
    (void)state;
    char dir[64], out[128];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "ifp_first"), 0);
    snprintf(out, sizeof out, "%s/study", dir);
    orc_ifp_study_opts o;
    orc_ifp_study_opts_default(&o);
    o.out_dir = out;
    o.balance = -1;
    orc_error err = {0};
    assert_int_equal(orc_ifp_study(&o, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "balance weight -1"));
    o.balance = 0.1;
    o.dense_steps = o.stage1_steps + o.stage2_steps;
    err = (orc_error){0};
    assert_int_equal(orc_ifp_study(&o, &err), ORC_EINVAL);
    if (!strstr(err.msg, "--dense-steps")) fail_msg("%s", err.msg);
    assert_int_equal(access(out, F_OK), -1);
    orc_test_dir_remove(dir);
}

static void test_study_summary(void **state) {
    (void)state;
    char dir[64], d[7][512];
    three_studies(dir, d);
    const char *dirs[3] = {d[0], d[1], d[2]};
    orc_ifp_summary s;
    orc_error err = {0};
    if (orc_ifp_study_summary(dirs, 3, &s, &err) != ORC_OK) fail_msg("%s", err.msg);
    assert_int_equal(s.n, 3);
    assert_true(s.seed[1] == 2);
    assert_true(fabs(s.gain[0] - 4) < 1e-9 && fabs(s.gain[1] - 6) < 1e-9 && fabs(s.gain[2] - 2) < 1e-9);
    assert_true(fabs(s.mean_acc[0] - 35) < 1e-9 && fabs(s.mean_acc[1] - 30) < 1e-9 && fabs(s.mean_acc[2] - 34) < 1e-9);
    assert_true(fabs(s.mean_gain - 4) < 1e-9 && fabs(s.gain_sd - 2) < 1e-9);
    assert_true(fabs(s.gain_ci95 - 4.303 * 2 / sqrt(3.0)) < 1e-9);
    /* ifprune - dense-full: -6, +8, -5 (mean -1, sd sqrt(61)) */
    assert_true(fabs(s.vs_full_ci95 - 4.303 * sqrt(61.0) / sqrt(3.0)) < 1e-9);
    assert_true(fabs(s.gap_closed - 0.8) < 1e-9 && fabs(s.mean_speed - 1.0) < 1e-9);
    assert_false(s.target_met); /* +4 < 5 points */
    assert_int_equal(s.n_domains, 2);
    assert_string_equal(s.domain[0], "math");
    assert_string_equal(s.domain[1], "strings");
    for (int a = 0; a < 3; a++)
        assert_true(fabs(s.domain_mean[0][a] - (s.mean_acc[a] + 1)) < 1e-9 &&
                    fabs(s.domain_mean[1][a] - (s.mean_acc[a] - 1)) < 1e-9);
    orc_ifp_summary_free(&s);
    /* one study: no interval; +6 points, 60% of a 10-point gap, 0.95x: met */
    write_results(d[3], 4, 40, 30, 36, 0.95, "0.003");
    if (orc_ifp_study_summary((const char *const[]){d[3]}, 1, &s, &err) != ORC_OK) fail_msg("%s", err.msg);
    assert_true(isnan(s.gain_ci95) && s.target_met);
    orc_ifp_summary_free(&s);
    /* another learning rate, the same seed twice, no results.json */
    write_results(d[4], 5, 40, 30, 36, 1.0, "0.001");
    assert_int_equal(orc_ifp_study_summary((const char *const[]){d[0], d[4]}, 2, &s, &err), ORC_EINVAL);
    if (!strstr(err.msg, "\"lr\"")) fail_msg("%s", err.msg);
    orc_error_clear(&err);
    assert_int_equal(orc_ifp_study_summary((const char *const[]){d[0], d[0]}, 2, &s, &err), ORC_EINVAL);
    if (!strstr(err.msg, "both seed 1")) fail_msg("%s", err.msg);
    orc_error_clear(&err);
    assert_int_equal(orc_ifp_study_summary((const char *const[]){d[0], d[5]}, 2, &s, &err), ORC_EIO);
    if (!strstr(err.msg, "s5/results.json")) fail_msg("%s", err.msg);
    orc_test_dir_remove(dir);
}

/* --versus: the second set's gains minus the first's, paired by seed
 * whatever the order (gains 4, 6, 2 against 7, 5, 8: diffs 3, -1, 6, mean
 * 8/3), the differing setting named; a seed missing from one set refused. */
static void test_study_versus(void **state) {
    (void)state;
    char dir[64], d[7][512];
    three_studies(dir, d);
    write_results(d[3], 2, 30, 32, 37, 1.0, "0.001");
    write_results(d[4], 3, 35, 28, 36, 1.0, "0.001");
    write_results(d[5], 1, 41, 31, 38, 1.0, "0.001");
    write_results(d[6], 4, 41, 31, 38, 1.0, "0.001");
    orc_ifp_versus v;
    orc_error err = {0};
    if (orc_ifp_study_versus((const char *const[]){d[0], d[1], d[2]}, 3, (const char *const[]){d[3], d[4], d[5]}, 3,
                             &v, &err) != ORC_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(v.n, 3);
    assert_true(fabs(v.diff[0] - 3) < 1e-9 && fabs(v.diff[1] + 1) < 1e-9 && fabs(v.diff[2] - 6) < 1e-9);
    assert_true(fabs(v.mean_diff - 8.0 / 3) < 1e-9);
    const double m = 8.0 / 3, sd = sqrt(((3 - m) * (3 - m) + (1 + m) * (1 + m) + (6 - m) * (6 - m)) / 2);
    assert_true(fabs(v.diff_ci95 - 4.303 * sd / sqrt(3.0)) < 1e-9);
    assert_string_equal(v.settings, "lr");
    assert_true(fabs(v.b.mean_gain - 20.0 / 3) < 1e-9);
    orc_ifp_versus_free(&v);
    assert_int_equal(orc_ifp_study_versus((const char *const[]){d[0], d[1]}, 2, (const char *const[]){d[3], d[6]}, 2,
                                          &v, &err), ORC_EINVAL);
    if (!strstr(err.msg, "seed 1") || !strstr(err.msg, "s0")) fail_msg("%s", err.msg);
    orc_error_clear(&err);
    assert_int_equal(orc_ifp_study_versus((const char *const[]){d[0], d[1]}, 2, (const char *const[]){d[3]}, 1, &v,
                                          &err), ORC_EINVAL);
    if (!strstr(err.msg, "2 studies against 1")) fail_msg("%s", err.msg);
    orc_test_dir_remove(dir);
}

/* pred_reads_input: with empty inputs the user turn is the instruction, so
 * both modes train the same predictor bit for bit; with inputs the
 * predictor reads them and learns something else. */
static void test_predictor_reads_input(void **state) {
    (void)state;
    char dir[64], lm_dir[512], with_in[512], no_in[512];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "ifp_test"), 0);
    snprintf(lm_dir, sizeof lm_dir, "%s/lm", dir);
    snprintf(with_in, sizeof with_in, "%s/with_input.jsonl", dir);
    snprintf(no_in, sizeof no_in, "%s/no_input.jsonl", dir);
    save_lm(lm_dir);
    write_file(with_in, "{\"instruction\": \"Reverse the word.\", \"input\": \"hello\", \"solution\": \"#### olleh\"}\n"
                        "{\"instruction\": \"Reverse the word.\", \"input\": \"world\", \"solution\": \"#### dlrow\"}\n");
    write_file(no_in, "{\"instruction\": \"Reverse the word hello.\", \"input\": \"\", \"solution\": \"#### olleh\"}\n"
                      "{\"instruction\": \"Reverse the word world.\", \"input\": \"\", \"solution\": \"#### dlrow\"}\n");
    size_t n[4];
    char *a = train_predictor(dir, "a", no_in, false, &n[0]), *b = train_predictor(dir, "b", no_in, true, &n[1]);
    char *c = train_predictor(dir, "c", with_in, false, &n[2]), *d = train_predictor(dir, "d", with_in, true, &n[3]);
    assert_int_equal(n[0], n[1]);
    assert_memory_equal(a, b, n[0]);
    assert_int_equal(n[2], n[3]);
    assert_memory_not_equal(c, d, n[2]);
    free(a);
    free(b);
    free(c);
    free(d);
    orc_test_dir_remove(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unmasked_equals_lm),  cmocka_unit_test(test_compact_hard),
        cmocka_unit_test(test_compact_soft),        cmocka_unit_test(test_predictor_gradients),
        cmocka_unit_test(test_select_and_overlap),  cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_train_and_load),      cmocka_unit_test(test_predictor_reads_input),
        cmocka_unit_test(test_predictor_steps),
        cmocka_unit_test(test_dense_steps),
        cmocka_unit_test(test_anneal_steps),
        cmocka_unit_test(test_balance_loss),
        cmocka_unit_test(test_balance_descent),
        cmocka_unit_test(test_balance_training),
        cmocka_unit_test(test_study_checks_first),
        cmocka_unit_test(test_study_summary),
        cmocka_unit_test(test_study_versus),
    };
    return cmocka_run_group_tests(tests, setup_tok, teardown_tok);
}
