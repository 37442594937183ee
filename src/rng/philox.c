/* Philox4x32-10 counter-based generator (Salmon et al., SC'11) and the
 * draws built on it (see orchard/rng.h). Pure functions of (seed, stream,
 * index), so parallel kernels get the same numbers for any thread count. */
#include "orchard/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void orc_philox4x32(uint64_t key, uint64_t ctr_hi, uint64_t ctr_lo, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)ctr_lo, c1 = (uint32_t)(ctr_lo >> 32);
    uint32_t c2 = (uint32_t)ctr_hi, c3 = (uint32_t)(ctr_hi >> 32);
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo(PHILOX_M1, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

uint32_t orc_rand_u32(uint64_t seed, uint64_t stream, uint64_t index) {
    uint32_t o[4];
    orc_philox4x32(seed, stream, index >> 2, o);
    return o[index & 3];
}

/* 24 random bits -> [0, 1) exactly representable in float. */
float orc_rand_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
    return (float)(orc_rand_u32(seed, stream, index) >> 8) * (1.0f / 16777216.0f);
}

/* Box-Muller on two numbers of one block: element index uses the pair
 * (2*index, 2*index + 1) of its stream. */
float orc_rand_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    uint32_t o[4];
    orc_philox4x32(seed, stream, index >> 1, o);
    int j = (int)(index & 1) * 2;
    double u1 = ((double)(o[j] >> 8) + 1.0) / 16777217.0; /* (0, 1]: log is finite */
    double u2 = (double)(o[j + 1] >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2));
}

void orc_rng_init(orc_rng *r, uint64_t seed) {
    r->seed = seed;
    r->stream = 1; /* stream 0 is for sequential draws */
    r->counter = 0;
}

uint64_t orc_rng_split(orc_rng *r) { return r->stream++; }

uint32_t orc_rng_u32(orc_rng *r) { return orc_rand_u32(r->seed, 0, r->counter++); }
float orc_rng_uniform(orc_rng *r) { return orc_rand_uniform(r->seed, 0, r->counter++); }
float orc_rng_normal(orc_rng *r) {
    /* Its own pair of counters so uniform and normal draws never overlap. */
    float v = orc_rand_normal(r->seed, (uint64_t)1 << 63, r->counter++);
    return v;
}

uint32_t orc_rng_below(orc_rng *r, uint32_t n) {
    if (n <= 1) return 0;
    uint32_t limit = (uint32_t)(-n) % n; /* 2^32 mod n: values below it are rejected */
    for (;;) {
        uint32_t x = orc_rng_u32(r);
        if (x >= limit) return x % n;
    }
}

void orc_rng_fill_normal(orc_rng *r, float *out, int64_t n, float mean, float std) {
    uint64_t s = orc_rng_split(r);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = mean + std * orc_rand_normal(r->seed, s, (uint64_t)i);
}

void orc_rng_fill_uniform(orc_rng *r, float *out, int64_t n, float lo, float hi) {
    uint64_t s = orc_rng_split(r);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = lo + (hi - lo) * orc_rand_uniform(r->seed, s, (uint64_t)i);
}
