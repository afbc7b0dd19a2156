"""fastmomentum.torch.SGD(flat=True): one buffer per param group and dtype, trajectories bit for
bit as torch.optim.SGD on a copy of the model, whatever replaces a grad or a param."""
import copy
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmomentum.torch as fmt
from fastmomentum import _torch_flat

pytestmark = pytest.mark.skipif(not fmt.FAST_PATH, reason="flat steps need the fast path")


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(6, 16)
        self.unused = torch.nn.Linear(3, 3)  # in the middle of the buffer, never gets a grad
        self.b = torch.nn.Linear(16, 4)
        self.frozen = torch.nn.Parameter(torch.randn(5), requires_grad=False)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


def batch(model, gen):
    if isinstance(model, Conv):
        return torch.randn(8, 2, 6, 6, generator=gen), torch.randn(8, 3, generator=gen)
    return torch.randn(8, 6, generator=gen), torch.randn(8, 4, generator=gen)


def groups(model, options):
    """Two param groups (weights, the rest) with their own hyper-parameters."""
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    return [dict(params=weights, **options), dict(params=rest, lr=0.05, weight_decay=0.0)]


class Counting:
    """The kernels namespace of _torch_flat, counting runs and carriers stepped."""

    def __init__(self, monkeypatch):
        self.runs, self.carriers, self.steady = 0, [], 0
        kernels = _torch_flat._kernels
        namespace = types.SimpleNamespace(**vars(kernels))

        def plan(carriers, *args):
            self.carriers.append(len(carriers))
            return kernels.torch_sgd_group_plan(carriers, *args)

        def run(*args):
            self.runs += 1
            return kernels.torch_sgd_run(*args)

        def steady(*args):  # a steady step: the last clean step's plans, run again
            segments = kernels.torch_flat_steady(*args)
            if segments is not None:
                self.runs += 1
                self.steady += 1
                self.carriers += [segments, 0]  # (per step: two groups' entries)
            return segments
        namespace.torch_sgd_group_plan, namespace.torch_sgd_run = plan, run
        namespace.torch_flat_steady = steady
        monkeypatch.setattr(_torch_flat, "_kernels", namespace)
        monkeypatch.setattr(fmt, "_kernels", namespace)


def train(model_class, options, steps=6, dtype=torch.float32, between=None):
    """The same training loop (forward, backward, zero_grad, StepLR) with torch.optim.SGD
    and fastmomentum.torch.SGD(flat=True) on a copy; ``between(step, model, opt)`` may
    tamper with both models alike. Asserts bit-equal params and state at every step."""
    torch.manual_seed(0)
    theirs = model_class().to(dtype)
    ours = copy.deepcopy(theirs)
    opt_t = torch.optim.SGD(groups(theirs, options), lr=0.1)
    opt_o = fmt.SGD(groups(ours, options), lr=0.1, flat=True)
    sched_t = torch.optim.lr_scheduler.StepLR(opt_t, 2, gamma=0.5)
    sched_o = torch.optim.lr_scheduler.StepLR(opt_o, 2, gamma=0.5)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        x, y = batch(theirs, gen)
        for model, opt, sched in ((theirs, opt_t, sched_t), (ours, opt_o, sched_o)):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x.to(dtype)), y.to(dtype))
            loss.backward()
            if between is not None:
                between(step, model, opt)
            opt.step()
            sched.step()
        for (name, a), b in zip(theirs.named_parameters(), ours.parameters()):
            assert torch.equal(a, b), (step, name)
        st_t, st_o = opt_t.state_dict(), opt_o.state_dict()
        assert st_t["state"].keys() == st_o["state"].keys()
        for k in st_t["state"]:
            assert torch.equal(st_t["state"][k]["momentum_buffer"],
                               st_o["state"][k]["momentum_buffer"])
    return ours, opt_o


OPTIONS = [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
           dict(momentum=0.8, dampening=0.1, weight_decay=1e-3, maximize=True),
           dict(momentum=0.0, weight_decay=1e-2)]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("model_class", [MLP, Conv], ids=lambda c: c.__name__)
def test_training_loop_equals_torch_and_steps_one_run_per_buffer(model_class, options,
                                                                   monkeypatch):
    counting = Counting(monkeypatch)
    model, opt = train(model_class, options)
    # one torch_sgd_run per step, over one carrier per flat buffer once the grads are views
    # (MLP: the unused Linear and the frozen param split their group's buffer into runs)
    assert counting.runs == 6
    per_step = [sum(counting.carriers[i:i + 2]) for i in range(0, len(counting.carriers), 2)]
    expected = 2 if model_class is Conv else 4
    assert per_step[1:] == [expected] * 5 and opt.flat_segments == expected
    assert counting.steady >= 3  # the steps after the first two clean ones reuse the plans
    for bucket in [b for buckets in opt._flat_buckets for b in buckets]:
        base = bucket.params_buffer.data_ptr()
        for p, view in zip(bucket.params, bucket.grad_views):
            assert p.untyped_storage().data_ptr() == base
            assert p.grad is None or p.grad is view


def test_float64_and_mixed_dtypes_get_one_buffer_each():
    model, opt = train(MLP, dict(momentum=0.9), dtype=torch.float64)
    assert [b.params_buffer.dtype for bs in opt._flat_buckets for b in bs] == [torch.float64] * 2
    params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2).double()),
              torch.nn.Parameter(torch.randn(4))]
    opt = fmt.SGD(params, lr=0.1, flat=True)
    (bucket32, bucket64), = opt._flat_buckets
    assert bucket32.params == [params[0], params[2]] and bucket64.params == [params[1]]


def test_params_without_grads_keep_their_momentum():
    model, opt = train(MLP, dict(momentum=0.9, weight_decay=0.1))
    assert model.unused.weight not in opt.state and model.frozen not in opt.state
    assert model.unused.weight.grad is None and model.frozen.grad is None


def test_backward_after_zero_grad_accumulates_into_the_flat_buffer():
    model, opt = train(MLP, dict(momentum=0.9), steps=2)
    bucket = opt._flat_buckets[0][0]
    opt.zero_grad()
    assert torch.count_nonzero(bucket.grads_buffer) == 0
    model(torch.randn(4, 6)).sum().backward()
    assert bucket.params[0] is model.a.weight and model.a.weight.grad is bucket.grad_views[0]
    assert torch.equal(bucket.grads_buffer[:96], model.a.weight.grad.reshape(-1))
    assert torch.count_nonzero(bucket.grads_buffer) > 0


def test_zero_grad_set_to_none_is_ignored():
    model, opt = train(MLP, dict(momentum=0.9), steps=2)
    grads = [p.grad for p in model.parameters()]
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))  # None stays None
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def replace_grad(step, model, opt):
    if step in (1, 3):
        model.b.weight.grad = model.b.weight.grad.clone() * 1.5


def module_zero_grad(step, model, opt):
    if step == 2:  # set_to_none=True from elsewhere, then a second backward
        x = torch.ones(2, 6, dtype=model.a.weight.dtype)
        model.zero_grad()
        model(x).sum().backward()


def replace_data(step, model, opt):
    if step in (1, 4):
        with torch.no_grad():
            model.a.bias.data = model.a.bias.data * 0.5 + 1.0


def transpose_data(step, model, opt):
    if step == 5:  # last: torch's non-contiguous weight would change the next forward's bits
        w = model.b.weight  # non-contiguous data elsewhere
        w.data = w.data.t().contiguous().t()


def drop_grad(step, model, opt):
    if step == 3:
        model.b.bias.grad = None  # not stepped, momentum untouched (torch)


def replace_momentum(step, model, opt):
    if step == 3:
        p = model.a.weight
        opt.state[p]["momentum_buffer"] = opt.state[p]["momentum_buffer"] * 0.25


def alias_grad(step, model, opt):
    if step in (1, 4):  # a new tensor over the grad view's very memory: same data_ptr, but
        g = model.b.weight.grad  # not the view (the scan compares TensorImpls, not addresses)
        alias = g.view(g.shape)
        assert alias.data_ptr() == g.data_ptr() and alias is not g
        alias.mul_(1.5)
        model.b.weight.grad = alias


def none_then_same_grad(step, model, opt):
    if step == 2:  # the very view put back: nothing to repair, still exact
        g = model.a.bias.grad
        model.a.bias.grad = None
        model.a.bias.grad = g


def replace_entry(step, model, opt):
    if step == 3:  # after clean steps (the scan remembers the state entries): a new entry
        p = model.b.weight
        opt.state[p] = {"momentum_buffer": opt.state[p]["momentum_buffer"] * 0.5}


def momentum_back_and_forth(step, model, opt):
    if step == 3:  # the entry changed and changed back: looked up again, nothing to repair
        entry = opt.state[model.a.weight]
        view = entry["momentum_buffer"]
        entry["momentum_buffer"] = view.clone()
        entry["momentum_buffer"] = view


@pytest.mark.parametrize("tamper", [replace_grad, module_zero_grad, replace_data,
                                    transpose_data, drop_grad, replace_momentum, alias_grad,
                                    none_then_same_grad, replace_entry,
                                    momentum_back_and_forth],
                         ids=lambda f: f.__name__)
def test_replaced_tensors_are_noticed_and_steps_stay_exact(tamper):
    model, opt = train(MLP, dict(momentum=0.9, weight_decay=1e-2), between=tamper)
    bucket = opt._flat_buckets[0][0]
    for i, p in enumerate(bucket.params):  # everything re-viewed into the buffers
        assert p.data_ptr() == bucket.param_views[i].data_ptr()
        assert p.grad is None or p.grad is bucket.grad_views[i]
        if p in opt.state:
            assert opt.state[p]["momentum_buffer"] is bucket.momentum_views[i]


def test_state_dict_loads_into_torch_and_back():
    torch.manual_seed(0)
    model, opt = train(MLP, dict(momentum=0.9), steps=3)
    twin = copy.deepcopy(model)
    twin_flat = copy.deepcopy(model)
    opt_t = torch.optim.SGD(groups(twin, dict(momentum=0.9)), lr=0.1)
    opt_t.load_state_dict(copy.deepcopy(opt.state_dict()))  # ours -> torch's
    opt_f = fmt.SGD(groups(twin_flat, dict(momentum=0.9)), lr=0.1, flat=True)
    opt_f.load_state_dict(copy.deepcopy(opt_t.state_dict()))  # torch's -> ours
    x = torch.randn(4, 6)
    for m, o in ((twin, opt_t), (twin_flat, opt_f)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    for a, b in zip(twin.parameters(), twin_flat.parameters()):
        assert torch.equal(a, b)
    bucket = opt_f._flat_buckets[0][0]
    for i, p in enumerate(bucket.params):
        if p in opt_f.state:
            assert opt_f.state[p]["momentum_buffer"] is bucket.momentum_views[i]


def test_steps_bump_each_params_version_as_torch_does():
    model = MLP()
    opt = fmt.SGD(model.parameters(), lr=0.1, momentum=0.9, flat=True)
    out = model(torch.randn(2, 6)).sum()
    out.backward(retain_graph=True)
    before = model.a.weight._version
    opt.step()
    assert model.a.weight._version == before + 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()  # the graph saved the weights the step changed


def test_every_stepped_params_version_grows_by_one_per_step():
    """The bumps in C (VersionBumps) as torch._C._increment_version: each step adds one to
    every param with a grad, also after a param's data or grad was replaced (its slot's
    cache is refilled) and when some params are left out (indices shift)."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5)) for _ in range(6)]
    opt = fmt.SGD(params, lr=0.1, momentum=0.9, flat=True)
    for step in range(6):
        for p in params:  # in place into the flat grads, but new tensors at steps 0 and 4
            if p.grad is None or step == 4:
                p.grad = torch.ones(5)
            else:
                p.grad.add_(0.5)
        if step == 2:
            with torch.no_grad():
                params[3].data = params[3].data * 2.0
        if step == 3:
            params[1].grad = None
        before = [p._version for p in params]
        opt.step()
        assert [p._version - b for p, b in zip(params, before)] == [
            int(p.grad is not None) for p in params], step


def test_grads_and_bumps_are_read_in_c():
    """torch 2.13 exports both functions the flat step calls (else it asks Python)."""
    assert _torch_flat.IMPL_GRAD_BOUND and _torch_flat.BUMP_BOUND


def test_key_set_offset_is_found_every_time():
    """The DispatchKeySet word is found on every probe (a 24th word, past torch 2.13's
    23-word TensorImpl, read the next heap chunk's header: -1 in ~5% of probes, turning
    bump_version and the group cache off at random)."""
    from fastmomentum import _torch_bridge
    offsets = {_torch_bridge._key_set_offset() for _ in range(2000)}
    assert len(offsets) == 1 and offsets.pop() >= 0


def test_add_param_group_gets_its_own_buffer():
    model = MLP()
    opt = fmt.SGD([model.a.weight], lr=0.1, momentum=0.9, flat=True)
    opt.add_param_group({"params": [model.b.weight, model.b.bias], "lr": 0.01})
    assert len(opt._flat_buckets) == 2
    assert model.b.bias.data_ptr() == opt._flat_buckets[1][0].param_views[1].data_ptr()


def test_bad_input_is_refused_before_anything_moves():
    with pytest.raises(TypeError, match="SGD: `flat` must be True or False; got 'yes'"):
        fmt.SGD([torch.nn.Parameter(torch.randn(3))], lr=0.1, flat="yes")
    good, half = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3).half())
    address = good.data_ptr()
    with pytest.raises(ValueError, match=r"flat=True needs dense CPU float32/float64 params.*"
                                         r"`params\[1\]` of param group 0 is a torch.float16"):
        fmt.SGD([good, half], lr=0.1, flat=True)
    assert good.data_ptr() == address
    with pytest.raises(ValueError, match="`ema` cannot be combined with flat=True"):
        fmt.SGD([good], lr=0.1, flat=True, ema=fmt.EMA([good]))


def test_a_param_of_another_shape_is_refused_and_nothing_is_written():
    params = [torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(3))]
    opt = fmt.SGD(params, lr=0.1, momentum=0.9, flat=True)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    opt.step()
    before = [p.detach().clone() for p in params]
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in params]
    params[1].data = torch.zeros(5)
    with pytest.raises(ValueError, match=r"SGD.step: flat=True: `param_groups\[0\]\[1\]` must "
                                         r"keep its dtype, shape and device"):
        opt.step()
    assert torch.equal(params[0], before[0])
    for p, m in zip(params, momentum):
        assert torch.equal(opt.state[p]["momentum_buffer"], m)


@settings(max_examples=25, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple),
                       min_size=1, max_size=6),
       missing=st.sets(st.integers(0, 5)), dtype=st.sampled_from([torch.float32, torch.float64]),
       nesterov=st.booleans(), weight_decay=st.sampled_from([0.0, 0.1]))
def test_random_shapes_and_missing_grads_equal_torch(shapes, missing, dtype, nesterov,
                                                      weight_decay):
    gen = torch.Generator().manual_seed(0)
    theirs = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
    ours = [torch.nn.Parameter(p.detach().clone()) for p in theirs]
    options = dict(lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
    opt_t, opt_o = torch.optim.SGD(theirs, **options), fmt.SGD(ours, **options, flat=True)
    for step in range(3):
        for i, (a, b) in enumerate(zip(theirs, ours)):
            if (i + step) % 6 in missing:
                a.grad = b.grad = None
            else:
                g = torch.randn(a.shape, generator=gen, dtype=dtype)
                a.grad, b.grad = g.clone(), g.clone()
        opt_t.step()
        opt_o.step()
        for a, b in zip(theirs, ours):
            assert torch.equal(a, b)
            assert (a in opt_t.state) == (b in opt_o.state)
