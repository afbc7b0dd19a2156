# ewm_mean's blocked scan of one series without missing values (fm_scan.h, eight steps at
# a time), a superblock at a time: the numeric core of the series scan, built once per CPU
# target. The superblocks' order, threads and carries are the driver's (fastmomentum._ewm).
from libc.math cimport expm1, fma, pow

from fastmomentum.kernels cimport real
from fm_core_table cimport EWM_BLOCK, EWM_CHUNK, EWM_SUPERBLOCK, EwmParams, fm_scan_coef
from fm_ewm_coefficients cimport carry_matters
from fm_ewm_store cimport _emit, fm_stream_fence

cdef extern from "fm_scan.h" nogil:
    double fm_scan_f64(const double* x, double* out, Py_ssize_t n, Py_ssize_t store_from,
                       double carry, const fm_scan_coef* c, bint seed, bint stream)
    double fm_scan_f32(const float* x, float* out, Py_ssize_t n, Py_ssize_t store_from,
                       double carry, const fm_scan_coef* c, bint seed, bint stream)
    double fm_scan_f32_raw(const float* x, double* out, Py_ssize_t n, Py_ssize_t store_from,
                           double carry, const fm_scan_coef* c, bint seed, bint stream)


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


cdef inline void _emit_weighted(real* out, double* scan, Py_ssize_t t0, Py_ssize_t n,
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


cdef inline double _ewm_stretch(const real* x, real* out, Py_ssize_t t0, Py_ssize_t end, double carry,
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


cdef inline double series_superblock(const real* x, real* out, Py_ssize_t n, Py_ssize_t s,
                                     double carry, bint fixup, double* scan, const EwmParams* p) noexcept nogil:
    """Superblock ``s``: in pass 1 (not ``fixup``) all of it from a zero carry, storing all
    but the leading fixup_len values (except in the first); in pass 2 those, with the
    true ``carry``. Returns the carry out."""
    cdef Py_ssize_t t0 = s * EWM_SUPERBLOCK, end = min(n, t0 + EWM_SUPERBLOCK), stop, nxt
    cdef double carry_in = carry
    if fixup:
        stop = min(end, t0 + p.fixup_len)
        carry = _ewm_stretch(x + t0, out + t0, t0, stop, carry, t0, scan, p)
        while stop < end and carry_matters(&carry, &carry_in, 1,
                                           pow(p.b, <double>(stop - t0))):
            nxt = min(end, stop + EWM_BLOCK)
            carry = _ewm_stretch(x + stop, out + stop, stop, nxt, carry, stop, scan, p)
            stop = nxt
    else:
        carry = _ewm_stretch(x + t0, out + t0, t0, end, carry,
                             t0 + (p.fixup_len if s > 0 else 0), scan, p)
    if p.stream:
        fm_stream_fence()
    return carry
