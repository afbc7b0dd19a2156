"""zigzag: plain SGD vs momentum vs Nesterov in an elongated valley.

The valley is ``f(x, y) = (x**2 + condition * y**2) / 2``: curvature 1 along it, ``condition``
across it. A step size small enough not to blow up across the valley (``lr < 2/condition``)
is tiny along it, so plain gradient descent bounces from wall to wall while it crawls to the
minimum. Momentum averages the gradients: the across-valley parts alternate in sign and
cancel, the along-valley parts agree and add up. Every update is one
:func:`fastmomentum.momentum_step`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import _plotting, _report
from ._descent import descend, steps_to_tolerance

#: Size of the PNG in inches (at _plotting.DPI pixels per inch).
FIGSIZE = (12, 4.8)

#: Keyword arguments of ``momentum_step`` that tell the two momentum methods apart.
METHODS = {"sgd": {}, "momentum": {}, "nesterov": {"nesterov": True}}
COLOR_KEYS = {"sgd": "plain", "momentum": "momentum", "nesterov": "nesterov"}


@dataclass
class ZigzagResult:
    """Numbers of the ``zigzag`` demo (see :func:`compute`)."""
    curvatures: np.ndarray      #: (along, across) the valley; their ratio is the condition
    sgd_lr: float
    lr: float                   #: step size of momentum and Nesterov
    momentum: float
    paths: dict                 #: method -> iterates, shape (steps+1, 2)
    distances: dict             #: method -> distance to the minimum (0, 0) after each step
    tolerances: tuple
    steps: dict                 #: method -> steps to stay within each tolerance (None: never)
    shown_steps: int            #: how many steps the contour plot draws

    @property
    def condition(self):
        """Largest over smallest curvature."""
        return self.curvatures.max() / self.curvatures.min()


def valley_gradient(curvatures):
    """Gradient of ``f = sum(curvatures * p**2) / 2`` as ``gradient(param, step)`` for descend."""
    def gradient(param, step):
        return curvatures * param
    return gradient


def compute(condition: float = 100.0, sgd_lr: float | None = None, lr: float | None = None,
            momentum: float = 0.9, start: tuple[float, float] = (-9.0, 1.5),
            tolerances: Sequence[float] = (1e-2, 1e-4, 1e-6), max_steps: int | None = None,
            shown_steps: int = 60) -> ZigzagResult:
    """Run SGD, momentum and Nesterov (torch's update rules) from ``start`` for ``max_steps``.

    Each gets a good step size for this valley: plain SGD its best constant one,
    ``sgd_lr = 2/(1 + condition)``, which balances the two directions and so zig-zags;
    momentum and Nesterov share ``lr = 1/condition`` and ``momentum``, as torch users
    switch ``nesterov`` on and off. ``max_steps`` defaults to 10*condition + 1000, enough
    for plain SGD (about 8*condition steps to 1e-6 from the default start)."""
    curvatures = np.array([1.0, float(condition)])
    sgd_lr = 2.0 / (1.0 + condition) if sgd_lr is None else float(sgd_lr)
    lr = 1.0 / condition if lr is None else float(lr)
    max_steps = int(10 * condition) + 1000 if max_steps is None else max_steps
    gradient = valley_gradient(curvatures)
    paths, distances, steps = {}, {}, {}
    for name, options in METHODS.items():
        if name == "sgd":
            path = descend(gradient, start, lr=sgd_lr, steps=max_steps)
        else:
            path = descend(gradient, start, lr=lr, steps=max_steps, momentum=momentum,
                           **options)
        paths[name] = path
        distances[name] = np.linalg.norm(path, axis=1)
        steps[name] = [steps_to_tolerance(distances[name], tol) for tol in tolerances]
    return ZigzagResult(curvatures=curvatures, sgd_lr=sgd_lr, lr=lr, momentum=momentum, paths=paths,
                        distances=distances, tolerances=tuple(tolerances), steps=steps,
                        shown_steps=shown_steps)


def summary(result: ZigzagResult) -> str:
    """The printed account of the ``zigzag`` demo."""
    r = result
    along, across = r.curvatures
    start = r.paths["sgd"][0]
    lines = [
        f"Valley f(x, y) = (x^2 + {across:g} y^2)/2, condition number {r.condition:g}; "
        f"start ({start[0]:g}, {start[1]:g})",
        f"  sgd (lr {r.sgd_lr:.4g}): the error shrinks per step by {1 - r.sgd_lr * along:+.3f} "
        f"along the valley and {1 - r.sgd_lr * across:+.3f} across it (negative: zig-zag);",
        f"    a larger lr diverges across the valley, a smaller one crawls even slower along it.",
        f"  momentum and nesterov (lr {r.lr:.4g}, momentum {r.momentum:g}): the gradients across "
        f"the valley alternate in sign and cancel in the velocity, those along it add up.",
        "Steps until the distance to the minimum stays below the tolerance:",
        f"  {'method':<10}" + "".join(f"{f'tol {tol:g}':>12}" for tol in r.tolerances)
        + f"{'vs SGD':>9}",
    ]
    sgd_last = r.steps["sgd"][-1]
    for name, counts in r.steps.items():
        cells = "".join(f"{'never' if c is None else c:>12}" for c in counts)
        ratio = (f"{sgd_last / counts[-1]:>8.1f}x" if sgd_last and counts[-1]
                 else f"{'-':>9}")
        lines.append(f"  {name:<10}{cells}{ratio}")
    return _report.join(lines)


def plot(result: ZigzagResult, path: str | os.PathLike[str]) -> None:
    """Draw the ``zigzag`` demo to the PNG file ``path``."""
    r = result
    fig, (left, right) = _plotting.new_figure(*FIGSIZE, ncols=2,
                                              gridspec_kw={"width_ratios": [1.35, 1]})
    shown = {name: p[:r.shown_steps + 1] for name, p in r.paths.items()}
    every = np.concatenate(list(shown.values()))
    x_lo, x_hi = every[:, 0].min(), every[:, 0].max()
    y_lo, y_hi = every[:, 1].min(), every[:, 1].max()
    pad_x, pad_y = 0.08 * (x_hi - x_lo), 0.12 * (y_hi - y_lo)
    gx, gy = np.meshgrid(np.linspace(x_lo - pad_x, x_hi + pad_x, 300),
                         np.linspace(y_lo - pad_y, y_hi + pad_y, 300))
    f = (r.curvatures[0] * gx ** 2 + r.curvatures[1] * gy ** 2) / 2
    levels = np.geomspace(max(f.min(), 1e-3), f.max(), 14)
    left.contourf(gx, gy, f, levels=levels, cmap="Greys", alpha=0.3)
    left.contour(gx, gy, f, levels=levels, colors="0.55", linewidths=0.5)
    for name, p in shown.items():
        settings = (f"lr {r.sgd_lr:.4g}" if name == "sgd"
                    else f"lr {r.lr:.4g}, momentum {r.momentum:g}")
        left.plot(p[:, 0], p[:, 1], "o-", ms=2.5, lw=1.2,
                  color=_plotting.COLORS[COLOR_KEYS[name]], label=f"{name} ({settings})")
    left.plot(*shown["sgd"][0], "k*", ms=12, label="start")
    left.plot(0, 0, "P", color="gold", mec="k", ms=11, label="minimum")
    left.legend(loc="upper right", fontsize=8.5, framealpha=0.9)
    _plotting.style(left, f"First {r.shown_steps} steps in a valley with condition number "
                    f"{r.condition:g}", "x (gentle direction)", "y (steep direction)")

    last = max(c[-1] or len(r.distances[n]) - 1 for n, c in r.steps.items())
    end = min(len(r.distances["sgd"]), int(last * 1.05) + 1)
    for name, d in r.distances.items():
        steps = r.steps[name][-1]
        reached = f"{steps} steps" if steps is not None else f"not within {len(d) - 1} steps"
        right.semilogy(np.arange(end), d[:end], lw=1.4, color=_plotting.COLORS[COLOR_KEYS[name]],
                       label=f"{name}: {reached} to {r.tolerances[-1]:g}")
    for tol in r.tolerances:
        right.axhline(tol, color="0.4", lw=0.7, ls=":")
        right.annotate(f"tol {tol:g}", (end, tol), xytext=(-2, 2), textcoords="offset points",
                       ha="right", fontsize=8, color="0.3")
    right.set_ylim(min(r.tolerances) / 100, None)
    right.legend(loc="upper right", fontsize=9)
    _plotting.style(right, "Distance to the minimum (log scale)",
                    "step", "distance to minimum")
    _plotting.save(fig, path)
