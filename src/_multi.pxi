# Multi-tensor apply: one call steps (or averages) a whole list of buffers.
#
# An entry point checks every buffer first (C-API macros; on failure the Python validator
# names the culprit), then describes each non-empty buffer as a WorkItem in one C array,
# and runs them all in one nogil OpenMP region whose threads split the TOTAL element count
# into equal contiguous ranges: a range may cover many small tensors or part of a big one,
# so one huge embedding and thousands of tiny biases balance alike. Every kernel is
# element-wise, so the split cannot change a bit of the result.
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport int32_t, int64_t, uintptr_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcmp

from fastmomentum.kernels cimport momentum_ema_kernel


ctypedef struct WorkItem:
    KernelCall call     # the step (or EMA) of this buffer, see _run_range
    Py_ssize_t size     # elements
    Py_ssize_t offset   # first element's index in the concatenation of all items
    char* average       # EMA average updated in the same pass (fused), or NULL
    double decay


cdef void _run_item_range(const WorkItem* w, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef const KernelCall* k = &w.call
    cdef Py_ssize_t n = stop - start
    cdef bint has_momentum = k.kernel == MOMENTUM_F32 or k.kernel == MOMENTUM_F64
    if w.average == NULL:
        _run_range(k, start, stop)
    elif k.kernel == SGD_F32 or k.kernel == MOMENTUM_F32:
        momentum_ema_kernel(<float*>k.out + start, <const float*>k.inp + start,
                            <float*>k.state + start if has_momentum else NULL,
                            <float*>w.average + start, n, <float>k.a, <float>k.b, <float>k.c,
                            <float>k.d, k.has_weight_decay, has_momentum, k.nesterov,
                            k.maximize, k.first_step, <float>w.decay, <float>(1.0 - w.decay))
    else:
        momentum_ema_kernel(<double*>k.out + start, <const double*>k.inp + start,
                            <double*>k.state + start if has_momentum else NULL,
                            <double*>w.average + start, n, k.a, k.b, k.c, k.d,
                            k.has_weight_decay, has_momentum, k.nesterov, k.maximize,
                            k.first_step, w.decay, 1.0 - w.decay)


cdef void _run_span(const WorkItem* items, Py_ssize_t count, Py_ssize_t begin,
                    Py_ssize_t end) noexcept nogil:
    """Run global elements [begin, end) of the concatenated items."""
    cdef Py_ssize_t lo = 0, hi = count - 1, mid, i
    while lo < hi:  # last item whose offset <= begin
        mid = (lo + hi + 1) // 2
        if items[mid].offset <= begin:
            lo = mid
        else:
            hi = mid - 1
    i = lo
    while i < count and items[i].offset < end:
        _run_item_range(&items[i], max(begin - items[i].offset, 0),
                        min(end - items[i].offset, items[i].size))
        i += 1


cdef void _run_items_parallel(const WorkItem* items, Py_ssize_t count, Py_ssize_t total,
                              int nthreads) noexcept nogil:
    cdef Py_ssize_t chunk = (total + nthreads - 1) // nthreads
    chunk = (chunk + CHUNK_ALIGN - 1) // CHUNK_ALIGN * CHUNK_ALIGN
    cdef Py_ssize_t t
    for t in prange(nthreads, num_threads=nthreads, schedule="static"):
        if t * chunk < total:
            _run_span(items, count, t * chunk, min(total, (t + 1) * chunk))


cdef void _run_items(const WorkItem* items, Py_ssize_t count) noexcept:
    """Run every item; threads share the total element count (see _threads_for)."""
    if count == 0:
        return
    cdef Py_ssize_t total = items[count - 1].offset + items[count - 1].size
    cdef int nthreads = _threads_for(total)
    if total < NOGIL_MIN_SIZE:
        _run_span(items, count, 0, total)
    elif nthreads == 1:
        with nogil:
            _run_span(items, count, 0, total)
    else:
        with nogil:
            _run_items_parallel(items, count, total, nthreads)


cdef class _WorkList:
    """An owned C array of WorkItems, appended in order (offsets accumulate)."""
    cdef WorkItem* items
    cdef Py_ssize_t count, total

    def __cinit__(self, Py_ssize_t capacity):
        self.items = <WorkItem*>malloc(max(capacity, 1) * sizeof(WorkItem))
        if self.items == NULL:
            raise MemoryError()
        self.count = 0
        self.total = 0

    def __dealloc__(self):
        free(self.items)

    cdef inline WorkItem* append(self, Py_ssize_t size) noexcept:
        cdef WorkItem* w = &self.items[self.count]
        w.size = size
        w.offset = self.total
        w.average = NULL
        self.count += 1
        self.total += size
        return w

    cdef inline void run(self) noexcept:
        _run_items(self.items, self.count)


cdef inline void _set_step(KernelCall* k, bint is_f32, char* param, const char* grad,
                           char* velocity, double lr, double momentum, double dampening,
                           double weight_decay, bint nesterov, bint maximize,
                           bint first_step) noexcept:
    """Describe one SGD step (same scalars as momentum_step)."""
    k.out = param
    k.inp = grad
    k.a = -lr
    k.d = weight_decay
    k.has_weight_decay = weight_decay != 0.0
    k.maximize = maximize
    k.first_step = first_step
    k.nesterov = nesterov
    if momentum == 0.0:
        k.kernel = SGD_F32 if is_f32 else SGD_F64
        k.state = NULL
        k.b = 0.0
        k.c = 1.0
    else:
        k.kernel = MOMENTUM_F32 if is_f32 else MOMENTUM_F64
        k.state = velocity
        k.b = momentum
        k.c = 1.0 - dampening


cdef inline bint _list_of(object x, Py_ssize_t n) noexcept:
    return type(x) is list and len(<list>x) == n


# ---------------------------------------------------------------------------------------
# NumPy entry points (used by fastmomentum.optim)

def multi_momentum_step(list params, grads, velocities, averages=None, *, lr, momentum=0.0,
                        dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False,
                        first_step=False, decay=0.0):
    """``momentum_step`` on every ``params[i]`` with ``grads[i]`` and ``velocities[i]``
    (lists; ``velocities`` may be None when ``momentum == 0``), in one call.

    With ``averages`` (a list), each ``averages[i]`` is then updated in the same pass as
    ``ema_update(averages[i], params[i], decay)`` with the new weights. Every argument is
    checked before anything is written (see ``_validation.check_multi_step``)."""
    cdef Py_ssize_t n = len(params), i
    cdef double lr_, momentum_, dampening_, weight_decay_, decay_
    cdef bint nesterov_ = nesterov, maximize_ = maximize, first_step_ = first_step
    cdef bint fused_ema = averages is not None
    cdef bint ok = False
    cdef cnp.ndarray p, g
    cdef object v, a
    try:
        lr_, momentum_, dampening_, weight_decay_, decay_ = (
            lr, momentum, dampening, weight_decay, decay)
        ok = (_sgd_hyper_ok(lr_, momentum_, dampening_, weight_decay_, nesterov_)
              and _finite_in(decay_, 0.0, 1.0)
              and _list_of(grads, n)
              and (momentum_ == 0.0 or _list_of(velocities, n))
              and (not fused_ema or _list_of(averages, n)))
        i = 0
        while ok and i < n:
            x = params[i]
            ok = (_lead(x, True)
                  and _like(grads[i], <cnp.ndarray>x, False)
                  and not _overlap(<cnp.ndarray>grads[i], <cnp.ndarray>x))
            if ok and momentum_ != 0.0:
                v = velocities[i]
                ok = (_like(v, <cnp.ndarray>x, True) and not _overlap(<cnp.ndarray>v, <cnp.ndarray>x)
                      and not _overlap(<cnp.ndarray>v, <cnp.ndarray>grads[i]))
            if ok and fused_ema:
                a = averages[i]
                ok = (_like(a, <cnp.ndarray>x, True) and not _overlap(<cnp.ndarray>a, <cnp.ndarray>x)
                      and not _overlap(<cnp.ndarray>a, <cnp.ndarray>grads[i])
                      and (momentum_ == 0.0 or not _overlap(<cnp.ndarray>a, <cnp.ndarray>velocities[i])))
            i += 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        _validation.check_multi_step(params, grads, velocities, averages, lr, momentum,
                                     dampening, weight_decay, nesterov, maximize, decay)
        raise AssertionError("multi_momentum_step: internal error, arguments refused in C "
                             "but accepted by the validator")
    cdef _WorkList work = _WorkList(n)
    cdef WorkItem* w
    for i in range(n):
        p = <cnp.ndarray>params[i]
        if cnp.PyArray_SIZE(p) == 0:
            continue
        g = <cnp.ndarray>grads[i]
        w = work.append(cnp.PyArray_SIZE(p))
        _set_step(&w.call, cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT, cnp.PyArray_BYTES(p),
                  cnp.PyArray_BYTES(g),
                  NULL if momentum_ == 0.0 else cnp.PyArray_BYTES(<cnp.ndarray>velocities[i]),
                  lr_, momentum_, dampening_, weight_decay_, nesterov_, maximize_, first_step_)
        if fused_ema:
            w.average = cnp.PyArray_BYTES(<cnp.ndarray>averages[i])
            w.decay = decay_
    work.run()


def multi_ema_update(list averages, values, decay):
    """``ema_update(averages[i], values[i], decay)`` for every i, in one call; every pair is
    checked before anything is written (see ``_validation.check_multi_ema``)."""
    cdef Py_ssize_t n = len(averages), i
    cdef double decay_
    cdef bint ok = False
    cdef cnp.ndarray a
    try:
        decay_ = decay
        ok = _finite_in(decay_, 0.0, 1.0) and _list_of(values, n)
        i = 0
        while ok and i < n:
            x = averages[i]
            ok = (_lead(x, True)
                  and _like(values[i], <cnp.ndarray>x, False)
                  and not _overlap(<cnp.ndarray>values[i], <cnp.ndarray>x))
            i += 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        _validation.check_multi_ema(averages, values, decay)
        raise AssertionError("multi_ema_update: internal error, arguments refused in C "
                             "but accepted by the validator")
    cdef _WorkList work = _WorkList(n)
    cdef WorkItem* w
    for i in range(n):
        a = <cnp.ndarray>averages[i]
        if cnp.PyArray_SIZE(a) == 0:
            continue
        w = work.append(cnp.PyArray_SIZE(a))
        w.call.kernel = EMA_F32 if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT else EMA_F64
        w.call.out = cnp.PyArray_BYTES(a)
        w.call.inp = cnp.PyArray_BYTES(<cnp.ndarray>values[i])
        w.call.a = decay_
        w.call.b = 1.0 - decay_
    work.run()
    return averages


include "_torch_multi.pxi"
