"""The exponentially weighted family's Python layer, shared by the compiled module and the
NumPy baseline: argument checks (through ``_validation.prepare_ewm_mean``), ``times``,
the layout of series, :class:`EwmStream` and the combination of chunk states.

Every function is a method of :class:`Family`, built on an ``advance`` function (the
compiled ``fastmomentum._ewm_family.advance`` or the baseline's NumPy one) that runs pandas'
recurrence over a block of steps from a state array and leaves the state after it.
"""
import datetime
import numbers

import numpy as np

from . import _validation

STATS = ("mean", "var", "std", "cov", "corr", "sum")
_KIND = {"mean": 0, "sum": 1, "var": 2, "std": 2, "cov": 2, "corr": 3}
_OUT_VALUE, _OUT_STD = 0, 1
#: the rows of a state array (see src/ewm_family/_ewm_family.pyx)
FIELDS = ("mean_x", "mean_y", "cov", "old_wt", "sum_wt2", "nobs", "decay", "seed",
          "lead_decay", "x1", "y1", "var_x", "var_y")
(MEAN_X, MEAN_Y, COV, OLD_WT, SUM_WT2, NOBS, DECAY, SEED, LEAD_DECAY, X1, Y1, VAR_X,
 VAR_Y) = range(len(FIELDS))
#: the co-moments, the means they are about and the first values of those
_COMOMENTS = ((COV, MEAN_X, MEAN_Y, X1, Y1), (VAR_X, MEAN_X, MEAN_X, X1, X1),
              (VAR_Y, MEAN_Y, MEAN_Y, Y1, Y1))
_TIMEDELTA = (str, datetime.timedelta, np.timedelta64)


def new_state(m):
    """The state of ``m`` series that have seen nothing."""
    state = np.zeros((len(FIELDS), m))
    state[[MEAN_X, MEAN_Y, X1, Y1]] = np.nan
    state[[OLD_WT, SUM_WT2, DECAY, SEED, LEAD_DECAY]] = 1.0
    return state


class Options:
    """Checked, resolved options of one statistic (pandas' rules and errors)."""

    def __init__(self, func, stat, com, span, halflife, alpha, adjust, ignore_na,
                 min_periods, bias, times_kind):
        self.func, self.stat = func, stat
        self.adjust, self.ignore_na, self.bias = bool(adjust), bool(ignore_na), bool(bias)
        self.times_kind = times_kind          # None, "datetime" or "float"
        self.halflife = None                  # with times: in the times' unit (a float)
        if times_kind is None:
            self.com = _validation.ewm_center_of_mass(com, span, halflife, alpha, func)
        else:
            if times_kind == "datetime" and not isinstance(halflife, _TIMEDELTA):
                raise ValueError(f"{func}: halflife must be a timedelta convertible object "
                                 f"(with datetime64 `times`); got {halflife!r}")
            if times_kind == "float" and (isinstance(halflife, (bool, np.bool_)) or
                                          not isinstance(halflife, numbers.Real)):
                raise ValueError(f"{func}: `halflife` must be a real number with float "
                                 f"`times`; got {halflife!r}")
            self.halflife = halflife
            if (com, span, alpha) != (None, None, None):
                if not self.adjust:
                    raise NotImplementedError(
                        f"{func}: None of com, span, or alpha can be specified if times is "
                        f"provided and adjust=False")
                self.com = _validation.ewm_center_of_mass(com, span, None, alpha, func)
            else:
                self.com = 1.0
        if stat == "sum":
            if not self.adjust:
                raise NotImplementedError(f"{func}: sum is not implemented with adjust=False")
            if times_kind is not None:
                raise NotImplementedError(f"{func}: sum is not implemented with times")
        if (isinstance(min_periods, (bool, np.bool_))
                or not isinstance(min_periods, (int, np.integer)) or min_periods < 0):
            raise ValueError(f"{func}: `min_periods` must be an integer >= 0; "
                             f"got {min_periods!r}")
        self.min_periods = max(int(min_periods), 1)
        self.alpha = 1.0 / (1.0 + self.com)
        # pandas' mean (not its cov) takes new_wt = 1 - old_wt when adjust=False, com == 1
        self.fills = stat == "mean" and not self.adjust and self.com == 1.0
        self.kind = _KIND[stat]
        self.out_kind = _OUT_STD if stat == "std" else _OUT_VALUE

    def halflife_in(self, unit):
        """The halflife in the times' unit, as pandas converts it."""
        if self.times_kind == "float":
            return float(self.halflife)
        if isinstance(self.halflife, str):
            try:
                import pandas as pd
            except ImportError:
                raise TypeError(f"{self.func}: a `halflife` string needs pandas; pass a "
                                f"datetime.timedelta or numpy.timedelta64") from None
            return float(pd.Timedelta(self.halflife).as_unit(unit)._value)
        return float(np.timedelta64(self.halflife).astype(f"m8[{unit}]").astype(np.int64))


def times_kind(func, times):
    if times is None:
        return None
    t = np.asarray(times)
    if t.dtype.kind == "M":
        return "datetime"
    if t.dtype.kind in "fiu":
        return "float"
    raise ValueError(f"{func}: times must be datetime64 dtype (or float: beyond pandas); "
                     f"got {_validation.describe(t)}")


def time_values(func, times, n):
    """The times, checked, as a C-contiguous int64 (datetime64: its integer count) or
    float64 array, and their unit (None for floats). Each time counts as its float64
    value (pandas converts the counts to float64 before differencing them)."""
    t = np.asarray(times)
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{func}: times must be the same length as the object "
                         f"({n}); got shape={t.shape}")
    # the checks are reductions (no boolean array of n: np.isnat/np.isfinite's pass and
    # allocation were 0.44 ms of a 1M-value times mean, a twentieth of it)
    if t.dtype.kind == "M":
        values = np.ascontiguousarray(t.view(np.int64))
        if values.size and values.min() == np.iinfo(np.int64).min:    # NaT
            raise ValueError(f"{func}: Cannot convert NaT values to integer")
        return values, np.datetime_data(t.dtype)[0]
    values = np.ascontiguousarray(t, dtype=np.float64)
    # NaN propagates through min and max; inf is one of them
    if values.size and not (np.isfinite(values.min()) and np.isfinite(values.max())):
        raise ValueError(f"{func}: `times` must be finite; got NaN or inf")
    return values, None


def as_steps(a, axis):
    """A (steps, series) view of a 1-D or 2-D array (time along ``axis``)."""
    if a.ndim == 1:
        return a[:, None]
    return a if axis == 0 else a.T


def check_partner(func, y, x, out):
    """``y`` (cov, corr) as an array of ``x``'s dtype and layout, same shape."""
    source = y
    y = _validation.as_array(func, "y", y, "an array of numbers like `x`")
    _validation._ewm_result_dtype(y, func, "y")
    if y.shape != x.shape:
        raise ValueError(f"{func}: `y` must have the shape of `x` {x.shape}; "
                         f"got shape={y.shape}")
    if isinstance(source, np.ndarray):
        _validation.check_disjoint(func, "out", out, "y", source)
    return np.asarray(y, dtype=x.dtype, order="F" if x.flags.f_contiguous and x.ndim == 2
                      and not x.flags.c_contiguous else "C")


def result_dtype(func, x, y):
    dx = _validation._ewm_result_dtype(np.asarray(x) if not isinstance(x, np.ndarray) else x,
                                       func)
    if y is None:
        return dx
    ya = np.asarray(y) if not isinstance(y, np.ndarray) else y
    return np.promote_types(dx, _validation._ewm_result_dtype(ya, func, "y"))


def merge(sa, sb, first_decays, opt, gap):
    """The state after two consecutive chunks from ``sa`` (the state after the first) and
    ``sb`` (a fresh stream's state after the second, whose first value decays the first
    chunk by ``gap`` where ``first_decays``): see :meth:`EwmStream.combine`. Arrays of
    shape (NFIELDS, m); returns a new one."""
    g = np.where(first_decays, gap, 1.0)
    out = sb.copy()
    d_b = sb[DECAY] * g                    # all of the second chunk's decays
    lead_b = sb[LEAD_DECAY] * g            # its decays up to its first observation
    a_on, b_on = sa[NOBS] > 0, sb[NOBS] > 0
    both = a_on & b_on
    only_a = a_on & ~b_on
    out[DECAY] = sa[DECAY] * d_b
    out[LEAD_DECAY] = np.where(a_on, sa[LEAD_DECAY], sa[DECAY] * lead_b)
    out[NOBS] = sa[NOBS] + sb[NOBS]
    for f in (X1, Y1):
        out[f] = np.where(a_on, sa[f], sb[f])
    # the second chunk saw nothing: the first one's state, decayed
    for f in (MEAN_X, MEAN_Y, COV, VAR_X, VAR_Y):
        out[f] = np.where(only_a, sa[f], out[f])
    if opt.kind == 1:                      # sum
        out[MEAN_X] = np.where(only_a, sa[MEAN_X] * d_b, out[MEAN_X])
        out[MEAN_X] = np.where(both, sa[MEAN_X] * d_b + sb[MEAN_X], out[MEAN_X])
        return out
    out[OLD_WT] = np.where(only_a, sa[OLD_WT] * d_b, out[OLD_WT])
    out[SUM_WT2] = np.where(only_a, sa[SUM_WT2] * d_b * d_b, out[SUM_WT2])
    out[SEED] = np.where(only_a, sa[SEED] * (d_b if opt.adjust else 1.0), out[SEED])
    with np.errstate(all="ignore"):
        if opt.adjust:
            # weighted samples: the first chunk's weight decayed over the second (Chan et al.)
            wa, wb = sa[OLD_WT] * d_b, sb[OLD_WT]
            w = wa + wb
            merged = {f: (wa * sa[f] + wb * sb[f]) / w for f in (MEAN_X, MEAN_Y)}
            for f, u, v, _, _ in _COMOMENTS:
                merged[f] = (wa * sa[f] + wb * sb[f]
                             + wa * wb / w * (sa[u] - sb[u]) * (sa[v] - sb[v])) / w
            sum_wt2 = sa[SUM_WT2] * d_b * d_b + sb[SUM_WT2]
            old_wt, seed = w, sa[SEED] * d_b
        else:
            # the second chunk's seed (its first value, with weight 1 and share D at its end)
            # stands for the first chunk's state stepped with that value (pandas' step)
            ow = sa[OLD_WT] * lead_b
            nw = 1.0 - ow if opt.fills else opt.alpha
            a1, c1 = ow / (ow + nw), nw / (ow + nw)
            first = {MEAN_X: X1, MEAN_Y: Y1}
            stepped = {f: a1 * sa[f] + c1 * sb[first[f]] for f in first}   # its means
            share = sb[SEED]
            merged = {f: sb[f] + share * (stepped[f] - sb[first[f]]) for f in first}
            for f, u, v, xu, xv in _COMOMENTS:
                cov1 = (a1 * (sa[f] + (sa[u] - stepped[u]) * (sa[v] - stepped[v]))
                        + c1 * (sb[xu] - stepped[u]) * (sb[xv] - stepped[v]))
                uu, uv = stepped[u] - sb[xu], stepped[v] - sb[xv]
                eu, ev = sb[u] - sb[xu], sb[v] - sb[xv]
                merged[f] = (sb[f] + share * cov1 + share * (1.0 - share) * uu * uv
                             - share * (uu * ev + eu * uv))
            sw2_1 = (sa[SUM_WT2] * lead_b * lead_b + nw * nw) / ((ow + nw) * (ow + nw))
            # (both sums of squared shares decayed by the second chunk's trailing gaps)
            sum_wt2 = sb[SUM_WT2] + share * share * (sw2_1 - 1.0) * sb[OLD_WT] * sb[OLD_WT]
            old_wt, seed = sb[OLD_WT], sa[SEED] * a1 * share
    merged.update({SUM_WT2: sum_wt2, OLD_WT: old_wt, SEED: seed})
    for f, v in merged.items():
        out[f] = np.where(both, v, out[f])
    return out


class Family:
    """The public functions over one ``advance`` implementation and its ``time_factors``
    (``time_factors(values, previous, halflife, alpha)``: each step's decay
    ``(1 - alpha)**((t_i - t_{i-1})/halflife)`` from :func:`time_values` ``values``, with
    ``t_{-1} = previous``, or 1 for the first when ``previous`` is NaN)."""

    def __init__(self, advance, time_factors, stepper=None, stream_core=None):
        self.advance = advance
        self.time_factors = time_factors
        self.stepper = stepper or self._checked_stepper
        # a compiled first base of EwmStream (its _fast, _steps and update's common path)
        self.stream_core = stream_core

    # -- one statistic over a whole array ---------------------------------------------
    def compute(self, func, stat, x, y, com, span, halflife, alpha, adjust, ignore_na,
                min_periods, axis, bias, times, out):
        kind = times_kind(func, times)
        opt = Options(func, stat, com, span, halflife, alpha, adjust, ignore_na,
                      min_periods, bias, kind)
        if kind is None:
            c, s, h, a = com, span, halflife, alpha
        else:
            c, s, h, a = opt.com, None, None, None
        x, out, _, _, axis = _validation.prepare_ewm_mean(
            x, c, s, h, a, min_periods, axis, out, func=func,
            dtype=result_dtype(func, x, y) if y is not None else None)
        y = x if y is None else check_partner(func, y, x, out)
        xs, ys, os = as_steps(x, axis), as_steps(y, axis), as_steps(out, axis)
        factors = None
        if kind is not None:
            values, unit = time_values(func, times, xs.shape[0])
            factors = self.time_factors(values, np.nan, opt.halflife_in(unit), opt.alpha)
        self._run(opt, xs, ys, os, new_state(xs.shape[1]), 1.0, factors, opt.bias)
        return out

    def pairwise(self, func, stat, x, y, options, out):
        """pandas' ``pairwise=True`` (``x_frame.ewm(...).cov(y_frame, pairwise=True)``) as
        an array (n, my, mx): [t, j, i] is the statistic of x's series i with y's series
        j (each pair with its own missing values), time first. 1-D ``x`` and ``y``: as
        pandas for a Series, the statistic of the pair (pairwise ignored)."""
        x = _validation.as_array(func, "x", x, "an array of numbers")
        y = _validation.as_array(func, "y", y, "an array of numbers like `x`")
        if x.ndim == 1 and y.ndim == 1:
            return self.compute(func, stat, x, y, out=out, **options)
        if x.ndim != 2 or y.ndim != 2:
            raise ValueError(f"{func}: with pairwise=True, `x` and `y` must both be 2-D "
                             f"(or both 1-D); got shapes {x.shape} and {y.shape}")
        axis = options["axis"]
        if isinstance(axis, (bool, np.bool_)) or axis not in (0, 1, -1, -2):
            raise ValueError(f"{func}: `axis` must be an integer in [-2, 1] for a 2-D `x`; "
                             f"got {axis!r}")
        xs, ys = as_steps(x, axis % 2), as_steps(y, axis % 2)
        if ys.shape[0] != xs.shape[0]:
            raise ValueError(f"{func}: `y` must have as many steps as `x` "
                             f"({xs.shape[0]} along axis {axis}); got shape={y.shape}")
        (n, mx), my = xs.shape, ys.shape[1]
        dtype = result_dtype(func, x, y)
        if out is not None:
            if (not isinstance(out, np.ndarray) or out.shape != (n, my, mx)
                    or out.dtype != dtype or not out.flags.writeable):
                raise ValueError(f"{func}: `out` must be a writeable {dtype} array of shape "
                                 f"{(n, my, mx)} (pairwise=True); got "
                                 f"{_validation.describe(out)}")
            _validation.check_disjoint(func, "out", out, "x", x)
            _validation.check_disjoint(func, "out", out, "y", y)
        # the options checked before anything is written (each pair's call checks again)
        Options(func, stat, options["com"], options["span"], options["halflife"],
                options["alpha"], options["adjust"], options["ignore_na"],
                options["min_periods"], options["bias"], times_kind(func, options["times"]))
        options = dict(options, axis=0)
        result = np.empty((n, my, mx), dtype) if out is None else out
        xc = np.ascontiguousarray(xs, dtype=dtype)
        for j in range(my):
            partner = np.repeat(np.asarray(ys[:, j:j + 1], dtype=dtype), mx, axis=1)
            result[:, j, :] = self.compute(func, stat, xc, partner, out=None, **options)
        return result

    def _run(self, opt, xs, ys, os, state, f0, factors, bias):
        self.advance(opt.kind, xs, ys, os, state, opt.alpha, f0, factors, opt.adjust,
                     opt.ignore_na, bias, opt.fills, opt.min_periods, opt.out_kind)

    # -- streams ----------------------------------------------------------------------
    def _checked_stepper(self, kind, state, dtype, ndim, m, pair, alpha, f0, adjust,
                         ignore_na, bias, fills, min_periods, out_kind):
        """A stream's common update (the compiled ``Stepper``'s contract) over ``advance``:
        the results of a chunk like the previous one, or None for the checked path."""
        advance = self.advance

        def like(a):
            return (type(a) is np.ndarray and a.dtype == dtype and a.ndim == ndim
                    and a.flags.c_contiguous and (ndim == 1 or a.shape[1] == m))

        def step(x, y=None):
            if not like(x) or (y is None) == pair or (
                    pair and not (like(y) and y.shape[0] == x.shape[0])):
                return None
            return advance(kind, x, x if y is None else y, None, state, alpha, f0, None,
                           adjust, ignore_na, bias, fills, min_periods, out_kind)
        return step

    def stream_class(self):
        family = self
        bases = (_StreamBase,) if self.stream_core is None else (self.stream_core, _StreamBase)

        class EwmStream(*bases):
            __doc__ = _StreamBase.__doc__
            _family = family
        return EwmStream


_STREAM_OPTIONS = ("com", "span", "halflife", "alpha", "adjust", "ignore_na", "min_periods",
                   "bias", "axis", "times")


class _StreamBase:
    """An exponentially weighted statistic over a series (or 2-D block of series) that
    arrives in chunks: ``EwmStream(stat, **options)`` with ``stat`` one of mean, var, std,
    cov, corr, sum and the options of the matching ``ewm_*`` function (``times=True``:
    every :meth:`update` passes the chunk's ``times``).

    ``update(x[, y], times=None, out=None)`` returns the chunk's results. The state between
    chunks is pandas' recurrence state itself, so chunks of any sizes give results
    bit-identical to one pass (and to ``ewm_*`` over the whole array). ``state_dict()`` /
    ``load_state_dict()`` save and resume it; :meth:`combine` joins the states of two
    consecutive chunks (see there)."""
    _family = None

    def __init__(self, stat, *, com=None, span=None, halflife=None, alpha=None, adjust=True,
                 ignore_na=False, min_periods=0, bias=False, axis=0, times=False):
        func = "EwmStream"
        if stat not in STATS:
            raise ValueError(f"{func}: `stat` must be one of {', '.join(STATS)}; "
                             f"got {stat!r}")
        if isinstance(axis, (bool, np.bool_)) or axis not in (0, 1, -1, -2):
            raise ValueError(f"{func}: `axis` must be 0 or 1 (the time axis of 2-D chunks); "
                             f"got {axis!r}")
        self.stat = stat
        self.options = dict(com=com, span=span, halflife=halflife, alpha=alpha,
                            adjust=bool(adjust), ignore_na=bool(ignore_na),
                            min_periods=min_periods, bias=bool(bias), axis=int(axis) % 2,
                            times=bool(times))
        self._times_kind = None
        self._opt = None if times else Options(func, stat, com, span, halflife, alpha,
                                                adjust, ignore_na, min_periods, bias, None)
        self._states = None          # [the (NFIELDS, m) state array]
        self._last_time = None
        self._first_time = None
        self._first_decays = None
        self._times_unit = None
        self._steps = 0
        # after a first update: (dtype, shape of a row, no y, decay of a chunk's first value)
        self._fast = None

    def _check_chunk(self, x, y, out):
        func = f"EwmStream({self.stat!r}).update"
        pair = self.stat in ("cov", "corr")
        if pair and y is None:
            raise TypeError(f"{func}: `y` is required for {self.stat}")
        if not pair and y is not None:
            raise TypeError(f"{func}: `y` is only for cov and corr")
        axis = self.options["axis"]
        x, out, _, _, axis = _validation.prepare_ewm_mean(
            x, 1.0, None, None, None, 0, axis if np.ndim(x) == 2 else 0, out, func=func,
            dtype=result_dtype(func, x, y) if y is not None else None)
        y = x if y is None else check_partner(func, y, x, out)
        return func, x, y, out, axis

    def update(self, x, y=None, *, times=None, out=None):
        """The results of the next chunk (a 1-D series chunk, or a 2-D block with time
        along ``axis``); ``y``: cov and corr; ``times``: its times (streams made with
        ``times=True``)."""
        fast = self._fast
        if fast is not None and out is None and times is None:
            # the common call: a C-contiguous chunk like the previous one, time along axis
            # 0 (same operations as _checked_update), checked by the family's stepper; None
            # when it is not such a chunk (the compiled family's streams take this path in
            # C: StreamCore.update)
            result = fast(x, y)
            if result is not None:
                self._steps += result.shape[0]
                return result
        return self._checked_update(x, y, times, out)

    def _checked_update(self, x, y, times, out):
        """update's path for every chunk (the one above, and the compiled family's
        StreamCore.update, take only the common call)."""
        func, x, y, out, axis = self._check_chunk(x, y, out)
        xs, ys, os = as_steps(x, axis), as_steps(y, axis), as_steps(out, axis)
        n, m = xs.shape
        if self._states is not None and self._states[0].shape[1] != m:
            raise ValueError(f"{func}: this stream has {self._states[0].shape[1]} series; "
                             f"got a chunk of {m}")
        opt, factors = self._opt, None
        if self.options["times"]:
            if times is None:
                raise TypeError(f"{func}: this stream was made with times=True: pass the "
                                f"chunk's `times`")
            kind = times_kind(func, times)
            if self._times_kind not in (None, kind):
                raise ValueError(f"{func}: `times` must stay {self._times_kind}; got {kind}")
            o = self.options
            opt = Options(func, self.stat, o["com"], o["span"], o["halflife"], o["alpha"],
                          o["adjust"], o["ignore_na"], o["min_periods"], o["bias"], kind)
            values, unit = time_values(func, times, n)
            factors = self._family.time_factors(
                values, np.nan if self._last_time is None else self._last_time,
                opt.halflife_in(unit), opt.alpha)
            self._times_kind = kind
        elif times is not None:
            raise TypeError(f"{func}: `times` needs a stream made with times=True")
        fresh = self._states is None
        if fresh:
            self._states = [new_state(m)]
        if n == 0:
            return out
        if self._first_decays is None:
            # per state: whether the first value decays what came before (for combine)
            fx, fy = np.isfinite(xs[0]), np.isfinite(ys[0])
            self._first_decays = [(fx & fy) | (not opt.ignore_na)] * len(self._states)
            if factors is not None:
                self._first_time = float(values[0])
                self._times_unit = unit
        f0 = 1.0 if self._steps == 0 else 1.0 - opt.alpha
        self._family._run(opt, xs, ys, os, self._states[0], f0, factors, opt.bias)
        self._steps += n
        if factors is not None:
            self._last_time = float(values[-1])
        self._opt = opt
        if factors is None and (x.ndim == 1 or axis == 0):
            self._fast = self._family.stepper(
                opt.kind, self._states[0], x.dtype, x.ndim, m, self.stat in ("cov", "corr"),
                opt.alpha, 1.0 - opt.alpha, opt.adjust, opt.ignore_na, opt.bias, opt.fills,
                opt.min_periods, opt.out_kind)
        return out

    def state_dict(self):
        """Everything needed to resume (copies): plain Python values and NumPy arrays."""
        return {"stat": self.stat, "options": dict(self.options), "steps": self._steps,
                "fields": FIELDS,
                "states": None if self._states is None else [s.copy() for s in self._states],
                "last_time": self._last_time, "first_time": self._first_time,
                "times_kind": self._times_kind, "times_unit": self._times_unit,
                "first_decays": None if self._first_decays is None
                else [f.copy() for f in self._first_decays]}

    def load_state_dict(self, state):
        """Resume from :meth:`state_dict` of a stream with the same stat and options."""
        func = "EwmStream.load_state_dict"
        if not isinstance(state, dict) or state.get("fields") != FIELDS:
            raise ValueError(f"{func}: not a state of this version's EwmStream")
        if state["stat"] != self.stat or state["options"] != self.options:
            raise ValueError(f"{func}: the state is of EwmStream({state['stat']!r}, "
                             f"{state['options']}); this stream is ({self.stat!r}, "
                             f"{self.options})")
        states = state["states"]
        if states is not None:
            states = [np.array(s, dtype=np.float64, order="C") for s in states]
            if (len(states) != 1
                    or any(s.ndim != 2 or s.shape[0] != len(FIELDS) for s in states)):
                raise ValueError(f"{func}: malformed state arrays")
        self._states = states
        self._steps = int(state["steps"])
        self._last_time, self._first_time = state["last_time"], state["first_time"]
        self._times_kind, self._times_unit = state["times_kind"], state["times_unit"]
        self._fast = None
        fd = state["first_decays"]
        self._first_decays = None if fd is None else [np.array(f, dtype=bool) for f in fd]
        return self

    @classmethod
    def combine(cls, first, second):
        """The state after two consecutive chunks, from ``first`` (a state after the first
        chunk, from the series' start) and ``second`` (the state of a *fresh* stream after
        the second chunk alone): what a parallel or distributed scan needs. Both are
        :meth:`state_dict` results; so is the answer, which may be combined again.

        Associative: ``combine(combine(a, b), c)`` and ``combine(a, combine(b, c))`` are
        the same state in real arithmetic; in floating point they, and the result of one
        pass over the whole series, agree to rounding (a few ulps per combination, relative
        to the state's scale; nobs, decays and flags exactly in count, products of decays
        to an ulp per factor). Resuming from a combined state therefore gives results
        within that rounding of one pass, not bit-identical ones (resuming from a stream's
        own state is bit-identical)."""
        func = "EwmStream.combine"
        for s in (first, second):
            if not isinstance(s, dict) or s.get("fields") != FIELDS:
                raise ValueError(f"{func}: arguments must be EwmStream.state_dict() results")
        if (first["stat"], first["options"]) != (second["stat"], second["options"]):
            raise ValueError(f"{func}: the states are of different statistics or options")
        if second["states"] is None:
            return dict(first)
        if first["states"] is None:
            return dict(second)
        stream = cls(first["stat"], **first["options"])
        o = first["options"]
        kind = first["times_kind"] or second["times_kind"]
        opt = Options(func, first["stat"], o["com"], o["span"], o["halflife"], o["alpha"],
                      o["adjust"], o["ignore_na"], o["min_periods"], o["bias"],
                      kind if o["times"] else None)
        gap = 1.0 - opt.alpha
        if o["times"]:
            delta = ((second["first_time"] - first["last_time"])
                     / opt.halflife_in(first["times_unit"]))
            with np.errstate(divide="ignore"):  # alpha = 1: log2(0) = -inf, pow(0, 0) = 1
                gap = float(np.exp2(0.0 if delta == 0.0 else delta * np.log2(1.0 - opt.alpha)))
        merged = [merge(a, b, decays, opt, gap) for a, b, decays in
                  zip(first["states"], second["states"], second["first_decays"])]
        result = stream.state_dict()
        result.update(states=merged, steps=first["steps"] + second["steps"],
                      last_time=second["last_time"], first_time=first["first_time"],
                      times_kind=kind, times_unit=first["times_unit"],
                      first_decays=first["first_decays"])
        return result


_COMMON_DOC = """
    Options as :func:`fastmomentum.ewm_mean` (one of ``com``/``span``/``halflife``/``alpha``,
    ``adjust``, ``ignore_na``, ``min_periods``, ``axis``, ``out``), with pandas' rules and
    errors. ``x`` (and ``y``) float32 give float32 (computed in float64), anything else
    float64. ``times`` (datetime64 with a timedelta ``halflife``, or floats with a number):
    each step decays the weights by ``(1-alpha)**(dt/halflife)`` (``alpha`` 0.5 unless
    ``com``/``span``/``alpha`` is given, adjust=True only), pandas' rule for the mean; for
    var/std/cov/corr (beyond pandas) the same weights enter pandas' weighted moments, so
    with ``w_i`` the weight of value ``i`` at step ``t`` (adjust=True: the product of the
    decays since ``i``) the biased result is ``sum w_i (x_i - m)(y_i - m_y) / sum w_i`` and
    bias=False multiplies it by ``(sum w)^2 / ((sum w)^2 - sum w^2)``.
"""


_PAIRWISE_DOC = """
    ``pairwise=True`` (2-D ``x`` (n, mx) and ``y`` (n, my), time along ``axis``): every
    pair of a series of ``x`` and one of ``y``, an array (n, my, mx) in pandas' layout,
    ``[t, j, i]`` for x's series i with y's series j: pandas'
    ``X.ewm(...).cov(Y, pairwise=True).to_numpy().reshape(n, my, mx)`` for DataFrames X, Y
    (pass ``y=x`` for all pairs of one frame); ``out=`` of that shape. 1-D ``x`` and ``y``:
    pairwise is ignored, as pandas does for a Series.
"""


def make_functions(family):
    """The public ewm_* functions and EwmStream over ``family``."""

    def ewm_var(x, *, com=None, span=None, halflife=None, alpha=None, adjust=True,
                ignore_na=False, min_periods=0, axis=0, bias=False, times=None, out=None):
        return family.compute("ewm_var", "var", x, None, com, span, halflife, alpha, adjust,
                              ignore_na, min_periods, axis, bias, times, out)

    def ewm_std(x, *, com=None, span=None, halflife=None, alpha=None, adjust=True,
                ignore_na=False, min_periods=0, axis=0, bias=False, times=None, out=None):
        return family.compute("ewm_std", "std", x, None, com, span, halflife, alpha, adjust,
                              ignore_na, min_periods, axis, bias, times, out)

    def _pair(func, stat, x, y, pairwise, options, out):
        if not isinstance(pairwise, (bool, np.bool_)):
            raise TypeError(f"{func}: `pairwise` must be a bool; got {pairwise!r}")
        if pairwise:
            return family.pairwise(func, stat, x, y, options, out)
        return family.compute(func, stat, x, y, out=out, **options)

    def ewm_cov(x, y, *, com=None, span=None, halflife=None, alpha=None, adjust=True,
                ignore_na=False, min_periods=0, axis=0, bias=False, times=None, out=None,
                pairwise=False):
        return _pair("ewm_cov", "cov", x, y, pairwise, dict(
            com=com, span=span, halflife=halflife, alpha=alpha, adjust=adjust,
            ignore_na=ignore_na, min_periods=min_periods, axis=axis, bias=bias,
            times=times), out)

    def ewm_corr(x, y, *, com=None, span=None, halflife=None, alpha=None, adjust=True,
                 ignore_na=False, min_periods=0, axis=0, times=None, out=None,
                 pairwise=False):
        return _pair("ewm_corr", "corr", x, y, pairwise, dict(
            com=com, span=span, halflife=halflife, alpha=alpha, adjust=adjust,
            ignore_na=ignore_na, min_periods=min_periods, axis=axis, bias=True,
            times=times), out)

    def ewm_sum(x, *, com=None, span=None, halflife=None, alpha=None, adjust=True,
                ignore_na=False, min_periods=0, axis=0, out=None):
        return family.compute("ewm_sum", "sum", x, None, com, span, halflife, alpha, adjust,
                              ignore_na, min_periods, axis, False, None, out)

    def ewm_mean_times(x, times, *, com=None, span=None, halflife=None, alpha=None,
                       adjust=True, ignore_na=False, min_periods=0, axis=0, out=None):
        return family.compute("ewm_mean", "mean", x, None, com, span, halflife, alpha,
                              adjust, ignore_na, min_periods, axis, False, times, out)

    ewm_var.__doc__ = ("Exponentially weighted variance, equal to pandas "
                       "``ewm(...).var(bias=bias)``.\n" + _COMMON_DOC)
    ewm_std.__doc__ = ("Exponentially weighted standard deviation, equal to pandas "
                       "``ewm(...).std(bias=bias)`` (zsqrt of the variance).\n" + _COMMON_DOC)
    ewm_cov.__doc__ = ("Exponentially weighted covariance of ``x`` and ``y`` (same shape), "
                       "equal to pandas ``ewm(...).cov(y, bias=bias)`` column by column "
                       "(pairwise=False); a value counts where both are finite.\n"
                       + _PAIRWISE_DOC
                       + _COMMON_DOC)
    ewm_corr.__doc__ = ("Exponentially weighted correlation of ``x`` and ``y``, equal to "
                        "pandas ``ewm(...).corr(y)``: cov(x, y)/zsqrt(var(x) var(y)), all "
                        "biased, each with its own missing values.\n" + _PAIRWISE_DOC + _COMMON_DOC)
    ewm_sum.__doc__ = ("Exponentially weighted sum, equal to pandas ``ewm(...).sum()`` "
                       "(adjust=True only and no times, as pandas).\n" + _COMMON_DOC)
    ewm_mean_times.__doc__ = ("``ewm_mean(x, times=...)``: pandas' time-weighted mean.\n"
                              + _COMMON_DOC)
    return (ewm_var, ewm_std, ewm_cov, ewm_corr, ewm_sum, ewm_mean_times,
            family.stream_class())
