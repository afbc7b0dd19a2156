"""The pure-NumPy baseline: the same API, signatures and errors as the compiled kernels.

It is the honest best NumPy can do: in-place ufuncs with ``out=``, scalars kept as Python
floats (so NumPy rounds them to the array's dtype, as torch does), no temporaries beyond the
one a formula needs. Every benchmark compares fastmomentum against it, and the tests use it
as an independent oracle (NumPy has no fused multiply-add, so it agrees with the kernels to
a few units in the last place, not bit for bit).
"""
import numpy as np

from . import _validation


def momentum_step(param, grad, velocity, *, lr, momentum=0.0, dampening=0.0,
                  weight_decay=0.0, nesterov=False, maximize=False, first_step=False):
    """NumPy version of :func:`fastmomentum.momentum_step`."""
    _validation.check_momentum_step(param, grad, velocity, lr, momentum, dampening,
                                    weight_decay, nesterov, maximize, first_step)
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


def ema_update(average, value, decay):
    """NumPy version of :func:`fastmomentum.ema_update`."""
    _validation.check_ema_update(average, value, decay)
    decay = float(decay)
    average *= decay
    average += (1.0 - decay) * value
    return average
