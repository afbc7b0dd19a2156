"""NumPy oracles of the float16/bfloat16 steps (tests only): exact float32 fused
multiply-adds (NumPy has none), rounding to the 16-bit dtype, and torch's for-loop
rounding order on such tensors (the model read from torch's source, checked against torch
itself in test_half.py)."""
import ml_dtypes
import numpy as np
import torch

HALVES = [(ml_dtypes.bfloat16, torch.bfloat16), (np.float16, torch.float16)]


def fmaf(a, b, c):
    """float32 ``a*b + c`` rounded once: the exact product in float64, the sum's error by
    TwoSum, then rounding to odd before rounding to float32 (no double-rounding error)."""
    a, b, c = (np.asarray(x, np.float64) for x in (a, b, c))
    product = a * b                      # exact: 24 + 24 bits
    total = product + c
    virtual = total - product
    error = (product - (total - virtual)) + (c - virtual)
    inexact_even = (error != 0) & ((total.view(np.uint64) & 1) == 0) & np.isfinite(total)
    odd = np.where(inexact_even, np.nextafter(total, np.where(error > 0, np.inf, -np.inf)),
                   total)
    return odd.astype(np.float32)


def rounded(x, dtype):
    """float32 ``x`` rounded to nearest even in ``dtype``, widened back to float32."""
    return np.asarray(x, np.float32).astype(dtype).astype(np.float32)


def torch_scalar_tail(n, threads, lanes=32, grain=32768):
    """Which elements of an n-element tensor torch's scalar loop computes: the last
    ``len % lanes`` of each of parallel_for's chunks."""
    chunks = 1 if n < grain or threads == 1 else min(threads, -(-n // grain))
    size = -(-n // chunks)
    tail = np.zeros(n, bool)
    for begin in range(0, n, size):
        end = min(n, begin + size)
        tail[begin + (end - begin) // lanes * lanes:end] = True
    return tail


def torch_add(a, b, alpha, dtype, tail):
    """torch's ``a.add(b, alpha=alpha)``: alpha rounded to the dtype; the vector loop
    rounds fma(b, alpha, a), the scalar loop rounds a + round(alpha*b)."""
    alpha = rounded(alpha, dtype)
    vector = rounded(fmaf(b, alpha, a), dtype)
    scalar = rounded(a + rounded(alpha * b, dtype), dtype)
    return np.where(tail, scalar, vector)


def sgd_torch(p, g, v, dtype, *, lr, momentum, dampening, weight_decay, nesterov, maximize,
              first_step, threads=1):
    """torch.optim.SGD's for-loop step on float32 arrays holding ``dtype`` values;
    returns (param, velocity)."""
    tail = torch_scalar_tail(p.size, threads)
    d = -g if maximize else g
    if weight_decay:
        d = torch_add(d, p, weight_decay, dtype, tail)
    if momentum:
        if first_step:
            v = d
        else:
            v = torch_add(rounded(v * np.float32(momentum), dtype), d, 1 - dampening, dtype,
                          tail)
        d = torch_add(d, v, momentum, dtype, tail) if nesterov else v
    return torch_add(p, d, -lr, dtype, tail), v


def sgd_once(p, g, v, dtype, *, lr, momentum, dampening, weight_decay, nesterov, maximize,
             first_step):
    """The float32 step (torch's float32 rounding order) with one rounding per stored
    value; returns (param, velocity) as float32 arrays of ``dtype`` values."""
    f = np.float32
    d = -g if maximize else g
    if weight_decay:
        d = fmaf(p, f(weight_decay), d)
    if momentum:
        v = d if first_step else fmaf(d, f(1 - dampening), v * f(momentum))
        d = fmaf(v, f(momentum), d) if nesterov else v
        v = rounded(v, dtype)
    return rounded(fmaf(d, f(-lr), p), dtype), v


def ema_once(average, value, decay, dtype):
    """The float32 EMA ``fma(decay, average, (1-decay)*value)``, rounded once."""
    return rounded(fmaf(np.float32(decay), average, np.float32(1 - decay) * value), dtype)


def widen(x):
    return np.asarray(x).astype(np.float32)


def bits(x):
    return np.asarray(x).view(np.uint16)


def to_numpy(t, dtype):
    """A 16-bit torch tensor's memory as a NumPy array of ``dtype`` (no copy)."""
    return t.detach().view(torch.int16).numpy().view(dtype)
