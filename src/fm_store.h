/* Storing finished ewm_mean results into the caller's array.

   With `stream`, stores are non-temporal (streaming): for a result far larger than the
   caches, an ordinary store first reads each line it writes (read-for-ownership), a third
   memory stream next to reading the input and writing the result; a streaming store only
   writes. The numbers stored are the same either way (same operations, one rounding per
   fma); only the cache policy differs. After streaming, fm_stream_fence() must run on the
   storing thread before another thread (or the caller) reads the result. Without SSE2 (not
   x86-64) every store is ordinary. */
#ifndef FM_STORE_H
#define FM_STORE_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* out[j] = src[j] (rounded to float32 by fm_copy_f64_to_f32). */
static inline void fm_copy_f64(double* dst, const double* src, ptrdiff_t n, int stream) {
    ptrdiff_t i = 0;
#if defined(__SSE2__)
    if (stream) {
        if (n > 0 && ((uintptr_t)dst & 15)) {   /* 8-byte aligned: one store to 16 */
            dst[0] = src[0];
            i = 1;
        }
        for (; i + 2 <= n; i += 2)
            _mm_stream_pd(dst + i, _mm_loadu_pd(src + i));
    }
#endif
    for (; i < n; i++)
        dst[i] = src[i];
}

static inline void fm_copy_f64_to_f32(float* dst, const double* src, ptrdiff_t n, int stream) {
    ptrdiff_t i = 0;
#if defined(__SSE2__)
    if (stream) {
        for (; i < n && ((uintptr_t)(dst + i) & 15); i++)   /* up to 16-byte alignment */
            dst[i] = (float)src[i];
        for (; i + 4 <= n; i += 4) {   /* cvtpd2ps rounds to nearest, as the cast does */
            __m128 lo = _mm_cvtpd_ps(_mm_loadu_pd(src + i));
            __m128 hi = _mm_cvtpd_ps(_mm_loadu_pd(src + i + 2));
            _mm_stream_ps(dst + i, _mm_movelh_ps(lo, hi));
        }
    }
#endif
    for (; i < n; i++)
        dst[i] = (float)src[i];
}

static inline void fm_stream_fence(void) {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}
#endif
