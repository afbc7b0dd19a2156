# Argument checks in C for the entry points: the NumPy C-API macros (a few ns), testing
# exactly what fastmomentum/_validation.py tests. An entry point runs them first; only when
# one fails does it call refused(), which lets the Python validator explain (it raises the
# error the NumPy baseline raises). Nothing is written before every check has passed.
cimport numpy as cnp
from cpython.complex cimport PyComplex_Check
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_AsDouble, PyFloat_CheckExact
from cpython.object cimport PyObject_TypeCheck, PyTypeObject
from libc.math cimport INFINITY

cdef extern from *:
    """
    /* NumPy's types the checks need, set once per module by import_checks() */
    static PyTypeObject* fm_memmap_type = NULL;      /* numpy.memmap */
    static PyTypeObject* fm_complex_scalar = NULL;   /* numpy.complexfloating */
    static void fm_set_check_types(PyObject* memmap, PyObject* complex_scalar) {
        Py_INCREF(memmap);
        Py_INCREF(complex_scalar);
        fm_memmap_type = (PyTypeObject*)memmap;
        fm_complex_scalar = (PyTypeObject*)complex_scalar;
    }
    """
    PyTypeObject* fm_memmap_type
    PyTypeObject* fm_complex_scalar
    void fm_set_check_types(object memmap, object complex_scalar)


cdef inline int import_checks() except -1:
    """Once per module at import (as cnp.import_array): the NumPy types the checks need."""
    import numpy
    fm_set_check_types(numpy.memmap, numpy.complexfloating)
    return 0


cdef inline int refused(str func, object validator, tuple args) except -1:
    """Raise the Python validator's error for arguments the C checks refused."""
    validator(*args)
    raise AssertionError(f"{func}: internal error, arguments refused in C but accepted "
                         f"by the validator")


cdef inline bint plain_array(object x) noexcept:
    """An ndarray whose in-place arithmetic is ndarray's: the exact type (one pointer
    compare) or np.memmap. Other subclasses (np.ma.MaskedArray keeps masked entries, units,
    np.matrix) are refused: see _validation.plain_array."""
    return cnp.PyArray_CheckExact(x) or (fm_memmap_type != NULL
                                         and PyObject_TypeCheck(x, fm_memmap_type))


cdef inline bint usable_array(cnp.ndarray a, int typenum, bint writeable) noexcept:
    """``a`` (a plain array) is native, aligned, C-contiguous, of ``typenum`` (and
    writeable if asked)."""
    return (cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)
            and (cnp.PyArray_ISWRITEABLE(a) or not writeable))


cdef inline bint usable(object x, int typenum, bint writeable) noexcept:
    """A native, aligned, C-contiguous plain array of ``typenum`` (and writeable if
    asked)."""
    return plain_array(x) and usable_array(<cnp.ndarray>x, typenum, writeable)


# ---------------------------------------------------------------------------------------
# mp-dtypes: ml_dtypes.bfloat16, a user-defined NumPy dtype; its type number is looked up
# once, the first time an array of a user-defined dtype comes (ml_dtypes is imported only
# then: it is an optional dependency). -1: not looked up yet; 0: no ml_dtypes.
cdef extern from *:
    """
    static int fm_bfloat16_typenum = -1;
    """
    int fm_bfloat16_typenum


cdef inline int lookup_bfloat16() noexcept:
    global fm_bfloat16_typenum
    try:
        import numpy
        import ml_dtypes
        fm_bfloat16_typenum = numpy.dtype(ml_dtypes.bfloat16).num
    except Exception:   # not installed (or broken): no array is bfloat16
        fm_bfloat16_typenum = 0
    return fm_bfloat16_typenum


cdef inline bint is_bfloat16(int typenum) noexcept:
    """``typenum`` is ml_dtypes.bfloat16's."""
    if not cnp.PyTypeNum_ISUSERDEF(typenum):
        return False
    return typenum == (fm_bfloat16_typenum if fm_bfloat16_typenum >= 0 else lookup_bfloat16())


cdef inline bint lead(object x, bint writeable) noexcept:
    """The first array of a call: a usable float32, float64, float16 or bfloat16 array (it
    fixes the dtype and shape the others must match)."""
    if not plain_array(x):
        return False
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    return ((typenum == cnp.NPY_FLOAT or typenum == cnp.NPY_DOUBLE
             or typenum == cnp.NPY_FLOAT16 or is_bfloat16(typenum))
            and usable_array(<cnp.ndarray>x, typenum, writeable))


cdef inline bint like(object x, cnp.ndarray first, bint writeable) noexcept:
    """A usable array of the dtype and shape of the call's first array."""
    return (usable(x, cnp.PyArray_TYPE(first), writeable)
            and cnp.PyArray_SAMESHAPE(<cnp.ndarray>x, first))


cdef inline bint bytes_overlap(const char* a, Py_ssize_t na, const char* b,
                                Py_ssize_t nb) noexcept nogil:
    """The byte ranges [a, a + na) and [b, b + nb) share a byte."""
    return na > 0 and nb > 0 and a < b + nb and b < a + na


cdef inline Py_ssize_t array_nbytes(cnp.ndarray a) noexcept:
    """PyArray_NBYTES without its call to PyArray_MultiplyList: the three overlap checks of
    a 16-element momentum_step spent ~200 instructions (~25 ns) there."""
    cdef Py_ssize_t n = cnp.PyArray_ITEMSIZE(a), i
    cdef const cnp.npy_intp* dims = cnp.PyArray_DIMS(a)
    for i in range(cnp.PyArray_NDIM(a)):
        n *= dims[i]
    return n


cdef inline bint overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    return bytes_overlap(cnp.PyArray_BYTES(a), array_nbytes(a),
                          cnp.PyArray_BYTES(b), array_nbytes(b))


cdef inline double real_number(object x) except? -1.0:
    """``x`` as a double, as Cython converts it (a Python float read directly), but
    TypeError for a complex number: NumPy's complex scalars would convert with only a
    warning, dropping the imaginary part."""
    if PyFloat_CheckExact(x):
        return PyFloat_AS_DOUBLE(x)
    if PyComplex_Check(x) or (fm_complex_scalar != NULL
                              and PyObject_TypeCheck(x, fm_complex_scalar)):
        raise TypeError("complex")  # the validator explains
    return PyFloat_AsDouble(x)


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


cdef inline int bfloat16_typenum() noexcept:
    """ml_dtypes.bfloat16's NumPy type number, or -1 when ml_dtypes is not installed."""
    cdef int typenum = fm_bfloat16_typenum if fm_bfloat16_typenum >= 0 else lookup_bfloat16()
    return typenum if typenum > 0 else -1
