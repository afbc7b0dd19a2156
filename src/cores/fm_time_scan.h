/* ewm_mean with times, a block of one series without missing values, as a scan: the
   numeric core of the family's one-shot times mean (fastmomentum._ewm_family, `scan`),
   built once per CPU target.

   With f_t the step's decay, pandas' weighted mean is S_t/W_t with W_t = f_t W_{t-1} + 1
   and S_t = f_t S_{t-1} + x_t (adjust=True: the weights' and the weighted values' sums);
   with adjust=False (times allow only com = 1, where pandas' new weight is 1 - old) the mean
   itself is S_t = f_t S_{t-1} + (1 - f_t) x_t. One chain a step is latency-bound (pandas'
   loop measured 3.4 ns a value here: a multiply, an add, a division's select), so the
   block is cut into FM_TSCAN_LANES stretches run side by side: pass 1 runs each from a zero
   state, keeping its local sums and the product P of its decays at every position (4
   independent chains: throughput-bound); the stretches' true starting states follow from
   their ends (start_{j+1} = P_j*start_j + local_j), and pass 2 (independent across
   positions: vectorised) adds each position's P times its stretch's start and divides.
   Within a few ulps of the recurrence; the cut points are fixed positions of the block, so
   the results depend on nothing but the block. Plain multiplies and adds under
   -ffp-contract=off: the same bits on both targets (fma() is a libm call in the portable
   build, several times the whole step).

   Returns 1 done (*w, *s: the sums after the block); 0 when an input, a factor or a sum
   is not finite (pass 1 sees it; nothing written, *w and *s untouched): the caller runs
   pandas' recurrence there. n at most FM_TSCAN_MAX. */
#ifndef FM_TIME_SCAN_H
#define FM_TIME_SCAN_H
#include <math.h>
#include <stddef.h>

#define FM_TSCAN_LANES 4
#define FM_TSCAN_MAX 1024
#define FM_TSCAN_MIN_LANE 16   /* shorter stretches: one chain (the pass overheads) */
/* Pass 1's stores, lane j's at position + j*FM_TSCAN_PAD, its three arrays FM_TSCAN_ROW
   apart: with the lanes 2 KB apart (1024 values), stores and later loads 4 KB apart
   collide in the store buffer's address check (4K aliasing: pass 1 measured 2.5x slower) */
#define FM_TSCAN_PAD 8
#define FM_TSCAN_ROW (FM_TSCAN_MAX + FM_TSCAN_LANES * FM_TSCAN_PAD + 40)

static inline int fm_tscan_finite(double v) { return v - v == 0.0; }

/* one step of lane J (position J*len + i) on its chains P, W, S */
#define FM_TSCAN_STEP(J, P, W, S)                                                        \
    {                                                                                    \
        ptrdiff_t tj = (J) * len + i, at = tj + (J) * FM_TSCAN_PAD;                      \
        double fv = f[tj], xv = (double)x[tj];                                           \
        P = P * fv;                                                                      \
        W = fv * W + 1.0;                                                                \
        S = fv * S + (adjust ? xv : (1.0 - fv) * xv);                                    \
        pl[at] = P;                                                                      \
        wl[at] = W;                                                                      \
        sl[at] = S;                                                                      \
    }

/* FM_DEFINE_TIME_MEAN(NAME, T): NAME(x, out, f, n, w, s, adjust) over T values */
#define FM_DEFINE_TIME_MEAN(NAME, T)                                                     \
    static int NAME(const T* x, T* out, const double* f, ptrdiff_t n, double* w,        \
                    double* s, int adjust) {                                            \
        double scratch[3 * FM_TSCAN_ROW];                                                \
        double *pl = scratch, *wl = scratch + FM_TSCAN_ROW, *sl = scratch + 2 * FM_TSCAN_ROW; \
        double p[FM_TSCAN_LANES], wj[FM_TSCAN_LANES], sj[FM_TSCAN_LANES];                \
        double w0[FM_TSCAN_LANES + 1], s0[FM_TSCAN_LANES + 1];                           \
        int lanes = n >= FM_TSCAN_LANES * FM_TSCAN_MIN_LANE ? FM_TSCAN_LANES : 1;        \
        ptrdiff_t len = n / lanes, i, t;                                                 \
        int j, ok = 1;                                                                   \
        if (n <= 0 || n > FM_TSCAN_MAX)                                                  \
            return n == 0;                                                               \
        for (j = 0; j < FM_TSCAN_LANES; j++) {                                           \
            p[j] = 1.0;                                                                  \
            wj[j] = 0.0;                                                                 \
            sj[j] = 0.0;                                                                 \
        }                                                                                \
        /* pass 1: the lanes' local sums; lane j covers [j*len, (j+1)*len), the last one \
           also the remainder. Four named chains (in registers: as arrays, gcc 12 kept   \
           them in memory, 2x slower than pandas' loop measured) */                     \
        if (lanes == FM_TSCAN_LANES) {                                                   \
            double p0 = 1.0, p1 = 1.0, p2 = 1.0, p3 = 1.0;                               \
            double w_0 = 0.0, w_1 = 0.0, w_2 = 0.0, w_3 = 0.0;                           \
            double s_0 = 0.0, s_1 = 0.0, s_2 = 0.0, s_3 = 0.0;                           \
            for (i = 0; i < len; i++) {                                                  \
                FM_TSCAN_STEP(0, p0, w_0, s_0)                                           \
                FM_TSCAN_STEP(1, p1, w_1, s_1)                                           \
                FM_TSCAN_STEP(2, p2, w_2, s_2)                                           \
                FM_TSCAN_STEP(3, p3, w_3, s_3)                                           \
            }                                                                            \
            p[0] = p0, p[1] = p1, p[2] = p2, p[3] = p3;                                  \
            wj[0] = w_0, wj[1] = w_1, wj[2] = w_2, wj[3] = w_3;                          \
            sj[0] = s_0, sj[1] = s_1, sj[2] = s_2, sj[3] = s_3;                          \
        }                                                                                \
        for (t = lanes * len - (lanes == 1 ? len : 0); t < n; t++) {                     \
            double fv = f[t], xv = (double)x[t];                                         \
            j = lanes - 1;                                                               \
            p[j] = p[j] * fv;                                                            \
            wj[j] = fv * wj[j] + 1.0;                                                    \
            sj[j] = fv * sj[j] + (adjust ? xv : (1.0 - fv) * xv);                        \
            pl[t + j * FM_TSCAN_PAD] = p[j];                                             \
            wl[t + j * FM_TSCAN_PAD] = wj[j];                                            \
            sl[t + j * FM_TSCAN_PAD] = sj[j];                                            \
        }                                                                                \
        /* the lanes' starting states, chained through their ends */                     \
        w0[0] = *w;                                                                      \
        s0[0] = *s;                                                                      \
        for (j = 0; j < lanes; j++) {                                                    \
            ok &= fm_tscan_finite(p[j]) & fm_tscan_finite(wj[j]) & fm_tscan_finite(sj[j]); \
            w0[j + 1] = p[j] * w0[j] + wj[j];                                            \
            s0[j + 1] = p[j] * s0[j] + sj[j];                                            \
        }                                                                                \
        if (!(ok & fm_tscan_finite(w0[lanes]) & fm_tscan_finite(s0[lanes])))             \
            return 0;                                                                    \
        /* pass 2: every position from its lane's start */                               \
        for (j = 0; j < lanes; j++) {                                                    \
            ptrdiff_t a = j * len, b = j == lanes - 1 ? n : a + len;                     \
            const double *pj = pl + j * FM_TSCAN_PAD, *wq = wl + j * FM_TSCAN_PAD;       \
            const double *sq = sl + j * FM_TSCAN_PAD;                                    \
            double ws = w0[j], ss = s0[j];                                               \
            if (adjust)                                                                  \
                for (t = a; t < b; t++)                                                  \
                    out[t] = (T)((pj[t] * ss + sq[t]) / (pj[t] * ws + wq[t]));           \
            else                                                                         \
                for (t = a; t < b; t++)                                                  \
                    out[t] = (T)(pj[t] * ss + sq[t]);                                    \
        }                                                                                \
        *w = w0[lanes];                                                                  \
        *s = s0[lanes];                                                                  \
        return 1;                                                                        \
    }

FM_DEFINE_TIME_MEAN(fm_time_mean_f64, double)
FM_DEFINE_TIME_MEAN(fm_time_mean_f32, float)
#endif
