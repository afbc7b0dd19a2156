# Type aliases shared by the stubs (types only: nothing of this exists at run time).
import datetime
from typing import Any, TypeVar, Union

import numpy as np
from numpy.typing import NDArray

#: The dtypes of the in-place kernels: a call's arrays all have one of them.
Float = TypeVar("Float", np.float32, np.float64)
#: A float array of either dtype.
FloatArray = NDArray[Union[np.float32, np.float64]]
#: What a hyper-parameter accepts (Python or NumPy real scalars; no strings, no arrays).
Scalar = Union[float, int, np.floating[Any], np.integer[Any]]
#: A halflife: a number of steps, or with ``times`` a time span.
HalfLife = Union[Scalar, datetime.timedelta, np.timedelta64, str]
