"""The descent loop shared by the demos: every update is one ``fastmomentum.momentum_step``."""
import numpy as np

from .. import momentum_step


def descend(gradient, start, *, lr, steps, momentum=0.0, nesterov=False):
    """Run ``steps`` in-place updates from ``start``; return the path, shape (steps+1, d).

    ``gradient(param, step)`` returns the float64 gradient at ``param`` for update number
    ``step`` (mini-batch demos pick their batch from it). The velocity starts the way
    torch's does: ``first_step=True`` on the first update, so it is the first gradient."""
    param = np.array(start, dtype=np.float64)
    velocity = np.zeros_like(param) if momentum else None
    path = np.empty((steps + 1,) + param.shape)
    path[0] = param
    for step in range(steps):
        momentum_step(param, gradient(param, step), velocity, lr=lr, momentum=momentum,
                      nesterov=nesterov, first_step=step == 0)
        path[step + 1] = param
    return path


def steps_to_tolerance(errors, tol):
    """First step after which ``errors[step] <= tol`` for good (None if never).

    "For good" matters for momentum: an oscillating path can cross the tolerance early
    and leave it again, and a first-crossing count would flatter it."""
    above = np.flatnonzero(np.asarray(errors) > tol)
    if above.size == 0:
        return 0
    last = int(above[-1])
    return None if last == len(errors) - 1 else last + 1
