# The multi-tensor driver (fastmomentum._multi, src/driver/_multi.pyx): work lists of
# element-wise steps, run through the numeric cores' table on one thread or several.

from fm_core_table cimport (EMA_F32, EMA_F64, FUSED_F32, FUSED_F64, MOMENTUM_F32,
                            MOMENTUM_F64, OP_EMA, OP_SGD_STEP, SGD_F32, SGD_F64, StepScalars,
                            WorkItem)
from fm_core_table cimport (EMA_BF16, EMA_F16, FUSED_BF16, FUSED_F16, MOMENTUM_BF16,
                            MOMENTUM_F16, ROUND_TORCH, SGD_BF16, SGD_F16)


cdef class WorkList:
    cdef WorkItem* items
    cdef Py_ssize_t count, total
    cdef StepScalars scalars     # shared by every item

    cdef WorkItem* append(self, Py_ssize_t size) noexcept
    cdef void run(self, int nthreads) noexcept


cdef void run_items(const StepScalars* s, const WorkItem* items, Py_ssize_t count,
                    Py_ssize_t total, int nthreads) noexcept
cdef int concurrent_step(str func) except -1
cdef int account(object optimizer, object velocities, bint first_step, object ema,
                 double decay) except -1
# clip-amp: gradient norms and clipping (see _multi.pyx)
cdef int account_norm(object optimizer, double total_norm, bint skipped) except -1
cdef double items_norm(const WorkItem* items, Py_ssize_t count, Py_ssize_t total,
                       bint inf_norm) except? -1.0
cdef double clip_coefficient(double total, double max_norm, bint f32) noexcept nogil
cdef bint all_f32(const WorkItem* items, Py_ssize_t count) noexcept nogil
cdef bint any_half(const WorkItem* items, Py_ssize_t count) noexcept nogil
cdef double finish_norm(double acc, bint inf_norm, bint f32) noexcept nogil


cdef inline void sgd_item(WorkItem* w, const StepScalars* s, bint is_f32, char* param,
                          const char* grad, char* velocity, char* average,
                          bint first_step) noexcept nogil:
    """Describe one buffer's step with the scalars ``s`` (``velocity``: unused without
    momentum, may be set later; ``average``: the EMA updated with the new weights in the
    same pass, or NULL)."""
    w.op = OP_SGD_STEP
    if average != NULL:
        w.kernel = FUSED_F32 if is_f32 else FUSED_F64
    elif s.sgd.momentum != 0.0:
        w.kernel = MOMENTUM_F32 if is_f32 else MOMENTUM_F64
    else:
        w.kernel = SGD_F32 if is_f32 else SGD_F64
    w.is_f32 = is_f32
    w.itemsize = 4 if is_f32 else 8
    w.first_step = first_step
    w.param = param
    w.grad = grad
    w.velocity = velocity if s.sgd.momentum != 0.0 else NULL
    w.average = average
    w.value = NULL
    w.low_bits = NULL   # mp-state: split master weights only


cdef inline void ema_item(WorkItem* w, bint is_f32, char* average,
                          const char* value) noexcept nogil:
    """Describe one buffer's ``average = decay*average + (1-decay)*value``."""
    w.op = OP_EMA
    w.kernel = EMA_F32 if is_f32 else EMA_F64
    w.is_f32 = is_f32
    w.itemsize = 4 if is_f32 else 8
    w.first_step = False
    w.param = NULL
    w.grad = NULL
    w.velocity = NULL
    w.average = average
    w.value = value
    w.low_bits = NULL   # mp-state: split master weights only


cdef inline void set_scalars(StepScalars* s, double lr, double momentum, double dampening,
                             double weight_decay, bint nesterov, bint maximize,
                             double decay) noexcept nogil:
    """The scalars of an SGD step (``decay``: of the fused EMA, if any)."""
    s.sgd.lr, s.sgd.momentum, s.sgd.dampening = lr, momentum, dampening
    s.sgd.weight_decay, s.sgd.nesterov, s.sgd.maximize = weight_decay, nesterov, maximize
    s.sgd.first_step = False    # per item: WorkItem.first_step
    s.decay = decay
    s.grad_coef = 1.0           # no clipping or unscaling (see fm_core_table.StepScalars)
    s.stores_grad = False       # grads read only


# ---------------------------------------------------------------------------------------
# mp-dtypes: bfloat16 / float16 items (fm_half_steps.pxd)

cdef enum StepDtype:
    DTYPE_F32, DTYPE_F64, DTYPE_BF16, DTYPE_F16


cdef inline void retype_item(WorkItem* w, StepDtype dtype) noexcept nogil:
    """Point an item described by sgd_item / ema_item at the cores of a 16-bit ``dtype``
    (float32 and float64 items are left as they are)."""
    cdef bint bf16 = dtype == DTYPE_BF16
    if dtype != DTYPE_BF16 and dtype != DTYPE_F16:
        return
    w.itemsize = 2
    if w.kernel == FUSED_F32:
        w.kernel = FUSED_BF16 if bf16 else FUSED_F16
    elif w.kernel == MOMENTUM_F32:
        w.kernel = MOMENTUM_BF16 if bf16 else MOMENTUM_F16
    elif w.kernel == SGD_F32:
        w.kernel = SGD_BF16 if bf16 else SGD_F16
    else:
        w.kernel = EMA_BF16 if bf16 else EMA_F16


cdef inline void set_rounding(StepScalars* s, int rounding, int torch_threads,
                              int torch_lanes, unsigned long long key) noexcept nogil:
    """How the call's 16-bit items round (see fm_half_steps.pxd)."""
    s.rounding, s.torch_threads, s.torch_lanes = rounding, torch_threads, torch_lanes
    s.stochastic_key = key
