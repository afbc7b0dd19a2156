"""Speed with one core busy: fastmomentum at its default thread count against itself on one
thread (and torch's fused SGD), optionally against another build of fastmomentum in the same
process (``--base``: a source tree built in place, e.g. an older commit).

    python benchmarks/contention.py                      # one core busy
    python benchmarks/contention.py --quiet --base /path/to/eb8d50c/checkout

Every variant of a case runs on the same arrays, interleaved: each round times a batch of
calls of every variant (in rotating order), and the report gives the median time per call
over the rounds and ratios of those medians. The busy process is pinned to one CPU and stops
by itself (``--busy-seconds``) even if this script dies.
"""
import argparse
import contextlib
import glob
import importlib.util
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import fastmomentum
from fastmomentum import optim
from fastmomentum.bench.timing import _seconds_per_call
from fastmomentum import _threads
from fastmomentum._dispatch import kernels as ours

SIZES = tuple(16 * 4 ** k for k in range(11))   # 16 .. 16M
BATCH_SECONDS = 0.001
HYPER = dict(lr=0.01, momentum=0.9)


@contextlib.contextmanager
def busy_core(seconds, cpu=None):
    """A busy loop in another process, pinned to ``cpu`` (default: the last CPU this process
    may use), for the duration of the block (at most ``seconds``)."""
    cpu = max(os.sched_getaffinity(0)) if cpu is None else cpu
    # stops after ``seconds``, or within 0.1 s of this process ending
    code = (f"import os, time\nend = time.time() + {seconds}\nparent = {os.getpid()}\n"
            "while time.time() < end and os.getppid() == parent:\n"
            "    t = time.time() + 0.1\n    while time.time() < t: pass")
    busy = subprocess.Popen([sys.executable, "-c", code])
    try:
        os.sched_setaffinity(busy.pid, {cpu})
        time.sleep(0.2)
        yield cpu
    finally:
        busy.kill()
        busy.wait()


def load_build(tree):
    """The kernels module of a fastmomentum source tree from before the restructure of issue
    12 (one module per CPU target, e.g. eb8d50c), built in place, loaded beside ours under
    another name (the same CPU target as ours)."""
    name = f"_kernels_{fastmomentum.BUILD_TARGET}"
    (path,) = glob.glob(os.path.join(tree, "fastmomentum", name + ".*so"))
    spec = importlib.util.spec_from_file_location("fastmomentum_base." + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(variants, rounds):
    """{name: median seconds per call}; ``variants``: {name: (set_up, fn)}, set_up() run
    before each batch (it sets the thread count)."""
    reps = {}
    for name, (set_up, fn) in variants.items():
        set_up()
        fn()
        once = _seconds_per_call(fn, 1)
        reps[name] = max(1, int(BATCH_SECONDS / max(once, 1e-8)))
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            set_up, fn = variants[name]
            set_up()
            times[name].append(_seconds_per_call(fn, reps[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def _on_threads(module, n):
    return lambda: module.set_num_threads(n)


def _arrays(n, count, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(count)]


def kernel_variants(kernel, n, builds, threads):
    """{name: (set_up, fn)} for one kernel at one size, on each build at ``threads`` and
    at 1 thread."""
    variants = {}
    if kernel == "momentum_step":
        p, g, v = _arrays(n, 3)
        calls = {b: (lambda m=m: m.momentum_step(p, g, v, **HYPER)) for b, m in builds.items()}
    elif kernel == "ema_update":
        a, x = _arrays(n, 2)
        calls = {b: (lambda m=m: m.ema_update(a, x, 0.999)) for b, m in builds.items()}
    elif kernel == "ewm_mean":
        (x,) = _arrays(n, 1, np.float64)
        out = np.empty_like(x)
        calls = {b: (lambda m=m: m.ewm_mean(x, alpha=0.1, out=out)) for b, m in builds.items()}
    elif kernel == "ewm_mean frame":
        (x,) = _arrays(n, 1, np.float64)
        x = x.reshape(-1, 64) if n >= 64 else x.reshape(-1, 1)
        out = np.empty_like(x)
        calls = {b: (lambda m=m: m.ewm_mean(x, alpha=0.1, out=out)) for b, m in builds.items()}
    elif kernel == "roofline_stream":
        p, g, v = _arrays(n, 3)
        calls = {b: (lambda m=m: m.roofline_stream(p, g, v, 0.9)) for b, m in builds.items()}
    else:
        raise ValueError(kernel)
    for build, fn in calls.items():
        variants[f"{build} {threads}t"] = (_on_threads(builds[build], threads), fn)
        variants[f"{build} 1t"] = (_on_threads(builds[build], 1), fn)
    return variants


def model_variants(model, builds, threads):
    """fastmomentum.SGD.step on a model's parameters (ours), and the same pass through
    multi_momentum_step on each build, at ``threads`` and 1 thread."""
    from fastmomentum.benchcases.models import MODELS
    shapes = MODELS[model]()
    params, grads, velocities = ([np.ones(s, np.float32) * (k + 1) for s in shapes]
                                 for k in range(3))
    opt = optim.SGD([p.copy() for p in params], **HYPER)
    opt.step(grads)
    variants = {f"SGD {threads}t": (_on_threads(ours, threads), lambda: opt.step(grads)),
                "SGD 1t": (_on_threads(ours, 1), lambda: opt.step(grads))}
    for build, m in builds.items():
        written = m.WrittenSpans()

        def fn(m=m, written=written):
            m.multi_momentum_step(params, grads, velocities, **HYPER, written=written)
        variants[f"{build} {threads}t"] = (_on_threads(m, threads), fn)
        variants[f"{build} 1t"] = (_on_threads(m, 1), fn)
    return variants


def torch_variants(n, threads):
    """torch's fused SGD and fastmomentum.torch.SGD on one param of ``n`` (both at
    ``threads``)."""
    import torch

    import fastmomentum.torch as fmt
    variants = {}
    for name, make in (("torch fused", lambda ps: torch.optim.SGD(ps, **HYPER, fused=True)),
                       ("fm.torch", lambda ps: fmt.SGD(ps, **HYPER))):
        p = torch.nn.Parameter(torch.ones(n))
        p.grad = torch.full((n,), 0.5)
        opt = make([p])
        opt.step()

        def set_up():
            ours.set_num_threads(threads)
            torch.set_num_threads(threads)
        variants[name] = (set_up, opt.step)
    return variants


def _fmt(seconds):
    return f"{seconds * 1e6:10.2f}"


def report(label, medians, ratios):
    cells = " ".join(f"{k}={_fmt(v)}" for k, v in medians.items())
    extra = " ".join(f"{name}={a / b:.2f}x" for name, (a, b) in ratios.items())
    print(f"{label:<28} {cells} | {extra}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", action="store_true", help="no busy process")
    parser.add_argument("--busy-seconds", type=float, default=600)
    parser.add_argument("--base", help="a fastmomentum source tree built in place, to A/B")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--sizes", type=int, nargs="*", default=SIZES)
    parser.add_argument("--only", nargs="*", default=[
        "momentum_step", "ema_update", "ewm_mean", "ewm_mean frame", "roofline_stream",
        "models", "torch"])
    args = parser.parse_args(argv)
    threads = fastmomentum.get_num_threads()
    builds = {"new": ours}
    if args.base:
        builds["base"] = load_build(args.base)
    busy = contextlib.nullcontext(None) if args.quiet else busy_core(args.busy_seconds)
    with busy as cpu:
        print(f"# {'no busy process' if cpu is None else f'CPU {cpu} busy'}; "
              f"{threads} threads by default; {len(os.sched_getaffinity(0))} CPUs; "
              f"times in us per call, medians of {args.rounds} interleaved rounds", flush=True)
        for kernel in args.only:
            if kernel == "models":
                from fastmomentum.benchcases.models import MODELS
                for model in MODELS:
                    m = compare(model_variants(model, builds, threads), args.rounds)
                    ratios = {"SGD Nt/1t": (m[f"SGD {threads}t"], m["SGD 1t"])}
                    for b in builds:
                        ratios[f"{b} Nt/1t"] = (m[f"{b} {threads}t"], m[f"{b} 1t"])
                    if "base" in builds:
                        ratios["new/base Nt"] = (m[f"new {threads}t"], m[f"base {threads}t"])
                    report(f"SGD {model}", m, ratios)
                continue
            for n in args.sizes:
                if kernel == "torch":
                    if not 65536 <= n <= 4 << 20:
                        continue
                    m = compare(torch_variants(n, threads), args.rounds)
                    report(f"torch SGD {n}", m, {"torch/fm": (m["torch fused"], m["fm.torch"])})
                    continue
                m = compare(kernel_variants(kernel, n, builds, threads), args.rounds)
                ratios = {f"{b} Nt/1t": (m[f"{b} {threads}t"], m[f"{b} 1t"]) for b in builds}
                if "base" in builds:
                    ratios["new/base Nt"] = (m[f"new {threads}t"], m[f"base {threads}t"])
                    ratios["new/base 1t"] = (m["new 1t"], m["base 1t"])
                report(f"{kernel} {n}", m, ratios)
        loops, pool_chunks, caller_waits, overhead = _threads._pool_stats()
        print(f"# pool: {loops} parallel loops, {pool_chunks} chunks run by pool threads, "
              f"{caller_waits} times the caller slept for a claimed chunk; overhead "
              f"estimate {overhead / 1e3:.1f} us", flush=True)


if __name__ == "__main__":
    main()
