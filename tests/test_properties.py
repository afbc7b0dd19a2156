"""Property tests: random shapes, dtypes and hyper-parameters against torch and the baseline."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastmomentum import baseline, ema_update, momentum_step

SETTINGS = settings(max_examples=150, deadline=None)

dtypes = st.sampled_from([np.float32, np.float64])
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=40)
unit = st.floats(0.0, 1.0)


@st.composite
def problems(draw):
    dtype = draw(dtypes)
    shape = draw(shapes)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    p, g, v = ((rng.standard_normal(shape) * scale).astype(dtype) for _ in range(3))
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99]) | unit)
    nesterov = draw(st.booleans()) and momentum > 0
    options = dict(
        lr=draw(st.floats(0.0, 10.0)),
        momentum=momentum,
        dampening=0.0 if nesterov else draw(st.sampled_from([0.0]) | unit),
        weight_decay=draw(st.sampled_from([0.0]) | st.floats(0.0, 1.0)),
        nesterov=nesterov,
        maximize=draw(st.booleans()),
    )
    return p, g, v, options


@SETTINGS
@given(problems(), st.integers(1, 3))
def test_steps_equal_torch_bit_for_bit(problem, steps):
    p0, g, v0, options = problem
    tp = torch.tensor(p0, requires_grad=True)
    opt = torch.optim.SGD([tp], **options)
    p, v = p0.copy(), v0.copy()
    for i in range(steps):
        tp.grad = torch.tensor(g * (i + 1))
        opt.step()
        momentum_step(p, g * (i + 1), v, first_step=i == 0, **options)
    np.testing.assert_array_equal(p, tp.detach().numpy())
    if options["momentum"]:
        np.testing.assert_array_equal(v, opt.state[tp]["momentum_buffer"].numpy())
    else:
        np.testing.assert_array_equal(v, v0)


@SETTINGS
@given(problems(), st.booleans())
def test_step_matches_baseline(problem, first_step):
    p0, g, v0, options = problem
    p, v = p0.copy(), v0.copy()
    pb, vb = p0.copy(), v0.copy()
    momentum_step(p, g, v, first_step=first_step, **options)
    baseline.momentum_step(pb, g, vb, first_step=first_step, **options)
    eps = np.finfo(p0.dtype).eps
    # Error bound: a few roundings of the largest term that enters each element.
    terms = (np.abs(p0) * (1 + options["lr"] * options["weight_decay"] * 4)
             + options["lr"] * 4 * (np.abs(g) + np.abs(v0) + options["weight_decay"] * np.abs(p0)))
    np.testing.assert_array_less(np.abs(p - pb), 16 * eps * terms + np.finfo(p0.dtype).tiny)
    np.testing.assert_array_less(np.abs(v - vb),
                                 16 * eps * (np.abs(v0) + 4 * np.abs(g) + np.abs(p0))
                                 + np.finfo(p0.dtype).tiny)


@SETTINGS
@given(dtypes, shapes, unit, st.integers(0, 2 ** 32 - 1))
def test_ema_matches_closed_form(dtype, shape, decay, seed):
    rng = np.random.default_rng(seed)
    a0 = rng.standard_normal(shape).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    got = ema_update(a0.copy(), x, decay)
    want = baseline.ema_update(a0.copy(), x, decay)
    d = float(dtype(decay))
    exact = d * a0.astype(np.float64) + float(dtype(1 - decay)) * x.astype(np.float64)
    eps = np.finfo(dtype).eps
    bound = 2 * eps * (np.abs(a0) + np.abs(x)) + np.finfo(dtype).tiny
    np.testing.assert_array_less(np.abs(got - exact), bound)
    np.testing.assert_array_less(np.abs(got - want), 2 * bound)
