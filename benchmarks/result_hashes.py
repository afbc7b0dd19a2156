"""Hash a grid of fastmomentum's results, to prove a refactoring changed no bit.

    python benchmarks/result_hashes.py > before.txt    # on the old commit
    python benchmarks/result_hashes.py > after.txt     # on the new one
    diff before.txt after.txt

One line per case (its name and the SHA-256 of every output array's bytes), and a total.
The grid: momentum_step / ema_update / SGD / EMA / ewm_mean over both dtypes, the options,
sizes 0 to ~600k (threaded sizes included), with and without missing values, for every
compiled target this install has (``FASTMOMENTUM_KERNELS``) and 1 and 2 threads.
"""
import hashlib
import itertools
import os
import subprocess
import sys

import numpy as np

SIZES = [0, 1, 7, 16, 100, 1000, 20000, 140000, 600000]
EWM_SHAPES = [(1,), (7,), (64,), (200,), (5000,), (600000,), (300, 3), (3000, 20),
              (1200, 300), (40, 7)]
SGD_OPTIONS = [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.9, dampening=0.1),
               dict(momentum=0.9, nesterov=True, weight_decay=0.01),
               dict(momentum=0.5, weight_decay=0.1, maximize=True)]


def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def cases(fm):
    rng = np.random.default_rng(2024)
    for dtype, n, opts in itertools.product((np.float32, np.float64), SIZES, SGD_OPTIONS):
        p = rng.standard_normal(n).astype(dtype)
        v = rng.standard_normal(n).astype(dtype)
        for first in (False, True):
            pp, vv = p.copy(), v.copy()
            for k in range(2):
                g = rng.standard_normal(n).astype(dtype)
                fm.momentum_step(pp, g, vv, lr=0.05, first_step=first and k == 0, **opts)
            yield f"momentum_step {dtype.__name__} n={n} {opts} first={first}", pp, vv
    for dtype, n in itertools.product((np.float32, np.float64), SIZES):
        a = rng.standard_normal(n).astype(dtype)
        for decay in (0.0, 0.9, 0.999, 1.0):
            aa = a.copy()
            fm.ema_update(aa, rng.standard_normal(n).astype(dtype), decay)
            yield f"ema_update {dtype.__name__} n={n} decay={decay}", aa
    for dtype, opts, with_ema in itertools.product((np.float32, np.float64), SGD_OPTIONS,
                                                   (False, True)):
        shapes = [(3,), (0,), (300, 40), (70000,), (5, 5), (250000,)]
        params = [rng.standard_normal(s).astype(dtype) for s in shapes]
        ema = fm.EMA(params, decay=0.99, warmup=True) if with_ema else None
        opt = fm.SGD(params, lr=0.01, ema=ema, **opts)
        for _ in range(3):
            opt.step([rng.standard_normal(s).astype(dtype) for s in shapes])
        outs = params + (opt.momentum_buffers or []) + (ema.raw_averages if ema else [])
        yield f"SGD {dtype.__name__} {opts} ema={with_ema}", *outs
    for dtype in (np.float32, np.float64):
        params = [rng.standard_normal(s).astype(dtype) for s in [(10,), (200000,), (33,)]]
        ema = fm.EMA(params, decay=0.9, debias=True)
        for _ in range(3):
            ema.update([rng.standard_normal(p.shape).astype(dtype) for p in params])
        yield f"EMA {dtype.__name__}", *ema.raw_averages
    for dtype, shape, missing in itertools.product((np.float32, np.float64), EWM_SHAPES,
                                                   (False, True)):
        x = rng.standard_normal(shape).astype(dtype)
        if missing and x.size > 2:
            x.flat[rng.integers(0, x.size, max(1, x.size // 50))] = np.nan
            x.flat[x.size // 2] = np.inf
        for alpha, adjust, ignore_na, minp in [(0.1, True, False, 0), (0.1, False, False, 3),
                                               (1e-3, True, True, 0), (0.5, False, True, 0),
                                               (1.0, True, False, 0), (0.02, True, False, 5)]:
            for axis in range(x.ndim):
                kw = dict(alpha=alpha, adjust=adjust, ignore_na=ignore_na,
                          min_periods=minp, axis=axis)
                r = fm.ewm_mean(x, **kw)
                out = np.empty_like(r, order="C" if axis == 0 else "F")
                fm.ewm_mean(x, out=out, **kw)
                yield f"ewm_mean {dtype.__name__} {shape} missing={missing} {kw}", r, out
        if x.ndim == 1:
            yield f"ewm_mean span {dtype.__name__} {shape} {missing}", fm.ewm_mean(x, span=7)


def run_one():
    import fastmomentum as fm
    fm.set_num_threads(int(os.environ["HASH_THREADS"]))
    total = hashlib.sha256()
    for name, *outs in cases(fm):
        d = digest(*outs)
        total.update(d.encode())
        print(name, d)
    print("TOTAL", total.hexdigest()[:16])


def main():
    if "HASH_THREADS" in os.environ:
        return run_one()
    targets = ["portable", "avx2"]
    for target, threads in itertools.product(targets, (1, 2)):
        env = dict(os.environ, FASTMOMENTUM_KERNELS=target, HASH_THREADS=str(threads))
        out = subprocess.run([sys.executable, __file__], env=env, capture_output=True,
                             text=True)
        if out.returncode:
            print(f"target={target} threads={threads}: failed\n{out.stderr[-2000:]}")
            continue
        print(f"## target={target} threads={threads}")
        sys.stdout.write(out.stdout)


if __name__ == "__main__":
    main()
