# The scans' coefficients (fm_scan.h) and adjust=True's weight table, from b = 1 - alpha,
# and the rule for how long a carry matters: part of the numeric cores (fma
# instructions), built once per CPU target.
from libc.math cimport fabs, fma, log, pow

from fm_core_table cimport EWM_CHUNK, EWM_POWERS, EwmParams

cdef extern from *:
    """
    #define EWM_TINY 1e-300
    #define EWM_CARRY_TOLERANCE 0x1p-60
    """
    # table entries are flushed to zero below this, keeping denormals out of the loops
    const double EWM_TINY
    # pass 2 of a scan goes on while a carry's term is not below this fraction of the sum
    # without it (1/256 of an ulp): see carry_matters
    const double EWM_CARRY_TOLERANCE


cdef inline double flush_tiny(double v) noexcept nogil:
    return v if v >= EWM_TINY else 0.0


cdef inline void scan_coefficients(EwmParams* p) noexcept nogil:
    """The scans' coefficients and weight table for ``p.b`` (see fm_scan.h)."""
    cdef Py_ssize_t j, h
    cdef double b = p.b
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
    p.coef.b2 = flush_tiny(pw[1])
    p.coef.b3 = flush_tiny(pw[2])
    p.coef.b4 = flush_tiny(pw[3])
    p.coef.b8 = flush_tiny(pw[7])
    p.coef.scale = 1.0 if p.adjust else p.alpha
    p.coef.f1 = p.coef.scale * p.coef.b
    p.coef.f2 = p.coef.scale * p.coef.b2
    p.coef.f3 = p.coef.scale * p.coef.b3
    p.coef.norm = 1.0 - b if p.adjust else 1.0
    p.raw = p.coef
    p.raw.norm = 1.0


cdef inline bint carry_matters(const double* y, const double* carry_in, Py_ssize_t m,
                               double b_k) noexcept nogil:
    """True when some series' carry term, ``carry_in*b_k`` in its sum ``y`` k steps on,
    is not below EWM_CARRY_TOLERANCE of the sum without it, ``y - carry_in*b_k``. That sum's
    magnitude is at most the b-weighted sum of |x| since the carry, which decays no faster
    than the carry term: once negligible against it, the term stays so."""
    cdef Py_ssize_t j
    cdef double term
    cdef bint matters = False
    for j in range(m):
        term = carry_in[j] * b_k
        matters = matters | (fabs(term) > EWM_CARRY_TOLERANCE * fabs(y[j] - term))
    return matters
