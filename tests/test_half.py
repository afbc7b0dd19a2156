"""float16 and bfloat16 steps against torch.optim.SGD's for-loop (bit for bit, at 1 and 2
torch threads), against NumPy float32 oracles (rounding="once", the EMA), the fused and
multi-tensor paths, stochastic rounding, and bad input."""
import functools

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastmomentum as fm
from fastmomentum import baseline

from _grid import SGD_OPTIONS, option_id, snapshot
from _half_oracle import (HALVES, bits, ema_once, sgd_once, sgd_torch, to_numpy, widen)
from conftest import THREADED, assert_threads_run

BF16 = ml_dtypes.bfloat16
LR = 0.0123


def torch_for_loop(p0, grads, options, torch_dtype, threads, lr=LR):
    """torch.optim.SGD (its default CPU path, the for-loop) at ``threads`` torch threads:
    the param and momentum buffer bits after each step."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        p = torch.tensor(widen(p0)).to(torch_dtype).requires_grad_()
        opt = torch.optim.SGD([p], lr=lr, **options)
        out = []
        for g in grads:
            p.grad = torch.tensor(widen(g)).to(torch_dtype)
            opt.step()
            buf = opt.state[p].get("momentum_buffer")
            out.append((bits(to_numpy(p, p0.dtype)).copy(),
                        None if buf is None else bits(to_numpy(buf, p0.dtype)).copy()))
        return out
    finally:
        torch.set_num_threads(before)


def kernel_steps(p0, grads, options, step=fm.momentum_step, lr=LR, **rounding):
    p = p0.copy()
    v = np.full_like(p0, np.nan)     # the first step must not read it
    out = []
    for i, g in enumerate(grads):
        step(p, g, v, lr=lr, first_step=i == 0, **options, **rounding)
        out.append((bits(p).copy(), bits(v).copy() if options["momentum"] else None))
    return out


def problem(rng, dtype, n, steps=3):
    p0 = rng.standard_normal(n).astype(np.float32).astype(dtype)
    grads = [rng.standard_normal(n).astype(np.float32).astype(dtype) for _ in range(steps)]
    return p0, grads


def assert_same_steps(got, expected):
    for (p, v), (ep, ev) in zip(got, expected):
        np.testing.assert_array_equal(p, ep)
        if ev is not None:
            np.testing.assert_array_equal(v, ev)


@pytest.mark.parametrize("dtype,torch_dtype", HALVES, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=option_id)
@pytest.mark.parametrize("n", [1, 7, 33, 1000])
def test_small_buffers_equal_torch_for_loop(rng, dtype, torch_dtype, options, n):
    p0, grads = problem(rng, dtype, n)
    assert_same_steps(kernel_steps(p0, grads, options),
                      torch_for_loop(p0, grads, options, torch_dtype, 1))


@pytest.mark.parametrize("dtype,torch_dtype", HALVES, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=option_id)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [32768 + 31, 65536 + 45, 100003])
def test_large_buffers_equal_torch_at_its_thread_count(rng, dtype, torch_dtype, options,
                                                       threads, n):
    """Across torch's 32768-element grain and with len % 32 tails in every chunk."""
    p0, grads = problem(rng, dtype, n, steps=2)
    assert_same_steps(kernel_steps(p0, grads, options, torch_threads=threads),
                      torch_for_loop(p0, grads, options, torch_dtype, threads))


@pytest.mark.parametrize("dtype,torch_dtype", HALVES, ids=["bfloat16", "float16"])
def test_torch_bits_depend_on_its_thread_count(rng, dtype, torch_dtype):
    """The issue's fact: torch's own result at 2 threads differs from 1 thread (its scalar
    tail sits at the end of each chunk), and torch_threads selects which one is matched."""
    options = dict(momentum=0.9, dampening=0.3, weight_decay=0.01, nesterov=False,
                   maximize=False)
    p0, grads = problem(rng, dtype, 65536 + 45, steps=2)
    one, two = (torch_for_loop(p0, grads, options, torch_dtype, t) for t in (1, 2))
    assert (one[-1][0] != two[-1][0]).any()
    assert_same_steps(kernel_steps(p0, grads, options, torch_threads=2), two)
    assert (kernel_steps(p0, grads, options)[-1][0] != two[-1][0]).any()


@pytest.mark.parametrize("dtype,torch_dtype", HALVES, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=option_id)
def test_numpy_oracle_of_torch_rounding(rng, dtype, torch_dtype, options):
    """The rounding model the kernels implement, in NumPy, equals torch (so the kernels
    equal it for the documented reason, not by accident)."""
    p0, grads = problem(rng, dtype, 65536 + 45, steps=2)
    expected = torch_for_loop(p0, grads, options, torch_dtype, 2)
    p, v = widen(p0), None
    for i, g in enumerate(grads):
        p, v = sgd_torch(p, widen(g), v, dtype, lr=LR, first_step=i == 0, threads=2,
                         **options)
        np.testing.assert_array_equal(bits(p.astype(dtype)), expected[i][0])


@pytest.mark.parametrize("dtype", [BF16, np.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=option_id)
@pytest.mark.parametrize("n", [7, 1000, THREADED])
def test_rounding_once_equals_float32_oracle(rng, dtype, options, n):
    """One rounding per stored value: the float32 step (exact fmaf in NumPy) on the
    widened values, param and velocity rounded once; the same on any thread count."""
    p0, grads = problem(rng, dtype, n)
    got = kernel_steps(p0, grads, options, rounding="once")
    p, v = widen(p0), None
    for i, g in enumerate(grads):
        p, v = sgd_once(p, widen(g), v, dtype, lr=LR, first_step=i == 0, **options)
        np.testing.assert_array_equal(got[i][0], bits(p.astype(dtype)))
        if options["momentum"]:
            np.testing.assert_array_equal(got[i][1], bits(v.astype(dtype)))


@pytest.mark.parametrize("dtype", [BF16, np.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("n", [1, 33, THREADED])
def test_ema_update_is_float32_ema_rounded_once(rng, dtype, n):
    average = rng.standard_normal(n).astype(np.float32).astype(dtype)
    value = rng.standard_normal(n).astype(np.float32).astype(dtype)
    expected = ema_once(widen(average), widen(value), 0.99, dtype)
    if n == THREADED:
        assert_threads_run(n)
    assert fm.ema_update(average, value, 0.99) is average
    np.testing.assert_array_equal(bits(average), bits(expected.astype(dtype)))


@pytest.mark.parametrize("dtype", [BF16, np.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("rounding", ["torch", "once"])
def test_fused_sgd_ema_equals_step_then_ema(rng, dtype, rounding):
    """fm.SGD(ema=...) on 16-bit arrays: the step then the EMA of the stored new weights,
    in one pass; against momentum_step and ema_update one after the other."""
    shapes = [(3, 5), (THREADED,), (40000,)]
    params = [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in shapes]
    copies = [p.copy() for p in params]
    averages = [p.copy() for p in params]
    ema = fm.EMA(params, decay=0.9)
    opt = fm.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.01, ema=ema,
                 rounding=rounding)
    velocities = [np.empty_like(p) for p in params]
    for step in range(3):
        grads = [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in shapes]
        opt.step(grads)
        for p, g, v, a in zip(copies, grads, velocities, averages):
            fm.momentum_step(p, g, v, lr=0.05, momentum=0.9, weight_decay=0.01,
                             first_step=step == 0, rounding=rounding)
            fm.ema_update(a, p, 0.9)
    for got, want in zip(params + ema.raw_averages + opt.momentum_buffers,
                         copies + averages + velocities):
        np.testing.assert_array_equal(bits(got), bits(want))


def test_sgd_trajectory_equals_torch_on_mixed_dtypes(rng):
    """fm.SGD over bfloat16, float16 and float32 arrays at once (one work list) against
    torch.optim.SGD on the same tensors."""
    dtypes = [(BF16, torch.bfloat16), (np.float16, torch.float16), (np.float32, torch.float32)]
    params = [rng.standard_normal(n).astype(np.float32).astype(d)
              for n, (d, _) in zip((1000, 33, 70), dtypes)]
    tensors = [torch.tensor(widen(p)).to(t).requires_grad_() for p, (_, t) in zip(params, dtypes)]
    opt = fm.SGD(params, lr=0.1, momentum=0.9, nesterov=True)
    ref = torch.optim.SGD(tensors, lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(4):
        grads = [rng.standard_normal(p.shape).astype(np.float32).astype(p.dtype) for p in params]
        for t, g, (_, td) in zip(tensors, grads, dtypes):
            t.grad = torch.tensor(widen(g)).to(td)
        ref.step()
        opt.step(grads)
    for p, t in zip(params, tensors):
        np.testing.assert_array_equal(widen(p), t.detach().float().numpy())


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(["bfloat16", "float16"]),
       n=st.integers(1, 3000),
       lr=st.floats(1e-4, 1.0), momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
       dampening=st.sampled_from([0.0, 0.1]), weight_decay=st.sampled_from([0.0, 1e-4, 0.1]),
       maximize=st.booleans(), rounding=st.sampled_from(["torch", "once"]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_property_equals_numpy_oracle(dtype, n, lr, momentum, dampening, weight_decay,
                                      maximize, rounding, seed):
    dtype = BF16 if dtype == "bfloat16" else np.float16
    rng = np.random.default_rng(seed)
    options = dict(lr=lr, momentum=momentum, dampening=dampening,
                   weight_decay=weight_decay, nesterov=False, maximize=maximize)
    p = rng.standard_normal(n).astype(np.float32).astype(dtype)
    v = rng.standard_normal(n).astype(np.float32).astype(dtype)
    g = rng.standard_normal(n).astype(np.float32).astype(dtype)
    oracle = sgd_torch if rounding == "torch" else sgd_once
    want_p, want_v = oracle(widen(p), widen(g), widen(v), dtype, first_step=False, **options)
    fm.momentum_step(p, g, v, rounding=rounding, **options)
    np.testing.assert_array_equal(bits(p), bits(want_p.astype(dtype)))
    if momentum:
        np.testing.assert_array_equal(bits(v), bits(np.asarray(want_v).astype(dtype)))


# ---------------------------------------------------------------------------------------
# Stochastic rounding

@pytest.mark.parametrize("dtype", [BF16, np.float16], ids=["bfloat16", "float16"])
def test_stochastic_rounding_is_unbiased(dtype):
    """Many stochastically rounded copies of one update: their mean is the exact float32
    result within 4 standard errors, while round-to-nearest is off by far more."""
    n = 200000
    p0 = np.full(n, 1.0, dtype=dtype)
    g = np.full(n, 1.0, dtype=dtype)
    lr = 0.0013          # 1 - lr lies between two 16-bit neighbours of 1
    exact = np.float32(1.0) - np.float32(lr)
    p = p0.copy()
    fm.momentum_step(p, g, None, lr=lr, rounding="stochastic", seed=7)
    values = widen(p).astype(np.float64)
    assert len(np.unique(values)) == 2               # the two neighbours, nothing else
    standard_error = values.std() / np.sqrt(n)
    assert abs(values.mean() - exact) < 4 * standard_error
    nearest = float(np.float32(exact).astype(dtype).astype(np.float32))
    assert abs(nearest - exact) > 20 * standard_error


@pytest.mark.parametrize("dtype", [BF16, np.float16], ids=["bfloat16", "float16"])
def test_stochastic_rounding_is_deterministic_for_any_thread_count(rng, dtype,
                                                                   restore_threads):
    p0, grads = problem(rng, dtype, THREADED, steps=1)
    results = []
    for threads, seed in [(1, 11), (2, 11), (2, 12)]:
        fm.set_num_threads(threads)
        if threads == 2:
            assert_threads_run(THREADED)
        p, v = p0.copy(), np.zeros_like(p0)
        fm.momentum_step(p, grads[0], v, lr=0.01, momentum=0.9, rounding="stochastic",
                         seed=seed, step=3)
        results.append(bits(p).copy())
    np.testing.assert_array_equal(results[0], results[1])
    assert (results[0] != results[2]).mean() > 0.05     # another seed, other bits


def test_stochastic_rounding_matches_the_baseline(rng):
    """The baseline draws the same counter-based bits (an independent NumPy version of
    the hash); momentum 0 and no weight decay keep the float32 values identical."""
    for dtype in (BF16, np.float16):
        p, g = problem(rng, dtype, 5000, steps=1)
        q = p.copy()
        fm.momentum_step(p, g[0], None, lr=1e-3, rounding="stochastic", seed=5, step=9)
        baseline.momentum_step(q, g[0], None, lr=1e-3, rounding="stochastic", seed=5,
                               step=9)
        np.testing.assert_array_equal(bits(p), bits(q))


def test_sgd_stochastic_steps_draw_new_bits(rng):
    """fm.SGD mixes its step count into the bits: two steps with the same grads round
    differently, and a rerun with the same seed repeats every bit."""
    def run():
        p = np.full(10000, 1.0, dtype=BF16)
        opt = fm.SGD([p], lr=0.0013, rounding="stochastic", seed=3)
        ups = []
        for _ in range(2):
            before = widen(p).copy()
            opt.step([np.ones_like(p)])
            ups.append(before - widen(p))
        return ups, bits(p).copy()
    (first, second), end = run()
    assert (first != second).any()
    np.testing.assert_array_equal(run()[1], end)


# ---------------------------------------------------------------------------------------
# Bad input: refused with what to pass, nothing written

def test_bfloat16_bits_as_uint16_are_refused_with_a_hint():
    p = np.zeros(4, np.uint16)
    with pytest.raises(TypeError, match=r"momentum_step: `param` .*view\(ml_dtypes.bfloat16\)"):
        fm.momentum_step(p, p.copy(), None, lr=0.1)


def test_torch_tensor_is_refused_with_a_hint():
    t = torch.zeros(4, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match=r"`average` .*fastmomentum.torch"):
        fm.ema_update(t, t.clone(), 0.5)


@pytest.mark.parametrize("grad_dtype", [np.float16, np.float32, np.uint16])
def test_dtype_mix_refused_nothing_written(rng, grad_dtype):
    p = rng.standard_normal(8).astype(BF16)
    v = rng.standard_normal(8).astype(BF16)
    g = np.ones(8, grad_dtype)
    before = snapshot(p, v)
    with pytest.raises(TypeError, match=r"`grad` must be a C-contiguous bfloat16 array like "
                                        r"`param`; got dtype=" + np.dtype(grad_dtype).name):
        fm.momentum_step(p, g, v, lr=0.1, momentum=0.9)
    with pytest.raises(TypeError, match=r"SGD.step: `momentum_buffers\[0\]` must be a "
                                        r"writeable C-contiguous bfloat16 array"):
        _multi_step([p], [p.copy()], [np.ones(8, np.float16)])
    assert snapshot(p, v) == before


def _multi_step(params, grads, velocities):
    from fastmomentum._dispatch import kernels
    kernels.multi_momentum_step(params, grads, velocities, lr=0.1, momentum=0.9)


@pytest.mark.parametrize("kwargs,message", [
    (dict(rounding="nearest"), r"`rounding` must be one of \['torch', 'once', 'stochastic'\]"),
    (dict(rounding="stochastic"), r"rounding=\"stochastic\" needs `seed`"),
    (dict(rounding="once", seed=3), r"`seed` is for rounding=\"stochastic\" only"),
    (dict(torch_threads=0), r"`torch_threads` must be an integer in \[1, 65536\)"),
    (dict(rounding="stochastic", seed=-1), r"`seed` must be an integer in \[0, "),
    # past momentum_step's C fast path, to the same words
    (dict(rounding=b"torch"), r"`rounding` must be one of \['torch', 'once', 'stochastic'\]"),
    (dict(rounding="Once"), r"`rounding` must be one of \['torch', 'once', 'stochastic'\]"),
    (dict(torch_threads=1 << 16), r"`torch_threads` must be an integer in \[1, 65536\)"),
    (dict(torch_threads=True), r"`torch_threads` must be an integer in \[1, 65536\)"),
    (dict(torch_threads=-1), r"`torch_threads` must be an integer in \[1, 65536\)"),
])
def test_bad_rounding_arguments_refused_nothing_written(rng, kwargs, message):
    p = rng.standard_normal(8).astype(np.float16)
    before = snapshot(p)
    with pytest.raises(ValueError, match="momentum_step: " + message):
        fm.momentum_step(p, p.copy(), None, lr=0.1, **kwargs)
    with pytest.raises(ValueError, match="SGD: " + message):
        fm.SGD([p], lr=0.1, **kwargs)
    opt = fm.SGD([p], lr=0.1)
    opt.rounding, opt.torch_threads = (kwargs.get("rounding", "torch"),
                                       kwargs.get("torch_threads", 1))
    opt.seed = kwargs.get("seed")
    with pytest.raises(ValueError, match="multi_momentum_step: " + message):
        opt.step([p.copy()])
    assert snapshot(p) == before and opt.steps == 0


def _no_python_check(*args):
    raise AssertionError(f"_validation.rounding_options{args} called on a common rounding")


@pytest.mark.parametrize("dtype", [BF16, np.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("rounding", ["torch", "once"])
@pytest.mark.parametrize("torch_threads", [1, 4])
def test_common_roundings_resolved_in_c(rng, monkeypatch, dtype, rounding, torch_threads):
    """"torch" and "once" are read in C whatever str object spells them (here one built at
    run time, not the interned literal): the Python check (~1 us a call, most of a
    16-element step) is never called, and the bits are the oracle's."""
    built = "".join([rounding[:2], rounding[2:]])
    assert built == rounding and built is not rounding
    options = dict(lr=LR, momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=False,
                   maximize=False)
    oracle = (functools.partial(sgd_torch, threads=torch_threads) if rounding == "torch"
              else sgd_once)
    p0, grads = problem(rng, dtype, 16)
    p, v = p0.copy(), np.full_like(p0, np.nan)   # the first step must not read v
    opt = fm.SGD([p0.copy()], rounding=built, torch_threads=torch_threads, **options)
    monkeypatch.setattr(fm._validation, "rounding_options", _no_python_check)
    for i, g in enumerate(grads):
        want_p, want_v = oracle(widen(p), widen(g), widen(v), dtype, first_step=i == 0,
                                **options)
        fm.momentum_step(p, g, v, first_step=i == 0, rounding=built,
                         torch_threads=torch_threads, **options)
        np.testing.assert_array_equal(bits(p), bits(want_p.astype(dtype)))
        np.testing.assert_array_equal(bits(v), bits(np.asarray(want_v).astype(dtype)))
        opt.step([g])
        np.testing.assert_array_equal(bits(opt.params[0]), bits(p))
        np.testing.assert_array_equal(bits(opt.momentum_buffers[0]), bits(v))


def test_baseline_mirrors_the_options(rng):
    """The NumPy baseline takes the same arguments and is within a unit in the last place
    (no fused multiply-add) of the kernels."""
    for dtype in (BF16, np.float16):
        p, g = problem(rng, dtype, 1000, steps=1)
        v = np.zeros_like(p)
        q, w = p.copy(), v.copy()
        fm.momentum_step(p, g[0], v, lr=0.1, momentum=0.9, first_step=True, rounding="once")
        baseline.momentum_step(q, g[0], w, lr=0.1, momentum=0.9, first_step=True,
                               rounding="once")
        unit = 2.0 ** -7 if dtype == BF16 else 2.0 ** -10    # one ulp, relative
        np.testing.assert_allclose(widen(p), widen(q), rtol=unit, atol=1e-7)
        assert (bits(p) == bits(q)).mean() > 0.9
        a, b = p.copy(), p.copy()
        np.testing.assert_array_equal(bits(fm.ema_update(a, q, 0.9)),
                                      bits(baseline.ema_update(b, q, 0.9)))
