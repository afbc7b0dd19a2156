"""What several test files share: the float dtypes, torch.optim.SGD's option grid, and
byte snapshots of buffers (to prove a refused call changed nothing)."""
import itertools

import numpy as np

DTYPES = [np.float32, np.float64]

#: Every option combination torch accepts (nesterov needs momentum and no dampening).
SGD_OPTIONS = [
    dict(momentum=m, dampening=d, weight_decay=wd, nesterov=nest, maximize=mx)
    for m, d, wd, nest, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (0.0, 0.01),
                                                 (False, True), (False, True))
    if not (nest and (m == 0 or d != 0))
]


def option_id(options):
    """A short test id: the options that are set."""
    return ",".join(f"{k}={v}" for k, v in options.items() if v)


def snapshot(*arrays):
    """Every buffer's bytes, to compare before and after."""
    return [bytes(np.ascontiguousarray(a).view(np.uint8)) for a in arrays]
