"""Benchmark cases for clipped steps: global-norm clipping then an SGD step.

``clip_step`` (param ``model``: ``16M`` one float32 tensor of 2^24 elements, and the
``mlp-20`` / ``bert-base`` shapes of :mod:`fastmomentum.benchcases.models`), SGD lr 0.01,
momentum 0.9, ``max_norm=1`` (the random grads' norm is far above it: every step clips):

* ``fastmomentum.torch``: ``fastmomentum.torch.SGD(..., clip_grad_norm=1.0)``: one norm
  pass (reads g), one step pass reading each grad times the coefficient (reads p, g, v;
  writes p, v): 24 bytes per float32 element;
* ``fastmomentum.torch-flat`` (``mlp-20``, ``bert-base``): the same with ``flat=True``: one
  norm pass and one step call per flat buffer, whatever the tensor count;
* ``fastmomentum``: the same through ``fastmomentum.SGD`` over NumPy arrays;
* ``torch-fused``: ``torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)`` then
  torch.optim.SGD(fused=True): norm (4 bytes), scale (8), step (20): 32 bytes;
* ``torch-forloop``: the same clip, then torch.optim.SGD's default for-loop.
"""
import numpy as np

from .. import SGD
from . import HYPER, TORCH_SGD_FLAGS, Case, optional_import, torch_params
from .models import MODELS, _arrays

MAX_NORM = 1.0
SHAPES = {"16M": lambda: [(1 << 24,)], "mlp-20": MODELS["mlp-20"],
          "bert-base": MODELS["bert-base"]}
#: bytes per float32 element of one clipped step (see the module's docstring)
BYTES = {"fastmomentum.torch": 24, "fastmomentum.torch-flat": 24, "fastmomentum": 24,
         "torch-fused": 32, "torch-forloop": 32}
#: the implementations timed on one model only (a single tensor is flat already)
MULTI_TENSOR_ONLY = ("fastmomentum.torch-flat",)


def _ours_torch(shapes, dtype, flat=False):
    from ..torch import SGD as TorchSGD
    params = torch_params(_arrays(shapes, dtype, 0), _arrays(shapes, dtype, 1))
    opt = TorchSGD(params, **HYPER, clip_grad_norm=MAX_NORM, flat=flat)
    opt.step()  # creates the momentum buffers: time steady-state steps
    return opt.step


def _ours_torch_flat(shapes, dtype):
    return _ours_torch(shapes, dtype, flat=True)


def _ours_numpy(shapes, dtype):
    params, grads = _arrays(shapes, dtype, 0), _arrays(shapes, dtype, 1)
    opt = SGD(params, **HYPER, clip_grad_norm=MAX_NORM)
    opt.step(grads)
    return lambda: opt.step(grads)


def _torch_clip_then(impl):
    def make(shapes, dtype):
        import torch
        params = torch_params(_arrays(shapes, dtype, 0), _arrays(shapes, dtype, 1))
        opt = torch.optim.SGD(params, **HYPER, **TORCH_SGD_FLAGS[impl])

        def step():
            torch.nn.utils.clip_grad_norm_(params, MAX_NORM, foreach=True)
            opt.step()
        step()
        return step
    return make


def clip_cases(quick=False):
    """Every clipped-step case; ``quick=True`` leaves out BERT-base and runs 1M elements
    instead of 16M."""
    has_torch = optional_import("torch") is not None
    makers = {"fastmomentum.torch": _ours_torch, "fastmomentum.torch-flat": _ours_torch_flat,
              "fastmomentum": _ours_numpy,
              "torch-fused": _torch_clip_then("torch-fused"),
              "torch-forloop": _torch_clip_then("torch-forloop")}
    cases = []
    for model, shapes in SHAPES.items():
        if quick and model == "bert-base":
            continue
        sizes = [(1 << 20,)] if quick and model == "16M" else shapes()
        size = int(sum(np.prod(s) for s in sizes))
        for impl, make in makers.items():
            if impl in MULTI_TENSOR_ONLY and model == "16M":
                continue
            skip = None if has_torch or impl == "fastmomentum" else "torch not installed"
            cases.append(Case("clip_step", impl, size, "float32",
                              make=lambda make=make, sizes=sizes: make(sizes, "float32"),
                              bytes_moved=BYTES[impl] * size, skip=skip,
                              params={"model": model}))
    return cases
