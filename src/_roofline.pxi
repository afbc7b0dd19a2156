# The roofline for the benchmark report (`python -m fastmomentum bench`): a private entry
# point running src/fm_stream.h, a plain C OpenMP loop with momentum_step's memory traffic,
# on the same number of threads the kernels use for that size. Not part of the API.

cdef extern from "fm_stream.h" nogil:
    void fm_stream_f32(float* p, const float* g, float* v, Py_ssize_t n, float scale,
                       int nthreads)
    void fm_stream_f64(double* p, const double* g, double* v, Py_ssize_t n, double scale,
                       int nthreads)


def roofline_stream(param, grad, velocity, double scale):
    """``velocity = scale*velocity + grad; param -= scale*velocity`` in plain C (private).

    The benchmark report's yardstick: reads three arrays and writes two, like
    :func:`momentum_step`, so bytes per second compare directly. ``param`` and ``velocity``
    are writeable, all three are distinct C-contiguous arrays of one float dtype and shape."""
    cdef Py_ssize_t n
    cdef int nthreads
    if not (_lead(param, True)
            and _like(grad, <cnp.ndarray>param, False)
            and _like(velocity, <cnp.ndarray>param, True)
            and not _overlap(<cnp.ndarray>grad, <cnp.ndarray>param)
            and not _overlap(<cnp.ndarray>velocity, <cnp.ndarray>param)
            and not _overlap(<cnp.ndarray>velocity, <cnp.ndarray>grad)):
        raise TypeError("roofline_stream: needs three distinct C-contiguous float32/float64 "
                        "arrays of one dtype and shape, `param` and `velocity` writeable")
    cdef char* p = cnp.PyArray_BYTES(<cnp.ndarray>param)
    cdef char* g = cnp.PyArray_BYTES(<cnp.ndarray>grad)
    cdef char* v = cnp.PyArray_BYTES(<cnp.ndarray>velocity)
    cdef bint single = cnp.PyArray_TYPE(<cnp.ndarray>param) == cnp.NPY_FLOAT
    n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    nthreads = _threads_for(n)
    if n < NOGIL_MIN_SIZE:
        _stream(p, g, v, n, scale, nthreads, single)
    else:
        with nogil:
            _stream(p, g, v, n, scale, nthreads, single)


cdef inline void _stream(char* p, const char* g, char* v, Py_ssize_t n, double scale,
                         int nthreads, bint single) noexcept nogil:
    if single:
        fm_stream_f32(<float*>p, <const float*>g, <float*>v, n, <float>scale, nthreads)
    else:
        fm_stream_f64(<double*>p, <const double*>g, <double*>v, n, scale, nthreads)
