/* The optimizer module: AdamW and SGD against the formulas evaluated in
 * double, parameter groups (weight decay off, LR multiplier), gradient
 * clipping, the learning-rate schedule, gradient accumulation, state
 * save/restore, thread-count independence and argument errors. */
#include "gradcheck.h"
#include "orchard/optim.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- helpers ---------------------------------------------------------- */

static orc_tensor *param(orc_arena *a, int64_t n, const char *name, double seed) {
    orc_error err = {0};
    orc_tensor *p = orc_param_new(a, 1, ORC_SHAPE(n), name, &err);
    if (!p) fail_msg("param: %s", err.msg);
    for (int64_t i = 0; i < n; i++) orc_f32(p)[i] = (float)(0.8 * cos(seed + 0.9 * (double)i));
    return p;
}

/* A gradient that changes with the step and the element, of size ~0.5. */
static void set_grad(orc_tensor *p, int step, double phase) {
    for (int64_t i = 0; i < p->numel; i++)
        p->grad[i] = (float)(0.5 * sin(phase + 1.3 * (double)i + 0.7 * (double)step) + 0.05 * (double)step);
}

static void to_double(const float *src, double *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

static void assert_close(const float *got, const double *want, int64_t n, double tol, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (fabs((double)got[i] - want[i]) > tol)
            fail_msg("%s[%lld]: got %.9g, want %.9g (tol %g)", what, (long long)i, (double)got[i], want[i], tol);
}

static orc_optim *adamw_or_fail(const orc_param_group *g, int n, orc_adamw_opts o) {
    orc_error err = {0};
    orc_optim *opt = orc_adamw_new(g, n, o, &err);
    if (!opt) fail_msg("adamw_new: %s", err.msg);
    return opt;
}

static orc_optim *sgd_or_fail(const orc_param_group *g, int n, orc_sgd_opts o) {
    orc_error err = {0};
    orc_optim *opt = orc_sgd_new(g, n, o, &err);
    if (!opt) fail_msg("sgd_new: %s", err.msg);
    return opt;
}

static void step_or_fail(orc_optim *o, float lr) {
    orc_error err = {0};
    if (orc_optim_step(o, lr, &err) != ORC_OK) fail_msg("step: %s", err.msg);
}

/* ---- AdamW ------------------------------------------------------------ */

/* Reference AdamW for one parameter, one step t (from 1), in double. */
static void adamw_ref(double *p, double *m, double *v, const float *g, int64_t n, double lr, double wd, double b1,
                      double b2, double eps, int t) {
    const double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    for (int64_t i = 0; i < n; i++) {
        p[i] *= 1.0 - lr * wd;
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * (double)g[i] * g[i];
        p[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
    }
}

/* Two groups: decay 0.1 at full LR, and decay off at half LR. Five steps
 * with a changing LR; parameters and both moments checked after each. */
static void test_adamw_matches_formula(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *p0 = param(a, 5, "w", 0.1), *p1 = param(a, 3, "b", 2.0);
    orc_param_group groups[2] = {{&p0, 1, 1.0f, 0.1f}, {&p1, 1, 0.5f, 0.0f}};
    const orc_adamw_opts o = {0.9f, 0.95f, 1e-8f};
    orc_optim *opt = adamw_or_fail(groups, 2, o);
    assert_string_equal(orc_optim_kind(opt), "adamw");
    assert_int_equal(orc_optim_state_count(opt), 4);

    double rp0[5], rp1[3], m0[5] = {0}, v0[5] = {0}, m1[3] = {0}, v1[3] = {0};
    to_double(orc_f32(p0), rp0, 5);
    to_double(orc_f32(p1), rp1, 3);
    const float lrs[5] = {0.01f, 0.02f, 0.05f, 0.03f, 0.001f};
    for (int s = 0; s < 5; s++) {
        set_grad(p0, s, 0.0);
        set_grad(p1, s, 1.0);
        step_or_fail(opt, lrs[s]);
        adamw_ref(rp0, m0, v0, p0->grad, 5, lrs[s], 0.1f, 0.9f, 0.95f, 1e-8f, s + 1);
        adamw_ref(rp1, m1, v1, p1->grad, 3, (double)lrs[s] * 0.5, 0.0, 0.9f, 0.95f, 1e-8f, s + 1);
        assert_close(orc_f32(p0), rp0, 5, 1e-6, "adamw p0");
        assert_close(orc_f32(p1), rp1, 3, 1e-6, "adamw p1");
        assert_close(orc_optim_state_get(opt, 0).data, m0, 5, 1e-6, "exp_avg p0");
        assert_close(orc_optim_state_get(opt, 1).data, v0, 5, 1e-6, "exp_avg_sq p0");
        assert_close(orc_optim_state_get(opt, 2).data, m1, 3, 1e-6, "exp_avg p1");
        assert_close(orc_optim_state_get(opt, 3).data, v1, 3, 1e-6, "exp_avg_sq p1");
    }
    assert_int_equal(orc_optim_get_step(opt), 5);
    orc_optim_free(opt);
    orc_arena_destroy(a);
}

/* State names follow the parameter names; an unnamed one gets param<i>. */
static void test_state_names(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *p0 = param(a, 4, "layer.weight", 0.0), *p1 = param(a, 2, NULL, 1.0);
    orc_tensor *ps[2] = {p0, p1};
    orc_param_group g = orc_group(ps, 2, 0.0f);
    orc_optim *opt = adamw_or_fail(&g, 1, (orc_adamw_opts){0.9f, 0.999f, 1e-8f});
    assert_string_equal(orc_optim_state_get(opt, 0).name, "layer.weight.exp_avg");
    assert_string_equal(orc_optim_state_get(opt, 1).name, "layer.weight.exp_avg_sq");
    assert_string_equal(orc_optim_state_get(opt, 2).name, "param1.exp_avg");
    assert_int_equal(orc_optim_state_get(opt, 2).numel, 2);
    assert_ptr_equal(orc_optim_state_get(opt, 3).param, p1);
    assert_null(orc_optim_state_get(opt, 4).data);
    assert_null(orc_optim_state_get(opt, -1).name);
    orc_optim_free(opt);

    orc_optim *sgd = sgd_or_fail(&g, 1, (orc_sgd_opts){0.9f, 0.0f, false});
    assert_int_equal(orc_optim_state_count(sgd), 2);
    assert_string_equal(orc_optim_state_get(sgd, 0).name, "layer.weight.momentum_buffer");
    orc_optim_free(sgd);
    sgd = sgd_or_fail(&g, 1, (orc_sgd_opts){0.0f, 0.0f, false});
    assert_int_equal(orc_optim_state_count(sgd), 0);
    orc_optim_free(sgd);
    orc_arena_destroy(a);
}

/* ---- SGD ------------------------------------------------------------- */

static void sgd_ref(double *p, double *buf, const float *g, int64_t n, double lr, double wd, double mu, double damp,
                    bool nesterov, bool first) {
    for (int64_t i = 0; i < n; i++) {
        double d = g[i] + wd * p[i];
        if (mu != 0) {
            buf[i] = first ? d : mu * buf[i] + (1.0 - damp) * d;
            d = nesterov ? d + mu * buf[i] : buf[i];
        }
        p[i] -= lr * d;
    }
}

static void run_sgd_case(orc_sgd_opts o, float wd) {
    orc_arena *a = orc_arena_create(0);
    orc_tensor *p = param(a, 6, "w", 0.3);
    orc_param_group g = orc_group(&p, 1, wd);
    orc_optim *opt = sgd_or_fail(&g, 1, o);
    double rp[6], buf[6] = {0};
    to_double(orc_f32(p), rp, 6);
    const float lrs[4] = {0.1f, 0.05f, 0.2f, 0.1f};
    for (int s = 0; s < 4; s++) {
        set_grad(p, s, 0.5);
        step_or_fail(opt, lrs[s]);
        sgd_ref(rp, buf, p->grad, 6, lrs[s], wd, o.momentum, o.dampening, o.nesterov, s == 0);
        char what[96];
        snprintf(what, sizeof what, "sgd mu=%g damp=%g nesterov=%d wd=%g step %d", (double)o.momentum,
                 (double)o.dampening, (int)o.nesterov, (double)wd, s);
        assert_close(orc_f32(p), rp, 6, 1e-6, what);
        if (o.momentum != 0) assert_close(orc_optim_state_get(opt, 0).data, buf, 6, 1e-6, what);
    }
    orc_optim_free(opt);
    orc_arena_destroy(a);
}

static void test_sgd_matches_formula(void **state) {
    (void)state;
    run_sgd_case((orc_sgd_opts){0.0f, 0.0f, false}, 0.0f);
    run_sgd_case((orc_sgd_opts){0.0f, 0.0f, false}, 0.01f);
    run_sgd_case((orc_sgd_opts){0.9f, 0.0f, false}, 0.0f);
    run_sgd_case((orc_sgd_opts){0.9f, 0.0f, false}, 0.05f);
    run_sgd_case((orc_sgd_opts){0.9f, 0.0f, true}, 0.05f);
    run_sgd_case((orc_sgd_opts){0.8f, 0.3f, false}, 0.0f);
}

/* ---- groups ------------------------------------------------------------ */

/* With a zero gradient AdamW's Adam part is zero, so only decay moves p:
 * by exactly (1 - lr * wd) in a decayed group, not at all with decay off. */
static void test_weight_decay_off_for_a_group(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *w = param(a, 4, "w", 0.0), *b = param(a, 4, "b", 1.0);
    float w0[4], b0[4];
    memcpy(w0, orc_f32(w), sizeof w0);
    memcpy(b0, orc_f32(b), sizeof b0);
    orc_param_group groups[2] = {orc_group(&w, 1, 0.5f), orc_group(&b, 1, 0.0f)};
    orc_optim *opt = adamw_or_fail(groups, 2, (orc_adamw_opts){0.9f, 0.999f, 1e-8f});
    orc_optim_zero_grad(opt);
    step_or_fail(opt, 0.1f);
    const float decay = (float)(1.0 - 0.1f * 0.5);
    for (int i = 0; i < 4; i++) {
        assert_float_equal(orc_f32(w)[i], w0[i] * decay, 1e-7);
        assert_true(orc_f32(b)[i] == b0[i]);
    }
    orc_optim_free(opt);
    orc_arena_destroy(a);
}

/* lr_mult 2 at lr equals lr_mult 1 at 2 * lr; lr_mult 0 freezes a group, also when set later. */
static void test_lr_multiplier(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x = param(a, 5, "x", 0.2), *y = param(a, 5, "y", 0.2), *z = param(a, 5, "z", 0.7);
    float z0[5];
    memcpy(z0, orc_f32(z), sizeof z0);
    orc_param_group gx[2] = {{&x, 1, 2.0f, 0.1f}, {&z, 1, 0.0f, 0.1f}};
    orc_param_group gy = {&y, 1, 1.0f, 0.1f};
    orc_optim *ox = adamw_or_fail(gx, 2, (orc_adamw_opts){0.9f, 0.999f, 1e-8f});
    orc_optim *oy = adamw_or_fail(&gy, 1, (orc_adamw_opts){0.9f, 0.999f, 1e-8f});
    for (int s = 0; s < 3; s++) {
        set_grad(x, s, 0.0);
        set_grad(y, s, 0.0);
        set_grad(z, s, 0.0);
        step_or_fail(ox, 0.01f);
        step_or_fail(oy, 0.02f);
    }
    for (int i = 0; i < 5; i++) {
        assert_float_equal(orc_f32(x)[i], orc_f32(y)[i], 1e-7);
        assert_true(orc_f32(z)[i] == z0[i]);
    }
    assert_true(fabsf(orc_f32(x)[0] - z0[0]) > 1e-3f || fabsf(orc_f32(x)[1] - z0[1]) > 1e-3f);
    /* set_lr_mult: freezing x from the next step on leaves it exactly where it is; z moves once thawed */
    orc_error err = {0};
    float x0[5];
    memcpy(x0, orc_f32(x), sizeof x0);
    assert_int_equal(orc_optim_set_lr_mult(ox, 0, 0.0f, &err), ORC_OK);
    assert_int_equal(orc_optim_set_lr_mult(ox, 1, 1.0f, &err), ORC_OK);
    set_grad(x, 3, 0.0);
    set_grad(z, 3, 0.0);
    step_or_fail(ox, 0.01f);
    assert_memory_equal(orc_f32(x), x0, sizeof x0);
    assert_true(orc_f32(z)[0] != z0[0]);
    assert_int_equal(orc_optim_set_lr_mult(ox, 2, 1.0f, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "group 2"));
    assert_int_equal(orc_optim_set_lr_mult(ox, 0, -1.0f, &err), ORC_EINVAL);
    assert_int_equal(orc_optim_set_lr_mult(ox, 0, NAN, &err), ORC_EINVAL);
    orc_optim_free(ox);
    orc_optim_free(oy);
    orc_arena_destroy(a);
}

static void test_zero_grad_all_groups(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x = param(a, 3, "x", 0.0), *y = param(a, 2, "y", 0.0);
    set_grad(x, 1, 0.0);
    set_grad(y, 1, 0.0);
    orc_param_group g[2] = {orc_group(&x, 1, 0.0f), orc_group(&y, 1, 0.0f)};
    orc_optim *opt = sgd_or_fail(g, 2, (orc_sgd_opts){0});
    orc_optim_zero_grad(opt);
    for (int i = 0; i < 3; i++) assert_true(x->grad[i] == 0.0f);
    for (int i = 0; i < 2; i++) assert_true(y->grad[i] == 0.0f);
    orc_optim_free(opt);
    orc_arena_destroy(a);
}

/* ---- clipping ------------------------------------------------------------ */

static void test_clip_grad_norm(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_tensor *x = param(a, 2, "x", 0.0), *y = param(a, 1, "y", 0.0);
    orc_tensor *ps[2] = {x, y};
    /* |(3, 0, 4)| = 5 */
    x->grad[0] = 3.0f; x->grad[1] = 0.0f; y->grad[0] = -4.0f;
    assert_true(orc_grad_norm(ps, 2) == 5.0);
    /* Below the threshold: returned, nothing changed. */
    assert_true(orc_clip_grad_norm(ps, 2, 10.0) == 5.0);
    assert_true(x->grad[0] == 3.0f && y->grad[0] == -4.0f);
    assert_true(orc_clip_grad_norm(ps, 2, 5.0) == 5.0);
    assert_true(x->grad[0] == 3.0f);
    /* Above: scaled by max / (norm + 1e-6); the pre-clip norm comes back. */
    assert_true(orc_clip_grad_norm(ps, 2, 1.0) == 5.0);
    const double c = 1.0 / (5.0 + 1e-6);
    assert_float_equal(x->grad[0], 3.0 * c, 1e-7);
    assert_float_equal(y->grad[0], -4.0 * c, 1e-7);
    assert_float_equal(orc_grad_norm(ps, 2), 1.0, 1e-6);

    /* Through the optimizer: every group counts. */
    x->grad[0] = 3.0f; y->grad[0] = -4.0f;
    orc_param_group g[2] = {orc_group(&x, 1, 0.0f), orc_group(&y, 1, 0.0f)};
    orc_optim *opt = sgd_or_fail(g, 2, (orc_sgd_opts){0});
    assert_true(orc_optim_clip_grad_norm(opt, 100.0) == 5.0);
    assert_true(x->grad[0] == 3.0f);
    assert_true(orc_optim_clip_grad_norm(opt, 0.5) == 5.0);
    assert_float_equal(y->grad[0], -4.0 * 0.5 / (5.0 + 1e-6), 1e-7);

    /* A non-finite norm leaves gradients alone. */
    x->grad[0] = INFINITY; y->grad[0] = 1.0f;
    assert_true(isinf(orc_clip_grad_norm(ps, 2, 1.0)));
    assert_true(y->grad[0] == 1.0f);
    orc_optim_free(opt);
    orc_arena_destroy(a);
}

/* A large gradient (many blocks, parallel path): the same bits for 1 and 3
 * threads, and equal to a plain double sum. */
static void test_clip_norm_thread_independent(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    const int64_t n = 300001;
    orc_tensor *x = param(a, n, "x", 0.0), *y = param(a, 77, "y", 0.0);
    orc_rng r;
    orc_rng_init(&r, 5);
    orc_rng_fill_normal(&r, x->grad, n, 0.0f, 1.0f);
    orc_rng_fill_normal(&r, y->grad, 77, 0.0f, 1.0f);
    orc_tensor *ps[2] = {x, y};
    double want = 0;
    for (int64_t i = 0; i < n; i++) want += (double)x->grad[i] * x->grad[i];
    for (int64_t i = 0; i < 77; i++) want += (double)y->grad[i] * y->grad[i];
    want = sqrt(want);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    const double n1 = orc_grad_norm(ps, 2);
    omp_set_num_threads(3);
    const double n3 = orc_grad_norm(ps, 2);
    omp_set_num_threads(saved);
    assert_memory_equal(&n1, &n3, sizeof n1);
    assert_true(fabs(n1 - want) < 1e-9 * want);
    orc_arena_destroy(a);
}

/* ---- schedule -------------------------------------------------------------- */

static void test_schedule_values(void **state) {
    (void)state;
    const orc_lr_schedule s = {ORC_LR_WARMUP_COSINE, 1e-3f, 1e-4f, 10, 110};
    orc_error err = {0};
    assert_int_equal(orc_lr_schedule_check(&s, &err), ORC_OK);
    assert_float_equal(orc_lr_at(&s, 0), 1e-4, 1e-10);          /* first warmup step: max / W */
    assert_float_equal(orc_lr_at(&s, 4), 5e-4, 1e-10);          /* mid-warmup */
    assert_float_equal(orc_lr_at(&s, 9), 1e-3, 1e-10);          /* end of warmup */
    assert_float_equal(orc_lr_at(&s, 10), 1e-3, 1e-10);         /* decay starts at max */
    assert_float_equal(orc_lr_at(&s, 60), 5.5e-4, 1e-10);       /* mid-decay: halfway */
    const double q = 1e-4 + 9e-4 * 0.5 * (1.0 + cos(M_PI * 25.0 / 100.0));
    assert_float_equal(orc_lr_at(&s, 35), q, 1e-10);            /* a quarter into the decay */
    assert_true(orc_lr_at(&s, 109) > 1e-4f && orc_lr_at(&s, 109) < 1.01e-4f);
    assert_float_equal(orc_lr_at(&s, 110), 1e-4, 1e-12);        /* end */
    assert_float_equal(orc_lr_at(&s, 100000), 1e-4, 1e-12);     /* after the end */
    assert_float_equal(orc_lr_at(&s, -3), 1e-4, 1e-10);
    for (int64_t t = 10; t < 110; t++) assert_true(orc_lr_at(&s, t + 1) <= orc_lr_at(&s, t));

    const orc_lr_schedule nowarm = {ORC_LR_WARMUP_COSINE, 2.0f, 0.0f, 0, 4};
    assert_float_equal(orc_lr_at(&nowarm, 0), 2.0, 1e-7);
    assert_float_equal(orc_lr_at(&nowarm, 2), 1.0, 1e-7);
    assert_float_equal(orc_lr_at(&nowarm, 4), 0.0, 1e-7);

    const orc_lr_schedule c = {ORC_LR_CONSTANT, 3e-4f, 0.0f, 0, 0};
    assert_int_equal(orc_lr_schedule_check(&c, &err), ORC_OK);
    assert_true(orc_lr_at(&c, 0) == 3e-4f && orc_lr_at(&c, 12345) == 3e-4f);

    const orc_lr_schedule bad1 = {ORC_LR_WARMUP_COSINE, 1e-3f, 1e-2f, 0, 10};
    assert_int_equal(orc_lr_schedule_check(&bad1, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "min_lr"));
    orc_error_clear(&err);
    const orc_lr_schedule bad2 = {ORC_LR_WARMUP_COSINE, 1e-3f, 0.0f, 20, 10};
    assert_int_equal(orc_lr_schedule_check(&bad2, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "warmup_steps"));
}

/* ---- gradient accumulation ------------------------------------------------ */

enum { ACC_N = 16, ACC_D = 5 };

/* Loss = mean over [n, D] of (x * w + b - t)^2, built from elementwise ops;
 * the mean's gradient 1/(n*D) per element is fed to orc_backward_with, after
 * an orc_scale by 1/accum as in the documented pattern. */
static void accumulate_batch(orc_tensor *w, orc_tensor *b, const float *x, const float *t, int64_t row0,
                             int64_t rows, int accum) {
    orc_arena *a = orc_arena_create(0);
    orc_ctx ctx;
    orc_ctx_init(&ctx, a, 1);
    orc_error err = {0};
    orc_tensor *xt = orc_tensor_wrap(a, ORC_F32, 2, ORC_SHAPE(rows, ACC_D), (float *)x + row0 * ACC_D, &err);
    orc_tensor *tt = orc_tensor_wrap(a, ORC_F32, 2, ORC_SHAPE(rows, ACC_D), (float *)t + row0 * ACC_D, &err);
    orc_tensor *diff = orc_sub(&ctx, orc_add(&ctx, orc_mul(&ctx, xt, w), b), tt);
    orc_tensor *sq = orc_scale(&ctx, orc_mul(&ctx, diff, diff), 1.0f / (float)accum);
    GC_ASSERT_OK(&ctx);
    float *g = malloc((size_t)sq->numel * sizeof *g);
    for (int64_t i = 0; i < sq->numel; i++) g[i] = 1.0f / (float)(rows * ACC_D);
    if (orc_backward_with(&ctx, sq, g) != ORC_OK) fail_msg("backward: %s", ctx.err.msg);
    free(g);
    orc_arena_destroy(a);
}

static void run_accumulation(bool adamw) {
    orc_arena *a = orc_arena_create(0);
    float x[ACC_N * ACC_D], t[ACC_N * ACC_D];
    orc_rng r;
    orc_rng_init(&r, 9);
    orc_rng_fill_normal(&r, x, ACC_N * ACC_D, 0.0f, 1.0f);
    orc_rng_fill_normal(&r, t, ACC_N * ACC_D, 0.5f, 1.0f);
    orc_tensor *w1 = param(a, ACC_D, "w", 0.0), *b1 = param(a, ACC_D, "b", 1.0);
    orc_tensor *w4 = param(a, ACC_D, "w", 0.0), *b4 = param(a, ACC_D, "b", 1.0);
    orc_param_group g1[2] = {orc_group(&w1, 1, 0.1f), orc_group(&b1, 1, 0.0f)};
    orc_param_group g4[2] = {orc_group(&w4, 1, 0.1f), orc_group(&b4, 1, 0.0f)};
    orc_optim *o1, *o4;
    if (adamw) {
        o1 = adamw_or_fail(g1, 2, (orc_adamw_opts){0.9f, 0.999f, 1e-8f});
        o4 = adamw_or_fail(g4, 2, (orc_adamw_opts){0.9f, 0.999f, 1e-8f});
    } else {
        o1 = sgd_or_fail(g1, 2, (orc_sgd_opts){0.9f, 0.0f, false});
        o4 = sgd_or_fail(g4, 2, (orc_sgd_opts){0.9f, 0.0f, false});
    }
    float b_start[ACC_D];
    memcpy(b_start, orc_f32(b1), sizeof b_start);
    const float lr = adamw ? 0.05f : 0.5f;
    for (int s = 0; s < 3; s++) {
        orc_optim_zero_grad(o1);
        accumulate_batch(w1, b1, x, t, 0, ACC_N, 1);
        step_or_fail(o1, lr);
        orc_optim_zero_grad(o4);
        for (int k = 0; k < 4; k++) accumulate_batch(w4, b4, x, t, k * (ACC_N / 4), ACC_N / 4, 4);
        for (int i = 0; i < ACC_D; i++) {
            assert_float_equal(w4->grad[i], w1->grad[i], 1e-6);
            assert_float_equal(b4->grad[i], b1->grad[i], 1e-6);
        }
        step_or_fail(o4, lr);
        for (int i = 0; i < ACC_D; i++) {
            assert_float_equal(orc_f32(w4)[i], orc_f32(w1)[i], 1e-6);
            assert_float_equal(orc_f32(b4)[i], orc_f32(b1)[i], 1e-6);
        }
    }
    /* The parameters did move (the comparison above is not vacuous). */
    float moved = 0;
    for (int i = 0; i < ACC_D; i++) moved = fmaxf(moved, fabsf(orc_f32(b1)[i] - b_start[i]));
    if (moved < 0.02f) fail_msg("%s: parameters moved only %g", adamw ? "adamw" : "sgd", (double)moved);
    orc_optim_free(o1);
    orc_optim_free(o4);
    orc_arena_destroy(a);
}

static void test_accumulation_equals_big_batch(void **state) {
    (void)state;
    run_accumulation(true);
    run_accumulation(false);
}

/* ---- checkpoint state ------------------------------------------------------- */

/* Save params, state buffers and step after 3 steps; run 4 more; restore
 * into a fresh optimizer by memcpy; run the same 4 steps; same bits. */
static void run_save_restore(bool adamw) {
    orc_arena *a = orc_arena_create(0);
    orc_tensor *p = param(a, 7, "w", 0.4), *q = param(a, 3, "b", 0.9);
    orc_param_group g[2] = {orc_group(&p, 1, 0.05f), {&q, 1, 0.3f, 0.0f}};
    const orc_adamw_opts ao = {0.9f, 0.98f, 1e-6f};
    const orc_sgd_opts so = {0.9f, 0.1f, false};
    orc_optim *o = adamw ? adamw_or_fail(g, 2, ao) : sgd_or_fail(g, 2, so);
    for (int s = 0; s < 3; s++) {
        set_grad(p, s, 0.0);
        set_grad(q, s, 2.0);
        step_or_fail(o, 0.01f);
    }
    float sp[7], sq[3];
    memcpy(sp, orc_f32(p), sizeof sp);
    memcpy(sq, orc_f32(q), sizeof sq);
    const int n_states = orc_optim_state_count(o);
    float *saved[4];
    for (int i = 0; i < n_states; i++) {
        orc_optim_state st = orc_optim_state_get(o, i);
        saved[i] = malloc((size_t)st.numel * sizeof(float));
        memcpy(saved[i], st.data, (size_t)st.numel * sizeof(float));
    }
    const int64_t step = orc_optim_get_step(o);
    assert_int_equal(step, 3);
    for (int s = 3; s < 7; s++) {
        set_grad(p, s, 0.0);
        set_grad(q, s, 2.0);
        step_or_fail(o, 0.02f);
    }
    float ap[7], aq[3];
    memcpy(ap, orc_f32(p), sizeof ap);
    memcpy(aq, orc_f32(q), sizeof aq);
    orc_optim_free(o);

    memcpy(orc_f32(p), sp, sizeof sp);
    memcpy(orc_f32(q), sq, sizeof sq);
    orc_optim *r = adamw ? adamw_or_fail(g, 2, ao) : sgd_or_fail(g, 2, so);
    assert_int_equal(orc_optim_state_count(r), n_states);
    for (int i = 0; i < n_states; i++) {
        orc_optim_state st = orc_optim_state_get(r, i);
        memcpy(st.data, saved[i], (size_t)st.numel * sizeof(float));
        free(saved[i]);
    }
    orc_error err = {0};
    assert_int_equal(orc_optim_set_step(r, step, &err), ORC_OK);
    for (int s = 3; s < 7; s++) {
        set_grad(p, s, 0.0);
        set_grad(q, s, 2.0);
        step_or_fail(r, 0.02f);
    }
    assert_memory_equal(orc_f32(p), ap, sizeof ap);
    assert_memory_equal(orc_f32(q), aq, sizeof aq);
    assert_int_equal(orc_optim_set_step(r, -1, &err), ORC_EINVAL);
    orc_optim_free(r);
    orc_arena_destroy(a);
}

static void test_save_restore_continues(void **state) {
    (void)state;
    run_save_restore(true);
    run_save_restore(false);
}

/* ---- threads ---------------------------------------------------------------- */

static void run_threads(int threads, bool adamw, float *out_p, float *out_s) {
    orc_arena *a = orc_arena_create(0);
    const int64_t n = 50000;
    orc_tensor *p = param(a, n, "w", 0.0);
    orc_param_group g = orc_group(&p, 1, 0.1f);
    orc_optim *o = adamw ? adamw_or_fail(&g, 1, (orc_adamw_opts){0.9f, 0.999f, 1e-8f})
                         : sgd_or_fail(&g, 1, (orc_sgd_opts){0.9f, 0.0f, true});
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    for (int s = 0; s < 3; s++) {
        set_grad(p, s, 0.3);
        orc_optim_clip_grad_norm(o, 10.0);
        step_or_fail(o, 0.01f);
    }
    omp_set_num_threads(saved);
    memcpy(out_p, orc_f32(p), (size_t)n * sizeof(float));
    memcpy(out_s, orc_optim_state_get(o, 0).data, (size_t)n * sizeof(float));
    orc_optim_free(o);
    orc_arena_destroy(a);
}

static void test_thread_count_independent(void **state) {
    (void)state;
    const size_t bytes = 50000 * sizeof(float);
    float *p1 = malloc(bytes), *p3 = malloc(bytes), *s1 = malloc(bytes), *s3 = malloc(bytes);
    for (int k = 0; k < 2; k++) {
        run_threads(1, k == 0, p1, s1);
        run_threads(3, k == 0, p3, s3);
        assert_memory_equal(p1, p3, bytes);
        assert_memory_equal(s1, s3, bytes);
    }
    free(p1); free(p3); free(s1); free(s3);
}

/* ---- errors ---------------------------------------------------------------- */

static void test_errors(void **state) {
    (void)state;
    orc_arena *a = orc_arena_create(0);
    orc_error err = {0};
    orc_tensor *p = param(a, 3, "w", 0.0);
    const orc_adamw_opts ao = {0.9f, 0.999f, 1e-8f};

    assert_null(orc_adamw_new(NULL, 0, ao, &err));
    assert_int_equal(err.code, ORC_EINVAL);
    orc_error_clear(&err);

    orc_tensor *twice[2] = {p, p};
    orc_param_group dup = orc_group(twice, 2, 0.0f);
    assert_null(orc_adamw_new(&dup, 1, ao, &err));
    assert_non_null(strstr(err.msg, "listed twice"));
    orc_error_clear(&err);

    orc_param_group across[2] = {orc_group(&p, 1, 0.0f), orc_group(&p, 1, 0.1f)};
    assert_null(orc_sgd_new(across, 2, (orc_sgd_opts){0}, &err));
    assert_non_null(strstr(err.msg, "listed twice"));
    orc_error_clear(&err);

    orc_tensor *plain = orc_tensor_zeros(a, ORC_F32, 2, ORC_SHAPE(2, 3), &err);
    orc_param_group np = orc_group(&plain, 1, 0.0f);
    assert_null(orc_adamw_new(&np, 1, ao, &err));
    assert_non_null(strstr(err.msg, "no gradient buffer"));
    assert_non_null(strstr(err.msg, "[2, 3]"));
    orc_error_clear(&err);

    orc_tensor *null_p = NULL;
    orc_param_group ng = orc_group(&null_p, 1, 0.0f);
    assert_null(orc_adamw_new(&ng, 1, ao, &err));
    assert_int_equal(err.code, ORC_EINVAL);
    orc_error_clear(&err);

    orc_param_group ok = orc_group(&p, 1, 0.0f);
    assert_null(orc_adamw_new(&ok, 1, (orc_adamw_opts){1.0f, 0.999f, 1e-8f}, &err));
    assert_non_null(strstr(err.msg, "betas"));
    orc_error_clear(&err);

    assert_null(orc_sgd_new(&ok, 1, (orc_sgd_opts){0.9f, 0.1f, true}, &err));
    assert_non_null(strstr(err.msg, "nesterov"));
    orc_error_clear(&err);

    orc_param_group neg = {&p, 1, -1.0f, 0.0f};
    assert_null(orc_sgd_new(&neg, 1, (orc_sgd_opts){0}, &err));
    assert_non_null(strstr(err.msg, "lr_mult"));
    orc_error_clear(&err);

    orc_optim *o = adamw_or_fail(&ok, 1, ao);
    float before[3];
    memcpy(before, orc_f32(p), sizeof before);
    assert_int_equal(orc_optim_step(o, NAN, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "learning rate"));
    orc_error_clear(&err);
    assert_int_equal(orc_optim_step(o, -0.1f, &err), ORC_EINVAL);
    assert_memory_equal(orc_f32(p), before, sizeof before);
    assert_int_equal(orc_optim_get_step(o), 0);
    orc_optim_free(o);
    orc_optim_free(NULL);
    orc_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_matches_formula),
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_sgd_matches_formula),
        cmocka_unit_test(test_weight_decay_off_for_a_group),
        cmocka_unit_test(test_lr_multiplier),
        cmocka_unit_test(test_zero_grad_all_groups),
        cmocka_unit_test(test_clip_grad_norm),
        cmocka_unit_test(test_clip_norm_thread_independent),
        cmocka_unit_test(test_schedule_values),
        cmocka_unit_test(test_accumulation_equals_big_batch),
        cmocka_unit_test(test_save_restore_continues),
        cmocka_unit_test(test_thread_count_independent),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
