"""fastmomentum/kernels.pxd, the C API for other Cython code: a tiny third-party module,
built in a temporary folder against the installed package's .pxd, gives momentum_step's and
ema_update's bits."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmomentum as fm

import Cython  # noqa: E402,F401  (the test extra brings it: the module is built here)

THIRD_PARTY = textwrap.dedent("""
    # cython: language_level=3, boundscheck=False, wraparound=False
    from fastmomentum.kernels cimport (SgdParams, ema_step, real, sgd_ema_step,
                                       sgd_ema_step_scaled, sgd_ema_step_scaled_store,
                                       sgd_step, sgd_step_scaled, sgd_step_scaled_store)

    def step(real[::1] param, real[::1] grad, real[::1] velocity, double lr,
             double momentum, double dampening, double weight_decay, bint nesterov,
             bint maximize, bint first_step):
        cdef SgdParams opts = SgdParams(lr=lr, momentum=momentum, dampening=dampening,
                                        weight_decay=weight_decay, nesterov=nesterov,
                                        maximize=maximize, first_step=first_step)
        with nogil:
            sgd_step(&param[0], &grad[0], &velocity[0], param.shape[0], &opts)

    def step_and_average(real[::1] param, real[::1] grad, real[::1] velocity,
                         real[::1] average, double lr, double momentum, double decay):
        cdef SgdParams opts = SgdParams(lr=lr, momentum=momentum, dampening=0.0,
                                        weight_decay=0.0, nesterov=False, maximize=False,
                                        first_step=False)
        sgd_ema_step(&param[0], &grad[0], &velocity[0], &average[0], param.shape[0], &opts,
                     decay)

    def average(real[::1] average, real[::1] value, double decay):
        ema_step(&average[0], &value[0], average.shape[0], decay)

    def scaled_step(real[::1] param, real[::1] grad, real[::1] velocity, real[::1] average,
                    double lr, double momentum, bint nesterov, bint maximize, double coef,
                    double decay):
        cdef SgdParams opts = SgdParams(lr=lr, momentum=momentum, dampening=0.0,
                                        weight_decay=1e-3, nesterov=nesterov,
                                        maximize=maximize, first_step=False)
        if decay < 0:
            sgd_step_scaled(&param[0], &grad[0], &velocity[0], param.shape[0], &opts, coef)
        else:
            sgd_ema_step_scaled(&param[0], &grad[0], &velocity[0], &average[0],
                                param.shape[0], &opts, decay, coef)

    def scaled_store_step(real[::1] param, real[::1] grad, real[::1] velocity,
                          real[::1] average, double lr, double momentum, bint nesterov,
                          bint maximize, double coef, double decay):
        cdef SgdParams opts = SgdParams(lr=lr, momentum=momentum, dampening=0.0,
                                        weight_decay=1e-3, nesterov=nesterov,
                                        maximize=maximize, first_step=False)
        if decay < 0:
            sgd_step_scaled_store(&param[0], &grad[0], &velocity[0], param.shape[0], &opts,
                                  coef)
        else:
            sgd_ema_step_scaled_store(&param[0], &grad[0], &velocity[0], &average[0],
                                      param.shape[0], &opts, decay, coef)
""")

SETUP = textwrap.dedent("""
    import sys
    from Cython.Build import cythonize
    from setuptools import Extension, setup
    setup(ext_modules=cythonize(
        [Extension("third_party", ["third_party.pyx"],
                   extra_compile_args=["-O2", "-ffp-contract=off"])],
        include_path=[sys.argv.pop()]), script_args=["build_ext", "--inplace", "-q"])
""")


@pytest.fixture(scope="module")
def third_party(tmp_path_factory):
    folder = tmp_path_factory.mktemp("third_party")
    (folder / "third_party.pyx").write_text(THIRD_PARTY)
    (folder / "setup.py").write_text(SETUP)
    # the installed package's .pxd files, as a user's build would find them
    package_root = os.path.dirname(os.path.dirname(fm.__file__))
    built = subprocess.run([sys.executable, "setup.py", package_root], cwd=folder,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    sys.path.insert(0, str(folder))
    try:
        import third_party
        yield third_party
    finally:
        sys.path.remove(str(folder))


OPTIONS = [dict(momentum=0.0, weight_decay=0.01), dict(momentum=0.9, dampening=0.1),
           dict(momentum=0.9, nesterov=True, weight_decay=1e-3, maximize=True)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("first_step", [False, True])
def test_sgd_step_gives_momentum_steps_bits(third_party, dtype, options, first_step):
    rng = np.random.default_rng(7)
    p, g, v = (rng.standard_normal(1001).astype(dtype) for _ in range(3))
    full = {**dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                   maximize=False), **options}
    want_p, want_v = p.copy(), v.copy()
    fm.momentum_step(want_p, g, want_v, lr=0.03, first_step=first_step, **full)
    third_party.step(p, g, v, 0.03, full["momentum"], full["dampening"],
                     full["weight_decay"], full["nesterov"], full["maximize"], first_step)
    assert p.tobytes() == want_p.tobytes() and v.tobytes() == want_v.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ema_entry_points_give_ema_updates_bits(third_party, dtype):
    rng = np.random.default_rng(8)
    p, g, v, a = (rng.standard_normal(777).astype(dtype) for _ in range(4))
    want_p, want_v, want_a = p.copy(), v.copy(), a.copy()
    fm.momentum_step(want_p, g, want_v, lr=0.1, momentum=0.9)
    fm.ema_update(want_a, want_p, 0.99)
    third_party.step_and_average(p, g, v, a, 0.1, 0.9, 0.99)
    assert p.tobytes() == want_p.tobytes() and a.tobytes() == want_a.tobytes()
    third_party.average(a, g, 0.5)
    fm.ema_update(want_a, g, 0.5)
    assert a.tobytes() == want_a.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, nesterov, maximize", [(0.0, False, True), (0.9, True, False)])
@pytest.mark.parametrize("decay", [-1.0, 0.99])
def test_scaled_entry_points_read_grad_times_coefficient(third_party, dtype, momentum,
                                                         nesterov, maximize, decay):
    """sgd_step_scaled / sgd_ema_step_scaled = the plain step of grad * coef (NumPy rounds
    the product to the dtype), grad unchanged; coef 1 = the plain step."""
    rng = np.random.default_rng(9)
    p, g, v, a = (rng.standard_normal(1003).astype(dtype) for _ in range(4))
    for coef in (0.3, 1.0):
        want_p, want_v, want_a, grad = p.copy(), v.copy(), a.copy(), g.copy()
        fm.momentum_step(want_p, g * dtype(coef), want_v, lr=0.05, momentum=momentum,
                         weight_decay=1e-3, nesterov=nesterov, maximize=maximize)
        if decay >= 0:
            fm.ema_update(want_a, want_p, decay)
        third_party.scaled_step(p, g, v, a, 0.05, momentum, nesterov, maximize, coef, decay)
        assert p.tobytes() == want_p.tobytes() and a.tobytes() == want_a.tobytes()
        if momentum:
            assert v.tobytes() == want_v.tobytes()
        assert g.tobytes() == grad.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, nesterov, maximize", [(0.0, False, True), (0.9, True, False)])
@pytest.mark.parametrize("decay", [-1.0, 0.99])
def test_store_entry_points_leave_grad_times_coefficient(third_party, dtype, momentum,
                                                         nesterov, maximize, decay):
    """sgd_step_scaled_store / sgd_ema_step_scaled_store: the scaled entry points' bits, and
    the grad left holding grad * coef rounded to the dtype (not negated by maximize)."""
    rng = np.random.default_rng(10)
    p, g, v, a = (rng.standard_normal(1003).astype(dtype) for _ in range(4))
    for coef in (0.3, 1.0):
        want_p, want_v, want_a, want_g = p.copy(), v.copy(), a.copy(), g * dtype(coef)
        fm.momentum_step(want_p, want_g, want_v, lr=0.05, momentum=momentum,
                         weight_decay=1e-3, nesterov=nesterov, maximize=maximize)
        if decay >= 0:
            fm.ema_update(want_a, want_p, decay)
        third_party.scaled_store_step(p, g, v, a, 0.05, momentum, nesterov, maximize, coef,
                                      decay)
        assert p.tobytes() == want_p.tobytes() and a.tobytes() == want_a.tobytes()
        if momentum:
            assert v.tobytes() == want_v.tobytes()
        assert g.tobytes() == want_g.tobytes()
