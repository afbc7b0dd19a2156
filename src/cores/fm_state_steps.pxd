# Steps whose state is stored in other bytes than it is computed in (issue 14, items 2-3):
#
# * fewer-byte momentum: float32 params and grads, the velocity stored as bfloat16 or
#   float16. The step is the float32 step (kernels.pxd's momentum_kernel, same order, same
#   fused multiply-adds) on the widened velocity; the new velocity is stored rounded to
#   nearest even, and the param is updated with the unrounded one (Optax's ``trace`` with
#   ``accumulator_dtype`` casts the new trace only for storage, after computing the update).
# * split-bfloat16 master weights (Intel Extension for PyTorch's "split SGD"): the param
#   holds the top 16 bits of a float32 master weight (a bfloat16 the model computes with),
#   ``low_bits`` the bottom 16. A step joins them into the exact float32, runs the float32
#   step on it (grads float32 or bfloat16, velocity float32 or bfloat16, or none), and splits
#   the result again: the top half is the master weight truncated (not rounded), which is
#   what makes top|bottom exact.
#
# One loop (state_loop) for every combination, fused over the param, grad and velocity
# formats; each combination is its own table entry (fm_make_table.pxd, fm_core_table.pxd's
# mp-state block). The formats are distinct one-field structs so that Cython tells bfloat16
# from float16 (both uint16 bits); the loops vectorise as over uint16 arrays (fm_half.h).
from libc.math cimport fmaf
from libc.stdint cimport uint16_t, uint32_t

from fm_core_table cimport StepScalars, WorkItem
from fm_half cimport (fm_bf16, fm_bf16_to_float, fm_bits_float, fm_f16, fm_f16_to_float,
                     fm_float_bits, fm_float_to_bf16, fm_float_to_f16)

# param: float32, or bfloat16 = the top half of a split master weight
ctypedef fused param_t:
    float
    fm_bf16

ctypedef fused grad_t:
    float
    fm_bf16

ctypedef fused state_t:
    float
    fm_bf16
    fm_f16


cdef inline float _widen_grad(grad_t x) noexcept nogil:
    if grad_t is float:
        return x
    else:
        return fm_bf16_to_float(x.bits)


cdef inline float _widen_state(state_t x) noexcept nogil:
    if state_t is float:
        return x
    elif state_t is fm_bf16:
        return fm_bf16_to_float(x.bits)
    else:
        return fm_f16_to_float(x.bits)


cdef inline void _store_state(state_t* dst, float v) noexcept nogil:
    """``v`` rounded to nearest even into the velocity's format."""
    if state_t is float:
        dst[0] = v
    elif state_t is fm_bf16:
        dst[0].bits = fm_float_to_bf16(v)
    else:
        dst[0].bits = fm_float_to_f16(v)


ctypedef struct StateScalars:     # one step's scalars, rounded to float32
    float neg_lr, momentum, one_minus_dampening, weight_decay
    bint maximize


cdef inline float _element(float w, float g, float* v, const StateScalars* k,
                           bint has_weight_decay, bint has_momentum, bint nesterov,
                           bint first_step) noexcept nogil:
    """One element's float32 step in momentum_kernel's rounding order: the new weight; the
    new (unrounded) velocity in ``v[0]``, which holds the widened old one on entry."""
    g = -g if k.maximize else g
    if has_weight_decay:
        g = fmaf(w, k.weight_decay, g)
    if has_momentum:
        v[0] = g if first_step else fmaf(g, k.one_minus_dampening, v[0] * k.momentum)
        g = fmaf(v[0], k.momentum, g) if nesterov else v[0]
    return fmaf(g, k.neg_lr, w)


cdef inline bint _split_pairs(fm_bf16* param, uint16_t* low_bits, const fm_bf16* grad,
                              fm_bf16* velocity, Py_ssize_t pairs, const StateScalars* k,
                              bint has_weight_decay, bint has_momentum, bint nesterov,
                              bint first_step) noexcept nogil:
    """state_loop's split step with bfloat16 grads and velocity, two elements at a time
    as 32-bit words (element 2j in the low half, 2j+1 in the high half): joining, widening,
    rounding and splitting are then shifts and masks within 32-bit lanes, which vectorise
    without the shuffles that widening 16-bit lanes to 32 and packing them back take
    (those made the element-wise loop compute-bound: 16M elements 1.00x the float32
    kernel's time for 14 bytes to its 20). The same bits as state_loop. False (nothing
    done) unless every buffer is 4-byte aligned."""
    cdef uint32_t* top = <uint32_t*>param
    cdef uint32_t* low = <uint32_t*>low_bits
    cdef const uint32_t* g2 = <const uint32_t*>grad
    cdef uint32_t* v2 = <uint32_t*>velocity
    cdef Py_ssize_t j
    cdef uint32_t t, l, b0, b1, r0, r1
    cdef float v0 = 0.0, v1 = 0.0
    if ((<size_t>top | <size_t>low | <size_t>g2 | (<size_t>v2 if has_momentum else 0)) & 3):
        return False
    for j in range(pairs):
        t, l = top[j], low[j]
        if has_momentum:
            v0 = fm_bits_float(v2[j] << 16)
            v1 = fm_bits_float(v2[j] & 0xFFFF0000u)
        b0 = fm_float_bits(_element(fm_bits_float((t << 16) | (l & 0xFFFFu)),
                                    fm_bits_float(g2[j] << 16), &v0, k, has_weight_decay,
                                    has_momentum, nesterov, first_step))
        b1 = fm_float_bits(_element(fm_bits_float((t & 0xFFFF0000u) | (l >> 16)),
                                    fm_bits_float(g2[j] & 0xFFFF0000u), &v1, k,
                                    has_weight_decay, has_momentum, nesterov, first_step))
        if has_momentum:
            r0, r1 = fm_float_to_bf16(v0), fm_float_to_bf16(v1)
            v2[j] = r0 | (r1 << 16)
        top[j] = (b0 >> 16) | (b1 & 0xFFFF0000u)
        low[j] = (b0 & 0xFFFFu) | (b1 << 16)
    return True


cdef inline void state_loop(param_t* param, uint16_t* low_bits, const grad_t* grad,
                            state_t* velocity, Py_ssize_t n, const StateScalars* k,
                            bint has_weight_decay, bint has_momentum, bint nesterov,
                            bint first_step) noexcept nogil:
    """kernels.pxd's momentum_kernel (or sgd_kernel without momentum) in float32, in its
    rounding order, with the velocity widened and stored rounded, and a split param joined
    from and split back into ``param`` (top half) and ``low_bits`` (bottom half). The flags
    are constants of each specialisation (see _unswitched)."""
    cdef Py_ssize_t i, done = 0
    cdef float w, v = 0.0
    cdef uint32_t bits
    if param_t is fm_bf16 and grad_t is fm_bf16 and state_t is fm_bf16:
        if _split_pairs(param, low_bits, grad, velocity, n // 2, k, has_weight_decay,
                        has_momentum, nesterov, first_step):
            done = n - n % 2
    for i in range(done, n):
        if param_t is float:
            w = param[i]
        else:
            w = fm_bits_float((<uint32_t>param[i].bits << 16) | low_bits[i])
        if has_momentum:
            v = _widen_state(velocity[i])
        w = _element(w, _widen_grad(grad[i]), &v, k, has_weight_decay, has_momentum,
                     nesterov, first_step)
        if has_momentum:
            _store_state(&velocity[i], v)
        if param_t is float:
            param[i] = w
        else:
            bits = fm_float_bits(w)
            param[i].bits = <uint16_t>(bits >> 16)
            low_bits[i] = <uint16_t>bits


cdef inline void _momentum_loops(param_t* param, uint16_t* low_bits, const grad_t* grad,
                                 state_t* velocity, Py_ssize_t n, const StateScalars* k,
                                 bint has_weight_decay, bint nesterov,
                                 bint first_step) noexcept nogil:
    if has_weight_decay and nesterov:
        state_loop(param, low_bits, grad, velocity, n, k, True, True, True, first_step)
    elif has_weight_decay:
        state_loop(param, low_bits, grad, velocity, n, k, True, True, False, first_step)
    elif nesterov:
        state_loop(param, low_bits, grad, velocity, n, k, False, True, True, first_step)
    else:
        state_loop(param, low_bits, grad, velocity, n, k, False, True, False, first_step)


cdef inline void _unswitched(param_t* param, uint16_t* low_bits, const grad_t* grad,
                             state_t* velocity, Py_ssize_t n, const StateScalars* k,
                             bint has_weight_decay, bint has_momentum, bint nesterov,
                             bint first_step) noexcept nogil:
    """state_loop with every flag but maximize a constant: one loop per combination.
    With the flags as per-element selects the loop computed every variant and was
    compute-bound: 8.7 ms at 16M float32 + bf16 momentum, 2 threads, against 5.9 ms for
    the float32 kernel (20 bytes an element to its 16). The velocity's store, conditional
    without momentum, cannot be a select at all (no masked 16-bit store before AVX-512)."""
    if not has_momentum:
        if has_weight_decay:
            state_loop(param, low_bits, grad, velocity, n, k, True, False, False, False)
        else:
            state_loop(param, low_bits, grad, velocity, n, k, False, False, False, False)
    elif first_step:
        _momentum_loops(param, low_bits, grad, velocity, n, k, has_weight_decay, nesterov,
                        True)
    else:
        _momentum_loops(param, low_bits, grad, velocity, n, k, has_weight_decay, nesterov,
                        False)


cdef enum:
    # state-clip: grads scaled per block of this many elements (a float32 stack buffer in
    # L1, 4 KB) before the unscaled loops run on it
    SCALED_BLOCK = 1024


cdef inline void state_range(param_t* param, const grad_t* grad_format, state_t* state_format,
                             const StepScalars* s, const WorkItem* w, Py_ssize_t start,
                             Py_ssize_t stop) noexcept nogil:
    """One work item's [start, stop): the scalars rounded to float32 as the float32 step
    rounds them (kernels.pxd's sgd_step). ``grad_format`` and ``state_format`` only pick
    the specialisation (NULL).

    ``s.grad_coef != 1`` (global-norm clipping): each grad is read as
    ``float32(widen(grad) * float32(grad_coef))``, kernels.pxd read_grad's bits, by scaling
    a block of grads into a float32 buffer and running the same loops on it (a bfloat16
    grad widened is exact in float32, so the float32-grad specialisation gives its bits).
    The loops themselves stay as they are: ``grad_coef == 1`` runs them unchanged (no
    per-element cost; per call see docs/clipping-and-amp.md)."""
    cdef StateScalars k
    cdef bint has_momentum = s.sgd.momentum != 0.0
    cdef bint has_weight_decay = s.sgd.weight_decay != 0.0
    cdef bint nesterov = s.sgd.nesterov and has_momentum
    cdef bint first_step = w.first_step and has_momentum
    cdef uint16_t* low_bits = <uint16_t*>w.low_bits if param_t is fm_bf16 else NULL
    cdef state_t* velocity = <state_t*>w.velocity if has_momentum else NULL
    cdef const grad_t* grad = <const grad_t*>w.grad
    cdef float scaled[SCALED_BLOCK]
    cdef float coef
    cdef Py_ssize_t lo, hi, j
    k.neg_lr = <float>-s.sgd.lr
    k.momentum = <float>s.sgd.momentum
    k.one_minus_dampening = <float>(1.0 - s.sgd.dampening)
    k.weight_decay = <float>s.sgd.weight_decay
    k.maximize = s.sgd.maximize
    if s.grad_coef == 1.0:
        _unswitched(param + start, low_bits + start if param_t is fm_bf16 else NULL,
                    grad + start, velocity + start if has_momentum else NULL, stop - start,
                    &k, has_weight_decay, has_momentum, nesterov, first_step)
        return
    coef = <float>s.grad_coef
    lo = start
    while lo < stop:
        hi = min(stop, lo + SCALED_BLOCK)
        for j in range(hi - lo):
            scaled[j] = _widen_grad(grad[lo + j]) * coef
        _unswitched(param + lo, low_bits + lo if param_t is fm_bf16 else NULL,
                    <const float*>scaled, velocity + lo if has_momentum else NULL, hi - lo,
                    &k, has_weight_decay, has_momentum, nesterov, first_step)
        lo = hi


# The table's entries (elementwise_fn: the first written buffer, typed, then the item): one
# per combination, since Cython's fused types must appear in a signature. One entry for all
# six, switching on w.kernel, let gcc clone state_loop with some flags left variable: the
# split step at 64k elements in cache took 31 us instead of 23.

cdef inline void momentum_f32_bf16_state(float* param, const StepScalars* s, const WorkItem* w,
                                         Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    state_range(param, <const float*>NULL, <fm_bf16*>NULL, s, w, start, stop)


cdef inline void momentum_f32_f16_state(float* param, const StepScalars* s, const WorkItem* w,
                                        Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    state_range(param, <const float*>NULL, <fm_f16*>NULL, s, w, start, stop)


cdef inline void split_grad_f32_state_f32(fm_bf16* param, const StepScalars* s,
                                          const WorkItem* w, Py_ssize_t start,
                                          Py_ssize_t stop) noexcept nogil:
    state_range(param, <const float*>NULL, <float*>NULL, s, w, start, stop)


cdef inline void split_grad_f32_state_bf16(fm_bf16* param, const StepScalars* s,
                                           const WorkItem* w, Py_ssize_t start,
                                           Py_ssize_t stop) noexcept nogil:
    state_range(param, <const float*>NULL, <fm_bf16*>NULL, s, w, start, stop)


cdef inline void split_grad_bf16_state_f32(fm_bf16* param, const StepScalars* s,
                                           const WorkItem* w, Py_ssize_t start,
                                           Py_ssize_t stop) noexcept nogil:
    state_range(param, <const fm_bf16*>NULL, <float*>NULL, s, w, start, stop)


cdef inline void split_grad_bf16_state_bf16(fm_bf16* param, const StepScalars* s,
                                            const WorkItem* w, Py_ssize_t start,
                                            Py_ssize_t stop) noexcept nogil:
    state_range(param, <const fm_bf16*>NULL, <fm_bf16*>NULL, s, w, start, stop)
