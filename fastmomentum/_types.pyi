# Type aliases shared by the stubs (types only: nothing of this exists at run time).
import datetime
from typing import Any, Literal, TypeVar, Union

import numpy as np
from numpy.typing import NDArray

#: The dtypes of the in-place kernels: a call's arrays all have one of them (and
#: ml_dtypes.bfloat16, which has no NumPy scalar type to name here).
Float = TypeVar("Float", np.float32, np.float64, np.float16)
#: A float array of any of them.
FloatArray = NDArray[Union[np.float32, np.float64, np.float16]]
#: How float16/bfloat16 steps round (docs/mixed-precision.md).
Rounding = Literal["torch", "once", "stochastic"]
#: What a hyper-parameter accepts (Python or NumPy real scalars; no strings, no arrays).
Scalar = Union[float, int, np.floating[Any], np.integer[Any]]
#: A halflife: a number of steps, or with ``times`` a time span.
HalfLife = Union[Scalar, datetime.timedelta, np.timedelta64, str]
