/* The times step's decay factors b**delta = 2**(delta*log2(b)), delta the time since the
   previous value over the halflife: a numeric core, built once per CPU target (the
   CoreTable's time_factors_i64/f64), one fused pass over the times per block of
   FM_EXP2_BLOCK values (the difference, its exponent, 2**y), vectorised by the compiler
   (4 lanes with -mavx2 -mfma, 2 with SSE2). glibc's exp2 (or pandas' pow) one value at a
   time cost 8-10 ns a value here, the bulk of a times-weighted mean.

   int64 times to double without a vector conversion instruction (AVX2 and SSE2 have none
   for int64): v = hi*2^32 + lo is assembled from two exactly representable halves (their
   bits put in the mantissas of 2^84 and 2^52) and one rounded add, which gives the same
   bits as the cast (one correct rounding of v), in integer operations and two double
   ones the compiler vectorises.

   2**y = 2**k * 2**r with k = y rounded to nearest, r = y - k in [-0.5, 0.5]; 2**r by a
   degree-11 polynomial, near-minimax (mpmath's chebyfit of (2**r - 1)/r, so that 2**0 is
   exactly 1; its coefficients as doubles within 2e-17 relative of 2**r, against the 4e-18
   of the degree-13 Taylor series it replaced, which took 4 operations more a value) in
   Estrin's scheme (a Horner chain, 2 dependent operations a degree, measured 4.4 ns a
   value for the degree-13 series), 2**k built
   in the exponent bits. Within about an ulp of exp2 for |y| <= 1022; outside that range
   (and for NaN) libm's exp2. Plain multiplies and adds, no fma: -ffp-contract=off fuses
   nothing, so both targets run the same IEEE operations and give the same bits. (With
   fma() the avx2 pass ran about 2% fewer instructions, callgrind; the portable build,
   where fma is a libm call, ten times longer: 73 ns a value against 6-14, loaded machine.) The delta is
   ((double)t_i - (double)t_{i-1})/halflife, pandas' float64 difference over the halflife,
   times log2(b). Every value is the same sequence of IEEE operations whichever lane or
   block it falls in, so the factors do not depend on the chunking or the target. */
#ifndef FM_TIME_FACTORS_H
#define FM_TIME_FACTORS_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FM_EXP2_BLOCK 1024   /* values per block: in L1 when the rare libm redo reads them */

static inline double fm_bits_f64(uint64_t bits) {
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* (double)v, the same bits as the cast (see above) */
static inline double fm_i64_to_f64(int64_t v) {
    uint64_t u = (uint64_t)v;
    /* 2^84 + (hi + 2^31)*2^32, hi = v >> 32 (arithmetic): the top half with its sign bit
       flipped; and 2^52 + lo, lo the low 32 bits */
    double high = fm_bits_f64(((u >> 32) ^ 0x80000000ULL) | 0x4530000000000000ULL);
    double low = fm_bits_f64((u & 0xffffffffULL) | 0x4330000000000000ULL);
    /* hi*2^32 - 2^52 exactly (a multiple of 2^32 under 2^65), then one rounding */
    return (high - fm_bits_f64(0x4530000080100000ULL)) + low;   /* 2^84 + 2^63 + 2^52 */
}

static inline double fm_f64_time(double v) { return v; }

/* 2**y for y in [-1022, 1022] (elsewhere a value to be replaced: unsigned integer
   arithmetic, so that no input is undefined behaviour) */
static inline double fm_exp2_inside(double y) {
    const double magic = 6755399441055744.0;   /* 1.5 * 2**52: y + magic rounds y */
    uint64_t magic_bits, bits, scale_bits;
    double rounded = y + magic, r, r2, r4, q0, q1, q2, scale;
    memcpy(&magic_bits, &magic, sizeof magic);
    r = y - (rounded - magic);
    r2 = r * r;
    r4 = r2 * r2;
    q0 = (1.0 + 0.6931471805599453 * r) + (0.24022650695910097 + 0.0555041086648216 * r) * r2;
    q1 = (0.009618129107606888 + 0.0013333558146416936 * r)
         + (0.0001540353044173605 + 1.525273382983612e-05 * r) * r2;
    q2 = (1.321544258792169e-06 + 1.0178062445845774e-07 * r)
         + (7.072585949269223e-09 + 4.4549605981865186e-10 * r) * r2;
    memcpy(&bits, &rounded, sizeof bits);      /* its low mantissa bits hold k + 2**51 */
    scale_bits = (bits - magic_bits + 1023) << 52;
    memcpy(&scale, &scale_bits, sizeof scale);
    return ((q0 + q1 * r4) + q2 * (r4 * r4)) * scale;
}

/* The top bit set when |y| > 1022 or y is NaN (the polynomial's range is left to libm):
   integer operations on the bits, whose OR over a block the compiler vectorises (a
   comparison's int flag OR-ed over double lanes it did not, gcc 12). */
static inline uint64_t fm_exp2_outside(double y) {
    uint64_t bits;
    memcpy(&bits, &y, sizeof bits);
    return 0x408ff00000000000ULL - (bits & 0x7fffffffffffffffULL);   /* 1022.0 */
}

/* The exponent of one step: delta 0 gives 0, also where log2(b) is -inf (alpha = 1) */
static inline double fm_time_exponent(double now, double before, double halflife,
                                      double log2_b) {
    double delta = (now - before) / halflife;
    return delta == 0.0 ? 0.0 : delta * log2_b;
}

/* The same without delta == 0's case, for the vector pass: 0 * log2(b) is 0 there for every
   finite log2(b), and alpha = 1's NaN (0 * -inf) is outside, redone by fm_time_exponent
   (the compare and blend were 2 of 54 vector operations a 4 values) */
static inline double fm_time_y(double now, double before, double halflife, double log2_b) {
    return (now - before) / halflife * log2_b;
}

/* An int64 time difference d with |d| < 2**51 as a double (exactly): the bits of
   1.5 * 2**52 + d less 1.5 * 2**52, one integer add and one double subtraction */
static inline double fm_small_i64_to_f64(uint64_t d) {
    return fm_bits_f64(d + 0x4338000000000000ULL) - 6755399441055744.0;
}

/* Times within [-2**50, 2**50) (seconds, milliseconds and microseconds since 1970, not
   nanoseconds: 1.7e18 > 2**50 = 1.1e15): the top bits of time + 2**50, OR-ed over a
   block, are 0. Their doubles are exact and so is their difference, then: the difference
   of two int64 (|d| < 2**51) converted as fm_small_i64_to_f64 is pandas' difference of
   the two doubles, to the bit, in 4 vector operations a 4 values against the 12 of two
   fm_i64_to_f64 (0.5 ns a value of 1.9 measured). */
#define FM_SMALL_TIME 0x0004000000000000ULL   /* 2**50 */

/* The block i0..end of NAME's pass (below): out[i] = 2**y for the y given by Y(i); the OR
   of fm_exp2_outside over the block into OUTSIDE */
#define FM_EXP2_PASS(i0, end, Y, OUTSIDE)                                                \
    for (ptrdiff_t i = i0; i < end; i++) {                                               \
        double y = Y;                                                                    \
        OUTSIDE |= fm_exp2_outside(y);                                                   \
        out[i] = fm_exp2_inside(y);                                                      \
    }

/* FM_DEFINE_TIME_FACTORS(NAME, T, TO_F64, SMALL): NAME(times, previous, n, halflife,
   log2_b, out): out[i] = b**((times[i] - times[i-1])/halflife), times[-1] = previous; a
   NaN previous (no earlier value): out[0] = 1. One pass a block (SMALL: int64 times, by
   fm_small_i64_to_f64 when the block's times are all small, else by TO_F64, the same
   bits; which is decided by an OR over the block first, so that nanosecond times, pandas'
   default and never small, take one pass, not the small one and then the full one); the
   rare values outside the polynomial's range (a step of more than 1022
   halflives' worth of decay, or a growth beyond 2**1023) are redone by libm's exp2
   afterwards. */
#define FM_DEFINE_TIME_FACTORS(NAME, T, TO_F64, SMALL)                                   \
    static void NAME(const T* times, double previous, ptrdiff_t n, double halflife,      \
                     double log2_b, double* out) {                                       \
        if (n <= 0)                                                                      \
            return;                                                                      \
        {                                                                                \
            double v = previous == previous                                              \
                ? fm_time_exponent(TO_F64(times[0]), previous, halflife, log2_b) : 0.0;  \
            out[0] = fm_exp2_outside(v) >> 63 ? exp2(v) : fm_exp2_inside(v);             \
        }                                                                                \
        for (ptrdiff_t i0 = 1; i0 < n; i0 += FM_EXP2_BLOCK) {                            \
            ptrdiff_t end = n - i0 < FM_EXP2_BLOCK ? n : i0 + FM_EXP2_BLOCK;             \
            uint64_t outside = 0, wide = 0;                                              \
            if (SMALL) {                                                                 \
                const uint64_t* u = (const uint64_t*)times;                              \
                wide = u[i0 - 1] + FM_SMALL_TIME;                                        \
                for (ptrdiff_t i = i0; i < end; i++)                                     \
                    wide |= u[i] + FM_SMALL_TIME;                                        \
                if (!(wide >> 51))                                                       \
                    FM_EXP2_PASS(i0, end,                                                \
                                 fm_small_i64_to_f64(u[i] - u[i - 1]) / halflife * log2_b, \
                                 outside)                                                \
            }                                                                            \
            if (!SMALL || wide >> 51) {                                                  \
                outside = 0;                                                             \
                FM_EXP2_PASS(i0, end, fm_time_y(TO_F64(times[i]), TO_F64(times[i - 1]),  \
                                                halflife, log2_b), outside)              \
            }                                                                            \
            if (outside >> 63)                                                           \
                for (ptrdiff_t i = i0; i < end; i++) {                                   \
                    double v = fm_time_y(TO_F64(times[i]), TO_F64(times[i - 1]),         \
                                         halflife, log2_b);                              \
                    if (fm_exp2_outside(v) >> 63)                                        \
                        out[i] = exp2(fm_time_exponent(TO_F64(times[i]),                 \
                                                       TO_F64(times[i - 1]),             \
                                                       halflife, log2_b));               \
                }                                                                        \
        }                                                                                \
    }

FM_DEFINE_TIME_FACTORS(fm_time_factors_i64, int64_t, fm_i64_to_f64, 1)
FM_DEFINE_TIME_FACTORS(fm_time_factors_f64, double, fm_f64_time, 0)
#endif
