"""Issue 11 (NumPy side): subclasses, scalars, state loading, races, interrupts, and a
fuzz test of the multi-tensor step against the baseline."""
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmomentum as fm
from fastmomentum import baseline
from fastmomentum._dispatch import kernels

STEPS = [fm.momentum_step, baseline.momentum_step]
EMAS = [fm.ema_update, baseline.ema_update]


def _masked(n=4):
    return np.ma.array(np.zeros(n), mask=[False, True] + [False] * (n - 2))


@pytest.mark.parametrize("where", ["param", "grad", "velocity"])
def test_masked_arrays_are_refused_alike_and_nothing_is_written(where):
    messages = []
    for step in STEPS:
        args = {"param": np.zeros(4), "grad": np.ones(4), "velocity": np.zeros(4)}
        args[where] = _masked()
        args[where][...] = 0.0 if where != "grad" else 1.0
        before = {k: np.array(v) for k, v in args.items()}
        with pytest.raises(TypeError, match=rf"momentum_step: `{where}` must be a NumPy "
                                            rf"ndarray .*np.asarray\({where}\).*filled"):
            step(args["param"], args["grad"], args["velocity"], lr=0.1, momentum=0.9)
        for k, v in args.items():
            np.testing.assert_array_equal(np.asarray(v), before[k])
        with pytest.raises(TypeError) as err:
            step(args["param"], args["grad"], args["velocity"], lr=0.1, momentum=0.9)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_masked_arrays_are_refused_by_ema_and_the_optimizers():
    for update in EMAS:
        with pytest.raises(TypeError, match="ema_update: `average` must be a NumPy ndarray"):
            update(_masked(), np.ones(4), 0.5)
        with pytest.raises(TypeError, match="ema_update: `value` must be a NumPy ndarray"):
            update(np.zeros(4), _masked(), 0.5)
    with pytest.raises(TypeError, match=r"SGD: `params\[0\]` must be a NumPy ndarray"):
        fm.SGD([_masked()], lr=0.1)
    opt = fm.SGD([np.zeros(4)], lr=0.1)
    with pytest.raises(TypeError, match=r"SGD.step: `grads\[0\]` must be a NumPy ndarray"):
        opt.step([_masked()])
    assert opt.steps == 0
    with pytest.raises(TypeError, match=r"EMA: `params\[0\]` must be a NumPy ndarray"):
        fm.EMA([_masked()])


def test_memmap_and_asarray_of_a_masked_array_are_stepped(tmp_path):
    """np.memmap is an ndarray over a file's pages: stepped as one. np.asarray of a masked
    array (what the error suggests) updates every element of the same memory."""
    p = np.memmap(tmp_path / "p", dtype=np.float64, mode="w+", shape=(5,))
    expected = np.zeros(5)
    for step, target in ((fm.momentum_step, p), (baseline.momentum_step, expected)):
        step(target, np.arange(5.0), None, lr=0.5)
    np.testing.assert_array_equal(p, expected)
    m = _masked(5)
    fm.momentum_step(np.asarray(m), np.ones(5), None, lr=1.0)
    np.testing.assert_array_equal(m.data, -np.ones(5))


@pytest.mark.parametrize("bad, error, match", [
    (10**400, ValueError, "Invalid learning rate: an integer of 1329 bits"),
    (np.array([0.1, 0.2]), TypeError, r"`lr` must be a real number .*shape=\(2,\)"),
    (np.complex128(0.1 + 1j), TypeError, "`lr` must be a real number; got numpy.complex128"),
    (np.complex64(0.1), TypeError, "`lr` must be a real number; got numpy.complex64"),
    (np.array(0.1 + 0j), TypeError, "`lr` must be a real number"),
], ids=["10**400", "2-element", "complex128", "complex64", "complex 0-d array"])
def test_bad_lr_is_named_and_refused_alike(bad, error, match):
    p = np.zeros(3)
    with np.errstate(all="raise"):
        for step in STEPS:
            with _no_warning():
                with pytest.raises(error, match="momentum_step: " + match):
                    step(p, np.ones(3), np.zeros(3), lr=bad, momentum=0.9)
        with pytest.raises(error, match="SGD: " + match):
            fm.SGD([p], lr=bad)
        opt = fm.SGD([p], lr=0.1)
        opt.lr = bad
        with _no_warning(), pytest.raises(error, match="SGD.step: " + match):
            opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, 0.0)
    assert opt.steps == 0


class _no_warning:
    """No warning (e.g. NumPy's ComplexWarning) escapes the block."""

    def __enter__(self):
        import warnings
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


@pytest.mark.parametrize("bad", [10**400, np.complex128(0.5)], ids=["10**400", "complex"])
def test_bad_decay_is_named(bad):
    for update in EMAS:
        with _no_warning(), pytest.raises((TypeError, ValueError),
                                          match="ema_update: .*`decay`"):
            update(np.zeros(3), np.ones(3), bad)
    with _no_warning(), pytest.raises((TypeError, ValueError), match="EMA: .*`decay`"):
        fm.EMA([np.zeros(3)], decay=bad)


def test_ema_with_decay_one_and_debias_is_refused():
    with pytest.raises(ValueError, match=r"EMA: `decay` must be < 1 with debias=True"):
        fm.EMA([np.zeros(3)], decay=1.0, debias=True)
    ema = fm.EMA([np.zeros(3)], decay=1.0, warmup=True, debias=True)  # warmup: d < 1
    ema.update([np.ones(3)])
    np.testing.assert_allclose(ema.averages[0], 1.0)


def _sgd_state(opt):
    return (opt.lr, opt.momentum, opt.maximize, opt.steps,
            [b.copy() for b in opt.momentum_buffers or []])


@pytest.mark.parametrize("spoil", [
    lambda s: s["param_groups"][0].pop("maximize"),
    lambda s: s.update(steps="abc"),
    lambda s: s.update(steps=-1),
    lambda s: s["param_groups"][0].update(maximize="yes"),
    lambda s: s.pop("state"),
    lambda s: s["state"][0].update(momentum_buffer=np.zeros(7)),
])
def test_sgd_load_state_dict_changes_nothing_on_failure(spoil):
    p = np.zeros(3)
    opt = fm.SGD([p], lr=0.1, momentum=0.9)
    opt.step([np.ones(3)])
    state = fm.SGD([np.zeros(3)], lr=0.5, momentum=0.5).state_dict()
    state["state"] = {0: {"momentum_buffer": np.full(3, 7.0)}}
    state["steps"] = 9
    spoil(state)
    before = _sgd_state(opt)
    with pytest.raises((TypeError, ValueError), match="SGD.load_state_dict: "):
        opt.load_state_dict(state)
    after = _sgd_state(opt)
    assert after[:4] == before[:4]
    np.testing.assert_array_equal(after[4][0], before[4][0])


@pytest.mark.parametrize("spoil", [
    lambda s: s.pop("warmup"), lambda s: s.pop("debias"), lambda s: s.pop("updates"),
    lambda s: s.update(updates="abc"), lambda s: s.update(decay_product=float("nan")),
    lambda s: s.update(debias=True, decay=1.0, warmup=False), lambda s: s.update(averages=[np.ones(4)]),
])
def test_ema_load_state_dict_changes_nothing_on_failure(spoil):
    ema = fm.EMA([np.zeros(3)], decay=0.9)
    ema.update([np.ones(3)])
    state = fm.EMA([np.full(3, 5.0)], decay=0.5, warmup=True).state_dict()
    spoil(state)
    before = (ema.decay, ema.warmup, ema.debias, ema.updates, ema._kept,
              ema.raw_averages[0].copy())
    with pytest.raises((TypeError, ValueError), match="EMA.load_state_dict: "):
        ema.load_state_dict(state)
    after = (ema.decay, ema.warmup, ema.debias, ema.updates, ema._kept)
    assert after == before[:5]
    np.testing.assert_array_equal(ema.raw_averages[0], before[5])


# ---------------------------------------------------------------------------------------
# Crashes and races: a GIL-free step holds what it points into; one optimizer, one step.

def _run_isolated(code, timeout=240):
    """Run ``code`` in a fresh interpreter, so a segfault fails the test (not pytest)."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr[-2000:])
    return result.stdout


def test_replacing_a_grad_during_a_step_does_not_free_it():
    """Another thread replaces grads[i] while the step runs without the GIL: the old grad
    (big enough to be unmapped when freed) must stay alive until the step ends."""
    _run_isolated("""
        import threading, numpy as np, fastmomentum as fm
        n = 1 << 21
        params = [np.zeros(n, np.float32) for _ in range(3)]
        grads = [np.ones(n, np.float32) for _ in range(3)]
        opt = fm.SGD(params, lr=0.0, momentum=0.9, ema=fm.EMA(params, 0.5))
        stop = False
        def replace():
            while not stop:
                for i in range(3):
                    grads[i] = np.ones(n, np.float32)
        t = threading.Thread(target=replace)
        t.start()
        try:
            for _ in range(300):
                opt.step(grads)
                opt.ema.update(grads)
        finally:
            stop = True
            t.join()
        print(opt.steps)
    """)


def _step_from_two_threads(step, calls):
    """Call ``step()`` ``calls`` times from each of two threads at once; returns how many
    calls were refused (RuntimeError naming the race)."""
    refused = []

    def run():
        for _ in range(calls):
            try:
                step()
            except RuntimeError as err:
                assert "another thread is stepping this optimizer" in str(err)
                refused.append(1)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(refused)


def test_concurrent_steps_of_one_optimizer_raise_or_serialize():
    """Two threads stepping one optimizer: each step either happens whole (the GIL
    serializes it) or is refused with RuntimeError; no update is lost."""
    n = 4 * kernels._NOGIL_MIN_SIZE
    p = np.zeros(n)
    opt = fm.SGD([p], lr=1.0)
    g = [np.ones(n)]
    refused = _step_from_two_threads(lambda: opt.step(g), 300)
    assert opt.steps + refused == 600
    np.testing.assert_array_equal(p, -float(opt.steps))


# ---------------------------------------------------------------------------------------
# Interrupts: the bookkeeping matches what was written, wherever a SIGINT lands.

def _interrupt(*_):
    raise KeyboardInterrupt


def _interrupted_steps(step, trials, longest, seed=0):
    """Call ``step()`` ``trials`` times, each with a KeyboardInterrupt timed to land at a
    random point within ``longest`` seconds (in the kernels, or before or after them)."""
    delays = np.random.default_rng(seed).uniform(1e-6, longest, trials)
    interrupted = 0
    previous = signal.signal(signal.SIGALRM, _interrupt)
    try:
        for delay in delays:
            try:
                try:
                    signal.setitimer(signal.ITIMER_REAL, delay)
                    step()
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except KeyboardInterrupt:
                interrupted += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return interrupted


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX timers")
def test_sigint_during_steps_leaves_consistent_bookkeeping():
    """p = -steps exactly (lr 1, grad 1, no momentum): every step written is counted, and
    the EMA counted its updates alike; a first momentum step stores its buffers."""
    n = 1 << 18
    p = np.zeros(n)
    ema = fm.EMA([p], decay=0.5)
    opt = fm.SGD([p], lr=1.0, ema=ema)
    grads = [np.ones(n)]
    interrupted = _interrupted_steps(lambda: opt.step(grads), trials=300, longest=5e-4)
    assert interrupted > 0
    np.testing.assert_array_equal(p, -float(opt.steps))
    assert ema.updates == opt.steps
    for seed in range(40):
        q = np.zeros(n)
        mopt = fm.SGD([q], lr=1.0, momentum=0.5)
        _interrupted_steps(lambda: mopt.step(grads), trials=1, longest=5e-4, seed=seed)
        # one step written <=> counted <=> its buffer kept (else the retry restarts it)
        assert (mopt.steps == 1) == (mopt.momentum_buffers is not None) == bool(q[0] == -1)


# ---------------------------------------------------------------------------------------
# Fuzz: the multi-tensor step (first and later steps, with and without EMA, any mix of
# shapes and dtypes) against the baseline called one buffer at a time.

@settings(max_examples=40, deadline=None)
@given(shapes=st.lists(st.sampled_from([(0,), (1,), (7,), (3, 5), (2, 0, 3), (130,)]),
                       min_size=0, max_size=5),
       f64=st.lists(st.booleans(), min_size=5, max_size=5),
       momentum=st.sampled_from([0.0, 0.5, 0.9]), dampening=st.sampled_from([0.0, 0.3]),
       weight_decay=st.sampled_from([0.0, 1e-2]), nesterov=st.booleans(),
       maximize=st.booleans(), lr=st.floats(1e-3, 1.0), steps=st.integers(1, 3),
       ema_decay=st.one_of(st.none(), st.floats(0.0, 1.0)), warmup=st.booleans(),
       seed=st.integers(0, 2**16))
def test_fuzz_multi_tensor_step_against_the_baseline(shapes, f64, momentum, dampening,
                                                     weight_decay, nesterov, maximize, lr,
                                                     steps, ema_decay, warmup, seed):
    nesterov = nesterov and momentum > 0 and dampening == 0
    rng = np.random.default_rng(seed)
    dtypes = [np.float64 if f else np.float32 for f in f64[:len(shapes)]]
    start = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    options = dict(lr=lr, momentum=momentum, dampening=dampening,
                   weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
    params = [a.copy() for a in start]
    ema = None if ema_decay is None else fm.EMA(params, ema_decay, warmup=warmup)
    opt = fm.SGD(params, **options, ema=ema)
    ref = [a.copy() for a in start]
    ref_buffers = [np.zeros_like(a) for a in start]
    ref_averages = [a.copy() for a in start]
    for t in range(steps):
        grads = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
        decay = None if ema is None else ema.next_decay()
        opt.step(grads)
        for p, g, v, a in zip(ref, grads, ref_buffers, ref_averages):
            baseline.momentum_step(p, g, v, **options, first_step=t == 0)
            if decay is not None:
                baseline.ema_update(a, p, decay)
    assert opt.steps == steps
    for got, want, dtype in zip(params, ref, dtypes):
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    if momentum:
        for got, want, dtype in zip(opt.momentum_buffers, ref_buffers, dtypes):
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    if ema is not None:
        assert ema.updates == steps
        for got, want, dtype in zip(ema.averages, ref_averages, dtypes):
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
