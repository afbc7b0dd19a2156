# The multi-tensor driver and the NumPy entry points built on it.
#
# A call describes each non-empty buffer as a WorkItem (one C array; a single-buffer call
# is a one-item list on the stack) and runs them all in one pass over fixed chunks of the
# TOTAL element count, claimed by the threads as they come: a chunk may cover many small
# tensors or part of a big one, so one huge embedding and thousands of tiny biases balance
# alike.
# Every step is element-wise, so the split cannot change a bit of the result. The loops
# are the numeric cores of the CPU target chosen at import (fastmomentum._target).
#
# Every entry point checks its arguments in C first (fm_checks.pxd); only on failure does
# the Python validator explain. Nothing is written before every check has passed.
cimport cython
cimport numpy as cnp
from cpython.long cimport PyLong_AsLongAndOverflow
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc

from fastmomentum._spans cimport WrittenSpans, order_free, pass_ns, record_grads, safe_threads
from fastmomentum._threads cimport (NOGIL_MIN_SIZE, PARALLEL_CHUNK, run_chunks, streaming_ns,
                                    threads_for)
from fm_checks cimport (finite_in, import_checks, lead, like, list_of, overlap, real_number,
                       refused, sgd_hyper_ok)
from fm_core_table cimport (CoreTable, StepScalars, WorkItem, first_written,
                            grad_format, grad_itemsize, load_core_table)
from fm_norms cimport larger
from fm_core_table cimport ROUND_ONCE, ROUND_TORCH

import numpy as np

from fastmomentum import _target, _validation

cnp.import_array()
import_checks()

cdef CoreTable cores     # the numeric cores of this CPU's target


def _use_core_table(capsule):
    load_core_table(&cores, capsule)


_target.attach(_use_core_table)


# ---------------------------------------------------------------------------------------
# Running a work list

cdef inline Py_ssize_t _first_item(const WorkItem* items, Py_ssize_t count,
                                   Py_ssize_t begin) noexcept nogil:
    """The last item whose offset <= ``begin``."""
    cdef Py_ssize_t lo = 0, hi = count - 1, mid
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if items[mid].offset <= begin:
            lo = mid
        else:
            hi = mid - 1
    return lo


cdef void _run_span(const StepScalars* s, const WorkItem* items, Py_ssize_t count,
                    Py_ssize_t begin, Py_ssize_t end) noexcept nogil:
    """Run global elements [begin, end) of the concatenated items."""
    cdef Py_ssize_t i = _first_item(items, count, begin)
    while i < count and items[i].offset < end:
        cores.elementwise[items[i].kernel](first_written(&items[i]), s, &items[i],
                                           max(begin - items[i].offset, 0),
                                           min(end - items[i].offset, items[i].size))
        i += 1


ctypedef struct SpanSplit:       # run_chunks' context: chunk c is elements
    const StepScalars* scalars   # [c * PARALLEL_CHUNK, (c + 1) * PARALLEL_CHUNK)
    const WorkItem* items
    Py_ssize_t count, total


cdef void _span_chunk(void* ctx, Py_ssize_t c, int worker) noexcept nogil:
    cdef const SpanSplit* split = <const SpanSplit*>ctx
    _run_span(split.scalars, split.items, split.count, c * PARALLEL_CHUNK,
              min(split.total, (c + 1) * PARALLEL_CHUNK))


cdef void run_items(const StepScalars* s, const WorkItem* items, Py_ssize_t count,
                    Py_ssize_t total, int nthreads) noexcept:
    """Run every item (``total`` elements); ``nthreads`` share them (1: in order)."""
    cdef SpanSplit split
    if count == 0:
        return
    if total < NOGIL_MIN_SIZE:
        if count == 1:   # a single-buffer call: no span to look up (~30 instructions)
            cores.elementwise[items[0].kernel](first_written(items), s, items, 0, total)
        else:
            _run_span(s, items, count, 0, total)
    elif nthreads == 1:
        with nogil:
            _run_span(s, items, count, 0, total)
    else:
        split.scalars, split.items, split.count, split.total = s, items, count, total
        with nogil:
            run_chunks(_span_chunk, &split, (total + PARALLEL_CHUNK - 1) // PARALLEL_CHUNK,
                       nthreads)


# ---------------------------------------------------------------------------------------
# Gradient norms (global-norm clipping): one pass over the items' grads, fixed chunks

cdef double _span_norm(const WorkItem* items, Py_ssize_t count, Py_ssize_t begin,
                       Py_ssize_t end, bint inf_norm) noexcept nogil:
    """The sum of squares (largest magnitude when ``inf_norm``) of the grads' global
    elements [begin, end), item by item in order."""
    cdef Py_ssize_t i = _first_item(items, count, begin), lo, size
    cdef double acc = 0.0, part
    cdef const char* g
    cdef int f
    while i < count and items[i].offset < end:
        lo = max(begin - items[i].offset, 0)
        size = min(end - items[i].offset, items[i].size) - lo
        f = grad_format(&items[i])
        g = items[i].grad + lo * grad_itemsize(f)
        part = (cores.max_magnitude[f](g, size) if inf_norm
                else cores.sum_squares[f](g, size))
        acc = larger(acc, part) if inf_norm else acc + part
        i += 1
    return acc


ctypedef struct NormSplit:       # run_chunks' context: chunk c's result into partials[c]
    const WorkItem* items
    Py_ssize_t count, total
    bint inf_norm
    double* partials


cdef void _norm_chunk(void* ctx, Py_ssize_t c, int worker) noexcept nogil:
    cdef const NormSplit* split = <const NormSplit*>ctx
    split.partials[c] = _span_norm(split.items, split.count, c * PARALLEL_CHUNK,
                                   min(split.total, (c + 1) * PARALLEL_CHUNK), split.inf_norm)


cdef double items_norm(const WorkItem* items, Py_ssize_t count, Py_ssize_t total,
                       bint inf_norm) except? -1.0:
    """The sum of squares (``inf_norm``: the largest magnitude, NaN if any is NaN) of every
    item's grad: per PARALLEL_CHUNK chunk of the concatenation in double, the chunks'
    results combined in chunk order, so the bits are the same for any thread count."""
    cdef NormSplit split
    cdef double on_stack[16]
    cdef double acc = 0.0, nbytes = 0.0
    cdef Py_ssize_t nchunks = (total + PARALLEL_CHUNK - 1) // PARALLEL_CHUNK, c
    if total == 0:
        return 0.0
    split.items, split.count, split.total, split.inf_norm = items, count, total, inf_norm
    split.partials = &on_stack[0]
    if nchunks > 16:
        split.partials = <double*>malloc(nchunks * sizeof(double))
    if split.partials == NULL:
        raise MemoryError()
    for c in range(count):
        nbytes += items[c].size * <double>grad_itemsize(grad_format(&items[c]))
    if total < NOGIL_MIN_SIZE:
        _norm_chunk(&split, 0, 0)
    else:
        with nogil:
            run_chunks(_norm_chunk, &split, nchunks, threads_for(streaming_ns(nbytes)))
    for c in range(nchunks):
        acc = larger(acc, split.partials[c]) if inf_norm else acc + split.partials[c]
    if nchunks > 16:
        free(split.partials)
    return acc


@cython.cdivision(True)
cdef double clip_coefficient(double total, double max_norm, bint f32) noexcept nogil:
    """torch.nn.utils.clip_grad_norm_'s ``clamp(max_norm / (total + 1e-6), max=1)`` in the
    total norm's dtype (float32 when every grad is float32), as torch evaluates it:
    ``t.reciprocal() * max_norm`` (Tensor.__rtruediv__), NaN kept by the clamp."""
    cdef float t32, c32
    cdef double c
    if f32:
        t32 = <float>total + <float>1e-6
        c32 = (<float>1.0 / t32) * <float>max_norm
        return 1.0 if c32 > <float>1.0 else <double>c32
    c = (1.0 / (total + 1e-6)) * max_norm
    return 1.0 if c > 1.0 else c


cdef bint all_f32(const WorkItem* items, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        if not items[i].is_f32:
            return False
    return True


cdef bint any_half(const WorkItem* items, Py_ssize_t count) noexcept nogil:
    """An item of 16-bit buffers (fastmomentum.torch.SGD clips and unscales bfloat16/float16
    params by torch's own recipe, for torch's bits)."""
    cdef Py_ssize_t i
    for i in range(count):
        if items[i].itemsize == 2:
            return True
    return False


cdef double finish_norm(double acc, bint inf_norm, bint f32) noexcept nogil:
    """The total norm from items_norm's ``acc``, rounded to its dtype."""
    cdef double total = acc if inf_norm else sqrt(acc)
    return <double><float>total if f32 else total


cdef class WorkList:
    """An owned C array of WorkItems, appended in order (offsets accumulate), and the
    scalars they share."""

    def __cinit__(self, Py_ssize_t capacity):
        self.items = <WorkItem*>malloc(max(capacity, 1) * sizeof(WorkItem))
        if self.items == NULL:
            raise MemoryError()
        self.count = 0
        self.total = 0

    def __dealloc__(self):
        free(self.items)

    cdef WorkItem* append(self, Py_ssize_t size) noexcept:
        """The next item, of ``size`` elements (the caller describes it: sgd_item...)."""
        cdef WorkItem* w = &self.items[self.count]
        w.size = size
        w.offset = self.total
        self.count += 1
        self.total += size
        return w

    cdef void run(self, int nthreads) noexcept:
        """Run the items on ``nthreads`` (1: one after the other, in order)."""
        run_items(&self.scalars, self.items, self.count, self.total, nthreads)


# mp-dtypes: 16-bit arrays (the checks have accepted x: a bfloat16 array if none of these)
cdef inline StepDtype _dtype(object x) noexcept:
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if typenum == cnp.NPY_FLOAT:
        return DTYPE_F32
    if typenum == cnp.NPY_DOUBLE:
        return DTYPE_F64
    return DTYPE_F16 if typenum == cnp.NPY_FLOAT16 else DTYPE_BF16


cdef inline bint _is_f32_or_half(object x) noexcept:
    return cnp.PyArray_TYPE(<cnp.ndarray>x) != cnp.NPY_DOUBLE


#: torch's vectorised loop on 16-bit dtypes steps 32 elements on AVX2 and AVX512 CPUs
#: (fastmomentum._torch_bridge.TORCH_HALF_LANES): the NumPy API gives those bits
NUMPY_TORCH_LANES = 32

cdef inline int _rounding(StepScalars* s, str func, object rounding, object torch_threads,
                   object seed, object step) except -1:
    """The call's rounding of 16-bit buffers into ``s``. "torch" and "once" (an exact str,
    compared in C: not only the interned literal, e.g. a name read from a config file)
    with an int ``torch_threads`` in range and no ``seed`` are resolved here (~10 ns);
    anything else goes through _validation.rounding_options (~1 us: it words the errors
    and hashes the stochastic seed)."""
    cdef int mode = -1, overflow = 0
    cdef long threads_
    if seed is None and type(rounding) is str and type(torch_threads) is int:
        if <str>rounding == "torch":
            mode = ROUND_TORCH
        elif <str>rounding == "once":
            mode = ROUND_ONCE
        # compared as a C long: two Python comparisons cost ~80 instructions a call
        threads_ = PyLong_AsLongAndOverflow(torch_threads, &overflow)
        if mode >= 0 and not overflow and 1 <= threads_ < 1 << 16:
            set_rounding(s, mode, <int>threads_, NUMPY_TORCH_LANES, 0)
            return 0
    mode, threads, key = _validation.rounding_options(func, rounding, torch_threads, seed,
                                                      step)
    set_rounding(s, mode, threads, NUMPY_TORCH_LANES, key)
    return 0


cdef inline char* _bytes(object x) noexcept:
    return cnp.PyArray_BYTES(<cnp.ndarray>x)


cdef int concurrent_step(str func) except -1:
    raise RuntimeError(f"{func}: another thread is stepping this optimizer (or EMA) at the "
                       f"same time; one object's steps must not overlap: guard it with a "
                       f"lock, or give each thread its own")


cdef inline int _run_guarded(WorkList work, WrittenSpans written, str func,
                             object held) except -1:
    """Run ``work``, refusing to start while another thread runs a pass of the same
    ``written`` (its object's steps would race). ``held``: strong references to every
    buffer the items point into, kept while the GIL is released (another thread may drop
    the caller's, e.g. replace ``grads[i]``); None when the pass keeps the GIL."""
    if written is None:  # no object shared across calls: nothing to guard
        work.run(safe_threads(work.items, work.count, work.total, None))
        return 0
    if written.busy:
        concurrent_step(func)
    cdef int nthreads = safe_threads(work.items, work.count, work.total, written)
    written.busy = held is not None
    work.run(nthreads)
    written.busy = False
    return 0


cdef int account(object optimizer, object velocities, bint first_step, object ema,
                 double decay) except -1:
    """The bookkeeping of a fastmomentum.SGD step (its momentum buffers on a first step,
    ``steps``) and of its EMA's update (``updates``, the decay product), in the same C call
    as the kernels: a KeyboardInterrupt (raised between bytecodes) cannot fall between what
    was written and its account."""
    if optimizer is not None:
        if first_step:
            optimizer.momentum_buffers = velocities
        optimizer.steps += 1
    if ema is not None:
        ema.updates += 1
        ema._kept *= decay
    return 0


cdef int account_norm(object optimizer, double total_norm, bint skipped) except -1:
    """A clipped (or skip-checked) step's bookkeeping: ``last_grad_norm``, and
    ``skipped_steps`` when the step was skipped for a non-finite total norm."""
    if optimizer is not None:
        optimizer.last_grad_norm = total_norm
        if skipped:
            optimizer.skipped_steps += 1
    return 0
cdef object _state_module = None


cdef object _state():
    """fastmomentum._state (it cimports this module: imported on first use)."""
    global _state_module
    if _state_module is None:
        from fastmomentum import _state as module
        _state_module = module
    return _state_module


# ---------------------------------------------------------------------------------------
# One buffer

def momentum_step(param, grad, velocity, *, lr, momentum=0.0, dampening=0.0,
                  weight_decay=0.0, nesterov=False, maximize=False, first_step=False,
                  momentum_dtype=None, rounding="torch", torch_threads=1, seed=None, step=0):
    """One in-place SGD step on one buffer, bit for bit as ``torch.optim.SGD``.

    ``param`` (writeable), ``grad`` and ``velocity`` (writeable; may be None when
    ``momentum == 0``) are C-contiguous arrays of one dtype, float32 or float64, and one
    shape. In torch's order and rounding (scalars rounded to the dtype, every multiply-add
    fused)::

        g = -grad if maximize else grad
        g = g + weight_decay * param                   # coupled weight decay
        velocity = g if first_step else momentum * velocity + (1 - dampening) * g
        g = g + momentum * velocity if nesterov else velocity
        param -= lr * g

    Without momentum (``momentum == 0``) ``velocity`` is neither read nor written.
    ``first_step=True`` is torch's first step, where the momentum buffer does not exist yet:
    ``velocity`` is set to ``g`` whatever it held, with no dampening. The textbook EMA form
    ``v = beta*v + (1-beta)*g`` is ``momentum=beta, dampening=beta``.

    ``momentum_dtype`` (``ml_dtypes.bfloat16`` or ``np.float16``; None: the param's): a
    float32 step whose ``velocity`` is stored in that dtype. The step is the float32 step on
    the widened velocity; the new velocity is stored rounded to nearest even, and ``param``
    is updated with the unrounded one (Optax's ``trace`` with ``accumulator_dtype``).

    Raises TypeError/ValueError (and writes nothing) for non-float or mismatched arrays,
    read-only, non-contiguous or overlapping in-place buffers, negative or non-finite
    ``lr``/``momentum``/``weight_decay``, and ``nesterov`` without momentum or with
    dampening. Empty buffers are a no-op; NaN in ``grad`` propagates as in torch.
    Returns None.

    float16 and bfloat16 (``ml_dtypes.bfloat16``) buffers compute in float32 and round
    to their dtype (docs/mixed-precision.md): ``rounding="torch"`` (default) gives the bits
    of torch.optim.SGD's for-loop at ``torch_threads`` torch threads (it rounds after
    every op, and differently in its vector and scalar loops); ``"once"`` the float32 step
    with one rounding per stored value (torch's fused kernel, 2.14+); ``"stochastic"``
    as ``"once"`` with the param rounded stochastically by counter-based random bits of
    ``seed`` (an int) and ``step`` (an int): the same bits for any thread count."""

    cdef double lr_, momentum_, dampening_, weight_decay_
    cdef bint nesterov_ = nesterov, maximize_ = maximize, first_step_ = first_step
    cdef StepScalars s
    cdef WorkItem w
    cdef bint ok = False
    _rounding(&s, "momentum_step", rounding, torch_threads, seed, step)  # checked for all
    if momentum_dtype is not None:  # mp-state: fewer-byte momentum (fastmomentum._state)
        return _state().momentum_step_state(param, grad, velocity, lr, momentum, dampening,
                                            weight_decay, nesterov_, maximize_, first_step_,
                                            momentum_dtype)
    try:
        lr_, momentum_ = real_number(lr), real_number(momentum)
        dampening_, weight_decay_ = real_number(dampening), real_number(weight_decay)
        ok = (sgd_hyper_ok(lr_, momentum_, dampening_, weight_decay_, nesterov_)
              and lead(param, True)
              and like(grad, <cnp.ndarray>param, False)
              and not overlap(<cnp.ndarray>grad, <cnp.ndarray>param)
              and (momentum_ == 0.0
                   or (like(velocity, <cnp.ndarray>param, True)
                       and not overlap(<cnp.ndarray>velocity, <cnp.ndarray>param)
                       and not overlap(<cnp.ndarray>velocity, <cnp.ndarray>grad))))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        refused("momentum_step", _validation.check_momentum_step,
                (param, grad, velocity, lr, momentum, dampening, weight_decay, nesterov,
                 maximize, first_step))
    set_scalars(&s, lr_, momentum_, dampening_, weight_decay_, nesterov_, maximize_, 0.0)
    sgd_item(&w, &s, _is_f32_or_half(param), _bytes(param), _bytes(grad),
             NULL if momentum_ == 0.0 else _bytes(velocity), NULL, first_step_)
    retype_item(&w, _dtype(param))
    w.size = cnp.PyArray_SIZE(<cnp.ndarray>param)
    w.offset = 0
    run_items(&s, &w, 1, w.size, threads_for(pass_ns(&w, w.size)))


def ema_update(average, value, decay):
    """In place ``average = decay*average + (1-decay)*value``; returns ``average``.

    ``average`` (writeable) and ``value`` are C-contiguous arrays of one float dtype and
    shape, not sharing memory; ``0 <= decay <= 1``. Computed as
    ``fma(decay, average, (1-decay)*value)`` with the scalars rounded to the dtype.
    Raises TypeError/ValueError (and writes nothing) for bad input."""

    cdef StepScalars s
    cdef WorkItem w
    cdef bint ok = False
    try:
        s.decay = real_number(decay)
        ok = (finite_in(s.decay, 0.0, 1.0)
              and lead(average, True)
              and like(value, <cnp.ndarray>average, False)
              and not overlap(<cnp.ndarray>value, <cnp.ndarray>average))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        refused("ema_update", _validation.check_ema_update, (average, value, decay))
    ema_item(&w, _is_f32_or_half(average), _bytes(average), _bytes(value))
    retype_item(&w, _dtype(average))
    w.size = cnp.PyArray_SIZE(<cnp.ndarray>average)
    w.offset = 0
    run_items(&s, &w, 1, w.size, threads_for(pass_ns(&w, w.size)))
    return average


# ---------------------------------------------------------------------------------------
# Lists of buffers (used by fastmomentum.optim)

def multi_momentum_step(list params, grads, velocities, averages=None, *, lr, momentum=0.0,
                        dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False,
                        first_step=False, decay=0.0, WrittenSpans written=None,
                        optimizer=None, ema=None, clip_grad_norm=None, norm_type=2.0,
                        skip_if_nonfinite=False, rounding="torch", torch_threads=1,
                        seed=None, step=0, write_clipped_grads=False):
    """``momentum_step`` on every ``params[i]`` with ``grads[i]`` and ``velocities[i]``
    (lists; ``velocities`` may be None when ``momentum == 0``), in one call.

    With ``averages`` (a list), each ``averages[i]`` is then updated in the same pass as
    ``ema_update(averages[i], params[i], decay)`` with the new weights. Every argument is
    checked before anything is written (see ``_validation.check_multi_step``). The result
    is that of the calls one after the other, in order, whatever aliases what (a grad
    that views another param, say): threads run only when the order cannot matter.
    ``written``: a WrittenSpans kept by the caller across calls (saves re-sorting).
    ``optimizer`` / ``ema``: the fastmomentum.SGD / EMA whose counters this step advances
    (see account). ``rounding``, ``torch_threads``, ``seed``, ``step``: of 16-bit
    buffers, as momentum_step.

    ``clip_grad_norm=max_norm`` (``norm_type`` 2.0 or inf): torch.nn.utils.clip_grad_norm_
    fused into the step. One pass computes the total norm of all grads (fixed summation
    order, same bits for any thread count); the step reads every grad times the clip
    coefficient (by default grads are not written). ``skip_if_nonfinite``: a total norm that is NaN
    or inf skips the step whole (nothing written; ``optimizer.skipped_steps`` counts it).
    Returns the total norm (a float, rounded to float32 unless a param is float64, as
    torch's) when either is set, else None; ``optimizer.last_grad_norm`` is set to it.
    bfloat16/float16 params: the norm of the widened grads, and each grad read as
    ``round16(float32(grad * coefficient))`` (the clipped grad written into its dtype).

    ``write_clipped_grads=True`` (float32/float64 params only): the grads (then writable,
    sharing memory with no other grad, param, buffer or average) are left holding what
    clip_grad_norm_ leaves, each ``grad * coefficient`` rounded to its dtype, stored by the
    step's own pass; a step skipped by ``skip_if_nonfinite`` with ``clip_grad_norm`` still
    scales them by its (0 or NaN) coefficient, as clip_grad_norm_ before a skipped step
    would."""
    cdef Py_ssize_t n = len(params), i
    cdef double lr_, momentum_, dampening_, weight_decay_, decay_
    cdef bint nesterov_ = nesterov, maximize_ = maximize, first_step_ = first_step
    cdef bint fused_ema = averages is not None
    cdef bint writes = write_clipped_grads is True   # SGD checked it is a bool
    cdef bint ok = False
    cdef object x, g, v, a
    try:
        lr_, momentum_ = real_number(lr), real_number(momentum)
        dampening_, weight_decay_ = real_number(dampening), real_number(weight_decay)
        decay_ = real_number(decay)
        ok = (sgd_hyper_ok(lr_, momentum_, dampening_, weight_decay_, nesterov_)
              and finite_in(decay_, 0.0, 1.0)
              and list_of(grads, n)
              and (momentum_ == 0.0 or list_of(velocities, n))
              and (not fused_ema or list_of(averages, n)))
        i = 0
        while ok and i < n:
            x = params[i]
            g = grads[i]
            ok = (lead(x, True)
                  and like(g, <cnp.ndarray>x, writes)
                  and not overlap(<cnp.ndarray>g, <cnp.ndarray>x))
            if ok and momentum_ != 0.0:
                v = velocities[i]
                ok = (like(v, <cnp.ndarray>x, True) and not overlap(<cnp.ndarray>v, <cnp.ndarray>x)
                      and not overlap(<cnp.ndarray>v, <cnp.ndarray>g))
            if ok and fused_ema:
                a = averages[i]
                ok = (like(a, <cnp.ndarray>x, True) and not overlap(<cnp.ndarray>a, <cnp.ndarray>x)
                      and not overlap(<cnp.ndarray>a, <cnp.ndarray>g)
                      and (momentum_ == 0.0
                           or not overlap(<cnp.ndarray>a, <cnp.ndarray>velocities[i])))
            i += 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        refused("multi_momentum_step", _validation.check_multi_step,
                (params, grads, velocities, averages, lr, momentum, dampening, weight_decay,
                 nesterov, maximize, decay, "SGD.step", writes))
    cdef bint skip_ = skip_if_nonfinite is True, measures = clip_grad_norm is not None or skip_
    cdef bint every_f32 = True
    if measures or skip_if_nonfinite is not False:  # only then: the Python check (~1 us)
        clip_grad_norm, norm_type = _validation.check_clipping(
            "SGD.step", clip_grad_norm, norm_type, skip_if_nonfinite)
        skip_ = bool(skip_if_nonfinite)   # checked: a bool or a NumPy bool
        measures = clip_grad_norm is not None or skip_
    cdef WorkList work = WorkList(n)
    _rounding(&work.scalars, "multi_momentum_step", rounding, torch_threads, seed, step)
    set_scalars(&work.scalars, lr_, momentum_, dampening_, weight_decay_, nesterov_, maximize_,
             decay_)
    for i in range(n):
        x = params[i]
        # the total norm's dtype: float32 unless a param is float64 (bfloat16/float16
        # grads count as their widened float32, as torch's clip of float32 copies)
        every_f32 = every_f32 and cnp.PyArray_TYPE(<cnp.ndarray>x) != cnp.NPY_DOUBLE
        if cnp.PyArray_SIZE(<cnp.ndarray>x) == 0:
            continue
        sgd_item(work.append(cnp.PyArray_SIZE(<cnp.ndarray>x)), &work.scalars,
                 _is_f32_or_half(x), _bytes(x), _bytes(grads[i]),
                 NULL if momentum_ == 0.0 else _bytes(velocities[i]),
                 _bytes(averages[i]) if fused_ema else NULL, first_step_)
        retype_item(&work.items[work.count - 1], _dtype(x))
    if first_step_ and optimizer is not None and optimizer.momentum_buffers is not None:
        concurrent_step("SGD.step")  # another thread's first step went first
    if writes:  # the 16-bit steps read grads scaled but store none back
        _validation.check_write_back_fits("SGD.step", True, None, params)
    if writes and work.count and not (record_grads(work.items, work.count, _grad_spans, 0)
                       and _grad_spans.writes_disjoint(work.count)
                       and order_free(work.items, work.count, None)):
        # a grad stored twice, or stored while another item reads or writes it: the
        # loop's order would show; say which arrays (nothing is written)
        _validation.check_grads_apart("SGD.step", params, grads,
                                      velocities if momentum_ != 0.0 else None, averages)
        raise AssertionError("multi_momentum_step: overlapping grads not named")
    cdef double total_norm = 0.0
    if measures:   # (16-bit grads: their norm widened, the coefficient float32's)
        total_norm = finish_norm(items_norm(work.items, work.count, work.total,
                                            norm_type != 2.0), norm_type != 2.0, every_f32)
        if clip_grad_norm is not None:
            work.scalars.grad_coef = clip_coefficient(total_norm, clip_grad_norm, every_f32)
        if skip_ and total_norm - total_norm != 0.0:
            if writes and clip_grad_norm is not None:  # clip_grad_norm_ ran, the step not
                _scale_grads(grads, work.scalars.grad_coef)
            account_norm(optimizer, total_norm, True)
            return total_norm
    work.scalars.stores_grad = writes
    _run_guarded(work, written, "SGD.step",
                 (params[:], grads[:], velocities[:] if momentum_ != 0.0 else None,
                  averages[:] if fused_ema else None)
                 if work.total >= NOGIL_MIN_SIZE else None)
    account(optimizer, velocities, first_step_, ema, decay_)
    if measures:
        account_norm(optimizer, total_norm, False)
        return total_norm


cdef WrittenSpans _grad_spans = WrittenSpans()  # write-back's grads check (GIL held)


cdef int _scale_grads(list grads, double coef) except -1:
    """``g *= coef`` (rounded to g's dtype) in place: a skipped step's write-back."""
    with np.errstate(invalid="ignore"):  # inf * 0: NaN, as torch's
        for g in grads:
            np.multiply(g, g.dtype.type(coef), out=g)
    return 0


def multi_ema_update(list averages, values, decay, WrittenSpans written=None, ema=None):
    """``ema_update(averages[i], values[i], decay)`` for every i, in one call; every pair is
    checked before anything is written (see ``_validation.check_multi_ema``). As
    multi_momentum_step: the result of the updates in order, ``written`` a cache, ``ema``
    the fastmomentum.EMA whose counters this update advances."""
    cdef Py_ssize_t n = len(averages), i
    cdef bint ok = False
    cdef object x
    cdef WorkList work = WorkList(n)
    try:
        work.scalars.decay = real_number(decay)
        ok = finite_in(work.scalars.decay, 0.0, 1.0) and list_of(values, n)
        i = 0
        while ok and i < n:
            x = averages[i]
            ok = (lead(x, True)
                  and like(values[i], <cnp.ndarray>x, False)
                  and not overlap(<cnp.ndarray>values[i], <cnp.ndarray>x))
            i += 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        refused("multi_ema_update", _validation.check_multi_ema, (averages, values, decay))
    for i in range(n):
        x = averages[i]
        if cnp.PyArray_SIZE(<cnp.ndarray>x) == 0:
            continue
        ema_item(work.append(cnp.PyArray_SIZE(<cnp.ndarray>x)), _is_f32_or_half(x),
                 _bytes(x), _bytes(values[i]))
        retype_item(&work.items[work.count - 1], _dtype(x))
    _run_guarded(work, written, "EMA.update",
                 (averages[:], values[:]) if work.total >= NOGIL_MIN_SIZE else None)
    account(None, None, False, ema, work.scalars.decay)
    return averages
