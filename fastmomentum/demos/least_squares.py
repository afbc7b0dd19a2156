"""least-squares: linear regression by the closed form, gradient descent, mini-batch SGD, momentum.

The loss ``|X w - y|^2 / (2n)`` has the exact minimiser ``numpy.linalg.lstsq(X, y)``.
Full-batch gradient descent reaches it too, in a number of steps that grows with the
condition number of ``X^T X / n``; momentum needs far fewer. Mini-batch SGD pays for one
batch per step instead of the whole data set, and with a constant step it stalls at a noise
floor. Every update is one :func:`fastmomentum.momentum_step`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import _plotting, _report
from ._descent import descend, steps_to_tolerance

#: Size of the PNG in inches (at _plotting.DPI pixels per inch).
FIGSIZE = (12, 4.6)


COLOR_KEYS = {"gd": "plain", "momentum": "momentum", "sgd": "mini-batch"}


@dataclass
class Run:
    """One iterative solver's trajectory."""
    lr: float
    momentum: float
    batch_size: int
    weights: np.ndarray         #: w after each step, shape (steps+1, features)
    epochs: np.ndarray          #: passes over the data after each step (x axis)
    excess_loss: np.ndarray     #: loss - loss of the closed-form solution, per step
    distance: np.ndarray        #: |w - w_closed| / |w_closed|, per step
    steps_to_tol: object        #: steps until distance stays <= tol (None: never)


@dataclass
class LeastSquaresResult:
    """Numbers of the ``least-squares`` demo (see :func:`compute`)."""
    samples: int
    features: int               #: columns of X, intercept included
    w_closed: np.ndarray        #: numpy.linalg.lstsq solution
    loss_closed: float
    condition: float            #: of X^T X / n, the Hessian of the loss
    condition_standardized: float  #: the same after centring and scaling the features
    tol: float
    runs: dict                  #: "gd", "sgd", "momentum" -> :class:`Run`


def make_data(samples=2000, seed=0, noise_std=0.5):
    """A regression problem with correlated, unevenly scaled features (condition ~170)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(samples, 5))
    z[:, 1] = 0.8 * z[:, 0] + 0.6 * z[:, 1]
    features = z * np.array([1.0, 2.0, 0.5, 1.0, 1.5]) + np.array([1.0, 0.0, 2.0, 0.0, 0.0])
    X = np.column_stack([np.ones(samples), features])
    w_true = np.array([0.5, 1.0, -2.0, 3.0, 0.0, -1.0])
    y = X @ w_true + rng.normal(0.0, noise_std, samples)
    return X, y


def _condition(eigenvalues):
    """Condition number from ascending eigenvalues (np.linalg.eigvalsh's order)."""
    return float(eigenvalues[-1] / eigenvalues[0])


def compute(samples: int = 2000, seed: int = 0, tol: float = 1e-6, gd_steps: int = 4000,
            momentum: float = 0.9, batch_size: int = 32, sgd_epochs: int = 30,
            sgd_lr_fraction: float = 0.25) -> LeastSquaresResult:
    """Solve one regression problem four ways.

    Gradient descent and momentum use the whole data set per step with ``lr = 1/L`` (L the
    largest eigenvalue of ``X^T X / n``); mini-batch SGD uses ``batch_size`` rows per step,
    reshuffled every epoch, with ``lr = sgd_lr_fraction / L``."""
    X, y = make_data(samples, seed)
    n = len(y)
    w_closed = np.linalg.lstsq(X, y, rcond=None)[0]
    residual = X @ w_closed - y
    loss_closed = float(residual @ residual / (2 * n))
    hessian = X.T @ X / n
    curvatures = np.linalg.eigvalsh(hessian)
    lipschitz = float(curvatures[-1])
    standardized = (X[:, 1:] - X[:, 1:].mean(axis=0)) / X[:, 1:].std(axis=0)
    standardized = np.column_stack([np.ones(n), standardized])

    def full_gradient(w, step):
        return X.T @ (X @ w - y) / n

    order = np.random.default_rng(seed + 1)
    sgd_steps = sgd_epochs * n // batch_size
    stream = np.concatenate([order.permutation(n) for _ in range(sgd_epochs)])

    def batch_gradient(w, step):
        rows = stream[step * batch_size:(step + 1) * batch_size]
        return X[rows].T @ (X[rows] @ w - y[rows]) / batch_size

    def run(gradient, lr, steps, batch, beta=0.0):
        path = descend(gradient, np.zeros(X.shape[1]), lr=lr, steps=steps, momentum=beta)
        error = path - w_closed
        # For least squares the loss is exactly quadratic around its minimiser.
        excess = 0.5 * np.einsum("ij,jk,ik->i", error, hessian, error)
        distance = np.linalg.norm(error, axis=1) / np.linalg.norm(w_closed)
        return Run(lr=lr, momentum=beta, batch_size=batch, weights=path,
                   epochs=np.arange(steps + 1) * batch / n, excess_loss=excess,
                   distance=distance, steps_to_tol=steps_to_tolerance(distance, tol))

    runs = {
        "gd": run(full_gradient, 1.0 / lipschitz, gd_steps, n),
        "momentum": run(full_gradient, 1.0 / lipschitz, gd_steps, n, beta=momentum),
        "sgd": run(batch_gradient, sgd_lr_fraction / lipschitz, sgd_steps, batch_size),
    }
    return LeastSquaresResult(samples=n, features=X.shape[1], w_closed=w_closed,
                              loss_closed=loss_closed, condition=_condition(curvatures),
                              condition_standardized=_condition(
                                  np.linalg.eigvalsh(standardized.T @ standardized)),
                              tol=tol, runs=runs)


def summary(result: LeastSquaresResult) -> str:
    """The printed account of the ``least-squares`` demo."""
    r = result
    lines = [
        f"Linear regression, {r.samples} samples x {r.features} features (intercept included); "
        f"condition number of X^T X/n: {r.condition:.0f}",
        f"  closed form (numpy.linalg.lstsq): loss {r.loss_closed:.6f}, "
        f"w = [{', '.join(f'{v:.3f}' for v in r.w_closed)}]",
        f"  {'method':<10}{'lr':>9}{'momentum':>10}{'batch':>7}{'steps':>7}{'epochs':>8}"
        f"{'excess loss':>13}{'distance':>10}{f'steps to {r.tol:g}':>15}",
    ]
    for name, run in r.runs.items():
        steps = len(run.distance) - 1
        to_tol = "never" if run.steps_to_tol is None else run.steps_to_tol
        lines.append(f"  {name:<10}{run.lr:>9.4f}{run.momentum:>10g}{run.batch_size:>7}"
                     f"{steps:>7}{run.epochs[-1]:>8.0f}{run.excess_loss[-1]:>13.2e}"
                     f"{run.distance[-1]:>10.1e}{to_tol:>15}")
    lines += [
        "  (distance: |w - w_lstsq| / |w_lstsq|; an epoch is one pass over the data)",
        "When each is the right tool:",
        "  closed form: exact in one O(n d^2) solve; best while X fits in memory and d is up "
        "to a few thousand.",
        f"  gradient descent: O(n d) per step, but steps grow like the condition number "
        f"({r.condition:.0f} here; {r.condition_standardized:.0f} after standardizing the "
        f"features, so scale them first).",
        "  momentum: the same cost per step, steps grow like the square root of the "
        "condition number.",
        "  mini-batch SGD: O(batch d) per step whatever n is; for huge or streaming data where "
        "a few epochs give a good enough answer; a constant lr leaves a noise floor (decay it "
        "to go lower).",
    ]
    return _report.join(lines)


def _last_visible(distance, floor):
    """Index of the first step below ``floor`` (the last one worth drawing), or the end."""
    below = np.flatnonzero(distance < floor)
    return int(below[0]) if below.size else len(distance) - 1


def plot(result: LeastSquaresResult, path: str | os.PathLike[str]) -> None:
    """Draw the ``least-squares`` demo to the PNG file ``path``."""
    r = result
    fig, (left, right) = _plotting.new_figure(*FIGSIZE, ncols=2)
    for name, run in r.runs.items():
        reached = ("stalls above tol" if run.steps_to_tol is None
                   else f"{run.epochs[run.steps_to_tol]:.0f} epochs to tol")
        kind = (f"mini-batch sgd, batch {run.batch_size}" if name == "sgd"
                else f"full-batch {name}")
        label = f"{kind}: {reached}"
        color = _plotting.COLORS[COLOR_KEYS[name]]
        # Epoch 0 cannot sit on a log axis: plot from the first step on, and stop once
        # rounding error is all that is left.
        shown = slice(1, _last_visible(run.distance, r.tol * 1e-4) + 1)
        left.loglog(run.epochs[shown], run.excess_loss[shown], color=color, lw=1.4, label=label)
        right.loglog(run.epochs[shown], run.distance[shown], color=color, lw=1.4, label=label)
    right.axhline(r.tol, color="0.4", lw=0.7, ls=":")
    right.annotate(f"tol {r.tol:g}", (right.get_xlim()[0], r.tol), xytext=(4, 3),
                   textcoords="offset points", fontsize=8, color="0.3")
    for ax in (left, right):
        ax.legend(loc="lower left", fontsize=9)
    left.text(0.03, 0.45, "closed form (lstsq):\nexact in one solve", transform=left.transAxes,
              ha="left", va="center", fontsize=9,
              bbox=dict(boxstyle="round", facecolor="white", edgecolor="0.7"))
    _plotting.style(left, f"Loss above the closed-form optimum ({r.samples} samples, "
                    f"condition {r.condition:.0f})", "epochs (passes over the data)",
                    "loss - loss(lstsq)")
    _plotting.style(right, "Distance to the closed-form (lstsq) solution",
                    "epochs (passes over the data)", "|w - w_lstsq| / |w_lstsq|")
    _plotting.save(fig, path)
