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

/* dst[i] = src[i] * scale (rounded to float32 by the _to_f32 flavour). One body each,
   specialised by the constant `scaled`: the copies (fm_copy_*) do not multiply at all
   (measured: multiplying by a runtime 1.0 slowed the plain copy by 10-20%). */
static inline void fm_store_f64_body(double* dst, const double* src, ptrdiff_t n,
                                     double scale, int stream, int scaled) {
    ptrdiff_t i = 0;
#if defined(__SSE2__)
    if (stream) {
        __m128d s = _mm_set1_pd(scale);
        if (n > 0 && ((uintptr_t)dst & 15)) {   /* 8-byte aligned: one store to 16 */
            dst[0] = scaled ? src[0] * scale : src[0];
            i = 1;
        }
        for (; i + 2 <= n; i += 2) {
            __m128d v = _mm_loadu_pd(src + i);
            _mm_stream_pd(dst + i, scaled ? _mm_mul_pd(v, s) : v);
        }
    }
#endif
    for (; i < n; i++)
        dst[i] = scaled ? src[i] * scale : src[i];
}

static inline void fm_store_f32_body(float* dst, const double* src, ptrdiff_t n,
                                     double scale, int stream, int scaled) {
    ptrdiff_t i = 0;
#if defined(__SSE2__)
    if (stream) {
        __m128d s = _mm_set1_pd(scale);
        for (; i < n && ((uintptr_t)(dst + i) & 15); i++)   /* up to 16-byte alignment */
            dst[i] = (float)(scaled ? src[i] * scale : src[i]);
        for (; i + 4 <= n; i += 4) {   /* cvtpd2ps rounds to nearest, as the cast does */
            __m128d lo = _mm_loadu_pd(src + i), hi = _mm_loadu_pd(src + i + 2);
            if (scaled) {
                lo = _mm_mul_pd(lo, s);
                hi = _mm_mul_pd(hi, s);
            }
            _mm_stream_ps(dst + i, _mm_movelh_ps(_mm_cvtpd_ps(lo), _mm_cvtpd_ps(hi)));
        }
    }
#endif
    for (; i < n; i++)
        dst[i] = (float)(scaled ? src[i] * scale : src[i]);
}

static inline void fm_copy_f64(double* dst, const double* src, ptrdiff_t n, int stream) {
    fm_store_f64_body(dst, src, n, 1.0, stream, 0);
}
static inline void fm_copy_f64_to_f32(float* dst, const double* src, ptrdiff_t n, int stream) {
    fm_store_f32_body(dst, src, n, 1.0, stream, 0);
}
static inline void fm_scale_f64(double* dst, const double* src, ptrdiff_t n, double scale,
                                int stream) {
    fm_store_f64_body(dst, src, n, scale, stream, 1);
}
static inline void fm_scale_f64_to_f32(float* dst, const double* src, ptrdiff_t n,
                                       double scale, int stream) {
    fm_store_f32_body(dst, src, n, scale, stream, 1);
}

static inline void fm_stream_fence(void) {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}
#endif
