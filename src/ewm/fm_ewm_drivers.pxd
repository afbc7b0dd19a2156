# ewm_mean's drivers: the plan's path run over superblocks, series or column ranges,
# through the numeric cores of this CPU's target (compiled once: fastmomentum._ewm).
# Every threaded loop is a chunk function over an EwmRun, run by run_chunks; chunks are
# fixed by position (superblock, series, column range), so results are bit-identical for
# any thread count and schedule.
from libc.math cimport NAN, fma, isfinite
from libc.string cimport memcpy, memset

from fastmomentum._threads cimport run_chunks, threads_for
from fm_core_table cimport EWM_BLOCK, EWM_SUPERBLOCK, EwmCores, EwmParams
from fm_ewm_plan cimport (EWM_COLUMN_RANGES, EWM_NS_PER_VALUE, EWM_PANDAS_LOOP,
                          EWM_SERIES_SCAN, EwmPlan)

ctypedef struct EwmRun:          # one call's work, the context of every chunk function
    const EwmCores* cores        # of the input's dtype
    const char* x
    char* out
    Py_ssize_t itemsize          # 4 or 8
    Py_ssize_t n, m
    double* scratch              # the plan's scratch_size doubles
    double* ends                 # the plan's ends_size doubles
    const EwmParams* p
    const EwmPlan* plan
    Py_ssize_t width             # split columns: columns per range


cdef inline void _missing_to_nan(const EwmRun* r, Py_ssize_t series_start) noexcept nogil:
    """NaN into the first min_periods - 1 rows of a scanned series (or frame)."""
    cdef Py_ssize_t t, count = min(r.p.min_periods - 1, r.n) * (r.m if not r.plan.contiguous
                                                               else 1)
    for t in range(count):
        if r.itemsize == 4:
            (<float*>r.out)[series_start + t] = <float>NAN
        else:
            (<double*>r.out)[series_start + t] = NAN


# ---------------------------------------------------------------------------------------
# Series scan: one series, superblocks on threads

ctypedef struct SeriesScan:
    const EwmRun* run
    const char* x
    char* out
    double* scratch              # EWM_BLOCK per worker
    double* ends                 # one per superblock


cdef inline void _series_pass1(void* ctx, Py_ssize_t s, int worker) noexcept nogil:
    cdef SeriesScan* c = <SeriesScan*>ctx
    c.ends[s] = c.run.cores.series_superblock(c.x, c.out, c.run.n, s, 0.0, False,
                                               c.scratch + worker * EWM_BLOCK, c.run.p)


cdef inline void _series_pass2(void* ctx, Py_ssize_t chunk, int worker) noexcept nogil:
    cdef SeriesScan* c = <SeriesScan*>ctx
    c.run.cores.series_superblock(c.x, c.out, c.run.n, chunk + 1, c.ends[chunk], True,
                                  c.scratch + worker * EWM_BLOCK, c.run.p)


cdef inline bint _scan_series(const EwmRun* r, Py_ssize_t i, double* scratch, double* ends,
                              int nthreads) noexcept nogil:
    """Series ``i`` by the scan, on ``nthreads``. False, with its ``out`` partly written,
    when it has a NaN or inf (or overflows): pandas' loop must take it."""
    cdef Py_ssize_t n = r.n, nsuper = (n + EWM_SUPERBLOCK - 1) // EWM_SUPERBLOCK, s
    cdef double carry
    cdef SeriesScan c
    c.run, c.scratch, c.ends = r, scratch, ends
    c.x, c.out = r.x + i * n * r.itemsize, r.out + i * n * r.itemsize
    # pass 1: every superblock from a zero carry, stored after its leading fixup_len values
    run_chunks(_series_pass1, &c, nsuper, nthreads)
    for s in range(nsuper):
        if not isfinite(ends[s]):
            return False
    # the true carry into each superblock, kept in ends[s - 1]
    carry = 0.0
    for s in range(nsuper - 1):
        carry = fma(r.p.b_superblock, carry, ends[s])
        ends[s] = carry
    # pass 2: the leading values of superblocks 1.. with their carry (a few blocks of each:
    # on threads only when that much work pays for them)
    run_chunks(_series_pass2, &c, nsuper - 1,
               min(nthreads, threads_for((nsuper - 1) * r.p.fixup_len * EWM_NS_PER_VALUE)))
    _missing_to_nan(r, i * n)
    return True


cdef inline void _one_series(const EwmRun* r, Py_ssize_t i, double* scratch, double* ends,
                             int nthreads) noexcept nogil:
    if not (r.plan.path == EWM_SERIES_SCAN and _scan_series(r, i, scratch, ends, nthreads)):
        r.cores.pandas_series(r.x + i * r.n * r.itemsize, r.out + i * r.n * r.itemsize, r.n,
                              r.p)


cdef inline void _series_chunk(void* ctx, Py_ssize_t i, int worker) noexcept nogil:
    cdef const EwmRun* r = <const EwmRun*>ctx
    _one_series(r, i, r.scratch + worker * EWM_BLOCK if r.scratch != NULL else NULL,
                r.ends + 2 * worker if r.ends != NULL else NULL, 1)


cdef inline void run_series(const EwmRun* r) noexcept nogil:
    """Contiguous series one after another: each on every thread, or (short ones) one per
    thread; the same result, a series never depends on it."""
    cdef Py_ssize_t i
    if r.plan.series_per_thread:
        run_chunks(_series_chunk, <void*>r, r.m, r.plan.nthreads)
    else:
        for i in range(r.m):
            _one_series(r, i, r.scratch, r.ends, r.plan.nthreads)


# ---------------------------------------------------------------------------------------
# Series side by side

cdef inline void _rows_pass1(void* ctx, Py_ssize_t s, int worker) noexcept nogil:
    cdef const EwmRun* r = <const EwmRun*>ctx
    cdef double* y = r.scratch + r.p.cols_scratch * worker
    memset(y, 0, r.m * sizeof(double))
    r.cores.rows_superblock(r.x, r.out, r.n, r.m, s, y, NULL, r.p)
    memcpy(r.ends + s * r.m, y, r.m * sizeof(double))


cdef inline void _rows_pass2(void* ctx, Py_ssize_t chunk, int worker) noexcept nogil:
    cdef const EwmRun* r = <const EwmRun*>ctx
    cdef double* y = r.scratch + r.p.cols_scratch * worker
    memcpy(y, r.ends + chunk * r.m, r.m * sizeof(double))
    r.cores.rows_superblock(r.x, r.out, r.n, r.m, chunk + 1, y, r.ends + chunk * r.m, r.p)


cdef inline bint _scan_columns(const EwmRun* r) noexcept nogil:
    """The columns scan, in superblocks of rows as the series scan. Each thread writes
    whole rows, so a fresh result's pages are faulted in by the threads that fill them.
    False, with ``out`` partly written, when a value is NaN or inf."""
    cdef Py_ssize_t m = r.m, nsuper = (r.n + r.p.super_rows - 1) // r.p.super_rows, s, j
    run_chunks(_rows_pass1, <void*>r, nsuper, r.plan.nthreads)
    for j in range(nsuper * m):
        if not isfinite(r.ends[j]):
            return False
    for s in range(1, nsuper - 1):
        for j in range(m):
            r.ends[s * m + j] = fma(r.p.b_super_rows, r.ends[(s - 1) * m + j], r.ends[s * m + j])
    run_chunks(_rows_pass2, <void*>r, nsuper - 1,
               min(r.plan.nthreads,
                   threads_for((nsuper - 1) * r.p.fixup_rows * m * EWM_NS_PER_VALUE)))
    _missing_to_nan(r, 0)
    return True


cdef inline void _column_range(void* ctx, Py_ssize_t k, int worker) noexcept nogil:
    cdef const EwmRun* r = <const EwmRun*>ctx
    r.cores.pandas_loop(r.x + k * r.width * r.itemsize, r.out + k * r.width * r.itemsize,
                        r.n, min(r.width, r.m - k * r.width), r.m, r.p)


cdef inline void run_columns(EwmRun* r) noexcept nogil:
    """Series side by side: the columns scan, or pandas' loop (also when the scan meets a
    missing value), split in column ranges across threads when the plan says so (the same
    bits for any split: a series' every step depends on that series alone)."""
    if r.plan.path != EWM_PANDAS_LOOP and _scan_columns(r):
        return
    if r.plan.split_columns:
        # EWM_COLUMN_RANGES ranges, fixed by m (a thread that wakes late still finds some
        # left), starting on 64-byte boundaries of a row: 16 float32 values, 128 bytes of
        # float64
        r.width = (r.m + EWM_COLUMN_RANGES - 1) // EWM_COLUMN_RANGES
        r.width = (r.width + 15) // 16 * 16
        run_chunks(_column_range, r, (r.m + r.width - 1) // r.width, r.plan.nthreads)
    else:
        r.cores.pandas_loop(r.x, r.out, r.n, r.m, r.m, r.p)
