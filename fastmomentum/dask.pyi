# Stub of fastmomentum.dask: the ewm family over dask arrays chunked along time.
from typing import Any

from numpy.typing import ArrayLike

__all__ = ["ewm_mean", "ewm_var", "ewm_std", "ewm_cov", "ewm_corr", "ewm_sum"]

# options: those of the matching fastmomentum.ewm_* function (com, span, halflife, alpha,
# adjust, ignore_na, min_periods, axis, bias); the result is a dask array
def ewm_mean(x: Any, *, times: ArrayLike | None = None, exact: bool = False,
             **options: Any) -> Any: ...
def ewm_var(x: Any, *, times: ArrayLike | None = None, exact: bool = False,
            **options: Any) -> Any: ...
def ewm_std(x: Any, *, times: ArrayLike | None = None, exact: bool = False,
            **options: Any) -> Any: ...
def ewm_cov(x: Any, y: Any, *, times: ArrayLike | None = None, exact: bool = False,
            **options: Any) -> Any: ...
def ewm_corr(x: Any, y: Any, *, times: ArrayLike | None = None, exact: bool = False,
             **options: Any) -> Any: ...
def ewm_sum(x: Any, *, times: ArrayLike | None = None, exact: bool = False,
            **options: Any) -> Any: ...
