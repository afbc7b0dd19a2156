/* The times step's decay factors b**delta = 2**(delta*log2(b)), delta the time since the
   previous value over the halflife, computed from the times in blocks: one scalar pass
   for the differences (int64 times to double: no SSE2 vector instruction), then 2**y in a
   loop the compiler vectorises (plain multiplies and adds, integer bit operations; no libm
   call). glibc's exp2 (or pandas' pow) one value at a time cost 8-10 ns a value here, the
   bulk of a times-weighted mean; NumPy's diff and division before it another 2 ns.

   2**y = 2**k * 2**r with k = y rounded to nearest, r = y - k in [-0.5, 0.5]; 2**r by its
   Taylor series to degree 13 (the first left-out term is under 2e-16 relative) in Estrin's
   scheme (a Horner chain of 26 dependent operations measured 4.4 ns a value), 2**k built
   in the exponent bits. Within about an ulp of exp2 for y in [-1022, 1023]; outside that
   range (and for NaN) libm's exp2. The delta is ((double)t_i - (double)t_{i-1})/halflife,
   pandas' float64 difference over the halflife, times log2(b). Every value is the same
   sequence of IEEE operations whichever lane or block it falls in (-ffp-contract=off: no
   fusing), so the factors, like the recurrence, do not depend on the chunking. */
#ifndef FM_EXP2_H
#define FM_EXP2_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FM_EXP2_BLOCK 1024   /* steps per block: its exponents stay in L1 between passes */

/* 2**y for y in [-1022, 1023] */
static inline double fm_exp2_inside(double y) {
    const double magic = 6755399441055744.0;   /* 1.5 * 2**52: y + magic rounds y */
    int64_t magic_bits, bits, scale_bits;
    double rounded = y + magic, r, r2, r4, q0, q1, q2, q3, scale;
    memcpy(&magic_bits, &magic, sizeof magic);
    r = y - (rounded - magic);
    r2 = r * r;
    r4 = r2 * r2;
    /* sum of (r ln 2)**j / j!, j = 0..13 */
    q0 = (1.0 + 0.6931471805599453 * r) + (0.24022650695910072 + 0.05550410866482158 * r) * r2;
    q1 = (0.009618129107628477 + 0.0013333558146428443 * r)
         + (0.0001540353039338161 + 1.5252733804059841e-05 * r) * r2;
    q2 = (1.321548679014431e-06 + 1.01780860092397e-07 * r)
         + (7.054911620801123e-09 + 4.4455382718708116e-10 * r) * r2;
    q3 = 2.5678435993488206e-11 + 1.3691488853904128e-12 * r;
    memcpy(&bits, &rounded, sizeof bits);      /* its low mantissa bits hold k + 2**51 */
    scale_bits = (bits - magic_bits + 1023) << 52;
    memcpy(&scale, &scale_bits, sizeof scale);
    return ((q0 + q1 * r4) + (q2 + q3 * r4) * (r4 * r4)) * scale;
}

/* FM_DEFINE_TIME_FACTORS(NAME, T): NAME(times, previous, n, halflife, log2_b, out):
   out[i] = b**((times[i] - times[i-1])/halflife), times[-1] = previous; a NaN previous
   (no earlier value): out[0] = 1. */
#define FM_DEFINE_TIME_FACTORS(NAME, T)                                                  \
    static void NAME(const T* times, double previous, ptrdiff_t n, double halflife,      \
                     double log2_b, double* out) {                                       \
        double before = previous;                                                        \
        for (ptrdiff_t i0 = 0; i0 < n; i0 += FM_EXP2_BLOCK) {                            \
            ptrdiff_t len = n - i0 < FM_EXP2_BLOCK ? n - i0 : FM_EXP2_BLOCK;             \
            double* y = out + i0;                                                        \
            int outside = 0;                                                             \
            for (ptrdiff_t i = 0; i < len; i++) {                                        \
                double now = (double)times[i0 + i];                                      \
                double delta = before == before ? (now - before) / halflife : 0.0;       \
                /* delta 0: exponent 0, also where log2(b) is -inf (alpha = 1) */        \
                double v = delta == 0.0 ? 0.0 : delta * log2_b;                          \
                outside |= !(v >= -1022.0 && v <= 1023.0);                               \
                y[i] = v;                                                                \
                before = now;                                                            \
            }                                                                            \
            if (outside) {                                                               \
                for (ptrdiff_t i = 0; i < len; i++)                                      \
                    y[i] = y[i] >= -1022.0 && y[i] <= 1023.0 ? fm_exp2_inside(y[i])      \
                                                             : exp2(y[i]);               \
            } else {                                                                     \
                for (ptrdiff_t i = 0; i < len; i++)                                      \
                    y[i] = fm_exp2_inside(y[i]);                                         \
            }                                                                            \
        }                                                                                \
    }

FM_DEFINE_TIME_FACTORS(fm_time_factors_i64, int64_t)
FM_DEFINE_TIME_FACTORS(fm_time_factors_f64, double)
#endif
