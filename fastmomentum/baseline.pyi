# Stub of fastmomentum.baseline: the same signatures as the compiled kernels (fastmomentum).
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ._types import FloatArray, Scalar
from . import ema_update as ema_update
from . import ewm_mean as ewm_mean
from . import momentum_step as momentum_step
from . import EwmStream as EwmStream
from . import ewm_corr as ewm_corr
from . import ewm_cov as ewm_cov
from . import ewm_std as ewm_std
from . import ewm_sum as ewm_sum
from . import ewm_var as ewm_var

def clip_coefficient(total: float, max_norm: float, dtype: np.dtype[Any]) -> np.floating[Any]: ...

class SGD:
    # the hyper-parameters are plain attributes too, as on fastmomentum.SGD
    params: list[FloatArray]
    momentum_buffers: list[FloatArray] | None
    momentum_dtype: np.dtype[Any] | None
    last_grad_norm: float | None
    skipped_steps: int
    write_clipped_grads: bool
    def __init__(self, params: Iterable[FloatArray], lr: Scalar, momentum: Scalar = 0.0,
                 dampening: Scalar = 0.0, weight_decay: Scalar = 0.0, nesterov: bool = False,
                 maximize: bool = False, *, clip_grad_norm: Scalar | None = None,
                 norm_type: float = 2.0, skip_if_nonfinite: bool = False,
                 write_clipped_grads: bool = False,
                 momentum_dtype: DTypeLike | None = None) -> None: ...
    def step(self, grads: Sequence[FloatArray] | Iterable[FloatArray]) -> None: ...
