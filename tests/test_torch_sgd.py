"""fastmomentum.torch.SGD as a drop-in for torch.optim.SGD: bit-identical trajectories."""
import copyreg
import io
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmomentum as fm
import fastmomentum.torch as fmt
from _grid import SGD_OPTIONS
from conftest import THREADED, assert_threads_run

OPTIONS = SGD_OPTIONS
SHAPES = [(4, 3), (5,), (1,), (0,), (17, 2, 3)]


def test_fast_path_is_enabled_unless_switched_off():
    assert fmt.FAST_PATH == (os.environ.get("FASTMOMENTUM_TORCH_FAST_PATH", "") != "0")


def fast(n):
    """``n`` params through the kernels when the fast path is on, else none."""
    return n if fmt.FAST_PATH else 0


def make_params(dtype, seed=0, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def set_grads(params_a, params_b, gen, skip=()):
    for i, (a, b) in enumerate(zip(params_a, params_b)):
        if i in skip:
            a.grad = b.grad = None
            continue
        g = torch.randn(a.shape, generator=gen, dtype=a.dtype)
        a.grad, b.grad = g.clone(), g.clone()


def assert_same(params_a, params_b):
    for a, b in zip(params_a, params_b):
        assert a.dtype == b.dtype and torch.equal(a, b)


def assert_same_state(opt_a, opt_b):
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        assert torch.equal(sa["state"][k]["momentum_buffer"], sb["state"][k]["momentum_buffer"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_trajectory_equals_torch(options, dtype):
    ours, theirs = make_params(dtype), make_params(dtype)
    opt = fmt.SGD(ours, lr=0.1, **options)
    ref = torch.optim.SGD(theirs, lr=0.1, **options)
    gen = torch.Generator().manual_seed(1)
    for step in range(4):
        set_grads(ours, theirs, gen, skip={1} if step == 1 else ())  # a param without grad
        opt.step()
        ref.step()
        assert opt.kernel_params == fast(len(SHAPES) - (step == 1))
    assert_same(ours, theirs)
    assert_same_state(opt, ref)


def test_lr_scheduler_and_param_groups():
    ours, theirs = make_params(torch.float32), make_params(torch.float32)

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.3, "momentum": 0.5,
                                     "nesterov": True}]
    opt = fmt.SGD(groups(ours), lr=0.1, momentum=0.9, weight_decay=1e-2)
    ref = torch.optim.SGD(groups(theirs), lr=0.1, momentum=0.9, weight_decay=1e-2)
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (opt, ref)]
    gen = torch.Generator().manual_seed(2)
    for _ in range(6):
        set_grads(ours, theirs, gen)
        opt.step()
        ref.step()
        for s in scheds:
            s.step()
    assert opt.param_groups[1]["lr"] == ref.param_groups[1]["lr"] == 0.3 * 0.5 ** 3
    assert_same(ours, theirs)
    assert_same_state(opt, ref)


def test_tensor_lr_and_thread_count(restore_threads):
    results = []
    for cls, threads in ((torch.optim.SGD, 2), (fmt.SGD, 1), (fmt.SGD, 2)):
        fm.set_num_threads(threads)
        params = make_params(torch.float32, shapes=[(THREADED // 2,), (THREADED // 2,), (3,)])
        if threads == 2:
            assert_threads_run(sum(p.numel() for p in params))
        opt = cls(params, lr=torch.tensor(0.05), momentum=0.9, weight_decay=0.01)
        gen = torch.Generator().manual_seed(9)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        assert cls is torch.optim.SGD or opt.kernel_params == fast(3)
        results.append(params)
    assert_same(results[0], results[1])
    assert_same(results[1], results[2])


def test_defaults_and_param_group_keys_mirror_torch():
    p = make_params(torch.float32)
    assert fmt.SGD(p).defaults == torch.optim.SGD(p).defaults
    assert fmt.SGD(p, lr=0.1, momentum=0.9).state_dict() == torch.optim.SGD(
        p, lr=0.1, momentum=0.9).state_dict()


@pytest.mark.parametrize("kwargs", [dict(lr=-0.1), dict(lr=0.1, momentum=-1.0),
                                    dict(lr=0.1, weight_decay=-1.0),
                                    dict(lr=0.1, nesterov=True),
                                    dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
                                    dict(lr=torch.tensor([0.1, 0.2])),
                                    dict(lr=0.1, fused=True, foreach=True)], ids=str)
def test_constructor_errors_match_torch(kwargs):
    p = make_params(torch.float32)
    with pytest.raises((ValueError, RuntimeError)) as theirs:
        torch.optim.SGD(p, **kwargs)
    with pytest.raises(type(theirs.value), match=str(theirs.value).replace("`", ".")):
        fmt.SGD(p, **kwargs)


@pytest.mark.parametrize("first", ["fastmomentum", "torch"])
def test_state_dict_switch_mid_run(first):
    classes = {"fastmomentum": fmt.SGD, "torch": torch.optim.SGD}
    second = "torch" if first == "fastmomentum" else "fastmomentum"
    ours, theirs = make_params(torch.float64), make_params(torch.float64)
    options = dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)
    a = classes[first](ours, **options)
    ref = torch.optim.SGD(theirs, **options)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        set_grads(ours, theirs, gen)
        a.step()
        ref.step()
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = classes[second](ours, lr=1.0)
    b.load_state_dict(torch.load(buffer))
    for _ in range(3):
        set_grads(ours, theirs, gen)
        b.step()
        ref.step()
    assert_same(ours, theirs)
    assert_same_state(b, ref)


def test_module_trained_with_autograd_ends_equal():
    def train(opt_class):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                    torch.nn.Linear(16, 3))
        opt = opt_class(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                        weight_decay=1e-4)
        gen = torch.Generator().manual_seed(1)
        for _ in range(30):
            x = torch.randn(32, 8, generator=gen)
            y = torch.randint(0, 3, (32,), generator=gen)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return list(model.parameters())
    assert_same(train(fmt.SGD), train(torch.optim.SGD))


def test_closure_is_called_with_grad_enabled():
    p = make_params(torch.float32)[:1]
    opt = fmt.SGD(p, lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p[0] ** 2).sum()
        loss.backward()
        return loss
    start = p[0].detach().clone()
    loss = opt.step(closure)
    assert torch.equal(loss, (start ** 2).sum())
    torch.testing.assert_close(p[0].detach(), start - 0.1 * 2 * start, rtol=0, atol=1e-6)


@pytest.mark.parametrize("layout", ["transposed", "strided", "neg-view"])
def test_grad_layout_differing_from_param_is_exact_and_grad_untouched(layout):
    ours, theirs = make_params(torch.float32, shapes=[(6, 5), (3,)]), make_params(
        torch.float32, shapes=[(6, 5), (3,)])
    opt = fmt.SGD(ours, lr=0.1, momentum=0.9, weight_decay=0.1)
    ref = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=0.1)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        base = torch.randn(5, 6, generator=gen)
        g = {"transposed": base.t(), "strided": torch.randn(12, 5, generator=gen)[::2],
             "neg-view": torch._neg_view(base.t().contiguous())}[layout]
        before = g.clone()
        ours[0].grad, theirs[0].grad = g, g.clone()
        ours[1].grad = theirs[1].grad = None
        opt.step()
        ref.step()
        assert torch.equal(ours[0].grad, before) and ours[0].grad is g
    assert_same(ours, theirs)


def test_negated_view_params_and_buffers_are_exact():
    def build():
        base = torch.arange(6.0).reshape(2, 3)
        return [torch.nn.Parameter(torch._neg_view(base.clone())), torch.nn.Parameter(base)]

    ours, theirs = build(), build()
    opt = fmt.SGD(ours, lr=0.1, momentum=0.9)
    ref = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(6)
    for step in range(3):
        set_grads(ours, theirs, gen)
        opt.step()
        ref.step()
        if step == 0:  # a negated buffer (loaded from elsewhere) must be honoured too
            buf = ref.state[theirs[1]]["momentum_buffer"]
            opt.state[ours[1]]["momentum_buffer"] = torch._neg_view(-buf)
    assert_same(ours, theirs)
    assert ours[0].is_neg()


def test_pickled_optimizer_still_steps():
    import pickle
    p = make_params(torch.float32)
    opt = pickle.loads(pickle.dumps(fmt.SGD(p, lr=0.1, momentum=0.9)))
    ref = torch.optim.SGD(make_params(torch.float32), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(7)
    set_grads(opt.param_groups[0]["params"], ref.param_groups[0]["params"], gen)
    opt.step()
    ref.step()
    assert_same(opt.param_groups[0]["params"], ref.param_groups[0]["params"])


class OldPickle:
    """Pickles as a ``cls`` whose ``__getstate__`` gave ``state`` (an earlier version's)."""

    def __init__(self, cls, state):
        self.cls, self.state = cls, state

    def __reduce__(self):
        return copyreg._reconstructor, (self.cls, object, None), self.state


@pytest.mark.parametrize("flat", [False, True])
def test_pickles_of_earlier_versions_step_as_torch(flat):
    """A pickle holding only torch's keys (a version before clipping, AMP, momentum_dtype,
    flat=True...) and a pickle of today's: every attribute of a fresh optimizer, its
    default, and torch's steps."""
    import pickle
    fresh = fmt.SGD(make_params(torch.float32), lr=0.1, momentum=0.9, flat=flat)
    state = fresh.__getstate__()
    torchs = {key: state[key] for key in ("defaults", "state", "param_groups")}
    for saved in (pickle.dumps(OldPickle(fmt.SGD, torchs)), pickle.dumps(fresh)):
        opt = pickle.loads(saved)
        assert (opt.clip_grad_norm, opt.norm_type, opt.skip_if_nonfinite,
                opt.write_clipped_grads, opt.last_grad_norm, opt.skipped_steps,
                opt.momentum_dtype, opt.master_weights, opt.ema, opt.flat_segments,
                opt.kernel_params) == (None, 2.0, False, False, None, 0, None, None, None,
                                       None, 0)
        ref = torch.optim.SGD(make_params(torch.float32), lr=0.1, momentum=0.9)
        gen = torch.Generator().manual_seed(7)
        for _ in range(2):
            set_grads(opt.param_groups[0]["params"], ref.param_groups[0]["params"], gen)
            opt.step()
            ref.step()
        assert_same(opt.param_groups[0]["params"], ref.param_groups[0]["params"])
        assert_same_state(opt, ref)
        assert opt.kernel_params == fast(len(SHAPES))


@pytest.mark.parametrize("alias", ["duplicate param", "params sharing storage",
                                   "grad is another param"])
def test_aliased_memory_is_stepped_in_torchs_order(alias):
    def build():
        base = torch.arange(12.0)
        a = torch.nn.Parameter(base[:8].clone())
        if alias == "duplicate param":
            return [a, torch.nn.Parameter(base[8:].clone()), a]
        if alias == "params sharing storage":
            storage = base.clone()
            return [torch.nn.Parameter(storage[:8]), torch.nn.Parameter(storage[4:])]
        return [a, torch.nn.Parameter(base[4:].clone())]

    results = []
    for cls in (fmt.SGD, torch.optim.SGD):
        params = build()
        opt = cls(params, lr=0.1, momentum=0.9)
        gen = torch.Generator().manual_seed(8)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            if alias == "grad is another param":
                params[1].grad = params[0].detach()
            opt.step()
        results.append([p.detach().clone() for p in params])
    assert_same(*results)


def test_other_dtypes_and_sparse_grads_are_stepped_by_torch():
    def build():
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 4, sparse=True)
        half = torch.nn.Parameter(torch.randn(5, dtype=torch.bfloat16))
        dense = torch.nn.Parameter(torch.randn(7))
        return emb, [emb.weight, half, dense]

    results = []
    for cls in (fmt.SGD, torch.optim.SGD):
        emb, params = build()
        opt = cls(params, lr=0.1)
        gen = torch.Generator().manual_seed(5)
        for _ in range(3):
            opt.zero_grad()
            emb(torch.tensor([1, 3, 3])).sum().backward()
            params[1].grad = torch.randn(5, generator=gen).to(torch.bfloat16)
            params[2].grad = torch.randn(7, generator=gen)
            opt.step()
        results.append(params)
    assert_same(*results)


def test_grad_is_never_modified_nor_shared_with_the_buffer():
    p = make_params(torch.float32)
    opt = fmt.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True)
    for t in p:
        t.grad = torch.randn(t.shape)
    grads = [t.grad.clone() for t in p]
    opt.step()
    for t, g in zip(p, grads):
        assert torch.equal(t.grad, g)
        if t.numel():
            assert opt.state[t]["momentum_buffer"].data_ptr() != t.grad.data_ptr()


def test_step_bumps_version_so_autograd_catches_stale_weights():
    for cls in (fmt.SGD, torch.optim.SGD):
        w = torch.nn.Parameter(torch.randn(4))
        opt = cls([w], lr=0.1)
        loss = (w * w).sum()  # saves w for backward
        w.grad = torch.ones(4)
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_step_hooks_and_profiler_label_as_torch():
    p = make_params(torch.float32)[:1]
    p[0].grad = torch.ones(p[0].shape)
    opt = fmt.SGD(p, lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", o)))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", o)))
    with torch.profiler.profile() as prof:
        opt.step()
    assert calls == [("pre", opt), ("post", opt)]
    assert any(e.name == "Optimizer.step#SGD.step" for e in prof.events())
    assert torch.is_grad_enabled()  # grad mode restored after the step


def test_step_hooks_see_and_replace_args_as_in_torch():
    """Pre hooks get ``args`` with the optimizer first (as torch passes them) and may
    return new ``(args, kwargs)``: here they add a closure whose loss step() returns."""
    seen = {}
    for cls in (torch.optim.SGD, fmt.SGD):
        p = make_params(torch.float32)[:1]
        p[0].grad = torch.ones(p[0].shape)
        opt = cls(p, lr=0.1)

        def pre_hook(o, args, kwargs, cls=cls):
            seen[cls] = args
            return args, {"closure": lambda: 42.0}
        opt.register_step_pre_hook(pre_hook)
        assert opt.step() == 42.0
        assert seen[cls] == (opt,)


def test_zero_grad_and_no_grad_params():
    p = make_params(torch.float32)
    opt = fmt.SGD(p, lr=0.1, momentum=0.9)
    before = [t.detach().clone() for t in p]
    opt.step()  # no grads at all: nothing happens, no state
    assert_same(p, before)
    assert not opt.state
    p[0].grad = torch.ones(p[0].shape)
    opt.zero_grad()
    assert p[0].grad is None


def test_import_fastmomentum_does_not_import_torch():
    code = "import sys, fastmomentum; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@settings(max_examples=20, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 7), min_size=0, max_size=3), min_size=1,
                       max_size=5),
       f64=st.lists(st.booleans(), min_size=5, max_size=5),
       options=st.sampled_from(OPTIONS), lr=st.floats(1e-4, 1.0),
       transposed=st.booleans(), seed=st.integers(0, 2**16))
def test_property_equals_torch(shapes, f64, options, lr, transposed, seed):
    shapes = [tuple(s) for s in shapes]
    dtypes = [torch.float64 if f else torch.float32 for f in f64[:len(shapes)]]

    def build():
        gen = torch.Generator().manual_seed(seed)
        return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=d))
                for s, d in zip(shapes, dtypes)]
    ours, theirs = build(), build()
    opt = fmt.SGD(ours, lr=lr, **options)
    ref = torch.optim.SGD(theirs, lr=lr, **options)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(3):
        for a, b in zip(ours, theirs):
            g = torch.randn(a.shape[::-1], generator=gen, dtype=a.dtype)
            g = g.permute(tuple(reversed(range(g.dim())))) if transposed else g.reshape(a.shape)
            a.grad, b.grad = g, g.clone()
        opt.step()
        ref.step()
    assert_same(ours, theirs)
