"""``fastmomentum.torch.SGD(..., flat=True)``: each param group's params (per dtype) live in
one contiguous buffer and their grads in another, so a step is one kernel call whatever
the tensor count (docs/flat-buffers.md).

A :class:`FlatBucket` owns the buffers of one (param group, dtype): every param's ``.data``
is a view of ``params_buffer``, its ``.grad`` (once it has one) a view of ``grads_buffer``,
its momentum buffer (``state[p]['momentum_buffer']``) a view of ``momentum_buffer``. Each
step first asks ``torch_flat_scan`` (one C call: grads read through c10::TensorImpl::grad,
state entries no one changed since its last clean scan not looked up again) whether all of
that still holds; when it does, the kernels step the whole buffer through one carrier
tensor, and VersionBumps bumps the params' version counters in C. When something was
replaced (``p.grad = g``, ``p.data = x``, ``zero_grad(set_to_none=True)`` from
a module, a loaded state_dict), :meth:`FlatBucket.repair` copies the new values into the
buffers and re-views, and params without a grad are left out: the kernels then step the
contiguous runs in between.
"""
import ctypes
import glob
import os

import numpy as np
import torch

from ._dispatch import kernels as _kernels
from ._torch_bridge import FAST_PATH_REASON

_FLAT_DTYPES = (torch.float32, torch.float64)


def _bind_impl_grad():
    """Let torch_flat_scan read ``p.grad`` through libc10's c10::TensorImpl::grad (checked
    on probes there); False (the scan asks ``p.grad`` from Python) when it is missing."""
    if FAST_PATH_REASON is not None:
        return False
    try:
        lib = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib",
                                                 "libc10.*"))[0])
        address = ctypes.cast(lib._ZNK3c1010TensorImpl4gradEv, ctypes.c_void_p).value
    except (IndexError, OSError, AttributeError):
        return False
    with_grad, without_grad = torch.zeros(2), torch.nn.Parameter(torch.zeros(3))
    with_grad.grad = torch.ones(2)
    return _kernels.torch_bind_impl_grad(address, with_grad, without_grad)


def _bind_bump():
    """Let VersionBumps call libtorch_cpu's torch::autograd::impl::bump_version (checked on
    a probe there); False (torch._C._increment_version is called) when it is missing."""
    if FAST_PATH_REASON is not None:
        return False
    try:
        lib = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib",
                                                 "*torch_cpu.*"))[0])
        address = ctypes.cast(lib._ZN5torch8autograd4impl12bump_versionERKN2at6TensorE,
                              ctypes.c_void_p).value
    except (IndexError, OSError, AttributeError):
        return False
    return _kernels.torch_bind_bump(address, torch.zeros(2))


#: Whether torch_flat_scan reads grads in C and the version bumps run in C.
IMPL_GRAD_BOUND = _bind_impl_grad()
BUMP_BOUND = _bind_bump()


def _what(t):
    return (f"a {t.dtype} tensor of shape {tuple(t.shape)} on {t.device}"
            f"{' (sparse)' if t.is_sparse else ''}" if isinstance(t, torch.Tensor)
            else f"a {type(t).__name__}")


def _fits(t, like):
    return (isinstance(t, torch.Tensor) and not t.is_sparse and t.device.type == "cpu"
            and t.dtype == like.dtype and t.shape == like.shape)


class FlatBucket:
    """The flat buffers of one param group's params of one dtype."""

    def __init__(self, params, dtype):
        self.params = params
        self.shapes = [p.shape for p in params]
        ends = np.cumsum([p.numel() for p in params], dtype=np.int64)
        self.starts = [int(e) for e in np.concatenate(([0], ends[:-1]))]
        self.ends = [int(e) for e in ends]
        total = int(ends[-1]) if len(ends) else 0
        self.params_buffer = torch.empty(total, dtype=dtype)
        self.grads_buffer = torch.zeros(total, dtype=dtype)
        self.momentum_buffer = None  # allocated by the first step with momentum
        self.param_views = [self._view(self.params_buffer, i) for i in range(len(params))]
        self.grad_views = [self._view(self.grads_buffer, i) for i in range(len(params))]
        self.momentum_views = None
        with torch.no_grad():
            for i, p in enumerate(params):
                self.param_views[i].copy_(p)
                p.data = self.param_views[i]
                if p.grad is not None:
                    self.grad_views[i].copy_(p.grad)
                    p.grad = self.grad_views[i]
        n = len(params)  # torch_flat_scan's: param and grad address, then numel, of each
        self.addresses = np.empty(3 * n, dtype=np.int64)
        self.addresses[0:2 * n:2] = [v.data_ptr() for v in self.param_views]
        self.addresses[1:2 * n:2] = [v.data_ptr() for v in self.grad_views]
        self.addresses[2 * n:] = [p.numel() for p in params]
        self.carriers = {}  # (start, end) -> the carrier tensor of that run
        self.whole = self._carrier(0, len(params))
        self.cache = _kernels.TorchGroupCache()
        self.bumps = _kernels.VersionBumps()  # the params' version counters, per step
        self.marks = _kernels.FlatStateMarks()  # the state entries of the last clean scan

    def _view(self, buffer, i):
        return buffer[self.starts[i]:self.ends[i]].view(self.shapes[i])

    def _carrier(self, first, last):
        """A tensor over params ``first..last-1``'s slots, its grad over their grads'."""
        start = self.starts[first] if first < len(self.starts) else 0
        end = self.ends[last - 1] if last > first else start
        carrier = self.carriers.get((start, end))
        if carrier is None:
            carrier = self.params_buffer[start:end]
            carrier.grad = self.grads_buffer[start:end]
            self.carriers[start, end] = carrier
        return carrier

    def new_momentum_buffer(self, carrier):
        """The momentum slots of a carrier's first step (torch_sgd_group_plan's new_buffer)."""
        start = carrier.storage_offset()
        return self.momentum_buffer[start:start + carrier.numel()]

    def momentum_ready(self, carrier_state):
        """Allocate the momentum buffer (first step with momentum)."""
        if self.momentum_buffer is None:
            self.momentum_buffer = torch.zeros_like(self.params_buffer)
            self.momentum_views = [self._view(self.momentum_buffer, i)
                                   for i in range(len(self.params))]
        carrier_state[self.whole] = {"momentum_buffer": self.momentum_buffer}
        return self.momentum_views

    def repair(self, status, state, momentum, carrier_state, where):
        """After a scan found something replaced or missing (``status``): copy replaced
        params, grads and momentum buffers into the buffers and re-view them (checked all
        before any is copied). Returns ``(carriers, stepped, first_params)``: the runs to
        step, the params they hold, the indices of the params taking their first momentum
        step."""
        copies = []
        for i, code in enumerate(status):
            if code != 2:
                continue
            p = self.params[i]
            if p.data_ptr() != self.addresses[2 * i] or not p.is_contiguous():
                if not _fits(p, self.param_views[i]):
                    raise ValueError(f"SGD.step: flat=True: `{where}[{i}]` must keep its "
                                     f"dtype, shape and device ({_what(self.param_views[i])}"
                                     f"); its data is now {_what(p)}")
                copies.append(("data", i, p.detach().clone()))
            g = p.grad
            if g is not self.grad_views[i] or g.data_ptr() != self.addresses[2 * i + 1]:
                if not _fits(g, self.grad_views[i]):
                    raise ValueError(f"SGD.step: flat=True: the grad of `{where}[{i}]` must "
                                     f"be a dense {_what(self.grad_views[i])}; got {_what(g)}")
                copies.append(("grad", i, g.detach().clone()))
            if momentum != 0:
                buf = state[p].get("momentum_buffer") if p in state else None
                if buf is not None and buf is not self.momentum_views[i]:
                    if not _fits(buf, self.momentum_views[i]):
                        raise ValueError(f"SGD.step: flat=True: the momentum_buffer of "
                                         f"`{where}[{i}]` must be a {_what(p)}; got "
                                         f"{_what(buf)}")
                    copies.append(("momentum", i, buf.detach()))
        with torch.no_grad():
            for kind, i, value in copies:
                p = self.params[i]
                if kind == "data":
                    self.param_views[i] = self._view(self.params_buffer, i)
                    self.param_views[i].copy_(value)
                    p.data = self.param_views[i]
                elif kind == "grad":
                    self.grad_views[i] = self._view(self.grads_buffer, i)
                    self.grad_views[i].copy_(value)
                    p.grad = self.grad_views[i]
                else:
                    self.momentum_views[i] = self._view(self.momentum_buffer, i)
                    self.momentum_views[i].copy_(value)
                    state[p]["momentum_buffer"] = self.momentum_views[i]
        return self._runs(status, state, momentum, carrier_state)

    def _runs(self, status, state, momentum, carrier_state):
        """The maximal runs of params with a grad and the same first-step flag."""
        carriers, stepped, first_params = [], [], []
        run_start, run_first = None, None
        for i in range(len(self.params) + 1):
            has_grad = i < len(self.params) and status[i] != 1
            first = (has_grad and momentum != 0
                     and state.get(self.params[i], {}).get("momentum_buffer") is None)
            if run_start is not None and (not has_grad or first != run_first):
                carrier = self._carrier(run_start, i)
                carriers.append(carrier)
                if run_first:
                    carrier_state.pop(carrier, None)
                    first_params += range(run_start, i)
                elif momentum != 0:
                    carrier_state[carrier] = {
                        "momentum_buffer": self.new_momentum_buffer(carrier)}
                run_start = None
            if has_grad:
                stepped.append(self.params[i])
                if run_start is None:
                    run_start, run_first = i, first
        return carriers, stepped, first_params


def flatten(param_groups, first_group=0):
    """The FlatBuckets of each param group (params per dtype, in order), after checking
    every param (nothing moved when one does not fit)."""
    for g, group in enumerate(param_groups):
        for i, p in enumerate(group["params"]):
            if (p.device.type != "cpu" or p.is_sparse or p.dtype not in _FLAT_DTYPES
                    or type(p) not in (torch.Tensor, torch.nn.Parameter)):
                raise ValueError(f"SGD: flat=True needs dense CPU float32/float64 params "
                                 f"(torch.Tensor or nn.Parameter); `params[{i}]` of param "
                                 f"group {first_group + g} is {_what(p)}")
    return [[FlatBucket([p for p in group["params"] if p.dtype == dtype], dtype)
             for dtype in dict.fromkeys(p.dtype for p in group["params"])]
            for group in param_groups]


def _plan_buckets(opt, torch_steps):
    """Per flat bucket one scan (and repair), then its plan: ``(plans, finish, clean)``,
    where ``finish()`` does a run's bookkeeping after the plans ran (the params' version
    counters, the first steps' momentum buffers, ``kernel_params``) and returns the number
    of carriers stepped, and ``clean`` is, when every group fits and no scan found anything
    replaced (params without a grad are clean), ``(group_index, bucket, plan, carriers,
    params, status)`` per bucket (for FlatSteady.capture), else None. Groups the fast
    path does not take (see SGD._fast_path_fits) are stepped by torch over the same views
    at once when ``torch_steps``; the caller of ``torch_steps=False`` has checked that
    every group fits."""
    plans, stepped, first_params, segments, clean = [], [], [], 0, []
    carrier_state = opt._flat_carrier_state
    state = opt.state
    for g, (group, buckets) in enumerate(zip(opt.param_groups, opt._flat_buckets)):
        if not opt._fast_path_fits(group):
            if not torch_steps:
                raise AssertionError("SGD.step: flat=True: a group the kernels cannot step")
            opt._torch_step(group, group["params"])
            clean = None
            continue
        momentum = group["momentum"]
        for bucket in buckets:
            views = bucket.momentum_ready(carrier_state) if momentum != 0 else None
            status = _kernels.torch_flat_scan(bucket.params, bucket.grad_views, views,
                                              state, bucket.addresses, bucket.marks)
            if status is None:
                carriers, params, firsts = [bucket.whole], bucket.params, ()
            else:
                carriers, params, firsts = bucket.repair(
                    status, state, momentum, carrier_state, f"param_groups[{g}]")
            plans.append(_kernels.torch_sgd_group_plan(
                carriers, carrier_state, group["lr"], momentum, group["dampening"],
                group["weight_decay"], group["nesterov"], group["maximize"],
                bucket.new_momentum_buffer, bucket.cache))
            if firsts or (status is not None and 2 in status):
                clean = None
            elif clean is not None:
                clean.append((g, bucket, plans[-1], carriers, params, status))
            stepped.append((bucket, params))
            first_params += [(bucket, i) for i in firsts]
            segments += len(carriers)
    if any(plan.others for plan in plans):  # carriers are plain: cannot happen
        raise AssertionError("SGD.step: flat=True: a flat buffer was refused by the kernels")

    def finish():
        # the kernels bumped the carriers' version counter, which the params do not share:
        # bump theirs as torch's in-place step does (autograd refuses stale saved weights)
        for bucket, params in stepped:
            bucket.bumps.bump(params)
        for bucket, i in first_params:
            state[bucket.params[i]]["momentum_buffer"] = bucket.momentum_views[i]
        opt.kernel_params = sum(len(params) for _, params in stepped)
        return segments
    return plans, finish, clean


def flat_step(opt):
    """One step of an SGD(flat=True): per flat bucket one scan, then every bucket's runs in
    one torch_sgd_run; groups the fast path does not take are stepped by torch over the
    same views. Returns the number of carriers stepped. A step whose every scan was clean
    leaves its plans to ``opt._flat_steady`` (torch_flat_steady runs them again while
    nothing changes); any other forgets them."""
    plans, finish, clean = _plan_buckets(opt, True)
    _kernels.torch_sgd_run(plans, opt._flat_carrier_state)
    segments = finish()
    if clean is None:
        opt._flat_steady.forget()
    else:
        opt._flat_steady.capture(clean, len(opt.param_groups))
    return segments


def flat_scaled_plans(opt):
    """The plans of a clipped / AMP step of an SGD(flat=True) whose every group the kernels
    step (the caller checked): the scans and repairs of flat_step, one plan per bucket, so
    that torch_sgd_clip_run makes one norm pass and one step call per flat buffer.
    Returns ``(plans, finish)``: the first two of _plan_buckets' answer."""
    return _plan_buckets(opt, False)[:2]


def zero_grad(opt):
    """Zero every flat grad buffer in place; grads replaced since the last step are
    re-viewed (zeroed), params without a grad keep None (torch's set_to_none=False)."""
    with torch.no_grad():
        for buckets in opt._flat_buckets:
            for bucket in buckets:
                bucket.grads_buffer.zero_()
                for i, p in enumerate(bucket.params):
                    g = p.grad
                    if g is not None and g is not bucket.grad_views[i]:
                        bucket.grad_views[i] = bucket._view(bucket.grads_buffer, i)
                        p.grad = bucket.grad_views[i]
