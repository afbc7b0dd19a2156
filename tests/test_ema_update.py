"""ema_update against closed forms, the NumPy baseline and torch's lerp_."""
import math

import numpy as np
import pytest
import torch

from fastmomentum import baseline, ema_update

from _grid import DTYPES
from conftest import on_target, targets_beside_portable


def test_seed_example_ema_of_0_to_9():
    """The tutorial's example: v_t = 0.9 v_{t-1} + 0.1 x_t over x = 0..9 from v_0 = 0."""
    beta = 0.9
    v = np.zeros(1)
    for t, x in enumerate(range(10), start=1):
        assert ema_update(v, np.array([float(x)]), beta) is v
        closed_form = math.fsum((1 - beta) * beta ** (t - 1 - k) * k for k in range(t))
        assert v[0] == pytest.approx(closed_form, rel=1e-14)
        # bias-corrected, it is the weighted mean of what it has seen (weights beta^age)
        weighted_mean = (math.fsum(beta ** (t - 1 - k) * k for k in range(t))
                         / math.fsum(beta ** (t - 1 - k) for k in range(t)))
        assert v[0] / (1 - beta ** t) == pytest.approx(weighted_mean, rel=1e-13)
    # Started from zero, the raw average is pulled below the arithmetic mean 4.5; corrected,
    # it weights the recent (larger) values most and lies above it.
    assert v[0] < np.mean(np.arange(10)) < v[0] / (1 - beta ** 10)

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9, 0.999, 1.0])
def test_matches_closed_form_and_baseline(rng, dtype, decay):
    a0 = rng.standard_normal((5, 123)).astype(dtype)
    x = rng.standard_normal((5, 123)).astype(dtype)
    got = ema_update(a0.copy(), x, decay)
    want = baseline.ema_update(a0.copy(), x, decay)
    exact = decay * a0.astype(np.float64) + (1 - decay) * x.astype(np.float64)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(got, exact, **tol)
    np.testing.assert_allclose(got, want, **tol)
    assert got.dtype == dtype
    if decay == 1.0:
        np.testing.assert_array_equal(got, a0)
    if decay == 0.0:
        np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_lerp(rng, dtype):
    a0 = rng.standard_normal(1000).astype(dtype)
    x = rng.standard_normal(1000).astype(dtype)
    got = ema_update(a0.copy(), x, 0.99)
    want = torch.from_numpy(a0.copy()).lerp_(torch.from_numpy(x), 0.01).numpy()
    tol = 1e-6 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_target_gives_the_portable_bits(rng, dtype):
    """Each target beside the portable one (AVX2) against the portable one, on a size with
    a vectorised body and a tail, and one split across threads."""
    for target in targets_beside_portable():
        for n in (777, 300_001):
            a0 = rng.standard_normal(n).astype(dtype)
            x = rng.standard_normal(n).astype(dtype)
            for decay in (0.9, 0.999):
                np.testing.assert_array_equal(
                    on_target(target, ema_update, a0.copy(), x, decay),
                    on_target("portable", ema_update, a0.copy(), x, decay), err_msg=target)


def test_empty_is_a_no_op():
    a = np.empty((0, 4))
    assert ema_update(a, np.empty((0, 4)), 0.5) is a
