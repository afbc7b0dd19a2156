# Gradient norms for global-norm clipping (fastmomentum._multi's items_norm): the sum of
# squares or the largest magnitude of one contiguous buffer, in a fixed order; numeric
# cores of each CPU target (CoreTable.sum_squares[GRAD_F32]...).
#
# Sums are in double over NORM_LANES fixed lanes (element i into lane i % NORM_LANES),
# the lanes combined pairwise at the end: the compiler vectorises the lanes without
# reassociating anything (-ffp-contract=off, no -ffast-math), so every build target and
# every thread count gives the same bits. A float32 square is exact in double. 16 lanes:
# in cache (41.6k float32) 3.1 us with AVX2 against 3.7 us with 8 lanes (5.7 us for 8
# lanes of SSE2, the default target); at 16M, 2.0 ms on one thread (memory).
#
# bfloat16 and float16 grads (split master weights' grads, 16-bit params) widen exactly
# to float32 and then double: the same lanes and order, so their norm is that of the
# widened float32 grads.
from libc.math cimport NAN, fabs

from fm_half cimport fm_bf16, fm_bf16_to_float, fm_f16, fm_f16_to_float

ctypedef fused grad_value:
    float
    double
    fm_bf16
    fm_f16

cdef enum:
    NORM_LANES = 16


cdef inline double _wide(const grad_value* x) noexcept nogil:
    if grad_value is fm_bf16:
        return fm_bf16_to_float(x.bits)
    elif grad_value is fm_f16:
        return fm_f16_to_float(x.bits)
    else:
        return x[0]


cdef inline double sum_squares(const grad_value* x, Py_ssize_t n) noexcept nogil:
    """sum(x[i]**2) in double, lane by lane."""
    cdef double lanes[NORM_LANES]
    cdef double value
    cdef Py_ssize_t i = 0, j, body = n - n % NORM_LANES
    for j in range(NORM_LANES):
        lanes[j] = 0.0
    while i < body:
        for j in range(NORM_LANES):
            value = _wide(&x[i + j])
            lanes[j] += value * value
        i += NORM_LANES
    for i in range(body, n):
        value = _wide(&x[i])
        lanes[i - body] += value * value
    for j in range(NORM_LANES // 2):
        lanes[j] += lanes[j + NORM_LANES // 2]
    return (((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
            + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])))


cdef inline double max_magnitude(const grad_value* x, Py_ssize_t n) noexcept nogil:
    """max(|x[i]|), NaN when any x[i] is NaN (as torch's inf-norm)."""
    cdef double largest = 0.0, value
    cdef bint nan = False
    cdef Py_ssize_t i
    for i in range(n):
        value = fabs(_wide(&x[i]))
        largest = value if value > largest else largest
        nan |= value != value
    return NAN if nan else largest


cdef inline double larger(double a, double b) noexcept nogil:
    """max(a, b), NaN when either is NaN (combines max_magnitude's results)."""
    return a if (a != a or a >= b) else b
