"""fastmomentum.torch.SGD's state in other bytes than its params (issue 14, items 2-3).

* ``momentum_dtype=torch.bfloat16`` (or ``torch.float16``) with float32 params: the
  momentum buffers are kept in that dtype; every step is the float32 step on the widened
  buffer, the new buffer is stored rounded to nearest even, and the param is updated with
  the unrounded one (fastmomentum.momentum_step's ``momentum_dtype``).
* ``master_weights="split"`` with bfloat16 params: ``state[p]['master_low_bits']`` (an
  int16 tensor) holds the bottom 16 bits of each float32 master weight whose top 16 bits
  are the param itself; a step joins them, runs the float32 step and splits them again
  (the bf16 param is the master weight truncated). Momentum float32 (default) or
  ``momentum_dtype=torch.bfloat16``; grads bfloat16 or float32.

Both run through fastmomentum._state.torch_state_steps, one call for every param group, on
NumPy views of the tensors checked here; there is no torch fallback (torch has neither
semantics): a param that does not fit is refused with TypeError/ValueError before anything
is written.
"""
import numpy as np
import torch

from . import _validation
from ._dispatch import kernels as _kernels
from ._torch_bridge import PRIVATE as _PRIVATE

#: the state key of a split master weight's bottom halves
LOW_BITS = "master_low_bits"
_STATE_BITS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def _increment_version(tensors):
    for t in tensors:
        torch.autograd.graph.increment_version(t)


_bump_versions = _PRIVATE["increment_version"] or _increment_version


def check_options(params, momentum_dtype, master_weights, ema, differentiable):
    """The constructor's checks; returns the momentum buffers' dtype (None: the params')."""
    if master_weights not in (None, "split"):
        raise ValueError(f"SGD: `master_weights` must be None or 'split'; got "
                         f"{master_weights!r}")
    if master_weights is None and momentum_dtype is None:
        return None
    allowed = (torch.float32, torch.bfloat16) if master_weights else (torch.bfloat16,
                                                                      torch.float16)
    if momentum_dtype is not None and momentum_dtype not in allowed:
        names = " or ".join(str(d) for d in allowed)
        raise TypeError(f"SGD: `momentum_dtype` must be {names} "
                        f"{'with' if master_weights else 'for float32 params without'} "
                        f"master_weights='split', or None; got {momentum_dtype!r}")
    if ema is not None:
        raise ValueError("SGD: `ema` cannot be combined with `momentum_dtype` or "
                         "`master_weights` (its fused pass averages param-dtype weights); "
                         "update a fastmomentum.torch.EMA after each step instead")
    if differentiable:
        raise ValueError("SGD: `differentiable=True` cannot be combined with "
                         "`momentum_dtype` or `master_weights`")
    for i, p in enumerate(params):
        check_param("SGD", i, p, master_weights)
    return torch.float32 if momentum_dtype is None else momentum_dtype


def check_param(func, i, p, master_weights):
    want = torch.bfloat16 if master_weights else torch.float32
    if not (isinstance(p, torch.Tensor) and p.device.type == "cpu"
            and p.layout == torch.strided and p.dtype == want and p.is_contiguous()
            and not p.is_neg() and not p.is_conj()):
        what = (f"{p.dtype} tensor on {p.device}, layout {p.layout}"
                f"{'' if p.is_contiguous() else ', not contiguous'}"
                if isinstance(p, torch.Tensor) else _validation.describe(p))
        mode = ("master_weights='split' keeps float32 master weights for bfloat16 params"
                if master_weights else "momentum_dtype keeps float32 params' momentum in "
                                       "fewer bytes")
        raise TypeError(f"{func}: `params[{i}]` must be a contiguous CPU {want} tensor "
                        f"({mode}); got {what}")


def _numpy(t):
    """A NumPy view of a contiguous CPU tensor: float32 as such, 16-bit formats as uint16."""
    t = t.detach()
    if t.dtype == torch.float32:
        return t.numpy()
    return t.view(torch.int16).numpy().view(np.uint16)


def _views(cache, p, low, buf):
    """NumPy views of ``p``, ``low`` and ``buf`` (None stays None), kept in ``cache`` (the
    optimizer's, by param) while p's data pointer and size and the state tensors stay the
    same: three ``Tensor.numpy()`` calls cost ~10 us a param and step."""
    key = (p.data_ptr(), p.numel())
    entry = cache.get(p)
    if entry is None or entry[0] != key or entry[1] is not low or entry[2] is not buf:
        entry = cache[p] = (key, low, buf, _numpy(p), None if low is None else _numpy(low),
                            None if buf is None else _numpy(buf))
    return entry[3:]


def _check_disjoint(func, i, p, g):
    """The param and its grad share no memory (the state tensors are the optimizer's own:
    made by it, or copies of what load_state_dict got)."""
    a, b = p.data_ptr(), g.data_ptr()
    if p.numel() and a < b + g.numel() * g.element_size() and b < a + p.numel() * p.element_size():
        raise ValueError(f"{func}: the param and grad of `params[{i}]` share memory")


def _check_grad(func, i, p, g, master_weights):
    ok = (isinstance(g, torch.Tensor) and g.device.type == "cpu"
          and g.layout == torch.strided and g.is_contiguous() and g.shape == p.shape
          and not g.is_neg() and not g.is_conj()
          and (g.dtype == torch.float32
               or (master_weights is not None and g.dtype == torch.bfloat16)))
    if not ok:
        want = "bfloat16 or float32" if master_weights else "float32"
        what = (f"{g.dtype} tensor of shape {tuple(g.shape)} on {g.device}, layout "
                f"{g.layout}{'' if g.is_contiguous() else ', not contiguous'}"
                if isinstance(g, torch.Tensor) else _validation.describe(g))
        raise TypeError(f"{func}: the grad of `params[{i}]` must be a dense contiguous CPU "
                        f"{want} tensor of shape {tuple(p.shape)}; got {what}")


def _state_tensor(func, i, t, key, dtype, p):
    if not (isinstance(t, torch.Tensor) and t.dtype == dtype and t.device.type == "cpu"
            and t.layout == torch.strided and t.is_contiguous() and t.shape == p.shape):
        what = (f"{t.dtype} tensor of shape {tuple(t.shape)}"
                if isinstance(t, torch.Tensor) else _validation.describe(t))
        raise TypeError(f"{func}: `state[params[{i}]]['{key}']` must be a contiguous CPU "
                        f"{dtype} tensor of shape {tuple(p.shape)}; got {what}")
    return t


def step(opt, max_norm=None, inf_norm=False, skip_if_nonfinite=False, grad_coef=1.0,
         unscale=None):
    """One step of every param group (every group checked before any is written). With
    ``max_norm`` (a float) or ``skip_if_nonfinite``: global-norm clipping over every
    group's grads (``opt.last_grad_norm``, ``opt.skipped_steps``; a skipped step writes
    nothing), each grad read as ``float32(grad * coefficient)``. ``grad_coef``: else each
    grad read times it (AMP's 1/scale). ``unscale``: called once everything is checked
    and no other step of this optimizer runs, before the norm (AMP with clipping:
    GradScaler.unscale_'s in-place unscaling; a refused step unscales nothing)."""
    func = "SGD.step"
    calls, first = [], 0
    master_weights, momentum_dtype = opt.master_weights, opt.momentum_dtype
    for group in opt.param_groups:
        lr, momentum = float(group["lr"]), float(group["momentum"])
        dampening, weight_decay = float(group["dampening"]), float(group["weight_decay"])
        _validation.check_sgd_hyper(func, lr, momentum, dampening, weight_decay,
                                    group["nesterov"])
        views = ([], [], [], [], [])
        new_buffers, stepped = [], []
        for j, p in enumerate(group["params"]):
            i = first + j
            g = p.grad
            if g is None:
                continue
            check_param(func, i, p, master_weights)
            _check_grad(func, i, p, g, master_weights)
            _check_disjoint(func, i, p, g)
            state = opt.state[p]
            low = None
            if master_weights:
                low = state.get(LOW_BITS)
                if low is None:  # no bits below the bf16 param yet: the master weight is it
                    low = state[LOW_BITS] = torch.zeros_like(p, dtype=torch.int16)
                _state_tensor(func, i, low, LOW_BITS, torch.int16, p)
            buf, is_first = None, False
            if momentum != 0:
                buf = state.get("momentum_buffer")
                is_first = buf is None
                if is_first:
                    buf = torch.empty_like(p, dtype=momentum_dtype,
                                           memory_format=torch.contiguous_format)
                    new_buffers.append((p, buf))
                _state_tensor(func, i, buf, "momentum_buffer", momentum_dtype, p)
            p_view, low_view, buf_view = _views(opt._state_view_cache, p, low, buf)
            for view, array in zip(views, (p_view, low_view, _numpy(g), buf_view, is_first)):
                view.append(array)
            stepped.append(p)
        calls.append((group, lr, momentum, dampening, weight_decay, views, new_buffers,
                      stepped))
        first += len(group["params"])
    if any(p.is_inference() for call in calls for p in call[7]) and \
            not torch.is_inference_mode_enabled():
        raise RuntimeError(_kernels.INFERENCE_TENSOR_ERROR)
    spans = opt._state_spans  # per group: what its pass writes (concurrent steps refused)
    spans += [_kernels.WrittenSpans() for _ in range(len(calls) - len(spans))]
    kernel_params = _kernels.torch_state_steps(
        [(*views, lr, momentum, dampening, weight_decay, group["nesterov"],
          group["maximize"], new_buffers, stepped)
         for group, lr, momentum, dampening, weight_decay, views, new_buffers, stepped
         in calls],
        state_bits=_STATE_BITS[momentum_dtype], spans=spans[:len(calls)], state=opt.state,
        increment_version=_bump_versions, optimizer=opt, max_norm=max_norm,
        inf_norm=inf_norm, skip_if_nonfinite=skip_if_nonfinite, grad_coef=grad_coef,
        unscale=unscale)
    opt.kernel_params = kernel_params


def master_params(opt):
    """float32 copies of the exact master weights, in param order."""
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            low = opt.state.get(p, {}).get(LOW_BITS)
            top = p.detach().view(torch.int16).to(torch.int32) << 16
            bits = top if low is None else top | (low.to(torch.int32) & 0xFFFF)
            out.append(bits.view(torch.float32).clone())
    return out


def load_master_params(opt, weights):
    """Set every master weight from a float32 tensor (param order): the param gets its top
    16 bits (truncation), ``master_low_bits`` the bottom 16. All checked before any is
    written."""
    func = "SGD.load_master_params"
    if opt.master_weights != "split":
        raise ValueError(f"{func}: this optimizer keeps no master weights (construct it "
                         f"with master_weights='split')")
    params = [p for group in opt.param_groups for p in group["params"]]
    weights = list(weights)
    if len(weights) != len(params):
        raise ValueError(f"{func}: expected {len(params)} float32 tensors, one per param; "
                         f"got {len(weights)}")
    for i, (p, w) in enumerate(zip(params, weights)):
        if not (isinstance(w, torch.Tensor) and w.dtype == torch.float32
                and w.shape == p.shape):
            what = (f"{w.dtype} tensor of shape {tuple(w.shape)}"
                    if isinstance(w, torch.Tensor) else _validation.describe(w))
            raise TypeError(f"{func}: `weights[{i}]` must be a float32 tensor of shape "
                            f"{tuple(p.shape)}; got {what}")
    with torch.no_grad():
        for p, w in zip(params, weights):
            bits = w.detach().to("cpu").contiguous().view(torch.int32)
            p.copy_((bits >> 16).to(torch.int16).view(torch.bfloat16))
            opt.state[p][LOW_BITS] = (bits & 0xFFFF).to(torch.int16)


def take_state(opt, state_dict):
    """Before torch's Optimizer.load_state_dict (which casts floating state to each param's
    dtype, and would turn the low bits into bfloat16 numbers): a copy of ``state_dict``
    without the momentum buffers and low bits, and those, keyed by param index."""
    state_dict = dict(state_dict)
    kept, saved = {}, {}
    for key, entry in state_dict.get("state", {}).items():
        entry = dict(entry)
        saved[key] = {name: entry.pop(name) for name in ("momentum_buffer", LOW_BITS)
                      if name in entry}
        kept[key] = entry
    state_dict["state"] = kept
    return state_dict, saved


def check_saved(opt, saved):
    """The taken state checked against the params (before anything is loaded); returns
    (param, key, tensor) to store, converted to this optimizer's dtypes."""
    func = "SGD.load_state_dict"
    params = [p for group in opt.param_groups for p in group["params"]]
    stores = []
    for index, entry in saved.items():
        if not (isinstance(index, int) and 0 <= index < len(params)):
            raise ValueError(f"{func}: state for param index {index!r}, which this "
                             f"optimizer ({len(params)} params) does not have")
        p = params[index]
        for key, t in entry.items():
            if t is None:
                stores.append((p, key, None))
                continue
            if not isinstance(t, torch.Tensor) or t.shape != p.shape:
                what = (f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor)
                        else _validation.describe(t))
                raise ValueError(f"{func}: `state[{index}]['{key}']` must be a tensor of "
                                 f"shape {tuple(p.shape)}; got {what}")
            if key == LOW_BITS:
                if opt.master_weights != "split":
                    raise ValueError(f"{func}: `state[{index}]` holds '{LOW_BITS}' (split "
                                     f"master weights); this optimizer keeps none")
                if t.dtype not in (torch.int16, torch.uint16):
                    raise TypeError(f"{func}: `state[{index}]['{key}']` must be an int16 "
                                    f"tensor (the master weights' bottom halves); got "
                                    f"{t.dtype}")
                t = t.to("cpu").view(torch.int16).clone()
            else:  # a torch.optim.SGD buffer (the param's dtype) converts, rounded once
                t = t.to("cpu", opt.momentum_dtype, copy=True).contiguous()
            stores.append((p, key, t))
    return stores


def put_state(opt, stores):
    for p, key, t in stores:
        opt.state[p][key] = t
