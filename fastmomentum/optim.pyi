# Stub of fastmomentum.optim: SGD and EMA over lists of NumPy arrays.
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ._types import FloatArray, Rounding, Scalar
from .flat import FlatParams

class EMA:
    decay: float
    warmup: bool
    debias: bool
    raw_averages: list[FloatArray]
    updates: int
    def __init__(self, params: Iterable[FloatArray], decay: Scalar = 0.999, *,
                 warmup: bool = False, debias: bool = False) -> None: ...
    def next_decay(self) -> float: ...
    def update(self, params: Iterable[FloatArray]) -> None: ...
    @property
    def averages(self) -> list[FloatArray]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...

class SGD:
    params: list[FloatArray]
    flat: FlatParams | None
    lr: Scalar
    momentum: Scalar
    dampening: Scalar
    weight_decay: Scalar
    nesterov: bool
    maximize: bool
    ema: EMA | None
    momentum_dtype: np.dtype[Any] | None
    # float32/float64 as the params (the stub does not spell momentum_dtype's bfloat16)
    momentum_buffers: list[FloatArray] | None
    steps: int
    clip_grad_norm: float | None
    norm_type: float
    skip_if_nonfinite: bool
    write_clipped_grads: bool
    last_grad_norm: float | None
    skipped_steps: int
    rounding: Rounding
    torch_threads: int
    seed: int | None
    def __init__(self, params: Iterable[FloatArray] | FlatParams, lr: Scalar,
                 momentum: Scalar = 0.0,
                 dampening: Scalar = 0.0, weight_decay: Scalar = 0.0, nesterov: bool = False,
                 maximize: bool = False, *, ema: EMA | None = None,
                 clip_grad_norm: Scalar | None = None, norm_type: float = 2.0,
                 skip_if_nonfinite: bool = False,
                 momentum_dtype: DTypeLike | None = None,
                 rounding: Rounding = "torch", torch_threads: int = 1,
                 seed: int | None = None, write_clipped_grads: bool = False) -> None: ...
    def step(self, grads: Sequence[FloatArray] | Iterable[FloatArray] | None = None) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...
