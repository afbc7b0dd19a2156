"""fastmomentum.torch.SGD with ``momentum_dtype`` (float32 params, bf16/fp16 momentum) and
``master_weights="split"`` (bf16 params over exact float32 master weights), against
torch.optim.SGD on float32 copies fed the same grads (the split's oracle) and with its
buffer rounded after each step (fewer-byte momentum's oracle)."""
import copy
import io
import math

import pytest
import torch

import fastmomentum.torch as fmt

from _grid import SGD_OPTIONS, option_id
from conftest import THREADED, assert_threads_run


def split_param(master):
    """A bfloat16 param holding the top 16 bits of float32 ``master`` (truncated)."""
    p = torch.nn.Parameter((master.view(torch.int32) >> 16).to(torch.int16).view(
        torch.bfloat16).clone())
    p.grad_dtype = None  # float32 grads allowed (torch 2.13 checks a grad's dtype)
    return p


def top_bits(t):
    return (t.detach().view(torch.int32) >> 16).to(torch.int16)


def run_split(shapes, options, grad_dtype, momentum_dtype, steps=5, seed=0):
    """(fastmomentum split optimizer, its params, torch's float32 params), after ``steps``."""
    gen = torch.Generator().manual_seed(seed)
    masters = [torch.randn(s, generator=gen).bfloat16().float() for s in shapes]
    params = [split_param(m) for m in masters]
    refs = [torch.nn.Parameter(m.clone()) for m in masters]
    opt = fmt.SGD(params, lr=0.05, master_weights="split", momentum_dtype=momentum_dtype,
                  **options)
    ref = torch.optim.SGD(refs, lr=0.05, **options)
    for _ in range(steps):
        for p, r in zip(params, refs):
            g = torch.randn(p.shape, generator=gen).to(grad_dtype)
            p.grad, r.grad = g.clone(), g.float()
        opt.step()
        ref.step()
        if momentum_dtype == torch.bfloat16 and options["momentum"]:
            for r in refs:
                ref.state[r]["momentum_buffer"] = ref.state[r]["momentum_buffer"].bfloat16().float()
    return opt, params, refs


@pytest.mark.parametrize("grad_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("momentum_dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=option_id)
def test_split_is_bit_identical_to_float32_masters(grad_dtype, momentum_dtype, options):
    opt, params, refs = run_split([(3,), (17, 5), (1000,)], options, grad_dtype,
                                  momentum_dtype)
    assert opt.kernel_params == 3
    for m, p, r in zip(opt.master_params(), params, refs):
        assert m.dtype == torch.float32
        assert torch.equal(m, r.detach())
        # the bf16 param is the master weight truncated (what makes param|low exact)
        assert torch.equal(p.detach().view(torch.int16), top_bits(r))
    if options["momentum"]:
        want = torch.float32 if momentum_dtype is None else torch.bfloat16
        assert all(opt.state[p]["momentum_buffer"].dtype == want for p in params)


def test_split_threaded_equals_serial_and_oracle():
    assert_threads_run(THREADED)
    options = dict(momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True,
                   maximize=False)
    opt, params, refs = run_split([(THREADED,)], options, torch.bfloat16, torch.bfloat16,
                                  steps=3)
    threads = fmt._kernels.get_num_threads()
    try:
        fmt._kernels.set_num_threads(1)
        serial, serial_params, _ = run_split([(THREADED,)], options, torch.bfloat16,
                                             torch.bfloat16, steps=3)
    finally:
        fmt._kernels.set_num_threads(threads)
    assert torch.equal(opt.master_params()[0], refs[0].detach())
    assert torch.equal(serial.master_params()[0], refs[0].detach())


def test_split_state_dict_round_trip_mid_training():
    options = dict(momentum=0.9, dampening=0.1, weight_decay=0.0, nesterov=False,
                   maximize=False)
    gen = torch.Generator().manual_seed(1)
    masters = [torch.randn(s, generator=gen) for s in [(40,), (8, 8)]]
    params = [split_param(torch.zeros_like(m)) for m in masters]
    refs = [torch.nn.Parameter(m.clone()) for m in masters]
    opt = fmt.SGD(params, lr=0.1, master_weights="split", momentum_dtype=torch.bfloat16,
                  **options)
    opt.load_master_params(masters)  # start from float32 weights, exactly
    assert all(torch.equal(a, b) for a, b in zip(opt.master_params(), masters))
    ref = torch.optim.SGD(refs, lr=0.1, **options)

    def step(opt, params):
        for p, r in zip(params, refs):
            g = torch.randn(p.shape, generator=gen).bfloat16()
            p.grad, r.grad = g.clone(), g.float()
        opt.step()
        ref.step()
        for r in refs:
            ref.state[r]["momentum_buffer"] = ref.state[r]["momentum_buffer"].bfloat16().float()

    for _ in range(3):
        step(opt, params)
    saved = io.BytesIO()
    torch.save(opt.state_dict(), saved)
    saved.seek(0)
    state = torch.load(saved)
    assert state["state"][0]["master_low_bits"].dtype == torch.int16
    assert state["state"][0]["momentum_buffer"].dtype == torch.bfloat16
    params2 = [split_param(torch.zeros_like(m)) for m in masters]
    with torch.no_grad():
        for p2, p in zip(params2, params):
            p2.copy_(p)
    opt2 = fmt.SGD(params2, lr=0.1, master_weights="split", momentum_dtype=torch.bfloat16,
                   **options)
    opt2.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(opt2.master_params(), opt.master_params()))
    for _ in range(3):
        step(opt2, params2)
    for m, r in zip(opt2.master_params(), refs):
        assert torch.equal(m, r.detach())


def test_split_before_any_step_is_the_bf16_param():
    p = split_param(torch.randn(9))
    opt = fmt.SGD([p], lr=0.1, master_weights="split")
    assert torch.equal(opt.master_params()[0], p.detach().float())


def test_split_refuses_other_params_and_options():
    with pytest.raises(TypeError, match=r"SGD: `params\[0\]` must be a contiguous CPU "
                                        r"torch.bfloat16 tensor \(master_weights='split'"):
        fmt.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1, master_weights="split")
    bf = [torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))]
    with pytest.raises(ValueError, match="`master_weights` must be None or 'split'"):
        fmt.SGD(bf, lr=0.1, master_weights="fp32")
    with pytest.raises(TypeError, match="`momentum_dtype` must be torch.float32 or "
                                        "torch.bfloat16 with master_weights='split'"):
        fmt.SGD(bf, lr=0.1, momentum=0.9, master_weights="split",
                momentum_dtype=torch.float16)
    with pytest.raises(ValueError, match="`ema` cannot be combined"):
        fmt.SGD(bf, lr=0.1, master_weights="split", ema=fmt.EMA([torch.zeros(3)]))
    with pytest.raises(ValueError, match="keeps no master weights"):
        fmt.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1).master_params()


def test_split_bad_grad_writes_nothing():
    params = [split_param(torch.randn(6)) for _ in range(2)]
    opt = fmt.SGD(params, lr=0.1, momentum=0.9, master_weights="split")
    for p in params:
        p.grad = torch.ones(6, dtype=torch.bfloat16)
    opt.step()
    before = [m.clone() for m in opt.master_params()]
    buffers = [opt.state[p]["momentum_buffer"].clone() for p in params]
    params[0].grad = torch.ones(6, dtype=torch.bfloat16)
    params[1].grad = torch.ones(6, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"SGD.step: the grad of `params\[1\]` must be a "
                                        r"dense contiguous CPU bfloat16 or float32 tensor "
                                        r"of shape \(6,\); got torch.float64"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(opt.master_params(), before))
    assert all(torch.equal(opt.state[p]["momentum_buffer"], b) for p, b in zip(params, buffers))


def test_split_load_state_dict_refuses_bad_low_bits():
    p = split_param(torch.randn(4))
    opt = fmt.SGD([p], lr=0.1, master_weights="split")
    p.grad = torch.ones(4, dtype=torch.bfloat16)
    opt.step()
    state = copy.deepcopy(opt.state_dict())  # torch's state_dict shares the live entries
    before = opt.master_params()[0].clone()
    state["state"][0]["master_low_bits"] = torch.zeros(4)  # float: not bits
    with pytest.raises(TypeError, match=r"`state\[0\]\['master_low_bits'\]` must be an "
                                        r"int16 tensor"):
        opt.load_state_dict(state)
    assert torch.equal(opt.master_params()[0], before)


# ---------------------------------------------------------------------------------------
# momentum_dtype on float32 params

@pytest.mark.parametrize("momentum_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("options", [o for o in SGD_OPTIONS if o["momentum"]], ids=option_id)
def test_fewer_byte_momentum_equals_oracle(momentum_dtype, options):
    gen = torch.Generator().manual_seed(2)
    start = [torch.randn(s, generator=gen) for s in [(5,), (30, 3), (2000,)]]
    params = [torch.nn.Parameter(s.clone()) for s in start]
    refs = [torch.nn.Parameter(s.clone()) for s in start]
    opt = fmt.SGD(params, lr=0.05, momentum_dtype=momentum_dtype, **options)
    ref = torch.optim.SGD(refs, lr=0.05, **options)
    for _ in range(4):
        for p, r in zip(params, refs):
            p.grad = torch.randn(p.shape, generator=gen)
            r.grad = p.grad.clone()
        opt.step()
        ref.step()
        for r in refs:
            ref.state[r]["momentum_buffer"] = ref.state[r]["momentum_buffer"].to(
                momentum_dtype).float()
    assert opt.kernel_params == 3
    for p, r in zip(params, refs):
        assert torch.equal(p.detach(), r.detach())
        buf = opt.state[p]["momentum_buffer"]
        assert buf.dtype == momentum_dtype
        assert torch.equal(buf.float(), ref.state[r]["momentum_buffer"])


def test_fewer_byte_state_dict_into_torch_gives_float32_buffers():
    p = torch.nn.Parameter(torch.randn(10))
    opt = fmt.SGD([p], lr=0.1, momentum=0.9, momentum_dtype=torch.bfloat16)
    p.grad = torch.randn(10)
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    q = torch.nn.Parameter(p.detach().clone())
    plain = torch.optim.SGD([q], lr=0.1, momentum=0.9)
    plain.load_state_dict(opt.state_dict())
    loaded = plain.state[q]["momentum_buffer"]
    assert loaded.dtype == torch.float32  # torch casts state to the param's dtype
    assert torch.equal(loaded, buf.float())  # exactly (bf16 -> float32 is exact)
    # and back: a torch.optim.SGD state_dict loads into bf16 momentum, rounded once
    r = torch.nn.Parameter(q.detach().clone())
    again = fmt.SGD([r], lr=0.1, momentum=0.9, momentum_dtype=torch.bfloat16)
    again.load_state_dict(plain.state_dict())
    assert again.state[r]["momentum_buffer"].dtype == torch.bfloat16
    assert torch.equal(again.state[r]["momentum_buffer"], buf)


def test_fewer_byte_refuses_bf16_params():
    with pytest.raises(TypeError, match=r"`params\[0\]` must be a contiguous CPU "
                                        r"torch.float32 tensor \(momentum_dtype keeps"):
        fmt.SGD([torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))], lr=0.1,
                momentum=0.9, momentum_dtype=torch.bfloat16)


def test_split_misaligned_and_odd_views_equal_oracle():
    """Params that are views at an odd bfloat16 offset (not 4-byte aligned: the kernel's
    two-at-a-time path refuses them and the one-at-a-time loop runs) and of odd sizes give
    the same bits as aligned ones and as torch's float32 masters."""
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(1 + 1001, generator=gen).bfloat16()
    params = [torch.nn.Parameter(base[1:]), split_param(torch.randn(1001, generator=gen))]
    refs = [torch.nn.Parameter(p.detach().float().clone()) for p in params]
    assert params[0].data_ptr() % 4 == 2
    opt = fmt.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.01,
                  master_weights="split", momentum_dtype=torch.bfloat16)
    ref = torch.optim.SGD(refs, lr=0.05, momentum=0.9, weight_decay=0.01)
    for _ in range(4):
        for p, r in zip(params, refs):
            g = torch.randn(p.shape, generator=gen).bfloat16()
            p.grad, r.grad = g, g.float()
        opt.step()
        ref.step()
        for r in refs:
            ref.state[r]["momentum_buffer"] = ref.state[r]["momentum_buffer"].bfloat16().float()
    for m, r in zip(opt.master_params(), refs):
        assert torch.equal(m, r.detach())


def test_param_groups_step_together_or_not_at_all():
    """Two groups with their own lr: each equals torch's float32 masters; a bad grad in the
    second group leaves the first untouched too (every group is checked before any runs)."""
    gen = torch.Generator().manual_seed(4)
    masters = [torch.randn(50, generator=gen).bfloat16().float() for _ in range(3)]
    params = [split_param(m) for m in masters]
    refs = [torch.nn.Parameter(m.clone()) for m in masters]
    opt = fmt.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.2}], lr=0.05,
                  momentum=0.9, master_weights="split")
    ref = torch.optim.SGD([{"params": refs[:2]}, {"params": refs[2:], "lr": 0.2}], lr=0.05,
                          momentum=0.9)
    for _ in range(3):
        for p, r in zip(params, refs):
            g = torch.randn(50, generator=gen).bfloat16()
            p.grad, r.grad = g, g.float()
        opt.step()
        ref.step()
    assert opt.kernel_params == 3
    assert all(torch.equal(m, r.detach()) for m, r in zip(opt.master_params(), refs))
    before = [m.clone() for m in opt.master_params()]
    params[2].grad = torch.ones(50, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"the grad of `params\[2\]`"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(opt.master_params(), before))


# ---------------------------------------------------------------------------------------
# state-clip: global-norm clipping and skipping with momentum_dtype and split master
# weights. Oracle: torch's total norm of the (widened, float32) grads within 1e-6
# relative; given that total, torch's clip_grads_with_norm_ (g.mul_(coef)) on the float32
# grads, then torch.optim.SGD on float32 masters (split) or with its buffer rounded after
# each step (fewer-byte momentum): bit for bit.

def torch_total(grads, norm_type):
    """torch's total norm of float32 copies of ``grads``, computed in float64 (torch
    refuses the inf-norm of an empty grad)."""
    return torch.nn.utils.get_total_norm([g.double() for g in grads if g.numel()],
                                         norm_type).item()


def run_clipped(kind, shapes, options, max_norm, norm_type, grad_dtype=torch.float32,
                momentum_dtype=None, steps=4, seed=0, scale=4.0, groups=1):
    """Train ``kind`` ("split" or "fewer") with fused clipping next to torch's recipe;
    returns (optimizer, params, refs, torch optimizer), checking the norm at each step."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "split":
        masters = [torch.randn(s, generator=gen).bfloat16().float() for s in shapes]
        params = [split_param(m) for m in masters]
    else:
        masters = [torch.randn(s, generator=gen) for s in shapes]
        params = [torch.nn.Parameter(m.clone()) for m in masters]
    refs = [torch.nn.Parameter(m.clone()) for m in masters]
    cut = len(params) // 2 if groups == 2 else len(params)
    split_groups = ([{"params": params[:cut]}, {"params": params[cut:]}] if groups == 2
                    else params)
    opt = fmt.SGD(split_groups, lr=0.05, momentum_dtype=momentum_dtype,
                  master_weights="split" if kind == "split" else None,
                  clip_grad_norm=max_norm, norm_type=norm_type, **options)
    ref = torch.optim.SGD(refs, lr=0.05, **options)
    rounded_to = momentum_dtype   # the buffer's dtype (None: split's float32)
    for _ in range(steps):
        for p, r in zip(params, refs):
            g = (scale * torch.randn(p.shape, generator=gen)).to(grad_dtype)
            p.grad, r.grad = g.clone(), g.float()
        opt.step()
        total = opt.last_grad_norm
        assert total == pytest.approx(torch_total([r.grad for r in refs], norm_type),
                                      rel=1e-6)
        torch.nn.utils.clip_grads_with_norm_(refs, max_norm,
                                             torch.tensor(total, dtype=torch.float32))
        ref.step()
        if rounded_to is not None and options["momentum"]:
            for r in refs:
                ref.state[r]["momentum_buffer"] = \
                    ref.state[r]["momentum_buffer"].to(rounded_to).float()
    assert opt.kernel_params == len(params)   # every param through the kernels
    return opt, params, refs, ref


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
@pytest.mark.parametrize("grad_dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("momentum_dtype", [None, torch.bfloat16], ids=str)
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=option_id)
def test_split_clipped_equals_torch_clip_then_float32_masters(options, momentum_dtype,
                                                              grad_dtype, norm_type):
    opt, params, refs, _ = run_clipped("split", [(3,), (17, 5), (1000,), (0,)], options,
                                       2.0, norm_type, grad_dtype, momentum_dtype)
    for m, p, r in zip(opt.master_params(), params, refs):
        assert torch.equal(m, r.detach())
        assert torch.equal(p.detach().view(torch.int16), top_bits(r))
    assert opt.skipped_steps == 0


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
@pytest.mark.parametrize("momentum_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("options", [o for o in SGD_OPTIONS if o["momentum"]], ids=option_id)
def test_fewer_byte_clipped_equals_torch_clip_then_rounded_buffer(options, momentum_dtype,
                                                                  norm_type):
    opt, params, refs, ref = run_clipped("fewer", [(3,), (17, 5), (1000,)], options, 2.0,
                                         norm_type, momentum_dtype=momentum_dtype)
    for p, r in zip(params, refs):
        assert torch.equal(p.detach(), r.detach())
        buf = opt.state[p]["momentum_buffer"]
        assert buf.dtype == momentum_dtype
        assert torch.equal(buf, ref.state[r]["momentum_buffer"].to(momentum_dtype))


@pytest.mark.parametrize("kind", ["split", "fewer"])
def test_clipping_norm_spans_every_param_group(kind):
    """One total over both groups' grads (torch's clip_grad_norm_ of all params)."""
    options = dict(momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=False,
                   maximize=False)
    opt, params, refs, _ = run_clipped(kind, [(40,), (7, 3), (300,), (5,)], options, 1.0,
                                       2.0, momentum_dtype=torch.bfloat16, groups=2)
    assert len(opt.param_groups) == 2
    mine = opt.master_params() if kind == "split" else [p.detach() for p in params]
    assert all(torch.equal(m, r.detach()) for m, r in zip(mine, refs))


def test_clipped_split_threaded_equals_serial_and_oracle():
    assert_threads_run(THREADED)
    options = dict(momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=True,
                   maximize=False)
    opt, _, refs, _ = run_clipped("split", [(THREADED,), (33,)], options, 3.0, 2.0,
                                  torch.bfloat16, torch.bfloat16, steps=3)
    threads = fmt._kernels.get_num_threads()
    try:
        fmt._kernels.set_num_threads(1)
        serial, _, _, _ = run_clipped("split", [(THREADED,), (33,)], options, 3.0, 2.0,
                                      torch.bfloat16, torch.bfloat16, steps=3)
    finally:
        fmt._kernels.set_num_threads(threads)
    assert serial.last_grad_norm == opt.last_grad_norm
    for a, b, r in zip(opt.master_params(), serial.master_params(), refs):
        assert torch.equal(a, r.detach()) and torch.equal(b, r.detach())


def _state_bytes(opt, params):
    return [bytes(t.detach().contiguous().view(torch.uint8).numpy())
            for p in params for t in [p, *opt.state[p].values()]
            if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
@pytest.mark.parametrize("kind, momentum_dtype", [("split", None), ("split", torch.bfloat16),
                                                  ("fewer", torch.bfloat16),
                                                  ("fewer", torch.float16)])
def test_skipped_state_step_leaves_params_momentum_and_low_bits(kind, momentum_dtype,
                                                                norm_type, bad):
    torch.manual_seed(3)
    if kind == "split":
        params = [split_param(torch.randn(s)) for s in [(9,), (4, 4)]]
    else:
        params = [torch.nn.Parameter(torch.randn(s)) for s in [(9,), (4, 4)]]
    opt = fmt.SGD(params, lr=0.1, momentum=0.9, momentum_dtype=momentum_dtype,
                  master_weights="split" if kind == "split" else None,
                  skip_if_nonfinite=True, clip_grad_norm=0.5, norm_type=norm_type)
    grad_dtype = torch.bfloat16 if kind == "split" else torch.float32
    for p in params:
        p.grad = torch.randn(p.shape).to(grad_dtype)
    opt.step()
    assert math.isfinite(opt.last_grad_norm) and opt.kernel_params == 2
    before, masters = _state_bytes(opt, params), (opt.master_params() if kind == "split"
                                                  else None)
    params[1].grad[1, 2] = bad
    opt.step()
    assert not math.isfinite(opt.last_grad_norm)
    assert opt.skipped_steps == 1 and opt.kernel_params == 0
    assert _state_bytes(opt, params) == before
    if masters is not None:
        assert all(torch.equal(a, b) for a, b in zip(opt.master_params(), masters))


def test_skipped_first_step_creates_no_momentum_buffer():
    p = torch.nn.Parameter(torch.ones(6))
    p.grad = torch.full((6,), float("nan"))
    opt = fmt.SGD([p], lr=0.1, momentum=0.9, momentum_dtype=torch.bfloat16,
                  skip_if_nonfinite=True)
    opt.step()
    assert opt.skipped_steps == 1 and "momentum_buffer" not in opt.state[p]
    assert torch.equal(p.detach(), torch.ones(6))
    p.grad = torch.ones(6)
    opt.step()   # the first step again: buffer := grad
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.ones(6, dtype=torch.bfloat16))


def test_nonfinite_norm_without_skip_steps_as_torch():
    """skip_if_nonfinite=False: an inf total gives torch's coefficient 0 (inf * 0: NaN)."""
    p = torch.nn.Parameter(torch.ones(4))
    r = torch.nn.Parameter(torch.ones(4))
    g = torch.tensor([1.0, float("inf"), 2.0, 3.0])
    p.grad, r.grad = g.clone(), g.clone()
    opt = fmt.SGD([p], lr=0.1, momentum=0.9, momentum_dtype=torch.float16,
                  clip_grad_norm=1.0)
    opt.step()
    torch.nn.utils.clip_grad_norm_([r], 1.0)
    torch.optim.SGD([r], lr=0.1, momentum=0.9).step()
    assert opt.last_grad_norm == math.inf and opt.skipped_steps == 0
    torch.testing.assert_close(p.detach(), r.detach(), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(torch.isnan(p.detach()), torch.tensor([False, True, False, False]))


def test_clipping_set_after_construction_clips_state_steps():
    torch.manual_seed(5)
    p = torch.nn.Parameter(torch.randn(50))
    r = torch.nn.Parameter(p.detach().clone())
    opt = fmt.SGD([p], lr=0.1, momentum=0.9, momentum_dtype=torch.bfloat16)
    ref = torch.optim.SGD([r], lr=0.1, momentum=0.9)
    opt.clip_grad_norm = 0.25          # a plain attribute, read at every step
    g = 5 * torch.randn(50)
    p.grad, r.grad = g.clone(), g.clone()
    opt.step()
    torch.nn.utils.clip_grads_with_norm_([r], 0.25, torch.tensor(opt.last_grad_norm))
    ref.step()
    assert torch.equal(p.detach(), r.detach())
    assert opt.last_grad_norm == pytest.approx(g.double().norm().item(), rel=1e-6)
