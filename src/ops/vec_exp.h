/* A vectorisable e^x for the elementwise ops (swiglu, cross-entropy) and the
 * clone attribute their block loops use to get an AVX2 copy at load time
 * (the build targets baseline x86-64). libm's expf is a call per element
 * and keeps those loops scalar; this one has no calls and no float
 * branches, so GCC vectorises loops over it. Same method as attention.c's
 * exp_fast: x = n ln2 + r with |r| <= ln2/2, e^r by the Cephes polynomial
 * (within about 1e-7 relative), 2^n put into the exponent; x is clamped to
 * [-87, 88] by integer compares on its bits, below -87 (and -INFINITY) gives
 * exactly 0, NaN stays NaN. No FMA in either copy, so both give the same
 * bits. */
#ifndef ORCHARD_OPS_VEC_EXP_H
#define ORCHARD_OPS_VEC_EXP_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ORC_VEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ORC_VEC_CLONES
#endif

static inline float orc_vexp(float x) {
    const float big = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    uint32_t xb;
    memcpy(&xb, &x, sizeof xb);
    int32_t xs = (int32_t)xb;
    xs = xs < 0x42B00000 ? xs : 0x42B00000; /* x <= 88 */
    uint32_t xu = (uint32_t)xs;
    xu = xu < 0xC2AE0000u ? xu : 0xC2AE0000u;           /* x >= -87 */
    const int32_t keep = -(int32_t)(xb <= 0xC2AE0000u); /* all ones unless x < -87 */
    float xc;
    memcpy(&xc, &xu, sizeof xc);
    const float t = xc * 1.44269504088896341f + big;
    const float n = t - big;
    int32_t ni;
    memcpy(&ni, &t, sizeof ni);
    ni -= 0x4B400000; /* the bits of big */
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const int32_t bits = ((ni + 127) * 0x800000) & keep;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    const float y = p * two_n;
    uint32_t yb;
    memcpy(&yb, &y, sizeof yb);
    const uint32_t nan = -(uint32_t)((xb & 0x7FFFFFFFu) > 0x7F800000u);
    yb = (xb & nan) | (yb & ~nan);
    float out;
    memcpy(&out, &yb, sizeof out);
    return out;
}

/* 1 / (1 + e^-x) from e^-|x| only, so it never overflows: for x < 0 it is
 * e / (1 + e) with e = e^x. The sign select is done on bits (vectorises). */
static inline float orc_vsigmoid(float x) {
    uint32_t xb;
    memcpy(&xb, &x, sizeof xb);
    const uint32_t neg = -(xb >> 31);             /* all ones when the sign bit is set */
    const uint32_t ab = xb & 0x7FFFFFFFu;
    float ax;
    memcpy(&ax, &ab, sizeof ax);
    const float e = orc_vexp(-ax);
    const float inv = 1.0f / (1.0f + e);
    const float pos = inv, negv = e * inv;
    uint32_t pb, nb;
    memcpy(&pb, &pos, sizeof pb);
    memcpy(&nb, &negv, sizeof nb);
    const uint32_t rb = (nb & neg) | (pb & ~neg);
    float out;
    memcpy(&out, &rb, sizeof out);
    return out;
}

#endif
