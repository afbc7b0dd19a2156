# cython: language_level=3
"""fastmomentum's C-level API for other Cython code.

    from fastmomentum.kernels cimport SgdParams, sgd_step, ema_step

    cdef SgdParams opts = SgdParams(lr=0.1, momentum=0.9, dampening=0.0,
                                    weight_decay=0.0, nesterov=False, maximize=False,
                                    first_step=False)
    sgd_step(&param[0], &grad[0], &velocity[0], n, &opts)   # float* or double*

``sgd_step_scaled`` / ``sgd_ema_step_scaled`` read each grad as ``grad * coef`` (rounded
to the buffer's type, not written back): global-norm clipping, AMP unscaling;
``sgd_step_scaled_store`` / ``sgd_ema_step_scaled_store`` also store that product back into
the (writable) grad, in the same pass.

The entry points (``sgd_step``, ``sgd_ema_step``, ``ema_step``) take the hyper-parameters
as ``fastmomentum.momentum_step`` does, in double, in one ``SgdParams`` struct, and round
them to the buffer's type as torch does: results are ``momentum_step``'s, bit for bit. The
loops below them (``momentum_kernel``, ``sgd_kernel``, ``ema_kernel``,
``momentum_ema_kernel``) take every scalar already rounded, positionally.

All are raw-pointer, serial, ``noexcept nogil`` loops over ``n`` contiguous elements, for
float32 (``float``) and float64 (``double``) alike: the loops the Python API runs, on one
thread. They are UNCHECKED: no type, size, alias or NaN checks; the caller guarantees valid
pointers of ``n`` elements each, that ``velocity`` (and ``average``) overlap no other
buffer, and the hyper-parameter rules of ``fastmomentum.momentum_step``.

They are ``inline``: cimporting this file compiles them into your module (no runtime import
of fastmomentum). Compile with ``-ffp-contract=off`` (and ``-mfma`` where you can) to keep the
exact rounding: every multiply-add below is an explicit ``fma``.
"""
from libc.math cimport fma, fmaf

ctypedef fused real:
    float
    double


cdef inline real fused_multiply_add(real a, real b, real c) noexcept nogil:
    """a*b + c rounded once (float32 needs fmaf: double-rounding through fma is not exact)."""
    if real is float:
        return fmaf(a, b, c)
    else:
        return fma(a, b, c)


cdef inline real read_grad(const real* grad, Py_ssize_t i, bint maximize, real grad_coef,
                           bint scales_grad, bint stores_grad) noexcept nogil:
    """``±grad[i]``, times ``grad_coef`` rounded to the dtype first when ``scales_grad`` (torch's
    ``clip_grad_norm_`` ``g.mul_(coef)`` and GradScaler's ``g * inv_scale``, then the step).
    ``stores_grad``: that product is also stored back into ``grad[i]`` (what torch's in-place
    ``g.mul_(coef)`` leaves; the caller's grad buffer is then writable): 4 more bytes an
    element in the pass that reads it anyway, instead of a separate 8-byte pass. Every loop
    takes both flags as constants, so the loops that do not scale or store do not pay for
    them."""
    cdef real g = grad[i] * grad_coef if scales_grad else grad[i]
    if stores_grad:
        (<real*>grad)[i] = g
    return -g if maximize else g


cdef inline void sgd_scaled_kernel(real* param, const real* grad, Py_ssize_t n, real neg_lr,
                                   real weight_decay, bint has_weight_decay, bint maximize,
                                   real grad_coef, bint scales_grad,
                                   bint stores_grad) noexcept nogil:
    """``sgd_kernel`` on ``grad * grad_coef`` (rounded) when ``scales_grad``, the product
    stored into ``grad`` when ``stores_grad`` (see read_grad)."""
    cdef Py_ssize_t i
    cdef real g
    for i in range(n):
        g = read_grad(grad, i, maximize, grad_coef, scales_grad, stores_grad)
        if has_weight_decay:
            g = fused_multiply_add(param[i], weight_decay, g)
        param[i] = fused_multiply_add(g, neg_lr, param[i])


cdef inline void sgd_kernel(real* param, const real* grad, Py_ssize_t n,
                            real neg_lr, real weight_decay,
                            bint has_weight_decay, bint maximize) noexcept nogil:
    """Momentum-free SGD: ``param -= lr * (±grad + weight_decay*param)``."""
    sgd_scaled_kernel(param, grad, n, neg_lr, weight_decay, has_weight_decay, maximize, 1,
                      False, False)


cdef inline void momentum_scaled_kernel(real* param, const real* grad, real* velocity,
                                        Py_ssize_t n, real neg_lr, real momentum,
                                        real one_minus_dampening, real weight_decay,
                                        bint has_weight_decay, bint nesterov, bint maximize,
                                        bint first_step, real grad_coef,
                                        bint scales_grad, bint stores_grad) noexcept nogil:
    """``momentum_kernel`` on ``grad * grad_coef`` (rounded) when ``scales_grad``, the product
    stored into ``grad`` when ``stores_grad`` (see read_grad)."""
    cdef Py_ssize_t i
    cdef real g, v
    for i in range(n):
        g = read_grad(grad, i, maximize, grad_coef, scales_grad, stores_grad)
        if has_weight_decay:
            g = fused_multiply_add(param[i], weight_decay, g)
        # velocity[i] is read even on the first step so the loop stays branch-free (the
        # select below discards it); first_step buffers may hold anything.
        v = g if first_step else fused_multiply_add(g, one_minus_dampening, velocity[i] * momentum)
        velocity[i] = v
        g = fused_multiply_add(v, momentum, g) if nesterov else v
        param[i] = fused_multiply_add(g, neg_lr, param[i])


cdef inline void momentum_kernel(real* param, const real* grad, real* velocity, Py_ssize_t n,
                                 real neg_lr, real momentum, real one_minus_dampening,
                                 real weight_decay, bint has_weight_decay, bint nesterov,
                                 bint maximize, bint first_step) noexcept nogil:
    """torch.optim.SGD's step for one buffer, in torch's rounding order:

    g = ±grad; g = fma(param, wd, g); v = first_step ? g : fma(g, 1-dampening, v*momentum);
    g = nesterov ? fma(v, momentum, g) : v; param = fma(g, -lr, param).
    """
    momentum_scaled_kernel(param, grad, velocity, n, neg_lr, momentum, one_minus_dampening,
                           weight_decay, has_weight_decay, nesterov, maximize, first_step, 1,
                           False, False)


cdef inline void ema_kernel(real* average, const real* value, Py_ssize_t n,
                            real decay, real one_minus_decay) noexcept nogil:
    """``average = decay*average + (1-decay)*value`` as ``fma(decay, average, (1-decay)*value)``."""
    cdef Py_ssize_t i
    for i in range(n):
        average[i] = fused_multiply_add(decay, average[i], one_minus_decay * value[i])


cdef inline void momentum_ema_scaled_kernel(real* param, const real* grad, real* velocity,
                                            real* average, Py_ssize_t n, real neg_lr,
                                            real momentum, real one_minus_dampening,
                                            real weight_decay, bint has_weight_decay,
                                            bint has_momentum, bint nesterov, bint maximize,
                                            bint first_step, real decay, real one_minus_decay,
                                            real grad_coef, bint scales_grad,
                                            bint stores_grad) noexcept nogil:
    """``momentum_ema_kernel`` on ``grad * grad_coef`` (rounded) when ``scales_grad``, the
    product stored into ``grad`` when ``stores_grad`` (see read_grad)."""
    cdef Py_ssize_t start = 0, block
    # 32k elements: a block of new weights stays in L2 between the two loops, and each loop
    # streams runs long enough for the hardware prefetchers. Measured at 16M float32: one
    # loop over all seven streams 0.7-0.9x of two separate passes, 2k-element (L1) blocks
    # 1.0x, 32k blocks 1.07x (1 thread) to 1.18x (2 threads).
    cdef Py_ssize_t BLOCK = 32768
    while start < n:
        block = min(BLOCK, n - start)
        if has_momentum:
            momentum_scaled_kernel(param + start, grad + start, velocity + start, block,
                                   neg_lr, momentum, one_minus_dampening, weight_decay,
                                   has_weight_decay, nesterov, maximize, first_step,
                                   grad_coef, scales_grad, stores_grad)
        else:
            sgd_scaled_kernel(param + start, grad + start, block, neg_lr, weight_decay,
                              has_weight_decay, maximize, grad_coef, scales_grad, stores_grad)
        ema_kernel(average + start, param + start, block, decay, one_minus_decay)
        start += block


cdef inline void momentum_ema_kernel(real* param, const real* grad, real* velocity,
                                     real* average, Py_ssize_t n, real neg_lr, real momentum,
                                     real one_minus_dampening, real weight_decay,
                                     bint has_weight_decay, bint has_momentum, bint nesterov,
                                     bint maximize, bint first_step, real decay,
                                     real one_minus_decay) noexcept nogil:
    """An SGD step (``momentum_kernel``, or ``sgd_kernel`` when ``not has_momentum``;
    ``velocity`` is then unused) followed by ``ema_kernel(average, param)`` on the new
    weights, block by block: each block of new weights is still in cache when the EMA reads
    it, so memory is crossed once, not twice. Same bits as the two kernels run one after
    the other; ``average`` must overlap none of the other buffers."""
    momentum_ema_scaled_kernel(param, grad, velocity, average, n, neg_lr, momentum,
                               one_minus_dampening, weight_decay, has_weight_decay,
                               has_momentum, nesterov, maximize, first_step, decay,
                               one_minus_decay, 1, False, False)


# ---------------------------------------------------------------------------------------
# Entry points: the scalars of fastmomentum.momentum_step / ema_update in one struct

# torch.optim.SGD's hyper-parameters for one step (see fastmomentum.momentum_step)
ctypedef struct SgdParams:
    double lr, momentum, dampening, weight_decay
    bint nesterov, maximize
    bint first_step   # torch's first step: velocity := g (its contents are not read)


cdef inline void _sgd_step_with(real* param, const real* grad, real* velocity, Py_ssize_t n,
                                const SgdParams* p, real grad_coef, bint scales_grad,
                                bint stores_grad) noexcept nogil:
    """The loop of ``p`` (with or without momentum); its callers pass the flags as
    constants (one specialised loop per call site)."""
    if p.momentum == 0.0:
        sgd_scaled_kernel(param, grad, n, <real>-p.lr, <real>p.weight_decay,
                          p.weight_decay != 0.0, p.maximize, grad_coef, scales_grad,
                          stores_grad)
    else:
        momentum_scaled_kernel(param, grad, velocity, n, <real>-p.lr, <real>p.momentum,
                               <real>(1.0 - p.dampening), <real>p.weight_decay,
                               p.weight_decay != 0.0, p.nesterov, p.maximize, p.first_step,
                               grad_coef, scales_grad, stores_grad)


cdef inline void sgd_step_scaled_by(real* param, const real* grad, real* velocity,
                                    Py_ssize_t n, const SgdParams* p, double grad_coef,
                                    bint stores_grad) noexcept nogil:
    """``sgd_step_scaled`` (``stores_grad`` False) or ``sgd_step_scaled_store`` (True: ``grad``
    must then be writable) by a flag tested only when ``grad_coef != 1``: the unscaled
    steps pay the one comparison they paid before write-back existed."""
    if grad_coef == 1.0:
        _sgd_step_with(param, grad, velocity, n, p, 1, False, False)
    elif stores_grad:
        _sgd_step_with(param, grad, velocity, n, p, <real>grad_coef, True, True)
    else:
        _sgd_step_with(param, grad, velocity, n, p, <real>grad_coef, True, False)


cdef inline void sgd_step_scaled(real* param, const real* grad, real* velocity, Py_ssize_t n,
                                 const SgdParams* p, double grad_coef) noexcept nogil:
    """``sgd_step`` with the gradient ``grad * grad_coef`` (``grad_coef`` rounded to the
    buffer's type, the product rounded too), read as the loop goes and not written back:
    the bits of torch's ``g.mul_(clip_coef)`` (``clip_grad_norm_``) or of GradScaler's
    unscaling, then ``torch.optim.SGD``'s step. ``grad_coef == 1`` runs ``sgd_step``'s own
    loops (multiplying by 1 changes no bit)."""
    sgd_step_scaled_by(param, grad, velocity, n, p, grad_coef, False)


cdef inline void sgd_step_scaled_store(real* param, real* grad, real* velocity, Py_ssize_t n,
                                       const SgdParams* p, double grad_coef) noexcept nogil:
    """``sgd_step_scaled``, and each ``grad[i]`` left holding ``grad[i] * grad_coef`` (rounded:
    what torch's ``clip_grad_norm_`` / ``GradScaler.unscale_`` leave in the grads), stored in
    the same pass. ``grad_coef == 1`` stores nothing (the grads already hold the product)."""
    sgd_step_scaled_by(param, grad, velocity, n, p, grad_coef, True)


cdef inline void sgd_step(real* param, const real* grad, real* velocity, Py_ssize_t n,
                          const SgdParams* p) noexcept nogil:
    """``fastmomentum.momentum_step(param, grad, velocity, **p)`` on ``n`` elements;
    ``velocity`` is not touched (may be NULL) when ``p.momentum == 0``."""
    sgd_step_scaled(param, grad, velocity, n, p, 1.0)


cdef inline void ema_step(real* average, const real* value, Py_ssize_t n,
                          double decay) noexcept nogil:
    """``fastmomentum.ema_update(average, value, decay)`` on ``n`` elements."""
    ema_kernel(average, value, n, <real>decay, <real>(1.0 - decay))


cdef inline void _sgd_ema_step_with(real* param, const real* grad, real* velocity,
                                    real* average, Py_ssize_t n, const SgdParams* p,
                                    double decay, real grad_coef, bint scales_grad,
                                    bint stores_grad) noexcept nogil:
    """momentum_ema_scaled_kernel with ``p``'s scalars; flags constant at each call site."""
    cdef bint has_momentum = p.momentum != 0.0
    momentum_ema_scaled_kernel(param, grad, velocity if has_momentum else NULL, average, n,
                               <real>-p.lr, <real>p.momentum if has_momentum else 0,
                               <real>(1.0 - p.dampening) if has_momentum else 1,
                               <real>p.weight_decay, p.weight_decay != 0.0, has_momentum,
                               p.nesterov, p.maximize, p.first_step, <real>decay,
                               <real>(1.0 - decay), grad_coef, scales_grad, stores_grad)


cdef inline void sgd_ema_step_scaled_by(real* param, const real* grad, real* velocity,
                                        real* average, Py_ssize_t n, const SgdParams* p,
                                        double decay, double grad_coef,
                                        bint stores_grad) noexcept nogil:
    """``sgd_ema_step_scaled`` or (``stores_grad``) ``sgd_ema_step_scaled_store``, the flag
    tested only when ``grad_coef != 1`` (as sgd_step_scaled_by)."""
    if grad_coef == 1.0:
        _sgd_ema_step_with(param, grad, velocity, average, n, p, decay, 1, False, False)
    elif stores_grad:
        _sgd_ema_step_with(param, grad, velocity, average, n, p, decay, <real>grad_coef, True,
                           True)
    else:
        _sgd_ema_step_with(param, grad, velocity, average, n, p, decay, <real>grad_coef, True,
                           False)


cdef inline void sgd_ema_step_scaled(real* param, const real* grad, real* velocity,
                                     real* average, Py_ssize_t n, const SgdParams* p,
                                     double decay, double grad_coef) noexcept nogil:
    """``sgd_step_scaled`` then ``ema_step(average, param, decay)`` with the new weights, in
    one pass over memory (momentum_ema_scaled_kernel): the bits of the two one after the
    other."""
    sgd_ema_step_scaled_by(param, grad, velocity, average, n, p, decay, grad_coef, False)


cdef inline void sgd_ema_step_scaled_store(real* param, real* grad, real* velocity,
                                           real* average, Py_ssize_t n, const SgdParams* p,
                                           double decay, double grad_coef) noexcept nogil:
    """``sgd_ema_step_scaled`` with the product stored back into ``grad`` as
    ``sgd_step_scaled_store`` does."""
    sgd_ema_step_scaled_by(param, grad, velocity, average, n, p, decay, grad_coef, True)


cdef inline void sgd_ema_step(real* param, const real* grad, real* velocity, real* average,
                              Py_ssize_t n, const SgdParams* p, double decay) noexcept nogil:
    """``sgd_step`` then ``ema_step(average, param, decay)`` with the new weights, in one
    pass over memory (momentum_ema_kernel): the bits of the two one after the other."""
    sgd_ema_step_scaled(param, grad, velocity, average, n, p, decay, 1.0)
