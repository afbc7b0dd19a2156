"""The pure-NumPy baseline: the same API, signatures and errors as the compiled kernels.

It is the honest best NumPy can do: in-place ufuncs with ``out=``, scalars kept as Python
floats (so NumPy rounds them to the array's dtype, as torch does), no temporaries beyond the
one a formula needs. Every benchmark compares fastmomentum against it, and the tests use it
as an independent oracle (NumPy has no fused multiply-add, so it agrees with the kernels to
a few units in the last place, not bit for bit).
"""
import math

import numpy as np

from . import _ewm_api, _validation


def momentum_step(param, grad, velocity, *, lr, momentum=0.0, dampening=0.0,
                  weight_decay=0.0, nesterov=False, maximize=False, first_step=False,
                  momentum_dtype=None, rounding="torch", torch_threads=1, seed=None, step=0):
    """NumPy version of :func:`fastmomentum.momentum_step`."""
    if momentum_dtype is not None:
        return _momentum_step_state(param, grad, velocity, lr, momentum, dampening,
                                    weight_decay, nesterov, maximize, first_step,
                                    momentum_dtype)
    _validation.check_momentum_step(param, grad, velocity, lr, momentum, dampening,
                                    weight_decay, nesterov, maximize, first_step)
    mode, _, key = _validation.rounding_options("momentum_step", rounding, torch_threads,
                                                seed, step)
    if param.dtype.itemsize == 2:
        _half_step(param, grad, velocity, mode, key, lr=lr, momentum=momentum,
                   dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                   maximize=maximize, first_step=first_step)
        return
    lr, momentum = float(lr), float(momentum)
    dampening, weight_decay = float(dampening), float(weight_decay)
    if param.size == 0:
        return
    d = np.negative(grad) if maximize else grad
    if weight_decay != 0:
        scratch = np.multiply(param, weight_decay)
        d = np.add(scratch, d, out=scratch)
    if momentum != 0:
        if first_step:
            np.copyto(velocity, d)
        else:
            velocity *= momentum
            velocity += d if dampening == 0 else (1.0 - dampening) * d
        d = d + momentum * velocity if nesterov else velocity
    param -= lr * d


def _momentum_step_state(param, grad, velocity, lr, momentum, dampening, weight_decay,
                         nesterov, maximize, first_step, momentum_dtype):
    """``momentum_step(..., momentum_dtype=...)``: the float32 step on the widened velocity
    (a float32 scratch copy), the new velocity stored rounded (``astype``), the param
    updated with the unrounded one."""
    _validation.check_state_step([param], [grad], [velocity], lr, momentum, dampening,
                                 weight_decay, nesterov, momentum_dtype, "momentum_step")
    if param.size == 0:
        return
    wide = None
    if float(momentum) != 0:
        wide = velocity.astype(np.float32)
    momentum_step(param, grad, wide, lr=lr, momentum=momentum, dampening=dampening,
                  weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                  first_step=first_step)
    if wide is not None:
        np.copyto(velocity, wide, casting="unsafe")  # rounded to nearest even


def ema_update(average, value, decay):
    """NumPy version of :func:`fastmomentum.ema_update`."""
    _validation.check_ema_update(average, value, decay)
    decay = float(decay)
    if average.dtype.itemsize == 2:   # float16/bfloat16: float32 arithmetic, one rounding
        average[...] = ema_update(average.astype(np.float32), value.astype(np.float32), decay)
        return average
    average *= decay
    average += (1.0 - decay) * value
    return average


def _total_norm(grads, norm_type):
    """The grads' total norm as float (2-norm in float64 sums, or the largest magnitude)."""
    if norm_type == 2.0:
        return math.sqrt(sum(float(np.dot(g.ravel().astype(np.float64),
                                          g.ravel().astype(np.float64))) for g in grads))
    magnitudes = [float(np.max(np.abs(g))) for g in grads if g.size]
    return max(magnitudes, key=lambda m: (math.isnan(m), m)) if magnitudes else 0.0


def clip_coefficient(total, max_norm, dtype):
    """torch.nn.utils.clip_grad_norm_'s ``clamp(max_norm / (total + 1e-6), max=1)`` in
    ``dtype`` (torch: ``(total + 1e-6).reciprocal() * max_norm``)."""
    one = dtype.type(1.0)
    with np.errstate(all="ignore"):
        coef = (one / (dtype.type(total) + dtype.type(1e-6))) * dtype.type(max_norm)
    return one if coef > one else coef


def _scaled_grad(grad, coef):
    """A clipped grad as fastmomentum.SGD reads it: ``grad * coef`` in the grad's dtype,
    bfloat16/float16 grads through float32 (``round16(float32(grad * float32(coef)))``:
    the clipped grad written into its dtype)."""
    if grad.dtype.itemsize == 2:
        return (grad.astype(np.float32) * np.float32(coef)).astype(grad.dtype)
    return grad * grad.dtype.type(coef)


class SGD:
    """NumPy version of :class:`fastmomentum.SGD` (without ``ema``): a loop of
    :func:`momentum_step` over the params, clipping by scaling each grad first
    (:func:`_scaled_grad`); ``momentum_dtype`` as fastmomentum.SGD's."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False, *, clip_grad_norm=None, norm_type=2.0,
                 skip_if_nonfinite=False, write_clipped_grads=False, momentum_dtype=None):
        _validation.check_sgd_hyper("SGD", lr, momentum, dampening, weight_decay, nesterov)
        clip_grad_norm, norm_type = _validation.check_clipping(
            "SGD", clip_grad_norm, norm_type, skip_if_nonfinite)
        self.params = list(params)
        for i, p in enumerate(self.params):
            _validation.check_lead_array("SGD", f"params[{i}]", p)
        _validation.check_disjoint_all("SGD", "params", self.params)
        self.momentum_dtype = _validation.check_state_params("SGD", momentum_dtype,
                                                             self.params)
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov, self.maximize = weight_decay, nesterov, maximize
        self.clip_grad_norm, self.norm_type = clip_grad_norm, norm_type
        self.skip_if_nonfinite = bool(skip_if_nonfinite)
        self.write_clipped_grads = _validation.check_write_clipped_grads(
            "SGD", write_clipped_grads)
        _validation.check_write_back_fits("SGD", self.write_clipped_grads,
                                          self.momentum_dtype, self.params)
        self.momentum_buffers = None
        self.steps = 0
        self.last_grad_norm = None
        self.skipped_steps = 0

    def step(self, grads):
        grads = list(grads)
        first_step = self.momentum != 0 and self.momentum_buffers is None
        buffers = ([np.empty_like(p, dtype=self.momentum_dtype) for p in self.params]
                   if first_step else self.momentum_buffers)
        writes = _validation.check_write_clipped_grads("SGD.step", self.write_clipped_grads)
        _validation.check_write_back_fits("SGD.step", writes, self.momentum_dtype, self.params)
        if self.momentum_dtype is not None:
            _validation.check_state_step(self.params, grads, buffers, self.lr, self.momentum,
                                         self.dampening, self.weight_decay, self.nesterov,
                                         self.momentum_dtype, "SGD.step")
        else:
            _validation.check_multi_step(self.params, grads, buffers, None, self.lr,
                                         self.momentum, self.dampening, self.weight_decay,
                                         self.nesterov, self.maximize, 0.0, "SGD.step", writes)
        if writes:
            _validation.check_grads_apart("SGD.step", self.params, grads,
                                          buffers if self.momentum != 0 else None, None)
        clip, norm_type = _validation.check_clipping(
            "SGD.step", self.clip_grad_norm, self.norm_type, self.skip_if_nonfinite)
        if clip is not None or self.skip_if_nonfinite:
            # float32 unless a param is float64 (16-bit grads: their widened float32)
            dtype = np.dtype(np.float64 if any(p.dtype == np.float64 for p in self.params)
                             else np.float32)
            total = float(dtype.type(_total_norm(grads, norm_type)))
            self.last_grad_norm = total
            coef = None if clip is None else clip_coefficient(total, clip, dtype)
            if coef is not None and writes:  # clip_grad_norm_'s in-place scaling
                with np.errstate(invalid="ignore"):  # inf * 0: NaN, as torch's
                    for g in grads:
                        g *= g.dtype.type(coef)
            if self.skip_if_nonfinite and not math.isfinite(total):
                self.skipped_steps += 1
                return
            if coef is not None and not writes:
                grads = [_scaled_grad(g, coef) for g in grads]
        for i, (p, g) in enumerate(zip(self.params, grads)):
            momentum_step(p, g, buffers[i] if buffers else None, lr=self.lr,
                          momentum=self.momentum, dampening=self.dampening,
                          weight_decay=self.weight_decay, nesterov=self.nesterov,
                          maximize=self.maximize, first_step=first_step,
                          momentum_dtype=self.momentum_dtype)
        if first_step:
            self.momentum_buffers = buffers
        self.steps += 1


def _half_step(param, grad, velocity, mode, key, **options):
    """A float16/bfloat16 step: the float32 step on widened copies, each stored value
    rounded once (torch's for-loop rounds after every op instead: NumPy has no fused
    multiply-add to give its bits; the differences are a unit in the last place). With
    stochastic rounding (``mode`` 2) the param rounds with the kernels' random bits."""
    p = param.astype(np.float32)
    v = None if velocity is None else velocity.astype(np.float32)
    momentum_step(p, grad.astype(np.float32), v, **options)
    if v is not None and options["momentum"] != 0:
        velocity[...] = v
    param[...] = _stochastic_round(p, param.dtype, key) if mode == 2 else p


def _mix32(x):
    """fm_half_steps.pxd mix32 (lowbias32) on uint32 arrays."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def _stochastic_round(x, dtype, key):
    """float32 ``x`` rounded to ``dtype`` up or down at random, the farther neighbour
    with the probability of its distance, from the kernels' bits (fm_half_steps.pxd
    random_bits: a hash of ``key`` and the element index)."""
    index = np.arange(x.size, dtype=np.uint64)
    bits = _mix32(_mix32(index.astype(np.uint32) ^ np.uint32(key & 0xFFFFFFFF))
                  + (index >> np.uint64(32)).astype(np.uint32) + np.uint32(key >> 32))
    flat = x.reshape(-1)
    nearest = flat.astype(dtype)
    finite = np.isfinite(flat)
    if dtype != np.float16:   # bfloat16: random low bits carry into the kept half
        u = flat.view(np.uint32)
        carried = ((u + (bits >> np.uint32(16))) >> np.uint32(16)).astype(np.uint16)
        return np.where(finite, carried, nearest.view(np.uint16)).view(dtype).reshape(x.shape)
    h = nearest.view(np.uint16)
    near = nearest.astype(np.float32)
    towards_zero = (near > flat) == (near > 0)
    other_bits = np.where(near == 0, np.where(flat < 0, 0x8001, 0x0001),
                          np.where(towards_zero, h - 1, h + 1)).astype(np.uint16)
    other = other_bits.view(np.float16).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        far = ((bits >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)
               < (flat - near) / (other - near))
    far &= np.isfinite(near) & np.isfinite(other) & (near != flat)
    return np.where(far, other_bits, h).view(np.float16).reshape(x.shape)


# ---------------------------------------------------------------------------------------
# ewm_mean: pandas' exponentially weighted mean in pure NumPy.
#
# The honest best NumPy can do is not a Python loop over elements: every case is a linear
# recurrence y_t = beta_t*y_{t-1} + gamma_t, which NumPy solves blockwise. Within blocks of
# _EWM_BLOCK steps the solution is a matrix product with the weights beta^(t-s) (one BLAS
# matmul for all blocks and series when beta is constant; powers only ever <= 1, so nothing
# overflows), and the blocks' carries form a recurrence of the same kind, solved by the
# same function on a series _EWM_BLOCK times shorter.

_EWM_BLOCK = 32


def _scan(u, b):
    """y[:, t] = b*y[:, t-1] + u[:, t], y[:, -1] = 0, for a 2-D float64 ``u`` (rows are
    series) and a constant ``b`` in [0, 1]."""
    m, n = u.shape
    width = min(n, _EWM_BLOCK)
    lag = np.subtract.outer(np.arange(width), np.arange(width))
    weights = np.where(lag >= 0, np.power(b, np.maximum(lag, 0)), 0.0)   # b^(t-s), t >= s
    if n <= _EWM_BLOCK:
        return u @ weights.T
    blocks = -(-n // _EWM_BLOCK)
    padded = np.zeros((m, blocks * _EWM_BLOCK))
    padded[:, :n] = u
    local = padded.reshape(m, blocks, _EWM_BLOCK) @ weights.T
    # carry after each block, then into each block
    carry = _scan(np.ascontiguousarray(local[:, :, -1]), b ** _EWM_BLOCK)
    carry_in = np.zeros((m, blocks))
    carry_in[:, 1:] = carry[:, :-1]
    decay = np.power(b, np.arange(1, _EWM_BLOCK + 1))                  # b^(j+1)
    local += carry_in[:, :, None] * decay
    return local.reshape(m, -1)[:, :n]


def _varying_scan(beta, gamma, first):
    """y[k] = beta[k]*y[k-1] + gamma[k], y[-1] = ``first``, for 1-D float64 ``beta`` in
    [0, 1] and ``gamma``. Within a block the weights are exp(C_t - C_s) <= 1 with C the
    cumulative sum of log(beta)."""
    k = beta.size
    if k == 0:
        return np.empty(0)
    blocks = -(-k // _EWM_BLOCK)
    log_beta = np.zeros(blocks * _EWM_BLOCK)               # padding: beta = 1, gamma = 0
    log_beta[:k] = np.log(np.maximum(beta, 1e-300))   # a weight below 1e-300 counts as 0
    g = np.zeros(blocks * _EWM_BLOCK)
    g[:k] = gamma
    cum = np.cumsum(log_beta.reshape(blocks, _EWM_BLOCK), axis=1)
    lag = cum[:, :, None] - cum[:, None, :]
    lower = np.tri(_EWM_BLOCK, dtype=bool)
    weights = np.where(lower, np.exp(np.where(lower, lag, 0.0)), 0.0)
    local = np.einsum("kts,ks->kt", weights, g.reshape(blocks, _EWM_BLOCK))
    growth = np.exp(cum)                                   # prod of beta since block start
    if blocks == 1:
        carry_in = np.array([first])
    else:
        carry = _varying_scan(growth[:, -1], local[:, -1], first)
        carry_in = np.concatenate(([first], carry[:-1]))
    return (local + growth * carry_in[:, None]).reshape(-1)[:k]


def _ewm_observed(values, alpha, adjust):
    """pandas' mean of series (rows) without missing values."""
    b = 1.0 - alpha
    n = values.shape[1]
    if adjust:
        # zero-started sum of weighted values over the weight sum (1 - b^(t+1))/(1 - b)
        t = np.arange(1, n + 1)
        if b == 1.0:
            weight = t.astype(np.float64)
        elif b == 0.0:
            weight = np.ones(n)
        else:
            weight = -np.expm1(t * np.log(b)) / (1.0 - b)
        return _scan(values, b) / weight
    u = values * alpha
    u[:, 0] = values[:, 0]                                 # adjust=False starts at x_0
    return _scan(u, b)


def _spread(compact, observed):
    """Place the means of the observed values back on their time steps; a missing value
    keeps the previous mean (NaN before the first observation)."""
    rank = np.cumsum(observed) - 1
    result = np.full(observed.size, np.nan)
    seen = rank >= 0
    result[seen] = compact[rank[seen]]
    return result


def _ewm_rows(values, observed, com, adjust, ignore_na):
    """pandas' mean for each row of a float64 array; ``observed``: its finite values (NaN
    and inf are missing)."""
    alpha = 1.0 / (1.0 + com)
    if observed.all():
        return _ewm_observed(values, alpha, adjust)
    b = 1.0 - alpha
    if adjust and not ignore_na and b > 0.0:
        # weighted sum over weight sum, missing values ageing both; a missing value keeps
        # the previous mean (both sums may have underflowed in a long gap)
        ratio = (_scan(np.where(observed, values, 0.0), b)
                 / np.maximum(_scan(observed.astype(np.float64), b), 1.0))
        last = np.maximum.accumulate(np.where(observed, np.arange(values.shape[1]), -1),
                                     axis=1)
        held = np.take_along_axis(ratio, np.maximum(last, 0), axis=1)
        return np.where(last >= 0, held, np.nan)
    result = np.empty_like(values)
    for row, (x, seen) in enumerate(zip(values, observed)):
        steps = np.flatnonzero(seen)
        if steps.size == 0:
            result[row] = np.nan
            continue
        xs = x[steps]
        if ignore_na or b == 0.0:
            compact = _ewm_observed(xs[None, :], alpha, adjust)[0]
        else:
            # adjust=False across gaps: y = (w*y + v*x)/(w + v), w = b^(gap+1), v = alpha
            # (pandas 3 takes v = 1 - w when com == 1)
            old = np.power(b, np.diff(steps).astype(np.float64))
            new = 1.0 - old if com == 1.0 else alpha
            compact = np.empty(steps.size)
            compact[0] = xs[0]
            compact[1:] = _varying_scan(old / (old + new), new * xs[1:] / (old + new), xs[0])
        result[row] = _spread(compact, seen)
    return result


def ewm_mean(x, *, com=None, span=None, halflife=None, alpha=None, adjust=True,
             ignore_na=False, min_periods=0, axis=0, out=None, times=None):
    """NumPy version of :func:`fastmomentum.ewm_mean` (same arguments, results, errors).

    Blocked linear scans (see ``_scan``): per block a BLAS matrix product with the weights
    ``(1-alpha)^(t-s)``, the block carries by the same scan on a shorter series; missing
    values through weighted sums and weight sums, or a scan over the observed values.
    With ``times``: the family's recurrence (``_family_advance``)."""
    if times is not None:
        return _ewm_mean_times(x, times, com=com, span=span, halflife=halflife, alpha=alpha,
                               adjust=adjust, ignore_na=ignore_na, min_periods=min_periods,
                               axis=axis, out=out)
    x, out, com, min_periods, axis = _validation.prepare_ewm_mean(
        x, com, span, halflife, alpha, min_periods, axis, out)
    if x.size == 0:
        return out
    series = x[None, :] if x.ndim == 1 else (x.T if axis == 0 else x)
    target = out[None, :] if x.ndim == 1 else (out.T if axis == 0 else out)
    values = series.astype(np.float64, copy=False)
    observed = np.isfinite(values)
    result = _ewm_rows(values, observed, com, bool(adjust), bool(ignore_na))
    result[np.cumsum(observed, axis=1) < min_periods] = np.nan
    np.copyto(target, result, casting="same_kind")
    return out


# ---------------------------------------------------------------------------------------
# The exponentially weighted family (var, std, cov, corr, sum, times, EwmStream): pandas'
# recurrence is not linear in its state (its weights divide), so NumPy runs it one step at
# a time, vectorised across the series; the Python layer (checks, times, streams, combine)
# is fastmomentum's own (fastmomentum._ewm_api).

def _family_time_factors(values, previous, halflife, alpha):
    """NumPy version of ``fastmomentum._ewm_family.time_factors``."""
    values = values.astype(np.float64)
    deltas = np.diff(values, prepend=previous) / halflife
    if deltas.shape[0] and np.isnan(previous):
        deltas[0] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):   # alpha = 1: log2(0) = -inf
        return np.exp2(np.where(deltas == 0.0, 0.0, deltas * np.log2(1.0 - alpha)))


def _family_advance(kind, x, y, out, state, alpha, f0, factors, adjust, ignore_na, bias,
                    fills, min_periods, out_kind):
    """NumPy version of ``fastmomentum._ewm_family.advance`` (same contract, same state)."""
    if out is None:
        out = np.empty_like(x)
    if x.ndim == 1:
        _family_advance(kind, x[:, None], y[:, None], out[:, None], state, alpha, f0, factors,
                        adjust, ignore_na, bias, fills, min_periods, out_kind)
        return out
    (mean_x, mean_y, cov, old_wt, sum_wt2, nobs, decay, seed, lead_decay, x1, y1, var_x,
     var_y) = state
    b = 1.0 - alpha
    new_wt = 1.0 if adjust else alpha
    tiny = 1e-300
    with np.errstate(all="ignore"):
        for t in range(x.shape[0]):
            f = factors[t] if factors is not None else (f0 if t == 0 else b)
            xt, yt = x[t].astype(np.float64), y[t].astype(np.float64)
            obs = np.isfinite(xt) & np.isfinite(yt)
            step = obs | (not ignore_na)
            decay[step] = np.where(decay[step] * f >= tiny, decay[step] * f, 0.0)
            start = step & (nobs == 0) & obs
            going = step & (nobs > 0)
            for field, value in ((mean_x, xt), (mean_y, yt), (x1, xt), (y1, yt)):
                field[start] = value[start]
            lead_decay[start] = decay[start]
            nobs[start] = 1
            if kind == 1:
                mean_x[going] = f * mean_x[going]
                seen = going & obs
                mean_x[seen] += xt[seen]
                nobs[seen] += 1
            else:
                ow = old_wt * f             # flushed where no value is observed
                sw2 = np.where(sum_wt2 * (f * f) >= tiny, sum_wt2 * (f * f), 0.0)
                sum_wt2[going] = sw2[going]
                if adjust:
                    seed[going] = np.where(seed[going] * f >= tiny, seed[going] * f, 0.0)
                old_wt[going & ~obs] = np.where(ow >= tiny, ow, 0.0)[going & ~obs]
                seen = going & obs
                nobs[seen] += 1
                nw = 1.0 - ow if fills else np.full_like(ow, new_wt)
                inv = 1.0 / (ow + nw)
                a, c = ow * inv, nw * inv
                mo, my = mean_x.copy(), mean_y.copy()
                mn = np.where(mo != xt, a * mo + c * xt, mo)
                mean_x[seen] = mn[seen]
                if kind >= 2:
                    mny = np.where(my != yt, a * my + c * yt, my)
                    mean_y[seen] = mny[seen]
                    pairs = [(cov, mo, my, mn, mny, xt, yt)]
                    if kind == 3:
                        pairs += [(var_x, mo, mo, mn, mn, xt, xt), (var_y, my, my, mny, mny, yt, yt)]
                    for m_, u, v, nu, nv, xu, xv in pairs:
                        cv = a * m_ + (a * ((u - nu) * (v - nv)) + c * ((xu - nu) * (xv - nv)))
                        m_[seen] = cv[seen]
                    sum_wt2[seen] = sum_wt2[seen] + nw[seen] * nw[seen]
                if adjust:
                    old_wt[seen] = ow[seen] + nw[seen]
                else:
                    old_wt[seen] = 1.0
                    tot = ow[seen] + nw[seen]
                    sum_wt2[seen] = sum_wt2[seen] / (tot * tot)
                    sd = seed[seen] * a[seen]
                    seed[seen] = np.where(sd >= tiny, sd, 0.0)
            if kind == 3:
                v = cov / np.where(var_x * var_y < 0, 0.0, np.sqrt(var_x * var_y))
            elif kind == 2:
                v = cov.copy()
                if not bias:
                    num = old_wt * old_wt
                    den = num - sum_wt2
                    v = np.where(den > 0, (num / den) * v, np.nan)
                if out_kind == 1:
                    v = np.where(v < 0, 0.0, np.sqrt(v))
            else:
                v = mean_x.copy()
            out[t] = np.where(nobs >= min_periods, v, np.nan)
    return out


(ewm_var, ewm_std, ewm_cov, ewm_corr, ewm_sum, _ewm_mean_times,
 EwmStream) = _ewm_api.make_functions(_ewm_api.Family(_family_advance,
                                                            _family_time_factors))
