"""Fused global-norm clipping and skipping on fastmomentum.SGD (NumPy), against torch's
clip_grad_norm_ then torch.optim.SGD, and against the same step on pre-scaled grads."""
import math

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmomentum as fm
from fastmomentum import baseline
from fastmomentum._dispatch import kernels
from _grid import DTYPES, SGD_OPTIONS, option_id, snapshot
from conftest import THREADED, assert_threads_run

SHAPES = [(300,), (17, 5), (0,), (40000,)]


def arrays(rng, dtype, shapes=SHAPES, scale=1.0):
    return [(scale * rng.standard_normal(s)).astype(dtype) for s in shapes]


def torch_total(grads, norm_type):
    """torch's total norm of the grads, computed in float64 (its float32 sums lose up to
    6e-4 relative at 16M elements: see docs/clipping-and-amp.md)."""
    return float(torch.nn.utils.get_total_norm(  # (torch refuses an empty inf-norm)
        [torch.from_numpy(g).double() for g in grads if g.size], norm_type))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=option_id)
def test_step_equals_torch_clip_then_sgd(options, norm_type, dtype):
    """Given the coefficient, the update is torch's clip (g.mul_(coef)) then its SGD, bit
    for bit; the total norm is torch's within 1e-6 relative."""
    rng = np.random.default_rng(1)
    params = arrays(rng, dtype)
    theirs = [torch.tensor(p.copy()) for p in params]
    topt = torch.optim.SGD(theirs, lr=0.05, **options)
    opt = fm.SGD(params, lr=0.05, **options, clip_grad_norm=3.0, norm_type=norm_type)
    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    for _ in range(3):
        grads = arrays(rng, dtype)
        opt.step(grads)
        total = opt.last_grad_norm
        assert total == pytest.approx(torch_total(grads, norm_type), rel=1e-6)
        # torch's own coefficient of that total, applied as torch applies it
        coef = torch.clamp(3.0 / (torch.tensor(total, dtype=torch_dtype) + 1e-6), max=1.0)
        assert coef.item() < 1.0  # the grads are clipped
        for t, g in zip(theirs, grads):
            t.grad = torch.from_numpy(g.copy()).mul_(coef)
        topt.step()
        for p, t in zip(params, theirs):
            assert np.array_equal(p, t.numpy())
    assert opt.steps == 3 and opt.skipped_steps == 0


@pytest.mark.parametrize("f32", [True, False])
def test_clip_coefficient_is_torchs(f32):
    """clamp(max_norm / (total + 1e-6), max=1) in the norm's dtype, as torch evaluates it
    (Tensor.__rtruediv__ is reciprocal() * max_norm), over random totals and max norms."""
    rng = np.random.default_rng(2)
    dtype = torch.float32 if f32 else torch.float64
    totals = np.concatenate([10.0 ** rng.uniform(-8, 8, 3000), [0.0, 1e-7, math.inf,
                                                                math.nan]])
    for total, max_norm in zip(totals, 10.0 ** rng.uniform(-6, 6, totals.size)):
        t = torch.tensor(total, dtype=dtype)
        expected = torch.clamp(float(max_norm) / (t + 1e-6), max=1.0).item()
        got = kernels.clip_coefficient(t.item(), float(max_norm), f32)
        assert got == expected or (math.isnan(got) and math.isnan(expected))


def test_norm_bits_do_not_depend_on_threads():
    rng = np.random.default_rng(3)
    grads = arrays(rng, np.float32, [(THREADED,), (1000,), (THREADED // 3,)])
    assert_threads_run(THREADED)
    totals = []
    for threads in (1, 2, 1):
        fm.set_num_threads(threads)
        for norm_type in (2.0, math.inf):
            params = [np.zeros_like(g) for g in grads]
            opt = fm.SGD(params, lr=0.1, clip_grad_norm=1.0, norm_type=norm_type)
            opt.step(grads)
            totals.append(opt.last_grad_norm)
    fm.set_num_threads(2)
    assert totals[0:2] == totals[2:4] == totals[4:6]
    exact = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    assert totals[0] == float(np.float32(exact))  # double sums: correctly rounded here


@pytest.mark.parametrize("dtype", DTYPES)
def test_clipped_step_equals_step_of_prescaled_grads(dtype):
    """The kernels' scaled read (threads, EMA fused) = the unclipped step of grads the
    caller multiplied by the coefficient first (NumPy rounds each product)."""
    rng = np.random.default_rng(4)
    shapes = [(THREADED,), (33,)]
    ours, theirs = arrays(rng, dtype, shapes), None
    theirs = [p.copy() for p in ours]
    ema_a, ema_b = fm.EMA(ours, 0.9), fm.EMA(theirs, 0.9)
    opt = fm.SGD(ours, lr=0.1, momentum=0.9, nesterov=True, ema=ema_a, clip_grad_norm=10.0)
    ref = fm.SGD(theirs, lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(3):
        grads = arrays(rng, dtype, shapes)
        opt.step(grads)
        coef = kernels.clip_coefficient(opt.last_grad_norm, 10.0, dtype == np.float32)
        ref.step([g * dtype(coef) for g in grads])
        ema_b.update(theirs)
        for a, b in zip(ours + ema_a.raw_averages, theirs + ema_b.raw_averages):
            assert np.array_equal(a, b)


def test_small_norm_is_not_clipped():
    """A coefficient clamped to 1 multiplies nothing: the plain step's bits."""
    rng = np.random.default_rng(5)
    ours = arrays(rng, np.float32)
    theirs = [p.copy() for p in ours]
    opt = fm.SGD(ours, lr=0.1, momentum=0.9, clip_grad_norm=1e6)
    ref = fm.SGD(theirs, lr=0.1, momentum=0.9)
    grads = arrays(rng, np.float32)
    opt.step(grads)
    ref.step(grads)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_skip_if_nonfinite_leaves_everything(bad, norm_type):
    rng = np.random.default_rng(6)
    params = arrays(rng, np.float32)
    opt = fm.SGD(params, lr=0.1, momentum=0.9, clip_grad_norm=1.0, norm_type=norm_type,
                 skip_if_nonfinite=True)
    grads = arrays(rng, np.float32)
    grads[1][3, 2] = bad
    before = snapshot(*params)
    opt.step(grads)  # a first step: no momentum buffers made either
    assert snapshot(*params) == before and opt.momentum_buffers is None
    assert opt.skipped_steps == 1 and opt.steps == 0
    assert not math.isfinite(opt.last_grad_norm)
    opt.step(arrays(rng, np.float32))
    assert opt.steps == 1 and opt.skipped_steps == 1 and math.isfinite(opt.last_grad_norm)
    buffers = snapshot(*params, *opt.momentum_buffers)
    opt.step(grads)
    assert snapshot(*params, *opt.momentum_buffers) == buffers and opt.skipped_steps == 2



@pytest.mark.parametrize("state", [None, "bfloat16"])
def test_numpy_bool_skip_if_nonfinite_set_later_skips(state):
    """skip_if_nonfinite set to np.True_ after construction (accepted as a bool) skips a
    non-finite step too, with and without momentum_dtype (it was once read as False)."""
    rng = np.random.default_rng(7)
    params = arrays(rng, np.float32)
    dtype = None if state is None else pytest.importorskip("ml_dtypes").bfloat16
    opt = fm.SGD(params, lr=0.1, momentum=0.9, momentum_dtype=dtype)
    opt.skip_if_nonfinite = np.True_
    grads = arrays(rng, np.float32)
    grads[0].flat[0] = math.nan
    before = snapshot(*params)
    opt.step(grads)
    assert snapshot(*params) == before and opt.skipped_steps == 1 and opt.steps == 0

def test_nonfinite_norm_without_skip_is_torchs():
    """inf in a grad: torch's coefficient is 0 and the step writes NaN/zero updates;
    fastmomentum does the same."""
    rng = np.random.default_rng(7)
    params = arrays(rng, np.float32, [(50,)])
    theirs = [torch.tensor(params[0].copy())]
    opt = fm.SGD(params, lr=0.1, momentum=0.9, clip_grad_norm=1.0)
    topt = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    g = arrays(rng, np.float32, [(50,)])[0]
    g[7] = math.inf
    opt.step([g])
    theirs[0].grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    topt.step()
    assert np.array_equal(params[0], theirs[0].numpy(), equal_nan=True)
    assert opt.last_grad_norm == math.inf


@pytest.mark.parametrize("module", [fm, baseline], ids=["kernels", "baseline"])
@pytest.mark.parametrize("kwargs, error, words", [
    (dict(clip_grad_norm=-1.0), ValueError, "clip_grad_norm"),
    (dict(clip_grad_norm=math.nan), ValueError, "clip_grad_norm"),
    (dict(clip_grad_norm="1"), TypeError, "clip_grad_norm"),
    (dict(clip_grad_norm=1.0, norm_type=1.0), ValueError, "norm_type"),
    (dict(clip_grad_norm=1.0, norm_type="fro"), ValueError, "norm_type"),
    (dict(skip_if_nonfinite=1), TypeError, "skip_if_nonfinite"),
])
def test_bad_options_are_refused_and_nothing_written(module, kwargs, error, words):
    rng = np.random.default_rng(8)
    params = arrays(rng, np.float32)
    with pytest.raises(error, match=f"^SGD: .*`{words}`"):
        module.SGD(params, lr=0.1, **kwargs)
    opt = module.SGD(params, lr=0.1, momentum=0.9)
    for name, value in kwargs.items():
        setattr(opt, name, value)
    before = snapshot(*params)
    with pytest.raises(error, match=f"^SGD.step: .*`{words}`"):
        opt.step(arrays(rng, np.float32))
    assert snapshot(*params) == before
    assert opt.steps == 0 and opt.momentum_buffers is None and opt.skipped_steps == 0


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_baseline_mirrors_clipping(norm_type):
    """The NumPy baseline clips the same way (its norm to float rounding, its step to a
    few ulps: NumPy has no fused multiply-add)."""
    rng = np.random.default_rng(9)
    ours = arrays(rng, np.float64)
    theirs = [p.copy() for p in ours]
    opt = fm.SGD(ours, lr=0.1, momentum=0.9, clip_grad_norm=2.0, norm_type=norm_type,
                 skip_if_nonfinite=True)
    ref = baseline.SGD(theirs, lr=0.1, momentum=0.9, clip_grad_norm=2.0,
                       norm_type=norm_type, skip_if_nonfinite=True)
    for step in range(4):
        grads = arrays(rng, np.float64)
        if step == 2:
            grads[0][5] = math.nan
        opt.step(grads)
        ref.step(grads)
        if step == 2:
            assert math.isnan(ref.last_grad_norm)
        else:
            assert ref.last_grad_norm == pytest.approx(opt.last_grad_norm, rel=1e-12)
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert ref.skipped_steps == opt.skipped_steps == 1 and ref.steps == opt.steps == 3


@settings(max_examples=60, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 9)), min_size=1,
                       max_size=5),
       dtypes=st.lists(st.sampled_from(DTYPES + [ml_dtypes.bfloat16, np.float16]),
                       min_size=5, max_size=5),
       max_norm=st.floats(0.0, 50.0), norm_type=st.sampled_from([2.0, math.inf]),
       scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2 ** 16))
def test_property_clipped_step_is_the_step_of_scaled_grads(shapes, dtypes, max_norm,
                                                            norm_type, scale, seed):
    """Any shapes, mixed dtypes (16-bit ones too), max norms: the total is the float64
    norm (rounded to float32 unless an array is float64), the step that of grads times the
    coefficient (16-bit grads: through float32, written into their dtype)."""
    rng = np.random.default_rng(seed)
    params = [(rng.standard_normal(s)).astype(d) for s, d in zip(shapes, dtypes)]
    grads = [(scale * rng.standard_normal(s)).astype(d) for s, d in zip(shapes, dtypes)]
    theirs = [p.copy() for p in params]
    opt = fm.SGD(params, lr=0.1, momentum=0.5, clip_grad_norm=max_norm, norm_type=norm_type)
    opt.step(grads)
    f32 = all(p.dtype != np.float64 for p in params)
    exact = (max((float(np.max(np.abs(g))) for g in grads if g.size), default=0.0)
             if norm_type == math.inf else
             math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads)))
    assert opt.last_grad_norm == pytest.approx(float(np.float32(exact)) if f32 else exact,
                                               rel=1e-13, abs=0)
    coef = kernels.clip_coefficient(opt.last_grad_norm, max_norm, f32)
    fm.SGD(theirs, lr=0.1, momentum=0.5).step(
        [clipped_in_dtype([g], coef)[0] if g.dtype.itemsize == 2 else g * g.dtype.type(coef)
         for g in grads])
    assert snapshot(*params) == snapshot(*theirs)


def test_norm_and_clipped_step_bits_do_not_depend_on_the_cpu_target():
    """The lanes are fixed: the portable and AVX2 cores give the same total (float64
    squares are not exact, so the order shows) and the same clipped step."""
    from fastmomentum import _target
    rng = np.random.default_rng(10)
    grads = [rng.standard_normal(40003), rng.standard_normal(999).astype(np.float32)]
    results = []
    for target in _target.TARGETS:
        with _target.using(target):
            for norm_type in (2.0, math.inf):
                params = [np.ones_like(g) for g in grads]
                opt = fm.SGD(params, lr=0.1, clip_grad_norm=0.5, norm_type=norm_type)
                opt.step(grads)
                results.append((opt.last_grad_norm, [p.tobytes() for p in params]))
    assert len(results) == 2 * len(_target.TARGETS) and len(_target.TARGETS) >= 1
    assert all(r == results[i % 2] for i, r in enumerate(results))


def test_a_skipped_step_leaves_the_fused_ema():
    rng = np.random.default_rng(11)
    params = arrays(rng, np.float32)
    ema = fm.EMA(params, 0.9)
    opt = fm.SGD(params, lr=0.1, momentum=0.9, ema=ema, skip_if_nonfinite=True)
    opt.step(arrays(rng, np.float32))
    grads = arrays(rng, np.float32)
    grads[0][0] = math.nan
    before = snapshot(*params, *ema.raw_averages, *opt.momentum_buffers)
    opt.step(grads)
    assert snapshot(*params, *ema.raw_averages, *opt.momentum_buffers) == before
    assert (ema.updates, opt.steps, opt.skipped_steps) == (1, 1, 1)


# ---------------------------------------------------------------------------------------
# state-clip: bfloat16/float16 params. The total is the norm of the widened grads (double
# sums, fixed order; float32 unless a param is float64), the coefficient the float32
# path's, and each grad is read as the clipped grad written into its dtype,
# round16(float32(grad * float32(coef))): oracle, grads scaled so in NumPy, then the
# unclipped 16-bit step (each rounding mode).

HALF = [ml_dtypes.bfloat16, np.float16]
HALF_SHAPES = [(300,), (17, 5), (0,), (40000,)]   # 40000: blocks, torch's chunks


def clipped_in_dtype(grads, coef):
    return [(g.astype(np.float32) * np.float32(coef)).astype(g.dtype) for g in grads]


def exact_total(grads, norm_type):
    if norm_type == math.inf:
        return max((float(np.max(np.abs(g.astype(np.float64)))) for g in grads if g.size),
                   default=0.0)
    return math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))


@pytest.mark.parametrize("dtype", HALF, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("rounding", ["torch", "once", "stochastic"])
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=option_id)
def test_16_bit_clipped_step_is_the_step_of_grads_clipped_into_their_dtype(
        options, norm_type, rounding, dtype):
    rng = np.random.default_rng(12)
    params = arrays(rng, dtype, HALF_SHAPES)
    theirs = [p.copy() for p in params]
    seed = {"seed": 5} if rounding == "stochastic" else {}
    opt = fm.SGD(params, lr=0.05, **options, clip_grad_norm=2.0, norm_type=norm_type,
                 rounding=rounding, **seed)
    ref = fm.SGD(theirs, lr=0.05, **options, rounding=rounding, **seed)
    for _ in range(3):
        grads = arrays(rng, dtype, HALF_SHAPES, scale=3.0)
        opt.step(grads)
        total = opt.last_grad_norm
        assert total == float(np.float32(exact_total(grads, norm_type)))
        assert total == pytest.approx(torch_total([g.astype(np.float32) for g in grads],
                                                  norm_type), rel=1e-6)
        coef = kernels.clip_coefficient(total, 2.0, True)
        assert coef < 1.0
        ref.step(clipped_in_dtype(grads, coef))
        assert snapshot(*params) == snapshot(*theirs)
        if options["momentum"]:
            assert snapshot(*opt.momentum_buffers) == snapshot(*ref.momentum_buffers)
    assert opt.steps == 3 and opt.skipped_steps == 0


@pytest.mark.parametrize("dtype", HALF, ids=["bfloat16", "float16"])
def test_16_bit_clipping_with_the_fused_ema_and_mixed_dtypes(dtype):
    """A float64 param makes the total and the coefficient float64 (as the float path);
    the 16-bit grads still read coef rounded to float32; the fused EMA averages the
    clipped step's weights."""
    rng = np.random.default_rng(13)
    params = arrays(rng, dtype, [(50,), (7,)]) + arrays(rng, np.float64, [(9,)])
    theirs = [p.copy() for p in params]
    opt = fm.SGD(params, lr=0.1, momentum=0.9, clip_grad_norm=1.0,
                 ema=fm.EMA(params, 0.9))
    ref = fm.SGD(theirs, lr=0.1, momentum=0.9, ema=fm.EMA(theirs, 0.9))
    grads = [3 * g for g in arrays(rng, dtype, [(50,), (7,)])] + arrays(rng, np.float64,
                                                                        [(9,)], 3.0)
    opt.step(grads)
    assert opt.last_grad_norm == pytest.approx(exact_total(grads, 2.0), rel=1e-15)
    coef = kernels.clip_coefficient(opt.last_grad_norm, 1.0, False)
    ref.step(clipped_in_dtype(grads[:2], coef) + [grads[2] * coef])
    assert snapshot(*params, *opt.ema.raw_averages) == snapshot(*theirs, *ref.ema.raw_averages)


@pytest.mark.parametrize("dtype", HALF, ids=["bfloat16", "float16"])
def test_16_bit_clipping_bits_do_not_depend_on_threads_or_target(dtype):
    from fastmomentum import _target
    rng = np.random.default_rng(14)
    grads = arrays(rng, dtype, [(THREADED,), (999,)], scale=2.0)
    assert_threads_run(THREADED)
    results = []
    for target in _target.TARGETS:
        with _target.using(target):
            for threads in (1, 2):
                fm.set_num_threads(threads)
                for norm_type in (2.0, math.inf):
                    params = [np.ones_like(g) for g in grads]
                    opt = fm.SGD(params, lr=0.1, momentum=0.9, clip_grad_norm=0.5,
                                 norm_type=norm_type, rounding="once")
                    opt.step(grads)
                    opt.step(grads)
                    results.append((opt.last_grad_norm, snapshot(*params)))
    fm.set_num_threads(2)
    assert len(results) == 4 * len(_target.TARGETS)
    assert all(r == results[i % 2] for i, r in enumerate(results))


@pytest.mark.parametrize("dtype", HALF, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_16_bit_skip_if_nonfinite_leaves_everything(dtype, bad):
    rng = np.random.default_rng(15)
    params = arrays(rng, dtype, HALF_SHAPES)
    opt = fm.SGD(params, lr=0.1, momentum=0.9, skip_if_nonfinite=True)
    opt.step(arrays(rng, dtype, HALF_SHAPES))
    grads = arrays(rng, dtype, HALF_SHAPES)
    grads[1][3, 2] = bad
    before = snapshot(*params, *opt.momentum_buffers)
    opt.step(grads)
    assert snapshot(*params, *opt.momentum_buffers) == before
    assert (opt.steps, opt.skipped_steps) == (1, 1) and not math.isfinite(opt.last_grad_norm)


@pytest.mark.parametrize("dtype", HALF, ids=["bfloat16", "float16"])
def test_baseline_mirrors_16_bit_clipping(dtype):
    """The baseline's norm to float32 rounding, its step (float32 without fused
    multiply-adds, then rounded) to one unit of the 16-bit dtype of rounding="once"."""
    rng = np.random.default_rng(16)
    ours = arrays(rng, dtype, HALF_SHAPES)
    theirs = [p.copy() for p in ours]
    opt = fm.SGD(ours, lr=0.1, momentum=0.9, clip_grad_norm=2.0, skip_if_nonfinite=True,
                 rounding="once")
    ref = baseline.SGD(theirs, lr=0.1, momentum=0.9, clip_grad_norm=2.0,
                       skip_if_nonfinite=True)
    for step in range(3):
        grads = arrays(rng, dtype, HALF_SHAPES, scale=3.0)
        if step == 1:
            grads[0][7] = math.nan
        opt.step(grads)
        ref.step(grads)
        if step == 1:
            assert math.isnan(ref.last_grad_norm)
        else:
            assert ref.last_grad_norm == pytest.approx(opt.last_grad_norm, rel=1e-7)
        for a, b in zip(ours, theirs):
            ulps = np.abs(a.view(np.int16).astype(np.int32) - b.view(np.int16).astype(np.int32))
            assert ulps.max(initial=0) <= 1
    assert ref.skipped_steps == opt.skipped_steps == 1 and ref.steps == opt.steps == 2
