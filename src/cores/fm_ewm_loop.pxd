# pandas' ewm loop (aggregations.pyx `ewm`) over series side by side: the numeric core of
# ewm_mean's general path (missing values, ignore_na, alpha == 1), built once per CPU
# target. Every series' bits depend on that series alone, never on those beside it.
from libc.math cimport NAN

from fastmomentum.kernels cimport real
from fm_core_table cimport EWM_COLS, EwmParams
from fm_ewm_store cimport _emit, fm_stream_fence


cdef inline bint _all_finite(const real* xr, Py_ssize_t width) noexcept nogil:
    cdef Py_ssize_t j
    cdef bint bad = False
    for j in range(width):
        bad = bad | ((xr[j] - xr[j]) != 0.0)   # NaN for NaN and inf; an OR reduction vectorises
    return not bad


cdef inline bint _all_equal(const double* v, Py_ssize_t width) noexcept nogil:
    cdef Py_ssize_t j
    cdef bint differ = False
    for j in range(width):
        differ = differ | (v[j] != v[0])
    return not differ


cdef inline bint _pandas_row(const real* xr, real* outr, Py_ssize_t width, double* w,
                                double* old_wt, Py_ssize_t* nobs, const EwmParams* p) noexcept nogil:
    """pandas' step (aggregations.pyx ``ewm``) for one row of series; True when every
    series has started (seen a value) after it."""
    cdef Py_ssize_t j
    cdef double cur, wt, ow, nw, b = p.b, new_wt = p.new_wt
    cdef Py_ssize_t minp = p.min_periods
    cdef bint obs, started, all_started = True
    for j in range(width):
        cur = xr[j]
        wt = w[j]
        ow = old_wt[j]
        obs = cur - cur == 0.0          # finite: pandas turns inf into NaN
        started = wt == wt
        if started:
            nw = new_wt
            if obs or not p.ignore_na:
                ow = ow * b
                if p.new_wt_fills:
                    nw = 1.0 - ow
            if obs:
                if wt != cur:
                    wt = (ow * wt + nw * cur) * (1.0 / (ow + nw))
                ow = ow + new_wt if p.adjust else 1.0
        elif obs:
            wt = cur
        if obs:
            nobs[j] += 1
        all_started = all_started and wt == wt
        w[j] = wt
        old_wt[j] = ow
        outr[j] = <real>(wt if nobs[j] >= minp else NAN)
    return all_started


cdef inline void _started_row(const real* xr, Py_ssize_t width, double* w, double* old_wt,
                              Py_ssize_t* nobs, double* row, const EwmParams* p,
                              bint uniform) noexcept nogil:
    """pandas' step for a row where every series has started and has a finite value,
    branch-free so that it vectorises (inlined where the state arrays are local, so the
    compiler knows nothing aliases them). ``uniform`` (a constant at each call): every series
    has the same weight, so one division serves the row (Zen-class CPUs divide 4 doubles per
    ~10 cycles): the same value as each series' own, bit for bit. pandas' own rounding is
    kept whenever ow + nw == 1, i.e. always for adjust=False."""
    cdef Py_ssize_t j
    cdef double cur, wt, ow, wn, nw, b = p.b, new_wt = p.new_wt
    cdef bint adjust = p.adjust, fills = p.new_wt_fills
    cdef Py_ssize_t minp = p.min_periods
    # uniform: the row's one new weight and reciprocal (each series' own, all equal)
    cdef double ow0 = old_wt[0] * b
    cdef double nw0 = 1.0 - ow0 if fills else new_wt
    cdef double inv = 1.0 / (ow0 + nw0)
    for j in range(width):
        cur = xr[j]
        wt = w[j]
        ow = old_wt[j] * b
        nw = nw0 if uniform else (1.0 - ow if fills else new_wt)
        wn = (ow * wt + nw * cur) * (inv if uniform else 1.0 / (ow + nw))
        wt = wn if wt != cur else wt    # vectorises: -fno-trapping-math (setup.py)
        old_wt[j] = ow + new_wt if adjust else 1.0
        nobs[j] += 1
        w[j] = wt
        row[j] = wt if nobs[j] >= minp else NAN


cdef inline void pandas_loop(const real* x, real* out, Py_ssize_t n, Py_ssize_t m,
                     Py_ssize_t row_stride, const EwmParams* p) noexcept nogil:
    """pandas' ``ewm`` for ``m`` series side by side: element (t, j) at
    ``t*row_stride + j``, EWM_COLS series at a time. Rows where every series has started
    and has a finite value take _started_row (while all series also share one weight, no
    missing value so far, with one division per row); others _pandas_row. Every path
    computes a step as ``(ow*wt + nw*cur) * (1/(ow + nw))``."""
    cdef double w[EWM_COLS]
    cdef double old_wt[EWM_COLS]
    cdef double row[EWM_COLS]        # a row's results, stored together by _emit
    cdef Py_ssize_t nobs[EWM_COLS]   # integer: a float >= may trap, blocking vectorisation
    cdef Py_ssize_t j0, j, t, width, g
    cdef const real* xr
    cdef real* outr
    cdef bint all_started, uniform
    for g in range((m + EWM_COLS - 1) // EWM_COLS):
        j0 = g * EWM_COLS
        width = min(<Py_ssize_t>EWM_COLS, m - j0)
        for j in range(width):
            w[j] = NAN
            old_wt[j] = 1.0
            nobs[j] = 0
        all_started = uniform = False
        for t in range(n):
            xr = x + t * row_stride + j0
            outr = out + t * row_stride + j0
            if uniform and _all_finite(xr, width):
                _started_row(xr, width, w, old_wt, nobs, row, p, True)
                _emit(outr, row, width, p.stream)
            elif all_started and _all_finite(xr, width):
                _started_row(xr, width, w, old_wt, nobs, row, p, False)
                _emit(outr, row, width, p.stream)
            else:
                all_started = _pandas_row(xr, outr, width, w, old_wt, nobs, p)
                uniform = all_started and _all_equal(old_wt, width)
    if p.stream:
        fm_stream_fence()


cdef inline void pandas_series(const real* x, real* out, Py_ssize_t n,
                               const EwmParams* p) noexcept nogil:
    """pandas' loop over one series: its own entry, so that the compiler specialises the
    loop for one series of stride 1 (through the generic entry, a series ran 1.5-1.8x
    slower: 41 vs 73 us for 5000 values with a NaN, in-process A/B)."""
    pandas_loop(x, out, n, 1, 1, p)
