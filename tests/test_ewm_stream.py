"""EwmStream: chunking bit-identity, state round trips, combining chunk states; and
fastmomentum.dask on the local and the distributed scheduler."""
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmomentum
from fastmomentum import baseline

STATS = ["mean", "var", "std", "cov", "corr", "sum"]
PAIR = {"cov", "corr"}
#: the state fields each statistic uses (mean/sum carry no second mean or co-moment)
USED = {"mean": (0, 3, 5), "sum": (0, 5)}


def _data(n, m, seed, missing=0.1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, m)) * 2 + 5
    y = rng.standard_normal((n, m)) + x
    x[rng.random((n, m)) < missing] = np.nan
    y[rng.random((n, m)) < missing / 2] = np.inf
    return x, y, np.cumsum(rng.random(n) + 0.01)


def _options(stat, adjust, ignore_na, timed):
    adjust = adjust or stat == "sum"
    kw = dict(adjust=adjust, ignore_na=ignore_na, min_periods=2)
    kw.update(halflife=3.0) if timed else kw.update(alpha=0.05)
    return kw


def _update(stream, stat, x, y, t):
    args = (x, y) if stat in PAIR else (x,)
    return stream.update(*args, times=t)


@settings(max_examples=40, deadline=None)
@given(stat=st.sampled_from(STATS), n=st.integers(0, 300), m=st.integers(1, 3),
       adjust=st.booleans(), ignore_na=st.booleans(), timed=st.booleans(),
       seed=st.integers(0, 2**16), cuts=st.lists(st.integers(0, 300), max_size=8),
       f32=st.booleans())
def test_chunks_bit_identical_to_one_pass(stat, n, m, adjust, ignore_na, timed, seed, cuts,
                                          f32):
    timed = timed and stat != "sum"
    x, y, t = _data(n, m, seed)
    if f32:
        x, y = x.astype(np.float32), y.astype(np.float32)
    kw = _options(stat, adjust, ignore_na, timed)
    tt = t if timed else None
    one = _update(fastmomentum.EwmStream(stat, times=timed, **kw), stat, x, y, tt)
    assert one.dtype == x.dtype
    if not timed and stat != "mean":
        fn = getattr(fastmomentum, f"ewm_{stat}")
        args = (x, y) if stat in PAIR else (x,)
        np.testing.assert_array_equal(fn(*args, **kw), one)
    if stat == "mean" and not timed:
        # the stream's recurrence against ewm_mean's blocked scan: to rounding
        np.testing.assert_allclose(one, fastmomentum.ewm_mean(x, **kw), rtol=1e-12, atol=1e-12)
    bounds = [0, *sorted(c for c in cuts if c <= n), n]
    stream = fastmomentum.EwmStream(stat, times=timed, **kw)
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        # every chunk from a state that went through state_dict and pickle (a restart)
        state = pickle.loads(pickle.dumps(stream.state_dict()))
        stream = fastmomentum.EwmStream(stat, times=timed, **kw).load_state_dict(state)
        parts.append(_update(stream, stat, x[a:b], y[a:b], None if tt is None else tt[a:b]))
    np.testing.assert_array_equal(np.concatenate(parts), one)


def _fresh_states(stat, kw, timed, x, y, t, bounds):
    states = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        s = fastmomentum.EwmStream(stat, times=timed, **kw)
        _update(s, stat, x[a:b], y[a:b], t[a:b] if timed else None)
        states.append(s.state_dict())
    return states


def _assert_states_close(got, want, stat):
    for a, b in zip(got["states"], want["states"]):
        for f in USED.get(stat, range(6)):
            np.testing.assert_allclose(a[f], b[f], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("stat", STATS)
@pytest.mark.parametrize("adjust", [True, False])
@pytest.mark.parametrize("ignore_na", [False, True])
@pytest.mark.parametrize("timed", [False, True])
def test_combine_is_associative_and_equals_one_pass(stat, adjust, ignore_na, timed):
    if stat == "sum" and (timed or not adjust):
        pytest.skip("pandas has no sum with times or adjust=False")
    x, y, t = _data(900, 3, 1)
    x[100:160] = np.nan                          # a chunk seeing nothing
    kw = _options(stat, adjust, ignore_na, timed)
    whole = fastmomentum.EwmStream(stat, times=timed, **kw)
    _update(whole, stat, x, y, t if timed else None)
    bounds = [0, 1, 90, 120, 150, 400, 401, 700, 900]
    states = _fresh_states(stat, kw, timed, x, y, t, bounds)
    combine = fastmomentum.EwmStream.combine
    left = states[0]
    for s in states[1:]:
        left = combine(left, s)

    def tree(items):
        if len(items) == 1:
            return items[0]
        half = len(items) // 2
        return combine(tree(items[:half]), tree(items[half:]))
    right = states[-1]
    for s in states[-2::-1]:
        right = combine(s, right)
    for merged in (left, tree(states), right):
        _assert_states_close(merged, whole.state_dict(), stat)
        assert merged["steps"] == 900
    # resuming from a combined state continues the series to rounding
    more_x, more_y, more_t = _data(50, 3, 2)
    resumed = fastmomentum.EwmStream(stat, times=timed, **kw).load_state_dict(left)
    got = _update(resumed, stat, more_x, more_y, t[-1] + more_t if timed else None)
    want = _update(whole, stat, more_x, more_y, t[-1] + more_t if timed else None)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


def test_stream_matches_pandas_and_baseline():
    x, y, _ = _data(500, 2, 3)
    s = fastmomentum.EwmStream("corr", span=10)
    b = baseline.EwmStream("corr", span=10)
    got = np.concatenate([s.update(x[:200], y[:200]), s.update(x[200:], y[200:])])
    np.testing.assert_array_equal(got, np.concatenate([b.update(x[:200], y[:200]),
                                                       b.update(x[200:], y[200:])]))
    want = pd.DataFrame(x).ewm(span=10).corr(pd.DataFrame(y)).to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_stream_errors():
    with pytest.raises(ValueError, match="EwmStream: `stat` must be one of"):
        fastmomentum.EwmStream("median", alpha=0.5)
    with pytest.raises(ValueError, match="Must pass one of"):
        fastmomentum.EwmStream("var")
    s = fastmomentum.EwmStream("cov", alpha=0.5)
    with pytest.raises(TypeError, match="`y` is required"):
        s.update(np.ones(3))
    s.update(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="this stream has 2 series"):
        s.update(np.ones((3, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="load_state_dict: the state is of"):
        fastmomentum.EwmStream("cov", alpha=0.4).load_state_dict(s.state_dict())
    timed = fastmomentum.EwmStream("mean", halflife="1s", times=True)
    with pytest.raises(TypeError, match="pass the chunk's `times`"):
        timed.update(np.ones(3))


# ---------------------------------------------------------------------------------------
# dask

da = pytest.importorskip("dask.array")


@pytest.mark.parametrize("stat", STATS)
def test_dask_equals_in_memory(stat):
    import fastmomentum.dask as fmd
    x, y, t = _data(700, 5, 4)
    dx, dy = da.from_array(x, chunks=(113, 3)), da.from_array(y, chunks=(113, 3))
    args = (dx, dy) if stat in PAIR else (dx,)
    want = base = _update(fastmomentum.EwmStream(stat, alpha=0.1), stat, x, y, None)
    got = getattr(fmd, f"ewm_{stat}")(*args, alpha=0.1)
    assert got.chunks == dx.chunks           # no rechunking
    np.testing.assert_allclose(got.compute(), want, rtol=1e-12, atol=1e-12)
    exact = getattr(fmd, f"ewm_{stat}")(*args, alpha=0.1, exact=True).compute()
    np.testing.assert_array_equal(exact, want)
    if stat != "sum":
        timed = getattr(fmd, f"ewm_{stat}")(*(a[:, 0] for a in args), halflife=2.0, times=t)
        want = _update(fastmomentum.EwmStream(stat, halflife=2.0, times=True), stat,
                       x[:, 0], y[:, 0], t)
        np.testing.assert_allclose(timed.compute(), want, rtol=1e-12, atol=1e-12)
    rows = getattr(fmd, f"ewm_{stat}")(*(a.T for a in args), alpha=0.1, axis=1)
    np.testing.assert_allclose(rows.compute(), base.T, rtol=1e-12, atol=1e-12)


def test_dask_distributed_two_processes():
    distributed = pytest.importorskip("distributed")
    import fastmomentum.dask as fmd
    x, y, _ = _data(4000, 3, 5)
    dx, dy = da.from_array(x, chunks=(500, 3)), da.from_array(y, chunks=(500, 3))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  silence_logs=40) as cluster, \
            distributed.Client(cluster, timeout="60s") as client:
        futures = client.compute([fmd.ewm_var(dx, span=20), fmd.ewm_corr(dx, dy, span=20)])
        var, corr = client.gather(futures)
        workers = client.run(lambda: __import__("os").getpid())
    assert len(set(workers.values())) == 2
    np.testing.assert_allclose(var, fastmomentum.ewm_var(x, span=20), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(corr, fastmomentum.ewm_corr(x, y, span=20), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("stat", STATS)
@pytest.mark.parametrize("adjust", [True, False])
def test_long_chunks_through_the_steady_weights(stat, adjust):
    """Past ~350 values (alpha 0.1) the weights reach their fixed point and the kernels take
    the division-free loop; chunk boundaries there (and the fast update path, chunks like
    the previous one) keep every bit."""
    if stat == "sum" and not adjust:
        pytest.skip("pandas has no sum with adjust=False")
    x, y, _ = _data(6000, 1, 6, missing=0.0)
    x, y = x[:, 0].copy(), y[:, 0].copy()
    x[4000] = np.nan                               # leave the steady loop once, come back
    kw = dict(alpha=0.1, adjust=adjust)
    one = _update(fastmomentum.EwmStream(stat, **kw), stat, x, y, None)
    stream = fastmomentum.EwmStream(stat, **kw)
    bounds = [0, 1000, 1777, 1778, 3999, 4001, 5000, 6000]
    parts = [_update(stream, stat, x[a:b], y[a:b], None) for a, b in zip(bounds, bounds[1:])]
    np.testing.assert_array_equal(np.concatenate(parts), one)
    want = pandas_family(stat, x, y, kw)
    np.testing.assert_allclose(one, want, rtol=1e-12, atol=1e-12)


def pandas_family(stat, x, y, kw):
    ew = pd.Series(x).ewm(**kw)
    return (getattr(ew, stat)(pd.Series(y)) if stat in PAIR else getattr(ew, stat)()).to_numpy()


@pytest.mark.parametrize("impl", ["fastmomentum", "baseline"])
@pytest.mark.parametrize("stat", ["var", "cov"])
def test_common_update_path_and_its_refusals(impl, stat):
    """After a first update, chunks like it go through the family's stepper (compiled:
    fastmomentum._ewm_family.Stepper, checked in C, called by StreamCore.update in C)
    and never through the checked path; chunks it does not take (another dtype or byte
    order, Fortran order, another width, a y of another length, out=) fall back to the
    checked path, and every mix gives one pass's bits."""
    mod = fastmomentum if impl == "fastmomentum" else baseline
    x, y, _ = _data(400, 3, 5, missing=0.05)
    pair = stat in PAIR
    one = _update(mod.EwmStream(stat, alpha=0.1), stat, x, y, None)
    stream = mod.EwmStream(stat, alpha=0.1)
    parts = [_update(stream, stat, x[:50], y[:50], None)]
    if impl == "fastmomentum":
        from fastmomentum._ewm_family import Stepper
        assert isinstance(stream._fast, Stepper)
    fast = stream._fast
    checked = []                     # the chunk lengths that took the checked path

    def checked_update(x, y, times, out, real=stream._checked_update):
        checked.append(len(x))
        return real(x, y, times, out)
    stream._checked_update = checked_update
    before = stream._states[0].copy()
    refused = [(x[50:60].astype(np.float32), y[50:60].astype(np.float32)),
               (x[50:60].astype(">f8"), y[50:60].astype(">f8")),
               (np.asfortranarray(x[50:60]), np.asfortranarray(y[50:60])),
               (x[50:60, :2], y[50:60, :2]), (list(x[50:60]), list(y[50:60]))]
    if not pair:
        refused = [(cx, None) for cx, _ in refused] + [(x[50:60], y[50:60])]
    else:
        refused += [(x[50:60], y[50:59]), (x[50:60], None)]
    for cx, cy in refused:
        assert fast(cx, cy) is None
    assert fast(x[50:50], y[50:50] if pair else None).shape == (0, 3)
    np.testing.assert_array_equal(stream._states[0], before)     # untouched
    parts.append(_update(stream, stat, x[50:120], y[50:120], None))          # the stepper
    parts.append(_update(stream, stat, np.asfortranarray(x[120:200]),
                         np.asfortranarray(y[120:200]), None))               # checked path
    out = np.empty((100, 3))
    args = (x[200:300], y[200:300]) if pair else (x[200:300],)
    parts.append(stream.update(*args, out=out))                              # checked path
    parts.append(_update(stream, stat, x[300:], y[300:], None))              # the stepper
    assert checked == [80, 100]
    np.testing.assert_array_equal(np.concatenate(parts), one)
    assert stream.state_dict()["steps"] == 400


@pytest.mark.parametrize("stat", ["mean", "var", "cov"])
def test_dask_times_as_a_dask_array_stay_lazy(stat):
    """``times`` as a dask array (chunked unlike ``x``: cut to x's chunks) is not loaded
    when the graph is built: its blocks are inputs of the result's tasks; the results are
    the in-memory ones (exact=True: the same bits)."""
    import fastmomentum.dask as fmd
    x, y, t = _data(600, 1, 6)
    x, y = x[:, 0], y[:, 0]
    dx, dy = da.from_array(x, chunks=150), da.from_array(y, chunks=150)
    loads = []

    def traced(block):
        if len(block):                       # (dask probes with an empty block)
            loads.append(len(block))
        return block
    dt = da.from_array(t, chunks=97).map_blocks(traced, dtype=t.dtype)
    args = (dx, dy) if stat in PAIR else (dx,)
    fn = getattr(fmd, f"ewm_{stat}")
    lazy = fn(*args, halflife=2.0, times=dt)
    exact = fn(*args, halflife=2.0, times=dt, exact=True)
    assert loads == []                       # nothing of the times computed yet
    want = _update(fastmomentum.EwmStream(stat, halflife=2.0, times=True), stat, x, y, t)
    np.testing.assert_allclose(lazy.compute(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(exact.compute(), want)
    assert loads and sum(loads) >= len(t)
    with pytest.raises(ValueError, match="same length"):
        fn(*args, halflife=2.0, times=dt[:-1])
