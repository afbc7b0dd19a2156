"""What fewer-byte momentum costs in final loss (docs/state-dtypes.md quotes these numbers).

Two problems, each trained once with float32 momentum buffers and once with bfloat16 or
float16 buffers (``momentum_dtype``), same data, same steps, same start:

* the least-squares demo's regression (:func:`least_squares.make_data`, float32 params,
  full-batch momentum, ``lr = 1/L``): :func:`least_squares_loss`;
* a small MLP (torch, float32, mini-batches of a fixed synthetic regression task) stepped
  by ``fastmomentum.torch.SGD``: :func:`mlp_loss`.
"""
import numpy as np

from .. import momentum_step
from .least_squares import make_data


def least_squares_loss(momentum_dtype=None, *, steps=600, momentum=0.9, samples=2000,
                       seed=0):
    """Excess loss ``L(w) - L(w*)`` after ``steps`` full-batch momentum steps in float32
    (the closed-form ``w*`` of the float64 problem), with the velocity kept as
    ``momentum_dtype`` (None: float32)."""
    X64, y64 = make_data(samples, seed)
    X, y = X64.astype(np.float32), y64.astype(np.float32)
    n = len(y)
    w_star = np.linalg.lstsq(X64, y64, rcond=None)[0]
    lr = 1.0 / float(np.linalg.eigvalsh(X64.T @ X64 / n)[-1])
    w = np.zeros(X.shape[1], np.float32)
    v = np.zeros_like(w, dtype=np.float32 if momentum_dtype is None else momentum_dtype)
    for step in range(steps):
        grad = (X.T @ (X @ w - y) / np.float32(n)).astype(np.float32)
        momentum_step(w, grad, v, lr=lr, momentum=momentum, first_step=step == 0,
                      momentum_dtype=momentum_dtype)

    def loss(weights):
        r = X64 @ weights - y64
        return float(r @ r / (2 * n))
    return loss(w.astype(np.float64)) - loss(w_star)


def mlp_loss(momentum_dtype=None, *, steps=400, batch=64, lr=0.05, momentum=0.9, seed=0):
    """Final full-data mean squared error of a 16-64-64-1 tanh MLP trained by
    ``fastmomentum.torch.SGD(lr, momentum, momentum_dtype=...)`` on a fixed regression
    task (4096 samples, targets from a random teacher MLP plus noise)."""
    import torch

    from ..torch import SGD

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, 16, generator=gen)
    teacher = torch.randn(16, 8, generator=gen) / 4
    y = torch.tanh(x @ teacher).sum(dim=1, keepdim=True) + 0.05 * torch.randn(
        4096, 1, generator=gen)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 1))
    opt = SGD(model.parameters(), lr=lr, momentum=momentum, momentum_dtype=momentum_dtype)
    order = torch.randperm(4096 * (steps * batch // 4096 + 1), generator=gen) % 4096
    for step in range(steps):
        rows = order[step * batch:(step + 1) * batch]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[rows]), y[rows]).backward()
        opt.step()
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model(x), y))
