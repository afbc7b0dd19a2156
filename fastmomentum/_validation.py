"""Argument checks shared by the compiled kernels and the NumPy baseline.

The compiled entry points test the same conditions in C on their fast path and call these
functions only when something is wrong, so both implementations raise the same errors with
the same messages. Every check runs before anything is written.
"""
import datetime
import math

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def describe(x):
    """A short account of what the caller passed, for error messages."""
    if isinstance(x, np.ndarray):
        flags = [] if plain_array(x) else [_type_name(x)]
        if not x.flags.c_contiguous:
            flags.append("not C-contiguous")
        if not x.flags.writeable:
            flags.append("read-only")
        if not x.flags.aligned:
            flags.append("unaligned")
        if not x.dtype.isnative:
            flags.append("non-native byte order")
        extra = (", " + ", ".join(flags)) if flags else ""
        return f"dtype={x.dtype}, shape={x.shape}{extra}"
    return _type_name(x)


def _type_name(x):
    return f"{type(x).__module__}.{type(x).__qualname__}".replace("builtins.", "")


def plain_array(x):
    """An ndarray whose in-place arithmetic is ndarray's: exactly np.ndarray, or np.memmap
    (an ndarray over a file's pages). Other subclasses are refused, since their operators
    may mean something the kernels do not do (np.ma.MaskedArray leaves masked entries
    unchanged; unit or matrix types): pass ``np.asarray(x)`` (same memory) instead."""
    return type(x) is np.ndarray or isinstance(x, np.memmap)


def _refuse_subclass(func, name, x):
    if isinstance(x, np.ndarray) and not plain_array(x):
        hint = (" (`x.filled(value)` for a copy with the masked entries filled)"
                if isinstance(x, np.ma.MaskedArray) else "")
        raise TypeError(f"{func}: `{name}` must be a NumPy ndarray (or np.memmap), not the "
                        f"subclass {_type_name(x)}, whose semantics fastmomentum "
                        f"does not implement; pass np.asarray({name}) to update every element "
                        f"of the same memory{hint}")


def _usable(x, writeable):
    return (plain_array(x) and step_dtype(x.dtype) and x.dtype.isnative
            and x.flags.c_contiguous and x.flags.aligned
            and (x.flags.writeable or not writeable))


def check_lead_array(func, name, x, writeable=True):
    """The first array fixes the dtype and shape the others must match."""
    _refuse_subclass(func, name, x)
    if not _usable(x, writeable):
        what = "a writeable" if writeable else "a"
        raise TypeError(f"{func}: `{name}` must be {what} C-contiguous float32, float64, "
                        f"float16 or bfloat16 NumPy array (in-place arguments are never "
                        f"copied); got {describe(x)}{_dtype_hint(name, x)}")


# ---------------------------------------------------------------------------------------
# mp-dtypes: float16 and bfloat16 (ml_dtypes.bfloat16, imported only when an array of a
# dtype NumPy does not define comes: ml_dtypes is an optional dependency)

_bfloat16: list = []   # [ml_dtypes.bfloat16's np.dtype, or None without ml_dtypes], once looked up


def bfloat16_dtype():
    """ml_dtypes.bfloat16 as a NumPy dtype, or None when ml_dtypes is not installed."""
    if not _bfloat16:
        try:
            import ml_dtypes
            _bfloat16.append(np.dtype(ml_dtypes.bfloat16))
        except ImportError:
            _bfloat16.append(None)
    return _bfloat16[0]


def is_bfloat16(dtype):
    """``dtype`` is ml_dtypes.bfloat16 (without importing ml_dtypes for NumPy's dtypes)."""
    return dtype.num >= 256 and dtype == bfloat16_dtype()   # NPY_USERDEF


def step_dtype(dtype):
    """A dtype the element-wise steps take: float32, float64, float16 or bfloat16."""
    return dtype in FLOAT_DTYPES or dtype == np.float16 or is_bfloat16(dtype)


def _dtype_hint(name, x):
    """What to pass instead of a likely mistake: a tensor, or bfloat16 bits as uint16."""
    module = type(x).__module__.split(".")[0]
    if module == "torch":
        return (f"; pass a NumPy array (`{name}.numpy()` shares the tensor's memory; for "
                f"bfloat16 `{name}.view(torch.int16).numpy().view(ml_dtypes.bfloat16)`), or "
                f"use fastmomentum.torch.SGD for tensors")
    if not isinstance(x, np.ndarray) and module not in ("builtins", "numpy"):
        return f"; convert the {module} array with np.asarray({name}) (same memory)"
    if isinstance(x, np.ndarray) and x.dtype in (np.uint16, np.int16):
        return (f"; bfloat16 bits held as {x.dtype} are refused (they are not numbers to "
                f"NumPy): pass `{name}.view(ml_dtypes.bfloat16)` (same memory, "
                f"pip install ml_dtypes), or `{name}.view(np.float16)` for float16 bits")
    return ""


ROUNDINGS = {"torch": 0, "once": 1, "stochastic": 2}   # fm_core_table.pxd's ROUND_*


def _mix64(x):
    """splitmix64's finaliser: the stochastic rounding key from seed and step."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _integer(func, name, value, low, high):
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))
            or not low <= value < high):
        raise ValueError(f"{func}: `{name}` must be an integer in [{low}, {high}); "
                         f"got {value!r}")
    return int(value)


def rounding_options(func, rounding, torch_threads, seed, step):
    """``(mode, torch_threads, key)`` for the kernels from the rounding arguments of a
    step on 16-bit buffers (float32/float64 buffers compute as always: one rounding per
    operation in their own dtype). ``key``: the stochastic rounding's hash of ``seed``
    and ``step`` (0 for the other modes)."""
    if not isinstance(rounding, str) or rounding not in ROUNDINGS:
        raise ValueError(f"{func}: `rounding` must be one of {list(ROUNDINGS)}; "
                         f"got {rounding!r}")
    threads = _integer(func, "torch_threads", torch_threads, 1, 1 << 16)
    if rounding != "stochastic":
        if seed is not None:
            raise ValueError(f"{func}: `seed` is for rounding=\"stochastic\" only; got "
                             f"seed={seed!r} with rounding={rounding!r}")
        return ROUNDINGS[rounding], threads, 0
    if seed is None:
        raise ValueError(f"{func}: rounding=\"stochastic\" needs `seed` (an integer: the "
                         f"random bits are a hash of seed, step and element index)")
    seed = _integer(func, "seed", seed, 0, 1 << 64)
    step = _integer(func, "step", step, 0, 1 << 64)
    return ROUNDINGS[rounding], threads, _mix64(seed ^ _mix64(step + 0x9E3779B97F4A7C15
                                                             & 0xFFFFFFFFFFFFFFFF))


def check_like(func, name, x, lead_name, lead, writeable):
    _refuse_subclass(func, name, x)
    if not (_usable(x, writeable) and x.dtype == lead.dtype):
        what = "a writeable" if writeable else "a"
        raise TypeError(f"{func}: `{name}` must be {what} C-contiguous {lead.dtype} array like "
                        f"`{lead_name}`; got {describe(x)}")
    if x.shape != lead.shape:
        raise ValueError(f"{func}: `{name}` must have the shape of `{lead_name}` "
                         f"{lead.shape}; got shape={x.shape}")


def _overlap(a, b):
    """NumPy's exact test (``np.shares_memory``), after its cheap bounds test: a strided
    array spans more bytes than its ``nbytes``, and may also interleave with another
    without sharing a byte."""
    return np.may_share_memory(a, b) and np.shares_memory(a, b)


def check_disjoint(func, name, x, other_name, other):
    if _overlap(x, other):
        raise ValueError(f"{func}: `{name}` must not share memory with `{other_name}`")


def check_scalar(func, name, value, *, low=0.0, high=math.inf, label):
    """Finite real ``value`` in [low, high], returned as a float; ``label`` is torch's
    wording for the quantity."""
    # Like the C API (PyFloat_AsDouble): numbers only, no parsing of strings; complex
    # numbers refused (NumPy's would convert with a warning, dropping the imaginary part).
    dtype = getattr(value, "dtype", None)
    if (not (hasattr(type(value), "__float__") or hasattr(type(value), "__index__"))
            or isinstance(value, (str, bytes, complex, np.complexfloating))
            or getattr(dtype, "kind", None) == "c" or getattr(dtype, "is_complex", False)):
        raise TypeError(f"{func}: `{name}` must be a real number; got {describe(value)}")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf  # an int beyond float's range: refused below as not finite
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. a 2-element array/tensor
        shape = getattr(value, "shape", None)
        what = describe(value) + ("" if shape is None or isinstance(value, np.ndarray)
                                  else f" of shape {tuple(shape)}")
        raise TypeError(f"{func}: `{name}` must be a real number (a scalar, or an array or "
                        f"tensor of one element); got {what} ({exc})") from None
    if not (math.isfinite(v) and low <= v <= high):
        if low == -math.inf:
            bounds = ""
        elif high == math.inf:
            bounds = f" >= {low:g}"
        else:
            bounds = f" in [{low:g}, {high:g}]"
        shown = value if not isinstance(value, int) or abs(v) < math.inf else \
            f"an integer of {value.bit_length()} bits"
        raise ValueError(f"{func}: Invalid {label}: {shown} (`{name}` must be a finite "
                         f"number{bounds})")
    return v


def check_sgd_hyper(func, lr, momentum, dampening, weight_decay, nesterov):
    """torch.optim.SGD's rules for its hyper-parameters (plus finiteness)."""
    check_scalar(func, "lr", lr, label="learning rate")
    check_scalar(func, "momentum", momentum, label="momentum value")
    check_scalar(func, "dampening", dampening, low=-math.inf, label="dampening value")
    check_scalar(func, "weight_decay", weight_decay, label="weight_decay value")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(f"{func}: Nesterov momentum requires a momentum and zero dampening "
                         f"(got momentum={momentum}, dampening={dampening})")


def check_momentum_step(param, grad, velocity, lr, momentum, dampening, weight_decay,
                        nesterov, maximize, first_step):
    func = "momentum_step"
    check_sgd_hyper(func, lr, momentum, dampening, weight_decay, nesterov)
    check_lead_array(func, "param", param)
    check_like(func, "grad", grad, "param", param, writeable=False)
    check_disjoint(func, "grad", grad, "param", param)
    if momentum != 0:
        if velocity is None:
            raise TypeError(f"{func}: `velocity` must be an array like `param` when "
                            f"momentum != 0; got None")
        check_like(func, "velocity", velocity, "param", param, writeable=True)
        check_disjoint(func, "velocity", velocity, "param", param)
        check_disjoint(func, "velocity", velocity, "grad", grad)


def check_ema_update(average, value, decay):
    func = "ema_update"
    check_scalar(func, "decay", decay, high=1.0, label="decay")
    check_lead_array(func, "average", average)
    check_like(func, "value", value, "average", average, writeable=False)
    check_disjoint(func, "value", value, "average", average)


def _check_list(func, name, x, n):
    if not isinstance(x, list):
        raise TypeError(f"{func}: `{name}` must be a list of {n} arrays; got {describe(x)}")
    if len(x) != n:
        raise ValueError(f"{func}: `{name}` must hold {n} arrays, one per parameter; "
                         f"got {len(x)}")


def check_multi_step(params, grads, velocities, averages, lr, momentum, dampening,
                     weight_decay, nesterov, maximize, decay, func="SGD.step",
                     write_grads=False):
    """The checks of :func:`check_momentum_step` for every ``params[i]``, naming the index;
    ``averages`` (or None) are the EMA averages updated in the same pass with ``decay``;
    ``write_grads``: the step stores the clipped grads (write_clipped_grads), which must
    then be writable."""
    check_sgd_hyper(func, lr, momentum, dampening, weight_decay, nesterov)
    check_scalar(func, "decay", decay, high=1.0, label="decay")
    n = len(params)
    _check_list(func, "grads", grads, n)
    if momentum != 0:
        _check_list(func, "momentum_buffers", velocities, n)
    if averages is not None:
        _check_list(func, "averages", averages, n)
    for i in range(n):
        p, g = params[i], grads[i]
        check_lead_array(func, f"params[{i}]", p)
        check_like(func, f"grads[{i}]", g, f"params[{i}]", p, writeable=write_grads)
        check_disjoint(func, f"grads[{i}]", g, f"params[{i}]", p)
        others = [(f"params[{i}]", p), (f"grads[{i}]", g)]
        if momentum != 0:
            v = velocities[i]
            check_like(func, f"momentum_buffers[{i}]", v, f"params[{i}]", p, writeable=True)
            for other_name, other in others:
                check_disjoint(func, f"momentum_buffers[{i}]", v, other_name, other)
            others.append((f"momentum_buffers[{i}]", v))
        if averages is not None:
            a = averages[i]
            check_like(func, f"averages[{i}]", a, f"params[{i}]", p, writeable=True)
            for other_name, other in others:
                check_disjoint(func, f"averages[{i}]", a, other_name, other)


def check_grads_apart(func, params, grads, velocities, averages):
    """write_clipped_grads=True: no grad shares memory with another grad, or with any
    param, momentum buffer or average (the step stores into each grad as it goes)."""
    named = [(f"grads[{i}]", g) for i, g in enumerate(grads)]
    others = [(f"params[{i}]", p) for i, p in enumerate(params)]
    others += [(f"momentum_buffers[{i}]", v) for i, v in enumerate(velocities or ())]
    others += [(f"averages[{i}]", a) for i, a in enumerate(averages or ())]
    for k, (name, g) in enumerate(named):
        for other_name, other in named[k + 1:] + others:
            if g.size and _overlap(g, other):
                raise ValueError(f"{func}: write_clipped_grads=True: `{name}` shares memory "
                                 f"with `{other_name}` (the step stores each clipped grad "
                                 f"in place: grads must be apart from each other and from "
                                 f"the params and state)")


def check_write_clipped_grads(func, value):
    """``write_clipped_grads`` must be True or False; returns it as a bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: `write_clipped_grads` must be True or False; got "
                        f"{_short(value)}")
    return bool(value)


def check_write_back_fits(func, writes, momentum_dtype, params):
    """``write_clipped_grads=True`` needs float32/float64 params and no ``momentum_dtype``:
    the fewer-byte and 16-bit steps read their grads scaled but store none back."""
    if not writes:
        return
    if momentum_dtype is not None:
        raise ValueError(f"{func}: `write_clipped_grads=True` is not available with "
                         f"`momentum_dtype` (its step reads the grads scaled and stores "
                         f"none back: clip them first with clip_grad_norm_)")
    for i, p in enumerate(params):
        if p.dtype.itemsize == 2:
            raise TypeError(f"{func}: `write_clipped_grads=True` needs float32 or float64 "
                            f"params; `params[{i}]` is {describe(p)}")


def check_clipping(func, max_norm, norm_type, skip_if_nonfinite):
    """Global-norm clipping's options (torch.nn.utils.clip_grad_norm_'s ``max_norm`` and
    ``norm_type``; ``max_norm`` None: no clipping); returns ``(max_norm, norm_type)`` as
    floats (max_norm None stays None)."""
    if max_norm is not None:
        max_norm = check_scalar(func, "clip_grad_norm", max_norm, label="max_norm")
    if (isinstance(norm_type, (str, bytes, bool, complex))
            or not isinstance(norm_type, (int, float, np.integer, np.floating))
            or float(norm_type) not in (2.0, math.inf)):
        raise ValueError(f"{func}: `norm_type` must be 2.0 or math.inf (the Euclidean or "
                         f"the largest-magnitude norm); got {_short(norm_type)}")
    if not isinstance(skip_if_nonfinite, (bool, np.bool_)):
        raise TypeError(f"{func}: `skip_if_nonfinite` must be True or False; got "
                        f"{_short(skip_if_nonfinite)}")
    return max_norm, float(norm_type)


def check_multi_ema(averages, values, decay, func="EMA.update"):
    """The checks of :func:`check_ema_update` for every pair, naming the index."""
    check_scalar(func, "decay", decay, high=1.0, label="decay")
    n = len(averages)
    _check_list(func, "values", values, n)
    for i in range(n):
        check_lead_array(func, f"averages[{i}]", averages[i])
        check_like(func, f"values[{i}]", values[i], f"averages[{i}]", averages[i],
                   writeable=False)
        check_disjoint(func, f"values[{i}]", values[i], f"averages[{i}]", averages[i])


def check_disjoint_all(func, name, arrays):
    """No two of ``arrays`` share memory (a step runs them in parallel)."""
    spans = sorted((a.__array_interface__["data"][0], a.nbytes, i)
                   for i, a in enumerate(arrays) if a.size)
    for (start, nbytes, i), (next_start, _, j) in zip(spans, spans[1:]):
        if next_start < start + nbytes:
            raise ValueError(f"{func}: `{name}[{min(i, j)}]` and `{name}[{max(i, j)}]` "
                             f"share memory; each array may appear only once")


# ---------------------------------------------------------------------------------------
# ewm_mean: pandas' parameter rules and conversions, and the array preparation both the
# compiled entry point and the baseline use.

def ewm_center_of_mass(com, span, halflife, alpha, func="ewm_mean"):
    """pandas' ``get_center_of_mass``: same checks, wording and operations. Returns the
    centre of mass as a Python float; the smoothing factor is ``1 / (1 + com)``."""
    given = {name: value for name, value in
             (("com", com), ("span", span), ("halflife", halflife), ("alpha", alpha))
             if value is not None}
    if len(given) > 1:
        raise ValueError(f"{func}: comass, span, halflife, and alpha are mutually exclusive; "
                         f"got {', '.join(given)}")
    if not given:
        raise ValueError(f"{func}: Must pass one of comass, span, halflife, or alpha")
    (name, value), = given.items()
    if name == "halflife" and isinstance(value, (str, datetime.timedelta, np.timedelta64)):
        raise ValueError(f"{func}: halflife can only be a timedelta convertible argument if "
                         f"times is not None.")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{func}: `{name}` must be a real number; got {describe(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:       # an int beyond float range (pandas: a bare OverflowError)
        finite = False
    if not finite:
        raise ValueError(f"{func}: `{name}` must be a finite number (one a float64 holds); "
                         f"got {_short(value)}")
    if name == "com":
        if value < 0:
            raise ValueError(f"{func}: comass must satisfy: comass >= 0; got {value!r}")
        comass = value
    elif name == "span":
        if value < 1:
            raise ValueError(f"{func}: span must satisfy: span >= 1; got {value!r}")
        comass = (value - 1) / 2
    elif name == "halflife":
        if value <= 0:
            raise ValueError(f"{func}: halflife must satisfy: halflife > 0; got {value!r}")
        decay = 1 - np.exp(np.log(0.5) / value)  # numpy's exp/log, as pandas: same bits
        comass = 1 / decay - 1
    else:
        if value <= 0 or value > 1:
            raise ValueError(f"{func}: alpha must satisfy: 0 < alpha <= 1; got {value!r}")
        comass = (1 - value) / value
    return float(comass)


def as_array(func, name, x, what):
    """``x`` as an ndarray (not copied when it is one), or a TypeError saying ``what``."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{func}: `{name}` must be {what}; got {describe(x)} ({err})") from None


def _short(value):
    """repr(value), cut short for an int of hundreds of digits."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:12]}...{text[-4:]} ({len(text)} characters)"


# the C kernels count observations in a signed 64-bit integer (as the C entry's check)
EWM_MAX_MIN_PERIODS = 2 ** 62


def _ewm_result_dtype(x, func="ewm_mean", name="x"):
    if x.dtype == np.float32 or x.dtype == np.float64:
        return x.dtype.newbyteorder("=")
    if x.dtype.kind in "iub":
        return np.dtype(np.float64)
    raise TypeError(f"{func}: `{name}` must hold float32, float64, integer or bool numbers; "
                    f"got {describe(x)}")


def prepare_ewm_mean(x, com, span, halflife, alpha, min_periods, axis, out,
                     func="ewm_mean", dtype=None):
    """Check every argument of ``ewm_mean`` and return ``(x, out, com, min_periods,
    axis)``: ``x`` converted (copied only when needed) to a native contiguous array of the
    result dtype (``dtype`` when given, else ``x``'s: float32 stays, the rest is float64)
    in the memory order of ``out`` (``out`` allocated when None: F order for an
    F-contiguous 2-D ``x``, C otherwise), ``min_periods`` as pandas counts it (at least 1)
    and ``axis`` in {0, 1}; ``func`` names the caller in errors. Raises before anything
    is written."""
    com = ewm_center_of_mass(com, span, halflife, alpha, func)
    if (isinstance(min_periods, (bool, np.bool_))
            or not isinstance(min_periods, (int, np.integer)) or min_periods < 0):
        raise ValueError(f"{func}: `min_periods` must be an integer >= 0; got {min_periods!r}")
    if min_periods > EWM_MAX_MIN_PERIODS:
        raise ValueError(f"{func}: `min_periods` must be an integer in [0, 2**62]; got "
                         f"{_short(min_periods)}")
    x = as_array(func, "x", x, "a 1-D or 2-D array of numbers")
    dtype = _ewm_result_dtype(x, func) if dtype is None else dtype
    if x.ndim not in (1, 2):
        raise ValueError(f"{func}: `x` must be 1-D (a series) or 2-D (axis 0: columns are "
                         f"series, axis 1: rows); got shape={x.shape}")
    if (isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer))
            or not -x.ndim <= axis < x.ndim):
        raise ValueError(f"{func}: `axis` must be an integer in [{-x.ndim}, {x.ndim - 1}] "
                         f"for a {x.ndim}-D `x`; got {axis!r}")
    axis = int(axis) % x.ndim
    if out is None:
        order = "F" if (x.ndim == 2 and x.flags.f_contiguous and not x.flags.c_contiguous) else "C"
        out = np.empty(x.shape, dtype=dtype, order=order)
    else:
        ok = (isinstance(out, np.ndarray) and not isinstance(out, np.ma.MaskedArray)
              and out.dtype == dtype and out.flags.writeable
              and out.flags.aligned and out.dtype.isnative
              and (out.flags.c_contiguous or out.flags.f_contiguous))
        if not ok:
            raise TypeError(f"{func}: `out` must be a writeable C- or F-contiguous {dtype} "
                            f"array (the result dtype for this `x`; not a masked array); "
                            f"got {describe(out)}")
        if out.shape != x.shape:
            raise ValueError(f"{func}: `out` must have the shape of `x` {x.shape}; "
                             f"got shape={out.shape}")
        # x as an array, whatever was passed: a memoryview or tensor of out's memory too
        check_disjoint(func, "out", out, "x", x)
        order = "C" if out.flags.c_contiguous else "F"
    if isinstance(x, np.ma.MaskedArray):
        # pandas' view of a masked value: missing (NaN), as in a Series built from it
        x = np.where(np.ma.getmaskarray(x), np.nan, np.asarray(x.data, dtype=dtype))
    x = np.asarray(x, dtype=dtype, order=order)
    return x, out, com, max(int(min_periods), 1), axis


# ---------------------------------------------------------------------------------------
# mp-state: fewer-byte momentum (momentum_dtype)

#: the velocity formats a float32 param can keep its momentum in (momentum_dtype=)
STATE_DTYPE_NAMES = ("bfloat16", "float16")


def check_momentum_dtype(func, momentum_dtype):
    """``momentum_dtype`` (``"bfloat16"``, ml_dtypes.bfloat16, ``"float16"``, np.float16 or
    their dtypes) as ``(name, np.dtype)``; bfloat16 needs ml_dtypes."""
    if isinstance(momentum_dtype, str) and momentum_dtype == "bfloat16":
        dtype = bfloat16_dtype()
        if dtype is None:
            raise TypeError(f"{func}: momentum_dtype='bfloat16' needs the ml_dtypes package "
                            f"(pip install ml_dtypes): NumPy has no bfloat16 of its own")
        return "bfloat16", dtype
    try:
        dtype = np.dtype(momentum_dtype)
    except TypeError:
        dtype = None
    if dtype is not None and dtype == np.float16:
        return "float16", dtype
    if dtype is not None and is_bfloat16(dtype):
        return "bfloat16", dtype
    raise TypeError(f"{func}: `momentum_dtype` must be bfloat16 (ml_dtypes.bfloat16 or "
                    f"'bfloat16') or float16 (np.float16 or 'float16'), or None for the "
                    f"param's dtype; got {momentum_dtype!r}")


def check_state_params(func, momentum_dtype, params):
    """fastmomentum.SGD's (and the baseline's) ``momentum_dtype`` as a NumPy dtype (None
    stays None), for float32 ``params`` only."""
    if momentum_dtype is None:
        return None
    _, dtype = check_momentum_dtype(func, momentum_dtype)
    for i, p in enumerate(params):
        if p.dtype != np.float32:
            raise TypeError(f"{func}: `momentum_dtype` needs float32 params; `params[{i}]` "
                            f"is {describe(p)}")
    return dtype


def _check_state_array(func, name, v, dtype, lead_name, lead):
    """``v``: a writeable C-contiguous array of the velocity dtype, shaped like ``lead``.
    bfloat16 bits given as uint16/int16 are refused with the view to pass instead."""
    _refuse_subclass(func, name, v)
    ok = (plain_array(v) and v.dtype == dtype and v.dtype.isnative and v.flags.c_contiguous
          and v.flags.aligned and v.flags.writeable)
    if not ok:
        hint = ""
        if (isinstance(v, np.ndarray) and v.dtype in (np.uint16, np.int16)
                and dtype != np.float16):
            hint = (f" (bfloat16 bits held as {v.dtype}: pass "
                    f"`{name}.view(ml_dtypes.bfloat16)`, the same memory)")
        raise TypeError(f"{func}: `{name}` must be a writeable C-contiguous {dtype} array "
                        f"(momentum_dtype) shaped like `{lead_name}`; got {describe(v)}{hint}")
    if v.shape != lead.shape:
        raise ValueError(f"{func}: `{name}` must have the shape of `{lead_name}` "
                         f"{lead.shape}; got shape={v.shape}")


def _check_float32_lead(func, name, x):
    check_lead_array(func, name, x)
    if x.dtype != np.float32:
        raise TypeError(f"{func}: `{name}` must be float32 with momentum_dtype (a float32 "
                        f"step keeping its momentum in fewer bytes); got {describe(x)}")


def check_state_step(params, grads, velocities, lr, momentum, dampening, weight_decay,
                     nesterov, momentum_dtype, func):
    """The checks of a step with fewer-byte momentum over lists (``momentum_step``
    passes one-element lists and names its arguments without an index)."""
    check_sgd_hyper(func, lr, momentum, dampening, weight_decay, nesterov)
    _, dtype = check_momentum_dtype(func, momentum_dtype)
    n = len(params)
    single = func == "momentum_step"
    if not single:
        _check_list(func, "grads", grads, n)
        if momentum != 0:
            _check_list(func, "momentum_buffers", velocities, n)
    for i in range(n):
        at = "" if single else f"[{i}]"
        pname, gname, vname = (("param", "grad", "velocity") if single
                               else (f"params{at}", f"grads{at}", f"momentum_buffers{at}"))
        p, g = params[i], grads[i]
        _check_float32_lead(func, pname, p)
        check_like(func, gname, g, pname, p, writeable=False)
        check_disjoint(func, gname, g, pname, p)
        if momentum != 0:
            v = velocities[i]
            if v is None:
                raise TypeError(f"{func}: `{vname}` must be a {dtype} array when "
                                f"momentum != 0; got None")
            _check_state_array(func, vname, v, dtype, pname, p)
            check_disjoint(func, vname, v, pname, p)
            check_disjoint(func, vname, v, gname, g)
