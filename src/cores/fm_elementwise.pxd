# The element-wise steps of one work item over [start, stop): the numeric cores of
# momentum_step, ema_update and the multi-tensor driver, built once per CPU target (the
# loops themselves are fastmomentum/kernels.pxd's, the public C API). One small function
# per step and dtype, each its own table entry (WorkItem.kernel): compiled apart, each loop
# gets the compiler's whole unswitching budget (through one function for all, the loops ran
# 12% more instructions per element: callgrind, fm.SGD on 20 arrays).
from fastmomentum.kernels cimport (SgdParams, ema_step, real, sgd_ema_step_scaled_by,
                                   sgd_step_scaled_by)
from fm_core_table cimport StepScalars, WorkItem


cdef inline SgdParams _item_sgd(const StepScalars* s, const WorkItem* w) noexcept nogil:
    cdef SgdParams sgd = s.sgd
    sgd.first_step = w.first_step
    return sgd


# Each takes the item's first written buffer typed (``w.param``, or ``w.average`` for an
# EMA): the table holds their float and double specialisations (fm_make_table.pxd).

cdef inline void sgd_range(real* param, const StepScalars* s, const WorkItem* w,
                           Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """An SGD step with momentum 0."""
    cdef SgdParams sgd = _item_sgd(s, w)
    # write-back (s.stores_grad): tested once per range, and only when the grads scale
    sgd_step_scaled_by(param + start, <const real*>w.grad + start, NULL, stop - start, &sgd,
                       s.grad_coef, s.stores_grad)


cdef inline void momentum_range(real* param, const StepScalars* s, const WorkItem* w,
                                Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef SgdParams sgd = _item_sgd(s, w)
    sgd_step_scaled_by(param + start, <const real*>w.grad + start, <real*>w.velocity + start,
                       stop - start, &sgd, s.grad_coef, s.stores_grad)


cdef inline void fused_range(real* param, const StepScalars* s, const WorkItem* w,
                             Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """An SGD step, then the EMA ``w.average`` of the new weights, in one pass."""
    cdef SgdParams sgd = _item_sgd(s, w)
    sgd_ema_step_scaled_by(param + start, <const real*>w.grad + start,
                           <real*>w.velocity + start if w.velocity != NULL else NULL,
                           <real*>w.average + start, stop - start, &sgd, s.decay, s.grad_coef,
                           s.stores_grad)


cdef inline void ema_range(real* average, const StepScalars* s, const WorkItem* w,
                           Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    ema_step(average + start, <const real*>w.value + start, stop - start, s.decay)
