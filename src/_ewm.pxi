# ewm_mean: pandas' exponentially weighted mean, included at the end of _kernels.pxi.
#
# Two compiled paths, both computing in float64 whatever the storage type:
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
#     chunk (EWM_CHUNK elements): scanned from zero four steps at a time,
#       y_j = b^4*y_{j-4} + v_j with v a 4-tap filter of u, EWM_LANES chunks side by side
#       (vectorised, 8 independent dependency chains instead of one); then each chunk gets
#       its carry-in c as y_j += c*b^(j+1) (a table, never a negative power);
#     block (EWM_LANES chunks): chunk carries c' = b^L*c + chunk end, serial, 1 in 136 steps;
#     superblock (EWM_SUPERBLOCK elements): scanned from zero in pass 1, in parallel.
#       The superblock carries then follow serially, and pass 2 redoes only the leading
#       blocks of each superblock where the carry still matters (b^offset >= 1e-30;
#       beyond, its effect is below 1e-30 of the values).
#   Everything is fixed by position and alpha, never by the thread count: results are
#   bit-identical for any number of threads. Pass 1 also finds missing values: a NaN or
#   inf makes its superblock's end non-finite, and the series goes to _ewm_exact.
from cython.parallel cimport parallel, threadid
from libc.math cimport NAN, expm1, fma, isfinite, log, pow
from cpython.float cimport PyFloat_AS_DOUBLE
from libc.stdlib cimport free, malloc

from fastmomentum.kernels cimport real

cdef extern from "fm_store.h" nogil:
    void fm_fixup_f64(double* out, const double* scan, const double* pw, double carry,
                      double norm, Py_ssize_t n, bint stream)
    void fm_fixup_f32(float* out, const double* scan, const double* pw, double carry,
                      double norm, Py_ssize_t n, bint stream)
    void fm_copy_f64(double* dst, const double* src, Py_ssize_t n, bint stream)
    void fm_copy_f64_to_f32(float* dst, const double* src, Py_ssize_t n, bint stream)
    void fm_stream_fence()

cdef enum:
    EWM_LANES = 8                          # chunks scanned side by side
    EWM_CHUNK = 136                        # elements per chunk (a multiple of 4)
    EWM_BLOCK = EWM_LANES * EWM_CHUNK      # 1088: block, scan buffer and output in L1
    EWM_COLS = 256                         # series side by side in _ewm_exact

cdef Py_ssize_t EWM_SUPERBLOCK = 240 * EWM_BLOCK   # 261120
# Below this length the blocked scan's tables cost more than the plain loop.
cdef Py_ssize_t EWM_BLOCKED_MIN = 8 * EWM_BLOCK
# A carry is dropped once its weight b^k falls below this (and table entries are flushed
# to zero below EWM_TINY, keeping denormals out of the loops).
cdef double EWM_NEGLIGIBLE = 1e-30
cdef double EWM_TINY = 1e-300
# A caller's ``out`` of at least this many bytes (half this machine's L3) is written with
# streaming stores (fm_store.h): it would not stay in cache anyway, and skipping the
# read-for-ownership saves one of three memory streams. Not a fresh result: the kernel
# zeroes its pages at the first write, leaving the lines in cache, where ordinary stores
# hit them and a streaming store would first evict them (measured: 10M series 13.9 ms
# plain vs 18.2 ms streaming, fresh; 7.5 vs 9.0 ms into a reused ``out``).
cdef Py_ssize_t EWM_STREAM_MIN_BYTES = 1 << 24


ctypedef struct EwmParams:
    double alpha, b, new_wt
    bint adjust, ignore_na
    bint into_out         # the result is the caller's ``out`` (not a fresh array)
    bint stream           # write results with streaming stores (then fence)
    bint new_wt_fills     # pandas 3, adjust=False, com == 1: new_wt = 1 - old_wt
    Py_ssize_t min_periods
    # blocked scan only
    double scale          # u_t = scale*x_t (alpha, or 1 when adjust)
    double log_b, b2, b3, b4, b_chunk, b_superblock
    Py_ssize_t fixup_blocks   # leading blocks of a superblock that need its carry
    Py_ssize_t ones_from      # from this t on, 1 - b^(t+1) rounds to 1
    double pw[EWM_CHUNK]      # b^(j+1)
    double one_minus_pw[EWM_CHUNK]   # 1 - b^(j+1), without cancellation


cdef inline void _emit(real* dst, const double* src, Py_ssize_t n, bint stream) noexcept nogil:
    """Store ``n`` finished results (rounded to float32 for float32 output)."""
    if real is double:
        fm_copy_f64(dst, src, n, stream)
    else:
        fm_copy_f64_to_f32(dst, src, n, stream)


cdef inline void _fixup(real* out, const double* scan, const double* pw, double carry,
                        double norm, bint stream) noexcept nogil:
    """One chunk's means: ``fma(carry, pw[j], scan[j]) * norm``, stored."""
    if real is double:
        fm_fixup_f64(out, scan, pw, carry, norm, EWM_CHUNK, stream)
    else:
        fm_fixup_f32(out, scan, pw, carry, norm, EWM_CHUNK, stream)


cdef inline double _flush(double v) noexcept nogil:
    return v if v >= EWM_TINY else 0.0


cdef void _ewm_tables(EwmParams* p) noexcept nogil:
    cdef Py_ssize_t j, h
    cdef double b = p.b
    p.scale = 1.0 if p.adjust else p.alpha
    p.log_b = log(b)
    # b^(j+1) by pow (within an ulp): the carries multiply by these tables over and over,
    # so a systematic error here would grow with 1/alpha. 1 - b^(j+1) (for the weight sums
    # near t = 0 only) = (1 - b^h) + b^h*(1 - b^(j+1-h)): positive terms, no cancellation.
    p.one_minus_pw[0] = 1.0 - b
    for j in range(EWM_CHUNK):
        p.pw[j] = pow(b, <double>(j + 1))
    for j in range(1, EWM_CHUNK):
        h = (j + 1) // 2
        p.one_minus_pw[j] = fma(p.pw[h - 1], p.one_minus_pw[j - h], p.one_minus_pw[h - 1])
    for j in range(EWM_CHUNK):
        p.pw[j] = _flush(p.pw[j])
    p.b2 = p.pw[1]
    p.b3 = p.pw[2]
    p.b4 = p.pw[3]
    p.b_chunk = p.pw[EWM_CHUNK - 1]
    p.b_superblock = _flush(pow(b, <double>EWM_SUPERBLOCK))
    # b^(k*BLOCK) >= NEGLIGIBLE for k < fixup_blocks; capped at the blocks of a superblock
    p.fixup_blocks = <Py_ssize_t>min(<double>(EWM_SUPERBLOCK // EWM_BLOCK),
                                     log(EWM_NEGLIGIBLE) / (p.log_b * EWM_BLOCK) + 1.0)
    # b^(t+1) < 2^-54 makes 1 - b^(t+1) round to 1
    p.ones_from = <Py_ssize_t>min(1e18, -37.5 / p.log_b + 1.0)


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

cdef double _ewm_block(const real* x, real* out, double* scan, Py_ssize_t t0, double carry,
                       bint store, const EwmParams* p) noexcept nogil:
    """One full block at global position ``t0`` entering with ``carry``; writes the means
    to ``out`` when ``store``. Returns the carry out (the scan value at the block's end)."""
    cdef double s[EWM_LANES][4]
    cdef double carry_in[EWM_LANES]
    cdef Py_ssize_t i, j, k, l, t
    cdef double b = p.b, b4 = p.b4, scale = p.scale, c, v, q, one_minus_q, norm = 1.0 - p.b
    cdef double f1 = p.scale * p.b, f2 = p.scale * p.b2, f3 = p.scale * p.b3
    cdef const real* xk
    cdef double* vk
    # The chunk scans y_j = b*y_{j-1} + u_j run four steps at a time so that they vectorise:
    # y_j = b^4*y_{j-4} + v_j with v_j = u_j + b*u_{j-1} + b^2*u_{j-2} + b^3*u_{j-3}, a
    # 4-tap filter of contiguous values, written to scan first; then EWM_LANES chunks run
    # side by side to hide the latency of the recurrence.
    for k in range(EWM_LANES):
        xk = x + k * EWM_CHUNK
        vk = scan + k * EWM_CHUNK
        vk[0] = scale * xk[0]
        vk[1] = fma(f1, xk[0], scale * xk[1])
        vk[2] = fma(f2, xk[0], fma(f1, xk[1], scale * xk[2]))
        for j in range(3, EWM_CHUNK):
            vk[j] = fma(f3, xk[j - 3], fma(f2, xk[j - 2], fma(f1, xk[j - 1], scale * xk[j])))
    if t0 == 0 and not p.adjust:
        # adjust=False starts at the first value: u_0 = x_0, not alpha*x_0
        v = <double>x[0] - scale * x[0]
        scan[0] = x[0]
        scan[1] = fma(b, v, scan[1])
        scan[2] = fma(p.b2, v, scan[2])
        scan[3] = fma(p.b3, v, scan[3])
    for k in range(EWM_LANES):
        for l in range(4):
            s[k][l] = scan[k * EWM_CHUNK + l]
    for i in range(1, EWM_CHUNK // 4):
        for k in range(EWM_LANES):
            for l in range(4):
                s[k][l] = fma(b4, s[k][l], scan[k * EWM_CHUNK + 4 * i + l])
                scan[k * EWM_CHUNK + 4 * i + l] = s[k][l]
    c = carry
    for k in range(EWM_LANES):
        carry_in[k] = c
        c = fma(p.b_chunk, c, s[k][3])
    if not store:
        return c
    for k in range(EWM_LANES):
        t = t0 + k * EWM_CHUNK
        if p.adjust and t < p.ones_from:
            # weight sum (1 - b^(t+j+1))/(1-b) = (1 - b^t) + b^t*(1 - b^(j+1)): two positive
            # terms (expm1, the table), so no cancellation near t = 0
            q = pow(b, <double>t)
            one_minus_q = -expm1(t * p.log_b)
            for j in range(EWM_CHUNK):
                v = fma(carry_in[k], p.pw[j], scan[k * EWM_CHUNK + j])
                scan[k * EWM_CHUNK + j] = v * norm / fma(q, p.one_minus_pw[j], one_minus_q)
            _emit(out + k * EWM_CHUNK, scan + k * EWM_CHUNK, EWM_CHUNK, p.stream)
        else:
            # adjust=False: the scan is the mean (times 1: no bit changes)
            _fixup(out + k * EWM_CHUNK, scan + k * EWM_CHUNK, p.pw, carry_in[k],
                   norm if p.adjust else 1.0, p.stream)
    return c


cdef double _ewm_tail(const real* x, real* out, Py_ssize_t n, Py_ssize_t t0, double carry,
                      bint store, const EwmParams* p) noexcept nogil:
    """The last, partial block (``n`` < EWM_BLOCK elements): the plain recurrence."""
    cdef Py_ssize_t j, t
    cdef double y = carry, norm = 1.0 - p.b
    for j in range(n):
        t = t0 + j
        y = x[j] if (t == 0 and not p.adjust) else fma(p.b, y, p.scale * x[j])
        if store:
            if not p.adjust:
                out[j] = <real>y
            elif t < p.ones_from:
                out[j] = <real>(y * norm / -expm1((t + 1) * p.log_b))
            else:
                out[j] = <real>(y * norm)
    return y


cdef double _ewm_superblock(const real* x, real* out, Py_ssize_t n, Py_ssize_t s,
                            Py_ssize_t nblocks, double carry, Py_ssize_t store_from,
                            double* scan, const EwmParams* p) noexcept nogil:
    """Blocks [0, nblocks) of superblock ``s`` of a series of ``n``, entering with ``carry``;
    blocks from ``store_from`` on are written. Returns the carry out."""
    cdef Py_ssize_t k, t0
    for k in range(nblocks):
        t0 = s * EWM_SUPERBLOCK + k * EWM_BLOCK
        if t0 + EWM_BLOCK <= n:
            carry = _ewm_block(x + t0, out + t0, scan, t0, carry, k >= store_from, p)
        else:
            carry = _ewm_tail(x + t0, out + t0, n - t0, t0, carry, k >= store_from, p)
    if p.stream:
        fm_stream_fence()
    return carry


cdef inline Py_ssize_t _blocks_in(Py_ssize_t n, Py_ssize_t s) noexcept nogil:
    cdef Py_ssize_t length = min(n - s * EWM_SUPERBLOCK, EWM_SUPERBLOCK)
    return (length + EWM_BLOCK - 1) // EWM_BLOCK


cdef bint _ewm_blocked(const real* x, real* out, Py_ssize_t n, double* scratch,
                       double* ends, int nthreads, const EwmParams* p) noexcept nogil:
    """The mean of one series by the blocked scan, on ``nthreads`` threads (``scratch``:
    EWM_BLOCK doubles per thread, ``ends``: one double per superblock). False, with ``out``
    partly written, when the series has a NaN or inf (or overflows): use _ewm_exact."""
    cdef Py_ssize_t nsuper = (n + EWM_SUPERBLOCK - 1) // EWM_SUPERBLOCK, s, t
    cdef double carry
    cdef int tid
    # pass 1: every superblock from a zero carry; its leading blocks wait for pass 2.
    # (Dynamic schedules: which thread runs a superblock never changes its result.)
    if nthreads > 1 and nsuper > 1:
        with parallel(num_threads=nthreads):
            tid = threadid()
            for s in prange(nsuper, schedule="dynamic"):
                ends[s] = _ewm_superblock(x, out, n, s, _blocks_in(n, s), 0.0,
                                          0 if s == 0 else p.fixup_blocks,
                                          scratch + tid * EWM_BLOCK, p)
    else:
        for s in range(nsuper):
            ends[s] = _ewm_superblock(x, out, n, s, _blocks_in(n, s), 0.0,
                                      0 if s == 0 else p.fixup_blocks, scratch, p)
    for s in range(nsuper):
        if not isfinite(ends[s]):
            return False
    # the true carry into each superblock, kept in ends[s - 1]
    carry = 0.0
    for s in range(nsuper - 1):
        carry = fma(p.b_superblock, carry, ends[s])
        ends[s] = carry
    # pass 2: the leading blocks of superblocks 1.. with their carry (on threads only when
    # it is more than a few superblocks' work: waking them costs more under load)
    if nthreads > 1 and (nsuper - 1) * p.fixup_blocks * EWM_BLOCK >= 4 * EWM_SUPERBLOCK:
        with parallel(num_threads=nthreads):
            tid = threadid()
            for s in prange(1, nsuper, schedule="dynamic"):
                _ewm_superblock(x, out, n, s, min(p.fixup_blocks, _blocks_in(n, s)),
                                ends[s - 1], 0, scratch + tid * EWM_BLOCK, p)
    else:
        for s in range(1, nsuper):
            _ewm_superblock(x, out, n, s, min(p.fixup_blocks, _blocks_in(n, s)),
                            ends[s - 1], 0, scratch, p)
    for t in range(min(p.min_periods - 1, n)):
        out[t] = <real>NAN
    return True


# ---------------------------------------------------------------------------------------
# Drivers

cdef inline bint _ewm_blockable(Py_ssize_t n, const EwmParams* p) noexcept nogil:
    # alpha == 1 (b == 0) and alpha below 1e-16 (b == 1) are pandas' degenerate cases: the
    # exact loop handles them
    return n >= EWM_BLOCKED_MIN and 0.0 < p.b < 1.0


cdef void _ewm_series_set(const real* x, real* out, Py_ssize_t n, Py_ssize_t m,
                          double* scratch, double* ends, int nthreads,
                          const EwmParams* p) noexcept nogil:
    """``m`` contiguous series of ``n`` one after another. Long series use every thread
    each; shorter ones go one per thread (same result: a series never depends on it)."""
    cdef Py_ssize_t i
    cdef int tid
    if m == 1 or n >= 2 * EWM_SUPERBLOCK or nthreads == 1:
        for i in range(m):
            if not (_ewm_blockable(n, p) and _ewm_blocked(x + i * n, out + i * n, n, scratch,
                                                          ends, nthreads, p)):
                _ewm_exact(x + i * n, out + i * n, n, 1, 1, p)
    else:
        with parallel(num_threads=nthreads):
            tid = threadid()
            for i in prange(m, schedule="dynamic"):
                if not (_ewm_blockable(n, p)
                        and _ewm_blocked(x + i * n, out + i * n, n,
                                         scratch + tid * EWM_BLOCK, ends + 2 * tid, 1, p)):
                    _ewm_exact(x + i * n, out + i * n, n, 1, 1, p)


cdef void _ewm_run(const real* x, real* out, Py_ssize_t n, Py_ssize_t m, bint contiguous,
                   double* scratch, double* ends, int nthreads,
                   const EwmParams* p) noexcept nogil:
    if contiguous:
        _ewm_series_set(x, out, n, m, scratch, ends, nthreads, p)
    else:
        # series side by side: each thread streams its share of every row (whole cache
        # lines), when the result is the caller's ``out``. A fresh result stays on one
        # thread: two threads faulting the same new pages in were slower (17 vs 21 ms at
        # 100k x 100), with ``out`` faster (10.5 vs 8.7 ms).
        if nthreads > 1 and p.into_out and m >= 16:
            _ewm_exact_columns(x, out, n, m, nthreads, p)
        else:
            _ewm_exact(x, out, n, m, m, p)


cdef void _ewm_exact_columns(const real* x, real* out, Py_ssize_t n, Py_ssize_t m,
                             int nthreads, const EwmParams* p) noexcept nogil:
    """_ewm_exact of ``m`` series side by side, split into column ranges across threads
    (starting on 64-byte boundaries of a row). The same bits for any split: a series'
    every step depends on that series alone (see _ewm_exact)."""
    cdef Py_ssize_t width = (m + nthreads - 1) // nthreads, t
    width = (width + 15) // 16 * 16   # 16 columns: 64 bytes of float32, 128 of float64
    for t in prange((m + width - 1) // width, num_threads=nthreads, schedule="static"):
        _ewm_exact(x + t * width, out + t * width, n, min(width, m - t * width), m, p)


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

    Series without missing values are computed by a blocked scan (independent chunks and a
    carry fix-up with powers of ``1-alpha``, OpenMP-threaded for long series), agreeing with
    pandas to ~1e-15 relative; other series by pandas' own loop. Results do not depend on
    the thread count. A fresh result of many MB costs the kernel's zeroing of its pages
    (about as long as the scan itself): reuse ``out`` in loops (written with streaming
    stores from 16 MB on). Raises TypeError/ValueError, before writing anything, for bad
    input.
    """
    cdef EwmParams p
    cdef cnp.ndarray xa, oa
    cdef Py_ssize_t n, m, nsuper
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
    p.stream = p.into_out and cnp.PyArray_NBYTES(oa) >= EWM_STREAM_MIN_BYTES
    if cnp.PyArray_NDIM(xa) == 1:
        n, m, contiguous = cnp.PyArray_DIM(xa, 0), 1, True
    else:
        # series run along axis; they are contiguous when that axis is the fast one
        contiguous = (axis_ == 1) == cnp.PyArray_IS_C_CONTIGUOUS(oa)
        n, m = cnp.PyArray_DIM(xa, axis_), cnp.PyArray_DIM(xa, 1 - axis_)
    if n == 0 or m == 0:
        return oa
    nthreads = _threads_for(n * m)
    if contiguous and _ewm_blockable(n, &p):
        _ewm_tables(&p)
        nsuper = (n + EWM_SUPERBLOCK - 1) // EWM_SUPERBLOCK
        scratch = <double*>malloc(nthreads * EWM_BLOCK * sizeof(double))
        # one per superblock, or two per thread when short series run one per thread
        ends = <double*>malloc(max(nsuper, 2 * <Py_ssize_t>nthreads) * sizeof(double))
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
