# The element-wise steps on bfloat16 and float16 buffers (param, grad, velocity and average
# all of one 16-bit dtype): float32 arithmetic, the storage conversions of fm_half.h. Built
# once per CPU target like fm_elementwise.pxd; each function is one CoreTable entry
# (SGD_BF16 ... EMA_F16), its dtype one specialisation of the fused type ``half``.
#
# Three ways to round (StepScalars.rounding, see docs/mixed-precision.md):
# * ROUND_TORCH: torch.optim.SGD's for-loop on such tensors. Each torch op computes in
#   float32 and rounds its result to the dtype: ``buf.mul_(momentum)`` with momentum in
#   float32, and every ``a.add(b, alpha=x)`` with x rounded to the dtype, as
#   ``round(fma(b, x, a))`` in torch's vectorised loop (Vectorized<BFloat16>::fmadd) but as
#   ``round(a + round(x*b))`` in its scalar loop (c10::BFloat16's operators), which runs
#   the last ``len % (2 * vector lanes)`` elements of each of its threads' chunks
#   (cpu/Loops.h vectorized_loop; parallel_for splits a tensor of 32768+ elements into
#   min(threads, ceil(n / 32768)) equal chunks). The bits therefore depend on torch's
#   thread count and vector width: StepScalars.torch_threads / torch_lanes.
# * ROUND_ONCE: the float32 step of fastmomentum/kernels.pxd on the widened values, each
#   stored value rounded once to nearest even (torch 2.14's fused CPU kernel).
# * ROUND_STOCHASTIC: as ROUND_ONCE, but the param is rounded up or down at random with
#   the probability of its distance (unbiased); the random bits are a hash of the seed,
#   the step and the element's index in the whole work list (WorkItem.offset + i), so no
#   split of the work changes a bit.
from libc.math cimport fmaf
from libc.stdint cimport uint16_t, uint32_t, uint64_t

from fm_core_table cimport (OP_EMA, ROUND_ONCE, ROUND_STOCHASTIC, ROUND_TORCH, StepScalars,
                            WorkItem)
from fm_half cimport (fm_bf16, fm_bf16_rounded, fm_bf16_to_float, fm_bits_float, fm_f16,
                     fm_f16_to_float, fm_float_bits, fm_float_to_bf16, fm_float_to_f16)

ctypedef fused half:
    fm_bf16
    fm_f16

# torch's parallel_for grain for element-wise ops (at::internal::GRAIN_SIZE)
cdef enum:
    TORCH_GRAIN = 32768


cdef inline float widen(const half* x) noexcept nogil:
    if half is fm_bf16:
        return fm_bf16_to_float(x.bits)
    else:
        return fm_f16_to_float(x.bits)


cdef inline void store(half* x, float f) noexcept nogil:
    if half is fm_bf16:
        x.bits = fm_float_to_bf16(f)
    else:
        x.bits = fm_float_to_f16(f)


cdef inline float rounded(float f, const half* kind) noexcept nogil:
    """``f`` rounded to the dtype of ``kind`` (not read) and widened back."""
    if half is fm_bf16:
        return fm_bf16_rounded(f)
    else:
        return fm_f16_to_float(fm_float_to_f16(f))


cdef inline uint16_t to_bits(float f, const half* kind) noexcept nogil:
    """``f`` rounded to the dtype of ``kind`` (not read), as its bits."""
    if half is fm_bf16:
        return fm_float_to_bf16(f)
    else:
        return fm_float_to_f16(f)


cdef inline float from_bits(uint16_t bits, const half* kind) noexcept nogil:
    if half is fm_bf16:
        return fm_bf16_to_float(bits)
    else:
        return fm_f16_to_float(bits)


cdef inline uint16_t torch_add(float a, float b, float alpha, bint scalar_loop,
                               const half* kind) noexcept nogil:
    """torch's ``a.add(b, alpha=alpha)`` (alpha already rounded to the dtype), as the bits
    it stores: the vectorised loop's ``round(fma(b, alpha, a))`` or the scalar loop's
    ``round(a + round(alpha*b))``."""
    if scalar_loop:
        return to_bits(a + rounded(alpha * b, kind), kind)
    return to_bits(fmaf(b, alpha, a), kind)


cdef inline float torch_add_value(float a, float b, float alpha, bint scalar_loop,
                                  const half* kind) noexcept nogil:
    """torch_add's result widened back (bfloat16: computed without leaving float32's
    lanes, see fm_bf16_rounded)."""
    if half is fm_bf16:
        if scalar_loop:
            return rounded(a + rounded(alpha * b, kind), kind)
        return rounded(fmaf(b, alpha, a), kind)
    else:
        return from_bits(torch_add(a, b, alpha, scalar_loop, kind), kind)


cdef inline float flip(float g, uint32_t sign) noexcept nogil:
    """``-g`` if ``sign`` is 0x80000000, ``g`` if 0: maximize as an xor of the sign bit (the
    bits of ``-g``, NaN included), where ``-g if maximize else g`` was a select per element
    (vxorps and vblendvps)."""
    return fm_bits_float(fm_float_bits(g) ^ sign)


cdef inline uint32_t mix32(uint32_t x) noexcept nogil:
    """A 32-bit integer hash (lowbias32: full avalanche, two multiplies)."""
    x ^= x >> 16
    x *= 0x7feb352du
    x ^= x >> 15
    x *= 0x846ca68bu
    x ^= x >> 16
    return x


cdef inline uint32_t random_bits(uint64_t key, Py_ssize_t index) noexcept nogil:
    """32 random bits for element ``index`` of a step keyed by ``key`` (seed and step)."""
    cdef uint64_t i = <uint64_t>index
    return mix32(mix32(<uint32_t>i ^ <uint32_t>key) + <uint32_t>(i >> 32)
                 + <uint32_t>(key >> 32))


cdef inline void store_stochastic(half* x, float f, uint32_t bits) noexcept nogil:
    """Store ``f`` rounded to one of its two neighbours in the dtype, the farther with the
    probability of its distance (``bits``: uniform). NaN, inf and values beyond the
    dtype's range round to nearest."""
    cdef uint32_t u
    cdef float near, other
    cdef uint16_t h, h2
    if half is fm_bf16:
        # the 16 dropped bits plus 16 random ones carry into the kept half with the
        # probability of the dropped fraction
        u = fm_float_bits(f)
        if (u & 0x7F800000u) == 0x7F800000u:
            x.bits = fm_float_to_bf16(f)
        else:
            x.bits = <uint16_t>((u + (bits >> 16)) >> 16)
    else:
        h = fm_float_to_f16(f)
        near = fm_f16_to_float(h)
        # the other neighbour: one step of the magnitude from near towards f
        if near == 0:
            h2 = 0x8001u if f < 0 else 0x0001u
        else:
            h2 = <uint16_t>(h - 1 if (near > f) == (near > 0) else h + 1)
        other = fm_f16_to_float(h2)
        # 24 random bits as a uniform in [0, 1) (2^-24 = 5.96e-08)
        if (near != f and near - near == 0 and other - other == 0
                and <float>(bits >> 8) * <float>5.9604644775390625e-08
                    < (f - near) / (other - near)):
            h = h2
        x.bits = h


cdef struct HalfScalars:
    float neg_lr, weight_decay, one_minus_dampening, momentum_add  # rounded to the dtype
    float momentum_mul                                          # float32 (torch's mul_)
    float f_neg_lr, f_weight_decay, f_one_minus_dampening, f_momentum  # float32 (ONCE)
    uint32_t sign                                               # maximize: see flip
    bint has_weight_decay, has_momentum, nesterov, first_step


cdef inline HalfScalars half_scalars(const StepScalars* s, const WorkItem* w,
                                     const half* kind) noexcept nogil:
    cdef HalfScalars k
    k.neg_lr = rounded(<float>-s.sgd.lr, kind)
    k.weight_decay = rounded(<float>s.sgd.weight_decay, kind)
    k.one_minus_dampening = rounded(<float>(1.0 - s.sgd.dampening), kind)
    k.momentum_add = rounded(<float>s.sgd.momentum, kind)
    k.momentum_mul = <float>s.sgd.momentum
    k.f_neg_lr, k.f_weight_decay = <float>-s.sgd.lr, <float>s.sgd.weight_decay
    k.f_one_minus_dampening, k.f_momentum = <float>(1.0 - s.sgd.dampening), <float>s.sgd.momentum
    k.has_weight_decay = s.sgd.weight_decay != 0.0
    k.has_momentum = s.sgd.momentum != 0.0 and w.velocity != NULL
    k.sign = 0x80000000u if s.sgd.maximize else 0
    k.nesterov, k.first_step = s.sgd.nesterov, w.first_step
    return k


cdef inline void torch_loop(half* param, const half* grad, half* velocity, Py_ssize_t n,
                            HalfScalars k, bint scalar_loop, bint weight_decay,
                            bint momentum, bint nesterov, bint first_step) noexcept nogil:
    """torch's for-loop step (ROUND_TORCH) on n elements, all in its vectorised or all in
    its scalar loop. The flags are literals at every call (torch_flag_loops): each
    combination compiles to its own loop, without the selects that computed weight decay
    and nesterov's roundings for every element whether asked or not (float16 momentum
    step, 16M elements, 2 threads: 84 ms with selects; see docs/mixed-precision.md).
    ``k`` by value: its fields are loop invariants, not loads a store through ``param``
    might change. Each stored value keeps the bits torch_add rounded (no second
    conversion)."""
    cdef Py_ssize_t i
    cdef float g, v
    cdef uint16_t v_bits
    for i in range(n):
        g = flip(widen(&grad[i]), k.sign)
        if weight_decay:
            g = torch_add_value(g, widen(&param[i]), k.weight_decay, scalar_loop, param)
        if momentum:
            if first_step:
                v_bits = to_bits(g, param)   # exact: g is a value of the dtype
                v = g
            elif half is fm_bf16:
                # the value rounded in float32's lanes; its bits are its top half
                v = torch_add_value(rounded(widen(&velocity[i]) * k.momentum_mul, param), g,
                                    k.one_minus_dampening, scalar_loop, param)
                v_bits = <uint16_t>(fm_float_bits(v) >> 16)
            else:
                v_bits = torch_add(rounded(widen(&velocity[i]) * k.momentum_mul, param), g,
                                   k.one_minus_dampening, scalar_loop, param)
                v = from_bits(v_bits, param)
            velocity[i].bits = v_bits
            g = torch_add_value(g, v, k.momentum_add, scalar_loop, param) if nesterov else v
        param[i].bits = torch_add(widen(&param[i]), g, k.neg_lr, scalar_loop, param)


cdef inline void torch_flag_loops(half* param, const half* grad, half* velocity,
                                  Py_ssize_t n, const HalfScalars* k) noexcept nogil:
    """torch_loop's vectorised loop specialised on the step's flags (literal arguments: one
    loop each; a flag tested inside the loop, even a loop invariant, kept gcc 12 from
    vectorising it)."""
    cdef bint wd = k.has_weight_decay
    if not k.has_momentum:
        if wd:
            torch_loop(param, grad, velocity, n, k[0], False, True, False, False, False)
        else:
            torch_loop(param, grad, velocity, n, k[0], False, False, False, False, False)
    elif k.first_step:
        # first steps: one per buffer, nesterov's select costs little here
        if wd:
            torch_loop(param, grad, velocity, n, k[0], False, True, True, k.nesterov,
                       True)
        else:
            torch_loop(param, grad, velocity, n, k[0], False, False, True, k.nesterov,
                       True)
    elif k.nesterov:
        if wd:
            torch_loop(param, grad, velocity, n, k[0], False, True, True, True, False)
        else:
            torch_loop(param, grad, velocity, n, k[0], False, False, True, True, False)
    elif wd:
        torch_loop(param, grad, velocity, n, k[0], False, True, True, False, False)
    else:
        torch_loop(param, grad, velocity, n, k[0], False, False, True, False, False)


cdef inline void once_store(half* param, float p, bint stochastic, uint64_t key,
                            Py_ssize_t index) noexcept nogil:
    if stochastic:
        store_stochastic(param, p, random_bits(key, index))
    else:
        store(param, p)


cdef inline void once_loop(half* param, const half* grad, half* velocity, Py_ssize_t n,
                           HalfScalars k, bint stochastic, uint64_t key, Py_ssize_t index,
                           bint weight_decay, bint momentum, bint nesterov,
                           bint first_step) noexcept nogil:
    """The float32 step (kernels.pxd momentum_kernel / sgd_kernel) with one rounding per
    stored value: ROUND_ONCE, or with ``stochastic`` the param's stochastic rounding
    (element i's bits from ``index + i``). ROUND_ONCE passes the flags as literals
    (once_flag_loops: one loop each, as torch_loop); with the flags as per-element selects
    the loop computed weight decay, both velocity updates and nesterov's for every element
    and spilled their masks (callgrind, 1M-element bfloat16 momentum step, one thread:
    6.0 instructions an element, 4.56 specialised; benchmarks/half_ir)."""
    cdef Py_ssize_t i
    cdef float g, v, p
    for i in range(n):
        p = widen(&param[i])
        g = flip(widen(&grad[i]), k.sign)
        if weight_decay:
            g = fmaf(p, k.f_weight_decay, g)
        if momentum:
            if first_step:
                v = g
            else:
                v = fmaf(g, k.f_one_minus_dampening, widen(&velocity[i]) * k.f_momentum)
            store(&velocity[i], v)
            g = fmaf(v, k.f_momentum, g) if nesterov else v
        once_store(&param[i], fmaf(g, k.f_neg_lr, p), stochastic, key, index + i)


cdef inline void once_flag_loops(half* param, const half* grad, half* velocity,
                                 Py_ssize_t n, const HalfScalars* k) noexcept nogil:
    """once_loop (ROUND_ONCE) specialised on the step's flags, as torch_flag_loops."""
    cdef bint wd = k.has_weight_decay
    if not k.has_momentum:
        if wd:
            once_loop(param, grad, velocity, n, k[0], False, 0, 0, True, False, False, False)
        else:
            once_loop(param, grad, velocity, n, k[0], False, 0, 0, False, False, False, False)
    elif k.first_step:
        if wd:
            once_loop(param, grad, velocity, n, k[0], False, 0, 0, True, True, k.nesterov,
                      True)
        else:
            once_loop(param, grad, velocity, n, k[0], False, 0, 0, False, True, k.nesterov,
                      True)
    elif k.nesterov:
        if wd:
            once_loop(param, grad, velocity, n, k[0], False, 0, 0, True, True, True, False)
        else:
            once_loop(param, grad, velocity, n, k[0], False, 0, 0, False, True, True, False)
    elif wd:
        once_loop(param, grad, velocity, n, k[0], False, 0, 0, True, True, False, False)
    else:
        once_loop(param, grad, velocity, n, k[0], False, 0, 0, False, True, False, False)


cdef inline void torch_range(half* param, const half* grad, half* velocity,
                             const StepScalars* s, const WorkItem* w, const HalfScalars* k,
                             Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """[start, stop) of the item by torch's loops: each of torch's chunks of the buffer
    runs its vectorised loop over whole groups of ``torch_lanes`` elements, its scalar loop
    over the rest (torch_lanes 0: no vector loop). ``grad`` is element ``start``'s (it may
    be a block of scaled grads: see half_step_range)."""
    cdef Py_ssize_t n = w.size, chunks = 1, chunk, begin, end, vector_end, lo, hi
    if n >= TORCH_GRAIN and s.torch_threads > 1:
        chunks = min(<Py_ssize_t>s.torch_threads, (n + TORCH_GRAIN - 1) // TORCH_GRAIN)
    chunk = (n + chunks - 1) // chunks
    begin = (start // chunk) * chunk
    while begin < stop:
        end = min(begin + chunk, n)
        vector_end = begin + ((end - begin) // s.torch_lanes) * s.torch_lanes \
            if s.torch_lanes > 0 else begin
        lo, hi = max(start, begin), min(stop, vector_end)
        if lo < hi:
            torch_flag_loops(param + lo, grad + (lo - start),
                             velocity + lo if velocity != NULL else NULL, hi - lo, k)
        lo, hi = max(start, vector_end), min(stop, end)
        if lo < hi:
            # the scalar loop's few elements (under torch_lanes a chunk): one loop for all
            # flags, tested per element (specialising it too outgrew gcc's inlining budget)
            torch_loop(param + lo, grad + (lo - start),
                       velocity + lo if velocity != NULL else NULL, hi - lo, k[0], True,
                       k.has_weight_decay, k.has_momentum, k.nesterov, k.first_step)
        begin = end


cdef inline void half_ema_loop(half* average, const half* value, Py_ssize_t n, float decay,
                               float one_minus_decay) noexcept nogil:
    """The float32 EMA (kernels.pxd ema_kernel), the average rounded once."""
    cdef Py_ssize_t i
    for i in range(n):
        store(&average[i], fmaf(decay, widen(&average[i]), one_minus_decay * widen(&value[i])))


cdef enum:
    # state-clip: grads scaled per block of this many elements (a stack buffer in L1)
    HALF_SCALED_BLOCK = 1024


cdef inline void half_step_range(half* param, const StepScalars* s, const WorkItem* w,
                                 Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """One item's SGD step over [start, stop) (SGD_*, MOMENTUM_* and FUSED_* entries),
    then, with an average, its EMA of the new weights block by block (as
    kernels.pxd momentum_ema_kernel: the new weights still in cache).

    ``s.grad_coef != 1`` (global-norm clipping of 16-bit params, fastmomentum.SGD): each
    grad is read as ``round16(float32(widen(grad) * float32(grad_coef)))``, the bits of
    writing the clipped grad into its dtype and then stepping: a block of grads is scaled
    into a stack buffer of the dtype and the unchanged loops run on it (``grad_coef == 1``
    runs them as they are; see docs/clipping-and-amp.md for the per-call cost)."""
    cdef HalfScalars k = half_scalars(s, w, param)
    cdef const half* grad = <const half*>w.grad
    cdef const half* block_grad
    cdef half* velocity = <half*>w.velocity
    cdef half* average = <half*>w.average
    cdef half scaled[HALF_SCALED_BLOCK]
    cdef bint scales = s.grad_coef != 1.0
    cdef float coef = <float>s.grad_coef
    cdef Py_ssize_t lo = start, hi, j
    cdef Py_ssize_t block = (HALF_SCALED_BLOCK if scales
                             else stop - start if average == NULL else 32768)
    while lo < stop:
        hi = min(stop, lo + block)
        block_grad = grad + lo
        if scales:
            for j in range(hi - lo):
                store(&scaled[j], widen(&grad[lo + j]) * coef)
            block_grad = scaled
        if s.rounding == ROUND_TORCH:
            torch_range(param, block_grad, velocity, s, w, &k, lo, hi)
        elif s.rounding == ROUND_ONCE:
            once_flag_loops(param + lo, block_grad,
                            velocity + lo if velocity != NULL else NULL, hi - lo, &k)
        else:
            # stochastic: one loop, the flags tested per element (its hash dominates)
            once_loop(param + lo, block_grad, velocity + lo if velocity != NULL else NULL,
                      hi - lo, k, True, s.stochastic_key, w.offset + lo, k.has_weight_decay,
                      k.has_momentum, k.nesterov, k.first_step)
        if average != NULL:
            half_ema_loop(average + lo, param + lo, hi - lo, <float>s.decay,
                          <float>(1.0 - s.decay))
        lo = hi


cdef inline void half_ema_range(half* average, const StepScalars* s, const WorkItem* w,
                                Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    half_ema_loop(average + start, <const half*>w.value + start, stop - start,
                  <float>s.decay, <float>(1.0 - s.decay))
