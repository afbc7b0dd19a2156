"""fastmomentum for PyTorch: a drop-in ``torch.optim.SGD`` and a weight EMA for modules.

Import it explicitly (``import fastmomentum.torch``): ``import fastmomentum`` alone never
imports torch.

* :class:`SGD`: a ``torch.optim.Optimizer`` with torch.optim.SGD's constructor, defaults,
  checks, param groups and state layout; dense CPU float32/float64 params are stepped by
  fastmomentum's multi-tensor kernels (one compiled call per param group, bit for bit as
  torch's default for-loop), everything else by torch's own SGD.
* :class:`EMA`: :class:`fastmomentum.EMA` over ``nn.Module`` parameters (or any CPU
  float tensors), with the averages as torch tensors.
"""
import ctypes
import functools
import glob
import itertools
import os

import numpy as np
import torch
from torch.optim import optimizer as _torch_optimizer
from torch.optim.optimizer import Optimizer
from torch.optim.sgd import sgd as _torch_sgd

from . import optim as _optim
from ._dispatch import kernels as _kernels

__all__ = ["SGD", "EMA", "FAST_PATH"]


def _bind_torch_shim():
    """Give the kernels libtorch's stable C shim (see src/_torch_multi.pxi). Returns False,
    leaving every step to torch, when this torch lacks the shim or the Python tensor object
    does not hold its at::Tensor where torch's own headers put it."""
    libs = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "*torch_cpu.*"))
    try:
        lib = ctypes.CDLL(libs[0])
        addresses = {name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                     for name in _kernels.TORCH_SHIM_FUNCTIONS}
        codes = {}
        for name in ("dtype_float32", "dtype_float64", "device_type_cpu", "layout_strided"):
            fn = getattr(lib, "aoti_torch_" + name)
            fn.restype = ctypes.c_int32
            codes[name] = fn()
    except (IndexError, OSError, AttributeError):
        return False
    probes = [torch.zeros(3), torch.nn.Parameter(torch.zeros(2, 2)), torch.zeros(0)]
    if any(_kernels.torch_impl_address(t) != t._cdata or hash(t) != id(t) for t in probes):
        return False
    _kernels.torch_bind(addresses, codes["dtype_float32"], codes["dtype_float64"],
                        codes["device_type_cpu"], codes["layout_strided"], torch.Tensor,
                        torch.nn.Parameter, torch.Tensor.is_neg)
    return True


#: Whether dense CPU float32/float64 params go through fastmomentum's kernels here (False:
#: every step is torch's own, still correct, not faster).
FAST_PATH = _bind_torch_shim()


def _hooked_step(step):
    """torch.optim.Optimizer.profile_hook_step (step pre/post hooks, the profiler's
    ``_optimizer_step_code``) with the grad mode of ``_use_grad_for_differentiable``.
    ``record_function`` and the hook loops cost several us per step, more than a whole
    fastmomentum step of a small model: they run only while a profiler runs or a hook is
    registered."""
    @functools.wraps(step)
    def wrapper(*args, **kwargs):
        self = args[0]
        run = (_run_hooked if (_torch_optimizer._global_optimizer_pre_hooks
                               or self._optimizer_step_pre_hooks
                               or self._optimizer_step_post_hooks
                               or _torch_optimizer._global_optimizer_post_hooks)
               else _run_step)
        if torch._C._autograd._profiler_enabled():
            with torch.autograd.profiler.record_function(
                    f"Optimizer.step#{self.__class__.__name__}.step"):
                return run(step, self, args, kwargs)
        return run(step, self, args, kwargs)
    wrapper.hooked = True  # Optimizer._patch_step_function: do not wrap again
    return wrapper


def _run_step(step, self, args, kwargs):
    grad_enabled = torch.is_grad_enabled()
    torch._C._set_grad_enabled(self.defaults["differentiable"])
    try:
        out = step(*args, **kwargs)
    finally:
        torch._C._set_grad_enabled(grad_enabled)
    self._optimizer_step_code()
    return out


def _run_hooked(step, self, args, kwargs):
    """Pre hooks, the step, post hooks; as torch, hooks get ``args`` with the optimizer
    first, and a pre hook may return new ``(args, kwargs)``."""
    for pre_hook in itertools.chain(_torch_optimizer._global_optimizer_pre_hooks.values(),
                                    self._optimizer_step_pre_hooks.values()):
        result = pre_hook(self, args, kwargs)
        if result is not None:
            if isinstance(result, tuple) and len(result) == 2:
                args, kwargs = result
            else:
                raise RuntimeError(f"{step} must return None or a tuple of (new_args, "
                                   f"new_kwargs), but got {result}.")
    out = _run_step(step, self, args, kwargs)
    for post_hook in itertools.chain(self._optimizer_step_post_hooks.values(),
                                     _torch_optimizer._global_optimizer_post_hooks.values()):
        post_hook(self, args, kwargs)
    return out


class SGD(Optimizer):
    """``torch.optim.SGD`` (same arguments, defaults, errors, param groups, state_dict),
    stepping dense CPU float32/float64 params with fastmomentum's kernels.

    Per param group, every param whose param, grad and momentum buffer are plain dense,
    C-contiguous CPU float32/float64 tensors of one dtype and shape is stepped in one
    multi-tensor call, bit for bit as torch.optim.SGD's default (for-loop) CPU
    implementation. Any other param (CUDA, sparse or non-contiguous grads, other dtypes,
    tensor subclasses, ``differentiable=True``, a tensor ``weight_decay``) is stepped by
    torch's own functional SGD: on CPU always its for-loop, which is exact for any memory
    layout. ``foreach``/``fused`` are accepted and stored like torch; on CPU the result is
    always the for-loop's. Momentum buffers live in ``self.state[p]['momentum_buffer']``
    as torch tensors, so ``state_dict()`` loads into torch.optim.SGD and back. ``p.grad``
    is only read.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, ema=None):
        # torch.optim.SGD.__init__, check for check and message for message.
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
                    "foreach": foreach, "differentiable": differentiable, "fused": fused}
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        #: Per param group: facts earlier steps checked (see TorchGroupCache).
        self._group_caches = []
        #: What the EMA update of params outside the fused pass writes, checked across steps.
        self._ema_written = _kernels.WrittenSpans()
        super().__init__(params, defaults)
        if fused:
            self._step_supports_amp_scaling = True
            self._need_device_dtype_check_for_fused = True
            if differentiable:
                raise RuntimeError("`fused` does not support `differentiable`")
            if foreach:
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        #: An :class:`EMA` of all params (param groups in order), updated by every step
        #: in the same pass over memory as the step, or None.
        self.ema = ema
        if ema is not None:
            self._check_ema()

    def _check_ema(self):
        params = [p for group in self.param_groups for p in group["params"]]
        averages = self.ema._ema.raw_averages
        if len(params) != len(averages) or any(
                tuple(p.shape) != a.shape or _NUMPY_DTYPES.get(p.dtype) != a.dtype
                or p.device.type != "cpu" for p, a in zip(params, averages)):
            raise ValueError(f"SGD: `ema` must average this optimizer's params, in order "
                             f"({len(params)} params; the EMA has {len(averages)} averages "
                             f"or differs in a shape or dtype, or a param is not on the CPU)")

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("_group_caches", [])  # unpickled without __init__
        self.__dict__.setdefault("_ema_written", _kernels.WrittenSpans())
        self.__dict__.setdefault("ema", None)
        for group in self.param_groups:  # as torch.optim.SGD.__setstate__
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", False)

    def _new_momentum_buffer(self, param):
        buffer = torch.empty_like(param, memory_format=torch.contiguous_format)
        self.state[param]["momentum_buffer"] = buffer
        return buffer

    def _fast_path_fits(self, group):
        return (FAST_PATH and isinstance(self.state, dict) and not group["differentiable"]
                and not isinstance(group["weight_decay"], torch.Tensor)
                and getattr(self, "grad_scale", None) is None
                and getattr(self, "found_inf", None) is None)

    def _torch_step(self, group, params):
        """torch.optim.SGD.step's body for ``params`` of ``group``."""
        params_with_grad, grads, buffers = [], [], []
        has_sparse_grad = torch.optim.SGD._init_group(self, dict(group, params=params),
                                                      params_with_grad, grads, buffers)
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        # torch's fused CPU kernel is wrong when a grad's strides differ from its param's:
        # on CPU take its for-loop, exact for any layout (and what the fast path matches).
        plain_cpu = (grad_scale is None and found_inf is None
                     and all(p.device.type == "cpu" for p in params_with_grad))
        _torch_sgd(params_with_grad, grads, buffers,
                   weight_decay=group["weight_decay"], momentum=group["momentum"],
                   lr=group["lr"], dampening=group["dampening"], nesterov=group["nesterov"],
                   maximize=group["maximize"], has_sparse_grad=has_sparse_grad,
                   foreach=False if plain_cpu else group["foreach"],
                   fused=False if plain_cpu else group["fused"],
                   grad_scale=grad_scale, found_inf=found_inf)
        if group["momentum"] != 0:
            for p, buffer in zip(params_with_grad, buffers):
                self.state[p]["momentum_buffer"] = buffer

    @_hooked_step
    def step(self, closure=None):
        """Perform a single optimization step (``closure`` as in torch.optim.SGD)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        ema = self.ema
        if ema is not None:
            if sum(len(group["params"]) for group in self.param_groups) != len(
                    ema._ema.raw_averages):
                self._check_ema()  # a param group was added: refuse with the full account
            decay = ema._ema.next_decay()
            averages = iter(ema._ema.raw_averages)
            unfused_averages, unfused_params = [], []  # those the step did not update
        if len(self._group_caches) < len(self.param_groups):
            self._group_caches += [_kernels.TorchGroupCache() for _ in
                                  range(len(self.param_groups) - len(self._group_caches))]
        for group, checked in zip(self.param_groups, self._group_caches):
            params = group["params"]
            group_averages = (None if ema is None
                              else list(itertools.islice(averages, len(params))))
            if not self._fast_path_fits(group):
                self._torch_step(group, params)
                if ema is not None:
                    unfused_averages += group_averages
                    unfused_params += params
                continue
            stepped, others, no_grad = _kernels.torch_sgd_group_step(
                params, self.state, group["lr"], group["momentum"], group["dampening"],
                group["weight_decay"], group["nesterov"], group["maximize"],
                self._new_momentum_buffer, checked, group_averages,
                decay if ema is not None else 0.0)
            if ema is not None:
                for i in others + no_grad:
                    unfused_averages.append(group_averages[i])
                    unfused_params.append(params[i])
            if stepped:
                # Written behind autograd's back: bump the version counters as an in-place
                # op would, so autograd still catches use of stale saved weights.
                torch._C._increment_version(stepped)  # torch.autograd.graph.increment_version
            if others:
                self._torch_step(group, [params[i] for i in others])
        if ema is not None:
            if unfused_params:
                _kernels.multi_ema_update(
                    unfused_averages, _numpy_values("SGD.step: ema", unfused_params), decay,
                    self._ema_written)
            ema._ema._advance(decay)
        return loss


_NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def _module_params(params):
    return list(params.parameters() if isinstance(params, torch.nn.Module) else params)


def _numpy_values(func, params):
    """Read-only NumPy views of CPU float tensors (contiguous copies when they are not)."""
    values = []
    for i, p in enumerate(params):
        if (not isinstance(p, torch.Tensor) or p.device.type != "cpu" or p.is_sparse
                or p.dtype not in (torch.float32, torch.float64)):
            what = (f"{p.dtype} on {p.device}" if isinstance(p, torch.Tensor)
                    else type(p).__name__)
            raise TypeError(f"{func}: `params[{i}]` must be a dense CPU float32 or float64 "
                            f"tensor; got {what}")
        values.append(p.detach().contiguous().resolve_neg().numpy())
    return values


class EMA:
    """:class:`fastmomentum.EMA` of torch tensors: ``EMA(model, decay=0.999, *,
    warmup=False, debias=False)`` with ``model`` an ``nn.Module`` (its parameters) or CPU
    float32/float64 tensors. ``update(model)`` averages the current weights in one call;
    :attr:`averages` are torch tensors; :meth:`copy_to` loads them into a module, e.g. for
    evaluation."""

    def __init__(self, params, decay=0.999, *, warmup=False, debias=False):
        values = _numpy_values("EMA", _module_params(params))
        self._ema = _optim.EMA(values, decay, warmup=warmup, debias=debias)

    @property
    def updates(self):
        """Number of updates so far."""
        return self._ema.updates

    def update(self, params):
        """Fold the current weights (same module or tensors, same order) into the average."""
        self._ema.update(_numpy_values("EMA.update", _module_params(params)))

    @property
    def averages(self):
        """The averages as CPU tensors (bias-corrected copies with ``debias=True``)."""
        return [torch.from_numpy(a) for a in self._ema.averages]

    @torch.no_grad()
    def copy_to(self, params):
        """Copy the averages into ``params`` (a module or tensors, same order)."""
        params = _module_params(params)
        if len(params) != len(self._ema.raw_averages):
            raise ValueError(f"EMA.copy_to: expected {len(self._ema.raw_averages)} params; "
                             f"got {len(params)}")
        for p, a in zip(params, self.averages):
            p.copy_(a)

    def state_dict(self):
        """As :meth:`fastmomentum.EMA.state_dict`, with torch tensors for the averages."""
        state = self._ema.state_dict()
        state["averages"] = [torch.from_numpy(a) for a in state["averages"]]
        return state

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict`; refused (nothing changed) when it does not fit."""
        state = dict(state_dict)
        state["averages"] = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
                             for a in state["averages"]]
        self._ema.load_state_dict(state)
