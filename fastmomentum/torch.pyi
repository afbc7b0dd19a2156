# Stub of fastmomentum.torch: the torch.optim.SGD drop-in and the weight EMA of modules.
from collections.abc import Callable, Iterable
from typing import Any, Literal, overload

import torch
from torch.optim.optimizer import Optimizer, ParamsT

__all__ = ["SGD", "EMA", "FAST_PATH", "FAST_PATH_REASON", "clip_grad_norm_"]

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
    master_weights: Literal["split"] | None
    momentum_dtype: torch.dtype | None
    #: params the last step() sent through fastmomentum's kernels (the rest went to torch)
    kernel_params: int
    #: global-norm clipping (max_norm or None), its norm type (2.0 or inf), skipping
    clip_grad_norm: float | None
    norm_type: float
    skip_if_nonfinite: bool
    #: leave the grads unscaled and clipped (torch's recipe's grads), stored by the step
    write_clipped_grads: bool
    #: total norm of the grads at the last step (None unless clipping or skipping)
    last_grad_norm: float | None
    #: steps skipped by skip_if_nonfinite
    skipped_steps: int
    #: flat=True: contiguous runs the last step sent through the kernels (None without it)
    flat_segments: int | None
    def __init__(self, params: ParamsT, lr: float | torch.Tensor = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float | torch.Tensor = 0,
                 nesterov: bool = False, *, maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None,
                 ema: EMA | None = None, clip_grad_norm: float | None = None,
                 norm_type: float = 2.0, skip_if_nonfinite: bool = False,
                 momentum_dtype: torch.dtype | None = None,
                 master_weights: Literal["split"] | None = None,
                 flat: bool = False, write_clipped_grads: bool = False) -> None: ...
    def master_params(self) -> list[torch.Tensor]: ...
    def load_master_params(self, weights: Iterable[torch.Tensor]) -> None: ...
    def zero_grad(self, set_to_none: bool = True) -> None: ...
    def add_param_group(self, param_group: dict[str, Any]) -> None: ...
    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

def clip_grad_norm_(parameters: torch.Tensor | Iterable[torch.Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> torch.Tensor: ...
