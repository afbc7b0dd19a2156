"""fastmomentum.torch.SGD / EMA on bfloat16 and float16 tensors: torch.optim.SGD's
for-loop bits at torch's thread count (fast path, zero-copy), fused=True's one rounding per
stored value on both paths, and never torch 2.13's fused kernel for these dtypes."""
import numpy as np
import pytest
import torch

import fastmomentum.torch as fmt

from _grid import SGD_OPTIONS, option_id
from _half_oracle import HALVES, bits, ema_once, sgd_once, to_numpy, widen

SIZES = [(7,), (3, 33), (65536 + 45,)]


def fast(n):
    """Params the kernels step when the fast path is on (0 when it is switched off)."""
    return n if fmt.FAST_PATH else 0


def make_params(torch_dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(torch_dtype)) for s in SIZES]


def run(cls, params, steps=3, seed=1, **options):
    gen = torch.Generator().manual_seed(seed)
    opt = cls(params, lr=0.05, **options)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
        opt.step()
    return opt


def assert_same_bits(a, b):
    for x, y in zip(a, b):
        assert x.dtype == y.dtype
        assert torch.equal(x.detach().view(torch.int16), y.detach().view(torch.int16))


@pytest.mark.parametrize("torch_dtype", [t for _, t in HALVES], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=option_id)
@pytest.mark.parametrize("threads", [1, 2])
def test_trajectory_equals_torch_for_loop_at_its_thread_count(torch_dtype, options, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours, theirs = make_params(torch_dtype), make_params(torch_dtype)
        opt = run(fmt.SGD, ours, **options)
        ref = run(torch.optim.SGD, theirs, **options)
    finally:
        torch.set_num_threads(before)
    assert opt.kernel_params == fast(len(SIZES))
    assert_same_bits(ours, theirs)
    if options["momentum"]:
        assert_same_bits([opt.state[p]["momentum_buffer"] for p in ours],
                         [ref.state[p]["momentum_buffer"] for p in theirs])


def once_oracle(params0, grads, options, np_dtype):
    """fused=True's bits: the float32 step, one rounding per stored value (NumPy)."""
    out = []
    for p0, gs in zip(params0, grads):
        p, v = widen(p0), None
        for i, g in enumerate(gs):
            p, v = sgd_once(p, widen(g), v, np_dtype, lr=0.05, first_step=i == 0, **options)
        out.append(bits(p.astype(np_dtype)))
    return out


def fused_run(torch_dtype, options, transposed_grads=False):
    """fused=True over SIZES with recorded grads; ``transposed_grads``: grads whose layout
    differs from their param (2-D ones), which the fast path hands to torch."""
    params = make_params(torch_dtype)
    params0 = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(1)
    opt = fmt.SGD(params, lr=0.05, fused=True, **options)
    grads = [[] for _ in params]
    for _ in range(3):
        for i, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen).to(torch_dtype)
            if transposed_grads and g.dim() == 2:
                g = g.t().contiguous().t()
            p.grad = g
            grads[i].append(g.clone())
        opt.step()
    return params, params0, grads, opt


@pytest.mark.parametrize("np_dtype,torch_dtype", HALVES, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=option_id)
def test_fused_rounds_once_on_both_paths_never_torchs_fused_kernel(np_dtype, torch_dtype,
                                                                   options, monkeypatch):
    """fused=True: the NumPy float32 oracle's bits whether the kernels (contiguous grads)
    or the fallback (a transposed grad) step a param; torch 2.13's fused kernel, wrong for
    these dtypes (pytorch #191763), is never called."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch's fused SGD kernel was called")
    monkeypatch.setattr(torch, "_fused_sgd_", refuse)
    for transposed in (False, True):
        params, params0, grads, opt = fused_run(torch_dtype, options, transposed)
        expected = once_oracle([to_numpy(p, np_dtype) for p in params0],
                               [[to_numpy(g, np_dtype) for g in gs] for gs in grads],
                               options, np_dtype)
        for p, e in zip(params, expected):
            np.testing.assert_array_equal(bits(to_numpy(p, np_dtype)), e)
        assert opt.kernel_params == fast(len(SIZES) - (1 if transposed else 0))


def test_fused_differs_from_for_loop():
    """The two roundings are different results (so the tests above can tell them apart)."""
    options = dict(momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=False,
                   maximize=False)
    a, b = make_params(torch.bfloat16), make_params(torch.bfloat16)
    run(fmt.SGD, a, fused=True, **options)
    run(fmt.SGD, b, **options)
    assert not torch.equal(a[2].view(torch.int16), b[2].view(torch.int16))


@pytest.mark.parametrize("np_dtype,torch_dtype", HALVES, ids=["bfloat16", "float16"])
def test_ema_of_half_params(np_dtype, torch_dtype):
    """fastmomentum.torch.EMA on 16-bit tensors: the float32 EMA rounded once (NumPy
    oracle), fused into the step and alone; averages come back as tensors of the dtype."""
    params = make_params(torch_dtype)
    ema = fmt.EMA(params, decay=0.9)
    opt = fmt.SGD(params, lr=0.05, momentum=0.9, ema=ema)
    expected = [widen(to_numpy(p, np_dtype)) for p in params]
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(torch_dtype)
        opt.step()
        expected = [ema_once(e, widen(to_numpy(p, np_dtype)), 0.9, np_dtype)
                    for e, p in zip(expected, params)]
    assert opt.kernel_params == fast(len(SIZES))
    for a, e in zip(ema.averages, expected):
        assert a.dtype == torch_dtype
        np.testing.assert_array_equal(bits(to_numpy(a, np_dtype)), bits(e.astype(np_dtype)))
    state = ema.state_dict()
    other = fmt.EMA(params, decay=0.9)
    other.load_state_dict(state)
    assert_same_bits(other.averages, ema.averages)
