"""fastmomentum: fast, bit-faithful momentum-SGD and EMA kernels.

Momentum is an exponentially weighted moving average of gradients; fastmomentum runs the
update loops in typed Cython over contiguous float32/float64 NumPy buffers, in place.

* :func:`momentum_step`: one ``torch.optim.SGD`` step on one buffer, bit for bit.
* :func:`ema_update`: ``average = decay*average + (1-decay)*value`` in place.
* :func:`ewm_mean`: pandas' ``ewm(...).mean()`` over a series or 2-D array, same numbers.
* :func:`ewm_var`, :func:`ewm_std`, :func:`ewm_cov`, :func:`ewm_corr`, :func:`ewm_sum`:
  the rest of pandas' ``ewm`` family (and ``times=`` for ewm_mean, var, std, cov, corr);
  :class:`EwmStream`: any of them over chunks, resumable, combinable;
  :mod:`fastmomentum.dask`: over dask arrays chunked along time.
* :func:`set_num_threads` / :func:`get_num_threads`: threads used for large buffers.
* :class:`SGD`, :class:`EMA`: whole-model optimizers; :class:`FlatParams`: named params in
  one buffer, stepped in one call.
* :mod:`fastmomentum.baseline`: the same API in pure NumPy (the benchmark reference).
* ``fastmomentum/kernels.pxd``: the raw loops for other Cython code.
"""
from ._dispatch import kernels as _kernels

momentum_step = _kernels.momentum_step
ema_update = _kernels.ema_update
ewm_mean = _kernels.ewm_mean
set_num_threads = _kernels.set_num_threads
get_num_threads = _kernels.get_num_threads

#: Which CPU target's numeric cores run here ("avx2" or "portable"), and whether the
#: build has OpenMP.
BUILD_TARGET = _kernels.BUILD_TARGET
HAS_OPENMP = _kernels.HAS_OPENMP

from . import _ewm_api, _ewm_family  # noqa: E402

(ewm_var, ewm_std, ewm_cov, ewm_corr, ewm_sum, _ewm_mean_times,
 EwmStream) = _ewm_api.make_functions(_ewm_api.Family(_ewm_family.advance,
                                                          _ewm_family.time_steps,
                                                          _ewm_family.Stepper,
                                                          _ewm_family.StreamCore))

from ._version import __version__

__all__ = ["momentum_step", "ema_update", "ewm_mean", "set_num_threads", "get_num_threads",
           "BUILD_TARGET", "HAS_OPENMP", "__version__", "ewm_var", "ewm_std", "ewm_cov", "ewm_corr",
           "ewm_sum", "EwmStream"]

from .optim import EMA, SGD  # noqa: E402  (needs the kernels above)
from .flat import FlatParams  # noqa: E402

__all__ += ["SGD", "EMA", "FlatParams"]
