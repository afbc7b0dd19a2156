# Stub of fastmomentum.baseline: the same signatures as the compiled kernels (fastmomentum).
from . import ema_update as ema_update
from . import ewm_mean as ewm_mean
from . import momentum_step as momentum_step
