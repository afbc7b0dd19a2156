"""Whole-model optimizers over NumPy arrays: :class:`SGD` and the weight average :class:`EMA`.

One ``step``/``update`` is one call into compiled code for all arrays (multi-tensor apply):
no Python loop over tensors, threads split the total work across and within arrays.
"""
import numpy as np

from . import _validation
from ._dispatch import kernels as _kernels
from .flat import FlatParams

_HYPER = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")


def _checked_arrays(func, name, arrays):
    arrays = list(arrays)
    for i, a in enumerate(arrays):
        _validation.check_lead_array(func, f"{name}[{i}]", a)
    _validation.check_disjoint_all(func, name, arrays)
    return arrays


def _load_arrays(func, name, saved, like, dtype=None):
    """Arrays ``saved`` checked against ``like`` (count and shape; cast to their dtype, or
    to ``dtype`` when given)."""
    if not isinstance(saved, (list, tuple)) or len(saved) != len(like):
        count = len(saved) if isinstance(saved, (list, tuple)) else _validation.describe(saved)
        raise ValueError(f"{func}: expected {len(like)} `{name}`, one per parameter; "
                         f"got {count}")
    for i, (s, a) in enumerate(zip(saved, like)):
        if np.shape(s) != a.shape:
            raise ValueError(f"{func}: `{name}[{i}]` must have shape {a.shape}; "
                             f"got {np.shape(s)}")
    return [np.array(s, dtype=a.dtype if dtype is None else dtype, order="C")
            for s, a in zip(saved, like)]


def _required(func, state_dict, keys):
    """``state_dict`` (a mapping) holding every one of ``keys``."""
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError(f"{func}: `state_dict` must be a dict; got "
                        f"{_validation.describe(state_dict)}")
    missing = [key for key in keys if key not in state_dict]
    if missing:
        raise ValueError(f"{func}: `state_dict` lacks {missing} (expected the keys "
                         f"{list(keys)})")
    return state_dict


def _flag(func, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: `{name}` must be True or False; got {value!r}")
    return bool(value)


def _count(func, name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 0:
        raise ValueError(f"{func}: `{name}` must be an integer >= 0; got {value!r}")
    return int(value)


def _state_dtype(func, momentum_dtype, params, ema):
    """``momentum_dtype`` as a NumPy dtype (None stays None), for float32 ``params``."""
    dtype = _validation.check_state_params(func, momentum_dtype, params)
    if dtype is not None and ema is not None:
        raise ValueError(f"{func}: `ema` cannot be combined with `momentum_dtype` (the "
                         f"fused pass keeps param-dtype state); update a separate EMA after "
                         f"each step")
    return dtype


def _check_debias(func, decay, warmup, debias):
    if debias and not warmup and decay == 1.0:
        raise ValueError(f"{func}: `decay` must be < 1 with debias=True (the average starts "
                         f"at zero and never moves, and the bias correction divides by "
                         f"1 - decay**t); got decay={decay}")


#: The attributes SGD got since its first release, with the values that do what the
#: versions before them did: their pickles lack them (see SGD.__setstate__).
_SGD_ADDED = {"flat": None, "momentum_dtype": None, "rounding": "torch", "torch_threads": 1,
              "seed": None, "clip_grad_norm": None, "norm_type": 2.0,
              "skip_if_nonfinite": False, "write_clipped_grads": False,
              "last_grad_norm": None, "skipped_steps": 0}


def _unpickled(obj, state, added):
    """``obj.__dict__`` from a pickle's ``state``, made by this version or an earlier one:
    the ``added`` attributes it lacks get their defaults, a missing WrittenSpans (a cache,
    pickled empty) a new one."""
    obj.__dict__.update(added)
    obj.__dict__.update(state)
    if "_written" not in state:
        obj._written = _kernels.WrittenSpans()


class EMA:
    """Exponential moving average of a list of arrays (Polyak averaging of weights).

    ``update(params)`` sets every ``average = d*average + (1-d)*param`` in one call, where
    the decay ``d`` is ``decay``, or with ``warmup=True`` ``min(decay, (1+t)/(10+t))`` for
    the update that follows ``t`` earlier ones (timm's ModelEma / TensorFlow's
    ``num_updates`` schedule: the average follows the weights closely at first).

    ``debias=False`` (default) starts each average at a copy of its array. ``debias=True``
    starts at zero and :attr:`averages` divides by ``1 - prod(d)`` (``1 - decay**t`` for a
    constant decay), as Optax's ``ema(debias=True)`` does.
    """

    def __init__(self, params, decay=0.999, *, warmup=False, debias=False):
        self.decay = _validation.check_scalar("EMA", "decay", decay, high=1.0, label="decay")
        self.warmup = bool(warmup)
        self.debias = bool(debias)
        _check_debias("EMA", self.decay, self.warmup, self.debias)
        params = _checked_arrays("EMA", "params", params)
        #: The raw (biased when debias=True) averages, updated in place.
        self.raw_averages = [np.zeros_like(p) if self.debias else p.copy() for p in params]
        #: Number of updates so far.
        self.updates = 0
        self._kept = 1.0  # product of the decays used so far: the weight of the start value
        self._written = _kernels.WrittenSpans()  # what update() writes, checked across calls

    def __setstate__(self, state):
        _unpickled(self, state, {})

    def next_decay(self):
        """The decay the next update uses."""
        if self.warmup:
            t = self.updates
            return min(self.decay, (1.0 + t) / (10.0 + t))
        return self.decay

    def _advance(self, decay):
        self.updates += 1
        self._kept *= decay

    def update(self, params):
        """Fold the current ``params`` (same order, shapes, dtypes) into the averages."""
        decay = self.next_decay()
        _kernels.multi_ema_update(self.raw_averages, list(params), decay, self._written,
                                  self)  # advances the counters in the same C call

    @property
    def averages(self):
        """The averages: the live arrays, or with ``debias=True`` new bias-corrected arrays."""
        if not self.debias or self.updates == 0:
            return self.raw_averages
        correction = 1.0 / (1.0 - self._kept)
        return [a * a.dtype.type(correction) for a in self.raw_averages]

    def state_dict(self):
        """A plain dict (copies of the averages and the counters)."""
        return {"decay": self.decay, "warmup": self.warmup, "debias": self.debias,
                "updates": self.updates, "decay_product": self._kept,
                "averages": [a.copy() for a in self.raw_averages]}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict`; refused (nothing changed) when it does not fit."""
        func = "EMA.load_state_dict"
        state = _required(func, state_dict, ("decay", "warmup", "debias", "updates",
                                             "decay_product", "averages"))
        averages = _load_arrays(func, "averages", state["averages"], self.raw_averages)
        decay = _validation.check_scalar(func, "decay", state["decay"], high=1.0,
                                         label="decay")
        warmup, debias = _flag(func, "warmup", state["warmup"]), _flag(func, "debias",
                                                                      state["debias"])
        _check_debias(func, decay, warmup, debias)
        updates = _count(func, "updates", state["updates"])
        kept = _validation.check_scalar(func, "decay_product", state["decay_product"],
                                        high=1.0, label="decay product")
        for a, saved in zip(self.raw_averages, averages):
            a[...] = saved
        self.decay, self.updates, self._kept = decay, updates, kept
        self.warmup, self.debias = warmup, debias


class SGD:
    """torch.optim.SGD over a list of NumPy arrays, all stepped in one compiled call.

    ``params``: writeable C-contiguous float32/float64 arrays (dtypes may differ between
    arrays), updated in place. ``step(grads)`` takes the gradients in the same order and
    applies :func:`fastmomentum.momentum_step` to every array with torch.optim.SGD's
    semantics, bit for bit (momentum buffers are created on the first step with momentum,
    as torch does). The hyper-parameters are plain attributes that may change between
    steps (``opt.lr = 0.01``). Every gradient is checked before anything is written.

    ``ema``: an :class:`EMA` of the same arrays, updated in the same pass over memory as
    the step (with the new weights): one pass instead of two.

    ``clip_grad_norm=max_norm`` clips the gradients' global norm as
    ``torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)`` would before the step,
    fused into it: one pass computes the total norm, the step reads each grad times the
    clip coefficient (by default the grads are not written). ``skip_if_nonfinite=True`` skips a step
    whose total norm is NaN or inf (nothing written), counted in :attr:`skipped_steps`.
    :attr:`last_grad_norm` is the total norm of the last step (None without either option).
    With ``momentum_dtype`` each grad is read as ``float32(grad * coefficient)`` as for
    float32 params; bfloat16/float16 params: the norm is of the widened grads (in double,
    fixed order; the total and the coefficient in float32 unless a param is float64) and
    each grad is read as the clipped grad written into its dtype,
    ``round16(float32(grad * coefficient))`` (docs/clipping-and-amp.md).
    ``write_clipped_grads=True`` (float32/float64 params, no ``momentum_dtype``): the grads
    (writable, apart from each other) are left holding the clipped values, exactly what
    ``clip_grad_norm_`` leaves, stored by the step's pass (also on a step
    ``skip_if_nonfinite`` skips: scaled by its coefficient, 0 or NaN).

    ``momentum_dtype`` (``ml_dtypes.bfloat16`` or ``np.float16``; float32 params only):
    keep the momentum buffers in that dtype (see :func:`fastmomentum.momentum_step`): 16
    bytes a step moves per element instead of 20. Not combined with ``ema``.

    ``params`` may be a :class:`fastmomentum.FlatParams`: its buffer is then the one array
    stepped (one work item whatever the number of named params), and ``step()`` takes its
    grad buffer by default.

    float16 and bfloat16 (``ml_dtypes.bfloat16``) params compute in float32 and round to
    their dtype as ``rounding`` says (see :func:`fastmomentum.momentum_step` and
    docs/mixed-precision.md): ``"torch"`` (default, torch.optim.SGD's for-loop bits at
    ``torch_threads`` torch threads), ``"once"`` or ``"stochastic"`` (with ``seed``; each
    step's random bits also depend on :attr:`steps`).
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False, *, ema=None, clip_grad_norm=None,
                 norm_type=2.0, skip_if_nonfinite=False, momentum_dtype=None,
                 rounding="torch", torch_threads=1, seed=None, write_clipped_grads=False):
        _validation.check_sgd_hyper("SGD", lr, momentum, dampening, weight_decay, nesterov)
        clip_grad_norm, norm_type = _validation.check_clipping(
            "SGD", clip_grad_norm, norm_type, skip_if_nonfinite)
        write_clipped_grads = _validation.check_write_clipped_grads("SGD",
                                                                    write_clipped_grads)
        _validation.rounding_options("SGD", rounding, torch_threads, seed, 0)
        self.rounding, self.torch_threads, self.seed = rounding, torch_threads, seed
        #: The :class:`fastmomentum.FlatParams` stepped (as one array), or None.
        self.flat = params if isinstance(params, FlatParams) else None
        if self.flat is not None:
            params = [self.flat.buffer]
        self.params = _checked_arrays("SGD", "params", params)
        #: The momentum buffers' dtype (None: each param's own).
        self.momentum_dtype = _state_dtype("SGD", momentum_dtype, self.params, ema)
        _validation.check_write_back_fits("SGD", write_clipped_grads, self.momentum_dtype,
                                          self.params)
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov, self.maximize = weight_decay, nesterov, maximize
        if ema is not None:
            _load_arrays("SGD", "ema.raw_averages", ema.raw_averages, self.params)
            if any(a.dtype != p.dtype for a, p in zip(ema.raw_averages, self.params)):
                raise TypeError("SGD: `ema` must average arrays of the params' dtypes")
        self.ema = ema
        #: Momentum buffers (None until the first step with momentum).
        self.momentum_buffers = None
        #: Number of steps taken.
        self.steps = 0
        #: Global-norm clipping (max_norm, or None), its norm type, and skipping of steps
        #: with a non-finite total norm: plain attributes, checked at every step.
        self.clip_grad_norm, self.norm_type = clip_grad_norm, norm_type
        self.skip_if_nonfinite = bool(skip_if_nonfinite)
        #: Leave each grad holding its clipped value (what clip_grad_norm_ leaves), stored
        #: by the step's own pass; the grads must then be writable (False: only read).
        self.write_clipped_grads = write_clipped_grads
        #: Total norm of the grads at the last step (None unless clipping or skipping).
        self.last_grad_norm = None
        #: Steps skipped by skip_if_nonfinite.
        self.skipped_steps = 0
        self._written = _kernels.WrittenSpans()  # what step() writes, checked across calls

    def __setstate__(self, state):
        _unpickled(self, state, _SGD_ADDED)

    def step(self, grads=None):
        """Update every param in place with its gradient (a list in params' order; with
        FlatParams, by default their :attr:`~FlatParams.grad_buffer`)."""
        if grads is None:
            if self.flat is None:
                raise TypeError("SGD.step: `grads` must be a list of arrays, one per param "
                                "(only an SGD of FlatParams has default grads); got None")
            grads = [self.flat.grad_buffer]
        grads = grads if type(grads) is list else list(grads)
        momentum = self.momentum
        first_step = momentum != 0 and self.momentum_buffers is None
        buffers = ([np.empty_like(p, dtype=self.momentum_dtype) for p in self.params]
                   if first_step else self.momentum_buffers)
        if self.momentum_dtype is not None:  # fewer-byte momentum (no EMA: see __init__)
            if self.write_clipped_grads is not False:
                writes = _validation.check_write_clipped_grads("SGD.step",
                                                               self.write_clipped_grads)
                _validation.check_write_back_fits("SGD.step", writes, self.momentum_dtype,
                                                  self.params)
            _kernels.multi_state_step(
                self.params, grads, buffers, lr=self.lr, momentum=momentum,
                dampening=self.dampening, weight_decay=self.weight_decay,
                nesterov=self.nesterov, maximize=self.maximize, first_step=first_step,
                momentum_dtype=self.momentum_dtype, written=self._written, optimizer=self,
                clip_grad_norm=self.clip_grad_norm, norm_type=self.norm_type,
                skip_if_nonfinite=self.skip_if_nonfinite)
            return
        ema = self.ema
        decay = ema.next_decay() if ema is not None else 0.0
        _kernels.multi_momentum_step(
            self.params, grads, buffers, ema.raw_averages if ema is not None else None,
            lr=self.lr, momentum=momentum, dampening=self.dampening,
            weight_decay=self.weight_decay, nesterov=self.nesterov, maximize=self.maximize,
            first_step=first_step, decay=decay, written=self._written, optimizer=self,
            ema=ema, clip_grad_norm=self.clip_grad_norm, norm_type=self.norm_type,
            skip_if_nonfinite=self.skip_if_nonfinite, rounding=self.rounding,
            torch_threads=self.torch_threads, seed=self.seed, step=self.steps,
            write_clipped_grads=_validation.check_write_clipped_grads(
                "SGD.step", self.write_clipped_grads) if self.write_clipped_grads is not False
            else False)
        # advances momentum_buffers, steps, the norm counters and the EMA's, in C

    def state_dict(self):
        """torch.optim-like: ``{'state': {i: {'momentum_buffer': array}}, 'param_groups':
        [{hyper-parameters..., 'params': [0, 1, ...]}], 'steps': n}`` (copies)."""
        buffers = self.momentum_buffers or []
        group = {name: getattr(self, name) for name in _HYPER}
        group["params"] = list(range(len(self.params)))
        return {"state": {i: {"momentum_buffer": b.copy()} for i, b in enumerate(buffers)},
                "param_groups": [group], "steps": self.steps}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict`, so the trajectory continues bit for bit. Refused
        (nothing changed) when the buffers or the group do not fit these params."""
        func = "SGD.load_state_dict"
        _required(func, state_dict, ("state", "param_groups"))
        groups = state_dict["param_groups"]
        if (not isinstance(groups, (list, tuple)) or len(groups) != 1
                or not hasattr(groups[0], "keys")
                or list(groups[0].get("params", ())) != list(range(len(self.params)))):
            raise ValueError(f"{func}: expected one param group over {len(self.params)} "
                             f"params")
        group = _required(func, groups[0], _HYPER + ("params",))
        _validation.check_sgd_hyper(func, *(group[name] for name in _HYPER[:5]))
        maximize = _flag(func, "maximize", group["maximize"])
        steps = _count(func, "steps", state_dict.get("steps", 0))
        state = state_dict["state"]
        buffers = None
        if state:
            saved = [state[i]["momentum_buffer"] for i in range(len(self.params))
                     if i in state and state[i].get("momentum_buffer") is not None]
            buffers = _load_arrays(func, "momentum_buffer", saved, self.params,
                                   self.momentum_dtype)
        for name in _HYPER:
            setattr(self, name, group[name])
        self.maximize = maximize
        self.momentum_buffers = buffers
        self.steps = steps
