/* Philox4x32-10 against the published known-answer vectors, and the
 * properties orchard relies on: draws are pure functions of (seed, stream,
 * index), fills are the same for any thread count, distributions look right. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "gradcheck.h"
#include "orchard/rng.h"

static void test_philox_known_answers(void **state) {
    (void)state;
    uint32_t o[4];
    /* counter (c0..c3) and key (k0, k1) all zero */
    orc_philox4x32(0, 0, 0, o);
    assert_int_equal(o[0], 0x6627e8d5u);
    assert_int_equal(o[1], 0xe169c58du);
    assert_int_equal(o[2], 0xbc57ac4cu);
    assert_int_equal(o[3], 0x9b00dbd8u);
    /* all ones */
    orc_philox4x32(UINT64_MAX, UINT64_MAX, UINT64_MAX, o);
    assert_int_equal(o[0], 0x408f276du);
    assert_int_equal(o[1], 0x41c83b0eu);
    assert_int_equal(o[2], 0xa20bc7c6u);
    assert_int_equal(o[3], 0x6d5451fdu);
    /* digits of pi */
    orc_philox4x32(((uint64_t)0x299f31d0u << 32) | 0xa4093822u, ((uint64_t)0x03707344u << 32) | 0x13198a2eu,
                   ((uint64_t)0x85a308d3u << 32) | 0x243f6a88u, o);
    assert_int_equal(o[0], 0xd16cfe09u);
    assert_int_equal(o[1], 0x94fdccebu);
    assert_int_equal(o[2], 0x5001e420u);
    assert_int_equal(o[3], 0x24126ea1u);
}

static void test_pure_and_distinct_streams(void **state) {
    (void)state;
    assert_int_equal(orc_rand_u32(7, 3, 1000), orc_rand_u32(7, 3, 1000));
    assert_int_not_equal(orc_rand_u32(7, 3, 1000), orc_rand_u32(7, 4, 1000));
    assert_int_not_equal(orc_rand_u32(7, 3, 1000), orc_rand_u32(8, 3, 1000));
    orc_rng a, b;
    orc_rng_init(&a, 42);
    orc_rng_init(&b, 42);
    for (int i = 0; i < 100; i++) assert_int_equal(orc_rng_u32(&a), orc_rng_u32(&b));
    assert_int_not_equal(orc_rng_split(&a), orc_rng_split(&a));
}

static void test_fill_same_for_any_thread_count(void **state) {
    (void)state;
    const int64_t n = 100003;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    orc_rng r;
    omp_set_num_threads(1);
    orc_rng_init(&r, 5);
    orc_rng_fill_normal(&r, x, n, 0, 1);
    omp_set_num_threads(3);
    orc_rng_init(&r, 5);
    orc_rng_fill_normal(&r, y, n, 0, 1);
    assert_memory_equal(x, y, sizeof(float) * n);
    /* Moments of N(0, 1). */
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) { s += x[i]; s2 += (double)x[i] * x[i]; }
    assert_true(fabs(s / n) < 0.02);
    assert_true(fabs(s2 / n - 1.0) < 0.03);
    orc_rng_fill_uniform(&r, x, n, -2, 3);
    s = 0;
    for (int64_t i = 0; i < n; i++) {
        assert_true(x[i] >= -2 && x[i] < 3);
        s += x[i];
    }
    assert_true(fabs(s / n - 0.5) < 0.03);
    free(x);
    free(y);
}

static void test_below_is_uniform(void **state) {
    (void)state;
    orc_rng r;
    orc_rng_init(&r, 9);
    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) counts[orc_rng_below(&r, 7)]++;
    for (int k = 0; k < 7; k++) assert_true(abs(counts[k] - 10000) < 400);
    assert_int_equal(orc_rng_below(&r, 1), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_pure_and_distinct_streams),
        cmocka_unit_test(test_fill_same_for_any_thread_count),
        cmocka_unit_test(test_below_is_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
