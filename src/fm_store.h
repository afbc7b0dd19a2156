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

/* out[j] = fma(carry, pw[j], scan[j]) * norm: the blocked scan's carry fix-up (norm 1 for
   adjust=False: multiplying by 1 changes no bit). */
static inline void fm_fixup_f64(double* out, const double* scan, const double* pw,
                                double carry, double norm, ptrdiff_t n, int stream) {
    ptrdiff_t j = 0;
#if defined(__AVX__) && defined(__FMA__)
    if (stream) {
        for (; j < n && ((uintptr_t)(out + j) & 31); j++)
            out[j] = fma(carry, pw[j], scan[j]) * norm;
        __m256d c = _mm256_set1_pd(carry), s = _mm256_set1_pd(norm);
        for (; j + 4 <= n; j += 4)
            _mm256_stream_pd(out + j, _mm256_mul_pd(
                _mm256_fmadd_pd(c, _mm256_loadu_pd(pw + j), _mm256_loadu_pd(scan + j)), s));
    }
#elif defined(__SSE2__)
    if (stream) {
        for (; j < n && ((uintptr_t)(out + j) & 15); j++)
            out[j] = fma(carry, pw[j], scan[j]) * norm;
        for (; j + 2 <= n; j += 2)
            _mm_stream_pd(out + j, _mm_set_pd(fma(carry, pw[j + 1], scan[j + 1]) * norm,
                                              fma(carry, pw[j], scan[j]) * norm));
    }
#endif
    for (; j < n; j++)
        out[j] = fma(carry, pw[j], scan[j]) * norm;
}

/* The same, rounded to float32. */
static inline void fm_fixup_f32(float* out, const double* scan, const double* pw,
                                double carry, double norm, ptrdiff_t n, int stream) {
    ptrdiff_t j = 0;
#if defined(__AVX__) && defined(__FMA__)
    if (stream) {
        for (; j < n && ((uintptr_t)(out + j) & 15); j++)
            out[j] = (float)(fma(carry, pw[j], scan[j]) * norm);
        __m256d c = _mm256_set1_pd(carry), s = _mm256_set1_pd(norm);
        for (; j + 4 <= n; j += 4)   /* cvtpd2ps rounds to nearest, as the cast does */
            _mm_stream_ps(out + j, _mm256_cvtpd_ps(_mm256_mul_pd(
                _mm256_fmadd_pd(c, _mm256_loadu_pd(pw + j), _mm256_loadu_pd(scan + j)), s)));
    }
#elif defined(__SSE2__)
    if (stream) {
        for (; j < n && ((uintptr_t)(out + j) & 15); j++)
            out[j] = (float)(fma(carry, pw[j], scan[j]) * norm);
        for (; j + 4 <= n; j += 4) {
            __m128 lo = _mm_cvtpd_ps(_mm_set_pd(fma(carry, pw[j + 1], scan[j + 1]) * norm,
                                                fma(carry, pw[j], scan[j]) * norm));
            __m128 hi = _mm_cvtpd_ps(_mm_set_pd(fma(carry, pw[j + 3], scan[j + 3]) * norm,
                                                fma(carry, pw[j + 2], scan[j + 2]) * norm));
            _mm_stream_ps(out + j, _mm_movelh_ps(lo, hi));
        }
    }
#endif
    for (; j < n; j++)
        out[j] = (float)(fma(carry, pw[j], scan[j]) * norm);
}

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
