# ewm_mean's plan: which path a call takes, its scratch sizes and the scans' tables,
# decided once, in plan_ewm, before any work (compiled once: fastmomentum._ewm).
#
# Paths (each computing in float64 whatever the storage type):
# * pandas' loop (aggregations.pyx ``ewm``), over up to EWM_COLS series side by side: any
#   input (missing values, ignore_na, alpha == 1 or below 1e-16, short series);
# * the series scan: contiguous series without missing values, each by the blocked scan in
#   superblocks (src/cores/fm_ewm_scan.pxd);
# * the columns scan: series side by side (a C-ordered frame along axis 0) without missing
#   values, the recurrence one row at a time across the series (src/cores/fm_ewm_rows.pxd);
# * few columns: the columns scan for fewer than EWM_NARROW series, each gathered a block at
#   a time and scanned as a series (its own superblock and scratch sizes).
# Each scan runs in superblocks: pass 1 scans them from a zero carry (on threads), the
# carries are chained, and pass 2 redoes each superblock's leading values while its carry
# matters (at least fixup_len, then block by block: carry_matters).
# A scan that meets a missing value (a superblock ending non-finite) gives that series (or
# the frame) to pandas' loop, whose bits do not depend on anything a scan wrote.
from libc.math cimport ceil, log, pow

from fastmomentum._threads cimport threads_for
from fm_core_table cimport EWM_BLOCK, EWM_NARROW, EWM_SUPERBLOCK, CoreTable, EwmParams

cdef enum:
    # The scans from this many values on (a series; series side by side): below, their
    # set-up costs more than pandas' loop saves (measured: a series of 64, 0.6-0.7 us
    # either way; of 8000, 30 us by the loop, 3-4 us by the scan).
    EWM_SERIES_SCAN_MIN = 128
    EWM_COLUMNS_SCAN_MIN = 8 * EWM_BLOCK
    # pandas' loop over series side by side splits the columns across threads only with
    # at least this many: a range starts on a 64-byte boundary of a row (16 float32
    # values), so fewer columns give one range, i.e. one thread.
    EWM_SPLIT_COLUMNS_MIN = 16
    # ... in this many ranges at most (fixed by the number of columns, not of threads)
    EWM_COLUMN_RANGES = 8
# Pass 2 redoes at least the values where a carry's weight b^k is above EWM_NEGLIGIBLE
# (a fixed length: pass 1 does not store them), and goes on while the carry's term matters
# (src/cores/fm_ewm_coefficients.pxd: carry_matters). EWM_NS_PER_VALUE: one thread's
# time per value of the scans, for threads_for (measured: a series of 262144 float64 into
# ``out`` in 71-74 us, one core busy or not).
cdef extern from *:
    """
    #define EWM_NEGLIGIBLE 1e-30
    #define EWM_NS_PER_VALUE 0.28
    """
    const double EWM_NEGLIGIBLE
    const double EWM_NS_PER_VALUE
# A caller's 16-byte aligned ``out`` of at least this many bytes (half this machine's L3)
# is written with streaming stores (fm_store.h, fm_scan.h): it would not stay in cache
# anyway, and skipping the read-for-ownership saves one of three memory streams. Not a
# fresh result: the kernel zeroes its pages at the first write, leaving the lines in
# cache, where ordinary stores hit them and a streaming store would first evict them
# (measured with the previous scan: 10M series 13.9 ms plain vs 18.2 ms streaming, fresh;
# 7.5 vs 9.0 ms into a reused ``out``; with fm_scan.h, fresh: no difference).
cdef enum:
    EWM_STREAM_MIN_BYTES = 1 << 24

cdef inline Py_ssize_t _whole_blocks(double values) noexcept nogil:
    return <Py_ssize_t>ceil(values / EWM_BLOCK) * EWM_BLOCK


cdef inline void _scan_tables(EwmParams* p, Py_ssize_t n, Py_ssize_t m,
                              const CoreTable* cores) noexcept nogil:
    """The scans' constants for ``m`` series of ``n`` (one after another, or side by
    side): the coefficients by the target's cores (fma instructions: through the portable
    build's libm, the 136 fma of the weight table cost ~0.3 us a call), the sizes here."""
    cdef double b = p.b, rows
    cores.ewm_coefficients(p)
    p.b_superblock = pow(b, <double>EWM_SUPERBLOCK)   # not flushed: the carries may be huge
    # b^fixup_len < NEGLIGIBLE, in whole blocks, at most a superblock
    p.fixup_len = EWM_BLOCK * <Py_ssize_t>min(<double>(EWM_SUPERBLOCK // EWM_BLOCK),
                                              log(EWM_NEGLIGIBLE) / (p.log_b * EWM_BLOCK) + 1.0)
    # rows: b^fixup_rows < NEGLIGIBLE; superblocks of at least EWM_SUPERBLOCK values and
    # 8 times that (so that pass 2 redoes at most an eighth)
    rows = min(<double>n, log(EWM_NEGLIGIBLE) / p.log_b + 1.0)
    p.fixup_rows = <Py_ssize_t>rows
    p.super_rows = <Py_ssize_t>min(<double>n, max(8.0 * rows, <double>(EWM_SUPERBLOCK // m + 1)))
    if p.few_columns:
        p.fixup_rows = _whole_blocks(rows)
        p.super_rows = _whole_blocks(<double>p.super_rows)
    p.b_super_rows = pow(b, <double>p.super_rows)
    p.cols_scratch = m + (3 * EWM_BLOCK if p.few_columns else m)
    # b^(t+1) < 2^-54 makes 1 - b^(t+1) round to 1
    p.ones_from = <Py_ssize_t>min(1e18, -37.5 / p.log_b + 1.0)
    p.weighted_until = ((p.ones_from + EWM_BLOCK - 1) // EWM_BLOCK * EWM_BLOCK
                        if p.adjust else 0)


cdef enum EwmPath:
    EWM_PANDAS_LOOP
    EWM_SERIES_SCAN
    EWM_COLUMNS_SCAN
    EWM_FEW_COLUMNS_SCAN

ctypedef struct EwmPlan:
    EwmPath path
    Py_ssize_t n, m            # m series of n values
    bint contiguous            # one after another (else side by side, row stride m)
    int nthreads
    # contiguous series shorter than two superblocks, several: one series per thread (else
    # each series on every thread, superblock by superblock)
    bint series_per_thread
    # pandas' loop over series side by side (the path, or the fallback of a columns scan):
    # column ranges across threads, when the result is the caller's ``out`` (a fresh
    # result stays on one thread: two threads faulting in the same new pages were slower,
    # 17 vs 21 ms at 100k x 100, while into ``out`` faster, 10.5 vs 8.7 ms)
    bint split_columns
    Py_ssize_t scratch_size    # doubles: per-thread scan buffers
    Py_ssize_t ends_size       # doubles: superblock ends (the carries)


cdef inline void plan_ewm(EwmPlan* plan, EwmParams* p, Py_ssize_t n, Py_ssize_t m,
                          bint contiguous, const CoreTable* cores) noexcept nogil:
    """Decide the path of ``m`` series of ``n`` values (n, m > 0) and fill its tables."""
    # alpha == 1 (b == 0) and alpha below 1e-16 (b == 1) are pandas' degenerate cases:
    # pandas' loop handles them
    cdef bint scannable = 0.0 < p.b < 1.0
    plan.n, plan.m, plan.contiguous = n, m, contiguous
    plan.nthreads = threads_for(n * m * EWM_NS_PER_VALUE)
    plan.series_per_thread = (contiguous and m > 1 and n < 2 * EWM_SUPERBLOCK
                              and plan.nthreads > 1)
    plan.split_columns = (not contiguous and plan.nthreads > 1 and p.into_out
                          and m >= EWM_SPLIT_COLUMNS_MIN)
    plan.scratch_size = plan.ends_size = 0
    p.few_columns = not contiguous and m < EWM_NARROW
    if contiguous and scannable and n >= EWM_SERIES_SCAN_MIN:
        plan.path = EWM_SERIES_SCAN
        _scan_tables(p, n, m, cores)
        # EWM_BLOCK per thread; one end per superblock, or two per thread when short
        # series run one per thread
        plan.scratch_size = plan.nthreads * EWM_BLOCK
        plan.ends_size = max((n + EWM_SUPERBLOCK - 1) // EWM_SUPERBLOCK,
                             2 * <Py_ssize_t>plan.nthreads)
    elif not contiguous and scannable and n * m >= EWM_COLUMNS_SCAN_MIN:
        plan.path = EWM_FEW_COLUMNS_SCAN if p.few_columns else EWM_COLUMNS_SCAN
        _scan_tables(p, n, m, cores)
        plan.scratch_size = plan.nthreads * p.cols_scratch
        plan.ends_size = (n + p.super_rows - 1) // p.super_rows * m
    else:
        plan.path = EWM_PANDAS_LOOP
