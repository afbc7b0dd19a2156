"""A NumPy training loop: linear regression by minibatch SGD with momentum, and an EMA of the
weights for evaluation (fastmomentum.SGD and fastmomentum.EMA, no torch).

Run: python examples/numpy_training.py
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

import fastmomentum as fm

Array = NDArray[np.float64]


def make_data(samples: int = 2048, features: int = 16,
              seed: int = 0) -> tuple[Array, Array, Array, float]:
    """Inputs, targets, the true weights and bias of a noisy linear model."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, features))
    w_true = rng.standard_normal(features)
    y = x @ w_true + 0.5 + 0.01 * rng.standard_normal(samples)
    return x, y, w_true, 0.5


def train(epochs: int = 20, batch_size: int = 64, lr: float = 0.05,
          seed: int = 0) -> tuple[list[float], fm.EMA, list[Array]]:
    """Train; returns the loss after each epoch, the EMA of the weights and the weights."""
    x, y, _, _ = make_data(seed=seed)
    weights: list[Array] = [np.zeros(x.shape[1]), np.zeros(1)]   # w and b, updated in place
    ema = fm.EMA(weights, decay=0.99, warmup=True)
    opt = fm.SGD(weights, lr=lr, momentum=0.9, nesterov=True, ema=ema)  # one pass: step + EMA
    grads = [np.empty_like(p) for p in weights]
    rng = np.random.default_rng(seed + 1)
    losses = []
    for _ in range(epochs):
        for rows in np.array_split(rng.permutation(len(y)), len(y) // batch_size):
            w, b = weights
            error = x[rows] @ w + b[0] - y[rows]                   # d(mse/2)/d(prediction)
            np.matmul(error, x[rows], out=grads[0])
            grads[0] /= len(rows)
            grads[1][0] = error.mean()
            opt.step(grads)
        w, b = weights
        losses.append(float(np.mean((x @ w + b[0] - y) ** 2) / 2))
    return losses, ema, weights


def main() -> None:
    losses, ema, weights = train()
    x, y, w_true, b_true = make_data()
    w_avg, b_avg = ema.averages
    print(f"loss: epoch 1 {losses[0]:.5f} -> epoch {len(losses)} {losses[-1]:.6f}")
    print(f"weights off the truth by {np.abs(weights[0] - w_true).max():.4f} (last step), "
          f"{np.abs(w_avg - w_true).max():.4f} (EMA); bias {weights[1][0]:.4f} vs {b_true}")


if __name__ == "__main__":
    main()
