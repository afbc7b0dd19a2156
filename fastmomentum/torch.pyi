# Stub of fastmomentum.torch: the torch.optim.SGD drop-in and the weight EMA of modules.
from collections.abc import Callable, Iterable
from typing import Any, overload

import torch
from torch.optim.optimizer import Optimizer, ParamsT

__all__ = ["SGD", "EMA", "FAST_PATH", "FAST_PATH_REASON"]

FAST_PATH: bool
#: None, or why the fast path is off on this torch (every step is then torch's own)
FAST_PATH_REASON: str | None

class EMA:
    def __init__(self, params: torch.nn.Module | Iterable[torch.Tensor], decay: float = 0.999,
                 *, warmup: bool = False, debias: bool = False) -> None: ...
    @property
    def updates(self) -> int: ...
    def update(self, params: torch.nn.Module | Iterable[torch.Tensor]) -> None: ...
    @property
    def averages(self) -> list[torch.Tensor]: ...
    def copy_to(self, params: torch.nn.Module | Iterable[torch.Tensor]) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...

class SGD(Optimizer):
    ema: EMA | None
    #: params the last step() sent through fastmomentum's kernels (the rest went to torch)
    kernel_params: int
    #: flat=True: contiguous runs the last step sent through the kernels (None without it)
    flat_segments: int | None
    def __init__(self, params: ParamsT, lr: float | torch.Tensor = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float | torch.Tensor = 0,
                 nesterov: bool = False, *, maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None,
                 ema: EMA | None = None, flat: bool = False) -> None: ...
    def zero_grad(self, set_to_none: bool = True) -> None: ...
    def add_param_group(self, param_group: dict[str, Any]) -> None: ...
    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...
