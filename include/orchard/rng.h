/* orchard/rng.h: deterministic counter-based random numbers.
 *
 * Philox4x32-10: the n-th number of a stream is a pure function of (seed,
 * stream, n), so a kernel can draw element i's number from any thread and the
 * result does not depend on how work was split. An orc_rng is a seed plus a
 * running counter for sequential use; orc_rng_split hands out a fresh stream
 * id for one op (dropout, init) whose elements then index into it. */
#ifndef ORCHARD_RNG_H
#define ORCHARD_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct orc_rng {
    uint64_t seed;
    uint64_t stream;   /* next stream id handed out by orc_rng_split */
    uint64_t counter;  /* next position for sequential draws */
} orc_rng;

void orc_rng_init(orc_rng *r, uint64_t seed);

/* Philox4x32-10 block: four 32-bit outputs for key (seed) and a 128-bit counter. */
void orc_philox4x32(uint64_t key, uint64_t ctr_hi, uint64_t ctr_lo, uint32_t out[4]);

/* Pure functions of (seed, stream, index). */
uint32_t orc_rand_u32(uint64_t seed, uint64_t stream, uint64_t index);
float orc_rand_uniform(uint64_t seed, uint64_t stream, uint64_t index);  /* [0, 1) */
float orc_rand_normal(uint64_t seed, uint64_t stream, uint64_t index);   /* N(0, 1) */

/* Take a new stream id (for one op's element-indexed draws). */
uint64_t orc_rng_split(orc_rng *r);

/* Sequential draws from stream 0. */
uint32_t orc_rng_u32(orc_rng *r);
float orc_rng_uniform(orc_rng *r);
float orc_rng_normal(orc_rng *r);
/* Uniform integer in [0, n), without modulo bias. n > 0. */
uint32_t orc_rng_below(orc_rng *r, uint32_t n);

/* Fill n floats with N(mean, std) / U[lo, hi) using a fresh stream; the same
 * values for any thread count. */
void orc_rng_fill_normal(orc_rng *r, float *out, int64_t n, float mean, float std);
void orc_rng_fill_uniform(orc_rng *r, float *out, int64_t n, float lo, float hi);

#ifdef __cplusplus
}
#endif
#endif
