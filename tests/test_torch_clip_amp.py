"""fastmomentum.torch: fused clipping, skip_if_nonfinite, the clip_grad_norm_ drop-in and
AMP (GradScaler("cpu")), against torch.optim.SGD's default for-loop."""
import copy
import math
import threading

import pytest
import torch

import fastmomentum as fm
import fastmomentum.torch as fmt
from fastmomentum._dispatch import kernels
from conftest import THREADED, assert_threads_run

pytestmark = pytest.mark.skipif(not fmt.FAST_PATH, reason="these tests prove the fast path")


def mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 4)).to(dtype)


def batches(steps, dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 12, generator=gen, dtype=dtype),
             torch.randn(16, 4, generator=gen, dtype=dtype)) for _ in range(steps)]


def backward(model, x, y, scale=1.0):
    model.zero_grad()
    (scale * torch.nn.functional.mse_loss(model(x), y)).backward()


def same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def clip_with(params, coef, dtype):
    for p in params:
        if p.grad is not None:
            p.grad.mul_(torch.tensor(coef, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
@pytest.mark.parametrize("options", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True,
                                                              weight_decay=1e-2),
                                     dict(weight_decay=1e-2, maximize=True)], ids=str)
def test_training_loop_equals_torch_clip_then_sgd(options, norm_type, dtype):
    """A real loop (forward, backward, zero_grad, lr scheduler, two param groups): each
    step is torch's clip with the coefficient of fastmomentum's total norm, then
    torch.optim.SGD, bit for bit; every param through the kernels."""
    ours, theirs = mlp(dtype=dtype), mlp(dtype=dtype)
    groups = lambda m: [{"params": m[0].parameters()},  # noqa: E731
                        {"params": m[2].parameters(), "lr": 0.02}]
    opt = fmt.SGD(groups(ours), lr=0.05, clip_grad_norm=0.3, norm_type=norm_type, **options)
    ref = torch.optim.SGD(groups(theirs), lr=0.05, **options)
    sched = [torch.optim.lr_scheduler.StepLR(o, 2, 0.5) for o in (opt, ref)]
    for x, y in batches(6, dtype):
        backward(ours, x, y)
        backward(theirs, x, y)
        opt.step()
        assert opt.kernel_params == 4
        total = opt.last_grad_norm
        grads = [p.grad.double() for p in theirs.parameters()]
        assert total == pytest.approx(
            torch.nn.utils.get_total_norm(grads, norm_type).item(), rel=1e-6)
        coef = torch.clamp(0.3 / (torch.tensor(total, dtype=dtype) + 1e-6), max=1.0).item()
        clip_with(theirs.parameters(), coef, dtype)
        ref.step()
        for s in sched:
            s.step()
        assert same(ours, theirs)
    assert opt.skipped_steps == 0


def test_grads_are_not_written_by_the_fused_clip():
    model = mlp()
    opt = fmt.SGD(model.parameters(), lr=0.1, momentum=0.9, clip_grad_norm=1e-3)
    backward(model, *batches(1)[0])
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    assert opt.kernel_params == 4
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_torch_fallback_params_are_clipped_by_torch():
    """A param whose grad is not contiguous goes to torch: the whole step is then torch's
    clip_grad_norm_ (its own norm) and its SGD, exactly."""
    ours, theirs = mlp(), mlp()
    opt = fmt.SGD(ours.parameters(), lr=0.1, momentum=0.9, clip_grad_norm=0.2)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    for x, y in batches(3):
        for m in (ours, theirs):
            backward(m, x, y)
            w = m[0].weight
            w.grad = w.grad.t().contiguous().t()  # column-major: not the fast path
        opt.step()
        assert opt.kernel_params == 3  # the other three params went through the kernels
        total = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.2)
        ref.step()
        assert opt.last_grad_norm == total.item()
        assert same(ours, theirs)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_skip_if_nonfinite_leaves_params_and_momentum(bad):
    model = mlp()
    opt = fmt.SGD(model.parameters(), lr=0.1, momentum=0.9, skip_if_nonfinite=True)
    data = batches(3)
    backward(model, *data[0])
    model[2].bias.grad[1] = bad
    before = [p.clone() for p in model.parameters()]
    opt.step()  # a first step: no momentum buffer is made
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert opt.skipped_steps == 1 and not opt.state and math.isnan(opt.last_grad_norm) \
        == math.isnan(bad)
    backward(model, *data[1])
    opt.step()  # no clipping: the plain step
    buffers = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    before = [p.clone() for p in model.parameters()]
    backward(model, *data[2])
    model[0].weight.grad[0, 0] = bad
    opt.step()
    assert opt.skipped_steps == 2 and opt.kernel_params == 0
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(torch.equal(opt.state[p]["momentum_buffer"], b)
               for p, b in zip(model.parameters(), buffers))


def test_norm_bits_do_not_depend_on_threads():
    big = torch.nn.Parameter(torch.randn(THREADED))
    small = torch.nn.Parameter(torch.randn(100))
    assert_threads_run(THREADED)
    totals = []
    for threads in (1, 2):
        fm.set_num_threads(threads)
        opt = fmt.SGD([big, small], lr=0.0, clip_grad_norm=1.0)
        big.grad, small.grad = torch.ones(THREADED) / 3, torch.full((100,), 0.7)
        opt.step()
        totals.append(opt.last_grad_norm)
        totals.append(fmt.clip_grad_norm_([big, small], 1e9).item())
    fm.set_num_threads(2)
    assert totals[0] == totals[1] == totals[2] == totals[3]


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_clip_grad_norm_drop_in(norm_type, dtype):
    """Same result dtype, the total within 1e-6 of torch's, the grads torch's
    clip_grads_with_norm_ of that total (norm_type 1: torch's own, exactly)."""
    shapes = [(30, 7), (5,)] + ([] if norm_type == math.inf else [(0,)])  # torch: no inf
    params = [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in shapes]  # of empty
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, q in zip(params, copies):
        p.grad = torch.randn(p.shape, dtype=dtype)
        q.grad = p.grad.clone()
    total = fmt.clip_grad_norm_(params, 0.5, norm_type)
    assert isinstance(total, torch.Tensor) and total.dtype == dtype and total.dim() == 0
    expected = torch.nn.utils.get_total_norm([q.grad.double() for q in copies if q.numel()],
                                             norm_type)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    if norm_type == 1.0:
        assert torch.equal(total, torch.nn.utils.clip_grad_norm_(copies, 0.5, norm_type))
    else:
        torch.nn.utils.clip_grads_with_norm_(copies, 0.5, total)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(params, copies))


def test_clip_grad_norm_drop_in_errors_and_edges():
    p = torch.nn.Parameter(torch.randn(4))
    assert torch.equal(fmt.clip_grad_norm_([p], 1.0), torch.tensor(0.0))  # no grads
    p.grad = torch.tensor([1.0, math.inf, 0.0, 2.0])
    with pytest.raises(RuntimeError, match="non-finite, so it cannot be clipped"):
        fmt.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert torch.equal(p.grad, torch.tensor([1.0, math.inf, 0.0, 2.0]))  # nothing written
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="clip_grad_norm_: .*`max_norm`"):
            fmt.clip_grad_norm_([p], bad)
    with pytest.warns(UserWarning, match="empty generator"):
        fmt.clip_grad_norm_((q for q in []), 1.0)
    e = torch.nn.Parameter(torch.randn(0))
    e.grad = torch.randn(0)
    with pytest.raises(RuntimeError, match="infinity norm on an empty tensor"):  # torch's
        fmt.clip_grad_norm_([e], 1.0, math.inf)


def scaled_loop(model, opt, scaler, data, inf_at=(), clip=None, unscale_first=False,
                scales=None):
    """A GradScaler loop with autocast, yielding after each step; ``inf_at``: steps whose
    grads get an inf; ``scales`` (a list) receives the scale after each step."""
    scales = [] if scales is None else scales
    for step, (x, y) in enumerate(data):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        scaler.scale(loss).backward()
        if step in inf_at:
            model[0].weight.grad[1, 2] = math.inf
        if unscale_first:
            scaler.unscale_(opt)
            if clip is not None:
                clip(model)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        yield step


@pytest.mark.parametrize("fused", [None, True])
def test_amp_trajectory_equals_torch_default(fused):
    """torch.amp.GradScaler("cpu") hands grad_scale/found_inf to the step (as to torch's
    fused SGD): unscaled as each grad is read, skipped whole on inf; the trajectory and
    the scales are torch.optim.SGD's (default for-loop) under the same scaler."""
    ours, theirs = mlp(), mlp()
    opt = fmt.SGD(ours.parameters(), lr=0.05, momentum=0.9, fused=fused)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    data = batches(8)
    make = lambda: torch.amp.GradScaler("cpu", init_scale=2.0 ** 12,  # noqa: E731
                                        growth_interval=2)
    scales_a, scales_b = [], []
    a = scaled_loop(ours, opt, make(), data, inf_at=(3, 4), scales=scales_a)
    b = scaled_loop(theirs, ref, make(), data, inf_at=(3, 4), scales=scales_b)
    for step, _ in zip(a, b):
        assert opt.kernel_params == (0 if step in (3, 4) else 4)  # the kernels took it
        assert same(ours, theirs)
    assert scales_a == scales_b and len(scales_a) == 8 and scales_a[3] < scales_a[2]
    assert not hasattr(opt, "grad_scale")


def test_amp_grads_are_read_unscaled_not_written():
    model = mlp()
    opt = fmt.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ref = mlp()
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    x, y = batches(1)[0]
    model.zero_grad()
    scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    scaler.step(opt)
    assert opt.kernel_params == 4
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    backward(ref, x, y)  # the unscaled grads: 256 is a power of two, unscaling is exact
    assert all(torch.equal(p.grad, 256.0 * q.grad) for p, q in zip(model.parameters(),
                                                                   ref.parameters()))


@pytest.mark.parametrize("unscale_first", [False, True])
def test_amp_with_fused_clipping(unscale_first):
    """clip_grad_norm under a GradScaler: the norm of the unscaled grads (torch's recipe:
    scaler.unscale_(opt), clip_grad_norm_, scaler.step(opt))."""
    ours, theirs = mlp(), mlp()
    opt = fmt.SGD(ours.parameters(), lr=0.05, momentum=0.9, clip_grad_norm=0.05)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    data = batches(5)

    def clip_like_ours(model):
        grads = [p.grad for p in model.parameters()]
        total, _ = kernels.torch_grads_norm(grads, False)
        clip_with(model.parameters(), kernels.clip_coefficient(total, 0.05, True),
                  torch.float32)
    make = lambda: torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)  # noqa: E731
    a = scaled_loop(ours, opt, make(), data, inf_at=(2,), unscale_first=unscale_first)
    b = scaled_loop(theirs, ref, make(), data, inf_at=(2,), clip=clip_like_ours,
                    unscale_first=True)
    for step, _ in zip(a, b):
        assert opt.kernel_params == (0 if step == 2 else 4)
        assert same(ours, theirs)


@pytest.mark.parametrize("name, value, error", [
    ("grad_scale", torch.tensor([1.0, 2.0]), TypeError),
    ("grad_scale", torch.tensor(4.0, dtype=torch.float64), TypeError),
    ("grad_scale", 4.0, TypeError),
    ("grad_scale", torch.tensor(0.0), ValueError),
    ("grad_scale", torch.tensor(math.inf), ValueError),
    ("found_inf", torch.zeros(2), TypeError),
])
def test_bad_amp_tensors_are_refused_and_nothing_written(name, value, error):
    model = mlp()
    opt = fmt.SGD(model.parameters(), lr=0.05, momentum=0.9)
    backward(model, *batches(1)[0])
    before = [p.clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    setattr(opt, name, value)
    with pytest.raises(error, match=f"SGD.step: `{name}`"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert not opt.state


def test_bad_clip_options_on_torch_sgd():
    model = mlp()
    with pytest.raises(ValueError, match="SGD: .*`clip_grad_norm`"):
        fmt.SGD(model.parameters(), lr=0.1, clip_grad_norm=-2.0)
    with pytest.raises(ValueError, match="SGD: `norm_type`"):
        fmt.SGD(model.parameters(), lr=0.1, clip_grad_norm=1.0, norm_type=1.0)
    opt = fmt.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.clip_grad_norm = math.nan
    backward(model, *batches(1)[0])
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="SGD.step: .*`clip_grad_norm`"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert not opt.state


def test_state_dict_keeps_torchs_layout_and_options_survive_pickling():
    import pickle
    model = mlp()
    opt = fmt.SGD(model.parameters(), lr=0.1, momentum=0.9, clip_grad_norm=0.5,
                  skip_if_nonfinite=True)
    backward(model, *batches(1)[0])
    opt.step()
    ref = torch.optim.SGD(mlp().parameters(), lr=0.1, momentum=0.9)
    ref.load_state_dict(opt.state_dict())  # no extra keys torch would keep
    assert set(opt.state_dict()["param_groups"][0]) == set(ref.state_dict()["param_groups"][0])
    again = pickle.loads(pickle.dumps(opt))
    assert (again.clip_grad_norm, again.skip_if_nonfinite, again.last_grad_norm) == (
        0.5, True, opt.last_grad_norm)


def test_mixed_dtypes_clip_in_float64_as_torch():
    """float32 and float64 params: torch's total is float64 (its stack promotes), the
    coefficient float64, each grad times it in its own dtype; the same here."""
    ours, theirs = mlp(), mlp()
    ours[2].double()
    theirs[2].double()
    opt = fmt.SGD(ours.parameters(), lr=0.1, momentum=0.9, clip_grad_norm=0.1)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    for x, y in batches(3):
        for m in (ours, theirs):
            m.zero_grad()
            out = m[2](m[1](m[0](x)).double())
            torch.nn.functional.mse_loss(out, y.double()).backward()
        opt.step()
        assert opt.kernel_params == 4
        total = torch.nn.utils.get_total_norm([p.grad for p in theirs.parameters()])
        assert total.dtype == torch.float64
        assert opt.last_grad_norm == pytest.approx(total.item(), rel=1e-6)
        torch.nn.utils.clip_grads_with_norm_(theirs.parameters(), 0.1,
                                             torch.tensor(opt.last_grad_norm,
                                                          dtype=torch.float64))
        ref.step()
        assert same(ours, theirs)


def test_clipping_with_the_fused_ema_equals_step_then_update():
    ours, theirs = mlp(), mlp()
    ema_a, ema_b = fmt.EMA(ours, 0.9), fmt.EMA(theirs, 0.9)
    opt = fmt.SGD(ours.parameters(), lr=0.1, momentum=0.9, clip_grad_norm=0.2, ema=ema_a)
    ref = fmt.SGD(theirs.parameters(), lr=0.1, momentum=0.9, clip_grad_norm=0.2)
    for x, y in batches(3):
        backward(ours, x, y)
        backward(theirs, x, y)
        opt.step()
        ref.step()
        ema_b.update(theirs)
        assert opt.kernel_params == ref.kernel_params == 4
        assert same(ours, theirs) and opt.last_grad_norm == ref.last_grad_norm
        assert all(torch.equal(a, b) for a, b in zip(ema_a.averages, ema_b.averages))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_amp_with_a_scale_that_is_not_a_power_of_two(dtype):
    """1/scale is inexact: each grad times float32(1/scale), rounded in its dtype, as
    GradScaler.unscale_ computes it (float64 grads too)."""
    ours, theirs = mlp(dtype=dtype), mlp(dtype=dtype)
    opt = fmt.SGD(ours.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    scalers = [torch.amp.GradScaler("cpu", init_scale=3.7e3) for _ in range(2)]
    for x, y in batches(4, dtype):
        for model, o, scaler in ((ours, opt, scalers[0]), (theirs, ref, scalers[1])):
            o.zero_grad()
            scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
            scaler.step(o)
            scaler.update()
        assert opt.kernel_params == 4 and same(ours, theirs)


# ---------------------------------------------------------------------------------------
# state-clip: GradScaler with momentum_dtype and master_weights="split" (the step takes
# grad_scale/found_inf as for float32 params: skipped whole on inf, each grad read as
# float32(grad * (1/scale)); with clipping, torch's recipe: unscaled in place, then the
# norm of the unscaled grads)

def rounded_buffers(torch_dtype):
    def hook(optimizer, args, kwargs):
        for state in optimizer.state.values():
            state["momentum_buffer"] = state["momentum_buffer"].to(torch_dtype).float()
    return hook


@pytest.mark.parametrize("momentum_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("init_scale", [2.0 ** 12, 3000.0])
def test_amp_with_momentum_dtype_equals_torch_default(momentum_dtype, init_scale):
    ours, theirs = mlp(), mlp()
    opt = fmt.SGD(ours.parameters(), lr=0.05, momentum=0.9, momentum_dtype=momentum_dtype)
    assert opt._step_supports_amp_scaling
    ref = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    ref.register_step_post_hook(rounded_buffers(momentum_dtype))
    data = batches(8)
    make = lambda: torch.amp.GradScaler("cpu", init_scale=init_scale,  # noqa: E731
                                        growth_interval=2)
    scales_a, scales_b = [], []
    a = scaled_loop(ours, opt, make(), data, inf_at=(3, 4), scales=scales_a)
    b = scaled_loop(theirs, ref, make(), data, inf_at=(3, 4), scales=scales_b)
    for step, _ in zip(a, b):
        assert opt.kernel_params == (0 if step in (3, 4) else 4)  # the kernels took it
        assert same(ours, theirs)
    assert scales_a == scales_b and scales_a[3] < scales_a[2]
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"],
                           ref.state[q]["momentum_buffer"].to(momentum_dtype))


@pytest.mark.parametrize("unscale_first", [False, True])
def test_amp_with_momentum_dtype_and_clipping(unscale_first):
    ours, theirs = mlp(), mlp()
    opt = fmt.SGD(ours.parameters(), lr=0.05, momentum=0.9, momentum_dtype=torch.bfloat16,
                  clip_grad_norm=0.05)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    ref.register_step_post_hook(rounded_buffers(torch.bfloat16))

    def clip_like_ours(model):
        total, _ = kernels.torch_grads_norm([p.grad for p in model.parameters()], False)
        clip_with(model.parameters(), kernels.clip_coefficient(total, 0.05, True),
                  torch.float32)
    make = lambda: torch.amp.GradScaler("cpu", init_scale=3000.0)  # noqa: E731
    a = scaled_loop(ours, opt, make(), batches(5), inf_at=(2,), unscale_first=unscale_first)
    b = scaled_loop(theirs, ref, make(), batches(5), inf_at=(2,), clip=clip_like_ours,
                    unscale_first=True)
    for step, _ in zip(a, b):
        assert opt.kernel_params == (0 if step == 2 else 4)
        assert same(ours, theirs)


@pytest.mark.parametrize("momentum_dtype", [None, torch.bfloat16], ids=str)
def test_amp_clipped_step_refused_while_another_runs_unscales_nothing(momentum_dtype):
    """A GradScaler step with clipping (unscaled in place, torch's recipe) refused because
    another thread's step of the optimizer is running leaves grads, params and state as
    they were; the other step (held inside its unscaling here) then ends as torch's."""
    ours, theirs = mlp(), mlp()
    opt = fmt.SGD(ours.parameters(), lr=0.05, momentum=0.9, momentum_dtype=momentum_dtype,
                  clip_grad_norm=0.05)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    if momentum_dtype is not None:
        ref.register_step_post_hook(rounded_buffers(momentum_dtype))
    (x0, y0), (x1, y1) = batches(2)
    for model, optimizer in ((ours, opt), (theirs, ref)):  # the buffers exist
        backward(model, x0, y0)
        if optimizer is ref:
            clip_with(theirs.parameters(), kernels.clip_coefficient(
                kernels.torch_grads_norm([p.grad for p in theirs.parameters()], False)[0],
                0.05, True), torch.float32)
        optimizer.step()
    backward(ours, x1, y1, scale=1024.0)
    opt.grad_scale, opt.found_inf = torch.tensor([1024.0]), torch.tensor([0.0])
    main, entered, release = threading.current_thread(), threading.Event(), threading.Event()
    unscale, errors = opt._unscale_grads, []

    def held(inv_scale):  # the other thread's step waits in its unscaling
        if threading.current_thread() is not main:
            entered.set()
            release.wait(30)
        unscale(inv_scale)

    def other_step():
        try:
            opt.step()
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    opt._unscale_grads = held
    params = [p.detach().clone() for p in ours.parameters()]
    grads = [p.grad.clone() for p in ours.parameters()]
    buffers = [opt.state[p]["momentum_buffer"].clone() for p in ours.parameters()]
    other = threading.Thread(target=other_step)
    other.start()
    try:
        assert entered.wait(30)
        with pytest.raises(RuntimeError, match="SGD.step: another thread is stepping"):
            opt.step()
        assert all(torch.equal(p.grad, g) for p, g in zip(ours.parameters(), grads))
        assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), params))
        assert all(torch.equal(opt.state[p]["momentum_buffer"], b)
                   for p, b in zip(ours.parameters(), buffers))
    finally:
        release.set()
        other.join()
    assert errors == [] and opt.kernel_params == 4
    backward(theirs, x1, y1, scale=1024.0)   # torch's recipe: unscale_, clip, step
    for p in theirs.parameters():
        p.grad.mul_(torch.tensor(1.0 / 1024.0))
    total, _ = kernels.torch_grads_norm([p.grad for p in theirs.parameters()], False)
    assert opt.last_grad_norm == total
    clip_with(theirs.parameters(), kernels.clip_coefficient(total, 0.05, True), torch.float32)
    ref.step()
    assert same(ours, theirs)


@pytest.mark.parametrize("clip", [None, 0.05])
@pytest.mark.parametrize("momentum_dtype", [None, torch.bfloat16], ids=str)
def test_amp_with_split_master_weights_equals_float32_masters(momentum_dtype, clip):
    """A bfloat16 model's steps under a GradScaler equal torch.optim.SGD on float32 master
    weights fed the widened grads under a GradScaler of its own (same infs, same scales;
    a power-of-two scale, so that unscaling the bfloat16 grads in place, torch's recipe
    with clipping, is exact)."""
    model = mlp(dtype=torch.bfloat16)
    masters = [torch.nn.Parameter(p.detach().float()) for p in model.parameters()]
    opt = fmt.SGD(model.parameters(), lr=0.05, momentum=0.9, master_weights="split",
                  momentum_dtype=momentum_dtype, clip_grad_norm=clip)
    ref = torch.optim.SGD(masters, lr=0.05, momentum=0.9)
    if momentum_dtype is not None:
        ref.register_step_post_hook(rounded_buffers(momentum_dtype))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    for step, (x, y) in enumerate(batches(6, dtype=torch.bfloat16)):
        model.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(model(x).float(), y.float())).backward()
        if step == 2:
            model[0].weight.grad[0, 1] = math.inf
        for p, m in zip(model.parameters(), masters):
            m.grad = p.grad.float()
        scaler.step(opt)
        scaler.update()
        ref_scaler.scale(torch.zeros(()))   # (its scale tensor, made lazily)
        if clip is not None:
            ref_scaler.unscale_(ref)
            if step != 2:
                total, _ = kernels.torch_grads_norm([m.grad for m in masters], False)
                assert opt.last_grad_norm == total
                clip_with(masters, kernels.clip_coefficient(total, clip, True),
                          torch.float32)
        ref_scaler.step(ref)
        ref_scaler.update()
        assert scaler.get_scale() == ref_scaler.get_scale()
        assert opt.kernel_params == (0 if step == 2 else 4)
        assert all(torch.equal(a, m.detach()) for a, m in zip(opt.master_params(), masters))
