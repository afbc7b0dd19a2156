# Stub of fastmomentum.baseline: the same signatures as the compiled kernels (fastmomentum).
from . import ema_update as ema_update
from . import ewm_mean as ewm_mean
from . import momentum_step as momentum_step
from . import EwmStream as EwmStream
from . import ewm_corr as ewm_corr
from . import ewm_cov as ewm_cov
from . import ewm_std as ewm_std
from . import ewm_sum as ewm_sum
from . import ewm_var as ewm_var
