# The reference loop of the benchmark report (`python -m fastmomentum bench`): a private
# entry point running src/reference/fm_stream.h, a plain C loop with momentum_step's memory
# traffic, on the threads (and in the chunks) the kernels use for that size. Compiled
# once, for the default target. Not part of the API.
cimport numpy as cnp
from libc.stdint cimport uint16_t

from fastmomentum._threads cimport (NOGIL_MIN_SIZE, PARALLEL_CHUNK, run_chunks, streaming_ns,
                                    threads_for)
from fm_checks cimport import_checks, lead, like, overlap

cnp.import_array()
import_checks()

cdef extern from "fm_stream.h" nogil:
    void fm_stream_f32(float* p, const float* g, float* v, Py_ssize_t n, float scale)
    void fm_stream_f64(double* p, const double* g, double* v, Py_ssize_t n, double scale)
    void fm_stream_bf16(uint16_t* p, const uint16_t* g, uint16_t* v, Py_ssize_t n,
                        float scale)


ctypedef struct Stream:          # run_chunks' context: chunks of PARALLEL_CHUNK elements
    char* p
    const char* g
    char* v
    Py_ssize_t n
    double scale
    int itemsize          # 4, 8 or 2 (bfloat16)


cdef void _stream_chunk(void* ctx, Py_ssize_t c, int worker) noexcept nogil:
    cdef const Stream* s = <const Stream*>ctx
    cdef Py_ssize_t start = c * PARALLEL_CHUNK, n = min(s.n, start + PARALLEL_CHUNK) - start
    if s.itemsize == 2:
        fm_stream_bf16(<uint16_t*>s.p + start, <const uint16_t*>s.g + start,
                       <uint16_t*>s.v + start, n, <float>s.scale)
    elif s.itemsize == 4:
        fm_stream_f32(<float*>s.p + start, <const float*>s.g + start, <float*>s.v + start, n,
                      <float>s.scale)
    else:
        fm_stream_f64(<double*>s.p + start, <const double*>s.g + start, <double*>s.v + start,
                      n, s.scale)


def roofline_stream(param, grad, velocity, double scale):
    """``velocity = scale*velocity + grad; param -= scale*velocity`` in plain C (private).

    The benchmark report's reference loop: reads three arrays and writes two, like
    :func:`momentum_step`, so bytes per second compare directly. ``param`` and ``velocity``
    are writeable, all three are distinct C-contiguous arrays of one float dtype and shape
    (float32, float64 or bfloat16: 10 bytes an element, the bfloat16 step's traffic)."""
    cdef Stream s
    cdef int nthreads
    if not (lead(param, True)
            and like(grad, <cnp.ndarray>param, False)
            and like(velocity, <cnp.ndarray>param, True)
            and not overlap(<cnp.ndarray>grad, <cnp.ndarray>param)
            and not overlap(<cnp.ndarray>velocity, <cnp.ndarray>param)
            and not overlap(<cnp.ndarray>velocity, <cnp.ndarray>grad)):
        raise TypeError("roofline_stream: needs three distinct C-contiguous float32/float64/"
                        "bfloat16 arrays of one dtype and shape, `param` and `velocity` "
                        "writeable")
    if cnp.PyArray_TYPE(<cnp.ndarray>param) == cnp.NPY_FLOAT16:
        raise TypeError("roofline_stream: float16 has no reference loop (bfloat16 moves the "
                        "same bytes)")
    s.p = cnp.PyArray_BYTES(<cnp.ndarray>param)
    s.g = cnp.PyArray_BYTES(<cnp.ndarray>grad)
    s.v = cnp.PyArray_BYTES(<cnp.ndarray>velocity)
    s.itemsize = cnp.PyArray_ITEMSIZE(<cnp.ndarray>param)
    s.scale = scale
    s.n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    nthreads = threads_for(streaming_ns(s.n * 5.0 * s.itemsize))  # as momentum
    if s.n < NOGIL_MIN_SIZE:
        _stream_chunk(&s, 0, 0)
    else:
        with nogil:
            run_chunks(_stream_chunk, &s, (s.n + PARALLEL_CHUNK - 1) // PARALLEL_CHUNK,
                       nthreads)
