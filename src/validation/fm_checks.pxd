# Argument checks in C for the entry points: the NumPy C-API macros (a few ns), testing
# exactly what fastmomentum/_validation.py tests. An entry point runs them first; only when
# one fails does it call refused(), which lets the Python validator explain (it raises the
# error the NumPy baseline raises). Nothing is written before every check has passed.
cimport numpy as cnp
from libc.math cimport INFINITY


cdef inline int refused(str func, object validator, tuple args) except -1:
    """Raise the Python validator's error for arguments the C checks refused."""
    validator(*args)
    raise AssertionError(f"{func}: internal error, arguments refused in C but accepted "
                         f"by the validator")


cdef inline bint usable(object x, int typenum, bint writeable) noexcept:
    """A native, aligned, C-contiguous array of ``typenum`` (and writeable if asked)."""
    if not cnp.PyArray_Check(x):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>x
    return (cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)
            and (cnp.PyArray_ISWRITEABLE(a) or not writeable))


cdef inline bint lead(object x, bint writeable) noexcept:
    """The first array of a call: a usable float32 or float64 array (it fixes the dtype and
    shape the others must match)."""
    if not cnp.PyArray_Check(x):
        return False
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    return ((typenum == cnp.NPY_FLOAT or typenum == cnp.NPY_DOUBLE)
            and usable(x, typenum, writeable))


cdef inline bint like(object x, cnp.ndarray first, bint writeable) noexcept:
    """A usable array of the dtype and shape of the call's first array."""
    return (usable(x, cnp.PyArray_TYPE(first), writeable)
            and cnp.PyArray_SAMESHAPE(<cnp.ndarray>x, first))


cdef inline bint bytes_overlap(const char* a, Py_ssize_t na, const char* b,
                                Py_ssize_t nb) noexcept nogil:
    """The byte ranges [a, a + na) and [b, b + nb) share a byte."""
    return na > 0 and nb > 0 and a < b + nb and b < a + na


cdef inline bint overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    return bytes_overlap(cnp.PyArray_BYTES(a), cnp.PyArray_NBYTES(a),
                          cnp.PyArray_BYTES(b), cnp.PyArray_NBYTES(b))


cdef inline bint finite_in(double x, double low, double high) noexcept:
    # False for NaN, which fails both comparisons; high=inf still refuses inf through x-x.
    return low <= x <= high and x - x == 0.0


cdef inline bint sgd_hyper_ok(double lr, double momentum, double dampening,
                               double weight_decay, bint nesterov) noexcept:
    """torch.optim.SGD's hyper-parameter rules (see _validation.check_sgd_hyper)."""
    return (finite_in(lr, 0.0, INFINITY) and finite_in(momentum, 0.0, INFINITY)
            and finite_in(dampening, -INFINITY, INFINITY)
            and finite_in(weight_decay, 0.0, INFINITY)
            and not (nesterov and (momentum <= 0.0 or dampening != 0.0)))


cdef inline bint list_of(object x, Py_ssize_t n) noexcept:
    return type(x) is list and len(<list>x) == n

