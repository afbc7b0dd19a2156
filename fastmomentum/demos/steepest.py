"""steepest: why the negative gradient is the direction of fastest decrease, numerically.

The directional derivative of f at p along a unit vector u is ``D_u f = grad f(p) . u =
|grad| cos(angle between them)``: smallest, ``-|grad|``, exactly when u points along
``-grad/|grad|``. This demo does not take that on trust: it measures ``D_u f`` by central
differences over every direction of the circle, each pair of probe points made by one
:func:`fastmomentum.momentum_step` (a plain step of length h in all directions at once),
finds the direction of fastest decrease, and compares it with ``-grad/|grad|``.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import momentum_step
from . import _plotting, _report

#: Size of the PNG in inches (at _plotting.DPI pixels per inch).
FIGSIZE = (12, 5.0)


def valley(x, y):
    """The demo's function: a curved valley, f(x, y) = (1 - x)^2 + 5 (y - x^2)^2."""
    return (1.0 - x) ** 2 + 5.0 * (y - x ** 2) ** 2


def valley_gradient(x, y):
    """Analytic gradient of :func:`valley`."""
    return np.array([-2.0 * (1.0 - x) - 20.0 * x * (y - x ** 2), 10.0 * (y - x ** 2)])


@dataclass
class SteepestResult:
    """Numbers of the ``steepest`` demo (see :func:`compute`)."""
    point: np.ndarray
    gradient: np.ndarray            #: analytic, for comparison only
    angles: np.ndarray              #: directions probed (radians)
    derivatives: np.ndarray         #: measured D_u f for each angle
    steepest: np.ndarray            #: measured unit direction of fastest decrease
    steepest_slope: float           #: D_u f along it
    step: float                     #: central-difference step h

    @property
    def descent(self):
        """-grad/|grad| from the analytic gradient."""
        return -self.gradient / np.linalg.norm(self.gradient)

    @property
    def direction_error(self):
        """|steepest - (-grad/|grad|)|: how far the measured direction is from the theory."""
        return float(np.linalg.norm(self.steepest - self.descent))


def directional_derivatives(f, point, angles, step):
    """Central differences ``(f(p + h u) - f(p - h u)) / 2h`` for ``u`` at each angle."""
    units = np.column_stack([np.cos(angles), np.sin(angles)])
    ahead = np.tile(np.asarray(point, dtype=np.float64), (len(angles), 1))
    behind = ahead.copy()
    # One plain step (param -= lr * grad) moves every probe at once: "grad" -u moves
    # forward along u, +u backward.
    momentum_step(ahead, -units, None, lr=step)
    momentum_step(behind, units, None, lr=step)
    return (f(ahead[:, 0], ahead[:, 1]) - f(behind[:, 0], behind[:, 1])) / (2.0 * step)


def compute(point: ArrayLike = (-0.6, 0.9), directions: int = 3600,
            step: float = 1e-5, f: Callable[..., Any] = valley,
            gradient: Callable[..., Any] = valley_gradient) -> SteepestResult:
    """Measure the directional derivative of ``f`` at ``point`` over ``directions`` equally
    spaced angles, then again on a fine grid around the smallest, to find the steepest
    descent direction to well under 1e-3. ``gradient`` is used only to compare."""
    point = np.asarray(point, dtype=np.float64)
    angles = np.linspace(-np.pi, np.pi, directions, endpoint=False)
    derivatives = directional_derivatives(f, point, angles, step)
    spacing = angles[1] - angles[0]
    best = angles[np.argmin(derivatives)]
    fine = np.linspace(best - spacing, best + spacing, 2001)
    fine_derivatives = directional_derivatives(f, point, fine, step)
    angle = fine[np.argmin(fine_derivatives)]
    return SteepestResult(point=point, gradient=gradient(*point), angles=angles,
                          derivatives=derivatives,
                          steepest=np.array([np.cos(angle), np.sin(angle)]),
                          steepest_slope=float(fine_derivatives.min()), step=step)


def summary(result: SteepestResult) -> str:
    """The printed account of the ``steepest`` demo."""
    r = result
    g = r.gradient
    descent = r.descent
    angle = np.degrees(np.arctan2(r.steepest[1], r.steepest[0]))
    return _report.join([
        f"f(x, y) = (1 - x)^2 + 5 (y - x^2)^2 at p = ({r.point[0]:g}, {r.point[1]:g}); "
        f"D_u f measured by central differences (h = {r.step:g}) over {len(r.angles)} "
        f"directions, refined around the smallest",
        f"  fastest decrease measured along u = ({r.steepest[0]:+.6f}, {r.steepest[1]:+.6f}) "
        f"(angle {angle:.3f} deg), slope {r.steepest_slope:.6f}",
        f"  -grad/|grad| (analytic)         = ({descent[0]:+.6f}, {descent[1]:+.6f}), "
        f"-|grad| = {-np.linalg.norm(g):.6f}",
        f"  difference |u - (-grad/|grad|)| = {r.direction_error:.1e}",
        f"  fastest increase along +grad (slope {r.derivatives.max():+.4f}); no change "
        f"perpendicular to it: D_u f = |grad| cos(angle to grad).",
    ])


def plot(result: SteepestResult, path: str | os.PathLike[str]) -> None:
    """Draw the ``steepest`` demo to the PNG file ``path``."""
    r = result
    fig, (left, right) = _plotting.new_figure(*FIGSIZE, ncols=2)
    px, py = r.point
    radius = 0.35
    gx, gy = np.meshgrid(np.linspace(px - 0.8, px + 0.8, 300), np.linspace(py - 0.8, py + 0.8, 300))
    left.contour(gx, gy, valley(gx, gy), levels=np.geomspace(0.2, 40, 16), colors="0.55",
                 linewidths=0.7)
    ring = left.scatter(px + radius * np.cos(r.angles), py + radius * np.sin(r.angles),
                        c=r.derivatives, cmap="coolwarm", s=6, zorder=3)
    fig.colorbar(ring, ax=left, label="directional derivative $D_u f$", shrink=0.85)
    arrows = ((r.descent, "#2ca02c", "$-\\nabla f/|\\nabla f|$ (analytic)", 4.5),
              (r.steepest, "black", "measured steepest descent", 1.5))
    for direction, color, label, width in arrows:
        left.annotate("", (px + radius * direction[0], py + radius * direction[1]), (px, py),
                      arrowprops=dict(arrowstyle="-|>", color=color, lw=width,
                                      mutation_scale=16), zorder=4)
        left.plot([], [], color=color, lw=width, label=label)
    tangent = np.array([-r.descent[1], r.descent[0]]) * radius * 1.25
    left.plot([px - tangent[0], px + tangent[0]], [py - tangent[1], py + tangent[1]], ":",
              color="0.2", lw=1.2, label="perpendicular to the gradient: slope 0")
    left.plot(px, py, "ko", ms=5, zorder=5, label="point p")
    left.set_aspect("equal")
    left.legend(loc="lower right", fontsize=8.5)
    _plotting.style(left, "Unit directions around p, coloured by slope", "x", "y")

    degrees = np.degrees(r.angles)
    slope = np.linalg.norm(r.gradient)
    grad_angle = np.arctan2(r.gradient[1], r.gradient[0])
    right.plot(degrees, r.derivatives, color="#1f77b4", lw=2.5, label="measured $D_u f$")
    right.plot(degrees, slope * np.cos(r.angles - grad_angle), "--", color="orange", lw=1.2,
               label="$|\\nabla f| \\cos(\\theta - \\theta_{\\nabla f})$")
    best = np.degrees(np.arctan2(r.steepest[1], r.steepest[0]))
    right.plot(best, r.steepest_slope, "v", color="black", ms=9,
               label=f"minimum at {best:.2f}$\\degree$, slope {r.steepest_slope:.3f}")
    right.axvline(np.degrees(np.arctan2(r.descent[1], r.descent[0])), color="#2ca02c", lw=1,
                  ls=":", label="direction of $-\\nabla f$")
    right.axhline(0, color="0.5", lw=0.6)
    right.set_xticks(np.arange(-180, 181, 60))
    right.legend(loc="upper left", fontsize=9)
    _plotting.style(right, "Slope of f along every unit direction", "direction angle (degrees)",
                    "$D_u f$")
    _plotting.save(fig, path)
