/* Shared by the multi-process tests (test_dist.c, test_dist_ep.c): a
 * scratch directory (tests/support/testdir.h) with a byte tokenizer, two token shards and recipes
 * (dense and MoE), launching commands there under `timeout` (mpirun
 * --oversubscribe for several ranks), and comparing the loss trajectories
 * of two JSONL logs. OpenMPI keeps allocations until exit that
 * LeakSanitizer reports, so the launched processes get
 * tests/dist/lsan.supp (docs/distributed.md). Header-only: each test binary
 * is one file, and not every test uses every helper. */
#ifndef ORCHARD_TESTS_DIST_SUPPORT_H
#define ORCHARD_TESTS_DIST_SUPPORT_H

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testdir.h"
#include "train_support.h"

#include "orchard/data.h"
#include "orchard/dist.h"
#include "orchard/rng.h"
#include "orchard/tokenizer.h"

#define DIST_HELPER __attribute__((unused)) static

DIST_HELPER char g_self[1024];
static const char *g_bin;

/* ---- helpers ---------------------------------------------------------------------------- */

DIST_HELPER void path_in(char *out, const char *name) { snprintf(out, 512, "%s/%s", orc_test_scratch, name); }

DIST_HELPER char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = calloc((size_t)n + 1, 1);
    if (n > 0 && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = '\0';
    fclose(f);
    return s;
}

/* Run a shell command in orc_test_scratch, output to out.txt; returns the exit status
 * (-1 when killed by a signal). Every launch is bounded by `timeout`. */
DIST_HELPER int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[4096], full[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "cd '%s' && timeout -k 5 120 %s > out.txt 2>&1", orc_test_scratch, cmd);
    int rc = system(full);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

DIST_HELPER char *out_text(void) {
    char p[512];
    path_in(p, "out.txt");
    return slurp(p);
}

#define MPIRUN "mpirun --oversubscribe --bind-to none -np"

/* The MoE variant: 4 experts in both layers, top-2, capacity factor 1.25
 * (so tokens are dropped), one routing group per row (moe_group_size = seq:
 * the groups are the same whatever rows a rank holds). */
DIST_HELPER void write_moe_recipe(const char *name, int steps, double capacity_factor) {
    char text[4096];
    snprintf(text, sizeof text,
             "{\"model\": {\"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
             "\"num_key_value_heads\": 2, \"intermediate_size\": 64, \"vocab_size\": 264, "
             "\"max_position_embeddings\": 64, \"num_experts\": 4, \"moe_every\": 1, \"moe_top_k\": 2, "
             "\"capacity_factor\": %g, \"moe_group_size\": 16, \"moe_intermediate_size\": 32},\n"
             " \"tokenizer\": \"tok\", \"data\": {\"train\": \"train.bin\", \"val\": \"val.bin\"},\n"
             " \"batch\": 4, \"seq\": 16, \"accum\": 2, \"steps\": %d, \"lr\": 0.01, \"min_lr\": 0.001,\n"
             " \"warmup\": 3, \"eval_every\": 10, \"eval_batches\": 2, \"save_every\": 0, \"log_every\": 10,\n"
             " \"seed\": 5}\n",
             capacity_factor, steps);
    orc_test_write_text(name, text);
}

DIST_HELPER void write_recipe(const char *name, int steps, int batch, int seed) {
    char text[4096];
    snprintf(text, sizeof text,
             "{\"model\": {\"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
             "\"num_key_value_heads\": 2, \"intermediate_size\": 64, \"vocab_size\": 264, "
             "\"max_position_embeddings\": 64},\n"
             " \"tokenizer\": \"tok\", \"data\": {\"train\": \"train.bin\", \"val\": \"val.bin\"},\n"
             " \"batch\": %d, \"seq\": 16, \"accum\": 2, \"steps\": %d, \"lr\": 0.01, \"min_lr\": 0.001,\n"
             " \"warmup\": 3, \"eval_every\": 25, \"eval_batches\": 2, \"save_every\": 0, \"log_every\": 10,\n"
             " \"seed\": %d}\n",
             batch, steps, seed);
    orc_test_write_text(name, text);
}

/* The "loss" of every line of a JSONL log. */
DIST_HELPER int read_losses(const char *name, double *loss, int cap) {
    char p[512];
    path_in(p, name);
    char *s = slurp(p);
    int n = 0;
    for (char *q = strstr(s, "\"loss\": "); q && n < cap; q = strstr(q + 1, "\"loss\": ")) loss[n++] = strtod(q + 8, NULL);
    free(s);
    return n;
}

DIST_HELPER void expect_same_losses(const char *a, const char *b, int steps, double rtol) {
    double la[64], lb[64];
    int na = read_losses(a, la, 64), nb = read_losses(b, lb, 64);
    if (na != steps || nb != steps) fail_msg("%s has %d steps, %s %d; want %d", a, na, b, nb, steps);
    assert_int_equal(na, steps);
    assert_int_equal(nb, steps);
    for (int i = 0; i < steps; i++)
        if (!(fabs(la[i] - lb[i]) <= rtol * fabs(la[i])))
            fail_msg("%s vs %s: step %d loss %.9g vs %.9g (rel %.3g > %.1g)", a, b, i + 1, la[i], lb[i],
                     fabs(la[i] - lb[i]) / fabs(la[i]), rtol);
}

DIST_HELPER int setup(void **state) {
    (void)state;
    if (orc_test_dir_make(orc_test_scratch, sizeof orc_test_scratch, "dist") != 0) return -1;
    g_bin = getenv("ORCHARD_BINARY");
    ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (n <= 0 || !g_bin) return -1;
    g_self[n] = '\0';
    /* Root in CI containers; OpenMPI refuses root without these. */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    const char *src = getenv("ORCHARD_SOURCE_DIR");
    char lsan[1200];
    snprintf(lsan, sizeof lsan, "suppressions=%s/tests/dist/lsan.supp:print_suppressions=0", src ? src : ".");
    setenv("LSAN_OPTIONS", lsan, 1);
#ifdef __SANITIZE_ADDRESS__
    /* OpenMPI's plugins have no frame pointers: with the fast unwinder the
     * allocation stacks stop at one unknown frame and no suppression can
     * match them; the slow unwinder reaches libmpi / libopen-pal. */
    setenv("ASAN_OPTIONS", "fast_unwind_on_malloc=0", 1);
#endif
    unsetenv("ORCHARD_DIST_FAULT");
    orc_test_write_byte_tokenizer("tok");
    orc_test_write_stream_shard("train.bin", 1, 20, 200);
    orc_test_write_stream_shard("val.bin", 2, 5, 200);
    write_recipe("r.json", 50, 4, 11);
    return 0;
}

DIST_HELPER int teardown(void **state) {
    (void)state;
    if (getenv("ORCHARD_TEST_KEEP")) return 0; /* for debugging: leave orc_test_scratch */
    orc_test_dir_remove(orc_test_scratch);
    return 0;
}

DIST_HELPER orc_tensor *rand_param(orc_arena *a, int ndim, const int64_t *shape, uint64_t seed, const char *name) {
    orc_error err = {0};
    orc_tensor *t = orc_param_new(a, ndim, shape, name, &err);
    if (!t) return NULL;
    orc_rng r;
    orc_rng_init(&r, seed);
    orc_rng_fill_uniform(&r, orc_f32(t), t->numel, -0.5f, 0.5f);
    return t;
}

DIST_HELPER void expect_ok(int rc, const char *what) {
    if (rc != 0) {
        char *o = out_text();
        fail_msg("%s exited %d:\n%s", what, rc, o);
    }
}

DIST_HELPER void expect_fail(int rc, const char *what, const char *want, int want_count) {
    char *o = out_text();
    if (rc == 0 || rc == 124 || rc == 137 || rc == -1) fail_msg("%s: exit %d (want a failure, not a hang):\n%s", what, rc, o);
    int n = 0;
    for (const char *p = strstr(o, want); p; p = strstr(p + 1, want)) n++;
    if (n < want_count) fail_msg("%s: '%s' appears %d times, want %d:\n%s", what, want, n, want_count, o);
    free(o);
}

#endif
