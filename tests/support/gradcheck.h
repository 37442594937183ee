/* Test support: finite-difference gradient checks and random inputs.
 *
 * gc_check builds a graph with the caller's function, takes the analytic
 * gradient of L = sum(w * out) for fixed random weights w, and compares it
 * with central differences (L accumulated in double) element by element. */
#ifndef ORCHARD_TEST_GRADCHECK_H
#define ORCHARD_TEST_GRADCHECK_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <stdint.h>
#include <cmocka.h>

#include "orchard/autograd.h"
#include "orchard/ops.h"

typedef orc_tensor *(*gc_build_fn)(orc_ctx *ctx, orc_tensor **inputs, void *user);

typedef struct gc_opts {
    double eps;      /* perturbation (default 1e-3) */
    double atol;     /* default 1e-3 */
    double rtol;     /* default 1e-2 */
    int max_checks;  /* elements checked per input (default 400; a fixed sample beyond) */
} gc_opts;

/* Checks every input whose requires_grad is set. Fails the cmocka test with
 * the op name, input, element and both values when one differs. Returns the
 * largest |analytic - numeric| seen. */
double gc_check(const char *name, gc_build_fn build, int n_in, orc_tensor **inputs, void *user, gc_opts opts);

/* Random f32 tensor in [lo, hi) from a seed, in arena a. */
orc_tensor *gc_rand(orc_arena *a, int ndim, const int64_t *shape, uint64_t seed, float lo, float hi, bool requires_grad);
/* Random int32 tensor in [0, n). */
orc_tensor *gc_rand_ids(orc_arena *a, int ndim, const int64_t *shape, uint64_t seed, int32_t n);

/* Runs build forward and backward (output gradient: fixed random weights) on
 * 1 and on 3 OpenMP threads and fails the test, naming the op, unless the
 * output and every input's gradient are the same bits. Inputs without
 * requires_grad are skipped in the gradient comparison. Restores the thread
 * count it found. */
void gc_expect_same_bits(const char *name, gc_build_fn build, int n_in, orc_tensor **inputs, void *user);

/* Fail the test with ctx's message when it holds an error. */
#define GC_ASSERT_OK(ctx)                                                             \
    do {                                                                              \
        if (!orc_ctx_ok(ctx)) fail_msg("orchard error: %s", (ctx)->err.msg);          \
    } while (0)

#endif
