"""momentum_step against torch.optim.SGD (bit for bit), the NumPy baseline and closed forms."""
import math

import numpy as np
import pytest
import torch

import fastmomentum
from fastmomentum import baseline, momentum_step
from fastmomentum import _target

from _grid import DTYPES, SGD_OPTIONS as OPTIONS, option_id
from conftest import THREADED, assert_threads_run


def torch_sgd_trajectory(p0, grads, lrs, options):
    """Run torch.optim.SGD (default CPU path) over ``grads``; returns the params after each step
    and the final momentum buffer."""
    p = torch.tensor(p0, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lrs[0], **options)
    out = []
    for g, lr in zip(grads, lrs):
        opt.param_groups[0]["lr"] = lr
        p.grad = torch.tensor(g)
        opt.step()
        out.append(p.detach().numpy().copy())
    buf = opt.state[p].get("momentum_buffer")
    return out, None if buf is None else buf.numpy().copy()


def kernel_trajectory(step, p0, grads, lrs, options):
    p = p0.copy()
    v = np.full_like(p0, np.nan)  # first_step must ignore whatever the buffer holds
    out = []
    for i, (g, lr) in enumerate(zip(grads, lrs)):
        step(p, g, v, lr=lr, first_step=(i == 0), **options)
        out.append(p.copy())
    return out, v


def make_problem(rng, dtype, shape, steps=6):
    p0 = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(steps)]
    lrs = [0.1 * 0.7 ** i + 1e-3 for i in range(steps)]  # a schedule: lr changes every step
    return p0, grads, lrs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 33), (1000,)])
def test_trajectory_equals_torch_bit_for_bit(rng, dtype, options, shape):
    p0, grads, lrs = make_problem(rng, dtype, shape)
    expected, expected_buf = torch_sgd_trajectory(p0, grads, lrs, options)
    got, buf = kernel_trajectory(momentum_step, p0, grads, lrs, options)
    for e, g in zip(expected, got):
        assert e.dtype == g.dtype
        np.testing.assert_array_equal(g, e)
    if options["momentum"]:
        np.testing.assert_array_equal(buf, expected_buf)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_threaded_trajectory_equals_torch(rng, dtype):
    options = dict(momentum=0.9, weight_decay=1e-4, nesterov=True)
    assert_threads_run(THREADED)
    p0, grads, lrs = make_problem(rng, dtype, (THREADED,), steps=3)
    expected, _ = torch_sgd_trajectory(p0, grads, lrs, options)
    got, _ = kernel_trajectory(momentum_step, p0, grads, lrs, options)
    np.testing.assert_array_equal(got[-1], expected[-1])


@pytest.mark.parametrize("target", _target.TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_target_equals_torch(rng, target, dtype):
    """The portable and the AVX2 cores compute the same bits (explicit fma in both)."""
    options = dict(momentum=0.9, dampening=0.1, weight_decay=0.01, maximize=True)
    p0, grads, lrs = make_problem(rng, dtype, (1031,))
    expected, _ = torch_sgd_trajectory(p0, grads, lrs, options)
    with _target.using(target):
        got, _ = kernel_trajectory(momentum_step, p0, grads, lrs, options)
    np.testing.assert_array_equal(got[-1], expected[-1])


def test_nan_in_grad_propagates_as_in_torch(rng):
    p0, grads, lrs = make_problem(rng, np.float32, (50,), steps=3)
    grads[1][[3, 17]] = np.nan
    grads[2][5] = np.inf
    options = dict(momentum=0.9, weight_decay=0.1)
    expected, _ = torch_sgd_trajectory(p0, grads, lrs, options)
    got, _ = kernel_trajectory(momentum_step, p0, grads, lrs, options)
    np.testing.assert_array_equal(got[-1], expected[-1])  # assert_array_equal: NaN == NaN
    bad = [3, 5, 17]
    assert not np.isfinite(got[-1][bad]).any() and np.isfinite(np.delete(got[-1], bad)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
def test_matches_numpy_baseline(rng, dtype, options):
    p0, grads, lrs = make_problem(rng, dtype, (4, 257))
    got, v = kernel_trajectory(momentum_step, p0, grads, lrs, options)
    want, v_want = kernel_trajectory(baseline.momentum_step, p0, grads, lrs, options)
    # NumPy has no fused multiply-add: a few units in the last place apart.
    tol = dict(rtol=2e-6, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(got[-1], want[-1], **tol)
    if options["momentum"]:
        np.testing.assert_allclose(v, v_want, **tol)


def test_constant_gradient_closed_form():
    """With a constant gradient g the heavy-ball velocity is g*(1-mu^t)/(1-mu) (dampening 0)
    and the textbook EMA (dampening = beta) is g*(1-beta^t) from a zero buffer."""
    mu, lr, g, steps = 0.9, 0.05, 2.0, 40
    p = np.zeros(3)
    v = np.zeros(3)
    grad = np.full(3, g)
    for t in range(1, steps + 1):
        momentum_step(p, grad, v, lr=lr, momentum=mu, first_step=(t == 1))
        assert v == pytest.approx(g * (1 - mu ** t) / (1 - mu), rel=1e-13)
    expected_p = -lr * g * sum((1 - mu ** t) / (1 - mu) for t in range(1, steps + 1))
    assert p == pytest.approx(expected_p, rel=1e-13)

    beta = 0.9
    v_ema = np.zeros(1)
    for t in range(1, steps + 1):
        momentum_step(np.zeros(1), np.full(1, g), v_ema, lr=0.0, momentum=beta, dampening=beta)
        assert v_ema[0] == pytest.approx(g * (1 - beta ** t), rel=1e-13)


def test_plain_sgd_leaves_velocity_alone(rng):
    p = rng.standard_normal(10)
    g = rng.standard_normal(10)
    v = rng.standard_normal(10)
    v_before = v.copy()
    expected = p - 0.5 * g
    momentum_step(p, g, v, lr=0.5)
    np.testing.assert_array_equal(v, v_before)
    np.testing.assert_allclose(p, expected, rtol=1e-15)
    momentum_step(p, g, None, lr=0.5)  # no buffer needed without momentum
    np.testing.assert_allclose(p, expected - 0.5 * g, rtol=1e-15)


@pytest.mark.parametrize("step", [momentum_step, baseline.momentum_step])
@pytest.mark.parametrize("shape", [(0,), (3, 0)])
def test_empty_buffers_are_a_no_op(step, shape):
    """Empty views into larger arrays: the step writes no byte around them."""
    store = [np.full(16, 7.0, np.float32) for _ in range(3)]
    p, g, v = (s[4:4].reshape(shape) for s in store)
    step(p, g, v, lr=0.1, momentum=0.9)
    assert p.shape == shape
    for s in store:
        np.testing.assert_array_equal(s, 7.0)


def test_nesterov_textbook_identity():
    """Nesterov's look-ahead: the applied update is g + mu*v_new."""
    p = np.array([1.0])
    v = np.array([0.5])
    g = np.array([0.25])
    momentum_step(p, g, v, lr=0.1, momentum=0.9, nesterov=True)
    v_new = 0.9 * 0.5 + 0.25
    assert v[0] == v_new
    assert p[0] == pytest.approx(1.0 - 0.1 * (0.25 + 0.9 * v_new), rel=1e-15)


def test_thread_count_does_not_change_bits(rng, restore_threads):
    n = THREADED
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    results = []
    for threads in (1, 2):
        fastmomentum.set_num_threads(threads)
        # a serial build (no OpenMP: the .ci/run leg) runs one thread whatever is asked
        assert fastmomentum.get_num_threads() == (threads if fastmomentum.HAS_OPENMP else 1)
        if threads == 2:
            assert_threads_run(n)
        p, v = p0.copy(), np.zeros_like(p0)
        for i in range(3):
            momentum_step(p, g, v, lr=0.01, momentum=0.9, nesterov=True, first_step=i == 0)
        results.append((p, v))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_float32_scalars_are_rounded_like_torch():
    """lr=0.1 is not representable: torch rounds it to float32 before multiplying."""
    p = np.ones(1, np.float32)
    momentum_step(p, np.ones(1, np.float32), None, lr=0.1)
    assert p[0] == np.float32(1) - np.float32(0.1)
    assert math.isclose(float(p[0]), 0.9, rel_tol=1e-7)
