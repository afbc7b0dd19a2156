"""Every threaded path of the kernels, on inputs large enough to use threads: shared by
test_pool.py and the fork child it starts (so kept free of pytest)."""
import hashlib

import numpy as np

import fastmomentum
from fastmomentum._dispatch import kernels


def _inputs(seed, *shapes, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def threaded_calls():
    """{name: a list of result arrays} of one call of every threaded path."""
    results = {}
    for dtype in (np.float32, np.float64):
        p, g, v = _inputs(1, 600_000, 600_000, 600_000, dtype=dtype)
        fastmomentum.momentum_step(p, g, v, lr=0.1, momentum=0.9, weight_decay=0.01,
                                   nesterov=True)
        a, x = _inputs(2, 600_000, 600_000, dtype=dtype)
        fastmomentum.ema_update(a, x, 0.99)
        p2, g2, v2 = _inputs(3, 600_000, 600_000, 600_000, dtype=dtype)
        kernels.roofline_stream(p2, g2, v2, 0.9)
        results[f"single buffer {np.dtype(dtype).name}"] = [p, v, a, p2, v2]
    # multi-tensor lists: a big tensor split across chunks, small ones sharing a chunk
    shapes = [400_000, 5, 70_001, 3]
    params, grads, velocities, averages = ([*_inputs(4 + k, *shapes)] for k in range(4))
    kernels.multi_momentum_step(params, grads, velocities, averages, lr=0.05, momentum=0.9,
                                dampening=0.1, decay=0.9)
    values = _inputs(8, *shapes)
    ema = _inputs(9, *shapes)
    kernels.multi_ema_update(ema, values, 0.5)
    results["multi-tensor, fused SGD+EMA"] = params + velocities + averages + ema
    # ewm_mean: superblocks of one series (alpha 1e-4: pass 2 threaded too), series side by
    # side, short series one per thread, and pandas' loop over column ranges (NaN, out=)
    (series,) = _inputs(10, 3_000_000, dtype=np.float64)
    (frame,) = _inputs(11, (3000, 400))
    (rows,) = _inputs(12, (40, 30_000), dtype=np.float64)
    messy = frame.copy()
    messy[::7, ::3] = np.nan
    results["ewm_mean"] = [
        fastmomentum.ewm_mean(series, alpha=1e-4),
        fastmomentum.ewm_mean(series, alpha=0.3, adjust=False),
        fastmomentum.ewm_mean(frame, alpha=0.01, axis=0),
        fastmomentum.ewm_mean(rows, alpha=0.01, axis=1),
        fastmomentum.ewm_mean(messy, alpha=0.05, axis=0, out=np.empty_like(messy)),
    ]
    return results


def digests():
    """{name: sha256 of the results' bytes} of threaded_calls()."""
    out = {}
    for name, arrays in threaded_calls().items():
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(a).tobytes())
        out[name] = h.hexdigest()
    return out
