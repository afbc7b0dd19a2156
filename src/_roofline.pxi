# The roofline for the benchmark report (`python -m fastmomentum bench`): a private entry
# point running src/fm_stream.h, a plain C loop with momentum_step's memory traffic, on the
# same threads and chunks the kernels use for that size. Not part of the API.

cdef extern from "fm_stream.h" nogil:
    void fm_stream_f32(float* p, const float* g, float* v, Py_ssize_t n, float scale)
    void fm_stream_f64(double* p, const double* g, double* v, Py_ssize_t n, double scale)


ctypedef struct _StreamJob:
    char* p
    const char* g
    char* v
    Py_ssize_t n
    double scale
    bint single


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
    cdef _StreamJob job
    job.p = cnp.PyArray_BYTES(<cnp.ndarray>param)
    job.g = cnp.PyArray_BYTES(<cnp.ndarray>grad)
    job.v = cnp.PyArray_BYTES(<cnp.ndarray>velocity)
    job.scale = scale
    job.single = cnp.PyArray_TYPE(<cnp.ndarray>param) == cnp.NPY_FLOAT
    job.n = n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    nthreads = _threads_for(n * 5 * (4 if job.single else 8) * NS_PER_BYTE)   # as momentum
    if n < NOGIL_MIN_SIZE:
        fm_parallel_for(_stream_task, &job, _chunks(n), nthreads)
    else:
        with nogil:
            fm_parallel_for(_stream_task, &job, _chunks(n), nthreads)


cdef void _stream_task(void* ctx, ptrdiff_t chunk, int worker) noexcept nogil:
    cdef const _StreamJob* job = <const _StreamJob*>ctx
    cdef Py_ssize_t start = chunk * PARALLEL_CHUNK
    cdef Py_ssize_t n = min(job.n, start + PARALLEL_CHUNK) - start
    if job.single:
        fm_stream_f32(<float*>job.p + start, <const float*>job.g + start,
                      <float*>job.v + start, n, <float>job.scale)
    else:
        fm_stream_f64(<double*>job.p + start, <const double*>job.g + start,
                      <double*>job.v + start, n, job.scale)
