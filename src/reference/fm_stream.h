/* The benchmark report's reference loop: plain, hand-written C with momentum_step's
   memory traffic (reads p, g, v; writes p, v once per element). Nothing clever on
   purpose: `restrict` pointers, one statement per array. At sizes far beyond the caches it
   runs at the machine's memory bandwidth, which is the wall every streaming kernel hits.
   One body for float and double (C has no templates); threads split [0, n) into chunks
   (fastmomentum._reference), each running this loop over its part. */
#ifndef FM_STREAM_H
#define FM_STREAM_H
#include <stddef.h>

#define FM_DEFINE_STREAM(NAME, T)                                                        \
    static void NAME(T* restrict p, const T* restrict g, T* restrict v, ptrdiff_t n,      \
                     T scale) {                                                           \
        for (ptrdiff_t i = 0; i < n; i++) {                                               \
            T vi = scale * v[i] + g[i];                                                   \
            v[i] = vi;                                                                    \
            p[i] -= scale * vi;                                                           \
        }                                                                                 \
    }

FM_DEFINE_STREAM(fm_stream_f32, float)
FM_DEFINE_STREAM(fm_stream_f64, double)

/* mp-dtypes: the same loop on bfloat16 buffers (10 bytes an element), float arithmetic and
   fm_half.h's round-to-nearest-even stores, as the bfloat16 momentum step moves them. */
#include "fm_half.h"
static void fm_stream_bf16(uint16_t* restrict p, const uint16_t* restrict g,
                           uint16_t* restrict v, ptrdiff_t n, float scale) {
    for (ptrdiff_t i = 0; i < n; i++) {
        float vi = scale * fm_bf16_to_float(v[i]) + fm_bf16_to_float(g[i]);
        v[i] = fm_float_to_bf16(vi);
        p[i] = fm_float_to_bf16(fm_bf16_to_float(p[i]) - scale * vi);
    }
}
#endif
