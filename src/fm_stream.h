/* Non-temporal (streaming) stores for results written once and not read back soon: they
   skip the read-for-ownership of the destination line, a third of the memory traffic of a
   streaming kernel. A plain store where SSE2 is missing (the result is the same). */
#ifndef FM_STREAM_H
#define FM_STREAM_H
#if defined(__SSE2__)
#include <emmintrin.h>
/* p must be 16-byte aligned */
static inline void fm_stream_pair(double* p, double a, double b) {
    _mm_stream_pd(p, _mm_set_pd(b, a));
}
static inline void fm_stream_fence(void) { _mm_sfence(); }
#else
static inline void fm_stream_pair(double* p, double a, double b) { p[0] = a; p[1] = b; }
static inline void fm_stream_fence(void) {}
#endif
#endif
