/* The 3-D mesh (issue 6): expert parallelism together with tensor (model)
 * parallelism in `orchard train` (orchard/dist.h, docs/distributed.md).
 * In process: the tensor-parallel LM forward of a MoE model (one dense, one
 * MoE layer) on one model rank gives the same loss, router loss and
 * gradients, bit for bit, as orc_llm_loss, and keeps the MoE weights whole
 * (not split over the model axis). Multi-process (mpirun --oversubscribe on
 * the orchard binary): the MoE model trained on expert=2,model=2 (np 4,
 * stopped and resumed on the same mesh) and on model=2 alone (np 2, the MoE
 * layers replicated on both model ranks) follows one process's loss
 * trajectory on the same global batch within 1e-5 relative, and one process
 * resumes the expert x model checkpoint (full experts, full TP tensors). */
#include "dist_support.h"
#include "orchard/ops.h"

/* Layer 0 dense (tensor parallel), layer 1 MoE (expert parallel): 4
 * experts, top-2, capacity factor 1.25 (tokens are dropped), one routing
 * group per row (moe_group_size = seq: the same groups whatever rows a rank
 * holds). */
static void write_3d_recipe(const char *name, int steps) {
    char text[4096];
    snprintf(text, sizeof text,
             "{\"model\": {\"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
             "\"num_key_value_heads\": 2, \"intermediate_size\": 64, \"vocab_size\": 264, "
             "\"max_position_embeddings\": 64, \"num_experts\": 4, \"moe_every\": 2, \"moe_top_k\": 2, "
             "\"capacity_factor\": 1.25, \"moe_group_size\": 16, \"moe_intermediate_size\": 32, "
             "\"router_z_loss_coef\": 0.001},\n"
             " \"tokenizer\": \"tok\", \"data\": {\"train\": \"train.bin\", \"val\": \"val.bin\"},\n"
             " \"batch\": 4, \"seq\": 16, \"accum\": 2, \"steps\": %d, \"lr\": 0.01, \"min_lr\": 0.001,\n"
             " \"warmup\": 2, \"eval_every\": 3, \"eval_batches\": 2, \"save_every\": 0, \"log_every\": 10,\n"
             " \"seed\": 7}\n",
             steps);
    orc_test_write_text(name, text);
}

/* One model rank: orc_tp_llm_loss on a MoE model is orc_llm_loss. */
static void test_tp_forward_with_moe_layers(void **state) {
    (void)state;
    orc_error err = {0};
    orc_llm_config cfg;
    orc_llm_config_default(&cfg);
    cfg.hidden_size = 16, cfg.num_hidden_layers = 2, cfg.num_attention_heads = 2, cfg.num_key_value_heads = 2;
    cfg.intermediate_size = 24, cfg.vocab_size = 40, cfg.max_position_embeddings = 16, cfg.head_dim = 8;
    cfg.num_experts = 4, cfg.moe_every = 2, cfg.moe_top_k = 2, cfg.capacity_factor = 1.0, cfg.moe_group_size = 8;
    cfg.moe_intermediate_size = 0; /* the experts default to intermediate_size, which TP must not halve */
    cfg.router_z_loss_coef = 0.01;
    orc_llm *full = orc_llm_create(&cfg, true, &err);
    if (!full) fail_msg("%s", err.msg);
    orc_llm_init_weights(full, 3);
    orc_comm *one = orc_comm_single("model", &err);
    orc_tp_llm *tp = orc_tp_llm_from_full(full, one, true, &err);
    if (!tp) fail_msg("%s", err.msg);
    for (int i = 0; i < full->n_params; i++)
        if (strstr(full->params[i]->name, ".mlp.experts.") || strstr(full->params[i]->name, ".mlp.gate.weight"))
            assert_false(orc_tp_param_is_split(tp, i));
    orc_arena *a = orc_arena_create(8 << 20), *fixed = orc_arena_create(1 << 16);
    orc_tensor *ids = orc_tensor_wrap(fixed, ORC_I32, 2, ORC_SHAPE(2, 8), calloc(16, 4), &err);
    orc_tensor *tg = orc_tensor_wrap(fixed, ORC_I32, 2, ORC_SHAPE(2, 8), calloc(16, 4), &err);
    for (int i = 0; i < 16; i++) orc_i32(ids)[i] = (7 * i + 3) % 40, orc_i32(tg)[i] = (5 * i + 1) % 40;
    float got[2][2];
    orc_llm *ms[2] = {full, tp->local};
    for (int k = 0; k < 2; k++) {
        orc_ctx ctx;
        orc_ctx_init(&ctx, a, 1);
        orc_tensor *loss = k ? orc_tp_llm_loss(&ctx, tp, ids, tg) : orc_llm_loss(&ctx, full, ids, tg);
        assert_non_null(loss);
        assert_non_null(ms[k]->moe_aux);
        got[k][0] = orc_f32(loss)[0];
        got[k][1] = orc_f32(ms[k]->moe_aux)[0];
        assert_int_equal(orc_backward(&ctx, orc_add(&ctx, loss, ms[k]->moe_aux)), ORC_OK);
        orc_ctx_reset(&ctx);
    }
    assert_memory_equal(got[0], got[1], sizeof got[0]);
    for (int i = 0; i < full->n_params; i++)
        assert_memory_equal(full->params[i]->grad, tp->local->params[i]->grad,
                            sizeof(float) * (size_t)full->params[i]->numel);
    free(ids->data);
    free(tg->data);
    orc_tp_llm_free(tp);
    orc_comm_free(one);
    orc_llm_free(full);
    orc_arena_destroy(a);
    orc_arena_destroy(fixed);
}

/* expert x model training: 6 steps on expert=2,model=2 (stopped after 3,
 * resumed on the same mesh) and on model=2 follow one process; one process
 * resumes the expert x model checkpoint. */
static void test_expert_by_model_training(void **state) {
    (void)state;
    write_3d_recipe("m3.json", 6);
    expect_ok(sh("'%s' --threads 1 train --config m3.json --out s1 --log s1.jsonl --quiet", g_bin), "moe single");
    expect_ok(sh("%s 4 '%s' --threads 1 train --config m3.json --out em --log em.jsonl --mesh expert=2,model=2 "
                 "--stop-after 3 --quiet", MPIRUN, g_bin), "np 4 expert=2,model=2");
    expect_ok(sh("%s 4 '%s' --threads 1 train --out em --resume --log em.jsonl --mesh model=2,expert=2 --quiet", MPIRUN,
                 g_bin), "resume np 4 expert=2,model=2");
    expect_same_losses("s1.jsonl", "em.jsonl", 6, 1e-5);
    expect_ok(sh("%s 2 '%s' --threads 1 train --config m3.json --out mm --log mm.jsonl --mesh model=2 --quiet", MPIRUN,
                 g_bin), "np 2 model=2 (MoE layers replicated)");
    expect_same_losses("s1.jsonl", "mm.jsonl", 6, 1e-5);
    expect_ok(sh("'%s' --threads 1 train --out em --resume --steps 8 --log em1.jsonl --quiet", g_bin),
              "expert x model checkpoint resumed on one process");
    double l[8];
    assert_int_equal(read_losses("em1.jsonl", l, 8), 2);
    assert_true(isfinite(l[0]) && isfinite(l[1]));
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tp_forward_with_moe_layers),
        cmocka_unit_test(test_expert_by_model_training),
    };
    if (getenv("ORCHARD_TEST_FILTER")) cmocka_set_test_filter(getenv("ORCHARD_TEST_FILTER")); /* for debugging */
    return cmocka_run_group_tests(tests, setup, teardown);
}
