"""Features that met at the merge of the mixed-precision, fewer-byte state, clipping/AMP
and flat-buffer work: each combination either computes torch's bits or is refused with
nothing changed (found by review of the merged change; each test failed before its fix)."""
import copy

import pytest
import torch

import fastmomentum.torch as ft


def test_clipping_set_after_construction_is_refused_with_momentum_dtype():
    p = torch.nn.Parameter(torch.randn(8))
    p.grad = torch.randn(8)
    before = p.detach().clone()
    opt = ft.SGD([p], lr=0.1, momentum=0.9, momentum_dtype=torch.bfloat16)
    opt.clip_grad_norm = 0.5          # a plain attribute, read at every step
    with pytest.raises(ValueError, match="momentum_dtype"):
        opt.step()
    assert torch.equal(p.detach(), before) and "momentum_buffer" not in opt.state[p]
    opt.clip_grad_norm = None
    opt.step()
    assert opt.state[p]["momentum_buffer"].dtype == torch.bfloat16


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
    assert twin._step_supports_amp_scaling is False
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


def test_numpy_sgd_refuses_clipping_of_16_bit_params_at_construction():
    import numpy as np
    import fastmomentum
    with pytest.raises(TypeError, match="float32 or float64 params"):
        fastmomentum.SGD([np.zeros(4, np.float16)], lr=0.1, clip_grad_norm=1.0)


def test_momentum_step_checks_rounding_with_momentum_dtype():
    import numpy as np
    import fastmomentum
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    v = np.zeros(4, np.float16)
    with pytest.raises(ValueError, match="rounding"):
        fastmomentum.momentum_step(p, g, v, lr=0.1, momentum=0.9, momentum_dtype=np.float16,
                                   rounding="bogus")
    assert (p == 1).all() and (v == 0).all()
