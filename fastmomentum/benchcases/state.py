"""Benchmark cases for steps whose state takes fewer bytes (``state_step``, param ``state``):

* ``bf16 momentum``: float32 params and grads, bfloat16 momentum (16 bytes an element:
  read p 4, g 4, v 2; write p 4, v 2) by ``fastmomentum`` (momentum_step with
  momentum_dtype), ``fastmomentum.torch`` (SGD(momentum_dtype=torch.bfloat16)) and
  ``baseline``, against float32 momentum (20 bytes) by ``fastmomentum float32 momentum``,
  ``torch-forloop`` and ``torch-fused``; issue 14's target: >= 1.2x torch-fused at 16M.
* ``split bf16``: bfloat16 params over split float32 master weights, bfloat16 grads and
  momentum (14 bytes: read top 2, low 2, g 2, v 2; write top 2, low 2, v 2) by
  ``fastmomentum.torch`` (SGD(master_weights="split", momentum_dtype=torch.bfloat16))
  against float32 master weights stepped by ``torch-fused`` and ``torch-forloop`` (20
  bytes), and torch's for-loop on plain bfloat16 params (``torch-forloop bf16 params``:
  10 bytes, no master weights, not the same numbers); target: >= 1.3x torch-fused at 16M.
* ``bf16 params`` and ``f16 params``: params, grads and momentum all bfloat16 (or float16),
  10 bytes an element (read p, g, v 2 each; write p, v 2 each), by ``fastmomentum``
  (momentum_step, rounding="torch"), ``fastmomentum.SGD`` (the NumPy optimizer),
  ``fastmomentum.torch`` (SGD) against torch's ``torch-forloop`` and ``torch-fused`` on
  the same dtype; bfloat16 also against the reference ``C stream loop`` moving the same 10
  bytes (src/reference/fm_stream.h fm_stream_bf16; from 64k elements, as the kernels'
  groups; float16 has none). Targets: >= 1.4x torch-forloop, >= 0.9x the stream loop at 16M.

Every step is SGD with lr 0.01, momentum 0.9 (HYPER), after a first step that creates the
buffers; bytes per element are each row's own (the GB/s column says them).
"""
from functools import partial

import numpy as np

from .. import SGD as NumpySGD
from .. import baseline, momentum_step
from .._dispatch import kernels as _kernels
from . import HYPER, TORCH_SGD_FLAGS, Case, optional_import, torch_sgd_step

SIZES = (16, 1 << 24)
QUICK_SIZES = (16, 1 << 16)


def _f32(n, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n, dtype=np.float32) for _ in range(count)]


def _numpy_state(step, n):
    import ml_dtypes
    p, g, v = _f32(n, 3)
    v = v.astype(ml_dtypes.bfloat16)
    return lambda: step(p, g, v, momentum_dtype=ml_dtypes.bfloat16, **HYPER)


def _numpy_float32(n):
    p, g, v = _f32(n, 3)
    return lambda: momentum_step(p, g, v, **HYPER)


def _torch_state(n):
    import torch

    from ..torch import SGD
    p, g = (torch.from_numpy(a) for a in _f32(n, 2))
    param = torch.nn.Parameter(p)
    param.grad = g
    opt = SGD([param], **HYPER, momentum_dtype=torch.bfloat16)
    opt.step()
    return opt.step


def _torch_float32(impl, n):
    return torch_sgd_step(impl, _f32(n, 1), _f32(n, 1, seed=1))


def _bf16_param(torch, n, seed):
    param = torch.nn.Parameter(torch.from_numpy(_f32(n, 1, seed)[0]).bfloat16())
    param.grad = torch.from_numpy(_f32(n, 1, seed + 1)[0]).bfloat16()
    return param


def _torch_split(n):
    import torch

    from ..torch import SGD
    param = _bf16_param(torch, n, 0)
    opt = SGD([param], **HYPER, master_weights="split", momentum_dtype=torch.bfloat16)
    opt.step()
    return opt.step


def _torch_bf16_forloop(n):
    import torch
    opt = torch.optim.SGD([_bf16_param(torch, n, 0)], **HYPER, foreach=False)
    opt.step()
    return opt.step


def _half_dtype(name):
    """The NumPy dtype of "bfloat16" (ml_dtypes) or "float16"."""
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(np.float16)


def _half_arrays(dtype, n, count):
    """``count`` arrays of ``n`` standard normals rounded to the 16-bit ``dtype``."""
    return [a.astype(_half_dtype(dtype)) for a in _f32(n, count)]


def _numpy_half(dtype, n):
    p, g, v = _half_arrays(dtype, n, 3)
    return lambda: momentum_step(p, g, v, **HYPER)


def _numpy_half_sgd(dtype, n):
    p, g = _half_arrays(dtype, n, 2)
    opt = NumpySGD([p], **HYPER)
    opt.step([g])   # creates the momentum buffer: steady-state steps are timed
    return lambda: opt.step([g])


def _torch_half(impl, dtype, n):
    import torch

    from ..torch import SGD
    param = torch.nn.Parameter(torch.from_numpy(_f32(n, 1)[0]).to(getattr(torch, dtype)))
    param.grad = torch.from_numpy(_f32(n, 1, 1)[0]).to(getattr(torch, dtype))
    if impl == "fastmomentum.torch":
        opt = SGD([param], **HYPER)
    else:
        opt = torch.optim.SGD([param], **HYPER, **TORCH_SGD_FLAGS[impl])
    opt.step()
    return opt.step


def _stream_bf16(n):
    p, g, v = _half_arrays("bfloat16", n, 3)
    return lambda: _kernels.roofline_stream(p, g, v, 0.5)


#: The reference row of the bfloat16-params groups (as the kernels' groups' stream loop).
STREAM_IMPL = "C stream loop"
#: Its smallest size (fastmomentum.bench.run.STREAM_MIN_SIZE: below it, call overhead).
STREAM_MIN_SIZE = 1 << 16


def _half_makers(dtype, has_torch, has_bf16):
    missing = not has_bf16 if dtype == "bfloat16" else False
    makers = {"fastmomentum": (partial(_numpy_half, dtype), 10, missing),
              "fastmomentum.SGD": (partial(_numpy_half_sgd, dtype), 10, missing),
              "fastmomentum.torch": (partial(_torch_half, "fastmomentum.torch", dtype), 10,
                                     not has_torch)}
    for impl in ("torch-forloop", "torch-fused"):
        makers[impl] = (partial(_torch_half, impl, dtype), 10, not has_torch)
    return makers


def state_cases(quick=False):
    """Every state_step case (sizes 16 and 16M; quick: 16 and 64k)."""
    has_torch = optional_import("torch") is not None
    has_bf16 = optional_import("ml_dtypes") is not None
    groups = {
        "bf16 momentum": ("float32", {
            "fastmomentum": (partial(_numpy_state, momentum_step), 16, not has_bf16),
            "fastmomentum.torch": (_torch_state, 16, not has_torch),
            "fastmomentum float32 momentum": (_numpy_float32, 20, False),
            "baseline": (partial(_numpy_state, baseline.momentum_step), 16, not has_bf16),
            "torch-forloop": (partial(_torch_float32, "torch-forloop"), 20, not has_torch),
            "torch-fused": (partial(_torch_float32, "torch-fused"), 20, not has_torch),
        }),
        "split bf16": ("bfloat16", {
            "fastmomentum.torch": (_torch_split, 14, not has_torch),
            "torch-forloop": (partial(_torch_float32, "torch-forloop"), 20, not has_torch),
            "torch-fused": (partial(_torch_float32, "torch-fused"), 20, not has_torch),
            "torch-forloop bf16 params": (_torch_bf16_forloop, 10, not has_torch),
        }),
        "bf16 params": ("bfloat16", _half_makers("bfloat16", has_torch, has_bf16)),
        "f16 params": ("float16", _half_makers("float16", has_torch, has_bf16)),
    }
    cases = []
    for n in QUICK_SIZES if quick else SIZES:
        for state, (dtype, makers) in groups.items():
            for impl, (make, bytes_per_element, missing) in makers.items():
                cases.append(Case(
                    "state_step", impl, n, dtype, make=None if missing else partial(make, n),
                    bytes_moved=bytes_per_element * n,
                    skip="torch or ml_dtypes not installed" if missing else None,
                    params={"state": state}))
            if state == "bf16 params" and n >= STREAM_MIN_SIZE:
                cases.append(Case(
                    "state_step", STREAM_IMPL, n, dtype,
                    make=partial(_stream_bf16, n) if has_bf16 else None,
                    bytes_moved=10 * n, skip=None if has_bf16 else "ml_dtypes not installed",
                    params={"state": state}, reference=True))
    return cases
