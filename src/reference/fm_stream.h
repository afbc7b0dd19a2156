/* The benchmark report's reference loop: plain, hand-written C with momentum_step's
   memory traffic (reads p, g, v; writes p, v once per element). Nothing clever on
   purpose: `restrict` pointers, one statement per array. At sizes far beyond the caches it
   runs at the machine's memory bandwidth, which is the wall every streaming kernel hits.
   One body for float and double (C has no templates); threads split [0, n) into chunks
   (fastmomentum._reference), each running this loop over its part. */
#ifndef FM_STREAM_H
#define FM_STREAM_H
#include <stddef.h>

/* The loops are built for the kernels' CPU targets too: _reference is compiled once for the
   default target, and a bfloat16 loop built for SSE2 alone ran 1.8x slower than the AVX2
   kernels it is the reference for (16M elements, 2 threads: 15.9 vs 8.7 ms), no wall at
   all. gcc's target_clones builds an AVX2 copy beside the default one and picks by
   the CPU at load time (an ifunc): the module still imports on any x86-64 CPU. */
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(__clang__) \
    && !defined(__SANITIZE_ADDRESS__)
#define FM_STREAM_TARGETS __attribute__((target_clones("avx2", "default")))
#else
#define FM_STREAM_TARGETS
#endif

#define FM_DEFINE_STREAM(NAME, T)                                                        \
    FM_STREAM_TARGETS static void NAME(T* restrict p, const T* restrict g, T* restrict v, \
                                       ptrdiff_t n, T scale) {                            \
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
FM_STREAM_TARGETS static void fm_stream_bf16(uint16_t* restrict p, const uint16_t* restrict g,
                           uint16_t* restrict v, ptrdiff_t n, float scale) {
    for (ptrdiff_t i = 0; i < n; i++) {
        float vi = scale * fm_bf16_to_float(v[i]) + fm_bf16_to_float(g[i]);
        v[i] = fm_float_to_bf16(vi);
        p[i] = fm_float_to_bf16(fm_bf16_to_float(p[i]) - scale * vi);
    }
}
#endif
