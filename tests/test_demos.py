"""The demos compute the right numbers (closed forms, lstsq, analytic gradients, independent
recurrences), write real PNGs, and still work without matplotlib."""
import runpy
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmomentum
import fastmomentum.baseline
from fastmomentum import demos
from fastmomentum.__main__ import main as fastmomentum_main
from fastmomentum.demos import _plotting, ema, least_squares, steepest, zigzag
from fastmomentum.demos._descent import steps_to_tolerance

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- ema --------------------------------------------------------------------------------

def closed_form_ema(values, beta):
    """v_t = (1-beta) sum_{k<=t} beta^(t-k) x_k, written out term by term."""
    return np.array([(1 - beta) * sum(beta ** (t - k) * values[k] for k in range(t + 1))
                     for t in range(len(values))])


def test_ema_of_0_to_9_matches_closed_forms():
    r = ema.compute()
    x = np.arange(10.0)
    expected = closed_form_ema(x, 0.9)
    np.testing.assert_allclose(r.ewa, expected, rtol=1e-13, atol=1e-15)
    corrected = expected / (1 - 0.9 ** np.arange(1, 11))
    np.testing.assert_allclose(r.ewa_corrected, corrected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(r.running_mean, [x[:t + 1].mean() for t in range(10)])
    # For x_k = k - 1 the sum has a closed form of its own (arithmetic-geometric series):
    # v_t = (t - 1) - b (1 - b^(t-1)) / (1 - b).
    t, b = np.arange(1, 11), 0.9
    np.testing.assert_allclose(r.ewa, (t - 1) - b * (1 - b ** (t - 1)) / (1 - b),
                               rtol=1e-12, atol=1e-15)
    # The plain EMA is dragged towards its start at 0, the corrected one sits above the
    # mean because it weights the latest values most.
    assert r.running_mean[-1] == 4.5
    assert r.ewa[-1] < 4.5 < r.ewa_corrected[-1]


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=25),
       beta=st.floats(0.0, 0.99), columns=st.integers(1, 3))
def test_run_ema_matches_closed_form(values, beta, columns):
    series = np.outer(values, np.arange(1.0, columns + 1))
    plain, corrected = ema.run_ema(series, beta)
    expected = np.column_stack([closed_form_ema(series[:, j], beta) for j in range(columns)])
    np.testing.assert_allclose(plain, expected, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(corrected,
                               expected / (1 - beta ** np.arange(1, len(values) + 1))[:, None],
                               rtol=1e-10, atol=1e-9)


def test_momentum_velocity_with_dampening_beta_is_the_same_ema():
    x = np.arange(10.0)
    velocity, param = np.zeros(1), np.zeros(1)
    for value in x:
        fastmomentum.momentum_step(param, value[None], velocity, lr=0.0, momentum=0.9,
                                   dampening=0.9)
    assert velocity[0] == pytest.approx(ema.compute().ewa[-1], rel=1e-13)


def test_ema_beta_trades_noise_for_lag():
    # A long series, so the measured noise ratio is close to its stationary value.
    r = ema.compute(length=20000, period=400.0)
    lags = [s.lag for s in r.smoothing]
    noise = [s.noise_ratio for s in r.smoothing]
    assert lags == sorted(lags) and lags[0] < lags[-1]
    assert noise == sorted(noise, reverse=True)
    for s in r.smoothing:
        assert abs(s.lag - s.lag_theory) <= 1.0
        assert s.noise_ratio == pytest.approx(np.sqrt((1 - s.beta) / (1 + s.beta)), rel=0.1)
    # On this series beta=0.9 is the best compromise: 0.5 keeps noise, 0.98 lags.
    rmse = {s.beta: s.rmse for s in r.smoothing}
    assert rmse[0.9] < rmse[0.5] and rmse[0.9] < rmse[0.98]


# --- zigzag -----------------------------------------------------------------------------

def test_steps_to_tolerance_counts_until_it_stays_below():
    assert steps_to_tolerance([5, 3, 0.5, 2, 0.1, 0.05], 1.0) == 4
    assert steps_to_tolerance([0.5, 0.1], 1.0) == 0
    assert steps_to_tolerance([5, 3, 2], 1.0) is None


def test_zigzag_momentum_needs_fewer_steps_than_sgd():
    r = zigzag.compute()
    assert r.condition >= 50
    for k in range(len(r.tolerances)):
        sgd = r.steps["sgd"][k]
        assert sgd is not None
        assert r.steps["momentum"][k] < sgd
        assert r.steps["nesterov"][k] < sgd
    # Plain SGD really zig-zags: the across-valley coordinate flips sign every step.
    y = r.paths["sgd"][:20, 1]
    assert np.all(np.sign(y[1:]) == -np.sign(y[:-1]))


def test_zigzag_paths_match_independent_recurrences():
    r = zigzag.compute(max_steps=400)
    h, x0 = r.curvatures, r.paths["sgd"][0]
    k = np.arange(401)[:, None]
    # Gradient descent on a diagonal quadratic: x_k = (1 - lr h)^k x_0, exactly.
    np.testing.assert_allclose(r.paths["sgd"], (1 - r.sgd_lr * h) ** k * x0,
                               rtol=1e-10, atol=1e-300)
    # torch's momentum is the heavy ball: x+ = x - lr g + beta (x - x_prev).
    heavy = [x0, x0 - r.lr * h * x0]
    for _ in range(399):
        heavy.append(heavy[-1] - r.lr * h * heavy[-1] + r.momentum * (heavy[-1] - heavy[-2]))
    np.testing.assert_allclose(r.paths["momentum"], heavy, rtol=1e-9, atol=1e-12)
    # Nesterov against the NumPy baseline's update, step by step.
    p, v = x0.copy(), np.zeros(2)
    for step in range(400):
        fastmomentum.baseline.momentum_step(p, h * p, v, lr=r.lr, momentum=r.momentum,
                                            nesterov=True, first_step=step == 0)
    np.testing.assert_allclose(r.paths["nesterov"][-1], p, rtol=1e-9, atol=1e-12)


# --- least squares ----------------------------------------------------------------------

def test_least_squares_iterations_reach_the_closed_form():
    r = least_squares.compute()
    X, y = least_squares.make_data()
    w_normal = np.linalg.solve(X.T @ X, X.T @ y)   # the normal equations, independently
    np.testing.assert_allclose(r.w_closed, w_normal, rtol=1e-10)
    for name in ("gd", "momentum"):
        w = r.runs[name].weights[-1]
        assert np.linalg.norm(w - w_normal) / np.linalg.norm(w_normal) < r.tol
        assert r.runs[name].steps_to_tol is not None
    assert r.runs["momentum"].steps_to_tol < r.runs["gd"].steps_to_tol
    # Mini-batch SGD with a constant step gets close, then stalls at its noise floor.
    sgd = r.runs["sgd"]
    assert sgd.distance[-1] < 0.05 and sgd.steps_to_tol is None


def test_least_squares_reported_losses_and_condition():
    r = least_squares.compute(gd_steps=50, sgd_epochs=1)
    X, y = least_squares.make_data()
    n = len(y)

    def loss(w):
        return np.sum((X @ w - y) ** 2) / (2 * n)

    assert r.loss_closed == pytest.approx(loss(r.w_closed), rel=1e-12)
    for run in r.runs.values():
        for step in (0, 7, len(run.weights) - 1):
            assert run.excess_loss[step] == pytest.approx(
                loss(run.weights[step]) - r.loss_closed, rel=1e-6, abs=1e-12)
    assert r.condition == pytest.approx(np.linalg.cond(X) ** 2, rel=1e-6)
    assert r.runs["sgd"].epochs[-1] == pytest.approx(1.0, abs=32 / n)


# --- steepest ---------------------------------------------------------------------------

@pytest.mark.parametrize("point", [(-0.6, 0.9), (0.3, -0.4), (1.5, 1.0), (-1.2, 2.5)])
def test_steepest_direction_is_minus_the_normalised_gradient(point):
    r = steepest.compute(point=point)
    x, y = point
    grad = np.array([-2 * (1 - x) - 20 * x * (y - x ** 2), 10 * (y - x ** 2)])
    descent = -grad / np.linalg.norm(grad)
    assert np.linalg.norm(r.steepest - descent) < 1e-3
    assert r.steepest_slope == pytest.approx(-np.linalg.norm(grad), rel=1e-6)


def test_directional_derivatives_are_gradient_dot_direction():
    angles = np.random.default_rng(3).uniform(-np.pi, np.pi, 50)
    point = (0.7, -0.2)
    measured = steepest.directional_derivatives(steepest.valley, point, angles, 1e-5)
    expected = np.column_stack([np.cos(angles), np.sin(angles)]) @ steepest.valley_gradient(*point)
    np.testing.assert_allclose(measured, expected, atol=1e-7)


# --- command line, PNGs, optional matplotlib ----------------------------------------------

def assert_png(path, figsize):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    width, height = figsize
    assert image.shape[:2] == (round(height * _plotting.DPI), round(width * _plotting.DPI))
    assert image.std() > 0.05   # not a blank canvas


def test_demo_command_writes_every_png(tmp_path, capsys):
    assert fastmomentum_main(["demo", "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    for name in demos.DEMOS:
        assert f"== {name}:" in text
        assert_png(tmp_path / "out" / f"{name}.png", demos.load(name).FIGSIZE)
    assert "steps until the distance" in text.lower()


def test_demo_command_runs_one_demo_and_lists(tmp_path, capsys):
    assert demos.main(["steepest", "--out", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["steepest.png"]
    assert demos.main(["--list"]) == 0
    listing = capsys.readouterr().out
    for name in demos.DEMOS:
        assert name in listing
    with pytest.raises(SystemExit) as exc:
        demos.main(["no-such-demo"])
    assert exc.value.code == 2


def test_without_matplotlib_demos_print_numbers_and_the_install_hint(tmp_path, capsys,
                                                                     monkeypatch):
    # A None entry in sys.modules makes `import matplotlib` raise ImportError.
    for module in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert demos.main(["--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert text.count('pip install "fastmomentum[bench]"') == len(demos.DEMOS)
    assert "pip install matplotlib" in text
    assert "tol 1e-06" in text and "lstsq" in text   # the numbers are still there
    assert not (tmp_path / "out").exists()
    with pytest.raises(ImportError, match="pip install matplotlib"):
        zigzag.plot(zigzag.compute(max_steps=10), tmp_path / "z.png")


def test_importing_the_package_and_demos_does_not_import_matplotlib(tmp_path):
    code = ("import sys, fastmomentum, fastmomentum.demos, fastmomentum.demos.ema, "
            "fastmomentum.demos.zigzag, fastmomentum.demos.least_squares, "
            "fastmomentum.demos.steepest; assert 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


#: examples/NAME.py: a short script per demo (the other examples: tests/test_examples.py)
DEMO_EXAMPLES = [ROOT / "examples" / f"{name.replace('-', '_')}.py" for name in demos.DEMOS]


@pytest.mark.parametrize("script", DEMO_EXAMPLES, ids=lambda p: p.stem)
def test_examples_run_and_write_their_png(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    pngs = list(tmp_path.glob("*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == PNG_SIGNATURE
    assert capsys.readouterr().out.strip()


def test_there_is_one_example_per_demo():
    assert all(script.is_file() for script in DEMO_EXAMPLES)
