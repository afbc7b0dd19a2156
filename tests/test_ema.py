"""fastmomentum.EMA / fastmomentum.torch.EMA against closed forms and torch's AveragedModel."""
import numpy as np
import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import fastmomentum as fm
import fastmomentum.torch as fmt

SHAPES = [(4, 3), (7,), (0,), (1,)]
DTYPES = [np.float32, np.float64, np.float32, np.float64]


def trajectory(rng, steps):
    return [[rng.standard_normal(s).astype(d) for s, d in zip(SHAPES, DTYPES)]
            for _ in range(steps)]


def closed_form(values, decays, start):
    """sum of weighted values in float64: prod(decays)*start + sum (1-d_k) prod_{j>k} d_j x_k."""
    avg = np.array(start, dtype=np.float64)
    for x, d in zip(values, decays):
        avg = d * avg + (1 - d) * np.asarray(x, dtype=np.float64)
    return avg


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_equals_closed_form(warmup):
    rng = np.random.default_rng(0)
    xs = trajectory(rng, 12)
    ema = fm.EMA(xs[0], decay=0.9, warmup=warmup)
    for x in xs[1:]:
        ema.update(x)
    decays = [min(0.9, (1 + t) / (10 + t)) if warmup else 0.9 for t in range(11)]
    for i, avg in enumerate(ema.averages):
        assert avg.dtype == DTYPES[i]
        expected = closed_form([x[i] for x in xs[1:]], decays, xs[0][i])
        rtol = 1e-5 if avg.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(avg, expected, rtol=rtol, atol=rtol)
    assert ema.updates == 11


def test_warmup_schedule():
    ema = fm.EMA([np.zeros(2)], decay=0.95, warmup=True)
    used = []
    for _ in range(200):
        used.append(ema.next_decay())
        ema.update([np.ones(2)])
    assert used[0] == 0.1 and used[1] == 2 / 11 and used[-1] == 0.95
    assert all(d == min(0.95, (1 + t) / (10 + t)) for t, d in enumerate(used))


def test_debias_matches_optax_closed_form():
    rng = np.random.default_rng(1)
    xs = trajectory(rng, 6)
    ema = fm.EMA(xs[0], decay=0.8, debias=True)
    assert all(not a.any() for a in ema.raw_averages)  # starts at zero, as Optax
    for t, x in enumerate(xs[1:], start=1):
        ema.update(x)
        for i, avg in enumerate(ema.averages):
            raw = closed_form([y[i] for y in xs[1:t + 1]], [0.8] * t, np.zeros(SHAPES[i]))
            rtol = 1e-5 if avg.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(avg, raw / (1 - 0.8 ** t), rtol=rtol, atol=rtol)
    # a constant signal is recovered exactly from the first update on
    const = fm.EMA([np.zeros(3)], decay=0.99, debias=True)
    const.update([np.full(3, 2.5)])
    np.testing.assert_allclose(const.averages[0], 2.5, rtol=1e-15)


def test_seed_example_ema_of_0_to_9():
    ema = fm.EMA([np.zeros(1)], decay=0.9)
    for x in range(1, 10):
        ema.update([np.array([float(x)])])
    expected = sum(0.1 * 0.9 ** (9 - k) * k for k in range(1, 10))
    np.testing.assert_allclose(ema.averages[0][0], expected, rtol=1e-14)


def test_update_validates_everything_first():
    rng = np.random.default_rng(2)
    xs = trajectory(rng, 2)
    ema = fm.EMA(xs[0], decay=0.9)
    before = [a.tobytes() for a in ema.raw_averages]
    bad = list(xs[1])
    bad[1] = bad[1].astype(np.float32)
    with pytest.raises(TypeError, match=r"EMA.update: `values\[1\]`"):
        ema.update(bad)
    with pytest.raises(ValueError, match="`values` must hold 4 arrays"):
        ema.update(xs[1][:3])
    assert [a.tobytes() for a in ema.raw_averages] == before and ema.updates == 0


def test_state_dict_round_trip_and_refusal():
    rng = np.random.default_rng(3)
    xs = trajectory(rng, 5)
    a = fm.EMA(xs[0], decay=0.9, warmup=True)
    for x in xs[1:3]:
        a.update(x)
    b = fm.EMA(xs[0], decay=0.5)
    b.load_state_dict(a.state_dict())
    for x in xs[3:]:
        a.update(x)
        b.update(x)
    assert [v.tobytes() for v in a.averages] == [v.tobytes() for v in b.averages]
    sd = a.state_dict()
    sd["averages"][0] = np.zeros((2, 2))
    before = [v.tobytes() for v in b.raw_averages]
    with pytest.raises(ValueError, match=r"EMA.load_state_dict: `averages\[0\]` must have"):
        b.load_state_dict(sd)
    assert [v.tobytes() for v in b.raw_averages] == before


def test_torch_ema_equals_averaged_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    reference.update_parameters(model)  # its first update copies the weights
    ema = fmt.EMA(model, decay=0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(10):
        opt.zero_grad()
        model(torch.randn(8, 5)).pow(2).mean().backward()
        opt.step()
        reference.update_parameters(model)
        ema.update(model)
    assert ema.updates == 10
    for ours, theirs in zip(ema.averages, reference.module.parameters()):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-6, atol=1e-6)
    evaluation = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(),
                                     torch.nn.Linear(4, 2))
    ema.copy_to(evaluation)
    for ours, p in zip(ema.averages, evaluation.parameters()):
        assert torch.equal(ours, p.detach())


def test_torch_ema_state_dict_and_refusals():
    params = [torch.randn(3), torch.randn(2, 2, dtype=torch.float64)]
    ema = fmt.EMA(params, decay=0.5)
    ema.update([p * 2 for p in params])
    copy = fmt.EMA([torch.zeros(3), torch.zeros(2, 2, dtype=torch.float64)])
    copy.load_state_dict(ema.state_dict())
    for a, b in zip(copy.averages, ema.averages):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match=r"EMA: `params\[0\]` must be a dense CPU float32"):
        fmt.EMA([torch.zeros(3, dtype=torch.int32)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_torch_sgd_with_fused_ema_equals_step_then_ema(dtype):
    def build():
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype))
                  for s in [(70_000,), (3, 4), (5,), (0,), (2, 2)]]
        params[4].data = params[4].data.t()  # non-contiguous: stepped by torch, EMA apart
        return params
    fused_params, plain_params = build(), build()
    fused_ema = fmt.EMA(fused_params, decay=0.9, warmup=True)
    opt = fmt.SGD([{"params": fused_params[:2]}, {"params": fused_params[2:], "lr": 0.2}],
                  lr=0.1, momentum=0.9, ema=fused_ema)
    plain_ema = fmt.EMA(plain_params, decay=0.9, warmup=True)
    ref = torch.optim.SGD([{"params": plain_params[:2]}, {"params": plain_params[2:],
                                                           "lr": 0.2}], lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for step in range(4):
        for i, (a, b) in enumerate(zip(fused_params, plain_params)):
            g = None if (step == 1 and i == 2) else torch.randn(a.shape, generator=gen,
                                                                  dtype=dtype)
            a.grad, b.grad = g, None if g is None else g.clone()
        opt.step()
        ref.step()
        plain_ema.update(plain_params)
    assert fused_ema.updates == 4
    for a, b in zip(fused_params, plain_params):
        assert torch.equal(a, b)
    for a, b in zip(fused_ema.averages, plain_ema.averages):
        assert torch.equal(a, b)


def test_torch_sgd_refuses_an_ema_of_other_params():
    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError, match="`ema` must average this optimizer's params"):
        fmt.SGD(params, lr=0.1, ema=fmt.EMA([torch.zeros(4)]))
    opt = fmt.SGD(params, lr=0.1, ema=fmt.EMA(params))
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]})
    with pytest.raises(ValueError, match="`ema` must average this optimizer's params"):
        opt.step()
