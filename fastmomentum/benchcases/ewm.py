"""Benchmark cases for ewm_mean: fastmomentum vs the NumPy baseline, pandas and scipy.

Every implementation computes pandas' ``ewm(alpha=0.1, adjust=...).mean()`` of float64 data
without missing values (the seed's beta = 0.9):

* ``pandas``: ``Series/DataFrame.ewm(...).mean()`` on an object built once, outside the timing;
* ``scipy-lfilter``: ``scipy.signal.lfilter([alpha], [1, alpha-1], x, zi=...)`` seeded with the
  first value (adjust=False); for adjust=True ``lfilter([1], [1, alpha-1], x)`` divided by
  the weight sums, which are precomputed outside the timing;
* ``baseline``: :func:`fastmomentum.baseline.ewm_mean` (blocked scans, BLAS matmuls);
* ``fastmomentum``: a fresh result each call, as every peer; ``fastmomentum out=``: into
  a preallocated result, as a loop that reuses its output would. A fresh result far larger
  than the caches starts as pages the kernel must map and zero (6.5-9.5 ms per 80 MB here,
  paid by every implementation that allocates; ``benchmarks/target_ratios.py`` times it),
  which ``out=`` skips.

Cases: a series (adjust True and False) and a 100000 x 100 frame along axis 0.

The rest of the family (:func:`family_cases`, part of :func:`ewm_cases`): ewm_var, ewm_std,
ewm_cov and ewm_corr of a 10M series and ewm_var of the frame, against pandas and numbagg
(``move_exp_nanvar`` etc.), all with alpha=0.1, adjust=True (numbagg's only weighting),
bias-corrected var/std/cov as pandas' default and numbagg's, no missing values, pandas'
``min_periods`` (numbagg's default 0 gives the same numbers from the second value on);
``ewm_mean`` with datetime ``times`` (1M values, halflife 30 s) against pandas; and an
:class:`fastmomentum.EwmStream` fed 1000 values per ``update`` against one ``update`` of
the whole series (``EwmStream 1k chunks`` vs ``EwmStream one pass``).
"""
import numpy as np

from .. import EwmStream, baseline, ewm_corr, ewm_cov, ewm_mean, ewm_std, ewm_var
from . import Case, optional_import

ALPHA = 0.1
SERIES_SIZES = (100_000, 10_000_000)
QUICK_SERIES_SIZES = (100_000,)
FRAME_SHAPE = (100_000, 100)
QUICK_FRAME_SHAPE = (10_000, 100)


def _data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _ours(function):
    def make(shape, adjust):
        x = _data(shape)
        return lambda: function(x, alpha=ALPHA, adjust=adjust)
    return make


def _ours_into_out(shape, adjust):
    x = _data(shape)
    out = np.empty_like(x)
    return lambda: ewm_mean(x, alpha=ALPHA, adjust=adjust, out=out)


def _pandas(pd):
    def make(shape, adjust):
        x = _data(shape)
        frame = pd.Series(x) if x.ndim == 1 else pd.DataFrame(x)
        return lambda: frame.ewm(alpha=ALPHA, adjust=adjust).mean()
    return make


def _lfilter(signal):
    def make(shape, adjust):
        x = _data(shape)
        decay = 1.0 - ALPHA
        if not adjust:
            zi = decay * x[:1]                   # y_0 = alpha*x_0 + decay*x_0 = x_0
            return lambda: signal.lfilter([ALPHA], [1.0, -decay], x, axis=0, zi=zi)[0]
        steps = np.arange(1, shape[0] + 1)
        weight_sums = -np.expm1(steps * np.log(decay)) / ALPHA
        if x.ndim == 2:
            weight_sums = weight_sums[:, None]
        return lambda: signal.lfilter([1.0], [1.0, -decay], x, axis=0) / weight_sums
    return make


def ewm_cases(quick=False):
    """All ewm_mean cases; ``quick`` keeps them small (for smoke runs)."""
    pd = optional_import("pandas")
    signal = optional_import("scipy.signal")
    makers = {"fastmomentum": _ours(ewm_mean), "fastmomentum out=": _ours_into_out,
              "baseline": _ours(baseline.ewm_mean),
              "pandas": _pandas(pd) if pd else None,
              "scipy-lfilter": _lfilter(signal) if signal else None}
    skips = {"pandas": None if pd else "pandas not installed",
             "scipy-lfilter": None if signal else "scipy not installed"}
    layouts = [("series", (n,), adjust)
               for n in (QUICK_SERIES_SIZES if quick else SERIES_SIZES)
               for adjust in (True, False)]
    layouts.append(("frame-axis0", QUICK_FRAME_SHAPE if quick else FRAME_SHAPE, True))
    cases = family_cases(quick)
    for layout, shape, adjust in layouts:
        size = int(np.prod(shape))
        for impl, make in makers.items():
            cases.append(Case(
                "ewm_mean", impl, size, "float64",
                make=(lambda make=make, shape=shape, adjust=adjust: make(shape, adjust)),
                bytes_moved=2 * size * 8,   # read x, write the means
                skip=skips.get(impl),
                params={"layout": layout, "adjust": "adjust" if adjust else "recursive"}))
    return cases


FAMILY_SERIES = 10_000_000
QUICK_FAMILY_SERIES = 100_000
TIMES_SIZE = 1_000_000
STREAM_CHUNK = 1000
#: statistic -> (ours, pandas method, numbagg function, takes a partner series)
FAMILY = {"ewm_var": (ewm_var, "var", "move_exp_nanvar", False),
          "ewm_std": (ewm_std, "std", "move_exp_nanstd", False),
          "ewm_cov": (ewm_cov, "cov", "move_exp_nancov", True),
          "ewm_corr": (ewm_corr, "corr", "move_exp_nancorr", True)}


def _family_makers(kernel, pd, numbagg):
    ours, method, peer, pair = FAMILY[kernel]

    def operands(shape):
        x = _data(shape)
        return (x, _data(shape, seed=1)) if pair else (x,)

    def make_ours(shape):
        args = operands(shape)
        return lambda: ours(*args, alpha=ALPHA)

    def make_pandas(shape):
        frames = [pd.Series(a) if a.ndim == 1 else pd.DataFrame(a) for a in operands(shape)]
        return lambda: getattr(frames[0].ewm(alpha=ALPHA), method)(*frames[1:])

    def make_numbagg(shape):
        args = operands(shape)
        return lambda: getattr(numbagg, peer)(*args, alpha=ALPHA, axis=0)
    return {"fastmomentum": make_ours, "pandas": make_pandas if pd else None,
            "numbagg": make_numbagg if numbagg else None}


def _times_makers(pd):
    def data():
        rng = np.random.default_rng(0)
        times = np.cumsum(rng.integers(1, 100, TIMES_SIZE)).astype("datetime64[s]")
        return _data((TIMES_SIZE,)), times

    def make_ours(shape):
        x, times = data()
        return lambda: ewm_mean(x, halflife="30s", times=times)

    def make_pandas(shape):
        x, times = data()
        series = pd.Series(x)
        return lambda: series.ewm(halflife="30s", times=times).mean()
    return {"fastmomentum": make_ours, "pandas": make_pandas if pd else None}


def _stream_makers():
    def make(chunk):
        def build(shape):
            x = _data(shape)
            def run():
                stream = EwmStream("var", alpha=ALPHA)
                for start in range(0, x.shape[0], chunk or x.shape[0]):
                    stream.update(x[start:start + (chunk or x.shape[0])])
            return run
        return build
    # the chunked run is "ours" so that target_ratios prints one pass / chunks
    return {"fastmomentum EwmStream 1k chunks": make(STREAM_CHUNK),
            "EwmStream one pass": make(None)}


def family_cases(quick=False):
    """The ewm family's cases (see the module docstring)."""
    pd = optional_import("pandas")
    numbagg = optional_import("numbagg")
    skips = {"pandas": None if pd else "pandas not installed",
             "numbagg": None if numbagg else "numbagg not installed (pip install numbagg)"}
    n = QUICK_FAMILY_SERIES if quick else FAMILY_SERIES
    groups = [(kernel, "series", (n,), _family_makers(kernel, pd, numbagg))
              for kernel in FAMILY]
    groups.append(("ewm_var", "frame-axis0", QUICK_FRAME_SHAPE if quick else FRAME_SHAPE,
                   _family_makers("ewm_var", pd, numbagg)))
    groups.append(("ewm_mean", "times", (TIMES_SIZE,), _times_makers(pd)))
    groups.append(("ewm_var", "stream", (QUICK_FAMILY_SERIES if quick else TIMES_SIZE,),
                   _stream_makers()))
    cases = []
    for kernel, layout, shape, makers in groups:
        size = int(np.prod(shape))
        for impl, make in makers.items():
            cases.append(Case(
                kernel, impl, size, "float64",
                make=(lambda make=make, shape=shape: make(shape)),
                bytes_moved=2 * size * 8, skip=skips.get(impl),
                params={"layout": layout, "adjust": "adjust"}))
    return cases
