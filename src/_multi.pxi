# Multi-tensor apply: one call steps (or averages) a whole list of buffers.
#
# An entry point checks every buffer first (C-API macros; on failure the Python validator
# names the culprit), then describes each non-empty buffer as a WorkItem in one C array,
# and runs them all in one nogil parallel loop (fm_pool.h) over fixed chunks of the TOTAL
# element count: a chunk may cover many small tensors or part of a big one,
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


ctypedef struct _ItemsJob:
    const WorkItem* items
    Py_ssize_t count, total


cdef void _items_task(void* ctx, ptrdiff_t chunk, int worker) noexcept nogil:
    cdef const _ItemsJob* job = <const _ItemsJob*>ctx
    cdef Py_ssize_t start = chunk * PARALLEL_CHUNK
    _run_span(job.items, job.count, start, min(job.total, start + PARALLEL_CHUNK))


cdef void _run_items_parallel(const WorkItem* items, Py_ssize_t count, Py_ssize_t total,
                              int nthreads) noexcept nogil:
    cdef _ItemsJob job
    job.items = items
    job.count = count
    job.total = total
    fm_parallel_for(_items_task, &job, _chunks(total), nthreads)


cdef void _run_items(const WorkItem* items, Py_ssize_t count, Py_ssize_t total,
                     int nthreads) noexcept:
    """Run every item (``total`` elements); ``nthreads`` share them (1: in order)."""
    if count == 0:
        return
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

    cdef inline void run(self, int nthreads) noexcept:
        """Run the items on ``nthreads`` (1: one after the other, in order)."""
        _run_items(self.items, self.count, self.total, nthreads)


ctypedef struct Span:
    char* start
    Py_ssize_t nbytes


cdef int _span_order(const void* a, const void* b) noexcept nogil:
    cdef char* x = (<const Span*>a).start
    cdef char* y = (<const Span*>b).start
    return -1 if x < y else (1 if x > y else 0)


cdef class WrittenSpans:
    """The memory a multi-tensor pass writes, by slot, kept from one call to the next.

    Threads run the items in any order; one after the other they match a loop over the
    buffers. Both agree only when no two written spans overlap and no item reads a written
    span (a param listed twice, shared storage, a grad that is another param's view):
    _order_free checks that. The sorted spans are rebuilt only after a slot changed, and
    the inputs searched in them only after one moved: steady-state steps pay a comparison
    per slot (a binary search per input when the inputs are new arrays every step)."""
    cdef Span* written       # by slot, this call (nbytes 0: nothing)
    cdef Span* spans         # the written spans, sorted by start
    cdef Span* read          # by work item: what the last order_free check found clear
    cdef Py_ssize_t size, span_count, span_slots, read_count
    cdef bint spans_valid, disjoint, reads_clear

    def __dealloc__(self):
        free(self.written)
        free(self.spans)
        free(self.read)

    def __reduce__(self):
        return WrittenSpans, ()   # a cache: copies and unpickled objects start empty

    cdef int reserve(self, Py_ssize_t size) except -1:
        if size <= self.size:
            return 0
        cdef Py_ssize_t i
        cdef Span* written = <Span*>realloc(self.written, size * sizeof(Span))
        if written == NULL:
            raise MemoryError()
        self.written = written
        cdef Span* spans = <Span*>realloc(self.spans, size * sizeof(Span))
        if spans == NULL:
            raise MemoryError()
        self.spans = spans
        cdef Span* read = <Span*>realloc(self.read, size * sizeof(Span))
        if read == NULL:
            raise MemoryError()
        self.read = read
        self.read_count = 0
        for i in range(self.size, size):
            self.written[i].start = NULL
            self.written[i].nbytes = 0
        self.size = size
        self.spans_valid = False
        return 0

    cdef inline void write(self, Py_ssize_t slot, char* start, Py_ssize_t nbytes) noexcept:
        """Record what this call writes in ``slot`` (nbytes 0: nothing)."""
        if self.written[slot].start != start or self.written[slot].nbytes != nbytes:
            self.written[slot].start = start
            self.written[slot].nbytes = nbytes
            self.spans_valid = self.reads_clear = False

    cdef bint writes_disjoint(self, Py_ssize_t slots) noexcept:
        """No two written spans of slots [0, slots) overlap."""
        cdef Py_ssize_t i
        if not self.spans_valid or slots != self.span_slots:
            self.span_slots = slots
            self.reads_clear = False
            self.span_count = 0
            for i in range(slots):
                if self.written[i].nbytes:
                    self.spans[self.span_count] = self.written[i]
                    self.span_count += 1
            qsort(self.spans, self.span_count, sizeof(Span), _span_order)
            self.disjoint = True
            for i in range(1, self.span_count):
                if self.spans[i - 1].start + self.spans[i - 1].nbytes > self.spans[i].start:
                    self.disjoint = False
                    break
            self.spans_valid = True
        return self.disjoint

    cdef bint overlaps_written(self, const char* start, Py_ssize_t nbytes) noexcept:
        """Whether [start, start+nbytes) overlaps a written span (after writes_disjoint)."""
        cdef Py_ssize_t lo = 0, hi = self.span_count, mid
        while lo < hi:  # first span starting at or after the end of ours
            mid = (lo + hi) // 2
            if self.spans[mid].start < start + nbytes:
                lo = mid + 1
            else:
                hi = mid
        # spans are disjoint and sorted: only the one before can reach into ours
        return nbytes > 0 and lo > 0 and self.spans[lo - 1].start + self.spans[lo - 1].nbytes > start


cdef inline Py_ssize_t _item_bytes(const WorkItem* w) noexcept:
    return w.size * (4 if w.call.kernel in (SGD_F32, MOMENTUM_F32, EMA_F32) else 8)


cdef int _order_free(_WorkList work, WrittenSpans written) except -1:
    """1 when the items may run in any order (on threads), else 0: each item writes its
    ``call.out``, ``call.state`` and ``average`` (those not NULL) and reads its
    ``call.inp``. ``written`` (None: a new one) remembers them: when nothing moved since
    the last check found them clear, that answer stands (no sort, no binary search)."""
    cdef Py_ssize_t item, nbytes
    cdef const WorkItem* w
    cdef Span span
    if written is None:
        written = WrittenSpans()
    written.reserve(3 * work.count)
    for item in range(work.count):
        w = &work.items[item]
        nbytes = _item_bytes(w)
        written.write(3 * item, w.call.out, nbytes)
        written.write(3 * item + 1, w.call.state, nbytes if w.call.state != NULL else 0)
        written.write(3 * item + 2, w.average, nbytes if w.average != NULL else 0)
    if not written.writes_disjoint(3 * work.count):
        return 0
    cdef bint same = written.reads_clear and written.read_count == work.count
    for item in range(work.count):
        w = &work.items[item]
        span.start = <char*>w.call.inp
        span.nbytes = _item_bytes(w)
        if same and (written.read[item].start != span.start
                     or written.read[item].nbytes != span.nbytes):
            same = False
        written.read[item] = span
    written.read_count = work.count
    if same:
        return 1
    written.reads_clear = False
    for item in range(work.count):
        if written.overlaps_written(written.read[item].start, written.read[item].nbytes):
            return 0
    written.reads_clear = True
    return 1


cdef int _items_threads(_WorkList work) noexcept:
    """_threads_for the pass, its time estimated from the first item's kernel (a fused
    EMA reads and writes its average too)."""
    if work.count == 0:
        return 1
    cdef const WorkItem* w = &work.items[0]
    cdef double per_element = _call_ns(&w.call, 1)
    if w.average != NULL:
        per_element += 2 * _item_bytes(w) / w.size * NS_PER_BYTE
    return _threads_for(work.total * per_element)


cdef int _safe_threads(_WorkList work, WrittenSpans written) except -1:
    """Threads for the pass: _items_threads, or 1 (in order, torch's result) when
    its memory overlaps in a way threads could race on (_order_free)."""
    cdef int nthreads = _items_threads(work)
    if nthreads > 1 and not _order_free(work, written):
        return 1
    return nthreads


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
                        first_step=False, decay=0.0, WrittenSpans written=None):
    """``momentum_step`` on every ``params[i]`` with ``grads[i]`` and ``velocities[i]``
    (lists; ``velocities`` may be None when ``momentum == 0``), in one call.

    With ``averages`` (a list), each ``averages[i]`` is then updated in the same pass as
    ``ema_update(averages[i], params[i], decay)`` with the new weights. Every argument is
    checked before anything is written (see ``_validation.check_multi_step``). The result
    is that of the calls one after the other, in order, whatever aliases what (a grad
    that views another param, say): threads run only when the order cannot matter.
    ``written``: a WrittenSpans kept by the caller across calls (saves re-sorting)."""
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
    work.run(_safe_threads(work, written))


def multi_ema_update(list averages, values, decay, WrittenSpans written=None):
    """``ema_update(averages[i], values[i], decay)`` for every i, in one call; every pair is
    checked before anything is written (see ``_validation.check_multi_ema``). As
    multi_momentum_step: the result of the updates in order, ``written`` a cache."""
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
    work.run(_safe_threads(work, written))
    return averages


include "_torch_multi.pxi"
