"""fastmomentum.torch.SGD(flat=True) with clip_grad_norm, skip_if_nonfinite and GradScaler:
one norm pass and one step call per flat buffer, trajectories bit for bit as
torch.nn.utils.clip_grad_norm_ (with the coefficient of fastmomentum's total, see
docs/clipping-and-amp.md) then torch.optim.SGD, over real training loops."""
import copy
import math
import types

import pytest
import torch

import fastmomentum.torch as fmt
from fastmomentum import _torch_flat
from fastmomentum import torch as fm_torch
from test_torch_flat import MLP, Conv, batch, groups

pytestmark = pytest.mark.skipif(not fmt.FAST_PATH, reason="flat steps need the fast path")


class Calls:
    """Counts the flat path's calls: plans (carriers per plan) and torch_sgd_clip_run (plans
    per call); the per-tensor planning of SGD._plan must not run."""

    def __init__(self, monkeypatch):
        self.carriers, self.clip_runs = [], []
        kernels = _torch_flat._kernels
        flat_ns = types.SimpleNamespace(**vars(kernels))
        torch_ns = types.SimpleNamespace(**vars(fm_torch._kernels))

        def plan(carriers, *args):
            self.carriers.append(len(carriers))
            return kernels.torch_sgd_group_plan(carriers, *args)

        def clip_run(plans, *args):
            self.clip_runs.append(len(plans))
            return kernels.torch_sgd_clip_run(plans, *args)

        def no_per_tensor_plan(*args):
            raise AssertionError("a flat clipped step planned tensor by tensor")
        flat_ns.torch_sgd_group_plan = plan
        torch_ns.torch_sgd_clip_run = clip_run
        monkeypatch.setattr(_torch_flat, "_kernels", flat_ns)
        monkeypatch.setattr(fm_torch, "_kernels", torch_ns)
        monkeypatch.setattr(fmt.SGD, "_plan", no_per_tensor_plan)


def clip_with(model, coef, dtype):
    """torch.nn.utils.clip_grads_with_norm_'s scaling with a given coefficient."""
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(torch.tensor(coef, dtype=dtype))


def coefficient(total, max_norm, dtype):
    return torch.clamp(max_norm / (torch.tensor(total, dtype=dtype) + 1e-6), max=1.0).item()


def bits(t):
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int64)


def check_same(theirs, ours, opt_t, opt_o, grads_too):
    for (name, a), b in zip(theirs.named_parameters(), ours.parameters()):
        assert torch.equal(a, b), name
        if grads_too:
            assert (a.grad is None) == (b.grad is None), name
            if a.grad is not None:  # bits: NaN grads (a skipped step's) compare too
                assert torch.equal(bits(a.grad), bits(b.grad)), name
    st_t, st_o = opt_t.state_dict(), opt_o.state_dict()
    assert st_t["state"].keys() == st_o["state"].keys()
    for k in st_t["state"]:
        assert torch.equal(st_t["state"][k]["momentum_buffer"],
                           st_o["state"][k]["momentum_buffer"])


OPTIONS = [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
           dict(momentum=0.8, dampening=0.1, weight_decay=1e-3, maximize=True),
           dict(momentum=0.0, weight_decay=1e-2)]


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("model_class", [MLP, Conv], ids=lambda c: c.__name__)
def test_clipped_loop_equals_torch_in_one_call_per_buffer(model_class, options, norm_type,
                                                          write, monkeypatch):
    """Two param groups, params without grads (MLP), an lr scheduler: every step is one
    torch_sgd_clip_run over one plan per flat buffer, its carriers the buffer's runs."""
    calls = Calls(monkeypatch)
    torch.manual_seed(0)
    theirs = model_class()
    ours = copy.deepcopy(theirs)
    max_norm = 0.05
    opt_t = torch.optim.SGD(groups(theirs, options), lr=0.1)
    opt_o = fmt.SGD(groups(ours, options), lr=0.1, flat=True, clip_grad_norm=max_norm,
                    norm_type=norm_type, write_clipped_grads=write)
    scheds = [torch.optim.lr_scheduler.StepLR(o, 2, gamma=0.5) for o in (opt_t, opt_o)]
    gen = torch.Generator().manual_seed(1)
    clipped = 0
    for step in range(6):
        x, y = batch(theirs, gen)
        for model, opt in ((theirs, opt_t), (ours, opt_o)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
        before = [None if p.grad is None else p.grad.clone() for p in ours.parameters()]
        opt_o.step()
        total = opt_o.last_grad_norm
        grads = [p.grad.double() for p in theirs.parameters() if p.grad is not None]
        assert total == pytest.approx(
            torch.nn.utils.get_total_norm(grads, norm_type).item(), rel=1e-6)
        coef = coefficient(total, max_norm, torch.float32)
        clipped += coef < 1.0
        clip_with(theirs, coef, torch.float32)
        opt_t.step()
        for s in scheds:
            s.step()
        check_same(theirs, ours, opt_t, opt_o, grads_too=write)
        if not write:  # the grads were only read
            for p, g in zip(ours.parameters(), before):
                assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert clipped >= 3  # the coefficient was below 1 on most steps
    buffers = 2  # one per param group (float32)
    assert calls.clip_runs == [buffers] * 6
    runs = 2 if model_class is Conv else 4  # MLP: the unused Linear, the frozen param
    per_step = [sum(calls.carriers[i:i + 2]) for i in range(0, len(calls.carriers), 2)]
    assert per_step[1:] == [runs] * 5 and opt_o.flat_segments == runs
    assert opt_o.kernel_params == sum(p.grad is not None for p in ours.parameters())


def replace_grad(step, model):
    if step in (1, 3):
        model.b.weight.grad = model.b.weight.grad.clone() * 1.5


def replace_data(step, model):
    if step in (1, 4):
        with torch.no_grad():
            model.a.bias.data = model.a.bias.data * 0.5 + 1.0


def drop_grad(step, model):
    if step == 3:
        model.b.bias.grad = None


@pytest.mark.parametrize("tamper", [replace_grad, replace_data, drop_grad],
                         ids=lambda f: f.__name__)
def test_replaced_tensors_are_noticed_by_the_clipped_step(tamper):
    """The flat scan's staleness checks hold on clipped steps: a replaced grad or param is
    copied back before the norm pass, and the step stays exact."""
    torch.manual_seed(0)
    theirs = MLP()
    ours = copy.deepcopy(theirs)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    opt_o = fmt.SGD(ours.parameters(), lr=0.1, momentum=0.9, flat=True, clip_grad_norm=0.05)
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        x, y = batch(theirs, gen)
        for model, opt in ((theirs, opt_t), (ours, opt_o)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            tamper(step, model)
        opt_o.step()
        clip_with(theirs, coefficient(opt_o.last_grad_norm, 0.05, torch.float32),
                  torch.float32)
        opt_t.step()
        check_same(theirs, ours, opt_t, opt_o, grads_too=False)
    bucket = opt_o._flat_buckets[0][0]
    for i, p in enumerate(bucket.params):
        assert p.data_ptr() == bucket.param_views[i].data_ptr()
        assert p.grad is None or p.grad is bucket.grad_views[i]


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
@pytest.mark.parametrize("clip", [None, 0.05])
def test_grad_scaler_with_injected_infs_equals_torchs_recipe(clip, write, monkeypatch):
    """GradScaler("cpu") with inf grads at steps 2 and 4: torch's recipe
    (scaler.unscale_, clip_grad_norm_, scaler.step, scaler.update) against
    scaler.step(fastmomentum's flat SGD); params, momentum, scales (and the grads with
    write_clipped_grads) bit for bit; skipped steps run no kernel."""
    calls = Calls(monkeypatch)
    torch.manual_seed(0)
    theirs = MLP()
    ours = copy.deepcopy(theirs)
    opt_t = torch.optim.SGD(groups(theirs, dict(momentum=0.9, weight_decay=1e-3)), lr=0.1)
    opt_o = fmt.SGD(groups(ours, dict(momentum=0.9, weight_decay=1e-3)), lr=0.1, flat=True,
                    clip_grad_norm=clip, write_clipped_grads=write)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
               for _ in range(2)]
    gen = torch.Generator().manual_seed(1)
    for step in range(7):
        x, y = batch(theirs, gen)
        for model, opt, scaler in ((theirs, opt_t, scalers[0]), (ours, opt_o, scalers[1])):
            opt.zero_grad()
            scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
            if step in (2, 4):
                model.b.weight.grad[0, 1] = math.inf
        runs = len(calls.clip_runs)
        scalers[1].step(opt_o)
        scalers[0].unscale_(opt_t)
        if clip is not None:
            if step in (2, 4):  # ours computes no norm on a skipped step: torch's is inf
                torch.nn.utils.clip_grad_norm_(theirs.parameters(), clip)
            else:
                clip_with(theirs, coefficient(opt_o.last_grad_norm, clip, torch.float32),
                          torch.float32)
        scalers[0].step(opt_t)
        for scaler in scalers:
            scaler.update()
        assert scalers[0].get_scale() == scalers[1].get_scale()
        if step in (2, 4):
            assert len(calls.clip_runs) == runs and opt_o.kernel_params == 0
        else:
            assert calls.clip_runs[runs:] == [2] and opt_o.kernel_params > 0
        if write:
            check_same(theirs, ours, opt_t, opt_o, grads_too=True)
        else:
            check_same(theirs, ours, opt_t, opt_o, grads_too=False)


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
def test_skip_if_nonfinite_skips_the_flat_step_whole(write):
    """A NaN grad: nothing stepped, no momentum buffer made on a first step, the counters
    move; with write_clipped_grads the grads are what clip_grad_norm_ leaves (times NaN)."""
    torch.manual_seed(0)
    model = MLP()
    opt = fmt.SGD(model.parameters(), lr=0.1, momentum=0.9, flat=True, clip_grad_norm=0.05,
                  skip_if_nonfinite=True, write_clipped_grads=write)
    x, y = batch(model, torch.Generator().manual_seed(1))
    torch.nn.functional.mse_loss(model(x), y).backward()
    model.a.bias.grad[2] = math.nan
    before = [p.detach().clone() for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    opt.step()
    assert opt.skipped_steps == 1 and math.isnan(opt.last_grad_norm)
    assert opt.kernel_params == 0 and opt.flat_segments == 0 and not opt.state
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    for p, g in zip(model.parameters(), grads):
        if g is not None:
            assert (torch.isnan(p.grad).all() if write
                    else torch.equal(bits(p.grad), bits(g)))
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()  # the next step runs, and makes the buffers
    assert opt.skipped_steps == 1 and opt.kernel_params == 4 and len(opt.state) == 4
