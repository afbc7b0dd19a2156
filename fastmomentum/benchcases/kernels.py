"""Benchmark cases for the single-buffer kernels (momentum_step, ema_update) and the reference
stream loop."""
from functools import partial

import numpy as np

from .. import baseline, ema_update, momentum_step
from .._dispatch import kernels as _kernels
from . import HYPER, TORCH_SGD_FLAGS, Case, optional_import, torch_sgd_step

#: issue 2's benchmark sizes, 16 elements to out-of-cache (16M float32 = 64 MB per buffer);
#: also the sizes of the quick report.
DEFAULT_SIZES = (16, 4096, 262144, 16777216)
#: the full report: 16 to 16M elements, every power of 4.
REPORT_SIZES = tuple(4 ** k for k in range(2, 13))
DTYPES = ("float32", "float64")


def _buffers(n, dtype, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n, dtype=dtype) for _ in range(count)]


def _numpy_momentum(step, nesterov, n, dtype):
    p, g, v = _buffers(n, dtype, 3)
    return lambda: step(p, g, v, nesterov=nesterov, **HYPER)


def _torch_sgd(impl, nesterov, n, dtype):
    p, g = _buffers(n, dtype, 2)
    return torch_sgd_step(impl, [p], [g], nesterov=nesterov)


def _sized_cases(kernel, makers, sizes, dtypes, buffers_moved, params=None):
    """One case per dtype, size and implementation; ``makers`` maps an impl to
    ``make(n, dtype)``, or to None when its optional peer (torch) is missing."""
    cases = []
    for dtype in dtypes:
        itemsize = np.dtype(dtype).itemsize
        for n in sizes:
            for impl, make in makers.items():
                cases.append(Case(
                    kernel, impl, n, dtype,
                    make=partial(make, n, dtype) if make else None,
                    bytes_moved=buffers_moved * n * itemsize,
                    skip=None if make else "torch not installed",
                    params=dict(params or {})))
    return cases


def momentum_cases(sizes=DEFAULT_SIZES, dtypes=("float32",), variants=("plain", "nesterov"),
                   torch_impls=tuple(TORCH_SGD_FLAGS)):
    """momentum_step vs the baseline and torch.optim.SGD (for-loop, foreach, fused)."""
    torch = optional_import("torch")
    cases = []
    for variant in variants:
        nesterov = variant == "nesterov"
        makers = {"fastmomentum": partial(_numpy_momentum, momentum_step, nesterov),
                  "baseline": partial(_numpy_momentum, baseline.momentum_step, nesterov)}
        for impl in torch_impls:
            makers[impl] = partial(_torch_sgd, impl, nesterov) if torch else None
        # read p, g, v; write p, v
        cases += _sized_cases("momentum_step", makers, sizes, dtypes, 5, {"variant": variant})
    return cases


def _numpy_ema(update, n, dtype):
    a, x = _buffers(n, dtype, 2)
    return lambda: update(a, x, 0.9)


def _torch_lerp(torch, n, dtype):
    a, x = (torch.from_numpy(b) for b in _buffers(n, dtype, 2))
    return lambda: a.lerp_(x, 0.1)


def ema_cases(sizes=DEFAULT_SIZES, dtypes=("float32",)):
    """ema_update vs the baseline and torch's ``Tensor.lerp_``."""
    torch = optional_import("torch")
    makers = {"fastmomentum": partial(_numpy_ema, ema_update),
              "baseline": partial(_numpy_ema, baseline.ema_update),
              "torch-lerp_": partial(_torch_lerp, torch) if torch else None}
    # read average, value; write average
    return _sized_cases("ema_update", makers, sizes, dtypes, 3)


def _stream(n, dtype):
    p, g, v = _buffers(n, dtype, 3)
    return lambda: _kernels.roofline_stream(p, g, v, 0.5)


#: The kernel name of the reference rows.
STREAM_LOOP = "stream loop"


def stream_loop_case(n, dtype):
    """The reference at ``n`` elements: a plain C OpenMP loop (src/reference/fm_stream.h) moving the
    same bytes as momentum_step (reads 3 arrays, writes 2), on the kernels' thread count. It
    is a reference, not a bound: a kernel with a better schedule or stores can beat it."""
    return Case(STREAM_LOOP, "C stream loop", n, dtype, make=partial(_stream, n, dtype),
                bytes_moved=5 * n * np.dtype(dtype).itemsize)


def kernel_cases(quick=False, sizes=None, dtypes=None):
    """The report's single-buffer cases: issue 2's sizes in float32 when ``quick``, else
    16 to 16M elements in float32 and float64; ``sizes`` and ``dtypes`` override them."""
    sizes = sizes or (DEFAULT_SIZES if quick else REPORT_SIZES)
    dtypes = dtypes or (("float32",) if quick else DTYPES)
    return momentum_cases(sizes, dtypes) + ema_cases(sizes, dtypes)
