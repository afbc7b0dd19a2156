"""Features that met at the merge of the mixed-precision, fewer-byte state, clipping/AMP
and flat-buffer work: each combination either computes torch's bits or is refused with
nothing changed (found by review of the merged change; each test failed before its fix)."""
import copy

import pytest
import torch

import fastmomentum.torch as ft


def test_amp_set_after_construction_unscales_state_steps():
    """Once refused; now grad_scale is read in the step as for float32 params (the GradScaler
    trajectories are in tests/test_torch_clip_amp.py)."""
    p = torch.nn.Parameter(torch.randn(8))
    r = torch.nn.Parameter(p.detach().clone())
    g = torch.randn(8)
    p.grad, r.grad = 3000.0 * g, 3000.0 * g
    opt = ft.SGD([p], lr=0.1, momentum=0.9, momentum_dtype=torch.bfloat16)
    opt.grad_scale, opt.found_inf = torch.tensor([3000.0]), torch.tensor([0.0])
    opt.step()
    assert opt.kernel_params == 1 and torch.equal(p.grad, 3000.0 * g)   # read, not written
    r.grad.mul_(torch.tensor(3000.0).double().reciprocal().float())
    torch.optim.SGD([r], lr=0.1, momentum=0.9).step()
    assert torch.equal(p.detach(), r.detach())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_amp_step_of_params_torch_steps_unscales_once(dtype):
    """A param with a transposed grad is torch's to step; under GradScaler's grad_scale
    the step must be torch.optim.SGD's on the grads unscaled once (GradScaler.unscale_)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 8).to(dtype))
    ref = torch.nn.Parameter(p.detach().clone())
    grad = (torch.randn(8, 4) * 64).to(dtype).t()           # not contiguous
    p.grad, ref.grad = grad.clone(), grad.clone()
    torch._amp_foreach_non_finite_check_and_unscale_(
        [ref.grad], torch.zeros(1), torch.tensor([64.0]).double().reciprocal().float())
    opt = ft.SGD([p], lr=0.1, momentum=0.9)
    opt.grad_scale, opt.found_inf = torch.tensor([64.0]), torch.tensor([0.0])
    opt.step()
    torch.optim.SGD([ref], lr=0.1, momentum=0.9).step()
    assert torch.equal(p.detach(), ref.detach())


def test_copies_keep_split_master_weights_and_momentum_dtype():
    torch.manual_seed(1)
    q = torch.nn.Parameter(torch.randn(64).bfloat16())
    q.grad = torch.randn(64).bfloat16()
    opt = ft.SGD([q], lr=0.1, momentum=0.9, master_weights="split")
    opt.step()
    twin = copy.deepcopy(opt)
    assert (twin.master_weights, twin.momentum_dtype) == ("split", opt.momentum_dtype)
    assert twin._step_supports_amp_scaling is True
    (mine,), (theirs,) = opt.master_params(), twin.master_params()
    assert torch.equal(mine, theirs)


def test_a_refused_amp_step_leaves_the_grads_scaled():
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.full((4,), 8.0)
    opt = ft.SGD([p], lr=0.1, momentum=0.9, clip_grad_norm=100.0,
                 ema=ft.EMA([p], decay=0.9))
    q = torch.nn.Parameter(torch.ones(2))
    q.grad = torch.full((2,), 8.0)
    opt.add_param_group({"params": [q]})      # the EMA no longer covers every param
    opt.grad_scale, opt.found_inf = torch.tensor([8.0]), torch.tensor([0.0])
    with pytest.raises(ValueError):
        opt.step()
    assert torch.equal(p.grad, torch.full((4,), 8.0))
    assert torch.equal(q.grad, torch.full((2,), 8.0))
    assert torch.equal(p.detach(), torch.ones(4)) and not opt.state


def test_numpy_sgd_clips_16_bit_params():
    """Once refused at construction; now the clipped grads written into the dtype, then
    the step (tests/test_half.py has the full grid)."""
    import numpy as np
    import fastmomentum
    from fastmomentum._dispatch import kernels
    p, q = np.ones(4, np.float16), np.ones(4, np.float16)
    g = np.array([3.0, 4.0, 0.0, 0.0], np.float16)
    opt = fastmomentum.SGD([p], lr=0.5, clip_grad_norm=1.0)
    opt.step([g])
    assert opt.last_grad_norm == 5.0
    coef = np.float32(kernels.clip_coefficient(5.0, 1.0, True))
    fastmomentum.SGD([q], lr=0.5).step([(g.astype(np.float32) * coef).astype(np.float16)])
    assert np.array_equal(p, q) and not np.array_equal(p, np.ones(4, np.float16) - 0.5 * g)


def test_momentum_step_checks_rounding_with_momentum_dtype():
    import numpy as np
    import fastmomentum
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    v = np.zeros(4, np.float16)
    with pytest.raises(ValueError, match="rounding"):
        fastmomentum.momentum_step(p, g, v, lr=0.1, momentum=0.9, momentum_dtype=np.float16,
                                   rounding="bogus")
    assert (p == 1).all() and (v == 0).all()
