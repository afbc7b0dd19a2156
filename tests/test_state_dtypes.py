"""Fewer-byte momentum (``momentum_dtype``) in NumPy: momentum_step, fastmomentum.SGD and the
baseline, against an independent oracle: torch.optim.SGD's float32 step with its momentum
buffer rounded to bfloat16/float16 after every step (Optax's ``trace`` with
``accumulator_dtype``: the update uses the unrounded velocity, the state keeps it rounded)."""
import math
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch

import fastmomentum
from fastmomentum import baseline, momentum_step
from fastmomentum.demos import _state_cost

from _grid import SGD_OPTIONS, option_id, snapshot
from conftest import THREADED, assert_threads_run

BF16 = ml_dtypes.bfloat16
STATE_DTYPES = {"bfloat16": (BF16, torch.bfloat16), "float16": (np.float16, torch.float16)}
MOMENTUM_OPTIONS = [o for o in SGD_OPTIONS if o["momentum"]]


def rounding_buffers(torch_dtype):
    """A torch.optim step post-hook: every momentum buffer rounded to ``torch_dtype``
    (and kept as float32), as if the optimizer stored it in that dtype."""
    def hook(optimizer, args, kwargs):
        for state in optimizer.state.values():
            state["momentum_buffer"] = state["momentum_buffer"].to(torch_dtype).float()
    return hook


def oracle_trajectory(p0, grads, lrs, options, torch_dtype):
    """torch.optim.SGD in float32, its buffer rounded to ``torch_dtype`` after each step:
    (params after each step, the final buffer as ``torch_dtype`` bits)."""
    p = torch.tensor(p0, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lrs[0], **options)
    opt.register_step_post_hook(rounding_buffers(torch_dtype))

    def step(grad, lr):
        opt.param_groups[0]["lr"], p.grad = lr, torch.tensor(grad)
        opt.step()
        return p.detach().numpy().copy()
    out = [step(g, lr) for g, lr in zip(grads, lrs)]
    bits = opt.state[p]["momentum_buffer"].to(torch_dtype).view(torch.int16).numpy()
    return out, bits


def kernel_trajectory(step, p0, grads, lrs, options, dtype):
    p = p0.copy()
    v = np.full(p0.shape, np.nan, dtype=dtype)   # the first step must ignore it
    out = []
    for i, (g, lr) in enumerate(zip(grads, lrs)):
        step(p, g, v, lr=lr, first_step=i == 0, momentum_dtype=dtype, **options)
        out.append(p.copy())
    return out, v.view(np.int16)


def problem(rng, shape, steps=5):
    p0 = rng.standard_normal(shape).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]
    return p0, grads, [0.1 * 0.7 ** i + 1e-3 for i in range(steps)]


@pytest.mark.parametrize("state", STATE_DTYPES)
@pytest.mark.parametrize("options", MOMENTUM_OPTIONS, ids=option_id)
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 33), (1000,)])
def test_momentum_step_equals_oracle_bit_for_bit(rng, state, options, shape):
    dtype, torch_dtype = STATE_DTYPES[state]
    p0, grads, lrs = problem(rng, shape)
    expected, expected_bits = oracle_trajectory(p0, grads, lrs, options, torch_dtype)
    got, bits = kernel_trajectory(momentum_step, p0, grads, lrs, options, dtype)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(bits, expected_bits)


def test_param_uses_the_unrounded_velocity(rng):
    """One step from v = 0: the param moves by lr * (g exactly), not by lr * bf16(g)."""
    p = np.zeros(1000, np.float32)
    g = rng.standard_normal(1000).astype(np.float32)
    v = np.zeros(1000, BF16)
    momentum_step(p, g, v, lr=1.0, momentum=0.9, first_step=True, momentum_dtype=BF16)
    np.testing.assert_array_equal(p, -g)
    np.testing.assert_array_equal(v, g.astype(BF16))
    assert not np.array_equal(v.astype(np.float32), g)  # the stored one is rounded


@pytest.mark.parametrize("state", STATE_DTYPES)
def test_threaded_steps_equal_one_thread_and_oracle(rng, state):
    dtype, torch_dtype = STATE_DTYPES[state]
    assert_threads_run(THREADED)
    options = dict(momentum=0.9, dampening=0.1, weight_decay=0.01)
    p0, grads, lrs = problem(rng, (THREADED,), steps=3)
    expected, expected_bits = oracle_trajectory(p0, grads, lrs, options, torch_dtype)
    threads = fastmomentum.get_num_threads()
    try:
        fastmomentum.set_num_threads(1)
        serial, serial_bits = kernel_trajectory(momentum_step, p0, grads, lrs, options, dtype)
    finally:
        fastmomentum.set_num_threads(threads)
    got, bits = kernel_trajectory(momentum_step, p0, grads, lrs, options, dtype)
    np.testing.assert_array_equal(got[-1], expected[-1])
    np.testing.assert_array_equal(serial[-1], expected[-1])
    np.testing.assert_array_equal(bits, expected_bits)
    np.testing.assert_array_equal(serial_bits, expected_bits)


@pytest.mark.parametrize("state", STATE_DTYPES)
@pytest.mark.parametrize("options", MOMENTUM_OPTIONS, ids=option_id)
def test_baseline_agrees_within_rounding(rng, state, options):
    """The NumPy baseline (no fused multiply-add) within a few float32 ulps of the kernels;
    its stored velocity within one ulp of the state dtype."""
    dtype, _ = STATE_DTYPES[state]
    p0, grads, lrs = problem(rng, (500,), steps=3)
    got, _ = kernel_trajectory(momentum_step, p0, grads, lrs, options, dtype)
    base, _ = kernel_trajectory(baseline.momentum_step, p0, grads, lrs, options, dtype)
    np.testing.assert_allclose(base[-1], got[-1], rtol=1e-5, atol=1e-5)


def test_momentum_zero_never_touches_velocity(rng):
    p, g = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    expected = p.copy()
    momentum_step(expected, g, None, lr=0.1)  # the float32 step (= torch's: other tests)
    v = np.full(50, 3.0, BF16)
    momentum_step(p, g, v, lr=0.1, momentum_dtype=BF16)
    np.testing.assert_array_equal(p, expected)
    np.testing.assert_array_equal(v, np.full(50, 3.0, BF16))
    momentum_step(p, g, None, lr=0.1, momentum_dtype="bfloat16")  # no velocity needed


@pytest.mark.parametrize("dtype", [BF16, "bfloat16", np.dtype(BF16), np.float16, "float16"])
def test_momentum_dtype_spellings(rng, dtype):
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    p = rng.standard_normal(9).astype(np.float32)
    g = rng.standard_normal(9).astype(np.float32)
    v = np.zeros(9, np.dtype(BF16) if name == "bfloat16" else np.float16)
    momentum_step(p, g, v, lr=0.1, momentum=0.9, first_step=True, momentum_dtype=dtype)
    np.testing.assert_array_equal(v, g.astype(v.dtype))


# ---------------------------------------------------------------------------------------
# fastmomentum.SGD(momentum_dtype=...)

def test_sgd_equals_oracle_and_keeps_the_dtype_through_state_dict(rng):
    shapes = [(3,), (40, 5), (20000,)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    refs = [torch.tensor(p, requires_grad=True) for p in params]
    opt = fastmomentum.SGD(params, lr=0.05, momentum=0.9, nesterov=True, momentum_dtype=BF16)
    ref = torch.optim.SGD(refs, lr=0.05, momentum=0.9, nesterov=True)
    for step in range(6):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        if step == 3:  # save, start over from the copy: the trajectory continues exactly
            saved = opt.state_dict()
            assert all(e["momentum_buffer"].dtype == BF16 for e in saved["state"].values())
            params = [p.copy() for p in params]
            opt = fastmomentum.SGD(params, lr=0.05, momentum=0.9, nesterov=True,
                                   momentum_dtype=BF16)
            opt.load_state_dict(saved)
        opt.step(grads)
        for r, g in zip(refs, grads):
            r.grad = torch.tensor(g)
        ref.step()
        for r in refs:
            ref.state[r]["momentum_buffer"] = ref.state[r]["momentum_buffer"].bfloat16().float()
        for p, r in zip(params, refs):
            np.testing.assert_array_equal(p, r.detach().numpy())
    assert [b.dtype for b in opt.momentum_buffers] == [np.dtype(BF16)] * 3
    assert opt.steps == 6  # 3 saved, 3 after loading


def test_sgd_refuses_float64_params_and_ema(rng):
    with pytest.raises(TypeError, match=r"SGD: `momentum_dtype` needs float32 params; "
                                        r"`params\[1\]` is dtype=float64"):
        fastmomentum.SGD([np.zeros(3, np.float32), np.zeros(3)], lr=0.1, momentum=0.9,
                         momentum_dtype=BF16)
    p = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="`ema` cannot be combined with `momentum_dtype`"):
        fastmomentum.SGD([p], lr=0.1, momentum=0.9, momentum_dtype=BF16,
                         ema=fastmomentum.EMA([p]))


def test_sgd_bad_grad_writes_nothing(rng):
    params = [rng.standard_normal(5).astype(np.float32) for _ in range(2)]
    opt = fastmomentum.SGD(params, lr=0.1, momentum=0.9, momentum_dtype=np.float16)
    opt.step([np.ones(5, np.float32)] * 2)
    before = snapshot(*params, *opt.momentum_buffers)
    with pytest.raises(TypeError, match=r"SGD.step: `grads\[1\]` must be a C-contiguous "
                                        r"float32 array like `params\[1\]`"):
        opt.step([np.ones(5, np.float32), np.ones(5)])
    assert snapshot(*params, *opt.momentum_buffers) == before
    assert opt.steps == 1


# ---------------------------------------------------------------------------------------
# Bad input: the kernels and the baseline refuse alike, naming what to pass; nothing written

def _arrays(rng, vdtype=BF16, pdtype=np.float32):
    p = rng.standard_normal(8).astype(pdtype)
    g = rng.standard_normal(8).astype(pdtype)
    return p, g, np.ones(8, vdtype)


BAD = [
    ("bf16 bits as uint16", dict(velocity=lambda v: v.view(np.uint16)), TypeError,
     r"momentum_step: `velocity` must be a writeable C-contiguous bfloat16 array "
     r"\(momentum_dtype\) shaped like `param`; got dtype=uint16, shape=\(8,\) \(bfloat16 "
     r"bits held as uint16: pass `velocity.view\(ml_dtypes.bfloat16\)`"),
    ("float32 velocity", dict(velocity=lambda v: v.astype(np.float32)), TypeError,
     r"`velocity` must be a writeable C-contiguous bfloat16 array .*got dtype=float32"),
    ("float16 for bfloat16", dict(velocity=lambda v: v.astype(np.float16)), TypeError,
     r"`velocity` must be a writeable C-contiguous bfloat16 array .*got dtype=float16"),
    ("read-only velocity", dict(velocity=lambda v: (v.setflags(write=False), v)[1]),
     TypeError, r"`velocity` must be a writeable .*read-only"),
    ("velocity shape", dict(velocity=lambda v: np.ones(7, BF16)), ValueError,
     r"`velocity` must have the shape of `param` \(8,\); got shape=\(7,\)"),
    ("float64 param", dict(param=lambda p: p.astype(np.float64),
                           grad=lambda g: g.astype(np.float64)), TypeError,
     r"momentum_step: `param` must be float32 with momentum_dtype"),
    ("velocity missing", dict(velocity=lambda v: None), TypeError,
     r"`velocity` must be a bfloat16 array when momentum != 0; got None"),
    ("unknown momentum_dtype", dict(momentum_dtype=np.dtype(np.int8)), TypeError,
     r"momentum_step: `momentum_dtype` must be bfloat16 \(ml_dtypes.bfloat16 or "
     r"'bfloat16'\) or float16 .*got dtype\('int8'\)"),
    ("velocity overlaps param", dict(velocity="param's memory"), ValueError,
     r"momentum_step: `velocity` must not share memory with `param`"),
]


@pytest.mark.parametrize("impl", [momentum_step, baseline.momentum_step],
                         ids=["kernels", "baseline"])
@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_refused_and_nothing_written(rng, impl, case):
    _, changes, error, message = case
    p, g, v = _arrays(rng)
    args = dict(param=p, grad=g, velocity=v, momentum_dtype=BF16)
    for name, change in changes.items():
        args[name] = (change(args[name]) if callable(change)
                      else p.view(BF16)[:8] if change == "param's memory" else change)
    arrays = [a for a in (args["param"], args["grad"], args["velocity"]) if a is not None]
    before = snapshot(*arrays)
    with pytest.raises(error, match=message):
        impl(args["param"], args["grad"], args["velocity"], lr=0.1, momentum=0.9,
             momentum_dtype=args["momentum_dtype"])
    assert snapshot(*arrays) == before


def test_ml_dtypes_is_imported_only_when_needed():
    """float32 steps (with and without float16 momentum) never import ml_dtypes."""
    code = ("import sys, numpy as np, fastmomentum as fm\n"
            "p, g = np.ones(4, np.float32), np.ones(4, np.float32)\n"
            "fm.momentum_step(p, g, np.ones(4, np.float32), lr=0.1, momentum=0.9)\n"
            "fm.momentum_step(p, g, np.ones(4, np.float16), lr=0.1, momentum=0.9,\n"
            "                 momentum_dtype=np.float16)\n"
            "try:\n"
            "    fm.momentum_step(p, g, np.ones(4, np.int16), lr=0.1, momentum=0.9,\n"
            "                     momentum_dtype=np.float16)\n"
            "except TypeError:\n"
            "    pass\n"
            "print('ml_dtypes' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------
# What it costs: the final loss, float32 momentum as the oracle

def test_least_squares_loss_with_bf16_momentum_within_bound():
    """100 full-batch momentum steps of the least-squares demo's problem in float32: the
    excess loss with bfloat16 momentum within 10% of float32 momentum's (measured: 4.56e-4
    vs 4.47e-4, docs/state-dtypes.md)."""
    f32 = _state_cost.least_squares_loss(None, steps=100)
    bf16 = _state_cost.least_squares_loss(BF16, steps=100)
    assert f32 > 0 and bf16 > 0
    assert abs(bf16 - f32) <= 0.1 * f32


def test_mlp_loss_with_bf16_momentum_within_bound():
    """A small MLP trained 150 steps: final MSE with bfloat16 momentum within 2% of float32
    momentum's (measured at 400 steps: +0.02%, docs/state-dtypes.md)."""
    f32 = _state_cost.mlp_loss(None, steps=150)
    bf16 = _state_cost.mlp_loss(torch.bfloat16, steps=150)
    assert bf16 != f32  # the runs differ (the state really was rounded) ...
    assert abs(bf16 - f32) <= 0.02 * f32  # ... and the loss barely


# ---------------------------------------------------------------------------------------
# state-clip: global-norm clipping and skipping with momentum_dtype. Oracle: torch's
# total norm (float64) within 1e-6; given the total, torch's clip_grads_with_norm_ then
# the unclipped fewer-byte step (torch.optim.SGD with its buffer rounded each step), bit
# for bit; and the same fastmomentum step on grads scaled in NumPy.

from hypothesis import given, settings, strategies as st   # noqa: E402

from fastmomentum._dispatch import kernels   # noqa: E402

CLIP_SHAPES = [(3,), (40, 5), (0,), (20000,)]


def _grads(rng, shapes, scale=3.0):
    return [(scale * rng.standard_normal(s)).astype(np.float32) for s in shapes]


def _torch_total(grads, norm_type):
    return float(torch.nn.utils.get_total_norm(
        [torch.from_numpy(g).double() for g in grads if g.size], norm_type))


@pytest.mark.parametrize("state", STATE_DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
@pytest.mark.parametrize("options", MOMENTUM_OPTIONS, ids=option_id)
def test_sgd_clipped_equals_torch_clip_then_rounded_buffer(rng, state, norm_type, options):
    dtype, torch_dtype = STATE_DTYPES[state]
    params = [rng.standard_normal(s).astype(np.float32) for s in CLIP_SHAPES]
    refs = [torch.tensor(p, requires_grad=True) for p in params]
    opt = fastmomentum.SGD(params, lr=0.05, momentum_dtype=dtype, clip_grad_norm=2.0,
                           norm_type=norm_type, **options)
    ref = torch.optim.SGD(refs, lr=0.05, **options)
    ref.register_step_post_hook(rounding_buffers(torch_dtype))
    for _ in range(4):
        grads = _grads(rng, CLIP_SHAPES)
        total = opt.step(grads)   # None: the step returns nothing; the norm is recorded
        assert total is None
        total = opt.last_grad_norm
        assert total == pytest.approx(_torch_total(grads, norm_type), rel=1e-6)
        for r, g in zip(refs, grads):
            r.grad = torch.tensor(g)
        torch.nn.utils.clip_grads_with_norm_(refs, 2.0, torch.tensor(total,
                                                                    dtype=torch.float32))
        assert not torch.equal(refs[-1].grad, torch.tensor(grads[-1]))   # clipped
        ref.step()
        for p, r in zip(params, refs):
            np.testing.assert_array_equal(p, r.detach().numpy())
    for b, r in zip(opt.momentum_buffers, refs):
        assert b.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(
            b.view(np.int16), ref.state[r]["momentum_buffer"].to(torch_dtype).view(
                torch.int16).numpy())
    assert opt.steps == 4 and opt.skipped_steps == 0


@pytest.mark.parametrize("state", STATE_DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_sgd_skip_if_nonfinite_leaves_params_and_momentum(rng, state, bad):
    dtype, _ = STATE_DTYPES[state]
    params = [rng.standard_normal(s).astype(np.float32) for s in CLIP_SHAPES]
    opt = fastmomentum.SGD(params, lr=0.05, momentum=0.9, momentum_dtype=dtype,
                           skip_if_nonfinite=True, clip_grad_norm=1.0)
    grads = _grads(rng, CLIP_SHAPES)
    grads[0][1] = bad
    opt.step(grads)   # a skipped first step makes no buffers
    assert opt.momentum_buffers is None and (opt.steps, opt.skipped_steps) == (0, 1)
    opt.step(_grads(rng, CLIP_SHAPES))
    grads = _grads(rng, CLIP_SHAPES)
    grads[3][-1] = bad
    before = snapshot(*params, *opt.momentum_buffers)
    opt.step(grads)
    assert snapshot(*params, *opt.momentum_buffers) == before
    assert (opt.steps, opt.skipped_steps) == (1, 2)
    assert not np.isfinite(opt.last_grad_norm)


@pytest.mark.parametrize("state", STATE_DTYPES)
def test_sgd_clipped_threaded_equals_one_thread(rng, state):
    dtype, _ = STATE_DTYPES[state]
    assert_threads_run(THREADED)
    shapes = [(THREADED,), (77,)]
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [_grads(rng, shapes) for _ in range(3)]
    results = []
    threads = fastmomentum.get_num_threads()
    try:
        for n in (1, 2):
            fastmomentum.set_num_threads(n)
            params = [p.copy() for p in p0]
            opt = fastmomentum.SGD(params, lr=0.05, momentum=0.9, momentum_dtype=dtype,
                                   clip_grad_norm=5.0)
            norms = []
            for g in grads:
                opt.step(g)
                norms.append(opt.last_grad_norm)
            results.append((norms, snapshot(*params, *opt.momentum_buffers)))
    finally:
        fastmomentum.set_num_threads(threads)
    assert results[0] == results[1]


@pytest.mark.parametrize("state", STATE_DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_baseline_mirrors_clipping_with_momentum_dtype(rng, state, norm_type):
    """The baseline's norm to float32 rounding; its step (no fused multiply-add) within a
    few float32 ulps; its buffers within one unit of the momentum dtype."""
    dtype, _ = STATE_DTYPES[state]
    ours = [rng.standard_normal(s).astype(np.float32) for s in CLIP_SHAPES]
    theirs = [p.copy() for p in ours]
    kw = dict(lr=0.05, momentum=0.9, momentum_dtype=dtype, clip_grad_norm=2.0,
              norm_type=norm_type, skip_if_nonfinite=True)
    opt, ref = fastmomentum.SGD(ours, **kw), baseline.SGD(theirs, **kw)
    for step in range(4):
        grads = _grads(rng, CLIP_SHAPES)
        if step == 2:
            grads[1][0, 0] = np.nan
        opt.step(grads)
        ref.step(grads)
        if step == 2:
            assert np.isnan(ref.last_grad_norm)
        else:
            assert ref.last_grad_norm == pytest.approx(opt.last_grad_norm, rel=1e-7)
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [b.dtype for b in ref.momentum_buffers] == [np.dtype(dtype)] * len(CLIP_SHAPES)
    assert ref.skipped_steps == opt.skipped_steps == 1 and ref.steps == opt.steps == 3


@pytest.mark.parametrize("impl", [fastmomentum, baseline], ids=["kernels", "baseline"])
def test_bad_clipping_options_with_momentum_dtype_are_refused(rng, impl):
    params = [rng.standard_normal(5).astype(np.float32)]
    with pytest.raises(ValueError, match=r"^SGD: .*`norm_type`"):
        impl.SGD(params, lr=0.1, momentum=0.9, momentum_dtype=BF16, clip_grad_norm=1.0,
                 norm_type=1.0)
    opt = impl.SGD(params, lr=0.1, momentum=0.9, momentum_dtype=BF16)
    opt.clip_grad_norm = -1.0
    before = snapshot(*params)
    with pytest.raises(ValueError, match=r"^SGD.step: .*`clip_grad_norm`"):
        opt.step([np.ones(5, np.float32)])
    assert snapshot(*params) == before and opt.momentum_buffers is None and opt.steps == 0


@settings(max_examples=50, deadline=None)
@given(shapes=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
       state=st.sampled_from(sorted(STATE_DTYPES)), max_norm=st.floats(0.0, 50.0),
       norm_type=st.sampled_from([2.0, float("inf")]), scale=st.floats(1e-3, 1e3),
       nesterov=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_property_clipped_state_step_is_the_step_of_scaled_grads(shapes, state, max_norm,
                                                                 norm_type, scale, nesterov,
                                                                 seed):
    dtype, _ = STATE_DTYPES[state]
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32) for n in shapes]
    theirs = [p.copy() for p in params]
    grads = [(scale * rng.standard_normal(n)).astype(np.float32) for n in shapes]
    kw = dict(lr=0.1, momentum=0.5, nesterov=nesterov, momentum_dtype=dtype)
    opt = fastmomentum.SGD(params, **kw, clip_grad_norm=max_norm, norm_type=norm_type)
    ref = fastmomentum.SGD(theirs, **kw)
    for _ in range(2):
        opt.step(grads)
        exact = (max((float(np.max(np.abs(g))) for g in grads if g.size), default=0.0)
                 if norm_type == float("inf") else
                 math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads)))
        assert opt.last_grad_norm == float(np.float32(exact))
        coef = np.float32(kernels.clip_coefficient(opt.last_grad_norm, max_norm, True))
        ref.step([g * coef for g in grads])
        assert snapshot(*params, *opt.momentum_buffers) == snapshot(*theirs,
                                                                   *ref.momentum_buffers)
