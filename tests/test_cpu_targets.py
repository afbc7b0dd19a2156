"""Per-CPU-target builds: the CPU is checked before any target's module loads; results,
pickles and state dicts do not depend on the target.

The emulated-CPU test runs Python under ``qemu-x86_64 -cpu <model without AVX2>`` (CI
installs qemu-user: .ci/run); without qemu it is skipped, unless
``FASTMOMENTUM_REQUIRE_QEMU=1`` (CI's leg) makes that a failure.
"""
import os
import pickle
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastmomentum as fm
from fastmomentum import _target

# What the emulated CPU runs: an import, a momentum_step, an ewm_mean, a pickle round trip
# of fastmomentum.SGD; it prints the target and the result bytes, to compare with this CPU.
SMOKE = r"""
import pickle, sys
import numpy as np
import fastmomentum as fm
rng = np.random.default_rng(5)
p, g, v = (rng.standard_normal(300) for _ in range(3))
fm.momentum_step(p, g, v, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
x = rng.standard_normal(5000)
x[7] = np.nan
y = fm.ewm_mean(x, alpha=0.05)
times = np.cumsum(rng.integers(0, 90, 5000)).astype("datetime64[s]")
y = np.concatenate([y, fm.ewm_mean(x, times=times, halflife="20s"),
                    fm.ewm_mean(x[8:], times=times[8:], halflife="20s")])
opt = fm.SGD([p.copy()], lr=0.1, momentum=0.9)
opt.step([g])
back = pickle.loads(pickle.dumps(opt))
back.step([g])
opt.step([g])
assert np.array_equal(back.params[0], opt.params[0])
print(fm.BUILD_TARGET)
print((p.tobytes() + v.tobytes() + y.tobytes() + opt.params[0].tobytes()).hex())
"""

# Intel models without AVX2, oldest first. The issue's reproducer used Nehalem; NumPy 2.4's
# wheel itself needs AVX (importing numpy alone dies there with SIGILL), so the test takes
# the first model on which NumPy imports.
MODELS = ("Nehalem", "SandyBridge")


def _python():
    # the venv's interpreter path (not its resolved target): it finds the venv's packages
    return sys.executable


def _qemu():
    qemu = shutil.which("qemu-x86_64")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 only")
    if qemu is None:
        if os.environ.get("FASTMOMENTUM_REQUIRE_QEMU") == "1":
            pytest.fail("qemu-x86_64 is required (apt-get install -y qemu-user)")
        pytest.skip("qemu-x86_64 not installed (apt-get install -y qemu-user)")
    return qemu


def _run(cmd, code):
    return subprocess.run([*cmd, _python(), "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=os.path.dirname(os.path.dirname(fm.__file__)))


def test_a_cpu_without_avx2_runs_the_portable_cores_with_the_same_bits():
    qemu = _qemu()
    for model in MODELS:
        if _run([qemu, "-cpu", model], "import numpy").returncode == 0:
            break
    else:
        pytest.fail(f"NumPy imports on none of the qemu models {MODELS}")
    emulated = _run([qemu, "-cpu", model], SMOKE)
    assert emulated.returncode == 0, (model, emulated.returncode, emulated.stderr[-2000:])
    native = _run([], SMOKE)
    assert native.returncode == 0, native.stderr[-2000:]
    target, result = emulated.stdout.split()
    assert target == "portable"
    assert result == native.stdout.split()[1]   # the same bits as this CPU's target


def test_times_means_have_the_same_bits_on_every_target():
    """ewm_mean with times: the decay factors (fm_time_factors.h: int64 and float times,
    libm's exp2 beyond the polynomial's range) are a per-target core: the same bits on
    the portable one and every other, for one-shot means (float64 and float32, adjust
    either way) as for a stream's recurrence over them."""
    from conftest import on_target, targets_beside_portable
    from fastmomentum._ewm_family import time_factors
    rng = np.random.default_rng(12)
    n = 5 * 1024 + 99
    steps = rng.integers(0, 90, n)
    steps[[700, 3000]] = [100_000, -50]            # beyond exp2's range, a growth
    seconds = np.cumsum(steps)
    x = rng.standard_normal(n) * 4 + 1
    x[4000] = np.nan
    for target in targets_beside_portable():
        for times in (seconds.astype("datetime64[s]"), seconds * 0.25 + 1e9):
            halflife = "20s" if times.dtype.kind == "M" else 5.0
            values = times.view(np.int64) if times.dtype.kind == "M" else times
            np.testing.assert_array_equal(on_target(target, time_factors, values, np.nan,
                                                    20.0, 0.5),
                                          on_target("portable", time_factors, values,
                                                    np.nan, 20.0, 0.5))
            for data in (x, x.astype(np.float32)):
                for adjust in (True, False):
                    got = on_target(target, fm.ewm_mean, data, times=times,
                                    halflife=halflife, adjust=adjust)
                    want = on_target("portable", fm.ewm_mean, data, times=times,
                                     halflife=halflife, adjust=adjust)
                    np.testing.assert_array_equal(got, want)
            stream = [on_target(name, lambda: fm.EwmStream("mean", halflife=halflife,
                                                           times=True).update(x, times=times))
                      for name in (target, "portable")]
            np.testing.assert_array_equal(*stream)


def test_the_family_row_step_has_the_same_bits_on_every_target():
    """The ewm family's row step across series side by side (fm_ewm_moments.pxd
    family_row, and its row_finite check) is a per-target core: every statistic of a
    C-ordered frame along axis 0 (rows with and without missing values, float64 and
    float32, bias either way, adjust either way) the same bits on the portable target and
    every other."""
    from conftest import on_target, targets_beside_portable
    rng = np.random.default_rng(13)
    x = rng.standard_normal((300, 37)) * 3 + 2
    y = rng.standard_normal((300, 37)) + 0.5 * x
    x[[5, 120], [3, 30]] = [np.nan, np.inf]          # rows that leave the row step
    y[200, 0] = np.nan
    calls = [(fm.ewm_var, (x,), {"bias": True}), (fm.ewm_var, (x,), {}),
             (fm.ewm_std, (x,), {}), (fm.ewm_cov, (x, y), {}),
             (fm.ewm_cov, (x, y), {"bias": True}), (fm.ewm_corr, (x, y), {}),
             (fm.ewm_sum, (x,), {"adjust": True})]      # (pandas: sum has adjust=True only)
    for target in targets_beside_portable():
        for fn, args, options in calls:
            for dtype in (np.float64, np.float32):
                for adjust in (True, False):
                    data = [np.ascontiguousarray(a, dtype) for a in args]
                    kwargs = {"adjust": adjust, **options}
                    got, want = (on_target(name, fn, *data, alpha=0.1, **kwargs)
                                 for name in (target, "portable"))
                    assert got.dtype == dtype
                    np.testing.assert_array_equal(got, want, err_msg=f"{fn.__name__}")


def test_pickles_and_state_dicts_name_no_target():
    params = [np.ones(3, np.float32), np.ones(4)]
    ema = fm.EMA(params, decay=0.9)
    opt = fm.SGD(params, lr=0.1, momentum=0.9, ema=ema)
    opt.step([np.ones(3, np.float32), np.ones(4)])
    for obj in (opt, ema, opt.state_dict(), ema.state_dict()):
        data = pickle.dumps(obj)
        assert b"_cores_" not in data and b"avx2" not in data and b"portable" not in data
        assert pickle.loads(data) is not None


@pytest.mark.parametrize("target", _target.TARGETS)
def test_an_sgd_pickled_under_one_target_steps_the_same_under_every_other(target):
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(100), rng.standard_normal((30, 7)).astype(np.float32)]
    grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
    opt = fm.SGD(params, lr=0.05, momentum=0.9, dampening=0.1)
    opt.step(grads)
    data = pickle.dumps(opt)
    opt.step(grads)
    with _target.using(target):
        other = pickle.loads(data)
        other.step(grads)
    for a, b in zip(opt.params, other.params):
        np.testing.assert_array_equal(a, b)


def test_the_cpu_check_needs_no_target_module():
    """The CPU check and the target choice import no target-specific module first: in a
    fresh process, _target loads exactly the cores it chose."""
    code = ("import sys, fastmomentum._target as t; "
            "print(t.BUILD_TARGET, sorted(m for m in sys.modules if '_cores_' in m))")
    out = _run([], code)
    assert out.returncode == 0, out.stderr
    target, loaded = out.stdout.split(" ", 1)
    assert eval(loaded) == [f"fastmomentum._cores_{target}"]


# The 16-bit conversions and loops, inlined where they are used: gcc 12 once left
# fm_float_to_f16 out of line (its unit's inlining budget spent), a call per element that
# kept the float16 loops scalar (16M float16 momentum steps 10x slower), and an out-of-line
# torch_loop (a flag combination not propagated) ran float16 weight decay + nesterov steps
# scalar (44 ns an element, vs 5.5). Debug and sanitizer builds (FASTMOMENTUM_DEBUG /
# FASTMOMENTUM_SANITIZE, -O0/-O1) inline nothing.
INLINED = ("fm_float_to_f16", "fm_f16_to_float", "fm_float_to_bf16", "fm_bf16_to_float",
           "fm_half_steps_torch_loop", "fm_half_steps_once_loop")


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) not installed")
@pytest.mark.skipif(any(os.environ.get(v) == "1" for v in ("FASTMOMENTUM_DEBUG",
                                                         "FASTMOMENTUM_SANITIZE")),
                    reason="debug and sanitizer builds do not inline")
def test_cores_keep_no_16bit_conversion_or_loop_out_of_line():
    import fastmomentum._cores_portable as portable
    modules = [portable]
    if platform.machine().lower() in ("x86_64", "amd64"):
        import fastmomentum._cores_avx2 as avx2
        modules.append(avx2)
    for module in modules:
        symbols = subprocess.run(["nm", module.__file__], capture_output=True, text=True,
                                 check=True).stdout
        assert "half_step_range" in symbols, "nm found no local symbols (stripped build?)"
        outlined = [name for name in INLINED if name in symbols]
        assert outlined == [], f"{module.__name__}: out of line: {outlined}"
