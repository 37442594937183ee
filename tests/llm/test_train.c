/* The training job on a tiny model (dim 32, 2 layers) with shards built here
 * from a synthetic token stream: 20 steps straight equal 10 steps + resume +
 * 10 steps bit for bit (losses, grad norms, validation and final weights);
 * an interrupt saves a resumable checkpoint; bits per byte follows from the
 * byte lengths of the target tokens; checkpoints use Llama tensor names and
 * carry the optimizer state; recipe errors name the file and the key; a cut
 * short save is refused on resume; supervised fine-tuning counts only the
 * response tokens (random prompts, fixed replies: the loss goes to ~0). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gradcheck.h"
#include "orchard/data.h"
#include "orchard/rng.h"
#include "orchard/safetensors.h"
#include "orchard/train.h"
#include "testdir.h"
#include "train_support.h"

#define MAX_STEPS 128

static void path_in(char *out, const char *name) { orc_test_scratch_path(out, 512, name); }

static const char *const MODEL = ORC_TEST_TINY_MODEL_JSON;

static void write_recipe(const char *name, int steps, int accum, int save_every) {
    char text[4096];
    snprintf(text, sizeof text,
             "{\"model\": %s, \"tokenizer\": \"tok\", \"data\": {\"train\": \"train.bin\", \"val\": \"val.bin\"},\n"
             " \"batch\": 4, \"seq\": 16, \"accum\": %d, \"steps\": %d, \"lr\": 0.01, \"min_lr\": 0.001,\n"
             " \"warmup\": 3, \"eval_every\": 5, \"eval_batches\": 2, \"save_every\": %d, \"log_every\": 5,\n"
             " \"seed\": 11}\n",
             MODEL, accum, steps, save_every);
    orc_test_write_text(name, text);
}

static int setup(void **state) {
    if (orc_test_scratch_setup(state)) return -1;
    orc_test_write_byte_tokenizer("tok");
    orc_test_write_stream_shard("train.bin", 1, 20, 200);
    orc_test_write_stream_shard("val.bin", 2, 5, 200);
    write_recipe("recipe.json", 20, 2, 7);
    return 0;
}

typedef struct trace {
    orc_train_step_info s[MAX_STEPS];
    int n;
    volatile sig_atomic_t *flag;
    int64_t flag_at;
} trace;

static void record(void *user, const orc_train_step_info *info) {
    trace *t = user;
    if (t->n < MAX_STEPS) t->s[t->n++] = *info;
    if (t->flag && info->step == t->flag_at) *t->flag = 1;
}

static orc_status run(const char *recipe, const char *out, bool resume, int64_t stop_after, trace *tr,
                      orc_train_result *res, orc_error *err) {
    char rp[512], op[512];
    path_in(rp, recipe ? recipe : "");
    path_in(op, out);
    orc_train_opts o = {.recipe = recipe ? rp : NULL, .out_dir = op, .resume = resume, .stop_after = stop_after,
                        .on_step = record, .user = tr};
    if (tr && tr->flag) o.interrupt = tr->flag;
    orc_error_clear(err);
    return orc_train_run(&o, res, err);
}

static void expect_same_step(const orc_train_step_info *a, const orc_train_step_info *b) {
    assert_int_equal(a->step, b->step);
    assert_memory_equal(&a->loss, &b->loss, sizeof a->loss);
    assert_memory_equal(&a->lr, &b->lr, sizeof a->lr);
    assert_memory_equal(&a->grad_norm, &b->grad_norm, sizeof a->grad_norm);
    assert_int_equal(isnan(a->val_loss), isnan(b->val_loss));
    if (!isnan(a->val_loss)) {
        assert_memory_equal(&a->val_loss, &b->val_loss, sizeof a->val_loss);
        assert_memory_equal(&a->val_bpb, &b->val_bpb, sizeof a->val_bpb);
    }
}

static void expect_same_weights(const char *a, const char *b) {
    char pa[512], pb[512];
    path_in(pa, a);
    path_in(pb, b);
    orc_error err = {0};
    orc_llm *ma = orc_llm_load(pa, false, &err), *mb = orc_llm_load(pb, false, &err);
    if (!ma || !mb) fail_msg("%s", err.msg);
    assert_int_equal(ma->n_params, mb->n_params);
    for (int i = 0; i < ma->n_params; i++)
        assert_memory_equal(ma->params[i]->data, mb->params[i]->data, (size_t)ma->params[i]->numel * sizeof(float));
    orc_llm_free(ma);
    orc_llm_free(mb);
}

static void test_resume_is_bit_exact(void **state) {
    (void)state;
    static trace straight, first, second;
    orc_train_result res;
    orc_error err = {0};
    if (run("recipe.json", "straight", false, 0, &straight, &res, &err)) fail_msg("%s", err.msg);
    assert_int_equal(res.step, 20);
    assert_int_equal(straight.n, 20);
    assert_true(straight.s[19].loss < straight.s[0].loss - 0.5); /* it learns */
    assert_true(isfinite(res.val_loss));

    if (run("recipe.json", "split", false, 10, &first, &res, &err)) fail_msg("%s", err.msg);
    assert_true(res.paused);
    assert_int_equal(res.step, 10);
    if (run("recipe.json", "split", true, 0, &second, &res, &err)) fail_msg("%s", err.msg);
    assert_int_equal(res.start_step, 10);
    assert_int_equal(res.step, 20);
    assert_int_equal(first.n, 10);
    assert_int_equal(second.n, 10);
    for (int i = 0; i < 10; i++) {
        expect_same_step(&straight.s[i], &first.s[i]);
        expect_same_step(&straight.s[10 + i], &second.s[i]);
    }
    expect_same_weights("straight", "split");

    /* Resuming a finished run does nothing; without --config uses the saved recipe. */
    static trace none;
    if (run(NULL, "split", true, 0, &none, &res, &err)) fail_msg("%s", err.msg);
    assert_int_equal(none.n, 0);
    assert_int_equal(res.step, 20);
}

static void test_bits_per_byte(void **state) {
    (void)state;
    static trace tr;
    orc_train_result res;
    orc_error err = {0};
    write_recipe("bpb.json", 5, 1, 7);
    if (run("bpb.json", "bpb", false, 0, &tr, &res, &err)) fail_msg("%s", err.msg);
    /* Every val target is a byte token: one byte each, so bpb = nats / ln 2. */
    assert_true(isfinite(tr.s[4].val_loss));
    assert_true(fabs(tr.s[4].val_bpb - tr.s[4].val_loss / log(2.0)) < 1e-9 * tr.s[4].val_bpb);
    for (int i = 0; i < 4; i++) assert_true(isnan(tr.s[i].val_loss));
}

static void test_checkpoint_files(void **state) {
    (void)state;
    static trace tr;
    orc_train_result res;
    orc_error err = {0};
    write_recipe("ckpt.json", 4, 1, 7);
    if (run("ckpt.json", "ckpt", false, 0, &tr, &res, &err)) fail_msg("%s", err.msg);
    char p[512];
    path_in(p, "ckpt/model.safetensors");
    orc_st_file *f = orc_st_open(p, &err);
    if (!f) fail_msg("%s", err.msg);
    assert_non_null(orc_st_find(f, "model.embed_tokens.weight"));
    assert_non_null(orc_st_find(f, "model.layers.1.self_attn.q_proj.weight"));
    assert_non_null(orc_st_find(f, "model.layers.0.mlp.down_proj.weight"));
    assert_non_null(orc_st_find(f, "model.norm.weight"));
    assert_string_equal(orc_st_metadata(f, "step"), "4");
    orc_st_close(f);
    path_in(p, "ckpt/optimizer.safetensors");
    f = orc_st_open(p, &err);
    if (!f) fail_msg("%s", err.msg);
    assert_non_null(orc_st_find(f, "model.embed_tokens.weight.exp_avg"));
    assert_non_null(orc_st_find(f, "model.norm.weight.exp_avg_sq"));
    assert_string_equal(orc_st_metadata(f, "step"), "4");
    orc_st_close(f);
    path_in(p, "ckpt/tokenizer.json");
    assert_int_equal(access(p, R_OK), 0);
    path_in(p, "ckpt/trainer_state.json");
    assert_int_equal(access(p, R_OK), 0);

    /* A fresh run refuses to overwrite it. */
    assert_int_equal(run("ckpt.json", "ckpt", false, 0, NULL, &res, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "--resume"));
    /* A save cut short: the optimizer file says another step than trainer_state.json. */
    path_in(p, "ckpt/trainer_state.json");
    FILE *in = fopen(p, "r");
    assert_non_null(in);
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, in);
    fclose(in);
    buf[n] = 0;
    char *s = strstr(buf, "\"step\": 4");
    assert_non_null(s);
    s[8] = '3';
    in = fopen(p, "w");
    fputs(buf, in);
    fclose(in);
    assert_int_equal(run("ckpt.json", "ckpt", true, 0, NULL, &res, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "cut short"));
    /* No checkpoint at all. */
    assert_int_equal(run("ckpt.json", "nothing", true, 0, NULL, &res, &err), ORC_EIO);
    assert_non_null(strstr(err.msg, "no checkpoint"));
}

/* A crash during a save: an unfinished .pending folder is thrown away (the
 * previous checkpoint stands); a committed one is moved into place before
 * resuming, even if the crash came after some files were already moved. */
static void test_crash_during_save(void **state) {
    (void)state;
    orc_train_result res;
    orc_error err = {0};
    write_recipe("crash.json", 8, 1, 0);
    static trace ta, tb;
    if (run("crash.json", "crash_a", false, 4, &ta, &res, &err)) fail_msg("%s", err.msg);
    if (run("crash.json", "crash_b", false, 6, &tb, &res, &err)) fail_msg("%s", err.msg);
    char a[512], b[512], cmd[8192];
    path_in(a, "crash_a");
    path_in(b, "crash_b");
    /* Phase 1 cut short: garbage in .pending and no marker. */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/.pending && echo junk > %s/.pending/model.safetensors", a, a);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(orc_train_recover_pending(a, &err), ORC_OK);
    snprintf(cmd, sizeof cmd, "test ! -e %s/.pending && grep -q '\"step\": 4' %s/trainer_state.json", a, a);
    assert_int_equal(system(cmd), 0);
    /* Phase 2 cut short: the step-6 files are committed in .pending and the
     * model file already moved, so the folder mixes two steps until recovery. */
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/.pending && cp %s/config.json %s/optimizer.safetensors %s/trainer_state.json %s/.pending/ && "
             "cp %s/model.safetensors %s/ && echo 6 > %s/.pending/COMMITTED",
             a, b, b, b, a, b, a, a);
    assert_int_equal(system(cmd), 0);
    static trace rest;
    if (run("crash.json", "crash_a", true, 0, &rest, &res, &err)) fail_msg("%s", err.msg);
    assert_int_equal(res.start_step, 6);
    assert_int_equal(res.step, 8);
    snprintf(cmd, sizeof cmd, "test ! -e %s/.pending", a);
    assert_int_equal(system(cmd), 0);
}

static void test_interrupt_saves(void **state) {
    (void)state;
    static volatile sig_atomic_t flag;
    static trace tr;
    flag = 0;
    tr.flag = &flag;
    tr.flag_at = 3;
    orc_train_result res;
    orc_error err = {0};
    write_recipe("intr.json", 6, 1, 0);
    if (run("intr.json", "intr", false, 0, &tr, &res, &err)) fail_msg("%s", err.msg);
    assert_true(res.interrupted);
    assert_int_equal(res.step, 3);
    static trace rest;
    if (run("intr.json", "intr", true, 0, &rest, &res, &err)) fail_msg("%s", err.msg);
    assert_int_equal(rest.n, 3);
    assert_int_equal(rest.s[0].step, 4);
    assert_int_equal(res.step, 6);
}

static void expect_recipe_error(const char *text, const char *want1, const char *want2) {
    orc_test_write_text("bad.json", text);
    char p[512];
    path_in(p, "bad.json");
    orc_train_recipe r;
    orc_error err = {0};
    orc_status st = orc_train_recipe_load(p, &r, &err);
    if (st == ORC_OK) {
        orc_train_result res;
        st = run("bad.json", "bad_out", false, 0, NULL, &res, &err);
    }
    assert_int_not_equal(st, ORC_OK);
    if (!strstr(err.msg, want1) || !strstr(err.msg, want2)) fail_msg("'%s' lacks '%s' or '%s'", err.msg, want1, want2);
}

static void test_recipe_errors(void **state) {
    (void)state;
    char text[4096];
    const char *base = "\"tokenizer\": \"tok\", \"data\": {\"train\": \"train.bin\"}";
    snprintf(text, sizeof text, "{\"model\": %s, %s, \"lrr\": 0.1}", MODEL, base);
    expect_recipe_error(text, "bad.json", "\"lrr\"");
    snprintf(text, sizeof text, "{\"model\": %s, %s, \"steps\": \"ten\"}", MODEL, base);
    expect_recipe_error(text, "bad.json", "steps");
    snprintf(text, sizeof text, "{\"model\": %s, %s, \"steps\": 5, \"warmup\": 10}", MODEL, base);
    expect_recipe_error(text, "bad.json", "warmup");
    snprintf(text, sizeof text, "{\"model\": %s, %s, \"seq\": 100}", MODEL, base);
    expect_recipe_error(text, "bad.json", "max_position_embeddings");
    snprintf(text, sizeof text, "{\"model\": %s, \"tokenizer\": \"tok\", \"data\": {\"trian\": \"train.bin\"}}", MODEL);
    expect_recipe_error(text, "bad.json", "data.trian");
    snprintf(text, sizeof text, "{\"model\": \"huge\", %s}", base);
    expect_recipe_error(text, "bad.json", "model");
    snprintf(text, sizeof text, "{%s}", base);
    expect_recipe_error(text, "bad.json", "model");
    snprintf(text, sizeof text, "{\"model\": %s, \"data\": {\"train\": \"train.bin\"}}", MODEL);
    expect_recipe_error(text, "bad.json", "tokenizer");
    /* vocab_size below the tokenizer's 264 ids */
    expect_recipe_error("{\"model\": {\"hidden_size\": 32, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
                        "\"intermediate_size\": 64, \"vocab_size\": 200, \"max_position_embeddings\": 64}, "
                        "\"tokenizer\": \"tok\", \"data\": {\"train\": \"train.bin\"}, \"seq\": 16}",
                        "bad.json", "vocab_size");
    snprintf(text, sizeof text, "{\"model\": %s, \"tokenizer\": \"tok\", \"data\": {\"train\": \"missing.bin\"}, "
             "\"seq\": 16}", MODEL);
    expect_recipe_error(text, "data.train", "missing.bin");
}

/* ---- SFT ---------------------------------------------------------------------------- */

static void test_sft_targets(void **state) {
    (void)state;
    char p[512];
    path_in(p, "tok");
    orc_error err = {0};
    orc_tokenizer *tok = orc_tokenizer_load(p, &err);
    assert_non_null(tok);
    orc_chat_msg msgs[] = {{"user", "hello"}, {"assistant", "ok!"}};
    int32_t in[32], tg[32];
    int counted = 0;
    assert_int_equal(orc_sft_example(tok, msgs, 2, 32, 7, in, tg, &counted, &err), ORC_OK);
    /* bot <|user|> \n h e l l o <|end|> \n <|assistant|> \n o k ! <|end|> \n : 17 tokens, 16 inputs */
    assert_int_equal(counted, 4);
    int32_t end = orc_tokenizer_special_id(tok, ORC_TOK_END);
    assert_int_equal(tg[11], 'o');
    assert_int_equal(tg[12], 'k');
    assert_int_equal(tg[13], '!');
    assert_int_equal(tg[14], end);
    for (int t = 0; t < 32; t++)
        if (t < 11 || t > 14) assert_int_equal(tg[t], ORC_IGNORE_INDEX);
    assert_int_equal(in[15], end);
    assert_int_equal(in[16], 7); /* padding after the 16 inputs */
    /* Truncation keeps seq + 1 tokens: with seq 12 only 'o' is a target. */
    assert_int_equal(orc_sft_example(tok, msgs, 2, 12, 7, in, tg, &counted, &err), ORC_OK);
    assert_int_equal(counted, 1);
    orc_tokenizer_free(tok);
}

static void write_chat(const char *name, uint64_t seed, int n) {
    char p[512];
    path_in(p, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        char noise[21];
        for (int k = 0; k < 20; k++) noise[k] = (char)('a' + orc_rand_u32(seed, (uint64_t)i, (uint64_t)k) % 26);
        noise[20] = 0;
        fprintf(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"%s\"}, "
                   "{\"role\": \"assistant\", \"content\": \"ok!\"}]}\n\n", noise);
    }
    fclose(f);
}

static void test_sft_loss_counts_responses_only(void **state) {
    (void)state;
    write_chat("chat.jsonl", 5, 64);
    write_chat("chat_val.jsonl", 6, 8);
    char text[4096];
    snprintf(text, sizeof text,
             "{\"model\": %s, \"tokenizer\": \"tok\", \"sft\": {\"train\": \"chat.jsonl\", \"val\": "
             "\"chat_val.jsonl\"}, \"batch\": 8, \"seq\": 40, \"steps\": 60, \"lr\": 0.01, \"min_lr\": 0.001, "
             "\"warmup\": 5, \"eval_every\": 30, \"eval_batches\": 1, \"weight_decay\": 0.0}",
             MODEL);
    orc_test_write_text("sft.json", text);
    static trace tr;
    orc_train_result res;
    orc_error err = {0};
    if (run("sft.json", "sft_out", false, 0, &tr, &res, &err)) fail_msg("%s", err.msg);
    /* Prompts are noise (ln 26 = 3.3 nats a letter if they counted); the
     * replies are fixed, so the loss on them alone goes to about zero. */
    assert_true(tr.s[0].loss > 2.0);
    if (!(res.loss < 0.05)) fail_msg("final SFT loss %g", res.loss);
    assert_true(res.val_loss < 0.05);
    assert_true(isfinite(res.val_bpb));

    orc_test_write_text("bad_chat.jsonl",
                        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n{\"messages\": 3}\n");
    snprintf(text, sizeof text, "{\"model\": %s, \"tokenizer\": \"tok\", \"sft\": {\"train\": \"bad_chat.jsonl\"}, "
             "\"seq\": 16}", MODEL);
    expect_recipe_error(text, "bad_chat.jsonl:2", "messages");
}

/* Every recipe shipped in configs/ parses and passes the checks. */
static void test_shipped_configs(void **state) {
    (void)state;
    const char *src = getenv("ORCHARD_SOURCE_DIR");
    if (!src) skip();
    const char *names[] = {"tiny.json", "small.json", "micro.json", "sft-tiny.json", "run.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/configs/%s", src, names[i]);
        orc_train_recipe r;
        orc_error err = {0};
        if (orc_train_recipe_load(p, &r, &err) != ORC_OK) fail_msg("%s", err.msg);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_is_bit_exact),
        cmocka_unit_test(test_bits_per_byte),
        cmocka_unit_test(test_checkpoint_files),
        cmocka_unit_test(test_interrupt_saves),
        cmocka_unit_test(test_crash_during_save),
        cmocka_unit_test(test_recipe_errors),
        cmocka_unit_test(test_sft_targets),
        cmocka_unit_test(test_sft_loss_counts_responses_only),
        cmocka_unit_test(test_shipped_configs),
    };
    return cmocka_run_group_tests(tests, setup, orc_test_scratch_teardown);
}
