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
"""
import numpy as np

from .. import baseline, ewm_mean
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
    cases = []
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
