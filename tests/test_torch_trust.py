"""Issue 11 (torch side): stale caches, inference tensors, races, global replacement,
whole-or-nothing steps, copies, interrupts, which path ran."""
import copy
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fastmomentum.torch as fmt
from fastmomentum._torch_bridge import FAST_PATH_ENV
from test_optim_trust import _interrupted_steps, _run_isolated, _step_from_two_threads


def fast(n):
    """``n`` params through the kernels when the fast path is on, else none."""
    return n if fmt.FAST_PATH else 0


def test_fast_path_reason_and_env_switch():
    off = os.environ.get(FAST_PATH_ENV, "").strip() == "0"
    assert fmt.FAST_PATH == (not off)
    assert (fmt.FAST_PATH_REASON is None) == (not off)
    out = _run_isolated(f"""
        import os, warnings
        os.environ[{FAST_PATH_ENV!r}] = "0"
        import torch, fastmomentum.torch as fmt
        p = torch.nn.Parameter(torch.ones(3)); p.grad = torch.ones(3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # switched off on purpose: no warning
            opt = fmt.SGD([p], lr=0.5)
        opt.step()
        print(fmt.FAST_PATH, fmt.FAST_PATH_REASON, opt.kernel_params, p.tolist())
    """)
    assert out.split() == ["False", "turned", "off", "by", f"{FAST_PATH_ENV}=0", "0",
                           "[0.5,", "0.5,", "0.5]"]


def test_kernel_params_counts_what_the_kernels_stepped():
    params = [torch.nn.Parameter(torch.ones(3)) for _ in range(3)]
    params.append(torch.nn.Parameter(torch.ones(3, dtype=torch.complex64)))  # torch's
    opt = fmt.SGD(params, lr=0.1, momentum=0.9)
    assert opt.kernel_params == 0
    for p in params:
        p.grad = torch.ones_like(p)
    params[2].grad = None
    opt.step()
    assert opt.kernel_params == fast(2)
    params[2].grad = torch.ones(3)
    opt.step()
    assert opt.kernel_params == fast(3)


def _neg_view_at_the_same_address(cls):
    """p.data = z.conj().imag where the lazily negated view starts at p's old address."""
    buf = np.array([0.0, 1.0], np.float32)
    p = torch.nn.Parameter(torch.from_numpy(buf)[1:])
    opt = cls([p], lr=1.0)
    p.grad = torch.ones(1)
    opt.step()
    address = p.data_ptr()
    p.data = torch.from_numpy(buf.view(np.complex64)).conj().imag
    assert p.data_ptr() == address and p.is_neg()
    p.grad = torch.ones(1)
    opt.step()
    return p.detach().clone(), buf


def test_negated_view_at_the_same_address_is_not_taken_from_a_stale_cache():
    ours, ours_buf = _neg_view_at_the_same_address(fmt.SGD)
    theirs, their_buf = _neg_view_at_the_same_address(torch.optim.SGD)
    assert torch.equal(ours, theirs) and ours.item() == -1.0
    np.testing.assert_array_equal(ours_buf, their_buf)


def _inference_params(dtype):
    with torch.inference_mode():
        params = [torch.nn.Parameter(torch.ones(4, dtype=dtype)) for _ in range(2)]
    return params


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_inference_params_are_refused_as_torch_refuses(dtype, momentum):
    theirs = _inference_params(dtype)
    for p in theirs:
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError) as torch_error:
        torch.optim.SGD(theirs, lr=0.1, momentum=momentum).step()
    normal = torch.nn.Parameter(torch.ones(4))
    ours = [normal] + _inference_params(dtype)
    for p in ours:
        p.grad = torch.ones_like(p)
    opt = fmt.SGD(ours, lr=0.1, momentum=momentum)
    with pytest.raises(RuntimeError) as our_error:
        opt.step()
    assert str(our_error.value) == str(torch_error.value)
    assert all(torch.equal(p.detach(), torch.ones(4, dtype=p.dtype)) for p in ours)
    assert not opt.state and normal._version == 0
    with torch.inference_mode():  # inside inference mode torch updates them: so do we
        opt.step()
    assert all(p.detach()[0].item() == pytest.approx(0.9, abs=1e-3) for p in ours)


def test_replacing_p_grad_during_a_step_does_not_free_it():
    """Another thread sets p.grad (as a concurrent backward or zero_grad(set_to_none)
    does) while the kernels run without the GIL: the old grad must stay alive."""
    _run_isolated("""
        import threading, torch, fastmomentum.torch as fmt
        n = 1 << 21
        params = [torch.nn.Parameter(torch.zeros(n)) for _ in range(3)]
        for p in params:
            p.grad = torch.ones(n)
        opt = fmt.SGD(params, lr=0.0, momentum=0.9, ema=fmt.EMA(params, 0.5))
        stop = False
        def replace():
            while not stop:
                for p in params:
                    p.grad = torch.ones(n)
        t = threading.Thread(target=replace)
        t.start()
        try:
            for _ in range(300):
                opt.step()
        finally:
            stop = True
            t.join()
    """)


def test_global_replacement_of_torch_optim_sgd():
    """torch.optim.SGD = fastmomentum.torch.SGD: the steps torch takes still work."""
    out = _run_isolated("""
        import torch, fastmomentum.torch as fmt
        TorchSGD = torch.optim.SGD
        torch.optim.SGD = fmt.SGD
        def run(cls):
            gen = torch.Generator().manual_seed(0)
            params = [torch.nn.Parameter(torch.randn(3, dtype=d, generator=gen))
                      for d in (torch.float16, torch.complex64, torch.float32)]
            opt = cls(params, lr=0.1, momentum=0.9)
            for _ in range(3):
                for p in params:
                    p.grad = torch.ones_like(p)
                opt.step()
            return params
        ours, theirs = run(fmt.SGD), run(TorchSGD)
        print(all(torch.equal(a, b) for a, b in zip(ours, theirs)))
    """)
    assert out.split() == ["True"]


def _model_with_ema(n=4):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2, generator=gen)) for _ in range(n)]
    ema = fmt.EMA(params, decay=0.5)
    opt = fmt.SGD(params, lr=0.1, momentum=0.9, ema=ema)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return params, opt, ema


def _snapshot(params, opt, ema):
    return ([p.detach().clone() for p in params], [p._version for p in params],
            {id(p): s["momentum_buffer"].clone() for p, s in opt.state.items()},
            [a.copy() for a in ema._ema.raw_averages], ema.updates)


def _assert_unchanged(before, after):
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0]))
    assert before[1] == after[1] and before[4] == after[4]
    assert before[2].keys() == after[2].keys()
    assert all(torch.equal(before[2][k], after[2][k]) for k in before[2])
    assert all(np.array_equal(a, b) for a, b in zip(before[3], after[3]))


def test_a_param_changing_dtype_under_an_ema_fails_the_step_whole():
    params, opt, ema = _model_with_ema()
    params[3].data = params[3].data.double()
    params[3].grad = torch.ones_like(params[3])
    before = _snapshot(params, opt, ema)
    with pytest.raises(ValueError, match=r"SGD.step: ema: `params\[3\]`"):
        opt.step()
    _assert_unchanged(before, _snapshot(params, opt, ema))


def test_a_param_torch_refuses_fails_the_step_as_torch_does():
    """p.data = p.data.t(): its grad no longer fits; torch raises at that param (having
    updated its momentum buffer, as torch.optim.SGD does; torch.optim.SGD has also
    written the params before it), and no fast-path param may have been written."""
    results = []
    for cls in (fmt.SGD, torch.optim.SGD):
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(3, 2, generator=gen)) for _ in range(4)]
        opt = cls(params, lr=0.1, momentum=0.9)
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        params[2].data = params[2].data.t()
        before = [p.detach().clone() for p in params]
        with pytest.raises(RuntimeError, match="must match the size"):
            opt.step()
        if cls is fmt.SGD and fmt.FAST_PATH:
            assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
        results.append(opt.state[params[2]]["momentum_buffer"].clone())
    assert torch.equal(*results)


def test_a_mixed_step_with_an_ema_averages_every_param():
    params, opt, ema = _model_with_ema()
    params[1].grad = torch.ones(3, 2).t().contiguous().t()  # non-contiguous: torch's
    expected = [0.5 * a + 0.5 * (p.detach().numpy() - 0.1 * (0.9 * 1 + 1))
                for p, a in zip(params, ema._ema.raw_averages)]
    opt.step()
    assert opt.kernel_params == fast(3) and ema.updates == 2
    for got, want in zip(ema._ema.raw_averages, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))],
                         ids=["deepcopy", "pickle"])
def test_copies_keep_the_ema(copier):
    params, opt, ema = _model_with_ema()
    clone = copier(opt)
    assert clone.ema is not None and clone.ema is not ema and clone.ema.updates == 1
    for p in clone.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    clone.step()
    assert clone.ema.updates == 2 and ema.updates == 1
    assert clone.kernel_params == fast(4)


FALLBACK_NOT_ATOMIC = pytest.mark.skipif(
    not fmt.FAST_PATH, reason="the fallback is torch's own step, which an interrupt can cut")


@FALLBACK_NOT_ATOMIC
def test_first_step_buffers_enter_state_only_once_written():
    n = 1 << 18
    seen = set()
    for seed in range(300):  # until both outcomes were seen (a warm thread pool makes the
        if seen == {True, False}:  # step fast, so fewer interrupts land before it)
            break
        p = torch.nn.Parameter(torch.zeros(n))
        p.grad = torch.ones(n)
        ema = fmt.EMA([p], decay=0.5)
        opt = fmt.SGD([p], lr=1.0, momentum=0.5, ema=ema)
        _interrupted_steps(opt.step, trials=1, longest=6e-4, seed=seed)
        written = p[0].item() == -1.0
        seen.add(written)
        assert torch.all(p.detach() == p.detach()[0])  # whole or not at all
        assert (p in opt.state) == written
        assert (p._version > 0) == written and ema.updates == int(written)
        if written:
            assert torch.all(opt.state[p]["momentum_buffer"] == 1.0)
    assert seen == {True, False}


def test_copy_to_checks_every_shape_first():
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    ema = fmt.EMA(params, decay=0.5)
    module = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2)),
              torch.nn.Parameter(torch.ones(5))]
    with pytest.raises(ValueError, match=r"EMA.copy_to: `params\[2\]` must be a tensor of "
                                         r"shape \(2,\)"):
        ema.copy_to(module)
    assert all(torch.equal(p.detach(), torch.ones_like(p)) for p in module)


def test_bad_ema_argument_is_named():
    with pytest.raises(TypeError, match="SGD: `ema` must be a fastmomentum.torch.EMA"):
        fmt.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, ema=object())


def test_concurrent_steps_of_one_torch_optimizer_raise_or_serialize():
    n = 1 << 16
    p = torch.nn.Parameter(torch.zeros(n))
    p.grad = torch.ones(n)
    opt = fmt.SGD([p], lr=1.0)
    refused = _step_from_two_threads(opt.step, 200)
    steps = 400 - refused
    assert torch.all(p.detach() == -float(steps))


@FALLBACK_NOT_ATOMIC
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX timers")
def test_sigint_during_torch_steps_leaves_consistent_bookkeeping():
    n = 1 << 18
    p = torch.nn.Parameter(torch.zeros(n))
    p.grad = torch.ones(n)
    ema = fmt.EMA([p], decay=0.5)
    opt = fmt.SGD([p], lr=1.0, ema=ema)
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    _interrupted_steps(opt.step, trials=200, longest=6e-4)
    steps = -p[0].item()
    assert torch.all(p.detach() == -steps)
    assert ema.updates == steps and p._version == steps
