# The exponentially weighted family's value arithmetic (fastmomentum._ewm_family: pandas'
# ewm/ewmcov steps; its module docstring gives the recurrence): the moments' step and the
# results, shared by the family's per-value loops (compiled once) and by its row step
# across series side by side (``family_row``, built per CPU target: fm_make_table.pxd).
# No fma and -ffp-contract=off: every build computes the same IEEE multiplies and adds, so
# the AVX2 build's row step (4 series a vector instead of 2) gives the portable build's
# bits (tests/test_cpu_targets.py).
from libc.math cimport NAN, sqrt

from fastmomentum.kernels cimport real


# state fields (rows of the (NFIELDS, m) float64 state array)
cdef enum:
    MEAN_X, MEAN_Y, COV, OLD_WT, SUM_WT2, NOBS, DECAY, SEED, LEAD_DECAY, X1, Y1, VAR_X, VAR_Y,
    NFIELDS

cdef enum:
    # which recurrence; corr: pandas' three (cov(x, y), var(x), var(y): one weight state,
    # as pandas masks x and y jointly first) in one pass
    # (var: cov of x with itself, computing one mean: the same bits as KIND_COV with y = x)
    KIND_MEAN = 0, KIND_SUM = 1, KIND_COV = 2, KIND_CORR = 3, KIND_VAR = 4
    OUT_VALUE = 0, OUT_STD = 1                          # cov kind: the value, or zsqrt of it


ctypedef struct Moments:
    double mean_x, mean_y, cov, var_x, var_y


cdef inline double _comoment(double m, double mu, double mv, double nu, double nv, double xu,
                             double xv, double a, double c) noexcept nogil:
    """pandas' co-moment step, with the old and new means of both sides: one multiply and
    one add on its dependency chain."""
    return a * m + (a * ((mu - nu) * (mv - nv)) + c * ((xu - nu) * (xv - nv)))


cdef inline Moments _value_step(Moments v, double x, double y, double a, double c,
                                int kind) noexcept nogil:
    """The values' part of a step (weights ``a``, ``c`` given)."""
    cdef Moments r = v
    cdef double mn = a * v.mean_x + c * x, mny
    r.mean_x = mn if v.mean_x != x else v.mean_x
    if kind == KIND_VAR:
        r.mean_y = r.mean_x
        r.cov = _comoment(v.cov, v.mean_x, v.mean_x, r.mean_x, r.mean_x, x, x, a, c)
    elif kind >= KIND_COV:
        mny = a * v.mean_y + c * y
        r.mean_y = mny if v.mean_y != y else v.mean_y
        r.cov = _comoment(v.cov, v.mean_x, v.mean_y, r.mean_x, r.mean_y, x, y, a, c)
    if kind == KIND_CORR:
        r.var_x = _comoment(v.var_x, v.mean_x, v.mean_x, r.mean_x, r.mean_x, x, x, a, c)
        r.var_y = _comoment(v.var_y, v.mean_y, v.mean_y, r.mean_y, r.mean_y, y, y, a, c)
    return r


cdef inline double _zsqrt(double v) noexcept nogil:
    return sqrt(v) if not v < 0 else 0.0      # pandas' zsqrt (NaN stays NaN)


cdef inline double _finish(Moments v, double k, int kind, bint bias, bint std) noexcept nogil:
    """A result of the cov or corr kind from the moments and _bias_factor ``k``."""
    cdef double r
    if kind == KIND_CORR:
        return v.cov / _zsqrt(v.var_x * v.var_y)
    r = v.cov
    if not bias:
        r = k * r if k != 0.0 else NAN
    return _zsqrt(r) if std else r


cdef inline void _row_values(const real* x, const real* y, real* out, double* st,
                             Py_ssize_t m, Py_ssize_t j0, Py_ssize_t j1, double a, double c,
                             double k, bint nan_out, int kind, bint bias,
                             bint std) noexcept nogil:
    """The value operations of one row across series j0..j1 (``kind``, ``bias``, ``std``
    constants once inlined: a plain loop over contiguous arrays)."""
    cdef Py_ssize_t j
    cdef Moments mo
    cdef double v
    cdef double* mean_x = st + MEAN_X * m
    cdef double* mean_y = st + MEAN_Y * m
    cdef double* cov = st + COV * m
    cdef double* var_x = st + VAR_X * m
    cdef double* var_y = st + VAR_Y * m
    for j in range(j0, j1):
        if kind == KIND_SUM:
            v = a * mean_x[j] + x[j]          # a: the decay
            mean_x[j] = v
        else:
            mo.mean_x = mean_x[j]
            if kind >= KIND_COV:
                mo.mean_y, mo.cov = mean_y[j], cov[j]
            if kind == KIND_CORR:
                mo.var_x, mo.var_y = var_x[j], var_y[j]
            mo = _value_step(mo, x[j], y[j], a, c, kind)
            mean_x[j] = mo.mean_x
            if kind >= KIND_COV:
                mean_y[j], cov[j] = mo.mean_y, mo.cov
            if kind == KIND_CORR:
                var_x[j], var_y[j] = mo.var_x, mo.var_y
            v = _finish(mo, k, kind, bias, std) if kind >= KIND_COV else mo.mean_x
        out[j] = <real>(NAN if nan_out else v)


cdef inline bint row_finite(const real* x, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """No NaN or inf in x[j0:j1]: integer operations on the exponent bits only, an OR
    reduction the compiler vectorises (a float compare with NaN did not, nor the int flag
    of an integer compare mixed with 64-bit words: gcc 12 left the float64 loop scalar).
    The exponent field plus one at its lowest bit carries into the sign bit exactly when
    the field is all ones (NaN or inf). (In the portable build's SSE2 this check of x and
    y took as long as the var row step itself: sampled with perf, 100k x 100 ewm_var.)"""
    cdef Py_ssize_t j
    cdef const unsigned long long* b64 = <const unsigned long long*>x
    cdef const unsigned int* b32 = <const unsigned int*>x
    cdef unsigned long long e64 = 0x7ff0000000000000ULL, one64 = 0x0010000000000000ULL
    cdef unsigned long long bad64 = 0
    cdef unsigned int e32 = 0x7f800000U, one32 = 0x00800000U, bad32 = 0
    if real is double:
        for j in range(j0, j1):
            bad64 |= (b64[j] & e64) + one64
        return (bad64 >> 63) == 0
    else:
        for j in range(j0, j1):
            bad32 |= (b32[j] & e32) + one32
        return (bad32 >> 31) == 0


cdef inline void family_row(const real* x, const real* y, real* out, double* st,
                            Py_ssize_t m, Py_ssize_t j0, Py_ssize_t j1, double a, double c,
                            double k, bint nan_out, int kind, bint bias,
                            bint std) noexcept nogil:
    """The value operations of one row of series j0..j1 that share one weight state (``a``,
    ``c``: its shares; sum: ``a`` is the decay; ``k``: _bias_factor), from the state
    ``st`` of ``m`` series ((NFIELDS, m) float64) into ``out`` (NaN when ``nan_out``):
    the loop specialised for the call's kind (one branch a row)."""
    if kind == KIND_SUM:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_SUM, False, False)
    elif kind == KIND_MEAN:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_MEAN, False, False)
    elif kind == KIND_CORR:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_CORR, True, False)
    elif kind == KIND_VAR and bias:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_VAR, True, std)
    elif kind == KIND_VAR and std:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_VAR, False, True)
    elif kind == KIND_VAR:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_VAR, False, False)
    elif bias:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_COV, True, std)
    elif std:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_COV, False, True)
    else:
        _row_values(x, y, out, st, m, j0, j1, a, c, k, nan_out, KIND_COV, False, False)
