/* ewm_mean's blocked scan, inner loop: y_t = b*y_{t-1} + u_t over one stretch of a series
   in a single pass, eight steps at a time.

   With v_t = u_t + b*u_{t-1} + b^2*u_{t-2} + b^3*u_{t-3} (a 4-tap filter of contiguous
   inputs) and w_t = v_t + b^4*v_{t-4}, the recurrence is y_t = b^8*y_{t-8} + w_t: two
   vectors of four consecutive y (t..t+3 and t+4..t+7) each depend only on the vector eight
   steps back, so two independent dependency chains advance eight values per fma latency,
   while the filters (independent across t) fill the other issue slots. Everything stays in
   registers: one read of x, one store of each result.

   The stretch starts from the carry c = y_{-1}: its first eight values come from the plain
   recurrence (y_0 = fma(b, c, u_0)), and its tail, under eight values, too. Every result is
   a fixed sequence of fma/mul by position, the same in the AVX2 and the scalar build (fma
   rounds once in both), so the two builds give the same bits.

   u_t = scale*x_t, except u_0 = x_0 when `seed` (adjust=False starts at the first value).
   out[t] = y_t * norm for t >= store_from (norm 1 is skipped: y*1 == y), streamed when
   `stream` (then `out` must be 16-byte aligned, and fm_stream_fence() must follow).
   Returns y_{n-1}. */
#ifndef FM_SCAN_H
#define FM_SCAN_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
/* The vector body is the avx2 target's (setup.py: -mavx2 -mfma), guarded by the macros that
   target defines, as fm_cpu.h names it; it needs only AVX's 256-bit doubles and FMA. */
#if defined(__AVX2__) && defined(__FMA__)
#define FM_SCAN_VECTOR 1
#include <immintrin.h>
#else
#define FM_SCAN_VECTOR 0
#endif

typedef struct {
    double b, b2, b3, b4, b8;   /* powers of b = 1 - alpha */
    double scale;               /* u_t = scale*x_t: alpha, or 1 (adjust=True: no multiply) */
    double f1, f2, f3;          /* scale*b, scale*b^2, scale*b^3: the filter's taps */
    double norm;                /* results are y*norm: 1 - b (adjust=True), or 1 */
} fm_scan_coef;

/* v_t, the 4-tap filter, in one fixed order of roundings */
#define FM_TAPS(c, x0, x1, x2, x3, scaled) \
    fma((c)->f3, (x3), fma((c)->f2, (x2), fma((c)->f1, (x1), (scaled) ? (c)->scale * (x0) : (x0))))

#if FM_SCAN_VECTOR
static inline __m256d fm_load4_f64(const double* p) { return _mm256_loadu_pd(p); }
static inline __m256d fm_load4_f32(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
static inline void fm_store4_f64(double* p, __m256d v, int stream) {
    if (stream) {   /* two 16-byte streaming stores: numpy buffers are 16-byte aligned */
        _mm_stream_pd(p, _mm256_castpd256_pd128(v));
        _mm_stream_pd(p + 2, _mm256_extractf128_pd(v, 1));
    } else {
        _mm256_storeu_pd(p, v);
    }
}
static inline void fm_store4_f32(float* p, __m256d v, int stream) {
    __m128 f = _mm256_cvtpd_ps(v);   /* rounds to nearest, as the cast does */
    if (stream)
        _mm_stream_ps(p, f);
    else
        _mm_storeu_ps(p, f);
}
#define FM_V4 __m256d
#define FM_SET1(a) _mm256_set1_pd(a)
#define FM_FMA(a, b, c) _mm256_fmadd_pd((a), (b), (c))
#define FM_MUL(a, b) _mm256_mul_pd((a), (b))
#endif

/* FM_SCAN_BODY(TIN, TOUT, INSFX, OUTSFX): the eight-at-a-time loop over TIN inputs storing
   TOUT results; INSFX / OUTSFX pick the fm_load4 / fm_store4 flavours (f32 or f64). */
#if FM_SCAN_VECTOR
#define FM_SCAN_BODY(TIN, TOUT, INSFX, OUTSFX)                                             \
    {                                                                                     \
        FM_V4 vb4 = FM_SET1(c->b4), vb8 = FM_SET1(c->b8), vnorm = FM_SET1(c->norm);         \
        FM_V4 vf1 = FM_SET1(c->f1), vf2 = FM_SET1(c->f2), vf3 = FM_SET1(c->f3);             \
        FM_V4 vscale = FM_SET1(c->scale);                                                  \
        FM_V4 ya = _mm256_loadu_pd(y), yb = _mm256_loadu_pd(y + 4);                         \
        FM_V4 vprev = _mm256_loadu_pd(v);                                                  \
        for (; t + 8 <= n; t += 8) {                                                       \
            FM_V4 x0 = fm_load4_##INSFX(x + t), x1 = fm_load4_##INSFX(x + t - 1);            \
            FM_V4 x2 = fm_load4_##INSFX(x + t - 2), x3 = fm_load4_##INSFX(x + t - 3);        \
            FM_V4 va = FM_FMA(vf3, x3, FM_FMA(vf2, x2, FM_FMA(vf1, x1,                       \
                                  scaled ? FM_MUL(vscale, x0) : x0)));                     \
            ya = FM_FMA(vb8, ya, FM_FMA(vb4, vprev, va));                                  \
            x0 = fm_load4_##INSFX(x + t + 4), x1 = fm_load4_##INSFX(x + t + 3);              \
            x2 = fm_load4_##INSFX(x + t + 2), x3 = fm_load4_##INSFX(x + t + 1);              \
            vprev = FM_FMA(vf3, x3, FM_FMA(vf2, x2, FM_FMA(vf1, x1,                          \
                                scaled ? FM_MUL(vscale, x0) : x0)));                        \
            yb = FM_FMA(vb8, yb, FM_FMA(vb4, va, vprev));                                  \
            if (t >= store_from) {                                                        \
                fm_store4_##OUTSFX(out + t, normed ? FM_MUL(ya, vnorm) : ya, stream);        \
                fm_store4_##OUTSFX(out + t + 4, normed ? FM_MUL(yb, vnorm) : yb, stream);    \
            }                                                                             \
        }                                                                                 \
        _mm256_storeu_pd(y + 4, yb);                                                      \
    }
#else
/* the same operations, one lane at a time */
#define FM_SCAN_BODY(TIN, TOUT, INSFX, OUTSFX)                                             \
    for (; t + 8 <= n; t += 8) {                                                           \
        double va[4];                                                                     \
        for (int l = 0; l < 4; l++) {                                                     \
            va[l] = FM_TAPS(c, (double)x[t + l], (double)x[t + l - 1], (double)x[t + l - 2], \
                            (double)x[t + l - 3], scaled);                                 \
            y[l] = fma(c->b8, y[l], fma(c->b4, v[l], va[l]));                             \
        }                                                                                 \
        for (int l = 0; l < 4; l++) {                                                     \
            v[l] = FM_TAPS(c, (double)x[t + 4 + l], (double)x[t + 3 + l],                   \
                           (double)x[t + 2 + l], (double)x[t + 1 + l], scaled);             \
            y[4 + l] = fma(c->b8, y[4 + l], fma(c->b4, va[l], v[l]));                     \
        }                                                                                 \
        if (t >= store_from)                                                              \
            for (int l = 0; l < 8; l++)                                                   \
                out[t + l] = (TOUT)(normed ? y[l] * c->norm : y[l]);                       \
    }
#endif

/* FM_DEFINE_SCAN(NAME, TIN, TOUT, INSFX, OUTSFX): defines NAME(x, out, n, store_from,
   carry, coef, seed, stream) over TIN inputs storing TOUT results (INSFX, OUTSFX: as for
   FM_SCAN_BODY). */
#define FM_DEFINE_SCAN(NAME, TIN, TOUT, INSFX, OUTSFX)                                      \
    static inline double NAME##_body(const TIN* x, TOUT* out, ptrdiff_t n,                  \
                                     ptrdiff_t store_from, double carry,                  \
                                     const fm_scan_coef* c, int seed, int stream,         \
                                     int scaled, int normed) {                            \
        double y[8], v[4], yt = carry;                                                   \
        ptrdiff_t t = 0;                                                                  \
        (void)stream;                                                                     \
        if (n >= 16) {                                                                    \
            /* the first eight values by the plain recurrence; v at t = 4..7 */           \
            for (; t < 8; t++) {                                                          \
                yt = fma(c->b, yt, (seed && t == 0) ? (double)x[0] : c->scale * x[t]);     \
                y[t] = yt;                                                                \
                if (t >= store_from)                                                      \
                    out[t] = (TOUT)(normed ? yt * c->norm : yt);                           \
            }                                                                             \
            for (int l = 0; l < 4; l++)                                                   \
                v[l] = FM_TAPS(c, (double)x[4 + l], (double)x[3 + l], (double)x[2 + l],    \
                               (double)x[1 + l], scaled);                                 \
            FM_SCAN_BODY(TIN, TOUT, INSFX, OUTSFX)                                        \
            yt = y[7];                                                                    \
        }                                                                                 \
        for (; t < n; t++) {                                                              \
            yt = fma(c->b, yt, (seed && t == 0) ? (double)x[0] : c->scale * x[t]);         \
            if (t >= store_from)                                                          \
                out[t] = (TOUT)(normed ? yt * c->norm : yt);                               \
        }                                                                                 \
        return yt;                                                                        \
    }                                                                                     \
    /* adjust=True: unscaled inputs, normed results; adjust=False: the reverse */         \
    static double NAME(const TIN* x, TOUT* out, ptrdiff_t n, ptrdiff_t store_from,          \
                       double carry, const fm_scan_coef* c, int seed, int stream) {       \
        if (c->scale == 1.0)                                                              \
            return NAME##_body(x, out, n, store_from, carry, c, seed, stream, 0, 1);      \
        return NAME##_body(x, out, n, store_from, carry, c, seed, stream, 1, 0);          \
    }

FM_DEFINE_SCAN(fm_scan_f64, double, double, f64, f64)
FM_DEFINE_SCAN(fm_scan_f32, float, float, f32, f32)
FM_DEFINE_SCAN(fm_scan_f32_raw, float, double, f32, f64)
#endif
