# Storing finished ewm_mean results (fm_store.h), rounded to the output's type. Part of the
# numeric cores: built once per CPU target.
from fastmomentum.kernels cimport real

cdef extern from "fm_store.h" nogil:
    void fm_copy_f64(double* dst, const double* src, Py_ssize_t n, bint stream)
    void fm_copy_f64_to_f32(float* dst, const double* src, Py_ssize_t n, bint stream)
    void fm_scale_f64(double* dst, const double* src, Py_ssize_t n, double scale, bint stream)
    void fm_scale_f64_to_f32(float* dst, const double* src, Py_ssize_t n, double scale,
                             bint stream)
    void fm_stream_fence()


cdef inline void _emit(real* dst, const double* src, Py_ssize_t n, bint stream) noexcept nogil:
    """Store ``n`` finished results (rounded to float32 for float32 output)."""
    if real is double:
        fm_copy_f64(dst, src, n, stream)
    else:
        fm_copy_f64_to_f32(dst, src, n, stream)


cdef inline void _emit_scaled(real* dst, const double* src, Py_ssize_t n, double scale,
                              bint stream) noexcept nogil:
    """Store ``n`` results times ``scale`` (one rounding, then to float32 for float32)."""
    if real is double:
        fm_scale_f64(dst, src, n, scale, stream)
    else:
        fm_scale_f64_to_f32(dst, src, n, scale, stream)

