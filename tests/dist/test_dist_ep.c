/* Expert parallelism inside `orchard train` and the gradient all-reduce
 * overlapped with backward (orchard/dist.h, docs/distributed.md). In
 * process: the autograd backward hook visits every node once, the
 * overlapped sync on one rank leaves the gradients unchanged and starts
 * buckets during backward, and a gradient changed after its bucket was
 * packed is reported. Multi-process (mpirun --oversubscribe on the orchard
 * binary): a MoE model trained on expert=2 (np 2) and on data=2,expert=2
 * (np 4, resumed on expert=2) follows one process's loss trajectory on the
 * same global batch within 1e-5 relative, one process resumes the
 * expert-parallel checkpoint, a changed MoE key on resume is named; and
 * overlap on and off (ORCHARD_DIST_OVERLAP=0) give byte-identical
 * checkpoints on data=2,expert=2 with 16 KiB buckets. */
#include "dist_support.h"
#include "orchard/ops.h"

/* The backward hook visits every node once, newest first; the overlapped
 * sync on one rank leaves the gradients as they were, and a gradient that
 * changes after its bucket was packed is an error, not a silent loss. */
static void hook_count(void *user, int64_t k) {
    int64_t *seen = user;
    assert_int_equal(k, seen[0]);
    seen[0]++;
}
static void hook_ddp(void *user, int64_t k) { orc_ddp_overlap_hook(user, k); }

static void test_backward_hook_and_overlap(void **state) {
    (void)state;
    orc_arena *pa = orc_arena_create(1 << 16), *aa = orc_arena_create(1 << 20);
    orc_tensor *w1 = rand_param(pa, 2, ORC_SHAPE(8, 4), 1, "w1"), *w2 = rand_param(pa, 2, ORC_SHAPE(3, 8), 2, "w2");
    orc_tensor *unused = rand_param(pa, 1, ORC_SHAPE(5), 3, "unused");
    orc_error err = {0};
    orc_comm *one = orc_comm_single("data", &err);
    orc_tensor *ps[3] = {w1, w2, unused};
    orc_ddp *d = orc_ddp_new(one, ps, 3, 0, 64, &err); /* 16-float buckets: w1 spans two */
    assert_non_null(d);
    float want[32 + 24];
    for (int round = 0; round < 3; round++) {
        orc_ctx ctx;
        orc_ctx_init(&ctx, aa, 1);
        for (int i = 0; i < 3; i++) orc_zero_grad(ps[i]);
        orc_tensor *x = orc_new(&ctx, ORC_F32, 2, ORC_SHAPE(2, 4));
        for (int i = 0; i < 8; i++) orc_f32(x)[i] = 0.1f * (float)(i - 3);
        orc_tensor *loss = orc_sum_all(&ctx, orc_linear(&ctx, orc_silu(&ctx, orc_linear(&ctx, x, w1, NULL)), w2, NULL));
        assert_non_null(loss);
        if (round == 0) {
            int64_t seen[1] = {0};
            assert_int_equal(orc_backward_hooked(&ctx, loss, hook_count, seen), ORC_OK);
            assert_int_equal(seen[0], ctx.n_nodes);
            memcpy(want, w1->grad, sizeof(float) * 32);
            memcpy(want + 32, w2->grad, sizeof(float) * 24);
        } else {
            assert_int_equal(orc_ddp_overlap_begin(d, &ctx, &err), ORC_OK);
            assert_int_equal(orc_backward_hooked(&ctx, loss, hook_ddp, d), ORC_OK);
            if (round == 2) w1->grad[0] += 1.0f; /* after backward: the check must notice */
            double gn = orc_ddp_sync_grads(d, 0, &err);
            if (round == 1) {
                assert_true(isfinite(gn));
                /* w2's bucket (floats 32..55, the last ones) is final once
                 * the newest linear ran: it starts during backward. */
                assert_true(orc_ddp_early_buckets(d) >= 2);
                assert_memory_equal(w1->grad, want, sizeof(float) * 32);
                assert_memory_equal(w2->grad, want + 32, sizeof(float) * 24);
            } else {
                assert_true(isnan(gn));
                assert_non_null(strstr(err.msg, "changed after the backward node that last uses its parameter"));
            }
        }
        orc_ctx_reset(&ctx);
    }
    orc_ddp_free(d);
    orc_comm_free(one);
    orc_arena_destroy(pa);
    orc_arena_destroy(aa);
}

/* A mesh that does not fit the experts: every rank evaluates the same
 * check (orc_mesh_check_model), so each prints the same message. */
static void test_expert_mesh_checks(void **state) {
    (void)state;
    orc_mesh ms = {.data = 1, .expert = 2, .model = 1};
    orc_llm_config cfg;
    orc_error err = {0};
    assert_int_equal(orc_llm_config_preset("tiny", &cfg, &err), ORC_OK);
    assert_int_not_equal(orc_mesh_check_model(&ms, &cfg, "r.json", &err), ORC_OK);
    assert_non_null(strstr(err.msg, "--mesh expert=2 but the model has no experts"));
    cfg.num_experts = 3;
    orc_error_clear(&err);
    assert_int_not_equal(orc_mesh_check_model(&ms, &cfg, "r.json", &err), ORC_OK);
    assert_non_null(strstr(err.msg, "does not divide num_experts = 3"));
    cfg.num_experts = 4;
    assert_int_equal(orc_mesh_check_model(&ms, &cfg, "r.json", &err), ORC_OK);
}

/* Expert parallel training: 10 steps of a MoE model on expert=2 (np 2),
 * and 5 on data=2,expert=2 (np 4) resumed on expert=2, follow one
 * process's trajectory on the same global batch; one process resumes the
 * expert-parallel checkpoint (the full expert tensors). The np 4 run uses
 * 16 KiB buckets (several per sync) and is repeated with
 * ORCHARD_DIST_OVERLAP=0: the two checkpoints must be byte-identical
 * (overlap changes no bit, on both syncs: dense over data x expert,
 * experts over data). mpirun launches dominate the time under ASan, so
 * there are four. */
static void test_expert_parallel_training(void **state) {
    (void)state;
    write_moe_recipe("moe.json", 10, 1.25);
    expect_ok(sh("'%s' --threads 1 train --config moe.json --out m1 --log m1.jsonl --quiet", g_bin), "moe single");
    expect_ok(sh("%s 2 '%s' --threads 1 train --config moe.json --out me --log me.jsonl --mesh expert=2 --quiet", MPIRUN,
                 g_bin), "moe np 2 expert=2");
    expect_same_losses("m1.jsonl", "me.jsonl", 10, 1e-5);
    expect_ok(sh("env ORCHARD_DIST_BUCKET_KB=16 %s 4 '%s' --threads 1 train --config moe.json --out mde --log mde.jsonl "
                 "--mesh data=2,expert=2 --stop-after 5 --quiet", MPIRUN, g_bin), "moe np 4 data=2,expert=2");
    expect_ok(sh("env ORCHARD_DIST_BUCKET_KB=16 ORCHARD_DIST_OVERLAP=0 %s 4 '%s' --threads 1 train --config moe.json "
                 "--out mde0 --mesh data=2,expert=2 --stop-after 5 --quiet", MPIRUN, g_bin), "the same, overlap off");
    expect_ok(sh("cmp mde/model.safetensors mde0/model.safetensors && cmp mde/optimizer.safetensors "
                 "mde0/optimizer.safetensors"), "overlap on vs off: identical checkpoints");
    expect_ok(sh("%s 2 '%s' --threads 1 train --out mde --resume --log mde.jsonl --mesh expert=2 --quiet", MPIRUN, g_bin),
              "moe resume np 2 expert=2");
    expect_same_losses("m1.jsonl", "mde.jsonl", 10, 1e-5);
    expect_ok(sh("'%s' --threads 1 train --out me --resume --steps 12 --log me.jsonl --quiet", g_bin),
              "moe resume on one process");
    /* A changed MoE key on resume is named. */
    write_moe_recipe("moe2.json", 12, 2.0);
    int rc = sh("'%s' --threads 1 train --config moe2.json --out me --resume --quiet", g_bin);
    char *o = out_text();
    if (rc == 0 || !strstr(o, "capacity_factor = 1.25 but the recipe asks for 2"))
        fail_msg("resume with another capacity_factor: exit %d:\n%s", rc, o);
    free(o);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backward_hook_and_overlap),
        cmocka_unit_test(test_expert_mesh_checks),
        cmocka_unit_test(test_expert_parallel_training),
    };
    if (getenv("ORCHARD_TEST_FILTER")) cmocka_set_test_filter(getenv("ORCHARD_TEST_FILTER")); /* for debugging */
    return cmocka_run_group_tests(tests, setup, teardown);
}
