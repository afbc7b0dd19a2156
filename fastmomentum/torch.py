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
import functools
import itertools
import math
import threading
import types
import warnings

import numpy as np
import torch
from torch.optim.optimizer import Optimizer
from torch.optim.sgd import sgd as _torch_sgd

from . import _torch_flat, _torch_state, _validation
from . import optim as _optim
from ._dispatch import kernels as _kernels
from ._torch_bridge import FAST_PATH_REASON
from ._torch_bridge import PRIVATE as _PRIVATE
from ._torch_bridge import PRIVATE_FOUND as _PRIVATE_FOUND

__all__ = ["SGD", "EMA", "FAST_PATH", "FAST_PATH_REASON", "clip_grad_norm_"]

#: Whether dense CPU float32/float64 params go through fastmomentum's kernels here (False:
#: every step is torch's own, still correct, not faster; FAST_PATH_REASON says why).
FAST_PATH = FAST_PATH_REASON is None

# torch's own SGD, bound once: ``torch.optim.SGD = fastmomentum.torch.SGD`` (a codebase
# switched globally) must not make the fallback find fastmomentum's class.
_TorchSGD = torch.optim.SGD
_torch_init_group = _TorchSGD._init_group
_warned_slow = []  # the one-time warning about FAST_PATH_REASON was given
# the private names (None when missing: then torch's own step wrapper is used)
_global_pre_hooks = _PRIVATE["global_pre_hooks"]
_global_post_hooks = _PRIVATE["global_post_hooks"]
_profiler_enabled = _PRIVATE["profiler_enabled"]
_set_grad_enabled = _PRIVATE["set_grad_enabled"]


# SGD's clipping options and counters, with their defaults (kept by pickles and copies)
_CLIP_ATTRIBUTES = {"clip_grad_norm": None, "norm_type": 2.0, "skip_if_nonfinite": False,
                    "write_clipped_grads": False, "last_grad_norm": None, "skipped_steps": 0}


def _warn_once_if_slow():
    if FAST_PATH_REASON is not None and not _warned_slow:
        _warned_slow.append(True)
        if not FAST_PATH_REASON.startswith("turned off by"):
            warnings.warn(f"fastmomentum.torch: the fast path is off ({FAST_PATH_REASON}); "
                          f"every step is torch's own SGD (same results, not faster)",
                          RuntimeWarning, stacklevel=3)


def _hooked_step(step):
    """torch.optim.Optimizer.profile_hook_step (step pre/post hooks, the profiler's
    ``_optimizer_step_code``) with the grad mode of ``_use_grad_for_differentiable``.
    ``record_function`` and the hook loops cost several us per step, more than a whole
    fastmomentum step of a small model: they run only while a profiler runs or a hook is
    registered. Without the private names this needs (see _torch_bridge), torch's own
    wrapper."""
    if not _PRIVATE_FOUND:
        @functools.wraps(step)
        def with_grad_mode(self, *args, **kwargs):
            with torch.set_grad_enabled(self.defaults["differentiable"]):
                return step(self, *args, **kwargs)
        return Optimizer.profile_hook_step(with_grad_mode)

    @functools.wraps(step)
    def wrapper(*args, **kwargs):
        self = args[0]
        run = (_run_hooked if (_global_pre_hooks or self._optimizer_step_pre_hooks
                               or self._optimizer_step_post_hooks or _global_post_hooks)
               else _run_step)
        if _profiler_enabled():
            with torch.autograd.profiler.record_function(
                    f"Optimizer.step#{self.__class__.__name__}.step"):
                return run(step, self, args, kwargs)
        return run(step, self, args, kwargs)
    wrapper.hooked = True  # Optimizer._patch_step_function: do not wrap again
    return wrapper


def _run_step(step, self, args, kwargs):
    grad_enabled = torch.is_grad_enabled()
    _set_grad_enabled(self.defaults["differentiable"])
    try:
        out = step(*args, **kwargs)
    finally:
        _set_grad_enabled(grad_enabled)
    self._optimizer_step_code()
    return out


def _run_hooked(step, self, args, kwargs):
    """Pre hooks, the step, post hooks; as torch, hooks get ``args`` with the optimizer
    first, and a pre hook may return new ``(args, kwargs)``."""
    for pre_hook in itertools.chain(_global_pre_hooks.values(),
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
                                     _global_post_hooks.values()):
        post_hook(self, args, kwargs)
    return out


class SGD(Optimizer):
    """``torch.optim.SGD`` (same arguments, defaults, errors, param groups, state_dict),
    stepping dense CPU float32/float64/bfloat16/float16 params with fastmomentum's kernels.

    bfloat16 and float16 params (docs/mixed-precision.md) get torch.optim.SGD's for-loop
    bits at the torch thread count of the step (``torch.get_num_threads()``: torch's own
    bits depend on it for tensors of 32768+ elements), or with ``fused=True`` the float32
    step with one rounding per stored value (torch 2.14's fused CPU kernel; torch 2.13's
    is wrong for these dtypes and is never called for them, on either path).

    Per param group, every param whose param, grad and momentum buffer are plain dense,
    C-contiguous CPU float32/float64 tensors of one dtype and shape is stepped in one
    multi-tensor call, bit for bit as torch.optim.SGD's default (for-loop) CPU
    implementation. Any other param (CUDA, sparse or non-contiguous grads, other dtypes,
    tensor subclasses, ``differentiable=True``, a tensor ``weight_decay``) is stepped by
    torch's own functional SGD: on CPU always its for-loop, which is exact for any memory
    layout. ``foreach``/``fused`` are accepted and stored like torch; on CPU the result is
    always the for-loop's. Momentum buffers live in ``self.state[p]['momentum_buffer']``
    as torch tensors, so ``state_dict()`` loads into torch.optim.SGD and back. ``p.grad``
    is only read. :attr:`kernel_params` says how many params the last step sent through
    fastmomentum's kernels.

    A step is checked whole (both paths) before anything is written: torch's params go
    first (torch raises before writing for its own checks), then fastmomentum's kernels,
    whose momentum buffers, version counters and EMA counters are recorded in the same C
    call. One optimizer must not be stepped from two threads at once: that raises
    RuntimeError (as for torch's, use a lock or one optimizer per thread).

    State in fewer bytes (docs/state-dtypes.md): ``momentum_dtype=torch.bfloat16`` (or
    ``torch.float16``) keeps float32 params' momentum buffers in that dtype (the float32
    step on the widened buffer, stored rounded; the param updated with the unrounded
    momentum); ``master_weights="split"`` steps bfloat16 params as the top halves of
    float32 master weights whose bottom halves live in ``state[p]['master_low_bits']``
    (bit-identical to float32 master weights; momentum float32, or bfloat16 with
    ``momentum_dtype``): see :meth:`master_params`. Every param must then fit (there is no
    torch fallback), and ``ema`` is not available. ``clip_grad_norm``/``skip_if_nonfinite``
    work with both (one norm over every group's grads, each grad read as
    ``float32(grad * coef)``), and so do GradScaler's steps (``grad_scale`` read as the
    grad coefficient).

    ``flat=True``: each param group's params (dense CPU float32/float64, per dtype) move
    into one contiguous buffer and their grads into another, ``.data`` and ``.grad``
    becoming views, so a step is one kernel call whatever the tensor count;
    :meth:`zero_grad` then zeroes in place (``set_to_none`` ignored) and a step notices
    and copies back replaced grads, params and momentum buffers (docs/flat-buffers.md).
    :attr:`flat_segments` says how many contiguous runs the last step stepped.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, ema=None, clip_grad_norm=None, norm_type=2.0,
                 skip_if_nonfinite=False, momentum_dtype=None, master_weights=None,
                 flat=False, write_clipped_grads=False):
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
        clip_grad_norm, norm_type = _validation.check_clipping(
            "SGD", clip_grad_norm, norm_type, skip_if_nonfinite)
        write_clipped_grads = _validation.check_write_clipped_grads("SGD",
                                                                    write_clipped_grads)
        if ema is not None and not isinstance(ema, EMA):
            raise TypeError(f"SGD: `ema` must be a fastmomentum.torch.EMA of this "
                            f"optimizer's params, or None; got {_validation.describe(ema)}")
        if flat not in (True, False):
            raise TypeError(f"SGD: `flat` must be True or False; got {flat!r}")
        if flat and ema is not None:
            raise ValueError("SGD: `ema` cannot be combined with flat=True yet")
        self._init_caches()
        #: Contiguous runs the last flat step sent through the kernels (one per param group
        #: and dtype when no param was replaced or lacked a grad); None without flat=True.
        self.flat_segments = None
        self._flat_buckets = None
        super().__init__(params, defaults)
        #: Global-norm clipping (max_norm or None), its norm type (2.0 or inf) and skipping
        #: of steps whose total norm is not finite: plain attributes, read at every step.
        self.clip_grad_norm, self.norm_type = clip_grad_norm, norm_type
        self.skip_if_nonfinite = bool(skip_if_nonfinite)
        #: Leave the grads as torch's recipe (``GradScaler.unscale_``, ``clip_grad_norm_``)
        #: leaves them: unscaled and clipped, stored by the step's own pass (a plain
        #: attribute; False: the grads are only read).
        self.write_clipped_grads = write_clipped_grads
        self._grad_spans = _kernels.WrittenSpans()  # its check that no two grads overlap
        #: Total norm of the grads at the last step (None unless clipping or skipping).
        self.last_grad_norm = None
        #: Steps skipped by skip_if_nonfinite.
        self.skipped_steps = 0
        # GradScaler hands this optimizer `grad_scale`/`found_inf` (as to torch's fused
        # SGD): the step unscales as it reads each grad, and skips when found_inf.
        self._step_supports_amp_scaling = True
        if fused:
            self._need_device_dtype_check_for_fused = True
            if differentiable:
                raise RuntimeError("`fused` does not support `differentiable`")
            if foreach:
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        #: An :class:`EMA` of all params (param groups in order), updated by every step
        #: in the same pass over memory as the step, or None.
        self.ema = ema
        #: "split" (bfloat16 params over float32 master weights: see master_params) or None.
        self.master_weights = master_weights
        #: The momentum buffers' dtype when it is not the params' (momentum_dtype, or
        #: float32 under master_weights="split"), else None.
        self.momentum_dtype = _torch_state.check_options(
            [p for group in self.param_groups for p in group["params"]], momentum_dtype,
            master_weights, ema, differentiable)
        if self.momentum_dtype is not None:
            if write_clipped_grads:
                raise ValueError(f"SGD: {_WRITE_BACK_WITH_STATE}")
            if flat:
                raise ValueError("SGD: `flat=True` is not available with `momentum_dtype` "
                                 "or master_weights='split'")
        if flat:
            self._flatten()
        if ema is not None:
            self._check_ema()
        _warn_once_if_slow()

    def _init_caches(self):
        #: Per param group: facts earlier steps checked (see TorchGroupCache).
        self._group_caches = []
        #: What the EMA update of params outside the fused pass writes, checked across steps.
        self._ema_written = _kernels.WrittenSpans()
        #: Number of params the last step() sent through fastmomentum's kernels (the rest,
        #: with a grad, went to torch's own SGD).
        self.kernel_params = 0
        self._state_spans = []  # momentum_dtype / split: per group, what its pass writes
        self._state_view_cache = {}  # and NumPy views of each param and its state tensors

    def _check_ema(self):
        params = [p for group in self.param_groups for p in group["params"]]
        averages = self.ema._ema.raw_averages
        if len(params) != len(averages) or any(
                tuple(p.shape) != a.shape or _numpy_dtype(p.dtype) != a.dtype
                or p.device.type != "cpu" for p, a in zip(params, averages)):
            raise ValueError(f"SGD: `ema` must average this optimizer's params, in order "
                             f"({len(params)} params; the EMA has {len(averages)} averages "
                             f"or differs in a shape or dtype, or a param is not on the CPU)")

    def _flatten(self):
        """flat=True: move the params into flat buffers (see fastmomentum._torch_flat)."""
        self.flat_segments = 0
        self._flat_carrier_state = {}
        self._flat_buckets = _torch_flat.flatten(self.param_groups)
        self._flat_steady = _kernels.FlatSteady()  # the plans a steady step runs again

    def add_param_group(self, param_group):
        """torch.optim.Optimizer.add_param_group; with flat=True the group gets its own
        flat buffers."""
        super().add_param_group(param_group)
        if self.__dict__.get("_flat_buckets") is not None:
            self._flat_buckets += _torch_flat.flatten(self.param_groups[-1:],
                                                      len(self.param_groups) - 1)

    def zero_grad(self, set_to_none=True):
        """torch.optim.Optimizer.zero_grad; with flat=True the grad buffers are zeroed in
        place and ``set_to_none`` is ignored (a None grad would make autograd allocate a new
        tensor at the next backward, which the next step would have to copy back)."""
        if self._flat_buckets is None:
            return super().zero_grad(set_to_none)
        _torch_flat.zero_grad(self)

    def __getstate__(self):
        state = super().__getstate__()
        state["ema"] = self.ema  # copies and pickles keep the EMA
        for name in _CLIP_ATTRIBUTES:  # and the clipping options and counters,
            state[name] = getattr(self, name)
        state["master_weights"] = self.master_weights  # and the state formats
        state["momentum_dtype"] = self.momentum_dtype
        return state

    def __setstate__(self, state):
        self._init_caches()
        self._grad_spans = _kernels.WrittenSpans()
        super().__setstate__(state)
        self.__dict__.setdefault("ema", None)
        for name, value in _CLIP_ATTRIBUTES.items():
            self.__dict__.setdefault(name, value)
        self.__dict__.setdefault("master_weights", None)
        self.__dict__.setdefault("momentum_dtype", None)
        self._step_supports_amp_scaling = True
        self.__dict__.setdefault("_flat_buckets", None)  # a pickled copy is not flat
        self.__dict__.setdefault("flat_segments", None)
        for group in self.param_groups:  # as torch.optim.SGD.__setstate__
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", False)

    # momentum_dtype / master_weights="split": state torch's load_state_dict would cast
    def load_state_dict(self, state_dict):
        """torch.optim.Optimizer.load_state_dict; with ``momentum_dtype`` or
        ``master_weights="split"``, momentum buffers are converted to this optimizer's
        momentum dtype (torch's would cast them to each param's) and the split master
        weights' low bits restored exactly; everything is checked before anything loads."""
        if self.momentum_dtype is None:
            return super().load_state_dict(state_dict)
        state_dict, saved = _torch_state.take_state(self, state_dict)
        stores = _torch_state.check_saved(self, saved)
        super().load_state_dict(state_dict)
        _torch_state.put_state(self, stores)
        return None

    def master_params(self):
        """With ``master_weights="split"``: float32 copies of the exact master weights
        (each bfloat16 param's bits joined with its ``master_low_bits``), in param order."""
        if self.master_weights != "split":
            raise ValueError("SGD.master_params: this optimizer keeps no master weights "
                             "(construct it with master_weights='split')")
        return _torch_state.master_params(self)

    def load_master_params(self, weights):
        """With ``master_weights="split"``: start from float32 ``weights`` (one tensor per
        param, in order): each param gets the top 16 bits of its weight (truncated, so
        that param and low bits join into the weight exactly), the state the bottom 16."""
        _torch_state.load_master_params(self, weights)

    @staticmethod
    def _new_momentum_buffer(param):
        """A buffer for a first step; the kernels fill it, then it is stored in state."""
        return torch.empty_like(param, memory_format=torch.contiguous_format)

    def _fast_path_fits(self, group):
        return (FAST_PATH and isinstance(self.state, dict) and not group["differentiable"]
                and not isinstance(group["weight_decay"], torch.Tensor))

    def _torch_step(self, group, params):
        """torch.optim.SGD.step's body for ``params`` of ``group``."""
        params = self._torch_step_halves(group, params)
        params_with_grad, grads, buffers = [], [], []
        has_sparse_grad = _torch_init_group(self, dict(group, params=params),
                                            params_with_grad, grads, buffers)
        grad_scale = found_inf = None  # AMP was handled before (_scaled_step)
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

    def _torch_step_halves(self, group, params):
        """Step the bfloat16/float16 params of a ``fused`` group outside torch's fused
        kernel, which is wrong for them in torch 2.13 (pytorch #191763): torch's float32
        for-loop on float32 copies, each stored value rounded once, as torch 2.14's fused
        kernel (and the fast path's fused=True) computes. Returns the params left to torch.
        (AMP's grad_scale/found_inf never get here: _scaled_step unscaled the grads, or
        skipped the step, before.)"""
        if not group["fused"]:
            return params
        halves = [p for p in params if p.grad is not None and p.dtype in _HALF_DTYPES]
        if not halves:
            return params
        with torch.no_grad():
            wide = [p.detach().float() for p in halves]
            grads = [p.grad.float() for p in halves]
            buffers = [self.state[p].get("momentum_buffer") for p in halves]
            wide_buffers = [None if b is None else b.float() for b in buffers]
            _torch_sgd(wide, grads, wide_buffers, weight_decay=group["weight_decay"],
                       momentum=group["momentum"], lr=group["lr"],
                       dampening=group["dampening"], nesterov=group["nesterov"],
                       maximize=group["maximize"], has_sparse_grad=False, foreach=False,
                       fused=False)
            for p, w in zip(halves, wide):
                p.copy_(w)
            if group["momentum"] != 0:
                for p, b, w in zip(halves, buffers, wide_buffers):
                    if b is None:
                        self.state[p]["momentum_buffer"] = w.to(p.dtype)
                    else:
                        b.copy_(w)
        return [p for p in params if p.dtype not in _HALF_DTYPES]

    @_hooked_step
    def step(self, closure=None):
        """Perform a single optimization step (``closure`` as in torch.optim.SGD)."""
        # Two threads stepping at once: torch_sgd_run refuses to start while another
        # thread's kernels run, or after it took a first step these plans also take; steps
        # serialized by the GIL apply one after the other (the kernels read and write in
        # place), as torch's do.
        return self._step(closure)

    def _plan(self, decay, fused_ema):
        """Check and describe the fast-path share of every group (nothing written):
        ``(plans, torch_groups)``, the latter the (group, params) torch must step."""
        caches = self._group_caches
        if len(caches) < len(self.param_groups):
            caches += [_kernels.TorchGroupCache()
                       for _ in range(len(self.param_groups) - len(caches))]
        averages = self.ema._ema.raw_averages if fused_ema else None
        plans, torch_groups, first = [], [], 0
        for group, checked in zip(self.param_groups, caches):
            params = group["params"]
            if not self._fast_path_fits(group):
                torch_groups.append((group, params))
            else:
                plan = _kernels.torch_sgd_group_plan(
                    params, self.state, group["lr"], group["momentum"], group["dampening"],
                    group["weight_decay"], group["nesterov"], group["maximize"],
                    self._new_momentum_buffer, checked,
                    averages[first:first + len(params)] if fused_ema else None, decay, first,
                    once=bool(group["fused"]))
                plans.append(plan)
                if plan.others:
                    torch_groups.append((group, [params[i] for i in plan.others]))
            first += len(params)
        return plans, torch_groups

    def _ema_decay(self):
        """The decay of the EMA's next update (0.0 without an EMA)."""
        ema = self.ema
        if ema is None:
            return 0.0
        if sum(len(group["params"]) for group in self.param_groups) != len(
                ema._ema.raw_averages):
            self._check_ema()  # a param group was added: refuse with the full account
        return ema._ema.next_decay()

    def _step(self, closure):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if (self.clip_grad_norm is not None or self.skip_if_nonfinite
                or getattr(self, "grad_scale", None) is not None
                or getattr(self, "found_inf", None) is not None):
            return self._scaled_step(loss)
        return self._step_grads(loss)

    def _step_grads(self, loss):
        """The step of the grads as they are (no clipping, no AMP)."""
        if self._flat_buckets is not None:
            segments = (_kernels.torch_flat_steady(self._flat_steady, self.param_groups,
                                                   self.state, self)
                        if FAST_PATH else None)  # FAST_PATH off: the full step's choice
            self.flat_segments = (_torch_flat.flat_step(self) if segments is None
                                  else segments)
            return loss
        if self.momentum_dtype is not None:  # fewer-byte momentum, split master weights
            _torch_state.step(self)
            return loss
        ema = self.ema
        decay = self._ema_decay()
        groups = self.param_groups
        if len(groups) == 1 and len(self._group_caches) == 1 and self._fast_path_fits(
                groups[0]):  # one call plans, runs and keeps the books when torch has no part
            group = groups[0]
            kernel_params = _kernels.torch_sgd_group_plan(
                group["params"], self.state, group["lr"], group["momentum"],
                group["dampening"], group["weight_decay"], group["nesterov"],
                group["maximize"], self._new_momentum_buffer, self._group_caches[0],
                None if ema is None else ema._ema.raw_averages, decay, 0,
                None if ema is None else ema._ema, once=bool(group["fused"]))
            if type(kernel_params) is int:
                self.kernel_params = kernel_params
                return loss
        plans, torch_groups = self._plan(decay, ema is not None)
        if not torch_groups:  # every param through the kernels
            self.kernel_params = _kernels.torch_sgd_run(
                plans, self.state, None if ema is None else ema._ema, decay)
            return loss
        if ema is not None:
            # torch steps some params: the EMA goes after both, in one call of its own
            plans, torch_groups = self._plan(decay, False)
            all_params = [p for group in self.param_groups for p in group["params"]]
            _check_ema_params("SGD.step: ema", all_params, ema._ema.raw_averages)
        if not torch.is_inference_mode_enabled() and any(
                p.grad is not None and p.is_inference()
                for _, params in torch_groups for p in params):
            raise RuntimeError(_kernels.INFERENCE_TENSOR_ERROR)  # torch's words
        # torch's own steps release the GIL: claim the optimizer (dict.setdefault is one C
        # call; a claim an interrupted step of this thread left behind is its own)
        me = threading.get_ident()
        if self.__dict__.setdefault("_stepping_thread", me) != me:
            raise RuntimeError("SGD.step: another thread is stepping this optimizer at the "
                               "same time; one optimizer's steps must not overlap: guard it "
                               "with a lock, or give each thread its own")
        try:
            for group, params in torch_groups:
                self._torch_step(group, params)
            self.kernel_params = _kernels.torch_sgd_run(plans, self.state) if plans else 0
        finally:
            self.__dict__.pop("_stepping_thread", None)
        if ema is not None:
            _kernels.multi_ema_update(ema._ema.raw_averages,
                                      _numpy_values("SGD.step: ema", all_params), decay,
                                      self._ema_written, ema._ema)
        return loss

    def _scaled_step(self, loss):
        """A step with global-norm clipping, skipping of non-finite norms and/or AMP's
        ``grad_scale``/``found_inf`` (what torch.amp.GradScaler.step sets): checked whole
        before anything is written; on the fast path one norm pass then one step pass that
        reads each grad times the coefficient (with flat=True: per flat buffer), else
        torch's unscale/clip then its step."""
        grad_scale, found_inf = _amp_tensors(getattr(self, "grad_scale", None),
                                             getattr(self, "found_inf", None))
        options = (self.clip_grad_norm, self.norm_type, self.skip_if_nonfinite,
                   self.write_clipped_grads)
        key = options + tuple(map(type, options))  # 1 == True: the types count too
        if key != self.__dict__.get("_clip_checked"):  # changed since checked (~0.7 us)
            _validation.check_clipping("SGD.step", *options[:3])
            _validation.check_write_clipped_grads("SGD.step", options[3])
            self._clip_checked = key  # (a NaN never compares equal: checked again)
        clip, norm_type = (None if options[0] is None else float(options[0]),
                           float(options[1]))
        writes = bool(options[3])
        # AMP's unscaling in double then rounded to float32, as GradScaler.unscale_
        inv_scale = (None if grad_scale is None
                     else grad_scale.double().reciprocal().float())
        if writes and self.momentum_dtype is not None:  # before anything is written
            raise ValueError(f"SGD.step: {_WRITE_BACK_WITH_STATE}")
        if found_inf is not None and found_inf.item() != 0:
            self.kernel_params = 0  # as torch's fused step and GradScaler: skipped whole
            if writes:  # the grads as torch's recipe leaves them before its skipped step
                if inv_scale is not None:
                    self._unscale_grads(inv_scale)
                if clip is not None:
                    clip_grad_norm_(self._params_with_grads(), clip, norm_type)
            return loss
        measures = clip is not None or self.skip_if_nonfinite
        if self.momentum_dtype is not None:  # fewer-byte momentum, split master weights
            # with clipping, torch's recipe: unscaled in place (after the step's checks),
            # then the norm of the unscaled grads; else read times 1/scale in the step
            _torch_state.step(self, clip, norm_type != 2.0, self.skip_if_nonfinite,
                              1.0 if inv_scale is None or measures else inv_scale.item(),
                              None if inv_scale is None or not measures
                              else functools.partial(self._unscale_grads, inv_scale))
            return loss
        ema = self.ema
        decay = self._ema_decay()   # these refuse bad input and write nothing: before
        flat = self._flat_buckets is not None and all(  # any grad is unscaled
            self._fast_path_fits(group) for group in self.param_groups)
        if flat:
            plans, finish = _torch_flat.flat_scaled_plans(self)
            torch_groups, state = (), self._flat_carrier_state
        else:
            plans, torch_groups = self._plan(decay, ema is not None)
            state = self.state
        if not torch_groups:
            # with clipping, torch's recipe (scaler.unscale_, then the clip): the norm is of
            # grads unscaled in place, by the kernel call once no other step runs
            skipped = self.skipped_steps
            written = _kernels.torch_sgd_clip_run(
                plans, state, None if ema is None else ema._ema, decay, self, clip,
                norm_type != 2.0, self.skip_if_nonfinite,
                1.0 if inv_scale is None or measures else inv_scale.item(),
                None if inv_scale is None or not measures
                else functools.partial(self._unscale_grads, inv_scale),
                self._grad_spans if writes else None)
            if written is not None:  # None: 16-bit params, torch's recipe below
                if self.skipped_steps != skipped:
                    self.kernel_params = 0
                    if flat:
                        self.flat_segments = 0
                    if writes and clip is not None:
                        self._clip_skipped_grads(clip)
                elif flat:
                    self.flat_segments = finish()
                else:
                    self.kernel_params = written
                return loss
        # some params are torch's: its own unscale and clip (grads written), then the step
        if inv_scale is not None:
            self._unscale_grads(inv_scale)
        if measures:
            grads = [p.grad for p in self._params_with_grads()]
            total = torch.nn.utils.get_total_norm(grads, norm_type)
            self.last_grad_norm = total.item()
            if self.skip_if_nonfinite and not torch.isfinite(total).item():
                self.skipped_steps += 1
                self.kernel_params = 0
                if clip is not None and writes:
                    self._clip_skipped_grads(clip)
                return loss
            if clip is not None:
                torch.nn.utils.clip_grads_with_norm_(
                    [p for group in self.param_groups for p in group["params"]], clip, total)
        return self._step_grads(loss)

    def _params_with_grads(self):
        return [p for group in self.param_groups for p in group["params"]
                if p.grad is not None]

    def _clip_skipped_grads(self, clip):
        """write_clipped_grads on a step skip_if_nonfinite skipped: the grads as torch's
        recipe leaves them (clip_grad_norm_ runs before the step is skipped), each times
        the coefficient of the non-finite total, 0 (inf) or NaN."""
        params = self._params_with_grads()
        if params:
            dtype = (torch.float32 if all(p.grad.dtype == torch.float32 for p in params)
                     else torch.float64)
            torch.nn.utils.clip_grads_with_norm_(
                params, clip, torch.tensor(self.last_grad_norm, dtype=dtype))

    def _unscale_grads(self, inv_scale):
        """``grad *= inv_scale`` in place, as GradScaler.unscale_ (its own kernel)."""
        by_key = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    by_key.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        for (device, _), grads in by_key.items():
            torch._amp_foreach_non_finite_check_and_unscale_(
                grads, torch.zeros(1, device=device), inv_scale.to(device))


_WRITE_BACK_WITH_STATE = ("`write_clipped_grads=True` is not available with `momentum_dtype` "
                          "or master_weights='split' (their steps read the grads scaled and "
                          "store none back)")


def _amp_tensors(grad_scale, found_inf):
    """GradScaler's ``grad_scale``/``found_inf``, checked: 1-element float32 tensors on one
    device, or None."""
    for name, value in (("grad_scale", grad_scale), ("found_inf", found_inf)):
        if value is not None and not (isinstance(value, torch.Tensor)
                                      and value.numel() == 1
                                      and value.dtype == torch.float32):
            what = (f"a {value.dtype} tensor of shape {tuple(value.shape)}"
                    if isinstance(value, torch.Tensor) else _validation.describe(value))
            raise TypeError(f"SGD.step: `{name}` (set by torch.amp.GradScaler) must be a "
                            f"1-element float32 tensor or None; got {what}")
    if grad_scale is not None and not (grad_scale.item() > 0 and
                                       torch.isfinite(grad_scale).item()):
        raise ValueError(f"SGD.step: `grad_scale` must be a finite scale > 0; got "
                         f"{grad_scale.item()!r}")
    return grad_scale, found_inf


@torch.no_grad()
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    """``torch.nn.utils.clip_grad_norm_``, same arguments, result and errors: scales the
    grads of ``parameters`` in place by ``min(max_norm / (total + 1e-6), 1)`` and returns
    the total norm (a tensor). For dense CPU float32/float64 grads and ``norm_type`` 2 or
    inf the norm is one fastmomentum pass (double sums, fixed order: the same bits for any
    thread count, and closer to the exact norm than torch's float32 sums); otherwise, and
    for other norm types, torch's own. ``max_norm`` must be a finite number >= 0."""
    max_norm = _validation.check_scalar("clip_grad_norm_", "max_norm", max_norm,
                                        label="max_norm")
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    else:
        is_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)
        if is_generator and not parameters:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will "
                          "occur.", stacklevel=3)
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = float(norm_type)
    # torch refuses the inf-norm of an empty grad: let it say so
    measured = (_kernels.torch_grads_norm(grads, norm != 2.0)
                if FAST_PATH and grads and (norm == 2.0 or norm == math.inf
                                            and all(g.numel() for g in grads)) else None)
    if measured is None:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type,
                                              error_if_nonfinite, foreach)
    value, every_f32 = measured
    total = torch.tensor(value, dtype=torch.float32 if every_f32 else torch.float64)
    if error_if_nonfinite and not math.isfinite(value):
        raise RuntimeError(
            f"The total norm of order {norm} for gradients from `parameters` is "
            f"non-finite, so it cannot be clipped. To disable this error and scale the "
            f"gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total, foreach)
    return total


_NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
                 torch.float16: np.dtype(np.float16)}
_HALF_DTYPES = (torch.bfloat16, torch.float16)


def _numpy_dtype(dtype):
    """The NumPy dtype of a torch float dtype (bfloat16: ml_dtypes', imported only then),
    or None."""
    if dtype == torch.bfloat16:
        return _validation.bfloat16_dtype()
    return _NUMPY_DTYPES.get(dtype)


def _as_numpy(t):
    """A CPU tensor's memory as a NumPy array (bfloat16 through its bits: no copy)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_validation.bfloat16_dtype())
    return t.numpy()


def _as_tensor(a):
    """A NumPy array's memory as a CPU tensor (ml_dtypes.bfloat16 as torch.bfloat16)."""
    if a.dtype.itemsize == 2 and a.dtype != np.float16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _module_params(params):
    return list(params.parameters() if isinstance(params, torch.nn.Module) else params)


def _check_ema_params(func, params, averages):
    """Each param fits its average (CPU float tensor of its dtype and shape), checked
    before a step writes anything."""
    for i, (p, a) in enumerate(zip(params, averages)):
        if not (isinstance(p, torch.Tensor) and p.device.type == "cpu" and not p.is_sparse
                and _numpy_dtype(p.dtype) == a.dtype and tuple(p.shape) == a.shape):
            what = (f"{p.dtype} {tuple(p.shape)} on {p.device}"
                    if isinstance(p, torch.Tensor) else _validation.describe(p))
            raise ValueError(f"{func}: `params[{i}]` must stay a dense CPU {a.dtype} tensor "
                             f"of shape {a.shape} like its average; got {what}")


def _numpy_values(func, params):
    """Read-only NumPy views of CPU float tensors (contiguous copies when they are not)."""
    values = []
    for i, p in enumerate(params):
        if (not isinstance(p, torch.Tensor) or p.device.type != "cpu" or p.is_sparse
                or _numpy_dtype(p.dtype) is None):
            what = (f"{p.dtype} on {p.device}" if isinstance(p, torch.Tensor)
                    else type(p).__name__)
            hint = ("; bfloat16 needs ml_dtypes (pip install ml_dtypes)"
                    if isinstance(p, torch.Tensor) and p.dtype == torch.bfloat16 else "")
            raise TypeError(f"{func}: `params[{i}]` must be a dense CPU float32, float64, "
                            f"float16 or bfloat16 tensor; got {what}{hint}")
        values.append(_as_numpy(p.detach().contiguous().resolve_neg()))
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
        return [_as_tensor(a) for a in self._ema.averages]

    @torch.no_grad()
    def copy_to(self, params):
        """Copy the averages into ``params`` (a module or tensors, same order)."""
        params = _module_params(params)
        averages = self._ema.raw_averages
        if len(params) != len(averages):
            raise ValueError(f"EMA.copy_to: expected {len(averages)} params; "
                             f"got {len(params)}")
        for i, (p, a) in enumerate(zip(params, averages)):  # all, before copying any
            if not isinstance(p, torch.Tensor) or tuple(p.shape) != a.shape:
                what = (f"shape {tuple(p.shape)}" if isinstance(p, torch.Tensor)
                        else _validation.describe(p))
                raise ValueError(f"EMA.copy_to: `params[{i}]` must be a tensor of shape "
                                 f"{a.shape} like its average; got {what}")
        for p, a in zip(params, self.averages):
            p.copy_(a)

    def state_dict(self):
        """As :meth:`fastmomentum.EMA.state_dict`, with torch tensors for the averages."""
        state = self._ema.state_dict()
        state["averages"] = [_as_tensor(a) for a in state["averages"]]
        return state

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict`; refused (nothing changed) when it does not fit."""
        state = dict(state_dict)
        state["averages"] = [_as_numpy(a.detach().cpu()) if isinstance(a, torch.Tensor)
                             else a for a in state["averages"]]
        self._ema.load_state_dict(state)
