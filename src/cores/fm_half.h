/* bfloat16 and float16 storage, float32 arithmetic: one scalar conversion each way.
 *
 * Both are stored as uint16_t bits (NumPy float16, ml_dtypes.bfloat16, torch's
 * c10::Half / c10::BFloat16 layouts); every step computes in float and rounds to nearest
 * even once per stored value. Plain integer and float operations only, with no branch the
 * compiler cannot turn into a select: the loops around them vectorise on every target, and
 * the bits are the same on every target and compiler (no _Float16, no F16C, whose NaN
 * payloads and availability differ; gcc 12 without -mf16c calls libgcc once per element).
 *
 * float16: the FP16 library's conversions (Marat Dukhan's, as in c10/util/Half.h), which
 * need round-to-nearest and no flush-to-zero (the project never sets either).
 * NaN: bfloat16 -> 0x7FC0 as c10::round_to_nearest_even, float16 -> sign | 0x7E00.
 */
#ifndef FM_HALF_H
#define FM_HALF_H
#include <stdint.h>
#include <math.h>
#include <string.h>

/* Forced inline: gcc 12 -O3 kept fm_float_to_f16 out of line (a call per element, so no
   loop around it vectorised: 16M float16 momentum steps took 670 ms on one thread, 43% of
   it in that function by perf; inlined: see docs/mixed-precision.md). */
#if defined(__GNUC__) || defined(__clang__)
#define FM_HALF_INLINE static inline __attribute__((always_inline))
#else
#define FM_HALF_INLINE static inline
#endif

/* The two storage formats as distinct C types (Cython's fused types specialise on them;
   the loops over them vectorise as over uint16_t arrays). */
typedef struct { uint16_t bits; } fm_bf16;
typedef struct { uint16_t bits; } fm_f16;

FM_HALF_INLINE uint32_t fm_float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
FM_HALF_INLINE float fm_bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

FM_HALF_INLINE float fm_bf16_to_float(uint16_t h) { return fm_bits_float((uint32_t)h << 16); }

/* f rounded to nearest even as a bfloat16, in the top half of a 32-bit word (the bottom
   half is the dropped bits plus the carry: mask it off to widen, shift it out to store).
   NaN's 0x7FC0 is selected in these 32-bit lanes: selecting it after the narrowing to 16
   bits, as before, made the vectorised loops narrow the NaN mask too (vpand, vpackusdw,
   vpermq, vpblendvb per 16 values instead of one vblendvps per 8). */
FM_HALF_INLINE uint32_t fm_bf16_round_bits(float f) {
    uint32_t u = fm_float_bits(f);
    uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
    return f != f ? 0x7FC00000u : rounded;
}

FM_HALF_INLINE uint16_t fm_float_to_bf16(float f) { return (uint16_t)(fm_bf16_round_bits(f) >> 16); }

/* fm_bf16_to_float(fm_float_to_bf16(f)) without leaving the 32-bit lanes: one mask
   instead of a shift down, a narrowing and a widening back (torch rounding's intermediate
   values). */
FM_HALF_INLINE float fm_bf16_rounded(float f) {
    return fm_bits_float(fm_bf16_round_bits(f) & 0xFFFF0000u);
}

FM_HALF_INLINE float fm_f16_to_float(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    /* normal and inf/NaN: re-bias the exponent by a multiply (2^-112) */
    const float normalized = fm_bits_float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    /* subnormal: the mantissa as 0.5 + m * 2^-24, minus 0.5 */
    const float denormalized = fm_bits_float((two_w >> 17) | (126u << 23)) - 0.5f;
    return fm_bits_float(sign | (two_w < (1u << 27) ? fm_float_bits(denormalized)
                                                     : fm_float_bits(normalized)));
}

FM_HALF_INLINE uint16_t fm_float_to_f16(float f) {
    const uint32_t w = fm_float_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    bias = bias < 0x71000000u ? 0x71000000u : bias;
    /* overflow to inf by scaling up then down; the add rounds the mantissa to 10 bits */
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    base = fm_bits_float((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = fm_float_bits(base);
    const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}
#endif
