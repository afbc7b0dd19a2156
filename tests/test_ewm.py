"""ewm_mean (compiled and NumPy baseline) against pandas ``ewm(...).mean()`` and closed forms."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmomentum
from fastmomentum import baseline

from conftest import on_target, targets_beside_portable

IMPLS = {"fastmomentum": fastmomentum.ewm_mean, "baseline": baseline.ewm_mean}
PARAMS = [dict(com=0.5), dict(span=7), dict(halflife=3.0), dict(alpha=0.5),  # com == 1
          dict(alpha=1.0), dict(alpha=0.02), dict(com=0)]


def pandas_ewm(x, axis=0, **kw):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return pd.Series(x).ewm(**kw).mean().to_numpy()
    if axis == 0:
        return pd.DataFrame(x).ewm(**kw).mean().to_numpy()
    return pd.DataFrame(x.T).ewm(**kw).mean().to_numpy().T


def assert_matches(got, want, x, rtol=1e-12, axis=0, **kw):
    """Same NaN positions; elsewhere every value within ``rtol`` of its condition: the same
    mean of |x| (pandas, with the parameters ``kw`` of ``want``), which bounds |want| and
    every rounding error a sum of weighted values can have (a tolerance from max|x| would
    hide a wrong value where the data is small)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    condition = pandas_ewm(np.abs(np.asarray(x, dtype=np.float64)), axis=axis, **kw)
    err = np.abs(got - want)
    bad = err > rtol * condition
    assert not bad.any(), (
        f"{bad.sum()} of {got.size} values off; worst at {np.unravel_index(np.argmax(err / np.where(condition > 0, condition, 1e-300)), got.shape)}: "
        f"got {got[bad][:3]}, want {want[bad][:3]}, condition {condition[bad][:3]}")


def nan_patterns(n, rng):
    """Series of length n with the missing-value layouts pandas distinguishes."""
    base = rng.standard_normal(n) * 10
    out = {"none": base.copy()}
    x = base.copy()
    x[rng.random(n) < 0.25] = np.nan
    out["random"] = x
    x = base.copy()
    x[: n // 3] = np.nan
    out["leading"] = x
    x = base.copy()
    x[n // 4: n // 2] = np.nan                 # one long gap
    x[-1] = np.nan
    out["gap"] = x
    x = base.copy()
    x[::5] = np.inf                             # pandas treats inf as missing
    x[3 % n] = -np.inf
    out["inf"] = x
    out["all_nan"] = np.full(n, np.nan)
    return out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("param", PARAMS, ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
@pytest.mark.parametrize("n", [1, 2, 37, 300, 20000])
def test_grid_matches_pandas_1d(impl, param, n):
    rng = np.random.default_rng(n)
    for pattern, x in nan_patterns(n, rng).items():
        for adjust in (True, False):
            for ignore_na in (False, True):
                for min_periods in (0, 3):
                    kw = dict(param, adjust=adjust, ignore_na=ignore_na, min_periods=min_periods)
                    got = IMPLS[impl](x, **kw)
                    assert got.dtype == np.float64
                    assert_matches(got, pandas_ewm(x, **kw), x, **kw)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", [(50, 9), (9000, 3), (3, 9000), (300, 300)])
def test_grid_matches_pandas_2d(impl, axis, order, shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    x[rng.random(shape) < 0.1] = np.nan
    x[:, 1] = np.nan                                   # a column with nothing observed
    x[1] = rng.standard_normal(shape[1])               # a fully observed row
    x = np.asarray(x, order=order)
    for adjust in (True, False):
        for ignore_na in (False, True):
            kw = dict(alpha=0.15, adjust=adjust, ignore_na=ignore_na, min_periods=2)
            assert_matches(IMPLS[impl](x, axis=axis, **kw), pandas_ewm(x, axis=axis, **kw), x,
                           axis=axis, **kw)
    clean = np.asarray(rng.standard_normal(shape), order=order)   # the no-NaN fast paths
    for adjust in (True, False):
        kw = dict(span=20, adjust=adjust)
        assert_matches(IMPLS[impl](clean, axis=axis, **kw), pandas_ewm(clean, axis=axis, **kw),
                       clean, axis=axis, **kw)


@pytest.mark.parametrize("impl", IMPLS)
def test_seed_example_beta_09(impl):
    """The seed: v_t = 0.9*v_{t-1} + 0.1*x_t over 0..9."""
    x = np.arange(10.0)
    ema, zero_started, expected_adjusted = x[0], 0.0, []
    expected = [ema]
    for t, value in enumerate(x):
        if t:
            ema = 0.9 * ema + 0.1 * value
            expected.append(ema)
        zero_started = 0.9 * zero_started + 0.1 * value
        expected_adjusted.append(zero_started / (1 - 0.9 ** (t + 1)))   # bias correction
    np.testing.assert_allclose(IMPLS[impl](x, alpha=0.1, adjust=False), expected, rtol=1e-14)
    np.testing.assert_allclose(IMPLS[impl](x, alpha=0.1), expected_adjusted, rtol=1e-14)
    np.testing.assert_allclose(IMPLS[impl](x, alpha=0.1), pandas_ewm(x, alpha=0.1), rtol=1e-14)


def exact_mean(x, t, alpha, adjust):
    """pandas' mean at t of a series without missing values, from its definition: fsum of
    the weighted values (weights (1-alpha)^k by pow, no recurrence), terms below 1e-40
    dropped. As in pandas, b = 1-alpha is rounded and adjust=False weighs x_s by alpha*b^k
    (for tiny alpha, alpha + b != 1 by an ulp, which matters at 1e-11 over 1/alpha steps)."""
    b = 1.0 - alpha
    lags = np.arange(t + 1)
    weights = np.power(b, lags)
    keep = weights > 1e-40
    terms = weights[keep] * x[t - lags[keep]]
    if adjust:
        return math.fsum(terms) / math.fsum(weights[keep])
    if not keep[-1]:
        return math.fsum(terms * alpha)
    return math.fsum(terms[:-1] * alpha) + terms[-1]       # x_0 enters with weight b^t


@pytest.mark.parametrize("adjust", [True, False])
@pytest.mark.parametrize("alpha", [0.3, 1e-3, 2e-6])
def test_long_series_no_drift(adjust, alpha):
    n = 3_000_000
    rng = np.random.default_rng(7)
    x = rng.standard_normal(n) + 5.0
    got = fastmomentum.ewm_mean(x, alpha=alpha, adjust=adjust)
    for t in [0, 1, 1000, 261_119, 261_120, 261_121, 1_500_000, n - 1]:
        want = exact_mean(x, t, alpha, adjust)
        assert abs(got[t] - want) <= 1e-12 * abs(want), (t, got[t], want)
    if alpha >= 1e-3:   # tiny alphas: pandas' own recurrence drifts by ~eps/alpha
        assert_matches(got, pandas_ewm(x, alpha=alpha, adjust=adjust), x, alpha=alpha,
                       adjust=adjust)
    assert_matches(baseline.ewm_mean(x[:200_000], alpha=alpha, adjust=adjust),
                   got[:200_000], x[:200_000], alpha=alpha, adjust=adjust)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("alpha", [0.3, 0.01, 1e-3])
@pytest.mark.parametrize("shape", [(200_000, 4), (150_000, 12)])
def test_series_side_by_side_scan_across_row_superblocks(dtype, alpha, shape):
    """Series side by side without missing values are scanned in superblocks of rows (each
    from a zero carry, then its leading rows again with the true carry), a few series one
    by one (4), more across the row (12): pandas' numbers at every row, C-ordered along
    axis 0 and F-ordered along axis 1, with min_periods; a NaN in the last row sends the
    frame to pandas' loop."""
    rng = np.random.default_rng(21)
    x = (rng.standard_normal(shape) * 10 + 3).astype(dtype)
    rtol = 1e-12 if dtype == np.float64 else 2e-7
    for adjust in (True, False):
        kw = dict(alpha=alpha, adjust=adjust, min_periods=5)
        want = pandas_ewm(x, **kw)
        assert_matches(fastmomentum.ewm_mean(x, **kw), want, x, rtol, **kw)
        transposed = np.asfortranarray(x.T)
        assert_matches(fastmomentum.ewm_mean(transposed, axis=1, **kw), want.T, transposed,
                       rtol, axis=1, **kw)
    messy = x.copy()
    messy[-1, 2] = np.nan
    assert_matches(fastmomentum.ewm_mean(messy, alpha=alpha), pandas_ewm(messy, alpha=alpha),
                   messy, rtol, alpha=alpha)


@pytest.mark.parametrize("adjust", [True, False])
@pytest.mark.parametrize("layout", ["series", "3 side by side", "40 side by side"])
def test_a_huge_carry_is_kept_while_it_matters(layout, adjust, restore_threads):
    """Issue 11.1: a superblock of 1e35 then ordinary data. The carry out of it outweighs
    the data after it long after its weight b^k fell below 1e-30 (where pass 2 used to stop:
    relative error 718 against pandas); the fix-up now runs while the carry's term is not
    negligible against the sum it is added to. Series: superblocks of 261120 values; side
    by side: superblocks of 87040 rows (3 series) and 54960 (40), at alpha=0.01."""
    rng = np.random.default_rng(0)
    if layout == "series":
        alpha, x = 1e-3, np.concatenate([np.full(261120, 1e35), rng.standard_normal(600000)])
    else:
        m = int(layout.split()[0])
        rows = 87040 if m == 3 else 54960
        alpha = 1e-2
        x = np.concatenate([np.full((rows, m), 1e35), rng.standard_normal((60000, m))])
    kw = dict(alpha=alpha, adjust=adjust)
    got = fastmomentum.ewm_mean(x, **kw)
    # rtol: the carry's term is b^k*carry with b^k from rounded powers of b (k ~ 1e5: ~1e-12)
    assert_matches(got, pandas_ewm(x, **kw), x, rtol=1e-11, **kw)
    for threads in (1, 3):          # the fix-up's length depends on the data, not on threads
        fastmomentum.set_num_threads(threads)
        assert np.array_equal(fastmomentum.ewm_mean(x, **kw), got)
    # the same frame F-ordered along axis 1
    if x.ndim == 2:
        t = np.asfortranarray(x.T)
        assert_matches(fastmomentum.ewm_mean(t, axis=1, **kw), pandas_ewm(x, **kw).T, t,
                       rtol=1e-11, axis=1, **kw)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_series_in_two_dimensions_is_a_series(dtype):
    """A frame of one column (or one row along axis 1) is scanned as the 1-D series it is:
    the same bits, C- or F-ordered."""
    x = np.random.default_rng(22).standard_normal(50_000).astype(dtype)
    for adjust in (True, False):
        want = fastmomentum.ewm_mean(x, span=30, adjust=adjust, min_periods=3)
        for two_d, axis in ((x[:, None], 0), (np.asfortranarray(x[:, None]), 0),
                            (x[None, :], 1), (np.asfortranarray(x[None, :]), 1)):
            got = fastmomentum.ewm_mean(two_d, span=30, adjust=adjust, min_periods=3, axis=axis)
            assert np.array_equal(got.reshape(-1), want, equal_nan=True)


@pytest.mark.parametrize("shape,axis", [((3_000_000,), 0), ((400, 1000), 0), ((200_000, 4), 0),
                                        ((6, 600_000), 1), ((40, 30_000), 1)])
@pytest.mark.parametrize("alpha", [0.3, 1e-3])
def test_thread_count_does_not_change_bits(shape, axis, alpha, restore_threads):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    messy = x.copy()
    messy.flat[::997] = np.nan
    results = []
    for n in (1, 2, 3):
        fastmomentum.set_num_threads(n)
        # fresh results, and into out= (series side by side then split across threads)
        results.append([fastmomentum.ewm_mean(v, alpha=alpha, adjust=a, axis=axis)
                        for v in (x, messy) for a in (True, False)]
                       + [fastmomentum.ewm_mean(v, alpha=alpha, adjust=a, axis=axis,
                                                out=np.empty_like(v))
                          for v in (x, messy) for a in (True, False)])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((300,), 0), ((300,), -1), ((40, 7), 0), ((40, 7), 1),
                                        ((7, 40), -1), ((0, 3), 0)])
@pytest.mark.parametrize("kw", [dict(alpha=0.3), dict(alpha=1), dict(span=10), dict(span=1.5),
                                dict(com=0), dict(com=2.5), dict(alpha=0.2, adjust=False),
                                dict(com=1.0, adjust=False, min_periods=4, ignore_na=True)],
                         ids=str)
def test_plain_arguments_take_the_c_checks_with_the_validators_bits(dtype, shape, axis, kw):
    """Python floats/ints and an ndarray are checked in C; NumPy scalars (and lists) go
    through fastmomentum._validation: same conversions, same bits, fresh or into out."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal(shape).astype(dtype)
    if x.size:
        x.flat[5] = np.nan
    numpy_kw = {k: (np.float64(v) if isinstance(v, float) else np.int64(v))
                if k in ("alpha", "span", "com", "min_periods") else v for k, v in kw.items()}
    fast = fastmomentum.ewm_mean(x, axis=axis, **kw)
    slow = fastmomentum.ewm_mean(x, axis=np.int64(axis), **numpy_kw)
    assert fast.dtype == slow.dtype == dtype and fast.flags.c_contiguous
    assert np.array_equal(fast, slow, equal_nan=True)
    out = np.full(shape, 7.0, dtype)
    assert fastmomentum.ewm_mean(x, axis=axis, out=out, **kw) is out
    assert np.array_equal(out, slow, equal_nan=True)
    if x.size:
        assert_matches(fast, pandas_ewm(x, axis=axis % x.ndim, **kw), x,
                       rtol=2e-7 if dtype == np.float32 else 1e-12, axis=axis % x.ndim, **kw)


@pytest.mark.parametrize("adjust", [True, False])
@pytest.mark.parametrize("shape", [(4_200_001,), (70_001, 64)])
def test_results_over_16mb_are_streamed_exactly(shape, adjust):
    """An ``out`` of 16 MB and more is written with streaming stores (src/cores/fm_store.h), a
    fresh result with ordinary ones: the same bits, into a misaligned ``out`` too (every
    head length before the aligned part), as pandas' numbers; float32 results equal the
    float64 ones rounded."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape)
    if x.ndim == 2:
        x[5, 3] = np.nan            # the frame's rows then take pandas' per-series division
    kw = dict(alpha=0.01, adjust=adjust)
    want = fastmomentum.ewm_mean(x, **kw)
    assert_matches(want, pandas_ewm(x, **kw), x, **kw)
    for offset in (1, 2):
        out = np.empty(x.size + offset)[offset:].reshape(shape)
        assert fastmomentum.ewm_mean(x, out=out, **kw) is out
        assert np.array_equal(out, want, equal_nan=True)
    x32 = x.astype(np.float32)
    want32 = fastmomentum.ewm_mean(x32.astype(np.float64), **kw).astype(np.float32)
    for offset in range(4):
        out = np.empty(x.size + offset, np.float32)[offset:].reshape(shape)
        fastmomentum.ewm_mean(x32, out=out, **kw)
        assert np.array_equal(out, want32, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_target_computes_the_portable_bits(dtype):
    """Each target beside the portable one (AVX2) against the portable one (explicit fma
    in both), in and out of cache."""
    rng = np.random.default_rng(14)
    cases = [rng.standard_normal(n).astype(dtype) for n in (5000, 300_000, 4_200_001)]
    cases.append(rng.standard_normal((3000, 40)).astype(dtype))   # side by side: the scan
    cases.append(cases[-1].copy())
    cases[-1][7, 3] = np.nan                                         # and pandas' loop
    for target in targets_beside_portable():
        for x in cases:
            for adjust in (True, False):
                want = on_target("portable", fastmomentum.ewm_mean, x, alpha=0.05,
                                 adjust=adjust)
                got = on_target(target, fastmomentum.ewm_mean, x, alpha=0.05, adjust=adjust)
                assert np.array_equal(got, want, equal_nan=True), (target, x.shape, adjust)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [50, 30000])
def test_float32_stays_float32(impl, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    x[5, 1] = np.nan
    for adjust in (True, False):
        got = IMPLS[impl](x, alpha=0.05, adjust=adjust)
        assert got.dtype == np.float32
        # computed in float64, then rounded: within one float32 rounding of pandas
        want = pandas_ewm(x, alpha=0.05, adjust=adjust).astype(np.float32)
        assert_matches(got, want, x, rtol=2e-7, alpha=0.05, adjust=adjust)


@pytest.mark.parametrize("impl", IMPLS)
def test_integers_and_bools_give_float64(impl):
    ints = np.arange(20, dtype=np.int32) % 7
    got = IMPLS[impl](ints, span=4)
    assert got.dtype == np.float64
    assert_matches(got, pandas_ewm(ints, span=4), ints, span=4)
    flags = ints > 3
    assert_matches(IMPLS[impl](flags, span=4), pandas_ewm(flags.astype(float), span=4), flags,
                   span=4)
    assert_matches(IMPLS[impl]([1, 2, 3.5], alpha=0.5), pandas_ewm([1, 2, 3.5], alpha=0.5),
                   [1, 2, 3.5], alpha=0.5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("order", ["C", "F"])
def test_out_is_filled_and_returned(impl, order):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 4))
    out = np.full(x.shape, -1.0, order=order)
    got = IMPLS[impl](x, alpha=0.1, out=out)
    assert got is out
    assert_matches(out, pandas_ewm(x, alpha=0.1), x, alpha=0.1)
    series = x[:, 0].copy()
    shifted = np.empty(series.size + 1)[1:]     # only 8-byte aligned
    shifted.fill(-1.0)
    assert IMPLS[impl](series, alpha=0.1, out=shifted) is shifted
    assert_matches(shifted, fastmomentum.ewm_mean(series, alpha=0.1), series, alpha=0.1)
    strided = x[::2, ::2]                       # non-contiguous input is read as is
    assert_matches(IMPLS[impl](strided, alpha=0.1), pandas_ewm(strided, alpha=0.1), strided,
                   alpha=0.1)
    assert IMPLS[impl](np.empty((0, 3)), alpha=0.1).shape == (0, 3)


BAD_CALLS = [
    (dict(), ValueError, "Must pass one of comass, span, halflife, or alpha"),
    (dict(com=1, span=2), ValueError, "comass, span, halflife, and alpha are mutually exclusive"),
    (dict(com=-0.5), ValueError, "comass must satisfy: comass >= 0"),
    (dict(span=0.5), ValueError, "span must satisfy: span >= 1"),
    (dict(halflife=0), ValueError, "halflife must satisfy: halflife > 0"),
    (dict(alpha=0), ValueError, "alpha must satisfy: 0 < alpha <= 1"),
    (dict(alpha=1.5), ValueError, "alpha must satisfy: 0 < alpha <= 1"),
    (dict(alpha=float("nan")), ValueError, "`alpha` must be a finite number"),
    (dict(span="3"), TypeError, "`span` must be a real number; got str"),
    (dict(alpha=0.1, min_periods=-1), ValueError, "`min_periods` must be an integer >= 0"),
    (dict(alpha=0.1, min_periods=1.5), ValueError, "`min_periods` must be an integer >= 0"),
    (dict(alpha=0.1, axis=2), ValueError, "`axis` must be an integer in [-2, 1]"),
    # issue 11.14: beyond a float or a C integer (were a bare OverflowError)
    (dict(com=10**400), ValueError, "`com` must be a finite number (one a float64 holds); got 1"),
    (dict(span=10**400), ValueError, "`span` must be a finite number"),
    (dict(halflife=-10**400), ValueError, "`halflife` must be a finite number"),
    (dict(alpha=10**400), ValueError, "`alpha` must be a finite number"),
    (dict(alpha=0.1, min_periods=2**70), ValueError,
     "`min_periods` must be an integer in [0, 2**62]; got 1180591620717411303424"),
    (dict(alpha=0.1, min_periods=np.uint64(2**63)), ValueError,
     "`min_periods` must be an integer in [0, 2**62]"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kwargs,error,message", BAD_CALLS)
def test_bad_parameters(impl, kwargs, error, message):
    x = np.arange(6.0).reshape(3, 2)
    out = np.full_like(x, 7.0)
    with pytest.raises(error, match="^ewm_mean: ") as info:
        IMPLS[impl](x, out=out, **kwargs)
    assert message in str(info.value)
    assert (out == 7.0).all()                   # nothing written


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_arrays(impl):
    f = IMPLS[impl]
    x = np.arange(12.0).reshape(3, 4)
    cases = [
        (lambda: f(np.array(["a", "b"]), alpha=0.1), TypeError, "float32, float64, integer or bool"),
        (lambda: f(np.array([1.0, None]), alpha=0.1), TypeError, "dtype=object"),
        (lambda: f(np.array([1 + 2j]), alpha=0.1), TypeError, "complex"),
        (lambda: f([[1.0], [2.0, 3.0]], alpha=0.1), TypeError, "1-D or 2-D array of numbers"),
        (lambda: f(np.zeros((2, 2, 2)), alpha=0.1), ValueError, "shape=(2, 2, 2)"),
        (lambda: f(np.float64(3.0), alpha=0.1), ValueError, "shape=()"),
        (lambda: f(x, alpha=0.1, out=np.empty((3, 4), np.float32)), TypeError, "float64"),
        (lambda: f(x, alpha=0.1, out=np.empty((4, 3))), ValueError, "shape of `x` (3, 4)"),
        (lambda: f(x, alpha=0.1, out=np.empty((3, 8))[:, ::2]), TypeError, "not C-contiguous"),
        (lambda: f(x, alpha=0.1, out=x), ValueError, "must not share memory with `x`"),
        (lambda: f(x, alpha=0.1, out=[0.0] * 12), TypeError, "got list"),
    ]
    readonly = np.empty((3, 4))
    readonly.flags.writeable = False
    cases.append((lambda: f(x, alpha=0.1, out=readonly), TypeError, "read-only"))
    for call, error, message in cases:
        with pytest.raises(error, match="^ewm_mean: ") as info:
            call()
        assert message in str(info.value), str(info.value)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(1000,), (250, 4)])
def test_out_sharing_memory_with_any_x_is_refused(impl, shape):
    """Issue 11.2: the overlap is checked on ``x`` as an array, whatever was passed (a
    memoryview or a tensor of ``out``'s memory used to be computed in place, wrong), and
    exactly: a strided ``x`` reaches past its ``nbytes`` (was missed), while one that only
    interleaves with ``out`` shares nothing and is computed."""
    torch = pytest.importorskip("torch")
    f = IMPLS[impl]
    b = np.random.default_rng(4).standard_normal(shape)
    before = b.copy()
    for kind, x in {"memoryview": memoryview(b), "tensor": torch.from_numpy(b)}.items():
        with pytest.raises(ValueError, match="^ewm_mean: `out` must not share memory with `x`"):
            f(x, alpha=0.01, out=b)
        assert np.array_equal(b, before), kind          # nothing written
    flat = b.reshape(-1)
    strided = flat[::2]             # its nbytes end at flat[n/2], its elements at flat[n-2]
    with pytest.raises(ValueError, match="must not share memory with `x`"):
        f(strided, alpha=0.01, out=flat[flat.size // 2:])
    assert np.array_equal(b, before)
    wide = np.zeros(100)
    interleaved, between = wide[::20], wide[1:6]        # bounds overlap, no byte shared
    wide[::20] = np.arange(5.0)
    assert f(interleaved, alpha=0.5, out=between) is between
    assert_matches(between, pandas_ewm(np.arange(5.0), alpha=0.5), np.arange(5.0), alpha=0.5)
    as_list = b.tolist()                                # a list is fresh memory: computed
    assert f(as_list, alpha=0.01, out=b) is b
    assert_matches(b, pandas_ewm(before, alpha=0.01), before, alpha=0.01)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
@pytest.mark.parametrize("shape,axis", [((40,), 0), ((3000,), 0), ((300, 5), 0), ((5, 300), 1),
                                        ((9000, 10), 0)])
def test_masked_values_are_missing_as_in_pandas(impl, dtype, shape, axis):
    """Issue 11.3: a masked value is missing, as pandas makes it in a Series built from the
    masked array: the same numbers as pandas on the data with NaN there (was: the mask
    ignored), with every option; the data is not changed; a masked ``out`` is refused."""
    rng = np.random.default_rng(9)
    data = (rng.standard_normal(shape) * 10).astype(dtype)
    mask = rng.random(shape) < 0.2
    masked = np.ma.array(data, mask=mask)
    with_nan = np.where(mask, np.nan, data.astype(np.float64))
    assert pd.Series(np.ma.array([1.0, 2.0, 3.0], mask=[0, 1, 0])).isna().tolist() == \
        [False, True, False]                            # pandas' own reading of a mask
    rtol = 2e-7 if dtype == np.float32 else 1e-12
    for kw in (dict(alpha=0.1), dict(span=5, adjust=False), dict(com=1, adjust=False),
               dict(halflife=3.0, ignore_na=True, min_periods=3)):
        got = IMPLS[impl](masked, axis=axis, **kw)
        assert type(got) is np.ndarray and got.dtype == (np.float32 if dtype == np.float32
                                                         else np.float64)
        want = pandas_ewm(with_nan, axis=axis, **kw)
        assert_matches(got, want.astype(got.dtype), with_nan, rtol, axis=axis, **kw)
    assert np.array_equal(masked.data, data) and np.array_equal(masked.mask, mask)
    unmasked = np.ma.array(data)                        # nomask: the plain data
    assert np.array_equal(IMPLS[impl](unmasked, alpha=0.1, axis=axis),
                          IMPLS[impl](data, alpha=0.1, axis=axis), equal_nan=True)
    result_dtype = np.float32 if dtype == np.float32 else np.float64
    out = np.ma.array(np.zeros(shape, result_dtype))
    with pytest.raises(TypeError, match="^ewm_mean: `out` must be .*not a masked array"):
        IMPLS[impl](data, alpha=0.1, axis=axis, out=out)


finite_floats = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), rows=st.integers(1, 60), cols=st.integers(1, 5), two_d=st.booleans(),
       dtype=st.sampled_from(["float64", "float32", "int64"]),
       alpha=st.floats(0.001, 1.0), adjust=st.booleans(), ignore_na=st.booleans(),
       min_periods=st.integers(0, 4), axis=st.integers(0, 1), nan_rate=st.sampled_from([0, 0.3]))
def test_hypothesis_matches_pandas(data, rows, cols, two_d, dtype, alpha, adjust, ignore_na,
                                   min_periods, axis, nan_rate):
    shape = (rows, cols) if two_d else (rows,)
    values = np.array(data.draw(st.lists(finite_floats, min_size=rows * cols,
                                         max_size=rows * cols)))[: np.prod(shape)]
    x = values.reshape(shape).astype(dtype)
    if nan_rate and dtype != "int64":
        mask = np.array(data.draw(st.lists(st.booleans(), min_size=x.size, max_size=x.size)))
        x.reshape(-1)[mask] = np.nan
    axis = axis if two_d else 0
    kw = dict(alpha=alpha, adjust=adjust, ignore_na=ignore_na, min_periods=min_periods)
    want = pandas_ewm(x, axis=axis, **kw)
    rtol = 1e-12 if dtype != "float32" else 2e-7
    for impl in IMPLS.values():
        got = impl(x, axis=axis, **kw)
        assert got.dtype == (np.float32 if dtype == "float32" else np.float64)
        assert_matches(got, want if dtype != "float32" else want.astype(np.float32), x,
                       rtol=rtol, axis=axis, **kw)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(2, 40_000), cols=st.integers(1, 6),
       layout=st.sampled_from(["series", "C axis 0", "F axis 1", "C axis 1"]),
       dtype=st.sampled_from(["float64", "float32"]), alpha=st.floats(0.002, 0.999),
       adjust=st.booleans(), min_periods=st.integers(0, 20),
       nan_at=st.one_of(st.none(), st.floats(0.0, 1.0)), scale=st.sampled_from([1e-3, 1.0, 1e6]))
def test_hypothesis_blocked_scans_match_pandas(seed, rows, cols, layout, dtype, alpha, adjust,
                                               min_periods, nan_at, scale):
    """The blocked scans (a series from 128 values on, side by side from 8704) over random
    sizes, layouts, dtypes and parameters, and with a NaN somewhere (pandas' loop then)."""
    rng = np.random.default_rng(seed)
    size = max(rows * cols, 128) if layout == "series" else rows * cols
    x = (rng.standard_normal(size) * scale + scale).astype(dtype)
    if nan_at is not None:
        x[int(nan_at * (size - 1))] = np.nan
    if layout == "series":
        axis = 0
    else:
        x = x.reshape(rows, cols)
        if layout == "F axis 1":
            x = np.asfortranarray(x.T)
        axis = 0 if layout == "C axis 0" else 1
    kw = dict(alpha=alpha, adjust=adjust, min_periods=min_periods)
    want = pandas_ewm(x, axis=axis, **kw)
    got = fastmomentum.ewm_mean(x, axis=axis, **kw)
    assert got.dtype == x.dtype and got.shape == x.shape
    if dtype == "float32":
        assert_matches(got, want.astype(np.float32), x, rtol=2e-7, axis=axis, **kw)
    else:
        assert_matches(got, want, x, axis=axis, **kw)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       shape=st.one_of(st.tuples(st.integers(0, 300)),
                       st.tuples(st.integers(0, 120), st.integers(0, 6)),
                       st.tuples(st.integers(128, 4000)),               # the blocked scans
                       st.tuples(st.integers(1100, 3000), st.integers(8, 12))),
       missing=st.sampled_from(["none", "nan", "inf", "nan and inf", "leading nan"]),
       data_scale=st.sampled_from(["normal", "mixed scales", "spike"]),
       param=st.sampled_from(["com", "span", "halflife", "alpha"]),
       param_value=st.floats(0.0, 1.0),
       adjust=st.booleans(), ignore_na=st.booleans(), min_periods=st.integers(0, 5),
       dtype=st.sampled_from([np.float64, np.float32]), axis=st.integers(0, 1),
       order=st.sampled_from("CF"), use_out=st.booleans(), out_order=st.sampled_from("CF"))
def test_fuzz_against_pandas(seed, shape, missing, data_scale, param, param_value, adjust,
                             ignore_na, min_periods, dtype, axis, order, use_out, out_order):
    """Every option together, against pandas value by value (both implementations): sizes
    0, 1 and up (a series and series side by side on the blocked scans too), NaN/inf
    layouts, data of mixed magnitude, every way to give the smoothing, either axis and
    memory order, fresh results and out=."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if data_scale == "mixed scales":
        x *= 10.0 ** rng.uniform(-6, 6, shape)
    elif data_scale == "spike" and x.size:
        x.reshape(-1)[: max(1, x.size // 3)] *= 1e30       # then ordinary data
    flat = x.reshape(-1)
    if "nan" in missing and missing != "leading nan":
        flat[rng.random(x.size) < 0.2] = np.nan
    if "inf" in missing:
        flat[rng.random(x.size) < 0.1] = rng.choice([np.inf, -np.inf])
    if missing == "leading nan":
        flat[: x.size // 4] = np.nan
    x = np.asarray(x.astype(dtype), order=order)
    axis = axis if x.ndim == 2 else 0
    # param_value in [0, 1] mapped onto each parameter's range (alpha 1e-4..1)
    value = {"com": 1e3 * param_value ** 3, "span": 1 + 1e3 * param_value ** 3,
             "halflife": 1e-2 + 1e3 * param_value ** 3,
             "alpha": max(param_value, 1e-4)}[param]
    kw = {param: value, "adjust": adjust, "ignore_na": ignore_na, "min_periods": min_periods}
    want = pandas_ewm(x, axis=axis, **kw) if x.size else np.empty(x.shape)
    for impl in IMPLS.values():
        out = None
        if use_out:
            out = np.full(x.shape, 7.0, dtype=dtype, order=out_order)
        got = impl(x, axis=axis, out=out, **kw)
        assert got.dtype == dtype and got.shape == x.shape
        if use_out:
            assert got is out
        if x.size:
            assert_matches(got, want.astype(dtype), x, rtol=2e-7 if dtype == np.float32
                           else 1e-11, axis=axis, **kw)
