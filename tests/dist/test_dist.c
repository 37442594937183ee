/* Multi-process training (orchard/dist.h). In-process: the one-rank
 * communicator, mesh parsing and model checks, and finite-difference checks
 * of the tensor-parallel ops. Multi-process, by launching `mpirun
 * --oversubscribe -np N` on this binary (worker modes below) or on the
 * orchard binary: every collective of the MPI backend against values each
 * rank can compute alone (np 4, on a data=2,model=2 mesh); tensor parallel
 * forward logits and gradients against the full model (np 2); expert
 * parallel MoE outputs and gradients against the full layer (np 2 and 4);
 * data parallel
 * training over 50 steps against one process with the same global batch
 * (np 2, 1e-5 relative), ZeRO-1 on 4 ranks, resumed on another mesh shape;
 * tensor parallel training (data=2,model=2, resumed on model=2) likewise
 * (expert parallel training and the overlapped all-reduce: test_dist_ep.c);
 * and the bad cases: a mesh that does not fit the ranks or the heads,
 * different recipes on different ranks, a rank that exits and a rank that
 * hangs (every run must end non-zero, with a message, well within the
 * timeout). OpenMPI keeps allocations until exit that LeakSanitizer reports,
 * so the launched processes get tests/dist/lsan.supp (docs/distributed.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist_support.h"
#include "gradcheck.h"

/* ---- in-process ------------------------------------------------------------------------------ */

static void test_single_and_mesh(void **state) {
    (void)state;
    orc_error err = {0};
    orc_comm *c = orc_comm_single("world", &err);
    assert_non_null(c);
    assert_int_equal(c->size, 1);
    float v[3] = {1, 2, 3}, g[3];
    assert_int_equal(orc_allreduce_f32(c, v, 3, ORC_REDUCE_MEAN, &err), ORC_OK);
    assert_true(v[2] == 3.0f);
    assert_int_equal(orc_allgather(c, v, sizeof v, g, &err), ORC_OK);
    assert_memory_equal(v, g, sizeof v);
    int64_t n1 = 3;
    assert_int_equal(orc_alltoallv_f32(c, v, &n1, g, &n1, &err), ORC_OK);
    int d, e, m;
    assert_int_equal(orc_mesh_parse("model=2,data=3", &d, &e, &m, &err), ORC_OK);
    assert_true(d == 3 && e == 1 && m == 2);
    assert_int_not_equal(orc_mesh_parse("data=2,pipe=2", &d, &e, &m, &err), ORC_OK);
    assert_non_null(strstr(err.msg, "pipe"));
    orc_error_clear(&err);
    assert_int_not_equal(orc_mesh_parse("data=0", &d, &e, &m, &err), ORC_OK);
    orc_error_clear(&err);
    assert_null(orc_mesh_create(c, "data=2", &err));
    assert_non_null(strstr(err.msg, "needs 2 ranks"));
    orc_mesh *ms = orc_mesh_create(c, "data=1,model=1", &err);
    assert_non_null(ms);
    orc_llm_config cfg;
    assert_int_equal(orc_llm_config_preset("tiny", &cfg, &err), ORC_OK);
    ms->model = 4; /* 6 heads: not divisible (the check is pure arithmetic) */
    orc_error_clear(&err);
    assert_int_not_equal(orc_mesh_check_model(ms, &cfg, "tiny", &err), ORC_OK);
    assert_non_null(strstr(err.msg, "num_attention_heads"));
    orc_error_clear(&err);
    ms->model = 1;
    ms->expert = 2;
    assert_int_not_equal(orc_mesh_check_model(ms, &cfg, "tiny", &err), ORC_OK);
    assert_non_null(strstr(err.msg, "num_experts"));
    orc_mesh_free(ms);
    assert_true(orc_dist_agree(c, ORC_OK, &err) == ORC_OK);
    orc_comm_free(c);
}

static orc_comm *g_gc_comm;
static orc_tensor *gc_copy(orc_ctx *ctx, orc_tensor **in, void *user) {
    (void)user;
    return orc_mul(ctx, orc_tp_copy(ctx, g_gc_comm, in[0]), in[1]);
}
static orc_tensor *gc_reduce(orc_ctx *ctx, orc_tensor **in, void *user) {
    (void)user;
    return orc_tp_reduce(ctx, g_gc_comm, orc_mul(ctx, in[0], in[1]));
}

static void test_tp_ops_gradcheck(void **state) {
    (void)state;
    orc_error err = {0};
    g_gc_comm = orc_comm_single("model", &err);
    orc_arena *a = orc_arena_create(1 << 20);
    orc_tensor *in[2] = {gc_rand(a, 2, ORC_SHAPE(3, 5), 1, -1, 1, true), gc_rand(a, 2, ORC_SHAPE(3, 5), 2, -1, 1, true)};
    gc_check("tp_copy", gc_copy, 2, in, NULL, (gc_opts){0});
    gc_check("tp_reduce", gc_reduce, 2, in, NULL, (gc_opts){0});
    orc_arena_destroy(a);
    orc_comm_free(g_gc_comm);
}

/* ---- workers (run under mpirun) ---------------------------------------------------------------- */

static int worker_fail(int rank, const char *what) {
    fprintf(stderr, "worker rank %d: %s\n", rank, what);
    return 1;
}

/* Every collective against values each rank computes alone. */
static int worker_collectives(orc_comm *w) {
    orc_error err = {0};
    const int P = w->size, r = w->rank;
    float v[5];
    for (int i = 0; i < 5; i++) v[i] = (float)(r + 1) * (float)(i + 1);
    if (orc_allreduce_f32(w, v, 5, ORC_REDUCE_SUM, &err)) return worker_fail(r, err.msg);
    for (int i = 0; i < 5; i++)
        if (v[i] != (float)(P * (P + 1) / 2 * (i + 1))) return worker_fail(r, "allreduce sum");
    double dm = r;
    if (orc_allreduce_f64(w, &dm, 1, ORC_REDUCE_MAX, &err) || dm != P - 1) return worker_fail(r, "allreduce max");
    int32_t b = r == 0 ? 1234 : -1;
    if (orc_broadcast(w, &b, sizeof b, 0, &err) || b != 1234) return worker_fail(r, "broadcast");
    int32_t all[16];
    int32_t mine = 10 * r;
    if (orc_allgather(w, &mine, sizeof mine, all, &err)) return worker_fail(r, err.msg);
    for (int i = 0; i < P; i++)
        if (all[i] != 10 * i) return worker_fail(r, "allgather");
    float send[32], recv[32];
    for (int i = 0; i < 2 * P; i++) send[i] = (float)(i + r);
    if (orc_reduce_scatter_f32(w, send, recv, 2, ORC_REDUCE_SUM, &err)) return worker_fail(r, err.msg);
    for (int k = 0; k < 2; k++)
        if (recv[k] != (float)(P * (2 * r + k) + P * (P - 1) / 2)) return worker_fail(r, "reduce-scatter");
    /* all-to-all-v: rank r sends j + 1 values (all r * 100 + j) to rank j. */
    int64_t sc[16], rc[16];
    int at = 0;
    for (int j = 0; j < P; j++) {
        sc[j] = j + 1;
        rc[j] = r + 1;
        for (int k = 0; k <= j; k++) send[at++] = (float)(r * 100 + j);
    }
    if (orc_alltoallv_f32(w, send, sc, recv, rc, &err)) return worker_fail(r, err.msg);
    at = 0;
    for (int j = 0; j < P; j++)
        for (int k = 0; k <= r; k++)
            if (recv[at++] != (float)(j * 100 + r)) return worker_fail(r, "alltoallv");
    if (orc_barrier(w, &err)) return worker_fail(r, err.msg);
    /* The mesh: data=2,model=2 -> model comm pairs neighbours. */
    orc_mesh *ms = orc_mesh_create(w, "data=2,model=2", &err);
    if (!ms) return worker_fail(r, err.msg);
    if (ms->model_rank != r % 2 || ms->data_rank != r / 2 || ms->model_comm->size != 2 || ms->data_comm->size != 2)
        return worker_fail(r, "mesh coordinates");
    float x = (float)r;
    if (orc_allreduce_f32(ms->model_comm, &x, 1, ORC_REDUCE_SUM, &err) || x != (float)(r / 2 * 4 + 1))
        return worker_fail(r, "model communicator");
    x = (float)r;
    if (orc_allreduce_f32(ms->data_comm, &x, 1, ORC_REDUCE_SUM, &err) || x != (float)(2 * (r % 2) + 2))
        return worker_fail(r, "data communicator");
    orc_mesh_free(ms);
    return 0;
}

static bool close_rel(const float *a, const float *b, int64_t n, double rtol, const char *what, int rank) {
    double scale = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(a[i]));
    for (int64_t i = 0; i < n; i++)
        if (fabs((double)a[i] - b[i]) > rtol * scale + 1e-9) {
            fprintf(stderr, "worker rank %d: %s[%lld]: %.9g vs %.9g (scale %.3g)\n", rank, what, (long long)i, a[i],
                    b[i], scale);
            return false;
        }
    return true;
}

/* Tensor parallel: logits and every parameter gradient of the model=2
 * slices (gathered back) against the full model on a fixed batch. */
static int worker_tp(orc_comm *w) {
    orc_error err = {0};
    const int r = w->rank;
    orc_llm_config cfg;
    orc_llm_config_default(&cfg);
    cfg.hidden_size = 32, cfg.num_hidden_layers = 2, cfg.num_attention_heads = 4, cfg.num_key_value_heads = 2;
    cfg.intermediate_size = 64, cfg.vocab_size = 64, cfg.max_position_embeddings = 32, cfg.qk_norm = true;
    cfg.head_dim = 8;
    orc_llm *full = orc_llm_create(&cfg, true, &err), *back = full ? orc_llm_create(&full->cfg, true, &err) : NULL;
    if (!back) return worker_fail(r, err.msg);
    orc_llm_init_weights(full, 5);
    for (int i = 0; i < full->n_params; i++) /* norms away from 1, so their gradients are checked for real */
        if (full->params[i]->ndim == 1)
            for (int64_t k = 0; k < full->params[i]->numel; k++) orc_f32(full->params[i])[k] = 1.0f + 0.01f * (float)(k % 7);
    orc_arena *a = orc_arena_create(16 << 20);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_arena *fixed = orc_arena_create(1 << 16); /* the batch outlives the context resets */
    orc_tensor *ids = gc_rand_ids(fixed, 2, ORC_SHAPE(2, 8), 3, 64), *tg = gc_rand_ids(fixed, 2, ORC_SHAPE(2, 8), 4, 64);
    orc_tensor *logits = orc_llm_forward(&ctx, full, ids, NULL);
    orc_tensor *loss = orc_cross_entropy(&ctx, logits, tg, NULL, ORC_IGNORE_INDEX);
    if (!loss || orc_backward(&ctx, loss) != ORC_OK) return worker_fail(r, orc_ctx_message(&ctx));
    float *want = malloc(sizeof(float) * (size_t)logits->numel);
    int64_t nl = logits->numel;
    memcpy(want, logits->data, sizeof(float) * (size_t)nl);
    orc_ctx_reset(&ctx);
    orc_tp_llm *tp = orc_tp_llm_from_full(full, w, true, &err);
    if (!tp) return worker_fail(r, err.msg);
    orc_tensor *tl = orc_tp_llm_forward(&ctx, tp, ids);
    orc_tensor *tloss = orc_cross_entropy(&ctx, tl, tg, NULL, ORC_IGNORE_INDEX);
    if (!tloss || orc_backward(&ctx, tloss) != ORC_OK) return worker_fail(r, orc_ctx_message(&ctx));
    int bad = !close_rel(want, orc_f32(tl), nl, 1e-5, "logits", r);
    if (orc_tp_llm_to_full(tp, back, true, &err) != ORC_OK) return worker_fail(r, err.msg);
    for (int i = 0; i < full->n_params && !bad; i++)
        bad = !close_rel(full->params[i]->grad, back->params[i]->grad, full->params[i]->numel, 1e-5,
                         full->params[i]->name, r);
    if (orc_tp_llm_to_full(tp, back, false, &err) != ORC_OK) return worker_fail(r, err.msg);
    for (int i = 0; i < full->n_params && !bad; i++)
        bad = memcmp(full->params[i]->data, back->params[i]->data, sizeof(float) * (size_t)full->params[i]->numel) != 0;
    if (!bad) printf("worker rank %d: tp ok (local heads %lld)\n", r, (long long)tp->local->cfg.num_attention_heads);
    free(want);
    orc_tp_llm_free(tp);
    orc_llm_free(full);
    orc_llm_free(back);
    orc_arena_destroy(a);
    orc_arena_destroy(fixed);
    return bad ? worker_fail(r, "tensor parallel differs from the full model") : 0;
}

/* Expert parallel: E = 4 experts over the ranks, each rank routing its own
 * tokens; outputs, input gradients, router gradients (this rank's tokens)
 * and the local experts' gradients (every rank's tokens) against the full
 * layer on one rank (expert gradients summed over ranks). */
static orc_tensor *ep_loss(orc_ctx *ctx, orc_tensor *out, orc_tensor *wts, const orc_moe_forward *res) {
    orc_tensor *l = orc_sum_all(ctx, orc_mul(ctx, out, wts));
    if (res->balance) l = orc_add(ctx, l, orc_scale(ctx, res->balance, 0.1f));
    if (res->z) l = orc_add(ctx, l, orc_scale(ctx, res->z, 0.01f));
    return l;
}

static int worker_ep(orc_comm *w) {
    orc_error err = {0};
    const int r = w->rank, P = w->size;
    const int64_t E = 4, El = E / P, D = 16, Fe = 24, N = 12;
    orc_arena *pa = orc_arena_create(4 << 20), *act = orc_arena_create(8 << 20);
    orc_moe_layer full = {.router = rand_param(pa, 2, ORC_SHAPE(E, D), 1, "router"),
                          .w_gate = rand_param(pa, 3, ORC_SHAPE(E, Fe, D), 2, "gate"),
                          .w_up = rand_param(pa, 3, ORC_SHAPE(E, Fe, D), 3, "up"),
                          .w_down = rand_param(pa, 3, ORC_SHAPE(E, D, Fe), 4, "down")};
    orc_moe_layer part = {.router = full.router,
                          .w_gate = orc_param_new(pa, 3, ORC_SHAPE(El, Fe, D), "gate_l", &err),
                          .w_up = orc_param_new(pa, 3, ORC_SHAPE(El, Fe, D), "up_l", &err),
                          .w_down = orc_param_new(pa, 3, ORC_SHAPE(El, D, Fe), "down_l", &err)};
    orc_tensor *x = rand_param(pa, 2, ORC_SHAPE(N, D), 100 + (uint64_t)r, "x");
    orc_tensor *wts = rand_param(pa, 2, ORC_SHAPE(N, D), 200 + (uint64_t)r, "wts");
    if (!full.w_down || !part.w_down || !x || !wts) return worker_fail(r, "setup");
    orc_tensor *fw[3] = {full.w_gate, full.w_up, full.w_down}, *pw[3] = {part.w_gate, part.w_up, part.w_down};
    for (int k = 0; k < 3; k++)
        memcpy(pw[k]->data, orc_f32(fw[k]) + r * pw[k]->numel, sizeof(float) * (size_t)pw[k]->numel);
    const orc_moe_opts o = {.router = ORC_MOE_TOKEN_CHOICE, .n_experts = E, .top_k = 2, .capacity_factor = 1.0};
    orc_ctx ctx;
    orc_ctx_init(&ctx, act, 1);
    orc_moe_forward res;
    orc_tensor *out = orc_moe_ffn(&ctx, &full, &o, x, &res);
    orc_tensor *loss = out ? ep_loss(&ctx, out, wts, &res) : NULL;
    if (!loss || orc_backward(&ctx, loss) != ORC_OK) return worker_fail(r, orc_ctx_message(&ctx));
    float *want = malloc(sizeof(float) * (size_t)(N * D)), *gx = malloc(sizeof(float) * (size_t)(N * D));
    float *grouter = malloc(sizeof(float) * (size_t)(E * D));
    memcpy(want, out->data, sizeof(float) * (size_t)(N * D));
    memcpy(gx, x->grad, sizeof(float) * (size_t)(N * D));
    memcpy(grouter, full.router->grad, sizeof(float) * (size_t)(E * D));
    int64_t dropped = res.plan->stats.dropped;
    for (int k = 0; k < 3; k++)
        if (orc_allreduce_f32(w, fw[k]->grad, fw[k]->numel, ORC_REDUCE_SUM, &err)) return worker_fail(r, err.msg);
    orc_ctx_reset(&ctx);
    orc_zero_grad(x);
    orc_zero_grad(full.router);
    orc_tensor *out2 = orc_ep_moe_ffn(&ctx, w, &part, &o, x, &res);
    orc_tensor *loss2 = out2 ? ep_loss(&ctx, out2, wts, &res) : NULL;
    if (!loss2 || orc_backward(&ctx, loss2) != ORC_OK) return worker_fail(r, orc_ctx_message(&ctx));
    int bad = !close_rel(want, orc_f32(out2), N * D, 1e-5, "ep output", r) ||
              !close_rel(gx, x->grad, N * D, 1e-5, "ep input grad", r) ||
              !close_rel(grouter, full.router->grad, E * D, 1e-5, "ep router grad", r);
    for (int k = 0; k < 3 && !bad; k++)
        bad = !close_rel(fw[k]->grad + r * pw[k]->numel, pw[k]->grad, pw[k]->numel, 1e-5, "ep expert grad", r);
    if (!bad) printf("worker rank %d: ep ok (%lld local experts, %lld dropped)\n", r, (long long)El, (long long)dropped);
    free(want);
    free(gx);
    free(grouter);
    orc_arena_destroy(pa);
    orc_arena_destroy(act);
    return bad ? worker_fail(r, "expert parallel differs from the full layer") : 0;
}

static int worker_main(const char *mode) {
    orc_error err = {0};
    orc_comm *w = orc_dist_init(NULL, NULL, &err);
    if (!w) return worker_fail(-1, err.msg);
    int rc = !strcmp(mode, "collectives") ? worker_collectives(w) : !strcmp(mode, "tp") ? worker_tp(w)
             : !strcmp(mode, "ep") ? worker_ep(w) : 2;
    orc_dist_finalize(w, false);
    return rc;
}

/* ---- multi-process tests --------------------------------------------------------------------------- */

static void test_collectives_np4(void **state) {
    (void)state;
    expect_ok(sh("%s 4 '%s' --worker collectives", MPIRUN, g_self), "collectives np 4");
}

static void test_tensor_parallel_np2(void **state) {
    (void)state;
    expect_ok(sh("%s 2 '%s' --worker tp", MPIRUN, g_self), "tp np 2");
    char *o = out_text();
    assert_non_null(strstr(o, "worker rank 1: tp ok (local heads 2)"));
    free(o);
}

static void test_expert_parallel_np2_np4(void **state) {
    (void)state;
    expect_ok(sh("%s 2 '%s' --worker ep", MPIRUN, g_self), "ep np 2");
    char *o = out_text();
    assert_non_null(strstr(o, "worker rank 1: ep ok (2 local experts"));
    free(o);
    expect_ok(sh("%s 4 '%s' --worker ep", MPIRUN, g_self), "ep np 4");
    o = out_text();
    assert_non_null(strstr(o, "worker rank 3: ep ok (1 local experts"));
    free(o);
}

static void test_data_parallel_matches_single(void **state) {
    (void)state;
    expect_ok(sh("'%s' --threads 1 train --config r.json --out one --log one.jsonl --quiet", g_bin), "single");
    expect_ok(sh("%s 2 '%s' --threads 1 train --config r.json --out two --log two.jsonl --mesh data=2 --quiet", MPIRUN,
                 g_bin), "np 2");
    expect_same_losses("one.jsonl", "two.jsonl", 50, 1e-5);
    /* ZeRO-1 on 4 ranks for 20 steps, then resumed on 2 ranks without ZeRO:
     * the checkpoint has the normal layout, any mesh reads it. */
    expect_ok(sh("%s 4 '%s' --threads 1 train --config r.json --out z --log z.jsonl --mesh data=4 --zero 1 "
                 "--stop-after 20 --quiet", MPIRUN, g_bin), "np 4 zero 1");
    expect_ok(sh("%s 2 '%s' --threads 1 train --out z --resume --log z.jsonl --mesh data=2 --quiet", MPIRUN, g_bin),
              "resume np 2");
    expect_same_losses("one.jsonl", "z.jsonl", 50, 1e-5);
    /* and a single process continues it too */
    expect_ok(sh("'%s' --threads 1 train --out z --resume --steps 52 --quiet", g_bin), "resume on one process");
}

/* Tensor parallel training: 20 steps on data=2,model=2, resumed on
 * model=2 alone, follow the single-process trajectory. */
static void test_tensor_parallel_training(void **state) {
    (void)state;
    if (sh("test -s one.jsonl") != 0) /* made by the data-parallel test when it ran */
        expect_ok(sh("'%s' --threads 1 train --config r.json --out one --log one.jsonl --quiet", g_bin), "single");
    expect_ok(sh("%s 4 '%s' --threads 1 train --config r.json --out tp --log tp.jsonl --mesh data=2,model=2 "
                 "--stop-after 20 --quiet", MPIRUN, g_bin), "np 4 data=2,model=2");
    expect_ok(sh("%s 2 '%s' --threads 1 train --out tp --resume --log tp.jsonl --mesh model=2 --quiet", MPIRUN, g_bin),
              "resume np 2 model=2");
    expect_same_losses("one.jsonl", "tp.jsonl", 50, 1e-5);
}

static void test_bad_mesh_and_recipes(void **state) {
    (void)state;
    int rc = sh("%s 2 '%s' --threads 1 train --config r.json --out m1 --mesh data=3 --quiet", MPIRUN, g_bin);
    expect_fail(rc, "mesh data=3 on 2 ranks", "needs 3 ranks but the job has 2", 2);
    rc = sh("%s 4 '%s' --threads 1 train --config r.json --out m3 --mesh data=1,model=4 --quiet", MPIRUN, g_bin);
    expect_fail(rc, "model=4 with 2 KV heads", "does not divide num_key_value_heads", 4);
    rc = sh("%s 2 '%s' --threads 1 train --config r.json --out m4 --quiet", MPIRUN, g_bin);
    expect_fail(rc, "no --mesh under mpirun", "no --mesh", 2);
    write_recipe("r2.json", 50, 4, 12);
    rc = sh("mpirun --oversubscribe -np 1 '%s' --threads 1 train --config r.json --out m5 --mesh data=2 --quiet : "
            "-np 1 '%s' --threads 1 train --config r2.json --out m5 --mesh data=2 --quiet", g_bin, g_bin);
    expect_fail(rc, "different recipes", "training recipe (after command-line overrides) differs", 2);
    rc = sh("%s 2 '%s' --threads 1 train --config r.json --out m6 --mesh data=2 --batch 3 --quiet", MPIRUN, g_bin);
    expect_fail(rc, "batch 3 on 2 data ranks", "must be a multiple of --mesh data=2", 2);
}

static void test_dead_and_stuck_ranks(void **state) {
    (void)state;
    int rc = sh("env ORCHARD_DIST_FAULT=exit:1:3 ORCHARD_DIST_TIMEOUT=5 %s 2 '%s' --threads 1 train --config r.json "
                "--out f1 --mesh data=2 --quiet", MPIRUN, g_bin);
    expect_fail(rc, "rank 1 exits at step 3", "rank 1: ORCHARD_DIST_FAULT: exiting", 1);
    rc = sh("env ORCHARD_DIST_FAULT=hang:1:3 ORCHARD_DIST_TIMEOUT=3 %s 2 '%s' --threads 1 train --config r.json "
            "--out f2 --mesh data=2 --quiet", MPIRUN, g_bin);
    expect_fail(rc, "rank 1 hangs at step 3", "rank 0: allreduce", 1);
    char *o = out_text();
    assert_non_null(strstr(o, "did not complete within 3 s"));
    free(o);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--worker")) return worker_main(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_and_mesh),
        cmocka_unit_test(test_tp_ops_gradcheck),
        cmocka_unit_test(test_collectives_np4),
        cmocka_unit_test(test_tensor_parallel_np2),
        cmocka_unit_test(test_expert_parallel_np2_np4),
        cmocka_unit_test(test_data_parallel_matches_single),
        cmocka_unit_test(test_tensor_parallel_training),
        cmocka_unit_test(test_bad_mesh_and_recipes),
        cmocka_unit_test(test_dead_and_stuck_ranks),
    };
    if (getenv("ORCHARD_TEST_FILTER")) cmocka_set_test_filter(getenv("ORCHARD_TEST_FILTER")); /* for debugging */
    return cmocka_run_group_tests(tests, setup, teardown);
}
