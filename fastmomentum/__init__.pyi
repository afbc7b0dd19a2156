# Stub of fastmomentum: the compiled entry points' signatures (the runtime objects come from
# the compiled module the CPU picks, which type checkers cannot see).
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ._types import Float, HalfLife, Rounding, Scalar
from ._version import __version__ as __version__
from .optim import EMA as EMA
from .optim import SGD as SGD
from .flat import FlatParams as FlatParams

__all__ = ["momentum_step", "ema_update", "ewm_mean", "set_num_threads", "get_num_threads",
           "BUILD_TARGET", "HAS_OPENMP", "__version__", "ewm_var", "ewm_std", "ewm_cov", "ewm_corr",
           "ewm_sum", "EwmStream", "SGD", "EMA", "FlatParams"]

BUILD_TARGET: Literal["avx2", "portable"]
HAS_OPENMP: bool

def momentum_step(param: NDArray[Float], grad: NDArray[Float], velocity: NDArray[Any] | None,
                  *, lr: Scalar, momentum: Scalar = 0.0, dampening: Scalar = 0.0,
                  weight_decay: Scalar = 0.0, nesterov: bool = False, maximize: bool = False,
                  first_step: bool = False, momentum_dtype: DTypeLike | None = None,
                  rounding: Rounding = "torch", torch_threads: int = 1,
                  seed: int | None = None, step: int = 0) -> None: ...
def ema_update(average: NDArray[Float], value: NDArray[Float], decay: Scalar) -> NDArray[Float]: ...
@overload
def ewm_mean(x: NDArray[np.float32], *, com: Scalar | None = None, span: Scalar | None = None,
             halflife: HalfLife | None = None, alpha: Scalar | None = None, adjust: bool = True,
             ignore_na: bool = False, min_periods: int = 0, axis: int = 0,
             times: ArrayLike | None = None, out: NDArray[np.float32] | None = None) -> NDArray[np.float32]: ...
@overload
def ewm_mean(x: ArrayLike, *, com: Scalar | None = None, span: Scalar | None = None,
             halflife: HalfLife | None = None, alpha: Scalar | None = None, adjust: bool = True,
             ignore_na: bool = False, min_periods: int = 0, axis: int = 0,
             times: ArrayLike | None = None, out: NDArray[np.float64] | None = None) -> NDArray[np.float64]: ...
# the rest of the exponentially weighted family (fastmomentum._ewm_api)
def ewm_var(x: ArrayLike, *, com: Scalar | None = None, span: Scalar | None = None,
            halflife: HalfLife | None = None, alpha: Scalar | None = None, adjust: bool = True,
            ignore_na: bool = False, min_periods: int = 0, axis: int = 0, bias: bool = False,
            times: ArrayLike | None = None,
            out: NDArray[np.floating[Any]] | None = None) -> NDArray[np.floating[Any]]: ...
def ewm_std(x: ArrayLike, *, com: Scalar | None = None, span: Scalar | None = None,
            halflife: HalfLife | None = None, alpha: Scalar | None = None, adjust: bool = True,
            ignore_na: bool = False, min_periods: int = 0, axis: int = 0, bias: bool = False,
            times: ArrayLike | None = None,
            out: NDArray[np.floating[Any]] | None = None) -> NDArray[np.floating[Any]]: ...
def ewm_cov(x: ArrayLike, y: ArrayLike, *, com: Scalar | None = None,
            span: Scalar | None = None, halflife: HalfLife | None = None,
            alpha: Scalar | None = None, adjust: bool = True, ignore_na: bool = False,
            min_periods: int = 0, axis: int = 0, bias: bool = False,
            times: ArrayLike | None = None,
            out: NDArray[np.floating[Any]] | None = None,
            pairwise: bool = False) -> NDArray[np.floating[Any]]: ...
def ewm_corr(x: ArrayLike, y: ArrayLike, *, com: Scalar | None = None,
             span: Scalar | None = None, halflife: HalfLife | None = None,
             alpha: Scalar | None = None, adjust: bool = True, ignore_na: bool = False,
             min_periods: int = 0, axis: int = 0, times: ArrayLike | None = None,
             out: NDArray[np.floating[Any]] | None = None,
             pairwise: bool = False) -> NDArray[np.floating[Any]]: ...
def ewm_sum(x: ArrayLike, *, com: Scalar | None = None, span: Scalar | None = None,
            halflife: HalfLife | None = None, alpha: Scalar | None = None, adjust: bool = True,
            ignore_na: bool = False, min_periods: int = 0, axis: int = 0,
            out: NDArray[np.floating[Any]] | None = None) -> NDArray[np.floating[Any]]: ...

class EwmStream:
    stat: str
    def __init__(self, stat: Literal["mean", "var", "std", "cov", "corr", "sum"], *,
                 com: Scalar | None = None, span: Scalar | None = None,
                 halflife: HalfLife | None = None, alpha: Scalar | None = None,
                 adjust: bool = True, ignore_na: bool = False, min_periods: int = 0,
                 bias: bool = False, axis: int = 0, times: bool = False) -> None: ...
    def update(self, x: ArrayLike, y: ArrayLike | None = None, *,
               times: ArrayLike | None = None,
               out: NDArray[np.floating[Any]] | None = None) -> NDArray[np.floating[Any]]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> EwmStream: ...
    @classmethod
    def combine(cls, first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]: ...

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
