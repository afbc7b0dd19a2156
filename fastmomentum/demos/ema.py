"""ema: the exponentially weighted average, its bias correction, and what beta does.

An exponentially weighted moving average (EMA) keeps one running value,
``v_t = beta*v_{t-1} + (1-beta)*x_t`` with ``v_0 = 0``, which unrolls to
``v_t = (1-beta) * sum_k beta**(t-k) * x_k``. Its weights sum to ``1 - beta**t``, not 1,
so early values are pulled towards the zero it started from; dividing by ``1 - beta**t``
(bias correction) removes that. Momentum SGD keeps such an average of the gradients:
``momentum_step(..., momentum=beta, dampening=beta)`` keeps exactly this one in ``velocity``.
Every average here is computed by :func:`fastmomentum.ema_update`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import ema_update
from . import _plotting, _report

#: Size of the PNG in inches (at _plotting.DPI pixels per inch).
FIGSIZE = (12, 4.6)

BYTES_PER_VALUE = np.dtype(np.float64).itemsize


@dataclass
class Smoothing:
    """The EMA of one noisy series with one ``beta``, and what it cost and bought."""
    beta: float
    smoothed: np.ndarray        #: bias-corrected EMA of the noisy series
    lag: int                    #: measured delay (steps) behind the clean signal
    lag_theory: float           #: delay of an EMA on this sine wave, from its phase
    noise_ratio: float          #: std of the EMA of the noise alone / std of the noise
    noise_ratio_theory: float   #: sqrt((1-beta)/(1+beta)), the stationary value
    rmse: float                 #: root-mean-square error against the clean signal

    @property
    def window(self):
        """1/(1-beta): the number of recent values that carry about 63% (1-1/e) of the weight."""
        return 1.0 / (1.0 - self.beta)


@dataclass
class EmaResult:
    """Numbers of the ``ema`` demo (see :func:`compute`)."""
    values: np.ndarray          #: the series averaged in part 1 (0..9)
    beta: float
    ewa: np.ndarray             #: v_t after each value, no bias correction
    ewa_corrected: np.ndarray   #: v_t / (1 - beta**t)
    running_mean: np.ndarray    #: arithmetic mean of the values so far
    time: np.ndarray            #: part 2: time steps
    clean: np.ndarray           #: part 2: the signal
    noisy: np.ndarray           #: part 2: signal + Gaussian noise
    period: float               #: part 2: period of the sine, in steps
    noise_std: float
    settle: int                 #: part 2 statistics use time steps >= settle
    smoothing: list             #: one :class:`Smoothing` per beta


def run_ema(series, beta):
    """EMA of each column of ``series`` (shape (T, k)) through ``ema_update``.

    Returns the (T, k) averages after each step, without and with bias correction."""
    series = np.ascontiguousarray(series, dtype=np.float64)
    average = np.zeros(series.shape[1:])
    out = np.empty_like(series)
    for t, row in enumerate(series):
        ema_update(average, row, beta)
        out[t] = average
    correction = 1.0 - beta ** np.arange(1, len(series) + 1)
    return out, out / correction.reshape((-1,) + (1,) * (series.ndim - 1))


def _sine_lag(beta, omega):
    """Delay (steps) an EMA adds to a sine of angular frequency ``omega``: its phase / omega."""
    response = (1.0 - beta) / (1.0 - beta * np.exp(-1j * omega))
    return -np.angle(response) / omega


def _best_shift(smoothed, clean, settle, max_shift):
    """The shift s for which smoothed[t] best matches clean[t - s] (least squares)."""
    t = np.arange(settle, len(clean))
    errors = [np.mean((smoothed[t] - clean[t - s]) ** 2) for s in range(max_shift + 1)]
    return int(np.argmin(errors))


def compute(values: Iterable[float] = tuple(range(10)), beta: float = 0.9,
            betas: Sequence[float] = (0.5, 0.9, 0.98), length: int = 800,
            period: float = 400.0, noise_std: float = 0.3, seed: int = 0) -> EmaResult:
    """Part 1: EMA of ``values`` with ``beta`` against their arithmetic mean.
    Part 2: a sine of ``period`` steps plus N(0, ``noise_std``) noise, smoothed by an EMA
    with each of ``betas``: the delay it adds and the noise it leaves."""
    values = np.asarray(values, dtype=np.float64)
    ewa, ewa_corrected = run_ema(values[:, None], beta)
    running_mean = np.cumsum(values) / np.arange(1, len(values) + 1)

    rng = np.random.default_rng(seed)
    time = np.arange(length, dtype=np.float64)
    omega = 2.0 * np.pi / period
    clean = np.sin(omega * time)
    noise = rng.normal(0.0, noise_std, length)
    noisy = clean + noise
    settle = length // 4
    smoothing = []
    for b in betas:
        # The EMA is linear, so averaging [noisy, clean, noise] side by side splits what
        # the smoothed curve does to the signal (delay) from what it does to the noise.
        _, corrected = run_ema(np.stack([noisy, clean, noise], axis=1), b)
        late = slice(settle, None)
        smoothing.append(Smoothing(
            beta=b, smoothed=corrected[:, 0],
            lag=_best_shift(corrected[:, 1], clean, settle, max_shift=settle),
            lag_theory=float(_sine_lag(b, omega)),
            noise_ratio=float(np.std(corrected[late, 2]) / noise_std),
            noise_ratio_theory=float(np.sqrt((1.0 - b) / (1.0 + b))),
            rmse=float(np.sqrt(np.mean((corrected[late, 0] - clean[late]) ** 2)))))
    return EmaResult(values=values, beta=beta, ewa=ewa[:, 0], ewa_corrected=ewa_corrected[:, 0],
                     running_mean=running_mean, time=time, clean=clean, noisy=noisy,
                     period=period, noise_std=noise_std, settle=settle, smoothing=smoothing)


def summary(result: EmaResult) -> str:
    """The printed account of the ``ema`` demo."""
    r = result
    lines = [f"EMA of {r.values.min():g}..{r.values.max():g} with beta={r.beta:g}"
             f" (v_0 = 0), against the arithmetic mean:",
             f"  {'t':>3} {'x_t':>5} {'v_t':>8} {'v_t/(1-b^t)':>12} {'mean so far':>12}"]
    for t, (x, v, vc, m) in enumerate(zip(r.values, r.ewa, r.ewa_corrected,
                                          r.running_mean), start=1):
        lines.append(f"  {t:>3} {x:>5g} {v:>8.4f} {vc:>12.4f} {m:>12.4f}")
    lines += [
        f"  final: EMA {r.ewa[-1]:.4f} (pulled towards its start at 0), bias-corrected "
        f"{r.ewa_corrected[-1]:.4f} (weighted towards recent values), mean {r.running_mean[-1]:g}",
        f"Noisy sine (period {r.period:g}, noise std {r.noise_std:g}) through a bias-corrected "
        f"EMA, measured from step {r.settle}:",
        f"  {'beta':>5} {'window':>7} {'lag':>5} {'(theory)':>9} {'noise left':>11} "
        f"{'(theory)':>9} {'RMSE':>7}",
    ]
    for s in r.smoothing:
        lines.append(f"  {s.beta:>5g} {s.window:>7.0f} {s.lag:>5d} {s.lag_theory:>9.1f} "
                     f"{s.noise_ratio:>11.3f} {s.noise_ratio_theory:>9.3f} {s.rmse:>7.3f}")
    window = max(s.window for s in r.smoothing)
    lines += [
        "  larger beta: less noise left, more lag (about beta/(1-beta) steps on a trend).",
        f"Memory: the EMA keeps one running value ({BYTES_PER_VALUE} bytes) per series; a moving "
        f"average over the last {window:.0f} values keeps all {window:.0f} "
        f"({window * BYTES_PER_VALUE:.0f} bytes), and momentum keeps one per parameter.",
    ]
    return _report.join(lines)


def plot(result: EmaResult, path: str | os.PathLike[str]) -> None:
    """Draw the ``ema`` demo to the PNG file ``path``."""
    r = result
    fig, (left, right) = _plotting.new_figure(*FIGSIZE, ncols=2)
    t = np.arange(1, len(r.values) + 1)
    left.plot(t, r.values, "o", color="0.6", label="values $x_t$")
    left.plot(t, r.ewa, "o-", color="#d62728", label=f"EMA $v_t$, $\\beta$={r.beta:g}")
    left.plot(t, r.ewa_corrected, "s-", color="#1f77b4",
              label="bias-corrected $v_t/(1-\\beta^t)$")
    left.plot(t, r.running_mean, "^--", color="#2ca02c", label="arithmetic mean so far")
    left.axhline(r.running_mean[-1], color="#2ca02c", lw=0.8, ls=":")
    left.annotate(f"mean of all = {r.running_mean[-1]:g}", (1, r.running_mean[-1]),
                  xytext=(0, 4), textcoords="offset points", color="#2ca02c", fontsize=9)
    left.set_xticks(t)
    left.legend(loc="upper left", fontsize=9)
    _plotting.style(left, "Averaging 0..9: the EMA starts biased towards 0",
                    "step t", "value")

    right.plot(r.time, r.noisy, ".", ms=2.5, color="0.7", label="noisy series")
    right.plot(r.time, r.clean, "--", color="black", lw=1, label="clean signal")
    for s, color, width in zip(r.smoothing, ("#ff7f0e", "#1f77b4", "#9467bd"), (0.8, 1.8, 1.8)):
        right.plot(r.time, s.smoothed, color=color, lw=width,
                   label=f"$\\beta$={s.beta:g}: lag {s.lag}, noise left {s.noise_ratio:.2f}")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8.5)
    _plotting.style(right, "Larger $\\beta$: smoother, but later", "step t", "value")
    _plotting.save(fig, path)
