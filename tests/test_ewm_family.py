"""ewm_var/std/cov/corr/sum and times= (compiled and NumPy baseline) against pandas, a direct
weighted-sum oracle, and each other."""
import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fastmomentum
from fastmomentum import baseline

from test_ewm import nan_patterns


def assert_matches(got, want, x, rtol=1e-12):
    """Same NaN positions; elsewhere every value within ``rtol`` of itself, or of the
    data's scale where it is near zero (a variance or covariance that cancels to ~0 has no
    relative precision: pandas' own rounding there is of the order of the data's)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.asarray(x, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    scale = float(np.max(np.abs(finite))) if finite.size else 1.0
    ok = np.isnan(want) | (np.abs(got - want) <= rtol * np.maximum(np.abs(want), 1e-3 * scale))
    assert ok.all(), f"{(~ok).sum()} of {got.size} values off: got {got[~ok][:3]}, want {want[~ok][:3]}"

IMPLS = {"fastmomentum": fastmomentum, "baseline": baseline}
STATS = ["var", "std", "cov", "corr", "sum"]
PAIR = {"cov", "corr"}
PARAMS = [dict(com=0.5), dict(span=7), dict(halflife=3.0), dict(alpha=0.5), dict(alpha=1.0),
          dict(alpha=0.02)]


def family(impl, stat):
    return getattr(IMPLS[impl], f"ewm_{stat}")


def pandas_stat(stat, x, y=None, axis=0, bias=None, **kw):
    """pandas' answer for 1-D or 2-D arrays (axis 0: columns are series)."""
    def frame(a):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim == 1:
            return pd.Series(a)
        return pd.DataFrame(a if axis == 0 else a.T)
    ew = frame(x).ewm(**kw)
    extra = {} if bias is None else {"bias": bias}
    result = getattr(ew, stat)(frame(y), **extra) if stat in PAIR else getattr(ew, stat)(**extra)
    result = result.to_numpy()
    return result.T if np.ndim(x) == 2 and axis == 1 else result


def well_conditioned(got, want, x, y, kw):
    """corr (1-D, or 2-D with series as columns) where it is defined to rounding: after a gap of ~100 steps, adjust=False
    weighs the old values by b^100 ~ 1e-48, and a variance is then a rounding artifact
    (pandas' mean (ow*m + nw*x)/(ow + nw) is an ulp off x, giving a variance of 1e-29
    where ours, a*m + c*x with c == 1, gives 1e-46). NaN positions are checked
    everywhere; values where both variances are above 1e-20 of the data's scale."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    both = np.isfinite(x) & np.isfinite(y)
    xs, ys = np.where(both, x, np.nan), np.where(both, y, np.nan)
    scale = np.nanmax(np.abs(np.concatenate([xs.ravel(), ys.ravel(), [1.0]]))) ** 2
    vx = pandas_stat("var", xs, bias=True, **kw)
    vy = pandas_stat("var", ys, bias=True, **kw)
    keep = ~((vx < 1e-20 * scale) | (vy < 1e-20 * scale))
    return np.where(keep, got, 0.0), np.where(keep, want, 0.0)


def call(impl, stat, x, y, **kw):
    return family(impl, stat)(x, y, **kw) if stat in PAIR else family(impl, stat)(x, **kw)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("stat", STATS)
@pytest.mark.parametrize("n", [1, 2, 37, 400])
def test_grid_matches_pandas_1d(impl, stat, n):
    if impl == "baseline" and n > 100:
        pytest.skip("the baseline steps in Python; its long-series bits are checked against "
                    "the compiled ones in test_compiled_equals_baseline_bits")
    rng = np.random.default_rng(n)
    partner = rng.standard_normal(n) * 3 + 1
    partner[rng.random(n) < 0.1] = np.nan
    params = PARAMS if n > 2 else PARAMS[:2]
    for pattern, x in nan_patterns(n, rng).items():
        x = x + 50.0                                  # a mean far from 0: cancellation
        for param in params:
            for adjust in (True, False) if stat != "sum" else (True,):
                for ignore_na in (False, True):
                    for min_periods in (0, 3):
                        kw = dict(param, adjust=adjust, ignore_na=ignore_na,
                                  min_periods=min_periods)
                        biases = (None, True) if stat in ("var", "std", "cov") else (None,)
                        for bias in biases:
                            extra = {} if bias is None else {"bias": bias}
                            y = partner + 0.5 * x if stat in PAIR else None
                            got = call(impl, stat, x, y, **kw, **extra)
                            assert got.dtype == np.float64
                            want = pandas_stat(stat, x, y, bias=bias, **kw)
                            if stat == "corr":
                                got, want = well_conditioned(got, want, x, y, kw)
                            assert_matches(got, want, np.abs(want[np.isfinite(want)]))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("stat", STATS)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("order", ["C", "F"])
def test_grid_matches_pandas_2d(impl, stat, axis, order):
    rng = np.random.default_rng(axis + 7 * len(stat))
    for shape in [(60, 9), (9, 40), (200, 20)]:
        x = rng.standard_normal(shape)
        y = rng.standard_normal(shape) + x
        noisy = x.copy()
        noisy[rng.random(shape) < 0.1] = np.nan
        noisy[:, 1] = np.nan
        for data in (x, noisy):
            data = np.asarray(data, order=order)
            yy = np.asarray(y, order=order) if stat in PAIR else None
            for adjust in (True, False) if stat != "sum" else (True,):
                kw = dict(alpha=0.15, adjust=adjust, min_periods=2)
                got = call(impl, stat, data, yy, axis=axis, **kw)
                assert_matches(got, pandas_stat(stat, data, yy, axis=axis, **kw), data)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("stat", STATS)
def test_float32_in_float32_out_and_out(impl, stat):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 4)).astype(np.float32)
    y = (rng.standard_normal((300, 4)) + x).astype(np.float32) if stat in PAIR else None
    got = call(impl, stat, x, y, span=9)
    assert got.dtype == np.float32
    want = pandas_stat(stat, x, y, span=9)      # pandas computes in float64 too
    np.testing.assert_array_equal(got, want.astype(np.float32))
    out = np.full(x.shape, 7.0, dtype=np.float32)
    assert call(impl, stat, x, y, span=9, out=out) is out
    np.testing.assert_array_equal(out, got)


@pytest.mark.parametrize("stat", STATS)
def test_compiled_equals_baseline_bits(stat):
    """Both run the same operations in the same order (no fma): the same bits."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((500, 5))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = rng.standard_normal((500, 5)) if stat in PAIR else None
    for adjust in (True, False) if stat != "sum" else (True,):
        kw = dict(com=3.0, adjust=adjust, ignore_na=True)
        np.testing.assert_array_equal(call("fastmomentum", stat, x, y, **kw),
                                      call("baseline", stat, x, y, **kw))


def test_thread_count_independent():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40_000, 48))
    x[rng.random(x.shape) < 0.01] = np.nan
    y = rng.standard_normal(x.shape)
    before = fastmomentum.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            fastmomentum.set_num_threads(threads)
            results.append([fastmomentum.ewm_var(x, alpha=0.05), fastmomentum.ewm_cov(x, y, alpha=0.05),
                            fastmomentum.ewm_var(np.asfortranarray(x), alpha=0.05)])
    finally:
        fastmomentum.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 60), m=st.integers(1, 4), stat=st.sampled_from(STATS),
       alpha=st.floats(0.01, 1.0), adjust=st.booleans(), ignore_na=st.booleans(),
       min_periods=st.integers(0, 5), f32=st.booleans(), seed=st.integers(0, 2**16),
       missing=st.floats(0.0, 0.9), axis=st.integers(0, 1))
@example(n=57, m=1, stat="corr", alpha=0.875, adjust=False, ignore_na=False, min_periods=0,
         f32=False, seed=33, missing=0.875, axis=0)     # found by hypothesis (see below)
def test_property_matches_pandas(n, m, stat, alpha, adjust, ignore_na, min_periods, f32, seed,
                                 missing, axis):
    adjust = adjust or stat == "sum"
    rng = np.random.default_rng(seed)
    shape = (n, m) if axis == 0 else (m, n)
    x = rng.standard_normal(shape) * 10
    x[rng.random(shape) < missing] = rng.choice([np.nan, np.inf, -np.inf])
    y = rng.standard_normal(shape) if stat in PAIR else None
    if f32:
        x = x.astype(np.float32)
        y = None if y is None else y.astype(np.float32)
    kw = dict(alpha=alpha, adjust=adjust, ignore_na=ignore_na, min_periods=min_periods)
    got = call("fastmomentum", stat, x, y, axis=axis, **kw)
    assert got.dtype == x.dtype and got.shape == x.shape
    want = pandas_stat(stat, x, y, axis=axis, **kw)
    if stat == "corr" and not f32:
        # (a near-two-point corr from variances ~1e-22 of the data's scale: ours -1.0,
        # pandas' -0.9999999998; n=57, alpha=0.875, adjust=False, 87.5% missing)
        if axis == 0:
            got, want = well_conditioned(got, want, x, y, kw)
        else:
            got, want = (a.T for a in well_conditioned(got.T, want.T, x.T, y.T, kw))
    if f32:
        want = want.astype(np.float32).astype(np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    else:
        assert_matches(got, want, np.abs(want[np.isfinite(want)]) if want.size else want)


# ---------------------------------------------------------------------------------------
# times

def _times(n, rng, unit="s"):
    return pd.to_datetime(np.cumsum(rng.integers(1, 50, n)), unit=unit).values


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("adjust", [True, False])
@pytest.mark.parametrize("ignore_na", [False, True])
@pytest.mark.parametrize("halflife", ["20s", datetime.timedelta(seconds=7),
                                      np.timedelta64(3000, "ms")])
def test_times_mean_matches_pandas(impl, adjust, ignore_na, halflife):
    rng = np.random.default_rng(4)
    for pattern, x in nan_patterns(300, rng).items():
        t = _times(300, rng)
        kw = dict(halflife=halflife, adjust=adjust, ignore_na=ignore_na, min_periods=2)
        got = IMPLS[impl].ewm_mean(x, times=t, **kw)
        want = pd.Series(x).ewm(times=t, **kw).mean().to_numpy()
        assert_matches(got, want, x)
    frame = rng.standard_normal((100, 3))
    t = _times(100, rng, "ms")
    got = IMPLS[impl].ewm_mean(frame, times=t, halflife="50ms", adjust=adjust)
    want = pd.DataFrame(frame).ewm(times=t, halflife="50ms", adjust=adjust).mean().to_numpy()
    assert_matches(got, want, frame)


def test_times_with_alpha_and_float_times():
    rng = np.random.default_rng(8)
    x = rng.standard_normal(200)
    t = _times(200, rng)
    got = fastmomentum.ewm_mean(x, times=t, alpha=0.3, halflife="5s")
    want = pd.Series(x).ewm(times=t, alpha=0.3, halflife="5s").mean().to_numpy()
    assert_matches(got, want, x)
    # float times with a numeric halflife: the same as datetime seconds
    seconds = t.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    np.testing.assert_allclose(fastmomentum.ewm_mean(x, times=seconds, halflife=5.0),
                               fastmomentum.ewm_mean(x, times=t, halflife="5s"), rtol=1e-14)



@pytest.mark.parametrize("times_dtype", ["int64", "float64"])
def test_time_factors_against_pow_and_chunk_independent(times_dtype):
    """The times step's decays (fastmomentum._ewm_family.time_factors, a vectorised 2**y)
    are pandas' pow(1 - alpha, dt/halflife) to an ulp or two, across exponents from
    0 to beyond the normal range (where libm's exp2 takes over: subnormal, 0, and
    negative steps), and the same bits whatever the split of the times into chunks
    (blocks of 1024 inside)."""
    from fastmomentum._ewm_family import time_factors
    rng = np.random.default_rng(21)
    steps = np.concatenate([rng.integers(0, 50, 3000), rng.integers(0, 3000, 200),
                            [0, 5000, 2**20, 1]])
    times = np.cumsum(steps).astype(np.int64)
    times[len(times) // 2:] -= 100              # one negative step: a growth factor
    if times_dtype == "float64":
        times = times * 0.37 + 1e6
    for halflife, alpha in ((30.0, 0.5), (1.5, 0.1), (0.2, 0.9)):
        got = time_factors(times, np.nan, halflife, alpha)
        tf = times.astype(np.float64)
        deltas = np.diff(tf, prepend=tf[0]) / halflife
        with np.errstate(over="ignore"):
            want = np.power(1.0 - alpha, deltas)
        tiny = want < 2.3e-308                  # subnormals: libm's own, flushed anyway
        assert np.any(tiny) and np.any(want > 1.0)
        # 2**(delta*log2(b)): the product's rounding is |y| ulps of pow, not more
        y = deltas * np.log2(1.0 - alpha)
        with np.errstate(over="ignore"):
            np.testing.assert_allclose(got[~tiny], np.exp2(y[~tiny]), rtol=5e-16, atol=0)
        normal = ~tiny & np.isfinite(want)
        assert np.all(np.abs(got[normal] - want[normal])
                      <= 4e-16 * np.maximum(1.0, np.abs(y[normal])) * want[normal])
        np.testing.assert_allclose(got[tiny], want[tiny], rtol=0, atol=1e-320)
        with np.errstate(over="ignore"):
            np.testing.assert_allclose(baseline._family_time_factors(times, np.nan, halflife,
                                                                     alpha), np.exp2(y),
                                       rtol=1e-15)
        for cut in (1, 1023, 1024, 1500, 3001):
            parts = np.concatenate([time_factors(times[:cut], np.nan, halflife, alpha),
                                    time_factors(times[cut:], float(tf[cut - 1]),
                                                 halflife, alpha)])
            np.testing.assert_array_equal(parts, got)
    with pytest.raises(ValueError, match="int64 or float64"):
        time_factors(times.astype(np.float32), np.nan, 1.0, 0.5)


def test_time_factors_small_and_wide_int64_times_agree():
    """int64 times within [-2**50, 2**50) (seconds to microseconds since 1970) take the
    factor pass's short conversion (the integer difference), wider ones (nanoseconds) the
    full one: where both are exact (times under 2**53) they give the same bits, whichever
    blocks a shift moves across 2**50; nanosecond times match pow as pandas rounds them."""
    from fastmomentum._ewm_family import time_factors
    rng = np.random.default_rng(23)
    steps = np.concatenate([rng.integers(0, 90, 2500), [0, 5000, -40, 1]])
    times = np.cumsum(steps).astype(np.int64)
    small = time_factors(times, np.nan, 20.0, 0.5)
    for shift in (2**52, 2**50 - int(times[1500]), -2**50 - int(times[700]), -2**50):
        np.testing.assert_array_equal(time_factors(times + shift, np.nan, 20.0, 0.5), small)
    nanos = times * 10**9 + 1_700_000_000 * 10**9
    tf = nanos.astype(np.float64)
    halflife = 20.0 * 10**9
    want = np.power(0.5, np.diff(tf, prepend=tf[0]) / halflife)
    np.testing.assert_allclose(time_factors(nanos, np.nan, halflife, 0.5), want,
                               rtol=2e-15, atol=1e-300)


@pytest.mark.parametrize("impl", IMPLS)
def test_times_alpha_one_with_repeated_times(impl):
    """alpha=1 (b = 0) with repeated timestamps: pandas' pow(0, 0) = 1 keeps the weight,
    where 2**(0 * log2(0)) would be NaN (every result from there on was NaN before)."""
    rng = np.random.default_rng(24)
    x = rng.standard_normal(40)
    t = pd.to_datetime(np.repeat(np.arange(20), 2), unit="s").values
    kw = dict(times=t, halflife="3s", alpha=1.0)
    want = pd.Series(x).ewm(**kw).mean().to_numpy()
    assert_matches(IMPLS[impl].ewm_mean(x, **kw), want, x)

def test_times_long_series_matches_pandas():
    """Long runs through the times loop (the weights kept in registers), with missing
    values breaking it and float32 data, against pandas."""
    rng = np.random.default_rng(22)
    n = 20_000
    x = rng.standard_normal(n)
    x[rng.integers(0, n, 40)] = np.nan
    t = _times(n, rng, "ms")
    for kw in (dict(halflife="40ms"), dict(halflife="3ms", adjust=False),
               dict(halflife="9ms", ignore_na=True, min_periods=5)):
        want = pd.Series(x).ewm(times=t, **kw).mean().to_numpy()
        assert_matches(fastmomentum.ewm_mean(x, times=t, **kw), want, x)
        got32 = fastmomentum.ewm_mean(x.astype(np.float32), times=t, **kw)
        want32 = pd.Series(x.astype(np.float32).astype(np.float64)).ewm(times=t, **kw).mean()
        np.testing.assert_array_equal(got32, want32.to_numpy().astype(np.float32))

def weighted_oracle(x, y, t, halflife, bias):
    """var/cov with times from the definition: weights w_i = 0.5**((t_now - t_i)/halflife)
    (adjust=True, no missing values), fsum-free but direct."""
    out = np.empty(len(x))
    for k in range(len(x)):
        w = 0.5 ** ((t[k] - t[: k + 1]) / halflife)
        sw = w.sum()
        mx, my = (w * x[: k + 1]).sum() / sw, (w * y[: k + 1]).sum() / sw
        cov = (w * (x[: k + 1] - mx) * (y[: k + 1] - my)).sum() / sw
        if not bias:
            den = sw * sw - (w * w).sum()
            cov = cov * sw * sw / den if den > 0 else np.nan
        out[k] = cov
    return out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bias", [False, True])
def test_times_var_cov_against_weighted_sums(impl, bias):
    rng = np.random.default_rng(9)
    n = 120
    t = np.cumsum(rng.random(n) * 3)
    x = rng.standard_normal(n) + 4
    y = rng.standard_normal(n) + x
    mod = IMPLS[impl]
    np.testing.assert_allclose(mod.ewm_cov(x, y, times=t, halflife=2.5, bias=bias),
                               weighted_oracle(x, y, t, 2.5, bias), rtol=1e-11, atol=1e-13)
    want_var = weighted_oracle(x, x, t, 2.5, bias)
    np.testing.assert_allclose(mod.ewm_var(x, times=t, halflife=2.5, bias=bias), want_var,
                               rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(mod.ewm_std(x, times=t, halflife=2.5, bias=bias),
                               np.sqrt(want_var), rtol=1e-11, atol=1e-13)


# ---------------------------------------------------------------------------------------
# errors: pandas' types and words, named by the function, nothing written

def _pandas_error(fn):
    with pytest.raises(Exception) as info:
        fn()
    return info.type


@pytest.mark.parametrize("impl", IMPLS)
def test_errors_like_pandas(impl):
    mod = IMPLS[impl]
    x = np.arange(10.0)
    t = _times(10, np.random.default_rng(0))
    s = pd.Series(x)
    cases = [
        (lambda: mod.ewm_var(x), lambda: s.ewm().var(), "Must pass one of"),
        (lambda: mod.ewm_var(x, com=1, span=2), lambda: s.ewm(com=1, span=2).var(),
         "mutually exclusive"),
        (lambda: mod.ewm_std(x, alpha=0), lambda: s.ewm(alpha=0).std(), "0 < alpha <= 1"),
        (lambda: mod.ewm_sum(x, alpha=0.5, adjust=False),
         lambda: s.ewm(alpha=0.5, adjust=False).sum(), "adjust=False"),
        (lambda: mod.ewm_mean(x, halflife="1 day"), lambda: s.ewm(halflife="1 day").mean(),
         "times is not None"),
        (lambda: mod.ewm_mean(x, times=t, halflife=2.0),
         lambda: s.ewm(times=t, halflife=2.0).mean(), "timedelta convertible"),
        (lambda: mod.ewm_mean(x, times=t[:5], halflife="1s"), None, "same length"),
        (lambda: mod.ewm_mean(x, times=t, halflife="1s", alpha=0.5, adjust=False),
         lambda: s.ewm(times=t, halflife="1s", alpha=0.5, adjust=False).mean(), "adjust=False"),
        (lambda: mod.ewm_sum(x, alpha=0.5, min_periods=-1), None, "min_periods"),
    ]
    nat = t.copy()
    nat[3] = np.datetime64("NaT")
    cases.append((lambda: mod.ewm_mean(x, times=nat, halflife="1s"),
                  lambda: s.ewm(times=nat, halflife="1s").mean(), "NaT"))
    for ours, theirs, words in cases:
        with pytest.raises((ValueError, TypeError, NotImplementedError), match=words) as info:
            ours()
        assert str(info.value).startswith("ewm_")
        if theirs is not None:
            assert issubclass(info.type, _pandas_error(theirs))


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_partner_and_out_write_nothing(impl):
    mod = IMPLS[impl]
    x = np.arange(12.0).reshape(6, 2)
    out = np.full((6, 2), 3.0)
    with pytest.raises(ValueError, match="ewm_cov: `y` must have the shape"):
        mod.ewm_cov(x, np.ones((6, 3)), alpha=0.5, out=out)
    with pytest.raises(ValueError, match="ewm_corr: `out` must not share memory with `y`"):
        mod.ewm_corr(x, out, alpha=0.5, out=out)
    with pytest.raises(TypeError, match="ewm_var: `out` must be"):
        mod.ewm_var(x, alpha=0.5, out=np.empty((6, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="ewm_cov: `y` must hold"):
        mod.ewm_cov(x, np.array([["a", "b"]] * 6), alpha=0.5, out=out)
    np.testing.assert_array_equal(out, 3.0)


def test_halflife_timedelta_without_times_is_pandas_value_error():
    """Regression: on eb8d50c ewm_mean(x, halflife="1 day") raised TypeError ("must be a real
    number"); pandas raises ValueError with this message."""
    for fn in (fastmomentum.ewm_mean, baseline.ewm_mean, fastmomentum.ewm_var):
        with pytest.raises(ValueError, match="halflife can only be a timedelta convertible"):
            fn(np.arange(5.0), halflife=datetime.timedelta(days=1))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stat", ["var", "cov"])
def test_rows_finiteness_check_edges(dtype, stat):
    """Series side by side take the shared-weights row loop only while a row is finite
    (an integer test of the exponent bits): the largest finite values, subnormals,
    negative zero and signed infinities, each in one column (of x or only of y), give the
    bits of each column on its own."""
    info = np.finfo(dtype)
    rng = np.random.default_rng(23)
    x = rng.standard_normal((60, 7)).astype(dtype)
    y = rng.standard_normal((60, 7)).astype(dtype)
    x[5, 1], x[9, 2], x[12, 3] = info.max / 4, info.smallest_subnormal, -0.0
    x[20, 4], x[30, 5], y[40, 6] = np.inf, -np.inf, np.nan
    x[50, 0] = -info.max / 4
    fn = getattr(fastmomentum, f"ewm_{stat}")
    args = (x, y) if stat == "cov" else (x,)
    whole = fn(*args, alpha=0.2)
    for j in range(x.shape[1]):
        col = [np.ascontiguousarray(a[:, j]) for a in args]
        np.testing.assert_array_equal(whole[:, j], fn(*col, alpha=0.2))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_times_in_blocks_equal_one_array_of_factors(dtype):
    """With times, advance computes the decay factors block by block (time_steps, 1024
    steps a block) instead of reading an array of them (time_factors): the same bits, for
    series and side-by-side blocks of series, across block edges and missing values."""
    from fastmomentum._ewm_api import new_state
    from fastmomentum._ewm_family import advance, time_factors, time_steps
    rng = np.random.default_rng(25)
    n = 3 * 1024 + 77
    times = np.cumsum(rng.integers(0, 40, n)).astype(np.int64)
    for shape in ((n,), (n, 3)):
        x = rng.standard_normal(shape).astype(dtype)
        y = rng.standard_normal(shape).astype(dtype)
        x[rng.random(shape) < 0.01] = np.nan
        m = 1 if len(shape) == 1 else 3
        for kind, yy in ((0, x), (2, x), (2, y), (3, y)):
            got, want = (advance(kind, x, yy, None, new_state(m), 0.3, 1.0, factors, True,
                                 False, False, False, 1, 0)
                         for factors in (time_steps(times, np.nan, 7.0, 0.3),
                                         time_factors(times, np.nan, 7.0, 0.3)))
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="times of n steps"):
        advance(0, x, x, None, new_state(3), 0.3, 1.0, time_steps(times[:-1], np.nan, 7.0,
                                                                  0.3),
                True, False, False, False, 1, 0)


def _times_cases(rng, n):
    """Times mean cases over several of the factors' blocks (1024 steps): integer and
    float times, steady and bursty steps, repeated times (decay 1), gaps where the decay
    underflows (to 0 by libm's exp2), a negative step (a growth factor), missing
    values."""
    steps = rng.integers(1, 60, n)
    steps[rng.random(n) < 0.05] = 0                       # repeated times
    steps[[n // 5, n // 3]] = [40_000, 2_000_000]         # decays ~1e-241 (50 s), then 0
    steps[n // 2] = -30                                   # growth
    t = pd.to_datetime(np.cumsum(steps), unit="s").values
    x = rng.standard_normal(n) * 3 + 10
    missing = x.copy()
    missing[[1500, 1501, 4000]] = np.nan
    missing[2600] = np.inf
    return t, {"clean": x, "missing": missing}


@pytest.mark.parametrize("adjust", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_times_mean_over_factor_blocks_matches_pandas(adjust, dtype):
    """ewm_mean with times (the factors from the per-target cores, block by block):
    pandas' numbers to 1e-12 across every kind of step, missing values, min_periods past
    the first block."""
    rng = np.random.default_rng(31)
    n = 6 * 1024 + 300
    t, cases = _times_cases(rng, n)
    for x in cases.values():
        x = x.astype(dtype)
        x64 = x.astype(np.float64)
        for kw in (dict(halflife="50s"), dict(halflife="3s", min_periods=1500),
                   dict(halflife="50s", ignore_na=True)):
            kw = dict(kw, adjust=adjust)
            got = fastmomentum.ewm_mean(x, times=t, **kw)
            want = pd.Series(x64).ewm(times=t, **kw).mean().to_numpy()
            assert got.dtype == dtype
            if dtype == np.float32:
                np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
                # (an ulp where pandas' float64 sits at a float32 rounding edge)
                np.testing.assert_allclose(got, want.astype(np.float32), rtol=1.2e-7, atol=0)
            else:
                assert_matches(got, want, x)


@pytest.mark.parametrize("adjust", [True, False])
def test_times_mean_dead_products_same_bits_and_state(adjust):
    """A long times mean: its products of decays (decay, seed, sum_wt2) flush to 0 after
    ~1000 halflives, and the timed loop then runs without them (_timed_run). Outputs and
    the whole state are the bits of the NumPy baseline's recurrence, in one call and in
    chunks whose edges fall before and after the products die; missing values between."""
    from fastmomentum._ewm_api import new_state
    from fastmomentum._ewm_family import advance, time_factors
    rng = np.random.default_rng(33)
    n = 3000
    times = np.cumsum(rng.integers(1, 100, n)).astype(np.int64)
    x = rng.standard_normal(n)
    x[[900, 2200, 2201]] = np.nan
    fills = not adjust                       # pandas' mean with times has com = 1
    for ignore_na in (False, True):
        args = (0.5, 1.0)
        opts = (adjust, ignore_na, False, fills, 0, 0)
        factors = time_factors(times, np.nan, 30.0, 0.5)
        want_state = new_state(1)
        want = baseline._family_advance(0, x[:, None], x[:, None], None, want_state, *args,
                                        factors, *opts)[:, 0]
        assert want_state[[4, 6, 7], 0].tolist() == [0.0, 0.0, 0.0]   # sum_wt2, decay, seed
        state = new_state(1)
        np.testing.assert_array_equal(advance(0, x, x, None, state, *args, factors, *opts),
                                      want)
        np.testing.assert_array_equal(state, want_state)
        state = new_state(1)
        parts = []
        for a, b in zip([0, 5, 400, 1500, 2201], [5, 400, 1500, 2201, n]):
            f = time_factors(times[a:b], float(times[a - 1]) if a else np.nan, 30.0, 0.5)
            parts.append(advance(0, x[a:b], x[a:b], None, state, *args, f, *opts))
        np.testing.assert_array_equal(np.concatenate(parts), want)
        np.testing.assert_array_equal(state, want_state)


@pytest.mark.parametrize("adjust", [True, False])
def test_times_mean_one_shot_equals_stream_bits(adjust):
    """A one-shot times mean gives the bits of an EwmStream fed the same series in chunks
    of any sizes (issue 16.3), also with the series elsewhere in memory: no path of the
    one-shot call may round differently from the stream's recurrence."""
    rng = np.random.default_rng(32)
    n = 5 * 1024 + 17
    t, cases = _times_cases(rng, n)
    for x in cases.values():
        one = fastmomentum.ewm_mean(x, times=t, halflife="20s", adjust=adjust)
        stream = fastmomentum.EwmStream("mean", halflife="20s", times=True, adjust=adjust)
        cuts = [0, 1, 700, 1024, 3001, 3002, n]
        chunks = [stream.update(x[a:b], times=t[a:b]) for a, b in zip(cuts, cuts[1:])]
        np.testing.assert_array_equal(np.concatenate(chunks), one)
        buf = np.empty(n + 1)
        buf[1:] = x
        np.testing.assert_array_equal(
            fastmomentum.ewm_mean(buf[1:], times=t, halflife="20s", adjust=adjust), one)


# ---------------------------------------------------------------------------------------
# pairwise=True

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("stat", ["cov", "corr"])
def test_pairwise_matches_pandas(impl, stat):
    """pairwise=True: pandas' X.ewm(...).cov(Y, pairwise=True) as an (n, my, mx) array,
    each pair with its own missing values; y=x: all pairs of one frame; axis=1; out=."""
    rng = np.random.default_rng(26)
    n = 120
    x = rng.standard_normal((n, 3))
    y = rng.standard_normal((n, 4)) + 0.5 * x[:, :1]
    x[rng.random(x.shape) < 0.08] = np.nan
    y[rng.random(y.shape) < 0.08] = np.inf
    fn = family(impl, stat)
    for kw, extra in ((dict(alpha=0.2), {}),
                      (dict(span=9, adjust=False, min_periods=4),
                       {} if stat == "corr" else dict(bias=True)),
                      (dict(com=3, ignore_na=True), {})):
        for a, b in ((x, y), (x, x)):
            frame_a, frame_b = pd.DataFrame(a), pd.DataFrame(b)
            want = getattr(frame_a.ewm(**kw), stat)(frame_b, pairwise=True, **extra)
            want = want.to_numpy().reshape(n, b.shape[1], a.shape[1])
            ours = dict(kw, **extra)
            got = fn(a, b, pairwise=True, **ours)
            assert got.shape == want.shape
            assert_matches(got, want, np.concatenate([a, b], axis=1))
            np.testing.assert_array_equal(fn(a.T, b.T, pairwise=True, axis=1, **ours), got)
            out = np.full(want.shape, 7.0)
            assert fn(a, b, pairwise=True, out=out, **ours) is out
            np.testing.assert_array_equal(out, got)
    # float32 in, float32 out; one pair equals the pairwise=False call on those columns
    got32 = fn(x.astype(np.float32), y.astype(np.float32), pairwise=True, alpha=0.2)
    assert got32.dtype == np.float32
    np.testing.assert_array_equal(got32[:, 2, 1], fn(x[:, 1].astype(np.float32),
                                                     y[:, 2].astype(np.float32), alpha=0.2))
    # 1-D: pairwise ignored, as pandas for a Series
    s, r = x[:, 0], y[:, 0]
    np.testing.assert_array_equal(fn(s, r, pairwise=True, alpha=0.2), fn(s, r, alpha=0.2))


@pytest.mark.parametrize("impl", IMPLS)
def test_pairwise_errors_write_nothing(impl):
    fn = family(impl, "cov")
    x, y = np.ones((10, 2)), np.ones((10, 3))
    out = np.full((10, 3, 2), 5.0)
    readonly = out.copy()
    readonly.flags.writeable = False
    cases = [
        (dict(x=x, y=y[:9], pairwise=True, alpha=0.5, out=out), ValueError, "as many steps"),
        (dict(x=x, y=y[:, 0], pairwise=True, alpha=0.5, out=out), ValueError, "both be 2-D"),
        (dict(x=x, y=y, pairwise=True, alpha=0.5, out=np.empty((10, 2, 3))), ValueError,
         r"shape \(10, 3, 2\)"),
        (dict(x=x, y=y, pairwise=True, alpha=0.5, out=out.astype(np.float32)), ValueError,
         "float64"),
        (dict(x=x, y=y, pairwise=True, alpha=5.0, out=out), ValueError, "alpha"),
        (dict(x=x, y=y, pairwise=True, axis=2, alpha=0.5, out=out), ValueError, "axis"),
        (dict(x=x, y=y, pairwise="yes", alpha=0.5, out=out), TypeError, "pairwise"),
        (dict(x=x, y=y, pairwise=True, alpha=0.5, out=readonly), ValueError, "writeable"),
    ]
    for kw, error, words in cases:
        with pytest.raises(error, match=words) as info:
            fn(kw.pop("x"), kw.pop("y"), **kw)
        assert str(info.value).startswith("ewm_cov: ")
        np.testing.assert_array_equal(out, 5.0)
    with pytest.raises(ValueError, match="share memory"):
        fn(out[:, 0, :], y, pairwise=True, alpha=0.5, out=out)


@pytest.mark.parametrize("stat", ["var", "std", "cov", "corr", "sum"])
@pytest.mark.parametrize("shape, order", [((2_000, 1029), "C"), ((30_000, 45), "F")])
def test_column_split_equals_baseline_bits_and_pandas(stat, shape, order):
    """A frame large enough to split its series over threads (blocks of whole multiples of
    8 series, each on a state of its own, the last one shorter) runs the split, and gives
    the NumPy baseline's bits (and pandas' values) on 1 and 2 threads, missing values
    included: series side by side (C order: blocks of at least 512 series, each thread
    sweeping part of every row) and series one by one (F order)."""
    from fastmomentum import _threads
    rng = np.random.default_rng(21)
    x = np.asarray(rng.standard_normal(shape), order=order)
    x[rng.random(x.shape) < 0.002] = np.nan
    y = np.asarray(rng.standard_normal(x.shape), order=order) if stat in PAIR else None
    before = fastmomentum.get_num_threads()
    want = call("baseline", stat, x, y, alpha=0.05)
    try:
        for threads in (1, 2):
            fastmomentum.set_num_threads(threads)
            loops = _threads._pool_stats()[0]
            got = call("fastmomentum", stat, x, y, alpha=0.05)
            # a build without OpenMP runs everything on the calling thread
            split = threads > 1 and _threads.HAS_OPENMP
            assert (_threads._pool_stats()[0] > loops) == split
            np.testing.assert_array_equal(got, want)
    finally:
        fastmomentum.set_num_threads(before)
    frame = pd.DataFrame(x).ewm(alpha=0.05)
    ref = getattr(frame, stat)(*([pd.DataFrame(y)] if y is not None else [])).to_numpy()
    assert_matches(want, ref, x)

