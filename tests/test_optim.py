"""fastmomentum.SGD (NumPy, multi-tensor) against torch.optim.SGD, bit for bit."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmomentum as fm
from _grid import SGD_OPTIONS, snapshot
from conftest import THREADED, assert_threads_run

SHAPES = [(3, 5), (7,), (1,), (0,), (33, 2)]
DTYPES = [np.float32, np.float64, np.float64, np.float32, np.float32]
OPTIONS = SGD_OPTIONS


def random_arrays(rng, shapes, dtypes):
    return [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]


def run_both(options, steps, shapes=SHAPES, dtypes=DTYPES, lrs=None, seed=0):
    """The same trajectory with fastmomentum.SGD and torch.optim.SGD; returns both."""
    rng = np.random.default_rng(seed)
    params = random_arrays(rng, shapes, dtypes)
    tparams = [torch.tensor(p.copy()) for p in params]
    opt = fm.SGD(params, lr=0.1, **options)
    topt = torch.optim.SGD(tparams, lr=0.1, **options)
    for step in range(steps):
        grads = random_arrays(rng, shapes, dtypes)
        for t, g in zip(tparams, grads):
            t.grad = torch.tensor(g)
        if lrs is not None:
            opt.lr = topt.param_groups[0]["lr"] = lrs[step]
        opt.step(grads)
        topt.step()
    return opt, topt, params, tparams


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_trajectory_equals_torch(options):
    opt, topt, params, tparams = run_both(options, steps=4, lrs=[0.1, 0.05, 0.2, 0.01])
    for p, t in zip(params, tparams):
        assert p.dtype == t.numpy().dtype
        np.testing.assert_array_equal(p, t.numpy())
    if options["momentum"]:
        tstate = topt.state_dict()["state"]
        for i, b in enumerate(opt.momentum_buffers):
            np.testing.assert_array_equal(b, tstate[i]["momentum_buffer"].numpy())


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=6),
       f64=st.lists(st.booleans(), min_size=6, max_size=6),
       momentum=st.sampled_from([0.0, 0.5, 0.9]), dampening=st.sampled_from([0.0, 0.1]),
       weight_decay=st.sampled_from([0.0, 1e-3]), lr=st.floats(1e-4, 1.0),
       maximize=st.booleans(), seed=st.integers(0, 2**16))
def test_property_equals_torch(sizes, f64, momentum, dampening, weight_decay, lr, maximize,
                               seed):
    dtypes = [np.float64 if f else np.float32 for f in f64[:len(sizes)]]
    options = dict(momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                   maximize=maximize)
    _, _, params, tparams = run_both(options, steps=3, shapes=[(n,) for n in sizes],
                                     dtypes=dtypes, lrs=[lr] * 3, seed=seed)
    for p, t in zip(params, tparams):
        np.testing.assert_array_equal(p, t.numpy())


def test_thread_count_does_not_change_bits():
    shapes, dtypes = [(THREADED,), (5,), (THREADED // 3,), (3, 3)], [np.float32, np.float64] * 2
    assert_threads_run(THREADED)
    results = []
    for threads in (1, 2):
        before = fm.get_num_threads()
        fm.set_num_threads(threads)
        try:
            _, _, params, _ = run_both(dict(momentum=0.9, nesterov=True, weight_decay=0.1),
                                       steps=3, shapes=shapes, dtypes=dtypes)
        finally:
            fm.set_num_threads(before)
        results.append(params)
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


def test_resume_from_state_dict_is_bit_identical():
    rng = np.random.default_rng(1)
    grads = [random_arrays(rng, SHAPES, DTYPES) for _ in range(6)]
    start = random_arrays(rng, SHAPES, DTYPES)
    options = dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)

    straight = [p.copy() for p in start]
    opt = fm.SGD(straight, **options)
    for g in grads:
        opt.step(g)

    first = [p.copy() for p in start]
    opt1 = fm.SGD(first, **options)
    for g in grads[:3]:
        opt1.step(g)
    saved = opt1.state_dict()
    resumed = [p.copy() for p in first]
    opt2 = fm.SGD(resumed, lr=1.0)
    opt2.load_state_dict(saved)
    assert (opt2.lr, opt2.momentum, opt2.steps) == (0.05, 0.9, 3)
    for g in grads[3:]:
        opt2.step(g)
    for a, b in zip(straight, resumed):
        assert a.tobytes() == b.tobytes()


def test_pickled_copy_continues_bit_identically():
    import pickle
    rng = np.random.default_rng(12)
    params = [rng.standard_normal(s).astype(np.float32) for s in [(300, 500), (7,)]]
    ema = fm.EMA(params, decay=0.9)
    opt = fm.SGD(params, lr=0.1, momentum=0.9, ema=ema)
    opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    copy = pickle.loads(pickle.dumps(opt))    # copies params, buffers and the EMA
    for _ in range(2):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        opt.step(grads)
        copy.step(grads)
        copy.ema.update(copy.params)   # and an EMA update on its own
        ema.update(opt.params)
    assert snapshot(*copy.params) == snapshot(*opt.params)
    assert snapshot(*copy.ema.raw_averages) == snapshot(*ema.raw_averages)


#: What fastmomentum.SGD / EMA got since their first release: pickles made before lack them
SGD_ADDED = ("flat", "momentum_dtype", "rounding", "torch_threads", "seed", "clip_grad_norm",
             "norm_type", "skip_if_nonfinite", "write_clipped_grads", "last_grad_norm",
             "skipped_steps", "_written")
EMA_ADDED = ("_written",)


def old_pickle(obj, missing):
    """``obj`` pickled as a version without the attributes ``missing`` would have."""
    import pickle
    old = pickle.loads(pickle.dumps(obj))
    for name in missing:
        del old.__dict__[name]
    if getattr(old, "ema", None) is not None:
        for name in EMA_ADDED:
            old.ema.__dict__.pop(name, None)
    return pickle.dumps(old)


@pytest.mark.parametrize("missing", [(name,) for name in SGD_ADDED] + [SGD_ADDED],
                         ids=[*SGD_ADDED, "all"])
@pytest.mark.parametrize("dtype", [np.float32, "bfloat16"])
def test_pickles_of_earlier_versions_step_as_a_fresh_optimizer(missing, dtype):
    """An SGD (and its EMA) unpickled without an attribute added since steps as one
    constructed with that attribute's default: the same bits, and torch's for float32."""
    import pickle
    import ml_dtypes
    dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    rng = np.random.default_rng(5)
    start = [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in ((4, 3), (5,))]
    grads = [[rng.standard_normal(p.shape).astype(np.float32).astype(dtype) for p in start]
             for _ in range(3)]

    def sgd(params):
        return fm.SGD(params, lr=0.1, momentum=0.9, ema=fm.EMA(params, decay=0.9))

    fresh = sgd([p.copy() for p in start])
    fresh.step(grads[0])
    old = pickle.loads(old_pickle(fresh, missing))
    for g in grads[1:]:
        fresh.step(g)
        old.step(g)
        old.ema.update(old.params)
        fresh.ema.update(fresh.params)
    assert old.steps == fresh.steps == 3 and old.ema.updates == fresh.ema.updates == 5
    assert all(getattr(old, name) == getattr(fresh, name) for name in SGD_ADDED[:-1])
    assert snapshot(*old.params, *old.momentum_buffers, *old.ema.raw_averages) == snapshot(
        *fresh.params, *fresh.momentum_buffers, *fresh.ema.raw_averages)
    if dtype == np.float32:
        tparams = [torch.tensor(p) for p in start]
        topt = torch.optim.SGD(tparams, lr=0.1, momentum=0.9)
        for g in grads:
            for t, gi in zip(tparams, g):
                t.grad = torch.tensor(gi)
            topt.step()
        assert snapshot(*old.params) == snapshot(*(t.numpy() for t in tparams))


def test_state_dict_layout_is_torchs():
    opt, topt, _, _ = run_both(dict(momentum=0.9), steps=1)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sd["state"].keys() == tsd["state"].keys()
    assert sd["param_groups"][0]["params"] == tsd["param_groups"][0]["params"]
    for key in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"):
        assert sd["param_groups"][0][key] == tsd["param_groups"][0][key]


BAD_GRADS = {
    "dtype": lambda g: g.astype(np.float64 if g.dtype == np.float32 else np.float32),
    "shape": lambda g: np.zeros(g.size + 1, g.dtype),
    "non-contiguous": lambda g: np.repeat(g, 2).reshape(*g.shape, 2)[..., 0],
    "not an array": lambda g: g.tolist(),
}


@pytest.mark.parametrize("bad", BAD_GRADS, ids=str)
def test_bad_grad_in_the_middle_changes_nothing(bad):
    rng = np.random.default_rng(2)
    params = random_arrays(rng, SHAPES, DTYPES)
    opt = fm.SGD(params, lr=0.1, momentum=0.9)
    opt.step(random_arrays(rng, SHAPES, DTYPES))
    before = snapshot(*params) + snapshot(*opt.momentum_buffers)
    grads = random_arrays(rng, SHAPES, DTYPES)
    grads[1] = BAD_GRADS[bad](grads[1])
    with pytest.raises((TypeError, ValueError), match=r"SGD.step: `grads\[1\]`"):
        opt.step(grads)
    assert snapshot(*params) + snapshot(*opt.momentum_buffers) == before
    assert opt.steps == 1


def test_wrong_number_of_grads_changes_nothing():
    rng = np.random.default_rng(3)
    params = random_arrays(rng, SHAPES, DTYPES)
    opt = fm.SGD(params, lr=0.1, momentum=0.9)
    before = snapshot(*params)
    with pytest.raises(ValueError, match="`grads` must hold 5 arrays"):
        opt.step(random_arrays(rng, SHAPES[:4], DTYPES[:4]))
    assert snapshot(*params) == before and opt.momentum_buffers is None


def test_grad_sharing_memory_with_its_param_is_refused():
    params = [np.ones(4, np.float32)]
    with pytest.raises(ValueError, match=r"`grads\[0\]` must not share memory with"):
        fm.SGD(params, lr=0.1).step([params[0][:]])


@pytest.mark.parametrize("threads", [1, 2])
def test_grad_viewing_another_param_gives_torchs_loop_result(threads, restore_threads):
    """grads[1] is params[0] itself: torch's for-loop steps params[0] first and then reads
    its new values as params[1]'s gradient. Big enough for threads, which would race
    (thread 1 reading params[0] while thread 0 writes it): the step runs in order."""
    fm.set_num_threads(threads)
    if threads == 2:
        assert_threads_run(THREADED)  # the run in order is a choice, not the size
    rng = np.random.default_rng(9)
    params = [rng.standard_normal(THREADED // 2).astype(np.float32) for _ in range(2)]
    tparams = [torch.tensor(p.copy()) for p in params]
    opt = fm.SGD(params, lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(tparams, lr=0.1, momentum=0.9)
    for _ in range(3):
        g0 = rng.standard_normal(THREADED // 2).astype(np.float32)
        tparams[0].grad = torch.tensor(g0)
        tparams[1].grad = tparams[0].detach()     # shares params[0]'s memory
        opt.step([g0, params[0]])
        topt.step()
    for p, t in zip(params, tparams):
        np.testing.assert_array_equal(p, t.numpy())


@pytest.mark.parametrize("threads", [1, 2])
def test_ema_of_its_own_average_runs_in_order(threads, restore_threads):
    """values[1] is averages[0]: the result is that of the two updates in order."""
    fm.set_num_threads(threads)
    rng = np.random.default_rng(10)
    start = [rng.standard_normal(THREADED // 2) for _ in range(2)]
    ema = fm.EMA(start, decay=0.9)
    first = rng.standard_normal(THREADED // 2)
    want = [a.copy() for a in ema.raw_averages]
    fm.ema_update(want[0], first, 0.9)          # the two calls, one after the other
    fm.ema_update(want[1], want[0], 0.9)
    ema.update([first, ema.raw_averages[0]])
    for got, w in zip(ema.raw_averages, want):
        np.testing.assert_array_equal(got, w)


@pytest.mark.parametrize("change", ["count", "shape"])
def test_bad_state_dict_is_refused_and_changes_nothing(change):
    rng = np.random.default_rng(4)
    params = random_arrays(rng, SHAPES, DTYPES)
    opt = fm.SGD(params, lr=0.1, momentum=0.9)
    opt.step(random_arrays(rng, SHAPES, DTYPES))
    sd = opt.state_dict()
    if change == "count":
        del sd["state"][3]
    else:
        sd["state"][1]["momentum_buffer"] = np.zeros(8)
    sd["param_groups"][0]["lr"] = 0.5
    before = snapshot(*opt.momentum_buffers)
    with pytest.raises(ValueError, match="SGD.load_state_dict"):
        opt.load_state_dict(sd)
    assert snapshot(*opt.momentum_buffers) == before and opt.lr == 0.1


def test_constructor_checks():
    a = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="Invalid learning rate: -0.1"):
        fm.SGD([a], lr=-0.1)
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        fm.SGD([a], lr=0.1, nesterov=True)
    with pytest.raises(TypeError, match=r"`params\[0\]` must be a writeable"):
        fm.SGD([np.zeros(3, np.int64)], lr=0.1)
    with pytest.raises(ValueError, match=r"`params\[0\]` and `params\[1\]` share memory"):
        fm.SGD([a, a], lr=0.1)


def test_fused_ema_equals_step_then_ema():
    rng = np.random.default_rng(5)
    shapes, dtypes = SHAPES + [(5000,)], DTYPES + [np.float32]
    start = random_arrays(rng, shapes, dtypes)
    grads = [random_arrays(rng, shapes, dtypes) for _ in range(5)]
    separate, fused = [p.copy() for p in start], [p.copy() for p in start]
    ema_separate = fm.EMA(separate, decay=0.9, warmup=True)
    opt_separate = fm.SGD(separate, lr=0.1, momentum=0.9)
    ema_fused = fm.EMA(fused, decay=0.9, warmup=True)
    opt_fused = fm.SGD(fused, lr=0.1, momentum=0.9, ema=ema_fused)
    for g in grads:
        opt_separate.step(g)
        ema_separate.update(separate)
        opt_fused.step(g)
    assert ema_fused.updates == ema_separate.updates == 5
    assert snapshot(*fused) == snapshot(*separate)
    assert snapshot(*ema_fused.averages) == snapshot(*ema_separate.averages)


def test_ema_of_other_shapes_is_refused():
    params = [np.zeros(3, np.float32)]
    with pytest.raises(ValueError, match="SGD"):
        fm.SGD(params, lr=0.1, ema=fm.EMA([np.zeros(4, np.float32)]))
