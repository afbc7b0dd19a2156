"""The exponentially weighted family over dask arrays chunked along time.

    import fastmomentum.dask as fmd
    fmd.ewm_var(darr, alpha=0.1)            # a dask array of darr's chunks

Every function takes the options of its in-memory namesake (``fastmomentum.ewm_var`` ...),
with ``times`` a NumPy or dask array (or anything array-like) along the time axis (a dask
array is not loaded: its chunks, cut as ``x``'s, go to the tasks). No rechunking of ``x``:

1. every time chunk runs alone from a fresh :class:`fastmomentum.EwmStream` (in parallel),
   keeping its results and its end state;
2. the end states are chained by :meth:`EwmStream.combine` (small tasks, one per chunk);
3. every later chunk runs again from the combined state before it (in parallel).

The first chunk's results are one pass's bits; the others agree with the in-memory result
to rounding (the combined state is within a few ulps of the one-pass state, and its effect
decays). ``exact=True`` instead chains the chunks one after another (no parallelism along
time): bit-identical to the in-memory result. Works on any scheduler, the distributed one
included (tasks are plain functions of NumPy arrays and dicts).
"""
import functools

import numpy as np

import fastmomentum

__all__ = ["ewm_mean", "ewm_var", "ewm_std", "ewm_cov", "ewm_corr", "ewm_sum"]


def _dask_array():
    try:
        import dask.array as da
    except ImportError:
        raise ImportError('fastmomentum.dask needs dask: pip install "fastmomentum[dask]"') \
            from None
    return da


def _run(stat, options, x, y, times, state):
    """One chunk from ``state`` (None: a fresh stream): (results, end state)."""
    stream = fastmomentum.EwmStream(stat, **options)
    if state is not None:
        stream.load_state_dict(state)
    args = (x,) if y is None else (x, y)
    out = stream.update(*args, times=times)
    return out, stream.state_dict()


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _apply(stat, x, y, options, times, exact):
    da = _dask_array()
    from dask import delayed
    func = f"fastmomentum.dask.ewm_{stat}"
    if not isinstance(x, da.Array):
        x = da.asarray(x)
    if y is not None:
        y = da.asarray(y)
        if y.shape != x.shape:
            raise ValueError(f"{func}: `y` must have the shape of `x` {x.shape}; "
                             f"got shape={y.shape}")
        y = y.rechunk(x.chunks)           # a no-op when the chunks already agree
    if x.ndim not in (1, 2):
        raise ValueError(f"{func}: `x` must be 1-D or 2-D; got shape={x.shape}")
    axis = options.get("axis", 0)
    if isinstance(axis, bool) or axis not in (0, 1, -1, -2) or (x.ndim == 1 and axis not in (0, -1)):
        raise ValueError(f"{func}: `axis` must be an integer in [{-x.ndim}, {x.ndim - 1}] "
                         f"for a {x.ndim}-D `x`; got {axis!r}")
    axis = axis % x.ndim
    options = dict(options, axis=axis, times=times is not None)
    # the options are checked once, here, as the in-memory function checks them
    fastmomentum.EwmStream(stat, **options)
    dtype = np.result_type(*(np.float32 if a.dtype == np.float32 else np.float64
                             for a in ((x,) if y is None else (x, y))))
    bounds = np.cumsum((0,) + x.chunks[axis])
    tchunks = None
    if times is not None:
        if not isinstance(times, da.Array):
            times = np.asarray(times)
        if times.shape != (x.shape[axis],):
            raise ValueError(f"{func}: times must be the same length as the object "
                             f"({x.shape[axis]}); got shape={times.shape}")
        if isinstance(times, da.Array):
            # never loaded here: each time chunk (cut as x's, a no-op when they agree)
            # reaches its tasks as a NumPy block, checked there as update() checks it
            tchunks = list(times.rechunk((x.chunks[axis],)).to_delayed())
        else:
            tchunks = [times[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
    xb = x.to_delayed()
    yb = y.to_delayed() if y is not None else None
    other = 1 - axis if x.ndim == 2 else None
    nt = len(x.chunks[axis])
    ns = len(x.chunks[other]) if other is not None else 1
    run = delayed(functools.partial(_run, stat, options), pure=True)
    combine = delayed(fastmomentum.EwmStream.combine, pure=True)
    grid = [[None] * ns for _ in range(nt)]
    for j in range(ns):
        def block(b, i):
            if b is None:
                return None
            if x.ndim == 1:
                return b[i]
            return b[i, j] if axis == 0 else b[j, i]
        state = None
        for i in range(nt):
            t = None if tchunks is None else tchunks[i]
            if exact or i == 0:
                pair = run(block(xb, i), block(yb, i), t, state)
                state = delayed(_second)(pair)
            else:
                fresh = run(block(xb, i), block(yb, i), t, None)
                pair = run(block(xb, i), block(yb, i), t, state)
                state = combine(state, delayed(_second)(fresh))
            shape = [x.chunks[axis][i]]
            if other is not None:
                shape.insert(other, x.chunks[other][j])
            grid[i][j] = da.from_delayed(delayed(_first)(pair), shape=tuple(shape),
                                         dtype=dtype)
    if x.ndim == 1:
        return da.concatenate([row[0] for row in grid])
    rows = grid if axis == 0 else [list(col) for col in zip(*grid)]
    return da.block(rows)


def _wrap(stat, pair):
    if pair:
        def ewm(x, y, *, times=None, exact=False, **options):
            return _apply(stat, x, y, options, times, exact)
    else:
        def ewm(x, *, times=None, exact=False, **options):
            return _apply(stat, x, None, options, times, exact)
    ewm.__name__ = ewm.__qualname__ = f"ewm_{stat}"
    ewm.__doc__ = (f"``fastmomentum.ewm_{stat}`` of a dask array chunked along time (see "
                   f"the module docstring); ``exact=True`` chains the chunks serially for "
                   f"the in-memory bits. Returns a dask array.")
    return ewm


ewm_mean = _wrap("mean", False)
ewm_var = _wrap("var", False)
ewm_std = _wrap("std", False)
ewm_cov = _wrap("cov", True)
ewm_corr = _wrap("corr", True)
ewm_sum = _wrap("sum", False)
