"""Benchmark cases for whole-model steps: one optimizer step over every tensor of a model.

``model_step`` (param ``model``): the parameter shapes of

* ``mlp-20``: 10 x [64x64 weight, 64 bias], 20 tensors, 41,600 params;
* ``bert-base``: BERT-base (uncased), 199 tensors, 109M params (0.44 GB per buffer);
* ``10k-x-100``: 10,000 tensors of 100 elements (the many-small-params case).

stepped with SGD (lr 0.01, momentum 0.9, float32) by ``fastmomentum`` (fastmomentum.SGD
over NumPy arrays), ``fastmomentum.torch`` (the torch.optim drop-in),
``fastmomentum.torch-flat`` (the drop-in with ``flat=True``: one buffer per dtype), ``baseline`` (a
Python loop of fastmomentum.baseline.momentum_step) and torch.optim.SGD's three CPU
implementations ``torch-forloop`` (its default), ``torch-foreach`` and ``torch-fused``.

``model_step_ema`` (param ``variant``): one 16M-element float32 step followed by an EMA of
the weights: ``sgd+ema fused`` (fastmomentum.SGD(..., ema=...), one pass) against
``sgd then ema`` (fastmomentum.SGD then EMA.update, two passes), and the same pair through
fastmomentum.torch (``torch sgd+ema fused`` / ``torch sgd then ema``).
"""
import numpy as np

from .. import EMA, SGD, baseline
from . import HYPER, TORCH_SGD_FLAGS, Case, optional_import, torch_params, torch_sgd_step

EMA_SIZE = 1 << 24


def bert_base_shapes(vocab=30522, hidden=768, layers=12, intermediate=3072, positions=512):
    """The 199 parameter shapes of BERT-base (embeddings, 12 layers, pooler)."""
    shapes = [(vocab, hidden), (positions, hidden), (2, hidden), (hidden,), (hidden,)]
    for _ in range(layers):
        shapes += [(hidden, hidden), (hidden,)] * 4            # query, key, value, output
        shapes += [(hidden,), (hidden,)]                      # attention LayerNorm
        shapes += [(intermediate, hidden), (intermediate,)]   # intermediate
        shapes += [(hidden, intermediate), (hidden,)]         # output
        shapes += [(hidden,), (hidden,)]                      # output LayerNorm
    return shapes + [(hidden, hidden), (hidden,)]             # pooler


MODELS = {
    "mlp-20": lambda: [(64, 64), (64,)] * 10,
    "bert-base": bert_base_shapes,
    "10k-x-100": lambda: [(100,)] * 10_000,
}


def _arrays(shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s, dtype=np.float32).astype(dtype, copy=False)
            for s in shapes]


def _numpy_sgd(shapes, dtype):
    params, grads = _arrays(shapes, dtype, 0), _arrays(shapes, dtype, 1)
    opt = SGD(params, **HYPER)
    opt.step(grads)  # creates the momentum buffers: time steady-state steps
    return lambda: opt.step(grads)


def _baseline_loop(shapes, dtype):
    params, grads, velocities = (_arrays(shapes, dtype, seed) for seed in range(3))

    def step():
        for p, g, v in zip(params, grads, velocities):
            baseline.momentum_step(p, g, v, **HYPER)
    return step


def _torch_sgd(impl, **options):
    def make(shapes, dtype):
        return torch_sgd_step(impl, _arrays(shapes, dtype, 0), _arrays(shapes, dtype, 1),
                              **options)
    return make


def _sgd_ema(fused):
    def make(shapes, dtype):
        params, grads = _arrays(shapes, dtype, 0), _arrays(shapes, dtype, 1)
        ema = EMA(params, decay=0.999)
        opt = SGD(params, **HYPER, ema=ema if fused else None)
        opt.step(grads)
        if fused:
            return lambda: opt.step(grads)

        def step_then_ema():
            opt.step(grads)
            ema.update(params)
        return step_then_ema
    return make


def _torch_sgd_ema(fused):
    def make(shapes, dtype):
        from .. import torch as fmt
        params = torch_params(_arrays(shapes, dtype, 0), _arrays(shapes, dtype, 1))
        ema = fmt.EMA(params, decay=0.999)
        opt = fmt.SGD(params, **HYPER, ema=ema if fused else None)
        opt.step()
        if fused:
            return opt.step

        def step_then_ema():
            opt.step()
            ema.update(params)
        return step_then_ema
    return make


def _case(kernel, impl, shapes, dtype, make, bytes_per_element, skip, params):
    size = int(sum(np.prod(s) for s in shapes))
    return Case(kernel, impl, size, dtype,
                make=lambda: make(shapes, dtype),
                bytes_moved=bytes_per_element * size * np.dtype(dtype).itemsize,
                skip=skip, params=params)


def model_cases(quick=False, dtype="float32"):
    """Every whole-model case; ``quick=True`` leaves out BERT-base and runs the EMA cases
    at 1M elements instead of 16M."""
    has_torch = optional_import("torch") is not None
    makers = {"fastmomentum": _numpy_sgd, "fastmomentum.torch": _torch_sgd("fastmomentum.torch"),
              "fastmomentum.torch-flat": _torch_sgd("fastmomentum.torch", flat=True),
              "baseline": _baseline_loop}
    for impl in TORCH_SGD_FLAGS:
        makers[impl] = _torch_sgd(impl)
    needs_torch = {"fastmomentum.torch", *TORCH_SGD_FLAGS}
    cases = []
    for model, shapes in MODELS.items():
        if quick and model == "bert-base":
            continue
        for impl, make in makers.items():
            skip = "torch not installed" if impl in needs_torch and not has_torch else None
            # read p, g, v; write p, v
            cases.append(_case("model_step", impl, shapes(), dtype, make, 5, skip,
                               {"model": model}))
    ema_shapes = [(1 << 20,) if quick else (EMA_SIZE,)]
    ema_makers = {"sgd+ema fused": _sgd_ema(True), "sgd then ema": _sgd_ema(False),
                  "torch sgd+ema fused": _torch_sgd_ema(True),
                  "torch sgd then ema": _torch_sgd_ema(False)}
    for impl, make in ema_makers.items():
        skip = "torch not installed" if impl.startswith("torch") and not has_torch else None
        # read p, g, v, average; write p, v, average (the unfused pair reads p once more)
        cases.append(_case("model_step_ema", impl, ema_shapes, dtype, make, 7, skip,
                           {"variant": "momentum"}))
    return cases
