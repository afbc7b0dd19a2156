# The element-wise steps of one work item over [start, stop): the numeric core of
# momentum_step, ema_update and the multi-tensor driver, built once per CPU target (the
# loops themselves are fastmomentum/kernels.pxd's, the public C API).
from fastmomentum.kernels cimport SgdParams, ema_step, real, sgd_ema_step, sgd_step
from fm_core_table cimport OP_EMA, StepScalars, WorkItem


cdef inline void _item_range(real* param, const real* grad, real* velocity, real* average,
                             const real* value, const StepScalars* s, const WorkItem* w,
                             Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef Py_ssize_t n = stop - start
    cdef SgdParams sgd
    if w.op == OP_EMA:
        ema_step(average + start, value + start, n, s.decay)
        return
    sgd = s.sgd
    sgd.first_step = w.first_step
    if average == NULL:
        sgd_step(param + start, grad + start, velocity + start if velocity != NULL else NULL,
                 n, &sgd)
    else:
        sgd_ema_step(param + start, grad + start,
                     velocity + start if velocity != NULL else NULL, average + start, n,
                     &sgd, s.decay)


cdef inline void run_item_range(const StepScalars* s, const WorkItem* w, Py_ssize_t start,
                                Py_ssize_t stop) noexcept nogil:
    """Elements [start, stop) of item ``w`` (the bits of any other split of it)."""
    if w.is_f32:
        _item_range(<float*>w.param, <const float*>w.grad, <float*>w.velocity,
                    <float*>w.average, <const float*>w.value, s, w, start, stop)
    else:
        _item_range(<double*>w.param, <const double*>w.grad, <double*>w.velocity,
                    <double*>w.average, <const double*>w.value, s, w, start, stop)
