"""One definition of every benchmark case, shared by ``benchmarks/`` (pytest-benchmark) and
``python -m fastmomentum bench``.

A :class:`Case` builds its inputs only when asked (``case.make()``), so listing cases is free
and a case whose optional peer (torch, pandas, scipy) is missing is reported as skipped.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(eq=False)  # identity-hashed: cases are dict keys in reports
class Case:
    #: what is measured, e.g. "momentum_step"; rows of one kernel and size compare directly
    kernel: str
    #: who computes it, e.g. "fastmomentum", "baseline", "torch-fused"
    impl: str
    #: number of elements (for a whole-model case: parameters in all tensors)
    size: int
    dtype: str
    #: builds fresh inputs and returns the zero-argument callable to time (None when skipped)
    make: Optional[Callable[[], Callable[[], object]]]
    #: bytes read plus bytes written by one call (for GB/s and the reference stream loop)
    bytes_moved: int
    #: why the case cannot run here (a missing optional package), or None
    skip: Optional[str] = None
    #: free-form details shown in reports, e.g. {"variant": "nesterov"}
    params: dict = field(default_factory=dict)
    #: fastmomentum's thread count while this case is timed (None: the report's count)
    threads: Optional[int] = None
    #: a reference loop (the C stream loop): its bandwidth is the rows' ``vs_stream``, and it
    #: is no peer of theirs (kernel "stream loop" rows always are; others say so here)
    reference: bool = False

    @property
    def group(self):
        """pytest-benchmark group: one kernel, one size, one dtype."""
        extra = "".join(f"-{v}" for v in self.params.values())
        return f"{self.kernel}{extra}-{self.dtype}-n{self.size}"


#: The SGD hyper-parameters of every momentum case (single buffers and whole models).
HYPER = dict(lr=0.01, momentum=0.9)
#: torch.optim.SGD's implementations as the benchmarks name them, with the flags that pick them
TORCH_SGD_FLAGS = {"torch-forloop": dict(foreach=False), "torch-foreach": dict(foreach=True),
                   "torch-fused": dict(fused=True)}


def torch_params(params, grads):
    """torch Parameters sharing the NumPy ``params``' memory, their ``.grad`` set to ``grads``."""
    import torch
    tensors = [torch.nn.Parameter(torch.from_numpy(p)) for p in params]
    for p, g in zip(tensors, grads):
        p.grad = torch.from_numpy(g)
    return tensors


def torch_sgd_step(impl, params, grads, **options):
    """``optimizer.step`` of torch SGD implementation ``impl`` (a key of TORCH_SGD_FLAGS, or
    "fastmomentum.torch") over NumPy ``params`` with gradients ``grads`` (shared, not copied),
    after a first step that creates the momentum buffers: steady-state steps are timed."""
    import torch
    if impl == "fastmomentum.torch":
        from ..torch import SGD as optimizer_class
        flags = {}
    else:
        optimizer_class, flags = torch.optim.SGD, TORCH_SGD_FLAGS[impl]
    opt = optimizer_class(torch_params(params, grads), **HYPER, **flags, **options)
    opt.step()
    return opt.step


#: How to get matplotlib, for the bench plot and the demo figures.
MATPLOTLIB_HINT = 'pip install "fastmomentum[bench]"  (or: pip install matplotlib)'


def optional_import(name):
    """The module, or None when the optional peer is not installed."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
