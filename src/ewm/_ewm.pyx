# ewm_mean: pandas' exponentially weighted mean. The entry point: its arguments (the
# common call checked in C, anything else by fastmomentum._validation), then the plan
# (fm_ewm_plan.pxd) and its drivers (fm_ewm_drivers.pxd) over the numeric cores of this
# CPU's target (src/cores/fm_ewm_*.pxd).
cimport numpy as cnp
from cpython.float cimport PyFloat_AS_DOUBLE
from libc.math cimport isfinite
from libc.stdlib cimport free, malloc

from fm_checks cimport overlap
from fm_core_table cimport CoreTable, EwmParams, load_core_table
from fm_ewm_drivers cimport EwmRun, run_columns, run_series
from fm_ewm_plan cimport EWM_STREAM_MIN_BYTES, EwmPlan, plan_ewm

from fastmomentum import _target, _validation

cnp.import_array()

cdef CoreTable cores     # the numeric cores of this CPU's target


def _use_core_table(capsule):
    load_core_table(&cores, capsule)


_target.attach(_use_core_table)


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
            and not overlap(oa, xa))


def ewm_mean(x, *, com=None, span=None, halflife=None, alpha=None, adjust=True,
             ignore_na=False, min_periods=0, axis=0, out=None, times=None):
    """Exponentially weighted mean, equal to pandas ``ewm(...).mean()``.

    ``x`` is a 1-D series or a 2-D array of series: ``axis=0`` makes every column a series
    (as a DataFrame), ``axis=1`` every row. Give exactly one of ``com`` (>= 0), ``span``
    (>= 1), ``halflife`` (> 0) or ``alpha`` (0 < alpha <= 1); pandas' conversions
    ``alpha = 1/(1+com) = 2/(span+1) = 1 - exp(-ln 2/halflife)`` apply (through the centre of
    mass, as pandas rounds them). ``times``: pandas' time-weighted mean, computed by
    fastmomentum's ewm family (see :func:`fastmomentum.ewm_var`).

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
    cdef EwmPlan plan
    cdef EwmRun run
    cdef cnp.ndarray xa, oa
    cdef Py_ssize_t n, m
    cdef bint contiguous
    cdef double com_
    cdef Py_ssize_t min_periods_
    cdef int axis_
    if times is None and _ewm_plain_args(x, com, span, halflife, alpha, min_periods, axis,
                                         out, &com_, &min_periods_, &axis_):
        xa = <cnp.ndarray>x
        oa = (cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa),
                                cnp.PyArray_TYPE(xa), 0) if out is None else <cnp.ndarray>out)
    elif times is not None:
        import fastmomentum
        return fastmomentum._ewm_mean_times(x, times, com=com, span=span, halflife=halflife,
                                            alpha=alpha, adjust=adjust, ignore_na=ignore_na,
                                            min_periods=min_periods, axis=axis, out=out)
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
    plan_ewm(&plan, &p, n, m, contiguous, &cores)
    run.p, run.plan, run.n, run.m = &p, &plan, n, m
    run.x, run.out = cnp.PyArray_BYTES(xa), cnp.PyArray_BYTES(oa)
    if cnp.PyArray_TYPE(xa) == cnp.NPY_FLOAT:
        run.cores, run.itemsize = &cores.ewm_f32, 4
    else:
        run.cores, run.itemsize = &cores.ewm_f64, 8
    run.scratch = <double*>malloc(plan.scratch_size * sizeof(double)) if plan.scratch_size else NULL
    run.ends = <double*>malloc(plan.ends_size * sizeof(double)) if plan.ends_size else NULL
    try:
        if (plan.scratch_size and run.scratch == NULL) or (plan.ends_size and run.ends == NULL):
            raise MemoryError("ewm_mean: out of memory for the scan buffers")
        with nogil:
            if contiguous:
                run_series(&run)
            else:
                run_columns(&run)
    finally:
        free(run.scratch)
        free(run.ends)
    return oa
