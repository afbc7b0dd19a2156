# ewm_mean: pandas' exponentially weighted mean, included at the end of _kernels.pxi.
#
# Three compiled paths, all computing in float64 whatever the storage type:
#
# * _ewm_exact: pandas' own loop (aggregations.pyx `ewm`), run over up to EWM_COLS series
#   side by side so the compiler vectorises it across series. It handles everything:
#   NaN/inf (inf is missing, as pandas makes it), ignore_na, alpha == 1. Operation for
#   operation pandas', except that the new mean (ow*w + nw*x)/(ow + nw) multiplies by the
#   reciprocal 1/(ow + nw): the same bits when ow + nw == 1 (adjust=False), within an ulp
#   per step otherwise, and while all series share one weight the reciprocal is computed
#   once per row. Every series' bits depend on that series alone, never on those beside
#   it, so splitting the columns across threads changes nothing.
# * _ewm_blocked: one long series without missing values, as a blocked linear scan
#   y_t = b*y_{t-1} + u_t (b = 1-alpha). adjust=False: u_0 = x_0, u_t = alpha*x_t, y is the
#   mean. adjust=True: u_t = x_t, the mean is y_t * (1-b) / (1 - b^(t+1)) (the zero-started
#   EMA over its weight sum: the bias correction Adam uses). Levels:
#     stretch: fm_scan.h runs the recurrence eight steps at a time in one pass (two
#       vectorised dependency chains y_t = b^8*y_{t-8} + w_t, w a filter of x), entering
#       with one carry y_{t-1};
#     superblock (EWM_SUPERBLOCK elements): scanned from zero in pass 1, in parallel.
#       The superblock carries then follow serially, and pass 2 redoes only the leading
#       fixup_len values of each superblock, where the carry still matters (b^offset >= 1e-30;
#       beyond, its effect is below 1e-30 of the values).
#   Everything is fixed by position and alpha, never by the thread count: results are
#   bit-identical for any number of threads. Pass 1 also finds missing values: a NaN or
#   inf makes its superblock's end non-finite, and the series goes to _ewm_exact.
# * _ewm_cols_blocked: series side by side (a C-ordered frame along axis 0) without
#   missing values: the same recurrence one row at a time, vectorised across the series,
#   in superblocks of rows with the same two passes (so that each thread writes, and on a
#   fresh result faults in, whole rows of its own). Fewer than EWM_NARROW series are too
#   few to vectorise across: each is gathered a block of rows at a time and scanned by
#   fm_scan.h (_narrow_stretch). A NaN or inf anywhere: _ewm_exact.
from libc.math cimport NAN, ceil, expm1, fma, isfinite, log, pow
from cpython.float cimport PyFloat_AS_DOUBLE
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from fastmomentum.kernels cimport real

cdef extern from "fm_store.h" nogil:
    void fm_copy_f64(double* dst, const double* src, Py_ssize_t n, bint stream)
    void fm_copy_f64_to_f32(float* dst, const double* src, Py_ssize_t n, bint stream)
    void fm_scale_f64(double* dst, const double* src, Py_ssize_t n, double scale, bint stream)
    void fm_scale_f64_to_f32(float* dst, const double* src, Py_ssize_t n, double scale,
                             bint stream)
    void fm_stream_fence()

cdef extern from "fm_scan.h" nogil:
    ctypedef struct fm_scan_coef:
        double b, b2, b3, b4, b8, scale, f1, f2, f3, norm
    double fm_scan_f64(const double* x, double* out, Py_ssize_t n, Py_ssize_t store_from,
                       double carry, const fm_scan_coef* c, bint seed, bint stream)
    double fm_scan_f32(const float* x, float* out, Py_ssize_t n, Py_ssize_t store_from,
                       double carry, const fm_scan_coef* c, bint seed, bint stream)
    double fm_scan_f32_raw(const float* x, double* out, Py_ssize_t n, Py_ssize_t store_from,
                           double carry, const fm_scan_coef* c, bint seed, bint stream)

cdef enum:
    EWM_CHUNK = 136                        # weight-sum table length (adjust=True near t = 0)
    EWM_POWERS = 68                        # EWM_CHUNK / 2: the b^(j+1) it is built from
    EWM_BLOCK = 8 * EWM_CHUNK              # 1088: a scan buffer in L1
    EWM_COLS = 256                         # series side by side in _ewm_exact
    # fewer series side by side than this are scanned one by one (_narrow_stretch): across
    # 2 to 7, the row step runs at 2-9 ns a value (latency and loop overhead), one by one
    # at 1.1-1.4 (measured; from 8 on, 0.5-1.8 across)
    EWM_NARROW = 8
    # pandas' loop over series side by side on threads: the columns in this many ranges
    EWM_EXACT_SPLIT = 8

cdef Py_ssize_t EWM_SUPERBLOCK = 240 * EWM_BLOCK   # 261120
# One thread's time per value of the blocked scans, for _threads_for (measured: a series of
# 262144 float64 into out= in 74 us, 100k x 100 side by side ~0.3 ns a value too).
cdef double EWM_NS_PER_VALUE = 0.28
# The blocked scans from this many values on (a series; series side by side): below,
# their set-up costs more than pandas' loop saves (measured: a series of 64, 0.6-0.7 us
# either way; of 8000, 30 us by the loop, 3-4 us blocked).
cdef Py_ssize_t EWM_SERIES_BLOCKED_MIN = 128
cdef Py_ssize_t EWM_COLS_BLOCKED_MIN = 8 * EWM_BLOCK
# A carry is dropped once its weight b^k falls below this (and table entries are flushed
# to zero below EWM_TINY, keeping denormals out of the loops).
cdef double EWM_NEGLIGIBLE = 1e-30
cdef double EWM_TINY = 1e-300
# A caller's 16-byte aligned ``out`` of at least this many bytes (half this machine's L3)
# is written with streaming stores (fm_store.h, fm_scan.h): it would not stay in cache
# anyway, and skipping the read-for-ownership saves one of three memory streams. Not a
# fresh result: the kernel zeroes its pages at the first write, leaving the lines in
# cache, where ordinary stores hit them and a streaming store would first evict them
# (measured with the previous scan: 10M series 13.9 ms plain vs 18.2 ms streaming, fresh;
# 7.5 vs 9.0 ms into a reused ``out``; with fm_scan.h, fresh: no difference).
cdef Py_ssize_t EWM_STREAM_MIN_BYTES = 1 << 24


ctypedef struct EwmParams:
    double alpha, b, new_wt
    bint adjust, ignore_na
    bint into_out         # the result is the caller's ``out`` (not a fresh array)
    bint stream           # write results with streaming stores (then fence)
    bint new_wt_fills     # pandas 3, adjust=False, com == 1: new_wt = 1 - old_wt
    Py_ssize_t min_periods
    # blocked scan only
    fm_scan_coef coef     # fm_scan.h's coefficients: means stored
    fm_scan_coef raw      # the same with norm 1: sums, for _emit_weighted
    double log_b, b_superblock
    Py_ssize_t fixup_len      # leading values of a superblock that need its carry
    Py_ssize_t ones_from      # from this t on, 1 - b^(t+1) rounds to 1
    Py_ssize_t weighted_until # adjust=True: ones_from rounded up to a block (else 0)
    double one_minus_pw[EWM_CHUNK]   # 1 - b^(j+1), without cancellation (adjust=True)
    # series side by side: superblocks of rows, and the rows that need the carry (both
    # multiples of EWM_BLOCK); doubles of scratch per thread
    Py_ssize_t super_rows, fixup_rows, cols_scratch
    double b_super_rows


cdef inline void _emit(real* dst, const double* src, Py_ssize_t n, bint stream) noexcept nogil:
    """Store ``n`` finished results (rounded to float32 for float32 output)."""
    if real is double:
        fm_copy_f64(dst, src, n, stream)
    else:
        fm_copy_f64_to_f32(dst, src, n, stream)


cdef inline void _emit_scaled(real* dst, const double* src, Py_ssize_t n, double scale,
                              bint stream) noexcept nogil:
    """Store ``n`` results times ``scale`` (one rounding, then to float32 for float32)."""
    if real is double:
        fm_scale_f64(dst, src, n, scale, stream)
    else:
        fm_scale_f64_to_f32(dst, src, n, scale, stream)


cdef inline double _flush(double v) noexcept nogil:
    return v if v >= EWM_TINY else 0.0


cdef inline Py_ssize_t _whole_blocks(double values) noexcept nogil:
    return <Py_ssize_t>ceil(values / EWM_BLOCK) * EWM_BLOCK


cdef void _ewm_tables(EwmParams* p, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """The blocked scans' constants for ``m`` series of ``n`` (one after another, or side
    by side)."""
    cdef Py_ssize_t j, h
    cdef double b = p.b, rows
    cdef double pw[EWM_POWERS]
    p.log_b = log(b)
    # b^(j+1): by pow (within an ulp) up to b^8, the scan's coefficients, whose error would
    # grow by ~1/alpha over the recurrence; beyond, for the weight sums near t = 0 only, as
    # b^h * b^(j+1-h) (an ulp per halving, a few in all; 60 pow calls cost ~1.5 us a call).
    # 1 - b^(j+1) = (1 - b^h) + b^h*(1 - b^(j+1-h)): positive terms, no cancellation.
    for j in range(8):
        pw[j] = pow(b, <double>(j + 1))
    if p.adjust:
        for j in range(8, EWM_POWERS):
            h = (j + 1) // 2
            pw[j] = pw[h - 1] * pw[j - h]
        p.one_minus_pw[0] = 1.0 - b
        for j in range(1, EWM_CHUNK):
            h = (j + 1) // 2
            p.one_minus_pw[j] = fma(pw[h - 1], p.one_minus_pw[j - h], p.one_minus_pw[h - 1])
    p.coef.b = b
    p.coef.b2 = _flush(pw[1])
    p.coef.b3 = _flush(pw[2])
    p.coef.b4 = _flush(pw[3])
    p.coef.b8 = _flush(pw[7])
    p.coef.scale = 1.0 if p.adjust else p.alpha
    p.coef.f1 = p.coef.scale * p.coef.b
    p.coef.f2 = p.coef.scale * p.coef.b2
    p.coef.f3 = p.coef.scale * p.coef.b3
    p.coef.norm = 1.0 - b if p.adjust else 1.0
    p.raw = p.coef
    p.raw.norm = 1.0
    p.b_superblock = _flush(pow(b, <double>EWM_SUPERBLOCK))
    # b^fixup_len < NEGLIGIBLE, in whole blocks, at most a superblock
    p.fixup_len = EWM_BLOCK * <Py_ssize_t>min(<double>(EWM_SUPERBLOCK // EWM_BLOCK),
                                              log(EWM_NEGLIGIBLE) / (p.log_b * EWM_BLOCK) + 1.0)
    # rows: b^fixup_rows < NEGLIGIBLE; superblocks of at least EWM_SUPERBLOCK values and
    # 8 times that (so that pass 2 redoes at most an eighth)
    rows = min(<double>n, log(EWM_NEGLIGIBLE) / p.log_b + 1.0)
    p.fixup_rows = <Py_ssize_t>rows
    p.super_rows = <Py_ssize_t>min(<double>n, max(8.0 * rows, <double>(EWM_SUPERBLOCK // m + 1)))
    if m < EWM_NARROW:
        p.fixup_rows = _whole_blocks(rows)
        p.super_rows = _whole_blocks(<double>p.super_rows)
    p.b_super_rows = _flush(pow(b, <double>p.super_rows))
    p.cols_scratch = m + (3 * EWM_BLOCK if m < EWM_NARROW else m)
    # b^(t+1) < 2^-54 makes 1 - b^(t+1) round to 1
    p.ones_from = <Py_ssize_t>min(1e18, -37.5 / p.log_b + 1.0)
    p.weighted_until = ((p.ones_from + EWM_BLOCK - 1) // EWM_BLOCK * EWM_BLOCK
                        if p.adjust else 0)


# ---------------------------------------------------------------------------------------
# pandas' loop

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


cdef inline bint _ewm_exact_row(const real* xr, real* outr, Py_ssize_t width, double* w,
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


cdef void _ewm_exact(const real* x, real* out, Py_ssize_t n, Py_ssize_t m,
                     Py_ssize_t row_stride, const EwmParams* p) noexcept nogil:
    """pandas' ``ewm`` for ``m`` series side by side: element (t, j) at
    ``t*row_stride + j``, EWM_COLS series at a time. Rows where every series has started
    and has a finite value take a branch-free copy of pandas' step that vectorises (written
    here, on the local state arrays, so the compiler knows nothing aliases them); while all
    series also share one weight (no missing value so far), with one division per row.
    Every path computes a step as ``(ow*wt + nw*cur) * (1/(ow + nw))``."""
    cdef double w[EWM_COLS]
    cdef double old_wt[EWM_COLS]
    cdef double row[EWM_COLS]        # a row's results, stored together by _emit
    cdef Py_ssize_t nobs[EWM_COLS]   # integer: a float >= may trap, blocking vectorisation
    cdef Py_ssize_t j0, j, t, width, g
    cdef const real* xr
    cdef real* outr
    cdef bint all_started, uniform, adjust = p.adjust, fills = p.new_wt_fills
    cdef double cur, wt, ow, wn, nw, inv, b = p.b, new_wt = p.new_wt
    cdef Py_ssize_t minp = p.min_periods
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
                # every series has the same weight: one division per row, not per value
                # (Zen-class CPUs divide 4 doubles per ~10 cycles; pandas' own rounding is
                # kept whenever ow + nw == 1, i.e. always for adjust=False)
                ow = old_wt[0] * b
                nw = 1.0 - ow if fills else new_wt
                inv = 1.0 / (ow + nw)
                ow = ow + new_wt if adjust else 1.0
                for j in range(width):
                    cur = xr[j]
                    wt = w[j]
                    wn = (old_wt[j] * b * wt + nw * cur) * inv
                    wt = wn if wt != cur else wt
                    old_wt[j] = ow
                    nobs[j] += 1
                    w[j] = wt
                    row[j] = wt if nobs[j] >= minp else NAN
                _emit(outr, row, width, p.stream)
            elif all_started and _all_finite(xr, width):
                for j in range(width):
                    cur = xr[j]
                    wt = w[j]
                    ow = old_wt[j] * b
                    nw = 1.0 - ow if fills else new_wt
                    wn = (ow * wt + nw * cur) * (1.0 / (ow + nw))
                    wt = wn if wt != cur else wt    # vectorises: -fno-trapping-math (setup.py)
                    ow = ow + new_wt
                    old_wt[j] = ow if adjust else 1.0
                    nobs[j] += 1
                    w[j] = wt
                    row[j] = wt if nobs[j] >= minp else NAN
                _emit(outr, row, width, p.stream)
            else:
                all_started = _ewm_exact_row(xr, outr, width, w, old_wt, nobs, p)
                uniform = all_started and _all_equal(old_wt, width)
    if p.stream:
        fm_stream_fence()


# ---------------------------------------------------------------------------------------
# Blocked scan of one series without missing values

cdef inline double _scan(const real* x, real* out, Py_ssize_t n, Py_ssize_t store_from,
                         double carry, bint seed, const EwmParams* p) noexcept nogil:
    if real is double:
        return fm_scan_f64(x, out, n, store_from, carry, &p.coef, seed, p.stream)
    else:
        return fm_scan_f32(x, out, n, store_from, carry, &p.coef, seed, p.stream)


cdef inline double _scan_raw(const real* x, double* scan, Py_ssize_t n, double carry,
                             const EwmParams* p) noexcept nogil:
    """The zero-started sum y (not yet a mean) into ``scan``."""
    if real is double:
        return fm_scan_f64(x, scan, n, 0, carry, &p.raw, False, False)
    else:
        return fm_scan_f32_raw(x, scan, n, 0, carry, &p.raw, False, False)


cdef void _emit_weighted(real* out, double* scan, Py_ssize_t t0, Py_ssize_t n,
                         const EwmParams* p) noexcept nogil:
    """adjust=True while 1 - b^(t+1) is not 1: the sums ``scan`` (positions t0..) over
    their weight sums (1 - b^(t+1))/(1 - b) = ((1 - b^t) + b^t*(1 - b^(j+1)))/(1 - b) for
    t = t0 + j: two positive terms (expm1, the table), no cancellation near t = 0."""
    cdef Py_ssize_t k, c, j
    cdef double q, one_minus_q, norm = p.coef.norm
    for k in range((n + EWM_CHUNK - 1) // EWM_CHUNK):
        c = k * EWM_CHUNK
        q = pow(p.b, <double>(t0 + c))
        one_minus_q = -expm1((t0 + c) * p.log_b)
        for j in range(min(<Py_ssize_t>EWM_CHUNK, n - c)):
            scan[c + j] = scan[c + j] * norm / fma(q, p.one_minus_pw[j], one_minus_q)
    _emit(out, scan, n, p.stream)


cdef double _ewm_stretch(const real* x, real* out, Py_ssize_t t0, Py_ssize_t end, double carry,
                         Py_ssize_t store_from, double* scan, const EwmParams* p) noexcept nogil:
    """Positions [t0, end) of the series (``x`` and ``out`` point at t0), entering with
    ``carry`` (y at t0 - 1); means stored from ``store_from`` on (``t0`` and
    ``store_from``: multiples of EWM_BLOCK). Returns y at end - 1."""
    cdef Py_ssize_t t = t0, length
    while t < min(end, p.weighted_until):
        length = min(<Py_ssize_t>EWM_BLOCK, end - t)
        carry = _scan_raw(x + (t - t0), scan, length, carry, p)
        if t >= store_from:
            _emit_weighted(out + (t - t0), scan, t, length, p)
        t += length
    if t < end:
        carry = _scan(x + (t - t0), out + (t - t0), end - t, max(store_from - t, 0), carry,
                      t == 0 and not p.adjust, p)
    return carry


cdef double _ewm_superblock(const real* x, real* out, Py_ssize_t n, Py_ssize_t s, double carry,
                            bint fixup, double* scan, const EwmParams* p) noexcept nogil:
    """Superblock ``s``: in pass 1 (not ``fixup``) all of it from a zero carry, storing all
    but the leading fixup_len values (except in the first); in pass 2 those, with the
    true ``carry``. Returns the carry out."""
    cdef Py_ssize_t t0 = s * EWM_SUPERBLOCK, end = min(n, t0 + EWM_SUPERBLOCK)
    if fixup:
        carry = _ewm_stretch(x + t0, out + t0, t0, min(end, t0 + p.fixup_len), carry, t0,
                             scan, p)
    else:
        carry = _ewm_stretch(x + t0, out + t0, t0, end, carry,
                             t0 + (p.fixup_len if s > 0 else 0), scan, p)
    if p.stream:
        fm_stream_fence()
    return carry


ctypedef struct _EwmJob:
    # one parallel loop of the scans (fm_parallel_for): float32 data when ``single``
    const void* x
    void* out
    Py_ssize_t n, m, width
    double* scratch
    double* ends
    const EwmParams* p
    bint single, fixup


cdef inline void _ewm_job(_EwmJob* job, const real* x, real* out, Py_ssize_t n,
                          Py_ssize_t m, double* scratch, double* ends,
                          const EwmParams* p) noexcept nogil:
    job.x = x
    job.out = out
    job.n = n
    job.m = m
    job.scratch = scratch
    job.ends = ends
    job.p = p
    job.single = real is float
    job.fixup = False


cdef inline void _superblock_of(const _EwmJob* job, const real* x, real* out, Py_ssize_t s,
                                int worker) noexcept nogil:
    cdef double* scan = job.scratch + worker * EWM_BLOCK
    if job.fixup:
        _ewm_superblock(x, out, job.n, s, job.ends[s - 1], True, scan, job.p)
    else:
        job.ends[s] = _ewm_superblock(x, out, job.n, s, 0.0, False, scan, job.p)


cdef void _superblock_task(void* ctx, ptrdiff_t chunk, int worker) noexcept nogil:
    """Superblock ``chunk`` (pass 1) or ``chunk + 1`` (pass 2) of _ewm_blocked."""
    cdef const _EwmJob* job = <const _EwmJob*>ctx
    if job.single:
        _superblock_of(job, <const float*>job.x, <float*>job.out, chunk + job.fixup, worker)
    else:
        _superblock_of(job, <const double*>job.x, <double*>job.out, chunk + job.fixup, worker)


cdef bint _ewm_blocked(const real* x, real* out, Py_ssize_t n, double* scratch,
                       double* ends, int nthreads, const EwmParams* p) noexcept nogil:
    """The mean of one series by the blocked scan, on ``nthreads`` threads (``scratch``:
    EWM_BLOCK doubles per thread, ``ends``: one double per superblock). False, with ``out``
    partly written, when the series has a NaN or inf (or overflows): use _ewm_exact."""
    cdef Py_ssize_t nsuper = (n + EWM_SUPERBLOCK - 1) // EWM_SUPERBLOCK, s, t
    cdef double carry
    cdef _EwmJob job
    _ewm_job(&job, x, out, n, 1, scratch, ends, p)
    # pass 1: every superblock from a zero carry, stored after its leading fixup_len values.
    # (Which thread runs a superblock never changes its result.)
    fm_parallel_for(_superblock_task, &job, nsuper, nthreads)
    for s in range(nsuper):
        if not isfinite(ends[s]):
            return False
    # the true carry into each superblock, kept in ends[s - 1]
    carry = 0.0
    for s in range(nsuper - 1):
        carry = fma(p.b_superblock, carry, ends[s])
        ends[s] = carry
    # pass 2: the leading values of superblocks 1.. with their carry (on threads only when
    # it is more than a few superblocks' work)
    job.fixup = True
    fm_parallel_for(_superblock_task, &job, nsuper - 1,
                    nthreads if (nsuper - 1) * p.fixup_len >= 4 * EWM_SUPERBLOCK else 1)
    for t in range(min(p.min_periods - 1, n)):
        out[t] = <real>NAN
    return True


# ---------------------------------------------------------------------------------------
# Series side by side without missing values: the same scan, vectorised across series

cdef void _narrow_stretch(const real* x, real* out, Py_ssize_t t0, Py_ssize_t end,
                          Py_ssize_t m, double* y, double* buffers, Py_ssize_t store_from,
                          const EwmParams* p) noexcept nogil:
    """_cols_stretch for a few series side by side, too few to vectorise across: each
    series in turn, a block of EWM_BLOCK rows at a time, gathered into ``buffers`` (3
    blocks), scanned as a series (_ewm_stretch, eight steps at a time) and scattered back."""
    cdef Py_ssize_t j, i, k, c, length
    cdef double* xs = buffers
    cdef double* means = buffers + EWM_BLOCK
    cdef double* scan = buffers + 2 * EWM_BLOCK
    cdef EwmParams q = p[0]
    q.stream = False    # into the buffer; the scatter stores plainly
    for k in range((end - t0 + EWM_BLOCK - 1) // EWM_BLOCK):
        # block by block, every series in it: the block's rows stay in cache meanwhile
        c = t0 + k * EWM_BLOCK
        length = min(<Py_ssize_t>EWM_BLOCK, end - c)
        for j in range(m):
            for i in range(length):
                xs[i] = x[(c + i) * m + j]
            y[j] = _ewm_stretch(<const double*>xs, means, c, c + length, y[j], store_from,
                                scan, &q)
            if c >= store_from:
                for i in range(length):
                    out[(c + i) * m + j] = <real>means[i]


cdef void _cols_stretch(const real* x, real* out, Py_ssize_t t0, Py_ssize_t end,
                        Py_ssize_t m, double* y, double* row, Py_ssize_t store_from,
                        const EwmParams* p) noexcept nogil:
    """Rows [t0, end) of ``m`` series side by side (row stride ``m``). ``y`` enters with
    every series' y at row t0 - 1 and leaves with it at row end - 1; rows from
    ``store_from`` on are stored. The recurrence of _ewm_blocked, one step per row,
    vectorised across the series (``row``: m doubles of scratch)."""
    cdef Py_ssize_t t, j
    cdef double b = p.b, scale = p.coef.scale, norm = p.coef.norm, weight
    cdef const real* xr
    for t in range(t0, end):
        xr = x + t * m
        if t == 0 and not p.adjust:
            for j in range(m):
                y[j] = xr[j]
        else:
            for j in range(m):
                y[j] = fma(b, y[j], scale * xr[j])
        if t < store_from:
            continue
        if not p.adjust:
            _emit(out + t * m, y, m, p.stream)
            continue
        if t < p.ones_from:
            weight = -expm1((t + 1) * p.log_b)   # (1 - b^(t+1)), without cancellation
            for j in range(m):
                row[j] = y[j] * norm / weight
            _emit(out + t * m, row, m, p.stream)
        else:
            # the means straight from the sums (a row buffer in between measured up to 2x
            # slower, depending on where the buffers fall relative to ``out``)
            _emit_scaled(out + t * m, y, m, norm, p.stream)


cdef void _cols_superblock(const real* x, real* out, Py_ssize_t n, Py_ssize_t m,
                           Py_ssize_t s, double* y, bint fixup,
                           const EwmParams* p) noexcept nogil:
    """Rows of superblock ``s`` as in _ewm_superblock (``y``: the carries in, then out;
    followed by the scratch of _cols_stretch, or of _narrow_stretch for fewer than
    EWM_NARROW series)."""
    cdef Py_ssize_t t0 = s * p.super_rows, end = min(n, t0 + p.super_rows)
    cdef Py_ssize_t store_from = t0 + (p.fixup_rows if s > 0 else 0)
    if fixup:
        end = min(end, t0 + p.fixup_rows)
        store_from = t0
    if m < EWM_NARROW:
        _narrow_stretch(x, out, t0, end, m, y, y + m, store_from, p)
    else:
        _cols_stretch(x, out, t0, end, m, y, y + m, store_from, p)
    if p.stream:
        fm_stream_fence()


cdef inline void _cols_superblock_of(const _EwmJob* job, const real* x, real* out,
                                     Py_ssize_t s, int worker) noexcept nogil:
    cdef double* y = job.scratch + job.p.cols_scratch * worker
    cdef Py_ssize_t m = job.m
    if job.fixup:
        memcpy(y, job.ends + (s - 1) * m, m * sizeof(double))
        _cols_superblock(x, out, job.n, m, s, y, True, job.p)
    else:
        memset(y, 0, m * sizeof(double))
        _cols_superblock(x, out, job.n, m, s, y, False, job.p)
        memcpy(job.ends + s * m, y, m * sizeof(double))


cdef void _cols_superblock_task(void* ctx, ptrdiff_t chunk, int worker) noexcept nogil:
    """Superblock ``chunk`` (pass 1) or ``chunk + 1`` (pass 2) of _ewm_cols_blocked."""
    cdef const _EwmJob* job = <const _EwmJob*>ctx
    if job.single:
        _cols_superblock_of(job, <const float*>job.x, <float*>job.out, chunk + job.fixup,
                            worker)
    else:
        _cols_superblock_of(job, <const double*>job.x, <double*>job.out, chunk + job.fixup,
                            worker)


cdef bint _ewm_cols_blocked(const real* x, real* out, Py_ssize_t n, Py_ssize_t m,
                            double* scratch, double* ends, int nthreads,
                            const EwmParams* p) noexcept nogil:
    """``m`` series side by side without missing values, in superblocks of rows as
    _ewm_blocked (``scratch``: cols_scratch doubles per thread, ``ends``: m per
    superblock). Each thread writes whole rows, so a fresh result's pages are faulted in by
    the threads that fill them. False, with ``out`` partly written, when a value is NaN or
    inf. (Kept apart from _ewm_blocked: one driver for both measured 10-25% slower here.)"""
    cdef Py_ssize_t nsuper = (n + p.super_rows - 1) // p.super_rows, s, t, j
    cdef _EwmJob job
    _ewm_job(&job, x, out, n, m, scratch, ends, p)
    fm_parallel_for(_cols_superblock_task, &job, nsuper, nthreads)
    for j in range(nsuper * m):
        if not isfinite(ends[j]):
            return False
    for s in range(1, nsuper - 1):
        for j in range(m):
            ends[s * m + j] = fma(p.b_super_rows, ends[(s - 1) * m + j], ends[s * m + j])
    job.fixup = True
    fm_parallel_for(_cols_superblock_task, &job, nsuper - 1,
                    nthreads if (nsuper - 1) * p.fixup_rows * m >= 4 * EWM_SUPERBLOCK else 1)
    for t in range(min(p.min_periods - 1, n)):
        for j in range(m):
            out[t * m + j] = <real>NAN
    return True


# ---------------------------------------------------------------------------------------
# Drivers

cdef inline bint _ewm_blockable(Py_ssize_t size, Py_ssize_t min_size,
                                const EwmParams* p) noexcept nogil:
    # alpha == 1 (b == 0) and alpha below 1e-16 (b == 1) are pandas' degenerate cases:
    # pandas' loop handles them
    return size >= min_size and 0.0 < p.b < 1.0


cdef inline void _series_of(const _EwmJob* job, const real* x, real* out, Py_ssize_t i,
                            int worker) noexcept nogil:
    cdef Py_ssize_t n = job.n
    if not (_ewm_blockable(n, EWM_SERIES_BLOCKED_MIN, job.p)
            and _ewm_blocked(x + i * n, out + i * n, n, job.scratch + worker * EWM_BLOCK,
                             job.ends + 2 * worker, 1, job.p)):
        _ewm_exact(x + i * n, out + i * n, n, 1, 1, job.p)


cdef void _series_task(void* ctx, ptrdiff_t chunk, int worker) noexcept nogil:
    """Series ``chunk`` of _ewm_series_set, on one thread."""
    cdef const _EwmJob* job = <const _EwmJob*>ctx
    if job.single:
        _series_of(job, <const float*>job.x, <float*>job.out, chunk, worker)
    else:
        _series_of(job, <const double*>job.x, <double*>job.out, chunk, worker)


cdef void _ewm_series_set(const real* x, real* out, Py_ssize_t n, Py_ssize_t m,
                          double* scratch, double* ends, int nthreads,
                          const EwmParams* p) noexcept nogil:
    """``m`` contiguous series of ``n`` one after another. Long series use every thread
    each; shorter ones go one per thread (same result: a series never depends on it)."""
    cdef Py_ssize_t i
    cdef _EwmJob job
    if m == 1 or n >= 2 * EWM_SUPERBLOCK or nthreads == 1:
        for i in range(m):
            if not (_ewm_blockable(n, EWM_SERIES_BLOCKED_MIN, p)
                    and _ewm_blocked(x + i * n, out + i * n, n, scratch, ends, nthreads, p)):
                _ewm_exact(x + i * n, out + i * n, n, 1, 1, p)
    else:
        _ewm_job(&job, x, out, n, m, scratch, ends, p)
        fm_parallel_for(_series_task, &job, m, nthreads)


cdef void _ewm_run(const real* x, real* out, Py_ssize_t n, Py_ssize_t m, bint contiguous,
                   double* scratch, double* ends, int nthreads,
                   const EwmParams* p) noexcept nogil:
    if contiguous:
        _ewm_series_set(x, out, n, m, scratch, ends, nthreads, p)
    elif not (_ewm_blockable(n * m, EWM_COLS_BLOCKED_MIN, p)
              and _ewm_cols_blocked(x, out, n, m, scratch, ends, nthreads, p)):
        # series side by side with missing values: each thread streams its share of every
        # row (whole cache lines), when the result is the caller's ``out``. A fresh result
        # stays on one thread: two threads faulting the same new pages in were slower (17
        # vs 21 ms at 100k x 100), with ``out`` faster (10.5 vs 8.7 ms).
        if nthreads > 1 and p.into_out and m >= 16:
            _ewm_exact_columns(x, out, n, m, nthreads, p)
        else:
            _ewm_exact(x, out, n, m, m, p)


cdef void _columns_task(void* ctx, ptrdiff_t chunk, int worker) noexcept nogil:
    """Columns [chunk * width, (chunk + 1) * width) of _ewm_exact_columns."""
    cdef const _EwmJob* job = <const _EwmJob*>ctx
    cdef Py_ssize_t first = chunk * job.width, width = min(job.width, job.m - first)
    if job.single:
        _ewm_exact(<const float*>job.x + first, <float*>job.out + first, job.n, width, job.m,
                   job.p)
    else:
        _ewm_exact(<const double*>job.x + first, <double*>job.out + first, job.n, width,
                   job.m, job.p)


cdef void _ewm_exact_columns(const real* x, real* out, Py_ssize_t n, Py_ssize_t m,
                             int nthreads, const EwmParams* p) noexcept nogil:
    """_ewm_exact of ``m`` series side by side, split into ranges of columns (starting on
    64-byte boundaries of a row) run on ``nthreads``. The same bits for any split: a
    series' every step depends on that series alone (see _ewm_exact)."""
    cdef _EwmJob job
    _ewm_job(&job, x, out, n, m, NULL, NULL, p)
    # EWM_EXACT_SPLIT ranges (fixed by m: a thread that wakes late still finds some left);
    # 16 columns are 64 bytes of float32, 128 of float64
    job.width = ((m + EWM_EXACT_SPLIT - 1) // EWM_EXACT_SPLIT + 15) // 16 * 16
    fm_parallel_for(_columns_task, &job, (m + job.width - 1) // job.width, nthreads)


cdef inline bint _small_number(object v, double* out) noexcept:
    """A Python float, or an int (not a bool) that a double holds exactly, as a double."""
    if type(v) is float:
        out[0] = PyFloat_AS_DOUBLE(v)
        return True
    if type(v) is int and -(1 << 53) < <object>v < (1 << 53):
        out[0] = <double><long long>v
        return True
    return False


cdef bint _ewm_plain_args(object x, object com, object span, object halflife,
                          object alpha, object min_periods, object axis, object out,
                          double* com_, Py_ssize_t* min_periods_, int* axis_) except -1:
    """The common call, checked without Python: ``x`` a C-contiguous native float32/float64
    ndarray of 1 or 2 dims, one of com/span/alpha a number in range, ``min_periods`` and
    ``axis`` ints in range, ``out`` None or an ndarray like ``x`` not sharing its memory.
    True with the results of _validation.prepare_ewm_mean (same operations, same bits);
    False for anything else, which that function converts, or refuses with a message."""
    cdef cnp.ndarray xa, oa
    cdef double value
    cdef int ndim
    if not cnp.PyArray_CheckExact(x):
        return False
    xa = <cnp.ndarray>x
    ndim = cnp.PyArray_NDIM(xa)
    if not ((cnp.PyArray_TYPE(xa) == cnp.NPY_FLOAT or cnp.PyArray_TYPE(xa) == cnp.NPY_DOUBLE)
            and cnp.PyArray_ISNOTSWAPPED(xa) and cnp.PyArray_ISALIGNED(xa)
            and cnp.PyArray_IS_C_CONTIGUOUS(xa) and (ndim == 1 or ndim == 2)):
        return False
    if halflife is not None or (com is None) + (span is None) + (alpha is None) != 2:
        return False   # halflife: numpy's exp/log, as pandas, in the validator
    if com is not None:
        if not (_small_number(com, &value) and value >= 0.0 and isfinite(value)):
            return False
        com_[0] = value
    elif span is not None:
        if not (_small_number(span, &value) and value >= 1.0 and isfinite(value)):
            return False
        com_[0] = (value - 1.0) / 2.0
    else:
        if not (_small_number(alpha, &value) and 0.0 < value <= 1.0):
            return False
        com_[0] = (1.0 - value) / value
    if not (type(min_periods) is int and 0 <= <object>min_periods <= (1 << 62)
            and type(axis) is int and -ndim <= <object>axis < ndim):
        return False
    min_periods_[0] = max(<Py_ssize_t>min_periods, 1)
    axis_[0] = <int>axis + ndim if <int>axis < 0 else <int>axis
    if out is None:
        return True
    if not cnp.PyArray_CheckExact(out):
        return False
    oa = <cnp.ndarray>out
    return (cnp.PyArray_TYPE(oa) == cnp.PyArray_TYPE(xa) and cnp.PyArray_ISNOTSWAPPED(oa)
            and cnp.PyArray_ISALIGNED(oa) and cnp.PyArray_ISWRITEABLE(oa)
            and cnp.PyArray_IS_C_CONTIGUOUS(oa) and cnp.PyArray_NDIM(oa) == ndim
            and cnp.PyArray_CompareLists(cnp.PyArray_DIMS(oa), cnp.PyArray_DIMS(xa), ndim)
            and not _overlap(oa, xa))


def ewm_mean(x, *, com=None, span=None, halflife=None, alpha=None, adjust=True,
             ignore_na=False, min_periods=0, axis=0, out=None):
    """Exponentially weighted mean, equal to pandas ``ewm(...).mean()``.

    ``x`` is a 1-D series or a 2-D array of series: ``axis=0`` makes every column a series
    (as a DataFrame), ``axis=1`` every row. Give exactly one of ``com`` (>= 0), ``span``
    (>= 1), ``halflife`` (> 0) or ``alpha`` (0 < alpha <= 1); pandas' conversions
    ``alpha = 1/(1+com) = 2/(span+1) = 1 - exp(-ln 2/halflife)`` apply (through the centre of
    mass, as pandas rounds them). ``halflife`` with ``times`` is not supported.

    * ``adjust=True``: ``y_t = sum_i (1-alpha)^i x_{t-i} / sum_i (1-alpha)^i``, i.e. the
      zero-started EMA ``m_t = (1-alpha) m_{t-1} + alpha x_t`` divided by
      ``1 - (1-alpha)^(t+1)``: the bias-corrected EMA Adam uses.
    * ``adjust=False``: ``y_0 = x_0``, ``y_t = (1-alpha) y_{t-1} + alpha x_t``.
    * Missing values (NaN, and inf as pandas treats it) keep the previous mean; with
      ``ignore_na=False`` they still age the older weights, with ``ignore_na=True`` they are
      skipped. Results are NaN until ``min_periods`` (at least 1) values were observed.

    float32 input gives float32 (computed in float64, then rounded), float64 gives float64,
    integers and bools give float64. ``out``: a preallocated writeable C- or F-contiguous
    array of the result dtype and shape, not sharing memory with ``x``; returned.

    Series without missing values are computed by a blocked scan (eight steps at a time
    in one pass; superblocks scanned in parallel, then a carry fix-up with powers of
    ``1-alpha``), agreeing with pandas to ~1e-15 relative; other series by pandas' own
    loop. Results do not depend on the thread count. A fresh result of many MB costs the
    kernel's zeroing of its pages (longer than the scan itself): reuse ``out`` in loops
    (written with streaming stores from 16 MB on). Raises TypeError/ValueError, before
    writing anything, for bad input.
    """
    cdef EwmParams p
    cdef cnp.ndarray xa, oa
    cdef Py_ssize_t n, m, scratch_size, ends_size
    cdef bint contiguous
    cdef int nthreads
    cdef double* scratch = NULL
    cdef double* ends = NULL
    cdef double com_
    cdef Py_ssize_t min_periods_
    cdef int axis_
    if _ewm_plain_args(x, com, span, halflife, alpha, min_periods, axis, out,
                       &com_, &min_periods_, &axis_):
        xa = <cnp.ndarray>x
        oa = (cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa),
                                cnp.PyArray_TYPE(xa), 0) if out is None else <cnp.ndarray>out)
    else:
        xa, oa, com_, min_periods_, axis_ = _validation.prepare_ewm_mean(
            x, com, span, halflife, alpha, min_periods, axis, out)
    p.alpha = 1.0 / (1.0 + com_)
    p.min_periods = min_periods_
    p.adjust = bool(adjust)
    p.new_wt_fills = not p.adjust and com_ == 1.0
    p.ignore_na = bool(ignore_na)
    p.b = 1.0 - p.alpha
    p.new_wt = 1.0 if p.adjust else p.alpha
    p.into_out = out is not None
    p.stream = (p.into_out and cnp.PyArray_NBYTES(oa) >= EWM_STREAM_MIN_BYTES
                and <size_t>cnp.PyArray_DATA(oa) % 16 == 0)
    if cnp.PyArray_NDIM(xa) == 1:
        n, m, contiguous = cnp.PyArray_DIM(xa, 0), 1, True
    else:
        # series run along axis; they are contiguous when that axis is the fast one (or
        # when there is one series)
        n, m = cnp.PyArray_DIM(xa, axis_), cnp.PyArray_DIM(xa, 1 - axis_)
        contiguous = m == 1 or (axis_ == 1) == cnp.PyArray_IS_C_CONTIGUOUS(oa)
    if n == 0 or m == 0:
        return oa
    nthreads = _threads_for(n * m * EWM_NS_PER_VALUE)
    if (_ewm_blockable(n, EWM_SERIES_BLOCKED_MIN, &p) if contiguous
            else _ewm_blockable(n * m, EWM_COLS_BLOCKED_MIN, &p)):
        _ewm_tables(&p, n, m)
        if contiguous:
            # EWM_BLOCK per thread; one end per superblock, or two per thread when short
            # series run one per thread
            scratch_size = nthreads * EWM_BLOCK
            ends_size = max((n + EWM_SUPERBLOCK - 1) // EWM_SUPERBLOCK, 2 * <Py_ssize_t>nthreads)
        else:
            scratch_size = nthreads * p.cols_scratch
            ends_size = (n + p.super_rows - 1) // p.super_rows * m
        scratch = <double*>malloc(scratch_size * sizeof(double))
        ends = <double*>malloc(ends_size * sizeof(double))
        if scratch == NULL or ends == NULL:
            free(scratch)
            free(ends)
            raise MemoryError("ewm_mean: out of memory for the scan buffers")
    try:
        with nogil:
            if cnp.PyArray_TYPE(xa) == cnp.NPY_FLOAT:
                _ewm_run(<const float*>cnp.PyArray_DATA(xa), <float*>cnp.PyArray_DATA(oa),
                         n, m, contiguous, scratch, ends, nthreads, &p)
            else:
                _ewm_run(<const double*>cnp.PyArray_DATA(xa), <double*>cnp.PyArray_DATA(oa),
                         n, m, contiguous, scratch, ends, nthreads, &p)
    finally:
        free(scratch)
        free(ends)
    return oa
