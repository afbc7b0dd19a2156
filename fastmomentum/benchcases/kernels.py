"""Benchmark cases for the single-buffer kernels: momentum_step and ema_update."""
import numpy as np

from .. import baseline, ema_update, momentum_step
from . import Case, optional_import

#: 16 elements to out-of-cache (16M float32 = 64 MB per buffer).
DEFAULT_SIZES = (16, 4096, 262144, 16777216)
HYPER = dict(lr=0.01, momentum=0.9)


def _buffers(n, dtype, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(count)]


def _numpy_momentum(step, nesterov):
    def make(n, dtype):
        p, g, v = _buffers(n, dtype, 3)
        return lambda: step(p, g, v, nesterov=nesterov, **HYPER)
    return make


def _torch_sgd(torch, impl, nesterov):
    flags = {"torch-forloop": dict(foreach=False), "torch-foreach": dict(foreach=True),
             "torch-fused": dict(fused=True)}[impl]

    def make(n, dtype):
        p, g = (torch.from_numpy(a) for a in _buffers(n, dtype, 2))
        p.grad = g
        opt = torch.optim.SGD([p], nesterov=nesterov, **HYPER, **flags)
        opt.step()  # creates the momentum buffer: time steady-state steps
        return opt.step
    return make


def momentum_cases(sizes=DEFAULT_SIZES, dtypes=("float32",), variants=("plain", "nesterov"),
                   torch_impls=("torch-forloop", "torch-foreach", "torch-fused")):
    torch = optional_import("torch")
    cases = []
    for variant in variants:
        nesterov = variant == "nesterov"
        makers = {"fastmomentum": _numpy_momentum(momentum_step, nesterov),
                  "baseline": _numpy_momentum(baseline.momentum_step, nesterov)}
        for impl in torch_impls:
            makers[impl] = _torch_sgd(torch, impl, nesterov) if torch else None
        for dtype in dtypes:
            for n in sizes:
                itemsize = np.dtype(dtype).itemsize
                for impl, make in makers.items():
                    cases.append(Case(
                        "momentum_step", impl, n, dtype,
                        make=(lambda make=make, n=n, dtype=dtype: make(n, dtype)),
                        bytes_moved=5 * n * itemsize,  # read p, g, v; write p, v
                        skip=None if make else "torch not installed",
                        params={"variant": variant}))
    return cases


def ema_cases(sizes=DEFAULT_SIZES, dtypes=("float32",)):
    torch = optional_import("torch")

    def numpy_ema(update):
        def make(n, dtype):
            a, x = _buffers(n, dtype, 2)
            return lambda: update(a, x, 0.9)
        return make

    def torch_lerp(n, dtype):
        a, x = (torch.from_numpy(b) for b in _buffers(n, dtype, 2))
        return lambda: a.lerp_(x, 0.1)

    makers = {"fastmomentum": numpy_ema(ema_update), "baseline": numpy_ema(baseline.ema_update),
              "torch-lerp_": torch_lerp if torch else None}
    cases = []
    for dtype in dtypes:
        for n in sizes:
            itemsize = np.dtype(dtype).itemsize
            for impl, make in makers.items():
                cases.append(Case(
                    "ema_update", impl, n, dtype,
                    make=(lambda make=make, n=n, dtype=dtype: make(n, dtype)),
                    bytes_moved=3 * n * itemsize,  # read average, value; write average
                    skip=None if make else "torch not installed"))
    return cases
