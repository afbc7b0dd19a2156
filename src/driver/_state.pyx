# Steps whose state is stored in other bytes than it is computed in (issue 14, items 2-3):
# momentum_step's and fastmomentum.SGD's ``momentum_dtype=`` (float32 params, bfloat16 or
# float16 momentum), and the split-bfloat16 master weights of fastmomentum.torch.SGD
# (``master_weights="split"``). The loops are src/cores/fm_state_steps.pxd's, run through
# the core table and the multi-tensor driver (fastmomentum._multi) like every other step.
#
# Checks run in C first (fm_checks.pxd); only on failure does _validation word the error.
# Nothing is written before every check has passed.
cimport numpy as cnp

from fastmomentum._multi cimport (WorkList, account, account_norm, clip_coefficient,
                                  concurrent_step, finish_norm, items_norm, run_items,
                                  set_scalars, sgd_item)
from fm_norms cimport larger
from fastmomentum._spans cimport WrittenSpans, pass_ns, safe_threads
from fastmomentum._threads cimport NOGIL_MIN_SIZE, threads_for
from fm_checks cimport (bfloat16_typenum, import_checks, like, list_of, overlap, real_number,
                       refused, sgd_hyper_ok, usable)
from fm_core_table cimport (MOMENTUM_F32_BF16_STATE, MOMENTUM_F32_F16_STATE,
                            SPLIT_GRAD_BF16_STATE_BF16, SPLIT_GRAD_BF16_STATE_F32,
                            SPLIT_GRAD_F32_STATE_BF16, SPLIT_GRAD_F32_STATE_F32, StepScalars,
                            WorkItem)
from fm_torch_state cimport store_momentum_buffer

from fastmomentum import _validation

cnp.import_array()
import_checks()

# how a velocity is stored
cdef enum StateFormat:
    STATE_F32
    STATE_BF16
    STATE_F16

cdef dict _formats = {}   # momentum_dtype as passed -> StateFormat (checked once)


cdef int _format_of(str func, object momentum_dtype) except -1:
    """``momentum_dtype``'s StateFormat (TypeError, worded by _validation, if it is none)."""
    cdef object known = None
    try:
        known = _formats.get(momentum_dtype)
    except TypeError:   # unhashable: the validator explains
        pass
    if known is not None:
        return known
    name, _ = _validation.check_momentum_dtype(func, momentum_dtype)
    known = STATE_BF16 if name == "bfloat16" else STATE_F16
    try:
        _formats[momentum_dtype] = known
    except TypeError:
        pass
    return known


cdef inline int _numpy_typenum(int state_format) noexcept:
    """The NumPy type number of a velocity stored so (-1: ml_dtypes is not installed)."""
    return cnp.NPY_FLOAT16 if state_format == STATE_F16 else bfloat16_typenum()


cdef inline bint _state_like(object v, cnp.ndarray param, int typenum) noexcept:
    return (typenum >= 0 and usable(v, typenum, True)
            and cnp.PyArray_SAMESHAPE(<cnp.ndarray>v, param))


cdef inline bint _buffers_ok(object param, object grad, object velocity, bint has_velocity,
                             int typenum) noexcept:
    """A float32 param, a grad like it and (``has_velocity``) a velocity of ``typenum``
    shaped like it, the in-place ones disjoint from the others."""
    if not (usable(param, cnp.NPY_FLOAT, True) and like(grad, <cnp.ndarray>param, False)
            and not overlap(<cnp.ndarray>grad, <cnp.ndarray>param)):
        return False
    return not has_velocity or (_state_like(velocity, <cnp.ndarray>param, typenum)
                                and not overlap(<cnp.ndarray>velocity, <cnp.ndarray>param)
                                and not overlap(<cnp.ndarray>velocity, <cnp.ndarray>grad))


cdef bint _lists_ok(list params, object grads, object velocities, bint has_velocity,
                    int typenum) except -1:
    """_buffers_ok for every ``params[i]``, ``grads[i]`` (and ``velocities[i]``)."""
    cdef Py_ssize_t i, n = len(params)
    if not (list_of(grads, n) and (not has_velocity or list_of(velocities, n))):
        return False
    for i in range(n):
        if not _buffers_ok(params[i], grads[i], velocities[i] if has_velocity else None,
                           has_velocity, typenum):
            return False
    return True


cdef inline char* _bytes(object x) noexcept:
    return cnp.PyArray_BYTES(<cnp.ndarray>x)


cdef inline int _fewer_byte_kernel(int state_format) noexcept:
    return MOMENTUM_F32_BF16_STATE if state_format == STATE_BF16 else MOMENTUM_F32_F16_STATE


cdef inline void _state_item(WorkItem* w, const StepScalars* s, object param, object grad,
                             object velocity, bint first_step, int state_format) noexcept:
    """A float32 param's step with its velocity stored as ``state_format``."""
    sgd_item(w, s, True, _bytes(param), _bytes(grad),
             NULL if velocity is None else _bytes(velocity), NULL, first_step)
    if w.velocity != NULL:
        w.kernel = _fewer_byte_kernel(state_format)


cdef int _run(WorkList work, WrittenSpans written, object held) except -1:
    """Run ``work`` (threads only when no item's memory overlaps another's), refusing to
    start while another thread runs a pass over the same ``written``."""
    if written is not None and written.busy:
        concurrent_step("SGD.step")
    cdef int nthreads = safe_threads(work.items, work.count, work.total, written)
    if written is not None:
        written.busy = held is not None
    work.run(nthreads)
    if written is not None:
        written.busy = False
    return 0


cdef bint _clipped(list works, object optimizer, object max_norm, bint inf_norm,
                   bint skip_if_nonfinite, double* total) except -1:
    """Global-norm clipping and skipping of state steps (``max_norm`` a float or None):
    the total norm of every work list's grads (lists in order, each in fixed chunks: the
    same bits for any thread count; float32 and bfloat16 grads, so rounded to float32 as
    torch's norm of float32 grads) into ``total``. True (the step skipped, counted in
    ``optimizer.skipped_steps``) when it is not finite and ``skip_if_nonfinite``; else
    every list's ``grad_coef`` is clip_grad_norm_'s coefficient (with ``max_norm``)."""
    cdef WorkList work
    cdef double acc = 0.0, part, coef
    for work in works:
        part = items_norm(work.items, work.count, work.total, inf_norm)
        acc = larger(acc, part) if inf_norm else acc + part
    total[0] = finish_norm(acc, inf_norm, True)
    if skip_if_nonfinite and total[0] - total[0] != 0.0:
        account_norm(optimizer, total[0], True)
        return True
    if max_norm is not None:
        coef = clip_coefficient(total[0], max_norm, True)
        for work in works:
            work.scalars.grad_coef = coef
    return False


# ---------------------------------------------------------------------------------------
# NumPy: float32 params with bfloat16 (ml_dtypes) or float16 momentum

def momentum_step_state(param, grad, velocity, lr, momentum, dampening, weight_decay,
                        nesterov, maximize, first_step, momentum_dtype):
    """``fastmomentum.momentum_step(..., momentum_dtype=...)``: see its docstring."""
    cdef double lr_, momentum_, dampening_, weight_decay_
    cdef bint ok = False
    cdef int state_format = _format_of("momentum_step", momentum_dtype)
    try:
        lr_, momentum_ = real_number(lr), real_number(momentum)
        dampening_, weight_decay_ = real_number(dampening), real_number(weight_decay)
        ok = (sgd_hyper_ok(lr_, momentum_, dampening_, weight_decay_, nesterov)
              and _buffers_ok(param, grad, velocity, momentum_ != 0.0,
                              _numpy_typenum(state_format)))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        refused("momentum_step", _validation.check_state_step,
                ([param], [grad], [velocity], lr, momentum, dampening, weight_decay,
                 nesterov, momentum_dtype, "momentum_step"))
    cdef StepScalars s
    cdef WorkItem w   # one item on the stack, as momentum_step's
    set_scalars(&s, lr_, momentum_, dampening_, weight_decay_, nesterov, maximize, 0.0)
    _state_item(&w, &s, param, grad, None if momentum_ == 0.0 else velocity, first_step,
                state_format)
    w.size = cnp.PyArray_SIZE(<cnp.ndarray>param)
    w.offset = 0
    run_items(&s, &w, 1, w.size, threads_for(pass_ns(&w, w.size)))


def multi_state_step(list params, grads, velocities, *, lr, momentum=0.0, dampening=0.0,
                     weight_decay=0.0, nesterov=False, maximize=False, first_step=False,
                     momentum_dtype, WrittenSpans written=None, optimizer=None,
                     clip_grad_norm=None, norm_type=2.0, skip_if_nonfinite=False):
    """``momentum_step_state`` on every ``params[i]`` with ``grads[i]`` and
    ``velocities[i]`` in one pass (multi_momentum_step's rules: every argument checked
    first, the result of the steps in order, ``optimizer``'s counters advanced in the same
    C call). ``clip_grad_norm``, ``norm_type``, ``skip_if_nonfinite``: as
    multi_momentum_step's (each grad read as ``float32(grad * coefficient)``); returns the
    total norm when either is set, else None."""
    cdef Py_ssize_t n = len(params), i
    cdef double lr_, momentum_, dampening_, weight_decay_
    cdef bint ok = False
    cdef int state_format = _format_of("SGD.step", momentum_dtype)
    cdef int typenum = _numpy_typenum(state_format)
    cdef object x
    try:
        lr_, momentum_ = real_number(lr), real_number(momentum)
        dampening_, weight_decay_ = real_number(dampening), real_number(weight_decay)
        ok = (sgd_hyper_ok(lr_, momentum_, dampening_, weight_decay_, nesterov)
              and _lists_ok(params, grads, velocities, momentum_ != 0.0, typenum))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        refused("SGD.step", _validation.check_state_step,
                (params, grads, velocities, lr, momentum, dampening, weight_decay, nesterov,
                 momentum_dtype, "SGD.step"))
    cdef WorkList work = WorkList(n)
    set_scalars(&work.scalars, lr_, momentum_, dampening_, weight_decay_, nesterov, maximize,
                0.0)
    for i in range(n):
        x = params[i]
        if cnp.PyArray_SIZE(<cnp.ndarray>x):
            _state_item(work.append(cnp.PyArray_SIZE(<cnp.ndarray>x)), &work.scalars, x,
                        grads[i], None if momentum_ == 0.0 else velocities[i], first_step,
                        state_format)
    if first_step and optimizer is not None and optimizer.momentum_buffers is not None:
        concurrent_step("SGD.step")  # another thread's first step went first
    cdef bint skip_ = skip_if_nonfinite is True, measures = clip_grad_norm is not None or skip_
    cdef double total = 0.0
    if measures or skip_if_nonfinite is not False:
        clip_grad_norm, norm_type = _validation.check_clipping(
            "SGD.step", clip_grad_norm, norm_type, skip_if_nonfinite)
        skip_ = bool(skip_if_nonfinite)   # checked: a bool or a NumPy bool
        measures = clip_grad_norm is not None or skip_
    if measures and _clipped([work], optimizer, clip_grad_norm, norm_type != 2.0, skip_,
                             &total):
        return total
    _run(work, written, (params[:], grads[:], velocities[:] if momentum_ != 0.0 else None)
         if work.total >= NOGIL_MIN_SIZE else None)
    account(optimizer, velocities, first_step, None, 0.0)
    if measures:
        account_norm(optimizer, total, False)
        return total


# ---------------------------------------------------------------------------------------
# torch (fastmomentum.torch.SGD): NumPy views of checked tensors, bfloat16 as its bits


cdef inline bint _bits_like(object x, cnp.ndarray first) noexcept:
    """A writeable uint16 array (bfloat16/float16 bits) of ``first``'s size."""
    return (usable(x, cnp.NPY_UINT16, True)
            and cnp.PyArray_SIZE(<cnp.ndarray>x) == cnp.PyArray_SIZE(first))


cdef inline int _split_kernel(bint grad_bf16, bint state_bf16) noexcept:
    if grad_bf16:
        return SPLIT_GRAD_BF16_STATE_BF16 if state_bf16 else SPLIT_GRAD_BF16_STATE_F32
    return SPLIT_GRAD_F32_STATE_BF16 if state_bf16 else SPLIT_GRAD_F32_STATE_F32


cdef WorkList _torch_group_work(list params, list lows, list grads, list velocities,
                               list first_steps, double lr, double momentum,
                               double dampening, double weight_decay, bint nesterov,
                               bint maximize, int state_bits):
    """One param group's checked work list (see torch_state_steps); ValueError, nothing
    written, when a view does not fit."""
    cdef Py_ssize_t n = len(params), i
    cdef bint grad_bf16, ok = sgd_hyper_ok(lr, momentum, dampening, weight_decay, nesterov)
    cdef object x, low, g, v
    cdef WorkItem* w
    ok = (ok and list_of(lows, n) and list_of(grads, n) and list_of(velocities, n)
          and list_of(first_steps, n) and 0 <= state_bits <= 2)
    i = 0
    while ok and i < n:
        x, low, g, v = params[i], lows[i], grads[i], velocities[i]
        if low is not None:  # split
            ok = (_bits_like(x, <cnp.ndarray>x) and _bits_like(low, <cnp.ndarray>x)
                  and (_bits_like(g, <cnp.ndarray>x) or
                       (usable(g, cnp.NPY_FLOAT, False)
                        and cnp.PyArray_SIZE(<cnp.ndarray>g) == cnp.PyArray_SIZE(<cnp.ndarray>x)))
                  and state_bits != STATE_F16)
        else:
            ok = usable(x, cnp.NPY_FLOAT, True) and like(g, <cnp.ndarray>x, False)
        if ok and momentum != 0.0:
            ok = (_bits_like(v, <cnp.ndarray>x) if state_bits != STATE_F32
                  else usable(v, cnp.NPY_FLOAT, True)
                  and cnp.PyArray_SIZE(<cnp.ndarray>v) == cnp.PyArray_SIZE(<cnp.ndarray>x))
        i += 1
    if not ok:
        raise ValueError("torch_state_steps: internal error: a view does not fit its param "
                         "(see fastmomentum._torch_state.step)")
    cdef WorkList work = WorkList(n)
    set_scalars(&work.scalars, lr, momentum, dampening, weight_decay, nesterov, maximize, 0.0)
    for i in range(n):
        x, low, g = params[i], lows[i], grads[i]
        v = velocities[i] if momentum != 0.0 else None
        if cnp.PyArray_SIZE(<cnp.ndarray>x) == 0:
            continue
        w = work.append(cnp.PyArray_SIZE(<cnp.ndarray>x))
        if low is None:
            _state_item(w, &work.scalars, x, g, v, first_steps[i], state_bits)
            continue
        sgd_item(w, &work.scalars, True, _bytes(x), _bytes(g),
                 NULL if v is None else _bytes(v), NULL, first_steps[i])
        grad_bf16 = cnp.PyArray_TYPE(<cnp.ndarray>g) == cnp.NPY_UINT16
        w.kernel = _split_kernel(grad_bf16, state_bits == STATE_BF16)
        w.low_bits = _bytes(low)
    return work


def torch_state_steps(list groups, *, int state_bits, list spans, object state,
                      object increment_version, object optimizer=None, object max_norm=None,
                      bint inf_norm=False, bint skip_if_nonfinite=False,
                      double grad_coef=1.0, object unscale=None):
    """One step of every param group of a fastmomentum.torch.SGD, from NumPy views of
    tensors fastmomentum._torch_state.step checked, in one call that also keeps the books:
    every group is checked before any is run, and a step is whole or not at all.

    ``groups[j]``: ``(params, lows, grads, velocities, first_steps, lr, momentum,
    dampening, weight_decay, nesterov, maximize, new_buffers, stepped)``, ``spans[j]`` its
    WrittenSpans. ``params[i]``: float32 (``lows[i]`` None) or, split, the top halves as
    uint16 bits with ``lows[i]`` the bottom halves (uint16); ``grads[i]``: float32, or
    uint16 bfloat16 bits (split only); ``velocities[i]`` (None when momentum is 0): float32
    (split only), or uint16 bits of ``state_bits`` (1: bfloat16, 2: float16);
    ``first_steps[i]``: torch's first step. After the kernels: ``state[p]['momentum_buffer']
    = buf`` for every ``(p, buf)`` of every ``new_buffers`` and ``increment_version`` of
    every ``stepped`` (the autograd version counters of the params written). The views
    must be disjoint, as that step's checks make them (the optimizer's own tensors and the
    model's params); raises ValueError, writing nothing, when one does not fit. Returns
    the number of params written.

    ``max_norm`` (a float) / ``skip_if_nonfinite``: global-norm clipping over every group's
    grads (see _clipped), ``optimizer.last_grad_norm`` set to the total norm; a skipped
    step writes and stores nothing and returns 0. ``grad_coef`` (without ``max_norm``):
    every grad read as ``float32(grad * grad_coef)`` (AMP's 1/scale). ``unscale`` (or
    None): called once no other step of these spans runs, before the norm (AMP with
    clipping: GradScaler.unscale_'s in-place unscaling); the spans are busy meanwhile and
    through the norm (its
    torch ops release the GIL), so a concurrent step is refused before it writes."""
    cdef list works = [_torch_group_work(group[0], group[1], group[2], group[3], group[4],
                                         group[5], group[6], group[7], group[8], group[9],
                                         group[10], state_bits)
                       for group in groups]
    cdef WorkList work
    cdef WrittenSpans written
    for written in spans:
        if written.busy:
            concurrent_step("SGD.step")
    cdef bint measures = max_norm is not None or skip_if_nonfinite
    cdef bint skipped = False
    cdef double total = 0.0
    for work in works:
        work.scalars.grad_coef = grad_coef
    if unscale is not None:
        # busy from the unscaling through the norm (both release the GIL): a concurrent
        # step can neither unscale the grads a second time nor write them mid-norm
        for written in spans:
            written.busy = True
        try:
            unscale()
            skipped = measures and _clipped(works, optimizer, max_norm, inf_norm,
                                            skip_if_nonfinite, &total)
        finally:
            for written in spans:
                written.busy = False
    elif measures:
        skipped = _clipped(works, optimizer, max_norm, inf_norm, skip_if_nonfinite, &total)
    if skipped:
        return 0
    for work, written in zip(works, spans):
        _run(work, written, True if work.total >= NOGIL_MIN_SIZE else None)
    cdef list stepped = []
    for group in groups:
        for p, buf in group[11]:
            store_momentum_buffer(state, p, buf)
        stepped += group[12]
    if stepped:
        increment_version(stepped)
    if measures:
        account_norm(optimizer, total, False)
    return len(stepped)
