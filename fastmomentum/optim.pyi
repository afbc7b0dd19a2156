# Stub of fastmomentum.optim: SGD and EMA over lists of NumPy arrays.
from collections.abc import Iterable, Sequence
from typing import Any

from ._types import FloatArray, Rounding, Scalar

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
    lr: Scalar
    momentum: Scalar
    dampening: Scalar
    weight_decay: Scalar
    nesterov: bool
    maximize: bool
    ema: EMA | None
    momentum_buffers: list[FloatArray] | None
    steps: int
    rounding: Rounding
    torch_threads: int
    seed: int | None
    def __init__(self, params: Iterable[FloatArray], lr: Scalar, momentum: Scalar = 0.0,
                 dampening: Scalar = 0.0, weight_decay: Scalar = 0.0, nesterov: bool = False,
                 maximize: bool = False, *, ema: EMA | None = None,
                 rounding: Rounding = "torch", torch_threads: int = 1,
                 seed: int | None = None) -> None: ...
    def step(self, grads: Sequence[FloatArray] | Iterable[FloatArray]) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...
